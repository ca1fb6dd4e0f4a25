# vm: --smp 4 --mem 2G --timeout 300
# Step cpumasks inside a session's cell: a background step's spinners stay
# on its 25 % while an interactive step of the same session uses the whole
# cell; an exclusive step's CPU is not used by its siblings while it exists
# and is given back when it ends. Then --partial: only the managed tree
# runs on SCHED_EXT.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

P=agentcg
cg_parent $P > /dev/null \
    || fail "managed parent"
cg_parent $P/s1 100 > /dev/null \
    || fail "session"
cg_new $P/s1/bg 100 > /dev/null && cg_new $P/s1/chat 100 > /dev/null || fail "steps"
cat > /tmp/steps.toml <<EOF
[profile.bg]
class = "background"
cpus_pct = 25

[profile.build]
class = "tool"
cpus = "exclusive:1"

[[select]]
profile = "bg"
path = "$P/*/bg"

[[select]]
profile = "build"
path = "$P/*/build*"
EOF

sched_start --cell-parent-cgroup $P --system-cell-min-cpus 1 --policy /tmp/steps.toml \
    || fail "scheduler did not start"
sleep 1
stats_json /tmp/s0.json
cell=$(cell_field /tmp/s0.json s1 cpulist)
ncell=$(cell_field /tmp/s0.json s1 cpus)
log "cell of s1: $cell ($ncell CPUs); bg step: $(step_field /tmp/s0.json s1/bg cpus) CPUs"
check_eq "the bg step's mask is 25 % of the cell (at least one CPU)" \
    "$(calc "int(($ncell * 25 + 99) / 100)")" "$(step_field /tmp/s0.json s1/bg cpus)"
check_eq "the chat step uses the whole cell" "$ncell" "$(step_field /tmp/s0.json s1/chat cpus)"

# alone, chat's spinners spread over the whole cell
spin_in $P/s1/chat "$ncell" 30
sleep 1
chs=$(cg_cpus_seen $P/s1/chat 2); nch=$(echo $chs | wc -w)
log "seen: chat alone on [$chs]"
check_eq "chat spinners use the whole cell" "$ncell" "$nch"
# with chat busy beside it, bg stays on its 25 %
spin_in $P/s1/bg 4 30
sleep 1
bgs=$(cg_cpus_seen $P/s1/bg 3); nbg=$(echo $bgs | wc -w)
log "seen: bg on [$bgs]"
check "bg spinners were seen running" test -n "$bgs"
check "bg spinners stay in the cell ($bgs in $cell)" all_in_cpulist "$bgs" "$cell"
check_le "bg spinners use at most its 25 % ($nbg CPUs)" "$nbg" "$(calc "int(($ncell * 25 + 99) / 100)")"

# an exclusive step: its CPU is not used by siblings while it exists
cg_new $P/s1/build1 100 > /dev/null || failed "build step"
spin_in $P/s1/build1 1 20
sleep 1.5   # the new step is applied at once (inotify); its task moved in after
stats_json /tmp/s1.json
log "build1: $(step_field /tmp/s1.json s1/build1 reservation), chat now $(step_field /tmp/s1.json s1/chat cpus) CPUs"
check_eq "the exclusive step's reservation is granted" "granted 1" "$(step_field /tmp/s1.json s1/build1 reservation)"
bus=$(cg_cpus_seen $P/s1/build1 2); chs2=$(cg_cpus_seen $P/s1/chat 2)
log "seen: build1 on [$bus], chat on [$chs2]"
check "build1 and chat were seen running" sh -c "[ -n '$bus' ] && [ -n '$chs2' ]"
for c in $bus; do
    check "build1's CPU $c is not used by chat" ! in_cpulist "$c" "$(echo $chs2 | tr ' ' ',')"
done
check_eq "chat's mask is the rest of the cell" "$((ncell - 1))" "$(step_field /tmp/s1.json s1/chat cpus)"
kill $(cat "$(cg_path $P/s1/build1)/cgroup.procs") 2>/dev/null
wait_until 5 rmdir "$CG_ROOT/$P/s1/build1"
kill $(cat "$(cg_path $P/s1/bg)/cgroup.procs") 2>/dev/null
sleep 1.5
chs3=$(cg_cpus_seen $P/s1/chat 2)
check_eq "the reservation is released when the step ends (chat alone on [$chs3])" "$ncell" "$(echo $chs3 | wc -w)"
kill $(cat "$(cg_path $P/s1/chat)/cgroup.procs") 2>/dev/null
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"

# --partial: the managed tree on SCHED_EXT (policy 7), everything else fair
policy_of() { awk '/^policy/ { print $3 }' "/proc/$1/sched"; }
agentcg-load spin --cgroup $P/s1/chat --threads 1 --duration 60 > /dev/null &
inpid=$!
cg_new outside 100 > /dev/null
agentcg-load spin --cgroup outside --threads 1 --duration 60 > /dev/null &
outpid=$!
sched_start --cell-parent-cgroup $P --partial || fail "partial start"
check "--partial: both spinners still run (a slow start outlasted them once)" kill -0 $inpid $outpid
check "--partial: a task of the managed tree is switched to SCHED_EXT" wait_until 5 \
    sh -c "awk '/^policy/ { exit \$3 != 7 }' /proc/$inpid/sched"
check_eq "--partial: a task outside stays on the fair class" 0 "$(policy_of $outpid)"
scx_agentcg run --session s1 --step p1 -- sh -c 'sleep 1.5; awk "/^policy/ { print \$3 }" /proc/$$/sched' > /tmp/p1.out
check_eq "--partial: a step started by the launcher runs on SCHED_EXT" 7 "$(cat /tmp/p1.out)"
kill $inpid $outpid 2>/dev/null
sched_stop INT
check_eq "exit status (partial)" 0 "$SCHED_RC"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
