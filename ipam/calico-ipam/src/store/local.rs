//! The `local` datastore: Calico's etcd keys and JSON values as one file per key under a data
//! directory, for a single node with no service to run.
//!
//! `/calico/ipam/v2/handle/k8s-pod-network.abc` lives at
//! `<dir>/calico/ipam/v2/handle/k8s-pod-network.abc`, so an operator can read the store with
//! `cat`, and the same codec serves etcd and this backend.
//!
//! Safety across the plugin processes of a node:
//! - every operation holds an exclusive `flock` on `<dir>/.lock` for its whole duration, so a
//!   compare-and-swap (read, compare, write) is atomic with respect to every other operation;
//! - a write goes to `.tmp` in the target's directory, is fsynced, swapped with the target
//!   (or renamed to it when the key is new), and the directory is fsynced: a kill -9 or a
//!   power loss leaves the old object or the new one, never a torn one. `.tmp` is invisible
//!   (names starting with `.` are never keys), and writers are serialised by the lock, so one
//!   fixed temporary name per directory is enough.
//!
//! Why swap rather than rename over: replacing or unlinking a file frees its data block, and
//! on a file system mounted with `discard` (common on cloud VMs) the kernel trims the block
//! before the call returns, ~0.9 ms on this project's machines, paid by every ADD and twice
//! by every DEL. So no write frees a block: the swap leaves the old content in `.tmp`, the
//! next write in that directory overwrites it in place, and a delete renames the key's file
//! to `.tmp` (freeing only a spare that was already there).
//!
//! The revision of an object is the SHA-256 of its content. A compare-and-swap therefore
//! succeeds exactly when the object still holds the bytes the writer read, which is what a
//! read-modify-write needs (a value that went A → B → A is A again, and an update computed
//! from A is still right). It survives restarts and copies of the directory.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use sha2::{Digest, Sha256};

use super::kv::{Kv, KvStore};
use super::{Result, Revision, StoreError};

/// The lock every operation holds; dot-prefixed so it is never a key.
const LOCK_FILE: &str = ".lock";
/// The one temporary file name per directory (see the module comment for why one is enough).
const TEMP_FILE: &str = ".tmp";

/// A [`Kv`] over files under one data directory.
#[derive(Debug, Clone)]
pub struct LocalKv {
    dir: PathBuf,
}

/// A full [`super::Store`] over the data directory `dir`, created if missing.
pub fn local_store(dir: &Path) -> Result<KvStore<LocalKv>> {
    Ok(KvStore::new(LocalKv::open(dir)?))
}

impl LocalKv {
    /// Opens (creating it with mode 0700 if needed) the data directory, and checks that the
    /// lock file can be created in it, so a read-only or unusable directory is reported here
    /// rather than halfway through an allocation.
    pub fn open(dir: &Path) -> Result<LocalKv> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| dir_error(dir, "cannot be created", &e))?;
        let kv = LocalKv {
            dir: dir.to_path_buf(),
        };
        drop(kv.lock()?);
        Ok(kv)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store-wide exclusive lock; released when the guard drops. A fresh open file
    /// description per call, because flock on a shared one would not exclude this process's
    /// other threads.
    fn lock(&self) -> Result<Flock<File>> {
        let path = self.dir.join(LOCK_FILE);
        // A link, a FIFO or someone else's file in the lock's place is no lock of ours.
        let opened = shared::file::open_own(&path, 0o600, false);
        let mut file = opened.map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                dir_error(&self.dir, "is missing", &e)
            } else {
                dir_error(&self.dir, "cannot hold its lock file", &e)
            }
        })?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(guard) => return Ok(guard),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(dir_error(
                        &self.dir,
                        "cannot be locked",
                        &io::Error::from(errno),
                    ))
                }
            }
        }
    }

    /// The file of `key`, after checking that the key cannot leave the data directory or
    /// alias another key.
    fn path_of(&self, op: &'static str, key: &str) -> Result<PathBuf> {
        let relative = key
            .strip_prefix('/')
            .ok_or_else(|| refused(op, key, "a key starts with '/'"))?;
        if relative.is_empty() {
            return Err(refused(op, key, "a key names an object, not the root"));
        }
        check_segments(op, key, relative)?;
        Ok(self.dir.join(relative))
    }

    /// Creates the directories between the data directory and `path`, fsyncing the parent of
    /// each new one so the new entry survives a power loss.
    fn make_parents(&self, op: &'static str, key: &str, path: &Path) -> Result<()> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let Ok(relative) = parent.strip_prefix(&self.dir) else {
            return Ok(());
        };
        let mut current = self.dir.clone();
        for component in relative.components() {
            let above = current.clone();
            current.push(component);
            match DirBuilder::new().mode(0o700).create(&current) {
                Ok(()) => sync_dir(&above).map_err(|e| io_refused(op, key, &above, &e))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_refused(op, key, &current, &e)),
            }
        }
        Ok(())
    }

    /// Replaces (`replace`: the caller found it is a file, under the lock) or creates the
    /// file of `key` atomically and durably.
    fn write(
        &self,
        op: &'static str,
        key: &str,
        path: &Path,
        value: &[u8],
        replace: bool,
    ) -> Result<Revision> {
        self.make_parents(op, key, path)?;
        let parent = parent_of(path);
        let temp = parent.join(TEMP_FILE);
        let written = write_temp(&temp, value).and_then(|()| {
            if replace {
                swap_in(&temp, path)
            } else {
                // A plain rename: it fails on a directory in the way, where an exchange would
                // move the directory aside.
                fs::rename(&temp, path)
            }
        });
        if let Err(e) = written {
            return Err(io_refused(op, key, path, &e));
        }
        sync_dir(parent).map_err(|e| io_refused(op, key, parent, &e))?;
        Ok(revision_of(value))
    }

    /// Reads `key` for a compare-and-swap: NotFound when it is missing, Conflict when its
    /// revision is not `revision`.
    fn check(&self, op: &'static str, key: &str, path: &Path, revision: &Revision) -> Result<()> {
        match read(op, key, path)? {
            None => Err(StoreError::NotFound(key.to_string())),
            Some(bytes) if revision_of(&bytes) != *revision => {
                Err(StoreError::Conflict(key.to_string()))
            }
            Some(_) => Ok(()),
        }
    }
}

impl Kv for LocalKv {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Revision)>> {
        let path = self.path_of("get", key)?;
        let _lock = self.lock()?;
        let found = read("get", key, &path)?;
        super::meter("local", "get", key, 0, found.as_ref().map_or(0, Vec::len));
        Ok(found.map(|bytes| {
            let revision = revision_of(&bytes);
            (bytes, revision)
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>, Revision)>> {
        // Every key starts with '/'; "" lists everything, anything else matches nothing.
        let prefix = if prefix.is_empty() { "/" } else { prefix };
        if !prefix.starts_with('/') {
            return Ok(Vec::new());
        }
        // The prefix may end inside a name (`/calico/ipam/v2/handle/k8s`): walk from the last
        // complete directory and filter on the full key.
        let cut = prefix.rfind('/').map_or(0, |i| i + 1);
        let base = &prefix[..cut];
        // `base` is '/'-delimited at both ends (just "/" for the root).
        let relative = &base[1..];
        check_segments(
            "list",
            prefix,
            relative.strip_suffix('/').unwrap_or(relative),
        )?;
        let start = self.dir.join(relative);
        let _lock = self.lock()?;
        let mut found = Vec::new();
        walk(&start, base, prefix, &mut found)?;
        let read: usize = found.iter().map(|(k, v, _)| k.len() + v.len()).sum();
        super::meter("local", "list", prefix, 0, read);
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Revision> {
        let path = self.path_of("create", key)?;
        super::meter("local", "create", key, value.len(), 0);
        let _lock = self.lock()?;
        if read("create", key, &path)?.is_some() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        self.write("create", key, &path, value, false)
    }

    fn update(&self, key: &str, value: &[u8], revision: &Revision) -> Result<Revision> {
        let path = self.path_of("update", key)?;
        super::meter("local", "update", key, value.len(), 0);
        let _lock = self.lock()?;
        self.check("update", key, &path, revision)?;
        self.write("update", key, &path, value, true)
    }

    fn delete(&self, key: &str, revision: &Revision) -> Result<()> {
        let path = self.path_of("delete", key)?;
        super::meter("local", "delete", key, 0, 0);
        let _lock = self.lock()?;
        self.check("delete", key, &path, revision)?;
        let parent = parent_of(&path);
        // The key's file becomes the directory's spare: the key is gone as atomically as by
        // an unlink, and its block is reused by the next write here instead of freed.
        // Should the spare's name be taken by something else, an unlink does the same.
        fs::rename(&path, parent.join(TEMP_FILE))
            .or_else(|_| fs::remove_file(&path))
            .map_err(|e| io_refused("delete", key, &path, &e))?;
        sync_dir(parent).map_err(|e| io_refused("delete", key, parent, &e))
    }

    /// No calico/node runs with the single-node store: nothing registers Nodes.
    fn has_calico_node(&self) -> bool {
        false
    }

    fn ping(&self) -> Result<()> {
        let _lock = self.lock()?;
        fs::read_dir(&self.dir)
            .and_then(|mut entries| entries.next().transpose())
            .map(|_| ())
            .map_err(|e| dir_error(&self.dir, "cannot be read", &e))
    }
}

/// Each `/`-separated segment of a key must be a plain name: no empty, `.` or `..` segment
/// (which would leave the directory or make two keys one file), nothing starting with `.`
/// (reserved for the lock and temporary files, which must never be listed), no NUL.
fn check_segments(op: &'static str, key: &str, relative: &str) -> Result<()> {
    if key.contains('\0') {
        return Err(refused(op, key, "a key cannot contain NUL"));
    }
    if relative.is_empty() {
        return Ok(());
    }
    for segment in relative.split('/') {
        if segment.is_empty() {
            return Err(refused(op, key, "empty path segment in key"));
        }
        if segment.starts_with('.') {
            return Err(refused(
                op,
                key,
                "a key segment cannot start with '.' (no '..', no hidden files)",
            ));
        }
    }
    Ok(())
}

/// The largest object file read.
const MAX_OBJECT_BYTES: u64 = 16 << 20;

/// The content of a key's file, or None when there is no such file (a missing file, a
/// missing directory on the way, or a directory where the file would be).
/// Anything else in a key's place (a FIFO would block the read for ever, a device would
/// never end) is refused, as is a file larger than any object: the largest, a /122 block's
/// JSON with its attributes, is a few kilobytes.
fn read(op: &'static str, key: &str, path: &Path) -> Result<Option<Vec<u8>>> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io_refused(op, key, path, &e)),
    };
    let meta = file.metadata().map_err(|e| io_refused(op, key, path, &e))?;
    if meta.is_dir() {
        return Ok(None);
    }
    if !meta.is_file() || meta.len() > MAX_OBJECT_BYTES {
        let what = if meta.is_file() {
            format!("is larger than {MAX_OBJECT_BYTES} bytes")
        } else {
            "is not a regular file".to_string()
        };
        return Err(io_refused(op, key, path, &io::Error::other(what)));
    }
    let mut bytes = Vec::new();
    match file.take(MAX_OBJECT_BYTES).read_to_end(&mut bytes) {
        Ok(_) => Ok(Some(bytes)),
        Err(e) if e.raw_os_error() == Some(Errno::EISDIR as i32) => Ok(None),
        Err(e) => Err(io_refused(op, key, path, &e)),
    }
}

/// Collects the files under `dir` (whose key prefix is `base`, ending in '/') whose key
/// starts with `prefix`. Dot-prefixed names (the lock, temporary files) and names that are
/// not UTF-8 are never keys.
fn walk(
    dir: &Path,
    base: &str,
    prefix: &str,
    found: &mut Vec<(String, Vec<u8>, Revision)>,
) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(io_refused("list", prefix, dir, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_refused("list", prefix, dir, &e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| io_refused("list", prefix, &path, &e))?;
        let key = format!("{base}{name}");
        if file_type.is_dir() {
            let sub = format!("{key}/");
            // Only descend where keys can still match: the prefix goes deeper, or the
            // whole subtree is under it.
            if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                walk(&path, &sub, prefix, found)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) {
            if let Some(bytes) = read("list", &key, &path)? {
                let revision = revision_of(&bytes);
                found.push((key, bytes, revision));
            }
        }
    }
    Ok(())
}

/// Puts `value` into the directory's spare file, overwriting it in place and cutting it to
/// length (not truncating it first, which would free its block).
fn write_temp(temp: &Path, value: &[u8]) -> io::Result<()> {
    // Never through a link: one in the spare's place is removed and the spare made anew.
    let mut file = shared::file::open_own(temp, 0o600, false)?;
    file.write_all(value)?;
    file.set_len(value.len() as u64)?;
    // The data must be on disk before the swap makes it the object.
    file.sync_all()
}

/// Makes `temp` the file of `target`, a file the caller found under the lock, atomically:
/// exchanged with it (the old content stays behind as `temp`), or renamed over it when the
/// file system cannot exchange.
fn swap_in(temp: &Path, target: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(
            AT_FDCWD,
            temp,
            AT_FDCWD,
            target,
            RenameFlags::RENAME_EXCHANGE,
        ) {
            Ok(()) => return Ok(()),
            // A file system without RENAME_EXCHANGE: a plain rename.
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
            Err(errno) => return Err(io::Error::from(errno)),
        }
    }
    fs::rename(temp, target)
}

/// Makes renames, creations and removals in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

/// SHA-256 of the content, as hex: changes with every change of the object, stable otherwise.
fn revision_of(bytes: &[u8]) -> Revision {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(Errno::ENOTDIR as i32)
}

fn refused(op: &'static str, key: &str, reason: &str) -> StoreError {
    StoreError::Refused {
        op,
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn io_refused(op: &'static str, key: &str, path: &Path, e: &io::Error) -> StoreError {
    StoreError::Refused {
        op,
        key: key.to_string(),
        reason: format!("{}: {e}", path.display()),
    }
}

fn dir_error(dir: &Path, what: &str, e: &io::Error) -> StoreError {
    StoreError::Unavailable(format!(
        "local datastore directory {} {what}: {e}",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn open() -> (tempfile::TempDir, LocalKv) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let kv = LocalKv::open(&tmp.path().join("data")).expect("open");
        (tmp, kv)
    }

    fn keys(kv: &LocalKv, prefix: &str) -> Vec<String> {
        kv.list(prefix)
            .expect("list")
            .into_iter()
            .map(|(k, _, _)| k)
            .collect()
    }

    #[test]
    fn compare_and_swap_semantics() {
        let (_tmp, kv) = open();
        let r1 = kv.create("/a", b"1").expect("create");
        assert!(matches!(
            kv.create("/a", b"2"),
            Err(StoreError::AlreadyExists(_))
        ));
        let r2 = kv.update("/a", b"2", &r1).expect("update");
        assert_ne!(r1, r2);
        assert!(matches!(
            kv.update("/a", b"3", &r1),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(kv.delete("/a", &r1), Err(StoreError::Conflict(_))));
        assert_eq!(
            kv.get("/a").expect("get"),
            Some((b"2".to_vec(), r2.clone()))
        );
        let r3 = kv.update("/a", b"3", &r2).expect("update");
        assert!(matches!(kv.delete("/b", &r2), Err(StoreError::NotFound(_))));
        assert!(matches!(
            kv.update("/b", b"x", &r2),
            Err(StoreError::NotFound(_))
        ));
        kv.create("/ab", b"x").expect("create");
        kv.create("/b", b"y").expect("create");
        assert_eq!(keys(&kv, "/a"), ["/a", "/ab"]);
        kv.delete("/a", &r3).expect("delete");
        assert_eq!(kv.get("/a").expect("get"), None);
        assert!(matches!(kv.delete("/a", &r3), Err(StoreError::NotFound(_))));
        // Gone means gone: it can be created again.
        kv.create("/a", b"again").expect("re-create");
    }

    #[test]
    fn revisions_are_stable_until_a_write_and_survive_reopening() {
        let (tmp, kv) = open();
        let r1 = kv.create("/k", b"v1").expect("create");
        assert_eq!(kv.get("/k").expect("get").map(|(_, r)| r), Some(r1.clone()));
        let reopened = LocalKv::open(&tmp.path().join("data")).expect("reopen");
        assert_eq!(
            reopened.get("/k").expect("get").map(|(_, r)| r),
            Some(r1.clone())
        );
        let r2 = reopened.update("/k", b"v2", &r1).expect("update");
        assert!(matches!(
            kv.update("/k", b"v3", &r1),
            Err(StoreError::Conflict(_))
        ));
        kv.update("/k", b"v3", &r2)
            .expect("update with the fresh revision");
    }

    #[test]
    fn one_file_per_key_with_the_value_as_content() {
        let (_tmp, kv) = open();
        let key = "/calico/ipam/v2/assignment/ipv6/block/fd00:10:244::-122";
        kv.create(key, b"{\"cidr\":\"fd00:10:244::/122\"}")
            .expect("create");
        let path = kv.dir().join(key.trim_start_matches('/'));
        assert_eq!(
            fs::read(&path).expect("read the file"),
            b"{\"cidr\":\"fd00:10:244::/122\"}"
        );
        let mode = fs::metadata(kv.dir()).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn list_by_prefix_in_key_order() {
        let (_tmp, kv) = open();
        let all = [
            "/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26",
            "/calico/ipam/v2/assignment/ipv4/block/10.244.0.64-26",
            "/calico/ipam/v2/assignment/ipv6/block/fd00:10:244::-122",
            "/calico/ipam/v2/assignment/ipv6/block/fd00:10:244::40-122",
            "/calico/ipam/v2/handle/k8s-pod-network.aaa",
            "/calico/ipam/v2/handle/k8s-pod-network.bbb",
            "/calico/ipam/v2/handle/other.ccc",
            "/calico/ipam/v2/host/node-1/ipv4/block/10.244.0.0-26",
            "/calico/ipam/v2/host/node-10/ipv4/block/10.244.0.64-26",
            "/calico/ipam/v2/config",
        ];
        // Created out of order: the result is sorted whatever the directory order.
        for key in all.iter().rev() {
            kv.create(key, key.as_bytes()).expect("create");
        }
        let mut sorted = all.to_vec();
        sorted.sort();
        assert_eq!(keys(&kv, "/calico/"), sorted);
        assert_eq!(keys(&kv, ""), sorted);
        assert_eq!(keys(&kv, "/"), sorted);
        assert_eq!(
            keys(&kv, "/calico/ipam/v2/assignment/ipv4/block/"),
            &all[..2]
        );
        assert_eq!(
            keys(&kv, "/calico/ipam/v2/assignment/ipv6/block/"),
            &all[2..4]
        );
        assert_eq!(
            keys(&kv, "/calico/ipam/v2/assignment/ipv6/block/fd00:10:244::4"),
            &all[3..4]
        );
        assert_eq!(keys(&kv, "/calico/ipam/v2/assignment/"), &all[..4]);
        assert_eq!(keys(&kv, "/calico/ipam/v2/handle/"), &all[4..7]);
        assert_eq!(
            keys(&kv, "/calico/ipam/v2/handle/k8s-pod-network."),
            &all[4..6]
        );
        // A prefix ending inside a directory name descends into the matching directories.
        assert_eq!(keys(&kv, "/calico/ipam/v2/host/node-1"), &all[7..9]);
        assert_eq!(keys(&kv, "/calico/ipam/v2/host/node-1/"), &all[7..8]);
        assert_eq!(keys(&kv, "/calico/ipam/v2/conf"), &all[9..]);
        assert!(keys(&kv, "/calico/ipam/v2/nothing/").is_empty());
        assert!(keys(&kv, "/calico/ipam/v2/config/").is_empty());
        assert!(keys(&kv, "calico").is_empty());
        let listed = kv.list("/calico/ipam/v2/config").expect("list");
        assert_eq!(
            listed[0],
            (
                all[9].to_string(),
                all[9].as_bytes().to_vec(),
                revision_of(all[9].as_bytes())
            )
        );
    }

    #[test]
    fn a_leftover_temporary_file_is_invisible_and_reused() {
        let (_tmp, kv) = open();
        kv.create("/calico/ipam/v2/handle/a", b"a").expect("create");
        let dir = kv.dir().join("calico/ipam/v2/handle");
        // What a kill in the middle of a write leaves behind.
        fs::write(dir.join(TEMP_FILE), b"{\"torn and longer").expect("leftover");
        assert_eq!(
            keys(&kv, "/calico/ipam/v2/handle/"),
            ["/calico/ipam/v2/handle/a"]
        );
        assert_eq!(keys(&kv, ""), ["/calico/ipam/v2/handle/a"]);
        assert!(matches!(
            kv.get("/calico/ipam/v2/handle/.tmp"),
            Err(StoreError::Refused { .. })
        ));
        // A new key takes the spare, cut to its own length.
        kv.create("/calico/ipam/v2/handle/b", b"b").expect("create");
        assert_eq!(fs::read(dir.join("b")).expect("b"), b"b");
        assert!(!dir.join(TEMP_FILE).exists());

        fs::write(dir.join(TEMP_FILE), b"{\"torn and longer").expect("leftover");
        let (_, rev) = kv.get("/calico/ipam/v2/handle/a").expect("get").expect("a");
        kv.delete("/calico/ipam/v2/handle/a", &rev).expect("delete");
        assert_eq!(keys(&kv, ""), ["/calico/ipam/v2/handle/b"]);
        assert_eq!(kv.get("/calico/ipam/v2/handle/a").expect("get"), None);
    }

    #[test]
    fn a_link_planted_as_the_spare_or_the_lock_is_never_written_through() {
        let (tmp, kv) = open();
        kv.create("/calico/ipam/v2/handle/a", b"a").expect("create");
        let dir = kv.dir().join("calico/ipam/v2/handle");
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"precious").expect("victim");
        let _ = fs::remove_file(dir.join(TEMP_FILE));
        std::os::unix::fs::symlink(&victim, dir.join(TEMP_FILE)).expect("plant");
        let _ = fs::remove_file(kv.dir().join(LOCK_FILE));
        std::os::unix::fs::symlink(&victim, kv.dir().join(LOCK_FILE)).expect("plant");
        kv.create("/calico/ipam/v2/handle/b", b"b").expect("create");
        let (_, rev) = kv.get("/calico/ipam/v2/handle/a").expect("get").expect("a");
        kv.update("/calico/ipam/v2/handle/a", b"a2", &rev)
            .expect("update");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(fs::read(dir.join("b")).expect("b"), b"b");
        assert_eq!(fs::read(dir.join("a")).expect("a"), b"a2");
        // A key whose file is a link reads as an error, not as the link's target.
        std::os::unix::fs::symlink(&victim, dir.join("c")).expect("plant");
        assert!(kv.get("/calico/ipam/v2/handle/c").is_err());
    }

    #[test]
    fn updates_and_deletes_reuse_files_instead_of_freeing_them() {
        use std::os::unix::fs::MetadataExt;
        let (_tmp, kv) = open();
        let dir = kv.dir().join("calico/ipam/v2/handle");
        let inode = |name: &str| fs::metadata(dir.join(name)).expect("stat").ino();
        let r1 = kv
            .create("/calico/ipam/v2/handle/a", b"first")
            .expect("create");
        let first = inode("a");
        // The first update needs a new file; the old one stays as the spare.
        let r2 = kv
            .update("/calico/ipam/v2/handle/a", b"second, longer", &r1)
            .expect("update");
        let second = inode("a");
        assert_ne!(second, first);
        assert_eq!(inode(TEMP_FILE), first);
        // From then on the two files take turns: no file is created or freed.
        let r3 = kv
            .update("/calico/ipam/v2/handle/a", b"3rd", &r2)
            .expect("update");
        assert_eq!(inode("a"), first);
        assert_eq!(inode(TEMP_FILE), second);
        assert_eq!(
            kv.get("/calico/ipam/v2/handle/a").expect("get"),
            Some((b"3rd".to_vec(), r3.clone()))
        );
        // A delete turns the key's file into the spare; the next key created reuses it.
        kv.delete("/calico/ipam/v2/handle/a", &r3).expect("delete");
        assert_eq!(inode(TEMP_FILE), first);
        kv.create("/calico/ipam/v2/handle/b", b"b").expect("create");
        assert_eq!(inode("b"), first);
        assert_eq!(fs::read(dir.join("b")).expect("b"), b"b");
        assert_eq!(keys(&kv, ""), ["/calico/ipam/v2/handle/b"]);
    }

    #[test]
    fn keys_that_would_leave_the_directory_or_alias_are_refused() {
        let (tmp, kv) = open();
        for key in [
            "/../escaped",
            "/calico/../../escaped",
            "/calico/..",
            "/calico/./x",
            "/calico//x",
            "/calico/x/",
            "/",
            "",
            "relative",
            "/.lock",
            "/calico/.hidden",
            "/nul\0byte",
        ] {
            assert!(
                matches!(kv.get(key), Err(StoreError::Refused { op: "get", .. })),
                "get {key:?}"
            );
            assert!(
                matches!(kv.create(key, b"x"), Err(StoreError::Refused { .. })),
                "create {key:?}"
            );
            assert!(
                matches!(
                    kv.update(key, b"x", &"r".to_string()),
                    Err(StoreError::Refused { .. })
                ),
                "update {key:?}"
            );
            assert!(
                matches!(
                    kv.delete(key, &"r".to_string()),
                    Err(StoreError::Refused { .. })
                ),
                "delete {key:?}"
            );
        }
        for prefix in ["/../", "/calico/../../", "/a//", "/nul\0"] {
            assert!(
                matches!(kv.list(prefix), Err(StoreError::Refused { op: "list", .. })),
                "list {prefix:?}"
            );
        }
        assert!(!tmp.path().join("escaped").exists());
        assert!(keys(&kv, "").is_empty());
    }

    #[test]
    fn a_directory_where_a_key_would_be_is_no_object() {
        let (_tmp, kv) = open();
        kv.create("/a/b", b"x").expect("create");
        assert_eq!(kv.get("/a").expect("get"), None);
        assert!(matches!(
            kv.update("/a", b"y", &"r".to_string()),
            Err(StoreError::NotFound(_))
        ));
        // Files cannot be directories too: refused, naming the path, and nothing changes.
        let err = kv
            .create("/a", b"y")
            .expect_err("a directory is in the way");
        assert!(matches!(err, StoreError::Refused { op: "create", .. }));
        assert!(err.to_string().contains(&kv.dir().display().to_string()));
        let err = kv.create("/a/b/c", b"y").expect_err("a file is in the way");
        assert!(matches!(err, StoreError::Refused { op: "create", .. }));
        assert_eq!(keys(&kv, ""), ["/a/b"]);
    }

    #[test]
    fn a_missing_or_unusable_directory_is_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("a-file");
        fs::write(&file, b"").expect("write");
        let err = LocalKv::open(&file.join("data")).expect_err("not a directory");
        assert!(matches!(err, StoreError::Unavailable(_)));
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );

        let dir = tmp.path().join("data");
        let kv = LocalKv::open(&dir).expect("open");
        kv.ping().expect("ping");
        fs::remove_dir_all(&dir).expect("remove");
        for err in [
            kv.ping().expect_err("ping"),
            kv.get("/a").expect_err("get"),
            kv.create("/a", b"x").expect_err("create"),
        ] {
            assert!(matches!(err, StoreError::Unavailable(_)));
            assert!(
                err.to_string().contains(&dir.display().to_string()),
                "{err}"
            );
        }
    }
}
