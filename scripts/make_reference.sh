#!/usr/bin/env bash
# Dev script (not run in CI): recomputes the greedy token ids transformers'
# Phi3ForCausalLM produces on the synthetic models, which tests/reference.rs
# compares to ours. Needs the venv described in scripts/reference_phi3.py
# (torch, transformers, gguf, tokenizers; ~6 GB).
#
#   scripts/make_reference.sh             tests/data/reference_phi3.json (Phi-3-mini-4k's shape)
#   scripts/make_reference.sh phi-family  tests/data/reference_phi_family.json: Phi-3.5-like
#       (LongRoPE) and Phi-4-mini-like (LongRoPE, partial rotary, GQA, tied
#       output) models, prompts below, across and above the original context
#   scripts/make_reference.sh llama3      tests/data/reference_llama3.json: a Llama model with
#       Llama 3 rope scaling (rope_freqs.weight), against LlamaForCausalLM's "llama3" rope
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${PHI_MOBILE_CACHE:-$HOME/.cache/phi-mobile}"
PY="${REF_PYTHON:-$CACHE/venv-ref/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SET="${1:-phi3}"
case "$SET" in
  phi3) PRESETS=(reference); OUT=tests/data/reference_phi3.json ;;
  phi-family) PRESETS=(phi35-like phi4-like); OUT=tests/data/reference_phi_family.json ;;
  llama3) PRESETS=(llama3-like); OUT=tests/data/reference_llama3.json ;;
  *) echo "usage: $0 [phi3|phi-family|llama3]" >&2; exit 2 ;;
esac

scripts/fetch-fixtures.sh

# Prompt ids come from the same tokenizer.json (Python binding of the same
# Rust tokenizers); the Rust test also checks its own encoding against them.
"$PY" - "$CACHE/phi3-tokenizer.json" "$WORK/prompts.json" "$SET" <<'PYEOF'
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
chat = "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nWrite a haiku about ice hockey.<|end|>\n<|assistant|>\n"
fox = "The quick brown fox jumps over the lazy dog. "
if sys.argv[3] in ("phi3", "llama3"):
    cases = [
        ("hello", "Hello, world", 32),
        ("chat", chat, 24),
        ("unicode", "Emoji 👩‍💻 and 日本語, naïve café", 16),
        ("long", fox * 30, 16),
    ]
else:
    # The synthetic LongRoPE models' original context is 48 tokens.
    cases = [
        ("hello", "Hello, world", 24),    # 4 + 24: short factors throughout
        ("chat", chat, 24),               # 20 + 24
        ("crossing", fox * 3, 24),        # 38 + 24: switches to the long factors at 49
        ("long", fox * 10, 16),           # 122 + 16: long factors throughout
    ]
out = {"cases": [
    {"name": n, "prompt": p, "prompt_ids": tok.encode(p, add_special_tokens=True).ids, "max_new_tokens": k}
    for n, p, k in cases
]}
json.dump(out, open(sys.argv[2], "w"), ensure_ascii=False)
PYEOF

for preset in "${PRESETS[@]}"; do
  cargo run --release --quiet --example synthetic_gguf -- "$preset" "$WORK/$preset.gguf"
  if [ "$SET" = llama3 ]; then
    # The parameters tests/common/synthetic.rs's llama3_like() derives its rope_freqs from.
    "$PY" scripts/reference_llama.py --gguf "$WORK/$preset.gguf" --prompts "$WORK/prompts.json" \
      --out "$WORK/$preset.json" --llama3-rope 8,1,4,32
  else
    "$PY" scripts/reference_phi3.py --gguf "$WORK/$preset.gguf" --prompts "$WORK/prompts.json" --out "$WORK/$preset.json"
  fi
done
# Keep the prompt text beside the ids so the test can check its own encoding.
"$PY" - "$WORK" "$OUT" "${PRESETS[@]}" <<'PYEOF'
import json, sys
work, out, presets = sys.argv[1], sys.argv[2], sys.argv[3:]
prompts = {c["name"]: c["prompt"] for c in json.load(open(f"{work}/prompts.json"))["cases"]}
docs = []
for preset in presets:
    exp = json.load(open(f"{work}/{preset}.json"))
    exp["preset"] = preset
    for c in exp["cases"]:
        c["prompt"] = prompts[c["name"]]
        c.pop("top2_margins", None)
    docs.append(exp)
json.dump(docs[0] if len(docs) == 1 else {"models": docs}, open(out, "w"), ensure_ascii=False, indent=1)
PYEOF
echo "wrote $OUT"
