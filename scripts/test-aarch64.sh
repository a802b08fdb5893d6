#!/usr/bin/env bash
# Runs the Rust tests that check model outputs against reference ids, built
# for aarch64-unknown-linux-gnu in release, under qemu-user: candle's NEON
# kernels (the phone's code path) and our code on ARM64, compared with the
# same ids as on x86-64.
#
#   scripts/test-aarch64.sh [extra cargo test args]
#
# The subset (the whole suite takes too long emulated):
# - tests/reference.rs: greedy ids equal transformers' Phi3ForCausalLM (F32);
# - tests/llama.rs: the llama architecture, GQA and tied output (F32);
# - tests/smollm2.rs `greedy_chat_answers_equal_llama_cpp`: a real Q4_1
#   model's greedy answers equal llama.cpp's (the quantized NEON dot products);
# - tests/api.rs `quantized_model_runs`: Q4_K, deterministic;
# - our kernels (src/engine/kernels/): the lib's kernel tests on an emulated
#   core without dotprod (a64fx: this test target enables +fp16, which
#   cortex-a53 lacks), one with dotprod but not i8mm (cortex-a76) and one
#   with both (max), each checking that run-time dispatch offers exactly
#   that CPU's variants; and the Q4_K model's tests on each variant. Without dotprod only the tests that leave candle's
#   kernels alone run: candle 0.11's NEON Q4_K/Q6_K kernels execute `sdot`
#   without checking the CPU (SIGILL there), which ours do not.
# Installs its tools once (apt, rustup); build outputs go to CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS

source scripts/lib.sh
apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
rust_target aarch64-unknown-linux-gnu
scripts/fetch-fixtures.sh >/dev/null

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# Any C the dependencies compile for the target.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# Two emulated threads: the machine's cores are shared with qemu's own work.
export CANDLE_NUM_THREADS=2 RAYON_NUM_THREADS=2

# No downloads: none of these tests uses them, and the TLS stack (ring compiles C
# for the target) is a cold build's minutes.
T=(--release --target aarch64-unknown-linux-gnu --no-default-features)
cargo test "${T[@]}" --lib --test reference --test llama --test smollm2 --test api --no-run
echo "== aarch64 build: $((SECONDS - START)) s"
# The test binaries must really be ARM64 (not a host build by mistake).
cargo test "${T[@]}" --test reference --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | grep -v '^$' | head -n 1 |
  xargs file | grep -q 'ARM aarch64' || { echo "the test binary is not an aarch64 executable" >&2; exit 1; }

cargo test "${T[@]}" --test reference --test llama "$@"
cargo test "${T[@]}" --test smollm2 "$@" -- greedy_chat_answers_equal_llama_cpp
cargo test "${T[@]}" --test api "$@" -- quantized_model_runs
QEMU_CPU=a64fx PHI_MOBILE_EXPECT_KERNELS=scalar,neon cargo test "${T[@]}" --lib "$@" -- \
  kernels::tests::every_variant kernels::tests::low_bits::q2k_and_q3k_variants kernels::tests::the_variants_offered \
  kernels::tests::the_choice
QEMU_CPU=cortex-a76 PHI_MOBILE_EXPECT_KERNELS=scalar,neon,dotprod cargo test "${T[@]}" --lib "$@" -- \
  kernels::tests::the_variants_offered
QEMU_CPU=max PHI_MOBILE_EXPECT_KERNELS=scalar,neon,dotprod,i8mm cargo test "${T[@]}" --lib "$@" -- kernels
QEMU_CPU=a64fx PHI_MOBILE_KERNELS=neon cargo test "${T[@]}" --test api "$@" -- quantized
QEMU_CPU=cortex-a76 PHI_MOBILE_KERNELS=dotprod cargo test "${T[@]}" --test api "$@" -- quantized
QEMU_CPU=max PHI_MOBILE_KERNELS=i8mm cargo test "${T[@]}" --test api "$@" -- quantized
echo "== aarch64 tests under qemu: $((SECONDS - START)) s"
