//! The nftables backend's two ways of talking to the kernel give the same ruleset: our
//! portmap speaks nf_tables netlink in process by default and `nft -f -` when
//! `PORTMAP_NFTABLES_VIA=nft`; for the same inputs, in fresh nodes, `nft -a -j list
//! ruleset` (handles included) is the same after each step, and either way removes the
//! other's rules. Hook conditions, which only nft can compile, still work by default.
//! Needs root.

use cni_tests::fixtures::{plugin_dir, run_plugin_in};
use cni_tests::portmap::{bare_node, conf, nft_ruleset, ours, two_mappings, POD_V4, POD_V6};
use cni_tests::TestNetns;
use serde_json::{json, Value};

const ID: &str = "pmnetlink01";
const OTHER: &str = "pmnetlink02";

/// Runs our portmap once in `node`, by netlink or (`via_nft`) by the nft binary.
fn run(node: &TestNetns, via_nft: bool, command: &str, id: &str, conf: &Value) {
    let path = plugin_dir().display().to_string();
    let mut vars = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", path.as_str()),
    ];
    if via_nft {
        vars.push(("PORTMAP_NFTABLES_VIA", "nft"));
    }
    let stdin = serde_json::to_vec(conf).expect("encode config");
    let out = run_plugin_in(Some(node.path()), &ours(), &vars, &stdin).expect("run portmap");
    assert_eq!(
        out.code,
        Some(0),
        "{command} {id} via {}: stdout {} stderr {}",
        if via_nft { "nft" } else { "netlink" },
        out.stdout_str(),
        out.stderr_str()
    );
}

fn json_ruleset(node: &TestNetns) -> Value {
    let text = node
        .exec_checked(&["nft", "-a", "-j", "list", "ruleset"])
        .expect("nft -j list ruleset");
    let mut doc: Value = serde_json::from_str(&text).expect("nft JSON");
    // The metainfo names nft's version and the listing's, nothing of the ruleset.
    if let Some(items) = doc.get_mut("nftables").and_then(Value::as_array_mut) {
        items.retain(|item| item.get("metainfo").is_none());
    }
    doc
}

fn mappings() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 9132, "containerPort": 132, "protocol": "sctp"},
        {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "127.0.0.1"},
        {"hostPort": 8444, "containerPort": 444, "protocol": "tcp", "hostIP": "::1"},
        {"hostPort": 8445, "containerPort": 445, "protocol": "tcp", "hostIP": "0.0.0.0"}
    ])
}

/// The same steps in two fresh nodes, one per path; the rulesets after each step.
fn steps_both(steps: &[(&str, &str, Value)]) -> [Vec<Value>; 2] {
    [false, true].map(|via_nft| {
        let node = bare_node();
        steps
            .iter()
            .map(|(command, id, input)| {
                run(&node, via_nft, command, id, input);
                json_ruleset(&node)
            })
            .collect()
    })
}

#[test]
fn netlink_and_nft_write_the_same_ruleset() {
    let nftables = json!({"backend": "nftables"});
    let no_snat = json!({"backend": "nftables", "snat": false});
    let dual = conf("1.0.0", &nftables, &mappings(), &[POD_V4, POD_V6]);
    let v6_only = conf("1.0.0", &no_snat, &two_mappings(), &["fd09::7/64"]);
    let v4_again = conf("1.0.0", &nftables, &two_mappings(), &[POD_V4]);
    let steps = [
        ("ADD", ID, dual.clone()),
        ("ADD", OTHER, v6_only.clone()),
        ("CHECK", ID, dual.clone()),
        // ADD again replaces the container's rules (here: fewer, one family).
        ("ADD", ID, v4_again),
        ("DEL", ID, dual),
        ("DEL", OTHER, v6_only),
    ];
    let [netlink, nft] = steps_both(&steps);
    for (n, (a, b)) in netlink.iter().zip(&nft).enumerate() {
        assert_eq!(a, b, "after step {n} ({} {})", steps[n].0, steps[n].1);
    }
    let after_first = netlink[0].to_string();
    assert!(
        after_first.contains("\"comment\":\"pmnetlink01\""),
        "{after_first}"
    );
    assert!(after_first.contains("sctp"), "{after_first}");
    let last = netlink.last().map(Value::to_string).unwrap_or_default();
    assert!(!last.contains("pmnetlink0"), "{last}");
}

#[test]
fn each_path_removes_the_others_rules() {
    let input = conf(
        "1.0.0",
        &json!({"backend": "nftables"}),
        &mappings(),
        &[POD_V4, POD_V6],
    );
    for via_nft in [false, true] {
        let node = bare_node();
        run(&node, via_nft, "ADD", ID, &input);
        assert!(nft_ruleset(&node).contains(ID));
        run(&node, !via_nft, "CHECK", ID, &input);
        // ADD by the other path replaces, not duplicates.
        let before = json_ruleset(&node).to_string().matches(ID).count();
        run(&node, !via_nft, "ADD", ID, &input);
        assert_eq!(json_ruleset(&node).to_string().matches(ID).count(), before);
        run(&node, !via_nft, "DEL", ID, &input);
        assert!(!nft_ruleset(&node).contains(ID), "via_nft {via_nft}");
        run(&node, via_nft, "DEL", ID, &input);
    }
}

#[test]
fn conditions_are_compiled_by_nft_by_default() {
    let input = conf(
        "1.0.0",
        &json!({"backend": "nftables", "conditionsV4": ["ip", "saddr", "10.0.0.0/8"]}),
        &two_mappings(),
        &[POD_V4],
    );
    let node = bare_node();
    run(&node, false, "ADD", ID, &input);
    let rules = nft_ruleset(&node);
    assert!(
        rules.contains("ip saddr 10.0.0.0/8 fib daddr type local jump hostports_all"),
        "{rules}"
    );
    run(&node, false, "CHECK", ID, &input);
    run(&node, false, "DEL", ID, &input);
    assert!(!nft_ruleset(&node).contains(ID));
}
