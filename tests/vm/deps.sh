#!/usr/bin/env bash
# Install the host packages the VM test rig needs. Idempotent and quiet when
# everything is already present; runs `apt-get update` once, only if needed.
#
# qemu must be 8.0 or newer: with qemu 7.2's multi-threaded TCG, vCPUs now
# and then execute stale code while the guest kernel patches its text (static
# keys flip when a sched_ext scheduler attaches or detaches), and the guest
# oopses on a stray int3. On Debian 12 the newer qemu comes from the
# distribution's backports suite, reached through a private apt source list
# that reuses the mirror already configured on this host.
set -euo pipefail

PKGS="busybox-static cpio clang-19 llvm-19 libelf-dev zlib1g-dev libzstd-dev pkg-config xz-utils meson ninja-build fonts-dejavu-core"
QEMU_MIN_MAJOR=8
# tests/bench.sh also needs: rt-tests (hackbench, cyclictest), lld-19 (to
# build scx_flatcg from the kernel's tools/sched_ext), stress-ng
[ "${1:-}" = --bench ] && PKGS="$PKGS rt-tests lld-19 stress-ng"

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }

qemu_major() {
    qemu-system-x86_64 --version 2>/dev/null | awk 'NR == 1 { split($4, v, "."); print v[1] + 0 }'
}

missing=""
for p in $PKGS; do
    installed "$p" || missing="$missing $p"
done
need_qemu=0
if ! command -v qemu-system-x86_64 > /dev/null || [ "$(qemu_major)" -lt $QEMU_MIN_MAJOR ]; then
    need_qemu=1
fi
[ -z "$missing" ] && [ $need_qemu = 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "deps.sh: missing packages:$missing$([ $need_qemu = 1 ] && echo " qemu-system-x86>=$QEMU_MIN_MAJOR") (need root to install them)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ -n "$missing" ]; then
    echo "deps.sh: installing:$missing" >&2
    apt-get update -qq >&2
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >&2
fi
[ $need_qemu = 1 ] || exit 0

# qemu: the release's own package if new enough, else its backports suite.
apt-get update -qq >&2 || true
cand=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
cand_major=$(echo "$cand" | sed -E 's/^[0-9]+://; s/[^0-9].*//')
if [ -n "$cand_major" ] && [ "$cand_major" -ge $QEMU_MIN_MAJOR ]; then
    echo "deps.sh: installing qemu-system-x86 $cand" >&2
    apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2
    exit 0
fi
. /etc/os-release
codename=${VERSION_CODENAME:?cannot tell the Debian release from /etc/os-release}
uri=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
fi
[ -n "$uri" ] || { echo "deps.sh: no Debian mirror configured in /etc/apt; install qemu-system-x86 >= $QEMU_MIN_MAJOR yourself" >&2; exit 1; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
mkdir -p "$d/lists/partial"
echo "deb $uri ${codename}-backports main" > "$d/backports.list"
# the host's own sources stay visible (sourceparts) for qemu's dependencies
opts=(-o "Dir::Etc::sourcelist=$d/backports.list" -o "Dir::State::Lists=$d/lists" -o Acquire::Languages=none)
echo "deps.sh: installing qemu-system-x86 from ${codename}-backports" >&2
apt-get "${opts[@]}" update -qq >&2
apt-get "${opts[@]}" install -y -qq --no-install-recommends -t "${codename}-backports" qemu-system-x86 >&2
[ "$(qemu_major)" -ge $QEMU_MIN_MAJOR ] || { echo "deps.sh: qemu is still older than $QEMU_MIN_MAJOR" >&2; exit 1; }
