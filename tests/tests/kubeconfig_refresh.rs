//! `calico-ipam kubeconfig refresh` end to end against the fake API server, whose
//! TokenRequest tokens expire: calico-ipam keeps working on the Kubernetes datastore after
//! the first token expired because the refresher rewrote the kubeconfig; without it, the ADD
//! fails with CNI code 11 saying the token expired and how to keep it fresh; the rewrite is
//! atomic and 0600; a refusal ends the refresher with a message that says what to fix.
//!
//! Lifetimes are seconds here (the server's maximum lifetime is a test knob), so the tests
//! sleep a few seconds each; they share nothing and run in parallel.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cni_tests::fixtures::plugin_dir;
use cni_tests::host_local::Outcome;
use cni_tests::ipam::{Backend, IpamFixture};
use cni_tests::kube_api::FakeApiServer;
use cni_tests::TestDir;
use serde_json::{json, Value};

const NODE: &str = "node-r";
const POOL: &str = "10.96.7.0/24";
const NAMESPACE: &str = "kube-system";
const ACCOUNT: &str = "calico-cni-plugin";
const HEADER: &str =
    "# Kubeconfig of the Calico CNI plugins, kept fresh by calico-ipam kubeconfig refresh.";

fn calico_ipam() -> PathBuf {
    plugin_dir().join("calico-ipam")
}

/// An API server that requires valid tokens, with the plugins' service account, and a
/// pool; `sa/token` holds the server's default token, standing in for the projected token
/// of the pod the refresher runs in.
struct Cluster {
    fx: IpamFixture,
    dir: TestDir,
}

impl Cluster {
    fn new(max_lifetime: Duration) -> Cluster {
        let fx = IpamFixture::new(Backend::Kubernetes);
        fx.create_pool(POOL, 26);
        fx.api().put(
            "serviceaccounts",
            json!({"metadata": {"name": ACCOUNT, "namespace": NAMESPACE}}),
        );
        fx.api().set_max_token_lifetime(max_lifetime);
        fx.api().set_require_token(true);
        let dir = TestDir::new().expect("temp dir");
        let sa = dir.subdir("sa").expect("sa dir");
        fs::write(sa.join("token"), format!("{}\n", fx.api().token())).expect("token");
        Cluster { fx, dir }
    }

    fn api(&self) -> &FakeApiServer {
        self.fx.api()
    }

    fn sa_dir(&self) -> PathBuf {
        self.dir.path().join("sa")
    }

    /// A kubeconfig for the server with this token.
    fn kubeconfig_with(&self, name: &str, token: &str) -> PathBuf {
        let dir = self.dir.subdir(name).expect("dir");
        let path = self.api().kubeconfig(&dir);
        let text = fs::read_to_string(&path).expect("kubeconfig");
        fs::write(&path, text.replace(self.api().token(), token)).expect("write");
        path
    }

    /// A calico-ipam configuration using `kubeconfig`.
    fn conf(&self, kubeconfig: &Path) -> Value {
        let mut conf = self.fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL]}));
        conf["kubernetes"]["kubeconfig"] = json!(kubeconfig);
        conf
    }

    fn refresher(&self, kubeconfig: &Path, extra: &[&str]) -> Command {
        self.refresher_of(&format!("{NAMESPACE}/{ACCOUNT}"), kubeconfig, extra)
    }

    fn refresher_of(&self, account: &str, kubeconfig: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(calico_ipam());
        cmd.args(["kubeconfig", "refresh", "--kubeconfig"])
            .arg(kubeconfig)
            .arg(format!("--service-account={account}"))
            .arg("--service-account-dir")
            .arg(self.sa_dir())
            .args(extra)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT");
        cmd
    }

    fn refresh_once(&self, kubeconfig: &Path) -> Output {
        self.refresher(kubeconfig, &["--once"])
            .output()
            .expect("run calico-ipam kubeconfig refresh --once")
    }
}

/// A refresher running in the background, stopped (and reaped) on every path out.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The token a kubeconfig holds.
fn token_of(kubeconfig: &Path) -> String {
    let text = fs::read_to_string(kubeconfig).expect("kubeconfig");
    let config: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
    config["users"][0]["user"]["token"]
        .as_str()
        .expect("a token")
        .to_string()
}

fn ok(out: &Outcome, what: &str) {
    assert_eq!(out.exit, Some(0), "{what}: {}", out.describe());
}

/// Waits until `kubeconfig` holds a token other than `old`.
fn wait_for_new_token(kubeconfig: &Path, old: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let token = token_of(kubeconfig);
        if token != old {
            return token;
        }
        assert!(
            start.elapsed() < within,
            "no new token in {kubeconfig:?} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn add_and_del_keep_working_after_the_first_token_expired() {
    let c = Cluster::new(Duration::from_secs(6));
    let kubeconfig = c.kubeconfig_with("cni", c.api().token());
    let out = c.refresh_once(&kubeconfig);
    assert!(out.status.success(), "{}", text(&out));
    let first = token_of(&kubeconfig);
    assert_ne!(first, c.api().token(), "a token of the service account");
    let conf = c.conf(&kubeconfig);
    ok(
        &c.fx.call("ADD", &conf, "c1", &[]),
        "ADD with the first token",
    );
    // What a plugin would have without the refresher: the first token, kept aside.
    let stale = c.kubeconfig_with("stale", &first);

    let mut child = c.refresher(&kubeconfig, &[]);
    child.stdout(Stdio::null()).stderr(Stdio::null());
    let _running = Running(child.spawn().expect("start the refresher"));
    // A third of 6 s before expiry, the refresher replaces the first token...
    let second = wait_for_new_token(&kubeconfig, &first, Duration::from_secs(10));
    assert_ne!(second, first);
    // ...which then expires.
    std::thread::sleep(Duration::from_secs(3));
    c.fx.call("ADD", &c.conf(&stale), "c9", &[])
        .refused(11, "ADD with the expired first token");

    ok(&c.fx.call("ADD", &conf, "c2", &[]), "ADD after the expiry");
    ok(&c.fx.call("DEL", &conf, "c1", &[]), "DEL after the expiry");
    ok(&c.fx.call("DEL", &conf, "c2", &[]), "DEL of the second");
}

#[test]
fn without_a_refresher_an_expired_token_fails_the_add_with_code_11_saying_so() {
    let c = Cluster::new(Duration::from_secs(3600));
    let token = c
        .api()
        .issue_token(NAMESPACE, ACCOUNT, Duration::from_secs(2));
    let kubeconfig = c.kubeconfig_with("cni", &token);
    let conf = c.conf(&kubeconfig);
    ok(
        &c.fx.call("ADD", &conf, "c1", &[]),
        "ADD while the token is valid",
    );
    std::thread::sleep(Duration::from_millis(2500));
    let before = c.fx.snapshot();
    for (command, id) in [("ADD", "c2"), ("DEL", "c1")] {
        let msg = c.fx.call(command, &conf, id, &[]).refused(11, command);
        println!("{command} with an expired token: {msg}");
        assert!(msg.contains("the token has expired"), "{command}: {msg}");
        assert!(
            msg.contains("calico-ipam kubeconfig refresh"),
            "{command}: {msg}"
        );
        assert!(!msg.contains(&token), "{command}: {msg}");
    }
    assert_eq!(c.fx.snapshot(), before, "nothing written");
}

#[test]
fn the_rewrite_is_atomic_and_0600() {
    let c = Cluster::new(Duration::from_secs(3600));
    let kubeconfig = c.kubeconfig_with("cni", c.api().token());
    fs::set_permissions(&kubeconfig, fs::Permissions::from_mode(0o644)).expect("chmod");
    let dir = kubeconfig.parent().expect("dir").to_path_buf();
    // A reader that opened the kubeconfig before the rewrite keeps reading the old file
    // whole: the new one is renamed over it, not written into it.
    let old_text = fs::read_to_string(&kubeconfig).expect("old");
    let old_file = fs::File::open(&kubeconfig).expect("open the old kubeconfig");
    let out = c.refresh_once(&kubeconfig);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("valid until"), "{}", text(&out));
    let seen = std::io::read_to_string(old_file).expect("read the old file");
    assert_eq!(seen, old_text, "the old file is untouched");

    let meta = fs::metadata(&kubeconfig).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let new_text = fs::read_to_string(&kubeconfig).expect("new");
    assert!(new_text.starts_with(HEADER), "{new_text}");
    let token = token_of(&kubeconfig);
    assert!(
        !text(&out).contains(&token),
        "the token is printed: {}",
        text(&out)
    );
    let names: Vec<String> = fs::read_dir(&dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["kubeconfig".to_string()],
        "no temporary file left"
    );

    // The token it holds is the service account's, requested for 24 h.
    let request = c
        .api()
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/token"))
        .expect("a TokenRequest");
    assert_eq!(
        request.path,
        format!("/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{ACCOUNT}/token")
    );
    let body: Value = serde_json::from_str(&request.body).expect("JSON");
    assert_eq!(body["kind"], "TokenRequest");
    assert_eq!(body["spec"]["expirationSeconds"], 86_400);

    // A second --once finds it fresh and leaves it alone.
    let out = c.refresh_once(&kubeconfig);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to do"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read_to_string(&kubeconfig).expect("same"), new_text);
    ok(
        &c.fx.call("ADD", &c.conf(&kubeconfig), "c1", &[]),
        "ADD with the refreshed kubeconfig",
    );
}

#[test]
fn a_refusal_ends_the_refresher_with_what_to_fix() {
    let c = Cluster::new(Duration::from_secs(3600));
    let kubeconfig = c.kubeconfig_with("cni", c.api().token());
    let before = fs::read_to_string(&kubeconfig).expect("kubeconfig");

    // No such service account: exits 1 (also when not --once), the kubeconfig untouched.
    let out = c
        .refresher_of("kube-system/nobody", &kubeconfig, &[])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        text(&out)
    );

    // RBAC does not grant the TokenRequest: the verb and resource to grant are named.
    c.api().fail_next(
        "POST",
        &format!("/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{ACCOUNT}/token"),
        1,
        403,
    );
    let out = c.refresher(&kubeconfig, &[]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("refused by RBAC: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr.contains("serviceaccounts/token"), "{}", text(&out));

    // Credentials the server refuses: no pod token, and the kubeconfig's own is wrong.
    fs::remove_file(c.sa_dir().join("token")).expect("rm token");
    let wrong = c.kubeconfig_with("wrong", "not-a-valid-token");
    let out = c.refresh_once(&wrong);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401 Unauthorized"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("not-a-valid-token"), "{}", text(&out));
    assert_eq!(fs::read_to_string(&kubeconfig).expect("kubeconfig"), before);
}
