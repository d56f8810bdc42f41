//! Calico's IPAM: pools cut into blocks that nodes claim (affinity), addresses handed out
//! from a node's own blocks first, recorded under a handle per attachment. The engine runs
//! on any [`store::Store`]: an embedded single-node store, a real etcd, or (with the
//! Kubernetes datastore) Calico's CRDs, with the same objects Calico itself reads and writes.

pub mod block_hint;
pub mod cli;
pub mod cni;
pub mod datastore;
pub mod direct;
pub mod engine;
pub mod k8s;
pub mod lock;
pub mod model;
pub mod names;
pub mod netconf;
pub mod nodename;
pub mod readiness;
pub mod refresh;
pub mod store;
pub mod timestamp;
pub mod workload;
