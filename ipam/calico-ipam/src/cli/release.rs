//! `calico-ipam release`, as `calicoctl ipam release`: one address by hand (`--ip`), or the
//! leaks `check -o` reported (`--from-report`, repeatable: only what every report calls
//! leaked, and only while it is still what the report saw).
//!
//! A report is acted on only for the cluster it describes (the ClusterInformation's GUID,
//! never overridable), only if one of the reports is as new as the data (the
//! ClusterInformation's revision), and, unless `--force`, only while the datastore is
//! locked (`datastoreReady: false`, so no pod is being wired meanwhile) and the report was
//! written by this version.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::engine::{Ipam, SeenAllocation};
use crate::store::{Store, StoreError};

use super::report::{self, HandleInfo, Report};

pub fn run(
    ipam: &Ipam,
    store: &dyn Store,
    ip: Option<IpAddr>,
    reports: &[PathBuf],
    force: bool,
) -> Result<i32, String> {
    if !reports.is_empty() {
        from_reports(ipam, store, reports, force)?;
        println!("You may now unlock the data store.");
        return Ok(0);
    }
    let Some(ip) = ip else {
        return Err("give --ip or --from-report".into());
    };
    let unallocated = ipam.release_ips(&[ip]).map_err(|e| format!("error: {e}"))?;
    if unallocated.contains(&ip) {
        return Err(format!("IP address {ip} is not assigned"));
    }
    println!("Successfully released IP address {ip}");
    Ok(0)
}

fn from_reports(
    ipam: &Ipam,
    store: &dyn Store,
    paths: &[PathBuf],
    force: bool,
) -> Result<(), String> {
    let info = report::cluster_information(store)?;
    let mut reports = Vec::new();
    let mut found_current = false;
    for path in paths {
        let r = Report::read(path)?;
        let shown = path.display();
        if r.cluster_guid != info.value.cluster_guid() {
            // Not overridable: the report describes another cluster's addresses.
            return Err(format!(
                "cluster does not match the provided report ({shown}): mismatched cluster \
                 GUID. Refusing to release"
            ));
        }
        if r.version != report::VERSION {
            if !force {
                return Err(format!(
                    "the provided report ({shown}) was produced using a different version \
                     ({}) of calico-ipam. Refusing to release",
                    r.version
                ));
            }
            println!(
                "WARNING: Report was produced using a different version of calico-ipam. \
                 Ignoring due to --force option"
            );
        }
        found_current |= r.cluster_information_revision == info.revision;
        reports.push(r);
    }
    if !found_current {
        return Err(
            "the provided reports are all stale - at least one should be up-to-date. \
                    Please generate a new report while the data store is locked and try again"
                .into(),
        );
    }
    if !info.value.locked() {
        if !force {
            return Err("data store is not locked. Either lock the data store (set \
                        spec.datastoreReady to false in ClusterInformation \"default\"), or \
                        re-run with --force"
                .into());
        }
        println!("WARNING: Data store is not locked. Ignoring due to --force option");
    }
    let (ips, handles) = merge(&reports);
    if ips.is_empty() {
        println!("Report didn't contain any leaked IPs to clean up.");
    } else {
        release_ips(ipam, &ips);
    }
    if handles.is_empty() {
        println!("Report didn't contain any handles to clean up.");
    } else {
        release_handles(store, &handles);
    }
    Ok(())
}

/// What every report calls leaked: addresses not in use in any of them (as the first one
/// saw them), handles leaked in all of them at the same revision.
fn merge(reports: &[Report]) -> (Vec<SeenAllocation>, Vec<HandleInfo>) {
    let mut ips: Option<BTreeMap<String, SeenAllocation>> = None;
    let mut handles: Option<BTreeMap<String, HandleInfo>> = None;
    for r in reports {
        let mut merged = BTreeMap::new();
        for a in r.allocations.values().flatten().filter(|a| !a.in_use) {
            if ips.as_ref().is_some_and(|seen| !seen.contains_key(&a.ip)) {
                continue;
            }
            let Ok(ip) = a.ip.parse() else { continue };
            merged.insert(
                a.ip.clone(),
                SeenAllocation {
                    ip,
                    handle: Some(a.handle.clone()).filter(|h| !h.is_empty()),
                    sequence_number: a.sequence_number,
                },
            );
        }
        ips = Some(merged);
        let mut merged = BTreeMap::new();
        for h in &r.leaked_handles {
            let unchanged = match &handles {
                None => true,
                Some(seen) => seen.get(&h.id).is_some_and(|s| s.revision == h.revision),
            };
            if unchanged {
                merged.insert(h.id.clone(), h.clone());
            }
        }
        handles = Some(merged);
    }
    (
        ips.unwrap_or_default().into_values().collect(),
        handles.unwrap_or_default().into_values().collect(),
    )
}

fn release_ips(ipam: &Ipam, ips: &[SeenAllocation]) {
    println!("Releasing {} old IPs...", ips.len());
    match ipam.release_if_unchanged(ips) {
        Ok(unreleased) => {
            println!("Released {} IPs successfully", ips.len() - unreleased.len());
            if !unreleased.is_empty() {
                println!(
                    "{} addresses marked as leaked in the report had already been cleaned up.",
                    unreleased.len()
                );
            }
        }
        Err(e) => println!(
            "An error occurred while releasing some IPs: {e}.  Problems are often caused by \
             an out-of-date IPAM report.  Try regenerating the IPAM report and retry."
        ),
    }
}

fn release_handles(store: &dyn Store, handles: &[HandleInfo]) {
    println!("Deleting {} handles...", handles.len());
    println!("Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.");
    let (mut released, mut skipped, mut errors) = (0, 0, 0);
    for h in handles {
        match delete_if_unchanged(store, h) {
            Ok(true) => {
                released += 1;
                print!(".");
            }
            Ok(false) => {
                skipped += 1;
                print!("x");
            }
            Err(e) => {
                errors += 1;
                println!("\nDeleting handle {} failed: {e}.", h.id);
            }
        }
    }
    println!();
    println!("Released {released} handles; {skipped} skipped; {errors} errors.");
}

/// Deletes the handle only at the revision the report saw; false when it is gone or
/// changed since.
fn delete_if_unchanged(store: &dyn Store, h: &HandleInfo) -> Result<bool, StoreError> {
    match store.get_handle(&h.id)? {
        Some(current) if current.revision == h.revision => {
            match store.delete_handle(&h.id, &h.revision) {
                Ok(()) => Ok(true),
                Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            }
        }
        _ => Ok(false),
    }
}
