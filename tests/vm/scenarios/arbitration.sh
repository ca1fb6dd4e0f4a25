# vm: --smp 4 --mem 2G --timeout 600 --with-modules
# --mem-arbitration ([memory], src/memory.rs, src/bpf/memory.bpf.h), each
# feature against its own off switch in this boot:
# - an interactive session gets memory.low/min (and the managed parent the
#   sum), loses it when reclassified (SIGHUP) and when it ends;
# - the kernel's OOM killer takes the background session with
#   oom_prefer_background, the (larger) interactive one without;
# - near the shared limit a background session is held back in BPF
#   (its memory stops growing), frozen, resumed when there is room again,
#   and completes; without pause the same load ends in an OOM kill; the
#   scheduler stays attached through a 32 s pause (sched_ext watchdog: 30 s);
# - with zram swap a frozen session is pushed out with memory.reclaim, and
#   not with reclaim = false;
# - by the hog's own clock, its allocations stop within 100 ms of the guard
#   line (usually under 1 ms), and with pause = false they do not; with no
#   interactive session the lone hog is kept running (keep_one_running),
#   and held with that off;
# - nothing outside the managed tree is frozen, protected or re-scored;
# - bad [memory] values and flag combinations are refused before attaching.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

P=agentcg
cg_parent $P > /dev/null || fail "managed parent"
M=$((1024 * 1024))

# policy NAME [KEY=VALUE...]: /tmp/NAME.toml, chat* interactive, bg*
# background; each KEY of [memory] replaces the line of that key, or is added
policy() {
    _f=/tmp/$1.toml; shift
    cat > "$_f" <<EOT
[profile.chat]
class = "interactive"
protect_low = "96M"

[profile.bg]
class = "background"

[[select]]
profile = "chat"
session = "chat*"

[[select]]
profile = "bg"
session = "bg*"

[[select]]
profile = "bg"
session = "hog*"

[memory]
guard_pct = 80
resume_pct = 60
kill_pct = 95
freeze_after_ms = 1500
EOT
    for _l in "$@"; do
        _k=${_l%% *}
        if grep -q "^$_k = " "$_f"; then sed -i "s/^$_k = .*/$_l/" "$_f"; else echo "$_l" >> "$_f"; fi
    done
}
mem() { cat "$(cg_path "$1")/$2"; }
# arb FILE KEY: a counter of the mem_arbitration stats in a saved reply
arb() { sed -n 's/.*"mem_arbitration":{\([^}]*\)}.*/\1/p' "$1" | tr ',' '\n' | sed -n "s/^\"$2\"://p"; }
# sess FILE SESSION FIELD: a session's field (quotes stripped)
sess() { sed -n "s|.*\"sessions\":{.*\"$P/$2\":{\([^}]*\)}.*|\1|p" "$1" | tr ',' '\n' | sed -n "s/^\"$3\":\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p"; }
oom_kills() { awk '$1 == "oom_kill" { print $2 }' "$(cg_path "$1")/memory.events"; }
reset() {
    drain_loads
    for s in "$@"; do rmdir "$(cg_path $P/$s)" 2>/dev/null; cg_new $P/$s > /dev/null || fail "session $s"; done
}
hog() { agentcg-load memhog --cgroup "$1" --mb "$2" ${3:+--rate-mb-s $3} --duration "${4:-60}" > "/tmp/hog_$(basename "$1").out" 2>&1 & HOG=$!; }

# ---- bad input: refused before attaching
policy bad1 "resume_pct = 85"
policy bad2 "freeze_after_ms = 9000"
for c in "--cell-parent-cgroup $P --mem-arbitration --policy /tmp/bad1.toml|bad1.toml:22: [memory]: resume_pct = 85 must be below guard_pct = 80" \
         "--cell-parent-cgroup $P --mem-arbitration --policy /tmp/bad2.toml|freeze_after_ms = 9000 must be below 5000" \
         "--mem-arbitration|--mem-arbitration needs --cell-parent-cgroup" \
         "--cell-parent-cgroup $P --mem-arbitration --mem-escalation|use one"; do
    args=${c%%|*} want=${c#*|}
    # shellcheck disable=SC2086
    scx_agentcg $args > /tmp/bad.out 2>&1; rc=$?
    check "refused: $args ($(tail -n1 /tmp/bad.out))" sh -c "[ $rc -ne 0 ] && grep -qF -- '$want' /tmp/bad.out && [ '$(sched_state)' = disabled ]"
done

# ---- protection, and a cgroup outside the managed tree
reset chat bg1
cg_new outside > /dev/null || fail "outside cgroup"
echo 200M > "$(cg_path outside)/memory.max"
policy main
sched_start --cell-parent-cgroup $P --policy /tmp/main.toml --mem-arbitration || fail "scheduler did not start"
check "the log names the in-kernel guard" grep -q "mem-arbitration: on for the sessions of $P: in-kernel guard polls the page counters (.*) every 1000 us" "$SCHED_LOG"
check "the log says this kernel has the memcg kfuncs (7.3 does)" grep -q "this kernel also has the memcg kfuncs" "$SCHED_LOG"
hog $P/chat 40; chat_pid=$HOG
hog outside 190 40
agentcg-load memhog --mb 1 --duration 60 > /dev/null 2>&1 & bystander=$!
# the hog is still faulting its 40 MiB in: wait for the protection to cover it
wait_until 15 sh -c "[ \$(cat $(cg_path $P/chat)/memory.current) -ge $((40 * M)) ] && [ \$(cat $(cg_path $P/chat)/memory.low) -ge \$(cat $(cg_path $P/chat)/memory.current) ]"
low=$(mem $P/chat memory.low) min=$(mem $P/chat memory.min) plow=$(mem $P memory.low) cur=$(mem $P/chat memory.current)
log "protection: chat memory.current $((cur / M)) MiB, memory.low $((low / M)) MiB, memory.min $((min / M)) MiB; parent memory.low $((plow / M)) MiB"
check "the interactive session gets memory.low above its usage, within its 96M budget" \
    sh -c "[ $low -ge $cur ] && [ $low -le $((96 * M)) ]"
check "its memory.min is half of that (within a page)" sh -c "[ $(( low / 2 - min )) -ge 0 ] && [ $(( low / 2 - min )) -lt 4096 ]"
check_eq "the managed parent carries the sum" "$low" "$plow"
check_eq "the background session gets none" 0 "$(mem $P/bg1 memory.low)"
# reclassified: chat matches no selector
sed -i 's/session = "chat\*"/session = "nomatch*"/' /tmp/main.toml
kill -HUP $SCHED_PID
wait_until 10 sh -c "[ \$(cat $(cg_path $P/chat)/memory.low) = 0 ]"
check_eq "reclassified: memory.low withdrawn" 0 "$(mem $P/chat memory.low)"
check_eq "reclassified: memory.min withdrawn" 0 "$(mem $P/chat memory.min)"
check_eq "reclassified: the parent's sum too" 0 "$(mem $P memory.low)"
sed -i 's/session = "nomatch\*"/session = "chat*"/' /tmp/main.toml
kill -HUP $SCHED_PID
wait_until 10 sh -c "[ \$(cat $(cg_path $P)/memory.low) -gt 0 ]"
check "classified again: protected again" test "$(mem $P memory.low)" -gt 0
kill $chat_pid; sleep 0.5; rmdir "$(cg_path $P/chat)"
wait_until 10 sh -c "[ \$(cat $(cg_path $P)/memory.low) = 0 ]"
check_eq "the session ended: the parent's protection is gone" 0 "$(mem $P memory.low)"
check "outside the tree: no memory.low" test "$(mem outside memory.low)" = 0
check "outside the tree: never frozen" test "$(mem outside cgroup.freeze)" = 0
check_eq "a task outside the tree keeps its oom_score_adj" 0 "$(cat /proc/$bystander/oom_score_adj)"
sched_stop INT; check_eq "exit status" 0 "$SCHED_RC"
kill $bystander 2>/dev/null

# ---- the OOM killer's victim: interactive 220M (the larger), background
# growing to 150M, shared limit 300M, pause off so the kernel must choose
for pref in false true; do
    reset chat bg1
    echo 300M > "$(cg_path $P)/memory.max"
    policy oom "pause = false" "oom_prefer_background = $pref"
    sched_start --cell-parent-cgroup $P --policy /tmp/oom.toml --mem-arbitration || fail "scheduler did not start"
    hog $P/chat 220; chat_pid=$HOG; sleep 4
    # at full speed: a slow climb lets reclaim of file pages put the OOM off
    hog $P/bg1 150
    wait_until 60 sh -c "[ \$(awk '\$1 == \"oom_kill\" { print \$2 }' $(cg_path $P)/memory.events) -gt $(oom_kills $P) ]"
    sleep 1
    log "memory.events of $P: $(tr '\n' ' ' < "$(cg_path $P)/memory.events")"
    ck=$(oom_kills $P/chat) bk=$(oom_kills $P/bg1)
    log "oom_prefer_background = $pref: OOM kills chat $ck, bg1 $bk"
    if [ $pref = true ]; then
        check "with the preference the victim is the background session" sh -c "[ $bk -ge 1 ] && [ $ck = 0 ]"
        check "the interactive hog survives" kill -0 $chat_pid
    else
        check "without it the kernel takes the larger, interactive session" sh -c "[ $ck -ge 1 ] && [ $bk = 0 ]"
    fi
    sched_stop INT; check_eq "exit status" 0 "$SCHED_RC"
done

# ---- pause, freeze, resume (no swap): chat holds 150M, bg1 grows to 300M
# under 400M shared (guard 80 % = 320M); and the same without pause
echo 400M > "$(cg_path $P)/memory.max"
for pause in false true; do
    reset chat bg1
    policy pz "pause = $pause"
    sched_start --cell-parent-cgroup $P --policy /tmp/pz.toml --mem-arbitration || fail "scheduler did not start"
    oom0=$(oom_kills $P)
    hog $P/chat 150 "" 120; chat_pid=$HOG; sleep 3
    hog $P/bg1 300 40 120; bg_pid=$HOG
    if [ $pause = false ]; then
        wait_until 20 sh -c "[ \$(awk '\$1 == \"oom_kill\" { print \$2 }' $(cg_path $P)/memory.events) -gt $oom0 ]"
        check "pause = false: the same load ends in a kernel OOM kill" test "$(oom_kills $P)" -gt "$oom0"
        sched_stop INT; check_eq "exit status" 0 "$SCHED_RC"
        continue
    fi
    wait_until 20 grep -q "^frozen 1" "$(cg_path $P/bg1)/cgroup.events"
    stats_json /tmp/p1.json
    c1=$(mem $P/bg1 memory.current); sleep 3; c2=$(mem $P/bg1 memory.current)
    log "paused: bg1 $((c1 / M)) -> $((c2 / M)) MiB over 3 s; $(sed -n 's/.*"mem_arbitration":{\([^}]*\)}.*/\1/p' /tmp/p1.json)"
    check "the background session was held in the scheduler first" test "$(sess /tmp/p1.json bg1 mem_holds)" -ge 1
    check "then frozen (cgroup.events frozen 1)" grep -q "^frozen 1" "$(cg_path $P/bg1)/cgroup.events"
    check "its memory stopped growing (under 8 MiB in 3 s)" test $((c2 - c1)) -lt $((8 * M))
    check "it stopped below the limit" test "$c2" -lt $((300 * M))
    r=$(arb /tmp/p1.json reaction_us_max)
    log "reaction (guard line crossed to the last growth): median $(arb /tmp/p1.json reaction_us_median) us, max $r us"
    check "reaction time measured, under 50 ms" sh -c "[ $(arb /tmp/p1.json reactions) -ge 1 ] && [ ${r:-999999} -le 50000 ]"
    check_eq "the interactive session runs on" running "$(sess /tmp/p1.json chat mem_state)"
    check_eq "the background hog got oom_score_adj 1000" 1000 "$(cat /proc/$bg_pid/oom_score_adj)"
    # past the sched_ext watchdog's 30 s
    sleep 29
    check "after a 32 s pause the scheduler is still attached" sched_alive
    check_eq "sched_ext still enabled" enabled "$(sched_state)"
    kill $chat_pid
    wait_until 10 grep -q "^frozen 0" "$(cg_path $P/bg1)/cgroup.events"
    check "room again: resumed" grep -q "^frozen 0" "$(cg_path $P/bg1)/cgroup.events"
    wait_until 20 sh -c "[ \$(cat $(cg_path $P/bg1)/memory.current) -ge $((290 * M)) ]"
    check "it grows to its 300 MiB after the resume" test "$(mem $P/bg1 memory.current)" -ge $((290 * M))
    stats_json /tmp/p2.json
    check "stats count a freeze and a thaw, no kill" sh -c "[ $(arb /tmp/p2.json frozen) -ge 1 ] && [ $(arb /tmp/p2.json thawed) -ge 1 ] && [ $(arb /tmp/p2.json killed) = 0 ]"
    check_eq "no kernel OOM kill with pause" "$oom0" "$(oom_kills $P)"
    check "the background hog is alive" kill -0 $bg_pid
    check "no sched_ext errors in dmesg" ! dmesg_sched_errors
    sched_stop INT; check_eq "exit status" 0 "$SCHED_RC"
done

# ---- with swap: memory.reclaim of the frozen session, and not without it
zram_swap 1G || fail "zram swap"
for rec in false true; do
    reset chat bg1
    policy sw "reclaim = $rec"
    sched_start --cell-parent-cgroup $P --policy /tmp/sw.toml --mem-arbitration || fail "scheduler did not start"
    # chat's 250M keep the fill above resume_pct after the reclaim
    hog $P/chat 250 "" 60; sleep 4
    hog $P/bg1 300 40 60; bg_pid=$HOG
    wait_until 20 grep -q "^frozen 1" "$(cg_path $P/bg1)/cgroup.events"
    # the reclaim may be done before this line runs: compare with the peak
    f1=$(mem $P/bg1 memory.peak)
    sleep 4
    f2=$(mem $P/bg1 memory.current)
    log "reclaim = $rec: frozen bg1, peak $((f1 / M)) MiB, $((f2 / M)) MiB 4 s after the freeze; swap $(awk '/SwapFree/ { print $2 }' /proc/meminfo) kB free"
    stats_json /tmp/sw.json
    log "reclaim = $rec: $(sed -n 's/.*"mem_arbitration":{\([^}]*\)}.*/\1/p' /tmp/sw.json); hog alive: $(kill -0 $bg_pid 2>/dev/null && echo yes || echo no); $(tail -c 300 /tmp/hog_bg1.out | tr '\n' ' ')"
    grep -E "froze|thaw|kill|reclaim|pushed" "$SCHED_LOG" | tail -n 6
    check "reclaim = $rec: the background hog was not killed" sh -c "[ $(arb /tmp/sw.json killed) = 0 ] && kill -0 $bg_pid"
    if [ $rec = true ]; then
        check "reclaim: the frozen session's memory.current fell below half its peak" test "$f2" -lt $((f1 / 2))
        check "the log says what memory.reclaim pushed out" grep -q "memory.reclaim pushed out" "$SCHED_LOG"
    else
        check "reclaim = false: it stays (above 90 %)" test "$f2" -gt $((f1 * 9 / 10))
    fi
    sched_stop INT; check_eq "exit status" 0 "$SCHED_RC"
    check "on exit: thawed" test "$(mem $P/bg1 cgroup.freeze)" = 0
done
check_eq "on exit: the background hog's oom_score_adj is back" 0 "$(cat /proc/$bg_pid/oom_score_adj)"
drain_loads

# ---- the hog's own clock (agentcg-replay react: it stamps every 64 KiB and
# reads the parent's memory.current): with an interactive session running
# (an idle one, chat), held within 100 ms of the guard line, and with
# pause = false not held at all (it grows on into swap). With no
# interactive session the lone hog is the session kept running
# (keep_one_running): not held either, and held again with that off.
reset chat
cg_run $P/chat sleep 600 &
chat_on=1
for c in "pause = true|chat|held" "pause = false|chat|grows" "keep_one_running = true|alone|grows" "keep_one_running = false|alone|held"; do
    set1=${c%%|*} rest=${c#*|}; who=${rest%%|*} want=${rest#*|}
    if [ $who = alone ] && [ -n "$chat_on" ]; then
        # cg_run's & is a subshell: kill what is in the cgroup
        kill $(cat "$(cg_path $P/chat)/cgroup.procs") 2>/dev/null; chat_on=""
        wait_until 5 grep -q "^populated 0" "$(cg_path $P/chat)/cgroup.events"
    fi
    policy rx "$set1"
    sched_start --cell-parent-cgroup $P --policy /tmp/rx.toml --mem-arbitration || fail "scheduler did not start"
    agentcg-replay react --parent "$(cg_path $P)" --via bpf --reps 1 --rate-mb-s 40 --guard-pct 80 > /tmp/rx.out 2>&1
    rx=$(sed -n 1p /tmp/rx.out); log "react, $set1, $who: $rx"
    ms=$(echo "$rx" | sed -n 's/.*"reaction_ms":\([0-9.]*\).*/\1/p')
    if [ $want = held ]; then
        # the scheduler may read the counter over the line (and hold the
        # hog) before the hog reads it itself: held_below
        check "$set1 ($who): the hog reached the guard line (read it, or was held within 1 % of it first)" \
            sh -c "echo '$rx' | grep -q '\"crossed\":true\|\"held_below\":true'"
        # usually under 1 ms; tests/reaction.sh saw 3 of 10 at 35-49 ms
        # (docs/experiments/reaction.md), so the bound here is 100 ms, still
        # far from the off switch's >= 500 ms
        check "$set1 ($who): held, its allocations stopped within 100 ms of the crossing (${ms:-?} ms)" \
            sh -c "echo '$rx' | grep -q '\"stopped\":true' && awk -v m='${ms:-999}' 'BEGIN { exit !(m <= 100) }'"
    else
        check "$set1 ($who): the hog crossed the guard line" sh -c "echo '$rx' | grep -q '\"crossed\":true'"
        check "$set1 ($who): not held, it grew on for the whole window (${ms:-?} ms)" \
            sh -c "echo '$rx' | grep -q '\"stopped\":false' && awk -v m='${ms:-0}' 'BEGIN { exit !(m >= 500) }'"
    fi
    sched_stop INT; check_eq "exit status" 0 "$SCHED_RC"
done
finish
