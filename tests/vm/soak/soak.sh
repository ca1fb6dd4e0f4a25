# vm: --smp 4 --mem 2G --timeout 900
# Soak: 10 minutes with every feature on (cells, borrowing, rebalancing,
# policy with step masks and boost, cpu.max), under a churning agent-like
# load: sessions and steps come and go through the launcher, spinners,
# bursts, a fork storm, wakeup probes. Passes if the scheduler is still
# attached at the end, exits 0, and dmesg has no sched_ext error.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

SOAK=${SOAK_SECS:-600}
P=agentcg
cg_parent $P > /dev/null
cat > /tmp/soak.toml <<POL
[profile.chat]
class = "interactive"
[profile.build]
class = "tool"
cpus = "exclusive:1"
[profile.bg]
class = "background"
weight = 0.5
cpus_pct = 50
[[select]]
profile = "chat"
path = "$P/*/chat*"
[[select]]
profile = "build"
path = "$P/*/build*"
[[select]]
profile = "bg"
path = "$P/*/bg*"
POL
sched_start --cell-parent-cgroup $P --enable-borrowing --enable-rebalancing --policy /tmp/soak.toml \
    || fail "scheduler did not start"
cg_new lim 100 > /dev/null && cg_max lim "30000 100000"
spin_in lim 2 "$SOAK"
end=$(calc "$(cut -d' ' -f1 /proc/uptime) + $SOAK")
n=0
while fle "$(cut -d' ' -f1 /proc/uptime)" "$end"; do
    s=s$((n % 5))
    scx_agentcg run --session $s --step chat$n --class interactive -- \
        agentcg-load wakeup --interval-us 3000 --duration 4 > /dev/null &
    scx_agentcg run --session $s --step build$n -- agentcg-load spin --threads 2 --duration 3 > /dev/null &
    scx_agentcg run --session $s --step bg$n -- agentcg-load burst --on-ms 5 --off-ms 5 --duration 5 > /dev/null &
    scx_agentcg run --session $s --step fork$n -- agentcg-load forkstorm --procs 1 --duration 2 > /dev/null &
    sleep 5
    [ $((n % 10)) -eq 9 ] && kill -HUP "$SCHED_PID"
    [ $((n % 7)) -eq 6 ] && rmdir "$CG_ROOT/$P/s$(( (n + 1) % 5 ))" 2>/dev/null
    n=$((n + 1))
    sched_alive || break
done
log "$n rounds"
check "still attached after ${SOAK} s" test "$(sched_state)" = enabled
check "scheduler still running" sched_alive
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
