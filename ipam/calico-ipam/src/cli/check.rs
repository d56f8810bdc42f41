//! `calico-ipam check`: addresses of this node whose container the runtime no longer
//! knows, and blocks close to full.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::netconf::IpamNetConf;
use crate::store::Store;

use super::show::utilisation;

/// Container ids the runtime still has attachments for on this node, from libcni's result
/// cache (`results/<network>-<containerID>-<ifname>`).
fn cached_containers(cache_dir: &Path, network: &str) -> HashSet<String> {
    let prefix = format!("{network}-");
    std::fs::read_dir(cache_dir.join("results"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let rest = name.strip_prefix(&prefix)?.to_string();
                    // The interface name is the last dash-separated part.
                    rest.rsplit_once('-').map(|(id, _)| id.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check(
    store: &dyn Store,
    conf: &IpamNetConf,
    node: &str,
    cache_dir: &Path,
    threshold: u8,
) -> Result<i32, crate::store::StoreError> {
    let live = cached_containers(cache_dir, &conf.name);
    let prefix = format!("{}.", conf.name);
    let mut leaks: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let mut full = Vec::new();
    for v4 in [true, false] {
        for block in store.list_blocks(v4)? {
            let b = block.value;
            for (ordinal, attr) in b.allocations.iter().enumerate() {
                let Some(a) = attr.and_then(|i| b.attributes.get(i)) else {
                    continue;
                };
                if a.secondary.get("node").map(String::as_str) != Some(node) {
                    continue;
                }
                let Some(handle) = a.handle_id.as_deref() else {
                    continue;
                };
                if let Some(container) = handle.strip_prefix(&prefix) {
                    if !live.contains(container) {
                        leaks
                            .entry(handle.to_string())
                            .or_default()
                            .push(b.ip_at(ordinal));
                    }
                }
            }
            let (used, total) = utilisation(&b);
            if b.affinity.as_deref() == Some(&format!("host:{node}"))
                && used * 100 >= usize::from(threshold) * total.max(1)
            {
                full.push((b.cidr, used, total));
            }
        }
    }
    for (handle, ips) in &leaks {
        let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        println!(
            "leak? {handle} holds {} but no container {} is known to the runtime on {node}; \
             release with `calico-ipam release --ip <address>`",
            list.join(", "),
            handle.trim_start_matches(&prefix)
        );
    }
    for (cidr, used, total) in &full {
        println!(
            "block {cidr} of {node} is {used}/{total} used: when the node's blocks are full, \
             pods borrow from other nodes' blocks and depend on their blackhole routes"
        );
    }
    if leaks.is_empty() && full.is_empty() {
        println!("no leaked address and no block above {threshold}% on {node}");
        Ok(0)
    } else {
        Ok(1)
    }
}

/// What `check` was asked for.
pub struct Options {
    pub show_all_ips: bool,
    pub show_problem_ips: bool,
    pub output: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub threshold: u8,
}

pub fn run(
    store: &dyn Store,
    conf: &IpamNetConf,
    node: &str,
    options: &Options,
) -> Result<i32, String> {
    if options.show_all_ips || options.show_problem_ips || options.output.is_some() {
        return Err("--show-all-ips, --show-problem-ips and -o are not supported yet".into());
    }
    check(store, conf, node, &options.cache_dir, options.threshold).map_err(|e| e.to_string())
}
