//! A large cluster laid out in a datastore through the library: one node's block holding
//! 40 addresses, 15 more full blocks of that node listed before it (1,000 addresses in
//! all), and 500 other nodes with a block of 10 addresses each. Used by the scale test
//! and by `scripts/bench.sh` (through the `grow_cluster` example). (Also built as its own,
//! empty, test target.)
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use calico_ipam::model::{AffinityState, AllocationAttribute, BlockAffinity, IpamBlock};
use calico_ipam::store::Store;
use ipnetwork::IpNetwork;

/// The pool the blocks are carved from, `/26` blocks.
pub const POOL: &str = "10.0.0.0/16";
pub const BLOCK_LEN: usize = 64;
/// The `/26` blocks of [`POOL`].
pub const BLOCKS: usize = 1024;
/// The node's full blocks in the large cluster: with [`IN_FIRST`], 1,000 addresses.
pub const FULL_BLOCKS: usize = 15;
/// The addresses held in the node's first block.
pub const IN_FIRST: usize = 40;
pub const OTHER_NODES: usize = 500;

/// The `/26` with index `i` in [`POOL`].
pub fn block_cidr(i: usize) -> IpNetwork {
    let index = u32::try_from(i * BLOCK_LEN).expect("inside the pool");
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + index;
    IpNetwork::new(IpAddr::V4(Ipv4Addr::from(base)), 26).expect("cidr")
}

/// The `/26` of [`POOL`] that holds `ip`.
pub fn block_of(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, 26)
        .and_then(|n| IpNetwork::new(n.network(), 26))
        .expect("a /26")
}

/// Allocates `count` more addresses of `block` to pods of `node`, one handle each, as
/// calico-ipam records them.
pub fn hold(block: &mut IpamBlock, node: &str, count: usize) {
    let taken: Vec<usize> = block.unallocated.iter().copied().take(count).collect();
    block.unallocated.retain(|o| !taken.contains(o));
    for ordinal in taken {
        let pod = format!("held-{}-{ordinal}", block.cidr.ip());
        block.attributes.push(AllocationAttribute {
            handle_id: Some(format!("k8s-pod-network.{pod}")),
            secondary: BTreeMap::from([
                ("namespace".to_string(), "default".to_string()),
                ("node".to_string(), node.to_string()),
                ("pod".to_string(), pod.clone()),
                (
                    "timestamp".to_string(),
                    "2026-01-01 00:00:00 +0000 UTC".to_string(),
                ),
            ]),
            ..AllocationAttribute::default()
        });
        block.allocations[ordinal] = Some(block.attributes.len() - 1);
    }
}

/// What the key of a block sorts by, on every store: its CIDR as the etcd and local keys
/// spell it, and as the Kubernetes object's name does.
fn list_keys(cidr: IpNetwork) -> (String, String) {
    let text = format!("{}-{}", cidr.ip(), cidr.prefix());
    let name = text.replace('.', "-");
    (text, name)
}

/// Fills `node`'s block `first` (which holds the addresses of its first ADDs) to
/// [`IN_FIRST`].
pub fn fill_first(store: &dyn Store, node: &str, first: IpNetwork) {
    let found = store
        .get_block(&first)
        .expect("get")
        .expect("the first block");
    let mut block = found.value;
    let held = BLOCK_LEN - block.unallocated.len();
    hold(&mut block, node, IN_FIRST.saturating_sub(held));
    store.update_block(&block, &found.revision).expect("update");
}

/// Grows the cluster: [`FULL_BLOCKS`] full blocks for `node`, all listed before `first`
/// (so that an ADD walking the list reads them all before the one with room), and
/// [`OTHER_NODES`] nodes with a block of 10 addresses each, `register` called for each.
pub fn grow(store: &dyn Store, node: &str, first: IpNetwork, register: &mut dyn FnMut(&str)) {
    let (before_text, before_name) = list_keys(first);
    let own: Vec<usize> = (0..BLOCKS)
        .filter(|&i| {
            let (text, name) = list_keys(block_cidr(i));
            text < before_text && name < before_name
        })
        .take(FULL_BLOCKS)
        .collect();
    assert_eq!(
        own.len(),
        FULL_BLOCKS,
        "{first} has too few blocks listed before it"
    );
    for &i in &own {
        let cidr = block_cidr(i);
        let mut block = IpamBlock::new(cidr, Some(format!("host:{node}")), 1);
        hold(&mut block, node, BLOCK_LEN);
        store
            .create_affinity(&BlockAffinity::host(node, cidr, AffinityState::Confirmed))
            .expect("affinity");
        store.create_block(&block).expect("block");
    }
    let others = (0..BLOCKS)
        .filter(|&i| !own.contains(&i) && block_cidr(i) != first)
        .take(OTHER_NODES);
    for (n, i) in others.enumerate() {
        let other = format!("node-{n:03}");
        register(&other);
        let cidr = block_cidr(i);
        let mut block = IpamBlock::new(cidr, Some(format!("host:{other}")), 1);
        hold(&mut block, &other, 10);
        store
            .create_affinity(&BlockAffinity::host(&other, cidr, AffinityState::Confirmed))
            .expect("affinity");
        store.create_block(&block).expect("block");
    }
}
