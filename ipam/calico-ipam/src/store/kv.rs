//! A datastore that is a key-value store with compare-and-swap (etcd, or files on one node)
//! becomes a [`Store`] through Calico's etcd layout ([`codec`]).

use ipnetwork::IpNetwork;

use super::{codec, in_use};
use super::{Result, Revision, Store, Versioned};
use crate::model::{
    BlockAffinity, ClusterInformation, IpPool, IpReservation, IpamBlock, IpamConfig, IpamHandle,
    Node, NodeTunnelAddresses, WorkloadAddresses,
};

/// Raw keys and values with revisions. `create` fails with [`StoreError::AlreadyExists`],
/// `update` and `delete` with [`StoreError::Conflict`] when the revision is stale and
/// [`StoreError::NotFound`] when the key is gone.
pub trait Kv {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Revision)>>;
    /// Every key under `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>, Revision)>>;
    fn create(&self, key: &str, value: &[u8]) -> Result<Revision>;
    fn update(&self, key: &str, value: &[u8], revision: &Revision) -> Result<Revision>;
    fn delete(&self, key: &str, revision: &Revision) -> Result<()>;
    /// A real round trip.
    fn ping(&self) -> Result<()>;
    /// See [`Store::has_calico_node`].
    fn has_calico_node(&self) -> bool {
        true
    }
}

/// Forwards every call to the store a pointer holds.
macro_rules! forward_kv {
    ($pointer:ty) => {
        impl<K: Kv + ?Sized> Kv for $pointer {
            fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Revision)>> {
                (**self).get(key)
            }
            fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>, Revision)>> {
                (**self).list(prefix)
            }
            fn create(&self, key: &str, value: &[u8]) -> Result<Revision> {
                (**self).create(key, value)
            }
            fn update(&self, key: &str, value: &[u8], revision: &Revision) -> Result<Revision> {
                (**self).update(key, value, revision)
            }
            fn delete(&self, key: &str, revision: &Revision) -> Result<()> {
                (**self).delete(key, revision)
            }
            fn ping(&self) -> Result<()> {
                (**self).ping()
            }
            fn has_calico_node(&self) -> bool {
                (**self).has_calico_node()
            }
        }
    };
}

// A borrowed key-value store is one too (a [`KvStore`] over a `&dyn Kv` the caller keeps),
// and so is a boxed one (the datastore a configuration names, opened at run time).
forward_kv!(&K);
forward_kv!(Box<K>);

pub struct KvStore<K> {
    pub kv: K,
}

impl<K: Kv> KvStore<K> {
    pub fn new(kv: K) -> KvStore<K> {
        KvStore { kv }
    }

    fn get_decoded<T>(
        &self,
        key: &str,
        decode: impl Fn(&str, &[u8]) -> Result<T>,
    ) -> Result<Option<Versioned<T>>> {
        self.kv
            .get(key)?
            .map(|(bytes, revision)| {
                Ok(Versioned {
                    value: decode(key, &bytes)?,
                    revision,
                })
            })
            .transpose()
    }

    fn list_decoded<T>(
        &self,
        prefix: &str,
        decode: impl Fn(&str, &[u8]) -> Result<T>,
    ) -> Result<Vec<Versioned<T>>> {
        self.kv
            .list(prefix)?
            .into_iter()
            .map(|(key, bytes, revision)| {
                Ok(Versioned {
                    value: decode(&key, &bytes)?,
                    revision,
                })
            })
            .collect()
    }
}

impl<K: Kv> Store for KvStore<K> {
    fn ping(&self) -> Result<()> {
        self.kv.ping()
    }

    fn list_pools(&self) -> Result<Vec<IpPool>> {
        Ok(self
            .list_decoded(&codec::pools_prefix(), codec::decode_pool)?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    fn create_pool(&self, pool: &IpPool) -> Result<()> {
        self.kv
            .create(&codec::pool_key(&pool.name), &codec::encode_pool(pool))
            .map(|_| ())
    }

    fn has_calico_node(&self) -> bool {
        self.kv.has_calico_node()
    }

    fn list_reservations(&self) -> Result<Vec<IpReservation>> {
        Ok(self
            .list_decoded(&codec::reservations_prefix(), codec::decode_reservation)?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    fn get_node(&self, name: &str) -> Result<Option<Node>> {
        Ok(self
            .get_decoded(&codec::node_key(name), codec::decode_node)?
            .map(|v| v.value))
    }

    fn get_cluster_information(&self) -> Result<Option<Versioned<ClusterInformation>>> {
        self.get_decoded(
            &codec::cluster_information_key(),
            codec::decode_cluster_information,
        )
    }

    fn list_workload_addresses(&self) -> Result<Vec<WorkloadAddresses>> {
        Ok(self
            .list_decoded(
                &codec::workload_endpoints_prefix(),
                in_use::from_workload_endpoint,
            )?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    fn list_node_tunnel_addresses(&self) -> Result<Vec<NodeTunnelAddresses>> {
        Ok(self
            .list_decoded(&codec::nodes_prefix(), in_use::from_v3_node)?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    fn get_ipam_config(&self) -> Result<Option<Versioned<IpamConfig>>> {
        self.get_decoded(&codec::ipam_config_key(), codec::decode_ipam_config)
    }

    fn create_ipam_config(&self, config: &IpamConfig) -> Result<Revision> {
        self.kv.create(
            &codec::ipam_config_key(),
            &codec::encode_ipam_config(config),
        )
    }

    fn update_ipam_config(&self, config: &IpamConfig, revision: &Revision) -> Result<Revision> {
        self.kv.update(
            &codec::ipam_config_key(),
            &codec::encode_ipam_config(config),
            revision,
        )
    }

    fn get_block(&self, cidr: &IpNetwork) -> Result<Option<Versioned<IpamBlock>>> {
        self.get_decoded(&codec::block_key(cidr), codec::decode_block)
    }

    fn list_blocks(&self, v4: bool) -> Result<Vec<Versioned<IpamBlock>>> {
        self.list_decoded(&codec::blocks_prefix(v4), codec::decode_block)
    }

    fn create_block(&self, block: &IpamBlock) -> Result<Revision> {
        self.kv
            .create(&codec::block_key(&block.cidr), &codec::encode_block(block))
    }

    fn update_block(&self, block: &IpamBlock, revision: &Revision) -> Result<Revision> {
        self.kv.update(
            &codec::block_key(&block.cidr),
            &codec::encode_block(block),
            revision,
        )
    }

    fn delete_block(&self, cidr: &IpNetwork, revision: &Revision) -> Result<()> {
        self.kv.delete(&codec::block_key(cidr), revision)
    }

    fn get_affinity(
        &self,
        affinity_type: &str,
        node: &str,
        cidr: &IpNetwork,
    ) -> Result<Option<Versioned<BlockAffinity>>> {
        self.get_decoded(
            &codec::affinity_key(affinity_type, node, cidr),
            codec::decode_affinity,
        )
    }

    fn list_affinities(
        &self,
        affinity_type: &str,
        node: &str,
        v4: bool,
    ) -> Result<Vec<Versioned<BlockAffinity>>> {
        Ok(self
            .list_decoded(
                &codec::affinities_prefix(affinity_type, node, v4),
                codec::decode_affinity,
            )?
            .into_iter()
            .filter(|a| !a.value.deleted)
            .collect())
    }

    fn create_affinity(&self, a: &BlockAffinity) -> Result<Revision> {
        self.kv.create(
            &codec::affinity_key(&a.affinity_type, &a.node, &a.cidr),
            &codec::encode_affinity(a),
        )
    }

    fn update_affinity(&self, a: &BlockAffinity, revision: &Revision) -> Result<Revision> {
        self.kv.update(
            &codec::affinity_key(&a.affinity_type, &a.node, &a.cidr),
            &codec::encode_affinity(a),
            revision,
        )
    }

    fn delete_affinity(&self, a: &BlockAffinity, revision: &Revision) -> Result<()> {
        self.kv.delete(
            &codec::affinity_key(&a.affinity_type, &a.node, &a.cidr),
            revision,
        )
    }

    fn get_handle(&self, handle_id: &str) -> Result<Option<Versioned<IpamHandle>>> {
        self.get_decoded(&codec::handle_key(handle_id), codec::decode_handle)
    }

    fn list_handles(&self) -> Result<Vec<Versioned<IpamHandle>>> {
        self.list_decoded(&codec::handles_prefix(), codec::decode_handle)
    }

    fn create_handle(&self, handle: &IpamHandle) -> Result<Revision> {
        self.kv.create(
            &codec::handle_key(&handle.handle_id),
            &codec::encode_handle(handle),
        )
    }

    fn update_handle(&self, handle: &IpamHandle, revision: &Revision) -> Result<Revision> {
        self.kv.update(
            &codec::handle_key(&handle.handle_id),
            &codec::encode_handle(handle),
            revision,
        )
    }

    fn delete_handle(&self, handle_id: &str, revision: &Revision) -> Result<()> {
        self.kv.delete(&codec::handle_key(handle_id), revision)
    }
}
