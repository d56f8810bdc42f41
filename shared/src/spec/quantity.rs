//! Kubernetes quantities ("10M", "1G", "500k", "100Mi") and the pod bandwidth annotations
//! that container runtimes turn into the `bandwidth` capability.
//!
//! The translation is containerd's CRI plugin (`toCNIBandWidth` over kubelet's
//! `ExtractPodBandwidthResources`): each annotation is a quantity of bits per second,
//! rounded up to an integer as `Quantity.Value()` does, between 1k and 1P; a direction that
//! is set gets a burst of `math.MaxUint32` bits (the runtimes' "no burst limit").

use super::config::BandwidthLimits;

pub const INGRESS_ANNOTATION: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_ANNOTATION: &str = "kubernetes.io/egress-bandwidth";

/// The burst containerd (and CRI-O) pass with every annotated rate.
pub const ANNOTATION_BURST: u64 = u32::MAX as u64;
/// Smallest accepted rate: 1k.
const MIN_RATE: i128 = 1_000;
/// Largest accepted rate: 1P.
const MAX_RATE: i128 = 1_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The message of apimachinery's `ErrFormatWrong`.
    #[error("{annotation}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {value:?})")]
    Format { annotation: String, value: String },
    #[error("{annotation}: unable to parse quantity's suffix (got {value:?})")]
    Suffix { annotation: String, value: String },
    #[error("{annotation}: resource is unreasonably small (< 1kbit) (got {value:?})")]
    TooSmall { annotation: String, value: String },
    #[error("{annotation}: resource is unreasonably large (> 1Pbit) (got {value:?})")]
    TooLarge { annotation: String, value: String },
}

/// Why a text is not a quantity, before we know which annotation held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    Format,
    Suffix,
}

/// The integer value of a quantity, a fraction rounded away from zero as `Quantity.Value()`
/// rounds it, saturating far beyond any accepted rate.
pub fn parse_quantity(text: &str) -> Option<i128> {
    parse(text).ok()
}

fn parse(text: &str) -> Result<i128, Malformed> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'+') => (false, &text[1..]),
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(Malformed::Format);
    }
    // mantissa × 10^exp10 × 2^exp2
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => {
            let exponent: i32 = s[1..].parse().map_err(|_| Malformed::Suffix)?;
            (exponent, 0)
        }
        s if s.chars().all(|c| "eEinumkKMGTP".contains(c)) => return Err(Malformed::Suffix),
        _ => return Err(Malformed::Format),
    };
    // Digits beyond what any rate needs only decide the rounding: keep 30 significant ones.
    let digits: String = whole.chars().chain(fraction.chars()).collect();
    let digits = digits.trim_start_matches('0');
    let kept = &digits[..digits.len().min(30)];
    let dropped_nonzero = digits[kept.len()..].chars().any(|c| c != '0');
    let mut mantissa: i128 = if kept.is_empty() {
        0
    } else {
        kept.parse().map_err(|_| Malformed::Format)?
    };
    // In i64: an exponent near i32's limits, shifted by the digits, must not overflow (it
    // did in i32: "1.5e-2147483648"); so large a power of ten saturates or divides to 0 below.
    let scale = i64::from(exp10) - fraction.len() as i64 + (digits.len() - kept.len()) as i64;
    let power_of_ten = u32::try_from(scale.unsigned_abs())
        .ok()
        .and_then(|e| 10i128.checked_pow(e));
    let mut inexact = dropped_nonzero;
    mantissa = mantissa.saturating_mul(1i128 << exp2);
    let value = if scale >= 0 {
        mantissa.saturating_mul(power_of_ten.unwrap_or(i128::MAX))
    } else {
        match power_of_ten {
            Some(divisor) => {
                inexact |= mantissa % divisor != 0;
                mantissa / divisor
            }
            None => {
                inexact |= mantissa != 0;
                0
            }
        }
    };
    // Value() rounds a fraction away from zero (inf.RoundUp).
    let magnitude = if inexact {
        value.saturating_add(1)
    } else {
        value
    };
    Ok(if negative { -magnitude } else { magnitude })
}

/// One annotation's rate in bits per second, validated as kubelet does.
fn annotation_rate(annotation: &str, value: &str) -> Result<u64, QuantityError> {
    let err_fields = || (annotation.to_string(), value.to_string());
    let rate = parse(value).map_err(|m| {
        let (annotation, value) = err_fields();
        match m {
            Malformed::Format => QuantityError::Format { annotation, value },
            Malformed::Suffix => QuantityError::Suffix { annotation, value },
        }
    })?;
    if rate < MIN_RATE {
        let (annotation, value) = err_fields();
        return Err(QuantityError::TooSmall { annotation, value });
    }
    if rate > MAX_RATE {
        let (annotation, value) = err_fields();
        return Err(QuantityError::TooLarge { annotation, value });
    }
    // Within 1k..=1P, so it fits.
    u64::try_from(rate).map_err(|_| {
        let (annotation, value) = err_fields();
        QuantityError::TooLarge { annotation, value }
    })
}

/// The `bandwidth` capability for a pod's annotations, or `None` when neither bandwidth
/// annotation is present (the runtime then sends no capability at all).
pub fn bandwidth_from_annotations<'a>(
    annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Option<BandwidthLimits>, QuantityError> {
    let mut limits = BandwidthLimits::default();
    let mut any = false;
    for (key, value) in annotations {
        match key {
            INGRESS_ANNOTATION => {
                limits.ingress_rate = annotation_rate(key, value)?;
                limits.ingress_burst = ANNOTATION_BURST;
                any = true;
            }
            EGRESS_ANNOTATION => {
                limits.egress_rate = annotation_rate(key, value)?;
                limits.egress_burst = ANNOTATION_BURST;
                any = true;
            }
            _ => {}
        }
    }
    Ok(any.then_some(limits))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;

    #[test]
    fn quantities_in_every_notation() {
        for (text, value) in [
            ("10M", 10_000_000),
            ("1G", 1_000_000_000),
            ("500k", 500_000),
            ("100Mi", 104_857_600),
            ("1Ki", 1024),
            ("1.5M", 1_500_000),
            ("0.5k", 500),
            (".5k", 500),
            ("5.", 5),
            ("+7", 7),
            ("1e3", 1000),
            ("1E6", 1_000_000),
            ("12", 12),
            ("1P", 1_000_000_000_000_000),
            ("0", 0),
        ] {
            assert_eq!(parse_quantity(text), Some(value), "{text}");
        }
    }

    #[test]
    fn fractions_round_up_like_value() {
        assert_eq!(parse_quantity("1.1"), Some(2));
        assert_eq!(parse_quantity("1500m"), Some(2));
        assert_eq!(
            parse_quantity("1.0000000000000000000000000000000001k"),
            Some(1001)
        );
        assert_eq!(parse_quantity("-1.5"), Some(-2));
    }

    #[test]
    fn extreme_exponents_saturate_instead_of_overflowing() {
        // Found by fuzzing: the exponent plus the digits' shift overflowed an i32.
        assert_eq!(parse_quantity("1.5e-2147483648"), Some(1));
        assert_eq!(
            parse_quantity("10000000000000000000000000000000000e2147483647"),
            Some(i128::MAX)
        );
        assert_eq!(parse_quantity("1e2147483647"), Some(i128::MAX));
        assert_eq!(parse_quantity("-1e2147483647"), Some(-i128::MAX));
        let one = |v: &'static str| bandwidth_from_annotations([(EGRESS_ANNOTATION, v)]);
        assert!(matches!(
            one("1.5e-2147483648"),
            Err(QuantityError::TooSmall { .. })
        ));
        assert!(matches!(
            one("10000000000000000000000000000000000e2147483647"),
            Err(QuantityError::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for text in [
            "", "M", "abc", "10 M", "10MB", "1.2.3", "10Q", "1e", "--1", "10mi",
        ] {
            assert_eq!(parse_quantity(text), None, "{text}");
        }
    }

    #[test]
    fn annotations_become_the_capability_with_the_runtime_burst() {
        let limits = bandwidth_from_annotations([
            (INGRESS_ANNOTATION, "10M"),
            (EGRESS_ANNOTATION, "1Mi"),
            ("other", "x"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            limits,
            BandwidthLimits {
                ingress_rate: 10_000_000,
                ingress_burst: 4_294_967_295,
                egress_rate: 1_048_576,
                egress_burst: 4_294_967_295,
            }
        );
        let only_egress = bandwidth_from_annotations([(EGRESS_ANNOTATION, "1G")])
            .unwrap()
            .unwrap();
        assert_eq!(
            (only_egress.ingress_rate, only_egress.ingress_burst),
            (0, 0)
        );
        assert_eq!(bandwidth_from_annotations([("a", "b")]).unwrap(), None);
    }

    #[test]
    fn annotations_out_of_kubelet_limits_are_refused() {
        let one = |v: &'static str| bandwidth_from_annotations([(INGRESS_ANNOTATION, v)]);
        assert!(matches!(one("999"), Err(QuantityError::TooSmall { .. })));
        assert!(matches!(one("-10M"), Err(QuantityError::TooSmall { .. })));
        assert!(matches!(one("2P"), Err(QuantityError::TooLarge { .. })));
        assert!(matches!(one("ten"), Err(QuantityError::Format { .. })));
        assert!(matches!(one("10Mb"), Err(QuantityError::Format { .. })));
        assert!(one("1k").is_ok() && one("1P").is_ok());
        let msg = one("999").unwrap_err().to_string();
        assert!(
            msg.contains(INGRESS_ANNOTATION) && msg.contains("unreasonably small"),
            "{msg}"
        );
    }
}
