#!/usr/bin/env bash
# Fuzzes one target with libFuzzer + AddressSanitizer for SECONDS (default 60), starting from its committed
# seed corpus (Fuzz/corpus/NAME, only read). New inputs go to a scratch corpus in
# .build-fuzz/findings/TARGET/corpus, crashes to .build-fuzz/findings/TARGET/crash-*; exits non-zero on
# a crash, or when the run reached less of the project's own code than the committed corpus alone.
#
#   scripts/fuzz.sh TARGET [SECONDS]       build TARGET (a product of Package.swift), then fuzz it
#   scripts/fuzz.sh --build TARGET…        only build (and check) the targets
#   FUZZ_SKIP_BUILD=1 scripts/fuzz.sh …    fuzz what was built last
#
# Targets: smtp-session-fuzzer, http-request-fuzzer, http-fields-fuzzer, control-request-fuzzer,
# configuration-fuzzer, worker-message-fuzzer, flight-recording-fuzzer, figure-file-fuzzer, journal-record-fuzzer. Extra libFuzzer flags may be given in FUZZ_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."

# TARGET → committed corpus, maximum input length, and the fewest coverage counters a properly
# instrumented build has (each is well above what the fuzzer's own module alone has: a build whose
# libraries were compiled without coverage would "pass" without fuzzing anything).
target_info() {
    case "$1" in
        smtp-session-fuzzer)    echo "smtp-session 4096 10000" ;;
        http-request-fuzzer)    echo "http-request 4096 60000" ;;
        http-fields-fuzzer)     echo "http-fields 1024 30000" ;;
        control-request-fuzzer) echo "control-request 2048 60000" ;;
        configuration-fuzzer)   echo "configuration 4096 60000" ;;
        worker-message-fuzzer)  echo "worker-message 4096 60000" ;;
        flight-recording-fuzzer) echo "flight-recording 16384 10000" ;;
        figure-file-fuzzer)     echo "figure-file 4096 60000" ;;
        journal-record-fuzzer)  echo "journal-record 8192 10000" ;;
        *) echo "fuzz: unknown target '$1'" >&2; return 1 ;;
    esac
}

build() {
    local target=$1
    target_info "$target" >/dev/null
    # SwiftPM passes its two -sanitize= flags in an order that varies from run to run, and only the last
    # one counts for the compiler: the combined flag, passed last, instruments every module either way.
    swift build -c release --scratch-path .build-fuzz --sanitize fuzzer --sanitize address \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING --product "$target"
    check_counters "$target"
}

check_counters() {
    local target=$1 corpus max_len minimum counters
    read -r corpus max_len minimum < <(target_info "$target")
    # (-runs=0 still runs the empty input once: whether it passes is the fuzzing's business, not this.)
    counters=$(SWIFT_BACKTRACE=enable=no ".build-fuzz/release/$target" -runs=0 -detect_leaks=0 -artifact_prefix=.build-fuzz/ 2>&1 \
        | sed -n 's/.*Loaded 1 modules *(\([0-9]*\) inline 8-bit counters).*/\1/p' | head -n 1 || true)
    echo "fuzz: $target has ${counters:-0} coverage counters (at least $minimum required)"
    if [ "${counters:-0}" -lt "$minimum" ]; then
        echo "fuzz: $target has only ${counters:-0} coverage counters: the code under test is not instrumented" >&2
        exit 1
    fi
}

if [ "${1:-}" = "--build" ]; then
    shift
    for target in "$@"; do build "$target"; done
    exit 0
fi

target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
seconds=${2:-60}
read -r corpus max_len minimum < <(target_info "$target")
if [ -n "${FUZZ_SKIP_BUILD:-}" ]; then check_counters "$target"; else build "$target"; fi

work=.build-fuzz/findings/$target
mkdir -p "$work/corpus"
rm -f "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$work"/slow-unit-*
log=$work/fuzz.log
dict=()
[ -f "Fuzz/dict/$corpus.dict" ] && dict=(-dict="Fuzz/dict/$corpus.dict")
extra=()
# TOMLKit 0.6.0 leaks on every parse (TOMLTable(string:) never frees its error record, TOMLTable.keys
# never frees the key array tableGetKeys mallocs): LeakSanitizer would stop at the first input.
# libFuzzer's flag stops its per-input check; ASAN_OPTIONS stops LeakSanitizer's report at exit, which
# otherwise fails a run that found nothing (26 MiB "leaked" after 30 s).
if [ "$target" = configuration-fuzzer ]; then
    extra=(-detect_leaks=0)
    export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
fi
# Coverage of the project's own code (Sources/, not the libraries), in edges of its instrumented
# functions, as libFuzzer's -print_coverage reports it when it replays CORPUS… without fuzzing.
project_coverage() {
    SWIFT_BACKTRACE=enable=no ".build-fuzz/release/$target" -runs=0 -print_coverage=1 -timeout=10 \
        -artifact_prefix="$work/replay-" "${extra[@]}" "$@" 2>&1 \
        | awk -v root="$PWD/Sources/" '/^(COVERED|UNCOVERED)_FUNC:/ && index($0, root) {
              split($5, edges, "/"); covered += edges[1]; total += edges[2] }
              END { printf "%d %d\n", covered, total }'
}
read -r seeded total < <(project_coverage "Fuzz/corpus/$corpus")
# New inputs go to the scratch corpus (kept between runs); the committed seeds are only read.
status=0
SWIFT_BACKTRACE=enable=no ".build-fuzz/release/$target" \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -artifact_prefix="$work/" -print_final_stats=1 \
    "${dict[@]}" "${extra[@]}" ${FUZZ_FLAGS:-} "$work/corpus" "Fuzz/corpus/$corpus" >"$log" 2>&1 || status=$?
tail -n 30 "$log"
if [ "$status" -ne 0 ]; then
    echo "fuzz: $target failed (exit $status); reproducer(s):" $(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null) >&2
    echo "fuzz: replay with .build-fuzz/release/$target FILE, or swift run $target FILE" >&2
    exit "$status"
fi
read -r reached _ < <(project_coverage "$work/corpus" "Fuzz/corpus/$corpus")
echo "fuzz: $target: coverage of Sources/: $seeded of $total edges from the committed corpus alone, $reached with this run's inputs"
# The corpus with this run's inputs can only reach more; less means the run or the build is broken.
if [ "$reached" -lt "$seeded" ] || [ "$seeded" -eq 0 ]; then
    echo "fuzz: $target reached less of Sources/ ($reached edges) than its committed corpus alone ($seeded)" >&2
    exit 1
fi
echo "fuzz: $target: no crash in ${seconds}s; scratch corpus: $(ls "$work/corpus" | wc -l) inputs"
