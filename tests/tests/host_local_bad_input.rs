//! Bad input to host-local: each case gets exit status 1, a CNI error object on stdout with
//! the right code (ours) and a message that says what to fix, and writes nothing to the
//! data directory (the store directory and an empty `lock` may appear; no reservation, no
//! `last_reserved_ip`). The same table runs against the reference binary, codes aside, so
//! the expected messages are the real ones. Needs root.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use cni_tests::fixtures::{plugin_dir, reference_plugin_dir};
use cni_tests::host_local::HostLocal;
use cni_tests::host_local::{conf, files_only, ranges, reservation, seed, show, snapshot};
use cni_tests::{TestDir, TestNetns};
use serde_json::{json, Value};

const ID: &str = "bad-input";

/// What the message must be.
#[derive(Clone, Copy)]
enum Msg {
    /// Exactly the reference's text.
    Exact(&'static str),
    Prefix(&'static str),
    /// The text need not match the reference, but must name these.
    Mentions(&'static [&'static str]),
}

struct Case {
    what: &'static str,
    command: &'static str,
    ipam: Value,
    /// Top-level additions to the network config (`args`, `runtimeConfig`).
    extra: Value,
    cni_args: &'static str,
    /// Files in the store before the call.
    seeded: Vec<(&'static str, Vec<u8>)>,
    /// Point dataDir at a regular file instead of a directory.
    data_dir_is_a_file: bool,
    code: u64,
    msg: Msg,
    /// The reference 1.1.1 keeps a moved `last_reserved_ip` when the ADD fails after a
    /// dynamic reservation; ours writes nothing, so this exempts the reference run only.
    reference_moves_last_reserved: bool,
    /// Ours only: the reference has no such check (usePodCidr) or another code path.
    ours_only: bool,
    /// The reference only: ours succeeds on purpose (a DEL that needs nothing it lacks).
    reference_only: bool,
}

fn case(what: &'static str, code: u64, msg: Msg) -> Case {
    Case {
        what,
        command: "ADD",
        ipam: json!({"ranges": ranges(&[&["10.1.2.0/24"]])}),
        extra: json!({}),
        cni_args: "",
        seeded: Vec::new(),
        data_dir_is_a_file: false,
        code,
        msg,
        reference_moves_last_reserved: false,
        ours_only: false,
        reference_only: false,
    }
}

impl Case {
    fn ipam(mut self, ipam: Value) -> Case {
        self.ipam = ipam;
        self
    }
    fn extra(mut self, extra: Value) -> Case {
        self.extra = extra;
        self
    }
    fn args(mut self, args: &'static str) -> Case {
        self.cni_args = args;
        self
    }
    fn command(mut self, command: &'static str) -> Case {
        self.command = command;
        self
    }
    fn seeded(mut self, name: &'static str, contents: &[u8]) -> Case {
        self.seeded.push((name, contents.to_vec()));
        self
    }
    fn leaks_in_reference(mut self) -> Case {
        self.reference_moves_last_reserved = true;
        self
    }
    fn ours_only(mut self) -> Case {
        self.ours_only = true;
        self
    }

    fn reference_only(mut self) -> Case {
        self.reference_only = true;
        self
    }
    fn data_dir_is_a_file(mut self) -> Case {
        self.data_dir_is_a_file = true;
        self
    }
}

fn one_range(r: Value) -> Value {
    json!({"ranges": [[r]]})
}

fn cases() -> Vec<Case> {
    let other = reservation("other", "eth0");
    vec![
        case(
            "exhausted range",
            105,
            Msg::Exact(
                "failed to allocate for range 0: no IP addresses available in range set: \
                 10.1.2.1-10.1.2.2",
            ),
        )
        .ipam(one_range(json!({"subnet": "10.1.2.0/30"})))
        .seeded("10.1.2.2", &other),
        case(
            "requested IP outside every range",
            110,
            Msg::Exact("failed to allocate all requested IPs: 10.9.9.9"),
        )
        .args("IP=10.9.9.9")
        .leaks_in_reference(),
        case(
            "requested IP before rangeStart",
            110,
            Msg::Exact("failed to allocate all requested IPs: 10.1.2.5"),
        )
        .ipam(one_range(
            json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.10"}),
        ))
        .args("IP=10.1.2.5")
        .leaks_in_reference(),
        case(
            "requested IP already taken",
            110,
            Msg::Exact(
                "failed to allocate for range 0: requested IP address 10.1.2.5 is not \
                 available in range set 10.1.2.1-10.1.2.254",
            ),
        )
        .args("IP=10.1.2.5")
        .seeded("10.1.2.5", &other),
        case(
            "requested IP (args.cni.ips) already taken",
            110,
            Msg::Exact(
                "failed to allocate for range 0: requested IP address 10.1.2.5 is not \
                 available in range set 10.1.2.1-10.1.2.254",
            ),
        )
        .extra(json!({"args": {"cni": {"ips": ["10.1.2.5"]}}}))
        .seeded("10.1.2.5", &other),
        case(
            "requested IP is the gateway",
            110,
            Msg::Exact("failed to allocate for range 0: requested ip 10.1.2.1 is subnet's gateway"),
        )
        .extra(json!({"runtimeConfig": {"ips": ["10.1.2.1/24"]}})),
        case(
            "two requested IPs for one range set",
            110,
            Msg::Prefix("failed to allocate all requested IPs: 10.1.2."),
        )
        .extra(json!({"args": {"cni": {"ips": ["10.1.2.7", "10.1.2.8"]}}}))
        .leaks_in_reference(),
        case(
            "container already has an address",
            110,
            Msg::Exact(
                "failed to allocate for range 0: 10.1.2.2 has been allocated to bad-input, \
                 duplicate allocation is not allowed",
            ),
        )
        .seeded("10.1.2.2", &reservation(ID, "eth0")),
        case(
            "subnet with host bits set",
            7,
            Msg::Exact(
                "invalid range set 0: Network has host bits set. For a subnet mask of length \
                 16 the network address is 10.1.0.0",
            ),
        )
        .ipam(one_range(json!({"subnet": "10.1.2.0/16"}))),
        case(
            "a /31",
            7,
            Msg::Exact("invalid range set 0: Network 10.1.2.0/31 too small to allocate from"),
        )
        .ipam(one_range(json!({"subnet": "10.1.2.0/31"}))),
        case(
            "an IPv6 /128",
            7,
            Msg::Exact("invalid range set 0: Network 2001:db8::1/128 too small to allocate from"),
        )
        .ipam(one_range(json!({"subnet": "2001:db8::1/128"}))),
        case(
            "rangeStart outside the subnet",
            7,
            Msg::Exact("invalid range set 0: RangeStart 10.1.3.1 not in network 10.1.2.0/24"),
        )
        .ipam(one_range(
            json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.3.1"}),
        )),
        case(
            "rangeEnd outside the subnet",
            7,
            Msg::Exact("invalid range set 0: RangeEnd 10.1.1.200 not in network 10.1.2.0/24"),
        )
        .ipam(one_range(
            json!({"subnet": "10.1.2.0/24", "rangeEnd": "10.1.1.200"}),
        )),
        case("rangeStart after rangeEnd", 7, Msg::Mentions(&["10.1.2.9"])).ipam(one_range(
            json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.9", "rangeEnd": "10.1.2.5"}),
        )),
        case(
            "overlapping range sets",
            7,
            Msg::Exact("range set 0 overlaps with 1"),
        )
        .ipam(json!({"ranges": ranges(&[&["10.1.0.0/16"], &["10.1.2.0/24"]])})),
        case(
            "overlapping ranges in one set",
            7,
            Msg::Exact(
                "invalid range set 0: subnets 10.1.2.1-10.1.2.254 and 10.1.2.1-10.1.2.126 overlap",
            ),
        )
        .ipam(json!({"ranges": ranges(&[&["10.1.2.0/24", "10.1.2.0/25"]])})),
        case(
            "mixed families in one set",
            7,
            Msg::Exact("invalid range set 0: mixed address families"),
        )
        .ipam(json!({"ranges": ranges(&[&["2001:db8::/64", "10.1.2.0/24"]])})),
        case(
            "empty range set",
            7,
            Msg::Exact("invalid range set 0: empty range set"),
        )
        .ipam(json!({"ranges": [[]]})),
        case("no ranges", 7, Msg::Exact("no IP ranges specified")).ipam(json!({})),
        case("unparsable subnet", 7, Msg::Mentions(&["not-a-cidr"]))
            .ipam(one_range(json!({"subnet": "not-a-cidr"}))),
        case("unparsable rangeStart", 7, Msg::Mentions(&["10.1.2.x"])).ipam(one_range(
            json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.x"}),
        )),
        case("ranges of the wrong type", 7, Msg::Mentions(&["ranges"]))
            .ipam(json!({"ranges": "10.1.2.0/24"})),
        case("args.cni.ips not an address", 7, Msg::Mentions(&["bogus"]))
            .extra(json!({"args": {"cni": {"ips": ["bogus"]}}})),
        case(
            "runtimeConfig.ips not an address",
            7,
            Msg::Mentions(&["bogus"]),
        )
        .extra(json!({"runtimeConfig": {"ips": ["bogus"]}})),
        case(
            "CNI_ARGS IP not an address",
            4,
            Msg::Exact(
                "ARGS: error parsing value of pair \"IP=10.1.2.300\": invalid IP address \
                 10.1.2.300",
            ),
        )
        .args("IP=10.1.2.300"),
        case(
            "CNI_ARGS IP without a value separator",
            4,
            Msg::Exact("ARGS: invalid pair \"IP\""),
        )
        .args("IP"),
        case(
            "CNI_ARGS unknown key",
            4,
            Msg::Exact("ARGS: unknown args [\"FOO=1\"]"),
        )
        .args("IP=10.1.2.9;FOO=1"),
        case(
            "subnet usePodCidr in ranges",
            7,
            Msg::Mentions(&["usePodCidr", "calico"]),
        )
        .ipam(one_range(json!({"subnet": "usePodCidr"})))
        .ours_only(),
        case(
            "legacy subnet usePodCidr",
            7,
            Msg::Mentions(&["usePodCidr", "calico"]),
        )
        .ipam(json!({"subnet": "usePodCidr"}))
        .ours_only(),
        case(
            "dataDir is a regular file",
            104,
            Msg::Mentions(&["not-a-dir"]),
        )
        .data_dir_is_a_file(),
        case(
            "CHECK without a reservation",
            109,
            Msg::Exact("host-local: Failed to find address added by container bad-input"),
        )
        .command("CHECK")
        .seeded("10.1.2.2", &other),
        // Ours releases here (DEL needs only the store): see host_local_scenarios.
        case(
            "DEL with no ranges",
            7,
            Msg::Exact("no IP ranges specified"),
        )
        .command("DEL")
        .ipam(json!({}))
        .seeded("10.1.2.2", &reservation(ID, "eth0"))
        .reference_only(),
    ]
}

/// Files that count as written: not directories, not an empty `lock`, and (when asked) not
/// `last_reserved_ip.*`.
fn written(root: &Path, skip_last: bool) -> BTreeMap<String, Vec<u8>> {
    files_only(&snapshot(root).expect("snapshot"))
        .into_iter()
        .filter(|(k, v)| !(k.ends_with("/lock") && v.is_empty()))
        .filter(|(k, _)| !(skip_last && k.contains("/last_reserved_ip.")))
        .collect()
}

/// Runs the table (for the reference, without the ours-only cases); returns the failures.
fn run_table(bin_dir: &Path, ours: bool) -> Vec<String> {
    let netns = TestNetns::new("hlbad").expect("netns");
    let hl = HostLocal::in_dir(bin_dir, netns.path_str());
    let mut failures = Vec::new();
    for c in cases() {
        if (c.ours_only && !ours) || (c.reference_only && ours) {
            // usePodCidr: the reference only says `invalid CIDR address: usePodCidr`.
            continue;
        }
        let dir = TestDir::new().expect("temp dir");
        let data = if c.data_dir_is_a_file {
            let f = dir.path().join("not-a-dir");
            fs::write(&f, b"x").expect("write");
            f
        } else {
            dir.path().join("data")
        };
        for (name, contents) in &c.seeded {
            seed(&data, name, contents).expect("seed");
        }
        // The last reservation made in the range set, as a node in use would have.
        if !c.seeded.is_empty() {
            seed(&data, "last_reserved_ip.0", c.seeded[0].0.as_bytes()).expect("seed");
        }
        let mut conf = conf("1.0.0", &data, c.ipam.clone());
        for (k, v) in c.extra.as_object().into_iter().flatten() {
            conf[k] = v.clone();
        }
        let exempt = !ours && c.reference_moves_last_reserved;
        let before = written(dir.path(), exempt);
        let out = hl
            .op(c.command, &conf, ID, "eth0", c.cni_args)
            .expect("run host-local");
        let after = written(dir.path(), exempt);
        let text = out.json.as_ref().map(|j| {
            format!(
                "{} {}",
                j["msg"].as_str().unwrap_or_default(),
                j["details"].as_str().unwrap_or_default()
            )
        });
        let problem = if out.exit != Some(1) || out.msg().is_none() {
            Some(out.describe())
        } else if ours && out.code() != Some(c.code) {
            Some(format!("code {:?} instead of {}", out.code(), c.code))
        } else {
            let msg = out.msg().unwrap_or_default();
            match c.msg {
                Msg::Exact(m) if msg != m => Some(format!("message {msg:?}, expected {m:?}")),
                Msg::Prefix(p) if !msg.starts_with(p) => {
                    Some(format!("message {msg:?}, expected it to start {p:?}"))
                }
                Msg::Mentions(words)
                    if !words
                        .iter()
                        .all(|w| text.as_deref().unwrap_or_default().contains(w)) =>
                {
                    Some(format!("{text:?} does not mention {words:?}"))
                }
                _ => None,
            }
        };
        let problem = problem.or_else(|| {
            (before != after).then(|| {
                format!(
                    "the store changed:\nbefore:\n{}\nafter:\n{}",
                    show(&before),
                    show(&after)
                )
            })
        });
        if let Some(p) = problem {
            failures.push(format!("{} ({} {}): {p}", c.what, c.command, c.ipam));
        }
        if c.data_dir_is_a_file {
            assert_eq!(fs::read(&data).expect("read"), b"x", "{}", c.what);
        }
    }
    failures
}

#[test]
fn every_bad_input_gets_a_cni_error_and_writes_nothing() {
    let failures = run_table(&plugin_dir(), true);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn reference_gives_the_same_messages() {
    let failures = run_table(&reference_plugin_dir(), false);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// host-local ADD or DEL with CNI_ARGS given as raw bytes; returns the exit code and stdout.
fn call_with_raw_args(bin_dir: &Path, command: &str, data: &Path, args: &[u8]) -> (i32, Value) {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::process::{Command, Stdio};
    let stdin = conf(
        "1.0.0",
        data,
        json!({"ranges": ranges(&[&["10.1.2.0/24"]])}),
    )
    .to_string();
    let mut child = Command::new(bin_dir.join("host-local"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "raw-args")
        .env("CNI_NETNS", "/var/run/netns/unused")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin_dir)
        .env("CNI_ARGS", std::ffi::OsStr::from_bytes(args))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("host-local runs");
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that refuses its environment answers before reading stdin, and may have
        // exited already.
        match pipe.write_all(stdin.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
            _ => {}
        }
    }
    let out = child.wait_with_output().expect("host-local finishes");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

/// A pair that is not UTF-8 must never make the others vanish: `IP=` is honoured, or ADD
/// fails with an error object; it never succeeds with another address. The reference (Go
/// strings hold any bytes) honours IP; ours refuses with code 4 naming the pair's key. DEL
/// needs no CNI_ARGS, so it skips the pair and releases the container's address.
#[test]
fn a_cni_args_pair_that_is_not_utf8_never_hides_ip() {
    let args: &[u8] = b"IgnoreUnknown=1;IP=10.1.2.77;X=\xff";
    for (bin_dir, ours) in [(plugin_dir(), true), (reference_plugin_dir(), false)] {
        let dir = TestDir::new().expect("dir");
        let data = dir.path().join("data");
        let (code, out) = call_with_raw_args(&bin_dir, "ADD", &data, args);
        let what = format!("{} ADD: {out}", bin_dir.display());
        if code == 0 {
            assert_eq!(out["ips"][0]["address"], "10.1.2.77/24", "{what}");
        } else {
            assert_eq!(code, 1, "{what}");
            assert!(out["code"].is_u64(), "no error object: {what}");
            assert!(
                !data.join("mynet").join("10.1.2.77").exists(),
                "a failed ADD reserved: {what}"
            );
        }
        if ours {
            assert_eq!(out["code"], 4, "{what}");
            let msg = out["msg"].as_str().unwrap_or_default();
            assert!(msg.contains("CNI_ARGS") && msg.contains("\"X\""), "{what}");
            // The runtime's DEL after the failed ADD must release what the container holds.
            let seeded = data.join("mynet").join("10.1.2.5");
            fs::create_dir_all(data.join("mynet")).expect("mkdir");
            fs::write(&seeded, reservation("raw-args", "eth0")).expect("seed");
            let (code, out) = call_with_raw_args(&bin_dir, "DEL", &data, args);
            assert_eq!(code, 0, "DEL: {out}");
            assert!(!seeded.exists(), "DEL released nothing");
        }
    }
}
