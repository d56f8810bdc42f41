//! `calico-ipam -upgrade`: a node whose pods got their addresses from host-local (the
//! reference plugin, Debian's `/usr/lib/cni/host-local`, writes the state) has them taken
//! into calico-ipam's blocks under the handles the pods' DEL releases, on the local
//! datastore and on a real etcd. Addresses no workload uses are leaks and are dropped;
//! running it again changes nothing; an address calico-ipam already gives to another
//! handle is reported and its file kept, while the rest migrates.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use cni_tests::fixtures::{plugin_dir, TestDir};
use cni_tests::host_local::{self, HostLocal};
use cni_tests::ipam::{allocations, Backend, IpamFixture, NET};
use serde_json::{json, Value};

const POOL4: &str = "10.86.0.0/24";
const POOL6: &str = "fd00:86::/120";
const NODE: &str = "node-upgrade";
const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Runs `calico-ipam -upgrade --config <conflist>` on host-local state under `data_dir`.
fn upgrade(conflist: &Path, data_dir: &Path) -> (i32, String, String) {
    let out = Command::new(plugin_dir().join("calico-ipam"))
        .args(["-upgrade", "--config"])
        .arg(conflist)
        .env("CALICO_IPAM_UPGRADE_DATA_DIR", data_dir)
        .output()
        .expect("run calico-ipam -upgrade");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A WorkloadEndpoint using `ips`, as the calico plugin wrote it while host-local was IPAM.
fn endpoint(fx: &IpamFixture, namespace: &str, pod: &str, ips: &[String]) {
    let name = format!("{NODE}-k8s-{pod}-eth0");
    let key =
        format!("/calico/resources/v3/projectcalico.org/workloadendpoints/{namespace}/{name}");
    let nets: Vec<String> = ips
        .iter()
        .map(|ip| {
            let host = if ip.contains(':') { 128 } else { 32 };
            format!("{ip}/{host}")
        })
        .collect();
    let wep = json!({"kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
                     "metadata": {"name": name, "namespace": namespace},
                     "spec": {"orchestrator": "k8s", "node": NODE, "pod": pod,
                              "endpoint": "eth0", "ipNetworks": nets}});
    fx.put(&key, &wep.to_string());
}

fn host_addresses(out: &host_local::Outcome) -> Vec<String> {
    out.addresses()
        .iter()
        .map(|a| a.split('/').next().unwrap_or_default().to_string())
        .collect()
}

fn migrates_host_local_state(backend: Backend) {
    if !Path::new(REFERENCE_DIR).join("host-local").exists() {
        panic!(
            "{REFERENCE_DIR}/host-local missing: apt-get install -y containernetworking-plugins"
        );
    }
    let fx = IpamFixture::new(backend);
    fx.create_pool(POOL4, 26);
    fx.create_pool(POOL6, 122);
    let conf = fx.conf("1.0.0", NODE, json!({"assign_ipv6": "true"}));
    let conflist = fx.write_conflist(&conf);
    let data = TestDir::new().expect("host-local data dir");
    let mut hl_conf = host_local::conf(
        "1.0.0",
        data.path(),
        json!({"ranges": host_local::ranges(&[&[POOL4], &[POOL6]])}),
    );
    hl_conf["name"] = json!(NET);
    let hl = HostLocal::in_dir(Path::new(REFERENCE_DIR), "/var/run/netns/upgrade-test");
    let mut given = BTreeMap::new();
    for id in ["up-c1", "up-c2", "up-c3"] {
        let out = hl.add(&hl_conf, id, "eth0").expect("run host-local");
        assert!(out.ok(), "host-local ADD {id}: {}", out.describe());
        given.insert(id, host_addresses(&out));
    }
    // The pods of c1 and c2 still run; c3's DEL was lost: a leak.
    endpoint(&fx, "shop", "web-1", &given["up-c1"]);
    endpoint(&fx, "shop", "web-2", &given["up-c2"]);
    let store = data.path().join(NET);
    assert!(store.join(&given["up-c1"][0]).is_file());

    let (code, stdout, stderr) = upgrade(&conflist, data.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    let held = allocations(&fx.snapshot()).expect("consistent blocks");
    let expected: BTreeMap<IpAddr, String> = ["up-c1", "up-c2"]
        .iter()
        .flat_map(|id| {
            given[id]
                .iter()
                .map(move |ip| (ip.parse().expect("ip"), format!("{NET}.{id}")))
        })
        .collect();
    assert_eq!(held, expected, "{stdout}");
    assert!(
        stdout.contains(&format!("removed {}", given["up-c3"][0])),
        "{stdout}"
    );
    assert!(!store.exists(), "the host-local directory is gone");

    // The pods' attributes, as kube-controllers' garbage collection reads them.
    let block = fx
        .snapshot()
        .into_iter()
        .find(|(k, _)| k.contains("/assignment/ipv4/block/"))
        .map(|(_, v)| serde_json::from_str::<Value>(&v).expect("block"))
        .expect("a v4 block");
    let attrs: Vec<&Value> = block["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .collect();
    assert!(
        attrs.iter().any(|a| a["secondary"]["namespace"] == "shop"
            && a["secondary"]["pod"] == "web-1"
            && a["secondary"]["node"] == NODE
            && a["handle_id"] == format!("{NET}.up-c1")),
        "{block}"
    );

    let before = fx.snapshot();
    let (code, stdout, stderr) = upgrade(&conflist, data.path());
    assert_eq!(code, 0, "again: {stdout}{stderr}");
    assert_eq!(fx.snapshot(), before, "running it again changes nothing");

    // The pod's DEL through calico-ipam releases what was migrated.
    let out = fx.call("DEL", &conf, "up-c1", &[]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let held = allocations(&fx.snapshot()).expect("blocks");
    assert!(
        held.values().all(|h| h == &format!("{NET}.up-c2")) && held.len() == 2,
        "{held:?}"
    );

    // A host-local file naming another container for an address calico-ipam gives to c2,
    // next to one that migrates: the conflict is reported and kept, the other goes in.
    fs::create_dir_all(&store).expect("mkdir");
    let taken = &given["up-c2"][0];
    fs::write(store.join(taken), "up-imposter\r\neth0").expect("seed");
    let free = "10.86.0.200";
    fs::write(store.join(free), "up-c4\r\neth0").expect("seed");
    endpoint(&fx, "shop", "web-4", &[free.to_string()]);
    let (code, stdout, stderr) = upgrade(&conflist, data.path());
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(taken.as_str())
            && stderr.contains(&format!("{NET}.up-c2"))
            && stderr.contains(&format!("{NET}.up-imposter")),
        "{stderr}"
    );
    assert!(store.join(taken).is_file(), "the conflicting file stays");
    let held = allocations(&fx.snapshot()).expect("blocks");
    assert_eq!(
        held.get(&free.parse::<IpAddr>().expect("ip")),
        Some(&format!("{NET}.up-c4")),
        "{held:?}"
    );
    assert_eq!(
        held.get(&taken.parse::<IpAddr>().expect("ip")),
        Some(&format!("{NET}.up-c2"))
    );
}

#[test]
fn upgrade_on_local_migrates_host_local_state() {
    migrates_host_local_state(Backend::Local);
}

#[test]
fn upgrade_on_etcd_migrates_host_local_state() {
    migrates_host_local_state(Backend::Etcd);
}

#[test]
fn upgrade_without_host_local_state_does_nothing() {
    let fx = IpamFixture::new(Backend::Local);
    fx.create_pool(POOL4, 26);
    let conflist = fx.write_conflist(&fx.conf("1.0.0", NODE, json!({})));
    let data = TestDir::new().expect("dir");
    let before = fx.snapshot();
    let (code, stdout, stderr) = upgrade(&conflist, data.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(fx.snapshot(), before);
}
