#!/usr/bin/env bash
# Benchmarks our plugins side by side with Debian's reference binaries (/usr/lib/cni) in the
# same run, with hyperfine, and writes a markdown table to target/bench/results.md.
#
#   scripts/bench.sh             every benchmark
#   scripts/bench.sh version     the VERSION probe of loopback
#   scripts/bench.sh loopback    loopback ADD and DEL on a real namespace
#   scripts/bench.sh host-local  host-local ADD and DEL, dual stack
#   scripts/bench.sh calico      calico + host-local against ptp + host-local, ADD and DEL
#   scripts/bench.sh portmap     portmap ADD and DEL of one container with 2 mappings, dual
#                                stack: ours on iptables and on nftables, the reference on iptables
#   scripts/bench.sh calico-ipam calico-ipam ADD and DEL on the local store, on etcd and on
#                                the Kubernetes datastore (the tests' fake API server, plain
#                                HTTP), one raw etcd transaction round trip for scale, and
#                                the API requests one ADD and one DEL make
#   scripts/bench.sh portmap-scale  the same ADD and DEL with 0 and with 1,000 other pods'
#                                mappings on the node (also part of `portmap`)
#   scripts/bench.sh bandwidth   bandwidth ADD and DEL (TBF both ways, IFB) on a veth pair
#   scripts/bench.sh chain       the whole chain through cnitool, calico + calico-ipam + portmap
#                                + bandwidth against ptp + host-local + portmap + bandwidth:
#                                ADD and DEL of one pod, a churn of CHURN_PODS (200) pods
#                                CHURN_JOBS (8) at a time, each plugin's time inside the chain,
#                                peak RSS, binary sizes (also in target/bench/chain.md)
#
# Every command runs without a shell (hyperfine -N, stdin from --input), so the figures are
# the plugin's own cost: process start, its work, and any plugin it executes. ADD is timed
# after an untimed DEL of the same container, DEL after an untimed ADD.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/bench.sh: run as root: it creates network namespaces" >&2
    exit 1
fi
if [ ! -x /usr/lib/cni/ptp ] || ! command -v ip >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends containernetworking-plugins iproute2 >/dev/null
fi
# Debian's hyperfine (1.15) cannot feed stdin without a shell; 1.20 can (--input).
hf=$PWD/target/tools/bin/hyperfine
if [ ! -x "$hf" ]; then
    cargo install hyperfine@1.20.0 --locked --root "$PWD/target/tools"
fi

scripts/build.sh
ours=$PWD/target/release
ref=/usr/lib/cni
out=$PWD/target/bench
mkdir -p "$out"
rm -f "$out"/*.json "$out/round-trips.txt" "$out/chain.md"
what=${1:-all}
runs=${RUNS:-300}
tag=$$

namespaces=() scratch=()
new_netns() { ip netns add "$1"; namespaces+=("$1"); }
cleanup() {
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "${scratch[@]}"
}
trap cleanup EXIT

# measure TABLE LABEL INPUT PREPARE [VAR=VALUE...] COMMAND...
# Runs COMMAND with stdin from INPUT and the given CNI_* variables, after PREPARE (a shell
# line, untimed) before each run.
measure() {
    local table=$1 label=$2 input=$3 prepare=$4
    shift 4
    local -a vars=()
    while [[ $1 == *=* ]]; do vars+=("$1"); shift; done
    local -a opts=(-N --warmup 20 --runs "$runs" --input "$input" -n "$label"
                   --export-json "$out/$table--${label// /_}.json")
    if [ -n "$prepare" ]; then opts+=(--prepare "sh -c '${prepare//\'/}'"); fi
    env "${vars[@]}" "$hf" "${opts[@]}" "$*" >/dev/null
}

# portmap_node NAME: a node namespace with a route to the pod subnets (as a host veth gives
# it), in which portmap forwards ports.
portmap_node() {
    new_netns "$1"
    ip -n "$1" link set lo up
    ip -n "$1" link add pm0 type veth peer name pm1
    ip -n "$1" link set pm0 up
    ip -n "$1" link set pm1 up
    ip -n "$1" route add 10.252.0.0/24 dev pm0
    ip -n "$1" -6 route add fd00:252::/64 dev pm0
}
# portmap_conf BACKEND TCP-PORT UDP-PORT V4-HOST V6-HOST: a direct portmap config.
portmap_conf() {
    printf '{"cniVersion":"1.0.0","name":"bench","type":"portmap","backend":"%s","runtimeConfig":{"portMappings":[{"hostPort":%d,"containerPort":80,"protocol":"tcp"},{"hostPort":%d,"containerPort":53,"protocol":"udp"}]},"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/pod"}],"ips":[{"address":"10.252.0.%d/24","interface":0},{"address":"fd00:252::%x/64","interface":0}]}}' "$@"
}
# cni COMMAND CONTAINER NETNS IFNAME BIN-DIR: the variables of one invocation.
cni() { echo "CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=$3 CNI_IFNAME=$4 CNI_PATH=$5"; }
# again COMMAND ... BINARY INPUT: the same invocation as an untimed shell line.
again() { echo "$(cni "$1" "$2" "$3" "$4" "$5") $6 <$7 >/dev/null"; }

if [ "$what" = all ] || [ "$what" = version ]; then
    : >"$out/empty"
    for side in ours ref; do
        dir=${!side}
        measure version "$side loopback VERSION" "$out/empty" "" CNI_COMMAND=VERSION "$dir/loopback"
    done
fi

if [ "$what" = all ] || [ "$what" = loopback ]; then
    new_netns "bench-lo-$tag"
    printf '{"cniVersion":"1.0.0","name":"bench","type":"loopback"}' >"$out/loopback.json"
    for side in ours ref; do
        dir=${!side}
        vars=(bench "/run/netns/bench-lo-$tag" lo "$dir")
        measure loopback-add "$side loopback ADD" "$out/loopback.json" "" \
            $(cni ADD "${vars[@]}") "$dir/loopback"
        measure loopback-del "$side loopback DEL" "$out/loopback.json" "" \
            $(cni DEL "${vars[@]}") "$dir/loopback"
    done
fi

if [ "$what" = all ] || [ "$what" = host-local ]; then
    for side in ours ref; do
        dir=${!side} data="$out/hl-$side"
        rm -rf "$data"
        printf '{"cniVersion":"1.0.0","name":"bench","ipam":{"type":"host-local","ranges":[[{"subnet":"10.250.0.0/16"}],[{"subnet":"fd00:250::/64"}]],"dataDir":"%s"}}' \
            "$data" >"$data.json"
        vars=(bench /run/netns/none eth0 "$dir")
        measure host-local-add "$side host-local ADD" "$data.json" \
            "$(again DEL "${vars[@]}" "$dir/host-local" "$data.json")" \
            $(cni ADD "${vars[@]}") "$dir/host-local"
        measure host-local-del "$side host-local DEL" "$data.json" \
            "$(again DEL "${vars[@]}" "$dir/host-local" "$data.json"); $(again ADD "${vars[@]}" "$dir/host-local" "$data.json")" \
            $(cni DEL "${vars[@]}") "$dir/host-local"
    done
fi

if [ "$what" = all ] || [ "$what" = calico ]; then
    # A node namespace (an uplink and a default route, as a node has) in which both chains
    # run, one pod namespace each. Ours: calico + host-local; reference: ptp + host-local.
    node="bench-node-$tag"
    new_netns "$node"
    ip -n "$node" link set lo up
    ip -n "$node" link add up0 type veth peer name up1
    ip -n "$node" link set up0 up
    ip -n "$node" link set up1 up
    ip -n "$node" route add default dev up0
    for side in ours ref; do
        dir=${!side} data="$out/chain-$side" pod="bench-pod-$side-$tag"
        new_netns "$pod"
        rm -rf "$data"
        if [ "$side" = ours ]; then plugin=calico; else plugin=ptp; fi
        printf '{"cniVersion":"1.0.0","name":"bench-%s","type":"%s","nodename":"bench","nodename_file_optional":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.251.0.0/16"}]],"dataDir":"%s"}}' \
            "$plugin" "$plugin" "$data" >"$data.json"
        vars=(bench "/run/netns/$pod" eth0 "$dir")
        label="$side $plugin + host-local"
        ip netns exec "$node" bash -c "$(declare -f measure cni again); hf=$hf runs=$runs out=$out
            measure chain-add '$label ADD' '$data.json' '$(again DEL "${vars[@]}" "$dir/$plugin" "$data.json")' \
                $(cni ADD "${vars[@]}") '$dir/$plugin'
            measure chain-del '$label DEL' '$data.json' \
                '$(again DEL "${vars[@]}" "$dir/$plugin" "$data.json"); $(again ADD "${vars[@]}" "$dir/$plugin" "$data.json")' \
                $(cni DEL "${vars[@]}") '$dir/$plugin'"
    done
fi

if [ "$what" = all ] || [ "$what" = portmap ]; then
    # A node namespace with a route to the pod (as a host veth gives it), in which each
    # implementation forwards 2 host ports (TCP and UDP) of one dual-stack container. The
    # reference's DEL only acts when the mappings are passed, so they are, for everyone.
    node="bench-pm-$tag"
    portmap_node "$node"
    for variant in "ours iptables" "ours nftables" "ref iptables"; do
        read -r side backend <<<"$variant"
        dir=${!side} conf="$out/portmap-$side-$backend.json"
        portmap_conf "$backend" 8080 5353 5 5 >"$conf"
        vars=(bench-pm "/run/netns/$node" eth0 "$dir")
        label="$side portmap ($backend)"
        ip netns exec "$node" bash -c "$(declare -f measure cni again); hf=$hf runs=$runs out=$out
            measure portmap-add '$label ADD' '$conf' '$(again DEL "${vars[@]}" "$dir/portmap" "$conf")' \
                $(cni ADD "${vars[@]}") '$dir/portmap'
            measure portmap-del '$label DEL' '$conf' \
                '$(again DEL "${vars[@]}" "$dir/portmap" "$conf"); $(again ADD "${vars[@]}" "$dir/portmap" "$conf")' \
                $(cni DEL "${vars[@]}") '$dir/portmap'"
    done
fi

if [ "$what" = all ] || [ "$what" = portmap ] || [ "$what" = portmap-scale ]; then
    # Scale: one pod's ADD and DEL (2 mappings, dual stack) in a node namespace of its own
    # per variant, first with no other pod, then with 1,000 other pods' mappings (2 each,
    # both families) in the same backend, written by our portmap (the reference's iptables
    # rules and ours are the same text).
    pods=${SCALE_PODS:-1000}
    for variant in "ours iptables" "ours nftables" "ref iptables"; do
        read -r side backend <<<"$variant"
        dir=${!side} conf="$out/portmap-scale-$side-$backend.json"
        portmap_conf "$backend" 8080 5353 5 5 >"$conf"
        node="bench-pms-$side-$backend-$tag"
        portmap_node "$node"
        vars=(bench-pm "/run/netns/$node" eth0 "$dir")
        for size in 0 "$pods"; do
            for i in $(seq 1 "$size"); do
                portmap_conf "$backend" $((20000 + i)) $((40000 + i)) $((i % 240 + 10)) $((i + 16)) \
                    | ip netns exec "$node" env CNI_COMMAND=ADD "CNI_CONTAINERID=other-$i" \
                        "CNI_NETNS=/run/netns/$node" CNI_IFNAME=eth0 "CNI_PATH=$ours" "$ours/portmap" >/dev/null
            done
            label="$side portmap ($backend, $size other pods)"
            ip netns exec "$node" bash -c "$(declare -f measure cni again); hf=$hf runs=${SCALE_RUNS:-100} out=$out
                measure portmap-scale-add '$label ADD' '$conf' '$(again DEL "${vars[@]}" "$dir/portmap" "$conf")' \
                    $(cni ADD "${vars[@]}") '$dir/portmap'
                measure portmap-scale-del '$label DEL' '$conf' \
                    '$(again DEL "${vars[@]}" "$dir/portmap" "$conf"); $(again ADD "${vars[@]}" "$dir/portmap" "$conf")' \
                    $(cni DEL "${vars[@]}") '$dir/portmap'"
        done
    done
fi

if [ "$what" = all ] || [ "$what" = bandwidth ]; then
    # A node namespace with one veth pair per side to a pod namespace; the plugin shapes both
    # directions (TBF on the host veth, IFB with its TBF). DEL removes only the IFB (the
    # veth's qdiscs go with the veth), so the untimed reset before each ADD also deletes the
    # veth's root and ingress qdiscs.
    node="bench-bw-node-$tag"
    new_netns "$node"
    ip -n "$node" link set lo up
    for side in ours ref; do
        dir=${!side} pod="bench-bw-pod-$side-$tag" veth="bwv-$side"
        new_netns "$pod"
        ip -n "$node" link add "$veth" type veth peer name eth0 netns "$pod"
        ip -n "$node" link set "$veth" up
        ip -n "$pod" link set eth0 up
        conf="$out/bandwidth-$side.json"
        printf '{"cniVersion":"1.0.0","name":"bench-bw","type":"bandwidth","ingressRate":10000000,"ingressBurst":1000000,"egressRate":10000000,"egressBurst":1000000,"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"%s"},{"name":"eth0","sandbox":"/run/netns/%s"}]}}' \
            "$veth" "$pod" >"$conf"
        vars=(bench "/run/netns/$pod" eth0 "$dir")
        reset="tc qdisc del dev $veth root 2>/dev/null; tc qdisc del dev $veth ingress 2>/dev/null; $(again DEL "${vars[@]}" "$dir/bandwidth" "$conf")"
        ip netns exec "$node" bash -c "$(declare -f measure cni again); hf=$hf runs=$runs out=$out
            measure bandwidth-add '$side bandwidth ADD' '$conf' '$reset' \
                $(cni ADD "${vars[@]}") '$dir/bandwidth'
            measure bandwidth-del '$side bandwidth DEL' '$conf' \
                '$reset; $(again ADD "${vars[@]}" "$dir/bandwidth" "$conf")' \
                $(cni DEL "${vars[@]}") '$dir/bandwidth'"
    done
fi

if [ "$what" = all ] || [ "$what" = calico-ipam ]; then
    # calico-ipam ADD and DEL on the embedded store and on a real etcd (Debian's, started here
    # on loopback ports), and, for scale, one raw etcd transaction round trip.
    command -v etcd >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq etcd-server >/dev/null; }
    port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    cport=$(port) pport=$(port)
    rm -rf "$out/etcd"
    etcd --name bench --data-dir "$out/etcd" \
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "bench=http://127.0.0.1:$pport" >"$out/etcd.log" 2>&1 &
    etcd_pid=$!
    trap 'cleanup; kill $etcd_pid 2>/dev/null' EXIT
    endpoint="http://127.0.0.1:$cport"
    python3 - "$endpoint" "$out/etcd-rtt.json" <<'PY'
import base64, http.client, json, statistics, sys, time, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
for _ in range(100):
    try:
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=2); c.request("POST", "/v3/maintenance/status", "{}"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.1)
b64 = lambda s: base64.b64encode(s.encode()).decode()
def post(path, body):
    c.request("POST", path, json.dumps(body)); r = c.getresponse(); return json.loads(r.read())
# The pools the benchmark allocates from, as Calico's v3 resources.
for name, cidr in [("bench-v4", "10.253.0.0/16")]:
    post("/v3/kv/put", {"key": b64(f"/calico/resources/v3/projectcalico.org/ippools/{name}"),
                        "value": b64(json.dumps({"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
                                                 "metadata": {"name": name}, "spec": {"cidr": cidr, "blockSize": 26}}))})
# The benchmark's node, as calico/node registers it (calico-ipam assigns only to a known node).
post("/v3/kv/put", {"key": b64("/calico/resources/v3/projectcalico.org/nodes/bench"),
                    "value": b64(json.dumps({"kind": "Node", "apiVersion": "projectcalico.org/v3",
                                             "metadata": {"name": "bench"}, "spec": {}}))})
key = b64("/bench/rtt")
rev = int(post("/v3/kv/put", {"key": key, "value": b64("0")})["header"]["revision"])
times = []
for i in range(300):
    t = time.perf_counter()
    r = post("/v3/kv/txn", {"compare": [{"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)}],
                            "success": [{"request_put": {"key": key, "value": b64(str(i))}}]})
    times.append(time.perf_counter() - t)
    rev = int(r["header"]["revision"])
json.dump({"results": [{"command": "raw etcd CAS transaction (one HTTP round trip, kept-alive connection, Python client)",
                        "times": times, "mean": statistics.mean(times), "stddev": statistics.stdev(times)}]},
          open(sys.argv[2], "w"))
PY
    mv "$out/etcd-rtt.json" "$out/calico-ipam-rtt--raw.json"
    # The Kubernetes datastore: no kube-apiserver runs here, so the tests' fake one (one
    # thread per connection, CRD schema validation on every write) stands in.
    rm -rf "$out/kube" && mkdir -p "$out/kube"
    "$ours/fake-apiserver" "$out/kube" --node bench --pool 10.253.0.0/16 >"$out/kube/url" &
    kube_pid=$!
    trap 'cleanup; kill $etcd_pid $kube_pid 2>/dev/null' EXIT
    until [ -s "$out/kube/url" ]; do sleep 0.1; done
    for backend in local etcdv3 kubernetes; do
        conf="$out/cipam-$backend.json"
        if [ "$backend" = local ]; then
            rm -rf "$out/cipam-local"
            store="\"datastore_type\":\"local\",\"local_data_dir\":\"$out/cipam-local\""
        elif [ "$backend" = kubernetes ]; then
            store="\"datastore_type\":\"kubernetes\",\"kubernetes\":{\"kubeconfig\":\"$out/kube/kubeconfig\"}"
        else
            store="\"datastore_type\":\"etcdv3\",\"etcd_endpoints\":\"$endpoint\""
        fi
        printf '{"cniVersion":"1.0.0","name":"bench","%s,"ipam_lock_file":"%s","nodename":"bench","nodename_file_optional":true,"ipam":{"type":"calico-ipam","ipv4_pools":["10.253.0.0/16"]}}' \
            "${store#\"}" "$out/ipam.lock" >"$conf"
        vars=(bench /run/netns/none eth0 "$ours")
        measure "calico-ipam-$backend" "ours calico-ipam ADD ($backend)" "$conf" \
            "$(again DEL "${vars[@]}" "$ours/calico-ipam" "$conf")" \
            $(cni ADD "${vars[@]}") "$ours/calico-ipam"
        measure "calico-ipam-$backend" "ours calico-ipam DEL ($backend)" "$conf" \
            "$(again DEL "${vars[@]}" "$ours/calico-ipam" "$conf"); $(again ADD "${vars[@]}" "$ours/calico-ipam" "$conf")" \
            $(cni DEL "${vars[@]}") "$ours/calico-ipam"
    done
    # API requests of one ADD and one DEL on a node that already has its block, counted from
    # the client's debug log (one line per request).
    debug_conf="$out/cipam-kubernetes-debug.json"
    sed 's/^{/{"log_level":"debug",/' "$out/cipam-kubernetes.json" >"$debug_conf"
    for verb in ADD DEL; do
        n=$(env $(cni $verb rtt /run/netns/none eth0 "$ours") "$ours/calico-ipam" <"$debug_conf" 2>&1 >/dev/null \
            | grep -c 'kubernetes: ' || true)
        echo "calico-ipam $verb on the Kubernetes datastore: $n API requests" | tee -a "$out/round-trips.txt"
    done
    # Scale: the same ADD and DEL for node `scale` on a datastore holding only that node
    # (its block with 40 addresses), then once it also holds 500 other nodes' blocks and 15
    # more full blocks of the node (1,000 addresses held): the layout of
    # ipam/calico-ipam/tests/cluster_growth.rs, written by the grow_cluster example.
    cargo build --release -q -p calico-ipam --example grow_cluster
    grow=$PWD/target/release/examples/grow_cluster
    python3 - "$endpoint" <<'PY'
import base64, http.client, json, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
c = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
b64 = lambda s: base64.b64encode(s.encode()).decode()
def put(key, value):
    c.request("POST", "/v3/kv/put", json.dumps({"key": b64(key), "value": b64(json.dumps(value))})); c.getresponse().read()
put("/calico/resources/v3/projectcalico.org/ippools/scale", {"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
    "metadata": {"name": "scale"}, "spec": {"cidr": "10.0.0.0/16", "blockSize": 26}})
put("/calico/resources/v3/projectcalico.org/nodes/scale", {"kind": "Node", "apiVersion": "projectcalico.org/v3",
    "metadata": {"name": "scale"}, "spec": {}})
PY
    rm -rf "$out/kube-scale" && mkdir -p "$out/kube-scale"
    "$ours/fake-apiserver" "$out/kube-scale" --node scale --pool 10.0.0.0/16 >"$out/kube-scale/url" &
    kube_scale_pid=$!
    trap 'cleanup; kill $etcd_pid $kube_pid $kube_scale_pid 2>/dev/null' EXIT
    until [ -s "$out/kube-scale/url" ]; do sleep 0.1; done
    for backend in local etcdv3 kubernetes; do
        conf="$out/cipam-scale-$backend.json"
        if [ "$backend" = local ]; then
            rm -rf "$out/cipam-scale-local"
            place="$out/cipam-scale-local"
            store="\"datastore_type\":\"local\",\"local_data_dir\":\"$place\""
        elif [ "$backend" = kubernetes ]; then
            place="$out/kube-scale/kubeconfig"
            store="\"datastore_type\":\"kubernetes\",\"kubernetes\":{\"kubeconfig\":\"$place\"}"
        else
            place=$endpoint
            store="\"datastore_type\":\"etcdv3\",\"etcd_endpoints\":\"$endpoint\""
        fi
        printf '{"cniVersion":"1.0.0","name":"bench","%s,"ipam_lock_file":"%s","nodename":"scale","nodename_file_optional":true,"ipam":{"type":"calico-ipam","ipv4_pools":["10.0.0.0/16"]}}' \
            "${store#\"}" "$out/ipam-scale-$backend.lock" >"$conf"
        vars=(bench /run/netns/none eth0 "$ours")
        env $(cni ADD warm /run/netns/none eth0 "$ours") "$ours/calico-ipam" <"$conf" >/dev/null
        for size in "1 node" "501 nodes"; do
            if [ "$size" = "1 node" ]; then step=fill; else step=grow; fi
            "$grow" "$step" "$backend" "$place" scale
            measure "calico-ipam-scale-$backend" "ours calico-ipam ADD ($backend, $size)" "$conf" \
                "$(again DEL "${vars[@]}" "$ours/calico-ipam" "$conf")" \
                $(cni ADD "${vars[@]}") "$ours/calico-ipam"
            measure "calico-ipam-scale-$backend" "ours calico-ipam DEL ($backend, $size)" "$conf" \
                "$(again DEL "${vars[@]}" "$ours/calico-ipam" "$conf"); $(again ADD "${vars[@]}" "$ours/calico-ipam" "$conf")" \
                $(cni DEL "${vars[@]}") "$ours/calico-ipam"
            sed 's/^{/{"log_level":"debug",/' "$conf" >"$conf.debug"
            for verb in ADD DEL; do
                lines=$(env $(cni $verb meter /run/netns/none eth0 "$ours") "$ours/calico-ipam" <"$conf.debug" 2>&1 >/dev/null \
                    | grep ' bytes sent, ' || true)
                n=$(printf '%s' "$lines" | grep -c . || true)
                bytes=$(printf '%s\n' "$lines" | sed -n 's/.*: \([0-9]*\) bytes sent, \([0-9]*\) received.*/\1 \2/p' \
                    | awk '{s+=$1; r+=$2} END {print s+0, r+0}')
                echo "calico-ipam $verb ($backend, $size): $n requests, ${bytes% *} bytes sent, ${bytes#* } received" \
                    | tee -a "$out/round-trips.txt"
            done
        done
    done
fi

if [ "$what" = all ] || [ "$what" = chain ]; then
    # The whole chain a Calico node runs for every pod, driven by our cnitool (libcni's order:
    # ADD with prevResult, DEL in reverse from the cached result). Ours: calico + calico-ipam
    # (local datastore) + portmap + bandwidth; the reference: ptp + host-local + portmap +
    # bandwidth. Each side has a node namespace of its own (an uplink veth, a default route,
    # its own iptables tables) and gives every pod a fresh namespace, the same CNI_ARGS as a
    # kubelet, and the same runtimeConfig (one port mapping, both bandwidth directions).
    # IPv4, single stack; both portmaps on iptables.
    if [ ! -x /usr/bin/time ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends time >/dev/null
    fi
    work=$(mktemp -d /tmp/cni-bench-chain.XXXXXX)
    scratch+=("$work")
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    pods=${CHURN_PODS:-200} jobs=${CHURN_JOBS:-8} rss_runs=${RSS_RUNS:-20}
    caps() {
        printf '{"portMappings":[{"hostPort":%d,"containerPort":80,"protocol":"tcp"}],"bandwidth":{"ingressRate":10000000,"ingressBurst":1000000,"egressRate":10000000,"egressBurst":1000000}}' "$1"
    }
    kargs() { echo "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=$1"; }
    # wrapper time|rss NAME REAL LOG: a stand-in for plugin NAME on CNI_PATH that runs REAL
    # and logs its wall time (bash's clock, no fork) or its peak RSS (GNU time's %M: the
    # largest of the plugin and the processes it waited for).
    # shellcheck disable=SC2016 # the $ are the wrapper's own
    wrapper() {
        if [ "$1" = time ]; then
            printf '#!/bin/bash\nt0=$EPOCHREALTIME\n%q "$@"\nrc=$?\nt1=$EPOCHREALTIME\necho "%s $CNI_COMMAND $t0 $t1" >>%q\nexit $rc\n' \
                "$3" "$2" "$4"
        else
            printf '#!/bin/bash\nexec /usr/bin/time -a -o %q -f "%s $CNI_COMMAND %%M" %q "$@"\n' "$4" "$2" "$3"
        fi
    }
    for side in ours ref; do
        dir=${!side} node="bench-chain-$side-$tag" pod="bench-chain-pod-$side-$tag" net="bench-$side"
        new_netns "$node"
        new_netns "$pod"
        ip -n "$node" link set lo up
        ip -n "$node" link add up0 type veth peer name up1
        ip -n "$node" link set up0 up
        ip -n "$node" link set up1 up
        ip -n "$node" route add default dev up0
        mkdir -p "$work/$side/net"
        if [ "$side" = ours ]; then
            main=calico ipam=calico-ipam
            first="{\"type\":\"calico\",\"datastore_type\":\"local\",\"local_data_dir\":\"$work/ours/datastore\",\"ipam_lock_file\":\"$work/ours/ipam.lock\",\"nodename\":\"bench\",\"nodename_file_optional\":true,\"ipam\":{\"type\":\"calico-ipam\",\"ipv4_pools\":[\"10.254.0.0/16\"]}}"
        else
            main=ptp ipam=host-local
            first="{\"type\":\"ptp\",\"ipam\":{\"type\":\"host-local\",\"ranges\":[[{\"subnet\":\"10.255.0.0/16\"}]],\"dataDir\":\"$work/ref/host-local\"}}"
        fi
        printf '{"cniVersion":"1.0.0","name":"%s","plugins":[%s,{"type":"portmap","snat":true,"capabilities":{"portMappings":true}},{"type":"bandwidth","capabilities":{"bandwidth":true}}]}\n' \
            "$net" "$first" >"$work/$side/net/$net.conflist"
        # CNI_PATHs for the per-plugin passes: the chain's plugins wrapped (the IPAM plugin
        # as itself, so the main plugin's figures hold no wrapper), or the IPAM plugin alone.
        for pass in time-top time-ipam rss-top rss-ipam; do
            mkdir -p "$work/$side/$pass"
            for plugin in "$main" "$ipam" portmap bandwidth; do
                role=top
                if [ "$plugin" = "$ipam" ]; then role=ipam; fi
                if [ "${pass#*-}" = "$role" ]; then
                    wrapper "${pass%-*}" "$plugin" "$dir/$plugin" "$work/$side/${pass%-*}.log" >"$work/$side/$pass/$plugin"
                    chmod +x "$work/$side/$pass/$plugin"
                else
                    ln -s "$dir/$plugin" "$work/$side/$pass/$plugin"
                fi
            done
        done
        chain_env=("NETCONFPATH=$work/$side/net" "CNI_PATH=$dir" "CNI_CACHE_DIR=$work/$side/cache"
             "CAP_ARGS=$(caps 20000)" "CNI_ARGS=$(kargs bench-pod)")
        add=("$ours/cnitool" add "$net" "/run/netns/$pod") del=("$ours/cnitool" del "$net" "/run/netns/$pod")
        label="$side $main + $ipam + portmap + bandwidth"
        # (1) One pod at a time: ADD after an untimed DEL, DEL after an untimed ADD.
        env "${chain_env[@]}" ip netns exec "$node" "$hf" -N --warmup 5 --runs "$runs" -n "$label ADD" \
            --export-json "$out/fullchain--${side}_ADD.json" --prepare "sh -c '${del[*]} >/dev/null'" "${add[*]}" >/dev/null
        env "${chain_env[@]}" ip netns exec "$node" "$hf" -N --warmup 5 --runs "$runs" -n "$label DEL" \
            --export-json "$out/fullchain--${side}_DEL.json" --prepare "sh -c '${del[*]} >/dev/null; ${add[*]} >/dev/null'" "${del[*]}" >/dev/null
        env "${chain_env[@]}" ip netns exec "$node" "${del[@]}"
        # (3) and (4): the same pod through the wrapped plugins, ADD then DEL, untimed here.
        for pass in time-top time-ipam rss-top rss-ipam; do
            n=$runs
            if [ "${pass%-*}" = rss ]; then n=$rss_runs; fi
            for ((i = 0; i < n; i++)); do
                env "${chain_env[@]}" "CNI_PATH=$work/$side/$pass" ip netns exec "$node" "${add[@]}" >/dev/null
                env "${chain_env[@]}" "CNI_PATH=$work/$side/$pass" ip netns exec "$node" "${del[@]}"
            done
        done
        # (2) Churn: every pod ADD then DEL, $jobs pods at a time, each on a fresh namespace.
        churn=()
        for ((i = 0; i < pods; i++)); do
            new_netns "bench-churn-$side-$i-$tag"
            churn+=("/run/netns/bench-churn-$side-$i-$tag")
        done
        env "${chain_env[@]}" ip netns exec "$node" python3 - "$ours/cnitool" "$net" "$jobs" "$work/churn-$side.json" "${churn[@]}" <<'PY'
import concurrent.futures, json, os, subprocess, sys, time
cnitool, net, jobs, dest, netns = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
def run(verb, i, path):
    env = dict(os.environ, CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=churn-{i}",
               CAP_ARGS=json.dumps({"portMappings": [{"hostPort": 21000 + i, "containerPort": 80, "protocol": "tcp"}],
                                    "bandwidth": {"ingressRate": 10000000, "ingressBurst": 1000000,
                                                  "egressRate": 10000000, "egressBurst": 1000000}},
                                   separators=(",", ":")))
    t = time.perf_counter()
    p = subprocess.run([cnitool, verb, net, path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"cnitool {verb} {net} {path}: exit {p.returncode}: {p.stderr.decode()}")
    return t
def pod(arg):
    i, path = arg
    return run("add", i, path), run("del", i, path)
start = time.perf_counter()
with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    times = list(pool.map(pod, enumerate(netns)))
wall = time.perf_counter() - start
json.dump({"pods": len(netns), "jobs": jobs, "wall": wall,
           "add": [a for a, _ in times], "del": [d for _, d in times]}, open(dest, "w"))
PY
        for ns in "${churn[@]}"; do ip netns del "${ns#/run/netns/}"; done
        # Every DEL undid its ADD: no device, NAT chain, reservation, IPAM handle or endpoint left
        # (dot-files are not keys: the local datastore keeps one spare file per directory).
        left=$( (ip -n "$node" -o link show | grep -v -e ' lo:' -e ' up0@' -e ' up1@'
                 ip netns exec "$node" iptables-save -t nat | grep '^:CNI-DN-'
                 find "$work/ours/datastore/calico/ipam/v2/handle" "$work/ref/host-local/$net" \
                     "$work/ours/datastore/calico/resources/v3/projectcalico.org/workloadendpoints" \
                     -mindepth 1 -type f ! -name lock ! -name 'last_reserved_ip*' ! -name '.*' 2>/dev/null) || true)
        if [ -n "$left" ]; then
            printf 'scripts/bench.sh chain: the %s chain left behind:\n%s\n' "$side" "$left" >&2
            exit 1
        fi
    done
    # What the kernel alone takes to delete the devices a pod's DEL deletes, for scale: a veth
    # pair whose peer is in another namespace (both chains) and an IFB (both bandwidths).
    node="bench-chain-ours-$tag" pod="bench-chain-pod-ours-$tag"
    ip netns exec "$node" "$hf" -N --warmup 5 --runs "$runs" -n "kernel: ip link del of a veth pair" \
        --export-json "$out/fullchain-floor--veth.json" \
        --prepare "ip link add bfloor0 type veth peer name bfloor1 netns $pod" "ip link del bfloor0" >/dev/null
    ip netns exec "$node" "$hf" -N --warmup 5 --runs "$runs" -n "kernel: ip link del of an IFB" \
        --export-json "$out/fullchain-floor--ifb.json" \
        --prepare "ip link add bfloor2 type ifb" "ip link del bfloor2" >/dev/null
    # The pod's chain, as a DEL of portmap deletes it (one iptables-restore, a process start
    # included): what is left of the node's nat table to the kernel.
    printf '*nat\n:BFLOOR - [0:0]\n-X BFLOOR\nCOMMIT\n' >"$out/floor-chain.rules"
    ip netns exec "$node" "$hf" -N --warmup 5 --runs "$runs" -n "kernel: iptables-restore deleting one chain" \
        --export-json "$out/fullchain-floor--chain.json" --input "$out/floor-chain.rules" \
        --prepare "iptables -t nat -N BFLOOR" "iptables-restore --noflush" >/dev/null
    python3 - "$out" "$work" "$ours" "$ref" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)" "$(uname -r)" \
        "$(iptables --version)" <<'PY' | tee "$out/chain.md"
import json, os, statistics, sys
out, work, ours, ref, load_start, load_end, cpu, cores, kernel, ipt = sys.argv[1:]
def dist(ms):
    ms = sorted(ms)
    q = statistics.quantiles(ms, n=10) if len(ms) > 1 else [ms[0]] * 9
    return statistics.median(ms), q[0], q[-1]
def fmt(d, unit="ms"):
    return f"{d[0]:.2f} {unit} ({d[1]:.2f}–{d[2]:.2f})"
def hyperfine(name):
    r = json.load(open(f"{out}/{name}.json"))["results"][0]
    return dist([t * 1000 for t in r["times"]]), len(r["times"])
def verdict(ok):
    return "met" if ok else "**not met**"
print("## Full chain: calico + calico-ipam + portmap + bandwidth (ours) against ptp + host-local + portmap + bandwidth (reference)")
print()
print(f"Machine: {cores} cores ({cpu}), kernel {kernel}, {ipt}. Load average (1/5/15 min) "
      f"at the start of this section: {load_start}; at its end (its own churn included): {load_end}. Driver: our cnitool "
      "(libcni's order, result cache), one fresh pod namespace per pod in a node namespace per side; "
      "IPv4; one port mapping and both bandwidth directions per pod; calico-ipam on its local datastore.")
print()
print("| measurement | ours: median (p10–p90) | reference: median (p10–p90) | ours / reference | goal |")
print("|---|---|---|---|---|")
for verb, goal in (("ADD", 0.15), ("DEL", 0.08)):
    (o, n), (r, _) = hyperfine(f"fullchain--ours_{verb}"), hyperfine(f"fullchain--ref_{verb}")
    print(f"| whole chain {verb}, one pod at a time ({n} runs) | {fmt(o)} | {fmt(r)} | {o[0] / r[0]:.3f} | "
          f"≤ {goal}: {verdict(o[0] / r[0] <= goal)} |")
churn = {s: json.load(open(f"{work}/churn-{s}.json")) for s in ("ours", "ref")}
co, cr = churn["ours"], churn["ref"]
print(f"| churn: {co['pods']} pods (ADD then DEL each), {co['jobs']} at a time, total wall time | "
      f"{co['wall']:.2f} s | {cr['wall']:.2f} s | {co['wall'] / cr['wall']:.3f} | ≤ 0.2: {verdict(co['wall'] / cr['wall'] <= 0.2)} |")
for verb in ("add", "del"):
    o, r = dist([t * 1000 for t in co[verb]]), dist([t * 1000 for t in cr[verb]])
    print(f"| churn: one {verb.upper()} under that load | {fmt(o)} | {fmt(r)} | {o[0] / r[0]:.3f} | |")
floor = 0.0
for name, what in (("veth", "`ip link del` of a veth pair (peer in another namespace)"), ("ifb", "`ip link del` of an IFB"),
                   ("chain", "an `iptables-restore` that deletes one nat chain")):
    d, _ = hyperfine(f"fullchain-floor--{name}")
    floor += d[0]
    print(f"| the kernel's floor: {what} | {fmt(d)} | (the same kernel) | | |")
(o, _), (r, _) = hyperfine("fullchain--ours_DEL"), hyperfine("fullchain--ref_DEL")
print(f"| whole chain DEL minus that floor ({floor:.1f} ms) | {o[0] - floor:.2f} ms | {r[0] - floor:.2f} ms | | "
      f"≤ 3 ms: {verdict(o[0] - floor <= 3)} |")
print()
print(f"Every pod's DEL deletes one veth pair, one IFB and one nat chain: {floor:.1f} ms by the medians above "
      f"(the tools' process starts included), so no chain can DEL in less than {floor / r[0]:.2f} × the reference's {r[0]:.1f} ms.")
print()
def plugin_log(side, kind):
    rows = {}
    path = f"{work}/{side}/{kind}.log"
    for line in open(path):
        f = line.split()
        if kind == "time" and len(f) == 4:
            rows.setdefault((f[0], f[1]), []).append((float(f[3]) - float(f[2])) * 1000)
        elif kind == "rss" and len(f) == 3 and f[2].isdigit():
            rows.setdefault((f[0], f[1]), []).append(int(f[2]))
    return rows
pairs = [("calico", "ptp", "(with the IPAM plugin it runs)"), ("calico-ipam", "host-local", ""),
         ("portmap", "portmap", "(with the iptables processes it runs)"), ("bandwidth", "bandwidth", "")]
to, tr = plugin_log("ours", "time"), plugin_log("ref", "time")
print("Each plugin inside the chain: the same pod and runtimeConfig, the plugin's stdin and prevResult as the "
      "chain gives them, timed around its exec by a wrapper on CNI_PATH (the IPAM plugin wrapped in a pass of its own).")
print()
print("| plugin: ours / reference | ADD ours | ADD reference | ratio | DEL ours | DEL reference | ratio |")
print("|---|---|---|---|---|---|---|")
for o, r, note in pairs:
    cells = []
    for verb in ("ADD", "DEL"):
        a, b = dist(to[(o, verb)]), dist(tr[(r, verb)])
        cells += [fmt(a), fmt(b), f"{a[0] / b[0]:.2f}"]
    name = f"`{o}` / `{r}` {note}" if o != r else f"`{o}` {note}"
    print(f"| {name.strip()} | " + " | ".join(cells) + " |")
print()
ro, rr = plugin_log("ours", "rss"), plugin_log("ref", "rss")
print("Peak RSS during ADD (GNU time `%M`, KB, median of the runs: the largest of the plugin and the processes it "
      "waited for, so calico's and ptp's include their IPAM plugin, and the portmaps their iptables processes).")
print()
print("| plugin: ours / reference | ours | reference | ours ≤ reference |")
print("|---|---|---|---|")
for o, r, _ in pairs:
    a, b = statistics.median(ro[(o, "ADD")]), statistics.median(rr[(r, "ADD")])
    name = f"`{o}` / `{r}`" if o != r else f"`{o}`"
    print(f"| {name} | {a:.0f} | {b:.0f} | {verdict(a <= b)} |")
print()
print("Binary sizes (ours: the release profile, stripped; reference: Debian's `/usr/lib/cni`). 1 MB = 10^6 bytes.")
print()
print("| plugin: ours / reference | ours | reference | goal |")
print("|---|---|---|---|")
for o, r, limit in (("calico", "ptp", 10), ("calico-ipam", "host-local", 10), ("host-local", "host-local", 2),
                    ("portmap", "portmap", 2), ("bandwidth", "bandwidth", 2), ("loopback", "loopback", None)):
    a, b = os.path.getsize(f"{ours}/{o}") / 1e6, os.path.getsize(f"{ref}/{r}") / 1e6
    name = f"`{o}` / `{r}`" if o != r else f"`{o}`"
    goal = f"≤ {limit} MB: {verdict(a <= limit)}" if limit else ""
    print(f"| {name} | {a:.2f} MB | {b:.2f} MB | {goal} |")
PY
fi

python3 - "$out" <<'PY' | tee "$out/results.md"
import glob, json, os, statistics, sys
out = sys.argv[1]
print("| benchmark | command | median | p10–p90 | mean ± σ | runs |")
print("|---|---|---|---|---|---|")
for path in sorted(glob.glob(f"{out}/*--*.json")):
    table = os.path.basename(path).split("--")[0]
    for r in json.load(open(path))["results"]:
        t = sorted(x * 1000 for x in r["times"])
        q = statistics.quantiles(t, n=10)
        print(f"| {table} | {r['command']} | {statistics.median(t):.2f} ms | "
              f"{q[0]:.2f}–{q[-1]:.2f} ms | {r['mean']*1000:.2f} ± {r['stddev']*1000:.2f} ms | {len(t)} |")
PY
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
if [ -f "$out/chain.md" ]; then
    { echo; cat "$out/chain.md"; } >>"$out/results.md"
fi
if [ -f "$out/round-trips.txt" ]; then
    { echo; cat "$out/round-trips.txt"; } | tee -a "$out/results.md"
fi
