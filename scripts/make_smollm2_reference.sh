#!/usr/bin/env bash
# Dev script (not run in CI): greedy continuations of SmolLM2-135M-Instruct
# for a few chat prompts, computed by llama.cpp (llama-cpp-python built from
# source, see scripts/reference_llamacpp.py), with its default f16 KV cache
# -> tests/data/smollm2_greedy.json, with an f32 one -> smollm2_greedy_kv_f32.json, and
# with Llama 3 rope scaling added (f16) -> smollm2_rope_freqs_greedy.json.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${PHI_MOBILE_CACHE:-$HOME/.cache/phi-mobile}"
PY="${LLAMACPP_PYTHON:-$CACHE/venv-llamacpp/bin/python}"
GGUF="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
scripts/fetch-fixtures.sh

# The prompts are the ChatML the model's own template renders (with its
# default system prompt), tokenized by llama.cpp with special tokens parsed.
"$PY" - "$GGUF" "$WORK/prompts.json" <<'PYEOF'
import json, sys, llama_cpp
SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
users = {
    "haiku": "Write a haiku about ice hockey",
    "capital": "What is the capital of France?",
    "code": "Write a Python function that reverses a string.",
}
llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
cases = []
for name, user in users.items():
    text = SYSTEM + "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n"
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    cases.append({"name": name, "user": user, "prompt_ids": ids, "max_new_tokens": 24})
json.dump({"cases": cases}, open(sys.argv[2], "w"))
PYEOF
# The same model with Llama 3 rope scaling (rope_freqs.weight), as the test writes it.
cargo run --release --quiet --example synthetic_gguf -- with-rope-freqs "$GGUF" "$WORK/rope-freqs.gguf"
for kv in f16 f32 rope-freqs; do
  out=tests/data/smollm2_greedy.json flag=--kv-f16 gguf="$GGUF"
  if [ "$kv" = f32 ]; then out=tests/data/smollm2_greedy_kv_f32.json flag=; fi
  if [ "$kv" = rope-freqs ]; then out=tests/data/smollm2_rope_freqs_greedy.json gguf="$WORK/rope-freqs.gguf"; fi
  "$PY" scripts/reference_llamacpp.py greedy --gguf "$gguf" --prompts "$WORK/prompts.json" --out "$WORK/out.json" $flag
  "$PY" - "$WORK/prompts.json" "$WORK/out.json" "$out" <<'PYEOF'
import json, sys
users = {c["name"]: c["user"] for c in json.load(open(sys.argv[1]))["cases"]}
out = json.load(open(sys.argv[2]))
for c in out["cases"]:
    c["user"] = users[c["name"]]
json.dump(out, open(sys.argv[3], "w"), ensure_ascii=False, indent=1)
PYEOF
  echo "wrote $out"
done
