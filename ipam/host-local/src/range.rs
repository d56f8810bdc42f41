//! Address ranges and range sets, canonicalised and checked exactly as the reference plugin
//! does it, down to the error texts operators search for.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::Deserialize;

/// One range as written in the config; everything but `subnet` is optional. Kept as text
/// until [`RangeConf::check_syntax`], so a malformed address is reported by its value.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RangeConf {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(rename = "rangeStart", default)]
    pub range_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    pub range_end: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A value that is not an address at all. The reference reports these while decoding its
/// JSON, before any range is checked, so they carry no range-set number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("invalid CIDR address: {0}")]
    Cidr(String),
    #[error("invalid IP address: {0}")]
    Ip(String),
}

fn parse_ip(text: &Option<String>) -> Result<Option<IpAddr>, SyntaxError> {
    text.as_deref()
        .map(|t| t.parse().map_err(|_| SyntaxError::Ip(t.to_string())))
        .transpose()
}

/// A canonical range: every field known, `start..=end` inside `subnet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The network, host bits clear.
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// The addresses handed out for one interface come from one range set: its ranges are
/// alternatives of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

/// The subnet keyword the calico plugin replaces with the node's podCIDR before we run.
pub const USE_POD_CIDR: &str = "usePodCidr";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("empty range set")]
    Empty,
    #[error("a range has no subnet")]
    NoSubnet,
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error(
        "subnet {0:?} must be replaced by the calico plugin before host-local runs: use the \
         calico plugin with \"ipam\": {{\"type\": \"host-local\"}}, or write the node's pod CIDR"
    )]
    UsePodCidr(String),
    #[error("Network {0} too small to allocate from")]
    TooSmall(IpNetwork),
    #[error(
        "Network has host bits set. For a subnet mask of length {prefix} the network address is \
         {network}"
    )]
    HostBits { prefix: u8, network: IpAddr },
    #[error("RangeStart {0} not in network {1}")]
    StartOutside(IpAddr, IpNetwork),
    #[error("RangeEnd {0} not in network {1}")]
    EndOutside(IpAddr, IpNetwork),
    #[error("mixed address families")]
    MixedFamilies,
    #[error("subnets {0} and {1} overlap")]
    Overlap(String, String),
}

/// Addresses as numbers, so both families share the arithmetic.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The number back in `family`'s address space.
pub fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// The next address, wrapping at the top of the family's space.
pub fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(1))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(1))),
    }
}

fn bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

impl RangeConf {
    /// Every address of the range must at least be an address (`usePodCidr` is left for
    /// [`Self::canonicalize`] to explain).
    pub fn check_syntax(&self) -> Result<(), SyntaxError> {
        if let Some(text) = self.subnet.as_deref().filter(|t| *t != USE_POD_CIDR) {
            parse_cidr(text)?;
        }
        parse_ip(&self.range_start)?;
        parse_ip(&self.range_end)?;
        parse_ip(&self.gateway)?;
        Ok(())
    }

    /// Checks and completes one range, in the reference's order: size, host bits, then the
    /// defaults (gateway and start at network+1, end at the last address, minus the broadcast
    /// for IPv4).
    pub fn canonicalize(&self) -> Result<Range, RangeError> {
        let text = self.subnet.as_deref().ok_or(RangeError::NoSubnet)?;
        if text == USE_POD_CIDR {
            return Err(RangeError::UsePodCidr(text.to_string()));
        }
        let given = parse_cidr(text)?;
        let range_start = parse_ip(&self.range_start)?;
        let range_end = parse_ip(&self.range_end)?;
        let gateway = parse_ip(&self.gateway)?;
        let ip = given.ip();
        let prefix = given.prefix();
        if prefix > bits(ip) - 2 {
            return Err(RangeError::TooSmall(given));
        }
        let network = given.network();
        if network != ip {
            return Err(RangeError::HostBits { prefix, network });
        }
        let subnet = given;
        let first = next_ip(network);
        let last = {
            let broadcast = given.broadcast();
            if ip.is_ipv4() {
                from_u128(to_u128(broadcast) - 1, true)
            } else {
                broadcast
            }
        };
        let in_subnet = |a: IpAddr| a.is_ipv4() == ip.is_ipv4() && subnet.contains(a);
        // Like the reference, an explicit start is checked against the explicit end (a start
        // past the end is reported as a start outside the network), then the end against the
        // start in force, explicit or default: an end at the network address is refused.
        let start = match range_start {
            Some(s) if !in_subnet(s) || range_end.is_some_and(|e| to_u128(s) > to_u128(e)) => {
                return Err(RangeError::StartOutside(s, subnet))
            }
            Some(s) => s,
            None => first,
        };
        let end = match range_end {
            Some(e) if !in_subnet(e) || to_u128(e) < to_u128(start) => {
                return Err(RangeError::EndOutside(e, subnet))
            }
            Some(e) => e,
            None => last,
        };
        // Where we are stricter than the reference: an IPv4 start at the broadcast address,
        // past the default end. The reference accepts it, then hands out the broadcast
        // address and walks on out of the subnet; every range here has start <= end.
        if to_u128(start) > to_u128(end) {
            return Err(RangeError::StartOutside(start, subnet));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway: gateway.unwrap_or(first),
        })
    }
}

/// CIDR notation with an explicit prefix; host bits are kept (and checked later).
fn parse_cidr(text: &str) -> Result<IpNetwork, SyntaxError> {
    if !text.contains('/') {
        return Err(SyntaxError::Cidr(text.to_string()));
    }
    text.parse()
        .map_err(|_| SyntaxError::Cidr(text.to_string()))
}

impl Range {
    pub fn is_ipv4(&self) -> bool {
        self.start.is_ipv4()
    }

    /// Same family, inside the subnet, between start and end.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4()
            && self.subnet.contains(ip)
            && to_u128(ip) >= to_u128(self.start)
            && to_u128(ip) <= to_u128(self.end)
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }

    /// The address with this range's prefix length, as a result carries it.
    pub fn with_prefix(&self, ip: IpAddr) -> IpNetwork {
        // The prefix came from a valid network of the same family.
        IpNetwork::new(ip, self.subnet.prefix()).unwrap_or(self.subnet)
    }

    /// How many addresses the range can hand out (the gateway is never handed out).
    pub fn capacity(&self) -> u128 {
        let span = to_u128(self.end) - to_u128(self.start) + 1;
        span - u128::from(self.contains(self.gateway))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl RangeSet {
    /// Checks every range of a set: not empty, one family, no overlap inside.
    pub fn canonicalize(confs: &[RangeConf]) -> Result<RangeSet, RangeError> {
        if confs.is_empty() {
            return Err(RangeError::Empty);
        }
        let ranges = confs
            .iter()
            .map(RangeConf::canonicalize)
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.iter().any(|r| r.is_ipv4() != ranges[0].is_ipv4()) {
            return Err(RangeError::MixedFamilies);
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.overlaps(b) {
                    return Err(RangeError::Overlap(a.to_string(), b.to_string()));
                }
            }
        }
        Ok(RangeSet(ranges))
    }

    pub fn is_ipv4(&self) -> bool {
        self.0.first().is_some_and(Range::is_ipv4)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    /// How many addresses the set can hand out, saturating (an IPv6 /64 is plenty).
    pub fn capacity(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |sum, r| sum.saturating_add(r.capacity()))
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Range::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(subnet: &str) -> RangeConf {
        RangeConf {
            subnet: Some(subnet.to_string()),
            ..RangeConf::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn defaults_follow_the_reference() {
        let r = conf("192.0.2.0/24").canonicalize().expect("valid");
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("192.0.2.1"), ip("192.0.2.254"), ip("192.0.2.1"))
        );
        let r = conf("192.0.2.0/25").canonicalize().expect("valid");
        assert_eq!(r.end, ip("192.0.2.126"));
        let r = conf("2001:db8:1::/64").canonicalize().expect("valid");
        assert_eq!(r.start, ip("2001:db8:1::1"));
        assert_eq!(r.end, ip("2001:db8:1::ffff:ffff:ffff:ffff"));
        assert_eq!(r.capacity(), (1u128 << 64) - 1 - 1);
    }

    #[test]
    fn refuses_host_bits_small_networks_and_outside_bounds() {
        assert_eq!(
            conf("10.1.2.3/24")
                .canonicalize()
                .expect_err("invalid")
                .to_string(),
            "Network has host bits set. For a subnet mask of length 24 the network address is \
             10.1.2.0"
        );
        assert_eq!(
            conf("2001:db8:1::1/64")
                .canonicalize()
                .expect_err("invalid")
                .to_string(),
            "Network has host bits set. For a subnet mask of length 64 the network address is \
             2001:db8:1::"
        );
        assert_eq!(
            conf("10.9.0.0/31")
                .canonicalize()
                .expect_err("invalid")
                .to_string(),
            "Network 10.9.0.0/31 too small to allocate from"
        );
        assert!(conf("10.9.0.0/30").canonicalize().is_ok());
        let mut c = conf("10.1.2.0/24");
        c.range_start = Some("10.1.3.5".into());
        assert_eq!(
            c.canonicalize().expect_err("invalid").to_string(),
            "RangeStart 10.1.3.5 not in network 10.1.2.0/24"
        );
        let mut c = conf("10.1.2.0/24");
        c.range_end = Some("10.1.3.5".into());
        assert_eq!(
            c.canonicalize().expect_err("invalid").to_string(),
            "RangeEnd 10.1.3.5 not in network 10.1.2.0/24"
        );
        let mut c = conf("10.1.2.0/24");
        c.range_start = Some("10.1.2.50".into());
        c.range_end = Some("10.1.2.40".into());
        assert!(matches!(
            c.canonicalize(),
            Err(RangeError::StartOutside(..))
        ));
        assert!(matches!(
            conf("usePodCidr").canonicalize(),
            Err(RangeError::UsePodCidr(_))
        ));
        assert_eq!(
            conf("10.1.2.0").check_syntax(),
            Err(SyntaxError::Cidr("10.1.2.0".into()))
        );
        let mut c = conf("10.1.2.0/24");
        c.gateway = Some("10.1.2.x".into());
        assert_eq!(
            c.check_syntax().expect_err("bad gateway").to_string(),
            "invalid IP address: 10.1.2.x"
        );
        assert!(conf("usePodCidr").check_syntax().is_ok());
    }

    #[test]
    fn a_range_never_starts_after_its_end() {
        // Found by fuzzing: an end at the network address (with the default start), or an
        // IPv4 start at the broadcast address (with the default end), made a range whose
        // start was past its end, and `capacity` overflowed.
        let mut c = conf("2001:db8::/126");
        c.range_end = Some("2001:db8::".into());
        assert_eq!(
            c.canonicalize().expect_err("invalid").to_string(),
            "RangeEnd 2001:db8:: not in network 2001:db8::/126"
        );
        let mut c = conf("10.1.0.0/24");
        c.range_end = Some("10.1.0.0".into());
        assert!(matches!(c.canonicalize(), Err(RangeError::EndOutside(..))));
        let mut c = conf("10.1.0.0/24");
        c.range_start = Some("10.1.0.255".into());
        assert_eq!(
            c.canonicalize().expect_err("invalid").to_string(),
            "RangeStart 10.1.0.255 not in network 10.1.0.0/24"
        );
        // The edges themselves are fine.
        let mut c = conf("10.1.0.0/24");
        c.range_start = Some("10.1.0.254".into());
        let r = c.canonicalize().expect("valid");
        assert_eq!(
            (r.start, r.end, r.capacity()),
            (ip("10.1.0.254"), ip("10.1.0.254"), 1)
        );
        let mut c = conf("10.1.0.0/24");
        c.range_end = Some("10.1.0.1".into());
        let r = c.canonicalize().expect("valid");
        assert_eq!((r.start, r.end), (ip("10.1.0.1"), ip("10.1.0.1")));
    }

    #[test]
    fn sets_refuse_mixed_families_and_overlaps() {
        assert_eq!(RangeSet::canonicalize(&[]), Err(RangeError::Empty));
        assert_eq!(
            RangeSet::canonicalize(&[conf("10.0.0.0/24"), conf("2001:db8::/64")]),
            Err(RangeError::MixedFamilies)
        );
        assert_eq!(
            RangeSet::canonicalize(&[conf("10.0.0.0/24"), conf("10.0.0.0/25")])
                .expect_err("invalid")
                .to_string(),
            "subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.0.126 overlap"
        );
    }

    #[test]
    fn overlap_table() {
        let r = |s: &str, a: Option<&str>, b: Option<&str>| {
            RangeConf {
                subnet: Some(s.into()),
                range_start: a.map(String::from),
                range_end: b.map(String::from),
                gateway: None,
            }
            .canonicalize()
            .expect("valid")
        };
        let cases = [
            (
                r("10.0.0.0/24", None, None),
                r("10.0.1.0/24", None, None),
                false,
            ),
            (
                r("10.0.0.0/24", None, None),
                r("2001:db8::/64", None, None),
                false,
            ),
            (
                r("10.0.0.0/24", None, None),
                r("10.0.0.0/24", None, None),
                true,
            ),
            (
                r("10.0.0.0/20", None, None),
                r("10.0.1.0/24", None, None),
                true,
            ),
            (
                r("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.20")),
                r("10.0.0.0/24", Some("10.0.0.30"), Some("10.0.0.40")),
                false,
            ),
            (
                r("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.30")),
                r("10.0.0.0/24", Some("10.0.0.20"), Some("10.0.0.40")),
                true,
            ),
        ];
        for (a, b, expected) in cases {
            assert_eq!(a.overlaps(&b), expected, "{a} vs {b}");
            assert_eq!(b.overlaps(&a), expected, "{b} vs {a}");
        }
    }

    #[test]
    fn capacity_skips_the_gateway_only_when_inside() {
        let r = conf("10.0.0.0/29").canonicalize().expect("valid");
        assert_eq!(r.capacity(), 5); // .2 to .6
        let mut c = conf("10.0.0.0/29");
        c.range_start = Some("10.0.0.4".into());
        assert_eq!(c.canonicalize().expect("valid").capacity(), 3);
    }
}
