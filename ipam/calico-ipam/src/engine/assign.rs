//! Handing out addresses: automatic assignment (libcalico-go `AutoAssign`: own blocks
//! first, then new claims, then borrowing) and assignment of one given address
//! (`AssignIP`).

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::block_ops::{allocate_exact, allocate_from_head};
use super::candidates::{block_of, BlockCandidates};
use super::claim::ClaimFailure;
use super::config::effective_block_limit;
use super::memo::Memo;
use super::reserved::Reservations;
use super::{with_prefix, Assigned, AutoAssign, Ipam, IpamError, MAX_RETRIES, USE_WORKLOAD};
use crate::model::{to_u128, BlockAffinity, IpPool, IpamBlock, IpamConfig};
use crate::names::sanitize_handle;
use crate::store::{StoreError, Versioned};

/// One family's assignment in progress.
struct FamilyRequest<'r> {
    v4: bool,
    handle: Option<&'r str>,
    attrs: &'r BTreeMap<String, String>,
    /// Never handed out here; read once for the whole request.
    reserved: &'r Reservations,
    pools: Vec<IpPool>,
    /// This node's affinities in the chosen pools, as listed, not yet looked at.
    affine: VecDeque<Versioned<BlockAffinity>>,
    /// Blocks this node owns in the chosen pools, against the per-host limit.
    owned: usize,
    limit: usize,
    config: IpamConfig,
}

/// Why no block came back.
enum NoBlock {
    /// Every candidate block is taken: time to borrow (if allowed).
    NoFreeBlocks,
    Failed(IpamError),
}

impl From<IpamError> for NoBlock {
    fn from(e: IpamError) -> Self {
        NoBlock::Failed(e)
    }
}

impl From<StoreError> for NoBlock {
    fn from(e: StoreError) -> Self {
        NoBlock::Failed(e.into())
    }
}

fn family_name(v4: bool) -> u8 {
    if v4 {
        4
    } else {
        6
    }
}

impl Ipam<'_> {
    /// IPv4 first, then IPv6. An error leaves nothing of this request allocated.
    pub fn auto_assign(&self, req: &AutoAssign) -> Result<Assigned, IpamError> {
        self.auto_assign_in(&Memo::default(), req)
    }

    /// [`Ipam::auto_assign`] with the IPPools the caller has already listed for this request
    /// (all of them, as [`crate::store::Store::list_pools`] returns them), so the request
    /// does not list them again.
    pub fn auto_assign_with_pools(
        &self,
        req: &AutoAssign,
        pools: Vec<IpPool>,
    ) -> Result<Assigned, IpamError> {
        self.auto_assign_in(&Memo::with_pools(pools), req)
    }

    /// Both families share one memo: pools, config, node labels and the handle are read
    /// once for the request, not once per family.
    fn auto_assign_in(&self, memo: &Memo, req: &AutoAssign) -> Result<Assigned, IpamError> {
        for (pools, v4) in [(&req.pools4, true), (&req.pools6, false)] {
            if pools.iter().any(|p| p.is_ipv4() != v4) {
                return Err(IpamError::WrongFamilyPool {
                    wanted: family_name(v4),
                    other: family_name(!v4),
                });
            }
        }
        if req.num4 > 0 || req.num6 > 0 {
            self.require_node(memo)?;
        }
        let mut out = Assigned::default();
        if req.num4 > 0 {
            out.ipv4 = self.auto_assign_family(memo, true, req.num4, req, &mut out.messages)?;
        }
        if req.num6 > 0 {
            match self.auto_assign_family(memo, false, req.num6, req, &mut out.messages) {
                Ok(ips) => out.ipv6 = ips,
                Err(e) => {
                    self.roll_back(memo, &out.ipv4);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Releases what a failed request had already got; the original error is what the
    /// caller needs to see, so a failure here is only logged.
    fn roll_back(&self, memo: &Memo, assigned: &[IpNetwork]) {
        if assigned.is_empty() {
            return;
        }
        let ips: Vec<IpAddr> = assigned.iter().map(IpNetwork::ip).collect();
        if let Err(e) = self.release_ips_in(memo, &ips) {
            log::warn!("cannot release {ips:?} after a failed assignment: {e}");
        }
    }

    fn auto_assign_family(
        &self,
        memo: &Memo,
        v4: bool,
        num: usize,
        req: &AutoAssign,
        messages: &mut Vec<String>,
    ) -> Result<Vec<IpNetwork>, IpamError> {
        let mut ips = Vec::new();
        let result = self.auto_assign_family_into(memo, v4, num, req, messages, &mut ips);
        if result.is_err() {
            self.roll_back(memo, &ips);
        }
        result.map(|()| ips)
    }

    fn auto_assign_family_into(
        &self,
        memo: &Memo,
        v4: bool,
        num: usize,
        req: &AutoAssign,
        messages: &mut Vec<String>,
        ips: &mut Vec<IpNetwork>,
    ) -> Result<(), IpamError> {
        let requested = if v4 { &req.pools4 } else { &req.pools6 };
        // An unset use is a workload, the only use CNI has.
        let usage = Some(req.usage.as_str())
            .filter(|u| !u.is_empty())
            .unwrap_or(USE_WORKLOAD);
        let pools = self.qualified_pools(memo, v4, requested, usage)?;
        let mut affine = self.affine_blocks(memo, v4, &pools.chosen, &pools.enabled)?;
        // Stable: the preferred first, the rest in list order, as Calico walks them.
        affine.sort_by_key(|a| !req.prefer.contains(&a.value.cidr));
        let config = self.memo_config(memo)?;
        // Listed once the request is known to be servable (libcalico-go lists them first,
        // so a request refused for its pools costs it one more round trip than us).
        let reserved = self.memo_reservations(memo)?;
        let limit = effective_block_limit(&config, req.max_blocks_per_host) as usize;
        let handle = Some(sanitize_handle(&req.handle_id)).filter(|h| !h.is_empty());
        let mut family = FamilyRequest {
            v4,
            handle,
            attrs: &req.attrs,
            reserved,
            pools: pools.chosen,
            owned: affine.len(),
            affine: affine.into(),
            limit,
            config,
        };

        // Own blocks, then new claims.
        let mut empty_rounds = 0;
        while ips.len() < num {
            let block = match self.find_or_claim_block(&mut family) {
                Ok(block) => block,
                Err(NoBlock::NoFreeBlocks) => {
                    if family.config.strict_affinity {
                        messages
                            .push("No more free affine blocks and strict affinity enabled".into());
                    }
                    break;
                }
                Err(NoBlock::Failed(e)) => return Err(e),
            };
            let got = self.assign_from_block(
                memo,
                block,
                num - ips.len(),
                &family,
                family.config.strict_affinity,
            )?;
            // A block that looked free but gave nothing (raced full, or deleted) must not
            // spin this loop forever.
            if got.is_empty() {
                empty_rounds += 1;
                if empty_rounds >= MAX_RETRIES {
                    return Err(IpamError::MaxRetries);
                }
            }
            ips.extend(got);
        }

        // Borrowing from blocks affine to other nodes (or to none).
        if ips.len() < num && !family.config.strict_affinity {
            self.borrow(memo, &family, num, ips)?;
            if ips.len() < num {
                let cidrs: Vec<String> = family.pools.iter().map(|p| p.cidr.to_string()).collect();
                messages.push(format!("No IPs available in pools: [{}]", cidrs.join(" ")));
            }
        }
        Ok(())
    }

    /// This node's affinities to blocks inside the chosen pools, in list order. Affinities
    /// to blocks of pools that no longer select this node (or no longer exist) are released
    /// when their blocks are empty; those of pools merely not chosen this time are kept.
    fn affine_blocks(
        &self,
        memo: &Memo,
        v4: bool,
        chosen: &[IpPool],
        enabled: &[IpPool],
    ) -> Result<Vec<Versioned<BlockAffinity>>, IpamError> {
        let mut usable = Vec::new();
        for affinity in self.store.list_affinities("host", &self.node, v4)? {
            let cidr = affinity.value.cidr;
            let inside = |p: &IpPool| p.cidr.contains(cidr.network());
            if chosen.iter().any(inside) {
                usable.push(affinity);
                continue;
            }
            let still_selected = match enabled.iter().find(|p| inside(p)) {
                Some(pool) => match self.selects(memo, pool, &self.node) {
                    Ok(selected) => selected,
                    // A selector nobody can parse is no reason to give a block up.
                    Err(IpamError::InvalidSelector { .. }) => true,
                    Err(e) => return Err(e),
                },
                None => false,
            };
            if !still_selected {
                if let Err(e) = self.release_block_affinity(&self.node, &cidr, true) {
                    log::info!("keeping affinity of {} for {cidr}: {e}", self.node);
                }
            }
        }
        Ok(usable)
    }

    /// A block of this node with a free unreserved address: one it owns, else a newly
    /// claimed one (libcalico-go `findOrClaimBlock`). A block with free addresses that are
    /// all reserved is as full as any other.
    fn find_or_claim_block(
        &self,
        family: &mut FamilyRequest<'_>,
    ) -> Result<Versioned<IpamBlock>, NoBlock> {
        while let Some(affinity) = family.affine.pop_front() {
            // Wholly reserved: nothing to read it for.
            if family.reserved.covers(&affinity.value.cidr) {
                continue;
            }
            if let Some(block) = self.own_block_with_space(affinity, family.reserved)? {
                return Ok(block);
            }
        }
        // Past the limit there is no borrowing either: the operator asked for a bound.
        if family.owned >= family.limit {
            return Err(IpamError::BlockLimit.into());
        }
        if !family.config.auto_allocate_blocks {
            return Err(IpamError::NoBlockClaim.into());
        }
        for _ in 0..MAX_RETRIES {
            let (cidr, exists) = self.find_usable_block(family)?;
            for _ in 0..MAX_RETRIES {
                let (affinity, created) = match self.pending_affinity(&cidr) {
                    Ok(a) => a,
                    Err(ClaimFailure::Conflict) => continue,
                    Err(ClaimFailure::Failed(e)) => return Err(e.into()),
                    Err(_) => break,
                };
                // A pending affinity we just created, for a block the list just showed
                // missing: nothing to re-read or re-mark, create the block straight away
                // (a block created meanwhile is caught by that create).
                let claimed = if created && !exists {
                    self.claim_affine_block(affinity)
                } else {
                    self.block_from_affinity(affinity)
                };
                match claimed {
                    Ok(block) => {
                        family.owned += 1;
                        if family.reserved.free_count(&block.value) == 0 {
                            // Filled by another process of this node meanwhile.
                            break;
                        }
                        return Ok(block);
                    }
                    Err(ClaimFailure::Conflict) => continue,
                    Err(ClaimFailure::StaleAffinity | ClaimFailure::ClaimConflict) => break,
                    Err(ClaimFailure::Failed(e)) => return Err(e.into()),
                }
            }
        }
        Err(IpamError::MaxRetries.into())
    }

    /// The block of one of this node's affinities, if it has a free address. Conflicts are
    /// retried; other failures move on to the next block, as Calico does.
    ///
    /// The affinity as listed is used first, without reading it again: a revision that has
    /// gone stale since only loses a compare-and-swap, and that re-reads it.
    fn own_block_with_space(
        &self,
        listed: Versioned<BlockAffinity>,
        reserved: &Reservations,
    ) -> Result<Option<Versioned<IpamBlock>>, NoBlock> {
        let cidr = listed.value.cidr;
        let mut listed = Some(listed);
        for _ in 0..MAX_RETRIES {
            let affinity = match listed.take() {
                Some(a) => a,
                None => match self.store.get_affinity("host", &self.node, &cidr) {
                    Ok(Some(a)) => a,
                    Ok(None) => return Ok(None),
                    Err(e) => {
                        log::warn!("cannot read affinity for {cidr}: {e}");
                        return Ok(None);
                    }
                },
            };
            match self.block_from_affinity(affinity) {
                Ok(block) if reserved.free_count(&block.value) > 0 => return Ok(Some(block)),
                Ok(_) => return Ok(None),
                Err(ClaimFailure::Conflict) => continue,
                Err(e) => {
                    log::info!("skipping affine block {cidr}: {e:?}");
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// The first block, in this node's candidate order over the chosen pools, that does
    /// not exist yet (and overlaps none that does) or is this node's with a free address,
    /// passing over blocks every address of which is reserved; with whether its block
    /// exists.
    fn find_usable_block(&self, family: &FamilyRequest<'_>) -> Result<(IpNetwork, bool), NoBlock> {
        let ours = self.host_affinity();
        // Existing blocks by first address: (last address, block).
        let existing: BTreeMap<u128, (u128, IpamBlock)> = self
            .store
            .list_blocks(family.v4)?
            .into_iter()
            .map(|b| {
                let first = to_u128(b.value.cidr.network());
                let last = to_u128(b.value.cidr.broadcast());
                (first, (last, b.value))
            })
            .collect();
        for pool in &family.pools {
            let Some(candidates) = BlockCandidates::new(pool, &self.node) else {
                continue;
            };
            for cidr in candidates {
                if family.reserved.covers(&cidr) {
                    continue;
                }
                let first = to_u128(cidr.network());
                let last = to_u128(cidr.broadcast());
                match existing.get(&first) {
                    Some((_, block)) if block.cidr == cidr => {
                        if block.affinity.as_deref() == Some(ours.as_str())
                            && family.reserved.free_count(block) > 0
                        {
                            return Ok((cidr, true));
                        }
                    }
                    _ => {
                        // A block of another size (left from an older pool) may cover part
                        // of this range: never create an overlapping one.
                        let overlaps = existing
                            .range(..=last)
                            .next_back()
                            .is_some_and(|(_, (end, _))| *end >= first);
                        if !overlaps {
                            return Ok((cidr, false));
                        }
                    }
                }
            }
        }
        Err(NoBlock::NoFreeBlocks)
    }

    /// Takes addresses from existing blocks of the chosen pools whoever they belong to, in
    /// this node's candidate order. Only blocks that exist are visited (Calico probes every
    /// possible block CIDR one read at a time; the order and outcome are the same).
    fn borrow(
        &self,
        memo: &Memo,
        family: &FamilyRequest<'_>,
        num: usize,
        ips: &mut Vec<IpNetwork>,
    ) -> Result<(), IpamError> {
        // Listed once for all the pools: what this loop writes lies in the pools already
        // walked, and a block another writer changed meanwhile only loses a
        // compare-and-swap, which re-reads it.
        let existing = self.store.list_blocks(family.v4)?;
        for pool in &family.pools {
            if ips.len() >= num {
                break;
            }
            let Some(walk) = BlockCandidates::new(pool, &self.node) else {
                continue;
            };
            let mut blocks: Vec<(u128, Versioned<IpamBlock>)> = existing
                .iter()
                .filter_map(|b| Some((walk.position_of_block(&b.value.cidr)?, b.clone())))
                .collect();
            blocks.sort_by_key(|(position, _)| *position);
            for (_, block) in blocks {
                if ips.len() >= num {
                    break;
                }
                if family.reserved.free_count(&block.value) == 0 {
                    continue;
                }
                let got = self.assign_from_block(memo, block, num - ips.len(), family, false)?;
                ips.extend(got);
            }
        }
        Ok(())
    }

    /// Up to `num` unreserved addresses from the head of the block's free list, recorded
    /// under one attribute; the handle is counted before the block write and uncounted if
    /// it fails.
    fn assign_from_block(
        &self,
        memo: &Memo,
        mut block: Versioned<IpamBlock>,
        num: usize,
        family: &FamilyRequest<'_>,
        check_affinity: bool,
    ) -> Result<Vec<IpNetwork>, IpamError> {
        let (handle, attrs) = (family.handle, family.attrs);
        let cidr = block.value.cidr;
        let ours = self.host_affinity();
        for _ in 0..MAX_RETRIES {
            if check_affinity && block.value.affinity.as_deref() != Some(ours.as_str()) {
                return Err(IpamError::AffinityMismatch {
                    found: block.value.affinity.clone().unwrap_or_default(),
                    node: self.node.clone(),
                });
            }
            let mut updated = block.value.clone();
            let ordinals = allocate_from_head(&mut updated, num, handle, attrs, family.reserved);
            if ordinals.is_empty() {
                return Ok(Vec::new());
            }
            let count = ordinals.len() as u64;
            if let Some(h) = handle {
                self.increment_handle(memo, h, &cidr, count)?;
            }
            match self.write_block(&mut updated, &block.revision) {
                Ok(_) => {
                    return Ok(ordinals
                        .iter()
                        .map(|&o| with_prefix(updated.ip_at(o), &cidr))
                        .collect())
                }
                Err(e) => {
                    if let Some(h) = handle {
                        if let Err(d) = self.decrement_handle(memo, h, &cidr, Some(count)) {
                            log::warn!("cannot uncount {count} addresses of handle {h}: {d}");
                        }
                    }
                    if !matches!(e, StoreError::Conflict(_)) {
                        return Err(e.into());
                    }
                    match self.store.get_block(&cidr)? {
                        Some(fresh) => block = fresh,
                        // Deleted meanwhile (an empty unaffine block): nothing here.
                        None => return Ok(Vec::new()),
                    }
                }
            }
        }
        Err(IpamError::MaxRetries)
    }

    /// Assigns exactly `ip` (libcalico-go `AssignIP`), claiming its block for this node if
    /// the block does not exist yet. Returns the address with its block's prefix length.
    ///
    /// IPReservations are not read: libcalico-go's `AssignIP` hands out a reserved address
    /// when asked for it by name (reservations only keep `AutoAssign` away), so a workload
    /// an operator pins to a reserved address with `IP=` or `ipAddrs` gets it here too.
    pub fn assign_ip(
        &self,
        ip: IpAddr,
        handle_id: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<IpNetwork, IpamError> {
        let memo = Memo::default();
        let pool = self
            .pool_containing(&memo, ip)?
            .ok_or(IpamError::NotInPool(ip))?;
        if !pool.allows(USE_WORKLOAD) {
            return Err(IpamError::UseNotAllowed {
                ip,
                pool: pool.name.clone(),
                usage: USE_WORKLOAD.to_string(),
            });
        }
        let cidr = block_of(ip, pool.block_size).ok_or(IpamError::NotInPool(ip))?;
        let config = self.ipam_config()?;
        let handle = Some(sanitize_handle(handle_id)).filter(|h| !h.is_empty());
        let ours = self.host_affinity();
        for _ in 0..MAX_RETRIES {
            let block = match self.store.get_block(&cidr)? {
                Some(block) => block,
                None => match self
                    .pending_affinity(&cidr)
                    .and_then(|(a, _)| self.claim_affine_block(a))
                {
                    Ok(block) => block,
                    Err(ClaimFailure::Failed(e)) => return Err(e),
                    Err(_) => continue,
                },
            };
            if config.strict_affinity && block.value.affinity.as_deref() != Some(ours.as_str()) {
                return Err(IpamError::AffinityMismatch {
                    found: block.value.affinity.clone().unwrap_or_default(),
                    node: self.node.clone(),
                });
            }
            let ordinal = block.value.ordinal_of(ip).ok_or(IpamError::NotInPool(ip))?;
            let mut updated = block.value.clone();
            if !allocate_exact(&mut updated, ordinal, handle, attrs) {
                return Err(IpamError::AlreadyAssigned(ip));
            }
            // As in Calico: the block is the truth; a missing count only costs a
            // release-by-handle its hint.
            let counted = handle.filter(|h| match self.increment_handle(&memo, h, &cidr, 1) {
                Ok(()) => true,
                Err(e) => {
                    log::warn!("cannot count {ip} for handle {h}: {e}");
                    false
                }
            });
            match self.write_block(&mut updated, &block.revision) {
                Ok(_) => return Ok(with_prefix(ip, &cidr)),
                Err(e) => {
                    if let Some(h) = counted {
                        if let Err(d) = self.decrement_handle(&memo, h, &cidr, Some(1)) {
                            log::warn!("cannot uncount {ip} of handle {h}: {d}");
                        }
                    }
                    if !matches!(e, StoreError::Conflict(_)) {
                        return Err(e.into());
                    }
                }
            }
        }
        Err(IpamError::MaxRetries)
    }
}
