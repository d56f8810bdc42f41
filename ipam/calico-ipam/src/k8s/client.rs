//! A blocking Kubernetes API client for processes that live for milliseconds: kube's HTTP
//! client (kubeconfig semantics, TLS, bearer tokens, client certificates) on a
//! current-thread runtime, with requests spelled as paths and JSON so that every object is
//! exactly what Calico writes (spec §7.1), and every round trip is counted.

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, KubeconfigError, NamedAuthInfo,
    NamedCluster, NamedContext,
};
use serde_json::{json, Value};

use super::error::{rbac_of, KubeError};
use super::settings::KubeSettings;

/// How long a connection may take: an API server that is down should fail a CNI call in
/// seconds, well inside the kubelet's timeout, so that it retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read may take; the whole request is also bounded by the invocation's
/// deadline (`shared::deadline`), which is what stops a server that drips.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read: a list of every IPAM block of a 5,000-node cluster is a few tens
/// of megabytes; anything larger is not an answer we can use, and reading it whole would
/// make a plugin process as large as what the server sends.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// The largest error body read: a Kubernetes Status is a few hundred bytes.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// `metadata.uid` / `metadata.resourceVersion` preconditions of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The content types of a PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/strategic-merge-patch+json`: core kinds only.
    Strategic,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
}

pub struct KubeClient {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    /// The server as configured, for messages.
    server: String,
    round_trips: Cell<usize>,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// A client for `settings`. Nothing is sent yet.
    pub fn connect(settings: &KubeSettings) -> Result<KubeClient, KubeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| KubeError::Config(format!("cannot start the I/O runtime: {e}")))?;
        let (client, server) = runtime.block_on(async {
            let config = config_of(settings).await?;
            let server = config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_string();
            let client = kube::Client::try_from(config).map_err(|e| {
                KubeError::Config(format!("cannot build a client for {server}: {e}"))
            })?;
            Ok::<_, KubeError>((client, server))
        })?;
        Ok(KubeClient {
            runtime,
            client,
            server,
            round_trips: Cell::new(0),
        })
    }

    /// The API server's address, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Requests sent so far.
    pub fn round_trips(&self) -> usize {
        self.round_trips.get()
    }

    /// One object, `None` when it does not exist.
    pub fn get(&self, path: &str) -> Result<Option<Value>, KubeError> {
        match self.send("GET", path, None, None) {
            Ok(v) => Ok(Some(v)),
            Err(KubeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every item of a collection (following `continue`), optionally by label selector.
    pub fn list(&self, path: &str, label_selector: Option<&str>) -> Result<Vec<Value>, KubeError> {
        let mut items = Vec::new();
        let mut cont: Option<String> = None;
        loop {
            let mut query = Vec::new();
            if let Some(sel) = label_selector {
                query.push(format!("labelSelector={}", encode_query(sel)));
            }
            if let Some(c) = &cont {
                query.push(format!("continue={}", encode_query(c)));
            }
            let full = if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", query.join("&"))
            };
            let mut page = self.send("GET", &full, None, None)?;
            if let Some(Value::Array(page_items)) = page.get_mut("items").map(Value::take) {
                items.extend(page_items);
            }
            cont = page["metadata"]["continue"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            if cont.is_none() {
                return Ok(items);
            }
        }
    }

    /// POST to a collection; the stored object comes back.
    pub fn create(&self, collection: &str, object: &Value) -> Result<Value, KubeError> {
        self.send("POST", collection, Some(object), None)
    }

    /// PUT: an update, conditional on the object's `metadata.resourceVersion`.
    pub fn replace(&self, path: &str, object: &Value) -> Result<Value, KubeError> {
        self.send("PUT", path, Some(object), None)
    }

    pub fn patch(&self, path: &str, kind: PatchKind, patch: &Value) -> Result<Value, KubeError> {
        let content_type = match kind {
            PatchKind::Strategic => "application/strategic-merge-patch+json",
            PatchKind::Merge => "application/merge-patch+json",
        };
        self.send("PATCH", path, Some(patch), Some(content_type))
    }

    /// DELETE with preconditions; `NotFound` when it is already gone.
    pub fn delete(&self, path: &str, preconditions: &Preconditions) -> Result<(), KubeError> {
        let mut pre = serde_json::Map::new();
        if let Some(uid) = &preconditions.uid {
            pre.insert("uid".into(), json!(uid));
        }
        if let Some(rv) = &preconditions.resource_version {
            pre.insert("resourceVersion".into(), json!(rv));
        }
        let body = json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": pre,
        });
        self.send("DELETE", path, Some(&body), None).map(|_| ())
    }

    /// `GET /version`: a real round trip that needs no RBAC.
    pub fn version(&self) -> Result<Value, KubeError> {
        self.send("GET", "/version", None, None)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: Option<&str>,
    ) -> Result<Value, KubeError> {
        let mut request = http::Request::builder().method(method).uri(path);
        let bytes = match body {
            Some(b) => {
                request = request.header(
                    http::header::CONTENT_TYPE,
                    content_type.unwrap_or("application/json"),
                );
                serde_json::to_vec(b).map_err(|e| KubeError::Api {
                    code: 0,
                    what: format!("{method} {path}"),
                    message: format!("cannot encode the request: {e}"),
                })?
            }
            None => Vec::new(),
        };
        let request = request
            .header(http::header::ACCEPT, "application/json")
            .body(bytes)
            .map_err(|e| KubeError::Config(format!("bad request {method} {path}: {e}")))?;
        self.round_trips.set(self.round_trips.get() + 1);
        let sent = request.body().len();
        let exchanged = self.exchange(method, path, request);
        let received = exchanged.as_ref().map_or(0, |(_, answer)| answer.len());
        crate::store::meter("kubernetes", method, path, sent, received);
        let (status, answer) = exchanged?;
        if !status.is_success() {
            return Err(self.error_of(method, path, api_error(status, &answer)));
        }
        if answer.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer).map_err(|e| KubeError::Api {
            code: status.as_u16(),
            what: format!("{method} {path}"),
            message: format!("the answer is not JSON: {e}"),
        })
    }

    /// One request and its whole answer, within the invocation's deadline and the size caps.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        request: http::Request<Vec<u8>>,
    ) -> Result<(http::StatusCode, bytes::Bytes), KubeError> {
        use http_body_util::BodyExt;
        let unavailable = |reason: String| KubeError::Unavailable {
            server: self.server.clone(),
            reason,
        };
        let left = shared::deadline::remaining();
        let exchange = async {
            let response = self
                .client
                .send(request.map(kube::client::Body::from))
                .await
                .map_err(|e| self.error_of(method, path, e))?;
            let status = response.status();
            let limit = if status.is_success() {
                MAX_ANSWER_BYTES
            } else {
                MAX_ERROR_BYTES
            };
            let body = http_body_util::Limited::new(response.into_body(), limit)
                .collect()
                .await;
            match body {
                Ok(collected) => Ok((status, collected.to_bytes())),
                Err(e) if e.is::<http_body_util::LengthLimitError>() && !status.is_success() => {
                    // An error body this large is not a Status: the code alone is the answer.
                    Ok((status, bytes::Bytes::new()))
                }
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(unavailable(format!(
                    "the answer to {method} {} is larger than {} MiB",
                    path.split('?').next().unwrap_or(path),
                    limit >> 20
                ))),
                Err(e) => Err(unavailable(format!("reading the answer: {}", chain(&*e)))),
            }
        };
        self.runtime
            .block_on(async { tokio::time::timeout(left, exchange).await })
            .unwrap_or_else(|_| {
                Err(unavailable(format!(
                    "no complete answer to {method} {} within the invocation's deadline ({} ms \
                     were left)",
                    path.split('?').next().unwrap_or(path),
                    left.as_millis()
                )))
            })
    }

    fn error_of(&self, method: &str, path: &str, error: kube::Error) -> KubeError {
        let path_only = path.split('?').next().unwrap_or(path);
        let what = format!("{method} {path_only}");
        let status = match error {
            kube::Error::Api(status) => status,
            other => {
                return KubeError::Unavailable {
                    server: self.server.clone(),
                    reason: chain(&other),
                }
            }
        };
        let message = status.message.clone();
        match status.code {
            404 => KubeError::NotFound(path_only.to_string()),
            409 if status.reason == "AlreadyExists" => {
                KubeError::AlreadyExists(path_only.to_string())
            }
            409 => KubeError::Conflict(path_only.to_string()),
            401 => KubeError::Unauthorized {
                server: self.server.clone(),
                expired: message.to_ascii_lowercase().contains("expired"),
            },
            403 => {
                let (verb, resource) = rbac_of(method, path_only);
                KubeError::Forbidden {
                    verb,
                    resource,
                    message,
                }
            }
            400 | 422 => KubeError::Invalid { what, message },
            429 | 500..=599 => KubeError::Unavailable {
                server: self.server.clone(),
                reason: format!("{} {}: {message}", status.code, status.reason),
            },
            code => KubeError::Api {
                code,
                what,
                message,
            },
        }
    }
}

/// An API error answer as kube reports it, with its message made safe to quote: a proxy
/// that reflects the request would otherwise put our bearer token into every message.
fn api_error(status: http::StatusCode, body: &[u8]) -> kube::Error {
    let parsed = serde_json::from_slice::<kube::core::Status>(body)
        .ok()
        .filter(|s| s.code != 0 || !s.message.is_empty() || !s.reason.is_empty());
    let mut answer = match parsed {
        Some(answer) => answer,
        None => {
            let text = std::str::from_utf8(body).unwrap_or_default();
            let summary = if text.trim().is_empty() {
                format!("{} bytes that are not a Kubernetes Status", body.len())
            } else {
                shared::redact::quoted(text, 120)
            };
            kube::core::Status::failure(&summary, "")
        }
    };
    answer.code = status.as_u16();
    answer.message = shared::redact::quoted(&answer.message, shared::redact::QUOTE_MAX);
    answer.reason = shared::redact::quoted(&answer.reason, 64);
    kube::Error::Api(answer.boxed())
}

/// An error and its causes on one line ("connection refused" is usually at the bottom).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The client configuration for `settings`: the kubeconfig read, the overrides applied,
/// the files it names checked and loaded, as [`KubeClient::connect`] does it, without
/// building the client (which runs a kubeconfig's `exec` credential plugin) or sending
/// anything.
pub fn load_kubeconfig(settings: &KubeSettings) -> Result<kube::Config, KubeError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| KubeError::Config(format!("cannot start the I/O runtime: {e}")))?
        .block_on(config_of(settings))
}

async fn config_of(settings: &KubeSettings) -> Result<kube::Config, KubeError> {
    let (kubeconfig, context) = kubeconfig_of(settings)?;
    let options = KubeConfigOptions {
        context: Some(context),
        ..KubeConfigOptions::default()
    };
    let what = settings
        .kubeconfig
        .clone()
        .unwrap_or_else(|| "the network configuration's policy settings".into());
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| config_error(&what, e))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    // The IPAM engine retries what is worth retrying; a transparent retry here would
    // hide round trips and could replay a write whose outcome is unknown.
    config.default_retry = false;
    Ok(config)
}

/// A kubeconfig error without the file's contents: YAML errors can quote the line they
/// stopped at, and that line may hold a token or a key.
fn config_error(what: &str, error: KubeconfigError) -> KubeError {
    let detail = match &error {
        KubeconfigError::Parse(_) => "it is not a valid kubeconfig YAML document".to_string(),
        other => other.to_string(),
    };
    KubeError::Config(format!("cannot use kubeconfig {what}: {detail}"))
}

/// The kubeconfig to build the client from, with the overrides of spec §3.1 applied to its
/// current context, and the name of that context.
fn kubeconfig_of(settings: &KubeSettings) -> Result<(Kubeconfig, String), KubeError> {
    let mut kubeconfig =
        match &settings.kubeconfig {
            Some(path) => {
                let bytes = shared::file::read_regular(Path::new(path), MAX_CREDENTIAL_FILE)
                    .map_err(|e| KubeError::Config(format!("cannot use kubeconfig {path}: {e}")))?;
                check_encoding(path, &bytes)?;
                Kubeconfig::read_from(path).map_err(|e| config_error(path, e))?
            }
            None if settings.server.is_some() => Kubeconfig::default(),
            None => return Err(KubeError::Config(
                "no Kubernetes API server configured: set kubernetes.kubeconfig in the network \
                 configuration (or $KUBECONFIG)"
                    .into(),
            )),
        };
    let context_name = match (&kubeconfig.current_context, kubeconfig.contexts.as_slice()) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, [only]) => only.name.clone(),
        (_, []) => {
            // A kubeconfig-less configuration: one context made of the overrides.
            kubeconfig.clusters.push(NamedCluster {
                name: "calico".into(),
                cluster: Some(Cluster::default()),
                other: Default::default(),
            });
            kubeconfig.contexts.push(NamedContext {
                name: "calico".into(),
                context: Some(Context {
                    cluster: "calico".into(),
                    user: Some("calico".into()),
                    ..Context::default()
                }),
                other: Default::default(),
            });
            "calico".into()
        }
        _ => {
            return Err(KubeError::Config(format!(
                "kubeconfig {} has several contexts and no current-context: set one",
                settings.kubeconfig.as_deref().unwrap_or_default()
            )))
        }
    };
    apply_overrides(&mut kubeconfig, &context_name, settings)?;
    settle_files(&mut kubeconfig, &context_name)?;
    Ok((kubeconfig, context_name))
}

/// kube reads a kubeconfig that starts with a UTF-16 byte order mark two bytes at a time,
/// and panics on a last byte without its pair (kube-client 5.0.0, `read_path`): such a file
/// is refused here, as kube refuses any other invalid UTF-16.
fn check_encoding(path: &str, bytes: &[u8]) -> Result<(), KubeError> {
    let utf16 = bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]);
    if utf16 && bytes.len() % 2 == 1 {
        return Err(KubeError::Config(format!(
            "cannot use kubeconfig {path}: it is not valid UTF-16 (it starts with a byte \
             order mark and has an odd number of bytes)"
        )));
    }
    Ok(())
}

/// The largest kubeconfig, token or certificate file read.
const MAX_CREDENTIAL_FILE: u64 = 1 << 20;

/// Checks the files the context's cluster and user name before kube reads them (a FIFO
/// would block it, a device never end), and reads the `tokenFile` here, trimmed as
/// client-go trims it: a token file ending in a newline is the common case, and kube would
/// put the newline into the Authorization header and fail every request.
fn settle_files(kubeconfig: &mut Kubeconfig, context_name: &str) -> Result<(), KubeError> {
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
        .unwrap_or_default();
    let check = |what: &str, file: &Option<String>| match file {
        Some(path) if !path.is_empty() => {
            shared::file::open_regular(Path::new(path), MAX_CREDENTIAL_FILE)
                .map(drop)
                .map_err(|e| KubeError::Config(format!("cannot use the {what} {path}: {e}")))
        }
        _ => Ok(()),
    };
    if let Some(cluster) = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
    {
        check("certificate authority", &cluster.certificate_authority)?;
    }
    let user_name = context.user.unwrap_or_default();
    let Some(user) = kubeconfig
        .auth_infos
        .iter_mut()
        .find(|u| u.name == user_name)
        .and_then(|u| u.auth_info.as_mut())
    else {
        return Ok(());
    };
    check("client certificate", &user.client_certificate)?;
    check("client key", &user.client_key)?;
    if user.token.is_none() {
        if let Some(path) = user.token_file.take().filter(|p| !p.is_empty()) {
            let text = shared::file::read_regular_text(Path::new(&path), MAX_CREDENTIAL_FILE)
                .map_err(|e| {
                    KubeError::Config(format!("cannot read the token file {path}: {e}"))
                })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(KubeError::Config(format!("the token file {path} is empty")));
            }
            user.token = Some(token.to_string().into());
        }
    }
    Ok(())
}

fn apply_overrides(
    kubeconfig: &mut Kubeconfig,
    context_name: &str,
    settings: &KubeSettings,
) -> Result<(), KubeError> {
    let context = kubeconfig
        .contexts
        .iter_mut()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_mut())
        .ok_or_else(|| {
            KubeError::Config(format!("kubeconfig has no context named {context_name:?}"))
        })?;
    let cluster_name = context.cluster.clone();
    let user_name = match &context.user {
        Some(u) if !u.is_empty() => u.clone(),
        _ => {
            context.user = Some("calico".into());
            "calico".into()
        }
    };
    if settings.server.is_some() || settings.certificate_authority.is_some() {
        let cluster = match kubeconfig
            .clusters
            .iter_mut()
            .find(|c| c.name == cluster_name)
        {
            Some(named) => named.cluster.get_or_insert_with(Cluster::default),
            None => {
                kubeconfig.clusters.push(NamedCluster {
                    name: cluster_name.clone(),
                    cluster: Some(Cluster::default()),
                    other: Default::default(),
                });
                kubeconfig
                    .clusters
                    .last_mut()
                    .and_then(|c| c.cluster.as_mut())
                    .ok_or_else(|| KubeError::Config("kubeconfig cluster vanished".into()))?
            }
        };
        if let Some(server) = &settings.server {
            cluster.server = Some(server.clone());
        }
        if let Some(ca) = &settings.certificate_authority {
            cluster.certificate_authority = Some(ca.clone());
            cluster.certificate_authority_data = None;
        }
    }
    let has_user_overrides = settings.token.is_some()
        || settings.client_certificate.is_some()
        || settings.client_key.is_some();
    if has_user_overrides {
        let user = match kubeconfig
            .auth_infos
            .iter_mut()
            .find(|u| u.name == user_name)
        {
            Some(named) => named.auth_info.get_or_insert_with(AuthInfo::default),
            None => {
                kubeconfig.auth_infos.push(NamedAuthInfo {
                    name: user_name.clone(),
                    auth_info: Some(AuthInfo::default()),
                    other: Default::default(),
                });
                kubeconfig
                    .auth_infos
                    .last_mut()
                    .and_then(|u| u.auth_info.as_mut())
                    .ok_or_else(|| KubeError::Config("kubeconfig user vanished".into()))?
            }
        };
        if let Some(token) = &settings.token {
            user.token = Some(token.clone().into());
            user.token_file = None;
        }
        if let Some(cert) = &settings.client_certificate {
            user.client_certificate = Some(cert.clone());
            user.client_certificate_data = None;
        }
        if let Some(key) = &settings.client_key {
            user.client_key = Some(key.clone());
            user.client_key_data = None;
        }
    }
    Ok(())
}

/// Percent-encoding of a query value (label selectors carry `=`, `,`, `!`, `(`).
fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_percent_encoded() {
        assert_eq!(
            encode_query("projectcalico.org/ip-version=4,a in (b,c)"),
            "projectcalico.org%2Fip-version%3D4%2Ca%20in%20%28b%2Cc%29"
        );
    }

    #[test]
    fn a_kubeconfig_parse_error_does_not_quote_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, "users:\n- name: x\n  user: {token: s3cr3t-token\n").expect("write");
        let settings = KubeSettings {
            kubeconfig: Some(path.display().to_string()),
            ..KubeSettings::default()
        };
        let err = KubeClient::connect(&settings).expect_err("broken YAML");
        let text = err.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[test]
    fn a_utf16_kubeconfig_with_an_odd_byte_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        let text = "clusters:\n- name: k\n  cluster: {server: \"http://127.0.0.1:1\"}\n\
                    contexts:\n- name: k\n  context: {cluster: k, user: k}\n";
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let settings = KubeSettings {
            kubeconfig: Some(path.display().to_string()),
            ..KubeSettings::default()
        };
        std::fs::write(&path, &utf16).expect("write");
        let config = load_kubeconfig(&settings).expect("UTF-16 LE is read");
        assert_eq!(config.cluster_url.to_string(), "http://127.0.0.1:1/");
        for odd in [&utf16[..], &b"\xfe\xff\0c"[..]].map(|b| [b, b"x"].concat()) {
            std::fs::write(&path, odd).expect("write");
            let err = load_kubeconfig(&settings).expect_err("a byte without its pair");
            assert!(matches!(err, KubeError::Config(_)), "{err:?}");
            assert!(err.to_string().contains("UTF-16"), "{err}");
        }
    }

    #[test]
    fn overrides_alone_make_a_client() {
        let settings = KubeSettings {
            server: Some("http://127.0.0.1:1".into()),
            token: Some("t".into()),
            ..KubeSettings::default()
        };
        let client = KubeClient::connect(&settings).expect("client");
        assert_eq!(client.server(), "http://127.0.0.1:1");
        let err = client.get("/api/v1/nodes/n").expect_err("nothing listens");
        assert!(matches!(err, KubeError::Unavailable { .. }), "{err:?}");
        assert_eq!(client.round_trips(), 1);
    }

    #[test]
    fn no_server_at_all_is_a_configuration_error() {
        let err = KubeClient::connect(&KubeSettings::default()).expect_err("nothing configured");
        assert!(err.to_string().contains("kubernetes.kubeconfig"), "{err}");
    }
}
