//! CNI 1.1.0's GC and STATUS on calico-ipam. GC releases the handles of this node and this
//! network whose container the runtime no longer lists in `cni.dev/valid-attachments`,
//! and nothing else (other nodes, other networks, listed containers). STATUS says whether
//! ADD can work: the datastore answers and an enabled pool exists for every family the
//! config assigns (code 50 otherwise, 11 when the datastore cannot be reached). Neither writes
//! anything it should not.

use std::collections::BTreeSet;

use cni_tests::fixtures::free_tcp_port;
use cni_tests::host_local::Outcome;
use cni_tests::ipam::{allocations, Backend, IpamFixture, NET};
use serde_json::{json, Value};

const POOL4: &str = "10.86.0.0/24";

fn ok(out: &Outcome, what: &str) {
    assert_eq!(out.exit, Some(0), "{what}: {}", out.describe());
}

fn handles(fx: &IpamFixture) -> BTreeSet<String> {
    fx.handles().into_keys().collect()
}

fn gc_conf(fx: &IpamFixture, node: &str, valid: &[&str]) -> Value {
    let mut conf = fx.conf("1.1.0", node, json!({"ipv4_pools": [POOL4]}));
    conf["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    conf
}

fn gc_releases_only_this_nodes_stale_handles(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL4, 26);
    let a = fx.conf("1.1.0", "node-a", json!({"ipv4_pools": [POOL4]}));
    let b = fx.conf("1.1.0", "node-b", json!({"ipv4_pools": [POOL4]}));
    let mut other_net = a.clone();
    other_net["name"] = json!("other-net");
    for id in ["keep-1", "keep-2", "stale-1", "stale-2"] {
        ok(&fx.call("ADD", &a, id, &[]), id);
    }
    ok(&fx.call("ADD", &b, "on-b", &[]), "ADD on node B");
    ok(
        &fx.call("ADD", &other_net, "x-1", &[]),
        "ADD on another network",
    );
    let h = |id: &str| format!("{NET}.{id}");
    let all = handles(&fx);
    assert_eq!(all.len(), 6, "{all:?}");

    ok(
        &fx.call(
            "GC",
            &gc_conf(&fx, "node-a", &["keep-1", "keep-2"]),
            "",
            &[],
        ),
        "GC",
    );
    let left = handles(&fx);
    let expected: BTreeSet<String> = [
        h("keep-1"),
        h("keep-2"),
        h("on-b"),
        "other-net.x-1".to_string(),
    ]
    .into();
    assert_eq!(
        left, expected,
        "GC releases exactly the stale handles of this node"
    );
    let held = allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
    let holders: BTreeSet<String> = held.values().cloned().collect();
    assert_eq!(holders, expected, "and their addresses");

    // Nothing more to do the second time.
    let before = fx.snapshot();
    ok(
        &fx.call(
            "GC",
            &gc_conf(&fx, "node-a", &["keep-1", "keep-2"]),
            "",
            &[],
        ),
        "second GC",
    );
    assert_eq!(
        fx.snapshot(),
        before,
        "GC with nothing stale writes nothing"
    );

    // An empty list: every handle of this node and network goes, no one else's.
    ok(
        &fx.call("GC", &gc_conf(&fx, "node-a", &[]), "", &[]),
        "GC all",
    );
    let expected: BTreeSet<String> = [h("on-b"), "other-net.x-1".to_string()].into();
    assert_eq!(handles(&fx), expected);
    allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
}

fn status_conf(fx: &IpamFixture, ipam: Value) -> Value {
    fx.conf("1.1.0", "node-a", ipam)
}

fn status_ready_with_a_usable_pool(backend: Backend) {
    let fx = IpamFixture::new(backend);
    if backend != Backend::Local {
        fx.create_pool(POOL4, 26);
    }
    let conf = status_conf(&fx, json!({"ipv4_pools": [POOL4]}));
    let before = fx.snapshot();
    ok(&fx.call("STATUS", &conf, "", &[]), "STATUS");
    assert_eq!(fx.snapshot(), before, "STATUS writes nothing");
    // And the ADD it vouches for works.
    ok(&fx.call("ADD", &conf, "c1", &[]), "ADD after STATUS");
}

fn status_needs_an_enabled_pool_of_each_assigned_family(backend: Backend) {
    let fx = IpamFixture::new(backend);
    let v4 = status_conf(&fx, json!({}));
    let dual = status_conf(&fx, json!({"assign_ipv6": "true"}));
    let not_available = |conf: &Value, what: &str| {
        let out = fx.call("STATUS", conf, "", &[]);
        assert_eq!(out.exit, Some(1), "{what}: {}", out.describe());
        assert_eq!(out.code(), Some(50), "{what}: {}", out.describe());
        let msg = out.msg().unwrap_or_default().to_string();
        assert!(msg.contains("pool"), "{what}: says what is missing: {msg}");
        msg
    };
    let msg = not_available(&v4, "no pool at all");
    assert!(msg.contains("IPv4"), "{msg}");
    // A disabled pool is no pool.
    fx.put(
        "/calico/resources/v3/projectcalico.org/ippools/off",
        &json!({"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": "off"},
                "spec": {"cidr": "10.87.0.0/24", "blockSize": 26, "disabled": true}})
        .to_string(),
    );
    not_available(&v4, "only a disabled pool");
    fx.create_pool(POOL4, 26);
    ok(&fx.call("STATUS", &v4, "", &[]), "STATUS with a v4 pool");
    let msg = not_available(&dual, "dual stack without a v6 pool");
    assert!(msg.contains("IPv6"), "{msg}");
    fx.create_pool("fd00:86::/120", 122);
    ok(&fx.call("STATUS", &dual, "", &[]), "STATUS dual stack");
}

#[test]
fn status_fails_when_etcd_is_unreachable() {
    let fx = IpamFixture::new(Backend::Local);
    let mut conf = status_conf(&fx, json!({"ipv4_pools": [POOL4]}));
    let dead = format!("http://127.0.0.1:{}", free_tcp_port().expect("port"));
    conf["datastore_type"] = json!("etcdv3");
    conf["etcd_endpoints"] = json!(dead);
    let out = fx.call("STATUS", &conf, "", &[]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert_eq!(out.code(), Some(11), "{}", out.describe());
    assert!(
        out.msg().unwrap_or_default().contains(&dead),
        "{}",
        out.describe()
    );
}

#[test]
fn gc_and_status_need_cni_1_1_0() {
    let fx = IpamFixture::new(Backend::Local);
    let conf = fx.conf("1.0.0", "node-a", json!({"ipv4_pools": [POOL4]}));
    ok(&fx.call("ADD", &conf, "c1", &[]), "ADD");
    let before = fx.snapshot();
    for command in ["GC", "STATUS"] {
        let out = fx.call(command, &conf, "", &[]);
        assert_eq!(out.exit, Some(1), "{command} on 1.0.0: {}", out.describe());
    }
    assert_eq!(fx.snapshot(), before, "a 1.0.0 GC releases nothing");
}

cni_tests::on_every_datastore!(
    gc_releases_only_this_nodes_stale_handles,
    status_ready_with_a_usable_pool,
    status_needs_an_enabled_pool_of_each_assigned_family,
);
