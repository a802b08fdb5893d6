#!/usr/bin/env bash
# Fuzzes the model loader and the tokenizers with libFuzzer (cargo-fuzz),
# each target for a bounded time; fails on any crash, panic, abort, timeout,
# out-of-memory or oversized allocation.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]   (default 60 s, all targets)
#
# Targets (fuzz/fuzz_targets/): load_gguf (any bytes as a model file),
# gguf_tokenizer (tokenizer metadata inside a valid tiny model),
# tokenizer_json (any bytes as tokenizer.json beside a valid tiny model),
# chat_template (any bytes as a chat template, rendered from a 512 KiB thread).
# Seeds are committed in fuzz/seeds/ (regenerate: cargo run --release
# --example fuzz_seeds -- fuzz/seeds); what the fuzzer finds beyond them is
# kept in $PHI_MOBILE_CACHE/fuzz/corpus, so each run starts where the last
# stopped. A failing input is saved in $PHI_MOBILE_CACHE/fuzz/artifacts;
# replay it with `cargo +nightly fuzz run --fuzz-dir fuzz TARGET FILE`.
#
# A panic in phi-mobile's own code is a failure, even where the library would
# catch it: it means hostile input got past validation. A panic inside a
# dependency (tokenizers, candle) that the library contains as a typed error
# is listed, not failed (fuzz/src/lib.rs `panic_policy`); one that escapes the
# public API is a failure. Built with ASan (LeakSanitizer included: a leak in
# any iteration fails too) and debug assertions (integer overflow panics).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(load_gguf gguf_tokenizer tokenizer_json chat_template)
CACHE="${PHI_MOBILE_CACHE:-$HOME/.cache/phi-mobile}"

# Tools, once: a nightly toolchain (libFuzzer needs -Zsanitizer) and cargo-fuzz.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
# (Its own target dir: CARGO_TARGET_DIR is the project's build cache.)
command -v cargo-fuzz >/dev/null ||
  CARGO_TARGET_DIR="$CACHE/cargo-install-target" cargo install cargo-fuzz --locked --version 0.13.2

# cargo-fuzz appends RUSTFLAGS to its own: fuzz the AVX2 kernels the desktop
# build uses (.cargo/config.toml's target rustflags are overridden by RUSTFLAGS).
export RUSTFLAGS="-C target-feature=+avx2,+fma,+f16c"
start=$SECONDS
cargo +nightly fuzz build --fuzz-dir fuzz --debug-assertions
echo "fuzz build: $((SECONDS - start)) s"

for t in "${TARGETS[@]}"; do
  corpus="$CACHE/fuzz/corpus/$t"
  artifacts="$CACHE/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  echo "== fuzz $t for ${SECS} s (corpus: $(find "$corpus" -type f | wc -l) found + $(find "fuzz/seeds/$t" -type f | wc -l) seeds)"
  # -rss_limit_mb: the whole process; -malloc_limit_mb: any one allocation
  # (a tiny file must not make the loader allocate hundreds of MB).
  # -timeout: one input, in seconds. New inputs go to the first directory.
  log="$artifacts/last-run.log"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz --debug-assertions "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$SECS" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=256 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
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
