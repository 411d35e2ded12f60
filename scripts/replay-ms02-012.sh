#!/usr/bin/env bash
# Replays MS02-012 end to end and prints a timeline: starts a host with --simulate-ms02-012, sends the
# 2002 detection probe, and shows the SMTP failure, the restart, and what happened to HTTP meanwhile.
# Usage: scripts/replay-ms02-012.sh [shared|isolated|process|all]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
modes=${1:-all}
[ "$modes" = all ] && modes="shared isolated process"
swift build --product inetinfo >/dev/null
swift build --product inetinfoctl >/dev/null
bin=$(swift build --show-bin-path)

replay() {
    local isolation=$1 dir pid poller
    dir=$(mktemp -d /tmp/ms02-012-XXXXXX)
    "$bin/inetinfo" --simulate-ms02-012 --isolation "$isolation" --state-dir "$dir/state" \
        --control-socket "$dir/ctl.sock" --smtp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        --set supervisor.backoff-initial=200 >"$dir/host.log" 2>&1 &
    pid=$!
    trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' RETURN
    for _ in $(seq 100); do "$bin/inetinfoctl" --socket "$dir/ctl.sock" status >/dev/null 2>&1 && break; sleep 0.05; done
    local json smtp http
    json=$("$bin/inetinfoctl" --socket "$dir/ctl.sock" status --json)
    smtp=$(python3 -c 'import json,sys; s=json.load(sys.stdin); print([x for x in s["services"] if x["name"]=="smtp"][0]["listen"][0].split(":")[-1])' <<<"$json")
    http=$(python3 -c 'import json,sys; s=json.load(sys.stdin); print([x for x in s["services"] if x["name"]=="http"][0]["listen"][0].split(":")[-1])' <<<"$json")

    echo "=== MS02-012 replay, isolation: $isolation (host pid $pid, smtp :$smtp, http :$http) ==="
    # An HTTP client polling every 20 ms throughout, writing one line per request.
    python3 - "$http" >"$dir/http.txt" <<'PY' &
import socket, sys, time
port = int(sys.argv[1]); start = time.time()
while time.time() - start < 2.5:
    t = time.time()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536): data += chunk
        took = (time.time() - t) * 1000
        print(f"{(t - start) * 1000:7.0f} ms  {data.split(b' ')[1].decode() if data else 'closed without a response'}  took {took:5.0f} ms")
    except OSError as error:
        print(f"{(t - start) * 1000:7.0f} ms  {error.strerror or error}")
    time.sleep(0.02)
PY
    poller=$!
    sleep 0.5
    echo "--- the probe (HELO / MAIL / RCPT / BDAT 4 / b00m / AUTH LOGIN):"
    python3 - "$smtp" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = s.makefile("rb")
print("  S:", f.readline().decode().rstrip())
s.sendall(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@localhost>\r\nBDAT 4\r\nb00mAUTH LOGIN\r\n")
for _ in range(5):
    line = f.readline().decode().rstrip()
    print("  S:", line if line else "(connection closed)")
    if not line: break
PY
    wait "$poller"
    echo "--- supervisor timeline (inetinfoctl events):"
    "$bin/inetinfoctl" --socket "$dir/ctl.sock" events
    echo "--- HTTP during the replay (a request every 20 ms; shown: the first, any not answered 200 or slower than 50 ms, the last):"
    awk 'NR == 1 || $3 != "200" || $5 > 50 { print "  " $0 } { line = $0 } END { print "  " line }' "$dir/http.txt"
    echo "  $(grep -c ' 200 ' "$dir/http.txt") of $(wc -l <"$dir/http.txt") requests answered 200"
    echo "--- status afterwards:"
    "$bin/inetinfoctl" --socket "$dir/ctl.sock" status || true
    echo
}

for mode in $modes; do replay "$mode"; done
