//! Many pods starting and stopping at once on one node, on every datastore: 64 parallel
//! calico-ipam ADDs get 64 distinct addresses (filling a pool of four blocks exactly, so the
//! node claims every block while its own plugin processes race), the datastore stays
//! consistent, and 64 parallel DELs leave no handle and every block free but still affine —
//! with the host-wide lock, and without it (it is best effort: compare-and-swap alone must
//! keep the datastore right).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::thread;

use cni_tests::host_local::Outcome;
use cni_tests::ipam::{allocations, contains, Backend, IpamFixture, NET};
use serde_json::{json, Value};

const NODE: &str = "busy-node";
/// 64 addresses in blocks of 16: 64 ADDs use all four blocks.
const POOL: &str = "10.78.0.0/26";
const BLOCK_SIZE: u8 = 28;
/// Pods started at once: the pool exactly, with the host lock.
const PODS: usize = 64;
/// Without the lock every writer races every other on the same block (O(n²) retries, the
/// very reason Calico takes the lock): fewer, to stay quick.
const UNLOCKED_PODS: usize = 24;

/// One call per container, all at once. Without `shared_lock` each process gets a lock file
/// of its own: the host lock is best effort, and compare-and-swap alone must keep the
/// datastore right.
fn parallel(
    fx: &IpamFixture,
    conf: &Value,
    shared_lock: bool,
    command: &str,
    ids: &[String],
) -> Vec<Outcome> {
    thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                let mut conf = conf.clone();
                if !shared_lock {
                    conf["ipam_lock_file"] = json!(fx.dir.path().join(format!("{id}.lock")));
                }
                s.spawn(move || fx.call(command, &conf, id, &[]))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("caller thread"))
            .collect()
    })
}

fn parallel_adds_and_dels(backend: Backend, shared_lock: bool, pods: usize) {
    let fx = IpamFixture::new(backend);
    // The local store would create a /26-block pool from the config; a pool written
    // beforehand (as an operator would) keeps its block size.
    fx.create_pool(POOL, BLOCK_SIZE);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL]}));
    let ids: Vec<String> = (0..pods).map(|i| format!("pod-{i:02}")).collect();

    let outs = parallel(&fx, &conf, shared_lock, "ADD", &ids);
    let mut given: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (id, out) in ids.iter().zip(&outs) {
        assert_eq!(out.exit, Some(0), "ADD {id}: {}", out.describe());
        let addrs = out.addresses();
        assert_eq!(addrs.len(), 1, "ADD {id}: {}", out.describe());
        let (ip, prefix) = addrs[0].split_once('/').expect("CIDR");
        let ip: IpAddr = ip.parse().expect("address");
        assert!(contains(POOL, ip), "{ip} outside {POOL}");
        assert_eq!(prefix, BLOCK_SIZE.to_string(), "the block's prefix");
        if let Some(other) = given.insert(ip, id.clone()) {
            panic!("{ip} handed to both {other} and {id}");
        }
    }
    assert_eq!(given.len(), pods);

    let snapshot = fx.snapshot();
    let held = allocations(&snapshot).unwrap_or_else(|e| panic!("after the ADDs: {e}"));
    let expected: BTreeMap<IpAddr, String> = given
        .iter()
        .map(|(ip, id)| (*ip, format!("{NET}.{id}")))
        .collect();
    assert_eq!(held, expected, "the datastore holds what the ADDs returned");
    let blocks = fx.blocks();
    assert_eq!(
        blocks.len(),
        pods.div_ceil(16),
        "blocks of 16 claimed as needed"
    );
    let affine: BTreeSet<String> = blocks
        .iter()
        .map(|b| {
            assert_eq!(b.affinity(), Some("host:busy-node"), "{}", b.key);
            b.cidr().to_string()
        })
        .collect();
    for cidr in &affine {
        let key = format!(
            "/calico/ipam/v2/host/{NODE}/ipv4/block/{}",
            cidr.replace('/', "-")
        );
        assert!(snapshot.contains_key(&key), "affinity {key}");
    }

    if pods == PODS {
        // The pool is full: the next pod is refused with "no addresses", writing nothing.
        let before = fx.snapshot();
        let out = fx.call("ADD", &conf, "one-too-many", &[]);
        assert_eq!(out.code(), Some(105), "{}", out.describe());
        assert_eq!(fx.snapshot(), before, "a refused ADD writes nothing");
    }

    let outs = parallel(&fx, &conf, shared_lock, "DEL", &ids);
    for (id, out) in ids.iter().zip(&outs) {
        assert_eq!(out.exit, Some(0), "DEL {id}: {}", out.describe());
    }
    let snapshot = fx.snapshot();
    assert_eq!(
        allocations(&snapshot).unwrap_or_else(|e| panic!("after the DELs: {e}")),
        BTreeMap::new()
    );
    assert_eq!(fx.handles(), BTreeMap::new(), "no handle left");
    let blocks = fx.blocks();
    assert_eq!(
        blocks
            .iter()
            .map(|b| b.cidr().to_string())
            .collect::<BTreeSet<_>>(),
        affine,
        "the node keeps its blocks"
    );
    for b in &blocks {
        assert!(b.all_free(), "all free: {}", b.value);
        assert_eq!(b.affinity(), Some("host:busy-node"), "{}", b.key);
    }
    for cidr in &affine {
        let key = format!(
            "/calico/ipam/v2/host/{NODE}/ipv4/block/{}",
            cidr.replace('/', "-")
        );
        assert!(snapshot.contains_key(&key), "affinity {key} kept");
    }

    // And the node can use them again.
    let out = fx.call("ADD", &conf, "after", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
}

#[test]
fn sixty_four_parallel_adds_and_dels_local() {
    parallel_adds_and_dels(Backend::Local, true, PODS);
}

#[test]
fn sixty_four_parallel_adds_and_dels_etcd() {
    parallel_adds_and_dels(Backend::Etcd, true, PODS);
}

#[test]
fn sixty_four_parallel_adds_and_dels_kubernetes() {
    parallel_adds_and_dels(Backend::Kubernetes, true, PODS);
}

#[test]
fn parallel_adds_and_dels_without_the_host_lock_local() {
    parallel_adds_and_dels(Backend::Local, false, UNLOCKED_PODS);
}

#[test]
fn parallel_adds_and_dels_without_the_host_lock_etcd() {
    parallel_adds_and_dels(Backend::Etcd, false, UNLOCKED_PODS);
}

#[test]
fn parallel_adds_and_dels_without_the_host_lock_kubernetes() {
    parallel_adds_and_dels(Backend::Kubernetes, false, UNLOCKED_PODS);
}
