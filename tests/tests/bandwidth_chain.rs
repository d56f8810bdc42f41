//! The bandwidth plugin's lifecycle: chained after `calico` + `host-local` by the runner
//! (ADD result, the tc objects on the host veth and the IFB, CHECK, drift, DEL twice), GC of
//! leaked IFB devices, and the right host veth among several. Needs root.

use std::path::PathBuf;

use cni_tests::bandwidth::{
    chain, direct_config, expected_ifb_name, ifb_names, ingress_filters, limits, qdisc, VethPod,
    NET,
};
use cni_tests::fixtures::{plugin_dir, run_plugin_in};
use cni_tests::pod::{cni_host_veth, Node};
use cni_tests::TestNetns;
use serde_json::{json, Value};

fn ours() -> PathBuf {
    plugin_dir().join("bandwidth")
}

#[test]
fn chained_after_calico_the_pod_is_shaped_checked_and_cleaned_up() {
    let node = Node::new();
    let list = chain(&node, "1.0.0", json!({}));
    let mut pod = node.pod("bw-chain-1");
    pod.rt = pod.rt.clone().with_capability(
        "bandwidth",
        limits(10_000_000, 1_000_000, 20_000_000, 2_000_000),
    );
    let runner = node.runner();
    let result = runner.add(&list, &pod.rt).expect("ADD");

    let host_veth = cni_host_veth("bw-chain-1");
    let ifb = expected_ifb_name(NET, "bw-chain-1");
    let interfaces = result["interfaces"].as_array().expect("interfaces");
    let last = interfaces.last().expect("an interface");
    assert_eq!(
        last["name"],
        ifb.as_str(),
        "the IFB is listed last: {result}"
    );
    assert!(last.get("sandbox").is_none(), "the IFB is a host interface");
    let ifb_link = node.link(&ifb).expect("IFB exists");
    assert_eq!(last["mac"], ifb_link["address"]);
    let veth_link = node.link(&host_veth).expect("host veth");
    assert_eq!(ifb_link["mtu"], veth_link["mtu"], "IFB MTU = host veth MTU");

    let tbf = qdisc(&node.netns, &host_veth, "tbf").expect("TBF on the host veth");
    assert_eq!(tbf["handle"], "1:");
    assert_eq!(tbf["options"]["rate"], 1_250_000);
    assert!(qdisc(&node.netns, &host_veth, "ingress").is_some());
    let ifb_tbf = qdisc(&node.netns, &ifb, "tbf").expect("TBF on the IFB");
    assert_eq!(ifb_tbf["options"]["rate"], 2_500_000);
    let filters = ingress_filters(&node.netns, &host_veth);
    let redirects: Vec<&Value> = filters
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["options"]["actions"].as_array().into_iter().flatten())
        .collect();
    assert!(
        !redirects.is_empty() && redirects.iter().all(|a| a["to_dev"] == ifb.as_str()),
        "every action redirects to the IFB: {filters}"
    );

    runner.check(&list, &pod.rt).expect("CHECK after ADD");

    // Someone changes the pod's limit behind our back: CHECK says so.
    node.netns
        .exec_checked(&[
            "tc", "qdisc", "replace", "dev", &host_veth, "root", "handle", "1:", "tbf", "rate",
            "1mbit", "burst", "10kb", "latency", "25ms",
        ])
        .expect("tc replace");
    let err = runner.check(&list, &pod.rt).expect_err("drift");
    let cni = err.cni_error().expect("a CNI error");
    assert_eq!(cni.code.as_u32(), 109, "{cni}");
    assert!(cni.msg.starts_with("Rate doesn't match"), "{cni}");

    runner.del(&list, &pod.rt).expect("DEL");
    assert!(ifb_names(&node.netns).is_empty(), "DEL removes the IFB");
    runner.del(&list, &pod.rt).expect("second DEL");
}

#[test]
fn check_notices_a_missing_ifb() {
    let pod = VethPod::new("vethchk0");
    let conf = direct_config(
        "1.0.0",
        limits(0, 0, 1_000_000, 100_000),
        Some(pod.prev_result("1.0.0")),
    );
    let add = pod.call(&ours(), "ADD", "chk", &conf);
    assert!(add.success(), "{}", add.stdout_str());
    let with_result = direct_config(
        "1.0.0",
        limits(0, 0, 1_000_000, 100_000),
        serde_json::from_slice(&add.stdout).ok(),
    );
    assert!(pod.call(&ours(), "CHECK", "chk", &with_result).success());
    pod.node
        .exec_checked(&["ip", "link", "del", &expected_ifb_name(NET, "chk")])
        .expect("delete IFB");
    let out = pod.call(&ours(), "CHECK", "chk", &with_result);
    let err: Value = serde_json::from_slice(&out.stdout).expect("error");
    assert_eq!(err["code"], 109);
    assert!(
        err["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("get ifb device")),
        "{err}"
    );
    // DEL of an attachment whose IFB is already gone, and without a netns, succeeds.
    let out = run_plugin_in(
        Some(pod.node.path()),
        &ours(),
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "chk"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ],
        conf.to_string().as_bytes(),
    )
    .expect("runs");
    assert!(out.success(), "{}", out.stdout_str());
}

#[test]
fn gc_removes_the_ifb_of_containers_that_are_gone_and_nothing_else() {
    let pod = VethPod::new("vethgc0");
    let conf = direct_config(
        "1.1.0",
        limits(0, 0, 1_000_000, 100_000),
        Some(pod.prev_result("1.1.0")),
    );
    assert!(pod.call(&ours(), "ADD", "alive", &conf).success());
    // A container whose DEL never came, and an IFB that is not the plugin's.
    let leaked = expected_ifb_name(NET, "gone");
    for name in [leaked.as_str(), "ifb-other"] {
        pod.node
            .exec_checked(&["ip", "link", "add", name, "type", "ifb"])
            .expect("ifb");
    }
    let mut gc = direct_config("1.1.0", json!({}), None);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "alive", "ifname": "eth0"}]);
    let out = run_plugin_in(
        Some(pod.node.path()),
        &ours(),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
        gc.to_string().as_bytes(),
    )
    .expect("runs");
    assert!(out.success(), "{} {}", out.stdout_str(), out.stderr_str());
    assert_eq!(ifb_names(&pod.node), [expected_ifb_name(NET, "alive")]);
    assert!(pod
        .node
        .exec_checked(&["ip", "link", "show", "ifb-other"])
        .is_ok());
}

#[test]
fn the_host_veth_is_the_container_interfaces_peer_among_several() {
    // Two pods in one node; prevResult lists both host ends without a sandbox.
    let first = VethPod::new("vethone");
    let second = TestNetns::new("bw-pod").expect("pod");
    first
        .node
        .exec_checked(&[
            "ip",
            "link",
            "add",
            "vethtwo",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            second.name(),
        ])
        .expect("second veth");
    first
        .node
        .exec_checked(&["ip", "link", "set", "vethtwo", "up"])
        .expect("up");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [
        {"name": "vethone"}, {"name": "vethtwo"},
        {"name": "eth0", "sandbox": second.path_str()}]});
    let conf = direct_config("1.0.0", limits(8_000_000, 80_000, 0, 0), Some(prev));
    let netns = second.path_str();
    let out = run_plugin_in(
        Some(first.node.path()),
        &ours(),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "two"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ],
        conf.to_string().as_bytes(),
    )
    .expect("runs");
    assert!(out.success(), "{}", out.stdout_str());
    assert!(
        qdisc(&first.node, "vethtwo", "tbf").is_some(),
        "shaped: the second pod's veth"
    );
    assert!(
        qdisc(&first.node, "vethone", "tbf").is_none(),
        "not the first pod's"
    );
}
