#!/usr/bin/env bash
# SMTP throughput benchmark (issue 3): messages per second accepted by inetinfo's SMTP service, against
# peers measured in the same run. See docs/benchmarks.md, section "SMTP throughput (issue 3)".
#
#   Benchmarks/smtp/run.sh 2>&1 | tee /tmp/smtp-bench.log     # installs, builds, measures, prints tables
#
# Exits 1 if anything went wrong (a client error, a count mismatch, a warning in a server's log); the
# problems are listed after the tables.
#
# Environment knobs (defaults in brackets):
#   ROUNDS [3]           passes over every case; medians are reported
#   LOADS  ["1:2000:1024 20:10000:4096 20:2000:102400"]   sessions:messages:body-octets for smtp-source
#   BDAT_LOADS [same as LOADS]                             the same for bdat_load.py (ours only)
#   TARGETS ["ours-journal ours-direct aiosmtpd-maildir aiosmtpd-inline postfix ours-discard smtp-sink"]
#   LAG_MESSAGES [500]   messages lag.py sends beside the 20-session load (0: no lag measurement)
#   CASE_TIMEOUT [120]   seconds allowed to one case (the load generator is killed after it)
#   SKIP_BUILD [0]       1: use the existing .build-bench/release/inetinfo
#   RECENTLY_DELETED_WAIT [370]  seconds to wait after the previous run deleted its files (see below)
#   QUIET_BUDGET [180]   seconds the run may wait, in all, for other processes to leave the CPU idle
#   KEEP_TMP [0]         1: keep the temporary folder (logs, Maildirs, Postfix's maillog) for inspection
#
# Targets: ours-journal = inetinfo, durable Maildir delivery with smtp.commit=journal (250 once the record
# is flushed, delivery into new/ behind it); ours-direct = the same with smtp.commit=direct (file and new/
# fsynced before 250); ours-discard = inetinfo with
# smtp.delivery=discard; smtp-sink = Postfix's no-storage sink; aiosmtpd-maildir = aiosmtpd +
# maildir_server.py (fsync of the file and of new/ before 250, in a thread pool); aiosmtpd-inline = the
# same with the fsyncs on the event loop; postfix = a private Postfix instance (smtpd -> cleanup -> queue,
# 250 -> qmgr -> virtual(8) -> Maildir); "postfix-e2e" in the tables is the same run timed until the last
# message is in the Maildir.
# Load: Postfix's smtp-source (DATA, no pipelining, -d keeps connections open) and bdat_load.py
# (MAIL/RCPT/BDAT LAST in one write) against ours-*.
# Lag (ours-journal only): the time from a 250 to the file in new/ (lag.py, inotify), for LAG_MESSAGES
# messages sent one after another while smtp-source runs 20 sessions x 4 KiB beside them.
#
# Every case delivers to a recipient of its own (r<round>-<kind>-<load>@localhost), so to a fresh Maildir:
# nothing is deleted while measuring (see RECENTLY_DELETED_WAIT below for why that matters here).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3            # Debian's python, where python3-aiosmtpd is installed
ROUNDS=${ROUNDS:-3}
LOADS=${LOADS:-"1:2000:1024 20:10000:4096 20:2000:102400"}
BDAT_LOADS=${BDAT_LOADS-$LOADS}
TARGETS=${TARGETS:-"ours-journal ours-direct aiosmtpd-maildir aiosmtpd-inline postfix ours-discard smtp-sink"}
LAG_MESSAGES=${LAG_MESSAGES:-500}
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
SKIP_BUILD=${SKIP_BUILD:-0}
SENDER=bench@localhost

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------------------------- setup
need=()
[[ -x /usr/sbin/smtp-source && -x /usr/sbin/smtp-sink ]] || need+=(postfix)
"$PY" -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd)
[[ -x /usr/bin/time ]] || need+=(time)
command -v script >/dev/null || need+=(bsdutils)
pkg-config --exists libsystemd 2>/dev/null || need+=(libsystemd-dev pkg-config)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ $SKIP_BUILD != 1 ]]; then
    log "building inetinfo (release, .build-bench)"
    # Statically linked Swift runtime, as scripts/install.sh builds the installed binary.
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --scratch-path .build-bench --product inetinfo) >&2
fi
INETINFO=$ROOT/.build-bench/release/inetinfo
[[ -x $INETINFO ]] || { echo "missing $INETINFO" >&2; exit 1; }

# This ext4 has no journal, and then it skips inodes freed in the last 60 s (360 s while their inode table
# block is dirty, which new files in the same block keep it) when it allocates new ones: after a run's
# cleanup deleted its ~170000 files, every file creation scans past them (find_inode_bit ->
# recently_deleted -> find_get_block_common), and durable delivery becomes CPU-bound in the kernel
# (measured: 990 msg/s and 900 µs of CPU per message instead of ~4000 and ~330). So a run waits until the
# previous run's cleanup is 370 s old. Other programs deleting many files on / distort the figures alike.
CLEANED_STAMP=/tmp/smtp-bench.cleaned
RECENTLY_DELETED_WAIT=${RECENTLY_DELETED_WAIT:-370}
if [[ -e $CLEANED_STAMP ]]; then
    age=$(( $(date +%s) - $(stat -c %Y "$CLEANED_STAMP") ))
    if (( age < RECENTLY_DELETED_WAIT )); then
        log "the previous run deleted its files ${age}s ago; waiting $((RECENTLY_DELETED_WAIT - age))s (ext4 skips recently freed inodes)"
        sleep $((RECENTLY_DELETED_WAIT - age))
    fi
fi

TMP=$(mktemp -d /tmp/smtp-bench.XXXXXX)
chmod 755 "$TMP"               # Postfix's daemons (user postfix) and virtual(8) (user nobody) go through it
# "Top directory" (Orlov): each target's tree gets a block group of its own, so that the queue files Postfix
# creates and deletes for every message do not slow down the other targets' file creations (see above).
chattr +T "$TMP" 2>/dev/null || true
PIDS=()
POSTFIX_STARTED=0
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((POSTFIX_STARTED)); then /usr/sbin/postfix -c "$TMP/postfix/etc" stop >/dev/null 2>&1 || true; fi
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if ((POSTFIX_STARTED)); then       # `postfix stop` returns before master has gone
        for _ in $(seq 100); do
            [[ -e $TMP/postfix/queue/pid/master.pid ]] && pgrep -F "$TMP/postfix/queue/pid/master.pid" >/dev/null 2>&1 || break
            sleep 0.1
        done
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; touch "$CLEANED_STAMP"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until 127.0.0.1:PORT greets with 220 (up to 30 s).
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

# Every case delivers to a recipient (so a Maildir) of its own.
case_local_part() { echo "r$1-$2-${3//:/x}"; }

count_files() { { find "$1" -type f 2>/dev/null || true; } | wc -l; }

declare -A PORT PID MAILROOT
OURS_LOGS=()

start_inetinfo() {   # NAME [--set ...]
    local name=$1; shift
    local dir=$TMP/$name
    mkdir -p "$dir"
    PORT[$name]=$(free_port)
    "$INETINFO" --state-dir "$dir" --control-socket "$dir/ctl.sock" \
        --smtp-listen "127.0.0.1:${PORT[$name]}" --http-listen "127.0.0.1:$(free_port)" "$@" \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PID[$name]=$!
    PIDS+=($!)
    [[ " $* " == *" smtp.delivery=discard "* ]] || MAILROOT[$name]=$dir/mail/localhost
    OURS_LOGS+=("$dir/stderr.log")
    wait_smtp "${PORT[$name]}"
    log "$name: inetinfo pid ${PID[$name]} on 127.0.0.1:${PORT[$name]}"
}

start_aiosmtpd() {   # NAME [--inline]
    local name=$1; shift
    local dir=$TMP/$name
    mkdir -p "$dir"
    PORT[$name]=$(free_port)
    "$PY" "$HERE/maildir_server.py" --listen "127.0.0.1:${PORT[$name]}" --root "$dir/mail" "$@" >"$dir/log" 2>&1 &
    PID[$name]=$!
    PIDS+=($!)
    MAILROOT[$name]=$dir/mail/localhost
    wait_smtp "${PORT[$name]}"
    log "$name: aiosmtpd pid ${PID[$name]} on 127.0.0.1:${PORT[$name]}"
}

start_smtp_sink() {
    PORT[smtp-sink]=$(free_port)
    /usr/sbin/smtp-sink -u nobody "127.0.0.1:${PORT[smtp-sink]}" 1024 >"$TMP/smtp-sink.log" 2>&1 &
    PID[smtp-sink]=$!
    PIDS+=($!)
    wait_smtp "${PORT[smtp-sink]}"
    log "smtp-sink: pid ${PID[smtp-sink]} on 127.0.0.1:${PORT[smtp-sink]}"
}

# A private Postfix instance: its own main.cf/master.cf, queue and data directories under $TMP, smtpd on
# another loopback port, delivery by virtual(8) as user nobody into $TMP/postfix/mail/localhost/<local>/
# (a Maildir: the map's result ends in "/"). Everything else is Postfix's default.
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
virtual_mailbox_maps = texthash:$p/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
EOF
    # virtual(8) refuses regexp substitutions, so every case's recipient is listed (see run_case).
    local round kind load
    {
        echo "$SENDER localhost/${SENDER%@*}/"
        for round in $(seq "$ROUNDS"); do
            for load in $LOADS; do local_part=$(case_local_part "$round" source "$load"); echo "$local_part@localhost localhost/$local_part/"; done
        done
    } >"$p/etc/vmailbox"
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
    # Postfix commands log to stderr only on a terminal: `script` gives them one, for their error messages.
    script -qec "/usr/sbin/postfix -c $p/etc check" /dev/null >"$p/check.log" 2>&1 || { cat "$p/check.log" >&2; return 1; }
    POSTFIX_STARTED=1
    script -qec "/usr/sbin/postfix -c $p/etc start" /dev/null >"$p/start.log" 2>&1 || { cat "$p/start.log" >&2; return 1; }
    MAILROOT[postfix]=$p/mail/localhost
    wait_smtp "${PORT[postfix]}" || return 1
    PID[postfix]=$(cat "$p/queue/pid/master.pid" | tr -d ' ')
    log "postfix: private instance (master pid ${PID[postfix]}) on 127.0.0.1:${PORT[postfix]}"
}

# ---------------------------------------------------------------------------------------------- cases
RESULTS=$TMP/results.tsv
: >"$RESULTS"
PROBLEMS=$TMP/problems.txt
: >"$PROBLEMS"
problem() { log "PROBLEM: $*"; echo "$*" >>"$PROBLEMS"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# CPU ticks (1/100 s) of a target's processes: "pid ticks" lines. Postfix: master and its children.
server_ticks() {
    local pids=${PID[$1]} p
    [[ $1 == postfix ]] && pids="$pids $(pgrep -P "${PID[postfix]}" | tr '\n' ' ')"
    for p in $pids; do
        [[ -r /proc/$p/stat ]] && awk -v p="$p" '{ sub(/^.*\) /, ""); print p, $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true
    done
}
# Ticks spent between two server_ticks snapshots (processes that appeared count from 0).
ticks_between() { awk 'NR == FNR { before[$1] = $2; next } { total += $2 - before[$1] } END { print total + 0 }' "$1" "$2"; }
# Busy ticks of the whole machine (user, nice, system, irq, softirq, steal).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# Waits for Postfix to deliver `sent` messages (end-to-end figure) and checks that its queue drained.
postfix_drain() {   # dir sent start → prints seconds
    local dir=$1 sent=$2 start=$3 deadline=$(( $(date +%s) + CASE_TIMEOUT ))
    while (( $(count_files "$dir/new") < sent && $(date +%s) < deadline )); do sleep 0.05; done
    elapsed "$start" "$(now)"
    local q=$TMP/postfix/queue
    while (( $(count_files "$q/incoming") + $(count_files "$q/active") > 0 && $(date +%s) < deadline )); do sleep 0.05; done
}

# Before a case: if other processes keep the machine busy (a build, a test run), wait for it to calm down,
# up to QUIET_BUDGET seconds over the whole run. The cores they use during the case are recorded anyway.
QUIET_BUDGET=${QUIET_BUDGET:-180}
quiet_waited=0
wait_quiet() {
    local before after busy
    while :; do
        before=$(machine_ticks); sleep 0.5; after=$(machine_ticks)
        busy=$(( (after - before) * 2 ))          # hundredths of a core
        (( busy <= 30 || quiet_waited >= QUIET_BUDGET )) && break
        if (( quiet_waited % 10 == 0 )); then log "machine busy (${busy}% of a core used by others); waiting"; fi
        sleep 1.5; quiet_waited=$((quiet_waited + 2))
    done
}

# One case: LOAD (sessions:messages:octets) sent by KIND (source|bdat) to TARGET in ROUND.
run_case() {   # round kind load target
    local round=$1 kind=$2 load=$3 target=$4
    local s m l
    IFS=: read -r s m l <<<"$load"
    local local_part
    local_part=$(case_local_part "$round" "$kind" "$load")
    local out=$TMP/client.out err=$TMP/client.err cputime=$TMP/client.time rc=0
    wait_quiet
    server_ticks "$target" >"$TMP/ticks.before"
    local machine_before start end
    machine_before=$(machine_ticks)
    sync
    start=$(now)
    if [[ $kind == source ]]; then
        timeout "$CASE_TIMEOUT" /usr/bin/time -f '%U %S' -o "$cputime" /usr/sbin/smtp-source -c -d -s "$s" -m "$m" -l "$l" \
            -f "$SENDER" -t "$local_part@localhost" "127.0.0.1:${PORT[$target]}" >"$out" 2>"$err" || rc=$?
    else
        timeout "$CASE_TIMEOUT" /usr/bin/time -f '%U %S' -o "$cputime" "$PY" "$HERE/bdat_load.py" -s "$s" -m "$m" -l "$l" \
            -f "$SENDER" -t "$local_part@localhost" "127.0.0.1:${PORT[$target]}" >"$out" 2>"$err" || rc=$?
    fi
    end=$(now)
    server_ticks "$target" >"$TMP/ticks.after"
    local machine_after server client other
    machine_after=$(machine_ticks)
    server=$(ticks_between "$TMP/ticks.before" "$TMP/ticks.after")
    client=$(awk '{ printf "%d", ($1 + $2) * 100 }' "$cputime" 2>/dev/null || echo 0)
    local seconds sent
    seconds=$(elapsed "$start" "$end")
    if [[ $kind == source ]]; then
        # smtp-source -c prints a running count of completed DATA transactions.
        sent=$(tr '\r' '\n' <"$out" | grep -E '^[0-9]+$' | tail -1 || true)
        (( rc == 0 )) || problem "smtp-source -> $target $load round $round: exit $rc; $(tr '\n' ' ' <"$err" | cut -c1-300)"
    else
        sent=$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["sent"])' "$out" 2>/dev/null || true)
        (( rc == 0 )) || problem "bdat_load -> $target $load round $round: exit $rc; $(tr '\n' ' ' <"$out" "$err" | cut -c1-400)"
    fi
    sent=${sent:-0}
    (( sent == m )) || problem "$kind -> $target $load round $round: $sent of $m messages accepted"
    local rate
    rate=$(awk -v n="$sent" -v s="$seconds" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')
    # Cores used by anything else meanwhile (another build or test run distorts the figures).
    other=$(awk -v t=$((machine_after - machine_before - server - client)) -v s="$seconds" 'BEGIN { o = (s > 0 ? t / 100 / s : 0); printf "%.2f", (o < 0 ? 0 : o) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$kind" "$load" "$target" "$sent" "$seconds" "$rate" \
        "$server" "$client" "$other" >>"$RESULTS"
    local note=""
    if [[ -n ${MAILROOT[$target]:-} ]]; then
        local dir=${MAILROOT[$target]}/$local_part
        if [[ $target == postfix ]]; then
            local e2e
            e2e=$(postfix_drain "$dir" "$sent" "$start")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t\t\t\n' "$round" "$kind" "$load" postfix-e2e "$sent" "$e2e" \
                "$(awk -v n="$sent" -v s="$e2e" 'BEGIN { printf "%.1f", n / s }')" >>"$RESULTS"
            note=", all in the Maildir after ${e2e}s"
        fi
        # Correctness: new/ holds exactly the messages the client saw accepted, and tmp/ nothing.
        local have leftover
        have=$(count_files "$dir/new")
        # The journal delivers behind the 250: the last files may land a moment after the client is done.
        local settle=$(( $(date +%s) + 5 ))
        while [[ $target == ours-journal ]] && (( have < sent && $(date +%s) < settle )); do
            sleep 0.05; have=$(count_files "$dir/new")
        done
        leftover=$(count_files "$dir/tmp")
        (( have == sent )) || problem "$target $kind $load round $round: client saw $sent accepted, $dir/new holds $have"
        (( leftover == 0 )) || problem "$target $kind $load round $round: $leftover files left in $dir/tmp"
        note+=", new/ holds $have"
    fi
    log "round $round  $kind $load -> $target: $sent msgs in ${seconds}s = $rate msg/s (server cpu $((server * 10)) ms, other load $other cores)$note"
}

# ---------------------------------------------------------------------------------------------- run
log "machine: $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg); inetinfo built $(date -r "$INETINFO" '+%F %T') in $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
started=""
for target in $TARGETS; do
    case $target in
        ours-journal) start_inetinfo ours-journal ;;
        ours-direct) start_inetinfo ours-direct --set smtp.commit=direct ;;
        ours-discard) start_inetinfo ours-discard --set smtp.delivery=discard ;;
        aiosmtpd-maildir) start_aiosmtpd aiosmtpd-maildir ;;
        aiosmtpd-inline) start_aiosmtpd aiosmtpd-inline --inline ;;
        smtp-sink) start_smtp_sink ;;
        postfix) if ! start_postfix; then problem "postfix: the private instance did not start; skipped"; continue; fi ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
    started+=" $target"
done
TARGETS=$started

bench_start=$(date +%s)
for round in $(seq "$ROUNDS"); do
    # Interleaved: every target once per load; the order is reversed on even rounds.
    order=($TARGETS)
    if (( round % 2 == 0 )); then order=($(printf '%s\n' "${order[@]}" | tac)); fi
    for load in $LOADS; do
        for target in "${order[@]}"; do run_case "$round" source "$load" "$target"; done
    done
    for load in $BDAT_LOADS; do
        for target in "${order[@]}"; do
            if [[ $target == ours-* ]]; then run_case "$round" bdat "$load" "$target"; fi
        done
    done
done
bench_seconds=$(( $(date +%s) - bench_start ))

# 250 -> new/ under load: lag.py on one session beside smtp-source's 19 sessions x 4 KiB.
LAG_RESULT=""
if [[ " $TARGETS " == *" ours-journal "* ]] && (( LAG_MESSAGES > 0 )); then
    wait_quiet
    lag_dir=${MAILROOT[ours-journal]}/lag
    # 19 sessions: with lag.py's they make the 20 that smtp.max-sessions-per-client allows one address.
    /usr/sbin/smtp-source -c -d -s 19 -m 40000 -l 4096 -f "$SENDER" -t "lag-load@localhost" \
        "127.0.0.1:${PORT[ours-journal]}" >/dev/null 2>&1 &
    load_pid=$!
    sleep 1
    LAG_RESULT=$("$PY" "$HERE/lag.py" -m "$LAG_MESSAGES" -l 4096 -t lag@localhost "$lag_dir" "127.0.0.1:${PORT[ours-journal]}" 2>&1 || true)
    kill "$load_pid" 2>/dev/null || true
    wait "$load_pid" 2>/dev/null || true
    log "250 -> new/ with smtp.commit=journal beside 19 sessions x 4 KiB: $LAG_RESULT"
    [[ $LAG_RESULT == *'"missing": 0'* ]] || problem "lag: $LAG_RESULT"
fi
(( quiet_waited == 0 )) || log "waited ${quiet_waited}s in all for the machine to be quiet"

# Anything our servers logged at warning level or above.
for file in "${OURS_LOGS[@]}"; do
    lines=$(grep -Ec ' (warning|error|critical) ' "$file" || true)
    if (( lines > 0 )); then
        problem "$(basename "$(dirname "$file")"): $lines log lines at warning or above, first: $(grep -E ' (warning|error|critical) ' "$file" | head -3 | tr '\n' ' ')"
    fi
done
if [[ -e $TMP/postfix/maillog ]] && grep -Eq 'warning|error|fatal|panic' "$TMP/postfix/maillog"; then
    problem "postfix maillog: $(grep -Ec 'warning|error|fatal|panic' "$TMP/postfix/maillog") warning lines, first: $(grep -E 'warning|error|fatal|panic' "$TMP/postfix/maillog" | head -2 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------------------------------------- report
"$PY" "$HERE/report.py" "$RESULTS" "$ROUNDS" "$bench_seconds"
[[ -z $LAG_RESULT ]] || printf "\n250 -> new/ (smtp.commit=journal, one session beside smtp-source 19 x 4 KiB): %s\n" "$LAG_RESULT"
echo
if [[ -s $PROBLEMS ]]; then
    echo "Problems seen:"
    sed 's/^/  - /' "$PROBLEMS"
    exit 1
else
    echo "Correctness: in every durable case new/ held exactly the messages the client saw accepted, tmp/ was empty;"
    echo "no warnings in inetinfo's logs or Postfix's maillog; every client run completed all its messages."
fi
