//! A firewall tool that hangs costs an ADD the invocation's deadline, no more: portmap
//! kills it when the deadline its caller passed in `CNI_SUITE_DEADLINE_UNIX_MS` is reached
//! and answers code 11 (try again later) naming the tool, having written nothing. Then a
//! DEL with working tools succeeds. Needs root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use cni_tests::fixtures::{plugin_dir, run_plugin_in};
use cni_tests::host_local::Outcome;
use cni_tests::portmap::{assert_ok, bare_node, call, conf, nat_both, nft_ruleset, ours};
use cni_tests::portmap::{two_mappings, POD_V4};
use cni_tests::TestDir;
use serde_json::json;

const ID: &str = "pmdeadln01";

/// A directory holding `tool`, a script that sleeps for a minute, first on PATH.
fn hanging(dir: &TestDir, tool: &str) -> String {
    let bin = dir.subdir("bin").expect("bin dir");
    let path = bin.join(tool);
    fs::write(&path, "#!/bin/sh\nexec sleep 60\n").expect("write fake tool");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod fake tool");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_hanging_tool_is_killed_at_the_deadline_with_code_11() {
    // (backend settings, the tool that hangs, extra environment)
    let cases = [
        (json!({}), "iptables-restore", None),
        (
            json!({"backend": "nftables"}),
            "nft",
            Some(("PORTMAP_NFTABLES_VIA", "nft")),
        ),
    ];
    for (settings, tool, extra) in cases {
        let node = bare_node();
        let before = (nat_both(&node), nft_ruleset(&node));
        let dir = TestDir::new().expect("dir");
        let path = hanging(&dir, tool);
        let input = conf("1.0.0", &settings, &two_mappings(), &[POD_V4]);
        let plugins = plugin_dir().display().to_string();
        let deadline = cni_tests::fixtures::deadline_in(Duration::from_secs(2));
        let mut vars = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", ID),
            ("CNI_NETNS", "/run/netns/pod"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", plugins.as_str()),
            ("PATH", path.as_str()),
            (shared::deadline::ENV, deadline.as_str()),
        ];
        vars.extend(extra);
        let stdin = serde_json::to_vec(&input).expect("encode config");
        let started = Instant::now();
        let out = run_plugin_in(Some(node.path()), &ours(), &vars, &stdin).expect("run ADD");
        let took = started.elapsed();
        let out = Outcome {
            exit: out.code,
            stdout: out.stdout_str(),
            stderr: out.stderr_str(),
            json: serde_json::from_slice(&out.stdout).ok(),
        };
        assert_eq!(out.code(), Some(11), "{tool}: {}", out.stdout);
        let msg = out.msg().unwrap_or_default();
        assert!(msg.contains(tool), "{tool}: {msg}");
        assert!(msg.contains("deadline passed"), "{tool}: {msg}");
        assert!(took < Duration::from_secs(10), "{tool}: ADD took {took:?}");
        assert_eq!(
            (nat_both(&node), nft_ruleset(&node)),
            before,
            "{tool}: nothing written"
        );
        // With the real tools and no narrowed deadline, DEL cleans up and succeeds.
        assert_ok(&call(&node, &ours(), "DEL", ID, &input), "DEL");
    }
}
