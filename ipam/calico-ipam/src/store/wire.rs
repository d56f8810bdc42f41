//! Calico's IPAM objects as JSON, derived with serde: what the etcd layout (`codec`) and the
//! CRDs (`kube::objects`) read and write. Reading is shared where the two agree (a block's
//! fields are the same in both); writing has one model per layout, because their field
//! order and what they leave out differ. Fields a newer Calico writes that the model does
//! not know land in `extra` and are written back after the known ones.
//!
//! The readers are as lenient as Calico's Go structs are in practice ([`lenient`]): `null`
//! is the empty value, a non-string where a string belongs reads as absent, `deleted` may
//! be the string `"true"`, and counts that are not numbers read as 0.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{AllocationAttribute, IpamBlock};

pub mod lenient {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// `null` reads as the default (Go leaves a nil slice or map).
    pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    /// A string; anything else is absent.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(s) => Some(s),
            _ => None,
        })
    }

    /// A bool, or the string `"true"` in any case (BlockAffinity's CRD spells it so);
    /// anything else is false.
    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Bool(b) => b,
            Value::String(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        })
    }

    /// A bool when it is one.
    pub fn maybe_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Bool(b) => Some(b),
            _ => None,
        })
    }

    /// A non-negative integer; anything else is 0.
    pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(Value::deserialize(d)?.as_u64().unwrap_or(0))
    }

    /// Any JSON value, `null` when absent.
    pub fn any<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
}

/// `extra` without the keys a layout writes itself: a known key is never written twice.
pub fn unknown(extra: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    extra
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

// ---- blocks ------------------------------------------------------------------------------

/// A block's fields: the etcd value, or an IPAMBlock CRD's `spec`.
#[derive(Debug, Deserialize)]
pub struct BlockIn {
    #[serde(default, deserialize_with = "lenient::text")]
    pub cidr: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub affinity: Option<String>,
    pub allocations: Vec<Option<usize>>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub unallocated: Vec<usize>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub attributes: Vec<AttributeIn>,
    #[serde(
        default,
        rename = "sequenceNumber",
        deserialize_with = "lenient::count"
    )]
    pub sequence_number: u64,
    #[serde(
        default,
        rename = "sequenceNumberForAllocation",
        deserialize_with = "lenient::or_default"
    )]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub deleted: bool,
    /// Always written false; not carried.
    #[serde(default, rename = "strictAffinity")]
    _strict_affinity: IgnoredAny,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub struct AttributeIn {
    #[serde(default, deserialize_with = "lenient::text")]
    pub handle_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub secondary: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl From<AttributeIn> for AllocationAttribute {
    fn from(a: AttributeIn) -> AllocationAttribute {
        AllocationAttribute {
            handle_id: a.handle_id,
            secondary: a.secondary,
            extra: a.extra,
        }
    }
}

const BLOCK_FIELDS: &[&str] = &[
    "cidr",
    "affinity",
    "strictAffinity",
    "allocations",
    "unallocated",
    "attributes",
    "deleted",
    "sequenceNumber",
    "sequenceNumberForAllocation",
];
const ATTRIBUTE_FIELDS: &[&str] = &["handle_id", "secondary"];

/// The etcd value: every field present, `affinity` and `handle_id` `null` when unset.
#[derive(Debug, Serialize)]
pub struct EtcdBlock<'a> {
    cidr: String,
    affinity: &'a Option<String>,
    #[serde(rename = "strictAffinity")]
    strict_affinity: bool,
    allocations: &'a [Option<usize>],
    unallocated: &'a [usize],
    attributes: Vec<EtcdAttribute<'a>>,
    deleted: bool,
    #[serde(rename = "sequenceNumber")]
    sequence_number: u64,
    #[serde(rename = "sequenceNumberForAllocation")]
    sequence_number_for_allocation: &'a BTreeMap<String, u64>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct EtcdAttribute<'a> {
    handle_id: &'a Option<String>,
    secondary: &'a BTreeMap<String, String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl<'a> EtcdBlock<'a> {
    pub fn of(b: &'a IpamBlock) -> EtcdBlock<'a> {
        EtcdBlock {
            cidr: b.cidr.to_string(),
            affinity: &b.affinity,
            strict_affinity: false,
            allocations: &b.allocations,
            unallocated: &b.unallocated,
            attributes: b
                .attributes
                .iter()
                .map(|a| EtcdAttribute {
                    handle_id: &a.handle_id,
                    secondary: &a.secondary,
                    extra: unknown(&a.extra, ATTRIBUTE_FIELDS),
                })
                .collect(),
            deleted: b.deleted,
            sequence_number: b.sequence_number,
            sequence_number_for_allocation: &b.sequence_number_for_allocation,
            extra: unknown(&b.extra, BLOCK_FIELDS),
        }
    }
}

/// The CRD's `spec`, as libcalico-go's Go `omitempty` writes it: `affinity`, `handle_id`
/// and `secondary` left out when empty; `strictAffinity` (deprecated, required by the CRD)
/// and `sequenceNumberForAllocation` always there.
#[derive(Debug, Serialize)]
pub struct CrdBlockSpec<'a> {
    cidr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    affinity: &'a Option<String>,
    allocations: &'a [Option<usize>],
    unallocated: &'a [usize],
    attributes: Vec<CrdAttribute<'a>>,
    #[serde(rename = "sequenceNumber")]
    sequence_number: u64,
    #[serde(rename = "sequenceNumberForAllocation")]
    sequence_number_for_allocation: &'a BTreeMap<String, u64>,
    deleted: bool,
    #[serde(rename = "strictAffinity")]
    strict_affinity: bool,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct CrdAttribute<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    handle_id: &'a Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    secondary: &'a BTreeMap<String, String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl<'a> CrdBlockSpec<'a> {
    pub fn of(b: &'a IpamBlock) -> CrdBlockSpec<'a> {
        CrdBlockSpec {
            cidr: b.cidr.to_string(),
            affinity: &b.affinity,
            allocations: &b.allocations,
            unallocated: &b.unallocated,
            attributes: b
                .attributes
                .iter()
                .map(|a| CrdAttribute {
                    handle_id: &a.handle_id,
                    secondary: &a.secondary,
                    extra: unknown(&a.extra, ATTRIBUTE_FIELDS),
                })
                .collect(),
            sequence_number: b.sequence_number,
            sequence_number_for_allocation: &b.sequence_number_for_allocation,
            deleted: b.deleted,
            strict_affinity: false,
            extra: unknown(&b.extra, BLOCK_FIELDS),
        }
    }
}

// ---- handles -------------------------------------------------------------------------------

/// A handle's fields (the etcd value; the CRD's spec adds `handleID`).
#[derive(Debug, Deserialize)]
pub struct HandleIn {
    #[serde(default, rename = "handleID", deserialize_with = "lenient::text")]
    pub handle_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub block: BTreeMap<String, u64>,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct HandleOut<'a> {
    #[serde(rename = "handleID", skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<&'a str>,
    pub block: &'a BTreeMap<String, u64>,
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub const HANDLE_FIELDS: &[&str] = &["handleID", "block", "deleted"];

// ---- affinities ----------------------------------------------------------------------------

/// An affinity's fields: the etcd value holds `state` and `deleted`; the CRD's spec adds
/// `node`, `type`, `cidr`, and spells `deleted` as a string.
#[derive(Debug, Deserialize)]
pub struct AffinityIn {
    #[serde(default, deserialize_with = "lenient::text")]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub node: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient::text")]
    pub affinity_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub cidr: Option<String>,
    /// Read by each layout its own way.
    #[serde(default, deserialize_with = "lenient::any")]
    pub deleted: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub const AFFINITY_FIELDS: &[&str] = &["state", "node", "type", "cidr", "deleted"];

/// The etcd value of an affinity: the node, type and CIDR are in its key.
#[derive(Debug, Deserialize)]
pub struct EtcdAffinityIn {
    #[serde(default, deserialize_with = "lenient::text")]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct EtcdAffinity<'a> {
    pub state: &'a str,
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct CrdAffinitySpec<'a> {
    pub state: &'a str,
    pub node: &'a str,
    #[serde(rename = "type")]
    pub affinity_type: &'a str,
    pub cidr: String,
    /// `"true"` / `"false"`: a string in this CRD.
    pub deleted: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---- IPAM config ---------------------------------------------------------------------------

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The etcd value, every field left out when zero, as libcalico-go writes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct EtcdIpamConfig {
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient::flag"
    )]
    pub strict_affinity: bool,
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient::flag"
    )]
    pub auto_allocate_blocks: bool,
    #[serde(
        default,
        rename = "maxBlocksPerHost",
        skip_serializing_if = "is_zero",
        deserialize_with = "saturating_u32"
    )]
    pub max_blocks_per_host: u32,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The CRD's spec: `strictAffinity` and `autoAllocateBlocks` always (the CRD requires
/// both), `maxBlocksPerHost` only when set.
#[derive(Debug, Serialize, Deserialize)]
pub struct CrdIpamConfigSpec {
    #[serde(default, rename = "strictAffinity", deserialize_with = "lenient::flag")]
    pub strict_affinity: bool,
    #[serde(
        default,
        rename = "autoAllocateBlocks",
        deserialize_with = "lenient::flag"
    )]
    pub auto_allocate_blocks: bool,
    #[serde(
        default,
        rename = "maxBlocksPerHost",
        skip_serializing_if = "is_zero",
        deserialize_with = "saturating_u32"
    )]
    pub max_blocks_per_host: u32,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub const ETCD_IPAM_CONFIG_FIELDS: &[&str] = &[
    "strict_affinity",
    "auto_allocate_blocks",
    "maxBlocksPerHost",
];
pub const CRD_IPAM_CONFIG_FIELDS: &[&str] =
    &["strictAffinity", "autoAllocateBlocks", "maxBlocksPerHost"];

/// Beyond u32 is a limit no host reaches, not 0 (no limit) or a small number.
fn saturating_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = lenient::count(d)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

// ---- v3 resources: pools, reservations, nodes, ClusterInformation --------------------------

/// The metadata the readers use.
#[derive(Debug, Default, Deserialize)]
pub struct MetadataIn {
    #[serde(default, deserialize_with = "lenient::text")]
    pub name: Option<String>,
    #[serde(
        default,
        rename = "deletionTimestamp",
        deserialize_with = "lenient::any"
    )]
    pub deletion_timestamp: Value,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub labels: BTreeMap<String, String>,
}

/// An IPPool's spec: the same in a v3 resource and in the CRD.
#[derive(Debug, Deserialize)]
pub struct PoolSpecIn {
    #[serde(default, deserialize_with = "lenient::text")]
    pub cidr: Option<String>,
    #[serde(default, rename = "blockSize", deserialize_with = "lenient::any")]
    pub block_size: Value,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub disabled: bool,
    #[serde(default, rename = "nodeSelector", deserialize_with = "lenient::text")]
    pub node_selector: Option<String>,
    #[serde(
        default,
        rename = "allowedUses",
        deserialize_with = "lenient::or_default"
    )]
    pub allowed_uses: Vec<String>,
    #[serde(default, rename = "assignmentMode", deserialize_with = "lenient::text")]
    pub assignment_mode: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An IPPool's spec as calicoctl writes it.
#[derive(Debug, Serialize)]
pub struct PoolSpecOut<'a> {
    pub cidr: String,
    #[serde(rename = "blockSize")]
    pub block_size: u8,
    #[serde(skip_serializing_if = "is_false")]
    pub disabled: bool,
    #[serde(rename = "nodeSelector", skip_serializing_if = "str::is_empty")]
    pub node_selector: &'a str,
    #[serde(rename = "allowedUses", skip_serializing_if = "<[String]>::is_empty")]
    pub allowed_uses: &'a [String],
    #[serde(rename = "assignmentMode", skip_serializing_if = "str::is_empty")]
    pub assignment_mode: &'a str,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub const POOL_FIELDS: &[&str] = &[
    "cidr",
    "blockSize",
    "disabled",
    "nodeSelector",
    "allowedUses",
    "assignmentMode",
];

/// An IPReservation's spec; each entry is judged on its own (see the reader).
#[derive(Debug, Deserialize)]
pub struct ReservationSpecIn {
    #[serde(
        default,
        rename = "reservedCIDRs",
        deserialize_with = "lenient::or_default"
    )]
    pub reserved_cidrs: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct ReservationSpecOut {
    #[serde(rename = "reservedCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub reserved_cidrs: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// ClusterInformation's spec: only `datastoreReady` is read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInformationSpecIn {
    #[serde(default, deserialize_with = "lenient::maybe_flag")]
    pub datastore_ready: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A v3 resource as written: kind, apiVersion, metadata with the name, and the spec.
#[derive(Debug, Serialize)]
pub struct ResourceOut<'a, S: Serialize> {
    pub kind: &'static str,
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    pub metadata: NameOnly<'a>,
    pub spec: S,
}

#[derive(Debug, Serialize)]
pub struct NameOnly<'a> {
    pub name: &'a str,
}
