//! The calico plugin's log lines, end to end: Calico's shape (local time to the
//! millisecond, level, pid, the workload's fields), one info line per ADD naming what it
//! wired and one per DEL, every error the runtime gets logged with the same message, and
//! no secret from the config in any line. Plugins run inside a node namespace of the
//! test's own. Needs root.

use std::fs;
use std::path::PathBuf;

use cni_tests::pod::{Node, Pod, Stack};
use serde_json::{json, Value};

/// One parsed line: `YYYY-MM-DD HH:MM:SS.mmm [LEVEL][pid] plugin place: message fields`.
#[derive(Debug)]
struct Line {
    level: String,
    pid: u32,
    plugin: String,
    rest: String,
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a line, panicking with the line when it is not in Calico's shape.
fn parse(line: &str) -> Line {
    let bad = || -> ! { panic!("not in Calico's shape: {line:?}") };
    let (date, rest) = line.split_once(' ').unwrap_or_else(|| bad());
    let d: Vec<&str> = date.split('-').collect();
    if !(d.len() == 3 && digits(d[0], 4) && digits(d[1], 2) && digits(d[2], 2)) {
        bad();
    }
    let (time, rest) = rest.split_once(' ').unwrap_or_else(|| bad());
    let (hms, millis) = time.split_once('.').unwrap_or_else(|| bad());
    let t: Vec<&str> = hms.split(':').collect();
    if !(t.len() == 3 && t.iter().all(|p| digits(p, 2)) && digits(millis, 3)) {
        bad();
    }
    let rest = rest.strip_prefix('[').unwrap_or_else(|| bad());
    let (level, rest) = rest.split_once("][").unwrap_or_else(|| bad());
    if !["INFO", "WARNING", "ERROR", "DEBUG"].contains(&level) {
        bad();
    }
    let (pid, rest) = rest.split_once("] ").unwrap_or_else(|| bad());
    let pid: u32 = pid.parse().unwrap_or_else(|_| bad());
    let (plugin, rest) = rest.split_once(' ').unwrap_or_else(|| bad());
    // The place: a module path and a line number, then `: `.
    let (place, rest) = rest.split_once(": ").unwrap_or_else(|| bad());
    let (module, number) = place.split_once(' ').unwrap_or_else(|| bad());
    if !module.contains("::")
        && !module
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bad();
    }
    number.parse::<u32>().unwrap_or_else(|_| bad());
    Line {
        level: level.to_string(),
        pid,
        plugin: plugin.to_string(),
        rest: rest.to_string(),
    }
}

fn lines(log: &PathBuf) -> Vec<Line> {
    fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
        .lines()
        .map(parse)
        .collect()
}

fn calico(node: &Node, log: &PathBuf, level: &str) -> Value {
    let mut plugin = node.plugin(Stack::Dual);
    plugin["log_file_path"] = json!(log);
    plugin["log_level"] = json!(level);
    node.plugin_config("1.0.0", &plugin)
}

fn k8s_pod(node: &Node, id: &str, name: &str) -> Pod {
    node.k8s_pod(id, "logs-ns", name)
}

#[test]
fn add_and_del_each_log_one_info_line_naming_what_they_did() {
    let node = Node::new();
    let log = node.dir.path().join("log").join("cni.log");
    let id = "1095000000000000000000000000000a";
    let pod = k8s_pod(&node, id, "logs-web-0");
    let conf = calico(&node, &log, "info");
    let out = node.call("ADD", &conf, &pod.rt, &[]);
    assert!(out.ok(), "{}", out.describe());
    let result = out.json.expect("a result");
    let addresses: Vec<String> = result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .map(|ip| ip["address"].as_str().expect("address").to_string())
        .collect();
    assert_eq!(addresses.len(), 2, "{result}");
    let host_veth = result["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i.get("sandbox").is_none_or(|s| s == ""))
        .and_then(|i| i["name"].as_str())
        .expect("a host interface in the result")
        .to_string();

    let added = lines(&log);
    let info: Vec<&Line> = added
        .iter()
        .filter(|l| l.level == "INFO" && l.plugin == "calico" && l.rest.contains("ADD"))
        .collect();
    assert_eq!(info.len(), 1, "one info line per ADD: {added:#?}");
    let line = info[0];
    for address in &addresses {
        assert!(line.rest.contains(address.as_str()), "{address}: {line:?}");
    }
    assert!(line.rest.contains(&host_veth), "{host_veth}: {line:?}");
    for field in [
        format!("ContainerID=\"{id}\""),
        "InterfaceName=\"eth0\"".to_string(),
        "Namespace=\"logs-ns\"".to_string(),
        "Pod=\"logs-web-0\"".to_string(),
        format!("Network=\"{}\"", cni_tests::pod::NET),
    ] {
        assert!(line.rest.contains(&field), "{field}: {line:?}");
    }
    assert_ne!(line.pid, std::process::id(), "the child's pid: {line:?}");
    assert!(line.pid > 1, "{line:?}");

    let out = node.call("DEL", &conf, &pod.rt, &[]);
    assert!(out.ok(), "{}", out.describe());
    let all = lines(&log);
    let del: Vec<&Line> = all[added.len()..]
        .iter()
        .filter(|l| l.level == "INFO" && l.plugin == "calico" && l.rest.contains("DEL"))
        .collect();
    assert_eq!(del.len(), 1, "one info line per DEL: {all:#?}");
    assert!(
        del[0].rest.starts_with("DEL succeeded: released ")
            && del[0]
                .rest
                .contains("interface eth0 and its host-side veth")
            && del[0].rest.contains(&format!("ContainerID=\"{id}\"")),
        "{:?}",
        del[0]
    );
    assert_ne!(del[0].pid, line.pid, "another process");
    // The IPAM plugin's own line names the addresses it gave back.
    let ipam: Vec<&Line> = all[added.len()..]
        .iter()
        .filter(|l| l.plugin != "calico" && l.rest.starts_with("DEL succeeded"))
        .collect();
    assert_eq!(ipam.len(), 1, "{all:#?}");
    for address in &addresses {
        let ip = address.split('/').next().unwrap_or_default();
        assert!(ipam[0].rest.contains(ip), "{ip}: {:?}", ipam[0]);
    }
    node.assert_nothing_left(&pod, "after DEL");

    // DEL again: it succeeds and says nothing was left.
    let out = node.call("DEL", &conf, &pod.rt, &[]);
    assert!(out.ok(), "{}", out.describe());
    let again = lines(&log);
    let ipam: Vec<&Line> = again[all.len()..]
        .iter()
        .filter(|l| l.plugin != "calico" && l.rest.starts_with("DEL succeeded"))
        .collect();
    assert_eq!(ipam.len(), 1, "{again:#?}");
    assert!(
        ipam[0]
            .rest
            .starts_with("DEL succeeded: nothing was left to release"),
        "{:?}",
        ipam[0]
    );
}

#[test]
fn every_error_the_runtime_gets_is_logged_with_the_same_message() {
    let node = Node::new();
    let log = node.dir.path().join("log").join("cni.log");
    let id = "1095000000000000000000000000000b";
    let pod = k8s_pod(&node, id, "logs-bad-0");
    let mut conf = calico(&node, &log, "warning");
    conf["mtu"] = json!(70000);
    let out = node.call("ADD", &conf, &pod.rt, &[]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    let msg = out.json.as_ref().expect("an error object")["msg"]
        .as_str()
        .expect("msg")
        .to_string();
    assert!(msg.contains("mtu"), "{msg}");
    let logged = lines(&log);
    let errors: Vec<&Line> = logged.iter().filter(|l| l.level == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{logged:#?}");
    assert!(
        errors[0].rest.starts_with(&msg),
        "the runtime's message {msg:?}: {:?}",
        errors[0]
    );
    assert!(errors[0].rest.contains(&format!("ContainerID=\"{id}\"")));
    assert!(
        !logged.iter().any(|l| l.level == "INFO"),
        "no success line for a failed ADD: {logged:#?}"
    );

    // Before the config is read, the log is stderr: a missing CNI_IFNAME is refused there
    // with the message the runtime gets.
    let mut rt = pod.rt.clone();
    rt.ifname = String::new();
    let out = node.call("ADD", &conf, &rt, &[]);
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    let msg = out.json.as_ref().expect("an error object")["msg"]
        .as_str()
        .expect("msg")
        .to_string();
    let stderr: Vec<Line> = out
        .stderr
        .lines()
        .filter(|l| l.contains("[ERROR]["))
        .map(parse)
        .collect();
    assert_eq!(stderr.len(), 1, "{}", out.describe());
    assert!(stderr[0].rest.starts_with(&msg), "{msg:?}: {:?}", stderr[0]);
    node.assert_nothing_left(&pod, "after refused ADDs");
}

#[test]
fn a_token_in_the_config_never_reaches_the_log() {
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.logs-s3cr3t-t0k3n";
    let node = Node::new();
    let log = node.dir.path().join("log").join("cni.log");
    let id = "1095000000000000000000000000000c";
    let pod = k8s_pod(&node, id, "logs-secret-0");
    let mut conf = calico(&node, &log, "debug");
    conf["datastore_type"] = json!("kubernetes");
    conf["kubernetes"] = json!({"k8s_api_root": format!("http://logs-user:{TOKEN}@127.0.0.1:1")});
    conf["policy"] = json!({"type": "k8s", "k8s_auth_token": TOKEN});
    conf["k8s_auth_token"] = json!(format!("Bearer {TOKEN}"));
    let out = node.call("ADD", &conf, &pod.rt, &[]);
    let logged = fs::read_to_string(&log).expect("the log");
    assert!(!logged.is_empty(), "{}", out.describe());
    for line in logged.lines() {
        parse(line);
    }
    assert!(
        logged.contains("[ERROR][") && logged.contains("127.0.0.1:1"),
        "the failure is logged naming the server: {logged}"
    );
    for (what, text) in [
        ("stdout", &out.stdout),
        ("stderr", &out.stderr),
        ("log", &logged),
    ] {
        assert!(!text.contains(TOKEN), "{what} shows the token:\n{text}");
        assert!(!text.contains("logs-s3cr3t"), "{what}:\n{text}");
        assert!(
            !text.contains("logs-user"),
            "{what} shows the user:\n{text}"
        );
    }
    let _ = node.call("DEL", &conf, &pod.rt, &[]);
}
