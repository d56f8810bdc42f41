//! The pod's Linux networking as Calico sets it up: a veth pair whose host end carries no
//! address, the fixed MAC `ee:ee:ee:ee:ee:ee` and proxy ARP; in the pod a /32 (/128) address
//! with routes via `169.254.1.1` (the host veth's IPv6 link-local address); on the host a
//! `/32` (`/128`) route per pod address to the host veth.
//!
//! This process runs in the host (node) network namespace: host-side work uses a netlink
//! socket and /proc/sys from here; pod-side work uses a socket opened inside the pod's
//! namespace, and pod sysctls are written from a thread that entered it.

use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::Duration;

use ipnetwork::IpNetwork;
use shared::netlink::{Handle, Link, Route, RouteFilter, Scope, VethOptions};
use shared::netns::NetNs;
use shared::sysctl;

use crate::CalicoError;

/// The host veth's MAC: every pod sees the same gateway MAC.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The pod's IPv4 next hop; proxy ARP on the host veth answers for it.
pub const V4_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// How long to wait for the kernel to give the host veth its IPv6 link-local address.
const LINK_LOCAL_TRIES: u32 = 40;
const LINK_LOCAL_WAIT: Duration = Duration::from_millis(5);

/// What to build for one pod.
pub struct Plan<'a> {
    pub host_veth: &'a str,
    pub ifname: &'a str,
    pub netns: &'a NetNs,
    pub mtu: Option<u32>,
    pub num_queues: u32,
    /// The pod's addresses, /32 and /128.
    pub addresses: Vec<IpNetwork>,
    /// Destinations routed out of the pod (default: 0.0.0.0/0 and ::/0), of the families the
    /// pod has addresses in.
    pub routes: Vec<IpNetwork>,
    pub allow_ip_forwarding: bool,
    /// The pod interface's MAC (the pod's `hwAddr` annotation); the kernel's random one
    /// when `None`.
    pub container_mac: Option<[u8; 6]>,
}

impl Plan<'_> {
    fn has_v4(&self) -> bool {
        self.addresses.iter().any(IpNetwork::is_ipv4)
    }

    fn has_v6(&self) -> bool {
        self.addresses.iter().any(IpNetwork::is_ipv6)
    }
}

/// What ADD reports about the pod's interface.
pub struct Wired {
    pub container_mac: String,
}

fn bool_flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// Builds the pod's networking. On error, whatever was created is left for the caller's
/// rollback ([`remove_host_veth`] removes all of it: the pair, and the host routes with it).
pub fn setup(plan: &Plan) -> Result<Wired, CalicoError> {
    let mut host = Handle::new()?;

    // A leftover of an earlier ADD, or of a pod whose DEL never came.
    if host.delete_link_by_name(plan.host_veth)? {
        log::info!("removed stale host interface {}", plan.host_veth);
    }
    host.create_veth(
        plan.host_veth,
        plan.ifname,
        Some(plan.netns),
        &VethOptions {
            mtu: plan.mtu,
            mac: Some(HOST_MAC),
            // Set as the pair is created: no window in which the pod's interface is up
            // with another MAC.
            peer_mac: plan.container_mac,
            num_queues: Some(plan.num_queues),
        },
    )?;
    let host_link = find(&mut host, plan.host_veth)?;

    // One trip into the pod's namespace: its sysctls (no IPv6 duplicate address detection
    // on the pod side, set before the link goes up; IPv6 enabled; forwarding as configured)
    // and a netlink socket that stays bound there for the rest.
    let (ifname, has_v4, has_v6) = (plan.ifname, plan.has_v4(), plan.has_v6());
    let forwarding = bool_flag(plan.allow_ip_forwarding);
    let mut pod = plan.netns.run(|| -> Result<Handle, CalicoError> {
        if has_v6 {
            sysctl::set(&["net", "ipv6", "conf", ifname, "accept_dad"], "0")?;
            for which in ["all", "default", "lo"] {
                sysctl::set(&["net", "ipv6", "conf", which, "disable_ipv6"], "0")?;
            }
            sysctl::set(&["net", "ipv6", "conf", "all", "forwarding"], forwarding)?;
        }
        if has_v4 {
            sysctl::set(&["net", "ipv4", "ip_forward"], forwarding)?;
        }
        Ok(Handle::new()?)
    })??;
    let pod_link = find(&mut pod, plan.ifname)?;
    host_sysctls(plan.host_veth, has_v4, has_v6)?;

    host.set_up(host_link.index)?;
    pod.set_up(pod_link.index)?;
    let container_mac = pod_link
        .mac
        .map(|m| shared::netlink::format_mac(&m))
        .unwrap_or_default();

    if has_v4 {
        pod.add_route(&Route::on_link(
            IpNetwork::V4(V4_GATEWAY.into()),
            pod_link.index,
        ))?;
        for dst in plan.routes.iter().filter(|d| d.is_ipv4()) {
            pod.add_route(&Route::via(
                *dst,
                IpAddr::V4(V4_GATEWAY),
                Some(pod_link.index),
            ))?;
        }
    }
    if has_v6 {
        let gateway = host_link_local(&mut host, &host_link)?;
        for dst in plan.routes.iter().filter(|d| d.is_ipv6()) {
            pod.add_route(&Route::via(*dst, gateway, Some(pod_link.index)))?;
        }
    }
    for address in &plan.addresses {
        pod.add_address(pod_link.index, *address)?;
    }
    for address in &plan.addresses {
        add_host_route(&mut host, &host_link, address.ip())?;
    }
    Ok(Wired { container_mac })
}

fn find(handle: &mut Handle, name: &str) -> Result<Link, CalicoError> {
    handle
        .link_by_name(name)?
        .ok_or_else(|| CalicoError::Dataplane(format!("interface {name} vanished after creation")))
}

/// The host veth's sysctls, as Felix expects them.
fn host_sysctls(veth: &str, v4: bool, v6: bool) -> Result<(), CalicoError> {
    if v4 {
        sysctl::set(&["net", "ipv4", "conf", veth, "route_localnet"], "1")?;
        // Answer ARP at once: the pod's first packet should not wait for proxy_delay.
        if let Err(e) = sysctl::set(&["net", "ipv4", "neigh", veth, "proxy_delay"], "0") {
            log::warn!("{e}");
        }
        sysctl::set(&["net", "ipv4", "conf", veth, "proxy_arp"], "1")?;
        sysctl::set(&["net", "ipv4", "conf", veth, "forwarding"], "1")?;
    }
    if v6 {
        sysctl::set(&["net", "ipv6", "conf", veth, "accept_dad"], "0")?;
        sysctl::set(&["net", "ipv6", "conf", veth, "disable_ipv6"], "0")?;
        sysctl::set(&["net", "ipv6", "conf", veth, "proxy_ndp"], "1")?;
        sysctl::set(&["net", "ipv6", "conf", veth, "forwarding"], "1")?;
    }
    // The host end must not autoconfigure from anything the pod sends.
    if let Err(e) = sysctl::set(&["net", "ipv6", "conf", veth, "accept_ra"], "0") {
        log::warn!("{e}");
    }
    Ok(())
}

/// The pod's IPv6 next hop: the host veth's link-local address, which the kernel adds
/// shortly after the link comes up (derived from ee:ee:ee:ee:ee:ee it is normally
/// fe80::ecee:eeff:feee:eeee).
fn host_link_local(host: &mut Handle, link: &Link) -> Result<IpAddr, CalicoError> {
    for _ in 0..LINK_LOCAL_TRIES {
        let found = host
            .addresses(Some(link.index))?
            .into_iter()
            .find(|a| matches!(a.net, IpNetwork::V6(n) if n.ip().is_unicast_link_local()));
        if let Some(a) = found {
            return Ok(a.net.ip());
        }
        thread::sleep(LINK_LOCAL_WAIT);
    }
    Err(CalicoError::Dataplane(format!(
        "failed to get IPv6 addresses for host side of the veth pair: {} has no link-local \
         address; check that IPv6 is enabled on the node (net.ipv6.conf.all.disable_ipv6)",
        link.name
    )))
}

fn host_route_for(ip: IpAddr, host_index: u32) -> Route {
    let net = match ip {
        IpAddr::V4(v4) => IpNetwork::V4(v4.into()),
        IpAddr::V6(v6) => IpNetwork::V6(v6.into()),
    };
    Route::on_link(net, host_index)
}

/// `<ip>/32 dev <veth> scope link`. Felix may have added the same route already: that is
/// success. The same destination on another interface is a conflict (usually an address
/// handed out twice) and is never taken over.
fn add_host_route(host: &mut Handle, link: &Link, ip: IpAddr) -> Result<(), CalicoError> {
    let route = host_route_for(ip, link.index);
    match host.add_route(&route) {
        Ok(()) => Ok(()),
        Err(shared::Error::Netlink { source, .. })
            if source.raw_os_error() == Some(libc::EEXIST) =>
        {
            let existing = host.routes(&RouteFilter {
                dst: Some(route.dst),
                ..RouteFilter::default()
            })?;
            if existing
                .iter()
                .any(|r| r.oif == Some(link.index) && r.scope == route.scope)
            {
                return Ok(());
            }
            let other = existing
                .iter()
                .filter_map(|r| r.oif)
                .find(|oif| *oif != link.index);
            let other_name = match other {
                Some(index) => host
                    .link_by_index(index)?
                    .map(|l| l.name)
                    .unwrap_or_else(|| format!("#{index}")),
                None => "unknown".to_string(),
            };
            Err(CalicoError::RouteConflict {
                dst: route.dst,
                veth: link.name.clone(),
                index: link.index,
                other: other_name,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes the host end of a pair (the pod end and the host routes go with it); `false`
/// when there was none.
pub fn remove_host_veth(name: &str) -> Result<bool, CalicoError> {
    Ok(Handle::new()?.delete_link_by_name(name)?)
}

/// DEL: removes the pod's interface (its host-side peer goes with it), tolerating a
/// namespace or interface that is gone; true when there was one to remove.
pub fn teardown(netns: Option<&std::path::Path>, ifname: &str) -> Result<bool, CalicoError> {
    let Some(ns) = NetNs::open_if_exists(netns)? else {
        return Ok(false);
    };
    let mut pod = Handle::in_netns(&ns)?;
    Ok(pod.delete_link_by_name(ifname)?)
}

/// CHECK: everything [`setup`] made is there and as it made it.
pub fn check(plan: &Plan) -> Result<(), CalicoError> {
    let mut host = Handle::new()?;
    let mut pod = Handle::in_netns(plan.netns)?;
    let mismatch = |what: String| Err(CalicoError::CheckFailed(what));

    let Some(host_link) = host.link_by_name(plan.host_veth)? else {
        return mismatch(format!("host interface {} is missing", plan.host_veth));
    };
    let Some(pod_link) = pod.link_by_name(plan.ifname)? else {
        return mismatch(format!("pod interface {} is missing", plan.ifname));
    };
    if host_link.mac != Some(HOST_MAC) {
        return mismatch(format!(
            "{} has MAC {}, not ee:ee:ee:ee:ee:ee",
            plan.host_veth,
            host_link
                .mac
                .map(|m| shared::netlink::format_mac(&m))
                .unwrap_or_default()
        ));
    }
    for (link, side) in [(&host_link, "host"), (&pod_link, "pod")] {
        if !link.up {
            return mismatch(format!("{side} interface {} is down", link.name));
        }
        if let Some(mtu) = plan.mtu {
            if link.mtu != mtu {
                return mismatch(format!(
                    "{side} interface {} has MTU {}, not {mtu}",
                    link.name, link.mtu
                ));
            }
        }
    }
    let present: Vec<IpNetwork> = pod
        .addresses(Some(pod_link.index))?
        .into_iter()
        .map(|a| a.net)
        .collect();
    for address in &plan.addresses {
        if !present.contains(address) {
            return mismatch(format!("{} lacks address {address}", plan.ifname));
        }
        let route = host_route_for(address.ip(), host_link.index);
        let host_routes = host.routes(&RouteFilter {
            dst: Some(route.dst),
            oif: Some(host_link.index),
            ..RouteFilter::default()
        })?;
        if host_routes.is_empty() {
            return mismatch(format!(
                "host route {} dev {} is missing",
                route.dst, plan.host_veth
            ));
        }
    }
    let pod_routes = pod.routes(&RouteFilter {
        oif: Some(pod_link.index),
        ..RouteFilter::default()
    })?;
    for dst in &plan.routes {
        let wanted_family = if dst.is_ipv4() {
            plan.has_v4()
        } else {
            plan.has_v6()
        };
        if wanted_family
            && !pod_routes
                .iter()
                .any(|r| r.dst == *dst && r.gateway.is_some())
        {
            return mismatch(format!("pod route to {dst} is missing"));
        }
    }
    if plan.has_v4()
        && !pod_routes
            .iter()
            .any(|r| r.dst == IpNetwork::V4(V4_GATEWAY.into()) && r.scope == Scope::Link)
    {
        return mismatch(format!("pod route to {V4_GATEWAY} scope link is missing"));
    }
    let veth = plan.host_veth;
    let mut expected: Vec<(Vec<&str>, &str)> = Vec::new();
    if plan.has_v4() {
        expected.push((vec!["net", "ipv4", "conf", veth, "proxy_arp"], "1"));
        expected.push((vec!["net", "ipv4", "conf", veth, "forwarding"], "1"));
        expected.push((vec!["net", "ipv4", "conf", veth, "route_localnet"], "1"));
    }
    if plan.has_v6() {
        expected.push((vec!["net", "ipv6", "conf", veth, "proxy_ndp"], "1"));
        expected.push((vec!["net", "ipv6", "conf", veth, "forwarding"], "1"));
    }
    for (key, value) in expected {
        let got = sysctl::get(&key)?;
        if got.trim() != value {
            return mismatch(format!("sysctl {} is {got}, not {value}", key.join(".")));
        }
    }
    Ok(())
}
