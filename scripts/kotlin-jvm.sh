# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# Sourced (not run) by the scripts that test Kotlin on the desktop JVM
# (test-kotlin.sh, test-android-logic.sh): the toolchain they share, the
# host-built library and fixtures, and a cached kotlinc step.
#
# The caller has `set -euo pipefail`, is in the repository root, and defines
# `step` (a progress line) and WORK (a scratch directory it removes on exit).
#
# Installs what it needs once, outside the clone: kotlinc from npm
# (kotlin-compiler) into PHI_MOBILE_CACHE (default ~/.cache/phi-mobile), and
# JNA + JUnit 5 from Debian (apt-get, as root or with passwordless sudo) when
# missing. Compiled jars are cached there too, keyed by a hash of their inputs.

KOTLIN_VERSION=2.4.20
source scripts/lib.sh
KOTLIN_HOME="$CACHE/kotlin-compiler-$KOTLIN_VERSION"
BUILD_CACHE="$CACHE/kotlin-build"
JNA_JAR=/usr/share/java/jna.jar
JUNIT_JAR=/usr/share/java/junit-platform-console-standalone.jar
KOTLINC="$KOTLIN_HOME/bin/kotlinc"
KLIB="$KOTLIN_HOME/lib"
RUNTIME_CP="$KLIB/kotlin-stdlib.jar:$KLIB/kotlinx-coroutines-core-jvm.jar:$JNA_JAR"
TEST_CP="$KLIB/kotlin-test.jar:$KLIB/kotlin-test-junit5.jar:$JUNIT_JAR"
GENERATED=bindings/kotlin/src/main/kotlin/dev/phimobile/phi_mobile.kt
mkdir -p "$BUILD_CACHE"

# java, JNA, JUnit 5 (apt) and kotlinc (npm), each only if missing.
kotlin_toolchain() {
  command -v java >/dev/null 2>&1 || apt_install default-jre-headless
  apt_install libjna-java junit5
  if [ ! -x "$KOTLIN_HOME/bin/kotlinc" ]; then
    echo "fetching kotlin-compiler@$KOTLIN_VERSION (npm, ~90 MB)"
    local dl
    dl="$(mktemp -d "$CACHE/.kotlin-download.XXXXXX")"
    # npm verifies the tarball against the registry's sha512 integrity.
    (cd "$dl" && npm pack --silent "kotlin-compiler@$KOTLIN_VERSION" >/dev/null)
    tar -xzf "$dl/kotlin-compiler-$KOTLIN_VERSION.tgz" -C "$dl"
    chmod +x "$dl"/package/bin/*
    # Atomic publish; a concurrent run that got there first wins.
    mv -T "$dl/package" "$KOTLIN_HOME" 2>/dev/null || [ -x "$KOTLIN_HOME/bin/kotlinc" ]
    rm -rf "$dl"
  fi
}

# Fixtures, the host library (LIB_DIR) and the synthetic reference Phi-3 at
# $WORK/reference.gguf.
host_library_and_fixtures() {
  scripts/fetch-fixtures.sh
  host_library
  TARGET="$(realpath "$TARGET_DIR")"
  LIB_DIR="$TARGET/release"
  "$TARGET/release/examples/synthetic_gguf" reference "$WORK/reference.gguf"
}

# Compiles into the cache unless a jar for exactly these inputs is there.
# usage: compile NAME KEY CLASSPATH KOTLINC_FLAGS... -- SOURCES...
# Sets COMPILED to the jar.
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

# The generated bindings, compiled on their own without -Werror (we do not
# control their output). Sets GEN_KEY and GEN_JAR.
compile_generated() {
  GEN_KEY="$(key_of <(echo "kotlinc $KOTLIN_VERSION $(readlink -f "$JNA_JAR")") "$GENERATED")"
  compile generated "$GEN_KEY" "$JNA_JAR" -- "$GENERATED"
  GEN_JAR="$COMPILED"
}
