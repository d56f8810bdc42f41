//! Helpers for the bandwidth plugin's end-to-end tests: the calico + bandwidth chain on a
//! [`Node`], a bare veth "pod" for direct calls, tc and link inspection through `tc -j` /
//! `ip -j`, and a timed TCP stream between namespaces to measure shaped throughput.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::netns::NetNs;

use crate::fixtures::{run_plugin_in, PluginOutput};
use crate::pod::{Node, Stack};
use crate::{ConfList, TestNetns};

/// The network name of the chains built here (the IFB name hashes it).
pub const NET: &str = crate::pod::NET;

/// The bandwidth plugin object of a conflist, with the capability enabled and `extra` keys
/// (static limits) merged in.
pub fn bandwidth_plugin(extra: Value) -> Value {
    let mut plugin = json!({"type": "bandwidth", "capabilities": {"bandwidth": true}});
    if let (Some(obj), Some(more)) = (plugin.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    plugin
}

/// `calico` (IPv4, host-local) then `bandwidth` with `extra`, as one conflist.
pub fn chain(node: &Node, version: &str, extra: Value) -> ConfList {
    let raw = json!({
        "cniVersion": version,
        "name": NET,
        "plugins": [node.plugin(Stack::V4), bandwidth_plugin(extra)],
    });
    ConfList::from_bytes(raw.to_string().as_bytes()).expect("conflist")
}

/// The `bandwidth` capability / static keys.
pub fn limits(ingress_rate: u64, ingress_burst: u64, egress_rate: u64, egress_burst: u64) -> Value {
    json!({
        "ingressRate": ingress_rate,
        "ingressBurst": ingress_burst,
        "egressRate": egress_rate,
        "egressBurst": egress_burst,
    })
}

/// A node namespace and a pod namespace joined by a veth pair `host_veth` / `eth0`, both
/// up: the minimum the bandwidth plugin needs, for direct calls to one binary.
#[derive(Debug)]
pub struct VethPod {
    pub node: TestNetns,
    pub pod: TestNetns,
    pub host_veth: String,
}

impl VethPod {
    pub fn new(host_veth: &str) -> VethPod {
        let node = TestNetns::with_lo_up("bw-node").expect("node netns");
        let pod = TestNetns::new("bw-pod").expect("pod netns");
        let pod_name = pod.name().to_string();
        for argv in [
            &[
                "ip", "link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns",
                &pod_name,
            ][..],
            &["ip", "link", "set", host_veth, "up"],
        ] {
            node.exec_checked(argv).expect("set up veth");
        }
        pod.exec_checked(&["ip", "link", "set", "eth0", "up"])
            .expect("eth0 up");
        VethPod {
            node,
            pod,
            host_veth: host_veth.to_string(),
        }
    }

    /// The prevResult a main plugin would print: the host veth, then `eth0` in the pod.
    pub fn prev_result(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": self.host_veth},
                {"name": "eth0", "sandbox": self.pod.path_str()},
            ],
            "ips": [{"address": "10.1.2.3/32", "interface": 1}],
        })
    }

    /// Runs `binary` once inside the node with `command` and `conf` on stdin.
    pub fn call(
        &self,
        binary: &Path,
        command: &str,
        container_id: &str,
        conf: &Value,
    ) -> PluginOutput {
        let netns = self.pod.path_str();
        run_plugin_in(
            Some(self.node.path()),
            binary,
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container_id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/nonexistent"),
            ],
            conf.to_string().as_bytes(),
        )
        .expect("plugin runs")
    }
}

/// A plugin config for a direct call: `extra` keys, the network name, version and
/// prevResult (when given).
pub fn direct_config(version: &str, extra: Value, prev: Option<Value>) -> Value {
    let mut conf = json!({"cniVersion": version, "name": NET, "type": "bandwidth"});
    if let (Some(obj), Some(more)) = (conf.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    if let Some(prev) = prev {
        conf["prevResult"] = prev;
    }
    conf
}

fn json_of(ns: &TestNetns, argv: &[&str]) -> Value {
    let out = ns.exec_checked(argv).expect("inspection command");
    if out.trim().is_empty() {
        return json!([]);
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{argv:?}: {e}: {out}"))
}

/// `tc -j qdisc show dev <dev>`.
pub fn qdiscs(ns: &TestNetns, dev: &str) -> Vec<Value> {
    match json_of(ns, &["tc", "-j", "qdisc", "show", "dev", dev]) {
        Value::Array(list) => list,
        other => panic!("tc qdisc: {other}"),
    }
}

/// The qdisc of `kind` on `dev`, if any.
pub fn qdisc(ns: &TestNetns, dev: &str, kind: &str) -> Option<Value> {
    qdiscs(ns, dev).into_iter().find(|q| q["kind"] == kind)
}

/// `tc -j filter show dev <dev> ingress`, with kernel-chosen action indexes and counters
/// removed so that two namespaces can be compared.
pub fn ingress_filters(ns: &TestNetns, dev: &str) -> Value {
    let mut filters = json_of(ns, &["tc", "-j", "filter", "show", "dev", dev, "ingress"]);
    strip_keys(
        &mut filters,
        &["index", "ref", "bind", "installed", "last_used", "expires"],
    );
    filters
}

/// `tc -j qdisc show` for every device of the namespace, without device indexes.
pub fn all_qdiscs(ns: &TestNetns) -> Value {
    let mut all = json_of(ns, &["tc", "-j", "qdisc", "show"]);
    strip_keys(&mut all, &[]);
    all
}

fn strip_keys(value: &mut Value, keys: &[&str]) {
    match value {
        Value::Object(map) => {
            for k in keys {
                map.remove(*k);
            }
            for v in map.values_mut() {
                strip_keys(v, keys);
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|v| strip_keys(v, keys)),
        _ => {}
    }
}

/// `ip -j -d link show <name>` without what differs between any two devices (index, MAC,
/// statistics), or `None` when there is no such link.
pub fn link_details(ns: &TestNetns, name: &str) -> Option<Value> {
    let out = ns.exec(&["ip", "-j", "-d", "link", "show", name]).ok()?;
    if !out.status.success() {
        return None;
    }
    let mut links: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut link = links.get_mut(0)?.take();
    if let Some(obj) = link.as_object_mut() {
        for k in ["ifindex", "address", "broadcast", "link_index"] {
            obj.remove(k);
        }
    }
    Some(link)
}

/// Names of the IFB devices of the bandwidth plugin in `ns`.
pub fn ifb_names(ns: &TestNetns) -> Vec<String> {
    let links = json_of(ns, &["ip", "-j", "link", "show", "type", "ifb"]);
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with("bwp"))
        .map(str::to_string)
        .collect()
}

/// The IFB name the reference derives: `bwp` + 12 hex digits of SHA-512(net + container).
pub fn expected_ifb_name(network: &str, container_id: &str) -> String {
    use sha2::{Digest, Sha512};
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("bwp{hex}")
}

/// Streams TCP from `sender` to `receiver_ip` in `receiver` for `warmup + window` and
/// returns the receiver's rate in bits per second over `window` (the warm-up covers TCP's
/// slow start and the TBF's initial bucket).
pub fn tcp_throughput(
    sender: &TestNetns,
    receiver: &TestNetns,
    receiver_ip: IpAddr,
    warmup: Duration,
    window: Duration,
) -> Result<f64, String> {
    let sender_ns = NetNs::open(sender.path()).map_err(|e| e.to_string())?;
    let receiver_ns = NetNs::open(receiver.path()).map_err(|e| e.to_string())?;
    let listener = receiver_ns
        .run(|| TcpListener::bind(SocketAddr::new(receiver_ip, 0)))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("listen on {receiver_ip}: {e}"))?;
    let target = listener.local_addr().map_err(|e| e.to_string())?;
    let total = warmup + window;
    let reader = thread::spawn(move || receive(&listener, warmup, total));

    let mut stream = sender_ns
        .run(|| TcpStream::connect_timeout(&target, Duration::from_secs(5)))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connect to {target}: {e}"))?;
    // Writes block while the shaper holds the queue; wake up to watch the clock.
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let chunk = vec![0x5au8; 64 * 1024];
    let deadline = Instant::now() + total + Duration::from_millis(500);
    while Instant::now() < deadline {
        match stream.write(&chunk) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            // The receiver is done and closed its end.
            Err(_) => break,
        }
    }
    drop(stream);
    reader
        .join()
        .map_err(|_| "receiver thread panicked".to_string())?
        .map_err(|e| format!("receive on {target}: {e}"))
}

/// Accepts one stream and counts bytes; returns bits/s between `warmup` and `total` after
/// the first byte.
fn receive(listener: &TcpListener, warmup: Duration, total: Duration) -> io::Result<f64> {
    listener.set_nonblocking(true)?;
    let accept_deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < accept_deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut received: u64 = 0;
    let mut start = None;
    let mut at_warmup: Option<(Instant, u64)> = None;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                received += n as u64;
                start.get_or_insert_with(Instant::now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        let Some(start) = start else { continue };
        let now = Instant::now();
        if at_warmup.is_none() && now >= start + warmup {
            at_warmup = Some((now, received));
        }
        if now >= start + total {
            let (t0, b0) = at_warmup.unwrap_or((start, 0));
            let secs = now.duration_since(t0).as_secs_f64();
            return Ok((received - b0) as f64 * 8.0 / secs);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the stream ended early after {received} bytes"),
    ))
}
