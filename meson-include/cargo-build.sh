#!/bin/sh
# cargo-build.sh CARGO SOURCE_ROOT OUTPUT: build the release binary with
# cargo (in the source tree's target directory, so an earlier cargo build is
# reused) and copy it to meson's OUTPUT.
set -eu
cargo=$1 src=$2 out=$3
"$cargo" build --release --manifest-path "$src/Cargo.toml" -p scx_agentcg
cp "$src/target/release/scx_agentcg" "$out"
