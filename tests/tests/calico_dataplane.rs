//! The calico plugin's Linux dataplane end to end (spec §2, §4, §9): pods networked by
//! `calico` + `host-local` inside a node namespace of the test's own, checked from the
//! outside (links, addresses, routes, sysctls, the printed result) and by real TCP traffic
//! between pods and the node. Needs root.

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;

use cni_tests::pod::{
    assert_tcp, cni_host_veth, is_up, k8s_host_veth, link_local, without_empty_dns, Family, Node,
    Pod, Stack, GATEWAY_V4, GATEWAY_V6, HOST_VETH_MAC, IFNAME, VERSIONS,
};
use serde_json::{json, Value};

/// What one networked pod should look like.
struct Expect<'a> {
    host_veth: &'a str,
    /// `ip/32` and `ip/128`, as on the interface and in the result.
    ips: Vec<String>,
    mtu: u64,
}

fn has_v4(ips: &[String]) -> bool {
    ips.iter().any(|ip| !ip.contains(':'))
}

fn has_v6(ips: &[String]) -> bool {
    ips.iter().any(|ip| ip.contains(':'))
}

fn bare(ip: &str) -> &str {
    ip.split('/').next().unwrap_or(ip)
}

/// The dataplane of spec §4 for one pod: veth pair across the namespaces, MAC, MTU, up,
/// addresses, container routes, host routes.
fn assert_networked(node: &Node, pod: &Pod, want: &Expect) {
    let ifname = pod.rt.ifname.as_str();
    let host = node
        .link(want.host_veth)
        .unwrap_or_else(|| panic!("no host veth {} in the node", want.host_veth));
    let cont = pod.iface();
    assert_eq!(host["linkinfo"]["info_kind"], "veth", "host end: {host}");
    assert_eq!(
        cont["linkinfo"]["info_kind"], "veth",
        "container end: {cont}"
    );
    assert_eq!(
        host["link_index"], cont["ifindex"],
        "the host veth's peer is the container interface"
    );
    assert_eq!(cont["link_index"], host["ifindex"]);
    assert_eq!(host["address"], HOST_VETH_MAC, "host veth MAC");
    assert_ne!(cont["address"], HOST_VETH_MAC, "container MAC");
    assert_eq!(host["mtu"], want.mtu, "host veth MTU");
    assert_eq!(cont["mtu"], want.mtu, "container MTU");
    assert!(is_up(&host), "host veth up: {host}");
    assert!(is_up(&cont), "container interface up: {cont}");

    let mut ips = want.ips.clone();
    ips.sort();
    assert_eq!(pod.addresses(), ips, "container addresses");

    let v4 = has_v4(&want.ips);
    let v6 = has_v6(&want.ips);
    let cont_v4: Vec<String> = if v4 {
        vec![
            format!("{GATEWAY_V4} dev {ifname} scope link"),
            format!("default via {GATEWAY_V4} dev {ifname}"),
        ]
    } else {
        vec![]
    };
    assert_eq!(
        sorted(pod.routes(Family::V4)),
        sorted(cont_v4),
        "container v4 routes"
    );
    let cont_v6: Vec<String> = if v6 {
        vec![format!("default via {GATEWAY_V6} dev {ifname}")]
    } else {
        vec![]
    };
    assert_eq!(pod.routes(Family::V6), cont_v6, "container v6 routes");
    if v6 {
        assert_eq!(
            link_local(&node.netns, want.host_veth).as_deref(),
            Some(GATEWAY_V6),
            "the v6 next hop is the host veth's own link-local address"
        );
    }

    let host_v4: Vec<String> = want
        .ips
        .iter()
        .filter(|ip| !ip.contains(':'))
        .map(|ip| format!("{} dev {} scope link", bare(ip), want.host_veth))
        .collect();
    assert_eq!(
        node.routes_via(Family::V4, want.host_veth),
        host_v4,
        "host v4 routes"
    );
    let host_v6: Vec<String> = want
        .ips
        .iter()
        .filter(|ip| ip.contains(':'))
        .map(|ip| format!("{} dev {}", bare(ip), want.host_veth))
        .collect();
    assert_eq!(
        node.routes_via(Family::V6, want.host_veth),
        host_v6,
        "host v6 routes"
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The result of spec §9 for `version`: both interfaces, /32 and /128 addresses on
/// interface 1, no gateway; `routes` only as given. An empty `dns` is ignored; a 1.x
/// container interface may carry `mtu`, which must then be the interface's MTU.
fn assert_result(result: &Value, version: &str, pod: &Pod, want: &Expect, routes: Option<Value>) {
    let mac = pod.iface()["address"].clone();
    let mut got = without_empty_dns(result.clone());
    if !version.starts_with("0.") {
        if let Some(mtu) = got["interfaces"][1]
            .as_object_mut()
            .and_then(|o| o.remove("mtu"))
        {
            assert_eq!(mtu, json!(want.mtu), "result mtu: {result}");
        }
    }
    let ips: Vec<Value> = want
        .ips
        .iter()
        .map(|ip| {
            if version.starts_with("0.") {
                let v = if ip.contains(':') { "6" } else { "4" };
                json!({"version": v, "interface": 1, "address": ip})
            } else {
                json!({"interface": 1, "address": ip})
            }
        })
        .collect();
    let mut expected = json!({
        "cniVersion": version,
        "interfaces": [
            {"name": want.host_veth},
            {"name": pod.rt.ifname, "mac": mac, "sandbox": pod.netns.path_str()},
        ],
        "ips": ips,
    });
    if let Some(r) = routes {
        expected["routes"] = r;
    }
    assert_eq!(got, expected, "result for {version}");
}

/// Every sysctl of spec §4 steps 5, 6, 10 and 12 on both sides. Keys are dotted; the
/// interface names used here have no dots.
fn assert_sysctls(node: &Node, pod: &Pod, veth: &str, v4: bool, v6: bool, forwarding: bool) {
    let ifname = pod.rt.ifname.as_str();
    let mut host: Vec<(String, &str)> = Vec::new();
    if v4 {
        host.extend([
            (format!("net.ipv4.conf.{veth}.route_localnet"), "1"),
            (format!("net.ipv4.neigh.{veth}.proxy_delay"), "0"),
            (format!("net.ipv4.conf.{veth}.proxy_arp"), "1"),
            (format!("net.ipv4.conf.{veth}.forwarding"), "1"),
        ]);
    }
    if v6 {
        host.extend([
            (format!("net.ipv6.conf.{veth}.accept_dad"), "0"),
            (format!("net.ipv6.conf.{veth}.disable_ipv6"), "0"),
            (format!("net.ipv6.conf.{veth}.proxy_ndp"), "1"),
            (format!("net.ipv6.conf.{veth}.forwarding"), "1"),
        ]);
    }
    host.push((format!("net.ipv6.conf.{veth}.accept_ra"), "0"));
    for (key, value) in host {
        assert_eq!(node.sysctl(&dotted(&key)), value, "node {key}");
    }

    let on = if forwarding { "1" } else { "0" };
    let mut cont: Vec<(String, &str)> = Vec::new();
    if v4 {
        cont.push(("net.ipv4.ip_forward".into(), on));
    }
    if v6 {
        cont.extend([
            (format!("net.ipv6.conf.{ifname}.accept_dad"), "0"),
            ("net.ipv6.conf.all.disable_ipv6".into(), "0"),
            ("net.ipv6.conf.default.disable_ipv6".into(), "0"),
            ("net.ipv6.conf.lo.disable_ipv6".into(), "0"),
            ("net.ipv6.conf.all.forwarding".into(), on),
        ]);
    }
    for (key, value) in cont {
        assert_eq!(pod.sysctl(&dotted(&key)), value, "pod {key}");
    }
}

fn dotted(key: &str) -> Vec<&str> {
    key.split('.').collect()
}

/// Two Kubernetes pods on one node: fully networked, and TCP flows pod to pod (both
/// ways), node to pod and pod to node, with the real source addresses (no NAT).
fn two_pods_talk(stack: Stack) {
    let node = Node::new();
    let plugin = node.plugin(stack);
    let list = node.conflist("1.0.0", &plugin);
    let runner = node.runner();
    let a = node.k8s_pod("c0ffee0000000000000000000000000a", "default", "web-a");
    let b = node.k8s_pod("c0ffee0000000000000000000000000b", "prod", "web-b");
    let ra = runner.add(&list, &a.rt).expect("ADD a");
    let rb = runner.add(&list, &b.rt).expect("ADD b");
    let veth_a = k8s_host_veth("cali", "default", "web-a");
    let veth_b = k8s_host_veth("cali", "prod", "web-b");
    let want_a = Expect {
        host_veth: &veth_a,
        ips: node.pod_ips(stack, 0),
        mtu: 1500,
    };
    let want_b = Expect {
        host_veth: &veth_b,
        ips: node.pod_ips(stack, 1),
        mtu: 1500,
    };
    assert_networked(&node, &a, &want_a);
    assert_networked(&node, &b, &want_b);
    assert_result(&ra, "1.0.0", &a, &want_a, None);
    assert_result(&rb, "1.0.0", &b, &want_b, None);
    assert_sysctls(&node, &a, &veth_a, stack.v4(), stack.v6(), false);

    let mut pairs: Vec<(IpAddr, IpAddr, IpAddr)> = Vec::new();
    if stack.v4() {
        pairs.push((
            node.pod_v4(0).into(),
            node.pod_v4(1).into(),
            node.address_v4().into(),
        ));
    }
    if stack.v6() {
        pairs.push((
            node.pod_v6(0).into(),
            node.pod_v6(1).into(),
            node.address_v6().into(),
        ));
    }
    for (ip_a, ip_b, ip_node) in pairs {
        assert_tcp(&b.netns, ip_b, &a.netns, ip_a, "pod a to pod b");
        assert_tcp(&a.netns, ip_a, &b.netns, ip_b, "pod b to pod a");
        assert_tcp(&a.netns, ip_a, &node.netns, ip_node, "node to pod a");
        assert_tcp(&node.netns, ip_node, &b.netns, ip_b, "pod b to node");
    }

    runner.del(&list, &a.rt).expect("DEL a");
    runner.del(&list, &b.rt).expect("DEL b");
    assert!(node.cali_links().is_empty(), "{:?}", node.cali_links());
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
}

#[test]
fn ipv4_pods_reach_each_other_and_the_node() {
    two_pods_talk(Stack::V4);
}

#[test]
fn ipv6_pods_reach_each_other_and_the_node() {
    two_pods_talk(Stack::V6);
}

#[test]
fn dual_stack_pods_reach_each_other_and_the_node() {
    two_pods_talk(Stack::Dual);
}

/// Spec §2: `cali` + SHA-1("<namespace>.<pod>")[..11]; CNI_IFNAME names the container end.
#[test]
fn kubernetes_pod_host_veth_is_named_by_sha1_of_namespace_and_pod() {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::V4));
    let runner = node.runner();
    let mut pod = node.k8s_pod("5eed000000000000000000000000000a", "default", "nginx");
    pod.rt.ifname = "net1".into();
    let result = runner.add(&list, &pod.rt).expect("ADD");
    // printf 'default.nginx' | sha1sum → c440f455693b...
    assert_eq!(result["interfaces"][0]["name"], "calic440f455693");
    assert!(
        node.link("calic440f455693").is_some(),
        "{:?}",
        node.cali_links()
    );
    assert_eq!(result["interfaces"][1]["name"], "net1");
    assert!(pod.link("net1").is_some());
    assert!(pod.link(IFNAME).is_none());

    let other = node.k8s_pod(
        "5eed000000000000000000000000000b",
        "kube-system",
        "coredns-5d78c9869d-x7k2p",
    );
    let r2 = runner.add(&list, &other.rt).expect("ADD other");
    let veth = k8s_host_veth("cali", "kube-system", "coredns-5d78c9869d-x7k2p");
    assert_eq!(veth.len(), 15);
    assert_eq!(r2["interfaces"][0]["name"], veth.as_str());
    assert!(node.link(&veth).is_some(), "{:?}", node.cali_links());
    runner.del(&list, &pod.rt).expect("DEL");
    runner.del(&list, &other.rt).expect("DEL other");
}

/// FELIX_INTERFACEPREFIX's first element replaces `cali` for Kubernetes pods.
#[test]
fn felix_interface_prefix_sets_the_kubernetes_host_veth_prefix() {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::V4));
    let runner = node.runner().with_env("FELIX_INTERFACEPREFIX", "tap,cali");
    let pod = node.k8s_pod("5eed000000000000000000000000000c", "default", "nginx");
    let result = runner.add(&list, &pod.rt).expect("ADD");
    assert_eq!(result["interfaces"][0]["name"], "tapc440f455693");
    let host = node
        .link("tapc440f455693")
        .expect("host veth named with the prefix");
    assert_eq!(host["address"], HOST_VETH_MAC);
    assert!(node.cali_links().is_empty(), "{:?}", node.cali_links());
    // The traffic path does not depend on the name.
    assert_tcp(
        &pod.netns,
        node.pod_v4(0).into(),
        &node.netns,
        node.address_v4().into(),
        "node to pod behind a tap veth",
    );
    runner.del(&list, &pod.rt).expect("DEL");
    assert!(node.link("tapc440f455693").is_none());
}

/// Without Kubernetes arguments the host veth is `cali` + the container id's first 11
/// characters, whatever FELIX_INTERFACEPREFIX says.
#[test]
fn plain_container_host_veth_is_named_by_container_id() {
    let node = Node::new();
    let list = node.conflist("0.4.0", &node.plugin(Stack::Dual));
    let runner = node.runner().with_env("FELIX_INTERFACEPREFIX", "tap");
    let id = "0123456789abcdef0123456789abcdef";
    let pod = node.pod(id);
    let result = runner.add(&list, &pod.rt).expect("ADD");
    assert_eq!(cni_host_veth(id), "cali0123456789a");
    assert_eq!(result["interfaces"][0]["name"], "cali0123456789a");
    let want = Expect {
        host_veth: "cali0123456789a",
        ips: node.pod_ips(Stack::Dual, 0),
        mtu: 1500,
    };
    assert_networked(&node, &pod, &want);
    assert_result(&result, "0.4.0", &pod, &want, None);
    runner.del(&list, &pod.rt).expect("DEL");

    // Kubernetes needs both the pod's name and namespace (spec §1): with one of them only,
    // or one empty, the pod is a plain container.
    for (n, args) in [
        vec![("K8S_POD_NAME", "nginx")],
        vec![("K8S_POD_NAMESPACE", "default")],
        vec![("K8S_POD_NAMESPACE", ""), ("K8S_POD_NAME", "nginx")],
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("{n}a5e0000000000000000000000000000");
        let mut pod = node.pod(&id);
        pod.rt = pod.rt.clone().with_arg("IgnoreUnknown", "1");
        for (k, v) in &args {
            pod.rt = pod.rt.clone().with_arg(*k, *v);
        }
        let result = runner.add(&list, &pod.rt).expect("ADD");
        assert_eq!(
            result["interfaces"][0]["name"],
            cni_host_veth(&id).as_str(),
            "{args:?}"
        );
        runner.del(&list, &pod.rt).expect("DEL");
    }
}

/// Containerd always sends IgnoreUnknown=1, but Calico prepends it itself (spec §0) so that
/// host-local accepts the K8S_* arguments even from a runtime that does not.
#[test]
fn kubernetes_arguments_reach_host_local_without_ignore_unknown() {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::V4));
    let runner = node.runner();
    let mut pod = node.pod("1a2b000000000000000000000000000a");
    pod.rt = pod
        .rt
        .clone()
        .with_arg("K8S_POD_NAMESPACE", "default")
        .with_arg("K8S_POD_NAME", "nginx")
        .with_arg("K8S_POD_UID", "f00");
    let result = runner.add(&list, &pod.rt).expect("ADD");
    assert_eq!(result["interfaces"][0]["name"], "calic440f455693");
    runner.del(&list, &pod.rt).expect("DEL");
    assert!(node.reservations().is_empty());
}

/// One pod with `plugin` changed by `edit`; returns the node, pod and result.
fn one_pod(
    stack: Stack,
    version: &str,
    edit: impl FnOnce(&Node, &mut Value),
) -> (Node, Pod, Value) {
    let node = Node::new();
    let mut plugin = node.plugin(stack);
    edit(&node, &mut plugin);
    let list = node.conflist(version, &plugin);
    let pod = node.pod("ab5e000000000000000000000000000a");
    let result = node.runner().add(&list, &pod.rt).expect("ADD");
    (node, pod, result)
}

fn mtus(node: &Node, pod: &Pod) -> (Value, Value) {
    let host = node
        .link(&cni_host_veth(&pod.rt.container_id))
        .expect("host veth");
    (host["mtu"].clone(), pod.iface()["mtu"].clone())
}

#[test]
fn mtu_from_the_config_key_on_both_ends() {
    let (node, pod, result) = one_pod(Stack::Dual, "1.1.0", |_, p| p["mtu"] = json!(1400));
    assert_eq!(mtus(&node, &pod), (json!(1400), json!(1400)));
    let want = Expect {
        host_veth: &cni_host_veth(&pod.rt.container_id),
        ips: node.pod_ips(Stack::Dual, 0),
        mtu: 1400,
    };
    assert_networked(&node, &pod, &want);
    assert_result(&result, "1.1.0", &pod, &want, None);
}

/// `mtu` absent: the MTU file (whitespace trimmed) decides.
#[test]
fn mtu_from_the_mtu_file_when_the_key_is_absent() {
    let (node, pod, result) = one_pod(Stack::V4, "1.1.0", |node, _| {
        fs::write(node.mtu_file(), "1350\n").expect("mtu file");
    });
    assert_eq!(mtus(&node, &pod), (json!(1350), json!(1350)));
    if let Some(mtu) = result["interfaces"][1].get("mtu") {
        assert_eq!(mtu, 1350, "{result}");
    }
}

#[test]
fn mtu_key_wins_over_the_mtu_file() {
    let (node, pod, _) = one_pod(Stack::V4, "1.0.0", |node, p| {
        fs::write(node.mtu_file(), "1350").expect("mtu file");
        p["mtu"] = json!(1420);
    });
    assert_eq!(mtus(&node, &pod), (json!(1420), json!(1420)));
}

#[test]
fn mtu_is_the_kernel_default_without_key_or_file() {
    let (node, pod, _) = one_pod(Stack::V4, "1.0.0", |_, p| p["mtu"] = json!(0));
    assert_eq!(mtus(&node, &pod), (json!(1500), json!(1500)));
}

fn queues(link: &Value) -> (Value, Value) {
    (link["num_tx_queues"].clone(), link["num_rx_queues"].clone())
}

/// `num_queues` sets TX and RX queue counts of both ends; absent means 1 (a veth created
/// without the attribute would get one per CPU).
#[test]
fn num_queues_sets_tx_and_rx_queues_of_both_ends() {
    let (node, pod, _) = one_pod(Stack::V4, "1.0.0", |_, p| p["num_queues"] = json!(4));
    let host = node
        .link(&cni_host_veth(&pod.rt.container_id))
        .expect("host");
    assert_eq!(queues(&host), (json!(4), json!(4)), "host end");
    assert_eq!(queues(&pod.iface()), (json!(4), json!(4)), "container end");

    // Absent or 0: one queue each.
    for conf in [json!(null), json!(0)] {
        let (node, pod, _) = one_pod(Stack::V4, "1.0.0", |_, p| {
            if !conf.is_null() {
                p["num_queues"] = conf.clone();
            }
        });
        let host = node
            .link(&cni_host_veth(&pod.rt.container_id))
            .expect("host");
        assert_eq!(queues(&host), (json!(1), json!(1)), "host end, {conf}");
        assert_eq!(
            queues(&pod.iface()),
            (json!(1), json!(1)),
            "container end, {conf}"
        );
    }
}

/// `device_type: "veth"` is the default spelled out.
#[test]
fn device_type_veth_is_accepted() {
    let (node, pod, _) = one_pod(Stack::V4, "1.0.0", |_, p| p["device_type"] = json!("veth"));
    let host = node
        .link(&cni_host_veth(&pod.rt.container_id))
        .expect("host");
    assert_eq!(host["linkinfo"]["info_kind"], "veth");
}

/// Node defaults that contradict every host-side sysctl, a pod whose IPv6 is disabled and
/// forwarding on: the plugin writes each value itself, and traffic still flows both ways
/// in both families.
#[test]
fn every_sysctl_is_written_whatever_the_defaults() {
    let node = Node::new();
    node.hostile_interface_defaults();
    let pod = node.pod("5c5c000000000000000000000000000a");
    for key in [
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
        "net.ipv6.conf.all.disable_ipv6",
        "net.ipv6.conf.default.disable_ipv6",
        "net.ipv6.conf.lo.disable_ipv6",
        "net.ipv6.conf.default.accept_dad",
    ] {
        pod.set_sysctl(&dotted(key), "1");
    }
    let list = node.conflist("1.0.0", &node.plugin(Stack::Dual));
    let runner = node.runner();
    runner.add(&list, &pod.rt).expect("ADD");
    let veth = cni_host_veth(&pod.rt.container_id);
    assert_sysctls(&node, &pod, &veth, true, true, false);
    assert_networked(
        &node,
        &pod,
        &Expect {
            host_veth: &veth,
            ips: node.pod_ips(Stack::Dual, 0),
            mtu: 1500,
        },
    );
    for (pod_ip, node_ip) in [
        (
            IpAddr::from(node.pod_v4(0)),
            IpAddr::from(node.address_v4()),
        ),
        (node.pod_v6(0).into(), node.address_v6().into()),
    ] {
        assert_tcp(&pod.netns, pod_ip, &node.netns, node_ip, "node to pod");
        assert_tcp(&node.netns, node_ip, &pod.netns, pod_ip, "pod to node");
    }
    runner.del(&list, &pod.rt).expect("DEL");
}

/// `container_settings.allow_ip_forwarding: true` turns forwarding on in the pod, for each
/// family it has an address of.
#[test]
fn allow_ip_forwarding_turns_forwarding_on_in_the_pod() {
    let node = Node::new();
    let pod = node.pod("f0f0000000000000000000000000000a");
    pod.set_sysctl(&["net", "ipv4", "ip_forward"], "0");
    pod.set_sysctl(&["net", "ipv6", "conf", "all", "forwarding"], "0");
    let mut plugin = node.plugin(Stack::Dual);
    plugin["container_settings"] = json!({"allow_ip_forwarding": true});
    let list = node.conflist("1.0.0", &plugin);
    node.runner().add(&list, &pod.rt).expect("ADD");
    let veth = cni_host_veth(&pod.rt.container_id);
    assert_sysctls(&node, &pod, &veth, true, true, true);
}

/// A host veth of the same name left behind (here a veth pair that lives in the node) is
/// deleted and replaced.
#[test]
fn stale_host_veth_of_the_same_name_is_replaced() {
    let node = Node::new();
    let pod = node.k8s_pod("57a1e00000000000000000000000000a", "default", "nginx");
    let veth = "calic440f455693";
    node.ip(&[
        "link",
        "add",
        veth,
        "type",
        "veth",
        "peer",
        "name",
        "stale-peer",
    ]);
    let list = node.conflist("1.0.0", &node.plugin(Stack::Dual));
    let runner = node.runner();
    let result = runner.add(&list, &pod.rt).expect("ADD over a stale veth");
    assert_eq!(result["interfaces"][0]["name"], veth);
    assert!(
        node.link("stale-peer").is_none(),
        "the stale pair is gone: {:?}",
        node.link_names()
    );
    let want = Expect {
        host_veth: veth,
        ips: node.pod_ips(Stack::Dual, 0),
        mtu: 1500,
    };
    assert_networked(&node, &pod, &want);
    assert_tcp(
        &pod.netns,
        node.pod_v4(0).into(),
        &node.netns,
        node.address_v4().into(),
        "node to pod",
    );
    runner.del(&list, &pod.rt).expect("DEL");
}

/// `ipam.routes` (host-local) replace the default container routes: only the node's own
/// subnets are routed, so the node is reachable and nothing else is. The result passes the
/// IPAM routes on.
#[test]
fn ipam_routes_replace_the_default_container_routes() {
    let node = Node::new();
    let mut plugin = node.plugin(Stack::Dual);
    let routes = json!([{"dst": node.node_subnet_v4()}, {"dst": node.node_subnet_v6()}]);
    plugin["ipam"]["routes"] = routes.clone();
    let list = node.conflist("1.0.0", &plugin);
    let runner = node.runner();
    let pod = node.k8s_pod("40a7e00000000000000000000000000a", "default", "routed");
    let result = runner.add(&list, &pod.rt).expect("ADD");
    let veth = k8s_host_veth("cali", "default", "routed");
    assert_eq!(
        pod.routes(Family::V4),
        sorted(vec![
            format!("{} via {GATEWAY_V4} dev eth0", node.node_subnet_v4()),
            format!("{GATEWAY_V4} dev eth0 scope link"),
        ])
    );
    assert_eq!(
        pod.routes(Family::V6),
        [format!(
            "{} via {GATEWAY_V6} dev eth0",
            node.node_subnet_v6()
        )]
    );
    let want = Expect {
        host_veth: &veth,
        ips: node.pod_ips(Stack::Dual, 0),
        mtu: 1500,
    };
    assert_result(&result, "1.0.0", &pod, &want, Some(routes));
    assert_tcp(
        &node.netns,
        node.address_v4().into(),
        &pod.netns,
        node.pod_v4(0).into(),
        "pod to node over the custom v4 route",
    );
    assert_tcp(
        &node.netns,
        node.address_v6().into(),
        &pod.netns,
        node.pod_v6(0).into(),
        "pod to node over the custom v6 route",
    );
    runner.del(&list, &pod.rt).expect("DEL");
}

/// With `include_default_routes: true` the defaults come back next to the IPAM routes.
/// A route's `gw` is ignored: the next hop is always Calico's.
#[test]
fn include_default_routes_keeps_the_defaults_next_to_ipam_routes() {
    let node = Node::new();
    let mut plugin = node.plugin(Stack::Dual);
    plugin["ipam"]["routes"] = json!([{"dst": "192.168.77.0/24", "gw": "10.99.99.99"},
                                      {"dst": "fd77::/64", "gw": "fd99::99"}]);
    plugin["include_default_routes"] = json!(true);
    let list = node.conflist("1.0.0", &plugin);
    let runner = node.runner();
    let pod = node.k8s_pod("40a7e00000000000000000000000000b", "default", "routed");
    runner.add(&list, &pod.rt).expect("ADD");
    assert_eq!(
        pod.routes(Family::V4),
        sorted(vec![
            format!("192.168.77.0/24 via {GATEWAY_V4} dev eth0"),
            format!("{GATEWAY_V4} dev eth0 scope link"),
            format!("default via {GATEWAY_V4} dev eth0"),
        ])
    );
    assert_eq!(
        pod.routes(Family::V6),
        sorted(vec![
            format!("fd77::/64 via {GATEWAY_V6} dev eth0"),
            format!("default via {GATEWAY_V6} dev eth0"),
        ])
    );
    runner.del(&list, &pod.rt).expect("DEL");
}

/// Spec §9 per version, v4-only, v6-only and dual-stack: `version` on each IP before 1.0.0,
/// none after; both interfaces; /32 and /128; `interface: 1`; no gateway; no routes.
#[test]
fn result_shape_per_cni_version() {
    for stack in [Stack::V4, Stack::V6, Stack::Dual] {
        let node = Node::new();
        let plugin = node.plugin(stack);
        let runner = node.runner();
        let mut seen = BTreeSet::new();
        for (n, version) in VERSIONS.iter().enumerate() {
            let list = node.conflist(version, &plugin);
            let id = format!("{n:x}e500000000000000000000000000000");
            let pod = node.pod(&id);
            let result = runner.add(&list, &pod.rt).expect(version);
            let veth = cni_host_veth(&id);
            let want = Expect {
                host_veth: &veth,
                ips: node.pod_ips(stack, n as u8),
                mtu: 1500,
            };
            assert_result(&result, version, &pod, &want, None);
            assert!(seen.insert(veth.clone()), "distinct veths");
            runner.del(&list, &pod.rt).expect("DEL");
        }
    }
}

/// A burst of pods on one node (kubelet starts sandboxes concurrently): every ADD runs at
/// the same time, each pod gets its own address and veth, and each is reachable.
#[test]
fn pods_added_concurrently_on_one_node_all_work() {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::Dual));
    let runner = node.runner();
    let pods: Vec<Pod> = (0..8)
        .map(|n| {
            node.k8s_pod(
                &format!("b0b{n}000000000000000000000000000"),
                "burst",
                &format!("p{n}"),
            )
        })
        .collect();
    std::thread::scope(|s| {
        for pod in &pods {
            let (runner, list) = (&runner, &list);
            s.spawn(move || runner.add(list, &pod.rt).expect("ADD"));
        }
    });
    let mut seen = BTreeSet::new();
    for (n, pod) in pods.iter().enumerate() {
        let veth = k8s_host_veth("cali", "burst", &format!("p{n}"));
        let addrs = pod.addresses();
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        for a in &addrs {
            assert!(seen.insert(a.clone()), "{a} handed out twice");
        }
        let want = Expect {
            host_veth: &veth,
            ips: addrs.clone(),
            mtu: 1500,
        };
        assert_networked(&node, pod, &want);
        for a in &addrs {
            let ip: IpAddr = bare(a).parse().expect("address");
            let from: IpAddr = if ip.is_ipv4() {
                node.address_v4().into()
            } else {
                node.address_v6().into()
            };
            assert_tcp(&pod.netns, ip, &node.netns, from, "node to pod");
        }
    }
    std::thread::scope(|s| {
        for pod in &pods {
            let (runner, list) = (&runner, &list);
            s.spawn(move || runner.del(list, &pod.rt).expect("DEL"));
        }
    });
    assert!(node.cali_links().is_empty(), "{:?}", node.cali_links());
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
}
