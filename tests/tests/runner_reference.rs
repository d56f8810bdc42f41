//! The runner against Debian's reference binaries (/usr/lib/cni): host-local through the
//! whole ADD, CHECK, DEL, DEL, GC cycle, each test in its own node and container
//! namespaces and its own directories. Needs root.

use std::fs;
use std::path::{Path, PathBuf};

use cni_tests::fixtures::reference_plugin_dir;
use cni_tests::{ConfList, GcAttachment, RunError, Runner, RuntimeConf, TestDir, TestNetns};
use serde_json::{json, Value};

struct Env {
    dir: TestDir,
    _node: TestNetns,
    ctr: TestNetns,
    runner: Runner,
    data: PathBuf,
}

fn env() -> Env {
    let dir = TestDir::new().expect("temp dir");
    let node = TestNetns::with_lo_up("rr-node").expect("node netns");
    let ctr = TestNetns::new("rr-ctr").expect("container netns");
    let data = dir.subdir("ipam").expect("data dir");
    let runner = Runner::new(vec![reference_plugin_dir()], dir.cache_dir())
        .host_netns(Some(node.path().to_path_buf()));
    Env {
        dir,
        _node: node,
        ctr,
        runner,
        data,
    }
}

fn host_local_list(data: &Path, version: &str) -> ConfList {
    let list = json!({
        "cniVersion": version,
        "name": "hl",
        "plugins": [{
            "type": "host-local",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.77.0.0/24"}]],
                "dataDir": data,
            }
        }]
    });
    ConfList::from_bytes(&serde_json::to_vec(&list).expect("json")).expect("conflist")
}

fn reserved(data: &Path) -> Vec<String> {
    let mut ips: Vec<String> = fs::read_dir(data.join("hl"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips
}

#[test]
fn host_local_add_check_del_del() {
    let e = env();
    let list = host_local_list(&e.data, "1.0.0");
    let rt = RuntimeConf::new("ctr-1", e.ctr.path_str(), "eth0");

    let result = e.runner.add(&list, &rt).expect("ADD");
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["ips"][0]["address"], "10.77.0.2/24");
    assert_eq!(reserved(&e.data), ["10.77.0.2"]);

    let cache_file = e.dir.cache_dir().join("results/hl-ctr-1-eth0");
    let cached: Value =
        serde_json::from_slice(&fs::read(&cache_file).expect("cache file")).expect("json");
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["netns"], e.ctr.path_str());
    assert_eq!(cached["result"], result);

    e.runner.check(&list, &rt).expect("CHECK");

    e.runner.del(&list, &rt).expect("DEL");
    assert!(reserved(&e.data).is_empty());
    assert!(!cache_file.exists());
    e.runner.del(&list, &rt).expect("second DEL");
}

#[test]
fn host_local_errors_keep_the_plugins_error_object() {
    let e = env();
    let list = ConfList::from_bytes(
        br#"{"cniVersion":"1.0.0","name":"hl","plugins":[{"type":"host-local","ipam":{"type":"host-local"}}]}"#,
    )
    .expect("conflist");
    let rt = RuntimeConf::new("ctr-1", e.ctr.path_str(), "eth0");
    let err = e.runner.add(&list, &rt).expect_err("no ranges");
    assert!(
        err.to_string()
            .starts_with("plugin type=\"host-local\" failed (add): "),
        "{err}"
    );
    let cni = err.cni_error().expect("plugin error object");
    assert!(!cni.msg.is_empty());
    assert!(e.runner.cached_result(&list, &rt).expect("ok").is_none());

    // A version the 1.1.1 binary does not speak comes back as its code 1.
    let newer = host_local_list(&e.data, "1.1.0");
    let err = e.runner.add(&newer, &rt).expect_err("1.1.0 unsupported");
    assert_eq!(err.cni_error().expect("cni").code.as_u32(), 1, "{err}");
}

#[test]
fn gc_deletes_only_attachments_that_are_no_longer_valid() {
    let e = env();
    let list = host_local_list(&e.data, "1.0.0");
    let gone = RuntimeConf::new("ctr-gone", e.ctr.path_str(), "eth0");
    let kept = RuntimeConf::new("ctr-kept", e.ctr.path_str(), "eth0");
    e.runner.add(&list, &gone).expect("ADD gone");
    e.runner.add(&list, &kept).expect("ADD kept");
    assert_eq!(reserved(&e.data), ["10.77.0.2", "10.77.0.3"]);

    let valid = [GcAttachment {
        container_id: "ctr-kept".into(),
        ifname: "eth0".into(),
    }];
    // 1.0.0: only the stale-attachment DEL happens, no GC verb reaches the 1.1.1 binary.
    e.runner.gc(&list, Some(&valid)).expect("GC");
    assert_eq!(reserved(&e.data), ["10.77.0.3"]);
    let left: Vec<String> = e
        .runner
        .cache()
        .attachments(None)
        .expect("cache")
        .into_iter()
        .map(|a| a.container_id)
        .collect();
    assert_eq!(left, ["ctr-kept"]);

    // At 1.1.0 the runner sends GC to the plugin, which the 1.1.1 binary refuses (code 4);
    // the stale DEL of the other attachment still happens first.
    let newer = host_local_list(&e.data, "1.1.0");
    let err = e.runner.gc(&newer, Some(&[])).expect_err("GC refused");
    let RunError::Multiple(errs) = &err else {
        panic!("{err:?}")
    };
    assert!(
        err.to_string().contains("failed to GC plugin host-local"),
        "{err}"
    );
    assert!(!errs.is_empty());
}
