//! Driving a `host-local` IPAM binary by hand, for black-box tests that run the same
//! scenario against our plugin and against the reference one: configs, one call per verb,
//! decoded outcomes, and snapshots of the on-disk store (names and contents).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::fixtures::run_plugin;

/// The versions our host-local speaks (0.1.0/0.2.0 are the reference's alone).
pub const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The versions the reference 1.1.1 binary speaks out of [`VERSIONS`]: it stops at 1.0.0.
pub const REFERENCE_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The network name every helper config uses, so the store is `<dataDir>/mynet`.
pub const NET: &str = "mynet";

/// One host-local binary, called with a given CNI_NETNS (host-local never enters it, but
/// ADD and CHECK need the variable).
#[derive(Debug, Clone)]
pub struct HostLocal {
    pub binary: PathBuf,
    pub netns: String,
}

/// How one call ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.exit == Some(0)
    }

    /// Asserts the call failed as a CNI plugin must — exit 1 and an error object on stdout
    /// with `code` and a non-empty message — and returns the message. `what` names the
    /// case in the panic message.
    pub fn refused(&self, code: u64, what: &str) -> String {
        assert_eq!(self.exit, Some(1), "{what}: {}", self.describe());
        let json = self
            .json
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no error object: {}", self.describe()));
        assert_eq!(json["code"], code, "{what}: {}", self.describe());
        let msg = json["msg"].as_str().unwrap_or_default().to_string();
        assert!(
            !msg.is_empty(),
            "{what}: empty message: {}",
            self.describe()
        );
        msg
    }

    /// The error code, if this is a failure with a CNI error object.
    pub fn code(&self) -> Option<u64> {
        if self.ok() {
            return None;
        }
        self.json.as_ref().and_then(|j| j["code"].as_u64())
    }

    /// The error message, if this is a failure with a CNI error object.
    pub fn msg(&self) -> Option<&str> {
        if self.ok() {
            return None;
        }
        self.json.as_ref().and_then(|j| j["msg"].as_str())
    }

    /// The result with the reference's empty `"dns": {}` taken out, if this is a success.
    pub fn result(&self) -> Option<Value> {
        if !self.ok() {
            return None;
        }
        self.json.clone().map(normalize)
    }

    /// The addresses of a successful ADD (`ips[].address`), in order.
    pub fn addresses(&self) -> Vec<String> {
        self.result()
            .and_then(|r| {
                r["ips"].as_array().map(|ips| {
                    ips.iter()
                        .filter_map(|ip| ip["address"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// One line describing the outcome, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}, stdout {:?}, stderr {:?}",
            self.exit,
            self.stdout,
            self.stderr.trim()
        )
    }
}

/// Drops an empty `dns` object: the reference always prints `"dns": {}`, ours may omit it.
pub fn normalize(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        if obj
            .get("dns")
            .is_some_and(|d| d.as_object().is_some_and(|o| o.is_empty()))
        {
            obj.remove("dns");
        }
    }
    v
}

/// `{"cniVersion": version, "name": "mynet", "type": "host-local", "ipam": ipam}` with
/// `ipam.type` and `ipam.dataDir` filled in.
pub fn conf(version: &str, data_dir: &Path, mut ipam: Value) -> Value {
    if let Some(obj) = ipam.as_object_mut() {
        obj.insert("type".into(), json!("host-local"));
        obj.entry("dataDir").or_insert(json!(data_dir));
    }
    json!({"cniVersion": version, "name": NET, "type": "host-local", "ipam": ipam})
}

/// `ranges` of one range set per subnet list, e.g. `ranges(&[&["10.1.2.0/24"]])`.
pub fn ranges(sets: &[&[&str]]) -> Value {
    Value::Array(
        sets.iter()
            .map(|set| Value::Array(set.iter().map(|s| json!({"subnet": s})).collect()))
            .collect(),
    )
}

/// What a reservation file holds: `<id>\r\n<ifname>`, no trailing newline.
pub fn reservation(id: &str, ifname: &str) -> Vec<u8> {
    format!("{id}\r\n{ifname}").into_bytes()
}

/// `"4"` or `"6"`, the `version` a pre-1.0.0 result gives an address.
pub fn family(address: &str) -> &'static str {
    if address.contains(':') {
        "6"
    } else {
        "4"
    }
}

/// Whether results of this version carry `ips[].version`.
pub fn has_ip_version(version: &str) -> bool {
    version.starts_with("0.")
}

/// The `ips` list a result of `version` should have for `(address/prefix, gateway)` pairs.
pub fn expected_ips(version: &str, ips: &[(&str, &str)]) -> Value {
    Value::Array(
        ips.iter()
            .map(|(address, gateway)| {
                if has_ip_version(version) {
                    json!({"version": family(address), "address": address, "gateway": gateway})
                } else {
                    json!({"address": address, "gateway": gateway})
                }
            })
            .collect(),
    )
}

impl HostLocal {
    /// The `host-local` binary in `dir`.
    pub fn in_dir(dir: &Path, netns: impl Into<String>) -> HostLocal {
        HostLocal {
            binary: dir.join("host-local"),
            netns: netns.into(),
        }
    }

    /// Runs `command` with exactly the CNI variables given (empty values are left out).
    pub fn call(&self, env: &[(&str, &str)], stdin: &[u8]) -> io::Result<Outcome> {
        let dir = self
            .binary
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let mut vars: Vec<(&str, &str)> = vec![("CNI_PATH", dir.as_str())];
        for (k, v) in env {
            vars.retain(|(ek, _)| ek != k);
            if !v.is_empty() {
                vars.push((k, v));
            }
        }
        let out = run_plugin(&self.binary, &vars, stdin)?;
        Ok(Outcome {
            exit: out.code,
            stdout: out.stdout_str(),
            stderr: out.stderr_str(),
            json: serde_json::from_slice(&out.stdout).ok(),
        })
    }

    /// ADD, DEL or CHECK for (id, ifname) with CNI_ARGS `args` (may be empty).
    pub fn op(
        &self,
        command: &str,
        conf: &Value,
        id: &str,
        ifname: &str,
        args: &str,
    ) -> io::Result<Outcome> {
        let stdin = serde_json::to_vec(conf).map_err(io::Error::other)?;
        self.call(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &self.netns),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", args),
            ],
            &stdin,
        )
    }

    pub fn add(&self, conf: &Value, id: &str, ifname: &str) -> io::Result<Outcome> {
        self.op("ADD", conf, id, ifname, "")
    }

    pub fn del(&self, conf: &Value, id: &str, ifname: &str) -> io::Result<Outcome> {
        self.op("DEL", conf, id, ifname, "")
    }

    pub fn check(&self, conf: &Value, id: &str, ifname: &str) -> io::Result<Outcome> {
        self.op("CHECK", conf, id, ifname, "")
    }

    /// GC or STATUS: only CNI_COMMAND and CNI_PATH.
    pub fn verb(&self, command: &str, conf: &Value) -> io::Result<Outcome> {
        let stdin = serde_json::to_vec(conf).map_err(io::Error::other)?;
        self.call(&[("CNI_COMMAND", command)], &stdin)
    }
}

/// Every file under `dir`, by path relative to it (`/`-separated), with its contents;
/// directories appear as `<path>/` with no contents. A missing `dir` is empty.
pub fn snapshot(dir: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, "", &mut out)?;
    }
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            out.insert(format!("{name}/"), Vec::new());
            walk(&entry.path(), &format!("{name}/"), out)?;
        } else {
            out.insert(name, fs::read(entry.path())?);
        }
    }
    Ok(())
}

/// A snapshot without the directory entries themselves: an error may create the store
/// directory, it may not create or change a file in it.
pub fn files_only(snap: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    snap.iter()
        .filter(|(k, _)| !k.ends_with('/'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A snapshot rendered for assertion messages: `name = "contents"` per line.
pub fn show(snap: &BTreeMap<String, Vec<u8>>) -> String {
    snap.iter()
        .map(|(k, v)| format!("{k} = {:?}", String::from_utf8_lossy(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The store of network `mynet` under `data_dir`.
pub fn store(data_dir: &Path) -> PathBuf {
    data_dir.join(NET)
}

/// Writes `<data_dir>/mynet/<name>` (creating the store), for pre-seeded allocations.
pub fn seed(data_dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let store = store(data_dir);
    fs::create_dir_all(&store)?;
    fs::write(store.join(name), contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_only_empty_dns() {
        assert_eq!(normalize(json!({"ips": [], "dns": {}})), json!({"ips": []}));
        let full = json!({"dns": {"domain": "x"}});
        assert_eq!(normalize(full.clone()), full);
    }

    #[test]
    fn expected_ips_carry_version_before_1_0_0() {
        assert_eq!(
            expected_ips("0.4.0", &[("2001:db8::2/64", "2001:db8::1")]),
            json!([{"version": "6", "address": "2001:db8::2/64", "gateway": "2001:db8::1"}])
        );
        assert_eq!(
            expected_ips("1.1.0", &[("10.0.0.2/24", "10.0.0.1")]),
            json!([{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}])
        );
    }

    #[test]
    fn snapshot_lists_names_and_contents() {
        let d = tempfile::tempdir().expect("dir");
        seed(d.path(), "10.0.0.2", b"a\r\neth0").expect("seed");
        let snap = snapshot(d.path()).expect("snapshot");
        assert_eq!(
            snap.keys().collect::<Vec<_>>(),
            ["mynet/", "mynet/10.0.0.2"]
        );
        assert_eq!(files_only(&snap).len(), 1);
        assert!(snapshot(&d.path().join("none")).expect("empty").is_empty());
    }
}
