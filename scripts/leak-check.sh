#!/usr/bin/env bash
# Runs a short load/generate/close test (tests/leaks.rs `a_few_cycles`) under
# valgrind's memcheck and fails on any definite leak or invalid memory access.
# (Fuzzing, scripts/fuzz.sh, runs LeakSanitizer on every iteration too.)
#
#   scripts/leak-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_install valgrind
scripts/fetch-fixtures.sh >/dev/null
bin="$(cargo test --release --test leaks --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | grep -v '^$' | tail -n 1)"
[ -x "$bin" ] || { echo "cannot find the leaks test binary" >&2; exit 1; }
start=$SECONDS
# Definite leaks only: thread pools and lazy statics that live until exit are
# "still reachable", not leaks. One compute thread keeps valgrind's
# serialised threads fast.
CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1 valgrind --quiet --error-exitcode=99 \
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  "$bin" a_few_cycles --exact --test-threads=1
echo "valgrind: no leaks, no invalid accesses ($((SECONDS - start)) s)"
