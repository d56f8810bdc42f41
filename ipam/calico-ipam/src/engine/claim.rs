//! Claiming blocks: the two-phase affinity protocol (libcalico-go `getBlockFromAffinity`,
//! `getPendingAffinity`, `claimAffineBlock`) and its reverse (`releaseBlockAffinity`).
//!
//! A node first writes its affinity `pending`, then creates the block with `affinity:
//! host:<node>`, then marks the affinity `confirmed`. Whoever creates the block wins; the
//! loser removes its pending affinity. Anything deciding routing treats a pending affinity
//! as no ownership, so a half-finished claim never attracts traffic.

use ipnetwork::IpNetwork;

use super::{now_ns, Ipam, IpamError};
use crate::model::{AffinityState, BlockAffinity, IpamBlock};
use crate::store::{Revision, StoreError, Versioned};

/// Why a claim did not produce a block.
#[derive(Debug)]
pub(super) enum ClaimFailure {
    /// The affinity named a block that belongs to someone else; it has been removed.
    StaleAffinity,
    /// Another node created the block first; our pending affinity has been removed.
    ClaimConflict,
    /// A compare-and-swap lost: re-read and try again.
    Conflict,
    Failed(IpamError),
}

impl From<StoreError> for ClaimFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => ClaimFailure::Conflict,
            e => ClaimFailure::Failed(e.into()),
        }
    }
}

/// Why an affinity was not released.
#[derive(Debug)]
pub(super) enum ReleaseAffinityFailure {
    NotEmpty,
    NotOurs,
    Failed(IpamError),
}

impl std::fmt::Display for ReleaseAffinityFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReleaseAffinityFailure::NotEmpty => f.write_str("block is not empty"),
            ReleaseAffinityFailure::NotOurs => f.write_str("block is affine to another node"),
            ReleaseAffinityFailure::Failed(e) => e.fmt(f),
        }
    }
}

impl Ipam<'_> {
    /// Writes a block back, bumping its sequence number as every Calico writer does: readers
    /// holding the old number know their view is stale.
    pub(super) fn write_block(
        &self,
        block: &mut IpamBlock,
        revision: &Revision,
    ) -> Result<Revision, StoreError> {
        block.sequence_number = block.sequence_number.wrapping_add(1);
        self.store.update_block(block, revision)
    }

    /// Our affinity for `cidr`, created `pending` or moved back to `pending` unless it is
    /// already confirmed. The flag says whether this call created it.
    pub(super) fn pending_affinity(
        &self,
        cidr: &IpNetwork,
    ) -> Result<(Versioned<BlockAffinity>, bool), ClaimFailure> {
        let fresh = BlockAffinity::host(&self.node, *cidr, AffinityState::Pending);
        match self.store.create_affinity(&fresh) {
            Ok(revision) => Ok((
                Versioned {
                    value: fresh,
                    revision,
                },
                true,
            )),
            Err(StoreError::AlreadyExists(_)) => {
                let Some(mut existing) = self.store.get_affinity("host", &self.node, cidr)? else {
                    // Deleted between our create and our read.
                    return Err(ClaimFailure::Conflict);
                };
                if existing.value.state == AffinityState::Confirmed {
                    return Ok((existing, false));
                }
                existing.value.state = AffinityState::Pending;
                existing.revision = self
                    .store
                    .update_affinity(&existing.value, &existing.revision)?;
                Ok((existing, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The block an affinity points at, claiming it if it does not exist yet and confirming
    /// the affinity if it is not confirmed.
    pub(super) fn block_from_affinity(
        &self,
        mut affinity: Versioned<BlockAffinity>,
    ) -> Result<Versioned<IpamBlock>, ClaimFailure> {
        let cidr = affinity.value.cidr;
        let Some(mut block) = self.store.get_block(&cidr)? else {
            // No block yet: this is a claim in progress (or a dangling affinity). Write the
            // affinity pending first, so the compare-and-swap proves it is still ours.
            affinity.value.state = AffinityState::Pending;
            affinity.revision = self
                .store
                .update_affinity(&affinity.value, &affinity.revision)?;
            return self.claim_affine_block(affinity);
        };
        if block.value.affinity.as_deref() != Some(self.host_affinity().as_str()) {
            // The block went to someone else (or was released): our affinity is stale.
            log::info!(
                "block {cidr} has affinity {:?}, removing stale affinity of {}",
                block.value.affinity,
                self.node
            );
            self.store
                .delete_affinity(&affinity.value, &affinity.revision)?;
            return Err(ClaimFailure::StaleAffinity);
        }
        if affinity.value.state != AffinityState::Confirmed {
            // A claim that did not finish. Take it over: pending, then rewrite the block
            // (invalidating any writer still holding the old revision), then confirm.
            affinity.value.state = AffinityState::Pending;
            affinity.revision = self
                .store
                .update_affinity(&affinity.value, &affinity.revision)?;
            block.revision = self.write_block(&mut block.value, &block.revision)?;
            self.confirm_affinity(affinity)?;
        }
        Ok(block)
    }

    /// Creates the block for a pending affinity, then confirms the affinity.
    pub(super) fn claim_affine_block(
        &self,
        affinity: Versioned<BlockAffinity>,
    ) -> Result<Versioned<IpamBlock>, ClaimFailure> {
        let cidr = affinity.value.cidr;
        let block = IpamBlock::new(cidr, Some(self.host_affinity()), now_ns());
        match self.store.create_block(&block) {
            Ok(revision) => {
                self.confirm_affinity(affinity)?;
                Ok(Versioned {
                    value: block,
                    revision,
                })
            }
            Err(StoreError::AlreadyExists(_)) => {
                let Some(existing) = self.store.get_block(&cidr)? else {
                    return Err(ClaimFailure::Conflict);
                };
                if existing.value.affinity.as_deref() == Some(self.host_affinity().as_str()) {
                    // Another process of this node won the race: the block is ours anyway.
                    self.confirm_affinity(affinity)?;
                    return Ok(existing);
                }
                log::info!(
                    "block {cidr} was claimed by {:?} first",
                    existing.value.affinity
                );
                match self
                    .store
                    .delete_affinity(&affinity.value, &affinity.revision)
                {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => log::warn!("cannot remove pending affinity for {cidr}: {e}"),
                }
                Err(ClaimFailure::ClaimConflict)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn confirm_affinity(
        &self,
        mut affinity: Versioned<BlockAffinity>,
    ) -> Result<Versioned<BlockAffinity>, ClaimFailure> {
        affinity.value.state = AffinityState::Confirmed;
        match self
            .store
            .update_affinity(&affinity.value, &affinity.revision)
        {
            Ok(revision) => Ok(Versioned {
                value: affinity.value,
                revision,
            }),
            Err(e) => {
                // Someone (another process of this node) may have confirmed it for us.
                let cidr = affinity.value.cidr;
                match self.store.get_affinity("host", &self.node, &cidr)? {
                    Some(now) if now.value.state == AffinityState::Confirmed => Ok(now),
                    _ => Err(e.into()),
                }
            }
        }
    }

    /// Gives up `node`'s affinity for `cidr` (libcalico-go `releaseBlockAffinity`): the
    /// affinity goes `pendingDeletion`, the block is deleted if empty or made unaffine,
    /// then the affinity is deleted.
    pub(super) fn release_block_affinity(
        &self,
        node: &str,
        cidr: &IpNetwork,
        require_empty: bool,
    ) -> Result<(), ReleaseAffinityFailure> {
        let failed = |e: StoreError| ReleaseAffinityFailure::Failed(e.into());
        let ours = format!("host:{node}");
        for _ in 0..super::MAX_RETRIES {
            let Some(mut affinity) = self
                .store
                .get_affinity("host", node, cidr)
                .map_err(failed)?
            else {
                return Ok(());
            };
            let block = self.store.get_block(cidr).map_err(failed)?;
            if let Some(block) = &block {
                if block.value.affinity.as_deref() != Some(ours.as_str()) {
                    match self
                        .store
                        .delete_affinity(&affinity.value, &affinity.revision)
                    {
                        Ok(()) | Err(StoreError::NotFound(_)) => {}
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(failed(e)),
                    }
                    return Err(ReleaseAffinityFailure::NotOurs);
                }
                if require_empty && !block.value.is_empty() {
                    return Err(ReleaseAffinityFailure::NotEmpty);
                }
            }
            if affinity.value.state != AffinityState::PendingDeletion {
                affinity.value.state = AffinityState::PendingDeletion;
                affinity.revision = match self
                    .store
                    .update_affinity(&affinity.value, &affinity.revision)
                {
                    Ok(r) => r,
                    Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(failed(e)),
                };
            }
            if let Some(mut block) = block {
                let written = if block.value.is_empty() {
                    self.store.delete_block(cidr, &block.revision)
                } else {
                    block.value.affinity = None;
                    self.write_block(&mut block.value, &block.revision)
                        .map(drop)
                };
                match written {
                    Ok(()) => {}
                    Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(failed(e)),
                }
            }
            match self
                .store
                .delete_affinity(&affinity.value, &affinity.revision)
            {
                Ok(()) | Err(StoreError::NotFound(_)) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(failed(e)),
            }
        }
        Err(ReleaseAffinityFailure::Failed(IpamError::MaxRetries))
    }
}
