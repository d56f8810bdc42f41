//! Property: host-local's config (range sets, the legacy single range, routes, its files,
//! requested addresses in args and runtimeConfig), with its keys respelled as Go's decoder
//! allows, decodes to the same configuration.

use host_local::config::HostLocalConf;
use proptest::prelude::*;
use serde_json::{json, Value};
use shared::gojson::testing::respell;
use shared::gojson::Document;
use shared::spec::args::CniArgs;

fn decoded(value: &Value) -> (String, String) {
    let doc = Document::parse(value.to_string().as_bytes()).expect("JSON");
    let conf: HostLocalConf = doc.decode().expect("decodes");
    let loaded = host_local::config::load(&conf, "net", &CniArgs::default())
        .map(|c| format!("{c:?}"))
        .unwrap_or_else(|e| format!("refused: {e}"));
    (format!("{conf:?}"), loaded)
}

fn sample() -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "net", "type": "host-local",
        "args": {"cni": {"ips": ["10.1.0.5"]}},
        "runtimeConfig": {"ips": ["10.2.0.6/24"],
                          "ipRanges": [[{"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.2",
                                         "rangeEnd": "10.2.0.99", "gateway": "10.2.0.1"}]]},
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.2",
                         "rangeEnd": "10.1.0.200", "gateway": "10.1.0.1"}]],
            "subnet": "10.9.0.0/24", "rangeStart": "10.9.0.2", "rangeEnd": "10.9.0.9",
            "gateway": "10.9.0.1",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400, "advmss": 1360,
                        "priority": 5, "table": 100, "scope": 0}],
            "dataDir": "/tmp/host-local-sample", "resolvConf": "/tmp/resolv.conf"
        }
    })
}

#[test]
fn the_sample_sets_every_key() {
    let (raw, _) = decoded(&sample());
    assert!(!raw.contains("None"), "{raw}");
}

proptest! {
    #[test]
    fn respelled_keys_decode_the_same(seed in any::<u64>()) {
        prop_assert_eq!(decoded(&respell(&sample(), seed, &[], &[])), decoded(&sample()));
    }
}

#[test]
fn the_sample_loads() {
    let (_, loaded) = decoded(&sample());
    assert!(!loaded.starts_with("refused"), "{loaded}");
}
