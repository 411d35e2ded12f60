#!/usr/bin/env bash
# Static checks of the systemd units, as installed:
#   1. `systemd-analyze verify` on inetinfo.service and its socket units (smtp, http, admin)
#      installed by scripts/install.sh into a temporary DESTDIR;
#   2. `systemd-analyze security inetinfo.service`: the exposure figure, which must be 2.0 or lower.
# Both run inside a systemd booted in private namespaces (scripts/systemd/harness.sh; the machine is
# not changed), where the staged install is overlaid on /usr/local: verify checks that ExecStart's
# binaries exist at their installed paths, and security needs a running manager.
#
#   scripts/systemd/check-units.sh              # as root; builds (incrementally) and installs first
#   SKIP_BUILD=1 scripts/systemd/check-units.sh # use the binaries already in .build-systemd
#   MAX_EXPOSURE=2.0                            # the limit
#
# Prints a PASS/FAIL line per check and the security table; exit status 0 when both pass.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=harness.sh
source "$here/harness.sh"
max_exposure=${MAX_EXPOSURE:-2.0}

[ "$(id -u)" -eq 0 ] || { echo "FAIL: check-units must run as root (it boots systemd in namespaces)"; exit 1; }
harness_preflight || { echo "FAIL: this machine cannot boot the harness (see above)"; exit 1; }

work=$(harness_workdir)
trap 'harness_teardown "$work"' EXIT
trap 'exit 130' INT TERM

cd "$repo" || exit 1
if [ "${SKIP_BUILD:-0}" = 1 ]; then install_flags=(--no-build); else install_flags=(); fi
if ! timeout 3600 env DESTDIR="$work/root" PREFIX=/usr/local scripts/install.sh ${install_flags[@]+"${install_flags[@]}"} >"$work/install.log" 2>&1; then
    echo "FAIL: scripts/install.sh"; tail -40 "$work/install.log"; exit 1
fi

harness_prepare "$work"
harness_boot "$work" 30 || { echo "FAIL: the harness did not boot"; exit 1; }

failures=0
unit_dir=/usr/local/lib/systemd/system
if out=$(harness_run "$work" timeout 60 systemd-analyze verify "$unit_dir/inetinfo.service" \
        "$unit_dir/inetinfo-smtp.socket" "$unit_dir/inetinfo-http.socket" "$unit_dir/inetinfo-admin.socket" 2>&1) && [ -z "$out" ]; then
    echo "PASS: systemd-analyze verify inetinfo.service inetinfo-smtp.socket inetinfo-http.socket inetinfo-admin.socket (installed at $unit_dir): no message"
else
    echo "FAIL: systemd-analyze verify:"; echo "$out" | sed 's/^/    | /'
    failures=$((failures + 1))
fi

out=$(harness_run "$work" timeout 60 systemd-analyze security --no-pager inetinfo.service 2>&1)
exposure=$(echo "$out" | sed -n 's/.*Overall exposure level for inetinfo.service: \([0-9.]*\).*/\1/p')
echo "$out" | sed 's/^/    | /'
if [ -n "$exposure" ] && python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$exposure" "$max_exposure"; then
    echo "PASS: systemd-analyze security inetinfo.service: exposure $exposure (limit $max_exposure)"
else
    echo "FAIL: systemd-analyze security inetinfo.service: exposure '${exposure:-?}' (limit $max_exposure)"
    failures=$((failures + 1))
fi
exit $((failures > 0))
