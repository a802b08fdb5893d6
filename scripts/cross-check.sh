#!/usr/bin/env bash
# Type-checks the library, in release, for the phone targets: the three
# Android ABIs and iOS arm64 (cargo check: the target's cfgs, target-specific
# dependencies and build scripts), and checks that the library defines every
# function the generated Swift header declares. What CI can verify without an
# Android NDK or Xcode.
#
#   scripts/cross-check.sh            # all of them
#   scripts/cross-check.sh android    # or: ios
#
# Code generation for ARM64 is exercised by scripts/test-aarch64.sh (a release
# build for aarch64 Linux whose tests run under qemu), so this tier does not
# also build a release staticlib for iOS (~7 min on a cold 2-core machine);
# scripts/build-ios.sh does on a Mac.
#
# The Rust code compiles exactly as on a developer's machine. The one C
# dependency, ring (TLS for model downloads), is compiled with Debian's clang
# for the same target, without the platform's headers: ring supports that
# (RING_CORE_NOSTDLIBINC), and scripts/cross-shim stands in for the two SDK
# headers it still reaches (TargetConditionals.h on iOS; stdlib.h for clang's
# mm_malloc.h on x86-64). Real device builds (scripts/build-android.sh,
# scripts/build-ios.sh) use the NDK's and Xcode's compilers and headers.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
step() { echo "== $* ($((SECONDS - START)) s)"; }
WHAT="${1:-all}"
SHIM="$PWD/scripts/cross-shim"

android=(aarch64-linux-android:aarch64-linux-android24 armv7-linux-androideabi:armv7a-linux-androideabi24 x86_64-linux-android:x86_64-linux-android24)
ios=aarch64-apple-ios

source scripts/lib.sh
apt_install clang llvm

# usage: c_toolchain RUST_TRIPLE CLANG_TRIPLE EXTRA_CFLAGS
c_toolchain() {
  local v="${1//-/_}"
  export "CC_$v=clang" "AR_$v=llvm-ar"
  export "CFLAGS_$v=--target=$2 -nostdlibinc -DRING_CORE_NOSTDLIBINC=1 -isystem $SHIM $3"
}

if [ "$WHAT" = all ] || [ "$WHAT" = android ]; then
  checks=()
  for pair in "${android[@]}"; do
    triple="${pair%%:*}"
    rust_target "$triple"
    c_toolchain "$triple" "${pair#*:}" ""
    checks+=(--target "$triple")
  done
  step "cargo check --release for ${android[*]%%:*}"
  cargo check --release --lib --quiet "${checks[@]}"
fi

if [ "$WHAT" = all ] || [ "$WHAT" = ios ]; then
  rust_target "$ios"
  step "one minimum iOS version across the project"
  scripts/build-ios.sh --check
  min_ios="$(sed -n 's/^IPHONEOS_DEPLOYMENT_TARGET = "\(.*\)"/\1/p' .cargo/config.toml)"
  c_toolchain "$ios" "arm64-apple-ios$min_ios" ""
  # cc-rs asks xcrun for the SDK unless SDKROOT is set; ring needs no SDK file
  # beyond the shim.
  export SDKROOT="$SHIM"
  step "cargo check --release --target $ios"
  cargo check --release --lib --quiet --target "$ios"
  host_library
  step "every function in PhiMobileFFI.h is defined in $(basename "$HOST_LIB")"
  header=bindings/PhiMobile/Sources/PhiMobileFFI/include/PhiMobileFFI.h
  declared="$(grep -oE '\b(uniffi|ffi)_phi_mobile_[A-Za-z0-9_]+\(' "$header" | tr -d '(' | sort -u)"
  defined="$(llvm-nm --defined-only --extern-only --dynamic "$HOST_LIB" | awk '$2 == "T" {print $3}' | sort -u)"
  missing="$(comm -23 <(echo "$declared") <(echo "$defined"))"
  if [ -n "$missing" ]; then
    echo "declared in $header but not defined in $HOST_LIB:" >&2
    echo "$missing" >&2
    exit 1
  fi
  echo "$(echo "$declared" | wc -l) functions declared, all defined"
fi
step "done"
