//! The backend-neutral description of what one container asks for: its address per family
//! and its port mappings. Both backends render rules from this and nothing else.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use sha2::{Digest, Sha512};

/// IPv4 or IPv6: each has its own iptables binary and nftables table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// The protocols a mapping may name; anything else is refused before a rule is written
/// (the reference passes unknown ones to `iptables -p` and fails half-way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Sctp,
    Tcp,
    Udp,
}

impl Protocol {
    pub fn parse(text: &str) -> Option<Protocol> {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One validated `portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// As given; `0.0.0.0` and `::` still select a family but match every address.
    pub host_ip: Option<IpAddr>,
}

impl Mapping {
    /// Whether this mapping has rules in `family` (no hostIP: in both).
    pub fn applies_to(&self, family: Family) -> bool {
        self.host_ip.is_none_or(|ip| Family::of(&ip) == family)
    }

    /// The destination address to match, if any: the unspecified address matches all.
    pub fn host_ip_match(&self) -> Option<IpAddr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }
}

/// The container as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub network: String,
    pub id: String,
    /// The container's address in one family, with the prefix length of its result entry.
    pub ip: IpNetwork,
}

impl Container {
    pub fn family(&self) -> Family {
        Family::of(&self.ip.ip())
    }
}

/// The per-container chain: `CNI-DN-` + the first 21 hex digits of
/// SHA-512(network name + container id), as the reference names it, so either plugin finds
/// the other's chains.
pub fn dnat_chain(network: &str, container_id: &str) -> String {
    format!("CNI-DN-{}", chain_hash(network, container_id))
}

/// The legacy per-container SNAT chain of old reference versions; DEL still removes it.
pub fn legacy_snat_chain(network: &str, container_id: &str) -> String {
    format!("CNI-SN-{}", chain_hash(network, container_id))
}

fn chain_hash(network: &str, container_id: &str) -> String {
    let digest = Sha512::new()
        .chain_update(network.as_bytes())
        .chain_update(container_id.as_bytes())
        .finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..21].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_match_the_reference_test_vectors() {
        let id = "icee6giejonei6sohng6ahngee7laquohquee9shiGo7fohferakah3Feiyoolu2pei7ciPhoh7shaoX6vai3vuf0ahfaeng8yohb9ceu0daez5hashee8ooYai5wa3y";
        assert_eq!(
            dnat_chain("testNetName", id),
            "CNI-DN-bfd599665540dd91d5d28"
        );
        assert_eq!(dnat_chain("test", id), "CNI-DN-67e92b96e692a494b6b85");
        assert_eq!(
            legacy_snat_chain("test", id),
            "CNI-SN-67e92b96e692a494b6b85"
        );
    }

    #[test]
    fn protocols_are_case_insensitive_and_closed() {
        assert_eq!(Protocol::parse("UDP"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse("sctp"), Some(Protocol::Sctp));
        assert_eq!(Protocol::parse("icmp"), None);
        assert_eq!(Protocol::parse(""), None);
    }
}
