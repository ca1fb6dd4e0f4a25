# vm: --smp 4 --mem 2G --timeout 600 --with-modules
# Thrash-aware penalties: a memory hog in a session whose memory.high is far
# below its working set (zram swap, so it burns CPU in reclaim) gets a
# rising thrash score and the penalty engages (stats), and only there;
# --no-thrash-penalty scores but never penalises. The p99 wakeup latency of
# a probe in another session is measured with and without the penalty,
# rounds alternated: with the penalty (the hog then runs on one of the 4
# CPUs) it must be at most half.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

zram_swap 1G lz4hc || fail "zram swap"
P=agentcg
cg_parent $P > /dev/null \
    || fail "managed parent"
cg_new $P/hog 100 > /dev/null && echo 48M > "$CG_ROOT/$P/hog/memory.high" || fail "hog session"
cg_new $P/probe 100 > /dev/null || fail "probe session"

mem_field() {   # mem_field FILE CGROUP FIELD
    sed -n "s|.*\"memory\":{.*\"$2\":{[^}]*\"$3\":\([0-9]*\).*|\1|p" "$1"
}

# round PENALTY(on|off): one scheduler run with the hog and the probe;
# prints the probe's p99 (us)
round() {
    if [ "$1" = on ]; then sched_start >&2 || return 1
    else sched_start --no-thrash-penalty >&2 || return 1; fi
    agentcg-load memhog --cgroup $P/hog --mb 192 --threads 4 --duration 14 > /dev/null &
    hog=$!
    sleep 4
    stats_json /tmp/thr_$1_$2.json
    agentcg-load wakeup --cgroup $P/probe --interval-us 1000 --duration 8 > /tmp/probe_$1_$2.out
    wait $hog
    sched_alive || { echo "round $1 $2: the scheduler died:" >&2; cat "$SCHED_LOG" >&2; }
    sched_stop INT >&2
    sed -n 's/.* p99_us=\([0-9]*\).*/\1/p' /tmp/probe_$1_$2.out
}

ons="" offs=""
for r in 1 2; do
    v=$(round on $r); log "round $r, penalty on: probe p99 ${v:-?} us"
    check "round $r, penalty on: the probe reported its p99" test -n "$v"
    ons="$ons ${v:-999999}"   # a missing value must not help the comparison below
    check "round $r: the memory-pressure hooks are in use" grep -q "memory pressure: PSI memory stalls" "$SCHED_LOG"
    s=$(mem_field /tmp/thr_on_$r.json $P/hog peak_score)
    e=$(mem_field /tmp/thr_on_$r.json $P/hog penalty_entries)
    log "round $r: hog thrash score ${s:-none}, penalty entries ${e:-0}"
    check "round $r: the hog's peak thrash score rose above the threshold (${s:-0} >= 200)" fge "${s:-0}" 200
    check "round $r: the penalty engaged (${e:-0} entries)" fge "${e:-0}" 1
    # the memory stats list the cgroups that saw memory pressure: the hog
    # must be there (the reply is real), the probe absent or at 0
    pe=$(mem_field /tmp/thr_on_$r.json $P/probe penalty_entries)
    check "round $r: the probe's session is not penalised (hog listed: ${e:-no}, probe: ${pe:-not listed})" \
        sh -c "[ -n '$e' ] && [ '${pe:-0}' = 0 ]"
    v=$(round off $r); log "round $r, --no-thrash-penalty: probe p99 ${v:-?} us"
    check "round $r, --no-thrash-penalty: the probe reported its p99" test -n "$v"
    offs="$offs ${v:-0}"
    s=$(mem_field /tmp/thr_off_$r.json $P/hog peak_score)
    e=$(mem_field /tmp/thr_off_$r.json $P/hog penalty_entries)
    check "round $r: --no-thrash-penalty still scores (${s:-0} >= 200) but never penalises (${e:-0})" \
        sh -c "[ ${s:-0} -ge 200 ] && [ ${e:-0} -eq 0 ]"
done
# The penalty keeps the hog on cpus_pct (25 %: one) of the CPUs, so the
# probe wakes on a free one and, in this VM, on a vCPU the 2 host cores
# still back; without it the hog's threads hold every CPU deep in reclaim,
# where they are not preempted at once, and the probe waits (p99 about
# 0.7 vs 10 ms in a diagnostic run; with the old cap of 50 %, 4 ms).
# Compared on the mean of the rounds' p99: a cap that leaves the hog on
# more CPUs than it should fails.
on_mean=$(echo $ons | awk '{ for (i = 1; i <= NF; i++) s += $i; print s / NF }')
off_mean=$(echo $offs | awk '{ for (i = 1; i <= NF; i++) s += $i; print s / NF }')
log "probe p99 (us): penalty on$ons (mean $on_mean); --no-thrash-penalty$offs (mean $off_mean)"
check_le "the penalty lowers the probe's p99 wakeup latency (mean $on_mean us <= 50 % of $off_mean us)" \
    "$on_mean" "$(calc "$off_mean * 0.5")"
check "the penalised hog ran capped to its CPUs (thrash_capped > 0)" \
    sh -c "grep -q '\"thrash_capped\":[1-9]' /tmp/thr_on_1.json && grep -q '\"thrash_capped\":[1-9]' /tmp/thr_on_2.json"

# ---- the direct-reclaim fallback (--thrash-hooks reclaim), under global
# reclaim: a hog with no memcg limit on its path writes more than the VM's
# RAM, so its direct reclaims pass memcg == NULL. Their stall must still be
# scored, on the hog's own cgroup. (A test of the NULL in the tp_btf
# program read the verifier as never true, and sent it to cgroup id 0.)
cg_new $P/glob 100 > /dev/null || fail "global-reclaim session"
sched_start --thrash-hooks reclaim >&2 || fail "scheduler did not start with --thrash-hooks reclaim"
check "the log says the reclaim tracepoints are used" grep -q "direct reclaim (tracepoints" "$SCHED_LOG"
agentcg-load memhog --cgroup $P/glob --mb 2200 --threads 2 --duration 15 > /tmp/glob.out 2>&1
stats_json /tmp/glob.json
g=$(sed -n 's/.*"thrash_global_reclaims":\([0-9]*\).*/\1/p' /tmp/glob.json)
st=$(mem_field /tmp/glob.json $P/glob stall_ms)
log "global reclaim: ${g:-?} direct reclaims without a memcg; the hog's stall ${st:-not listed} ms; swap used $(awk '/SwapTotal/ { t = $2 } /SwapFree/ { f = $2 } END { print int((t - f) / 1024) }' /proc/meminfo) MiB"
check "the hog met global direct reclaim (${g:-0} reclaims without a memcg)" fge "${g:-0}" 1
check "that stall is scored on the hog's own cgroup (${st:-not listed} ms)" fge "${st:-0}" 1
check "the scheduler survived the global reclaim" sched_alive
sched_stop INT >&2
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
