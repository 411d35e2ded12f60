#!/usr/bin/env bash
# HTTP static-file benchmark (issue 4): requests per second and latency of inetinfo's HTTP service against
# nginx, serving the same files, interleaved in one run. See docs/benchmarks.md, "HTTP static files (issue 4)".
#
#   Benchmarks/http/run.sh            # installs what it needs, builds, measures (~7 min, plus 3-4 for a
#                                     clean release build), prints tables
#
# Environment knobs (defaults in brackets):
#   ROUNDS [3]            passes over every case; medians are reported
#   DURATION [10]         seconds of each wrk run (wrk -t2 -c64 -d${DURATION}s --latency)
#   THREADS [2] CONNS [64]  wrk threads and connections
#   FILES ["1k 1m"]       1k = 1 KiB file, 1m = 1 MiB file
#   TARGETS ["ours-t2 ours-t1 nginx-1 nginx-auto ours-t2-log ours-t2-stderr nginx-1-log nginx-auto-log"]
#                         ours-tN: inetinfo with http.threads=N, access log off (N=2 is the default here: one
#                         per core); ours-t2-log: access log to a file; ours-t2-stderr: the default access
#                         log (`log`: standard error outside the journal, here a file); nginx-1 / nginx-auto:
#                         worker_processes 1 / auto, access_log off; nginx-1-log / nginx-auto-log: access_log
#                         to a file (buffered 32 KiB, as ours is)
#   WARMUP [2]            seconds of wrk per server and file before measuring (0: none)
#   MAX_SECONDS [900]     measuring stops starting new rounds after this (the build is not counted)
#   OTHER_MAX [30]        a run during which other processes used more than this % of a core is repeated once
#   SKIP_BUILD [0]        1: use the existing .build-httpbench/release/inetinfo
#   KEEP_TMP [0]          1: keep the temporary folder (configs, logs, raw wrk output)
#
# The ratio printed is ours / nginx-1 (one worker) per file: the team's target is >= 1.0 for both files.
# wrk takes about one of the two cores, so on this machine anything past ~1 core of server is client-bound.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
FILES=${FILES:-"1k 1m"}
TARGETS=${TARGETS:-"ours-t2 ours-t1 nginx-1 nginx-auto ours-t2-log ours-t2-stderr nginx-1-log nginx-auto-log"}
WARMUP=${WARMUP:-2}
MAX_SECONDS=${MAX_SECONDS:-900}
OTHER_MAX=${OTHER_MAX:-30}
SKIP_BUILD=${SKIP_BUILD:-0}

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------------------------- setup
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
pkg-config --exists libsystemd 2>/dev/null || need+=(libsystemd-dev pkg-config)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Installing nginx may start the system's own instance (port 80): harmless, ours runs on other ports.

if [[ $SKIP_BUILD != 1 ]]; then
    log "building inetinfo (release, .build-httpbench)"
    # Statically linked Swift runtime, as scripts/install.sh builds the installed binary.
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --scratch-path .build-httpbench --product inetinfo) >&2
fi
INETINFO=$ROOT/.build-httpbench/release/inetinfo
[[ -x $INETINFO ]] || { echo "missing $INETINFO" >&2; exit 1; }

TMP=$(mktemp -d /tmp/http-bench.XXXXXX)
chmod 755 "$TMP"                   # nginx's workers run as www-data and read the web root through it
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The web root: the same two files for every server.
WEB=$TMP/www
mkdir -p "$WEB"
head -c 1024 /dev/urandom >"$WEB/1k.bin"
head -c $((1024 * 1024)) /dev/urandom >"$WEB/1m.bin"
chmod 755 "$WEB"; chmod 644 "$WEB"/*.bin
declare -A FILE_SIZE=([1k]=1024 [1m]=1048576)

declare -A PORT SERVER_PID

start_ours() {  # name threads access-log(off|file|log)
    local name=$1 threads=$2 access=$3 dir=$TMP/$1 port level=warning
    port=$(free_port)
    mkdir -p "$dir"
    [[ $access == file ]] && access=$dir/access.log
    [[ $access == log ]] && level=info   # the access log's lines are info: the default level
    "$INETINFO" --state-dir "$dir" --control-socket "$dir/ctl.sock" \
        --smtp-listen 127.0.0.1:0 --http-listen "127.0.0.1:$port" --web-root "$WEB" \
        --set smtp.enabled=false --set "http.access-log=$access" --set "http.threads=$threads" \
        --set host.log-level=$level >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PIDS+=($!); SERVER_PID[$name]=$!; PORT[$name]=$port
}

start_nginx() {  # name worker_processes access_log(off|file)
    local name=$1 workers=$2 access=$3 dir=$TMP/$1 port
    port=$(free_port)
    mkdir -p "$dir"/{client_body,proxy,fastcgi,uwsgi,scgi}
    [[ $access == file ]] && access="$dir/access.log combined buffer=32k" # ours buffers 32 KiB too
    # As Debian's /etc/nginx/nginx.conf does for static files (sendfile, tcp_nopush, tcp_nodelay, mime
    # types, keepalive_timeout 65); everything else at nginx's defaults (keepalive_requests 1000,
    # open_file_cache off: open/fstat/close per request, which is nginx's default; ours keeps a cache that
    # it revalidates with one stat per request, so neither serves a changed file late).
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    types_hash_max_size 2048;
    access_log $access;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        root $WEB;
        location / { }
    }
}
EOF
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
    PIDS+=($!); SERVER_PID[$name]=$!; PORT[$name]=$port
}

wait_http() {  # name
    local name=$1
    for _ in $(seq 300); do
        curl -fsS -o /dev/null "http://127.0.0.1:${PORT[$name]}/1k.bin" 2>/dev/null && return 0
        kill -0 "${SERVER_PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start; its logs:" >&2
    tail -n 20 "$TMP/$name"/*.log >&2 || true
    exit 1
}

for target in $TARGETS; do
    case $target in
        ours-t1) start_ours "$target" 1 off ;;
        ours-t2) start_ours "$target" 2 off ;;
        ours-t2-log) start_ours "$target" 2 file ;;
        ours-t1-log) start_ours "$target" 1 file ;;
        ours-t2-stderr) start_ours "$target" 2 log ;;
        nginx-1) start_nginx "$target" 1 off ;;
        nginx-auto) start_nginx "$target" auto off ;;
        nginx-1-log) start_nginx "$target" 1 file ;;
        nginx-auto-log) start_nginx "$target" auto file ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
done
for target in $TARGETS; do wait_http "$target"; done
started=$SECONDS
log "servers up: $(for t in $TARGETS; do printf '%s=%s ' "$t" "${PORT[$t]}"; done)"

# ------------------------------------------------------------------------------------- correctness
# Every server must answer 200 with the right Content-Length and the very bytes of the file, on a
# keep-alive connection that fetches each file twice.
bad=0
for target in $TARGETS; do
    for file in $FILES; do
        url=http://127.0.0.1:${PORT[$target]}/$file.bin
        out=$(curl -sS -D "$TMP/headers" -o "$TMP/body" -w '%{http_code} %{size_download} %{num_connects}' "$url" -o "$TMP/body2" "$url") || true
        code=$(sed -n 1p "$TMP/headers" | awk '{print $2}')
        length=$(grep -i '^content-length:' "$TMP/headers" | head -1 | tr -dc 0-9)
        if [[ $code != 200 || $length != "${FILE_SIZE[$file]}" ]] || ! cmp -s "$TMP/body" "$WEB/$file.bin" || ! cmp -s "$TMP/body2" "$WEB/$file.bin"; then
            echo "WRONG RESPONSE from $target for /$file.bin: status $code, Content-Length $length (curl: $out)" >&2
            bad=1
        fi
    done
done
((bad)) && { echo "responses are wrong; not measuring" >&2; exit 1; }
log "responses checked: 200, Content-Length and bodies equal to the files, for every server and file"
{ echo "--- response headers (1k) ---"
  for target in $TARGETS; do echo "[$target]"; curl -sS -D - -o /dev/null "http://127.0.0.1:${PORT[$target]}/1k.bin" | tr -d '\r'; done
} >"$TMP/headers.txt"

# ------------------------------------------------------------------------------------------- measure
# Server CPU time in clock ticks, summed over the process and its children (nginx's workers).
cpu_ticks() {
    local pid=$1 total=0 p
    for p in "$pid" $(pgrep -P "$pid" || true); do
        [[ -r /proc/$p/stat ]] || continue
        # fields after the ")" : state is $1, utime is $12, stime $13
        total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)

to_ms() {  # wrk latency (e.g. 812.00us, 1.46ms, 1.02s) in milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "nan" }'
}

RESULTS=$TMP/results.tsv
printf 'round\ttarget\tfile\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\tserver_cpu\twrk_cpu\tother_cpu\n' >"$RESULTS"

busy_ticks() {  # CPU ticks spent by the whole machine (every core) in user and system mode, from /proc/stat
    awk '/^cpu / {print $2 + $3 + $4}' /proc/stat
}

# One wrk run; sets the globals of the last run (rps p50 p99 non2xx sockerr server_cpu wrk_cpu other_cpu).
run_wrk() {  # round target file
    local round=$1 target=$2 file=$3 raw=$TMP/wrk-$2-$3-$1.txt before after busy_before busy_after start_ns elapsed_ns
    local url=http://127.0.0.1:${PORT[$target]}/$file.bin
    before=$(cpu_ticks "${SERVER_PID[$target]}")
    busy_before=$(busy_ticks)
    start_ns=$(date +%s%N)
    TIMEFORMAT='%U %S'
    { time timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$raw" 2>&1 ; } 2>"$raw.time" || true
    elapsed_ns=$(( $(date +%s%N) - start_ns ))
    busy_after=$(busy_ticks)
    after=$(cpu_ticks "${SERVER_PID[$target]}")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$raw"); rps=${rps:-0}
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$raw")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$raw")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$raw"); non2xx=${non2xx:-0}
    sockerr=$(awk -F'Socket errors: ' '/Socket errors:/ {gsub(/ /, "", $2); print $2}' "$raw"); sockerr=${sockerr:--}
    # CPU in % of one core over the run: the server (all threads, and nginx's workers), wrk, and the rest of
    # the machine's user and system time (other processes; irq/softirq time is left out).
    server_cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v ns="$elapsed_ns" 'BEGIN {printf "%.0f", 100 * t / hz / (ns / 1e9)}')
    wrk_cpu=$(awk -v ns="$elapsed_ns" '{printf "%.0f", 100 * ($1 + $2) / (ns / 1e9)}' "$raw.time")
    other_cpu=$(awk -v b=$((busy_after - busy_before)) -v hz="$HZ" -v ns="$elapsed_ns" -v s="$server_cpu" -v w="$wrk_cpu" \
        'BEGIN {o = 100 * b / hz / (ns / 1e9) - s - w; printf "%.0f", o < 0 ? 0 : o}')
}

# Measures one case. A run during which something else took more than OTHER_MAX % of a core (a build or a
# test started by someone else) is repeated once after a pause, time budget permitting; both are logged.
measure() {  # round target file
    local round=$1 target=$2 file=$3
    run_wrk "$round" "$target" "$file"
    if ((other_cpu > OTHER_MAX)) && ((SECONDS - started < MAX_SECONDS)); then
        log "round $round $target /$file.bin: $rps req/s with ${other_cpu}% of a core used by others; repeating"
        sleep 15
        run_wrk "$round" "$target" "$file"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$file" "$rps" "$p50" "$p99" \
        "$non2xx" "$sockerr" "$server_cpu" "$wrk_cpu" "$other_cpu" >>"$RESULTS"
    log "round $round $target /$file.bin: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, socket errors $sockerr, CPU server ${server_cpu}% wrk ${wrk_cpu}% other ${other_cpu}%"
}

# Warm-up per server and file (page cache, nginx worker start-up, NIO's allocator).
if ((WARMUP > 0)); then
    for target in $TARGETS; do
        for file in $FILES; do
            wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:${PORT[$target]}/$file.bin" >/dev/null 2>&1 || true
        done
    done
fi

read -r -a order <<<"$TARGETS"
rounds_done=0
for round in $(seq "$ROUNDS"); do
    if ((SECONDS - started > MAX_SECONDS)); then log "time budget spent; stopping after $rounds_done rounds"; break; fi
    # The servers are interleaved, and the order rotates each round so that none always goes first.
    shift_by=$(( (round - 1) % ${#order[@]} ))
    rotated=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
    for file in $FILES; do
        for target in "${rotated[@]}"; do measure "$round" "$target" "$file"; done
    done
    rounds_done=$round
done

# ------------------------------------------------------------------------------------------- report
# Server-side errors: anything nginx or inetinfo wrote to their error logs during the run.
for target in $TARGETS; do
    for f in "$TMP/$target/error.log" "$TMP/$target/stderr.log"; do
        [[ -s $f ]] && { echo "--- $target: $(basename "$f") (last lines) ---"; tail -n 5 "$f"; }
    done
done >"$TMP/server-errors.txt" 2>/dev/null || true

python3 - "$RESULTS" "$TARGETS" "$FILES" "$rounds_done" "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency" <<'EOF'
import csv, statistics, sys
path, targets, files, rounds, load = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5]
rows = list(csv.DictReader(open(path), delimiter="\t"))
def med(target, file, key):
    values = [float(r[key]) for r in rows if r["target"] == target and r["file"] == file]
    return statistics.median(values) if values else float("nan")
print(f"\nMedians of {rounds} interleaved runs, {load} (req/s; latency in ms; CPU in % of one core)\n")
print("| server | file | req/s | p50 | p99 | server CPU | wrk CPU | other CPU | ours / nginx-1 | runs (req/s) |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for file in files:
    base = med("nginx-1", file, "rps") if "nginx-1" in targets else None
    for t in targets:
        rps = med(t, file, "rps")
        runs = ", ".join(f"{float(r['rps']):.0f}" for r in rows if r["target"] == t and r["file"] == file)
        ratio = f"{rps / base:.2f}" if base and t != "nginx-1" else ""
        print(f"| {t} | {file} | {rps:.0f} | {med(t, file, 'p50_ms'):.2f} | {med(t, file, 'p99_ms'):.2f} | "
              f"{med(t, file, 'server_cpu'):.0f} % | {med(t, file, 'wrk_cpu'):.0f} % | {med(t, file, 'other_cpu'):.0f} % | {ratio} | {runs} |")
errors = [r for r in rows if r["non2xx"] not in ("0", "") or (r["socket_errors"] not in ("-", ""))]
print("\nwrk errors (non-2xx responses, socket errors):", "none" if not errors else "")
for r in errors:
    print(f"  round {r['round']} {r['target']} /{r['file']}.bin: non-2xx {r['non2xx']}, socket errors {r['socket_errors']}")
print("\nTarget (ours >= the better of nginx with 1 or 2 workers, req/s, both files; logged against logged):")
for t in [t for t in targets if t.startswith("ours")]:
    logged = t.endswith("-log") or t.endswith("-stderr")
    peers = [p for p in (["nginx-1-log", "nginx-auto-log"] if logged else ["nginx-1", "nginx-auto"]) if p in targets]
    if not peers:
        continue
    best = {f: max(med(p, f, "rps") for p in peers) for f in files}
    verdict = ", ".join(f"{f} {med(t, f, 'rps') / best[f]:.2f}" for f in files)
    met = all(med(t, f, "rps") >= best[f] for f in files)
    print(f"  {t} against the better of {' / '.join(peers)}: {verdict} -> {'met' if met else 'NOT met'}")
EOF
echo
cat "$TMP/server-errors.txt"
echo "Response headers for /1k.bin:"
sed -n '/^\[ours-t2\]/,/^$/p; /^\[nginx-1\]/,/^$/p' "$TMP/headers.txt"
log "raw results: $RESULTS$([[ ${KEEP_TMP:-0} == 1 ]] && echo '' || echo ' (removed at exit; KEEP_TMP=1 keeps them)')"
