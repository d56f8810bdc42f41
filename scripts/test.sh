#!/usr/bin/env bash
# Runs the whole test suite, as root: unit tests, then end-to-end tests that create their own
# network namespaces. Installs with apt-get whatever the tests need and the machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: run as root: the tests create network namespaces, veths and rules" >&2
    exit 1
fi

scripts/test-deps.sh

# The end-to-end tests exec the plugin binaries, so build them first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast --config-file tests/nextest.toml "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
