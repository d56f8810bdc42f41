//! Network namespaces: open one by path, and run code inside it.
//!
//! A namespace switch belongs to one OS thread (see containernetworking/plugins
//! `pkg/ns/README.md`): `setns` changes only the calling thread, and a thread that other code
//! shares (a runtime's worker, the main thread that logs and writes files) must never be moved.
//! So [`NetNs::run`] enters the namespace on a fresh, short-lived thread and lets that thread
//! die with it. Sockets opened there (netlink, see `crate::netlink::Handle::in_netns`) stay
//! bound to the namespace afterwards, so most work happens from the calling thread anyway.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::thread;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::fstat;
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use crate::error::{Error, Result};

/// The calling thread's own network namespace. `/proc/self` would name the main thread's,
/// which differs from ours inside [`NetNs::run`].
const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";

/// An open network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`, ...).
///
/// Holding the file keeps the namespace alive, even after its last process exits or its bind
/// mount is removed.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace file at `path`.
    ///
    /// A missing file is [`Error::NetnsNotFound`]; a file outside nsfs (a leftover regular file
    /// where a bind mount used to be, a typo'd directory) is [`Error::NotANetns`]. A file of
    /// another namespace type (`/proc/PID/ns/mnt`) passes here and is reported as
    /// [`Error::NotANetns`] by [`NetNs::run`].
    pub fn open(path: &Path) -> Result<NetNs> {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking, so that a FIFO in the namespace's place is refused (it is not on nsfs)
        // instead of blocking the open until someone writes to it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => Error::NetnsNotFound {
                    path: path.to_path_buf(),
                },
                _ => Error::Netns {
                    path: path.to_path_buf(),
                    op: "open",
                    source,
                },
            })?;
        let fs = fstatfs(&file).map_err(|errno| Error::Netns {
            path: path.to_path_buf(),
            op: "fstatfs",
            source: errno.into(),
        })?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(Error::NotANetns {
                path: path.to_path_buf(),
            });
        }
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// For DEL: the container's namespace if it still exists. `None` for no path (the
    /// runtime sends none once the sandbox is gone) or a path that no longer exists: what
    /// was in the namespace went with it.
    pub fn open_if_exists(path: Option<&Path>) -> Result<Option<NetNs>> {
        match path.map(NetNs::open) {
            None | Some(Err(Error::NetnsNotFound { .. })) => Ok(None),
            Some(Ok(ns)) => Ok(Some(ns)),
            Some(Err(e)) => Err(e),
        }
    }

    /// The calling thread's network namespace.
    pub fn current() -> Result<NetNs> {
        NetNs::open(Path::new(THREAD_SELF_NETNS))
    }

    /// Creates a new, empty network namespace (only a `lo` that is down) without naming it
    /// anywhere: it lives as long as this handle, a process inside it, or a mount of it.
    ///
    /// The `unshare` happens on a throwaway thread, so the caller stays where it is. The
    /// returned [`NetNs::path`] is `/proc/PID/fd/FD` of this handle's own descriptor: it names
    /// the namespace for as long as the handle lives, also to child processes (`CNI_NETNS`).
    pub fn create() -> Result<NetNs> {
        let path = PathBuf::from(THREAD_SELF_NETNS);
        let spawned = thread::Builder::new()
            .name("netns-create".into())
            .spawn(|| -> Result<NetNs> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Netns {
                    path: PathBuf::from(THREAD_SELF_NETNS),
                    op: "unshare",
                    source: errno.into(),
                })?;
                NetNs::current()
            })
            .map_err(|source| Error::Netns {
                path: path.clone(),
                op: "spawn thread",
                source,
            })?;
        let mut ns = match spawned.join() {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        ns.path = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), ns.raw_fd()));
        Ok(ns)
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw descriptor, for netlink attributes such as `IFLA_NET_NS_FD`. Valid as long as
    /// `self` lives.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Whether both handles refer to the same namespace (same nsfs inode).
    pub fn is_same(&self, other: &NetNs) -> Result<bool> {
        Ok(self.identity()? == other.identity()?)
    }

    fn identity(&self) -> Result<(libc::dev_t, libc::ino_t)> {
        let st = fstat(&self.file).map_err(|errno| Error::Netns {
            path: self.path.clone(),
            op: "fstat",
            source: errno.into(),
        })?;
        Ok((st.st_dev, st.st_ino))
    }

    /// Runs `f` inside this namespace, on a fresh thread that enters the namespace first and
    /// ends when `f` returns. `f` may borrow from the caller (the thread is scoped).
    ///
    /// Only the network namespace changes: the thread keeps the caller's mount namespace, so
    /// `/proc/sys/net` and new sockets see this namespace, while `/sys/class/net` still shows
    /// whatever namespace mounted `/sys`.
    ///
    /// A panic in `f` is resumed on the calling thread, as if `f` had run there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        thread::scope(|scope| {
            let spawned = thread::Builder::new()
                .name("netns-run".into())
                .spawn_scoped(scope, || -> Result<T> {
                    setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|errno| match errno {
                        // nsfs also holds mount, pid, user... namespaces; only here do we
                        // learn that this one is not a network namespace.
                        nix::errno::Errno::EINVAL => Error::NotANetns {
                            path: self.path.clone(),
                        },
                        _ => Error::Netns {
                            path: self.path.clone(),
                            op: "setns",
                            source: errno.into(),
                        },
                    })?;
                    Ok(f())
                })
                .map_err(|source| Error::Netns {
                    path: self.path.clone(),
                    op: "spawn thread",
                    source,
                })?;
            match spawned.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn missing_path_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = NetNs::open(&dir.path().join("gone")).unwrap_err();
        assert!(matches!(err, Error::NetnsNotFound { .. }), "{err:?}");
    }

    #[test]
    fn open_if_exists_tolerates_only_absence() {
        let dir = tempfile::tempdir().unwrap();
        assert!(NetNs::open_if_exists(None).unwrap().is_none());
        assert!(NetNs::open_if_exists(Some(&dir.path().join("gone")))
            .unwrap()
            .is_none());
        assert!(NetNs::open_if_exists(Some(Path::new("/proc/self/ns/net")))
            .unwrap()
            .is_some());
        assert!(matches!(
            NetNs::open_if_exists(Some(dir.path())),
            Err(Error::NotANetns { .. })
        ));
    }

    #[test]
    fn regular_file_is_not_a_netns() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"not a namespace").unwrap();
        let err = NetNs::open(file.path()).unwrap_err();
        assert!(matches!(err, Error::NotANetns { .. }), "{err:?}");
    }

    #[test]
    fn directory_is_not_a_netns() {
        let dir = tempfile::tempdir().unwrap();
        let err = NetNs::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::NotANetns { .. }), "{err:?}");
    }

    #[test]
    fn current_is_the_process_namespace() {
        let current = NetNs::current().unwrap();
        let process = NetNs::open(Path::new("/proc/self/ns/net")).unwrap();
        assert!(current.is_same(&process).unwrap());
        assert_eq!(current.path(), Path::new(THREAD_SELF_NETNS));
    }

    #[test]
    fn run_returns_value_and_borrows() {
        let ns = NetNs::current().unwrap();
        let words = String::from("ab");
        let n = ns.run(|| words.len()).unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn run_resumes_a_panic() {
        let ns = NetNs::current().unwrap();
        let caught = std::panic::catch_unwind(|| ns.run(|| panic!("inside")));
        assert!(caught.is_err());
    }

    /// Root: needs CAP_SYS_ADMIN for unshare and setns.
    #[test]
    fn create_gives_a_distinct_namespace_that_run_enters() {
        let host = NetNs::current().unwrap();
        let ns = NetNs::create().unwrap();
        assert!(!ns.is_same(&host).unwrap());
        let inside = ns.run(NetNs::current).unwrap().unwrap();
        assert!(inside.is_same(&ns).unwrap());
        // The caller never moved.
        assert!(NetNs::current().unwrap().is_same(&host).unwrap());
        // The advertised path names the namespace for as long as the handle lives.
        let again = NetNs::open(ns.path()).unwrap();
        assert!(again.is_same(&ns).unwrap());
    }

    #[test]
    fn run_in_a_foreign_namespace_type_fails_at_setns() {
        let mnt = NetNs::open(Path::new("/proc/self/ns/mnt")).unwrap();
        let err = mnt.run(|| ()).unwrap_err();
        assert!(matches!(err, Error::NotANetns { .. }), "{err:?}");
    }
}
