#!/usr/bin/env bash
# The long soak, as root: SOAK_CYCLES (default 500) ADD/DEL cycles of calico + calico-ipam +
# portmap + bandwidth with kill -9 injected into a third of them, and a leak check after every
# cycle (tests/tests/soak_chain.rs). Prints the seed first and a summary at the end; a
# failure names the seed and the cycle. Replay a run with SOAK_SEED=<seed>.
#
#   scripts/soak.sh             # the debug binaries, as the test suite runs them
#   scripts/soak.sh --release   # the release binaries, as a node runs them
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/soak.sh: run as root: the soak creates network namespaces, veths and rules" >&2
    exit 1
fi

profile=debug
case "${1:-}" in
    "") ;;
    --release) profile=release ;;
    *)
        echo "usage: scripts/soak.sh [--release]" >&2
        exit 2
        ;;
esac

export SOAK_CYCLES="${SOAK_CYCLES:-500}"
test_name=soak_chain_survives_kill_9_and_leaks_nothing

# The test execs the plugin binaries: build them first (and the test itself, so that the
# wall time below is the soak's).
cargo build --workspace --bins
if [ "$profile" = release ]; then
    scripts/build.sh
    export CNI_TEST_BIN_DIR="$PWD/target/release"
fi
cargo test -p cni-tests --test soak_chain --no-run

echo "soak: $SOAK_CYCLES cycles, $profile plugins${SOAK_SEED:+, seed $SOAK_SEED}"
start=$SECONDS
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p cni-tests --config-file tests/nextest.toml --no-capture \
        -E "test(=$test_name)"
else
    cargo test -p cni-tests --test soak_chain -- --exact "$test_name" --nocapture
fi
echo "soak: passed in $((SECONDS - start)) s"
