//! The CNI error object and the one table of error codes.
//!
//! Every crate has its own typed error enum; each converts once, into [`CniError`], with
//! a code from [`ErrorCode`]. The skeleton prints that object on stdout and exits 1.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::version::Version;

/// Error codes: the spec's well-known ones, then ours (100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the config's cniVersion is not one the plugin speaks.
    IncompatibleVersion,
    /// 2: a config field the plugin does not support.
    UnsupportedField,
    /// 3: the container (or its netns) does not exist; the runtime need not clean up.
    UnknownContainer,
    /// 4: a CNI_* environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: an I/O failure such as reading stdin.
    IoFailure,
    /// 6: content that could not be decoded (JSON, a result, a version).
    DecodingFailure,
    /// 7: the network configuration is invalid.
    InvalidNetworkConfig,
    /// 11: a transient condition; the runtime should retry later.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot serve ADD now.
    NotAvailable,
    /// 51: STATUS: not available, and existing containers may have limited connectivity.
    LimitedConnectivity,
    /// 100: the kernel refused a network change (netlink).
    Netlink,
    /// 101: a network namespace could not be entered or used.
    Netns,
    /// 102: a sysctl could not be read or written.
    Sysctl,
    /// 103: a delegated plugin (IPAM) could not be found or run, or answered garbage.
    Delegation,
    /// 104: the plugin's state on disk could not be read or written.
    State,
    /// 105: no free address is left.
    AddressExhausted,
    /// 106: the datastore could not be reached or refused the change.
    Datastore,
    /// 107: firewall (iptables/nftables) rules could not be applied.
    Firewall,
    /// 108: traffic control (qdisc/filter) could not be applied.
    TrafficControl,
    /// 109: CHECK found the container's networking differs from what ADD set up.
    CheckFailed,
    /// 110: a specific address cannot be given: taken, a gateway, outside every range, or
    /// the container already holds one.
    AddressConflict,
    /// 999: anything without a more specific code (a bug if it ever shows up).
    Internal,
    /// Any other code, as received from a delegated plugin.
    Other(u32),
}

impl ErrorCode {
    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodingFailure => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::Netlink => 100,
            ErrorCode::Netns => 101,
            ErrorCode::Sysctl => 102,
            ErrorCode::Delegation => 103,
            ErrorCode::State => 104,
            ErrorCode::AddressExhausted => 105,
            ErrorCode::Datastore => 106,
            ErrorCode::Firewall => 107,
            ErrorCode::TrafficControl => 108,
            ErrorCode::CheckFailed => 109,
            ErrorCode::AddressConflict => 110,
            ErrorCode::Internal => 999,
            ErrorCode::Other(n) => n,
        }
    }

    pub fn from_u32(n: u32) -> ErrorCode {
        const KNOWN: [ErrorCode; 22] = [
            ErrorCode::IncompatibleVersion,
            ErrorCode::UnsupportedField,
            ErrorCode::UnknownContainer,
            ErrorCode::InvalidEnvironment,
            ErrorCode::IoFailure,
            ErrorCode::DecodingFailure,
            ErrorCode::InvalidNetworkConfig,
            ErrorCode::TryAgainLater,
            ErrorCode::NotAvailable,
            ErrorCode::LimitedConnectivity,
            ErrorCode::Netlink,
            ErrorCode::Netns,
            ErrorCode::Sysctl,
            ErrorCode::Delegation,
            ErrorCode::State,
            ErrorCode::AddressExhausted,
            ErrorCode::Datastore,
            ErrorCode::Firewall,
            ErrorCode::TrafficControl,
            ErrorCode::CheckFailed,
            ErrorCode::AddressConflict,
            ErrorCode::Internal,
        ];
        KNOWN
            .into_iter()
            .find(|c| c.as_u32() == n)
            .unwrap_or(ErrorCode::Other(n))
    }
}

/// The error object of the spec: what a plugin prints on stdout when it fails.
///
/// `msg` is kept short and, where one exists, identical to the reference plugins' message so
/// that tooling matching on it keeps working; `details` says what was wrong and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error as printed on stdout: indented JSON and a newline, `cniVersion` when known (the spec asks
    /// for it; libcni ignores it), `details` only when there are some.
    pub fn to_json(&self, version: Option<Version>) -> String {
        let wire = WireError {
            cni_version: version.map(|v| v.as_str().to_string()),
            code: self.code.as_u32(),
            msg: crate::redact::url_credentials(&self.msg).into_owned(),
            details: (!self.details.is_empty())
                .then(|| crate::redact::url_credentials(&self.details).into_owned()),
        };
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        // Serialising a struct of strings and an integer cannot fail.
        if wire.serialize(&mut ser).is_err() {
            return format!("{{\"code\": {}, \"msg\": \"internal error\"}}", wire.code);
        }
        out.push(b'\n');
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Parses an error object printed by another plugin (a delegated IPAM plugin).
    pub fn from_json(bytes: &[u8]) -> Option<CniError> {
        let wire: WireError = serde_json::from_slice(bytes).ok()?;
        Some(CniError {
            code: ErrorCode::from_u32(wire.code),
            msg: wire.msg,
            details: wire.details.unwrap_or_default(),
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}: {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

#[derive(Serialize, Deserialize)]
struct WireError {
    #[serde(
        rename = "cniVersion",
        skip_serializing_if = "Option::is_none",
        default
    )]
    cni_version: Option<String>,
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    details: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_numbers() {
        for n in [
            1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 105, 109, 110, 999, 4242,
        ] {
            assert_eq!(ErrorCode::from_u32(n).as_u32(), n);
        }
        assert_eq!(ErrorCode::from_u32(7), ErrorCode::InvalidNetworkConfig);
    }

    #[test]
    fn error_object_matches_the_spec_shape() {
        let e = CniError::new(ErrorCode::InvalidNetworkConfig, "missing network name")
            .with_details("set \"name\"");
        let v: serde_json::Value =
            serde_json::from_str(&e.to_json(Some(Version::V1_0_0))).expect("valid json");
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.0.0", "code": 7,
                               "msg": "missing network name", "details": "set \"name\""})
        );
        let bare: serde_json::Value =
            serde_json::from_str(&CniError::new(ErrorCode::IoFailure, "x").to_json(None))
                .expect("valid json");
        assert_eq!(bare, serde_json::json!({"code": 5, "msg": "x"}));
    }

    #[test]
    fn parses_a_delegated_plugins_error() {
        let e = CniError::from_json(br#"{"code": 11, "msg": "busy", "details": "later"}"#)
            .expect("parses");
        assert_eq!(e.code, ErrorCode::TryAgainLater);
        assert_eq!(e.details, "later");
        assert!(CniError::from_json(b"not json").is_none());
    }
}
