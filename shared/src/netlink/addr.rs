//! Interface addresses, IPv4 and IPv6.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::Handle;
use super::Scope;
use crate::error::Result;

/// An address configured on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    /// The address with its prefix length, as in `ip addr` (`10.0.0.5/24`, host bits kept).
    pub net: IpNetwork,
    pub scope: Scope,
    /// IPv6 duplicate address detection still running: the address cannot be bound yet.
    pub tentative: bool,
}

/// Optional behaviour of [`Handle::add_address_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressOptions {
    /// IPv6: skip duplicate address detection (`nodad`), so the address is usable at once.
    /// Right for addresses IPAM guarantees unique, such as a pod's.
    pub no_dad: bool,
    /// Do not add the prefix route the kernel would derive from the prefix length
    /// (`noprefixroute`), for callers that install their own routes.
    pub no_prefix_route: bool,
}

impl Handle {
    /// Adds `net` (address and prefix length) to link `index`. Fails with `EEXIST` when the
    /// link already has it.
    pub fn add_address(&mut self, index: u32, net: IpNetwork) -> Result<()> {
        self.add_address_with(index, net, AddressOptions::default())
    }

    /// [`Handle::add_address`] with [`AddressOptions`].
    pub fn add_address_with(
        &mut self,
        index: u32,
        net: IpNetwork,
        options: AddressOptions,
    ) -> Result<()> {
        let msg = add_message(index, net, options);
        let result = self.change(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        self.on_link(result, index, |link| format!("add address {net} to {link}"))
    }

    /// Removes `net` from link `index`; `EADDRNOTAVAIL` when it is not there.
    pub fn del_address(&mut self, index: u32, net: IpNetwork) -> Result<()> {
        let msg = address_message(index, net);
        let result = self.change(RouteNetlinkMessage::DelAddress(msg), 0);
        self.on_link(result, index, |link| {
            format!("delete address {net} from {link}")
        })
    }

    /// The addresses of link `index`, or of every link when `None`.
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<Address>> {
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .map_err(|f| f.into_error("list addresses".into()))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(msg) => address_from_message(&msg),
                _ => None,
            })
            .filter(|address| index.is_none_or(|i| address.index == i))
            .collect())
    }
}

/// The fields that identify an address to the kernel, for adding and deleting.
fn address_message(index: u32, net: IpNetwork) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = net.prefix();
    let ip = net.ip();
    match ip {
        IpAddr::V4(_) => {
            msg.header.family = AddressFamily::Inet;
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on
            // point-to-point links and the same address everywhere else.
            msg.attributes.push(AddressAttribute::Local(ip));
            msg.attributes.push(AddressAttribute::Address(ip));
        }
        IpAddr::V6(_) => {
            msg.header.family = AddressFamily::Inet6;
            msg.attributes.push(AddressAttribute::Address(ip));
        }
    }
    msg
}

fn add_message(index: u32, net: IpNetwork, options: AddressOptions) -> AddressMessage {
    let mut msg = address_message(index, net);
    if let IpNetwork::V4(v4) = net {
        if let Some(broadcast) = broadcast(v4) {
            msg.attributes.push(AddressAttribute::Broadcast(broadcast));
        }
    }
    let mut flags = AddressFlags::empty();
    if options.no_dad {
        flags |= AddressFlags::Nodad;
    }
    if options.no_prefix_route {
        flags |= AddressFlags::Noprefixroute;
    }
    if !flags.is_empty() {
        // IFA_FLAGS holds the full 32 bits; the header byte cannot carry NOPREFIXROUTE.
        msg.attributes.push(AddressAttribute::Flags(flags));
    }
    msg
}

/// The broadcast address `ip addr add ... brd +` would set; none for /31 and /32, where
/// every address is a host.
fn broadcast(net: Ipv4Network) -> Option<Ipv4Addr> {
    (net.prefix() < 31).then(|| net.broadcast())
}

fn address_from_message(msg: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    // The header byte holds the low flag bits; IFA_FLAGS, when sent, holds all of them.
    let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
    for attribute in &msg.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(full) => flags = *full,
            _ => {}
        }
    }
    // Our own address is IFA_LOCAL when present (IPv4), else IFA_ADDRESS (IPv6).
    let ip = local.or(address)?;
    let net = IpNetwork::new(ip, msg.header.prefix_len).ok()?;
    Some(Address {
        index: msg.header.index,
        net,
        scope: Scope::from(u8::from(msg.header.scope)),
        tentative: flags.contains(AddressFlags::Tentative),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn round_trip(msg: &AddressMessage) -> AddressMessage {
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        AddressMessage::parse(&bytes[..]).unwrap()
    }

    #[test]
    fn ipv4_add_sets_local_address_and_broadcast() {
        let net: IpNetwork = "10.1.2.3/24".parse().unwrap();
        let msg = round_trip(&add_message(5, net, AddressOptions::default()));
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.prefix_len, 24);
        assert_eq!(msg.header.index, 5);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(msg.attributes.contains(&AddressAttribute::Local(ip)));
        assert!(msg.attributes.contains(&AddressAttribute::Address(ip)));
        assert!(msg
            .attributes
            .contains(&AddressAttribute::Broadcast("10.1.2.255".parse().unwrap())));
        assert_eq!(address_from_message(&msg).unwrap().net, net);
    }

    #[test]
    fn ipv4_host_address_has_no_broadcast() {
        let msg = add_message(5, "10.1.2.3/32".parse().unwrap(), AddressOptions::default());
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Broadcast(_))));
    }

    #[test]
    fn ipv6_add_carries_address_and_flags() {
        let net: IpNetwork = "fd00::5/128".parse().unwrap();
        let options = AddressOptions {
            no_dad: true,
            no_prefix_route: true,
        };
        let msg = round_trip(&add_message(2, net, options));
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert_eq!(msg.header.prefix_len, 128);
        assert!(msg.attributes.contains(&AddressAttribute::Flags(
            AddressFlags::Nodad | AddressFlags::Noprefixroute
        )));
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Local(_))));
        let parsed = address_from_message(&msg).unwrap();
        assert_eq!(parsed.net, net);
        assert!(!parsed.tentative);
    }
}
