//! The whole chain on one node: a runtime runs our `calico` plugin, which delegates to
//! `calico-ipam` on the `local` datastore (the keys calico-ipam needs sit at the top level of
//! the calico config, which it reads from the same stdin). Two pods get /32 addresses from
//! the pool, talk to each other over TCP through the node, and DEL gives their addresses
//! back. Plugins run inside a node namespace of the test's own. Needs root.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;

use cni_tests::ipam::{allocations, contains, merge, operator, Backend, IpamFixture};
use cni_tests::pod::{assert_tcp, Node, NET};
use serde_json::{json, Value};

const POOL: &str = "172.30.0.0/24";

fn pod_address(result: &Value) -> IpAddr {
    let ips = result["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1, "one address: {result}");
    let address = ips[0]["address"].as_str().expect("address");
    let (ip, prefix) = address.split_once('/').expect("CIDR");
    assert_eq!(
        prefix, "32",
        "calico reports the pod's address as /32: {result}"
    );
    ip.parse().expect("address")
}

#[test]
fn calico_with_calico_ipam_networks_two_pods_that_talk() {
    let node = Node::new();
    let store = IpamFixture::new(Backend::Local);
    let mut plugin = json!({
        "type": "calico",
        "log_level": "debug",
        "nodename_file": node.nodename_file(),
        "mtu_file": node.mtu_file(),
        "ipam_lock_file": store.lock_file("e2e-node"),
        "ipam": {"type": "calico-ipam", "ipv4_pools": [POOL]},
    });
    merge(&mut plugin, &store.datastore_keys());
    let list = node.conflist("1.0.0", &plugin);
    let runner = node.runner();

    let one = node.k8s_pod("chain-one", "ns1", "one");
    let two = node.pod("chain-two");
    let ip1 = pod_address(&runner.add(&list, &one.rt).expect("ADD pod one"));
    let ip2 = pod_address(&runner.add(&list, &two.rt).expect("ADD pod two"));
    assert_ne!(ip1, ip2);
    for (pod, ip) in [(&one, ip1), (&two, ip2)] {
        assert!(contains(POOL, ip), "{ip} from {POOL}");
        assert_eq!(pod.addresses(), vec![format!("{ip}/32")], "on eth0");
    }

    // calico-ipam recorded both, with calico's network name and the node from its file.
    let held = allocations(&store.snapshot()).unwrap_or_else(|e| panic!("{e}"));
    let expected: BTreeMap<IpAddr, String> = [
        (ip1, format!("{NET}.chain-one")),
        (ip2, format!("{NET}.chain-two")),
    ]
    .into();
    assert_eq!(held, expected);
    let blocks = store.blocks();
    assert_eq!(blocks.len(), 1, "one block for the node");
    assert_eq!(blocks[0].affinity(), Some("host:e2e-node"));
    let attr = blocks[0]
        .attribute_of(blocks[0].ordinal_of(ip1).expect("in block"))
        .expect("allocated")
        .clone();
    assert_eq!(attr["secondary"]["pod"], "one", "{attr}");
    assert_eq!(attr["secondary"]["namespace"], "ns1", "{attr}");

    assert_tcp(&one.netns, ip1, &two.netns, ip2, "pod two to pod one");
    assert_tcp(&two.netns, ip2, &one.netns, ip1, "pod one to pod two");

    // The runtime's cache knows both attachments: the operator's check finds no leak.
    let conflist = store.dir.path().join("chain.conflist");
    fs::write(
        &conflist,
        json!({"cniVersion": "1.0.0", "name": NET, "plugins": [plugin]}).to_string(),
    )
    .expect("write conflist");
    let cache = node.dir.cache_dir().display().to_string();
    let out = operator(&conflist, &["check", "--cache-dir", &cache]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());

    runner.del(&list, &one.rt).expect("DEL pod one");
    runner.del(&list, &two.rt).expect("DEL pod two");
    runner.del(&list, &two.rt).expect("DEL pod two again");
    assert_eq!(store.handles(), BTreeMap::new(), "no handle left");
    let blocks = store.blocks();
    assert!(blocks[0].all_free(), "{}", blocks[0].value);
    assert_eq!(
        blocks[0].affinity(),
        Some("host:e2e-node"),
        "the block stays the node's"
    );
    node.assert_node_clean("after DEL");
}
