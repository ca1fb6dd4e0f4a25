#!/usr/bin/env bash
# Benchmark: boots the sched_ext VM once and measures, in that same run, the
# kernel's default fair scheduler (no sched_ext scheduler loaded) and
# scx_agentcg: cpu.weight fairness (flat and nested), wakeup latency of a
# probe next to a noisy neighbour, message-passing throughput, herd control.
# Prints a markdown table and writes it, with the VM configuration, to
# target/bench/latest.md. Measures and reports; it does not pass or fail on
# speed.
#
# Usage: tests/bench.sh        (BENCH_WINDOW=SECS changes the 10 s windows)
set -euo pipefail
cd "$(dirname "$0")/.."

tests/vm/deps.sh
export BPF_CLANG=${BPF_CLANG:-clang-19}
cargo build --release --workspace --quiet

SMP=4 MEM=4G
eval "$(tests/vm/kernel.sh)"
mkdir -p target/bench
log=target/bench/vm.log
tests/vm/run.sh --smp $SMP --mem $MEM --timeout 1500 tests/vm/bench/bench.sh "${BENCH_WINDOW:-10}" \
    | tee "$log"

table=$(sed -n '/BENCH-TABLE-BEGIN/,/BENCH-TABLE-END/p' "$log" | grep '^|' || true)
[ -n "$table" ] || { echo "bench: the guest printed no result table; see $log" >&2; exit 1; }
{
    echo "Command: \`tests/bench.sh\` ($(date -u +%Y-%m-%d), scx_agentcg $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo
    echo "VM: qemu $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}') with TCG (no KVM), -smp $SMP, -m $MEM, kernel $KVER, on a host with $(nproc) CPUs; ${BENCH_WINDOW:-10} s measurement windows."
    echo
    echo "$table"
} > target/bench/latest.md
echo
cat target/bench/latest.md
