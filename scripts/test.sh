#!/usr/bin/env bash
# Runs the whole test suite: unit tests, supervisor tests, and tests that drive the built binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
swift test --skip-build
# The SMTP engine under libFuzzer + ASan for a bounded time, from the committed seed corpus.
scripts/fuzz-smtp.sh "${FUZZ_SECONDS:-60}"
