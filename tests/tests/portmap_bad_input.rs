//! portmap refuses input it cannot honour with a CNI error and writes nothing: config
//! problems (ports out of range, unknown protocols, a hostIP of a family the pod lacks, no
//! address to forward to, bad backend options) are code 7 or, for JSON that does not fit
//! the CNI types, the skeleton's 6; a change the firewall refuses is code 107 ("firewall"),
//! and being atomic, leaves nothing behind either. Needs root.

use cni_tests::portmap::{bare_node, call, conf, nat_both, nft_ruleset, ours, POD_V4, POD_V6};
use serde_json::{json, Value};

const ID: &str = "pmbad00001";

fn tcp(host: Value, container: Value) -> Value {
    json!([{"hostPort": host, "containerPort": container, "protocol": "tcp"}])
}

/// Runs ADD with `input` in a fresh node; asserts the error code and message part and
/// that neither iptables nor nftables changed.
fn refused(what: &str, input: &Value, code: u64, msg: &str) {
    let node = bare_node();
    let before = (nat_both(&node), nft_ruleset(&node));
    let out = call(&node, &ours(), "ADD", ID, input);
    assert_eq!(out.code(), Some(code), "{what}: {}", out.stdout);
    let got = out.msg().unwrap_or_default();
    assert!(got.contains(msg), "{what}: message {got:?} lacks {msg:?}");
    assert_eq!(
        (nat_both(&node), nft_ruleset(&node)),
        before,
        "{what}: nothing written"
    );
}

#[test]
fn config_problems_are_code_7_and_write_nothing() {
    let v4 = [POD_V4];
    for backend in ["iptables", "nftables"] {
        let b = json!({"backend": backend});
        let cases = [
            (
                "host port 0",
                conf("1.0.0", &b, &tcp(json!(0), json!(80)), &v4),
                "Invalid host port number: 0",
            ),
            (
                "container port 0",
                conf("1.0.0", &b, &tcp(json!(8080), json!(0)), &v4),
                "Invalid container port number: 0",
            ),
            (
                "unknown protocol",
                conf(
                    "1.0.0",
                    &b,
                    &json!([{"hostPort": 8080, "containerPort": 80, "protocol": "icmp"}]),
                    &v4,
                ),
                "unknown protocol \"icmp\"",
            ),
            (
                "hostIP of a family the pod lacks",
                conf(
                    "1.0.0",
                    &b,
                    &json!([{"hostPort": 8080, "containerPort": 80, "hostIP": "fd00::1"}]),
                    &v4,
                ),
                "the container has no ipv6 address",
            ),
            (
                "IPv4 hostIP for an IPv6-only pod",
                conf(
                    "1.0.0",
                    &b,
                    &json!([{"hostPort": 8080, "containerPort": 80, "hostIP": "10.0.0.1"}]),
                    &[POD_V6],
                ),
                "the container has no ipv4 address",
            ),
            (
                "hostIP that is no address",
                conf(
                    "1.0.0",
                    &b,
                    &json!([{"hostPort": 8080, "containerPort": 80, "hostIP": "eth0"}]),
                    &v4,
                ),
                "invalid hostIP",
            ),
            (
                "no address in prevResult",
                conf("1.0.0", &b, &tcp(json!(8080), json!(80)), &[]),
                "no IP address",
            ),
            (
                "mark bit out of range",
                conf(
                    "1.0.0",
                    &json!({"backend": backend, "markMasqBit": 40}),
                    &tcp(json!(8080), json!(80)),
                    &v4,
                ),
                "MasqMarkBit must be between 0 and 31",
            ),
        ];
        for (what, input, msg) in cases {
            refused(&format!("{backend}: {what}"), &input, 7, msg);
        }
    }
    let m = tcp(json!(8080), json!(80));
    refused(
        "unknown backend",
        &conf("1.0.0", &json!({"backend": "ebpf"}), &m, &[POD_V4]),
        7,
        "unrecognized backend \"ebpf\"",
    );
    refused(
        "iptables conditions with nftables",
        &conf(
            "1.0.0",
            &json!({"backend": "nftables", "conditionsV4": ["-s", "10.0.0.0/8"]}),
            &m,
            &[POD_V4],
        ),
        7,
        "iptables-specific options",
    );
    let mut unchained = conf("1.0.0", &json!({}), &m, &[POD_V4]);
    if let Some(obj) = unchained.as_object_mut() {
        obj.remove("prevResult");
    }
    refused(
        "no prevResult",
        &unchained,
        7,
        "must be called as chained plugin",
    );
}

#[test]
fn ports_beyond_65535_are_config_errors_naming_the_port() {
    // Go decodes ports into plain ints, so a port out of range reaches the plugin's own
    // validation (code 7, the reference plugin's message), not the decoder.
    for port in [65536, -1] {
        refused(
            "host port out of range",
            &conf("1.0.0", &json!({}), &tcp(json!(port), json!(80)), &[POD_V4]),
            7,
            &format!("Invalid host port number: {port}"),
        );
        refused(
            "container port out of range",
            &conf(
                "1.0.0",
                &json!({}),
                &tcp(json!(8080), json!(port)),
                &[POD_V4],
            ),
            7,
            &format!("Invalid container port number: {port}"),
        );
    }
}

#[test]
fn firewall_refusals_are_code_107_and_leave_nothing() {
    let m = tcp(json!(8080), json!(80));
    // A mark chain that does not exist: iptables-restore refuses the jump.
    refused(
        "externalSetMarkChain that does not exist",
        &conf(
            "1.0.0",
            &json!({"externalSetMarkChain": "NO-SUCH-CHAIN"}),
            &m,
            &[POD_V4, POD_V6],
        ),
        107,
        "could not set up dnat",
    );
    // Conditions nft cannot parse: the transaction is refused whole.
    refused(
        "nftables conditions nft cannot parse",
        &conf(
            "1.0.0",
            &json!({"backend": "nftables", "conditionsV4": ["bogus", "words"]}),
            &m,
            &[POD_V4],
        ),
        107,
        "could not set up dnat",
    );
}

/// Every table of both iptables families and the whole nft ruleset.
fn whole_firewall(node: &cni_tests::TestNetns) -> String {
    let save = |tool: &str| node.exec_checked(&[tool]).expect("iptables-save");
    format!(
        "{}\n{}\n{}",
        save("iptables-save"),
        save("ip6tables-save"),
        nft_ruleset(node)
    )
}

#[test]
fn config_strings_cannot_inject_rules_or_tables() {
    // A line break ends the iptables-restore line (and a COMMIT the table); a `;` ends the
    // nft command: what follows would be rules and tables of the attacker's, kept after DEL.
    let cases = [
        (
            "externalSetMarkChain with a filter section",
            json!({"externalSetMarkChain":
                   "X\nCOMMIT\n*filter\n-A INPUT -s 7.7.7.7/32 -j ACCEPT"}),
            "invalid externalSetMarkChain",
        ),
        (
            "iptables conditions with a line break",
            json!({"conditionsV4": ["-s", "10.0.0.0/8\n-A PREROUTING -j ACCEPT"]}),
            "invalid conditionsV4 token",
        ),
        (
            "nft conditions with a table of their own",
            json!({"backend": "nftables", "conditionsV4": ["ip", "saddr", "1.2.3.4",
                   "accept;", "add", "table", "ip", "rtevil"]}),
            "invalid conditionsV4 token",
        ),
        (
            "nft conditions with a line break",
            json!({"backend": "nftables",
                   "conditionsV6": ["ip6 saddr ::1\nadd table ip6 rtevil"]}),
            "invalid conditionsV6 token",
        ),
    ];
    for (what, extra, msg) in cases {
        let node = bare_node();
        let before = whole_firewall(&node);
        let input = conf(
            "1.0.0",
            &extra,
            &tcp(json!(8080), json!(80)),
            &[POD_V4, POD_V6],
        );
        let out = call(&node, &ours(), "ADD", ID, &input);
        assert_eq!(out.code(), Some(7), "{what}: {}", out.stdout);
        let got = out.msg().unwrap_or_default();
        assert!(got.contains(msg), "{what}: {got:?}");
        assert_eq!(
            whole_firewall(&node),
            before,
            "{what}: the firewall changed"
        );
        assert!(call(&node, &ours(), "DEL", ID, &input).ok(), "{what}: DEL");
        assert_eq!(whole_firewall(&node), before, "{what}: DEL left something");
    }
}
