# vm: --smp 4 --mem 2G --timeout 300
# cpu.weight fairness under scx_agentcg, 4 spinners per cgroup on 4 vCPUs,
# 10 s windows: flat 100/200/300 and nested A(100){B(100),C(100)}, D(200).
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

sched_start || fail "scheduler did not start"

for w in 100 200 300; do cg_new f$w $w > /dev/null || fail "cgroup f$w"; done
t0=$(uptime_s)
for w in 100 200 300; do spin_in f$w 4 60; done
sleep 2
got=$(cg_shares 10 f100 f200 f300)
log "flat shares: $got (want 16.7/33.3/50.0), window closed $(calc "$(uptime_s) - $t0") s after the spinners' start"
check "flat: every cgroup's spinners ran through the window" cg_busy f100 f200 f300
dev=$(max_dev "$got" "16.7 33.3 50.0")
check "flat 100/200/300: every share within 3 points (max dev $dev)" fle "$dev" 3
spin_stop f100 f200 f300
check "scheduler alive after flat case" sched_alive

cg_new A 100 > /dev/null && cg_new A/B 100 > /dev/null && cg_new A/C 100 > /dev/null \
    && cg_new D 200 > /dev/null || fail "nested cgroups"
t0=$(uptime_s)
for c in A/B A/C D; do spin_in $c 4 60; done
sleep 2
got=$(cg_shares 10 A/B A/C D)
log "nested shares: $got (want 16.7/16.7/66.7), window closed $(calc "$(uptime_s) - $t0") s after the spinners' start"
check "nested: every cgroup's spinners ran through the window" cg_busy A/B A/C D
dev=$(max_dev "$got" "16.7 16.7 66.7")
check "nested A(100){B,C}, D(200): every share within 3 points (max dev $dev)" fle "$dev" 3
spin_stop A/B A/C D

check "scheduler still running" sched_alive
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
