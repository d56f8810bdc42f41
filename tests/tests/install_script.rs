//! `scripts/install.sh` end to end: what an operator relies on when installing the suite on a
//! node. Every test installs into bin and conf dirs of its own temporary directory (never
//! `/opt/cni/bin` or `/etc/cni/net.d`), from stand-in binaries it writes itself, except one
//! that installs the binaries this workspace built and runs them.
//!
//! Every run of the script is checked for two things whatever the test: the service-account
//! token never appears on stdout or stderr, and no temporary file is left in the dirs.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use cni_tests::fixtures::{plugin_dir, run_plugin};
use cni_tests::kube_api::FakeApiServer;
use cni_tests::TestDir;
use serde_json::{json, Value};

const PLUGINS: [&str; 6] = [
    "calico",
    "calico-ipam",
    "host-local",
    "portmap",
    "bandwidth",
    "loopback",
];
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.aW5zdGFsbC1zY3JpcHQtdGVzdA.c2lnbmF0dXJl-x_Y";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Vy\n-----END CERTIFICATE-----\n";
const SERVER: &str = "https://10.96.0.1:443";
const STATE: &str = ".calico-rs-install";
const BACKUP: &str = ".calico-rs-install.backup";
// Variables the script reads; cleared so that the machine's own never leak into a test.
const SCRIPT_ENV: [&str; 9] = [
    "KUBERNETES_NODE_NAME",
    "CNI_MTU",
    "ETCD_ENDPOINTS",
    "ETCD_CERT_FILE",
    "ETCD_KEY_FILE",
    "ETCD_CA_CERT_FILE",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "CARGO_TARGET_DIR",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn script() -> PathBuf {
    repo().join("scripts/install.sh")
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "install.sh failed: {self:?}");
        self
    }
    fn refused(self) -> Run {
        assert_eq!(self.code, 1, "expected a refusal (exit 1): {self:?}");
        self
    }
}

/// A node's worth of directories: `from/` (the built binaries), `bin/` (the CNI bin dir),
/// `conf/` (the CNI conf dir) and `sa/` (a service account's token and CA).
struct Node {
    dir: TestDir,
    from: PathBuf,
    bin: PathBuf,
    conf: PathBuf,
    sa: PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = TestDir::new().expect("temp dir");
        let from = dir.subdir("from").expect("from dir");
        let bin = dir.subdir("bin").expect("bin dir");
        let conf = dir.subdir("conf").expect("conf dir");
        let sa = dir.subdir("sa").expect("service account dir");
        fs::write(sa.join("token"), format!("{TOKEN}\n")).expect("token");
        fs::write(sa.join("ca.crt"), CA).expect("ca");
        let node = Node {
            dir,
            from,
            bin,
            conf,
            sa,
        };
        node.build("v1");
        node
    }

    /// Stand-in binaries, small and distinct per version, mode 0700 so that the install
    /// visibly sets 0755.
    fn build(&self, version: &str) {
        for name in PLUGINS {
            let path = self.from.join(name);
            fs::write(&path, format!("#!/bin/sh\necho '{name} {version}'\n")).expect("stand-in");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).expect("chmod");
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn credentials(&self) -> Vec<String> {
        vec![
            format!("--token-file={}", self.sa.join("token").display()),
            format!("--ca-file={}", self.sa.join("ca.crt").display()),
            format!("--server={SERVER}"),
        ]
    }

    /// The script with `args` and `env`, nothing else of the caller's script variables.
    fn run(&self, args: &[String], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(script());
        cmd.args(args);
        for var in SCRIPT_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run scripts/install.sh");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        for part in TOKEN.split('.') {
            assert!(
                !run.stdout.contains(part) && !run.stderr.contains(part),
                "the token is printed: {run:?}"
            );
        }
        for dir in [&self.bin, &self.conf] {
            assert_no_temp_files(dir);
        }
        run
    }

    /// Installs into this node's dirs from `from/`, with `extra` options.
    fn install(&self, extra: &[String]) -> Run {
        let mut args = vec![
            format!("--from={}", self.from.display()),
            format!("--bin-dir={}", self.bin.display()),
            format!("--conf-dir={}", self.conf.display()),
        ];
        args.extend_from_slice(extra);
        self.run(&args, &[])
    }

    /// The default conflist (Kubernetes datastore) with the service account's credentials.
    fn install_k8s(&self, extra: &[&str]) -> Run {
        let mut args = self.credentials();
        args.extend(extra.iter().map(|a| a.to_string()));
        self.install(&args)
    }

    fn uninstall(&self) -> Run {
        self.run(
            &[
                "--uninstall".into(),
                format!("--conf-dir={}", self.conf.display()),
            ],
            &[],
        )
    }

    fn conflist(&self) -> Value {
        read_json(&self.conf.join("10-calico.conflist"))
    }
}

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).expect("read conflist");
    serde_json::from_str(&text).expect("the conflist is JSON")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// A temporary file is `.<target>.calico-rs-install.XXXXXX`; the state file and the
/// directory of replaced files are the only other names of ours.
fn assert_no_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".calico-rs-install.") || name == BACKUP,
            "a temporary file is left in {}: {name}",
            dir.display()
        );
    }
}

/// What a reader of a directory tree can see of each entry, the top dir excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    ino: u64,
    mode: u32,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut seen = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return seen;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let content = meta.is_file().then(|| fs::read(&path).expect("read"));
        if meta.is_dir() {
            seen.extend(snapshot(&path));
        }
        seen.insert(
            path,
            Seen {
                ino: meta.ino(),
                mode: meta.mode(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                content,
            },
        );
    }
    seen
}

fn dir_mtime(dir: &Path) -> (i64, i64) {
    let meta = fs::metadata(dir).expect("stat dir");
    (meta.mtime(), meta.mtime_nsec())
}

fn same_content(a: &Path, b: &Path) -> bool {
    let len = |p: &Path| fs::metadata(p).expect("stat").len();
    if len(a) != len(b) {
        return false;
    }
    let open = |p: &Path| std::io::BufReader::new(fs::File::open(p).expect("open"));
    let (mut fa, mut fb) = (open(a), open(b));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut left = len(a);
    while left > 0 {
        let n = left.min(1 << 20) as usize;
        fa.read_exact(&mut ba[..n]).expect("read");
        fb.read_exact(&mut bb[..n]).expect("read");
        if ba[..n] != bb[..n] {
            return false;
        }
        left -= n as u64;
    }
    true
}

#[test]
fn install_copies_the_built_binaries_identical_0755_and_they_run() {
    let node = Node::new();
    let built = plugin_dir();
    let run = node
        .run(
            &[
                format!("--from={}", built.display()),
                format!("--bin-dir={}", node.bin.display()),
                format!("--conf-dir={}", node.conf.display()),
                "--conflist=10-calico-single-node.conflist".into(),
            ],
            &[],
        )
        .ok();
    for name in PLUGINS {
        let installed = node.bin.join(name);
        assert!(
            same_content(&built.join(name), &installed),
            "{name} differs from the built one"
        );
        assert_eq!(mode(&installed), 0o755, "{name}");
        assert!(run
            .stdout
            .contains(&format!("installing {}", installed.display())));
        let out = run_plugin(
            &installed,
            &[("CNI_COMMAND", "VERSION")],
            br#"{"cniVersion": "1.0.0"}"#,
        )
        .expect("exec the installed plugin");
        assert!(out.success(), "{name} VERSION: {out:?}");
        let versions: Value = serde_json::from_slice(&out.stdout).expect("VERSION is JSON");
        assert!(
            versions["supportedVersions"].is_array(),
            "{name}: {versions}"
        );
    }
    let state = fs::read_to_string(node.conf.join(STATE)).expect("state file");
    for name in PLUGINS {
        assert!(state.contains(&format!(" bin {}\n", node.bin.join(name).display())));
    }
}

#[test]
fn binaries_are_installed_0755_beside_foreign_plugins() {
    let node = Node::new();
    let other = node.bin.join("other-plugin");
    fs::write(&other, "#!/bin/sh\n").expect("foreign plugin");
    let before = snapshot(&node.bin).remove(&other);
    node.install_k8s(&[]).ok();
    for name in PLUGINS {
        let installed = node.bin.join(name);
        assert_eq!(
            fs::read(&installed).expect("installed"),
            fs::read(node.from.join(name)).expect("source")
        );
        assert_eq!(mode(&installed), 0o755, "{name} (its source is 0700)");
    }
    assert_eq!(snapshot(&node.bin).remove(&other), before, "untouched");
}

#[test]
fn replacing_a_binary_is_atomic_for_a_reader_of_the_old_one() {
    let node = Node::new();
    node.install_k8s(&[]).ok();
    let target = node.bin.join("calico");
    let v1 = fs::read(&target).expect("v1");
    let old_ino = fs::metadata(&target).expect("stat").ino();
    // A kubelet that started executing the old binary holds it open like this.
    let mut held = fs::File::open(&target).expect("open the old binary");

    node.build("v2");
    let run = node.install_k8s(&[]).ok();
    assert!(run
        .stdout
        .contains(&format!("updating {}", target.display())));

    let new_ino = fs::metadata(&target).expect("stat").ino();
    assert_ne!(new_ino, old_ino, "a new file was renamed over the old one");
    let mut seen = Vec::new();
    held.read_to_end(&mut seen).expect("read the held file");
    assert_eq!(seen, v1, "the open file still reads the old bytes");
    assert_eq!(
        fs::read(&target).expect("v2"),
        fs::read(node.from.join("calico")).expect("source"),
    );
    assert_eq!(mode(&target), 0o755);
    let mut names: Vec<String> = fs::read_dir(&node.bin)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = PLUGINS.iter().map(|p| p.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected, "nothing but the plugins in the bin dir");
}

#[test]
fn a_rerun_changes_nothing_not_even_mtimes() {
    let node = Node::new();
    node.install_k8s(&["--node-name=node-a"]).ok();
    let (bin, conf) = (snapshot(&node.bin), snapshot(&node.conf));
    let mtimes = (dir_mtime(&node.bin), dir_mtime(&node.conf));

    let run = node.install_k8s(&["--node-name=node-a"]).ok();
    assert_eq!(snapshot(&node.bin), bin);
    assert_eq!(snapshot(&node.conf), conf);
    assert_eq!((dir_mtime(&node.bin), dir_mtime(&node.conf)), mtimes);
    assert_eq!(
        run.stdout.matches("unchanged ").count(),
        PLUGINS.len() + 2,
        "{run:?}"
    );
}

#[test]
fn every_shipped_conflist_renders_as_itself_with_the_values_filled_in() {
    let mut names: Vec<String> = fs::read_dir(repo().join("conflists"))
        .expect("conflists/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conflist"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    let etcd = "https://10.0.0.5:2379,https://10.0.0.6:2379";
    for name in names {
        let node = Node::new();
        let kubeconfig = node.path("etc/calico/kubeconfig");
        let mut args = node.credentials();
        args.extend(s(&[
            &format!("--conflist={name}"),
            "--conf-name=05-pods.conflist",
            "--node-name=node-a.example",
            "--mtu=1410",
            &format!("--etcd-endpoints={etcd}"),
            &format!("--kubeconfig={}", kubeconfig.display()),
        ]));
        node.install(&args).ok();

        let template = fs::read_to_string(repo().join("conflists").join(&name)).expect("template");
        let expected: Value = serde_json::from_str(
            &template
                .replace("__KUBERNETES_NODE_NAME__", "node-a.example")
                .replace("__CNI_MTU__", "1410")
                .replace("__ETCD_ENDPOINTS__", etcd)
                // No etcd TLS files given: install-cni renders each as "".
                .replace("__ETCD_KEY_FILE__", "")
                .replace("__ETCD_CERT_FILE__", "")
                .replace("__ETCD_CA_CERT_FILE__", "")
                .replace("__KUBECONFIG_FILEPATH__", &kubeconfig.display().to_string()),
        )
        .expect("the filled-in template is JSON");
        let rendered_path = node.conf.join("05-pods.conflist");
        let rendered = fs::read_to_string(&rendered_path).expect("rendered");
        assert!(
            !rendered.contains("__"),
            "{name}: a placeholder is left: {rendered}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&rendered).expect("JSON"),
            expected,
            "{name}"
        );
        assert_eq!(mode(&rendered_path), 0o644, "{name}");
        assert_eq!(mode(&kubeconfig), 0o600, "{name}");
    }
}

/// etcd's TLS files go into the etcd conflist as absolute paths (a relative one is resolved
/// against the current directory); a certificate without its key, or a file that is not
/// there, is refused with nothing written.
#[test]
fn etcd_tls_files_are_rendered_as_absolute_paths_or_refused() {
    let node = Node::new();
    let tls = node.path("etc/calico/etcd");
    fs::create_dir_all(&tls).expect("tls dir");
    for name in ["cert.pem", "key.pem", "ca.pem"] {
        fs::write(tls.join(name), "-----BEGIN X-----\n").expect("tls file");
    }
    let base = {
        let mut args = node.credentials();
        args.extend(s(&[
            "--conflist=10-calico-etcd",
            "--etcd-endpoints=https://10.0.0.5:2379",
        ]));
        args
    };
    let mut half = base.clone();
    half.push(format!(
        "--etcd-cert-file={}",
        tls.join("cert.pem").display()
    ));
    let run = node.install(&half);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--etcd-key-file"), "{run:?}");
    assert!(
        !node.conf.join("10-calico.conflist").exists(),
        "nothing written"
    );

    let mut missing = base.clone();
    missing.push(format!(
        "--etcd-ca-cert-file={}",
        tls.join("none.pem").display()
    ));
    let run = node.install(&missing);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("none.pem"), "{run:?}");
    assert!(
        !node.conf.join("10-calico.conflist").exists(),
        "nothing written"
    );

    let mut full = base;
    full.extend([
        format!("--etcd-cert-file={}", tls.join("cert.pem").display()),
        format!("--etcd-key-file={}", tls.join("key.pem").display()),
        format!("--etcd-ca-cert-file={}", tls.join("ca.pem").display()),
    ]);
    node.install(&full).ok();
    let calico = &node.conflist()["plugins"][0];
    assert_eq!(
        calico["etcd_cert_file"],
        tls.join("cert.pem").display().to_string()
    );
    assert_eq!(
        calico["etcd_key_file"],
        tls.join("key.pem").display().to_string()
    );
    assert_eq!(
        calico["etcd_ca_cert_file"],
        tls.join("ca.pem").display().to_string()
    );
}

#[test]
fn values_come_from_options_then_the_environment_then_the_host() {
    let env = [
        ("KUBERNETES_NODE_NAME", "env-node"),
        ("CNI_MTU", "1440"),
        ("ETCD_ENDPOINTS", "http://127.0.0.1:2379"),
    ];
    let node = Node::new();
    let mut args = node.credentials();
    args.extend(s(&[
        &format!("--from={}", node.from.display()),
        &format!("--bin-dir={}", node.bin.display()),
        &format!("--conf-dir={}", node.conf.display()),
        "--conflist=10-calico-etcd",
    ]));
    node.run(&args, &env).ok();
    let calico = &node.conflist()["plugins"][0];
    assert_eq!(calico["nodename"], "env-node");
    assert_eq!(calico["mtu"], 1440);
    assert_eq!(calico["etcd_endpoints"], "http://127.0.0.1:2379");

    args.extend(s(&["--node-name=opt-node", "--mtu=9000"]));
    node.run(&args, &env).ok();
    let calico = &node.conflist()["plugins"][0];
    assert_eq!(calico["nodename"], "opt-node");
    assert_eq!(calico["mtu"], 9000);

    let bare = Node::new();
    bare.install(&s(&["--conflist=10-calico-single-node.conflist"]))
        .ok();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let calico = &bare.conflist()["plugins"][0];
    assert_eq!(calico["nodename"], host.trim().to_lowercase());
    // Neither --mtu nor $CNI_MTU: 0, the plugin takes calico-node's /var/lib/calico/mtu.
    assert_eq!(calico["mtu"], 0);
}

#[test]
fn mtu_0_is_auto_and_only_0_or_68_to_65535_are_taken() {
    let node = Node::new();
    let single = "--conflist=10-calico-single-node".to_string();
    let run = node.install(&[single.clone(), "--mtu=0".into()]).ok();
    assert_eq!(node.conflist()["plugins"][0]["mtu"], 0);
    assert!(run.stdout.contains("MTU 0 (auto"), "{run:?}");
    for (mtu, rendered) in [("68", 68), ("65535", 65535), ("1450", 1450)] {
        node.install(&[single.clone(), format!("--mtu={mtu}")]).ok();
        assert_eq!(
            node.conflist()["plugins"][0]["mtu"],
            rendered,
            "--mtu={mtu}"
        );
    }
    let args = [
        format!("--from={}", node.from.display()),
        format!("--bin-dir={}", node.bin.display()),
        format!("--conf-dir={}", node.conf.display()),
        single.clone(),
    ];
    node.run(&args, &[("CNI_MTU", "0")]).ok();
    assert_eq!(node.conflist()["plugins"][0]["mtu"], 0);
    let before = snapshot(&node.conf);
    for mtu in ["67", "65536", "-1", "00", "068", "1e3", " 1500"] {
        let run = node
            .install(&[single.clone(), format!("--mtu={mtu}")])
            .refused();
        assert!(
            run.stderr.contains("MTU must be 0 (auto") && run.stderr.contains("--help"),
            "--mtu={mtu}: {run:?}"
        );
        let run = node.run(&args, &[("CNI_MTU", mtu)]).refused();
        assert!(run.stderr.contains("MTU"), "CNI_MTU={mtu}: {run:?}");
    }
    assert_eq!(snapshot(&node.conf), before, "a refused MTU writes nothing");
}

#[test]
fn the_kubeconfig_is_0600_with_the_server_ca_and_token() {
    let node = Node::new();
    let run = node.install_k8s(&[]).ok();
    let path = node.conf.join("calico-kubeconfig");
    assert!(run
        .stdout
        .contains(&format!("installing {}", path.display())));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        node.conflist()["plugins"][0]["kubernetes"]["kubeconfig"],
        path.display().to_string()
    );

    let config: serde_norway::Value =
        serde_norway::from_str(&fs::read_to_string(&path).expect("kubeconfig")).expect("YAML");
    assert_eq!(config["kind"].as_str(), Some("Config"));
    let context = config["current-context"].as_str().expect("current-context");
    let by_name = |list: &str, name: &str| {
        config[list]
            .as_sequence()
            .expect("a list")
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .cloned()
            .unwrap_or_else(|| panic!("no {list} entry {name}"))
    };
    let context = by_name("contexts", context);
    let cluster = by_name(
        "clusters",
        context["context"]["cluster"].as_str().expect("cluster"),
    );
    let user = by_name("users", context["context"]["user"].as_str().expect("user"));
    assert_eq!(cluster["cluster"]["server"].as_str(), Some(SERVER));
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            cluster["cluster"]["certificate-authority-data"]
                .as_str()
                .expect("certificate-authority-data"),
        )
        .expect("base64");
    assert_eq!(ca, CA.as_bytes());
    assert_eq!(user["user"]["token"].as_str(), Some(TOKEN));
}

#[test]
fn in_a_pod_the_service_account_and_service_address_are_used() {
    let node = Node::new();
    let args = s(&[
        &format!("--from={}", node.from.display()),
        &format!("--bin-dir={}", node.bin.display()),
        &format!("--conf-dir={}", node.conf.display()),
        &format!("--service-account-dir={}", node.sa.display()),
    ]);
    let env = [
        ("KUBERNETES_SERVICE_HOST", "fd00:10:96::1"),
        ("KUBERNETES_SERVICE_PORT", "6443"),
    ];
    node.run(&args, &env).ok();
    let text = fs::read_to_string(node.conf.join("calico-kubeconfig")).expect("kubeconfig");
    let config: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
    assert_eq!(
        config["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://[fd00:10:96::1]:6443")
    );
    assert_eq!(config["users"][0]["user"]["token"].as_str(), Some(TOKEN));

    // Without a service address there is no server to name: refused, nothing written.
    let other = Node::new();
    let args = s(&[
        &format!("--from={}", other.from.display()),
        &format!("--bin-dir={}", other.bin.display()),
        &format!("--conf-dir={}", other.conf.display()),
        &format!("--service-account-dir={}", other.sa.display()),
    ]);
    let run = other.run(&args, &[]).refused();
    assert!(run.stderr.contains("--server"), "{run:?}");
    assert!(snapshot(&other.conf).is_empty() && snapshot(&other.bin).is_empty());
}

#[test]
fn the_token_is_never_printed() {
    // Node::run fails the test if any part of the token shows on stdout or stderr; this
    // test takes the script down every path that reads or writes the token.
    let node = Node::new();
    node.install_k8s(&[]).ok();
    node.install_k8s(&[]).ok();
    fs::write(node.sa.join("token"), format!("{TOKEN}rotated")).expect("rotate");
    let run = node.install_k8s(&[]).ok();
    assert!(
        run.stdout.contains("updating"),
        "a new token is written: {run:?}"
    );
    fs::write(node.sa.join("token"), format!("{TOKEN} {TOKEN}")).expect("bad token");
    let run = node.install_k8s(&[]).refused();
    assert!(run.stderr.contains("bearer token"), "{run:?}");

    let foreign = Node::new();
    fs::write(foreign.conf.join("calico-kubeconfig"), "foreign").expect("foreign");
    foreign.install_k8s(&[]).refused();
    foreign.install_k8s(&["--force"]).ok();
    foreign.uninstall().ok();
    node.uninstall().ok();
}

#[test]
fn a_foreign_conflist_is_refused_untouched_replaced_with_force_and_put_back() {
    let node = Node::new();
    let target = node.conf.join("10-calico.conflist");
    fs::write(
        &target,
        r#"{"name": "theirs", "cniVersion": "1.0.0", "plugins": []}"#,
    )
    .expect("foreign conflist");
    let (bin, conf) = (snapshot(&node.bin), snapshot(&node.conf));

    let run = node.install_k8s(&[]).refused();
    assert!(run.stderr.contains("--force"), "{run:?}");
    assert_eq!(snapshot(&node.bin), bin, "no binary written either");
    assert_eq!(snapshot(&node.conf), conf);

    let run = node.install_k8s(&["--force"]).ok();
    assert!(run
        .stdout
        .contains(&format!("replacing {}", target.display())));
    assert_eq!(node.conflist()["name"], "k8s-pod-network");
    // Ours now: a plain rerun and a change of template need no --force.
    node.install_k8s(&[]).ok();
    node.install_k8s(&["--mtu=1400"]).ok();
    assert_eq!(node.conflist()["plugins"][0]["mtu"], 1400);

    node.uninstall().ok();
    assert_eq!(
        snapshot(&node.conf),
        conf,
        "the foreign conflist is back as it was"
    );
    assert_eq!(snapshot(&node.bin), bin);
}

#[test]
fn uninstall_puts_the_dirs_back_as_they_were_twice() {
    let node = Node::new();
    // A node with the reference plugins and another network already there.
    fs::write(node.bin.join("portmap"), "reference portmap").expect("portmap");
    fs::write(node.bin.join("other-plugin"), "other").expect("other plugin");
    fs::write(node.conf.join("20-other.conflist"), "{}").expect("other conflist");
    let (bin, conf) = (snapshot(&node.bin), snapshot(&node.conf));

    node.install_k8s(&[]).ok();
    node.build("v2");
    node.install_k8s(&[]).ok();
    assert_eq!(
        fs::read(node.bin.join("portmap")).expect("ours"),
        fs::read(node.from.join("portmap")).expect("source")
    );

    let run = node.uninstall().ok();
    assert!(run
        .stdout
        .contains(&format!("restored {}", node.bin.join("portmap").display())));
    assert_eq!(snapshot(&node.bin), bin);
    assert_eq!(snapshot(&node.conf), conf);

    let run = node.uninstall().ok();
    assert!(run.stdout.contains("nothing to uninstall"), "{run:?}");
    assert_eq!(snapshot(&node.bin), bin);
    assert_eq!(snapshot(&node.conf), conf);
}

#[test]
fn uninstall_leaves_a_file_changed_since_the_install() {
    let node = Node::new();
    node.install_k8s(&[]).ok();
    let target = node.conf.join("10-calico.conflist");
    let mut edited = fs::read_to_string(&target).expect("conflist");
    edited.push('\n');
    fs::write(&target, &edited).expect("edit");

    let run = node.uninstall().ok();
    assert!(
        run.stdout.contains(&format!("left {}", target.display())),
        "{run:?}"
    );
    assert_eq!(fs::read_to_string(&target).expect("kept"), edited);
    let left: Vec<PathBuf> = snapshot(&node.conf).into_keys().collect();
    assert_eq!(left, vec![target]);
    assert!(snapshot(&node.bin).is_empty());
}

#[test]
fn a_missing_value_is_refused_with_nothing_written() {
    let node = Node::new();
    // Dirs that do not exist yet must not be created by a refused run.
    let (bin, conf) = (node.path("new/bin"), node.path("new/net.d"));
    let attempt = |extra: &[String]| {
        let mut args = s(&[
            &format!("--from={}", node.from.display()),
            &format!("--bin-dir={}", bin.display()),
            &format!("--conf-dir={}", conf.display()),
        ]);
        args.extend_from_slice(extra);
        let run = node.run(&args, &[]).refused();
        assert!(!node.path("new").exists(), "written: {extra:?}");
        run
    };
    let mut etcd = node.credentials();
    etcd.push("--conflist=10-calico-etcd.conflist".into());
    let run = attempt(&etcd);
    assert!(run.stderr.contains("__ETCD_ENDPOINTS__") && run.stderr.contains("--etcd-endpoints"));

    let run = attempt(&[]);
    assert!(run.stderr.contains("__KUBECONFIG_FILEPATH__"), "{run:?}");

    for mtu in ["9", "70000", "15OO", ""] {
        let run = attempt(&[
            format!("--mtu={mtu}"),
            "--conflist=10-calico-single-node".into(),
        ]);
        assert!(run.stderr.contains("MTU"), "{run:?}");
    }
    let run = attempt(&s(&[
        "--conflist=10-calico-etcd",
        "--etcd-endpoints=10.0.0.5:2379",
    ]));
    assert!(run.stderr.contains("etcd endpoint"), "{run:?}");
    let run = attempt(&s(&["--server=http://10.0.0.1:6443"]));
    assert!(run.stderr.contains("https"), "{run:?}");

    // A template of one's own is held to the same rules.
    let custom = node.path("custom.conflist");
    fs::write(
        &custom,
        r#"{"name": "x", "plugins": [{"type": "__UNKNOWN_THING__"}]}"#,
    )
    .expect("template");
    let run = attempt(&[format!("--conflist={}", custom.display())]);
    assert!(run.stderr.contains("__UNKNOWN_THING__"), "{run:?}");
    fs::write(&custom, r#"{"name": "x", "mtu": __CNI_MTU__, "plugins": ["#).expect("template");
    let run = attempt(&[format!("--conflist={}", custom.display())]);
    assert!(run.stderr.contains("not a JSON object"), "{run:?}");

    fs::remove_file(node.from.join("bandwidth")).expect("rm");
    let run = attempt(&s(&["--conflist=10-calico-single-node"]));
    assert!(run.stderr.contains("bandwidth"), "{run:?}");
}

#[test]
fn help_documents_every_option_and_bad_usage_exits_1() {
    let node = Node::new();
    let help = node.run(&s(&["--help"]), &[]).ok().stdout;
    // The options the script accepts, as its argument loop spells them.
    let text = fs::read_to_string(script()).expect("script");
    let mut options = Vec::new();
    for line in text.lines() {
        let arm = line.trim().trim_end_matches(['\\', ')']).trim();
        let words: Vec<&str> = arm
            .split('|')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .collect();
        if !words.is_empty() && words.iter().all(|w| w.starts_with('-') && !w.contains(' ')) {
            options.extend(words.iter().map(|w| w.to_string()));
        }
    }
    for expected in [
        "--from",
        "--build",
        "--bin-dir",
        "--conflist",
        "--conf-dir",
        "--conf-name",
        "--node-name",
        "--mtu",
        "--etcd-endpoints",
        "--kubeconfig",
        "--token-file",
        "--ca-file",
        "--server",
        "--force",
        "--uninstall",
        "--binaries-only",
        "--help",
    ] {
        assert!(
            options.iter().any(|o| o == expected),
            "{expected} not parsed: {options:?}"
        );
    }
    for option in &options {
        assert!(
            help.contains(option.as_str()),
            "--help does not document {option}"
        );
    }

    for bad in [
        s(&["--bogus"]),
        s(&["--mtu"]),
        s(&["--force=yes"]),
        s(&["extra"]),
        s(&["--build", "--from=/nonexistent"]),
        s(&["--conf-name=10-calico.conf"]),
    ] {
        let run = node.run(&bad, &[]).refused();
        assert!(run.stderr.contains("--help"), "{bad:?}: {run:?}");
    }
}

#[test]
fn help_runs_nothing_and_writes_nothing() {
    // A `calico` first on PATH that records being run: the help text names `calico -t`,
    // which an unescaped backtick in the script's heredoc would run.
    let node = Node::new();
    let fake_bin = node.dir.subdir("fake-bin").expect("fake bin");
    let watched = node.dir.subdir("watched").expect("watched dir");
    let marker = watched.join("calico-was-run");
    let fake = fake_bin.join("calico");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho ran >{}\necho FAKE-CALICO\n",
            marker.display()
        ),
    )
    .expect("fake calico");
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(script())
        .arg("--help")
        .current_dir(&watched)
        .env("PATH", &path)
        .env("TMPDIR", &watched)
        .output()
        .expect("run --help");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!marker.exists(), "--help ran calico");
    assert!(!stdout.contains("FAKE-CALICO"), "{stdout}");
    assert!(
        stdout.contains("run the installed `calico -t` on its"),
        "{stdout}"
    );
    assert!(
        stdout.contains("`calico-ipam kubeconfig refresh`"),
        "{stdout}"
    );
    assert!(
        snapshot(&watched).is_empty(),
        "--help wrote into its cwd or TMPDIR"
    );
    for dir in [&node.bin, &node.conf] {
        assert!(
            snapshot(dir).is_empty(),
            "--help wrote into {}",
            dir.display()
        );
    }
}

/// A self-signed EC certificate and its key, made with openssl for this test.
fn client_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=calico-cni-plugin",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install -y openssl)");
    assert!(out.status.success(), "openssl: {out:?}");
    (cert, key)
}

#[test]
fn client_cert_and_key_make_a_kubeconfig_calico_ipam_can_use() {
    let node = Node::new();
    let (cert, key) = client_certificate(node.dir.path());
    // Nothing listens on the port: calico-ipam gets as far as connecting, which it does
    // only once kube has loaded the certificate and key of the kubeconfig.
    let port = cni_tests::fixtures::free_tcp_port().expect("a free port");
    let server = format!("https://127.0.0.1:{port}");
    let args = vec![
        format!("--client-cert={}", cert.display()),
        format!("--client-key={}", key.display()),
        format!("--ca-file={}", cert.display()),
        format!("--server={server}"),
    ];
    let run = node.install(&args).ok();
    let key_text = fs::read_to_string(&key).expect("key");
    let key_data = base64::engine::general_purpose::STANDARD.encode(&key_text);
    for secret in key_text.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{run:?}"
        );
    }
    assert!(!run.stdout.contains(&key_data), "{run:?}");
    assert!(run.stdout.contains("client certificate from"), "{run:?}");

    let path = node.conf.join("calico-kubeconfig");
    assert_eq!(mode(&path), 0o600);
    let text = fs::read_to_string(&path).expect("kubeconfig");
    let config: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
    let user = &config["users"][0]["user"];
    let decode = |field: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(user[field].as_str().unwrap_or_else(|| panic!("no {field}")))
            .expect("base64")
    };
    assert_eq!(
        decode("client-certificate-data"),
        fs::read(&cert).expect("cert")
    );
    assert_eq!(decode("client-key-data"), key_text.as_bytes());
    assert!(user.get("token").is_none(), "no token: {text}");
    assert_eq!(
        config["clusters"][0]["cluster"]["server"].as_str(),
        Some(server.as_str())
    );

    let lock = node.path("ipam.lock");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "net", "type": "calico-ipam",
        "datastore_type": "kubernetes", "kubernetes": {"kubeconfig": path},
        "nodename": "node-1", "nodename_file_optional": true, "ipam_lock_file": lock,
        "ipam": {"type": "calico-ipam"},
    });
    let out = cni_tests::ipam::call("ADD", &conf, "c1", &[]);
    let msg = out.refused(11, "ADD with nothing listening");
    assert!(
        msg.contains("unreachable"),
        "the kubeconfig was used: {msg}"
    );

    // The same kubeconfig with a key that is not one: refused before any request.
    let broken = node.path("broken-kubeconfig");
    fs::write(&broken, text.replace(&key_data, "bm90IGEga2V5")).expect("write");
    fs::set_permissions(&broken, fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut conf = conf;
    conf["kubernetes"]["kubeconfig"] = json!(broken);
    let msg = cni_tests::ipam::call("ADD", &conf, "c1", &[]).refused(7, "a broken key");
    assert!(msg.contains("cannot build a client"), "{msg}");

    // Bad usage is refused with nothing written.
    let other = Node::new();
    for (bad, says) in [
        (
            vec![format!("--client-cert={}", cert.display())],
            "go together",
        ),
        (
            vec![
                format!("--client-cert={}", cert.display()),
                format!("--client-key={}", cert.display()),
                format!("--ca-file={}", cert.display()),
                format!("--server={server}"),
            ],
            "not a PEM private key",
        ),
        (
            vec![
                format!("--client-cert={}", cert.display()),
                format!("--client-key={}", key.display()),
                format!("--token-file={}", other.sa.join("token").display()),
                format!("--server={server}"),
            ],
            "not both",
        ),
    ] {
        let run = other.install(&bad).refused();
        assert!(run.stderr.contains(says), "{bad:?}: {run:?}");
        assert!(!run.stderr.contains(&key_data), "{run:?}");
        assert!(snapshot(&other.conf).is_empty() && snapshot(&other.bin).is_empty());
    }
}

#[test]
fn a_kubeconfig_the_refresher_rewrote_is_still_ours_to_update_and_uninstall() {
    const REFRESHED: &str =
        "# Kubeconfig of the Calico CNI plugins, kept fresh by calico-ipam kubeconfig refresh.";
    let node = Node::new();
    node.install_k8s(&[]).ok();
    let path = node.conf.join("calico-kubeconfig");
    let written = fs::read_to_string(&path).expect("kubeconfig");
    fs::write(
        &path,
        format!("{REFRESHED}\n{}", written.replace(TOKEN, "a-newer-token")),
    )
    .expect("rewrite");
    let run = node.install_k8s(&[]).ok();
    assert!(
        run.stdout.contains(&format!("updating {}", path.display())),
        "{run:?}"
    );
    assert_eq!(fs::read_to_string(&path).expect("kubeconfig"), written);

    fs::write(
        &path,
        format!("{REFRESHED}\n{}", written.replace(TOKEN, "a-newer-token")),
    )
    .expect("rewrite");
    node.uninstall().ok();
    assert!(!path.exists(), "uninstalled");
    assert!(
        snapshot(&node.conf).is_empty(),
        "{:?}",
        snapshot(&node.conf)
    );

    // A foreign kubeconfig with the refresher's header is still foreign.
    let other = Node::new();
    let foreign = other.conf.join("calico-kubeconfig");
    fs::write(&foreign, format!("{REFRESHED}\nkind: Config\n")).expect("foreign");
    let run = other.install_k8s(&[]).refused();
    assert!(run.stderr.contains("--force"), "{run:?}");
}

#[test]
fn a_failure_while_writing_exits_2() {
    let node = Node::new();
    let file = node.path("not-a-dir");
    fs::write(&file, "").expect("file");
    let run = node.run(
        &[
            format!("--from={}", node.from.display()),
            format!("--bin-dir={}", file.join("bin").display()),
            format!("--conf-dir={}", node.conf.display()),
            "--conflist=10-calico-single-node".into(),
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        !node.conf.join("10-calico.conflist").exists(),
        "no conflist for binaries that are not there"
    );
}

#[test]
fn check_datastore_writes_the_conflist_only_once_calico_is_ready() {
    // The real binaries this time: `--check-datastore` runs the installed `calico -t`
    // against the API server the kubeconfig names.
    let node = Node::new();
    let api = FakeApiServer::start();
    let kubeconfig = api.kubeconfig(node.dir.path());
    let args = vec![
        format!("--from={}", plugin_dir().display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        "--node-name=node-1".to_string(),
        "--check-datastore".to_string(),
    ];
    let run = node.install(&args);
    assert_eq!(run.code, 2, "no ClusterInformation yet: {run:?}");
    assert!(run.stderr.contains("not ready"), "{run:?}");
    assert!(
        !node.conf.join("10-calico.conflist").exists(),
        "no conflist while the datastore is not ready"
    );

    api.put(
        "clusterinformations",
        json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "ClusterInformation",
               "metadata": {"name": "default"}, "spec": {"datastoreReady": true}}),
    );
    let run = node.install(&args).ok();
    assert!(
        run.stdout.contains("datastore reachable and ready"),
        "{run:?}"
    );
    assert_eq!(
        node.conflist()["plugins"][0]["kubernetes"]["kubeconfig"],
        json!(kubeconfig)
    );
    node.uninstall().ok();
}

/// A node as calico-node's install-cni left it: Calico's six binaries, its conflist and the
/// kubeconfig calico-node keeps fresh.
fn calico_node_files(node: &Node) {
    for name in PLUGINS {
        let path = node.bin.join(name);
        fs::write(&path, format!("calico v3.30 {name}\n")).expect("Calico's binary");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::write(
        node.conf.join("10-calico.conflist"),
        r#"{"name": "k8s-pod-network", "cniVersion": "0.3.1", "plugins": [{"type": "calico"}]}"#,
    )
    .expect("Calico's conflist");
    let kubeconfig = node.conf.join("calico-kubeconfig");
    fs::write(
        &kubeconfig,
        "# Kubeconfig file for Calico CNI plugin.\nkind: Config\n",
    )
    .expect("Calico's kubeconfig");
    fs::set_permissions(&kubeconfig, fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn install_binaries_only(node: &Node, extra: &[&str]) -> Run {
    let mut args = s(&["--binaries-only"]);
    args.extend(s(extra));
    node.install(&args)
}

#[test]
fn binaries_only_replaces_calicos_binaries_and_nothing_else_and_uninstall_puts_them_back() {
    let node = Node::new();
    calico_node_files(&node);
    let (bin, conf) = (snapshot(&node.bin), snapshot(&node.conf));

    let run = install_binaries_only(&node, &[]).ok();
    for name in PLUGINS {
        let target = node.bin.join(name);
        assert_eq!(
            fs::read(&target).expect("installed"),
            fs::read(node.from.join(name)).expect("source"),
            "{name}"
        );
        assert_eq!(mode(&target), 0o755, "{name}");
        assert!(run
            .stdout
            .contains(&format!("replacing {}", target.display())));
        assert_eq!(
            fs::read_to_string(node.bin.join(BACKUP).join(name)).expect("kept"),
            format!("calico v3.30 {name}\n")
        );
    }
    // Calico's conflist and kubeconfig byte for byte, same inode and mtime; only the state
    // file is new in the conf dir, and it lists the binaries alone.
    let mut after = snapshot(&node.conf);
    let state = fs::read_to_string(node.conf.join(STATE)).expect("state file");
    after.remove(&node.conf.join(STATE));
    assert_eq!(after, conf, "the conf dir is as install-cni left it");
    assert_eq!(state.lines().filter(|l| l.contains(" bin ")).count(), 6);
    assert!(!state.contains(" conflist ") && !state.contains(" kubeconfig "));

    // A rerun changes nothing, not even mtimes.
    let (bin_now, conf_now) = (snapshot(&node.bin), snapshot(&node.conf));
    let run = install_binaries_only(&node, &[]).ok();
    assert_eq!(run.stdout.matches("unchanged ").count(), PLUGINS.len());
    assert_eq!(
        (snapshot(&node.bin), snapshot(&node.conf)),
        (bin_now, conf_now)
    );

    let run = node.uninstall().ok();
    assert!(run
        .stdout
        .contains(&format!("restored {}", node.bin.join("calico").display())));
    assert_eq!(
        snapshot(&node.bin),
        bin,
        "Calico's binaries are back as they were"
    );
    assert_eq!(snapshot(&node.conf), conf);
}

#[test]
fn binaries_only_after_install_cni_copied_again_keeps_the_newer_calico_binary() {
    // calico-node restarted with UPDATE_CNI_BINARIES left true: install-cni copied a newer
    // Calico over ours. A rerun takes the node back, and --uninstall gives the newer one.
    let node = Node::new();
    calico_node_files(&node);
    install_binaries_only(&node, &[]).ok();
    let calico = node.bin.join("calico");
    fs::write(&calico, "calico v3.31 calico\n").expect("install-cni copies again");
    let run = install_binaries_only(&node, &[]).ok();
    assert!(
        run.stdout
            .contains(&format!("replacing {}", calico.display())),
        "{run:?}"
    );
    assert_eq!(
        fs::read(&calico).expect("ours"),
        fs::read(node.from.join("calico")).expect("source")
    );
    node.uninstall().ok();
    assert_eq!(
        fs::read_to_string(&calico).expect("Calico's"),
        "calico v3.31 calico\n"
    );
    assert_eq!(
        fs::read_to_string(node.bin.join("portmap")).expect("Calico's"),
        "calico v3.30 portmap\n"
    );
    assert!(!node.bin.join(BACKUP).exists());
}

#[test]
fn binaries_only_refuses_conflist_and_kubeconfig_options_with_nothing_written() {
    let node = Node::new();
    calico_node_files(&node);
    let (bin, conf) = (snapshot(&node.bin), snapshot(&node.conf));
    let token = format!("--token-file={}", node.sa.join("token").display());
    for extra in [
        vec!["--mtu=1400"],
        vec!["--conflist=10-calico-etcd"],
        vec![token.as_str()],
        vec!["--force"],
        vec!["--check-datastore"],
    ] {
        let run = install_binaries_only(&node, &extra).refused();
        assert!(run.stderr.contains("--binaries-only"), "{extra:?}: {run:?}");
        assert_eq!(
            (snapshot(&node.bin), snapshot(&node.conf)),
            (bin.clone(), conf.clone())
        );
    }
    // In a pod, the service account is not used either: no kubeconfig is written.
    let run = node.run(
        &[
            "--binaries-only".into(),
            format!("--from={}", node.from.display()),
            format!("--bin-dir={}", node.bin.display()),
            format!("--conf-dir={}", node.conf.display()),
        ],
        &[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("CNI_MTU", "bogus"),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let mut after = snapshot(&node.conf);
    after.remove(&node.conf.join(STATE));
    assert_eq!(after, conf);
}
