#!/usr/bin/env bash
# Proves that the power-loss suites catch a missing flush: builds the host with one fsync compiled out
# (the POWERLOSS_MUTANT_* conditions in MaildirWriter.swift for `smtp.commit = direct` and MailJournal.swift
# for `journal`; a compile-time switch used only here, never at run time) into its own scratch path, runs
# the suite against that binary (INETINFO_BINARY) and requires it to FAIL with acknowledged mail lost or
# partial. The suite is Tests/InetinfoTests/PowerLossTests.swift (powerfs), except for the syncfs of the
# journal's checkpoint, which only a real local file system takes: BlockPowerLossTests.swift (ext4 on blockfs).
#
#   scripts/powerloss/mutant-check.sh [POWERLOSS_MUTANT_SKIP_NEW_FSYNC|POWERLOSS_MUTANT_SKIP_SPOOL_FSYNC|
#                                      POWERLOSS_MUTANT_SKIP_CHECKPOINT_FSYNC|POWERLOSS_MUTANT_SKIP_JOURNAL_FLUSH|
#                                      POWERLOSS_MUTANT_SKIP_SYNCFS ...]
#
# Default: all five mutants (POWERLOSS_MUTANT_SKIP_JOURNAL_FLUSH acknowledges a journal record without its
# fdatasync). MUTANT_CUTS sets the cuts per run (16). Needs root, FUSE and loop devices, like the suites.
# The mutant build is a separate debug build of everything (~3-5 min the first time, kept in
# .build-mutant-<name> afterwards). scripts/test.sh runs this when INETINFO_MUTANT_CHECK=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
mutants=("$@")
[ ${#mutants[@]} -gt 0 ] || mutants=(POWERLOSS_MUTANT_SKIP_NEW_FSYNC POWERLOSS_MUTANT_SKIP_SPOOL_FSYNC POWERLOSS_MUTANT_SKIP_CHECKPOINT_FSYNC
                                POWERLOSS_MUTANT_SKIP_JOURNAL_FLUSH POWERLOSS_MUTANT_SKIP_SYNCFS)
swift build --build-tests >/dev/null  # the suite itself comes from the real build
failures=0
for mutant in "${mutants[@]}"; do
    case "$mutant" in
        POWERLOSS_MUTANT_SKIP_NEW_FSYNC|POWERLOSS_MUTANT_SKIP_SPOOL_FSYNC|POWERLOSS_MUTANT_SKIP_CHECKPOINT_FSYNC|\
        POWERLOSS_MUTANT_SKIP_JOURNAL_FLUSH) suite='PowerLossTests/powerCutsLoseNothingAcknowledged' ;;
        # The syncfs checkpoint is only taken on a real local file system: ext4 on blockfs.
        POWERLOSS_MUTANT_SKIP_SYNCFS) suite='BlockPowerLossTests/powerCutsOnExt4LoseNothingAcknowledged' ;;
        *) echo "unknown mutant $mutant" >&2; exit 2 ;;
    esac
    scratch=".build-mutant-${mutant#POWERLOSS_MUTANT_}"
    echo "== building the host with -D$mutant into $scratch"
    swift build --scratch-path "$scratch" -Xswiftc "-D$mutant" --product inetinfo 2>&1 | tail -1
    log=$(mktemp)
    echo "== the power-loss suite against it (must fail)"
    set +e
    INETINFO_BINARY="$PWD/$scratch/debug/inetinfo" INETINFO_POWER_CUTS="${MUTANT_CUTS:-16}" \
        INETINFO_BLOCK_POWER_CUTS="${MUTANT_CUTS:-16}" \
        timeout 900 swift test --skip-build --filter "$suite" >"$log" 2>&1 </dev/null
    status=$?
    set -e
    grep -E '^power loss|^by cut point:' "$log" || true
    if [ "$status" -eq 0 ]; then
        echo "FAIL: the suite passed against $mutant: it does not detect that missing flush" >&2
        failures=$((failures + 1))
    elif grep -qE 'lost [1-9][0-9]* acknowledged|partial or foreign files in new/ [1-9]' "$log"; then
        echo "ok: the suite fails against $mutant (exit $status), with acknowledged mail lost or partial"
    else
        echo "FAIL: the suite failed against $mutant, but not by finding lost mail:" >&2
        tail -40 "$log" >&2
        failures=$((failures + 1))
    fi
    rm -f "$log"
done
[ "$failures" -eq 0 ]
