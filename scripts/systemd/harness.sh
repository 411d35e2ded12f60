#!/usr/bin/env bash
# A real systemd (PID 1 of private namespaces) for tests, booted without changing the machine.
# Source this file; scripts/systemd/integration-test.sh and check-units.sh use it.
#
#   work=$(harness_workdir)            # /tmp/inetinfo-systemd.XXXXXX
#   harness_prepare "$work"            # the harness's /etc/systemd additions (WORK/etc-systemd)
#   (stage an install in WORK/root, drop-ins in WORK/etc-systemd/system/UNIT.d/; or mkdir
#    WORK/system for writable /usr and /etc overlays, to install a Debian package inside)
#   harness_boot "$work"               # boots; WORK/systemd.pid is systemd's pid on the machine
#   harness_run "$work" systemctl …    # runs a command in systemd's namespaces
#   harness_teardown "$work"           # always (trap): stops systemd, kills what is left by pid,
#                                      # removes its cgroup subtree and WORK
#
# How it is contained (the measured facts behind it: shared/notes/systemd-in-namespaces.md):
# - unshare --pid --fork --mount --propagation private --cgroup --uts --mount-proc; the network
#   namespace stays shared, so tests outside reach the units' ports on 127.0.0.1;
# - boot-inside.sh, as PID 1 of the new namespaces: mount --make-rprivate /, a tmpfs /run, /etc
#   read-only, a tmpfs copy of /etc/systemd without system/, an overlay /var and an overlay of the
#   staged install on /usr/local (upper layers on the private /run; with WORK/system, /usr and /etc
#   are writable overlays as well, for scripts/systemd/deb-test.sh), a private /dev (null, zero,
#   full, random, urandom, tty, devpts, shm), /sys and /proc/sys read-only, a fresh cgroup2 on
#   /sys/fs/cgroup rooted at a directory created here under the machine's cgroup2 hierarchy and
#   removed at the end, a private hostname; then it execs systemd with container=other and
#   SYSTEMD_GENERATOR_PATH pointed at an empty folder;
# - the harness's default target wants only a reduced sysinit.target (journald); the early-boot units
#   that would touch the machine are masked; DefaultLimitCORE=0; a volatile journal.
# /tmp stays shared: units with PrivateTmp= create folders under the real /tmp (systemd removes them
# when the unit stops; the teardown removes any that a killed systemd left).

HARNESS_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

harness_log() { echo "harness: $*" >&2; }

harness_workdir() { mktemp -d /tmp/inetinfo-systemd.XXXXXX; }

# Checks that this machine can run the harness; prints why not and returns 1 otherwise.
harness_preflight() {
    local missing=() command
    [ "$(id -u)" -eq 0 ] || { harness_log "must run as root (it creates namespaces and a cgroup)"; return 1; }
    if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
        harness_log "PID 1 of this machine is systemd: this harness is for machines where it is not" \
            "(it would create a cgroup outside systemd's control); run the units with the machine's systemd instead"
        return 1
    fi
    for command in unshare nsenter mount mknod tar /lib/systemd/systemd systemctl journalctl systemd-analyze; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    [ ${#missing[@]} -eq 0 ] || { harness_log "missing: ${missing[*]}"; return 1; }
    harness_cgroup_parent >/dev/null || return 1
}

# The machine's cgroup2 hierarchy: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
harness_cgroup_parent() {
    local candidate
    for candidate in /sys/fs/cgroup /sys/fs/cgroup/unified; do
        if [ "$(stat -fc %T "$candidate" 2>/dev/null)" = cgroup2fs ]; then echo "$candidate"; return 0; fi
    done
    harness_log "no cgroup2 hierarchy under /sys/fs/cgroup"
    return 1
}

# Units that would touch the machine (or only slow the boot down) if anything pulled them in.
HARNESS_MASKED=(
    systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service systemd-tmpfiles-setup-dev-early.service
    systemd-tmpfiles-clean.service systemd-tmpfiles-clean.timer
    systemd-sysctl.service systemd-modules-load.service kmod-static-nodes.service
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount
    systemd-remount-fs.service systemd-fsck-root.service systemd-fsck@.service systemd-growfs-root.service
    systemd-random-seed.service systemd-machine-id-commit.service systemd-firstboot.service
    systemd-sysusers.service ldconfig.service systemd-update-done.service systemd-hwdb-update.service
    systemd-journal-catalog-update.service systemd-journal-flush.service
    systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service
    systemd-udevd-control.socket systemd-udevd-kernel.socket
    systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service
    systemd-resolved.service systemd-timesyncd.service systemd-time-wait-sync.service
    systemd-update-utmp.service systemd-update-utmp-runlevel.service
    systemd-logind.service systemd-user-sessions.service systemd-hostnamed.service
    systemd-pstore.service systemd-repart.service systemd-pcrphase.service systemd-pcrphase-sysinit.service
    systemd-boot-system-token.service systemd-oomd.service systemd-oomd.socket
    systemd-journald-audit.socket systemd-initctl.socket systemd-ask-password-console.path
    systemd-ask-password-wall.path dbus.socket dbus.service
    getty.target getty-static.service console-getty.service serial-getty@.service getty@.service
    dev-hugepages.mount dev-mqueue.mount sys-fs-fuse-connections.mount sys-kernel-config.mount
    sys-kernel-debug.mount sys-kernel-tracing.mount tmp.mount
    cryptsetup.target veritysetup.target integritysetup.target remote-fs.target swap.target
)

# Writes the harness's additions to /etc/systemd into WORK/etc-systemd.
harness_prepare() {
    local work=$1 unit wants
    mkdir -p "$work/etc-systemd/system" "$work/etc-systemd/system.conf.d" "$work/etc-systemd/journald.conf.d"
    cat >"$work/etc-systemd/system/inetinfo-harness.target" <<'EOF'
[Unit]
Description=inetinfo test harness (scripts/systemd/harness.sh)
Requires=sysinit.target
After=sysinit.target
AllowIsolate=yes
EOF
    ln -sf inetinfo-harness.target "$work/etc-systemd/system/default.target"
    # Replaces the vendor sysinit.target: only the journal. (Its .wants/ entries still merge in;
    # those are masked below unless they are journald's.)
    cat >"$work/etc-systemd/system/sysinit.target" <<'EOF'
[Unit]
Description=System Initialization (inetinfo harness: journald only)
Wants=systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket
After=systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket
Conflicts=emergency.service emergency.target
Before=emergency.service emergency.target
EOF
    for unit in "${HARNESS_MASKED[@]}"; do ln -sf /dev/null "$work/etc-systemd/system/$unit"; done
    for wants in /lib/systemd/system/sysinit.target.wants /usr/lib/systemd/system/sysinit.target.wants \
                 /lib/systemd/system/sockets.target.wants /usr/lib/systemd/system/sockets.target.wants; do
        [ -d "$wants" ] || continue
        for unit in "$wants"/*; do
            [ -e "$unit" ] || [ -L "$unit" ] || continue
            unit=${unit##*/}
            case $unit in systemd-journald.service|systemd-journald.socket|systemd-journald-dev-log.socket) continue ;; esac
            ln -sf /dev/null "$work/etc-systemd/system/$unit"
        done
    done
    cat >"$work/etc-systemd/system.conf.d/50-inetinfo-harness.conf" <<'EOF'
[Manager]
# No core files from watchdog kills and traps.
DefaultLimitCORE=0
ShowStatus=no
LogColor=no
RuntimeWatchdogSec=off
RebootWatchdogSec=off
KExecWatchdogSec=off
CtrlAltDelBurstAction=none
DefaultTimeoutStopSec=10s
EOF
    cat >"$work/etc-systemd/journald.conf.d/50-inetinfo-harness.conf" <<'EOF'
[Journal]
Storage=volatile
RuntimeMaxUse=64M
RateLimitIntervalSec=0
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
EOF
}

harness_pid_alive() { [ -n "${1:-}" ] && [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# Boots systemd and waits until it reports running (or degraded). Must run in the shell that will
# call harness_teardown (unshare is its child, so it can reap it).
harness_boot() {
    local work=$1 limit=${2:-30} parent cg upid sdpid child state deadline
    parent=$(harness_cgroup_parent) || return 1
    cg=$parent/inetinfo-harness.${work##*.}
    mkdir "$cg" || return 1
    echo "$cg" >"$work/cgroup"
    # Folders PrivateTmp= may leave in the real /tmp, to tell ours apart at the end.
    (shopt -s nullglob; for d in /tmp/systemd-private-*; do echo "$d"; done) >"$work/tmp-before"
    # The shell moves itself into the new cgroup, then becomes unshare: the cgroup namespace is rooted there.
    bash -c 'echo $$ >"$1/cgroup.procs" && exec unshare --pid --fork --kill-child=SIGKILL --mount \
                 --propagation private --cgroup --uts --mount-proc bash "$2/boot-inside.sh" "$3"' \
        harness "$cg" "$HARNESS_SCRIPTS" "$work" </dev/null >"$work/console.log" 2>&1 &
    upid=$!
    echo "$upid" >"$work/unshare.pid"
    deadline=$((SECONDS + limit))
    sdpid=
    while [ $SECONDS -lt $deadline ] && harness_pid_alive "$upid"; do
        child=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null | awk '{print $1}')
        if [ -n "$child" ] && [ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ]; then sdpid=$child; break; fi
        sleep 0.05
    done
    if [ -z "$sdpid" ]; then
        harness_log "systemd did not start; console:"; sed 's/^/  | /' "$work/console.log" >&2
        return 1
    fi
    echo "$sdpid" >"$work/systemd.pid"
    # is-system-running --wait needs the manager's private socket, which appears a moment after exec.
    while [ $SECONDS -lt $deadline ]; do
        state=$(timeout 10 nsenter -t "$sdpid" -p -m -u -C -- systemctl is-system-running --wait 2>/dev/null) || true
        case $state in running|degraded) break ;; esac
        harness_pid_alive "$sdpid" || break
        sleep 0.1
    done
    case $state in
        running) harness_log "systemd (pid $sdpid on this machine) is up: $state" ;;
        degraded)
            harness_log "systemd (pid $sdpid) is up but degraded; failed units:"
            harness_run "$work" systemctl --failed --no-legend >&2 || true ;;
        *)
            harness_log "systemd did not finish booting within ${limit}s (state: ${state:-none}); console:"
            sed 's/^/  | /' "$work/console.log" >&2
            return 1 ;;
    esac
}

# Runs a command inside systemd's namespaces (pid, mount, uts, cgroup).
harness_run() {
    local work=$1; shift
    SYSTEMD_PAGER='' SYSTEMD_COLORS=0 SYSTEMD_LESS='' nsenter -t "$(cat "$work/systemd.pid")" -p -m -u -C -- "$@"
}

# Stops systemd, kills whatever is left by pid, removes the cgroup subtree, PrivateTmp leftovers and
# WORK (kept when HARNESS_KEEP=1). Safe to call more than once and after a failed boot.
harness_teardown() {
    local work=$1 upid sdpid cg pid pids d
    [ -n "$work" ] && [ -d "$work" ] || return 0
    upid=$(cat "$work/unshare.pid" 2>/dev/null || true)
    sdpid=$(cat "$work/systemd.pid" 2>/dev/null || true)
    cg=$(cat "$work/cgroup" 2>/dev/null || true)
    # Only the systemd this harness started: a child of our unshare, named systemd.
    if [ -n "$sdpid" ] && harness_pid_alive "$sdpid" && [ "$(cat "/proc/$sdpid/comm" 2>/dev/null)" = systemd ] \
        && [ "$(awk '/^PPid:/{print $2}' "/proc/$sdpid/status" 2>/dev/null)" = "$upid" ]; then
        timeout 10 nsenter -t "$sdpid" -p -m -u -C -- systemctl exit >/dev/null 2>&1 || true
        for _ in $(seq 100); do harness_pid_alive "$sdpid" || break; sleep 0.1; done
        if harness_pid_alive "$sdpid"; then
            harness_log "systemd (pid $sdpid) did not exit within 10 s; killing it (and its pid namespace)"
            kill -KILL "$sdpid" 2>/dev/null || true
        fi
    fi
    if [ -n "$upid" ]; then
        for _ in $(seq 100); do harness_pid_alive "$upid" || break; sleep 0.1; done
        harness_pid_alive "$upid" && kill -KILL "$upid" 2>/dev/null
        wait "$upid" 2>/dev/null || true
    fi
    if [ -n "$cg" ] && [ -d "$cg" ]; then
        # Anything still in our cgroup subtree was started by this harness.
        for _ in $(seq 50); do
            pids=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
            [ -z "$pids" ] && break
            for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
            sleep 0.1
        done
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ -d "$cg" ] && harness_log "could not remove the cgroup $cg"
    fi
    if [ -f "$work/tmp-before" ]; then
        for d in /tmp/systemd-private-*-inetinfo*.service-*; do
            [ -e "$d" ] || continue
            grep -qxF "$d" "$work/tmp-before" || rm -rf "$d"
        done
    fi
    if [ "${HARNESS_KEEP:-0}" = 1 ]; then
        harness_log "kept $work"
    else
        rm -rf "$work"
    fi
}
