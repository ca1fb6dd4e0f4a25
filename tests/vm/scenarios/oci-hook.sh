# vm: --smp 4 --mem 2G --timeout 420
# vm-deb: bookworm runc /usr/sbin/runc
# The OCI hook (scx_agentcg hook, src/hook.rs) under runc 1.1: a container
# with the agentcg.io/profile annotation is registered by its poststart
# hook (id, cgroup as /proc/<pid>/cgroup shows it, profile, session,
# labels) and shows in the stats; one without it is not; poststop
# unregisters (by hand: an entry whose cgroup still exists goes); a hook
# that cannot reach the registry fails open (exit 0, one line naming the
# socket; runc runs the container) and with --fail-closed fails (runc
# refuses the container); a hook call takes well under 2 s; 200 containers
# run and deleted through runc leave no registration or BPF state behind.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

SOCK=/tmp/reg.sock
NONE=/tmp/none.sock
HOOK=/usr/bin/scx_agentcg        # where run.sh puts it in the guest
B=/tmp/bundle
RROOT=/tmp/runc
reg() { scx_agentcg registry --socket $SOCK "$@"; }
# listing: the registry's list reply without whitespace; fails unless the
# registry answered ok (so that "not listed" cannot pass on an error)
listing() {
    _l=$(reg list) || return 1
    _l=$(printf '%s' "$_l" | tr -d ' \t\n')
    case $_l in '{"ok":true'*) printf '%s\n' "$_l" ;; *) return 1 ;; esac
}
listed() { _s=$(listing) && printf '%s\n' "$_s" | grep -qF -- "$1"; }
unlisted() { _s=$(listing) && ! printf '%s\n' "$_s" | grep -qF -- "$1"; }
n_listed() { _s=$(listing) && printf '%s\n' "$_s" | tr '{' '\n' | grep -c '"id":'; }
# runc's view of a container: status, pid (empty if runc does not know it)
cstatus() { runc --root $RROOT state "$1" 2>/dev/null | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p'; }
cpid() { runc --root $RROOT state "$1" 2>/dev/null | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p'; }
# crun NAME: start container NAME detached; runc's output (and the
# container's, which inherits it) goes to /tmp/NAME.out, never to a pipe:
# the container would hold it open. The rootfs is on a ramdisk (the
# initramfs is /), where pivot_root is refused: --no-pivot.
crun() { timeout 60 runc --root $RROOT run -d --no-pivot --bundle $B/$1 $1 < /dev/null > /tmp/$1.out 2>&1; }
# cstop NAME: kill it, wait until runc sees it stopped, delete it
# (poststop hooks run then); runc delete's output goes to /tmp/NAME.del
is_stopped() { [ "$(cstatus "$1")" = stopped ]; }
cstop() {
    runc --root $RROOT kill "$1" KILL 2>/dev/null
    wait_until 10 is_stopped "$1" || log "cstop: $1 is '$(cstatus "$1")' 10 s after SIGKILL"
    timeout 30 runc --root $RROOT delete "$1" > /tmp/$1.del 2>&1
}

# hook_entry ARG...: an OCI hook entry running "scx_agentcg hook ARG..."
hook_entry() {
    _a='"scx_agentcg", "hook"'
    for _x in "$@"; do _a="$_a, \"$_x\""; done
    echo "{\"path\": \"$HOOK\", \"args\": [$_a], \"timeout\": 5}"
}
# marker NAME: a poststop hook entry saving the state runc passes
marker() { echo "{\"path\": \"/bin/sh\", \"args\": [\"sh\", \"-c\", \"cat > /tmp/$1.poststop.json\"], \"timeout\": 5}"; }

# bundle NAME ANNOTATIONS POSTSTART POSTSTOP [SECONDS]: $B/NAME/config.json,
# a container sleeping SECONDS (60) in the cgroup /agentcg-pods/NAME
# (cgroupfs driver: a path below the cgroup2 root) on the shared busybox
# rootfs
bundle() {
    mkdir -p $B/$1 || return 1
    cat > $B/$1/config.json <<EOF
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["/bin/sleep", "${5:-60}"],
    "env": ["PATH=/bin"],
    "cwd": "/",
    "noNewPrivileges": true
  },
  "root": {"path": "$B/rootfs", "readonly": false},
  "hostname": "$1",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
  ],
  "annotations": $2,
  "hooks": {
    "poststart": [$3],
    "poststop": [$4]
  },
  "linux": {
    "cgroupsPath": "/agentcg-pods/$1",
    "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]
  }
}
EOF
}

# --- bundles -------------------------------------------------------------------
command -v runc > /dev/null || fail "no runc in the VM (the vm-deb header brings it)"
log "$(runc --version | head -n 1)"
# busybox is static (busybox-static, tests/vm/deps.sh): no libraries needed
mkdir -p $B/rootfs/bin $B/rootfs/proc $B/rootfs/dev $B/rootfs/tmp $RROOT || fail "rootfs directories"
cp /bin/busybox $B/rootfs/bin/busybox || fail "busybox into the rootfs"
ln -s busybox $B/rootfs/bin/sh && ln -s busybox $B/rootfs/bin/sleep || fail "applet links"
ANN='{"agentcg.io/profile": "bg", "agentcg.io/session": "pod-a"}'
ON="$(hook_entry poststart --socket $SOCK)"
# poststop: the marker, then the hook with --fail-closed, so that a hook
# failure shows in runc delete's output (runc delete exits 0 either way)
OFF="$(marker c1), $(hook_entry poststop --socket $SOCK --fail-closed)"
bundle c1 "$ANN" "$ON" "$OFF" || fail "bundle c1"
bundle c2 '{}' "$ON" "$(marker c2), $(hook_entry poststop --socket $SOCK --fail-closed)" || fail "bundle c2"
# c3: --fail-closed against a missing socket; c4: the default, fail-open
bundle c3 '{"agentcg.io/profile": "bg"}' "$(hook_entry poststart --socket $NONE --fail-closed)" "" || fail "bundle c3"
bundle c4 '{"agentcg.io/profile": "bg"}' "$(hook_entry poststart --socket $NONE)" "" || fail "bundle c4"

cat > /tmp/p.toml <<'EOT'
[profile.bg]
class = "background"
EOT
sched_start --registry-socket $SOCK --policy /tmp/p.toml || fail "scheduler did not start"
check "the registry listens" wait_until 10 test -S $SOCK

# --- c1: annotated, registered by its poststart hook ---------------------------
crun c1; rc=$?
log "runc run c1: rc=$rc $(tail -n 3 /tmp/c1.out)"
check_eq "runc runs c1" 0 "$rc"
check_eq "c1 is running" running "$(cstatus c1)"
p1=$(cpid c1)
log "c1: pid $p1, $(cat /proc/$p1/cgroup 2>&1)"
check "c1's process is in /agentcg-pods/c1" grep -qx "0::/agentcg-pods/c1" /proc/$p1/cgroup
E1='"id":"c1","cgroup":"/agentcg-pods/c1","profile":"bg","session":"pod-a"'
log "registry: $(reg list)"
check "the poststart hook registered c1 (cgroup, profile, session)" listed "$E1"
check "with the agentcg.io/ annotations as labels" \
    listed '"labels":{"agentcg.io/profile":"bg","agentcg.io/session":"pod-a"}'

# --- c2: no annotation, skipped ------------------------------------------------
crun c2; rc=$?
log "runc run c2: rc=$rc $(tail -n 3 /tmp/c2.out)"
check_eq "runc runs c2" 0 "$rc"
check_eq "c2 is running" running "$(cstatus c2)"
check "c2 (no agentcg.io/profile) is not registered" unlisted '"id":"c2"'
check_eq "one registration" 1 "$(n_listed)"

# --- the stats -----------------------------------------------------------------
# the stats' "sessions" object (it ends at the first "}}"; every cgroup
# is in "cgroups" too, so the whole reply would not do)
sessions_of() { sed -n 's/.*"sessions":{\(.*\)$/\1/p' "$1" | sed 's/}}.*//'; }
in_stats() { stats_json /tmp/s1.json && sessions_of /tmp/s1.json | grep -q '"agentcg-pods/c1":{'; }
check "the stats list c1's cgroup as a session" wait_until 10 in_stats
has_cell() { stats_json /tmp/s2.json && grep -q '"pod-a":{' /tmp/s2.json; }
check "session pod-a has a cell" wait_until 10 has_cell
no_c2() { [ -s /tmp/s1.json ] && sessions_of /tmp/s1.json | grep -q '"agentcg-pods/c1":{' && ! sessions_of /tmp/s1.json | grep -q '"agentcg-pods/c2":{'; }
check "c2's cgroup is no session" no_c2

# --- by hand: an empty environment, timing, failing open and closed -------------
cg_new agentcg-pods/hand > /dev/null || fail "cgroup agentcg-pods/hand"
# the process itself joins and execs sleep ($! of a cg_run would be the
# subshell around it, which stays where it was)
sh -c 'echo $$ > "$0/cgroup.procs" && exec sleep 120' "$(cg_path agentcg-pods/hand)" &
hp=$!
check "a process in agentcg-pods/hand" wait_until 5 grep -qx "0::/agentcg-pods/hand" /proc/$hp/cgroup
HS='{"ociVersion":"1.0.2","id":"hand1","status":"running","pid":'$hp',"bundle":"/tmp","annotations":{"agentcg.io/profile":"bg"}}'
t0=$(uptime_s)
echo "$HS" | env -i $HOOK hook poststart --socket $SOCK --fail-closed > /tmp/hand.out 2>&1; rc=$?
t1=$(uptime_s)
dt=$(calc "$t1 - $t0")
log "poststart by hand: rc=$rc in ${dt}s $(cat /tmp/hand.out)"
check_eq "a poststart hook with an empty environment exits 0" 0 "$rc"
check_le "and takes under 2 s" "$dt" 2
check "it registered hand1 with its process's cgroup, named by its id" \
    listed '"id":"hand1","cgroup":"/agentcg-pods/hand","profile":"bg","session":"hand1"'
check_eq "two registrations" 2 "$(n_listed)"

t0=$(uptime_s)
out=$(echo "$HS" | env -i $HOOK hook poststart --socket $NONE 2>&1); rc=$?
dt=$(calc "$(uptime_s) - $t0")
log "poststart against a missing socket: rc=$rc in ${dt}s: $out"
check_eq "fail-open: a missing socket exits 0" 0 "$rc"
check_eq "with one line of output" 1 "$(printf '%s\n' "$out" | grep -c .)"
check "naming the socket" says "$out" "$NONE"
check "and the scheduler flag to use" says "$out" "--registry-socket"
check_le "quickly" "$dt" 2
out=$(echo "$HS" | env -i $HOOK hook poststart --socket $NONE --fail-closed 2>&1); rc=$?
log "the same with --fail-closed: rc=$rc: $out"
check "--fail-closed: a missing socket exits non-zero" test "$rc" -ne 0
check "naming the socket" says "$out" "$NONE"
check_eq "still two registrations" 2 "$(n_listed)"

echo '{"ociVersion":"1.0.2","id":"hand1","status":"stopped","bundle":"/tmp"}' \
    | env -i $HOOK hook poststop --socket $SOCK --fail-closed; rc=$?
check_eq "a poststop hook by hand exits 0" 0 "$rc"
check "it unregistered hand1, whose cgroup is still there" unlisted '"id":"hand1"'
check "the cgroup is still there" test -d "$(cg_path agentcg-pods/hand)"
check "the scheduler logs the unregistration" wait_until 2 grep -q "registry: session hand1 (id hand1) unregistered" "$SCHED_LOG"
kill $hp 2>/dev/null; wait $hp 2>/dev/null

# --- through runc: a missing socket fails open, --fail-closed refuses ----------
crun c4; rc=$?
log "runc run c4 (fail-open, no registry there): rc=$rc $(tail -n 3 /tmp/c4.out)"
check_eq "fail-open: runc runs c4" 0 "$rc"
check_eq "c4 is running" running "$(cstatus c4)"
check "c4 is not registered" unlisted '"id":"c4"'
crun c3; rc=$?
log "runc run c3 (fail-closed, no registry there): rc=$rc $(tail -n 3 /tmp/c3.out)"
check "--fail-closed: runc refuses c3" test "$rc" -ne 0
check "runc's error has the hook's line naming the socket" grep -qF "scx_agentcg hook: poststart: cannot connect to $NONE" /tmp/c3.out
check "c3 is not running" test "$(cstatus c3)" != running
runc --root $RROOT delete -f c3 > /dev/null 2>&1

# --- c1 goes: poststop -----------------------------------------------------------
cstop c1; rc=$?
log "runc delete c1: rc=$rc $(cat /tmp/c1.del)"
check_eq "runc deletes c1" 0 "$rc"
check "runc ran c1's poststop hooks" grep -q '"id": *"c1"' /tmp/c1.poststop.json
check "the poststop state has no pid" ! grep -q '"pid"' /tmp/c1.poststop.json
check "the poststop hook (--fail-closed) succeeded" ! grep -q "error running" /tmp/c1.del
check "c1 is no longer registered" wait_until 2 unlisted '"id":"c1"'
# (the registry also drops an entry whose cgroup is gone: either may come first)
log "registry log for c1: $(grep 'id c1' "$SCHED_LOG" | tail -n 2)"
not_in_stats() { stats_json /tmp/s3.json && grep -q '"sessions":{' /tmp/s3.json && ! sessions_of /tmp/s3.json | grep -q '"agentcg-pods/c1":{'; }
check "and no longer in the stats" wait_until 10 not_in_stats
for c in c2 c4; do
    cstop $c; rc=$?
    check_eq "runc deletes $c" 0 "$rc"
done
check "c2's poststop hook ran and succeeded" sh -c "grep -q '\"id\": *\"c2\"' /tmp/c2.poststop.json && ! grep -q 'error running' /tmp/c2.del"
check_eq "no registrations left" 0 "$(n_listed)"

# --- 200 containers created and deleted through runc, 4 at a time ------------
# each sleeps 0.5 s (its poststart hook must find its process) and "runc
# run" deletes it when it exits (poststop then); about 1.5 s each in the VM
m0=$(cgroup_cfgs)
nreg0=$(grep -c "registry: session cyc.* is cgroup /agentcg-pods/cyc" "$SCHED_LOG")
cycles() {   # cycles WORKER: 50 containers one after the other
    _i=0
    while [ $_i -lt 50 ]; do
        _n=cyc$1-$_i
        bundle $_n '{"agentcg.io/profile": "bg"}' "$ON" "$(hook_entry poststop --socket $SOCK)" 0.5 \
            && timeout 60 runc --root $RROOT run --no-pivot --bundle $B/$_n $_n < /dev/null > /tmp/cyc.$1.out 2>&1 \
            || echo "$_n: rc=$? $(tail -n 2 /tmp/cyc.$1.out)" >> /tmp/cyc.failed
        rm -rf "${B:?}/$_n"
        _i=$((_i + 1))
    done
}
: > /tmp/cyc.failed
t0=$(uptime_s)
# (wait for the workers by pid: a bare wait would wait for the scheduler too)
workers=""
for w in 0 1 2 3; do cycles $w & workers="$workers $!"; done
for w in $workers; do wait $w; done
log "200 containers run and deleted in $(calc "$(uptime_s) - $t0") s; failures: $(head -n 3 /tmp/cyc.failed)"
check_eq "runc ran all 200" 0 "$(grep -c . /tmp/cyc.failed)"
nreg=$(($(grep -c "registry: session cyc.* is cgroup /agentcg-pods/cyc" "$SCHED_LOG") - nreg0))
check_eq "each was registered by its poststart hook" 200 "$nreg"
none_listed() { [ "$(n_listed)" = 0 ]; }
check "no registration is left" wait_until 5 none_listed
no_cgroups_left() { ! ls -d "$(cg_path agentcg-pods)"/cyc* > /dev/null 2>&1; }
check "runc removed their cgroups" no_cgroups_left
check "no cgroup configuration left in BPF (cgrp_cfgs back to its count before)" wait_until 5 cfgs_at_most "$m0"
log "cgrp_cfgs entries: $m0 before, $(cgroup_cfgs) after"

check "the scheduler is still attached" sched_alive
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
