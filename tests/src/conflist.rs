//! Network configuration lists, loaded the way libcni loads them (`libcni/conf.go`).
//!
//! Plugins are kept as raw JSON objects: a runtime must pass every key it does not know on to
//! the plugin untouched, so the only fields interpreted here are the ones libcni interprets
//! (`type`, `capabilities`, `name`).

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::version::{self, BadVersion};

/// A conflist could not be read, parsed or found. Messages follow libcni's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("error reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("error parsing configuration list: {0}")]
    Json(serde_json::Error),
    #[error("error parsing configuration list: {0}")]
    Invalid(String),
    #[error("error parsing configuration list: invalid cniVersions entry: {0}")]
    Version(#[from] BadVersion),
    #[error("failed to parse plugin config {index}: {reason}")]
    Plugin { index: usize, reason: String },
    #[error("error parsing configuration: {0}")]
    SingleConf(String),
    #[error("no net configurations found in {0}")]
    NoConfigsFound(PathBuf),
    #[error("no net configuration with name \"{name}\" in {dir}")]
    NotFound { dir: PathBuf, name: String },
}

/// One plugin of a list: its `type` and the whole object as written.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    pub plugin_type: String,
    pub raw: Map<String, Value>,
}

impl PluginConf {
    /// Builds a plugin from its JSON object; `type` is required, `capabilities` must map names
    /// to booleans (libcni decodes it into `map[string]bool` and fails otherwise).
    pub fn from_value(value: Value) -> Result<PluginConf, String> {
        let Value::Object(raw) = value else {
            return Err("plugin config is not a JSON object".to_string());
        };
        let plugin_type = match raw.get("type") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            Some(Value::String(_)) | None => return Err("missing 'type'".to_string()),
            Some(other) => return Err(format!("'type' must be a string, got {other}")),
        };
        match raw.get("capabilities") {
            None | Some(Value::Null) => {}
            Some(Value::Object(caps)) => {
                if let Some((k, _)) = caps.iter().find(|(_, v)| !v.is_boolean()) {
                    return Err(format!("capability {k:?} must be true or false"));
                }
            }
            Some(_) => return Err("'capabilities' must be an object".to_string()),
        }
        Ok(PluginConf { plugin_type, raw })
    }

    /// The plugin's own `name` key, if any (libcni names a failing plugin with it).
    pub fn name(&self) -> Option<&str> {
        self.raw
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
    }

    /// Capabilities the plugin declares `true`, in the order written.
    pub fn enabled_capabilities(&self) -> impl Iterator<Item = &str> {
        self.raw
            .get("capabilities")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|caps| caps.iter())
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
    }
}

/// A network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub name: String,
    /// The version chosen for this list (see [`select_version`]); every plugin gets it.
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<PluginConf>,
    /// The bytes the list was loaded from; the result cache stores them.
    pub bytes: Vec<u8>,
}

impl ConfList {
    /// Parses a conflist (`plugins` key). Like libcni, `name` is required and `plugins` must
    /// be a non-empty list.
    pub fn from_bytes(bytes: &[u8]) -> Result<ConfList, ConfError> {
        let raw: Map<String, Value> = serde_json::from_slice(bytes).map_err(ConfError::Json)?;
        let name = match raw.get("name") {
            Some(Value::String(n)) => n.clone(),
            Some(other) => return Err(ConfError::Invalid(format!("invalid name type {other}"))),
            None => return Err(ConfError::Invalid("no name".to_string())),
        };
        let cni_version = match raw.get("cniVersion") {
            None => String::new(),
            Some(Value::String(v)) => v.clone(),
            Some(other) => {
                return Err(ConfError::Invalid(format!(
                    "invalid cniVersion type {other}"
                )))
            }
        };
        let cni_versions = match raw.get("cniVersions") {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            ConfError::Invalid(format!("invalid type for cniVersions index {i}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(ConfError::Invalid(
                    "invalid type for cniVersions".to_string(),
                ))
            }
        };
        let cni_version = select_version(&cni_version, cni_versions.as_deref())?;
        let disable_check = read_bool(&raw, "disableCheck")?;
        let disable_gc = read_bool(&raw, "disableGC")?;

        let plugins = match raw.get("plugins") {
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(ConfError::Invalid("no plugins in list".to_string()))
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, p)| {
                    PluginConf::from_value(p.clone())
                        .map_err(|reason| ConfError::Plugin { index, reason })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(ConfError::Invalid("invalid 'plugins' type".to_string())),
            // libcni would look for plugins in `<dir>/<name>/*.conf`; inline lists are all
            // this suite uses, so a list without plugins is refused outright.
            None => return Err(ConfError::Invalid("no plugins in list".to_string())),
        };

        Ok(ConfList {
            name,
            cni_version,
            disable_check,
            disable_gc,
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// Reads a `.conflist` file.
    pub fn from_file(path: &Path) -> Result<ConfList, ConfError> {
        ConfList::from_bytes(&read(path)?)
    }

    /// Parses a single-plugin `.conf` and wraps it in a one-plugin list, as libcni's
    /// `ConfListFromConf` does: the list gets the config's `name` and `cniVersion`, and its
    /// bytes are the newly built list, not the original file.
    pub fn from_single_conf_bytes(bytes: &[u8]) -> Result<ConfList, ConfError> {
        let raw: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| ConfError::SingleConf(e.to_string()))?;
        PluginConf::from_value(Value::Object(raw.clone())).map_err(ConfError::SingleConf)?;
        let field = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let list = serde_json::json!({
            "cniVersion": field("cniVersion"),
            "name": field("name"),
            "plugins": [Value::Object(raw.clone())],
        });
        let list_bytes = serde_json::to_vec(&list).map_err(ConfError::Json)?;
        ConfList::from_bytes(&list_bytes)
    }

    /// Accepts either form: a conflist when the object has `plugins`, else a single config.
    pub fn from_any_bytes(bytes: &[u8]) -> Result<ConfList, ConfError> {
        let raw: Map<String, Value> = serde_json::from_slice(bytes).map_err(ConfError::Json)?;
        if raw.contains_key("plugins") {
            ConfList::from_bytes(bytes)
        } else {
            ConfList::from_single_conf_bytes(bytes)
        }
    }

    /// Finds the network called `name` in `dir` like libcni's `LoadConfList`: every
    /// `*.conflist` in name order first (any unparsable one is an error), then the `*.conf`
    /// and `*.json` single configs, upgraded to a list.
    pub fn load(dir: &Path, name: &str) -> Result<ConfList, ConfError> {
        let lists = conf_files(dir, &["conflist"])?;
        for file in &lists {
            let list = ConfList::from_file(file)?;
            if list.name == name {
                return Ok(list);
            }
        }
        let singles = conf_files(dir, &["conf", "json"])?;
        if singles.is_empty() {
            // With lists present the more helpful message is "not found", as in libcni.
            return Err(if lists.is_empty() {
                ConfError::NoConfigsFound(dir.to_path_buf())
            } else {
                ConfError::NotFound {
                    dir: dir.to_path_buf(),
                    name: name.to_string(),
                }
            });
        }
        for file in &singles {
            let bytes = read(file)?;
            let raw: Map<String, Value> =
                serde_json::from_slice(&bytes).map_err(|e| ConfError::SingleConf(e.to_string()))?;
            if raw.get("name").and_then(Value::as_str) == Some(name) {
                return ConfList::from_single_conf_bytes(&bytes);
            }
        }
        Err(ConfError::NotFound {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        })
    }
}

/// libcni's version choice: every `cniVersions` entry not newer than what the runner
/// implements, plus `cniVersion` (also only if not newer), and the highest wins. Without
/// `cniVersions` the `cniVersion` is taken as written.
pub fn select_version(
    cni_version: &str,
    cni_versions: Option<&[String]>,
) -> Result<String, BadVersion> {
    let Some(list) = cni_versions else {
        return Ok(cni_version.to_string());
    };
    let mut candidates = Vec::new();
    for v in list {
        if version::compare(v, version::IMPLEMENTED)? != Ordering::Greater {
            candidates.push(v.clone());
        }
    }
    if !cni_version.is_empty()
        && version::compare(cni_version, version::IMPLEMENTED)? != Ordering::Greater
    {
        candidates.push(cni_version.to_string());
    }
    let mut best: Option<String> = None;
    for c in candidates {
        // Every candidate parsed above, so comparing cannot fail here.
        let better = match &best {
            None => true,
            Some(b) => version::compare(&c, b)? == Ordering::Greater,
        };
        if better {
            best = Some(c);
        }
    }
    Ok(best.unwrap_or_else(|| cni_version.to_string()))
}

/// Booleans in a conflist may also be the strings "true"/"false" (any case), as in libcni.
fn read_bool(raw: &Map<String, Value>, key: &str) -> Result<bool, ConfError> {
    match raw.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.to_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(ConfError::Invalid(format!(
                "invalid value {other:?} for {key}"
            ))),
        },
        Some(other) => Err(ConfError::Invalid(format!(
            "invalid type {other} for {key}"
        ))),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfError> {
    fs::read(path).map_err(|source| ConfError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Regular files of `dir` with one of `extensions`, sorted by name. A missing directory holds
/// no files (libcni's `ConfFiles`).
fn conf_files(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>, ConfError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if extensions.contains(&ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(json: &str) -> Result<ConfList, ConfError> {
        ConfList::from_bytes(json.as_bytes())
    }

    #[test]
    fn loads_a_conflist_and_keeps_unknown_keys() {
        let l = list(
            r#"{"cniVersion":"1.0.0","name":"net","disableCheck":"TRUE",
                "plugins":[{"type":"calico","mtu":1440,"capabilities":{"portMappings":true}}]}"#,
        )
        .expect("loads");
        assert_eq!(l.name, "net");
        assert_eq!(l.cni_version, "1.0.0");
        assert!(l.disable_check);
        assert!(!l.disable_gc);
        assert_eq!(l.plugins[0].plugin_type, "calico");
        assert_eq!(l.plugins[0].raw["mtu"], 1440);
        assert_eq!(
            l.plugins[0].enabled_capabilities().collect::<Vec<_>>(),
            ["portMappings"]
        );
    }

    #[test]
    fn rejects_broken_lists() {
        assert!(list(r#"{"plugins":[{"type":"x"}]}"#).is_err());
        assert!(list(r#"{"name":"n","plugins":[]}"#).is_err());
        assert!(list(r#"{"name":"n"}"#).is_err());
        assert!(list(r#"{"name":"n","plugins":[{"mtu":1}]}"#).is_err());
        assert!(list(r#"{"name":"n","plugins":[{"type":"x","capabilities":{"a":1}}]}"#).is_err());
        assert!(list(r#"{"name":"n","disableCheck":"maybe","plugins":[{"type":"x"}]}"#).is_err());
    }

    #[test]
    fn version_selection_takes_the_highest_supported() {
        let v = |cv: &str, cvs: &[&str]| {
            let cvs: Vec<String> = cvs.iter().map(|s| s.to_string()).collect();
            select_version(cv, Some(&cvs)).expect("valid")
        };
        assert_eq!(v("0.4.0", &["1.0.0", "1.1.0", "2.0.0"]), "1.1.0");
        assert_eq!(v("1.0.0", &["0.3.1"]), "1.0.0");
        assert_eq!(v("", &["0.4.0", "0.3.1"]), "0.4.0");
        assert_eq!(v("9.0.0", &["1.0.0"]), "1.0.0");
        assert_eq!(v("9.0.0", &[]), "9.0.0");
        assert_eq!(select_version("0.3.1", None).expect("valid"), "0.3.1");
        assert!(select_version("1.0.0", Some(&["x.y".to_string()])).is_err());
        let l = list(r#"{"cniVersion":"0.4.0","cniVersions":["1.1.0","1.0.0"],"name":"n","plugins":[{"type":"x"}]}"#)
            .expect("loads");
        assert_eq!(l.cni_version, "1.1.0");
    }

    #[test]
    fn a_single_conf_becomes_a_one_plugin_list() {
        let l = ConfList::from_any_bytes(
            br#"{"cniVersion":"0.3.1","name":"lo","type":"loopback","x":1}"#,
        )
        .expect("loads");
        assert_eq!(l.name, "lo");
        assert_eq!(l.cni_version, "0.3.1");
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0].raw["x"], 1);
        let bytes: Value = serde_json::from_slice(&l.bytes).expect("json");
        assert_eq!(bytes["plugins"][0]["type"], "loopback");
    }

    #[test]
    fn load_searches_conflists_then_single_confs() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            ConfList::load(dir.path(), "a"),
            Err(ConfError::NoConfigsFound(_))
        ));
        fs::write(
            dir.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"x"}]}"#,
        )
        .expect("write");
        fs::write(
            dir.path().join("20-b.conf"),
            r#"{"cniVersion":"1.0.0","name":"b","type":"y"}"#,
        )
        .expect("write");
        fs::create_dir(dir.path().join("c.conflist")).expect("dir is skipped");
        assert_eq!(ConfList::load(dir.path(), "a").expect("a").name, "a");
        let b = ConfList::load(dir.path(), "b").expect("b");
        assert_eq!(b.plugins[0].plugin_type, "y");
        assert!(matches!(
            ConfList::load(dir.path(), "zz"),
            Err(ConfError::NotFound { .. })
        ));
    }
}
