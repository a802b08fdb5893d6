#!/usr/bin/env bash
# Builds bindings/PhiMobile/PhiMobileFFI.xcframework: the Rust library as static
# libraries for iOS devices and the iOS Simulator, with the generated C header
# and a module map, in the layout Package.swift's binaryTarget expects.
# Runs on macOS with Xcode (xcodebuild, lipo) and rustup.
#
#   scripts/build-ios.sh              # build the XCFramework (~3 fat-LTO builds)
#   scripts/build-ios.sh --release    # also zip it and print the SwiftPM checksum
#   scripts/build-ios.sh --check      # no build: check the header staging and
#                                     # that every file states the same minimum
#                                     # iOS version (runs anywhere, also Linux)
#
# Output (gitignored): bindings/PhiMobile/PhiMobileFFI.xcframework
#   ios-arm64/                    libphi_mobile.a  Headers/PhiMobileFFI/{PhiMobileFFI.h,module.modulemap}
#   ios-arm64_x86_64-simulator/   libphi_mobile.a  Headers/PhiMobileFFI/...
# Then an app adds the package at bindings/PhiMobile (Xcode: File > Add Package
# Dependencies > Add Local...) and links the product PhiMobile (and
# PhiMobileChat); see README.md "iOS".
#
# Publishing a release instead of a local path: run with --release, upload
# bindings/PhiMobile/PhiMobileFFI.xcframework.zip as a release asset, and in
# Package.swift replace the local binaryTarget with
#     .binaryTarget(name: "PhiMobileFFI",
#                   url: "https://github.com/OWNER/phi-mobile/releases/download/vX.Y.Z/PhiMobileFFI.xcframework.zip",
#                   checksum: "<the printed checksum>")
# The checksum is `swift package compute-checksum` of that exact zip (a SHA-256);
# rebuilding gives a different zip, so compute it from the file you upload.
# SwiftPM wants the .xcframework directory at the zip's root (ditto --keepParent).
set -euo pipefail
cd "$(dirname "$0")/.."

# The one minimum iOS version of the project. The same version is in
# bindings/PhiMobile/Package.swift (.iOS(.v16)), .cargo/config.toml ([env]) and
# ios/project.yml (deploymentTarget); --check fails if they disagree. rustc
# stamps it into every object file, and Xcode warns when linking objects built
# for a newer iOS than the app's minimum. Why 16: the devices iOS 16 dropped
# (iPhone 6s/7, SE 1st generation) have 2 GB of RAM, too little for the 2-4 GB
# models this library is for; the increased-memory-limit entitlement exists
# since iOS 15, so 16 loses nothing an LLM app could use.
IOS_MIN=16.0
export IPHONEOS_DEPLOYMENT_TARGET="$IOS_MIN"

DEVICE=aarch64-apple-ios
SIMULATORS=(aarch64-apple-ios-sim x86_64-apple-ios) # Apple silicon and Intel Macs
PROFILE=dist # fat LTO, one codegen unit (Cargo.toml)
LIB=libphi_mobile.a
PACKAGE=bindings/PhiMobile
INCLUDE="$PACKAGE/Sources/PhiMobileFFI/include" # kept in sync by scripts/generate-bindings.sh
OUT="$PACKAGE/PhiMobileFFI.xcframework"
TARGET="${CARGO_TARGET_DIR:-target}"
STAGE="$TARGET/ios-xcframework"

# The XCFramework's headers: the generated header plus a module map of our
# own, both in a subdirectory named after the module:
# - Not the generated module.modulemap: it says `use "_Builtin_stdbool"` and
#   `use "_Builtin_stdint"`, modules that Xcode 26's clang no longer has, so
#   the module fails to build and the generated Swift cannot import it
#   (uniffi-rs#2917). Our map declares the header and nothing else.
# - A plain `module`, not `framework module`: the slices are libraries plus
#   headers, not .framework bundles (uniffi-rs#2646).
# - In Headers/PhiMobileFFI/, not Headers/: Xcode copies every library
#   XCFramework's headers into one shared include/ directory, so two packages
#   that both ship Headers/module.modulemap break an app's build ("Multiple
#   commands produce .../include/module.modulemap"). clang still finds the map
#   for `import PhiMobileFFI` because it looks in <include dir>/<module name>/
#   (HeaderSearch::lookupModule); the directory name must equal the module name.
stage_headers() {
  local dir="$1"
  rm -rf "$dir"
  mkdir -p "$dir/PhiMobileFFI"
  cp "$INCLUDE/PhiMobileFFI.h" "$dir/PhiMobileFFI/"
  cat > "$dir/PhiMobileFFI/module.modulemap" <<'EOF'
module PhiMobileFFI {
    header "PhiMobileFFI.h"
    export *
}
EOF
}

# Every place that states the minimum iOS version states IOS_MIN.
check_versions() {
  local major="${IOS_MIN%%.*}" status=0
  grep -q "\.iOS(\.v$major)" "$PACKAGE/Package.swift" \
    || { echo "build-ios: $PACKAGE/Package.swift does not say .iOS(.v$major)" >&2; status=1; }
  grep -q "^IPHONEOS_DEPLOYMENT_TARGET = \"$IOS_MIN\"" .cargo/config.toml \
    || { echo "build-ios: .cargo/config.toml does not set IPHONEOS_DEPLOYMENT_TARGET = \"$IOS_MIN\"" >&2; status=1; }
  grep -q "iOS: \"$IOS_MIN\"" ios/project.yml \
    || { echo "build-ios: ios/project.yml does not say iOS: \"$IOS_MIN\"" >&2; status=1; }
  return $status
}

if [ "${1:-}" = "--check" ]; then
  check_versions
  stage_headers "$STAGE/headers"
  grep -q "^#pragma once" "$STAGE/headers/PhiMobileFFI/PhiMobileFFI.h"
  echo "build-ios: versions agree (iOS $IOS_MIN); headers staged in $STAGE/headers"
  exit 0
fi

RELEASE=false
[ "${1:-}" = "--release" ] && RELEASE=true

if [ "$(uname)" != Darwin ] || ! command -v xcodebuild >/dev/null 2>&1; then
  echo "build-ios: needs macOS with Xcode (xcodebuild, lipo); use --check elsewhere" >&2
  exit 1
fi
check_versions

echo "== generated header matches the Rust library"
# The XCFramework ships the committed header; a stale one would link but call
# functions with the wrong signatures or checksums.
scripts/generate-bindings.sh --check

echo "== rustup targets"
rustup target add "$DEVICE" "${SIMULATORS[@]}"

# `cargo rustc --crate-type staticlib` builds only the static library; `cargo
# build --lib` would also link an iOS cdylib nobody uses, doubling the LTO time.
for triple in "$DEVICE" "${SIMULATORS[@]}"; do
  echo "== $triple (profile $PROFILE, iOS $IOS_MIN)"
  cargo rustc --profile "$PROFILE" --lib --crate-type staticlib --target "$triple"
done

echo "== simulator slices into one library"
mkdir -p "$STAGE/simulator"
SIM_INPUTS=()
for triple in "${SIMULATORS[@]}"; do SIM_INPUTS+=("$TARGET/$triple/$PROFILE/$LIB"); done
lipo -create "${SIM_INPUTS[@]}" -output "$STAGE/simulator/$LIB"
lipo -info "$STAGE/simulator/$LIB"

echo "== $OUT"
stage_headers "$STAGE/headers"
rm -rf "$OUT" # xcodebuild refuses to overwrite
xcodebuild -create-xcframework \
  -library "$TARGET/$DEVICE/$PROFILE/$LIB" -headers "$STAGE/headers" \
  -library "$STAGE/simulator/$LIB" -headers "$STAGE/headers" \
  -output "$OUT"

if $RELEASE; then
  ZIP="$OUT.zip"
  rm -f "$ZIP"
  (cd "$(dirname "$OUT")" && ditto -c -k --sequesterRsrc --keepParent "$(basename "$OUT")" "$(basename "$ZIP")")
  echo "== $ZIP"
  echo "checksum: $(swift package compute-checksum "$ZIP")"
fi
echo "built $OUT"
