//! `calico -t`, the installer's datastore connection test: exit 0 only when the datastore
//! the configuration names answers and says it is ready; otherwise a CNI error object that
//! says why, exit 1, and nothing written.

use std::io::Write;
use std::process::{Command, Stdio};

use cni_tests::fixtures::plugin_dir;
use cni_tests::kube_api::FakeApiServer;
use cni_tests::TestDir;
use serde_json::{json, Value};

/// Runs `calico -t` with `conf` on stdin: (exit code, stdout, stderr).
fn connection_test(conf: &Value) -> (i32, String, String) {
    let mut child = Command::new(plugin_dir().join("calico"))
        .arg("-t")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn calico -t");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kube_conf(kubeconfig: &std::path::Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
           "datastore_type": "kubernetes", "nodename": "node-1",
           "kubernetes": {"kubeconfig": kubeconfig},
           "ipam": {"type": "calico-ipam"}})
}

fn set_ready(api: &FakeApiServer, ready: Option<bool>) {
    api.remove("clusterinformations", "", "default");
    if let Some(ready) = ready {
        api.put(
            "clusterinformations",
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "ClusterInformation",
                   "metadata": {"name": "default"}, "spec": {"datastoreReady": ready}}),
        );
    }
}

/// The failure object: code 106, Calico's message, the cause in `details`.
fn failure(stdout: &str) -> Value {
    let err: Value = serde_json::from_str(stdout.trim()).expect("a CNI error object");
    assert_eq!(err["code"], 106, "{err}");
    assert_eq!(err["msg"], "data store connection failed", "{err}");
    err
}

#[test]
fn calico_t_on_kubernetes_passes_only_when_ready() {
    let dir = TestDir::new().expect("dir");
    let api = FakeApiServer::start();
    let conf = kube_conf(&api.kubeconfig(dir.path()));

    set_ready(&api, Some(true));
    let (code, out, err) = connection_test(&conf);
    assert_eq!(code, 0, "{out} {err}");
    let paths: Vec<String> = api.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("/clusterinformations/default")),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p == "/version"), "{paths:?}");
    assert!(
        api.requests().iter().all(|r| r.method == "GET"),
        "nothing is written"
    );

    for ready in [Some(false), None] {
        set_ready(&api, ready);
        let (code, out, _) = connection_test(&conf);
        assert_eq!(code, 1, "{ready:?}: {out}");
        let err = failure(&out);
        assert!(
            err["details"].as_str().unwrap_or("").contains("not ready"),
            "{err}"
        );
    }
}

#[test]
fn calico_t_names_refused_credentials_and_a_server_that_is_down() {
    let dir = TestDir::new().expect("dir");
    let api = FakeApiServer::start();
    set_ready(&api, Some(true));
    let kubeconfig = api.kubeconfig(dir.path());
    let mut conf = kube_conf(&kubeconfig);
    conf["policy"] = json!({"k8s_auth_token": "stale-token-1234"});
    api.set_require_token(true);
    let (code, out, err) = connection_test(&conf);
    assert_eq!(code, 1);
    let e = failure(&out);
    assert!(
        e["details"].as_str().unwrap_or("").contains("Unauthorized"),
        "{e}"
    );
    assert!(!out.contains("stale-token-1234") && !err.contains("stale-token-1234"));
    assert!(!out.contains(api.token()) && !err.contains(api.token()));

    drop(api);
    let (code, out, _) = connection_test(&kube_conf(&kubeconfig));
    assert_eq!(code, 1);
    let e = failure(&out);
    assert!(
        e["details"].as_str().unwrap_or("").contains("unreachable"),
        "{e}"
    );
}

#[test]
fn calico_t_on_the_local_datastore_and_without_one() {
    let dir = TestDir::new().expect("dir");
    let data = dir.path().join("data");
    let conf = json!({"cniVersion": "1.0.0", "name": "net", "type": "calico",
                      "datastore_type": "local", "local_data_dir": data,
                      "nodename": "node-1", "ipam": {"type": "calico-ipam"}});
    let (code, out, err) = connection_test(&conf);
    assert_eq!(
        code, 0,
        "no calico/node on a single node: ready ({out} {err})"
    );

    let info = data.join("calico/resources/v3/projectcalico.org/clusterinformations/default");
    std::fs::create_dir_all(info.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &info,
        json!({"kind": "ClusterInformation", "apiVersion": "projectcalico.org/v3",
               "metadata": {"name": "default"}, "spec": {"datastoreReady": false}})
        .to_string(),
    )
    .expect("write");
    let (code, out, _) = connection_test(&conf);
    assert_eq!(code, 1, "an explicit false stops: {out}");
    failure(&out);

    let bare = json!({"cniVersion": "1.0.0", "name": "net", "type": "calico",
                      "nodename": "node-1", "ipam": {"type": "host-local"}});
    let (code, out, _) = connection_test(&bare);
    assert_eq!(code, 1);
    let e = failure(&out);
    assert!(
        e["details"]
            .as_str()
            .unwrap_or("")
            .contains("datastore_type"),
        "{e}"
    );
}
