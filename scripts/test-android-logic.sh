#!/usr/bin/env bash
# Tests the Android sample's chat state machine (android/chat-logic, plain
# Kotlin/JVM) on the desktop JVM, against the host-built library and real
# models: SmolLM2-135M-Instruct (GGUF tokenizer and template) and the synthetic
# reference Phi-3. What CI runs for the Android part (there is no Android SDK
# here; the Gradle build of the AAR and the app needs one).
#
#   scripts/test-android-logic.sh
#
# chat-logic is compiled together with the library's Kotlin layer
# (bindings/kotlin/src/main/kotlin), as the Gradle build does. Warnings in
# hand-written Kotlin are errors, as in scripts/test-kotlin.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
step() { echo "== $* ($((SECONDS - START)) s)"; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tmp"
. scripts/kotlin-jvm.sh

step "toolchain"
kotlin_toolchain

step "fixtures and host library"
host_library_and_fixtures

FLAGS=(-Werror -Wextra)
mapfile -t LAYER < <(find bindings/kotlin/src/main/kotlin -name '*.kt' ! -path "$GENERATED" | sort)
mapfile -t LOGIC < <(find android/chat-logic/src -name '*.kt' | sort)

step "compile generated bindings"
compile_generated

step "compile Kotlin layer (-Werror -Wextra)"
LAYER_KEY="$(key_of <(echo "$GEN_KEY ${FLAGS[*]}"; printf '%s\n' "${LAYER[@]}") "${LAYER[@]}")"
compile android-layer "$LAYER_KEY" "$GEN_JAR:$RUNTIME_CP" "${FLAGS[@]}" -- "${LAYER[@]}"
LAYER_JAR="$COMPILED"

step "compile chat-logic and its tests (-Werror -Wextra)"
LOGIC_KEY="$(key_of <(echo "$LAYER_KEY $(readlink -f "$JUNIT_JAR") ${FLAGS[*]}"; printf '%s\n' "${LOGIC[@]}") "${LOGIC[@]}")"
compile chat-logic "$LOGIC_KEY" "$GEN_JAR:$LAYER_JAR:$RUNTIME_CP:$TEST_CP" "${FLAGS[@]}" -- "${LOGIC[@]}"
LOGIC_JAR="$COMPILED"

step "JUnit 5"
status=0
java -Xmx1g \
  -Djna.library.path="$LIB_DIR" \
  -Djava.io.tmpdir="$WORK/tmp" \
  -Dphimobile.smollm2="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" \
  -Dphimobile.referenceModel="$WORK/reference.gguf" \
  -Dphimobile.tokenizer="$CACHE/phi3-tokenizer.json" \
  -jar "$JUNIT_JAR" \
  --disable-banner --disable-ansi-colors --details=tree --fail-if-no-tests \
  --include-engine junit-jupiter \
  --class-path "$LOGIC_JAR:$LAYER_JAR:$GEN_JAR:$RUNTIME_CP:$KLIB/kotlin-test.jar:$KLIB/kotlin-test-junit5.jar" \
  --scan-class-path "$LOGIC_JAR" || status=$?
step "done (exit $status)"
exit $status
