//! Conflists and single configs as the runner and cnitool load them (libcni's semantics:
//! `cni_tests::conflist`), and the per-plugin stdin built from a list.
//!
//! Properties: nothing panics; a loaded list has plugins, each with a type; every config
//! built for a plugin carries the list's name and chosen version; a list loaded from its
//! own bytes is the same list.

#![no_main]

use cni_tests::config::{build_plugin_config, gc_config, result_as_version, status_config};
use cni_tests::conflist::{select_version, ConfList};
use cni_tests::GcAttachment;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

fuzz_target!(|data: &[u8]| {
    let _ = ConfList::from_bytes(data);
    let _ = ConfList::from_single_conf_bytes(data);
    let Ok(list) = ConfList::from_any_bytes(data) else {
        return;
    };
    assert!(
        !list.plugins.is_empty(),
        "a list without plugins was accepted"
    );
    let again = ConfList::from_bytes(&list.bytes).expect("a list's own bytes load");
    assert_eq!(again, list, "a list changed when loaded from its own bytes");
    let _ = select_version(
        &list.cni_version,
        Some(std::slice::from_ref(&list.cni_version)),
    );

    let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/32"}]});
    let mut caps = Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 80, "containerPort": 8080}]),
    );
    caps.insert(
        "bandwidth".into(),
        json!({"ingressRate": 1000, "ingressBurst": 1000}),
    );
    let valid = [GcAttachment {
        container_id: "c".into(),
        ifname: "eth0".into(),
    }];
    let prev = result_as_version(&prev, &list.cni_version);
    for plugin in &list.plugins {
        assert!(!plugin.plugin_type.is_empty(), "a plugin without a type");
        let _ = plugin.name();
        let _ = plugin.enabled_capabilities().count();
        for conf in [
            build_plugin_config(&list, plugin, Some(&prev), &caps),
            gc_config(&list, plugin, Some(&valid)),
            status_config(&list, plugin),
        ] {
            assert_eq!(conf.get("name"), Some(&Value::String(list.name.clone())));
            assert_eq!(
                conf.get("cniVersion"),
                Some(&Value::String(list.cni_version.clone()))
            );
        }
    }
});
