#!/usr/bin/env bash
# Builds llama.cpp's llama-bench from the source PyPI ships in the
# llama-cpp-python sdist, for the benchmark's comparison (examples/bench.rs
# finds it in the cache). Not part of CI; ~5 min on 2 cores, once.
#
#   scripts/build-llamacpp.sh            # prints the path of llama-bench
#   scripts/build-llamacpp.sh avx512     # the AVX-512 (+VNNI) build, beside it
#
# AVX2/FMA/F16C build, as the performance targets are stated against: a
# GGML_NATIVE build crashes in its AMX path on this CPU. The avx512 build
# turns on AVX-512 F/BW/DQ/VL and VNNI explicitly (no AMX), to compare with
# our avx512vnni kernels on a CPU that has them. cmake and ninja come from
# PyPI into a private venv.
set -euo pipefail
VERSION=0.3.36
CACHE="${PHI_MOBILE_CACHE:-$HOME/.cache/phi-mobile}"
ROOT="$CACHE/llamacpp-bench"
ISA="${1:-avx2}"
case "$ISA" in
  avx2) BUILD="$ROOT/build"; FLAGS=() ;;
  avx512) BUILD="$ROOT/build-avx512"; FLAGS=(-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF) ;;
  *) echo "usage: $0 [avx2|avx512]" >&2; exit 2 ;;
esac
BENCH="$BUILD/bin/llama-bench"
if [ -x "$BENCH" ]; then echo "$BENCH"; exit 0; fi
mkdir -p "$ROOT"
SRC="$CACHE/llamacpp-src/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  mkdir -p "$CACHE/llamacpp-src"
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$CACHE/llamacpp-src" >&2
  tar -xzf "$CACHE/llamacpp-src/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE/llamacpp-src"
fi
if [ ! -x "$ROOT/venv/bin/cmake" ]; then
  python3 -m venv "$ROOT/venv"
  "$ROOT/venv/bin/pip" install --quiet --disable-pip-version-check cmake ninja >&2
fi
export PATH="$ROOT/venv/bin:$PATH"
cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF "${FLAGS[@]}" >&2
cmake --build "$BUILD" --target llama-bench -j 2 >&2
echo "$BENCH"
