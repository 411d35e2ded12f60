#!/bin/bash
# What the flight recorder costs: `crashes.flight-recorder` on against off (Benchmarks/on-off.sh says how,
# and lists the knobs: ROUNDS, DURATION, MESSAGES, ISOLATION, SKIP_BUILD). Target: ≤ 3 % (not asserted).
set -euo pipefail
cd "$(dirname "$0")/../.."
source Benchmarks/on-off.sh
measure_on_off "Flight recorder" "--set crashes.flight-recorder=true" "--set crashes.flight-recorder=false"
