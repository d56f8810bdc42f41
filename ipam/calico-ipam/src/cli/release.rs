//! `calico-ipam release`: give addresses back by hand.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::engine::Ipam;
use crate::store::Store;

pub fn run(
    ipam: &Ipam,
    _store: &dyn Store,
    ip: Option<IpAddr>,
    reports: &[PathBuf],
    _force: bool,
) -> Result<i32, String> {
    if !reports.is_empty() {
        return Err("--from-report is not supported yet".into());
    }
    let Some(ip) = ip else {
        return Err("give --ip or --from-report".into());
    };
    let unallocated = ipam.release_ips(&[ip]).map_err(|e| e.to_string())?;
    if unallocated.contains(&ip) {
        println!("{ip} was not allocated");
        Ok(1)
    } else {
        println!("released {ip}");
        Ok(0)
    }
}
