//! The Kubernetes client against the strict fake API server: the answers the IPAM store
//! and the calico plugin build on (not found, conflicts, preconditions, selectors, 401/403,
//! a server that is down), and what the messages leave out.

use calico_ipam::k8s::client::PatchKind;
use calico_ipam::k8s::{KubeClient, KubeError, KubeSettings, Preconditions};
use cni_tests::kube_api::FakeApiServer;
use cni_tests::TestDir;
use serde_json::{json, Value};

const POOLS: &str = "/apis/crd.projectcalico.org/v1/ippools";

fn client_for(server: &FakeApiServer, dir: &TestDir) -> KubeClient {
    let settings = KubeSettings {
        kubeconfig: Some(server.kubeconfig(dir.path()).display().to_string()),
        ..KubeSettings::default()
    };
    KubeClient::connect(&settings).expect("client")
}

fn pool(name: &str, cidr: &str) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": name, "labels": {"tier": name}},
        "spec": {"cidr": cidr, "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never",
                 "natOutgoing": true, "nodeSelector": "all()"},
    })
}

#[test]
fn create_get_list_replace_delete_with_the_servers_semantics() {
    let server = FakeApiServer::start();
    let dir = TestDir::new().expect("dir");
    let client = client_for(&server, &dir);

    let created = client
        .create(POOLS, &pool("a", "10.1.0.0/16"))
        .expect("create");
    client
        .create(POOLS, &pool("b", "10.2.0.0/16"))
        .expect("create");
    assert!(matches!(
        client.create(POOLS, &pool("a", "10.1.0.0/16")),
        Err(KubeError::AlreadyExists(_))
    ));

    let got = client
        .get(&format!("{POOLS}/a"))
        .expect("get")
        .expect("exists");
    assert_eq!(got["spec"]["cidr"], "10.1.0.0/16");
    assert_eq!(client.get(&format!("{POOLS}/zz")).expect("get"), None);

    let all = client.list(POOLS, None).expect("list");
    assert_eq!(all.len(), 2);
    let only_b = client.list(POOLS, Some("tier=b")).expect("list");
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0]["metadata"]["name"], "b");

    // An update with the read resourceVersion wins once; the stale one conflicts.
    let mut update = got.clone();
    update["spec"]["natOutgoing"] = json!(false);
    client
        .replace(&format!("{POOLS}/a"), &update)
        .expect("update");
    assert!(matches!(
        client.replace(&format!("{POOLS}/a"), &update),
        Err(KubeError::Conflict(_))
    ));

    // A delete with another UID is refused; with the right one it goes, then 404.
    let wrong = Preconditions {
        uid: Some("not-the-uid".into()),
        resource_version: None,
    };
    assert!(matches!(
        client.delete(&format!("{POOLS}/a"), &wrong),
        Err(KubeError::Conflict(_))
    ));
    let right = Preconditions {
        uid: created["metadata"]["uid"].as_str().map(str::to_string),
        resource_version: None,
    };
    client
        .delete(&format!("{POOLS}/a"), &right)
        .expect("delete");
    assert!(matches!(
        client.delete(&format!("{POOLS}/a"), &right),
        Err(KubeError::NotFound(_))
    ));
    assert_eq!(client.round_trips(), server.requests().len());
}

#[test]
fn pod_status_is_patched_with_a_strategic_merge() {
    let server = FakeApiServer::start();
    let dir = TestDir::new().expect("dir");
    server.put(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "namespace": "default",
                            "annotations": {"keep": "me"}},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}),
    );
    let client = client_for(&server, &dir);
    let path = "/api/v1/namespaces/default/pods/web/status";
    client
        .patch(
            path,
            PatchKind::Strategic,
            &json!({"metadata": {"annotations": {"cni.projectcalico.org/podIP": "10.0.0.1/32"}}}),
        )
        .expect("patch");
    let pod = server.get("pods", "default", "web").expect("pod");
    assert_eq!(
        pod["metadata"]["annotations"]["cni.projectcalico.org/podIP"],
        "10.0.0.1/32"
    );
    assert_eq!(pod["metadata"]["annotations"]["keep"], "me");
}

#[test]
fn refused_credentials_and_missing_rbac_are_named_without_the_token() {
    let server = FakeApiServer::start();
    let dir = TestDir::new().expect("dir");
    let settings = KubeSettings {
        kubeconfig: Some(server.kubeconfig(dir.path()).display().to_string()),
        token: Some("expired-token-value".into()),
        ..KubeSettings::default()
    };
    server.set_require_token(true);
    let client = KubeClient::connect(&settings).expect("client");
    let err = client.get(&format!("{POOLS}/a")).expect_err("401");
    assert!(matches!(err, KubeError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("Unauthorized"), "{err}");
    assert!(!format!("{err} {err:?}").contains("expired-token-value"));

    let client = client_for(&server, &dir);
    server.fail_next("POST", "/apis/crd.projectcalico.org/v1/ipamconfigs", 1, 403);
    let err = client
        .create(
            "/apis/crd.projectcalico.org/v1/ipamconfigs",
            &json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMConfig",
                    "metadata": {"name": "default"},
                    "spec": {"strictAffinity": false, "autoAllocateBlocks": true}}),
        )
        .expect_err("403");
    let text = err.to_string();
    assert!(text.contains("\"create\""), "{text}");
    assert!(text.contains("ipamconfigs.crd.projectcalico.org"), "{text}");
    assert!(!text.contains(server.token()), "{text}");
}

#[test]
fn a_server_that_is_gone_is_unavailable_quickly() {
    let server = FakeApiServer::start();
    let dir = TestDir::new().expect("dir");
    let kubeconfig = server.kubeconfig(dir.path());
    drop(server);
    let settings = KubeSettings {
        kubeconfig: Some(kubeconfig.display().to_string()),
        ..KubeSettings::default()
    };
    let client = KubeClient::connect(&settings).expect("client");
    let started = std::time::Instant::now();
    let err = client.get(&format!("{POOLS}/a")).expect_err("down");
    assert!(matches!(err, KubeError::Unavailable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
