//! `calico-ipam show`: pools and blocks with their use; with `--ip`, who holds an address.

use std::net::IpAddr;

use crate::engine::Ipam;
use crate::model::IpamBlock;
use crate::store::Store;

use super::table::print_table;

pub fn utilisation(block: &IpamBlock) -> (usize, usize) {
    let used = block.allocations.iter().filter(|a| a.is_some()).count();
    (used, block.allocations.len())
}

fn show(store: &dyn Store) -> Result<(), crate::store::StoreError> {
    let pools = store.list_pools()?;
    let mut blocks: Vec<IpamBlock> = Vec::new();
    for v4 in [true, false] {
        blocks.extend(store.list_blocks(v4)?.into_iter().map(|b| b.value));
    }
    let mut rows = vec![vec![
        "POOL".to_string(),
        "CIDR".into(),
        "BLOCK SIZE".into(),
        "IN USE".into(),
        "STATE".into(),
    ]];
    for p in &pools {
        let used: usize = blocks
            .iter()
            .filter(|b| p.cidr.contains(b.cidr.network()))
            .map(|b| utilisation(b).0)
            .sum();
        let size = pool_size(&p.cidr);
        rows.push(vec![
            p.name.clone(),
            p.cidr.to_string(),
            format!("/{}", p.block_size),
            format!("{used} of {size}"),
            if p.disabled { "disabled" } else { "enabled" }.into(),
        ]);
    }
    print_table(&rows);
    println!();
    let mut rows = vec![vec![
        "BLOCK".to_string(),
        "AFFINITY".into(),
        "IN USE".into(),
        "FREE".into(),
    ]];
    for b in &blocks {
        let (used, total) = utilisation(b);
        rows.push(vec![
            b.cidr.to_string(),
            b.affinity.clone().unwrap_or_else(|| "(none)".into()),
            format!("{used}/{total} ({}%)", used * 100 / total.max(1)),
            b.unallocated.len().to_string(),
        ]);
    }
    print_table(&rows);
    Ok(())
}

fn pool_size(cidr: &ipnetwork::IpNetwork) -> String {
    let bits = if cidr.is_ipv4() { 32 } else { 128 } - u32::from(cidr.prefix());
    if bits >= 64 {
        format!("2^{bits}")
    } else {
        (1u64 << bits).to_string()
    }
}

/// What `show` was asked for.
pub struct Options {
    pub ip: Option<IpAddr>,
    pub show_blocks: bool,
    pub show_borrowed: bool,
    pub show_configuration: bool,
}

pub fn run(ipam: &Ipam, store: &dyn Store, options: &Options) -> Result<i32, String> {
    if options.show_blocks || options.show_borrowed || options.show_configuration {
        return Err(
            "--show-blocks, --show-borrowed and --show-configuration are not supported yet".into(),
        );
    }
    let Some(ip) = options.ip else {
        show(store).map_err(|e| e.to_string())?;
        return Ok(0);
    };
    match ipam.attributes_of(ip).map_err(|e| e.to_string())? {
        None => {
            println!("{ip} is not allocated");
            Ok(1)
        }
        Some((handle, attrs)) => {
            println!("{ip} is held by handle {}", handle.unwrap_or_default());
            for (k, v) in attrs {
                println!("  {k}: {v}");
            }
            Ok(0)
        }
    }
}
