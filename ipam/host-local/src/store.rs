//! The reservation store, byte-compatible with the reference plugin's disk backend so a
//! node can switch binaries with pods running:
//!
//! ```text
//! <dataDir>/<network>/lock                  flock(LOCK_EX) around every operation
//! <dataDir>/<network>/<ip>                  "<containerID>\r\n<ifname>", no newline
//! <dataDir>/<network>/last_reserved_ip.<N>  the last address handed out by range set N
//! ```
//!
//! A reservation appears atomically with its content: it is written to a temporary file
//! (`.reserving.<ip>.<pid>`) and hard-linked to its address name (`link` fails if the name
//! exists, which is the exclusive create), so a crash never leaves an empty reservation that
//! no DEL could match. The temporary is removed on every path out of a reservation, failed
//! ones included (a full disk fails the write after the create). One a killed process left
//! behind is removed by the next operation on the store, under the lock, once its pid is no
//! live process; its content names the container, so a DEL removes it too, as the
//! reference's DEL would (it matches on content).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The line break between container id and interface name.
const LINE_BREAK: &str = "\r\n";
const LOCK_FILE: &str = "lock";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Temporary files start with a dot: never an address, never `lock`.
const TEMP_PREFIX: &str = ".reserving.";

#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", .path.display())]
pub struct StoreError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

type Result<T> = std::result::Result<T, StoreError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Who holds a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// `<id>\r\n<ifname>`
    Attachment { id: String, ifname: String },
    /// A file from before interface names were recorded: just the id.
    Legacy { id: String },
}

impl Owner {
    fn parse(content: &str) -> Owner {
        let content = content.trim();
        match content.split_once(LINE_BREAK) {
            Some((id, ifname)) => Owner::Attachment {
                id: id.to_string(),
                ifname: ifname.to_string(),
            },
            None => Owner::Legacy {
                id: content.to_string(),
            },
        }
    }
}

/// One reservation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub ip: IpAddr,
    pub owner: Owner,
}

/// The store of one network, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Opens `<data_dir>/<network>`, creating it, and takes its lock (waiting for it).
    pub fn open(data_dir: &Path, network: &str) -> Result<Store> {
        let dir = data_dir.join(network);
        // The reference's mode, whatever the umask: a directory others can write to lets
        // any user delete a live reservation, or plant a link the plugin writes through.
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(io_err("create directory", &dir))?;
        for d in [data_dir, dir.as_path()] {
            narrow(d)?;
        }
        if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(io_err("use", &dir)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the network's directory is a symbolic link: remove it",
            )));
        }
        let lock_path = dir.join(LOCK_FILE);
        let file =
            open_no_follow(&lock_path, false).map_err(io_err("open lock file", &lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err("lock", &lock_path)(errno.into()))?;
        let store = Store { dir, _lock: lock };
        store.sweep_dead_temporaries();
        Ok(store)
    }

    /// Removes the temporaries of processes that are gone: killed in the middle of a
    /// reservation. Every reservation happens under the lock we now hold, so none of them is
    /// in progress; those of a live process other than us are still left alone, since its
    /// pid may be of another pid namespace sharing the directory. Ours are a dead process's
    /// that had our pid before. Failures are only logged: they cost a file, not the ADD or
    /// DEL this store is opened for.
    fn sweep_dead_temporaries(&self) {
        let Ok(temps) = self.temporaries() else {
            return;
        };
        for path in temps {
            let Some(pid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(temporary_pid)
            else {
                continue;
            };
            if pid != std::process::id() && process_is_alive(pid) {
                continue;
            }
            match remove_if_present(&path) {
                Ok(()) => log::info!("removed {} left by a dead process", path.display()),
                Err(e) => log::warn!("{e}"),
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reserves `ip` for (id, ifname); `false` when someone holds it already.
    pub fn reserve(&self, ip: IpAddr, id: &str, ifname: &str) -> Result<bool> {
        let target = self.dir.join(ip.to_string());
        let temp = self
            .dir
            .join(format!("{TEMP_PREFIX}{ip}.{}", std::process::id()));
        let content = format!("{}{LINE_BREAK}{ifname}", id.trim());
        if let Err(e) = write_new(&temp, content.as_bytes()) {
            // The create may have succeeded before the write failed (a full disk).
            if let Err(cleanup) = remove_if_present(&temp) {
                log::warn!("{cleanup}");
            }
            return Err(e);
        }
        let linked = fs::hard_link(&temp, &target);
        let removed = fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                // The reservation is made: a temporary that stays only costs a file, which
                // the next operation removes once we are gone.
                if let Err(e) = removed {
                    log::warn!("{}", io_err("remove", &temp)(e));
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err("reserve", &target)(e)),
        }
    }

    /// Removes one reservation; a missing file is fine.
    pub fn release(&self, ip: IpAddr) -> Result<()> {
        remove_if_present(&self.dir.join(ip.to_string()))
    }

    /// Every reservation in the network directory. Files that are not addresses (`lock`,
    /// `last_reserved_ip.*`, temporaries) are not reservations.
    pub fn reservations(&self) -> Result<Vec<Reservation>> {
        let mut out = Vec::new();
        for (name, path) in self.entries()? {
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            // A file that vanished or cannot be read is not ours to judge.
            if let Ok(content) = read_no_follow(&path) {
                out.push(Reservation {
                    ip,
                    owner: Owner::parse(&content),
                });
            }
        }
        out.sort_by_key(|r| r.ip);
        Ok(out)
    }

    /// The addresses held by (id, ifname); if none, those of a legacy file for `id`.
    pub fn held_by(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let all = self.reservations()?;
        Ok(held_by(&all, id, ifname))
    }

    /// Releases everything (id, ifname) holds, legacy files as a fallback, and temporaries
    /// left by a crash in the middle of a reservation for it. Returns what was released.
    pub fn release_owner(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let ips = self.held_by(id, ifname)?;
        for ip in &ips {
            self.release(*ip)?;
        }
        let wanted = Owner::Attachment {
            id: id.trim().to_string(),
            ifname: ifname.to_string(),
        };
        for path in self.temporaries()? {
            if read_no_follow(&path).is_ok_and(|c| Owner::parse(&c) == wanted) {
                remove_if_present(&path)?;
            }
        }
        Ok(ips)
    }

    /// Temporary files: only a killed process leaves one behind, since every reservation
    /// removes its own while holding the lock.
    pub fn temporaries(&self) -> Result<Vec<PathBuf>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|(name, _)| name.starts_with(TEMP_PREFIX))
            .map(|(_, path)| path)
            .collect())
    }

    pub fn last_reserved(&self, range_set: usize) -> Option<IpAddr> {
        read_no_follow(&self.last_reserved_path(range_set))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records the last address handed out by a range set.
    ///
    /// Overwritten in place, then cut to length: replacing the file by rename, or truncating
    /// it to zero first, makes ext4 flush it to disk on the spot (its `auto_da_alloc`
    /// safeguard), which costs a millisecond per range set. A kill between the write and
    /// the cut can leave the new address followed by the tail of a longer old one: that
    /// reads as no address, and the round robin starts over, which is harmless.
    pub fn set_last_reserved(&self, range_set: usize, ip: IpAddr) -> Result<()> {
        let path = self.last_reserved_path(range_set);
        let text = ip.to_string();
        let f = open_no_follow(&path, false).map_err(io_err("open", &path))?;
        f.write_all_at(text.as_bytes(), 0)
            .map_err(io_err("write", &path))?;
        f.set_len(text.len() as u64)
            .map_err(io_err("truncate", &path))
    }

    fn last_reserved_path(&self, range_set: usize) -> PathBuf {
        self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"))
    }

    fn entries(&self) -> Result<Vec<(String, PathBuf)>> {
        let read = fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        Ok(read
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect())
    }
}

/// The pid in a temporary's name, `.reserving.<ip>.<pid>`. Never 0 or above `i32::MAX`:
/// `kill` would read those as process groups.
fn temporary_pid(name: &str) -> Option<u32> {
    let (_, pid) = name.strip_prefix(TEMP_PREFIX)?.rsplit_once('.')?;
    pid.parse::<u32>()
        .ok()
        .filter(|&p| p > 0 && i32::try_from(p).is_ok())
}

/// Whether `pid` names a process: signal 0 checks without sending anything. Only "no such
/// process" counts as dead (a process of another user answers EPERM).
fn process_is_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The addresses of (id, ifname) among `all`; legacy id-only files when there are none.
pub fn held_by(all: &[Reservation], id: &str, ifname: &str) -> Vec<IpAddr> {
    let id = id.trim();
    let exact: Vec<IpAddr> = all
        .iter()
        .filter(|r| matches!(&r.owner, Owner::Attachment { id: i, ifname: f } if i == id && f == ifname))
        .map(|r| r.ip)
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    all.iter()
        .filter(|r| matches!(&r.owner, Owner::Legacy { id: i } if i == id))
        .map(|r| r.ip)
        .collect()
}

/// Creates `path` (replacing a stale one) and writes `bytes` to it.
///
/// No fsync: a killed process loses nothing that was written, and a power loss ends every
/// pod of the node anyway; an empty or torn file it might leave is no one's reservation,
/// which GC removes (and an unreadable `last_reserved_ip` only restarts the round robin).
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = open_no_follow(path, true).map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))
}

/// Directories of the store: the reference's 0755.
const DIR_MODE: u32 = 0o755;

/// Never through a link, and never blocking: a FIFO planted as a state file would otherwise
/// block the open (and the whole node's host-local) until someone wrote to it.
fn libc_nofollow() -> i32 {
    (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits()
}

/// The largest state file read: an owner is a container id and an interface name.
const MAX_STATE_FILE: u64 = 64 << 10;

/// Opens a state file of ours (mode 0600); see [`shared::file::open_own`] for what it
/// refuses to open through.
fn open_no_follow(path: &Path, truncate: bool) -> io::Result<File> {
    shared::file::open_own(path, 0o600, truncate)
}

/// A state file's content; a symbolic link in its place reads as an error.
fn read_no_follow(path: &Path) -> io::Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc_nofollow())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_STATE_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a state file of ours (not a regular file, or too large)",
        ));
    }
    let mut text = String::new();
    file.take(MAX_STATE_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// Takes group and other write permission away from a directory of the store that has it
/// (made under a permissive umask by an earlier version, or by the reference); refuses one
/// that belongs to another user. A sticky directory (`/tmp`) is left as it is: others
/// cannot remove or rename what is ours in it.
fn narrow(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).map_err(io_err("inspect", dir))?;
    if meta.mode() & 0o022 == 0 || meta.mode() & 0o1000 != 0 {
        return Ok(());
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(io_err("use", dir)(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "other users can write to it and it is not ours to fix: make it 0755",
        )));
    }
    let mode = meta.mode() & 0o7777 & !0o022;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", dir))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn reservation_files_match_the_reference_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path(), "net").expect("open");
        assert!(store
            .reserve(ip("10.1.2.2"), "  ctr1\n ", "eth0")
            .expect("reserve"));
        assert!(store
            .reserve(ip("2001:db8:1::2"), "ctr1", "eth0")
            .expect("reserve"));
        assert!(!store
            .reserve(ip("10.1.2.2"), "ctr2", "eth0")
            .expect("taken"));
        store.set_last_reserved(0, ip("10.1.2.2")).expect("last");
        let dir = tmp.path().join("net");
        assert_eq!(
            fs::read(dir.join("10.1.2.2")).expect("file"),
            b"ctr1\r\neth0"
        );
        assert_eq!(
            fs::read(dir.join("2001:db8:1::2")).expect("file"),
            b"ctr1\r\neth0"
        );
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.0")).expect("file"),
            b"10.1.2.2"
        );
        let mut names: Vec<String> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["10.1.2.2", "2001:db8:1::2", "last_reserved_ip.0", "lock"]
        );
    }

    #[test]
    fn release_by_owner_falls_back_to_legacy_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path(), "net").expect("open");
        let dir = tmp.path().join("net");
        fs::write(dir.join("10.0.0.5"), "legacy-id").expect("seed");
        store
            .reserve(ip("10.0.0.6"), "other", "eth0")
            .expect("reserve");
        assert_eq!(
            store.held_by("legacy-id", "eth0").expect("held"),
            [ip("10.0.0.5")]
        );
        assert_eq!(
            store.release_owner("legacy-id", "eth0").expect("release"),
            [ip("10.0.0.5")]
        );
        assert!(!dir.join("10.0.0.5").exists());
        assert!(dir.join("10.0.0.6").exists());
        assert!(store
            .release_owner("nobody", "eth0")
            .expect("release")
            .is_empty());
    }

    #[test]
    fn a_temporary_left_by_a_crash_is_released_with_its_owner() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path(), "net").expect("open");
        let stale = store.dir().join(format!("{TEMP_PREFIX}10.0.0.7.4242"));
        fs::write(&stale, "ctr\r\neth0").expect("seed");
        assert!(store.reservations().expect("list").is_empty());
        store.release_owner("ctr", "eth0").expect("release");
        assert!(!stale.exists());
    }

    #[test]
    fn temporaries_of_dead_processes_go_at_the_next_open_and_live_ones_stay() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Store::open(tmp.path(), "net")
            .expect("open")
            .dir()
            .to_path_buf();
        // A pid above pid_max is never a live process.
        let dead = dir.join(format!("{TEMP_PREFIX}10.0.0.7.{}", i32::MAX));
        let live = dir.join(format!("{TEMP_PREFIX}2001:db8::7.1"));
        let odd = dir.join(format!("{TEMP_PREFIX}10.0.0.8.x"));
        for p in [&dead, &live, &odd] {
            fs::write(p, "ctr\r\neth0").expect("seed");
        }
        let store = Store::open(tmp.path(), "net").expect("open");
        assert!(!dead.exists());
        assert!(live.exists(), "pid 1 is alive");
        assert!(odd.exists(), "not a name of ours to judge");
        assert_eq!(store.temporaries().expect("list").len(), 2);
        assert_eq!(temporary_pid(".reserving.10.0.0.7.0"), None);
        assert_eq!(temporary_pid(".reserving.::1.42"), Some(42));
    }

    #[test]
    fn last_reserved_is_rewritten_to_the_new_length() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path(), "net").expect("open");
        store
            .set_last_reserved(1, ip("2001:db8:1::ffff"))
            .expect("long");
        store
            .set_last_reserved(1, ip("2001:db8::2"))
            .expect("short");
        assert_eq!(store.last_reserved(1), Some(ip("2001:db8::2")));
        assert_eq!(
            fs::read(store.dir().join("last_reserved_ip.1")).expect("file"),
            b"2001:db8::2"
        );
    }

    #[test]
    fn unreadable_last_reserved_means_none() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path(), "net").expect("open");
        assert_eq!(store.last_reserved(0), None);
        fs::write(store.dir().join("last_reserved_ip.0"), "garbage").expect("seed");
        assert_eq!(store.last_reserved(0), None);
    }
}
