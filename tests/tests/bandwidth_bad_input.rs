//! The bandwidth plugin on bad input: every refusal is a CNI error object with the right
//! code (7 for configuration, 108 when the kernel refuses a qdisc, filter or the IFB), and
//! leaves nothing behind. Also the inputs on which the reference binary crashes, and pod
//! annotations a runtime would refuse. Needs root.

use std::fs;
use std::path::PathBuf;

use cni_tests::bandwidth::{
    all_qdiscs, direct_config, expected_ifb_name, ifb_names, limits, VethPod, NET,
};
use cni_tests::fixtures::{plugin_dir, PluginOutput};
use cni_tests::pod::{Node, Stack};
use cni_tests::TestNetns;
use serde_json::{json, Value};

const VERSION: &str = "1.0.0";
const HOST_VETH: &str = "vethbad0";

fn ours() -> PathBuf {
    plugin_dir().join("bandwidth")
}

/// The error object of a failed call: (code, msg).
fn error_of(out: &PluginOutput) -> (u64, String) {
    assert!(
        !out.success(),
        "expected a failure, got {}",
        out.stdout_str()
    );
    let err: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("error JSON on stdout: {e}: {}", out.stdout_str()));
    (
        err["code"].as_u64().expect("code"),
        err["msg"].as_str().expect("msg").to_string(),
    )
}

/// Runs ADD with `extra` and asserts the error and that the node is as it was.
fn assert_refused(extra: Value, with_prev: bool, code: u64, msg: &str) {
    let pod = VethPod::new(HOST_VETH);
    let before = all_qdiscs(&pod.node);
    let prev = with_prev.then(|| pod.prev_result(VERSION));
    let out = pod.call(
        &ours(),
        "ADD",
        "bad-1",
        &direct_config(VERSION, extra.clone(), prev),
    );
    let (got_code, got_msg) = error_of(&out);
    assert_eq!(got_code, code, "{extra}: {got_msg}");
    assert!(
        got_msg.contains(msg),
        "{extra}: {got_msg:?} should say {msg:?}"
    );
    assert!(
        out.stderr_str().find("panic").is_none(),
        "{}",
        out.stderr_str()
    );
    assert_eq!(all_qdiscs(&pod.node), before, "{extra}: qdiscs untouched");
    assert!(ifb_names(&pod.node).is_empty(), "{extra}: no IFB");
}

#[test]
fn rate_and_burst_must_come_together() {
    assert_refused(
        limits(1_000_000, 0, 0, 0),
        true,
        7,
        "if rate is set, burst must also be set",
    );
    assert_refused(
        limits(0, 0, 0, 123),
        true,
        7,
        "if burst is set, rate must also be set",
    );
    assert_refused(
        json!({"runtimeConfig": {"bandwidth": {"egressRate": 1_000_000}}}),
        true,
        7,
        "if rate is set, burst must also be set",
    );
}

#[test]
fn burst_of_4_gib_or_more_is_refused() {
    let four_gib_bits = 4u64 * 1024 * 1024 * 1024 * 8;
    assert_refused(
        limits(1_000_000, four_gib_bits, 0, 0),
        true,
        7,
        "burst cannot be more than 4GB",
    );
}

#[test]
fn negative_fractional_or_textual_limits_are_config_errors() {
    for value in [json!(-1), json!(2.5), json!("10M")] {
        assert_refused(
            json!({"ingressRate": value, "ingressBurst": 1000}),
            true,
            7,
            "ingressRate",
        );
    }
}

#[test]
fn a_negative_capability_value_is_refused_before_anything_runs() {
    let pod = VethPod::new(HOST_VETH);
    let extra = json!({"runtimeConfig": {"bandwidth": {"ingressRate": -5, "ingressBurst": 1}}});
    let out = pod.call(
        &ours(),
        "ADD",
        "bad-2",
        &direct_config(VERSION, extra, Some(pod.prev_result(VERSION))),
    );
    let (code, msg) = error_of(&out);
    // The whole stdin fails to decode (the shared config types are unsigned).
    assert!(code == 6 || code == 7, "{code}: {msg}");
    assert!(ifb_names(&pod.node).is_empty());
}

#[test]
fn limits_without_a_previous_result_ask_for_chaining() {
    assert_refused(
        limits(1_000_000, 100_000, 0, 0),
        false,
        7,
        "must be called as chained plugin",
    );
}

#[test]
fn no_limits_and_no_previous_result_is_an_empty_success_not_a_crash() {
    // The reference binary panics here (exit 2).
    let pod = VethPod::new(HOST_VETH);
    let out = pod.call(
        &ours(),
        "ADD",
        "c",
        &direct_config(VERSION, json!({}), None),
    );
    assert!(out.success(), "{} {}", out.stdout_str(), out.stderr_str());
    let result: Value = serde_json::from_slice(&out.stdout).expect("result");
    assert_eq!(result["cniVersion"], VERSION);
    // With a previous result and no limits, it passes through unchanged.
    let prev = pod.prev_result(VERSION);
    let out = pod.call(
        &ours(),
        "ADD",
        "c",
        &direct_config(VERSION, json!({}), Some(prev.clone())),
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("result");
    assert_eq!(result["interfaces"], prev["interfaces"]);
    assert!(ifb_names(&pod.node).is_empty());
}

#[test]
fn check_without_limits_succeeds_instead_of_crashing() {
    let pod = VethPod::new(HOST_VETH);
    let conf = direct_config(VERSION, json!({}), Some(pod.prev_result(VERSION)));
    let out = pod.call(&ours(), "CHECK", "c", &conf);
    assert!(out.success(), "{}", out.stdout_str());
    // And CHECK with limits but without prevResult is refused properly.
    let out = pod.call(
        &ours(),
        "CHECK",
        "c",
        &direct_config(VERSION, limits(8, 8, 0, 0), None),
    );
    assert_eq!(error_of(&out).0, 7);
}

#[test]
fn the_host_interface_must_be_found_from_the_previous_result() {
    let empty = json!({"cniVersion": VERSION, "interfaces": [], "ips": []});
    let pod = VethPod::new(HOST_VETH);
    let out = pod.call(
        &ours(),
        "ADD",
        "c",
        &direct_config(VERSION, limits(8, 8, 0, 0), Some(empty)),
    );
    assert_eq!(error_of(&out), (7, "no interfaces provided".to_string()));

    // The host veth exists but prevResult names another interface.
    let other = json!({"cniVersion": VERSION,
                       "interfaces": [{"name": "cali-other"}, {"name": "eth0", "sandbox": pod.pod.path_str()}]});
    let out = pod.call(
        &ours(),
        "ADD",
        "c",
        &direct_config(VERSION, limits(8, 8, 0, 0), Some(other)),
    );
    assert_eq!(
        error_of(&out),
        (
            7,
            "no veth peer of container interface found in host ns".to_string()
        )
    );
    assert!(ifb_names(&pod.node).is_empty());
}

#[test]
fn a_container_interface_that_is_no_veth_is_refused() {
    let node = TestNetns::with_lo_up("bw-node").expect("node");
    let pod_ns = TestNetns::new("bw-pod").expect("pod");
    pod_ns
        .exec_checked(&["ip", "link", "add", "eth0", "type", "ifb"])
        .expect("ifb as eth0");
    let pod = VethPod {
        node,
        pod: pod_ns,
        host_veth: HOST_VETH.to_string(),
    };
    let out = pod.call(
        &ours(),
        "ADD",
        "c",
        &direct_config(VERSION, limits(8, 8, 0, 0), Some(pod.prev_result(VERSION))),
    );
    let (code, msg) = error_of(&out);
    assert_eq!(code, 7);
    assert!(
        msg.starts_with("container interface eth0 has no veth peer"),
        "{msg}"
    );
}

#[test]
fn a_refused_qdisc_is_a_traffic_control_error() {
    let pod = VethPod::new(HOST_VETH);
    let conf = direct_config(
        VERSION,
        limits(1_000_000, 100_000, 0, 0),
        Some(pod.prev_result(VERSION)),
    );
    let first = pod.call(&ours(), "ADD", "c", &conf);
    assert!(first.success(), "{}", first.stdout_str());
    // A second TBF at the root of the same veth: the kernel says it exists.
    let out = pod.call(&ours(), "ADD", "c", &conf);
    let (code, msg) = error_of(&out);
    assert_eq!(code, 108, "{msg}");
    assert!(msg.starts_with("create ingress qdisc"), "{msg}");
}

#[test]
fn an_existing_ifb_is_a_traffic_control_error_and_nothing_else_is_created() {
    let pod = VethPod::new(HOST_VETH);
    let name = expected_ifb_name(NET, "c");
    pod.node
        .exec_checked(&["ip", "link", "add", &name, "type", "ifb"])
        .expect("ifb");
    let before = all_qdiscs(&pod.node);
    let conf = direct_config(
        VERSION,
        limits(0, 0, 1_000_000, 100_000),
        Some(pod.prev_result(VERSION)),
    );
    let (code, msg) = error_of(&pod.call(&ours(), "ADD", "c", &conf));
    assert_eq!(code, 108);
    assert!(msg.starts_with("adding link"), "{msg}");
    assert_eq!(all_qdiscs(&pod.node), before);
}

#[test]
fn a_failure_after_the_ifb_was_created_removes_it() {
    let pod = VethPod::new(HOST_VETH);
    // Someone else's ingress qdisc on the veth: ours cannot be added.
    pod.node
        .exec_checked(&[
            "tc", "qdisc", "add", "dev", HOST_VETH, "handle", "ffff:", "ingress",
        ])
        .expect("ingress qdisc");
    let conf = direct_config(
        VERSION,
        limits(0, 0, 1_000_000, 100_000),
        Some(pod.prev_result(VERSION)),
    );
    let (code, msg) = error_of(&pod.call(&ours(), "ADD", "c", &conf));
    assert_eq!(code, 108);
    assert!(msg.starts_with("create ingress qdisc"), "{msg}");
    assert!(ifb_names(&pod.node).is_empty(), "the IFB is rolled back");
}

#[test]
fn annotations_a_runtime_refuses_stop_before_any_plugin_runs() {
    let node = Node::new();
    let net_d = node.dir.subdir("net.d").expect("net.d");
    let list = json!({
        "cniVersion": VERSION,
        "name": NET,
        "plugins": [node.plugin(Stack::V4),
                    {"type": "bandwidth", "capabilities": {"bandwidth": true}}],
    });
    fs::write(net_d.join("10-calico.conflist"), list.to_string()).expect("conflist");
    let pod = TestNetns::new("bw-annotated").expect("pod netns");
    let links_before = node.link_names();
    for (annotation, value, says) in [
        (
            "kubernetes.io/ingress-bandwidth",
            "-10M",
            "unreasonably small",
        ),
        (
            "kubernetes.io/egress-bandwidth",
            "ten",
            "quantities must match",
        ),
        (
            "kubernetes.io/egress-bandwidth",
            "10MB",
            "quantities must match",
        ),
        (
            "kubernetes.io/ingress-bandwidth",
            "999",
            "unreasonably small",
        ),
        (
            "kubernetes.io/ingress-bandwidth",
            "2P",
            "unreasonably large",
        ),
        (
            "kubernetes.io/ingress-bandwidth",
            "",
            "quantities must match",
        ),
    ] {
        let pair = format!("{annotation}={value}");
        let out = node.cnitool(&["add", NET, &pod.path_str(), "--annotation", &pair]);
        assert!(!out.status.success(), "{pair}");
        let err: Value = serde_json::from_slice(&out.stdout).expect("CNI error object");
        assert_eq!(err["code"], 7, "{pair}: {err}");
        let msg = err["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(annotation) && msg.contains(says),
            "{pair}: {msg}"
        );
        assert_eq!(node.link_names(), links_before, "{pair}: nothing created");
        assert!(node.reservations().is_empty(), "{pair}: no address taken");
    }
}
