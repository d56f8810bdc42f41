//! The report `check -o` writes and `release --from-report` acts on, in calicoctl's JSON
//! (field names and omissions as its `Report`, `Allocation` and `HandleInfo` marshal), so a
//! report is read the same whichever of the two tools an operator's runbook uses to look
//! at it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::ClusterInformation;
use crate::store::{Store, Versioned};

/// Which tool wrote a report: `release --from-report` refuses another one's unless forced.
pub const VERSION: &str = concat!("calico-ipam v", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    pub version: String,
    #[serde(rename = "clusterGUID")]
    pub cluster_guid: String,
    #[serde(rename = "datastoreLocked")]
    pub datastore_locked: bool,
    /// The ClusterInformation's revision when the report was made: a release acts only on
    /// reports of the cluster as it is now.
    #[serde(rename = "clusterInformationRevision")]
    pub cluster_information_revision: String,
    #[serde(rename = "clusterType")]
    pub cluster_type: String,
    /// Address → its allocations (one, unless blocks overlap).
    pub allocations: BTreeMap<String, Vec<Allocation>>,
    #[serde(
        rename = "leakedHandles",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub leaked_handles: Vec<HandleInfo>,
}

/// One allocation of an address, with who uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Allocation {
    pub ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub handle: String,
    #[serde(
        rename = "sequenceNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sequence_number: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(
        rename = "creationTimestamp",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub creation_timestamp: String,
    /// A workload or node uses it; false is a leak.
    #[serde(rename = "inUse")]
    pub in_use: bool,
    /// From a block affine to another node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub borrowed: bool,
    /// Who uses it; `null` (as calicoctl writes an empty list) when nobody does.
    #[serde(default)]
    pub owners: Option<Vec<String>>,
}

/// A handle no allocation refers to, with the revision it had: it is deleted only if it
/// still has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HandleInfo {
    #[serde(rename = "ID")]
    pub id: String,
    /// The IPAMHandle's UID on Kubernetes; not recorded here (the revision already changes
    /// with a deletion and re-creation).
    #[serde(rename = "UID", default)]
    pub uid: Option<String>,
    #[serde(rename = "Revision")]
    pub revision: String,
}

impl Report {
    /// Writes the report as calicoctl does (indented by two spaces).
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Reads a report as Go reads JSON (keys matched case-insensitively).
    pub fn read(path: &Path) -> Result<Report, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        shared::gojson::from_slice(&bytes)
            .map_err(|e| format!("{} is not an IPAM report: {e}", path.display()))
    }
}

/// The ClusterInformation a report is tied to. A single node's `local` store may have none
/// (nothing runs calico/node there): it is then the empty one, as readiness reads it.
pub fn cluster_information(store: &dyn Store) -> Result<Versioned<ClusterInformation>, String> {
    match store.get_cluster_information().map_err(|e| e.to_string())? {
        Some(info) => Ok(info),
        None if !store.has_calico_node() => Ok(Versioned {
            value: ClusterInformation::default(),
            revision: String::new(),
        }),
        None => Err(
            "ClusterInformation \"default\" does not exist: calico/node creates it \
                     when it starts, and a report is tied to its revision"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omissions_follow_calicoctl() {
        let report = Report {
            version: VERSION.into(),
            allocations: BTreeMap::from([(
                "10.0.0.1".to_string(),
                vec![Allocation {
                    ip: "10.0.0.1".into(),
                    sequence_number: Some(0),
                    ..Allocation::default()
                }],
            )]),
            ..Report::default()
        };
        let json = serde_json::to_value(&report).expect("encodes");
        assert!(json.get("leakedHandles").is_none(), "{json}");
        let a = &json["allocations"]["10.0.0.1"][0];
        assert_eq!(a["owners"], serde_json::Value::Null);
        assert_eq!(a["sequenceNumber"], 0);
        assert!(
            a.get("borrowed").is_none() && a.get("handle").is_none(),
            "{a}"
        );
    }

    #[test]
    fn a_report_reads_back_whatever_the_key_case() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r.json");
        std::fs::write(
            &path,
            br#"{"Version": "v", "clusterguid": "g", "leakedHandles": [{"id": "h", "revision": "7"}]}"#,
        )
        .expect("write");
        let report = Report::read(&path).expect("reads");
        assert_eq!(report.cluster_guid, "g");
        assert_eq!(report.leaked_handles[0].revision, "7");
    }
}
