//! libcni's result cache: one file per attachment at
//! `<cacheDir>/results/<network>-<containerID>-<ifname>`, written after a successful ADD and
//! read back for CHECK, DEL and GC. Same file name, modes and JSON as libcni, so a cache
//! written by containerd or cnitool is read here and the other way round.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::result_as_version;

/// The `kind` of the current cache format.
pub const CACHE_KIND: &str = "cniCacheV1";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache file path requires network name ({network:?}), container ID ({container_id:?}), and interface name ({ifname:?})")]
    IncompletePath {
        network: String,
        container_id: String,
        ifname: String,
    },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("failed to encode the cache entry: {0}")]
    Encode(serde_json::Error),
    #[error("failed to decode cached result in {}: {reason}", .path.display())]
    Decode { path: PathBuf, reason: String },
}

/// The cache file as libcni writes it (`cachedInfo`), fields in libcni's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedInfo {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The conflist bytes, base64 (Go encodes `[]byte` that way).
    #[serde(with = "base64_bytes")]
    pub config: Vec<u8>,
    #[serde(rename = "ifName")]
    pub if_name: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<(String, String)>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        // Go writes `null` for a nil slice.
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// An attachment found in the cache (libcni's `NetworkAttachment`).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAttachment {
    pub container_id: String,
    pub network: String,
    pub ifname: String,
    pub config: Vec<u8>,
    pub netns: String,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
}

/// The cache rooted at one directory (libcni's `cacheDir`, default `/var/lib/cni`).
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    pub fn new(dir: impl Into<PathBuf>) -> ResultCache {
        ResultCache { dir: dir.into() }
    }

    pub fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    /// `<cacheDir>/results/<network>-<containerID>-<ifname>`; all three parts are required.
    pub fn file_path(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<PathBuf, CacheError> {
        if network.is_empty() || container_id.is_empty() || ifname.is_empty() {
            return Err(CacheError::IncompletePath {
                network: network.into(),
                container_id: container_id.into(),
                ifname: ifname.into(),
            });
        }
        Ok(self
            .results_dir()
            .join(format!("{network}-{container_id}-{ifname}")))
    }

    /// Stores the final ADD result (directory 0700, file 0600, as libcni).
    pub fn write(&self, info: &CachedInfo) -> Result<PathBuf, CacheError> {
        let path = self.file_path(&info.network_name, &info.container_id, &info.if_name)?;
        let bytes = serde_json::to_vec(info).map_err(CacheError::Encode)?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        let dir = self.results_dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(&bytes).map_err(io_err(&path))?;
        Ok(path)
    }

    /// The cached result of an attachment converted to `version`, `Ok(None)` when there is
    /// no cache file (libcni ignores read errors), an error when it is there but unusable.
    /// A file that is not a `cniCacheV1` entry is read as the legacy format: the bare result.
    pub fn result(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        version: &str,
    ) -> Result<Option<Value>, CacheError> {
        let path = self.file_path(network, container_id, ifname)?;
        let Ok(bytes) = fs::read(&path) else {
            return Ok(None);
        };
        let decode = |reason: String| CacheError::Decode {
            path: path.clone(),
            reason,
        };
        let raw = match serde_json::from_slice::<CachedInfo>(&bytes) {
            Ok(info) if info.kind == CACHE_KIND => info
                .result
                .ok_or_else(|| decode("cache entry has no result".to_string()))?,
            _ => serde_json::from_slice::<Value>(&bytes).map_err(|e| decode(e.to_string()))?,
        };
        let has_version = raw
            .as_object()
            .and_then(|m| m.get("cniVersion"))
            .and_then(Value::as_str)
            .is_some();
        if !has_version {
            return Err(decode("result has no cniVersion".to_string()));
        }
        Ok(Some(result_as_version(&raw, version)))
    }

    /// The raw cache entry of an attachment, if it is a readable `cniCacheV1` file.
    pub fn entry(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CachedInfo>, CacheError> {
        let path = self.file_path(network, container_id, ifname)?;
        let Ok(bytes) = fs::read(&path) else {
            return Ok(None);
        };
        match serde_json::from_slice::<CachedInfo>(&bytes) {
            Ok(info) if info.kind == CACHE_KIND => Ok(Some(info)),
            Ok(info) => Err(CacheError::Decode {
                path,
                reason: format!("wrong kind: {}", info.kind),
            }),
            Err(e) => Err(CacheError::Decode {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Removes an attachment's cache file; a missing file or incomplete key is not an error
    /// (libcni ignores both).
    pub fn delete(&self, network: &str, container_id: &str, ifname: &str) {
        if let Ok(path) = self.file_path(network, container_id, ifname) {
            let _ = fs::remove_file(path);
        }
    }

    /// Every readable `cniCacheV1` attachment, in file-name order, optionally only those of
    /// one container (libcni's `GetCachedAttachments`). A missing results directory holds no
    /// attachments.
    pub fn attachments(
        &self,
        container_id: Option<&str>,
    ) -> Result<Vec<CachedAttachment>, CacheError> {
        let dir = self.results_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CacheError::Io { path: dir, source }),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(id) = container_id.filter(|id| !id.is_empty()) {
                let part = format!("-{id}-");
                match name.find(&part) {
                    Some(pos) if pos > 0 && pos + part.len() < name.len() => {}
                    _ => continue,
                }
            }
            let Ok(bytes) = fs::read(dir.join(&name)) else {
                continue;
            };
            let Ok(info) = serde_json::from_slice::<CachedInfo>(&bytes) else {
                continue;
            };
            if info.kind != CACHE_KIND
                || info.if_name.is_empty()
                || info.network_name.is_empty()
                || container_id.is_some_and(|id| !id.is_empty() && id != info.container_id)
            {
                continue;
            }
            out.push(CachedAttachment {
                container_id: info.container_id,
                network: info.network_name,
                ifname: info.if_name,
                config: info.config,
                netns: info.netns,
                cni_args: info.cni_args,
                capability_args: info.capability_args,
            });
        }
        Ok(out)
    }
}

/// Base64 of bytes as libcni stores the conflist; exposed for tests that inspect files.
pub fn encode_config(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn info(id: &str) -> CachedInfo {
        CachedInfo {
            kind: CACHE_KIND.into(),
            container_id: id.into(),
            config: br#"{"name":"net"}"#.to_vec(),
            if_name: "eth0".into(),
            network_name: "net".into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![("K8S_POD_NAME".into(), "p".into())],
            capability_args: json!({"portMappings":[]})
                .as_object()
                .cloned()
                .expect("object"),
            result: Some(
                json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]}),
            ),
        }
    }

    #[test]
    fn writes_libcnis_file_at_libcnis_path_with_libcnis_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ResultCache::new(dir.path().join("cache"));
        let path = cache.write(&info("c1")).expect("write");
        assert_eq!(path, dir.path().join("cache/results/net-c1-eth0"));
        let file_mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        let dir_mode = fs::metadata(cache.results_dir())
            .expect("stat")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(file_mode, 0o600);
        assert_eq!(dir_mode & 0o077, 0);
        let text = fs::read_to_string(&path).expect("read");
        let v: Value = serde_json::from_str(&text).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "kind",
                "containerId",
                "config",
                "ifName",
                "networkName",
                "netns",
                "cniArgs",
                "capabilityArgs",
                "result"
            ]
        );
        assert_eq!(v["kind"], "cniCacheV1");
        assert_eq!(v["config"], encode_config(br#"{"name":"net"}"#));
        assert_eq!(v["cniArgs"], json!([["K8S_POD_NAME", "p"]]));
    }

    #[test]
    fn omits_empty_optional_fields_like_go() {
        let mut i = info("c1");
        i.netns.clear();
        i.cni_args.clear();
        i.capability_args.clear();
        let v = serde_json::to_value(&i).expect("json");
        assert!(v.get("netns").is_none());
        assert!(v.get("cniArgs").is_none());
        assert!(v.get("capabilityArgs").is_none());
    }

    #[test]
    fn reads_results_converted_and_legacy_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ResultCache::new(dir.path());
        assert_eq!(
            cache.result("net", "c1", "eth0", "1.0.0").expect("ok"),
            None
        );
        cache.write(&info("c1")).expect("write");
        let r = cache
            .result("net", "c1", "eth0", "1.0.0")
            .expect("ok")
            .expect("some");
        assert_eq!(
            r,
            json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]})
        );
        fs::write(
            cache.results_dir().join("net-c2-eth0"),
            r#"{"cniVersion":"0.4.0","ips":[]}"#,
        )
        .expect("legacy");
        assert!(cache
            .result("net", "c2", "eth0", "0.4.0")
            .expect("ok")
            .is_some());
        fs::write(cache.results_dir().join("net-c3-eth0"), "garbage").expect("write");
        assert!(cache.result("net", "c3", "eth0", "0.4.0").is_err());
        assert!(cache.file_path("net", "", "eth0").is_err());
    }

    #[test]
    fn lists_attachments_by_container() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ResultCache::new(dir.path());
        assert!(cache.attachments(None).expect("ok").is_empty());
        cache.write(&info("c1")).expect("write");
        cache.write(&info("c2")).expect("write");
        fs::write(cache.results_dir().join("junk"), "x").expect("write");
        let all = cache.attachments(None).expect("ok");
        assert_eq!(
            all.iter()
                .map(|a| a.container_id.as_str())
                .collect::<Vec<_>>(),
            ["c1", "c2"]
        );
        assert_eq!(all[0].cni_args, [("K8S_POD_NAME".into(), "p".into())]);
        let one = cache.attachments(Some("c2")).expect("ok");
        assert_eq!(one.len(), 1);
        cache.delete("net", "c1", "eth0");
        cache.delete("net", "c1", "eth0");
        assert_eq!(cache.attachments(None).expect("ok").len(), 1);
    }
}
