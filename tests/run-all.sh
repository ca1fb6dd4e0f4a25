#!/usr/bin/env bash
# Runs every test of scx_agentcg on a Debian machine with or without
# sched_ext: installs the host packages it needs, runs the unit tests, builds
# the release binaries, fetches the sched_ext kernel and runs every VM
# integration scenario in tests/vm/scenarios/.
#
# Usage: tests/run-all.sh [SCENARIO...]
set -euo pipefail
cd "$(dirname "$0")/.."

tests/vm/deps.sh
export BPF_CLANG=${BPF_CLANG:-clang-19}

echo "== unit tests"
cargo test --release --workspace

echo "== release build"
cargo build --release --workspace

echo "== VM integration tests"
tests/run-vm-tests.sh "$@"
