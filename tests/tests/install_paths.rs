//! The four ways operators install Calico, each on a node of its own, starting from the files
//! exactly as that install writes them, with our binaries in place of Calico's (the drop-in
//! path: `install.sh --binaries-only`):
//!
//! 1. the `calico.yaml` manifest: calico-ipam on the Kubernetes datastore, `veth_mtu: "0"`
//!    (the plugin takes the MTU calico-node writes);
//! 2. the same manifest switched to host-local with `"subnet": "usePodCidr"` (the Node's
//!    `spec.podCIDR`);
//! 3. the Tigera operator's own conflist (`cniVersion` 1.0.0, `k8s_api_root`,
//!    `assign_ipv4`/`assign_ipv6`, bandwidth before portmap);
//! 4. an etcd datastore (`calico-etcd.yaml`'s template) with a client-certificate kubeconfig.
//!
//! The templates are in `tests/fixtures/install-paths/`, rendered as install-cni renders
//! them: every `__PLACEHOLDER__` replaced by plain text substitution (the etcd TLS file
//! placeholders by "" when no TLS files are mounted, as install-cni does). The operator
//! writes its API server's address into `k8s_api_root` itself; `__K8S_API_ROOT__` stands
//! for it here. The `calico-kubeconfig` is install-cni's template too (server, CA data,
//! token), with `KUBERNETES_SERVICE_PROTOCOL=http`: the test API server speaks plain HTTP.
//!
//! After rendering, only the paths calico-node and the machine own are pointed into the
//! node's test directory: the log file, the nodename and MTU files calico-node writes
//! (`/var/lib/calico/{nodename,mtu}`, which the manifests never name), the IPAM lock,
//! host-local's data dir and the endpoint status dir. Then two pods are wired, talk over
//! TCP, are deleted (twice), and nothing is left. Needs root; path 4 needs `etcd-server`.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::Engine;
use cni_tests::conflist::ConfList;
use cni_tests::etcd::{etcd_available, TestPki};
use cni_tests::ipam::{Backend, IpamFixture};
use cni_tests::kube_cluster::{host_form, result_ips, within, Cluster, NODE_NAME};
use cni_tests::pod::{assert_tcp, Pod};
use cni_tests::relay::TcpRelay;
use serde_json::{json, Value};

/// What calico-node writes to `/var/lib/calico/mtu` on these nodes.
const NODE_MTU: u64 = 1410;
const WEP_PREFIX: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";
const CLUSTER_INFO: &str = "/calico/resources/v3/projectcalico.org/clusterinformations/default";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/install-paths")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// install-cni's rendering: each placeholder replaced as text; none may be left.
fn render(name: &str, values: &[(&str, String)]) -> Value {
    let mut text = fixture(name);
    for (placeholder, value) in values {
        text = text.replace(placeholder, value);
    }
    assert!(
        !text.contains("__"),
        "{name}: a placeholder is left: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Points the paths calico-node and the machine own into the node's directory (see the
/// module documentation); nothing else of the rendered conflist changes.
fn on_test_node(mut list: Value, c: &Cluster) -> ConfList {
    let dir = c.node.dir.path();
    let calico = &mut list["plugins"][0];
    calico["log_file_path"] = json!(dir.join("cni.log"));
    calico["nodename_file"] = json!(c.node.nodename_file());
    calico["mtu_file"] = json!(c.node.mtu_file());
    calico["ipam_lock_file"] = json!(dir.join("ipam.lock"));
    if calico.get("endpoint_status_dir").is_some() {
        calico["endpoint_status_dir"] = json!(dir.join("endpoint-status"));
    }
    if calico["ipam"]["type"] == "host-local" {
        calico["ipam"]["dataDir"] = json!(c.node.data_dir());
    }
    ConfList::from_bytes(list.to_string().as_bytes()).expect("rendered conflist")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `calico-kubeconfig` as install-cni writes it: its template, the service host in
/// brackets, the CA as data, then `user_lines` (a token, or a client certificate).
fn install_cni_kubeconfig(c: &Cluster, ca: &Path, user_lines: &str) -> PathBuf {
    let addr = c.api.addr();
    let ca = fs::read(ca).expect("CA");
    let text = format!(
        "# Kubeconfig file for Calico CNI plugin.\napiVersion: v1\nkind: Config\nclusters:\n\
         - name: local\n  cluster:\n    server: http://[{}]:{}\n    \
         certificate-authority-data: {}\nusers:\n- name: calico\n  user:\n{user_lines}\n\
         contexts:\n- name: calico-context\n  context:\n    cluster: local\n    user: calico\n\
         current-context: calico-context",
        addr.ip(),
        addr.port(),
        b64(&ca)
    );
    let path = c.node.dir.path().join("calico-kubeconfig");
    fs::write(&path, text).expect("kubeconfig");
    path
}

/// A Kubernetes node whose calico-node has written the nodename and MTU files, whose API
/// server takes only the kubeconfig's token, and the kubeconfig install-cni wrote.
fn kubernetes_node(pki: &TestPki) -> (Cluster, PathBuf) {
    let c = Cluster::new();
    fs::write(c.node.mtu_file(), format!("{NODE_MTU}\n")).expect("MTU file");
    c.api.set_require_token(true);
    let token = format!("    token: {}", c.api.token());
    let kubeconfig = install_cni_kubeconfig(&c, &pki.ca(), &token);
    (c, kubeconfig)
}

/// Two pods of `ns1` wired by `list`: each gets one IPv4 address (checked by `check`) and
/// the MTU calico-node wrote, they talk over TCP, and two DELs each leave no interface
/// in the pods or route or veth in the node.
fn two_pods_talk(c: &Cluster, list: &ConfList, check: impl Fn(IpAddr)) -> Vec<Pod> {
    let runner = c.runner();
    let mut pods = Vec::new();
    let mut ips = Vec::new();
    for name in ["web", "db"] {
        c.pod("ns1", name, json!({}));
        let pod = c.sandbox(&format!("install-path-{name}"), "ns1", name);
        let result = runner.add(list, &pod.rt).expect("ADD");
        let got = result_ips(&result);
        assert_eq!(got.len(), 1, "IPv4 only: {result}");
        check(got[0]);
        assert_eq!(pod.addresses(), vec![host_form(got[0])]);
        assert_eq!(pod.iface()["mtu"], json!(NODE_MTU), "calico-node's MTU");
        ips.push(got[0]);
        pods.push(pod);
    }
    assert_tcp(&pods[0].netns, ips[0], &pods[1].netns, ips[1], "db to web");
    for pod in &pods {
        runner.del(list, &pod.rt).expect("DEL");
        runner.del(list, &pod.rt).expect("DEL again");
    }
    for pod in &pods {
        c.node.assert_nothing_left(pod, "after both DELs");
    }
    pods
}

/// Nothing of calico-ipam left in the Kubernetes datastore.
fn assert_no_ipam_left(c: &Cluster) {
    assert_eq!(c.ipam_allocations(), BTreeMap::new(), "allocations left");
    assert_eq!(c.ipam_handles(), Vec::<String>::new(), "handles left");
}

#[test]
fn manifest_calico_ipam_on_the_kubernetes_datastore() {
    let pki = TestPki::generate().expect("openssl");
    let (c, kubeconfig) = kubernetes_node(&pki);
    let pool = c.node.pod_subnet_v4();
    c.ip_pool("default-ipv4-ippool", &pool, 26);
    let list = render(
        "manifest-calico-ipam.conflist",
        &[
            ("__KUBERNETES_NODE_NAME__", NODE_NAME.to_string()),
            ("__CNI_MTU__", "0".to_string()),
            ("__KUBECONFIG_FILEPATH__", kubeconfig.display().to_string()),
        ],
    );
    let list = on_test_node(list, &c);
    two_pods_talk(&c, &list, |ip| assert!(within(&pool, ip), "{ip} in {pool}"));
    assert_no_ipam_left(&c);
}

#[test]
fn manifest_host_local_use_pod_cidr() {
    let pki = TestPki::generate().expect("openssl");
    let (c, kubeconfig) = kubernetes_node(&pki);
    // The Node's spec.podCIDR, as the controller manager assigns it.
    let pod_cidr = c.node.pod_subnet_v4();
    let list = render(
        "manifest-host-local.conflist",
        &[
            ("__KUBERNETES_NODE_NAME__", NODE_NAME.to_string()),
            ("__CNI_MTU__", "0".to_string()),
            ("__KUBECONFIG_FILEPATH__", kubeconfig.display().to_string()),
        ],
    );
    let list = on_test_node(list, &c);
    two_pods_talk(&c, &list, |ip| {
        assert!(within(&pod_cidr, ip), "{ip} in the podCIDR {pod_cidr}")
    });
    assert_eq!(c.reservations(), BTreeMap::new(), "host-local reservations");
    assert!(c.api.list("ipamblocks").is_empty(), "calico-ipam never ran");
}

#[test]
fn operator_conflist_with_k8s_api_root() {
    let pki = TestPki::generate().expect("openssl");
    let (c, kubeconfig) = kubernetes_node(&pki);
    let pool = c.node.pod_subnet_v4();
    c.ip_pool("default-ipv4-ippool", &pool, 26);
    let list = render(
        "operator.conflist",
        &[
            ("__K8S_API_ROOT__", c.api.url()),
            ("__KUBECONFIG_FILEPATH__", kubeconfig.display().to_string()),
        ],
    );
    let list = on_test_node(list, &c);
    two_pods_talk(&c, &list, |ip| assert!(within(&pool, ip), "{ip} in {pool}"));
    assert_no_ipam_left(&c);
}

#[test]
fn etcd_datastore_with_a_client_certificate_kubeconfig() {
    // Missing etcd fails the test, as every etcd test does: scripts/test-deps.sh installs it.
    assert!(
        etcd_available(),
        "no etcd binary: apt-get install -y etcd-server (scripts/test-deps.sh does)"
    );
    // Calico's objects in etcd; the API server only for pods and namespaces
    // (`policy.type: k8s`), reached with a client certificate (over plain HTTP here, so
    // the certificate is loaded and sent nowhere: the plugins only have to accept it).
    let pki = TestPki::generate().expect("openssl");
    let c = Cluster::new();
    fs::write(c.node.mtu_file(), format!("{NODE_MTU}\n")).expect("MTU file");
    let cert = fs::read(pki.client_cert()).expect("client cert");
    let key = fs::read(pki.client_key()).expect("client key");
    let user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}",
        b64(&cert),
        b64(&key)
    );
    let kubeconfig = install_cni_kubeconfig(&c, &pki.ca(), &user);

    let store = IpamFixture::new(Backend::Etcd);
    let target: SocketAddr = store
        .endpoints()
        .trim_start_matches("http://")
        .parse()
        .expect("etcd on 127.0.0.1:<port>");
    let relay = TcpRelay::start(c.node.netns.path(), target).expect("relay into the node");
    let pool = c.node.pod_subnet_v4();
    store.create_pool(&pool, 26);
    store.register_node(cni_tests::kube_cluster::NODE_NAME);
    let ready = json!({
        "kind": "ClusterInformation", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "default"},
        "spec": {"clusterType": "k8s,bgp", "calicoVersion": "v3.30.0", "datastoreReady": true},
    });
    store.put(CLUSTER_INFO, &ready.to_string());

    // Plain http etcd: no TLS files mounted, so install-cni renders them as "".
    let list = render(
        "manifest-etcd.conflist",
        &[
            ("__ETCD_ENDPOINTS__", relay.url()),
            ("__ETCD_KEY_FILE__", String::new()),
            ("__ETCD_CERT_FILE__", String::new()),
            ("__ETCD_CA_CERT_FILE__", String::new()),
            ("__CNI_MTU__", "0".to_string()),
            ("__KUBECONFIG_FILEPATH__", kubeconfig.display().to_string()),
        ],
    );
    let list = on_test_node(list, &c);
    let runner = c.runner();
    c.pod("ns1", "probe", json!({}));
    let probe = c.sandbox("install-path-probe", "ns1", "probe");
    runner.add(&list, &probe.rt).expect("ADD");
    let endpoints: Vec<String> = store
        .snapshot()
        .into_keys()
        .filter(|k| k.starts_with(WEP_PREFIX))
        .collect();
    assert_eq!(
        endpoints,
        vec![format!("{WEP_PREFIX}ns1/e2e--node-k8s-probe-eth0")],
        "the endpoint is in etcd"
    );
    runner.del(&list, &probe.rt).expect("DEL");

    two_pods_talk(&c, &list, |ip| assert!(within(&pool, ip), "{ip} in {pool}"));
    assert_eq!(
        store.handles(),
        BTreeMap::new(),
        "IPAM handles left in etcd"
    );
    let left: Vec<String> = store
        .snapshot()
        .into_keys()
        .filter(|k| k.starts_with(WEP_PREFIX))
        .collect();
    assert!(left.is_empty(), "endpoints left in etcd: {left:?}");
    assert!(
        c.api.list("ipamblocks").is_empty(),
        "nothing of Calico's in the API server"
    );
}
