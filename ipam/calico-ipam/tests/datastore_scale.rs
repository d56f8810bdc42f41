//! What one ADD and one DEL cost the datastore does not grow with the cluster: the same
//! requests, and about the same bytes, on a datastore holding one node with 40 addresses in
//! its block and on one that also holds 500 other nodes (each with its Node, affinity and
//! block) and 15 more full blocks of this node (1,000 addresses in all), listed before the
//! one with room. Counted from the binary's own debug log, one
//! line per request on the wire (`<store>: <request> <key>: <n> bytes sent, <m> received`).

#[path = "cluster_growth.rs"]
mod growth;

use calico_ipam::k8s::KubeSettings;
use calico_ipam::store::etcd::{EtcdConfig, EtcdKv};
use calico_ipam::store::kube::KubeStore;
use calico_ipam::store::local::local_store;
use calico_ipam::store::Store;
use cni_tests::ipam::{Backend, IpamFixture};
use growth::{block_of, fill_first, grow, POOL};
use ipnetwork::IpNetwork;
use serde_json::{json, Value};

const NODE: &str = "n1";

/// The requests one invocation made, from its stderr.
#[derive(Debug)]
struct Cost {
    /// `<store>: <request> <key>` and the bytes received, in order.
    requests: Vec<(String, usize)>,
    sent: usize,
    received: usize,
}

fn cost_of(stderr: &str) -> Cost {
    let mut cost = Cost {
        requests: Vec::new(),
        sent: 0,
        received: 0,
    };
    for line in stderr.lines() {
        let Some((head, tail)) = line.rsplit_once(" bytes sent, ") else {
            continue;
        };
        let Some((request, sent)) = head.rsplit_once(": ") else {
            continue;
        };
        // The workload's fields follow "received".
        let received: String = tail.chars().take_while(char::is_ascii_digit).collect();
        let (Ok(sent), Ok(received)) = (sent.parse::<usize>(), received.parse::<usize>()) else {
            continue;
        };
        cost.sent += sent;
        cost.received += received;
        // "<store>: <request> <key>", from where the store's name starts.
        let start = ["local: ", "etcd: ", "kubernetes: "]
            .iter()
            .filter_map(|s| request.find(s))
            .min()
            .unwrap_or(0);
        cost.requests.push((request[start..].to_string(), received));
    }
    cost
}

/// The datastore as the library opens it, to lay out what a large cluster holds.
fn library_store(fixture: &IpamFixture) -> Box<dyn Store> {
    match fixture.backend {
        Backend::Local => Box::new(local_store(&fixture.data_dir()).expect("local store")),
        Backend::Etcd => Box::new(
            EtcdKv::store(&EtcdConfig::new(vec![fixture.endpoints().to_string()]))
                .expect("etcd store"),
        ),
        Backend::Kubernetes => Box::new(
            KubeStore::connect(&KubeSettings {
                kubeconfig: Some(fixture.kubeconfig().display().to_string()),
                ..KubeSettings::default()
            })
            .expect("kubernetes store"),
        ),
    }
}

fn add_del(fixture: &IpamFixture, conf: &Value, id: &str) -> (Cost, Cost, IpNetwork) {
    let add = fixture.call("ADD", conf, id, &[]);
    assert_eq!(add.exit, Some(0), "ADD {id}: {}", add.describe());
    let address: IpNetwork = add
        .addresses()
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("ADD {id} gave no address: {}", add.describe()));
    let del = fixture.call("DEL", conf, id, &[]);
    assert_eq!(del.exit, Some(0), "DEL {id}: {}", del.describe());
    (cost_of(&add.stderr), cost_of(&del.stderr), address)
}

fn costs_do_not_grow_with_the_cluster(backend: Backend) {
    let fixture = IpamFixture::new(backend);
    fixture.create_pool(POOL, 26);
    let mut conf = fixture.conf("1.0.0", NODE, json!({}));
    conf["log_level"] = json!("debug");
    // The node's first ADD claims its block; the next ones are what a node does all day.
    let first = block_of(fixture.add(&conf, "warm", &[]));
    fill_first(library_store(&fixture).as_ref(), NODE, first);
    let (small_add, small_del, _) = add_del(&fixture, &conf, "small");
    assert!(
        !small_add.requests.is_empty(),
        "no request logged: {small_add:?}"
    );

    grow(library_store(&fixture).as_ref(), NODE, first, &mut |node| {
        fixture.register_node(node);
    });
    let (large_add, large_del, address) = add_del(&fixture, &conf, "large");
    assert!(
        first.contains(address.ip()),
        "{address} is not from {first}, the block with room"
    );
    eprintln!(
        "{backend:?}: ADD {} requests, {} / {} bytes sent, {} / {} received; \
         DEL {} requests, {} / {} bytes sent, {} / {} received",
        large_add.requests.len(),
        small_add.sent,
        large_add.sent,
        small_add.received,
        large_add.received,
        large_del.requests.len(),
        small_del.sent,
        large_del.sent,
        small_del.received,
        large_del.received,
    );
    for (what, small, large) in [
        ("ADD", &small_add, &large_add),
        ("DEL", &small_del, &large_del),
    ] {
        let kinds = |c: &Cost| -> Vec<String> {
            c.requests
                .iter()
                .map(|(r, _)| r.replace("small", "<id>").replace("large", "<id>"))
                .collect()
        };
        assert_eq!(kinds(small), kinds(large), "{what}: the same requests");
        for ((request, before), (_, after)) in small.requests.iter().zip(&large.requests) {
            if is_own_affinity_list(request) {
                // One entry per block of the node: the node's own, which it must read.
                continue;
            }
            // Sequence numbers and revisions may take a digit more.
            assert!(
                after.abs_diff(*before) <= before / 50 + 16,
                "{what}: {request} read {before} bytes, then {after}"
            );
        }
        assert!(
            large.sent.abs_diff(small.sent) <= small.sent / 50 + 16,
            "{what}: sent {} bytes, then {}",
            small.sent,
            large.sent
        );
    }
}

/// The request that lists this node's affinities (on etcd and local by key prefix, on
/// Kubernetes by label).
fn is_own_affinity_list(request: &str) -> bool {
    request.contains(&format!("/host/{NODE}/")) || request.contains("blockaffinities?")
}

#[test]
fn local_add_and_del_cost_the_same_on_a_large_cluster() {
    costs_do_not_grow_with_the_cluster(Backend::Local);
}

#[test]
fn etcd_add_and_del_cost_the_same_on_a_large_cluster() {
    costs_do_not_grow_with_the_cluster(Backend::Etcd);
}

#[test]
fn kubernetes_add_and_del_cost_the_same_on_a_large_cluster() {
    costs_do_not_grow_with_the_cluster(Backend::Kubernetes);
}
