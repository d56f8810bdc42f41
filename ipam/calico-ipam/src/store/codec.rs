//! Calico's etcd v3 layout: the key of every object and its JSON value, exactly as
//! libcalico-go writes them, so a Calico node sharing the etcd reads our objects and we read
//! theirs. The `local` backend stores the same keys and values as files.
//!
//! ```text
//! /calico/ipam/v2/assignment/ipv4/block/10.244.1.64-26      block
//! /calico/ipam/v2/host/<node>/ipv4/block/10.244.1.64-26     affinity (type host)
//! /calico/ipam/v2/handle/<handleID>                         handle
//! /calico/ipam/v2/config                                     IPAM config
//! /calico/resources/v3/projectcalico.org/ippools/<name>      v3 resources
//! /calico/resources/v3/projectcalico.org/ipreservations/<name>
//! ```

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use super::{wire, StoreError};
use crate::model::{
    AffinityState, BlockAffinity, ClusterInformation, IpPool, IpReservation, IpamBlock, IpamConfig,
    IpamHandle, Node,
};

const IPAM: &str = "/calico/ipam/v2";
const RESOURCES: &str = "/calico/resources/v3/projectcalico.org";

fn family(v4: bool) -> &'static str {
    if v4 {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// `10.244.1.64/26` → `10.244.1.64-26`: only the slash changes in etcd keys.
fn cidr_key(cidr: &IpNetwork) -> String {
    cidr.to_string().replace('/', "-")
}

fn cidr_from_key(text: &str) -> Option<IpNetwork> {
    let (ip, prefix) = text.rsplit_once('-')?;
    format!("{ip}/{prefix}").parse().ok()
}

pub fn block_key(cidr: &IpNetwork) -> String {
    format!(
        "{IPAM}/assignment/{}/block/{}",
        family(cidr.is_ipv4()),
        cidr_key(cidr)
    )
}

pub fn blocks_prefix(v4: bool) -> String {
    format!("{IPAM}/assignment/{}/block/", family(v4))
}

pub fn affinity_key(affinity_type: &str, node: &str, cidr: &IpNetwork) -> String {
    format!(
        "{IPAM}/{affinity_type}/{node}/{}/block/{}",
        family(cidr.is_ipv4()),
        cidr_key(cidr)
    )
}

pub fn affinities_prefix(affinity_type: &str, node: &str, v4: bool) -> String {
    format!("{IPAM}/{affinity_type}/{node}/{}/block/", family(v4))
}

pub fn handle_key(handle_id: &str) -> String {
    format!("{IPAM}/handle/{handle_id}")
}

pub fn handles_prefix() -> String {
    format!("{IPAM}/handle/")
}

pub fn ipam_config_key() -> String {
    format!("{IPAM}/config")
}

pub fn pools_prefix() -> String {
    format!("{RESOURCES}/ippools/")
}

pub fn pool_key(name: &str) -> String {
    format!("{RESOURCES}/ippools/{name}")
}

pub fn reservations_prefix() -> String {
    format!("{RESOURCES}/ipreservations/")
}

pub fn reservation_key(name: &str) -> String {
    format!("{RESOURCES}/ipreservations/{name}")
}

pub fn node_key(name: &str) -> String {
    format!("{RESOURCES}/nodes/{name}")
}

pub fn nodes_prefix() -> String {
    format!("{RESOURCES}/nodes/")
}

/// `<prefix><namespace>/<name>`.
pub fn workload_endpoints_prefix() -> String {
    format!("{RESOURCES}/workloadendpoints/")
}

pub fn cluster_information_key() -> String {
    format!("{RESOURCES}/clusterinformations/default")
}

pub(super) fn corrupt(key: &str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn object(key: &str, bytes: &[u8]) -> Result<Map<String, Value>, StoreError> {
    // Very old data may hold an empty value: read it as an empty object.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(corrupt(key, "not a JSON object")),
        Err(e) => Err(corrupt(key, e)),
    }
}

/// A serde model from an object's fields; what does not fit is corrupt.
pub(super) fn from_map<T: serde::de::DeserializeOwned>(
    key: &str,
    m: Map<String, Value>,
) -> Result<T, StoreError> {
    serde_json::from_value(Value::Object(m)).map_err(|e| corrupt(key, e))
}

/// A model's JSON. Plain data with string keys: encoding cannot fail.
pub(super) fn to_vec<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

// ---- blocks --------------------------------------------------------------------------------

pub fn encode_block(block: &IpamBlock) -> Vec<u8> {
    to_vec(&wire::EtcdBlock::of(block))
}

/// A block read from its key. The key and the block's `cidr` must agree: the engine
/// addresses a block by its CIDR, so one stored under another CIDR's key could never be
/// written back (every compare-and-swap would miss, and the allocation would end as
/// "excessive concurrent IPAM requests").
pub fn decode_block(key: &str, bytes: &[u8]) -> Result<IpamBlock, StoreError> {
    let block = block_from_object(key, object(key, bytes)?)?;
    if key != block_key(&block.cidr) {
        return Err(corrupt(
            key,
            format!(
                "its cidr {} is not the one its key names: fix the cidr or remove the block",
                block.cidr
            ),
        ));
    }
    Ok(block)
}

/// A block from its JSON fields: the etcd value, or an IPAMBlock CRD's `spec` (the same
/// fields, camelCase alike; only `affinity_claim_time` differs, and it stays in `extra`).
pub fn block_from_object(key: &str, m: Map<String, Value>) -> Result<IpamBlock, StoreError> {
    let fields: wire::BlockIn = from_map(key, m)?;
    let cidr: IpNetwork = fields
        .cidr
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| corrupt(key, "missing or invalid cidr"))?;
    if fields.allocations.len() != crate::model::block_len(&cidr) {
        return Err(corrupt(key, "allocations do not match the block size"));
    }
    Ok(IpamBlock {
        cidr,
        affinity: fields.affinity,
        allocations: fields.allocations,
        unallocated: fields.unallocated,
        attributes: fields.attributes.into_iter().map(Into::into).collect(),
        sequence_number: fields.sequence_number,
        sequence_number_for_allocation: fields.sequence_number_for_allocation,
        deleted: fields.deleted,
        extra: fields.extra,
    })
}

// ---- affinities ----------------------------------------------------------------------------

pub fn encode_affinity(a: &BlockAffinity) -> Vec<u8> {
    to_vec(&wire::EtcdAffinity {
        state: a.state.as_str(),
        deleted: a.deleted,
        extra: wire::unknown(&a.extra, &["state", "deleted"]),
    })
}

/// The node, type and CIDR live in the key; the value holds the state.
pub fn decode_affinity(key: &str, bytes: &[u8]) -> Result<BlockAffinity, StoreError> {
    let rest = key
        .strip_prefix(&format!("{IPAM}/"))
        .ok_or_else(|| corrupt(key, "not an affinity key"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [affinity_type, node, _family, "block", cidr] = parts[..] else {
        return Err(corrupt(key, "not an affinity key"));
    };
    let cidr = cidr_from_key(cidr).ok_or_else(|| corrupt(key, "invalid block in key"))?;
    let fields: wire::EtcdAffinityIn = from_map(key, object(key, bytes)?)?;
    let state_text = fields.state.unwrap_or_default();
    let state = AffinityState::parse(&state_text)
        .ok_or_else(|| corrupt(key, format!("unknown affinity state {state_text:?}")))?;
    Ok(BlockAffinity {
        affinity_type: affinity_type.to_string(),
        node: node.to_string(),
        cidr,
        state,
        deleted: fields.deleted,
        extra: fields.extra,
    })
}

// ---- handles -------------------------------------------------------------------------------

pub fn encode_handle(h: &IpamHandle) -> Vec<u8> {
    // The handle ID is the key's, not the value's.
    to_vec(&wire::HandleOut {
        handle_id: None,
        block: &h.block,
        deleted: h.deleted,
        extra: wire::unknown(&h.extra, wire::HANDLE_FIELDS),
    })
}

pub fn decode_handle(key: &str, bytes: &[u8]) -> Result<IpamHandle, StoreError> {
    let handle_id = key
        .strip_prefix(&handles_prefix())
        .ok_or_else(|| corrupt(key, "not a handle key"))?
        .to_string();
    let fields: wire::HandleIn = from_map(key, object(key, bytes)?)?;
    Ok(IpamHandle {
        handle_id,
        block: fields.block,
        deleted: fields.deleted,
        extra: fields.extra,
    })
}

// ---- IPAM config ---------------------------------------------------------------------------

pub fn encode_ipam_config(c: &IpamConfig) -> Vec<u8> {
    to_vec(&wire::EtcdIpamConfig {
        strict_affinity: c.strict_affinity,
        auto_allocate_blocks: c.auto_allocate_blocks,
        max_blocks_per_host: c.max_blocks_per_host,
        extra: wire::unknown(&c.extra, wire::ETCD_IPAM_CONFIG_FIELDS),
    })
}

pub fn decode_ipam_config(key: &str, bytes: &[u8]) -> Result<IpamConfig, StoreError> {
    let fields: wire::EtcdIpamConfig = from_map(key, object(key, bytes)?)?;
    Ok(IpamConfig {
        strict_affinity: fields.strict_affinity,
        auto_allocate_blocks: fields.auto_allocate_blocks,
        max_blocks_per_host: fields.max_blocks_per_host,
        extra: fields.extra,
    })
}

// ---- v3 resources --------------------------------------------------------------------------

/// A v3 resource's `metadata` and `spec`.
type MetadataAndSpec = (Map<String, Value>, Map<String, Value>);

fn spec_of(key: &str, bytes: &[u8]) -> Result<MetadataAndSpec, StoreError> {
    Ok(split_resource(object(key, bytes)?))
}

/// A resource's `metadata` and `spec` (empty when absent).
fn split_resource(mut m: Map<String, Value>) -> MetadataAndSpec {
    let mut part = |name: &str| match m.remove(name) {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    };
    (part("metadata"), part("spec"))
}

/// An IPPool's `spec` as calicoctl writes it: the same in a v3 resource and in the CRD.
pub fn pool_spec(p: &IpPool) -> Value {
    let spec = wire::PoolSpecOut {
        cidr: p.cidr.to_string(),
        block_size: p.block_size,
        disabled: p.disabled,
        node_selector: &p.node_selector,
        allowed_uses: &p.allowed_uses,
        assignment_mode: &p.assignment_mode,
        extra: wire::unknown(&p.extra, wire::POOL_FIELDS),
    };
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

pub fn encode_pool(p: &IpPool) -> Vec<u8> {
    to_vec(&wire::ResourceOut {
        kind: "IPPool",
        api_version: "projectcalico.org/v3",
        metadata: wire::NameOnly { name: &p.name },
        spec: pool_spec(p),
    })
}

pub fn decode_pool(key: &str, bytes: &[u8]) -> Result<IpPool, StoreError> {
    pool_from_resource(key, spec_of(key, bytes)?)
}

/// A pool from a v3 resource or an IPPool CRD: both are `metadata` + the same `spec`.
pub fn pool_from_object(key: &str, object: Map<String, Value>) -> Result<IpPool, StoreError> {
    pool_from_resource(key, split_resource(object))
}

fn pool_from_resource(key: &str, (metadata, spec): MetadataAndSpec) -> Result<IpPool, StoreError> {
    let metadata: wire::MetadataIn = from_map(key, metadata)?;
    let spec: wire::PoolSpecIn = from_map(key, spec)?;
    let name = metadata
        .name
        .or_else(|| key.rsplit('/').next().map(str::to_string))
        .unwrap_or_default();
    let cidr: IpNetwork = spec
        .cidr
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| corrupt(key, "missing or invalid cidr"))?;
    let block_size = match spec.block_size.as_u64() {
        // A size beyond every family's stays out of range, so the pool is left unused, rather
        // than wrapping to another size (256 would be 0, 282 would be 26).
        Some(n) if n > 0 => u8::try_from(n).unwrap_or(u8::MAX),
        _ if cidr.is_ipv4() => IpPool::DEFAULT_BLOCK_SIZE_V4,
        _ => IpPool::DEFAULT_BLOCK_SIZE_V6,
    };
    // A pool being deleted is as good as gone.
    let deleting = !metadata.deletion_timestamp.is_null();
    Ok(IpPool {
        name,
        cidr,
        block_size,
        disabled: spec.disabled || deleting,
        node_selector: spec.node_selector.unwrap_or_default(),
        allowed_uses: spec.allowed_uses,
        assignment_mode: spec.assignment_mode.unwrap_or_default(),
        extra: spec.extra,
    })
}

pub fn decode_node(key: &str, bytes: &[u8]) -> Result<Node, StoreError> {
    node_from_object(key, object(key, bytes)?)
}

/// A node's name and labels from a Calico v3 Node or a Kubernetes Node (same metadata).
pub fn node_from_object(key: &str, object: Map<String, Value>) -> Result<Node, StoreError> {
    let (metadata, _spec) = split_resource(object);
    let metadata: wire::MetadataIn = from_map(key, metadata)?;
    Ok(Node {
        name: metadata.name.unwrap_or_default(),
        labels: metadata.labels,
    })
}

pub fn decode_cluster_information(
    key: &str,
    bytes: &[u8],
) -> Result<ClusterInformation, StoreError> {
    cluster_information_from_object(object(key, bytes)?)
}

/// ClusterInformation from a v3 resource or its CRD.
pub fn cluster_information_from_object(
    object: Map<String, Value>,
) -> Result<ClusterInformation, StoreError> {
    let (_metadata, spec) = split_resource(object);
    let spec: wire::ClusterInformationSpecIn = from_map("ClusterInformation default", spec)?;
    Ok(ClusterInformation {
        datastore_ready: spec.datastore_ready,
        extra: spec.extra,
    })
}

// ---- IPReservations ------------------------------------------------------------------------

/// One `reservedCIDRs` entry as libcalico-go's `ParseCIDROrIP` reads it: a CIDR reduced to
/// its network (`10.0.0.5/24` is `10.0.0.0/24`), or a bare address as a /32 or /128.
pub fn parse_reserved_cidr(text: &str) -> Option<IpNetwork> {
    let text = text.trim();
    if text.contains('/') {
        let cidr: IpNetwork = text.parse().ok()?;
        IpNetwork::new(cidr.network(), cidr.prefix()).ok()
    } else {
        text.parse::<std::net::IpAddr>().ok().map(IpNetwork::from)
    }
}

/// An IPReservation's `spec`: the same in a v3 resource and in the CRD.
pub fn reservation_spec(r: &IpReservation) -> Value {
    let spec = wire::ReservationSpecOut {
        reserved_cidrs: r.reserved_cidrs.iter().map(|c| c.to_string()).collect(),
        extra: wire::unknown(&r.extra, &["reservedCIDRs"]),
    };
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

pub fn encode_reservation(r: &IpReservation) -> Vec<u8> {
    to_vec(&wire::ResourceOut {
        kind: "IPReservation",
        api_version: "projectcalico.org/v3",
        metadata: wire::NameOnly { name: &r.name },
        spec: reservation_spec(r),
    })
}

pub fn decode_reservation(key: &str, bytes: &[u8]) -> Result<IpReservation, StoreError> {
    reservation_from_object(key, object(key, bytes)?)
}

/// A reservation from a v3 resource or its CRD. An entry that is neither a CIDR nor an
/// address (validation keeps them out; an old writer may not have) is skipped with a
/// warning, as libcalico-go skips it, rather than failing every ADD of the cluster.
pub fn reservation_from_object(
    key: &str,
    object: Map<String, Value>,
) -> Result<IpReservation, StoreError> {
    let (metadata, spec) = split_resource(object);
    let metadata: wire::MetadataIn = from_map(key, metadata)?;
    let spec: wire::ReservationSpecIn = from_map(key, spec)?;
    let name = metadata
        .name
        .or_else(|| key.rsplit('/').next().map(str::to_string))
        .unwrap_or_default();
    let mut reserved_cidrs = Vec::with_capacity(spec.reserved_cidrs.len());
    for entry in &spec.reserved_cidrs {
        match entry.as_str() {
            Some(text) if text.trim().is_empty() => {}
            Some(text) => match parse_reserved_cidr(text) {
                Some(cidr) => reserved_cidrs.push(cidr),
                None => log::warn!("{key}: ignoring malformed reserved CIDR {text:?}"),
            },
            None => log::warn!("{key}: ignoring reserved CIDR {entry} (not a string)"),
        }
    }
    Ok(IpReservation {
        name,
        reserved_cidrs,
        extra: spec.extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cidr(s: &str) -> IpNetwork {
        s.parse().expect("cidr")
    }

    #[test]
    fn keys_follow_calicos_layout() {
        assert_eq!(
            block_key(&cidr("10.244.1.64/26")),
            "/calico/ipam/v2/assignment/ipv4/block/10.244.1.64-26"
        );
        assert_eq!(
            block_key(&cidr("fd00::40/122")),
            "/calico/ipam/v2/assignment/ipv6/block/fd00::40-122"
        );
        assert_eq!(
            affinity_key("host", "n1", &cidr("10.244.1.64/26")),
            "/calico/ipam/v2/host/n1/ipv4/block/10.244.1.64-26"
        );
        assert_eq!(
            handle_key("k8s-pod-network.ABC"),
            "/calico/ipam/v2/handle/k8s-pod-network.ABC"
        );
        assert_eq!(ipam_config_key(), "/calico/ipam/v2/config");
    }

    #[test]
    fn block_json_round_trips_and_keeps_unknown_fields() {
        let raw = br#"{"cidr":"10.244.1.64/30","affinity":"host:n1","strictAffinity":false,
            "allocations":[0,null,0,null],"unallocated":[3,1],
            "attributes":[{"handle_id":"net.c1","secondary":{"node":"n1"},"releasedAt":null}],
            "deleted":false,"sequenceNumber":7,"sequenceNumberForAllocation":{"0":5,"2":6},
            "affinity_claim_time":"2025-10-01T00:00:00Z"}"#;
        let key = block_key(&cidr("10.244.1.64/30"));
        let b = decode_block(&key, raw).expect("decodes");
        assert_eq!(b.allocations, vec![Some(0), None, Some(0), None]);
        assert_eq!(b.unallocated, vec![3, 1]);
        assert_eq!(b.attributes[0].handle_id.as_deref(), Some("net.c1"));
        assert!(b.extra.contains_key("affinity_claim_time"));
        let again: Value = serde_json::from_slice(&encode_block(&b)).expect("json");
        let original: Value = serde_json::from_slice(raw).expect("json");
        assert_eq!(again, original);
    }

    #[test]
    fn affinity_handle_and_config_values() {
        let a = BlockAffinity::host("n1", cidr("10.244.1.64/26"), AffinityState::Pending);
        let key = affinity_key("host", "n1", &a.cidr);
        assert_eq!(
            encode_affinity(&a),
            br#"{"state":"pending","deleted":false}"#
        );
        assert_eq!(
            decode_affinity(&key, b"").expect("empty is {}").state,
            AffinityState::Confirmed
        );
        assert_eq!(
            decode_affinity(&key, &encode_affinity(&a)).expect("decodes"),
            a
        );

        let mut h = IpamHandle {
            handle_id: "net.c1".into(),
            block: BTreeMap::new(),
            deleted: false,
            extra: Map::new(),
        };
        h.block.insert("10.244.1.64/26".into(), 1);
        assert_eq!(
            encode_handle(&h),
            br#"{"block":{"10.244.1.64/26":1},"deleted":false}"#
        );
        assert_eq!(
            decode_handle(&handle_key("net.c1"), &encode_handle(&h)).expect("decodes"),
            h
        );

        assert_eq!(
            encode_ipam_config(&IpamConfig::default()),
            br#"{"auto_allocate_blocks":true}"#
        );
    }

    #[test]
    fn numbers_beyond_their_field_saturate_instead_of_wrapping() {
        let pool = |size: &str| {
            let raw = format!(r#"{{"spec":{{"cidr":"10.0.0.0/16","blockSize":{size}}}}}"#);
            decode_pool(&pool_key("p"), raw.as_bytes()).expect("decodes")
        };
        assert_eq!(pool("256").block_size, u8::MAX);
        assert_eq!(pool("282").block_size, u8::MAX);
        assert_eq!(pool("24").block_size, 24);
        // What is decoded is what is written back.
        let p = pool("256");
        assert_eq!(
            decode_pool(&pool_key("p"), &encode_pool(&p)).expect("decodes"),
            p
        );
        let config = |max: &str| {
            let raw = format!(r#"{{"maxBlocksPerHost":{max}}}"#);
            decode_ipam_config(&ipam_config_key(), raw.as_bytes()).expect("decodes")
        };
        assert_eq!(config("4294967296").max_blocks_per_host, u32::MAX);
        assert_eq!(config("4294967301").max_blocks_per_host, u32::MAX);
        assert_eq!(config("5").max_blocks_per_host, 5);
    }

    #[test]
    fn pools_and_nodes_as_v3_resources() {
        let raw = br#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3",
            "metadata":{"name":"default-ipv4-ippool","uid":"u"},
            "spec":{"cidr":"10.244.0.0/16","ipipMode":"Always","natOutgoing":true,
                    "nodeSelector":"all()"}}"#;
        let p = decode_pool(&pool_key("default-ipv4-ippool"), raw).expect("decodes");
        assert_eq!(p.block_size, 26);
        assert_eq!(p.node_selector, "all()");
        assert!(p.extra.contains_key("ipipMode"));
        let n = decode_node(
            &node_key("n1"),
            br#"{"metadata":{"name":"n1","labels":{"zone":"a"}},"spec":{}}"#,
        )
        .expect("decodes");
        assert_eq!(n.labels.get("zone").map(String::as_str), Some("a"));
    }

    #[test]
    fn reservations_as_v3_resources() {
        let raw = br#"{"kind":"IPReservation","apiVersion":"projectcalico.org/v3",
            "metadata":{"name":"gateways"},
            "spec":{"reservedCIDRs":["10.0.0.5/24"," 10.0.1.7 ","fd00::1","bogus",""],
                    "futureField":1}}"#;
        let key = reservation_key("gateways");
        assert_eq!(
            key,
            "/calico/resources/v3/projectcalico.org/ipreservations/gateways"
        );
        let r = decode_reservation(&key, raw).expect("decodes");
        assert_eq!(r.name, "gateways");
        assert_eq!(
            r.reserved_cidrs,
            [
                cidr("10.0.0.0/24"),
                cidr("10.0.1.7/32"),
                cidr("fd00::1/128")
            ]
        );
        assert!(r.extra.contains_key("futureField"));
        let again = decode_reservation(&key, &encode_reservation(&r)).expect("decodes");
        assert_eq!(again, r);
        assert!(decode_reservation(&key, br#"{"spec":{"reservedCIDRs":"10.0.0.0/8"}}"#).is_err());
        assert!(decode_reservation(&key, br#"{"spec":{}}"#)
            .expect("decodes")
            .reserved_cidrs
            .is_empty());
    }
}
