//! Executing one plugin binary the way libcni's `pkg/invoke` does: find it on the search
//! path, pass the whole environment plus the CNI_* variables, feed the config on stdin, and
//! decode stdout as a result (exit 0) or as the CNI error object (non-zero exit).
//!
//! Optionally every plugin runs inside a "host" network namespace through
//! `nsenter --net=<path> --`: tests give each test its own node namespace so that its routes,
//! sysctls and firewall rules never touch the machine. nsenter only switches the network
//! namespace, so the plugin still sees the test's files (cache and data directories, and the
//! container netns under /run/netns).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use shared::spec::error::{CniError, ErrorCode};

/// How many times a "text file busy" start is retried, one second apart (libcni: 5).
const BUSY_RETRIES: usize = 5;

/// nsenter exits 126 when it cannot exec the target program.
const NSENTER_EXEC_FAILED: i32 = 126;

/// A plugin could not be found, started, or it failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no plugin name provided")]
    NoPluginName,
    #[error("invalid plugin name: {0}")]
    InvalidPluginName(String),
    #[error("no paths provided")]
    NoPaths,
    #[error("failed to find plugin {name:?} in path [{}]", join_paths(.paths))]
    NotFound { name: String, paths: Vec<PathBuf> },
    #[error("failed to execute {}: {source}", .path.display())]
    Spawn { path: PathBuf, source: io::Error },
    /// The plugin exited non-zero; its error object, or libcni's stand-in when it printed
    /// none (code 0 then, as `types.Error{}` in Go).
    #[error("{}", GoDisplay(.0))]
    Plugin(CniError),
    /// The runner refused the request before executing anything (bad container id,
    /// interface or network name), with libcni's code and message.
    #[error("{}", GoDisplay(.0))]
    Invalid(CniError),
    #[error("failed to decode plugin result {stdout:?}: {reason}")]
    BadResult { stdout: String, reason: String },
    #[error("failed to encode plugin config: {0}")]
    Encode(serde_json::Error),
}

impl ExecError {
    /// The CNI error object behind this failure, if there is one.
    pub fn cni_error(&self) -> Option<&CniError> {
        match self {
            ExecError::Plugin(e) | ExecError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

/// Go's `types.Error.Error()`: `msg` or `msg; details`.
struct GoDisplay<'a>(&'a CniError);

impl fmt::Display for GoDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.details.is_empty() {
            f.write_str(&self.0.msg)
        } else {
            write!(f, "{}; {}", self.0.msg, self.0.details)
        }
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Looks `plugin` up in `paths`, in order; it must be a regular file. A name containing a
/// path separator is refused, so a config cannot point at an arbitrary binary.
pub fn find_in_path(plugin: &str, paths: &[PathBuf]) -> Result<PathBuf, ExecError> {
    if plugin.is_empty() {
        return Err(ExecError::NoPluginName);
    }
    if plugin.contains('/') {
        return Err(ExecError::InvalidPluginName(plugin.to_string()));
    }
    if paths.is_empty() {
        return Err(ExecError::NoPaths);
    }
    paths
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|p| p.metadata().map(|m| m.is_file()).unwrap_or(false))
        .ok_or_else(|| ExecError::NotFound {
            name: plugin.to_string(),
            paths: paths.to_vec(),
        })
}

/// The CNI_* variables of one invocation. All six are always set, empty when unused (libcni
/// `Args.AsEnv`), and they override any same-named variable of the runner's environment.
#[derive(Debug, Clone, Default)]
pub struct CniEnv {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    pub fn vars(&self) -> Vec<(String, String)> {
        let args = self
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let path = self
            .path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        vec![
            ("CNI_COMMAND".into(), self.command.clone()),
            ("CNI_CONTAINERID".into(), self.container_id.clone()),
            ("CNI_NETNS".into(), self.netns.clone()),
            ("CNI_ARGS".into(), args),
            ("CNI_IFNAME".into(), self.ifname.clone()),
            ("CNI_PATH".into(), path),
        ]
    }
}

/// What a finished process left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOutput {
    /// The exit code; `None` when a signal killed the process.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl RawOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn exit_description(&self) -> String {
        match self.code {
            Some(c) => format!("exit status {c}"),
            None => "signal: killed".to_string(),
        }
    }
}

/// Runs `binary` with stdin fed from `stdin` and both outputs captured.
///
/// `clear_env` starts from an empty environment (bad-input tests control every variable);
/// otherwise the runner's environment is inherited. `env` is applied on top either way.
/// With `host_netns` the binary runs under `nsenter --net=<host_netns> --`. A start that fails
/// with "text file busy" (the binary is still being written) is retried like libcni does.
pub fn run_binary(
    binary: &Path,
    env: &[(String, String)],
    clear_env: bool,
    stdin: &[u8],
    host_netns: Option<&Path>,
) -> io::Result<RawOutput> {
    let mut attempt = 0;
    loop {
        match run_once(binary, env, clear_env, stdin, host_netns) {
            Err(e) if is_text_busy(&e) && attempt < BUSY_RETRIES => {}
            Ok(out)
                if host_netns.is_some()
                    && out.code == Some(NSENTER_EXEC_FAILED)
                    && out.stderr_str().contains("Text file busy")
                    && attempt < BUSY_RETRIES => {}
            other => return other,
        }
        attempt += 1;
        thread::sleep(Duration::from_secs(1));
    }
}

fn is_text_busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ETXTBSY)
}

fn run_once(
    binary: &Path,
    env: &[(String, String)],
    clear_env: bool,
    stdin: &[u8],
    host_netns: Option<&Path>,
) -> io::Result<RawOutput> {
    let mut cmd = match host_netns {
        Some(ns) => {
            let mut c = Command::new(nsenter_path());
            c.arg(format!("--net={}", ns.display()))
                .arg("--")
                .arg(binary);
            c
        }
        None => Command::new(binary),
    };
    if clear_env {
        cmd.env_clear();
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    // Write stdin from a thread: a plugin may start printing before it has read everything,
    // and a full pipe on both sides would deadlock.
    let writer = child.stdin.take().map(|mut pipe| {
        let data = stdin.to_vec();
        thread::spawn(move || {
            // A plugin that exits without reading stdin closes the pipe; that is its business.
            let _ = pipe.write_all(&data);
        })
    });
    let out = child.wait_with_output()?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(RawOutput {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// nsenter by absolute path, so that a cleared environment (no PATH) still finds it.
fn nsenter_path() -> PathBuf {
    ["/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nsenter"))
}

/// Executes a plugin for the runner: libcni's `ExecPlugin` plus decoding. Returns stdout on
/// success; the plugin's stderr is passed on to ours, as libcni does.
pub fn exec_plugin(
    binary: &Path,
    cni: &CniEnv,
    extra_env: &[(String, String)],
    stdin: &[u8],
    host_netns: Option<&Path>,
) -> Result<Vec<u8>, ExecError> {
    let mut env = extra_env.to_vec();
    env.extend(cni.vars());
    let out =
        run_binary(binary, &env, false, stdin, host_netns).map_err(|source| ExecError::Spawn {
            path: binary.to_path_buf(),
            source,
        })?;
    if !out.stderr.is_empty() {
        eprint!("{}", out.stderr_str());
    }
    if out.success() {
        return Ok(out.stdout);
    }
    Err(ExecError::Plugin(plugin_error(&out)))
}

/// libcni's `pluginErr`: the error object from stdout, or a stand-in message.
fn plugin_error(out: &RawOutput) -> CniError {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(default)]
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    let unknown = ErrorCode::Other(0);
    if out.stdout.is_empty() {
        let msg = if out.stderr.is_empty() {
            format!(
                "netplugin failed with no error message: {}",
                out.exit_description()
            )
        } else {
            format!(
                "netplugin failed: {:?}: {}",
                out.stderr_str(),
                out.exit_description()
            )
        };
        return CniError::new(unknown, msg);
    }
    match serde_json::from_slice::<Wire>(&out.stdout) {
        Ok(w) => CniError::new(ErrorCode::from_u32(w.code), w.msg).with_details(w.details),
        Err(e) => CniError::new(
            unknown,
            format!(
                "netplugin failed but error parsing its diagnostic message {:?}: {e}",
                out.stdout_str()
            ),
        ),
    }
}

/// Decodes an ADD result: a JSON object; without `cniVersion` it is taken to be in the
/// config's version (libcni's `fixupResultVersion`).
pub fn decode_result(stdout: &[u8], config_version: &str) -> Result<Value, ExecError> {
    let bad = |reason: String| ExecError::BadResult {
        stdout: String::from_utf8_lossy(stdout).into_owned(),
        reason,
    };
    let mut value: Value = serde_json::from_slice(stdout).map_err(|e| bad(e.to_string()))?;
    let Value::Object(map) = &mut value else {
        return Err(bad("not a JSON object".to_string()));
    };
    let has_version = map
        .get("cniVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty());
    if !has_version {
        map.insert(
            "cniVersion".into(),
            Value::String(config_version.to_string()),
        );
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stdout: &str, stderr: &str) -> RawOutput {
        RawOutput {
            code: Some(code),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn decodes_plugin_errors_like_libcni() {
        let e = plugin_error(&out(1, r#"{"code":7,"msg":"bad","details":"why"}"#, ""));
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig);
        assert_eq!(ExecError::Plugin(e).to_string(), "bad; why");
        let e = plugin_error(&out(2, "", ""));
        assert_eq!(
            e.msg,
            "netplugin failed with no error message: exit status 2"
        );
        let e = plugin_error(&out(2, "", "panic: x"));
        assert!(
            e.msg.starts_with("netplugin failed: \"panic: x\""),
            "{}",
            e.msg
        );
        let e = plugin_error(&out(1, "garbage", ""));
        assert!(e.msg.contains("error parsing its diagnostic message"));
    }

    #[test]
    fn env_has_all_six_variables_and_joins_args() {
        let env = CniEnv {
            command: "ADD".into(),
            container_id: "c".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: vec![("A".into(), "1".into()), ("B".into(), "2".into())],
            path: vec!["/a".into(), "/b".into()],
        }
        .vars();
        assert_eq!(env.len(), 6);
        assert!(env.contains(&("CNI_ARGS".into(), "A=1;B=2".into())));
        assert!(env.contains(&("CNI_PATH".into(), "/a:/b".into())));
        let empty = CniEnv::default().vars();
        assert!(empty.iter().all(|(_, v)| v.is_empty()));
    }

    #[test]
    fn finds_plugins_and_refuses_paths_in_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("p"), "").expect("write");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        let paths = vec![PathBuf::from("/nonexistent"), dir.path().to_path_buf()];
        assert_eq!(
            find_in_path("p", &paths).expect("found"),
            dir.path().join("p")
        );
        assert!(matches!(
            find_in_path("d", &paths),
            Err(ExecError::NotFound { .. })
        ));
        assert!(matches!(
            find_in_path("../p", &paths),
            Err(ExecError::InvalidPluginName(_))
        ));
        assert!(matches!(find_in_path("p", &[]), Err(ExecError::NoPaths)));
    }

    #[test]
    fn result_without_version_takes_the_configs() {
        let r = decode_result(br#"{"ips":[]}"#, "0.4.0").expect("decodes");
        assert_eq!(r["cniVersion"], "0.4.0");
        let r = decode_result(br#"{"cniVersion":"1.0.0"}"#, "0.4.0").expect("decodes");
        assert_eq!(r["cniVersion"], "1.0.0");
        assert!(decode_result(b"", "1.0.0").is_err());
        assert!(decode_result(b"[]", "1.0.0").is_err());
    }

    #[test]
    fn runs_a_binary_with_a_clear_environment() {
        // /bin/sh reads its script from stdin.
        let out = run_binary(
            Path::new("/bin/sh"),
            &[("A".into(), "x".into())],
            true,
            b"echo \"$A[$HOME]\"; echo err >&2; exit 3",
            None,
        )
        .expect("runs");
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout_str(), "x[]\n");
        assert_eq!(out.stderr_str(), "err\n");
    }
}
