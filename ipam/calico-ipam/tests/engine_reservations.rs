//! IPReservations against the in-memory store: automatic assignment never hands out a
//! reserved address (own blocks, new claims, borrowing; both families), blocks whose free
//! addresses are all reserved count as full, and an address asked for by name is still
//! given, as libcalico-go's `AssignIP` gives it.

#[path = "engine_fixture.rs"]
mod fixture;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_ipam::engine::{AutoAssign, Ipam};
use calico_ipam::model::IpReservation;
use calico_ipam::store::codec;
use calico_ipam::store::kv::Kv;
use fixture::*;

fn reserve(store: &MemStore, name: &str, cidrs: &[&str]) {
    let r = IpReservation {
        name: name.into(),
        reserved_cidrs: cidrs.iter().map(|c| net(c)).collect(),
        extra: Default::default(),
    };
    store
        .kv
        .create(
            &codec::reservation_key(name),
            &codec::encode_reservation(&r),
        )
        .expect("create reservation");
}

fn addrs(nets: &[ipnetwork::IpNetwork]) -> BTreeSet<IpAddr> {
    nets.iter().map(|n| n.ip()).collect()
}

fn inside(cidr: &str, ips: &BTreeSet<IpAddr>) -> bool {
    ips.iter().any(|ip| net(cidr).contains(*ip))
}

#[test]
fn reserved_addresses_of_a_block_are_passed_over_until_only_they_are_left() {
    // One /29 block: 8 addresses, 5 of them reserved by two reservations.
    let store = store_with(&[("10.0.0.0/29", 29)]);
    reserve(&store, "low", &["10.0.0.0/30"]);
    reserve(&store, "one", &["10.0.0.6"]);
    let ipam = Ipam::new(&store, "n1");
    let got = ipam.auto_assign(&v4(3, "net.c1")).expect("assign");
    assert_eq!(
        addrs(&got.ipv4),
        BTreeSet::from([ip("10.0.0.4"), ip("10.0.0.5"), ip("10.0.0.7")])
    );
    let b = block(&store, &net("10.0.0.0/29")).expect("block");
    assert_eq!(
        b.unallocated,
        [0, 1, 2, 3, 6],
        "reserved stay free, in order"
    );
    assert_eq!(
        handle_counts(&store, "net.c1"),
        Some(BTreeMap::from([("10.0.0.0/29".to_string(), 3)]))
    );

    // Free ordinals remain, all reserved: the pool is as full as a full one.
    let before = store.kv.dump();
    let short = ipam.auto_assign(&v4(1, "net.c2")).expect("no error");
    assert!(short.ipv4.is_empty(), "{short:?}");
    assert_eq!(short.messages, ["No IPs available in pools: [10.0.0.0/29]"]);
    let after = store.kv.dump();
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "no handle or block left behind"
    );
    assert_blocks_consistent(&store);
}

#[test]
fn a_wholly_reserved_block_is_never_claimed() {
    // Four /30 blocks; the first two (whichever order this node walks them in) must not
    // be claimed at all.
    let store = store_with(&[("10.0.0.0/28", 30)]);
    reserve(
        &store,
        "half",
        &["10.0.0.0/30", "10.0.0.4/31", "10.0.0.6/31"],
    );
    let ipam = Ipam::new(&store, "n1");
    let got = ipam.auto_assign(&v4(8, "net.c1")).expect("assign");
    assert_eq!(got.ipv4.len(), 8);
    assert!(!inside("10.0.0.0/29", &addrs(&got.ipv4)));
    let claimed: BTreeSet<String> = blocks(&store, true)
        .iter()
        .map(|b| b.cidr.to_string())
        .collect();
    assert_eq!(
        claimed,
        BTreeSet::from(["10.0.0.8/30".to_string(), "10.0.0.12/30".to_string()])
    );
}

#[test]
fn an_own_block_with_only_reserved_addresses_free_sends_the_node_to_a_new_block() {
    let store = store_with(&[("10.0.0.0/28", 29)]);
    let ipam = Ipam::new(&store, "n1");
    let first = ipam.auto_assign(&v4(4, "net.c1")).expect("assign").ipv4;
    let own = block_of(&store, first[0].ip()).expect("block").cidr;
    // What is still free in the node's own block gets reserved afterwards.
    let rest: Vec<String> = (4..8)
        .map(|i| format!("{}/32", calico_ipam::model::offset(own.network(), i)))
        .collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    reserve(&store, "rest", &rest);
    let got = ipam.auto_assign(&v4(1, "net.c2")).expect("assign").ipv4;
    assert_eq!(got.len(), 1);
    assert!(!own.contains(got[0].ip()), "{got:?} is from a new block");
    assert_eq!(blocks(&store, true).len(), 2);
}

#[test]
fn borrowing_passes_over_reserved_addresses_too() {
    let store = store_with(&[("10.0.0.0/29", 29)]);
    // n1 owns the only block and uses half of it.
    Ipam::new(&store, "n1")
        .auto_assign(&v4(4, "net.n1"))
        .expect("assign");
    let b = blocks(&store, true).remove(0);
    let free: Vec<IpAddr> = b.unallocated.iter().map(|&o| b.ip_at(o)).collect();
    reserve(
        &store,
        "three",
        &[
            &free[0].to_string(),
            &free[1].to_string(),
            &free[2].to_string(),
        ],
    );
    let n2 = Ipam::new(&store, "n2");
    let got = n2.auto_assign(&v4(2, "net.n2")).expect("assign");
    assert_eq!(addrs(&got.ipv4), BTreeSet::from([free[3]]), "{got:?}");
    assert_eq!(got.messages, ["No IPs available in pools: [10.0.0.0/29]"]);
}

#[test]
fn both_families_and_reservations_elsewhere() {
    let store = store_with(&[("10.0.0.0/30", 30), ("fd00::/126", 126)]);
    reserve(&store, "v6", &["fd00::/127"]);
    // Outside every pool, and an IPv4 CIDR whose number matches the IPv6 pool's.
    reserve(&store, "elsewhere", &["192.168.0.0/16", "0.0.0.0/30"]);
    let ipam = Ipam::new(&store, "n1");
    let req = AutoAssign {
        num4: 4,
        num6: 2,
        handle_id: "net.dual".into(),
        ..AutoAssign::default()
    };
    let got = ipam.auto_assign(&req).expect("assign");
    assert_eq!(got.ipv4.len(), 4, "nothing of IPv4 reserved: {got:?}");
    assert_eq!(
        addrs(&got.ipv6),
        BTreeSet::from([ip("fd00::2"), ip("fd00::3")])
    );
}

#[test]
fn a_reserved_address_asked_for_by_name_is_given() {
    let store = store_with(&[("10.0.0.0/29", 29)]);
    reserve(&store, "all", &["10.0.0.0/29"]);
    let ipam = Ipam::new(&store, "n1");
    let got = ipam
        .assign_ip(ip("10.0.0.3"), "net.pinned", &BTreeMap::new())
        .expect("AssignIP ignores reservations");
    assert_eq!(got.ip(), ip("10.0.0.3"));
    // Automatic assignment still gets nothing from the block it claimed.
    let short = ipam.auto_assign(&v4(1, "net.c1")).expect("no error");
    assert!(short.ipv4.is_empty(), "{short:?}");
}
