//! The Kubernetes datastore's [`Store`] contract against the strict fake API server:
//! compare-and-swap on resourceVersion, create conflicts, the two-step delete (and a stale
//! revision refusing it), objects marked deleted read as missing (and deleted by the
//! reader), affinities listed by label without the deleted ones, and 401 / 403 / a server
//! that is down as errors that keep what the server said.

use calico_ipam::k8s::KubeSettings;
use calico_ipam::model::{AffinityState, BlockAffinity, IpamBlock, IpamConfig, IpamHandle};
use calico_ipam::store::kube::KubeStore;
use calico_ipam::store::{Store, StoreError};
use cni_tests::kube_api::FakeApiServer;
use cni_tests::TestDir;
use ipnetwork::IpNetwork;
use serde_json::json;

fn cidr(text: &str) -> IpNetwork {
    text.parse().expect("cidr")
}

fn store_for(server: &FakeApiServer, dir: &TestDir) -> KubeStore {
    let settings = KubeSettings {
        kubeconfig: Some(server.kubeconfig(dir.path()).display().to_string()),
        ..KubeSettings::default()
    };
    KubeStore::connect(&settings).expect("client")
}

fn handle(id: &str) -> IpamHandle {
    IpamHandle {
        handle_id: id.into(),
        block: [("10.0.0.0/26".to_string(), 1)].into(),
        deleted: false,
        extra: Default::default(),
    }
}

#[test]
fn kube_compare_and_swap_on_resource_version() {
    let server = FakeApiServer::start();
    let dir = TestDir::new().expect("dir");
    let store = store_for(&server, &dir);
    let block = IpamBlock::new(cidr("10.0.0.0/26"), Some("host:n1".into()), 1);
    let first = store.create_block(&block).expect("create");
    assert!(matches!(
        store.create_block(&block),
        Err(StoreError::AlreadyExists(_))
    ));
    let mut changed = block.clone();
    changed.sequence_number = 2;
    let second = store.update_block(&changed, &first).expect("update");
    assert_ne!(first, second);
    assert!(
        matches!(
            store.update_block(&changed, &first),
            Err(StoreError::Conflict(_))
        ),
        "a stale revision loses"
    );
    let read = store.get_block(&block.cidr).expect("get").expect("exists");
    assert_eq!(read.value, changed);
    assert_eq!(read.revision, second);
    assert!(store
        .get_block(&cidr("10.0.1.0/26"))
        .expect("get")
        .is_none());
    assert_eq!(store.list_blocks(true).expect("list").len(), 1);
    assert!(store.list_blocks(false).expect("list").is_empty());

    // A delete with a stale revision is refused and leaves the block as it is.
    assert!(matches!(
        store.delete_block(&block.cidr, &first),
        Err(StoreError::Conflict(_))
    ));
    assert!(store.get_block(&block.cidr).expect("get").is_some());
    store.delete_block(&block.cidr, &second).expect("delete");
    assert!(server.list("ipamblocks").is_empty());
}

#[test]
fn kube_an_object_marked_deleted_reads_as_missing_and_is_deleted() {
    let server = FakeApiServer::start();
    let dir = TestDir::new().expect("dir");
    let store = store_for(&server, &dir);
    store.create_handle(&handle("Net.C1")).expect("create");
    let mut stored = server
        .get("ipamhandles", "", "net.c1")
        .expect("stored lower-case");
    stored["spec"]["deleted"] = json!(true);
    server.put("ipamhandles", stored);
    assert!(
        store.list_handles().expect("list").is_empty(),
        "lists skip it"
    );
    assert!(store.get_handle("Net.C1").expect("get").is_none());
    assert!(
        server.get("ipamhandles", "", "net.c1").is_none(),
        "the reader finished the delete"
    );
}

#[test]
fn kube_affinities_by_label_without_the_deleted_ones() {
    let server = FakeApiServer::start();
    let dir = TestDir::new().expect("dir");
    let store = store_for(&server, &dir);
    let mine = BlockAffinity::host("n1", cidr("10.0.0.0/26"), AffinityState::Pending);
    let gone = BlockAffinity::host("n1", cidr("10.0.0.64/26"), AffinityState::Confirmed);
    let v6 = BlockAffinity::host("n1", cidr("fd00::/122"), AffinityState::Confirmed);
    let other = BlockAffinity::host("n2", cidr("10.0.0.128/26"), AffinityState::Confirmed);
    let revision = store.create_affinity(&mine).expect("create");
    for a in [&gone, &v6, &other] {
        store.create_affinity(a).expect("create");
    }
    let mut marked = server
        .get("blockaffinities", "", "n1-10-0-0-64-26")
        .expect("stored");
    marked["spec"]["deleted"] = json!("true");
    server.put("blockaffinities", marked);

    let listed = store.list_affinities("host", "n1", true).expect("list");
    assert_eq!(
        listed.iter().map(|a| a.value.cidr).collect::<Vec<_>>(),
        [mine.cidr]
    );
    let list = server
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with("/blockaffinities"))
        .expect("listed");
    assert!(list.query.contains("labelSelector="), "{}", list.query);

    let mut confirmed = mine.clone();
    confirmed.state = AffinityState::Confirmed;
    let revision = store
        .update_affinity(&confirmed, &revision)
        .expect("confirm");
    let read = store
        .get_affinity("host", "n1", &mine.cidr)
        .expect("get")
        .expect("exists");
    assert_eq!(read.value, confirmed);
    store
        .delete_affinity(&confirmed, &revision)
        .expect("delete");
    assert!(server
        .get("blockaffinities", "", "n1-10-0-0-0-26")
        .is_none());
}

#[test]
fn ipam_config_and_errors_that_say_what_to_fix() {
    let server = FakeApiServer::start();
    let dir = TestDir::new().expect("dir");
    let store = store_for(&server, &dir);
    assert!(store.get_ipam_config().expect("get").is_none());
    store
        .create_ipam_config(&IpamConfig::default())
        .expect("create");
    let read = store.get_ipam_config().expect("get").expect("exists");
    assert_eq!(read.value, IpamConfig::default());

    server.fail_next(
        "GET",
        "/apis/crd.projectcalico.org/v1/ipamhandles/h",
        1,
        403,
    );
    match store.get_handle("h") {
        Err(StoreError::Denied(m)) => {
            assert!(m.contains("\"get\"") && m.contains("ipamhandles"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    server.set_require_token(true);
    let settings = KubeSettings {
        kubeconfig: Some(server.kubeconfig(dir.path()).display().to_string()),
        token: Some("wrong".into()),
        ..KubeSettings::default()
    };
    let refused = KubeStore::connect(&settings).expect("client");
    match refused.ping() {
        Err(StoreError::Denied(m)) => assert!(m.contains("Unauthorized"), "{m}"),
        other => panic!("{other:?}"),
    }
    store.ping().expect("the kubeconfig's token works");
    let url = server.url();
    drop(server);
    match store.ping() {
        Err(StoreError::Unavailable(m)) => assert!(m.contains(&url), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// An affinity an older Calico wrote has no labels: read by name, or found when the node
/// has no labelled affinity at all, it gets them, and from then on the list by label finds
/// it.
#[test]
fn kube_an_unlabelled_affinity_is_labelled_when_read() {
    let server = FakeApiServer::start();
    let dir = TestDir::new().expect("dir");
    let store = store_for(&server, &dir);
    let unlabelled = |name: &str, cidr: &str| {
        json!({"metadata": {"name": name, "labels": {"team": "a"}},
               "spec": {"state": "confirmed", "node": "n1", "cidr": cidr, "deleted": "false"}})
    };
    server.put(
        "blockaffinities",
        unlabelled("n1-10-0-0-0-26", "10.0.0.0/26"),
    );
    let read = store
        .get_affinity("host", "n1", &cidr("10.0.0.0/26"))
        .expect("get")
        .expect("exists");
    assert_eq!(read.value.state, AffinityState::Confirmed);
    let stored = server
        .get("blockaffinities", "", "n1-10-0-0-0-26")
        .expect("stored");
    assert_eq!(stored["metadata"]["resourceVersion"], json!(read.revision));
    assert_eq!(
        stored["metadata"]["labels"]["team"], "a",
        "others' labels kept"
    );
    assert_eq!(
        stored["metadata"]["labels"]["projectcalico.org/ip-version"],
        "4"
    );
    // Labelled once: the next read writes nothing.
    server.clear_requests();
    store
        .get_affinity("host", "n1", &cidr("10.0.0.0/26"))
        .expect("get");
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());

    // Found by a list: no labelled IPv6 affinity, so all are looked at.
    server.put("blockaffinities", unlabelled("n1-fd00---122", "fd00::/122"));
    let listed = store.list_affinities("host", "n1", false).expect("list");
    assert_eq!(listed.len(), 1);
    let stored = server
        .get("blockaffinities", "", "n1-fd00---122")
        .expect("stored");
    assert_eq!(
        stored["metadata"]["labels"]["projectcalico.org/ip-version"],
        "6"
    );
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        json!(listed[0].revision)
    );
    server.clear_requests();
    assert_eq!(
        store
            .list_affinities("host", "n1", false)
            .expect("list")
            .len(),
        1
    );
    assert_eq!(server.requests().len(), 1, "by label alone now");
}
