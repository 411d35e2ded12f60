#!/usr/bin/env bash
# Fuzzes the SMTP protocol engine with libFuzzer + AddressSanitizer for SECONDS (default 60), starting
# from the committed seed corpus; see scripts/fuzz.sh. Exits non-zero (and leaves crash-* files in
# .build-fuzz/findings/smtp-session-fuzzer) on a crash.
exec "$(dirname "$0")/fuzz.sh" smtp-session-fuzzer "${1:-60}"
