//! Property: portmap's config, with its keys respelled as Go's decoder allows, decodes to
//! the same settings.

use portmap::config::PortmapConf;
use proptest::prelude::*;
use serde_json::{json, Value};
use shared::gojson::testing::respell;
use shared::gojson::Document;

fn decoded(value: &Value) -> String {
    let doc = Document::parse(value.to_string().as_bytes()).expect("JSON");
    format!("{:?}", doc.decode::<PortmapConf>().expect("decodes"))
}

fn sample() -> Value {
    json!({"type": "portmap", "snat": false, "markMasqBit": 5,
           "externalSetMarkChain": "KUBE-MARK-MASQ", "conditionsV4": ["-s", "10.0.0.0/8"],
           "conditionsV6": ["!", "-d", "fd00::/8"], "backend": "iptables"})
}

#[test]
fn the_sample_sets_every_key() {
    assert!(
        !decoded(&sample()).contains("None"),
        "{}",
        decoded(&sample())
    );
}

proptest! {
    #[test]
    fn respelled_keys_decode_the_same(seed in any::<u64>()) {
        prop_assert_eq!(decoded(&respell(&sample(), seed, &[], &[])), decoded(&sample()));
    }
}
