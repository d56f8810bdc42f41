//! What the Kubernetes API decides for one ADD (spec §3.1, §5.2): the node's pod CIDRs for
//! host-local's `usePodCidr`, and, with `policy.type: k8s`, the pod's and its namespace's
//! annotations. Otherwise nothing here runs and no connection is made: the plugin wires the
//! pod from its configuration alone. The reads are the datastore library's
//! (`calico_ipam::workload::kube_objects`); the endpoint itself is published through the
//! datastore's `EndpointStore`.

use calico_ipam::k8s::{KubeClient, KubeError, KubeSettings};
use calico_ipam::store::kube::KubeStore;
use calico_ipam::workload::kube_objects::{is_object_name, Pod};
use calico_ipam::workload::{EndpointKey, EndpointStore};
use serde_json::Value;

use crate::annotations::{AddressSource, PodRequest};
use crate::config::CalicoConf;
use crate::endpoint::PodInfo;
use crate::identity::Workload;
use crate::pod_cidr::{self, PodCidrs};
use crate::CalicoError;

/// A pod, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    /// The pod of a Kubernetes workload; the names go into URL paths, so only what
    /// Kubernetes allows in them is accepted.
    pub fn of(workload: &Workload) -> Result<Option<PodRef>, CalicoError> {
        let Workload::Kubernetes { namespace, pod } = workload else {
            return Ok(None);
        };
        for (key, value) in [("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", pod)] {
            if !is_object_name(value) {
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
    /// What the Pod, when it was read, adds to its endpoint.
    pub pod: Option<PodInfo>,
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

/// `ipAddrs` on a workload whose endpoint still holds addresses (a new sandbox while the old
/// one's DEL has not come yet): Calico releases them by address first, or calico-ipam would
/// refuse the same fixed addresses as already assigned (spec §3.1 step 5, §10 item 11).
fn release_previous(
    stdin: &[u8],
    endpoints: &dyn EndpointStore,
    key: &EndpointKey,
) -> Result<(), CalicoError> {
    let previous = endpoints.held_addresses(key)?;
    if previous.is_empty() {
        return Ok(());
    }
    log::info!(
        "{} holds {previous:?}: releasing them before ipAddrs",
        endpoints.describe(key)
    );
    calico_ipam::direct::release_addresses(stdin, &previous)
        .map(|_| ())
        .map_err(|e| CalicoError::PreviousAddresses(e.into()))
}

/// ADD's Kubernetes prologue. Everything that can refuse the pod does so here, before an
/// address is taken. `endpoints` is the configuration's datastore (its Kubernetes API is
/// reused when it has one) and `key` the workload's endpoint in it.
pub fn prepare_add(
    conf: &CalicoConf,
    req: &crate::Req,
    endpoints: Option<&dyn EndpointStore>,
    key: Option<&EndpointKey>,
) -> Result<AddPlan, CalicoError> {
    let workload = Workload::from_args(&req.env.args, &req.env.container_id);
    let pod = PodRef::of(&workload)?;
    // Edited as Calico edits it: a map with exact keys, re-encoded for the IPAM plugin.
    let mut stdin: Value = req.document.to_json();
    let endpoint_in_pod = conf.kubernetes_datastore();
    let annotations_wanted = conf.policy.is_k8s() && pod.is_some();
    let pod_cidr_wanted = pod_cidr::wanted(&stdin);
    if endpoint_in_pod && pod.is_none() {
        return Err(CalicoError::Args(
            "the Kubernetes datastore keeps a pod's endpoint on its Pod: CNI_ARGS must name it \
             with K8S_POD_NAMESPACE and K8S_POD_NAME"
                .into(),
        ));
    }
    if !(annotations_wanted || pod_cidr_wanted) {
        return Ok(AddPlan::default());
    }
    let own;
    let store = match endpoints.and_then(EndpointStore::kubernetes) {
        Some(store) => store,
        None => {
            own = KubeStore::new(connect(conf)?);
            &own
        }
    };
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
        let what = format!("error getting node {node}");
        let object = store
            .get_node_object(&node)
            .map_err(kube(what.clone()))?
            .ok_or_else(|| CalicoError::Kube {
                what,
                source: KubeError::NotFound(format!("node {node:?}")),
            })?;
        pod_cidr::rewrite(
            &mut stdin,
            &PodCidrs::of_node(&node, &object.spec.pod_cidrs)?,
        )?;
        rewritten = true;
    }
    if let (true, Some(pod)) = (annotations_wanted, &pod) {
        let what = format!("error getting namespace {}", pod.namespace);
        let namespace = store
            .get_namespace(&pod.namespace)
            .map_err(kube(what.clone()))?
            .ok_or_else(|| CalicoError::Kube {
                what,
                source: KubeError::NotFound(format!("namespace {:?}", pod.namespace)),
            })?;
        let object: Pod = store
            .get_pod(&pod.namespace, &pod.name)
            .map_err(kube(format!("error getting pod {pod}")))?
            .ok_or_else(|| CalicoError::PodNotFound(pod.to_string()))?;
        let request = PodRequest::parse(
            &namespace.metadata.annotations,
            &object.metadata.annotations,
            conf,
        )?;
        if request.rewrites_ipam() {
            request.apply(&mut stdin)?;
            rewritten = true;
        }
        plan.addresses = request.addresses;
        if let (Some(endpoints), Some(key), AddressSource::IpamPerAddress(_)) =
            (endpoints, key, &plan.addresses)
        {
            release_previous(req.stdin, endpoints, key)?;
        }
        plan.mac = request.mac;
        plan.pod = Some(PodInfo::of_pod(&object));
    }
    if rewritten {
        plan.ipam_stdin = Some(serde_json::to_vec(&stdin).map_err(|e| {
            CalicoError::Config(format!("cannot encode the IPAM configuration: {e}"))
        })?);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_must_fit_a_url_path() {
        let w = |ns: &str, pod: &str| Workload::Kubernetes {
            namespace: ns.into(),
            pod: pod.into(),
        };
        assert_eq!(
            PodRef::of(&w("kube-system", "coredns-5d78c9869d-abc12"))
                .expect("valid")
                .map(|p| p.to_string()),
            Some("kube-system/coredns-5d78c9869d-abc12".into())
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
