//! Running `iptables-save`, `iptables -S` and `iptables-restore` (or the ip6tables ones):
//! the only processes the iptables backend starts, at most three per family and invocation.

use std::io::Write;
use std::process::{Command, Stdio};

use shared::delegate::die_with_parent;

use crate::model::Family;

fn binary(family: Family, what: &str) -> String {
    format!("{}-{what}", super::tool(family))
}

/// `iptables-save -t nat`: the table as text. An error means the family is unusable here
/// (no binary, no kernel support).
pub fn save(family: Family) -> Result<String, String> {
    let bin = binary(family, "save");
    let out = die_with_parent(&mut Command::new(&bin))
        .args(["-t", "nat"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{bin} -t nat: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables -t nat -S <chain>`: one chain's rules, as `iptables-save` prints them. An
/// error means the chain is missing or the family is unusable; the caller cannot tell
/// which, and reads the whole table instead.
///
/// With iptables-nft, reading rules costs time quadratic in the size of what is read (the
/// kernel walks a chain from its start again for each part of a dump): a table holding
/// a container's 300,000 rules takes half a minute to save. One small chain does not.
pub fn list_chain(family: Family, chain: &str) -> Result<String, String> {
    let bin = super::tool(family);
    let out = die_with_parent(&mut Command::new(bin))
        .args(["--wait", "-t", "nat", "-S", chain])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{bin} -t nat -S {chain}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-restore --noflush --wait` fed `script`: all of it applies or none does.
pub fn restore(family: Family, script: &str) -> Result<(), String> {
    let bin = binary(family, "restore");
    // Killed with us: a restore that outlived a killed ADD could commit after the DEL.
    let mut child = die_with_parent(&mut Command::new(&bin))
        .args(["--noflush", "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{bin}: {e}"))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(script.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{bin} --noflush: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if let Some(Err(e)) = written {
        return Err(format!("{bin}: writing rules: {e}"));
    }
    Ok(())
}
