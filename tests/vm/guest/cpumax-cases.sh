# In-BPF cpu.max cases, sourced by scenarios/cpumax*.sh with the scheduler
# flags in $SCHED_FLAGS. Usage is read from the kernel's own cpu.stat, with a
# busy unlimited neighbour in every case but the nested one.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

sched_start $SCHED_FLAGS || fail "scheduler did not start"
case $SCHED_FLAGS in
    *cgroupfs*) want="cpu.max: read from cgroupfs" ;;
    *) want="cpu.max: delivered by the kernel" ;;
esac
check "the log says which cpu.max path is in use ($want)" grep -q "$want" "$SCHED_LOG"
cg_new nb 100 > /dev/null || fail "cgroup nb"
spin_in nb 4 400   # the neighbour stays busy for the whole scenario

# limit_case CG "QUOTA PERIOD" SPINNERS WANT_PCT TOL: spinners in a limited
# cgroup use WANT_PCT of a CPU within TOL % of it. The 10 s window spans
# 100 periods; where it cuts into a period moves the result by at most one
# period's quota plus its overrun (about 1 % for quotas of 50 % and more,
# up to 1.4 % at 10 %), so 2 % holds for the large quotas. Refills that
# drifted by their timer's latency (re-armed "now + period") gave 2.3-2.8 %
# too little here: 48.6 % at q50, 146.5 % at q150.
limit_case() {
    cg_new "$1" 100 > /dev/null && cg_max "$1" "$2" || { failed "setup $1"; return; }
    sleep 0.3
    spin_in "$1" "$3" 60
    sleep 2
    u=$(cg_cpu_pct 10 "$1")
    log "$1: cpu.max '$2', $3 spinners: $u % of a CPU (quota $4 %)"
    check "$1: the spinners ran through the window" cg_busy "$1"
    check "cpu.max '$2': usage $u % within $5 % of $4 %" within "$u" "$4" "$5"
    spin_stop "$1"
}
limit_case q10 "10000 100000" 3 10 5
limit_case q50 "50000 100000" 3 50 2
limit_case q150 "150000 100000" 4 150 2

# nested: parent 50 %, unlimited children weighted 100/300, four spinners
# each (so either could fill every CPU); the neighbour pauses meanwhile
kill $(cat "$(cg_path nb)/cgroup.procs") 2>/dev/null
cg_new P 100 > /dev/null && cg_max P "50000 100000" && cg_new P/c1 100 > /dev/null \
    && cg_new P/c3 300 > /dev/null || failed "nested setup"
spin_in P/c1 4 60; spin_in P/c3 4 60
sleep 2
a1=$(cg_usage_us P/c1); a3=$(cg_usage_us P/c3); sleep 10; b1=$(cg_usage_us P/c1); b3=$(cg_usage_us P/c3)
check "nested: the spinners ran through the window" cg_busy P/c1 P/c3
tot=$(calc "(($b1 - $a1) + ($b3 - $a3)) / 100000")
r=$(calc "($b3 - $a3) / (($b1 - $a1) + 1)")
log "nested: P total $tot % (quota 50 %), c3/c1 = $r (weights 3:1)"
check "nested: parent total $tot % within 5 % of 50 %" within "$tot" 50 5
check "nested: children split by weight, about 1:3 ($r, want 3 +- 20 %)" within "$r" 3 20
agentcg-load rawreq /var/run/scx/root/stats '{"req":"stats","args":{"target":"top"}}' > /tmp/P.json
pu=$(sed -n 's/.*"P":{[^}]*"usage_usec":\([0-9]*\).*/\1/p' /tmp/P.json)
pk=$(cg_usage_us P)
check "nested: the parent's stats count its children (${pu:-0} us vs cpu.stat $pk us)" within "${pu:-0}" "$pk" 3
spin_stop P/c1 P/c3

# forks under a throttled parent: fork runs our init_task with migration
# disabled; preempted there while the parent was throttled, the task was
# stopped again each time it ran (it never left its CPU's local DSQ), held
# the RCU read lock, and sched_ext aborted on the RCU stall within a few
# rounds (before bw_may_stop()). A 10 ms period throttles ten times as
# often as 100 ms and reproduced it in round 1 or 2 of 6 (100 ms: round 4-6
# of 25). Both source variants share the BPF path, so one runs it.
case $SCHED_FLAGS in
*cgroupfs*) ;;
*)
    r=0; stuck=""
    while [ $r -lt 6 ]; do
        r=$((r + 1))
        cg_new F$r 100 > /dev/null && cg_max F$r "2000 10000" && cg_new F$r/s 100 > /dev/null \
            && cg_new F$r/f 300 > /dev/null || { failed "fork round $r setup"; break; }
        spin_in F$r/s 4 3
        agentcg-load forkstorm --cgroup F$r/f --procs 3 --duration 3 > /dev/null &
        spin_in F$r/f 4 3
        sleep 3
        wait_until 20 cg_idle F$r/s F$r/f \
            || { stuck=$r; break; }
        sched_alive || { stuck="$r (scheduler exited)"; break; }
    done
    log "forks under a throttled parent: $r rounds, stuck in round ${stuck:-none}"
    check "forks under a throttled parent: all 6 rounds finish (stuck: ${stuck:-none})" test -z "$stuck"
    check "forks under a throttled parent: scheduler still running" sched_alive
    ;;
esac

# burst: quota 100 ms per 1 s with 100 ms of burst. After several idle
# periods the budget is quota + burst (200 ms); busy spinners may spend it
# in one period and no more. The scheduler records the most the cgroup
# used in any one period (max_period_usec, from its own charges, which are
# the kernel's sum_exec_runtime), so the check does not depend on when this
# shell wakes up. The kernel's cpu.stat cross-checks the scheduler's total.
# The refill timer starts when the limit is set, so periods begin at
# tset + k s; the spinners start early in a period (phase 0.05-0.6 s), else
# a start late in a period splits the 200 ms between two periods (seen on a
# slow host: 169 ms in one period, the rest in the next).
# Two spinners, the neighbour paused: with four busy vCPUs on a 2-core host
# a vCPU the host descheduled still accrues guest run time, which read as
# 233 ms in one period in a fresh-clone run (4 spinners beside the
# neighbour); two busy vCPUs fit the host. The overrun bound shrinks with
# them (one tick per CPU running the cgroup: 2 * 4 ms).
cg_new bu 100 > /dev/null || failed "burst setup"
tset=$(cut -d' ' -f1 /proc/uptime)
cg_max bu "100000 1000000" 100000 || failed "burst limits"
sleep 3.5
ph=$(awk -v t="$(cut -d' ' -f1 /proc/uptime)" -v s="$tset" 'BEGIN { d = t - s; print d - int(d) }')
if fge "$ph" 0.6; then sleep "$(calc "1.05 - $ph")"; fi
a=$(cg_usage_us bu); t0=$(cut -d' ' -f1 /proc/uptime)
log "burst: spinners start $(calc "$t0 - $tset") s after the limit was set"
agentcg-load spin --cgroup bu --threads 2 --duration 3.2 > /dev/null
b=$(cg_usage_us bu); t1=$(cut -d' ' -f1 /proc/uptime)
sleep 1.2   # the period the spinners ended in finishes
agentcg-load rawreq /var/run/scx/root/stats '{"req":"stats","args":{"target":"top"}}' > /tmp/bu.json
bmax=$(sed -n 's/.*"bu":{[^}]*"max_period_usec":\([0-9]*\).*/\1/p' /tmp/bu.json)
busage=$(sed -n 's/.*"bu":{[^}]*"usage_usec":\([0-9]*\).*/\1/p' /tmp/bu.json)
bmax=$(calc "${bmax:-0} / 1000"); used=$(calc "($b - $a) / 1000")
log "burst: most used in one period $bmax ms (quota 100 ms + burst 100 ms); $used ms over 3.2 s; scheduler total ${busage:-?} us, cpu.stat $b us"
check "burst: the burst was used ($bmax ms >= 180 in one period)" fge "$bmax" 180
# the design's worst-case overrun is one 4 ms tick per CPU (bandwidth.bpf.h),
# assuming ticks on time; under TCG a vCPU the host descheduled still
# accrues run time, so both bounds get the 5 % measurement tolerance every
# other cpu.max check here has
ovr=$((2 * 4))   # ms: one 4 ms tick for each of the 2 CPUs running bu
check "burst: never more than quota + burst + overrun bound ($bmax ms <= $((200 + ovr)) + 5 %)" \
    fle "$bmax" "$(calc "(200 + $ovr) * 1.05")"
# over the time the spinners really ran (3.2 s, more if the tool's own main
# thread, throttled with them, wakes late to stop them): the 200 ms budget,
# one 100 ms refill per period boundary in that window, and the overrun bound
win=$(calc "$t1 - $t0"); refills=$(awk -v w="$win" 'BEGIN { print int(w) + 1 }')
bound=$((200 + refills * 100 + ovr))
check "burst: total over the run bounded ($used ms in $win s <= $bound + 5 %)" fle "$used" "$(calc "$bound * 1.05")"
check "burst: scheduler's usage agrees with cpu.stat (${busage:-0} vs $b us, 2 %)" within "${busage:-0}" "$b" 2
wait_until 15 cg_idle bu
spin_in nb 4 400

# restricted affinity: spinners pinned to CPUs 1-2 (taskset) in a 20 %
# cgroup, beside the busy neighbour: they queue per CPU, and are throttled
cg_new pin 100 > /dev/null && cg_max pin "20000 100000" || failed "pinned setup"
sleep 0.3
taskset -c 1,2 agentcg-load spin --cgroup pin --threads 3 --duration 60 > /dev/null &
sleep 2
u=$(cg_cpu_pct 10 pin)
log "pin: 3 spinners on CPUs 1-2, cpu.max 20 %: $u % of a CPU"
check "pin: the spinners ran through the window" cg_busy pin
check "restricted affinity: usage $u % within 5 % of 20 %" within "$u" 20 5
spin_stop pin

# runtime changes: 20 % -> 60 % -> max while spinning
cg_new rc 100 > /dev/null && cg_max rc "20000 100000" || failed "change setup"
spin_in rc 3 60
sleep 2
# steady state: a longer window than the within-a-period checks below
u=$(cg_cpu_pct 4 rc); check "change: 20 % applies ($u %)" within "$u" 20 10
cg_max rc "60000 100000"; sleep 0.2
u=$(cg_cpu_pct 2 rc); check "change: 60 % applies within a period ($u %)" within "$u" 60 10
echo "max 100000" > "$(cg_path rc)/cpu.max"; sleep 0.2
u=$(cg_cpu_pct 2 rc); check "change: max lifts the limit ($u % > 150 %)" fge "$u" 150
check "change: the spinners ran through the windows" cg_busy rc
spin_stop rc

# moving a task: a spinner moves from an unlimited cgroup into a 20 % one
# (limited within a period) and back out (unlimited again: as much as it
# had before the move, beside the same neighbour; in this VM a lone spinner
# next to a busy neighbour reads 75-85 % of a CPU, under CFS as well)
cg_new mvfree 100 > /dev/null && cg_new mvlim 100 > /dev/null && cg_max mvlim "20000 100000" \
    || failed "move setup"
sleep 0.3
agentcg-load spin --cgroup mvfree --threads 1 --duration 60 > /dev/null &
mvpid=$!
sleep 1
u0=$(cg_cpu_pct 2 mvfree); log "move: the spinner before the move: $u0 % of a CPU"
echo $mvpid > "$(cg_path mvlim)/cgroup.procs"; sleep 0.2
u=$(cg_cpu_pct 2 mvlim); check "move into a 20 % cgroup: limited ($u %)" within "$u" 20 10
echo $mvpid > "$(cg_path mvfree)/cgroup.procs"; sleep 0.2
u=$(cg_cpu_pct 2 mvfree)
check "move back out: unlimited again ($u % >= 90 % of its $u0 % before the move)" \
    fge "$u" "$(calc "$u0 * 0.9")"
check "move back out: not limited (>= 50 %, the limit was 20 %)" fge "$u" 50
check "move: the spinner ran through the windows" kill -0 $mvpid
kill $mvpid; wait $mvpid

# odd but valid values: a long period, and a tiny quota with a fork storm
cg_new lp 100 > /dev/null && cg_max lp "500000 1000000" || failed "long period setup"
sleep 0.3
spin_in lp 2 60
sleep 1
u=$(cg_cpu_pct 6 lp); log "period 1 s, quota 0.5 s: $u %"
check "lp: the spinners ran through the window" cg_busy lp
check "period 1 s: usage $u % within 10 % of 50 %" within "$u" 50 10
spin_stop lp
cg_new tiny 100 > /dev/null && cg_max tiny "1000 1000000" || failed "tiny setup"
sleep 0.5   # applied within a period (the cgroupfs source polls every 100 ms)
agentcg-load forkstorm --cgroup tiny --procs 2 --duration 8 > /tmp/tiny.out &
spin_in tiny 2 8
u=$(cg_cpu_pct 6 tiny); log "quota 1 ms per 1 s with a fork storm: $u %"
check "tiny quota holds ($u % <= 1 %)" fle "$u" 1
# removing the limit lets the storm finish and report
echo "max 1000000" > "$(cg_path tiny)/cpu.max"
wait_until 30 cg_idle tiny
check "fork storm in the tiny cgroup finished once the limit was removed" test -s /tmp/tiny.out

agentcg-load rawreq /var/run/scx/root/stats '{"req":"stats","args":{"target":"top"}}' > /tmp/bw.json
check "stats list limited cgroups" grep -q '"bandwidth":{.*"q10":{' /tmp/bw.json
check "stats count throttling" grep -q '"q10":{[^}]*"nr_throttled":[1-9]' /tmp/bw.json
check "scheduler still running" sched_alive
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
