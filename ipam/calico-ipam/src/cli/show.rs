//! `calico-ipam show`, in the shape of `calicoctl ipam show`: use per pool (and, with
//! `--show-blocks`, per block), IPReservations included; with `--ip`, who holds an address; `--show-borrowed`, the
//! addresses nodes took from blocks affine to another node; `--show-configuration`, the
//! IPAM configuration.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::engine::{Ipam, Reservations};
use crate::model::{to_u128, IpamBlock, IpamConfig};
use crate::store::{Store, StoreError};

use super::table::{go_g5, Table};

/// What `show` was asked for.
pub struct Options {
    pub ip: Option<IpAddr>,
    pub show_blocks: bool,
    pub show_borrowed: bool,
    pub show_configuration: bool,
}

/// The views in calicoctl's order of precedence: `--ip`, then `--show-borrowed`, then
/// `--show-configuration`, else the use table.
pub fn run(ipam: &Ipam, store: &dyn Store, options: &Options) -> Result<i32, String> {
    let text = |e: StoreError| e.to_string();
    if let Some(ip) = options.ip {
        return show_ip(ipam, ip);
    }
    if options.show_borrowed {
        borrowed(store).map_err(text)?;
    } else if options.show_configuration {
        configuration(store).map_err(text)?;
    } else {
        usage(store, options.show_blocks).map_err(text)?;
    }
    Ok(0)
}

/// calicoctl exits 0 whether the address is assigned or not; so does this.
fn show_ip(ipam: &Ipam, ip: IpAddr) -> Result<i32, String> {
    match ipam.attributes_of(ip).map_err(|e| e.to_string())? {
        None => println!("{ip} is not assigned"),
        Some((handle, attrs)) => {
            println!("IP {ip} is in use");
            match handle {
                Some(h) => println!("Handle ID: {h}"),
                None => println!("Handle ID: <none>"),
            }
            if attrs.is_empty() {
                println!("No Active Owner attributes defined");
            } else {
                // A BTreeMap: the keys come sorted, as calicoctl sorts them.
                println!("Active Owner Attributes:");
                for (k, v) in attrs {
                    println!("  {k}: {v}");
                }
            }
        }
    }
    Ok(0)
}

fn all_blocks(store: &dyn Store) -> Result<Vec<IpamBlock>, StoreError> {
    let mut blocks: Vec<IpamBlock> = Vec::new();
    for v4 in [true, false] {
        blocks.extend(store.list_blocks(v4)?.into_iter().map(|b| b.value));
    }
    blocks.sort_by_key(|b| (b.cidr.is_ipv6(), to_u128(b.cidr.network()), b.cidr.prefix()));
    Ok(blocks)
}

fn capacity(cidr: &IpNetwork) -> f64 {
    let bits = if cidr.is_ipv4() { 32 } else { 128 } - i32::from(cidr.prefix());
    2f64.powi(bits)
}

/// What one row of the use table counts.
struct Use {
    total: f64,
    in_use: f64,
    /// Addresses a reservation covers, allocated or not (an address allocated before it
    /// was reserved counts here and in use, as calicoctl counts it).
    reserved: f64,
    /// Neither allocated nor reserved: what automatic assignment could still hand out.
    free: f64,
}

impl Use {
    /// `blocks` are those inside `cidr` (all of them for a pool, itself for a block).
    fn of(cidr: &IpNetwork, blocks: &[&IpamBlock], reserved: &Reservations) -> Use {
        let total = capacity(cidr);
        let reserved_here = reserved.count_in(cidr) as f64;
        let (mut in_use, mut unreserved_in_use) = (0usize, 0usize);
        for b in blocks {
            for (ordinal, slot) in b.allocations.iter().enumerate() {
                if slot.is_some() {
                    in_use += 1;
                    if !reserved.contains(b.ip_at(ordinal)) {
                        unreserved_in_use += 1;
                    }
                }
            }
        }
        Use {
            total,
            in_use: in_use as f64,
            reserved: reserved_here,
            free: (total - reserved_here - unreserved_in_use as f64).max(0.0),
        }
    }
}

/// One row of the use table, in calicoctl's columns but for IPS COOLING: this IPAM has no
/// cooling-off of released addresses, and a column of zeros would only look true.
fn usage_row(kind: &str, cidr: &IpNetwork, counts: &Use) -> Vec<String> {
    let share = |n: f64| format!("{} ({:.0}%)", go_g5(n), 100.0 * n / counts.total);
    vec![
        kind.to_string(),
        cidr.to_string(),
        go_g5(counts.total),
        share(counts.in_use),
        share(counts.reserved),
        share(counts.free),
    ]
}

fn usage(store: &dyn Store, show_blocks: bool) -> Result<(), StoreError> {
    let pools = store.list_pools()?;
    let blocks = all_blocks(store)?;
    let reserved = Reservations::new(&store.list_reservations()?);
    let mut table = Table::new(&[
        "GROUPING",
        "CIDR",
        "IPS TOTAL",
        "IPS IN USE",
        "IPS RESERVED",
        "IPS FREE",
    ])
    .align_right(2)
    .align_right(3)
    .align_right(4)
    .align_right(5);
    let pool_of = |b: &IpamBlock| {
        pools
            .iter()
            .position(|p| p.cidr.is_ipv4() == b.cidr.is_ipv4() && p.cidr.contains(b.cidr.network()))
    };
    let block_row = |b: &IpamBlock| usage_row("Block", &b.cidr, &Use::of(&b.cidr, &[b], &reserved));
    for (i, p) in pools.iter().enumerate() {
        let mine: Vec<&IpamBlock> = blocks.iter().filter(|b| pool_of(b) == Some(i)).collect();
        table.push(usage_row(
            "IP Pool",
            &p.cidr,
            &Use::of(&p.cidr, &mine, &reserved),
        ));
        if show_blocks {
            for b in mine {
                table.push(block_row(b));
            }
        }
    }
    // Blocks of a pool that is gone: no pool row, as calicoctl, but their blocks.
    if show_blocks {
        for b in blocks.iter().filter(|b| pool_of(b).is_none()) {
            table.push(block_row(b));
        }
    }
    table.print();
    Ok(())
}

/// The node named by a block's affinity (`host:<node>` → `<node>`), or "" for none.
fn block_owner(block: &IpamBlock) -> String {
    match block.affinity.as_deref() {
        None => String::new(),
        Some(a) => match a.split(':').collect::<Vec<_>>()[..] {
            [_, node] => node.to_string(),
            _ => a.split(':').next().unwrap_or_default().to_string(),
        },
    }
}

fn borrowed(store: &dyn Store) -> Result<(), StoreError> {
    let mut table = Table::new(&[
        "IP",
        "BORROWING-NODE",
        "BLOCK",
        "BLOCK OWNER",
        "TYPE",
        "ALLOCATED-TO",
    ]);
    let mut unclassified = 0;
    for block in all_blocks(store)? {
        let owner = block_owner(&block);
        for (ordinal, slot) in block.allocations.iter().enumerate() {
            let Some(attr) = slot.and_then(|a| block.attributes.get(a)) else {
                continue;
            };
            let attrs = &attr.secondary;
            let Some(node) = attrs.get("node") else {
                unclassified += 1;
                continue;
            };
            if *node == owner {
                continue;
            }
            let ns = attrs.get("namespace").cloned().unwrap_or_default();
            let (kind, to) = if let Some(vmi) = attrs.get("vmi") {
                ("vmi".to_string(), format!("{ns}/{vmi}"))
            } else if let Some(pod) = attrs.get("pod") {
                ("pod".to_string(), format!("{ns}/{pod}"))
            } else {
                (
                    attrs.get("type").cloned().unwrap_or_default(),
                    String::new(),
                )
            };
            table.push(vec![
                block.ip_at(ordinal).to_string(),
                node.clone(),
                block.cidr.to_string(),
                owner.clone(),
                kind,
                to,
            ]);
        }
    }
    table.print();
    if unclassified != 0 {
        println!(
            "\nNote: found {unclassified} IP allocations without an explicit node association. \
             Unable to determine if they are borrowed."
        );
    }
    Ok(())
}

fn configuration(store: &dyn Store) -> Result<(), StoreError> {
    let config = store
        .get_ipam_config()?
        .map(|c| c.value)
        .unwrap_or_else(IpamConfig::default);
    let mut table = Table::new(&["PROPERTY", "VALUE"]);
    // calicoctl prints the fields of libcalico-go's IPAMConfig with Go's %#v.
    for (name, value) in [
        ("StrictAffinity", config.strict_affinity.to_string()),
        (
            "AutoAllocateBlocks",
            config.auto_allocate_blocks.to_string(),
        ),
        ("MaxBlocksPerHost", config.max_blocks_per_host.to_string()),
    ] {
        table.push(vec![name.to_string(), value]);
    }
    table.print();
    Ok(())
}
