//! Fixtures for end-to-end tests: throwaway network namespaces, per-test directories, free
//! ports, where the plugin binaries are, and running a plugin by hand.
//!
//! Every fixture is unique to the test that creates it (names carry the pid and a counter)
//! and cleans up on drop, panics included, so tests run in parallel without colliding and
//! leave nothing behind on the machine.

use std::io;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::exec::{run_binary, RawOutput};

/// Overrides where [`plugin_dir`] looks for the suite's binaries.
pub const BIN_DIR_ENV: &str = "CNI_TEST_BIN_DIR";

/// Where Debian's containernetworking-plugins install the reference binaries.
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `<prefix>-<pid>-<n>`: unique within this machine for the life of the process.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("failed to run {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Runs a command to completion, failing on a non-zero exit.
fn run_checked(program: &str, args: &[&str]) -> Result<Output, FixtureError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| FixtureError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(FixtureError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A named network namespace (`ip netns add`), deleted when dropped. Use one as a
/// container's netns, or as a test's "node" (pass `path()` to
/// [`crate::Runner::host_netns`]) so the plugins' host-side changes stay in it.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    path: PathBuf,
}

impl TestNetns {
    /// Creates `<prefix>-<pid>-<n>`. Needs root.
    pub fn new(prefix: &str) -> Result<TestNetns, FixtureError> {
        let name = unique_name(prefix);
        let path = PathBuf::from("/run/netns").join(&name);
        // The name holds our pid and a counter we never repeat: one that exists was left by
        // a killed test process that had our pid before. It is garbage; take its name.
        if path.exists() {
            run_checked("ip", &["netns", "del", &name])?;
        }
        run_checked("ip", &["netns", "add", &name])?;
        Ok(TestNetns { name, path })
    }

    /// Like [`TestNetns::new`], with `lo` up: what a node namespace needs for local traffic.
    pub fn with_lo_up(prefix: &str) -> Result<TestNetns, FixtureError> {
        let ns = TestNetns::new(prefix)?;
        ns.exec_checked(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, what CNI_NETNS takes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a string, for RuntimeConf and env values.
    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    /// Runs a command inside the namespace (`ip netns exec`), whatever its exit status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output, FixtureError> {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(argv);
        Command::new("ip")
            .args(&args)
            .output()
            .map_err(|source| FixtureError::Spawn {
                command: format!("ip {}", args.join(" ")),
                source,
            })
    }

    /// Runs a command inside the namespace and returns its stdout; a non-zero exit is an
    /// error carrying stderr.
    pub fn exec_checked(&self, argv: &[&str]) -> Result<String, FixtureError> {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(argv);
        let out = run_checked("ip", &args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Nothing useful to do with a failure while dropping (possibly mid-panic).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A per-test directory tree, removed when dropped: a result cache and data directories
/// for IPAM stores, lock files and the like.
#[derive(Debug)]
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> io::Result<TestDir> {
        Ok(TestDir {
            dir: tempfile::Builder::new().prefix("cni-test-").tempdir()?,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<root>/cache`, for [`crate::Runner`]'s result cache.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// `<root>/<name>`, created.
    pub fn subdir(&self, name: &str) -> io::Result<PathBuf> {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it).
pub fn free_tcp_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The directory of the workspace's built binaries: `$CNI_TEST_BIN_DIR` if set, else
/// `target/<profile>` derived from the running executable (a test runs from
/// `target/<profile>/deps/`, a binary from `target/<profile>/`).
pub fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The reference (Go) plugins, for differential tests.
pub fn reference_plugin_dir() -> PathBuf {
    PathBuf::from(REFERENCE_PLUGIN_DIR)
}

/// A plugin's output.
pub type PluginOutput = RawOutput;

/// Runs a plugin binary directly with exactly `env` (plus the caller's PATH, unless `env`
/// sets PATH, so that plugins can still find iptables and friends) and `stdin`, and
/// captures exit code, stdout and stderr. Nothing is checked or decoded: this is for tests
/// of a plugin's own input handling.
pub fn run_plugin(binary: &Path, env: &[(&str, &str)], stdin: &[u8]) -> io::Result<PluginOutput> {
    run_plugin_in(None, binary, env, stdin)
}

/// [`run_plugin`] inside a host network namespace (`nsenter --net=<host_netns>`).
pub fn run_plugin_in(
    host_netns: Option<&Path>,
    binary: &Path,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> io::Result<PluginOutput> {
    let mut vars: Vec<(String, String)> = Vec::new();
    if !env.iter().any(|(k, _)| *k == "PATH") {
        if let Ok(path) = std::env::var("PATH") {
            vars.push(("PATH".into(), path));
        }
    }
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    run_binary(binary, &vars, true, stdin, host_netns)
}

/// The deadline `after` from now, as a parent plugin passes it in
/// [`shared::deadline::ENV`]: a narrowed deadline makes a stalled case cost seconds.
pub fn deadline_in(after: std::time::Duration) -> String {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        + after)
        .as_millis()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        assert_ne!(unique_name("x"), unique_name("x"));
        assert!(unique_name("ab").starts_with(&format!("ab-{}-", std::process::id())));
    }

    #[test]
    fn ports_are_nonzero() {
        assert_ne!(free_tcp_port().expect("tcp"), 0);
        assert_ne!(free_udp_port().expect("udp"), 0);
    }

    #[test]
    fn plugin_dir_is_the_profile_dir() {
        let dir = plugin_dir();
        assert_ne!(dir.file_name().and_then(|n| n.to_str()), Some("deps"));
        assert!(dir.join("deps").is_dir(), "{}", dir.display());
    }

    #[test]
    fn test_dir_is_removed_on_drop() {
        let d = TestDir::new().expect("dir");
        let root = d.path().to_path_buf();
        assert!(d.subdir("ipam").expect("sub").is_dir());
        drop(d);
        assert!(!root.exists());
    }

    #[test]
    fn run_plugin_passes_exactly_the_given_env() {
        let out = run_plugin(
            Path::new("/bin/sh"),
            &[("CNI_COMMAND", "VERSION")],
            b"echo \"$CNI_COMMAND:$CNI_NETNS\"",
        )
        .expect("runs");
        assert_eq!(out.stdout_str(), "VERSION:\n");
        assert_eq!(out.code, Some(0));
    }
}
