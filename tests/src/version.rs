//! CNI version strings compared the way libcni compares them (`pkg/version.ParseVersion`):
//! up to three dot-separated integers, missing parts are 0, and the empty string means 0.1.0
//! (a config without `cniVersion` is a 0.1.0 config). Kept separate from
//! `shared::spec::version::Version`, which only names the versions our plugins speak: a runner
//! must order any version a conflist may carry, including ones no plugin here supports.

use std::cmp::Ordering;

/// The newest spec version this runner implements, like libcni's `version.Current()`.
pub const IMPLEMENTED: &str = "1.1.0";

/// A version string that does not parse as `major[.minor[.micro]]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {0:?}: {1}")]
pub struct BadVersion(pub String, pub &'static str);

/// `(major, minor, micro)` of a version string.
pub fn parse(version: &str) -> Result<(u64, u64, u64), BadVersion> {
    if version.is_empty() {
        return Ok((0, 1, 0));
    }
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 3 {
        return Err(BadVersion(version.to_string(), "too many parts"));
    }
    let num = |i: usize, what: &'static str| -> Result<u64, BadVersion> {
        match parts.get(i) {
            None => Ok(0),
            Some(p) => p.parse().map_err(|_| BadVersion(version.to_string(), what)),
        }
    };
    Ok((
        num(0, "major version must be an integer")?,
        num(1, "minor version must be an integer")?,
        num(2, "micro version must be an integer")?,
    ))
}

/// Orders two version strings.
pub fn compare(a: &str, b: &str) -> Result<Ordering, BadVersion> {
    Ok(parse(a)?.cmp(&parse(b)?))
}

/// `version >= floor`, as libcni's `GreaterThanOrEqualTo`.
pub fn at_least(version: &str, floor: &str) -> Result<bool, BadVersion> {
    Ok(compare(version, floor)? != Ordering::Less)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_libcni() {
        assert_eq!(parse(""), Ok((0, 1, 0)));
        assert_eq!(parse("1"), Ok((1, 0, 0)));
        assert_eq!(parse("0.4"), Ok((0, 4, 0)));
        assert_eq!(parse("1.1.0"), Ok((1, 1, 0)));
        assert!(parse("1.1.0.0").is_err());
        assert!(parse("a.b").is_err());
    }

    #[test]
    fn orders_numerically_not_lexically() {
        assert_eq!(compare("0.10.0", "0.4.0"), Ok(Ordering::Greater));
        assert_eq!(at_least("0.4.0", "0.4.0"), Ok(true));
        assert_eq!(at_least("0.3.1", "0.4.0"), Ok(false));
        assert_eq!(at_least("", "0.4.0"), Ok(false));
    }
}
