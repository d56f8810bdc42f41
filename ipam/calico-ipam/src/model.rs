//! Calico's IPAM objects, as the engine sees them. Each backend turns them into its own wire
//! form (etcd keys and JSON, or Kubernetes CRDs) and back; fields a newer Calico writes that
//! we do not model are kept in `extra` and written back untouched.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

/// An IP pool. Only read by CNI (except the `local` backend, which creates the pools its
/// config names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    pub name: String,
    pub cidr: IpNetwork,
    /// Prefix length of the pool's blocks: 26 (IPv4) or 122 (IPv6) unless set.
    pub block_size: u8,
    pub disabled: bool,
    /// A Calico selector over node labels; empty means `all()`.
    pub node_selector: String,
    /// `Workload`, `Tunnel`, `LoadBalancer`; empty means Workload and Tunnel.
    pub allowed_uses: Vec<String>,
    /// `Automatic` (the default) or `Manual`.
    pub assignment_mode: String,
    pub extra: Map<String, Value>,
}

impl IpPool {
    pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
    pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

    /// A pool with Calico's defaults, named after its CIDR.
    pub fn new(cidr: IpNetwork) -> IpPool {
        IpPool {
            name: crate::names::cidr_to_name(&cidr),
            cidr,
            block_size: if cidr.is_ipv4() {
                Self::DEFAULT_BLOCK_SIZE_V4
            } else {
                Self::DEFAULT_BLOCK_SIZE_V6
            },
            disabled: false,
            node_selector: String::new(),
            allowed_uses: Vec::new(),
            assignment_mode: String::new(),
            extra: Map::new(),
        }
    }

    pub fn allows(&self, usage: &str) -> bool {
        if self.allowed_uses.is_empty() {
            usage == "Workload" || usage == "Tunnel"
        } else {
            self.allowed_uses.iter().any(|u| u == usage)
        }
    }

    pub fn is_automatic(&self) -> bool {
        self.assignment_mode.is_empty() || self.assignment_mode == "Automatic"
    }
}

/// One entry of a block's `attributes`: who holds the addresses that point at it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocationAttribute {
    pub handle_id: Option<String>,
    /// `node`, `pod`, `namespace`, `timestamp` for CNI allocations.
    pub secondary: BTreeMap<String, String>,
    /// Fields of newer writers (`alternateOwnerAttrs`, `releasedAt`, ...).
    pub extra: Map<String, Value>,
}

/// An IPAM block: a power-of-two slice of a pool, usually affine to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamBlock {
    pub cidr: IpNetwork,
    /// `host:<node>`, `virtual:<name>`, or none.
    pub affinity: Option<String>,
    /// Per ordinal: index into `attributes`, or free.
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals, first out first: allocation takes from the head, release appends.
    pub unallocated: Vec<usize>,
    pub attributes: Vec<AllocationAttribute>,
    pub sequence_number: u64,
    /// Ordinal (as text) → the block's sequence number when it was allocated.
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    pub deleted: bool,
    pub extra: Map<String, Value>,
}

/// The states a node's claim on a block goes through; they only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AffinityState {
    Pending,
    Confirmed,
    PendingDeletion,
}

impl AffinityState {
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityState::Pending => "pending",
            AffinityState::Confirmed => "confirmed",
            AffinityState::PendingDeletion => "pendingDeletion",
        }
    }

    /// Old data has no state: it is confirmed.
    pub fn parse(s: &str) -> Option<AffinityState> {
        match s {
            "" | "confirmed" => Some(AffinityState::Confirmed),
            "pending" => Some(AffinityState::Pending),
            "pendingDeletion" => Some(AffinityState::PendingDeletion),
            _ => None,
        }
    }
}

/// A node's (or a virtual owner's) claim on a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockAffinity {
    /// `host` or `virtual`.
    pub affinity_type: String,
    pub node: String,
    pub cidr: IpNetwork,
    pub state: AffinityState,
    pub deleted: bool,
    pub extra: Map<String, Value>,
}

impl BlockAffinity {
    pub fn host(node: &str, cidr: IpNetwork, state: AffinityState) -> BlockAffinity {
        BlockAffinity {
            affinity_type: "host".into(),
            node: node.into(),
            cidr,
            state,
            deleted: false,
            extra: Map::new(),
        }
    }

    /// The value a block's `affinity` field holds for this claim.
    pub fn block_affinity(&self) -> String {
        format!("{}:{}", self.affinity_type, self.node)
    }
}

/// Which blocks hold a handle's addresses, and how many in each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamHandle {
    pub handle_id: String,
    /// Block CIDR (as text) → number of addresses.
    pub block: BTreeMap<String, u64>,
    pub deleted: bool,
    pub extra: Map<String, Value>,
}

/// The cluster-wide IPAM settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    pub strict_affinity: bool,
    pub auto_allocate_blocks: bool,
    /// 0 means the default, 20.
    pub max_blocks_per_host: u32,
    pub extra: Map<String, Value>,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            extra: Map::new(),
        }
    }
}

/// What CNI reads of the cluster: whether the datastore is ready. The rest of the spec
/// (the cluster's GUID and type, which an IPAM report records) stays in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterInformation {
    pub datastore_ready: Option<bool>,
    pub extra: Map<String, Value>,
}

impl ClusterInformation {
    /// `spec.clusterGUID`: which cluster this is, whatever its datastore's revisions.
    pub fn cluster_guid(&self) -> &str {
        self.extra
            .get("clusterGUID")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `spec.clusterType` (`k8s,bgp,kubeadm,kdd`...).
    pub fn cluster_type(&self) -> &str {
        self.extra
            .get("clusterType")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Locked for maintenance: `datastoreReady` is explicitly false (absent is ready).
    pub fn locked(&self) -> bool {
        self.datastore_ready == Some(false)
    }
}

/// An IPReservation: addresses automatic assignment never hands out (an operator's, for
/// gateways or addresses used outside Calico). Only read by CNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpReservation {
    pub name: String,
    /// `spec.reservedCIDRs`, each reduced to its network as libcalico-go parses them (a bare
    /// address is a /32 or /128). Entries that are not a CIDR or an address are left out.
    pub reserved_cidrs: Vec<IpNetwork>,
    /// The rest of the spec.
    pub extra: Map<String, Value>,
}

/// A workload the datastore says exists, with the addresses it uses: a WorkloadEndpoint's
/// `ipNetworks` on etcd and local, a pod's on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadAddresses {
    pub namespace: String,
    /// The WorkloadEndpoint's name (on Kubernetes, the one Calico derives from the pod).
    pub name: String,
    /// The pod's name: the Pod's own on Kubernetes, an endpoint's `spec.pod` (empty outside
    /// Kubernetes).
    pub pod: String,
    pub ips: Vec<IpAddr>,
}

/// The addresses a node's tunnels hold (IPIP, VXLAN, WireGuard), which come from the pools
/// too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTunnelAddresses {
    pub node: String,
    pub ips: Vec<IpAddr>,
}

/// A Calico node: its labels drive pool node selectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl IpamBlock {
    /// A fresh block: every ordinal free, in order; the sequence number starts at the
    /// current time in nanoseconds, as Calico's does.
    pub fn new(cidr: IpNetwork, affinity: Option<String>, now_ns: u64) -> IpamBlock {
        let size = block_len(&cidr);
        IpamBlock {
            cidr,
            affinity,
            allocations: vec![None; size],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            sequence_number: now_ns,
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
            extra: Map::new(),
        }
    }

    /// The address at `ordinal`.
    pub fn ip_at(&self, ordinal: usize) -> IpAddr {
        offset(self.cidr.network(), ordinal as u128)
    }

    /// The ordinal of `ip`, if the block holds it.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<usize> {
        if !self.cidr.contains(ip) {
            return None;
        }
        Some((to_u128(ip) - to_u128(self.cidr.network())) as usize)
    }

    /// The block's sequence number when `ordinal` was allocated (0 when not recorded, as
    /// Calico reads it): a report's allocation is still the same one only while it matches.
    pub fn sequence_number_of(&self, ordinal: usize) -> u64 {
        self.sequence_number_for_allocation
            .get(&ordinal.to_string())
            .copied()
            .unwrap_or(0)
    }

    pub fn free_count(&self) -> usize {
        self.unallocated.len()
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.iter().all(Option::is_none)
    }
}

/// Number of addresses in a block (blocks are at most 2^16 addresses in practice; the
/// engine refuses pools whose blocks would be larger).
pub fn block_len(cidr: &IpNetwork) -> usize {
    let bits = if cidr.is_ipv4() { 32 } else { 128 };
    1usize << (bits - cidr.prefix() as u32).min(20)
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn offset(base: IpAddr, by: u128) -> IpAddr {
    match base {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4).wrapping_add(by as u32)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).wrapping_add(by)).into()),
    }
}
