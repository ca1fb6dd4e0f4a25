#!/usr/bin/env bash
# Build the schedulers the benchmark compares against, into the cache:
#   scx_flatcg   from the booted kernel's own tools/sched_ext (Debian's
#                linux-source-<major.minor> from the kernel's suite)
#   scx_bpfland  the published crate, with cargo install
# Neither is committed. Prints "FLATCG=path" / "BPFLAND=path" lines for
# what could be built (empty when not, with the reason on stderr).
#
# Usage: tests/vm/bench/others.sh KVER VMLINUZ
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../../.." && pwd)
CACHE=${SCX_AGENTCG_CACHE:-$REPO/.cache}
KVER=$1 VMLINUZ=$2
say() { echo "others.sh: $*" >&2; }

# ---------------------------------------------------------------- flatcg --
flatcg() {
    local mm out dir src aptd
    mm=$(echo "$KVER" | cut -d. -f1,2)
    out=$CACHE/flatcg/$KVER/scx_flatcg
    if [ -x "$out" ]; then echo "$out"; return 0; fi
    dir=$CACHE/flatcg/$KVER
    mkdir -p "$dir"
    aptd=$CACHE/apt   # the private apt configuration kernel.sh set up
    if ! ls "$CACHE"/flatcg/linux-source-"$mm"_*.deb > /dev/null 2>&1; then
        say "downloading linux-source-$mm"
        (cd "$CACHE/flatcg" && apt-get -o "Dir::Etc::sourcelist=$aptd/sources.list" \
            -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$aptd/lists" \
            -o "Dir::Cache=$aptd/cache" -o "Acquire::Languages=none" \
            -o "APT::Sandbox::User=root" -qq download "linux-source-$mm") >&2 \
            || { say "cannot download linux-source-$mm"; return 1; }
    fi
    src=$dir/src
    if [ ! -f "$src/linux-source-$mm/kernel/bpf/disasm.h" ]; then
        say "extracting tools/ and headers from linux-source-$mm"
        rm -rf "$dir/deb" "$src" && mkdir -p "$dir/deb" "$src"
        dpkg-deb -x "$(ls "$CACHE"/flatcg/linux-source-"$mm"_*.deb | head -n1)" "$dir/deb" || return 1
        tar -xJf "$dir"/deb/usr/src/linux-source-"$mm".tar.xz -C "$src" \
            "linux-source-$mm/tools" "linux-source-$mm/include" "linux-source-$mm/arch/x86" \
            "linux-source-$mm/scripts" "linux-source-$mm/Makefile" "linux-source-$mm/kernel/sched" \
            "linux-source-$mm/kernel/bpf" \
            || { say "extracting the source failed"; return 1; }
        rm -rf "$dir/deb"
    fi
    # a vmlinux with BTF, from the compressed kernel image
    if [ ! -s "$dir/vmlinux" ]; then
        sh "$src/linux-source-$mm/scripts/extract-vmlinux" "$VMLINUZ" > "$dir/vmlinux" 2> /dev/null \
            || { say "cannot extract vmlinux from $VMLINUZ"; rm -f "$dir/vmlinux"; return 1; }
    fi
    say "building scx_flatcg (tools/sched_ext, LLVM=-19)"
    make -C "$src/linux-source-$mm/tools/sched_ext" scx_flatcg LLVM=-19 \
        VMLINUX_BTF="$dir/vmlinux" -j"$(nproc)" > "$dir/build.log" 2>&1 \
        || { say "building scx_flatcg failed (see $dir/build.log)"; return 1; }
    cp "$(find "$src/linux-source-$mm/tools/sched_ext/build" -name scx_flatcg -type f -perm -u+x | head -n1)" "$out" \
        || return 1
    echo "$out"
}

# --------------------------------------------------------------- bpfland --
bpfland() {
    local root=$CACHE/bpfland
    if [ -x "$root/bin/scx_bpfland" ]; then echo "$root/bin/scx_bpfland"; return 0; fi
    say "installing the scx_bpfland crate (cargo install)"
    BPF_CLANG=${BPF_CLANG:-clang-19} cargo install --quiet --locked --root "$root" scx_bpfland \
        > "$CACHE/bpfland.log" 2>&1 \
        || BPF_CLANG=${BPF_CLANG:-clang-19} cargo install --quiet --root "$root" scx_bpfland \
        >> "$CACHE/bpfland.log" 2>&1 \
        || { say "cargo install scx_bpfland failed (see $CACHE/bpfland.log)"; return 1; }
    echo "$root/bin/scx_bpfland"
}

echo "FLATCG=$(flatcg || true)"
echo "BPFLAND=$(bpfland || true)"
