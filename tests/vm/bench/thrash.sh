# Guest side of tests/bench.sh's thrash-victim case: the wake-up p99 of a
# probe session alone, and beside a neighbour session thrashing under
# memory.high (48M for a 192 MiB working set, 1 GiB zram swap, 4 threads),
# under the fair scheduler and under scx_agentcg (thrash penalties on),
# arms interleaved, REPS repetitions in this boot. Prints
# "THRASH ARM REP ALONE_P99_US WITH_P99_US" lines; the host makes the table.
#
# Arguments: REPS
. /lib/agentcg/lib.sh

REPS=${1:-3}
zram_swap 1G lz4hc || fail "zram swap"
P=agentcg
cg_parent $P > /dev/null || fail "managed parent"
cg_new $P/hog 100 > /dev/null && echo 48M > "$CG_ROOT/$P/hog/memory.high" || fail "hog session"
cg_new $P/probe 100 > /dev/null || fail "probe session"

probe() { agentcg-load wakeup --cgroup $P/probe --interval-us 1000 --duration 6 | sed -n 's/.* p99_us=\([0-9]*\).*/\1/p'; }

rep=1 measured=0
while [ "$rep" -le "$REPS" ]; do
    for arm in cfs agentcg; do
        if [ $arm = agentcg ]; then sched_start > /dev/null || fail "scheduler did not start"; fi
        alone=$(probe)
        agentcg-load memhog --cgroup $P/hog --mb 192 --threads 4 --duration 12 > /dev/null & hog=$!
        sleep 4
        with=$(probe)
        wait $hog
        if [ $arm = agentcg ]; then sched_alive || fail "the scheduler died"; sched_stop INT > /dev/null; fi
        echo "THRASH $arm $rep ${alone:-0} ${with:-0}"
        [ -n "$alone" ] && [ -n "$with" ] && measured=$((measured + 1))
    done
    rep=$((rep + 1))
done
check "every arm measured both p99s in every repetition ($measured of $((REPS * 2)))" test "$measured" -eq $((REPS * 2))
finish
