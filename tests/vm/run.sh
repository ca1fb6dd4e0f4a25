#!/usr/bin/env bash
# Boot a scenario script in a throw-away qemu (TCG) VM with a busybox initramfs.
#
# Usage: tests/vm/run.sh [--smp N] [--mem SIZE] [--timeout SECS]
#                        [--append-args 'KERNEL ARGS'] [--with-modules]
#                        SCENARIO.sh [scenario args...]
#
#   --smp N          guest CPUs (default 4)
#   --mem SIZE       guest memory, qemu syntax (default 4G)
#   --timeout SECS   host-side limit for the whole VM run, boot included
#                    (default 300). The guest kills the scenario 30 s earlier
#                    (at least 10 s after boot) and still reports.
#   --append-args S  extra kernel command line
#   --with-modules   also ship zram/lz4hc modules (tests/vm/kernel.sh
#                    --with-modules) at /lib/agentcg/modules; load them in the
#                    guest with `load_modules` from lib.sh
#
# Env: VM_LOG=path        also write the console to this file
#      VM_EXTRA_FILES     "src:dst src:dst ..." extra files for the initramfs
#                         (shared libraries of ELF binaries are added too)
#      VM_QEMU_ARGS       extra qemu arguments (word-split)
#      VM_BOOT_STALL_S    boot time in s that counts as a stalled boot (20)
#      SCX_AGENTCG_*      kernel selection, see tests/vm/kernel.sh
#
# Exit status: the scenario's exit status (from the guest's
# "AGENTCG-VM-EXIT <rc>" marker); 124 on host timeout; 125 if the marker
# never appeared (boot failure, panic, crash); 2 on bad usage.
#
# A guest that is still running at the host limit did not even get its own
# time limit to work, so its kernel is likely stuck. It is then sent an NMI
# through the qemu monitor: the kernel panics on it (unknown_nmi_panic) and
# prints every task's state, every CPU's backtrace and all its buffered
# messages (panic_print) to the console log before qemu is killed.
#
# A boot that stalls is retried. Rarely (once in a fresh-clone run on
# 2026-12-02, stats scenario) a TCG vCPU stops answering early in boot: the
# kernel reported an RCU stall, booted in 25.4 s instead of ~5 s, and
# sched_ext then aborted the scenario's scheduler ("RCU CPU stall on CPUs
# (0)"). The guest's init checks for that before it runs the scenario (an
# RCU stall in the kernel log, or a boot slower than BOOT_STALL_S); if it
# finds it, it prints "AGENTCG-VM-REBOOT <why>" and powers off, and the VM
# is booted again, up to BOOT_ATTEMPTS boots. The last boot runs the
# scenario whatever happened. A kernel that oopses or panics before init
# reports (seen once on 2026-12-02: an int3 Oops in __hrtimer_start_range_ns
# 2.8 s into boot, then a guest hung until the host limit), or an init that
# has not reported within BOOT_WAIT_S (not on the last boot), also counts
# as a stalled boot: run.sh ends that boot through the qemu monitor.
#
# A guest that dies of an int3 Oops after init, without reporting its exit
# status, is booted again the same way and runs its scenario again: that
# Oops is qemu's TCG running stale code while the kernel patches its text
# (static keys flip when sched_ext attaches and detaches), not something a
# scenario can cause (BPF programs cannot write kernel text). Seen once in
# a run of tests/run-all.sh on 2026-12-02: "Oops: int3" at sched_tick+0xd6,
# 4.5 s after the hardening scenario started scx_agentcg, then a panic.
# run.sh says so on stderr each time. Any other Oops or panic after init
# fails the scenario.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOCK=/tmp/agentcg-vm.lock
GUEST_MARGIN=30   # seconds the guest limit stays below the host limit
NMI_GRACE=30      # seconds a stuck guest gets to print its panic report
BOOT_ATTEMPTS=3   # boots per run when the guest reports a stalled boot
# a boot slower than this counts as stalled (normal: ~5 s); VM_BOOT_STALL_S=0
# makes every boot count, which tests/run-all.sh uses to test the retry
BOOT_STALL_S=${VM_BOOT_STALL_S:-20}
BOOT_WAIT_S=120   # no word from init by then: the boot is stuck

smp=4 mem=4G timeout=300 append="" with_modules=0
# Help text: the header comment block.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "run.sh: error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --smp) [ $# -ge 2 ] || die "--smp needs a value"; smp=$2; shift 2 ;;
        --mem) [ $# -ge 2 ] || die "--mem needs a value"; mem=$2; shift 2 ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout=$2; shift 2 ;;
        --append-args) [ $# -ge 2 ] || die "--append-args needs a value"; append="$append $2"; shift 2 ;;
        --with-modules) with_modules=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { usage >&2; exit 2; }
scenario=$1; shift
[ -f "$scenario" ] || die "scenario $scenario not found"
case $smp in ''|*[!0-9]*) die "--smp: not a number: $smp" ;; esac
case $timeout in ''|*[!0-9]*) die "--timeout: not a number: $timeout" ;; esac
[ "$smp" -ge 1 ] || die "--smp must be >= 1"

for t in qemu-system-x86_64 busybox cpio flock timeout ldd; do
    command -v "$t" >/dev/null || die "$t not found; run tests/vm/deps.sh"
done

# --- Kernel ----------------------------------------------------------------
kargs=()
[ $with_modules = 1 ] && kargs=(--with-modules)
kout=$("$HERE/kernel.sh" "${kargs[@]}") || die "kernel.sh failed"
KVER="" VMLINUZ="" KCONFIG="" MODDIR=""
eval "$kout"
[ -f "$VMLINUZ" ] && [ -f "$KCONFIG" ] || die "kernel.sh gave no usable kernel"

# --- Initramfs ---------------------------------------------------------------
work=$(mktemp -d /tmp/agentcg-vm.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,run,root,boot,lib/agentcg}

# Copy a file to the same or a given path inside the initramfs, following
# symlinks, plus the shared libraries (and loader) an ELF binary needs.
add_file() {
    local src=$1 dst=${2:-$1}
    mkdir -p "$root$(dirname "$dst")"
    cp -L "$src" "$root$dst"
}
add_libs() {
    local bin=$1 lib
    # ldd prints "name => /path (addr)" or "/path/ld-linux.so (addr)";
    # static binaries make it fail, which is fine.
    for lib in $(ldd "$bin" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\//{print $1}'); do
        [ -e "$root$lib" ] || add_file "$lib"
    done
}

# busybox and its applet links (never overwrite a real file).
add_file "$(command -v busybox)" /bin/busybox
for a in $(busybox --list-full); do
    [ -e "$root/$a" ] || [ -L "$root/$a" ] || ln -s /bin/busybox "$root/$a"
done

# Project binaries, if built.
for b in scx_agentcg agentcg-load agentcg-replay; do
    if [ -x "$REPO/target/release/$b" ]; then
        add_file "$REPO/target/release/$b" "/usr/bin/$b"
        add_libs "$REPO/target/release/$b"
    else
        echo "run.sh: note: target/release/$b not built; not in the VM" >&2
    fi
done

# bash, as the scx systemd service starts schedulers through it
if [ -x /bin/bash ]; then
    rm -f "$root/bin/bash"   # never write through a busybox applet link
    add_file /bin/bash /bin/bash
    add_libs /bin/bash
fi
# the service example, for the service scenario
mkdir -p "$root/lib/agentcg/services"
cp "$REPO/services/"* "$root/lib/agentcg/services/"

# libbpf reads /boot/config-$(uname -r): without it BPF loads fail (EINVAL).
cp "$KCONFIG" "$root/boot/config-$KVER"
# Guest helpers: every file of tests/vm/guest/ (lib.sh, ...) in /lib/agentcg/.
cp -r "$HERE/guest/." "$root/lib/agentcg/"
cp "$scenario" "$root/scenario.sh"

if [ -n "$MODDIR" ]; then
    mkdir -p "$root/lib/agentcg/modules"
    cp "$MODDIR"/*.ko "$MODDIR/load-order" "$root/lib/agentcg/modules/"
fi

# Extra programs (with their shared libraries) in /usr/bin: VM_EXTRA_BINS="path..."
for b in ${VM_EXTRA_BINS:-}; do
    [ -x "$b" ] || die "VM_EXTRA_BINS: $b is not an executable"
    add_file "$b" "/usr/bin/$(basename "$b")"
    add_libs "$b"
done

for pair in ${VM_EXTRA_FILES:-}; do
    src=${pair%%:*} dst=${pair#*:}
    [ "$src" != "$pair" ] && [ -n "$dst" ] || die "VM_EXTRA_FILES: expected src:dst, got '$pair'"
    [ -e "$src" ] || die "VM_EXTRA_FILES: $src not found"
    case $dst in /*) ;; *) die "VM_EXTRA_FILES: destination must be absolute: $dst" ;; esac
    if [ -d "$src" ]; then
        mkdir -p "$root$dst" && cp -rL "$src/." "$root$dst/"
    else
        add_file "$src" "$dst"
        add_libs "$src"
    fi
done

# Loader cache so libraries are found wherever ldd said they live.
printf '%s\n' /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib > "$root/etc/ld.so.conf"
ldconfig -r "$root" 2>/dev/null || true

# The kernel opens /dev/console for init before devtmpfs is mounted.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null \
    || echo "run.sh: note: cannot mknod /dev/console (not root?); early init output may be lost" >&2
mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || true

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo "agentcg-vm" > "$root/etc/hostname"

# Scenario arguments, as a sourceable `set -- 'a' 'b'` line.
{
    printf 'set --'
    for a in "$@"; do printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"; done
    printf '\n'
} > "$root/etc/agentcg-args"

guest_limit=$(( timeout - GUEST_MARGIN ))
[ "$guest_limit" -ge 10 ] || guest_limit=10
cat > "$root/etc/agentcg-vm.env" <<EOF
AGENTCG_GUEST_TIMEOUT=$guest_limit
AGENTCG_SMP=$smp
AGENTCG_KVER=$KVER
AGENTCG_BOOT_STALL_S=$BOOT_STALL_S
EOF

cat > "$root/init" <<'EOF'
#!/bin/sh
# PID 1 of the test VM: set up the system, run /scenario.sh under a time
# limit, print "AGENTCG-VM-EXIT <rc>", power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "init: cannot mount cgroup2"
for c in cpu cpuset memory; do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || echo "init: cannot enable $c controller"
done
hostname -F /etc/hostname
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
ulimit -l unlimited 2>/dev/null
. /etc/agentcg-vm.env
export AGENTCG_SMP AGENTCG_KVER AGENTCG_GUEST_TIMEOUT

# A stalled boot (see run.sh's header) is booted again unless this is the
# last attempt (agentcg.last_boot on the kernel command line).
boot_s=$(cut -d' ' -f1 /proc/uptime)
stall=""
dmesg | grep -qE 'rcu: INFO: .*stall' && stall="RCU stall during boot"
[ -z "$stall" ] && [ "${boot_s%%.*}" -ge "$AGENTCG_BOOT_STALL_S" ] && stall="boot took ${boot_s}s"
if [ -n "$stall" ] && ! grep -qw agentcg.last_boot /proc/cmdline; then
    dmesg | grep -E -A3 'rcu: INFO: .*stall' | head -n 20
    echo "AGENTCG-VM-REBOOT $stall"
    poweroff -f
fi
[ -n "$stall" ] && echo "init: $stall; last boot attempt, running the scenario anyway"

rc=125
if [ -f /scenario.sh ]; then
    echo "init: $(uname -r), $(nproc) cpus, boot took ${boot_s}s; running scenario (limit ${AGENTCG_GUEST_TIMEOUT}s)"
    (
        . /etc/agentcg-args
        cd /tmp && exec sh /scenario.sh "$@"
    ) &
    spid=$!
    # Watchdog: TERM then KILL the scenario when the guest limit is hit.
    (
        sleep "$AGENTCG_GUEST_TIMEOUT"
        echo "init: guest time limit (${AGENTCG_GUEST_TIMEOUT}s) hit; killing scenario"
        touch /tmp/.agentcg-timeout
        kill -TERM "$spid" 2>/dev/null
        sleep 5
        kill -KILL "$spid" 2>/dev/null
    ) &
    wpid=$!
    wait "$spid"
    rc=$?
    kill "$wpid" 2>/dev/null
    [ -e /tmp/.agentcg-timeout ] && rc=124
else
    echo "init: no /scenario.sh"
fi
echo
echo "AGENTCG-VM-EXIT $rc"
sync
poweroff -f
EOF
chmod +x "$root/init" "$root/scenario.sh"

# Uncompressed newc cpio: the kernel unpacks it fastest.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) > "$work/initramfs.cpio" \
    || die "cannot build the initramfs"

# --- Boot ------------------------------------------------------------------------
# tsc=reliable: keep the clocksource watchdog from dropping the TSC when the
# emulated CPUs are slow to answer (TCG); mitigations=off: speed.
# unknown_nmi_panic, panic_print=0x61 (tasks, all messages, all CPUs'
# backtraces): the report of a guest stuck at the host limit (see above).
cmdline="console=ttyS0 quiet loglevel=3 panic=-1 tsc=reliable mitigations=off unknown_nmi_panic panic_print=0x61 $append"
echo "run.sh: $(basename "$scenario") kernel=$KVER smp=$smp mem=$mem timeout=${timeout}s initramfs=$(( $(stat -c %s "$work/initramfs.cpio") / 1024 / 1024 ))MiB" >&2

# One VM at a time on this machine (fd 9 holds the lock while qemu runs);
# the timeout starts once we hold it.
# stdin is /dev/null so qemu never puts a terminal into raw mode.
exec 9>>"$LOCK"
if ! flock -n 9; then
    echo "run.sh: waiting for another VM to finish ($LOCK)" >&2
    flock 9
fi
[ -n "${VM_LOG:-}" ] && : > "$VM_LOG"
# monitor_cmd SOCKET COMMAND: send one command to a qemu monitor
monitor_cmd() {
    python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
time.sleep(0.5)
s.sendall(sys.argv[2].encode() + b"\n")
time.sleep(1)' "$1" "$2" 2>/dev/null
}
# what a kernel Oops or panic prints on the console
PANIC_RE='Kernel panic|Oops: '
# what a stray int3 prints (see the header)
INT3_RE='Oops: int3: '
# init's report that the scenario starts. Not anchored: the console can
# join it to the firmware's last line ("Booting from ROM..init: ...").
INIT_RE='init: .*, [0-9]+ cpus, boot took '
for attempt in $(seq 1 "$BOOT_ATTEMPTS"); do
# a monitor socket per boot: a late "quit" from one boot's watch must not
# reach the next boot's qemu
mon=$work/monitor.$attempt.sock
boot_cmdline=$cmdline
[ "$attempt" -lt "$BOOT_ATTEMPTS" ] || boot_cmdline="$cmdline agentcg.last_boot"
log=$work/console.$attempt.log
rm -f "$work/nmi-sent"
vm_start=$SECONDS
# At the host limit: NMI to a guest that is still running (see the header).
(
    sleep "$timeout" &
    sleep_pid=$!
    trap 'kill "$sleep_pid" 2>/dev/null; exit 0' TERM
    wait "$sleep_pid"
    [ -S "$mon" ] || exit 0
    echo "run.sh: host timeout (${timeout}s) hit; sending the guest an NMI for its panic report" >&2
    touch "$work/nmi-sent"
    monitor_cmd "$mon" nmi || echo "run.sh: could not reach the qemu monitor" >&2
) &
nmi_pid=$!
# Boot watch (see the header): until init reports, an Oops or a panic, or
# BOOT_WAIT_S without a word from init, ends this boot. It only ends the
# boot (and notes a timeout); the check after qemu says why, since qemu may
# also end on the panic by itself before the watch looks.
rm -f "$work/boot-timeout"
(
    t=0
    while sleep 1; do
        t=$((t + 1))
        grep -aqE "$INIT_RE|AGENTCG-VM-REBOOT" "$log" 2>/dev/null && exit 0
        if grep -aqE "$PANIC_RE" "$log" 2>/dev/null; then
            :
        elif [ "$attempt" -lt "$BOOT_ATTEMPTS" ] && [ "$t" -ge "$BOOT_WAIT_S" ]; then
            touch "$work/boot-timeout"
        else
            continue
        fi
        monitor_cmd "$mon" quit
        exit 0
    done
) &
watch_pid=$!
set +e
# The console is copied through a filter that drops terminal escape
# sequences (the firmware sends a terminal reset).
# shellcheck disable=SC2086
timeout -k 10 "$((timeout + NMI_GRACE))" \
    qemu-system-x86_64 -accel tcg -cpu max -smp "$smp" -m "$mem" \
        -nographic -no-reboot -serial mon:stdio -nic none \
        -monitor "unix:$mon,server=on,wait=off" \
        -kernel "$VMLINUZ" -initrd "$work/initramfs.cpio" -append "$boot_cmdline" \
        ${VM_QEMU_ARGS:-} </dev/null 2>&1 \
    | sed -u -E 's/\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])//g' \
    | tee "$log" ${VM_LOG:+-a "$VM_LOG"}
qrc=${PIPESTATUS[0]}
kill "$nmi_pid" "$watch_pid" 2>/dev/null
wait "$nmi_pid" "$watch_pid" 2>/dev/null
echo "run.sh: VM ran for $((SECONDS - vm_start))s" >&2
set -e
why=$(tr -d '\r' < "$log" | grep -a -o 'AGENTCG-VM-REBOOT .*' | tail -n1 | cut -d' ' -f2- || true)
# no word from init: the watch ended the boot, or the kernel's panic did
if [ -z "$why" ] && ! grep -aqE "$INIT_RE" "$log"; then
    if grep -aqE "$PANIC_RE" "$log"; then why="kernel Oops or panic before init"
    elif [ -f "$work/boot-timeout" ]; then why="no word from init after ${BOOT_WAIT_S}s"
    fi
fi
# after init: a guest that died of a stray int3 without an exit status
if [ -z "$why" ] && ! grep -aq 'AGENTCG-VM-EXIT [0-9]' "$log" && grep -aqE "$INT3_RE" "$log"; then
    why="the guest died of an int3 Oops, qemu's stale-code fault during text patching"
fi
[ -n "$why" ] || break
[ "$attempt" -lt "$BOOT_ATTEMPTS" ] || break
echo "run.sh: boot $attempt of $BOOT_ATTEMPTS stalled ($why); booting again" >&2
done
exec 9>&-

marker=$(tr -d '\r' < "$log" | grep -a -o 'AGENTCG-VM-EXIT [0-9]*' | tail -n1 | awk '{print $2}' || true)
if [ -n "$marker" ]; then
    exit "$marker"
fi
if [ -e "$work/nmi-sent" ] || [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    echo "run.sh: host timeout (${timeout}s) hit; qemu ended (rc=$qrc); the guest's panic report, if any, is at the end of the console log" >&2
    exit 124
fi
echo "run.sh: the guest never reported AGENTCG-VM-EXIT (qemu rc=$qrc)" >&2
exit 125
