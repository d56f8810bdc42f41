//! End-to-end harness for the CNI plugin suite.
//!
//! - [`conflist`]: network configuration lists, loaded as libcni loads them;
//! - [`runner`]: ADD/DEL/CHECK/GC/STATUS over a conflist with libcni's semantics, plugins
//!   optionally run inside a per-test "node" network namespace;
//! - [`cache`]: libcni's on-disk result cache, byte-compatible;
//! - [`exec`]: running one plugin binary and decoding its answer;
//! - [`fixtures`]: network namespaces, temp dirs, free ports, binary locations;
//! - [`cnitool`]: the pieces of the `cnitool` command (argument handling, container ids);
//! - [`relay`]: a TCP relay from a test's node namespace to a service on the machine's
//!   loopback (the test's etcd);
//! - [`runtime`]: podman and containerd, private to a test, driving the plugins;
//! - [`soak`]: kill -9 injection into a running chain, and a node's leftovers, for the soak.

pub mod bandwidth;
pub mod cache;
pub mod cnitool;
pub mod config;
pub mod conflist;
pub mod dns;
pub mod etcd;
pub mod exec;
pub mod fixtures;
pub mod host_local;
pub mod ipam;
pub mod kube_api;
pub mod kube_cluster;
pub mod pod;
pub mod portmap;
pub mod relay;
pub mod runner;
pub mod runtime;
pub mod soak;
pub mod version;

pub use cache::{CachedAttachment, CachedInfo, ResultCache};
pub use config::GcAttachment;
pub use conflist::{ConfError, ConfList, PluginConf};
pub use exec::ExecError;
pub use fixtures::{TestDir, TestNetns};
pub use runner::{Op, RunError, Runner, RuntimeConf};
