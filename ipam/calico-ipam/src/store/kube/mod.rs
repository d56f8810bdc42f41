//! The Kubernetes datastore: Calico's IPAM objects as `crd.projectcalico.org/v1` custom
//! resources through the API server, with the names, labels and JSON libcalico-go uses
//! (spec §7.1), so Calico's own components share them with us.
//!
//! - A [`Revision`] is the object's `metadata.resourceVersion`; an update is a PUT carrying
//!   it, and a 409 is a lost compare-and-swap ([`StoreError::Conflict`]).
//! - Blocks, affinities and handles are deleted in two steps, as Calico does: a PUT with
//!   `deleted: true` (the compare-and-swap on the revision the caller read: the real
//!   linearisation point, since a DELETE alone cannot be made conditional on a
//!   resourceVersion a concurrent writer may have bumped), then a DELETE preconditioned
//!   on the UID and the resourceVersion of that update. A reader that finds an object
//!   marked deleted finishes the delete and reports it missing; lists leave such objects
//!   out.
//! - A node's affinities are listed by the labels Calico puts on every BlockAffinity
//!   (hostname hash, type, IP version). Only when none carries them (a node's first
//!   claim, or affinities an older Calico wrote without labels) are all listed, and the
//!   node's own are labelled then.
//! - 401 and 403 become [`StoreError::Denied`] with the server's verdict (which verb on
//!   which resource), so the CNI error says what to fix.
//!
//! The store remembers the last version it read or wrote of each block, affinity and
//! handle: an update keeps the metadata others put there (labels, annotations, owner
//! references) and a delete has the object to mark without reading it again.

pub mod names;
pub mod objects;

use std::cell::RefCell;
use std::collections::HashMap;

use ipnetwork::IpNetwork;
use serde_json::{json, Map, Value};

use super::{in_use, Result, Revision, Store, StoreError, Versioned};
use crate::k8s::{KubeClient, KubeError, KubeSettings, Preconditions};
use crate::model::{
    BlockAffinity, ClusterInformation, IpPool, IpReservation, IpamBlock, IpamConfig, IpamHandle,
    Node, NodeTunnelAddresses, WorkloadAddresses,
};

/// Where Calico's CRDs are served.
const CRD_ROOT: &str = "/apis/crd.projectcalico.org/v1";

/// The kinds this store reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Pool,
    Block,
    Affinity,
    Handle,
    Config,
    ClusterInformation,
    Reservation,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Pool => "ippools",
            Kind::Block => "ipamblocks",
            Kind::Affinity => "blockaffinities",
            Kind::Handle => "ipamhandles",
            Kind::Config => "ipamconfigs",
            Kind::ClusterInformation => "clusterinformations",
            Kind::Reservation => "ipreservations",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Kind::Pool => "IPPool",
            Kind::Block => "IPAMBlock",
            Kind::Affinity => "BlockAffinity",
            Kind::Handle => "IPAMHandle",
            Kind::Config => "IPAMConfig",
            Kind::ClusterInformation => "ClusterInformation",
            Kind::Reservation => "IPReservation",
        }
    }

    fn collection(self) -> String {
        format!("{CRD_ROOT}/{}", self.plural())
    }

    fn path(self, name: &str) -> String {
        format!("{CRD_ROOT}/{}/{name}", self.plural())
    }

    /// `IPAMBlock 10-244-1-64-26`: how messages name an object.
    fn what(self, name: &str) -> String {
        format!("{} {name}", self.kind())
    }

    /// The `spec.deleted` that marks an object for deletion: a string on affinities.
    fn deleted_marker(self) -> Value {
        match self {
            Kind::Affinity => json!("true"),
            _ => json!(true),
        }
    }
}

/// An API error as the engine sees it. `op` and `what` name the request in messages.
fn store_error(e: KubeError, op: &'static str, what: &str) -> StoreError {
    match e {
        KubeError::NotFound(_) => StoreError::NotFound(what.to_string()),
        KubeError::AlreadyExists(_) => StoreError::AlreadyExists(what.to_string()),
        KubeError::Conflict(_) => StoreError::Conflict(what.to_string()),
        KubeError::Unavailable { server, reason } => {
            StoreError::Unavailable(format!("the API server at {server}: {reason}"))
        }
        e @ (KubeError::Unauthorized { .. } | KubeError::Forbidden { .. }) => {
            StoreError::Denied(e.to_string())
        }
        KubeError::Invalid { message, .. } => StoreError::Refused {
            op,
            key: what.to_string(),
            reason: message,
        },
        e @ (KubeError::Config(_) | KubeError::Api { .. }) => StoreError::Refused {
            op,
            key: what.to_string(),
            reason: e.to_string(),
        },
    }
}

/// Calico's IPAM objects in the Kubernetes API.
pub struct KubeStore {
    client: KubeClient,
    /// The last version read or written of each block, affinity and handle, by kind and
    /// name.
    seen: RefCell<HashMap<(Kind, String), Value>>,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl KubeStore {
    /// A store on the API server `settings` name. Nothing is sent yet.
    pub fn connect(settings: &KubeSettings) -> std::result::Result<KubeStore, KubeError> {
        Ok(KubeStore::new(KubeClient::connect(settings)?))
    }

    pub fn new(client: KubeClient) -> KubeStore {
        KubeStore {
            client,
            seen: RefCell::new(HashMap::new()),
        }
    }

    /// The client, for its round-trip count.
    pub fn client(&self) -> &KubeClient {
        &self.client
    }

    fn remember(&self, kind: Kind, object: &Value) {
        let name = objects::name_of(object).to_string();
        self.seen.borrow_mut().insert((kind, name), object.clone());
    }

    fn forget(&self, kind: Kind, name: &str) {
        self.seen.borrow_mut().remove(&(kind, name.to_string()));
    }

    fn remembered(&self, kind: Kind, name: &str) -> Option<Value> {
        self.seen.borrow().get(&(kind, name.to_string())).cloned()
    }

    /// GET one object; `None` when it does not exist.
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Value>> {
        self.client
            .get(&kind.path(name))
            .map_err(|e| store_error(e, "get", &kind.what(name)))
    }

    /// GET a block, affinity or handle: one marked deleted is deleted now and reads as
    /// missing.
    fn get_live(&self, kind: Kind, name: &str) -> Result<Option<Value>> {
        let Some(object) = self.get(kind, name)? else {
            self.forget(kind, name);
            return Ok(None);
        };
        if objects::marked_deleted(&object) {
            log::info!(
                "{} is marked deleted: finishing its deletion",
                kind.what(name)
            );
            self.finish_delete(kind, name, &object)?;
            return Ok(None);
        }
        self.remember(kind, &object);
        Ok(Some(object))
    }

    fn list(&self, kind: Kind, selector: Option<&str>) -> Result<Vec<Value>> {
        self.client
            .list(&kind.collection(), selector)
            .map_err(|e| store_error(e, "list", kind.plural()))
    }

    /// POST; the revision of the stored object.
    fn create(&self, kind: Kind, object: &Value) -> Result<Revision> {
        let name = objects::name_of(object);
        let stored = self
            .client
            .create(&kind.collection(), object)
            .map_err(|e| store_error(e, "create", &kind.what(name)))?;
        self.remember(kind, &stored);
        Ok(objects::revision_of(&stored))
    }

    /// PUT conditional on `revision`. The metadata of the version last seen (labels and
    /// annotations of other writers, owner references, the UID) is kept, ours on top.
    fn replace(&self, kind: Kind, mut object: Value, revision: &Revision) -> Result<Value> {
        let name = objects::name_of(&object).to_string();
        let mut metadata = match self.remembered(kind, &name) {
            Some(Value::Object(mut seen)) => match seen.remove("metadata") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            },
            _ => Map::new(),
        };
        if let Value::Object(ours) = object["metadata"].take() {
            for (key, value) in ours {
                match (metadata.get_mut(&key), value) {
                    (Some(Value::Object(theirs)), Value::Object(mine))
                        if key == "labels" || key == "annotations" =>
                    {
                        theirs.extend(mine);
                    }
                    (_, value) => {
                        metadata.insert(key, value);
                    }
                }
            }
        }
        metadata.insert("resourceVersion".into(), json!(revision));
        // Server-side bookkeeping, rewritten by the server anyway.
        metadata.remove("managedFields");
        object["metadata"] = Value::Object(metadata);
        let stored = self
            .client
            .replace(&kind.path(&name), &object)
            .map_err(|e| store_error(e, "update", &kind.what(&name)))?;
        self.remember(kind, &stored);
        Ok(stored)
    }

    /// The two-step delete: mark `deleted` (compare-and-swap on `revision`), then DELETE
    /// that very version. `object` is the object to mark when the caller has it as a
    /// model; otherwise the version last seen is used (read again if there is none).
    fn soft_delete(
        &self,
        kind: Kind,
        name: &str,
        object: Option<Value>,
        revision: &Revision,
    ) -> Result<()> {
        let base = match object.or_else(|| {
            self.remembered(kind, name)
                .filter(|seen| objects::revision_of(seen) == *revision)
        }) {
            Some(base) => base,
            None => match self.get(kind, name)? {
                Some(current) if objects::revision_of(&current) == *revision => current,
                Some(_) => return Err(StoreError::Conflict(kind.what(name))),
                None => return Err(StoreError::NotFound(kind.what(name))),
            },
        };
        let mut marked = base;
        marked["spec"]["deleted"] = kind.deleted_marker();
        let marked = self.replace(kind, marked, revision)?;
        self.finish_delete(kind, name, &marked)
    }

    /// DELETE exactly `object` (its UID and resourceVersion as preconditions). Gone
    /// already, or changed since: someone else finished (or replaced) it, which is as
    /// good.
    fn finish_delete(&self, kind: Kind, name: &str, object: &Value) -> Result<()> {
        self.forget(kind, name);
        let preconditions = Preconditions {
            uid: object["metadata"]["uid"].as_str().map(str::to_string),
            resource_version: Some(objects::revision_of(object)),
        };
        match self.client.delete(&kind.path(name), &preconditions) {
            Ok(()) | Err(KubeError::NotFound(_)) => Ok(()),
            Err(KubeError::Conflict(_)) => {
                log::info!("{} changed before its deletion finished", kind.what(name));
                Ok(())
            }
            Err(e) => Err(store_error(e, "delete", &kind.what(name))),
        }
    }

    /// `affinity` as stored in `object`, with the labels a newer Calico lists affinities by
    /// added if missing (an older Calico wrote none): else lists by label never find it.
    /// Best effort: a lost race leaves the labelling to the next reader.
    fn labelled(
        &self,
        object: &Value,
        mut affinity: Versioned<BlockAffinity>,
    ) -> Versioned<BlockAffinity> {
        let labelled = match objects::affinity_labels(&affinity.value) {
            Value::Object(wanted) => wanted
                .iter()
                .all(|(k, v)| object["metadata"]["labels"].get(k) == Some(v)),
            _ => true,
        };
        if labelled {
            return affinity;
        }
        let name = objects::name_of(object).to_string();
        if self.remembered(Kind::Affinity, &name).is_none() {
            // Keep the metadata others gave it.
            self.remember(Kind::Affinity, object);
        }
        match self.replace(
            Kind::Affinity,
            objects::affinity(&affinity.value),
            &affinity.revision,
        ) {
            Ok(stored) => affinity.revision = objects::revision_of(&stored),
            Err(e) => log::info!("cannot label {}: {e}", Kind::Affinity.what(&name)),
        }
        affinity
    }

    fn versioned<T>(object: &Value, decode: impl Fn(&Value) -> Result<T>) -> Result<Versioned<T>> {
        Ok(Versioned {
            value: decode(object)?,
            revision: objects::revision_of(object),
        })
    }
}

impl Store for KubeStore {
    /// A GET that needs only the RBAC every Calico CNI has: an answer, even 404, is a
    /// reachable and authorized server.
    fn ping(&self) -> Result<()> {
        self.get(Kind::ClusterInformation, objects::DEFAULT_NAME)
            .map(drop)
    }

    /// In name order, as the API lists them (Calico's pool order).
    fn list_pools(&self) -> Result<Vec<IpPool>> {
        self.list(Kind::Pool, None)?
            .iter()
            .map(objects::pool_from)
            .collect()
    }

    fn create_pool(&self, pool: &IpPool) -> Result<()> {
        let object = objects::pool(pool);
        self.client
            .create(&Kind::Pool.collection(), &object)
            .map(drop)
            .map_err(|e| store_error(e, "create", &Kind::Pool.what(&pool.name)))
    }

    /// A cluster whose API server does not serve the IPReservation CRD (404 on the
    /// collection) has no reservations; libcalico-go would fail the ADD instead.
    fn list_reservations(&self) -> Result<Vec<IpReservation>> {
        let listed = match self.list(Kind::Reservation, None) {
            Ok(listed) => listed,
            Err(StoreError::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        listed.iter().map(objects::reservation_from).collect()
    }

    /// The Kubernetes Node: its labels are what pool node selectors match.
    fn get_node(&self, name: &str) -> Result<Option<Node>> {
        let path = format!("/api/v1/nodes/{name}");
        match self.client.get(&path) {
            Ok(Some(object)) => objects::node_from(&object).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(store_error(e, "get", &format!("Node {name}"))),
        }
    }

    fn get_cluster_information(&self) -> Result<Option<Versioned<ClusterInformation>>> {
        self.get(Kind::ClusterInformation, objects::DEFAULT_NAME)?
            .map(|o| Self::versioned(&o, objects::cluster_information_from))
            .transpose()
    }

    /// Every pod of every namespace, as Calico's Kubernetes datastore lists its
    /// WorkloadEndpoints.
    fn list_workload_addresses(&self) -> Result<Vec<WorkloadAddresses>> {
        let pods = self
            .client
            .list("/api/v1/pods", None)
            .map_err(|e| store_error(e, "list", "pods"))?;
        let mut out = Vec::new();
        for pod in &pods {
            out.extend(in_use::from_pod(pod)?);
        }
        Ok(out)
    }

    fn list_node_tunnel_addresses(&self) -> Result<Vec<NodeTunnelAddresses>> {
        self.client
            .list("/api/v1/nodes", None)
            .map_err(|e| store_error(e, "list", "nodes"))?
            .iter()
            .map(in_use::from_kubernetes_node)
            .collect()
    }

    fn get_ipam_config(&self) -> Result<Option<Versioned<IpamConfig>>> {
        self.get(Kind::Config, objects::DEFAULT_NAME)?
            .map(|o| Self::versioned(&o, objects::ipam_config_from))
            .transpose()
    }

    fn create_ipam_config(&self, config: &IpamConfig) -> Result<Revision> {
        self.create(Kind::Config, &objects::ipam_config(config))
    }

    fn update_ipam_config(&self, config: &IpamConfig, revision: &Revision) -> Result<Revision> {
        self.replace(Kind::Config, objects::ipam_config(config), revision)
            .map(|stored| objects::revision_of(&stored))
    }

    fn get_block(&self, cidr: &IpNetwork) -> Result<Option<Versioned<IpamBlock>>> {
        self.get_live(Kind::Block, &names::block_name(cidr))?
            .map(|o| Self::versioned(&o, objects::block_from))
            .transpose()
    }

    /// Blocks have no labels to select a family by: all are listed, those of the other
    /// family and those being deleted left out.
    fn list_blocks(&self, v4: bool) -> Result<Vec<Versioned<IpamBlock>>> {
        let mut blocks = Vec::new();
        for object in self.list(Kind::Block, None)? {
            if objects::marked_deleted(&object) {
                continue;
            }
            let block = Self::versioned(&object, objects::block_from)?;
            if block.value.cidr.is_ipv4() == v4 {
                blocks.push(block);
            }
        }
        Ok(blocks)
    }

    fn create_block(&self, block: &IpamBlock) -> Result<Revision> {
        self.create(Kind::Block, &objects::block(block))
    }

    fn update_block(&self, block: &IpamBlock, revision: &Revision) -> Result<Revision> {
        self.replace(Kind::Block, objects::block(block), revision)
            .map(|stored| objects::revision_of(&stored))
    }

    fn delete_block(&self, cidr: &IpNetwork, revision: &Revision) -> Result<()> {
        self.soft_delete(Kind::Block, &names::block_name(cidr), None, revision)
    }

    /// The affinity named after `node` and `cidr`, if it is of this type and node (the
    /// name does not hold the type, and a cut long node name is shared).
    fn get_affinity(
        &self,
        affinity_type: &str,
        node: &str,
        cidr: &IpNetwork,
    ) -> Result<Option<Versioned<BlockAffinity>>> {
        let name = names::affinity_name(node, cidr);
        let Some(object) = self.get_live(Kind::Affinity, &name)? else {
            return Ok(None);
        };
        let affinity = Self::versioned(&object, objects::affinity_from)?;
        let ours = affinity.value.affinity_type == affinity_type
            && affinity.value.node == node
            && affinity.value.cidr == *cidr;
        if !ours {
            return Ok(None);
        }
        Ok(Some(self.labelled(&object, affinity)))
    }

    fn list_affinities(
        &self,
        affinity_type: &str,
        node: &str,
        v4: bool,
    ) -> Result<Vec<Versioned<BlockAffinity>>> {
        let selector = names::affinity_selector(affinity_type, node, v4);
        let mut listed = self.list(Kind::Affinity, Some(&selector))?;
        let by_label = !listed.is_empty();
        if !by_label {
            // None labelled: this node's affinities may predate the labels (written by an
            // older Calico). Look at all of them once; those found get labelled below, so
            // the next list by label finds them.
            listed = self.list(Kind::Affinity, None)?;
        }
        let mut affinities = Vec::new();
        for object in listed {
            if objects::marked_deleted(&object) {
                continue;
            }
            let affinity = Self::versioned(&object, objects::affinity_from)?;
            // The labels carry a hash of the node: check the node itself.
            let a = &affinity.value;
            if a.node == node && a.affinity_type == affinity_type && a.cidr.is_ipv4() == v4 {
                affinities.push(if by_label {
                    affinity
                } else {
                    self.labelled(&object, affinity)
                });
            }
        }
        Ok(affinities)
    }

    fn create_affinity(&self, affinity: &BlockAffinity) -> Result<Revision> {
        self.create(Kind::Affinity, &objects::affinity(affinity))
    }

    fn update_affinity(&self, affinity: &BlockAffinity, revision: &Revision) -> Result<Revision> {
        self.replace(Kind::Affinity, objects::affinity(affinity), revision)
            .map(|stored| objects::revision_of(&stored))
    }

    fn delete_affinity(&self, affinity: &BlockAffinity, revision: &Revision) -> Result<()> {
        let object = objects::affinity(affinity);
        let name = objects::name_of(&object).to_string();
        self.soft_delete(Kind::Affinity, &name, Some(object), revision)
    }

    fn get_handle(&self, handle_id: &str) -> Result<Option<Versioned<IpamHandle>>> {
        self.get_live(Kind::Handle, &names::handle_name(handle_id))?
            .map(|o| Self::versioned(&o, objects::handle_from))
            .transpose()
    }

    fn list_handles(&self) -> Result<Vec<Versioned<IpamHandle>>> {
        self.list(Kind::Handle, None)?
            .iter()
            .filter(|o| !objects::marked_deleted(o))
            .map(|o| Self::versioned(o, objects::handle_from))
            .collect()
    }

    fn create_handle(&self, handle: &IpamHandle) -> Result<Revision> {
        self.create(Kind::Handle, &objects::handle(handle))
    }

    fn update_handle(&self, handle: &IpamHandle, revision: &Revision) -> Result<Revision> {
        self.replace(Kind::Handle, objects::handle(handle), revision)
            .map(|stored| objects::revision_of(&stored))
    }

    fn delete_handle(&self, handle_id: &str, revision: &Revision) -> Result<()> {
        self.soft_delete(Kind::Handle, &names::handle_name(handle_id), None, revision)
    }
}
