//! The network's Profile on a key-value datastore (spec §3.1 "Profiles"). Without
//! `policy.type: k8s` nothing else gives the workload a policy, and Felix drops the traffic
//! of an endpoint whose profile does not exist, so Calico's plugin creates
//! `/calico/resources/v3/projectcalico.org/profiles/<network>` when it is missing and reuses
//! it, untouched, when it is there (an operator may have edited its rules):
//!
//! - ingress: from any endpoint carrying the network's label (`has(<network>)`) for plain
//!   containers; from anywhere for Kubernetes pods;
//! - egress: allowed;
//! - `labelsToApply`: `{<network>: ""}`, the label the ingress rule selects.
//!
//! On the Kubernetes datastore profiles are derived from namespaces and service accounts
//! and cannot be written, which is why Kubernetes deployments use `policy.type: k8s`.

use serde::Serialize;
use std::collections::BTreeMap;

use super::{uid, EndpointError};
use crate::store::kv::Kv;
use crate::store::StoreError;
use crate::timestamp;

pub const PROFILE_PREFIX: &str = "/calico/resources/v3/projectcalico.org/profiles";

pub fn key(name: &str) -> String {
    format!("{PROFILE_PREFIX}/{name}")
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Profile<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Metadata<'a>,
    spec: Spec<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    name: &'a str,
    uid: String,
    creation_timestamp: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
    labels_to_apply: BTreeMap<&'a str, &'a str>,
}

/// A Calico rule. `source` and `destination` are structs in Calico's Go model, which
/// `omitempty` never leaves out: an empty one is written as `{}`.
#[derive(Debug, Serialize)]
struct Rule {
    action: &'static str,
    source: EntityRule,
    destination: EntityRule,
}

#[derive(Debug, Default, Serialize)]
struct EntityRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<String>,
}

fn allow(source: EntityRule) -> Rule {
    Rule {
        action: "Allow",
        source,
        destination: EntityRule::default(),
    }
}

fn profile<'a>(name: &'a str, orchestrator: &str) -> Result<Profile<'a>, EndpointError> {
    let ingress = if orchestrator == "k8s" {
        allow(EntityRule::default())
    } else {
        allow(EntityRule {
            selector: Some(format!("has({name})")),
        })
    };
    Ok(Profile {
        kind: "Profile",
        api_version: "projectcalico.org/v3",
        metadata: Metadata {
            name,
            uid: uid::uuid_v4().map_err(EndpointError::Uid)?,
            creation_timestamp: timestamp::rfc3339_now(),
        },
        spec: Spec {
            ingress: vec![ingress],
            egress: vec![allow(EntityRule::default())],
            labels_to_apply: BTreeMap::from([(name, "")]),
        },
    })
}

/// Creates the profile `name` unless it exists. `true` when it was created now.
pub fn ensure(kv: &dyn Kv, name: &str, orchestrator: &str) -> Result<bool, EndpointError> {
    let key = key(name);
    let failed = |op: &str, source| EndpointError::Store {
        what: format!("{op} Profile {key}"),
        source,
    };
    if kv
        .get(&key)
        .map_err(|e| failed("error reading", e))?
        .is_some()
    {
        return Ok(false);
    }
    let value = serde_json::to_vec(&profile(name, orchestrator)?).unwrap_or_default();
    log::info!("creating profile {name}");
    match kv.create(&key, &value) {
        Ok(_) => Ok(true),
        // Another pod's ADD created it meanwhile: reused, as if it had been there.
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(failed("error creating", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryKv;
    use serde_json::{json, Value};

    #[test]
    fn created_once_as_calico_writes_it_then_reused_untouched() {
        let kv = MemoryKv::new();
        assert!(ensure(&kv, "net", "cni").expect("created"));
        let stored: Value = serde_json::from_slice(&kv.dump()[&key("net")]).expect("json");
        assert_eq!(stored["kind"], "Profile");
        assert_eq!(stored["metadata"]["name"], "net");
        assert_eq!(
            stored["spec"],
            json!({"ingress": [{"action": "Allow", "source": {"selector": "has(net)"},
                                "destination": {}}],
                   "egress": [{"action": "Allow", "source": {}, "destination": {}}],
                   "labelsToApply": {"net": ""}})
        );
        kv.inject_conflict(&key("net"));
        let before = kv.dump()[&key("net")].clone();
        assert!(!ensure(&kv, "net", "cni").expect("reused"));
        assert_eq!(kv.dump()[&key("net")], before);
    }

    #[test]
    fn a_kubernetes_pods_profile_allows_all_ingress() {
        let kv = MemoryKv::new();
        ensure(&kv, "k8s-pod-network", "k8s").expect("created");
        let stored: Value =
            serde_json::from_slice(&kv.dump()[&key("k8s-pod-network")]).expect("json");
        assert_eq!(
            stored["spec"]["ingress"],
            json!([{"action": "Allow", "source": {}, "destination": {}}])
        );
    }
}
