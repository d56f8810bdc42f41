//! `calico-ipam check` and `calico-ipam release`, as `calicoctl ipam check` and
//! `calicoctl ipam release`, on every datastore: `release --ip` gives one address back by
//! hand; check compares every allocation with
//! what uses addresses (WorkloadEndpoints on etcd and local, pods on Kubernetes, the nodes'
//! tunnel addresses, and on local the runtime's result cache), prints calicoctl's findings
//! and writes its report; release acts on reports only for the same cluster, while one of
//! them is current, the datastore is locked and the report is ours (the last two unless
//! forced), and only on what every report calls leaked and is still what they saw.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cni_tests::host_local::Outcome;
use cni_tests::ipam::{allocations, operator, Backend, IpamFixture, HANDLE_PREFIX, NET};
use cni_tests::on_every_datastore;
use serde_json::{json, Value};

const NODE: &str = "node-a";
const POOL: &str = "10.83.0.0/28";
const GUID: &str = "5b1a0c6f3e2d4a7f9c8b6e5d4c3b2a10";
const RESOURCES: &str = "/calico/resources/v3/projectcalico.org";

fn conf(fx: &IpamFixture) -> Value {
    fx.conf("1.0.0", NODE, json!({"ipv4_pools": [POOL]}))
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

/// `calico-ipam <args>` with the fixture's conflist (and its own result cache).
fn operate(fx: &IpamFixture, args: &[&str]) -> Outcome {
    let list = fx.write_conflist(&conf(fx));
    let cache = cache_dir(fx).display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    if args.first() == Some(&"check") {
        all.extend(["--cache-dir", &cache]);
    }
    operator(&list, &all)
}

fn cache_dir(fx: &IpamFixture) -> PathBuf {
    fx.dir.path().join("cni-cache")
}

fn check_to(fx: &IpamFixture, report: &Path, extra: &[&str]) -> Outcome {
    let path = report.display().to_string();
    let mut args = vec!["check", "-o", &path];
    args.extend_from_slice(extra);
    let out = operate(fx, &args);
    assert_eq!(out.exit, Some(0), "check: {}", out.describe());
    out
}

fn release_from(fx: &IpamFixture, reports: &[&Path], force: bool) -> Outcome {
    let paths: Vec<String> = reports.iter().map(|p| p.display().to_string()).collect();
    let mut args = vec!["release"];
    for p in &paths {
        args.extend(["--from-report", p]);
    }
    if force {
        args.push("--force");
    }
    operate(fx, &args)
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

fn edit_report(from: &Path, to: &Path, edit: impl FnOnce(&mut Value)) {
    let mut report = read_report(from);
    edit(&mut report);
    std::fs::write(to, report.to_string()).expect("write report");
}

/// ClusterInformation `default` as calico/node writes it; `ready: false` is the lock an
/// operator takes before releasing from a report.
fn set_cluster_information(fx: &IpamFixture, ready: bool) {
    let spec = json!({"clusterGUID": GUID, "clusterType": "k8s,bgp,kdd",
                      "calicoVersion": "v3.29.1", "datastoreReady": ready});
    match fx.backend {
        Backend::Kubernetes => {
            fx.api().put(
                "clusterinformations",
                json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "ClusterInformation",
                       "metadata": {"name": "default"}, "spec": spec}),
            );
        }
        _ => fx.put(
            &format!("{RESOURCES}/clusterinformations/default"),
            &json!({"kind": "ClusterInformation", "apiVersion": "projectcalico.org/v3",
                    "metadata": {"name": "default"}, "spec": spec})
            .to_string(),
        ),
    }
}

/// A pod of namespace `shop` on the node using `address`: its WorkloadEndpoint on etcd and
/// local, the pod with the calico plugin's annotation on Kubernetes.
fn add_workload(fx: &IpamFixture, pod: &str, address: IpAddr) {
    match fx.backend {
        Backend::Kubernetes => {
            fx.api().put(
                "pods",
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": pod, "namespace": "shop", "annotations": {
                           "cni.projectcalico.org/podIPs": format!("{address}/32")}},
                       "spec": {"nodeName": NODE,
                                "containers": [{"name": "main", "image": "busybox"}]},
                       "status": {"phase": "Running", "podIPs": [{"ip": address.to_string()}]}}),
            );
        }
        _ => {
            let name = format!("node--a-k8s-{pod}-eth0");
            fx.put(
                &format!("{RESOURCES}/workloadendpoints/shop/{name}"),
                &json!({"kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
                        "metadata": {"name": name, "namespace": "shop"},
                        "spec": {"orchestrator": "k8s", "node": NODE, "pod": pod,
                                 "endpoint": "eth0", "interfaceName": "cali0123456789a",
                                 "ipNetworks": [format!("{address}/32")]}})
                .to_string(),
            );
        }
    }
}

/// The node's IPIP tunnel address, as calico/node records it.
fn set_tunnel_address(fx: &IpamFixture, address: IpAddr) {
    match fx.backend {
        Backend::Kubernetes => {
            fx.api().put(
                "nodes",
                json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": NODE, "annotations": {
                           "projectcalico.org/IPv4IPIPTunnelAddr": address.to_string()}}}),
            );
        }
        _ => fx.put(
            &format!("{RESOURCES}/nodes/{NODE}"),
            &json!({"kind": "Node", "apiVersion": "projectcalico.org/v3",
                    "metadata": {"name": NODE},
                    "spec": {"bgp": {"ipv4Address": "192.0.2.10/24",
                                     "ipv4IPIPTunnelAddr": address.to_string()}}})
            .to_string(),
        ),
    }
}

/// An attachment the runtime keeps in its libcni result cache.
fn cache_attachment(fx: &IpamFixture, container: &str, address: IpAddr) {
    let results = cache_dir(fx).join("results");
    std::fs::create_dir_all(&results).expect("results dir");
    let entry = json!({"kind": "cniCacheV1", "containerId": container, "ifName": "eth0",
                       "networkName": NET, "config": "",
                       "result": {"cniVersion": "1.0.0",
                                  "ips": [{"address": format!("{address}/32")}]}});
    std::fs::write(
        results.join(format!("{NET}-{container}-eth0")),
        entry.to_string(),
    )
    .expect("cache entry");
}

/// A handle no allocation refers to (a crash between the handle's and the block's write).
fn orphan_handle(fx: &IpamFixture) -> String {
    let id = format!("{NET}.orphan");
    fx.put(
        &format!("{HANDLE_PREFIX}{id}"),
        &json!({"block": {}, "deleted": false}).to_string(),
    );
    id
}

fn has_line(out: &Outcome, line: &str) -> bool {
    out.stdout.lines().any(|l| l == line)
}

fn assert_line(out: &Outcome, line: &str) {
    assert!(has_line(out, line), "no line {line:?} in:\n{}", out.stdout);
}

fn held(fx: &IpamFixture) -> std::collections::BTreeMap<IpAddr, String> {
    allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"))
}

fn check_reports_leaks_and_what_uses_addresses(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 28);
    set_cluster_information(&fx, true);
    let conf = conf(&fx);
    let tunnel = fx.add(&conf, "tunnel", &[]);
    set_tunnel_address(&fx, tunnel);
    let web = fx.add(&conf, "web", &[]);
    add_workload(&fx, "web", web);
    let db = fx.add(&conf, "db", &[]);
    if backend == Backend::Local {
        cache_attachment(&fx, "db", db);
    } else {
        add_workload(&fx, "db", db);
    }
    let gone = fx.add(&conf, "gone", &[]);
    // A workload whose address IPAM never gave out.
    let stray = ip("10.83.0.14");
    add_workload(&fx, "stray", stray);
    let orphan = orphan_handle(&fx);
    let before = fx.snapshot();

    let report_path = fx.dir.path().join("report.json");
    let out = check_to(&fx, &report_path, &["--show-problem-ips"]);
    assert_line(&out, "Found 1 IPAM blocks.");
    assert_line(&out, "IPAM blocks record 4 allocations.");
    assert_line(&out, &format!("  {POOL}"));
    assert_line(&out, "Found 1 node tunnel IPs.");
    assert_line(&out, "Found 3 workload IPs.");
    assert_line(&out, "Workloads and nodes are using 4 IPs.");
    assert_line(&out, &format!("  {NODE} has 4 allocations"));
    assert_line(
        &out,
        "Found 1 IPs that are allocated in IPAM but not actually in use.",
    );
    let leak = format!("  {gone} leaked; attrs Main:{NET}.gone Extra:");
    let leaks: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(" leaked; "))
        .collect();
    assert_eq!(leaks.len(), 1, "{}", out.stdout);
    assert!(
        leaks[0].starts_with(&leak) && leaks[0].contains(&format!("node={NODE}")),
        "{}",
        leaks[0]
    );
    assert!(
        out.stdout.lines().any(
            |l| l.starts_with(&format!("  {stray} in use by Workload(shop/"))
                && l.ends_with("and in active IPAM pool but has no IPAM allocation.")
        ),
        "{}",
        out.stdout
    );
    assert_line(
        &out,
        "Found 1 in-use IPs that are in active IP pools but have no corresponding IPAM allocation.",
    );
    assert_line(
        &out,
        "Found 1 handles with no matching IPs (and 4 handles with matches).",
    );
    assert_line(&out, "Check complete; found 3 problems.");
    assert_eq!(fx.snapshot(), before, "check only reads");

    let report = read_report(&report_path);
    assert_eq!(report["clusterGUID"], GUID, "{report}");
    assert_eq!(report["clusterType"], "k8s,bgp,kdd");
    assert_eq!(report["datastoreLocked"], false);
    assert!(
        report["clusterInformationRevision"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{report}"
    );
    assert!(report["version"].as_str().is_some_and(|v| !v.is_empty()));
    let allocs = report["allocations"].as_object().expect("allocations");
    let mut keys: Vec<&String> = allocs.keys().collect();
    keys.sort();
    let mut expected: Vec<String> = [tunnel, web, db, gone]
        .iter()
        .map(|a| a.to_string())
        .collect();
    expected.sort();
    assert_eq!(keys, expected.iter().collect::<Vec<_>>());
    let one = |a: IpAddr| &allocs[&a.to_string()][0];
    let leaked = one(gone);
    assert_eq!(leaked["inUse"], false, "{leaked}");
    assert_eq!(leaked["owners"], Value::Null, "{leaked}");
    assert_eq!(leaked["handle"], format!("{NET}.gone"));
    assert_eq!(leaked["node"], NODE);
    assert!(leaked["sequenceNumber"].is_u64(), "{leaked}");
    assert!(leaked.get("borrowed").is_none(), "{leaked}");
    assert_eq!(one(tunnel)["owners"], json!([format!("Node({NODE})")]));
    assert_eq!(one(web)["inUse"], true);
    let web_owner = one(web)["owners"][0].as_str().unwrap_or_default();
    assert!(
        web_owner.starts_with("Workload(shop/") && web_owner.contains("web"),
        "{web_owner}"
    );
    let db_owner = one(db)["owners"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if backend == Backend::Local {
        assert_eq!(db_owner, "Attachment(db/eth0)");
    } else {
        assert!(db_owner.starts_with("Workload(shop/"), "{db_owner}");
    }
    let handles = report["leakedHandles"].as_array().expect("leaked handles");
    assert_eq!(handles.len(), 1, "{report}");
    assert_eq!(handles[0]["ID"], orphan.as_str());
    assert!(handles[0]["Revision"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));

    let out = operate(&fx, &["check", "--show-all-ips"]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&format!("  {web} allocated; attrs Main:{NET}.web Extra:"))),
        "{}",
        out.stdout
    );
    assert_line(&out, &format!("  {tunnel} belongs to Node({NODE})"));
    assert_line(&out, &format!("  {orphan} doesn't have any active IPs."));
}

fn release_from_reports_frees_only_what_every_report_calls_leaked(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 28);
    set_cluster_information(&fx, false);
    let conf = conf(&fx);
    let web = fx.add(&conf, "web", &[]);
    add_workload(&fx, "web", web);
    // Not yet published when the first report is made: in a transient state, not leaked.
    let late = fx.add(&conf, "late", &[]);
    let gone = fx.add(&conf, "gone", &[]);
    let orphan = orphan_handle(&fx);
    let first = fx.dir.path().join("first.json");
    check_to(&fx, &first, &[]);
    add_workload(&fx, "late", late);
    let second = fx.dir.path().join("second.json");
    check_to(&fx, &second, &[]);

    let out = release_from(&fx, &[&first, &second], false);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_line(&out, "Releasing 1 old IPs...");
    assert_line(&out, "Released 1 IPs successfully");
    assert_line(&out, "Deleting 1 handles...");
    assert_line(&out, "Released 1 handles; 0 skipped; 0 errors.");
    assert_line(&out, "You may now unlock the data store.");
    let now = held(&fx);
    assert_eq!(now.get(&web), Some(&format!("{NET}.web")));
    assert_eq!(now.get(&late), Some(&format!("{NET}.late")));
    assert!(!now.contains_key(&gone), "{gone} still held: {now:?}");
    let handles = fx.handles();
    assert!(
        !handles.contains_key(&orphan) && !handles.contains_key(&format!("{NET}.gone")),
        "{handles:?}"
    );

    // The same reports again: what they call leaked is gone already, and nothing else
    // is touched.
    let before = fx.snapshot();
    let out = release_from(&fx, &[&first, &second], false);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_line(&out, "Released 0 IPs successfully");
    assert_line(
        &out,
        "1 addresses marked as leaked in the report had already been cleaned up.",
    );
    assert_line(&out, "Released 0 handles; 1 skipped; 0 errors.");
    assert_eq!(fx.snapshot(), before);
}

fn release_refuses_foreign_stale_unlocked_and_other_versions_reports(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 28);
    set_cluster_information(&fx, true);
    let conf = conf(&fx);
    let gone = fx.add(&conf, "gone", &[]);
    let unlocked = fx.dir.path().join("unlocked.json");
    check_to(&fx, &unlocked, &[]);
    let before = fx.snapshot();
    let refused = |out: &Outcome, words: &str| {
        assert_eq!(out.exit, Some(1), "{}", out.describe());
        assert!(out.stderr.contains(words), "{words:?}: {}", out.describe());
        assert_eq!(fx.snapshot(), before, "a refused release changes nothing");
    };

    let out = release_from(&fx, &[&unlocked], false);
    refused(&out, "data store is not locked. Either lock the data store");

    let foreign = fx.dir.path().join("foreign.json");
    edit_report(&unlocked, &foreign, |r| {
        r["clusterGUID"] = json!("another-cluster")
    });
    let out = release_from(&fx, &[&foreign], true);
    refused(&out, "mismatched cluster GUID. Refusing to release");

    // Locking changes the ClusterInformation: the report made before is stale, even forced.
    set_cluster_information(&fx, false);
    let before = fx.snapshot();
    let refused = |out: &Outcome, words: &str| {
        assert_eq!(out.exit, Some(1), "{}", out.describe());
        assert!(out.stderr.contains(words), "{words:?}: {}", out.describe());
        assert_eq!(fx.snapshot(), before, "a refused release changes nothing");
    };
    let out = release_from(&fx, &[&unlocked], true);
    refused(&out, "the provided reports are all stale");

    let locked = fx.dir.path().join("locked.json");
    check_to(&fx, &locked, &[]);
    let other = fx.dir.path().join("other-version.json");
    edit_report(&locked, &other, |r| r["version"] = json!("v3.29.1"));
    let out = release_from(&fx, &[&other], false);
    refused(&out, "was produced using a different version (v3.29.1)");

    let out = release_from(&fx, &[&other], true);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_line(
        &out,
        "WARNING: Report was produced using a different version of calico-ipam. Ignoring due \
         to --force option",
    );
    assert_line(&out, "Released 1 IPs successfully");
    assert!(!held(&fx).contains_key(&gone));
}

fn an_address_given_out_again_is_not_released_from_an_old_report(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 28);
    set_cluster_information(&fx, false);
    let conf = conf(&fx);
    let address = ip("10.83.0.9");
    let wanted = address.to_string();
    fx.add(&conf, "first", &[("IP", &wanted)]);
    let report = fx.dir.path().join("report.json");
    check_to(&fx, &report, &[]);
    let out = fx.call("DEL", &conf, "first", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_eq!(fx.add(&conf, "second", &[("IP", &wanted)]), address);

    let out = release_from(&fx, &[&report], false);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_line(&out, "Released 0 IPs successfully");
    assert_line(
        &out,
        "1 addresses marked as leaked in the report had already been cleaned up.",
    );
    assert_eq!(held(&fx).get(&address), Some(&format!("{NET}.second")));
}

fn release_by_ip_frees_the_address(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 28);
    let conf = conf(&fx);
    let leaked = fx.add(&conf, "c1", &[]);
    let kept = fx.add(&conf, "c2", &[]);
    let ip = leaked.to_string();

    let out = operate(&fx, &["release", "--ip", &ip]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_eq!(
        out.stdout,
        format!("Successfully released IP address {ip}\n"),
        "{}",
        out.describe()
    );
    let now = held(&fx);
    assert!(!now.contains_key(&leaked), "{ip} still allocated: {now:?}");
    assert_eq!(now.get(&kept), Some(&format!("{NET}.c2")));
    assert!(
        !fx.handles().contains_key(&format!("{NET}.c1")),
        "the emptied handle goes with its last address"
    );

    let out = operate(&fx, &["show", "--ip", &ip]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert_eq!(out.stdout, format!("{ip} is not assigned\n"));

    let before = fx.snapshot();
    let out = operate(&fx, &["release", "--ip", &ip]);
    assert_eq!(out.exit, Some(1), "a second release: {}", out.describe());
    assert!(
        out.stderr
            .contains(&format!("IP address {ip} is not assigned")),
        "{}",
        out.describe()
    );
    assert_eq!(fx.snapshot(), before);
    // Free again: a pod that asks for it gets it.
    assert_eq!(fx.add(&conf, "c3", &[("IP", &ip)]), leaked);
}

fn check_needs_the_cluster_information(backend: Backend) {
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL, 28);
    fx.add(&conf(&fx), "c1", &[]);
    let out = operate(&fx, &["check"]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    assert!(
        out.stderr
            .contains("ClusterInformation \"default\" does not exist"),
        "{}",
        out.describe()
    );
}

on_every_datastore!(
    release_by_ip_frees_the_address,
    check_reports_leaks_and_what_uses_addresses,
    release_from_reports_frees_only_what_every_report_calls_leaked,
    release_refuses_foreign_stale_unlocked_and_other_versions_reports,
    an_address_given_out_again_is_not_released_from_an_old_report,
);

/// Only etcd and Kubernetes: on a single node's local store nothing writes one, and none
/// reads as ready.
mod without_cluster_information {
    use super::check_needs_the_cluster_information;
    cni_tests::on_datastores!([etcd: Etcd, kubernetes: Kubernetes] check_needs_the_cluster_information);
}
