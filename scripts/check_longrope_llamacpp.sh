#!/usr/bin/env bash
# Dev script (not run in CI): llama.cpp's greedy ids on the synthetic
# LongRoPE models of tests/data/reference_phi_family.json, compared with the
# transformers ids there (which tests/reference.rs holds ours to).
#
# llama.cpp picks one factor set per context (long when the context, rounded
# up to a multiple of 256, exceeds the original), transformers by the
# sequence's length, so they can only agree where the two choices coincide:
#   long:  the file as it is (original context 48), n_ctx 512, the prompt of
#          122 tokens (long in both);
#   short: the original context rewritten to 256 (the attention factor is
#          metadata, so the short-factor arithmetic is unchanged), n_ctx 256,
#          the prompts that stay under 48 tokens (short in both).
# Needs venv-llamacpp (scripts/reference_llamacpp.py) and venv-fixtures (gguf).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
LLAMA_PY="$CACHE/venv-llamacpp/bin/python"
GGUF_PY="$CACHE/venv-fixtures/bin/python"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
REF=tests/data/reference_phi_family.json

python3 - "$REF" "$WORK" <<'PYEOF'
import json, sys
ref, work = sys.argv[1], sys.argv[2]
cases = {c["name"]: c for c in json.load(open(ref))["models"][0]["cases"]}
for part, names in [("short", ["hello", "chat"]), ("long", ["long"])]:
    json.dump({"cases": [{"name": n, "prompt_ids": cases[n]["prompt_ids"],
                          "max_new_tokens": len(cases[n]["expected_ids"])} for n in names]},
              open(f"{work}/{part}.json", "w"))
PYEOF

for preset in phi35-like phi4-like; do
  # llama.cpp reads the vocabulary from the model file only.
  cargo run --release --quiet --example synthetic_gguf -- "$preset" "$WORK/$preset.gguf" --vocab "$CACHE/phi3-vocab.gguf"
  "$GGUF_PY" - "$WORK/$preset.gguf" "$WORK/$preset-256.gguf" <<'PYEOF'
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
w = gguf.GGUFWriter(sys.argv[2], arch="phi3")
for f in r.fields.values():
    if f.name.startswith("GGUF.") or f.name == "general.architecture":
        continue
    v = 256 if f.name == "phi3.rope.scaling.original_context_length" else f.contents()
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        w.add_key_value(f.name, v, f.types[0], sub_type=f.types[-1])
    else:
        w.add_key_value(f.name, v, f.types[0])
for t in r.tensors:
    w.add_tensor(t.name, t.data, raw_shape=[int(x) for x in reversed(t.shape)], raw_dtype=t.tensor_type)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
PYEOF
  "$LLAMA_PY" scripts/reference_llamacpp.py greedy --gguf "$WORK/$preset.gguf" --prompts "$WORK/long.json" \
    --out "$WORK/$preset-long.out.json" --n-ctx 512 >/dev/null
  "$LLAMA_PY" scripts/reference_llamacpp.py greedy --gguf "$WORK/$preset-256.gguf" --prompts "$WORK/short.json" \
    --out "$WORK/$preset-short.out.json" --n-ctx 256 >/dev/null
done

python3 - "$REF" "$WORK" <<'PYEOF'
import json, sys
ref, work = sys.argv[1], sys.argv[2]
failed = False
for model in json.load(open(ref))["models"]:
    want = {c["name"]: c["expected_ids"] for c in model["cases"]}
    for part in ["short", "long"]:
        for c in json.load(open(f"{work}/{model['preset']}-{part}.out.json"))["cases"]:
            same = c["expected_ids"] == want[c["name"]]
            failed |= not same
            print(f"{model['preset']} {c['name']} ({part} factors): llama.cpp {'equals' if same else 'DIFFERS from'} transformers")
sys.exit(1 if failed else 0)
PYEOF
