//! The exact bytes of every IPAM object as the etcd layout and the CRDs hold it, with
//! fields a newer Calico added: what Calico's own clients read, pinned, and read back to the
//! same object.

use std::collections::BTreeMap;

use calico_ipam::model::*;
use calico_ipam::store::codec;
use calico_ipam::store::kube::objects;
use serde_json::{json, Map, Value};

fn extra() -> Map<String, Value> {
    json!({"futureField": {"a": 1}, "zz": null})
        .as_object()
        .cloned()
        .expect("object")
}

#[test]
fn every_ipam_object_is_written_byte_for_byte_and_read_back() {
    let mut b = IpamBlock::new(
        "10.244.1.64/30".parse().expect("cidr"),
        Some("host:n1".into()),
        7,
    );
    b.allocations[0] = Some(0);
    b.allocations[2] = Some(1);
    b.unallocated = vec![1, 3];
    b.attributes.push(AllocationAttribute {
        handle_id: Some("net.c1".into()),
        secondary: BTreeMap::from([("node".into(), "n1".into())]),
        extra: extra(),
    });
    b.attributes.push(AllocationAttribute::default());
    b.sequence_number_for_allocation.insert("0".into(), 7);
    b.extra = extra();
    let mut b2 = IpamBlock::new("fd00::40/126".parse().expect("cidr"), None, 0);
    b2.deleted = true;
    let mut a = BlockAffinity::host(
        "n1",
        "10.244.1.64/26".parse().expect("cidr"),
        AffinityState::Pending,
    );
    a.extra = extra();
    let h = IpamHandle {
        handle_id: "Net.C1".into(),
        block: BTreeMap::from([("10.244.1.64/26".into(), 2)]),
        deleted: true,
        extra: extra(),
    };
    let c = IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: false,
        max_blocks_per_host: 4,
        extra: extra(),
    };
    let c0 = IpamConfig::default();
    assert_eq!(String::from_utf8(codec::encode_block(&b)).unwrap_or_default(), "{\"cidr\":\"10.244.1.64/30\",\"affinity\":\"host:n1\",\"strictAffinity\":false,\"allocations\":[0,null,1,null],\"unallocated\":[1,3],\"attributes\":[{\"handle_id\":\"net.c1\",\"secondary\":{\"node\":\"n1\"},\"futureField\":{\"a\":1},\"zz\":null},{\"handle_id\":null,\"secondary\":{}}],\"deleted\":false,\"sequenceNumber\":7,\"sequenceNumberForAllocation\":{\"0\":7},\"futureField\":{\"a\":1},\"zz\":null}", "etcd_block");
    assert_eq!(String::from_utf8(codec::encode_block(&b2)).unwrap_or_default(), "{\"cidr\":\"fd00::40/126\",\"affinity\":null,\"strictAffinity\":false,\"allocations\":[null,null,null,null],\"unallocated\":[0,1,2,3],\"attributes\":[],\"deleted\":true,\"sequenceNumber\":0,\"sequenceNumberForAllocation\":{}}", "etcd_block2");
    assert_eq!(
        String::from_utf8(codec::encode_affinity(&a)).unwrap_or_default(),
        "{\"state\":\"pending\",\"deleted\":false,\"futureField\":{\"a\":1},\"zz\":null}",
        "etcd_affinity"
    );
    assert_eq!(
        String::from_utf8(codec::encode_handle(&h)).unwrap_or_default(),
        "{\"block\":{\"10.244.1.64/26\":2},\"deleted\":true,\"futureField\":{\"a\":1},\"zz\":null}",
        "etcd_handle"
    );
    assert_eq!(
        String::from_utf8(codec::encode_ipam_config(&c)).unwrap_or_default(),
        "{\"strict_affinity\":true,\"maxBlocksPerHost\":4,\"futureField\":{\"a\":1},\"zz\":null}",
        "etcd_config"
    );
    assert_eq!(
        String::from_utf8(codec::encode_ipam_config(&c0)).unwrap_or_default(),
        "{\"auto_allocate_blocks\":true}",
        "etcd_config0"
    );
    assert_eq!(objects::block(&b).to_string(), "{\"apiVersion\":\"crd.projectcalico.org/v1\",\"kind\":\"IPAMBlock\",\"metadata\":{\"name\":\"10-244-1-64-30\",\"annotations\":{\"projectcalico.org/metadata\":\"{\\\"creationTimestamp\\\":null}\"}},\"spec\":{\"cidr\":\"10.244.1.64/30\",\"affinity\":\"host:n1\",\"allocations\":[0,null,1,null],\"unallocated\":[1,3],\"attributes\":[{\"handle_id\":\"net.c1\",\"secondary\":{\"node\":\"n1\"},\"futureField\":{\"a\":1},\"zz\":null},{}],\"sequenceNumber\":7,\"sequenceNumberForAllocation\":{\"0\":7},\"deleted\":false,\"strictAffinity\":false,\"futureField\":{\"a\":1},\"zz\":null}}", "crd_block");
    assert_eq!(objects::block(&b2).to_string(), "{\"apiVersion\":\"crd.projectcalico.org/v1\",\"kind\":\"IPAMBlock\",\"metadata\":{\"name\":\"fd00--40-126\",\"annotations\":{\"projectcalico.org/metadata\":\"{\\\"creationTimestamp\\\":null}\"}},\"spec\":{\"cidr\":\"fd00::40/126\",\"allocations\":[null,null,null,null],\"unallocated\":[0,1,2,3],\"attributes\":[],\"sequenceNumber\":0,\"sequenceNumberForAllocation\":{},\"deleted\":true,\"strictAffinity\":false}}", "crd_block2");
    assert_eq!(objects::affinity(&a).to_string(), "{\"apiVersion\":\"crd.projectcalico.org/v1\",\"kind\":\"BlockAffinity\",\"metadata\":{\"name\":\"n1-10-244-1-64-26\",\"labels\":{\"projectcalico.org/hostname-hash\":\"DM7EHBDU4L3ELKRER4A46T6QMKAGARQI4CVWBO26S4I2IDAAW6CA\",\"projectcalico.org/affinity-type\":\"host\",\"projectcalico.org/ip-version\":\"4\"},\"annotations\":{\"projectcalico.org/metadata\":\"{\\\"creationTimestamp\\\":null}\"}},\"spec\":{\"state\":\"pending\",\"node\":\"n1\",\"type\":\"host\",\"cidr\":\"10.244.1.64/26\",\"deleted\":\"false\",\"futureField\":{\"a\":1},\"zz\":null}}", "crd_affinity");
    assert_eq!(objects::handle(&h).to_string(), "{\"apiVersion\":\"crd.projectcalico.org/v1\",\"kind\":\"IPAMHandle\",\"metadata\":{\"name\":\"net.c1\",\"annotations\":{\"projectcalico.org/metadata\":\"{\\\"creationTimestamp\\\":null}\"}},\"spec\":{\"handleID\":\"Net.C1\",\"block\":{\"10.244.1.64/26\":2},\"deleted\":true,\"futureField\":{\"a\":1},\"zz\":null}}", "crd_handle");
    assert_eq!(objects::ipam_config(&c).to_string(), "{\"apiVersion\":\"crd.projectcalico.org/v1\",\"kind\":\"IPAMConfig\",\"metadata\":{\"name\":\"default\",\"annotations\":{\"projectcalico.org/metadata\":\"{\\\"creationTimestamp\\\":null}\"}},\"spec\":{\"strictAffinity\":true,\"autoAllocateBlocks\":false,\"maxBlocksPerHost\":4,\"futureField\":{\"a\":1},\"zz\":null}}", "crd_config");
    assert_eq!(objects::ipam_config(&c0).to_string(), "{\"apiVersion\":\"crd.projectcalico.org/v1\",\"kind\":\"IPAMConfig\",\"metadata\":{\"name\":\"default\",\"annotations\":{\"projectcalico.org/metadata\":\"{\\\"creationTimestamp\\\":null}\"}},\"spec\":{\"strictAffinity\":false,\"autoAllocateBlocks\":true}}", "crd_config0");

    let key = codec::block_key(&b.cidr);
    assert_eq!(
        codec::decode_block(&key, &codec::encode_block(&b)).expect("block"),
        b
    );
    let key2 = codec::block_key(&b2.cidr);
    assert_eq!(
        codec::decode_block(&key2, &codec::encode_block(&b2)).expect("block"),
        b2
    );
    assert_eq!(objects::block_from(&objects::block(&b)).expect("block"), b);
    let akey = codec::affinity_key("host", "n1", &a.cidr);
    assert_eq!(
        codec::decode_affinity(&akey, &codec::encode_affinity(&a)).expect("affinity"),
        a
    );
    assert_eq!(
        objects::affinity_from(&objects::affinity(&a)).expect("affinity"),
        a
    );
    let hkey = codec::handle_key(&h.handle_id);
    assert_eq!(
        codec::decode_handle(&hkey, &codec::encode_handle(&h)).expect("handle"),
        h
    );
    assert_eq!(
        objects::handle_from(&objects::handle(&h)).expect("handle"),
        h
    );
    let ckey = codec::ipam_config_key();
    assert_eq!(
        codec::decode_ipam_config(&ckey, &codec::encode_ipam_config(&c)).expect("config"),
        c
    );
    assert_eq!(
        objects::ipam_config_from(&objects::ipam_config(&c)).expect("config"),
        c
    );
}
