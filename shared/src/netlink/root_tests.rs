//! Root tests: every operation for real, each test in network namespaces of its own.
//!
//! The namespaces are anonymous (`NetNs::create`): nothing names them on the file system, and
//! they vanish when the test's handles drop, on every path including a failed assertion. The
//! machine's own network is only ever looked at, never changed.

use std::net::IpAddr;
use std::path::Path;

use ipnetwork::IpNetwork;

use super::*;
use crate::error::Error;
use crate::netns::NetNs;

fn errno(err: &Error) -> Option<i32> {
    match err {
        Error::Netlink { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

fn net(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A namespace with a veth pair `a`/`b` inside, both up.
fn namespace_with_veth() -> (NetNs, Handle, Link, Link) {
    let ns = NetNs::create().unwrap();
    let mut handle = Handle::in_netns(&ns).unwrap();
    handle
        .create_veth("a", "b", None, &VethOptions::default())
        .unwrap();
    let a = handle.link_by_name("a").unwrap().unwrap();
    let b = handle.link_by_name("b").unwrap().unwrap();
    handle.set_up(a.index).unwrap();
    handle.set_up(b.index).unwrap();
    (ns, handle, a, b)
}

#[test]
fn a_veth_made_inside_is_invisible_outside() {
    let name = format!("shr{}", std::process::id() % 1_000_000);
    let ns = NetNs::create().unwrap();
    ns.run(|| {
        let mut inside = Handle::new().unwrap();
        inside
            .create_veth(&name, "peer", None, &VethOptions::default())
            .unwrap();
    })
    .unwrap();

    let mut inside = Handle::in_netns(&ns).unwrap();
    assert!(inside.link_by_name(&name).unwrap().is_some());
    let names: Vec<_> = inside
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert!(names.contains(&"lo".to_string()), "{names:?}");
    assert!(names.contains(&name), "{names:?}");

    let mut host = Handle::new().unwrap();
    assert_eq!(host.link_by_name(&name).unwrap(), None);
}

#[test]
fn veth_peer_is_created_directly_in_another_namespace() {
    let container = NetNs::create().unwrap();
    let host_ns = NetNs::create().unwrap();
    let mut container_nl = Handle::in_netns(&container).unwrap();
    let mut host_nl = Handle::in_netns(&host_ns).unwrap();
    let options = VethOptions {
        mtu: Some(1400),
        mac: Some([0x02, 0, 0, 0, 0, 0x0a]),
        peer_mac: Some([0xee; 6]),
        num_queues: Some(2),
    };
    container_nl
        .create_veth("eth0", "cali0123456789a", Some(&host_ns), &options)
        .unwrap();

    let eth0 = container_nl.link_by_name("eth0").unwrap().unwrap();
    let cali = host_nl.link_by_name("cali0123456789a").unwrap().unwrap();
    assert_eq!(container_nl.link_by_name("cali0123456789a").unwrap(), None);
    assert_eq!(host_nl.link_by_name("eth0").unwrap(), None);

    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert_eq!(cali.kind.as_deref(), Some("veth"));
    assert_eq!((eth0.mtu, cali.mtu), (1400, 1400));
    assert_eq!(eth0.mac, options.mac);
    assert_eq!(cali.mac, options.peer_mac);
    assert_eq!(eth0.link_index, Some(cali.index));
    assert_eq!(cali.link_index, Some(eth0.index));
    assert!(
        eth0.link_netnsid.is_some(),
        "the peer lives in another namespace"
    );
    assert_eq!(
        container_nl.link_by_index(eth0.index).unwrap().as_ref(),
        Some(&eth0)
    );

    // A taken name on either side is EEXIST, and nothing is left half-made.
    let err = container_nl
        .create_veth("eth0", "other", Some(&host_ns), &VethOptions::default())
        .unwrap_err();
    assert_eq!(errno(&err), Some(libc::EEXIST), "{err}");
    let err = container_nl
        .create_veth("eth1", "cali0123456789a", Some(&host_ns), &options)
        .unwrap_err();
    assert_eq!(errno(&err), Some(libc::EEXIST), "{err}");
    assert_eq!(container_nl.link_by_name("eth1").unwrap(), None);

    // Deleting one end removes the pair in both namespaces.
    container_nl.delete_link(eth0.index).unwrap();
    assert_eq!(host_nl.link_by_name("cali0123456789a").unwrap(), None);
}

#[test]
fn links_go_up_down_get_renamed_changed_and_deleted() {
    let ns = NetNs::create().unwrap();
    let mut nl = Handle::in_netns(&ns).unwrap();
    nl.create_veth("one", "two", None, &VethOptions::default())
        .unwrap();
    let one = nl.link_by_name("one").unwrap().unwrap();
    assert!(!one.up);

    nl.set_up(one.index).unwrap();
    assert!(nl.link_by_index(one.index).unwrap().unwrap().up);

    // Refusals name the link and carry the kernel's own reason.
    let err = nl.set_mtu(one.index, 70_000).unwrap_err();
    assert_eq!(errno(&err), Some(libc::EINVAL), "{err}");
    let text = err.to_string();
    assert!(text.contains("link \"one\" (index"), "{text}");
    assert!(text.contains("mtu"), "{text}");

    nl.set_down(one.index).unwrap();
    assert!(!nl.link_by_index(one.index).unwrap().unwrap().up);
    nl.set_name(one.index, "uno").unwrap();
    assert_eq!(nl.link_by_name("one").unwrap(), None);
    let uno = nl.link_by_name("uno").unwrap().unwrap();
    assert_eq!(uno.index, one.index);

    nl.set_mtu(uno.index, 1280).unwrap();
    nl.set_mac(uno.index, [0x02, 1, 2, 3, 4, 5]).unwrap();
    let uno = nl.link_by_index(uno.index).unwrap().unwrap();
    assert_eq!(uno.mtu, 1280);
    assert_eq!(uno.mac, Some([0x02, 1, 2, 3, 4, 5]));

    assert!(nl.delete_link_by_name("two").unwrap());
    assert!(!nl.delete_link_by_name("two").unwrap());
    assert_eq!(
        nl.link_by_name("uno").unwrap(),
        None,
        "the pair went together"
    );

    let err = nl.delete_link(uno.index).unwrap_err();
    assert_eq!(errno(&err), Some(libc::ENODEV), "{err}");
    assert_eq!(nl.link_by_index(uno.index).unwrap(), None);
}

#[test]
fn a_link_moves_to_another_namespace() {
    let (ns, mut nl, _a, b) = namespace_with_veth();
    let other = NetNs::create().unwrap();
    nl.set_down(b.index).unwrap();
    nl.move_to_netns(b.index, &other).unwrap();
    assert_eq!(nl.link_by_name("b").unwrap(), None);
    let mut other_nl = Handle::in_netns(&other).unwrap();
    let moved = other_nl.link_by_name("b").unwrap().unwrap();
    assert_eq!(moved.kind.as_deref(), Some("veth"));
    drop(ns);
}

#[test]
fn ipv4_and_ipv6_addresses_are_added_listed_and_removed() {
    let (_ns, mut nl, a, b) = namespace_with_veth();
    let v4 = net("10.0.0.5/24");
    let v6 = net("fd00::5/64");
    nl.add_address(a.index, v4).unwrap();
    nl.add_address_with(
        a.index,
        v6,
        AddressOptions {
            no_dad: true,
            ..AddressOptions::default()
        },
    )
    .unwrap();
    nl.add_address(b.index, net("10.0.0.6/32")).unwrap();

    let on_a = nl.addresses(Some(a.index)).unwrap();
    let found_v4 = on_a.iter().find(|x| x.net == v4).expect("IPv4 listed");
    assert_eq!(found_v4.scope, Scope::Universe);
    let found_v6 = on_a.iter().find(|x| x.net == v6).expect("IPv6 listed");
    assert!(!found_v6.tentative, "nodad addresses are usable at once");
    assert!(on_a.iter().all(|x| x.index == a.index));
    let everywhere = nl.addresses(None).unwrap();
    assert!(everywhere.iter().any(|x| x.net == net("10.0.0.6/32")));

    let err = nl.add_address(a.index, v4).unwrap_err();
    assert_eq!(errno(&err), Some(libc::EEXIST), "{err}");
    assert!(err.to_string().contains("10.0.0.5/24"), "{err}");

    nl.del_address(a.index, v4).unwrap();
    nl.del_address(a.index, v6).unwrap();
    let left = nl.addresses(Some(a.index)).unwrap();
    assert!(!left.iter().any(|x| x.net == v4 || x.net == v6), "{left:?}");
    let err = nl.del_address(a.index, v4).unwrap_err();
    assert_eq!(errno(&err), Some(libc::EADDRNOTAVAIL), "{err}");

    let err = nl.add_address(999_999, v4).unwrap_err();
    assert_eq!(errno(&err), Some(libc::ENODEV), "{err}");
    assert!(err.to_string().contains("index 999999"), "{err}");
}

#[test]
fn calico_style_ipv4_routes_are_added_listed_replaced_and_deleted() {
    let (_ns, mut nl, eth0, cali) = namespace_with_veth();
    let gateway = ip("169.254.1.1");
    let on_link = Route::on_link(net("169.254.1.1/32"), eth0.index);
    let default = Route::default_via(gateway, Some(eth0.index));
    let host = Route::on_link(net("10.0.0.5/32"), cali.index);
    nl.add_route(&on_link).unwrap();
    nl.add_route(&default).unwrap();
    nl.add_route(&host).unwrap();

    let v4 = RouteFilter {
        family: Some(IpFamily::V4),
        ..RouteFilter::default()
    };
    let routes = nl.routes(&v4).unwrap();
    for wanted in [&on_link, &default, &host] {
        assert!(routes.contains(wanted), "{wanted} missing from {routes:?}");
    }
    let listed_default = routes.iter().find(|r| r.dst.prefix() == 0).unwrap();
    assert_eq!(listed_default.gateway, Some(gateway));
    assert_eq!(listed_default.scope, Scope::Universe);
    let on_cali = nl
        .routes(&RouteFilter {
            oif: Some(cali.index),
            ..v4.clone()
        })
        .unwrap();
    assert_eq!(on_cali, vec![host.clone()]);

    let err = nl.add_route(&host).unwrap_err();
    assert_eq!(errno(&err), Some(libc::EEXIST), "{err}");
    assert!(err.to_string().contains("10.0.0.5/32"), "{err}");

    // Replace moves the host route to the other interface, in place.
    let moved = Route::on_link(net("10.0.0.5/32"), eth0.index);
    nl.replace_route(&moved).unwrap();
    let now = nl
        .routes(&RouteFilter {
            dst: Some(net("10.0.0.5/32")),
            ..RouteFilter::default()
        })
        .unwrap();
    assert_eq!(now, vec![moved.clone()]);

    // A gateway the kernel cannot reach is refused with its reason.
    let unreachable = Route::via(net("10.9.0.0/16"), ip("192.0.2.1"), Some(eth0.index));
    let err = nl.add_route(&unreachable).unwrap_err();
    assert_eq!(errno(&err), Some(libc::ENETUNREACH), "{err}");
    assert!(err.to_string().contains("\"a\""), "{err}");

    nl.del_route(&default).unwrap();
    nl.del_route(&moved).unwrap();
    // Deleting by a hand-built route ignores scope and protocol.
    let mut by_hand = Route::on_link(net("169.254.1.1/32"), eth0.index);
    by_hand.scope = Scope::Universe;
    by_hand.protocol = route_protocol::STATIC;
    nl.del_route(&by_hand).unwrap();
    let err = nl.del_route(&default).unwrap_err();
    assert_eq!(errno(&err), Some(libc::ESRCH), "{err}");
    let left = nl.routes(&v4).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn ipv6_host_and_link_local_default_routes() {
    let (_ns, mut nl, eth0, cali) = namespace_with_veth();
    let mut host = Route::on_link(net("fd00::5/128"), cali.index);
    // The kernel's IPv6 default metric, so that the route compares equal to its listing.
    host.priority = Some(1024);
    let mut default = Route::default_via(ip("fe80::1"), Some(eth0.index));
    default.priority = Some(100);
    nl.add_route(&host).unwrap();
    nl.add_route(&default).unwrap();

    let v6 = nl
        .routes(&RouteFilter {
            family: Some(IpFamily::V6),
            ..RouteFilter::default()
        })
        .unwrap();
    assert!(v6.contains(&host), "{v6:?}");
    assert!(v6.contains(&default), "{v6:?}");
    assert!(v6.iter().all(|r| r.family() == IpFamily::V6));

    let mut cheaper = default.clone();
    cheaper.gateway = Some(ip("fe80::2"));
    nl.replace_route(&cheaper).unwrap();
    let defaults = nl
        .routes(&RouteFilter {
            dst: Some(net("::/0")),
            ..RouteFilter::default()
        })
        .unwrap();
    assert_eq!(defaults, vec![cheaper.clone()]);

    nl.del_route(&cheaper).unwrap();
    nl.del_route(&host).unwrap();
    let left = nl
        .routes(&RouteFilter {
            family: Some(IpFamily::V6),
            oif: Some(cali.index),
            ..RouteFilter::default()
        })
        .unwrap();
    assert!(!left.contains(&host), "{left:?}");
}

#[test]
fn neighbours_are_set_listed_replaced_and_removed() {
    let (_ns, mut nl, eth0, _cali) = namespace_with_veth();
    let gw4 = ip("169.254.1.1");
    let gw6 = ip("fe80::1");
    nl.add_neighbour(eth0.index, gw4, [0xee; 6], true).unwrap();
    nl.add_neighbour(eth0.index, gw6, [0xee; 6], false).unwrap();

    let listed = nl.neighbours(eth0.index).unwrap();
    let v4 = listed.iter().find(|n| n.ip == gw4).expect("IPv4 entry");
    assert_eq!(v4.mac, Some([0xee; 6]));
    assert!(v4.permanent);
    let v6 = listed.iter().find(|n| n.ip == gw6).expect("IPv6 entry");
    assert!(!v6.permanent);

    nl.add_neighbour(eth0.index, gw4, [0x02, 0, 0, 0, 0, 1], true)
        .unwrap();
    let replaced = nl.neighbours(eth0.index).unwrap();
    let v4 = replaced.iter().find(|n| n.ip == gw4).unwrap();
    assert_eq!(v4.mac, Some([0x02, 0, 0, 0, 0, 1]));

    nl.del_neighbour(eth0.index, gw4).unwrap();
    nl.del_neighbour(eth0.index, gw6).unwrap();
    let left = nl.neighbours(eth0.index).unwrap();
    assert!(!left.iter().any(|n| n.ip == gw4), "{left:?}");
    let err = nl.del_neighbour(eth0.index, gw4).unwrap_err();
    assert_eq!(errno(&err), Some(libc::ENOENT), "{err}");
}

#[test]
fn a_handle_opened_inside_keeps_working_from_other_threads() {
    let (_ns, nl, a, _b) = namespace_with_veth();
    let found = std::thread::spawn(move || {
        let mut nl = nl;
        nl.link_by_index(a.index).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(found.map(|l| l.name).as_deref(), Some("a"));
}

/// A namespace named on the file system, as runtimes pass it in `CNI_NETNS`: a bind mount
/// of the namespace file onto an empty file, unmounted on every path.
struct MountedNetns {
    dir: tempfile::TempDir,
}

impl MountedNetns {
    fn new(ns: &NetNs) -> MountedNetns {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ns");
        std::fs::File::create(&target).unwrap();
        let guard = MountedNetns { dir };
        nix::mount::mount(
            Some(ns.path()),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        guard
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("ns")
    }

    fn unmount(&self) {
        let _ = nix::mount::umount2(&self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

impl Drop for MountedNetns {
    fn drop(&mut self) {
        self.unmount();
    }
}

#[test]
fn a_bind_mounted_namespace_opens_by_path() {
    let ns = NetNs::create().unwrap();
    let mount = MountedNetns::new(&ns);
    let opened = NetNs::open(&mount.path()).unwrap();
    assert!(opened.is_same(&ns).unwrap());
    assert_eq!(opened.path(), mount.path().as_path());
    drop(ns);

    // The mount keeps the namespace alive on its own.
    let mut nl = Handle::in_netns(&opened).unwrap();
    nl.create_veth("x", "y", None, &VethOptions::default())
        .unwrap();
    assert!(NetNs::open(&mount.path())
        .unwrap()
        .run(|| Handle::new().unwrap().link_by_name("y").unwrap())
        .unwrap()
        .is_some());

    mount.unmount();
    let path = mount.path();
    // Unmounted, what is left is the empty regular file.
    let err = NetNs::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotANetns { .. }), "{err:?}");
    let err = NetNs::open(Path::new("/run/netns/shr-no-such-namespace")).unwrap_err();
    assert!(matches!(err, Error::NetnsNotFound { .. }), "{err:?}");
}
