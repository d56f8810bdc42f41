//! The host-wide IPAM lock: one assign or release at a time on a node. It serialises the
//! node's compare-and-swap traffic, so concurrent pod starts do not fight over the same
//! block. Best effort, as in Calico: if the lock cannot be taken, work proceeds unlocked.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Held until dropped.
pub struct HostLock {
    _lock: Option<Flock<File>>,
}

impl HostLock {
    pub fn acquire(path: &Path) -> HostLock {
        match try_acquire(path) {
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

fn try_acquire(path: &Path) -> std::io::Result<Flock<File>> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o777)
            .create(dir)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| errno.into())
}
