//! Calico's IPAM objects as `crd.projectcalico.org/v1` custom resources, exactly as
//! libcalico-go writes them (spec §7.1): the JSON of each `spec`, the labels of a
//! BlockAffinity, the `projectcalico.org/metadata` annotation; and back to the model.
//!
//! Fields a newer Calico writes that the model does not know travel in `extra` and are
//! written back untouched.

use ipnetwork::IpNetwork;
use serde_json::{json, Map, Value};

use super::names::{self, AFFINITY_TYPE_LABEL, HOSTNAME_HASH_LABEL, IP_VERSION_LABEL};
use crate::model::{
    AffinityState, BlockAffinity, ClusterInformation, IpPool, IpReservation, IpamBlock, IpamConfig,
    IpamHandle, Node,
};
use crate::store::codec::{self, corrupt};
use crate::store::{wire, StoreError};

/// The API group and version of Calico's CRDs.
pub const API_VERSION: &str = "crd.projectcalico.org/v1";

/// The annotation libcalico-go puts on every object it writes: the v3 metadata minus what
/// Kubernetes already holds (name, namespace, uid, resourceVersion, labels, annotations),
/// which for IPAM objects leaves only the zero creation time.
pub const METADATA_ANNOTATION: &str = "projectcalico.org/metadata";
pub const METADATA_ANNOTATION_VALUE: &str = r#"{"creationTimestamp":null}"#;

/// The name of the IPAMConfig (and ClusterInformation) singleton.
pub const DEFAULT_NAME: &str = "default";

/// A resource object: `apiVersion`, `kind`, `metadata` (name, labels, the annotation) and
/// `spec`.
fn resource(kind: &str, name: &str, labels: Option<Value>, spec: Value) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(name));
    if let Some(labels) = labels {
        metadata.insert("labels".into(), labels);
    }
    metadata.insert(
        "annotations".into(),
        json!({ METADATA_ANNOTATION: METADATA_ANNOTATION_VALUE }),
    );
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "spec": spec,
    })
}

/// A spec model as JSON. Plain data with string keys: encoding cannot fail.
fn to_value<T: serde::Serialize>(spec: &T) -> Value {
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

/// `metadata.name` of an object (empty when missing).
pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// `metadata.resourceVersion`: the revision of everything read from the API.
pub fn revision_of(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The `spec` of an object as a map (empty when missing or not an object).
fn spec_of(object: &Value) -> Map<String, Value> {
    match &object["spec"] {
        Value::Object(spec) => spec.clone(),
        _ => Map::new(),
    }
}

fn as_map(object: &Value) -> Map<String, Value> {
    match object {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    }
}

// ---- IPAMBlock -----------------------------------------------------------------------------

/// The block's spec: `affinity` omitted when unaffine, `attributes` with `handle_id` and
/// `secondary` omitted when empty (Go's `omitempty`), `strictAffinity` always present
/// (deprecated, but required by the CRD), `sequenceNumberForAllocation` always an object.
pub fn block(block: &IpamBlock) -> Value {
    resource(
        "IPAMBlock",
        &names::block_name(&block.cidr),
        None,
        to_value(&wire::CrdBlockSpec::of(block)),
    )
}

/// A block from its object; its name and its `cidr` must agree (see `codec::decode_block`).
pub fn block_from(object: &Value) -> Result<IpamBlock, StoreError> {
    let name = name_of(object);
    let key = format!("IPAMBlock {name}");
    let block = codec::block_from_object(&key, spec_of(object))?;
    if names::block_name(&block.cidr) != name {
        return Err(corrupt(
            &key,
            format!(
                "its cidr {} is not the one its name says: fix the cidr or remove the block",
                block.cidr
            ),
        ));
    }
    Ok(block)
}

// ---- BlockAffinity -------------------------------------------------------------------------

/// The labels a newer Calico selects a node's affinities by.
pub fn affinity_labels(a: &BlockAffinity) -> Value {
    json!({
        HOSTNAME_HASH_LABEL: names::hostname_hash(&a.node),
        AFFINITY_TYPE_LABEL: a.affinity_type,
        IP_VERSION_LABEL: names::ip_version(a.cidr.is_ipv4()),
    })
}

/// The affinity's spec; `deleted` is a string in this CRD (`"true"` / `"false"`).
pub fn affinity(a: &BlockAffinity) -> Value {
    let spec = wire::CrdAffinitySpec {
        state: a.state.as_str(),
        node: &a.node,
        affinity_type: &a.affinity_type,
        cidr: a.cidr.to_string(),
        deleted: a.deleted.to_string(),
        extra: wire::unknown(&a.extra, wire::AFFINITY_FIELDS),
    };
    resource(
        "BlockAffinity",
        &names::affinity_name(&a.node, &a.cidr),
        Some(affinity_labels(a)),
        to_value(&spec),
    )
}

/// Go's `strconv.ParseBool`, which is how Calico reads the string `deleted`; empty is
/// false.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        _ => None,
    }
}

/// `spec.deleted` of a BlockAffinity: a string, or a bool as the v3 API group writes it.
fn affinity_deleted(key: &str, value: Value) -> Result<bool, StoreError> {
    match value {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(b),
        Value::String(s) => {
            parse_go_bool(&s).ok_or_else(|| corrupt(key, format!("deleted is {s:?}")))
        }
        other => Err(corrupt(key, format!("deleted is {other}"))),
    }
}

pub fn affinity_from(object: &Value) -> Result<BlockAffinity, StoreError> {
    let key = format!("BlockAffinity {}", name_of(object));
    let fields: wire::AffinityIn = codec::from_map(&key, spec_of(object))?;
    let cidr: IpNetwork = fields
        .cidr
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| corrupt(&key, "missing or invalid cidr"))?;
    let state_text = fields.state.unwrap_or_default();
    let state = AffinityState::parse(&state_text)
        .ok_or_else(|| corrupt(&key, format!("unknown affinity state {state_text:?}")))?;
    Ok(BlockAffinity {
        affinity_type: fields
            .affinity_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "host".to_string()),
        node: fields.node.unwrap_or_default(),
        cidr,
        state,
        deleted: affinity_deleted(&key, fields.deleted)?,
        extra: fields.extra,
    })
}

/// Whether an object's `spec.deleted` says it is being deleted (bool or string form).
pub fn marked_deleted(object: &Value) -> bool {
    match &object["spec"]["deleted"] {
        Value::Bool(b) => *b,
        Value::String(s) => parse_go_bool(s).unwrap_or(false),
        _ => false,
    }
}

// ---- IPAMHandle ----------------------------------------------------------------------------

/// Named after the lower-cased handle ID; `spec.handleID` keeps its spelling.
pub fn handle(h: &IpamHandle) -> Value {
    let spec = wire::HandleOut {
        handle_id: Some(&h.handle_id),
        block: &h.block,
        deleted: h.deleted,
        extra: wire::unknown(&h.extra, wire::HANDLE_FIELDS),
    };
    resource(
        "IPAMHandle",
        &names::handle_name(&h.handle_id),
        None,
        to_value(&spec),
    )
}

pub fn handle_from(object: &Value) -> Result<IpamHandle, StoreError> {
    let key = format!("IPAMHandle {}", name_of(object));
    let fields: wire::HandleIn = codec::from_map(&key, spec_of(object))?;
    let handle_id = fields
        .handle_id
        .filter(|h| !h.is_empty())
        .ok_or_else(|| corrupt(&key, "missing handleID"))?;
    Ok(IpamHandle {
        handle_id,
        block: fields.block,
        deleted: fields.deleted,
        extra: fields.extra,
    })
}

// ---- IPAMConfig ----------------------------------------------------------------------------

/// `strictAffinity` and `autoAllocateBlocks` always (the CRD requires both),
/// `maxBlocksPerHost` only when set.
pub fn ipam_config(c: &IpamConfig) -> Value {
    let spec = wire::CrdIpamConfigSpec {
        strict_affinity: c.strict_affinity,
        auto_allocate_blocks: c.auto_allocate_blocks,
        max_blocks_per_host: c.max_blocks_per_host,
        extra: wire::unknown(&c.extra, wire::CRD_IPAM_CONFIG_FIELDS),
    };
    resource("IPAMConfig", DEFAULT_NAME, None, to_value(&spec))
}

pub fn ipam_config_from(object: &Value) -> Result<IpamConfig, StoreError> {
    let spec: wire::CrdIpamConfigSpec = codec::from_map("IPAMConfig default", spec_of(object))?;
    Ok(IpamConfig {
        strict_affinity: spec.strict_affinity,
        auto_allocate_blocks: spec.auto_allocate_blocks,
        max_blocks_per_host: spec.max_blocks_per_host,
        extra: spec.extra,
    })
}

// ---- read-only kinds -----------------------------------------------------------------------

/// An IPPool as calicoctl would create it (only the `local`-style pool creation and tests
/// write pools; CNI only reads them).
pub fn pool(p: &IpPool) -> Value {
    resource("IPPool", &p.name, None, codec::pool_spec(p))
}

/// A pool, with the legacy `ipip` and `nat-outgoing` fields converted as Calico converts
/// them on read; a pool being deleted reads as disabled.
pub fn pool_from(object: &Value) -> Result<IpPool, StoreError> {
    let key = format!("IPPool {}", name_of(object));
    let mut object = as_map(object);
    if let Some(Value::Object(spec)) = object.get_mut("spec") {
        convert_legacy_pool_fields(spec);
    }
    codec::pool_from_object(&key, object)
}

/// `ipip: {enabled, mode}` → `ipipMode` (disabled → Never, `cross-subnet` → CrossSubnet,
/// else Always) when `ipipMode` is unset; `nat-outgoing` is ORed into `natOutgoing`.
fn convert_legacy_pool_fields(spec: &mut Map<String, Value>) {
    if let Some(Value::Object(ipip)) = spec.remove("ipip") {
        let unset = spec
            .get("ipipMode")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if unset {
            let mode = if ipip.get("enabled") == Some(&Value::Bool(false)) {
                "Never"
            } else if ipip.get("mode").and_then(Value::as_str) == Some("cross-subnet") {
                "CrossSubnet"
            } else {
                "Always"
            };
            spec.insert("ipipMode".into(), json!(mode));
        }
    }
    if let Some(legacy) = spec.remove("nat-outgoing") {
        if legacy == Value::Bool(true) {
            spec.insert("natOutgoing".into(), json!(true));
        }
    }
}

pub fn reservation_from(object: &Value) -> Result<IpReservation, StoreError> {
    codec::reservation_from_object(
        &format!("IPReservation {}", name_of(object)),
        as_map(object),
    )
}

pub fn node_from(object: &Value) -> Result<Node, StoreError> {
    codec::node_from_object(&format!("Node {}", name_of(object)), as_map(object))
}

pub fn cluster_information_from(object: &Value) -> Result<ClusterInformation, StoreError> {
    codec::cluster_information_from_object(as_map(object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use std::collections::BTreeMap;

    fn cidr(s: &str) -> IpNetwork {
        s.parse().expect("cidr")
    }

    #[test]
    fn block_spec_is_calicos() {
        let mut b = IpamBlock::new(cidr("10.244.1.64/30"), Some("host:n1".into()), 7);
        b.allocations[0] = Some(0);
        b.unallocated = vec![1, 2, 3];
        b.attributes.push(crate::model::AllocationAttribute {
            handle_id: Some("net.c1".into()),
            secondary: BTreeMap::from([("node".to_string(), "n1".to_string())]),
            extra: Map::new(),
        });
        b.attributes
            .push(crate::model::AllocationAttribute::default());
        b.sequence_number_for_allocation.insert("0".into(), 7);
        let obj = block(&b);
        assert_eq!(obj["metadata"]["name"], "10-244-1-64-30");
        assert_eq!(
            obj["metadata"]["annotations"][METADATA_ANNOTATION],
            METADATA_ANNOTATION_VALUE
        );
        assert_eq!(
            obj["spec"],
            json!({"cidr": "10.244.1.64/30", "affinity": "host:n1",
                   "allocations": [0, null, null, null], "unallocated": [1, 2, 3],
                   "attributes": [{"handle_id": "net.c1", "secondary": {"node": "n1"}}, {}],
                   "sequenceNumber": 7, "sequenceNumberForAllocation": {"0": 7},
                   "deleted": false, "strictAffinity": false})
        );
        assert_eq!(block_from(&obj).expect("decodes"), b);
        let unaffine = IpamBlock::new(cidr("10.0.0.0/30"), None, 1);
        let obj = block(&unaffine);
        assert!(obj["spec"].get("affinity").is_none(), "{obj}");
        assert_eq!(obj["spec"]["sequenceNumberForAllocation"], json!({}));
    }

    #[test]
    fn a_block_named_for_another_cidr_is_corrupt() {
        let mut obj = block(&IpamBlock::new(cidr("10.244.1.64/30"), None, 1));
        obj["spec"]["cidr"] = json!("10.99.0.0/30");
        match block_from(&obj) {
            Err(StoreError::Corrupt { key, reason }) => {
                assert_eq!(key, "IPAMBlock 10-244-1-64-30");
                assert!(reason.contains("10.99.0.0/30"), "{reason}");
            }
            other => panic!("expected a corrupt block, got {other:?}"),
        }
    }

    #[test]
    fn affinity_deleted_is_a_string_and_labels_are_set() {
        let a = BlockAffinity::host("n1", cidr("fd00::40/122"), AffinityState::Pending);
        let obj = affinity(&a);
        assert_eq!(obj["metadata"]["name"], "n1-fd00--40-122");
        assert_eq!(
            obj["spec"],
            json!({"state": "pending", "node": "n1", "type": "host",
                   "cidr": "fd00::40/122", "deleted": "false"})
        );
        assert_eq!(obj["metadata"]["labels"][IP_VERSION_LABEL], "6");
        assert_eq!(obj["metadata"]["labels"][AFFINITY_TYPE_LABEL], "host");
        assert_eq!(affinity_from(&obj).expect("decodes"), a);
        let mut old = obj.clone();
        old["spec"]["deleted"] = json!("True");
        old["spec"]["type"] = json!("");
        old["spec"]["state"] = json!("");
        let read = affinity_from(&old).expect("decodes");
        assert!(read.deleted && marked_deleted(&old));
        assert_eq!(read.affinity_type, "host");
        assert_eq!(read.state, AffinityState::Confirmed);
        old["spec"]["deleted"] = json!("maybe");
        assert!(affinity_from(&old).is_err());
    }

    #[test]
    fn handle_keeps_its_case_in_the_spec() {
        let h = IpamHandle {
            handle_id: "Net.ABC".into(),
            block: BTreeMap::from([("10.0.0.0/26".to_string(), 2)]),
            deleted: false,
            extra: Map::new(),
        };
        let obj = handle(&h);
        assert_eq!(obj["metadata"]["name"], "net.abc");
        assert_eq!(
            obj["spec"],
            json!({"handleID": "Net.ABC", "block": {"10.0.0.0/26": 2}, "deleted": false})
        );
        assert_eq!(handle_from(&obj).expect("decodes"), h);
    }

    #[test]
    fn ipam_config_default_and_limit() {
        let obj = ipam_config(&IpamConfig::default());
        assert_eq!(obj["metadata"]["name"], "default");
        assert_eq!(
            obj["spec"],
            json!({"strictAffinity": false, "autoAllocateBlocks": true})
        );
        let c = IpamConfig {
            max_blocks_per_host: 3,
            strict_affinity: true,
            ..IpamConfig::default()
        };
        assert_eq!(ipam_config(&c)["spec"]["maxBlocksPerHost"], 3);
        assert_eq!(ipam_config_from(&ipam_config(&c)).expect("decodes"), c);
    }

    #[test]
    fn legacy_pool_fields_are_converted() {
        let obj = json!({"metadata": {"name": "old"},
            "spec": {"cidr": "10.0.0.0/16", "ipip": {"enabled": true, "mode": "cross-subnet"},
                     "nat-outgoing": true}});
        let p = pool_from(&obj).expect("decodes");
        assert_eq!(p.extra["ipipMode"], "CrossSubnet");
        assert_eq!(p.extra["natOutgoing"], true);
        assert_eq!(p.block_size, 26);
        let deleting = json!({"metadata": {"name": "x", "deletionTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"cidr": "10.1.0.0/16"}});
        assert!(pool_from(&deleting).expect("decodes").disabled);
    }
}
