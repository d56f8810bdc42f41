//! Delegation to another plugin (IPAM): find it on CNI_PATH, run it with our own environment
//! (only CNI_COMMAND replaced) and the whole config we were given, read its answer.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use crate::child::{self, ChildError};
use crate::deadline;

use crate::error::{Error, Result};
use crate::spec::env::Command;
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version::Version;

/// Finds `name` in the CNI_PATH directories, first match wins.
pub fn find_plugin(name: &str, path: &[PathBuf]) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::InvalidPluginName(name.to_string()));
    }
    path.iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::PluginNotFound {
            name: name.to_string(),
            path: path.iter().map(|p| p.display().to_string()).collect(),
        })
}

/// Variables to set for the delegated plugin on top of our own environment.
pub type ExtraEnv<'a> = &'a [(&'a str, &'a str)];

/// ADD through the delegated plugin; its result, read in `version` if it names none.
pub fn add(
    name: &str,
    path: &[PathBuf],
    env: ExtraEnv,
    stdin: &[u8],
    version: Version,
) -> Result<CniResult> {
    let out = exec(name, path, Command::Add, env, stdin)?;
    CniResult::from_slice(&out, version).map_err(|e| Error::PluginBadOutput {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// DEL, CHECK, GC or STATUS through the delegated plugin; these print nothing on success.
pub fn call(
    name: &str,
    path: &[PathBuf],
    command: Command,
    env: ExtraEnv,
    stdin: &[u8],
) -> Result<()> {
    exec(name, path, command, env, stdin).map(|_| ())
}

/// How often to retry when the plugin binary is being replaced under us ("text file busy"),
/// as libcni does during upgrades.
const BUSY_RETRIES: u32 = 5;
const BUSY_WAIT: Duration = Duration::from_millis(200);

fn exec(
    name: &str,
    path: &[PathBuf],
    command: Command,
    env: ExtraEnv,
    stdin: &[u8],
) -> Result<Vec<u8>> {
    let binary = find_plugin(name, path)?;
    let mut attempt = 0;
    loop {
        match run_once(&binary, command, env, stdin) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < BUSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(deadline::capped(BUSY_WAIT));
            }
            Err(ChildError::TimedOut(waited)) => {
                return Err(Error::PluginTimedOut {
                    name: name.to_string(),
                    waited,
                })
            }
            Err(ChildError::Io(source)) => {
                return Err(Error::PluginExec {
                    name: name.to_string(),
                    source,
                })
            }
            Ok((status, stdout)) => {
                if status.success() {
                    return Ok(stdout);
                }
                if let Some(err) = CniError::from_json(&stdout) {
                    return Err(Error::Delegated(err));
                }
                return Err(Error::PluginFailedSilently {
                    name: name.to_string(),
                    status: if stdout.is_empty() {
                        status.to_string()
                    } else {
                        format!("{status}, output: {}", String::from_utf8_lossy(&stdout))
                    },
                });
            }
        }
    }
}

/// Makes the process `cmd` starts die with ours: the kernel sends it SIGKILL when the thread
/// that started it ends (`PR_SET_PDEATHSIG`), and it gives up before exec if we are already
/// gone.
///
/// Why: a plugin killed with kill -9 (a runtime's timeout, an OOM kill) must not leave a
/// child that goes on with the job. The runtime sees the plugin fail and sends DEL; a child
/// the scheduler held back would then allocate an address (IPAM) or commit NAT rules
/// (iptables-restore, nft) after that DEL, for a pod that no longer exists, and nothing
/// would ever remove them. Killed instead, the child stops wherever it is, and every step of
/// the suite is safe to interrupt. The thread that starts a child here always waits for it,
/// so the signal never comes early.
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Process) -> &mut Process {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes two system calls (prctl, getppid),
    // allocates nothing, and its error is a raw OS error.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
}

/// Runs the plugin once, within the invocation's deadline, which it inherits. Its stderr
/// is ours, so its logs reach the runtime.
fn run_once(
    binary: &Path,
    command: Command,
    env: ExtraEnv,
    stdin: &[u8],
) -> Result<(std::process::ExitStatus, Vec<u8>), ChildError> {
    let mut cmd = Process::new(binary);
    die_with_parent(&mut cmd)
        .envs(env.iter().copied())
        .env("CNI_COMMAND", command.as_str())
        .env(deadline::ENV, deadline::to_env());
    let done = child::run(&mut cmd, stdin, false)?;
    Ok((done.status, done.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn finds_the_first_match_on_the_path_and_refuses_paths_as_names() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        script(b.path(), "ipam", "true");
        let path = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            find_plugin("ipam", &path).expect("found"),
            b.path().join("ipam")
        );
        assert!(matches!(
            find_plugin("nope", &path),
            Err(Error::PluginNotFound { .. })
        ));
        assert!(matches!(
            find_plugin("../bin/sh", &path),
            Err(Error::InvalidPluginName(_))
        ));
    }

    #[test]
    fn passes_the_command_and_extra_env_and_reads_the_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Echo stdin back inside a result so the test sees what the plugin was given.
        script(
            dir.path(),
            "ipam",
            r#"[ "$CNI_COMMAND" = ADD ] || exit 3
[ "$CNI_ARGS" = "IgnoreUnknown=1;IP=10.9.0.7" ] || exit 4
cat >/dev/null
echo '{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.9.0.7/24"}]}'"#,
        );
        let path = vec![dir.path().to_path_buf()];
        let r = add(
            "ipam",
            &path,
            &[("CNI_ARGS", "IgnoreUnknown=1;IP=10.9.0.7")],
            b"{}",
            Version::V1_0_0,
        )
        .expect("result");
        assert_eq!(r.ips[0].address.to_string(), "10.9.0.7/24");
    }

    #[test]
    fn passes_the_plugins_error_through_with_its_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        script(
            dir.path(),
            "ipam",
            r#"echo '{"code": 105, "msg": "no free address", "details": "pool full"}'; exit 1"#,
        );
        script(dir.path(), "silent", "exit 2");
        let path = vec![dir.path().to_path_buf()];
        match call("ipam", &path, Command::Del, &[], b"{}") {
            Err(Error::Delegated(e)) => {
                assert_eq!(e.code.as_u32(), 105);
                assert_eq!(e.msg, "no free address");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            call("silent", &path, Command::Del, &[], b"{}"),
            Err(Error::PluginFailedSilently { .. })
        ));
    }
}
