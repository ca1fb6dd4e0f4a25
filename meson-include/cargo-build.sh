#!/bin/sh
# cargo-build.sh CARGO SOURCE_ROOT OUTPUT: build the release binary with
# cargo (in the source tree's target directory, so an earlier cargo build is
# reused) and copy it to meson's OUTPUT.
set -eu
cargo=$1 src=$2 out=$3
# the BPF side needs clang >= 18; Debian ships it as clang-19
if [ -z "${BPF_CLANG:-}" ]; then
    if command -v clang > /dev/null; then BPF_CLANG=clang; else BPF_CLANG=clang-19; fi
fi
export BPF_CLANG
"$cargo" build --release --manifest-path "$src/Cargo.toml" -p scx_agentcg
cp "$src/target/release/scx_agentcg" "$out"
