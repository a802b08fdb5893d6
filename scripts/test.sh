#!/usr/bin/env bash
# The project's test suite: what CI runs and what a developer runs before
# pushing. Needs network access only to package registries (first run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fixtures"
scripts/fetch-fixtures.sh

echo "== rust tests (release: the model math is too slow unoptimised)"
cargo test --release --all-targets
cargo test --release --doc

echo "== generated bindings match the library"
scripts/generate-bindings.sh --check

echo "== kotlin layer tests (JUnit 5 on the desktop JVM)"
scripts/test-kotlin.sh

echo "== android chat logic tests (JUnit 5 on the desktop JVM, real models)"
scripts/test-android-logic.sh

echo "== swift package tests (swift on PATH, else Swift 6 in a cached Debian 13 chroot)"
scripts/test-swift.sh
