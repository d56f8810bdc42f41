//! Credentials in a config never come back out: calico-ipam given an etcd endpoint with a
//! user and password, which cannot be reached, answers with an error that names the
//! endpoint without them, and its log holds neither; the log is created 0640 in a 0755
//! directory under a permissive umask. It runs in a network namespace of its own, with no
//! interface up, so the connection fails at once and no packet leaves. Needs root.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use cni_tests::fixtures::plugin_dir;
use cni_tests::{TestDir, TestNetns};
use serde_json::json;

const SECRET: &str = "s3cr3t-pa55";

#[test]
fn endpoint_credentials_are_never_printed_or_logged() {
    let dir = TestDir::new().expect("dir");
    let ns = TestNetns::new("secrets").expect("netns");
    let log = dir.path().join("logs/deeper/cni.log");
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "secrets", "type": "calico-ipam",
        "datastore_type": "etcdv3",
        "etcd_endpoints": format!("http://etcd-user:{SECRET}@127.0.0.1:2379"),
        "nodename": "n1", "nodename_file_optional": true,
        "log_level": "debug", "log_file_path": log,
        "ipam": {"type": "calico-ipam"}
    })
    .to_string();
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path_str()))
        .args(["--", "sh", "-c", "umask 000; exec \"$0\""])
        .arg(plugin_dir().join("calico-ipam"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "secrets-ctr")
        .env("CNI_NETNS", ns.path_str())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("calico-ipam runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unreachable etcd cannot allocate");
    let error: serde_json::Value = serde_json::from_str(&stdout).expect("an error object");
    assert!(error["code"].as_u64().is_some(), "{stdout}");
    assert!(
        stdout.contains("127.0.0.1:2379"),
        "names the endpoint: {stdout}"
    );
    let logged = fs::read_to_string(&log).expect("the log");
    for (what, text) in [
        ("stdout", &*stdout),
        ("stderr", &*stderr),
        ("log", &*logged),
    ] {
        assert!(!text.contains(SECRET), "{what} shows the password:\n{text}");
        assert!(
            !text.contains("etcd-user"),
            "{what} shows the user:\n{text}"
        );
    }
    let mode = |p: &std::path::Path| fs::metadata(p).expect("stat").mode() & 0o7777;
    assert_eq!(mode(&log), 0o640, "log file");
    assert_eq!(mode(log.parent().expect("dir")), 0o755, "log directory");
}

/// A kubeconfig whose `server:` carries a user and password (a proxy's URL): the error of
/// an API server that cannot be reached names the server without them.
#[test]
fn kubeconfig_server_credentials_are_never_printed() {
    let dir = TestDir::new().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: \
             http://kube-user:{SECRET}@127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    \
             cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    \
             token: abc\n"
        ),
    )
    .expect("kubeconfig");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "secrets", "type": "calico-ipam",
        "datastore_type": "kubernetes", "kubernetes": {"kubeconfig": kubeconfig},
        "nodename": "n1", "nodename_file_optional": true,
        "ipam_lock_file": dir.path().join("ipam.lock"),
        "ipam": {"type": "calico-ipam"}
    });
    let out = cni_tests::ipam::call("ADD", &conf, "secrets-kube", &[]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert!(
        out.stdout.contains("127.0.0.1:1"),
        "names the server: {}",
        out.describe()
    );
    for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!text.contains(SECRET), "{what} shows the password:\n{text}");
        assert!(
            !text.contains("kube-user"),
            "{what} shows the user:\n{text}"
        );
    }
}

/// An `mtu_file` that holds something else (here a secret that was mounted in its place) is
/// refused quoting a few characters of it, never the whole.
#[test]
fn an_mtu_file_with_other_content_is_not_quoted_whole() {
    let node = cni_tests::pod::Node::new();
    let secret = format!("{SECRET}-{}", "k".repeat(200));
    fs::write(node.mtu_file(), &secret).expect("mtu file");
    let pod = node.k8s_pod("5ec0000000000000000000000000000a", "default", "mtu-secret");
    let mut plugin = node.plugin(cni_tests::pod::Stack::V4);
    plugin["mtu"] = json!(0);
    let out = node.call("ADD", &node.plugin_config("1.0.0", &plugin), &pod.rt, &[]);
    let msg = out.refused(104, "MTU file");
    assert!(msg.contains("is not an MTU"), "{msg}");
    assert!(!out.stdout.contains(&secret[..40]), "{}", out.stdout);
    assert!(!out.stderr.contains(&secret[..40]), "{}", out.stderr);
    node.assert_nothing_left(&pod, "after a refused MTU file");
}
