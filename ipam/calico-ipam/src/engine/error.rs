//! What can go wrong in the IPAM engine. Messages follow libcalico-go's wording where users
//! (and scripts grepping kubelet events) know them.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),

    /// No enabled pool of the family (with a usable block size) exists at all.
    #[error("cannot find a qualified ippool")]
    NoQualifiedPool,

    /// Pools exist, but none selects this node.
    #[error("no configured Calico pools for node {0}")]
    NoPoolForNode(String),

    /// Pools select this node, but none allows the intended use.
    #[error("cannot find a qualified ippool, no pools match the required use ({0})")]
    NoPoolForUse(String),

    #[error("the given pool ({0}) does not exist, or is not enabled")]
    PoolNotEnabled(IpNetwork),

    /// An IPv6 CIDR in the IPv4 pool list, or the reverse.
    #[error("provided IPv{wanted} IPPools list contains one or more IPv{other} IPPools")]
    WrongFamilyPool { wanted: u8, other: u8 },

    #[error("invalid nodeSelector {selector:?} of pool {pool}: {reason}")]
    InvalidSelector {
        pool: String,
        selector: String,
        reason: String,
    },

    #[error("cannot allocate new block due to per host block limit")]
    BlockLimit,

    /// `autoAllocateBlocks` is false and the node's own blocks are full.
    #[error("failed to find or claim a block")]
    NoBlockClaim,

    #[error("Max retries hit - excessive concurrent IPAM requests")]
    MaxRetries,

    #[error("resource already exists: {0}: Address already assigned in block")]
    AlreadyAssigned(IpAddr),

    #[error("The provided IP address is not in a configured pool")]
    NotInPool(IpAddr),

    #[error("the pool {pool} holding {ip} does not allow use {usage}")]
    UseNotAllowed {
        ip: IpAddr,
        pool: String,
        usage: String,
    },

    /// With strict affinity, an address may only come from a block affine to this node.
    #[error("Block affinity ({found}) does not match provided (host:{node})")]
    AffinityMismatch { found: String, node: String },

    #[error("resource does not exist: IPAMHandle({0})")]
    HandleNotFound(String),

    /// No Node object of this name: calico/node has not registered this node (or the name
    /// is not the one it registered).
    #[error("resource does not exist: Node({0})")]
    NodeNotFound(String),
}
