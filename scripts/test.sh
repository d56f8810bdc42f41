#!/usr/bin/env bash
# Runs the whole test suite, as root: unit tests, then end-to-end tests that create their own
# network namespaces. Installs with apt-get whatever the tests need and the machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: run as root: the tests create network namespaces, veths and rules" >&2
    exit 1
fi

# command-or-file -> Debian package that provides it
declare -A needs=(
    [ip]=iproute2
    [nsenter]=util-linux
    [iptables-restore]=iptables
    [nft]=nftables
    [etcd]=etcd-server
    [iperf3]=iperf3
    [/usr/lib/cni/host-local]=containernetworking-plugins
    [python3]=python3
    # Real runtimes driving the plugins (tests/tests/runtime_*.rs). busybox-static is checked
    # through dpkg: the dynamic busybox has the same /bin/busybox and cannot run in a root
    # without libc (the test container roots are built from it).
    [podman]=podman
    [ctr]=containerd
    [runc]=runc
    [/var/lib/dpkg/info/busybox-static.list]=busybox-static
)
missing=()
for what in "${!needs[@]}"; do
    if [[ $what == /* ]]; then [ -e "$what" ] && continue
    else command -v "$what" >/dev/null 2>&1 && continue; fi
    missing+=("${needs[$what]}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The end-to-end tests exec the plugin binaries, so build them first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast --config-file tests/nextest.toml "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
