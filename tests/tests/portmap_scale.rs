//! What one pod's ADD and DEL read does not grow with the node: on a node with no other pod
//! and on one holding 1,000 other pods' mappings in both families, on iptables the same
//! rules read (none, on a node already set up) and no tool run that reads a whole table or
//! chain; on nftables the same chains and rules (ADD the hook chains' two rules per family,
//! DEL the container's own). The
//! count is the plugin's own (its debug log says how many chains and rules each step
//! read); the tools it runs are recorded through wrappers. Needs root.

use std::fs;

use cni_tests::fixtures::{plugin_dir, run_plugin_in};
use cni_tests::portmap::{
    assert_ok, bare_node, call, conf, nat_both, nft_ruleset, ours, recording_tools,
};
use cni_tests::portmap::{two_mappings, POD_V4, POD_V6};
use cni_tests::{TestDir, TestNetns};
use serde_json::{json, Value};

const OTHER_PODS: usize = 1000;

/// One call of our portmap, logging at debug level, with the iptables tools recorded:
/// the rules it says it read and the tool invocations.
fn measured(node: &TestNetns, command: &str, id: &str, conf: &Value) -> (usize, Vec<String>) {
    let dir = TestDir::new().expect("dir");
    let log = dir.path().join("tools.log");
    let path = recording_tools(&dir.subdir("bin").expect("bin dir"), &log);
    let plugins = plugin_dir().display().to_string();
    let vars = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", plugins.as_str()),
        ("PATH", path.as_str()),
    ];
    let mut conf = conf.clone();
    conf["log_level"] = json!("debug");
    let stdin = serde_json::to_vec(&conf).expect("encode config");
    let out = run_plugin_in(Some(node.path()), &ours(), &vars, &stdin).expect("run portmap");
    let stderr = out.stderr_str();
    assert_eq!(
        out.code,
        Some(0),
        "{command} {id}: {}\n{stderr}",
        out.stdout_str()
    );
    // "<tool>: N rules read", or on nftables "nftables: N chains and M rules read".
    let number_before = |line: &str, what: &str| -> usize {
        line.split_once(what)
            .and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let read: usize = stderr
        .lines()
        .filter(|l| l.contains(" rules read"))
        .map(|l| number_before(l, " chains and") + number_before(l, " rules read"))
        .sum();
    let mut tools: Vec<String> = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    // A check in a restore makes iptables-nft read the whole table: none on a node set up.
    if stderr.contains("-C PREROUTING") {
        tools.push(format!("a restore that checks the hooks with -C: {stderr}"));
    }
    (read, tools)
}

/// Copies of `seed`'s rules, as `iptables-save` printed them, for `count` other pods: each
/// its own chain, container id and host ports.
fn others(saved: &str, seed_chain: &str, count: usize) -> String {
    let seed: Vec<&str> = saved
        .lines()
        .filter(|l| l.contains(seed_chain) && l.starts_with("-A "))
        .collect();
    assert!(!seed.is_empty(), "the seed pod's rules:\n{saved}");
    let mut out = String::from("*nat\n");
    for i in 0..count {
        let chain = format!("CNI-DN-{i:021x}");
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for i in 0..count {
        let chain = format!("CNI-DN-{i:021x}");
        for line in &seed {
            let line = line
                .replace(seed_chain, &chain)
                .replace("pmseed0001", &format!("pmother{i:04}"))
                .replace("8080", &(20_000 + i).to_string())
                .replace("5353", &(40_000 + i).to_string());
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The seed pod's chain: the one its entry rules jump to.
fn chain_of(saved: &str, id: &str) -> String {
    saved
        .lines()
        .find(|l| l.contains(&format!("id: \\\"{id}\\\"")))
        .and_then(|l| l.rsplit("-j ").next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no entry rule of {id}:\n{saved}"))
}

/// Rules read and tools run by an ADD and a DEL of one pod on `node` as it is.
fn add_and_del(node: &TestNetns, id: &str, conf: &Value) -> (usize, Vec<String>) {
    let before = nat_both(node);
    let (add_read, mut tools) = measured(node, "ADD", id, conf);
    let (del_read, del_tools) = measured(node, "DEL", id, conf);
    tools.extend(del_tools);
    assert_eq!(
        nat_both(node),
        before,
        "DEL of {id} leaves the table as it was"
    );
    (add_read + del_read, tools)
}

#[test]
fn one_pods_add_and_del_read_no_rule_of_a_thousand_other_pods() {
    let node = bare_node();
    let pods = [POD_V4, POD_V6];
    let conf = conf("1.0.0", &json!({}), &two_mappings(), &pods);
    // The node's first pod sets up the shared chains; it is then gone.
    assert_ok(
        &call(&node, &ours(), "ADD", "pmseed0001", &conf),
        "ADD seed",
    );
    let saved = [
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ]
    .map(|(save, restore)| {
        let text = node.exec_checked(&[save, "-t", "nat"]).expect("save");
        (text, restore)
    });
    assert_ok(
        &call(&node, &ours(), "DEL", "pmseed0001", &conf),
        "DEL seed",
    );

    let (small_read, small_tools) = add_and_del(&node, "pmprobe001", &conf);

    let dir = TestDir::new().expect("dir");
    for (i, (text, restore)) in saved.iter().enumerate() {
        let chain = chain_of(text, "pmseed0001");
        let script = dir.path().join(format!("others-{i}.rules"));
        fs::write(&script, others(text, &chain, OTHER_PODS)).expect("write rules");
        let path = script.display().to_string();
        node.exec_checked(&[restore, "--noflush", &path])
            .expect("load the other pods' rules");
    }
    let loaded = nat_both(&node);
    assert_eq!(
        loaded.matches("id: \\\"pmother").count(),
        2 * 2 * OTHER_PODS,
        "two entry rules per pod and family"
    );

    let (large_read, large_tools) = add_and_del(&node, "pmprobe001", &conf);
    assert_eq!(
        (small_read, large_read),
        (0, 0),
        "rules read with 0 and {OTHER_PODS} other pods"
    );
    assert_eq!(small_tools, large_tools, "the same tools at both sizes");
    for tool in &large_tools {
        assert!(
            !tool.contains("-save")
                && !tool.contains(" -S ")
                && !tool.contains(" -L")
                && !tool.contains("-C PREROUTING"),
            "a tool read a table or chain: {tool}\n{large_tools:#?}"
        );
    }
}

/// `count` other pods in the nftables layout, both families: each its chain with two DNAT
/// rules, the jump to it and its masquerade rules, as our portmap writes them.
fn nft_others(count: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        let id = format!("pmother{i:04}");
        let (tcp, udp) = (20_000 + i, 40_000 + i);
        for (family, addr, local) in [
            ("ip", "10.9.0.6", Some("127.0.0.1")),
            ("ip6", "fd09::6", None),
        ] {
            let to = if family == "ip" {
                addr.to_string()
            } else {
                format!("[{addr}]")
            };
            let t = format!("{family} cni_hostport");
            out.push_str(&format!("add chain {t} pod_{id}\n"));
            out.push_str(&format!(
                "add rule {t} pod_{id} tcp dport {tcp} dnat to {to}:80 comment \"{id}\"\n"
            ));
            out.push_str(&format!(
                "add rule {t} pod_{id} udp dport {udp} dnat to {to}:53 comment \"{id}\"\n"
            ));
            out.push_str(&format!(
                "add rule {t} hostports jump pod_{id} comment \"{id}\"\n"
            ));
            for saddr in [Some(addr), local].into_iter().flatten() {
                out.push_str(&format!(
                    "add rule {t} masquerading {family} saddr {saddr} {family} daddr {addr} masquerade comment \"{id}\"\n"
                ));
            }
        }
    }
    out
}

/// The chains and rules an ADD reads, and what DEL reads, on `node` as it is.
fn nft_add_and_del(node: &TestNetns, id: &str, conf: &Value) -> (usize, usize) {
    let before = nft_ruleset(node);
    let (add_read, _) = measured(node, "ADD", id, conf);
    let (del_read, _) = measured(node, "DEL", id, conf);
    assert_eq!(
        nft_ruleset(node),
        before,
        "DEL of {id} leaves the ruleset as it was"
    );
    (add_read, del_read)
}

#[test]
fn on_nftables_one_pods_add_and_del_read_nothing_of_a_thousand_other_pods() {
    let node = bare_node();
    let pods = [POD_V4, POD_V6];
    let conf = conf(
        "1.0.0",
        &json!({"backend": "nftables"}),
        &two_mappings(),
        &pods,
    );
    assert_ok(
        &call(&node, &ours(), "ADD", "pmseed0001", &conf),
        "ADD seed",
    );
    assert_ok(
        &call(&node, &ours(), "DEL", "pmseed0001", &conf),
        "DEL seed",
    );

    let (small_add, small_del) = nft_add_and_del(&node, "pmprobe001", &conf);

    let dir = TestDir::new().expect("dir");
    let script = dir.path().join("others.nft");
    fs::write(&script, nft_others(OTHER_PODS)).expect("write rules");
    node.exec_checked(&["nft", "-f", &script.display().to_string()])
        .expect("load the other pods' rules");
    assert_eq!(
        nft_ruleset(&node).matches("jump pod_pmother").count(),
        2 * OTHER_PODS,
        "a jump per pod and family"
    );

    let (large_add, large_del) = nft_add_and_del(&node, "pmprobe001", &conf);
    eprintln!(
        "nftables: ADD read {small_add} then {large_add} chains and rules; \
         DEL {small_del} then {large_del}"
    );
    assert_eq!(
        small_add, large_add,
        "ADD reads with 0 and {OTHER_PODS} other pods"
    );
    assert!(
        small_add <= 4,
        "the hook chains' rules, both families: {small_add}"
    );
    assert_eq!(
        small_del, large_del,
        "DEL reads with 0 and {OTHER_PODS} other pods"
    );
    // Its own chains' rules (2 per family), the jump to each and its masquerade rules.
    assert!(small_del <= 9, "the container's own rules: {small_del}");
}

/// ADD looks the hooks up without the table: when one is gone, the next ADD reads the
/// table and puts it back.
#[test]
fn an_add_puts_back_a_hook_that_was_removed() {
    let node = bare_node();
    let conf = conf("1.0.0", &json!({}), &two_mappings(), &[POD_V4]);
    assert_ok(
        &call(&node, &ours(), "ADD", "pmhook0001", &conf),
        "ADD first",
    );
    let hook = [
        "PREROUTING",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ];
    let mut delete = vec!["iptables", "-t", "nat", "-D"];
    delete.extend(hook);
    node.exec_checked(&delete).expect("remove the hook");
    assert_ok(
        &call(&node, &ours(), "ADD", "pmhook0002", &conf),
        "ADD second",
    );
    let mut check = vec!["iptables", "-t", "nat", "-C"];
    check.extend(hook);
    node.exec_checked(&check)
        .unwrap_or_else(|e| panic!("the hook is back: {e}\n{}", nat_both(&node)));
    for id in ["pmhook0001", "pmhook0002"] {
        assert_ok(&call(&node, &ours(), "DEL", id, &conf), "DEL");
    }
}
