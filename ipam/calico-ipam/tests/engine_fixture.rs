//! Shared set-up for the engine tests: an in-memory store with pools, nodes and IPAM
//! config, and readers of the raw state. (Also built as its own, empty, test target.)
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_ipam::engine::AutoAssign;
use calico_ipam::model::{AffinityState, IpPool, IpamBlock, IpamConfig};
use calico_ipam::store::codec;
use calico_ipam::store::kv::{Kv, KvStore};
use calico_ipam::store::memory::MemoryKv;
use calico_ipam::store::Store;
use ipnetwork::IpNetwork;

pub type MemStore = KvStore<MemoryKv>;

pub fn net(text: &str) -> IpNetwork {
    text.parse().expect("valid CIDR")
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

pub fn pool(cidr: &str, block_size: u8) -> IpPool {
    let mut p = IpPool::new(net(cidr));
    p.block_size = block_size;
    p
}

/// A store holding `pools` (cidr, block size).
pub fn store_with(pools: &[(&str, u8)]) -> MemStore {
    let store = MemoryKv::store();
    for (cidr, block_size) in pools {
        store
            .create_pool(&pool(cidr, *block_size))
            .expect("create pool");
    }
    store
}

pub fn add_pool(store: &MemStore, pool: &IpPool) {
    store.create_pool(pool).expect("create pool");
}

/// Rewrites a pool in place (an operator editing it).
pub fn replace_pool(store: &MemStore, pool: &IpPool) {
    let key = codec::pool_key(&pool.name);
    let (_, revision) = store.kv.get(&key).expect("get").expect("pool exists");
    store
        .kv
        .update(&key, &codec::encode_pool(pool), &revision)
        .expect("update pool");
}

pub fn delete_pool(store: &MemStore, name: &str) {
    let key = codec::pool_key(name);
    let (_, revision) = store.kv.get(&key).expect("get").expect("pool exists");
    store.kv.delete(&key, &revision).expect("delete pool");
}

pub fn add_node(store: &MemStore, name: &str, labels: &[(&str, &str)]) {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let value = serde_json::json!({
        "kind": "Node",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "labels": labels},
        "spec": {},
    });
    store
        .kv
        .create(&codec::node_key(name), value.to_string().as_bytes())
        .expect("create node");
}

pub fn set_config(store: &MemStore, strict: bool, auto_allocate: bool, max_blocks: u32) {
    store
        .create_ipam_config(&IpamConfig {
            strict_affinity: strict,
            auto_allocate_blocks: auto_allocate,
            max_blocks_per_host: max_blocks,
            extra: Default::default(),
        })
        .expect("create IPAM config");
}

pub fn v4(num: usize, handle: &str) -> AutoAssign {
    AutoAssign {
        num4: num,
        handle_id: handle.to_string(),
        attrs: BTreeMap::from([("node".to_string(), "n1".to_string())]),
        ..AutoAssign::default()
    }
}

pub fn blocks(store: &MemStore, v4: bool) -> Vec<IpamBlock> {
    store
        .list_blocks(v4)
        .expect("list blocks")
        .into_iter()
        .map(|b| b.value)
        .collect()
}

pub fn block(store: &MemStore, cidr: &IpNetwork) -> Option<IpamBlock> {
    store.get_block(cidr).expect("get block").map(|b| b.value)
}

pub fn affinity_state(store: &MemStore, node: &str, cidr: &IpNetwork) -> Option<AffinityState> {
    store
        .get_affinity("host", node, cidr)
        .expect("get affinity")
        .map(|a| a.value.state)
}

pub fn handle_counts(store: &MemStore, handle: &str) -> Option<BTreeMap<String, u64>> {
    store
        .get_handle(handle)
        .expect("get handle")
        .map(|h| h.value.block)
}

/// The block CIDR holding `addr` among the stored blocks.
pub fn block_of(store: &MemStore, addr: IpAddr) -> Option<IpamBlock> {
    blocks(store, addr.is_ipv4())
        .into_iter()
        .find(|b| b.cidr.contains(addr))
}

/// Checks the invariants every stored block must keep: each ordinal is either allocated
/// (pointing at an existing attribute) or in the free list exactly once.
pub fn assert_blocks_consistent(store: &MemStore) {
    for v4 in [true, false] {
        for b in blocks(store, v4) {
            let mut seen = vec![false; b.allocations.len()];
            for &o in &b.unallocated {
                assert!(
                    b.allocations[o].is_none(),
                    "{}: free ordinal {o} is allocated",
                    b.cidr
                );
                assert!(!seen[o], "{}: ordinal {o} free twice", b.cidr);
                seen[o] = true;
            }
            for (o, a) in b.allocations.iter().enumerate() {
                match a {
                    Some(i) => assert!(*i < b.attributes.len(), "{}: dangling attribute", b.cidr),
                    None => assert!(
                        seen[o],
                        "{}: ordinal {o} neither free nor allocated",
                        b.cidr
                    ),
                }
            }
        }
    }
}
