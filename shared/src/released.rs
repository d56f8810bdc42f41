//! What a DEL took away, so that its log line says it (`DEL succeeded: released addresses
//! 10.0.0.5, fd00::5 (handle k8s-pod-network.abc); interface eth0 ...`): an operator
//! following a pod through the node's log sees where each thing it had went.

use std::fmt;
use std::net::IpAddr;

/// The things one DEL removed, in the order it removed them. Empty when everything was
/// already gone (DEL is idempotent: a repeated DEL releases nothing and still succeeds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    items: Vec<String>,
}

impl Released {
    pub fn nothing() -> Released {
        Released::default()
    }

    /// One thing, described for an operator ("ifb device bwp1a2b3c", "addresses ...").
    pub fn of(what: impl Into<String>) -> Released {
        Released {
            items: vec![what.into()],
        }
    }

    /// `addresses 10.0.0.5, fd00::5`, the item an IPAM plugin's DEL reports.
    pub fn addresses(ips: &[IpAddr]) -> String {
        let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        format!("addresses {}", list.join(", "))
    }

    pub fn add(&mut self, what: impl Into<String>) {
        self.items.push(what.into());
    }

    pub fn merge(&mut self, other: Released) {
        self.items.extend(other.items);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Display for Released {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.items.is_empty() {
            f.write_str("nothing was left to release")
        } else {
            write!(f, "released {}", self.items.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_went_or_that_nothing_was_left() {
        assert_eq!(
            Released::nothing().to_string(),
            "nothing was left to release"
        );
        let mut r = Released::of("addresses 10.0.0.5");
        r.merge(Released::of("interface eth0"));
        assert_eq!(r.to_string(), "released addresses 10.0.0.5; interface eth0");
    }
}
