#!/usr/bin/env bash
# Builds scx_agentcg and runs it in the sched_ext VM on a demo workload
# (agent sessions with build, test and browse steps next to a batch job),
# showing its live stats. Works on a machine without sched_ext.
#
# Usage: tests/vm/demo.sh [SECONDS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/vm/deps.sh
export BPF_CLANG=${BPF_CLANG:-clang-19}
cargo build --release --workspace
exec tests/vm/run.sh --smp 4 --mem 2G --timeout $(( ${1:-20} + 200 )) tests/vm/demo/demo.sh "${1:-20}"
