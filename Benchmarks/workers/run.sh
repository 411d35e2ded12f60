#!/bin/bash
# Worker processes (`--isolation process`) against the in-process modes, measured in one run:
#   1. restart latency of `http` (p50/p99/max over CRASHES crashes, refused connections counted):
#      in-process (`crash http --mode throw`), process isolation with a spare and without
#      (SIGKILL of the worker from outside);
#   2. HTTP throughput (wrk -t2 -c32, 1 KiB file) and SMTP throughput (20 sessions × 4 KiB, BDAT) in
#      process isolation against in-process isolation, ROUNDS rounds interleaved;
#   3. resident memory of an idle host with its workers.
# Knobs: CRASHES [200], ROUNDS [3], DURATION [8] (seconds of each wrk run), MESSAGES [4000],
#        SKIP_BUILD=1 (use .build-bench/release/inetinfo as it is).
# Figures go to docs/benchmarks.md by hand; nothing here asserts a target.
set -euo pipefail
cd "$(dirname "$0")/../.."
CRASHES=${CRASHES:-200}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
MESSAGES=${MESSAGES:-4000}

need=()
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    swift build -c release --static-swift-stdlib --scratch-path .build-bench --product inetinfo >&2
fi
BIN=$PWD/.build-bench/release/inetinfo
TMP=$(mktemp -d /tmp/inetinfo-workers-bench.XXXXXX)
source Benchmarks/host.sh
# Crashes on demand, restarts at once, none refused; no backtracer (it keeps a crashed worker for seconds).
FAULTS=(--enable-fault-injection --set supervisor.backoff-initial=0 --set supervisor.backoff-max=0
        --set supervisor.max-restarts=100000 --set crashes.backtrace=false)
cleanup() {
    [[ -n $HOST_PID ]] && kill "$HOST_PID" 2>/dev/null && wait "$HOST_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/www"
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 >"$TMP/www/1k.txt"


# Resident memory of a process and its children, in MiB.
rss_tree() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status")))
    done
    echo $((total / 1024))
}

echo "## Restart latency of http ($CRASHES crashes each)"
echo
echo "| mode | p50 | p99 | max | refused | retried (accepted by the dying instance) |"
echo "| --- | --- | --- | --- | --- | --- |"
for mode in in-process process-spare process-no-spare; do
    case $mode in
        in-process) start_host "$mode" isolated "${FAULTS[@]}"; how=throw ;;
        process-spare) start_host "$mode" process "${FAULTS[@]}" --set supervisor.spare-workers=1; how=kill ;;
        process-no-spare) start_host "$mode" process "${FAULTS[@]}" --set supervisor.spare-workers=0; how=kill ;;
    esac
    python3 Benchmarks/workers/restart.py --socket "$TMP/$mode/ctl.sock" --port "$HTTP_PORT" --path /1k.txt --crashes "$CRASHES" --how "$how" \
        --markdown "$mode"
    stop_host
done

echo
echo "## Throughput: process isolation against in-process, $ROUNDS rounds interleaved"
echo
echo "| round | mode | HTTP 1 KiB req/s | SMTP 20 × 4 KiB msg/s |"
echo "| --- | --- | --- | --- |"
for round in $(seq "$ROUNDS"); do
    order=(isolated process)
    ((round % 2 == 0)) && order=(process isolated)
    for isolation in "${order[@]}"; do
        start_host "tp-$isolation" "$isolation"
        rps=$(wrk -t2 -c32 -d"${DURATION}s" "http://127.0.0.1:$HTTP_PORT/1k.txt" | awk '/Requests\/sec/ {print $2}')
        mps=$(python3 Benchmarks/smtp/bdat_load.py -s 20 -m "$MESSAGES" -l 4096 -t user@localhost "127.0.0.1:$SMTP_PORT" \
            | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rate"]))')
        echo "| $round | $isolation | $rps | $mps |"
        stop_host
    done
done

echo
echo "## Idle resident memory (host and its workers)"
echo
for isolation in isolated process; do
    start_host "idle-$isolation" "$isolation"
    sleep 2
    echo "- $isolation: $(rss_tree "$HOST_PID") MiB ($(pgrep -P "$HOST_PID" | wc -l) worker processes)"
    stop_host
done
