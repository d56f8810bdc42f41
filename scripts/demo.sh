#!/usr/bin/env bash
# The main job, by hand: build the suite, then drive it through the cnitool-compatible
# runner on a real network namespace, the way a container runtime does for every pod.
#
# Today the suite ships the loopback plugin; the demo wires a pod's `lo`, shows traffic on it,
# runs CHECK and DEL, and leaves nothing behind. It grows with the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/demo.sh: run as root: it creates a network namespace" >&2
    exit 1
fi
if ! command -v ip >/dev/null || ! command -v ping >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 iputils-ping >/dev/null
fi

cargo build --release --workspace --bins
bin=$PWD/target/release

work=$(mktemp -d /tmp/cni-demo.XXXXXX)
pod="demo-pod-$$"
cleanup() {
    ip netns del "$pod" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/net.d"
cat >"$work/net.d/10-demo.conflist" <<JSON
{
  "cniVersion": "1.1.0",
  "name": "demo",
  "plugins": [ { "type": "loopback" } ]
}
JSON

export NETCONFPATH=$work/net.d CNI_PATH=$bin CNI_CACHE_DIR=$work/cache
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

ip netns add "$pod"
step "a new pod network namespace: lo is down"
ip -n "$pod" -br link show lo

step "cnitool add demo /run/netns/$pod"
time "$bin/cnitool" add demo "/run/netns/$pod"

step "lo is up, and the pod talks to itself"
ip -n "$pod" -br addr show lo
ip netns exec "$pod" ping -c 2 -W 1 127.0.0.1

step "CHECK"
"$bin/cnitool" check demo "/run/netns/$pod" && echo "check passed"

step "DEL, twice (DEL is idempotent)"
"$bin/cnitool" del demo "/run/netns/$pod"
"$bin/cnitool" del demo "/run/netns/$pod"
ip -n "$pod" -br link show lo

step "DEL after the pod's namespace is gone"
"$bin/cnitool" add demo "/run/netns/$pod" >/dev/null
ip netns del "$pod"
"$bin/cnitool" del demo "/run/netns/$pod" && echo "del succeeded"
echo
echo "demo finished: nothing left behind"
