#!/usr/bin/env bash
# Installs with apt-get what the tests need and the machine lacks (as root). Run by
# scripts/test.sh, and by .ci/run before the lints (clippy builds the tests, and the CRI
# client among them needs protoc).
set -euo pipefail

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
    # The CRI client of tests/tests/runtime_cri.rs is generated from the CRI's protobuf
    # definitions at build time.
    [protoc]=protobuf-compiler
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

