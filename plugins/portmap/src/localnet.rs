//! `route_localnet` on the interface that leads to the container, so that a connection to
//! `127.0.0.1:<hostPort>`, DNATed to the container, may leave the host with its loopback
//! source (masqueraded on the way out). The reference asks `ip route get`; a longest-prefix
//! match over the main table answers the same for the routes CNI plugins install.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use shared::netlink::{Handle, IpFamily, RouteFilter};

use crate::PortmapError;

/// The name of the interface the main table routes `ip` through.
pub fn outgoing_interface(handle: &mut Handle, ip: IpAddr) -> Result<String, PortmapError> {
    let routes = handle.routes(&RouteFilter {
        family: Some(IpFamily::of(&ip)),
        ..RouteFilter::default()
    })?;
    let best = routes
        .iter()
        .filter(|r| r.oif.is_some() && contains(&r.dst, ip))
        .max_by_key(|r| (r.dst.prefix(), std::cmp::Reverse(r.priority.unwrap_or(0))));
    let oif = best
        .and_then(|r| r.oif)
        .ok_or_else(|| PortmapError::Localnet(format!("no route to {ip}")))?;
    let link = handle
        .link_by_index(oif)?
        .ok_or_else(|| PortmapError::Localnet(format!("no interface with index {oif}")))?;
    Ok(link.name)
}

fn contains(net: &IpNetwork, ip: IpAddr) -> bool {
    net.contains(ip)
}

/// Sets `net.ipv4.conf.<ifname>.route_localnet = 1` (read-compare-write).
pub fn enable(ifname: &str) -> Result<(), PortmapError> {
    shared::sysctl::set(&["net", "ipv4", "conf", ifname, "route_localnet"], "1")
        .map(|_| ())
        .map_err(|e| PortmapError::Localnet(e.to_string()))
}
