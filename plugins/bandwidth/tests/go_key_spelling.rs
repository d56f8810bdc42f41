//! Property: bandwidth's static limits, with their keys respelled as Go's decoder allows,
//! decode to the same limits.

use bandwidth::config::BandwidthConf;
use proptest::prelude::*;
use serde_json::{json, Value};
use shared::gojson::testing::respell;
use shared::gojson::Document;

fn decoded(value: &Value) -> BandwidthConf {
    let doc = Document::parse(value.to_string().as_bytes()).expect("JSON");
    doc.decode().expect("decodes")
}

fn sample() -> Value {
    json!({"type": "bandwidth", "ingressRate": 1000, "ingressBurst": 2000,
           "egressRate": 3000, "egressBurst": 4000})
}

proptest! {
    #[test]
    fn respelled_keys_decode_the_same(seed in any::<u64>()) {
        let want = decoded(&sample());
        prop_assert!(want.static_limits.as_ref().is_some_and(|l| l.egress_burst == 4000));
        prop_assert_eq!(decoded(&respell(&sample(), seed, &[], &[])), want);
    }
}
