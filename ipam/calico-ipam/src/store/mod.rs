//! The Calico datastore seam: typed get / list / create / update (compare-and-swap on a
//! revision) / delete of the objects IPAM uses. The engine never knows which backend it runs
//! on.
//!
//! Two backends are key-value stores with Calico's etcd layout ([`kv::KvStore`] over
//! [`codec`]): `etcdv3` (a real etcd) and `local` (files on one node, same keys and JSON).
//! The Kubernetes backend ([`kube::KubeStore`]) maps the same objects to Calico's CRDs.

pub mod codec;
pub mod etcd;
pub mod in_use;
pub mod kube;
pub mod kv;
pub mod local;
pub mod memory;
pub mod wire;

use ipnetwork::IpNetwork;

use crate::model::{
    BlockAffinity, ClusterInformation, IpPool, IpReservation, IpamBlock, IpamConfig, IpamHandle,
    Node, NodeTunnelAddresses, WorkloadAddresses,
};

/// An opaque version token: etcd's mod revision, a Kubernetes resourceVersion, a hash of a
/// local file. Only ever compared for equality by the backend that issued it.
pub type Revision = String;

/// A value read from the store with the revision to compare-and-swap against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The compare-and-swap lost: someone else changed the object first. Re-read and retry.
    #[error("{0} was modified by someone else")]
    Conflict(String),
    /// The datastore cannot be reached right now; worth retrying later.
    #[error("datastore unreachable: {0}")]
    Unavailable(String),
    /// The datastore refused our credentials (an expired token) or our permissions (RBAC):
    /// the message names the server, or the verb and resource to grant. Worth retrying once
    /// the token is refreshed or the role fixed.
    #[error("{0}")]
    Denied(String),
    /// The datastore cannot be used as configured (etcd's server certificate fails
    /// verification against the configured CA): retrying will not help; the message names
    /// the setting to fix.
    #[error("{0}")]
    Misconfigured(String),
    #[error("object {key} cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("datastore refused {op} of {key}: {reason}")]
    Refused {
        op: &'static str,
        key: String,
        reason: String,
    },
}

impl StoreError {
    /// The CNI code of a datastore failure: unreachable, or refusing credentials or
    /// permissions (a token calico-node has not refreshed yet, RBAC being rolled out), is
    /// worth retrying; a datastore the configuration cannot reach (an etcd CA that did not
    /// sign etcd's certificate) is the configuration's problem; anything else is the
    /// datastore's.
    pub fn cni_code(&self) -> shared::spec::error::ErrorCode {
        use shared::spec::error::ErrorCode as C;
        match self {
            StoreError::Unavailable(_) | StoreError::Conflict(_) | StoreError::Denied(_) => {
                C::TryAgainLater
            }
            StoreError::Misconfigured(_) => C::InvalidNetworkConfig,
            _ => C::Datastore,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The typed operations the IPAM engine and the plugins need.
pub trait Store {
    /// A real round trip to the datastore (STATUS, `-t`): fails when it is unreachable.
    fn ping(&self) -> Result<()>;

    fn list_pools(&self) -> Result<Vec<IpPool>>;
    /// Creating pools is an operator's job; the `local` backend does it for the pools its
    /// config names.
    fn create_pool(&self, pool: &IpPool) -> Result<()>;
    /// Every IPReservation. Only read: reservations are an operator's.
    fn list_reservations(&self) -> Result<Vec<IpReservation>>;
    fn get_node(&self, name: &str) -> Result<Option<Node>>;
    /// Whether calico/node runs against this datastore: it registers a Node object for every
    /// node and keeps ClusterInformation's readiness. Not so in the single-node `local`
    /// store.
    fn has_calico_node(&self) -> bool {
        true
    }
    /// With its revision: an IPAM report is only acted on while it is unchanged.
    fn get_cluster_information(&self) -> Result<Option<Versioned<ClusterInformation>>>;
    /// Every workload the datastore knows (WorkloadEndpoints; on Kubernetes, pods) with
    /// the addresses it uses.
    fn list_workload_addresses(&self) -> Result<Vec<WorkloadAddresses>>;
    /// Every node's tunnel addresses.
    fn list_node_tunnel_addresses(&self) -> Result<Vec<NodeTunnelAddresses>>;

    fn get_ipam_config(&self) -> Result<Option<Versioned<IpamConfig>>>;
    fn create_ipam_config(&self, config: &IpamConfig) -> Result<Revision>;
    /// Compare-and-swap, as every other update: an operator's change never overwrites one
    /// made since it read the object.
    fn update_ipam_config(&self, config: &IpamConfig, revision: &Revision) -> Result<Revision>;

    fn get_block(&self, cidr: &IpNetwork) -> Result<Option<Versioned<IpamBlock>>>;
    /// Every block of one IP family.
    fn list_blocks(&self, v4: bool) -> Result<Vec<Versioned<IpamBlock>>>;
    fn create_block(&self, block: &IpamBlock) -> Result<Revision>;
    fn update_block(&self, block: &IpamBlock, revision: &Revision) -> Result<Revision>;
    fn delete_block(&self, cidr: &IpNetwork, revision: &Revision) -> Result<()>;

    fn get_affinity(
        &self,
        affinity_type: &str,
        node: &str,
        cidr: &IpNetwork,
    ) -> Result<Option<Versioned<BlockAffinity>>>;
    /// The affinities of one node of one type and family (deleted ones left out).
    fn list_affinities(
        &self,
        affinity_type: &str,
        node: &str,
        v4: bool,
    ) -> Result<Vec<Versioned<BlockAffinity>>>;
    fn create_affinity(&self, affinity: &BlockAffinity) -> Result<Revision>;
    fn update_affinity(&self, affinity: &BlockAffinity, revision: &Revision) -> Result<Revision>;
    fn delete_affinity(&self, affinity: &BlockAffinity, revision: &Revision) -> Result<()>;

    fn get_handle(&self, handle_id: &str) -> Result<Option<Versioned<IpamHandle>>>;
    fn list_handles(&self) -> Result<Vec<Versioned<IpamHandle>>>;
    fn create_handle(&self, handle: &IpamHandle) -> Result<Revision>;
    fn update_handle(&self, handle: &IpamHandle, revision: &Revision) -> Result<Revision>;
    fn delete_handle(&self, handle_id: &str, revision: &Revision) -> Result<()>;
}

/// The log line of one datastore request, at debug level: what each ADD and DEL costs the
/// datastore is counted from these (one line per request, bytes each way), by the tests that
/// check it does not grow with the cluster and by `scripts/bench.sh`.
pub fn meter(store: &str, request: &str, key: &str, sent: usize, received: usize) {
    log::debug!("{store}: {request} {key}: {sent} bytes sent, {received} received");
}
