//! Calico's block-affine IPAM (libcalico-go `lib/ipam`), over any [`Store`].
//!
//! Pools are cut into blocks; a node claims blocks (an affinity, pending then confirmed)
//! and hands out addresses from its own blocks first, claiming new ones as they fill up,
//! and borrowing from other nodes' blocks only when `strictAffinity` is off. Every
//! allocation is recorded in its block under an attribute (handle + `pod`/`namespace`/...)
//! and counted in the handle object, so a CNI DEL can release by handle.
//!
//! Every write is a compare-and-swap: when another writer (another node, another plugin
//! process on this node) got there first, the engine re-reads and retries, up to
//! [`MAX_RETRIES`] times, as Calico does.
//!
//! Node objects are optional: when the store has no Node named after this node (the
//! embedded single-node store keeps none), the node is taken to have no labels, so only
//! pools whose `nodeSelector` is empty, `all()`, or satisfied by no labels (`!has(x)`)
//! select it. Calico itself fails in that case. The Node is read only when a selector needs
//! its labels: with `all()` pools (the usual case) an ADD does without that round trip.
//!
//! Each operation reads pools, the IPAM config and node labels at most once, and writes a
//! handle or an affinity it has just read against that read's revision (see `memo`): on
//! etcd every read is a network round trip on a pod's start path.

mod assign;
mod block_ops;
mod candidates;
mod claim;
mod config;
mod error;
mod handles;
mod memo;
mod pools;
mod release;
mod reserved;
pub mod selector;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;

pub use candidates::{fnv1_32, BlockCandidates};
pub use error::IpamError;
pub use release::SeenAllocation;
pub use reserved::Reservations;
pub use selector::Selector;

use crate::store::Store;

/// Compare-and-swap retries per loop, as libcalico-go.
pub const MAX_RETRIES: usize = 100;

/// Blocks a node may own per IP family when the IPAM config does not say.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

/// The intended use CNI allocations declare.
pub const USE_WORKLOAD: &str = "Workload";

/// Who holds an address: its handle (if any) and the attributes stored with it.
pub type Holder = (Option<String>, BTreeMap<String, String>);

/// The IPAM engine of one node.
pub struct Ipam<'a> {
    store: &'a dyn Store,
    node: String,
}

/// An automatic assignment request (libcalico-go's `AutoAssignArgs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoAssign {
    pub num4: usize,
    pub num6: usize,
    /// Empty: the addresses are recorded without a handle.
    pub handle_id: String,
    /// `node`, `pod`, `namespace`, `timestamp`: stored with the allocation.
    pub attrs: BTreeMap<String, String>,
    /// Pools to use (CIDRs), instead of those selecting this node.
    pub pools4: Vec<IpNetwork>,
    pub pools6: Vec<IpNetwork>,
    /// 0: the IPAM config's limit (20 when that is 0 too).
    pub max_blocks_per_host: u32,
    /// `Workload`, `Tunnel`, `LoadBalancer`.
    pub usage: String,
    /// Blocks to try before the node's others: those its last request assigned from, so
    /// a request reads the one block it will use, not every full block listed before it.
    /// Only blocks affine to the node are tried; the others here are passed over.
    pub prefer: Vec<IpNetwork>,
}

impl Default for AutoAssign {
    fn default() -> Self {
        AutoAssign {
            num4: 0,
            num6: 0,
            handle_id: String::new(),
            attrs: BTreeMap::new(),
            pools4: Vec::new(),
            pools6: Vec::new(),
            max_blocks_per_host: 0,
            usage: USE_WORKLOAD.to_string(),
            prefer: Vec::new(),
        }
    }
}

/// What an automatic assignment got. Fewer addresses than requested is not an error here;
/// `messages` say why (the CNI plugin turns it into one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    /// Each address with its block's prefix length, e.g. `10.244.1.5/26`.
    pub ipv4: Vec<IpNetwork>,
    pub ipv6: Vec<IpNetwork>,
    pub messages: Vec<String>,
}

impl<'a> Ipam<'a> {
    pub fn new(store: &'a dyn Store, node: &str) -> Ipam<'a> {
        Ipam {
            store,
            node: node.to_string(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Who holds `ip`: its handle and attributes, or `None` when no block allocates it.
    pub fn attributes_of(&self, ip: IpAddr) -> Result<Option<Holder>, IpamError> {
        let Some(block) = self.block_holding(ip)? else {
            return Ok(None);
        };
        let block = block.value;
        let attr = block
            .ordinal_of(ip)
            .and_then(|o| block.allocations.get(o).copied().flatten())
            .and_then(|a| block.attributes.get(a));
        Ok(attr.map(|a| (a.handle_id.clone(), a.secondary.clone())))
    }

    /// `host:<node>`, the block affinity this node writes.
    fn host_affinity(&self) -> String {
        format!("host:{}", self.node)
    }
}

/// A new block's first sequence number: the time in nanoseconds, as Calico's.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// An address with its block's prefix length.
fn with_prefix(ip: IpAddr, block: &IpNetwork) -> IpNetwork {
    IpNetwork::new(ip, block.prefix()).unwrap_or_else(|_| IpNetwork::from(ip))
}
