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

# cg_cpu_pct SECS CG: CPU used by CG over SECS seconds, in percent of one CPU.
cg_cpu_pct() {
    _b=$(cg_usage_us "$2"); sleep "$1"; _a=$(cg_usage_us "$2")
    awk -v a="$_a" -v b="$_b" -v s="$1" 'BEGIN { printf "%.1f\n", (a - b) / (s * 10000) }'
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
spin_in() { agentcg-load spin --cgroup "$1" --threads "$2" --duration "$3" > /dev/null & }

# within VALUE WANT PCT: VALUE within PCT percent (relative) of WANT.
within() { awk -v v="$1" -v w="$2" -v p="$3" 'BEGIN { d = v - w; if (d < 0) d = -d; exit !(d <= w * p / 100) }'; }

# cg_max CG "QUOTA PERIOD" [BURST]: set cpu.max (and cpu.max.burst).
cg_max() {
    echo "$2" > "$(cg_path "$1")/cpu.max" || return 1
    [ -z "${3:-}" ] || echo "$3" > "$(cg_path "$1")/cpu.max.burst"
}
