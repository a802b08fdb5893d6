#!/usr/bin/env bash
# Compiles the library, in release, for the phone targets: the three Android
# ABIs (cargo check) and iOS arm64 (the staticlib apps link, plus a check that
# it defines every function the generated Swift header declares). What CI can
# verify without an Android NDK or Xcode.
#
#   scripts/cross-check.sh            # all of them
#   scripts/cross-check.sh android    # or: ios
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

need=()
command -v clang >/dev/null || need+=(clang)
command -v llvm-ar >/dev/null || need+=(llvm)
command -v llvm-nm >/dev/null || need+=(llvm)
if [ ${#need[@]} -gt 0 ]; then
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -q "${need[@]}" </dev/null ||
    { "${sudo[@]}" apt-get update -q </dev/null && "${sudo[@]}" apt-get install -y -q "${need[@]}" </dev/null; }
fi
installed="$(rustup target list --installed)"
add_target() { grep -qx "$1" <<<"$installed" || rustup target add "$1"; }

# usage: c_toolchain RUST_TRIPLE CLANG_TRIPLE EXTRA_CFLAGS
c_toolchain() {
  local v="${1//-/_}"
  export "CC_$v=clang" "AR_$v=llvm-ar"
  export "CFLAGS_$v=--target=$2 -nostdlibinc -DRING_CORE_NOSTDLIBINC=1 -isystem $SHIM $3"
}

if [ "$WHAT" = all ] || [ "$WHAT" = android ]; then
  for pair in "${android[@]}"; do
    triple="${pair%%:*}"
    add_target "$triple"
    c_toolchain "$triple" "${pair#*:}" ""
    step "cargo check --release --target $triple"
    cargo check --release --lib --quiet --target "$triple"
  done
fi

if [ "$WHAT" = all ] || [ "$WHAT" = ios ]; then
  add_target "$ios"
  step "one minimum iOS version across the project"
  scripts/build-ios.sh --check
  min_ios="$(sed -n 's/^IPHONEOS_DEPLOYMENT_TARGET = "\(.*\)"/\1/p' .cargo/config.toml)"
  c_toolchain "$ios" "arm64-apple-ios$min_ios" ""
  # cc-rs asks xcrun for the SDK unless SDKROOT is set; ring needs no SDK file
  # beyond the shim.
  export SDKROOT="$SHIM"
  step "staticlib for $ios (release)"
  cargo rustc --release --lib --quiet --target "$ios" --crate-type staticlib
  TARGET_DIR="${CARGO_TARGET_DIR:-target}"
  lib="$TARGET_DIR/$ios/release/libphi_mobile.a"
  step "every function in PhiMobileFFI.h is defined in $(basename "$lib")"
  header=bindings/swift/Sources/PhiMobileFFI/include/PhiMobileFFI.h
  declared="$(grep -oE '\b(uniffi|ffi)_phi_mobile_[A-Za-z0-9_]+\(' "$header" | tr -d '(' | sort -u)"
  # Mach-O prefixes C symbols with an underscore.
  # llvm-nm exits 1 on members without symbols (compiler_builtins has some).
  symbols="$(llvm-nm --defined-only --extern-only "$lib" 2>/dev/null || true)"
  defined="$(awk '$2 == "T" {print $3}' <<<"$symbols" | sed 's/^_//' | sort -u)"
  missing="$(comm -23 <(echo "$declared") <(echo "$defined"))"
  if [ -n "$missing" ]; then
    echo "declared in $header but not defined in $lib:" >&2
    echo "$missing" >&2
    exit 1
  fi
  echo "$(echo "$declared" | wc -l) functions declared, all defined"
fi
step "done"
