#!/usr/bin/env bash
# Runs every test of scx_agentcg on a Debian machine with or without
# sched_ext: installs the host packages it needs, runs the unit tests, builds
# the release binaries, fetches the sched_ext kernel and runs every VM
# integration scenario in tests/vm/scenarios/.
#
# Usage: tests/run-all.sh [SCENARIO...]
set -euo pipefail
cd "$(dirname "$0")/.."

tests/vm/deps.sh
export BPF_CLANG=${BPF_CLANG:-clang-19}

echo "== unit tests"
cargo test --release --workspace

echo "== release build"
cargo build --release --workspace

echo "== packaging: meson-include and cargo install"
rm -rf target/meson target/meson-destdir target/cargo-install
meson setup target/meson --prefix /usr
meson compile -C target/meson
meson install -C target/meson --destdir "$PWD/target/meson-destdir"
test -x target/meson-destdir/usr/bin/scx_agentcg
test -f target/meson-destdir/usr/share/doc/scx_agentcg/scx_agentcg.default
# --locked: the versions of Cargo.lock, which the builds above compiled
# already. Without it cargo install resolves the newest compatible crates and
# compiles every dependency again (about 3.5 minutes of a fresh-clone run).
cargo install --quiet --locked --path . --root target/cargo-install --target-dir target
target/cargo-install/bin/scx_agentcg --version | grep -q "$(git rev-parse --short=7 HEAD 2>/dev/null || echo .)" \
    || { echo "scx_agentcg --version does not show the build id"; exit 1; }
echo "meson-include and cargo install: ok"

echo "== VM harness: a stalled boot is booted again"
# init's report is found even when the console joins it to the firmware's
# last line (seen in a CI run: each such boot was cut at BOOT_WAIT_S)
init_re=$(sed -n "s/^INIT_RE='\(.*\)'$/\1/p" tests/vm/run.sh)
[ -n "$init_re" ] && grep -qE "$init_re" <<< "Booting from ROM..init: 7.3.4+deb13-amd64, 4 cpus, boot took 5.08s; running scenario (limit 390s)" \
    || { echo "run.sh's INIT_RE ('$init_re') misses init's report after the firmware's line"; exit 1; }
# VM_BOOT_STALL_S=0: every boot counts as stalled, so run.sh boots three
# times and the guest script checks that it runs on the last boot only.
retry_log=$(VM_BOOT_STALL_S=0 tests/vm/run.sh --smp 1 --mem 1G --timeout 120 tests/vm/harness/last-boot.sh 2>&1) \
    || { echo "$retry_log"; echo "run.sh's boot retry failed"; exit 1; }
[ "$(grep -c 'stalled (boot took' <<< "$retry_log")" = 2 ] \
    || { echo "$retry_log"; echo "run.sh did not boot exactly three times"; exit 1; }
echo "boot retry: ok"
# A kernel that panics before init: every boot ends at the panic, so
# run.sh boots three times and then fails with 125 (no exit marker).
panic_log=$(tests/vm/run.sh --smp 1 --mem 1G --timeout 120 --append-args rdinit=/nonexistent \
    tests/vm/harness/last-boot.sh 2>&1) && { echo "$panic_log"; echo "a boot without init passed"; exit 1; }
[ "$(grep -c 'stalled (kernel Oops or panic before init); booting again' <<< "$panic_log")" = 2 ] \
    || { echo "$panic_log"; echo "run.sh did not boot three times after a panic before init"; exit 1; }
echo "boot retry after a panic before init: ok"
# A guest that dies of a stray int3 Oops after init (qemu's stale-code
# fault, run.sh's header) runs its scenario again on a new boot; any other
# Oops after init fails the run at once.
int3_log=$(tests/vm/run.sh --smp 1 --mem 1G --timeout 120 tests/vm/harness/int3-oops.sh 2>&1) \
    || { echo "$int3_log"; echo "run.sh did not run the scenario again after an int3 Oops"; exit 1; }
[ "$(grep -c 'died of an int3 Oops.*booting again' <<< "$int3_log")" = 2 ] \
    || { echo "$int3_log"; echo "run.sh did not boot three times after int3 Oopses"; exit 1; }
gpf_log=$(tests/vm/run.sh --smp 1 --mem 1G --timeout 120 --append-args agentcg.test_oops=gpf \
    tests/vm/harness/int3-oops.sh 2>&1) && { echo "$gpf_log"; echo "a guest that died of a general protection fault passed"; exit 1; }
! grep -q 'booting again' <<< "$gpf_log" \
    || { echo "$gpf_log"; echo "run.sh booted again after an Oops that is not an int3"; exit 1; }
echo "boot retry after an int3 Oops, and none after another Oops: ok"
echo "== VM integration tests"
tests/run-vm-tests.sh "$@"
