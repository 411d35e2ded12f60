#!/usr/bin/env bash
# Fuzzes the SMTP protocol engine with libFuzzer + AddressSanitizer for SECONDS (default 60), starting
# from the committed seed corpus. Exits non-zero (and leaves crash-* files in .build-fuzz/findings) on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
swift build -c release --scratch-path .build-fuzz --sanitize fuzzer --sanitize address \
    -Xswiftc -DFUZZING --product smtp-session-fuzzer
work=.build-fuzz/findings
rm -rf "$work" && mkdir -p "$work/corpus"
# New inputs go to the scratch corpus; the committed seeds are only read.
SWIFT_BACKTRACE=enable=no .build-fuzz/release/smtp-session-fuzzer \
    -max_total_time="$seconds" -max_len=4096 -artifact_prefix="$work/" -print_final_stats=1 \
    "$work/corpus" Fuzz/corpus/smtp-session 2>&1 | tail -n 25
