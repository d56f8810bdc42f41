//! Driving the `calico-ipam` binary by hand, for black-box tests on each of its datastores:
//! configs, one call per verb, and the datastore read back raw — every key and value under
//! `/calico/`, from the files of the `local` store, from etcd through its JSON gateway, or
//! translated from the custom resources a fake Kubernetes API server holds — independently
//! of the plugin's own client code.
//!
//! [`IpamFixture`] owns a test directory (lock files, the `local` data directory, operator
//! config files) and, for etcd, its own etcd server unless the test brings a cluster; for
//! Kubernetes, its own [`FakeApiServer`] and a kubeconfig for it.
//!
//! On Kubernetes the objects are Calico's CRDs; [`IpamFixture::snapshot`] shows them in the
//! etcd layout (same keys and values as Calico's etcd datastore holds for the same state),
//! and [`IpamFixture::put`] takes that layout too, so one scenario asserts the same things
//! on every datastore. Tests of the CRDs themselves read the server directly
//! ([`IpamFixture::api`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::etcd::EtcdServer;
use crate::exec::RawOutput;
use crate::fixtures::{plugin_dir, run_plugin};
use crate::host_local::Outcome;
use crate::kube_api::FakeApiServer;
use crate::TestDir;

/// The network name of every config built here: handles are `ipam-e2e.<containerID>`.
pub const NET: &str = "ipam-e2e";

/// calico-ipam never enters the container namespace; ADD and CHECK only need the variable.
pub const NETNS: &str = "/run/netns/calico-ipam-e2e-unused";

/// Where Calico keeps IPAM objects in etcd (and the `local` store in files).
pub const IPAM_PREFIX: &str = "/calico/ipam/v2/";
/// Calico's v3 Node objects (etcd layout).
pub const NODE_PREFIX: &str = "/calico/resources/v3/projectcalico.org/nodes/";
pub const HANDLE_PREFIX: &str = "/calico/ipam/v2/handle/";
pub const BLOCK_PREFIX: &str = "/calico/ipam/v2/assignment/";
pub const POOL_PREFIX: &str = "/calico/resources/v3/projectcalico.org/ippools/";
pub const RESERVATION_PREFIX: &str = "/calico/resources/v3/projectcalico.org/ipreservations/";
pub const IPAM_CONFIG_KEY: &str = "/calico/ipam/v2/config";

/// How long one raw etcd request may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// The datastores calico-ipam runs on here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    Etcd,
    /// Calico's CRDs on a [`FakeApiServer`].
    Kubernetes,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Local, Backend::Etcd, Backend::Kubernetes];
}

/// A datastore and a directory for one test.
pub struct IpamFixture {
    pub dir: TestDir,
    pub backend: Backend,
    /// `etcd_endpoints`, for etcd.
    endpoints: String,
    etcd: Option<EtcdServer>,
    api: Option<FakeApiServer>,
    /// The kubeconfig of `api`.
    kubeconfig: PathBuf,
}

impl std::fmt::Debug for IpamFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpamFixture")
            .field("dir", &self.dir)
            .field("backend", &self.backend)
            .field("endpoints", &self.endpoints)
            .field("api", &self.api.as_ref().map(FakeApiServer::url))
            .finish_non_exhaustive()
    }
}

impl IpamFixture {
    /// A fresh store: an empty `local` data directory, an etcd of its own, or an API server
    /// of its own with Calico's CRDs and nothing in them.
    pub fn new(backend: Backend) -> IpamFixture {
        let dir = TestDir::new().expect("test dir");
        let mut fixture = IpamFixture {
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
            backend,
            endpoints: String::new(),
            etcd: None,
            api: None,
        };
        match backend {
            Backend::Local => {}
            Backend::Etcd => {
                let server =
                    EtcdServer::start().expect("start etcd (apt-get install -y etcd-server)");
                fixture.endpoints = server.client_url();
                fixture.etcd = Some(server);
            }
            Backend::Kubernetes => {
                let server = FakeApiServer::start();
                fixture.kubeconfig = server.kubeconfig(fixture.dir.path());
                fixture.api = Some(server);
            }
        }
        fixture
    }

    /// On an etcd (cluster) the test owns: `endpoints` as `etcd_endpoints` spells them.
    pub fn on_etcd(endpoints: &str) -> IpamFixture {
        let dir = TestDir::new().expect("test dir");
        IpamFixture {
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
            backend: Backend::Etcd,
            endpoints: endpoints.to_string(),
            etcd: None,
            api: None,
        }
    }

    /// The fixture's API server (Kubernetes only): to read the CRDs as stored, inject
    /// failures, and look at the requests the plugin made.
    pub fn api(&self) -> &FakeApiServer {
        match &self.api {
            Some(api) => api,
            None => panic!("{:?} has no API server", self.backend),
        }
    }

    /// The kubeconfig of the fixture's API server.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The fixture's own etcd server, if it started one.
    pub fn etcd(&mut self) -> Option<&mut EtcdServer> {
        self.etcd.as_mut()
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The `local` store's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The host-wide IPAM lock of `node`: one per node, as on real hosts.
    pub fn lock_file(&self, node: &str) -> PathBuf {
        self.dir.path().join("locks").join(format!("{node}.lock"))
    }

    /// The datastore keys of a config: `datastore_type` and where the store is.
    pub fn datastore_keys(&self) -> Value {
        match self.backend {
            Backend::Local => json!({
                "datastore_type": "local",
                "local_data_dir": self.data_dir(),
            }),
            Backend::Etcd => json!({
                "datastore_type": "etcdv3",
                "etcd_endpoints": self.endpoints,
            }),
            Backend::Kubernetes => json!({
                "datastore_type": "kubernetes",
                "kubernetes": {"kubeconfig": self.kubeconfig},
            }),
        }
    }

    /// Registers `node`'s Node object, as calico/node does when it starts (etcd and
    /// Kubernetes; the single-node `local` store has none), unless it exists. An etcd
    /// reached over TLS is left alone: the test's own client speaks plain HTTP only, and
    /// the TLS tests are about what happens before any Node is read.
    pub fn register_node(&self, node: &str) {
        match self.backend {
            Backend::Local => {}
            Backend::Etcd if !self.endpoints.starts_with("http://") => {}
            Backend::Etcd => {
                let key = format!("{NODE_PREFIX}{node}");
                let held = etcd_range_any(&self.endpoints, &key)
                    .unwrap_or_else(|e| panic!("range {key}: {e}"));
                if !held.contains_key(&key) {
                    let value = json!({"kind": "Node", "apiVersion": "projectcalico.org/v3",
                                       "metadata": {"name": node}, "spec": {}});
                    self.put(&key, &value.to_string());
                }
            }
            Backend::Kubernetes => {
                if self.api().get("nodes", "", node).is_none() {
                    self.api().put(
                        "nodes",
                        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
                    );
                }
            }
        }
    }

    /// A calico-ipam network configuration for `node`: the datastore, the node's lock file,
    /// `nodename` (the nodename file is optional), and `ipam` (its `type` filled in). The
    /// node is registered ([`IpamFixture::register_node`]).
    pub fn conf(&self, version: &str, node: &str, mut ipam: Value) -> Value {
        self.register_node(node);
        if let Some(obj) = ipam.as_object_mut() {
            obj.insert("type".into(), json!("calico-ipam"));
        }
        let mut conf = json!({
            "cniVersion": version,
            "name": NET,
            "type": "calico-ipam",
            "nodename": node,
            "nodename_file_optional": true,
            "ipam_lock_file": self.lock_file(node),
            "ipam": ipam,
        });
        merge(&mut conf, &self.datastore_keys());
        conf
    }

    /// Runs the binary once with exactly these CNI variables (and `conf` on stdin).
    pub fn call(
        &self,
        command: &str,
        conf: &Value,
        container_id: &str,
        args: &[(&str, &str)],
    ) -> Outcome {
        call(command, conf, container_id, args)
    }

    /// An ADD that must succeed: the (first) address it assigned.
    pub fn add(&self, conf: &Value, container_id: &str, args: &[(&str, &str)]) -> IpAddr {
        let out = self.call("ADD", conf, container_id, args);
        assert_eq!(out.exit, Some(0), "ADD {container_id}: {}", out.describe());
        out.addresses()
            .first()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("ADD {container_id} gave no address: {}", out.describe()))
    }

    /// Every key under `/calico/` with its value as text.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        match self.backend {
            Backend::Local => local_snapshot(&self.data_dir()),
            Backend::Etcd => etcd_range_any(&self.endpoints, "/calico/")
                .unwrap_or_else(|e| panic!("range /calico/ in etcd: {e}")),
            Backend::Kubernetes => kdd::snapshot(self.api()),
        }
    }

    /// The JSON value of one key, if it exists.
    pub fn get(&self, key: &str) -> Option<Value> {
        let snap = self.snapshot();
        snap.get(key).map(|text| {
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"))
        })
    }

    /// Writes one key as another Calico component (or an operator) would.
    pub fn put(&self, key: &str, value: &str) {
        match self.backend {
            Backend::Local => {
                let path = self.data_dir().join(key.trim_start_matches('/'));
                fs::create_dir_all(path.parent().expect("key has a parent")).expect("mkdir");
                fs::write(&path, value).expect("write key file");
            }
            Backend::Etcd => etcd_put_any(&self.endpoints, key, value.as_bytes())
                .unwrap_or_else(|e| panic!("put {key}: {e}")),
            Backend::Kubernetes => kdd::put(self.api(), key, value),
        }
    }

    /// An IPPool as calicoctl creates it (v3 resource, named after the CIDR; on Kubernetes
    /// the IPPool custom resource).
    pub fn create_pool(&self, cidr: &str, block_size: u8) {
        let name = cidr.replace(['.', ':', '/'], "-");
        let pool = json!({
            "kind": "IPPool",
            "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": name},
            "spec": {"cidr": cidr, "blockSize": block_size, "ipipMode": "Never",
                     "natOutgoing": true, "nodeSelector": "all()"},
        });
        self.put(&format!("{POOL_PREFIX}{name}"), &pool.to_string());
    }

    /// `/calico/ipam/v2/config` (on Kubernetes the IPAMConfig `default`).
    pub fn set_ipam_config(&self, strict_affinity: bool) {
        self.put(
            IPAM_CONFIG_KEY,
            &json!({"strict_affinity": strict_affinity, "auto_allocate_blocks": true}).to_string(),
        );
    }

    /// Every block (both families), decoded.
    pub fn blocks(&self) -> Vec<Block> {
        blocks_of(&self.snapshot())
    }

    /// Handle id → value.
    pub fn handles(&self) -> BTreeMap<String, Value> {
        handles_of(&self.snapshot())
    }

    /// Writes `conf` into the test directory as a conflist an operator's commands read.
    pub fn write_conflist(&self, conf: &Value) -> PathBuf {
        let mut plugin = conf.clone();
        let version = plugin["cniVersion"].clone();
        if let Some(obj) = plugin.as_object_mut() {
            obj.remove("name");
            obj.remove("cniVersion");
        }
        let list = json!({"cniVersion": version, "name": NET, "plugins": [plugin]});
        let path = self.dir.path().join("10-calico.conflist");
        fs::write(&path, serde_json::to_vec_pretty(&list).expect("encode")).expect("write");
        path
    }
}

/// Adds `extra`'s keys to `target` (objects only).
pub fn merge(target: &mut Value, extra: &Value) {
    if let (Some(t), Some(e)) = (target.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
}

/// Runs calico-ipam once as a runtime would, with exactly the CNI variables (plus PATH).
pub fn call(command: &str, conf: &Value, container_id: &str, args: &[(&str, &str)]) -> Outcome {
    call_with_env(command, conf, container_id, args, &[])
}

/// [`call`] with more variables (a parent plugin's deadline, say).
pub fn call_with_env(
    command: &str,
    conf: &Value,
    container_id: &str,
    args: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Outcome {
    let bin = plugin_dir();
    let path = bin.display().to_string();
    let cni_args = args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container_id),
        ("CNI_NETNS", NETNS),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", &cni_args),
        ("CNI_PATH", &path),
    ];
    let env: Vec<(&str, &str)> = env.iter().chain(extra).copied().collect();
    let stdin = serde_json::to_vec(conf).expect("encode config");
    let out = run_plugin(&bin.join("calico-ipam"), &env, &stdin).expect("run calico-ipam");
    outcome(out)
}

fn outcome(out: RawOutput) -> Outcome {
    Outcome {
        exit: out.code,
        stdout: out.stdout_str(),
        stderr: out.stderr_str(),
        json: serde_json::from_slice(&out.stdout).ok(),
    }
}

/// Runs an operator command: `calico-ipam --config <conflist> <args...>`.
pub fn operator(conflist: &Path, args: &[&str]) -> Outcome {
    let out = Command::new(plugin_dir().join("calico-ipam"))
        .arg("--config")
        .arg(conflist)
        .args(args)
        .env_remove("CNI_COMMAND")
        .output()
        .expect("run calico-ipam");
    Outcome {
        exit: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        json: None,
    }
}

// ---- the datastore, decoded ---------------------------------------------------------------

/// One IPAM block as stored.
#[derive(Debug, Clone)]
pub struct Block {
    pub key: String,
    pub value: Value,
}

impl Block {
    pub fn cidr(&self) -> &str {
        self.value["cidr"].as_str().unwrap_or_default()
    }

    pub fn affinity(&self) -> Option<&str> {
        self.value["affinity"].as_str()
    }

    /// Ordinal → index into `attributes`, for allocated ordinals.
    pub fn allocated(&self) -> BTreeMap<usize, usize> {
        self.value["allocations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.as_u64().map(|attr| (i, attr as usize)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn size(&self) -> usize {
        self.value["allocations"].as_array().map_or(0, Vec::len)
    }

    pub fn unallocated(&self) -> Vec<usize> {
        self.value["unallocated"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as usize)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The attribute (handle_id, secondary) of an allocated ordinal.
    pub fn attribute_of(&self, ordinal: usize) -> Option<&Value> {
        let index = *self.allocated().get(&ordinal)?;
        self.value["attributes"].get(index)
    }

    /// The address of an ordinal.
    pub fn ip_at(&self, ordinal: usize) -> IpAddr {
        let (base, _) = split_cidr(self.cidr());
        offset(base, ordinal as u128)
    }

    /// The ordinal of an address of this block.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<usize> {
        let (base, prefix) = split_cidr(self.cidr());
        if base.is_ipv4() != ip.is_ipv4() {
            return None;
        }
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let off = to_u128(ip).checked_sub(to_u128(base))?;
        (off < 1u128 << (bits - prefix)).then_some(off as usize)
    }

    /// Every ordinal free, in `unallocated` exactly once, no allocation sequence left.
    pub fn all_free(&self) -> bool {
        let mut free = self.unallocated();
        free.sort_unstable();
        self.allocated().is_empty()
            && free == (0..self.size()).collect::<Vec<_>>()
            && self.value["sequenceNumberForAllocation"]
                .as_object()
                .is_none_or(|m| m.is_empty())
    }
}

/// `a.b.c.d/n` → (address, prefix).
pub fn split_cidr(cidr: &str) -> (IpAddr, u32) {
    let (ip, prefix) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("{cidr:?} is not a CIDR"));
    (
        ip.parse()
            .unwrap_or_else(|_| panic!("{cidr:?}: bad address")),
        prefix
            .parse()
            .unwrap_or_else(|_| panic!("{cidr:?}: bad prefix")),
    )
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// `ip + by`, in the same family.
pub fn offset(ip: IpAddr, by: u128) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) + by as u32).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) + by).into()),
    }
}

/// Whether `ip` is inside `cidr`.
pub fn contains(cidr: &str, ip: IpAddr) -> bool {
    let (base, prefix) = split_cidr(cidr);
    if base.is_ipv4() != ip.is_ipv4() {
        return false;
    }
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let shift = bits - prefix;
    let mask = |v: u128| if shift >= 128 { 0 } else { v >> shift };
    mask(to_u128(base)) == mask(to_u128(ip))
}

pub fn blocks_of(snapshot: &BTreeMap<String, String>) -> Vec<Block> {
    snapshot
        .iter()
        .filter(|(k, _)| k.starts_with(BLOCK_PREFIX))
        .map(|(k, v)| Block {
            key: k.clone(),
            value: serde_json::from_str(v).unwrap_or_else(|e| panic!("block {k}: {e}")),
        })
        .collect()
}

pub fn handles_of(snapshot: &BTreeMap<String, String>) -> BTreeMap<String, Value> {
    snapshot
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix(HANDLE_PREFIX)?;
            Some((
                id.to_string(),
                serde_json::from_str(v).unwrap_or_else(|e| panic!("handle {k}: {e}")),
            ))
        })
        .collect()
}

/// Address → handle of every allocation in the blocks; an error when an allocated ordinal
/// has no handle, an address is allocated twice, or `unallocated` is not exactly the free
/// ordinals. Handle objects are not looked at (see [`allocations`]).
pub fn held_addresses(
    snapshot: &BTreeMap<String, String>,
) -> Result<BTreeMap<IpAddr, String>, String> {
    blocks_checked(snapshot).map(|(by_ip, _)| by_ip)
}

/// The whole IPAM state is consistent — [`held_addresses`], and every handle's per-block
/// counts are exactly its allocations, and every allocation's handle exists — and address
/// → handle of every allocation.
pub fn allocations(
    snapshot: &BTreeMap<String, String>,
) -> Result<BTreeMap<IpAddr, String>, String> {
    let (by_ip, counts) = blocks_checked(snapshot)?;
    let handles = handles_of(snapshot);
    for (id, value) in &handles {
        let stored: BTreeMap<String, u64> =
            serde_json::from_value(value["block"].clone()).unwrap_or_default();
        let actual = counts.get(id).cloned().unwrap_or_default();
        if stored != actual {
            return Err(format!(
                "handle {id} counts {stored:?}, the blocks hold {actual:?}"
            ));
        }
    }
    for id in counts.keys() {
        if !handles.contains_key(id) {
            return Err(format!(
                "allocations under {id}, which has no handle object"
            ));
        }
    }
    Ok(by_ip)
}

/// Handle → block CIDR → addresses, as counted from the blocks.
type HandleCounts = BTreeMap<String, BTreeMap<String, u64>>;

fn blocks_checked(
    snapshot: &BTreeMap<String, String>,
) -> Result<(BTreeMap<IpAddr, String>, HandleCounts), String> {
    let mut by_ip = BTreeMap::new();
    let mut counts: HandleCounts = BTreeMap::new();
    for block in blocks_of(snapshot) {
        let allocated = block.allocated();
        for (&ordinal, &attr) in &allocated {
            let handle = block.value["attributes"]
                .get(attr)
                .and_then(|a| a["handle_id"].as_str())
                .ok_or_else(|| format!("{}: ordinal {ordinal} points at no handle", block.key))?;
            let ip = block.ip_at(ordinal);
            if let Some(other) = by_ip.insert(ip, handle.to_string()) {
                return Err(format!("{ip} allocated twice ({other}, {handle})"));
            }
            *counts
                .entry(handle.to_string())
                .or_default()
                .entry(block.cidr().to_string())
                .or_default() += 1;
        }
        let free: BTreeSet<usize> = block.unallocated().into_iter().collect();
        if free.len() != block.unallocated().len() {
            return Err(format!("{}: an ordinal is free twice", block.key));
        }
        let expected: BTreeSet<usize> = (0..block.size())
            .filter(|o| !allocated.contains_key(o))
            .collect();
        if free != expected {
            return Err(format!(
                "{}: unallocated {:?} is not the free ordinals {:?}",
                block.key, free, expected
            ));
        }
    }
    Ok((by_ip, counts))
}

// ---- raw stores ---------------------------------------------------------------------------

/// Every file under `<dir>/calico` as `/calico/...` → contents (dot-files are not keys).
fn local_snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.expect("dir entry");
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let bytes = fs::read(&path).expect("read key file");
                out.insert(
                    format!("/{}", rel.display()),
                    String::from_utf8_lossy(&bytes).into_owned(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &dir.join("calico"), &mut out);
    out
}

/// One POST to etcd's JSON gateway, HTTP/1.0 so the answer is never chunked.
pub fn etcd_post(endpoint: &str, path: &str, body: &Value) -> Result<Value, String> {
    etcd_post_as(endpoint, path, body, None)
}

/// [`etcd_post`] with an auth token (from `/v3/auth/authenticate`), for an etcd with
/// authentication enabled.
pub fn etcd_post_as(
    endpoint: &str,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> Result<Value, String> {
    let hostport = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("{endpoint}: only http:// endpoints"))?;
    let addr: SocketAddr = hostport
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let attempt = || -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, ETCD_TIMEOUT)?;
        s.set_read_timeout(Some(ETCD_TIMEOUT))?;
        s.set_write_timeout(Some(ETCD_TIMEOUT))?;
        let body = body.to_string();
        let auth = token
            .map(|t| format!("Authorization: {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "POST {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: application/json\r\n\
             {auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    };
    let answer = attempt().map_err(|e| format!("{endpoint}{path}: {e}"))?;
    let (head, payload) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{endpoint}{path}: no HTTP answer: {answer:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{endpoint}{path}: {head}: {payload}"));
    }
    serde_json::from_str(payload).map_err(|e| format!("{endpoint}{path}: {e}: {payload}"))
}

/// The first of the comma-separated endpoints that answers.
fn on_any<T>(endpoints: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<T, String> {
    let mut errors = Vec::new();
    for endpoint in endpoints.split(',').filter(|e| !e.is_empty()) {
        match f(endpoint) {
            Ok(v) => return Ok(v),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// Every key with `prefix` → value text, read linearizably.
pub fn etcd_range(endpoint: &str, prefix: &str) -> Result<BTreeMap<String, String>, String> {
    etcd_range_as(endpoint, prefix, None)
}

/// [`etcd_range`] with an auth token.
pub fn etcd_range_as(
    endpoint: &str,
    prefix: &str,
    token: Option<&str>,
) -> Result<BTreeMap<String, String>, String> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let answer = etcd_post_as(
        endpoint,
        "/v3/kv/range",
        &json!({"key": B64.encode(prefix), "range_end": B64.encode(&end)}),
        token,
    )?;
    let mut out = BTreeMap::new();
    for kv in answer["kvs"].as_array().into_iter().flatten() {
        let decode = |field: &str| -> Result<String, String> {
            let bytes = B64
                .decode(kv[field].as_str().unwrap_or_default())
                .map_err(|e| format!("{field}: {e}"))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        out.insert(decode("key")?, decode("value")?);
    }
    Ok(out)
}

pub fn etcd_range_any(endpoints: &str, prefix: &str) -> Result<BTreeMap<String, String>, String> {
    on_any(endpoints, |e| etcd_range(e, prefix))
}

pub fn etcd_put(endpoint: &str, key: &str, value: &[u8]) -> Result<(), String> {
    etcd_post(
        endpoint,
        "/v3/kv/put",
        &json!({"key": B64.encode(key), "value": B64.encode(value)}),
    )
    .map(|_| ())
}

pub fn etcd_put_any(endpoints: &str, key: &str, value: &[u8]) -> Result<(), String> {
    on_any(endpoints, |e| etcd_put(e, key, value))
}

/// Declares each named test function (taking a [`Backend`]) once per datastore, as
/// `local::name`, `etcd::name` and `kubernetes::name`, so every scenario runs on all three.
#[macro_export]
macro_rules! on_every_datastore {
    ($($name:ident),* $(,)?) => {
        $crate::on_datastores!(
            [local: Local, etcd: Etcd, kubernetes: Kubernetes] $($name),*
        );
    };
}

/// Declares each named test function once per listed datastore:
/// `on_datastores!([etcd: Etcd, kubernetes: Kubernetes] a, b)` gives `etcd::a`,
/// `kubernetes::a`, `etcd::b`, `kubernetes::b`.
#[macro_export]
macro_rules! on_datastores {
    ([$($module:ident: $backend:ident),+ $(,)?] $($name:ident),* $(,)?) => {
        $crate::on_datastores!(@each [$($module: $backend),+] [$($name),*]);
    };
    // The names as one token tree, so that each module can repeat all of them.
    (@each [$($module:ident: $backend:ident),+] $names:tt) => {
        $( $crate::datastore_tests!($module, $backend, $names); )+
    };
}

/// One module of [`on_datastores!`].
#[doc(hidden)]
#[macro_export]
macro_rules! datastore_tests {
    ($module:ident, $backend:ident, [$($name:ident),*]) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::ipam::Backend::$backend)
                }
            )*
        }
    };
}

/// Calico's CRDs seen as Calico's etcd layout, and back.
mod kdd {
    use std::collections::BTreeMap;

    use serde_json::{json, Map, Value};

    use super::{
        BLOCK_PREFIX, HANDLE_PREFIX, IPAM_CONFIG_KEY, IPAM_PREFIX, NODE_PREFIX, POOL_PREFIX,
        RESERVATION_PREFIX,
    };
    use crate::kube_api::FakeApiServer;

    fn family(cidr: &str) -> &'static str {
        if cidr.contains(':') {
            "ipv6"
        } else {
            "ipv4"
        }
    }

    fn spec(object: &Value) -> Map<String, Value> {
        object["spec"].as_object().cloned().unwrap_or_default()
    }

    fn name(object: &Value) -> &str {
        object["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// A BlockAffinity's `deleted` is a string in the CRD, a bool in etcd.
    fn bool_of(value: &Value) -> bool {
        match value {
            Value::Bool(b) => *b,
            Value::String(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }

    /// Every IPAM object (and pool, reservation and node) as the etcd key and value Calico's etcd
    /// datastore would hold for it.
    pub fn snapshot(api: &FakeApiServer) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for block in api.list("ipamblocks") {
            let spec = spec(&block);
            let cidr = spec["cidr"].as_str().unwrap_or_default().to_string();
            out.insert(
                format!(
                    "{BLOCK_PREFIX}{}/block/{}",
                    family(&cidr),
                    cidr.replace('/', "-")
                ),
                Value::Object(spec).to_string(),
            );
        }
        for affinity in api.list("blockaffinities") {
            let spec = spec(&affinity);
            let text = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or_default();
            let cidr = text("cidr");
            let kind = Some(text("type"))
                .filter(|t| !t.is_empty())
                .unwrap_or("host");
            out.insert(
                format!(
                    "{IPAM_PREFIX}{kind}/{}/{}/block/{}",
                    text("node"),
                    family(cidr),
                    cidr.replace('/', "-")
                ),
                json!({"state": text("state"),
                       "deleted": bool_of(spec.get("deleted").unwrap_or(&Value::Null))})
                .to_string(),
            );
        }
        for handle in api.list("ipamhandles") {
            let spec = spec(&handle);
            let id = spec["handleID"].as_str().unwrap_or_default();
            out.insert(
                format!("{HANDLE_PREFIX}{id}"),
                json!({"block": spec["block"], "deleted": spec.get("deleted").unwrap_or(&json!(false))})
                    .to_string(),
            );
        }
        for config in api.list("ipamconfigs") {
            if name(&config) != "default" {
                continue;
            }
            let spec = spec(&config);
            let mut value = Map::new();
            if spec.get("strictAffinity") == Some(&json!(true)) {
                value.insert("strict_affinity".into(), json!(true));
            }
            if spec.get("autoAllocateBlocks") == Some(&json!(true)) {
                value.insert("auto_allocate_blocks".into(), json!(true));
            }
            if let Some(max) = spec.get("maxBlocksPerHost").filter(|m| **m != json!(0)) {
                value.insert("maxBlocksPerHost".into(), max.clone());
            }
            out.insert(
                IPAM_CONFIG_KEY.to_string(),
                Value::Object(value).to_string(),
            );
        }
        for pool in api.list("ippools") {
            out.insert(
                format!("{POOL_PREFIX}{}", name(&pool)),
                json!({"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
                       "metadata": {"name": name(&pool)}, "spec": pool["spec"]})
                .to_string(),
            );
        }
        for reservation in api.list("ipreservations") {
            out.insert(
                format!("{RESERVATION_PREFIX}{}", name(&reservation)),
                json!({"kind": "IPReservation", "apiVersion": "projectcalico.org/v3",
                       "metadata": {"name": name(&reservation)}, "spec": reservation["spec"]})
                .to_string(),
            );
        }
        for node in api.list("nodes") {
            out.insert(
                format!("{NODE_PREFIX}{}", name(&node)),
                json!({"kind": "Node", "apiVersion": "projectcalico.org/v3",
                       "metadata": {"name": name(&node), "labels": node["metadata"]["labels"]},
                       "spec": {}})
                .to_string(),
            );
        }
        out
    }

    /// Stores an object given in the etcd layout as the custom resource (or Node) Calico
    /// would hold for it. An object already there keeps its UID: this is an update, as an
    /// operator's edit would be.
    pub fn put(api: &FakeApiServer, key: &str, value: &str) {
        let value: Value =
            serde_json::from_str(value).unwrap_or_else(|e| panic!("{key}: not JSON: {e}"));
        let (kind, object) = if let Some(name) = key.strip_prefix(POOL_PREFIX) {
            (
                "ippools",
                json!({"metadata": {"name": name}, "spec": value["spec"]}),
            )
        } else if let Some(name) = key.strip_prefix(RESERVATION_PREFIX) {
            (
                "ipreservations",
                json!({"metadata": {"name": name}, "spec": value["spec"]}),
            )
        } else if let Some(name) = key.strip_prefix(NODE_PREFIX) {
            (
                "nodes",
                json!({"metadata": {"name": name, "labels": value["metadata"]["labels"]}}),
            )
        } else if key == IPAM_CONFIG_KEY {
            let mut spec = json!({
                "strictAffinity": value["strict_affinity"] == json!(true),
                "autoAllocateBlocks": value["auto_allocate_blocks"] == json!(true),
            });
            if let Some(max) = value.get("maxBlocksPerHost") {
                spec["maxBlocksPerHost"] = max.clone();
            }
            (
                "ipamconfigs",
                json!({"metadata": {"name": "default"}, "spec": spec}),
            )
        } else if let Some(id) = key.strip_prefix(HANDLE_PREFIX) {
            let mut spec = value.clone();
            spec["handleID"] = json!(id);
            (
                "ipamhandles",
                json!({"metadata": {"name": id.to_lowercase()}, "spec": spec}),
            )
        } else if key.starts_with(BLOCK_PREFIX) {
            let cidr = value["cidr"].as_str().unwrap_or_default();
            let mut spec = value.clone();
            if spec["affinity"].is_null() {
                if let Some(m) = spec.as_object_mut() {
                    m.remove("affinity");
                }
            }
            spec["strictAffinity"] = json!(false);
            (
                "ipamblocks",
                json!({"metadata": {"name": cidr.replace(['.', ':', '/'], "-")}, "spec": spec}),
            )
        } else {
            panic!("the Kubernetes fixture cannot store {key} (affinities carry labels)");
        };
        let mut object = object;
        if let Some(existing) = api.get(kind, "", name(&object)) {
            object["metadata"]["uid"] = existing["metadata"]["uid"].clone();
        }
        api.put(kind, object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_arithmetic() {
        assert!(contains("10.1.2.64/26", "10.1.2.127".parse().expect("ip")));
        assert!(!contains("10.1.2.64/26", "10.1.2.128".parse().expect("ip")));
        assert!(contains("fd00::40/122", "fd00::7f".parse().expect("ip")));
        assert!(!contains("fd00::40/122", "10.0.0.1".parse().expect("ip")));
        let block = Block {
            key: String::new(),
            value: json!({"cidr": "10.1.2.64/26", "allocations": [null, 0],
                          "unallocated": [0], "attributes": [{"handle_id": "h"}]}),
        };
        assert_eq!(block.ip_at(1), "10.1.2.65".parse::<IpAddr>().expect("ip"));
        assert_eq!(block.ordinal_of("10.1.2.65".parse().expect("ip")), Some(1));
        assert_eq!(block.ordinal_of("10.1.2.128".parse().expect("ip")), None);
        assert_eq!(block.attribute_of(1).expect("attr")["handle_id"], "h");
        assert!(!block.all_free());
    }

    #[test]
    fn allocations_find_inconsistencies() {
        let mut snap = BTreeMap::new();
        snap.insert(
            format!("{BLOCK_PREFIX}ipv4/block/10.0.0.0-30"),
            json!({"cidr": "10.0.0.0/30", "allocations": [0, null, 0, null],
                   "unallocated": [1, 3], "attributes": [{"handle_id": "h", "secondary": {}}]})
            .to_string(),
        );
        snap.insert(
            format!("{HANDLE_PREFIX}h"),
            json!({"block": {"10.0.0.0/30": 2}}).to_string(),
        );
        let by_ip = allocations(&snap).expect("consistent");
        assert_eq!(by_ip.len(), 2);
        snap.insert(
            format!("{HANDLE_PREFIX}h"),
            json!({"block": {"10.0.0.0/30": 1}}).to_string(),
        );
        assert!(allocations(&snap).is_err());
    }
}
