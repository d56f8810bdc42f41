//! CNI_ARGS: `K1=V1;K2=V2`, as libcni's `LoadArgs` reads it.
//!
//! Keys are case-sensitive. A plugin states which keys it understands; any other key is an
//! error unless the runtime passed `IgnoreUnknown=1` (Kubernetes runtimes always do).

use crate::error::{Error, Result};

/// The parsed pairs, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

/// The key that turns unknown keys from an error into something to skip.
pub const IGNORE_UNKNOWN: &str = "IgnoreUnknown";

impl CniArgs {
    /// Splits the raw variable. An empty string holds no pairs; every other piece must be
    /// exactly one `K=V` (a value holding `=` is refused, as libcni refuses it).
    pub fn parse(raw: &str) -> Result<CniArgs> {
        if raw.is_empty() {
            return Ok(CniArgs::default());
        }
        let mut pairs = Vec::new();
        for pair in raw.split(';') {
            let mut parts = pair.split('=');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(k), Some(v), None) => pairs.push((k.to_string(), v.to_string())),
                _ => return Err(Error::ArgsInvalidPair(pair.to_string())),
            }
        }
        Ok(CniArgs { pairs })
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The value of `key`; the last one wins when a key repeats.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `IgnoreUnknown` is true when `1` or `true` (any case), as libcni reads a Go bool.
    pub fn ignore_unknown(&self) -> bool {
        self.get(IGNORE_UNKNOWN)
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    /// Refuses keys outside `known` unless `IgnoreUnknown` is set. `IgnoreUnknown` itself is
    /// always known.
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        if self.ignore_unknown() {
            return Ok(());
        }
        let unknown: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != IGNORE_UNKNOWN && !known.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::ArgsUnknown(unknown))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_style_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234",
        )
        .expect("parses");
        assert_eq!(a.get("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(a.get("k8s_pod_name"), None, "keys are case-sensitive");
        assert!(a.ignore_unknown());
        assert_eq!(a.pairs().len(), 5);
    }

    #[test]
    fn empty_holds_nothing() {
        let a = CniArgs::parse("").expect("parses");
        assert!(a.pairs().is_empty());
        assert!(!a.ignore_unknown());
        assert!(a.check_known(&[]).is_ok());
    }

    #[test]
    fn refuses_malformed_pairs() {
        for raw in ["a", "a=b;c", "a=b=c", ";", "a=b;"] {
            match CniArgs::parse(raw) {
                Err(Error::ArgsInvalidPair(_)) => {}
                other => panic!("{raw:?} gave {other:?}"),
            }
        }
        // An empty value is a valid pair.
        assert_eq!(CniArgs::parse("IP=").expect("parses").get("IP"), Some(""));
    }

    #[test]
    fn unknown_keys_need_ignore_unknown() {
        let a = CniArgs::parse("IP=10.0.0.2;FOO=1").expect("parses");
        match a.check_known(&["IP"]) {
            Err(Error::ArgsUnknown(keys)) => assert_eq!(keys, vec!["FOO=1".to_string()]),
            other => panic!("expected unknown args, got {other:?}"),
        }
        for flag in ["1", "true", "TRUE", "True"] {
            let a = CniArgs::parse(&format!("IgnoreUnknown={flag};FOO=1")).expect("parses");
            assert!(a.check_known(&["IP"]).is_ok(), "IgnoreUnknown={flag}");
        }
        let a = CniArgs::parse("IgnoreUnknown=0;FOO=1").expect("parses");
        assert!(a.check_known(&[]).is_err());
    }

    #[test]
    fn last_repeated_key_wins() {
        let a = CniArgs::parse("IP=10.0.0.2;IP=10.0.0.3").expect("parses");
        assert_eq!(a.get("IP"), Some("10.0.0.3"));
    }
}
