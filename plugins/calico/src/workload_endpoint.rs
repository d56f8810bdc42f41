//! The WorkloadEndpoint on a key-value datastore (`etcdv3`, and our `local`), spec §5.4: the
//! object Felix reads to program policy and routes for a pod. ADD checks that Calico is
//! ready (§3 step 4), wires the pod, then writes the endpoint; DEL checks readiness, then
//! removes the endpoint and the pod's networking in Calico's order (§5.3).
//!
//! Keys and values are Calico's own, so a node running Calico's plugin reads our endpoints
//! and deletes them, and we read and delete theirs:
//!
//! ```text
//! /calico/resources/v3/projectcalico.org/clusterinformations/default
//! /calico/resources/v3/projectcalico.org/workloadendpoints/<namespace>/<wep name>
//! ```
//!
//! One deliberate difference: Calico's client falls back to etcd on `127.0.0.1:2379` when
//! the config names no datastore at all. Here a config with neither `datastore_type` nor
//! `etcd_endpoints` touches no datastore (the plugin then only wires the pod), so a node
//! without etcd keeps working with a minimal config and no request waits on a connect
//! timeout. With `datastore_type: kubernetes` the endpoint lives in the Pod instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};

use calico_ipam::datastore::{open_kv, DatastoreError};
use calico_ipam::netconf::{Datastore, DatastoreConf};
use calico_ipam::store::kv::{Kv, KvStore};
use calico_ipam::store::StoreError;
use calico_ipam::timestamp;
use serde_json::{json, Map, Value};
use shared::released::Released;
use shared::spec::error::{CniError, ErrorCode};
use shared::spec::result::CniResult;

use crate::config::CalicoConf;
use crate::identity::Workload;
use crate::wep_name::{wep_name, WepNameError, WepWorkload};
use crate::CalicoError;

/// Where WorkloadEndpoints live: `<prefix>/<namespace>/<name>`.
pub const WEP_PREFIX: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints";

/// The namespace of every endpoint outside Kubernetes.
pub const CNI_NAMESPACE: &str = "default";

/// Compare-and-swap rounds before giving up: another writer of the same endpoint (a
/// concurrent ADD or DEL of the same container) is rare and quick.
const ATTEMPTS: usize = 5;

/// Labels Calico sets on every stored endpoint (libcalico-go overrides whatever was given).
const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum WepError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Name(#[from] WepNameError),
    #[error("{op} WorkloadEndpoint {key}: {source}")]
    Endpoint {
        op: &'static str,
        key: String,
        source: StoreError,
    },
    #[error("cannot generate a WorkloadEndpoint uid: reading /dev/urandom: {0}")]
    Uid(io::Error),
}

impl WepError {
    /// The CNI code, and what the operator should do.
    pub fn code_and_details(&self) -> (ErrorCode, &'static str) {
        use ErrorCode as C;
        match self {
            WepError::Config(_) => (C::InvalidNetworkConfig, ""),
            WepError::Endpoint {
                source: StoreError::Unavailable(_),
                ..
            } => (
                C::TryAgainLater,
                "the datastore did not answer; check etcd_endpoints and that etcd is up; the \
                 runtime will retry",
            ),
            WepError::Endpoint {
                source: StoreError::Misconfigured(_),
                ..
            } => (
                C::InvalidNetworkConfig,
                "fix the etcd_* TLS settings of the network configuration; retries fail the \
                 same way until then",
            ),
            WepError::Endpoint {
                source: StoreError::Conflict(_),
                ..
            } => (
                C::TryAgainLater,
                "another writer kept changing the endpoint; the runtime will retry",
            ),
            WepError::Endpoint { .. } => (
                C::Datastore,
                "the datastore refused the request or holds an unreadable object: fix or \
                 remove the key named above",
            ),
            WepError::Name(e) if e.field == "node" => (
                C::InvalidNetworkConfig,
                "the node name is one segment of the WorkloadEndpoint name: set a nodename \
                 that does not start or end with '-'",
            ),
            WepError::Name(_) => (
                C::InvalidEnvironment,
                "the pod name, container id and interface name are segments of the \
                 WorkloadEndpoint name and may not start or end with '-'",
            ),
            WepError::Uid(_) => (C::IoFailure, ""),
        }
    }
}

impl From<DatastoreError> for WepError {
    fn from(e: DatastoreError) -> WepError {
        match e {
            DatastoreError::Store(source) => WepError::Endpoint {
                op: "error opening the datastore for",
                key: WEP_PREFIX.to_string(),
                source,
            },
            DatastoreError::Unsupported(m) | DatastoreError::Config(m) => WepError::Config(m),
        }
    }
}

/// What a pod's Kubernetes object adds to its endpoint, when it has been read (with
/// `policy.type: k8s`): labels, service account, `generateName`, named and host ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub generate_name: Option<String>,
    /// Calico's `EndpointPort` objects (`name`, `protocol`, `port`, `hostPort`, `hostIP`).
    pub ports: Vec<Value>,
    /// `floatingIPs` (validated before IPAM): the endpoint's `ipNATs`.
    pub floating_ips: Vec<std::net::IpAddr>,
    /// `allowedSourcePrefixes` (validated before IPAM): `allowSpoofedSourcePrefixes`.
    pub allowed_source_prefixes: Vec<String>,
}

impl PodInfo {
    /// From a Pod object as the API server returns it.
    pub fn of_pod(pod: &Value) -> PodInfo {
        let labels = pod
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let text = |pointer: &str| {
            pod.pointer(pointer)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let annotations = crate::annotations::of(pod);
        PodInfo {
            labels,
            service_account: text("/spec/serviceAccountName"),
            generate_name: text("/metadata/generateName"),
            ports: endpoint_ports(pod),
            // Refused before IPAM when unreadable: what is left here reads.
            floating_ips: crate::annotations::floating_ips(&annotations).unwrap_or_default(),
            allowed_source_prefixes: crate::annotations::allowed_source_prefixes(&annotations)
                .unwrap_or_default(),
        }
    }
}

/// The ports Felix exports for named-port policy (spec §5.4): container and init-container
/// ports that have a name or a host port; protocol lower-cased, TCP when unset.
fn endpoint_ports(pod: &Value) -> Vec<Value> {
    let mut ports = Vec::new();
    for list in ["/spec/initContainers", "/spec/containers"] {
        let containers = pod.pointer(list).and_then(Value::as_array);
        for port in containers
            .into_iter()
            .flatten()
            .filter_map(|c| c["ports"].as_array())
            .flatten()
        {
            let name = port["name"].as_str().unwrap_or_default();
            let host_port = port["hostPort"].as_u64().unwrap_or(0);
            if name.is_empty() && host_port == 0 {
                continue;
            }
            let protocol = port["protocol"]
                .as_str()
                .filter(|p| !p.is_empty())
                .unwrap_or("TCP")
                .to_ascii_lowercase();
            let mut out = Map::new();
            if !name.is_empty() {
                out.insert("name".into(), json!(name));
            }
            out.insert("protocol".into(), json!(protocol));
            out.insert(
                "port".into(),
                json!(port["containerPort"].as_u64().unwrap_or(0)),
            );
            if host_port != 0 {
                out.insert("hostPort".into(), json!(host_port));
            }
            if let Some(ip) = port["hostIP"].as_str().filter(|ip| !ip.is_empty()) {
                out.insert("hostIP".into(), json!(ip));
            }
            ports.push(Value::Object(out));
        }
    }
    ports
}

/// Who the endpoint belongs to, and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WepIdentity {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub container_id: String,
    /// Kubernetes pods only.
    pub pod: Option<String>,
    /// The container's interface name (`CNI_IFNAME`).
    pub endpoint: String,
    /// Profiles name the policy: `kns.<namespace>` (and `ksa.<ns>.<sa>`) with
    /// `policy.type: k8s`, else the network's name (spec §2).
    pub policy_k8s: bool,
    pub network: String,
    pub pod_info: PodInfo,
}

/// What ADD produced that the endpoint records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The host veth (`interfaceName`).
    pub interface_name: String,
    /// The container interface's MAC (`mac`).
    pub mac: String,
    /// `a.b.c.d/32`, `x::y/128`.
    pub ip_networks: Vec<String>,
    /// `ipNATs`: (internal, external), the pod's address and a floating IP of its family.
    pub ip_nats: Vec<(String, String)>,
}

/// Each floating IP NATed to the pod's (single-address) address of its family; one with no
/// such address cannot be honoured.
fn nats(
    result: &CniResult,
    floating: &[std::net::IpAddr],
) -> Result<Vec<(String, String)>, WepError> {
    floating
        .iter()
        .map(|external| {
            result
                .ips
                .iter()
                .map(|ip| ip.address)
                .find(|a| {
                    a.is_ipv4() == external.is_ipv4()
                        && a.prefix() == if a.is_ipv4() { 32 } else { 128 }
                })
                .map(|internal| (internal.ip().to_string(), external.to_string()))
                .ok_or_else(|| {
                    WepError::Config(format!(
                        "floating IP {external} has no pod address of its family to NAT to"
                    ))
                })
        })
        .collect()
}

impl Attached {
    /// From the result ADD prints: interface 0 is the host veth, 1 the container's, and the
    /// addresses already carry the /32 and /128 masks.
    pub fn from_result(result: &CniResult) -> Attached {
        Attached {
            interface_name: result
                .interfaces
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_default(),
            mac: result
                .interfaces
                .get(1)
                .map(|i| i.mac.clone())
                .unwrap_or_default(),
            ip_networks: result.ips.iter().map(|ip| ip.address.to_string()).collect(),
            ip_nats: Vec::new(),
        }
    }
}

/// `metadata.uid` and `metadata.creationTimestamp`: new for a new endpoint, kept when an
/// existing one is updated (Calico updates the object it read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub uid: String,
    pub creation_timestamp: String,
}

impl Meta {
    pub fn fresh() -> Result<Meta, WepError> {
        Ok(Meta {
            uid: uuid_v4().map_err(WepError::Uid)?,
            creation_timestamp: timestamp::rfc3339_now(),
        })
    }

    /// The stored endpoint's, each one that is missing made anew.
    fn kept(stored: &Value) -> Result<Meta, WepError> {
        let text = |field: &str| {
            stored["metadata"][field]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let (uid, created) = (text("uid"), text("creationTimestamp"));
        if let (Some(uid), Some(creation_timestamp)) = (uid.clone(), created.clone()) {
            return Ok(Meta {
                uid,
                creation_timestamp,
            });
        }
        let fresh = Meta::fresh()?;
        Ok(Meta {
            uid: uid.unwrap_or(fresh.uid),
            creation_timestamp: created.unwrap_or(fresh.creation_timestamp),
        })
    }
}

impl WepIdentity {
    pub fn new(
        node: &str,
        workload: &Workload,
        container_id: &str,
        ifname: &str,
        conf: &CalicoConf,
    ) -> Result<WepIdentity, WepNameError> {
        let (namespace, pod, segment) = match workload {
            Workload::Kubernetes { namespace, pod } => {
                (namespace.clone(), Some(pod.clone()), WepWorkload::Pod(pod))
            }
            Workload::Container { id } => {
                (CNI_NAMESPACE.to_string(), None, WepWorkload::Container(id))
            }
        };
        crate::wep_name::check_namespace(&namespace)?;
        let policy_k8s = conf.policy.is_k8s();
        Ok(WepIdentity {
            name: wep_name(node, segment, ifname)?,
            namespace,
            node: node.to_string(),
            container_id: container_id.to_string(),
            pod,
            endpoint: ifname.to_string(),
            policy_k8s,
            network: conf.name.clone(),
            pod_info: PodInfo::default(),
        })
    }

    pub fn key(&self) -> String {
        format!("{WEP_PREFIX}/{}/{}", self.namespace, self.name)
    }

    pub fn orchestrator(&self) -> &'static str {
        if self.pod.is_some() {
            "k8s"
        } else {
            "cni"
        }
    }

    fn profiles(&self) -> Vec<String> {
        if self.pod.is_none() || !self.policy_k8s {
            return vec![self.network.clone()];
        }
        let mut profiles = vec![format!("kns.{}", self.namespace)];
        if let Some(sa) = self.pod_info.service_account.as_deref() {
            profiles.push(format!("ksa.{}.{sa}", self.namespace));
        }
        profiles
    }

    /// The v3 resource as Calico stores it: its fields in Calico's order, empty ones left
    /// out (they are `omitempty` there), no `resourceVersion` (etcd's mod revision is the
    /// version). `workload` stays empty for both orchestrators, as Calico's plugin leaves
    /// it: the name carries the pod or container id, and `pod` / `containerID` hold them.
    pub fn resource(&self, attached: &Attached, meta: &Meta) -> Value {
        let mut labels = self.pod_info.labels.clone();
        labels.insert(LABEL_NAMESPACE.into(), self.namespace.clone());
        labels.insert(LABEL_ORCHESTRATOR.into(), self.orchestrator().into());
        let service_account = self
            .pod_info
            .service_account
            .as_deref()
            .filter(|sa| !sa.is_empty() && self.pod.is_some());
        // A label value holds at most 63 characters; Calico leaves longer names out.
        if let Some(sa) = service_account.filter(|sa| sa.len() < 63) {
            labels.insert(LABEL_SERVICE_ACCOUNT.into(), sa.to_string());
        }

        let mut metadata = Map::new();
        metadata.insert("name".into(), json!(self.name));
        if let Some(g) = self
            .pod_info
            .generate_name
            .as_deref()
            .filter(|g| !g.is_empty())
        {
            metadata.insert("generateName".into(), json!(g));
        }
        metadata.insert("namespace".into(), json!(self.namespace));
        metadata.insert("uid".into(), json!(meta.uid));
        metadata.insert("creationTimestamp".into(), json!(meta.creation_timestamp));
        metadata.insert("labels".into(), json!(labels));

        let mut spec = Map::new();
        spec.insert("orchestrator".into(), json!(self.orchestrator()));
        spec.insert("node".into(), json!(self.node));
        spec.insert("containerID".into(), json!(self.container_id));
        if let Some(pod) = &self.pod {
            spec.insert("pod".into(), json!(pod));
        }
        spec.insert("endpoint".into(), json!(self.endpoint));
        if let Some(sa) = service_account {
            spec.insert("serviceAccountName".into(), json!(sa));
        }
        if !attached.ip_networks.is_empty() {
            spec.insert("ipNetworks".into(), json!(attached.ip_networks));
        }
        if !attached.ip_nats.is_empty() {
            let nats: Vec<Value> = attached
                .ip_nats
                .iter()
                .map(|(internal, external)| json!({"internalIP": internal, "externalIP": external}))
                .collect();
            spec.insert("ipNATs".into(), json!(nats));
        }
        spec.insert("profiles".into(), json!(self.profiles()));
        if !attached.interface_name.is_empty() {
            spec.insert("interfaceName".into(), json!(attached.interface_name));
        }
        if !attached.mac.is_empty() {
            spec.insert("mac".into(), json!(attached.mac));
        }
        if !self.pod_info.ports.is_empty() {
            spec.insert("ports".into(), json!(self.pod_info.ports));
        }
        if !self.pod_info.allowed_source_prefixes.is_empty() {
            spec.insert(
                "allowSpoofedSourcePrefixes".into(),
                json!(self.pod_info.allowed_source_prefixes),
            );
        }
        json!({
            "kind": "WorkloadEndpoint",
            "apiVersion": "projectcalico.org/v3",
            "metadata": metadata,
            "spec": spec,
        })
    }
}

/// §3 step 4, asked of the datastore library as on every datastore.
fn check_ready(kv: &dyn Kv) -> Result<(), CalicoError> {
    crate::readiness::check(&KvStore::new(kv))
}

/// Creates the endpoint, or updates the one stored under its name (compare-and-swap on the
/// revision read, so a concurrent writer is never overwritten blindly).
pub fn write(kv: &dyn Kv, id: &WepIdentity, attached: &Attached) -> Result<(), WepError> {
    let key = id.key();
    let failed = |op, source| WepError::Endpoint {
        op,
        key: key.clone(),
        source,
    };
    let mut lost = StoreError::Conflict(key.clone());
    for _ in 0..ATTEMPTS {
        let stored = kv.get(&key).map_err(|e| failed("error reading", e))?;
        let outcome = match stored {
            None => {
                let value = id.resource(attached, &Meta::fresh()?);
                kv.create(&key, value.to_string().as_bytes())
            }
            Some((bytes, revision)) => {
                // An unreadable stored value is replaced: it is ours to write, by name.
                let old = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let value = id.resource(attached, &Meta::kept(&old)?);
                kv.update(&key, value.to_string().as_bytes(), &revision)
            }
        };
        match outcome {
            Ok(_) => return Ok(()),
            // Someone else created, changed or deleted it between the read and the write.
            Err(
                e @ (StoreError::AlreadyExists(_)
                | StoreError::Conflict(_)
                | StoreError::NotFound(_)),
            ) => lost = e,
            Err(e) => return Err(failed("error writing", e)),
        }
    }
    Err(failed("error writing", lost))
}

/// What DEL did with the stored endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    /// Nothing was stored: already deleted, or never written.
    Absent,
    /// The endpoint belongs to another container of the same pod (a restarted sandbox):
    /// a stale DEL must not take it away from the running one.
    Kept {
        owner: String,
    },
}

/// Deletes the endpoint unless it names another container (§5.3's protection): only when
/// its `spec.containerID` is ours or empty.
pub fn remove(kv: &dyn Kv, id: &WepIdentity) -> Result<Removal, WepError> {
    let key = id.key();
    let failed = |op, source| WepError::Endpoint {
        op,
        key: key.clone(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let Some((bytes, revision)) = kv.get(&key).map_err(|e| failed("error reading", e))? else {
            return Ok(Removal::Absent);
        };
        // Whose it is must be known before it is deleted.
        let stored: Value = serde_json::from_slice(&bytes).map_err(|e| {
            failed(
                "error reading",
                StoreError::Corrupt {
                    key: key.clone(),
                    reason: e.to_string(),
                },
            )
        })?;
        let owner = stored["spec"]["containerID"].as_str().unwrap_or_default();
        if !owner.is_empty() && owner != id.container_id {
            return Ok(Removal::Kept {
                owner: owner.to_string(),
            });
        }
        match kv.delete(&key, &revision) {
            Ok(()) => return Ok(Removal::Deleted),
            Err(StoreError::NotFound(_)) => return Ok(Removal::Absent),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(failed("error deleting", e)),
        }
    }
    Err(failed(
        "error deleting",
        StoreError::Conflict(format!(
            "{key} (endpoint was modified before it could be deleted)"
        )),
    ))
}

/// A random (version 4) UUID, as Calico's client gives every object it creates. 16 bytes of
/// the kernel's randomness are all it takes; no crate needed.
fn uuid_v4() -> io::Result<String> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// Whether the config names a key-value datastore, and which. See the module documentation
/// for why a config without datastore keys names none.
fn kv_datastore(conf: &DatastoreConf) -> Result<Option<Datastore>, WepError> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    if !set(&conf.datastore_type) && !set(&conf.etcd_endpoints) {
        return Ok(None);
    }
    match conf.kind().map_err(WepError::Config)? {
        Datastore::Kubernetes => Ok(None),
        kind => Ok(Some(kind)),
    }
}

/// `calico -t` on a key-value datastore: reached and found ready; `false` when the config
/// names none.
pub fn check_datastore(conf: &CalicoConf) -> Result<bool, CalicoError> {
    if kv_datastore(&conf.datastore)?.is_none() {
        return Ok(false);
    }
    let kv = open_kv(&conf.datastore).map_err(WepError::from)?;
    check_ready(kv.as_ref())?;
    Ok(true)
}

/// One invocation's endpoint work: the datastore, found ready, and the endpoint's identity.
pub struct Session {
    kv: Box<dyn Kv>,
    /// Invalid identifiers fail ADD; DEL has nothing to delete under an invalid name (ADD
    /// could never have written it) and goes on with the rest.
    id: Result<WepIdentity, WepNameError>,
}

impl Session {
    /// `None` without a key-value datastore. Otherwise the datastore is opened and found
    /// ready, or the request is refused before anything changes.
    pub fn open(conf: &CalicoConf, req: &crate::Req) -> Result<Option<Session>, CalicoError> {
        if kv_datastore(&conf.datastore)?.is_none() {
            return Ok(None);
        }
        let kv = open_kv(&conf.datastore).map_err(WepError::from)?;
        check_ready(kv.as_ref())?;
        let node = conf.node_name()?;
        let workload = Workload::from_args(&req.env.args, &req.env.container_id);
        let id = WepIdentity::new(
            &node,
            &workload,
            &req.env.container_id,
            &req.env.ifname,
            conf,
        );
        Ok(Some(Session { kv, id }))
    }

    /// [`Session::open`] for ADD: the endpoint's name must be valid before an address is
    /// taken.
    pub fn open_for_add(
        conf: &CalicoConf,
        req: &crate::Req,
    ) -> Result<Option<Session>, CalicoError> {
        let session = Session::open(conf, req)?;
        if let Some(s) = &session {
            if let Err(e) = &s.id {
                return Err(WepError::Name(e.clone()).into());
            }
        }
        Ok(session)
    }

    /// ADD's last step: record what was wired, and what the Pod says of itself when it was
    /// read (`policy.type: k8s`).
    pub fn write(&self, result: &CniResult, pod: Option<&Value>) -> Result<(), CalicoError> {
        let id = self.id.as_ref().map_err(|e| WepError::Name(e.clone()))?;
        let mut attached = Attached::from_result(result);
        match pod {
            Some(pod) => {
                let mut id = id.clone();
                id.pod_info = PodInfo::of_pod(pod);
                attached.ip_nats = nats(result, &id.pod_info.floating_ips)?;
                write(self.kv.as_ref(), &id, &attached)?;
            }
            None => write(self.kv.as_ref(), id, &attached)?,
        }
        Ok(())
    }

    /// DEL in Calico's order, every step tried; the failures, in the order they are
    /// reported.
    ///
    /// A pod (§5.3): the endpoint first, then the pod's interface, then its addresses. When
    /// the endpoint cannot be deleted its addresses stay held, so they are not handed to
    /// another pod while a stored endpoint still claims them; the runtime's retry releases
    /// them. A plain container (§5.3's last paragraph): addresses, endpoint, interface, and
    /// an IPAM failure is reported last.
    /// The endpoint, when it is deleted, is added to `released`.
    pub fn del(
        &self,
        teardown: impl FnOnce() -> Result<(), CalicoError>,
        release: impl FnOnce() -> Result<(), CalicoError>,
        released: &mut Released,
    ) -> Vec<CniError> {
        let mut failures: Vec<CniError> = Vec::new();
        let kubernetes = self.id.as_ref().is_ok_and(|id| id.pod.is_some());
        let mut release = Some(release);
        let ipam = if kubernetes {
            None
        } else {
            release.take().map(|r| r())
        };
        let endpoint_removed = match &self.id {
            Ok(id) => match remove(self.kv.as_ref(), id) {
                Ok(Removal::Kept { owner }) => {
                    log::info!(
                        "WorkloadEndpoint {} belongs to container {owner}, not {}: left in \
                         place",
                        id.key(),
                        id.container_id
                    );
                    true
                }
                Ok(Removal::Deleted) => {
                    released.add(format!("WorkloadEndpoint {}/{}", id.namespace, id.name));
                    true
                }
                Ok(Removal::Absent) => true,
                Err(e) => {
                    failures.push(CalicoError::from(e).into());
                    false
                }
            },
            Err(e) => {
                log::info!("no WorkloadEndpoint to delete: {e}");
                true
            }
        };
        if let Err(e) = teardown() {
            failures.push(e.into());
        }
        let ipam = match ipam {
            Some(done) => Some(done),
            None if endpoint_removed => release.take().map(|r| r()),
            None => None,
        };
        if let Some(Err(e)) = ipam {
            failures.push(e.into());
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use calico_ipam::store::memory::MemoryKv;
    use shared::spec::args::CniArgs;

    use super::*;

    fn conf(extra: Value) -> CalicoConf {
        let mut v = json!({"name": "net", "ipam": {"type": "calico-ipam"}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        CalicoConf::parse(v.to_string().as_bytes()).expect("valid conf")
    }

    fn k8s_id(conf: &CalicoConf, container: &str) -> WepIdentity {
        let args = CniArgs::parse("K8S_POD_NAMESPACE=ns-1;K8S_POD_NAME=web-0").expect("args");
        let w = Workload::from_args(&args, container);
        WepIdentity::new("node-a", &w, container, "eth0", conf).expect("valid")
    }

    fn cni_id(container: &str) -> WepIdentity {
        let w = Workload::Container {
            id: container.into(),
        };
        WepIdentity::new("node-a", &w, container, "eth0", &conf(json!({}))).expect("valid")
    }

    fn attached() -> Attached {
        Attached {
            interface_name: "cali0123456789a".into(),
            mac: "02:42:ac:11:00:02".into(),
            ip_networks: vec!["10.0.0.5/32".into(), "fd00::5/128".into()],
            ip_nats: Vec::new(),
        }
    }

    #[test]
    fn floating_ips_become_nats_of_the_same_family_and_prefixes_are_kept() {
        use shared::spec::result::IpConfig;
        let result = CniResult {
            ips: ["10.0.0.5/32", "fd00::5/128"]
                .iter()
                .map(|a| IpConfig {
                    address: a.parse().expect("cidr"),
                    gateway: None,
                    interface: Some(1),
                })
                .collect(),
            ..CniResult::default()
        };
        let floating: Vec<std::net::IpAddr> = vec![
            "192.0.2.7".parse().expect("ip"),
            "2001:db8::7".parse().expect("ip"),
        ];
        let got = nats(&result, &floating).expect("both families");
        assert_eq!(
            got,
            vec![
                ("10.0.0.5".to_string(), "192.0.2.7".to_string()),
                ("fd00::5".to_string(), "2001:db8::7".to_string())
            ]
        );
        let v4_only = CniResult {
            ips: result.ips[..1].to_vec(),
            ..CniResult::default()
        };
        assert!(matches!(
            nats(&v4_only, &floating),
            Err(WepError::Config(m)) if m.contains("2001:db8::7")
        ));

        let mut id = k8s_id(&conf(json!({})), "c1");
        id.pod_info.allowed_source_prefixes = vec!["10.9.0.0/24".into()];
        let mut a = attached();
        a.ip_nats = got;
        let v = id.resource(&a, &meta());
        assert_eq!(
            v["spec"]["ipNATs"],
            json!([{"internalIP": "10.0.0.5", "externalIP": "192.0.2.7"},
                   {"internalIP": "fd00::5", "externalIP": "2001:db8::7"}])
        );
        assert_eq!(
            v["spec"]["allowSpoofedSourcePrefixes"],
            json!(["10.9.0.0/24"])
        );
        let plain = k8s_id(&conf(json!({})), "c1").resource(&attached(), &meta());
        assert!(
            plain["spec"].get("ipNATs").is_none()
                && plain["spec"].get("allowSpoofedSourcePrefixes").is_none()
        );
    }

    fn meta() -> Meta {
        Meta {
            uid: "3f1f0b9a-0c1e-4f7e-9a55-0d4f2c1b2a10".into(),
            creation_timestamp: "2025-05-01T10:20:30Z".into(),
        }
    }

    #[test]
    fn a_plain_container_is_stored_as_calico_stores_it() {
        let id = cni_id("0123abcd");
        assert_eq!(
            id.key(),
            "/calico/resources/v3/projectcalico.org/workloadendpoints/default/node--a-cni-0123abcd-eth0"
        );
        let v = id.resource(&attached(), &meta());
        assert_eq!(
            v,
            json!({
                "kind": "WorkloadEndpoint",
                "apiVersion": "projectcalico.org/v3",
                "metadata": {
                    "name": "node--a-cni-0123abcd-eth0",
                    "namespace": "default",
                    "uid": "3f1f0b9a-0c1e-4f7e-9a55-0d4f2c1b2a10",
                    "creationTimestamp": "2025-05-01T10:20:30Z",
                    "labels": {"projectcalico.org/namespace": "default",
                               "projectcalico.org/orchestrator": "cni"},
                },
                "spec": {
                    "orchestrator": "cni",
                    "node": "node-a",
                    "containerID": "0123abcd",
                    "endpoint": "eth0",
                    "ipNetworks": ["10.0.0.5/32", "fd00::5/128"],
                    "profiles": ["net"],
                    "interfaceName": "cali0123456789a",
                    "mac": "02:42:ac:11:00:02",
                },
            })
        );
        // Calico's field order, byte for byte.
        assert!(v.to_string().starts_with(
            r#"{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":"#
        ));
    }

    #[test]
    fn a_pod_gets_its_namespace_pod_and_profiles() {
        let id = k8s_id(&conf(json!({})), "c1");
        assert_eq!(
            id.key(),
            "/calico/resources/v3/projectcalico.org/workloadendpoints/ns-1/node--a-k8s-web--0-eth0"
        );
        let v = id.resource(&attached(), &meta());
        assert_eq!(v["spec"]["orchestrator"], "k8s");
        assert_eq!(v["spec"]["pod"], "web-0");
        assert_eq!(v["spec"]["containerID"], "c1");
        assert_eq!(v["spec"]["profiles"], json!(["net"]));
        assert_eq!(
            v["metadata"]["labels"]["projectcalico.org/namespace"],
            "ns-1"
        );
        assert!(v["spec"].get("workload").is_none());
        assert!(v["metadata"].get("generateName").is_none());

        let mut id = k8s_id(&conf(json!({"policy": {"type": "k8s"}})), "c1");
        assert_eq!(
            id.resource(&attached(), &meta())["spec"]["profiles"],
            json!(["kns.ns-1"])
        );
        id.pod_info = PodInfo {
            labels: BTreeMap::from([("app".into(), "web".into())]),
            service_account: Some("builder".into()),
            generate_name: Some("web-".into()),
            ports: Vec::new(),
            floating_ips: Vec::new(),
            allowed_source_prefixes: Vec::new(),
        };
        let v = id.resource(&attached(), &meta());
        assert_eq!(
            v["spec"]["profiles"],
            json!(["kns.ns-1", "ksa.ns-1.builder"])
        );
        assert_eq!(v["spec"]["serviceAccountName"], "builder");
        assert_eq!(v["metadata"]["generateName"], "web-");
        assert_eq!(
            v["metadata"]["labels"],
            json!({"app": "web", "projectcalico.org/namespace": "ns-1",
                   "projectcalico.org/orchestrator": "k8s",
                   "projectcalico.org/serviceaccount": "builder"})
        );
    }

    #[test]
    fn an_untrusted_etcd_is_the_configurations_problem_not_a_retry() {
        let untrusted = || StoreError::Misconfigured("etcd_ca_cert_file /ca.pem".into());
        assert_eq!(
            WepError::Endpoint {
                op: "error reading",
                key: "k".into(),
                source: untrusted()
            }
            .code_and_details()
            .0,
            ErrorCode::InvalidNetworkConfig
        );
        assert_eq!(
            WepError::Endpoint {
                op: "error reading",
                key: "k".into(),
                source: StoreError::Unavailable("down".into())
            }
            .code_and_details()
            .0,
            ErrorCode::TryAgainLater
        );
    }

    #[test]
    fn write_creates_then_updates_keeping_uid_and_creation() {
        let kv = MemoryKv::new();
        let id = k8s_id(&conf(json!({})), "old");
        write(&kv, &id, &attached()).expect("create");
        let first: Value = serde_json::from_slice(&kv.dump()[&id.key()]).expect("stored JSON");
        let uid = first["metadata"]["uid"].as_str().expect("uid").to_string();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4", "version 4: {uid}");
        assert!(first["metadata"].get("resourceVersion").is_none());

        // A new sandbox of the same pod takes the endpoint over.
        let id2 = k8s_id(&conf(json!({})), "new");
        let mut other = attached();
        other.ip_networks = vec!["10.0.0.9/32".into()];
        kv.inject_conflict(&id.key());
        write(&kv, &id2, &other).expect("update, after one lost race");
        let second: Value = serde_json::from_slice(&kv.dump()[&id.key()]).expect("stored JSON");
        assert_eq!(second["spec"]["containerID"], "new");
        assert_eq!(second["spec"]["ipNetworks"], json!(["10.0.0.9/32"]));
        assert_eq!(second["metadata"]["uid"], first["metadata"]["uid"]);
        assert_eq!(
            second["metadata"]["creationTimestamp"],
            first["metadata"]["creationTimestamp"]
        );
    }

    #[test]
    fn remove_only_what_is_ours() {
        let kv = MemoryKv::new();
        let id = k8s_id(&conf(json!({})), "new");
        let stale = k8s_id(&conf(json!({})), "old");
        assert_eq!(remove(&kv, &id).expect("absent"), Removal::Absent);
        write(&kv, &id, &attached()).expect("write");
        assert_eq!(
            remove(&kv, &stale).expect("kept"),
            Removal::Kept {
                owner: "new".into()
            }
        );
        assert!(kv.dump().contains_key(&id.key()));
        kv.inject_conflict(&id.key());
        assert_eq!(remove(&kv, &id).expect("deleted"), Removal::Deleted);
        assert!(kv.dump().is_empty());
        assert_eq!(remove(&kv, &id).expect("again"), Removal::Absent);

        // An endpoint without a container id is anybody's.
        kv.create(&id.key(), br#"{"spec":{}}"#).expect("create");
        assert_eq!(remove(&kv, &stale).expect("deleted"), Removal::Deleted);
        // One that cannot be read is nobody's to delete.
        kv.create(&id.key(), b"{torn").expect("create");
        let err = remove(&kv, &id).expect_err("unreadable");
        assert_eq!(err.code_and_details().0, ErrorCode::Datastore);
    }

    #[test]
    fn no_datastore_keys_means_no_datastore() {
        let c = |v: Value| conf(v).datastore;
        assert_eq!(kv_datastore(&c(json!({}))).expect("ok"), None);
        assert_eq!(
            kv_datastore(&c(json!({"etcd_endpoints": "http://e:2379"}))).expect("ok"),
            Some(Datastore::Etcd)
        );
        assert_eq!(
            kv_datastore(&c(json!({"datastore_type": "etcdv3"}))).expect("ok"),
            Some(Datastore::Etcd)
        );
        assert_eq!(
            kv_datastore(&c(json!({"datastore_type": "local"}))).expect("ok"),
            Some(Datastore::Local)
        );
        assert_eq!(
            kv_datastore(&c(json!({"datastore_type": "kubernetes"}))).expect("ok"),
            None
        );
        assert!(kv_datastore(&c(json!({"datastore_type": "consul"}))).is_err());
    }
}
