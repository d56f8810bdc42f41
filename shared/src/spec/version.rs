//! CNI specification versions this suite speaks, and the VERSION reply.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A CNI specification version. 0.1.0 and 0.2.0 (the `ip4`/`ip6` results, before chaining)
/// are spoken by the plugins that Calico's and the reference's speak them in (calico,
/// calico-ipam, host-local, loopback), because older guides' configs still carry them; the
/// chained plugins (portmap, bandwidth) need a `prevResult` and start at 0.3.0, as the
/// reference's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 7] = [
        Version::V0_1_0,
        Version::V0_2_0,
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];

    /// The versions with the chaining result format (`prevResult`), 0.3.0 on.
    pub const CHAINING: [Version; 5] = [
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];

    /// What a config without `cniVersion` (or with an empty one) is taken to be, as libcni
    /// takes it.
    pub const UNNAMED: Version = Version::V0_1_0;

    /// The newest version: the one our results are built in and VERSION reports.
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// 0.1.0 and 0.2.0: one `ip4` and one `ip6` in a result, no interfaces, no chaining.
    pub fn is_legacy(self) -> bool {
        self < Version::V0_3_0
    }

    /// CHECK arrived in 0.4.0.
    pub fn allows_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// GC and STATUS arrived in 1.1.0.
    pub fn allows_gc_and_status(self) -> bool {
        self >= Version::V1_1_0
    }

    /// Results of 0.3.x and 0.4.0 carry a `version` field on each IP; 1.0.0 removed it.
    pub fn ips_carry_version(self) -> bool {
        self < Version::V1_0_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the versions in [`Version::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported CNI version {0:?}")]
pub struct UnknownVersion(pub String);

impl FromStr for Version {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVersion(s.to_string()))
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Renders a version list the way operators read it in messages: `0.3.0, 0.3.1, ...`.
pub fn list(versions: &[Version]) -> String {
    versions
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The VERSION reply: `{"cniVersion":"1.1.0","supportedVersions":[...]}` and a newline,
/// compact, as libcni's version probe expects.
pub fn version_reply(supported: &[Version]) -> String {
    let reply = serde_json::json!({
        "cniVersion": Version::LATEST,
        "supportedVersions": supported,
    });
    format!("{reply}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_version_and_rejects_others() {
        for v in Version::ALL {
            assert_eq!(v.as_str().parse::<Version>(), Ok(v));
        }
        for bad in ["", "0.0.9", "0.2", "1.1", "9.9.9", " 1.0.0"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn versions_order_by_release() {
        assert!(Version::V0_1_0 < Version::V0_2_0);
        assert!(Version::V0_2_0.is_legacy() && !Version::V0_3_0.is_legacy());
        assert!(Version::V0_3_0 < Version::V0_3_1);
        assert!(Version::V0_4_0 < Version::V1_0_0);
        assert!(!Version::V0_3_1.allows_check());
        assert!(Version::V0_4_0.allows_check());
        assert!(!Version::V1_0_0.allows_gc_and_status());
        assert!(Version::V1_0_0 < Version::LATEST);
    }

    #[test]
    fn version_reply_is_compact_json_with_newline() {
        let out = version_reply(&Version::ALL);
        assert_eq!(
            out,
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
        );
    }
}
