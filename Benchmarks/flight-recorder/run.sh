#!/bin/bash
# What the flight recorder costs: HTTP throughput (wrk -t2 -c32, 1 KiB file, keep-alive) and SMTP throughput
# (20 sessions × 4 KiB messages with BDAT, `smtp.delivery = discard`, so that the disk does not hide the
# CPU cost), with `crashes.flight-recorder` on and off, ROUNDS rounds interleaved (on/off, then off/on), in
# ISOLATION (isolated by default; `process` too). Prints every round and the median ratio on/off.
# Knobs: ROUNDS [5], DURATION [8] (seconds of each wrk run), MESSAGES [6000], ISOLATION [isolated],
#        SKIP_BUILD=1 (use .build-bench/release/inetinfo as it is).
# Figures go to docs/benchmarks.md by hand; nothing here asserts the target (≤ 3 %).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
MESSAGES=${MESSAGES:-6000}
ISOLATION=${ISOLATION:-isolated}

command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    swift build -c release --static-swift-stdlib --scratch-path .build-bench --product inetinfo >&2
fi
BIN=$PWD/.build-bench/release/inetinfo
TMP=$(mktemp -d /tmp/inetinfo-recorder-bench.XXXXXX)
source Benchmarks/host.sh
cleanup() {
    [[ -n $HOST_PID ]] && kill "$HOST_PID" 2>/dev/null && wait "$HOST_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/www"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$TMP/www/1k.txt"


# A warm-up host first, not counted: the first measured run of a session came out 15-25 % slower,
# whichever mode it was (page cache, the build just finished).
start_host warm-up "$ISOLATION" --set smtp.delivery=discard
wrk -t2 -c32 -d"${DURATION}s" "http://127.0.0.1:$HTTP_PORT/1k.txt" >/dev/null
stop_host

echo "## Flight recorder: on against off, $ROUNDS rounds interleaved ($ISOLATION isolation)"
echo
echo "| round | recorder | HTTP 1 KiB req/s | SMTP 20 × 4 KiB msg/s |"
echo "| --- | --- | --- | --- |"
: >"$TMP/figures"
for round in $(seq "$ROUNDS"); do
    order=(true false)
    ((round % 2 == 0)) && order=(false true)
    for recorder in "${order[@]}"; do
        start_host "r$round-$recorder" "$ISOLATION" --set smtp.delivery=discard --set crashes.flight-recorder="$recorder"
        rps=$(wrk -t2 -c32 -d"${DURATION}s" "http://127.0.0.1:$HTTP_PORT/1k.txt" | awk '/Requests\/sec/ {print $2}')
        mps=$(python3 Benchmarks/smtp/bdat_load.py -s 20 -m "$MESSAGES" -l 4096 -t user@localhost "127.0.0.1:$SMTP_PORT" \
            | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rate"]))')
        echo "| $round | $([[ $recorder == true ]] && echo on || echo off) | $rps | $mps |"
        echo "$round $recorder $rps $mps" >>"$TMP/figures"
        stop_host
    done
done
echo
python3 - "$TMP/figures" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
by_round = {}
for round_, recorder, rps, mps in rows:
    by_round.setdefault(round_, {})[recorder] = (float(rps), float(mps))
http = [r["true"][0] / r["false"][0] for r in by_round.values()]
smtp = [r["true"][1] / r["false"][1] for r in by_round.values()]
print(f"median ratio on/off: HTTP {statistics.median(http):.3f} (rounds: {', '.join(f'{x:.3f}' for x in http)}), "
      f"SMTP {statistics.median(smtp):.3f} (rounds: {', '.join(f'{x:.3f}' for x in smtp)})")
PY
