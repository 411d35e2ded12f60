# Sourced by the benchmark scripts: one host at a time, from $BIN, under $TMP (both set by the caller).
#   start_host NAME ISOLATION [ARGUMENT…]   starts it on free ports, with a web root at $TMP/www and no
#                                          access log; sets HOST_PID, HTTP_PORT, SMTP_PORT
#   stop_host                              SIGTERM, and waits for it
HOST_PID=

start_host() {
    local name=$1 isolation=$2
    shift 2
    rm -rf "${TMP:?}/$name"
    mkdir -p "$TMP/$name"
    "$BIN" --isolation "$isolation" --state-dir "$TMP/$name/state" --control-socket "$TMP/$name/ctl.sock" \
        --web-root "$TMP/www" --smtp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --set http.access-log=off \
        --set smtp.max-sessions-per-client=1000 "$@" >"$TMP/$name/log" 2>&1 &
    HOST_PID=$!
    for _ in $(seq 200); do
        if python3 - "$TMP/$name/ctl.sock" >"$TMP/$name/ports" 2>/dev/null <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'{"command":"status"}\n')
data = b""
while not data.endswith(b"\n"):
    data += s.recv(65536)
services = {x["name"]: x for x in json.loads(data)["status"]["services"]}
assert all(x["state"] == "running" for x in services.values())
print(services["http"]["listen"][0].rsplit(":", 1)[1], services["smtp"]["listen"][0].rsplit(":", 1)[1])
PY
        then
            read -r HTTP_PORT SMTP_PORT <"$TMP/$name/ports"
            return
        fi
        sleep 0.05
    done
    echo "host $name did not start; log:" >&2
    cat "$TMP/$name/log" >&2
    exit 1
}

stop_host() {
    kill "$HOST_PID"
    wait "$HOST_PID" || true
    HOST_PID=
}
