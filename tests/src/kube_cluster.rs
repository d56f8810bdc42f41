//! A Kubernetes node for end-to-end tests of the calico plugin in Kubernetes mode: the
//! test's [`Node`] namespace, a [`FakeApiServer`] listening inside it (plugins run there and
//! reach it on the node's own loopback, as a kubelet's plugins reach a local API server
//! proxy), seeded with what a cluster holds for them: ClusterInformation `default` (ready),
//! the Node with its podCIDRs, namespaces and pods; and the conflists we ship, filled in as
//! the installer fills them and pointed at the test's own directories.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use shared::netns::NetNs;

use crate::conflist::ConfList;
use crate::kube_api::{FakeApiServer, RecordedRequest};
use crate::pod::{Node, Pod};
use crate::runner::{RunError, Runner};

/// The node's name: what [`Node`] writes into its nodename file.
pub const NODE_NAME: &str = "e2e-node";
/// The network name of the conflists we ship.
pub const NETWORK: &str = "k8s-pod-network";
/// The MTU the filled conflists carry.
pub const MTU: u64 = 1440;

/// The annotations the plugin writes on a pod.
pub const POD_IP: &str = "cni.projectcalico.org/podIP";
pub const POD_IPS: &str = "cni.projectcalico.org/podIPs";
pub const CONTAINER_ID: &str = "cni.projectcalico.org/containerID";

/// A fake API server bound inside a network namespace, stopped from inside it (its drop
/// wakes its accept loop with a connection to its own address, which only exists there).
pub struct NodeApiServer {
    api: Option<FakeApiServer>,
    netns: NetNs,
}

impl NodeApiServer {
    pub fn start(netns: &Path) -> NodeApiServer {
        let netns = NetNs::open(netns).expect("node netns");
        let api = netns.run(FakeApiServer::start).expect("start in the node");
        NodeApiServer {
            api: Some(api),
            netns,
        }
    }
}

impl std::ops::Deref for NodeApiServer {
    type Target = FakeApiServer;

    fn deref(&self) -> &FakeApiServer {
        self.api.as_ref().expect("running")
    }
}

impl Drop for NodeApiServer {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            if self.netns.run(move || drop(api)).is_err() {
                eprintln!("fake API server: could not stop it inside the node");
            }
        }
    }
}

/// The node, its API server and the conflist directories.
pub struct Cluster {
    pub api: NodeApiServer,
    pub node: Node,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// A node whose API server holds a ready ClusterInformation, the Node with the IPv4
    /// podCIDR [`Node::pod_subnet_v4`], and namespace `ns1`.
    pub fn new() -> Cluster {
        let node = Node::new();
        let api = NodeApiServer::start(node.netns.path());
        let kubeconfig = api.kubeconfig(node.dir.path());
        let cluster = Cluster {
            api,
            node,
            kubeconfig,
        };
        cluster.set_ready(Some(true));
        let v4 = cluster.node.pod_subnet_v4();
        cluster.set_pod_cidrs(&[&v4]);
        cluster.namespace("ns1", json!({}));
        cluster
    }

    /// ClusterInformation `default` with `datastoreReady` set to this, or absent (`None`).
    pub fn set_ready(&self, ready: Option<bool>) {
        match ready {
            Some(ready) => {
                self.api.put(
                    "clusterinformations",
                    json!({"apiVersion": "crd.projectcalico.org/v1",
                           "kind": "ClusterInformation",
                           "metadata": {"name": "default"},
                           "spec": {"datastoreReady": ready, "calicoVersion": "v3.30.0",
                                    "clusterType": "k8s,bgp,kdd"}}),
                );
            }
            None => {
                self.api.remove("clusterinformations", "", "default");
            }
        }
    }

    /// The Node object with these podCIDRs (`spec.podCIDR` is the first, as Kubernetes
    /// keeps it).
    pub fn set_pod_cidrs(&self, cidrs: &[&str]) {
        let mut spec = json!({"podCIDRs": cidrs});
        if let Some(first) = cidrs.first() {
            spec["podCIDR"] = json!(first);
        }
        self.api.put(
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME}},
                   "spec": spec}),
        );
    }

    /// An enabled IPPool (spec §7.1) with Calico's defaults for the rest.
    pub fn ip_pool(&self, name: &str, cidr: &str, block_size: u8) {
        self.api.put(
            "ippools",
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                   "metadata": {"name": name},
                   "spec": {"cidr": cidr, "blockSize": block_size, "ipipMode": "Never",
                            "vxlanMode": "Never", "natOutgoing": true,
                            "nodeSelector": "all()"}}),
        );
    }

    /// Every address calico-ipam holds, as `address → handle`, read from the IPAMBlocks.
    pub fn ipam_allocations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for block in self.api.list("ipamblocks") {
            let spec = &block["spec"];
            let cidr = spec["cidr"].as_str().unwrap_or_default();
            let base: std::net::IpAddr = cidr
                .split('/')
                .next()
                .and_then(|b| b.parse().ok())
                .unwrap_or_else(|| panic!("block CIDR {cidr}"));
            let allocations = spec["allocations"].as_array().cloned().unwrap_or_default();
            for (ordinal, attr) in allocations.iter().enumerate() {
                let Some(index) = attr.as_u64() else { continue };
                let handle = spec["attributes"][index as usize]["handle_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ip = match base {
                    std::net::IpAddr::V4(v4) => {
                        std::net::IpAddr::V4((u32::from(v4) + ordinal as u32).into())
                    }
                    std::net::IpAddr::V6(v6) => {
                        std::net::IpAddr::V6((u128::from(v6) + ordinal as u128).into())
                    }
                };
                out.insert(ip.to_string(), handle);
            }
        }
        out
    }

    /// The IPAMHandles' ids (`spec.handleID`) still stored.
    pub fn ipam_handles(&self) -> Vec<String> {
        self.api
            .list("ipamhandles")
            .iter()
            .filter_map(|h| h["spec"]["handleID"].as_str().map(str::to_string))
            .collect()
    }

    pub fn namespace(&self, name: &str, annotations: Value) {
        self.api.put(
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "annotations": annotations}}),
        );
    }

    /// A pod scheduled on this node.
    pub fn pod(&self, namespace: &str, name: &str, annotations: Value) -> Value {
        self.api.put(
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": namespace, "annotations": annotations,
                                "labels": {"app": name}},
                   "spec": {"nodeName": NODE_NAME,
                            "containers": [{"name": "main", "image": "busybox"}]},
                   "status": {"phase": "Pending"}}),
        )
    }

    /// A sandbox of pod `namespace/name`: a fresh namespace and containerd's CNI_ARGS.
    pub fn sandbox(&self, container_id: &str, namespace: &str, name: &str) -> Pod {
        self.node.k8s_pod(container_id, namespace, name)
    }

    /// The pod's annotations as stored.
    pub fn annotations(&self, namespace: &str, name: &str) -> Map<String, Value> {
        self.api
            .get("pods", namespace, name)
            .unwrap_or_else(|| panic!("no pod {namespace}/{name}"))["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    /// The requests made with `method` to exactly `path`, oldest first.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// The Calico-written annotations of a pod, as a map.
    pub fn calico_annotations(&self, namespace: &str, name: &str) -> BTreeMap<String, String> {
        self.annotations(namespace, name)
            .into_iter()
            .filter(|(k, _)| k.starts_with("cni.projectcalico.org/"))
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect()
    }

    /// One of the conflists we ship, filled in for this node: the installer's placeholders
    /// (node name, MTU [`MTU`], the kubeconfig of this API server), then everything that
    /// would otherwise touch the machine pointed into the test's directory (log file,
    /// nodename and MTU files, host-local's data, calico-ipam's lock), then `edit`.
    pub fn conflist(&self, file: &str, edit: impl FnOnce(&mut Value)) -> ConfList {
        let mut list = self.filled(file);
        let dir = self.node.dir.path();
        let calico = &mut list["plugins"][0];
        calico["log_level"] = json!("debug");
        calico["log_file_path"] = json!(dir.join("cni.log"));
        calico["nodename_file"] = json!(self.node.nodename_file());
        calico["mtu_file"] = json!(self.node.mtu_file());
        calico["ipam_lock_file"] = json!(dir.join("ipam.lock"));
        if calico["ipam"]["type"] == "host-local" {
            calico["ipam"]["dataDir"] = json!(self.node.data_dir());
        }
        edit(&mut list);
        ConfList::from_bytes(list.to_string().as_bytes()).expect("filled conflist")
    }

    /// A shipped conflist with the installer's placeholders filled in, as JSON.
    pub fn filled(&self, file: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../conflists")
            .join(file);
        let mut text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (key, value) in [
            ("__KUBERNETES_NODE_NAME__", NODE_NAME.to_string()),
            ("__CNI_MTU__", MTU.to_string()),
            (
                "__KUBECONFIG_FILEPATH__",
                self.kubeconfig.display().to_string(),
            ),
        ] {
            text = text.replace(key, &value);
        }
        assert!(!text.contains("__"), "{file}: a placeholder is left");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// The calico entry of `list` as the runtime hands it to the plugin (with the list's
    /// `name` and `cniVersion`), for direct calls ([`Node::call`]).
    pub fn calico_conf(list: &ConfList) -> Value {
        let raw: Value = serde_json::from_slice(&list.bytes).expect("conflist JSON");
        let mut conf = raw["plugins"][0].clone();
        conf["name"] = raw["name"].clone();
        conf["cniVersion"] = raw["cniVersion"].clone();
        conf
    }

    /// A runner whose plugins run inside the node.
    pub fn runner(&self) -> Runner {
        self.node.runner()
    }

    /// host-local's reservations for [`NETWORK`]: address → owner (`<id>\r\n<ifname>`).
    pub fn reservations(&self) -> BTreeMap<String, String> {
        let store = self.node.data_dir().join(NETWORK);
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&store).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                let owner = fs::read_to_string(entry.path()).unwrap_or_default();
                out.insert(name, owner);
            }
        }
        out
    }

    /// Panics unless nothing of any attachment is left: no link or route in the node
    /// beyond the fixture's own, only `lo` in `pod`, no host-local reservation.
    pub fn assert_nothing_left(&self, pod: &Pod, what: &str) {
        self.node.assert_nothing_left(pod, what);
        assert_eq!(
            self.reservations(),
            BTreeMap::new(),
            "{what}: addresses left reserved"
        );
    }

    /// The addresses host-local holds for `container_id`.
    pub fn reservations_of(&self, container_id: &str) -> Vec<String> {
        self.reservations()
            .into_iter()
            .filter(|(_, owner)| owner.lines().next().map(str::trim) == Some(container_id))
            .map(|(ip, _)| ip)
            .collect()
    }
}

impl Default for Cluster {
    fn default() -> Cluster {
        Cluster::new()
    }
}

// ---- assertions the Kubernetes-mode tests share ----

/// The path of a pod's status subresource, which ADD and DEL patch.
pub fn status_path(ns: &str, pod: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{pod}/status")
}

/// The addresses of an ADD result, bare.
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .map(|ip| {
            let text = ip["address"].as_str().expect("address");
            let (ip, prefix) = text.split_once('/').expect("CIDR");
            let ip: IpAddr = ip.parse().expect("address");
            assert_eq!(
                prefix,
                if ip.is_ipv4() { "32" } else { "128" },
                "calico reports single hosts: {result}"
            );
            ip
        })
        .collect()
}

/// Whether `ip` is inside `cidr`.
pub fn within(cidr: &str, ip: IpAddr) -> bool {
    let (net, prefix) = cidr.split_once('/').expect("CIDR");
    let prefix: u32 = prefix.parse().expect("prefix");
    match (net.parse::<IpAddr>().expect("network"), ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// `ip` as a single host (`/32`, `/128`), as calico reports and annotates addresses.
pub fn host_form(ip: IpAddr) -> String {
    format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })
}

/// The code and message of a refused chain call.
pub fn refusal(err: &RunError) -> (u32, String) {
    let e = err
        .cni_error()
        .unwrap_or_else(|| panic!("no CNI error object: {err}"));
    (e.code.as_u32(), e.msg.clone())
}

/// Runs an ADD that must be refused: its code and message.
pub fn add_fails(c: &Cluster, list: &ConfList, pod: &Pod) -> (u32, String) {
    let err = c
        .runner()
        .add(list, &pod.rt)
        .expect_err("ADD must be refused");
    refusal(&err)
}
