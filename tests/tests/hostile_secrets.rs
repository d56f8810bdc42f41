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
