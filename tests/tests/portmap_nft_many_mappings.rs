//! A pod with thousands of host ports on the nftables backend, spoken as nf_tables netlink:
//! ADD sends one transaction of several megabytes (larger than a netlink socket's default
//! send buffer) and it applies whole; DEL removes every rule and chain of the pod's and
//! nothing of another pod's, and a second DEL finds nothing left and succeeds. Needs root.

use cni_tests::portmap::{assert_ok, bare_node, call, conf, nft_ruleset, ours};
use cni_tests::portmap::{two_mappings, POD_V4, POD_V6};
use serde_json::{json, Value};

const BIG: &str = "pmnftbig01";
const SMALL: &str = "pmnftsml01";

/// `n` mappings, half TCP and half UDP, host port = container port.
fn mappings(n: u16) -> Value {
    let half = n / 2;
    let mut out = Vec::new();
    for protocol in ["tcp", "udp"] {
        for port in 1..=half {
            out.push(json!({"hostPort": port, "containerPort": port, "protocol": protocol}));
        }
    }
    Value::Array(out)
}

#[test]
fn add_and_del_of_5000_mappings_on_nftables() {
    let node = bare_node();
    let pods = [POD_V4, POD_V6];
    let nftables = json!({"backend": "nftables"});
    let small = conf("1.0.0", &nftables, &two_mappings(), &pods);
    assert_ok(&call(&node, &ours(), "ADD", SMALL, &small), "ADD small");
    // The shared skeleton (tables, hooks) and another pod's rules: all must survive.
    let before = nft_ruleset(&node);

    let big = conf("1.0.0", &nftables, &mappings(5_000), &pods);
    assert_ok(&call(&node, &ours(), "ADD", BIG, &big), "ADD big");
    let rules = nft_ruleset(&node);
    for want in [
        "tcp dport 1 dnat to 10.9.0.5:1 ",
        "udp dport 1234 dnat to 10.9.0.5:1234 ",
        "tcp dport 2500 dnat to 10.9.0.5:2500 ",
        "udp dport 2500 dnat to [fd09::5]:2500 ",
    ] {
        assert!(rules.contains(want), "no {want:?} after ADD");
    }
    let dnat = rules
        .lines()
        .filter(|l| l.contains("dnat to") && l.contains(BIG))
        .count();
    assert_eq!(dnat, 2 * 5_000, "every mapping in both families");

    assert_ok(&call(&node, &ours(), "DEL", BIG, &big), "DEL big");
    let after = nft_ruleset(&node);
    assert!(!after.contains(BIG), "DEL left some of the pod's rules");
    assert_eq!(after, before, "the ruleset is as it was before the ADD");
    assert_ok(&call(&node, &ours(), "DEL", BIG, &big), "DEL again");
    assert_eq!(nft_ruleset(&node), before);

    assert_ok(&call(&node, &ours(), "DEL", SMALL, &small), "DEL small");
    assert!(!nft_ruleset(&node).contains(SMALL));
}
