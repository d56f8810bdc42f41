//! Property: Calico's config, with its keys respelled as Go's decoder allows, decodes to
//! the same configuration; `dataplane_options` is a map and keeps its keys.

use calico::config::CalicoConf;
use proptest::prelude::*;
use serde_json::{json, Value};
use shared::gojson::testing::respell;

fn decoded(value: &Value) -> String {
    let conf: CalicoConf =
        shared::gojson::from_slice(value.to_string().as_bytes()).expect("decodes");
    format!("{conf:?}")
}

fn sample() -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
        "datastore_type": "kubernetes", "nodename": "n1", "nodename_file_optional": true,
        "nodename_file": "/f", "hostname": "h1",
        "etcd_endpoints": "https://127.0.0.1:2379", "etcd_key_file": "/k",
        "etcd_cert_file": "/c", "etcd_ca_cert_file": "/ca", "local_data_dir": "/d",
        "etcd_scheme": "https", "etcd_authority": "127.0.0.1:2379",
        "etcd_discovery_srv": "example.test",
        "mtu": 1440, "mtu_file": "/m", "require_mtu_file": true, "num_queues": 2,
        "device_type": "veth",
        "ipam": {"type": "calico-ipam", "routes": [{"dst": "0.0.0.0/0"}]},
        "policy": {"type": "k8s", "k8s_api_root": "https://api", "k8s_auth_token": "t",
                   "k8s_client_certificate": "/cc", "k8s_client_key": "/ck",
                   "k8s_certificate_authority": "/ca"},
        "kubernetes": {"kubeconfig": "/kc", "k8s_api_root": "https://api", "node_name": "n1"},
        "container_settings": {"allow_ip_forwarding": true},
        "feature_control": {"ip_addrs_no_ipam": true, "floating_ips": true},
        "include_default_routes": true,
        "dataplane_options": {"Type": "x", "someOption": 1}
    })
}

#[test]
fn the_sample_sets_every_key() {
    let conf = decoded(&sample());
    assert!(
        !conf.contains(": None") && !conf.contains(": false"),
        "{conf}"
    );
}

proptest! {
    #[test]
    fn respelled_keys_decode_the_same(seed in any::<u64>()) {
        let respelled = respell(&sample(), seed, &["dataplane_options"], &[]);
        prop_assert_eq!(decoded(&respelled), decoded(&sample()));
    }
}
