//! Which pools a request may use (the pool half of libcalico-go's
//! `prepareAffinityBlocksForHost`), and which pool or block holds an address.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::candidates::{block_count, block_of};
use super::memo::Memo;
use super::selector::Selector;
use super::{Ipam, IpamError};
use crate::model::{IpPool, IpamBlock};
use crate::store::Versioned;

/// Largest block the engine handles: 2^20 addresses (the model caps blocks there; Calico
/// validates v4 blocks to /20../32 and v6 to /116../128, far smaller).
const MAX_BLOCK_HOST_BITS: u8 = 20;

/// A pool the engine can cut into blocks: enabled, block size within the pool and at most
/// 2^20 addresses.
fn usable(pool: &IpPool) -> bool {
    let bits: u8 = if pool.cidr.is_ipv4() { 32 } else { 128 };
    !pool.disabled && block_count(pool).is_some() && bits - pool.block_size <= MAX_BLOCK_HOST_BITS
}

/// `pool` normalised to its network address, as a pool's CIDR is stored.
fn masked(pool: &IpNetwork) -> IpNetwork {
    IpNetwork::new(pool.network(), pool.prefix()).unwrap_or(*pool)
}

/// The pools of one family a request may draw from, in the order to try them, and every
/// enabled pool of that family (to judge affinities outside the chosen pools).
pub(super) struct QualifiedPools {
    pub chosen: Vec<IpPool>,
    pub enabled: Vec<IpPool>,
}

impl Ipam<'_> {
    /// Whether `pool`'s `nodeSelector` selects `node`. The node's labels are read only for
    /// a selector that needs them: most pools select every node (empty or `all()`), and
    /// the Node object is a round trip the common ADD can do without.
    pub(super) fn selects(
        &self,
        memo: &Memo,
        pool: &IpPool,
        node: &str,
    ) -> Result<bool, IpamError> {
        let selector =
            Selector::parse(&pool.node_selector).map_err(|reason| IpamError::InvalidSelector {
                pool: pool.name.clone(),
                selector: pool.node_selector.clone(),
                reason,
            })?;
        if selector == Selector::All {
            return Ok(true);
        }
        Ok(selector.matches(&self.memo_labels(memo, node)?))
    }

    /// Enabled, usable pools of one family, in name order.
    pub(super) fn enabled_pools(&self, memo: &Memo, v4: bool) -> Result<Vec<IpPool>, IpamError> {
        Ok(self
            .memo_pools(memo)?
            .iter()
            .filter(|p| p.cidr.is_ipv4() == v4 && usable(p))
            .cloned()
            .collect())
    }

    /// Requested pools are used as given (whatever their node selector or assignment
    /// mode); otherwise the automatic pools selecting this node. Either way only pools
    /// allowing `usage`.
    pub(super) fn qualified_pools(
        &self,
        memo: &Memo,
        v4: bool,
        requested: &[IpNetwork],
        usage: &str,
    ) -> Result<QualifiedPools, IpamError> {
        let enabled = self.enabled_pools(memo, v4)?;
        if enabled.is_empty() {
            return Err(IpamError::NoQualifiedPool);
        }
        let chosen: Vec<IpPool> = if requested.is_empty() {
            let mut chosen = Vec::new();
            for pool in &enabled {
                if pool.is_automatic() && self.selects(memo, pool, &self.node)? {
                    chosen.push(pool.clone());
                }
            }
            if chosen.is_empty() {
                return Err(IpamError::NoPoolForNode(self.node.clone()));
            }
            chosen
        } else {
            let mut chosen = Vec::new();
            for want in requested {
                let want = masked(want);
                let pool = enabled
                    .iter()
                    .find(|p| p.cidr == want)
                    .ok_or(IpamError::PoolNotEnabled(want))?;
                if !chosen.contains(pool) {
                    chosen.push(pool.clone());
                }
            }
            chosen
        };
        let chosen: Vec<IpPool> = chosen.into_iter().filter(|p| p.allows(usage)).collect();
        if chosen.is_empty() {
            return Err(IpamError::NoPoolForUse(usage.to_string()));
        }
        Ok(QualifiedPools { chosen, enabled })
    }

    /// The enabled pool holding `ip`.
    pub(super) fn pool_containing(
        &self,
        memo: &Memo,
        ip: IpAddr,
    ) -> Result<Option<IpPool>, IpamError> {
        Ok(self
            .enabled_pools(memo, ip.is_ipv4())?
            .into_iter()
            .find(|p| p.cidr.contains(ip)))
    }

    /// The block CIDR that holds (or would hold) `ip`: from its pool's block size, or, when
    /// no enabled pool holds it any more, the existing block containing it.
    pub(super) fn block_cidr_for(
        &self,
        memo: &Memo,
        ip: IpAddr,
    ) -> Result<Option<IpNetwork>, IpamError> {
        if let Some(pool) = self.pool_containing(memo, ip)? {
            return Ok(block_of(ip, pool.block_size));
        }
        Ok(self
            .store
            .list_blocks(ip.is_ipv4())?
            .into_iter()
            .find(|b| b.value.cidr.contains(ip))
            .map(|b| b.value.cidr))
    }

    /// The block holding `ip`, if it exists.
    pub(super) fn block_holding(
        &self,
        ip: IpAddr,
    ) -> Result<Option<Versioned<IpamBlock>>, IpamError> {
        match self.block_cidr_for(&Memo::default(), ip)? {
            Some(cidr) => Ok(self.store.get_block(&cidr)?),
            None => Ok(None),
        }
    }
}
