//! An older guide's install: a single-plugin `10-calico.conf` with `cniVersion` 0.2.0, or
//! none at all (0.1.0, as libcni reads it), driven by `cnitool` as a runtime would. Two pods
//! get the 0.1/0.2 result shape (`ip4`, `ip6`), talk to each other through the node, and
//! leave nothing after DEL. Needs root.

use std::fs;
use std::net::IpAddr;

use cni_tests::pod::{tcp_exchange, Node, Stack, NET};
use cni_tests::TestNetns;
use serde_json::{json, Value};

fn wire_two_pods_with(version: Option<&str>) {
    let node = Node::new();
    let net_d = node.dir.subdir("net.d").expect("net.d");
    let mut conf = node.plugin(Stack::Dual);
    conf["name"] = json!(NET);
    if let Some(v) = version {
        conf["cniVersion"] = json!(v);
    }
    fs::write(net_d.join("10-calico.conf"), conf.to_string()).expect("10-calico.conf");
    let expected = version.unwrap_or("0.1.0");

    let pods: Vec<TestNetns> = (0..2)
        .map(|_| TestNetns::new("old-conf").expect("pod netns"))
        .collect();
    let mut addresses = Vec::new();
    for pod in &pods {
        let out = node.cnitool(&["add", NET, &pod.path_str()]);
        assert!(
            out.status.success(),
            "{expected}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: Value = serde_json::from_slice(&out.stdout).expect("a result");
        assert_eq!(result["cniVersion"], expected, "{result}");
        assert!(result.get("ips").is_none(), "the old shape: {result}");
        let ip4 = result["ip4"]["ip"].as_str().expect("ip4").to_string();
        assert!(result["ip6"]["ip"].as_str().is_some(), "ip6: {result}");
        addresses.push(ip4.split('/').next().expect("address").to_string());
    }
    // Pod 0 reaches pod 1 through the node's /32 routes, and pod 1 sees pod 0's address.
    let server_ip: IpAddr = addresses[1].parse().expect("an address");
    let seen = tcp_exchange(&pods[1], server_ip, &pods[0])
        .unwrap_or_else(|e| panic!("{expected}: pod 0 cannot reach {server_ip}: {e}"));
    assert_eq!(
        seen.ip().to_string(),
        addresses[0],
        "{expected}: no NAT between pods"
    );
    for pod in &pods {
        let out = node.cnitool(&["del", NET, &pod.path_str()]);
        assert!(
            out.status.success(),
            "{expected} DEL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(node.cali_links().is_empty(), "{expected}: veths left");
    assert!(node.reservations().is_empty(), "{expected}: addresses left");
    node.assert_node_clean(expected);
}

#[test]
fn a_single_plugin_conf_at_0_2_0_wires_pods_that_talk() {
    wire_two_pods_with(Some("0.2.0"));
}

#[test]
fn a_single_plugin_conf_without_a_version_wires_pods_that_talk() {
    wire_two_pods_with(None);
}
