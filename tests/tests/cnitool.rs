//! The `cnitool` binary driving the reference loopback plugin in a fresh namespace, the way
//! an operator would use it. Needs root.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use cni_tests::cnitool::container_id;
use cni_tests::fixtures::reference_plugin_dir;
use cni_tests::{TestDir, TestNetns};
use serde_json::Value;

fn cnitool(dir: &TestDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnitool"))
        .args(args)
        .env("NETCONFPATH", dir.path().join("net.d"))
        .env("CNI_PATH", reference_plugin_dir())
        .env("CNI_CACHE_DIR", dir.cache_dir())
        .env_remove("CNI_IFNAME")
        .env_remove("CNI_ARGS")
        .env_remove("CAP_ARGS")
        .output()
        .expect("cnitool runs")
}

fn lo_is_up(ns: &TestNetns) -> bool {
    let out = ns
        .exec_checked(&["ip", "-j", "link", "show", "lo"])
        .expect("ip link");
    let links: Value = serde_json::from_str(&out).expect("ip -j");
    links[0]["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"))
}

fn setup() -> (TestDir, TestNetns) {
    let dir = TestDir::new().expect("dir");
    let net_d = dir.subdir("net.d").expect("net.d");
    fs::write(
        net_d.join("10-lo.conflist"),
        r#"{"cniVersion":"1.0.0","name":"lo-net","plugins":[{"type":"loopback"}]}"#,
    )
    .expect("conflist");
    let ns = TestNetns::new("cnitool").expect("netns");
    (dir, ns)
}

#[test]
fn add_check_del_loopback() {
    let (dir, ns) = setup();
    let netns = ns.path_str();
    assert!(!lo_is_up(&ns));

    let out = cnitool(&dir, &["add", "lo-net", &netns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("result JSON");
    assert_eq!(result["interfaces"][0]["name"], "lo");
    assert_eq!(result["interfaces"][0]["sandbox"], netns.as_str());
    assert!(lo_is_up(&ns));
    let cache_file = dir
        .cache_dir()
        .join("results")
        .join(format!("lo-net-{}-eth0", container_id(&netns)));
    assert!(cache_file.is_file(), "{}", cache_file.display());

    let out = cnitool(&dir, &["check", "lo-net", &netns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cnitool(&dir, &["del", "lo-net", &netns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lo_is_up(&ns));
    assert!(!cache_file.exists());
}

#[test]
fn unknown_network_and_bad_usage_fail_with_a_message() {
    let (dir, ns) = setup();
    let out = cnitool(&dir, &["add", "nope", &ns.path_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no net configuration with name \"nope\""),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = cnitool(&dir, &["add", "lo-net"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<net> <netns>"));
}

#[test]
fn plugin_errors_reach_stderr_with_exit_1() {
    let (dir, ns) = setup();
    // No plugin directory: the lookup fails before anything runs.
    let out = Command::new(env!("CARGO_BIN_EXE_cnitool"))
        .args(["add", "lo-net", &ns.path_str()])
        .env("NETCONFPATH", dir.path().join("net.d"))
        .env("CNI_PATH", Path::new("/nonexistent"))
        .env("CNI_CACHE_DIR", dir.cache_dir())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plugin type=\"loopback\" failed (add): failed to find plugin"),
        "{err}"
    );
}

#[test]
fn gc_deletes_every_cached_attachment_and_status_succeeds() {
    let (dir, ns) = setup();
    let netns = ns.path_str();
    let out = cnitool(&dir, &["add", "lo-net", &netns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lo_is_up(&ns));

    // Like the Go tool, `gc` passes no valid attachments: every cached one is deleted.
    let out = cnitool(&dir, &["gc", "lo-net", &netns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lo_is_up(&ns));
    let left = fs::read_dir(dir.cache_dir().join("results"))
        .expect("results dir")
        .count();
    assert_eq!(left, 0);

    // A 1.0.0 list has no STATUS: success without running anything.
    let out = cnitool(&dir, &["status", "lo-net", &netns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
