//! Endpoints on the Kubernetes datastore (spec §5.1, §5.3): there is no WorkloadEndpoint
//! object; a pod's endpoint is its Pod plus Calico's annotations, written through the
//! status subresource: `podIP` (the first address), `podIPs` (all, comma-separated), both
//! with their /32 or /128, and `containerID`, which guards a running pod against the late
//! DEL of its previous sandbox.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::endpoint::{Endpoint, EndpointKey, Removal};
use super::kube_objects::{pod_path, Pod};
use super::{EndpointError, EndpointStore};
use crate::k8s::client::PatchKind;
use crate::k8s::KubeError;
use crate::store::in_use::{POD_IPS_ANNOTATION as POD_IPS, POD_IP_ANNOTATION as POD_IP};
use crate::store::kube::KubeStore;
use crate::store::StoreError;

pub const CONTAINER_ID: &str = "cni.projectcalico.org/containerID";

/// How often DEL re-reads the pod when someone else changed it between the read and the
/// patch (Calico's number).
const DEL_ATTEMPTS: usize = 6;

pub struct PodEndpoints {
    store: KubeStore,
}

impl PodEndpoints {
    pub fn new(store: KubeStore) -> PodEndpoints {
        PodEndpoints { store }
    }
}

fn pod_name(key: &EndpointKey) -> Result<&str, EndpointError> {
    key.pod.as_deref().ok_or_else(|| {
        EndpointError::Config(
            "the Kubernetes datastore keeps a pod's endpoint on its Pod: CNI_ARGS must name it \
             with K8S_POD_NAMESPACE and K8S_POD_NAME"
                .into(),
        )
    })
}

fn kube(what: String) -> impl FnOnce(KubeError) -> EndpointError {
    move |source| EndpointError::Kube { what, source }
}

impl EndpointStore for PodEndpoints {
    fn ready(&self) -> Result<bool, StoreError> {
        crate::readiness::is_ready(&self.store)
    }

    fn kubernetes(&self) -> Option<&KubeStore> {
        Some(&self.store)
    }

    fn describe(&self, key: &EndpointKey) -> String {
        format!(
            "the podIP/podIPs annotations of pod {}/{}",
            key.namespace,
            key.pod.as_deref().unwrap_or_default()
        )
    }

    fn held_addresses(&self, key: &EndpointKey) -> Result<Vec<IpAddr>, EndpointError> {
        let name = pod_name(key)?;
        let pod = self
            .store
            .get_pod(&key.namespace, name)
            .map_err(kube(format!("error getting pod {}/{name}", key.namespace)))?;
        // An address that cannot be read was never given out by calico-ipam: nothing to free.
        Ok(pod
            .map(|p| {
                p.addresses().unwrap_or_else(|e| {
                    log::warn!("the pod's endpoint addresses cannot be read ({e}): none released");
                    Vec::new()
                })
            })
            .unwrap_or_default())
    }

    fn publish(&self, endpoint: &Endpoint) -> Result<(), EndpointError> {
        let key = &endpoint.key;
        let name = pod_name(key)?;
        let path = format!(
            "{}/status",
            pod_path(&key.namespace, name).map_err(kube(String::new()))?
        );
        let body = status_patch(endpoint);
        match self
            .store
            .client()
            .patch(&path, PatchKind::Strategic, &body)
        {
            Ok(_) => Ok(()),
            Err(KubeError::NotFound(_)) => Err(EndpointError::PodNotFound(format!(
                "{}/{name}",
                key.namespace
            ))),
            Err(source) => Err(EndpointError::Kube {
                what: format!(
                    "error annotating pod {}/{name} with its addresses",
                    key.namespace
                ),
                source,
            }),
        }
    }

    /// Clears the pod's addresses unless the Pod now belongs to another sandbox. A pod that
    /// cannot be read fails: it might be running, and nothing may be torn down then.
    fn release(&self, key: &EndpointKey) -> Result<Removal, EndpointError> {
        let Some(name) = key.pod.as_deref() else {
            return Ok(Removal::Absent);
        };
        let pod_ref = format!("{}/{name}", key.namespace);
        // A DEL must get through whatever the arguments: a pod name the API could not hold
        // has no Pod to update.
        let Ok(path) = pod_path(&key.namespace, name) else {
            log::warn!("{pod_ref:?} is not a Kubernetes pod name: no pod to update");
            return Ok(Removal::Absent);
        };
        let status = format!("{path}/status");
        for _ in 0..DEL_ATTEMPTS {
            let Some(pod) = self
                .store
                .get_pod(&key.namespace, name)
                .map_err(kube(format!("error getting pod {pod_ref}")))?
            else {
                log::info!("pod {pod_ref} is gone: nothing to update");
                return Ok(Removal::Absent);
            };
            let patch = match release_patch(&pod, &key.container_id) {
                Release::NotAnEndpoint => {
                    log::info!("pod {pod_ref} is not networked by Calico: nothing to update");
                    return Ok(Removal::Absent);
                }
                Release::OtherSandbox(owner) => return Ok(Removal::Kept { owner }),
                Release::Cleared => return Ok(Removal::Absent),
                Release::Patch(patch) => patch,
            };
            match self
                .store
                .client()
                .patch(&status, PatchKind::Strategic, &patch)
            {
                Ok(_) => return Ok(Removal::Deleted),
                Err(KubeError::NotFound(_)) => return Ok(Removal::Absent),
                Err(KubeError::Conflict(_)) => {
                    log::info!("pod {pod_ref} changed while its addresses were cleared: retrying");
                }
                Err(source) => {
                    return Err(EndpointError::Kube {
                        what: format!("error clearing the addresses of pod {pod_ref}"),
                        source,
                    })
                }
            }
        }
        Err(EndpointError::Modified)
    }
}

/// ADD's patch.
pub fn status_patch(endpoint: &Endpoint) -> Value {
    let ips: Vec<String> = endpoint
        .ip_networks
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut annotations = Map::new();
    if let Some(first) = ips.first() {
        annotations.insert(POD_IP.into(), json!(first));
        annotations.insert(POD_IPS.into(), json!(ips.join(",")));
    }
    if !endpoint.key.container_id.is_empty() {
        annotations.insert(CONTAINER_ID.into(), json!(endpoint.key.container_id));
    }
    json!({"metadata": {"annotations": annotations}})
}

/// What DEL does to a Pod it read.
#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// Host-networked or not scheduled: Calico has no endpoint there.
    NotAnEndpoint,
    /// Another sandbox of the pod (a restarted StatefulSet pod, say) owns it now.
    OtherSandbox(String),
    /// The addresses are already clear.
    Cleared,
    /// This patch clears them, if the Pod is still the one read.
    Patch(Value),
}

/// DEL's decision for `pod` (spec §5.3): the containerID annotation guards a running pod
/// against the late DEL of its previous sandbox; the resourceVersion and uid preconditions
/// against a change since the read.
pub fn release_patch(pod: &Pod, container_id: &str) -> Release {
    if !pod.is_endpoint() {
        return Release::NotAnEndpoint;
    }
    let annotations = &pod.metadata.annotations;
    let text = |key: &str| annotations.get(key).and_then(Value::as_str).unwrap_or("");
    let owner = text(CONTAINER_ID);
    if !owner.is_empty() && owner != container_id {
        return Release::OtherSandbox(owner.to_string());
    }
    if text(POD_IP).is_empty() && text(POD_IPS).is_empty() {
        return Release::Cleared;
    }
    let mut metadata = Map::new();
    if !pod.metadata.resource_version.is_empty() {
        metadata.insert(
            "resourceVersion".into(),
            json!(pod.metadata.resource_version),
        );
    }
    if !pod.metadata.uid.is_empty() {
        metadata.insert("uid".into(), json!(pod.metadata.uid));
    }
    metadata.insert("annotations".into(), json!({POD_IP: "", POD_IPS: ""}));
    Release::Patch(json!({ "metadata": metadata }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::wep::tests::endpoint;

    fn pod(annotations: Value) -> Pod {
        Pod::from_value(
            json!({"metadata": {"name": "web-0", "namespace": "ns", "uid": "u-1",
                            "resourceVersion": "42", "annotations": annotations},
               "spec": {"nodeName": "node-a"}}),
        )
        .expect("pod")
    }

    #[test]
    fn add_patch_is_calicos() {
        let mut e = endpoint(Some("web-0"));
        e.ip_networks = vec![
            "10.244.1.5/32".parse().expect("cidr"),
            "fd00::5/128".parse().expect("cidr"),
        ];
        e.key.container_id = "abc".into();
        assert_eq!(
            status_patch(&e).to_string(),
            r#"{"metadata":{"annotations":{"cni.projectcalico.org/podIP":"10.244.1.5/32","cni.projectcalico.org/podIPs":"10.244.1.5/32,fd00::5/128","cni.projectcalico.org/containerID":"abc"}}}"#
        );
    }

    #[test]
    fn del_clears_with_preconditions_only_for_its_own_sandbox() {
        let mine = pod(json!({CONTAINER_ID: "c1", POD_IP: "10.0.0.1/32",
                              POD_IPS: "10.0.0.1/32"}));
        assert_eq!(
            release_patch(&mine, "c1"),
            Release::Patch(json!({"metadata": {"resourceVersion": "42", "uid": "u-1",
                "annotations": {POD_IP: "", POD_IPS: ""}}}))
        );
        assert_eq!(
            release_patch(&mine, "c0"),
            Release::OtherSandbox("c1".into())
        );
        // No owner recorded (an older writer): cleared, as Calico does.
        let legacy = pod(json!({POD_IP: "10.0.0.1/32"}));
        assert!(matches!(release_patch(&legacy, "c9"), Release::Patch(_)));
        let cleared = pod(json!({CONTAINER_ID: "c1", POD_IP: "", POD_IPS: ""}));
        assert_eq!(release_patch(&cleared, "c1"), Release::Cleared);
        let mut host = mine.clone();
        host.spec.host_network = true;
        assert_eq!(release_patch(&host, "c1"), Release::NotAnEndpoint);
        let mut pending = mine;
        pending.spec.node_name.clear();
        assert_eq!(release_patch(&pending, "c1"), Release::NotAnEndpoint);
    }
}
