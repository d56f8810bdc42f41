//! Properties of the engine over random sequences of requests from up to three nodes,
//! checked against the raw store after every step: no address is ever held twice, the
//! store agrees with what callers were given, released addresses come back, blocks stay
//! disjoint inside their pools, affinity states only move forward.

#[path = "engine_fixture.rs"]
mod fixture;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_ipam::engine::{AutoAssign, Ipam, IpamError};
use calico_ipam::model::{offset, AffinityState, IpPool};
use calico_ipam::store::codec;
use calico_ipam::store::Store;
use fixture::*;
use ipnetwork::IpNetwork;
use proptest::prelude::*;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// 4 blocks of 8 (v4) and 4 blocks of 4 (v6): small enough to fill, borrow, and run out.
const POOL4: (&str, u8) = ("10.0.0.0/27", 29);
const POOL6: (&str, u8) = ("fd00::/124", 126);

#[derive(Debug, Clone)]
enum Op {
    Assign {
        node: usize,
        num4: usize,
        num6: usize,
        handle: u8,
    },
    AssignIp {
        node: usize,
        v4: bool,
        offset: u8,
        handle: u8,
    },
    ReleaseHandle {
        node: usize,
        handle: u8,
    },
    /// Releases the held addresses at these positions (modulo how many are held), plus
    /// one address that may or may not be held.
    ReleaseIps {
        node: usize,
        picks: Vec<usize>,
        extra: u8,
    },
    /// Another writer touches a block or handle first: the next write of it loses.
    Conflict {
        block: bool,
        which: usize,
    },
}

fn op(nodes: usize) -> impl Strategy<Value = Op> {
    let node = 0..nodes;
    prop_oneof![
        4 => (node.clone(), 0..4usize, 0..3usize, 0..6u8).prop_map(|(node, num4, num6, handle)| {
            Op::Assign { node, num4, num6, handle }
        }),
        1 => (node.clone(), any::<bool>(), 0..32u8, 0..6u8).prop_map(|(node, v4, offset, handle)| {
            Op::AssignIp { node, v4, offset, handle }
        }),
        2 => (node.clone(), 0..6u8).prop_map(|(node, handle)| Op::ReleaseHandle { node, handle }),
        1 => (node, proptest::collection::vec(0..64usize, 0..4), 0..32u8)
            .prop_map(|(node, picks, extra)| Op::ReleaseIps { node, picks, extra }),
        1 => (any::<bool>(), 0..8usize).prop_map(|(block, which)| Op::Conflict { block, which }),
    ]
}

fn handle_name(h: u8) -> String {
    format!("net.container-{h}")
}

fn pool_of(v4: bool) -> IpPool {
    let (cidr, size) = if v4 { POOL4 } else { POOL6 };
    pool(cidr, size)
}

/// What callers were told they hold.
#[derive(Default, Debug)]
struct Model {
    held: BTreeMap<IpAddr, String>,
}

impl Model {
    fn add(&mut self, addr: IpAddr, handle: &str) -> Result<(), TestCaseError> {
        prop_assert!(
            self.held.insert(addr, handle.to_string()).is_none(),
            "{addr} handed out twice"
        );
        Ok(())
    }
}

fn affinity_states(store: &MemStore) -> BTreeMap<(String, IpNetwork), AffinityState> {
    let mut out = BTreeMap::new();
    for node in NODES {
        for v4 in [true, false] {
            for a in store.list_affinities("host", node, v4).expect("list") {
                out.insert((node.to_string(), a.value.cidr), a.value.state);
            }
        }
    }
    out
}

/// Everything the raw store must agree on after a step.
fn check_store(store: &MemStore, model: &Model) -> Result<(), TestCaseError> {
    assert_blocks_consistent(store);
    let mut allocated: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
    let mut per_handle: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for v4 in [true, false] {
        let pool = pool_of(v4);
        let all = blocks(store, v4);
        for (i, b) in all.iter().enumerate() {
            prop_assert!(pool.cidr.contains(b.cidr.network()), "{} outside", b.cidr);
            prop_assert_eq!(b.cidr.prefix(), pool.block_size);
            for other in &all[i + 1..] {
                prop_assert!(
                    !b.cidr.contains(other.cidr.network())
                        && !other.cidr.contains(b.cidr.network()),
                    "{} overlaps {}",
                    b.cidr,
                    other.cidr
                );
            }
            for (ordinal, attr) in b.allocations.iter().enumerate() {
                let Some(attr) = attr else { continue };
                let handle = b.attributes[*attr].handle_id.clone();
                if let Some(h) = &handle {
                    *per_handle
                        .entry(h.clone())
                        .or_default()
                        .entry(b.cidr.to_string())
                        .or_insert(0) += 1;
                }
                allocated.insert(b.ip_at(ordinal), handle);
            }
            // An affine block is backed by a confirmed affinity of its node.
            if let Some(node) = b.affinity.as_deref().and_then(|a| a.strip_prefix("host:")) {
                let state = store
                    .get_affinity("host", node, &b.cidr)
                    .expect("get")
                    .map(|a| a.value.state);
                prop_assert_eq!(state, Some(AffinityState::Confirmed), "{}", b.cidr);
            }
        }
    }
    let expected: BTreeMap<IpAddr, Option<String>> = model
        .held
        .iter()
        .map(|(a, h)| (*a, Some(h.clone())))
        .collect();
    prop_assert_eq!(&allocated, &expected, "store and callers disagree");
    // Handle objects count exactly what their blocks hold, and vanish when empty.
    let stored: BTreeMap<String, BTreeMap<String, u64>> = store
        .list_handles()
        .expect("list")
        .into_iter()
        .map(|h| (h.value.handle_id, h.value.block))
        .collect();
    prop_assert_eq!(stored, per_handle);
    // No affinity without its block.
    for (node, cidr) in affinity_states(store).keys() {
        let b = block(store, cidr);
        prop_assert!(
            b.as_ref().and_then(|b| b.affinity.as_deref()) == Some(&format!("host:{node}")),
            "dangling affinity {node} {cidr}"
        );
    }
    Ok(())
}

fn apply(store: &MemStore, model: &mut Model, op: &Op, strict: bool) -> Result<(), TestCaseError> {
    match op {
        Op::Assign {
            node,
            num4,
            num6,
            handle,
        } => {
            let handle = handle_name(*handle);
            let req = AutoAssign {
                num4: *num4,
                num6: *num6,
                handle_id: handle.clone(),
                ..AutoAssign::default()
            };
            let got = Ipam::new(store, NODES[*node])
                .auto_assign(&req)
                .map_err(|e| TestCaseError::fail(format!("assign: {e}")))?;
            prop_assert!(got.ipv4.len() <= *num4 && got.ipv6.len() <= *num6);
            for (a, v4) in got
                .ipv4
                .iter()
                .map(|a| (a, true))
                .chain(got.ipv6.iter().map(|a| (a, false)))
            {
                prop_assert_eq!(a.prefix(), pool_of(v4).block_size);
                model.add(a.ip(), &handle)?;
            }
            if !strict {
                // Without strict affinity a short answer means the pool is really full.
                let total = |v4: bool| model.held.keys().filter(|a| a.is_ipv4() == v4).count();
                if got.ipv4.len() < *num4 {
                    prop_assert_eq!(total(true), 32);
                }
                if got.ipv6.len() < *num6 {
                    prop_assert_eq!(total(false), 16);
                }
            }
        }
        Op::AssignIp {
            node,
            v4,
            offset: o,
            handle,
        } => {
            let pool = pool_of(*v4);
            let size = if *v4 { 32 } else { 16 };
            let addr = offset(pool.cidr.network(), u128::from(*o) % size);
            let handle = handle_name(*handle);
            let result = Ipam::new(store, NODES[*node]).assign_ip(addr, &handle, &BTreeMap::new());
            match result {
                Ok(a) => {
                    prop_assert_eq!(a.ip(), addr);
                    model.add(addr, &handle)?;
                }
                Err(IpamError::AlreadyAssigned(a)) => {
                    prop_assert_eq!(a, addr);
                    prop_assert!(model.held.contains_key(&addr));
                }
                Err(IpamError::AffinityMismatch { .. }) if strict => {}
                Err(e) => return Err(TestCaseError::fail(format!("assign_ip {addr}: {e}"))),
            }
        }
        Op::ReleaseHandle { node, handle } => {
            let handle = handle_name(*handle);
            let had = model.held.values().any(|h| *h == handle);
            let mut expected: Vec<IpAddr> = model
                .held
                .iter()
                .filter(|(_, h)| **h == handle)
                .map(|(ip, _)| *ip)
                .collect();
            match Ipam::new(store, NODES[*node]).release_by_handle(&handle) {
                Ok(mut released) => {
                    prop_assert!(had, "released a handle nobody held");
                    released.sort();
                    expected.sort();
                    prop_assert_eq!(released, expected, "released what the handle held");
                }
                Err(IpamError::HandleNotFound(_)) => prop_assert!(!had, "lost handle {handle}"),
                Err(e) => return Err(TestCaseError::fail(format!("release: {e}"))),
            }
            model.held.retain(|_, h| *h != handle);
        }
        Op::ReleaseIps { node, picks, extra } => {
            let held: Vec<IpAddr> = model.held.keys().copied().collect();
            let mut ips: Vec<IpAddr> = if held.is_empty() {
                Vec::new()
            } else {
                picks.iter().map(|p| held[p % held.len()]).collect()
            };
            let maybe = offset(pool_of(true).cidr.network(), u128::from(*extra));
            ips.push(maybe);
            let not_allocated = Ipam::new(store, NODES[*node])
                .release_ips(&ips)
                .map_err(|e| TestCaseError::fail(format!("release_ips: {e}")))?;
            let expected: BTreeSet<IpAddr> = ips
                .iter()
                .filter(|a| !model.held.contains_key(a))
                .copied()
                .collect();
            prop_assert_eq!(not_allocated.into_iter().collect::<BTreeSet<_>>(), expected);
            for a in &ips {
                model.held.remove(a);
            }
        }
        Op::Conflict { block: true, which } => {
            let all: Vec<IpNetwork> = blocks(store, true)
                .into_iter()
                .chain(blocks(store, false))
                .map(|b| b.cidr)
                .collect();
            if let Some(cidr) = all.get(which % all.len().max(1)) {
                store.kv.inject_conflict(&codec::block_key(cidr));
            }
        }
        Op::Conflict {
            block: false,
            which,
        } => {
            store
                .kv
                .inject_conflict(&codec::handle_key(&handle_name(*which as u8 % 6)));
        }
    }
    Ok(())
}

fn run(strict: bool, ops: &[Op]) -> Result<(MemStore, Model), TestCaseError> {
    let store = store_with(&[POOL4, POOL6]);
    set_config(&store, strict, true, 0);
    let mut model = Model::default();
    for op in ops {
        let before = affinity_states(&store);
        apply(&store, &mut model, op, strict)?;
        let after = affinity_states(&store);
        for (key, state) in &before {
            if let Some(now) = after.get(key) {
                prop_assert!(now >= state, "{key:?} went from {state:?} back to {now:?}");
            }
        }
        check_store(&store, &model)?;
    }
    Ok((store, model))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_keep_the_store_consistent(
        ops in (1..=3usize).prop_flat_map(|n| proptest::collection::vec(op(n), 1..30)),
        strict in any::<bool>(),
    ) {
        run(strict, &ops)?;
    }

    #[test]
    fn released_addresses_can_all_be_handed_out_again(
        (nodes, ops) in (1..=3usize).prop_flat_map(|n| (Just(n), proptest::collection::vec(op(n), 1..20))),
    ) {
        let (store, model) = run(false, &ops)?;
        // Give everything back, by handle.
        let handles: BTreeSet<String> = model.held.values().cloned().collect();
        for h in handles {
            Ipam::new(&store, NODES[0]).release_by_handle(&h)
                .map_err(|e| TestCaseError::fail(format!("release {h}: {e}")))?;
        }
        prop_assert!(store.list_handles().expect("list").is_empty());
        // One node can now take the whole pool (its own blocks, new ones, and borrowing).
        let got = Ipam::new(&store, NODES[nodes - 1])
            .auto_assign(&AutoAssign { num4: 32, num6: 16, handle_id: "all".into(), ..AutoAssign::default() })
            .map_err(|e| TestCaseError::fail(format!("assign all: {e}")))?;
        prop_assert_eq!(got.ipv4.len(), 32);
        prop_assert_eq!(got.ipv6.len(), 16);
        let distinct: BTreeSet<IpAddr> = got.ipv4.iter().chain(&got.ipv6).map(|a| a.ip()).collect();
        prop_assert_eq!(distinct.len(), 48);
    }
}
