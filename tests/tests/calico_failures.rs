//! The calico plugin when things go wrong, end to end: failures after IPAM succeeded roll
//! everything back, DEL succeeds on whatever is already gone, CHECK notices what changed,
//! GC and STATUS reach the IPAM plugin, and bad input is a proper CNI error that creates
//! nothing. Plugins run inside a node namespace of the test's own. Needs root.

use std::fs;
use std::time::Duration;

use cni_tests::host_local::Outcome;
use cni_tests::pod::{
    cni_host_veth, conflist_named, k8s_host_veth, wait_for, Family, Node, Pod, Stack, IFNAME, NET,
};
use cni_tests::GcAttachment;
use serde_json::{json, Value};
use shared::spec::error::ErrorCode;

/// Exit 1 and an error object, whatever its code.
fn failed(out: &Outcome, what: &str) -> String {
    assert_eq!(out.exit, Some(1), "{what}: {}", out.describe());
    let json = out
        .json
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no error object: {}", out.describe()));
    assert!(
        json["code"].as_u64().is_some(),
        "{what}: {}",
        out.describe()
    );
    let msg = json["msg"].as_str().unwrap_or_default().to_string();
    assert!(!msg.is_empty(), "{what}: empty message: {}", out.describe());
    msg
}

fn add_direct(node: &Node, pod: &Pod, plugin: &Value) -> Outcome {
    let conf = node.plugin_config("1.0.0", plugin);
    node.call("ADD", &conf, &pod.rt, &[])
}

fn del_direct(node: &Node, pod: &Pod, plugin: &Value) -> Outcome {
    let conf = node.plugin_config("1.0.0", plugin);
    node.call("DEL", &conf, &pod.rt, &[])
}

// ---- failures after IPAM succeeded ----------------------------------------------------

/// An MTU no veth can have (above 65535, below IPv4's 68, negative) is refused with code 7
/// naming `mtu`, before an address is taken; one in calico/node's MTU file is the file's
/// problem (104). The same pod then comes up with a sane MTU.
#[test]
fn an_mtu_outside_the_range_is_refused_before_an_address_is_taken() {
    let node = Node::new();
    let pod = node.k8s_pod("bad0000000000000000000000000000a", "default", "too-big");
    let mut plugin = node.plugin(Stack::Dual);
    for mtu in [70000, 67, -1] {
        plugin["mtu"] = json!(mtu);
        let out = add_direct(&node, &pod, &plugin);
        assert_eq!(out.code(), Some(7), "mtu {mtu}: {}", out.describe());
        let msg = failed(&out, "ADD with an impossible mtu");
        assert!(msg.contains(&format!("mtu {mtu}")), "names the key: {msg}");
        node.assert_nothing_left(&pod, "after a refused mtu");
    }
    plugin["mtu"] = json!(0);
    fs::write(node.mtu_file(), "70000\n").expect("mtu file");
    let out = add_direct(&node, &pod, &plugin);
    assert_eq!(out.code(), Some(104), "{}", out.describe());
    assert!(
        out.stdout.contains(&node.mtu_file().display().to_string()),
        "{}",
        out.describe()
    );
    node.assert_nothing_left(&pod, "after a refused MTU file");
    plugin["mtu"] = json!(1500);
    let out = add_direct(&node, &pod, &plugin);
    assert!(out.ok(), "{}", out.describe());
}

/// Spec §4 step 13: the pod's /32 is already routed through another interface of the node
/// (a stale route, a double allocation). ADD fails naming both sides, takes nothing over,
/// and leaves no veth, no route of its own and no reservation.
#[test]
fn host_route_owned_by_another_interface_fails_and_rolls_back() {
    let mut node = Node::new();
    let ip = node.pod_v4(0);
    node.ip(&[
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        "node0",
        "scope",
        "link",
    ]);
    node.rebaseline();
    let pod = node.k8s_pod("bad0000000000000000000000000000b", "default", "clash");
    let plugin = node.plugin(Stack::V4);
    let out = add_direct(&node, &pod, &plugin);
    let msg = failed(&out, "ADD over a foreign route");
    assert!(
        msg.contains("already exists for an interface other than"),
        "{msg}"
    );
    let veth = k8s_host_veth("cali", "default", "clash");
    assert!(msg.contains(&veth), "names our veth: {msg}");
    assert!(msg.contains("node0"), "names the other interface: {msg}");
    assert_eq!(
        node.routes(Family::V4)
            .into_iter()
            .filter(|r| r.starts_with(&format!("{ip} ")))
            .collect::<Vec<_>>(),
        [format!("{ip} dev node0 scope link")],
        "the foreign route is untouched"
    );
    node.assert_nothing_left(&pod, "after a route clash");
}

/// CNI_NETNS names no namespace: ADD fails after host-local handed out the addresses, which
/// are released again; no veth appears in the node.
#[test]
fn add_into_a_missing_netns_releases_the_address() {
    let node = Node::new();
    let mut pod = node.pod("bad0000000000000000000000000000c");
    pod.rt.netns = "/run/netns/calico-e2e-no-such-netns".into();
    let out = add_direct(&node, &pod, &node.plugin(Stack::Dual));
    failed(&out, "ADD into a missing netns");
    node.assert_node_clean("after ADD into a missing netns");
}

/// The pod already has an interface called CNI_IFNAME: ADD fails, releases the addresses,
/// leaves no host veth, and does not touch the pod's own interface.
#[test]
fn existing_container_interface_fails_and_is_left_alone() {
    let node = Node::new();
    let pod = node.pod("bad0000000000000000000000000000d");
    pod.ip(&[
        "link", "add", IFNAME, "type", "veth", "peer", "name", "theirs",
    ]);
    let before = pod.iface();
    let out = add_direct(&node, &pod, &node.plugin(Stack::Dual));
    failed(&out, "ADD over an existing eth0");
    node.assert_node_clean("after ADD over an existing eth0");
    let after = pod.iface();
    assert_eq!(
        after["ifindex"], before["ifindex"],
        "the pod's eth0 is untouched"
    );
    assert_eq!(after["address"], before["address"]);
    assert!(pod.link("theirs").is_some());
}

/// Spec §3.1 re-ADD: the same Kubernetes pod comes back in a new sandbox (new container
/// id) before the old one was DELed. The host veth of the same name is replaced, the new
/// sandbox gets a new address, and the late DEL of the old sandbox releases only the old
/// address and leaves the new pod networked.
#[test]
fn new_sandbox_of_the_same_pod_replaces_the_veth_and_survives_the_old_del() {
    let node = Node::new();
    let plugin = node.plugin(Stack::Dual);
    let list = node.conflist("1.0.0", &plugin);
    let runner = node.runner();
    let old = node.k8s_pod("fee0000000000000000000000000000a", "default", "again");
    let new = node.k8s_pod("fee0000000000000000000000000000b", "default", "again");
    let veth = k8s_host_veth("cali", "default", "again");
    runner.add(&list, &old.rt).expect("ADD old sandbox");
    let result = runner.add(&list, &new.rt).expect("ADD new sandbox");
    assert_eq!(result["interfaces"][0]["name"], veth.as_str());
    assert_eq!(
        node.link(&veth).expect("host veth")["link_index"],
        new.iface()["ifindex"],
        "the host veth now leads to the new sandbox"
    );
    assert!(old.link(IFNAME).is_none(), "the old sandbox lost its end");

    runner
        .del(&list, &old.rt)
        .expect("late DEL of the old sandbox");
    assert!(node.reservations_of(&old.rt.container_id).is_empty());
    assert_eq!(node.reservations_of(&new.rt.container_id).len(), 2);
    assert!(
        new.link(IFNAME).is_some(),
        "the new sandbox keeps its interface"
    );
    assert_eq!(
        node.routes_via(Family::V4, &veth),
        [format!("{} dev {veth} scope link", node.pod_v4(1))]
    );
    cni_tests::pod::assert_tcp(
        &new.netns,
        node.pod_v4(1).into(),
        &node.netns,
        node.address_v4().into(),
        "node to the new sandbox",
    );
    runner.del(&list, &new.rt).expect("DEL new sandbox");
    node.assert_nothing_left(&new, "after both DELs");
}

// ---- DEL --------------------------------------------------------------------------------

#[test]
fn del_removes_everything_and_succeeds_twice() {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::Dual));
    let runner = node.runner();
    let pod = node.k8s_pod("de10000000000000000000000000000a", "default", "gone");
    runner.add(&list, &pod.rt).expect("ADD");
    assert_eq!(node.reservations_of(&pod.rt.container_id).len(), 2);
    runner.del(&list, &pod.rt).expect("DEL");
    node.assert_nothing_left(&pod, "after DEL");
    runner.del(&list, &pod.rt).expect("second DEL");
    let out = del_direct(&node, &pod, &node.plugin(Stack::Dual));
    assert!(out.ok(), "third DEL, direct: {}", out.describe());
    node.assert_nothing_left(&pod, "after more DELs");
}

/// The sandbox's namespace was destroyed before DEL: DEL still releases the address.
#[test]
fn del_succeeds_when_the_pod_netns_is_gone() {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::Dual));
    let runner = node.runner();
    let Pod { netns, rt } = node.pod("de10000000000000000000000000000b");
    runner.add(&list, &rt).expect("ADD");
    drop(netns);
    assert!(!std::path::Path::new(&rt.netns).exists());
    runner.del(&list, &rt).expect("DEL without the netns");
    runner.del(&list, &rt).expect("DEL again");
    assert!(
        wait_for(Duration::from_secs(5), || node.cali_links().is_empty()),
        "the host veth went with the namespace: {:?}",
        node.cali_links()
    );
    node.assert_node_clean("after DEL of a vanished pod");
}

/// CNI_NETNS empty (the runtime lost the sandbox): nothing to tear down, the address is
/// still released.
#[test]
fn del_succeeds_without_cni_netns_and_releases_the_address() {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::V4));
    let runner = node.runner();
    let pod = node.pod("de10000000000000000000000000000c");
    runner.add(&list, &pod.rt).expect("ADD");
    let mut no_netns = pod.rt.clone();
    no_netns.netns = String::new();
    runner.del(&list, &no_netns).expect("DEL without CNI_NETNS");
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
    runner.del(&list, &no_netns).expect("DEL again");
}

/// Someone deleted the host veth by hand (which takes the container end too): DEL
/// succeeds and releases the address.
#[test]
fn del_succeeds_when_the_host_veth_was_deleted_by_hand() {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::Dual));
    let runner = node.runner();
    let pod = node.pod("de10000000000000000000000000000d");
    runner.add(&list, &pod.rt).expect("ADD");
    node.ip(&["link", "del", &cni_host_veth(&pod.rt.container_id)]);
    runner.del(&list, &pod.rt).expect("DEL");
    node.assert_nothing_left(&pod, "after DEL of a hand-deleted veth");
}

/// DEL of a container that was never added succeeds, with or without its namespace.
#[test]
fn del_of_a_container_never_added_succeeds() {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::Dual));
    let runner = node.runner();
    let pod = node.pod("de10000000000000000000000000000e");
    runner.del(&list, &pod.rt).expect("DEL with a netns");
    let mut gone = pod.rt.clone();
    gone.netns = "/run/netns/calico-e2e-no-such-netns".into();
    runner.del(&list, &gone).expect("DEL with a missing netns");
    node.assert_nothing_left(&pod, "after DEL of nothing");
}

// ---- CHECK ------------------------------------------------------------------------------

#[test]
fn check_passes_after_add_for_every_stack_and_version() {
    for stack in [Stack::V4, Stack::V6, Stack::Dual] {
        let node = Node::new();
        let runner = node.runner();
        for (n, version) in ["0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
            let list = node.conflist(version, &node.plugin(stack));
            let pod = node.k8s_pod(
                &format!("c4ec{n}000000000000000000000000000"),
                "ns",
                &format!("p{n}"),
            );
            runner.add(&list, &pod.rt).expect("ADD");
            runner
                .check(&list, &pod.rt)
                .unwrap_or_else(|e| panic!("CHECK {stack:?} {version}: {e}"));
            runner.del(&list, &pod.rt).expect("DEL");
        }
    }
}

/// ADD a dual-stack pod, break one thing, and expect CHECK to fail with code 109; DEL
/// still cleans up.
fn check_notices(what: &str, break_it: impl FnOnce(&Node, &Pod, &str)) {
    let node = Node::new();
    let list = node.conflist("1.0.0", &node.plugin(Stack::Dual));
    let runner = node.runner();
    let pod = node.k8s_pod("c4ec000000000000000000000000000f", "default", "checked");
    runner.add(&list, &pod.rt).expect("ADD");
    runner
        .check(&list, &pod.rt)
        .expect("CHECK before the change");
    let veth = k8s_host_veth("cali", "default", "checked");
    break_it(&node, &pod, &veth);
    let err = runner
        .check(&list, &pod.rt)
        .expect_err(&format!("CHECK must notice: {what}"));
    let cni = err
        .cni_error()
        .unwrap_or_else(|| panic!("{what}: not a plugin error: {err}"));
    assert_eq!(cni.code, ErrorCode::CheckFailed, "{what}: {err}");
    runner.del(&list, &pod.rt).expect("DEL");
    assert!(node.reservations().is_empty());
    assert!(node.cali_links().is_empty());
}

#[test]
fn check_fails_when_the_host_route_is_gone() {
    check_notices("host route deleted", |node, _, veth| {
        let ip = node.pod_v4(0);
        node.ip(&["route", "del", &format!("{ip}/32"), "dev", veth]);
    });
}

#[test]
fn check_fails_when_the_host_v6_route_is_gone() {
    check_notices("host v6 route deleted", |node, _, veth| {
        let ip = node.pod_v6(0);
        node.ip(&["-6", "route", "del", &format!("{ip}/128"), "dev", veth]);
    });
}

#[test]
fn check_fails_when_the_container_address_is_removed() {
    check_notices("container address removed", |node, pod, _| {
        let ip = node.pod_v4(0);
        pod.ip(&["addr", "del", &format!("{ip}/32"), "dev", IFNAME]);
    });
}

#[test]
fn check_fails_when_proxy_arp_is_off_on_the_host_veth() {
    check_notices("proxy_arp set to 0", |node, _, veth| {
        cni_tests::pod::set_sysctl(
            &node.netns,
            &["net", "ipv4", "conf", veth, "proxy_arp"],
            "0",
        );
    });
}

#[test]
fn check_fails_when_the_container_default_route_is_gone() {
    check_notices("container default route deleted", |_, pod, _| {
        pod.ip(&["route", "del", "default"]);
    });
}

#[test]
fn check_fails_when_the_veth_is_gone() {
    check_notices("veth deleted", |node, _, veth| {
        node.ip(&["link", "del", veth]);
    });
}

// ---- GC and STATUS ----------------------------------------------------------------------

/// GC reaches host-local with the valid attachments: the reservation of an attachment the
/// runtime no longer lists (and never DELed) is released, the listed one stays.
#[test]
fn gc_is_forwarded_to_ipam() {
    let node = Node::new();
    let list = node.conflist("1.1.0", &node.plugin(Stack::Dual));
    let runner = node.runner();
    let keep = node.pod("9c00000000000000000000000000000a");
    let lost = node.pod("9c00000000000000000000000000000b");
    runner.add(&list, &keep.rt).expect("ADD keep");
    runner.add(&list, &lost.rt).expect("ADD lost");
    // The runtime forgot `lost` without a DEL: no cache entry, so only GC can free it.
    runner.cache().delete(NET, &lost.rt.container_id, IFNAME);
    assert_eq!(node.reservations_of(&lost.rt.container_id).len(), 2);
    let valid = [GcAttachment {
        container_id: keep.rt.container_id.clone(),
        ifname: IFNAME.into(),
    }];
    runner.gc(&list, Some(&valid)).expect("GC");
    assert!(
        node.reservations_of(&lost.rt.container_id).is_empty(),
        "{:?}",
        node.reservations()
    );
    assert_eq!(
        node.reservations_of(&keep.rt.container_id).len(),
        2,
        "{:?}",
        node.reservations()
    );
}

/// STATUS reaches host-local: a one-address range that is taken makes it fail with 50
/// (not available), freeing the address makes it pass again.
#[test]
fn status_is_forwarded_to_ipam() {
    let node = Node::new();
    let ip = node.pod_v4(0).to_string();
    let mut plugin = node.plugin(Stack::V4);
    plugin["ipam"]["ranges"] =
        json!([[{"subnet": node.pod_subnet_v4(), "rangeStart": ip, "rangeEnd": ip}]]);
    let list = node.conflist("1.1.0", &plugin);
    let runner = node.runner();
    runner.status(&list).expect("STATUS with a free address");
    let pod = node.pod("57a7000000000000000000000000000a");
    runner.add(&list, &pod.rt).expect("ADD");
    let err = runner
        .status(&list)
        .expect_err("STATUS with the range full");
    assert_eq!(
        err.cni_error().map(|e| e.code),
        Some(ErrorCode::NotAvailable),
        "{err}"
    );
    runner.del(&list, &pod.rt).expect("DEL");
    runner.status(&list).expect("STATUS after DEL");
}

// ---- bad input --------------------------------------------------------------------------

/// Spec §1, §10.2: no nodename file and not optional: ADD and DEL fail with code 11 and
/// Calico's exact message; ADD creates nothing, DEL tears nothing down.
#[test]
fn missing_nodename_file_fails_add_and_del_with_calicos_message() {
    let node = Node::new();
    let missing = node.dir.path().join("no-nodename");
    let mut bad = node.plugin(Stack::Dual);
    bad["nodename_file"] = json!(missing);
    let want = format!(
        "stat {}: no such file or directory: check that the calico/node container is running \
         and has mounted /var/lib/calico/",
        missing.display()
    );
    let pod = node.pod("a0de000000000000000000000000000a");
    let out = add_direct(&node, &pod, &bad);
    assert_eq!(out.refused(11, "ADD"), want);
    node.assert_nothing_left(&pod, "after ADD without nodename file");

    let good = node.plugin(Stack::Dual);
    let out = add_direct(&node, &pod, &good);
    assert!(out.ok(), "{}", out.describe());
    let out = del_direct(&node, &pod, &bad);
    assert_eq!(out.refused(11, "DEL"), want);
    assert!(
        pod.link(IFNAME).is_some(),
        "a refused DEL leaves the pod alone"
    );
    assert_eq!(node.reservations_of(&pod.rt.container_id).len(), 2);
    let out = del_direct(&node, &pod, &good);
    assert!(out.ok(), "{}", out.describe());
    node.assert_nothing_left(&pod, "after DEL");
}

/// `nodename_file_optional: true` skips the check; `nodename` names the node.
#[test]
fn nodename_file_optional_skips_the_check() {
    let node = Node::new();
    let mut plugin = node.plugin(Stack::V4);
    plugin["nodename_file"] = json!(node.dir.path().join("no-nodename"));
    plugin["nodename_file_optional"] = json!(true);
    plugin["nodename"] = json!("e2e-node");
    let pod = node.pod("a0de000000000000000000000000000b");
    let out = add_direct(&node, &pod, &plugin);
    assert!(out.ok(), "{}", out.describe());
    let out = del_direct(&node, &pod, &plugin);
    assert!(out.ok(), "{}", out.describe());
    node.assert_nothing_left(&pod, "after DEL");
}

/// An MTU file that does not hold a number: code 104 naming the file, nothing created.
#[test]
fn mtu_file_that_is_not_a_number_is_refused() {
    let node = Node::new();
    fs::write(node.mtu_file(), "fifteen hundred\n").expect("mtu file");
    let pod = node.pod("a7a0000000000000000000000000000a");
    let out = add_direct(&node, &pod, &node.plugin(Stack::V4));
    let msg = out.refused(104, "ADD with a bad MTU file");
    assert!(
        msg.contains(&node.mtu_file().display().to_string()),
        "names the file: {msg}"
    );
    node.assert_nothing_left(&pod, "after a bad MTU file");
}

/// `require_mtu_file: true` with no file: code 11 (calico-node has not written it yet),
/// nothing created; once the file is there ADD uses it.
#[test]
fn require_mtu_file_waits_for_the_file() {
    let node = Node::new();
    let mut plugin = node.plugin(Stack::V4);
    plugin["require_mtu_file"] = json!(true);
    let pod = node.pod("a7a0000000000000000000000000000b");
    let out = add_direct(&node, &pod, &plugin);
    let msg = out.refused(11, "ADD without the required MTU file");
    assert!(msg.to_lowercase().contains("mtu"), "{msg}");
    node.assert_nothing_left(&pod, "after a missing MTU file");

    fs::write(node.mtu_file(), "1440").expect("mtu file");
    let out = add_direct(&node, &pod, &plugin);
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(pod.iface()["mtu"], 1440);
}

#[test]
fn invalid_network_name_is_refused() {
    let node = Node::new();
    let pod = node.pod("a7a0000000000000000000000000000c");
    let mut conf = node.plugin_config("1.0.0", &node.plugin(Stack::V4));
    conf["name"] = json!("calico net!");
    let out = node.call("ADD", &conf, &pod.rt, &[]);
    out.refused(7, "ADD with an invalid network name");
    node.assert_nothing_left(&pod, "after an invalid name");
}

/// Only the Linux dataplane exists here: any `dataplane_options.type` is an error.
#[test]
fn dataplane_options_type_is_refused() {
    for options in [
        json!({"type": "grpc", "socket": "unix:///run/calico-e2e-none.sock"}),
        json!({"type": "bogus"}),
    ] {
        let node = Node::new();
        let pod = node.pod("a7a0000000000000000000000000000d");
        let mut plugin = node.plugin(Stack::V4);
        plugin["dataplane_options"] = options.clone();
        let out = add_direct(&node, &pod, &plugin);
        failed(&out, &format!("ADD with dataplane_options {options}"));
        node.assert_nothing_left(&pod, &format!("after dataplane_options {options}"));
    }
}

#[test]
fn netkit_device_type_is_unsupported() {
    let node = Node::new();
    let pod = node.pod("a7a0000000000000000000000000000e");
    let mut plugin = node.plugin(Stack::V4);
    plugin["device_type"] = json!("netkit");
    let out = add_direct(&node, &pod, &plugin);
    out.refused(2, "ADD with netkit");
    node.assert_nothing_left(&pod, "after netkit");
}

#[test]
fn unknown_device_type_is_invalid() {
    let node = Node::new();
    let pod = node.pod("a7a0000000000000000000000000000f");
    let mut plugin = node.plugin(Stack::V4);
    plugin["device_type"] = json!("macvtap");
    let out = add_direct(&node, &pod, &plugin);
    let msg = out.refused(7, "ADD with an unknown device_type");
    assert!(msg.contains("device_type"), "{msg}");
    node.assert_nothing_left(&pod, "after an unknown device_type");
}

/// The IPAM plugin is not on CNI_PATH: code 103, nothing created.
#[test]
fn missing_ipam_plugin_is_a_delegation_error() {
    let node = Node::new();
    let pod = node.pod("a7a0000000000000000000000000001a");
    let mut plugin = node.plugin(Stack::V4);
    plugin["ipam"]["type"] = json!("no-such-ipam");
    let out = add_direct(&node, &pod, &plugin);
    let msg = out.refused(103, "ADD with a missing IPAM plugin");
    assert!(msg.contains("no-such-ipam"), "{msg}");
    node.assert_nothing_left(&pod, "after a missing IPAM plugin");
    // Through the runner too: the error reaches the runtime as the plugin's.
    let list = conflist_named(NET, "1.0.0", &plugin);
    let err = node.runner().add(&list, &pod.rt).expect_err("ADD");
    assert_eq!(
        err.cni_error().map(|e| e.code),
        Some(ErrorCode::Delegation),
        "{err}"
    );
}
