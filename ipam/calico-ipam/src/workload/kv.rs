//! Endpoints on a key-value datastore (`etcdv3`, and our `local`): a v3 WorkloadEndpoint
//! under Calico's key, so a node running Calico's plugin reads and deletes ours, and we read
//! and delete theirs:
//!
//! ```text
//! /calico/resources/v3/projectcalico.org/workloadendpoints/<namespace>/<wep name>
//! ```

use std::net::IpAddr;

use super::endpoint::{Endpoint, EndpointKey, Removal};
use super::wep::{self, WorkloadEndpoint};
use super::{profile, EndpointError, EndpointStore};
use crate::store::kv::{Kv, KvStore};
use crate::store::{Revision, StoreError};

/// Compare-and-swap rounds before giving up: another writer of the same endpoint (a
/// concurrent ADD or DEL of the same container) is rare and quick.
const ATTEMPTS: usize = 5;

/// A stored endpoint and its revision; the decoding failure when it cannot be read.
type Stored = (Result<WorkloadEndpoint, String>, Revision);

pub struct KvEndpoints<K = Box<dyn Kv>> {
    kv: K,
}

fn failed(op: &str, key: &str) -> impl FnOnce(StoreError) -> EndpointError {
    let what = format!("{op} WorkloadEndpoint {key}");
    move |source| EndpointError::Store { what, source }
}

impl<K: Kv> KvEndpoints<K> {
    pub fn new(kv: K) -> KvEndpoints<K> {
        KvEndpoints { kv }
    }

    /// The stored endpoint under `key`; `Err` with the reason when it cannot be decoded.
    fn read(&self, key: &str) -> Result<Option<Stored>, EndpointError> {
        let stored = self.kv.get(key).map_err(failed("error reading", key))?;
        Ok(stored.map(|(bytes, revision)| {
            (
                serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
                revision,
            )
        }))
    }

    fn write(&self, endpoint: &Endpoint) -> Result<(), EndpointError> {
        let key = wep::key(&endpoint.key.namespace, &endpoint.key.name);
        let mut lost = StoreError::Conflict(key.clone());
        for _ in 0..ATTEMPTS {
            let outcome = match self.read(&key)? {
                None => {
                    let value = WorkloadEndpoint::of(endpoint, None)?;
                    self.kv.create(&key, &encode(&value))
                }
                Some((stored, revision)) => {
                    // An unreadable stored value is replaced: it is ours to write, by name.
                    let value = WorkloadEndpoint::of(endpoint, stored.ok())?;
                    self.kv.update(&key, &encode(&value), &revision)
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
                Err(e) => return Err(failed("error writing", &key)(e)),
            }
        }
        Err(failed("error writing", &key)(lost))
    }
}

fn encode(wep: &WorkloadEndpoint) -> Vec<u8> {
    // Plain data with string keys: encoding cannot fail.
    serde_json::to_vec(wep).unwrap_or_default()
}

impl<K: Kv> EndpointStore for KvEndpoints<K> {
    fn ready(&self) -> Result<bool, StoreError> {
        crate::readiness::is_ready(&KvStore::new(&self.kv))
    }

    fn describe(&self, key: &EndpointKey) -> String {
        format!("WorkloadEndpoint {}/{}", key.namespace, key.name)
    }

    fn held_addresses(&self, key: &EndpointKey) -> Result<Vec<IpAddr>, EndpointError> {
        let path = wep::key(&key.namespace, &key.name);
        match self.read(&path)? {
            None => Ok(Vec::new()),
            Some((Ok(stored), _)) => Ok(stored.spec.ip_networks.iter().map(|n| n.ip()).collect()),
            // An address that cannot be read was never handed out by calico-ipam.
            Some((Err(reason), _)) => {
                log::warn!("{path} cannot be read ({reason}): no previous address released");
                Ok(Vec::new())
            }
        }
    }

    /// The endpoint, then the network's Profile when the plugin owns it: Calico's order, so
    /// a failure to create the Profile fails ADD with the endpoint already written (the
    /// rollback's DEL removes it).
    fn publish(&self, endpoint: &Endpoint) -> Result<(), EndpointError> {
        self.write(endpoint)?;
        if let Some(name) = &endpoint.network_profile {
            profile::ensure(&self.kv, name, endpoint.key.orchestrator())?;
        }
        Ok(())
    }

    /// Deletes the endpoint unless it names another container (§5.3's protection): only
    /// when its `spec.containerID` is ours or empty.
    fn release(&self, key: &EndpointKey) -> Result<Removal, EndpointError> {
        let path = wep::key(&key.namespace, &key.name);
        for _ in 0..ATTEMPTS {
            let Some((stored, revision)) = self.read(&path)? else {
                return Ok(Removal::Absent);
            };
            // Whose it is must be known before it is deleted.
            let stored = stored.map_err(|reason| {
                failed("error reading", &path)(StoreError::Corrupt {
                    key: path.clone(),
                    reason,
                })
            })?;
            let owner = stored.spec.container_id;
            if !owner.is_empty() && owner != key.container_id {
                return Ok(Removal::Kept { owner });
            }
            match self.kv.delete(&path, &revision) {
                Ok(()) => return Ok(Removal::Deleted),
                Err(StoreError::NotFound(_)) => return Ok(Removal::Absent),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(failed("error deleting", &path)(e)),
            }
        }
        Err(EndpointError::Modified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryKv;
    use crate::workload::wep::tests::endpoint;
    use serde_json::Value;

    fn stored(kv: &MemoryKv, key: &str) -> Value {
        serde_json::from_slice(&kv.dump()[key]).expect("stored JSON")
    }

    #[test]
    fn publish_creates_then_updates_keeping_uid_and_creation() {
        let kv = MemoryKv::new();
        let eps = KvEndpoints::new(&kv);
        let mut e = endpoint(Some("web-0"));
        e.network_profile = None;
        let key = wep::key(&e.key.namespace, &e.key.name);
        eps.publish(&e).expect("create");
        let first = stored(&kv, &key);
        assert!(first["metadata"].get("resourceVersion").is_none());

        // A new sandbox of the same pod takes the endpoint over, after one lost race.
        e.key.container_id = "new".into();
        e.ip_networks = vec!["10.0.0.9/32".parse().expect("cidr")];
        kv.inject_conflict(&key);
        eps.publish(&e).expect("update");
        let second = stored(&kv, &key);
        assert_eq!(second["spec"]["containerID"], "new");
        assert_eq!(
            second["spec"]["ipNetworks"],
            serde_json::json!(["10.0.0.9/32"])
        );
        assert_eq!(second["metadata"]["uid"], first["metadata"]["uid"]);
        assert_eq!(
            second["metadata"]["creationTimestamp"],
            first["metadata"]["creationTimestamp"]
        );
        assert_eq!(
            eps.held_addresses(&e.key).expect("held"),
            vec!["10.0.0.9".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn release_removes_only_what_is_ours() {
        let kv = MemoryKv::new();
        let eps = KvEndpoints::new(&kv);
        let mut e = endpoint(Some("web-0"));
        e.network_profile = None;
        let key = wep::key(&e.key.namespace, &e.key.name);
        let mut stale = e.key.clone();
        stale.container_id = "old".into();
        assert_eq!(eps.release(&e.key).expect("absent"), Removal::Absent);
        eps.publish(&e).expect("write");
        assert_eq!(
            eps.release(&stale).expect("kept"),
            Removal::Kept {
                owner: e.key.container_id.clone()
            }
        );
        kv.inject_conflict(&key);
        assert_eq!(eps.release(&e.key).expect("deleted"), Removal::Deleted);
        assert!(kv.dump().is_empty());
        assert_eq!(eps.release(&e.key).expect("again"), Removal::Absent);

        // An endpoint without a container id is anybody's.
        kv.create(&key, br#"{"spec":{}}"#).expect("create");
        assert_eq!(eps.release(&stale).expect("deleted"), Removal::Deleted);
        // One that cannot be read is nobody's to delete, and holds no address.
        kv.create(&key, b"{torn").expect("create");
        assert!(matches!(
            eps.release(&e.key),
            Err(EndpointError::Store {
                source: StoreError::Corrupt { .. },
                ..
            })
        ));
        assert!(eps.held_addresses(&e.key).expect("held").is_empty());
    }
}
