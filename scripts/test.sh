#!/usr/bin/env bash
# Runs the whole test suite: unit tests, supervisor tests, and tests that drive the built binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The deployment files (deploy/): Kubernetes manifests against the Kubernetes schema, offline; the
# Prometheus configuration and alert rules with promtool, and the rules' unit tests.
scripts/check-deploy.sh
swift build --build-tests
# Suites run one after another: several of them load both cores on purpose (chaos, kill -9 cycles),
# and timing-sensitive checks must not share the machine with them.
swift test --skip-build --no-parallel
# The power-loss suites (part of the run above) must fail against a host built without the fsync of new/
# (smtp.commit = direct), against one whose journal checkpoints without fsyncing new/, against one that
# acknowledges journal records without their fdatasync (journal), and against one whose checkpoint skips
# its syncfs (journal on ext4, BlockPowerLossTests): four more debug builds (~1.5-5 min each on an idle
# machine, kept in .build-mutant-*) and ~1 min each.
# INETINFO_MUTANT_CHECK=0 skips them; `scripts/powerloss/mutant-check.sh` alone also checks the spool mutant.
if [ "${INETINFO_MUTANT_CHECK:-1}" != 0 ]; then
    scripts/powerloss/mutant-check.sh POWERLOSS_MUTANT_SKIP_NEW_FSYNC POWERLOSS_MUTANT_SKIP_CHECKPOINT_FSYNC \
        POWERLOSS_MUTANT_SKIP_JOURNAL_FLUSH POWERLOSS_MUTANT_SKIP_SYNCFS
fi
# The systemd units: static checks, then the host under a real systemd booted in private namespaces.
scripts/systemd/check-units.sh
scripts/systemd/integration-test.sh
# The Debian package (scripts/package-deb.sh, from the release binaries the integration test built):
# its contents, and the host installed from it with dpkg under the same private systemd.
scripts/systemd/deb-test.sh
# Every fuzz target under libFuzzer + ASan for a bounded time, from its committed seed corpus: all built
# first (one build at a time), then run one after another. SMTP gets FUZZ_SECONDS, the others
# FUZZ_SECONDS_OTHER each.
fuzz_targets=(smtp-session-fuzzer http-request-fuzzer http-fields-fuzzer control-request-fuzzer configuration-fuzzer
              worker-message-fuzzer flight-recording-fuzzer figure-file-fuzzer journal-record-fuzzer)
for target in "${fuzz_targets[@]}"; do
    scripts/fuzz.sh --build "$target"
done
for target in "${fuzz_targets[@]}"; do
    seconds=${FUZZ_SECONDS_OTHER:-30}
    [ "$target" = smtp-session-fuzzer ] && seconds=${FUZZ_SECONDS:-60}
    FUZZ_SKIP_BUILD=1 scripts/fuzz.sh "$target" "$seconds"
done
