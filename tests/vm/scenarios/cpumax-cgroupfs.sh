# vm: --smp 4 --mem 2G --timeout 420
# In-BPF cpu.max, values read by userspace from cpu.max / cpu.max.burst: the
# path for 6.12-6.16 kernels, forced here on a kernel that has the op.
SCHED_FLAGS="--bandwidth-source cgroupfs"
. /lib/agentcg/cpumax-cases.sh
