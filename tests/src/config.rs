//! The JSON each plugin receives on stdin, built as libcni's `buildOneConfig` and
//! `injectRuntimeConfig` build it, and the small result-version fix-ups libcni applies to a
//! cached result before handing it back as `prevResult`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::conflist::{ConfList, PluginConf};
use crate::version;

/// One (container, interface) pair in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// The request config for one plugin of an ADD, DEL or CHECK: the plugin's own object with
/// `name` and `cniVersion` of the list, `prevResult` when there is one, and `runtimeConfig`
/// when any declared capability has a runtime value. Injected keys replace what the plugin
/// object had (libcni overwrites too), other keys stay as written.
pub fn build_plugin_config(
    list: &ConfList,
    plugin: &PluginConf,
    prev_result: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Map<String, Value> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let rc = runtime_config(plugin, capability_args);
    // An empty map is not injected: a plugin's own `runtimeConfig`, if it has one, survives.
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    conf
}

/// `{capability: value}` for each capability the plugin declares `true` and the runtime
/// supplies; a runtime value the plugin did not ask for never reaches it.
pub fn runtime_config(
    plugin: &PluginConf,
    capability_args: &Map<String, Value>,
) -> Map<String, Value> {
    plugin
        .enabled_capabilities()
        .filter_map(|cap| {
            capability_args
                .get(cap)
                .map(|v| (cap.to_string(), v.clone()))
        })
        .collect()
}

/// The GC request for one plugin: `name`, `cniVersion` and, when the runtime passed a list,
/// the valid attachments under both `cni.dev/valid-attachments` and the spelling of the
/// 1.1.0 spec text, `cni.dev/attachments` (libcni sends both; see cni#1101).
pub fn gc_config(
    list: &ConfList,
    plugin: &PluginConf,
    valid: Option<&[GcAttachment]>,
) -> Map<String, Value> {
    let mut conf = status_config(list, plugin);
    if let Some(valid) = valid {
        let value = Value::Array(
            valid
                .iter()
                .map(|a| serde_json::json!({"containerID": a.container_id, "ifname": a.ifname}))
                .collect(),
        );
        conf.insert("cni.dev/valid-attachments".into(), value.clone());
        conf.insert("cni.dev/attachments".into(), value);
    }
    conf
}

/// The STATUS request for one plugin: the plugin object with `name` and `cniVersion`.
pub fn status_config(list: &ConfList, plugin: &PluginConf) -> Map<String, Value> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    conf
}

/// Gives a result the `cniVersion` a plugin expects. libcni converts a cached result to the
/// list's version before passing it as `prevResult`; between the rich formats (0.3.0 and
/// later) the only structural difference is the per-IP `version` field, present before 1.0.0
/// and absent from 1.0.0 on. 1.1-only fields are left in place (plugins ignore unknown keys).
pub fn result_as_version(result: &Value, target: &str) -> Value {
    let mut out = result.clone();
    let Value::Object(map) = &mut out else {
        return out;
    };
    let wants_ip_version = !version::at_least(target, "1.0.0").unwrap_or(true);
    if let Some(Value::Array(ips)) = map.get_mut("ips") {
        for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
            if wants_ip_version {
                if !ip.contains_key("version") {
                    let family = match ip.get("address").and_then(Value::as_str) {
                        Some(a) if a.contains(':') => "6",
                        _ => "4",
                    };
                    ip.insert("version".into(), Value::String(family.into()));
                }
            } else {
                ip.remove("version");
            }
        }
    }
    map.insert("cniVersion".into(), Value::String(target.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> ConfList {
        ConfList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"k8s","plugins":[
                {"type":"calico","name":"ignored","mtu":1440},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false},"runtimeConfig":{"keep":1}},
                {"type":"bandwidth","capabilities":{"bandwidth":true}}]}"#,
        )
        .expect("list")
    }

    fn caps() -> Map<String, Value> {
        json!({"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}],
               "bandwidth":{"ingressRate":1000},"mac":"aa:bb:cc:dd:ee:ff"})
        .as_object()
        .cloned()
        .expect("object")
    }

    #[test]
    fn injects_name_and_version_and_no_prev_result_for_the_first_plugin() {
        let l = list();
        let conf = build_plugin_config(&l, &l.plugins[0], None, &caps());
        assert_eq!(conf["name"], "k8s");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["mtu"], 1440);
        assert!(!conf.contains_key("prevResult"));
        // No capability declared: no runtimeConfig at all.
        assert!(!conf.contains_key("runtimeConfig"));
    }

    #[test]
    fn injects_prev_result_and_only_declared_capabilities() {
        let l = list();
        let prev = json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/32"}]});
        let conf = build_plugin_config(&l, &l.plugins[1], Some(&prev), &caps());
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(
            Value::Object(conf["runtimeConfig"].as_object().cloned().expect("rc")),
            json!({"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]})
        );
        // capabilities stay in, as libcni leaves them.
        assert_eq!(conf["capabilities"]["portMappings"], true);
        let bw = build_plugin_config(&l, &l.plugins[2], Some(&prev), &caps());
        assert_eq!(
            bw["runtimeConfig"],
            json!({"bandwidth":{"ingressRate":1000}})
        );
    }

    #[test]
    fn keeps_the_plugins_own_runtime_config_when_nothing_is_injected() {
        let l = list();
        let conf = build_plugin_config(&l, &l.plugins[1], None, &Map::new());
        assert_eq!(conf["runtimeConfig"], json!({"keep":1}));
    }

    #[test]
    fn gc_config_carries_both_attachment_keys() {
        let l = list();
        let valid = [GcAttachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }];
        let conf = gc_config(&l, &l.plugins[0], Some(&valid));
        let expected = json!([{"containerID":"c1","ifname":"eth0"}]);
        assert_eq!(conf["cni.dev/valid-attachments"], expected);
        assert_eq!(conf["cni.dev/attachments"], expected);
        assert_eq!(conf["name"], "k8s");
        let none = gc_config(&l, &l.plugins[0], None);
        assert!(!none.contains_key("cni.dev/valid-attachments"));
    }

    #[test]
    fn converts_ip_version_fields_between_formats() {
        let r04 = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]});
        let r10 = result_as_version(&r04, "1.0.0");
        assert_eq!(
            r10,
            json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]})
        );
        let back = result_as_version(
            &json!({"cniVersion":"1.0.0","ips":[{"address":"fd00::2/64"}]}),
            "0.3.1",
        );
        assert_eq!(back["ips"][0]["version"], "6");
        assert_eq!(back["cniVersion"], "0.3.1");
    }
}
