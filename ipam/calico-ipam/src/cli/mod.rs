//! `calico-ipam` run by an operator, with arguments instead of CNI variables: look at the
//! node's IPAM state, find leaks, release an address by hand, keep the CNI kubeconfig's
//! token fresh.

mod check;
mod configure;
mod release;
mod report;
mod result_cache;
mod show;
mod table;
pub mod upgrade;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::datastore;
use crate::engine::Ipam;
use crate::netconf::IpamNetConf;

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
    /// IP usage by pool (and, with --show-blocks, by block), as `calicoctl ipam show`; with
    /// --ip, who holds an address.
    Show {
        /// Report whether this address is in use, and by what.
        #[arg(long, conflicts_with = "show_blocks")]
        ip: Option<IpAddr>,
        /// Show each block's use under its pool.
        #[arg(long)]
        show_blocks: bool,
        /// Show the addresses nodes borrowed from blocks affine to another node (or none).
        #[arg(long)]
        show_borrowed: bool,
        /// Show the IPAM configuration (strict affinity, automatic blocks, blocks per host).
        #[arg(long)]
        show_configuration: bool,
    },
    /// Give addresses back, whoever holds them: one (--ip) or the leaks of reports that
    /// `check -o` wrote (--from-report, repeatable: only what every report calls leaked).
    Release {
        #[arg(long, required_unless_present = "from_report")]
        ip: Option<IpAddr>,
        /// A report written by `check -o`.
        #[arg(long = "from-report")]
        from_report: Vec<PathBuf>,
        /// Release even though the datastore is not locked or the report comes from
        /// another version.
        #[arg(long)]
        force: bool,
    },
    /// Compare the allocations with the workloads that exist (pods in the Kubernetes API,
    /// WorkloadEndpoints on etcd, the runtime's result cache on a single node), as
    /// `calicoctl ipam check`.
    Check {
        /// List every address in use, not only the problems.
        #[arg(long)]
        show_all_ips: bool,
        /// List the addresses that are leaked or in use twice.
        #[arg(long)]
        show_problem_ips: bool,
        /// Write the report (calicoctl's JSON) to this file, for `release --from-report`.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// The runtime's CNI result cache (libcni keeps one entry per live attachment):
        /// on the `local` datastore, its attachments use addresses too.
        #[arg(long, default_value = "/var/lib/cni")]
        cache_dir: PathBuf,
    },
    /// Change the IPAM configuration, as `calicoctl ipam configure` (at least one option).
    #[command(group(clap::ArgGroup::new("setting").required(true).multiple(true)))]
    Configure {
        /// Only ever assign from blocks affine to the node (no borrowing).
        #[arg(long, value_parser = parse_go_bool, group = "setting")]
        strictaffinity: Option<bool>,
        /// At most this many blocks affine to one node (0: the default).
        #[arg(long, group = "setting")]
        max_blocks_per_host: Option<u32>,
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

/// A boolean as Go's strconv.ParseBool reads it (calicoctl's `--strictaffinity=true`).
fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}

/// The process's own arguments: Calico's `calico-ipam -v` (the version, as installers and
/// operators ask it), else a command.
pub fn run_from_args() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-v") => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            0
        }
        // Calico's Go flag parser takes one dash or two.
        Some("-upgrade" | "--upgrade") => match run_upgrade(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("calico-ipam -upgrade: {e}");
                1
            }
        },
        _ => run(Cli::parse()),
    }
}

/// `-upgrade [--config <network configuration>]`. Without `--config` the datastore comes
/// from the environment, as Calico's `upgrade-ipam` init container gives it:
/// `DATASTORE_TYPE` (default `kubernetes`), `KUBECONFIG`, the `ETCD_*` variables, and the
/// node from `KUBERNETES_NODE_NAME`; the network is `k8s-pod-network`.
fn run_upgrade(args: &[String]) -> Result<i32, String> {
    let conf = match args {
        [] => upgrade_config_from_env()?,
        [flag, path] if flag == "--config" || flag == "-config" => load_config(Path::new(path))?,
        _ => {
            return Err(format!(
                "unexpected arguments {args:?}: use -upgrade [--config <file>]"
            ))
        }
    };
    let mut node_conf = conf.node.clone();
    node_conf.nodename_file_optional = true;
    let node = node_conf.resolve().map_err(|e| e.to_string())?;
    let store = datastore::open(&conf).map_err(|e| e.to_string())?;
    let data_dir = std::env::var(upgrade::DATA_DIR_ENV)
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| upgrade::DEFAULT_DATA_DIR.to_string());
    let _lock = crate::lock::HostLock::acquire(&conf.lock_file());
    let outcome = upgrade::migrate(store.as_ref(), &node, &conf.name, Path::new(&data_dir))?;
    for (ip, handle) in &outcome.migrated {
        println!("migrated {ip} to handle {handle}");
    }
    for ip in &outcome.stale {
        println!("removed {ip}: no workload uses it");
    }
    for failure in &outcome.failed {
        eprintln!("calico-ipam -upgrade: {failure}");
    }
    Ok(if outcome.failed.is_empty() { 0 } else { 1 })
}

fn upgrade_config_from_env() -> Result<IpamNetConf, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut conf = serde_json::json!({
        "name": "k8s-pod-network",
        "type": "calico-ipam",
        "datastore_type": var("DATASTORE_TYPE").unwrap_or_else(|| "kubernetes".into()),
        "ipam": {"type": "calico-ipam"},
    });
    if let Some(kubeconfig) = var("KUBECONFIG") {
        conf["kubernetes"] = serde_json::json!({"kubeconfig": kubeconfig});
    }
    if let Some(node) = var("KUBERNETES_NODE_NAME").or_else(|| var("NODENAME")) {
        conf["nodename"] = serde_json::json!(node);
    }
    let doc = shared::gojson::Document::from_value(shared::gojson::Value::from_json(&conf));
    doc.decode().map_err(|e| e.to_string())
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
        Action::Show {
            ip,
            show_blocks,
            show_borrowed,
            show_configuration,
        } => show::run(
            &ipam,
            store.as_ref(),
            &show::Options {
                ip,
                show_blocks,
                show_borrowed,
                show_configuration,
            },
        ),
        Action::Release {
            ip,
            from_report,
            force,
        } => release::run(&ipam, store.as_ref(), ip, &from_report, force),
        Action::Check {
            show_all_ips,
            show_problem_ips,
            output,
            cache_dir,
        } => check::run(
            store.as_ref(),
            &conf,
            &check::Options {
                show_all_ips,
                show_problem_ips,
                output,
                cache_dir,
            },
        ),
        Action::Configure {
            strictaffinity,
            max_blocks_per_host,
        } => configure::run(store.as_ref(), strictaffinity, max_blocks_per_host),
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
