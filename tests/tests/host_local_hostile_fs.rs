//! host-local's store against a permissive umask and planted links: its directories are
//! 0755 and its files 0600 whatever the umask (so no other user can delete a live
//! reservation, which would hand its address to a second pod), a store directory left
//! world-writable by an earlier version is narrowed, and a symbolic link planted where a
//! state file goes is never written through. No `.reserving.*` temporary outlives the
//! operation that made it: not when the disk is full, and not when a process is killed in
//! the middle (the next operation removes the temporaries of dead processes). Needs root.

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
        // A plugin that refuses its environment may exit before reading stdin.
        match pipe.write_all(stdin.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
            _ => {}
        }
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

/// The `.reserving.*` temporaries in a store directory.
fn temporaries(store: &Path) -> Vec<String> {
    fs::read_dir(store)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".reserving."))
                .collect()
        })
        .unwrap_or_default()
}

/// A small tmpfs mounted on a directory of the test's own, unmounted when dropped
/// (panics included) before the directory goes.
struct TinyTmpfs {
    at: std::path::PathBuf,
}

impl TinyTmpfs {
    fn mount(at: &Path, size: &str) -> TinyTmpfs {
        fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount tmpfs on {}", at.display());
        TinyTmpfs {
            at: at.to_path_buf(),
        }
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let busy = !Command::new("umount")
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success());
        if busy {
            // Still detached, so the test directory can be removed.
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

#[test]
fn a_full_disk_fails_add_and_leaves_no_temporary() {
    let dir = TestDir::new().expect("dir");
    let data = dir.path().join("tiny");
    let _mount = TinyTmpfs::mount(&data, "64k");
    let store = data.join(NET);
    // The store directory, its lock and a first reservation, while there is room.
    let (ok, out) = call("ADD", &data, "ctr-room");
    assert!(ok, "{out}");
    // Fill what is left: creating a file still works, writing into one does not.
    let filler = fs::write(data.join("filler"), vec![0u8; 1 << 20]);
    assert!(filler.is_err(), "a 64k tmpfs took 1 MiB");
    let (ok, out) = call("ADD", &data, "ctr-full");
    assert!(!ok, "ADD on a full disk succeeded: {out}");
    let err: serde_json::Value = serde_json::from_str(&out).expect("an error object");
    assert!(err["code"].is_u64() && err["msg"].is_string(), "{out}");
    assert_eq!(temporaries(&store), Vec::<String>::new(), "{out}");
    assert!(call("DEL", &data, "ctr-full").0);
    assert!(call("DEL", &data, "ctr-room").0);
}

/// A process that ends when dropped.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("sleep runs"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid of a process that was killed and reaped: no live process has it.
fn dead_pid() -> u32 {
    Sleeper::start().pid()
}

#[test]
fn the_next_add_or_del_removes_temporaries_of_dead_processes_only() {
    let dir = TestDir::new().expect("dir");
    let data = dir.path().join("networks");
    let store = data.join(NET);
    fs::create_dir_all(&store).expect("mkdir");
    let live = Sleeper::start();
    // Another container's, so that no DEL removes it for its content.
    let plant = |name: String| {
        fs::write(store.join(&name), "someone-else\r\neth0").expect("plant");
        name
    };
    let live_temp = plant(format!(".reserving.10.99.0.50.{}", live.pid()));
    for command in ["ADD", "DEL"] {
        let dead_temp = plant(format!(".reserving.10.99.0.51.{}", dead_pid()));
        let (ok, out) = call(command, &data, "ctr-sweep");
        assert!(ok, "{command}: {out}");
        assert_eq!(
            temporaries(&store),
            std::slice::from_ref(&live_temp),
            "after {command}; {dead_temp} was dead"
        );
    }
    drop(live);
    assert!(call("DEL", &data, "ctr-sweep").0);
    assert_eq!(
        temporaries(&store),
        Vec::<String>::new(),
        "its process has ended"
    );
}

/// FIFOs planted as the lock, the round robin's memory and a reservation: opening one used
/// to block until someone wrote to it, hanging every ADD of the node. Each is replaced (or,
/// for a reservation, not taken as one), and ADD and DEL go through.
#[test]
fn planted_fifos_never_block_the_store() {
    let dir = TestDir::new().expect("dir");
    let data = dir.path().join("networks");
    let store = data.join(NET);
    fs::create_dir_all(&store).expect("mkdir");
    for name in ["lock", "last_reserved_ip.0", "10.99.0.2"] {
        nix::unistd::mkfifo(
            &store.join(name),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .expect("mkfifo");
    }
    let (ok, out) = call("ADD", &data, "ctr-fifos");
    assert!(ok, "{out}");
    for name in ["lock", "last_reserved_ip.0"] {
        let meta = fs::symlink_metadata(store.join(name)).expect("stat");
        assert!(meta.file_type().is_file(), "{name} is a file of ours again");
    }
    let (ok, out) = call("DEL", &data, "ctr-fifos");
    assert!(ok, "{out}");
}
