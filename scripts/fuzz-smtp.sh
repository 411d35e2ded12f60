#!/usr/bin/env bash
# Fuzzes the SMTP protocol engine with libFuzzer + AddressSanitizer for SECONDS (default 60), starting
# from the committed seed corpus. Exits non-zero (and leaves crash-* files in .build-fuzz/findings) on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
# SwiftPM passes its two -sanitize= flags in an order that varies from run to run, and only the last
# one counts for the compiler: the combined flag, passed last, instruments every module either way.
swift build -c release --scratch-path .build-fuzz --sanitize fuzzer --sanitize address \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING --product smtp-session-fuzzer
work=.build-fuzz/findings
rm -rf "$work" && mkdir -p "$work/corpus"
# A build without coverage of the engine would "pass" without fuzzing anything: refuse it.
counters=$(SWIFT_BACKTRACE=enable=no .build-fuzz/release/smtp-session-fuzzer -runs=0 2>&1 \
    | sed -n 's/.*Loaded 1 modules *(\([0-9]*\) inline 8-bit counters).*/\1/p')
if [ "${counters:-0}" -lt 10000 ]; then
    echo "fuzz-smtp: the fuzzer has only ${counters:-0} coverage counters: the engine is not instrumented" >&2
    exit 1
fi
# New inputs go to the scratch corpus; the committed seeds are only read.
SWIFT_BACKTRACE=enable=no .build-fuzz/release/smtp-session-fuzzer \
    -max_total_time="$seconds" -max_len=4096 -artifact_prefix="$work/" -print_final_stats=1 \
    "$work/corpus" Fuzz/corpus/smtp-session 2>&1 | tail -n 25
