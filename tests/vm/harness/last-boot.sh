# Guest side of tests/run-all.sh's check of run.sh's stalled-boot retry:
# run with VM_BOOT_STALL_S=0, every boot looks stalled, so run.sh must boot
# again until its last attempt, and only that one may run a scenario.
if grep -qw agentcg.last_boot /proc/cmdline; then
    echo "PASS: the scenario ran on the last boot attempt"
    exit 0
fi
echo "FAIL: the scenario ran on a boot that was not the last attempt"
exit 1
