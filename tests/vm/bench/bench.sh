# Guest side of tests/bench.sh: every case runs first under the kernel's
# default fair scheduler (no sched_ext scheduler loaded), then under
# scx_agentcg, in this same VM boot. Prints a markdown table.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

WIN=${1:-10}   # measurement window, seconds (tests/bench.sh passes BENCH_WINDOW)
cg_new f100 100 > /dev/null; cg_new f200 200 > /dev/null; cg_new f300 300 > /dev/null
cg_new A 100 > /dev/null; cg_new A/B 100 > /dev/null; cg_new A/C 100 > /dev/null; cg_new D 200 > /dev/null
cg_new noisy 100 > /dev/null; cg_new probe 100 > /dev/null; cg_new pairs 100 > /dev/null
cg_new H 50 > /dev/null; cg_new HD 200 > /dev/null
i=1; while [ $i -le 32 ]; do cg_new H/k$i > /dev/null; i=$((i + 1)); done
cg_new bwnb 100 > /dev/null
cg_new q10 100 > /dev/null && cg_max q10 "10000 100000"
cg_new q50 100 > /dev/null && cg_max q50 "50000 100000"
cg_new q150 100 > /dev/null && cg_max q150 "150000 100000"
cg_new QP 100 > /dev/null && cg_max QP "50000 100000"
cg_new QP/c1 100 > /dev/null; cg_new QP/c3 300 > /dev/null

# cpu.max case: CG SPINNERS -> usage in % of one CPU, with a busy neighbour
bw_case() {
    spin_in bwnb 4 $((WIN + 60)); spin_in "$1" "$2" $((WIN + 60))
    sleep 2; u=$(cg_cpu_pct $WIN "$1"); drain_loads
    echo "$1 $u" >> "$out"
}


# each case writes "KEY VALUE" lines to /tmp/res.$LABEL
run_cases() {
    out=/tmp/res.$1
    : > "$out"
    for c in f100 f200 f300; do spin_in $c 4 $((WIN + 60)); done
    sleep 2; s=$(cg_shares $WIN f100 f200 f300); drain_loads
    echo "flat $s dev=$(max_dev "$s" "16.7 33.3 50.0")" >> "$out"

    for c in A/B A/C D; do spin_in $c 4 $((WIN + 60)); done
    sleep 2; s=$(cg_shares $WIN A/B A/C D); drain_loads
    echo "nested $s dev=$(max_dev "$s" "16.7 16.7 66.7")" >> "$out"

    spin_in noisy 8 $((WIN + 60))
    sleep 1
    l=$(agentcg-load wakeup --cgroup probe --interval-us 1000 --duration $WIN); drain_loads
    echo "lat $l" >> "$out"

    l=$(agentcg-load pingpong --cgroup pairs --pairs 2 --duration $WIN); drain_loads
    echo "pp $l" >> "$out"

    j=1; while [ $j -le 32 ]; do
        agentcg-load burst --cgroup H/k$j --on-ms 1 --off-ms 3 --duration $((WIN + 60)) > /dev/null &
        j=$((j + 1)); done
    spin_in HD 4 $((WIN + 60))
    sleep 2; s=$(cg_shares $WIN H HD); drain_loads
    echo "herd $s" >> "$out"

    bw_case q10 3; bw_case q50 3; bw_case q150 4
    spin_in QP/c1 4 $((WIN + 60)); spin_in QP/c3 4 $((WIN + 60))
    sleep 2
    a1=$(cg_usage_us QP/c1); a3=$(cg_usage_us QP/c3); sleep $WIN; b1=$(cg_usage_us QP/c1); b3=$(cg_usage_us QP/c3)
    drain_loads
    echo "qnest $(calc "(($b1 - $a1) + ($b3 - $a3)) / ($WIN * 10000)") $(calc "($b3 - $a3) / (($b1 - $a1) + 1)")" >> "$out"
    log "$1 done: $(tr '\n' ';' < "$out")"
}

get() { grep "^$2 " "/tmp/res.$1" | head -n1; }
shares() { get "$1" "$2" | awk '{ s = ""; for (i = 2; i <= NF; i++) if ($i !~ /^dev=/) { split($i, kv, "="); s = s (s ? " / " : "") kv[2] } print s }'; }

# agent sessions: an interactive step's probe beside 6 background spinners
# of its session (background at half weight), and how long a new session
# waits for its cell
P=$SESSION_P
session_setup
session_probe_res() { echo "slat $(session_probe $WIN)" >> "/tmp/res.$1"; }

run_cases cfs
session_bg_weight 50   # what the bg profile does, for CFS
session_probe_res cfs
session_bg_weight 100
sched_start || fail "scheduler did not start"
run_cases agentcg
sched_stop INT
session_policy true > /tmp/pol.toml; session_policy true > /tmp/on.toml; session_policy false > /tmp/off.toml
sched_start --cell-parent-cgroup $P --policy /tmp/pol.toml || fail "scheduler (sessions) did not start"
session_probe_res boost
cp /tmp/off.toml /tmp/pol.toml; kill -HUP "$SCHED_PID"; sleep 1
session_probe_res noboost
# mkdir of a session to its cell applied (the scheduler's own measure)
: > /tmp/applat
i=0; while [ $i -lt 20 ]; do
    mkdir "$CG_ROOT/$P/n$i"; sleep 0.3
    stats_json /tmp/al.json
    sed -n 's/.*"cell_apply_latency_us":\([0-9]*\).*/\1/p' /tmp/al.json >> /tmp/applat
    rmdir "$CG_ROOT/$P/n$i"; sleep 0.3
    i=$((i + 1))
done
applat=$(sort -n /tmp/applat | awk '{ v[NR] = $1 } END { printf "median %.1f ms, max %.1f ms (%d sessions)", v[int((NR + 1) / 2)] / 1000, v[NR] / 1000, NR }')
sched_stop INT

for L in cfs agentcg; do
    eval "flat_$L=\"\$(shares $L flat) (max dev \$(kv dev \"\$(get $L flat)\"))\""
    eval "nested_$L=\"\$(shares $L nested) (max dev \$(kv dev \"\$(get $L nested)\"))\""
    eval "lat_$L=\"\$(kv p50_us \"\$(get $L lat)\") / \$(kv p99_us \"\$(get $L lat)\")\""
    eval "pp_$L=\$(kv per_sec \"\$(get $L pp)\")"
    eval "herd_$L=\$(kv H \"\$(get $L herd)\")"
    for q in q10 q50 q150; do eval "${q}_$L=\$(get $L $q | awk '{ print \$2 }')"; done
    eval "qnest_$L=\"\$(get $L qnest | awk '{ printf \"%.1f %%, c3/c1 %.2f\", \$2, \$3 }')\""
done
for L in cfs boost noboost; do
    eval "slat_$L=\"\$(kv p50_us \"\$(get $L slat)\") / \$(kv p99_us \"\$(get $L slat)\") (session CPU \$(kv s1_cpu_pct \"\$(get $L slat)\") %)\""
done
# |used - quota| as a percentage of the quota
err() { awk -v u="$1" -v q="$2" 'BEGIN { d = u - q; if (d < 0) d = -d; printf "%.1f", d * 100 / q }'; }
ratio=$(awk -v a="$pp_agentcg" -v b="$pp_cfs" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')

echo "BENCH-TABLE-BEGIN"
echo "| case | CFS (no scx scheduler) | scx_agentcg | goal |"
echo "| --- | --- | --- | --- |"
echo "| flat 100/200/300, share % (want 16.7 / 33.3 / 50.0) | $flat_cfs | $flat_agentcg | max dev <= 1 point |"
echo "| nested A(100){B,C}, D(200), share % (want 16.7 / 16.7 / 66.7) | $nested_cfs | $nested_agentcg | max dev <= 2 points |"
echo "| wakeup latency p50 / p99 (us), probe vs 8 spinners in a noisy cgroup | $lat_cfs | $lat_agentcg | report |"
echo "| message pairs (2 pairs), round trips/s | $pp_cfs | $pp_agentcg (x$ratio) | >= 0.95x CFS |"
echo "| herd: 32 bursty children of H(50) vs busy D(200), H share % (entitled 20.0) | $herd_cfs | $herd_agentcg | <= 20 + 3 |"
echo "| cpu.max 10 %, 3 spinners + busy neighbour: usage % of a CPU (error % of quota) | $q10_cfs ($(err $q10_cfs 10)) | $q10_agentcg ($(err $q10_agentcg 10)) | error <= 2 % |"
echo "| cpu.max 50 %, 3 spinners + busy neighbour | $q50_cfs ($(err $q50_cfs 50)) | $q50_agentcg ($(err $q50_agentcg 50)) | error <= 2 % |"
echo "| cpu.max 150 %, 4 spinners + busy neighbour | $q150_cfs ($(err $q150_cfs 150)) | $q150_agentcg ($(err $q150_agentcg 150)) | error <= 2 % |"
echo "| cpu.max nested: parent 50 %, children 100/300 (4 spinners each): parent usage, split | $qnest_cfs | $qnest_agentcg | 50 %, 3.00 |"
echo "| session: probe p50 / p99 (us) in an interactive step with 2 spinners, beside 6 background spinners (CFS: bg at weight 50), and the CPU the session got (% of a CPU; scx_agentcg: its cell, static) | $slat_cfs | boost: $slat_boost; no boost: $slat_noboost | p99 <= 0.5x CFS |"
echo "| session: mkdir of a session to its cell applied | n/a | $applat | <= 20 ms |"
echo "BENCH-TABLE-END"
check "scheduler exited cleanly" test "$SCHED_RC" = 0
finish
