//! IPReservations as automatic assignment sees them (libcalico-go's `addrFilter`): an
//! address inside any reserved CIDR is never handed out by `AutoAssign`, a block whose
//! every address is reserved is not even looked at, and a block whose free addresses are
//! all reserved counts as full.
//!
//! Explicit assignment of one address (`AssignIP`: CNI_ARGS `IP=`, the `ipAddrs`
//! annotation) does not consult reservations in libcalico-go (`AssignIP` passes none to
//! the block's `assign`), so an operator can still give a reserved address to a chosen
//! workload; [`super::Ipam::assign_ip`] does the same.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::model::{to_u128, IpReservation, IpamBlock};

/// Every reserved CIDR of the cluster, as inclusive address ranges per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservations {
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
}

fn range_of(cidr: &IpNetwork) -> (u128, u128) {
    (to_u128(cidr.network()), to_u128(cidr.broadcast()))
}

impl Reservations {
    pub fn new(reservations: &[IpReservation]) -> Reservations {
        let mut out = Reservations::default();
        for cidr in reservations.iter().flat_map(|r| &r.reserved_cidrs) {
            let ranges = if cidr.is_ipv4() {
                &mut out.v4
            } else {
                &mut out.v6
            };
            ranges.push(range_of(cidr));
        }
        // Sorted and merged once, so the questions below are one pass each however the
        // reservations overlap or nest.
        for ranges in [&mut out.v4, &mut out.v6] {
            ranges.sort_unstable();
            let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
            for &(first, last) in ranges.iter() {
                match merged.last_mut() {
                    Some((_, end)) if first <= end.saturating_add(1) => *end = (*end).max(last),
                    _ => merged.push((first, last)),
                }
            }
            *ranges = merged;
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    fn ranges(&self, v4: bool) -> &[(u128, u128)] {
        if v4 {
            &self.v4
        } else {
            &self.v6
        }
    }

    /// Whether a reservation covers `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let n = to_u128(ip);
        let ranges = self.ranges(ip.is_ipv4());
        // The last range starting at or before `n` is the only one that can hold it.
        let i = ranges.partition_point(|&(first, _)| first <= n);
        i > 0 && ranges[i - 1].1 >= n
    }

    /// Whether reservations, together, cover every address of `cidr`.
    pub fn covers(&self, cidr: &IpNetwork) -> bool {
        let (first, last) = range_of(cidr);
        let ranges = self.ranges(cidr.is_ipv4());
        // Ranges are merged: only one can cover the whole CIDR.
        let i = ranges.partition_point(|&(start, _)| start <= first);
        i > 0 && ranges[i - 1].1 >= last
    }

    /// How many addresses of `cidr` are reserved (overlapping reservations counted once).
    pub fn count_in(&self, cidr: &IpNetwork) -> u128 {
        let (first, last) = range_of(cidr);
        self.ranges(cidr.is_ipv4())
            .iter()
            .filter(|&&(start, end)| start <= last && end >= first)
            .map(|&(start, end)| end.min(last) - start.max(first) + 1)
            .sum()
    }

    /// How many of `block`'s free ordinals automatic assignment may hand out.
    pub fn free_count(&self, block: &IpamBlock) -> usize {
        if self.is_empty() {
            return block.free_count();
        }
        block
            .unallocated
            .iter()
            .filter(|&&o| !self.contains(block.ip_at(o)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn cidr(s: &str) -> IpNetwork {
        s.parse().expect("cidr")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn reserving(cidrs: &[&str]) -> Reservations {
        Reservations::new(&[IpReservation {
            name: "r".into(),
            reserved_cidrs: cidrs.iter().map(|c| cidr(c)).collect(),
            extra: Map::new(),
        }])
    }

    #[test]
    fn addresses_inside_any_reservation_of_their_family() {
        let r = reserving(&["10.0.0.8/30", "10.0.0.1/32", "fd00::4/126"]);
        assert!(r.contains(ip("10.0.0.1")));
        assert!(r.contains(ip("10.0.0.8")) && r.contains(ip("10.0.0.11")));
        assert!(!r.contains(ip("10.0.0.0")) && !r.contains(ip("10.0.0.12")));
        assert!(r.contains(ip("fd00::7")));
        assert!(!r.contains(ip("fd00::8")));
        // The same number in the other family is another address.
        assert!(!r.contains(ip("::a00:1")));
        assert!(!reserving(&[]).contains(ip("10.0.0.1")));
    }

    #[test]
    fn whole_blocks_covered_by_one_or_several_reservations() {
        let r = reserving(&["10.0.0.0/30", "10.0.0.4/31", "10.0.0.6/32", "10.0.0.7/32"]);
        assert!(r.covers(&cidr("10.0.0.0/29")), "adjacent pieces together");
        assert!(!r.covers(&cidr("10.0.0.0/28")));
        let nested = reserving(&["10.0.0.0/24", "10.0.0.5/32"]);
        assert!(nested.covers(&cidr("10.0.0.64/26")));
        let gap = reserving(&["10.0.0.0/30", "10.0.0.5/32", "10.0.0.6/31"]);
        assert!(!gap.covers(&cidr("10.0.0.0/29")), "10.0.0.4 is free");
        assert!(!reserving(&["fd00::/120"]).covers(&cidr("0.0.0.0/30")));
    }

    #[test]
    fn counts_inside_a_cidr_count_each_address_once() {
        let r = reserving(&["10.0.0.0/25", "10.0.0.5/32", "10.0.0.64/26", "10.0.1.0/30"]);
        assert_eq!(r.count_in(&cidr("10.0.0.0/24")), 128);
        assert_eq!(r.count_in(&cidr("10.0.0.0/23")), 132);
        assert_eq!(r.count_in(&cidr("10.0.0.124/30")), 4);
        assert_eq!(r.count_in(&cidr("10.0.0.126/31")), 2);
        assert_eq!(r.count_in(&cidr("10.0.0.128/25")), 0);
        assert_eq!(r.count_in(&cidr("fd00::/8")), 0);
    }

    #[test]
    fn free_count_leaves_reserved_ordinals_out() {
        let mut block = IpamBlock::new(cidr("10.0.0.0/29"), None, 1);
        block.allocations[0] = Some(0);
        block.unallocated.retain(|&o| o != 0);
        assert_eq!(reserving(&[]).free_count(&block), 7);
        assert_eq!(reserving(&["10.0.0.0/30"]).free_count(&block), 4);
        assert_eq!(reserving(&["10.0.0.0/29"]).free_count(&block), 0);
        assert_eq!(reserving(&["fd00::/64"]).free_count(&block), 7);
    }
}
