//! The crate every binary of the suite links: the CNI protocol (`spec`), the common plugin
//! entry point (`skel`), IPAM delegation, and the Linux side (network namespaces, netlink,
//! sysctls). It knows nothing of Calico's datastore, Kubernetes or etcd, so that host-local,
//! portmap, bandwidth and loopback stay small.

pub mod child;
pub mod civil_date;
pub mod deadline;
pub mod delegate;
pub mod error;
pub mod file;
pub mod gojson;
pub mod log;
pub mod log_rotate;
pub mod netlink;
pub mod netns;
pub mod panic;
pub mod redact;
pub mod released;
pub mod skel;
pub mod spec;
pub mod sysctl;

pub use error::{Error, Result};
