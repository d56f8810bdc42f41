//! The conflists we ship (`conflists/`) are templates the installer fills in: once filled,
//! each must be a valid conflist whose calico entry this plugin accepts, chaining the
//! plugins a Calico node runs.

use std::path::PathBuf;

use calico::config::CalicoConf;
use serde_json::{json, Value};

/// The installer's placeholders, with the values a node would get.
const PLACEHOLDERS: [(&str, &str); 7] = [
    ("__KUBERNETES_NODE_NAME__", "node-a"),
    ("__CNI_MTU__", "1440"),
    (
        "__KUBECONFIG_FILEPATH__",
        "/etc/cni/net.d/calico-kubeconfig",
    ),
    ("__ETCD_ENDPOINTS__", "http://127.0.0.1:2379"),
    // No etcd TLS: the installer renders each as "".
    ("__ETCD_KEY_FILE__", ""),
    ("__ETCD_CERT_FILE__", ""),
    ("__ETCD_CA_CERT_FILE__", ""),
];

fn conflist(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../conflists")
        .join(name);
    let mut text = std::fs::read_to_string(&path).expect("conflist file");
    for (key, value) in PLACEHOLDERS {
        text = text.replace(key, value);
    }
    assert!(!text.contains("__"), "{name}: unfilled placeholder");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The calico entry as the runtime hands it to the plugin.
fn calico_entry(list: &Value) -> CalicoConf {
    let mut entry = list["plugins"][0].clone();
    assert_eq!(entry["type"], "calico");
    entry["name"] = list["name"].clone();
    entry["cniVersion"] = list["cniVersion"].clone();
    CalicoConf::parse(entry.to_string().as_bytes()).expect("calico accepts its entry")
}

fn types(list: &Value) -> Vec<String> {
    list["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn kubernetes_conflist_chains_calico_ipam_portmap_and_bandwidth() {
    for file in ["10-calico.conflist", "10-calico-etcd.conflist"] {
        let list = conflist(file);
        assert_eq!(list["name"], "k8s-pod-network", "{file}");
        assert_eq!(types(&list), ["calico", "portmap", "bandwidth"], "{file}");
        assert_eq!(
            list["plugins"][1]["capabilities"],
            json!({"portMappings": true})
        );
        assert_eq!(
            list["plugins"][2]["capabilities"],
            json!({"bandwidth": true})
        );
        let calico = calico_entry(&list);
        assert_eq!(calico.ipam.plugin_type, "calico-ipam", "{file}");
        assert_eq!(calico.mtu().expect("mtu"), Some(1440));
        assert_eq!(calico.node.nodename.as_deref(), Some("node-a"));
    }
    let etcd = calico_entry(&conflist("10-calico-etcd.conflist"));
    assert_eq!(etcd.datastore.datastore_type.as_deref(), Some("etcdv3"));
    assert_eq!(
        etcd.datastore.etcd_endpoints.as_deref(),
        Some("http://127.0.0.1:2379")
    );
    let kdd = calico_entry(&conflist("10-calico.conflist"));
    assert_eq!(kdd.datastore.datastore_type.as_deref(), Some("kubernetes"));
}

#[test]
fn host_local_conflist_takes_the_nodes_pod_cidr() {
    let list = conflist("10-calico-host-local.conflist");
    assert_eq!(types(&list), ["calico", "portmap", "bandwidth"]);
    let calico = calico_entry(&list);
    assert_eq!(calico.ipam.plugin_type, "host-local");
    assert_eq!(list["plugins"][0]["ipam"]["subnet"], "usePodCidr");
}

#[test]
fn single_node_conflist_needs_no_service() {
    let list = conflist("10-calico-single-node.conflist");
    assert_eq!(types(&list), ["calico"]);
    let calico = calico_entry(&list);
    assert!(
        calico.node.nodename_file_optional,
        "no calico/node to write the nodename file"
    );
    assert_eq!(calico.node_name().expect("node name"), "node-a");
    assert_eq!(calico.ipam.plugin_type, "calico-ipam");
    // calico-ipam reads the same entry: the embedded datastore, dual stack.
    let mut entry = list["plugins"][0].clone();
    entry["name"] = list["name"].clone();
    let ipam: calico_ipam::netconf::IpamNetConf =
        shared::gojson::Document::from_value(shared::gojson::Value::from_json(&entry))
            .decode()
            .expect("calico-ipam accepts it");
    assert_eq!(ipam.datastore(), Ok(calico_ipam::netconf::Datastore::Local));
    assert!(ipam.assign_v4() && ipam.assign_v6());
    assert_eq!(ipam.ipam.ipv4_pools, ["10.244.0.0/16"]);
}
