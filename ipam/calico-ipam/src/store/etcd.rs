//! The `etcdv3` datastore: a [`Kv`] over etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/maintenance/status`) on blocking HTTP/1.1.
//!
//! Why not gRPC: a CNI plugin lives for milliseconds. An async runtime and a gRPC stack cost
//! start-up time and binary size for nothing; the gateway speaks the same protobuf messages
//! as JSON (bytes in base64, 64-bit integers as strings) and every etcd since 3.4 serves it
//! on the client port.
//!
//! Compare-and-swap is an etcd transaction: create compares the key's create revision with 0,
//! update and delete compare its mod revision with the one read. A [`Revision`] is the key's
//! mod revision in decimal.
//!
//! Endpoints are tried in order; a request moves on to the next one when the current one
//! cannot be reached, and the endpoint that answered is tried first next time. A write whose
//! outcome is unknown (sent, then the connection broke) is not replayed elsewhere: it reports
//! [`StoreError::Unavailable`], which the plugin turns into "try again later". When no member
//! answered and one of them presented a certificate that fails verification against
//! `etcd_ca_cert_file`, retrying cannot help: that is [`StoreError::Misconfigured`].
//!
//! TLS is ours, not ureq's (the `tls` module says why).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use ureq::unversioned::transport::{Connector as _, TcpConnector};

use super::kv::{Kv, KvStore};
use super::{Result, Revision, StoreError};

mod srv;
mod tls;

pub use srv::NAMESERVER_ENV as DISCOVERY_NAMESERVER_ENV;

/// Calico's client default when no endpoint is configured.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// A node's etcd is on the cluster network: fail over quickly to the next member.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A whole request, connection included. A healthy etcd answers in milliseconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Responses larger than this are refused rather than read into memory.
const MAX_RESPONSE_BYTES: u64 = 256 << 20;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The `etcd_*` keys of the network configuration, as written there (empty = unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `etcd_endpoints`: comma-separated URLs.
    pub endpoints: Option<String>,
    pub key_file: Option<String>,
    pub cert_file: Option<String>,
    pub ca_cert_file: Option<String>,
    /// `etcd_scheme`: `http` or `https`, for `etcd_authority` and endpoints without one.
    pub scheme: Option<String>,
    /// `etcd_authority`: `host:port`, the older single-endpoint spelling.
    pub authority: Option<String>,
    /// `etcd_discovery_srv`: a domain whose SRV records list the members.
    pub discovery_srv: Option<String>,
}

/// `ETCD_USERNAME` / `ETCD_PASSWORD`: etcd's own authentication (its users and roles). The
/// password never appears in a message, a log line or a `Debug` print.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: String, password: String) -> Credentials {
        Credentials { username, password }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where etcd is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Base URLs (`http://host:port` or `https://host:port`), tried in this order.
    pub endpoints: Vec<String>,
    /// Client private key (PEM) for TLS client authentication; goes with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Client certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// The CA (PEM) that signed etcd's server certificates.
    pub ca_cert_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// The whole of one request to one endpoint.
    pub timeout: Duration,
    /// etcd users and roles: every request carries the token these earn.
    pub credentials: Option<Credentials>,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdConfigError {
    #[error(
        "invalid etcd_scheme {0:?}: use http or https (or leave it out: https when TLS files \
         are configured)"
    )]
    BadScheme(String),
    #[error("ETCD_PASSWORD is set but ETCD_USERNAME is not: etcd authenticates a named user")]
    PasswordWithoutUser,
    #[error(
        "multiple discovery or bootstrap options specified, use either etcd_endpoints or \
         etcd_discovery_srv"
    )]
    EndpointsAndDiscovery,
    #[error("etcd discovery: {0}")]
    Discovery(#[from] srv::SrvError),
    #[error("invalid etcd endpoint {0:?}: only http:// and https:// URLs are supported")]
    BadEndpoint(String),
    #[error("etcd_cert_file and etcd_key_file must be given together")]
    HalfClientCert,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no usable {what}")]
    BadPem { path: PathBuf, what: &'static str },
    #[error("{path}: {why}")]
    BadClientIdentity { path: PathBuf, why: String },
    #[error("TLS to etcd cannot be set up: {0}")]
    Tls(rustls::Error),
}

impl EtcdConfig {
    /// Plain endpoints, no TLS files, default timeouts.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            key_file: None,
            cert_file: None,
            ca_cert_file: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            credentials: None,
        }
    }

    /// The configuration Calico would use: each network-config value that is set wins;
    /// otherwise `ETCD_ENDPOINTS`, `ETCD_KEY_FILE`, `ETCD_CERT_FILE`, `ETCD_CA_CERT_FILE`
    /// from this process's environment (Calico exports the config values to the
    /// environment and reads the environment, so both sources apply). `ETCD_USERNAME` and
    /// `ETCD_PASSWORD` come from the environment only: Calico's network configuration has
    /// no key for them, and a password is better kept out of a world-readable conflist.
    ///
    /// Without endpoints, `etcd_authority` (`host:port`, with `etcd_scheme`) names the one
    /// etcd, as it did in Calico's older releases; Calico's current client accepts both keys
    /// and ignores them, falling back to `127.0.0.1:2379`, which on a node whose config
    /// names an authority is never what the operator meant.
    pub fn from_conf_and_env(conf: &EtcdSettings) -> Result<EtcdConfig, EtcdConfigError> {
        EtcdConfig::from_conf_and(conf, |name| std::env::var(name).ok())
    }

    /// [`EtcdConfig::from_conf_and_env`] with the environment given as a lookup function.
    pub fn from_conf_and(
        conf: &EtcdSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<EtcdConfig, EtcdConfigError> {
        let pick = |value: &Option<String>, var: &str| -> Option<String> {
            non_empty(value.clone()).or_else(|| non_empty(env(var)))
        };
        let key_file = pick(&conf.key_file, "ETCD_KEY_FILE").map(PathBuf::from);
        let cert_file = pick(&conf.cert_file, "ETCD_CERT_FILE").map(PathBuf::from);
        let ca_cert_file = pick(&conf.ca_cert_file, "ETCD_CA_CERT_FILE").map(PathBuf::from);
        if key_file.is_some() != cert_file.is_some() {
            return Err(EtcdConfigError::HalfClientCert);
        }
        // An endpoint without a scheme is TLS when TLS files are configured, as etcd's Go
        // client does it, unless etcd_scheme says otherwise.
        let tls = match non_empty(conf.scheme.clone()).as_deref().map(str::trim) {
            None => key_file.is_some() || ca_cert_file.is_some(),
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(EtcdConfigError::BadScheme(other.to_string())),
        };
        let listed = pick(&conf.endpoints, "ETCD_ENDPOINTS");
        let discovery = pick(&conf.discovery_srv, "ETCD_DISCOVERY_SRV");
        let listed = match (listed, discovery) {
            (Some(_), Some(_)) => return Err(EtcdConfigError::EndpointsAndDiscovery),
            (Some(listed), None) => listed,
            (None, Some(domain)) => {
                let resolver = srv::nameserver(env(srv::NAMESERVER_ENV).as_deref())?;
                srv::discover(&domain, resolver)?.join(",")
            }
            (None, None) => non_empty(conf.authority.clone()).unwrap_or_default(),
        };
        let mut endpoints = listed
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| normalize_endpoint(e, tls))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            endpoints.push(DEFAULT_ENDPOINT.to_string());
        }
        let credentials = match (
            non_empty(env("ETCD_USERNAME")),
            env("ETCD_PASSWORD").filter(|p| !p.is_empty()),
        ) {
            (Some(user), password) => Some(Credentials::new(
                user.trim().to_string(),
                password.unwrap_or_default(),
            )),
            (None, Some(_)) => return Err(EtcdConfigError::PasswordWithoutUser),
            (None, None) => None,
        };
        Ok(EtcdConfig {
            key_file,
            cert_file,
            ca_cert_file,
            credentials,
            ..EtcdConfig::new(endpoints)
        })
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

fn normalize_endpoint(e: &str, tls: bool) -> Result<String, EtcdConfigError> {
    let e = e.trim_end_matches('/');
    let url = match e.split_once("://") {
        Some((scheme, rest)) if (scheme == "http" || scheme == "https") && !rest.is_empty() => {
            e.to_string()
        }
        Some(_) => return Err(EtcdConfigError::BadEndpoint(e.to_string())),
        None if tls => format!("https://{e}"),
        None => format!("http://{e}"),
    };
    Ok(url)
}

// ---------------------------------------------------------------------------------------
// Gateway messages (only the fields we read; absent = protobuf default)
// ---------------------------------------------------------------------------------------

/// The gateway writes int64 as a JSON string; accept a number too.
fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        N(i64),
        S(String),
    }
    match Int::deserialize(d)? {
        Int::N(n) => Ok(n),
        Int::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Header {
    #[serde(deserialize_with = "int64")]
    revision: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyValue {
    key: String,
    value: String,
    #[serde(deserialize_with = "int64")]
    mod_revision: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RangeResponse {
    kvs: Vec<KeyValue>,
    #[serde(deserialize_with = "int64")]
    count: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResponseOp {
    response_range: Option<RangeResponse>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TxnResponse {
    header: Header,
    succeeded: bool,
    responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// The count of the first range response: the failure branch's `count_only` read.
    fn first_count(&self) -> i64 {
        self.responses
            .first()
            .and_then(|r| r.response_range.as_ref())
            .map_or(0, |r| r.count)
    }
}

/// The gateway's error body (a gRPC status).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GatewayError {
    message: String,
    code: i32,
}

/// gRPC `UNAVAILABLE`: no leader, or the member is cut off; another member may do better.
const GRPC_UNAVAILABLE: i32 = 14;

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The end of the range of keys that start with `prefix`: the prefix with its last byte
/// incremented (trailing 0xff bytes dropped first); `\0` = no end, as in etcd's clientv3.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn parse_revision(revision: &Revision) -> Option<i64> {
    revision.parse().ok().filter(|r| *r > 0)
}

// ---------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------

/// Whether a failed request may be sent to another member.
enum Failure {
    /// It never left: the next endpoint can have it, whatever it is.
    NotSent(String),
    /// It may have been applied; only a read is safe to repeat.
    Unknown(String),
    /// etcd answered with an error that another member would repeat.
    Answered(String),
    /// The member's certificate failed verification (not signed by the CA we were given,
    /// not for this host, expired): nothing was sent, and retrying will not change it.
    Untrusted(String),
    /// etcd refused the auth token (expired, or issued before a restart): a new one may do.
    TokenRejected(String),
}

/// Why a round of requests over the endpoints ended without an answer.
enum Unanswered {
    Store(StoreError),
    /// The token was refused: authenticate again, then retry.
    TokenRejected(String),
}

impl From<StoreError> for Unanswered {
    fn from(e: StoreError) -> Unanswered {
        Unanswered::Store(e)
    }
}

/// The auth token of this invocation, earned on its first request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Not asked for yet (or refused since).
    Unknown,
    /// No credentials configured, or etcd's authentication is disabled.
    NotNeeded,
    Bearer(String),
}

/// What etcd says (its `rpctypes` error texts) when...
const AUTH_NOT_ENABLED: &str = "authentication is not enabled";
const AUTH_FAILED: &str = "authentication failed";
const INVALID_TOKEN: &str = "invalid auth token";
const USER_EMPTY: &str = "user name is empty";
/// gRPC `UNAUTHENTICATED`.
const GRPC_UNAUTHENTICATED: i32 = 16;

fn classify(e: ureq::Error) -> Failure {
    use ureq::Error as E;
    match &e {
        E::ConnectionFailed | E::HostNotFound => Failure::NotSent(e.to_string()),
        // The connect timeout is shorter than the global one, so a global timeout means
        // the request was probably sent.
        E::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => {
            Failure::NotSent(e.to_string())
        }
        E::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkDown
            ) =>
        {
            Failure::NotSent(e.to_string())
        }
        E::Rustls(rustls::Error::InvalidCertificate(_)) => Failure::Untrusted(e.to_string()),
        // The TLS handshake comes before the request.
        E::Tls(_) | E::Rustls(_) | E::Pem(_) => Failure::NotSent(e.to_string()),
        _ => Failure::Unknown(e.to_string()),
    }
}

/// A [`Kv`] on a real etcd. One HTTP agent per instance, so one plugin invocation's requests
/// share a keep-alive connection.
pub struct EtcdKv {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    /// `etcd_ca_cert_file`, for the message when a member's certificate is not trusted.
    ca_cert_file: Option<PathBuf>,
    /// The endpoint that answered last: tried first, so a dead first member costs one
    /// failed connect per process, not one per request.
    current: AtomicUsize,
    /// One request's bound; each request also stops at the invocation's deadline.
    timeout: Duration,
    credentials: Option<Credentials>,
    token: std::sync::Mutex<Token>,
}

impl EtcdKv {
    pub fn new(config: &EtcdConfig) -> Result<EtcdKv, EtcdConfigError> {
        let agent_config = ureq::Agent::config_builder()
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.timeout))
            // etcd's errors come with a JSON body worth reading.
            .http_status_as_error(false)
            // etcd is on the cluster network; an HTTP(S)_PROXY in the runtime's environment
            // is meant for image pulls, not for it.
            .proxy(None)
            .max_redirects(0)
            .user_agent("calico-ipam")
            .build();
        // Our own TCP-then-TLS chain instead of ureq's default one, whose TLS refuses v1
        // client certificates (see the `tls` module). No proxy connectors: none is used.
        let connector = ()
            .chain(TcpConnector::default())
            .chain(tls::TlsConnector::new(tls::client_config(config)?));
        let endpoints = if config.endpoints.is_empty() {
            vec![DEFAULT_ENDPOINT.to_string()]
        } else {
            config.endpoints.clone()
        };
        Ok(EtcdKv {
            agent: ureq::Agent::with_parts(
                agent_config,
                connector,
                ureq::unversioned::resolver::DefaultResolver::default(),
            ),
            endpoints,
            ca_cert_file: config.ca_cert_file.clone(),
            current: AtomicUsize::new(0),
            timeout: config.timeout,
            token: std::sync::Mutex::new(match config.credentials {
                Some(_) => Token::Unknown,
                None => Token::NotNeeded,
            }),
            credentials: config.credentials.clone(),
        })
    }

    /// A [`Store`](super::Store) on etcd with Calico's layout.
    pub fn store(config: &EtcdConfig) -> Result<KvStore<EtcdKv>, EtcdConfigError> {
        Ok(KvStore::new(EtcdKv::new(config)?))
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// One gateway call, failing over between endpoints, with the auth token when etcd
    /// wants one. `repeatable` says whether the request may be sent again after an
    /// ambiguous failure (reads: yes; writes: no). A refused token is never a write that
    /// happened, so the call is repeated once with a new one.
    fn call(
        &self,
        op: &'static str,
        key: &str,
        path: &str,
        body: &Value,
        repeatable: bool,
    ) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(body).map_err(|e| StoreError::Refused {
            op,
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        let mut renewed = false;
        loop {
            let token = self.token()?;
            match self.over_endpoints(op, key, path, &body, repeatable, token.as_deref()) {
                Ok(bytes) => return Ok(bytes),
                Err(Unanswered::Store(e)) => return Err(e),
                Err(Unanswered::TokenRejected(_)) if !renewed && self.credentials.is_some() => {
                    self.set_token(Token::Unknown);
                    renewed = true;
                }
                Err(Unanswered::TokenRejected(reason)) => {
                    return Err(StoreError::Denied(format!(
                        "etcd refused the auth token ({reason}){}",
                        match &self.credentials {
                            Some(c) =>
                                format!(" even after user {:?} authenticated again", c.username),
                            None => String::new(),
                        }
                    )))
                }
            }
        }
    }

    fn set_token(&self, token: Token) {
        match self.token.lock() {
            Ok(mut t) => *t = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }

    /// The token to send: earned from `/v3/auth/authenticate` on first use.
    fn token(&self) -> Result<Option<String>> {
        let current = match self.token.lock() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let token = match current {
            Token::NotNeeded => return Ok(None),
            Token::Bearer(t) => return Ok(Some(t)),
            Token::Unknown => self.authenticate()?,
        };
        self.set_token(token.clone());
        Ok(match token {
            Token::Bearer(t) => Some(t),
            _ => None,
        })
    }

    /// Trades the credentials for a token. etcd without authentication enabled needs none
    /// (etcd's own client goes on without one too); refused credentials are the
    /// configuration's problem, and the message names the user, never the password.
    fn authenticate(&self) -> Result<Token> {
        let Some(credentials) = &self.credentials else {
            return Ok(Token::NotNeeded);
        };
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Authenticated {
            token: String,
        }
        let body = json!({"name": credentials.username, "password": credentials.password});
        // Serialising two strings cannot fail.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let user = &credentials.username;
        let what = format!("user {user:?}");
        match self.over_endpoints(
            "authenticate",
            &what,
            "/v3/auth/authenticate",
            &body,
            true,
            None,
        ) {
            Ok(bytes) => {
                let answer: Authenticated = Self::decode("authenticate", &what, &bytes)?;
                if answer.token.is_empty() {
                    // Simple tokens are never empty; an empty one would be refused anyway.
                    return Ok(Token::NotNeeded);
                }
                Ok(Token::Bearer(answer.token))
            }
            Err(Unanswered::Store(StoreError::Refused { reason, .. }))
                if reason.contains(AUTH_NOT_ENABLED) =>
            {
                log::debug!("etcd has authentication disabled: {user:?} goes without a token");
                Ok(Token::NotNeeded)
            }
            Err(Unanswered::Store(StoreError::Refused { reason, .. }))
                if reason.contains(AUTH_FAILED) =>
            {
                Err(StoreError::Misconfigured(format!(
                    "etcd refused the credentials of user {user:?} ({reason}): check \
                     ETCD_USERNAME and ETCD_PASSWORD in the plugin's environment against \
                     the user etcd has (`etcdctl user get {user}`)"
                )))
            }
            Err(Unanswered::Store(e)) => Err(e),
            Err(Unanswered::TokenRejected(reason)) => Err(StoreError::Denied(reason)),
        }
    }

    /// One request, tried on each endpoint in turn from the one that answered last.
    fn over_endpoints(
        &self,
        op: &'static str,
        key: &str,
        path: &str,
        body: &[u8],
        repeatable: bool,
        token: Option<&str>,
    ) -> std::result::Result<Vec<u8>, Unanswered> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut errors = Vec::new();
        let mut untrusted = false;
        for i in (0..n).map(|i| (start + i) % n) {
            let endpoint = &self.endpoints[i];
            if shared::deadline::expired() {
                errors.push(format!(
                    "{endpoint}: not tried, the invocation's deadline has passed"
                ));
                break;
            }
            let failure = match self.send(endpoint, path, body, token) {
                Ok(bytes) => {
                    super::meter("etcd", path, key, body.len(), bytes.len());
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(bytes);
                }
                Err(f) => f,
            };
            match failure {
                Failure::NotSent(e) => errors.push(format!("{endpoint}: {e}")),
                // Another member's certificate may be fine: the request never left.
                Failure::Untrusted(e) => {
                    untrusted = true;
                    errors.push(format!("{endpoint}: {e}"));
                }
                Failure::Unknown(e) if repeatable => errors.push(format!("{endpoint}: {e}")),
                Failure::Unknown(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "{endpoint}: {e} (the outcome of {op} of {key} is unknown)"
                    ))
                    .into())
                }
                Failure::TokenRejected(reason) => {
                    return Err(Unanswered::TokenRejected(format!("{endpoint}: {reason}")))
                }
                Failure::Answered(reason) if reason.contains(USER_EMPTY) => {
                    return Err(StoreError::Misconfigured(format!(
                        "etcd at {endpoint} requires authentication ({reason}): set \
                         ETCD_USERNAME and ETCD_PASSWORD in the plugin's environment"
                    ))
                    .into())
                }
                Failure::Answered(reason) => {
                    return Err(StoreError::Refused {
                        op,
                        key: key.to_string(),
                        reason: format!("{endpoint}: {reason}"),
                    }
                    .into())
                }
            }
        }
        let errors = errors.join("; ");
        if untrusted {
            return Err(StoreError::Misconfigured(self.untrusted_message(&errors)).into());
        }
        Err(StoreError::Unavailable(format!("no etcd endpoint answered: {errors}")).into())
    }

    /// No member answered and at least one presented a certificate that failed
    /// verification: the runtime's retries would fail the same way, so the message says
    /// which file to fix.
    fn untrusted_message(&self, errors: &str) -> String {
        match &self.ca_cert_file {
            Some(ca) => format!(
                "etcd's server certificate is not trusted ({errors}): it must be signed by the \
                 CA in etcd_ca_cert_file {}, name the endpoint's host and be within its \
                 validity period",
                ca.display()
            ),
            None => format!(
                "etcd's server certificate is not trusted ({errors}): no etcd_ca_cert_file is \
                 configured, so only public CAs are trusted; set etcd_ca_cert_file to the CA \
                 that signed it"
            ),
        }
    }

    fn send(
        &self,
        endpoint: &str,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<Vec<u8>, Failure> {
        let mut request = self
            .agent
            .post(format!("{endpoint}{path}"))
            .content_type("application/json");
        if let Some(token) = token {
            // etcd's gateway takes the token as it is, without a `Bearer` prefix.
            request = request.header("Authorization", token);
        }
        let mut response = request
            .config()
            .timeout_global(Some(shared::deadline::capped(self.timeout)))
            .build()
            .send(body)
            .map_err(classify)?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(classify)?;
        if status == 200 {
            return Ok(bytes);
        }
        let err: GatewayError = serde_json::from_slice(&bytes).unwrap_or_default();
        let reason = if err.message.is_empty() {
            let text = String::from_utf8_lossy(&bytes);
            format!("HTTP {status}: {}", shared::redact::quoted(&text, 120))
        } else {
            format!(
                "HTTP {status}: {}",
                shared::redact::quoted(&err.message, shared::redact::QUOTE_MAX)
            )
        };
        if err.code == GRPC_UNAUTHENTICATED || err.message.contains(INVALID_TOKEN) {
            return Err(Failure::TokenRejected(reason));
        }
        // "no leader", "request timed out": this member cannot serve now; for a write the
        // proposal may still be applied later, so it is not a clean refusal.
        if err.code == GRPC_UNAVAILABLE || status == 503 {
            Err(Failure::Unknown(reason))
        } else {
            Err(Failure::Answered(reason))
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        op: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Refused {
            op,
            key: key.to_string(),
            reason: format!("unexpected answer from etcd: {e}"),
        })
    }

    fn range(&self, key: &str, range_end: Option<&[u8]>) -> Result<RangeResponse> {
        let mut request = json!({ "key": b64(key.as_bytes()) });
        if let Some(end) = range_end {
            request["range_end"] = json!(b64(end));
            request["sort_order"] = json!("ASCEND");
            request["sort_target"] = json!("KEY");
        }
        let bytes = self.call("read", key, "/v3/kv/range", &request, true)?;
        Self::decode("read", key, &bytes)
    }

    fn txn(&self, op: &'static str, key: &str, request: &Value) -> Result<TxnResponse> {
        let bytes = self.call(op, key, "/v3/kv/txn", request, false)?;
        Self::decode(op, key, &bytes)
    }

    /// A compare-and-swap on the key's mod revision: `success` runs when it matches; a
    /// failed compare is told apart (NotFound / Conflict) by a count in the same
    /// transaction, so it costs no second round trip and cannot race.
    fn cas(&self, op: &'static str, key: &str, revision: &Revision, success: Value) -> Result<i64> {
        let Some(rev) = parse_revision(revision) else {
            // Not a revision we issued: it cannot match, so only existence matters.
            return match self.get(key)? {
                None => Err(StoreError::NotFound(key.to_string())),
                Some(_) => Err(StoreError::Conflict(key.to_string())),
            };
        };
        let k = b64(key.as_bytes());
        let response = self.txn(
            op,
            key,
            &json!({
                "compare": [{ "key": k, "target": "MOD", "result": "EQUAL",
                              "mod_revision": rev.to_string() }],
                "success": [success],
                "failure": [{ "request_range": { "key": k, "count_only": true } }],
            }),
        )?;
        if response.succeeded {
            return Ok(response.header.revision);
        }
        Err(if response.first_count() == 0 {
            StoreError::NotFound(key.to_string())
        } else {
            StoreError::Conflict(key.to_string())
        })
    }
}

fn decode_kv(kv: KeyValue) -> Result<(String, Vec<u8>, Revision)> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: kv.key.clone(),
        reason,
    };
    let key = B64
        .decode(&kv.key)
        .map_err(|e| corrupt(format!("key is not base64: {e}")))?;
    let key = String::from_utf8(key).map_err(|e| corrupt(format!("key is not UTF-8: {e}")))?;
    let value = B64
        .decode(&kv.value)
        .map_err(|e| corrupt(format!("value is not base64: {e}")))?;
    Ok((key, value, kv.mod_revision.to_string()))
}

/// The pairs of a `/v3/kv/range` answer, decoded as `get` and `list` decode them; `key` is
/// the key or prefix read, for messages.
pub fn decode_range_answer(key: &str, bytes: &[u8]) -> Result<Vec<(String, Vec<u8>, Revision)>> {
    pairs(EtcdKv::decode("read", key, bytes)?)
}

/// What a `/v3/kv/txn` answer says, as the writes read it: whether the compare held, the
/// revision of the transaction, and the count of its first range response.
pub fn decode_txn_answer(key: &str, bytes: &[u8]) -> Result<(bool, i64, i64)> {
    let response: TxnResponse = EtcdKv::decode("update", key, bytes)?;
    Ok((
        response.succeeded,
        response.header.revision,
        response.first_count(),
    ))
}

fn pairs(response: RangeResponse) -> Result<Vec<(String, Vec<u8>, Revision)>> {
    response.kvs.into_iter().map(decode_kv).collect()
}

impl Kv for EtcdKv {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Revision)>> {
        let response = self.range(key, None)?;
        match response.kvs.into_iter().next() {
            None => Ok(None),
            Some(kv) => decode_kv(kv).map(|(_, value, rev)| Some((value, rev))),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>, Revision)>> {
        let end = prefix_end(prefix.as_bytes());
        pairs(self.range(prefix, Some(&end))?)
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Revision> {
        let k = b64(key.as_bytes());
        let response = self.txn(
            "create",
            key,
            &json!({
                "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL",
                              "create_revision": "0" }],
                "success": [{ "request_put": { "key": k, "value": b64(value) } }],
            }),
        )?;
        if response.succeeded {
            Ok(response.header.revision.to_string())
        } else {
            Err(StoreError::AlreadyExists(key.to_string()))
        }
    }

    fn update(&self, key: &str, value: &[u8], revision: &Revision) -> Result<Revision> {
        let put = json!({ "request_put": { "key": b64(key.as_bytes()), "value": b64(value) } });
        // The put happens in this transaction, so its revision is the key's new mod revision.
        self.cas("update", key, revision, put)
            .map(|r| r.to_string())
    }

    fn delete(&self, key: &str, revision: &Revision) -> Result<()> {
        let delete = json!({ "request_delete_range": { "key": b64(key.as_bytes()) } });
        self.cas("delete", key, revision, delete).map(|_| ())
    }

    fn ping(&self) -> Result<()> {
        self.call("ping", "etcd", "/v3/maintenance/status", &json!({}), true)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn config_values_win_over_env() {
        let conf = EtcdSettings {
            endpoints: Some("http://10.0.0.1:2379, http://10.0.0.2:2379/".into()),
            ..Default::default()
        };
        let c = EtcdConfig::from_conf_and(
            &conf,
            env(&[
                ("ETCD_ENDPOINTS", "http://192.0.2.1:2379"),
                ("ETCD_CA_CERT_FILE", "/etc/ca.pem"),
            ]),
        )
        .expect("config");
        assert_eq!(
            c.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(c.ca_cert_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn env_and_defaults_apply_when_config_is_empty() {
        let conf = EtcdSettings {
            endpoints: Some(String::new()),
            ..Default::default()
        };
        let c = EtcdConfig::from_conf_and(&conf, env(&[("ETCD_ENDPOINTS", "10.0.0.9:2379")]))
            .expect("config");
        assert_eq!(c.endpoints, ["http://10.0.0.9:2379"]);
        let c = EtcdConfig::from_conf_and(&EtcdSettings::default(), env(&[])).expect("config");
        assert_eq!(c.endpoints, [DEFAULT_ENDPOINT]);
    }

    #[test]
    fn schemeless_endpoints_follow_tls_and_bad_ones_are_refused() {
        let conf = EtcdSettings {
            endpoints: Some("etcd:2379".into()),
            ca_cert_file: Some("/ca.pem".into()),
            ..Default::default()
        };
        let c = EtcdConfig::from_conf_and(&conf, env(&[])).expect("config");
        assert_eq!(c.endpoints, ["https://etcd:2379"]);
        let bad = EtcdSettings {
            endpoints: Some("unix:///run/etcd.sock".into()),
            ..Default::default()
        };
        assert!(matches!(
            EtcdConfig::from_conf_and(&bad, env(&[])),
            Err(EtcdConfigError::BadEndpoint(_))
        ));
        let half = EtcdSettings {
            cert_file: Some("/c.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            EtcdConfig::from_conf_and(&half, env(&[])),
            Err(EtcdConfigError::HalfClientCert)
        ));
    }

    #[test]
    fn authority_and_scheme_name_the_one_etcd_when_no_endpoints_are_listed() {
        let conf = EtcdSettings {
            authority: Some("etcd.example:4001".into()),
            scheme: Some("https".into()),
            ..Default::default()
        };
        let c = EtcdConfig::from_conf_and(&conf, env(&[])).expect("config");
        assert_eq!(c.endpoints, ["https://etcd.example:4001"]);
        let plain = EtcdSettings {
            authority: Some("10.0.0.3:2379".into()),
            ..Default::default()
        };
        let c = EtcdConfig::from_conf_and(&plain, env(&[])).expect("config");
        assert_eq!(c.endpoints, ["http://10.0.0.3:2379"]);
        // Endpoints win over the authority, and the scheme applies to those without one.
        let both = EtcdSettings {
            endpoints: Some("e1:2379,http://e2:2379".into()),
            scheme: Some("https".into()),
            ..conf.clone()
        };
        let c = EtcdConfig::from_conf_and(&both, env(&[])).expect("config");
        assert_eq!(c.endpoints, ["https://e1:2379", "http://e2:2379"]);
        let bad = EtcdSettings {
            scheme: Some("grpc".into()),
            ..Default::default()
        };
        assert!(matches!(
            EtcdConfig::from_conf_and(&bad, env(&[])),
            Err(EtcdConfigError::BadScheme(s)) if s == "grpc"
        ));
    }

    #[test]
    fn credentials_come_from_the_environment_and_never_print_the_password() {
        let c = EtcdConfig::from_conf_and(
            &EtcdSettings::default(),
            env(&[("ETCD_USERNAME", "calico"), ("ETCD_PASSWORD", "s3cr3t-pw")]),
        )
        .expect("config");
        let credentials = c.credentials.clone().expect("credentials");
        assert_eq!(credentials.username, "calico");
        let printed = format!("{c:?}");
        assert!(
            printed.contains("calico") && !printed.contains("s3cr3t-pw"),
            "{printed}"
        );
        let none = EtcdConfig::from_conf_and(&EtcdSettings::default(), env(&[])).expect("config");
        assert_eq!(none.credentials, None);
        assert!(matches!(
            EtcdConfig::from_conf_and(&EtcdSettings::default(), env(&[("ETCD_PASSWORD", "x")])),
            Err(EtcdConfigError::PasswordWithoutUser)
        ));
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/calico/a"), b"/calico/b");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn gateway_answers_decode() {
        let r: TxnResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","revision":"42","raft_term":"2"},
                "responses":[{"response_range":{"header":{"revision":"42"},"count":"1"}}]}"#,
        )
        .expect("txn");
        assert!(!r.succeeded);
        assert_eq!(r.header.revision, 42);
        assert_eq!(
            r.responses[0].response_range.as_ref().map(|r| r.count),
            Some(1)
        );
        let r: RangeResponse = serde_json::from_str(
            r#"{"kvs":[{"key":"L2E=","create_revision":"2","mod_revision":"7","version":"1"}]}"#,
        )
        .expect("range");
        let (k, v, rev) = decode_kv(r.kvs.into_iter().next().expect("kv")).expect("kv");
        assert_eq!(
            (k.as_str(), v.as_slice(), rev.as_str()),
            ("/a", &b""[..], "7")
        );
    }
}
