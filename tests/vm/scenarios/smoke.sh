# vm: --smp 4 --mem 2G --timeout 240
# Smoke test of the VM rig itself (no scheduler needed): kernel features,
# cgroups, and every agentcg-load subcommand in a cgroup.
. /lib/agentcg/lib.sh

D=${1:-1}   # seconds per workload

log "kernel $(uname -r), $(nproc) cpus"
check "sched_ext sysfs state exists" test -f "$SCX_STATE"
check_eq "sched_ext state is disabled" disabled "$(sched_state)"
check "kernel config at /boot/config-\$(uname -r)" test -s "/boot/config-$(uname -r)"
check "kernel BTF present" test -s /sys/kernel/btf/vmlinux
check_eq "guest cpu count" "$AGENTCG_SMP" "$(nproc)"
for c in cpu cpuset memory; do
    check "root controller $c enabled" grep -qw $c "$CG_ROOT/cgroup.subtree_control"
done
check "bpffs mounted" grep -q ' /sys/fs/bpf bpf ' /proc/mounts
check "loopback up" sh -c 'ip link show lo | grep -q UP'
check "agentcg-load installed" command -v agentcg-load
check "agentcg-load runs (shared libs found)" agentcg-load help

cg=$(cg_new smoke/load 200) || fail "cannot create cgroup"
check_eq "cpu.weight set" 200 "$(cat "$cg/cpu.weight")"
check "nested cgroup has cpu controller" grep -qw cpu "$cg/cgroup.controllers"

# run_load NAME KEY MIN ARGS...: run agentcg-load in the cgroup, check that the
# single output line starts with NAME and KEY's value is >= MIN.
run_load() {
    _n=$1 _k=$2 _min=$3; shift 3
    _line=$(agentcg-load "$@" --cgroup smoke/load --duration "$D")
    _rc=$?
    log "$_line"
    check_eq "$* exit status" 0 "$_rc"
    check_eq "$* prints one line" 1 "$(printf '%s\n' "$_line" | wc -l)"
    check_eq "$* line starts with $_n" "$_n" "${_line%% *}"
    _v=$(kv "$_k" "$_line")
    check_ge "$* $_k=$_v >= $_min" "${_v:-0}" "$_min"
}

u0=$(cg_usage_us smoke/load)
run_load spin loops 1 spin --threads 2
u1=$(cg_usage_us smoke/load)
used=$((u1 - u0))
# Two spinning threads for D s: expect well over 0.3 CPU-seconds per second.
check_ge "spin ran inside the cgroup (usage ${used}us)" "$used" "$(calc "$D * 300000")"

run_load wakeup samples 10 wakeup --interval-us 1000
line=$(agentcg-load wakeup --interval-us 2000 --threads 2 --duration "$D")
p50=$(kv p50_us "$line"); p99=$(kv p99_us "$line"); mx=$(kv max_us "$line")
check "wakeup percentiles ordered ($p50 <= $p99 <= $mx)" sh -c "[ $p50 -le $p99 ] && [ $p99 -le $mx ]"
run_load pingpong roundtrips 10 pingpong --pairs 2
run_load forkstorm spawned 5 forkstorm --procs 2
run_load forkstorm spawned 5 forkstorm --exec
run_load forkstorm spawned 5 forkstorm --exec-path /bin/true
run_load burst cycles 5 burst --on-ms 5 --off-ms 5 --threads 2

line=$(agentcg-load cpustat smoke/load /sys/fs/cgroup/smoke)
log "$line"
check "cpustat prints usage" test -n "$(kv smoke/load "$line")"
check "cgroup empty after loads" test -z "$(cat "$cg/cgroup.procs")"

agentcg-load spin --bogus >/dev/null 2>&1
check_eq "bad arguments exit 2" 2 "$?"
agentcg-load spin --cgroup does/not/exist --duration 0.1 >/dev/null 2>&1
check_eq "missing cgroup exits 1" 1 "$?"

check "no kernel errors" ! dmesg_sched_errors
finish
