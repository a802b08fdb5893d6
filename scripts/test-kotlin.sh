#!/usr/bin/env bash
# Tests the Kotlin bindings and the hand-written Kotlin layer on the desktop JVM
# against the host-built library (JUnit 5, JNA). What CI runs for Kotlin.
#
#   scripts/test-kotlin.sh
#
# Installs what it needs once, outside the clone (scripts/kotlin-jvm.sh):
# kotlinc from npm, JNA + JUnit 5 from Debian; compiled jars are cached in
# PHI_MOBILE_CACHE (default ~/.cache/phi-mobile), keyed by their inputs.
# Warnings (including -Wextra ones) in the hand-written Kotlin, main and test,
# are errors; the generated file is compiled on its own, without -Werror, since
# we do not control its output.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
START=$SECONDS
step() { echo "== $* ($((SECONDS - START)) s)"; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tmp"
# Toolchain, host library, fixtures and the cached compile step (shared with
# scripts/test-android-logic.sh).
. scripts/kotlin-jvm.sh

step "toolchain"
kotlin_toolchain

step "fixtures and host library"
host_library_and_fixtures

KT=bindings/kotlin/src
mapfile -t OURS < <(find "$KT/main/kotlin" -name '*.kt' ! -path "$GENERATED" | sort)
mapfile -t TESTS < <(find "$KT/test/kotlin" -name '*.kt' | sort)

step "compile generated bindings"
compile_generated

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
