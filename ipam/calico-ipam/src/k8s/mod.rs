//! The Kubernetes API as the Calico plugins use it: which server and credentials a network
//! configuration names ([`settings`]), a blocking client that counts its round trips
//! ([`client`]), and what can go wrong, said without credentials ([`error`]).
//!
//! Both binaries use it: calico-ipam for Calico's CRDs (`store::kube`), the calico plugin
//! for ClusterInformation, Pods, Namespaces and Nodes.

pub mod client;
pub mod error;
pub mod settings;

pub use client::{KubeClient, Preconditions};
pub use error::KubeError;
pub use settings::KubeSettings;
