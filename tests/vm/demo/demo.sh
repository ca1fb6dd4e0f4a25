# Guest side of tests/vm/demo.sh: a small agent-like workload under
# scx_agentcg with live stats printed every 2 s.
. /lib/agentcg/lib.sh

SECS=${1:-20}
cg_new agentcg/sess_a 200 > /dev/null
cg_new agentcg/sess_a/step_build > /dev/null
cg_new agentcg/sess_b 100 > /dev/null
cg_new agentcg/sess_b/step_test > /dev/null
cg_new agentcg/sess_b/step_browse > /dev/null
cg_new batch 50 > /dev/null

sched_start --stats 2 || fail "scheduler did not start"
log "workload: sess_a (weight 200) compiles with 4 threads; sess_b (weight 100)"
log "runs bursty tests and a latency probe; batch (weight 50) spins 4 threads"
agentcg-load spin --cgroup agentcg/sess_a/step_build --threads 4 --duration "$SECS" > /dev/null &
agentcg-load burst --cgroup agentcg/sess_b/step_test --threads 2 --on-ms 20 --off-ms 20 --duration "$SECS" > /dev/null &
agentcg-load wakeup --cgroup agentcg/sess_b/step_browse --interval-us 2000 --duration "$SECS" > /tmp/probe.out &
agentcg-load spin --cgroup batch --threads 4 --duration "$SECS" > /dev/null &
# stream the scheduler's stats while the workload runs
tail -f "$SCHED_LOG" &
TAILPID=$!
wait_until $((SECS + 20)) sh -c '! pidof agentcg-load'
kill $TAILPID 2>/dev/null
log "probe (sess_b/step_browse): $(cat /tmp/probe.out)"
sched_stop INT
check_eq "scheduler exit status" 0 "$SCHED_RC"
finish
