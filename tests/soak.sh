#!/usr/bin/env bash
# Long soak (10 minutes in the VM, not part of tests/run-all.sh): every
# feature on under churning load. SOAK_SECS changes the duration.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/vm/deps.sh
export BPF_CLANG=${BPF_CLANG:-clang-19}
cargo build --release --workspace --quiet
secs=${SOAK_SECS:-600}
sed "s/^SOAK=.*/SOAK=$secs/" tests/vm/soak/soak.sh > target/soak-scenario.sh
exec tests/vm/run.sh --smp 4 --mem 2G --timeout $((secs + 300)) target/soak-scenario.sh
