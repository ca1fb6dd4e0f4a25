#!/usr/bin/env bash
# Run VM scenarios, each in its own VM (tests/vm/run.sh).
#
# Usage: tests/run-vm-tests.sh [SCENARIO...]
#   SCENARIO: a name ("smoke"), a file name ("smoke.sh") or a path. Default:
#   every tests/vm/scenarios/*.sh.
#
# A scenario may set its VM options in a header comment line (within the
# first 10 lines), passed to run.sh as given:
#   # vm: --smp 4 --mem 4G --timeout 300
# Scenario arguments may follow run.sh's options after "--":
#   # vm: --smp 2 -- 3
#
# Console logs go to ${VM_LOG_DIR:-target/vm-logs}/NAME.log.
# The last line is "N passed, M failed"; the exit status is nonzero if any
# scenario failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SCEN_DIR=$HERE/vm/scenarios
LOG_DIR=${VM_LOG_DIR:-$REPO/target/vm-logs}
mkdir -p "$LOG_DIR"

"$HERE/vm/deps.sh" || { echo "run-vm-tests: host dependencies missing" >&2; exit 1; }

scenarios=()
if [ $# -eq 0 ]; then
    for f in "$SCEN_DIR"/*.sh; do [ -f "$f" ] && scenarios+=("$f"); done
else
    for s in "$@"; do
        if [ -f "$s" ]; then scenarios+=("$s")
        elif [ -f "$SCEN_DIR/$s" ]; then scenarios+=("$SCEN_DIR/$s")
        elif [ -f "$SCEN_DIR/$s.sh" ]; then scenarios+=("$SCEN_DIR/$s.sh")
        else echo "run-vm-tests: no such scenario: $s" >&2; exit 2
        fi
    done
fi
[ ${#scenarios[@]} -gt 0 ] || { echo "run-vm-tests: no scenarios found" >&2; exit 2; }

# Header options of a scenario file ("# vm: ..."), word-split.
header_opts() { head -n 10 "$1" | sed -n 's/^#[[:space:]]*vm:[[:space:]]*//p' | head -n1; }
# Debian binaries a scenario needs in the VM, one header line each:
#   # vm-deb: SUITE PACKAGE /PATH/OF/BINARY...  (tests/vm/debpkg.sh)
# printed as the cached paths, for VM_EXTRA_BINS.
header_debs() {
    local line
    head -n 10 "$1" | sed -n 's/^#[[:space:]]*vm-deb:[[:space:]]*//p' | while read -r line; do
        # shellcheck disable=SC2086
        "$HERE/vm/debpkg.sh" $line || return 1
    done
}

passed=0 failed=0 summary=()
for f in "${scenarios[@]}"; do
    name=$(basename "$f" .sh)
    # shellcheck disable=SC2206
    opts=($(header_opts "$f"))
    run_opts=() scen_args=() seen_sep=0
    for o in "${opts[@]}"; do
        if [ $seen_sep = 0 ] && [ "$o" = "--" ]; then seen_sep=1; continue; fi
        if [ $seen_sep = 1 ]; then scen_args+=("$o"); else run_opts+=("$o"); fi
    done
    echo "=== $name (${opts[*]:-defaults})"
    start=$(date +%s)
    if bins=$(header_debs "$f"); then
        VM_EXTRA_BINS="${VM_EXTRA_BINS:-} $(echo $bins)" VM_LOG="$LOG_DIR/$name.log" \
            "$HERE/vm/run.sh" "${run_opts[@]}" "$f" "${scen_args[@]}"
        rc=$?
    else
        echo "run-vm-tests: $name: cannot fetch the Debian packages its vm-deb header names" >&2
        rc=1
    fi
    secs=$(( $(date +%s) - start ))
    if [ $rc = 0 ]; then
        passed=$((passed + 1)); line="PASS: $name (${secs}s)"
    else
        case $rc in
            124) why="timeout" ;;
            125) why="no exit marker: boot failure or crash" ;;
            *) why="rc=$rc" ;;
        esac
        failed=$((failed + 1)); line="FAIL: $name (${secs}s, $why; log $LOG_DIR/$name.log)"
        # the failing checks and the log lines just before each, so that a
        # CI report that shows only the end of the output still names them
        fails=$(grep -a -B3 '^FAIL: ' "$LOG_DIR/$name.log" 2>/dev/null | tail -n 40)
        # a guest stuck at the host limit panics on run.sh's NMI: what its
        # report says about stalls, blocked tasks and sched_ext
        [ $rc != 124 ] || fails="${fails:+$fails$'\n'}$(grep -a -E 'Kernel panic|BUG:|rcu: INFO|stall|blocked for more|state:D |sched_ext: ' \
            "$LOG_DIR/$name.log" 2>/dev/null | awk '!seen[$0]++' | head -n 30)"
        [ -z "$fails" ] || line="$line"$'\n'"$(sed 's/^/    /' <<< "$fails")"
    fi
    echo "=== $line"
    summary+=("$line")
done

echo
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ $failed = 0 ]
