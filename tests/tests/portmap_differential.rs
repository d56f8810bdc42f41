//! Our portmap against Debian's reference 1.1.1 (iptables), rule for rule: for the same
//! input the node's normalised `iptables-save -t nat` is the same after ADD; each removes
//! the other's rules on DEL; rules written by neither survive ADD, DEL and GC on both
//! backends; DEL without `portMappings` and without prevResult still removes everything
//! (the reference leaks then); CHECK passes for an IPv4-only pod (the reference's fails);
//! GC keeps the listed containers and other networks' rules. Needs root.

use cni_tests::pod::{without_empty_dns, Family};
use cni_tests::portmap::{
    assert_ok, bare_node, call, conf, nat, nat_both, nft_ruleset, ours, reference, two_mappings,
    POD_V4, POD_V6,
};
use serde_json::{json, Value};

const ID: &str = "pmdiff0001";

/// Runs ADD with the same input in two fresh nodes, one per implementation, and returns
/// both nodes' NAT state.
fn add_both(extra: &Value, mappings: &Value, ips: &[&str]) -> (String, String) {
    let input = conf("1.0.0", extra, mappings, ips);
    let mut states = Vec::new();
    for binary in [reference(), ours()] {
        let node = bare_node();
        let out = call(&node, &binary, "ADD", ID, &input);
        assert_ok(&out, &format!("{} ADD", binary.display()));
        assert_eq!(
            out.json.clone().map(without_empty_dns),
            Some(input["prevResult"].clone()),
            "ADD passes prevResult on"
        );
        states.push(nat_both(&node));
    }
    let ours = states.pop().unwrap_or_default();
    let theirs = states.pop().unwrap_or_default();
    (theirs, ours)
}

#[test]
fn add_writes_the_references_rules() {
    let many: Vec<Value> = (0..17)
        .map(|i| json!({"hostPort": 9000 + i, "containerPort": 100 + i, "protocol": "tcp"}))
        .collect();
    let cases = [
        (
            "dual stack, two mappings",
            json!({}),
            two_mappings(),
            vec![POD_V4, POD_V6],
        ),
        (
            "no snat",
            json!({"snat": false}),
            two_mappings(),
            vec![POD_V4],
        ),
        (
            "mark bit 5, conditions",
            json!({"markMasqBit": 5, "conditionsV4": ["-s", "10.0.0.0/8"]}),
            two_mappings(),
            vec![POD_V4],
        ),
        (
            "host IPs of both families and the unspecified ones",
            json!({}),
            json!([
                {"hostPort": 8083, "containerPort": 83, "protocol": "tcp", "hostIP": "192.168.0.2"},
                {"hostPort": 8084, "containerPort": 84, "protocol": "tcp", "hostIP": "0.0.0.0"},
                {"hostPort": 8085, "containerPort": 85, "protocol": "tcp", "hostIP": "fd00:a::1"},
                {"hostPort": 8086, "containerPort": 86, "protocol": "sctp", "hostIP": "::"}
            ]),
            vec![POD_V4, POD_V6],
        ),
        (
            "more than 15 ports",
            json!({}),
            Value::Array(many),
            vec![POD_V4],
        ),
    ];
    for (what, extra, mappings, ips) in cases {
        let (theirs, ours) = add_both(&extra, &mappings, &ips);
        assert!(
            theirs.contains("CNI-DN-"),
            "{what}: the reference wrote rules"
        );
        assert_eq!(ours, theirs, "{what}");
    }
}

#[test]
fn each_removes_the_others_rules() {
    let input = conf("1.0.0", &json!({}), &two_mappings(), &[POD_V4, POD_V6]);
    let bare = conf("1.0.0", &json!({}), &json!(null), &[]);
    // The state both leave behind: the shared chains only.
    let node = bare_node();
    assert_ok(
        &call(&node, &reference(), "ADD", ID, &input),
        "reference ADD",
    );
    assert_ok(
        &call(&node, &reference(), "DEL", ID, &input),
        "reference DEL",
    );
    let clean = nat_both(&node);
    assert!(!clean.contains("CNI-DN-") && clean.contains("CNI-HOSTPORT-DNAT"));

    assert_ok(
        &call(&node, &reference(), "ADD", ID, &input),
        "reference ADD",
    );
    assert_ok(
        &call(&node, &ours(), "DEL", ID, &bare),
        "our DEL, no mappings",
    );
    assert_eq!(
        nat_both(&node),
        clean,
        "our DEL removed the reference's rules"
    );

    assert_ok(&call(&node, &ours(), "ADD", ID, &input), "our ADD");
    assert_ok(
        &call(&node, &reference(), "DEL", ID, &input),
        "reference DEL",
    );
    assert_eq!(nat_both(&node), clean, "the reference's DEL removed ours");

    // And ours over the reference's: a repeated ADD replaces, it does not duplicate.
    assert_ok(
        &call(&node, &reference(), "ADD", ID, &input),
        "reference ADD",
    );
    let theirs = nat_both(&node);
    assert_ok(&call(&node, &ours(), "ADD", ID, &input), "our ADD over it");
    assert_eq!(nat_both(&node), theirs);
}

#[test]
fn del_without_mappings_removes_everything_and_repeats() {
    for backend in ["iptables", "nftables"] {
        let node = bare_node();
        let extra = json!({"backend": backend});
        let input = conf("1.0.0", &extra, &two_mappings(), &[POD_V4, POD_V6]);
        let before_v4 = nat(&node, Family::V4);
        assert_ok(&call(&node, &ours(), "ADD", ID, &input), "ADD");
        let mut bare = conf("1.0.0", &extra, &json!(null), &[]);
        if let Some(obj) = bare.as_object_mut() {
            obj.remove("prevResult");
            obj.remove("runtimeConfig");
        }
        for n in 0..2 {
            assert_ok(
                &call(&node, &ours(), "DEL", ID, &bare),
                &format!("{backend} DEL {n}"),
            );
            assert!(!nat_both(&node).contains("CNI-DN-"), "{backend}");
            assert!(!nft_ruleset(&node).contains(ID), "{backend}");
        }
        if backend == "nftables" {
            assert_eq!(
                nat(&node, Family::V4),
                before_v4,
                "nftables wrote no iptables rule"
            );
        }
    }
    // What the reference does with the same DEL: nothing, so its rules leak.
    let node = bare_node();
    let input = conf("1.0.0", &json!({}), &two_mappings(), &[POD_V4]);
    assert_ok(
        &call(&node, &reference(), "ADD", ID, &input),
        "reference ADD",
    );
    let bare = conf("1.0.0", &json!({}), &json!(null), &[]);
    assert_ok(
        &call(&node, &reference(), "DEL", ID, &bare),
        "reference DEL",
    );
    assert!(
        nat(&node, Family::V4).contains("CNI-DN-"),
        "the reference leaks"
    );
}

#[test]
fn foreign_rules_survive_add_del_and_gc() {
    for backend in ["iptables", "nftables"] {
        let node = bare_node();
        for argv in [
            &["iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"][..],
            &["ip6tables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
            &["iptables", "-t", "nat", "-N", "CNI-DN-notours"],
            &["nft", "add table inet other; add chain inet other pre { type nat hook prerouting priority -100 ; }; add rule inet other pre tcp dport 22 accept comment \"pmdiff0001\""],
        ] {
            node.exec_checked(argv).expect("foreign rule");
        }
        let foreign_v4 = "-A PREROUTING -p tcp -m tcp --dport 22 -j ACCEPT";
        let extra = json!({"backend": backend});
        let input = conf("1.1.0", &extra, &two_mappings(), &[POD_V4, POD_V6]);
        let gc = {
            let mut gc = conf("1.1.0", &extra, &json!(null), &[]);
            if let Some(obj) = gc.as_object_mut() {
                obj.remove("prevResult");
                obj.insert("cni.dev/valid-attachments".into(), json!([]));
            }
            gc
        };
        let still_there = |when: &str| {
            let v4 = nat(&node, Family::V4);
            assert!(v4.contains(foreign_v4), "{backend} {when}:\n{v4}");
            assert!(v4.contains(":CNI-DN-notours"), "{backend} {when}");
            assert!(nat(&node, Family::V6).contains("--dport 22 -j ACCEPT"));
            let nft = nft_ruleset(&node);
            assert!(
                nft.contains("tcp dport 22 accept comment \"pmdiff0001\""),
                "{backend} {when}:\n{nft}"
            );
        };
        assert_ok(&call(&node, &ours(), "ADD", ID, &input), "ADD");
        still_there("after ADD");
        assert_ok(&call(&node, &ours(), "GC", ID, &gc), "GC");
        still_there("after GC");
        let after_gc = format!("{}{}", nat_both(&node), nft_ruleset(&node));
        assert!(!after_gc.contains("CNI-DN-8") && !after_gc.contains("dnat to 10.9.0.5"));
        assert_ok(&call(&node, &ours(), "ADD", ID, &input), "ADD again");
        assert_ok(&call(&node, &ours(), "DEL", ID, &input), "DEL");
        still_there("after DEL");
    }
}

#[test]
fn check_covers_the_pods_families_only_and_notices_removed_rules() {
    for backend in ["iptables", "nftables"] {
        let node = bare_node();
        let input = conf(
            "1.0.0",
            &json!({"backend": backend}),
            &two_mappings(),
            &[POD_V4],
        );
        let out = call(&node, &ours(), "CHECK", ID, &input);
        assert_eq!(
            out.code(),
            Some(109),
            "{backend} CHECK before ADD: {}",
            out.stdout
        );
        assert_ok(&call(&node, &ours(), "ADD", ID, &input), "ADD");
        assert_ok(
            &call(&node, &ours(), "CHECK", ID, &input),
            &format!("{backend} CHECK"),
        );
        assert_ok(&call(&node, &ours(), "DEL", ID, &input), "DEL");
        let out = call(&node, &ours(), "CHECK", ID, &input);
        assert_eq!(
            out.code(),
            Some(109),
            "{backend} CHECK after DEL: {}",
            out.stdout
        );
    }
    // The reference fails CHECK of the same IPv4-only pod on a node with ip6tables.
    let node = bare_node();
    let input = conf("1.0.0", &json!({}), &two_mappings(), &[POD_V4]);
    assert_ok(
        &call(&node, &reference(), "ADD", ID, &input),
        "reference ADD",
    );
    assert!(!call(&node, &reference(), "CHECK", ID, &input).ok());
    assert_ok(
        &call(&node, &ours(), "CHECK", ID, &input),
        "our CHECK of its rules",
    );
}

#[test]
fn gc_removes_only_unlisted_containers_of_this_network() {
    for backend in ["iptables", "nftables"] {
        let node = bare_node();
        let extra = json!({"backend": backend});
        let input = conf("1.1.0", &extra, &two_mappings(), &[POD_V4]);
        for id in ["pmkeep0001", "pmgone0001"] {
            assert_ok(&call(&node, &ours(), "ADD", id, &input), id);
        }
        let mut other_net = input.clone();
        other_net["name"] = json!("other-net");
        if backend == "iptables" {
            assert_ok(
                &call(&node, &ours(), "ADD", "pmgone0002", &other_net),
                "other network",
            );
        }
        let mut gc = conf("1.1.0", &extra, &json!(null), &[]);
        if let Some(obj) = gc.as_object_mut() {
            obj.remove("prevResult");
            obj.insert(
                "cni.dev/valid-attachments".into(),
                json!([{"containerID": "pmkeep0001", "ifname": "eth0"}]),
            );
        }
        assert_ok(&call(&node, &ours(), "GC", "", &gc), "GC");
        assert_ok(
            &call(&node, &ours(), "CHECK", "pmkeep0001", &input),
            "kept container",
        );
        let out = call(&node, &ours(), "CHECK", "pmgone0001", &input);
        assert_eq!(
            out.code(),
            Some(109),
            "{backend}: collected: {}",
            out.stdout
        );
        if backend == "iptables" {
            assert_ok(
                &call(&node, &ours(), "CHECK", "pmgone0002", &other_net),
                "another network's container",
            );
        }
        let state = format!("{}{}", nat_both(&node), nft_ruleset(&node));
        assert!(!state.contains("pmgone0001"), "{backend}:\n{state}");
        assert!(state.contains("pmkeep0001"), "{backend}");
    }
}
