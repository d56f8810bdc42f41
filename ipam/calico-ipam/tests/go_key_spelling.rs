//! Property: calico-ipam's config (datastore, node name, lock, IPAM section, Kubernetes
//! and policy sections), with its keys respelled as Go's decoder allows, decodes to the
//! same configuration.

use calico_ipam::netconf::IpamNetConf;
use proptest::prelude::*;
use serde_json::{json, Value};
use shared::gojson::testing::respell;
use shared::gojson::Document;

fn decoded(value: &Value) -> String {
    let doc = Document::parse(value.to_string().as_bytes()).expect("JSON");
    let conf: IpamNetConf = doc.decode().expect("decodes");
    format!("{conf:?} {:?}", conf.policy.policy_type)
}

fn sample() -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
        "datastore_type": "etcdv3", "etcd_endpoints": "https://127.0.0.1:2379",
        "etcd_key_file": "/k", "etcd_cert_file": "/c", "etcd_ca_cert_file": "/ca",
        "etcd_scheme": "https", "etcd_authority": "127.0.0.1:2379",
        "etcd_discovery_srv": "example.test",
        "local_data_dir": "/var/lib/calico/x",
        "nodename": "n1", "nodename_file": "/f", "nodename_file_optional": true,
        "hostname": "h1", "ipam_lock_file": "/l",
        "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true",
                 "ipv4_pools": ["10.0.0.0/16"], "ipv6_pools": ["fd00::/48"]},
        "kubernetes": {"kubeconfig": "/kc", "k8s_api_root": "https://api", "node_name": "n1"},
        "policy": {"type": "k8s", "k8s_api_root": "https://api", "k8s_auth_token": "t",
                   "k8s_client_certificate": "/cc", "k8s_client_key": "/ck",
                   "k8s_certificate_authority": "/ca"}
    })
}

#[test]
fn the_sample_sets_every_key() {
    let conf = decoded(&sample());
    assert!(!conf.contains("None") && !conf.contains("false"), "{conf}");
}

proptest! {
    #[test]
    fn respelled_keys_decode_the_same(seed in any::<u64>()) {
        prop_assert_eq!(decoded(&respell(&sample(), seed, &[], &[])), decoded(&sample()));
    }
}
