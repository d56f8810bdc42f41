//! How many datastore requests an ADD and a DEL cost. On etcd every `Kv` call is one HTTP
//! round trip, so these counts are the plugin's latency budget: a request added to the
//! common paths below should be a deliberate choice, not an accident.

#[path = "engine_fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::sync::Mutex;

use calico_ipam::engine::{AutoAssign, Ipam};
use calico_ipam::model::IpPool;
use calico_ipam::store::kv::{Kv, KvStore};
use calico_ipam::store::memory::MemoryKv;
use calico_ipam::store::{Result, Revision, Store};
use fixture::{net, pool};

/// A [`MemoryKv`] that records every call as "<op> <kind>" (e.g. "get block").
#[derive(Default)]
struct CountingKv {
    inner: MemoryKv,
    calls: Mutex<Vec<(String, String)>>,
}

/// What a key (or prefix) names, from Calico's etcd layout.
fn kind(key: &str) -> &'static str {
    if key.contains("/ippools/") {
        "pools"
    } else if key.contains("/ipreservations/") {
        "reservations"
    } else if key.contains("/nodes/") {
        "node"
    } else if key.contains("/assignment/") {
        "block"
    } else if key.contains("/handle/") {
        "handle"
    } else if key.ends_with("/ipam/v2/config") {
        "config"
    } else if key.contains("/host/") {
        "affinity"
    } else {
        "other"
    }
}

impl CountingKv {
    fn record(&self, op: &str, key: &str) {
        let what = match op {
            "list" => match kind(key) {
                "pools" => "pools",
                "block" => "blocks",
                "handle" => "handles",
                "affinity" => "affinities",
                other => other,
            },
            _ => kind(key),
        };
        self.calls
            .lock()
            .expect("lock")
            .push((format!("{op} {what}"), key.to_string()));
    }

    /// The calls since the last take, as "<op> <kind>".
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().expect("lock"))
            .into_iter()
            .map(|(call, _)| call)
            .collect()
    }

    /// The calls since the last take, with their keys.
    fn take_keys(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.calls.lock().expect("lock"))
    }
}

impl Kv for CountingKv {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Revision)>> {
        self.record("get", key);
        self.inner.get(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>, Revision)>> {
        self.record("list", prefix);
        self.inner.list(prefix)
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Revision> {
        self.record("create", key);
        self.inner.create(key, value)
    }

    fn update(&self, key: &str, value: &[u8], revision: &Revision) -> Result<Revision> {
        self.record("update", key);
        self.inner.update(key, value, revision)
    }

    fn delete(&self, key: &str, revision: &Revision) -> Result<()> {
        self.record("delete", key);
        self.inner.delete(key, revision)
    }

    fn ping(&self) -> Result<()> {
        self.inner.ping()
    }
}

type Counted = KvStore<CountingKv>;

/// A store with `pools`, Calico's default IPAM config (as any running cluster has) and a
/// Node object for `n1`, with nothing counted yet.
fn store(pools: &[IpPool]) -> Counted {
    let store = KvStore::new(CountingKv::default());
    for p in pools {
        store.create_pool(p).expect("create pool");
    }
    store
        .create_ipam_config(&Default::default())
        .expect("create config");
    let node = serde_json::json!({
        "kind": "Node",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "n1", "labels": {"zone": "a"}},
        "spec": {},
    });
    store
        .kv
        .create(
            &calico_ipam::store::codec::node_key("n1"),
            node.to_string().as_bytes(),
        )
        .expect("create node");
    store.kv.take();
    store
}

/// What the CNI plugin asks for one container.
fn request(container: &str, num4: usize, num6: usize) -> AutoAssign {
    AutoAssign {
        num4,
        num6,
        handle_id: format!("net.{container}"),
        attrs: BTreeMap::from([
            ("node".to_string(), "n1".to_string()),
            ("namespace".to_string(), "default".to_string()),
            ("pod".to_string(), container.to_string()),
        ]),
        ..AutoAssign::default()
    }
}

/// A CNI DEL: the handle, then the legacy `<namespace>.<pod>` handle.
fn del(ipam: &Ipam<'_>, container: &str) {
    ipam.release_by_handle(&format!("net.{container}"))
        .expect("release");
    assert!(ipam
        .release_by_handle(&format!("default.{container}"))
        .is_err());
}

/// No key is read twice by one operation.
fn assert_no_repeated_reads(calls: &[(String, String)]) {
    let reads: Vec<&(String, String)> = calls
        .iter()
        .filter(|(c, _)| c.starts_with("get ") || c.starts_with("list "))
        .collect();
    for (i, read) in reads.iter().enumerate() {
        assert!(
            !reads[..i].contains(read),
            "{read:?} read twice in {calls:#?}"
        );
    }
}

#[test]
fn steady_state_add_on_a_node_that_owns_a_block() {
    let store = store(&[pool("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    ipam.auto_assign(&request("c0", 1, 0)).expect("first add");
    store.kv.take();

    let got = ipam.auto_assign(&request("c1", 1, 0)).expect("add");
    assert_eq!(got.ipv4.len(), 1);
    assert_eq!(
        store.kv.take(),
        [
            // Calico assigns only to a node it knows.
            "get node",
            "list pools",
            "list affinities",
            "get config",
            "list reservations",
            "get block",
            "create handle",
            "update block",
        ]
    );
}

#[test]
fn steady_state_dual_stack_add_reads_pools_and_config_once() {
    let store = store(&[pool("10.0.0.0/24", 26), pool("fd00::/120", 122)]);
    let ipam = Ipam::new(&store, "n1");
    ipam.auto_assign(&request("c0", 1, 1)).expect("first add");
    store.kv.take();

    let got = ipam.auto_assign(&request("c1", 1, 1)).expect("add");
    assert_eq!((got.ipv4.len(), got.ipv6.len()), (1, 1));
    let calls = store.kv.take_keys();
    assert_no_repeated_reads(&calls);
    let calls: Vec<&str> = calls.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        calls,
        [
            // Calico assigns only to a node it knows.
            "get node",
            "list pools",
            "list affinities",
            "get config",
            "list reservations",
            "get block",
            "create handle",
            "update block",
            // IPv6: the handle this request just created is updated without a re-read, and
            // the reservations listed for IPv4 serve IPv6 too.
            "list affinities",
            "get block",
            "update handle",
            "update block",
        ]
    );
}

#[test]
fn first_add_on_a_fresh_node_claims_without_repeated_reads() {
    let store = store(&[pool("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    let got = ipam.auto_assign(&request("c1", 1, 0)).expect("add");
    assert_eq!(got.ipv4.len(), 1);
    let calls = store.kv.take_keys();
    assert_no_repeated_reads(&calls);
    let calls: Vec<&str> = calls.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        calls,
        [
            // Calico assigns only to a node it knows.
            "get node",
            "list pools",
            "list affinities",
            "get config",
            "list reservations",
            "list blocks",
            // The claim: affinity pending, block, affinity confirmed.
            "create affinity",
            "create block",
            "update affinity",
            "create handle",
            "update block",
        ]
    );
}

#[test]
fn the_node_is_read_once_per_add_for_both_families_and_the_selectors() {
    let mut zoned = pool("10.0.0.0/24", 26);
    zoned.node_selector = "zone == 'a'".to_string();
    let mut zoned6 = pool("fd00::/120", 122);
    zoned6.node_selector = "zone == 'a'".to_string();
    let store = store(&[zoned, zoned6]);
    let ipam = Ipam::new(&store, "n1");
    ipam.auto_assign(&request("c0", 1, 1)).expect("first add");
    store.kv.take();

    ipam.auto_assign(&request("c1", 1, 1)).expect("add");
    let calls = store.kv.take();
    assert_eq!(
        calls.iter().filter(|c| *c == "get node").count(),
        1,
        "once for both families: {calls:?}"
    );

    // Requested pools are used whatever their selector, but the node must still exist.
    let mut req = request("c2", 1, 1);
    req.pools4 = vec![net("10.0.0.0/24")];
    req.pools6 = vec![net("fd00::/120")];
    ipam.auto_assign(&req).expect("add");
    let calls = store.kv.take();
    assert_eq!(
        calls.iter().filter(|c| *c == "get node").count(),
        1,
        "{calls:?}"
    );
}

#[test]
fn add_with_pools_already_listed_does_not_list_them_again() {
    let store = store(&[pool("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    ipam.auto_assign(&request("c0", 1, 0)).expect("first add");
    let pools = store.list_pools().expect("list");
    store.kv.take();

    ipam.auto_assign_with_pools(&request("c1", 1, 0), pools)
        .expect("add");
    assert_eq!(
        store.kv.take(),
        [
            "get node",
            "list affinities",
            "get config",
            "list reservations",
            "get block",
            "create handle",
            "update block",
        ]
    );
}

#[test]
fn del_of_a_live_container() {
    let store = store(&[pool("10.0.0.0/24", 26)]);
    let ipam = Ipam::new(&store, "n1");
    ipam.auto_assign(&request("c0", 1, 0)).expect("add");
    ipam.auto_assign(&request("c1", 1, 0)).expect("add");
    store.kv.take();

    del(&ipam, "c1");
    assert_eq!(
        store.kv.take(),
        [
            "get handle",
            "get block",
            "update block",
            "delete handle",
            // The legacy handle: almost always absent.
            "get handle",
        ]
    );
}

#[test]
fn del_of_the_last_container_of_a_block_checks_its_pool_once() {
    let store = store(&[pool("10.0.0.0/24", 26), pool("fd00::/120", 122)]);
    let ipam = Ipam::new(&store, "n1");
    ipam.auto_assign(&request("c1", 1, 1)).expect("add");
    store.kv.take();

    // Both blocks are left empty: whether the node may keep them depends on their pools
    // (listed once for both), and the all() selectors need no node labels.
    del(&ipam, "c1");
    let calls = store.kv.take_keys();
    assert_no_repeated_reads(&calls);
    let calls: Vec<&str> = calls.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        calls,
        [
            "get handle",
            "get block",
            "update block",
            "update handle",
            "list pools",
            "get block",
            "update block",
            "delete handle",
            "get handle",
        ]
    );
}
