//! Picking an address from one range set, in the reference plugin's order: a requested
//! address if one falls in the set, otherwise round robin from the last address the set
//! handed out, skipping each range's gateway, wrapping across the set's ranges.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::range::{next_ip, RangeSet};
use crate::store::{self, Reservation, Store, StoreError};

/// What one range set handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub address: IpNetwork,
    pub gateway: IpAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("requested ip {0} is subnet's gateway")]
    RequestedGateway(IpAddr),
    #[error("requested IP address {ip} is not available in range set {set}")]
    RequestedTaken { ip: IpAddr, set: String },
    #[error("{ip} has been allocated to {id}, duplicate allocation is not allowed")]
    Duplicate { ip: IpAddr, id: String },
    #[error("no IP addresses available in range set: {0}")]
    Exhausted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Candidate addresses of a set, in the reference's order.
///
/// Starting after `last` (when it lies in the set) the walk visits every address once and
/// ends on `last` itself; otherwise it starts at the first range's start. A range's end is
/// followed by the next range's start, cyclically; gateways are skipped.
pub struct Candidates<'a> {
    set: &'a RangeSet,
    range: usize,
    cur: Option<IpAddr>,
    first: Option<IpAddr>,
    done: bool,
}

impl<'a> Candidates<'a> {
    pub fn new(set: &'a RangeSet, last: Option<IpAddr>) -> Candidates<'a> {
        let resume = last.and_then(|ip| {
            set.0
                .iter()
                .position(|r| r.contains(ip))
                .map(|range| (range, ip))
        });
        match resume {
            Some((range, ip)) => Candidates {
                set,
                range,
                cur: Some(ip),
                first: None,
                done: false,
            },
            None => Candidates {
                set,
                range: 0,
                cur: None,
                first: None,
                done: false,
            },
        }
    }
}

impl Iterator for Candidates<'_> {
    /// An address and the gateway of its range.
    type Item = (IpNetwork, IpAddr);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let r = self.set.0.get(self.range)?;
            let ip = match self.cur {
                None => r.start,
                Some(cur) if cur == r.end => {
                    self.range = (self.range + 1) % self.set.0.len();
                    self.set.0[self.range].start
                }
                Some(cur) => next_ip(cur),
            };
            self.cur = Some(ip);
            match self.first {
                None => self.first = Some(ip),
                Some(first) if first == ip => {
                    self.done = true;
                    return None;
                }
                Some(_) => {}
            }
            let r = &self.set.0[self.range];
            if ip != r.gateway {
                return Some((r.with_prefix(ip), r.gateway));
            }
        }
    }
}

/// Allocates one address of `set` (range set number `index`) to (id, ifname), with the
/// store locked by the caller. `existing` are the reservations present before this ADD.
pub fn allocate(
    store: &Store,
    set: &RangeSet,
    index: usize,
    existing: &[Reservation],
    id: &str,
    ifname: &str,
    requested: Option<IpAddr>,
) -> Result<Allocation, AllocError> {
    if let Some(ip) = requested {
        // The caller only passes an address that lies in this set.
        let Some(range) = set.range_for(ip) else {
            return Err(AllocError::RequestedTaken {
                ip,
                set: set.to_string(),
            });
        };
        if ip == range.gateway {
            return Err(AllocError::RequestedGateway(ip));
        }
        if !store.reserve(ip, id, ifname)? {
            return Err(AllocError::RequestedTaken {
                ip,
                set: set.to_string(),
            });
        }
        return Ok(Allocation {
            address: range.with_prefix(ip),
            gateway: range.gateway,
        });
    }
    // One address per set per attachment: a second ADD without DEL is the runtime's bug.
    if let Some(ip) = store::held_by(existing, id, ifname)
        .into_iter()
        .find(|ip| set.contains(*ip))
    {
        return Err(AllocError::Duplicate {
            ip,
            id: id.to_string(),
        });
    }
    for (address, gateway) in Candidates::new(set, store.last_reserved(index)) {
        if store.reserve(address.ip(), id, ifname)? {
            return Ok(Allocation { address, gateway });
        }
    }
    Err(AllocError::Exhausted(set.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::RangeConf;

    fn set(subnets: &[&str]) -> RangeSet {
        let confs: Vec<RangeConf> = subnets
            .iter()
            .map(|s| RangeConf {
                subnet: Some(s.to_string()),
                ..RangeConf::default()
            })
            .collect();
        RangeSet::canonicalize(&confs).expect("valid set")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn order(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        Candidates::new(set, last.map(ip))
            .map(|(a, _)| a.ip().to_string())
            .collect()
    }

    #[test]
    fn walks_a_29_from_the_start_skipping_the_gateway() {
        assert_eq!(
            order(&set(&["10.0.0.0/29"]), None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn resumes_after_the_last_reserved_and_ends_on_it() {
        assert_eq!(
            order(&set(&["10.0.0.0/29"]), Some("10.0.0.5")),
            ["10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
        );
        // Outside the set: start over.
        assert_eq!(
            order(&set(&["10.0.0.0/29"]), Some("10.0.0.128"))[0],
            "10.0.0.2"
        );
    }

    #[test]
    fn wraps_across_the_ranges_of_a_set() {
        let s = set(&["10.0.0.0/30", "10.0.1.0/30"]);
        assert_eq!(order(&s, None), ["10.0.0.2", "10.0.1.2"]);
        assert_eq!(order(&s, Some("10.0.0.2")), ["10.0.1.2", "10.0.0.2"]);
        let s = set(&["10.0.0.0/30", "10.0.1.0/30", "10.0.2.0/30"]);
        assert_eq!(order(&s, Some("10.0.2.2"))[0], "10.0.0.2");
    }

    #[test]
    fn ipv6_starts_at_2_with_its_prefix() {
        let s = set(&["2001:db8:1::/64"]);
        let (first, gw) = Candidates::new(&s, None).next().expect("one");
        assert_eq!(first.to_string(), "2001:db8:1::2/64");
        assert_eq!(gw, ip("2001:db8:1::1"));
    }

    #[test]
    fn allocation_reserves_and_refuses_duplicates_and_exhaustion() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path(), "n").expect("store");
        let s = set(&["10.0.0.0/30"]);
        let a = allocate(&store, &s, 0, &[], "c1", "eth0", None).expect("one");
        assert_eq!(a.address.to_string(), "10.0.0.2/30");
        let existing = store.reservations().expect("list");
        assert!(matches!(
            allocate(&store, &s, 0, &existing, "c1", "eth0", None),
            Err(AllocError::Duplicate { .. })
        ));
        let err = allocate(&store, &s, 0, &existing, "c2", "eth0", None).expect_err("full");
        assert_eq!(
            err.to_string(),
            "no IP addresses available in range set: 10.0.0.1-10.0.0.2"
        );
        assert!(matches!(
            allocate(&store, &s, 0, &existing, "c2", "eth0", Some(ip("10.0.0.1"))),
            Err(AllocError::RequestedGateway(_))
        ));
        assert_eq!(
            allocate(&store, &s, 0, &existing, "c2", "eth0", Some(ip("10.0.0.2")))
                .expect_err("taken")
                .to_string(),
            "requested IP address 10.0.0.2 is not available in range set 10.0.0.1-10.0.0.2"
        );
    }
}
