//! Kernel parameters under `/proc/sys`, read-compare-write.
//!
//! Keys are path components, so interface names with dots work:
//! `set(&["net", "ipv4", "conf", "eth0.100", "forwarding"], "1")`. The dotted
//! [`get_dotted`]/[`set_dotted`] forms are for fixed keys such as `net.ipv4.ip_forward`.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the file, not of the
//! process that mounted `/proc`. To read or change a container's settings, call these inside
//! [`NetNs::run`](crate::netns::NetNs::run).
//!
//! [`set`] writes only when the value differs, so a set that changes nothing never needs write
//! access (a read-only `/proc/sys` must not fail it) and never triggers the side effects some
//! handlers run on every write.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const ROOT: &str = "/proc/sys";

/// The current value, without the trailing newline.
pub fn get(key: &[&str]) -> Result<String> {
    let path = path_of(key)?;
    read(&path).map_err(|source| error(key, source))
}

/// Sets `key` to `value` unless it already holds it; returns whether it wrote.
pub fn set(key: &[&str], value: &str) -> Result<bool> {
    let path = path_of(key)?;
    let current = read(&path).map_err(|source| error(key, source))?;
    if current == value.trim() {
        return Ok(false);
    }
    // No O_CREAT or O_TRUNC: sysctl files exist or the key is wrong, and procfs takes each
    // write whole.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|source| error(key, source))?;
    Ok(true)
}

/// [`get`] with a dotted key such as `net.ipv4.ip_forward`.
pub fn get_dotted(key: &str) -> Result<String> {
    get(&key.split('.').collect::<Vec<_>>())
}

/// [`set`] with a dotted key such as `net.ipv4.ip_forward`.
pub fn set_dotted(key: &str, value: &str) -> Result<bool> {
    set(&key.split('.').collect::<Vec<_>>(), value)
}

fn read(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path)?;
    Ok(text.trim_end_matches('\n').to_string())
}

/// `/proc/sys/<key...>`, refusing components that would leave `/proc/sys` or change depth.
fn path_of(key: &[&str]) -> Result<PathBuf> {
    if key.is_empty() {
        return Err(error(key, invalid("empty key")));
    }
    let mut path = PathBuf::from(ROOT);
    for component in key {
        if component.is_empty() || *component == "." || *component == ".." {
            return Err(error(key, invalid("empty, \".\" or \"..\" component")));
        }
        if component.contains('/') || component.contains('\0') {
            return Err(error(key, invalid("component contains '/' or NUL")));
        }
        path.push(component);
    }
    Ok(path)
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, reason.to_string())
}

/// Errors name the key the way `sysctl` would, with `/` separators so that dotted interface
/// names stay readable.
fn error(key: &[&str], source: io::Error) -> Error {
    Error::Sysctl {
        key: key.join("/"),
        source,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;
    use crate::netns::NetNs;

    #[test]
    fn keys_become_paths_under_proc_sys() {
        let path = path_of(&["net", "ipv4", "conf", "eth0.100", "forwarding"]).unwrap();
        assert_eq!(
            path,
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
    }

    #[test]
    fn escaping_components_are_refused() {
        for key in [&[][..], &["net", ".."], &["net", ""], &["net/ipv4"], &["."]] {
            let err = path_of(key).unwrap_err();
            match err {
                Error::Sysctl { source, .. } => {
                    assert_eq!(source.kind(), io::ErrorKind::InvalidInput)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn missing_key_is_reported_with_its_name() {
        let err = get(&["net", "ipv4", "conf", "no-such-if", "forwarding"]).unwrap_err();
        match err {
            Error::Sysctl { key, source } => {
                assert_eq!(key, "net/ipv4/conf/no-such-if/forwarding");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dotted_get_reads_a_value() {
        let value = get_dotted("net.ipv4.ip_forward").unwrap();
        assert!(value == "0" || value == "1", "{value:?}");
    }

    /// Root: changes sysctls, but only inside a namespace of its own.
    #[test]
    fn set_inside_a_namespace_changes_only_that_namespace() {
        let host_before = get(&["net", "ipv4", "ip_forward"]).unwrap();
        let ns = NetNs::create().unwrap();
        let (first, second, value) = ns
            .run(|| -> Result<_> {
                let key = ["net", "ipv4", "ip_forward"];
                let target = if get(&key)? == "1" { "0" } else { "1" };
                let first = set(&key, target)?;
                let second = set(&key, target)?;
                Ok((first, second, get(&key)?))
            })
            .unwrap()
            .unwrap();
        assert!(first, "the first set writes");
        assert!(!second, "an equal value is not written again");
        assert_ne!(value, host_before);
        assert_eq!(get(&["net", "ipv4", "ip_forward"]).unwrap(), host_before);

        // Per-interface keys: `lo` exists in every new namespace.
        let changed = ns
            .run(|| set(&["net", "ipv4", "conf", "lo", "proxy_arp"], "1"))
            .unwrap()
            .unwrap();
        assert!(changed);
        let inside = ns
            .run(|| get(&["net", "ipv4", "conf", "lo", "proxy_arp"]))
            .unwrap()
            .unwrap();
        assert_eq!(inside, "1");
    }
}
