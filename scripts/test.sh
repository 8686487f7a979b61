#!/usr/bin/env bash
# Runs Cairn's whole test suite: unit tests, openraft's storage conformance suite, service
# tests and cluster tests with real processes. Installs build prerequisites when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prepare.sh

cairn_build
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Cluster tests start several node processes each; two tests at a time suit a 2-core machine.
set +e
cargo test --workspace --all-targets --locked -- --test-threads="${CAIRN_TEST_THREADS:-2}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
