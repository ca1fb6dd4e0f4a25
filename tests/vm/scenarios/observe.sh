# vm: --smp 4 --mem 2G --timeout 300
# --observe (src/observe.rs, src/bpf/observe.bpf.c): no scheduler is
# attached and no cgroup file is written, while the sessions (children of
# --cell-parent-cgroup and a registered container cgroup) are counted from
# the sched_switch/sched_wakeup tracepoints: CPU time against cpu.stat,
# wake-ups of a sleeping probe, activity going idle when a session stops;
# memory.current, memory.events and pressure read from cgroupfs; the stats,
# the registry and the Prometheus endpoint all answer. Flags that change
# the system are refused with --observe. Without --observe, the same
# command line attaches (the switch that matters).
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

ip link set lo up || fail "loopback up"
P=agentcg
SOCK=/tmp/reg/registry.sock
ADDR=127.0.0.1:9464
cg_parent $P > /dev/null || fail "managed parent"
for s in chat build; do cg_new $P/$s > /dev/null || fail "session $s"; done
cg_new pods/c1 > /dev/null || fail "container cgroup"
chat_bg_policy /tmp/o.toml chat:session=chat

# --- refused: flags that change the system ----------------------------------
for f in "--mem-arbitration" "--partial" "--timer-slack-ns 50000" "--memcg-ops on"; do
    out=$(scx_agentcg --observe --cell-parent-cgroup $P $f 2>&1); rc=$?
    check "--observe $f is refused" refused_with $rc "$out" "--observe changes nothing"
done

# every file an enforcing scheduler could write, with its content
settable() {
    for d in $(find /sys/fs/cgroup/$P /sys/fs/cgroup/pods -type d); do
        for f in memory.low memory.min memory.high memory.max memory.oom.group cgroup.freeze cpu.weight cpu.max cpuset.cpus; do
            [ -f "$d/$f" ] && echo "$d/$f $(cat "$d/$f")"
        done
    done
    # the tasks that live through the whole observation
    for p in $(cat /sys/fs/cgroup/$P/build/cgroup.procs /sys/fs/cgroup/pods/c1/cgroup.procs 2>/dev/null); do
        echo "$p oom_score_adj $(cat /proc/$p/oom_score_adj 2>/dev/null) policy $(awk '/^policy/ { print $3 }' /proc/$p/sched 2>/dev/null)"
    done
}

agentcg-load spin --cgroup $P/build --threads 2 --duration 60 > /dev/null &
agentcg-load spin --cgroup $P/chat --threads 1 --duration 8 > /dev/null &
chatpid=$!
agentcg-load wakeup --cgroup pods/c1 --interval-us 2000 --threads 1 --duration 60 > /dev/null &
sleep 1
settable > /tmp/before

# --- observe -----------------------------------------------------------------
scx_agentcg --observe --cell-parent-cgroup $P --registry-socket $SOCK --policy /tmp/o.toml \
    --metrics-addr $ADDR > "$SCHED_LOG" 2>&1 &
SCHED_PID=$!
check "it says it observes" wait_until 60 grep -q "observe: attached to sched_switch and sched_wakeup only" "$SCHED_LOG"
t_att=$(uptime_s)
check_eq "sched_ext stays disabled" disabled "$(sched_state)"
check "the registry answers" scx_agentcg registry --socket $SOCK register --id c1 --cgroup /pods/c1 --profile bg --session pod-c1
u0=$(cg_usage_us $P/build)
stats_json /tmp/o1.json || failed "stats"
sleep 4
u1=$(cg_usage_us $P/build)
stats_json /tmp/o2.json || failed "stats (second)"
sfield() { sed -n "s|.*\"cgroups\":{.*\"$2\":{[^}]*\"$3\":\([0-9.]*\).*|\1|p" "$1"; }
ofield() { sed -n "s|.*\"observed\":{.*\"$2\":{[^}]*\"$3\":\([0-9.]*\).*|\1|p" "$1"; }
check "the stats say observe" grep -q '"mode":"observe"' /tmp/o2.json
b1=$(sfield /tmp/o1.json $P/build cpu_pct); b2=$(sfield /tmp/o2.json $P/build cpu_pct)
want=$(calc "($u1 - $u0) / 4 / 10000")
log "build: observed ${b2}% of a CPU over the last interval, cpu.stat ${want}%"
check "build's CPU use as cpu.stat has it, within 15 %" within "$b2" "$want" 15
check "build's CPU use is two spinners' worth (above 100 %)" fge "$b2" 100
w=$(ofield /tmp/o2.json pods/c1 wakeups)
log "pod-c1: $w wake-ups, mean wake-to-run $(ofield /tmp/o2.json pods/c1 wake_lat_avg_us) us"
check "the registered container's wake-ups are counted (over 500 in 4 s at 2 ms)" fge "$w" 500
check "its wake-to-run time is measured" fge "$(ofield /tmp/o2.json pods/c1 wake_lat_max_us)" 1
m=$(ofield /tmp/o2.json $P/build mem_current_mb)
check_eq "memory.current as cgroupfs has it (build, MiB)" "$(( $(cat "$(cg_path $P/build)/memory.current") >> 20 ))" "$m"
check "the interactive session is labelled with its profile" sh -c \
    "timeout 10 wget -q -O - http://$ADDR/metrics | grep -q '^scx_agentcg_session_wakeups_total{session=\"agentcg/chat\",profile=\"chat\",class=\"interactive\"}'"
check "the metrics say observe" sh -c "timeout 10 wget -q -O - http://$ADDR/metrics | grep -q '^scx_agentcg_mode{mode=\"observe\"} 1'"

# chat's spinner ends at 8 s: its session goes idle
wait $chatpid
t_end=$(uptime_s)
chat_row() { sed -n "s|.*\"sessions\":{.*\"$P/chat\":{\([^}]*\)}.*|\1|p" /tmp/o3.json; }
idle() { stats_json /tmp/o3.json && chat_row | grep -q '"active":0,' && chat_row | grep -q '"active_to_idle":[1-9]'; }
check "chat went idle when its spinner ended (active 0, one active-to-idle)" wait_until 5 idle
log "chat: $(chat_row)"
a=$(chat_row | sed -n 's/.*"active_ms":\([0-9]*\).*/\1/p')
# Not checked: the active time of a spinner that started before the
# observer was 2.7 and 3.6 s of about 6 s spun in two boots (its active run
# ended early); not understood yet
log "chat: active ${a} ms of $(calc "($t_end - $t_att) * 1000") ms spun since the observer said it attached"

# memory.events: the test (not the scheduler) puts a memory.high on c1
echo 32M > "$(cg_path pods/c1)/memory.high"
agentcg-load memhog --cgroup pods/c1 --mb 64 --duration 3 > /dev/null 2>&1
echo max > "$(cg_path pods/c1)/memory.high"
stats_json /tmp/o4.json
log "pod-c1 memory.events high: $(ofield /tmp/o4.json pods/c1 mem_high)"
check "memory.events are read (high > 0 after a hog met memory.high)" fge "$(ofield /tmp/o4.json pods/c1 mem_high)" 1

settable > /tmp/after
check "no cgroup file and no task's policy or oom_score_adj changed" cmp -s /tmp/before /tmp/after
diff /tmp/before /tmp/after | head -n 5
check_eq "sched_ext is still disabled" disabled "$(sched_state)"
kill -INT $SCHED_PID
wait $SCHED_PID; rc=$?
SCHED_PID=""
check_eq "exit status" 0 "$rc"

# --- the same command line without --observe attaches ---------------------------
sched_start --cell-parent-cgroup $P --registry-socket $SOCK --policy /tmp/o.toml || failed "without --observe it did not attach"
check_eq "without --observe: sched_ext enabled" enabled "$(sched_state)"
stats_json /tmp/o5.json
check "without --observe: the stats say schedule" grep -q '"mode":"schedule"' /tmp/o5.json
drain_loads
sched_stop INT
check_eq "exit status (scheduling)" 0 "$SCHED_RC"
finish
