//! host-local's store against a permissive umask and planted links: its directories are
//! 0755 and its files 0600 whatever the umask (so no other user can delete a live
//! reservation, which would hand its address to a second pod), a store directory left
//! world-writable by an earlier version is narrowed, and a symbolic link planted where a
//! state file goes is never written through. Needs root.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use cni_tests::fixtures::plugin_dir;
use cni_tests::TestDir;
use serde_json::json;

const NET: &str = "hostile-fs";

/// host-local ADD or DEL run under `umask 000`; the exit status and stdout.
fn call(command: &str, data_dir: &Path, id: &str) -> (bool, String) {
    let stdin = json!({
        "cniVersion": "1.0.0", "name": NET, "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": data_dir,
                 "ranges": [[{"subnet": "10.99.0.0/24"}]]}
    })
    .to_string();
    let binary = plugin_dir().join("host-local");
    let mut child = Command::new("sh")
        .args(["-c", "umask 000; exec \"$0\""])
        .arg(&binary)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/var/run/netns/unused")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("host-local runs");
    {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("host-local finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

#[test]
fn a_permissive_umask_makes_no_writable_store() {
    let dir = TestDir::new().expect("dir");
    let data = dir.path().join("networks");
    let (ok, out) = call("ADD", &data, "ctr-umask");
    assert!(ok, "{out}");
    let store = data.join(NET);
    assert_eq!(mode(&data), 0o755, "data dir");
    assert_eq!(mode(&store), 0o755, "network dir");
    for entry in fs::read_dir(&store).expect("list").flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{:?}", entry.file_name());
    }
    let (ok, out) = call("DEL", &data, "ctr-umask");
    assert!(ok, "{out}");
}

#[test]
fn a_world_writable_store_is_narrowed() {
    let dir = TestDir::new().expect("dir");
    let data = dir.path().join("networks");
    let store = data.join(NET);
    fs::create_dir_all(&store).expect("mkdir");
    for d in [&data, &store] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let (ok, out) = call("ADD", &data, "ctr-wide");
    assert!(ok, "{out}");
    assert_eq!(mode(&data), 0o755);
    assert_eq!(mode(&store), 0o755);
    assert!(call("DEL", &data, "ctr-wide").0);
}

#[test]
fn planted_links_are_never_written_through() {
    let dir = TestDir::new().expect("dir");
    let data = dir.path().join("networks");
    let store = data.join(NET);
    fs::create_dir_all(&store).expect("mkdir");
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious\n").expect("victim");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).expect("chmod");
    // Where the lock, the round robin's memory and this process's temporary go.
    for name in ["lock", "last_reserved_ip.0"] {
        symlink(&victim, store.join(name)).expect("plant");
    }
    let (ok, out) = call("ADD", &data, "ctr-links");
    assert!(ok, "{out}");
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious\n");
    assert_eq!(mode(&victim), 0o644, "the victim's mode");
    for name in ["lock", "last_reserved_ip.0"] {
        let meta = fs::symlink_metadata(store.join(name)).expect("stat");
        assert!(meta.file_type().is_file(), "{name} is a file of ours again");
    }
    assert!(call("DEL", &data, "ctr-links").0);
}
