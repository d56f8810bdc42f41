//! Which node this is, decided as Calico decides it; both calico and calico-ipam use it.

use std::path::Path;

use serde::Deserialize;

pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/calico/nodename";

#[derive(Debug, thiserror::Error)]
pub enum NodenameError {
    /// calico/node writes the file when it starts: until then no pod can be wired.
    #[error(
        "stat {0}: no such file or directory: check that the calico/node container is running \
         and has mounted /var/lib/calico/"
    )]
    FileMissing(String),
    #[error("cannot read nodename file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
}

/// The configuration keys that name the node, in Calico's order of precedence.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodenameConf {
    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default)]
    pub nodename_file: Option<String>,
    #[serde(default)]
    pub nodename_file_optional: bool,
    /// Deprecated.
    #[serde(default)]
    pub hostname: Option<String>,
}

impl NodenameConf {
    /// `nodename`, else the contents of `nodename_file` (as is, not trimmed), else the
    /// deprecated `hostname`, else the machine's host name, lower-cased. Unless the file is
    /// optional, it must exist even when `nodename` is set: its presence is how calico/node
    /// says it runs.
    pub fn resolve(&self) -> Result<String, NodenameError> {
        let file = self
            .nodename_file
            .as_deref()
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_NODENAME_FILE);
        let from_file = match std::fs::read_to_string(Path::new(file)) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !self.nodename_file_optional {
                    return Err(NodenameError::FileMissing(file.to_string()));
                }
                None
            }
            Err(source) => {
                return Err(NodenameError::Unreadable {
                    path: file.to_string(),
                    source,
                })
            }
        };
        let given = |v: &Option<String>| v.clone().filter(|n| !n.is_empty());
        if let Some(name) = given(&self.nodename) {
            return Ok(name);
        }
        if let Some(name) = from_file.filter(|n| !n.is_empty()) {
            return Ok(name);
        }
        if let Some(name) = given(&self.hostname) {
            return Ok(name);
        }
        Ok(nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().to_lowercase())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_the_missing_file_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("nodename");
        let path = file.to_string_lossy().into_owned();
        let mut s = NodenameConf {
            nodename_file: Some(path.clone()),
            ..NodenameConf::default()
        };
        let err = s.resolve().expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!(
                "stat {path}: no such file or directory: check that the calico/node container \
                 is running and has mounted /var/lib/calico/"
            )
        );
        std::fs::write(&file, "node-from-file").expect("write");
        assert_eq!(s.resolve().expect("file"), "node-from-file");
        s.nodename = Some("node-a".into());
        assert_eq!(s.resolve().expect("key"), "node-a");
        std::fs::remove_file(&file).expect("rm");
        s.nodename = None;
        s.nodename_file_optional = true;
        s.hostname = Some("legacy".into());
        assert_eq!(s.resolve().expect("hostname"), "legacy");
    }
}
