# vm: --smp 4 --mem 2G --timeout 420
# The session registry (--registry-socket, src/registry.rs): container-like
# cgroups deep in the tree become sessions with a profile, with no
# --cell-parent-cgroup: they get cells (their tasks run on their own
# CPUs), profiles and stats rows; the socket is root-only; bad
# registrations are refused with what to do and change nothing; an id
# registered again is harmless; an entry whose cgroup is removed goes
# within a second; 1,000 containers leave no entry behind; --partial
# switches the registered sessions' tasks (only theirs) to SCHED_EXT.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

SOCK=/tmp/reg/registry.sock
reg() { scx_agentcg registry --socket $SOCK "$@"; }
n_listed() { reg list | tr '{' '\n' | grep -c '"id":'; }
listed_is() { [ "$(n_listed)" = "$1" ]; }
K=kubepods.slice/kubepods-burstable.slice/pod1
cat > /tmp/r.toml <<'EOT'
[profile.chat]
class = "interactive"

[profile.bg]
class = "background"
EOT
for c in cri-c1 cri-c2; do cg_new $K/$c > /dev/null || fail "cgroup $c"; done

sched_start --registry-socket $SOCK --policy /tmp/r.toml || fail "scheduler did not start"
check "the log says where the registry listens" grep -q "registry: listening on $SOCK" "$SCHED_LOG"
check_eq "the socket is root-only (0600)" 600 "$(stat -c %a $SOCK)"
check_eq "in a directory only root enters (0700)" 700 "$(stat -c %a /tmp/reg)"
out=$(su nobody -s /bin/sh -c "scx_agentcg registry --socket $SOCK list" 2>&1); rc=$?
log "as nobody: rc=$rc $out"
check "a request from a non-root user is refused" refused_with $rc "$out" "permission denied (the registry socket is root-only)"
out=$(timeout 30 scx_agentcg --registry-socket $SOCK 2>&1); rc=$?
log "a second scheduler on the socket: rc=$rc: $(echo "$out" | tail -n 1)"
check "a second scheduler on the same socket is refused" refused_with $rc "$out" "another process serves there"
check "the first one still serves" reg list

# --- registrations --------------------------------------------------------
agentcg-load spin --cgroup $K/cri-c1 --threads 2 --duration 120 > /dev/null &
agentcg-load spin --cgroup $K/cri-c2 --threads 1 --duration 120 > /dev/null &
c2load=$!
out=$(reg register --id c1 --cgroup /$K/cri-c1 --profile bg --session pod-a --label team=search); rc=$?
log "register c1: rc=$rc $out"
check_eq "register: ok" '{"ok":true}' "$out"
check "register c2 (interactive, named by its id)" reg register --id c2 --cgroup /$K/cri-c2 --profile chat
check_eq "two registrations" 2 "$(n_listed)"
check "the list has the cgroup, profile and labels" says "$(reg list)" \
    "{\"id\":\"c1\",\"cgroup\":\"/$K/cri-c1\",\"profile\":\"bg\",\"session\":\"pod-a\",\"labels\":{\"team\":\"search\"}}"
cells_up() { stats_json /tmp/s1.json && grep -q '"pod-a":{' /tmp/s1.json && grep -q '"c2":{' /tmp/s1.json; }
check "both have cells" wait_until 10 cells_up
cpus=$(cell_field /tmp/s1.json pod-a cpulist)
log "cells: pod-a on $cpus, c2 on $(cell_field /tmp/s1.json c2 cpulist), system on $(cell_field /tmp/s1.json system cpulist)"
check "pod-a has CPUs" test -n "$cpus"
seen=$(cg_cpus_seen $K/cri-c1 3)
log "pod-a's spinners seen on CPUs: $seen"
check "its spinners were seen running" test -n "$seen"
check "only on its cell's CPUs ($cpus)" all_in_cpulist "$seen" "$cpus"
check "the stats list the session by its cgroup path" grep -q "\"sessions\":{.*\"$K/cri-c1\":{\"active\":" /tmp/s1.json

# --- refused, nothing changed ----------------------------------------------
while IFS='|' read -r args want; do
    out=$(reg register $args 2>&1); rc=$?
    log "refused? register $args: rc=$rc $(echo "$out" | tail -n 1)"
    check "refused: $args" refused_with $rc "$out" "$want"
done <<EOF
--id c3 --cgroup /$K/nope --profile bg|register a cgroup that exists
--id c3 --cgroup /$K/../x --profile bg|'..'
--id c3 --cgroup $K/cri-c2 --profile bg|starting with '/'
--id c3 --cgroup / --profile bg|is the root
--id c3 --cgroup /$K/cri-c2 --profile gpu|profile "gpu" is not in the policy (profiles: bg, chat)
--id c3 --cgroup /$K/cri-c1 --profile bg|already registered by id "c1"
--id c3 --cgroup /$K/cri-c2 --profile bg --session pod-a|session "pod-a" is already registered
EOF
out=$(echo 'garbage' | reg send 2>&1); rc=$?
check "a line that is not a request is refused" refused_with $rc "$out" "bad request"
out=$(echo '{"op":"register","id":"c9","cgroup":"/x","profile":"bg","cpu":"all"}' | reg send 2>&1)
check "an unknown field is refused by name" says "$out" "unknown field \`cpu\`"
check_eq "still two registrations" 2 "$(n_listed)"
check "registering c1 again is harmless" reg register --id c1 --cgroup /$K/cri-c1 --profile bg --session pod-a --label team=search
check_eq "still two registrations after the repeat" 2 "$(n_listed)"

# --- the cgroup goes: so does the entry -------------------------------------
kill $c2load; wait $c2load 2>/dev/null
wait_until 10 sh -c "! grep -q . $(cg_path $K/cri-c2)/cgroup.procs"
rmdir "$(cg_path $K/cri-c2)" || failed "rmdir cri-c2"
check "a removed cgroup's entry goes within 2 s" wait_until 2 listed_is 1
gone() { stats_json /tmp/s2.json && ! grep -q '"c2":{' /tmp/s2.json; }
check "and its cell" wait_until 5 gone
out=$(reg unregister --id c1)
check_eq "unregister: removed" '{"ok":true,"removed":true}' "$out"
check_eq "unregister again: not an error" '{"ok":true,"removed":false}' "$(reg unregister --id c1)"
nocell() { stats_json /tmp/s3.json && ! grep -q '"pod-a":{' /tmp/s3.json; }
check "the unregistered session's cell is gone" wait_until 5 nocell
drain_loads

# --- 1,000 containers: 50 rounds of 20 created, registered, removed ----------
m0=$(cgroup_cfgs)
t0=$(uptime_s)
i=0
while [ $i -lt 50 ]; do
    : > /tmp/batch
    j=0
    while [ $j -lt 20 ]; do
        d=$(cg_path pods/r$i-$j); mkdir -p "$d"
        echo "{\"op\":\"register\",\"id\":\"r$i-$j\",\"cgroup\":\"/pods/r$i-$j\",\"profile\":\"bg\"}" >> /tmp/batch
        j=$((j + 1))
    done
    reg send < /tmp/batch > /tmp/batch.out || failed "round $i: a registration was refused" "$(grep -v '"ok":true' /tmp/batch.out | head -n 1)"
    j=0
    while [ $j -lt 20 ]; do rmdir "$(cg_path pods/r$i-$j)"; j=$((j + 1)); done
    i=$((i + 1))
done
log "1000 containers registered and removed in $(calc "$(uptime_s) - $t0") s"
check "every entry went with its cgroup" wait_until 5 listed_is 0
check_eq "the registry lists nothing" '{"ok":true,"sessions":[]}' "$(reg list)"
check "no cgroup configuration left in BPF (cgrp_cfgs back to its count before)" wait_until 5 cfgs_at_most "$m0"
log "cgrp_cfgs entries: $m0 before, $(cgroup_cfgs) after"
check "the scheduler is still attached" sched_alive
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
check "the socket is removed on exit" test ! -e $SOCK

# --- --partial: registered sessions run on SCHED_EXT, the rest stays fair;
# a profile with cpu_mode = "cfs" keeps its sessions on the fair class ------
policy_of() { awk '/^policy/ { print $3 }' "/proc/$1/sched"; }
policy_is() { [ "$(policy_of "$1")" = "$2" ]; }   # policy_is PID POLICY
cat > /tmp/rp.toml <<'EOT'
[profile.bg]
class = "background"

[profile.web]
class = "tool"
cpu_mode = "cfs"
EOT
for c in cri-c4 cri-c5; do cg_new $K/$c > /dev/null; done
agentcg-load spin --cgroup $K/cri-c4 --threads 1 --duration 60 > /dev/null &
inpid=$!
agentcg-load spin --cgroup $K/cri-c5 --threads 1 --duration 60 > /dev/null &
webpid=$!
cg_new outside > /dev/null
agentcg-load spin --cgroup outside --threads 1 --duration 60 > /dev/null &
outpid=$!
sched_start --registry-socket $SOCK --policy /tmp/rp.toml --partial || fail "partial start"
check_eq "--partial: nothing registered, the container's task stays fair" 0 "$(policy_of $inpid)"
reg register --id c4 --cgroup /$K/cri-c4 --profile bg > /dev/null
reg register --id c5 --cgroup /$K/cri-c5 --profile web > /dev/null
check "--partial: the registered session's task is switched to SCHED_EXT" wait_until 5 policy_is $inpid 7
check_eq "--partial: a task outside stays on the fair class" 0 "$(policy_of $outpid)"
check_eq "cpu_mode = cfs: the session's task stays on the fair class" 0 "$(policy_of $webpid)"
has_cell() { stats_json /tmp/sp.json && test -n "$(cell_field /tmp/sp.json "$1" cpulist)"; }
check "the bg session has a cell" wait_until 5 has_cell c4
check "cpu_mode = cfs: the session has none" ! has_cell c5
reg register --id c4 --cgroup /$K/cri-c4 --profile web > /dev/null
check "registered again with a cfs profile, its task goes back to the fair class" wait_until 5 policy_is $inpid 0
kill $inpid $webpid $outpid 2>/dev/null
sched_stop INT
check_eq "exit status (partial)" 0 "$SCHED_RC"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
