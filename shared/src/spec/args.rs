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
        CniArgs::parse_bytes(raw.as_bytes()).map(|(args, _)| args)
    }

    /// [`Self::parse`] of the variable's bytes, which the runtime may fill with anything (Go
    /// strings carry arbitrary bytes). Pairs whose key or value is not UTF-8 are not in the
    /// result: their keys, printed lossily, come back apart, so that the caller decides
    /// whether to refuse them or skip them. They never make the other pairs disappear.
    pub fn parse_bytes(raw: &[u8]) -> Result<(CniArgs, Vec<String>)> {
        let mut args = CniArgs::default();
        let mut not_utf8 = Vec::new();
        if raw.is_empty() {
            return Ok((args, not_utf8));
        }
        for pair in raw.split(|&b| b == b';') {
            let mut parts = pair.split(|&b| b == b'=');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(k), Some(v), None) => {
                    match (std::str::from_utf8(k), std::str::from_utf8(v)) {
                        (Ok(k), Ok(v)) => args.pairs.push((k.to_string(), v.to_string())),
                        _ => not_utf8.push(String::from_utf8_lossy(k).into_owned()),
                    }
                }
                _ => {
                    return Err(Error::ArgsInvalidPair(
                        String::from_utf8_lossy(pair).into_owned(),
                    ))
                }
            }
        }
        Ok((args, not_utf8))
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
    fn pairs_that_are_not_utf8_come_back_apart_and_leave_the_rest() {
        let (a, bad) =
            CniArgs::parse_bytes(b"IgnoreUnknown=1;IP=10.0.0.2;X=\xff;\xfeK=v").expect("parses");
        assert_eq!(a.get("IP"), Some("10.0.0.2"));
        assert!(a.ignore_unknown());
        assert_eq!(a.pairs().len(), 2);
        assert_eq!(bad, ["X".to_string(), "\u{fffd}K".to_string()]);
        // The shape is checked first: a malformed pair is refused whatever its bytes.
        assert!(matches!(
            CniArgs::parse_bytes(b"IP=10.0.0.2;\xff"),
            Err(Error::ArgsInvalidPair(p)) if p == "\u{fffd}"
        ));
    }

    #[test]
    fn last_repeated_key_wins() {
        let a = CniArgs::parse("IP=10.0.0.2;IP=10.0.0.3").expect("parses");
        assert_eq!(a.get("IP"), Some("10.0.0.3"));
    }
}
