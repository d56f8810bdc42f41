//! The `timestamp` attribute of an allocation, in the text Go's `time.Time.String()` gives
//! for UTC (`2025-05-01 10:20:30.123456789 +0000 UTC`): kube-controllers and operators read it.
//! Also the `creationTimestamp` of v3 resources, in the RFC 3339 text Kubernetes' `metav1.Time`
//! marshals to (`2025-05-01T10:20:30Z`, whole seconds).

use std::time::{SystemTime, UNIX_EPOCH};

use shared::civil_date::civil_from_days;

pub fn now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(d.as_secs(), d.subsec_nanos())
}

pub fn format_utc(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut text = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    // Go prints the fraction without trailing zeros, and none at all when it is zero.
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        text.push('.');
        text.push_str(frac.trim_end_matches('0'));
    }
    text.push_str(" +0000 UTC");
    text
}

/// Now as a v3 resource's `creationTimestamp`.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(d.as_secs())
}

/// `2025-05-01T10:20:30Z`: `metav1.Time` keeps whole seconds only.
pub fn format_rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        // 2025-05-01 10:20:30 UTC
        assert_eq!(
            format_utc(1_746_094_830, 123_456_789),
            "2025-05-01 10:20:30.123456789 +0000 UTC"
        );
        assert_eq!(
            format_utc(1_746_094_830, 120_000_000),
            "2025-05-01 10:20:30.12 +0000 UTC"
        );
        assert_eq!(format_utc(0, 0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(format_utc(951_782_400, 0), "2000-02-29 00:00:00 +0000 UTC");
    }

    #[test]
    fn rfc3339_like_metav1_time() {
        assert_eq!(format_rfc3339(1_746_094_830), "2025-05-01T10:20:30Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
