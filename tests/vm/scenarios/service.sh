# vm: --smp 4 --mem 2G --timeout 240
# Operations: scx_agentcg started exactly as the scx systemd service does
# (bash -c 'exec ${SCX_SCHEDULER} ${SCX_FLAGS}' with services/scx_agentcg.default
# as /etc/default/scx) and stopped with SIGTERM; the stats socket answers
# stats and stats_meta and is not writable by other users; with cgroupfs
# read-only (as under scx_loader's sandboxing) it still runs.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

check "bash is in the VM" test -x /bin/bash
cg_parent agentcg > /dev/null
cg_new agentcg/s1 100 > /dev/null

# the unit's ExecStart, with the example /etc/default/scx
mkdir -p /etc/default && cp /lib/agentcg/services/scx_agentcg.default /etc/default/scx
(
    set -a; . /etc/default/scx; set +a
    exec /bin/bash -c 'exec ${SCX_SCHEDULER} ${SCX_FLAGS}'
) > "$SCHED_LOG" 2>&1 &
SCHED_PID=$!
check "started by the service command line: sched_ext enabled" wait_until 60 sh -c "[ \"\$(cat $SCX_STATE)\" = enabled ]"
check "the service's flags are in use (cells)" wait_until 10 grep -q "cells: sessions are the children of" "$SCHED_LOG"
check "ops name is agentcg" grep -q '^agentcg' /sys/kernel/sched_ext/root/ops

SOCK=/var/run/scx/root/stats
check "stats socket exists" wait_until 10 test -S "$SOCK"
agentcg-load rawreq "$SOCK" '{"req":"stats","args":{"target":"top"}}' > /tmp/s.json
check "stats answers" grep -q '"errno":0' /tmp/s.json
agentcg-load rawreq "$SOCK" '{"req":"stats_meta","args":{}}' > /tmp/m.json
check "stats_meta answers with the metrics' descriptions" grep -q '"CellMetrics"' /tmp/m.json
mode=$(stat -c %a "$SOCK")
log "stats socket mode $mode"
check "the stats socket is not writable by group or others ($mode)" \
    sh -c "[ \$(( 0$mode & 022 )) -eq 0 ]"

kill -TERM $SCHED_PID
wait $SCHED_PID
check_eq "SIGTERM: exit status 0" 0 "$?"
check_eq "state after SIGTERM" disabled "$(cat $SCX_STATE)"
SCHED_PID=""

# read-only cgroupfs: nothing scx_agentcg needs writes there
mount -o remount,ro "$CG_ROOT" || failed "remount cgroupfs read-only"
sched_start --cell-parent-cgroup agentcg --enable-borrowing || failed "start with read-only cgroupfs"
check "runs with read-only cgroupfs" sched_alive
sched_stop INT
check_eq "exit status (read-only cgroupfs)" 0 "$SCHED_RC"
mount -o remount,rw "$CG_ROOT"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
