#!/usr/bin/env bash
# Test of the Debian package (docs/packaging.md): builds it with scripts/package-deb.sh, checks its
# metadata, then installs it with dpkg inside a real systemd booted in private namespaces
# (scripts/systemd/harness.sh, with writable /usr and /etc overlays: the machine is not changed) and
# runs the host from it: the units load and nothing is enabled or started by the installation, the
# socket units and the service start, inetinfoctl answers, SMTP accepts a message, HTTP answers 200, the
# optional admin socket serves its probes, the manual pages open, the conffile is where it belongs; then
# removal and purge, which must keep the mail.
#
#   scripts/systemd/deb-test.sh            # from anywhere; as root; no arguments
#
# The package is built from the release binaries of .build-systemd when they exist (as SKIP_BUILD=1 does
# for integration-test.sh); SKIP_BUILD=0 builds them first, SKIP_BUILD=1 insists on reusing them. The
# checks inside run under `timeout` (INETINFO_DEB_TEST_TIMEOUT, default 300 s). Every check prints a
# PASS or FAIL line (SKIP when it does not apply); the exit status is 0 only if all passed. The teardown
# always runs (trap). Ports: 127.0.0.1:2525, :8080 and :9464 (admin) as installed, else free ports
# through socket-unit drop-ins (or INETINFO_TEST_SMTP_PORT, INETINFO_TEST_HTTP_PORT,
# INETINFO_TEST_ADMIN_PORT). INETINFO_DEB_OUTDIR=DIR keeps the .deb there; INETINFO_DEB=FILE tests that
# package instead of building one; HARNESS_KEEP=1 keeps the work directory.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=harness.sh
source "$here/harness.sh"

CLIENTS=("python3" "$here/clients.py")
SOCKET=/run/inetinfo/inetinfo.sock
STATE=/var/lib/private/inetinfo

passes=0
failures=0
pass() { echo "PASS: $*"; passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
skip() { echo "SKIP: $*"; }
indent() { sed 's/^/    | /'; }

inside() { harness_run "$work" timeout 60 "$@"; }
sctl() { inside systemctl "$@"; }
prop() { sctl show -p "$2" --value "$1"; }
client() { timeout 40 "${CLIENTS[@]}" "$@"; }
wait_for() {
    local limit=$1 deadline; shift
    deadline=$(($(date +%s%N) / 1000000 + limit * 1000))
    until "$@" >/dev/null 2>&1; do
        [ $(($(date +%s%N) / 1000000)) -lt $deadline ] || return 1
        sleep 0.1
    done
}
is_active() { [ "$(sctl is-active "$1")" = "$2" ]; }
all_active() { local unit; for unit in "$@"; do is_active "$unit" active || return 1; done; }
mark() { date +%s.%6N; }
package_status() { inside dpkg-query -W -f='${db:Status-Abbrev}' inetinfo 2>/dev/null | tr -d ' '; }

# ---------------------------------------------------------------------------------------------------
# The checks inside the booted systemd (a child process under `timeout`).

run_checks() {
    local out rc since units sockets optional unit state enabled file conffile_md5 pid
    # The package's units (the service and every socket unit it ships) from its file list.
    units=$(dpkg-deb -c "$deb" | awk '{print $NF}' | sed -n 's|^\./usr/lib/systemd/system/||p' | grep . | sort)

    echo "--- dpkg -i inside the namespaces"
    since=$(mark)
    if out=$(inside dpkg -i "$deb" 2>&1) && [ "$(package_status)" = ii ]; then
        pass "dpkg -i $(basename "$deb"): installed (status ii)"
    else
        fail "dpkg -i: status '$(package_status)'"; echo "$out" | indent
        return 1
    fi
    if [ -n "$(inside journalctl --no-pager -q --since "@$since" -o cat -g '^Reloading' 2>/dev/null)" ] \
        && [ "$(prop inetinfo.service LoadState)" = loaded ] \
        && [[ $(prop inetinfo.service FragmentPath) =~ ^(/usr)?/lib/systemd/system/inetinfo.service$ ]] \
        && [ "$(prop inetinfo.service NeedDaemonReload)" = no ]; then
        pass "postinst ran systemctl daemon-reload (systemd logged 'Reloading'); inetinfo.service loaded from /usr/lib/systemd/system"
    else
        fail "after dpkg -i: LoadState $(prop inetinfo.service LoadState), FragmentPath $(prop inetinfo.service FragmentPath), NeedDaemonReload $(prop inetinfo.service NeedDaemonReload)"
    fi
    out='' rc=0
    for unit in $units; do
        enabled=$(sctl is-enabled "$unit" 2>&1)
        state=$(sctl is-active "$unit" 2>&1)
        out+="$unit: $enabled, $state; "
        case $enabled in disabled|static) ;; *) rc=1 ;; esac
        [ "$state" = inactive ] || rc=1
    done
    if [ $rc -eq 0 ] && [ -n "$units" ]; then
        pass "the installation enabled and started nothing: ${out%; }"
    else
        fail "after dpkg -i: ${out%; }"
    fi

    echo "--- the conffile and the installed files"
    conffile_md5=$(inside dpkg-query -W -f='${Conffiles}' inetinfo | awk '$1 == "/etc/inetinfo/inetinfo.toml" {print $2}')
    if [ -n "$conffile_md5" ] && [ "$(inside md5sum /etc/inetinfo/inetinfo.toml | cut -d' ' -f1)" = "$conffile_md5" ] \
        && inside grep -q '^recipients = "existing"' /etc/inetinfo/inetinfo.toml \
        && [[ $(prop inetinfo.service ExecStart) == *"argv[]=/usr/bin/inetinfo --config /etc/inetinfo/inetinfo.toml ;"* ]]; then
        pass "conffile /etc/inetinfo/inetinfo.toml registered with dpkg (md5 $conffile_md5) and the one the unit reads"
    else
        fail "conffile: dpkg says '$conffile_md5'; $(inside ls -l /etc/inetinfo 2>&1 | tr '\n' ' '); ExecStart $(sctl show -p ExecStart --value inetinfo.service)"
    fi
    if out=$(inside dpkg --verify inetinfo 2>&1) && [ -z "$out" ]; then
        pass "dpkg --verify inetinfo: every installed file matches the package's md5sums"
    else
        fail "dpkg --verify inetinfo:"; echo "$out" | indent
    fi

    echo "--- the manual pages"
    out=
    for file in /usr/share/man/man8/inetinfo.8.gz /usr/share/man/man8/inetinfoctl.8.gz /usr/share/man/man5/inetinfo.toml.5.gz; do
        if ! rc=$(inside env MANWIDTH=80 man --warnings -E UTF-8 -l "$file" 2>&1 >/dev/null); then
            out+="$file: man failed; "
        elif [ -n "$rc" ]; then
            out+="$file: $rc; "
        fi
    done
    local found
    found=$(inside man -w inetinfo inetinfoctl inetinfo.toml 2>&1 | tr '\n' ' ')
    if [ -z "$out" ] && [[ $found == *man8/inetinfo.8.gz*man8/inetinfoctl.8.gz*man5/inetinfo.toml.5.gz* ]] \
        && inside env MANWIDTH=80 man -l /usr/share/man/man5/inetinfo.toml.5.gz 2>/dev/null | grep -q 'admin.allow-remote'; then
        pass "man -l opens the three installed pages without a warning; man -w finds them: $found"
    else
        fail "manual pages: ${out}man -w: $found"
    fi

    echo "--- the host from the package, under systemd"
    # The socket units the service requires (smtp, http) are enabled as docs/operations.md says; an
    # optional one (the admin socket) afterwards, on its own.
    sockets=$(prop inetinfo.service Requires | tr ' ' '\n' | grep '\.socket$' | sort | tr '\n' ' ')
    optional=$(echo "$units" | grep '\.socket$' | grep -vxF -f <(echo "$sockets" | tr ' ' '\n' | grep .) | tr '\n' ' ')
    # shellcheck disable=SC2086
    if sctl enable --now $sockets >/dev/null 2>&1 && wait_for 10 all_active $sockets; then
        pass "systemctl enable --now $sockets: active"
    else
        fail "socket units: $(sctl is-active $sockets | tr '\n' ' ')"; sctl status $sockets 2>&1 | indent
    fi
    if sctl start inetinfo.service && wait_for 30 is_active inetinfo.service active; then
        pass "systemctl start inetinfo.service: active (MainPID $(prop inetinfo.service MainPID), StatusText '$(prop inetinfo.service StatusText)')"
    else
        fail "inetinfo.service is $(sctl is-active inetinfo.service)"
        sctl status inetinfo.service 2>&1 | indent; inside journalctl --no-pager -u inetinfo -n 30 | indent
    fi
    if out=$(inside /usr/bin/inetinfoctl --socket "$SOCKET" status 2>&1); then
        pass "/usr/bin/inetinfoctl --socket $SOCKET status: exit 0"; echo "$out" | indent
    else
        fail "inetinfoctl status: exit $?"; echo "$out" | indent
    fi
    if out=$(inside /usr/bin/inetinfo --version 2>&1); then
        if [[ $out == *"$version"* ]]; then
            pass "/usr/bin/inetinfo --version: '$out' (the package's version is $version)"
        else
            fail "/usr/bin/inetinfo --version says '$out'; the package's version is $version"
        fi
    elif [[ $out == *"nknown option"* ]]; then
        skip "/usr/bin/inetinfo --version: these binaries predate the flag (rebuild .build-systemd)"
    else
        fail "/usr/bin/inetinfo --version: $out"
    fi
    # (The installed configuration accepts postmaster always; its Maildir is created by its first message.)
    # With smtp.commit = journal the file lands in new/ just after the 250: look for it up to 5 s.
    file=""
    if out=$(client send-mail "$SMTP_PORT" postmaster@localhost); then
        for _ in $(seq 50); do
            file=$(inside find "$STATE/mail/localhost/postmaster/new" -type f 2>/dev/null || true)
            [ -n "$file" ] && break
            sleep 0.1
        done
    fi
    if [ -n "$file" ]; then
        pass "SMTP on 127.0.0.1:$SMTP_PORT accepted a message ($out); delivered to $file"
    else
        fail "SMTP delivery: $out; $(inside find "$STATE" -maxdepth 4 2>&1 | tr '\n' ' ')"
    fi
    if out=$(client http-get "$HTTP_PORT"); then
        pass "HTTP GET / on 127.0.0.1:$HTTP_PORT: $out"
    else
        fail "HTTP GET /: $out"
    fi
    pid=$(prop inetinfo.service MainPID)
    if sctl reload inetinfo.service && is_active inetinfo.service active && [ "$(prop inetinfo.service MainPID)" = "$pid" ]; then
        pass "systemctl reload inetinfo (ExecReload=/usr/bin/inetinfoctl reload): the same host goes on"
    else
        fail "systemctl reload: $(sctl is-active inetinfo.service), MainPID $pid -> $(prop inetinfo.service MainPID)"
    fi

    for unit in $optional; do
        local name port line path
        name=$(inside sed -n 's/^FileDescriptorName=//p' "/usr/lib/systemd/system/$unit")
        if [ "$name" != admin ]; then
            skip "$unit (FileDescriptorName=$name): no check for it here"
            continue
        fi
        port=$ADMIN_PORT out=''
        # systemd refuses to start a socket unit while its service runs ("Socket service inetinfo.service
        # already active, refusing"): the host is stopped first (its other sockets stay open meanwhile).
        if sctl stop inetinfo.service && sctl enable --now "$unit" >/dev/null 2>&1 && sctl start inetinfo.service \
            && wait_for 30 is_active inetinfo.service active; then
            rc=0
            for path in /healthz /readyz /metrics; do
                line=$(client http-get "$port" "$path" 2>&1) || rc=1
                out+="$path: ${line##*$'\n'}; "
            done
        else
            rc=1
        fi
        if [ $rc -eq 0 ]; then
            pass "optional $unit: inetinfo.service stopped, the socket enabled and started, the host started with it; on 127.0.0.1:$port: ${out%; }"
        else
            fail "optional $unit: $(sctl is-active "$unit"), inetinfo.service $(sctl is-active inetinfo.service); on :$port: ${out%; }"
            inside journalctl --no-pager -u inetinfo -n 15 | indent
            sctl stop "$unit" >/dev/null 2>&1; sctl disable "$unit" >/dev/null 2>&1
            sctl reset-failed inetinfo.service >/dev/null 2>&1; sctl start inetinfo.service >/dev/null 2>&1
        fi
    done

    echo "--- dpkg -r: units stopped, conffile and mail kept"
    if out=$(inside dpkg -r inetinfo 2>&1) && [ "$(package_status)" = rc ]; then
        pass "dpkg -r inetinfo: removed, configuration kept (status rc)"
    else
        fail "dpkg -r: status '$(package_status)'"; echo "$out" | indent
    fi
    out=
    for unit in $units; do out+="$unit: $(sctl is-active "$unit" 2>&1); "; done
    if [[ $out != *": active"* && $out != *activating* ]] && ! inside test -e /usr/bin/inetinfo \
        && inside test -f /etc/inetinfo/inetinfo.toml && [ -n "$(inside find "$STATE/mail" -type f 2>/dev/null)" ]; then
        pass "after removal: ${out%; }; /usr/bin/inetinfo gone; /etc/inetinfo/inetinfo.toml and the mail kept"
    else
        fail "after removal: ${out%; }; $(inside ls /usr/bin/inetinfo /etc/inetinfo 2>&1 | tr '\n' ' ')"
    fi

    echo "--- dpkg -P: conffile and enablement links gone, mail kept"
    if out=$(inside dpkg -P inetinfo 2>&1); then rc=0; else rc=$?; fi
    state=$(package_status)
    if [ $rc -eq 0 ] && { [ -z "$state" ] || [ "$state" = un ] || [ "$state" = pn ]; }; then
        pass "dpkg -P inetinfo: purged$(echo "$out" | grep -m1 'kept' | sed 's/^/ (/; s/$/)/')"
    else
        fail "dpkg -P: exit $rc, status '$state'"; echo "$out" | indent
    fi
    local links
    links=$(inside find /etc/systemd/system \( -name inetinfo.service -o -name 'inetinfo-*.socket' \) ! -path '*.d/*' 2>/dev/null | tr '\n' ' ')
    if ! inside test -e /etc/inetinfo && [ -z "$links" ] && [ -n "$(inside find "$STATE/mail" -type f 2>/dev/null)" ]; then
        pass "after purge: /etc/inetinfo gone, no enablement links left, the mail in $STATE kept"
    else
        fail "after purge: $(inside ls -la /etc/inetinfo 2>&1 | tr '\n' ' '); links: $links; mail: $(inside find "$STATE" -type f 2>&1 | head -3 | tr '\n' ' ')"
    fi

    echo "checks inside: $passes passed, $failures failed"
    [ $failures -eq 0 ]
}

if [ "${1:-}" = --checks ]; then
    work=$2 deb=$3 version=$4 SMTP_PORT=$5 HTTP_PORT=$6 ADMIN_PORT=$7
    run_checks
    exit $?
fi

# ---------------------------------------------------------------------------------------------------
# The parent: build the package, check its metadata, boot, run the checks under timeout, teardown.

started=$SECONDS
limit=${INETINFO_DEB_TEST_TIMEOUT:-300}

[ "$(id -u)" -eq 0 ] || { echo "FAIL: deb-test must run as root"; exit 1; }
missing=()
for pair in dpkg-deb:dpkg dpkg-shlibdeps:dpkg-dev objdump:binutils man:man-db python3:python3 systemctl:systemd \
            unshare:util-linux nsenter:util-linux; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deb-test: installing ${missing[*]}" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
        || { echo "FAIL: could not install ${missing[*]}"; exit 1; }
fi
harness_preflight || { echo "FAIL: this machine cannot boot the harness (see above)"; exit 1; }

work=$(harness_workdir)
cleanup() {
    local status=$?
    [ -n "${child_pid:-}" ] && kill -TERM "$child_pid" 2>/dev/null
    harness_teardown "$work"
    return "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$repo" || exit 1
scratch_bin=$repo/.build-systemd/release
case ${SKIP_BUILD:-auto} in
    1) package_flags=(--no-build) ;;
    0) package_flags=() ;;
    *) if [ -x "$scratch_bin/inetinfo" ] && [ -x "$scratch_bin/inetinfoctl" ]; then package_flags=(--no-build); else package_flags=(); fi ;;
esac
outdir=${INETINFO_DEB_OUTDIR:-$work/deb}
t0=$SECONDS
if [ -n "${INETINFO_DEB:-}" ]; then
    deb=$(cd "$(dirname "$INETINFO_DEB")" && pwd)/$(basename "$INETINFO_DEB")
    [ -f "$deb" ] || { echo "FAIL: INETINFO_DEB=$INETINFO_DEB does not exist"; exit 1; }
    echo "--- testing $deb (INETINFO_DEB; not built here)"
else
    echo "--- scripts/package-deb.sh ${package_flags[*]} $outdir"
    if ! deb=$(timeout 3600 nice -n 10 scripts/package-deb.sh ${package_flags[@]+"${package_flags[@]}"} "$outdir" 2>"$work/package.log" | tail -1) \
        || [ ! -f "$deb" ]; then
        echo "FAIL: scripts/package-deb.sh"; tail -30 "$work/package.log"; exit 1
    fi
fi
package_seconds=$((SECONDS - t0))
version=$(sed -n 's/^[[:space:]]*public static let version = "\([^"]*\)".*/\1/p' Sources/InetinfoHost/Version.swift)
arch=$(dpkg --print-architecture)
if [ -n "${INETINFO_DEB:-}" ]; then
    pass "given $(basename "$deb") ($(du -h "$deb" | cut -f1))"
else
    pass "built $(basename "$deb") ($(du -h "$deb" | cut -f1)) in ${package_seconds}s"
fi

echo "--- the package's metadata (dpkg-deb -I / -c)"
field() { dpkg-deb -f "$deb" "$1"; }
if [ "$(basename "$deb")" = "inetinfo_${version}_${arch}.deb" ] && [ "$(field Package)" = inetinfo ] \
    && [ "$(field Version)" = "$version" ] && [ "$(field Architecture)" = "$arch" ] && [ "$(field Section)" = mail ] \
    && [ "$(field Priority)" = optional ] && [ -n "$(field Maintainer)" ] && [ -n "$(field Description)" ] \
    && [[ $(field Depends) == *libsystemd0* && $(field Depends) == *libc6* ]]; then
    pass "control: inetinfo $version $arch, Section mail, Priority optional, Depends: $(field Depends)"
else
    fail "control fields:"; dpkg-deb -f "$deb" | indent
fi
control=$work/control
dpkg-deb -e "$deb" "$control"
if [ "$(cat "$control/conffiles" 2>/dev/null)" = /etc/inetinfo/inetinfo.toml ]; then
    pass "DEBIAN/conffiles: /etc/inetinfo/inetinfo.toml"
else
    fail "DEBIAN/conffiles: '$(cat "$control/conffiles" 2>&1)'"
fi
contents=$(dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|')
expected=(/usr/bin/inetinfo /usr/bin/inetinfoctl /usr/lib/systemd/system/inetinfo.service /etc/inetinfo/inetinfo.toml
          /usr/share/man/man8/inetinfo.8.gz /usr/share/man/man8/inetinfoctl.8.gz /usr/share/man/man5/inetinfo.toml.5.gz
          /usr/share/doc/inetinfo/copyright /usr/share/doc/inetinfo/changelog.gz /usr/share/doc/inetinfo/operations.md
          /usr/share/inetinfo/www/index.html)
for unit in units/*.service units/*.socket; do expected+=("/usr/lib/systemd/system/${unit#units/}"); done
absent=()
for path in "${expected[@]}"; do grep -qxF "$path" <<<"$contents" || absent+=("$path"); done
if [ ${#absent[@]} -eq 0 ]; then
    pass "contents: binaries, $(ls units/*.service units/*.socket | wc -l) units, conffile, 3 manual pages, copyright, changelog, web root"
else
    fail "missing from the package: ${absent[*]}"
fi
# Nothing enabled by the package itself: no enablement links, no preset, no maintainer script that
# enables or starts a unit; nothing under /var (the state directory belongs to the operator).
enabling=$(grep -E '^/(etc/systemd|usr/lib/systemd/system/[^/]+\.wants|usr/lib/systemd/system-preset|var/)' <<<"$contents" || true)
# (Comments and quoted strings, such as a hint printed for the operator, are left out.)
scripted=$(cat "$control"/postinst "$control"/preinst "$control"/prerm "$control"/postrm 2>/dev/null \
           | sed -e 's/#.*//' -e 's/"[^"]*"//g' -e "s/'[^']*'//g" \
           | grep -E 'systemctl.*\b(enable|start|restart|try-restart|reenable|preset)\b|deb-systemd-(helper|invoke)' || true)
if [ -z "$enabling" ] && [ -z "$scripted" ]; then
    pass "no enabled units: no .wants links, presets or /var files in the package; no maintainer script enables or starts anything"
else
    fail "the package enables something: $enabling $scripted"
fi
for file in "$control"/postinst "$control"/prerm "$control"/postrm; do
    sh -n "$file" || fail "$(basename "$file") does not parse"
done
if command -v lintian >/dev/null; then
    out=$(lintian --no-tag-display-limit "$deb" 2>&1 | grep -E '^[EW]: ')
    if [ -z "$out" ]; then
        pass "lintian: no errors, no warnings ($(lintian --display-info "$deb" 2>/dev/null | grep -c '^I: ') info tags, see docs/packaging.md)"
    else
        fail "lintian:"; echo "$out" | indent
    fi
else
    skip "lintian is not installed"
fi

pick_port() {
    local wanted=$1 variable=$2
    if [ -n "${!variable:-}" ]; then echo "${!variable}"; return; fi
    if "${CLIENTS[@]}" port-free "$wanted"; then echo "$wanted"; else "${CLIENTS[@]}" free-port; fi
}
SMTP_PORT=$(pick_port 2525 INETINFO_TEST_SMTP_PORT)
HTTP_PORT=$(pick_port 8080 INETINFO_TEST_HTTP_PORT)
ADMIN_PORT=$(pick_port 9464 INETINFO_TEST_ADMIN_PORT)
echo "--- ports: SMTP 127.0.0.1:$SMTP_PORT, HTTP 127.0.0.1:$HTTP_PORT, admin 127.0.0.1:$ADMIN_PORT"

harness_prepare "$work"
# Writable /usr and /etc overlays inside (boot-inside.sh): dpkg installs there, not on the machine.
mkdir -p "$work/system"
for pair in "smtp:$SMTP_PORT:2525" "http:$HTTP_PORT:8080" "admin:$ADMIN_PORT:9464"; do
    IFS=: read -r name port default <<<"$pair"
    [ "$port" = "$default" ] && continue
    mkdir -p "$work/etc-systemd/system/inetinfo-$name.socket.d"
    printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:%s\n' "$port" \
        >"$work/etc-systemd/system/inetinfo-$name.socket.d/50-deb-test-port.conf"
done

echo "--- booting systemd in private namespaces"
harness_boot "$work" 30 || { echo "FAIL: the harness did not boot"; exit 1; }
boot_done=$SECONDS

timeout -k 10 "$limit" bash "$here/deb-test.sh" --checks "$work" "$deb" "$version" "$SMTP_PORT" "$HTTP_PORT" "$ADMIN_PORT" &
child_pid=$!
wait "$child_pid"
result=$?
child_pid=
if [ $result -eq 124 ] || [ $result -eq 137 ]; then
    echo "FAIL: the checks did not finish within ${limit}s"
fi
echo "--- teardown"
harness_teardown "$work"
echo "deb-test: package $package_seconds s, checks $((SECONDS - boot_done)) s, total $((SECONDS - started)) s"
echo "checks outside: $passes passed, $failures failed"
if [ $result -eq 0 ] && [ $failures -eq 0 ]; then echo "deb-test: PASS"; exit 0; fi
echo "deb-test: FAIL ($failures failed outside the namespaces; the checks inside exited $result)"
exit 1
