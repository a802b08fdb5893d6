#!/usr/bin/env bash
# Runs the Swift package's tests (bindings/PhiMobile: generated bindings + the
# async layer) against the host-built library.
#
#   scripts/test-swift.sh
#
# Where `swift` is on PATH (a Mac, a Swift Linux box) it is used directly.
# Otherwise (Debian 12, which has no Swift) the tests run with Swift 6.0 from a
# Debian 13 chroot that is prepared once and cached outside the clone:
#   ${PHI_MOBILE_CACHE:-~/.cache/phi-mobile}/swift-root   (~3 GB; needs root)
# The chroot gets /proc, the repo and a temp dir with the library and fixtures,
# mounted in a private mount namespace and unmounted on every exit path.
# The tests' paths arrive in PHI_MOBILE_TEST_MODEL / PHI_MOBILE_TEST_TOKENIZER
# (and SmolLM2 in PHI_MOBILE_TEST_SMOLLM2), the library's directory in
# PHI_MOBILE_LIB_DIR (read by Package.swift).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd -P)"
source scripts/lib.sh
PACKAGE=bindings/PhiMobile

echo "== fixtures"
scripts/fetch-fixtures.sh

echo "== synthetic model and host library"
# The synthetic reference model is cached by the hash of what writes it.
host_library
MODEL_KEY="$(cat tests/common/synthetic.rs examples/synthetic_gguf.rs Cargo.lock | sha256sum | cut -c1-16)"
MODEL="$CACHE/swift-fixtures/reference-$MODEL_KEY.gguf"
if [ ! -s "$MODEL" ]; then
  mkdir -p "$CACHE/swift-fixtures"
  rm -f "$CACHE"/swift-fixtures/reference-*.gguf
  "$TARGET_DIR/release/examples/synthetic_gguf" reference "$MODEL.tmp.$$" >/dev/null
  mv "$MODEL.tmp.$$" "$MODEL"
fi
# The tests get copies of the library (a concurrent cargo build cannot swap it
# mid-run), the tokenizer and the synthetic model in a temp dir of their own.
DATA="$(mktemp -d "${TMPDIR:-/tmp}/phi-mobile-swift.XXXXXX")"
trap 'rm -rf "$DATA"' EXIT
# (cp -p: unchanged inputs keep their times, so SwiftPM does not relink.)
cp -p "$HOST_LIB" "$DATA/"
cp -p "$CACHE/phi3-tokenizer.json" "$DATA/"
cp -p "$MODEL" "$DATA/reference.gguf"
# SmolLM2 (98 MB): a hard link where the cache and the temp dir share a file
# system, else a copy.
ln "$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" "$DATA/" 2>/dev/null || cp -p "$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" "$DATA/"
mkdir "$DATA/tmp" # the tests' and SwiftPM's scratch files, gone with $DATA

# Compiler warnings in our hand-written code (not the generated file) fail the run.
check_warnings() {
  if grep -E "(Sources/PhiMobile|Sources/PhiMobileChat|Tests)/[^:]*:[0-9]+:[0-9]+: warning:" "$1"; then
    echo "test-swift: warnings in hand-written Swift (listed above)" >&2
    return 1
  fi
}

if command -v swift >/dev/null 2>&1; then
  echo "== swift test ($(command -v swift))"
  LOG="$DATA/swift-test.log"
  TMPDIR="$DATA/tmp" PHI_MOBILE_LIB_DIR="$DATA" \
  PHI_MOBILE_TEST_MODEL="$DATA/reference.gguf" \
  PHI_MOBILE_TEST_TOKENIZER="$DATA/phi3-tokenizer.json" \
  PHI_MOBILE_TEST_SMOLLM2="$DATA/SmolLM2-135M-Instruct.Q4_1.gguf" \
    swift test --package-path "$PACKAGE" 2>&1 | tee "$LOG"
  check_warnings "$LOG"
  exit 0
fi

# ---- Swift 6.0 in a Debian 13 chroot ----------------------------------------
# Every mount (/proc, the repo, the data dir) is made in a private mount
# namespace (unshare): the host never sees them, concurrent runs cannot trip
# over each other's, and they vanish with the namespace even if this script is
# killed outright. Inside, a trap still unmounts them on every exit path.
if [ "$(id -u)" != 0 ]; then
  echo "test-swift: no swift on PATH, and the Swift chroot needs root" >&2
  exit 1
fi
ROOT="$CACHE/swift-root"
export DEBIAN_FRONTEND=noninteractive

# Runs "$@" (a command inside the chroot) with /proc mounted, plus the bind
# mounts given as SOURCE=TARGET words before a `--`.
in_chroot() {
  unshare --mount --propagation private bash -c '
    set -euo pipefail
    root="$1"; shift
    mounts=()
    cleanup() {
      local status=$? i
      for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[$i]}" || umount -l "${mounts[$i]}" || status=1
      done
      exit $status
    }
    trap cleanup EXIT
    trap "exit 130" INT
    trap "exit 143" TERM
    mount -t proc proc "$root/proc" # swiftc finds its own libraries via /proc/self/exe
    mounts+=("$root/proc")
    while [ "$1" != -- ]; do
      mount --bind "${1%%=*}" "$root${1#*=}"
      mounts+=("$root${1#*=}")
      shift
    done
    shift
    chroot "$root" "$@"
  ' in_chroot "$ROOT_DIR" "$@"
}

prepare_root() {
  [ -f "$ROOT/.phi-mobile-ready" ] && return 0
  local partial="$ROOT.partial" log="$CACHE/swift-root.log"
  rm -rf "$partial"
  apt_install debootstrap
  echo "== debootstrap Debian 13 into $partial (log: $log)"
  debootstrap --variant=minbase --include=ca-certificates trixie "$partial" http://deb.debian.org/debian \
    </dev/null >"$log" 2>&1 || { tail -30 "$log" >&2; return 1; }
  echo "== swiftlang in the chroot"
  ROOT_DIR="$partial" in_chroot -- \
    apt-get install -y -q --no-install-recommends swiftlang libc6-dev libstdc++-14-dev \
    </dev/null >>"$log" 2>&1 || { tail -30 "$log" >&2; return 1; }
  ROOT_DIR="$partial" in_chroot -- apt-get clean </dev/null >>"$log" 2>&1
  touch "$partial/.phi-mobile-ready"
  rm -rf "$ROOT"
  mv "$partial" "$ROOT"
}

# One preparer at a time; concurrent runs wait here, then share the root.
exec 9>"$CACHE/swift-root.lock"
flock 9
prepare_root
flock -u 9

# Each clone gets fixed paths in the chroot, so SwiftPM's build cache (kept in
# the chroot, not in the repo) stays valid between runs; runs of one clone
# take turns.
KEY="$(printf %s "$REPO" | sha256sum | cut -c1-16)"
IN="/phi/$KEY"
# SwiftPM does not always rebuild after the C header of the FFI changes (a
# stale build crashed in Model.info()) or after targets are renamed (a stale
# module of the old name was imported), so the cache is also keyed by the
# header and the manifest; older caches of this clone go once the clone's
# lock is held.
FFI_KEY="$(cat "$PACKAGE"/Sources/PhiMobileFFI/include/* "$PACKAGE"/Package.swift | sha256sum | cut -c1-12)"
SCRATCH="/var/cache/phi-mobile-swift/$KEY-$FFI_KEY"
mkdir -p "$ROOT$IN/repo" "$ROOT$IN/data"
exec 8>"$CACHE/swift-run-$KEY.lock"
flock 8
for old in "$ROOT/var/cache/phi-mobile-swift/$KEY" "$ROOT/var/cache/phi-mobile-swift/$KEY"-*; do
  [ "$old" = "$ROOT$SCRATCH" ] || rm -rf "$old"
done

echo "== swift test (Swift 6.0 in $ROOT)"
set +e
ROOT_DIR="$ROOT" in_chroot "$REPO=$IN/repo" "$DATA=$IN/data" -- \
  /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
  TMPDIR="$IN/data/tmp" PHI_MOBILE_LIB_DIR="$IN/data" \
  PHI_MOBILE_TEST_MODEL="$IN/data/reference.gguf" \
  PHI_MOBILE_TEST_TOKENIZER="$IN/data/phi3-tokenizer.json" \
  PHI_MOBILE_TEST_SMOLLM2="$IN/data/SmolLM2-135M-Instruct.Q4_1.gguf" \
  swift test --package-path "$IN/repo/$PACKAGE" --scratch-path "$SCRATCH" </dev/null 2>&1 | tee "$DATA/swift-test.log"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || { echo "test-swift: swift test failed ($status)" >&2; exit "$status"; }
check_warnings "$DATA/swift-test.log"
echo "== swift tests passed"
