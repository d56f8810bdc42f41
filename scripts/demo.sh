#!/usr/bin/env bash
# The main job, by hand: build the suite, install it into a temporary CNI_PATH, and wire two
# pods on a node through the single-node conflist (calico + calico-ipam on the embedded
# datastore) with the cnitool-compatible runner, as a container runtime does for every pod.
# Then prove the pods talk to each other and to the node, tear everything down, and show
# that nothing is left.
#
# The "node" is a network namespace of its own (with an uplink and a default route, as a real
# node has), so the demo never changes this machine's own network.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/demo.sh: run as root: it creates network namespaces" >&2
    exit 1
fi
if ! command -v ip >/dev/null || ! command -v ping >/dev/null || ! command -v nsenter >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends iproute2 iputils-ping util-linux >/dev/null
fi

scripts/build.sh

work=$(mktemp -d /tmp/cni-demo.XXXXXX)
tag=$$
node="demo-node-$tag" pod_a="demo-pod-a-$tag" pod_b="demo-pod-b-$tag"
cleanup() {
    for ns in "$pod_a" "$pod_b" "$node"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_node() { ip netns exec "$node" "$@"; }

step "install the plugins into a temporary CNI_PATH and render the single-node conflist"
mkdir -p "$work/bin" "$work/net.d"
for plugin in calico calico-ipam loopback cnitool; do
    install -m 0755 "target/release/$plugin" "$work/bin/$plugin"
done
sed -e "s|__KUBERNETES_NODE_NAME__|demo-node|" -e "s|__CNI_MTU__|1450|" \
    -e "s|/var/lib/calico/local-datastore|$work/datastore|" \
    -e "s|/var/run/calico/ipam.lock|$work/ipam.lock|" \
    -e "s|\"log_level\": \"info\",|\"log_level\": \"info\", \"log_file_path\": \"$work/cni.log\",|" \
    conflists/10-calico-single-node.conflist >"$work/net.d/10-calico.conflist"
# Runtimes bring up the pod's lo with the loopback plugin, as a network of its own.
printf '{"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}\n' \
    >"$work/net.d/99-loopback.conflist"
ls "$work/bin"
cat "$work/net.d/10-calico.conflist"

step "a node: its own network namespace with an uplink and default routes, forwarding on"
ip netns add "$node"
ip -n "$node" link set lo up
ip -n "$node" link add uplink0 type veth peer name uplink1
ip -n "$node" link set uplink0 up
ip -n "$node" link set uplink1 up
ip -n "$node" addr add 192.0.2.10/32 dev uplink0
ip -n "$node" addr add 2001:db8:ffff::10/128 dev uplink0
ip -n "$node" route add default dev uplink0
ip -n "$node" -6 route add default dev uplink0
in_node sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

export NETCONFPATH=$work/net.d CNI_PATH=$work/bin CNI_CACHE_DIR=$work/cache
for pod in "$pod_a" "$pod_b"; do
    ip netns add "$pod"
    step "cnitool add single-node /run/netns/$pod   (calico + calico-ipam, then loopback for lo)"
    CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$pod" in_node "$work/bin/cnitool" add single-node "/run/netns/$pod"
    in_node "$work/bin/cnitool" add lo "/run/netns/$pod" >/dev/null
done

addr_of() { ip -n "$1" -o -"$2" addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1; }
a4=$(addr_of "$pod_a" 4) a6=$(addr_of "$pod_a" 6) b4=$(addr_of "$pod_b" 4) b6=$(addr_of "$pod_b" 6)

step "pod A: addresses and routes"
ip -n "$pod_a" -br addr show dev eth0
ip -n "$pod_a" route
ip -n "$pod_a" -6 route show default
step "node: one veth and one host route per pod address"
ip -n "$node" -br link show type veth | grep cali
ip -n "$node" route | grep cali
ip -n "$node" -6 route | grep cali

step "pod A -> pod B ($b4, $b6)"
ip netns exec "$pod_a" ping -c 2 -W 1 "$b4"
ip netns exec "$pod_a" ping -c 2 -W 1 "$b6"
step "node -> pod A ($a4, $a6)"
in_node ping -c 2 -W 1 "$a4"
in_node ping -c 2 -W 1 "$a6"

step "the node's IPAM state (calico-ipam show): one block per family, affine to this node"
"$work/bin/calico-ipam" --config "$work/net.d/10-calico.conflist" show

step "calico-ipam check: every allocation has its workload (the pods' WorkloadEndpoints)"
"$work/bin/calico-ipam" --config "$work/net.d/10-calico.conflist" check --cache-dir "$work/cache"

step "CHECK both pods"
for pod in "$pod_a" "$pod_b"; do
    CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$pod" in_node "$work/bin/cnitool" check single-node "/run/netns/$pod"
done
echo "check passed"

step "tear down: DEL both pods (twice: DEL is idempotent)"
for pod in "$pod_a" "$pod_b"; do
    for _ in 1 2; do
        CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$pod" in_node "$work/bin/cnitool" del single-node "/run/netns/$pod"
    done
    in_node "$work/bin/cnitool" del lo "/run/netns/$pod"
done

step "nothing left"
leftover=$( (ip -n "$node" -br link show | grep cali; ip -n "$node" route | grep cali; \
             ip -n "$node" -6 route | grep cali; \
             ls "$work/datastore/calico/ipam/v2/handle" 2>/dev/null) || true)
if [ -n "$leftover" ]; then
    echo "left behind:"; echo "$leftover"; exit 1
fi
"$work/bin/calico-ipam" --config "$work/net.d/10-calico.conflist" show
echo "no veth, no host route, no IPAM handle left; the node keeps its (empty) blocks, as Calico does"
echo "pod A's interfaces now: $(ip -n "$pod_a" -br link | awk '{print $1, $2}' | xargs)"

step "the plugins' log ($work/cni.log), as an operator reads /var/log/calico/cni/cni.log"
cat "$work/cni.log"
echo
echo "demo finished"
