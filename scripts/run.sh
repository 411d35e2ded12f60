#!/usr/bin/env bash
# Builds and runs the host in the foreground with its defaults (extra arguments go to inetinfo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product inetinfo
swift build -c release --product inetinfoctl
exec .build/release/inetinfo "$@"
