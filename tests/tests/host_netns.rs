//! `Runner::host_netns` really runs plugins in the given namespace, and only there.
//! Needs root.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use cni_tests::{ConfList, Runner, RuntimeConf, TestDir, TestNetns};

/// A plugin that reports the inode of the network namespace it runs in.
fn netns_reporter(dir: &TestDir) -> std::path::PathBuf {
    let bin = dir.subdir("bin").expect("bin dir");
    let script = "#!/bin/sh\ncat >/dev/null\nino=$(stat -L -c %i /proc/self/ns/net)\n\
                  echo \"{\\\"cniVersion\\\":\\\"1.0.0\\\",\\\"dns\\\":{\\\"domain\\\":\\\"$ino\\\"}}\"\n";
    let path = bin.join("whereami");
    fs::write(&path, script).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

#[test]
fn plugins_run_in_the_host_netns_when_asked() {
    let dir = TestDir::new().expect("dir");
    let bin = netns_reporter(&dir);
    let node = TestNetns::new("hn-node").expect("netns");
    let list = ConfList::from_bytes(
        br#"{"cniVersion":"1.0.0","name":"w","plugins":[{"type":"whereami"}]}"#,
    )
    .expect("list");
    let rt = RuntimeConf::new("c1", "", "eth0");

    let inside = Runner::new(vec![bin.clone()], dir.cache_dir())
        .host_netns(Some(node.path().to_path_buf()))
        .add(&list, &rt)
        .expect("ADD in node");
    let node_ino = fs::metadata(node.path()).expect("stat").ino();
    assert_eq!(inside["dns"]["domain"], node_ino.to_string());

    let outside = Runner::new(vec![bin], dir.cache_dir())
        .add(&list, &rt)
        .expect("ADD here");
    let own_ino = fs::metadata("/proc/self/ns/net").expect("stat").ino();
    assert_eq!(outside["dns"]["domain"], own_ino.to_string());
}

#[test]
fn test_netns_is_removed_on_drop_even_when_panicking() {
    let path = std::panic::catch_unwind(|| {
        let ns = TestNetns::new("hn-drop").expect("netns");
        let path = ns.path().to_path_buf();
        assert!(path.exists());
        std::panic::panic_any(path)
    })
    .expect_err("panicked")
    .downcast::<std::path::PathBuf>()
    .expect("path payload");
    assert!(!path.exists(), "{} left behind", path.display());
}
