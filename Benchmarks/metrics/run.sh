#!/bin/bash
# What metrics cost: a host with its admin listener (so metrics are kept; a scrape every second beside
# the load, as a busy Prometheus would do) against one without (Benchmarks/on-off.sh says how, and lists
# the knobs: ROUNDS, DURATION, MESSAGES, ISOLATION, SKIP_BUILD). Target: ≤ 3 % (not asserted).
set -euo pipefail
cd "$(dirname "$0")/../.."
source Benchmarks/on-off.sh
# The admin port is ephemeral: the scraper reads it from the host's status.
scrape_every_second() {
    exec python3 - "$1" <<'PY'
import json, socket, sys, time, urllib.request
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'{"command":"status"}\n')
data = b""
while not data.endswith(b"\n"):
    data += s.recv(65536)
admin = json.loads(data)["status"]["host"]["admin"]
while True:
    urllib.request.urlopen(f"http://{admin}/metrics").read()
    time.sleep(1)
PY
}
DURING_ON=scrape_every_second
measure_on_off "Metrics" "--set admin.listen=127.0.0.1:0" ""
