#!/usr/bin/env bash
# Fetch (or reuse from cache) a sched_ext-capable kernel for the test VM.
#
# Usage: tests/vm/kernel.sh [--with-modules]
#
# Prints shell-sourceable lines on stdout:
#   KVER=...  VMLINUZ=...  KCONFIG=...  [MODDIR=...]
# Progress and warnings go to stderr.
#
# Source of the kernel: Debian's trixie-backports `linux-image-amd64`, resolved
# at run time through a private apt configuration (the host's apt state is not
# touched). The mirror URI is taken from the host's own apt configuration.
#
# Cache: ${SCX_AGENTCG_CACHE:-<repo>/.cache}/kernel/$KVER/{vmlinuz,config}
#        and, with --with-modules, .../kernel/$KVER/modules/{*.ko,load-order}
# If apt cannot be reached, the newest cached kernel is used (with a warning).
#
# Overrides:
#   SCX_AGENTCG_KERNEL=/path/to/bzImage   use this kernel instead
#   SCX_AGENTCG_KCONFIG=/path/to/config   its config (required with the above)
#   SCX_AGENTCG_KVER=release              its `uname -r`; if unset it is read
#                                         from the bzImage header (the version
#                                         string the boot protocol points at)
#   SCX_AGENTCG_MODDIR=dir                modules dir for --with-modules
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${SCX_AGENTCG_CACHE:-$REPO/.cache}
SUITE=trixie-backports
# Modules wanted for memory-pressure tests (their dependencies are added).
WANT_MODULES="zram lz4hc_compress"

with_modules=0
for a in "$@"; do
    case $a in
        --with-modules) with_modules=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "kernel.sh: unknown argument: $a" >&2; exit 2 ;;
    esac
done

say() { echo "kernel.sh: $*" >&2; }
die() { echo "kernel.sh: error: $*" >&2; exit 1; }

# Read the kernel release from a bzImage: the 16-bit value at offset 0x20e is
# the offset (minus 0x200) of a NUL-terminated version string, whose first word
# is the release ("7.3.4+deb13-amd64 (debian-kernel@...) #1 SMP ...").
bzimage_release() {
    local img=$1 off
    off=$(od -An -tu2 -j $((0x20e)) -N2 "$img" | tr -d ' ')
    [ -n "$off" ] && [ "$off" -gt 0 ] || return 1
    dd if="$img" bs=1 skip=$((off + 0x200)) count=200 2>/dev/null | tr '\0' '\n' | head -n1 | awk '{print $1}'
}

# --- Explicit override ------------------------------------------------------
if [ -n "${SCX_AGENTCG_KERNEL:-}" ]; then
    [ -f "$SCX_AGENTCG_KERNEL" ] || die "SCX_AGENTCG_KERNEL=$SCX_AGENTCG_KERNEL does not exist"
    [ -n "${SCX_AGENTCG_KCONFIG:-}" ] && [ -f "$SCX_AGENTCG_KCONFIG" ] \
        || die "SCX_AGENTCG_KERNEL needs SCX_AGENTCG_KCONFIG=/path/to/kernel/config"
    kver=${SCX_AGENTCG_KVER:-$(bzimage_release "$SCX_AGENTCG_KERNEL" || true)}
    [ -n "$kver" ] || die "cannot read the release from $SCX_AGENTCG_KERNEL; set SCX_AGENTCG_KVER"
    echo "KVER=$kver"
    echo "VMLINUZ=$(realpath "$SCX_AGENTCG_KERNEL")"
    echo "KCONFIG=$(realpath "$SCX_AGENTCG_KCONFIG")"
    if [ $with_modules = 1 ]; then
        [ -n "${SCX_AGENTCG_MODDIR:-}" ] || die "--with-modules with SCX_AGENTCG_KERNEL needs SCX_AGENTCG_MODDIR"
        echo "MODDIR=$(realpath "$SCX_AGENTCG_MODDIR")"
    fi
    exit 0
fi

# --- Private apt configuration ----------------------------------------------
. "$REPO/tests/vm/apt.sh"
apt_private "$SUITE" "$CACHE/apt"

# Newest cached kernel (by version sort), for offline use.
newest_cached() {
    local d best=""
    for d in "$CACHE"/kernel/*/; do
        [ -f "$d/vmlinuz" ] && [ -f "$d/config" ] && best="$best$(basename "$d")"$'\n'
    done
    printf '%s' "$best" | sort -V | tail -n1
}

kver=""
if uri=$(mirror_uri); then
    echo "deb $uri $SUITE main" > "$APTD/sources.list"
    say "updating private apt lists ($SUITE)"
    if apt-get "${APT_OPTS[@]}" -qq update >"$APTD/update.log" 2>&1; then
        # Highest available version of the meta package, then the versioned
        # image package it depends on: linux-image-<KVER> (= ...).
        ver=$(apt-cache "${APT_OPTS[@]}" madison linux-image-amd64 | awk -F'|' '{gsub(/ /,"",$2); print $2}' \
              | sort -V | tail -n1)
        if [ -n "$ver" ]; then
            kver=$(apt-cache "${APT_OPTS[@]}" show "linux-image-amd64=$ver" \
                   | awk '/^Depends:/{print; exit}' | tr ',' '\n' \
                   | sed -n 's/^ *linux-image-\([0-9][^ ]*\) .*/\1/p' | head -n1)
        fi
        [ -n "$kver" ] || say "warning: could not resolve the kernel version from linux-image-amd64"
    else
        say "warning: apt update failed (see $APTD/update.log)"
    fi
else
    say "warning: no apt mirror URI found in /etc/apt"
fi

if [ -z "$kver" ]; then
    kver=$(newest_cached)
    [ -n "$kver" ] || die "no kernel available: apt unreachable and nothing cached under $CACHE/kernel"
    say "warning: using cached kernel $kver"
fi

KDIR=$CACHE/kernel/$kver
mkdir -p "$KDIR"

# Download packages into a temp dir and extract them; sets $tmp.
tmp=""
cleanup() { [ -n "$tmp" ] && rm -rf "$tmp"; return 0; }
trap cleanup EXIT
fetch_pkgs() {
    [ -n "$tmp" ] || tmp=$(mktemp -d)
    mkdir -p "$tmp/deb" "$tmp/root"
    say "downloading $*"
    (cd "$tmp/deb" && apt-get "${APT_OPTS[@]}" -qq download "$@" >&2) || return 1
    local f
    for f in "$tmp"/deb/*.deb; do dpkg-deb -x "$f" "$tmp/root"; done
    rm -f "$tmp"/deb/*.deb
}

if [ ! -f "$KDIR/vmlinuz" ] || [ ! -f "$KDIR/config" ]; then
    if ! fetch_pkgs "linux-binary-$kver" "linux-base-$kver"; then
        old=$(newest_cached)
        [ -n "$old" ] || die "cannot download kernel $kver and nothing cached under $CACHE/kernel"
        say "warning: cannot download kernel $kver; using cached kernel $old"
        rmdir "$KDIR" 2>/dev/null || true
        kver=$old
        KDIR=$CACHE/kernel/$kver
    fi
fi
if [ ! -f "$KDIR/vmlinuz" ] || [ ! -f "$KDIR/config" ]; then
    vm=$(find "$tmp/root" -name vmlinuz -path "*$kver*" | head -n1)
    [ -n "$vm" ] || vm=$(find "$tmp/root" -name "vmlinuz-$kver" | head -n1)
    cf=$(find "$tmp/root" \( -name "config-$kver" -o -path "*/modules/$kver/config" \) | head -n1)
    [ -n "$vm" ] || die "vmlinuz not found in linux-binary-$kver"
    [ -n "$cf" ] || die "kernel config not found in linux-base-$kver"
    grep -q '^CONFIG_SCHED_CLASS_EXT=y' "$cf" || say "warning: $kver has no CONFIG_SCHED_CLASS_EXT=y"
    cp "$cf" "$KDIR/config.tmp" && mv "$KDIR/config.tmp" "$KDIR/config"
    cp "$vm" "$KDIR/vmlinuz.tmp" && mv "$KDIR/vmlinuz.tmp" "$KDIR/vmlinuz"
    rm -rf "$tmp/root"
    say "cached $kver in $KDIR"
fi

echo "KVER=$kver"
echo "VMLINUZ=$KDIR/vmlinuz"
echo "KCONFIG=$KDIR/config"

[ $with_modules = 1 ] || exit 0

# --- Optional modules (zram + lz4hc and their dependencies) ------------------
MODDIR=$KDIR/modules
if [ ! -f "$MODDIR/load-order" ]; then
    fetch_pkgs "linux-modules-$kver" || die "cannot download linux-modules-$kver"
    mroot=$(find "$tmp/root" -type d -path "*/modules/$kver" | head -n1)
    [ -n "$mroot" ] || die "module tree for $kver not found in linux-modules-$kver"
    rm -rf "$MODDIR.tmp" && mkdir -p "$MODDIR.tmp"
    # Depth-first: dependencies are appended to load-order before the module.
    add_mod() {
        local name=$1 f dep deps
        grep -qx "$name" "$MODDIR.tmp/load-order" 2>/dev/null && return 0
        f=$(find "$mroot" \( -name "$name.ko" -o -name "$name.ko.*" \) | head -n1)
        if [ -z "$f" ]; then
            f=$(find "$mroot" \( -name "${name//_/-}.ko" -o -name "${name//_/-}.ko.*" \) | head -n1)
        fi
        [ -n "$f" ] || die "module $name not found (built in?)"
        case $f in
            *.xz)  xz -dc "$f" > "$MODDIR.tmp/$name.ko" ;;
            *.zst) zstd -dqc "$f" > "$MODDIR.tmp/$name.ko" ;;
            *.gz)  gzip -dc "$f" > "$MODDIR.tmp/$name.ko" ;;
            *)     cp "$f" "$MODDIR.tmp/$name.ko" ;;
        esac
        # The .modinfo section holds NUL-separated key=value strings.
        deps=$(tr '\0' '\n' < "$MODDIR.tmp/$name.ko" | sed -n 's/^depends=//p' | head -n1)
        for dep in ${deps//,/ }; do add_mod "${dep//-/_}"; done
        echo "$name" >> "$MODDIR.tmp/load-order"
    }
    for m in $WANT_MODULES; do add_mod "$m"; done
    rm -rf "$MODDIR" && mv "$MODDIR.tmp" "$MODDIR"
    say "modules cached in $MODDIR: $(tr '\n' ' ' < "$MODDIR/load-order")"
fi
echo "MODDIR=$MODDIR"
