//! A workload's endpoint as the plugin describes it, whatever datastore keeps it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// Which endpoint: where it is stored and which sandbox wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointKey {
    /// The pod's namespace; `default` outside Kubernetes.
    pub namespace: String,
    /// The WorkloadEndpoint name (`<node>-k8s-<pod>-<ifname>`, `<node>-cni-<id>-<ifname>`).
    pub name: String,
    /// Kubernetes pods only.
    pub pod: Option<String>,
    /// `CNI_CONTAINERID`: a DEL of another sandbox leaves the endpoint to its owner.
    pub container_id: String,
}

impl EndpointKey {
    /// `k8s` for a pod, `cni` for a plain container.
    pub fn orchestrator(&self) -> &'static str {
        if self.pod.is_some() {
            "k8s"
        } else {
            "cni"
        }
    }
}

/// What ADD publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub key: EndpointKey,
    pub node: String,
    /// The container's interface (`CNI_IFNAME`).
    pub interface: String,
    /// `kns.<ns>` (and `ksa.<ns>.<sa>`) with `policy.type: k8s`, else the network's name.
    pub profiles: Vec<String>,
    /// Without `policy.type: k8s` the network's Profile is the workload's policy, and the
    /// plugin creates it when it is missing (spec §3.1 "Profiles"); `None` otherwise.
    pub network_profile: Option<String>,
    /// The pod's own labels (Calico adds its namespace, orchestrator and service account).
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub generate_name: Option<String>,
    /// The host side of the veth.
    pub host_interface: String,
    /// The container interface's MAC.
    pub mac: String,
    /// Each address as a single host (/32, /128).
    pub ip_networks: Vec<IpNetwork>,
    /// Floating IPs, each NATed to the pod's address of its family.
    pub ip_nats: Vec<IpNat>,
    /// Named and host ports, for named-port policy.
    pub ports: Vec<EndpointPort>,
    /// CIDRs the pod may send from besides its own addresses.
    pub allowed_source_prefixes: Vec<String>,
}

/// One `ipNATs` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpNat {
    #[serde(rename = "internalIP")]
    pub internal: IpAddr,
    #[serde(rename = "externalIP")]
    pub external: IpAddr,
}

/// Calico's `EndpointPort`: empty name, host port and host IP are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Lower case: `tcp`, `udp`, `sctp`.
    pub protocol: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_port: u16,
    #[serde(default, rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

/// What DEL did with the stored endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    /// Nothing was stored: already deleted, never written, or (on Kubernetes) the pod is
    /// gone or not networked by Calico.
    Absent,
    /// Another sandbox of the same workload owns the endpoint now (a restarted pod): a
    /// stale DEL must not take it away from the running one.
    Kept {
        owner: String,
    },
}
