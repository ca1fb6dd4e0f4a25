#!/usr/bin/env bash
# Trace-replay experiment (docs/experiments.md): one HIGH and LOW_N LOW agent
# sessions replay real agent traces under a shared memory limit in one VM
# boot, arms NoLimit / Static / HighOnly / AgentCG-CPU / AgentCG interleaved,
# EXP_REPS repetitions (default 5), plus three solo runs of HIGH and of LOW.
# Each configuration (trace pair, swap or not) has its own report,
# docs/experiments/NAME.md, with its figures in docs/experiments/NAME/;
# the raw records stay in target/experiments/NAME/. Measures and reports;
# it does not pass or fail.
#
# Usage: tests/experiment.sh
#   EXP_REPS=5 EXP_SPEED=4 EXP_MAXDUR=20 EXP_TOTAL_MB=800 EXP_LOW_N=2
#   EXP_HIGH=swebench18/Web_Network_Hard EXP_LOW=swebench18/CLI_Tools_Hard
#   EXP_ARMS="NoLimit Static HighOnly AgentCG-CPU AgentCG" (a subset reruns those)
#   EXP_SWAP=1 adds 1 GiB of zram swap (the default is none)
#   EXP_WINDOW=peak (default: the EXP_MAXDUR window that holds each trace's
#     memory peak) or start (the first EXP_MAXDUR seconds)
#   EXP_NAME=... names the configuration (default HIGHTASK+LOWTASK-noswap|zram)
#   EXP_REPORT_ONLY=1 rebuilds the report from the last run of that name
#   EXP_MEMTRACE=1 adds the guest's EXP-MEM lines (memory of the parent and
#     each session every 200 ms) to vm.log, for reading a run's course
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${EXP_REPS:-5} SPEED=${EXP_SPEED:-4} MAXDUR=${EXP_MAXDUR:-20} TOTAL=${EXP_TOTAL_MB:-800}
LOWN=${EXP_LOW_N:-2} WINDOW=${EXP_WINDOW:-peak}
ARMS=${EXP_ARMS:-NoLimit Static HighOnly AgentCG-CPU AgentCG} SWAP=${EXP_SWAP:-0}
HIGH=${EXP_HIGH:-swebench18/Web_Network_Hard} LOW=${EXP_LOW:-swebench18/CLI_Tools_Hard}
TRACES=${AGENTCG_TRACES:-$(cd .. && pwd)/shared/traces}
[ -d "$TRACES/$HIGH" ] && [ -d "$TRACES/$LOW" ] \
    || { echo "experiment: traces not found under $TRACES (set AGENTCG_TRACES)" >&2; exit 1; }
case $WINDOW in peak|start) ;; *) echo "experiment: EXP_WINDOW must be peak or start, not $WINDOW" >&2; exit 2 ;; esac
NAME=${EXP_NAME:-${HIGH##*/}+${LOW##*/}-$([ "$SWAP" = 1 ] && echo zram || echo noswap)}

tests/vm/deps.sh
export BPF_CLANG=${BPF_CLANG:-clang-19}
cargo build --release --workspace --quiet
eval "$(tests/vm/kernel.sh)"

out=target/experiments/$NAME
doc=docs/experiments/$NAME.md
mkdir -p "$out" "docs/experiments/$NAME"
# EXP_REPORT_ONLY=1: rebuild the report from the last run's vm.log
if [ "${EXP_REPORT_ONLY:-0}" = 0 ]; then
    files=""
    for t in "$HIGH" "$LOW"; do files="$files $TRACES/$t:/traces/$t"; done
    mods=""; [ "$SWAP" = 1 ] && mods=--with-modules
    VM_EXTRA_FILES="$files" tests/vm/run.sh --smp 4 --mem 2G --timeout 3000 $mods tests/vm/bench/experiment.sh \
        "$REPS" "$SPEED" "$MAXDUR" "$TOTAL" "$LOWN" "$HIGH" "$LOW" "$ARMS" "$SWAP" "$WINDOW" "${EXP_MEMTRACE:-0}" | tee "$out/vm.log"
    { git rev-parse --short HEAD; git diff --quiet HEAD -- src tools tests || echo "+uncommitted"; } 2>/dev/null \
        | paste -sd' ' - > "$out/commit"
fi

# only the last boot's lines: run.sh boots again after a stalled boot, and
# the repetitions of a boot that died must not count twice
last_boot() { awk '/^init: / { n = NR } { l[NR] = $0 } END { for (i = n; i <= NR; i++) print l[i] }' "$out/vm.log" | tr -d '\r'; }
last_boot | sed -n 's/^EXP-RECORD //p' > "$out/results.jsonl"
last_boot | sed -n 's/^EXP-SCHED //p' > "$out/sched.jsonl"
[ -s "$out/results.jsonl" ] || { echo "experiment: no records; see $out/vm.log" >&2; exit 1; }
# what the scheduler's log said of memcg_ops
memcg=$(last_boot | sed -n 's/^EXP-MEMCG [^ ]* [0-9]* //p' | sort -u | paste -sd, -)
memcg=${memcg:+"$memcg (from the scheduler log)."}
memcg=${memcg:-"memcg_ops: not recorded by this run."}
swapflag=""; [ "$SWAP" = 1 ] && swapflag=--swap
target/release/agentcg-replay plot --out "docs/experiments/$NAME" "$out/results.jsonl" > /dev/null
report=$(target/release/agentcg-replay report $swapflag --sched "$out/sched.jsonl" "$out/results.jsonl")
# the compressor the guest's zram_swap logged
zalg=$(last_boot | sed -n 's/.*zram: .* compressor \([a-z0-9-]*\).*/\1/p' | head -n 1)
swapdesc="no swap"; [ "$SWAP" = 1 ] && swapdesc="1 GiB of zram swap (${zalg:-compressor not recorded})"
window="the ${MAXDUR} s window of replay time that holds each trace's memory peak"
[ "$WINDOW" = start ] && window="the first ${MAXDUR} s of replay time"

{
    echo "# Trace-replay experiment: $NAME"
    echo
    echo "Command: \`EXP_HIGH=$HIGH EXP_LOW=$LOW EXP_SWAP=$SWAP EXP_WINDOW=$WINDOW EXP_TOTAL_MB=$TOTAL tests/experiment.sh\`"
    echo "($(date -u +%Y-%m-%d), scx_agentcg $(cat "$out/commit" 2>/dev/null || echo unknown), $REPS repetitions)."
    echo
    echo "Setup: qemu TCG VM, 4 vCPUs, 2 GiB, kernel $KVER, $swapdesc. One HIGH session replays"
    echo "\`$HIGH\` and $LOWN LOW sessions replay \`$LOW\` (agentcg-replay, speed x$SPEED,"
    echo "$window), started together under a shared \`memory.max\` of $TOTAL MiB on"
    echo "their parent cgroup. Steps (tool calls) become step cgroups. Arms, interleaved:"
    echo
    echo "- NoLimit: the shared limit only; fair scheduler."
    echo "- Static: \`memory.max\` = $((TOTAL / (LOWN + 1))) MiB per session; fair scheduler."
    echo "- HighOnly: \`memory.high\` = $((TOTAL / (LOWN + 1))) MiB per session and a userspace watcher (every"
    echo "  0.5 s: a LOW session with some avg10 > 10 % gets half that until its pressure drops); fair scheduler."
    echo "- AgentCG-CPU: scx_agentcg \`--cell-parent-cgroup --enable-borrowing --policy\`, HIGH interactive,"
    echo "  LOW background (weight x0.5, \`yield_to_interactive\`: while HIGH has runnable tasks the LOWs share"
    echo "  the yield CPUs, a quarter of those outside HIGH's cell), thrash penalties on; no memory actions."
    echo "- AgentCG: the same with \`--mem-arbitration\` (defaults of \`[memory]\`: memory.low/min for HIGH; LOW"
    echo "  held in the scheduler at 90 % of the shared limit, frozen after 1 s, resumed below 80 %, killed"
    echo "  at 97 % as the last resort). $memcg"
    echo
    echo "A run still going after $((MAXDUR * 4 + 10)) s gets SIGTERM, SIGKILL 5 s later, and counts as not"
    echo "completed (timed out). Kills by --mem-arbitration, with their logged reasons:"
    echo
    echo '```'
    sed -n 's/^EXP-KILL \([^ ]*\) \([0-9]*\) .*INFO\] //p; s/^EXP-KILL \([^ ]*\) \([0-9]*\) .*WARN\] /\1 rep \2: /p' < <(last_boot) || true
    echo '```'
    echo
    echo "$report"
    echo
    echo "Figures: completion times ![completion]($NAME/completion.png), OOM kills"
    echo "![oom]($NAME/oom.png), HIGH's allocation latency CDF ![cdf]($NAME/latency_cdf.png),"
    echo "memory of one run per arm ![memory]($NAME/memory_timeline.png)."
} > "$doc"
cat "$doc"
