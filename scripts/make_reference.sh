#!/usr/bin/env bash
# Dev script (not run in CI): recomputes tests/data/reference_phi3.json, the
# greedy token ids transformers' Phi3ForCausalLM produces on the synthetic
# reference model. Needs the venv described in scripts/reference_phi3.py
# (torch, transformers, gguf, tokenizers; ~6 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${PHI_MOBILE_CACHE:-$HOME/.cache/phi-mobile}"
PY="${REF_PYTHON:-$CACHE/venv-ref/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

scripts/fetch-fixtures.sh
cargo run --release --quiet --example synthetic_gguf -- reference "$WORK/reference.gguf"

# Prompt ids come from the same tokenizer.json (Python binding of the same
# Rust tokenizers); the Rust test also checks its own encoding against them.
"$PY" - "$CACHE/phi3-tokenizer.json" "$WORK/prompts.json" <<'PYEOF'
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
chat = "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nWrite a haiku about ice hockey.<|end|>\n<|assistant|>\n"
cases = [
    ("hello", "Hello, world", 32),
    ("chat", chat, 24),
    ("unicode", "Emoji 👩‍💻 and 日本語, naïve café", 16),
    ("long", "The quick brown fox jumps over the lazy dog. " * 30, 16),
]
out = {"cases": [
    {"name": n, "prompt": p, "prompt_ids": tok.encode(p, add_special_tokens=True).ids, "max_new_tokens": k}
    for n, p, k in cases
]}
json.dump(out, open(sys.argv[2], "w"), ensure_ascii=False)
PYEOF

"$PY" scripts/reference_phi3.py --gguf "$WORK/reference.gguf" --prompts "$WORK/prompts.json" --out "$WORK/expected.json"
# Keep the prompt text beside the ids so the test can check its own encoding.
"$PY" - "$WORK/prompts.json" "$WORK/expected.json" tests/data/reference_phi3.json <<'PYEOF'
import json, sys
prompts = {c["name"]: c["prompt"] for c in json.load(open(sys.argv[1]))["cases"]}
exp = json.load(open(sys.argv[2]))
for c in exp["cases"]:
    c["prompt"] = prompts[c["name"]]
    c.pop("top2_margins", None)
json.dump(exp, open(sys.argv[3], "w"), ensure_ascii=False, indent=1)
PYEOF
echo "wrote tests/data/reference_phi3.json"
