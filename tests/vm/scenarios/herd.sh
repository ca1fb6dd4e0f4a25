# vm: --smp 4 --mem 2G --timeout 300
# Herd control: 32 bursty children of a low-weight parent H(50) that wake
# and sleep all the time must not take more than H's share against a busy
# D(200): H is entitled to 50/250 = 20 % of the machine.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

sched_start || fail "scheduler did not start"
cg_new H 50 > /dev/null && cg_new D 200 > /dev/null || fail "cgroups"
i=1
kids=""
while [ $i -le 32 ]; do
    cg_new H/k$i > /dev/null || fail "cgroup H/k$i"
    agentcg-load burst --cgroup H/k$i --on-ms 1 --off-ms 3 --duration 60 > /dev/null &
    kids="$kids H/k$i"
    i=$((i + 1))
done
spin_in D 4 60
sleep 2
got=$(cg_shares 10 H D)
log "herd shares: $got (H entitled to 20.0)"
check "H's children and D's spinners ran through the window" cg_busy $kids D
h=$(kv H "$got")
check "H's 32 bursty children stay within H's share + 3 points (H=$h)" fle "$h" 23
check "H still gets CPU (H=$h)" fge "$h" 10
spin_stop $kids D
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
