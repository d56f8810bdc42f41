//! portmap end to end with real traffic: pods networked by `calico` + `host-local` inside a
//! node namespace of the test's own, portmap chained after them, for both backends and both
//! address families. A TCP server in one pod answers a client pod through
//! `<node address>:<hostPort>`; the pod reaches itself through its own host port (hairpin,
//! masqueraded); the node reaches it at `127.0.0.1:<hostPort>` (masqueraded, with
//! `route_localnet`); a UDP mapping works, also for a flow that started before the mapping
//! existed (its conntrack entry is deleted). DEL takes every rule away. Needs root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use cni_tests::pod::{Family, Node, Pod, Stack};
use cni_tests::portmap::{chain_conflist, nat, nft_ruleset, tcp_via, udp_socket, udp_via};
use cni_tests::{ConfList, Runner, RuntimeConf};
use serde_json::{json, Value};

const HTTP: u16 = 80;
const HOST_HTTP: u16 = 8080;
const DNS: u16 = 53;
const HOST_DNS: u16 = 5353;

fn mappings() -> Value {
    json!([
        {"hostPort": HOST_HTTP, "containerPort": HTTP, "protocol": "tcp"},
        {"hostPort": HOST_DNS, "containerPort": DNS, "protocol": "udp"}
    ])
}

/// The pod's address of `family` in an ADD result.
fn address(result: &Value, family: Family) -> IpAddr {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() == (family == Family::V4))
        .unwrap_or_else(|| panic!("no {family:?} address in {result}"))
}

/// A node with a server pod (host ports mapped) and a client pod (none).
struct Setup {
    node: Node,
    list: ConfList,
    runner: Runner,
    server: Pod,
    server_rt: RuntimeConf,
    server_result: Value,
    client: Pod,
    client_result: Value,
}

impl Setup {
    fn new(backend: &str, stack: Stack) -> Setup {
        let node = Node::new();
        let list = chain_conflist(&node, stack, "1.0.0", &json!({"backend": backend}));
        let runner = node.runner();
        let server = node.pod("pmserver0001");
        let server_rt = server
            .rt
            .clone()
            .with_capability("portMappings", mappings());
        let server_result = runner.add(&list, &server_rt).expect("server ADD");
        let client = node.pod("pmclient0001");
        let client_result = runner.add(&list, &client.rt).expect("client ADD");
        Setup {
            node,
            list,
            runner,
            server,
            server_rt,
            server_result,
            client,
            client_result,
        }
    }

    fn node_ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.node.address_v4().into(),
            Family::V6 => self.node.address_v6().into(),
        }
    }

    /// Through the host port from the client pod, from the server pod itself (hairpin),
    /// and with UDP.
    fn assert_forwarding(&self, family: Family) {
        let server_ip = address(&self.server_result, family);
        let client_ip = address(&self.client_result, family);
        let node_ip = self.node_ip(family);
        let listen = SocketAddr::new(server_ip, HTTP);
        let via = SocketAddr::new(node_ip, HOST_HTTP);

        let peer = tcp_via(&self.server.netns, listen, &self.client.netns, via)
            .unwrap_or_else(|e| panic!("{family:?} client → {via}: {e}"));
        assert_eq!(peer.ip(), client_ip, "DNAT keeps the client's address");

        let peer = tcp_via(&self.server.netns, listen, &self.server.netns, via)
            .unwrap_or_else(|e| panic!("{family:?} hairpin → {via}: {e}"));
        assert_ne!(peer.ip(), server_ip, "hairpin traffic is masqueraded");

        let unspecified: IpAddr = match family {
            Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
        };
        let server = udp_socket(&self.server.netns, SocketAddr::new(server_ip, DNS));
        let client = udp_socket(&self.client.netns, SocketAddr::new(unspecified, 0));
        let peer = udp_via(&server, &client, SocketAddr::new(node_ip, HOST_DNS))
            .unwrap_or_else(|e| panic!("{family:?} UDP: {e}"));
        assert_eq!(peer.ip(), client_ip);
    }

    /// `127.0.0.1:<hostPort>` from the node itself.
    fn assert_localhost(&self) {
        let server_ip = address(&self.server_result, Family::V4);
        let listen = SocketAddr::new(server_ip, HTTP);
        let via = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), HOST_HTTP);
        let peer = tcp_via(&self.server.netns, listen, &self.node.netns, via)
            .unwrap_or_else(|e| panic!("node → {via}: {e}"));
        assert!(
            !peer.ip().is_loopback(),
            "localhost traffic is masqueraded: {peer}"
        );
    }

    fn del_all(&self) {
        self.runner
            .del(&self.list, &self.server_rt)
            .expect("server DEL");
        self.runner
            .del(&self.list, &self.client.rt)
            .expect("client DEL");
    }
}

#[test]
fn iptables_forwards_tcp_udp_hairpin_and_localhost_on_both_families() {
    let s = Setup::new("iptables", Stack::Dual);
    s.assert_forwarding(Family::V4);
    s.assert_forwarding(Family::V6);
    s.assert_localhost();
    s.runner
        .check(&s.list, &s.server_rt)
        .expect("CHECK after ADD");
    assert!(nat(&s.node.netns, Family::V4).contains("-j CNI-DN-"));
    assert!(nat(&s.node.netns, Family::V6).contains("-j CNI-DN-"));
    s.del_all();
    for family in [Family::V4, Family::V6] {
        let rules = nat(&s.node.netns, family);
        assert!(!rules.contains("CNI-DN-"), "{family:?} after DEL:\n{rules}");
        assert!(rules.contains(":CNI-HOSTPORT-DNAT"), "shared chains stay");
    }
}

#[test]
fn nftables_forwards_tcp_udp_hairpin_and_localhost_on_both_families() {
    let s = Setup::new("nftables", Stack::Dual);
    s.assert_forwarding(Family::V4);
    s.assert_forwarding(Family::V6);
    s.assert_localhost();
    s.runner
        .check(&s.list, &s.server_rt)
        .expect("CHECK after ADD");
    let rules = nft_ruleset(&s.node.netns);
    assert!(rules.contains("comment \"pmserver0001\""), "{rules}");
    assert!(
        !nat(&s.node.netns, Family::V4).contains("CNI-"),
        "no iptables rules"
    );
    s.del_all();
    let rules = nft_ruleset(&s.node.netns);
    assert!(!rules.contains("pmserver0001"), "after DEL:\n{rules}");
}

#[test]
fn ipv6_only_pods_forward_on_iptables() {
    let s = Setup::new("iptables", Stack::V6);
    s.assert_forwarding(Family::V6);
    s.runner
        .check(&s.list, &s.server_rt)
        .expect("CHECK of a v6-only pod");
    assert!(
        !nat(&s.node.netns, Family::V4).contains("CNI-DN-"),
        "no IPv4 chain"
    );
    s.del_all();
    assert!(!nat(&s.node.netns, Family::V6).contains("CNI-DN-"));
}

/// A UDP flow that hit the host port before the mapping existed is pinned by conntrack to
/// the node itself; ADD deletes that entry so the same flow reaches the pod. (The client
/// has a host port of its own, so the node tracks connections before the server's ADD, as
/// any node running hostPort pods does.)
fn udp_flow_started_before_add_reaches_the_pod(backend: &str) {
    let node = Node::new();
    let list = chain_conflist(&node, Stack::V4, "1.0.0", &json!({"backend": backend}));
    let runner = node.runner();
    let client = node.pod("pmudpclient1");
    let other = json!([{"hostPort": 9999, "containerPort": 99, "protocol": "udp"}]);
    let client_rt = client.rt.clone().with_capability("portMappings", other);
    let client_result = runner.add(&list, &client_rt).expect("client ADD");
    let client_ip = address(&client_result, Family::V4);
    let target = SocketAddr::new(node.address_v4().into(), HOST_DNS);
    let sender = udp_socket(&client.netns, SocketAddr::new(client_ip, 0));
    sender
        .send_to(b"early", target)
        .expect("send before the mapping");

    let server = node.pod("pmudpserver1");
    let server_rt = server
        .rt
        .clone()
        .with_capability("portMappings", mappings());
    let result = runner.add(&list, &server_rt).expect("server ADD");
    let server_ip = address(&result, Family::V4);
    let listener = udp_socket(&server.netns, SocketAddr::new(server_ip, DNS));
    let peer = udp_via(&listener, &sender, target).expect("the same flow after ADD");
    assert_eq!(
        peer,
        sender.local_addr().expect("addr"),
        "the same source port"
    );
    runner.del(&list, &server_rt).expect("server DEL");
    runner.del(&list, &client_rt).expect("client DEL");
}

#[test]
fn udp_flow_started_before_add_reaches_the_pod_iptables() {
    udp_flow_started_before_add_reaches_the_pod("iptables");
}

#[test]
fn udp_flow_started_before_add_reaches_the_pod_nftables() {
    udp_flow_started_before_add_reaches_the_pod("nftables");
}
