# vm: --smp 2 --mem 1G --timeout 180
# Hardening: every malformed flag and policy file of a table is rejected
# before the scheduler attaches, with a message naming the problem (and the
# line, for files); a stale file at the stats socket path is replaced.
. /lib/agentcg/lib.sh

mkdir -p "$CG_ROOT/agentcg"
printf '[profile.a]\nklass = "tool"\n' > /tmp/p1.toml
printf '[profile.a]\nclass = "fast"\n' > /tmp/p2.toml
printf '[profile.a]\nclass = "tool"\nweight = 0\n' > /tmp/p3.toml
printf '[profile.a]\nclass = "tool"\ncpus_pct = 50\ncpus = "exclusive:1"\n' > /tmp/p4.toml
printf '[[select]]\npath = "x"\nprofile = "nope"\n' > /tmp/p5.toml
printf '[profile.a]\nclass = "tool"\n\n[[select]]\nprofile = "a"\nsession = "s_*"\n[[select]]\nprofile = "a"\nsession = "*_1"\n' > /tmp/p6.toml
printf '[profile.a\nclass = "tool"\n' > /tmp/p7.toml
printf '[profile.a]\nclass = "tool"\n[[select]]\nprofile = "a"\n' > /tmp/p8.toml
printf '[profile.a]\nclass = "tool"\n[[select]]\nprofile = "a"\npath = "probe"\n' > /tmp/p9.toml
printf '[profile.web]\nclass = "tool"\ncpu_mode = "cfs"\n' > /tmp/p10.toml
printf '[profile.web]\nclass = "tool"\ncpu_mode = "fair"\n' > /tmp/p11.toml

# case ARGS... | EXPECTED-SUBSTRING   (one per line)
while IFS='|' read -r args want; do
    [ -n "$args" ] || continue
    # shellcheck disable=SC2086
    scx_agentcg $args > /tmp/bad.out 2>&1
    rc=$?
    st=$(sched_state)
    if [ $rc -ne 0 ] && grep -qF -- "$want" /tmp/bad.out && [ "$st" = disabled ]; then
        pass "rejected: $args"
    else
        failed "rejected: $args" "rc=$rc state=$st: $(tail -n1 /tmp/bad.out)"
    fi
done <<'EOF'
--slice-us 5|--slice-us 5 is out of range
--slice-us abc|invalid value 'abc'
--cgroup-slice-us 50|--cgroup-slice-us
--bandwidth-poll-ms 1|--bandwidth-poll-ms
--bandwidth-source sometimes|invalid value 'sometimes'
--stats 0|--stats
--monitor=-1|--monitor
--max-cells 1|--max-cells 1 is out of range
--max-cells 65|--max-cells 65 is out of range
--system-cell-min-cpus 0|--system-cell-min-cpus 0
--enable-borrowing|--enable-borrowing needs sessions: --cell-parent-cgroup
--partial|--partial needs sessions: --cell-parent-cgroup (a managed tree) or --registry-socket
--cell-exclude x|--cell-exclude needs --cell-parent-cgroup
--cell-parent-cgroup /abs|is not a path relative to the cgroup2 root
--cell-parent-cgroup ../x|is not a path relative to the cgroup2 root
--cell-parent-cgroup nosuch|nosuch does not exist
--policy /no/such.toml|/no/such.toml: cannot read the policy file
--policy /tmp/p1.toml|/tmp/p1.toml:2: unknown field `klass`
--policy /tmp/p2.toml|/tmp/p2.toml:2: profile "a": unknown class "fast"
--policy /tmp/p3.toml|/tmp/p3.toml:3: profile "a": weight = 0 is out of range
--policy /tmp/p4.toml|/tmp/p4.toml:4: profile "a": give either cpus_pct or cpus, not both
--policy /tmp/p5.toml|/tmp/p5.toml:3: selector names profile "nope", which is not defined
--policy /tmp/p6.toml|/tmp/p6.toml:9: selectors at lines 6 and 9 both match
--policy /tmp/p7.toml|/tmp/p7.toml:1:
--policy /tmp/p8.toml|/tmp/p8.toml:3: a selector needs exactly one of path, session or comm
--policy /tmp/p9.toml|selectors only apply to the steps of sessions (under --cell-parent-cgroup, or registered
--policy /tmp/p10.toml|profile web says cpu_mode = "cfs", which needs --partial
--policy /tmp/p11.toml|/tmp/p11.toml:3: profile "web": unknown cpu_mode "fair"
--no-such-flag|unexpected argument '--no-such-flag'
EOF

# a stale file where the stats socket goes is replaced
mkdir -p /var/run/scx/root && echo stale > /var/run/scx/root/stats
sched_start || failed "start over a stale stats file"
check "the stats socket replaced the stale file" wait_until 10 test -S /var/run/scx/root/stats
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
finish
