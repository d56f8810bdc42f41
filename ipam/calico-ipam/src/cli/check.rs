//! `calico-ipam check`, as `calicoctl ipam check`: every allocation of every block compared
//! with what uses addresses (workloads, nodes' tunnels), and every handle with the
//! allocations. It prints calicoctl's progress and findings and, with `-o`, writes its
//! report for `release --from-report`. It only reads.
//!
//! What uses addresses: WorkloadEndpoints on etcd and local, pods on Kubernetes, and on
//! `local` also the runtime's result cache (a single node has no other record of an
//! attachment whose plugin writes no endpoint). Unlike calicoctl it reads no Kubernetes
//! Services: no LoadBalancer addresses come from these blocks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;

use crate::model::{AllocationAttribute, IpamBlock};
use crate::netconf::IpamNetConf;
use crate::store::{Store, StoreError};

use super::report::{self, Allocation, HandleInfo, Report};
use super::result_cache;

/// The handle Calico's Windows nodes reserve addresses under: in use by the node itself.
const WINDOWS_RESERVED_HANDLE: &str = "windows-reserved-ipam-handle";

const NODES_TO_PRINT: usize = 20;

/// What `check` was asked for.
pub struct Options {
    pub show_all_ips: bool,
    pub show_problem_ips: bool,
    pub output: Option<PathBuf>,
    /// The runtime's result cache, read on the `local` datastore.
    pub cache_dir: PathBuf,
}

/// An allocation and its attributes as calicoctl prints them.
struct Recorded {
    allocation: Allocation,
    attrs: String,
}

#[derive(Default)]
struct Checker {
    show_all: bool,
    show_problems: bool,
    allocations: BTreeMap<IpAddr, Vec<Recorded>>,
    /// Allocations per node (the attribute's node, else the block's).
    per_node: BTreeMap<String, usize>,
    /// Address → who uses it.
    in_use: BTreeMap<IpAddr, Vec<String>>,
    /// Handles some allocation is under.
    in_use_handles: BTreeSet<String>,
}

/// `Main:<handle> Extra:k=v,k=v`, as calicoctl formats attributes.
fn attrs_text(attr: Option<&AllocationAttribute>) -> String {
    let Some(a) = attr else {
        return "<missing>".into();
    };
    let extra: Vec<String> = a
        .secondary
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "Main:{} Extra:{}",
        a.handle_id.as_deref().unwrap_or("<none>"),
        extra.join(",")
    )
}

impl Checker {
    fn record_allocation(&mut self, block: &IpamBlock, ordinal: usize, attr: Option<usize>) {
        let ip = block.ip_at(ordinal);
        let attr = attr.and_then(|i| block.attributes.get(i));
        let block_node = block
            .affinity
            .as_deref()
            .and_then(|a| a.strip_prefix("host:"))
            .unwrap_or_default();
        let mut allocation = Allocation {
            ip: ip.to_string(),
            sequence_number: Some(block.sequence_number_of(ordinal)),
            node: block_node.to_string(),
            ..Allocation::default()
        };
        let mut reserved = false;
        if let Some(a) = attr {
            match a.handle_id.as_deref() {
                Some(WINDOWS_RESERVED_HANDLE) => reserved = true,
                Some(handle) => {
                    allocation.handle = handle.to_string();
                    self.in_use_handles.insert(handle.to_string());
                }
                None => {}
            }
            let field = |k: &str| a.secondary.get(k).cloned().unwrap_or_default();
            if !field("node").is_empty() {
                allocation.node = field("node");
            }
            allocation.pod = field("pod");
            allocation.namespace = field("namespace");
            allocation.kind = field("type");
            allocation.creation_timestamp = field("timestamp");
        }
        allocation.borrowed = allocation.node != block_node;
        let attrs = attrs_text(attr);
        if self.show_all {
            println!("  {ip} allocated; attrs {attrs}");
        }
        *self.per_node.entry(allocation.node.clone()).or_default() += 1;
        self.allocations
            .entry(ip)
            .or_default()
            .push(Recorded { allocation, attrs });
        // After the allocation is recorded, so that the report marks it in use and a
        // release from it leaves the node's reservation alone.
        if reserved {
            self.record_in_use(ip, "Reserved for Windows".into());
        }
    }

    fn record_in_use(&mut self, ip: IpAddr, owner: String) {
        if self.show_all {
            println!("  {ip} belongs to {owner}");
        }
        for r in self.allocations.get_mut(&ip).into_iter().flatten() {
            r.allocation.in_use = true;
            r.allocation
                .owners
                .get_or_insert_with(Vec::new)
                .push(owner.clone());
        }
        self.in_use.entry(ip).or_default().push(owner);
    }
}

pub fn run(store: &dyn Store, conf: &IpamNetConf, options: &Options) -> Result<i32, String> {
    let text = |e: StoreError| e.to_string();
    println!("Checking IPAM for inconsistencies...");
    println!();
    let info = report::cluster_information(store)?;
    let mut c = Checker {
        show_all: options.show_all_ips,
        show_problems: options.show_all_ips || options.show_problem_ips,
        ..Checker::default()
    };

    println!("Loading all IPAM blocks...");
    let mut blocks = store.list_blocks(true).map_err(text)?;
    blocks.extend(store.list_blocks(false).map_err(text)?);
    println!("Found {} IPAM blocks.", blocks.len());
    let mut allocated = 0;
    for block in &blocks {
        let b = &block.value;
        println!(
            " IPAM block {} affinity={}:",
            b.cidr,
            b.affinity.as_deref().unwrap_or("<none>")
        );
        for (ordinal, attr) in b.allocations.iter().enumerate() {
            if attr.is_some() {
                allocated += 1;
                c.record_allocation(b, ordinal, *attr);
            }
        }
    }
    println!("IPAM blocks record {allocated} allocations.");
    println!();

    println!("Loading all IPAM pools...");
    let pools: Vec<IpNetwork> = store
        .list_pools()
        .map_err(text)?
        .into_iter()
        .filter(|p| !p.disabled)
        .map(|p| p.cidr)
        .collect();
    for cidr in &pools {
        println!("  {cidr}");
    }
    println!("Found {} active IP pools.", pools.len());
    println!();

    println!("Loading all nodes.");
    let mut tunnel_ips = 0;
    for node in store.list_node_tunnel_addresses().map_err(text)? {
        for ip in node.ips {
            c.record_in_use(ip, format!("Node({})", node.node));
            tunnel_ips += 1;
        }
    }
    println!("Found {tunnel_ips} node tunnel IPs.");
    println!();

    println!("Loading all workload endpoints.");
    let mut workload_ips = 0;
    for w in store.list_workload_addresses().map_err(text)? {
        for ip in w.ips {
            c.record_in_use(ip, format!("Workload({}/{})", w.namespace, w.name));
            workload_ips += 1;
        }
    }
    // A single node's store: the runtime's own record of its attachments counts too.
    if !store.has_calico_node() {
        for a in result_cache::attachments(&options.cache_dir, &conf.name) {
            for ip in a.ips {
                // An endpoint's address is in the cache too: one owner, not two.
                if !c.in_use.contains_key(&ip) {
                    c.record_in_use(
                        ip,
                        format!("Attachment({}/{})", a.container_id, a.interface),
                    );
                    workload_ips += 1;
                }
            }
        }
    }
    println!("Found {workload_ips} workload IPs.");
    println!("Workloads and nodes are using {} IPs.", c.in_use.len());
    println!();

    println!("Loading all handles");
    let handles: BTreeMap<String, String> = store
        .list_handles()
        .map_err(text)?
        .into_iter()
        .map(|h| (h.value.handle_id, h.revision))
        .collect();

    top_nodes(&c);

    let mut problems = 0;
    println!("Scanning for IPs that are allocated but not actually in use...");
    let mut leaked = 0;
    for (ip, recorded) in &c.allocations {
        if c.in_use.contains_key(ip) {
            continue;
        }
        if c.show_problems {
            for r in recorded {
                println!("  {ip} leaked; attrs {}", r.attrs);
            }
        }
        leaked += 1;
    }
    problems += leaked;
    println!("Found {leaked} IPs that are allocated in IPAM but not actually in use.");

    println!("Scanning for IPs that are in use by a workload or node but not allocated in IPAM...");
    let (mut outside_pools, mut unallocated) = (0, 0);
    for (ip, owners) in &c.in_use {
        if c.show_problems && owners.len() > 1 {
            println!("  {ip} has multiple owners.");
        }
        if c.allocations.contains_key(ip) {
            continue;
        }
        let in_pool = pools.iter().any(|p| p.contains(*ip));
        if c.show_problems {
            for owner in owners {
                if in_pool {
                    println!(
                        "  {ip} in use by {owner} and in active IPAM pool but has no IPAM allocation."
                    );
                } else {
                    println!("  {ip} in use by {owner} is not in any active IP pool.");
                }
            }
        }
        if in_pool {
            unallocated += 1;
        } else {
            outside_pools += 1;
        }
    }
    problems += outside_pools + unallocated;
    println!("Found {outside_pools} in-use IPs that are not in active IP pools.");
    println!(
        "Found {unallocated} in-use IPs that are in active IP pools but have no corresponding \
         IPAM allocation."
    );
    println!();

    println!("Scanning for IPAM handles with no matching IPs...");
    let mut leaked_handles = Vec::new();
    for (id, revision) in &handles {
        if c.in_use_handles.contains(id) {
            continue;
        }
        if c.show_all {
            println!("  {id} doesn't have any active IPs.");
        }
        leaked_handles.push(HandleInfo {
            id: id.clone(),
            uid: None,
            revision: revision.clone(),
        });
    }
    problems += leaked_handles.len();
    println!(
        "Found {} handles with no matching IPs (and {} handles with matches).",
        leaked_handles.len(),
        handles.len() - leaked_handles.len()
    );

    println!("Scanning for IPs with missing handle...");
    let missing: Vec<&String> = c
        .in_use_handles
        .iter()
        .filter(|h| !handles.contains_key(*h))
        .collect();
    if c.show_problems {
        for h in &missing {
            println!("  {h} is in use in a block but doesn't exist.");
        }
    }
    println!(
        "Found {} handles mentioned in blocks with no matching handle resource.",
        missing.len()
    );
    println!("Check complete; found {problems} problems.");

    if let Some(path) = &options.output {
        let report = Report {
            version: report::VERSION.into(),
            cluster_guid: info.value.cluster_guid().into(),
            datastore_locked: info.value.locked(),
            cluster_information_revision: info.revision,
            cluster_type: info.value.cluster_type().into(),
            allocations: c
                .allocations
                .into_iter()
                .map(|(ip, recorded)| {
                    let list = recorded.into_iter().map(|r| r.allocation).collect();
                    (ip.to_string(), list)
                })
                .collect(),
            leaked_handles,
        };
        report.write(path)?;
    }
    Ok(0)
}

/// The nodes with the most allocations, and the median.
fn top_nodes(c: &Checker) {
    println!("Looking for top (up to {NODES_TO_PRINT}) nodes by allocations...");
    let mut nodes: Vec<(&String, usize)> = c.per_node.iter().map(|(n, k)| (n, *k)).collect();
    nodes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (node, count) in nodes.iter().take(NODES_TO_PRINT) {
        println!("  {node} has {count} allocations");
    }
    if let Some((_, most)) = nodes.first() {
        let median = nodes[nodes.len() / 2].1;
        println!("Node with most allocations has {most}; median is {median}");
    }
    println!();
}
