//! The calico plugin's WorkloadEndpoint on etcd and on the `local` datastore (spec §2, §3
//! step 4, §5.3, §5.4): ADD writes Calico's v3 object under Calico's key, DEL deletes it
//! (twice is fine), a stale sandbox's DEL leaves the running one's endpoint and addresses
//! alone, and nothing happens while Calico is not ready or etcd cannot be reached. The
//! datastore is read back raw (etcd's JSON gateway, or the files of `local`), independently
//! of the plugin's code.
//!
//! `calico` and `calico-ipam` run inside a node namespace of the test's own; etcd listens on
//! the machine's loopback and is reached from the node through a relay. Needs root and
//! Debian's `etcd-server`.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;

use cni_tests::host_local::Outcome;
use cni_tests::ipam::{merge, Backend, IpamFixture};
use cni_tests::kube_cluster::NodeApiServer;
use cni_tests::pod::{cni_host_veth, k8s_host_veth, Node, Pod, NET};
use cni_tests::relay::TcpRelay;
use serde_json::{json, Value};

const POOL4: &str = "172.30.0.0/24";
const POOL6: &str = "fd00:172:30::/120";
/// What the node fixture's nodename file holds.
const NODE: &str = "e2e-node";
const WEP_PREFIX: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";
const CLUSTER_INFO: &str = "/calico/resources/v3/projectcalico.org/clusterinformations/default";
const NOT_READY: &str = "Calico is currently not ready to process requests";

/// A node, a datastore, and the calico config pointing at both.
struct Setup {
    node: Node,
    store: IpamFixture,
    relay: Option<TcpRelay>,
    plugin: Value,
}

impl Setup {
    fn new(backend: Backend) -> Setup {
        let node = Node::new();
        let store = IpamFixture::new(backend);
        let relay = (backend == Backend::Etcd).then(|| {
            let target: SocketAddr = store
                .endpoints()
                .trim_start_matches("http://")
                .parse()
                .expect("etcd on 127.0.0.1:<port>");
            TcpRelay::start(node.netns.path(), target).expect("relay into the node")
        });
        store.create_pool(POOL4, 26);
        store.create_pool(POOL6, 122);
        store.register_node(NODE);
        let mut plugin = json!({
            "type": "calico",
            "log_level": "debug",
            "nodename_file": node.nodename_file(),
            "mtu_file": node.mtu_file(),
            "ipam_lock_file": store.lock_file(NODE),
            "ipam": {"type": "calico-ipam", "assign_ipv6": "true",
                     "ipv4_pools": [POOL4], "ipv6_pools": [POOL6]},
        });
        merge(&mut plugin, &store.datastore_keys());
        if let Some(relay) = &relay {
            plugin["etcd_endpoints"] = json!(relay.url());
        }
        Setup {
            node,
            store,
            relay,
            plugin,
        }
    }

    /// `policy.type: k8s` against an API server in the node holding namespace `ns`: the
    /// plugin then reads the Pod for its endpoint.
    fn with_k8s_policy(&mut self, ns: &str) -> NodeApiServer {
        let api = NodeApiServer::start(self.node.netns.path());
        let kubeconfig = api.kubeconfig(self.node.dir.path());
        self.plugin["policy"] = json!({"type": "k8s"});
        self.plugin["kubernetes"] = json!({"kubeconfig": kubeconfig});
        api.put(
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
        api
    }

    /// ClusterInformation `default` as calico/node writes it.
    fn cluster_information(&self, ready: bool) {
        let ci = json!({
            "kind": "ClusterInformation", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": "default"},
            "spec": {"clusterGUID": "5c5d0f3e9b7a4e4f8f0e6c1d2b3a4f50", "clusterType": "k8s,bgp",
                     "calicoVersion": "v3.30.0", "datastoreReady": ready},
        });
        self.store.put(CLUSTER_INFO, &ci.to_string());
    }

    fn call(&self, command: &str, pod: &Pod) -> Outcome {
        let conf = self.node.plugin_config("1.0.0", &self.plugin);
        self.node.call(command, &conf, &pod.rt, &[])
    }

    fn add(&self, pod: &Pod) -> Value {
        let out = self.call("ADD", pod);
        assert!(out.ok(), "ADD: {}", out.describe());
        out.json.expect("result")
    }

    fn del(&self, pod: &Pod, what: &str) {
        let out = self.call("DEL", pod);
        assert!(out.ok(), "{what}: {}", out.describe());
    }

    /// Every stored endpoint: key → value.
    fn endpoints(&self) -> BTreeMap<String, Value> {
        self.store
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.starts_with(WEP_PREFIX))
            .map(|(k, v)| {
                let value = serde_json::from_str(&v).unwrap_or_else(|e| panic!("{k}: {e}"));
                (k, value)
            })
            .collect()
    }

    /// Panics unless nothing of `pod` is left: no link, route or address in the node or
    /// the pod, no IPAM handle, no endpoint.
    fn assert_nothing_left(&self, pod: &Pod, what: &str) {
        self.node.assert_nothing_left(pod, what);
        assert_eq!(self.store.handles(), BTreeMap::new(), "{what}: handles");
        assert_eq!(self.endpoints(), BTreeMap::new(), "{what}: endpoints");
    }
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .map(|ip| ip["address"].as_str().expect("address").to_string())
        .collect()
}

/// Takes `uid` and `creationTimestamp` out of a stored endpoint after checking their form:
/// a random (version 4) UUID, and `metav1.Time`'s RFC 3339 in UTC, whole seconds.
fn strip_generated(mut wep: Value) -> Value {
    let meta = wep["metadata"].as_object_mut().expect("metadata");
    let uid = meta.remove("uid").expect("uid");
    let uid = uid.as_str().expect("uid is text");
    let groups: Vec<usize> = uid.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "uid {uid}");
    assert!(uid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert_eq!(&uid[14..15], "4", "version 4: {uid}");
    assert!("89ab".contains(&uid[19..20]), "RFC 4122 variant: {uid}");
    let created = meta.remove("creationTimestamp").expect("creationTimestamp");
    let created = created.as_str().expect("text");
    assert_eq!(created.len(), 20, "{created}");
    assert!(
        created.ends_with('Z') && &created[10..11] == "T",
        "{created}"
    );
    assert!(created.starts_with("20"), "{created}");
    wep
}

fn add_writes_the_endpoint_and_del_removes_it(backend: Backend) {
    let s = Setup::new(backend);
    if backend == Backend::Etcd {
        s.cluster_information(true);
    }
    // `local` has no calico/node: no ClusterInformation at all is "ready".

    let pod = s
        .node
        .k8s_pod("wep0000000000000000000000000000a1", "ns-1", "web-0");
    let result = s.add(&pod);
    let ips = addresses(&result);
    assert_eq!(ips.len(), 2, "{result}");
    assert!(
        ips[0].ends_with("/32") && ips[1].ends_with("/128"),
        "{ips:?}"
    );
    let key = format!("{WEP_PREFIX}ns-1/e2e--node-k8s-web--0-eth0");
    let stored = s.endpoints();
    assert_eq!(stored.keys().collect::<Vec<_>>(), [&key], "one endpoint");
    let wep = strip_generated(stored[&key].clone());
    let mac = pod.iface()["address"].as_str().expect("mac").to_string();
    assert_eq!(
        wep,
        json!({
            "kind": "WorkloadEndpoint",
            "apiVersion": "projectcalico.org/v3",
            "metadata": {
                "name": "e2e--node-k8s-web--0-eth0",
                "namespace": "ns-1",
                "labels": {"projectcalico.org/namespace": "ns-1",
                           "projectcalico.org/orchestrator": "k8s"},
            },
            "spec": {
                "orchestrator": "k8s",
                "node": NODE,
                "containerID": "wep0000000000000000000000000000a1",
                "pod": "web-0",
                "endpoint": "eth0",
                "ipNetworks": ips,
                "profiles": [NET],
                "interfaceName": k8s_host_veth("cali", "ns-1", "web-0"),
                "mac": mac,
            },
        }),
        "{}",
        stored[&key]
    );
    // Calico's field order, as its Go client marshals the object.
    let raw = s.store.snapshot()[&key].clone();
    assert!(
        raw.starts_with(r#"{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":"e2e--node-k8s-web--0-eth0","namespace":"ns-1","uid":"#),
        "{raw}"
    );

    // A plain container: namespace `default`, named by its id.
    let id = "wep0000000000000000000000000000b2";
    let box1 = s.node.pod(id);
    let result = s.add(&box1);
    let cni_key = format!("{WEP_PREFIX}default/e2e--node-cni-{id}-eth0");
    let wep = strip_generated(s.endpoints()[&cni_key].clone());
    let mac = box1.iface()["address"].as_str().expect("mac").to_string();
    assert_eq!(
        wep,
        json!({
            "kind": "WorkloadEndpoint",
            "apiVersion": "projectcalico.org/v3",
            "metadata": {
                "name": format!("e2e--node-cni-{id}-eth0"),
                "namespace": "default",
                "labels": {"projectcalico.org/namespace": "default",
                           "projectcalico.org/orchestrator": "cni"},
            },
            "spec": {
                "orchestrator": "cni",
                "node": NODE,
                "containerID": id,
                "endpoint": "eth0",
                "ipNetworks": addresses(&result),
                "profiles": [NET],
                "interfaceName": cni_host_veth(id),
                "mac": mac,
            },
        })
    );

    s.del(&pod, "DEL pod");
    assert_eq!(
        s.endpoints().keys().collect::<Vec<_>>(),
        [&cni_key],
        "the pod's endpoint is gone, the container's stays"
    );
    s.del(&pod, "DEL pod again");
    s.del(&box1, "DEL container");
    s.del(&box1, "DEL container again");
    s.assert_nothing_left(&pod, "after DEL");
    s.node.assert_nothing_left(&box1, "after DEL");
}

#[test]
fn wep_on_etcd_add_writes_calicos_endpoint_and_del_removes_it() {
    add_writes_the_endpoint_and_del_removes_it(Backend::Etcd);
}

#[test]
fn wep_on_local_add_writes_calicos_endpoint_and_del_removes_it() {
    add_writes_the_endpoint_and_del_removes_it(Backend::Local);
}

fn stale_del_leaves_the_running_pod_alone(backend: Backend) {
    let s = Setup::new(backend);
    s.cluster_information(true);
    let old = s
        .node
        .k8s_pod("wep000000000000000000000000000old", "ns-1", "db-0");
    let new = s
        .node
        .k8s_pod("wep000000000000000000000000000new", "ns-1", "db-0");
    let old_ips = addresses(&s.add(&old));
    // The pod's new sandbox: same pod, same endpoint, new container.
    let new_ips = addresses(&s.add(&new));
    let key = format!("{WEP_PREFIX}ns-1/e2e--node-k8s-db--0-eth0");
    let before = s.endpoints();
    assert_eq!(
        before[&key]["spec"]["containerID"],
        "wep000000000000000000000000000new"
    );
    assert_eq!(before[&key]["spec"]["ipNetworks"], json!(new_ips));
    assert_ne!(old_ips, new_ips);

    // The old sandbox's DEL comes late.
    s.del(&old, "stale DEL");
    assert_eq!(
        s.endpoints(),
        before,
        "the running pod's endpoint is untouched"
    );
    let handles: Vec<String> = s.store.handles().into_keys().collect();
    assert_eq!(
        handles,
        [format!("{NET}.wep000000000000000000000000000new")],
        "the stale container's addresses are released, the running one's kept"
    );
    assert_eq!(new.addresses(), {
        let mut a = new_ips.clone();
        a.sort();
        a
    });
    assert!(s
        .node
        .link(&k8s_host_veth("cali", "ns-1", "db-0"))
        .is_some());
    assert_eq!(
        cni_tests::pod::link_names(&old.netns),
        std::collections::BTreeSet::from(["lo".to_string()]),
        "the stale sandbox holds nothing"
    );

    s.del(&new, "DEL of the running sandbox");
    s.assert_nothing_left(&new, "after both DELs");
}

#[test]
fn wep_on_etcd_stale_del_leaves_the_running_pods_endpoint_and_addresses() {
    stale_del_leaves_the_running_pod_alone(Backend::Etcd);
}

#[test]
fn wep_on_local_stale_del_leaves_the_running_pods_endpoint_and_addresses() {
    stale_del_leaves_the_running_pod_alone(Backend::Local);
}

/// ADD and DEL are refused with code 11 before anything changes.
fn assert_refused_untouched(s: &Setup, pod: &Pod, what: &str) {
    let out = s.call("ADD", pod);
    let msg = out.refused(11, what);
    assert_eq!(msg, NOT_READY, "{what}");
    let details = out.json.as_ref().expect("error")["details"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(details.contains("datastoreReady"), "{what}: {details}");
    assert!(details.contains("calico/node"), "{what}: {details}");
    s.assert_nothing_left(pod, what);
    let out = s.call("DEL", pod);
    assert_eq!(out.refused(11, what), NOT_READY, "DEL, {what}");
}

#[test]
fn wep_on_etcd_not_ready_refuses_add_and_del_and_leaks_nothing() {
    let s = Setup::new(Backend::Etcd);
    let pod = s
        .node
        .k8s_pod("wep00000000000000000000000000nr1", "ns-1", "api-0");
    assert_refused_untouched(&s, &pod, "no ClusterInformation");
    s.cluster_information(false);
    assert_refused_untouched(&s, &pod, "datastoreReady false");
    let no_field = json!({"kind": "ClusterInformation", "apiVersion": "projectcalico.org/v3",
                          "metadata": {"name": "default"}, "spec": {"clusterGUID": "g"}});
    s.store.put(CLUSTER_INFO, &no_field.to_string());
    assert_refused_untouched(&s, &pod, "no datastoreReady field");

    s.cluster_information(true);
    s.add(&pod);
    assert_eq!(s.endpoints().len(), 1);
    s.del(&pod, "DEL once ready");
    s.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn wep_on_local_an_explicit_not_ready_refuses_add_and_del() {
    let s = Setup::new(Backend::Local);
    let pod = s.node.pod("wep00000000000000000000000000nr2");
    s.cluster_information(false);
    assert_refused_untouched(&s, &pod, "local, datastoreReady false");
    s.cluster_information(true);
    s.add(&pod);
    s.del(&pod, "DEL once ready");
    s.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn wep_on_etcd_unreachable_is_try_again_later_naming_the_endpoint() {
    let mut s = Setup::new(Backend::Etcd);
    s.cluster_information(true);
    let pod = s
        .node
        .k8s_pod("wep00000000000000000000000000ur1", "ns-1", "api-0");
    let url = s.relay.as_ref().expect("relay").url();
    s.relay = None; // etcd is now out of the node's reach
    for command in ["ADD", "DEL"] {
        let out = s.call(command, &pod);
        let msg = out.refused(11, command);
        assert!(msg.contains("ClusterInformation"), "{command}: {msg}");
        assert!(
            msg.contains(url.trim_start_matches("http://")),
            "{command}: the message names the endpoint: {msg}"
        );
    }
    s.assert_nothing_left(&pod, "etcd unreachable");
}

#[test]
fn wep_write_failure_rolls_back_the_pod() {
    let s = Setup::new(Backend::Local);
    let pod = s
        .node
        .k8s_pod("wep00000000000000000000000000wf1", "ns-1", "api-0");
    // A directory where the endpoint's file would go: the local store refuses the write.
    let key = format!("{WEP_PREFIX}ns-1/e2e--node-k8s-api--0-eth0");
    let in_the_way = s.store.data_dir().join(key.trim_start_matches('/'));
    fs::create_dir_all(in_the_way.join("blocker")).expect("mkdir");
    let out = s.call("ADD", &pod);
    let msg = out.refused(106, "endpoint write refused");
    assert!(msg.contains("WorkloadEndpoint"), "{msg}");
    assert!(msg.contains(&key), "names the key: {msg}");
    s.node.assert_nothing_left(&pod, "after the refused write");
    assert_eq!(s.store.handles(), BTreeMap::new(), "addresses released");

    fs::remove_dir_all(&in_the_way).expect("rm");
    s.add(&pod);
    s.del(&pod, "DEL");
    s.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn wep_with_k8s_policy_carries_the_pods_labels_service_account_and_ports() {
    // etcd-style datastore, but `policy.type: k8s`: the plugin reads the Pod from the API
    // server and the endpoint carries what Felix's policy needs from it.
    let mut s = Setup::new(Backend::Local);
    let api = s.with_k8s_policy("shop");
    api.put(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "cart-7d9f", "namespace": "shop", "generateName": "cart-",
                            "labels": {"app": "cart", "tier": "web"}},
               "spec": {"nodeName": NODE, "serviceAccountName": "cart-sa",
                        "initContainers": [{"name": "init", "image": "busybox",
                                            "ports": [{"name": "warmup", "containerPort": 9000,
                                                       "protocol": "UDP"}]}],
                        "containers": [{"name": "main", "image": "busybox",
                                        "ports": [{"name": "http", "containerPort": 8080},
                                                  {"containerPort": 8081},
                                                  {"containerPort": 8443, "hostPort": 443,
                                                   "hostIP": "10.0.0.1", "protocol": "TCP"}]}]},
               "status": {"phase": "Pending"}}),
    );
    let pod = s
        .node
        .k8s_pod("wep0000000000000000000000000000c3", "shop", "cart-7d9f");
    s.add(&pod);
    let key = format!("{WEP_PREFIX}shop/e2e--node-k8s-cart--7d9f-eth0");
    let wep = s.endpoints().remove(&key).expect("the endpoint");
    assert_eq!(wep["metadata"]["generateName"], "cart-", "{wep}");
    assert_eq!(
        wep["metadata"]["labels"],
        json!({"app": "cart", "tier": "web", "projectcalico.org/namespace": "shop",
               "projectcalico.org/orchestrator": "k8s",
               "projectcalico.org/serviceaccount": "cart-sa"})
    );
    assert_eq!(wep["spec"]["serviceAccountName"], "cart-sa");
    assert_eq!(
        wep["spec"]["profiles"],
        json!(["kns.shop", "ksa.shop.cart-sa"])
    );
    assert_eq!(
        wep["spec"]["ports"],
        json!([{"name": "warmup", "protocol": "udp", "port": 9000},
               {"name": "http", "protocol": "tcp", "port": 8080},
               {"protocol": "tcp", "port": 8443, "hostPort": 443, "hostIP": "10.0.0.1"}]),
        "ports without a name or host port are left out"
    );
    s.del(&pod, "DEL");
    s.assert_nothing_left(&pod, "after DEL");
}

/// A pod namespace that is a path (`../..`): ADD is refused before anything is made, and the
/// runtime's DEL that follows succeeds (once and again) instead of failing for ever on a
/// name no endpoint can have.
fn a_path_as_pod_namespace_is_refused_and_its_del_succeeds(backend: Backend) {
    let s = Setup::new(backend);
    s.cluster_information(true);
    let pod = s
        .node
        .k8s_pod("wep000000000000000000000000dots1", "../..", "web-0");
    let before = s.store.snapshot();
    let out = s.call("ADD", &pod);
    assert_eq!(out.exit, Some(1), "ADD: {}", out.describe());
    let code = out.json.as_ref().map(|j| j["code"].clone());
    assert_eq!(code, Some(json!(4)), "ADD: {}", out.describe());
    assert!(out.stdout.contains("../.."), "{}", out.describe());
    assert_eq!(s.store.snapshot(), before, "a refused ADD writes nothing");
    s.del(&pod, "DEL after the refused ADD");
    s.del(&pod, "DEL again");
    s.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn wep_on_local_a_path_as_pod_namespace_is_refused_and_its_del_succeeds() {
    a_path_as_pod_namespace_is_refused_and_its_del_succeeds(Backend::Local);
}

#[test]
fn wep_on_etcd_a_path_as_pod_namespace_is_refused_and_its_del_succeeds() {
    a_path_as_pod_namespace_is_refused_and_its_del_succeeds(Backend::Etcd);
}

/// `policy.type: k8s` with the pod's `floatingIPs` and `allowedSourcePrefixes`: behind
/// `feature_control.floating_ips`, each floating IP is NATed to the pod's address of its
/// family (`ipNATs`) and the prefixes the pod may send from are recorded
/// (`allowSpoofedSourcePrefixes`); with the gate closed, or an annotation that cannot be
/// honoured, ADD is refused and leaves nothing.
#[test]
fn wep_with_k8s_policy_carries_floating_ips_and_allowed_source_prefixes() {
    let mut s = Setup::new(Backend::Local);
    let api = s.with_k8s_policy("shop");
    let put_pod = |name: &str, annotations: Value| {
        api.put(
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
                   "spec": {"nodeName": NODE,
                            "containers": [{"name": "main", "image": "busybox"}]},
                   "status": {"phase": "Pending"}}),
        );
    };
    let both = json!({
        "cni.projectcalico.org/floatingIPs": "[\"192.0.2.7\", \"2001:db8::7\"]",
        "cni.projectcalico.org/allowedSourcePrefixes": "[\"10.9.0.5/24\"]",
    });
    put_pod("edge", both);
    let pod = s
        .node
        .k8s_pod("wep00000000000000000000000000fip1", "shop", "edge");

    // The gate is closed by default: refused before an address is taken.
    let out = s.call("ADD", &pod);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert!(
        out.stdout
            .contains("requested feature is not enabled: floating_ips"),
        "{}",
        out.describe()
    );
    s.assert_nothing_left(&pod, "gate closed");

    s.plugin["feature_control"] = json!({"floating_ips": true});
    let result = s.add(&pod);
    let ips = addresses(&result);
    let v4 = ips
        .iter()
        .find(|a| !a.contains(':'))
        .expect("an IPv4 address");
    let v6 = ips
        .iter()
        .find(|a| a.contains(':'))
        .expect("an IPv6 address");
    let key = format!("{WEP_PREFIX}shop/e2e--node-k8s-edge-eth0");
    let wep = s.endpoints().remove(&key).expect("the endpoint");
    let host = |a: &str| a.split('/').next().unwrap_or_default().to_string();
    assert_eq!(
        wep["spec"]["ipNATs"],
        json!([{"internalIP": host(v4), "externalIP": "192.0.2.7"},
               {"internalIP": host(v6), "externalIP": "2001:db8::7"}]),
        "{wep}"
    );
    assert_eq!(
        wep["spec"]["allowSpoofedSourcePrefixes"],
        json!(["10.9.0.0/24"]),
        "{wep}"
    );
    s.del(&pod, "DEL");
    s.assert_nothing_left(&pod, "after DEL");

    // An IPv6 floating IP for a pod with no IPv6 address: found after IPAM, rolled back.
    put_pod(
        "edge4",
        json!({"cni.projectcalico.org/ipFamilies": "[\"IPv4\"]",
               "cni.projectcalico.org/floatingIPs": "[\"2001:db8::8\"]"}),
    );
    let pod = s
        .node
        .k8s_pod("wep00000000000000000000000000fip2", "shop", "edge4");
    let out = s.call("ADD", &pod);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert!(out.stdout.contains("2001:db8::8"), "{}", out.describe());
    s.assert_nothing_left(&pod, "no address of the floating IP's family");

    // A prefix that is not a CIDR: refused before IPAM.
    put_pod(
        "spoof",
        json!({"cni.projectcalico.org/allowedSourcePrefixes": "[\"10.9.0.5\"]"}),
    );
    let pod = s
        .node
        .k8s_pod("wep00000000000000000000000000fip3", "shop", "spoof");
    let out = s.call("ADD", &pod);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert!(out.stdout.contains("invalid CIDR"), "{}", out.describe());
    s.assert_nothing_left(&pod, "bad prefix");
}

const PROFILE_PREFIX: &str = "/calico/resources/v3/projectcalico.org/profiles/";

impl Setup {
    /// Every stored Profile: key → value.
    fn profiles(&self) -> BTreeMap<String, Value> {
        self.store
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.starts_with(PROFILE_PREFIX))
            .map(|(k, v)| {
                let value = serde_json::from_str(&v).unwrap_or_else(|e| panic!("{k}: {e}"));
                (k, value)
            })
            .collect()
    }
}

/// Without `policy.type`, the endpoint's profile is the network's, and Felix drops the
/// traffic of an endpoint whose profile does not exist: ADD creates it when it is missing,
/// with Calico's rules for the first workload's orchestrator, and then leaves it alone (an
/// operator's edits survive later ADDs); DEL never deletes it. With `policy.type: k8s` no
/// network profile is written.
fn the_network_profile_is_created_once_and_reused(backend: Backend) {
    let s = Setup::new(backend);
    s.cluster_information(true);
    let key = format!("{PROFILE_PREFIX}{NET}");
    let id = "wep00000000000000000000000000pro1";
    let container = s.node.pod(id);
    s.add(&container);
    let profiles = s.profiles();
    assert_eq!(profiles.keys().collect::<Vec<_>>(), [&key], "{profiles:?}");
    let profile = strip_generated(profiles[&key].clone());
    assert_eq!(
        profile,
        json!({
            "kind": "Profile",
            "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": NET},
            "spec": {
                "ingress": [{"action": "Allow",
                             "source": {"selector": format!("has({NET})")},
                             "destination": {}}],
                "egress": [{"action": "Allow", "source": {}, "destination": {}}],
                "labelsToApply": {NET: ""},
            },
        })
    );

    // An operator tightens it; the next workload's ADD reuses it untouched.
    let mut edited = profiles[&key].clone();
    edited["spec"]["egress"] = json!([{"action": "Deny", "source": {}, "destination": {}}]);
    s.store.put(&key, &edited.to_string());
    let pod = s
        .node
        .k8s_pod("wep00000000000000000000000000pro2", "ns-1", "web-0");
    s.add(&pod);
    assert_eq!(s.profiles()[&key], edited, "reused, not rewritten");

    s.del(&pod, "DEL pod");
    s.del(&container, "DEL container");
    assert_eq!(s.profiles()[&key], edited, "DEL leaves the profile");
    s.assert_nothing_left(&pod, "after DEL");
    s.node.assert_nothing_left(&container, "after DEL");
}

#[test]
fn wep_on_etcd_the_network_profile_is_created_once_and_reused() {
    the_network_profile_is_created_once_and_reused(Backend::Etcd);
}

#[test]
fn wep_on_local_the_network_profile_is_created_once_and_reused() {
    the_network_profile_is_created_once_and_reused(Backend::Local);
}

#[test]
fn wep_a_kubernetes_pods_network_profile_allows_all_ingress_and_k8s_policy_writes_none() {
    let s = Setup::new(Backend::Local);
    let pod = s
        .node
        .k8s_pod("wep00000000000000000000000000pro3", "ns-1", "web-0");
    s.add(&pod);
    let profile = s.profiles()[&format!("{PROFILE_PREFIX}{NET}")].clone();
    assert_eq!(
        profile["spec"]["ingress"],
        json!([{"action": "Allow", "source": {}, "destination": {}}]),
        "{profile}"
    );
    s.del(&pod, "DEL");
    s.assert_nothing_left(&pod, "after DEL");

    let mut s = Setup::new(Backend::Local);
    let api = s.with_k8s_policy("shop");
    api.put(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "cart", "namespace": "shop"},
               "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "busybox"}]},
               "status": {"phase": "Pending"}}),
    );
    let pod = s
        .node
        .k8s_pod("wep00000000000000000000000000pro4", "shop", "cart");
    s.add(&pod);
    assert_eq!(
        s.profiles(),
        BTreeMap::new(),
        "kns.shop is kube-controllers'"
    );
    s.del(&pod, "DEL");
    s.assert_nothing_left(&pod, "after DEL");
}

/// `ipAddrs` on etcd and `local`, as on the Kubernetes datastore: a fixed-address pod's new
/// sandbox, wired before the old one's DEL came, releases the addresses its stored endpoint
/// holds and takes them over; the old sandbox's late DEL then takes nothing from it.
fn ip_addrs_take_over_the_previous_sandboxs_addresses(backend: Backend) {
    let mut s = Setup::new(backend);
    s.cluster_information(true);
    let api = s.with_k8s_policy("db");
    let fixed = "172.30.0.77";
    api.put(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "pg-0", "namespace": "db",
                            "annotations": {"cni.projectcalico.org/ipAddrs":
                                            format!("[\"{fixed}\"]")}},
               "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "busybox"}]},
               "status": {"phase": "Pending"}}),
    );
    let old_id = "wep00000000000000000000000000old1";
    let new_id = "wep00000000000000000000000000new1";
    let old = s.node.k8s_pod(old_id, "db", "pg-0");
    assert_eq!(addresses(&s.add(&old)), [format!("{fixed}/32")]);
    let new = s.node.k8s_pod(new_id, "db", "pg-0");
    let result = s.add(&new);
    assert_eq!(addresses(&result), [format!("{fixed}/32")], "{result}");
    let key = format!("{WEP_PREFIX}db/e2e--node-k8s-pg--0-eth0");
    assert_eq!(s.endpoints()[&key]["spec"]["containerID"], new_id);
    let handles = s.store.handles();
    assert_eq!(
        handles.keys().collect::<Vec<_>>(),
        [&format!("{NET}.{new_id}")],
        "the address moved to the new sandbox's handle: {handles:?}"
    );

    s.del(&old, "the old sandbox's late DEL");
    assert_eq!(s.endpoints()[&key]["spec"]["containerID"], new_id);
    assert_eq!(
        s.store.handles().keys().collect::<Vec<_>>(),
        [&format!("{NET}.{new_id}")]
    );
    s.del(&new, "DEL");
    s.assert_nothing_left(&new, "after DEL");
}

#[test]
fn wep_on_etcd_ip_addrs_take_over_the_previous_sandboxs_addresses() {
    ip_addrs_take_over_the_previous_sandboxs_addresses(Backend::Etcd);
}

#[test]
fn wep_on_local_ip_addrs_take_over_the_previous_sandboxs_addresses() {
    ip_addrs_take_over_the_previous_sandboxs_addresses(Backend::Local);
}
