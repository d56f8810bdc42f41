//! A pod with thousands of host ports on the nftables backend, spoken as nf_tables netlink:
//! ADD sends one transaction of several megabytes (larger than a netlink socket's default
//! send buffer) and it applies whole; DEL removes every rule and chain of the pod's and
//! nothing of another pod's, and a second DEL finds nothing left and succeeds. Needs root.

use cni_tests::portmap::{assert_ok, bare_node, call, conf, nft_ruleset, ours};
use cni_tests::portmap::{two_mappings, POD_V4, POD_V6};
use cni_tests::TestDir;
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

/// Rules written before each pod had a chain of its own (its DNAT rules among everyone's in
/// `hostports`) are still found and removed by DEL, and replaced by ADD.
#[test]
fn rules_of_the_shared_layout_are_removed_too() {
    const OLD: &str = "pmnftold01";
    let node = bare_node();
    let nftables = json!({"backend": "nftables"});
    let small = conf("1.0.0", &nftables, &two_mappings(), &[POD_V4]);
    assert_ok(&call(&node, &ours(), "ADD", SMALL, &small), "ADD small");
    let before = nft_ruleset(&node);
    // The layout of an earlier version: no marker of the skeleton either.
    let marker = before
        .lines()
        .find_map(|l| l.trim().strip_prefix("chain skeleton_"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|hex| format!("skeleton_{hex}"))
        .unwrap_or_else(|| panic!("no skeleton marker:\n{before}"));
    let legacy = format!(
        "delete chain ip cni_hostport {marker}\n\
         add rule ip cni_hostport hostports tcp dport 7000 dnat to 10.9.0.6:70 comment \"{OLD}\"\n\
         add rule ip cni_hostport masquerading ip saddr 10.9.0.6 ip daddr 10.9.0.6 masquerade comment \"{OLD}\"\n"
    );
    let dir = TestDir::new().expect("dir");
    let script = dir.path().join("legacy.nft");
    std::fs::write(&script, legacy).expect("write script");
    node.exec_checked(&["nft", "-f", &script.display().to_string()])
        .expect("legacy rules");
    assert!(nft_ruleset(&node).contains(OLD));
    let old = conf("1.0.0", &nftables, &two_mappings(), &["10.9.0.6/24"]);
    assert_ok(
        &call(&node, &ours(), "ADD", OLD, &old),
        "ADD over the old rules",
    );
    let rules = nft_ruleset(&node);
    assert!(!rules.contains("dport 7000"), "{rules}");
    assert_ok(&call(&node, &ours(), "DEL", OLD, &old), "DEL");
    // The marker is written again after the container's chain: the same chains, in
    // another order.
    assert_eq!(
        chains_in_any_order(&nft_ruleset(&node)),
        chains_in_any_order(&before)
    );
}

/// A ruleset of one table: its blank-line-separated blocks (its chains, the table's end
/// cut off the last), sorted.
fn chains_in_any_order(ruleset: &str) -> Vec<&str> {
    let mut blocks: Vec<&str> = ruleset
        .split("\n\n")
        .map(|b| b.trim_end_matches("\n}\n"))
        .collect();
    blocks.sort_unstable();
    blocks
}
