# Helpers for VM scenarios (busybox sh, POSIX only). In a scenario:
#     . /lib/agentcg/lib.sh
#     check "state is disabled" test "$(sched_state)" = disabled
#     ...
#     finish            # last line: prints RESULT and sets the exit status
#
# Reporting:  log MSG | pass NAME | failed NAME [DETAIL] | check NAME [!] CMD...
#             check_eq NAME WANT GOT | check_ge NAME A B | check_le NAME A B
#             fail MSG (fatal) | finish
# Numbers:    calc EXPR | pct A B | fge A B | fle A B | kv KEY LINE
# Cgroups:    cg_path P | cg_new P [WEIGHT] | cg_usage_us P | cg_run P CMD...
# Scheduler:  sched_start ARGS... | sched_stop [SIG] | sched_state | sched_alive
# Misc:       wait_until SECS CMD... | dmesg_mark | dmesg_sched_errors
#             load_modules (needs run.sh --with-modules)

CG_ROOT=/sys/fs/cgroup
SCX_STATE=/sys/kernel/sched_ext/state
SCHED_BIN=${SCHED_BIN:-scx_agentcg}
SCHED_LOG=${SCHED_LOG:-/tmp/sched.log}
SCHED_START_TIMEOUT=${SCHED_START_TIMEOUT:-60}   # BPF load under TCG is slow
SCHED_STOP_TIMEOUT=${SCHED_STOP_TIMEOUT:-30}
SCHED_PID=""
SCHED_RC=""
N_PASS=0
N_FAIL=0
_DMESG_MARK=0

# ---------------------------------------------------------------- reporting --

# log MSG...: timestamped (guest uptime) message.
log() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }

pass() { N_PASS=$((N_PASS + 1)); echo "PASS: $1"; }

# failed NAME [DETAIL]: record a failure and go on.
failed() {
    N_FAIL=$((N_FAIL + 1))
    if [ -n "${2:-}" ]; then echo "FAIL: $1 ($2)"; else echo "FAIL: $1"; fi
}

# check NAME [!] CMD...: run CMD; PASS if it succeeds (or fails, with !).
# On failure the detail is the exit status and CMD's last output line.
check() {
    _name=$1; shift
    _neg=0
    if [ "${1:-}" = "!" ]; then _neg=1; shift; fi
    _out=$("$@" 2>&1)
    _rc=$?
    if { [ $_neg = 0 ] && [ $_rc = 0 ]; } || { [ $_neg = 1 ] && [ $_rc != 0 ]; }; then
        pass "$_name"
        return 0
    fi
    failed "$_name" "rc=$_rc: $(printf '%s\n' "$_out" | tail -n1)"
    return 1
}

# check_eq NAME WANT GOT (string compare)
check_eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else failed "$1" "want '$2', got '$3'"; return 1; fi
}
# check_ge NAME A B: numeric A >= B (floats ok); check_le likewise.
check_ge() {
    if fge "$2" "$3"; then pass "$1"; else failed "$1" "$2 < $3"; return 1; fi
}
check_le() {
    if fle "$2" "$3"; then pass "$1"; else failed "$1" "$2 > $3"; return 1; fi
}

# fail MSG: fatal; report, print the summary and exit 1.
fail() {
    failed "$*"
    finish
    exit 1
}

# finish: print "RESULT: N passed, M failed"; nonzero status if any failed
# (or if nothing was checked). Dumps scheduler log/dmesg tails on failure.
finish() {
    if [ "$N_FAIL" -gt 0 ] || [ "$N_PASS" -eq 0 ]; then
        if [ -s "$SCHED_LOG" ]; then
            echo "--- last lines of $SCHED_LOG ---"; tail -n 40 "$SCHED_LOG"
        fi
        if grep -q "DEBUG DUMP" "$SCHED_LOG" 2>/dev/null; then
            echo "--- start of the scheduler's exit dump ---"
            sed -n '/DEBUG DUMP/,$p' "$SCHED_LOG" | head -n 40
        fi
        # an RCU stall report names the blocked tasks or the starved kthread
        echo "--- RCU and hung-task reports in dmesg ---"
        dmesg | grep -E "rcu:|starved|blocked for more than" | head -n 20
        echo "--- last dmesg lines ---"; dmesg | tail -n 30
    fi
    echo "RESULT: $N_PASS passed, $N_FAIL failed"
    [ "$N_FAIL" -eq 0 ] && [ "$N_PASS" -gt 0 ]
}

# chat_bg_policy FILE [PROFILE:KIND=GLOB]...: a policy file with profiles
# chat (interactive) and bg (background; $BG_EXTRA adds lines to it) and
# one selector per argument, e.g. chat:session=chat 'bg:path=agentcg/*/bg';
# tables may be appended to FILE after
chat_bg_policy() {
    _f=$1; shift
    printf '[profile.chat]\nclass = "interactive"\n\n[profile.bg]\nclass = "background"\n%s\n' "${BG_EXTRA:-}" > "$_f"
    for _s in "$@"; do
        _r=${_s#*:}
        printf '\n[[select]]\nprofile = "%s"\n%s = "%s"\n' "${_s%%:*}" "${_r%%=*}" "${_r#*=}" >> "$_f"
    done
}

# says TEXT STRING: TEXT contains STRING (fixed, not a pattern)
says() { echo "$1" | grep -qF -- "$2"; }
# refused_with RC OUTPUT STRING: a non-zero status and the message
refused_with() { [ "$1" -ne 0 ] && echo "$2" | grep -qF -- "$3"; }

# ----------------------------------------------------------------- numbers --

# calc EXPR: awk arithmetic, e.g. calc "3 / 4 * 100"
calc() { awk "BEGIN { print $* }"; }
# pct A B: A as a percentage of B, one decimal ("inf" if B is 0).
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.1f\n", a * 100 / b }'; }
# fge A B / fle A B: float comparisons as exit status; false if either is
# empty (a measurement that did not happen is not a 0).
fge() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
fle() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }
# kv KEY LINE: value of KEY in a "name k=v k=v" line (empty if absent).
kv() {
    printf '%s\n' "$2" | awk -v k="$1=" '{ for (i = 1; i <= NF; i++)
        if (index($i, k) == 1) { print substr($i, length(k) + 1); exit } }'
}

# ------------------------------------------------------------------ cgroups --

# cg_path P: absolute path of a cgroup given relative to /sys/fs/cgroup.
cg_path() {
    case $1 in /*) echo "$1" ;; *) echo "$CG_ROOT/$1" ;; esac
}

# cg_new P [WEIGHT]: create cgroup P (and parents), enabling cpu, cpuset and
# memory in every ancestor's subtree_control; set cpu.weight if given.
# Prints the absolute path. Note: a non-root cgroup that has processes of its
# own cannot enable controllers for children (keep processes in leaves).
cg_new() {
    _p=$(cg_path "$1")
    _rel=${_p#"$CG_ROOT"}
    _cur=$CG_ROOT
    for _part in $(echo "$_rel" | tr '/' ' '); do
        for _c in cpu cpuset memory; do
            grep -qw "$_c" "$_cur/cgroup.subtree_control" 2>/dev/null \
                || echo "+$_c" > "$_cur/cgroup.subtree_control" 2>/dev/null \
                || echo "cg_new: cannot enable $_c in $_cur" >&2
        done
        _cur=$_cur/$_part
        mkdir -p "$_cur" || return 1
    done
    if [ -n "${2:-}" ]; then
        echo "$2" > "$_p/cpu.weight" || { echo "cg_new: cannot set cpu.weight=$2 on $_p" >&2; return 1; }
    fi
    echo "$_p"
}

# cg_parent P [WEIGHT]: cg_new P, with cpu, cpuset and memory enabled for
# P's children too (a managed parent, or a session whose steps are
# cgroups). Prints the absolute path.
cg_parent() {
    _pp=$(cg_new "$@") && echo "+cpu +cpuset +memory" > "$_pp/cgroup.subtree_control" && echo "$_pp"
}

# cg_usage_us P: usage_usec from P's cpu.stat.
cg_usage_us() { awk '$1 == "usage_usec" { print $2 }' "$(cg_path "$1")/cpu.stat"; }

# cg_run P CMD...: run CMD inside cgroup P (foreground; use & yourself).
cg_run() {
    _cgp=$(cg_path "$1"); shift
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$_cgp" "$@"
}

# ---------------------------------------------------------------- scheduler --

sched_state() { cat "$SCX_STATE" 2>/dev/null || echo missing; }

# sched_alive: the background scheduler process exists and is not a zombie.
sched_alive() {
    [ -n "$SCHED_PID" ] && [ -e "/proc/$SCHED_PID/stat" ] || return 1
    [ "$(awk '{ print $3 }' "/proc/$SCHED_PID/stat" 2>/dev/null)" != Z ]
}

_sched_dump() {
    echo "--- $SCHED_LOG ---"; tail -n 60 "$SCHED_LOG" 2>/dev/null
    echo "--- dmesg (sched_ext) ---"; dmesg | grep -i -E 'sched_ext|scx' | tail -n 20
}

# sched_start ARGS...: run "$SCHED_BIN ARGS" in the background (output to
# $SCHED_LOG), wait up to $SCHED_START_TIMEOUT s for state "enabled".
# Returns nonzero (after dumping the log) if it died or never got enabled;
# use: sched_start --foo || fail "scheduler did not start"
sched_start() {
    dmesg_mark
    "$SCHED_BIN" "$@" > "$SCHED_LOG" 2>&1 &
    SCHED_PID=$!
    SCHED_RC=""
    log "started $SCHED_BIN $* (pid $SCHED_PID)"
    _t=0
    while [ "$_t" -lt $((SCHED_START_TIMEOUT * 5)) ]; do
        if [ "$(sched_state)" = enabled ]; then
            log "sched_ext enabled ($(cat /sys/kernel/sched_ext/root/ops 2>/dev/null)) after $((_t / 5)).$((_t % 5 * 2))s"
            return 0
        fi
        if ! sched_alive; then
            wait "$SCHED_PID"; SCHED_RC=$?
            echo "sched_start: $SCHED_BIN exited early with status $SCHED_RC"
            SCHED_PID=""
            _sched_dump
            return 1
        fi
        sleep 0.2
        _t=$((_t + 1))
    done
    echo "sched_start: state is '$(sched_state)' after ${SCHED_START_TIMEOUT}s"
    _sched_dump
    return 1
}

# sched_stop [SIG]: send SIG (default INT) to the scheduler, wait up to
# $SCHED_STOP_TIMEOUT s for it to exit (then KILL), set SCHED_RC to its exit
# status and print it, and check that sched_ext becomes "disabled".
# Returns 0 only if it exited in time and the state is disabled.
# Do not call it in $(...): it must run in the shell that started it.
sched_stop() {
    _sig=${1:-INT}
    [ -n "$SCHED_PID" ] || { echo "sched_stop: no scheduler running"; return 1; }
    kill "-$_sig" "$SCHED_PID" 2>/dev/null
    _ok=0
    _t=0
    while sched_alive; do
        if [ "$_t" -ge $((SCHED_STOP_TIMEOUT * 5)) ]; then
            echo "sched_stop: no exit ${SCHED_STOP_TIMEOUT}s after SIG$_sig; killing"
            kill -KILL "$SCHED_PID"
            _ok=1
            break
        fi
        sleep 0.2
        _t=$((_t + 1))
    done
    wait "$SCHED_PID"; SCHED_RC=$?
    log "scheduler exited with status $SCHED_RC"
    SCHED_PID=""
    if ! wait_until 10 test "$(sched_state)" = disabled; then
        echo "sched_stop: state is '$(sched_state)' after exit"
        _ok=1
    fi
    return $_ok
}

# --------------------------------------------------------------------- misc --

# wait_until SECS CMD...: poll CMD every 0.2 s until it succeeds (0), SECS
# pass (1), or the scheduler started by sched_start dies (2; then SCHED_RC is
# its exit status and SCHED_PID is cleared).
wait_until() {
    _lim=$(( $1 * 5 )); shift
    _w=0
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        if [ -n "$SCHED_PID" ] && ! sched_alive; then
            wait "$SCHED_PID"; SCHED_RC=$?
            echo "wait_until: scheduler (pid $SCHED_PID) died (status $SCHED_RC) while waiting for: $*"
            SCHED_PID=""
            return 2
        fi
        [ "$_w" -ge "$_lim" ] && return 1
        sleep 0.2
        _w=$((_w + 1))
    done
}

# dmesg_mark: later dmesg_sched_errors calls only look at newer lines.
# (sched_start calls it.)
dmesg_mark() { _DMESG_MARK=$(dmesg | wc -l); }

# dmesg_sched_errors: print kernel lines since the mark that show a sched_ext
# error exit, stall, sched_ext watchdog, lockup, BUG/WARNING/Oops. Status 0 if any were
# found, so:  check "no sched_ext errors" ! dmesg_sched_errors
# (The clocksource watchdog complains under TCG; those lines are ignored.)
dmesg_sched_errors() {
    dmesg | tail -n +$((_DMESG_MARK + 1)) | grep -v -i clocksource | grep -E \
        'sched_ext.*(error|stall|watchdog|disabled \((runtime|scx_bpf|runnable|sysrq))|scx_bpf_error|runnable task stall|failed to check in|soft lockup|hard LOCKUP|blocked for more than|rcu.*detected.*stall|BUG:|WARNING:|Oops:|Call Trace:'
}

# load_modules: insmod the modules shipped by run.sh --with-modules.
load_modules() {
    _md=/lib/agentcg/modules
    [ -f "$_md/load-order" ] || { echo "load_modules: no modules (use run.sh --with-modules)"; return 1; }
    for _m in $(cat "$_md/load-order"); do
        grep -q "^$_m " /proc/modules || insmod "$_md/$_m.ko" || return 1
    done
}

# zram_swap SIZE [ALGORITHM]: swap on a zram device (needs run.sh
# --with-modules), so a cgroup past memory.high reclaims and swaps (burning
# CPU) instead of only sleeping in throttling. ALGORITHM defaults to the
# kernel's (lz4 on Debian's); the thrash tests ask for lz4hc, which compresses
# several times slower, so that a thrashing cgroup burns plenty of CPU.
zram_swap() {
    load_modules || return 1
    [ -e /sys/block/zram0 ] || return 1
    if [ -n "$2" ]; then
        grep -qw "$2" /sys/block/zram0/comp_algorithm || { log "zram: no $2 in $(cat /sys/block/zram0/comp_algorithm)"; return 1; }
        echo "$2" > /sys/block/zram0/comp_algorithm || return 1
    fi
    echo "$1" > /sys/block/zram0/disksize && mkswap /dev/zram0 > /dev/null && swapon /dev/zram0 || return 1
    log "zram: $1 of swap, compressor $(sed 's/.*\[\([^]]*\)\].*/\1/' /sys/block/zram0/comp_algorithm)"
}
