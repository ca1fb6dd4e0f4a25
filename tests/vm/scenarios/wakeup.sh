# vm: --smp 4 --mem 2G --timeout 400
# Wake-up preemption: a timer probe (1 ms sleeps) in its own cgroup beside 8
# spinners in another, on 4 busy vCPUs. Measured under the fair scheduler
# and under scx_agentcg in the same boot, 3 rounds alternated; the probe
# runs unpinned and pinned to CPU 0 (taskset; cyclictest pins its thread the
# same way). The probe's cgroup is far behind its share, so each wake-up
# should preempt a spinner at once, as the fair scheduler does: the median
# wake-up latency under scx_agentcg must be at most 2x the fair scheduler's
# + 500 us. Before pinned tasks took part in wake-up preemption, the pinned
# probe's median was 4-5 ms (against 0.2-0.4 ms under the fair scheduler):
# it waited for CPU 0's slice to end on every wake-up.
# The timer probe's latency also holds the timer's own lateness, mostly the
# host descheduling a vCPU, so each probe is also traced (wake_to_run): the
# median time from the wake-up to running must be at most 2x the fair
# scheduler's + 100 us. When a wake-up preemption went through the cgroup's
# queue and a kick of the CPU (before direct_wake()), it was 248-384 us
# against the fair scheduler's 50-157 us (median 354 > bound 296, FAIL).
# p99s are logged, not asserted: under TCG on 2 host cores the tail is the
# host descheduling a vCPU, for every scheduler alike.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

W=4
cg_new noisy 100 > /dev/null || fail "cgroup noisy"
cg_new probe 100 > /dev/null || fail "cgroup probe"

# probe KIND (free|pinned): one measurement; prints the wakeup tool's line
# and wake_to_run's figures, traced over 2 s in the middle of it
probe() {
    spin_in noisy 8 $((W + 60)); sleep 1
    pin=; [ "$1" = pinned ] && pin="taskset -c 0"
    cg_run probe $pin agentcg-load wakeup --interval-us 1000 --duration $W > /tmp/probe.out &
    _pp=$!
    sleep 1
    _w2r=$(wake_to_run 2 "$(cg_thread probe load-0)")
    wait $_pp
    if cg_busy noisy; then _nb=1; else _nb=0; fi
    spin_stop noisy
    echo "$(cat /tmp/probe.out) $_w2r noisy_through=$_nb"
}
med3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

preempts=0
for r in 1 2 3; do
    for arm in cfs agentcg; do
        if [ $arm = agentcg ]; then
            sched_start || fail "scheduler did not start"
        fi
        for kind in free pinned; do
            line=$(probe $kind)
            log "round $r $arm $kind: $line"
            eval "P50_${arm}_${kind}=\"\${P50_${arm}_${kind}:-} $(kv p50_us "$line")\""
            eval "W2R_${arm}_${kind}=\"\${W2R_${arm}_${kind}:-} $(kv w2r_p50_us "$line")\""
            check_ge "round $r $arm $kind: probe ran" "$(kv samples "$line")" 100
            check_ge "round $r $arm $kind: wake-ups traced" "$(kv w2r_n "$line")" 100
            check_eq "round $r $arm $kind: the spinners ran through the probe" 1 "$(kv noisy_through "$line")"
        done
        if [ $arm = agentcg ]; then
            # the first stats request of this scheduler run: its whole run
            n=$(agentcg-load rawreq /var/run/scx/root/stats '{"req":"stats","args":{}}' \
                | tr ',{' '\n\n' | sed -n 's/^"wake_preempts":\([0-9]*\).*/\1/p' | head -n1)
            preempts=$((preempts + ${n:-0}))
            check "round $r: scheduler alive" sched_alive
            sched_stop INT
            check_eq "round $r: exit status" 0 "$SCHED_RC"
        fi
    done
done

check_ge "wake-up preemptions counted" "$preempts" 100
for kind in free pinned; do
    eval "c=\$(med3 \$P50_cfs_$kind); a=\$(med3 \$P50_agentcg_$kind)"
    bound=$((2 * c + 500))
    log "$kind probe: median p50 $a us under scx_agentcg, $c us under the fair scheduler (bound $bound)"
    check_le "$kind probe: median wake-up latency <= 2x the fair scheduler's + 500 us" "$a" "$bound"
    eval "c=\$(med3 \$W2R_cfs_$kind); a=\$(med3 \$W2R_agentcg_$kind)"
    bound=$((2 * c + 100))
    log "$kind probe: median wake-to-run p50 $a us under scx_agentcg, $c us under the fair scheduler (bound $bound)"
    check_le "$kind probe: median wake-to-run <= 2x the fair scheduler's + 100 us" "$a" "$bound"
done
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
