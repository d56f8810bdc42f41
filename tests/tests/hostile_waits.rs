//! Surroundings that used to hang a plugin, or let one stalled invocation hold every other
//! pod start of the node: a silent or dripping datastore, a hung IPAM plugin, a held IPAM
//! lock, FIFOs where files should be, a proxy that reflects our token. Each case answers
//! (an error object with the right code, or the job done) within a bound, prints no secret,
//! and leaves nothing behind. Needs root.
//!
//! The deadline a parent plugin passes on (`CNI_SUITE_DEADLINE_UNIX_MS`) stands in for the
//! 30 s default here, so that a case costs seconds.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cni_tests::fixtures::{deadline_in, plugin_dir, TestDir};
use cni_tests::ipam::{call_with_env, Backend, IpamFixture};
use cni_tests::pod::{Node, Stack};
use serde_json::{json, Value};

const NODE: &str = "node-w";
const POOL4: &str = "10.86.0.0/24";
const DEADLINE_ENV: &str = shared::deadline::ENV;

/// How a fake peer behaves once a client connects.
#[derive(Clone, Copy)]
enum Peer {
    /// Accepts and never says a word.
    Silent,
    /// Answers 200 with a long body, one byte every 200 ms.
    Drip,
    /// Answers 403 with a Status whose message quotes the request, headers and all.
    Reflect,
    /// Answers 200 with a body that never ends, as fast as the client reads.
    Huge,
}

/// A TCP peer on loopback that misbehaves as told, until dropped.
struct FakePeer {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakePeer {
    fn start(peer: Peer) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let accept = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let flag = flag.clone();
                        held.push(std::thread::spawn(move || serve(peer, stream, &flag)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for h in held {
                let _ = h.join();
            }
        });
        FakePeer {
            port,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig for this peer with `token`.
    fn kubeconfig(&self, dir: &Path, token: &str) -> std::path::PathBuf {
        let path = dir.join("kubeconfig-peer");
        fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: p\n  cluster:\n    server: {}\n\
                 contexts:\n- name: p\n  context:\n    cluster: p\n    user: p\n\
                 current-context: p\nusers:\n- name: p\n  user:\n    token: {token}\n",
                self.url()
            ),
        )
        .expect("write kubeconfig");
        path
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(peer: Peer, mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut request = Vec::new();
    if !matches!(peer, Peer::Silent) {
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && !stop.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
                Err(_) => continue,
            }
        }
    }
    match peer {
        Peer::Silent => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Peer::Drip => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Content-Length: 1000000\r\n\r\n{";
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                if stream.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Peer::Huge => {
            // No length announced: the body ends when the connection does, so only a cap
            // on what is read stops the client.
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Connection: close\r\n\r\n[";
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = vec![b' '; 1 << 20];
            while !stop.load(Ordering::Relaxed) {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        Peer::Reflect => {
            let quoted = String::from_utf8_lossy(&request).into_owned();
            let body = json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "Forbidden", "code": 403,
                "message": format!("proxy refused the request {quoted}"),
            })
            .to_string();
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    }
}

/// A calico-ipam config on the Kubernetes datastore whose API server is `peer`.
fn on_peer(fx: &IpamFixture, peer: &FakePeer, dir: &TestDir, token: &str) -> Value {
    let kubeconfig = peer.kubeconfig(dir.path(), token);
    ipam_conf(
        fx,
        &json!({"datastore_type": "kubernetes", "kubernetes": {"kubeconfig": kubeconfig}}),
    )
}

fn ipam_conf(fx: &IpamFixture, datastore: &Value) -> Value {
    let mut conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    cni_tests::ipam::merge(&mut conf, datastore);
    conf
}

/// Three etcd members that accept and never answer: the invocation gives up at its
/// deadline, not after a full timeout per member (5 s each).
#[test]
fn silent_etcd_members_cost_the_deadline_not_a_timeout_each() {
    let peers: Vec<FakePeer> = (0..3).map(|_| FakePeer::start(Peer::Silent)).collect();
    let endpoints = peers
        .iter()
        .map(FakePeer::url)
        .collect::<Vec<_>>()
        .join(",");
    let fx = IpamFixture::new(Backend::Local);
    let conf = ipam_conf(
        &fx,
        &json!({"datastore_type": "etcdv3", "etcd_endpoints": endpoints}),
    );
    for command in ["ADD", "DEL"] {
        let deadline = deadline_in(Duration::from_secs(2));
        let started = Instant::now();
        let out = call_with_env(command, &conf, "stall-1", &[], &[(DEADLINE_ENV, &deadline)]);
        let took = started.elapsed();
        let msg = out.refused(11, command);
        assert!(
            msg.contains("127.0.0.1"),
            "{command}: names a member: {msg}"
        );
        assert!(
            took < Duration::from_secs(6),
            "{command}: three silent members held the plugin for {took:?}"
        );
    }
}

/// An API server that answers one byte every 200 ms never trips a read timeout: only the
/// invocation's deadline stops it.
#[test]
fn a_dripping_api_server_costs_the_deadline() {
    let peer = FakePeer::start(Peer::Drip);
    let fx = IpamFixture::new(Backend::Local);
    let dir = TestDir::new().expect("test dir");
    let conf = on_peer(&fx, &peer, &dir, "t0k3n");
    let deadline = deadline_in(Duration::from_secs(2));
    let started = Instant::now();
    let out = call_with_env("ADD", &conf, "drip-1", &[], &[(DEADLINE_ENV, &deadline)]);
    let took = started.elapsed();
    let msg = out.refused(11, "ADD");
    assert!(msg.contains("deadline"), "says why it gave up: {msg}");
    assert!(
        took < Duration::from_secs(8),
        "the drip held ADD for {took:?}"
    );
}

/// An answer of a gigabyte is not read whole: the plugin stops at its cap (64 MiB) and says
/// so, and its memory stays far below what the server sent.
#[test]
fn a_gigabyte_answer_is_refused_at_the_cap() {
    let peer = FakePeer::start(Peer::Huge);
    let fx = IpamFixture::new(Backend::Local);
    let dir = TestDir::new().expect("test dir");
    let conf = on_peer(&fx, &peer, &dir, "t0k3n");
    let out = call_with_env("ADD", &conf, "huge-1", &[], &[]);
    let msg = out.refused(11, "ADD");
    assert!(msg.contains("larger than 64 MiB"), "says why: {msg}");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    // ru_maxrss is in KiB: the largest child this test waited for.
    assert!(
        usage.max_rss() < 512 * 1024,
        "a child grew to {} KiB",
        usage.max_rss()
    );
}

/// A proxy that reflects the request into its error puts our bearer token into the message:
/// neither the error object, nor stderr, nor the log may carry it.
#[test]
fn a_reflecting_proxy_never_gets_the_token_printed() {
    let token = "s3cr3t-b34r3r-t0k3n";
    let peer = FakePeer::start(Peer::Reflect);
    let fx = IpamFixture::new(Backend::Local);
    let dir = TestDir::new().expect("test dir");
    let log = dir.path().join("log").join("cni.log");
    let mut conf = on_peer(&fx, &peer, &dir, token);
    conf["log_file_path"] = json!(log);
    conf["log_level"] = json!("debug");
    for command in ["ADD", "DEL"] {
        let out = call_with_env(command, &conf, "reflect-1", &[], &[]);
        assert_eq!(out.exit, Some(1), "{command}: {}", out.describe());
        assert!(
            out.stdout.contains("proxy refused"),
            "{command}: the server's message is still quoted: {}",
            out.describe()
        );
        assert!(
            !out.stdout.contains(token),
            "{command} stdout: {}",
            out.stdout
        );
        assert!(
            !out.stderr.contains(token),
            "{command} stderr: {}",
            out.stderr
        );
    }
    let logged = fs::read_to_string(&log).expect("log written");
    assert!(!logged.contains(token), "log: {logged}");
}

/// A kubeconfig whose tokenFile ends in a newline (what `echo` and most secret mounts
/// write) works as client-go makes it work.
#[test]
fn a_token_file_ending_in_a_newline_is_trimmed() {
    let fx = IpamFixture::new(Backend::Kubernetes);
    fx.create_pool(POOL4, 26);
    fx.api().set_require_token(true);
    let dir = TestDir::new().expect("test dir");
    let token_file = dir.path().join("token");
    fs::write(&token_file, format!("{}\n", fx.api().token())).expect("token file");
    let text = fs::read_to_string(fx.kubeconfig()).expect("kubeconfig");
    let with_file = text.replace(
        &format!("token: {}", fx.api().token()),
        &format!("tokenFile: {}", token_file.display()),
    );
    assert_ne!(
        text, with_file,
        "the fixture's kubeconfig has an inline token"
    );
    let kubeconfig = dir.path().join("kubeconfig-file-token");
    fs::write(&kubeconfig, with_file).expect("kubeconfig");
    let mut conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    conf["kubernetes"] = json!({"kubeconfig": kubeconfig});
    let out = call_with_env("ADD", &conf, "token-1", &[], &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let out = call_with_env("DEL", &conf, "token-1", &[], &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(fx.handles().is_empty(), "DEL released the handle");
}

/// Another process holding the node's IPAM lock (a stalled invocation) delays an ADD by at
/// most half of its deadline; the datastore's compare-and-swap keeps the allocation right.
#[test]
fn a_held_ipam_lock_delays_an_add_only_boundedly() {
    let fx = IpamFixture::new(Backend::Local);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    let lock = fx.lock_file(NODE);
    fs::create_dir_all(lock.parent().expect("lock dir")).expect("mkdir");
    let file = fs::File::create(&lock).expect("lock file");
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock");
    let deadline = deadline_in(Duration::from_secs(3));
    let started = Instant::now();
    let out = call_with_env("ADD", &conf, "locked-1", &[], &[(DEADLINE_ENV, &deadline)]);
    let took = started.elapsed();
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(
        took < Duration::from_secs(3),
        "waited {took:?} for the lock"
    );
    assert_eq!(fx.handles().len(), 1, "the address is recorded");
    drop(held);
}

/// The lock is root's alone: nobody else can open it to hold it, nor replace it.
#[test]
fn the_ipam_lock_is_root_only() {
    let fx = IpamFixture::new(Backend::Local);
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let out = call_with_env("ADD", &conf, "mode-1", &[], &[]);
    nix::sys::stat::umask(old);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let lock = fx.lock_file(NODE);
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(&lock), 0o600, "lock file");
    assert_eq!(mode(lock.parent().expect("dir")), 0o700, "lock directory");
}

/// A FIFO where a file should be used to block the open for ever; each is refused at once
/// with a message naming the file (or, for the log, the plugin logs to stderr instead).
#[test]
fn fifos_where_files_should_be_are_refused_at_once() {
    let dir = TestDir::new().expect("test dir");
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let fx = IpamFixture::new(Backend::Local);
    let base = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));

    // nodename_file, read even when nodename is set (unless optional).
    let mut conf = base.clone();
    conf["nodename_file"] = json!(fifo);
    conf["nodename_file_optional"] = json!(false);
    let msg = call_with_env("ADD", &conf, "fifo-1", &[], &[]).refused(104, "nodename_file");
    assert!(
        msg.contains("FIFO") && msg.contains(&fifo.display().to_string()),
        "{msg}"
    );

    // The kubeconfig.
    let mut conf = base.clone();
    conf["datastore_type"] = json!("kubernetes");
    conf["kubernetes"] = json!({"kubeconfig": fifo});
    let out = call_with_env("ADD", &conf, "fifo-2", &[], &[]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert!(out.stdout.contains("FIFO"), "{}", out.describe());

    // The log: the plugin goes on and logs to stderr.
    let mut conf = base.clone();
    conf["log_file_path"] = json!(fifo);
    let out = call_with_env("ADD", &conf, "fifo-3", &[], &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains("cannot open log file"),
        "{}",
        out.describe()
    );
    assert_eq!(fx.handles().len(), 1);
}

/// calico with a FIFO as mtu_file or as CNI_NETNS: an error object at once, nothing made.
#[test]
fn calico_refuses_a_fifo_as_mtu_file_or_netns() {
    let node = Node::new();
    let dir = TestDir::new().expect("test dir");
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");

    let pod = node.k8s_pod("f1f0000000000000000000000000000a", "default", "fifo-mtu");
    let mut plugin = node.plugin(Stack::V4);
    plugin["mtu_file"] = json!(fifo);
    let out = node.call("ADD", &node.plugin_config("1.0.0", &plugin), &pod.rt, &[]);
    let msg = out.refused(104, "mtu_file FIFO");
    assert!(msg.contains("FIFO"), "{msg}");
    node.assert_nothing_left(&pod, "after a FIFO as mtu_file");

    let mut pod = node.k8s_pod("f1f0000000000000000000000000000b", "default", "fifo-ns");
    pod.rt.netns = fifo.display().to_string();
    let plugin = node.plugin(Stack::V4);
    let out = node.call("ADD", &node.plugin_config("1.0.0", &plugin), &pod.rt, &[]);
    out.refused(4, "CNI_NETNS FIFO");
    assert!(node.reservations().is_empty(), "no address kept");
}

/// A script on CNI_PATH standing in for an IPAM plugin.
fn ipam_script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// An IPAM plugin that never answers: calico kills it at the deadline and answers 11 (the
/// runtime retries), with nothing made on the node.
#[test]
fn calico_gives_up_on_a_hung_ipam_plugin() {
    let node = Node::new();
    let bin = TestDir::new().expect("bin dir");
    ipam_script(bin.path(), "hung-ipam", "exec sleep 60");
    let path = format!("{}:{}", bin.path().display(), plugin_dir().display());
    let pod = node.k8s_pod("a0a0000000000000000000000000000a", "default", "hung-ipam");
    let mut plugin = node.plugin(Stack::V4);
    plugin["ipam"] = json!({"type": "hung-ipam"});
    let deadline = deadline_in(Duration::from_secs(2));
    let started = Instant::now();
    let out = node.call(
        "ADD",
        &node.plugin_config("1.0.0", &plugin),
        &pod.rt,
        &[("CNI_PATH", &path), (DEADLINE_ENV, &deadline)],
    );
    let took = started.elapsed();
    let msg = out.refused(11, "hung IPAM");
    assert!(
        msg.contains("hung-ipam") && msg.contains("deadline"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(8), "waited {took:?}");
    node.assert_nothing_left(&pod, "after a hung IPAM plugin");
}

/// A config of more than a megabyte, and an IPAM plugin that answers before reading it:
/// calico used to block writing stdin while the plugin blocked writing stdout.
#[test]
fn calico_feeds_a_megabyte_config_to_an_ipam_plugin_that_answers_first() {
    let node = Node::new();
    let bin = TestDir::new().expect("bin dir");
    let ip = node.pod_v4(9);
    ipam_script(
        bin.path(),
        "eager-ipam",
        &format!(
            r#"if [ "$CNI_COMMAND" = ADD ]; then
  head -c 300000 /dev/zero | tr '\0' ' '
  echo '{{"cniVersion":"1.0.0","ips":[{{"address":"{ip}/32"}}]}}'
fi
exit 0"#
        ),
    );
    let path = format!("{}:{}", bin.path().display(), plugin_dir().display());
    let pod = node.k8s_pod("a0a0000000000000000000000000000b", "default", "eager-ipam");
    let mut plugin = node.plugin(Stack::V4);
    plugin["ipam"] = json!({"type": "eager-ipam"});
    plugin["padding"] = json!("p".repeat(2 << 20));
    let conf = node.plugin_config("1.0.0", &plugin);
    let deadline = deadline_in(Duration::from_secs(20));
    let env = [
        ("CNI_PATH", path.as_str()),
        (DEADLINE_ENV, deadline.as_str()),
    ];
    let out = node.call("ADD", &conf, &pod.rt, &env);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(out.stdout.contains(&ip.to_string()), "{}", out.describe());
    let out = node.call("DEL", &conf, &pod.rt, &env);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    node.assert_nothing_left(&pod, "after DEL");
}

/// A node name that would nest datastore keys (`a/b` and a newline) is refused, naming where
/// it came from, and nothing is written.
#[test]
fn a_node_name_that_would_nest_keys_is_refused() {
    let fx = IpamFixture::new(Backend::Local);
    let dir = TestDir::new().expect("test dir");
    let file = dir.path().join("nodename");
    fs::write(&file, "a/b\nc").expect("nodename file");
    let mut conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL4]}));
    if let Some(obj) = conf.as_object_mut() {
        obj.remove("nodename");
    }
    conf["nodename_file"] = json!(file);
    let before = fx.snapshot();
    let msg = call_with_env("ADD", &conf, "nested-1", &[], &[]).refused(7, "nested name");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert_eq!(fx.snapshot(), before, "nothing written");
}
