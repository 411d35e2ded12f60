#!/usr/bin/env bash
# Installs the Debian 12 packages the host and its tests need; does nothing when they are present.
set -euo pipefail
# python3-fusepy and fuse3: the power-loss file system of the tests (scripts/powerloss/powerfs.py), and
# e2fsprogs and mount: the ext4 those tests make on a loop device over the power-loss disk (blockfs.py).
# prometheus (the server and promtool) and python3-prometheus-client: the metrics tests scrape the host
# with a real Prometheus and parse /metrics with promtool and the Python client's parser.
packages=(libsystemd-dev pkg-config systemd util-linux curl python3 python3-fusepy fuse3 e2fsprogs mount prometheus python3-prometheus-client)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    echo "installing: ${missing[*]}" >&2
    "${sudo_cmd[@]}" apt-get update -qq
    # Nothing the packages would start (prometheus.service, an init script) may start: the tests run their
    # own servers, on loopback, and stop them. policy-rc.d says so to invoke-rc.d while apt runs.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
        "${sudo_cmd[@]}" chmod 0755 "$policy"
        trap '"${sudo_cmd[@]}" rm -f "$policy"' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "swift is not on PATH (Swift 6 toolchain required)" >&2; exit 1; }
