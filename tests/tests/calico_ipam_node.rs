//! calico-ipam assigns only to a node Calico knows: on etcd and Kubernetes, where calico/node
//! registers a Node object for every node, an ADD whose node name has no Node is refused
//! (as libcalico-go's assignment refuses it), saying which name was looked up and where
//! it came from, and writes nothing. The single-node `local` store has no calico/node and
//! no Node objects: it assigns without one. And `calico-ipam -v`, as Calico's.

use cni_tests::ipam::{Backend, IpamFixture};
use cni_tests::on_datastores;
use serde_json::json;

const POOL: &str = "10.84.0.0/26";

fn an_unregistered_node_gets_no_address(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 28);
    let mut conf = fx.conf("1.0.0", "node-a", json!({"ipv4_pools": [POOL]}));
    conf["nodename"] = json!("ghost-node");
    let before = fx.snapshot();

    let out = fx.call("ADD", &conf, "c1", &[]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert_eq!(out.code(), Some(11), "worth retrying: {}", out.describe());
    let msg = out.msg().unwrap_or_default();
    assert!(
        msg.contains("Node(ghost-node)")
            && msg.contains("the network configuration's \"nodename\""),
        "names the node and where its name came from: {msg}"
    );
    let details = out
        .json
        .as_ref()
        .map(|j| j["details"].to_string())
        .unwrap_or_default();
    assert!(
        details.contains("calico/node"),
        "says what to do: {}",
        out.describe()
    );
    assert_eq!(fx.snapshot(), before, "a refused ADD writes nothing");

    // Once calico/node has registered it, the same ADD is wired.
    fx.register_node("ghost-node");
    let out = fx.call("ADD", &conf, "c1", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
}

fn the_single_node_store_needs_no_node_object(backend: Backend) {
    let fx = IpamFixture::new(backend);
    let mut conf = fx.conf("1.0.0", "node-a", json!({"ipv4_pools": [POOL]}));
    conf["nodename"] = json!("ghost-node");
    let out = fx.call("ADD", &conf, "c1", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(
        !fx.snapshot().keys().any(|k| k.contains("/nodes/")),
        "no Node object was needed or made"
    );
}

on_datastores!([etcd: Etcd, kubernetes: Kubernetes] an_unregistered_node_gets_no_address);

mod single_node {
    use super::the_single_node_store_needs_no_node_object;
    cni_tests::on_datastores!([local: Local] the_single_node_store_needs_no_node_object);
}

/// `calico-ipam -v` and `calico -v` print the same version, as Calico's binaries do for the
/// installer and for operators checking what a node runs; neither touches a datastore.
#[test]
fn both_calico_binaries_print_their_version() {
    let version = |binary: &str| {
        let out = std::process::Command::new(cni_tests::fixtures::plugin_dir().join(binary))
            .arg("-v")
            .env_remove("CNI_COMMAND")
            .output()
            .unwrap_or_else(|e| panic!("run {binary} -v: {e}"));
        assert!(out.status.success(), "{binary} -v: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let ipam = version("calico-ipam");
    assert!(
        !ipam.is_empty() && ipam.split('.').all(|p| p.parse::<u32>().is_ok()),
        "a version: {ipam:?}"
    );
    assert_eq!(ipam, version("calico"));
}
