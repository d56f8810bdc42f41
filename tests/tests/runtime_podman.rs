//! Debian's podman drives the chain (calico + calico-ipam on the `local` datastore, then
//! portmap) through its CNI network backend, as it would on a machine whose
//! `cni_plugin_dirs` holds our binaries: containers get addresses from our IPAM, reach each
//! other and a published port, and removing them leaves nothing behind.
//!
//! podman is private to the test (its own containers.conf, storage, tmpdir and mount
//! namespace, see `cni_tests::runtime`) and runs inside the test's node network namespace,
//! so the host veths, routes and NAT rules the plugins make are the node's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use cni_tests::ipam::{self, allocations, IpamFixture};
use cni_tests::pod::{cni_host_veth, Family, Node};
use cni_tests::runtime::{
    self, assert_chain_clean, busybox_rootfs, cached_results, global_addrs, host_port, http_get,
    nat_leftovers, retry, ChainSetup, Podman, STEP_LIMIT, WEP_PREFIX,
};
use serde_json::Value;

const NET: &str = "runtime-podman";
const NODENAME: &str = "runtime-podman-node";
const POOL_V4: &str = "10.241.0.0/24";
const POOL_V6: &str = "fd00:10:241::/112";
const HOST_PORT: u16 = 8080;

/// The running state of one container, as podman, the datastore and the node show it.
struct Seen {
    id: String,
    addrs: Vec<IpAddr>,
}

fn v4(addrs: &[IpAddr]) -> IpAddr {
    *addrs
        .iter()
        .find(|a| a.is_ipv4())
        .unwrap_or_else(|| panic!("no IPv4 address in {addrs:?}"))
}

fn v6(addrs: &[IpAddr]) -> IpAddr {
    *addrs
        .iter()
        .find(|a| a.is_ipv6())
        .unwrap_or_else(|| panic!("no IPv6 address in {addrs:?}"))
}

/// Checks what a running container got: one address per family from our pools, the same
/// as podman recorded from our result, held in the datastore by `<network>.<container id>`
/// (and shown so by `calico-ipam show --ip`), its host veth and host routes on the node.
fn check_running(
    podman: &Podman,
    node: &Node,
    store: &IpamFixture,
    conflist: &std::path::Path,
    name: &str,
) -> Seen {
    let id = podman
        .checked(&["inspect", "--format", "{{.Id}}", name])
        .expect("podman inspect")
        .trim()
        .to_string();
    let inside = podman
        .checked(&["exec", name, "/bin/ip", "-o", "addr", "show", "dev", "eth0"])
        .expect("podman exec ip addr");
    let addrs = global_addrs(&inside);
    assert_eq!(addrs.len(), 2, "{name}: one address per family: {inside}");
    assert!(ipam::contains(POOL_V4, v4(&addrs)), "{name}: {addrs:?}");
    assert!(ipam::contains(POOL_V6, v6(&addrs)), "{name}: {addrs:?}");

    // podman understood our result: it reports the addresses the container has.
    let networks: Value = serde_json::from_str(
        &podman
            .checked(&[
                "inspect",
                "--format",
                "{{json .NetworkSettings.Networks}}",
                name,
            ])
            .expect("podman inspect networks"),
    )
    .expect("networks are JSON");
    let net = &networks[NET];
    assert_eq!(net["IPAddress"], v4(&addrs).to_string(), "{networks}");
    assert_eq!(
        net["GlobalIPv6Address"],
        v6(&addrs).to_string(),
        "{networks}"
    );

    let handle = format!("{NET}.{id}");
    let held = allocations(&store.snapshot()).expect("the IPAM state is consistent");
    for ip in &addrs {
        assert_eq!(held.get(ip), Some(&handle), "{name}: {ip} in {held:?}");
        let shown = ipam::operator(conflist, &["show", "--ip", &ip.to_string()]);
        assert!(
            shown.ok() && shown.stdout.contains(&handle),
            "calico-ipam show --ip {ip}: {} {}",
            shown.stdout,
            shown.stderr
        );
    }

    let veth = cni_host_veth(&id);
    assert!(node.link(&veth).is_some(), "{name}: no host veth {veth}");
    let routes = [
        node.routes_via(Family::V4, &veth),
        node.routes_via(Family::V6, &veth),
    ]
    .concat();
    for ip in &addrs {
        assert!(
            routes.iter().any(|r| r.starts_with(&ip.to_string())),
            "{name}: no host route to {ip} via {veth}: {routes:?}"
        );
    }
    Seen { id, addrs }
}

/// Checks that nothing of a removed container is left on the node or in the datastore.
fn check_gone(node: &Node, store: &IpamFixture, seen: &Seen, what: &str) {
    let veth = cni_host_veth(&seen.id);
    assert!(node.link(&veth).is_none(), "{what}: host veth {veth} left");
    let snapshot = store.snapshot();
    let held = allocations(&snapshot).expect("the IPAM state is consistent");
    for ip in &seen.addrs {
        assert!(!held.contains_key(ip), "{what}: {ip} still allocated");
        let routes = [node.routes(Family::V4), node.routes(Family::V6)].concat();
        assert!(
            !routes.iter().any(|r| r.starts_with(&format!("{ip} "))),
            "{what}: host route to {ip} left: {routes:?}"
        );
    }
    let handle_key = format!("{}{NET}.{}", ipam::HANDLE_PREFIX, seen.id);
    assert!(!snapshot.contains_key(&handle_key), "{what}: handle left");
    let weps: Vec<&String> = snapshot
        .iter()
        .filter(|(k, v)| k.starts_with(WEP_PREFIX) && v.contains(&seen.id))
        .map(|(k, _)| k)
        .collect();
    assert!(weps.is_empty(), "{what}: workload endpoints left: {weps:?}");
    let nat = nat_leftovers(&node.netns, &seen.addrs);
    assert!(
        nat.is_empty(),
        "{what}: NAT rules left:\n{}",
        nat.join("\n")
    );
}

/// What podman prints on stderr when a removal went wrong (a failed teardown is a warning
/// or an error, not a failed command).
fn assert_quiet(out: &std::process::Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{what}: {}\n{stderr}",
        out.status
    );
}

#[test]
fn runtime_podman_wires_containers_through_the_chain_and_removal_leaves_nothing() {
    eprintln!(
        "{} / {}",
        runtime::podman_version().expect("podman is installed (apt-get install podman)"),
        runtime::runc_version().expect("runc is installed (apt-get install runc)")
    );
    let ChainSetup {
        node,
        store,
        dir,
        bin,
        net_d,
        log,
        conflist,
    } = ChainSetup::new(NET, NODENAME, POOL_V4, POOL_V6);
    // The plugins' stdin is recorded: podman's bytes are what the plugins must read.
    let record = dir.path().join("stdin");
    let recording = runtime::recording_bin_dir(dir.path(), &record).expect("bin dir");
    drop(bin);
    let podman = Podman::new(node.netns.path(), dir.path(), &recording, &net_d)
        .unwrap_or_else(|e| panic!("podman cannot run here: {e}"));
    let plugin_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // A web server with a published port, and a client.
    let web_root = busybox_rootfs(dir.path(), "web-root", "served by web\n").expect("rootfs");
    let client_root = busybox_rootfs(dir.path(), "client-root", "client\n").expect("rootfs");
    let publish = format!("{HOST_PORT}:80");
    let run = |name: &str, extra: &[&str], root: &std::path::Path, argv: &[&str]| {
        let root = root.display().to_string();
        let flags = podman.run_flags();
        let mut args = vec!["run", "-d", "--name", name, "--network", NET];
        args.extend(flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", &root]);
        args.extend_from_slice(argv);
        podman
            .checked(&args)
            .unwrap_or_else(|e| panic!("podman run {name}: {e}\nplugin log:\n{}", plugin_log()))
    };
    run(
        "web",
        &["-p", &publish],
        &web_root,
        &["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
    );
    run("client", &[], &client_root, &["/bin/sleep", "100000"]);

    let web = check_running(&podman, &node, &store, &conflist, "web");
    let client = check_running(&podman, &node, &store, &conflist, "client");
    let snapshot = store.snapshot();
    let weps: BTreeMap<&String, &String> = snapshot
        .iter()
        .filter(|(k, _)| k.starts_with(WEP_PREFIX))
        .collect();
    for seen in [&web, &client] {
        assert!(
            weps.values().any(|v| v.contains(&seen.id)),
            "no workload endpoint for {}: {weps:?}",
            seen.id
        );
    }

    // The node reaches the web server, directly and through the published port on each of
    // the node's own addresses (DNAT in the node's OUTPUT chain).
    let page = "served by web\n";
    let direct = SocketAddr::new(v4(&web.addrs), 80);
    let got = retry("the web container serving", STEP_LIMIT, || {
        http_get(node.netns.path(), direct)
    })
    .expect("the node reaches the web container");
    assert_eq!(got, page);
    for node_addr in [IpAddr::V4(node.address_v4()), IpAddr::V6(node.address_v6())] {
        let published = SocketAddr::new(node_addr, HOST_PORT);
        assert_eq!(
            http_get(node.netns.path(), published).expect("published port from the node"),
            page,
            "{published}"
        );
    }
    let nat = nat_leftovers(&node.netns, &web.addrs);
    assert!(
        nat.iter().any(|l| l.contains("CNI-DN-")),
        "portmap's DNAT chain for the web container:\n{}",
        nat.join("\n")
    );

    // Container to container, both families, and to the published port on the node.
    for target in [v4(&web.addrs), v6(&web.addrs)] {
        let ping = if target.is_ipv4() { "ping" } else { "ping6" };
        podman
            .checked(&[
                "exec",
                "client",
                ping,
                "-c",
                "1",
                "-W",
                "5",
                &target.to_string(),
            ])
            .unwrap_or_else(|e| panic!("client → web {target}: {e}"));
    }
    for target in [
        host_port(v4(&web.addrs), 80),
        host_port(v6(&web.addrs), 80),
        host_port(IpAddr::V4(node.address_v4()), HOST_PORT),
    ] {
        let url = format!("http://{target}/index.html");
        // busybox wget's own -T crashes on a refused connection; timeout bounds it instead.
        let got = podman
            .checked(&[
                "exec", "client", "timeout", "10", "wget", "-q", "-O", "-", &url,
            ])
            .unwrap_or_else(|e| panic!("client → {url}: {e}"));
        assert_eq!(got, page, "client → {url}");
    }

    // `podman stop` tears the network down (DEL) while the client keeps its own.
    let stop = podman
        .output(&["stop", "--time", "0", "web"])
        .expect("podman stop");
    assert_quiet(&stop, "podman stop web");
    check_gone(&node, &store, &web, "after podman stop web");
    let _still = check_running(&podman, &node, &store, &conflist, "client");
    assert_quiet(
        &podman.output(&["rm", "web"]).expect("podman rm"),
        "podman rm web",
    );

    // `podman rm -f` of a running container: DEL, then nothing is left at all.
    let rm = podman
        .output(&["rm", "--force", "--time", "0", "client"])
        .expect("podman rm -f");
    assert_quiet(&rm, "podman rm -f client");
    check_gone(&node, &store, &client, "after podman rm -f client");
    let every: Vec<IpAddr> = [web.addrs.clone(), client.addrs.clone()].concat();
    assert_chain_clean(&node, &store, &every, "after removing both containers");
    assert_eq!(
        podman.netns_files().expect("list netns"),
        Vec::<String>::new(),
        "network namespaces left by podman"
    );
    assert_eq!(
        cached_results(podman.cni_cache()),
        Vec::<String>::new(),
        "libcni results left in podman's cache"
    );
    assert_eq!(
        podman
            .checked(&["ps", "--all", "--quiet"])
            .expect("podman ps")
            .trim(),
        "",
        "containers left"
    );
    // podman's CNI backend spells the capability's keys as its own Go struct tags do.
    let all = runtime::recorded(&record);
    let portmap = all
        .iter()
        .find(|r| r.plugin == "portmap" && r.command == "ADD")
        .expect("portmap's ADD recorded");
    let stdin: Value = serde_json::from_slice(&portmap.stdin).expect("JSON");
    let mapping = &stdin["runtimeConfig"]["portMappings"][0];
    assert_eq!(mapping["containerPort"], 80, "{mapping}");
    assert_eq!(mapping["hostPort"], HOST_PORT, "{mapping}");
    runtime::save_fixtures(&all, "podman");
}
