//! Which node this is, decided as Calico decides it; both calico and calico-ipam use it.

use std::path::Path;

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

/// The sources, in Calico's order of precedence.
#[derive(Debug, Clone, Default)]
pub struct NodenameSources<'a> {
    pub nodename: Option<&'a str>,
    pub nodename_file: Option<&'a str>,
    pub nodename_file_optional: bool,
    /// Deprecated.
    pub hostname: Option<&'a str>,
}

/// `nodename`, else the contents of `nodename_file` (as is, not trimmed), else the
/// deprecated `hostname`, else the machine's host name, lower-cased. Unless the file is
/// optional, it must exist even when `nodename` is set: its presence is how calico/node says
/// it runs.
pub fn resolve(sources: &NodenameSources) -> Result<String, NodenameError> {
    let file = sources
        .nodename_file
        .filter(|f| !f.is_empty())
        .unwrap_or(DEFAULT_NODENAME_FILE);
    let from_file = match std::fs::read_to_string(Path::new(file)) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !sources.nodename_file_optional {
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
    if let Some(name) = sources.nodename.filter(|n| !n.is_empty()) {
        return Ok(name.to_string());
    }
    if let Some(name) = from_file.filter(|n| !n.is_empty()) {
        return Ok(name);
    }
    if let Some(name) = sources.hostname.filter(|n| !n.is_empty()) {
        return Ok(name.to_string());
    }
    Ok(nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().to_lowercase())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_the_missing_file_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("nodename");
        let path = file.to_string_lossy().into_owned();
        let mut s = NodenameSources {
            nodename_file: Some(&path),
            ..NodenameSources::default()
        };
        let err = resolve(&s).expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!(
                "stat {path}: no such file or directory: check that the calico/node container \
                 is running and has mounted /var/lib/calico/"
            )
        );
        std::fs::write(&file, "node-from-file").expect("write");
        assert_eq!(resolve(&s).expect("file"), "node-from-file");
        s.nodename = Some("node-a");
        assert_eq!(resolve(&s).expect("key"), "node-a");
        std::fs::remove_file(&file).expect("rm");
        s.nodename = None;
        s.nodename_file_optional = true;
        s.hostname = Some("legacy");
        assert_eq!(resolve(&s).expect("hostname"), "legacy");
    }
}
