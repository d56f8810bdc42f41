//! Debian's containerd drives the chain (calico + calico-ipam on the `local` datastore, then
//! portmap) through `ctr run --cni`, which execs the plugins itself with go-cni from
//! `/etc/cni/net.d` and `/opt/cni/bin`: containers get addresses from our IPAM, reach each
//! other, and their removal leaves nothing behind.
//!
//! ctr runs DEL only after the container's task has exited and gives it no network
//! namespace at all (CNI_NETNS empty; ADD had `/proc/<pid>/ns/net`): the chain must clean up
//! from the node and the datastore alone. containerd is private to the test (config, root,
//! state, sockets, and a mount namespace where those two fixed directories are the test's
//! own, see `cni_tests::runtime`) and runs, with ctr, inside the test's node network
//! namespace.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cni_tests::ipam::{self, allocations, IpamFixture};
use cni_tests::pod::{cni_host_veth, wait_for, Family, Node};
use cni_tests::runtime::{
    self, assert_chain_clean, busybox_rootfs, cached_results, global_addrs, host_port, http_get,
    nat_leftovers, retry, ChainSetup, Containerd, STEP_LIMIT, WEP_PREFIX,
};

const NET: &str = "runtime-containerd";
const NODENAME: &str = "runtime-containerd-node";
const POOL_V4: &str = "10.242.0.0/24";
const POOL_V6: &str = "fd00:10:242::/112";

/// The addresses the datastore holds for container `id` (handle `<network>.<ns>-<id>`).
fn held_by(store: &IpamFixture, id: &str) -> Vec<IpAddr> {
    let handle = format!("{NET}.{}", Containerd::cni_container_id(id));
    allocations(&store.snapshot())
        .expect("the IPAM state is consistent")
        .into_iter()
        .filter(|(_, h)| *h == handle)
        .map(|(ip, _)| ip)
        .collect()
}

fn family(addrs: &[IpAddr], v4: bool) -> IpAddr {
    *addrs
        .iter()
        .find(|a| a.is_ipv4() == v4)
        .unwrap_or_else(|| panic!("no {} address in {addrs:?}", if v4 { "v4" } else { "v6" }))
}

/// Checks that nothing of container `id` is left on the node or in the datastore.
fn check_gone(node: &Node, store: &IpamFixture, id: &str, addrs: &[IpAddr], what: &str) {
    let veth = cni_host_veth(&Containerd::cni_container_id(id));
    // ctr's DEL names the dead task's /proc/<pid>/ns/net, already gone: the veth pair goes
    // with the namespace, which the kernel destroys from a work queue a little later.
    assert!(
        wait_for(Duration::from_secs(5), || node.link(&veth).is_none()),
        "{what}: host veth {veth} left"
    );
    assert_eq!(
        held_by(store, id),
        Vec::<IpAddr>::new(),
        "{what}: addresses left"
    );
    let routes = [node.routes(Family::V4), node.routes(Family::V6)].concat();
    for ip in addrs {
        assert!(
            !routes.iter().any(|r| r.starts_with(&format!("{ip} "))),
            "{what}: host route to {ip} left: {routes:?}"
        );
    }
    let cid = Containerd::cni_container_id(id);
    let snapshot = store.snapshot();
    assert!(
        !snapshot.contains_key(&format!("{}{NET}.{cid}", ipam::HANDLE_PREFIX)),
        "{what}: handle left"
    );
    let weps: Vec<&String> = snapshot
        .iter()
        .filter(|(k, v)| k.starts_with(WEP_PREFIX) && v.contains(&cid))
        .map(|(k, _)| k)
        .collect();
    assert!(weps.is_empty(), "{what}: workload endpoints left: {weps:?}");
    let nat = nat_leftovers(&node.netns, addrs);
    assert!(
        nat.is_empty(),
        "{what}: NAT rules left:\n{}",
        nat.join("\n")
    );
}

#[test]
fn runtime_containerd_ctr_cni_wires_containers_and_removal_leaves_nothing() {
    eprintln!(
        "{} / {}",
        runtime::containerd_version()
            .expect("containerd is installed (apt-get install containerd)"),
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
    let mut ctd = Containerd::start(node.netns.path(), dir.path(), &bin, &net_d)
        .unwrap_or_else(|e| panic!("containerd cannot run here: {e}"));
    let plugin_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // A web server, kept running by its attached `ctr run`.
    let page = "served by web\n";
    let web_root = busybox_rootfs(dir.path(), "web-root", page).expect("rootfs");
    ctd.start_task(
        "web",
        &web_root,
        &["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
    )
    .unwrap_or_else(|e| panic!("ctr run web: {e}\nplugin log:\n{}", plugin_log()));
    let web = held_by(&store, "web");
    assert_eq!(web.len(), 2, "one address per family for web: {web:?}");
    let (web4, web6) = (family(&web, true), family(&web, false));
    assert!(
        ipam::contains(POOL_V4, web4) && ipam::contains(POOL_V6, web6),
        "{web:?}"
    );
    let handle = format!("{NET}.{}", Containerd::cni_container_id("web"));
    for ip in &web {
        let shown = ipam::operator(&conflist, &["show", "--ip", &ip.to_string()]);
        assert!(
            shown.ok() && shown.stdout.contains(&handle),
            "calico-ipam show --ip {ip}: {} {}",
            shown.stdout,
            shown.stderr
        );
    }
    let veth = cni_host_veth(&Containerd::cni_container_id("web"));
    assert!(node.link(&veth).is_some(), "no host veth {veth}");
    let routes = [
        node.routes_via(Family::V4, &veth),
        node.routes_via(Family::V6, &veth),
    ]
    .concat();
    for ip in &web {
        assert!(
            routes.iter().any(|r| r.starts_with(&ip.to_string())),
            "no host route to {ip} via {veth}: {routes:?}"
        );
    }
    let snapshot = store.snapshot();
    assert!(
        snapshot
            .iter()
            .any(|(k, v)| k.starts_with(WEP_PREFIX)
                && v.contains(&Containerd::cni_container_id("web"))),
        "no workload endpoint for web"
    );

    // The node reaches it (and so it is serving).
    let got = retry("the web container serving", STEP_LIMIT, || {
        http_get(node.netns.path(), SocketAddr::new(web4, 80))
    })
    .expect("the node reaches the web container");
    assert_eq!(got, page);

    // A client runs to completion: its own address from the pool, then web over both
    // families. `ctr run --rm` removes it and runs its DEL once it has exited.
    let client_root = busybox_rootfs(dir.path(), "client-root", "client\n").expect("rootfs");
    let script = format!(
        "ip -o addr show dev eth0 && ping -c 1 -W 5 {web4} && ping6 -c 1 -W 5 {web6} \
         && timeout 10 wget -q -O - http://{}/index.html \
         && timeout 10 wget -q -O - http://{}/index.html",
        host_port(web4, 80),
        host_port(web6, 80),
    );
    let out = ctd
        .run("client", &client_root, &["/bin/sh", "-c", &script])
        .expect("ctr run client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client: {}\n{stdout}\n{stderr}\nplugin log:\n{}",
        out.status,
        plugin_log()
    );
    assert_eq!(
        stdout.matches(page).count(),
        2,
        "the page over each family: {stdout}"
    );
    let client = global_addrs(&stdout);
    assert_eq!(
        client.len(),
        2,
        "one address per family for client: {stdout}"
    );
    assert!(
        ipam::contains(POOL_V4, family(&client, true))
            && ipam::contains(POOL_V6, family(&client, false)),
        "{client:?}"
    );
    // ctr logs a failed teardown and carries on: it must have had nothing to say.
    assert!(
        !stderr.contains("network review"),
        "client's DEL failed: {stderr}"
    );
    check_gone(&node, &store, "client", &client, "after the client exited");
    assert_eq!(held_by(&store, "web").len(), 2, "web keeps its addresses");
    assert!(node.link(&veth).is_some(), "web keeps its host veth");

    // Killing web's task makes its ctr run do the DEL and remove the container.
    let status = ctd.kill_task("web").expect("kill web");
    let said = ctd.task_output("web");
    assert!(
        !said.contains("network review"),
        "web's DEL failed ({status}): {said}\nplugin log:\n{}",
        plugin_log()
    );
    check_gone(&node, &store, "web", &web, "after web was killed");

    let every: Vec<IpAddr> = [web, client].concat();
    assert_chain_clean(&node, &store, &every, "after both containers");
    assert_eq!(
        cached_results(&ctd.cni_cache()),
        Vec::<String>::new(),
        "libcni results left in ctr's cache"
    );
    for what in ["containers", "tasks"] {
        let list = ctd.checked(&[what, "ls", "--quiet"]).expect("ctr ls");
        assert_eq!(list.trim(), "", "{what} left");
    }
}

/// An older guide's install: one `10-calico.conf` (the calico plugin alone, cniVersion
/// 0.2.0) instead of a conflist. containerd's go-cni wraps it in a list as libcni does; the
/// container gets its address from our IPAM, and its removal releases it.
#[test]
fn runtime_containerd_ctr_cni_reads_a_single_plugin_conf_at_0_2_0() {
    let ChainSetup {
        node,
        store,
        dir,
        bin,
        net_d,
        log,
        conflist,
    } = ChainSetup::new(NET, NODENAME, POOL_V4, POOL_V6);
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conflist).expect("conflist")).expect("JSON");
    let mut single = list["plugins"][0].clone();
    single["name"] = list["name"].clone();
    single["cniVersion"] = serde_json::json!("0.2.0");
    std::fs::remove_file(&conflist).expect("remove the conflist");
    std::fs::write(net_d.join("10-calico.conf"), single.to_string()).expect("10-calico.conf");
    let ctd = Containerd::start(node.netns.path(), dir.path(), &bin, &net_d)
        .unwrap_or_else(|e| panic!("containerd cannot run here: {e}"));
    let root = busybox_rootfs(dir.path(), "old-root", "old\n").expect("rootfs");
    let out = ctd
        .run("old", &root, &["/bin/sh", "-c", "ip -o addr show dev eth0"])
        .expect("ctr run old");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "old: {}\n{stdout}\n{}\nplugin log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let got = global_addrs(&stdout);
    assert!(
        got.iter().any(|ip| ipam::contains(POOL_V4, *ip)),
        "an address from the pool: {stdout}"
    );
    check_gone(&node, &store, "old", &got, "after the container exited");
}
