#!/usr/bin/env bash
# Replays a recorded input against a running service: the second half of turning a crash into a
# regression test (docs/testing.md).
#
#   inetinfoctl crashes export ID -o probe.bin       # the suspect's last input, byte for byte
#   scripts/replay-input.sh probe.bin 127.0.0.1:2525 [SOURCE-ADDRESS]
#
# Sends the file in one write (from SOURCE-ADDRESS if given), prints what the service answers until it
# closes the connection or is silent for 2 s, and exits 0; 1 if the connection fails.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 FILE HOST:PORT [SOURCE-ADDRESS]" >&2
    exit 2
fi
exec python3 - "$@" <<'PY'
import socket, sys
path, target = sys.argv[1], sys.argv[2]
source = sys.argv[3] if len(sys.argv) > 3 else None
host, _, port = target.rpartition(":")
host = host.strip("[]")
family = socket.AF_INET6 if ":" in host else socket.AF_INET
data = open(path, "rb").read()
s = socket.socket(family, socket.SOCK_STREAM)
try:
    if source:
        s.bind((source, 0))
    s.settimeout(5)
    s.connect((host, int(port)))
    s.settimeout(2)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    received = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
except OSError as error:
    print(f"replay-input: {target}: {error}", file=sys.stderr)
    sys.exit(1)
sys.stdout.write(received.decode("utf-8", "replace"))
PY
