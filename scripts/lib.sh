# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# Sourced by every script: the one cache directory, installs, and the host
# library build. The caller has `set -euo pipefail` and is in the repository
# root.

# Everything fetched or built outside the clone: fixtures, toolchains, build
# outputs (CARGO_TARGET_DIR, when .ci/run sets it there).
export PHI_MOBILE_CACHE="${PHI_MOBILE_CACHE:-$HOME/.cache/phi-mobile}"
CACHE="$PHI_MOBILE_CACHE"
mkdir -p "$CACHE"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

# usage: apt_install PACKAGE...   (only the missing ones; as root or with
# passwordless sudo; a fresh machine may have no package lists yet, so the
# lists are updated only when an install fails)
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "installing ${missing[*]} (apt-get)"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null ||
    { "${sudo[@]}" apt-get update -q </dev/null >/dev/null &&
      "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null; }
}

# usage: rust_target TRIPLE...   (rustup target add, only the missing ones)
rust_target() {
  local installed t
  installed="$(rustup target list --installed)"
  for t in "$@"; do grep -qx "$t" <<<"$installed" || rustup target add "$t"; done
}

# The host library (and the synthetic-model writer) built with the features
# the test build uses: a `--lib`-only build resolves dev-dependencies'
# features differently (clap's derive turns on syn's "full"), which rebuilds
# serde, thiserror and everything above them — minutes on a cold machine.
host_library() {
  cargo build --release --quiet --lib --example synthetic_gguf
  HOST_LIB="$TARGET_DIR/release/libphi_mobile.so"
  [ "$(uname)" = Darwin ] && HOST_LIB="$TARGET_DIR/release/libphi_mobile.dylib"
  [ -f "$HOST_LIB" ] || { echo "no $HOST_LIB after the build" >&2; exit 1; }
}
