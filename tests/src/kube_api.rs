//! A fake Kubernetes API server for datastore tests: plain HTTP/1.1 on `127.0.0.1:<free
//! port>`, one thread per connection, stopped on drop.
//!
//! No kube-apiserver can run on the test machines, so this server stands in for one, for
//! the resources the Calico CNI plugins use (spec §5.1, §7.1): every CRD of group
//! `crd.projectcalico.org/v1` found in `../shared/calico-crds.yaml`, and core v1 `pods`,
//! `namespaces` and `nodes`. It is strict on purpose: a client that passes here must not be
//! refused by a real server. What it does, as the real server does:
//!
//! - `metadata.resourceVersion` from one global counter, bumped on every write; an update
//!   that changes nothing writes nothing (no bump), as etcd3's store skips equal writes;
//! - `metadata.uid` and `creationTimestamp` on create (client values overwritten),
//!   `generation` 1 on create and +1 when anything but metadata (and status, for kinds with
//!   a status subresource) changes;
//! - create: 201, `409 AlreadyExists`, `500` when the body carries a resourceVersion, 400
//!   on a missing `kind` or a wrong `apiVersion`, 422 on a wrong `kind`;
//! - update (PUT): `404` when absent, `409 Conflict` on a stale resourceVersion or a UID
//!   that is not the stored one, and `422` when the resourceVersion is missing: custom
//!   resources do not allow unconditional updates (`AllowUnconditionalUpdate() == false`
//!   in apiextensions' strategy); pods do, so a pod update without one is unconditional;
//! - patch: `application/merge-patch+json` (RFC 7386), `application/json-patch+json`
//!   (RFC 6902) and, for core kinds only, `application/strategic-merge-patch+json` (415 for
//!   custom resources, as the real server). A resourceVersion in the patch is a
//!   precondition (409); a different UID is a change of an immutable field (422). A patch
//!   of `pods/<name>/status` may change metadata (labels, annotations) and status, never
//!   the spec nor ownerReferences;
//! - delete with a `DeleteOptions` body: UID / resourceVersion preconditions (409 on
//!   mismatch), 200 with the deleted object (as last stored: its resourceVersion is not
//!   the delete's); an object with finalizers only gets a deletionTimestamp and goes when
//!   an update empties its finalizers;
//! - pods: an update through the main resource keeps the status and may not change the
//!   spec (422; the real server allows a few spec fields, the fake none);
//! - list with `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
//!   `k notin (a,b)`, `k>n`, `k<n`; comma = AND), `fieldSelector` (`metadata.name`,
//!   `metadata.namespace`, and the few fields the real server supports per core kind),
//!   `limit`/`continue` paging; items in name order, as etcd returns them;
//! - every custom resource create/update goes through the CRD's structural schema as the
//!   apiextensions server does: pruning of unknown fields (silently, not an error) unless
//!   `x-kubernetes-preserve-unknown-fields`, pruning of `null` in non-nullable object
//!   fields without a default (what `PruneNonNullableNullsWithoutDefaults` does since 1.20;
//!   a `null` array item that is not nullable stays and is rejected), defaults, then
//!   validation (`type`, integral integers, `required`, `enum`, `nullable`, `minimum`,
//!   `maximum`, `exclusiveMinimum/Maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`,
//!   `format: cidr` and `date-time`, `x-kubernetes-int-or-string`,
//!   `x-kubernetes-list-type: set|map` uniqueness, and the `self == oldSelf` transition
//!   rule), metadata (name as a DNS-1123 subdomain, label and annotation keys and values).
//!   Failures answer `422 Invalid` naming each field path.
//!
//! - service-account tokens (TokenRequest): `POST
//!   /api/v1/namespaces/<ns>/serviceaccounts/<name>/token` for a ServiceAccount that
//!   exists answers 201 with a new token valid for `spec.expirationSeconds` (3600 when
//!   absent; 422 below 600 s, as the real server), capped at the server's maximum lifetime
//!   ([`FakeApiServer::set_max_token_lifetime`], 48 h by default, as
//!   `--service-account-max-token-expiration` caps it). A token issued that way (or by
//!   [`FakeApiServer::issue_token`]) is refused once expired: 401 `Unauthorized`, message
//!   "the token has expired". The real server says only "Unauthorized" and logs why; the
//!   fake says why so that a test can tell expiry from a wrong token. The default token
//!   never expires.
//!
//! Not done (see the module's tests for what is): watches (400), server-side apply (415),
//! strategic-merge directives (`$patch`...; 500, named as a fake limitation), list merge
//! keys of strategic merge (lists are replaced, as by a JSON merge patch), CEL rules other
//! than `self == oldSelf`, `pattern` (no regex engine here; the kinds CNI writes have none
//! outside IPPool's status), writes of core kinds other than pod patches (405: seed them
//! with [`FakeApiServer::put`]).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The API group of Calico's CRDs (spec §7.1).
pub const CALICO_GROUP: &str = "crd.projectcalico.org";
/// The only version of it the CNI plugins use.
pub const CALICO_VERSION: &str = "v1";

/// Where CI puts the CRD definitions: `shared/` is checked out beside the repository.
pub fn crds_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/calico-crds.yaml")
}

// ================================================================================
// Public API
// ================================================================================

/// One request as the server saw it, for tests that assert what a client did.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The raw (still percent-encoded) query string, empty when none.
    pub query: String,
    pub content_type: Option<String>,
    pub body: String,
    /// The status code the server answered.
    pub status: u16,
}

/// A fake API server; see the module documentation for its semantics.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts a server on a free loopback port. Panics when the CRD file cannot be loaded
    /// or no port can be bound: a test cannot go on without either.
    pub fn start() -> FakeApiServer {
        let resources = match resource_types() {
            Ok(r) => r.clone(),
            Err(e) => panic!("fake API server: {e}"),
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("fake API server: cannot bind a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake API server: no local address: {e}"));
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            resources,
            token: format!("fake-token-{:016x}", random_u64()),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .unwrap_or_else(|e| panic!("fake API server: cannot spawn its thread: {e}"));
        FakeApiServer {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token the kubeconfig carries (checked only when required).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Writes `<dir>/kubeconfig` pointing at this server with the bearer token.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: {}\n",
            self.url(),
            self.token()
        );
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// With `true`, every request without `Authorization: Bearer <token>` gets 401.
    pub fn set_require_token(&self, required: bool) {
        self.shared.lock().require_token = required;
    }

    /// The longest lifetime a TokenRequest gets (a longer request is cut to it), as a real
    /// server's `--service-account-max-token-expiration` does; tests set seconds to see
    /// tokens expire.
    pub fn set_max_token_lifetime(&self, max: Duration) {
        self.shared.lock().max_token_lifetime = Some(max);
    }

    /// A token of `namespace/name`, as a TokenRequest would issue it, valid for `lifetime`
    /// from now: accepted while valid (also when tokens are required), 401 after.
    pub fn issue_token(&self, namespace: &str, name: &str, lifetime: Duration) -> String {
        self.shared.lock().issue(namespace, name, lifetime).0
    }

    /// The next `times` requests with this method (`"*"` for any) and exact path (no
    /// query) answer `code` with a Kubernetes Status and are not carried out. 409 answers
    /// a `Conflict` as a stale update would get; other codes get their usual reason.
    pub fn fail_next(&self, method: &str, path: &str, times: usize, code: u16) {
        self.shared.lock().injections.push(Injection {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            remaining: times,
            code,
        });
    }

    /// Stores an object directly, as if it had been read back from etcd: it gets a uid,
    /// a creationTimestamp and a new resourceVersion; a custom resource is pruned and
    /// defaulted like any read, but not validated, so tests can seed what they need.
    /// `kind` is a plural (`ippools`), a kind (`IPPool`) or a singular. Returns the stored
    /// object.
    pub fn put(&self, kind: &str, obj: Value) -> Value {
        let rt = self.resource(kind);
        let mut obj = obj;
        if meta_str(&obj, "name").is_empty() {
            panic!("fake API server: put({kind}) needs metadata.name: {obj}");
        }
        if rt.namespaced && meta_str(&obj, "namespace").is_empty() {
            panic!("fake API server: put({kind}) needs metadata.namespace: {obj}");
        }
        let mut st = self.shared.lock();
        st.seed(&rt, &mut obj);
        obj
    }

    /// The stored object, `ns` empty for cluster-scoped kinds.
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let rt = self.resource(kind);
        self.shared.lock().objects.get(&key(&rt, ns, name)).cloned()
    }

    /// Every stored object of a kind, in name order.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let rt = self.resource(kind);
        self.shared
            .lock()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == rt.plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Removes an object directly (no preconditions, no finalizers).
    pub fn remove(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let rt = self.resource(kind);
        let mut st = self.shared.lock();
        let old = st.objects.remove(&key(&rt, ns, name));
        if old.is_some() {
            st.next_rv();
        }
        old
    }

    /// The global resourceVersion counter (the last write's version).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    fn resource(&self, kind: &str) -> ResourceType {
        match self.shared.find_resource(kind) {
            Some(rt) => rt.clone(),
            None => panic!("fake API server: unknown kind {kind:?}"),
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
        // Connection threads block in read(): shutting their sockets down ends them.
        if let Ok(conns) = self.shared.conns.lock() {
            for c in conns.values() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

// ================================================================================
// Resource types: core kinds built in, Calico kinds from the CRD file
// ================================================================================

/// One served resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// Empty for core v1.
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    /// `spec.versions[v1].schema.openAPIV3Schema` of a CRD; `None` for core kinds.
    schema: Option<Value>,
    status_subresource: bool,
    /// Field selectors the real server supports beyond metadata.name/namespace.
    extra_fields: &'static [&'static str],
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn is_crd(&self) -> bool {
        self.schema.is_some()
    }

    /// `ippools.crd.projectcalico.org` or `pods`, as error messages name resources.
    fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `IPPool.crd.projectcalico.org` or `Pod`, as Invalid errors name kinds.
    fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

fn core_type(
    plural: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    extra_fields: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group: String::new(),
        version: "v1".into(),
        plural: plural.into(),
        singular: singular.into(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        schema: None,
        status_subresource: true,
        extra_fields,
    }
}

/// Loaded once per test process: the file is large and never changes during a run.
fn resource_types() -> &'static Result<Vec<ResourceType>, String> {
    static TYPES: OnceLock<Result<Vec<ResourceType>, String>> = OnceLock::new();
    TYPES.get_or_init(|| {
        let mut types = vec![
            core_type(
                "pods",
                "pod",
                "Pod",
                true,
                &[
                    "spec.nodeName",
                    "spec.restartPolicy",
                    "spec.schedulerName",
                    "spec.serviceAccountName",
                    "spec.hostNetwork",
                    "status.phase",
                    "status.podIP",
                    "status.nominatedNodeName",
                ],
            ),
            core_type(
                "namespaces",
                "namespace",
                "Namespace",
                false,
                &["status.phase"],
            ),
            core_type("nodes", "node", "Node", false, &["spec.unschedulable"]),
            // Seeded with `put`: a TokenRequest needs its ServiceAccount to exist.
            ResourceType {
                status_subresource: false,
                ..core_type(
                    "serviceaccounts",
                    "serviceaccount",
                    "ServiceAccount",
                    true,
                    &[],
                )
            },
        ];
        types.extend(load_crds(&crds_path())?);
        Ok(types)
    })
}

/// Reads every CRD of Calico's group from a multi-document YAML file.
pub fn load_crds(path: &Path) -> Result<Vec<ResourceType>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read CRDs from {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let crd: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| format!("bad YAML in {}: {e}", path.display()))?;
        if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            continue;
        }
        let spec = &crd["spec"];
        if spec["group"] != CALICO_GROUP {
            continue;
        }
        let names = &spec["names"];
        let text_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let Some(version) = spec["versions"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == CALICO_VERSION))
        else {
            continue;
        };
        let schema = version["schema"]["openAPIV3Schema"].clone();
        if !schema.is_object() {
            return Err(format!(
                "CRD {} has no v1 schema",
                text_of(&names["plural"])
            ));
        }
        out.push(ResourceType {
            group: CALICO_GROUP.into(),
            version: CALICO_VERSION.into(),
            plural: text_of(&names["plural"]),
            singular: text_of(&names["singular"]),
            kind: text_of(&names["kind"]),
            list_kind: text_of(&names["listKind"]),
            namespaced: spec["scope"] == "Namespaced",
            schema: Some(schema),
            status_subresource: version["subresources"]["status"].is_object(),
            extra_fields: &[],
        });
    }
    if out.is_empty() {
        return Err(format!("no {CALICO_GROUP} CRD in {}", path.display()));
    }
    Ok(out)
}

// ================================================================================
// Server state
// ================================================================================

type Key = (String, String, String);

fn key(rt: &ResourceType, ns: &str, name: &str) -> Key {
    let ns = if rt.namespaced { ns } else { "" };
    (rt.plural.clone(), ns.to_string(), name.to_string())
}

struct Shared {
    state: Mutex<State>,
    resources: Vec<ResourceType>,
    token: String,
    stop: AtomicBool,
    /// Open connections by id, so that drop can shut them down.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

impl Shared {
    /// A panic while the lock is held fails that request's thread only; the state is
    /// still consistent (every handler writes at its very end), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find_resource(&self, name: &str) -> Option<&ResourceType> {
        self.resources
            .iter()
            .find(|r| r.plural == name || r.singular == name || r.kind.eq_ignore_ascii_case(name))
    }
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: Vec<RecordedRequest>,
    require_token: bool,
    injections: Vec<Injection>,
    /// Tokens issued by TokenRequest or [`FakeApiServer::issue_token`].
    issued: HashMap<String, IssuedToken>,
    /// `None`: [`DEFAULT_MAX_TOKEN_LIFETIME`].
    max_token_lifetime: Option<Duration>,
}

/// A real server's tokens last at most what `--service-account-max-token-expiration`
/// says; 48 h here, above the 24 h the refresher asks for.
const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(48 * 3600);

struct IssuedToken {
    /// Milliseconds since the epoch.
    expires_ms: u128,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

struct Injection {
    method: String,
    path: String,
    remaining: usize,
    code: u16,
}

impl State {
    /// A new token and its expiry in seconds since the epoch (rounded down, as the
    /// `expirationTimestamp` a client sees is whole seconds).
    fn issue(&mut self, namespace: &str, name: &str, lifetime: Duration) -> (String, u64) {
        let token = format!(
            "fake-sa-{namespace}-{name}-{:016x}{:016x}",
            random_u64(),
            random_u64()
        );
        let expires_ms = now_ms() + lifetime.as_millis();
        self.issued
            .insert(token.clone(), IssuedToken { expires_ms });
        (token, (expires_ms / 1000) as u64)
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn seed(&mut self, rt: &ResourceType, obj: &mut Value) {
        if !obj.is_object() {
            *obj = json!({});
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if let Some(schema) = &rt.schema {
            schema::prune(obj, schema, true);
            schema::apply_defaults(obj, schema);
        }
        let rv = self.next_rv();
        let meta = &mut obj["metadata"];
        if meta["uid"].as_str().unwrap_or_default().is_empty() {
            meta["uid"] = json!(new_uid());
        }
        if meta["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            meta["creationTimestamp"] = json!(now_rfc3339());
        }
        if rt.is_crd() && meta["generation"].as_i64().is_none() {
            meta["generation"] = json!(1);
        }
        meta["resourceVersion"] = json!(rv);
        let ns = meta["namespace"].as_str().unwrap_or_default().to_string();
        let name = meta["name"].as_str().unwrap_or_default().to_string();
        self.objects.insert(key(rt, &ns, &name), obj.clone());
    }
}

// ================================================================================
// HTTP/1.1 transport
// ================================================================================

/// Bodies past this are refused: a test never needs more, and a broken client must not
/// make the fixture allocate without bound.
const MAX_BODY: usize = 16 << 20;

struct HttpRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let _ = stream.set_nodelay(true);
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        if let (Ok(clone), Ok(mut conns)) = (stream.try_clone(), shared.conns.lock()) {
            conns.insert(id, clone);
        }
        let conn_shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("fake-apiserver-conn".into())
            .spawn(move || serve_connection(stream, conn_shared, id));
    }
}

fn serve_connection(stream: TcpStream, shared: Arc<Shared>, id: u64) {
    if let Ok(mut writer) = stream.try_clone() {
        let mut reader = BufReader::new(stream);
        loop {
            let req = match read_request(&mut reader) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => {
                    let resp = ApiError::bad_request(&format!("malformed HTTP request: {e}"));
                    let _ = write_response(&mut writer, resp.code, &resp.status(), true);
                    break;
                }
            };
            let (code, body) = handle(&shared, &req);
            if write_response(&mut writer, code, &body, req.close).is_err() || req.close {
                break;
            }
        }
    }
    // The registry holds a clone of the socket: close it for the peer to see EOF.
    let registered = shared.conns.lock().ok().and_then(|mut c| c.remove(&id));
    if let Some(s) = registered {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn read_request(r: &mut impl BufRead) -> io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    // Tolerate empty lines between requests (RFC 9112 §2.2).
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (method, path, query) = (
        method.to_ascii_uppercase(),
        percent_decode(path),
        query.to_string(),
    );
    let close = version.eq_ignore_ascii_case("HTTP/1.0");
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof in headers",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad header line"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut req = HttpRequest {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
        close,
    };
    if let Some(c) = req.header("connection") {
        req.close = c.eq_ignore_ascii_case("close");
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        if len > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(Some(req))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let size_text = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, then the final empty line.
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if size > MAX_BODY - body.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        line.clear();
        r.read_line(&mut line)?;
    }
}

fn write_response(w: &mut impl Write, code: u16, body: &Value, close: bool) -> io::Result<()> {
    let text = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache, private\r\n{}\r\n",
        reason_phrase(code),
        text.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    // One write: a head and a body in two segments would meet the peer's delayed ACK
    // (Nagle), 40 ms per request.
    let mut out = head.into_bytes();
    out.extend_from_slice(text.as_bytes());
    w.write_all(&out)?;
    w.flush()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ================================================================================
// Kubernetes Status errors
// ================================================================================

/// A failure answered as a `Status` object.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

/// One field error of an `Invalid` Status.
#[derive(Debug, Clone)]
struct FieldError {
    field: String,
    reason: &'static str,
    /// The text after `<field>: `, e.g. `Required value`.
    detail: String,
}

impl FieldError {
    fn new(field: &str, reason: &'static str, detail: String) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason,
            detail,
        }
    }

    fn required(field: &str) -> FieldError {
        FieldError::new(field, "FieldValueRequired", "Required value".into())
    }

    fn invalid(field: &str, value: &Value, why: &str) -> FieldError {
        FieldError::new(
            field,
            "FieldValueInvalid",
            format!("Invalid value: {}: {why}", shown(value)),
        )
    }
}

/// How Go's field errors print a value: strings quoted, the rest as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> ApiError {
        let mut d = json!({ "name": name, "kind": rt.plural });
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        self.details = Some(d);
        self
    }

    fn bad_request(msg: &str) -> ApiError {
        ApiError::new(400, "BadRequest", msg.to_string())
    }

    fn internal(msg: &str) -> ApiError {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {msg}"),
        )
    }

    fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.group_resource()),
        )
        .with_details(rt, name)
    }

    fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
    }

    fn already_exists(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.group_resource()),
        )
        .with_details(rt, name)
    }

    fn conflict(rt: &ResourceType, name: &str, why: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.group_resource()
            ),
        )
        .with_details(rt, name)
    }

    fn stale(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    fn invalid(rt: &ResourceType, name: &str, errs: Vec<FieldError>) -> ApiError {
        let texts: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect();
        let joined = if texts.len() == 1 {
            texts[0].clone()
        } else {
            format!("[{}]", texts.join(", "))
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.detail, "field": e.field}))
            .collect();
        let mut details = json!({"name": name, "kind": rt.kind, "causes": causes});
        if !rt.group.is_empty() {
            details["group"] = json!(rt.group);
        }
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{name}\" is invalid: {joined}", rt.group_kind()),
            details: Some(details),
        }
    }

    fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        )
    }

    fn unsupported_media(ct: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({ct}) - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json"
            ),
        )
    }

    fn injected(code: u16, path: &str) -> ApiError {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        let message = if code == 409 {
            format!("Operation cannot be fulfilled on {path}: the object has been modified; please apply your changes to the latest version and try again")
        } else {
            format!("injected failure for {path}")
        };
        ApiError::new(code, reason, message)
    }

    fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

type ApiResult = Result<(u16, Value), ApiError>;

// ================================================================================
// Routing
// ================================================================================

fn handle(shared: &Shared, req: &HttpRequest) -> (u16, Value) {
    let mut st = shared.lock();
    let result = route(shared, &mut st, req);
    let (code, body) = match result {
        Ok(ok) => ok,
        Err(e) => (e.code, e.status()),
    };
    st.log.push(RecordedRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        content_type: req.header("content-type").map(str::to_string),
        body: String::from_utf8_lossy(&req.body).into_owned(),
        status: code,
    });
    (code, body)
}

/// What a resource path names.
struct Target<'a> {
    rt: &'a ResourceType,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(shared: &Shared, st: &mut State, req: &HttpRequest) -> ApiResult {
    let bearer = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "));
    // An issued token is refused once expired, whether or not tokens are required.
    let issued = bearer.and_then(|t| st.issued.get(t));
    if issued.is_some_and(|t| t.expires_ms <= now_ms()) {
        return Err(ApiError::new(
            401,
            "Unauthorized",
            "Unauthorized: the token has expired".into(),
        ));
    }
    if st.require_token && bearer != Some(shared.token.as_str()) && issued.is_none() {
        return Err(ApiError::new(401, "Unauthorized", "Unauthorized".into()));
    }
    if let Some(inj) = st.injections.iter_mut().find(|i| {
        i.remaining > 0 && (i.method == "*" || i.method == req.method) && i.path == req.path
    }) {
        inj.remaining -= 1;
        let code = inj.code;
        st.injections.retain(|i| i.remaining > 0);
        return Err(ApiError::injected(code, &req.path));
    }
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    if let ["api", "v1", "namespaces", ns, "serviceaccounts", name, "token"] = segs.as_slice() {
        return if req.method == "POST" {
            token_request(shared, st, req, ns, name)
        } else {
            Err(ApiError::method_not_allowed())
        };
    }
    if let Some(doc) = discovery(shared, &segs) {
        return if req.method == "GET" {
            Ok((200, doc))
        } else {
            Err(ApiError::method_not_allowed())
        };
    }
    let target = parse_target(shared, &segs).ok_or_else(ApiError::no_route)?;
    dispatch(st, req, &target)
}

/// `POST .../serviceaccounts/<name>/token`: a TokenRequest, answered as the real server
/// does (its `spec.boundObjectRef` is not supported: tokens here are bound to nothing).
fn token_request(
    shared: &Shared,
    st: &mut State,
    req: &HttpRequest,
    ns: &str,
    name: &str,
) -> ApiResult {
    let accounts = shared
        .find_resource("serviceaccounts")
        .ok_or_else(ApiError::no_route)?;
    if !st.objects.contains_key(&key(accounts, ns, name)) {
        return Err(ApiError::not_found(accounts, name));
    }
    let body = parse_body(req)?;
    if body["kind"] != "TokenRequest" || body["apiVersion"] != "authentication.k8s.io/v1" {
        return Err(ApiError::bad_request(&format!(
            "the body is not an authentication.k8s.io/v1 TokenRequest: {}",
            shown(&body["kind"])
        )));
    }
    let requested = match &body["spec"]["expirationSeconds"] {
        Value::Null => 3600,
        v => v.as_u64().ok_or_else(|| {
            ApiError::bad_request(&format!("spec.expirationSeconds is not an integer: {v}"))
        })?,
    };
    let too = |why: &str| {
        ApiError::new(
            422,
            "Invalid",
            format!(
                "TokenRequest.authentication.k8s.io \"{name}\" is invalid: \
                 spec.expirationSeconds: Invalid value: {requested}: {why}"
            ),
        )
    };
    if requested < 600 {
        return Err(too("may not specify a duration less than 10 minutes"));
    }
    if requested > 1 << 32 {
        return Err(too("may not specify a duration larger than 2^32 seconds"));
    }
    let cap = st.max_token_lifetime.unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME);
    let lifetime = Duration::from_secs(requested).min(cap);
    let (token, expires) = st.issue(ns, name, lifetime);
    let audiences = match &body["spec"]["audiences"] {
        Value::Array(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!(["https://kubernetes.default.svc.cluster.local"]),
    };
    Ok((
        201,
        json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": lifetime.as_secs(),
                     "boundObjectRef": null},
            "status": {"token": token, "expirationTimestamp": rfc3339(expires)},
        }),
    ))
}

fn parse_target<'a>(shared: &'a Shared, segs: &[&str]) -> Option<Target<'a>> {
    let rest = match segs {
        ["api", "v1", rest @ ..] => (rest, ""),
        ["apis", CALICO_GROUP, CALICO_VERSION, rest @ ..] => (rest, CALICO_GROUP),
        _ => return None,
    };
    let (rest, group) = rest;
    let find = |plural: &str| {
        shared
            .resources
            .iter()
            .find(|r| r.plural == plural && r.group == group)
    };
    let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // `namespaces/<ns>/<plural>...` is a namespaced resource; `namespaces[/<name>[/sub]]`
    // is the Namespace kind itself.
    let (ns, rest): (Option<String>, Vec<String>) = match rest {
        ["namespaces", ns, plural, more @ ..] if *plural != "status" && *plural != "finalize" => {
            let mut v = vec![plural.to_string()];
            v.extend(strings(more));
            (Some(ns.to_string()), v)
        }
        other => (None, strings(other)),
    };
    let rt = find(rest.first()?)?;
    if rt.namespaced != ns.is_some() && !(rt.namespaced && rest.len() == 1) {
        return None;
    }
    if rest.len() > 3 {
        return None;
    }
    let sub = rest.get(2).cloned();
    if sub
        .as_deref()
        .is_some_and(|s| s != "status" || !rt.status_subresource)
    {
        return None;
    }
    Some(Target {
        rt,
        ns,
        name: rest.get(1).cloned(),
        sub,
    })
}

fn dispatch(st: &mut State, req: &HttpRequest, t: &Target) -> ApiResult {
    // Namespaced kinds have a cross-namespace path for lists only.
    if t.rt.namespaced && t.ns.is_none() && (req.method != "GET" || t.name.is_some()) {
        return Err(ApiError::no_route());
    }
    let ns = t.ns.clone().unwrap_or_default();
    match (req.method.as_str(), &t.name) {
        ("GET", None) => list(st, req, t.rt, t.ns.as_deref()),
        ("GET", Some(name)) => st
            .objects
            .get(&key(t.rt, &ns, name))
            .cloned()
            .map(|o| (200, o))
            .ok_or_else(|| ApiError::not_found(t.rt, name)),
        ("POST", None) if t.rt.is_crd() => {
            let body = parse_body(req)?;
            create(st, t.rt, &ns, body)
        }
        ("PUT", Some(name)) if t.rt.is_crd() => {
            let body = parse_body(req)?;
            update(st, t.rt, &ns, name, t.sub.as_deref(), body, UpdateKind::Put)
        }
        // Pods are the only core kind CNI writes (its status annotations).
        ("PATCH", Some(name)) if t.rt.is_crd() || t.rt.plural == "pods" => {
            patch(st, req, t, &ns, name)
        }
        ("DELETE", Some(name)) if t.rt.is_crd() => delete(st, req, t.rt, &ns, name),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn parse_body(req: &HttpRequest) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(&format!("error decoding request body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body is not a JSON object",
        ));
    }
    Ok(v)
}

// ================================================================================
// Discovery
// ================================================================================

fn discovery(shared: &Shared, segs: &[&str]) -> Option<Value> {
    let resources = |group: &str| -> Vec<Value> {
        let mut out = Vec::new();
        for r in shared.resources.iter().filter(|r| r.group == group) {
            let verbs = if r.is_crd() {
                json!(["delete", "get", "list", "patch", "create", "update"])
            } else {
                json!(["get", "list", "patch"])
            };
            out.push(json!({"name": r.plural, "singularName": r.singular,
                "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs}));
            if r.status_subresource {
                out.push(json!({"name": format!("{}/status", r.plural), "singularName": "",
                    "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
            }
        }
        out
    };
    let gv = json!({"groupVersion": format!("{CALICO_GROUP}/{CALICO_VERSION}"), "version": CALICO_VERSION});
    let group = json!({"name": CALICO_GROUP, "versions": [gv.clone()], "preferredVersion": gv});
    Some(match segs {
        ["version"] => json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5", "compiler": "gc",
            "platform": "linux/amd64"}),
        ["api"] => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
        ["api", "v1"] => json!({"kind": "APIResourceList", "groupVersion": "v1",
            "resources": resources("")}),
        ["apis"] => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}),
        ["apis", CALICO_GROUP] => {
            let mut g = group;
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        }
        ["apis", CALICO_GROUP, CALICO_VERSION] => json!({"kind": "APIResourceList",
            "apiVersion": "v1", "groupVersion": format!("{CALICO_GROUP}/{CALICO_VERSION}"),
            "resources": resources(CALICO_GROUP)}),
        _ => return None,
    })
}

// ================================================================================
// Verbs
// ================================================================================

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn list(st: &State, req: &HttpRequest, rt: &ResourceType, ns: Option<&str>) -> ApiResult {
    if req
        .query_param("watch")
        .is_some_and(|w| w == "true" || w == "1")
    {
        return Err(ApiError::bad_request(
            "watch is not supported by the fake API server",
        ));
    }
    let labels = match req.query_param("labelSelector") {
        Some(s) => selector::parse_labels(&s).map_err(|e| ApiError::bad_request(&e))?,
        None => Vec::new(),
    };
    let fields = match req.query_param("fieldSelector") {
        Some(s) => selector::parse_fields(&s, rt).map_err(|e| ApiError::bad_request(&e))?,
        None => Vec::new(),
    };
    let limit = match req.query_param("limit") {
        Some(l) if !l.is_empty() => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(&format!("invalid limit {l:?}")))?,
        _ => 0,
    };
    let start_after = req.query_param("continue").unwrap_or_default();
    let mut items = Vec::new();
    let mut more = 0usize;
    let mut last_key = String::new();
    for ((plural, ons, name), obj) in &st.objects {
        if *plural != rt.plural || ns.is_some_and(|n| n != ons) {
            continue;
        }
        let k = format!("{ons}/{name}");
        if !start_after.is_empty() && k <= start_after {
            continue;
        }
        if !selector::matches_labels(&labels, obj) || !selector::matches_fields(&fields, obj) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            more += 1;
            continue;
        }
        let mut item = obj.clone();
        // Typed lists of core kinds carry no per-item TypeMeta; custom resources keep it.
        if !rt.is_crd() {
            if let Some(m) = item.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
        }
        items.push(item);
        last_key = k;
    }
    let mut meta = json!({"resourceVersion": st.rv.to_string()});
    if more > 0 {
        meta["continue"] = json!(last_key);
        meta["remainingItemCount"] = json!(more);
    }
    Ok((
        200,
        json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": meta, "items": items}),
    ))
}

/// ObjectMeta fields; everything else under metadata is dropped, as the server's typed
/// ObjectMeta decoding does.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// TypeMeta checks of a custom resource body (apiextensions: decoding, then the
/// validator's `ValidateTypeMeta`).
fn check_type_meta(rt: &ResourceType, obj: &Value, name: &str) -> Result<(), ApiError> {
    let kind = obj["kind"].as_str().unwrap_or_default();
    if kind.is_empty() {
        return Err(ApiError::bad_request(&format!(
            "Object 'Kind' is missing in '{obj}'"
        )));
    }
    let av = obj["apiVersion"].as_str().unwrap_or_default();
    if av != rt.api_version() {
        return Err(ApiError::bad_request(&format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if kind != rt.kind {
        return Err(ApiError::invalid(
            rt,
            name,
            vec![FieldError::invalid(
                "kind",
                &json!(kind),
                &format!("must be {}", rt.kind),
            )],
        ));
    }
    Ok(())
}

/// Namespace of the body against the URL's: namespaced kinds take the URL's when the
/// body has none; cluster-scoped kinds drop it.
fn settle_namespace(rt: &ResourceType, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
    let body_ns = meta_str(obj, "namespace").to_string();
    let meta = &mut obj["metadata"];
    if rt.namespaced {
        if body_ns.is_empty() {
            meta["namespace"] = json!(ns);
        } else if body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    Ok(())
}

/// The pipeline a custom resource body goes through before storage: metadata coercion,
/// pruning, defaulting, validation against the schema (and the old object for
/// transition rules).
fn admit(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    name: &str,
) -> Result<(), ApiError> {
    let mut errs = validate::metadata(obj, rt.is_crd());
    if let Some(schema) = &rt.schema {
        schema::prune(obj, schema, true);
        schema::apply_defaults(obj, schema);
        schema::validate(obj, schema, "", old, &mut errs);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, name, errs))
    }
}

fn create(st: &mut State, rt: &ResourceType, ns: &str, mut obj: Value) -> ApiResult {
    ensure_metadata(&mut obj)?;
    let mut name = meta_str(&obj, "name").to_string();
    check_type_meta(rt, &obj, &name)?;
    settle_namespace(rt, &mut obj, ns)?;
    if !meta_str(&obj, "resourceVersion").is_empty() {
        // etcd3's store refuses this with a plain error, which the server answers as 500.
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if name.is_empty() {
        let prefix = meta_str(&obj, "generateName").to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                vec![FieldError::new(
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        name = format!("{prefix}{}", random_suffix());
        obj["metadata"]["name"] = json!(name);
    }
    let meta = &mut obj["metadata"];
    meta["uid"] = json!(new_uid());
    meta["creationTimestamp"] = json!(now_rfc3339());
    meta["generation"] = json!(1);
    if let Some(m) = meta.as_object_mut() {
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
    }
    if rt.status_subresource {
        // The main resource cannot set status when a status subresource exists.
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    admit(rt, &mut obj, None, &name)?;
    let k = key(rt, ns, &name);
    if st.objects.contains_key(&k) {
        return Err(ApiError::already_exists(rt, &name));
    }
    obj["metadata"]["resourceVersion"] = json!(st.next_rv());
    st.objects.insert(k, obj.clone());
    Ok((201, obj))
}

#[derive(Clone, Copy, PartialEq)]
enum UpdateKind {
    Put,
    Patch,
}

fn update(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    mut obj: Value,
    how: UpdateKind,
) -> ApiResult {
    let k = key(rt, ns, name);
    let Some(old) = st.objects.get(&k).cloned() else {
        return Err(ApiError::not_found(rt, name));
    };
    ensure_metadata(&mut obj)?;
    if how == UpdateKind::Put {
        // A PUT body's uid is a storage precondition, checked before anything else.
        let uid = meta_str(&obj, "uid");
        if !uid.is_empty() && uid != meta_str(&old, "uid") {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
    }
    if rt.is_crd() {
        check_type_meta(rt, &obj, name)?;
    }
    let body_name = meta_str(&obj, "name");
    if body_name != name {
        return Err(ApiError::bad_request(&format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    settle_namespace(rt, &mut obj, ns)?;
    match &obj["metadata"]["resourceVersion"] {
        Value::String(rv) if !rv.is_empty() => {
            if rv.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(&format!(
                    "invalid resourceVersion {rv:?}"
                )));
            }
            if rv != meta_str(&old, "resourceVersion") {
                return Err(ApiError::stale(rt, name));
            }
        }
        Value::Null | Value::String(_) => {
            if rt.is_crd() {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    vec![FieldError::invalid(
                        "metadata.resourceVersion",
                        &json!("0x0"),
                        "must be specified for an update",
                    )],
                ));
            }
            // Core kinds allow unconditional updates.
        }
        other => {
            return Err(ApiError::bad_request(&format!(
                "metadata.resourceVersion must be a string, not {other}"
            )))
        }
    }
    subresource_rules(rt, name, sub, &old, &mut obj)?;
    // System fields: the uid may be omitted but never changed; the rest is the server's.
    let uid = meta_str(&obj, "uid").to_string();
    if !uid.is_empty() && uid != meta_str(&old, "uid") {
        return Err(ApiError::invalid(
            rt,
            name,
            vec![FieldError::invalid(
                "metadata.uid",
                &json!(uid),
                "field is immutable",
            )],
        ));
    }
    for f in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
    ] {
        keep_old(&mut obj["metadata"], &old["metadata"], f);
    }
    if !rt.is_crd() {
        obj["kind"] = json!(rt.kind);
        obj["apiVersion"] = json!(rt.api_version());
    }
    admit(rt, &mut obj, Some(&old), name)?;
    if obj == old {
        // etcd3's store does not write an unchanged object: no new resourceVersion.
        return Ok((200, old));
    }
    if rt.is_crd() && content_changed(rt, &old, &obj) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
        obj["metadata"]["generation"] = json!(generation + 1);
    }
    obj["metadata"]["resourceVersion"] = json!(st.next_rv());
    let finalizing = !obj["metadata"]["deletionTimestamp"].is_null()
        && obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
    if finalizing {
        // The last finalizer is gone from an object being deleted: it goes now.
        st.objects.remove(&k);
    } else {
        st.objects.insert(k, obj.clone());
    }
    Ok((200, obj))
}

/// An absent metadata is an empty one; any other non-object is a decoding error.
fn ensure_metadata(obj: &mut Value) -> Result<(), ApiError> {
    match &obj["metadata"] {
        Value::Object(_) => Ok(()),
        Value::Null => {
            obj["metadata"] = json!({});
            Ok(())
        }
        other => Err(ApiError::bad_request(&format!(
            "metadata must be an object, not {other}"
        ))),
    }
}

/// Sets `dst[field]` to `src[field]`, or removes it when `src` has none.
fn keep_old(dst: &mut Value, src: &Value, field: &str) {
    match src.get(field) {
        Some(v) => dst[field] = v.clone(),
        None => {
            if let Some(m) = dst.as_object_mut() {
                m.remove(field);
            }
        }
    }
}

/// What each path may change: `/status` changes the status only (pods: also metadata,
/// but not ownerReferences, as the pod status strategy allows); the main resource of a
/// kind with a status subresource keeps the old status; a pod's spec does not change.
fn subresource_rules(
    rt: &ResourceType,
    name: &str,
    sub: Option<&str>,
    old: &Value,
    obj: &mut Value,
) -> Result<(), ApiError> {
    if sub == Some("status") {
        if rt.is_crd() {
            let new = std::mem::replace(obj, old.clone());
            keep_old(obj, &new, "status");
        } else {
            keep_old(obj, old, "spec");
            keep_old(&mut obj["metadata"], &old["metadata"], "ownerReferences");
        }
        return Ok(());
    }
    if !rt.is_crd() && obj.get("spec") != old.get("spec") {
        return Err(ApiError::invalid(
            rt,
            name,
            vec![FieldError::new(
                "spec",
                "FieldValueForbidden",
                "Forbidden: pod updates may not change fields other than those the real server allows (the fake allows none)".into(),
            )],
        ));
    }
    if rt.status_subresource {
        keep_old(obj, old, "status");
    }
    Ok(())
}

/// Whether anything but metadata (and status, with a status subresource) changed: what
/// bumps `generation` for custom resources.
fn content_changed(rt: &ResourceType, old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if rt.status_subresource {
                m.remove("status");
            }
        }
        v
    };
    strip(old) != strip(new)
}

fn patch(st: &mut State, req: &HttpRequest, t: &Target, ns: &str, name: &str) -> ApiResult {
    let rt = t.rt;
    let ct = req
        .header("content-type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some(current) = st.objects.get(&key(rt, ns, name)).cloned() else {
        return Err(ApiError::not_found(rt, name));
    };
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(&format!("error decoding patch: {e}")))?;
    let patched = match ct.as_str() {
        "application/merge-patch+json" => {
            let mut doc = current;
            patching::merge(&mut doc, &body);
            doc
        }
        "application/strategic-merge-patch+json" if !rt.is_crd() => {
            if let Some(d) = patching::find_directive(&body) {
                return Err(ApiError::internal(&format!(
                    "strategic-merge directive {d} is not implemented by the fake API server"
                )));
            }
            let mut doc = current;
            patching::merge(&mut doc, &body);
            doc
        }
        "application/json-patch+json" => {
            patching::json_patch(current, &body).map_err(|e| ApiError::new(422, "Invalid", e))?
        }
        other => return Err(ApiError::unsupported_media(other)),
    };
    if !patched.is_object() {
        return Err(ApiError::bad_request(
            "the patch made the object a non-object",
        ));
    }
    update(
        st,
        rt,
        ns,
        name,
        t.sub.as_deref(),
        patched,
        UpdateKind::Patch,
    )
}

fn delete(st: &mut State, req: &HttpRequest, rt: &ResourceType, ns: &str, name: &str) -> ApiResult {
    let k = key(rt, ns, name);
    let Some(mut obj) = st.objects.get(&k).cloned() else {
        return Err(ApiError::not_found(rt, name));
    };
    let opts: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(&format!("error decoding DeleteOptions: {e}")))?
    };
    let pre = &opts["preconditions"];
    if let Some(uid) = pre["uid"].as_str() {
        if uid != meta_str(&obj, "uid") {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid")
                ),
            ));
        }
    }
    if let Some(rv) = pre["resourceVersion"].as_str() {
        if rv != meta_str(&obj, "resourceVersion") {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&obj, "resourceVersion")
                ),
            ));
        }
    }
    let has_finalizers = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            obj["metadata"]["resourceVersion"] = json!(st.next_rv());
            st.objects.insert(k, obj.clone());
        }
        return Ok((200, obj));
    }
    st.objects.remove(&k);
    st.next_rv();
    Ok((200, obj))
}

// ================================================================================
// Patches: JSON merge (RFC 7386), JSON patch (RFC 6902)
// ================================================================================

mod patching {
    use serde_json::{Map, Value};

    /// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
    pub(super) fn merge(target: &mut Value, patch: &Value) {
        let Value::Object(p) = patch else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    }

    /// The first strategic-merge directive key (`$patch`, `$retainKeys`, ...) if any.
    pub(super) fn find_directive(v: &Value) -> Option<String> {
        match v {
            Value::Object(m) => m.iter().find_map(|(k, v)| {
                if k.starts_with('$') {
                    Some(k.clone())
                } else {
                    find_directive(v)
                }
            }),
            Value::Array(a) => a.iter().find_map(find_directive),
            _ => None,
        }
    }

    fn unescape(token: &str) -> String {
        token.replace("~1", "/").replace("~0", "~")
    }

    fn split(path: &str) -> Result<(Vec<String>, String), String> {
        if !path.starts_with('/') {
            return Err(format!("invalid JSON pointer {path:?}"));
        }
        let mut tokens: Vec<String> = path[1..].split('/').map(unescape).collect();
        let last = tokens.pop().unwrap_or_default();
        Ok((tokens, last))
    }

    fn walk<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
        let mut cur = doc;
        for t in tokens {
            cur = match cur {
                Value::Object(m) => m
                    .get_mut(t)
                    .ok_or_else(|| format!("path {t:?} not found"))?,
                Value::Array(a) => {
                    let i: usize = t.parse().map_err(|_| format!("bad index {t:?}"))?;
                    a.get_mut(i)
                        .ok_or_else(|| format!("index {i} out of range"))?
                }
                _ => return Err(format!("cannot walk into a scalar at {t:?}")),
            };
        }
        Ok(cur)
    }

    /// RFC 6902 `add`, `remove`, `replace`, `test`, `copy`, `move`.
    pub(super) fn json_patch(mut doc: Value, ops: &Value) -> Result<Value, String> {
        let ops = ops.as_array().ok_or("a JSON patch must be an array")?;
        for op in ops {
            let path = op["path"].as_str().ok_or("operation without a path")?;
            let kind = op["op"].as_str().unwrap_or_default();
            match kind {
                "add" | "replace" | "test" | "remove" => {}
                "copy" | "move" => {
                    let from = op["from"].as_str().ok_or("copy/move without from")?;
                    let (ft, fl) = split(from)?;
                    let parent = walk(&mut doc, &ft)?;
                    let value = match parent {
                        Value::Object(m) if kind == "move" => m.remove(&fl),
                        Value::Object(m) => m.get(&fl).cloned(),
                        Value::Array(a) => {
                            let i: usize = fl.parse().map_err(|_| "bad index".to_string())?;
                            if i >= a.len() {
                                None
                            } else if kind == "move" {
                                Some(a.remove(i))
                            } else {
                                Some(a[i].clone())
                            }
                        }
                        _ => None,
                    }
                    .ok_or_else(|| format!("from {from:?} not found"))?;
                    add(&mut doc, path, value)?;
                    continue;
                }
                other => return Err(format!("unknown JSON patch op {other:?}")),
            }
            if kind == "add" {
                add(&mut doc, path, op["value"].clone())?;
                continue;
            }
            let (tokens, last) = split(path)?;
            let parent = walk(&mut doc, &tokens)?;
            let slot = match parent {
                Value::Object(m) => m.get_mut(&last),
                Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| format!("path {path:?} not found"))?;
            match kind {
                "replace" => *slot = op["value"].clone(),
                "test" => {
                    if *slot != op["value"] {
                        return Err(format!("testing value {path} failed"));
                    }
                }
                _ => match parent_remove(walk(&mut doc, &tokens)?, &last) {
                    true => {}
                    false => return Err(format!("path {path:?} not found")),
                },
            }
        }
        Ok(doc)
    }

    fn parent_remove(parent: &mut Value, last: &str) -> bool {
        match parent {
            Value::Object(m) => m.remove(last).is_some(),
            Value::Array(a) => match last.parse::<usize>() {
                Ok(i) if i < a.len() => {
                    a.remove(i);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
        if path.is_empty() {
            *doc = value;
            return Ok(());
        }
        let (tokens, last) = split(path)?;
        match walk(doc, &tokens)? {
            Value::Object(m) => {
                m.insert(last, value);
                Ok(())
            }
            Value::Array(a) if last == "-" => {
                a.push(value);
                Ok(())
            }
            Value::Array(a) => {
                let i: usize = last.parse().map_err(|_| format!("bad index {last:?}"))?;
                if i > a.len() {
                    return Err(format!("index {i} out of range"));
                }
                a.insert(i, value);
                Ok(())
            }
            _ => Err(format!("cannot add at {path:?}")),
        }
    }
}

// ================================================================================
// Structural schemas: pruning, defaulting, validation
// ================================================================================

mod schema {
    use super::{shown, FieldError, OBJECT_META_FIELDS};
    use serde_json::{Map, Value};

    fn flag(s: &Value, name: &str) -> bool {
        s.get(name).and_then(Value::as_bool).unwrap_or(false)
    }

    fn child(path: &str, field: &str) -> String {
        if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    }

    /// The schema for a key of an object: its property, else additionalProperties.
    fn field_schema<'a>(s: &'a Value, k: &str) -> Option<&'a Value> {
        s.get("properties")
            .and_then(|p| p.get(k))
            .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
    }

    /// Drops what the schema does not know (unless preserved), and `null` in
    /// non-nullable object fields that have no default.
    pub(super) fn prune(v: &mut Value, s: &Value, root: bool) {
        match v {
            Value::Object(m) => {
                let preserve = flag(s, "x-kubernetes-preserve-unknown-fields")
                    || flag(s, "x-kubernetes-int-or-string")
                    || s.get("additionalProperties") == Some(&Value::Bool(true));
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    if root && k == "metadata" {
                        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                            meta.retain(|f, _| OBJECT_META_FIELDS.contains(&f.as_str()));
                        }
                        continue;
                    }
                    match field_schema(s, &k) {
                        Some(fs) => {
                            let nullable = flag(fs, "nullable");
                            let drop_null = m.get(&k).is_some_and(Value::is_null)
                                && !nullable
                                && fs.get("default").is_none();
                            if drop_null {
                                m.remove(&k);
                            } else if let Some(child) = m.get_mut(&k) {
                                prune(child, fs, false);
                            }
                        }
                        None if preserve => {}
                        None => {
                            m.remove(&k);
                        }
                    }
                }
            }
            Value::Array(a) => {
                if let Some(items) = s.get("items") {
                    for x in a {
                        prune(x, items, false);
                    }
                }
            }
            _ => {}
        }
    }

    /// Fills in `default`s of missing properties (and of non-nullable nulls).
    pub(super) fn apply_defaults(v: &mut Value, s: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(props)) = s.get("properties") {
                    for (k, ps) in props {
                        if let Some(d) = ps.get("default") {
                            let missing = match m.get(k) {
                                None => true,
                                Some(Value::Null) => !flag(ps, "nullable"),
                                Some(_) => false,
                            };
                            if missing {
                                m.insert(k.clone(), d.clone());
                            }
                        }
                    }
                }
                for (k, child) in m.iter_mut() {
                    if let Some(fs) = field_schema(s, k) {
                        apply_defaults(child, fs);
                    }
                }
            }
            Value::Array(a) => {
                if let Some(items) = s.get("items") {
                    for x in a {
                        apply_defaults(x, items);
                    }
                }
            }
            _ => {}
        }
    }

    fn type_name(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    fn is_integer(v: &Value) -> bool {
        match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }

    fn type_ok(t: &str, v: &Value) -> bool {
        match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => is_integer(v),
            "number" => v.is_number(),
            _ => true,
        }
    }

    fn type_error(path: &str, v: &Value, want: &str) -> FieldError {
        let got = type_name(v);
        FieldError::new(
            path,
            "FieldValueTypeInvalid",
            format!("Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""),
        )
    }

    /// Validates `v` at `path` against `s`; `old` is the value at the same path in the
    /// stored object, for `self == oldSelf` rules.
    pub(super) fn validate(
        v: &Value,
        s: &Value,
        path: &str,
        old: Option<&Value>,
        errs: &mut Vec<FieldError>,
    ) {
        if v.is_null() {
            if !flag(s, "nullable") {
                let want = s.get("type").and_then(Value::as_str).unwrap_or("object");
                if s.get("type").is_some() || flag(s, "x-kubernetes-int-or-string") {
                    errs.push(type_error(path, v, want));
                }
            }
            return;
        }
        if flag(s, "x-kubernetes-int-or-string") {
            if !is_integer(v) && !v.is_string() {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{path} in body must be of type integer or string"),
                ));
                return;
            }
        } else if let Some(t) = s.get("type").and_then(Value::as_str) {
            if !type_ok(t, v) {
                errs.push(type_error(path, v, t));
                return;
            }
        }
        enum_check(v, s, path, errs);
        bounds(v, s, path, errs);
        format_check(v, s, path, errs);
        transition_rules(v, s, path, old, errs);
        match v {
            Value::Object(m) => object(m, s, path, old, errs),
            Value::Array(a) => array(a, s, path, errs),
            _ => {}
        }
    }

    fn object(
        m: &Map<String, Value>,
        s: &Value,
        path: &str,
        old: Option<&Value>,
        errs: &mut Vec<FieldError>,
    ) {
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    errs.push(FieldError::required(&child(path, r)));
                }
            }
        }
        for (k, cv) in m {
            // Metadata is ObjectMeta, checked on its own (validate::metadata).
            if path.is_empty() && k == "metadata" {
                continue;
            }
            let Some(fs) = field_schema(s, k) else {
                continue;
            };
            let old_child = old.and_then(|o| o.get(k));
            validate(cv, fs, &child(path, k), old_child, errs);
        }
        let n = m.len() as u64;
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
            if n > max {
                errs.push(FieldError::new(
                    path,
                    "FieldValueTooMany",
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
        }
    }

    fn array(a: &[Value], s: &Value, path: &str, errs: &mut Vec<FieldError>) {
        if let Some(items) = s.get("items") {
            for (i, x) in a.iter().enumerate() {
                // Transition rules do not reach into list items by index.
                validate(x, items, &format!("{path}[{i}]"), None, errs);
            }
        }
        let n = a.len() as u64;
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if n > max {
                errs.push(FieldError::new(
                    path,
                    "FieldValueTooMany",
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if n < min {
                errs.push(FieldError::invalid(
                    path,
                    &Value::from(n),
                    &format!("{path} in body should have at least {min} items"),
                ));
            }
        }
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                for (i, x) in a.iter().enumerate() {
                    if a[..i].contains(x) {
                        errs.push(FieldError::new(
                            &format!("{path}[{i}]"),
                            "FieldValueDuplicate",
                            format!("Duplicate value: {}", shown(x)),
                        ));
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let ident = |x: &Value| keys.iter().map(|k| x[*k].clone()).collect::<Vec<_>>();
                for (i, x) in a.iter().enumerate() {
                    if a[..i].iter().any(|y| ident(y) == ident(x)) {
                        let shown_keys: Map<String, Value> = keys
                            .iter()
                            .map(|k| (k.to_string(), x[*k].clone()))
                            .collect();
                        errs.push(FieldError::new(
                            &format!("{path}[{i}]"),
                            "FieldValueDuplicate",
                            format!("Duplicate value: {}", Value::Object(shown_keys)),
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    fn enum_check(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
        if let Some(Value::Array(allowed)) = s.get("enum") {
            if !allowed.contains(v) {
                let list: Vec<String> = allowed.iter().map(shown).collect();
                errs.push(FieldError::new(
                    path,
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: {}: supported values: {}",
                        shown(v),
                        list.join(", ")
                    ),
                ));
            }
        }
    }

    fn bounds(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
        if let Some(x) = v.as_f64() {
            let excl_min = flag(s, "exclusiveMinimum");
            let excl_max = flag(s, "exclusiveMaximum");
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                if x < min || (excl_min && x == min) {
                    let rel = if excl_min {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errs.push(FieldError::invalid(
                        path,
                        v,
                        &format!("{path} in body should be {rel} {}", s["minimum"]),
                    ));
                }
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                if x > max || (excl_max && x == max) {
                    let rel = if excl_max {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    errs.push(FieldError::invalid(
                        path,
                        v,
                        &format!("{path} in body should be {rel} {}", s["maximum"]),
                    ));
                }
            }
        }
        if let Some(text) = v.as_str() {
            let n = text.chars().count() as u64;
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                if n > max {
                    errs.push(FieldError::new(
                        path,
                        "FieldValueTooLong",
                        format!("Too long: may not be more than {max} bytes"),
                    ));
                }
            }
            if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
                if n < min {
                    errs.push(FieldError::invalid(
                        path,
                        v,
                        &format!("{path} in body should be at least {min} chars long"),
                    ));
                }
            }
        }
    }

    /// Formats the apiextensions server checks on strings; numeric formats (int32,
    /// int64) and unknown ones are not checked, as there.
    fn format_check(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
        let (Some(text), Some(fmt)) = (v.as_str(), s.get("format").and_then(Value::as_str)) else {
            return;
        };
        let ok = match fmt {
            "cidr" => is_cidr(text),
            "date-time" | "datetime" => is_date_time(text),
            "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
            "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
            _ => true,
        };
        if !ok {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{path} in body must be of type {fmt}: {}", shown(v)),
            ));
        }
    }

    /// Go's `net.ParseCIDR`: an address and a prefix length within its family.
    pub(super) fn is_cidr(text: &str) -> bool {
        let Some((ip, len)) = text.split_once('/') else {
            return false;
        };
        let Ok(len) = len.parse::<u8>() else {
            return false;
        };
        if len.to_string() != text.split_once('/').map(|x| x.1).unwrap_or_default() {
            return false;
        }
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => len <= 32,
            Ok(std::net::IpAddr::V6(_)) => len <= 128,
            Err(_) => false,
        }
    }

    /// RFC 3339 date-times, with the leniency of the server's `strfmt` (fractions,
    /// `Z` or a numeric offset).
    pub(super) fn is_date_time(text: &str) -> bool {
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| {
            b.get(r.clone())
                .is_some_and(|s| s.len() == r.len() && s.iter().all(u8::is_ascii_digit))
        };
        if !(digits(0..4)
            && b.get(4) == Some(&b'-')
            && digits(5..7)
            && b.get(7) == Some(&b'-')
            && digits(8..10)
            && matches!(b.get(10), Some(b'T' | b't' | b' '))
            && digits(11..13)
            && b.get(13) == Some(&b':')
            && digits(14..16)
            && b.get(16) == Some(&b':')
            && digits(17..19))
        {
            return false;
        }
        let num = |r: std::ops::Range<usize>| text[r].parse::<u32>().unwrap_or(99);
        if !(1..=12).contains(&num(5..7))
            || !(1..=31).contains(&num(8..10))
            || num(11..13) > 23
            || num(14..16) > 59
            || num(17..19) > 60
        {
            return false;
        }
        let mut rest = &text[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return false;
            }
            rest = &frac[n..];
        }
        match rest {
            "Z" | "z" => true,
            _ => {
                let o = rest.as_bytes();
                o.len() == 6
                    && matches!(o[0], b'+' | b'-')
                    && o[1..3].iter().all(u8::is_ascii_digit)
                    && o[3] == b':'
                    && o[4..6].iter().all(u8::is_ascii_digit)
            }
        }
    }

    /// CEL rules: only `self == oldSelf` (immutability) is understood; it applies on
    /// update when the old object had the field.
    fn transition_rules(
        v: &Value,
        s: &Value,
        path: &str,
        old: Option<&Value>,
        errs: &mut Vec<FieldError>,
    ) {
        let (Some(Value::Array(rules)), Some(old)) = (s.get("x-kubernetes-validations"), old)
        else {
            return;
        };
        for r in rules {
            let rule: String = r["rule"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            if rule == "self==oldSelf" && v != old {
                let msg = r["message"]
                    .as_str()
                    .unwrap_or("failed rule: self == oldSelf");
                errs.push(FieldError::invalid(path, &Value::from(type_name(v)), msg));
            }
        }
    }
}

// ================================================================================
// Metadata validation (names, labels, annotations)
// ================================================================================

mod validate {
    use super::FieldError;
    use serde_json::Value;

    const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

    fn is_label_part(s: &str) -> bool {
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let b = s.as_bytes();
        !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&c| alnum(c) || c == b'-')
    }

    pub(super) fn is_dns1123_subdomain(s: &str) -> bool {
        s.len() <= 253 && s.split('.').all(is_label_part)
    }

    /// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
    fn is_name_part(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    }

    /// A label or annotation key: `[prefix/]name`, the prefix a DNS-1123 subdomain.
    pub(super) fn is_qualified_name(s: &str) -> bool {
        match s.split_once('/') {
            Some((prefix, name)) => {
                !prefix.is_empty() && is_dns1123_subdomain(prefix) && is_name_part(name)
            }
            None => is_name_part(s),
        }
    }

    pub(super) fn is_label_value(s: &str) -> bool {
        s.is_empty() || is_name_part(s)
    }

    /// ObjectMeta checks common to every kind; `crd` adds the DNS-1123 subdomain name
    /// rule of custom resources.
    pub(super) fn metadata(obj: &Value, crd: bool) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let meta = &obj["metadata"];
        let name = meta["name"].as_str().unwrap_or_default();
        if crd && !name.is_empty() && !is_dns1123_subdomain(name) {
            errs.push(FieldError::invalid(
                "metadata.name",
                &Value::from(name),
                DNS1123_SUBDOMAIN_MSG,
            ));
        }
        for (field, values_are_labels) in [("labels", true), ("annotations", false)] {
            match &meta[field] {
                Value::Null => {}
                Value::Object(m) => {
                    let mut total = 0usize;
                    for (k, v) in m {
                        let path = format!("metadata.{field}");
                        if !is_qualified_name(k) {
                            errs.push(FieldError::invalid(
                                &path,
                                &Value::from(k.as_str()),
                                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                            ));
                        }
                        let Some(text) = v.as_str() else {
                            errs.push(FieldError::invalid(
                                &format!("{path}.{k}"),
                                v,
                                "must be a string",
                            ));
                            continue;
                        };
                        total += k.len() + text.len();
                        if values_are_labels && !is_label_value(text) {
                            errs.push(FieldError::invalid(
                                &path,
                                v,
                                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                            ));
                        }
                    }
                    if !values_are_labels && total > 256 * 1024 {
                        errs.push(FieldError::new(
                            "metadata.annotations",
                            "FieldValueTooLong",
                            "Too long: must have at most 262144 bytes".into(),
                        ));
                    }
                }
                other => errs.push(FieldError::invalid(
                    &format!("metadata.{field}"),
                    other,
                    "must be a map of strings",
                )),
            }
        }
        errs
    }
}

// ================================================================================
// Selectors
// ================================================================================

mod selector {
    use super::{validate, ResourceType};
    use serde_json::Value;

    #[derive(Debug)]
    pub(super) enum Req {
        Eq(String, String),
        Ne(String, String),
        In(String, Vec<String>),
        NotIn(String, Vec<String>),
        Exists(String),
        NotExists(String),
        Gt(String, i64),
        Lt(String, i64),
    }

    /// Splits at commas outside parentheses.
    fn terms(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut depth = 0i32;
        let mut cur = String::new();
        for c in s.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        out.push(cur);
        out
    }

    fn key(k: &str) -> Result<String, String> {
        let k = k.trim();
        if validate::is_qualified_name(k) {
            Ok(k.to_string())
        } else {
            Err(format!(
                "unable to parse requirement: invalid label key {k:?}"
            ))
        }
    }

    fn value(v: &str) -> Result<String, String> {
        let v = v.trim();
        if validate::is_label_value(v) {
            Ok(v.to_string())
        } else {
            Err(format!(
                "unable to parse requirement: invalid label value {v:?}"
            ))
        }
    }

    pub(super) fn parse_labels(s: &str) -> Result<Vec<Req>, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(reqs);
        }
        for term in terms(s) {
            let t = term.trim();
            if t.is_empty() {
                return Err(format!("found ',', expected: identifier in {s:?}"));
            }
            if let Some(k) = t.strip_prefix('!') {
                reqs.push(Req::NotExists(key(k)?));
            } else if let Some((lhs, set)) = t.split_once('(') {
                let set = set
                    .strip_suffix(')')
                    .ok_or_else(|| format!("unclosed set in {t:?}"))?;
                let mut words = lhs.split_whitespace();
                let (Some(k), Some(op), None) = (words.next(), words.next(), words.next()) else {
                    return Err(format!("unable to parse requirement {t:?}"));
                };
                let values = set.split(',').map(value).collect::<Result<Vec<_>, _>>()?;
                reqs.push(match op {
                    "in" => Req::In(key(k)?, values),
                    "notin" => Req::NotIn(key(k)?, values),
                    _ => return Err(format!("unknown operator {op:?} in {t:?}")),
                });
            } else if let Some((k, v)) = t.split_once("!=") {
                reqs.push(Req::Ne(key(k)?, value(v)?));
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                reqs.push(Req::Eq(key(k)?, value(v)?));
            } else if let Some((k, v)) = t.split_once('>') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad number in {t:?}"))?;
                reqs.push(Req::Gt(key(k)?, n));
            } else if let Some((k, v)) = t.split_once('<') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad number in {t:?}"))?;
                reqs.push(Req::Lt(key(k)?, n));
            } else {
                reqs.push(Req::Exists(key(t)?));
            }
        }
        Ok(reqs)
    }

    pub(super) fn matches_labels(reqs: &[Req], obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        reqs.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::Gt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Req::Lt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }

    /// (field path, wanted value, equal?)
    pub(super) type FieldReq = (String, String, bool);

    pub(super) fn parse_fields(s: &str, rt: &ResourceType) -> Result<Vec<FieldReq>, String> {
        let mut out = Vec::new();
        if s.trim().is_empty() {
            return Ok(out);
        }
        for term in s.split(',') {
            let (f, v, eq) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let f = f.trim();
            let known = f == "metadata.name"
                || (f == "metadata.namespace" && rt.namespaced)
                || rt.extra_fields.contains(&f);
            if !known {
                return Err(format!("field label not supported: {f}"));
            }
            out.push((f.to_string(), v.trim().to_string(), eq));
        }
        Ok(out)
    }

    pub(super) fn matches_fields(reqs: &[FieldReq], obj: &Value) -> bool {
        reqs.iter().all(|(f, want, eq)| {
            let mut cur = obj;
            for part in f.split('.') {
                cur = &cur[part];
            }
            let got = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

// ================================================================================
// Identifiers and time
// ================================================================================

fn random_u64() -> u64 {
    // RandomState is seeded from the OS per process and varies per instance: enough for
    // uids and tokens in tests, without a dependency.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A version-4-shaped UUID.
fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Five characters from the alphabet the real server uses for generateName suffixes.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
            r /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's civil-from-days).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn formats() {
        assert!(schema::is_cidr("10.0.0.0/8"));
        assert!(schema::is_cidr("fd00::/64"));
        assert!(!schema::is_cidr("10.0.0.0/33"));
        assert!(!schema::is_cidr("10.0.0.0"));
        assert!(schema::is_date_time("2025-10-01T12:00:00Z"));
        assert!(schema::is_date_time("2025-10-01T12:00:00.123+02:00"));
        assert!(!schema::is_date_time("2025-13-01T12:00:00Z"));
        assert!(!schema::is_date_time("yesterday"));
    }

    #[test]
    fn names() {
        assert!(validate::is_dns1123_subdomain("10-244-1-64-26"));
        assert!(validate::is_dns1123_subdomain("node-1.example"));
        assert!(!validate::is_dns1123_subdomain("Node1"));
        assert!(!validate::is_dns1123_subdomain("-a"));
        assert!(!validate::is_dns1123_subdomain(&"a".repeat(254)));
        assert!(validate::is_qualified_name(
            "projectcalico.org/hostname-hash"
        ));
        assert!(!validate::is_qualified_name("/x"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Db%2Cc+d"), "a=b,c d");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn json_patch_ops() {
        let doc = json!({"a": {"b": [1, 2]}, "c": 1});
        let ops = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": 2},
            {"op": "test", "path": "/c", "value": 2},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "copy", "from": "/c", "path": "/d"}
        ]);
        let out = patching::json_patch(doc, &ops);
        assert_eq!(out, Ok(json!({"a": {"b": [2, 3]}, "c": 2, "d": 2})));
        let bad = patching::json_patch(
            json!({"c": 1}),
            &json!([{"op": "test", "path": "/c", "value": 2}]),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn uids_are_unique_and_shaped() {
        let a = new_uid();
        assert_eq!(a.len(), 36);
        assert_ne!(a, new_uid());
    }
}
