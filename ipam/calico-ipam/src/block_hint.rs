//! The blocks this node's last ADD assigned from, kept beside the IPAM lock, so the next
//! ADD tries them first.
//!
//! Why: an ADD takes the first of the node's blocks, in list order, that has a free
//! address, and must read each block to know. A node whose first 15 blocks are full reads
//! 15 blocks before the one with room, a few kilobytes each, on every ADD: the cost grows
//! with the node's addresses. The block that served the last ADD almost always has room
//! for the next, so it is read first, and the list order is only walked when it is full.
//!
//! The hint only orders blocks the node already owns (as listed from the datastore this
//! very ADD), so a stale, foreign or garbled hint costs a read at most, never an address:
//! which of its own blocks a node assigns from is the node's choice. It is read and written
//! under the host lock and replaced by a rename, so a crash leaves the old one or the new.

use std::io::Write;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

/// The hint's mode: root's alone, as the lock's.
const HINT_MODE: u32 = 0o600;
/// More than any hint: the node's name and a CIDR per family.
const HINT_MAX: u64 = 4096;

/// Where the hint of the lock at `lock` is kept: beside it, in the lock's own directory.
pub fn path_for(lock: &Path) -> PathBuf {
    let mut name = lock.as_os_str().to_owned();
    name.push(".blocks");
    PathBuf::from(name)
}

/// The blocks `node` last assigned from; none when there is no hint, it is another node's,
/// or it cannot be read.
pub fn read(path: &Path, node: &str) -> Vec<IpNetwork> {
    let Ok(text) = shared::file::read_regular_text(path, HINT_MAX) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(node) {
        return Vec::new();
    }
    lines.filter_map(|l| l.parse().ok()).collect()
}

/// Records `blocks` as the ones `node` last assigned from. Best effort: without a hint the
/// next ADD only reads more.
pub fn write(path: &Path, node: &str, blocks: &[IpNetwork]) {
    let mut text = format!("{node}\n");
    for block in blocks {
        text.push_str(&format!("{block}\n"));
    }
    let staged = {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{}", std::process::id()));
        PathBuf::from(name)
    };
    let written = shared::file::open_own(&staged, HINT_MODE, true)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&staged, path));
    if let Err(e) = written {
        log::debug!("cannot keep the block hint {}: {e}", path.display());
        let _ = std::fs::remove_file(&staged);
    }
}

/// The blocks of `assigned` (each an address with its block's prefix length).
pub fn blocks_of(assigned: &[IpNetwork]) -> Vec<IpNetwork> {
    let mut blocks: Vec<IpNetwork> = assigned
        .iter()
        .filter_map(|a| IpNetwork::new(a.network(), a.prefix()).ok())
        .collect();
    blocks.dedup();
    blocks
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_for_its_node_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("ipam.lock"));
        assert!(read(&path, "n1").is_empty(), "no hint yet");
        let blocks = blocks_of(&[
            "10.0.1.5/26".parse().unwrap(),
            "fd00::7/122".parse().unwrap(),
        ]);
        assert_eq!(
            blocks,
            vec![
                "10.0.1.0/26".parse::<IpNetwork>().unwrap(),
                "fd00::/122".parse().unwrap()
            ]
        );
        write(&path, "n1", &blocks);
        assert_eq!(read(&path, "n1"), blocks);
        assert!(read(&path, "n2").is_empty(), "another node's hint");
        std::fs::write(&path, "n1\nnot a cidr\n10.0.2.0/26\n").unwrap();
        assert_eq!(read(&path, "n1"), vec!["10.0.2.0/26".parse().unwrap()]);
    }
}
