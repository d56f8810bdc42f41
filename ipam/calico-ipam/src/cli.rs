//! `calico-ipam` run by an operator, with arguments instead of CNI variables: look at the
//! node's IPAM state, find leaks, release an address by hand, keep the CNI kubeconfig's
//! token fresh.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::datastore;
use crate::engine::Ipam;
use crate::model::IpamBlock;
use crate::netconf::IpamNetConf;
use crate::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "calico-ipam",
    about = "Calico IPAM: the CNI plugin (when run by a runtime) and its operator commands",
    version
)]
pub struct Cli {
    /// The network configuration (a conflist or a single config) whose calico-ipam
    /// datastore to use.
    #[arg(long, default_value = "/etc/cni/net.d/10-calico.conflist")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Action,
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Pools and blocks with their owner and use; with --ip, who holds an address.
    Show {
        #[arg(long)]
        ip: Option<IpAddr>,
    },
    /// Give an address back, whoever holds it.
    Release {
        #[arg(long)]
        ip: IpAddr,
    },
    /// Find addresses of this node whose container the runtime no longer knows, and blocks
    /// close to full.
    Check {
        /// The runtime's CNI result cache (libcni keeps one entry per live attachment).
        #[arg(long, default_value = "/var/lib/cni")]
        cache_dir: PathBuf,
        /// Warn about blocks used at or above this percentage.
        #[arg(long, default_value_t = 90)]
        threshold: u8,
    },
    /// The CNI kubeconfig.
    Kubeconfig {
        #[command(subcommand)]
        command: KubeconfigAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum KubeconfigAction {
    /// Keep the kubeconfig's token valid: ask the TokenRequest API for a token of the
    /// service account and rewrite the kubeconfig (atomically, 0600) once less than a third
    /// of the token's lifetime is left; runs until stopped (or once, with --once). Exits 1
    /// when the API server refuses.
    Refresh {
        /// The kubeconfig to keep fresh (its server and CA are kept).
        #[arg(long, default_value = "/etc/cni/net.d/calico-kubeconfig")]
        kubeconfig: PathBuf,
        /// Whose tokens to ask for, as <namespace>/<name> (Calico's manifests:
        /// kube-system/calico-cni-plugin; the operator's: calico-system/calico-cni-plugin).
        #[arg(long, value_parser = parse_account)]
        service_account: (String, String),
        /// The lifetime to ask for, in seconds (the API server may cut it).
        #[arg(long, default_value_t = crate::refresh::DEFAULT_LIFETIME.as_secs(),
              value_parser = clap::value_parser!(u64).range(600..=4_294_967_296))]
        expiration_seconds: u64,
        /// An audience of the token (repeatable; none: the API server's own).
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// A pod's service-account files: its token, when there, authenticates the
        /// request; its ca.crt and $KUBERNETES_SERVICE_HOST make the first kubeconfig.
        #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount")]
        service_account_dir: PathBuf,
        /// Refresh if due, then exit.
        #[arg(long)]
        once: bool,
    },
}

/// `<namespace>/<name>`, both DNS labels or subdomains as Kubernetes names them.
fn parse_account(text: &str) -> Result<(String, String), String> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    match text.split_once('/') {
        Some((ns, name)) if valid(ns) && valid(name) => Ok((ns.to_string(), name.to_string())),
        _ => Err(format!(
            "{text:?} is not <namespace>/<name> (lower-case letters, digits, '-' and '.')"
        )),
    }
}

/// Runs a command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("calico-ipam: {e}");
            1
        }
    }
}

fn execute(cli: Cli) -> Result<i32, String> {
    // It has no network configuration to read: it is what makes one usable.
    if let Action::Kubeconfig {
        command:
            KubeconfigAction::Refresh {
                kubeconfig,
                service_account: (namespace, name),
                expiration_seconds,
                audiences,
                service_account_dir,
                once,
            },
    } = cli.command
    {
        return Ok(crate::refresh::run(&crate::refresh::Options {
            kubeconfig,
            namespace,
            name,
            lifetime: std::time::Duration::from_secs(expiration_seconds),
            audiences,
            service_account_dir,
            once,
        }));
    }
    let conf = load_config(&cli.config)?;
    // An operator may run this on a node where calico/node has not written the file.
    let mut node_conf = conf.node.clone();
    node_conf.nodename_file_optional = true;
    let node = node_conf.resolve().map_err(|e| e.to_string())?;
    let store = datastore::open(&conf).map_err(|e| e.to_string())?;
    let ipam = Ipam::new(store.as_ref(), &node);
    match cli.command {
        Action::Show { ip: Some(ip) } => {
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
        Action::Show { ip: None } => {
            show(store.as_ref()).map_err(|e| e.to_string())?;
            Ok(0)
        }
        Action::Release { ip } => {
            let unallocated = ipam.release_ips(&[ip]).map_err(|e| e.to_string())?;
            if unallocated.contains(&ip) {
                println!("{ip} was not allocated");
                Ok(1)
            } else {
                println!("released {ip}");
                Ok(0)
            }
        }
        Action::Check {
            cache_dir,
            threshold,
        } => check(store.as_ref(), &conf, &node, &cache_dir, threshold).map_err(|e| e.to_string()),
        // Run above, before any network configuration is read.
        Action::Kubeconfig { .. } => Ok(0),
    }
}

/// Reads the calico-ipam part of a conflist (the plugin whose ipam type is calico-ipam, with
/// the list's name) or of a single network configuration.
pub fn load_config(path: &Path) -> Result<IpamNetConf, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut plugin = match value.get("plugins").and_then(Value::as_array) {
        Some(plugins) => plugins
            .iter()
            .find(|p| p["ipam"]["type"] == "calico-ipam")
            .cloned()
            .ok_or_else(|| format!("{}: no plugin uses calico-ipam", path.display()))?,
        None => value.clone(),
    };
    if let (Some(obj), Some(name)) = (plugin.as_object_mut(), value.get("name")) {
        obj.insert("name".into(), name.clone());
    }
    let doc = shared::gojson::Document::from_value(shared::gojson::Value::from_json(&plugin));
    doc.decode().map_err(|e| format!("{}: {e}", path.display()))
}

fn utilisation(block: &IpamBlock) -> (usize, usize) {
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

fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map(Vec::len).unwrap_or(0))
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

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
