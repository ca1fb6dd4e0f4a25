# Measurement helpers shared by scenarios and the benchmark (busybox sh).
# Sourced after lib.sh:  . /lib/agentcg/measure.sh

# cg_shares SECS CG...: CPU used by each cgroup over SECS seconds, as a
# percentage of what all of them used together. Prints "CG=PCT ..." on one
# line, in argument order.
cg_shares() {
    _secs=$1; shift
    _before=""
    for _c in "$@"; do _before="$_before $(cg_usage_us "$_c")"; done
    sleep "$_secs"
    _after=""
    for _c in "$@"; do _after="$_after $(cg_usage_us "$_c")"; done
    echo "$*|$_before|$_after" | awk -F'|' '{
        n = split($1, name, " "); split($2, b, " "); split($3, a, " ")
        t = 0; for (i = 1; i <= n; i++) { d[i] = a[i] - b[i]; t += d[i] }
        for (i = 1; i <= n; i++) printf "%s=%.1f%s", name[i], (t ? d[i] * 100 / t : 0), (i < n ? " " : "\n")
    }'
}

# _cg_snap FILE: set _up (uptime, s) and _us (usage_usec of the cpu.stat
# FILE), read one right after the other with shell builtins only.
_cg_snap() {
    read _up _rest < /proc/uptime
    _us=0
    while read _k _v; do
        if [ "$_k" = usage_usec ]; then _us=$_v; break; fi
    done < "$1"
}

# cg_cpu_pct SECS CG: CPU used by CG over about SECS seconds, in percent of
# one CPU. Divides by the time that really passed between the two readings
# (in a loaded VM `sleep 2` and the reads around it can take 2.2 s, which
# read as 10 % more CPU when divided by the nominal 2 s).
cg_cpu_pct() {
    _f="$(cg_path "$2")/cpu.stat"
    _cg_snap "$_f"; _t0=$_up; _b=$_us
    sleep "$1"
    _cg_snap "$_f"
    awk -v a="$_us" -v b="$_b" -v t0="$_t0" -v t1="$_up" 'BEGIN {
        t = t1 - t0; if (t <= 0) t = 0.01
        printf "%.1f\n", (a - b) / (t * 10000) }'
}

# max_dev "CG=PCT ..." "WANT1 WANT2 ...": largest |PCT - WANT| in points.
max_dev() {
    echo "$1|$2" | awk -F'|' '{
        n = split($1, got, " "); split($2, want, " "); m = 0
        for (i = 1; i <= n; i++) { split(got[i], kv, "="); d = kv[2] - want[i]; if (d < 0) d = -d; if (d > m) m = d }
        printf "%.1f\n", m
    }'
}

# spin_in CG THREADS SECS: background spinners in CG (output discarded).
# Where a window measures them, give SECS room to spare and end them with
# spin_stop: a loaded VM can stretch `sleep 2` plus a 10 s window past 13 s,
# and a window that outlives some cgroups' spinners skews every share.
spin_in() { agentcg-load spin --cgroup "$1" --threads "$2" --duration "$3" > /dev/null & }

# uptime_s: guest uptime in seconds.
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# cg_busy CG...: every CG still has a process in it (its load ran through
# the window just measured).
cg_busy() {
    for _c in "$@"; do grep -q . "$(cg_path "$_c")/cgroup.procs" || return 1; done
    return 0
}

# cg_idle CG...: no CG has a process left.
cg_idle() {
    for _c in "$@"; do ! grep -q . "$(cg_path "$_c")/cgroup.procs" || return 1; done
    return 0
}

# spin_stop CG...: end the processes in every CG now (SIGTERM; agentcg-load
# stops its workers and exits) and wait up to 30 s until the CGs are empty.
spin_stop() {
    for _c in "$@"; do kill $(cat "$(cg_path "$_c")/cgroup.procs") 2>/dev/null; done
    wait_until 30 cg_idle "$@"
}

# drain_loads: end every agentcg-load process now and wait until they are
# gone. Benchmark loads run with room to spare and end here, right after
# their window: a window that outlives a cgroup's load skews its share.
drain_loads() { killall agentcg-load 2> /dev/null; wait_until 30 sh -c '! pidof agentcg-load' > /dev/null; }

# wake_to_run SECS TID: trace thread TID for SECS (tracefs) and print
# "w2r_n=N w2r_p50_us=X w2r_p90_us=Y w2r_p99_us=Z": how long it waited from each wake-up
# (sched_waking) to running (sched_switch to it). That is the scheduler's
# own part of a wake-up's latency; a timer probe's figure adds the timer's
# lateness, which under TCG is mostly the host descheduling the vCPU.
wake_to_run() {
    # no thread id: an unfiltered trace would pair other tasks' events
    [ -n "$2" ] || { echo "w2r_n=0"; return 1; }
    _t=/sys/kernel/tracing
    [ -d $_t/events ] || mount -t tracefs nodev $_t || return 1
    echo 0 > $_t/tracing_on
    echo global > $_t/trace_clock
    echo "pid == $2" > $_t/events/sched/sched_waking/filter || return 1
    echo "next_pid == $2" > $_t/events/sched/sched_switch/filter || return 1
    for _e in sched_waking sched_switch; do echo 1 > $_t/events/sched/$_e/enable; done
    echo > $_t/trace
    echo 1 > $_t/tracing_on; sleep "$1"; echo 0 > $_t/tracing_on
    for _e in sched_waking sched_switch; do echo 0 > $_t/events/sched/$_e/enable; done
    awk '!/^#/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) { t = $i; break }
            sub(":", "", t) }
         /sched_waking:/ { w = t; next }
         /sched_switch:/ && w != "" { printf "%.0f\n", (t - w) * 1e6; w = "" }' $_t/trace \
        | sort -n > /tmp/w2r
    _n=$(wc -l < /tmp/w2r)
    [ "$_n" -gt 0 ] || { echo "w2r_n=0"; return 1; }
    echo "w2r_n=$_n w2r_p50_us=$(sed -n "$((_n / 2 + 1))p" /tmp/w2r) w2r_p90_us=$(sed -n "$((_n * 9 / 10 + 1))p" /tmp/w2r) w2r_p99_us=$(sed -n "$((_n * 99 / 100 + 1))p" /tmp/w2r)"
}

# cg_thread CG NAME: the id of the thread named NAME (its comm) in CG; of
# several, the newest (highest id: cyclictest's measurement thread, made
# after its main thread of the same name). Fails if there is none.
cg_thread() {
    _tid=$(for _t in $(cat "$(cg_path "$1")/cgroup.threads"); do
               [ "$(cat /proc/$_t/comm 2>/dev/null)" = "$2" ] && echo "$_t"
           done | sort -n | tail -n 1)
    [ -n "$_tid" ] && echo "$_tid"
}

# within VALUE WANT PCT: VALUE within PCT percent (relative) of WANT.
within() { [ -n "$1" ] && [ -n "$2" ] && awk -v v="$1" -v w="$2" -v p="$3" 'BEGIN { d = v - w; if (d < 0) d = -d; exit !(d <= w * p / 100) }'; }

# cg_max CG "QUOTA PERIOD" [BURST]: set cpu.max (and cpu.max.burst).
cg_max() {
    echo "$2" > "$(cg_path "$1")/cpu.max" || return 1
    [ -z "${3:-}" ] || echo "$3" > "$(cg_path "$1")/cpu.max.burst"
}

# stats_json FILE: save one stats "top" reply of the running scheduler.
stats_json() {
    agentcg-load rawreq /var/run/scx/root/stats '{"req":"stats","args":{"target":"top"}}' > "$1"
}

# cell_field FILE CELL FIELD: a field of one cell in a saved stats reply.
cell_field() {
    sed -n "s/.*\"cells\":{.*\"$2\":{[^}]*\"$3\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1"
}

# step_field FILE SESSION/STEP FIELD: a field of one step in a saved reply.
step_field() {
    sed -n "s|.*\"steps\":{.*\"$2\":{[^}]*\"$3\":\"\{0,1\}\([^,\"}]*\).*|\1|p" "$1"
}

# cg_cpus_seen CG SECS: the CPUs CG's running threads (state R) were seen
# on while sampling /proc every 0.1 s for SECS seconds, as a sorted
# space-separated list. A sleeping thread's "last CPU" may date from before
# a layout change (or from before it joined CG), so it does not count.
cg_cpus_seen() {
    _end=$(calc "$(cut -d' ' -f1 /proc/uptime) + $2")
    while fle "$(cut -d' ' -f1 /proc/uptime)" "$_end"; do
        for _t in $(cat "$(cg_path "$1")/cgroup.threads" 2>/dev/null); do
            awk '$3 == "R" { print $39 }' "/proc/$_t/stat" 2>/dev/null
        done
        sleep 0.1
    done | sort -n | uniq | tr '\n' ' ' | sed 's/ $//'
}

# cgroup_cfgs: how many cgroups the running scheduler has configured in
# BPF (map_cgroup_cfgs of its stats), empty if it does not answer
cgroup_cfgs() { stats_json /tmp/cfgs.json && sed -n 's/.*"map_cgroup_cfgs":\([0-9]*\).*/\1/p' /tmp/cfgs.json; }
# cfgs_at_most N: that count is known and at most N
cfgs_at_most() { _m=$(cgroup_cfgs); [ -n "$_m" ] && [ -n "$1" ] && [ "$_m" -le "$1" ]; }

# in_cpulist CPU LIST: is CPU in the kernel cpulist LIST ("0-2,5")?
in_cpulist() {
    echo "$2" | tr ',' '\n' | awk -v c="$1" -F- '{ lo = $1; hi = ($2 == "" ? $1 : $2); if (c >= lo && c <= hi) f = 1 } END { exit !f }'
}

# all_in_cpulist "CPUS" LIST: every CPU of the space-separated list is in LIST.
all_in_cpulist() {
    for _c in $1; do in_cpulist "$_c" "$2" || return 1; done
    return 0
}

# The agent-session case of both benchmarks: session s1 under the managed
# parent $SESSION_P, with an interactive step "chat" (its wake-up probe and
# 2 spinners) and a background step "bg" (6 spinners) at half weight.
SESSION_P=agentcg
# session_setup: make the cgroups (weights 100; see session_bg_weight)
session_setup() {
    cg_parent $SESSION_P > /dev/null && cg_parent $SESSION_P/s1 100 > /dev/null \
        && cg_new $SESSION_P/s1/chat 100 > /dev/null && cg_new $SESSION_P/s1/bg 100 > /dev/null
}
# session_policy BOOST: scx_agentcg's policy file for it (stdout): chat is
# interactive (wakeup_boost BOOST), bg background at weight 0.5
session_policy() {
    printf '[profile.chat]\nclass = "interactive"\nwakeup_boost = %s\nburst_credit_ms = 50\nburst_refill_pct = 20\n' "$1"
    printf '[profile.bg]\nclass = "background"\nweight = 0.5\n'
    printf '[[select]]\nprofile = "chat"\npath = "%s/*/chat"\n[[select]]\nprofile = "bg"\npath = "%s/*/bg"\n' $SESSION_P $SESSION_P
}
# session_bg_weight W: bg's cpu.weight; 50 gives a scheduler without the
# policy what the bg profile gives scx_agentcg, 100 undoes it
session_bg_weight() { echo "$1" > "$(cg_path $SESSION_P/s1/bg)/cpu.weight"; }
# session_probe SECS: run the loads, print the probe's agentcg-load line
# and, appended as s1_cpu_pct=, the CPU the whole session got meanwhile (%
# of a CPU): a latency bought by running the session on fewer CPUs (a cell
# smaller than the machine) shows there
session_probe() {
    spin_in $SESSION_P/s1/bg 6 $(($1 + 60)); spin_in $SESSION_P/s1/chat 2 $(($1 + 60)); sleep 1
    agentcg-load wakeup --cgroup $SESSION_P/s1/chat --interval-us 2000 --duration "$1" > /tmp/session_probe.out &
    _sp=$!
    _sc=$(cg_cpu_pct "$1" $SESSION_P/s1)
    wait $_sp
    echo "$(cat /tmp/session_probe.out) s1_cpu_pct=$_sc"
    drain_loads
}
