#!/usr/bin/env bash
# Trace-replay experiment (docs/experiments.md): one HIGH and two LOW agent
# sessions replay real agent traces under a shared memory limit, no swap,
# in one VM boot, arms NoLimit / Static / HighOnly / AgentCG interleaved,
# EXP_REPS repetitions (default 5), plus three solo runs of HIGH. Writes
# target/experiments/results.jsonl, docs/experiments.md and the figures in
# docs/experiments/. Measures and reports; it does not pass or fail.
#
# Usage: tests/experiment.sh
#   EXP_REPS=5 EXP_SPEED=4 EXP_MAXDUR=20 EXP_TOTAL_MB=800 EXP_LOW_N=2
#   EXP_HIGH=swebench18/Web_Network_Hard EXP_LOW=swebench18/CLI_Tools_Hard
#   EXP_ARMS="NoLimit Static HighOnly AgentCG-CPU AgentCG" (a subset reruns those)
#   EXP_SWAP=1 adds 1 GiB of zram swap (the default is none)
#   EXP_REPORT_ONLY=1 rebuilds the report from the last run
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${EXP_REPS:-5} SPEED=${EXP_SPEED:-4} MAXDUR=${EXP_MAXDUR:-20} TOTAL=${EXP_TOTAL_MB:-800}
LOWN=${EXP_LOW_N:-2}
ARMS=${EXP_ARMS:-NoLimit Static HighOnly AgentCG-CPU AgentCG} SWAP=${EXP_SWAP:-0}
HIGH=${EXP_HIGH:-swebench18/Web_Network_Hard} LOW=${EXP_LOW:-swebench18/CLI_Tools_Hard}
TRACES=${AGENTCG_TRACES:-$(cd .. && pwd)/shared/traces}
[ -d "$TRACES/$HIGH" ] && [ -d "$TRACES/$LOW" ] \
    || { echo "experiment: traces not found under $TRACES (set AGENTCG_TRACES)" >&2; exit 1; }

tests/vm/deps.sh
export BPF_CLANG=${BPF_CLANG:-clang-19}
cargo build --release --workspace --quiet
eval "$(tests/vm/kernel.sh)"

out=target/experiments
mkdir -p "$out" docs/experiments
# EXP_REPORT_ONLY=1: rebuild the report from the last run's target/experiments/vm.log
if [ "${EXP_REPORT_ONLY:-0}" = 0 ]; then
    files=""
    for t in "$HIGH" "$LOW"; do files="$files $TRACES/$t:/traces/$t"; done
    mods=""; [ "$SWAP" = 1 ] && mods=--with-modules
    VM_EXTRA_FILES="$files" tests/vm/run.sh --smp 4 --mem 2G --timeout 3000 $mods tests/vm/bench/experiment.sh \
        "$REPS" "$SPEED" "$MAXDUR" "$TOTAL" "$LOWN" "$HIGH" "$LOW" "$ARMS" "$SWAP" | tee "$out/vm.log"
fi

sed -n 's/^EXP-RECORD //p' "$out/vm.log" | tr -d '\r' > "$out/results.jsonl"
[ -s "$out/results.jsonl" ] || { echo "experiment: no records; see $out/vm.log" >&2; exit 1; }
# what the scheduler's log said of memcg_ops (older runs did not record it)
memcg=$(sed -n 's/^EXP-MEMCG [^ ]* [0-9]* //p' "$out/vm.log" | tr -d '\r' | sort -u | paste -sd, -)
memcg=${memcg:+$memcg (the scheduler's log).}
memcg=${memcg:-memcg_ops: not recorded by this run.}
table=$(target/release/agentcg-replay plot --out docs/experiments "$out/results.jsonl")

# HIGH's completion per arm against its solo median
ratio=$(awk '
    { arm = ""; role = ""; c = ""
      if (match($0, /"arm":"[^"]*"/)) arm = substr($0, RSTART + 7, RLENGTH - 8)
      if (match($0, /"role":"[^"]*"/)) role = substr($0, RSTART + 8, RLENGTH - 9)
      if (match($0, /"completion_s":[0-9.]+/)) c = substr($0, RSTART + 15, RLENGTH - 15)
      if (role == "HIGH" && c != "") v[arm] = v[arm] " " c }
    function med(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n ? (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2) : "" }
    END { solo = med(v["Solo"]); printf "| arm | HIGH median completion (s) | x solo (%s s) |\n| --- | --- | --- |\n", solo
          n = split("NoLimit Static HighOnly AgentCG-CPU AgentCG", arms, " ")
          for (i = 1; i <= n; i++) { m = med(v[arms[i]]); printf "| %s | %s | %s |\n", arms[i], m, (m != "" && solo > 0) ? sprintf("%.2f", m / solo) : "n/a" } }' "$out/results.jsonl")
stats=$(sed -n 's/^EXP-STATS //p' "$out/vm.log" | tr -d '\r')
# HIGH's share of the CPU time all sessions used, per arm (runs that completed)
share=$(awk '
    { arm = ""; role = ""; c = ""
      if (match($0, /"arm":"[^"]*"/)) arm = substr($0, RSTART + 7, RLENGTH - 8)
      if (match($0, /"role":"[^"]*"/)) role = substr($0, RSTART + 8, RLENGTH - 9)
      if (match($0, /"cpu_s":[0-9.]+/)) c = substr($0, RSTART + 8, RLENGTH - 8)
      if (c == "" || arm == "Solo") next
      all[arm] += c; if (role == "HIGH") high[arm] += c }
    END { print "| arm | HIGH share of the sessions CPU time | CPU seconds, all sessions |"; print "| --- | --- | --- |"
          n = split("NoLimit Static HighOnly AgentCG-CPU AgentCG", arms, " ")
          for (i = 1; i <= n; i++) { a = arms[i]; if (all[a] > 0) printf "| %s | %.1f %% | %.1f |\n", a, 100 * high[a] / all[a], all[a] } }' "$out/results.jsonl")

{
    echo "# Trace-replay experiment"
    echo
    echo "Command: \`tests/experiment.sh\` ($(date -u +%Y-%m-%d), scx_agentcg $(git rev-parse --short HEAD 2>/dev/null || echo '?'))."
    echo
    echo "Setup: qemu TCG VM, 4 vCPUs, 2 GiB, kernel $KVER, $([ "$SWAP" = 1 ] && echo "1 GiB of zram swap" || echo "no swap"). One HIGH session replays"
    echo "\`$HIGH\` and $LOWN LOW sessions replay \`$LOW\` (agentcg-replay, speed x$SPEED, the first"
    echo "${MAXDUR} s of replay time), started together under a shared \`memory.max\` of $TOTAL MiB on their"
    echo "parent cgroup. Steps (tool calls) become step cgroups. Arms, interleaved, $REPS repetitions each:"
    echo
    echo "- NoLimit: the shared limit only; fair scheduler."
    echo "- Static: \`memory.max\` = $((TOTAL / (LOWN + 1))) MiB per session; fair scheduler."
    echo "- HighOnly: \`memory.high\` = $((TOTAL / (LOWN + 1))) MiB per session and a userspace watcher (every"
    echo "  0.5 s: a LOW session with some avg10 > 10 % gets half that until its pressure drops); fair scheduler."
    echo "- AgentCG-CPU: scx_agentcg \`--cell-parent-cgroup --enable-borrowing --policy\`, HIGH interactive,"
    echo "  LOW background (weight x0.5), thrash penalties on; no memory actions."
    echo "- AgentCG: the same with \`--mem-arbitration\` (defaults of \`[memory]\`: memory.low/min for HIGH; LOW"
    echo "  held in the scheduler at 90 % of the shared limit, frozen after 1 s, resumed below 80 %, killed"
    echo "  at 97 % as the last resort). $memcg"
    echo
    echo "A run still going after $((MAXDUR * 4 + 10)) s gets SIGTERM, SIGKILL 5 s later, and counts as not completed (timed out):"
    echo
    echo '```'
    grep '"timed_out":true' "$out/results.jsonl" | sed 's/.*"arm":"\([^"]*\)".*"role":"\([^"]*\)".*"rep":\([0-9]*\).*/\1 rep \3 \2: timed out/' || true
    echo '```'
    echo
    echo "Completion time in seconds, median [IQR]; a killed run has no completion time. Kills that were"
    echo "not the kernel's OOM killer (in AgentCG: --mem-arbitration's cgroup.kill, with its logged reason):"
    echo
    echo '```'
    grep '"killed_by":"\(arbitration\|other\)"' "$out/results.jsonl" | sed 's/.*"arm":"\([^"]*\)".*"role":"\([^"]*\)".*"rep":\([0-9]*\).*"killed_by":"\([^"]*\)".*/\1 rep \3 \2: killed (\4)/' || true
    sed -n 's/^EXP-KILL \([^ ]*\) \([0-9]*\) .*INFO\] //p; s/^EXP-KILL \([^ ]*\) \([0-9]*\) .*WARN\] /\1 rep \2: /p' "$out/vm.log" | tr -d '\r' || true
    echo '```'
    echo
    echo "$table"
    echo
    echo "$ratio"
    echo
    echo "$share"
    echo
    echo "scx_agentcg counters per run (--mem-arbitration: holds, freezes, thaws, reclaims, kills; reaction times in us"
    echo "from the guard line to the held session's last growth (first hold of an episode), stop times from the hold;"
    echo "thrash penalty entries):"
    echo
    echo '```'
    echo "$stats"
    echo '```'
    echo
    echo "Figures: completion times ![completion](experiments/completion.png), OOM kills"
    echo "![oom](experiments/oom.png), HIGH's allocation latency CDF ![cdf](experiments/latency_cdf.png),"
    echo "memory of one run per arm ![memory](experiments/memory_timeline.png)."
} > docs/experiments.md
cat docs/experiments.md
