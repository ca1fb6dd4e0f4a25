# Guest side of tests/experiment.sh: trace replay under memory contention.
# One HIGH and LOW_N LOW sessions replay agent traces (agentcg-replay) under
# a shared memory.max of TOTAL_MB on their parent, in five arms:
#   NoLimit   the shared limit only (fair scheduler)
#   Static    memory.max = TOTAL/N per session (fair scheduler)
#   HighOnly  memory.high = TOTAL/N per session and a userspace watcher that
#             lowers a LOW session's memory.high while it is under memory
#             pressure and gives it back after (fair scheduler)
#   AgentCG-CPU  scx_agentcg with cells (borrowing on) and the policy file
#             (HIGH interactive, LOW background, weight x0.5, yielding
#             to HIGH on a quarter of the other CPUs), thrash
#             penalties; no memory actions
#   AgentCG   the same with --mem-arbitration
# REPS repetitions, arms interleaved in the same order each time. Prints
# one "EXP-RECORD {json}" line per session run (the replay report plus arm,
# role, rep, oom_kills); the host turns them into the report and figures.
#
# A run past its limit gets SIGTERM, then SIGKILL 5 s later (a replayer
# throttled in memory.high may never act on the SIGTERM), and counts as not
# completed. ARMS (default all five) selects arms; SWAP=1 puts 1 GiB of
# zram swap under the sessions (run.sh --with-modules).
#
# WINDOW=peak (the default) replays the MAX_DURATION window that holds each
# trace's memory peak (agentcg-replay --window-at-peak), start its first part.
#
# MEMTRACE=1 also prints, every 200 ms of each run, "EXP-MEM ARM REP MS
# PARENT_MIB SESSION=MIB[:f if frozen]... max=N" (the parent's memory.events
# max count), for reading a run's course; the report does not use them.
#
# Arguments: REPS SPEED MAX_DURATION TOTAL_MB LOW_N HIGH_TRACE LOW_TRACE [ARMS] [SWAP] [WINDOW] [MEMTRACE]
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh   # stats_json

REPS=${1:-5} SPEED=${2:-4} MAXDUR=${3:-20} TOTAL=${4:-800} LOWN=${5:-2}
HIGH_TRACE=${6:?high trace} LOW_TRACE=${7:?low trace}
ARMS=${8:-NoLimit Static HighOnly AgentCG-CPU AgentCG} SWAP=${9:-0} WINDOW=${10:-peak} MEMTRACE=${11:-0}
P=agentcg
N=$((LOWN + 1))
LIMIT=$(awk -v d="$MAXDUR" 'BEGIN { printf "%d", d * 4 + 10 }')   # s before a run is stopped
SHARE=$((TOTAL / N))
cg_parent $P > /dev/null \
    || fail "managed parent"
echo "${TOTAL}M" > "$CG_ROOT/$P/memory.max" || fail "parent memory.max"
if [ "$SWAP" = 1 ]; then
    zram_swap 1G || fail "zram swap"
else
    echo 0 > "$CG_ROOT/$P/memory.swap.max" 2>/dev/null
fi
sessions="high"; i=1
while [ $i -le "$LOWN" ]; do sessions="$sessions low$i"; i=$((i + 1)); done

cat > /tmp/exp.toml <<EOT
[profile.high]
class = "interactive"

[profile.low]
class = "background"
weight = 0.5
yield_to_interactive = true

[[select]]
profile = "high"
session = "high"

[[select]]
profile = "low"
session = "low*"
EOT

oom_kills() { awk '$1 == "oom_kill" { print $2 }' "$CG_ROOT/$P/$1/memory.events" 2>/dev/null || echo 0; }
# events SESSION: the session's memory.events as "high max oom oom_kill"
events() {
    awk '{ v[$1] = $2 } END { printf "%d %d %d %d\n", v["high"], v["max"], v["oom"], v["oom_kill"] }' \
        "$CG_ROOT/$P/$1/memory.events" 2>/dev/null || echo "0 0 0 0"
}
# events_json BEFORE AFTER: the increase as a JSON object
events_json() {
    set -- $1 $2
    echo "{\"high\":$(($5 - $1)),\"max\":$(($6 - $2)),\"oom\":$(($7 - $3)),\"oom_kill\":$(($8 - $4))}"
}
WINDOW_ARG=""; [ "$WINDOW" = peak ] && WINDOW_ARG=--window-at-peak

# the usual userspace practice: poll pressure, squeeze the noisy neighbour
watcher() {
    while :; do
        for s in $sessions; do
            [ "$s" = high ] && continue
            f=$CG_ROOT/$P/$s
            some=$(sed -n 's/^some avg10=\([0-9.]*\).*/\1/p' "$f/memory.pressure" 2>/dev/null)
            if awk -v v="${some:-0}" 'BEGIN { exit !(v > 10) }'; then
                echo "$((SHARE / 2))M" > "$f/memory.high" 2>/dev/null
            else
                echo "${SHARE}M" > "$f/memory.high" 2>/dev/null
            fi
        done
        sleep 0.5
    done
}

# memtrace ARM REP: the EXP-MEM lines, until killed
memtrace() {
    t0=$(cut -d' ' -f1 /proc/uptime | tr -d .)
    while :; do
        line="EXP-MEM $1 $2 $((($(cut -d' ' -f1 /proc/uptime | tr -d .) - t0) * 10)) $(($(cat "$CG_ROOT/$P/memory.current") >> 20))"
        for s in $sessions; do
            f=$CG_ROOT/$P/$s
            fz=""; grep -q "^frozen 1" "$f/cgroup.events" 2>/dev/null && fz=":f"
            line="$line $s=$(($(cat "$f/memory.current" 2>/dev/null || echo 0) >> 20))$fz"
        done
        echo "$line max=$(awk '$1 == "max" { print $2 }' "$CG_ROOT/$P/memory.events")"
        sleep 0.2
    done
}

records=0
reset_sessions() {
    for s in $sessions; do
        f=$CG_ROOT/$P/$s
        if [ -d "$f" ]; then
            for c in "$f"/*/; do [ -d "$c" ] && rmdir "$c" 2>/dev/null; done
            rmdir "$f" 2>/dev/null
        fi
        cg_parent "$f" > /dev/null
    done
}

run_arm() {   # run_arm ARM REP
    arm=$1 rep=$2 wpid="" 
    reset_sessions
    case $arm in
        Static) for s in $sessions; do echo "${SHARE}M" > "$CG_ROOT/$P/$s/memory.max"; done ;;
        HighOnly) for s in $sessions; do echo "${SHARE}M" > "$CG_ROOT/$P/$s/memory.high"; done
                  watcher & wpid=$! ;;
        AgentCG-CPU) sched_start --cell-parent-cgroup $P --enable-borrowing --policy /tmp/exp.toml > /dev/null \
                     || { echo "EXP-ERROR $arm $rep scheduler did not start"; return 1; } ;;
        AgentCG) sched_start --cell-parent-cgroup $P --enable-borrowing --policy /tmp/exp.toml --mem-arbitration > /dev/null \
                     || { echo "EXP-ERROR $arm $rep scheduler did not start"; return 1; } ;;
    esac
    for s in $sessions; do eval "oom0_$s=$(oom_kills $s); ev0_$s=\"$(events $s)\""; done
    pev0=$(events .)
    mt=""; [ "$MEMTRACE" = 1 ] && { memtrace "$arm" "$rep" & mt=$!; }
    pids=""
    for s in $sessions; do
        t=$LOW_TRACE; [ "$s" = high ] && t=$HIGH_TRACE
        agentcg-replay run --trace "/traces/$t" --speed "$SPEED" --max-duration "$MAXDUR" $WINDOW_ARG \
            --step-parent "$P/$s" --json "/tmp/r_$s.json" > "/tmp/r_$s.out" 2>&1 &
        eval "pid_$s=$!"
    done
    # a session that cannot finish (memory.high without swap can throttle a
    # LOW session nearly to a halt) is stopped at LIMIT s and counted as
    # not completed
    all=""; for s in $sessions; do eval "all=\"\$all \$pid_$s\""; done
    rm -f /tmp/exp_to_*
    ( sleep "$LIMIT"
      for p in $all; do kill -0 "$p" 2> /dev/null && touch "/tmp/exp_to_$p"; done
      kill -TERM $all 2> /dev/null; sleep 5; kill -KILL $all 2> /dev/null ) & dog=$!
    for s in $sessions; do
        eval "p=\$pid_$s"; wait "$p"; eval "rc_$s=$?"
    done
    kill $dog 2> /dev/null
    [ -n "$wpid" ] && kill "$wpid" 2>/dev/null
    [ -n "$mt" ] && kill "$mt" 2>/dev/null
    case $arm in AgentCG*)
        stats_json /tmp/exp_stats.json
        echo "EXP-SCHED {\"arm\":\"$arm\",\"rep\":$rep,\"reply\":$(tr -d '\n' < /tmp/exp_stats.json)}"
        grep "mem-arbitration: session .* killed" "$SCHED_LOG" | sed "s/^/EXP-KILL $arm $rep /"
        grep "mem-arbitration: session" "$SCHED_LOG" | sed "s/^/EXP-LOG $arm $rep /"
        grep -m1 -o 'memcg_ops: [a-z]*' "$SCHED_LOG" | sed "s/^/EXP-MEMCG $arm $rep /"
        sched_stop INT > /dev/null ;;
    esac
    for s in $sessions; do
        role=LOW; [ "$s" = high ] && role=HIGH
        eval "o0=\$oom0_$s; rc=\$rc_$s; p=\$pid_$s; e0=\$ev0_$s"
        kills=$(( $(oom_kills $s) - o0 ))
        ev=$(events_json "$e0" "$(events $s)")
        # the shared parent's own events go with HIGH's record (one per run)
        [ "$s" = high ] && ev="$ev,\"parent_events\":$(events_json "$pev0" "$(events .)")"
        if [ -e "/tmp/exp_to_$p" ]; then
            echo "EXP-RECORD {\"arm\":\"$arm\",\"role\":\"$role\",\"session\":\"$s\",\"rep\":$rep,\"oom_kills\":$kills,\"events\":$ev,\"exit\":$rc,\"timed_out\":true}"
        elif [ "$rc" = 0 ] && [ -s "/tmp/r_$s.json" ]; then
            rec=$(cat "/tmp/r_$s.json")
            echo "EXP-RECORD {\"arm\":\"$arm\",\"role\":\"$role\",\"session\":\"$s\",\"rep\":$rep,\"oom_kills\":$kills,\"events\":$ev,\"exit\":$rc,${rec#\{}"
        else
            # killed without an OOM kill in its cgroup: --mem-arbitration's cgroup.kill
            how=oom; [ "$kills" = 0 ] && how=other
            [ "$kills" = 0 ] && [ "$arm" = AgentCG ] && how=arbitration
            echo "EXP-RECORD {\"arm\":\"$arm\",\"role\":\"$role\",\"session\":\"$s\",\"rep\":$rep,\"oom_kills\":$kills,\"events\":$ev,\"exit\":$rc,\"killed_by\":\"$how\",\"oom_killed\":true}"
        fi
        rm -f "/tmp/r_$s.json"
        records=$((records + 1))
    done
    log "rep $rep $arm done"
}

rep=1
while [ $rep -le "$REPS" ]; do
    for arm in $ARMS; do
        run_arm $arm $rep
    done
    rep=$((rep + 1))
done
# the solo baselines of HIGH and LOW: each alone, no limits beyond the
# parent's, 3 runs
for rep in 1 2 3; do
    for role in HIGH LOW; do
        reset_sessions
        s=high t=$HIGH_TRACE; [ $role = LOW ] && s=low1 t=$LOW_TRACE
        agentcg-replay run --trace "/traces/$t" --speed "$SPEED" --max-duration "$MAXDUR" $WINDOW_ARG \
            --step-parent "$P/$s" --json /tmp/solo.json > /dev/null 2>&1 \
            && echo "EXP-RECORD {\"arm\":\"Solo\",\"role\":\"$role\",\"session\":\"$s\",\"rep\":$rep,\"oom_kills\":0,\"exit\":0,$(sed 's/^{//' /tmp/solo.json)" \
            && solos=$((${solos:-0} + 1))
    done
done
narms=$(echo $ARMS | wc -w)
check "every arm and repetition gave a record per session ($records of $((REPS * narms * N)))" \
    test "$records" -eq $((REPS * narms * N))
check "every solo baseline completed (${solos:-0} of 6)" test "${solos:-0}" -eq 6
finish
