# vm: --smp 4 --mem 2G --timeout 300
# Scheduler lifecycle: start -> enabled, load runs under it, SIGINT -> clean
# exit and disabled; restart, SIGTERM -> clean exit; SIGKILL -> disabled;
# no kernel errors.
. /lib/agentcg/lib.sh

check "scx_agentcg installed" command -v scx_agentcg
check_eq "sched_ext initially disabled" disabled "$(sched_state)"

sched_start || fail "scheduler did not start"
check_eq "state enabled" enabled "$(sched_state)"
cg=$(cg_new lc/a 100) || fail "cannot create cgroup"
line=$(agentcg-load spin --threads 4 --cgroup lc/a --duration 2)
log "$line"
check_ge "spin made progress under the scheduler" "$(kv loops "$line")" 1
line=$(agentcg-load wakeup --interval-us 1000 --duration 2)
log "$line"
check_ge "wakeups measured under the scheduler" "$(kv samples "$line")" 10
check "scheduler still running" sched_alive
check "sched_ext still enabled" test "$(sched_state)" = enabled
sched_stop INT
check_eq "SIGINT: scheduler exit status" 0 "$SCHED_RC"
check_eq "SIGINT: state disabled" disabled "$(sched_state)"
check "no kernel errors after SIGINT stop" ! dmesg_sched_errors

sched_start || fail "scheduler did not restart"
pass "scheduler restarted"
check "ops name starts with agentcg" grep -q '^agentcg' /sys/kernel/sched_ext/root/ops
sched_stop TERM
check_eq "SIGTERM: scheduler exit status" 0 "$SCHED_RC"
check_eq "SIGTERM: state disabled" disabled "$(sched_state)"

sched_start || fail "scheduler did not start a third time"
sched_stop KILL
check_eq "SIGKILL: state disabled" disabled "$(sched_state)"
check "no kernel errors after SIGKILL" ! dmesg_sched_errors
finish
