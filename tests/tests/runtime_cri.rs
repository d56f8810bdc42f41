//! The kubelet's path: containerd's CRI plugin (Debian's containerd), driven over the CRI
//! gRPC API as the kubelet drives it, runs our chain from the test's conf and bin dirs.
//! RunPodSandbox with host ports (TCP, UDP, one on a hostIP) and the bandwidth
//! annotations wires a dual-stack pod reachable through its host ports from the node and
//! from itself (hairpin), shaped at the annotated rates; StopPodSandbox and
//! RemovePodSandbox leave nothing. The kubelet's retries of a sandbox whose ADD fails (an
//! exhausted pool, an unusable port mapping) leave nothing either: containerd runs the
//! chain's DEL after each failed ADD, and every plugin's DEL must succeed on that input.
//! Both the `local` datastore and the Kubernetes one (the fake API server). Needs root.

mod cri;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cni_tests::bandwidth::{expected_ifb_name, ifb_names, qdisc};
use cni_tests::ipam::{self, allocations};
use cni_tests::kube_cluster::{Cluster, NETWORK, POD_IPS};
use cni_tests::pod::{k8s_host_veth, Node};
use cni_tests::portmap::nat_both;
use cni_tests::runtime::{
    assert_chain_clean, busybox, cached_results, http_get, recorded, recording_bin_dir, retry,
    save_fixtures, ChainSetup, Recorded, STEP_LIMIT,
};
use cni_tests::TestDir;
use cri::{CriContainerd, PodSpec};
use k8s_cri::v1::Protocol;
use serde_json::{json, Value};
use shared::netns::NetNs;

const NET: &str = "runtime-cri";
const NODENAME: &str = "runtime-cri-node";
const POOL_V4: &str = "10.243.0.0/24";
const POOL_V6: &str = "fd00:10:243::/112";
const PAGE: &str = "served through the CRI\n";

/// 10M and 20M as the bandwidth plugin's TBFs hold them: bytes per second.
const INGRESS_BYTES: u64 = 1_250_000;
const EGRESS_BYTES: u64 = 2_500_000;

/// A web pod as the kubelet asks for it: three host ports and both bandwidth annotations.
fn web_pod(namespace: &str, name: &str, node_v4: &str) -> PodSpec {
    PodSpec::new(namespace, name)
        .port(Protocol::Tcp, 80, 30081, "")
        .port(Protocol::Udp, 53, 30053, "")
        .port(Protocol::Tcp, 80, 30082, node_v4)
        .annotation("kubernetes.io/ingress-bandwidth", "10M")
        .annotation("kubernetes.io/egress-bandwidth", "20M")
}

/// `busybox httpd` serving [`PAGE`] inside the pod's network namespace (the pause
/// process's), killed on drop.
struct PodServer(Child);

impl PodServer {
    fn start(dir: &Path, pid: u64) -> PodServer {
        let www = dir.join("www");
        std::fs::create_dir_all(&www).expect("www");
        std::fs::write(www.join("index.html"), PAGE).expect("page");
        let busybox = busybox().expect("busybox-static is installed");
        let child = Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg("--")
            .arg(&busybox)
            .args(["httpd", "-f", "-p", "80", "-h"])
            .arg(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("httpd in the pod");
        PodServer(child)
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP socket bound to `addr` inside the network namespace at `netns`.
fn udp_in(netns: &Path, addr: SocketAddr) -> UdpSocket {
    let ns = NetNs::open(netns).expect("netns");
    let socket = ns
        .run(|| UdpSocket::bind(addr))
        .expect("enter the netns")
        .expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket
}

/// A datagram from the node to `target` reaches the pod's socket on `pod_port`, and the
/// pod's answer comes back through the node's NAT.
fn udp_exchange(node: &Path, pod: &Path, target: SocketAddr, pod_port: u16) -> Result<(), String> {
    let any = |ip: IpAddr, port| match ip {
        IpAddr::V4(_) => SocketAddr::from(([0u8; 4], port)),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], port)),
    };
    let server = udp_in(pod, any(target.ip(), pod_port));
    let client = udp_in(node, any(target.ip(), 0));
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        client.send_to(b"ping", target).map_err(|e| e.to_string())?;
        let Ok((n, from)) = server.recv_from(&mut buf) else {
            continue;
        };
        if &buf[..n] != b"ping" {
            return Err(format!("the pod got {:?}", &buf[..n]));
        }
        server.send_to(b"pong", from).map_err(|e| e.to_string())?;
        let (n, _) = client.recv_from(&mut buf).map_err(|e| e.to_string())?;
        return if &buf[..n] == b"pong" {
            Ok(())
        } else {
            Err(format!("the node got {:?}", &buf[..n]))
        };
    }
    Err(format!("no datagram reached the pod through {target}"))
}

/// Checks what a running web pod must offer: addresses of both families in `pools`,
/// reported by containerd; the host veth with its routes; TBF and IFB at the annotated
/// rates; the pod served through its host ports from the node and from itself.
fn check_web_pod(
    ctd: &mut CriContainerd,
    node: &Node,
    dir: &Path,
    id: &str,
    pod: &PodSpec,
    network: &str,
    pools: (&str, &str),
) -> Vec<IpAddr> {
    let status = ctd.status(id).expect("PodSandboxStatus");
    let ips: Vec<IpAddr> = status
        .ips
        .iter()
        .map(|ip| ip.parse().expect("containerd reports addresses"))
        .collect();
    let v4 = ips.iter().copied().find(IpAddr::is_ipv4).expect("an IPv4");
    let v6 = ips.iter().copied().find(IpAddr::is_ipv6).expect("an IPv6");
    assert_eq!(ips.len(), 2, "dual stack: {ips:?}");
    assert!(
        ipam::contains(pools.0, v4) && ipam::contains(pools.1, v6),
        "{ips:?}"
    );

    let veth = k8s_host_veth("cali", &pod.namespace, &pod.name);
    assert!(node.link(&veth).is_some(), "host veth {veth}");
    let tbf = qdisc(&node.netns, &veth, "tbf").expect("TBF on the host veth");
    assert_eq!(tbf["options"]["rate"], INGRESS_BYTES, "ingress rate: {tbf}");
    let ifb = expected_ifb_name(network, id);
    assert_eq!(ifb_names(&node.netns), vec![ifb.clone()]);
    let shaped = qdisc(&node.netns, &ifb, "tbf").expect("TBF on the IFB");
    assert_eq!(
        shaped["options"]["rate"], EGRESS_BYTES,
        "egress rate: {shaped}"
    );

    let pid = status.pid().expect("the pause process's pid");
    let _server = PodServer::start(dir, pid);
    let node4 = IpAddr::V4(node.address_v4());
    let node6 = IpAddr::V6(node.address_v6());
    for target in [
        SocketAddr::new(v4, 80),
        SocketAddr::new(node4, 30081),
        SocketAddr::new(node6, 30081),
        SocketAddr::new(node4, 30082),
    ] {
        let got = retry(&format!("{target} from the node"), STEP_LIMIT, || {
            http_get(node.netns.path(), target)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, PAGE, "{target}");
    }
    // From the pod to its own host port: DNAT back into the pod, masqueraded (portmap's
    // hairpin mark), so that the reply comes back through the node.
    let pod_netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let hairpin = http_get(&pod_netns, SocketAddr::new(node4, 30081))
        .unwrap_or_else(|e| panic!("hairpin through the host port: {e}"));
    assert_eq!(hairpin, PAGE);
    for ip in [node4, node6] {
        udp_exchange(
            node.netns.path(),
            &pod_netns,
            SocketAddr::new(ip, 30053),
            53,
        )
        .unwrap_or_else(|e| panic!("UDP through the host port on {ip}: {e}"));
    }
    ips
}

/// Checks the bytes the runtime sent: Go field names in runtimeConfig, as containerd's
/// CNI library marshals them, read by portmap and bandwidth (the pod above is shaped and
/// forwarded, so they were).
fn check_recorded(record: &Path, what: &str) -> Vec<Recorded> {
    let all = recorded(record);
    let stdin_of = |plugin: &str| {
        all.iter()
            .find(|r| r.plugin == plugin && r.command == "ADD")
            .unwrap_or_else(|| panic!("{what}: no {plugin} ADD recorded"))
    };
    let portmap: Value = serde_json::from_slice(&stdin_of("portmap").stdin).expect("JSON");
    let mapping = &portmap["runtimeConfig"]["portMappings"][0];
    assert!(mapping.get("HostPort").is_some(), "{what}: {mapping}");
    let bandwidth: Value = serde_json::from_slice(&stdin_of("bandwidth").stdin).expect("JSON");
    let limits = &bandwidth["runtimeConfig"]["bandwidth"];
    assert_eq!(limits["IngressRate"], 10_000_000, "{what}: {limits}");
    assert_eq!(limits["EgressRate"], 20_000_000, "{what}: {limits}");
    save_fixtures(&all, what);
    all
}

/// Stops and removes sandbox `id` as the kubelet does, then checks that containerd holds
/// no network namespace and libcni no cached result.
fn stop_and_remove(ctd: &mut CriContainerd, id: &str) {
    ctd.stop_pod_sandbox(id)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", ctd.log()));
    ctd.remove_pod_sandbox(id)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
}

fn check_runtime_clean(ctd: &mut CriContainerd, node: &Node, what: &str) {
    assert_eq!(ctd.sandboxes(), Vec::<String>::new(), "{what}: sandboxes");
    assert_eq!(ctd.netns_files(), Vec::<String>::new(), "{what}: netns");
    assert_eq!(
        cached_results(&ctd.cni_cache()),
        Vec::<String>::new(),
        "{what}: libcni results"
    );
    assert_eq!(ifb_names(&node.netns), Vec::<String>::new(), "{what}: IFBs");
}

/// The chain's conflist plus bandwidth (the shipped Kubernetes conflist's last plugin).
fn add_bandwidth(conflist: &Path) {
    let mut list: Value =
        serde_json::from_slice(&std::fs::read(conflist).expect("conflist")).expect("JSON");
    if let Some(plugins) = list["plugins"].as_array_mut() {
        plugins.push(json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}));
    }
    std::fs::write(conflist, serde_json::to_vec_pretty(&list).expect("JSON")).expect("write");
}

fn start_cri(node: &Node, dir: &Path, net_d: &Path) -> (CriContainerd, PathBuf) {
    let record = dir.join("stdin");
    let bin = recording_bin_dir(dir, &record).expect("bin dir");
    let ctd = CriContainerd::start(node.netns.path(), dir, &bin, net_d)
        .unwrap_or_else(|e| panic!("containerd's CRI cannot run here: {e}"));
    let tar = cri::pause_image(dir).expect("pause image");
    ctd.import_pause(&tar).expect("pause image imported");
    (ctd, record)
}

#[test]
fn runtime_cri_local_datastore_host_ports_bandwidth_dual_stack() {
    let setup = ChainSetup::new(NET, NODENAME, POOL_V4, POOL_V6);
    add_bandwidth(&setup.conflist);
    let (node, store, dir) = (&setup.node, &setup.store, setup.dir.path());
    let (mut ctd, record) = start_cri(node, dir, &setup.net_d);
    let plugin_log = || std::fs::read_to_string(&setup.log).unwrap_or_default();

    let pod = web_pod("default", "web", &node.address_v4().to_string());
    let id = ctd
        .run_pod_sandbox(&pod)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\nplugin log:\n{}", plugin_log()));
    let ips = check_web_pod(&mut ctd, node, dir, &id, &pod, NET, (POOL_V4, POOL_V6));
    let held: Vec<IpAddr> = allocations(&store.snapshot())
        .expect("consistent IPAM state")
        .into_iter()
        .filter(|(_, handle)| *handle == format!("{NET}.{id}"))
        .map(|(ip, _)| ip)
        .collect();
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(held, sorted, "the datastore holds what containerd reports");

    stop_and_remove(&mut ctd, &id);
    check_recorded(&record, "containerd-cri/local-datastore");
    assert_chain_clean(node, store, &ips, "after Stop and Remove");
    check_runtime_clean(&mut ctd, node, "after Stop and Remove");
}

/// The Kubernetes datastore: `10-calico.conflist` as shipped (calico, calico-ipam,
/// portmap, bandwidth), both families assigned, pools in the fake API server.
fn kube_cluster() -> (Cluster, TestDir, PathBuf, String, String) {
    let c = Cluster::new();
    let v4 = c.node.pod_subnet_v4();
    let v6 = c.node.pod_subnet_v6();
    c.ip_pool("pool-v4", &v4, 26);
    c.ip_pool("pool-v6", &v6, 122);
    let (dir, net_d) = write_conflist(&c, |list| {
        list["plugins"][0]["ipam"]["assign_ipv6"] = json!("true");
    });
    (c, dir, net_d, v4, v6)
}

/// The shipped `10-calico.conflist`, filled in for `c` and edited, in a conf dir of its own.
fn write_conflist(c: &Cluster, edit: impl FnOnce(&mut Value)) -> (TestDir, PathBuf) {
    let list = c.conflist("10-calico.conflist", edit);
    let dir = TestDir::new().expect("test dir");
    let net_d = dir.path().join("net.d");
    std::fs::create_dir_all(&net_d).expect("net.d");
    std::fs::write(net_d.join("10-calico.conflist"), &list.bytes).expect("conflist");
    (dir, net_d)
}

fn kube_clean(c: &Cluster, what: &str) {
    c.node.assert_node_clean(what);
    assert_eq!(c.ipam_allocations().len(), 0, "{what}: allocations");
    assert_eq!(c.ipam_handles(), Vec::<String>::new(), "{what}: handles");
}

#[test]
fn runtime_cri_kubernetes_datastore_host_ports_bandwidth_dual_stack() {
    let (c, dir, net_d, v4, v6) = kube_cluster();
    let (mut ctd, record) = start_cri(&c.node, dir.path(), &net_d);
    let plugin_log =
        || std::fs::read_to_string(c.node.dir.path().join("cni.log")).unwrap_or_default();

    let uid = c.pod("ns1", "web", json!({}))["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut pod = web_pod("ns1", "web", &c.node.address_v4().to_string());
    if !uid.is_empty() {
        pod.uid = uid;
    }
    let id = ctd
        .run_pod_sandbox(&pod)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\nplugin log:\n{}", plugin_log()));
    let ips = check_web_pod(
        &mut ctd,
        &c.node,
        dir.path(),
        &id,
        &pod,
        NETWORK,
        (&v4, &v6),
    );
    let allocated = c.ipam_allocations();
    for ip in &ips {
        assert_eq!(
            allocated.get(&ip.to_string()),
            Some(&format!("{NETWORK}.{id}")),
            "{ip} in the IPAMBlocks: {allocated:?}"
        );
    }
    let annotated = c.calico_annotations("ns1", "web");
    let pod_ips = annotated.get(POD_IPS).cloned().unwrap_or_default();
    for ip in &ips {
        assert!(pod_ips.contains(&ip.to_string()), "{POD_IPS}: {pod_ips}");
    }

    stop_and_remove(&mut ctd, &id);
    check_recorded(&record, "containerd-cri/kubernetes-datastore");
    kube_clean(&c, "after Stop and Remove");
    check_runtime_clean(&mut ctd, &c.node, "after Stop and Remove");
}

/// RunPodSandbox for `pod` fails `rounds` times (attempt numbers counting up, as the
/// kubelet's retries), each failure leaving nothing beside the `running` sandboxes (one
/// address and one network namespace each).
fn retries_fail(
    ctd: &mut CriContainerd,
    c: &Cluster,
    pod: &PodSpec,
    rounds: u32,
    running: &[&str],
    expect: &str,
) {
    for attempt in 0..rounds {
        let mut pod = pod.clone();
        pod.attempt = attempt;
        let err = ctd
            .run_pod_sandbox(&pod)
            .expect_err("the sandbox's ADD fails");
        assert!(
            err.message().contains(expect),
            "attempt {attempt}: {}",
            err.message()
        );
        let what = format!("{} attempt {attempt}", pod.name);
        assert_eq!(
            c.ipam_allocations().len(),
            running.len(),
            "{what}: allocations"
        );
        assert_eq!(c.ipam_handles().len(), running.len(), "{what}: handles");
        assert_eq!(ctd.netns_files().len(), running.len(), "{what}: netns");
        assert_eq!(ctd.sandboxes(), running, "{what}: sandboxes");
        let veth = k8s_host_veth("cali", &pod.namespace, &pod.name);
        assert!(c.node.link(&veth).is_none(), "{what}: host veth left");
    }
}

#[test]
fn runtime_cri_failed_adds_retried_by_the_kubelet_leave_nothing() {
    let c = Cluster::new();
    // One IPv4 address in all.
    let v4 = c.node.pod_subnet_v4();
    let one = format!("{}/32", v4.split('/').next().unwrap_or_default());
    c.ip_pool("pool-one", &one, 32);
    let (dir, net_d) = write_conflist(&c, |_| {});
    let (mut ctd, _record) = start_cri(&c.node, dir.path(), &net_d);

    // The pool is exhausted by a running pod: ten retries of another one fail in IPAM.
    c.pod("ns1", "holder", json!({}));
    let holder = PodSpec::new("ns1", "holder");
    let held = ctd.run_pod_sandbox(&holder).expect("the holder runs");
    assert_eq!(c.ipam_allocations().len(), 1);
    c.pod("ns1", "starved", json!({}));
    let starved = PodSpec::new("ns1", "starved");
    retries_fail(&mut ctd, &c, &starved, 10, &[&held], "calico");
    stop_and_remove(&mut ctd, &held);
    kube_clean(&c, "after the holder");

    // An address it gets, but a host port it cannot have (an IPv6 hostIP, an IPv4-only
    // pod): portmap refuses the ADD after calico wired the pod; ten retries.
    c.pod("ns1", "badport", json!({}));
    let badport = PodSpec::new("ns1", "badport")
        .port(Protocol::Tcp, 80, 30090, "fd00::1")
        .annotation("kubernetes.io/ingress-bandwidth", "10M");
    retries_fail(&mut ctd, &c, &badport, 10, &[], "portmap");

    kube_clean(&c, "after 20 failed ADDs");
    check_runtime_clean(&mut ctd, &c.node, "after 20 failed ADDs");
    assert!(
        nat_both(&c.node.netns)
            .lines()
            .all(|l| !l.contains("30090")),
        "NAT rules left"
    );
}
