# Guest side of tests/run-all.sh's checks of run.sh after a guest Oops.
# Every boot but the last prints the line a real Oops starts with and
# powers off without an exit status, as such a guest dies. By default the
# Oops is a stray int3 (qemu's TCG running stale code while the kernel
# patches its text): run.sh must boot again, and the last boot passes.
# With agentcg.test_oops=gpf on the kernel command line it is a general
# protection fault, which run.sh must not retry.
if grep -qw agentcg.last_boot /proc/cmdline; then
    echo "PASS: the scenario ran again after the Oops"
    exit 0
fi
kind="int3: 0000"
grep -qw agentcg.test_oops=gpf /proc/cmdline && kind="general protection fault, probably for non-canonical address 0xdead000000000100: 0000"
echo "Oops: $kind [#1] SMP NOPTI (simulated by tests/vm/harness/int3-oops.sh)"
sleep 1
poweroff -f
