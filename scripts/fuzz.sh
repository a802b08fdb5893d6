#!/usr/bin/env bash
# Fuzzes the model loader, the tokenizers and the chat-template renderer with
# libFuzzer, each target for a bounded time; fails on any crash, panic in our
# own code, abort, timeout, out-of-memory or oversized allocation.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]   (default 60 s, all targets)
#   PHI_MOBILE_FUZZ_ASAN=1 scripts/fuzz.sh ...          (AddressSanitizer; nightly)
#
# Targets: every file in fuzz/fuzz_targets/ (see each file's header): load_gguf,
# gguf_tokenizer, tokenizer_json, chat_template (rendered from a 512 KiB thread), saved_chat. Seeds are
# committed in fuzz/seeds/ (regenerate: cargo run --release --example
# fuzz_seeds -- fuzz/seeds); what the fuzzer finds beyond them is kept in
# $PHI_MOBILE_CACHE/fuzz/corpus, so each run starts where the last stopped. A
# failing input is saved in $PHI_MOBILE_CACHE/fuzz/artifacts; replay it by
# running the target's binary (path printed below) with the file as argument.
#
# A panic in phi-mobile's own code is a failure, even where the library would
# catch it: it means hostile input got past validation. A panic inside a
# dependency (tokenizers, candle) that the library contains as a typed error
# is listed, not failed (fuzz/src/lib.rs `panic_policy`); one that escapes the
# public API is a failure. Built with debug assertions (integer overflow
# panics); fuzz/src/lib.rs caps any one allocation at 256 MB.
#
# The build is the one cargo-fuzz makes, on the stable toolchain and without
# cargo-fuzz itself: libFuzzer comes from libfuzzer-sys, the coverage
# instrumentation from rustc's sanitizer-coverage flags. By default without
# AddressSanitizer: the library and its fuzzed paths are safe Rust, and on a
# cold 2-core machine the ASan build of candle and tokenizers took 21 minutes
# against about 6 without; leaks are checked by valgrind (scripts/leak-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECS="${1:-60}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  for f in fuzz/fuzz_targets/*.rs; do TARGETS+=("$(basename "$f" .rs)"); done
fi

HOST="$(rustc -vV | sed -n 's/^host: //p')"
# What cargo-fuzz passes (cargo fuzz build --debug-assertions), plus the AVX2
# kernels the desktop build uses (RUSTFLAGS overrides .cargo/config.toml's).
FLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions"
FLAGS+=" -Ctarget-feature=+avx2,+fma,+f16c"
TOOLCHAIN=()
if [ "${PHI_MOBILE_FUZZ_ASAN:-0}" = 1 ]; then
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  TOOLCHAIN=(+nightly)
  FLAGS+=" -Zsanitizer=address"
fi
# Its own target dir: the instrumented build shares nothing with the others.
export CARGO_TARGET_DIR="$CACHE/target-fuzz"
start=$SECONDS
# --target: the flags reach the fuzzed code, not build scripts or proc-macros.
RUSTFLAGS="$FLAGS" cargo "${TOOLCHAIN[@]}" build --release --quiet --manifest-path fuzz/Cargo.toml \
  --target "$HOST" --bins
echo "fuzz build: $((SECONDS - start)) s"

for t in "${TARGETS[@]}"; do
  bin="$CARGO_TARGET_DIR/$HOST/release/$t"
  corpus="$CACHE/fuzz/corpus/$t"
  artifacts="$CACHE/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "fuzz/seeds/$t"
  echo "== fuzz $t for ${SECS} s ($bin; corpus: $(find "$corpus" -type f | wc -l) found + $(find "fuzz/seeds/$t" -type f | wc -l) seeds)"
  # -rss_limit_mb: the whole process. -timeout: one input, in seconds.
  # New inputs go to the first directory.
  log="$artifacts/last-run.log"
  if ! "$bin" "$corpus" "fuzz/seeds/$t" -max_total_time="$SECS" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 80 "$log" >&2
    echo "fuzz target $t failed; the input is in $artifacts (log: $log)" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  # Panics inside dependencies that the library contained (see fuzz/src/lib.rs).
  grep -E '^contained panic' "$log" | sort -u || true
  echo "corpus now $(find "$corpus" -type f | wc -l) inputs"
done
echo "fuzzing done in $((SECONDS - start)) s"
