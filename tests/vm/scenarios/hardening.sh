# vm: --smp 4 --mem 2G --timeout 600
# Hardening: 10,000 session/step cgroup create/destroy cycles under load
# (spinners and a fork storm) with no error exit and bounded memory; the
# managed parent removed while running; SIGINT, SIGTERM and SIGHUP in a
# loop under load.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

P=agentcg
cg_parent $P > /dev/null \
    || fail "managed parent"
cg_parent $P/base 100 > /dev/null
cg_new load 100 > /dev/null
printf '[profile.bg]\nclass = "background"\ncpus_pct = 50\n[[select]]\nprofile = "bg"\npath = "%s/*/bg*"\n' $P > /tmp/h.toml

sched_start --cell-parent-cgroup $P --enable-borrowing --policy /tmp/h.toml || fail "scheduler did not start"
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$SCHED_PID/status"; }
spin_in load 4 400
agentcg-load forkstorm --cgroup load --procs 2 --duration 400 > /dev/null &
sleep 1
rss0=$(rss)
stats_json /tmp/h0.json
field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2"; }
nodes0=$(field map_cgroup_nodes /tmp/h0.json)

# 10,000 create/destroy cycles: 5,000 sessions and 5,000 steps of a
# standing session, alternating, from one process (a mkdir/rmdir pair of
# processes per cycle made the shell loop, not the scheduler, the slow part)
t0=$(cut -d' ' -f1 /proc/uptime)
churn=$(agentcg-load cgchurn --cycles 5000 $P/s $P/base/bg) || failed "cgroup churn: $churn"
log "$churn; 10,000 cycles in $(calc "$(cut -d' ' -f1 /proc/uptime) - $t0") s"
check "10,000 cycles done" sh -c "echo '$churn' | grep -q 'cycles=10000 '"
check "10,000 cycles: scheduler still running" sched_alive
sleep 2   # let the last apply land
stats_json /tmp/h.json
rss1=$(rss)
log "scheduler RSS $rss0 kB -> $rss1 kB; $(grep -o '"cell_applies":[0-9]*' /tmp/h.json)"
# bound: 16 MiB of growth (allocator caches, the stats server's buffers)
check_le "userspace memory bounded (grew $((rss1 - rss0)) kB <= 16384)" "$((rss1 - rss0))" 16384
nodes1=$(field map_cgroup_nodes /tmp/h.json); cfgs1=$(field map_cgroup_cfgs /tmp/h.json)
log "BPF map entries: cgroup nodes $nodes0 -> $nodes1, cell configs $cfgs1"
check_le "BPF cgroup nodes back to where they were (+64 at most: cgroups still being released)" "${nodes1:-999999}" "$((nodes0 + 64))"
check_le "cell configs only for the standing session (<= 2)" "${cfgs1:-999999}" 2
check "only the standing session has a cell left" sh -c \
    "grep -o '\"cells\":{.*},\"cgroups\"' /tmp/h.json | grep -q '\"base\":{' && ! grep -o '\"cells\":{.*},\"cgroups\"' /tmp/h.json | grep -q '\"s4999\":{'"

# the managed parent removed while running
rmdir "$CG_ROOT/$P/base" && rmdir "$CG_ROOT/$P" || failed "removing the parent"
sleep 2.5
check "parent removed: still running" sched_alive
check "parent removed: logged" grep -q "reading the managed parent" "$SCHED_LOG"
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
mkdir -p "$CG_ROOT/$P"

# signals in a loop, under load
for sig in INT TERM HUP INT TERM HUP; do
    sched_start --cell-parent-cgroup $P --policy /tmp/h.toml || { failed "start before SIG$sig"; continue; }
    sleep 1
    if [ $sig = HUP ]; then
        # the second time with a changed [thrash]: read-only data of the
        # loaded program, so the reload must say it is not applied
        huped=$((${huped:-0} + 1))
        cp /tmp/h.toml /tmp/h.orig
        [ $huped = 2 ] && printf '[thrash]\nenter_permille = 300\n' >> /tmp/h.toml
        kill -HUP "$SCHED_PID"
        check "SIGHUP reloads and keeps running" wait_until 5 grep -q "reloaded" "$SCHED_LOG"
        if [ $huped = 2 ]; then
            check "a changed [thrash] is named as not applied until a restart" \
                wait_until 5 grep -q "\[thrash\] changed (enter_permille 200 -> 300), but it is fixed" "$SCHED_LOG"
        else
            check "an unchanged [thrash] is not reported" sh -c "! grep -q '\[thrash\] changed' '$SCHED_LOG'"
        fi
        mv /tmp/h.orig /tmp/h.toml
        sched_stop TERM
    else
        sched_stop $sig
    fi
    check_eq "SIG$sig round: exit status 0" 0 "$SCHED_RC"
    check_eq "SIG$sig round: state disabled" disabled "$(sched_state)"
done
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
