//! Real container runtimes driving the suite's plugins: Debian's podman (its CNI network
//! backend) and containerd (`ctr run --cni`), each as a private instance that shares nothing
//! with the machine's own runtime state.
//!
//! - [`busybox_rootfs`] builds a container root from Debian's static busybox: no image is
//!   pulled, nothing reaches a registry.
//! - [`PrivateMounts`] is a mount namespace of the test's own. The runtimes keep state in
//!   fixed places that no flag moves (podman's SHM lock segment in `/dev/shm`, runc's default
//!   root in `/run/runc`, libcni's cache in `/var/lib/cni`, the containerd shims' sockets in
//!   `/run/containerd/s`, and for `ctr --cni` go-cni's `/etc/cni/net.d` and `/opt/cni/bin`).
//!   Inside the namespace those paths are private tmpfs or bind mounts of the test's
//!   directories, so the machine's files are never read or written there.
//! - [`Podman`] and [`Containerd`] run every runtime command inside that mount namespace and
//!   inside the test's node network namespace, so the plugins they exec change the node's
//!   links, routes and NAT tables only.
//!
//! Everything is torn down on drop, panics included: containers, daemons, the namespace.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use shared::netns::NetNs;

use crate::fixtures::{plugin_dir, unique_name};
use crate::ipam::{Backend, IpamFixture};
use crate::pod::Node;
use crate::TestDir;
use crate::TestNetns;

/// How long a runtime gets to come up or to finish a step before the test gives up on it:
/// generous, because two cores may be busy with the rest of the suite. Never asserted on.
pub const STEP_LIMIT: Duration = Duration::from_secs(60);

/// The busybox applets a test container uses.
const APPLETS: &[&str] = &[
    "sh", "ip", "ping", "ping6", "nc", "wget", "httpd", "sleep", "cat", "ls", "echo", "true",
    "timeout",
];

/// The plugins a runtime finds in the bin directory built by [`plugin_bin_dir`].
pub const CHAIN_PLUGINS: &[&str] = &["calico", "calico-ipam", "portmap", "bandwidth", "loopback"];

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("failed to run {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("{command} failed ({status}):\nstdout: {stdout}\nstderr: {stderr}")]
    Failed {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
    },
    /// The machine lacks something the test needs, or it is not usable as it is.
    #[error("{0}")]
    Setup(String),
    #[error("the private mount namespace could not be set up: {0}")]
    Mounts(String),
    #[error("{what} did not happen within {limit:?}: {detail}")]
    Timeout {
        what: String,
        limit: Duration,
        detail: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion and returns its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> Result<Output, RuntimeError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| RuntimeError::Spawn {
            command: describe(cmd),
            source,
        })
}

/// Runs `cmd` to completion; a non-zero exit is an error carrying both outputs.
pub fn checked(cmd: &mut Command) -> Result<String, RuntimeError> {
    let out = output(cmd)?;
    if !out.status.success() {
        return Err(RuntimeError::Failed {
            command: describe(cmd),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Calls `attempt` until it returns `Ok`, for at most `limit`; the last error explains a
/// give-up. For waiting on something to come up, never for asserting how fast it does.
pub fn retry<T>(
    what: &str,
    limit: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> Result<T, RuntimeError> {
    let start = Instant::now();
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(detail) if start.elapsed() >= limit => {
                return Err(RuntimeError::Timeout {
                    what: what.to_string(),
                    limit,
                    detail,
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Waits for `child` to exit, for at most `limit`; kills it past that.
pub fn wait_child(
    child: &mut Child,
    what: &str,
    limit: Duration,
) -> Result<ExitStatus, RuntimeError> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if start.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RuntimeError::Timeout {
                    what: what.to_string(),
                    limit,
                    detail: "killed".into(),
                });
            }
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(io_err(format!("wait for {what}"))(e)),
        }
    }
}

// ---- busybox ------------------------------------------------------------------------------

/// Debian's busybox-static binary. A dynamically linked busybox (Debian's `busybox` package,
/// which conflicts with `busybox-static`) cannot run in a root that has no libc, so it is
/// refused with the package to install.
pub fn busybox() -> Result<PathBuf, RuntimeError> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| RuntimeError::Setup("no busybox: apt-get install busybox-static".into()))?;
    let bytes = fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
    if has_interpreter(&bytes) {
        return Err(RuntimeError::Setup(format!(
            "{} is dynamically linked; a container root needs the static one: \
             apt-get install busybox-static",
            path.display()
        )));
    }
    Ok(path)
}

/// Whether an ELF64 little-endian file asks for a program interpreter (PT_INTERP), i.e. is
/// dynamically linked. Anything that does not parse counts as dynamic.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    // "\x7fELF", 64-bit, little endian.
    if elf.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return true;
    }
    let (Some(phoff), Some(entsize), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return true;
    };
    (0..usize::from(count)).any(|i| {
        u32_at(phoff + i * usize::from(entsize))
            .map(|t| t == PT_INTERP)
            .unwrap_or(true)
    })
}

/// A container root at `<dir>/<name>`: `/bin/busybox` with its applets as symlinks, the
/// directories a runtime mounts over, and `/www/index.html` holding `page` for
/// `httpd -h /www`.
pub fn busybox_rootfs(dir: &Path, name: &str, page: &str) -> Result<PathBuf, RuntimeError> {
    let root = dir.join(name);
    for sub in [
        "bin", "proc", "sys", "dev", "etc", "tmp", "root", "run", "www",
    ] {
        let d = root.join(sub);
        fs::create_dir_all(&d).map_err(io_err(format!("create {}", d.display())))?;
    }
    let target = root.join("bin/busybox");
    fs::copy(busybox()?, &target).map_err(io_err(format!("copy busybox to {}", root.display())))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod busybox"))?;
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet))
            .map_err(io_err(format!("link {applet}")))?;
    }
    // Runtimes that create no /etc/passwd of their own still resolve "root".
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(io_err("write /etc/passwd"))?;
    fs::write(root.join("www/index.html"), page).map_err(io_err("write index.html"))?;
    Ok(root)
}

// ---- the network configuration ------------------------------------------------------------

/// The suite's binary `name`, which the runtime tests need built.
fn built_plugin(name: &str) -> Result<PathBuf, RuntimeError> {
    let built = plugin_dir().join(name);
    if !built.is_file() {
        return Err(RuntimeError::Setup(format!(
            "{} is not built: cargo build --workspace --bins",
            built.display()
        )));
    }
    Ok(built)
}

/// A directory holding links to the suite's plugin binaries (only those of the chain): what
/// a runtime is given as its CNI plugin directory.
pub fn plugin_bin_dir(dir: &Path) -> Result<PathBuf, RuntimeError> {
    let bin = dir.join("cni-bin");
    fs::create_dir_all(&bin).map_err(io_err("create the plugin dir"))?;
    for name in CHAIN_PLUGINS {
        let built = built_plugin(name)?;
        symlink(&built, bin.join(name)).map_err(io_err(format!("link {name}")))?;
    }
    Ok(bin)
}

/// A bin dir of wrappers: each writes its stdin to `<record>/<n>-<plugin>-<command>.json`
/// (n: nanoseconds, then the pid) and execs the suite's binary on it.
pub fn recording_bin_dir(dir: &Path, record: &Path) -> Result<PathBuf, RuntimeError> {
    let bin = dir.join("recording-cni-bin");
    for d in [&bin, &record.to_path_buf()] {
        fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
    }
    for name in CHAIN_PLUGINS {
        let built = built_plugin(name)?;
        let q = |p: &Path| format!("'{}'", p.display());
        let script = format!(
            "#!/bin/sh\nf={rec}/\"$(date +%s%N)-$$-{name}-$CNI_COMMAND.json\"\n\
             cat > \"$f\"\nexec {real} < \"$f\"\n",
            rec = q(record),
            real = q(&built),
        );
        let path = bin.join(name);
        fs::write(&path, script).map_err(io_err(format!("write {name}")))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {name}")))?;
    }
    Ok(bin)
}

/// One recorded plugin input.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub plugin: String,
    pub command: String,
    pub stdin: Vec<u8>,
}

/// Everything recorded so far, oldest first.
pub fn recorded(record: &Path) -> Vec<Recorded> {
    let mut names: Vec<String> = fs::read_dir(record)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let stem = name.strip_suffix(".json")?;
            let mut parts = stem.splitn(3, '-');
            let (_, _, rest) = (parts.next()?, parts.next()?, parts.next()?);
            let (plugin, command) = rest.rsplit_once('-')?;
            Some(Recorded {
                plugin: plugin.to_string(),
                command: command.to_string(),
                stdin: fs::read(record.join(&name)).ok()?,
            })
        })
        .collect()
}

/// Where a run may copy what the plugins received, to refresh the unit tests' fixtures
/// (`shared/tests/fixtures/<runtime>/`): `CNI_TEST_RECORD_FIXTURES=<dir>`.
pub const RECORD_ENV: &str = "CNI_TEST_RECORD_FIXTURES";

/// With [`RECORD_ENV`] set, writes the first input of each plugin and command in `all` as
/// `<dir>/<what>/<plugin>-<command>.json`.
pub fn save_fixtures(all: &[Recorded], what: &str) {
    let Some(out) = std::env::var_os(RECORD_ENV) else {
        return;
    };
    let out = PathBuf::from(out).join(what);
    if let Err(e) = fs::create_dir_all(&out) {
        panic!("{}: {e}", out.display());
    }
    for r in all {
        let name = out.join(format!("{}-{}.json", r.plugin, r.command.to_lowercase()));
        if !name.exists() {
            if let Err(e) = fs::write(&name, &r.stdin) {
                panic!("{}: {e}", name.display());
            }
        }
    }
}

/// Where both runtime tests start: a node namespace, a `local` datastore, the plugins in a
/// private bin dir and the chain's conflist in a private conf dir, logging to a file.
pub struct ChainSetup {
    pub node: Node,
    pub store: IpamFixture,
    pub dir: TestDir,
    pub bin: PathBuf,
    pub net_d: PathBuf,
    pub log: PathBuf,
    /// `<net_d>/10-calico.conflist`.
    pub conflist: PathBuf,
}

impl ChainSetup {
    /// Panics when the setup cannot be made: no runtime test can go on without it.
    pub fn new(network: &str, nodename: &str, pool_v4: &str, pool_v6: &str) -> ChainSetup {
        let node = Node::new();
        let store = IpamFixture::new(Backend::Local);
        let dir = TestDir::new().expect("test dir");
        let bin = plugin_bin_dir(dir.path()).expect("plugin dir");
        let net_d = dir.path().join("net.d");
        let log = dir.path().join("cni.log");
        write_chain_conflist(
            &net_d,
            &ChainConf {
                network,
                nodename,
                data_dir: &store.data_dir(),
                lock_file: &store.lock_file(nodename),
                log_file: &log,
                pool_v4,
                pool_v6,
            },
        )
        .expect("conflist");
        let conflist = net_d.join("10-calico.conflist");
        ChainSetup {
            node,
            store,
            dir,
            bin,
            net_d,
            log,
            conflist,
        }
    }
}

/// Where the chain keeps WorkloadEndpoints in the `local` datastore.
pub const WEP_PREFIX: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";

/// Panics unless the runtime's removals left nothing of the chain: no pod link or route on
/// the node, no allocation, handle or WorkloadEndpoint in the datastore, no NAT rule naming
/// any of `addrs`.
pub fn assert_chain_clean(node: &Node, store: &IpamFixture, addrs: &[IpAddr], what: &str) {
    node.assert_node_clean(what);
    let snapshot = store.snapshot();
    assert_eq!(
        crate::ipam::allocations(&snapshot).expect("consistent"),
        std::collections::BTreeMap::new(),
        "{what}: addresses left allocated"
    );
    assert_eq!(
        store.handles(),
        std::collections::BTreeMap::new(),
        "{what}: IPAM handles left"
    );
    let weps: Vec<&String> = snapshot
        .keys()
        .filter(|k| k.starts_with(WEP_PREFIX))
        .collect();
    assert!(weps.is_empty(), "{what}: workload endpoints left: {weps:?}");
    let nat = nat_leftovers(&node.netns, addrs);
    assert!(
        nat.is_empty(),
        "{what}: NAT rules left:\n{}",
        nat.join("\n")
    );
}

/// What a runtime test's conflist is made of.
#[derive(Debug, Clone)]
pub struct ChainConf<'a> {
    pub network: &'a str,
    pub nodename: &'a str,
    pub data_dir: &'a Path,
    pub lock_file: &'a Path,
    pub log_file: &'a Path,
    pub pool_v4: &'a str,
    pub pool_v6: &'a str,
}

/// The shipped `10-calico-single-node.conflist` rendered as the installer would (node name,
/// MTU), pointed at the test's datastore, lock and log, given the test's pools, with the
/// shipped conflists' portmap entry appended for published ports. Written as
/// `<net_d>/10-calico.conflist`; returns the JSON.
pub fn write_chain_conflist(net_d: &Path, conf: &ChainConf<'_>) -> Result<Value, RuntimeError> {
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conflists")
        .join("10-calico-single-node.conflist");
    let text = fs::read_to_string(&template)
        .map_err(io_err(format!("read {}", template.display())))?
        .replace("__KUBERNETES_NODE_NAME__", conf.nodename)
        .replace("__CNI_MTU__", "1450");
    let mut list: Value = serde_json::from_str(&text)
        .map_err(|e| RuntimeError::Setup(format!("{} is not JSON: {e}", template.display())))?;
    list["name"] = json!(conf.network);
    let calico = &mut list["plugins"][0];
    calico["local_data_dir"] = json!(conf.data_dir);
    calico["ipam_lock_file"] = json!(conf.lock_file);
    calico["log_level"] = json!("debug");
    calico["log_file_path"] = json!(conf.log_file);
    calico["ipam"]["ipv4_pools"] = json!([conf.pool_v4]);
    calico["ipam"]["ipv6_pools"] = json!([conf.pool_v6]);
    if let Some(plugins) = list["plugins"].as_array_mut() {
        plugins.push(json!({
            "type": "portmap",
            "snat": true,
            "capabilities": {"portMappings": true}
        }));
    }
    fs::create_dir_all(net_d).map_err(io_err("create the conflist dir"))?;
    let path = net_d.join("10-calico.conflist");
    let bytes = serde_json::to_vec_pretty(&list)
        .map_err(|e| RuntimeError::Setup(format!("conflist does not encode: {e}")))?;
    fs::write(&path, bytes).map_err(io_err(format!("write {}", path.display())))?;
    Ok(list)
}

// ---- the private mount namespace ----------------------------------------------------------

/// One change a [`PrivateMounts`] makes inside its namespace.
#[derive(Debug, Clone)]
pub enum MountOp {
    /// An empty tmpfs over an existing directory.
    Tmpfs(PathBuf),
    /// `source` bind-mounted over `target`. A missing `target` is made inside an overlay of
    /// its nearest existing ancestor (upper layer in the test's directory), so the machine's
    /// directory stays as it is.
    Bind { source: PathBuf, target: PathBuf },
}

/// The script the namespace's first process runs. `$1` is the test's own mount namespace
/// (checked, so that a failed unshare can never mount over the machine's paths), `$2` a
/// scratch directory for overlay layers, then the operations.
const MOUNT_SCRIPT: &str = r#"set -eu
[ "$(readlink /proc/self/ns/mnt)" != "$1" ] || { echo "still in the test's mount namespace" >&2; exit 1; }
scratch=$2; shift 2
n=0
room_for() {
    a=$(dirname "$1")
    while [ ! -d "$a" ]; do a=$(dirname "$a"); done
    case "$a" in /|/proc|/sys|/dev|/run|/tmp) echo "will not overlay $a to make $1" >&2; exit 1;; esac
    # An overlay hides the mounts below its lower directory: refuse rather than hide them.
    if awk -v p="$a/" 'index($5, p) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        echo "$a has mounts below it; will not overlay it to make $1" >&2; exit 1
    fi
    n=$((n + 1))
    mkdir -p "$scratch/$n/upper" "$scratch/$n/work"
    mount -t overlay overlay -o "lowerdir=$a,upperdir=$scratch/$n/upper,workdir=$scratch/$n/work" "$a"
    mkdir -p "$1"
}
while [ $# -gt 0 ]; do
    case "$1" in
        tmpfs) mount -t tmpfs -o mode=0755 tmpfs "$2"; shift 2 ;;
        bind) [ -d "$3" ] || room_for "$3"; mount --bind "$2" "$3"; shift 3 ;;
        *) echo "unknown operation $1" >&2; exit 1 ;;
    esac
done
echo ready
exec cat >/dev/null
"#;

/// A mount namespace of the test's own, kept alive by a process that waits on its stdin:
/// dropping the fixture (or the test process dying) closes the pipe and ends it. The
/// namespace receives the machine's later mounts (slave propagation) and sends none back.
#[derive(Debug)]
pub struct PrivateMounts {
    holder: Child,
    stdin: Option<ChildStdin>,
    ns: PathBuf,
}

impl PrivateMounts {
    /// Creates the namespace and applies `ops` in order; `scratch` holds overlay layers.
    pub fn new(ops: &[MountOp], scratch: &Path) -> Result<PrivateMounts, RuntimeError> {
        fs::create_dir_all(scratch).map_err(io_err("create the overlay scratch dir"))?;
        let ours = fs::read_link("/proc/self/ns/mnt").map_err(io_err("read our mount ns"))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "slave", "--", "sh", "-c"])
            .arg(MOUNT_SCRIPT)
            .arg("sh")
            .arg(&ours)
            .arg(scratch);
        for op in ops {
            match op {
                MountOp::Tmpfs(target) => {
                    cmd.arg("tmpfs").arg(target);
                }
                MountOp::Bind { source, target } => {
                    cmd.arg("bind").arg(source).arg(target);
                }
            }
        }
        let command = describe(&cmd);
        let mut holder = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                command: command.clone(),
                source,
            })?;
        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            // The script prints one line once every mount is in place, or exits.
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            let mut stderr = String::new();
            if let Some(mut err) = holder.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            return Err(RuntimeError::Mounts(format!(
                "{command}: {}",
                stderr.trim()
            )));
        }
        let stdin = holder.stdin.take();
        let ns = PathBuf::from(format!("/proc/{}/ns/mnt", holder.id()));
        Ok(PrivateMounts { holder, stdin, ns })
    }

    /// `nsenter` into this mount namespace and the network namespace at `netns`, running
    /// `program`. nsenter opens both namespaces before entering either, so `netns` is a
    /// path of the test's own mount namespace.
    pub fn command(&self, netns: &Path, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount={}", self.ns.display()))
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(program);
        cmd
    }
}

impl Drop for PrivateMounts {
    fn drop(&mut self) {
        // Closing the pipe ends `cat`; the namespace goes with its last process.
        drop(self.stdin.take());
        if wait_child(&mut self.holder, "the mount namespace holder", STEP_LIMIT).is_err() {
            let _ = self.holder.kill();
        }
    }
}

/// Removes the cgroup `path` (relative to each hierarchy's root) and everything below it,
/// in every cgroup hierarchy mounted here, deepest first. Only empty cgroups can go; one
/// that still holds a process stays, and so does the rest of its branch.
pub fn remove_cgroup_tree(path: &str) {
    fn remove(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&entry.path());
                }
            }
        }
        let _ = fs::remove_dir(dir);
    }
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        return;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        // Fields: ... <mount point> ... - <fs type> <source> <options>
        let (front, back) = line.split_once(" - ").unwrap_or((line, ""));
        let fstype = back.split_whitespace().next().unwrap_or_default();
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if let Some(mount_point) = front.split_whitespace().nth(4) {
            let dir = Path::new(mount_point).join(relative);
            if dir.is_dir() {
                remove(&dir);
            }
        }
    }
}

/// Stops a process the test started (SIGTERM, then SIGKILL past `limit`) and reaps it.
pub fn stop_child(child: &mut Child, what: &str, limit: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let _ = wait_child(child, what, limit);
}

// ---- podman -------------------------------------------------------------------------------

/// A podman of the test's own: its containers.conf (CNI backend, our plugin dir and
/// conflist dir, runc, cgroupfs), its storage (vfs under the test's directory), its tmpdir,
/// and the private mount namespace; every command runs in the node network namespace.
#[derive(Debug)]
pub struct Podman {
    node: PathBuf,
    /// The cgroup (in every hierarchy) under which this podman's containers and conmons
    /// live; removed with the fixture.
    cgroup_parent: String,
    cni_cache: PathBuf,
    conf: PathBuf,
    storage_conf: PathBuf,
    mounts: PrivateMounts,
}

impl Podman {
    /// Sets podman up under `dir` with `cni_bin` and `net_d`; fails with podman's own error
    /// when it cannot start here.
    pub fn new(
        node: &Path,
        dir: &Path,
        cni_bin: &Path,
        net_d: &Path,
    ) -> Result<Podman, RuntimeError> {
        let dir = dir.join("podman");
        let mkdir =
            |p: &Path| fs::create_dir_all(p).map_err(io_err(format!("create {}", p.display())));
        let (graph, run, tmp, cni_cache) = (
            dir.join("storage"),
            dir.join("run"),
            dir.join("tmp"),
            dir.join("cni-cache"),
        );
        for d in [&graph, &run, &tmp, &cni_cache] {
            mkdir(d)?;
        }
        let cache = cni_cache.clone();
        let conf = dir.join("containers.conf");
        let storage_conf = dir.join("storage.conf");
        let q = |p: &Path| json!(p).to_string();
        fs::write(
            &conf,
            format!(
                "[network]\n\
                 network_backend = \"cni\"\n\
                 cni_plugin_dirs = [{bin}]\n\
                 network_config_dir = {netd}\n\
                 [engine]\n\
                 runtime = \"runc\"\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 events_logfile_path = {events}\n\
                 tmp_dir = {tmp}\n",
                bin = q(cni_bin),
                netd = q(net_d),
                events = q(&dir.join("events.log")),
                tmp = q(&tmp),
            ),
        )
        .map_err(io_err("write containers.conf"))?;
        fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
                q(&graph),
                q(&run)
            ),
        )
        .map_err(io_err("write storage.conf"))?;
        let mounts = PrivateMounts::new(
            &[
                MountOp::Tmpfs("/run".into()),
                MountOp::Tmpfs("/dev/shm".into()),
                MountOp::Bind {
                    source: cni_cache,
                    target: "/var/lib/cni".into(),
                },
            ],
            &dir.join("overlays"),
        )?;
        let podman = Podman {
            node: node.to_path_buf(),
            cgroup_parent: unique_name("/cni-runtime-test-podman"),
            cni_cache: cache,
            conf,
            storage_conf,
            mounts,
        };
        podman.checked(&["info", "--format", "{{.Host.NetworkBackend}}"])?;
        Ok(podman)
    }

    /// `podman <args>` as the test runs it: private configuration, mount and network
    /// namespaces.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.mounts.command(&self.node, "podman");
        cmd.args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION");
        cmd
    }

    pub fn output(&self, args: &[&str]) -> Result<Output, RuntimeError> {
        output(&mut self.command(args))
    }

    pub fn checked(&self, args: &[&str]) -> Result<String, RuntimeError> {
        checked(&mut self.command(args))
    }

    /// The flags every test container needs on these machines: a file-descriptor and
    /// process limit below the hard limit (podman's defaults exceed what runc may set
    /// here), no resolv.conf or hosts file copied from the machine, and the fixture's own
    /// cgroup parent (runc cannot run without cgroups, and podman's default parent would
    /// stay behind on the machine).
    pub fn run_flags(&self) -> Vec<String> {
        [
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--dns",
            "none",
            "--no-hosts",
            "--cgroup-parent",
            &self.cgroup_parent,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Where libcni keeps podman's results (`/var/lib/cni` inside the namespace).
    pub fn cni_cache(&self) -> &Path {
        &self.cni_cache
    }

    /// `ls /run/netns` in the private namespace: the namespaces podman has not removed.
    pub fn netns_files(&self) -> Result<Vec<String>, RuntimeError> {
        let mut cmd = self.mounts.command(&self.node, "sh");
        cmd.args(["-c", "ls -A /run/netns 2>/dev/null || true"]);
        Ok(checked(&mut cmd)?
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Whatever a failed test left running; each removal runs the chain's DEL.
        let _ = self.output(&["rm", "--all", "--force", "--time", "0"]);
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

/// `podman --version`.
pub fn podman_version() -> Result<String, RuntimeError> {
    Ok(checked(Command::new("podman").arg("--version"))?
        .trim()
        .to_string())
}

// ---- containerd ---------------------------------------------------------------------------

/// The ctr namespace of every test container. Short on purpose: ctr hands the plugins
/// `<namespace>-<id>` as the container id, and outside Kubernetes Calico names the host veth
/// after its first 11 characters.
pub const CTR_NAMESPACE: &str = "rt";

/// A containerd daemon just spawned by [`spawn_containerd`].
#[derive(Debug)]
pub struct SpawnedContainerd {
    pub address: PathBuf,
    pub log_path: PathBuf,
    pub mounts: PrivateMounts,
    pub daemon: Child,
}

/// Starts a containerd of the test's own in `dir` (root, state, sockets, opt, libcni's
/// cache, its log), in the node network namespace and a private mount namespace where
/// `/run` is a tmpfs, `/var/lib/cni` the test's cache and `extra_mounts` are applied. Its
/// config is the common part with `top_level` keys before the common tables and `tables`
/// after them (TOML). Does not wait for it to answer.
pub fn spawn_containerd(
    node: &Path,
    dir: &Path,
    (top_level, tables): (&str, &str),
    extra_mounts: Vec<MountOp>,
) -> Result<SpawnedContainerd, RuntimeError> {
    let cni_cache = dir.join("cni-cache");
    for d in [dir, &cni_cache] {
        fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
    }
    let address = dir.join("containerd.sock");
    let q = |p: &Path| json!(p).to_string();
    let config = dir.join("config.toml");
    fs::write(
        &config,
        format!(
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             {top_level}\
             [grpc]\n  address = {sock}\n\
             [ttrpc]\n  address = {ttrpc}\n\
             [debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt}\n\
             {tables}",
            root = q(&dir.join("root")),
            state = q(&dir.join("state")),
            sock = q(&address),
            ttrpc = q(&dir.join("containerd.sock.ttrpc")),
            opt = q(&dir.join("opt")),
        ),
    )
    .map_err(io_err("write config.toml"))?;
    let mut ops = vec![
        MountOp::Tmpfs("/run".into()),
        MountOp::Bind {
            source: cni_cache,
            target: "/var/lib/cni".into(),
        },
    ];
    ops.extend(extra_mounts);
    let mounts = PrivateMounts::new(&ops, &dir.join("overlays"))?;
    let log_path = dir.join("containerd.log");
    let log = File::create(&log_path).map_err(io_err("create containerd.log"))?;
    let log2 = log.try_clone().map_err(io_err("dup containerd.log"))?;
    let mut cmd = mounts.command(node, "containerd");
    cmd.arg("--config").arg(&config);
    let daemon = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            command: describe(&cmd),
            source,
        })?;
    Ok(SpawnedContainerd {
        address,
        log_path,
        mounts,
        daemon,
    })
}

/// A containerd of the test's own (root, state, sockets and plugin dirs under the test's
/// directory, the CRI plugin off) running in the node network namespace and the private
/// mount namespace, where go-cni's fixed `/etc/cni/net.d` and `/opt/cni/bin` are the test's
/// conflist and plugin directories.
#[derive(Debug)]
pub struct Containerd {
    node: PathBuf,
    dir: PathBuf,
    address: PathBuf,
    daemon: Option<Child>,
    /// `ctr run` processes still attached to their container, by container id.
    tasks: Vec<(String, Child)>,
    cgroup_prefix: String,
    mounts: PrivateMounts,
}

impl Containerd {
    pub fn start(
        node: &Path,
        dir: &Path,
        cni_bin: &Path,
        net_d: &Path,
    ) -> Result<Containerd, RuntimeError> {
        let dir = dir.join("containerd");
        let spawned = spawn_containerd(
            node,
            &dir,
            ("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n", ""),
            vec![
                MountOp::Bind {
                    source: net_d.to_path_buf(),
                    target: "/etc/cni/net.d".into(),
                },
                MountOp::Bind {
                    source: cni_bin.to_path_buf(),
                    target: "/opt/cni/bin".into(),
                },
            ],
        )?;
        let SpawnedContainerd {
            address,
            log_path,
            mounts,
            daemon,
        } = spawned;
        let mut ctd = Containerd {
            node: node.to_path_buf(),
            dir: dir.clone(),
            address,
            daemon: Some(daemon),
            tasks: Vec::new(),
            cgroup_prefix: unique_name("/cni-runtime-test"),
            mounts,
        };
        let up = retry("containerd answering on its socket", STEP_LIMIT, || {
            if let Some(Ok(Some(status))) = ctd.daemon.as_mut().map(Child::try_wait) {
                return Ok(Err(status));
            }
            ctd.checked(&["version"])
                .map(|_| Ok(()))
                .map_err(|e| e.to_string())
        });
        let daemon_log = || fs::read_to_string(&log_path).unwrap_or_default();
        match up {
            Ok(Ok(())) => Ok(ctd),
            Ok(Err(status)) => Err(RuntimeError::Failed {
                command: "containerd".into(),
                status: status.to_string(),
                stdout: String::new(),
                stderr: daemon_log(),
            }),
            Err(e) => Err(RuntimeError::Setup(format!(
                "{e}\ncontainerd log:\n{}",
                daemon_log()
            ))),
        }
    }

    /// `ctr --address <ours> --namespace rt <args>` in the private namespaces.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = self.mounts.command(&self.node, "ctr");
        cmd.arg("--address")
            .arg(&self.address)
            .args(["--namespace", CTR_NAMESPACE])
            .args(args);
        cmd
    }

    pub fn checked(&self, args: &[&str]) -> Result<String, RuntimeError> {
        checked(&mut self.ctr(args))
    }

    /// Where libcni keeps ctr's results (`/var/lib/cni` inside the namespace).
    pub fn cni_cache(&self) -> PathBuf {
        self.dir.join("cni-cache")
    }

    /// The container id the plugins see for `id`: `<namespace>-<id>`.
    pub fn cni_container_id(id: &str) -> String {
        format!("{CTR_NAMESPACE}-{id}")
    }

    /// `ctr run --rm --cni` flags for container `id` on `rootfs`: a cgroup of the test's own
    /// (runc removes it with the container; the default `/<namespace>/<id>` would leave
    /// its parent behind on the machine).
    fn run_args(&self, id: &str, rootfs: &Path) -> Vec<String> {
        vec![
            "run".into(),
            "--rm".into(),
            "--cni".into(),
            "--cgroup".into(),
            format!("{}-{id}", self.cgroup_prefix),
            "--rootfs".into(),
            rootfs.display().to_string(),
            id.into(),
        ]
    }

    /// Runs container `id` to completion (`ctr run --rm --cni`): ADD before it starts, DEL
    /// after it exits, the container removed.
    pub fn run(&self, id: &str, rootfs: &Path, argv: &[&str]) -> Result<Output, RuntimeError> {
        let mut args = self.run_args(id, rootfs);
        args.extend(argv.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        output(&mut self.ctr(&args))
    }

    /// Starts container `id` with `ctr run --rm --cni`, which stays attached (ctr runs the
    /// DEL itself once the task exits), and waits until the task runs, which is after ADD.
    pub fn start_task(
        &mut self,
        id: &str,
        rootfs: &Path,
        argv: &[&str],
    ) -> Result<(), RuntimeError> {
        let mut args = self.run_args(id, rootfs);
        args.extend(argv.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out_path = self.task_output_path(id);
        let out = File::create(&out_path).map_err(io_err("create the task output"))?;
        let err = out.try_clone().map_err(io_err("dup the task output"))?;
        let mut cmd = self.ctr(&args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                command: describe(&cmd),
                source,
            })?;
        self.tasks.push((id.to_string(), child));
        let running = retry(&format!("task {id} running"), STEP_LIMIT, || {
            if let Some((_, c)) = self.tasks.iter_mut().find(|(t, _)| t == id) {
                if let Ok(Some(status)) = c.try_wait() {
                    return Ok(Err(status));
                }
            }
            let list = self.checked(&["task", "ls"]).map_err(|e| e.to_string())?;
            let running = list.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&id) && f.last() == Some(&"RUNNING")
            });
            if running {
                Ok(Ok(()))
            } else {
                Err(format!("ctr task ls:\n{list}"))
            }
        })?;
        match running {
            Ok(()) => Ok(()),
            Err(status) => {
                self.tasks.retain(|(t, _)| t != id);
                Err(RuntimeError::Failed {
                    command: format!("ctr run ... {id}"),
                    status: status.to_string(),
                    stdout: self.task_output(id),
                    stderr: String::new(),
                })
            }
        }
    }

    fn task_output_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("task-{id}.out"))
    }

    /// What `ctr run` printed for container `id` (the container's output and ctr's own
    /// messages, such as a failed network teardown).
    pub fn task_output(&self, id: &str) -> String {
        fs::read_to_string(self.task_output_path(id)).unwrap_or_default()
    }

    /// Kills container `id`'s task and waits for its `ctr run` to finish: it runs the DEL
    /// and removes the container. Returns ctr's exit status.
    pub fn kill_task(&mut self, id: &str) -> Result<ExitStatus, RuntimeError> {
        self.checked(&["task", "kill", "--signal", "SIGKILL", id])?;
        let Some(pos) = self.tasks.iter().position(|(t, _)| t == id) else {
            return Err(RuntimeError::Setup(format!("no ctr run for {id}")));
        };
        let (_, mut child) = self.tasks.remove(pos);
        wait_child(&mut child, &format!("ctr run {id} finishing"), STEP_LIMIT)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for (id, mut child) in std::mem::take(&mut self.tasks) {
            let _ = output(&mut self.ctr(&["task", "kill", "--signal", "SIGKILL", &id]));
            if wait_child(&mut child, "ctr run", STEP_LIMIT).is_err() {
                let _ = output(&mut self.ctr(&["task", "rm", "--force", &id]));
                let _ = output(&mut self.ctr(&["container", "rm", &id]));
            }
        }
        if let Some(mut daemon) = self.daemon.take() {
            stop_child(&mut daemon, "containerd", STEP_LIMIT);
        }
    }
}

/// `containerd --version`.
pub fn containerd_version() -> Result<String, RuntimeError> {
    Ok(checked(Command::new("containerd").arg("--version"))?
        .trim()
        .to_string())
}

/// `runc --version`, first line.
pub fn runc_version() -> Result<String, RuntimeError> {
    Ok(checked(Command::new("runc").arg("--version"))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

// ---- what the tests look at ---------------------------------------------------------------

/// The global addresses in `ip -o addr show` output (the `inet`/`inet6` words).
pub fn global_addrs(ip_output: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in ip_output.lines() {
        if line.contains("scope link") || line.contains("scope host") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[0] == "inet" || pair[0] == "inet6" {
                let addr = pair[1].split('/').next().unwrap_or_default();
                if let Ok(ip) = addr.parse() {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// `host:port` in a URL (IPv6 in brackets).
pub fn host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// How long one HTTP exchange may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /index.html` from `target`, made from inside the network namespace at `netns`: the
/// body of a 200 answer, or what went wrong. (Not busybox wget: 1.35's crashes when `-T` is
/// given and the connection is refused.)
pub fn http_get(netns: &Path, target: SocketAddr) -> Result<String, String> {
    let ns = NetNs::open(netns).map_err(|e| e.to_string())?;
    let exchange = || -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&target, HTTP_TIMEOUT)?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
        stream.write_all(b"GET /index.html HTTP/1.0\r\nHost: test\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    };
    let answer = ns
        .run(exchange)
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("GET http://{target}/index.html: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("http://{target}: no HTTP answer: {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("http://{target}: {status}"));
    }
    Ok(body.to_string())
}

/// The lines of the node's NAT state (iptables and ip6tables `nat` tables, and the whole
/// nftables ruleset, which also shows iptables-nft's tables) that hold a per-container
/// portmap chain (`CNI-DN-…`) or one of `addrs`.
pub fn nat_leftovers(node: &TestNetns, addrs: &[IpAddr]) -> Vec<String> {
    let mut text = String::new();
    for argv in [
        &["iptables-save", "-t", "nat"][..],
        &["ip6tables-save", "-t", "nat"],
        &["nft", "list", "ruleset"],
    ] {
        match node.exec(argv) {
            Ok(out) => text.push_str(&String::from_utf8_lossy(&out.stdout)),
            Err(e) => text.push_str(&format!("cannot read: {e}\n")),
        }
    }
    text.lines()
        .filter(|line| {
            line.contains("CNI-DN-")
                || line
                    .split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
                    .filter_map(|w| w.parse::<IpAddr>().ok())
                    .any(|ip| addrs.contains(&ip))
        })
        .map(str::to_string)
        .collect()
}

/// The files left in a runtime's libcni result cache (`<cache>/results`).
pub fn cached_results(cache: &Path) -> Vec<String> {
    fs::read_dir(cache.join("results"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_elf_has_no_interpreter_and_garbage_counts_as_dynamic() {
        // A minimal ELF64 header with no program headers.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        assert!(!has_interpreter(&elf));
        // One program header of type PT_INTERP right after the header.
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&3u32.to_le_bytes());
        elf.extend(ph);
        assert!(has_interpreter(&elf));
        assert!(has_interpreter(b"#!/bin/sh\n"));
    }

    #[test]
    fn this_test_binary_is_dynamic() {
        let exe = std::env::current_exe().expect("current exe");
        let bytes = fs::read(&exe).expect("read the test binary");
        assert!(has_interpreter(&bytes), "{}", exe.display());
    }
}
