//! Running the firewall tools (`iptables-restore`, `iptables`, `iptables-save`, `nft`):
//! within the invocation's deadline, and killed with us.

use std::process::{Command, ExitStatus};
use std::time::Duration;

use shared::child::{self, ChildError};
use shared::delegate::die_with_parent;

/// Why a tool gave no answer to use.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// It could not be started (not installed, no permission…).
    #[error("{tool}: {source}")]
    Start {
        tool: String,
        source: std::io::Error,
    },
    /// Still running when the deadline passed: killed.
    #[error(
        "{tool} was killed after {} ms: the invocation's deadline passed while it was still \
         running",
        .after.as_millis()
    )]
    TimedOut { tool: String, after: Duration },
    /// It ran and failed, or the in-process path failed: the message says how.
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    pub fn not_installed(&self) -> bool {
        matches!(self, ToolError::Start { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl From<String> for ToolError {
    fn from(msg: String) -> ToolError {
        ToolError::Failed(msg)
    }
}

/// What a tool that ran to its end printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tool args…` fed `stdin`, capturing both outputs.
pub fn run(tool: &str, args: &[&str], stdin: &[u8]) -> Result<Output, ToolError> {
    let mut cmd = Command::new(tool);
    // Killed with us: a restore (or nft transaction) that outlived a killed ADD could
    // commit after the DEL that followed it.
    die_with_parent(&mut cmd).args(args);
    let named = || format!("{tool} {}", args.join(" ")).trim_end().to_string();
    match child::run(&mut cmd, stdin, true) {
        Ok(done) => Ok(Output {
            status: done.status,
            stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&done.stderr).trim().to_string(),
        }),
        Err(ChildError::TimedOut(after)) => Err(ToolError::TimedOut {
            tool: named(),
            after,
        }),
        Err(ChildError::Io(source)) => Err(ToolError::Start {
            tool: tool.to_string(),
            source,
        }),
    }
}
