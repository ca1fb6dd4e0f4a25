#!/usr/bin/env bash
# Reaction-time benchmark (docs/experiments/reaction.md): a session grows
# past 90 % of its parent's memory.max; how long until its allocations stop,
# and how much did it allocate past the line, when scx_agentcg's in-kernel
# guard holds it, against userspace watchers that freeze it (memory.current
# polled every 1 ms, memory.events epoll, a PSI trigger, avg10 polling).
# One VM boot, ways interleaved. Measures and reports; never fails on speed.
#
# Usage: tests/reaction.sh   (REACT_REPS=5 REACT_RATE_MB_S=40 REACT_LIMIT_MB=256)
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REACT_REPS:-5} RATE=${REACT_RATE_MB_S:-40} LIMIT=${REACT_LIMIT_MB:-256}
tests/vm/deps.sh
export BPF_CLANG=${BPF_CLANG:-clang-19}
cargo build --release --workspace --quiet
eval "$(tests/vm/kernel.sh)"
out=target/experiments/reaction
mkdir -p "$out" docs/experiments
tests/vm/run.sh --smp 4 --mem 2G --timeout 1500 --with-modules tests/vm/bench/reaction.sh \
    "$REPS" "$RATE" "$LIMIT" | tee "$out/vm.log"
sed -n 's/^REACT //p' "$out/vm.log" | tr -d '\r' > "$out/reps.jsonl"
sed -n 's/^REACT-SCHED //p' "$out/vm.log" | tr -d '\r' > "$out/sched.jsonl"
[ -s "$out/reps.jsonl" ] || { echo "reaction: no results; see $out/vm.log" >&2; exit 1; }
{
    echo "# Reaction time: stopping a session at its parent's guard line"
    echo
    echo "Command: \`tests/reaction.sh\` ($(date -u +%Y-%m-%d), scx_agentcg $(git rev-parse --short HEAD), $REPS repetitions)."
    echo
    echo "Setup: qemu TCG VM, 4 vCPUs, kernel $KVER, 1 GiB of zram swap. A session under a parent with"
    echo "\`memory.max\` = $LIMIT MiB grows at $RATE MiB/s in 64 KiB chunks, each stamped with the monotonic"
    echo "clock; the guard line is 90 % of the limit. Reaction: from the chunk that crossed the line to"
    echo "the session's last chunk; overshoot: what it allocated past the line; fire: when a userspace"
    echo "watcher saw its signal, from the crossing (\`agentcg-replay react\`, see its module comment)."
    echo
    target/release/agentcg-replay react-table "$out/reps.jsonl" --sched "$out/sched.jsonl"
} > docs/experiments/reaction.md
cat docs/experiments/reaction.md
