#!/usr/bin/env bash
# Integration test under a real systemd: installs the units and binaries exactly as scripts/install.sh
# does (into a staging DESTDIR overlaid on /usr/local inside private namespaces), boots systemd as PID 1
# of those namespaces (scripts/systemd/harness.sh; the machine is not changed), and checks the outer
# tier of supervision: socket activation, READY=1/STATUS=, the control socket, reload without
# dropping connections, the watchdog, Restart=on-failure after a trap and an escalation with no
# refused connection, journal priorities, the MS02-012 probe, a clean stop, the sandbox and its
# `systemd-analyze security` rating. docs/operations.md lists the checks.
#
#   scripts/systemd/integration-test.sh        # from anywhere; as root; no arguments
#
# It installs missing Debian packages with apt-get, builds the release binaries (scratch path
# .build-systemd; not counted in the time limit), then runs the checks under `timeout` (default 300 s,
# INETINFO_SYSTEMD_TEST_TIMEOUT). Every check prints a PASS or FAIL line; the exit status is 0 only if
# all passed. The teardown always runs (trap): systemd is stopped, anything left is killed by pid,
# the cgroup subtree and the work directory are removed.
#
# Ports: 127.0.0.1:2525 (SMTP) and :8080 (HTTP) as installed; when either is taken, free ports are used
# instead through socket-unit drop-ins written inside the namespace (or set INETINFO_TEST_SMTP_PORT,
# INETINFO_TEST_HTTP_PORT). The test adds one drop-in to inetinfo.service: WatchdogSec=3 (fast
# watchdog) and --enable-fault-injection (for inetinfoctl crash); everything else is the installed unit.
#
# Other variables: INETINFO_TEST_ARTIFACTS=DIR keeps the journal and the loop client's summary there;
# HARNESS_KEEP=1 keeps the work directory; SKIP_BUILD=1 installs the binaries already built.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=harness.sh
source "$here/harness.sh"

WATCHDOG_SEC=3
CLIENTS=("python3" "$here/clients.py")

# ---------------------------------------------------------------------------------------------------
# The checks (run in a child process under `timeout`, see the end of the file).

passes=0
failures=0
xfailures=0
pass() { echo "PASS: $*"; passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# A known problem of the host, reported for a fix in Sources/: shown, not counted as a failure.
xfail() { echo "XFAIL: $*"; xfailures=$((xfailures + 1)); }
indent() { sed 's/^/    | /'; }

inside() { harness_run "$work" timeout 30 "$@"; }
sctl() { inside systemctl "$@"; }
prop() { sctl show -p "$2" --value "$1"; }
journal() { inside journalctl --no-pager "$@"; }
client() { timeout 40 "${CLIENTS[@]}" "$@"; }

# wait_for SECONDS COMMAND…: polls every 0.1 s until the command succeeds.
wait_for() {
    local limit=$1 deadline; shift
    deadline=$(($(date +%s%N) / 1000000 + limit * 1000))
    until "$@" >/dev/null 2>&1; do
        [ $(($(date +%s%N) / 1000000)) -lt $deadline ] || return 1
        sleep 0.1
    done
}
is_active() { [ "$(sctl is-active "$1")" = "$2" ]; }
prop_is() { [ "$(prop "$1" "$2")" = "$3" ]; }
restarted() { [ "$(prop inetinfo.service NRestarts)" = "$1" ] && is_active inetinfo.service active \
              && [ "$(prop inetinfo.service MainPID)" != "$2" ] && [ "$(prop inetinfo.service MainPID)" != 0 ]; }
# mark: now, to the microsecond; after MARK ARGS…: journalctl ARGS… for the entries since then.
# (Not --after-cursor: journalctl 252 returns nothing for it combined with -p when the cursor's own
# entry does not match the priority.)
mark() { date +%s.%6N; }
after() { local since=$1; shift; journal --since "@$since" "$@"; }
journal_has() { [ -n "$(after "$2" -u "$1" -q -o cat -g "$3" 2>/dev/null)" ]; }
journal_has_access() { [ -n "$(after "$1" -u inetinfo.service -t inetinfo-access -p info -q -o cat -g "$2" 2>/dev/null)" ]; }
served() { client smtp-greeting "$SMTP_PORT" >/dev/null && client http-get "$HTTP_PORT" >/dev/null; }

run_checks() {
    local unit_dir=/usr/local/lib/systemd/system out rc pid pid0 nr0 since status_json ready started files hold_ok

    echo "--- static checks (inside the namespaces, where the staged install is at /usr/local)"
    if out=$(inside systemd-analyze verify "$unit_dir/inetinfo.service" "$unit_dir/inetinfo-smtp.socket" \
            "$unit_dir/inetinfo-http.socket" 2>&1) && [ -z "$out" ]; then
        pass "systemd-analyze verify: the three installed units verify without a message"
    else
        fail "systemd-analyze verify reported:"; echo "$out" | indent
    fi

    echo "--- socket units and socket activation"
    if sctl start inetinfo-smtp.socket inetinfo-http.socket && is_active inetinfo-smtp.socket active \
        && is_active inetinfo-http.socket active && is_active inetinfo.service inactive; then
        pass "inetinfo-smtp.socket and inetinfo-http.socket active (127.0.0.1:$SMTP_PORT, :$HTTP_PORT); the service not started yet"
    else
        fail "socket units did not start"; sctl status inetinfo-smtp.socket inetinfo-http.socket 2>&1 | indent
    fi
    since=$(mark)
    if out=$(client http-get "$HTTP_PORT") && wait_for 30 is_active inetinfo.service active; then
        pass "first connection to :$HTTP_PORT started inetinfo.service through socket activation and was answered ($out)"
    else
        fail "socket activation: $out; inetinfo.service is $(sctl is-active inetinfo.service)"
        sctl status inetinfo.service 2>&1 | indent; journal -u inetinfo -n 30 | indent
    fi
    # READY=1: the unit turned active only after the host said so.
    out=$(after "$since" -u inetinfo.service -o json --output-fields=MESSAGE,_PID,SYSLOG_IDENTIFIER \
        | python3 -c '
import json, sys
ready = started = None
for line in sys.stdin:
    entry = json.loads(line)
    message = entry.get("MESSAGE", "")
    if not isinstance(message, str): continue
    if entry.get("SYSLOG_IDENTIFIER") == "inetinfo" and message == "all enabled services running; ready" and ready is None:
        ready = int(entry["__MONOTONIC_TIMESTAMP"])
    if message.startswith("Started inetinfo.service") and started is None:
        started = int(entry["__MONOTONIC_TIMESTAMP"])
print(f"{ready} {started}")
sys.exit(0 if ready is not None and started is not None and ready <= started else 1)')
    rc=$?
    if [ $rc -eq 0 ] && prop_is inetinfo.service Type notify && prop_is inetinfo.service NotifyAccess main; then
        read -r ready started <<<"$out"
        pass "Type=notify, NotifyAccess=main: the host logged 'ready' (READY=1) $(( (started - ready) ))µs before systemd logged 'Started'; is-active says active"
    else
        fail "READY=1 ordering (host ready, systemd Started monotonic µs): $out"
    fi
    if wait_for 10 prop_is inetinfo.service StatusText "smtp: running, http: running"; then
        pass "systemctl show -p StatusText: '$(prop inetinfo.service StatusText)'"
    else
        fail "StatusText is '$(prop inetinfo.service StatusText)', expected 'smtp: running, http: running'"
    fi

    echo "--- the access log, in the journal"
    since=$(mark)
    if client http-get "$HTTP_PORT" >/dev/null \
        && wait_for 5 journal_has_access "$since" '"GET / HTTP/1.1" 200 '; then
        pass "access log: one entry per request under SYSLOG_IDENTIFIER=inetinfo-access, priority info, in the unit's journal: $(after "$since" -u inetinfo.service -t inetinfo-access -p info -q -o cat | head -1)"
    else
        fail "access log: no inetinfo-access entry for GET / within 5 s"
        after "$since" -u inetinfo.service -o verbose | tail -40 | indent
    fi

    echo "--- control socket"
    pid=$(prop inetinfo.service MainPID)
    if out=$(inside inetinfoctl --socket /run/inetinfo/inetinfo.sock status 2>&1); then
        pass "inetinfoctl --socket /run/inetinfo/inetinfo.sock status (via nsenter): exit 0"; echo "$out" | indent
    else
        fail "inetinfoctl status failed: $out"
    fi
    status_json=$(inside inetinfoctl --socket /run/inetinfo/inetinfo.sock status --json 2>&1)
    if out=$(python3 -c '
import json, sys
status = json.loads(sys.argv[1])
main_pid, watchdog_usec, smtp_port, http_port = int(sys.argv[2]), int(sys.argv[3]) * 1000000, sys.argv[4], sys.argv[5]
pid, usec = status["host"]["pid"], status["host"]["watchdogUsec"]
listen = {service["name"]: service["listen"] for service in status["services"]}
smtp, http = listen.get("smtp", []), listen.get("http", [])
problems = []
if pid != main_pid: problems.append(f"pid {pid} is not MainPID {main_pid}")
if usec != watchdog_usec: problems.append(f"watchdogUsec {usec}, expected {watchdog_usec}")
if not any(address.endswith(smtp_port) for address in smtp): problems.append(f"smtp listens on {smtp}")
if not any(address.endswith(http_port) for address in http): problems.append(f"http listens on {http}")
print("; ".join(problems) or f"pid {pid}, watchdogUsec {usec}, smtp {smtp}, http {http}")
sys.exit(1 if problems else 0)' "$status_json" "$pid" "$WATCHDOG_SEC" ":$SMTP_PORT" ":$HTTP_PORT" 2>&1); then
        pass "status --json: the host is MainPID, sees WATCHDOG_USEC and the sockets systemd passed ($out)"
    else
        fail "status --json: $out"; echo "$status_json" | indent
    fi

    echo "--- the sandbox the host runs in (MainPID $pid)"
    out=$(inside cat "/proc/$pid/status" | awk '/^(Uid|NoNewPrivs|Seccomp|CapEff|CapBnd|CapAmb):/ {printf "%s %s; ", $1, $2}')
    if [[ $out =~ Uid:\ ([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -ne 0 ] && [[ $out == *"NoNewPrivs: 1"* ]] \
        && [[ $out == *"Seccomp: 2"* ]] && [[ $out == *"CapEff: 0000000000000000"* ]] && [[ $out == *"CapBnd: 0000000000000000"* ]]; then
        pass "DynamicUser, NoNewPrivileges, SystemCallFilter, CapabilityBoundingSet= in effect: $out"
    else
        fail "process status: $out"
    fi
    local ns_net ns_user ns_ipc ns_uts ns_mnt pid1_ns
    ns_net=$(inside readlink "/proc/$pid/ns/net"); ns_user=$(inside readlink "/proc/$pid/ns/user")
    ns_ipc=$(inside readlink "/proc/$pid/ns/ipc"); ns_uts=$(inside readlink "/proc/$pid/ns/uts")
    ns_mnt=$(inside readlink "/proc/$pid/ns/mnt")
    pid1_ns=$(inside readlink /proc/1/ns/net /proc/1/ns/user /proc/1/ns/ipc /proc/1/ns/uts /proc/1/ns/mnt | tr '\n' ' ')
    if [[ $pid1_ns != *"$ns_net"* && $pid1_ns != *"$ns_user"* && $pid1_ns != *"$ns_ipc"* && $pid1_ns != *"$ns_uts"* && $pid1_ns != *"$ns_mnt"* ]]; then
        pass "PrivateNetwork, PrivateUsers, PrivateIPC, ProtectHostname, mount sandbox: the host has its own net, user, ipc, uts and mount namespaces"
    else
        fail "namespaces of the host ($ns_net $ns_user $ns_ipc $ns_uts $ns_mnt) vs PID 1 ($pid1_ns)"
    fi
    out=$(inside awk '$5 == "/" || $5 == "/var/lib/private/inetinfo" || $5 == "/tmp" || $5 == "/dev" || $5 == "/home" || $5 == "/root" {print $5 " " $6}' "/proc/$pid/mountinfo" | sort -u | tr '\n' ';')
    if [[ $out == *"/ ro"* && $out == *"/var/lib/private/inetinfo rw"* && $out == *"/tmp rw"* && $out == *"/dev "* ]]; then
        pass "ProtectSystem=strict (/ read-only), StateDirectory writable, PrivateTmp, PrivateDevices, ProtectHome mounts: $out"
    else
        fail "mounts seen by the host: $out"
    fi

    echo "--- mail lands in the state directory"
    # The installed configuration accepts only existing Maildirs (smtp.recipients = existing); postmaster
    # always, and its Maildir is created by its first message.
    # With smtp.commit = journal the file lands in new/ just after the 250: look for it up to 5 s.
    files=""
    if out=$(client send-mail "$SMTP_PORT" postmaster@localhost); then
        for _ in $(seq 50); do
            files=$(inside find /var/lib/private/inetinfo/mail/localhost/postmaster/new -type f -printf '%m %u %p\n' 2>/dev/null || true)
            [ -n "$files" ] && break
            sleep 0.1
        done
    fi
    if [ -n "$files" ]; then
        pass "SMTP delivery under the sandbox ($out); in /var/lib/inetinfo (StateDirectory, UMask=0077): $(echo "$files" | head -1)"
    else
        fail "mail delivery: $out; $(inside find /var/lib/private/inetinfo -maxdepth 4 2>&1 | tr '\n' ' ')"
    fi

    echo "--- reload keeps connections"
    local hold_dir hold_pid nr pid_before
    hold_dir=$(mktemp -d "$work/hold.XXXX")
    client hold "$SMTP_PORT" "$HTTP_PORT" "$hold_dir" >"$hold_dir/out" 2>&1 &
    hold_pid=$!
    wait_for 15 test -e "$hold_dir/ready" || { fail "the held connections did not open"; cat "$hold_dir/out" | indent; }
    pid_before=$(prop inetinfo.service MainPID); nr=$(prop inetinfo.service NRestarts); since=$(mark)
    if out=$(sctl reload inetinfo.service 2>&1); then rc=0; else rc=$?; fi
    touch "$hold_dir/go"
    if wait "$hold_pid"; then hold_ok=yes; else hold_ok=no; fi
    if [ $rc -eq 0 ] && [ "$hold_ok" = yes ] && [ "$(prop inetinfo.service MainPID)" = "$pid_before" ] \
        && [ "$(prop inetinfo.service NRestarts)" = "$nr" ] && is_active inetinfo.service active \
        && journal_has inetinfo.service "$since" "configuration reloaded"; then
        pass "systemctl reload: host logged 'configuration reloaded', same MainPID $pid_before; $(cat "$hold_dir/out")"
    else
        fail "reload: systemctl rc $rc ($out), held connections: $hold_ok ($(cat "$hold_dir/out")), MainPID $pid_before -> $(prop inetinfo.service MainPID)"
        after "$since" -u inetinfo | indent
    fi

    echo "--- reload re-reads the installed configuration; a broken one is rejected"
    local config=/usr/local/etc/inetinfo/inetinfo.toml
    inside cp "$config" /run/inetinfo-test.toml
    pid_before=$(prop inetinfo.service MainPID)
    inside sed -i 's/^\[smtp\]$/[smtp]\nenabled = false/' "$config"
    if sctl reload inetinfo.service && wait_for 10 prop_is inetinfo.service StatusText "smtp: disabled, http: running" \
        && inside cp /run/inetinfo-test.toml "$config" && sctl reload inetinfo.service \
        && wait_for 10 prop_is inetinfo.service StatusText "smtp: running, http: running" \
        && [ "$(prop inetinfo.service MainPID)" = "$pid_before" ]; then
        pass "reload applies the file: smtp.enabled = false -> StatusText 'smtp: disabled, http: running'; restored -> 'smtp: running, http: running' (same MainPID)"
    else
        fail "reload did not apply the configuration: StatusText '$(prop inetinfo.service StatusText)'"
        inside cp /run/inetinfo-test.toml "$config"
    fi
    since=$(mark)
    inside sh -c "echo 'this is [not toml' >>'$config'"
    if out=$(sctl reload inetinfo.service 2>&1); then rc=0; else rc=$?; fi
    inside cp /run/inetinfo-test.toml "$config"
    if [ $rc -ne 0 ] && is_active inetinfo.service active && [ "$(prop inetinfo.service MainPID)" = "$pid_before" ] \
        && [ -n "$(after "$since" -u inetinfo.service -p err -q -g "reload rejected")" ] && served; then
        pass "a broken configuration: systemctl reload fails (exit $rc), the host logs 'reload rejected' at error priority and keeps serving with the running configuration (same MainPID)"
    else
        fail "broken configuration: systemctl reload exit $rc ($out), $(sctl is-active inetinfo.service), MainPID $(prop inetinfo.service MainPID)"
        after "$since" -u inetinfo.service | indent
    fi
    sctl reload inetinfo.service >/dev/null 2>&1

    echo "--- in-process failure (tier 1) and journal priorities"
    pid_before=$(prop inetinfo.service MainPID); nr=$(prop inetinfo.service NRestarts); since=$(mark)
    if inside inetinfoctl --socket /run/inetinfo/inetinfo.sock crash smtp --mode throw >/dev/null \
        && wait_for 10 prop_is inetinfo.service StatusText "smtp: running (1 restart), http: running" \
        && [ "$(prop inetinfo.service MainPID)" = "$pid_before" ] && [ "$(prop inetinfo.service NRestarts)" = "$nr" ]; then
        pass "crash smtp --mode throw: restarted by the in-process supervisor, not by systemd (same MainPID, NRestarts $nr); StatusText '$(prop inetinfo.service StatusText)'"
    else
        fail "crash smtp --mode throw: StatusText '$(prop inetinfo.service StatusText)', MainPID $(prop inetinfo.service MainPID), NRestarts $(prop inetinfo.service NRestarts)"
    fi
    sleep 0.3
    out=$(after "$since" -u inetinfo.service -p err -o json --output-fields=MESSAGE,PRIORITY,SERVICE,INSTANCE,REASON,SYSLOG_IDENTIFIER,_PID \
        | python3 -c '
import json, sys
hits = [json.loads(l) for l in sys.stdin]
hits = [e for e in hits if e.get("SYSLOG_IDENTIFIER") == "inetinfo" and e.get("_PID") == sys.argv[1]
        and "injected fault: throw" in json.dumps(e) and int(e.get("PRIORITY", 9)) <= 3]
for e in hits[:2]: print(" ".join(f"{k}={e.get(k)}" for k in ("PRIORITY", "MESSAGE", "SERVICE", "INSTANCE", "REASON")))
sys.exit(0 if hits else 1)' "$pid_before")
    rc=$?
    local notice
    notice=$(journal -u inetinfo.service -o json --output-fields=MESSAGE,PRIORITY,SYSLOG_IDENTIFIER -g "inetinfo starting" \
        | python3 -c 'import json,sys; print(" ".join(sorted({json.loads(l).get("PRIORITY","?") for l in sys.stdin})))')
    if [ $rc -eq 0 ] && [ "$notice" = 5 ] && ! journal -u inetinfo.service -p err -q | grep -q "inetinfo starting"; then
        pass "journal priorities: the failure is at error priority (journalctl -p err -u inetinfo): $out; 'inetinfo starting' is PRIORITY=5 and not listed by -p err"
    else
        fail "journal priorities: err entries for the failure: '$out'; 'inetinfo starting' priorities: '$notice'"
        after "$since" -u inetinfo.service -o verbose | tail -60 | indent
    fi

    # What an operator sees by default: journalctl's short output shows MESSAGE only.
    out=$(after "$since" -u inetinfo.service -p err -q | grep -m1 'inetinfo\[')
    if [[ $out == *smtp* && $out == *"injected fault"* ]]; then
        pass "journalctl -p err -u inetinfo (default output) names the failed service and the reason: $out"
    else
        fail "'journalctl -p err -u inetinfo' shows '${out#*]: }' without the service or the reason (JournaldLogHandler puts the metadata in MESSAGE too)"
    fi

    echo "--- host failures (tier 2): watchdog, trap, escalation, with a client connecting every 20 ms"
    local loop_dir loop_pid
    loop_dir=$(mktemp -d "$work/loop.XXXX")
    client loop "$SMTP_PORT" "$HTTP_PORT" "$loop_dir" 20 >"$loop_dir/out" 2>&1 &
    loop_pid=$!
    sleep 0.5

    pid0=$(prop inetinfo.service MainPID); nr0=$(prop inetinfo.service NRestarts); since=$(mark)
    local t0 t1
    t0=$(date +%s%N)
    if out=$(inside inetinfoctl --socket /run/inetinfo/inetinfo.sock crash host --mode hang 2>&1) \
        && wait_for $((WATCHDOG_SEC + 10)) journal_has inetinfo.service "$since" "Watchdog timeout"; then
        t1=$(date +%s%N)
        pass "crash host --mode hang: systemd's watchdog fired after $(( (t1 - t0) / 1000000 )) ms: $(after "$since" -u inetinfo.service -g "Watchdog timeout" -q -o cat | head -1)"
    else
        fail "crash host --mode hang: no 'Watchdog timeout' in the journal ($out)"; after "$since" -u inetinfo.service | indent
    fi
    if wait_for 20 restarted $((nr0 + 1)) "$pid0" && served; then
        t1=$(date +%s%N)
        pass "after the watchdog: restarted (NRestarts $nr0 -> $(prop inetinfo.service NRestarts), MainPID $pid0 -> $(prop inetinfo.service MainPID)), SMTP 220 and HTTP 200 again, $(( (t1 - t0) / 1000000 )) ms after the hang"
    else
        fail "after the watchdog: NRestarts $(prop inetinfo.service NRestarts) (was $nr0), MainPID $(prop inetinfo.service MainPID), $(sctl is-active inetinfo.service)"
        after "$since" -u inetinfo.service | grep -v inetinfo-access | tail -30 | indent
    fi
    # The watchdog's SIGABRT must end the host at once (not only TimeoutAbortSec later, by SIGKILL).
    out=$(after "$since" -u inetinfo.service -o json --output-fields=MESSAGE | python3 -c '
import json, sys
timeout = exited = None
for line in sys.stdin:
    entry = json.loads(line); message = entry.get("MESSAGE")
    if not isinstance(message, str): continue
    if timeout is None and "Watchdog timeout" in message: timeout = int(entry["__MONOTONIC_TIMESTAMP"])
    elif timeout is not None and "Main process exited" in message:
        exited = int(entry["__MONOTONIC_TIMESTAMP"]); print((exited - timeout) // 1000, message.split(": ", 1)[-1]); break
sys.exit(0 if exited is not None and exited - timeout < 1500000 else 1)')
    rc=$?
    if [ $rc -eq 0 ]; then
        pass "the watchdog's SIGABRT ended the host at once: ${out%% *} ms later systemd logged '${out#* }'"
    else
        fail "the host outlived the watchdog's SIGABRT: ${out:-no exit logged} (ms after 'Watchdog timeout'); SIGKILL only came after TimeoutAbortSec"
        after "$since" -u inetinfo.service -g "Signal|backtrac|Killing process [0-9]+ \\(inetinfo\\)|exited" | head -8 | indent
    fi
    if after "$since" -u inetinfo.service -p crit -q -g "withholding systemd watchdog pings" | grep -q .; then
        pass "the host logged why it withheld the watchdog pings, at critical priority: $(after "$since" -u inetinfo.service -p crit -q -o cat -g "withholding" | head -1)"
    else
        fail "no 'withholding systemd watchdog pings' at critical priority"
    fi

    pid0=$(prop inetinfo.service MainPID); since=$(mark)
    t0=$(date +%s%N)
    inside inetinfoctl --socket /run/inetinfo/inetinfo.sock crash host --mode trap >/dev/null 2>&1
    if wait_for 20 restarted $((nr0 + 2)) "$pid0" && served; then
        t1=$(date +%s%N)
        pass "crash host --mode trap: $(after "$since" -u inetinfo.service -q -o cat -g "Main process exited" | head -1) -> restarted by Restart=on-failure (NRestarts $(prop inetinfo.service NRestarts), MainPID $pid0 -> $(prop inetinfo.service MainPID)), SMTP 220 and HTTP 200 again, $(( (t1 - t0) / 1000000 )) ms after the trap"
    else
        fail "crash host --mode trap: NRestarts $(prop inetinfo.service NRestarts) (expected $((nr0 + 2))), MainPID $(prop inetinfo.service MainPID), $(sctl is-active inetinfo.service)"
        after "$since" -u inetinfo.service | grep -v inetinfo-access | tail -30 | indent
    fi

    # Escalation: past its restart intensity a service with on-max-restarts = escalate ends the host
    # (exit 70), and systemd restarts it: every failure ends in recovery by some tier.
    pid0=$(prop inetinfo.service MainPID); since=$(mark)
    inside sed -i 's/^\[smtp\]$/[smtp]\nmax-restarts = 0\non-max-restarts = "escalate"/' "$config"
    sctl reload inetinfo.service
    inside inetinfoctl --socket /run/inetinfo/inetinfo.sock crash smtp --mode throw >/dev/null 2>&1
    if wait_for 20 restarted $((nr0 + 3)) "$pid0" && served \
        && [ -n "$(after "$since" -u inetinfo.service -q -g "status=70")" ]; then
        pass "escalation: smtp.max-restarts = 0 with on-max-restarts = escalate: $(after "$since" -u inetinfo.service -p crit -q -o cat -g "escalat" | head -1) -> $(after "$since" -u inetinfo.service -q -o cat -g "status=70" | head -1) -> restarted by systemd (NRestarts $(prop inetinfo.service NRestarts)), served again"
    else
        fail "escalation: NRestarts $(prop inetinfo.service NRestarts) (expected $((nr0 + 3))), MainPID $(prop inetinfo.service MainPID), $(sctl is-active inetinfo.service), '$(after "$since" -u inetinfo.service -q -o cat -g "Main process exited" | head -1)' (expected status=70)"
        after "$since" -u inetinfo.service | grep -v inetinfo-access | tail -20 | indent
    fi
    inside cp /run/inetinfo-test.toml "$config"
    sctl reload inetinfo.service

    sleep 0.5
    touch "$loop_dir/stop"
    wait "$loop_pid"
    out=$(cat "$loop_dir/loop.json" 2>/dev/null || cat "$loop_dir/out")
    if python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["refused"] == 0 and s["served"] > 0 else 1)' "$loop_dir/loop.json" 2>/dev/null; then
        pass "no refused connection throughout the three host restarts (watchdog, trap, escalation; systemd held the sockets): $out"
    else
        fail "connection loop through the host restarts: $out"
    fi
    [ -n "${INETINFO_TEST_ARTIFACTS:-}" ] && cp "$loop_dir/loop.json" "$INETINFO_TEST_ARTIFACTS/" 2>/dev/null

    echo "--- journalctl -p err -u inetinfo (what an operator sees)"
    journal -u inetinfo.service -p err -o short-monotonic | tail -12 | indent
    if journal -u inetinfo.service -p err -q -g "Watchdog timeout" | grep -q . \
        && journal -u inetinfo.service -p err -q -g "service failed" | grep -q .; then
        pass "journalctl -p err -u inetinfo lists the host's failures and systemd's watchdog timeout"
    else
        fail "journalctl -p err -u inetinfo is missing the failures"
    fi

    echo "--- MS02-012 probe against the systemd-run host"
    pid0=$(prop inetinfo.service MainPID); nr=$(prop inetinfo.service NRestarts)
    if out=$(client ms02-012 "$SMTP_PORT") && sleep 0.5 && is_active inetinfo.service active \
        && [ "$(prop inetinfo.service MainPID)" = "$pid0" ] && [ "$(prop inetinfo.service NRestarts)" = "$nr" ] && served; then
        pass "MS02-012 probe answered '503 5.5.1 BDAT expected'; the unit stays up (same MainPID $pid0, NRestarts $nr)"
        echo "$out" | indent
    else
        fail "MS02-012 probe: MainPID $pid0 -> $(prop inetinfo.service MainPID), NRestarts $nr -> $(prop inetinfo.service NRestarts)"
        echo "$out" | indent
    fi

    echo "--- process isolation: a segfault of the SMTP worker, under the same unit"
    # The unit is unchanged; the installed file says isolation = "process" (a restart applies it): only the
    # host talks to systemd (NotifyAccess=main), the workers sit in the unit's cgroup, and a crash of one
    # is the supervisor's business, not systemd's.
    inside sed -i 's/^isolation = "isolated"$/isolation = "process"/' "$config"
    sctl restart inetinfo.service
    if wait_for 15 prop_is inetinfo.service StatusText "smtp: running, http: running"; then
        pid0=$(prop inetinfo.service MainPID); nr=$(prop inetinfo.service NRestarts)
        local http_loop_dir http_loop_pid workers cgroups
        http_loop_dir=$(mktemp -d "$work/http-loop.XXXX")
        client loop 0 "$HTTP_PORT" "$http_loop_dir" 20 >"$http_loop_dir/out" 2>&1 &
        http_loop_pid=$!
        sleep 0.5
        workers=$(inside inetinfoctl --socket /run/inetinfo/inetinfo.sock status --json \
            | python3 -c 'import json,sys; print(" ".join(str(s["pid"]) for s in json.load(sys.stdin)["services"]))')
        cgroups=$(for p in $pid0 $workers; do inside grep '^0::' "/proc/$p/cgroup"; done | sort -u | tr '\n' ' ')
        inside inetinfoctl --socket /run/inetinfo/inetinfo.sock crash smtp --mode segv >/dev/null 2>&1
        wait_for 10 prop_is inetinfo.service StatusText "smtp: running (1 restart), http: running"
        sleep 0.5
        touch "$http_loop_dir/stop"
        wait "$http_loop_pid"
        out=$(inside inetinfoctl --socket /run/inetinfo/inetinfo.sock status --json \
            | python3 -c 'import json,sys; s={x["name"]: x for x in json.load(sys.stdin)["services"]}; print(s["smtp"]["lastFailure"]["reason"] if s["smtp"]["lastFailure"] else "none")')
        if [ "$(inside inetinfoctl --socket /run/inetinfo/inetinfo.sock status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["host"]["isolation"])')" = process ] \
            && [ "$(prop inetinfo.service MainPID)" = "$pid0" ] && [ "$(prop inetinfo.service NRestarts)" = "$nr" ] \
            && [ "$out" = "worker exited on signal SIGSEGV" ] && [ "$cgroups" = "0::/system.slice/inetinfo.service " ] \
            && python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["served"] > 0 and s["served"] == s["attempts"] else 1)' "$http_loop_dir/loop.json" \
            && served; then
            pass "process isolation: crash smtp --mode segv -> '$out'; same MainPID $pid0 and NRestarts $nr, workers ($workers) in the unit's cgroup ($cgroups), HTTP answered throughout: $(cat "$http_loop_dir/loop.json")"
        else
            fail "process isolation: reason '$out', MainPID $pid0 -> $(prop inetinfo.service MainPID), NRestarts $nr -> $(prop inetinfo.service NRestarts), cgroups '$cgroups', HTTP loop $(cat "$http_loop_dir/loop.json" 2>/dev/null || cat "$http_loop_dir/out")"
        fi
    else
        fail "process isolation: the host did not come up: $(prop inetinfo.service StatusText)"
        journal -u inetinfo.service -n 30 | indent
    fi
    # Crash records: the worker's segfault, and what the host trapped earlier left in /run/inetinfo/flight
    # (kept across systemd's restart by RuntimeDirectoryPreserve=restart), recorded by the next host.
    out=$(inside inetinfoctl --socket /run/inetinfo/inetinfo.sock crashes --json 2>&1)
    if printf '%s\n' "$out" | python3 -c '
import json, sys
records = [json.loads(line) for line in sys.stdin if line.strip()]
segv = any(r["service"] == "smtp" and r["signal"] == "SIGSEGV" for r in records)
host = any("ended while" in r["reason"] for r in records)
sys.exit(0 if segv and host else 1)'; then
        pass "crash records under the unit: $(printf '%s\n' "$out" | python3 -c 'import json,sys; print("; ".join(json.loads(l)["id"] + " " + json.loads(l)["reason"] for l in sys.stdin if l.strip()))')"
    else
        fail "crash records under the unit: $out"
    fi
    inside sed -i 's/^isolation = "process"$/isolation = "isolated"/' "$config"
    sctl restart inetinfo.service
    wait_for 15 prop_is inetinfo.service StatusText "smtp: running, http: running"

    echo "--- clean stop, and activation again"
    since=$(mark)
    if sctl stop inetinfo.service && is_active inetinfo.service inactive && prop_is inetinfo.service Result success \
        && journal_has inetinfo.service "$since" "inetinfo stopped" && is_active inetinfo-smtp.socket active \
        && is_active inetinfo-http.socket active; then
        pass "systemctl stop: the host stopped cleanly (Result=success, 'inetinfo stopped'); the socket units keep listening"
    else
        fail "stop: $(sctl is-active inetinfo.service), Result=$(prop inetinfo.service Result), ExecMainStatus=$(prop inetinfo.service ExecMainStatus)"
        after "$since" -u inetinfo.service | indent
    fi
    if client smtp-greeting "$SMTP_PORT" >/dev/null && wait_for 10 is_active inetinfo.service active; then
        pass "a connection to the SMTP port started the stopped host again (socket activation)"
    else
        fail "re-activation by an SMTP connection: $(sctl is-active inetinfo.service)"
    fi

    echo "--- the installed host without http.web-root (the source tree out of reach)"
    # Without http.web-root the host renders its welcome page from the template installed in
    # <prefix>/share/inetinfo/www; it must find it without the build tree.
    out=$(inside unshare --mount sh -c "mount -t tmpfs tmpfs '$repo' && mkdir -p /run/webroot-check &&
        : >/run/webroot-check/empty.toml &&
        SWIFT_BACKTRACE=enable=no exec timeout 3 /usr/local/bin/inetinfo --config /run/webroot-check/empty.toml --state-dir /run/webroot-check \
        --control-socket /run/webroot-check/ctl.sock --smtp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0" 2>&1)
    rc=$?
    if [ $rc -eq 124 ]; then
        pass "the installed host starts without http.web-root and without the build tree (ran until stopped)"
    elif [[ $out == *"could not load resource bundle"* ]]; then
        fail "without http.web-root the installed host traps at start (exit $rc): '$(echo "$out" | grep -m1 'could not load resource bundle' | cut -c1-160)…' (HTTPSettings must find <prefix>/share/inetinfo/www without Bundle.module)"
    else
        fail "the installed host without http.web-root: exit $rc"; echo "$out" | tail -5 | indent
    fi

    echo "--- systemd-analyze security (installed unit plus the test's drop-in)"
    out=$(inside systemd-analyze security --no-pager inetinfo.service 2>&1)
    local exposure
    exposure=$(echo "$out" | sed -n 's/.*Overall exposure level for inetinfo.service: \([0-9.]*\).*/\1/p')
    if [ -n "$exposure" ] && python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= 2.0 else 1)' "$exposure"; then
        pass "systemd-analyze security inetinfo.service: exposure $exposure (aim: 2.0 or lower, OK)"
    else
        fail "systemd-analyze security: exposure '${exposure:-?}' (aim: 2.0 or lower)"; echo "$out" | indent
    fi
    echo "$out" | grep -E "^✗|Overall" | indent

    if [ -n "${INETINFO_TEST_ARTIFACTS:-}" ]; then
        journal -o short-monotonic >"$INETINFO_TEST_ARTIFACTS/journal.txt" 2>&1
        journal -u inetinfo.service -o verbose >"$INETINFO_TEST_ARTIFACTS/journal-inetinfo.verbose.txt" 2>&1
    fi
    echo "checks: $passes passed, $failures failed, $xfailures expected to fail (known host issues)"
    [ $failures -eq 0 ]
}

# ---------------------------------------------------------------------------------------------------
# The child: `integration-test.sh --checks WORK SMTP_PORT HTTP_PORT`, run under timeout by the parent.

if [ "${1:-}" = --checks ]; then
    work=$2 SMTP_PORT=$3 HTTP_PORT=$4
    run_checks
    exit $?
fi

# ---------------------------------------------------------------------------------------------------
# The parent: packages, build, install, boot, checks under timeout, teardown.

started=$SECONDS
limit=${INETINFO_SYSTEMD_TEST_TIMEOUT:-300}

ensure_packages() {
    local missing=() pair command package
    for pair in unshare:util-linux nsenter:util-linux mount:mount mknod:coreutils tar:tar hostname:hostname \
                systemctl:systemd python3:python3 pkg-config:pkg-config; do
        command=${pair%%:*} package=${pair#*:}
        command -v "$command" >/dev/null || missing+=("$package")
    done
    dpkg-query -W -f='${Status}' libsystemd-dev 2>/dev/null | grep -q "install ok installed" || missing+=(libsystemd-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "integration-test: installing ${missing[*]}" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

pick_port() {
    local wanted=$1 variable=$2
    if [ -n "${!variable:-}" ]; then echo "${!variable}"; return; fi
    if "${CLIENTS[@]}" port-free "$wanted"; then echo "$wanted"; else "${CLIENTS[@]}" free-port; fi
}

[ "$(id -u)" -eq 0 ] || { echo "FAIL: integration-test must run as root"; exit 1; }
ensure_packages || { echo "FAIL: could not install the packages the test needs"; exit 1; }
harness_preflight || { echo "FAIL: this machine cannot boot the harness (see above)"; exit 1; }

work=$(harness_workdir)
cleanup() {
    local status=$?
    [ -n "${child_pid:-}" ] && kill -TERM "$child_pid" 2>/dev/null
    harness_teardown "$work"
    # The cgroup directory is gone when the teardown worked.
    return "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$repo" || exit 1
if [ "${SKIP_BUILD:-0}" = 1 ]; then install_flags=(--no-build); else install_flags=(); fi
echo "--- building and installing into a staging DESTDIR ($work/root)"
if ! timeout 3600 env DESTDIR="$work/root" PREFIX=/usr/local scripts/install.sh ${install_flags[@]+"${install_flags[@]}"} >"$work/install.log" 2>&1; then
    echo "FAIL: scripts/install.sh"; tail -40 "$work/install.log"; exit 1
fi
tail -8 "$work/install.log"
build_seconds=$((SECONDS - started))

SMTP_PORT=$(pick_port 2525 INETINFO_TEST_SMTP_PORT)
HTTP_PORT=$(pick_port 8080 INETINFO_TEST_HTTP_PORT)
"${CLIENTS[@]}" port-free "$SMTP_PORT" && "${CLIENTS[@]}" port-free "$HTTP_PORT" \
    || { echo "FAIL: ports $SMTP_PORT/$HTTP_PORT are not free"; exit 1; }
echo "--- ports: SMTP 127.0.0.1:$SMTP_PORT, HTTP 127.0.0.1:$HTTP_PORT"

harness_prepare "$work"
dropins=$work/etc-systemd/system
mkdir -p "$dropins/inetinfo.service.d"
execstart=$(sed -n 's/^ExecStart=//p' "$work/root/usr/local/lib/systemd/system/inetinfo.service")
cat >"$dropins/inetinfo.service.d/50-integration-test.conf" <<EOF
# Written by scripts/systemd/integration-test.sh: a fast watchdog, and fault injection for inetinfoctl crash.
[Service]
WatchdogSec=$WATCHDOG_SEC
ExecStart=
ExecStart=$execstart --enable-fault-injection
EOF
for pair in "smtp:$SMTP_PORT:2525" "http:$HTTP_PORT:8080"; do
    IFS=: read -r name port default <<<"$pair"
    [ "$port" = "$default" ] && continue
    mkdir -p "$dropins/inetinfo-$name.socket.d"
    printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:%s\n' "$port" >"$dropins/inetinfo-$name.socket.d/50-integration-test-port.conf"
done

echo "--- booting systemd in private namespaces"
harness_boot "$work" 30 || { echo "FAIL: the harness did not boot"; exit 1; }
boot_done=$SECONDS

timeout -k 10 "$limit" bash "$here/integration-test.sh" --checks "$work" "$SMTP_PORT" "$HTTP_PORT" &
child_pid=$!
wait "$child_pid"
result=$?
child_pid=
if [ $result -eq 124 ] || [ $result -eq 137 ]; then
    echo "FAIL: the checks did not finish within ${limit}s"
fi
echo "--- teardown"
harness_teardown "$work"
echo "integration-test: build+install $build_seconds s, checks $((SECONDS - boot_done)) s, total $((SECONDS - started)) s"
if [ $result -eq 0 ]; then echo "integration-test: PASS"; else echo "integration-test: FAIL"; fi
exit $result
