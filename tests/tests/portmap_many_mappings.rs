//! A pod with tens of thousands of host ports: DEL removes every rule and chain of its
//! own and nothing of another pod's. On iptables, DEL reads the entry rules alone
//! and empties a large chain before deleting what jumps to it, so it must still find
//! everything, and it never reads the whole table: with iptables-nft that read takes time
//! quadratic in the number of rules (half a minute for 100,000 mappings), so the tools DEL
//! runs are recorded. Needs root.

use std::fs;

use cni_tests::fixtures::{plugin_dir, run_plugin_in};
use cni_tests::portmap::{assert_ok, bare_node, call, conf, nat_both, ours, recording_tools};
use cni_tests::portmap::{two_mappings, POD_V4, POD_V6};
use cni_tests::TestDir;
use serde_json::{json, Value};

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

/// Lines of `text` that name `what`.
fn count(text: &str, what: &str) -> usize {
    text.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn del_of_20000_mappings_removes_all_of_the_pods_rules_and_chains() {
    let node = bare_node();
    let pods = [POD_V4, POD_V6];
    let small = conf("1.0.0", &json!({}), &two_mappings(), &pods);
    assert_ok(
        &call(&node, &ours(), "ADD", "pmsmall001", &small),
        "ADD small",
    );
    let before = nat_both(&node);
    let big = conf("1.0.0", &json!({}), &mappings(20_000), &pods);
    assert_ok(&call(&node, &ours(), "ADD", "pmbig00001", &big), "ADD big");
    for tool in ["iptables", "ip6tables"] {
        let top = node
            .exec_checked(&[tool, "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"])
            .expect("list entry rules");
        // 10,000 ports per protocol, 15 per entry rule: 667 each.
        assert_eq!(count(&top, "id: \\\"pmbig00001\\\""), 2 * 667, "{tool}");
    }
    let dir = TestDir::new().expect("dir");
    let log = dir.path().join("tools.log");
    let path = recording_tools(&dir.subdir("bin").expect("bin dir"), &log);
    let plugins = plugin_dir().display().to_string();
    let vars = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "pmbig00001"),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", plugins.as_str()),
        ("PATH", path.as_str()),
    ];
    let stdin = serde_json::to_vec(&big).expect("encode config");
    let out = run_plugin_in(Some(node.path()), &ours(), &vars, &stdin).expect("run DEL");
    assert_eq!(out.code, Some(0), "DEL big: {}", out.stdout_str());
    let ran = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !ran.lines().any(|l| l.contains("-save")),
        "DEL read the whole table:\n{ran}"
    );
    assert!(ran.contains("-S CNI-HOSTPORT-DNAT"), "{ran}");
    assert_eq!(
        nat_both(&node),
        before,
        "the big pod's rules and chains are all gone"
    );
    // Again, with nothing left to remove.
    assert_ok(
        &call(&node, &ours(), "DEL", "pmbig00001", &big),
        "DEL again",
    );
    assert_eq!(nat_both(&node), before);
    assert_ok(
        &call(&node, &ours(), "DEL", "pmsmall001", &small),
        "DEL small",
    );
    let after = nat_both(&node);
    assert!(!after.contains("CNI-DN-"), "{after}");
}
