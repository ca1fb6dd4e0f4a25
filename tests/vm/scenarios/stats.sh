# vm: --smp 4 --mem 2G --timeout 240
# Stats: a raw JSON client gets the documented fields from the scx_stats
# socket (stats "top" and stats_meta), a busy cgroup shows up in the
# per-cgroup table, and `scx_agentcg --monitor 1` prints reports.
. /lib/agentcg/lib.sh

SOCK=/var/run/scx/root/stats
sched_start || fail "scheduler did not start"
cg_new busy 100 > /dev/null || fail "cgroup busy"
agentcg-load spin --cgroup busy --threads 2 --duration 12 > /dev/null &
check "stats socket exists" wait_until 10 test -S "$SOCK"

req='{"req":"stats","args":{"target":"top"}}'
agentcg-load rawreq "$SOCK" "$req" > /tmp/r1 || failed "first stats request"
sleep 2
agentcg-load rawreq "$SOCK" "$req" > /tmp/r2 || failed "second stats request"
log "reply: $(head -c 600 /tmp/r2)"
check "reply has errno 0" grep -q '"errno":0' /tmp/r2
for f in nr_cpus nr_runnable_cgroups nr_active_cgroups nr_cgroups dsp_tree dsp_sticky dsp_prev dsp_cpu_local \
         dsp_idle_local dsp_last dsp_kthread dsp_pinned dsp_fallback activations \
         hweight_updates hweight_cached requeues pick_empty pick_giveups rescues wake_preempts cgroups; do
    check "reply has field $f" grep -q "\"$f\":" /tmp/r2
done
check "busy cgroup listed with its usage" grep -q '"busy":{"cpu_pct":[1-9]' /tmp/r2
check "nr_cpus is 4" grep -q '"nr_cpus":4' /tmp/r2

agentcg-load rawreq "$SOCK" '{"req":"stats_meta","args":{}}' > /tmp/meta || failed "stats_meta request"
check "stats_meta describes Metrics" grep -q '"Metrics"' /tmp/meta
check "stats_meta describes CgroupMetrics" grep -q '"CgroupMetrics"' /tmp/meta

timeout 7 scx_agentcg --monitor 1 > /tmp/monitor.out 2>&1
n=$(grep -c '^\[scx_agentcg\]' /tmp/monitor.out)
log "monitor printed $n reports"; head -n 8 /tmp/monitor.out
check_ge "--monitor 1 printed at least two reports" "$n" 2
check "monitor lists the busy cgroup" grep -q '^  busy ' /tmp/monitor.out

check "scx_agentcg --help-stats describes dsp_tree" sh -c 'scx_agentcg --help-stats | grep -q dsp_tree'
check "scx_agentcg -V shows the version" sh -c 'scx_agentcg -V | grep -q "^scx_agentcg 0"'
wait_until 20 sh -c '! pidof agentcg-load'
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
