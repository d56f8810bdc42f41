//! Running `iptables-save`, `iptables -S` and `iptables-restore` (or the ip6tables ones):
//! the only processes the iptables backend starts, at most three per family and invocation.

use crate::model::Family;
use crate::tool::{self, ToolError};

fn binary(family: Family, what: &str) -> String {
    format!("{}-{what}", super::tool(family))
}

/// Runs `bin args…`; its stdout when it succeeded.
fn output(bin: &str, args: &[&str], stdin: &[u8]) -> Result<String, ToolError> {
    let out = tool::run(bin, args, stdin)?;
    if !out.status.success() {
        return Err(ToolError::Failed(format!(
            "{bin} {}: {}",
            args.join(" "),
            out.stderr
        )));
    }
    Ok(out.stdout)
}

/// `iptables-save -t nat`: the table as text. An error other than a timeout means the
/// family is unusable here (no binary, no kernel support).
pub fn save(family: Family) -> Result<String, ToolError> {
    output(&binary(family, "save"), &["-t", "nat"], b"")
}

/// `iptables -t nat -S <chain>`: one chain's rules, as `iptables-save` prints them. An
/// error means the chain is missing or the family is unusable; the caller cannot tell
/// which, and reads the whole table instead.
///
/// With iptables-nft, reading rules costs time quadratic in the size of what is read (the
/// kernel walks a chain from its start again for each part of a dump): a table holding
/// a container's 300,000 rules takes half a minute to save. One small chain does not.
pub fn list_chain(family: Family, chain: &str) -> Result<String, ToolError> {
    output(
        super::tool(family),
        &["--wait", "-t", "nat", "-S", chain],
        b"",
    )
}

/// `iptables-restore --noflush --wait` fed `script`: all of it applies or none does.
pub fn restore(family: Family, script: &str) -> Result<(), ToolError> {
    output(
        &binary(family, "restore"),
        &["--noflush", "--wait"],
        script.as_bytes(),
    )
    .map(drop)
}
