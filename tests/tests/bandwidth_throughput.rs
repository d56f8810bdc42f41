//! Shaped traffic, measured: pods networked by `calico` + `host-local` + `bandwidth` inside a
//! node namespace of the test's own, a timed TCP stream between pod and node in each
//! direction. The shaped direction must measure within ±15% of the limit, the other must
//! not be limited. Needs root.
//!
//! The measurements would disturb each other on a small machine, so the tests of this file
//! take turns (a lock here; `.config/nextest.toml` puts them in a group of one under
//! nextest, which runs each test in its own process).

use std::fs;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cni_tests::bandwidth::{chain, ifb_names, limits, qdisc, tcp_throughput, NET};
use cni_tests::pod::{Node, Pod, Stack};
use cni_tests::TestNetns;
use serde_json::{json, Value};

const TOLERANCE: f64 = 0.15;
const WARMUP: Duration = Duration::from_millis(1500);
const WINDOW: Duration = Duration::from_secs(2);
/// What "not limited" means: well above any limit used here.
const UNSHAPED_FLOOR: f64 = 300e6;

static TURN: Mutex<()> = Mutex::new(());

fn take_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn measure(sender: &TestNetns, receiver: &TestNetns, ip: IpAddr) -> f64 {
    tcp_throughput(sender, receiver, ip, WARMUP, WINDOW).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_shaped(measured: f64, limit: f64, what: &str) {
    let error = (measured - limit) / limit;
    assert!(
        error.abs() <= TOLERANCE,
        "{what}: measured {:.2} Mbit/s for a limit of {:.2} Mbit/s ({:+.1}%)",
        measured / 1e6,
        limit / 1e6,
        error * 100.0
    );
    eprintln!(
        "{what}: {:.2} Mbit/s for {:.2} ({:+.1}%)",
        measured / 1e6,
        limit / 1e6,
        error * 100.0
    );
}

fn assert_unshaped(measured: f64, what: &str) {
    assert!(
        measured >= UNSHAPED_FLOOR,
        "{what}: only {:.1} Mbit/s, looks limited",
        measured / 1e6
    );
    eprintln!("{what}: {:.0} Mbit/s (unshaped)", measured / 1e6);
}

/// A pod added through the chain with the `bandwidth` capability `caps`.
fn shaped_pod(node: &Node, container_id: &str, caps: Value) -> Pod {
    let mut pod = node.pod(container_id);
    pod.rt = pod.rt.clone().with_capability("bandwidth", caps);
    let list = chain(node, "1.0.0", json!({}));
    node.runner()
        .add(&list, &pod.rt)
        .unwrap_or_else(|e| panic!("ADD: {e}"));
    pod
}

fn remove(node: &Node, pod: &Pod) {
    let list = chain(node, "1.0.0", json!({}));
    node.runner()
        .del(&list, &pod.rt)
        .unwrap_or_else(|e| panic!("DEL: {e}"));
    assert!(ifb_names(&node.netns).is_empty(), "DEL removes the IFB");
}

/// Burst of a tenth of a second of traffic: enough for the kernel's timer granularity,
/// small enough not to count in the measurement.
fn burst(rate: u64) -> u64 {
    rate / 10
}

#[test]
fn traffic_to_the_pod_is_shaped_at_10_mbit_and_from_it_is_not() {
    let _turn = take_turn();
    let node = Node::new();
    let rate = 10_000_000;
    let pod = shaped_pod(&node, "bw-in-10", limits(rate, burst(rate), 0, 0));
    let pod_ip = IpAddr::V4(node.pod_v4(0));
    let node_ip = IpAddr::V4(node.address_v4());

    let to_pod = measure(&node.netns, &pod.netns, pod_ip);
    assert_shaped(to_pod, rate as f64, "node → pod, ingress 10 Mbit/s");
    let from_pod = measure(&pod.netns, &node.netns, node_ip);
    assert_unshaped(from_pod, "pod → node, no egress limit");
    remove(&node, &pod);
}

#[test]
fn traffic_from_the_pod_is_shaped_at_10_mbit_and_to_it_is_not() {
    let _turn = take_turn();
    let node = Node::new();
    let rate = 10_000_000;
    let pod = shaped_pod(&node, "bw-out-10", limits(0, 0, rate, burst(rate)));
    let pod_ip = IpAddr::V4(node.pod_v4(0));
    let node_ip = IpAddr::V4(node.address_v4());

    let from_pod = measure(&pod.netns, &node.netns, node_ip);
    assert_shaped(from_pod, rate as f64, "pod → node, egress 10 Mbit/s");
    let to_pod = measure(&node.netns, &pod.netns, pod_ip);
    assert_unshaped(to_pod, "node → pod, no ingress limit");
    remove(&node, &pod);
}

#[test]
fn both_directions_are_shaped_at_100_mbit() {
    let _turn = take_turn();
    let node = Node::new();
    let rate = 100_000_000;
    let pod = shaped_pod(
        &node,
        "bw-both-100",
        limits(rate, burst(rate), rate, burst(rate)),
    );
    let pod_ip = IpAddr::V4(node.pod_v4(0));
    let node_ip = IpAddr::V4(node.address_v4());

    let to_pod = measure(&node.netns, &pod.netns, pod_ip);
    assert_shaped(to_pod, rate as f64, "node → pod, ingress 100 Mbit/s");
    let from_pod = measure(&pod.netns, &node.netns, node_ip);
    assert_shaped(from_pod, rate as f64, "pod → node, egress 100 Mbit/s");
    remove(&node, &pod);
}

/// Pod annotations → cnitool → calico chain → shaped traffic. The runtimes pass a burst of
/// 2^32−1 bits with an annotated rate, so the bucket starts with about 190 MB at 10 Mbit/s:
/// the warm-up of this measurement is long enough for TCP to empty it first.
#[test]
fn pod_annotations_shape_the_pod_through_cnitool() {
    let _turn = take_turn();
    let node = Node::new();
    let net_d = node.dir.subdir("net.d").expect("net.d");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": NET,
        "plugins": [node.plugin(Stack::V4),
                    {"type": "bandwidth", "capabilities": {"bandwidth": true}}],
    });
    fs::write(net_d.join("10-calico.conflist"), list.to_string()).expect("conflist");
    let pod = TestNetns::new("bw-annotated").expect("pod netns");
    let netns = pod.path_str();

    let out = node.cnitool(&[
        "--annotation",
        "kubernetes.io/ingress-bandwidth=10M",
        "--annotation=kubernetes.io/egress-bandwidth=20M",
        "add",
        NET,
        &netns,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("result");
    let ifb = ifb_names(&node.netns);
    assert_eq!(ifb.len(), 1, "one IFB for the egress annotation");
    assert!(
        result["interfaces"]
            .as_array()
            .is_some_and(|l| l.iter().any(|i| i["name"] == ifb[0].as_str())),
        "the result lists the IFB: {result}"
    );
    // tc -j gives rates in bytes per second.
    let tbf = qdisc(&node.netns, &ifb[0], "tbf").expect("tbf on the IFB");
    assert_eq!(tbf["options"]["rate"], 2_500_000, "{tbf}");

    let pod_ip = IpAddr::V4(node.pod_v4(0));
    let node_ip = IpAddr::V4(node.address_v4());
    let long_warmup = Duration::from_secs(3);
    let to_pod = tcp_throughput(&node.netns, &pod, pod_ip, long_warmup, WINDOW)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_shaped(to_pod, 10e6, "node → pod, ingress annotation 10M");
    let from_pod = tcp_throughput(&pod, &node.netns, node_ip, long_warmup, WINDOW)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_shaped(from_pod, 20e6, "pod → node, egress annotation 20M");

    let out = node.cnitool(&["check", NET, &netns]);
    assert!(
        out.status.success(),
        "CHECK: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node.cnitool(&["del", NET, &netns]);
    assert!(
        out.status.success(),
        "DEL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ifb_names(&node.netns).is_empty(), "DEL removes the IFB");
}
