//! Neighbour (ARP / NDP) entries.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::Handle;
use super::{format_mac, mac_from};
use crate::error::Result;

/// One neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    /// `None` while resolution is incomplete or failed.
    pub mac: Option<[u8; 6]>,
    /// A static entry (`nud permanent`) that never expires or gets re-probed.
    pub permanent: bool,
}

impl Handle {
    /// Sets the entry for `ip` on link `index` to `mac`, replacing whatever was there.
    /// `permanent` entries never expire (`nud permanent`); others start out reachable and
    /// age like learned ones.
    pub fn add_neighbour(
        &mut self,
        index: u32,
        ip: IpAddr,
        mac: [u8; 6],
        permanent: bool,
    ) -> Result<()> {
        let msg = add_message(index, ip, mac, permanent);
        let result = self.change(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        );
        self.on_link(result, index, |link| {
            format!("set neighbour {ip} lladdr {} on {link}", format_mac(&mac))
        })
    }

    /// Removes the entry for `ip` on link `index`; `ENOENT` when there is none.
    pub fn del_neighbour(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        let msg = key_message(index, ip);
        let result = self.change(RouteNetlinkMessage::DelNeighbour(msg), 0);
        self.on_link(result, index, |link| {
            format!("delete neighbour {ip} on {link}")
        })
    }

    /// The IPv4 and IPv6 neighbour entries of link `index`.
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        let replies = self
            .dump(RouteNetlinkMessage::GetNeighbour(
                NeighbourMessage::default(),
            ))
            .map_err(|f| f.into_error("list neighbours".into()))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(msg) => neighbour_from_message(&msg),
                _ => None,
            })
            .filter(|neighbour| neighbour.index == index)
            .collect())
    }
}

/// What identifies an entry: link, family and IP.
fn key_message(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.ifindex = index;
    let (family, address) = match ip {
        IpAddr::V4(v4) => (AddressFamily::Inet, NeighbourAddress::Inet(v4)),
        IpAddr::V6(v6) => (AddressFamily::Inet6, NeighbourAddress::Inet6(v6)),
    };
    msg.header.family = family;
    msg.attributes
        .push(NeighbourAttribute::Destination(address));
    msg
}

fn add_message(index: u32, ip: IpAddr, mac: [u8; 6], permanent: bool) -> NeighbourMessage {
    let mut msg = key_message(index, ip);
    msg.header.state = if permanent {
        NeighbourState::Permanent
    } else {
        NeighbourState::Reachable
    };
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    msg
}

fn neighbour_from_message(msg: &NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = None;
    for attribute in &msg.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = mac_from(bytes),
            _ => {}
        }
    }
    Some(Neighbour {
        index: msg.header.ifindex,
        ip: ip?,
        mac,
        permanent: msg.header.state == NeighbourState::Permanent,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn round_trip(msg: &NeighbourMessage) -> NeighbourMessage {
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        NeighbourMessage::parse(&bytes[..]).unwrap()
    }

    #[test]
    fn permanent_ipv4_entry_round_trips() {
        let ip: IpAddr = "169.254.1.1".parse().unwrap();
        let mac = [0xee; 6];
        let msg = round_trip(&add_message(4, ip, mac, true));
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.state, NeighbourState::Permanent);
        assert_eq!(
            neighbour_from_message(&msg),
            Some(Neighbour {
                index: 4,
                ip,
                mac: Some(mac),
                permanent: true
            })
        );
    }

    #[test]
    fn ipv6_delete_key_has_no_lladdr() {
        let msg = round_trip(&key_message(4, "fe80::1".parse().unwrap()));
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        let parsed = neighbour_from_message(&msg).unwrap();
        assert_eq!(parsed.mac, None);
        assert!(!parsed.permanent);
    }
}
