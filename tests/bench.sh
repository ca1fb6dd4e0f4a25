#!/usr/bin/env bash
# Benchmark: boots the sched_ext VM once and measures, in that same run, the
# kernel's default fair scheduler (no sched_ext scheduler loaded) and
# scx_agentcg: cpu.weight fairness (flat and nested), wakeup latency of a
# probe next to a noisy neighbour, message-passing throughput, herd control.
# Prints a markdown table and writes it, with the VM configuration, to
# target/bench/latest.md. Measures and reports; it does not pass or fail on
# speed.
#
# Then, in a second boot, the same kind of cases under CFS, scx_flatcg,
# scx_bpfland and scx_agentcg, arms interleaved (BENCH_REPS repetitions,
# default 3; BENCH_ARMS=0 skips it, BENCH_MAIN=0 runs only it).
#
# Then the thrash victim (a probe beside a session thrashing under
# memory.high, with zram), CFS against scx_agentcg (BENCH_THRASH=0 skips it).
#
# Usage: tests/bench.sh        (BENCH_WINDOW=SECS changes the 10 s windows)
set -euo pipefail
cd "$(dirname "$0")/.."

tests/vm/deps.sh --bench
export BPF_CLANG=${BPF_CLANG:-clang-19}
cargo build --release --workspace --quiet

SMP=4 MEM=4G
eval "$(tests/vm/kernel.sh)"
mkdir -p target/bench
: > target/bench/latest.md
if [ "${BENCH_MAIN:-1}" != 0 ]; then   # BENCH_MAIN=0: only the comparison below
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
fi

# ---- the schedulers users would pick instead, in one more VM boot
# (BENCH_ARMS=0 skips this part)
if [ "${BENCH_ARMS:-1}" != 0 ]; then
others=$(tests/vm/bench/others.sh "$KVER" "$VMLINUZ")
flatcg=$(echo "$others" | sed -n 's/^FLATCG=//p'); bpfland=$(echo "$others" | sed -n 's/^BPFLAND=//p')
extra="$(command -v hackbench) $(command -v cyclictest) $(command -v stress-ng)"
# the guest finds them as scx_flatcg / scx_bpfland on PATH
mkdir -p target/bench/bin
rm -f target/bench/bin/*
[ -n "$flatcg" ] && cp "$flatcg" target/bench/bin/scx_flatcg && extra="$extra $PWD/target/bench/bin/scx_flatcg"
[ -n "$bpfland" ] && cp "$bpfland" target/bench/bin/scx_bpfland && extra="$extra $PWD/target/bench/bin/scx_bpfland"
REPS=${BENCH_REPS:-3}
# BENCH_ARMS_REPORT_ONLY=1: only make the tables from the last target/bench/arms.log
if [ "${BENCH_ARMS_REPORT_ONLY:-0}" = 0 ]; then
VM_EXTRA_BINS="$extra" tests/vm/run.sh --smp $SMP --mem $MEM --timeout 2400 tests/vm/bench/arms.sh \
    "${BENCH_ARMS_WINDOW:-6}" "$REPS" | tee target/bench/arms.log
fi
{
    echo
    echo "### Against scx_flatcg and scx_bpfland"
    echo
    echo "Same VM configuration, a second boot: $REPS repetitions, arms interleaved within each repetition, ${BENCH_ARMS_WINDOW:-6} s windows; median (min to max)."
    echo "scx_flatcg is built from the booted kernel's own tools/sched_ext (linux-source), scx_bpfland is the published crate (cargo install)."
    echo "In the cyclictest tables, two more rows are bounds measured under CFS, with the probe thread on CPU 0: cfs-fifo runs the probe as SCHED_FIFO (every wake-up preempts at once), cfs-isolated keeps the spinners off CPU 0 (cpuset)."
    echo "In the agent-session tables, agentcg runs the session under --cell-parent-cgroup with the benchmark's policy (the default static cells), agentcg-borrow the same with --enable-borrowing; the other arms get the background step's half weight through cpu.weight."
    { tr -d '\r' < target/bench/arms.log | grep '^ARM-MISSING' || true; } | awk '{ print "- " $2 ": could not be built, not measured" }'
    for c in flat flat_stressng nested hackbench hackbench_bpf_ms hackbench_bpf_pct cyclictest_p99_us cyclictest_p50_us cyclictest_wake_run_p99_us cpumax20 session_p99_us session_p50_us session_cpu_pct; do
        case $c in
            flat) t="weights 100/200/300, 4 spinners each: max share deviation (points)" ;;
            flat_stressng) t="the same with stress-ng --cpu 4 in each cgroup (points)" ;;
            nested) t="nested A(100){B,C} D(200): max share deviation (points)" ;;
            hackbench) t="hackbench -g 4 -l 200 (seconds)" ;;
            hackbench_bpf_ms) t="the scheduler's BPF programs: run time during a second hackbench run (ms, kernel.bpf_stats_enabled)" ;;
            hackbench_bpf_pct) t="the same, in % of the CPU time of hackbench's cgroup" ;;
            cyclictest_p99_us) t="cyclictest p99 (us, SCHED_OTHER, 1 ms) beside 8 spinners in another cgroup" ;;
            cyclictest_p50_us) t="cyclictest p50 (us), the same runs" ;;
            cyclictest_wake_run_p99_us) t="cyclictest again, traced: p99 of its thread's waking -> running (us), the scheduler's part of the latency" ;;
            cpumax20) t="cpu.max 20000 100000, 3 spinners: usage (% of a CPU)" ;;
            session_p99_us) t="agent session: wake-up p99 (us, agentcg-load wakeup, 2 ms) of an interactive step with 2 spinners, beside the session's background step (6 spinners, half weight)" ;;
            session_p50_us) t="agent session: p50 (us), the same runs" ;;
            session_cpu_pct) t="agent session: CPU the whole session got during the probe (% of a CPU; a cell smaller than the machine shows here)" ;;
        esac
        echo
        echo "| $t | median | min | max |"
        echo "| --- | --- | --- | --- |"
        # "lost": the arm's scheduler was no longer loaded when the case
        # ended; "error": it did not start for the case (arms.sh). Such
        # repetitions are left out and counted.
        for a in cfs flatcg bpfland agentcg agentcg-borrow cfs-fifo cfs-isolated; do
            rows=$({ tr -d "\r" < target/bench/arms.log | grep "^ARM-RESULT $a [0-9]* $c " || true; })
            lost=$(awk '$5 == "lost"' <<< "$rows" | wc -l)
            errs=$(awk '$5 == "error"' <<< "$rows" | wc -l)
            label=$a; [ "$lost" = 0 ] || label="$a ($lost lost: sched_ext was no longer enabled)"
            [ "$errs" = 0 ] || label="$label ($errs not run: the scheduler did not start)"
            awk '$5 != "lost" && $5 != "error" && NF { print $5 }' <<< "$rows" | sort -n | awk -v a="$label" '
                { v[NR] = $1 } END { if (NR) printf "| %s | %s | %s | %s |\n", a, v[int((NR + 1) / 2)], v[1], v[NR]
                                     else if (a ~ /lost|not run/) printf "| %s | | | |\n", a }'
        done
    done
} >> target/bench/latest.md
fi
# ---- the thrash victim, in one more boot with zram (BENCH_THRASH=0 skips;
# BENCH_THRASH_REPORT_ONLY=1 remakes its table from target/bench/thrash.log)
if [ "${BENCH_THRASH:-1}" != 0 ]; then
if [ "${BENCH_THRASH_REPORT_ONLY:-0}" = 0 ]; then
tests/vm/run.sh --smp $SMP --mem 2G --timeout 900 --with-modules tests/vm/bench/thrash.sh \
    "${BENCH_THRASH_REPS:-3}" | tee target/bench/thrash.log
fi
reps=$(tr -d '\r' < target/bench/thrash.log | awk '$1 == "THRASH"' | wc -l)
{
    echo "# Thrash victim"
    echo
    echo "Command: \`tests/bench.sh\` (this part alone: \`BENCH_MAIN=0 BENCH_ARMS=0 tests/bench.sh\`; $(date -u +%Y-%m-%d), scx_agentcg $(git rev-parse --short HEAD))."
    echo
    echo "A probe session's wake-up p99 (agentcg-load wakeup, 1 ms, 6 s) alone and beside a session thrashing"
    echo "under memory.high (48M for 192 MiB, 4 threads, 1 GiB zram), fair scheduler against scx_agentcg"
    echo "(thrash penalties on), interleaved, $((reps / 2)) repetitions in one boot (qemu TCG, 4 vCPUs, 2 GiB,"
    echo "kernel $KVER). The goal is a ratio of at most 1.5 under scx_agentcg."
    echo
    echo "| arm | rep | p99 alone (us) | p99 beside the thrashing session (us) | ratio |"
    echo "| --- | --- | --- | --- | --- |"
    tr -d '\r' < target/bench/thrash.log \
        | awk '$1 == "THRASH" { printf "| %s | %s | %s | %s | %.2f |\n", $2, $3, $4, $5, ($4 > 0 ? $5 / $4 : 0) }'
} > docs/experiments/thrash-victim.md
{ echo; sed 's/^# /### /' docs/experiments/thrash-victim.md; } >> target/bench/latest.md
fi
echo
cat target/bench/latest.md
