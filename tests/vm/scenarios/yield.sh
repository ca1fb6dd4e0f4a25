# vm: --smp 4 --mem 1G --timeout 300
# Yielding (yield_to_interactive, src/yielding.rs, src/bpf/yielding.bpf.h):
# while an interactive session has a runnable task, the sessions of a
# yielding profile run only on the yield CPUs, all together; once it has
# none they spread over every CPU again. The same sessions under a policy
# without the key (the off switch, same boot) keep spreading while the
# interactive one runs.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

P=agentcg
cg_parent $P > /dev/null || fail "managed parent"
for s in chat bg1 bg2; do cg_new $P/$s 100 > /dev/null || fail "session $s"; done
BG_EXTRA="yield_to_interactive = true"
chat_bg_policy /tmp/on.toml chat:session=chat "bg:session=bg*"
BG_EXTRA=""
chat_bg_policy /tmp/off.toml chat:session=chat "bg:session=bg*"

# bg_cpus SECONDS: CPUs (in percent of one) bg1 and bg2 used together over
# a window of SECONDS
bg_cpus() {
    _a=$(($(cg_usage_us $P/bg1) + $(cg_usage_us $P/bg2)))
    sleep "$1"
    _b=$(($(cg_usage_us $P/bg1) + $(cg_usage_us $P/bg2)))
    calc "($_b - $_a) / ($1 * 10000)" | cut -d. -f1
}
# run_case NAME POLICY: the interactive spinner and 2 x 2 background
# spinners; sets SEEN (CPUs the bg spinners ran on), BUSY (their CPU, % of
# one CPU, interactive spinner running), FREE (the same once it stopped)
run_case() {
    sched_start --cell-parent-cgroup $P --enable-borrowing --system-cell-min-cpus 1 --policy "$2" \
        || fail "$1: scheduler did not start"
    spin_in $P/bg1 2 40
    spin_in $P/bg2 2 40
    spin_in $P/chat 1 40
    sleep 2
    SEEN="$(cg_cpus_seen $P/bg1 3) $(cg_cpus_seen $P/bg2 2)"
    BUSY=$(bg_cpus 3)
    stats_json /tmp/$1.json
    spin_stop $P/chat
    sleep 1
    FREE=$(bg_cpus 3)
    FREE_SEEN="$(cg_cpus_seen $P/bg1 2) $(cg_cpus_seen $P/bg2 2)"
    spin_stop $P/bg1 $P/bg2
    log "$1: bg on CPUs [$SEEN] using $BUSY % with chat running; $FREE % on [$FREE_SEEN] after"
    check "$1: the scheduler is still attached" sched_alive
    sched_stop INT
    check_eq "$1: exit status" 0 "$SCHED_RC"
}

run_case on /tmp/on.toml
ycpus=$(sed -n 's/.*yield: while interactive work is runnable, profile bg runs on CPUs \([0-9,-]*\).*/\1/p' "$SCHED_LOG" | tail -n 1)
log "yield CPUs: $ycpus; cells: $(grep 'cells applied' "$SCHED_LOG" | tail -n 1)"
check "the log names the yield CPUs" test -n "$ycpus"
check "with chat runnable, the bg spinners ran only on the yield CPUs ($ycpus)" all_in_cpulist "$SEEN" "$ycpus"
check_le "and used about one CPU between them (% of one)" "$BUSY" 130
yp=$(sed -n 's/.*"yield_pinned":\([0-9]*\).*/\1/p' /tmp/on.json)
check "the stats count yielding enqueues" test "${yp:-0}" -gt 0
check_ge "chat stopped: they spread again (% of one)" "$FREE" 250
on_busy=$BUSY

run_case off /tmp/off.toml
check_ge "without yield_to_interactive: with chat running they use more than two CPUs (% of one)" "$BUSY" 200
yp=$(sed -n 's/.*"yield_pinned":\([0-9]*\).*/\1/p' /tmp/off.json)
check_eq "and nothing is counted as yielding" 0 "${yp:-0}"
log "bg CPU with chat running: $on_busy % yielding, $BUSY % not"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
