# vm: --smp 4 --mem 2G --timeout 420
# Cells: sessions (children of agentcg) get disjoint CPUs; a session created
# at run time gets a cell and one removed frees its CPUs; a session's cpuset
# is honoured; `scx_agentcg run` places a command in its step cgroup and
# cleans up; borrowing lends idle CPUs and takes them back, and a task
# pinned to a lent CPU outside its cell preempts the borrower; rebalancing
# moves CPUs toward demand.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

P=agentcg
cg_parent $P > /dev/null \
    || fail "managed parent"
cg_new $P/sA 100 > /dev/null && cg_new $P/sB 100 > /dev/null || fail "sessions"

# --- bad input is rejected before attaching
scx_agentcg --cell-parent-cgroup nosuch > /tmp/bad.out 2>&1
check "a missing parent is rejected, naming it" grep -q "nosuch does not exist" /tmp/bad.out
check "the scheduler did not attach" test "$(sched_state)" = disabled

# --- disjoint cells
sched_start --cell-parent-cgroup $P --system-cell-min-cpus 1 || fail "scheduler did not start"
check "the log names the managed parent" wait_until 5 grep -q "cells: sessions are the children of" "$SCHED_LOG"
spin_in $P/sA 3 12
spin_in $P/sB 3 12
sleep 1.5
stats_json /tmp/c1.json
la=$(cell_field /tmp/c1.json sA cpulist); lb=$(cell_field /tmp/c1.json sB cpulist)
ls0=$(cell_field /tmp/c1.json system cpulist)
log "cells: system=$ls0 sA=$la sB=$lb"
check "sA has a cell" test -n "$la"
check "sB has a cell" test -n "$lb"
sa=$(cg_cpus_seen $P/sA 3); sb=$(cg_cpus_seen $P/sB 3)
log "seen: sA on [$sa], sB on [$sb]"
check "sA's and sB's spinners were seen running" sh -c "[ -n '$sa' ] && [ -n '$sb' ]"
check "sA's spinners stay on its cell ($sa in $la)" all_in_cpulist "$sa" "$la"
check "sB's spinners stay on its cell ($sb in $lb)" all_in_cpulist "$sb" "$lb"
for c in $sa; do
    check "CPU $c is not shared by sA and sB" ! in_cpulist "$c" "$lb"
done
wait_until 15 cg_idle $P/sA

# --- a session created at run time gets a cell; removed, its cell goes
mkdir "$CG_ROOT/$P/sC"
has_cell() {   # has_cell NAME: the running scheduler reports a cell for NAME
    stats_json /tmp/cc.json && [ -n "$(cell_field /tmp/cc.json "$1" cpus)" ]
}
no_cell() {   # no_cell NAME: the scheduler answers, and has no cell for NAME
    stats_json /tmp/cc.json && grep -q '"cells":{' /tmp/cc.json && [ -z "$(cell_field /tmp/cc.json "$1" cpus)" ]
}
check "a new session gets a cell" wait_until 3 has_cell sC
lat=$(sed -n 's/.*"cell_apply_latency_us":\([0-9]*\).*/\1/p' /tmp/cc.json)
log "mkdir to cell applied: ${lat:-?} us (scheduler's measure); cells: $(grep -o '"cells":{.*}},"cgroups"' /tmp/cc.json | head -c 300)"
check "the apply latency is recorded" test -n "$lat"
rmdir "$CG_ROOT/$P/sC"
check "a removed session's cell is freed" wait_until 3 no_cell sC

# --- cpuset honoured
cg_new $P/sD 100 > /dev/null && echo 3 > "$CG_ROOT/$P/sD/cpuset.cpus" || failed "cpuset setup"
sleep 1.5   # cpuset.cpus is seen at the next rescan (1 s)
stats_json /tmp/c4.json
ld=$(cell_field /tmp/c4.json sD cpulist)
check_eq "sD's cell is its cpuset" "3" "$ld"
rmdir "$CG_ROOT/$P/sD"

# --- the step launcher
out=$(scx_agentcg run --session sL --step t1 -- sh -c 'cat /proc/self/cgroup; exit 7')
rc=$?
log "run: $out (rc $rc)"
check_eq "run: the command ran in its step cgroup" "0::/$P/sL/t1" "$out"
check_eq "run: the command's exit status is returned" 7 "$rc"
check "run: the empty step cgroup is removed" test ! -d "$CG_ROOT/$P/sL/t1"
check "run: the session stays" test -d "$CG_ROOT/$P/sL"
scx_agentcg run --session sL --step t2 -- /no/such/cmd 2> /tmp/run.err
check_eq "run: a missing command exits 127" 127 "$?"
scx_agentcg run --session 'a/b' -- true 2> /tmp/run.err
check "run: a bad session name is rejected" grep -q "session" /tmp/run.err
rmdir "$CG_ROOT/$P/sL" 2>/dev/null

# --- 1,000 step cgroups created and removed under load
spin_in $P/sA 2 60
spin_in $P/sB 2 60
i=0
while [ $i -lt 1000 ]; do
    mkdir "$CG_ROOT/$P/sA/st$i" && rmdir "$CG_ROOT/$P/sA/st$i"
    i=$((i + 1))
done
check "1,000 step cgroups: scheduler still running" sched_alive
kill $(cat "$(cg_path $P/sA)/cgroup.procs" "$(cg_path $P/sB)/cgroup.procs") 2>/dev/null
wait_until 5 cg_idle $P/sA

# --- a task that comes into sA's cell from a CPU outside it gets its turn.
# Dispatch prefers a queued task that last ran on the dispatching CPU; with
# two local spinners taking turns on sA's CPU, a spinner that last ran on a
# system CPU was passed over every time, until the watchdog aborted the
# scheduler (CI, the case above). The newcomer runs pinned to a system CPU
# first, then its affinity is widened: it is queued for sA's cell while its
# last CPU is outside it.
spin_in $P/sA 2 20
c0=${ls0%%[-,]*}
taskset -c "$c0" agentcg-load spin --cgroup $P/sA --threads 1 --duration 20 > /dev/null &
fpid=$!
sleep 1
for t in /proc/$fpid/task/*; do taskset -p -c 0-3 "${t##*/}" > /dev/null; done
sleep 1
ticks() { awk '{ print $14 + $15 }' /proc/$fpid/stat; }
t0=$(cut -d' ' -f1 /proc/uptime); k0=$(ticks)
sleep 3
t1=$(cut -d' ' -f1 /proc/uptime); k1=$(ticks)
uf=$(calc "($k1 - $k0) / ($t1 - $t0)")
log "newcomer in sA (cell $la, last ran on CPU $c0): $uf % of a CPU beside 2 local spinners"
check "a task queued from outside its cell gets its turn ($uf % >= 15)" fge "$uf" 15
check "newcomer: scheduler still running" sched_alive
kill $fpid $(cat "$(cg_path $P/sA)/cgroup.procs") 2>/dev/null
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"

# --- borrowing: idle sA lends its CPUs to busy sB, and takes them back
sched_start --cell-parent-cgroup $P --system-cell-min-cpus 1 --enable-borrowing || fail "borrowing start"
sleep 1
stats_json /tmp/b0.json
nb=$(cell_field /tmp/b0.json sB cpus)
spin_in $P/sB 4 18
sleep 2
ub=$(cg_cpu_pct 3 $P/sB)
log "borrowing: sB ($nb CPUs of its own) uses $ub % of a CPU while sA is idle"
check "borrowing: busy sB runs beyond its own $nb CPUs ($ub % > $nb * 100 + 40)" fge "$ub" "$(calc "$nb * 100 + 40")"
# A task of sA pinned to a system-cell CPU (as cyclictest pins its thread to
# CPU 0), which sB borrows: its wake-ups preempt the borrower instead of
# waiting for the borrower's slice. Medians here: 1.6-2.5 ms; 6.0 ms when
# such a wake-up waited (6.5-6.9 ms for cyclictest beside 8 borrowing
# spinners in a diagnostic VM).
pl=$(cg_run $P/sA taskset -c "$c0" agentcg-load wakeup --interval-us 1000 --duration 3)
pm=$(kv p50_us "$pl")
log "borrowing: sA's task pinned to CPU $c0 (system cell, lent to sB): $pl"
check "borrowing: a pinned wake-up outside its cell preempts a borrower (median ${pm:-?} us < 4000)" \
    test "${pm:-99999}" -lt 4000
na=$(cell_field /tmp/b0.json sA cpus)
spin_in $P/sA "$na" 8
sleep 1
ua=$(cg_cpu_pct 3 $P/sA)
log "borrowing: sA wakes with $na spinners: $ua % of a CPU"
check "borrowing: sA gets its CPUs back ($ua % >= $na * 85)" fge "$ua" "$(calc "$na * 85")"
stats_json /tmp/b1.json
check "borrowing counted in the stats" grep -q '"borrows":[1-9]' /tmp/b1.json
kill $(cat "$(cg_path $P/sA)/cgroup.procs" "$(cg_path $P/sB)/cgroup.procs") 2>/dev/null
sched_stop INT
check_eq "exit status (borrowing)" 0 "$SCHED_RC"

# --- rebalancing: CPUs move toward the busy session (sA's weight first
# gives it the larger share, so sB starts small)
echo 300 > "$CG_ROOT/$P/sA/cpu.weight"
sched_start --cell-parent-cgroup $P --system-cell-min-cpus 1 --enable-rebalancing || fail "rebalancing start"
sleep 1
stats_json /tmp/r0.json
n0=$(cell_field /tmp/r0.json sB cpus)
spin_in $P/sB 4 12
check "rebalancing: busy sB gets more CPUs (had $n0)" wait_until 10 sh -c \
    ". /lib/agentcg/lib.sh; . /lib/agentcg/measure.sh; stats_json /tmp/r1.json; [ \$(cell_field /tmp/r1.json sB cpus) -gt $n0 ]"
stats_json /tmp/r1.json
log "rebalancing: sB $n0 -> $(cell_field /tmp/r1.json sB cpus) CPUs, rebalances $(sed -n 's/.*"rebalances":\([0-9]*\).*/\1/p' /tmp/r1.json)"
kill $(cat "$(cg_path $P/sB)/cgroup.procs") 2>/dev/null
sched_stop INT
check_eq "exit status (rebalancing)" 0 "$SCHED_RC"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
