//! A small synchronous route-netlink client: links (veths), addresses, routes, neighbours.
//!
//! A plugin invocation is a short-lived process making a dozen requests, so this is plain
//! blocking socket I/O over `netlink-sys`, with messages from `netlink-packet-route`; no async
//! runtime. Every change is sent with `NLM_F_ACK` and waits for the kernel's answer; dumps read
//! until `NLMSG_DONE`. A kernel refusal becomes [`Error::Netlink`](crate::Error::Netlink) whose
//! `op` says what we tried (naming the interface or address) and whose `source` carries the
//! errno, so callers can test `source.raw_os_error() == Some(libc::EEXIST)` and the like.
//!
//! A [`Handle`] works on the namespace its socket was opened in: [`Handle::new`] for the
//! caller's, [`Handle::in_netns`] for another one (the socket is opened on a short-lived
//! thread inside it, and stays bound to it).

mod addr;
mod link;
mod neigh;
mod route;
mod socket;
mod tc;

use std::net::IpAddr;

pub use addr::{Address, AddressOptions};
pub use link::{Link, VethOptions};
pub use neigh::Neighbour;
pub use route::{
    default_destination, protocol as route_protocol, Route, RouteFilter, RT_TABLE_MAIN,
};
pub use socket::Handle;
pub use tc::{tbf_options, tick_in_usec, Qdisc, Tbf};

/// IPv4 or IPv6, for filtering dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

/// How far an address or route reaches (`RT_SCOPE_*`), shared by addresses and routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// Anywhere: routes via a gateway, ordinary addresses.
    #[default]
    Universe,
    Site,
    /// Directly attached: on-link routes such as `169.254.1.1 dev eth0 scope link`.
    Link,
    /// This host only.
    Host,
    Nowhere,
    Other(u8),
}

impl From<u8> for Scope {
    fn from(raw: u8) -> Scope {
        match raw {
            0 => Scope::Universe,
            200 => Scope::Site,
            253 => Scope::Link,
            254 => Scope::Host,
            255 => Scope::Nowhere,
            other => Scope::Other(other),
        }
    }
}

impl From<Scope> for u8 {
    fn from(scope: Scope) -> u8 {
        match scope {
            Scope::Universe => 0,
            Scope::Site => 200,
            Scope::Link => 253,
            Scope::Host => 254,
            Scope::Nowhere => 255,
            Scope::Other(raw) => raw,
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`, for messages.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A 6-byte hardware address from an attribute, if it is one (tunnels and `lo` carry others).
fn mac_from(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;

    #[test]
    fn scope_round_trips_through_the_kernel_numbers() {
        for raw in [0u8, 200, 253, 254, 255, 17] {
            assert_eq!(u8::from(Scope::from(raw)), raw);
        }
        assert_eq!(Scope::from(253), Scope::Link);
    }

    #[test]
    fn macs_format_and_parse() {
        assert_eq!(
            format_mac(&[0xee, 0xee, 0xee, 0xee, 0xee, 0x01]),
            "ee:ee:ee:ee:ee:01"
        );
        assert_eq!(mac_from(&[1, 2, 3, 4, 5, 6]), Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(mac_from(&[0; 4]), None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod root_tests;
