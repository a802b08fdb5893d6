#!/usr/bin/env bash
# Builds libphi_mobile.so for the Android ABIs the AAR ships (arm64-v8a,
# armeabi-v7a, x86_64) with cargo-ndk, into
# android/phimobile/src/main/jniLibs/<abi>/, where the Gradle build packages
# them. The :phimobile Gradle module runs this script before preBuild (unless
# -Pphimobile.buildRust=false).
#
#   scripts/build-android.sh
#
# Needs the Android NDK r27 or newer: ANDROID_NDK_HOME or ANDROID_NDK_ROOT, or
# the newest NDK in the SDK (ANDROID_HOME / ANDROID_SDK_ROOT / the default
# Android Studio location). Installs cargo-ndk and the Rust targets if missing.
# Builds with the `dist` profile (fat LTO), what apps ship.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="$REPO/android/phimobile/src/main/jniLibs"
MIN_NDK=27
# The API level the .so is linked against: the AAR's minSdk
# (android/phimobile/build.gradle.kts). Higher would let the library use libc
# symbols older devices lack; they would fail to load it.
API=26
ABIS=(arm64-v8a armeabi-v7a x86_64)
TRIPLES=(aarch64-linux-android armv7-linux-androideabi x86_64-linux-android)

die() {
  echo "build-android.sh: $*" >&2
  exit 1
}

# A Gradle daemon started by Android Studio often lacks ~/.cargo/bin on PATH.
[ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ] && PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)."
command -v rustup >/dev/null 2>&1 || die "rustup not found: the Android targets are installed with it (https://rustup.rs)."

# --- NDK -------------------------------------------------------------------
ndk="${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}"
ndk_from="${ANDROID_NDK_HOME:+ANDROID_NDK_HOME}"
ndk_from="${ndk_from:-${ANDROID_NDK_ROOT:+ANDROID_NDK_ROOT}}"
if [ -z "$ndk" ]; then
  for sdk in "${ANDROID_HOME:-}" "${ANDROID_SDK_ROOT:-}" "$HOME/Android/Sdk" "$HOME/Library/Android/sdk"; do
    if [ -z "$sdk" ] || [ ! -d "$sdk/ndk" ]; then continue; fi
    newest="$(find "$sdk/ndk" -mindepth 1 -maxdepth 1 -type d -exec basename {} \; | sort -V | tail -n 1)"
    if [ -n "$newest" ]; then
      ndk="$sdk/ndk/$newest"
      ndk_from="the newest NDK in $sdk"
      break
    fi
  done
fi
if [ -z "$ndk" ]; then
  die "no Android NDK found. Install NDK r$MIN_NDK or newer (Android Studio: Settings > SDK Manager >
  SDK Tools > NDK (Side by side); or: sdkmanager 'ndk;27.2.12479018') and set ANDROID_NDK_HOME to its
  directory, e.g. export ANDROID_NDK_HOME=\$ANDROID_HOME/ndk/27.2.12479018"
fi
[ -f "$ndk/source.properties" ] || die "$ndk (from $ndk_from) is not an NDK: it has no source.properties."
revision="$(sed -n 's/^Pkg\.Revision *= *//p' "$ndk/source.properties" | tr -d '\r')"
major="${revision%%.*}"
[[ "$major" =~ ^[0-9]+$ ]] || die "cannot read the NDK version from $ndk/source.properties."
if [ "$major" -lt "$MIN_NDK" ]; then
  die "the NDK at $ndk is $revision (r$major); r$MIN_NDK or newer is required (the NDK that AGP 8.13,
  which android/ builds with, uses by default). Set ANDROID_NDK_HOME to a newer one."
fi
# cargo-ndk looks at ANDROID_NDK_HOME first; make it and ANDROID_NDK_ROOT agree.
export ANDROID_NDK_HOME="$ndk" ANDROID_NDK_ROOT="$ndk"
echo "== NDK $revision at $ndk ($ndk_from)"

# --- cargo-ndk and Rust targets --------------------------------------------
if ! cargo ndk --version >/dev/null 2>&1; then
  echo "== installing cargo-ndk (cargo install, once)"
  cargo install cargo-ndk --locked
fi
installed="$(rustup target list --installed)"
missing=()
for triple in "${TRIPLES[@]}"; do
  grep -qx "$triple" <<<"$installed" || missing+=("$triple")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== rustup target add ${missing[*]}"
  rustup target add "${missing[@]}"
fi

# --- build -----------------------------------------------------------------
targets=()
for abi in "${ABIS[@]}"; do targets+=(-t "$abi"); done
echo "== cargo ndk ${targets[*]} --platform $API -o $OUT build --profile dist --lib"
cargo ndk "${targets[@]}" --platform "$API" -o "$OUT" build --profile dist --lib

# --- check -----------------------------------------------------------------
# Every ABI present, and the 64-bit ones aligned for 16 KB pages (required by
# Google Play for Android 15+ targets; .cargo/config.toml sets the linker flag).
readelf="$(find "$ndk/toolchains/llvm/prebuilt" -path '*/bin/llvm-readelf' 2>/dev/null | head -n 1 || true)"
for abi in "${ABIS[@]}"; do
  so="$OUT/$abi/libphi_mobile.so"
  [ -s "$so" ] || die "cargo-ndk did not produce $so."
  if [ -n "$readelf" ] && [ "$abi" != armeabi-v7a ]; then
    while read -r align; do
      [ $((align)) -ge 16384 ] ||
        die "$so has a LOAD segment aligned to $align, below 16 KB; check max-page-size in .cargo/config.toml."
    done < <("$readelf" -lW "$so" | awk '$1 == "LOAD" { print $NF }')
  fi
  echo "$abi: $(du -h "$so" | cut -f1) $so"
done
