//! A node and its pods, for end-to-end tests of the `calico` plugin.
//!
//! [`Node`] is a network namespace set up the way calico-node and Felix leave a host for pod
//! traffic: `lo` up, a stand-in uplink `node0` carrying the node's own addresses (`10.<x>.<y>.1/32`,
//! `fd00:<x>:<y>::1/128`), default routes out of `node0` (Calico's proxy ARP for 169.254.1.1
//! answers only when the node routes that address elsewhere), and forwarding on. The plugins
//! run inside it ([`crate::Runner::host_netns`]), so every veth, route and sysctl they touch
//! stays in the test's namespaces. Its IPAM data, nodename file and MTU file live in the
//! test's own directory.
//!
//! [`Pod`] is a fresh network namespace and the runtime arguments of one attachment.
//! Inspection goes through `ip -n <ns> -j ...` and `/proc/sys/net` read from a thread inside
//! the namespace; reachability is proved with a real TCP exchange between namespaces, bounded
//! by [`TCP_TIMEOUT`].
//!
//! Everything is dropped with the fixture, panics included.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::netns::NetNs;

use crate::fixtures::{plugin_dir, run_plugin_in};
use crate::host_local::Outcome;
use crate::{ConfList, Runner, RuntimeConf, TestDir, TestNetns};

/// The network name of every config built here; host-local keeps its store in
/// `<data dir>/<NET>`.
pub const NET: &str = "calico-e2e";

/// The container interface name pods get unless a test says otherwise.
pub const IFNAME: &str = "eth0";

/// The MAC Calico forces on every host veth.
pub const HOST_VETH_MAC: &str = "ee:ee:ee:ee:ee:ee";

/// The IPv4 next hop of every pod: answered by proxy ARP on the host veth.
pub const GATEWAY_V4: &str = "169.254.1.1";

/// The link-local address of a host veth whose MAC is `ee:ee:ee:ee:ee:ee` (EUI-64).
pub const GATEWAY_V6: &str = "fe80::ecee:eeff:feee:eeee";

/// The versions the calico plugin and our host-local both speak.
pub const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// How long a TCP connect, accept or read may take.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5);

static NEXT_NODE: AtomicUsize = AtomicUsize::new(0);

/// Which address families the IPAM config hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    V4,
    V6,
    Dual,
}

impl Stack {
    pub fn v4(self) -> bool {
        matches!(self, Stack::V4 | Stack::Dual)
    }

    pub fn v6(self) -> bool {
        matches!(self, Stack::V6 | Stack::Dual)
    }
}

/// IPv4 or IPv6, for route and sysctl inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

/// A test's node: its network namespace, its directory, its addresses.
#[derive(Debug)]
pub struct Node {
    pub netns: TestNetns,
    pub dir: TestDir,
    x: u8,
    y: u8,
    baseline_links: BTreeSet<String>,
    baseline_routes: Vec<String>,
}

/// One pod sandbox: its namespace and the runtime arguments of its attachment.
#[derive(Debug)]
pub struct Pod {
    pub netns: TestNetns,
    pub rt: RuntimeConf,
}

impl Node {
    /// Runs the `cnitool` binary inside the node, as an operator reproducing the kubelet
    /// would, with this node's conflist directory, plugins and cache; CNI_ARGS, CAP_ARGS
    /// and CNI_IFNAME come only from `args`' environment, never from the test's.
    pub fn cnitool(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", self.netns.name()])
            .arg(crate::fixtures::plugin_dir().join("cnitool"))
            .args(args)
            .env("NETCONFPATH", self.dir.path().join("net.d"))
            .env("CNI_PATH", crate::fixtures::plugin_dir())
            .env("CNI_CACHE_DIR", self.dir.cache_dir())
            .env_remove("CNI_ARGS")
            .env_remove("CAP_ARGS")
            .env_remove("CNI_IFNAME")
            .output()
            .expect("cnitool runs")
    }

    /// A node namespace set up as described in the module documentation. Panics when the
    /// machine refuses (not root, no `ip`): nothing else could run anyway.
    pub fn new() -> Node {
        let n = NEXT_NODE.fetch_add(1, Ordering::Relaxed);
        // The node's addresses never leave its namespace; distinct values only make a
        // failing test's output easier to tell apart.
        let x = 64 + (std::process::id() % 128) as u8;
        let y = ((n * 2) % 256) as u8;
        let netns = TestNetns::new("calico-node").expect("node netns");
        let dir = TestDir::new().expect("test dir");
        let mut node = Node {
            netns,
            dir,
            x,
            y,
            baseline_links: BTreeSet::new(),
            baseline_routes: Vec::new(),
        };
        let v4 = format!("{}/32", node.address_v4());
        let v6 = format!("{}/128", node.address_v6());
        for args in [
            &["link", "set", "lo", "up"][..],
            // A dummy is what a real node would use; this kernel has no dummy driver, and
            // one end of a veth pair whose peer stays in the node does the same job.
            &[
                "link",
                "add",
                "node0",
                "type",
                "veth",
                "peer",
                "name",
                "node0-peer",
            ],
            &["link", "set", "node0-peer", "up"],
            &["link", "set", "node0", "up"],
            &["addr", "add", &v4, "dev", "node0"],
            &["-6", "addr", "add", &v6, "dev", "node0", "nodad"],
            &["route", "add", "default", "dev", "node0"],
            &["-6", "route", "add", "default", "dev", "node0"],
        ] {
            ip(&node.netns, args);
        }
        set_sysctl(&node.netns, &["net", "ipv4", "ip_forward"], "1");
        set_sysctl(
            &node.netns,
            &["net", "ipv6", "conf", "all", "forwarding"],
            "1",
        );
        fs::write(node.nodename_file(), "e2e-node").expect("nodename file");
        node.baseline_links = node.link_names();
        node.baseline_routes = node.all_routes();
        node
    }

    /// Node defaults that are the opposite of what Calico sets on a host veth, so that each
    /// host-side sysctl assertion can only pass when the plugin wrote the value itself.
    /// (`neigh.<dev>.proxy_delay` starts at 80 on every new interface already; a namespace
    /// other than the first has no `neigh.default` to change.)
    pub fn hostile_interface_defaults(&self) {
        for (key, value) in [
            ("net.ipv4.conf.default.forwarding", "0"),
            ("net.ipv4.conf.default.proxy_arp", "0"),
            ("net.ipv4.conf.default.route_localnet", "0"),
            ("net.ipv6.conf.default.forwarding", "0"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
            ("net.ipv6.conf.default.accept_dad", "1"),
            ("net.ipv6.conf.default.proxy_ndp", "0"),
            ("net.ipv6.conf.default.accept_ra", "1"),
        ] {
            set_sysctl(&self.netns, &key.split('.').collect::<Vec<_>>(), value);
        }
    }

    /// `10.<x>.<y>.1`, on `node0`.
    pub fn address_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.x, self.y, 1)
    }

    /// `fd00:<x>:<y>::1`, on `node0`.
    pub fn address_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, self.x.into(), self.y.into(), 0, 0, 0, 0, 1)
    }

    /// The node's own /24 (pods are outside it).
    pub fn node_subnet_v4(&self) -> String {
        format!("10.{}.{}.0/24", self.x, self.y)
    }

    /// The node's own /64 (pods are outside it).
    pub fn node_subnet_v6(&self) -> String {
        let net = Ipv6Addr::new(0xfd00, self.x.into(), self.y.into(), 0, 0, 0, 0, 0);
        format!("{net}/64")
    }

    pub fn pod_subnet_v4(&self) -> String {
        format!("10.{}.{}.0/24", self.x, self.y + 1)
    }

    pub fn pod_subnet_v6(&self) -> String {
        let net = Ipv6Addr::new(0xfd00, self.x.into(), self.y.into(), 1, 0, 0, 0, 0);
        format!("{net}/120")
    }

    /// The `n`th address host-local hands out from [`Node::ipam`]'s v4 range (0-based):
    /// the range starts at `.10`.
    pub fn pod_v4(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.x, self.y + 1, 10 + n)
    }

    /// The `n`th address host-local hands out from [`Node::ipam`]'s v6 range (0-based).
    pub fn pod_v6(&self, n: u8) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            self.x.into(),
            self.y.into(),
            1,
            0,
            0,
            0,
            0x10 + u16::from(n),
        )
    }

    /// The addresses of the `n`th allocation for `stack`, with the /32 and /128 masks the
    /// plugin reports and puts on the container interface.
    pub fn pod_ips(&self, stack: Stack, n: u8) -> Vec<String> {
        let mut out = Vec::new();
        if stack.v4() {
            out.push(format!("{}/32", self.pod_v4(n)));
        }
        if stack.v6() {
            out.push(format!("{}/128", self.pod_v6(n)));
        }
        out
    }

    /// host-local's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// Where the configs built here point `mtu_file`; absent unless a test writes it.
    pub fn mtu_file(&self) -> PathBuf {
        self.dir.path().join("mtu")
    }

    /// Where the configs built here point `nodename_file`; holds `e2e-node`.
    pub fn nodename_file(&self) -> PathBuf {
        self.dir.path().join("nodename")
    }

    /// `{"type": "host-local", "ranges": ..., "dataDir": ...}` for `stack`: v4 range
    /// `.10`–`.250` of [`Node::pod_subnet_v4`], v6 `::10`–`::f0` of [`Node::pod_subnet_v6`].
    pub fn ipam(&self, stack: Stack) -> Value {
        let mut ranges = Vec::new();
        if stack.v4() {
            let base = format!("10.{}.{}", self.x, self.y + 1);
            ranges.push(json!([{"subnet": self.pod_subnet_v4(),
                                "rangeStart": format!("{base}.10"),
                                "rangeEnd": format!("{base}.250")}]));
        }
        if stack.v6() {
            let at = |last: u16| {
                Ipv6Addr::new(0xfd00, self.x.into(), self.y.into(), 1, 0, 0, 0, last).to_string()
            };
            ranges.push(json!([{"subnet": self.pod_subnet_v6(),
                                "rangeStart": at(0x10),
                                "rangeEnd": at(0xf0)}]));
        }
        json!({"type": "host-local", "ranges": ranges, "dataDir": self.data_dir()})
    }

    /// The calico plugin object: `type`, the node's `nodename_file` and `mtu_file`, and
    /// [`Node::ipam`]. Tests add or change keys before building a list.
    pub fn plugin(&self, stack: Stack) -> Value {
        json!({
            "type": "calico",
            "log_level": "debug",
            "nodename_file": self.nodename_file(),
            "mtu_file": self.mtu_file(),
            "ipam": self.ipam(stack),
        })
    }

    /// A conflist holding `plugin` alone.
    pub fn conflist(&self, version: &str, plugin: &Value) -> ConfList {
        conflist_named(NET, version, plugin)
    }

    /// The stdin of a direct call: `plugin` with the list's `name` and `cniVersion`.
    pub fn plugin_config(&self, version: &str, plugin: &Value) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = json!(NET);
        conf["cniVersion"] = json!(version);
        conf
    }

    /// A runner whose plugins run inside this node, with our binaries on CNI_PATH.
    pub fn runner(&self) -> Runner {
        Runner::new(vec![plugin_dir()], self.dir.cache_dir())
            .host_netns(Some(self.netns.path().to_path_buf()))
    }

    /// A pod outside Kubernetes: only the container id identifies it.
    pub fn pod(&self, container_id: &str) -> Pod {
        let netns = TestNetns::new("calico-pod").expect("pod netns");
        let rt = RuntimeConf::new(container_id, netns.path_str(), IFNAME);
        Pod { netns, rt }
    }

    /// A Kubernetes pod: CNI_ARGS as containerd passes them.
    pub fn k8s_pod(&self, container_id: &str, namespace: &str, name: &str) -> Pod {
        let mut pod = self.pod(container_id);
        pod.rt = pod
            .rt
            .with_arg("IgnoreUnknown", "1")
            .with_arg("K8S_POD_NAMESPACE", namespace)
            .with_arg("K8S_POD_NAME", name)
            .with_arg("K8S_POD_INFRA_CONTAINER_ID", container_id)
            .with_arg("K8S_POD_UID", "0b0e3a5c-5a63-4f4e-9d0b-6c1f6f4a2b11");
        pod
    }

    /// Runs the calico binary once, directly, inside the node, with exactly the CNI
    /// variables of `rt` (plus `env`) and `conf` on stdin: for tests of exit status and
    /// error objects.
    pub fn call(
        &self,
        command: &str,
        conf: &Value,
        rt: &RuntimeConf,
        env: &[(&str, &str)],
    ) -> Outcome {
        let bin = plugin_dir();
        let path = bin.display().to_string();
        let args = rt
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let mut vars: Vec<(&str, &str)> = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &rt.container_id),
            ("CNI_NETNS", &rt.netns),
            ("CNI_IFNAME", &rt.ifname),
            ("CNI_ARGS", &args),
            ("CNI_PATH", &path),
        ];
        vars.extend_from_slice(env);
        let stdin = serde_json::to_vec(conf).expect("encode config");
        let out = run_plugin_in(Some(self.netns.path()), &bin.join("calico"), &vars, &stdin)
            .expect("run calico");
        Outcome {
            exit: out.code,
            stdout: out.stdout_str(),
            stderr: out.stderr_str(),
            json: serde_json::from_slice(&out.stdout).ok(),
        }
    }

    /// host-local's reservations for [`NET`]: address → file contents (`<id>\r\n<ifname>`).
    pub fn reservations(&self) -> BTreeMap<String, String> {
        let store = self.data_dir().join(NET);
        let mut out = BTreeMap::new();
        let Ok(entries) = fs::read_dir(&store) else {
            return out;
        };
        for entry in entries {
            let entry = entry.expect("store entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<IpAddr>().is_ok() {
                let contents = fs::read_to_string(entry.path()).expect("reservation");
                out.insert(name, contents);
            }
        }
        out
    }

    /// The reservations held by `container_id`.
    pub fn reservations_of(&self, container_id: &str) -> Vec<String> {
        self.reservations()
            .into_iter()
            .filter(|(_, c)| c.lines().next().map(str::trim) == Some(container_id))
            .map(|(ip, _)| ip)
            .collect()
    }

    /// Names of every link in the node namespace.
    pub fn link_names(&self) -> BTreeSet<String> {
        link_names(&self.netns)
    }

    /// Names of the node's links that start with `cali`.
    pub fn cali_links(&self) -> Vec<String> {
        self.link_names()
            .into_iter()
            .filter(|n| n.starts_with("cali"))
            .collect()
    }

    /// `ip -d -j link show <name>` in the node, if the link exists.
    pub fn link(&self, name: &str) -> Option<Value> {
        link(&self.netns, name)
    }

    /// The node's main-table routes of one family (see [`routes`]).
    pub fn routes(&self, family: Family) -> Vec<String> {
        routes(&self.netns, family)
    }

    /// The node's routes through one device.
    pub fn routes_via(&self, family: Family, dev: &str) -> Vec<String> {
        routes_on(&self.netns, family, dev)
    }

    fn all_routes(&self) -> Vec<String> {
        let mut r = self.routes(Family::V4);
        r.extend(self.routes(Family::V6));
        r
    }

    /// A node sysctl.
    pub fn sysctl(&self, key: &[&str]) -> String {
        sysctl(&self.netns, key)
    }

    /// Runs `ip <args>` in the node; panics with stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        ip(&self.netns, args)
    }

    /// Takes the node's current links and routes as its own: what a test set up before
    /// the plugin ran must still be there afterwards, and nothing else.
    pub fn rebaseline(&mut self) {
        self.baseline_links = self.link_names();
        self.baseline_routes = self.all_routes();
    }

    /// Panics unless the node holds nothing of any attachment: no link or route beyond the
    /// fixture's own (see [`Node::rebaseline`]), no reservation, and the pod's namespace
    /// has only `lo`.
    pub fn assert_nothing_left(&self, pod: &Pod, what: &str) {
        self.assert_node_clean(what);
        assert_eq!(
            link_names(&pod.netns),
            BTreeSet::from(["lo".to_string()]),
            "{what}: interfaces left in the pod"
        );
    }

    /// [`Node::assert_nothing_left`] for the node alone (the pod's namespace is gone).
    pub fn assert_node_clean(&self, what: &str) {
        let links = self.link_names();
        assert_eq!(links, self.baseline_links, "{what}: links left in the node");
        assert_eq!(
            self.all_routes(),
            self.baseline_routes,
            "{what}: routes left in the node"
        );
        assert_eq!(
            self.reservations(),
            BTreeMap::new(),
            "{what}: addresses left reserved"
        );
    }
}

impl Default for Node {
    fn default() -> Node {
        Node::new()
    }
}

impl Pod {
    /// `ip -d -j link show <name>` in the pod, if the link exists.
    pub fn link(&self, name: &str) -> Option<Value> {
        link(&self.netns, name)
    }

    /// The container interface, which must exist.
    pub fn iface(&self) -> Value {
        self.link(&self.rt.ifname)
            .unwrap_or_else(|| panic!("no {} in pod {}", self.rt.ifname, self.netns.name()))
    }

    /// Global addresses on the container interface, as `ip/prefix`, sorted.
    pub fn addresses(&self) -> Vec<String> {
        addresses(&self.netns, &self.rt.ifname)
    }

    /// The pod's main-table routes of one family (see [`routes`]).
    pub fn routes(&self, family: Family) -> Vec<String> {
        routes(&self.netns, family)
    }

    pub fn sysctl(&self, key: &[&str]) -> String {
        sysctl(&self.netns, key)
    }

    pub fn set_sysctl(&self, key: &[&str], value: &str) {
        set_sysctl(&self.netns, key, value)
    }

    pub fn ip(&self, args: &[&str]) -> String {
        ip(&self.netns, args)
    }
}

/// A conflist named `name` holding `plugin` alone.
pub fn conflist_named(name: &str, version: &str, plugin: &Value) -> ConfList {
    let raw = json!({"cniVersion": version, "name": name, "plugins": [plugin]});
    ConfList::from_bytes(raw.to_string().as_bytes()).expect("conflist")
}

/// The first 11 hex digits of SHA-1(`data`), computed by `sha1sum`.
pub fn sha1_11(data: &str) -> String {
    let mut child = Command::new("sha1sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha1sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data.as_bytes())
        .expect("feed sha1sum");
    let out = child.wait_with_output().expect("sha1sum output");
    assert!(out.status.success(), "sha1sum failed");
    String::from_utf8_lossy(&out.stdout)[..11].to_string()
}

/// The host veth of a Kubernetes pod: `<prefix>` + SHA-1("<namespace>.<name>")[..11].
pub fn k8s_host_veth(prefix: &str, namespace: &str, name: &str) -> String {
    format!("{prefix}{}", sha1_11(&format!("{namespace}.{name}")))
}

/// The host veth of a pod outside Kubernetes: `cali` + the container id's first 11 chars.
pub fn cni_host_veth(container_id: &str) -> String {
    format!("cali{}", &container_id[..container_id.len().min(11)])
}

/// Runs `ip -n <ns> <args>`; panics with stderr on failure.
pub fn ip(ns: &TestNetns, args: &[&str]) -> String {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns.name())
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -n {} {}: {}",
        ns.name(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n <ns> -j <args>` decoded; an empty answer is an empty list.
pub fn ip_json(ns: &TestNetns, args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let text = ip(ns, &full);
    if text.trim().is_empty() {
        return json!([]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {text}"))
}

/// Every link name in `ns`.
pub fn link_names(ns: &TestNetns) -> BTreeSet<String> {
    ip_json(ns, &["link", "show"])
        .as_array()
        .map(|links| {
            links
                .iter()
                .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `ip -d -j link show <name>` in `ns`, if the link exists.
pub fn link(ns: &TestNetns, name: &str) -> Option<Value> {
    if !link_names(ns).contains(name) {
        return None;
    }
    ip_json(ns, &["-d", "link", "show", "dev", name])
        .as_array()
        .and_then(|l| l.first().cloned())
}

/// Whether a link from `ip -j link` is administratively up.
pub fn is_up(link: &Value) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"))
}

/// Global (non link-local) addresses on `dev`, as `ip/prefix`, sorted.
pub fn addresses(ns: &TestNetns, dev: &str) -> Vec<String> {
    let info = ip_json(ns, &["addr", "show", "dev", dev]);
    let mut out: Vec<String> = info
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["scope"] == "global")
        .map(|a| {
            format!(
                "{}/{}",
                a["local"].as_str().unwrap_or_default(),
                a["prefixlen"]
            )
        })
        .collect();
    out.sort();
    out
}

/// The IPv6 link-local address of `dev`, if it has one.
pub fn link_local(ns: &TestNetns, dev: &str) -> Option<String> {
    let info = ip_json(ns, &["-6", "addr", "show", "dev", dev, "scope", "link"]);
    info.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .find_map(|a| a["local"].as_str().map(str::to_string))
}

/// Main-table routes of one family, as `ip route` would print the parts that matter:
/// `<dst> [via <gw>] dev <dev> [scope <scope>]`, sorted. Routes the kernel adds by itself
/// (`proto kernel`: prefix routes of addresses, `fe80::/64`) are left out.
pub fn routes(ns: &TestNetns, family: Family) -> Vec<String> {
    route_lines(
        ip_json(ns, &[family.flag(), "route", "show", "table", "main"]),
        None,
    )
}

/// [`routes`] restricted to one device.
pub fn routes_on(ns: &TestNetns, family: Family, dev: &str) -> Vec<String> {
    if !link_names(ns).contains(dev) {
        return Vec::new();
    }
    route_lines(
        ip_json(
            ns,
            &[family.flag(), "route", "show", "table", "main", "dev", dev],
        ),
        Some(dev),
    )
}

fn route_lines(json: Value, dev: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = json
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["protocol"] != "kernel")
        .map(|r| {
            let mut line = r["dst"].as_str().unwrap_or("?").to_string();
            if let Some(gw) = r["gateway"].as_str() {
                line.push_str(&format!(" via {gw}"));
            }
            let d = r["dev"].as_str().or(dev).unwrap_or("?");
            line.push_str(&format!(" dev {d}"));
            if let Some(scope) = r["scope"].as_str() {
                line.push_str(&format!(" scope {scope}"));
            }
            line
        })
        .collect();
    out.sort();
    out
}

/// Reads `/proc/sys/<key>` as seen from inside `ns`.
pub fn sysctl(ns: &TestNetns, key: &[&str]) -> String {
    let handle = NetNs::open(ns.path()).expect("open netns");
    handle
        .run(|| shared::sysctl::get(key))
        .expect("enter netns")
        .unwrap_or_else(|e| panic!("sysctl {} in {}: {e}", key.join("."), ns.name()))
}

/// Writes `/proc/sys/<key>` inside `ns`.
pub fn set_sysctl(ns: &TestNetns, key: &[&str], value: &str) {
    let handle = NetNs::open(ns.path()).expect("open netns");
    handle
        .run(|| shared::sysctl::set(key, value))
        .expect("enter netns")
        .unwrap_or_else(|e| panic!("set {} in {}: {e}", key.join("."), ns.name()));
}

/// Opens a TCP listener on `server_ip` inside `server`, connects to it from inside
/// `client`, sends a line and reads the server's answer. Returns the client address the
/// server saw. Every step is bounded by [`TCP_TIMEOUT`].
pub fn tcp_exchange(
    server: &TestNetns,
    server_ip: IpAddr,
    client: &TestNetns,
) -> Result<SocketAddr, String> {
    let server_ns = NetNs::open(server.path()).map_err(|e| e.to_string())?;
    let client_ns = NetNs::open(client.path()).map_err(|e| e.to_string())?;
    let listener = server_ns
        .run(|| TcpListener::bind(SocketAddr::new(server_ip, 0)))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("listen on {server_ip} in {}: {e}", server.name()))?;
    let target = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let accepter = thread::spawn(move || serve_one(&listener));

    let greeting = format!("hello {target}\n");
    let client_side = (|| -> Result<String, String> {
        let mut stream = client_ns
            .run(|| TcpStream::connect_timeout(&target, TCP_TIMEOUT))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("connect to {target} from {}: {e}", client.name()))?;
        stream
            .set_read_timeout(Some(TCP_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(greeting.as_bytes())
            .map_err(|e| format!("send to {target}: {e}"))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| format!("read from {target}: {e}"))?;
        Ok(answer)
    })();
    let served = accepter
        .join()
        .map_err(|_| "server thread panicked".to_string())?;
    let answer = client_side?;
    let (peer, got) = served.map_err(|e| format!("server on {target}: {e}"))?;
    if got != greeting {
        return Err(format!("server read {got:?}, sent {greeting:?}"));
    }
    if answer != format!("ack {greeting}") {
        return Err(format!("client read {answer:?}"));
    }
    Ok(peer)
}

/// Accepts one connection (until [`TCP_TIMEOUT`]), reads a line, answers `ack <line>`.
fn serve_one(listener: &TcpListener) -> io::Result<(SocketAddr, String)> {
    let deadline = Instant::now() + TCP_TIMEOUT;
    let (mut stream, peer) = loop {
        match listener.accept() {
            Ok(pair) => break pair,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no connection came",
                ))
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TCP_TIMEOUT))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    stream.write_all(format!("ack {line}").as_bytes())?;
    Ok((peer, line))
}

/// Asserts a TCP exchange from `client` to `server_ip` in `server` works, and that the
/// server saw the connection come from `expected_source`.
pub fn assert_tcp(
    server: &TestNetns,
    server_ip: IpAddr,
    client: &TestNetns,
    expected_source: IpAddr,
    what: &str,
) {
    match tcp_exchange(server, server_ip, client) {
        Ok(peer) => assert_eq!(peer.ip(), expected_source, "{what}: source address"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Polls `f` every 50 ms until it holds or `timeout` passes; returns its last answer.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A result with an empty `dns` object dropped (0.x results print one), for comparison.
pub fn without_empty_dns(mut result: Value) -> Value {
    if let Some(obj) = result.as_object_mut() {
        if obj.get("dns").is_some_and(|d| d == &json!({})) {
            obj.remove("dns");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names() {
        // printf 'default.nginx' | sha1sum → c440f455693b69cdd48a37aa5ecd78038f50413d
        assert_eq!(k8s_host_veth("cali", "default", "nginx"), "calic440f455693");
        assert_eq!(cni_host_veth("0123456789abcdef"), "cali0123456789a");
    }

    /// The fixture and the expectations behind it, without the plugin: a pod wired by hand
    /// the way spec §4 describes is reachable over TCP from the node and reaches it.
    #[test]
    fn hand_made_calico_pod_is_reachable_both_ways() {
        let node = Node::new();
        let pod = node.pod("hand-made");
        let veth = "calihandmade0";
        let pod_ns = pod.netns.name().to_string();
        node.ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", IFNAME, "netns", &pod_ns,
        ]);
        node.ip(&["link", "set", veth, "address", HOST_VETH_MAC]);
        for (key, value) in [
            ("net.ipv4.conf.calihandmade0.proxy_arp", "1"),
            ("net.ipv4.neigh.calihandmade0.proxy_delay", "0"),
            ("net.ipv4.conf.calihandmade0.forwarding", "1"),
            ("net.ipv6.conf.calihandmade0.accept_dad", "0"),
            ("net.ipv6.conf.calihandmade0.proxy_ndp", "1"),
        ] {
            set_sysctl(&node.netns, &key.split('.').collect::<Vec<_>>(), value);
        }
        pod.set_sysctl(&["net", "ipv6", "conf", IFNAME, "accept_dad"], "0");
        node.ip(&["link", "set", veth, "up"]);
        pod.ip(&["link", "set", IFNAME, "up"]);
        let v4 = node.pod_v4(0);
        let v6 = node.pod_v6(0);
        pod.ip(&["route", "add", GATEWAY_V4, "dev", IFNAME, "scope", "link"]);
        pod.ip(&["route", "add", "default", "via", GATEWAY_V4, "dev", IFNAME]);
        assert!(wait_for(Duration::from_secs(5), || link_local(
            &node.netns,
            veth
        )
        .as_deref()
            == Some(GATEWAY_V6)));
        pod.ip(&[
            "-6", "route", "add", "default", "via", GATEWAY_V6, "dev", IFNAME,
        ]);
        pod.ip(&["addr", "add", &format!("{v4}/32"), "dev", IFNAME]);
        pod.ip(&["-6", "addr", "add", &format!("{v6}/128"), "dev", IFNAME]);
        node.ip(&[
            "route",
            "add",
            &format!("{v4}/32"),
            "dev",
            veth,
            "scope",
            "link",
        ]);
        node.ip(&["-6", "route", "add", &format!("{v6}/128"), "dev", veth]);

        let (n4, n6) = (IpAddr::V4(node.address_v4()), IpAddr::V6(node.address_v6()));
        assert_tcp(&pod.netns, v4.into(), &node.netns, n4, "node to pod v4");
        assert_tcp(&node.netns, n4, &pod.netns, v4.into(), "pod to node v4");
        assert_tcp(&pod.netns, v6.into(), &node.netns, n6, "node to pod v6");
        assert_tcp(&node.netns, n6, &pod.netns, v6.into(), "pod to node v6");
        // A closed port is refused rather than hanging: the helper reports, it does not hang.
        assert!(tcp_exchange(&pod.netns, node.pod_v4(1).into(), &node.netns).is_err());
    }

    #[test]
    fn route_lines_keep_what_matters() {
        let j = json!([
            {"dst":"default","gateway":"169.254.1.1","dev":"eth0","flags":[]},
            {"dst":"169.254.1.1","dev":"eth0","scope":"link","flags":[]},
            {"dst":"fe80::/64","dev":"eth0","protocol":"kernel","metric":256}
        ]);
        assert_eq!(
            route_lines(j, None),
            [
                "169.254.1.1 dev eth0 scope link",
                "default via 169.254.1.1 dev eth0"
            ]
        );
    }
}
