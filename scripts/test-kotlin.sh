#!/usr/bin/env bash
# Tests the Kotlin bindings and the hand-written Kotlin layer on the desktop JVM
# against the host-built library (JUnit 5, JNA). What CI runs for Kotlin.
#
#   scripts/test-kotlin.sh
#
# Installs what it needs once, outside the clone: kotlinc from npm
# (kotlin-compiler) into PHI_MOBILE_CACHE (default ~/.cache/phi-mobile), and
# JNA + JUnit 5 from Debian (apt-get, as root or with passwordless sudo) when
# missing. Compiled jars are cached there too, keyed by a hash of their inputs.
# Warnings (including -Wextra ones) in the hand-written Kotlin, main and test,
# are errors; the generated file is compiled on its own, without -Werror, since
# we do not control its output.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
START=$SECONDS
step() { echo "== $* ($((SECONDS - START)) s)"; }

KOTLIN_VERSION=2.4.20
CACHE="${PHI_MOBILE_CACHE:-$HOME/.cache/phi-mobile}"
KOTLIN_HOME="$CACHE/kotlin-compiler-$KOTLIN_VERSION"
BUILD_CACHE="$CACHE/kotlin-build"
JNA_JAR=/usr/share/java/jna.jar
JUNIT_JAR=/usr/share/java/junit-platform-console-standalone.jar
mkdir -p "$CACHE" "$BUILD_CACHE"

step "toolchain"
missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
[ -f "$JNA_JAR" ] || missing+=(libjna-java)
[ -f "$JUNIT_JAR" ] || missing+=(junit5)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt-get)"
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet: update only if install fails.
  "${sudo[@]}" apt-get install -y -q "${missing[@]}" </dev/null ||
    { "${sudo[@]}" apt-get update -q </dev/null && "${sudo[@]}" apt-get install -y -q "${missing[@]}" </dev/null; }
fi
if [ ! -x "$KOTLIN_HOME/bin/kotlinc" ]; then
  echo "fetching kotlin-compiler@$KOTLIN_VERSION (npm, ~90 MB)"
  dl="$(mktemp -d "$CACHE/.kotlin-download.XXXXXX")"
  # npm verifies the tarball against the registry's sha512 integrity.
  (cd "$dl" && npm pack --silent "kotlin-compiler@$KOTLIN_VERSION" >/dev/null)
  tar -xzf "$dl/kotlin-compiler-$KOTLIN_VERSION.tgz" -C "$dl"
  chmod +x "$dl"/package/bin/*
  # Atomic publish; a concurrent run that got there first wins.
  mv -T "$dl/package" "$KOTLIN_HOME" 2>/dev/null || [ -x "$KOTLIN_HOME/bin/kotlinc" ]
  rm -rf "$dl"
fi
KOTLINC="$KOTLIN_HOME/bin/kotlinc"
KLIB="$KOTLIN_HOME/lib"
RUNTIME_CP="$KLIB/kotlin-stdlib.jar:$KLIB/kotlinx-coroutines-core-jvm.jar:$JNA_JAR"
TEST_CP="$KLIB/kotlin-test.jar:$KLIB/kotlin-test-junit5.jar:$JUNIT_JAR"

step "fixtures and host library"
scripts/fetch-fixtures.sh
cargo build --release --quiet --lib --example synthetic_gguf
TARGET="$(realpath "${CARGO_TARGET_DIR:-target}")"
LIB_DIR="$TARGET/release"
[ -f "$LIB_DIR/libphi_mobile.so" ] || { echo "no $LIB_DIR/libphi_mobile.so" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tmp"
"$TARGET/release/examples/synthetic_gguf" reference "$WORK/reference.gguf"

KT=bindings/kotlin/src
GENERATED="$KT/main/kotlin/dev/phimobile/phi_mobile.kt"
mapfile -t OURS < <(find "$KT/main/kotlin" -name '*.kt' ! -path "$GENERATED" | sort)
mapfile -t TESTS < <(find "$KT/test/kotlin" -name '*.kt' | sort)

# Compiles into the cache unless a jar for exactly these inputs is there.
# usage: compile NAME KEY CLASSPATH KOTLINC_FLAGS... -- SOURCES...
compile() {
  local name="$1" key="$2" cp="$3"; shift 3
  local jar="$BUILD_CACHE/$name-$key.jar"
  if [ ! -f "$jar" ]; then
    echo "kotlinc: $name"
    local flags=()
    while [ "$1" != -- ]; do flags+=("$1"); shift; done
    shift
    "$KOTLINC" -J-Xmx2g "${flags[@]}" -cp "$cp" -d "$WORK/$name.jar" "$@"
    find "$BUILD_CACHE" -name "$name-*.jar" -delete
    mv "$WORK/$name.jar" "$jar"
  else
    echo "kotlinc: $name (cached)"
  fi
  COMPILED="$jar"
}
key_of() { cat "$@" | sha256sum | cut -c1-16; }

step "compile generated bindings"
GEN_KEY="$(key_of <(echo "kotlinc $KOTLIN_VERSION $(readlink -f "$JNA_JAR")") "$GENERATED")"
compile generated "$GEN_KEY" "$JNA_JAR" -- "$GENERATED"
GEN_JAR="$COMPILED"

step "compile Kotlin layer and tests (-Werror -Wextra)"
OURS_FLAGS=(-Werror -Wextra)
OURS_KEY="$(key_of <(echo "$GEN_KEY $(readlink -f "$JUNIT_JAR") ${OURS_FLAGS[*]}"; printf '%s\n' "${OURS[@]}" "${TESTS[@]}") "${OURS[@]}" "${TESTS[@]}")"
compile layer-and-tests "$OURS_KEY" "$GEN_JAR:$RUNTIME_CP:$TEST_CP" "${OURS_FLAGS[@]}" -- "${OURS[@]}" "${TESTS[@]}"
TESTS_JAR="$COMPILED"

step "JUnit 5"
status=0
# Steady memory for the RSS test in LifecycleTest.kt, which is after leaks, not the JVM's or
# glibc's caching (each knob measured to move RSS by 5-40 MB over 100 cycles with no leak):
# one malloc arena (glibc's per-thread arenas each keep freed model buffers), a pre-touched
# heap (else RSS grows as G1 first touches committed pages), C1 only (C2's compiler arenas
# come and go in ~12 MB steps).
MALLOC_ARENA_MAX=1 java -Xmx2g -Xms128m -XX:+AlwaysPreTouch -XX:TieredStopAtLevel=1 \
  -Djna.library.path="$LIB_DIR" \
  -Djava.io.tmpdir="$WORK/tmp" \
  -Dphimobile.repo="$REPO" \
  -Dphimobile.referenceModel="$WORK/reference.gguf" \
  -Dphimobile.tokenizer="$CACHE/phi3-tokenizer.json" \
  -jar "$JUNIT_JAR" \
  --disable-banner --disable-ansi-colors --details=tree --fail-if-no-tests \
  --include-engine junit-jupiter \
  --class-path "$TESTS_JAR:$GEN_JAR:$RUNTIME_CP:$KLIB/kotlin-test.jar:$KLIB/kotlin-test-junit5.jar" \
  --scan-class-path "$TESTS_JAR" || status=$?
step "done (exit $status)"
exit $status
