//! The calico plugin's stdin: `CalicoConf::parse`, the usePodCidr rewrite of its IPAM
//! section, and the pod and namespace annotations it honours.
//!
//! The input is the plugin's config; for the annotations, the harness reads two extra keys
//! of the same JSON object, `fuzzPodAnnotations` and `fuzzNamespaceAnnotations` (unknown
//! keys, so the plugin's own parse ignores them).
//!
//! Properties: nothing panics; after the usePodCidr rewrite (real CIDRs or the DEL-time
//! dummies) no keyword is left; annotations applied to the IPAM section leave a config that
//! still parses.

#![no_main]

use calico::annotations::{self, PodRequest};
use calico::config::CalicoConf;
use calico::pod_cidr::{self, PodCidrs};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    // The usePodCidr keyword handling works on any JSON, before the plugin's own parse.
    if let Ok(mut stdin) = serde_json::from_slice::<Value>(data) {
        if let Some(bytes) = pod_cidr::stdin_with_dummies(data) {
            let dummies: Value = serde_json::from_slice(&bytes).expect("our output is JSON");
            assert!(
                !pod_cidr::wanted(&dummies),
                "a keyword survived the dummies"
            );
        }
        let cidrs = PodCidrs {
            v4: Some("10.244.3.0/24".into()),
            v6: Some("fd00:10:244:3::/64".into()),
        };
        if pod_cidr::rewrite(&mut stdin, &cidrs).is_ok() {
            assert!(!pod_cidr::wanted(&stdin), "a keyword survived the rewrite");
        }
        let node = serde_json::json!({"spec": {"podCIDRs": stdin.get("fuzzPodCidrs")}});
        let _ = PodCidrs::of_node("node", &node);
    }

    let Ok(conf) = CalicoConf::parse(data) else {
        return;
    };
    let _ = conf.kubernetes_datastore();
    let _ = conf.num_queues();
    let _ = conf.datastore.kind();
    // An MTU of 0 means "read the MTU file", a path from the input: not for a fuzzer.
    if conf.mtu != 0 {
        let _ = conf.mtu();
    }

    let Ok(Value::Object(raw)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let object = |key: &str| -> Map<String, Value> {
        raw.get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let pod = object("fuzzPodAnnotations");
    let namespace = object("fuzzNamespaceAnnotations");
    for value in pod.values().filter_map(Value::as_str) {
        let _ = annotations::parse_mac(value);
    }
    let Ok(request) = PodRequest::parse(&namespace, &pod, &conf) else {
        return;
    };
    let mut stdin = Value::Object(raw.clone());
    if request.apply(&mut stdin).is_ok() {
        let bytes = serde_json::to_vec(&stdin).expect("serialises");
        if let Err(e) = CalicoConf::parse(&bytes) {
            panic!("annotations made the config unreadable: {e}");
        }
    }
});
