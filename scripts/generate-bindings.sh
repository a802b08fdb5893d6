#!/usr/bin/env bash
# Generates the Kotlin and Swift bindings from the built library (UniFFI
# library mode, unformatted so the output never depends on ktlint/swiftformat
# being installed).
#
#   scripts/generate-bindings.sh            # write bindings/kotlin, bindings/PhiMobile
#   scripts/generate-bindings.sh --check    # fail if the committed ones differ
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh
host_library
cargo build --release -p uniffi-bindgen --quiet
TARGET="$TARGET_DIR"
LIB="$HOST_LIB"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
gen() { "$TARGET"/release/uniffi-bindgen generate "$LIB" --language "$1" --out-dir "$OUT/$1" --no-format >/dev/null; }
gen kotlin
gen swift

# Hand-written layers live beside the generated files; only generated paths
# are replaced or compared.
KT_GEN=bindings/kotlin/src/main/kotlin/dev/phimobile/phi_mobile.kt
SW_DIR=bindings/PhiMobile/Sources
pairs=(
  "$OUT/kotlin/dev/phimobile/phi_mobile.kt:$KT_GEN"
  "$OUT/swift/PhiMobileCore.swift:$SW_DIR/PhiMobileCore/PhiMobileCore.swift"
  "$OUT/swift/PhiMobileFFI.h:$SW_DIR/PhiMobileFFI/include/PhiMobileFFI.h"
  "$OUT/swift/PhiMobileFFI.modulemap:$SW_DIR/PhiMobileFFI/include/module.modulemap"
)

if [ "${1:-}" = "--check" ]; then
  status=0
  for p in "${pairs[@]}"; do
    if ! diff -u "${p#*:}" "${p%%:*}" > /dev/null 2>&1; then
      echo "generated bindings are stale: ${p#*:} (run scripts/generate-bindings.sh and commit)" >&2
      diff -u "${p#*:}" "${p%%:*}" | head -40 >&2 || true
      status=1
    fi
  done
  [ $status = 0 ] && echo "bindings up to date"
  exit $status
fi

for p in "${pairs[@]}"; do
  mkdir -p "$(dirname "${p#*:}")"
  cp "${p%%:*}" "${p#*:}"
done
echo "bindings written"
