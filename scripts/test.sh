#!/usr/bin/env bash
# Runs Cairn's whole test suite: unit tests, openraft's storage conformance suite, service
# tests and cluster tests with real processes. Installs build prerequisites when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prepare.sh

cargo build --workspace --all-targets --locked
# Cluster tests start several node processes each; two tests at a time suit a 2-core machine.
cargo test --workspace --locked -- --test-threads="${CAIRN_TEST_THREADS:-2}"
