#!/usr/bin/env bash
# The release build of the suite, as it is installed on nodes: every binary of the workspace
# into target/release (or $CARGO_TARGET_DIR/release).
#
# calico and calico-ipam are linked statically and without PIE on glibc hosts, like the Go
# binaries they replace: a node's kubelet execs them from a host whose C library may be older
# than the one they were built against, and a static non-PIE image touches fewer pages on
# every exec (no shared C library mapped, no relocations to apply), which keeps their peak
# RSS below the reference plugins'. The small plugins stay dynamically linked: a static C
# library would add about 0.85 MB to each.
#
# `cargo rustc` hands the link flags to the final binary only; the dependencies (and the
# proc-macros, which cannot link statically) are the same build as `cargo build --release`.
# A later plain `cargo build --release` relinks calico and calico-ipam dynamically; they work
# the same, only larger in memory.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --bins --exclude calico --exclude calico-ipam

host=$(rustc -vV | sed -n 's/^host: //p')
static=()
case $host in
*-linux-gnu*) static=(-C target-feature=+crt-static -C relocation-model=static) ;;
esac
for bin in calico calico-ipam; do
    cargo rustc --release -p "$bin" --bin "$bin" -- "${static[@]}"
done
