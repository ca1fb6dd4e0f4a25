# vm: --smp 4 --mem 2G --timeout 300
# vm-deb: bookworm prometheus /usr/bin/promtool
# Prometheus endpoint (--metrics-addr): bad addresses and a taken port are
# refused before anything attaches; a scrape is valid text format
# (promtool check metrics) with per-session rows labelled by session,
# profile and class; its numbers are the stats' numbers (cell CPUs, layout
# applies, a session's CPU seconds against its cgroup's cpu.stat);
# OpenMetrics on request; 404 elsewhere; nothing listens without the flag
# or after the scheduler stops.
. /lib/agentcg/lib.sh
. /lib/agentcg/measure.sh

ip link set lo up || fail "loopback up"
ADDR=127.0.0.1:9464
URL=http://$ADDR/metrics
# (busybox 1.35's wget crashes with -T: timeout bounds it instead)
scrape() { timeout 10 wget -q -O "$1" ${2:+--header "$2"} "$URL"; }
# metric FILE LINE-PREFIX: the value of the first sample line that starts so
metric() { grep -F "$2" "$1" | grep -v '^#' | head -n1 | awk '{ print $NF }'; }
# refused: nothing listens on ADDR (wget says so; a crash or an HTTP error is not that)
refused() { timeout 10 wget -q -O /dev/null "$URL" 2>&1 | grep -q "Connection refused"; }
# status PATH: the HTTP status line the server answers for PATH
status() { timeout 10 wget -S -O /dev/null "http://$ADDR$1" 2>&1 | sed -n 's/^ *\(HTTP\/[0-9.]* [0-9]*\).*/\1/p' | head -n1; }
cells_up() { stats_json /tmp/s0.json && grep -q '"chat":{"borrowed_pct"' /tmp/s0.json; }

# --- bad input, refused before attaching --------------------------------------
out=$(scx_agentcg --metrics-addr localhost 2>&1); rc=$?
log "bad address: rc=$rc: $out"
check "a bad --metrics-addr is refused" test $rc -ne 0
check "the error says what to give" says "$out" 'IP:PORT'
nc -l -p 9464 > /dev/null 2>&1 & ncpid=$!
sleep 0.5
out=$(timeout 20 scx_agentcg --metrics-addr $ADDR 2>&1); rc=$?
kill $ncpid 2> /dev/null; wait $ncpid 2> /dev/null
log "port taken: rc=$rc: $(echo "$out" | tail -n 2)"
check "a taken port is refused" test $rc -ne 0
check "the error names the address and what to do" says "$out" 'cannot listen there'
check_eq "sched_ext stayed off" disabled "$(sched_state)"

# --- a scheduler without the flag serves nothing ------------------------------
sched_start || fail "scheduler (no --metrics-addr) did not start"
check "nothing listens without --metrics-addr" refused
sched_stop INT > /dev/null

# --- scrapes ------------------------------------------------------------------
P=agentcg
cg_parent $P > /dev/null || fail "managed parent"
for s in chat build; do cg_new "$P/$s" > /dev/null || fail "session $s"; done
chat_bg_policy /tmp/m.toml chat:session=chat bg:session=build
sched_start --cell-parent-cgroup $P --policy /tmp/m.toml --mem-arbitration --metrics-addr $ADDR \
    || fail "scheduler did not start"
check "the scheduler logs where it serves" wait_until 10 grep -q "serving Prometheus metrics on http://$ADDR/metrics" "$SCHED_LOG"
agentcg-load spin --cgroup $P/chat --threads 1 --duration 30 > /dev/null &
agentcg-load spin --cgroup $P/build --threads 2 --duration 30 > /dev/null &
check "the sessions have cells" wait_until 10 cells_up
sleep 2

u0=$(cg_usage_us $P/chat)
scrape /tmp/m1 || failed "first scrape"
stats_json /tmp/s1.json || failed "stats after the first scrape"
sleep 4
u1=$(cg_usage_us $P/chat)
scrape /tmp/m2 || failed "second scrape"
log "scrape: $(wc -l < /tmp/m2) lines; $(grep -c '^scx_agentcg_session' /tmp/m2) session rows"
grep '^scx_agentcg_session\|^scx_agentcg_cell' /tmp/m2 | head -n 20

promtool check metrics < /tmp/m2 > /tmp/lint 2>&1; rc=$?
cat /tmp/lint
check_eq "promtool check metrics accepts the scrape" 0 "$rc"
check "promtool found nothing to lint" sh -c "[ -f /tmp/lint ] && [ ! -s /tmp/lint ]"
check "the body is the 0.0.4 text format (no EOF marker)" ! grep -q '^# EOF' /tmp/m2

L='{session="agentcg/chat",profile="chat",class="interactive"}'
B='{session="agentcg/build",profile="bg",class="background"}'
check "the interactive session is labelled with its profile and class" grep -qF "scx_agentcg_session_active$L 1" /tmp/m2
check "the background session is labelled with its profile and class" grep -qF "scx_agentcg_session_active$B 1" /tmp/m2
check "arbitration actions are counted" grep -q '^scx_agentcg_mem_arbitration_actions_total{action="hold"} ' /tmp/m2

# the same numbers as the stats
for c in chat build system; do
    check_eq "cell $c: CPUs as in the stats" "$(cell_field /tmp/s1.json $c cpus)" \
        "$(metric /tmp/m1 "scx_agentcg_cell_cpus{cell=\"$c\"}")"
done
# a counter read by the stats between two scrapes lies between their values
n=$(sed -n 's/.*"cell_applies":\([0-9]*\).*/\1/p' /tmp/s1.json)
log "layouts applied: scrape $(metric /tmp/m1 scx_agentcg_cell_applies_total), stats $n, scrape $(metric /tmp/m2 scx_agentcg_cell_applies_total)"
check "layouts applied as in the stats" fle "$(metric /tmp/m1 scx_agentcg_cell_applies_total)" "$n"
check "layouts applied as in the stats (next scrape)" fge "$(metric /tmp/m2 scx_agentcg_cell_applies_total)" "$n"
check_eq "CPUs as in the stats" 4 "$(metric /tmp/m1 scx_agentcg_cpus)"
a=$(metric /tmp/m1 "scx_agentcg_session_cpu_seconds_total$L")
b=$(metric /tmp/m2 "scx_agentcg_session_cpu_seconds_total$L")
d=$(calc "($b - $a) * 1000000")
log "chat: metric CPU ${a}s -> ${b}s (+$(calc "$d / 1000000")s), cpu.stat +$(calc "($u1 - $u0) / 1000000")s"
check "the session's CPU seconds grew with its spinner" fge "$d" 2000000
check "the session's CPU seconds match its cpu.stat within 15 %" within "$d" "$((u1 - u0))" 15

scrape /tmp/om "Accept: application/openmetrics-text; version=1.0.0" || failed "OpenMetrics scrape"
check_eq "OpenMetrics on request: ends with # EOF" "# EOF" "$(tail -n 1 /tmp/om)"
check "OpenMetrics has the same session rows" grep -qF "scx_agentcg_session_active$L 1" /tmp/om
check_eq "another path is not found" "HTTP/1.1 404" "$(status /other)"

drain_loads
sched_stop INT
check_eq "exit status" 0 "$SCHED_RC"
check "nothing listens after the scheduler stopped" refused
check "no sched_ext errors in dmesg" ! dmesg_sched_errors
finish
