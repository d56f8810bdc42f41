//! The fake Kubernetes API server, exercised over raw HTTP as a client would: every
//! semantic a datastore test relies on (and every refusal a real server would give).
#![allow(clippy::unwrap_used)] // a test should stop at the first surprise

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use cni_tests::kube_api::FakeApiServer;
use serde_json::{json, Value};

const CALICO: &str = "/apis/crd.projectcalico.org/v1";
const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";

/// A tiny client: answers are (status, JSON body) whatever the status.
struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(server: &FakeApiServer) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            agent,
            base: server.url(),
            token: Some(server.token().to_string()),
        }
    }

    fn without_token(mut self) -> Client {
        self.token = None;
        self
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        ct: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = ct {
            b = b.header("Content-Type", ct);
        }
        let resp = match body {
            Some(v) => self.agent.run(b.body(v.to_string()).unwrap()),
            None => self.agent.run(b.body(()).unwrap()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        (status, v)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, None)
    }
    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some("application/json"), Some(&body))
    }
    fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some("application/json"), Some(&body))
    }
    fn patch(&self, path: &str, ct: &str, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(ct), Some(&body))
    }
    fn delete(&self, path: &str, opts: Option<Value>) -> (u16, Value) {
        self.call("DELETE", path, Some("application/json"), opts.as_ref())
    }
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn pool(name: &str, cidr: &str) -> Value {
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": name}, "spec": {"cidr": cidr, "ipipMode": "Never"}})
}

fn block(name: &str) -> Value {
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
        "metadata": {"name": name},
        "spec": {"cidr": "10.244.1.64/30", "affinity": "host:n1", "allocations": [0, null, null, null],
            "unallocated": [1, 2, 3], "attributes": [{"handle_id": "h", "secondary": {"node": "n1"}}],
            "sequenceNumber": 7, "sequenceNumberForAllocation": {"0": 7}, "deleted": false,
            "strictAffinity": false}})
}

fn affinity(name: &str, node: &str, labels: Value) -> Value {
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "BlockAffinity",
        "metadata": {"name": name, "labels": labels},
        "spec": {"cidr": "10.244.1.64/26", "node": node, "state": "confirmed", "type": "host", "deleted": "false"}})
}

fn handle(name: &str) -> Value {
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle",
        "metadata": {"name": name}, "spec": {"handleID": name, "block": {"10.244.1.64/26": 1}, "deleted": false}})
}

/// Asserts a 422 Invalid Status that names `field` among its causes.
fn assert_invalid(resp: &(u16, Value), field: &str) {
    let (code, body) = resp;
    assert_eq!(*code, 422, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Invalid", "{body}");
    let causes = body["details"]["causes"].as_array().unwrap();
    assert!(
        causes.iter().any(|c| c["field"] == field),
        "no cause for {field}: {body}"
    );
    assert!(body["message"].as_str().unwrap().contains(field), "{body}");
}

// ---------------------------------------------------------------------------------
// CRUD, conflicts, preconditions
// ---------------------------------------------------------------------------------

#[test]
fn create_get_update_delete_with_server_fields() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);

    let (code, created) = c.post(&format!("{CALICO}/ippools"), pool("p1", "10.244.0.0/16"));
    assert_eq!(code, 201, "{created}");
    let meta = &created["metadata"];
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    assert_eq!(meta["generation"], 1);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    // CRD defaults are applied on create.
    assert_eq!(created["spec"]["nodeSelector"], "all()");
    assert_eq!(created["spec"]["assignmentMode"], "Automatic");

    let (code, got) = c.get(&format!("{CALICO}/ippools/p1"));
    assert_eq!(code, 200);
    assert_eq!(got, created);
    assert_eq!(server.get("ippools", "", "p1").unwrap(), created);

    // Update with the current resourceVersion: bumped rv and generation.
    let mut upd = got.clone();
    upd["spec"]["natOutgoing"] = json!(true);
    let (code, updated) = c.put(&format!("{CALICO}/ippools/p1"), upd.clone());
    assert_eq!(code, 200, "{updated}");
    assert!(rv(&updated) > rv(&created));
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    // Stale resourceVersion: 409 Conflict.
    let (code, status) = c.put(&format!("{CALICO}/ippools/p1"), upd.clone());
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "Conflict");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("the object has been modified"));

    // No resourceVersion: custom resources refuse unconditional updates.
    let mut no_rv = updated.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    assert_invalid(
        &c.put(&format!("{CALICO}/ippools/p1"), no_rv),
        "metadata.resourceVersion",
    );

    // An update that changes nothing writes nothing.
    let before = server.resource_version();
    let (code, same) = c.put(&format!("{CALICO}/ippools/p1"), updated.clone());
    assert_eq!(code, 200);
    assert_eq!(rv(&same), rv(&updated));
    assert_eq!(server.resource_version(), before);

    // Name in the body must match the URL.
    let mut renamed = updated.clone();
    renamed["metadata"]["name"] = json!("p2");
    assert_eq!(c.put(&format!("{CALICO}/ippools/p1"), renamed).0, 400);

    // Delete answers the object; then it is gone.
    let (code, deleted) = c.delete(&format!("{CALICO}/ippools/p1"), None);
    assert_eq!(code, 200);
    assert_eq!(deleted["metadata"]["name"], "p1");
    assert_eq!(c.get(&format!("{CALICO}/ippools/p1")).0, 404);
    assert_eq!(c.delete(&format!("{CALICO}/ippools/p1"), None).0, 404);
    assert_eq!(c.put(&format!("{CALICO}/ippools/p1"), updated).0, 404);
}

#[test]
fn not_found_is_a_kubernetes_status() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let (code, body) = c.get(&format!("{CALICO}/ipamblocks/10-0-0-0-26"));
    assert_eq!(code, 404);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "ipamblocks.crd.projectcalico.org \"10-0-0-0-26\" not found",
            "reason": "NotFound", "code": 404,
            "details": {"name": "10-0-0-0-26", "group": "crd.projectcalico.org", "kind": "ipamblocks"}})
    );
    let (code, body) = c.get("/api/v1/namespaces/default/pods/nope");
    assert_eq!(code, 404);
    assert_eq!(body["message"], "pods \"nope\" not found");
    assert!(body["details"].get("group").is_none());
    // Unknown resources and cluster-scoped kinds under a namespace do not exist.
    assert_eq!(c.get(&format!("{CALICO}/nosuchthings")).0, 404);
    assert_eq!(
        c.get(&format!("{CALICO}/namespaces/default/ippools")).0,
        404
    );
}

#[test]
fn create_conflicts_and_refusals() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let url = format!("{CALICO}/ipamhandles");
    assert_eq!(c.post(&url, handle("h1")).0, 201);
    let (code, body) = c.post(&url, handle("h1"));
    assert_eq!(code, 409);
    assert_eq!(body["reason"], "AlreadyExists");
    assert_eq!(
        body["message"],
        "ipamhandles.crd.projectcalico.org \"h1\" already exists"
    );

    // A resourceVersion on create: the real server's storage refuses it (500).
    let mut with_rv = handle("h2");
    with_rv["metadata"]["resourceVersion"] = json!("5");
    let (code, body) = c.post(&url, with_rv);
    assert_eq!(code, 500);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("resourceVersion should not be set"));

    // TypeMeta: missing kind or wrong apiVersion are decode errors, a wrong kind is invalid.
    let mut no_kind = handle("h3");
    no_kind.as_object_mut().unwrap().remove("kind");
    assert_eq!(c.post(&url, no_kind).0, 400);
    let mut wrong_av = handle("h3");
    wrong_av["apiVersion"] = json!("crd.projectcalico.org/v2");
    assert_eq!(c.post(&url, wrong_av).0, 400);
    let mut wrong_kind = handle("h3");
    wrong_kind["kind"] = json!("IPAMBlock");
    assert_invalid(&c.post(&url, wrong_kind), "kind");

    // Names are DNS-1123 subdomains; none at all needs generateName.
    assert_invalid(&c.post(&url, handle("Upper-Case")), "metadata.name");
    assert_invalid(&c.post(&url, handle(&"a".repeat(254))), "metadata.name");
    let mut anonymous = handle("x");
    anonymous["metadata"] = json!({});
    assert_invalid(&c.post(&url, anonymous), "metadata.name");
    let mut generated = handle("x");
    generated["metadata"] = json!({"generateName": "gen-"});
    let (code, body) = c.post(&url, generated);
    assert_eq!(code, 201);
    let name = body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let mut bad_meta = handle("x");
    bad_meta["metadata"] = json!("x");
    assert_eq!(c.post(&url, bad_meta).0, 400);

    // Client-set uid and creationTimestamp are replaced.
    let mut forged = handle("h4");
    forged["metadata"]["uid"] = json!("forged");
    forged["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    let (_, body) = c.post(&url, forged);
    assert_ne!(body["metadata"]["uid"], "forged");
    assert_ne!(
        body["metadata"]["creationTimestamp"],
        "2000-01-01T00:00:00Z"
    );

    // Writes of core kinds other than pod patches are not served.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    assert_eq!(c.post("/api/v1/namespaces/default/pods", pod).0, 405);
}

#[test]
fn uid_preconditions_on_update_and_delete() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let url = format!("{CALICO}/blockaffinities/n1-10-244-1-64-26");
    let stored = server.put(
        "blockaffinities",
        affinity("n1-10-244-1-64-26", "n1", json!({})),
    );
    let uid = stored["metadata"]["uid"].as_str().unwrap().to_string();

    // PUT with another object's uid: precondition failure.
    let mut other = stored.clone();
    other["metadata"]["uid"] = json!("11111111-2222-4333-8444-555555555555");
    let (code, body) = c.put(&url, other);
    assert_eq!(code, 409);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("Precondition failed: UID"));

    // DELETE with a wrong uid or a stale resourceVersion: 409; nothing deleted.
    let (code, body) = c.delete(
        &url,
        Some(
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "wrong"}}),
        ),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("UID in precondition: wrong"));
    let (code, body) = c.delete(
        &url,
        Some(json!({"preconditions": {"uid": uid, "resourceVersion": "999"}})),
    );
    assert_eq!(code, 409);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("ResourceVersion in precondition: 999"));
    assert!(server
        .get("blockaffinities", "", "n1-10-244-1-64-26")
        .is_some());

    // The soft-delete protocol of §7.1: update deleted=true, then delete with rv + uid.
    let mut soft = stored.clone();
    soft["spec"]["deleted"] = json!("true");
    let (code, soft) = c.put(&url, soft);
    assert_eq!(code, 200);
    let opts = json!({"preconditions": {"uid": uid, "resourceVersion": soft["metadata"]["resourceVersion"]}});
    let (code, body) = c.delete(&url, Some(opts));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["deleted"], "true");
    assert!(server
        .get("blockaffinities", "", "n1-10-244-1-64-26")
        .is_none());
}

#[test]
fn finalizers_delay_deletion_until_removed() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let mut h = handle("fin");
    h["metadata"]["finalizers"] = json!(["example.com/keep"]);
    let (_, created) = c.post(&format!("{CALICO}/ipamhandles"), h);
    let (code, body) = c.delete(&format!("{CALICO}/ipamhandles/fin"), None);
    assert_eq!(code, 200);
    assert!(body["metadata"]["deletionTimestamp"].is_string());
    assert!(rv(&body) > rv(&created));
    let mut cleared = body.clone();
    cleared["metadata"]["finalizers"] = json!([]);
    assert_eq!(c.put(&format!("{CALICO}/ipamhandles/fin"), cleared).0, 200);
    assert!(server.get("ipamhandles", "", "fin").is_none());
}

// ---------------------------------------------------------------------------------
// Lists and selectors
// ---------------------------------------------------------------------------------

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn list_with_label_and_field_selectors() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let l = |node: &str, v: &str| {
        json!({"projectcalico.org/hostname-hash": node.to_uppercase(), "projectcalico.org/ip-version": v,
            "projectcalico.org/affinity-type": "host"})
    };
    server.put("blockaffinities", affinity("a-n1-v4", "n1", l("n1", "4")));
    server.put("blockaffinities", affinity("b-n1-v6", "n1", l("n1", "6")));
    server.put("blockaffinities", affinity("c-n2-v4", "n2", l("n2", "4")));
    server.put("blockaffinities", affinity("d-nolabels", "n3", json!({})));

    let list = |sel: &str| {
        let q: String = sel
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                other => format!("%{other:02X}"),
            })
            .collect();
        c.get(&format!("{CALICO}/blockaffinities?labelSelector={q}"))
    };
    let (code, all) = c.get(&format!("{CALICO}/blockaffinities"));
    assert_eq!(code, 200);
    assert_eq!(all["kind"], "BlockAffinityList");
    assert_eq!(all["apiVersion"], "crd.projectcalico.org/v1");
    assert_eq!(
        all["metadata"]["resourceVersion"],
        server.resource_version().to_string()
    );
    assert_eq!(names(&all), ["a-n1-v4", "b-n1-v6", "c-n2-v4", "d-nolabels"]);
    assert_eq!(all["items"][0]["kind"], "BlockAffinity");

    let hh = "projectcalico.org/hostname-hash";
    let ipv = "projectcalico.org/ip-version";
    assert_eq!(names(&list(&format!("{hh}=N1")).1), ["a-n1-v4", "b-n1-v6"]);
    assert_eq!(names(&list(&format!("{hh}==N1,{ipv}=4")).1), ["a-n1-v4"]);
    assert_eq!(
        names(&list(&format!("{hh}!=N1")).1),
        ["c-n2-v4", "d-nolabels"]
    );
    assert_eq!(names(&list(hh).1), ["a-n1-v4", "b-n1-v6", "c-n2-v4"]);
    assert_eq!(names(&list(&format!("!{hh}")).1), ["d-nolabels"]);
    assert_eq!(names(&list(&format!("{hh} in (N2,N9)")).1), ["c-n2-v4"]);
    assert_eq!(
        names(&list(&format!("{ipv} notin (4)")).1),
        ["b-n1-v6", "d-nolabels"]
    );
    assert_eq!(names(&list(&format!("{ipv}>5")).1), ["b-n1-v6"]);
    assert_eq!(list("bad key!=x").0, 400);

    let (code, one) = c.get(&format!(
        "{CALICO}/blockaffinities?fieldSelector=metadata.name%3Dc-n2-v4"
    ));
    assert_eq!(code, 200);
    assert_eq!(names(&one), ["c-n2-v4"]);
    let (code, body) = c.get(&format!(
        "{CALICO}/blockaffinities?fieldSelector=spec.node%3Dn1"
    ));
    assert_eq!(code, 400, "custom resources only select on metadata fields");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("field label not supported"));

    // Paging.
    let (_, page1) = c.get(&format!("{CALICO}/blockaffinities?limit=3"));
    assert_eq!(names(&page1), ["a-n1-v4", "b-n1-v6", "c-n2-v4"]);
    assert_eq!(page1["metadata"]["remainingItemCount"], 1);
    let token = page1["metadata"]["continue"]
        .as_str()
        .unwrap()
        .replace('/', "%2F");
    let (_, page2) = c.get(&format!(
        "{CALICO}/blockaffinities?limit=3&continue={token}"
    ));
    assert_eq!(names(&page2), ["d-nolabels"]);
    assert!(page2["metadata"].get("continue").is_none());

    assert_eq!(
        c.get(&format!("{CALICO}/blockaffinities?watch=true")).0,
        400
    );
    // Every Calico kind the CNI lists is served, empty or not.
    for plural in [
        "ippools",
        "ipamblocks",
        "ipamhandles",
        "ipamconfigs",
        "clusterinformations",
        "ipreservations",
    ] {
        let (code, body) = c.get(&format!("{CALICO}/{plural}"));
        assert_eq!(code, 200, "{plural}");
        assert_eq!(body["items"], json!([]));
    }
}

#[test]
fn core_kinds_get_and_list() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    server.put(
        "nodes",
        json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}, "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]}}),
    );
    server.put(
        "namespaces",
        json!({"metadata": {"name": "ns1", "annotations": {"k": "v"}}}),
    );
    server.put(
        "pods",
        json!({"metadata": {"name": "p1", "namespace": "ns1"}, "spec": {"nodeName": "n1"}}),
    );
    server.put(
        "pods",
        json!({"metadata": {"name": "p2", "namespace": "ns2"}, "spec": {"nodeName": "n2"}}),
    );

    let (code, node) = c.get("/api/v1/nodes/n1");
    assert_eq!(code, 200);
    assert_eq!(node["kind"], "Node");
    assert_eq!(node["spec"]["podCIDRs"][1], "fd00:1::/64");
    assert_eq!(
        c.get("/api/v1/namespaces/ns1").1["metadata"]["annotations"]["k"],
        "v"
    );
    let (_, pods) = c.get("/api/v1/namespaces/ns1/pods");
    assert_eq!(names(&pods), ["p1"]);
    assert_eq!(pods["kind"], "PodList");
    let (_, pods) = c.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn2");
    assert_eq!(names(&pods), ["p2"]);
    let (_, nodes) = c.get("/api/v1/nodes?labelSelector=zone%3Da");
    assert_eq!(names(&nodes), ["n1"]);
}

// ---------------------------------------------------------------------------------
// Pod status patches
// ---------------------------------------------------------------------------------

fn seed_pod(server: &FakeApiServer) -> Value {
    server.put(
        "pods",
        json!({"metadata": {"name": "web", "namespace": "default",
                "annotations": {"keep": "me", "cni.projectcalico.org/containerID": "old"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"}}),
    )
}

#[test]
fn pod_status_patch_merges_annotations() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let pod = seed_pod(&server);
    let url = "/api/v1/namespaces/default/pods/web/status";

    // The ADD patch of §5.1: no preconditions.
    let add = json!({"metadata": {"annotations": {"cni.projectcalico.org/podIP": "10.244.1.5/32",
        "cni.projectcalico.org/podIPs": "10.244.1.5/32,fd00::5/128",
        "cni.projectcalico.org/containerID": "cid"}}});
    let (code, patched) = c.patch(url, STRATEGIC, add);
    assert_eq!(code, 200, "{patched}");
    let ann = &patched["metadata"]["annotations"];
    assert_eq!(ann["keep"], "me");
    assert_eq!(ann["cni.projectcalico.org/podIP"], "10.244.1.5/32");
    assert_eq!(ann["cni.projectcalico.org/containerID"], "cid");
    assert!(rv(&patched) > rv(&pod));
    assert_eq!(server.get("pods", "default", "web").unwrap(), patched);

    // The status subresource never changes the spec nor ownerReferences.
    let sneaky = json!({"spec": {"nodeName": "elsewhere"}, "metadata": {"ownerReferences": null},
        "status": {"phase": "Failed"}});
    let (code, after) = c.patch(url, MERGE, sneaky);
    assert_eq!(code, 200);
    assert_eq!(after["spec"]["nodeName"], "n1");
    assert_eq!(after["metadata"]["ownerReferences"][0]["name"], "rs");
    assert_eq!(after["status"]["phase"], "Failed");

    // The DEL patch: preconditions from a GET; null deletes a key.
    let del = |rv: &Value, uid: &Value| {
        json!({"metadata": {"resourceVersion": rv, "uid": uid,
            "annotations": {"cni.projectcalico.org/podIP": "", "cni.projectcalico.org/podIPs": "", "keep": null}}})
    };
    let uid = after["metadata"]["uid"].clone();
    let (code, body) = c.patch(
        url,
        STRATEGIC,
        del(&pod["metadata"]["resourceVersion"], &uid),
    );
    assert_eq!(code, 409, "stale resourceVersion: {body}");
    assert_eq!(body["reason"], "Conflict");
    let (code, body) = c.patch(
        url,
        STRATEGIC,
        del(&after["metadata"]["resourceVersion"], &json!("other-uid")),
    );
    assert_eq!(
        code, 422,
        "a different uid is a change of an immutable field: {body}"
    );
    let (code, done) = c.patch(
        url,
        STRATEGIC,
        del(&after["metadata"]["resourceVersion"], &uid),
    );
    assert_eq!(code, 200, "{done}");
    let ann = &done["metadata"]["annotations"];
    assert_eq!(ann["cni.projectcalico.org/podIP"], "");
    assert_eq!(ann["cni.projectcalico.org/containerID"], "cid");
    assert!(ann.get("keep").is_none());

    // Annotations must be strings; missing pods are 404; strategic merge directives are
    // not silently ignored.
    let (code, _) = c.patch(url, MERGE, json!({"metadata": {"annotations": {"n": 1}}}));
    assert_eq!(code, 422);
    assert_eq!(
        c.patch(
            "/api/v1/namespaces/default/pods/none/status",
            STRATEGIC,
            json!({})
        )
        .0,
        404
    );
    assert_eq!(
        c.patch(url, STRATEGIC, json!({"metadata": {"$patch": "replace"}}))
            .0,
        500
    );
    assert_eq!(
        c.patch(url, "application/apply-patch+yaml", json!({})).0,
        415
    );

    // Through the main resource: metadata may change, the spec may not, status is kept.
    let main = "/api/v1/namespaces/default/pods/web";
    let (code, body) = c.patch(
        main,
        MERGE,
        json!({"metadata": {"labels": {"l": "v"}}, "status": {"phase": "Pending"}}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["labels"]["l"], "v");
    assert_eq!(body["status"]["phase"], "Failed");
    assert_invalid(
        &c.patch(main, MERGE, json!({"spec": {"nodeName": "n2"}})),
        "spec",
    );
    // Namespaces and nodes are read-only here.
    server.put("nodes", json!({"metadata": {"name": "n1"}}));
    assert_eq!(c.patch("/api/v1/nodes/n1", MERGE, json!({})).0, 405);
    // A namespaced kind has no object path outside a namespace.
    assert_eq!(c.get("/api/v1/pods/web").0, 404);
}

#[test]
fn ippool_status_subresource() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let (_, created) = c.post(&format!("{CALICO}/ippools"), pool("p", "10.5.0.0/16"));
    let cond = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Ok",
        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    // /status changes the status only, and does not bump the generation.
    let mut with_status = created.clone();
    with_status["status"] = cond.clone();
    with_status["spec"]["natOutgoing"] = json!(true);
    let (code, body) = c.put(&format!("{CALICO}/ippools/p/status"), with_status);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], cond);
    assert!(body["spec"].get("natOutgoing").is_none());
    assert_eq!(body["metadata"]["generation"], 1);
    // Status is validated like the rest.
    let bad = json!({"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}});
    assert_invalid(
        &c.patch(&format!("{CALICO}/ippools/p/status"), MERGE, bad),
        "status.conditions[0].status",
    );
    // The main resource keeps the status whatever the body says.
    let mut main = body.clone();
    main["status"] = json!({});
    main["spec"]["natOutgoing"] = json!(true);
    let (code, body) = c.put(&format!("{CALICO}/ippools/p"), main);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], cond);
    assert_eq!(body["metadata"]["generation"], 2);
    // Kinds without a status subresource have no /status path.
    server.put("ipamhandles", handle("h"));
    assert_eq!(c.get(&format!("{CALICO}/ipamhandles/h/status")).0, 404);
}

#[test]
fn patches_of_custom_resources() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    server.put("ipamblocks", block("10-244-1-64-30"));
    let url = format!("{CALICO}/ipamblocks/10-244-1-64-30");
    // Strategic merge is not served for custom resources.
    assert_eq!(
        c.patch(&url, STRATEGIC, json!({"spec": {"deleted": true}}))
            .0,
        415
    );
    let (code, body) = c.patch(&url, MERGE, json!({"spec": {"deleted": true}}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["deleted"], true);
    assert_eq!(body["metadata"]["generation"], 2);
    // A patch is validated like an update.
    assert_invalid(
        &c.patch(&url, MERGE, json!({"spec": {"strictAffinity": "no"}})),
        "spec.strictAffinity",
    );
    let ops = json!([{"op": "replace", "path": "/spec/sequenceNumber", "value": 8},
        {"op": "test", "path": "/spec/cidr", "value": "10.244.1.64/30"}]);
    let (code, body) = c.patch(&url, "application/json-patch+json", ops);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["sequenceNumber"], 8);
}

// ---------------------------------------------------------------------------------
// Schema validation and pruning, with the real CRDs
// ---------------------------------------------------------------------------------

#[test]
fn every_calico_kind_accepts_what_libcalico_writes() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let av = "crd.projectcalico.org/v1";
    let objects = [
        ("ippools", pool("default-ipv4-ippool", "10.244.0.0/16")),
        ("ipamblocks", block("10-244-1-64-30")),
        (
            "blockaffinities",
            affinity(
                "n1-10-244-1-64-26",
                "n1",
                json!({"projectcalico.org/ip-version": "4"}),
            ),
        ),
        ("ipamhandles", handle("k8s-pod-network.abc")),
        (
            "ipamconfigs",
            json!({"apiVersion": av, "kind": "IPAMConfig", "metadata": {"name": "default"},
            "spec": {"strictAffinity": false, "autoAllocateBlocks": true, "maxBlocksPerHost": 4}}),
        ),
        (
            "clusterinformations",
            json!({"apiVersion": av, "kind": "ClusterInformation",
            "metadata": {"name": "default"}, "spec": {"datastoreReady": true, "clusterGUID": "g"}}),
        ),
        (
            "ipreservations",
            json!({"apiVersion": av, "kind": "IPReservation", "metadata": {"name": "r"},
            "spec": {"reservedCIDRs": ["10.244.1.0/30", "10.244.1.9/32"]}}),
        ),
    ];
    for (plural, obj) in objects {
        let (code, body) = c.post(&format!("{CALICO}/{plural}"), obj.clone());
        assert_eq!(code, 201, "{plural}: {body}");
        // Nothing valid is pruned or altered.
        for (k, v) in obj["spec"].as_object().unwrap() {
            assert_eq!(&body["spec"][k], v, "{plural}: spec.{k}");
        }
    }
    // Nullable allocation slots survive.
    let b = server.get("ipamblocks", "", "10-244-1-64-30").unwrap();
    assert_eq!(b["spec"]["allocations"], json!([0, null, null, null]));
}

#[test]
fn required_fields_and_types_are_enforced() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);

    let mut b = block("10-0-0-0-30");
    b["spec"].as_object_mut().unwrap().remove("strictAffinity");
    assert_invalid(
        &c.post(&format!("{CALICO}/ipamblocks"), b),
        "spec.strictAffinity",
    );

    let mut a = affinity("n1-10-0-0-0-26", "n1", json!({}));
    a["spec"]["deleted"] = json!(false);
    let resp = c.post(&format!("{CALICO}/blockaffinities"), a);
    assert_invalid(&resp, "spec.deleted");
    assert_eq!(
        resp.1["details"]["causes"][0]["reason"],
        "FieldValueTypeInvalid"
    );
    assert!(resp.1["message"]
        .as_str()
        .unwrap()
        .contains("must be of type string"));

    let mut h = handle("h");
    h["spec"].as_object_mut().unwrap().remove("handleID");
    assert_invalid(
        &c.post(&format!("{CALICO}/ipamhandles"), h),
        "spec.handleID",
    );

    let mut h = handle("h");
    h["spec"]["block"]["10.0.0.0/26"] = json!("one");
    assert_invalid(
        &c.post(&format!("{CALICO}/ipamhandles"), h),
        "spec.block.10.0.0.0/26",
    );

    // Integers must be integral; 2.0 is one.
    let mut b = block("10-0-0-4-30");
    b["spec"]["unallocated"] = json!([1.5]);
    assert_invalid(
        &c.post(&format!("{CALICO}/ipamblocks"), b),
        "spec.unallocated[0]",
    );
    let mut b = block("10-0-0-4-30");
    b["spec"]["unallocated"] = json!([1, 2.0, 3]);
    assert_eq!(c.post(&format!("{CALICO}/ipamblocks"), b).0, 201);

    // A null array item is not pruned: it is rejected unless the items are nullable.
    let mut b = block("10-0-0-8-30");
    b["spec"]["unallocated"] = json!([null]);
    assert_invalid(
        &c.post(&format!("{CALICO}/ipamblocks"), b),
        "spec.unallocated[0]",
    );

    // Enums, bounds, formats, set lists.
    let mut p = pool("p", "10.1.0.0/16");
    p["spec"]["ipipMode"] = json!("Sometimes");
    let resp = c.post(&format!("{CALICO}/ippools"), p);
    assert_invalid(&resp, "spec.ipipMode");
    assert!(resp.1["message"]
        .as_str()
        .unwrap()
        .contains("Unsupported value: \"Sometimes\""));
    let mut p = pool("p", "10.1.0.0/16");
    p["spec"]["blockSize"] = json!(129);
    assert_invalid(&c.post(&format!("{CALICO}/ippools"), p), "spec.blockSize");
    assert_invalid(
        &c.post(&format!("{CALICO}/ippools"), pool("p", "10.1.0.0/33")),
        "spec.cidr",
    );
    let mut p = pool("p", "10.1.0.0/16");
    p["spec"]["allowedUses"] = json!(["Workload", "Workload"]);
    assert_invalid(
        &c.post(&format!("{CALICO}/ippools"), p),
        "spec.allowedUses[1]",
    );
    let cfg = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMConfig", "metadata": {"name": "default"},
        "spec": {"strictAffinity": false, "autoAllocateBlocks": true, "maxBlocksPerHost": -1}});
    assert_invalid(
        &c.post(&format!("{CALICO}/ipamconfigs"), cfg),
        "spec.maxBlocksPerHost",
    );
    let mut b = block("10-0-0-12-30");
    b["spec"]["affinityClaimTime"] = json!("yesterday");
    assert_invalid(
        &c.post(&format!("{CALICO}/ipamblocks"), b),
        "spec.affinityClaimTime",
    );
    let ci = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "ClusterInformation",
        "metadata": {"name": "default"}, "spec": {"datastoreReady": "yes"}});
    assert_invalid(
        &c.post(&format!("{CALICO}/clusterinformations"), ci),
        "spec.datastoreReady",
    );
    let mut a = affinity("n1-x", "n1", json!({"bad key!": "v"}));
    a["spec"]["node"] = json!("n1");
    assert_invalid(
        &c.post(&format!("{CALICO}/blockaffinities"), a),
        "metadata.labels",
    );
    let a = affinity("n1-y", "n1", json!({"k": "value with spaces"}));
    assert_invalid(
        &c.post(&format!("{CALICO}/blockaffinities"), a),
        "metadata.labels",
    );

    let r = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPReservation",
        "metadata": {"name": "r"}, "spec": {"reservedCIDRs": ["10.0.0.300/32"]}});
    assert_invalid(
        &c.post(&format!("{CALICO}/ipreservations"), r),
        "spec.reservedCIDRs[0]",
    );

    // Several errors are all reported.
    let (code, body) = c.post(
        &format!("{CALICO}/ipamhandles"),
        json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle", "metadata": {"name": "e"}, "spec": {}}),
    );
    assert_eq!(code, 422);
    assert_eq!(
        body["details"]["causes"].as_array().unwrap().len(),
        2,
        "{body}"
    );

    // Updates are validated too, including immutable fields.
    let (_, created) = c.post(&format!("{CALICO}/ippools"), pool("imm", "10.9.0.0/16"));
    let mut moved = created.clone();
    moved["spec"]["cidr"] = json!("10.8.0.0/16");
    let resp = c.put(&format!("{CALICO}/ippools/imm"), moved);
    assert_invalid(&resp, "spec.cidr");
    assert!(resp.1["message"]
        .as_str()
        .unwrap()
        .contains("CIDR cannot be changed"));
    assert!(server.list("ipamblocks").len() == 1);
}

#[test]
fn unknown_fields_are_pruned_not_rejected() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let mut p = pool("legacy", "10.3.0.0/16");
    p["spec"]["ipip"] = json!({"enabled": true, "mode": "always"});
    p["spec"]["nat-outgoing"] = json!(true);
    p["topLevel"] = json!(1);
    p["metadata"]["bogus"] = json!("x");
    p["metadata"]["labels"] = json!({"a": "b"});
    p["status"] = json!({"conditions": []});
    let (code, body) = c.post(&format!("{CALICO}/ippools"), p);
    assert_eq!(code, 201, "{body}");
    assert!(body["spec"].get("ipip").is_none());
    assert!(body["spec"].get("nat-outgoing").is_none());
    assert!(body.get("topLevel").is_none());
    assert!(body["metadata"].get("bogus").is_none());
    assert_eq!(body["metadata"]["labels"]["a"], "b");
    assert!(
        body.get("status").is_none(),
        "status is a subresource of IPPool"
    );
    assert_eq!(server.get("ippools", "", "legacy").unwrap(), body);

    // Unknown keys inside array items and additionalProperties maps keep their schema.
    let mut b = block("10-244-1-64-30");
    b["spec"]["attributes"][0]["extra"] = json!("x");
    b["spec"]["affinity"] = Value::Null; // non-nullable, no default: pruned
    let (code, body) = c.post(&format!("{CALICO}/ipamblocks"), b);
    assert_eq!(code, 201, "{body}");
    assert!(body["spec"]["attributes"][0].get("extra").is_none());
    assert_eq!(body["spec"]["attributes"][0]["secondary"]["node"], "n1");
    assert!(body["spec"].get("affinity").is_none());

    // A required field that is null is pruned, then missing.
    let mut b = block("10-244-1-68-30");
    b["spec"]["strictAffinity"] = Value::Null;
    assert_invalid(
        &c.post(&format!("{CALICO}/ipamblocks"), b),
        "spec.strictAffinity",
    );

    // A defaulted field that is null gets its default.
    let mut p = pool("nulls", "10.4.0.0/16");
    p["spec"]["nodeSelector"] = Value::Null;
    let (code, body) = c.post(&format!("{CALICO}/ippools"), p);
    assert_eq!(code, 201);
    assert_eq!(body["spec"]["nodeSelector"], "all()");
}

// ---------------------------------------------------------------------------------
// Auth, injected failures, request log, discovery, transport
// ---------------------------------------------------------------------------------

#[test]
fn bearer_token_when_required() {
    let server = FakeApiServer::start();
    server.put("nodes", json!({"metadata": {"name": "n1"}}));
    assert_eq!(
        Client::new(&server)
            .without_token()
            .get("/api/v1/nodes/n1")
            .0,
        200
    );
    server.set_require_token(true);
    let (code, body) = Client::new(&server).without_token().get("/api/v1/nodes/n1");
    assert_eq!(code, 401);
    assert_eq!(body["reason"], "Unauthorized");
    let mut wrong = Client::new(&server);
    wrong.token = Some("nope".into());
    assert_eq!(wrong.get("/api/v1/nodes/n1").0, 401);
    assert_eq!(Client::new(&server).get("/api/v1/nodes/n1").0, 200);
}

#[test]
fn token_requests_issue_tokens_that_expire() {
    let server = FakeApiServer::start();
    let path = "/api/v1/namespaces/kube-system/serviceaccounts/cni/token";
    let request = |seconds: Value| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": [], "expirationSeconds": seconds}})
    };
    let c = Client::new(&server);
    // The ServiceAccount must exist.
    assert_eq!(c.post(path, request(json!(86_400))).0, 404);
    server.put(
        "serviceaccounts",
        json!({"metadata": {"name": "cni", "namespace": "kube-system"}}),
    );
    assert_eq!(c.post(path, request(json!(599))).0, 422, "under 10 minutes");
    assert_eq!(c.call("GET", path, None, None).0, 405);

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (code, answer) = c.post(path, request(json!(7 * 24 * 3600)));
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["kind"], "TokenRequest");
    // Cut to the server's maximum, 48 h.
    assert_eq!(answer["spec"]["expirationSeconds"], 48 * 3600);
    let expiry = answer["status"]["expirationTimestamp"]
        .as_str()
        .expect("expirationTimestamp");
    let lo = cni_tests::kube_api::rfc3339(before + 48 * 3600);
    let hi = cni_tests::kube_api::rfc3339(before + 48 * 3600 + 5);
    assert!(lo.as_str() <= expiry && expiry <= hi.as_str(), "{expiry}");

    // With a short maximum, the token works while valid (also when tokens are required),
    // then gets 401 saying it expired, whether tokens are required or not.
    server.set_max_token_lifetime(std::time::Duration::from_secs(1));
    let (_, answer) = c.post(path, request(json!(3600)));
    assert_eq!(answer["spec"]["expirationSeconds"], 1);
    let mut issued = Client::new(&server);
    issued.token = Some(answer["status"]["token"].as_str().expect("token").into());
    server.set_require_token(true);
    assert_eq!(issued.get("/api/v1/namespaces/kube-system").0, 404);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for required in [true, false] {
        server.set_require_token(required);
        let (code, body) = issued.get("/api/v1/namespaces/kube-system");
        assert_eq!(code, 401);
        assert_eq!(body["reason"], "Unauthorized");
        assert!(body["message"]
            .as_str()
            .expect("message")
            .contains("expired"));
    }
    // The default token never expires.
    assert_eq!(
        Client::new(&server).get("/api/v1/namespaces/kube-system").0,
        404
    );
}

#[test]
fn injected_failures_then_recovery() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    let stored = server.put("ipamhandles", handle("h"));
    let path = format!("{CALICO}/ipamhandles/h");
    server.fail_next("PUT", &path, 2, 409);
    server.fail_next("GET", &path, 1, 500);
    for _ in 0..2 {
        let (code, body) = c.put(&path, stored.clone());
        assert_eq!(code, 409);
        assert_eq!(body["reason"], "Conflict");
    }
    let (code, body) = c.get(&path);
    assert_eq!(code, 500);
    assert_eq!(body["reason"], "InternalError");
    // Injected answers changed nothing; the third PUT is a real one.
    let mut upd = stored.clone();
    upd["spec"]["deleted"] = json!(true);
    assert_eq!(c.put(&path, upd).0, 200);
    assert_eq!(c.get(&path).0, 200);
    server.fail_next("*", "/api/v1/nodes/x", 1, 503);
    assert_eq!(c.get("/api/v1/nodes/x").0, 503);
    assert_eq!(c.get("/api/v1/nodes/x").0, 404);
}

#[test]
fn request_log_records_method_path_and_content_type() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    seed_pod(&server);
    c.get("/api/v1/namespaces/default/pods/web?resourceVersion=0");
    c.patch(
        "/api/v1/namespaces/default/pods/web/status",
        STRATEGIC,
        json!({"metadata": {}}),
    );
    let log = server.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/api/v1/namespaces/default/pods/web");
    assert_eq!(log[0].query, "resourceVersion=0");
    assert_eq!(log[0].status, 200);
    assert_eq!(log[1].method, "PATCH");
    assert_eq!(log[1].path, "/api/v1/namespaces/default/pods/web/status");
    assert_eq!(log[1].content_type.as_deref(), Some(STRATEGIC));
    assert_eq!(log[1].body, r#"{"metadata":{}}"#);
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[test]
fn discovery_and_kubeconfig() {
    let server = FakeApiServer::start();
    let c = Client::new(&server);
    assert_eq!(c.get("/version").1["major"], "1");
    assert_eq!(c.get("/api").1["versions"], json!(["v1"]));
    let (_, groups) = c.get("/apis");
    assert_eq!(groups["groups"][0]["name"], "crd.projectcalico.org");
    let (_, res) = c.get(CALICO);
    let ipam = res["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "ipamblocks")
        .unwrap();
    assert_eq!(ipam["kind"], "IPAMBlock");
    assert_eq!(ipam["namespaced"], false);
    let (_, core) = c.get("/api/v1");
    assert!(core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "pods/status"));

    let dir = tempfile::tempdir().unwrap();
    let path = server.kubeconfig(dir.path());
    let text = std::fs::read_to_string(path).unwrap();
    let cfg: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(cfg["clusters"][0]["cluster"]["server"], server.url());
    assert_eq!(cfg["users"][0]["user"]["token"], server.token());
    assert_eq!(cfg["current-context"], "fake");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = FakeApiServer::start();
    server.put("nodes", json!({"metadata": {"name": "n1"}}));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for _ in 0..3 {
        write!(s, "GET /api/v1/nodes/n1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "n1");
    }
    // A chunked body is read too.
    let body = r#"{"apiVersion":"crd.projectcalico.org/v1","kind":"IPAMHandle","metadata":{"name":"c"},"spec":{"handleID":"c","block":{}}}"#;
    write!(
        s,
        "POST {CALICO}/ipamhandles HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 201"), "{rest}");
    assert!(server.get("ipamhandles", "", "c").is_some());
}

#[test]
fn servers_are_independent_and_stop_on_drop() {
    let a = FakeApiServer::start();
    let b = FakeApiServer::start();
    a.put("nodes", json!({"metadata": {"name": "only-in-a"}}));
    assert!(b.get("nodes", "", "only-in-a").is_none());
    assert_ne!(a.token(), b.token());
    let addr = a.addr();
    drop(a);
    assert!(TcpStream::connect(addr).is_err(), "listener closed on drop");
}

#[test]
fn concurrent_compare_and_swap_loses_no_update() {
    let server = FakeApiServer::start();
    server.put("ipamhandles", handle("counter"));
    let path = format!("{CALICO}/ipamhandles/counter");
    let (threads, rounds) = (6, 10);
    let conflicts: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let c = Client::new(&server);
                let path = &path;
                scope.spawn(move || {
                    let mut conflicts = 0;
                    for _ in 0..rounds {
                        loop {
                            let (_, mut h) = c.get(path);
                            let n = h["spec"]["block"]["10.244.1.64/26"].as_i64().unwrap();
                            h["spec"]["block"]["10.244.1.64/26"] = json!(n + 1);
                            match c.put(path, h).0 {
                                200 => break,
                                409 => conflicts += 1,
                                other => panic!("PUT answered {other}"),
                            }
                        }
                    }
                    conflicts
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let h = server.get("ipamhandles", "", "counter").unwrap();
    assert_eq!(
        h["spec"]["block"]["10.244.1.64/26"],
        1 + threads * rounds,
        "{conflicts} conflicts"
    );
    assert_eq!(h["metadata"]["generation"], 1 + threads * rounds);
}
