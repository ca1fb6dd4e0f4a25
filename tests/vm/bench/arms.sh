# Guest side of the scheduler comparison in tests/bench.sh: the same cases
# under every arm (CFS = no sched_ext scheduler, scx_flatcg, scx_bpfland,
# scx_agentcg), REPS repetitions, arms interleaved within each repetition.
# Prints "ARM-RESULT arm rep case value" lines; the host makes the tables.
#
# Arguments: WIN REPS  (arms whose binary is missing are skipped and
# reported as "ARM-MISSING arm")
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

WIN=${1:-6}
REPS=${2:-3}
ARMS="cfs"
for a in flatcg bpfland; do
    if command -v scx_$a > /dev/null; then ARMS="$ARMS $a"; else echo "ARM-MISSING $a"; fi
done
ARMS="$ARMS agentcg"

cg_new f100 100 > /dev/null; cg_new f200 200 > /dev/null; cg_new f300 300 > /dev/null
cg_new A 100 > /dev/null; cg_new A/B 100 > /dev/null; cg_new A/C 100 > /dev/null; cg_new D 200 > /dev/null
cg_new noisy 100 > /dev/null; cg_new probe 100 > /dev/null; cg_new hb 100 > /dev/null
cg_new q20 100 > /dev/null && cg_max q20 "20000 100000"
session_setup || fail "session cgroups"

res_as() { echo "ARM-RESULT $1 $REP $2 $3"; }
# every case of a repetition, for an arm whose scheduler did not start
CASES="flat flat_stressng nested hackbench hackbench_bpf_ms hackbench_bpf_pct cyclictest_p99_us cyclictest_p50_us cyclictest_wake_run_p99_us cpumax20 session_p99_us session_p50_us session_cpu_pct"
# A sched_ext arm's result counts only if its scheduler is still the one
# loaded when the case ends: after a scheduler exits, the kernel falls back
# to CFS, and the case would measure CFS under the arm's name. Such a result
# is reported as "lost", with the scheduler's log and sched_ext's messages.
res() {
    if [ "$ARM" != cfs ] && [ "$(sched_state)" != enabled ]; then
        res_as "$ARM" "$1" lost
        if [ -z "$ARM_LOST" ]; then
            ARM_LOST=1
            log "$ARM: sched_ext is '$(sched_state)' at the end of case $1; the scheduler's log:"
            tail -n 20 "$SCHED_LOG" 2>/dev/null
            dmesg | grep -i -E 'sched_ext|scx' | tail -n 10
        fi
        return 0
    fi
    res_as "$ARM" "$@"
}

arm_start() {
    ARM_LOST=""
    case $1 in
        cfs) return 0 ;;
        agentcg) sched_start ;;
        *)
            SCHED_LOG=/tmp/$1.log
            "scx_$1" > "$SCHED_LOG" 2>&1 &
            SCHED_PID=$!
            wait_until 60 sh -c "[ \"\$(cat $SCX_STATE)\" = enabled ]"
            ;;
    esac
}
arm_stop() {
    [ "$1" = cfs ] && return 0
    sched_stop INT > /dev/null
    SCHED_LOG=/tmp/sched.log
}

# session_case ROW: the session case under the loaded arm, reported as ROW
# (res's check that the arm's scheduler is still loaded applies)
session_case() {
    _l=$(session_probe $WIN)
    log "$1 session probe: $_l"
    _arm=$ARM; ARM=$1
    for _k in p99_us p50_us; do res session_$_k "$(kv $_k "$_l")"; done
    res session_cpu_pct "$(kv s1_cpu_pct "$_l")"
    ARM=$_arm
}

# hackbench_run: the hackbench case's run, in cgroup hb (output discarded)
hackbench_run() { cg_run hb hackbench -g 4 -l 200 > /dev/null 2>&1; }

# bpf_run_ns PID: the summed run time (ns) of every BPF program PID holds
# open, as the kernel counts it while kernel.bpf_stats_enabled is 1
bpf_run_ns() {
    cat /proc/"$1"/fdinfo/* 2>/dev/null | awk '$1 == "run_time_ns:" { t += $2 } END { printf "%.0f\n", t }'
}

# The cyclictest case, one definition for the plain and the traced run:
# one SCHED_OTHER thread, 1 ms interval, histogram with 1 us buckets, in
# the probe cgroup. Extra arguments go to cyclictest (the bounds below).
cyclictest_probe() {
    cg_run probe cyclictest -q -t 1 --policy=other -i 1000 -D $WIN -h 100000 "$@"
}

# cyclictest p50 and p99 from its histogram (1 us buckets; "n/a n/a" if it
# printed none). Its numbers are zero-padded, which busybox awk would read
# as octal.
cyc_p50_p99() {
    awk '/^[0-9]+[ \t]+[0-9]+/ { a = $1; b = $2; sub(/^0+/, "", a); sub(/^0+/, "", b)
                                  v = a + 0; k = b + 0; if (k > 0) { cnt[v] = k; t += k; if (v > mx) mx = v } }
         END { p50 = "n/a"; p99 = "n/a"
               if (t > 0) { c = 0; for (i = 0; i <= mx; i++) { c += cnt[i]
                   if (p50 == "n/a" && c >= t * 0.5) p50 = i
                   if (c >= t * 0.99) { p99 = i; break } } }
               print p50, p99 }'
}

# Where cyclictest's p99 comes from: a second run whose measurement thread
# (the newest cyclictest thread; the main thread, made first, wakes every
# 10 ms) is traced by wake_to_run (measure.sh) for all but the run's first
# and last second (for 1 s in a window under 3 s). Prints the p99 of
# waking -> running in us: the scheduler's part. The rest of cyclictest's
# latency is the timer firing late, which no scheduler controls (under TCG:
# the host running another vCPU thread). "n/a" if fewer than 100 wake-ups
# were traced.
traced_cyclictest() {
    cyclictest_probe > /dev/null 2>&1 &
    _cyc=$!
    sleep 1
    _s=$((WIN - 2)); [ "$_s" -ge 1 ] || _s=1   # a window shorter than 3 s
    _l=$(wake_to_run "$_s" "$(cg_thread probe cyclictest)")
    wait $_cyc
    if [ "$(kv w2r_n "$_l")" -ge 100 ] 2>/dev/null; then kv w2r_p99_us "$_l"; else echo n/a; fi
}

REP=1
while [ $REP -le "$REPS" ]; do
    for ARM in $ARMS; do
        arm_start $ARM || { for c in $CASES; do res_as "$ARM" "$c" error; done; continue; }
        for c in f100 f200 f300; do spin_in $c 4 $((WIN + 60)); done
        sleep 2; s=$(cg_shares $WIN f100 f200 f300); drain_loads
        log "$ARM flat shares: $s"
        res flat "$(max_dev "$s" "16.7 33.3 50.0")"

        # the same with stress-ng's CPU workers instead of our spinners
        if command -v stress-ng > /dev/null; then
            for c in f100 f200 f300; do
                cg_run $c stress-ng --cpu 4 --timeout $((WIN + 60))s --quiet > /dev/null 2>&1 &
            done
            sleep 2; s=$(cg_shares $WIN f100 f200 f300)
            killall stress-ng 2> /dev/null
            wait_until 30 sh -c '! pidof stress-ng' > /dev/null
            log "$ARM flat (stress-ng) shares: $s"
            res flat_stressng "$(max_dev "$s" "16.7 33.3 50.0")"
        else
            res flat_stressng n/a
        fi

        for c in A/B A/C D; do spin_in $c 4 $((WIN + 60)); done
        sleep 2; s=$(cg_shares $WIN A/B A/C D); drain_loads
        log "$ARM nested shares: $s"
        res nested "$(max_dev "$s" "16.7 16.7 66.7")"

        t0=$(cut -d' ' -f1 /proc/uptime)
        hackbench_run
        res hackbench "$(calc "$(cut -d' ' -f1 /proc/uptime) - $t0")"

        # The scheduler's own cost: the run time of its BPF programs in a
        # second hackbench run, in ms and in % of the CPU time hackbench's
        # cgroup used. A run of its own: the counting adds a clock read to
        # every program run, which the timed run above should not carry.
        if [ $ARM != cfs ]; then
            echo 1 > /proc/sys/kernel/bpf_stats_enabled
            b0=$(bpf_run_ns $SCHED_PID); u0=$(cg_usage_us hb)
            hackbench_run
            b1=$(bpf_run_ns $SCHED_PID); u1=$(cg_usage_us hb)
            echo 0 > /proc/sys/kernel/bpf_stats_enabled
            log "$ARM hackbench: BPF $b0 -> $b1 ns, cgroup hb $u0 -> $u1 us"
            res hackbench_bpf_ms "$(calc "($b1 - $b0) / 1000000")"
            res hackbench_bpf_pct "$(pct "$(calc "($b1 - $b0) / 1000")" "$(calc "$u1 - $u0")")"
        fi

        spin_in noisy 8 $((WIN + 60)); sleep 1
        p=$(cyclictest_probe 2>/dev/null | cyc_p50_p99)
        drain_loads
        res cyclictest_p50_us "${p% *}"
        res cyclictest_p99_us "${p#* }"

        # Two bounds for the case above, under CFS only, with the probe's
        # thread on CPU 0 (-a 0). cfs-fifo: the probe as SCHED_FIFO, which
        # preempts the spinner at every wake-up, the best any preemption
        # rule can do. cfs-isolated: SCHED_OTHER, the spinners' cpuset
        # without CPU 0, so the probe's vCPU idles between wake-ups.
        if [ $ARM = cfs ]; then
            spin_in noisy 8 $((WIN + 60)); sleep 1
            p=$(cyclictest_probe --policy=fifo -p 90 -a 0 2>/dev/null | cyc_p50_p99)
            drain_loads
            res_as cfs-fifo cyclictest_p99_us "${p#* }"
            res_as cfs-fifo cyclictest_p50_us "${p% *}"
            echo "1-$((AGENTCG_SMP - 1))" > "$(cg_path noisy)/cpuset.cpus"
            spin_in noisy 8 $((WIN + 60)); sleep 1
            p=$(cyclictest_probe -a 0 2>/dev/null | cyc_p50_p99)
            drain_loads
            log "cfs-isolated: spinners on CPUs $(cat "$(cg_path noisy)/cpuset.cpus.effective")"
            echo "0-$((AGENTCG_SMP - 1))" > "$(cg_path noisy)/cpuset.cpus"
            res_as cfs-isolated cyclictest_p99_us "${p#* }"
            res_as cfs-isolated cyclictest_p50_us "${p% *}"
        fi

        spin_in noisy 8 $((WIN + 60)); sleep 1
        p=$(traced_cyclictest)
        drain_loads
        res cyclictest_wake_run_p99_us "$p"

        spin_in q20 3 $((WIN + 60)); sleep 2
        res cpumax20 "$(cg_cpu_pct $WIN q20)"; drain_loads

        # An agent session (measure.sh): an interactive step's wake-up
        # probe beside the session's background step, and the CPU the
        # session got. scx_agentcg runs it as a session (its cell, the
        # policy's classes), once with the default static cells and once
        # with --enable-borrowing (row agentcg-borrow); the other arms get
        # the policy's weights by cpu.weight.
        if [ $ARM = agentcg ]; then
            session_policy true > /tmp/pol.toml
            for v in agentcg agentcg-borrow; do
                arm_stop agentcg
                borrow=""; [ $v = agentcg ] || borrow=--enable-borrowing
                if ! sched_start --cell-parent-cgroup $SESSION_P --policy /tmp/pol.toml $borrow; then
                    # say so in the table rather than leave the rows out
                    for k in p99_us p50_us cpu_pct; do res_as $v session_$k error; done
                    break
                fi
                session_case $v
            done
        else
            session_bg_weight 50
            session_case $ARM
            session_bg_weight 100
        fi
        arm_stop $ARM
        case " $RAN " in *" $ARM "*) ;; *) RAN="$RAN $ARM" ;; esac
        log "rep $REP $ARM done"
    done
    REP=$((REP + 1))
done
check "every arm ran at least one repetition ($RAN of $ARMS)" test "$(echo $RAN | wc -w)" = "$(echo $ARMS | wc -w)"
finish
