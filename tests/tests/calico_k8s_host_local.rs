//! The calico plugin in Kubernetes mode with host-local on the node's pod CIDRs (spec §3,
//! §3.1, §5.1, §5.3): our `10-calico-host-local.conflist` (calico with host-local on
//! `usePodCidr`, then portmap and bandwidth; the Kubernetes datastore, `policy.type: k8s`)
//! filled in for a node whose API server is a fake one. Pods get their addresses from the
//! Node's podCIDRs, talk over TCP, carry Calico's annotations; DEL clears them with
//! preconditions, leaves a restarted pod alone, and every refusal leaves nothing behind.
//! Needs root.

use std::net::IpAddr;
use std::time::Duration;

use cni_tests::kube_cluster::{
    add_fails, host_form, refusal, result_ips, status_path, within, Cluster, CONTAINER_ID, MTU,
    NODE_NAME, POD_IP, POD_IPS,
};
use cni_tests::pod::{assert_tcp, k8s_host_veth, wait_for};
use serde_json::{json, Value};

const CONFLIST: &str = "10-calico-host-local.conflist";

/// The annotations ADD writes for these addresses.
fn added(ips: &[IpAddr], container: &str) -> Vec<(String, String)> {
    let all: Vec<String> = ips.iter().map(|ip| host_form(*ip)).collect();
    let mut v = vec![
        (CONTAINER_ID.to_string(), container.to_string()),
        (POD_IP.to_string(), all[0].clone()),
        (POD_IPS.to_string(), all.join(",")),
    ];
    v.sort();
    v
}

fn calico_annotations(c: &Cluster, ns: &str, pod: &str) -> Vec<(String, String)> {
    c.calico_annotations(ns, pod).into_iter().collect()
}

#[test]
fn calico_k8s_standard_conflist_wires_two_pods_that_talk_and_annotates_them() {
    let c = Cluster::new();
    c.pod("ns1", "web", json!({}));
    c.pod("ns1", "db", json!({}));
    let list = c.conflist(CONFLIST, |_| {});
    let runner = c.runner();
    let web = c.sandbox("k8s-hl-web", "ns1", "web");
    let db = c.sandbox("k8s-hl-db", "ns1", "db");

    c.api.clear_requests();
    let r1 = runner.add(&list, &web.rt).expect("ADD web");
    // One connection's worth of round trips: readiness, the Node's podCIDRs, the pod's
    // namespace and the pod (policy.type k8s), then the annotations.
    let trips: Vec<(String, String)> = c
        .api
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    let expected: Vec<(String, String)> = [
        (
            "GET",
            "/apis/crd.projectcalico.org/v1/clusterinformations/default".to_string(),
        ),
        ("GET", format!("/api/v1/nodes/{NODE_NAME}")),
        ("GET", "/api/v1/namespaces/ns1".to_string()),
        ("GET", "/api/v1/namespaces/ns1/pods/web".to_string()),
        ("PATCH", status_path("ns1", "web")),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p))
    .collect();
    assert_eq!(trips, expected);
    let r2 = runner.add(&list, &db.rt).expect("ADD db");

    let ip1 = result_ips(&r1);
    let ip2 = result_ips(&r2);
    assert_eq!((ip1.len(), ip2.len()), (1, 1), "{r1} {r2}");
    let (ip1, ip2) = (ip1[0], ip2[0]);
    assert_ne!(ip1, ip2);
    let pod_cidr = c.node.pod_subnet_v4();
    for (pod, ip, name, id) in [
        (&web, ip1, "web", "k8s-hl-web"),
        (&db, ip2, "db", "k8s-hl-db"),
    ] {
        assert!(
            within(&pod_cidr, ip),
            "{ip} is from the node's podCIDR {pod_cidr}"
        );
        assert_eq!(pod.addresses(), vec![host_form(ip)], "on eth0");
        assert_eq!(pod.iface()["mtu"], MTU);
        let veth = k8s_host_veth("cali", "ns1", name);
        assert!(c.node.link(&veth).is_some(), "host veth {veth}");
        assert_eq!(c.reservations_of(id), vec![ip.to_string()]);
        assert_eq!(calico_annotations(&c, "ns1", name), added(&[ip], id));
    }
    // The PATCH is Calico's, byte for byte, through the status subresource.
    let patches = c.requests_to("PATCH", &status_path("ns1", "web"));
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(
        patches[0].body,
        format!(
            r#"{{"metadata":{{"annotations":{{"{POD_IP}":"{ip1}/32","{POD_IPS}":"{ip1}/32","{CONTAINER_ID}":"k8s-hl-web"}}}}}}"#
        )
    );

    assert_tcp(&web.netns, ip1, &db.netns, ip2, "db to web");
    assert_tcp(&db.netns, ip2, &web.netns, ip1, "web to db");

    // DEL: the pod's addresses are cleared, conditionally on the pod as read.
    let before = c.api.get("pods", "ns1", "web").expect("pod");
    c.api.clear_requests();
    runner.del(&list, &web.rt).expect("DEL web");
    let patches = c.requests_to("PATCH", &status_path("ns1", "web"));
    assert_eq!(patches.len(), 1, "{:?}", c.api.requests());
    let body: Value = serde_json::from_str(&patches[0].body).expect("JSON");
    assert_eq!(
        body,
        json!({"metadata": {"resourceVersion": before["metadata"]["resourceVersion"],
                            "uid": before["metadata"]["uid"],
                            "annotations": {POD_IP: "", POD_IPS: ""}}})
    );
    let mut cleared = vec![
        (CONTAINER_ID.to_string(), "k8s-hl-web".to_string()),
        (POD_IP.to_string(), String::new()),
        (POD_IPS.to_string(), String::new()),
    ];
    cleared.sort();
    assert_eq!(calico_annotations(&c, "ns1", "web"), cleared);
    assert!(c.node.link(&k8s_host_veth("cali", "ns1", "web")).is_none());
    assert!(c.reservations_of("k8s-hl-web").is_empty());

    // A second DEL has nothing left to do, and succeeds.
    c.api.clear_requests();
    runner.del(&list, &web.rt).expect("DEL web again");
    assert!(c
        .requests_to("PATCH", &status_path("ns1", "web"))
        .is_empty());

    runner.del(&list, &db.rt).expect("DEL db");
    c.assert_nothing_left(&web, "after both DELs");
}

#[test]
fn calico_k8s_dual_stack_pod_cidrs_are_used() {
    let c = Cluster::new();
    let (v4, v6) = (c.node.pod_subnet_v4(), c.node.pod_subnet_v6());
    c.set_pod_cidrs(&[&v4, &v6]);
    c.pod("ns1", "dual", json!({}));
    c.pod("ns1", "peer", json!({}));
    let data_dir = c.node.data_dir();
    // CNI 1.0.0, so that CHECK runs too.
    let list = c.conflist(CONFLIST, |l| {
        l["cniVersion"] = json!("1.0.0");
        l["plugins"][0]["ipam"] = json!({"type": "host-local", "dataDir": data_dir,
            "ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]]});
    });
    let runner = c.runner();
    let dual = c.sandbox("k8s-dual-1", "ns1", "dual");
    let peer = c.sandbox("k8s-dual-2", "ns1", "peer");
    let ips = result_ips(&runner.add(&list, &dual.rt).expect("ADD dual"));
    let peer_ips = result_ips(&runner.add(&list, &peer.rt).expect("ADD peer"));
    assert_eq!(ips.len(), 2);
    assert!(ips[0].is_ipv4() && within(&v4, ips[0]), "{ips:?} in {v4}");
    assert!(ips[1].is_ipv6() && within(&v6, ips[1]), "{ips:?} in {v6}");
    let mut on_eth0: Vec<String> = ips.iter().map(|ip| host_form(*ip)).collect();
    on_eth0.sort();
    assert_eq!(dual.addresses(), on_eth0);
    assert_eq!(
        calico_annotations(&c, "ns1", "dual"),
        added(&ips, "k8s-dual-1")
    );
    assert_tcp(&dual.netns, ips[1], &peer.netns, peer_ips[1], "v6");
    assert_tcp(&dual.netns, ips[0], &peer.netns, peer_ips[0], "v4");
    runner.check(&list, &dual.rt).expect("CHECK");

    // DEL needs no podCIDR: host-local releases by container id.
    c.api.clear_requests();
    runner.del(&list, &dual.rt).expect("DEL dual");
    assert!(c
        .requests_to("GET", &format!("/api/v1/nodes/{NODE_NAME}"))
        .is_empty());
    assert!(c.reservations_of("k8s-dual-1").is_empty());
    runner.del(&list, &peer.rt).expect("DEL peer");
    c.assert_nothing_left(&dual, "dual stack");
}

#[test]
fn calico_k8s_a_stale_del_leaves_the_running_pod_alone() {
    let c = Cluster::new();
    c.pod("ns1", "sts-0", json!({}));
    let list = c.conflist(CONFLIST, |_| {});
    let runner = c.runner();
    let old = c.sandbox("k8s-stale-old", "ns1", "sts-0");
    let new = c.sandbox("k8s-stale-new", "ns1", "sts-0");
    runner.add(&list, &old.rt).expect("ADD old sandbox");
    // The pod restarts: a new sandbox, the same pod (and host veth name).
    let ip = result_ips(&runner.add(&list, &new.rt).expect("ADD new sandbox"))[0];
    let veth = k8s_host_veth("cali", "ns1", "sts-0");
    let annotations = calico_annotations(&c, "ns1", "sts-0");
    assert_eq!(annotations, added(&[ip], "k8s-stale-new"));

    // The kubelet's late DEL of the old sandbox.
    c.api.clear_requests();
    runner.del(&list, &old.rt).expect("stale DEL");
    assert!(
        c.requests_to("PATCH", &status_path("ns1", "sts-0"))
            .is_empty(),
        "the running pod's annotations are not touched"
    );
    assert_eq!(calico_annotations(&c, "ns1", "sts-0"), annotations);
    let host = c.node.link(&veth).expect("the running pod's veth stays");
    assert_eq!(host["link_index"], new.iface()["ifindex"]);
    assert_eq!(new.addresses(), vec![host_form(ip)]);
    assert_eq!(
        c.node.routes_via(cni_tests::pod::Family::V4, &veth),
        vec![format!("{ip} dev {veth} scope link")]
    );
    assert_eq!(c.reservations_of("k8s-stale-new"), vec![ip.to_string()]);
    assert!(
        c.reservations_of("k8s-stale-old").is_empty(),
        "its own address goes"
    );

    runner.del(&list, &new.rt).expect("DEL new sandbox");
    assert_eq!(c.calico_annotations("ns1", "sts-0")[POD_IP], "");
    c.assert_nothing_left(&new, "after the real DEL");
}

#[test]
fn calico_k8s_not_ready_refuses_add_and_del() {
    let c = Cluster::new();
    c.pod("ns1", "web", json!({}));
    let list = c.conflist(CONFLIST, |_| {});
    let pod = c.sandbox("k8s-notready", "ns1", "web");
    for ready in [Some(false), None] {
        c.set_ready(ready);
        c.api.clear_requests();
        let (code, msg) = add_fails(&c, &list, &pod);
        assert_eq!(code, 11, "{ready:?}: {msg}");
        assert!(
            msg.contains("Calico is currently not ready to process requests"),
            "{msg}"
        );
        assert_eq!(c.api.requests().len(), 1, "only the readiness read");
        c.assert_nothing_left(&pod, "refused ADD");
        let err = c.runner().del(&list, &pod.rt).expect_err("DEL refused");
        assert_eq!(refusal(&err).0, 11);
    }
    // Networked while ready; DEL refused while not, with nothing torn down.
    c.set_ready(Some(true));
    let ip = result_ips(&c.runner().add(&list, &pod.rt).expect("ADD"))[0];
    c.set_ready(Some(false));
    let err = c.runner().del(&list, &pod.rt).expect_err("DEL refused");
    assert_eq!(refusal(&err).0, 11);
    assert_eq!(pod.addresses(), vec![host_form(ip)]);
    assert_eq!(c.reservations_of("k8s-notready"), vec![ip.to_string()]);
    c.set_ready(Some(true));
    c.runner().del(&list, &pod.rt).expect("DEL once ready");
    c.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn calico_k8s_api_server_down_and_bad_credentials_are_retryable_and_say_so() {
    let c = Cluster::new();
    c.pod("ns1", "web", json!({}));
    let pod = c.sandbox("k8s-creds", "ns1", "web");

    // Nothing listens on port 1 of the node's loopback.
    let down = c.node.dir.path().join("kubeconfig-down");
    let text = std::fs::read_to_string(&c.kubeconfig).expect("kubeconfig");
    let text = text.replace(&c.api.url(), "http://127.0.0.1:1");
    std::fs::write(&down, &text).expect("write");
    let list = c.conflist(CONFLIST, |l| {
        l["plugins"][0]["kubernetes"]["kubeconfig"] = json!(down);
    });
    let (code, msg) = add_fails(&c, &list, &pod);
    assert_eq!(code, 11, "{msg}");
    assert!(
        msg.starts_with("error getting ClusterInformation: "),
        "{msg}"
    );
    assert!(msg.contains("unreachable"), "{msg}");
    c.assert_nothing_left(&pod, "API server down");

    // An expired token: 401 on every request.
    c.api.set_require_token(true);
    let expired = c.node.dir.path().join("kubeconfig-expired");
    let stale_token = "expired-token-0123456789";
    let text = std::fs::read_to_string(&c.kubeconfig).expect("kubeconfig");
    std::fs::write(&expired, text.replace(c.api.token(), stale_token)).expect("write");
    let list = c.conflist(CONFLIST, |l| {
        l["plugins"][0]["kubernetes"]["kubeconfig"] = json!(expired);
    });
    let conf = Cluster::calico_conf(&list);
    for command in ["ADD", "DEL"] {
        let out = c.node.call(command, &conf, &pod.rt, &[]);
        let msg = out.refused(11, command);
        assert!(msg.contains("Unauthorized"), "{msg}");
        assert!(
            msg.starts_with("error getting ClusterInformation: "),
            "{msg}"
        );
        for secret in [stale_token, c.api.token()] {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "{command}: a token leaked: {} {}",
                out.stdout,
                out.stderr
            );
        }
    }
    c.assert_nothing_left(&pod, "unauthorized");
    let log = std::fs::read_to_string(c.node.dir.path().join("cni.log")).unwrap_or_default();
    assert!(log.contains("Unauthorized"), "the refusal is logged: {log}");
    for secret in [stale_token, c.api.token()] {
        assert!(!log.contains(secret), "a token reached the log file");
    }
}

#[test]
fn calico_k8s_forbidden_status_patch_rolls_everything_back() {
    let c = Cluster::new();
    c.pod("ns1", "web", json!({}));
    let list = c.conflist(CONFLIST, |_| {});
    let pod = c.sandbox("k8s-forbidden", "ns1", "web");
    c.api.fail_next("PATCH", &status_path("ns1", "web"), 1, 403);
    let (code, msg) = add_fails(&c, &list, &pod);
    assert_eq!(code, 11, "{msg}");
    assert!(
        msg.contains("\"patch\"") && msg.contains("pods/status"),
        "names the RBAC verb and resource: {msg}"
    );
    c.assert_nothing_left(&pod, "refused PATCH");
    assert!(c.calico_annotations("ns1", "web").is_empty());
    // Once the verb is granted, the same pod comes up.
    c.runner().add(&list, &pod.rt).expect("ADD");
    c.runner().del(&list, &pod.rt).expect("DEL");
    c.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn calico_k8s_a_missing_pod_or_pod_cidr_refuses_add_before_an_address_is_taken() {
    let c = Cluster::new();
    let list = c.conflist(CONFLIST, |_| {});
    let ghost = c.sandbox("k8s-ghost", "ns1", "ghost");
    let (code, msg) = add_fails(&c, &list, &ghost);
    assert_eq!(msg, "pod ns1/ghost not found");
    assert_eq!(code, 106);
    c.assert_nothing_left(&ghost, "no pod");

    c.pod("ns1", "web", json!({}));
    let pod = c.sandbox("k8s-nocidr", "ns1", "web");
    c.set_pod_cidrs(&[]);
    let (code, msg) = add_fails(&c, &list, &pod);
    assert_eq!((code, msg.as_str()), (11, "no podCidr for node e2e-node"));
    c.assert_nothing_left(&pod, "no podCIDR");

    let v4 = c.node.pod_subnet_v4();
    c.set_pod_cidrs(&[&v4]);
    let data_dir = c.node.data_dir();
    let dual = c.conflist(CONFLIST, |l| {
        l["plugins"][0]["ipam"] = json!({"type": "host-local", "dataDir": data_dir,
            "ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]]});
    });
    let (code, msg) = add_fails(&c, &dual, &pod);
    assert_eq!(
        (code, msg.as_str()),
        (
            7,
            "usePodCidrIPv6 found but there is no IPv6 CIDR configured"
        )
    );
    c.assert_nothing_left(&pod, "no v6 podCIDR");
}

#[test]
fn calico_k8s_hw_addr_annotation_sets_the_pods_mac() {
    let c = Cluster::new();
    let mac = "0a:58:0a:f4:01:05";
    c.pod("ns1", "mac", json!({"cni.projectcalico.org/hwAddr": mac}));
    let list = c.conflist(CONFLIST, |_| {});
    let pod = c.sandbox("k8s-mac", "ns1", "mac");
    let result = c.runner().add(&list, &pod.rt).expect("ADD");
    assert_eq!(pod.iface()["address"], mac);
    assert_eq!(result["interfaces"][1]["mac"], mac, "{result}");
    let veth = k8s_host_veth("cali", "ns1", "mac");
    assert_eq!(
        c.node.link(&veth).expect("host veth")["address"],
        "ee:ee:ee:ee:ee:ee"
    );
    c.runner().del(&list, &pod.rt).expect("DEL");
    c.assert_nothing_left(&pod, "after DEL");

    // A MAC that cannot be used is refused before host-local runs: host-local's record
    // of the last address it handed out does not move.
    let last = c.node.data_dir().join("k8s-pod-network/last_reserved_ip.0");
    let before = std::fs::read_to_string(&last).expect("host-local ran once");
    for bad in ["0a:58:0a:f4:01", "01:00:5e:00:00:01"] {
        c.pod(
            "ns1",
            "badmac",
            json!({"cni.projectcalico.org/hwAddr": bad}),
        );
        let pod = c.sandbox("k8s-badmac", "ns1", "badmac");
        let (code, msg) = add_fails(&c, &list, &pod);
        assert_eq!(code, 4, "{msg}");
        assert!(msg.contains("cni.projectcalico.org/hwAddr"), "{msg}");
        c.assert_nothing_left(&pod, bad);
        assert_eq!(std::fs::read_to_string(&last).expect("still there"), before);
    }
}

#[test]
fn calico_k8s_del_retries_a_changing_pod_and_then_gives_up_without_tearing_down() {
    let c = Cluster::new();
    c.pod("ns1", "web", json!({}));
    let list = c.conflist(CONFLIST, |_| {});
    let runner = c.runner();
    let pod = c.sandbox("k8s-conflict", "ns1", "web");
    runner.add(&list, &pod.rt).expect("ADD");

    // Two conflicts: the third read-and-patch goes through.
    c.api.fail_next("PATCH", &status_path("ns1", "web"), 2, 409);
    c.api.clear_requests();
    runner.del(&list, &pod.rt).expect("DEL after conflicts");
    assert_eq!(
        c.requests_to("GET", "/api/v1/namespaces/ns1/pods/web")
            .len(),
        3
    );
    assert_eq!(c.requests_to("PATCH", &status_path("ns1", "web")).len(), 3);
    assert_eq!(c.calico_annotations("ns1", "web")[POD_IP], "");
    c.assert_nothing_left(&pod, "DEL after conflicts");

    // Six: DEL gives up with Calico's message, and nothing is torn down.
    let ip = result_ips(&runner.add(&list, &pod.rt).expect("ADD again"))[0];
    c.api.fail_next("PATCH", &status_path("ns1", "web"), 6, 409);
    let err = runner.del(&list, &pod.rt).expect_err("DEL gives up");
    assert_eq!(
        refusal(&err),
        (
            11,
            "error deleting endpoint: endpoint was modified before it could be deleted".into()
        )
    );
    assert_eq!(pod.addresses(), vec![host_form(ip)]);
    assert_eq!(c.reservations_of("k8s-conflict"), vec![ip.to_string()]);
    assert_eq!(c.calico_annotations("ns1", "web")[POD_IP], host_form(ip));
    runner.del(&list, &pod.rt).expect("DEL retried");
    c.assert_nothing_left(&pod, "retried DEL");
}

#[test]
fn calico_k8s_del_stops_when_the_pod_cannot_be_read_and_goes_on_when_it_is_gone() {
    let c = Cluster::new();
    c.pod("ns1", "web", json!({}));
    let list = c.conflist(CONFLIST, |_| {});
    let runner = c.runner();
    let pod = c.sandbox("k8s-unreadable", "ns1", "web");
    let ip = result_ips(&runner.add(&list, &pod.rt).expect("ADD"))[0];

    c.api
        .fail_next("GET", "/api/v1/namespaces/ns1/pods/web", 1, 500);
    let (code, msg) = refusal(&runner.del(&list, &pod.rt).expect_err("DEL stops"));
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("error getting pod ns1/web"), "{msg}");
    assert_eq!(pod.addresses(), vec![host_form(ip)], "nothing torn down");
    assert_eq!(c.reservations_of("k8s-unreadable"), vec![ip.to_string()]);

    // The pod was deleted meanwhile: DEL cleans up what is local.
    c.api.remove("pods", "ns1", "web");
    c.api.clear_requests();
    runner.del(&list, &pod.rt).expect("DEL of a deleted pod");
    assert!(c
        .requests_to("PATCH", &status_path("ns1", "web"))
        .is_empty());
    c.assert_nothing_left(&pod, "pod gone");
    runner.del(&list, &pod.rt).expect("and again");
}

#[test]
fn calico_k8s_del_succeeds_when_the_sandbox_is_already_gone() {
    let c = Cluster::new();
    c.pod("ns1", "web", json!({}));
    let list = c.conflist(CONFLIST, |_| {});
    let runner = c.runner();
    let pod = c.sandbox("k8s-gone", "ns1", "web");
    let rt = pod.rt.clone();
    runner.add(&list, &rt).expect("ADD");
    // The runtime removed the sandbox's namespace first (the veth pair went with it).
    drop(pod);
    runner.del(&list, &rt).expect("DEL without a namespace");
    assert_eq!(c.calico_annotations("ns1", "web")[POD_IP], "");
    // The kernel destroys a namespace, and the veth pair in it, from a work queue after the
    // last reference goes: the host end can outlive the unmount by a few milliseconds.
    assert!(
        wait_for(Duration::from_secs(5), || c.node.cali_links().is_empty()),
        "the host veth went with the namespace: {:?}",
        c.node.cali_links()
    );
    c.node.assert_node_clean("sandbox gone");
    assert!(c.reservations().is_empty());
    runner.del(&list, &rt).expect("DEL again");

    // A DEL for a sandbox that never got an ADD.
    let never = c.sandbox("k8s-never", "ns1", "web");
    runner.del(&list, &never.rt).expect("DEL of nothing");
    c.assert_nothing_left(&never, "DEL of nothing");
}
