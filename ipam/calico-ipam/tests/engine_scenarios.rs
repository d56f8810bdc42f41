//! libcalico-go `lib/ipam` scenarios, re-created against the in-memory store.

#[path = "engine_fixture.rs"]
mod fixture;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_ipam::engine::{AutoAssign, Ipam, IpamError};
use calico_ipam::model::{AffinityState, BlockAffinity, IpamBlock};
use calico_ipam::store::codec;
use calico_ipam::store::kv::Kv;
use calico_ipam::store::Store;
use fixture::*;

fn addrs(nets: &[ipnetwork::IpNetwork]) -> Vec<IpAddr> {
    nets.iter().map(|n| n.ip()).collect()
}

#[test]
fn one_address_from_a_new_affine_block() {
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    let got = ipam.auto_assign(&v4(1, "net.c1")).expect("assign");
    assert_eq!(got.ipv4.len(), 1);
    assert!(got.ipv6.is_empty() && got.messages.is_empty());
    let a = got.ipv4[0];
    assert_eq!(a.prefix(), 26, "the block's prefix");
    assert!(net("10.0.0.0/24").contains(a.ip()));

    let b = block_of(&store, a.ip()).expect("block");
    assert_eq!(b.affinity.as_deref(), Some("host:n1"));
    assert_eq!(b.cidr.network(), a.network());
    assert_eq!(
        affinity_state(&store, "n1", &b.cidr),
        Some(AffinityState::Confirmed)
    );
    assert_eq!(
        handle_counts(&store, "net.c1"),
        Some(BTreeMap::from([(b.cidr.to_string(), 1)]))
    );
    let (handle, attrs) = ipam.attributes_of(a.ip()).expect("read").expect("held");
    assert_eq!(handle.as_deref(), Some("net.c1"));
    assert_eq!(attrs.get("node").map(String::as_str), Some("n1"));
    // The first allocation of a fresh block records the block's sequence number.
    assert_eq!(b.sequence_number_for_allocation.len(), 1);

    // Calico's default config was created on first use.
    let raw = store.kv.dump();
    assert_eq!(
        raw.get(&codec::ipam_config_key()).map(|v| v.as_slice()),
        Some(br#"{"auto_allocate_blocks":true}"#.as_slice())
    );
    assert_blocks_consistent(&store);
}

#[test]
fn many_addresses_span_several_blocks_of_this_node() {
    let store = store_with(&[("10.0.0.0/24", 28)]);
    let ipam = Ipam::new(&store, "n1");
    let got = ipam.auto_assign(&v4(40, "net.many")).expect("assign");
    assert_eq!(got.ipv4.len(), 40);
    let distinct: BTreeSet<_> = got.ipv4.iter().map(|n| n.ip()).collect();
    assert_eq!(distinct.len(), 40);
    let all = blocks(&store, true);
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|b| b.affinity.as_deref() == Some("host:n1")));
    let counts = handle_counts(&store, "net.many").expect("handle");
    assert_eq!(counts.values().sum::<u64>(), 40);
    assert_eq!(counts.len(), 3);
    // One attribute per block: one request shares it.
    assert!(all.iter().all(|b| b.attributes.len() == 1));
}

#[test]
fn release_then_reallocate_with_the_same_handle() {
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    let first = ipam.auto_assign(&v4(1, "net.c1")).expect("assign").ipv4;
    ipam.release_by_handle("net.c1").expect("release");
    assert_eq!(
        handle_counts(&store, "net.c1"),
        None,
        "empty handle deleted"
    );
    assert_eq!(ipam.attributes_of(first[0].ip()).expect("read"), None);
    let b = block_of(&store, first[0].ip()).expect("affine block kept when empty");
    assert!(b.is_empty());
    assert_eq!(b.affinity.as_deref(), Some("host:n1"));

    let second = ipam
        .auto_assign(&v4(1, "net.c1"))
        .expect("assign again")
        .ipv4;
    // The released ordinal went to the tail: a different address comes next.
    assert_ne!(first, second);
    assert_eq!(blocks(&store, true).len(), 1, "same block reused");
    assert!(matches!(
        ipam.release_by_handle("net.nothing"),
        Err(IpamError::HandleNotFound(_))
    ));
}

#[test]
fn released_addresses_are_reused_first_in_first_out() {
    let store = store_with(&[("10.0.0.0/29", 29)]);
    let ipam = Ipam::new(&store, "n1");
    let mut got = Vec::new();
    for i in 0..8 {
        got.push(
            ipam.auto_assign(&v4(1, &format!("h{i}")))
                .expect("assign")
                .ipv4[0],
        );
    }
    assert_eq!(got[0].ip(), ip("10.0.0.0"));
    assert_eq!(got[7].ip(), ip("10.0.0.7"));
    ipam.release_by_handle("h3").expect("release");
    ipam.release_by_handle("h1").expect("release");
    let a = ipam.auto_assign(&v4(1, "x")).expect("assign").ipv4;
    let b = ipam.auto_assign(&v4(1, "y")).expect("assign").ipv4;
    assert_eq!(addrs(&a), [ip("10.0.0.3")]);
    assert_eq!(addrs(&b), [ip("10.0.0.1")]);
    let full = ipam
        .auto_assign(&v4(1, "z"))
        .expect("short is not an error");
    assert!(full.ipv4.is_empty());
    assert_eq!(full.messages, ["No IPs available in pools: [10.0.0.0/29]"]);
}

#[test]
fn never_from_disabled_or_deleted_pools() {
    let store = store_with(&[("10.1.0.0/24", 26)]);
    let mut disabled = pool("10.0.0.0/24", 26);
    disabled.disabled = true;
    add_pool(&store, &disabled);
    let ipam = Ipam::new(&store, "n1");
    let got = ipam.auto_assign(&v4(70, "h")).expect("assign").ipv4;
    assert_eq!(got.len(), 70);
    assert!(got.iter().all(|a| net("10.1.0.0/24").contains(a.ip())));

    // The pool goes away and a new one comes: the old (empty) affine block is not used,
    // and its affinity and block are cleaned up.
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    let old = ipam.auto_assign(&v4(1, "old")).expect("assign").ipv4;
    ipam.release_by_handle("old").expect("release");
    delete_pool(&store, &pool("10.0.0.0/24", 26).name);
    add_pool(&store, &pool("10.2.0.0/24", 26));
    let new = ipam.auto_assign(&v4(1, "new")).expect("assign").ipv4;
    assert!(net("10.2.0.0/24").contains(new[0].ip()));
    let old_block = net(&format!("{}/26", old[0].network()));
    assert_eq!(
        block(&store, &old_block),
        None,
        "empty block of a gone pool deleted"
    );
    assert_eq!(affinity_state(&store, "n1", &old_block), None);

    // With no pool at all.
    delete_pool(&store, &pool("10.2.0.0/24", 26).name);
    let err = ipam.auto_assign(&v4(1, "none")).expect_err("no pool");
    assert_eq!(err.to_string(), "cannot find a qualified ippool");
}

#[test]
fn requested_pools_and_family_errors() {
    let store = store_with(&[
        ("10.0.0.0/24", 26),
        ("10.1.0.0/24", 26),
        ("fd00::/120", 122),
    ]);
    let mut off = pool("10.2.0.0/24", 26);
    off.disabled = true;
    add_pool(&store, &off);
    let ipam = Ipam::new(&store, "n1");

    let mut req = v4(1, "h");
    req.pools4 = vec![net("10.1.0.0/24")];
    let got = ipam.auto_assign(&req).expect("assign").ipv4;
    assert!(net("10.1.0.0/24").contains(got[0].ip()));

    // Same block reused for the next request of that pool.
    let again = ipam.auto_assign(&req).expect("assign").ipv4;
    assert_eq!(got[0].network(), again[0].network());

    for (pools, text) in [
        (
            vec![net("10.9.0.0/24")],
            "the given pool (10.9.0.0/24) does not exist, or is not enabled",
        ),
        (
            vec![net("10.2.0.0/24")],
            "the given pool (10.2.0.0/24) does not exist, or is not enabled",
        ),
        (
            vec![net("10.0.0.0/24"), net("10.9.0.0/24")],
            "the given pool (10.9.0.0/24) does not exist, or is not enabled",
        ),
        (
            vec![net("fd00::/120")],
            "provided IPv4 IPPools list contains one or more IPv6 IPPools",
        ),
    ] {
        let mut req = v4(1, "bad");
        req.pools4 = pools;
        let err = ipam.auto_assign(&req).expect_err("refused");
        assert_eq!(err.to_string(), text);
    }
    let mut req = AutoAssign {
        num6: 1,
        ..v4(0, "bad6")
    };
    req.pools6 = vec![net("10.0.0.0/24")];
    assert!(matches!(
        ipam.auto_assign(&req),
        Err(IpamError::WrongFamilyPool {
            wanted: 6,
            other: 4
        })
    ));
    assert_eq!(
        handle_counts(&store, "bad"),
        None,
        "failed requests leave nothing"
    );

    // Dual stack: v4 then v6, each with its block's prefix.
    let dual = ipam
        .auto_assign(&AutoAssign {
            num6: 1,
            ..v4(1, "dual")
        })
        .expect("assign");
    assert_eq!(dual.ipv4.len(), 1);
    assert_eq!(dual.ipv6.len(), 1);
    assert_eq!(dual.ipv6[0].prefix(), 122);
    assert!(net("fd00::/120").contains(dual.ipv6[0].ip()));
}

#[test]
fn a_v6_failure_releases_the_v4_part() {
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    let err = ipam
        .auto_assign(&AutoAssign {
            num6: 1,
            ..v4(1, "dual")
        })
        .expect_err("no v6 pool");
    assert!(matches!(err, IpamError::NoQualifiedPool));
    assert_eq!(handle_counts(&store, "dual"), None);
    assert!(blocks(&store, true).iter().all(IpamBlock::is_empty));
}

#[test]
fn block_limit_stops_claims_and_borrowing() {
    let store = store_with(&[("10.0.0.0/28", 30)]);
    set_config(&store, false, true, 1);
    // Another node's block with free space: must not be borrowed from at the limit.
    Ipam::new(&store, "n2")
        .auto_assign(&v4(1, "other"))
        .expect("n2 assign");
    let ipam = Ipam::new(&store, "n1");
    let got = ipam.auto_assign(&v4(4, "fill")).expect("one block's worth");
    assert_eq!(got.ipv4.len(), 4);
    let err = ipam.auto_assign(&v4(1, "more")).expect_err("limit");
    assert!(matches!(err, IpamError::BlockLimit));
    assert_eq!(
        err.to_string(),
        "cannot allocate new block due to per host block limit"
    );
    // A request spanning the limit leaves nothing behind.
    ipam.release_by_handle("fill").expect("release");
    assert!(matches!(
        ipam.auto_assign(&v4(5, "span")),
        Err(IpamError::BlockLimit)
    ));
    assert_eq!(handle_counts(&store, "span"), None);

    // The request's own limit, below the global one.
    let store = store_with(&[("10.0.0.0/28", 30)]);
    let ipam = Ipam::new(&store, "n1");
    let mut req = v4(5, "req");
    req.max_blocks_per_host = 1;
    assert!(matches!(ipam.auto_assign(&req), Err(IpamError::BlockLimit)));
    req.max_blocks_per_host = 2;
    assert_eq!(ipam.auto_assign(&req).expect("two blocks").ipv4.len(), 5);
}

#[test]
fn no_auto_allocation_means_no_claims_and_no_borrowing() {
    let store = store_with(&[("10.0.0.0/28", 30)]);
    Ipam::new(&store, "n2")
        .auto_assign(&v4(1, "other"))
        .expect("n2 assign");
    store
        .kv
        .delete(
            &codec::ipam_config_key(),
            &store
                .get_ipam_config()
                .expect("get")
                .expect("config")
                .revision,
        )
        .expect("delete config");
    set_config(&store, false, false, 0);
    let ipam = Ipam::new(&store, "n1");
    let err = ipam.auto_assign(&v4(1, "h")).expect_err("no claims");
    assert!(matches!(err, IpamError::NoBlockClaim));
    assert_eq!(err.to_string(), "failed to find or claim a block");
    assert_eq!(blocks(&store, true).len(), 1);
}

/// n2 owns one block with free space; n1 fills the other block of a two-block pool.
fn two_nodes_one_free_slot(strict: bool) -> MemStore {
    let store = store_with(&[("10.0.0.0/28", 29)]);
    set_config(&store, strict, true, 0);
    Ipam::new(&store, "n2")
        .auto_assign(&v4(1, "n2-pod"))
        .expect("n2 assign");
    Ipam::new(&store, "n1")
        .auto_assign(&v4(8, "n1-pods"))
        .expect("n1 fills its block");
    store
}

#[test]
fn strict_affinity_never_borrows() {
    let store = two_nodes_one_free_slot(true);
    let got = Ipam::new(&store, "n1")
        .auto_assign(&v4(1, "extra"))
        .expect("short is not an error");
    assert!(got.ipv4.is_empty());
    assert_eq!(
        got.messages,
        ["No more free affine blocks and strict affinity enabled"]
    );
    assert_eq!(handle_counts(&store, "extra"), None);
}

#[test]
fn borrowing_from_another_nodes_block_when_not_strict() {
    let store = two_nodes_one_free_slot(false);
    let ipam = Ipam::new(&store, "n1");
    let got = ipam.auto_assign(&v4(1, "borrowed")).expect("assign").ipv4;
    assert_eq!(got.len(), 1);
    let b = block_of(&store, got[0].ip()).expect("block");
    assert_eq!(
        b.affinity.as_deref(),
        Some("host:n2"),
        "borrowed, not claimed"
    );
    assert_eq!(affinity_state(&store, "n1", &b.cidr), None);
    ipam.release_by_handle("borrowed").expect("release");
    let b = block(&store, &b.cidr).expect("affine block stays");
    assert_eq!(b.affinity.as_deref(), Some("host:n2"));
    assert_eq!(b.free_count(), 7);
}

#[test]
fn node_selectors_choose_pools() {
    let store = zoned_pools();
    add_node(&store, "a1", &[("zone", "a")]);
    add_node(&store, "b1", &[("zone", "b"), ("rack", "r1")]);
    let got_a = Ipam::new(&store, "a1").auto_assign(&v4(1, "a")).expect("a");
    let got_b = Ipam::new(&store, "b1").auto_assign(&v4(1, "b")).expect("b");
    assert!(net("10.1.0.0/24").contains(got_a.ipv4[0].ip()));
    assert!(net("10.2.0.0/24").contains(got_b.ipv4[0].ip()));
    // No Node object: no labels, so neither pool selects it.
    let err = Ipam::new(&store, "ghost")
        .auto_assign(&v4(1, "g"))
        .expect_err("no pool");
    assert_eq!(err.to_string(), "no configured Calico pools for node ghost");
    // Explicitly requested pools ignore the selector.
    let mut req = v4(1, "g");
    req.pools4 = vec![net("10.1.0.0/24")];
    assert_eq!(
        Ipam::new(&store, "ghost")
            .auto_assign(&req)
            .expect("requested")
            .ipv4
            .len(),
        1
    );

    // A selector that stops matching: the node's empty block and affinity go on release.
    let a_block = block_of(&store, got_a.ipv4[0].ip()).expect("block").cidr;
    let mut pa = pool("10.1.0.0/24", 26);
    pa.name = "pool-a".into();
    pa.node_selector = "zone == 'c'".into();
    replace_pool(&store, &pa);
    Ipam::new(&store, "a1")
        .release_by_handle("a")
        .expect("release");
    assert_eq!(block(&store, &a_block), None);
    assert_eq!(affinity_state(&store, "a1", &a_block), None);

    // An unparseable selector names its pool.
    let mut bad = pool("10.3.0.0/24", 26);
    bad.name = "pool-bad".into();
    bad.node_selector = "zone == ".into();
    add_pool(&store, &bad);
    let err = Ipam::new(&store, "b1")
        .auto_assign(&v4(1, "x"))
        .expect_err("bad selector");
    let text = err.to_string();
    assert!(
        text.contains("pool-bad") && text.contains("zone == "),
        "{text}"
    );
}

/// Two pools for two zones; the second needs a rack label too.
fn zoned_pools() -> MemStore {
    let store = store_with(&[]);
    for (name, cidr, selector) in [
        ("pool-a", "10.1.0.0/24", "zone == 'a'"),
        ("pool-b", "10.2.0.0/24", "zone in {'b', 'c'} && has(rack)"),
    ] {
        let mut p = pool(cidr, 26);
        p.name = name.into();
        p.node_selector = selector.into();
        add_pool(&store, &p);
    }
    store
}

#[test]
fn assign_ip_exact_duplicate_and_outside_pools() {
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    let attrs = BTreeMap::from([("pod".to_string(), "p".to_string())]);
    let got = ipam
        .assign_ip(ip("10.0.0.70"), "net.c1", &attrs)
        .expect("assign");
    assert_eq!(got.to_string(), "10.0.0.70/26");
    let b = block(&store, &net("10.0.0.64/26")).expect("claimed block");
    assert_eq!(b.affinity.as_deref(), Some("host:n1"));
    assert!(!b.unallocated.contains(&6));
    assert_eq!(
        affinity_state(&store, "n1", &b.cidr),
        Some(AffinityState::Confirmed)
    );

    let err = ipam
        .assign_ip(ip("10.0.0.70"), "net.c2", &attrs)
        .expect_err("taken");
    assert_eq!(
        err.to_string(),
        "resource already exists: 10.0.0.70: Address already assigned in block"
    );
    let err = ipam
        .assign_ip(ip("192.168.0.1"), "net.c3", &attrs)
        .expect_err("outside");
    assert_eq!(
        err.to_string(),
        "The provided IP address is not in a configured pool"
    );
    ipam.release_by_handle("net.c1").expect("release");
    ipam.assign_ip(ip("10.0.0.70"), "net.c1", &attrs)
        .expect("same address again after release");

    // A pool that does not allow workloads.
    let mut tunnel = pool("10.5.0.0/24", 26);
    tunnel.allowed_uses = vec!["Tunnel".into()];
    add_pool(&store, &tunnel);
    assert!(matches!(
        ipam.assign_ip(ip("10.5.0.1"), "t", &attrs),
        Err(IpamError::UseNotAllowed { .. })
    ));
    // ... and automatic assignment does not use it either.
    let mut req = v4(1, "t");
    req.pools4 = vec![net("10.5.0.0/24")];
    assert!(matches!(
        ipam.auto_assign(&req),
        Err(IpamError::NoPoolForUse(_))
    ));
}

#[test]
fn assign_ip_in_another_nodes_block() {
    let store = store_with(&[("10.0.0.0/24", 26)]);
    Ipam::new(&store, "n2")
        .assign_ip(ip("10.0.0.1"), "n2", &BTreeMap::new())
        .expect("n2");
    let n1 = Ipam::new(&store, "n1");
    n1.assign_ip(ip("10.0.0.2"), "n1", &BTreeMap::new())
        .expect("allowed without strict affinity");
    let strict = store_with(&[("10.0.0.0/24", 26)]);
    set_config(&strict, true, true, 0);
    Ipam::new(&strict, "n2")
        .assign_ip(ip("10.0.0.1"), "n2", &BTreeMap::new())
        .expect("n2");
    let err = Ipam::new(&strict, "n1")
        .assign_ip(ip("10.0.0.2"), "n1", &BTreeMap::new())
        .expect_err("strict");
    assert_eq!(
        err.to_string(),
        "Block affinity (host:n2) does not match provided (host:n1)"
    );
}

#[test]
fn release_by_address() {
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    let got = addrs(&ipam.auto_assign(&v4(3, "h")).expect("assign").ipv4);
    let not_allocated = ipam
        .release_ips(&[got[0], got[0], ip("10.0.0.200"), ip("192.168.1.1")])
        .expect("release");
    assert_eq!(not_allocated, [ip("192.168.1.1"), ip("10.0.0.200")]);
    assert_eq!(ipam.attributes_of(got[0]).expect("read"), None);
    let counts = handle_counts(&store, "h").expect("still holds two");
    assert_eq!(counts.values().sum::<u64>(), 2);
    assert_eq!(ipam.release_ips(&got).expect("release"), [got[0]]);
    assert_eq!(
        handle_counts(&store, "h"),
        None,
        "handle deleted when empty"
    );
    assert_blocks_consistent(&store);
}

#[test]
fn emptied_unaffine_blocks_are_deleted_affine_ones_kept() {
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let orphan = IpamBlock::new(net("10.0.0.128/26"), None, 1);
    store.create_block(&orphan).expect("create");
    let ipam = Ipam::new(&store, "n1");
    ipam.assign_ip(ip("10.0.0.130"), "o", &BTreeMap::new())
        .expect("assign into unaffine block");
    let own = ipam.auto_assign(&v4(1, "own")).expect("assign").ipv4;
    ipam.release_by_handle("o").expect("release");
    assert_eq!(
        block(&store, &orphan.cidr),
        None,
        "unaffine and empty: deleted"
    );
    ipam.release_ips(&addrs(&own)).expect("release");
    let b = block_of(&store, own[0].ip()).expect("affine and empty: kept");
    assert!(b.is_empty());
}

#[test]
fn handles_are_sanitized_and_over_estimates_cleaned() {
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    ipam.auto_assign(&v4(1, "net.c1\r\neth0")).expect("assign");
    assert!(handle_counts(&store, "net.c1").is_some());
    ipam.release_by_handle("net.c1\r\neth0").expect("release");
    assert_eq!(handle_counts(&store, "net.c1"), None);

    // A handle that claims addresses in a block that no longer has them.
    let got = ipam.auto_assign(&v4(1, "net.c2")).expect("assign").ipv4;
    ipam.release_ips(&addrs(&got)).expect("release by address");
    let handle = calico_ipam::model::IpamHandle {
        handle_id: "net.c3".into(),
        block: BTreeMap::from([("10.0.0.192/26".to_string(), 2)]),
        deleted: false,
        extra: Default::default(),
    };
    store.create_handle(&handle).expect("create");
    ipam.release_by_handle("net.c3").expect("release");
    assert_eq!(handle_counts(&store, "net.c3"), None);
}

#[test]
fn injected_conflicts_are_retried() {
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    let first = ipam.auto_assign(&v4(1, "h1")).expect("assign").ipv4;
    let cidr = net(&format!("{}/26", first[0].network()));
    for _ in 0..5 {
        store.kv.inject_conflict(&codec::block_key(&cidr));
    }
    store.kv.inject_conflict(&codec::handle_key("h1"));
    let second = ipam.auto_assign(&v4(2, "h1")).expect("assign").ipv4;
    assert_eq!(second.len(), 2);
    assert_eq!(
        handle_counts(&store, "h1"),
        Some(BTreeMap::from([(cidr.to_string(), 3)])),
        "counted once despite the retries"
    );
    for _ in 0..3 {
        store.kv.inject_conflict(&codec::block_key(&cidr));
    }
    store.kv.inject_conflict(&codec::handle_key("h1"));
    ipam.release_by_handle("h1").expect("release");
    assert_eq!(handle_counts(&store, "h1"), None);
    assert!(block(&store, &cidr).expect("kept").is_empty());

    // A conflict while confirming a claim: the claim is taken over and confirmed.
    let store = store_with(&[("10.0.0.0/24", 26)]);
    let probe = Ipam::new(&store, "n1")
        .auto_assign(&v4(1, "probe"))
        .expect("assign")
        .ipv4;
    let cidr = net(&format!("{}/26", probe[0].network()));
    // Same node, fresh store: the first claim goes to the same block.
    let store2 = store_with(&[("10.0.0.0/24", 26)]);
    store2
        .kv
        .inject_conflict(&codec::affinity_key("host", "n1", &cidr));
    let ipam2 = Ipam::new(&store2, "n1");
    let got = ipam2.auto_assign(&v4(1, "c")).expect("assign").ipv4;
    assert!(cidr.contains(got[0].ip()));
    assert_eq!(
        affinity_state(&store2, "n1", &cidr),
        Some(AffinityState::Confirmed)
    );
    let b = block(&store2, &cidr).expect("block");
    assert_eq!(b.affinity.as_deref(), Some("host:n1"));

    // Too many conflicts: the documented error, nothing half-written.
    let store3 = store_with(&[("10.0.0.0/24", 26)]);
    let ipam3 = Ipam::new(&store3, "n1");
    ipam3.auto_assign(&v4(1, "a")).expect("assign");
    for _ in 0..200 {
        store3.kv.inject_conflict(&codec::block_key(&cidr));
    }
    let err = ipam3.auto_assign(&v4(1, "b")).expect_err("exhausted");
    assert_eq!(
        err.to_string(),
        "Max retries hit - excessive concurrent IPAM requests"
    );
    assert_eq!(handle_counts(&store3, "b"), None);
}

#[test]
fn two_nodes_get_different_blocks() {
    let store = store_with(&[("10.0.0.0/16", 26)]);
    let a = Ipam::new(&store, "node-a")
        .auto_assign(&v4(1, "a"))
        .expect("a");
    let b = Ipam::new(&store, "node-b")
        .auto_assign(&v4(1, "b"))
        .expect("b");
    assert_ne!(a.ipv4[0].network(), b.ipv4[0].network());
    // Each node keeps using its own block.
    let a2 = Ipam::new(&store, "node-a")
        .auto_assign(&v4(1, "a2"))
        .expect("a");
    assert_eq!(a.ipv4[0].network(), a2.ipv4[0].network());
}

#[test]
fn dangling_and_stale_affinities() {
    let store = store_with(&[("10.0.0.0/28", 30)]);
    // An affinity whose block was never created: the block is claimed through it.
    let dangling = BlockAffinity::host("n1", net("10.0.0.8/30"), AffinityState::Pending);
    store.create_affinity(&dangling).expect("create");
    // An affinity of n1 to a block owned by n2: removed, not used.
    store
        .create_block(&IpamBlock::new(
            net("10.0.0.4/30"),
            Some("host:n2".into()),
            1,
        ))
        .expect("create");
    let stale = BlockAffinity::host("n1", net("10.0.0.4/30"), AffinityState::Confirmed);
    store.create_affinity(&stale).expect("create");
    // A claim that stopped half-way: pending affinity, block created. Taken over.
    let half = IpamBlock::new(net("10.0.0.0/30"), Some("host:n1".into()), 1);
    store.create_block(&half).expect("create");
    let pending = BlockAffinity::host("n1", half.cidr, AffinityState::Pending);
    store.create_affinity(&pending).expect("create");
    let ipam = Ipam::new(&store, "n1");
    let got = ipam.auto_assign(&v4(8, "h")).expect("assign").ipv4;
    assert_eq!(got.len(), 8, "{got:?}");
    assert_eq!(
        affinity_state(&store, "n1", &half.cidr),
        Some(AffinityState::Confirmed)
    );
    let taken_over = block(&store, &half.cidr).expect("block");
    assert!(
        taken_over.sequence_number >= 3,
        "rewritten, then allocated from"
    );
    assert_eq!(
        affinity_state(&store, "n1", &net("10.0.0.8/30")),
        Some(AffinityState::Confirmed)
    );
    assert_eq!(affinity_state(&store, "n1", &net("10.0.0.4/30")), None);
    assert!(got.iter().all(|a| !net("10.0.0.4/30").contains(a.ip())));
}

#[test]
fn concurrent_requests_never_share_an_address() {
    let store = store_with(&[("10.0.0.0/24", 28)]);
    let results: Vec<Vec<IpAddr>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    let ipam = Ipam::new(store, if t % 2 == 0 { "n1" } else { "n2" });
                    (0..15)
                        .flat_map(|i| {
                            ipam.auto_assign(&v4(1, &format!("t{t}-{i}")))
                                .expect("assign")
                                .ipv4
                        })
                        .map(|n| n.ip())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let all: Vec<IpAddr> = results.into_iter().flatten().collect();
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!(all.len(), 60);
    assert_eq!(distinct.len(), 60);
    assert_blocks_consistent(&store);
}

#[test]
fn ipam_config_is_read_or_defaulted() {
    let store = store_with(&[]);
    set_config(&store, true, false, 7);
    let config = Ipam::new(&store, "n1").ipam_config().expect("config");
    assert!(config.strict_affinity && !config.auto_allocate_blocks);
    assert_eq!(config.max_blocks_per_host, 7);
    let empty = store_with(&[]);
    let config = Ipam::new(&empty, "n1").ipam_config().expect("config");
    assert!(!config.strict_affinity && config.auto_allocate_blocks);
    assert!(empty.get_ipam_config().expect("get").is_some(), "persisted");
}

#[test]
fn racing_claims_and_releases_from_several_nodes() {
    let store = store_with(&[("10.0.0.0/26", 29)]);
    let held: Vec<Vec<IpAddr>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..6)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    let ipam = Ipam::new(store, ["n1", "n2", "n3"][t % 3]);
                    let mut kept = Vec::new();
                    for i in 0..12 {
                        let handle = format!("t{t}-{i}");
                        let got = ipam.auto_assign(&v4(1, &handle)).expect("assign").ipv4;
                        if i % 2 == 0 {
                            ipam.release_by_handle(&handle).expect("release");
                        } else {
                            kept.extend(got.iter().map(|n| n.ip()));
                        }
                    }
                    kept
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("thread"))
            .collect()
    });
    let all: Vec<IpAddr> = held.into_iter().flatten().collect();
    assert_eq!(all.len(), 36);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 36);
    assert_blocks_consistent(&store);
    let allocated: usize = blocks(&store, true)
        .iter()
        .map(|b| b.allocations.iter().flatten().count())
        .sum();
    assert_eq!(allocated, 36, "released addresses are free in the store");
    for b in blocks(&store, true) {
        if let Some(node) = b.affinity.as_deref().and_then(|a| a.strip_prefix("host:")) {
            assert_eq!(
                affinity_state(&store, node, &b.cidr),
                Some(AffinityState::Confirmed)
            );
        }
    }
}
