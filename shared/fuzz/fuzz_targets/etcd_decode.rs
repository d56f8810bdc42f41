//! What calico-ipam reads from etcd: the values of Calico's keys as `store::codec` decodes
//! them (blocks, affinities, handles, the IPAM config, v3 IPPools, Nodes and
//! ClusterInformation), and the JSON gateway's `/v3/kv/range` and `/v3/kv/txn` answers
//! (base64 keys and values, 64-bit integers as strings). The first line is the key, the
//! rest the value or the answer.
//!
//! Properties: nothing panics; a decoded block is the one its key names
//! (`key == block_key(cidr)`) and has one allocation slot per address of its CIDR (capped as
//! `model::block_len` caps it); a decoded block, affinity, handle, IPAM config or pool
//! encodes to a value that decodes to the very same object (unknown fields included).

#![no_main]

use calico_ipam::model::block_len;
use calico_ipam::store::codec;
use calico_ipam::store::etcd::{decode_range_answer, decode_txn_answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b""[..], data),
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };

    let _ = decode_range_answer(key, value);
    let _ = decode_txn_answer(key, value);

    if let Ok(block) = codec::decode_block(key, value) {
        assert_eq!(
            key,
            codec::block_key(&block.cidr),
            "a block under another key"
        );
        assert_eq!(block.allocations.len(), block_len(&block.cidr));
        let again = codec::decode_block(key, &codec::encode_block(&block));
        assert_eq!(again.as_ref().ok(), Some(&block), "{again:?}");
    }
    if let Ok(affinity) = codec::decode_affinity(key, value) {
        let again = codec::decode_affinity(key, &codec::encode_affinity(&affinity));
        assert_eq!(again.as_ref().ok(), Some(&affinity), "{again:?}");
    }
    if let Ok(handle) = codec::decode_handle(key, value) {
        let again = codec::decode_handle(key, &codec::encode_handle(&handle));
        assert_eq!(again.as_ref().ok(), Some(&handle), "{again:?}");
    }
    if let Ok(config) = codec::decode_ipam_config(key, value) {
        let again = codec::decode_ipam_config(key, &codec::encode_ipam_config(&config));
        assert_eq!(again.as_ref().ok(), Some(&config), "{again:?}");
    }
    if let Ok(pool) = codec::decode_pool(key, value) {
        let again = codec::decode_pool(key, &codec::encode_pool(&pool));
        assert_eq!(again.as_ref().ok(), Some(&pool), "{again:?}");
    }
    let _ = codec::decode_node(key, value);
    let _ = codec::decode_cluster_information(key, value);
});
