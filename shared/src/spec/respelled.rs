//! Property: a document whose keys are respelled as Go's decoder allows (any case, the two
//! non-ASCII letters that fold to `k` and `s`) decodes to the same value, for the shared
//! config and for results of every version. Map keys (`capabilities`) stay as written;
//! values kept raw for the next plugin (`args`, `prevResult`, `ipRanges`, the GC lists)
//! are compared as the plugins reading them compare them, so they are left as written.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{CniResult, NetConf, Version};
use crate::gojson::testing::respell;
use crate::gojson::Document;

fn netconf_sample() -> Value {
    json!({
        "cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.0.0"],
        "name": "net", "type": "portmap",
        "capabilities": {"portMappings": true, "bandwidth": true},
        "ipam": {"type": "host-local"},
        "dns": {"nameservers": ["10.0.0.10"], "domain": "cluster.local",
                "search": ["svc"], "options": ["ndots:5"]},
        "args": {"cni": {"ips": ["10.1.0.5"]}},
        "runtimeConfig": {
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp",
                              "hostIP": "10.0.0.1"}],
            "ipRanges": [[{"subnet": "10.1.0.0/24"}]],
            "bandwidth": {"ingressRate": 1, "ingressBurst": 2, "egressRate": 3,
                          "egressBurst": 4},
            "ips": ["10.1.0.5/24"], "mac": "0a:58:0a:01:00:05",
            "dns": {"servers": ["10.0.0.10"], "searches": ["svc"], "options": ["ndots:5"]},
            "aliases": ["web"], "deviceID": "0000:00:1f.6", "cgroupPath": "/kubepods/p1",
            "infinibandGUID": "00:11"
        },
        "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]},
        "log_level": "debug", "log_file_path": "/tmp/x.log",
        "cni.dev/valid-attachments": [{"containerID": "c", "ifname": "eth0"}],
        "cni.dev/attachments": [{"containerID": "c", "ifname": "eth0"}]
    })
}

fn result_sample() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:01:00:05", "mtu": 1500,
                        "sandbox": "/var/run/netns/x", "socketPath": "/run/s",
                        "pciID": "0000:00:1f.6"}],
        "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400, "advmss": 1360,
                    "priority": 10, "table": 100, "scope": 0}],
        "dns": {"nameservers": ["10.0.0.10"], "domain": "d", "search": ["s"],
                "options": ["o"]}
    })
}

fn netconf(value: &Value) -> String {
    let doc = Document::parse(value.to_string().as_bytes()).expect("JSON");
    let (conf, dropped) = NetConf::parse(&doc, false).expect("decodes");
    assert!(dropped.is_empty());
    format!("{conf:?}")
}

const OPAQUE: &[&str] = &[
    "args",
    "prevResult",
    "ipRanges",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
];

#[test]
fn the_samples_set_every_field() {
    // A sample that left fields at their defaults would not test their spelling.
    let conf = netconf(&netconf_sample());
    for unset in ["\"\"", "None", "[]", "{}"] {
        for end in [",", " }"] {
            assert!(
                !conf.contains(&format!(": {unset}{end}")),
                "{unset} in {conf}"
            );
        }
    }
    let result = CniResult::from_value(&result_sample(), Version::LATEST).expect("result");
    assert!(result.routes[0].table.is_some() && result.interfaces[0].pci_id.is_some());
}

proptest! {
    #[test]
    fn netconf_decodes_the_same_whatever_the_key_spelling(seed in any::<u64>()) {
        let sample = netconf_sample();
        let respelled = respell(&sample, seed, &["capabilities"], OPAQUE);
        prop_assert_eq!(netconf(&respelled), netconf(&sample));
    }

    #[test]
    fn results_decode_the_same_whatever_the_key_spelling(seed in any::<u64>()) {
        let sample = result_sample();
        let respelled = respell(&sample, seed, &[], &[]);
        for version in Version::ALL {
            let want = CniResult::from_value(&sample, version).map_err(|e| e.to_string());
            let got = CniResult::from_value(&respelled, version).map_err(|e| e.to_string());
            prop_assert_eq!(got, want);
        }
    }
}
