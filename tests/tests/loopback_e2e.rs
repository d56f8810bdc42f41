//! The loopback plugin end to end, driven as a runtime drives it: a one-plugin conflist run
//! by the libcni-style runner inside a node namespace of the test's own, on a fresh pod
//! namespace. Needs root.

use cni_tests::fixtures::{plugin_dir, reference_plugin_dir};
use cni_tests::{ConfList, Runner, RuntimeConf, TestDir, TestNetns};
use serde_json::{json, Value};

struct Setup {
    dir: TestDir,
    _node: TestNetns,
    pod: TestNetns,
    runner: Runner,
}

fn setup(bin_dir: std::path::PathBuf) -> Setup {
    let dir = TestDir::new().expect("temp dir");
    let node = TestNetns::with_lo_up("lo-node").expect("node netns");
    let pod = TestNetns::new("lo-pod").expect("pod netns");
    let runner = Runner::new(vec![bin_dir], dir.cache_dir()).host_netns(Some(node.path().into()));
    Setup {
        dir,
        _node: node,
        pod,
        runner,
    }
}

fn list(version: &str) -> ConfList {
    let raw = json!({"cniVersion": version, "name": "lo-e2e",
                     "plugins": [{"type": "loopback"}]});
    ConfList::from_bytes(raw.to_string().as_bytes()).expect("conflist")
}

fn lo_flags(ns: &TestNetns) -> String {
    ns.exec_checked(&["ip", "-o", "link", "show", "lo"])
        .expect("ip link")
}

fn is_up(ns: &TestNetns) -> bool {
    lo_flags(ns).contains(",UP")
}

#[test]
fn add_brings_lo_up_check_passes_del_is_idempotent() {
    let s = setup(plugin_dir());
    let rt = RuntimeConf::new("lo-e2e-1", s.pod.path_str(), "eth0");
    let conf = list("1.1.0");
    assert!(!is_up(&s.pod), "a fresh namespace has lo down");

    let result = s.runner.add(&conf, &rt).expect("ADD");
    assert!(is_up(&s.pod), "ADD brings lo up: {}", lo_flags(&s.pod));
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(
        result["interfaces"],
        json!([{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": s.pod.path_str()}])
    );
    assert_eq!(
        result["ips"],
        json!([{"address": "127.0.0.1/8", "interface": 0},
               {"address": "::1/128", "interface": 0}])
    );
    // Traffic really flows on the loopback now.
    s.pod
        .exec_checked(&["ip", "route", "get", "127.0.0.1"])
        .expect("a local route to 127.0.0.1");

    s.runner.check(&conf, &rt).expect("CHECK after ADD");

    s.runner.del(&conf, &rt).expect("first DEL");
    assert!(!is_up(&s.pod), "DEL brings lo down");
    s.runner.del(&conf, &rt).expect("second DEL");
}

#[test]
fn check_fails_when_lo_was_set_down_behind_our_back() {
    let s = setup(plugin_dir());
    let rt = RuntimeConf::new("lo-e2e-2", s.pod.path_str(), "eth0");
    let conf = list("1.0.0");
    s.runner.add(&conf, &rt).expect("ADD");
    s.pod
        .exec_checked(&["ip", "link", "set", "lo", "down"])
        .expect("set lo down");
    let err = s.runner.check(&conf, &rt).expect_err("CHECK must notice");
    let cni = err.cni_error().expect("a CNI error object");
    assert_eq!(cni.msg, "loopback interface is down");
    s.runner.del(&conf, &rt).expect("DEL");
}

#[test]
fn del_succeeds_after_the_namespace_is_gone() {
    let s = setup(plugin_dir());
    let pod = TestNetns::new("lo-gone").expect("pod netns");
    let path = pod.path_str();
    let rt = RuntimeConf::new("lo-e2e-3", path.clone(), "eth0");
    let conf = list("1.0.0");
    s.runner.add(&conf, &rt).expect("ADD");
    drop(pod);
    assert!(!std::path::Path::new(&path).exists());
    s.runner.del(&conf, &rt).expect("DEL with the netns gone");
    s.runner.del(&conf, &rt).expect("DEL again");
    // And with no netns at all, as a runtime sends it once the sandbox is gone.
    let no_netns = RuntimeConf::new("lo-e2e-3", String::new(), "eth0");
    s.runner
        .del(&conf, &no_netns)
        .expect("DEL without CNI_NETNS");
}

#[test]
fn chained_after_another_plugin_passes_its_result_through() {
    let s = setup(plugin_dir());
    let rt = RuntimeConf::new("lo-e2e-4", s.pod.path_str(), "eth0");
    let raw = json!({"cniVersion": "0.4.0", "name": "lo-chain",
                     "plugins": [{"type": "loopback"}, {"type": "loopback"}]});
    let conf = ConfList::from_bytes(raw.to_string().as_bytes()).expect("conflist");
    let result: Value = s.runner.add(&conf, &rt).expect("ADD");
    // The second loopback got the first one's result as prevResult and returned it.
    assert_eq!(result["interfaces"][0]["name"], "lo");
    assert_eq!(result["ips"][0]["version"], "4");
    s.runner.check(&conf, &rt).expect("CHECK");
    s.runner.del(&conf, &rt).expect("DEL");
}

/// Ours and the reference binary leave the namespace in the same state and report the same
/// result for the same input.
#[test]
fn same_result_and_state_as_the_reference_loopback() {
    for (bin_dir, label) in [
        (plugin_dir(), "ours"),
        (reference_plugin_dir(), "reference"),
    ] {
        let s = setup(bin_dir);
        let rt = RuntimeConf::new("lo-diff", s.pod.path_str(), "eth0");
        let conf = list("1.0.0");
        let result = s.runner.add(&conf, &rt).expect(label);
        assert!(is_up(&s.pod), "{label}: lo up");
        let mut r = result.clone();
        // The reference prints an empty dns object; it means the same as none.
        if r["dns"] == json!({}) {
            r.as_object_mut().expect("object").remove("dns");
        }
        assert_eq!(
            r,
            json!({"cniVersion": "1.0.0",
                   "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00",
                                   "sandbox": s.pod.path_str()}],
                   "ips": [{"address": "127.0.0.1/8", "interface": 0},
                           {"address": "::1/128", "interface": 0}]}),
            "{label}"
        );
        s.runner.del(&conf, &rt).expect(label);
        assert!(!is_up(&s.pod), "{label}: lo down after DEL");
    }
}

/// `log_level` / `log_file_path` send the plugin's log to a file; stdout carries only the
/// result (the runner would fail to parse it otherwise).
#[test]
fn logs_go_to_log_file_path_never_stdout() {
    let s = setup(plugin_dir());
    let log_dir = s.dir.subdir("log").expect("log dir");
    let log_file = log_dir.join("cni.log");
    let raw = json!({"cniVersion": "1.0.0", "name": "lo-log",
                     "plugins": [{"type": "loopback", "log_level": "debug",
                                  "log_file_path": log_file}]});
    let conf = ConfList::from_bytes(raw.to_string().as_bytes()).expect("conflist");
    let rt = RuntimeConf::new("lo-e2e-log", s.pod.path_str(), "eth0");
    s.runner.add(&conf, &rt).expect("ADD");
    s.pod
        .exec_checked(&["ip", "link", "set", "lo", "down"])
        .expect("set lo down");
    assert!(s.runner.check(&conf, &rt).is_err());
    let log = std::fs::read_to_string(&log_file).expect("the log file exists");
    assert!(
        log.contains("[DEBUG][")
            && log.contains(" loopback ")
            && log.contains("ContainerID=\"lo-e2e-log\""),
        "{log}"
    );
    assert!(
        log.contains("[ERROR][") && log.contains("loopback interface is down"),
        "{log}"
    );
    s.runner.del(&conf, &rt).expect("DEL");
}

/// An older guide's config: no `cniVersion` (0.1.0, as libcni reads it) or 0.2.0. The
/// result is the 0.1/0.2 shape, one `ip4` and one `ip6`; for 0.1.0 exactly the reference's.
#[test]
fn configs_without_a_version_or_at_0_2_0_get_the_old_result_shape() {
    for (version, stdin) in [
        ("0.1.0", r#"{"name":"lo-old","type":"loopback"}"#),
        (
            "0.1.0",
            r#"{"cniVersion":"","name":"lo-old","type":"loopback"}"#,
        ),
        (
            "0.2.0",
            r#"{"cniVersion":"0.2.0","name":"lo-old","type":"loopback"}"#,
        ),
    ] {
        let mut outputs = Vec::new();
        for dir in [plugin_dir(), reference_plugin_dir()] {
            let pod = TestNetns::new("lo-old").expect("pod netns");
            let netns = pod.path_str();
            let env = [
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "lo-old-1"),
                ("CNI_NETNS", netns.as_str()),
                ("CNI_IFNAME", "lo"),
                ("CNI_PATH", "/nonexistent"),
            ];
            let out =
                cni_tests::fixtures::run_plugin(&dir.join("loopback"), &env, stdin.as_bytes())
                    .expect("loopback runs");
            assert_eq!(out.code, Some(0), "{dir:?} {stdin}: {}", out.stdout_str());
            assert!(is_up(&pod), "{dir:?}: lo is up");
            let result: Value = serde_json::from_slice(&out.stdout).expect("a result");
            outputs.push(result);
        }
        let ours = &outputs[0];
        assert_eq!(
            *ours,
            json!({"cniVersion": version, "ip4": {"ip": "127.0.0.1/8"},
                   "ip6": {"ip": "::1/128"}, "dns": {}}),
            "{stdin}"
        );
        // The reference prints 0.2.0 results in the new shape, labelled 0.2.0 (a libcni
        // quirk); for 0.1.0 it converts, and we agree with it byte for byte in JSON.
        if version == "0.1.0" {
            assert_eq!(*ours, outputs[1], "{stdin}: ours and the reference's");
        }
    }
}
