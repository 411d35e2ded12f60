#!/bin/bash
# Sourced by the benchmarks that measure what one feature costs (Benchmarks/flight-recorder/run.sh,
# Benchmarks/metrics/run.sh): HTTP throughput (wrk -t2 -c32, 1 KiB file, keep-alive) and SMTP throughput
# (20 sessions × 4 KiB messages with BDAT, `smtp.delivery = discard`, so that the disk does not hide the
# CPU cost), with the feature on and off, ROUNDS rounds interleaved (on/off, then off/on), in ISOLATION.
# Prints every round and the median ratio on/off.
#   measure_on_off TITLE "ON-ARGUMENTS" "OFF-ARGUMENTS"   (each a string of host arguments)
# While a host with the feature on runs, DURING_ON (a command, given $TMP/NAME/ctl.sock) runs beside it.
# Knobs: ROUNDS [5], DURATION [8] (seconds of each wrk run), MESSAGES [6000], ISOLATION [isolated],
#        SKIP_BUILD=1 (use .build-bench/release/inetinfo as it is).
# Figures go to docs/benchmarks.md by hand; nothing here asserts a target.
set -euo pipefail
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
MESSAGES=${MESSAGES:-6000}
ISOLATION=${ISOLATION:-isolated}

command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    swift build -c release --static-swift-stdlib --scratch-path .build-bench --product inetinfo >&2
fi
BIN=$PWD/.build-bench/release/inetinfo
TMP=$(mktemp -d /tmp/inetinfo-on-off-bench.XXXXXX)
source Benchmarks/host.sh
BESIDE_PID=
cleanup() {
    [[ -n $BESIDE_PID ]] && kill "$BESIDE_PID" 2>/dev/null || true
    [[ -n $HOST_PID ]] && kill "$HOST_PID" 2>/dev/null && wait "$HOST_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/www"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$TMP/www/1k.txt"

measure_on_off() {
    local title=$1 on_args=$2 off_args=$3
    # A warm-up host first, not counted: the first measured run of a session came out 15-25 % slower,
    # whichever mode it was (page cache, the build just finished).
    start_host warm-up "$ISOLATION" --set smtp.delivery=discard
    wrk -t2 -c32 -d"${DURATION}s" "http://127.0.0.1:$HTTP_PORT/1k.txt" >/dev/null
    stop_host

    echo "## $title: on against off, $ROUNDS rounds interleaved ($ISOLATION isolation)"
    echo
    echo "| round | $title | HTTP 1 KiB req/s | SMTP 20 × 4 KiB msg/s |"
    echo "| --- | --- | --- | --- |"
    : >"$TMP/figures"
    local round state arguments rps mps
    for round in $(seq "$ROUNDS"); do
        local order=(on off)
        ((round % 2 == 0)) && order=(off on)
        for state in "${order[@]}"; do
            arguments=$off_args
            [[ $state == on ]] && arguments=$on_args
            # shellcheck disable=SC2086
            start_host "r$round-$state" "$ISOLATION" --set smtp.delivery=discard $arguments
            if [[ $state == on && -n ${DURING_ON:-} ]]; then
                $DURING_ON "$TMP/r$round-$state/ctl.sock" &
                BESIDE_PID=$!
            fi
            rps=$(wrk -t2 -c32 -d"${DURATION}s" "http://127.0.0.1:$HTTP_PORT/1k.txt" | awk '/Requests\/sec/ {print $2}')
            mps=$(python3 Benchmarks/smtp/bdat_load.py -s 20 -m "$MESSAGES" -l 4096 -t user@localhost "127.0.0.1:$SMTP_PORT" \
                | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rate"]))')
            if [[ -n $BESIDE_PID ]]; then
                kill "$BESIDE_PID" 2>/dev/null || true
                wait "$BESIDE_PID" 2>/dev/null || true
                BESIDE_PID=
            fi
            echo "| $round | $state | $rps | $mps |"
            echo "$round $state $rps $mps" >>"$TMP/figures"
            stop_host
        done
    done
    echo
    python3 - "$TMP/figures" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
by_round = {}
for round_, state, rps, mps in rows:
    by_round.setdefault(round_, {})[state] = (float(rps), float(mps))
http = [r["on"][0] / r["off"][0] for r in by_round.values()]
smtp = [r["on"][1] / r["off"][1] for r in by_round.values()]
print(f"median ratio on/off: HTTP {statistics.median(http):.3f} (rounds: {', '.join(f'{x:.3f}' for x in http)}), "
      f"SMTP {statistics.median(smtp):.3f} (rounds: {', '.join(f'{x:.3f}' for x in smtp)})")
PY
}
