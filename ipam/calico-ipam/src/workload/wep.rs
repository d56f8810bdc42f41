//! The v3 WorkloadEndpoint as Calico stores it on etcd (spec §5.4): its fields in Calico's
//! order, empty ones left out (they are `omitempty` there), no `resourceVersion` (etcd's mod
//! revision is the version). Fields this model does not know are kept as read, so updating
//! an endpoint a newer writer made does not strip what it added.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::endpoint::{Endpoint, EndpointPort, IpNat};
use super::{uid, EndpointError};
use crate::timestamp;

/// Where WorkloadEndpoints live: `<prefix>/<namespace>/<name>`.
pub const WEP_PREFIX: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints";

/// Labels Calico sets on every stored endpoint (libcalico-go overrides whatever was given).
pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
pub const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";

pub fn key(namespace: &str, name: &str) -> String {
    format!("{WEP_PREFIX}/{namespace}/{name}")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadEndpoint {
    pub kind: String,
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: Spec,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Metadata {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub generate_name: String,
    pub namespace: String,
    pub uid: String,
    pub creation_timestamp: String,
    pub labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Spec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    /// Empty for both orchestrators, as Calico's plugin leaves it: the name carries the pod
    /// or container id, and `pod` / `containerID` hold them.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub workload: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(rename = "containerID", skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<IpNetwork>,
    #[serde(rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

impl WorkloadEndpoint {
    /// The endpoint as stored. `stored` is what is there now, if anything: its uid and
    /// creation time are kept (Calico updates the object it read), and so is every field
    /// this model does not own.
    pub fn of(
        endpoint: &Endpoint,
        stored: Option<WorkloadEndpoint>,
    ) -> Result<WorkloadEndpoint, EndpointError> {
        let key = &endpoint.key;
        let stored = stored.unwrap_or_default();
        let mut labels = endpoint.labels.clone();
        labels.insert(LABEL_NAMESPACE.into(), key.namespace.clone());
        labels.insert(LABEL_ORCHESTRATOR.into(), key.orchestrator().into());
        let service_account = endpoint
            .service_account
            .clone()
            .filter(|sa| !sa.is_empty() && key.pod.is_some())
            .unwrap_or_default();
        // A label value holds at most 63 characters; Calico leaves longer names out.
        if !service_account.is_empty() && service_account.len() < 63 {
            labels.insert(LABEL_SERVICE_ACCOUNT.into(), service_account.clone());
        }
        let uid = match stored.metadata.uid {
            uid if uid.is_empty() => uid::uuid_v4().map_err(EndpointError::Uid)?,
            uid => uid,
        };
        let creation_timestamp = match stored.metadata.creation_timestamp {
            t if t.is_empty() => timestamp::rfc3339_now(),
            t => t,
        };
        Ok(WorkloadEndpoint {
            kind: "WorkloadEndpoint".into(),
            api_version: "projectcalico.org/v3".into(),
            metadata: Metadata {
                name: key.name.clone(),
                generate_name: endpoint.generate_name.clone().unwrap_or_default(),
                namespace: key.namespace.clone(),
                uid,
                creation_timestamp,
                labels,
                unknown: stored.metadata.unknown,
            },
            spec: Spec {
                orchestrator: key.orchestrator().into(),
                workload: String::new(),
                node: endpoint.node.clone(),
                container_id: key.container_id.clone(),
                pod: key.pod.clone().unwrap_or_default(),
                endpoint: endpoint.interface.clone(),
                service_account_name: service_account,
                ip_networks: endpoint.ip_networks.clone(),
                ip_nats: endpoint.ip_nats.clone(),
                profiles: endpoint.profiles.clone(),
                interface_name: endpoint.host_interface.clone(),
                mac: endpoint.mac.clone(),
                ports: endpoint.ports.clone(),
                allow_spoofed_source_prefixes: endpoint.allowed_source_prefixes.clone(),
                unknown: stored.spec.unknown,
            },
            unknown: stored.unknown,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::workload::endpoint::EndpointKey;
    use serde_json::json;

    pub(crate) fn endpoint(pod: Option<&str>) -> Endpoint {
        Endpoint {
            key: EndpointKey {
                namespace: "default".into(),
                name: "node--a-cni-0123abcd-eth0".into(),
                pod: pod.map(str::to_string),
                container_id: "0123abcd".into(),
            },
            node: "node-a".into(),
            interface: "eth0".into(),
            profiles: vec!["net".into()],
            network_profile: Some("net".into()),
            labels: BTreeMap::new(),
            service_account: None,
            generate_name: None,
            host_interface: "cali0123456789a".into(),
            mac: "02:42:ac:11:00:02".into(),
            ip_networks: vec![
                "10.0.0.5/32".parse().expect("cidr"),
                "fd00::5/128".parse().expect("cidr"),
            ],
            ip_nats: Vec::new(),
            ports: Vec::new(),
            allowed_source_prefixes: Vec::new(),
        }
    }

    fn stored() -> WorkloadEndpoint {
        serde_json::from_value(json!({
            "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": "x", "uid": "3f1f0b9a-0c1e-4f7e-9a55-0d4f2c1b2a10",
                         "creationTimestamp": "2025-05-01T10:20:30Z",
                         "annotations": {"kept": "yes"}},
            "spec": {"containerID": "old", "qosControls": {"ingressBandwidth": 1000}}
        }))
        .expect("stored")
    }

    #[test]
    fn a_plain_container_is_stored_as_calico_stores_it_byte_for_byte() {
        let wep = WorkloadEndpoint::of(&endpoint(None), Some(stored())).expect("wep");
        let text = serde_json::to_string(&wep).expect("json");
        assert_eq!(
            text,
            concat!(
                r#"{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","#,
                r#""metadata":{"name":"node--a-cni-0123abcd-eth0","namespace":"default","#,
                r#""uid":"3f1f0b9a-0c1e-4f7e-9a55-0d4f2c1b2a10","#,
                r#""creationTimestamp":"2025-05-01T10:20:30Z","#,
                r#""labels":{"projectcalico.org/namespace":"default","#,
                r#""projectcalico.org/orchestrator":"cni"},"annotations":{"kept":"yes"}},"#,
                r#""spec":{"orchestrator":"cni","node":"node-a","containerID":"0123abcd","#,
                r#""endpoint":"eth0","ipNetworks":["10.0.0.5/32","fd00::5/128"],"#,
                r#""profiles":["net"],"interfaceName":"cali0123456789a","#,
                r#""mac":"02:42:ac:11:00:02","qosControls":{"ingressBandwidth":1000}}}"#
            )
        );
    }

    #[test]
    fn a_new_endpoint_gets_a_fresh_uid_and_a_pods_service_account_its_label() {
        let mut e = endpoint(Some("web-0"));
        e.service_account = Some("builder".into());
        e.generate_name = Some("web-".into());
        e.ip_nats = vec![IpNat {
            internal: "10.0.0.5".parse().expect("ip"),
            external: "192.0.2.7".parse().expect("ip"),
        }];
        let v = serde_json::to_value(WorkloadEndpoint::of(&e, None).expect("wep")).expect("v");
        assert_eq!(v["metadata"]["uid"].as_str().map(str::len), Some(36));
        assert_eq!(v["metadata"]["generateName"], "web-");
        assert_eq!(v["spec"]["pod"], "web-0");
        assert_eq!(v["spec"]["serviceAccountName"], "builder");
        assert_eq!(
            v["metadata"]["labels"]["projectcalico.org/serviceaccount"],
            "builder"
        );
        assert_eq!(
            v["spec"]["ipNATs"],
            json!([{"internalIP": "10.0.0.5", "externalIP": "192.0.2.7"}])
        );
        e.service_account = Some("s".repeat(63));
        let v = serde_json::to_value(WorkloadEndpoint::of(&e, None).expect("wep")).expect("v");
        assert!(v["metadata"]["labels"]
            .get("projectcalico.org/serviceaccount")
            .is_none());
    }
}
