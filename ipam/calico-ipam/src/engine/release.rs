//! Giving addresses back: by handle (CNI DEL) or by address (dual-stack rollback, operator
//! clean-up). Freed ordinals go to the tail of the block's free list; an emptied block
//! nobody is affine to is deleted, an emptied affine block is kept for its node's next pods.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::block_ops::{free_ordinals, ordinals_of_handle};
use super::memo::Memo;
use super::{Ipam, IpamError, MAX_RETRIES};
use crate::model::IpamBlock;
use crate::names::sanitize_handle;
use crate::store::{StoreError, Versioned};

/// An allocation as a report saw it: released only if the block still holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenAllocation {
    pub ip: IpAddr,
    /// The handle it was under (none: any).
    pub handle: Option<String>,
    /// The block's sequence number when it was allocated (none: any).
    pub sequence_number: Option<u64>,
}

impl SeenAllocation {
    fn matches(&self, block: &IpamBlock, ip: IpAddr) -> bool {
        let Some(ordinal) = block.ordinal_of(ip) else {
            return false;
        };
        let handle_ok = match self.handle.as_deref().filter(|h| !h.is_empty()) {
            None => true,
            Some(expected) => {
                block
                    .allocations
                    .get(ordinal)
                    .copied()
                    .flatten()
                    .and_then(|i| block.attributes.get(i))
                    .and_then(|a| a.handle_id.as_deref())
                    == Some(expected)
            }
        };
        let sequence_ok = self
            .sequence_number
            .is_none_or(|n| block.sequence_number_of(ordinal) == n);
        handle_ok && sequence_ok
    }
}

/// What a block write after a release did.
enum Written {
    Done,
    /// Lost a compare-and-swap (or the block vanished): re-read and try again.
    Retry,
}

impl Ipam<'_> {
    /// Releases every address recorded under `handle_id` (sanitized at the first `\r`), then
    /// the handle itself; returns the addresses. A handle that does not exist is
    /// [`IpamError::HandleNotFound`] (CNI DEL treats it as success).
    pub fn release_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let handle = sanitize_handle(handle_id);
        let stored = self
            .store
            .get_handle(handle)?
            .ok_or_else(|| IpamError::HandleNotFound(handle.to_string()))?;
        let blocks: Vec<String> = stored.value.block.keys().cloned().collect();
        // The handle just read is what the first decrement compares-and-swaps against.
        let memo = Memo::default();
        memo.set_handle(Some(stored));
        let mut released = Vec::new();
        for block_text in blocks {
            let Ok(cidr) = block_text.parse::<IpNetwork>() else {
                log::warn!("handle {handle} names an invalid block {block_text:?}");
                continue;
            };
            released.extend(self.release_handle_in_block(&memo, handle, &cidr)?);
        }
        Ok(released)
    }

    /// The addresses of `handle` freed in one block.
    fn release_handle_in_block(
        &self,
        memo: &Memo,
        handle: &str,
        cidr: &IpNetwork,
    ) -> Result<Vec<IpAddr>, IpamError> {
        for _ in 0..MAX_RETRIES {
            let Some(mut block) = self.store.get_block(cidr)? else {
                // The handle over-estimated: nothing of it is left in a block that is gone.
                self.decrement_handle(memo, handle, cidr, None)?;
                return Ok(Vec::new());
            };
            let ordinals = ordinals_of_handle(&block.value, handle);
            if ordinals.is_empty() {
                self.decrement_handle(memo, handle, cidr, None)?;
                return Ok(Vec::new());
            }
            free_ordinals(&mut block.value, &ordinals);
            if let Written::Retry = self.write_released(&mut block)? {
                continue;
            }
            // The block now holds nothing of this handle: drop its whole entry, so an
            // over-estimated count cannot keep the handle alive forever.
            self.decrement_handle(memo, handle, cidr, None)?;
            self.ensure_consistent_affinity(memo, &block.value);
            return Ok(ordinals.iter().map(|o| block.value.ip_at(*o)).collect());
        }
        Err(IpamError::MaxRetries)
    }

    /// Releases `ips`, whoever holds them. Returns those that were not allocated.
    pub fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<IpAddr>, IpamError> {
        self.release_ips_in(&Memo::default(), ips)
    }

    /// Releases each address only while it is still the allocation that was seen (same
    /// handle, same sequence number): one given out again since is left alone. Returns
    /// those that were not released.
    pub fn release_if_unchanged(&self, seen: &[SeenAllocation]) -> Result<Vec<IpAddr>, IpamError> {
        let ips: Vec<IpAddr> = seen.iter().map(|s| s.ip).collect();
        let unchanged = |block: &IpamBlock, ip: IpAddr| {
            seen.iter()
                .filter(|s| s.ip == ip)
                .any(|s| s.matches(block, ip))
        };
        self.release_matching(&Memo::default(), &ips, &unchanged)
    }

    /// [`Ipam::release_ips`] within an operation that may already have read the pools.
    pub(super) fn release_ips_in(
        &self,
        memo: &Memo,
        ips: &[IpAddr],
    ) -> Result<Vec<IpAddr>, IpamError> {
        self.release_matching(memo, ips, &|_, _| true)
    }

    /// Releases those of `ips` that are allocated and for which `wanted` holds.
    fn release_matching(
        &self,
        memo: &Memo,
        ips: &[IpAddr],
        wanted: &dyn Fn(&IpamBlock, IpAddr) -> bool,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let mut unallocated = Vec::new();
        let mut by_block: BTreeMap<IpNetwork, Vec<IpAddr>> = BTreeMap::new();
        for &ip in ips {
            match self.block_cidr_for(memo, ip)? {
                Some(cidr) => {
                    let group = by_block.entry(cidr).or_default();
                    // The same address twice in one request is released once.
                    if !group.contains(&ip) {
                        group.push(ip);
                    }
                }
                None => unallocated.push(ip),
            }
        }
        for (cidr, group) in by_block {
            unallocated.extend(self.release_in_block(memo, &cidr, &group, wanted)?);
        }
        Ok(unallocated)
    }

    /// Frees those of `ips` in one block that are allocated and `wanted`; returns the rest.
    fn release_in_block(
        &self,
        memo: &Memo,
        cidr: &IpNetwork,
        ips: &[IpAddr],
        wanted: &dyn Fn(&IpamBlock, IpAddr) -> bool,
    ) -> Result<Vec<IpAddr>, IpamError> {
        for _ in 0..MAX_RETRIES {
            let Some(mut block) = self.store.get_block(cidr)? else {
                return Ok(ips.to_vec());
            };
            let (allocated, free): (Vec<IpAddr>, Vec<IpAddr>) = ips.iter().partition(|ip| {
                let held = block
                    .value
                    .ordinal_of(**ip)
                    .is_some_and(|o| block.value.allocations.get(o).is_some_and(Option::is_some));
                held && wanted(&block.value, **ip)
            });
            if allocated.is_empty() {
                return Ok(free);
            }
            let ordinals: Vec<usize> = allocated
                .iter()
                .filter_map(|ip| block.value.ordinal_of(*ip))
                .collect();
            let per_handle = free_ordinals(&mut block.value, &ordinals);
            if let Written::Retry = self.write_released(&mut block)? {
                continue;
            }
            for (handle, count) in per_handle {
                self.decrement_handle(memo, &handle, cidr, Some(count))?;
            }
            self.ensure_consistent_affinity(memo, &block.value);
            return Ok(free);
        }
        Err(IpamError::MaxRetries)
    }

    /// Writes a block after a release: deleted if now empty and affine to nobody, else
    /// updated.
    fn write_released(&self, block: &mut Versioned<IpamBlock>) -> Result<Written, IpamError> {
        let result = if block.value.is_empty() && block.value.affinity.is_none() {
            self.store.delete_block(&block.value.cidr, &block.revision)
        } else {
            self.write_block(&mut block.value, &block.revision)
                .map(drop)
        };
        match result {
            Ok(()) => Ok(Written::Done),
            Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => Ok(Written::Retry),
            Err(e) => Err(e.into()),
        }
    }

    /// After a release: if the block's pool is gone or no longer selects the block's node,
    /// give up the node's affinity once the block is empty (libcalico-go
    /// `ensureConsistentAffinity`). Best effort: the release itself already happened.
    ///
    /// A block that still holds addresses keeps its affinity whatever its pool says (the
    /// affinity is only ever released from an empty block), so the pool and the node are
    /// only read for a block this release emptied.
    fn ensure_consistent_affinity(&self, memo: &Memo, block: &IpamBlock) {
        let Some(node) = block
            .affinity
            .as_deref()
            .and_then(|a| a.strip_prefix("host:"))
        else {
            return;
        };
        if !block.is_empty() {
            return;
        }
        let still_selected = (|| -> Result<bool, IpamError> {
            let Some(pool) = self.pool_containing(memo, block.cidr.network())? else {
                return Ok(false);
            };
            self.selects(memo, &pool, node)
        })();
        match still_selected {
            Ok(true) => {}
            Ok(false) => {
                if let Err(e) = self.release_block_affinity(node, &block.cidr, true) {
                    log::info!("keeping affinity of {node} for {}: {e}", block.cidr);
                }
            }
            Err(e) => log::info!("cannot check affinity of {node} for {}: {e}", block.cidr),
        }
    }
}
