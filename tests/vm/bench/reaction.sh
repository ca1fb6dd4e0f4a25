# Guest side of tests/reaction.sh: how fast each way stops a session that
# grows past 90 % of its parent's memory.max (agentcg-replay react, 1 GiB of
# zram swap so that PSI sees stall at the limit instead of an OOM kill).
# Ways: scx_agentcg --mem-arbitration (bpf: held in the scheduler) and the
# userspace watchers poll (memory.current every 1 ms), events (memory.high
# at the line, poll(2) on memory.events), psi (trigger "some 5000 50000")
# and avg10 (memory.pressure read every 100 ms), each freezing the session,
# all in this boot, interleaved by repetition, on an idle VM and with 8
# spinning threads elsewhere (busy). Prints "REACT {json}" lines, and
# after each bpf repetition the scheduler's own counters ("REACT-SCHED
# {load, rep, arb}").
#
# Arguments: REPS RATE_MB_S LIMIT_MB
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

REPS=${1:-5} RATE=${2:-40} LIMIT=${3:-256}
P=agentcg
RESULTS=/tmp/react_all
: > "$RESULTS"
cg_parent $P > /dev/null || fail "managed parent"
echo "${LIMIT}M" > "$CG_ROOT/$P/memory.max" || fail "parent memory.max"
zram_swap 1G || fail "zram swap"
cat > /tmp/react.toml <<EOT
[profile.chat]
class = "interactive"

[[select]]
profile = "chat"
session = "chat"

[profile.bg]
class = "background"

[[select]]
profile = "bg"
session = "hog*"
EOT

react() {   # react LOAD VIA REP
    agentcg-replay react --parent "$CG_ROOT/$P" --via "$2" --label "$1" --reps 1 --rate-mb-s "$RATE" \
        | sed -n '1s/^/REACT /p' | sed "s/\"rep\":1/\"rep\":$3/" | tee -a "$RESULTS"
}
# an idle interactive session: the guard protects it (with none running,
# the lone hog would be the session kept running, never held)
cg_new $P/chat > /dev/null || fail "chat session"
cg_run $P/chat sleep 100000 &
# busy: 8 spinning threads in a cgroup of their own outside the parent, so
# that a watcher has to win a CPU to act
noise=$(cg_new noise) || fail "noise cgroup"
rep=1
while [ "$rep" -le "$REPS" ]; do
    for load in idle busy; do
        spin=""
        if [ $load = busy ]; then
            agentcg-load spin --threads 8 --duration 600 --cgroup noise > /dev/null & spin=$!
        fi
        sched_start --cell-parent-cgroup $P --policy /tmp/react.toml --mem-arbitration > /dev/null \
            || fail "scheduler did not start"
        react $load bpf $rep
        stats_json /tmp/react_stats.json
        echo "REACT-SCHED {\"load\":\"$load\",\"rep\":$rep,\"arb\":$(sed -n 's/.*"mem_arbitration":\({[^}]*}\).*/\1/p' /tmp/react_stats.json)}"
        sched_stop INT > /dev/null
        # avg10 first: the later ways leave stall in its 10 s average
        for via in avg10 poll events psi; do react $load $via $rep; done
        [ -n "$spin" ] && kill "$spin" && wait "$spin" 2> /dev/null
    done
    log "rep $rep done"
    rep=$((rep + 1))
done
n=$(grep -c '"reaction_ms"' "$RESULTS" 2>/dev/null || echo 0)
check "every way measured in every repetition ($n of $((REPS * 10)))" test "$n" -eq $((REPS * 10))
finish
