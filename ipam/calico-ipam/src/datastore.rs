//! Opening the datastore a network configuration names.

use ipnetwork::IpNetwork;

use crate::k8s::KubeSettings;
use crate::model::IpPool;
use crate::netconf::{Datastore, DatastoreConf, IpamNetConf, DEFAULT_LOCAL_DATA_DIR};
use crate::store::etcd::{EtcdConfig, EtcdKv, EtcdSettings};
use crate::store::kube::KubeStore;
use crate::store::kv::Kv;
use crate::store::local::LocalKv;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Config(String),
}

/// The store for `conf`: `etcdv3` (Calico's default), `local`, or — with the Kubernetes
/// datastore — Calico's CRDs.
pub fn open(conf: &IpamNetConf) -> Result<Box<dyn Store>, DatastoreError> {
    match conf.datastore().map_err(DatastoreError::Config)? {
        Datastore::Local => Ok(Box::new(crate::store::local::local_store(
            &conf.local_data_dir(),
        )?)),
        Datastore::Etcd => {
            let settings = EtcdSettings::from(&conf.datastore);
            let config = EtcdConfig::from_conf_and_env(&settings)
                .map_err(|e| DatastoreError::Config(e.to_string()))?;
            Ok(Box::new(
                EtcdKv::store(&config).map_err(|e| DatastoreError::Config(e.to_string()))?,
            ))
        }
        Datastore::Kubernetes => {
            let settings = KubeSettings::from_conf(&conf.kubernetes, &conf.policy);
            Ok(Box::new(
                KubeStore::connect(&settings).map_err(|e| DatastoreError::Config(e.to_string()))?,
            ))
        }
    }
}

/// The raw keys and values of an `etcdv3` or `local` datastore, opened from the same keys (and,
/// for etcd, the same `ETCD_*` environment) as [`open`]: for the objects outside IPAM that the
/// calico plugin reads and writes (ClusterInformation, WorkloadEndpoints) in Calico's layout.
/// The Kubernetes datastore is no key-value store: refused.
pub fn open_kv(conf: &DatastoreConf) -> Result<Box<dyn Kv>, DatastoreError> {
    match conf.kind().map_err(DatastoreError::Config)? {
        Datastore::Local => {
            let dir = conf
                .local_data_dir
                .as_deref()
                .filter(|d| !d.is_empty())
                .unwrap_or(DEFAULT_LOCAL_DATA_DIR);
            Ok(Box::new(LocalKv::open(std::path::Path::new(dir))?))
        }
        Datastore::Etcd => {
            let settings = EtcdSettings::from(conf);
            let config = EtcdConfig::from_conf_and_env(&settings)
                .map_err(|e| DatastoreError::Config(e.to_string()))?;
            Ok(Box::new(
                EtcdKv::new(&config).map_err(|e| DatastoreError::Config(e.to_string()))?,
            ))
        }
        Datastore::Kubernetes => Err(DatastoreError::Unsupported(
            "the Kubernetes datastore keeps Calico's objects as CRDs, not as keys".into(),
        )),
    }
}

/// The `local` datastore has no operator to create pools: the CIDRs the configuration names
/// become pools (with Calico's default block sizes) the first time they are used.
pub fn ensure_pools(
    conf: &IpamNetConf,
    store: &dyn Store,
    pools4: &[IpNetwork],
    pools6: &[IpNetwork],
) -> Result<(), DatastoreError> {
    if conf.datastore() != Ok(Datastore::Local) {
        return Ok(());
    }
    let existing = store.list_pools()?;
    for cidr in pools4.iter().chain(pools6) {
        if existing.iter().any(|p| p.cidr == *cidr) {
            continue;
        }
        if cidr.network() != cidr.ip() {
            return Err(DatastoreError::Config(format!(
                "pool {cidr} has host bits set: use {}/{}",
                cidr.network(),
                cidr.prefix()
            )));
        }
        let mut pool = IpPool::new(*cidr);
        // A pool smaller than a default block is one block of its own size.
        pool.block_size = pool.block_size.max(cidr.prefix());
        match store.create_pool(&pool) {
            Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl From<&DatastoreConf> for EtcdSettings {
    fn from(conf: &DatastoreConf) -> EtcdSettings {
        EtcdSettings {
            endpoints: conf.etcd_endpoints.clone(),
            key_file: conf.etcd_key_file.clone(),
            cert_file: conf.etcd_cert_file.clone(),
            ca_cert_file: conf.etcd_ca_cert_file.clone(),
            scheme: conf.etcd_scheme.clone(),
            authority: conf.etcd_authority.clone(),
            discovery_srv: conf.etcd_discovery_srv.clone(),
        }
    }
}
