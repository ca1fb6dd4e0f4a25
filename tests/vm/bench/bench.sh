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

drain() { wait_until 30 sh -c '! pidof agentcg-load' > /dev/null; }

# each case writes "KEY VALUE" lines to /tmp/res.$LABEL
run_cases() {
    out=/tmp/res.$1
    : > "$out"
    for c in f100 f200 f300; do spin_in $c 4 $((WIN + 3)); done
    sleep 2; s=$(cg_shares $WIN f100 f200 f300); drain
    echo "flat $s dev=$(max_dev "$s" "16.7 33.3 50.0")" >> "$out"

    for c in A/B A/C D; do spin_in $c 4 $((WIN + 3)); done
    sleep 2; s=$(cg_shares $WIN A/B A/C D); drain
    echo "nested $s dev=$(max_dev "$s" "16.7 16.7 66.7")" >> "$out"

    spin_in noisy 8 $((WIN + 3))
    sleep 1
    l=$(agentcg-load wakeup --cgroup probe --interval-us 1000 --duration $WIN); drain
    echo "lat $l" >> "$out"

    l=$(agentcg-load pingpong --cgroup pairs --pairs 2 --duration $WIN); drain
    echo "pp $l" >> "$out"

    j=1; while [ $j -le 32 ]; do
        agentcg-load burst --cgroup H/k$j --on-ms 1 --off-ms 3 --duration $((WIN + 3)) > /dev/null &
        j=$((j + 1)); done
    spin_in HD 4 $((WIN + 3))
    sleep 2; s=$(cg_shares $WIN H HD); drain
    echo "herd $s" >> "$out"
    log "$1 done: $(tr '\n' ';' < "$out")"
}

get() { grep "^$2 " "/tmp/res.$1" | head -n1; }
shares() { get "$1" "$2" | awk '{ s = ""; for (i = 2; i <= NF; i++) if ($i !~ /^dev=/) { split($i, kv, "="); s = s (s ? " / " : "") kv[2] } print s }'; }

run_cases cfs
sched_start || fail "scheduler did not start"
run_cases agentcg
sched_stop INT

for L in cfs agentcg; do
    eval "flat_$L=\"\$(shares $L flat) (max dev \$(kv dev \"\$(get $L flat)\"))\""
    eval "nested_$L=\"\$(shares $L nested) (max dev \$(kv dev \"\$(get $L nested)\"))\""
    eval "lat_$L=\"\$(kv p50_us \"\$(get $L lat)\") / \$(kv p99_us \"\$(get $L lat)\")\""
    eval "pp_$L=\$(kv per_sec \"\$(get $L pp)\")"
    eval "herd_$L=\$(kv H \"\$(get $L herd)\")"
done
ratio=$(awk -v a="$pp_agentcg" -v b="$pp_cfs" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')

echo "BENCH-TABLE-BEGIN"
echo "| case | CFS (no scx scheduler) | scx_agentcg | goal |"
echo "| --- | --- | --- | --- |"
echo "| flat 100/200/300, share % (want 16.7 / 33.3 / 50.0) | $flat_cfs | $flat_agentcg | max dev <= 1 point |"
echo "| nested A(100){B,C}, D(200), share % (want 16.7 / 16.7 / 66.7) | $nested_cfs | $nested_agentcg | max dev <= 2 points |"
echo "| wakeup latency p50 / p99 (us), probe vs 8 spinners in a noisy cgroup | $lat_cfs | $lat_agentcg | report |"
echo "| message pairs (2 pairs), round trips/s | $pp_cfs | $pp_agentcg (x$ratio) | >= 0.95x CFS |"
echo "| herd: 32 bursty children of H(50) vs busy D(200), H share % (entitled 20.0) | $herd_cfs | $herd_agentcg | <= 20 + 3 |"
echo "BENCH-TABLE-END"
check "scheduler exited cleanly" test "$SCHED_RC" = 0
finish
