#!/usr/bin/env bash
# SMTP throughput benchmark (issue 3): messages per second accepted by inetinfo's SMTP service, against
# peers measured in the same run. See docs/benchmarks.md, section "SMTP throughput (issue 3)".
#
#   Benchmarks/smtp/run.sh            # installs what it needs, builds, measures (~10-15 min), prints tables
#
# Environment knobs (defaults in brackets):
#   ROUNDS [3]           passes over every case; medians are reported
#   LOADS  ["1:2000:1024 20:10000:4096 20:2000:102400"]   sessions:messages:body-octets for smtp-source
#   BDAT_LOADS [same as LOADS]                             the same for bdat_load.py
#   TARGETS ["ours-maildir aiosmtpd-maildir postfix ours-discard smtp-sink"]
#   CASE_TIMEOUT [120]   seconds allowed to one case (the load generator is killed after it)
#   SKIP_BUILD [0]       1: use the existing .build-bench/release/inetinfo
#   KEEP_TMP [0]         1: keep the temporary folder (logs, Maildirs, Postfix's maillog) for inspection
#
# Peers: (a) inetinfo, durable Maildir delivery; (b) inetinfo, smtp.delivery=discard; (c) Postfix's
# smtp-sink (no storage); (d) aiosmtpd + maildir_server.py (Maildir, fsync of the file and of new/ before
# 250); (e) a private Postfix instance (smtpd -> cleanup -> queue -> qmgr -> virtual(8) -> Maildir).
# Load: Postfix's smtp-source (DATA, no pipelining, -d keeps connections open) and bdat_load.py
# (MAIL/RCPT/BDAT LAST in one write) against (a) and (b).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3            # Debian's python, where python3-aiosmtpd is installed
ROUNDS=${ROUNDS:-3}
LOADS=${LOADS:-"1:2000:1024 20:10000:4096 20:2000:102400"}
BDAT_LOADS=${BDAT_LOADS:-$LOADS}
TARGETS=${TARGETS:-"ours-maildir aiosmtpd-maildir postfix ours-discard smtp-sink"}
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
SKIP_BUILD=${SKIP_BUILD:-0}
RCPT=user@localhost
SENDER=bench@localhost

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------------------------- setup
need=()
command -v /usr/sbin/smtp-source >/dev/null && command -v /usr/sbin/smtp-sink >/dev/null || need+=(postfix)
"$PY" -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd)
pkg-config --exists libsystemd 2>/dev/null || need+=(libsystemd-dev pkg-config)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ $SKIP_BUILD != 1 ]]; then
    log "building inetinfo (release, .build-bench)"
    (cd "$ROOT" && swift build -c release --scratch-path .build-bench --product inetinfo) >&2
fi
INETINFO=$ROOT/.build-bench/release/inetinfo
[[ -x $INETINFO ]] || { echo "missing $INETINFO" >&2; exit 1; }

TMP=$(mktemp -d /tmp/smtp-bench.XXXXXX)
chmod 755 "$TMP"               # Postfix's daemons (user postfix) and virtual(8) (user nobody) go through it
PIDS=()
POSTFIX_STARTED=0
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((POSTFIX_STARTED)); then /usr/sbin/postfix -c "$TMP/postfix/etc" stop >/dev/null 2>&1 || true; fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if ((POSTFIX_STARTED)); then       # postfix stop returns before master has gone
        for _ in $(seq 50); do [[ -e $TMP/postfix/queue/pid/master.pid ]] && pgrep -F "$TMP/postfix/queue/pid/master.pid" >/dev/null 2>&1 || break; sleep 0.1; done
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until HOST:PORT greets with 220 (up to 30 s).
wait_smtp() {
    "$PY" - "$1" <<'EOF'
import socket, sys, time
port = int(sys.argv[1]); deadline = time.time() + 30
while True:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n"); sys.exit(0)
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("no SMTP greeting on port %d" % port)
    time.sleep(0.1)
EOF
}

count_files() { find "$1" -type f 2>/dev/null | wc -l; }
clear_files() { find "$1" -type f -delete 2>/dev/null || true; }

declare -A PORT MAILDIR DIR
ours_log=()

start_inetinfo() {   # NAME [--set ...]
    local name=$1; shift
    local dir=$TMP/$name
    mkdir -p "$dir"
    PORT[$name]=$(free_port)
    "$INETINFO" --state-dir "$dir" --control-socket "$dir/ctl.sock" \
        --smtp-listen "127.0.0.1:${PORT[$name]}" --http-listen "127.0.0.1:$(free_port)" "$@" \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PIDS+=($!)
    DIR[$name]=$dir
    [[ " $* " == *" smtp.delivery=discard "* ]] || MAILDIR[$name]=$dir/mail/localhost/user
    ours_log+=("$dir/stderr.log")
    wait_smtp "${PORT[$name]}"
    log "$name: inetinfo pid $! on 127.0.0.1:${PORT[$name]}"
}

start_aiosmtpd() {
    local dir=$TMP/aiosmtpd
    mkdir -p "$dir"
    PORT[aiosmtpd-maildir]=$(free_port)
    "$PY" "$HERE/maildir_server.py" --listen "127.0.0.1:${PORT[aiosmtpd-maildir]}" --root "$dir/mail" \
        >"$dir/log" 2>&1 &
    PIDS+=($!)
    MAILDIR[aiosmtpd-maildir]=$dir/mail/localhost/user
    wait_smtp "${PORT[aiosmtpd-maildir]}"
    log "aiosmtpd-maildir: pid $! on 127.0.0.1:${PORT[aiosmtpd-maildir]}"
}

start_smtp_sink() {
    PORT[smtp-sink]=$(free_port)
    /usr/sbin/smtp-sink -u nobody "127.0.0.1:${PORT[smtp-sink]}" 1024 >"$TMP/smtp-sink.log" 2>&1 &
    PIDS+=($!)
    wait_smtp "${PORT[smtp-sink]}"
    log "smtp-sink: pid $! on 127.0.0.1:${PORT[smtp-sink]}"
}

# A private Postfix instance: its own main.cf/master.cf, queue and data directories under $TMP, smtpd on
# another loopback port, delivery by virtual(8) into a Maildir (the ".../" static map) as user nobody.
start_postfix() {
    local p=$TMP/postfix
    mkdir -p "$p/etc" "$p/queue" "$p/data" "$p/mail"
    chmod 755 "$p"
    chown postfix:postfix "$p/data"
    chown 65534:65534 "$p/mail"
    PORT[postfix]=$(free_port)
    cat >"$p/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $p/queue
data_directory = $p/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = $p/maillog
maillog_file_prefixes = $p
myhostname = postfix-bench.localdomain
mydomain = localdomain
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
biff = no
smtp_dns_support_level = disabled
virtual_mailbox_domains = localhost
virtual_mailbox_base = $p/mail
virtual_mailbox_maps = static:localhost/user/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
EOF
    # chroot off everywhere: the queue lives under /tmp, not in a prepared jail.
    cat >"$p/etc/master.cf" <<EOF
127.0.0.1:${PORT[postfix]} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
local      unix  - n n -  - local
virtual    unix  - n n -  - virtual
lmtp       unix  - - n -  - lmtp
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
    # Postfix commands log to stderr only on a terminal, so `script` gives them one for the error messages.
    script -qec "/usr/sbin/postfix -c $p/etc check" /dev/null >"$p/check.log" 2>&1 || { cat "$p/check.log" >&2; return 1; }
    POSTFIX_STARTED=1
    script -qec "/usr/sbin/postfix -c $p/etc start" /dev/null >"$p/start.log" 2>&1 || { cat "$p/start.log" >&2; return 1; }
    MAILDIR[postfix]=$p/mail/localhost/user
    wait_smtp "${PORT[postfix]}"
    log "postfix: private instance on 127.0.0.1:${PORT[postfix]}, Maildir $p/mail/localhost/user"
}

# ---------------------------------------------------------------------------------------------- cases
RESULTS=$TMP/results.tsv
: >"$RESULTS"
PROBLEMS=$TMP/problems.txt
: >"$PROBLEMS"
problem() { log "PROBLEM: $*"; echo "$*" >>"$PROBLEMS"; }
now() { date +%s.%N; }

# Clears the target's Maildir before a case, so every case starts from an empty new/.
prepare_case() {
    local target=$1
    if [[ -n ${MAILDIR[$target]:-} ]]; then clear_files "${MAILDIR[$target]}"; fi
    if [[ $target == postfix ]]; then   # nothing of the previous case may still be in flight
        local q=$TMP/postfix/queue
        if (( $(count_files "$q/incoming") + $(count_files "$q/active") + $(count_files "$q/deferred") + $(count_files "$q/maildrop") > 0 )); then
            problem "postfix: queue not empty before a case"
        fi
    fi
    sync
}

# Checks after a case that the target's Maildir holds exactly the messages the client saw accepted;
# for Postfix, waits for the queue to deliver them first and records the end-to-end rate.
check_case() {   # round kind load target start sent accepted_seconds
    local round=$1 kind=$2 load=$3 target=$4 start=$5 sent=$6
    [[ -n ${MAILDIR[$target]:-} ]] || return 0
    local dir=${MAILDIR[$target]} have deadline
    if [[ $target == postfix ]]; then
        deadline=$(( $(date +%s) + CASE_TIMEOUT ))
        while have=$(count_files "$dir/new"); (( have < sent && $(date +%s) < deadline )); do sleep 0.05; done
        local seconds rate
        seconds=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
        rate=$(awk -v n="$have" -v s="$seconds" 'BEGIN { printf "%.1f", n / s }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$kind" "$load" "postfix-e2e" "$have" "$seconds" "$rate" >>"$RESULTS"
    fi
    have=$(count_files "$dir/new")
    if (( have != sent )); then
        problem "$target $kind $load round $round: client saw $sent accepted, $dir/new holds $have"
    fi
    local leftover
    leftover=$(count_files "$dir/tmp")
    (( leftover == 0 )) || problem "$target $kind $load round $round: $leftover files left in tmp/"
    echo "$have"
}

run_source() {   # round load target
    local round=$1 load=$2 target=$3
    local s m l
    IFS=: read -r s m l <<<"$load"
    prepare_case "$target"
    local out=$TMP/source.out err=$TMP/source.err start end rc=0
    start=$(now)
    timeout "$CASE_TIMEOUT" /usr/sbin/smtp-source -c -d -s "$s" -m "$m" -l "$l" -f "$SENDER" -t "$RCPT" \
        "127.0.0.1:${PORT[$target]}" >"$out" 2>"$err" || rc=$?
    end=$(now)
    local sent
    sent=$(tr '\r' '\n' <"$out" | grep -E '^[0-9]+$' | tail -1 || true)
    sent=${sent:-0}
    (( rc == 0 )) || problem "smtp-source -> $target $load round $round: exit $rc, $sent sent; $(tr '\n' ' ' <"$err" | cut -c1-300)"
    (( sent == m )) || problem "smtp-source -> $target $load round $round: $sent of $m sent"
    local seconds rate
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
    rate=$(awk -v n="$sent" -v s="$seconds" 'BEGIN { printf "%.1f", n / s }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" source "$load" "$target" "$sent" "$seconds" "$rate" >>"$RESULTS"
    local stored=""
    if [[ -n ${MAILDIR[$target]:-} ]]; then stored=", new/ holds $(check_case "$round" source "$load" "$target" "$start" "$sent")"; fi
    log "round $round  smtp-source $load -> $target: $sent msgs in ${seconds}s = $rate msg/s$stored"
}

run_bdat() {   # round load target
    local round=$1 load=$2 target=$3
    local s m l
    IFS=: read -r s m l <<<"$load"
    prepare_case "$target"
    local out=$TMP/bdat.out start rc=0
    start=$(now)
    timeout "$CASE_TIMEOUT" "$PY" "$HERE/bdat_load.py" -s "$s" -m "$m" -l "$l" -f "$SENDER" -t "$RCPT" \
        "127.0.0.1:${PORT[$target]}" >"$out" 2>&1 || rc=$?
    local sent seconds rate
    read -r sent seconds rate < <("$PY" -c 'import json,sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(r["sent"], r["seconds"], r["rate"])
except Exception:
    print(0, 0, 0)' "$out")
    (( rc == 0 )) || problem "bdat_load -> $target $load round $round: exit $rc: $(tr '\n' ' ' <"$out" | cut -c1-400)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" bdat "$load" "$target" "$sent" "$seconds" "$rate" >>"$RESULTS"
    local stored=""
    if [[ -n ${MAILDIR[$target]:-} ]]; then stored=", new/ holds $(check_case "$round" bdat "$load" "$target" "$start" "$sent")"; fi
    log "round $round  bdat_load $load -> $target: $sent msgs in ${seconds}s = $rate msg/s$stored"
}

# ---------------------------------------------------------------------------------------------- run
log "machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for target in $TARGETS; do
    case $target in
        ours-maildir) start_inetinfo ours-maildir ;;
        ours-discard) start_inetinfo ours-discard --set smtp.delivery=discard ;;
        aiosmtpd-maildir) start_aiosmtpd ;;
        smtp-sink) start_smtp_sink ;;
        postfix) start_postfix || { problem "postfix: private instance did not start; skipped"; TARGETS=${TARGETS/postfix/}; } ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
done

bench_start=$(date +%s)
for round in $(seq "$ROUNDS"); do
    # Interleave: every target once per load, in an order that is reversed on even rounds.
    order=($TARGETS)
    if (( round % 2 == 0 )); then order=($(printf '%s\n' "${order[@]}" | tac)); fi
    for load in $LOADS; do
        for target in "${order[@]}"; do run_source "$round" "$load" "$target"; done
    done
    for load in $BDAT_LOADS; do
        for target in "${order[@]}"; do
            if [[ $target == ours-* ]]; then run_bdat "$round" "$load" "$target"; fi
        done
    done
done
bench_seconds=$(( $(date +%s) - bench_start ))

# Protocol problems in our logs: anything at warning level or above.
for file in "${ours_log[@]}"; do
    if grep -Eq ' (warning|error|critical) ' "$file"; then
        problem "$(basename "$(dirname "$file")") log: $(grep -Ec ' (warning|error|critical) ' "$file") warning+ lines, first: $(grep -E ' (warning|error|critical) ' "$file" | head -3 | tr '\n' ' ')"
    fi
done

# ---------------------------------------------------------------------------------------------- report
"$PY" - "$RESULTS" "$ROUNDS" "$bench_seconds" <<'EOF'
import collections, statistics, sys
path, rounds, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rates = collections.defaultdict(list)
loads = {"source": [], "bdat": []}
for line in open(path):
    rnd, kind, load, target, sent, secs, rate = line.rstrip("\n").split("\t")
    rates[kind, load, target].append(float(rate))
    if load not in loads[kind]:
        loads[kind].append(load)
med = {key: statistics.median(v) for key, v in rates.items()}

def name(load):
    s, m, l = load.split(":")
    size = "%d KiB" % (int(l) // 1024) if int(l) % 1024 == 0 else "%s B" % l
    return "%s × %s × %s" % (s, m, size)

def cell(kind, load, target):
    key = (kind, load, target)
    if key not in med:
        return "–"
    runs = rates[key]
    return "%.0f (%s)" % (med[key], " / ".join("%.0f" % r for r in runs))

def ratio(kind, load, a, b):
    if (kind, load, a) in med and (kind, load, b) in med and med[kind, load, b] > 0:
        return med[kind, load, a] / med[kind, load, b]
    return None

def fmt(r, goal):
    if r is None:
        return "–"
    return "%.2f× %s" % (r, "met" if r >= goal else "NOT met")

print()
print("Medians of %d rounds in msg/s (the %d runs in brackets); measuring took %d s." % (rounds, rounds, seconds))
print()
print("smtp-source (DATA, no pipelining, connections kept open):")
print()
cols = ["ours-maildir", "aiosmtpd-maildir", "postfix", "postfix-e2e", "ours-discard", "smtp-sink"]
print("| load | " + " | ".join(cols) + " |")
print("| --- |" + " --- |" * len(cols))
for load in loads["source"]:
    print("| %s | " % name(load) + " | ".join(cell("source", load, c) for c in cols) + " |")
print()
print("Ratios of medians (target):")
print()
print("| load | ours / aiosmtpd (≥ 3×) | ours / postfix at 250 (≥ 2×) | ours / postfix end to end (≥ 2×) | discard / smtp-sink (≥ 0.8×) |")
print("| --- | --- | --- | --- | --- |")
for load in loads["source"]:
    print("| %s | %s | %s | %s | %s |" % (name(load),
          fmt(ratio("source", load, "ours-maildir", "aiosmtpd-maildir"), 3),
          fmt(ratio("source", load, "ours-maildir", "postfix"), 2),
          fmt(ratio("source", load, "ours-maildir", "postfix-e2e"), 2),
          fmt(ratio("source", load, "ours-discard", "smtp-sink"), 0.8)))
if loads["bdat"]:
    print()
    print("bdat_load.py (MAIL/RCPT/BDAT LAST pipelined in one write), and the same load over DATA for comparison:")
    print()
    print("| load | ours-maildir BDAT | ours-maildir DATA | ours-discard BDAT | ours-discard DATA |")
    print("| --- | --- | --- | --- | --- |")
    for load in loads["bdat"]:
        print("| %s | %s | %s | %s | %s |" % (name(load), cell("bdat", load, "ours-maildir"), cell("source", load, "ours-maildir"),
              cell("bdat", load, "ours-discard"), cell("source", load, "ours-discard")))
EOF

echo
if [[ -s $PROBLEMS ]]; then
    echo "Problems seen:"
    sed 's/^/  - /' "$PROBLEMS"
else
    echo "Correctness: every durable case's new/ held exactly the messages the client saw accepted; no tmp/ leftovers; no warnings in inetinfo's logs."
fi
