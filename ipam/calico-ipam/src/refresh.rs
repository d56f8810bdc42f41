//! `calico-ipam kubeconfig refresh`: keeps the token of the CNI kubeconfig valid, as
//! calico-node does for Calico's own plugins. A kubeconfig holding a pod's projected
//! service-account token stops working when that token expires or its pod goes; this asks
//! the TokenRequest API (`POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`) for
//! a token of the plugins' own service account, not bound to any pod, and rewrites the
//! kubeconfig (atomically, 0600) well before that token expires.
//!
//! The request is made with the pod's projected token when there is one (kubelet keeps it
//! valid, so a refresher in a DaemonSet never locks itself out), else with the kubeconfig's
//! own credentials (a node installed by hand: the service account then needs RBAC to
//! request tokens for itself, and a kubeconfig left to expire must be reinstalled).
//!
//! When to refresh: once less than a third of the token's lifetime is left (8 h of a 24 h
//! token), so that an API server outage of up to 8 h costs nothing. calico-node refreshes
//! sooner (after a quarter to a half of the lifetime, jittered); one refresher per node
//! needs no jitter. The issue and expiry times are kept in the kubeconfig's second comment
//! line, so that a restarted refresher knows whether the token it finds is due; a
//! kubeconfig without them (written by `scripts/install.sh`, say) is refreshed at once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use kube::config::Kubeconfig;
use serde_json::{json, Value};

use crate::k8s::{KubeClient, KubeError, KubeSettings};

/// The lifetime asked for, as calico-node asks (`defaultCNITokenValiditySeconds`); the API
/// server may cut it to its `--service-account-max-token-expiration`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A token is refreshed once less than 1/REFRESH_DIVISOR of its lifetime is left.
const REFRESH_DIVISOR: u32 = 3;
/// After a failure worth retrying (the API server is unreachable or overloaded).
const RETRY: Duration = Duration::from_secs(10);
/// The longest single sleep: a sleep runs on the monotonic clock, which stops while the
/// machine is suspended, so the wall clock (which token expiry follows) is looked at again
/// at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long one round of reading, requesting and writing may take.
const ROUND_BUDGET: Duration = Duration::from_secs(30);
/// The largest kubeconfig or token file read.
const MAX_FILE: u64 = 1 << 20;

/// The first line of a kubeconfig this writes.
pub const HEADER: &str =
    "# Kubeconfig of the Calico CNI plugins, kept fresh by calico-ipam kubeconfig refresh.";
/// The second line: `# Token of <ns>/<name>, issued <RFC 3339>, expires <RFC 3339>.`
const STAMP_PREFIX: &str = "# Token of ";

/// What to refresh, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The CNI kubeconfig, read for its cluster and rewritten with each new token.
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub name: String,
    /// The lifetime asked for.
    pub lifetime: Duration,
    /// `spec.audiences`; empty for the API server's own.
    pub audiences: Vec<String>,
    /// A pod's projected service account (`token`, `ca.crt`).
    pub service_account_dir: PathBuf,
    /// Refresh once if due, then exit.
    pub once: bool,
}

impl Options {
    fn account(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why a refresh did not happen. Messages never hold a token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Nothing to refresh from: no kubeconfig and no pod, an unreadable file.
    #[error("{0}")]
    Setup(String),
    #[error(
        "the API server at {server} refused {credentials} (401 Unauthorized{}): they must \
         be valid to ask for a new token; rerun scripts/install.sh with a valid token",
        if *expired { ": the token has expired" } else { "" }
    )]
    Unauthorized {
        server: String,
        credentials: String,
        expired: bool,
    },
    #[error(
        "{credentials} may not ask for a token of service account {account}: grant \
         \"create\" on \"serviceaccounts/token\" (resourceNames: [{name}]) in its ClusterRole \
         ({message})"
    )]
    Forbidden {
        credentials: String,
        account: String,
        name: String,
        message: String,
    },
    #[error("the API server refused a token for service account {account}: {source}")]
    Refused { account: String, source: KubeError },
    /// Worth retrying: the server is unreachable, overloaded or failing.
    #[error("no token for service account {account} yet: {source}")]
    Unavailable { account: String, source: KubeError },
    #[error("the API server's TokenRequest answer for {account} {problem}")]
    Answer { account: String, problem: String },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
}

impl RefreshError {
    /// Whether a long-running refresher should try again rather than exit.
    pub fn is_transient(&self) -> bool {
        matches!(self, RefreshError::Unavailable { .. })
    }
}

/// A token as the kubeconfig's stamp records it, in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub issued: i64,
    pub expires: i64,
}

impl Validity {
    /// When the token is to be replaced: a third of its lifetime before it expires.
    pub fn refresh_at(&self) -> i64 {
        let lifetime = (self.expires - self.issued).max(0);
        self.expires - lifetime / i64::from(REFRESH_DIVISOR)
    }
}

/// Runs the refresher; returns the process exit code (0, or 1 with the cause on stderr).
pub fn run(opts: &Options) -> i32 {
    loop {
        shared::deadline::arm(ROUND_BUDGET, None);
        let wait = match round(opts) {
            Ok(wait) => wait,
            Err(e) if e.is_transient() && !opts.once => {
                eprintln!("calico-ipam: {e}; retrying in {} s", RETRY.as_secs());
                RETRY
            }
            Err(e) => {
                eprintln!("calico-ipam: {e}");
                return 1;
            }
        };
        if opts.once {
            return 0;
        }
        std::thread::sleep(wait.min(MAX_SLEEP));
    }
}

/// One look at the kubeconfig: refreshes it when due. Returns how long until the next look.
fn round(opts: &Options) -> Result<Duration, RefreshError> {
    let now = unix_now();
    let current = read_current(opts)?;
    if let Some(validity) = current.as_ref().and_then(|c| c.validity) {
        let due = validity.refresh_at();
        if now < due {
            if opts.once {
                println!(
                    "{}: the token of {} is valid until {}; nothing to do before {}",
                    opts.kubeconfig.display(),
                    opts.account(),
                    rfc3339(validity.expires),
                    rfc3339(due)
                );
            }
            return Ok(Duration::from_secs((due - now).unsigned_abs()));
        }
    }
    let cluster = match &current {
        Some(c) => c.cluster.clone(),
        None => in_cluster(opts)?,
    };
    let (token, validity) = request_token(opts, current.is_some())?;
    let text = render(opts, &cluster, &token, validity);
    write_atomic(&opts.kubeconfig, text.as_bytes()).map_err(|source| RefreshError::Write {
        path: opts.kubeconfig.display().to_string(),
        source,
    })?;
    let next = validity.refresh_at();
    println!(
        "{}: new token of {}, valid until {}; next refresh at {}",
        opts.kubeconfig.display(),
        opts.account(),
        rfc3339(validity.expires),
        rfc3339(next)
    );
    // At least a second: a server that hands out tokens already due is not asked in a
    // tight loop.
    Ok(Duration::from_secs(
        (next - unix_now()).max(1).unsigned_abs(),
    ))
}

/// The server and CA the kubeconfig names.
#[derive(Debug, Clone, Default)]
struct ClusterInfo {
    server: String,
    ca_data: Option<String>,
    ca_file: Option<String>,
    insecure: bool,
    tls_server_name: Option<String>,
}

struct Current {
    cluster: ClusterInfo,
    /// The stamp of a kubeconfig this wrote, for the same service account.
    validity: Option<Validity>,
}

/// The kubeconfig as it is, `None` when there is none yet.
fn read_current(opts: &Options) -> Result<Option<Current>, RefreshError> {
    let path = &opts.kubeconfig;
    let shown = path.display();
    let text = match shared::file::read_regular_text(path, MAX_FILE) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RefreshError::Setup(format!("cannot read {shown}: {e}"))),
    };
    // Not quoted on failure: the line a YAML error points at may hold a token.
    let config = Kubeconfig::from_yaml(&text).map_err(|_| {
        RefreshError::Setup(format!("{shown} is not a valid kubeconfig YAML document"))
    })?;
    let context_name = match (&config.current_context, config.contexts.as_slice()) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, [only]) => only.name.clone(),
        _ => {
            return Err(RefreshError::Setup(format!(
                "{shown} has no current-context: set one"
            )))
        }
    };
    let cluster_name = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| {
            RefreshError::Setup(format!("{shown} has no context named {context_name:?}"))
        })?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| {
            RefreshError::Setup(format!("{shown} has no cluster named {cluster_name:?}"))
        })?;
    let server = cluster
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            RefreshError::Setup(format!(
                "{shown} names no server for cluster {cluster_name:?}"
            ))
        })?;
    let info = ClusterInfo {
        server,
        ca_data: cluster.certificate_authority_data.clone(),
        ca_file: cluster.certificate_authority.clone(),
        insecure: cluster.insecure_skip_tls_verify.unwrap_or(false),
        tls_server_name: cluster.tls_server_name.clone(),
    };
    Ok(Some(Current {
        cluster: info,
        validity: stamp_of(&text, &opts.account()),
    }))
}

/// The validity recorded in a kubeconfig this wrote for `account`.
pub fn stamp_of(text: &str, account: &str) -> Option<Validity> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let rest = lines.next()?.strip_prefix(STAMP_PREFIX)?;
    let rest = rest.strip_prefix(account)?.strip_prefix(", issued ")?;
    let (issued, expires) = rest.strip_suffix('.')?.split_once(", expires ")?;
    Some(Validity {
        issued: issued.parse::<Timestamp>().ok()?.as_second(),
        expires: expires.parse::<Timestamp>().ok()?.as_second(),
    })
}

/// A pod's view of the cluster, for the first kubeconfig: `$KUBERNETES_SERVICE_HOST` and
/// `_PORT`, and the service account's CA.
fn in_cluster(opts: &Options) -> Result<ClusterInfo, RefreshError> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            RefreshError::Setup(format!(
                "there is no kubeconfig at {} to refresh and this is not a pod \
                 ($KUBERNETES_SERVICE_HOST is unset): write one with scripts/install.sh first",
                opts.kubeconfig.display()
            ))
        })?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let ca_path = opts.service_account_dir.join("ca.crt");
    let ca = shared::file::read_regular(&ca_path, MAX_FILE).map_err(|e| {
        RefreshError::Setup(format!("cannot read the CA {}: {e}", ca_path.display()))
    })?;
    Ok(ClusterInfo {
        server: format!("https://{host}:{port}"),
        ca_data: Some(base64::engine::general_purpose::STANDARD.encode(ca)),
        ..ClusterInfo::default()
    })
}

/// Asks for a new token. `have_kubeconfig`: the kubeconfig exists and names the server.
fn request_token(
    opts: &Options,
    have_kubeconfig: bool,
) -> Result<(String, Validity), RefreshError> {
    let account = opts.account();
    let token_path = opts.service_account_dir.join("token");
    let pod_token = match shared::file::read_regular_text(&token_path, MAX_FILE) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(RefreshError::Setup(format!(
                "cannot read the service-account token {}: {e}",
                token_path.display()
            )))
        }
    };
    let credentials = match &pod_token {
        Some(_) => format!("the service-account token {}", token_path.display()),
        None => format!("the credentials of {}", opts.kubeconfig.display()),
    };
    let settings = if have_kubeconfig {
        KubeSettings {
            kubeconfig: Some(opts.kubeconfig.display().to_string()),
            token: pod_token,
            ..KubeSettings::default()
        }
    } else {
        let cluster = in_cluster(opts)?;
        KubeSettings {
            server: Some(cluster.server),
            certificate_authority: Some(
                opts.service_account_dir
                    .join("ca.crt")
                    .display()
                    .to_string(),
            ),
            token: Some(pod_token.ok_or_else(|| {
                RefreshError::Setup(format!(
                    "no kubeconfig at {} and no service-account token at {}",
                    opts.kubeconfig.display(),
                    token_path.display()
                ))
            })?),
            ..KubeSettings::default()
        }
    };
    let client = KubeClient::connect(&settings).map_err(|e| RefreshError::Setup(e.to_string()))?;
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": opts.audiences,
            "expirationSeconds": opts.lifetime.as_secs(),
        },
    });
    let path = format!(
        "/api/v1/namespaces/{}/serviceaccounts/{}/token",
        opts.namespace, opts.name
    );
    let issued = unix_now();
    let answer = client.create(&path, &body).map_err(|e| match e {
        KubeError::Unauthorized { server, expired } => RefreshError::Unauthorized {
            server,
            credentials: credentials.clone(),
            expired,
        },
        KubeError::Forbidden { message, .. } => RefreshError::Forbidden {
            credentials: credentials.clone(),
            account: account.clone(),
            name: opts.name.clone(),
            message,
        },
        e @ KubeError::Unavailable { .. } => RefreshError::Unavailable {
            account: account.clone(),
            source: e,
        },
        e => RefreshError::Refused {
            account: account.clone(),
            source: e,
        },
    })?;
    token_of(&answer, issued).map_err(|problem| RefreshError::Answer { account, problem })
}

/// `status.token` and `status.expirationTimestamp` of a TokenRequest answer.
fn token_of(answer: &Value, issued: i64) -> Result<(String, Validity), String> {
    let token = answer["status"]["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or("has no status.token")?;
    // It goes into a YAML string and an Authorization header as it is.
    if !token
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err("has a status.token that is not a bearer token".into());
    }
    let expires = answer["status"]["expirationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .ok_or("has no RFC 3339 status.expirationTimestamp")?
        .as_second();
    if expires <= issued {
        return Err(format!(
            "says the new token expired already ({})",
            rfc3339(expires)
        ));
    }
    Ok((token.to_string(), Validity { issued, expires }))
}

/// The kubeconfig, in the layout `scripts/install.sh` writes, with the stamp.
fn render(opts: &Options, cluster: &ClusterInfo, token: &str, validity: Validity) -> String {
    // A JSON string is a YAML double-quoted scalar.
    let q = |s: &str| Value::from(s).to_string();
    let mut text = format!(
        "{HEADER}\n{STAMP_PREFIX}{}, issued {}, expires {}.\n\
         apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n",
        opts.account(),
        rfc3339(validity.issued),
        rfc3339(validity.expires),
        q(&cluster.server)
    );
    if let Some(data) = &cluster.ca_data {
        text.push_str(&format!("    certificate-authority-data: {}\n", q(data)));
    } else if let Some(file) = &cluster.ca_file {
        text.push_str(&format!("    certificate-authority: {}\n", q(file)));
    }
    if cluster.insecure {
        text.push_str("    insecure-skip-tls-verify: true\n");
    }
    if let Some(name) = &cluster.tls_server_name {
        text.push_str(&format!("    tls-server-name: {}\n", q(name)));
    }
    text.push_str(&format!(
        "users:\n- name: calico\n  user:\n    token: {}\ncontexts:\n- name: calico-context\n  \
         context:\n    cluster: local\n    user: calico\ncurrent-context: calico-context\n",
        q(token)
    ));
    text
}

/// Writes `content` to a 0600 file beside `target`, fsyncs it, renames it over `target` and
/// fsyncs the directory: a plugin reads the old kubeconfig or the new one, never a part,
/// and a crash leaves one of the two.
pub fn write_atomic(target: &Path, content: &[u8]) -> io::Result<()> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    // One fixed name: a refresher killed mid-write leaves one file, replaced next time.
    let tmp = dir.join(format!(".{}.calico-rs-refresh", name.to_string_lossy()));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        // The mode given to open() is narrowed by the umask; 0600 whatever it is.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn rfc3339(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            kubeconfig: PathBuf::from("/nonexistent/kubeconfig"),
            namespace: "kube-system".into(),
            name: "calico-cni-plugin".into(),
            lifetime: DEFAULT_LIFETIME,
            audiences: Vec::new(),
            service_account_dir: PathBuf::from("/nonexistent"),
            once: true,
        }
    }

    #[test]
    fn refresh_is_due_with_a_third_of_the_lifetime_left() {
        let v = Validity {
            issued: 1000,
            expires: 1000 + 86_400,
        };
        assert_eq!(v.refresh_at(), 1000 + 86_400 - 28_800);
    }

    #[test]
    fn the_stamp_reads_back_what_render_wrote() {
        let validity = Validity {
            issued: 1_700_000_000,
            expires: 1_700_086_400,
        };
        let cluster = ClusterInfo {
            server: "https://10.96.0.1:443".into(),
            ca_data: Some("Q0E=".into()),
            ..ClusterInfo::default()
        };
        let text = render(&opts(), &cluster, "tok.en-1", validity);
        assert_eq!(
            stamp_of(&text, "kube-system/calico-cni-plugin"),
            Some(validity)
        );
        // Another service account's token is not this one's.
        assert_eq!(stamp_of(&text, "kube-system/other"), None);
        let config = Kubeconfig::from_yaml(&text).expect("a kubeconfig");
        let user = config.auth_infos[0].auth_info.as_ref().expect("user");
        assert!(user.token.is_some());
        assert_eq!(
            config.clusters[0]
                .cluster
                .as_ref()
                .and_then(|c| c.server.as_deref()),
            Some("https://10.96.0.1:443")
        );
    }

    #[test]
    fn an_answer_without_a_token_or_expiry_is_refused() {
        let ok = json!({"status": {"token": "abc", "expirationTimestamp": "2030-01-01T00:00:00Z"}});
        assert!(token_of(&ok, 0).is_ok());
        for bad in [
            json!({"status": {"expirationTimestamp": "2030-01-01T00:00:00Z"}}),
            json!({"status": {"token": "abc"}}),
            json!({"status": {"token": "a\"b", "expirationTimestamp": "2030-01-01T00:00:00Z"}}),
            json!({"status": {"token": "abc", "expirationTimestamp": "1970-01-01T00:00:01Z"}}),
        ] {
            assert!(token_of(&bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_rewrite_is_0600_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("calico-kubeconfig");
        fs::write(&target, "old").expect("write");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic(&target, b"new").expect("write_atomic");
        assert_eq!(fs::read(&target).expect("read"), b"new");
        let mode = fs::metadata(&target).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("calico-kubeconfig")]);
    }
}
