//! Bad input against the real `loopback` binary: each case gets the right CNI error code,
//! a message that says what to fix, exit status 1, and changes nothing (the namespace's `lo`
//! stays down).

use cni_tests::fixtures::{plugin_dir, run_plugin, TestNetns};
use serde_json::Value;

const GOOD_CONF: &str = r#"{"cniVersion":"1.0.0","name":"lo-net","type":"loopback"}"#;

struct Case {
    what: &'static str,
    /// Variables to change from a complete ADD environment; an empty value unsets.
    env: Vec<(&'static str, String)>,
    stdin: String,
    code: u64,
    /// Words the message (msg + details) must contain, so the operator knows what to fix.
    says: &'static [&'static str],
}

fn case(what: &'static str, code: u64, says: &'static [&'static str]) -> Case {
    Case {
        what,
        env: Vec::new(),
        stdin: GOOD_CONF.to_string(),
        code,
        says,
    }
}

impl Case {
    fn env(mut self, k: &'static str, v: &str) -> Case {
        self.env.push((k, v.to_string()));
        self
    }
    fn stdin(mut self, s: &str) -> Case {
        self.stdin = s.to_string();
        self
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("malformed JSON", 6, &["network config", "JSON"]).stdin(r#"{"cniVersion": "1.0.0","#),
        case("a JSON list instead of an object", 6, &["JSON object"]).stdin("[]"),
        case("empty stdin", 6, &["network config"]).stdin(""),
        case("unknown cniVersion", 1, &["9.9.9", "1.1.0"])
            .stdin(r#"{"cniVersion":"9.9.9","name":"lo-net","type":"loopback"}"#),
        case("a version between the spec's", 1, &["0.2.5", "0.1.0"])
            .stdin(r#"{"cniVersion":"0.2.5","name":"lo-net","type":"loopback"}"#),
        case("missing network name", 7, &["name"])
            .stdin(r#"{"cniVersion":"1.0.0","type":"loopback"}"#),
        case("hostile network name", 7, &["network name"])
            .stdin(r#"{"cniVersion":"1.0.0","name":"../../etc","type":"loopback"}"#),
        case("missing CNI_COMMAND", 4, &["CNI_COMMAND"]).env("CNI_COMMAND", ""),
        case("unknown CNI_COMMAND", 4, &["CNI_COMMAND", "ADD"]).env("CNI_COMMAND", "ATTACH"),
        case("missing CNI_CONTAINERID", 4, &["CNI_CONTAINERID"]).env("CNI_CONTAINERID", ""),
        case("missing CNI_IFNAME", 4, &["CNI_IFNAME"]).env("CNI_IFNAME", ""),
        case("missing CNI_NETNS on ADD", 4, &["CNI_NETNS"]).env("CNI_NETNS", ""),
        case("missing CNI_PATH", 4, &["CNI_PATH"]).env("CNI_PATH", ""),
        case("ifname of 16 bytes", 4, &["too long", "16"]).env("CNI_IFNAME", "eth0123456789abc"),
        case("ifname with a slash", 4, &["/", "CNI_IFNAME"]).env("CNI_IFNAME", "eth/0"),
        case("ifname ..", 4, &[".."]).env("CNI_IFNAME", ".."),
        case("ifname with a space", 4, &["whitespace"]).env("CNI_IFNAME", "eth 0"),
        case(
            "container id with a path",
            4,
            &["CNI_CONTAINERID", "letters"],
        )
        .env("CNI_CONTAINERID", "../../etc/passwd"),
        case("container id with shell", 4, &["CNI_CONTAINERID"])
            .env("CNI_CONTAINERID", "x;rm -rf /"),
        case("container id with a newline", 4, &["CNI_CONTAINERID"])
            .env("CNI_CONTAINERID", "abc\ndef"),
        case("container id starting with a dash", 4, &["CNI_CONTAINERID"])
            .env("CNI_CONTAINERID", "-rf"),
        case(
            "netns path that does not exist",
            3,
            &["does not exist", "CNI_NETNS"],
        )
        .env("CNI_NETNS", "/run/netns/no-such-namespace-for-sure"),
        case(
            "netns path that is not a namespace",
            4,
            &["not a network namespace"],
        )
        .env("CNI_NETNS", "/etc/hostname"),
        case("CHECK on a pre-0.4.0 config", 1, &["CHECK", "0.4.0"])
            .env("CNI_COMMAND", "CHECK")
            .stdin(r#"{"cniVersion":"0.3.1","name":"lo-net","type":"loopback"}"#),
        case("malformed CNI_ARGS", 4, &["CNI_ARGS"]).env("CNI_ARGS", "K8S_POD_NAME"),
        case("prevResult that is not a result", 6, &["prevResult"]).stdin(
            r#"{"cniVersion":"1.0.0","name":"lo-net","type":"loopback",
                "prevResult":{"ips":[{"address":"not-an-ip"}]}}"#,
        ),
    ]
}

fn lo_state(ns: &TestNetns) -> String {
    ns.exec_checked(&["ip", "-o", "link", "show", "lo"])
        .expect("ip link show lo")
}

#[test]
fn every_bad_input_gets_a_cni_error_and_changes_nothing() {
    let ns = TestNetns::new("badin").expect("netns");
    let before = lo_state(&ns);
    assert!(before.contains("state DOWN"), "fresh netns: {before}");
    let binary = plugin_dir().join("loopback");
    let netns = ns.path_str();
    let mut failures = Vec::new();
    for c in cases() {
        let mut env: Vec<(&str, String)> = vec![
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", "bad-input-test".into()),
            ("CNI_NETNS", netns.clone()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", plugin_dir().display().to_string()),
        ];
        for (k, v) in &c.env {
            env.retain(|(ek, _)| ek != k);
            if !v.is_empty() {
                env.push((k, v.clone()));
            }
        }
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = run_plugin(&binary, &env_ref, c.stdin.as_bytes()).expect("run loopback");
        let parsed: Result<Value, _> = serde_json::from_slice(&out.stdout);
        let problem = match (&out.code, &parsed) {
            (Some(1), Ok(err)) => {
                let text = format!(
                    "{} {}",
                    err["msg"].as_str().unwrap_or_default(),
                    err["details"].as_str().unwrap_or_default()
                );
                let missing: Vec<_> = c.says.iter().filter(|w| !text.contains(*w)).collect();
                if err["code"].as_u64() != Some(c.code) {
                    Some(format!(
                        "code {} instead of {}: {text}",
                        err["code"], c.code
                    ))
                } else if !missing.is_empty() {
                    Some(format!("message {text:?} does not mention {missing:?}"))
                } else {
                    None
                }
            }
            _ => Some(format!(
                "exit {:?}, stdout {:?}, stderr {:?}",
                out.code,
                out.stdout_str(),
                out.stderr_str()
            )),
        };
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", c.what));
        }
        assert_eq!(lo_state(&ns), before, "{} changed the namespace", c.what);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn version_answers_without_stdin_or_other_variables() {
    let out = run_plugin(
        &plugin_dir().join("loopback"),
        &[("CNI_COMMAND", "VERSION")],
        b"",
    )
    .expect("run loopback");
    assert_eq!(out.code, Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"cniVersion": "1.1.0",
            "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    // Every version the reference's loopback speaks, ours speaks (Debian's may stop before
    // 1.1.0).
    let reference = run_plugin(
        &cni_tests::fixtures::reference_plugin_dir().join("loopback"),
        &[("CNI_COMMAND", "VERSION")],
        b"",
    )
    .expect("run the reference loopback");
    let r: Value = serde_json::from_slice(&reference.stdout).expect("json");
    let ours = v["supportedVersions"].as_array().expect("a list");
    for version in r["supportedVersions"].as_array().expect("a list") {
        assert!(
            ours.contains(version),
            "the reference speaks {version}, we do not"
        );
    }
}
