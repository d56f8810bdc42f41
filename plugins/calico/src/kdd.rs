//! The Kubernetes API in one invocation of the plugin (spec §3 step 4, §3.1, §5.1, §5.3).
//!
//! The API is needed when the datastore is Kubernetes (`datastore_type: kubernetes`: Calico
//! must be ready, and the pod's endpoint is a set of annotations on the Pod), when
//! `policy.type` is `k8s` (the pod's and its namespace's annotations are honoured), or when
//! host-local is to use the node's pod CIDRs. Otherwise nothing here runs and no connection
//! is made: the plugin wires the pod from its configuration alone, as it always did.
//!
//! One client per invocation; every request is a single round trip.

use calico_ipam::k8s::client::PatchKind;
use calico_ipam::k8s::{KubeClient, KubeError, KubeSettings};
use calico_ipam::store::in_use;
use calico_ipam::store::kube::KubeStore;
use serde_json::{json, Map, Value};
use shared::spec::result::CniResult;

use crate::annotations::{self, AddressSource, PodRequest};
use crate::config::CalicoConf;
use crate::identity::Workload;
use crate::pod_cidr::{self, PodCidrs};
use crate::{readiness, CalicoError};

/// The annotations that make up a pod's endpoint in the Kubernetes datastore.
pub use calico_ipam::store::in_use::{POD_IPS_ANNOTATION as POD_IPS, POD_IP_ANNOTATION as POD_IP};
pub const CONTAINER_ID: &str = "cni.projectcalico.org/containerID";

/// How often DEL re-reads the pod when someone else changed it between the read and the
/// patch (Calico's number).
const DEL_ATTEMPTS: usize = 6;

/// A pod, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    /// The pod of a Kubernetes workload; the names go into URL paths, so only what
    /// Kubernetes allows in them is accepted.
    fn of(workload: &Workload) -> Result<Option<PodRef>, CalicoError> {
        let Workload::Kubernetes { namespace, pod } = workload else {
            return Ok(None);
        };
        for (key, value) in [("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", pod)] {
            let valid = value.len() <= 253
                && value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
            if !valid {
                return Err(CalicoError::Args(format!(
                    "{key}={value:?} is not a Kubernetes object name"
                )));
            }
        }
        Ok(Some(PodRef {
            namespace: namespace.clone(),
            name: pod.clone(),
        }))
    }

    fn path(&self) -> String {
        format!("/api/v1/namespaces/{}/pods/{}", self.namespace, self.name)
    }

    fn status_path(&self) -> String {
        format!("{}/status", self.path())
    }
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the Kubernetes side decided for one ADD. The default changes nothing.
#[derive(Debug, Clone, Default)]
pub struct AddPlan {
    /// The IPAM plugin's stdin, when it differs from ours.
    pub ipam_stdin: Option<Vec<u8>>,
    pub addresses: AddressSource,
    /// The pod interface's MAC, from the `hwAddr` annotation.
    pub mac: Option<[u8; 6]>,
}

/// One invocation's API connection and what it knows about the pod.
pub struct Session {
    /// The datastore library's view of the API server (readiness); its client for the
    /// Pod's own requests.
    store: KubeStore,
    /// `datastore_type: kubernetes`: the Pod's annotations are the pod's endpoint.
    endpoint_in_pod: bool,
    pod: Option<PodRef>,
    container_id: String,
    /// The Pod as read for its annotations (with `policy.type: k8s`).
    pod_object: Option<Value>,
}

/// `ipAddrs` on a pod whose endpoint still holds addresses (a new sandbox while the old
/// one's DEL has not come yet): Calico releases them by address first, or calico-ipam would
/// refuse the same fixed addresses as already assigned (spec §3.1 step 5, §10 item 11).
fn release_previous(stdin: &[u8], pod: &Value) -> Result<(), CalicoError> {
    // An address that cannot be read was never given out by calico-ipam: nothing to free.
    let previous = in_use::pod_ips(pod).unwrap_or_else(|e| {
        log::warn!("the pod's endpoint addresses cannot be read ({e}): none released");
        Vec::new()
    });
    if previous.is_empty() {
        return Ok(());
    }
    log::info!("the pod's endpoint holds {previous:?}: releasing them before ipAddrs");
    calico_ipam::direct::release_addresses(stdin, &previous)
        .map(|_| ())
        .map_err(|e| CalicoError::PreviousAddresses(e.into()))
}

/// A client for the API server the configuration names (nothing is sent yet).
pub fn connect(conf: &CalicoConf) -> Result<KubeClient, CalicoError> {
    let settings = KubeSettings::from_conf(&conf.kubernetes, &conf.policy);
    KubeClient::connect(&settings).map_err(|source| CalicoError::Kube {
        what: "cannot use the Kubernetes API".into(),
        source,
    })
}

fn kube(what: impl Into<String>) -> impl FnOnce(KubeError) -> CalicoError {
    let what = what.into();
    move |source| CalicoError::Kube { what, source }
}

impl Session {
    /// ADD's prologue on Kubernetes: readiness, the node's pod CIDRs for host-local, the
    /// pod's annotations. Everything that can refuse the pod does so here, before an address
    /// is taken.
    pub fn open_for_add(
        conf: &CalicoConf,
        req: &crate::Req,
    ) -> Result<(Option<Session>, AddPlan), CalicoError> {
        let workload = Workload::from_args(&req.env.args, &req.env.container_id);
        let pod = PodRef::of(&workload)?;
        // Edited as Calico edits it: a map with exact keys, re-encoded for the IPAM plugin.
        let mut stdin: Value = req.document.to_json();
        let endpoint_in_pod = conf.kubernetes_datastore();
        let annotations_wanted = conf.policy.is_k8s() && pod.is_some();
        let pod_cidr_wanted = pod_cidr::wanted(&stdin);
        if !(endpoint_in_pod || annotations_wanted || pod_cidr_wanted) {
            return Ok((None, AddPlan::default()));
        }
        if endpoint_in_pod && pod.is_none() {
            return Err(CalicoError::Args(
                "the Kubernetes datastore keeps a pod's endpoint on its Pod: CNI_ARGS must name \
                 it with K8S_POD_NAMESPACE and K8S_POD_NAME"
                    .into(),
            ));
        }
        let store = KubeStore::new(connect(conf)?);
        if endpoint_in_pod {
            readiness::check(&store)?;
        }
        let client = store.client();
        let mut plan = AddPlan::default();
        let mut rewritten = false;
        if pod_cidr_wanted {
            let node = match conf
                .kubernetes
                .node_name
                .as_deref()
                .filter(|n| !n.is_empty())
            {
                Some(name) => name.to_string(),
                None => conf.node_name()?,
            };
            let path = format!("/api/v1/nodes/{node}");
            let object = client
                .get(&path)
                .map_err(kube(format!("error getting node {node}")))?
                .ok_or_else(|| CalicoError::Kube {
                    what: format!("error getting node {node}"),
                    source: KubeError::NotFound(path),
                })?;
            pod_cidr::rewrite(&mut stdin, &PodCidrs::of_node(&node, &object)?)?;
            rewritten = true;
        }
        let mut pod_object = None;
        if let (true, Some(pod)) = (annotations_wanted, &pod) {
            let ns_path = format!("/api/v1/namespaces/{}", pod.namespace);
            let namespace = client
                .get(&ns_path)
                .map_err(kube(format!("error getting namespace {}", pod.namespace)))?
                .ok_or_else(|| CalicoError::Kube {
                    what: format!("error getting namespace {}", pod.namespace),
                    source: KubeError::NotFound(ns_path),
                })?;
            let object = client
                .get(&pod.path())
                .map_err(kube(format!("error getting pod {pod}")))?
                .ok_or_else(|| CalicoError::PodNotFound(pod.to_string()))?;
            let request = PodRequest::parse(
                &annotations::of(&namespace),
                &annotations::of(&object),
                conf,
            )?;
            if request.rewrites_ipam() {
                request.apply(&mut stdin)?;
                rewritten = true;
            }
            plan.addresses = request.addresses;
            if endpoint_in_pod && matches!(plan.addresses, AddressSource::IpamPerAddress(_)) {
                release_previous(req.stdin, &object)?;
            }
            plan.mac = request.mac;
            pod_object = Some(object);
        }
        if rewritten {
            plan.ipam_stdin = Some(serde_json::to_vec(&stdin).map_err(|e| {
                CalicoError::Config(format!("cannot encode the IPAM configuration: {e}"))
            })?);
        }
        let session = Session {
            store,
            endpoint_in_pod,
            pod,
            container_id: req.env.container_id.clone(),
            pod_object,
        };
        Ok((Some(session), plan))
    }

    /// DEL's prologue on Kubernetes: connects and checks readiness when the datastore is
    /// Kubernetes; `None` otherwise (`usePodCidr` needs no API on DEL, annotations are not
    /// read).
    pub fn open_for_del(
        conf: &CalicoConf,
        req: &crate::Req,
    ) -> Result<Option<Session>, CalicoError> {
        if !conf.kubernetes_datastore() {
            return Ok(None);
        }
        let workload = Workload::from_args(&req.env.args, &req.env.container_id);
        // A DEL must get through whatever the arguments: a pod name the API could not hold
        // has no Pod to update.
        let pod = PodRef::of(&workload).unwrap_or_else(|e| {
            log::warn!("{e}: no pod to update");
            None
        });
        let store = KubeStore::new(connect(conf)?);
        readiness::check(&store)?;
        Ok(Some(Session {
            store,
            endpoint_in_pod: true,
            pod,
            container_id: req.env.container_id.clone(),
            pod_object: None,
        }))
    }

    /// The Pod as read on ADD with `policy.type: k8s`.
    pub fn pod_object(&self) -> Option<&Value> {
        self.pod_object.as_ref()
    }

    /// ADD's last step in the Kubernetes datastore (spec §5.1): the pod's addresses and
    /// container id as annotations, through the status subresource.
    pub fn publish(&self, result: &CniResult) -> Result<(), CalicoError> {
        let (true, Some(pod)) = (self.endpoint_in_pod, &self.pod) else {
            return Ok(());
        };
        let body = status_patch(result, &self.container_id);
        match self
            .store
            .client()
            .patch(&pod.status_path(), PatchKind::Strategic, &body)
        {
            Ok(_) => Ok(()),
            Err(KubeError::NotFound(_)) => Err(CalicoError::PodNotFound(pod.to_string())),
            Err(source) => Err(CalicoError::Kube {
                what: format!("error annotating pod {pod} with its addresses"),
                source,
            }),
        }
    }

    /// DEL in the Kubernetes datastore (spec §5.3 step 3): clears the pod's addresses,
    /// unless the Pod now belongs to another sandbox. `Ok(true)` when they were cleared now,
    /// `Ok(false)` when there was nothing to clear; an error when the pod could not be read (it might be running: nothing may be torn
    /// down then).
    pub fn release(&self) -> Result<bool, CalicoError> {
        let (true, Some(pod)) = (self.endpoint_in_pod, &self.pod) else {
            return Ok(false);
        };
        for _ in 0..DEL_ATTEMPTS {
            let Some(object) = self
                .store
                .client()
                .get(&pod.path())
                .map_err(kube(format!("error getting pod {pod}")))?
            else {
                log::info!("pod {pod} is gone: nothing to update");
                return Ok(false);
            };
            let patch = match release_patch(&object, &self.container_id) {
                Release::NotAnEndpoint => {
                    log::info!("pod {pod} is not networked by Calico: nothing to update");
                    return Ok(false);
                }
                Release::OtherSandbox(owner) => {
                    log::info!(
                        "pod {pod} belongs to container {owner}, not {}: its annotations stay",
                        self.container_id
                    );
                    return Ok(false);
                }
                Release::Cleared => return Ok(false),
                Release::Patch(patch) => patch,
            };
            match self
                .store
                .client()
                .patch(&pod.status_path(), PatchKind::Strategic, &patch)
            {
                Ok(_) => return Ok(true),
                Err(KubeError::NotFound(_)) => return Ok(false),
                Err(KubeError::Conflict(_)) => {
                    log::info!("pod {pod} changed while its addresses were cleared: retrying");
                }
                Err(source) => {
                    return Err(CalicoError::Kube {
                        what: format!("error clearing the addresses of pod {pod}"),
                        source,
                    })
                }
            }
        }
        Err(CalicoError::EndpointModified)
    }
}

/// ADD's patch: `podIP` (the first address), `podIPs` (all, comma-separated), both with
/// their /32 or /128, and `containerID`.
pub fn status_patch(result: &CniResult, container_id: &str) -> Value {
    let ips: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
    let mut annotations = Map::new();
    if let Some(first) = ips.first() {
        annotations.insert(POD_IP.into(), json!(first));
        annotations.insert(POD_IPS.into(), json!(ips.join(",")));
    }
    if !container_id.is_empty() {
        annotations.insert(CONTAINER_ID.into(), json!(container_id));
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
pub fn release_patch(pod: &Value, container_id: &str) -> Release {
    let host_network = pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true);
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if host_network || !scheduled {
        return Release::NotAnEndpoint;
    }
    let annotations = annotations::of(pod);
    let text = |key: &str| annotations.get(key).and_then(Value::as_str).unwrap_or("");
    let owner = text(CONTAINER_ID);
    if !owner.is_empty() && owner != container_id {
        return Release::OtherSandbox(owner.to_string());
    }
    if text(POD_IP).is_empty() && text(POD_IPS).is_empty() {
        return Release::Cleared;
    }
    let mut metadata = Map::new();
    if let Some(rv) = pod.pointer("/metadata/resourceVersion") {
        metadata.insert("resourceVersion".into(), rv.clone());
    }
    if let Some(uid) = pod.pointer("/metadata/uid") {
        metadata.insert("uid".into(), uid.clone());
    }
    metadata.insert("annotations".into(), json!({POD_IP: "", POD_IPS: ""}));
    Release::Patch(json!({ "metadata": metadata }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::spec::result::IpConfig;

    fn pod(annotations: Value) -> Value {
        json!({"metadata": {"name": "web-0", "namespace": "ns", "uid": "u-1",
                            "resourceVersion": "42", "annotations": annotations},
               "spec": {"nodeName": "node-a"}})
    }

    #[test]
    fn add_patch_is_calicos() {
        let result = CniResult {
            ips: ["10.244.1.5/32", "fd00::5/128"]
                .iter()
                .map(|a| IpConfig {
                    address: a.parse().expect("cidr"),
                    gateway: None,
                    interface: Some(1),
                })
                .collect(),
            ..CniResult::default()
        };
        assert_eq!(
            status_patch(&result, "abc").to_string(),
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
        host["spec"]["hostNetwork"] = json!(true);
        assert_eq!(release_patch(&host, "c1"), Release::NotAnEndpoint);
        let mut pending = mine;
        pending["spec"] = json!({});
        assert_eq!(release_patch(&pending, "c1"), Release::NotAnEndpoint);
    }

    #[test]
    fn pod_names_must_fit_a_url_path() {
        let w = |ns: &str, pod: &str| Workload::Kubernetes {
            namespace: ns.into(),
            pod: pod.into(),
        };
        assert_eq!(
            PodRef::of(&w("kube-system", "coredns-5d78c9869d-abc12"))
                .expect("valid")
                .map(|p| p.status_path()),
            Some("/api/v1/namespaces/kube-system/pods/coredns-5d78c9869d-abc12/status".into())
        );
        for (ns, pod) in [("a/b", "p"), ("ns", "p?x=1"), ("ns", "P")] {
            assert!(
                matches!(PodRef::of(&w(ns, pod)), Err(CalicoError::Args(_))),
                "{ns} {pod}"
            );
        }
        assert_eq!(
            PodRef::of(&Workload::Container { id: "c".into() }).expect("ok"),
            None
        );
    }
}
