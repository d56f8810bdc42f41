//! calico-ipam on the Kubernetes datastore, what only that datastore has (spec §7.1, §10):
//! the custom resources exactly as Calico writes them (names, labels, JSON), read from the
//! fake API server independently of the plugin's code; the two-step soft delete and readers
//! finishing a half-done one; an API server that is down, refuses the token (401) or a verb
//! (403): CNI code 11 with a message that says what to fix, and nothing leaked; and the
//! number of API requests of an ADD and a DEL, which is the plugin's latency budget.
//!
//! The scenarios shared with the other datastores run on Kubernetes too (the
//! `kubernetes::` tests of the other `calico_ipam_*` files).

use std::collections::BTreeSet;
use std::net::IpAddr;

use cni_tests::fixtures::free_tcp_port;
use cni_tests::host_local::Outcome;
use cni_tests::ipam::{allocations, operator, Backend, IpamFixture, NET};
use cni_tests::kube_api::RecordedRequest;
use serde_json::{json, Value};

const NODE: &str = "node-a";
const POOL4: &str = "10.95.0.0/24";
const POOL6: &str = "fd00:95::/120";
const CRD: &str = "/apis/crd.projectcalico.org/v1";
/// base32 (RFC 4648, no padding) of SHA3-256("node-a"), computed outside this code base
/// (Python's `hashlib.sha3_256` and `base64.b32encode`).
const NODE_A_HASH: &str = "PY3TQE2E3XMTETLM2MJO3UITKPFB27YUJ4T4E5XGPEJON3SM4QAA";
const METADATA_ANNOTATION: &str = "projectcalico.org/metadata";

/// API requests of one warm ADD (a node that has a block with room): read the Node (a
/// node Calico does not know gets no address), list the pools, list the node's affinities
/// by label, read the IPAM config, list the IPReservations, read the block, create the
/// handle, update the block. Calico reads the affinity and the handle besides, and the Node
/// and the reservations once per IP family.
const WARM_ADD_REQUESTS: usize = 8;
/// One DEL: read the handle, read and update the block, mark the handle deleted and delete
/// it (the two-step delete), then look for the legacy `<namespace>.<pod>` handle.
const DEL_REQUESTS: usize = 6;
/// The first ADD on a node: the warm ADD's reads, all affinities listed once (the node has
/// none labelled: it may have some an older Calico wrote without labels), all blocks listed
/// once (to find a free one), then the claim: affinity created pending, block created,
/// affinity confirmed.
const FRESH_ADD_REQUESTS: usize = 12;

fn fixture() -> IpamFixture {
    let fx = IpamFixture::new(Backend::Kubernetes);
    fx.create_pool(POOL4, 26);
    fx.create_pool(POOL6, 122);
    fx
}

fn v4(fx: &IpamFixture, node: &str) -> Value {
    fx.conf("1.0.0", node, json!({"ipv4_pools": [POOL4]}))
}

fn dual(fx: &IpamFixture) -> Value {
    fx.conf(
        "1.0.0",
        NODE,
        json!({"ipv4_pools": [POOL4], "ipv6_pools": [POOL6], "assign_ipv6": "true"}),
    )
}

fn ok(out: &Outcome, what: &str) -> Vec<String> {
    assert_eq!(out.exit, Some(0), "{what}: {}", out.describe());
    out.addresses()
}

fn ip_of(address: &str) -> IpAddr {
    address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{address:?} is not an address"))
}

/// A CIDR as Calico names objects after it.
fn cidr_name(cidr: &str) -> String {
    cidr.replace(['.', ':', '/'], "-")
}

/// The stored object, which must exist.
fn stored(fx: &IpamFixture, plural: &str, name: &str) -> Value {
    fx.api().get(plural, "", name).unwrap_or_else(|| {
        let names: Vec<String> = fx
            .api()
            .list(plural)
            .iter()
            .map(|o| o["metadata"]["name"].to_string())
            .collect();
        panic!("no {plural}/{name}; there are {names:?}")
    })
}

/// The requests made to one object, as `METHOD status`.
fn requests_to(requests: &[RecordedRequest], path: &str) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.path == path)
        .map(|r| format!("{} {}", r.method, r.status))
        .collect()
}

fn request_line(r: &RecordedRequest) -> String {
    if r.query.is_empty() {
        format!("{} {}", r.method, r.path)
    } else {
        format!("{} {}?{}", r.method, r.path, r.query)
    }
}

fn body(r: &RecordedRequest) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{}: body not JSON: {e}", r.path))
}

#[test]
fn kube_custom_resources_are_exactly_calicos() {
    let fx = fixture();
    let id = "Sandbox-ABC";
    let args = [
        ("K8S_POD_NAMESPACE", "ns1"),
        ("K8S_POD_NAME", "pod1"),
        ("IgnoreUnknown", "1"),
    ];
    let got = ok(&fx.call("ADD", &dual(&fx), id, &args), "ADD");
    assert_eq!(got.len(), 2, "{got:?}");
    let blocks = fx.blocks();
    let cidr_of = |ip: IpAddr| {
        blocks
            .iter()
            .find(|b| cni_tests::ipam::contains(b.cidr(), ip))
            .map(|b| b.cidr().to_string())
            .unwrap_or_else(|| panic!("no block holds {ip}"))
    };
    let (cidr4, cidr6) = (cidr_of(ip_of(&got[0])), cidr_of(ip_of(&got[1])));
    let annotation = json!({ METADATA_ANNOTATION: "{\"creationTimestamp\":null}" });

    for (address, cidr, size) in [(&got[0], &cidr4, 64usize), (&got[1], &cidr6, 64)] {
        let block = stored(&fx, "ipamblocks", &cidr_name(cidr));
        assert_eq!(block["apiVersion"], "crd.projectcalico.org/v1");
        assert_eq!(block["kind"], "IPAMBlock");
        assert_eq!(block["metadata"]["annotations"], annotation, "{block}");
        let spec = block["spec"].as_object().expect("spec");
        let keys: BTreeSet<&str> = spec.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "affinity",
                "allocations",
                "attributes",
                "cidr",
                "deleted",
                "sequenceNumber",
                "sequenceNumberForAllocation",
                "strictAffinity",
                "unallocated",
            ]),
            "{block}"
        );
        assert_eq!(spec["cidr"], json!(cidr));
        assert_eq!(spec["affinity"], "host:node-a");
        assert_eq!(spec["strictAffinity"], false, "always written");
        assert_eq!(spec["deleted"], false);
        let ordinal = cni_tests::ipam::Block {
            key: String::new(),
            value: block["spec"].clone(),
        }
        .ordinal_of(ip_of(address))
        .expect("in block");
        let mut allocations = vec![Value::Null; size];
        allocations[ordinal] = json!(0);
        assert_eq!(
            spec["allocations"],
            Value::Array(allocations),
            "int or null"
        );
        let free: Vec<Value> = (0..size)
            .filter(|o| *o != ordinal)
            .map(|o| json!(o))
            .collect();
        assert_eq!(spec["unallocated"], Value::Array(free));
        let attributes = spec["attributes"].as_array().expect("attributes");
        assert_eq!(attributes.len(), 1, "{block}");
        assert_eq!(attributes[0]["handle_id"], format!("{NET}.{id}"));
        let secondary = attributes[0]["secondary"].as_object().expect("secondary");
        assert_eq!(
            secondary.keys().map(String::as_str).collect::<Vec<_>>(),
            ["namespace", "node", "pod", "timestamp"]
        );
        assert_eq!(secondary["node"], NODE);
        assert_eq!(secondary["namespace"], "ns1");
        assert_eq!(secondary["pod"], "pod1");
        let seq = spec["sequenceNumber"].as_u64().expect("a number");
        assert_eq!(
            spec["sequenceNumberForAllocation"],
            json!({ ordinal.to_string(): seq - 1 }),
            "the block's number before the write that allocated it"
        );

        let v = if cidr.contains(':') { "6" } else { "4" };
        let affinity = stored(
            &fx,
            "blockaffinities",
            &format!("{NODE}-{}", cidr_name(cidr)),
        );
        assert_eq!(affinity["kind"], "BlockAffinity");
        assert_eq!(
            affinity["metadata"]["labels"],
            json!({"projectcalico.org/hostname-hash": NODE_A_HASH,
                   "projectcalico.org/affinity-type": "host",
                   "projectcalico.org/ip-version": v})
        );
        assert_eq!(affinity["metadata"]["annotations"], annotation);
        assert_eq!(
            affinity["spec"],
            json!({"state": "confirmed", "node": NODE, "type": "host", "cidr": cidr,
                   "deleted": "false"}),
            "deleted is a string in this CRD"
        );
    }

    let handle = stored(&fx, "ipamhandles", "ipam-e2e.sandbox-abc");
    assert_eq!(handle["kind"], "IPAMHandle");
    assert_eq!(handle["metadata"]["annotations"], annotation);
    assert_eq!(
        handle["spec"],
        json!({"handleID": "ipam-e2e.Sandbox-ABC", "block": {&cidr4: 1, &cidr6: 1},
               "deleted": false}),
        "named lower-case, the ID in its own case"
    );
    let config = stored(&fx, "ipamconfigs", "default");
    assert_eq!(
        config["spec"],
        json!({"strictAffinity": false, "autoAllocateBlocks": true}),
        "created with Calico's defaults when missing"
    );
    assert_eq!(config["metadata"]["annotations"], annotation);

    ok(&fx.call("DEL", &dual(&fx), id, &args), "DEL");
    assert!(fx
        .api()
        .get("ipamhandles", "", "ipam-e2e.sandbox-abc")
        .is_none());
    assert!(fx.api().list("ipamhandles").is_empty());
}

#[test]
fn kube_deletes_mark_the_object_then_delete_that_version() {
    let fx = fixture();
    ok(&fx.call("ADD", &v4(&fx, NODE), "c1", &[]), "ADD");
    let handle_path = format!("{CRD}/ipamhandles/ipam-e2e.c1");
    let before = stored(&fx, "ipamhandles", "ipam-e2e.c1");
    // An unaffine block holding one address of another node: the release that empties
    // it deletes it.
    fx.put(
        "/calico/ipam/v2/assignment/ipv4/block/10.95.0.192-26",
        &json!({"cidr": "10.95.0.192/26", "affinity": null,
                "allocations": std::iter::once(json!(0))
                    .chain(std::iter::repeat_n(Value::Null, 63)).collect::<Vec<_>>(),
                "unallocated": (1..64).collect::<Vec<_>>(),
                "attributes": [{"handle_id": "ipam-e2e.seeded", "secondary": {"node": "node-b"}}],
                "sequenceNumber": 5, "sequenceNumberForAllocation": {"0": 4}, "deleted": false})
        .to_string(),
    );
    fx.put(
        "/calico/ipam/v2/handle/ipam-e2e.seeded",
        &json!({"block": {"10.95.0.192/26": 1}, "deleted": false}).to_string(),
    );
    let seeded_block = stored(&fx, "ipamblocks", "10-95-0-192-26");
    fx.api().clear_requests();

    ok(&fx.call("DEL", &v4(&fx, NODE), "c1", &[]), "DEL c1");
    ok(&fx.call("DEL", &v4(&fx, NODE), "seeded", &[]), "DEL seeded");
    let requests = fx.api().requests();
    for (path, object) in [
        (handle_path, &before),
        (format!("{CRD}/ipamblocks/10-95-0-192-26"), &seeded_block),
    ] {
        let log: Vec<&RecordedRequest> = requests.iter().filter(|r| r.path == path).collect();
        let put = log
            .iter()
            .rposition(|r| r.method == "PUT")
            .unwrap_or_else(|| panic!("no PUT of {path}: {:?}", requests_to(&requests, &path)));
        let marked = body(log[put]);
        assert_eq!(marked["spec"]["deleted"], true, "{path}: {marked}");
        assert_eq!(log[put].status, 200);
        let delete = log.get(put + 1).unwrap_or_else(|| {
            panic!(
                "{path}: the DELETE follows the PUT: {:?}",
                requests_to(&requests, &path)
            )
        });
        assert_eq!(delete.method, "DELETE", "{path}");
        assert_eq!(delete.status, 200, "{path}");
        let preconditions = &body(delete)["preconditions"];
        assert_eq!(
            preconditions["uid"], object["metadata"]["uid"],
            "{path}: the UID precondition"
        );
        let marked_rv: u64 = marked["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("the PUT carries the revision read");
        let delete_rv: u64 = preconditions["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("the DELETE carries a resourceVersion");
        assert!(
            delete_rv > marked_rv,
            "{path}: the DELETE is of the marked version ({delete_rv}), not the one read \
             ({marked_rv})"
        );
    }
    assert!(fx.api().get("ipamblocks", "", "10-95-0-192-26").is_none());
    assert!(fx.api().list("ipamhandles").is_empty());
    allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn kube_readers_finish_a_half_done_delete() {
    // A handle marked deleted by a releaser that stopped before its DELETE: a reader
    // (CHECK) deletes it and reports it missing.
    let fx = fixture();
    ok(&fx.call("ADD", &v4(&fx, NODE), "c1", &[]), "ADD");
    let mut handle = stored(&fx, "ipamhandles", "ipam-e2e.c1");
    handle["spec"]["deleted"] = json!(true);
    let marked = fx.api().put("ipamhandles", handle);
    fx.api().clear_requests();
    fx.call("CHECK", &v4(&fx, NODE), "c1", &[])
        .refused(109, "CHECK of a handle being deleted");
    assert!(fx.api().get("ipamhandles", "", "ipam-e2e.c1").is_none());
    let delete = fx
        .api()
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .expect("the reader deletes it");
    assert_eq!(delete.path, format!("{CRD}/ipamhandles/ipam-e2e.c1"));
    assert_eq!(
        body(&delete)["preconditions"],
        json!({"uid": marked["metadata"]["uid"],
               "resourceVersion": marked["metadata"]["resourceVersion"]})
    );

    // A block marked deleted where this node would claim one: finished, then claimed anew.
    let fx = IpamFixture::new(Backend::Kubernetes);
    fx.create_pool("10.96.0.0/26", 26);
    fx.put(
        "/calico/ipam/v2/assignment/ipv4/block/10.96.0.0-26",
        &json!({"cidr": "10.96.0.0/26", "affinity": null,
                "allocations": vec![Value::Null; 64], "unallocated": (0..64).collect::<Vec<_>>(),
                "attributes": [], "sequenceNumber": 9, "sequenceNumberForAllocation": {},
                "deleted": true})
        .to_string(),
    );
    let old = stored(&fx, "ipamblocks", "10-96-0-0-26");
    let conf = fx.conf("1.0.0", NODE, json!({"ipv4_pools": ["10.96.0.0/26"]}));
    let got = ok(
        &fx.call("ADD", &conf, "c1", &[]),
        "ADD over a half-deleted block",
    );
    assert!(got[0].starts_with("10.96.0."), "{got:?}");
    let new = stored(&fx, "ipamblocks", "10-96-0-0-26");
    assert_ne!(
        new["metadata"]["uid"], old["metadata"]["uid"],
        "a new block"
    );
    assert_eq!(new["spec"]["affinity"], "host:node-a");
    assert_eq!(new["spec"]["deleted"], false);
    let deletes: Vec<Value> = fx
        .api()
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path == format!("{CRD}/ipamblocks/10-96-0-0-26"))
        .map(|r| body(r)["preconditions"]["uid"].clone())
        .collect();
    assert_eq!(deletes, [old["metadata"]["uid"].clone()]);
    allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn kube_an_api_server_that_is_down_is_try_again_later_and_leaks_nothing() {
    let fx = fixture();
    let conf = v4(&fx, NODE);
    ok(&fx.call("ADD", &conf, "c1", &[]), "ADD c1");
    let before = fx.snapshot();

    // Nothing listens.
    let dead = format!("http://127.0.0.1:{}", free_tcp_port().expect("port"));
    let mut down = conf.clone();
    down["kubernetes"]["k8s_api_root"] = json!(dead);
    for command in ["ADD", "DEL"] {
        let out = fx.call(command, &down, "c2", &[]);
        let msg = out.refused(11, command);
        assert!(msg.contains(&dead), "{command}: names the server: {msg}");
    }

    // The server fails (503) the block write of an ADD: the handle it counted first is
    // taken back.
    let block = fx.blocks().remove(0);
    fx.api().fail_next(
        "PUT",
        &format!("{CRD}/ipamblocks/{}", cidr_name(block.cidr())),
        1,
        503,
    );
    fx.call("ADD", &conf, "c3", &[])
        .refused(11, "ADD with the block write failing");
    assert_eq!(fx.snapshot(), before, "nothing leaked");
    assert!(!fx.handles().contains_key(&format!("{NET}.c3")));
    // And it works once the server is back.
    ok(&fx.call("ADD", &conf, "c3", &[]), "ADD c3 again");
    allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn kube_a_refused_token_is_try_again_later_saying_unauthorized() {
    let fx = fixture();
    ok(&fx.call("ADD", &v4(&fx, NODE), "c1", &[]), "ADD");
    fx.api().set_require_token(true);
    let mut expired = v4(&fx, NODE);
    expired["policy"] = json!({"k8s_auth_token": "an-expired-token"});
    let before = fx.snapshot();
    for (command, id) in [("ADD", "c2"), ("DEL", "c1")] {
        let out = fx.call(command, &expired, id, &[]);
        let msg = out.refused(11, command);
        println!("{command} with a refused token: {msg}");
        assert!(msg.contains("Unauthorized"), "{command}: {msg}");
        assert!(!msg.contains("an-expired-token"), "{command}: {msg}");
    }
    assert_eq!(fx.snapshot(), before, "nothing written");
    // The kubeconfig's own token is accepted.
    ok(
        &fx.call("ADD", &v4(&fx, NODE), "c2", &[]),
        "ADD with the right token",
    );
}

#[test]
fn kube_a_forbidden_verb_is_named_in_the_error() {
    // No IPAMConfig yet, and no RBAC to create it (spec §10.12, Calico #3776).
    let fx = fixture();
    fx.api()
        .fail_next("POST", &format!("{CRD}/ipamconfigs"), 1, 403);
    let conf = v4(&fx, NODE);
    let before = fx.snapshot();
    let out = fx.call("ADD", &conf, "c1", &[]);
    let msg = out.refused(11, "ADD without create on ipamconfigs");
    println!("ADD without create on ipamconfigs: {msg}");
    assert!(
        msg.contains("\"create\"") && msg.contains("ipamconfigs.crd.projectcalico.org"),
        "names the verb and the resource: {msg}"
    );
    assert_eq!(fx.snapshot(), before, "nothing written");

    // A node that has its block, without update on ipamblocks.
    ok(&fx.call("ADD", &v4(&fx, NODE), "c1", &[]), "ADD c1");
    let before = fx.snapshot();
    let block = fx.blocks().remove(0);
    fx.api().fail_next(
        "PUT",
        &format!("{CRD}/ipamblocks/{}", cidr_name(block.cidr())),
        1,
        403,
    );
    let msg = fx
        .call("ADD", &v4(&fx, NODE), "c2", &[])
        .refused(11, "ADD without update on ipamblocks");
    assert!(
        msg.contains("\"update\"") && msg.contains("ipamblocks.crd.projectcalico.org"),
        "names the verb and the resource: {msg}"
    );
    assert_eq!(
        fx.snapshot(),
        before,
        "the handle counted first is taken back"
    );
}

#[test]
fn kube_api_requests_per_add_and_del() {
    let fx = fixture();
    ok(&fx.call("ADD", &v4(&fx, NODE), "c0", &[]), "first ADD");

    fx.api().clear_requests();
    ok(&fx.call("ADD", &v4(&fx, NODE), "c1", &[]), "warm ADD");
    let warm_add = fx.api().requests();
    fx.api().clear_requests();
    ok(&fx.call("DEL", &v4(&fx, NODE), "c1", &[]), "DEL");
    let del = fx.api().requests();
    fx.api().clear_requests();
    ok(&fx.call("ADD", &v4(&fx, "node-b"), "b1", &[]), "fresh ADD");
    let fresh_add = fx.api().requests();

    for (what, requests, budget) in [
        ("ADD on a warm node", &warm_add, WARM_ADD_REQUESTS),
        ("DEL", &del, DEL_REQUESTS),
        ("first ADD on a fresh node", &fresh_add, FRESH_ADD_REQUESTS),
    ] {
        println!(
            "kubernetes datastore, {what}: {} API requests",
            requests.len()
        );
        for r in requests.iter() {
            println!("  {} -> {}", request_line(r), r.status);
        }
        assert!(
            requests.len() <= budget,
            "{what}: {} requests, the budget is {budget}: {:#?}",
            requests.len(),
            requests.iter().map(request_line).collect::<Vec<_>>()
        );
    }
    // No list of every block on a warm node, and each object read once.
    assert!(
        !warm_add
            .iter()
            .any(|r| r.method == "GET" && r.path == format!("{CRD}/ipamblocks")),
        "a warm ADD does not list the blocks"
    );
    let affinity_list = warm_add
        .iter()
        .find(|r| r.path == format!("{CRD}/blockaffinities"))
        .expect("the node's affinities are listed");
    assert!(
        affinity_list.query.contains("hostname-hash") && affinity_list.query.contains(NODE_A_HASH),
        "by label: {}",
        affinity_list.query
    );
    for requests in [&warm_add, &del, &fresh_add] {
        let reads: Vec<String> = requests
            .iter()
            .filter(|r| r.method == "GET")
            .map(request_line)
            .collect();
        let unique: BTreeSet<&String> = reads.iter().collect();
        assert_eq!(unique.len(), reads.len(), "read twice: {reads:#?}");
    }
}

/// A node whose block and affinity an older Calico wrote (no labels on the affinity): the
/// first ADD finds its block anyway and labels the affinity, so the next ADD lists it by
/// label like any other.
#[test]
fn kube_an_older_calicos_unlabelled_affinity_is_found_and_labelled() {
    let fx = fixture();
    fx.put(
        "/calico/ipam/v2/assignment/ipv4/block/10.95.0.128-26",
        &json!({"cidr": "10.95.0.128/26", "affinity": "host:node-a",
                "allocations": std::iter::once(json!(0))
                    .chain(std::iter::repeat_n(Value::Null, 63)).collect::<Vec<_>>(),
                "unallocated": (1..64).collect::<Vec<_>>(),
                "attributes": [{"handle_id": "ipam-e2e.old", "secondary": {"node": NODE}}],
                "sequenceNumber": 5, "sequenceNumberForAllocation": {"0": 4}, "deleted": false})
        .to_string(),
    );
    fx.put(
        "/calico/ipam/v2/handle/ipam-e2e.old",
        &json!({"block": {"10.95.0.128/26": 1}, "deleted": false}).to_string(),
    );
    fx.api().put(
        "blockaffinities",
        json!({"metadata": {"name": "node-a-10-95-0-128-26"},
               "spec": {"state": "confirmed", "node": NODE, "cidr": "10.95.0.128/26",
                        "deleted": "false"}}),
    );
    let got = ok(&fx.call("ADD", &v4(&fx, NODE), "c1", &[]), "ADD");
    assert_eq!(
        got,
        ["10.95.0.129/26"],
        "the node's own block, next address"
    );
    assert_eq!(fx.blocks().len(), 1, "no new block claimed");
    let affinity = stored(&fx, "blockaffinities", "node-a-10-95-0-128-26");
    assert_eq!(
        affinity["metadata"]["labels"]["projectcalico.org/hostname-hash"],
        NODE_A_HASH
    );
    fx.api().clear_requests();
    ok(&fx.call("ADD", &v4(&fx, NODE), "c2", &[]), "ADD");
    assert!(
        fx.api().requests().len() <= WARM_ADD_REQUESTS,
        "{:#?}",
        fx.api()
            .requests()
            .iter()
            .map(request_line)
            .collect::<Vec<_>>()
    );
    allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn operator_commands_work_on_kubernetes() {
    let fx = fixture();
    let conf = v4(&fx, NODE);
    let got = ok(&fx.call("ADD", &conf, "c1", &[]), "ADD");
    let conflist = fx.write_conflist(&conf);
    let out = operator(&conflist, &["show", "--show-blocks"]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains("| IP Pool ")
            && out.stdout.contains(POOL4)
            && out.stdout.contains("| Block "),
        "{}",
        out.stdout
    );
    let ip = ip_of(&got[0]).to_string();
    let out = operator(&conflist, &["release", "--ip", &ip]);
    assert_eq!(out.exit, Some(0), "{}", out.describe());
    let held = allocations(&fx.snapshot()).unwrap_or_else(|e| panic!("{e}"));
    assert!(held.is_empty(), "{held:?}");
}
