//! The `etcdv3` datastore against a real etcd (Debian's, started per test on its own
//! loopback ports): compare-and-swap exactly as the in-memory reference, Calico's keys and
//! JSON byte for byte as another Calico client would read them, endpoint failover, quick
//! "unavailable" answers, a cluster losing a member, and TLS with client certificates.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use calico_ipam::model::{AffinityState, BlockAffinity, IpamBlock, IpamConfig, IpamHandle};
use calico_ipam::store::codec;
use calico_ipam::store::etcd::{EtcdConfig, EtcdKv, EtcdSettings};
use calico_ipam::store::kv::{Kv, KvStore};
use calico_ipam::store::memory::MemoryKv;
use calico_ipam::store::{Store, StoreError};
use cni_tests::etcd::{EtcdCluster, EtcdServer, TestPki};
use cni_tests::fixtures::free_tcp_port;
use cni_tests::ipam::{merge, IpamFixture, POOL_PREFIX};
use ipnetwork::IpNetwork;
use serde_json::{json, Value};

fn etcd() -> EtcdServer {
    EtcdServer::start().expect("start etcd (apt-get install -y etcd-server)")
}

fn kv_for(endpoints: Vec<String>) -> EtcdKv {
    EtcdKv::new(&EtcdConfig::new(endpoints)).expect("client")
}

fn cidr(text: &str) -> IpNetwork {
    text.parse().expect("cidr")
}

/// An endpoint where nothing listens: connections are refused at once.
fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_tcp_port().expect("port"))
}

// ---- raw etcd access, independent of the client under test ------------------------------

fn raw_post(endpoint: &str, path: &str, body: Value) -> Value {
    let mut response = ureq::post(format!("{endpoint}{path}"))
        .send(body.to_string())
        .expect("raw request");
    let text = response.body_mut().read_to_string().expect("raw body");
    serde_json::from_str(&text).expect("raw json")
}

fn raw_get(endpoint: &str, key: &str) -> Option<(Vec<u8>, String)> {
    let answer = raw_post(endpoint, "/v3/kv/range", json!({ "key": B64.encode(key) }));
    let kv = answer["kvs"].get(0)?;
    let value = B64
        .decode(kv["value"].as_str().unwrap_or_default())
        .expect("base64 value");
    Some((value, kv["mod_revision"].as_str().expect("revision").into()))
}

fn raw_put(endpoint: &str, key: &str, value: &[u8]) {
    raw_post(
        endpoint,
        "/v3/kv/put",
        json!({ "key": B64.encode(key), "value": B64.encode(value) }),
    );
}

fn raw_json(endpoint: &str, key: &str) -> Value {
    let (bytes, _) = raw_get(endpoint, key).unwrap_or_else(|| panic!("{key} missing in etcd"));
    serde_json::from_slice(&bytes).expect("value is JSON")
}

// ---- compare-and-swap ---------------------------------------------------------------------

/// One script of operations with every outcome written down, so two `Kv`s can be compared
/// outcome for outcome (revisions themselves differ between backends).
fn cas_script(kv: &dyn Kv) -> Vec<String> {
    fn outcome<T>(r: Result<T, StoreError>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(StoreError::NotFound(k)) => format!("NotFound {k}"),
            Err(StoreError::AlreadyExists(k)) => format!("AlreadyExists {k}"),
            Err(StoreError::Conflict(k)) => format!("Conflict {k}"),
            Err(e) => format!("other: {e}"),
        }
    }
    let mut log = Vec::new();
    let r1 = kv.create("/t/a", b"1").expect("create");
    log.push(outcome(kv.create("/t/a", b"2")));
    log.push(format!(
        "{:?}",
        kv.get("/t/a").expect("get").map(|(v, _)| v)
    ));
    let r2 = kv.update("/t/a", b"2", &r1).expect("update");
    log.push(format!(
        "read revision is the update's: {}",
        kv.get("/t/a").expect("get").map(|(_, r)| r) == Some(r2.clone())
    ));
    log.push(outcome(kv.update("/t/a", b"3", &r1)));
    log.push(outcome(kv.delete("/t/a", &r1)));
    log.push(outcome(kv.update("/t/missing", b"x", &r2)));
    log.push(outcome(kv.delete("/t/missing", &r2)));
    log.push(outcome(kv.update(
        "/t/a",
        b"x",
        &"not-a-revision".to_string(),
    )));
    log.push(outcome(kv.update("/t/missing", b"x", &"0".to_string())));
    log.push(outcome(kv.delete("/t/a", &r2)));
    log.push(format!("{:?}", kv.get("/t/a").expect("get")));
    log.push(outcome(kv.update("/t/a", b"4", &r2)));
    let r3 = kv.create("/t/a", b"again").expect("re-create after delete");
    log.push(format!("new revision differs: {}", r3 != r2));
    log.push(outcome(kv.update("/t/a", b"5", &r3)));
    log.push(outcome(kv.create("/t/empty", b"")));
    log.push(format!(
        "{:?}",
        kv.get("/t/empty").expect("get").map(|(v, _)| v)
    ));
    log
}

#[test]
fn compare_and_swap_matches_the_memory_store() {
    let server = etcd();
    let etcd_kv = kv_for(vec![server.client_url()]);
    let on_etcd = cas_script(&etcd_kv);
    let on_memory = cas_script(&MemoryKv::new());
    assert_eq!(on_etcd, on_memory);
    assert!(
        on_etcd.contains(&"AlreadyExists /t/a".to_string()),
        "{on_etcd:?}"
    );
    assert!(
        on_etcd.contains(&"Conflict /t/a".to_string()),
        "{on_etcd:?}"
    );
    assert!(
        on_etcd.contains(&"NotFound /t/missing".to_string()),
        "{on_etcd:?}"
    );
}

#[test]
fn revisions_are_etcd_mod_revisions() {
    let server = etcd();
    let kv = kv_for(vec![server.client_url()]);
    let created = kv.create("/t/r", b"v1").expect("create");
    assert_eq!(
        raw_get(&server.client_url(), "/t/r").map(|(_, r)| r),
        Some(created.clone())
    );
    let updated = kv.update("/t/r", b"v2", &created).expect("update");
    assert_eq!(
        raw_get(&server.client_url(), "/t/r"),
        Some((b"v2".to_vec(), updated.clone()))
    );
    // Someone else's write moves the revision: our stale one now loses.
    raw_put(&server.client_url(), "/t/r", b"theirs");
    assert!(matches!(
        kv.update("/t/r", b"v3", &updated),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        kv.delete("/t/r", &updated),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        raw_get(&server.client_url(), "/t/r").map(|(v, _)| v),
        Some(b"theirs".to_vec())
    );
}

#[test]
fn list_returns_exactly_the_prefix_in_key_order() {
    let server = etcd();
    let kv = kv_for(vec![server.client_url()]);
    for key in [
        "/p/b",
        "/p0",
        "/p/a/x",
        "/o/z",
        "/p/a",
        "/p",
        "/p/\u{e9}",
        "/q",
    ] {
        kv.create(key, key.as_bytes()).expect("create");
    }
    let listed: Vec<(String, Vec<u8>)> = kv
        .list("/p/")
        .expect("list")
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["/p/a", "/p/a/x", "/p/b", "/p/\u{e9}"]);
    assert!(listed.iter().all(|(k, v)| k.as_bytes() == v.as_slice()));
    assert!(kv.list("/nothing/").expect("list").is_empty());
    // Revisions from a list are usable for compare-and-swap.
    let (key, _, rev) = kv.list("/p/b").expect("list").remove(0);
    kv.update(&key, b"new", &rev)
        .expect("update with a listed revision");
}

// ---- Calico's layout through the Store ------------------------------------------------------

#[test]
fn the_store_writes_calicos_keys_and_values() {
    let server = etcd();
    let url = server.client_url();
    let store = KvStore::new(kv_for(vec![url.clone()]));

    let mut block = IpamBlock::new(cidr("10.244.1.64/26"), Some("host:n1".into()), 7);
    let rev = store.create_block(&block).expect("create block");
    let key = "/calico/ipam/v2/assignment/ipv4/block/10.244.1.64-26";
    let raw = raw_json(&url, key);
    assert_eq!(raw["cidr"], "10.244.1.64/26");
    assert_eq!(raw["affinity"], "host:n1");
    assert_eq!(raw["allocations"].as_array().map(Vec::len), Some(64));
    assert_eq!(raw["sequenceNumber"], 7);
    assert_eq!(raw["deleted"], false);
    let encoded: Value = serde_json::from_slice(&codec::encode_block(&block)).expect("json");
    assert_eq!(raw, encoded);
    assert_eq!(raw_get(&url, key).map(|(_, r)| r), Some(rev.clone()));

    block.sequence_number += 1;
    let rev2 = store.update_block(&block, &rev).expect("update block");
    assert_eq!(raw_json(&url, key)["sequenceNumber"], 8);
    assert!(matches!(
        store.update_block(&block, &rev),
        Err(StoreError::Conflict(_))
    ));

    let v6 = IpamBlock::new(cidr("fd00::40/122"), None, 1);
    store.create_block(&v6).expect("create v6 block");
    assert_eq!(
        raw_json(&url, "/calico/ipam/v2/assignment/ipv6/block/fd00::40-122")["affinity"],
        Value::Null
    );
    assert_eq!(store.list_blocks(true).expect("v4").len(), 1);
    assert_eq!(store.list_blocks(false).expect("v6").len(), 1);

    let affinity = BlockAffinity::host("n1", block.cidr, AffinityState::Confirmed);
    store.create_affinity(&affinity).expect("create affinity");
    assert_eq!(
        raw_json(&url, "/calico/ipam/v2/host/n1/ipv4/block/10.244.1.64-26"),
        json!({"state": "confirmed", "deleted": false})
    );

    let handle = IpamHandle {
        handle_id: "k8s-pod-network.ABCdef0123".into(),
        block: BTreeMap::from([("10.244.1.64/26".to_string(), 1)]),
        deleted: false,
        extra: Default::default(),
    };
    store.create_handle(&handle).expect("create handle");
    assert_eq!(
        raw_json(&url, "/calico/ipam/v2/handle/k8s-pod-network.ABCdef0123"),
        json!({"block": {"10.244.1.64/26": 1}, "deleted": false})
    );

    store
        .create_ipam_config(&IpamConfig::default())
        .expect("create config");
    assert_eq!(
        raw_json(&url, "/calico/ipam/v2/config"),
        json!({"auto_allocate_blocks": true})
    );

    store
        .delete_block(&block.cidr, &rev2)
        .expect("delete block");
    assert_eq!(raw_get(&url, key), None);
}

#[test]
fn objects_written_by_calico_decode() {
    let server = etcd();
    let url = server.client_url();
    // Values as libcalico-go writes them, including fields this implementation does not
    // model and an affinity from very old data with an empty value.
    let block = br#"{"cidr":"10.244.1.64/30","affinity":"host:n1","strictAffinity":false,"allocations":[0,null,1,null],"unallocated":[3,1],"attributes":[{"handle_id":"k8s-pod-network.c1","secondary":{"namespace":"default","node":"n1","pod":"p1","timestamp":"2024-01-01 00:00:00.000000001 +0000 UTC"}},{"handle_id":"ipip-tunnel-addr-n1","secondary":{"node":"n1","type":"ipipTunnelAddress"}}],"deleted":false,"sequenceNumber":1700000000000000000,"sequenceNumberForAllocation":{"0":1700000000000000000,"2":1700000000000000001},"affinity_claim_time":"2024-01-01T00:00:00Z"}"#;
    raw_put(
        &url,
        "/calico/ipam/v2/assignment/ipv4/block/10.244.1.64-30",
        block,
    );
    raw_put(
        &url,
        "/calico/ipam/v2/host/n1/ipv4/block/10.244.1.64-30",
        b"",
    );
    raw_put(
        &url,
        "/calico/ipam/v2/host/n1/ipv4/block/10.244.2.0-26",
        br#"{"state":"pending","deleted":false}"#,
    );
    raw_put(
        &url,
        "/calico/ipam/v2/handle/k8s-pod-network.c1",
        br#"{"block":{"10.244.1.64/30":1},"deleted":false}"#,
    );
    raw_put(
        &url,
        "/calico/ipam/v2/config",
        br#"{"strict_affinity":true,"maxBlocksPerHost":4}"#,
    );
    raw_put(
        &url,
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
        br#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"default-ipv4-ippool","uid":"1","creationTimestamp":"2024-01-01T00:00:00Z"},"spec":{"cidr":"10.244.0.0/16","ipipMode":"Always","natOutgoing":true,"blockSize":26,"nodeSelector":"all()"}}"#,
    );

    let store = KvStore::new(kv_for(vec![url.clone()]));
    let read = store
        .get_block(&cidr("10.244.1.64/30"))
        .expect("get")
        .expect("present");
    assert_eq!(read.value.affinity.as_deref(), Some("host:n1"));
    assert_eq!(read.value.allocations, [Some(0), None, Some(1), None]);
    assert_eq!(read.value.unallocated, [3, 1]);
    assert_eq!(
        read.value.attributes[0].handle_id.as_deref(),
        Some("k8s-pod-network.c1")
    );
    assert_eq!(read.value.attributes[0].secondary["pod"], "p1");
    assert_eq!(read.value.sequence_number, 1_700_000_000_000_000_000);
    // What we do not model survives our rewrite.
    let rev = store
        .update_block(&read.value, &read.revision)
        .expect("rewrite");
    assert_eq!(
        raw_json(&url, "/calico/ipam/v2/assignment/ipv4/block/10.244.1.64-30")
            ["affinity_claim_time"],
        "2024-01-01T00:00:00Z"
    );
    assert!(!rev.is_empty());

    let old = store
        .get_affinity("host", "n1", &cidr("10.244.1.64/30"))
        .expect("get")
        .expect("present");
    assert_eq!(old.value.state, AffinityState::Confirmed);
    let states: Vec<AffinityState> = store
        .list_affinities("host", "n1", true)
        .expect("list")
        .into_iter()
        .map(|a| a.value.state)
        .collect();
    assert_eq!(states, [AffinityState::Confirmed, AffinityState::Pending]);

    let handle = store
        .get_handle("k8s-pod-network.c1")
        .expect("get")
        .expect("present");
    assert_eq!(handle.value.block["10.244.1.64/30"], 1);
    let config = store.get_ipam_config().expect("get").expect("present");
    assert!(config.value.strict_affinity);
    assert!(!config.value.auto_allocate_blocks);
    assert_eq!(config.value.max_blocks_per_host, 4);
    let pools = store.list_pools().expect("pools");
    assert_eq!(pools.len(), 1);
    assert_eq!(
        (pools[0].name.as_str(), pools[0].block_size),
        ("default-ipv4-ippool", 26)
    );
}

// ---- reaching etcd ------------------------------------------------------------------------

#[test]
fn a_dead_first_endpoint_fails_over_to_the_second() {
    let mut dead_server = etcd();
    let dead_url = dead_server.client_url();
    dead_server.kill();
    let server = etcd();
    let settings = EtcdSettings {
        endpoints: Some(format!(
            "{dead_url},{},{}",
            dead_endpoint(),
            server.client_url()
        )),
        ..Default::default()
    };
    let config = EtcdConfig::from_conf_and(&settings, |_| None).expect("config");
    let store = EtcdKv::store(&config).expect("client");
    store.ping().expect("ping through the third endpoint");
    let rev = store.create_handle(&IpamHandle {
        handle_id: "h".into(),
        block: BTreeMap::new(),
        deleted: false,
        extra: Default::default(),
    });
    let rev = rev.expect("create through the third endpoint");
    assert!(store
        .get_handle("h")
        .expect("get")
        .is_some_and(|h| h.revision == rev));
    assert!(raw_get(&server.client_url(), "/calico/ipam/v2/handle/h").is_some());
}

#[test]
fn no_live_endpoint_is_unavailable_quickly_and_names_them() {
    let mut killed = etcd();
    let killed_url = killed.client_url();
    killed.kill();
    let never = dead_endpoint();
    let kv = kv_for(vec![killed_url.clone(), never.clone()]);
    type Op<'a> = Box<dyn Fn() -> Result<(), StoreError> + 'a>;
    let ops: [(&str, Op); 5] = [
        ("ping", Box::new(|| kv.ping())),
        ("get", Box::new(|| kv.get("/k").map(|_| ()))),
        ("list", Box::new(|| kv.list("/").map(|_| ()))),
        ("create", Box::new(|| kv.create("/k", b"v").map(|_| ()))),
        (
            "update",
            Box::new(|| kv.update("/k", b"v", &"5".to_string()).map(|_| ())),
        ),
    ];
    for (op, run) in ops {
        let started = Instant::now();
        match run() {
            Err(StoreError::Unavailable(message)) => {
                assert!(
                    message.contains(&killed_url) && message.contains(&never),
                    "{op}: {message}"
                );
            }
            other => panic!("{op}: expected Unavailable, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{op} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_member_that_never_answers_costs_one_timeout() {
    // Accepts connections (the kernel does, from the backlog) but never reads a request.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    let server = etcd();
    let config = EtcdConfig {
        timeout: Duration::from_millis(500),
        ..EtcdConfig::new(vec![silent_url.clone(), server.client_url()])
    };
    let kv = EtcdKv::new(&config).expect("client");
    // A write may have reached a member that then went quiet: not replayed elsewhere.
    let started = Instant::now();
    match kv.create("/w", b"1") {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.contains("unknown") && message.contains(&silent_url),
                "{message}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(raw_get(&server.client_url(), "/w"), None);
    // A read is safe to repeat: it moves on, and the live member is used from then on.
    assert_eq!(kv.get("/w").expect("read fails over"), None);
    let started = Instant::now();
    kv.create("/w", b"1")
        .expect("write to the member that answered");
    assert!(started.elapsed() < Duration::from_millis(400));
}

#[test]
fn a_cluster_keeps_serving_writes_with_one_member_killed() {
    let mut cluster = EtcdCluster::start(3).expect("3-member cluster");
    let urls = cluster.client_urls();
    let kv = kv_for(urls.clone());
    let mut rev = kv.create("/c/counter", b"0").expect("create");
    // The client holds a kept-alive connection to the first member; kill exactly that one.
    cluster.kill_member(0);
    for i in 1..=20u32 {
        let (value, current) = kv.get("/c/counter").expect("read").expect("present");
        assert_eq!(current, rev);
        let n: u32 = String::from_utf8(value)
            .expect("utf8")
            .parse()
            .expect("number");
        assert_eq!(n + 1, i);
        rev = kv
            .update("/c/counter", i.to_string().as_bytes(), &rev)
            .unwrap_or_else(|e| {
                panic!("write {i} with member 0 dead: {e}\n{}", cluster.log_tail(1))
            });
    }
    // Every surviving member has the last write.
    for url in &urls[1..] {
        assert_eq!(
            raw_get(url, "/c/counter"),
            Some((b"20".to_vec(), rev.clone()))
        );
    }
    assert!(matches!(
        kv.update("/c/counter", b"x", &"2".to_string()),
        Err(StoreError::Conflict(_))
    ));
}

// ---- TLS --------------------------------------------------------------------------------------

/// Runs `openssl` in `dir`; a failure shows its stderr.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A client certificate as `openssl x509 -req` makes it without an extfile: X.509 v1 (no
/// extensions at all), signed by `pki`'s CA. Returns (certificate, key) in `dir`.
fn v1_client_cert(pki: &TestPki, dir: &Path) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "v1.key",
            "-out",
            "v1.csr",
            "-subj",
            "/CN=v1",
        ],
    );
    let ca_key = pki.ca().with_extension("key");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "v1.csr",
            "-CA",
            &pki.ca().display().to_string(),
            "-CAkey",
            &ca_key.display().to_string(),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "v1.pem",
        ],
    );
    let text = openssl(dir, &["x509", "-in", "v1.pem", "-noout", "-text"]);
    assert!(
        text.contains("Version: 1 (0x0)"),
        "not a v1 certificate:\n{text}"
    );
    (dir.join("v1.pem"), dir.join("v1.key"))
}

/// A client for `url` with these TLS files.
fn tls_config(url: &str, cert: PathBuf, key: PathBuf, ca: PathBuf) -> EtcdConfig {
    EtcdConfig {
        cert_file: Some(cert),
        key_file: Some(key),
        ca_cert_file: Some(ca),
        ..EtcdConfig::new(vec![url.to_string()])
    }
}

/// Client TLS material that cannot work is a config error naming the file when the client
/// is made, never a panic at the first request: a key that is not the certificate's (v3 or
/// v1), a key whose PEM frame holds no key, a file that is not there.
#[test]
fn unusable_client_tls_material_is_named_not_a_panic() {
    let pki = TestPki::generate().expect("openssl-made certificates");
    let dir = tempfile::tempdir().expect("dir");
    let bad_der = dir.path().join("bad-der.key");
    std::fs::write(
        &bad_der,
        "-----BEGIN PRIVATE KEY-----\nAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let (v1_cert, _) = v1_client_cert(&pki, dir.path());
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            "a key that is not the certificate's",
            (pki.client_cert(), pki.server_key(), pki.ca()),
            pki.server_key(),
            "is not the one of",
        ),
        (
            "a key that is not the v1 certificate's",
            (v1_cert.clone(), pki.client_key(), pki.ca()),
            pki.client_key(),
            "is not the one of",
        ),
        (
            "a key that is no key",
            (pki.client_cert(), bad_der.clone(), pki.ca()),
            bad_der.clone(),
            "private key",
        ),
        (
            "a missing certificate",
            (missing.clone(), pki.client_key(), pki.ca()),
            missing.clone(),
            "cannot read",
        ),
        (
            "a missing key",
            (pki.client_cert(), missing.clone(), pki.ca()),
            missing.clone(),
            "cannot read",
        ),
        (
            "a missing CA",
            (pki.client_cert(), pki.client_key(), missing.clone()),
            missing.clone(),
            "cannot read",
        ),
    ];
    for (what, (cert, key, ca), named, says) in cases {
        let config = tls_config("https://127.0.0.1:1", cert, key, ca);
        let Err(err) = EtcdKv::new(&config).map(|_| ()) else {
            panic!("{what}: accepted");
        };
        let err = err.to_string();
        assert!(err.contains(&named.display().to_string()), "{what}: {err}");
        assert!(err.contains(says), "{what}: {err}");
    }
}

/// etcd (Go) takes an X.509 v1 client certificate and etcdctl presents one: so do we. etcd
/// runs with `--client-cert-auth`, so an answer at all means it authenticated us; what the
/// v1 client wrote is read back through a client with the v3 certificate.
#[test]
fn a_v1_client_certificate_is_presented_as_etcdctl_presents_it() {
    let pki = TestPki::generate().expect("openssl-made certificates");
    let server = EtcdServer::start_tls(&pki).expect("etcd with TLS");
    let url = server.client_url();
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = v1_client_cert(&pki, dir.path());

    let v1 = EtcdKv::store(&tls_config(&url, cert, key, pki.ca())).expect("client with v1");
    v1.ping().expect("ping with a v1 client certificate");
    let handle = IpamHandle {
        handle_id: "k8s-pod-network.v1".into(),
        block: BTreeMap::from([("10.244.1.64/26".to_string(), 1)]),
        deleted: false,
        extra: Default::default(),
    };
    let rev = v1.create_handle(&handle).expect("create with v1");

    let v3 = EtcdKv::store(&tls_config(
        &url,
        pki.client_cert(),
        pki.client_key(),
        pki.ca(),
    ))
    .expect("client with v3");
    let read = v3
        .get_handle("k8s-pod-network.v1")
        .expect("read with v3")
        .expect("the v1 client's write is in etcd");
    assert_eq!(read.revision, rev);
    assert_eq!(read.value.block, handle.block);
}

/// An etcd whose server certificate is not from `etcd_ca_cert_file`'s CA will not become
/// trusted by retrying: the store says so and names the file and the endpoint, and the
/// plugin answers code 7 (invalid network configuration), not 11 ("try again later"),
/// at once, having written nothing.
#[test]
fn an_etcd_from_another_ca_is_a_configuration_error_not_a_retry() {
    let pki = TestPki::generate().expect("etcd's certificates");
    let other = TestPki::generate().expect("another CA");
    let server = EtcdServer::start_tls(&pki).expect("etcd with TLS");
    let url = server.client_url();
    let wrong_ca = other.ca();
    let trusted = EtcdKv::new(&tls_config(
        &url,
        pki.client_cert(),
        pki.client_key(),
        pki.ca(),
    ))
    .expect("trusted client");

    let kv = EtcdKv::new(&tls_config(
        &url,
        pki.client_cert(),
        pki.client_key(),
        wrong_ca.clone(),
    ))
    .expect("client");
    let started = Instant::now();
    let err = kv
        .create("/tls/untrusted", b"1")
        .expect_err("etcd is not trusted");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !matches!(err, StoreError::Unavailable(_)),
        "retryable: {err:?}"
    );
    let message = err.to_string();
    eprintln!("untrusted etcd: {message}");
    assert!(
        message.contains(&wrong_ca.display().to_string()),
        "{message}"
    );
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("etcd_ca_cert_file"), "{message}");

    // Through the plugin, with a pool in place so that a trusted etcd would get writes.
    let pool = json!({
        "kind": "IPPool",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "tls-pool"},
        "spec": {"cidr": "10.78.0.0/24", "blockSize": 26, "ipipMode": "Never",
                 "natOutgoing": true, "nodeSelector": "all()"},
    });
    let pool_key = format!("{POOL_PREFIX}tls-pool");
    trusted
        .create(&pool_key, pool.to_string().as_bytes())
        .expect("create the pool");
    let fx = IpamFixture::on_etcd(&url);
    let mut conf = fx.conf("1.0.0", "node-a", json!({"ipv4_pools": ["10.78.0.0/24"]}));
    merge(
        &mut conf,
        &json!({
            "etcd_ca_cert_file": wrong_ca,
            "etcd_cert_file": pki.client_cert(),
            "etcd_key_file": pki.client_key(),
        }),
    );
    let started = Instant::now();
    let out = fx.call("ADD", &conf, "untrusted-etcd", &[]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(out.exit, Some(0), "{}", out.describe());
    let answer = out
        .json
        .clone()
        .unwrap_or_else(|| panic!("{}", out.describe()));
    eprintln!("untrusted etcd, through the plugin: {answer}");
    assert_eq!(answer["code"], 7, "{answer}");
    let msg = answer["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(&wrong_ca.display().to_string()), "{answer}");
    assert!(msg.contains(&url), "{answer}");

    let keys: Vec<String> = trusted
        .list("/")
        .expect("list through the trusted client")
        .into_iter()
        .map(|(k, _, _)| k)
        .collect();
    assert_eq!(keys, [pool_key], "written despite the untrusted etcd");
}

/// Over TLS too, an endpoint that refuses connections or one that accepts and never
/// answers the handshake is "unavailable, try again", reached within the connect timeout.
#[test]
fn a_refused_or_silent_https_etcd_stays_retryable() {
    let pki = TestPki::generate().expect("openssl-made certificates");
    // Accepts connections (the kernel does, from the backlog) but never says ServerHello.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let silent_url = format!("https://{}", silent.local_addr().expect("addr"));
    let refused_url = dead_endpoint().replace("http://", "https://");
    let config = EtcdConfig {
        endpoints: vec![silent_url.clone(), refused_url.clone()],
        ..tls_config(&silent_url, pki.client_cert(), pki.client_key(), pki.ca())
    };
    let kv = EtcdKv::new(&config).expect("client");
    let started = Instant::now();
    match kv.create("/tls/retry", b"1") {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains(&silent_url), "{message}");
            assert!(message.contains(&refused_url), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn tls_with_client_certificates() {
    let pki = TestPki::generate().expect("openssl-made certificates");
    let server = EtcdServer::start_tls(&pki).expect("etcd with TLS");
    let url = server.client_url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let path = |p: std::path::PathBuf| Some(p.display().to_string());
    let settings = EtcdSettings {
        endpoints: Some(url.clone()),
        key_file: path(pki.client_key()),
        cert_file: path(pki.client_cert()),
        ca_cert_file: path(pki.ca()),
        ..Default::default()
    };
    let config = EtcdConfig::from_conf_and(&settings, |_| None).expect("config");
    let kv = EtcdKv::new(&config).expect("client");
    kv.ping().expect("ping over TLS");
    let rev = kv.create("/tls/a", b"1").expect("create over TLS");
    kv.update("/tls/a", b"2", &rev).expect("update over TLS");
    assert_eq!(
        kv.get("/tls/a").expect("get").map(|(v, _)| v),
        Some(b"2".to_vec())
    );

    // Without a client certificate etcd turns us away.
    let anonymous = EtcdConfig {
        key_file: None,
        cert_file: None,
        ..config.clone()
    };
    match EtcdKv::new(&anonymous).expect("client").ping() {
        Err(StoreError::Unavailable(m)) => eprintln!("no client certificate: {m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Without our CA the server is not trusted, and retrying will not change that.
    let untrusting = EtcdConfig {
        ca_cert_file: None,
        ..config.clone()
    };
    match EtcdKv::new(&untrusting).expect("client").ping() {
        Err(StoreError::Unavailable(m)) => panic!("retryable: {m}"),
        Err(e) => assert!(e.to_string().contains("etcd_ca_cert_file"), "{e}"),
        Ok(()) => panic!("trusted without our CA"),
    }
    // A CA file that is not PEM is a configuration error, found before any request.
    let bad = EtcdConfig {
        ca_cert_file: Some(pki.client_key()),
        ..config
    };
    assert!(EtcdKv::new(&bad).is_err());
}

// ---- speed ------------------------------------------------------------------------------------

#[test]
fn one_transaction_is_one_quick_round_trip() {
    let server = etcd();
    let kv = kv_for(vec![server.client_url()]);
    let mut rev = kv.create("/bench", b"0").expect("create");
    let mut samples: Vec<Duration> = (0..200)
        .map(|i| {
            let started = Instant::now();
            rev = kv
                .update("/bench", format!("{i}").as_bytes(), &rev)
                .expect("update");
            started.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let median = samples[samples.len() / 2];
    eprintln!(
        "etcd CAS txn round trip: median {median:?}, p90 {:?}, max {:?}",
        samples[samples.len() * 9 / 10],
        samples[samples.len() - 1]
    );
    // A new connection per request or a Nagle stall would show as tens of milliseconds.
    assert!(median < Duration::from_millis(30), "median {median:?}");
    // One kept-alive connection carried them all: a connection per request would leave
    // ~200 sockets in TIME_WAIT towards etcd's port.
    let port = server
        .client_url()
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let sockets = sockets_to_port(port.parse().expect("port"));
    assert!(sockets <= 2, "{sockets} client sockets towards etcd");
}

/// IPv4 TCP sockets in this network namespace whose remote port is `port`, any state.
fn sockets_to_port(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            line.split_whitespace()
                .nth(2)
                .is_some_and(|r| r.ends_with(&remote))
        })
        .count()
}

/// A client for `url` as `user` (the config's environment holds the credentials).
fn kv_as(url: &str, user: &str, password: &str) -> EtcdKv {
    let settings = EtcdSettings {
        endpoints: Some(url.to_string()),
        ..Default::default()
    };
    let (user, password) = (user.to_string(), password.to_string());
    let config = EtcdConfig::from_conf_and(&settings, move |name| match name {
        "ETCD_USERNAME" => Some(user.clone()),
        "ETCD_PASSWORD" => Some(password.clone()),
        _ => None,
    })
    .expect("config");
    EtcdKv::new(&config).expect("client")
}

/// etcd with its own authentication on, as operators run it: the plugin's user may touch
/// `/calico/` only. The right credentials read and write there; refused credentials, or
/// none, are the configuration's problem (never a retry), named by user and never by
/// password; a token etcd no longer accepts is replaced once, transparently.
#[test]
fn etcd_authentication_with_users_and_roles() {
    let server = etcd();
    let url = server.client_url();
    let password = "pw-7f3a91c2";
    cni_tests::etcd::enable_auth(&url, "root-pw", "calico", password, "/calico/")
        .expect("enable auth");

    let kv = kv_as(&url, "calico", password);
    let rev = kv.create("/calico/auth/a", b"1").expect("create as calico");
    kv.update("/calico/auth/a", b"2", &rev).expect("update");
    assert_eq!(
        kv.get("/calico/auth/a").expect("get").map(|(v, _)| v),
        Some(b"2".to_vec())
    );
    // The role's range is enforced by etcd, and its refusal reported as such.
    let outside = kv.create("/elsewhere", b"x").expect_err("outside the role");
    assert!(
        outside.to_string().contains("permission denied"),
        "{outside}"
    );

    let wrong = kv_as(&url, "calico", "not-the-password")
        .get("/calico/auth/a")
        .expect_err("wrong password");
    let text = wrong.to_string();
    assert!(matches!(wrong, StoreError::Misconfigured(_)), "{wrong:?}");
    assert!(
        text.contains("\"calico\"") && text.contains("ETCD_PASSWORD"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");

    let anonymous = kv_for(vec![url.clone()])
        .get("/calico/auth/a")
        .expect_err("no credentials");
    assert!(
        matches!(anonymous, StoreError::Misconfigured(_)),
        "{anonymous:?}"
    );
    assert!(
        anonymous.to_string().contains("ETCD_USERNAME"),
        "{anonymous}"
    );

    // Switching authentication off and on again revokes every token: the client's next
    // request is refused once, and it authenticates again.
    let root = cni_tests::etcd::auth_token(&url, "root", "root-pw").expect("root token");
    cni_tests::ipam::etcd_post_as(&url, "/v3/auth/disable", &json!({}), Some(&root))
        .expect("disable");
    cni_tests::ipam::etcd_post(&url, "/v3/auth/enable", &json!({})).expect("enable");
    let rev = kv
        .get("/calico/auth/a")
        .expect("read after the token was revoked")
        .map(|(_, rev)| rev)
        .expect("still there");
    kv.delete("/calico/auth/a", &rev).expect("delete");
}

/// Credentials for an etcd without authentication: etcd says so, and the client goes on
/// without a token, as etcd's own client does.
#[test]
fn credentials_for_an_etcd_without_authentication_are_not_an_error() {
    let server = etcd();
    let kv = kv_as(&server.client_url(), "calico", "whatever");
    kv.create("/calico/plain", b"1").expect("create");
    assert!(kv.get("/calico/plain").expect("get").is_some());
}
