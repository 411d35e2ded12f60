#!/usr/bin/env bash
# Installs the Debian 12 packages the host and its tests need; does nothing when they are present.
set -euo pipefail
# python3-fusepy and fuse3: the power-loss file system of the tests (scripts/powerloss/powerfs.py).
packages=(libsystemd-dev pkg-config systemd util-linux curl python3 python3-fusepy fuse3)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    echo "installing: ${missing[*]}" >&2
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "swift is not on PATH (Swift 6 toolchain required)" >&2; exit 1; }
