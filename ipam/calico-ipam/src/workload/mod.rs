//! What the calico plugin needs of a datastore besides IPAM: whether Calico is ready, the
//! Kubernetes objects a pod's identity comes from, and the pod's endpoint, published on ADD
//! and released on DEL. The plugin reaches Calico's objects only through here, so ADD and
//! DEL follow one path whatever the datastore, and a new datastore is one more
//! [`EndpointStore`].
//!
//! Where the endpoint lives:
//!
//! - `etcdv3` and `local`: a v3 WorkloadEndpoint under Calico's key ([`wep`], [`kv`]), with
//!   the network's Profile created when Calico's plugin would create it ([`profile`]);
//! - `kubernetes`: the pod's own annotations, patched through the status subresource
//!   ([`pod_endpoint`]).

pub mod endpoint;
pub mod kube_objects;
pub mod kv;
pub mod pod_endpoint;
pub mod profile;
pub mod uid;
pub mod wep;

use std::net::IpAddr;

pub use endpoint::{Endpoint, EndpointKey, EndpointPort, IpNat, Removal};

use crate::datastore::{open_kv, DatastoreError};
use crate::k8s::KubeError;
use crate::netconf::{Datastore, DatastoreConf};
use crate::store::kube::KubeStore;
use crate::store::StoreError;

/// A failed endpoint request. `what` names the object and the operation.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The configuration names a datastore that cannot be used.
    #[error("{0}")]
    Config(String),
    /// A key-value datastore refused or could not answer.
    #[error("{what}: {source}")]
    Store { what: String, source: StoreError },
    /// The Kubernetes API refused or could not answer.
    #[error("{what}: {source}")]
    Kube { what: String, source: KubeError },
    #[error("pod {0} not found")]
    PodNotFound(String),
    /// Every compare-and-swap round lost against another writer.
    #[error("error deleting endpoint: endpoint was modified before it could be deleted")]
    Modified,
    #[error("cannot generate an object uid: reading /dev/urandom: {0}")]
    Uid(std::io::Error),
}

impl From<DatastoreError> for EndpointError {
    fn from(e: DatastoreError) -> EndpointError {
        match e {
            DatastoreError::Store(source) => EndpointError::Store {
                what: "error opening the datastore".into(),
                source,
            },
            DatastoreError::Unsupported(m) | DatastoreError::Config(m) => EndpointError::Config(m),
        }
    }
}

/// One datastore's answers to what the plugin asks about a workload's endpoint.
pub trait EndpointStore {
    /// ClusterInformation `default` says the datastore is ready (see [`crate::readiness`]).
    fn ready(&self) -> Result<bool, StoreError>;

    /// The Kubernetes API, when the endpoints live there (its identity reads need no
    /// second connection).
    fn kubernetes(&self) -> Option<&KubeStore> {
        None
    }

    /// The stored endpoint, in a log line or a DEL report.
    fn describe(&self, key: &EndpointKey) -> String;

    /// The addresses the stored endpoint under `key` holds: a fixed-address pod's new
    /// sandbox releases them first, or IPAM would refuse them as already taken.
    fn held_addresses(&self, key: &EndpointKey) -> Result<Vec<IpAddr>, EndpointError>;

    /// ADD's last step: creates or updates the endpoint, compare-and-swap against whatever
    /// was read, so a concurrent writer is never overwritten blindly.
    fn publish(&self, endpoint: &Endpoint) -> Result<(), EndpointError>;

    /// DEL: removes the endpoint unless another sandbox of the workload owns it now.
    fn release(&self, key: &EndpointKey) -> Result<Removal, EndpointError>;
}

/// Which datastore keeps endpoints for this configuration, if any.
///
/// One deliberate difference from Calico: its client falls back to etcd on `127.0.0.1:2379`
/// when the config names no datastore at all. Here a config with neither `datastore_type`
/// nor `etcd_endpoints` names none (the plugin then only wires the pod), so a node without
/// etcd keeps working with a minimal config and no request waits on a connect timeout.
pub fn kind(conf: &DatastoreConf) -> Result<Option<Datastore>, EndpointError> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let etcd_named = [
        &conf.etcd_endpoints,
        &conf.etcd_authority,
        &conf.etcd_discovery_srv,
    ]
    .into_iter()
    .any(set);
    if !set(&conf.datastore_type) && !etcd_named {
        return Ok(None);
    }
    conf.kind().map(Some).map_err(EndpointError::Config)
}

/// The endpoint store of an `etcdv3` or `local` configuration.
pub fn open_kv_endpoints(conf: &DatastoreConf) -> Result<kv::KvEndpoints, EndpointError> {
    Ok(kv::KvEndpoints::new(open_kv(conf)?))
}

/// The endpoint store of the Kubernetes datastore: the pods' annotations.
pub fn pod_endpoints(store: KubeStore) -> pod_endpoint::PodEndpoints {
    pod_endpoint::PodEndpoints::new(store)
}
