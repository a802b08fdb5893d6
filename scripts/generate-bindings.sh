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

# Swift names enum cases in lowerCamelCase, and UniFFI does so for every enum
# but errors, whose cases it writes UpperCamelCase (uniffi-rs#2262; a TOML
# rename goes through the same filter, so it cannot fix them). So apps write
# `.modelNotFound(what:)` as for every other Swift error, LlmError's cases
# are lowercased here: in its declaration and its converter, nowhere else.
perl -i -ne '
  $in = 1 if /^(public )?enum LlmError\b/;
  $cases{$1} = 1 if $in == 1 && /^\s+case ([A-Z]\w*)/;
  $in = 2 if $in && /^public struct FfiConverterTypeLlmError\b/;
  if ($in) { for my $c (keys %cases) { my $l = lcfirst $c; s/(case |\.)$c\b/$1$l/g } }
  $in = 0 if $in == 2 && /^}/;
  print;
  END { die "no LlmError cases found to lowercase\n" unless %cases }
' "$OUT/swift/PhiMobileCore.swift"

# Kotlin's LlmException subclasses override `message` with a list of their
# fields (`what=/x.gguf`); point it at the Rust sentence `toString()` already
# shows (exported Display), so a log of `e.message` reads as the error does.
perl -i -ne '
  $in = 1 if /^sealed class LlmException\b/;
  $in = 0 if $in && /override fun toString\(\)/;
  if ($in && $message && /^(\s+)get\(\) = ".*"$/) { $_ = "$1get() = toString()\n"; $n++ }
  $message = $in && /override val message$/;
  print;
  END { die "no LlmException messages found to replace\n" unless $n }
' "$OUT/kotlin/dev/phimobile/phi_mobile.kt"

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
