//! Fixtures for the portmap tests: a bare node (a namespace with a route towards a pretend
//! pod subnet, for rule-level tests), direct calls of our portmap or the reference one
//! inside it, the node's NAT state as text, conflists chaining calico and portmap, and TCP
//! and UDP exchanges that go through a host port (server and client addresses differ).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::netns::NetNs;

use crate::fixtures::{plugin_dir, reference_plugin_dir, run_plugin_in};
use crate::host_local::Outcome;
use crate::pod::{Family, Node, Stack, NET, TCP_TIMEOUT};
use crate::{ConfList, TestNetns};

/// The pretend pod subnets of a bare node, routed out of its `v0`.
pub const POD_V4: &str = "10.9.0.5/24";
pub const POD_V6: &str = "fd09::5/64";

/// Our portmap binary.
pub fn ours() -> PathBuf {
    plugin_dir().join("portmap")
}

/// Debian's portmap 1.1.1 (iptables only).
pub fn reference() -> PathBuf {
    reference_plugin_dir().join("portmap")
}

/// A node namespace with `lo` up and routes to [`POD_V4`]'s and [`POD_V6`]'s subnets
/// through a veth, as a bridge or a pod's host veth would give it.
pub fn bare_node() -> TestNetns {
    let ns = TestNetns::with_lo_up("portmap-node").expect("node netns");
    for args in [
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"][..],
        &["link", "set", "v0", "up"],
        &["link", "set", "v1", "up"],
        &["route", "add", "10.9.0.0/24", "dev", "v0"],
        &["-6", "route", "add", "fd09::/64", "dev", "v0"],
    ] {
        crate::pod::ip(&ns, args);
    }
    ns
}

/// A direct portmap config: `extra` keys, `mappings` as runtimeConfig, a prevResult with
/// `ips` on a container interface `eth0`.
pub fn conf(version: &str, extra: &Value, mappings: &Value, ips: &[&str]) -> Value {
    let mut conf = json!({
        "cniVersion": version,
        "name": NET,
        "type": "portmap",
        "runtimeConfig": {"portMappings": mappings},
        "prevResult": {
            "cniVersion": version,
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/pod"}],
            "ips": ips.iter().map(|ip| json!({"address": ip, "interface": 0})).collect::<Vec<_>>(),
        },
    });
    if let (Some(conf), Some(extra)) = (conf.as_object_mut(), extra.as_object()) {
        conf.extend(extra.clone());
    }
    conf
}

/// Two mappings: TCP 8080 → 80, UDP 5353 → 53.
pub fn two_mappings() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}
    ])
}

/// Runs `binary` once inside `node` with `command`, container `id` and `conf` on stdin.
pub fn call(
    node: &TestNetns,
    binary: &std::path::Path,
    command: &str,
    id: &str,
    conf: &Value,
) -> Outcome {
    let path = plugin_dir().display().to_string();
    let vars = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", path.as_str()),
    ];
    let stdin = serde_json::to_vec(conf).expect("encode config");
    let out = run_plugin_in(Some(node.path()), binary, &vars, &stdin).expect("run portmap");
    Outcome {
        exit: out.code,
        stdout: out.stdout_str(),
        stderr: out.stderr_str(),
        json: serde_json::from_slice(&out.stdout).ok(),
    }
}

/// Asserts a call succeeded, showing its output if not.
pub fn assert_ok(out: &Outcome, what: &str) {
    assert!(
        out.ok(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.exit,
        out.stdout,
        out.stderr
    );
}

/// `iptables-save -t nat` (or ip6tables) in `ns`, normalised: no comments, counters zeroed,
/// chain declarations sorted (rule order is kept: it matters).
pub fn nat(ns: &TestNetns, family: Family) -> String {
    let tool = match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    };
    let text = ns
        .exec_checked(&[tool, "-t", "nat"])
        .expect("iptables-save");
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            let policy = decl.split_whitespace().nth(1).unwrap_or_default();
            chains.push(format!(":{name} {policy} [0:0]"));
        } else {
            rules.push(line.to_string());
        }
    }
    chains.sort();
    let mut out = chains;
    out.extend(rules);
    out.join("\n")
}

/// Both families' [`nat`].
pub fn nat_both(ns: &TestNetns) -> String {
    format!("{}\n{}", nat(ns, Family::V4), nat(ns, Family::V6))
}

/// `nft list ruleset` in `ns`.
pub fn nft_ruleset(ns: &TestNetns) -> String {
    ns.exec_checked(&["nft", "list", "ruleset"])
        .expect("nft list ruleset")
}

/// The conflist of a pod with host ports: calico (+ host-local) then portmap with
/// `portmap_extra` keys.
pub fn chain_conflist(node: &Node, stack: Stack, version: &str, portmap_extra: &Value) -> ConfList {
    let mut portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
    if let (Some(p), Some(extra)) = (portmap.as_object_mut(), portmap_extra.as_object()) {
        p.extend(extra.clone());
    }
    let raw = json!({"cniVersion": version, "name": NET, "plugins": [node.plugin(stack), portmap]});
    ConfList::from_bytes(raw.to_string().as_bytes()).expect("conflist")
}

/// Listens on `listen` inside `server`, connects to `target` from inside `client`, sends a
/// line and reads the answer. Returns the client address the server saw.
pub fn tcp_via(
    server: &TestNetns,
    listen: SocketAddr,
    client: &TestNetns,
    target: SocketAddr,
) -> Result<SocketAddr, String> {
    let server_ns = NetNs::open(server.path()).map_err(|e| e.to_string())?;
    let client_ns = NetNs::open(client.path()).map_err(|e| e.to_string())?;
    let listener = server_ns
        .run(|| TcpListener::bind(listen))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("listen on {listen}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let server_side = thread::spawn(move || -> Result<SocketAddr, String> {
        let deadline = Instant::now() + TCP_TIMEOUT;
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept on {listen}: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(TCP_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        stream.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        Ok(peer)
    });
    let client_side = (|| -> Result<(), String> {
        let mut stream = client_ns
            .run(|| TcpStream::connect_timeout(&target, TCP_TIMEOUT))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("connect to {target}: {e}"))?;
        stream
            .set_read_timeout(Some(TCP_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream.write_all(b"ping\n").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        stream
            .read_exact(&mut buf)
            .map_err(|e| format!("read from {target}: {e}"))?;
        if &buf != b"ping\n" {
            return Err(format!("echo was {buf:?}"));
        }
        Ok(())
    })();
    let peer = server_side
        .join()
        .map_err(|_| "server thread panicked".to_string());
    client_side?;
    peer?
}

/// A UDP socket bound inside `ns`.
pub fn udp_socket(ns: &TestNetns, bind: SocketAddr) -> UdpSocket {
    let handle = NetNs::open(ns.path()).expect("open netns");
    let socket = handle
        .run(|| UdpSocket::bind(bind))
        .expect("enter netns")
        .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    socket
}

/// Sends a datagram from `client` to `target` until `server` echoes it back (a few tries:
/// UDP may lose the first while neighbours resolve). Returns the source the server saw.
pub fn udp_via(
    server: &UdpSocket,
    client: &UdpSocket,
    target: SocketAddr,
) -> Result<SocketAddr, String> {
    let mut buf = [0u8; 64];
    for _ in 0..6 {
        client.send_to(b"ping", target).map_err(|e| e.to_string())?;
        let Ok((n, peer)) = server.recv_from(&mut buf) else {
            continue;
        };
        server.send_to(&buf[..n], peer).map_err(|e| e.to_string())?;
        if let Ok((_, from)) = client.recv_from(&mut buf) {
            if from != target {
                return Err(format!("answer came from {from}, not {target}"));
            }
            return Ok(peer);
        }
    }
    Err(format!("no UDP exchange through {target}"))
}

/// The iptables tools portmap runs.
const IPTABLES_TOOLS: [&str; 6] = [
    "iptables",
    "ip6tables",
    "iptables-save",
    "ip6tables-save",
    "iptables-restore",
    "ip6tables-restore",
];

/// A directory of wrappers, one per iptables tool, that append their name and arguments
/// to `log` and run the real tool found further along PATH: the PATH to give portmap.
pub fn recording_tools(dir: &Path, log: &Path) -> String {
    let real = std::env::var("PATH").unwrap_or_default();
    for tool in IPTABLES_TOOLS {
        let script = format!(
            "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nPATH='{real}' exec {tool} \"$@\"\n",
            log.display()
        );
        let path = dir.join(tool);
        fs::write(&path, script).expect("write wrapper");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
    }
    format!("{}:{real}", dir.display())
}
