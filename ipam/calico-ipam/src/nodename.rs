//! Which node this is, decided as Calico decides it; both calico and calico-ipam use it.

use std::path::Path;

use serde::Deserialize;

pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/calico/nodename";

#[derive(Debug, thiserror::Error)]
pub enum NodenameError {
    /// calico/node writes the file when it starts: until then no pod can be wired.
    #[error(
        "stat {path}: no such file or directory: check that the calico/node container is \
         running and has mounted /var/lib/calico/"
    )]
    FileMissing {
        path: String,
        /// `nodename` was set too: the file is wanted only as a sign that calico/node runs.
        nodename_set: bool,
    },
    #[error("cannot read nodename file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    /// The name becomes a datastore key (`/calico/ipam/v2/host/<node>/...`, an affinity's
    /// name): a `/` or a newline in it would make keys of other objects.
    #[error(
        "node name {shown} from {origin} is not a valid node name: use letters, digits, '-', \
         '.' and '_' only (at most 253), as Kubernetes and calico/node name nodes"
    )]
    Invalid { shown: String, origin: String },
}

/// What to do about a missing nodename file: with `nodename` set, the file is only required
/// as the sign that calico/node runs, and `nodename_file_optional` drops that requirement.
pub fn missing_file_hint(nodename_set: bool) -> &'static str {
    if nodename_set {
        "nodename is set in the network configuration, but the nodename file is still \
         required as the sign that calico/node runs: start calico/node, or set \
         \"nodename_file_optional\": true to use the configured nodename without it"
    } else {
        "calico/node writes this file when it starts; or set nodename in the network \
         configuration"
    }
}

/// The longest node name: a DNS subdomain, as Kubernetes allows.
const MAX_NODENAME: usize = 253;
/// The largest nodename file read: a name is at most 253 bytes.
const MAX_NODENAME_FILE: u64 = 4096;

/// Refuses a name that cannot be a datastore key segment; `origin` says where it came from.
fn validated(name: String, origin: impl FnOnce() -> String) -> Result<String, NodenameError> {
    let ok = name.len() <= MAX_NODENAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !matches!(name.as_str(), "." | "..");
    if ok {
        Ok(name)
    } else {
        Err(NodenameError::Invalid {
            shown: format!("{:?}", shared::redact::excerpt(&name, 80)),
            origin: origin(),
        })
    }
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
        self.resolve_with_origin().map(|(name, _)| name)
    }

    /// [`NodenameConf::resolve`], and where the name came from (for messages about it).
    pub fn resolve_with_origin(&self) -> Result<(String, String), NodenameError> {
        let file = self
            .nodename_file
            .as_deref()
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_NODENAME_FILE);
        let from_file = match shared::file::read_regular_text(Path::new(file), MAX_NODENAME_FILE) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !self.nodename_file_optional {
                    return Err(NodenameError::FileMissing {
                        path: file.to_string(),
                        nodename_set: self.nodename.as_deref().is_some_and(|n| !n.is_empty()),
                    });
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
        let (name, origin) = if let Some(name) = given(&self.nodename) {
            (name, "the network configuration's \"nodename\"".to_string())
        } else if let Some(name) = from_file.filter(|n| !n.is_empty()) {
            (name, format!("nodename_file {file}"))
        } else if let Some(name) = given(&self.hostname) {
            (name, "the network configuration's \"hostname\"".to_string())
        } else {
            let host = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            (host, "the machine's host name".to_string())
        };
        let name = validated(name, || origin.clone())?;
        Ok((name, origin))
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

    #[test]
    fn a_name_that_would_nest_datastore_keys_is_refused_saying_where_it_came_from() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("nodename");
        std::fs::write(&file, "a/b\nc").expect("write");
        let s = NodenameConf {
            nodename_file: Some(file.to_string_lossy().into_owned()),
            ..NodenameConf::default()
        };
        let msg = s.resolve().expect_err("invalid").to_string();
        assert!(msg.contains(r#""a/b\nc""#), "{msg}");
        assert!(
            msg.contains(&format!("nodename_file {}", file.display())),
            "{msg}"
        );
        for bad in ["..", "node one", &"n".repeat(254)] {
            let s = NodenameConf {
                nodename: Some(bad.to_string()),
                nodename_file_optional: true,
                ..NodenameConf::default()
            };
            assert!(s.resolve().is_err(), "{bad:?} accepted");
        }
        // A FIFO in place of the file is refused at once instead of blocking.
        std::fs::remove_file(&file).expect("rm");
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let msg = s_file(&file).resolve().expect_err("a FIFO").to_string();
        assert!(msg.contains("a FIFO"), "{msg}");
    }

    fn s_file(file: &Path) -> NodenameConf {
        NodenameConf {
            nodename_file: Some(file.to_string_lossy().into_owned()),
            ..NodenameConf::default()
        }
    }
}
