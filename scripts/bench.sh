#!/usr/bin/env bash
# Benchmarks our plugins side by side with Debian's reference binaries (/usr/lib/cni), with
# hyperfine. Writes a markdown table to target/bench/results.md and prints it.
#
#   scripts/bench.sh            every benchmark
#   scripts/bench.sh version    only the VERSION probe
#   scripts/bench.sh loopback   only loopback ADD+DEL on a real namespace
#   scripts/bench.sh host-local only host-local ADD and DEL (dual-stack, data dir in target/)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/bench.sh: run as root: it creates network namespaces" >&2
    exit 1
fi
if ! command -v hyperfine >/dev/null || [ ! -x /usr/lib/cni/loopback ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends hyperfine containernetworking-plugins >/dev/null
fi

cargo build --release --workspace --bins
ours=$PWD/target/release
ref=/usr/lib/cni
out=$PWD/target/bench
mkdir -p "$out"
what=${1:-all}
runs=${RUNS:-300}

ns="bench-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"

tables=()
bench() { # name, then hyperfine options and commands
    local name=$1; shift
    hyperfine --warmup 20 --runs "$runs" --export-json "$out/$name.json" "$@" >/dev/null
    tables+=("$name")
}

if [ "$what" = all ] || [ "$what" = version ]; then
    bench version -N \
        -n "ours loopback VERSION" "env CNI_COMMAND=VERSION $ours/loopback" \
        -n "reference loopback VERSION" "env CNI_COMMAND=VERSION $ref/loopback"
fi

if [ "$what" = all ] || [ "$what" = loopback ]; then
    conf='{"cniVersion":"1.0.0","name":"bench","type":"loopback"}'
    printf '%s' "$conf" >"$out/loopback.json"
    # stdin needs a redirection, so these run through sh; hyperfine subtracts the shell's
    # own start-up time from every measurement.
    run_of() { echo "CNI_COMMAND=$1 CNI_CONTAINERID=bench CNI_NETNS=/run/netns/$ns CNI_IFNAME=lo CNI_PATH=$2 $2/loopback <$out/loopback.json >/dev/null"; }
    bench loopback-add -S sh \
        -n "ours loopback ADD" "$(run_of ADD "$ours")" \
        -n "reference loopback ADD" "$(run_of ADD "$ref")"
    bench loopback-del -S sh \
        -n "ours loopback DEL" "$(run_of DEL "$ours")" \
        -n "reference loopback DEL" "$(run_of DEL "$ref")"
fi

if [ "$what" = all ] || [ "$what" = host-local ]; then
    # One data directory per binary; each ADD is preceded by the DEL that frees its address
    # (and each DEL by the ADD that makes it), outside the timed part.
    hl_run() { # binary-dir, command, data-dir
        printf '{"cniVersion":"1.0.0","name":"bench","ipam":{"type":"host-local","ranges":[[{"subnet":"10.250.0.0/16"}],[{"subnet":"fd00:250::/64"}]],"dataDir":"%s"}}' "$3" >"$3.json"
        echo "CNI_COMMAND=$2 CNI_CONTAINERID=bench CNI_NETNS=/run/netns/$ns CNI_IFNAME=eth0 CNI_PATH=$1 $1/host-local <$3.json >/dev/null"
    }
    rm -rf "$out/hl-ours" "$out/hl-ref"
    bench host-local-add -S sh \
        -n "ours host-local ADD" --prepare "$(hl_run "$ours" DEL "$out/hl-ours")" "$(hl_run "$ours" ADD "$out/hl-ours")" \
        -n "reference host-local ADD" --prepare "$(hl_run "$ref" DEL "$out/hl-ref")" "$(hl_run "$ref" ADD "$out/hl-ref")"
    bench host-local-del -S sh \
        -n "ours host-local DEL" --prepare "$(hl_run "$ours" DEL "$out/hl-ours"); $(hl_run "$ours" ADD "$out/hl-ours")" "$(hl_run "$ours" DEL "$out/hl-ours")" \
        -n "reference host-local DEL" --prepare "$(hl_run "$ref" DEL "$out/hl-ref"); $(hl_run "$ref" ADD "$out/hl-ref")" "$(hl_run "$ref" DEL "$out/hl-ref")"
fi

python3 - "$out" "${tables[@]}" <<'PY' | tee "$out/results.md"
import json, statistics, sys
out, names = sys.argv[1], sys.argv[2:]
print("| benchmark | command | median | p10–p90 | mean ± σ | runs |")
print("|---|---|---|---|---|---|")
for name in names:
    for r in json.load(open(f"{out}/{name}.json"))["results"]:
        t = sorted(x * 1000 for x in r["times"])
        q = statistics.quantiles(t, n=10)
        print(f"| {name} | {r['command']} | {statistics.median(t):.2f} ms | "
              f"{q[0]:.2f}–{q[-1]:.2f} ms | {r['mean']*1000:.2f} ± {r['stddev']*1000:.2f} ms | {len(t)} |")
PY
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
