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

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde_json::{json, Map, Value};

use super::StoreError;
use crate::model::{
    AffinityState, AllocationAttribute, BlockAffinity, ClusterInformation, IpPool, IpReservation,
    IpamBlock, IpamConfig, IpamHandle, Node,
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

/// Takes `field` out of `map` (so what remains is what we do not model).
pub(super) fn take(map: &mut Map<String, Value>, field: &str) -> Value {
    map.remove(field).unwrap_or(Value::Null)
}

pub(super) fn take_bool(map: &mut Map<String, Value>, field: &str) -> bool {
    match take(map, field) {
        Value::Bool(b) => b,
        // BlockAffinity's `deleted` is a string in the CRDs; accept that spelling too.
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

pub(super) fn take_string(map: &mut Map<String, Value>, field: &str) -> Option<String> {
    match take(map, field) {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn to_bytes(value: Value) -> Vec<u8> {
    // Serialising a Value cannot fail.
    serde_json::to_vec(&value).unwrap_or_default()
}

pub(super) fn with_extra(mut known: Map<String, Value>, extra: &Map<String, Value>) -> Value {
    for (k, v) in extra {
        known.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(known)
}

// ---- blocks --------------------------------------------------------------------------------

pub fn encode_block(block: &IpamBlock) -> Vec<u8> {
    let attributes: Vec<Value> = block
        .attributes
        .iter()
        .map(|a| {
            let mut m = Map::new();
            m.insert("handle_id".into(), json!(a.handle_id));
            m.insert("secondary".into(), json!(a.secondary));
            with_extra(m, &a.extra)
        })
        .collect();
    let mut m = Map::new();
    m.insert("cidr".into(), json!(block.cidr.to_string()));
    m.insert("affinity".into(), json!(block.affinity));
    m.insert("strictAffinity".into(), json!(false));
    m.insert("allocations".into(), json!(block.allocations));
    m.insert("unallocated".into(), json!(block.unallocated));
    m.insert("attributes".into(), Value::Array(attributes));
    m.insert("deleted".into(), json!(block.deleted));
    m.insert("sequenceNumber".into(), json!(block.sequence_number));
    m.insert(
        "sequenceNumberForAllocation".into(),
        json!(block.sequence_number_for_allocation),
    );
    to_bytes(with_extra(m, &block.extra))
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
pub fn block_from_object(key: &str, mut m: Map<String, Value>) -> Result<IpamBlock, StoreError> {
    let cidr: IpNetwork = take_string(&mut m, "cidr")
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| corrupt(key, "missing or invalid cidr"))?;
    let affinity = take_string(&mut m, "affinity");
    let allocations: Vec<Option<usize>> =
        serde_json::from_value(take(&mut m, "allocations")).map_err(|e| corrupt(key, e))?;
    let unallocated: Vec<usize> = match take(&mut m, "unallocated") {
        Value::Null => Vec::new(),
        v => serde_json::from_value(v).map_err(|e| corrupt(key, e))?,
    };
    let attributes = match take(&mut m, "attributes") {
        Value::Null => Vec::new(),
        Value::Array(list) => list
            .into_iter()
            .map(|a| {
                let Value::Object(mut a) = a else {
                    return Err(corrupt(key, "an attribute is not an object"));
                };
                let handle_id = take_string(&mut a, "handle_id");
                let secondary: BTreeMap<String, String> = match take(&mut a, "secondary") {
                    Value::Null => BTreeMap::new(),
                    v => serde_json::from_value(v).map_err(|e| corrupt(key, e))?,
                };
                Ok(AllocationAttribute {
                    handle_id,
                    secondary,
                    extra: a,
                })
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(corrupt(key, "attributes is not a list")),
    };
    let sequence_number = take(&mut m, "sequenceNumber").as_u64().unwrap_or(0);
    let sequence_number_for_allocation = match take(&mut m, "sequenceNumberForAllocation") {
        Value::Null => BTreeMap::new(),
        v => serde_json::from_value(v).map_err(|e| corrupt(key, e))?,
    };
    let deleted = take_bool(&mut m, "deleted");
    // Always written false; not carried.
    m.remove("strictAffinity");
    if allocations.len() != crate::model::block_len(&cidr) {
        return Err(corrupt(key, "allocations do not match the block size"));
    }
    Ok(IpamBlock {
        cidr,
        affinity,
        allocations,
        unallocated,
        attributes,
        sequence_number,
        sequence_number_for_allocation,
        deleted,
        extra: m,
    })
}

// ---- affinities ----------------------------------------------------------------------------

pub fn encode_affinity(a: &BlockAffinity) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("state".into(), json!(a.state.as_str()));
    m.insert("deleted".into(), json!(a.deleted));
    to_bytes(with_extra(m, &a.extra))
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
    let mut m = object(key, bytes)?;
    let state_text = take_string(&mut m, "state").unwrap_or_default();
    let state = AffinityState::parse(&state_text)
        .ok_or_else(|| corrupt(key, format!("unknown affinity state {state_text:?}")))?;
    Ok(BlockAffinity {
        affinity_type: affinity_type.to_string(),
        node: node.to_string(),
        cidr,
        state,
        deleted: take_bool(&mut m, "deleted"),
        extra: m,
    })
}

// ---- handles -------------------------------------------------------------------------------

pub fn encode_handle(h: &IpamHandle) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("block".into(), json!(h.block));
    m.insert("deleted".into(), json!(h.deleted));
    to_bytes(with_extra(m, &h.extra))
}

pub fn decode_handle(key: &str, bytes: &[u8]) -> Result<IpamHandle, StoreError> {
    let handle_id = key
        .strip_prefix(&handles_prefix())
        .ok_or_else(|| corrupt(key, "not a handle key"))?
        .to_string();
    let mut m = object(key, bytes)?;
    let block: BTreeMap<String, u64> = match take(&mut m, "block") {
        Value::Null => BTreeMap::new(),
        v => serde_json::from_value(v).map_err(|e| corrupt(key, e))?,
    };
    Ok(IpamHandle {
        handle_id,
        block,
        deleted: take_bool(&mut m, "deleted"),
        extra: m,
    })
}

// ---- IPAM config ---------------------------------------------------------------------------

/// All fields omitted when zero, as libcalico-go writes it.
pub fn encode_ipam_config(c: &IpamConfig) -> Vec<u8> {
    let mut m = Map::new();
    if c.strict_affinity {
        m.insert("strict_affinity".into(), json!(true));
    }
    if c.auto_allocate_blocks {
        m.insert("auto_allocate_blocks".into(), json!(true));
    }
    if c.max_blocks_per_host != 0 {
        m.insert("maxBlocksPerHost".into(), json!(c.max_blocks_per_host));
    }
    to_bytes(with_extra(m, &c.extra))
}

pub fn decode_ipam_config(key: &str, bytes: &[u8]) -> Result<IpamConfig, StoreError> {
    let mut m = object(key, bytes)?;
    Ok(IpamConfig {
        strict_affinity: take_bool(&mut m, "strict_affinity"),
        auto_allocate_blocks: take_bool(&mut m, "auto_allocate_blocks"),
        // Beyond u32 is a limit no host reaches, not 0 (no limit) or a small number.
        max_blocks_per_host: take(&mut m, "maxBlocksPerHost")
            .as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        extra: m,
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
    let metadata = match take(&mut m, "metadata") {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    let spec = match take(&mut m, "spec") {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    (metadata, spec)
}

/// An IPPool's `spec` as calicoctl writes it: the same in a v3 resource and in the CRD.
pub fn pool_spec(p: &IpPool) -> Value {
    let mut spec = Map::new();
    spec.insert("cidr".into(), json!(p.cidr.to_string()));
    spec.insert("blockSize".into(), json!(p.block_size));
    if p.disabled {
        spec.insert("disabled".into(), json!(true));
    }
    if !p.node_selector.is_empty() {
        spec.insert("nodeSelector".into(), json!(p.node_selector));
    }
    if !p.allowed_uses.is_empty() {
        spec.insert("allowedUses".into(), json!(p.allowed_uses));
    }
    if !p.assignment_mode.is_empty() {
        spec.insert("assignmentMode".into(), json!(p.assignment_mode));
    }
    with_extra(spec, &p.extra)
}

pub fn encode_pool(p: &IpPool) -> Vec<u8> {
    let spec = pool_spec(p);
    to_bytes(json!({
        "kind": "IPPool",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": p.name},
        "spec": spec,
    }))
}

pub fn decode_pool(key: &str, bytes: &[u8]) -> Result<IpPool, StoreError> {
    pool_from_resource(key, spec_of(key, bytes)?)
}

/// A pool from a v3 resource or an IPPool CRD: both are `metadata` + the same `spec`.
pub fn pool_from_object(key: &str, object: Map<String, Value>) -> Result<IpPool, StoreError> {
    pool_from_resource(key, split_resource(object))
}

fn pool_from_resource(
    key: &str,
    (metadata, mut spec): MetadataAndSpec,
) -> Result<IpPool, StoreError> {
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| key.rsplit('/').next().map(str::to_string))
        .unwrap_or_default();
    let cidr: IpNetwork = take_string(&mut spec, "cidr")
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| corrupt(key, "missing or invalid cidr"))?;
    let block_size = match take(&mut spec, "blockSize").as_u64() {
        // A size beyond every family's stays out of range, so the pool is left unused, rather
        // than wrapping to another size (256 would be 0, 282 would be 26).
        Some(n) if n > 0 => u8::try_from(n).unwrap_or(u8::MAX),
        _ if cidr.is_ipv4() => IpPool::DEFAULT_BLOCK_SIZE_V4,
        _ => IpPool::DEFAULT_BLOCK_SIZE_V6,
    };
    let allowed_uses = match take(&mut spec, "allowedUses") {
        Value::Null => Vec::new(),
        v => serde_json::from_value(v).map_err(|e| corrupt(key, e))?,
    };
    // A pool being deleted is as good as gone.
    let deleting = metadata
        .get("deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    Ok(IpPool {
        name,
        cidr,
        block_size,
        disabled: take_bool(&mut spec, "disabled") || deleting,
        node_selector: take_string(&mut spec, "nodeSelector").unwrap_or_default(),
        allowed_uses,
        assignment_mode: take_string(&mut spec, "assignmentMode").unwrap_or_default(),
        extra: spec,
    })
}

pub fn decode_node(key: &str, bytes: &[u8]) -> Result<Node, StoreError> {
    node_from_object(key, object(key, bytes)?)
}

/// A node's name and labels from a Calico v3 Node or a Kubernetes Node (same metadata).
pub fn node_from_object(key: &str, object: Map<String, Value>) -> Result<Node, StoreError> {
    let (metadata, _spec) = split_resource(object);
    let labels = match metadata.get("labels") {
        Some(v) if !v.is_null() => {
            serde_json::from_value(v.clone()).map_err(|e| corrupt(key, e))?
        }
        _ => BTreeMap::new(),
    };
    Ok(Node {
        name: metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        labels,
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
    let (_metadata, mut spec) = split_resource(object);
    let datastore_ready = match take(&mut spec, "datastoreReady") {
        Value::Bool(b) => Some(b),
        _ => None,
    };
    Ok(ClusterInformation {
        datastore_ready,
        extra: spec,
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
    let mut spec = Map::new();
    let cidrs: Vec<String> = r.reserved_cidrs.iter().map(|c| c.to_string()).collect();
    if !cidrs.is_empty() {
        spec.insert("reservedCIDRs".into(), json!(cidrs));
    }
    with_extra(spec, &r.extra)
}

pub fn encode_reservation(r: &IpReservation) -> Vec<u8> {
    to_bytes(json!({
        "kind": "IPReservation",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": r.name},
        "spec": reservation_spec(r),
    }))
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
    let (metadata, mut spec) = split_resource(object);
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| key.rsplit('/').next().map(str::to_string))
        .unwrap_or_default();
    let entries: Vec<Value> = match take(&mut spec, "reservedCIDRs") {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        _ => return Err(corrupt(key, "reservedCIDRs is not a list")),
    };
    let mut reserved_cidrs = Vec::with_capacity(entries.len());
    for entry in &entries {
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
        extra: spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
