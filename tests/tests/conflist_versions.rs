//! The shipped conflists name the versions they speak in `cniVersions` (spec 1.1) beside
//! `cniVersion`: a runtime whose libcni knows `cniVersions` runs the chain at 1.1.0 and so
//! gets GC and STATUS, and one that does not (an older libcni reads `cniVersion` only) runs
//! it at the `cniVersion` as before. The single-node conflist, rendered as the installer
//! renders it, is driven by the libcni-style runner in a node namespace of the test's own.
//! Needs root.

use std::fs;
use std::path::Path;

use cni_tests::pod::{Node, IFNAME};
use cni_tests::{ConfList, GcAttachment, RuntimeConf, TestNetns};
use serde_json::{json, Value};

const POOL4: &str = "10.219.0.0/24";
const POOL6: &str = "fd00:219::/120";

/// Every shipped conflist: what a 1.1 runtime and an older one each choose.
#[test]
fn every_shipped_conflist_offers_1_1_0_and_keeps_its_cni_version() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conflists");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).expect("conflists/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("conflist") {
            continue;
        }
        seen += 1;
        let text = render(&fs::read_to_string(&path).expect("read"));
        let list = ConfList::from_bytes(text.as_bytes()).expect("parses");
        assert_eq!(list.cni_version, "1.1.0", "{}", path.display());
        let old = ConfList::from_bytes(without_cni_versions(&text).as_bytes()).expect("parses");
        let raw: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            old.cni_version,
            raw["cniVersion"].as_str().expect("cniVersion"),
            "{}",
            path.display()
        );
    }
    assert!(seen >= 4, "only {seen} conflists");
}

fn render(text: &str) -> String {
    text.replace("__KUBERNETES_NODE_NAME__", "versions-node")
        .replace("__CNI_MTU__", "1450")
        .replace("__ETCD_ENDPOINTS__", "http://127.0.0.1:2379")
        .replace("__ETCD_KEY_FILE__", "")
        .replace("__ETCD_CERT_FILE__", "")
        .replace("__ETCD_CA_CERT_FILE__", "")
}

/// The conflist as a runtime that predates `cniVersions` sees it.
fn without_cni_versions(text: &str) -> String {
    let mut raw: Value = serde_json::from_str(text).expect("JSON");
    if let Some(o) = raw.as_object_mut() {
        o.remove("cniVersions");
    }
    raw.to_string()
}

/// The single-node conflist pointed at this node's own datastore, lock and pools.
fn single_node_list(node: &Node) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conflists/10-calico-single-node.conflist");
    let mut list: Value =
        serde_json::from_str(&render(&fs::read_to_string(path).expect("read"))).expect("JSON");
    let calico = &mut list["plugins"][0];
    calico["local_data_dir"] = json!(node.dir.path().join("datastore"));
    calico["ipam_lock_file"] = json!(node.dir.path().join("ipam.lock"));
    calico["ipam"]["ipv4_pools"] = json!([POOL4]);
    calico["ipam"]["ipv6_pools"] = json!([POOL6]);
    list.to_string()
}

/// calico-ipam's handles in the node's local datastore.
fn handles(node: &Node) -> Vec<String> {
    let dir = node.dir.path().join("datastore/calico/ipam/v2/handle");
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// At 1.1.0, GC reaches calico and calico-ipam: a pod the runtime lost track of (its
/// sandbox and cache entry gone, as after a node crash) has its addresses released, and the
/// pod that is still there keeps its own.
#[test]
fn gc_through_the_shipped_conflist_releases_a_leaked_allocation() {
    let node = Node::new();
    let text = single_node_list(&node);
    let list = ConfList::from_bytes(text.as_bytes()).expect("conflist");
    assert_eq!(list.cni_version, "1.1.0");
    let runner = node.runner();
    let kept_ns = TestNetns::new("ver-kept").expect("pod netns");
    let kept = RuntimeConf::new("ver-kept-1", kept_ns.path_str(), IFNAME);
    let result = runner.add(&list, &kept).expect("ADD of the kept pod");
    assert_eq!(result["cniVersion"], "1.1.0");
    let leaked = {
        let ns = TestNetns::new("ver-leak").expect("pod netns");
        let rt = RuntimeConf::new("ver-leak-1", ns.path_str(), IFNAME);
        runner
            .add(&list, &rt)
            .expect("ADD of the pod that will leak");
        runner.cache().delete(&list.name, &rt.container_id, IFNAME);
        rt
    };
    assert_eq!(handles(&node).len(), 2, "both pods hold addresses");
    let valid = [GcAttachment {
        container_id: kept.container_id.clone(),
        ifname: IFNAME.into(),
    }];
    runner.gc(&list, Some(&valid)).expect("GC");
    let left = handles(&node);
    assert_eq!(left.len(), 1, "one handle left: {left:?}");
    assert!(
        left[0].contains(&kept.container_id),
        "the kept pod's: {left:?}"
    );
    assert!(!left[0].contains(&leaked.container_id));
    runner.del(&list, &kept).expect("DEL");
    assert!(handles(&node).is_empty(), "nothing left after DEL");
}

/// A runtime that reads only `cniVersion` runs the same conflist at 0.3.1 (the 10-calico
/// conflists') or 1.0.0 (single-node), unaffected by `cniVersions`.
#[test]
fn a_runtime_without_cni_versions_runs_the_conflist_at_its_cni_version() {
    let node = Node::new();
    let text = without_cni_versions(&single_node_list(&node));
    let mut raw: Value = serde_json::from_str(&text).expect("JSON");
    raw["cniVersion"] = json!("0.3.1");
    let list = ConfList::from_bytes(raw.to_string().as_bytes()).expect("conflist");
    assert_eq!(list.cni_version, "0.3.1");
    let runner = node.runner();
    let ns = TestNetns::new("ver-old").expect("pod netns");
    let rt = RuntimeConf::new("ver-old-1", ns.path_str(), IFNAME);
    let result = runner.add(&list, &rt).expect("ADD at 0.3.1");
    assert_eq!(result["cniVersion"], "0.3.1");
    assert_eq!(result["ips"][0]["version"], "4", "0.3.1's shape: {result}");
    assert_eq!(handles(&node).len(), 1);
    runner.del(&list, &rt).expect("DEL at 0.3.1");
    assert!(handles(&node).is_empty(), "nothing left after DEL");
}
