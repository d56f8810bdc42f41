//! Unicast routes, IPv4 and IPv6.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::{Failure, Handle};
use super::{IpFamily, Scope};
use crate::error::Result;

/// The main routing table, where routes go unless told otherwise.
pub const RT_TABLE_MAIN: u32 = 254;

/// Who installed a route (`RTPROT_*`), as `ip route` shows it (`proto boot`).
pub mod protocol {
    /// Not said; the kernel stores it as given.
    pub const UNSPEC: u8 = 0;
    /// Derived by the kernel from an address (the prefix route of `10.0.0.1/24`).
    pub const KERNEL: u8 = 2;
    /// Added by configuration at run time: what `ip route add` uses, and our default.
    pub const BOOT: u8 = 3;
    pub const STATIC: u8 = 4;
}

/// A unicast route.
///
/// Build one with [`Route::on_link`] or [`Route::via`] and adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route. Host bits must be zero.
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Output interface index; required with an IPv6 link-local gateway.
    pub oif: Option<u32>,
    pub scope: Scope,
    pub table: u32,
    /// Metric (`RTA_PRIORITY`); `None` is 0 for IPv4 and 1024 for IPv6, as the kernel picks.
    pub priority: Option<u32>,
    /// See [`protocol`].
    pub protocol: u8,
}

impl Route {
    /// A directly attached destination: `169.254.1.1/32 dev eth0 scope link`, or a pod's
    /// host route `10.0.0.5/32 dev caliXXX scope link`.
    pub fn on_link(dst: IpNetwork, oif: u32) -> Route {
        Route {
            dst,
            gateway: None,
            oif: Some(oif),
            // IPv6 has no route scopes; the kernel reports universe whatever we send.
            scope: match dst {
                IpNetwork::V4(_) => Scope::Link,
                IpNetwork::V6(_) => Scope::Universe,
            },
            table: RT_TABLE_MAIN,
            priority: None,
            protocol: protocol::BOOT,
        }
    }

    /// A destination behind `gateway`, e.g. `default via 169.254.1.1 dev eth0`.
    pub fn via(dst: IpNetwork, gateway: IpAddr, oif: Option<u32>) -> Route {
        Route {
            dst,
            gateway: Some(gateway),
            oif,
            scope: Scope::Universe,
            table: RT_TABLE_MAIN,
            priority: None,
            protocol: protocol::BOOT,
        }
    }

    /// The default route of `gateway`'s family.
    pub fn default_via(gateway: IpAddr, oif: Option<u32>) -> Route {
        Route::via(default_destination(IpFamily::of(&gateway)), gateway, oif)
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.dst.ip())
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dev = self.oif.map(|oif| format!("dev #{oif}"));
        f.write_str(&describe(self, dev))
    }
}

/// `10.0.0.0/24 via 10.0.0.1 <dev> table 100 metric 5`, with the device as the caller can
/// best name it.
fn describe(route: &Route, dev: Option<String>) -> String {
    let mut text = route.dst.to_string();
    if let Some(gateway) = route.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    if let Some(dev) = dev {
        text.push_str(&format!(" {dev}"));
    }
    if route.table != RT_TABLE_MAIN {
        text.push_str(&format!(" table {}", route.table));
    }
    if let Some(priority) = route.priority {
        text.push_str(&format!(" metric {priority}"));
    }
    text
}

/// Which routes [`Handle::routes`] returns; the default is every unicast route of the main
/// table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFilter {
    pub family: Option<IpFamily>,
    pub oif: Option<u32>,
    pub dst: Option<IpNetwork>,
    pub table: u32,
}

impl Default for RouteFilter {
    fn default() -> RouteFilter {
        RouteFilter {
            family: None,
            oif: None,
            dst: None,
            table: RT_TABLE_MAIN,
        }
    }
}

impl RouteFilter {
    fn accepts(&self, route: &Route) -> bool {
        self.family.is_none_or(|family| route.family() == family)
            && self.oif.is_none_or(|oif| route.oif == Some(oif))
            && self.dst.is_none_or(|dst| route.dst == dst)
            && route.table == self.table
    }
}

impl Handle {
    /// Adds `route`; `EEXIST` when the same destination and metric is already there.
    pub fn add_route(&mut self, route: &Route) -> Result<()> {
        let msg = route_message(route);
        let result = self.change(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        self.on_route(result, "add", route)
    }

    /// Adds `route`, replacing one with the same destination and metric (`ip route replace`).
    pub fn replace_route(&mut self, route: &Route) -> Result<()> {
        let msg = route_message(route);
        let result = self.change(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        );
        self.on_route(result, "replace", route)
    }

    /// Deletes the route matching `route`'s destination and table, and its gateway, oif and
    /// metric where given; `ESRCH` when none matches. Scope and protocol are not compared, so
    /// a route read back from [`Handle::routes`] and one built by hand delete alike.
    pub fn del_route(&mut self, route: &Route) -> Result<()> {
        let mut msg = route_message(route);
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        let result = self.change(RouteNetlinkMessage::DelRoute(msg), 0);
        self.on_route(result, "delete", route)
    }

    /// The unicast routes that pass `filter`.
    pub fn routes(&mut self, filter: &RouteFilter) -> Result<Vec<Route>> {
        let mut request = RouteMessage::default();
        request.header.address_family = match filter.family {
            Some(family) => address_family(family),
            None => AddressFamily::Unspec,
        };
        let replies = self
            .dump(RouteNetlinkMessage::GetRoute(request))
            .map_err(|f| f.into_error("list routes".into()))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(msg) => route_from_message(&msg),
                _ => None,
            })
            .filter(|route| filter.accepts(route))
            .collect())
    }

    fn on_route<T>(
        &mut self,
        result: std::result::Result<T, Failure>,
        verb: &str,
        route: &Route,
    ) -> Result<T> {
        result.map_err(|f| {
            let dev = route.oif.map(|oif| format!("dev {}", self.name_link(oif)));
            f.into_error(format!("{verb} route {}", describe(route, dev)))
        })
    }
}

// Checked at compile time: a /0 is valid for either family.
const DEFAULT_V4: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(net) => net,
    None => panic!("0.0.0.0/0"),
};
const DEFAULT_V6: Ipv6Network = match Ipv6Network::new_checked(Ipv6Addr::UNSPECIFIED, 0) {
    Some(net) => net,
    None => panic!("::/0"),
};

/// `0.0.0.0/0` or `::/0`.
pub fn default_destination(family: IpFamily) -> IpNetwork {
    match family {
        IpFamily::V4 => IpNetwork::V4(DEFAULT_V4),
        IpFamily::V6 => IpNetwork::V6(DEFAULT_V6),
    }
}

fn address_family(family: IpFamily) -> AddressFamily {
    match family {
        IpFamily::V4 => AddressFamily::Inet,
        IpFamily::V6 => AddressFamily::Inet6,
    }
}

fn route_message(route: &Route) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = address_family(route.family());
    msg.header.destination_prefix_length = route.dst.prefix();
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = RouteScope::from(u8::from(route.scope));
    msg.header.protocol = RouteProtocol::from(route.protocol);
    // The header byte holds tables up to 255; RTA_TABLE holds any, and wins when present.
    msg.header.table = u8::try_from(route.table).unwrap_or(0);
    msg.attributes.push(RouteAttribute::Table(route.table));
    if route.dst.prefix() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                route.dst.ip(),
            )));
    }
    if let Some(gateway) = route.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(priority) = route.priority {
        msg.attributes.push(RouteAttribute::Priority(priority));
    }
    msg
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// A unicast IPv4/IPv6 route from a dump; `None` for everything else (local, broadcast,
/// multicast, MPLS...).
fn route_from_message(msg: &RouteMessage) -> Option<Route> {
    let family = match msg.header.address_family {
        AddressFamily::Inet => IpFamily::V4,
        AddressFamily::Inet6 => IpFamily::V6,
        _ => return None,
    };
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut dst_ip = None;
    let mut route = Route {
        dst: default_destination(family),
        gateway: None,
        oif: None,
        scope: Scope::from(u8::from(msg.header.scope)),
        table: u32::from(msg.header.table),
        priority: None,
        protocol: u8::from(msg.header.protocol),
    };
    for attribute in &msg.attributes {
        match attribute {
            RouteAttribute::Destination(address) => dst_ip = ip_of(address),
            RouteAttribute::Gateway(address) => route.gateway = ip_of(address),
            RouteAttribute::Oif(oif) => route.oif = Some(*oif),
            RouteAttribute::Priority(priority) => route.priority = Some(*priority),
            RouteAttribute::Table(table) => route.table = *table,
            _ => {}
        }
    }
    if let Some(ip) = dst_ip {
        route.dst = IpNetwork::new(ip, msg.header.destination_prefix_length).ok()?;
    }
    Some(route)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn round_trip(route: &Route) -> Route {
        let msg = route_message(route);
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        let parsed = RouteMessage::parse(&bytes[..]).unwrap();
        route_from_message(&parsed).unwrap()
    }

    #[test]
    fn on_link_ipv4_route_has_link_scope_and_no_gateway() {
        let route = Route::on_link("169.254.1.1/32".parse().unwrap(), 3);
        let msg = route_message(&route);
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(msg.header.destination_prefix_length, 32);
        assert_eq!(msg.header.table, 254);
        assert!(msg.attributes.contains(&RouteAttribute::Oif(3)));
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));
        assert_eq!(round_trip(&route), route);
    }

    #[test]
    fn default_route_has_no_destination_attribute() {
        let route = Route::default_via("169.254.1.1".parse().unwrap(), Some(3));
        let msg = route_message(&route);
        assert_eq!(msg.header.destination_prefix_length, 0);
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));
        let back = round_trip(&route);
        assert_eq!(back.dst, "0.0.0.0/0".parse::<IpNetwork>().unwrap());
        assert_eq!(back, route);
    }

    #[test]
    fn ipv6_default_via_link_local_keeps_oif_and_metric() {
        let mut route = Route::default_via("fe80::1".parse().unwrap(), Some(7));
        route.priority = Some(100);
        let msg = route_message(&route);
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert!(msg.attributes.contains(&RouteAttribute::Priority(100)));
        assert_eq!(round_trip(&route), route);
        assert_eq!(route.to_string(), "::/0 via fe80::1 dev #7 metric 100");
    }

    #[test]
    fn large_table_ids_travel_in_the_attribute() {
        let mut route = Route::on_link("10.0.0.5/32".parse().unwrap(), 2);
        route.table = 1000;
        let msg = route_message(&route);
        assert_eq!(msg.header.table, 0);
        assert!(msg.attributes.contains(&RouteAttribute::Table(1000)));
        assert_eq!(round_trip(&route).table, 1000);
    }

    #[test]
    fn non_unicast_routes_are_not_listed() {
        let mut msg = route_message(&Route::on_link("10.0.0.0/8".parse().unwrap(), 1));
        msg.header.kind = RouteType::Local;
        assert_eq!(route_from_message(&msg), None);
    }

    #[test]
    fn filter_matches_family_oif_destination_and_table() {
        let route = Route::on_link("10.0.0.5/32".parse().unwrap(), 2);
        assert!(RouteFilter::default().accepts(&route));
        let v6 = RouteFilter {
            family: Some(IpFamily::V6),
            ..RouteFilter::default()
        };
        assert!(!v6.accepts(&route));
        let other_if = RouteFilter {
            oif: Some(3),
            ..RouteFilter::default()
        };
        assert!(!other_if.accepts(&route));
        let other_table = RouteFilter {
            table: 100,
            ..RouteFilter::default()
        };
        assert!(!other_table.accepts(&route));
    }
}
