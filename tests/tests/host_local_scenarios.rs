//! The host-local scenarios of the upstream plugin's own tests (host_local_test.go,
//! allocator_test.go, range_test.go, config_test.go, dns_test.go), run as black-box calls of
//! the binary: pre-seeded store files and `last_reserved_ip.0` stand in for the allocator's
//! in-memory state, config errors for the range and config unit tests.
//!
//! Every scenario takes the plugin directory as a parameter. Each one runs against our
//! binary (one test per scenario, every version 0.3.0…1.1.0 where the scenario depends on
//! the version), and `reference_passes_every_scenario` runs the whole table against Debian's
//! `/usr/lib/cni/host-local` so the expectations themselves are checked against the real
//! thing. Needs root (a network namespace for CNI_NETNS).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use cni_tests::fixtures::{plugin_dir, reference_plugin_dir};
use cni_tests::host_local::{
    conf, expected_ips, files_only, ranges, reservation, seed, show, snapshot, store, HostLocal,
    Outcome, REFERENCE_VERSIONS, VERSIONS,
};
use cni_tests::{TestDir, TestNetns};
use serde_json::{json, Value};

/// Which versions a scenario runs for.
#[derive(Clone, Copy)]
enum Versions {
    /// Every version (the output or the verbs depend on it).
    Each,
    /// One version: the behaviour under test does not depend on it.
    One(&'static str),
}

/// Which binaries a scenario is for.
#[derive(Clone, Copy)]
enum Who {
    Both,
    /// Our extensions, absent from the reference 1.1.1; the reason is printed by the
    /// reference run so nothing is left out silently.
    OursOnly(&'static str),
}

struct Scenario {
    name: &'static str,
    versions: Versions,
    who: Who,
    run: fn(&Cx),
}

/// The context of one scenario run: one binary, one version, a fresh directory.
struct Cx {
    hl: HostLocal,
    version: &'static str,
    ours: bool,
    dir: TestDir,
    fresh: Cell<usize>,
}

/// What an error message must be.
#[derive(Clone, Copy)]
enum Msg<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    /// Words that must all appear.
    Mentions(&'a [&'a str]),
}

impl Msg<'_> {
    fn matches(&self, msg: &str) -> bool {
        match self {
            Msg::Exact(m) => msg == *m,
            Msg::Prefix(p) => msg.starts_with(p),
            Msg::Mentions(words) => words.iter().all(|w| msg.contains(w)),
        }
    }
}

/// Whether the reference may move `last_reserved_ip.*` on this failure: 1.1.1 writes it
/// with each reservation and does not restore it when a later step of the same ADD fails
/// (dynamic allocation in one set, then an unconsumed requested IP). Ours promises that a
/// failed ADD writes nothing, so the exemption applies to the reference run only.
#[derive(Clone, Copy, PartialEq)]
enum Leak {
    No,
    ReferenceMovesLastReserved,
}

impl Cx {
    /// The scenario's main data directory.
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Another, empty data directory (for table-driven scenarios).
    fn fresh(&self) -> PathBuf {
        let n = self.fresh.get();
        self.fresh.set(n + 1);
        self.dir.path().join(format!("data-{n}"))
    }

    fn conf(&self, data: &Path, ipam: Value) -> Value {
        conf(self.version, data, ipam)
    }

    fn run(&self, command: &str, conf: &Value, id: &str, ifname: &str, args: &str) -> Outcome {
        self.hl
            .op(command, conf, id, ifname, args)
            .expect("run host-local")
    }

    /// A successful call.
    fn ok(&self, command: &str, conf: &Value, id: &str, ifname: &str, args: &str) -> Outcome {
        let out = self.run(command, conf, id, ifname, args);
        assert!(
            out.ok(),
            "{command} {id}/{ifname} args {args:?} failed: {}",
            out.describe()
        );
        out
    }

    fn add(&self, conf: &Value, id: &str) -> Outcome {
        self.ok("ADD", conf, id, "eth0", "")
    }

    /// ADD succeeds with exactly these `(address, gateway)` pairs and no routes or dns.
    fn add_gets(&self, conf: &Value, id: &str, ips: &[(&str, &str)]) {
        let out = self.add(conf, id);
        self.assert_result(&out, ips, None, None);
    }

    fn assert_result(
        &self,
        out: &Outcome,
        ips: &[(&str, &str)],
        routes: Option<Value>,
        dns: Option<Value>,
    ) {
        let mut want = json!({"cniVersion": self.version, "ips": expected_ips(self.version, ips)});
        if let Some(r) = routes {
            want["routes"] = r;
        }
        if let Some(d) = dns {
            want["dns"] = d;
        }
        assert_eq!(out.result(), Some(want), "result: {}", out.describe());
    }

    /// The call fails with exit 1, an error object with `code` (checked on ours only: the
    /// reference prints 999 for nearly everything) and a message matching `msg`, and
    /// writes nothing in `data`: the store directory and an empty `lock` may appear, no
    /// reservation or `last_reserved_ip` file may appear or change.
    #[allow(clippy::too_many_arguments)]
    fn refused(
        &self,
        data: &Path,
        (command, conf, id, ifname, args): (&str, &Value, &str, &str, &str),
        code: u64,
        msg: Msg,
        leak: Leak,
    ) -> Outcome {
        let before = snapshot(data).expect("snapshot");
        let out = self.run(command, conf, id, ifname, args);
        let after = snapshot(data).expect("snapshot");
        let what = format!("{command} {id:?}/{ifname} args {args:?}");
        assert_eq!(out.exit, Some(1), "{what}: {}", out.describe());
        let got = out
            .msg()
            .unwrap_or_else(|| panic!("{what}: no error object: {}", out.describe()));
        assert!(msg.matches(got), "{what}: message {got:?}");
        if self.ours {
            assert_eq!(out.code(), Some(code), "{what}: {}", out.describe());
        }
        let exempt = !self.ours && leak == Leak::ReferenceMovesLastReserved;
        assert_eq!(
            written(&before, exempt),
            written(&after, exempt),
            "{what} changed the store:\nbefore:\n{}\nafter:\n{}",
            show(&before),
            show(&after)
        );
        out
    }

    fn store(&self, data: &Path) -> BTreeMap<String, Vec<u8>> {
        files_only(&snapshot(&store(data)).expect("snapshot"))
    }
}

/// The files that count as written: no directories, no empty `lock`, and without
/// `last_reserved_ip.*` when `skip_last` says so.
fn written(snap: &BTreeMap<String, Vec<u8>>, skip_last: bool) -> BTreeMap<String, Vec<u8>> {
    files_only(snap)
        .into_iter()
        .filter(|(k, v)| !((k == "lock" || k.ends_with("/lock")) && v.is_empty()))
        .filter(|(k, _)| !(skip_last && k.contains("last_reserved_ip.")))
        .collect()
}

fn files(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

fn ranges_ipam(sets: &[&[&str]]) -> Value {
    json!({"ranges": ranges(sets)})
}

// ---------------------------------------------------------------------------------------
// host_local_test.go

const DUAL_STACK_ROUTES: &str = r#"[
    {"dst": "0.0.0.0/0"},
    {"dst": "::/0"},
    {"dst": "192.168.0.0/16", "gw": "1.1.1.1"},
    {"dst": "2001:db8:2::0/64", "gw": "2001:db8:3::1"}
]"#;

const RESOLV_CONF: &str = "nameserver 192.0.2.1\nnameserver 192.0.2.2\ndomain example.com\n\
                           search example.com example.net\noptions ndots:2 attempts:3\n";

fn dual_stack_conf(cx: &Cx, data: &Path) -> Value {
    let resolv = cx.dir.path().join("resolv.conf");
    fs::write(&resolv, RESOLV_CONF).expect("write resolv.conf");
    let routes: Value = serde_json::from_str(DUAL_STACK_ROUTES).expect("routes");
    cx.conf(
        data,
        json!({
            "resolvConf": resolv,
            "routes": routes,
            "ranges": ranges(&[&["10.1.2.0/24", "10.2.2.0/24"], &["2001:db8:1::/64"]]),
        }),
    )
}

fn dual_stack_dns() -> Value {
    json!({
        "nameservers": ["192.0.2.1", "192.0.2.2"],
        "domain": "example.com",
        "search": ["example.com", "example.net"],
        "options": ["ndots:2", "attempts:3"],
    })
}

fn dual_stack_with_ifname(cx: &Cx, ifname: &str) {
    let data = cx.data();
    let conf = dual_stack_conf(cx, &data);
    let out = cx.ok("ADD", &conf, "dummy", ifname, "");
    cx.assert_result(
        &out,
        &[
            ("10.1.2.2/24", "10.1.2.1"),
            ("2001:db8:1::2/64", "2001:db8:1::1"),
        ],
        // Routes come back in canonical form (`2001:db8:2::0/64` as `2001:db8:2::/64`).
        Some(serde_json::from_str(&DUAL_STACK_ROUTES.replace("::0/", "::/")).expect("routes")),
        Some(dual_stack_dns()),
    );
    assert_eq!(
        out.stdout.contains("\"version\":"),
        cx.version.starts_with("0."),
        "per-ip version field in {}",
        out.stdout
    );
    let content = reservation("dummy", ifname);
    assert_eq!(
        cx.store(&data),
        files(&[
            ("10.1.2.2", &content),
            ("2001:db8:1::2", &content),
            ("last_reserved_ip.0", b"10.1.2.2"),
            ("last_reserved_ip.1", b"2001:db8:1::2"),
            ("lock", b""),
        ])
    );
    cx.ok("DEL", &conf, "dummy", ifname, "");
    assert_eq!(
        cx.store(&data),
        files(&[
            ("last_reserved_ip.0", b"10.1.2.2"),
            ("last_reserved_ip.1", b"2001:db8:1::2"),
            ("lock", b""),
        ])
    );
}

fn dual_stack_add_del(cx: &Cx) {
    dual_stack_with_ifname(cx, "eth0");
}

fn dual_stack_custom_ifname(cx: &Cx) {
    dual_stack_with_ifname(cx, "eth1");
}

fn repeat_add_is_refused(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(
        &data,
        ranges_ipam(&[&["10.1.2.0/24"], &["2001:db8:1::/64"]]),
    );
    cx.add_gets(
        &conf,
        "dummy",
        &[
            ("10.1.2.2/24", "10.1.2.1"),
            ("2001:db8:1::2/64", "2001:db8:1::1"),
        ],
    );
    let dup = "failed to allocate for range 0: 10.1.2.2 has been allocated to dummy, \
               duplicate allocation is not allowed";
    cx.refused(
        &data,
        ("ADD", &conf, "dummy", "eth0", ""),
        110,
        Msg::Exact(dup),
        Leak::No,
    );
    cx.add_gets(
        &conf,
        "other",
        &[
            ("10.1.2.3/24", "10.1.2.1"),
            ("2001:db8:1::3/64", "2001:db8:1::1"),
        ],
    );
    cx.refused(
        &data,
        ("ADD", &conf, "dummy", "eth0", ""),
        110,
        Msg::Exact(dup),
        Leak::No,
    );
    cx.ok("DEL", &conf, "dummy", "eth0", "");
    cx.ok("DEL", &conf, "other", "eth0", "");
    assert_eq!(
        cx.store(&data),
        files(&[
            ("last_reserved_ip.0", b"10.1.2.3"),
            ("last_reserved_ip.1", b"2001:db8:1::3"),
            ("lock", b""),
        ])
    );
}

fn del_legacy_allocation(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"]]));
    // Written by a host-local from before reservations carried the interface name.
    seed(&data, "10.1.2.2", b"dummy").expect("seed");
    seed(&data, "10.1.2.3", b"other").expect("seed");
    cx.ok("DEL", &conf, "dummy", "eth0", "");
    assert_eq!(
        written(&cx.store(&data), false),
        files(&[("10.1.2.3", b"other")])
    );
}

fn del_unknown_container_succeeds(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"]]));
    // On a store that does not exist yet, then on one with somebody else's reservation.
    cx.ok("DEL", &conf, "nobody", "eth0", "");
    cx.add(&conf, "somebody");
    let before = cx.store(&data);
    cx.ok("DEL", &conf, "nobody", "eth0", "");
    cx.ok("DEL", &conf, "somebody", "eth1", "");
    assert_eq!(cx.store(&data), before);
}

fn del_matches_trimmed_contents(cx: &Cx) {
    // Upstream checks that a container id with surrounding whitespace is stored trimmed;
    // through the binary such an id never gets that far (see the next scenario), so here the
    // other half: a reservation whose contents carry whitespace around them still belongs
    // to the container for duplicate detection, CHECK and DEL.
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"]]));
    seed(&data, "10.1.2.2", b"  dummy\r\neth0\n ").expect("seed");
    cx.refused(
        &data,
        ("ADD", &conf, "dummy", "eth0", ""),
        110,
        Msg::Exact(
            "failed to allocate for range 0: 10.1.2.2 has been allocated to dummy, \
             duplicate allocation is not allowed",
        ),
        Leak::No,
    );
    cx.ok("CHECK", &conf, "dummy", "eth0", "");
    cx.ok("DEL", &conf, "dummy", "eth0", "");
    assert!(!store(&data).join("10.1.2.2").exists());
}

fn container_id_with_whitespace_is_refused(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"]]));
    let out = cx.refused(
        &data,
        ("ADD", &conf, "   dummy\n ", "eth0", ""),
        4,
        Msg::Exact("invalid characters in containerID"),
        Leak::No,
    );
    // The details name the offending id (the reference gives just the id).
    let details = out
        .json
        .as_ref()
        .and_then(|j| j["details"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(details.contains("   dummy"), "{}", out.describe());
    assert!(!store(&data).join("10.1.2.2").exists());
}

fn first_add_on_fresh_store(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"]]));
    let out = cx.add(&conf, "dummy");
    cx.assert_result(&out, &[("10.1.2.2/24", "10.1.2.1")], None, None);
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains("Error retrieving last reserved ip"),
            "{}",
            out.describe()
        );
    }
}

fn args_cni_ips_requested(cx: &Cx) {
    let data = cx.data();
    let mut conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"]]));
    conf["args"] = json!({"cni": {"ips": ["10.1.2.88"]}});
    cx.add_gets(&conf, "dummy", &[("10.1.2.88/24", "10.1.2.1")]);
    // The prefix of a requested address is ignored.
    conf["args"] = json!({"cni": {"ips": ["10.1.2.89/24"]}});
    cx.add_gets(&conf, "other", &[("10.1.2.89/24", "10.1.2.1")]);
    assert_eq!(
        cx.store(&data),
        files(&[
            ("10.1.2.88", &reservation("dummy", "eth0")),
            ("10.1.2.89", &reservation("other", "eth0")),
            ("last_reserved_ip.0", b"10.1.2.89"),
            ("lock", b""),
        ])
    );
}

fn two_sets_two_requested_ips(cx: &Cx) {
    let data = cx.data();
    let mut conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"], &["10.1.3.0/24"]]));
    conf["args"] = json!({"cni": {"ips": ["10.1.2.88", "10.1.3.77"]}});
    cx.add_gets(
        &conf,
        "dummy",
        &[("10.1.2.88/24", "10.1.2.1"), ("10.1.3.77/24", "10.1.3.1")],
    );
}

fn requested_ips_across_families(cx: &Cx) {
    let data = cx.data();
    let mut conf = cx.conf(
        &data,
        ranges_ipam(&[&["172.16.1.0/24", "10.1.2.0/24"], &["2001:db8:1::/48"]]),
    );
    conf["args"] = json!({"cni": {"ips": ["10.1.2.88", "2001:db8:1::999"]}});
    cx.add_gets(
        &conf,
        "dummy",
        &[
            ("10.1.2.88/24", "10.1.2.1"),
            ("2001:db8:1::999/48", "2001:db8:1::1"),
        ],
    );
    assert_eq!(
        cx.store(&data),
        files(&[
            ("10.1.2.88", &reservation("dummy", "eth0")),
            ("2001:db8:1::999", &reservation("dummy", "eth0")),
            ("last_reserved_ip.0", b"10.1.2.88"),
            ("last_reserved_ip.1", b"2001:db8:1::999"),
            ("lock", b""),
        ])
    );
}

fn two_requested_in_one_set_fails(cx: &Cx) {
    let data = cx.data();
    let mut conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"]]));
    conf["args"] = json!({"cni": {"ips": ["10.1.2.88", "10.1.2.99"]}});
    let out = cx.refused(
        &data,
        ("ADD", &conf, "dummy", "eth0", ""),
        110,
        Msg::Prefix("failed to allocate all requested IPs: 10.1.2."),
        Leak::ReferenceMovesLastReserved,
    );
    // Which of the two is left over depends on map order; it is exactly one of them.
    let msg = out.msg().unwrap_or_default();
    assert!(
        msg.ends_with(": 10.1.2.88") || msg.ends_with(": 10.1.2.99"),
        "{msg}"
    );
    assert!(!store(&data).join("10.1.2.88").exists());
    assert!(!store(&data).join("10.1.2.99").exists());
}

fn del_releases_by_ifname(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"]]));
    cx.ok("ADD", &conf, "dummy", "eth0", "");
    cx.ok("ADD", &conf, "dummy", "eth1", "");
    cx.ok("DEL", &conf, "dummy", "eth1", "");
    assert_eq!(
        cx.store(&data),
        files(&[
            ("10.1.2.2", &reservation("dummy", "eth0")),
            ("last_reserved_ip.0", b"10.1.2.3"),
            ("lock", b""),
        ])
    );
    cx.ok("DEL", &conf, "dummy", "eth1", "");
    cx.ok("DEL", &conf, "dummy", "eth0", "");
    cx.ok("DEL", &conf, "dummy", "eth0", "");
    assert_eq!(
        cx.store(&data),
        files(&[("last_reserved_ip.0", b"10.1.2.3"), ("lock", b"")])
    );
}

fn check_verifies_the_reservation(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"]]));
    cx.add(&conf, "dummy");
    if cx.version.starts_with("0.3.") {
        // CHECK arrived with 0.4.0.
        cx.refused(
            &data,
            ("CHECK", &conf, "dummy", "eth0", ""),
            1,
            Msg::Exact("config version does not allow CHECK"),
            Leak::No,
        );
        return;
    }
    let out = cx.ok("CHECK", &conf, "dummy", "eth0", "");
    assert!(out.stdout.trim().is_empty(), "{}", out.describe());
    for (id, ifname) in [("other", "eth0"), ("dummy", "eth1")] {
        cx.refused(
            &data,
            ("CHECK", &conf, id, ifname, ""),
            109,
            Msg::Exact(&format!(
                "host-local: Failed to find address added by container {id}"
            )),
            Leak::No,
        );
    }
    // A legacy, id-only reservation counts.
    seed(&data, "10.1.2.50", b"legacy").expect("seed");
    cx.ok("CHECK", &conf, "legacy", "eth0", "");
    cx.ok("DEL", &conf, "dummy", "eth0", "");
    cx.refused(
        &data,
        ("CHECK", &conf, "dummy", "eth0", ""),
        109,
        Msg::Exact("host-local: Failed to find address added by container dummy"),
        Leak::No,
    );
}

// ---------------------------------------------------------------------------------------
// allocator_test.go, through pre-seeded stores

struct Alloc {
    subnets: &'static [&'static str],
    taken: &'static [&'static str],
    last: Option<&'static str>,
    want: (&'static str, &'static str),
}

const ALLOCATIONS: &[Alloc] = &[
    Alloc {
        subnets: &["10.1.2.0/29"],
        taken: &[],
        last: None,
        want: ("10.1.2.2/29", "10.1.2.1"),
    },
    Alloc {
        subnets: &["2001:db8:1::/64"],
        taken: &[],
        last: None,
        want: ("2001:db8:1::2/64", "2001:db8:1::1"),
    },
    Alloc {
        subnets: &["10.1.2.0/30"],
        taken: &[],
        last: None,
        want: ("10.1.2.2/30", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.1.2.0/29"],
        taken: &["10.1.2.2"],
        last: None,
        want: ("10.1.2.3/29", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.1.2.0/29"],
        taken: &[],
        last: Some("10.1.2.5"),
        want: ("10.1.2.6/29", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.1.2.0/29"],
        taken: &["10.1.2.4", "10.1.2.5"],
        last: Some("10.1.2.3"),
        want: ("10.1.2.6/29", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.1.2.0/29"],
        taken: &["10.1.2.6"],
        last: Some("10.1.2.5"),
        want: ("10.1.2.2/29", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.1.2.0/29"],
        taken: &["10.1.2.2"],
        last: Some("10.1.2.128"),
        want: ("10.1.2.3/29", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.1.2.0/29"],
        taken: &["10.1.2.2", "10.1.2.4", "10.1.2.5", "10.1.2.6"],
        last: Some("10.1.2.3"),
        want: ("10.1.2.3/29", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.0.0.0/30", "10.0.1.0/30"],
        taken: &[],
        last: None,
        want: ("10.0.0.2/30", "10.0.0.1"),
    },
    Alloc {
        subnets: &["10.0.0.0/30", "10.0.1.0/30"],
        taken: &[],
        last: Some("10.0.0.2"),
        want: ("10.0.1.2/30", "10.0.1.1"),
    },
    Alloc {
        subnets: &["10.0.0.0/30", "10.0.1.0/30", "10.0.2.0/30"],
        taken: &[],
        last: Some("10.0.2.2"),
        want: ("10.0.0.2/30", "10.0.0.1"),
    },
    // The defaults of range_test.go: a /24 ends at .254 and wraps past the broadcast and the
    // gateway; a /25 ends at .126; an IPv6 /64 ends at its very last address.
    Alloc {
        subnets: &["10.1.2.0/24"],
        taken: &[],
        last: Some("10.1.2.253"),
        want: ("10.1.2.254/24", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.1.2.0/24"],
        taken: &[],
        last: Some("10.1.2.254"),
        want: ("10.1.2.2/24", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.1.2.0/25"],
        taken: &[],
        last: Some("10.1.2.125"),
        want: ("10.1.2.126/25", "10.1.2.1"),
    },
    Alloc {
        subnets: &["10.1.2.0/25"],
        taken: &[],
        last: Some("10.1.2.126"),
        want: ("10.1.2.2/25", "10.1.2.1"),
    },
    Alloc {
        subnets: &["2001:db8:1::/64"],
        taken: &[],
        last: Some("2001:db8:1:0:ffff:ffff:ffff:fffe"),
        want: ("2001:db8:1:0:ffff:ffff:ffff:ffff/64", "2001:db8:1::1"),
    },
    Alloc {
        subnets: &["2001:db8:1::/64"],
        taken: &[],
        last: Some("2001:db8:1:0:ffff:ffff:ffff:ffff"),
        want: ("2001:db8:1::2/64", "2001:db8:1::1"),
    },
];

fn allocation_order(cx: &Cx) {
    for a in ALLOCATIONS {
        let data = cx.fresh();
        let conf = cx.conf(&data, ranges_ipam(&[a.subnets]));
        let mut want = BTreeMap::new();
        for ip in a.taken {
            seed(&data, ip, &reservation("other", "eth0")).expect("seed");
            want.insert(ip.to_string(), reservation("other", "eth0"));
        }
        if let Some(last) = a.last {
            seed(&data, "last_reserved_ip.0", last.as_bytes()).expect("seed");
        }
        let out = cx.add(&conf, "dummy");
        assert_eq!(
            out.result().map(|r| r["ips"].clone()),
            Some(expected_ips(cx.version, &[a.want])),
            "subnets {:?}, taken {:?}, last {:?}",
            a.subnets,
            a.taken,
            a.last
        );
        let ip = a.want.0.split('/').next().unwrap_or_default();
        want.insert(ip.to_string(), reservation("dummy", "eth0"));
        want.insert("last_reserved_ip.0".into(), ip.as_bytes().to_vec());
        want.insert("lock".into(), Vec::new());
        assert_eq!(cx.store(&data), want, "subnets {:?}", a.subnets);
    }
}

fn slash29_hands_out_2_to_6_then_none(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/29"]]));
    for (i, host) in (2..=6).enumerate() {
        cx.add_gets(
            &conf,
            &format!("ctr{i}"),
            &[(&format!("10.1.2.{host}/29"), "10.1.2.1")],
        );
    }
    cx.refused(
        &data,
        ("ADD", &conf, "ctr5", "eth0", ""),
        105,
        Msg::Exact(
            "failed to allocate for range 0: no IP addresses available in range set: \
             10.1.2.1-10.1.2.6",
        ),
        Leak::No,
    );
    assert!(!store(&data).join("10.1.2.7").exists());
}

fn release_then_get_moves_on(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/29"]]));
    cx.add_gets(&conf, "a", &[("10.1.2.2/29", "10.1.2.1")]);
    cx.ok("DEL", &conf, "a", "eth0", "");
    cx.add_gets(&conf, "a", &[("10.1.2.3/29", "10.1.2.1")]);
}

fn requested_ip_in_and_out_of_range(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["192.168.1.0/29"]]));
    cx.ok("ADD", &conf, "a", "eth0", "IP=192.168.1.5");
    cx.refused(
        &data,
        ("ADD", &conf, "b", "eth0", "IP=192.168.1.5"),
        110,
        Msg::Exact(
            "failed to allocate for range 0: requested IP address 192.168.1.5 is not \
             available in range set 192.168.1.1-192.168.1.6",
        ),
        Leak::No,
    );
    let data = cx.fresh();
    let conf = cx.conf(
        &data,
        json!({"ranges": [[{"subnet": "192.168.2.0/29",
                            "rangeStart": "192.168.2.3", "rangeEnd": "192.168.2.5"}]]}),
    );
    for ip in ["192.168.2.6", "192.168.2.2"] {
        cx.refused(
            &data,
            ("ADD", &conf, "b", "eth0", &format!("IP={ip}")),
            110,
            Msg::Exact(&format!("failed to allocate all requested IPs: {ip}")),
            Leak::ReferenceMovesLastReserved,
        );
    }
}

fn requested_gateway_is_refused(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(
        &data,
        json!({"ranges": [[{"subnet": "10.1.2.0/24", "gateway": "10.1.2.254"}]]}),
    );
    cx.refused(
        &data,
        ("ADD", &conf, "a", "eth0", "IP=10.1.2.254"),
        110,
        Msg::Exact("failed to allocate for range 0: requested ip 10.1.2.254 is subnet's gateway"),
        Leak::No,
    );
    // With the gateway moved, .1 is an ordinary address and .254 is skipped.
    cx.add_gets(&conf, "a", &[("10.1.2.1/24", "10.1.2.254")]);
    seed(&data, "last_reserved_ip.0", b"10.1.2.253").expect("seed");
    cx.add_gets(&conf, "b", &[("10.1.2.2/24", "10.1.2.254")]);
}

// ---------------------------------------------------------------------------------------
// range_test.go / config_test.go

fn invalid_configs(cx: &Cx) {
    let cases: Vec<(Value, &str)> =
        vec![
        (
            json!({"ranges": [[{"subnet": "10.1.2.5/24"}]]}),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 \
             the network address is 10.1.2.0",
        ),
        (
            json!({"ranges": [[{"subnet": "2001:db8:1::5/64"}]]}),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 64 \
             the network address is 2001:db8:1::",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.2.0/31"}]]}),
            "invalid range set 0: Network 10.1.2.0/31 too small to allocate from",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.2.4/32"}]]}),
            "invalid range set 0: Network 10.1.2.4/32 too small to allocate from",
        ),
        (
            json!({"ranges": [[{"subnet": "2001:db8:1::/127"}]]}),
            "invalid range set 0: Network 2001:db8:1::/127 too small to allocate from",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.2.0/24", "rangeStart": "10.1.3.5"}]]}),
            "invalid range set 0: RangeStart 10.1.3.5 not in network 10.1.2.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.2.0/24", "rangeEnd": "10.1.3.5"}]]}),
            "invalid range set 0: RangeEnd 10.1.3.5 not in network 10.1.2.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "2001:db8:1::/64"}]]}),
            "invalid range set 0: mixed address families",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.1.2.0/24"}]]}),
            "invalid range set 0: subnets 10.1.2.1-10.1.2.254 and 10.1.2.1-10.1.2.254 overlap",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/16"}, {"subnet": "10.1.2.0/24"}]]}),
            "invalid range set 0: subnets 10.1.0.1-10.1.255.254 and 10.1.2.1-10.1.2.254 overlap",
        ),
        (
            json!({"ranges": [[
                {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.1", "rangeEnd": "10.1.2.100"},
                {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.50", "rangeEnd": "10.1.2.200"}
            ]]}),
            "invalid range set 0: subnets 10.1.2.1-10.1.2.100 and 10.1.2.50-10.1.2.200 overlap",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.2.0/25"}]]}),
            "range set 0 overlaps with 1",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.3.0/24"}], [{"subnet": "10.1.2.0/31"}]]}),
            "invalid range set 1: Network 10.1.2.0/31 too small to allocate from",
        ),
        (json!({"ranges": [[]]}), "invalid range set 0: empty range set"),
        (json!({"ranges": []}), "no IP ranges specified"),
        (json!({}), "no IP ranges specified"),
        (
            json!({"subnet": "10.1.2.0/24", "ranges": [[{"subnet": "10.1.2.128/25"}]]}),
            "range set 0 overlaps with 1",
        ),
        (
            json!({"ranges": [[{"subnet": "bogus"}]]}),
            "invalid CIDR address: bogus",
        ),
    ];
    // Every case is tried, so one failure does not hide the others.
    let mut failures = Vec::new();
    for (ipam, msg) in cases {
        let data = cx.fresh();
        let conf = cx.conf(&data, ipam.clone());
        let tried = catch_unwind(AssertUnwindSafe(|| {
            cx.refused(
                &data,
                ("ADD", &conf, "dummy", "eth0", ""),
                7,
                Msg::Exact(msg),
                Leak::No,
            );
            // DEL needs only the store: a config ADD refuses must not stop a runtime's DEL
            // chain (the reference refuses it too, and strands what the chain made).
            if cx.ours {
                cx.ok("DEL", &conf, "dummy", "eth0", "");
            } else {
                cx.refused(
                    &data,
                    ("DEL", &conf, "dummy", "eth0", ""),
                    7,
                    Msg::Exact(msg),
                    Leak::No,
                );
            }
            assert!(
                !store(&data).exists() || cx.store(&data).keys().all(|k| k == "lock"),
                "{ipam}"
            );
        }));
        if let Err(e) = tried {
            failures.push(format!("ipam {ipam}: {}", panic_text(&*e)));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // A network config without an ipam section at all.
    let data = cx.fresh();
    let conf = json!({"cniVersion": cx.version, "name": "mynet", "type": "host-local"});
    cx.refused(
        &data,
        ("ADD", &conf, "dummy", "eth0", ""),
        7,
        Msg::Exact("IPAM config missing 'ipam' key"),
        Leak::No,
    );
}

fn valid_range_layouts(cx: &Cx) {
    // Disjoint ranges in one subnet, sets of different families, a set of several subnets.
    let data = cx.fresh();
    let conf = cx.conf(
        &data,
        json!({"ranges": [
            [{"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.10", "rangeEnd": "10.1.2.11"},
             {"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.20", "rangeEnd": "10.1.2.20"}],
            [{"subnet": "2001:db8:1::/64"}]
        ]}),
    );
    for (id, v4) in [
        ("a", "10.1.2.10/24"),
        ("b", "10.1.2.11/24"),
        ("c", "10.1.2.20/24"),
    ] {
        let out = cx.add(&conf, id);
        assert_eq!(
            out.addresses().first().map(String::as_str),
            Some(v4),
            "{}",
            out.describe()
        );
    }
    cx.refused(
        &data,
        ("ADD", &conf, "d", "eth0", ""),
        105,
        Msg::Exact(
            "failed to allocate for range 0: no IP addresses available in range set: \
             10.1.2.10-10.1.2.11,10.1.2.20-10.1.2.20",
        ),
        Leak::No,
    );
}

fn legacy_single_range(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(
        &data,
        json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.100",
               "rangeEnd": "10.1.2.101", "gateway": "10.1.2.254",
               "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    for (id, ip) in [("a", "10.1.2.100/24"), ("b", "10.1.2.101/24")] {
        let out = cx.add(&conf, id);
        cx.assert_result(
            &out,
            &[(ip, "10.1.2.254")],
            Some(json!([{"dst": "0.0.0.0/0"}])),
            None,
        );
    }
    cx.refused(
        &data,
        ("ADD", &conf, "c", "eth0", ""),
        105,
        Msg::Exact(
            "failed to allocate for range 0: no IP addresses available in range set: \
             10.1.2.100-10.1.2.101",
        ),
        Leak::No,
    );
}

fn range_sets_in_order(cx: &Cx) {
    // runtimeConfig.ipRanges first, then the legacy top-level range, then `ranges`.
    let data = cx.data();
    let mut conf = cx.conf(
        &data,
        json!({"subnet": "10.5.0.0/24", "ranges": ranges(&[&["10.1.2.0/24"]])}),
    );
    conf["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.9.0.0/24"}]]});
    cx.add_gets(
        &conf,
        "a",
        &[
            ("10.9.0.2/24", "10.9.0.1"),
            ("10.5.0.2/24", "10.5.0.1"),
            ("10.1.2.2/24", "10.1.2.1"),
        ],
    );
    assert_eq!(
        cx.store(&data),
        files(&[
            ("10.1.2.2", &reservation("a", "eth0")),
            ("10.5.0.2", &reservation("a", "eth0")),
            ("10.9.0.2", &reservation("a", "eth0")),
            ("last_reserved_ip.0", b"10.9.0.2"),
            ("last_reserved_ip.1", b"10.5.0.2"),
            ("last_reserved_ip.2", b"10.1.2.2"),
            ("lock", b""),
        ])
    );
}

fn requested_ip_sources(cx: &Cx) {
    let data = cx.data();
    let c = |extra: Value| {
        let mut conf = cx.conf(
            &data,
            json!({"ranges": ranges(&[&["10.1.2.0/24"], &["10.1.3.0/24"], &["10.1.4.0/24"]])}),
        );
        for (k, v) in extra.as_object().into_iter().flatten() {
            conf[k] = v.clone();
        }
        conf
    };
    // Each source alone, with and without a prefix.
    let plain = c(json!({}));
    for (id, args, ip) in [
        ("a", "IP=10.1.2.50", "10.1.2.50/24"),
        ("b", "IP=10.1.2.51/24", "10.1.2.51/24"),
        (
            "c",
            "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.2.52",
            "10.1.2.52/24",
        ),
    ] {
        let out = cx.ok("ADD", &plain, id, "eth0", args);
        assert_eq!(
            out.addresses().first().map(String::as_str),
            Some(ip),
            "{args}"
        );
    }
    let runtime = c(json!({"runtimeConfig": {"ips": ["10.1.3.60/24"]}}));
    let out = cx.add(&runtime, "d");
    assert_eq!(
        out.addresses(),
        ["10.1.2.53/24", "10.1.3.60/24", "10.1.4.5/24"],
        "{}",
        out.describe()
    );
    // All three at once, one per set.
    let all = c(json!({"args": {"cni": {"ips": ["10.1.3.70"]}},
                       "runtimeConfig": {"ips": ["10.1.4.80"]}}));
    let out = cx.ok("ADD", &all, "e", "eth0", "IP=10.1.2.90");
    assert_eq!(
        out.addresses(),
        ["10.1.2.90/24", "10.1.3.70/24", "10.1.4.80/24"],
        "{}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------------------
// dns_test.go

fn resolv_conf_parsing(cx: &Cx) {
    let cases: [(&str, Value); 3] = [
        (
            "nameserver 10.0.0.1\n",
            json!({"nameservers": ["10.0.0.1"]}),
        ),
        (
            "# a comment\n; another\n\nnameserver 10.0.0.1 \n#nameserver 10.0.0.2\n",
            json!({"nameservers": ["10.0.0.1"]}),
        ),
        (
            "nameserver 10.0.0.1\nnameserver 2001:db8::53\ndomain first.example\n\
             domain example.com\nsearch a.example b.example\nsearch c.example\n\
             options ndots:5 rotate\noptions timeout:1\nsortlist\nbogus line here\n",
            json!({"nameservers": ["10.0.0.1", "2001:db8::53"], "domain": "example.com",
                   "search": ["a.example", "b.example", "c.example"],
                   "options": ["ndots:5", "rotate", "timeout:1"]}),
        ),
    ];
    for (i, (text, dns)) in cases.into_iter().enumerate() {
        let resolv = cx.dir.path().join(format!("resolv-{i}.conf"));
        fs::write(&resolv, text).expect("write resolv.conf");
        let data = cx.fresh();
        let conf = cx.conf(
            &data,
            json!({"resolvConf": resolv, "ranges": ranges(&[&["10.1.2.0/24"]])}),
        );
        let out = cx.add(&conf, "a");
        let got = out.result().map(|r| r["dns"].clone()).unwrap_or_default();
        // Fields the file does not set may be absent or empty.
        let mut want = json!({"nameservers": [], "domain": "", "search": [], "options": []});
        for (k, v) in dns.as_object().into_iter().flatten() {
            want[k] = v.clone();
        }
        let mut got_full = json!({"nameservers": [], "domain": "", "search": [], "options": []});
        for (k, v) in got.as_object().into_iter().flatten() {
            got_full[k] = v.clone();
        }
        assert_eq!(got_full, want, "{text:?}: {}", out.describe());
    }
    // A resolvConf that does not exist fails the ADD before anything is reserved.
    let data = cx.fresh();
    let missing = cx.dir.path().join("no-such-resolv.conf");
    let conf = cx.conf(
        &data,
        json!({"resolvConf": missing, "ranges": ranges(&[&["10.1.2.0/24"]])}),
    );
    let before = snapshot(&data).expect("snapshot");
    let out = cx.run("ADD", &conf, "a", "eth0", "");
    assert_eq!(out.exit, Some(1), "{}", out.describe());
    // The message names the file (its wording after the path is the OS's).
    let path = missing.display().to_string();
    assert!(
        out.msg()
            .is_some_and(|m| m.starts_with(&format!("open {path}: "))),
        "{}",
        out.describe()
    );
    assert_eq!(
        written(&snapshot(&data).expect("snapshot"), false),
        written(&before, false)
    );
}

// ---------------------------------------------------------------------------------------
// Our extensions

fn gc_removes_unlisted_attachments(cx: &Cx) {
    let data = cx.data();
    let mut conf = cx.conf(
        &data,
        ranges_ipam(&[&["10.1.2.0/24"], &["2001:db8:1::/64"]]),
    );
    for (id, ifname) in [("a", "eth0"), ("b", "eth0"), ("c", "eth0"), ("c", "eth1")] {
        cx.ok("ADD", &conf, id, ifname, "");
    }
    seed(&data, "10.1.2.100", b"legacy-kept").expect("seed");
    seed(&data, "10.1.2.101", b"legacy-gone").expect("seed");
    let before = cx.store(&data);
    conf["cni.dev/valid-attachments"] = json!([
        {"containerID": "a", "ifname": "eth0"},
        {"containerID": "c", "ifname": "eth1"},
        {"containerID": "legacy-kept", "ifname": "eth0"},
    ]);
    let out = cx.hl.verb("GC", &conf).expect("run GC");
    assert!(out.ok(), "GC: {}", out.describe());
    let mut want = before.clone();
    want.retain(|_, v| {
        let s = String::from_utf8_lossy(v);
        !(s == "b\r\neth0" || s == "c\r\neth0" || s == "legacy-gone")
    });
    assert_eq!(want.len(), before.len() - 5, "{}", show(&before));
    assert_eq!(cx.store(&data), want);
    // Another GC with the same list changes nothing; DEL of the survivors still works.
    let out = cx.hl.verb("GC", &conf).expect("run GC");
    assert!(out.ok(), "GC: {}", out.describe());
    assert_eq!(cx.store(&data), want);
    cx.ok("DEL", &conf, "c", "eth1", "");
    cx.ok("CHECK", &conf, "a", "eth0", "");
}

fn status_reports_a_full_range_set(cx: &Cx) {
    let data = cx.data();
    let conf = cx.conf(&data, ranges_ipam(&[&["10.1.2.0/24"], &["10.1.3.0/30"]]));
    let status = |want_ok: bool| {
        let before = snapshot(&data).expect("snapshot");
        let out = cx.hl.verb("STATUS", &conf).expect("run STATUS");
        assert_eq!(
            written(&snapshot(&data).expect("snapshot"), false),
            written(&before, false)
        );
        if want_ok {
            assert!(out.ok(), "STATUS: {}", out.describe());
        } else {
            assert_eq!(out.exit, Some(1), "STATUS: {}", out.describe());
            assert_eq!(out.code(), Some(50), "STATUS: {}", out.describe());
        }
    };
    status(true);
    cx.add(&conf, "a");
    // The /30 has a single address, now taken.
    status(false);
    cx.ok("DEL", &conf, "a", "eth0", "");
    status(true);
}

fn use_pod_cidr_is_refused(cx: &Cx) {
    for ipam in [
        json!({"ranges": [[{"subnet": "usePodCidr"}]]}),
        json!({"subnet": "usePodCidr"}),
    ] {
        let data = cx.fresh();
        let conf = cx.conf(&data, ipam);
        cx.refused(
            &data,
            ("ADD", &conf, "a", "eth0", ""),
            7,
            Msg::Mentions(&["usePodCidr", "calico"]),
            Leak::No,
        );
    }
}

fn version_lists_our_versions(cx: &Cx) {
    let out = cx
        .hl
        .call(&[("CNI_COMMAND", "VERSION")], b"")
        .expect("run VERSION");
    assert!(out.ok(), "{}", out.describe());
    let supported = out
        .json
        .as_ref()
        .map(|j| j["supportedVersions"].clone())
        .unwrap_or_default();
    for v in VERSIONS {
        assert!(
            supported.as_array().is_some_and(|s| s.contains(&json!(v))),
            "{v} missing from {}",
            out.stdout
        );
    }
}

// ---------------------------------------------------------------------------------------
// The table

const REFERENCE_LACKS_GC: &str = "reference 1.1.1 has no GC (unknown CNI_COMMAND)";
const REFERENCE_LACKS_STATUS: &str = "reference 1.1.1 has no STATUS (unknown CNI_COMMAND)";
const REFERENCE_LACKS_POD_CIDR: &str =
    "reference 1.1.1 fails with `invalid CIDR address: usePodCidr`, no pointer to calico";
const REFERENCE_LACKS_1_1_0: &str = "reference 1.1.1 stops at 1.0.0";

macro_rules! scenarios {
    ($($name:ident: $versions:expr, $who:expr;)*) => {
        const SCENARIOS: &[Scenario] = &[
            $(Scenario { name: stringify!($name), versions: $versions, who: $who, run: $name },)*
        ];

        /// One test per scenario against our binary.
        mod ours {
            $(
                #[test]
                fn $name() {
                    super::run_ours(stringify!($name));
                }
            )*
        }
    };
}

scenarios! {
    dual_stack_add_del: Versions::Each, Who::Both;
    dual_stack_custom_ifname: Versions::Each, Who::Both;
    repeat_add_is_refused: Versions::Each, Who::Both;
    del_legacy_allocation: Versions::Each, Who::Both;
    del_unknown_container_succeeds: Versions::Each, Who::Both;
    del_matches_trimmed_contents: Versions::One("1.0.0"), Who::Both;
    container_id_with_whitespace_is_refused: Versions::One("1.0.0"), Who::Both;
    first_add_on_fresh_store: Versions::Each, Who::Both;
    args_cni_ips_requested: Versions::Each, Who::Both;
    two_sets_two_requested_ips: Versions::Each, Who::Both;
    requested_ips_across_families: Versions::Each, Who::Both;
    two_requested_in_one_set_fails: Versions::Each, Who::Both;
    del_releases_by_ifname: Versions::Each, Who::Both;
    check_verifies_the_reservation: Versions::Each, Who::Both;
    allocation_order: Versions::One("1.0.0"), Who::Both;
    slash29_hands_out_2_to_6_then_none: Versions::One("1.0.0"), Who::Both;
    release_then_get_moves_on: Versions::One("1.0.0"), Who::Both;
    requested_ip_in_and_out_of_range: Versions::One("1.0.0"), Who::Both;
    requested_gateway_is_refused: Versions::One("1.0.0"), Who::Both;
    invalid_configs: Versions::One("1.0.0"), Who::Both;
    valid_range_layouts: Versions::One("1.0.0"), Who::Both;
    legacy_single_range: Versions::Each, Who::Both;
    range_sets_in_order: Versions::Each, Who::Both;
    requested_ip_sources: Versions::One("1.0.0"), Who::Both;
    resolv_conf_parsing: Versions::One("1.0.0"), Who::Both;
    version_lists_our_versions: Versions::One("1.1.0"), Who::OursOnly(REFERENCE_LACKS_1_1_0);
    gc_removes_unlisted_attachments: Versions::One("1.1.0"), Who::OursOnly(REFERENCE_LACKS_GC);
    status_reports_a_full_range_set: Versions::One("1.1.0"), Who::OursOnly(REFERENCE_LACKS_STATUS);
    use_pod_cidr_is_refused: Versions::One("1.0.0"), Who::OursOnly(REFERENCE_LACKS_POD_CIDR);
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs one scenario for each of its versions in `versions`; returns the failures.
fn run_scenario(
    s: &Scenario,
    bin_dir: &Path,
    ours: bool,
    versions: &[&'static str],
) -> Vec<String> {
    let netns = TestNetns::new("hls").expect("netns");
    let wanted: Vec<&'static str> = match s.versions {
        Versions::Each => versions.to_vec(),
        Versions::One(v) => vec![v],
    };
    let mut failures = Vec::new();
    for version in wanted {
        let cx = Cx {
            hl: HostLocal::in_dir(bin_dir, netns.path_str()),
            version,
            ours,
            dir: TestDir::new().expect("temp dir"),
            fresh: Cell::new(0),
        };
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| (s.run)(&cx))) {
            failures.push(format!("{} @ {version}: {}", s.name, panic_text(&*e)));
        }
    }
    failures
}

fn run_ours(name: &str) {
    let s = SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .expect("scenario in the table");
    let failures = run_scenario(s, &plugin_dir(), true, VERSIONS);
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn reference_passes_every_scenario() {
    let bin_dir = reference_plugin_dir();
    let mut failures = Vec::new();
    let mut ran = 0;
    for s in SCENARIOS {
        match s.who {
            Who::OursOnly(why) => {
                eprintln!("not run against the reference: {} ({why})", s.name);
                continue;
            }
            Who::Both => {}
        }
        // Versions::Each runs for 0.3.0…1.0.0 only: REFERENCE_LACKS_1_1_0.
        if let Versions::One(v) = s.versions {
            assert!(REFERENCE_VERSIONS.contains(&v), "{}: {v}", s.name);
        }
        failures.extend(run_scenario(s, &bin_dir, false, REFERENCE_VERSIONS));
        ran += 1;
    }
    assert!(ran >= 25, "only {ran} scenarios ran");
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
