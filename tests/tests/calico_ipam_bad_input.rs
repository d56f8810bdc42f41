//! calico-ipam given something it cannot work with: each case is a CNI error object on
//! stdout with the right code, exit status 1, a message that says what to fix, and the
//! datastore exactly as it was (snapshot before and after).

use std::fs;
use std::time::{Duration, Instant};

use cni_tests::fixtures::free_tcp_port;
use cni_tests::ipam::{merge, Backend, IpamFixture};
use serde_json::{json, Value};

const NODE: &str = "node-a";
const POOL4: &str = "10.83.0.0/24";

fn fixture(backend: Backend) -> IpamFixture {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL4, 26);
    fx.create_pool("fd00:83::/120", 122);
    fx
}

/// Runs ADD, which must fail with `code`; returns the message. The datastore must not
/// change.
fn refused_add(fx: &IpamFixture, conf: &Value, args: &[(&str, &str)], code: u64) -> String {
    let before = fx.snapshot();
    let out = fx.call("ADD", conf, "bad-input", args);
    let msg = out.refused(code, "ADD");
    assert_eq!(fx.snapshot(), before, "a refused ADD writes nothing");
    msg
}

fn unknown_pool_name(backend: Backend) {
    let fx = fixture(backend);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": ["no-such-pool"]}));
    let msg = refused_add(&fx, &conf, &[], 7);
    assert!(
        msg.contains("no-such-pool") && msg.contains("does not exist"),
        "names the pool: {msg}"
    );
}

fn v6_pool_in_ipv4_pools(backend: Backend) {
    let fx = fixture(backend);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": ["fd00:83::/120"]}));
    let msg = refused_add(&fx, &conf, &[], 7);
    assert!(
        msg.contains("fd00:83::/120") || msg.contains("IPv6"),
        "says which pool is of the wrong family: {msg}"
    );
}

fn exhausted_pool(backend: Backend) {
    let fx = fixture(backend);
    fx.create_pool("10.84.0.0/30", 30);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": ["10.84.0.0/30"]}));
    for i in 0..4 {
        let out = fx.call("ADD", &conf, &format!("fill-{i}"), &[]);
        assert_eq!(out.exit, Some(0), "{}", out.describe());
    }
    let msg = refused_add(&fx, &conf, &[], 105);
    assert!(
        msg.contains("Assigned 0 out of 1") && msg.contains("10.84.0.0/30"),
        "says the pool is used up: {msg}"
    );
}

fn datastore_type_consul(backend: Backend) {
    let fx = fixture(backend);
    let mut conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    conf["datastore_type"] = json!("consul");
    let msg = refused_add(&fx, &conf, &[], 7);
    assert!(
        msg.contains("consul") && msg.contains("etcdv3"),
        "names the bad value and the good ones: {msg}"
    );
}

/// The Kubernetes datastore needs an API server: without a kubeconfig (nor $KUBECONFIG, nor
/// `k8s_api_root`) the config is refused, naming the key to set.
fn kubernetes_without_a_kubeconfig(backend: Backend) {
    let fx = fixture(backend);
    let mut conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    conf["datastore_type"] = json!("kubernetes");
    if let Some(obj) = conf.as_object_mut() {
        obj.remove("kubernetes");
    }
    let msg = refused_add(&fx, &conf, &[], 7);
    assert!(msg.contains("kubernetes.kubeconfig"), "{msg}");
}

fn missing_nodename_file(backend: Backend) {
    let fx = fixture(backend);
    let mut conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    let file = fx.dir.path().join("nodename");
    if let Some(obj) = conf.as_object_mut() {
        obj.remove("nodename");
        obj.remove("nodename_file_optional");
    }
    conf["nodename_file"] = json!(file);
    let msg = refused_add(&fx, &conf, &[], 11);
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("calico/node"),
        "the file, and who writes it: {msg}"
    );
    // With `nodename` set, the file is only the sign that calico/node runs: the hint names
    // the key that drops that requirement.
    conf["nodename"] = json!(NODE);
    let before = fx.snapshot();
    let out = fx.call("ADD", &conf, "bad-input", &[]);
    out.refused(11, "ADD with nodename set");
    let details = out
        .json
        .as_ref()
        .map(|j| j["details"].clone())
        .unwrap_or_default();
    assert!(
        details
            .as_str()
            .is_some_and(|d| d.contains("nodename_file_optional")),
        "points at nodename_file_optional: {}",
        out.describe()
    );
    assert_eq!(fx.snapshot(), before, "nothing written");
}

#[test]
fn unreachable_etcd_is_try_again_later_and_prompt() {
    let fx = IpamFixture::new(Backend::Local);
    let mut conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    let dead = format!("http://127.0.0.1:{}", free_tcp_port().expect("port"));
    merge(
        &mut conf,
        &json!({"datastore_type": "etcdv3", "etcd_endpoints": dead}),
    );
    for command in ["ADD", "DEL"] {
        let started = Instant::now();
        let out = fx.call(command, &conf, "c1", &[]);
        let took = started.elapsed();
        let msg = out.refused(11, "ADD");
        assert!(msg.contains(&dead), "{command}: names the endpoint: {msg}");
        assert!(
            took < Duration::from_secs(3),
            "{command}: a refused connection is reported at once, took {took:?}"
        );
    }
}

#[test]
fn corrupt_local_block_is_named() {
    let fx = IpamFixture::new(Backend::Local);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    let out = fx.call("ADD", &conf, "c1", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let block = fx.blocks().remove(0);
    let path = fx.data_dir().join(block.key.trim_start_matches('/'));
    fs::write(&path, b"{\"cidr\": garbage").expect("corrupt the block");
    for (command, id) in [("ADD", "c2"), ("DEL", "c1")] {
        let before = fx.snapshot();
        let out = fx.call(command, &conf, id, &[]);
        assert_eq!(out.exit, Some(1), "{command}: {}", out.describe());
        let code = out.code();
        assert!(
            code == Some(106) || code == Some(104),
            "{command}: a datastore/state error: {}",
            out.describe()
        );
        let msg = out.msg().unwrap_or_default();
        assert!(msg.contains(&block.key), "{command}: names the key: {msg}");
        assert_eq!(fx.snapshot(), before, "{command}: nothing written");
    }
}

#[test]
fn corrupt_local_handle_is_named() {
    let fx = IpamFixture::new(Backend::Local);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    let out = fx.call("ADD", &conf, "c1", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let key = "/calico/ipam/v2/handle/ipam-e2e.c1";
    fs::write(fx.data_dir().join(key.trim_start_matches('/')), b"[1,").expect("corrupt");
    let before = fx.snapshot();
    let out = fx.call("DEL", &conf, "c1", &[]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    let code = out.code();
    assert!(code == Some(106) || code == Some(104), "{}", out.describe());
    assert!(
        out.msg().unwrap_or_default().contains(key),
        "names the key: {}",
        out.describe()
    );
    assert_eq!(fx.snapshot(), before);
}

/// The `local` store makes the pools its config names; a pool smaller than Calico's default
/// block (/26) must still be usable (one block the size of the pool), or be refused as a
/// configuration error naming the pool, without leaving a pool object no ADD can use.
#[test]
fn local_pool_smaller_than_a_default_block() {
    let fx = IpamFixture::new(Backend::Local);
    let pool = "10.85.0.0/28";
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [pool]}));
    let out = fx.call("ADD", &conf, "c1", &[]);
    if out.exit == Some(0) {
        let addrs = out.addresses();
        assert_eq!(addrs.len(), 1, "{}", out.describe());
        assert!(
            addrs[0].starts_with("10.85.0.") && addrs[0].ends_with("/28"),
            "an address of the pool, in a block no bigger than the pool: {addrs:?}"
        );
    } else {
        let msg = out.refused(7, "ADD");
        assert!(msg.contains(pool), "names the pool: {msg}");
        assert_eq!(
            fx.snapshot(),
            Default::default(),
            "a refused ADD leaves no pool behind"
        );
    }
}

cni_tests::on_every_datastore!(
    unknown_pool_name,
    v6_pool_in_ipv4_pools,
    exhausted_pool,
    datastore_type_consul,
    kubernetes_without_a_kubeconfig,
    missing_nodename_file,
    dual_stack_is_all_or_nothing,
    disabled_pool_named,
);

/// Dual stack is all or nothing (spec §6.1 step 6): when one family cannot be served, the
/// other family's address is given back and no handle stays.
fn dual_stack_is_all_or_nothing(backend: Backend) {
    for (short, v4_pool, v6_pool) in [
        ("IPv6", POOL4, "fd00:84::/126"),
        ("IPv4", "10.84.1.0/30", "fd00:83::/120"),
    ] {
        let fx = fixture(backend);
        fx.create_pool("fd00:84::/126", 126);
        fx.create_pool("10.84.1.0/30", 30);
        let full = if short == "IPv6" { v6_pool } else { v4_pool };
        let family = if short == "IPv6" {
            "ipv6_pools"
        } else {
            "ipv4_pools"
        };
        let filler = fx.conf(
            "1.0.0",
            NODE,
            json!({family: [full], "assign_ipv4":
            if short == "IPv6" { "false" } else { "true" }, "assign_ipv6":
            if short == "IPv6" { "true" } else { "false" }}),
        );
        for i in 0..4 {
            let out = fx.call("ADD", &filler, &format!("fill-{i}"), &[]);
            assert_eq!(out.exit, Some(0), "filling {full}: {}", out.describe());
        }
        let held_before =
            cni_tests::ipam::allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
        let conf = fx.conf(
            "1.0.0",
            NODE,
            json!({"ipv4_pools": [v4_pool], "ipv6_pools": [v6_pool], "assign_ipv6": "true"}),
        );
        let out = fx.call("ADD", &conf, "dual", &[]);
        let msg = out.refused(105, "ADD");
        assert!(msg.contains(short), "{short} short: {msg}");
        let snapshot = fx.snapshot();
        let held = cni_tests::ipam::allocations(&snapshot).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            held, held_before,
            "{short} short: the other family's address is released"
        );
        assert!(
            !fx.handles().contains_key("ipam-e2e.dual"),
            "{short} short: no handle left"
        );
    }
}

/// A pool named explicitly must be enabled.
fn disabled_pool_named(backend: Backend) {
    let fx = fixture(backend);
    fx.put(
        "/calico/resources/v3/projectcalico.org/ippools/off",
        &json!({"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": "off"},
                "spec": {"cidr": "10.89.0.0/24", "blockSize": 26, "disabled": true}})
        .to_string(),
    );
    for entry in ["off", "10.89.0.0/24"] {
        let conf = fx.conf("1.0.0", NODE, json!({ "ipv4_pools": [entry] }));
        let msg = refused_add(&fx, &conf, &[], 7);
        assert!(
            msg.contains(entry) || msg.contains("10.89.0.0/24"),
            "names the pool: {msg}"
        );
    }
}

/// A block whose `cidr` is not the one its key names (hand-edited, or restored under the
/// wrong key): every ADD used to end as "excessive concurrent IPAM requests" (11), a retry
/// that can never succeed. It is the datastore's problem, named with its key.
fn block_under_another_cidrs_key(backend: Backend) {
    let fx = fixture(backend);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    let out = fx.call("ADD", &conf, "c1", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let block = fx.blocks().remove(0);
    let mut value = fx.get(&block.key).expect("the block is stored");
    value["cidr"] = json!("10.99.0.0/26");
    fx.put(&block.key, &value.to_string());
    let msg = refused_add(&fx, &conf, &[], 106);
    assert!(
        msg.contains(&block.key) && msg.contains("10.99.0.0/26"),
        "names the key and the cidr: {msg}"
    );
}

#[test]
fn local_block_under_another_cidrs_key() {
    block_under_another_cidrs_key(Backend::Local);
}

#[test]
fn etcd_block_under_another_cidrs_key() {
    block_under_another_cidrs_key(Backend::Etcd);
}
