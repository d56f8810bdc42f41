//! Several nodes sharing one datastore, etcd or the Kubernetes API (spec §8): nodes allocating at the same time each claim
//! blocks of their own and never hand out the same address; a node with no block left to
//! claim borrows from another node's block, unless the IPAM config says strict affinity, in
//! which case it gets "no addresses" (code 105) and writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::thread;

use cni_tests::host_local::Outcome;
use cni_tests::ipam::{allocations, contains, Backend, IpamFixture, NET};
use serde_json::{json, Value};

fn conf(fx: &IpamFixture, node: &str, pool: &str) -> Value {
    fx.conf("1.0.0", node, json!({"ipv4_pools": [pool]}))
}

fn address(out: &Outcome, what: &str) -> IpAddr {
    assert_eq!(out.exit, Some(0), "{what}: {}", out.describe());
    let addrs = out.addresses();
    assert_eq!(addrs.len(), 1, "{what}: {}", out.describe());
    addrs[0]
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{what}: {addrs:?}"))
}

/// The `node` attribute of the allocation of `ip`.
fn node_attribute(fx: &IpamFixture, ip: IpAddr) -> String {
    let block = fx
        .blocks()
        .into_iter()
        .find(|b| contains(b.cidr(), ip))
        .unwrap_or_else(|| panic!("no block holds {ip}"));
    let ordinal = block.ordinal_of(ip).expect("in block");
    block
        .attribute_of(ordinal)
        .and_then(|a| a["secondary"]["node"].as_str())
        .unwrap_or_else(|| panic!("{ip} not allocated: {}", block.value))
        .to_string()
}

fn nodes_allocating_at_once_claim_distinct_blocks(backend: Backend) {
    const POOL: &str = "10.79.0.0/24";
    const NODES: usize = 4;
    const PER_NODE: usize = 8;
    let fx = IpamFixture::new(backend);
    // Four blocks of 64 for four nodes: every node can have one of its own.
    fx.create_pool(POOL, 26);
    let nodes: Vec<String> = (0..NODES).map(|n| format!("node-{n}")).collect();
    let results: Vec<(String, String, Outcome)> = thread::scope(|s| {
        let calls: Vec<_> = nodes
            .iter()
            .flat_map(|node| (0..PER_NODE).map(move |i| (node.clone(), format!("{node}-pod-{i}"))))
            .map(|(node, id)| {
                let fx = &fx;
                s.spawn(move || {
                    let out = fx.call("ADD", &conf(fx, &node, POOL), &id, &[]);
                    (node, id, out)
                })
            })
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().expect("caller thread"))
            .collect()
    });

    let mut given: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut node_of: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (node, id, out) in &results {
        let ip = address(out, &format!("ADD {id} on {node}"));
        if let Some(other) = given.insert(ip, id.clone()) {
            panic!("{ip} handed to both {other} and {id}");
        }
        node_of.insert(ip, node.clone());
    }
    let held = allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
    let expected: BTreeMap<IpAddr, String> = given
        .iter()
        .map(|(ip, id)| (*ip, format!("{NET}.{id}")))
        .collect();
    assert_eq!(held, expected, "the datastore holds what the ADDs returned");

    // Each node's addresses come from one block affine to it, and no two nodes share one.
    let blocks = fx.blocks();
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (ip, node) in &node_of {
        let block = blocks
            .iter()
            .find(|b| contains(b.cidr(), *ip))
            .unwrap_or_else(|| panic!("no block holds {ip}"));
        assert_eq!(
            block.affinity(),
            Some(format!("host:{node}").as_str()),
            "{ip} of {node} comes from a block of another node: {}",
            block.value
        );
        assert_eq!(node_attribute(&fx, *ip), *node);
        owners
            .entry(node.clone())
            .or_default()
            .insert(block.cidr().to_string());
    }
    let mut all = BTreeSet::new();
    for (node, cidrs) in &owners {
        assert_eq!(
            cidrs.len(),
            1,
            "{node} needs one block of 64 for 8 pods: {cidrs:?}"
        );
        assert!(
            all.insert(cidrs.clone()),
            "{node} shares a block: {owners:?}"
        );
    }
    assert_eq!(blocks.len(), NODES, "one block per node");
    for b in &blocks {
        let node = b
            .affinity()
            .and_then(|a| a.strip_prefix("host:"))
            .expect("affine");
        let key = format!(
            "/calico/ipam/v2/host/{node}/ipv4/block/{}",
            b.cidr().replace('/', "-")
        );
        assert_eq!(
            fx.get(&key).map(|a| a["state"].clone()),
            Some(json!("confirmed")),
            "{key}"
        );
    }
}

/// A pool of exactly one block of four addresses, claimed by node A with one address used.
fn one_block_owned_by_a(backend: Backend) -> (IpamFixture, IpAddr) {
    let fx = IpamFixture::new(backend);
    fx.create_pool("10.80.0.0/30", 30);
    let a = address(
        &fx.call("ADD", &conf(&fx, "node-a", "10.80.0.0/30"), "a-1", &[]),
        "ADD on node A",
    );
    let blocks = fx.blocks();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].affinity(), Some("host:node-a"));
    (fx, a)
}

fn a_node_without_blocks_borrows_from_another_nodes_block(backend: Backend) {
    let (fx, a) = one_block_owned_by_a(backend);
    let conf_b = conf(&fx, "node-b", "10.80.0.0/30");
    let b = address(
        &fx.call("ADD", &conf_b, "b-1", &[]),
        "ADD on node B (no strict affinity: borrowing allowed)",
    );
    assert!(contains("10.80.0.0/30", b) && b != a, "{b}");
    let blocks = fx.blocks();
    assert_eq!(blocks.len(), 1, "no new block");
    assert_eq!(
        blocks[0].affinity(),
        Some("host:node-a"),
        "borrowing does not move the block"
    );
    assert_eq!(node_attribute(&fx, b), "node-b", "the borrower is recorded");
    let snapshot = fx.snapshot();
    assert!(
        !snapshot
            .keys()
            .any(|k| k.starts_with("/calico/ipam/v2/host/node-b/")),
        "node B claims no affinity: {:?}",
        snapshot.keys()
    );
    allocations(&snapshot).unwrap_or_else(|e| panic!("{e}"));

    // Released like any other address.
    let out = fx.call("DEL", &conf_b, "b-1", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let held = allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), [a]);
    assert_eq!(fx.blocks()[0].affinity(), Some("host:node-a"));
}

fn strict_affinity_forbids_borrowing(backend: Backend) {
    let (fx, a) = one_block_owned_by_a(backend);
    fx.set_ipam_config(true);
    let conf_b = conf(&fx, "node-b", "10.80.0.0/30");
    let before = fx.snapshot();
    let out = fx.call("ADD", &conf_b, "b-1", &[]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert_eq!(out.code(), Some(105), "{}", out.describe());
    let msg = out.msg().unwrap_or_default();
    assert!(
        msg.contains("Assigned 0 out of 1") && msg.contains("strict affinity"),
        "says why: {msg}"
    );
    assert_eq!(fx.snapshot(), before, "a refused ADD writes nothing");

    // The owner still allocates from its block, up to its end.
    let conf_a = conf(&fx, "node-a", "10.80.0.0/30");
    let mut mine = BTreeSet::from([a]);
    for i in 2..=4 {
        let ip = address(&fx.call("ADD", &conf_a, &format!("a-{i}"), &[]), "node A");
        assert!(mine.insert(ip), "{ip} twice");
    }
    let out = fx.call("ADD", &conf_a, "a-5", &[]);
    assert_eq!(
        out.code(),
        Some(105),
        "the block is full: {}",
        out.describe()
    );
}

/// `IP=` inside another node's block: allowed (the address is free) unless strict
/// affinity, then refused as a conflict naming the block's owner (spec §8.6).
fn a_static_address_in_another_nodes_block(backend: Backend) {
    let (fx, a) = one_block_owned_by_a(backend);
    let conf_b = conf(&fx, "node-b", "10.80.0.0/30");
    let free: Vec<String> = (1..4)
        .map(|i| format!("10.80.0.{i}"))
        .filter(|ip| ip.parse::<IpAddr>().ok() != Some(a))
        .collect();

    fx.set_ipam_config(true);
    let before = fx.snapshot();
    let out = fx.call("ADD", &conf_b, "b-static", &[("IP", &free[0])]);
    assert_eq!(out.code(), Some(110), "strict affinity: {}", out.describe());
    assert!(
        out.msg().unwrap_or_default().contains("host:node-a"),
        "names the owner: {}",
        out.describe()
    );
    assert_eq!(fx.snapshot(), before, "a refused ADD writes nothing");

    fx.set_ipam_config(false);
    let out = fx.call("ADD", &conf_b, "b-static", &[("IP", &free[0])]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_eq!(out.addresses(), [format!("{}/32", free[0])]);
    assert_eq!(node_attribute(&fx, free[0].parse().expect("ip")), "node-b");
    assert_eq!(fx.blocks()[0].affinity(), Some("host:node-a"));
    allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
}

// The local store is a single node's: several nodes share etcd or the Kubernetes API.
cni_tests::on_datastores!(
    [etcd: Etcd, kubernetes: Kubernetes]
    nodes_allocating_at_once_claim_distinct_blocks,
    a_node_without_blocks_borrows_from_another_nodes_block,
    strict_affinity_forbids_borrowing,
    a_static_address_in_another_nodes_block,
);
