//! Changes to one block's contents, without the store: which ordinals to hand out, how
//! attributes are shared and pruned, what a release frees. The callers write the result
//! back with compare-and-swap.

use std::collections::BTreeMap;

use super::reserved::Reservations;
use crate::model::{AllocationAttribute, IpamBlock};
use crate::names::sanitize_handle;

/// The attribute entry for `handle` + `attrs`, appended if no identical one exists:
/// addresses of one request share one entry, as Calico writes them.
fn attribute_index(
    block: &mut IpamBlock,
    handle: Option<&str>,
    attrs: &BTreeMap<String, String>,
) -> usize {
    let found = block.attributes.iter().position(|a| {
        a.handle_id.as_deref() == handle && &a.secondary == attrs && a.extra.is_empty()
    });
    found.unwrap_or_else(|| {
        block.attributes.push(AllocationAttribute {
            handle_id: handle.map(str::to_string),
            secondary: attrs.clone(),
            extra: Default::default(),
        });
        block.attributes.len() - 1
    })
}

/// Records `ordinal` as allocated. The per-ordinal sequence number is the block's current
/// one (the write that follows bumps it), so a later release can tell this allocation from
/// a newer one of the same address.
fn mark_allocated(block: &mut IpamBlock, ordinal: usize, attr: usize) {
    block.allocations[ordinal] = Some(attr);
    block
        .sequence_number_for_allocation
        .insert(ordinal.to_string(), block.sequence_number);
}

/// Takes up to `num` ordinals from the head of `unallocated` (first out first, so a freed
/// address is reused last), passing over reserved addresses, which stay free where they
/// are in the list (as libcalico-go keeps them). Returns the ordinals taken.
pub fn allocate_from_head(
    block: &mut IpamBlock,
    num: usize,
    handle: Option<&str>,
    attrs: &BTreeMap<String, String>,
    reserved: &Reservations,
) -> Vec<usize> {
    // Skip ordinals that are out of range or already allocated: a corrupt free list must
    // not hand an address out twice.
    let mut taken = Vec::new();
    let mut keep = Vec::with_capacity(block.unallocated.len());
    for &ordinal in &block.unallocated {
        let usable = block.allocations.get(ordinal).is_some_and(Option::is_none)
            && !taken.contains(&ordinal);
        if taken.len() < num && usable && !reserved.contains(block.ip_at(ordinal)) {
            taken.push(ordinal);
        } else if usable {
            keep.push(ordinal);
        }
    }
    if taken.is_empty() {
        return taken;
    }
    block.unallocated = keep;
    let attr = attribute_index(block, handle, attrs);
    for &ordinal in &taken {
        mark_allocated(block, ordinal, attr);
    }
    taken
}

/// Allocates exactly `ordinal`, wherever it sits in the free list, reserved or not (an
/// explicit request is the operator's choice). False if it is taken.
pub fn allocate_exact(
    block: &mut IpamBlock,
    ordinal: usize,
    handle: Option<&str>,
    attrs: &BTreeMap<String, String>,
) -> bool {
    if !block.allocations.get(ordinal).is_some_and(Option::is_none) {
        return false;
    }
    block.unallocated.retain(|&o| o != ordinal);
    let attr = attribute_index(block, handle, attrs);
    mark_allocated(block, ordinal, attr);
    true
}

/// Frees `ordinals` (appended to the tail of the free list) and drops attribute entries
/// nothing points at any more. Returns, per handle, how many addresses were freed.
pub fn free_ordinals(block: &mut IpamBlock, ordinals: &[usize]) -> BTreeMap<String, u64> {
    let mut per_handle = BTreeMap::new();
    for &ordinal in ordinals {
        let Some(Some(attr)) = block.allocations.get(ordinal).copied() else {
            continue;
        };
        if let Some(handle) = block
            .attributes
            .get(attr)
            .and_then(|a| a.handle_id.as_deref())
        {
            *per_handle
                .entry(sanitize_handle(handle).to_string())
                .or_insert(0) += 1;
        }
        block.allocations[ordinal] = None;
        block.unallocated.push(ordinal);
        block
            .sequence_number_for_allocation
            .remove(&ordinal.to_string());
    }
    prune_attributes(block);
    per_handle
}

/// The ordinals whose attribute carries `handle` (compared after sanitizing both).
pub fn ordinals_of_handle(block: &IpamBlock, handle: &str) -> Vec<usize> {
    let handle = sanitize_handle(handle);
    block
        .allocations
        .iter()
        .enumerate()
        .filter_map(|(ordinal, attr)| {
            let a = block.attributes.get((*attr)?)?;
            (a.handle_id.as_deref().map(sanitize_handle) == Some(handle)).then_some(ordinal)
        })
        .collect()
}

/// Removes attribute entries no allocation refers to and renumbers the rest.
fn prune_attributes(block: &mut IpamBlock) {
    let mut used = vec![false; block.attributes.len()];
    for attr in block.allocations.iter().flatten() {
        if let Some(u) = used.get_mut(*attr) {
            *u = true;
        }
    }
    if used.iter().all(|u| *u) {
        return;
    }
    let mut renumber = vec![None; used.len()];
    let mut next = 0;
    for (old, is_used) in used.iter().enumerate() {
        if *is_used {
            renumber[old] = Some(next);
            next += 1;
        }
    }
    let mut old_index = 0;
    block.attributes.retain(|_| {
        let keep = used[old_index];
        old_index += 1;
        keep
    });
    for attr in block.allocations.iter_mut() {
        if let Some(a) = attr {
            *attr = renumber.get(*a).copied().flatten();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> IpamBlock {
        IpamBlock::new("10.0.0.0/29".parse().expect("cidr"), None, 100)
    }

    fn attrs(pod: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("pod".to_string(), pod.to_string())])
    }

    fn none() -> Reservations {
        Reservations::default()
    }

    fn reserving(cidrs: &[&str]) -> Reservations {
        Reservations::new(&[crate::model::IpReservation {
            name: "r".into(),
            reserved_cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
            extra: Default::default(),
        }])
    }

    #[test]
    fn head_allocation_shares_one_attribute_and_records_sequence() {
        let mut b = block();
        let got = allocate_from_head(&mut b, 3, Some("h1"), &attrs("a"), &none());
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(b.unallocated, [3, 4, 5, 6, 7]);
        assert_eq!(b.attributes.len(), 1);
        assert_eq!(b.allocations[..4], [Some(0), Some(0), Some(0), None]);
        assert_eq!(b.sequence_number_for_allocation.get("2"), Some(&100));
        let more = allocate_from_head(&mut b, 10, Some("h2"), &attrs("b"), &none());
        assert_eq!(more, [3, 4, 5, 6, 7]);
        assert_eq!(b.attributes.len(), 2);
        assert!(allocate_from_head(&mut b, 1, Some("h3"), &attrs("c"), &none()).is_empty());
        assert_eq!(b.attributes.len(), 2, "no attribute for nothing");
    }

    #[test]
    fn release_appends_to_tail_and_prunes_attributes() {
        let mut b = block();
        allocate_from_head(&mut b, 2, Some("h1"), &attrs("a"), &none());
        allocate_from_head(&mut b, 2, Some("h2"), &attrs("b"), &none());
        let h1 = ordinals_of_handle(&b, "h1");
        let freed = free_ordinals(&mut b, &h1);
        assert_eq!(freed, BTreeMap::from([("h1".to_string(), 2)]));
        assert_eq!(b.unallocated, [4, 5, 6, 7, 0, 1]);
        assert_eq!(b.attributes.len(), 1);
        assert_eq!(b.attributes[0].handle_id.as_deref(), Some("h2"));
        assert_eq!(b.allocations[2], Some(0), "renumbered");
        assert!(!b.sequence_number_for_allocation.contains_key("0"));
        // Freeing a free ordinal changes nothing.
        assert!(free_ordinals(&mut b, &[0]).is_empty());
        assert_eq!(b.unallocated, [4, 5, 6, 7, 0, 1]);
    }

    #[test]
    fn exact_allocation_and_sanitized_handles() {
        let mut b = block();
        assert!(allocate_exact(
            &mut b,
            5,
            Some("net.c1\r\neth0"),
            &attrs("a")
        ));
        assert!(!allocate_exact(&mut b, 5, Some("x"), &attrs("a")));
        assert!(!allocate_exact(&mut b, 8, Some("x"), &attrs("a")));
        assert_eq!(b.unallocated, [0, 1, 2, 3, 4, 6, 7]);
        assert_eq!(ordinals_of_handle(&b, "net.c1"), [5]);
    }

    #[test]
    fn head_allocation_passes_over_reserved_addresses_and_keeps_them_in_place() {
        let mut b = block();
        // 10.0.0.0/30 and 10.0.0.5 reserved: 4, 6, 7 are all there is.
        let r = reserving(&["10.0.0.0/30", "10.0.0.5/32"]);
        assert_eq!(
            allocate_from_head(&mut b, 2, Some("h1"), &attrs("a"), &r),
            [4, 6]
        );
        assert_eq!(
            b.unallocated,
            [0, 1, 2, 3, 5, 7],
            "reserved stay free, in order"
        );
        assert_eq!(
            allocate_from_head(&mut b, 5, Some("h2"), &attrs("b"), &r),
            [7]
        );
        assert!(allocate_from_head(&mut b, 1, Some("h3"), &attrs("c"), &r).is_empty());
        assert_eq!(b.unallocated, [0, 1, 2, 3, 5]);
        assert_eq!(b.attributes.len(), 2, "no attribute for nothing");
        // Explicitly, a reserved address can still be had.
        assert!(allocate_exact(&mut b, 5, Some("h4"), &attrs("d")));
    }
}
