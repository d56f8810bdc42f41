//! The host-wide IPAM lock: one assign or release at a time on a node. It serialises the
//! node's compare-and-swap traffic, so concurrent pod starts do not fight over the same
//! block. Best effort, as in Calico: the datastore's compare-and-swap keeps allocations
//! correct without it, so when the lock cannot be had the work proceeds unlocked.
//!
//! Why bounded: the lock is held across datastore round trips, so a holder stalled on a
//! dead etcd or API server would otherwise stall every pod start on the node behind it.
//! The wait takes at most half of what is left of the invocation's deadline; the other half
//! is for the work itself.
//!
//! Why 0600 and a root-only directory: anyone who can open the file can `flock` it and hold
//! every ADD of the node hostage, and anyone who can write the directory can replace it.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's mode: root's alone.
const LOCK_MODE: u32 = 0o600;
/// The mode of a lock directory this plugin creates.
const DIR_MODE: u32 = 0o700;

/// Held until dropped.
pub struct HostLock {
    _lock: Option<Flock<File>>,
}

impl HostLock {
    pub fn acquire(path: &Path) -> HostLock {
        let budget = shared::deadline::remaining() / 2;
        match try_acquire(path, budget) {
            Ok(lock) => HostLock { _lock: Some(lock) },
            Err(e) => {
                log::warn!(
                    "cannot take the IPAM lock {}: {e}; continuing without it",
                    path.display()
                );
                HostLock { _lock: None }
            }
        }
    }
}

fn try_acquire(path: &Path, budget: Duration) -> std::io::Result<Flock<File>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir)?;
    }
    let file = shared::file::open_own(path, LOCK_MODE, false)?;
    let until = Instant::now() + budget;
    let mut pause = Duration::from_micros(200);
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) => {
                let now = Instant::now();
                if now >= until {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("another process has held it for {} ms", budget.as_millis()),
                    ));
                }
                std::thread::sleep(pause.min(until - now));
                pause = (pause * 2).min(Duration::from_millis(20));
                file = back;
            }
            Err((_, errno)) => return Err(errno.into()),
        }
    }
}

/// Creates the directory root-only; one that exists and that other users may write is
/// narrowed (a sticky one, like /tmp, is shared by design and left alone: the lock file's
/// own checks cover it).
fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)?;
            // The umask may have narrowed it further, never widened it: exact mode anyway.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        }
        Err(e) => Err(e),
        Ok(meta) => {
            let mode = meta.mode();
            let sticky = mode & 0o1000 != 0;
            if meta.is_dir() && mode & 0o022 != 0 && !sticky && meta.uid() == euid() {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o755))?;
            }
            Ok(())
        }
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_waited_for_only_as_long_as_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run").join("ipam.lock");
        let first = try_acquire(&path, Duration::from_millis(10)).expect("first lock");
        let started = Instant::now();
        let second = try_acquire(&path, Duration::from_millis(150));
        assert!(second.is_err(), "a held lock was taken twice");
        assert!(started.elapsed() >= Duration::from_millis(150));
        drop(first);
        try_acquire(&path, Duration::from_millis(10)).expect("taken once released");
    }

    #[test]
    fn the_lock_is_root_only_whatever_was_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        let path = run.join("ipam.lock");
        drop(try_acquire(&path, Duration::ZERO).expect("lock"));
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o7777;
        assert_eq!(mode(&run), DIR_MODE);
        assert_eq!(mode(&path), LOCK_MODE);
        // An earlier, wider lock file and a world-writable directory are narrowed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        drop(try_acquire(&path, Duration::ZERO).expect("lock"));
        assert_eq!(mode(&path), LOCK_MODE);
        assert_eq!(mode(&run), 0o755);
        // A planted link is replaced, never followed.
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").expect("target");
        let target_mode = mode(&target);
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        drop(try_acquire(&path, Duration::ZERO).expect("lock"));
        assert!(std::fs::symlink_metadata(&path).expect("stat").is_file());
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
        assert_eq!(mode(&target), target_mode);
    }
}
