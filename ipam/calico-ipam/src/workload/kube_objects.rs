//! The Kubernetes objects a pod's identity comes from (its Node's pod CIDRs, its Namespace's
//! and its own annotations, labels, service account and ports), as typed models of the
//! fields Calico reads, and the reads themselves.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::endpoint::EndpointPort;
use crate::k8s::KubeError;
use crate::store::in_use;
use crate::store::kube::KubeStore;

/// `null` reads as the default, as Go reads a JSON `null` into a slice or a map.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(deserialize_with = "nullable")]
    pub uid: String,
    #[serde(deserialize_with = "nullable")]
    pub resource_version: String,
    #[serde(deserialize_with = "nullable")]
    pub generate_name: String,
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Kept as JSON values: the plugin refuses a non-string annotation by name instead of
    /// failing to read the whole object.
    #[serde(deserialize_with = "nullable")]
    pub annotations: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Node {
    pub metadata: ObjectMeta,
    pub spec: NodeSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NodeSpec {
    /// One per family at most, assigned by the controller manager.
    #[serde(rename = "podCIDRs", deserialize_with = "nullable")]
    pub pod_cidrs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    /// The pod as the API server returned it: the addresses are read from it the way the
    /// IPAM garbage collector reads every pod ([`in_use::pod_ips`]).
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    #[serde(deserialize_with = "nullable")]
    pub node_name: String,
    #[serde(deserialize_with = "nullable")]
    pub host_network: bool,
    #[serde(deserialize_with = "nullable")]
    pub service_account_name: String,
    #[serde(deserialize_with = "nullable")]
    pub containers: Vec<Container>,
    #[serde(deserialize_with = "nullable")]
    pub init_containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Container {
    #[serde(deserialize_with = "nullable")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub container_port: u16,
    #[serde(deserialize_with = "nullable")]
    pub host_port: u16,
    #[serde(rename = "hostIP", deserialize_with = "nullable")]
    pub host_ip: String,
    #[serde(deserialize_with = "nullable")]
    pub protocol: String,
}

impl Pod {
    /// From the object the API server returned.
    pub fn from_value(raw: Value) -> Result<Pod, serde_json::Error> {
        let mut pod: Pod = serde_json::from_value(raw.clone())?;
        pod.raw = raw;
        Ok(pod)
    }

    /// Host-networked or not yet scheduled: Calico networks no such pod.
    pub fn is_endpoint(&self) -> bool {
        !self.spec.host_network && !self.spec.node_name.is_empty()
    }

    /// The addresses the pod holds: `status.podIPs`, `status.podIP`, then Calico's
    /// annotations.
    pub fn addresses(&self) -> Result<Vec<IpAddr>, String> {
        in_use::pod_ips(&self.raw)
    }

    /// The ports Felix exports for named-port policy (spec §5.4): init-container and
    /// container ports that have a name or a host port; protocol lower-cased, TCP when unset.
    pub fn endpoint_ports(&self) -> Vec<EndpointPort> {
        self.spec
            .init_containers
            .iter()
            .chain(&self.spec.containers)
            .flat_map(|c| &c.ports)
            .filter(|p| !p.name.is_empty() || p.host_port != 0)
            .map(|p| EndpointPort {
                name: p.name.clone(),
                protocol: if p.protocol.is_empty() {
                    "tcp".into()
                } else {
                    p.protocol.to_ascii_lowercase()
                },
                port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
            })
            .collect()
    }
}

/// Only a Kubernetes object name goes into a URL path: lower-case letters, digits, `-`, `.`.
pub fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
}

pub fn pod_path(namespace: &str, name: &str) -> Result<String, KubeError> {
    for part in [namespace, name] {
        if !is_object_name(part) {
            return Err(KubeError::Config(format!(
                "{part:?} is not a Kubernetes object name"
            )));
        }
    }
    Ok(format!("/api/v1/namespaces/{namespace}/pods/{name}"))
}

fn decode<T: for<'de> Deserialize<'de>>(path: &str, object: Value) -> Result<T, KubeError> {
    serde_json::from_value(object).map_err(|e| KubeError::Invalid {
        what: path.to_string(),
        message: format!("the object cannot be read: {e}"),
    })
}

/// The identity reads, one round trip each; `None` when the object does not exist.
impl KubeStore {
    pub fn get_node_object(&self, name: &str) -> Result<Option<Node>, KubeError> {
        if !is_object_name(name) {
            return Err(KubeError::Config(format!(
                "node name {name:?} is not a Kubernetes object name"
            )));
        }
        let path = format!("/api/v1/nodes/{name}");
        self.client()
            .get(&path)?
            .map(|o| decode(&path, o))
            .transpose()
    }

    pub fn get_namespace(&self, name: &str) -> Result<Option<Namespace>, KubeError> {
        if !is_object_name(name) {
            return Err(KubeError::Config(format!(
                "namespace {name:?} is not a Kubernetes object name"
            )));
        }
        let path = format!("/api/v1/namespaces/{name}");
        self.client()
            .get(&path)?
            .map(|o| decode(&path, o))
            .transpose()
    }

    /// `GET /version`: the server answers, with these credentials.
    pub fn check_version(&self) -> Result<(), KubeError> {
        self.client().version().map(|_| ())
    }

    pub fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, KubeError> {
        let path = pod_path(namespace, name)?;
        let Some(raw) = self.client().get(&path)? else {
            return Ok(None);
        };
        Pod::from_value(raw)
            .map(Some)
            .map_err(|e| KubeError::Invalid {
                what: path,
                message: format!("the object cannot be read: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_reads_as_the_api_server_writes_it_nulls_included() {
        let pod = Pod::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "ns", "labels": null,
                         "annotations": {"a": "b"}, "resourceVersion": "7"},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa",
                     "initContainers": [{"ports": [{"containerPort": 9, "hostPort": 19}]}],
                     "containers": [{"ports": [
                         {"name": "http", "containerPort": 80, "protocol": "UDP",
                          "hostIP": "10.0.0.1"},
                         {"containerPort": 81}]}, {"ports": null}]},
            "status": {"podIPs": [{"ip": "10.1.0.5"}]}
        }))
        .expect("pod");
        assert!(pod.is_endpoint());
        assert_eq!(pod.metadata.resource_version, "7");
        assert!(pod.metadata.labels.is_empty());
        assert_eq!(
            pod.addresses().expect("ips"),
            vec!["10.1.0.5".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(
            serde_json::to_value(pod.endpoint_ports()).expect("json"),
            json!([{"protocol": "tcp", "port": 9, "hostPort": 19},
                   {"name": "http", "protocol": "udp", "port": 80, "hostIP": "10.0.0.1"}])
        );
        let host =
            Pod::from_value(json!({"spec": {"nodeName": "n1", "hostNetwork": true}})).expect("pod");
        assert!(!host.is_endpoint());
        assert!(!Pod::default().is_endpoint());
    }

    #[test]
    fn only_object_names_reach_a_path() {
        assert!(pod_path("kube-system", "coredns-5d78c9869d-abc12").is_ok());
        for (ns, pod) in [("a/b", "p"), ("ns", "p?x=1"), ("ns", "P"), ("", "p")] {
            assert!(pod_path(ns, pod).is_err(), "{ns} {pod}");
        }
    }
}
