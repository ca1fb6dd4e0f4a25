# vm: --smp 4 --mem 2G --timeout 420
# In-BPF cpu.max, values delivered by the kernel (ops.cgroup_set_bandwidth).
SCHED_FLAGS="--bandwidth-source kernel"
. /lib/agentcg/cpumax-cases.sh
