//! Calico's standard conflist on the Kubernetes datastore (spec §3.1, §5): our
//! `10-calico.conflist` (calico + calico-ipam on Kubernetes + portmap + bandwidth,
//! `policy.type: k8s`) filled in for a node whose API server is a fake one holding Calico's
//! CRDs. Pods get addresses from the IPPools, talk, carry Calico's annotations; the pool,
//! family and address annotations of pods and namespaces are honoured; a refusal leaves no
//! veth and no IPAM allocation behind. Needs root.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cni_tests::kube_cluster::{
    add_fails, host_form, result_ips, status_path, within, Cluster, CONTAINER_ID, NETWORK, POD_IP,
    POD_IPS,
};
use cni_tests::pod::{assert_tcp, k8s_host_veth, Pod};
use serde_json::json;

const CONFLIST: &str = "10-calico.conflist";

fn handle(container: &str) -> String {
    format!("{NETWORK}.{container}")
}

/// The node's pools: IPv4 `pool-a` (the lower half of [`Node::pod_subnet_v4`]) and
/// `pool-b` (the upper half), IPv6 `pool-v6` ([`Node::pod_subnet_v6`]).
struct Pools {
    a: String,
    b: String,
    v6: String,
}

fn pools(c: &Cluster) -> Pools {
    let v4 = c.node.pod_subnet_v4();
    let base: Ipv4Addr = v4
        .split('/')
        .next()
        .and_then(|b| b.parse().ok())
        .expect("v4 subnet");
    let a = format!("{base}/25");
    let b = format!("{}/25", Ipv4Addr::from(u32::from(base) + 128));
    let v6 = c.node.pod_subnet_v6();
    c.ip_pool("pool-a", &a, 27);
    c.ip_pool("pool-b", &b, 27);
    c.ip_pool("pool-v6", &v6, 122);
    Pools { a, b, v6 }
}

/// Nothing left: no veth or route in the node, only `lo` in the pod, no allocation and no
/// handle in calico-ipam's objects.
fn assert_nothing_left(c: &Cluster, pod: &Pod, what: &str) {
    c.assert_nothing_left(pod, what);
    assert_eq!(c.ipam_allocations(), BTreeMap::new(), "{what}: allocations");
    assert_eq!(c.ipam_handles(), Vec::<String>::new(), "{what}: handles");
}

#[test]
fn calico_k8s_standard_conflist_wires_two_pods_that_talk() {
    let c = Cluster::new();
    let p = pools(&c);
    c.pod("ns1", "web", json!({}));
    c.pod("ns1", "db", json!({}));
    let list = c.conflist(CONFLIST, |_| {});
    let runner = c.runner();
    let web = c.sandbox("k8s-ci-web", "ns1", "web");
    let db = c.sandbox("k8s-ci-db", "ns1", "db");
    let ip1 = result_ips(&runner.add(&list, &web.rt).expect("ADD web"));
    let ip2 = result_ips(&runner.add(&list, &db.rt).expect("ADD db"));
    assert_eq!((ip1.len(), ip2.len()), (1, 1), "IPv4 only by default");
    let (ip1, ip2) = (ip1[0], ip2[0]);
    assert!(within(&p.a, ip1) || within(&p.b, ip1), "{ip1}");
    assert_eq!(web.addresses(), vec![host_form(ip1)]);
    assert_eq!(
        c.ipam_allocations(),
        BTreeMap::from([
            (ip1.to_string(), handle("k8s-ci-web")),
            (ip2.to_string(), handle("k8s-ci-db"))
        ])
    );
    let annotations = c.calico_annotations("ns1", "web");
    assert_eq!(
        annotations,
        BTreeMap::from([
            (CONTAINER_ID.to_string(), "k8s-ci-web".to_string()),
            (POD_IP.to_string(), host_form(ip1)),
            (POD_IPS.to_string(), host_form(ip1)),
        ])
    );
    assert_tcp(&web.netns, ip1, &db.netns, ip2, "db to web");

    runner.del(&list, &web.rt).expect("DEL web");
    assert_eq!(c.calico_annotations("ns1", "web")[POD_IP], "");
    assert_eq!(
        c.ipam_allocations(),
        BTreeMap::from([(ip2.to_string(), handle("k8s-ci-db"))])
    );
    runner.del(&list, &web.rt).expect("DEL web again");
    runner.del(&list, &db.rt).expect("DEL db");
    assert_nothing_left(&c, &web, "after both DELs");
}

#[test]
fn calico_k8s_pool_and_family_annotations_choose_the_pools() {
    let c = Cluster::new();
    let p = pools(&c);
    let list = c.conflist(CONFLIST, |_| {});
    let runner = c.runner();
    // The namespace's default, by name.
    c.namespace(
        "team-b",
        json!({"cni.projectcalico.org/ipv4pools": "[\"pool-b\"]"}),
    );
    c.pod("team-b", "b1", json!({}));
    // The pod's own choice wins, by CIDR.
    c.pod(
        "team-b",
        "a1",
        json!({"cni.projectcalico.org/ipv4pools": format!("[\"{}\"]", p.a)}),
    );
    // IPv6 only, from the v6 pool.
    c.pod(
        "team-b",
        "six",
        json!({"cni.projectcalico.org/ipFamilies": "[\"IPv6\"]",
               "cni.projectcalico.org/ipv6pools": "[\"pool-v6\"]"}),
    );
    // Both families.
    c.pod(
        "team-b",
        "dual",
        json!({"cni.projectcalico.org/ipFamilies": "[\"IPv4\", \"IPv6\"]"}),
    );
    let b1 = c.sandbox("k8s-pool-b1", "team-b", "b1");
    let a1 = c.sandbox("k8s-pool-a1", "team-b", "a1");
    let six = c.sandbox("k8s-pool-six", "team-b", "six");
    let dual = c.sandbox("k8s-pool-dual", "team-b", "dual");
    let ips_b1 = result_ips(&runner.add(&list, &b1.rt).expect("ADD b1"));
    let ips_a1 = result_ips(&runner.add(&list, &a1.rt).expect("ADD a1"));
    let ips_six = result_ips(&runner.add(&list, &six.rt).expect("ADD six"));
    let ips_dual = result_ips(&runner.add(&list, &dual.rt).expect("ADD dual"));
    assert!(
        ips_b1.len() == 1 && within(&p.b, ips_b1[0]),
        "{ips_b1:?} from {}",
        p.b
    );
    assert!(
        ips_a1.len() == 1 && within(&p.a, ips_a1[0]),
        "{ips_a1:?} from {}",
        p.a
    );
    assert!(
        ips_six.len() == 1 && within(&p.v6, ips_six[0]),
        "{ips_six:?}"
    );
    assert_eq!(ips_dual.len(), 2, "{ips_dual:?}");
    assert!(
        within(&p.b, ips_dual[0]),
        "the namespace's pool: {ips_dual:?}"
    );
    assert!(within(&p.v6, ips_dual[1]), "{ips_dual:?}");
    assert_eq!(six.addresses(), vec![host_form(ips_six[0])]);
    assert_eq!(
        c.calico_annotations("team-b", "dual")[POD_IPS],
        format!("{},{}", host_form(ips_dual[0]), host_form(ips_dual[1]))
    );
    assert_tcp(
        &six.netns,
        ips_six[0],
        &dual.netns,
        ips_dual[1],
        "over IPv6",
    );
    for pod in [&b1, &a1, &six, &dual] {
        runner.del(&list, &pod.rt).expect("DEL");
    }
    assert_nothing_left(&c, &b1, "after DELs");
}

#[test]
fn calico_k8s_bad_pool_annotations_take_no_address() {
    let c = Cluster::new();
    pools(&c);
    let list = c.conflist(CONFLIST, |_| {});
    for (name, annotations, code, needle) in [
        (
            "badjson",
            json!({"cni.projectcalico.org/ipv4pools": "[pool-a"}),
            4,
            "cni.projectcalico.org/ipv4pools",
        ),
        (
            "badfamily",
            json!({"cni.projectcalico.org/ipFamilies": "[\"IPv5\"]"}),
            4,
            "IPv5",
        ),
        (
            "both",
            json!({"cni.projectcalico.org/ipAddrs": "[\"10.0.0.1\"]",
                   "cni.projectcalico.org/ipAddrsNoIpam": "[\"10.0.0.1\"]"}),
            4,
            "can't have both annotations",
        ),
    ] {
        c.pod("ns1", name, annotations);
        let pod = c.sandbox(&format!("k8s-{name}"), "ns1", name);
        c.api.clear_requests();
        let (got, msg) = add_fails(&c, &list, &pod);
        assert_eq!(got, code, "{name}: {msg}");
        assert!(msg.contains(needle), "{name}: {msg}");
        let ipam_calls: Vec<_> = c
            .api
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("ipam") || r.path.contains("ippools"))
            .collect();
        assert!(
            ipam_calls.is_empty(),
            "{name}: calico-ipam ran: {ipam_calls:?}"
        );
        assert_nothing_left(&c, &pod, name);
    }

    // A pool that does not exist: calico-ipam refuses, nothing is held.
    c.pod(
        "ns1",
        "nopool",
        json!({"cni.projectcalico.org/ipv4pools": "[\"no-such-pool\"]"}),
    );
    let pod = c.sandbox("k8s-nopool", "ns1", "nopool");
    let (_, msg) = add_fails(&c, &list, &pod);
    assert!(msg.contains("no-such-pool"), "{msg}");
    assert_nothing_left(&c, &pod, "no such pool");
}

#[test]
fn calico_k8s_ip_addrs_are_taken_through_ipam() {
    let c = Cluster::new();
    let p = pools(&c);
    let list = c.conflist(CONFLIST, |_| {});
    let runner = c.runner();
    let v4: IpAddr = {
        let base: Ipv4Addr =
            p.a.split('/')
                .next()
                .and_then(|b| b.parse().ok())
                .expect("a");
        IpAddr::V4(Ipv4Addr::from(u32::from(base) + 77))
    };
    let v6: IpAddr = {
        let base: Ipv6Addr =
            p.v6.split('/')
                .next()
                .and_then(|b| b.parse().ok())
                .expect("v6");
        IpAddr::V6(Ipv6Addr::from(u128::from(base) + 0x77))
    };
    c.pod(
        "ns1",
        "fixed",
        json!({"cni.projectcalico.org/ipAddrs": format!("[\"{v4}\", \"{v6}\"]")}),
    );
    let pod = c.sandbox("k8s-fixed", "ns1", "fixed");
    let ips = result_ips(&runner.add(&list, &pod.rt).expect("ADD"));
    assert_eq!(ips, vec![v4, v6]);
    let mut on_eth0 = vec![host_form(v4), host_form(v6)];
    on_eth0.sort();
    assert_eq!(pod.addresses(), on_eth0);
    assert_eq!(
        c.ipam_allocations(),
        BTreeMap::from([
            (v4.to_string(), handle("k8s-fixed")),
            (v6.to_string(), handle("k8s-fixed"))
        ])
    );

    // Another pod asking for the same address is refused, and holds nothing.
    c.pod(
        "ns1",
        "twin",
        json!({"cni.projectcalico.org/ipAddrs": format!("[\"{v4}\"]")}),
    );
    let twin = c.sandbox("k8s-twin", "ns1", "twin");
    let (_, msg) = add_fails(&c, &list, &twin);
    assert!(msg.contains(&v4.to_string()), "{msg}");
    assert!(twin
        .netns
        .exec(&["ip", "link", "show", "eth0"])
        .map(|o| !o.status.success())
        .unwrap_or(true));
    assert_eq!(c.ipam_allocations().len(), 2);

    runner.del(&list, &pod.rt).expect("DEL");
    runner.del(&list, &twin.rt).expect("DEL twin");
    assert_nothing_left(&c, &pod, "after DEL");
}

#[test]
fn calico_k8s_ip_addrs_follow_the_pod_to_a_new_sandbox() {
    // A pod with a fixed address gets a new sandbox (a restart, a node reboot) before the old
    // sandbox's DEL: the endpoint's address is released by address first, so the new
    // sandbox gets it, and the old sandbox's late DEL takes nothing from the new one.
    let c = Cluster::new();
    let p = pools(&c);
    let list = c.conflist(CONFLIST, |_| {});
    let runner = c.runner();
    let base: Ipv4Addr =
        p.a.split('/')
            .next()
            .and_then(|b| b.parse().ok())
            .expect("a");
    let fixed = IpAddr::V4(Ipv4Addr::from(u32::from(base) + 42));
    c.pod(
        "ns1",
        "sticky",
        json!({"cni.projectcalico.org/ipAddrs": format!("[\"{fixed}\"]")}),
    );
    let old = c.sandbox("k8s-sticky-old", "ns1", "sticky");
    assert_eq!(
        result_ips(&runner.add(&list, &old.rt).expect("ADD old")),
        vec![fixed]
    );
    let new = c.sandbox("k8s-sticky-new", "ns1", "sticky");
    let result = runner
        .add(&list, &new.rt)
        .expect("ADD of the new sandbox takes the fixed address over");
    assert_eq!(result_ips(&result), vec![fixed]);
    assert_eq!(
        c.ipam_allocations(),
        BTreeMap::from([(fixed.to_string(), handle("k8s-sticky-new"))])
    );
    assert_eq!(c.ipam_handles(), vec![handle("k8s-sticky-new")]);

    // The old sandbox's DEL: the Pod names the new container, so its annotations stay, and
    // the new sandbox keeps its address and its veth.
    runner.del(&list, &old.rt).expect("DEL old");
    let annotations = c.calico_annotations("ns1", "sticky");
    assert_eq!(
        annotations.get(POD_IP).map(String::as_str),
        Some(host_form(fixed).as_str())
    );
    assert_eq!(
        c.ipam_allocations(),
        BTreeMap::from([(fixed.to_string(), handle("k8s-sticky-new"))])
    );
    assert_eq!(new.addresses(), vec![host_form(fixed)]);

    runner.del(&list, &new.rt).expect("DEL new");
    assert_nothing_left(&c, &new, "after both DELs");
}

#[test]
fn calico_k8s_ip_addrs_no_ipam_needs_the_feature_and_takes_nothing_from_ipam() {
    let c = Cluster::new();
    pools(&c);
    let fixed: IpAddr = "192.168.77.7".parse().expect("ip");
    c.pod(
        "ns1",
        "raw",
        json!({"cni.projectcalico.org/ipAddrsNoIpam": format!("[\"{fixed}\"]")}),
    );
    let pod = c.sandbox("k8s-raw", "ns1", "raw");

    let off = c.conflist(CONFLIST, |_| {});
    let (code, msg) = add_fails(&c, &off, &pod);
    assert_eq!(
        (code, msg.as_str()),
        (7, "requested feature is not enabled: ip_addrs_no_ipam")
    );
    assert_nothing_left(&c, &pod, "feature off");

    let on = c.conflist(CONFLIST, |l| {
        l["plugins"][0]["feature_control"] = json!({"ip_addrs_no_ipam": true});
    });
    c.api.clear_requests();
    let ips = result_ips(&c.runner().add(&on, &pod.rt).expect("ADD"));
    assert_eq!(ips, vec![fixed]);
    assert_eq!(pod.addresses(), vec![host_form(fixed)]);
    assert_eq!(c.calico_annotations("ns1", "raw")[POD_IP], host_form(fixed));
    let veth = k8s_host_veth("cali", "ns1", "raw");
    assert!(c.node.link(&veth).is_some());
    assert!(
        c.api
            .requests()
            .iter()
            .all(|r| !r.path.contains("ipam") && !r.path.contains("ippools")),
        "calico-ipam never ran"
    );
    assert_eq!(c.ipam_allocations(), BTreeMap::new());
    c.runner().del(&on, &pod.rt).expect("DEL");
    assert_nothing_left(&c, &pod, "after DEL");
}

/// On the Kubernetes datastore Felix honours `floatingIPs` from the Pod by itself: the plugin
/// is the only gate. Closed (the default), a pod with the annotation takes no address; open,
/// it is wired as any other.
#[test]
fn calico_k8s_floating_ips_need_the_feature() {
    let c = Cluster::new();
    pools(&c);
    c.pod(
        "ns1",
        "edge",
        json!({"cni.projectcalico.org/floatingIPs": "[\"192.0.2.7\"]"}),
    );
    let pod = c.sandbox("k8s-floating", "ns1", "edge");
    let off = c.conflist(CONFLIST, |_| {});
    let (code, msg) = add_fails(&c, &off, &pod);
    assert_eq!(
        (code, msg.as_str()),
        (7, "requested feature is not enabled: floating_ips")
    );
    assert_nothing_left(&c, &pod, "feature off");
    assert_eq!(
        c.ipam_allocations(),
        BTreeMap::new(),
        "no address was taken"
    );

    let on = c.conflist(CONFLIST, |l| {
        l["plugins"][0]["feature_control"] = json!({"floating_ips": true});
    });
    let ips = result_ips(&c.runner().add(&on, &pod.rt).expect("ADD"));
    assert_eq!(ips.len(), 1, "{ips:?}");
    c.runner().del(&on, &pod.rt).expect("DEL");
    assert_nothing_left(&c, &pod, "after DEL");
}

#[test]
fn calico_k8s_forbidden_status_patch_gives_the_address_back() {
    let c = Cluster::new();
    pools(&c);
    c.pod("ns1", "web", json!({}));
    let list = c.conflist(CONFLIST, |_| {});
    let pod = c.sandbox("k8s-ci-forbidden", "ns1", "web");
    c.api.fail_next("PATCH", &status_path("ns1", "web"), 1, 403);
    let (code, msg) = add_fails(&c, &list, &pod);
    assert_eq!(code, 11, "{msg}");
    assert!(
        msg.contains("\"patch\"") && msg.contains("pods/status"),
        "{msg}"
    );
    assert_nothing_left(&c, &pod, "refused PATCH");
}
