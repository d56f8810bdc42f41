//! `calico-ipam -upgrade`: a node whose pods got their addresses from host-local has them
//! recorded in calico-ipam's blocks, so it can switch IPAM without draining (Calico's
//! `upgrade-ipam` init container runs exactly this command).
//!
//! host-local keeps one file per address in `/var/lib/cni/networks/<network>/`, named by
//! the address and holding the container id (newer host-local adds `\r\n<ifname>`), plus
//! `last_reserved_ip.<range>` and `lock`. For each address that a workload on the datastore
//! still uses, the address is assigned in calico-ipam under the handle the pod's DEL will
//! release (`<network>.<containerID>`) with the `node`, `pod` and `namespace` attributes,
//! and the file is removed; a file whose address no workload uses is a leak and is removed
//! too. Once every file is done the directory goes, so running it again changes nothing.
//!
//! Where this differs from Calico, on purpose:
//! - Calico flips ClusterInformation `datastoreReady` to false for the whole cluster while
//!   one node migrates, and deletes the `calico` and `host-local` binaries; here only
//!   host-local's lock (no host-local ADD can run meanwhile) and calico-ipam's host lock are
//!   held, so other nodes keep wiring pods.
//! - Calico reads the whole file as the container id (so a newer host-local's
//!   `\r\neth0` ends up in the handle) and parses IPv4 names only; here the id is the first
//!   line, and IPv6 addresses migrate too.
//! - An address calico-ipam already gives to another handle is reported (exit 1, the
//!   address, both handles) and its file kept, where Calico stops at the first error; the
//!   other addresses still migrate, each on its own.
//! - The network name (and so the directory and the handles) comes from the configuration
//!   instead of being fixed to `k8s-pod-network`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::engine::{Ipam, IpamError};
use crate::names::handle_id;
use crate::store::Store;

/// host-local's default data directory, whose `<network>` subdirectory is migrated.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// Overrides [`DEFAULT_DATA_DIR`] (a node that mounted it elsewhere; tests).
pub const DATA_DIR_ENV: &str = "CALICO_IPAM_UPGRADE_DATA_DIR";

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Address → handle, newly assigned or found already assigned to that handle.
    pub migrated: BTreeMap<IpAddr, String>,
    /// Addresses no workload uses: their files removed, nothing assigned.
    pub stale: Vec<IpAddr>,
    /// Files that could not be migrated, with the reason; they stay.
    pub failed: Vec<String>,
}

/// One host-local record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    path: PathBuf,
    ip: IpAddr,
    container_id: String,
}

/// The records of `dir`; bookkeeping files are left out, names that are not addresses
/// reported.
fn records(dir: &Path, failed: &mut Vec<String>) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lock" || name.starts_with("last_reserved_ip") {
            continue;
        }
        let path = entry.path();
        let Ok(ip) = name.parse::<IpAddr>() else {
            failed.push(format!("{}: not a host-local address file", path.display()));
            continue;
        };
        let text = fs::read_to_string(&path)?;
        let container_id = text.lines().next().unwrap_or_default().trim().to_string();
        if container_id.is_empty() {
            failed.push(format!("{}: holds no container id", path.display()));
            continue;
        }
        out.push(Record {
            path,
            ip,
            container_id,
        });
    }
    out.sort_by_key(|r| r.ip);
    Ok(out)
}

fn remove(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(format!("{}: {e}", path.display())),
        _ => Ok(()),
    }
}

/// Migrates `<data_dir>/<network>` into calico-ipam on `store` for `node`.
pub fn migrate(
    store: &dyn Store,
    node: &str,
    network: &str,
    data_dir: &Path,
) -> Result<Outcome, String> {
    let dir = data_dir.join(network);
    if !dir.is_dir() {
        log::info!("{} does not exist: nothing to migrate", dir.display());
        return Ok(Outcome::default());
    }
    // host-local takes this lock for every ADD and DEL: none runs while it is held.
    let lock_path = dir.join("lock");
    let lock_file: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))?;

    let mut outcome = Outcome::default();
    let found =
        records(&dir, &mut outcome.failed).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Which workload uses each address: the pod the attributes name (a plain container's
    // endpoint has none: its name stands in).
    let users: HashMap<IpAddr, (String, String)> = store
        .list_workload_addresses()
        .map_err(|e| format!("listing the workloads: {e}"))?
        .into_iter()
        .flat_map(|w| {
            w.ips.into_iter().map(move |ip| {
                let pod = if w.pod.is_empty() { &w.name } else { &w.pod };
                (ip, (w.namespace.clone(), pod.clone()))
            })
        })
        .collect();
    let ipam = Ipam::new(store, node);
    for record in found {
        let Some((namespace, pod)) = users.get(&record.ip) else {
            log::info!(
                "{}: no workload uses {}: removed",
                record.path.display(),
                record.ip
            );
            remove(&record.path)?;
            outcome.stale.push(record.ip);
            continue;
        };
        let handle = handle_id(network, &record.container_id);
        let attrs = BTreeMap::from([
            ("node".to_string(), node.to_string()),
            ("pod".to_string(), pod.clone()),
            ("namespace".to_string(), namespace.clone()),
        ]);
        match ipam.assign_ip(record.ip, &handle, &attrs) {
            Ok(_) => {}
            Err(IpamError::AlreadyAssigned(_)) => {
                let holder = ipam
                    .attributes_of(record.ip)
                    .map_err(|e| e.to_string())?
                    .and_then(|(h, _)| h)
                    .unwrap_or_default();
                if holder != handle {
                    outcome.failed.push(format!(
                        "{} is already assigned in calico-ipam to handle {holder:?}, not to \
                         {handle:?} as {} says: find which pod really has it (`calico-ipam \
                         show --ip {}`), release the wrong one, and run -upgrade again",
                        record.ip,
                        record.path.display(),
                        record.ip
                    ));
                    continue;
                }
                log::info!("{} was already migrated to {handle}", record.ip);
            }
            Err(e) => {
                outcome
                    .failed
                    .push(format!("{}: {}: {e}", record.path.display(), record.ip));
                continue;
            }
        }
        remove(&record.path)?;
        outcome.migrated.insert(record.ip, handle);
    }
    if outcome.failed.is_empty() {
        // Bookkeeping files go with the directory; a new host-local would start afresh.
        if let Err(e) = fs::remove_dir_all(&dir) {
            log::warn!("cannot remove {}: {e}", dir.display());
        }
    }
    Ok(outcome)
}
