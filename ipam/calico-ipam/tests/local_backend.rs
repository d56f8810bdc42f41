//! The `local` datastore through the whole `Store`: Calico's etcd layout on disk, corrupt
//! objects reported and left alone, and compare-and-swap that holds across threads and
//! processes of one node.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;

use calico_ipam::model::IpamBlock;
use calico_ipam::store::codec;
use calico_ipam::store::kv::Kv;
use calico_ipam::store::local::{local_store, LocalKv};
use calico_ipam::store::{Store, StoreError};
use ipnetwork::IpNetwork;

const COUNTER: &str = "/calico/test/counter";
const WORKERS: usize = 8;
const INCREMENTS: usize = 50;
/// Set in the environment of the child processes of `cas_holds_across_processes`.
const WORKER_DIR: &str = "LOCAL_BACKEND_WORKER_DIR";

fn cidr(text: &str) -> IpNetwork {
    text.parse().expect("cidr")
}

fn file_of(dir: &Path, key: &str) -> std::path::PathBuf {
    dir.join(key.trim_start_matches('/'))
}

#[test]
fn blocks_are_stored_in_the_etcd_layout() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = local_store(tmp.path()).expect("open");
    for net in ["10.244.0.0/26", "fd00:10:244::/122"] {
        let block = IpamBlock::new(cidr(net), Some("host:node-1".into()), 1_700_000_000);
        let rev = store.create_block(&block).expect("create");
        let key = codec::block_key(&block.cidr);
        assert_eq!(
            std::fs::read(file_of(tmp.path(), &key)).expect("the block's file"),
            codec::encode_block(&block),
            "{key}"
        );
        let read = store.get_block(&block.cidr).expect("get").expect("present");
        assert_eq!(read.value, block);
        assert_eq!(read.revision, rev);
    }
    assert!(tmp
        .path()
        .join("calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26")
        .is_file());
    assert!(tmp
        .path()
        .join("calico/ipam/v2/assignment/ipv6/block/fd00:10:244::-122")
        .is_file());
    assert_eq!(store.list_blocks(true).expect("list v4").len(), 1);
    assert_eq!(store.list_blocks(false).expect("list v6").len(), 1);
}

#[test]
fn a_corrupt_block_is_reported_by_key_and_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = local_store(tmp.path()).expect("open");
    let block = IpamBlock::new(cidr("10.244.1.0/26"), None, 1);
    let rev = store.create_block(&block).expect("create");
    let key = codec::block_key(&block.cidr);
    let path = file_of(tmp.path(), &key);
    std::fs::write(&path, b"{\"cidr\": \"10.244.1.0/26\", \"allocations\": [").expect("corrupt");

    match store.get_block(&block.cidr) {
        Err(StoreError::Corrupt { key: named, .. }) => assert_eq!(named, key),
        other => panic!("expected Corrupt naming {key}, got {other:?}"),
    }
    assert!(matches!(
        store.list_blocks(true),
        Err(StoreError::Corrupt { .. })
    ));
    // The stale revision no longer matches what is on disk: nothing overwrites the evidence.
    assert!(matches!(
        store.update_block(&block, &rev),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"{\"cidr\": \"10.244.1.0/26\", \"allocations\": ["
    );
}

/// Read, add one, compare-and-swap; start over on a conflict.
fn increment(kv: &LocalKv) {
    loop {
        let (bytes, rev) = kv.get(COUNTER).expect("get").expect("counter exists");
        let n: u64 = std::str::from_utf8(&bytes)
            .expect("utf-8")
            .parse()
            .expect("a number");
        match kv.update(COUNTER, (n + 1).to_string().as_bytes(), &rev) {
            Ok(_) => return,
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => panic!("update: {e}"),
        }
    }
}

fn counter(kv: &LocalKv) -> Vec<u8> {
    kv.get(COUNTER).expect("get").expect("counter").0
}

#[test]
fn cas_holds_across_threads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kv = Arc::new(LocalKv::open(tmp.path()).expect("open"));
    kv.create(COUNTER, b"0").expect("create");
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            // Each thread its own handle, as separate plugin invocations would have.
            let kv = LocalKv::open(tmp.path()).expect("open");
            thread::spawn(move || (0..INCREMENTS).for_each(|_| increment(&kv)))
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    assert_eq!(counter(&kv), (WORKERS * INCREMENTS).to_string().as_bytes());
}

#[test]
fn cas_holds_across_processes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kv = LocalKv::open(tmp.path()).expect("open");
    kv.create(COUNTER, b"0").expect("create");
    let exe = std::env::current_exe().expect("this test binary");
    let children: Vec<_> = (0..WORKERS)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "cas_worker", "--ignored", "--test-threads=1"])
                .env(WORKER_DIR, tmp.path())
                // The harness chatter of each child is noise; its panics go to stderr.
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn a worker")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success(), "a worker failed");
    }
    assert_eq!(counter(&kv), (WORKERS * INCREMENTS).to_string().as_bytes());
}

/// The body of each process of `cas_holds_across_processes`; does nothing when run alone.
#[test]
#[ignore = "run by cas_holds_across_processes in child processes"]
fn cas_worker() {
    let Some(dir) = std::env::var_os(WORKER_DIR) else {
        return;
    };
    let kv = LocalKv::open(Path::new(&dir)).expect("open");
    (0..INCREMENTS).for_each(|_| increment(&kv));
}
