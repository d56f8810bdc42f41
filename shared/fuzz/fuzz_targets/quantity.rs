//! Kubernetes quantities and the pod bandwidth annotations (`shared::spec::quantity`), as
//! cnitool turns `--annotation` options into the `bandwidth` capability.
//!
//! Properties: nothing panics; an accepted text has the characters apimachinery's regular
//! expression allows; a plain integer is its own value; a sign negates; an accepted
//! annotation rate is within 1k..=1P with the runtimes' burst.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Map;
use shared::spec::quantity::{
    bandwidth_from_annotations, parse_quantity, ANNOTATION_BURST, EGRESS_ANNOTATION,
    INGRESS_ANNOTATION,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let value = parse_quantity(text);
    if value.is_some() {
        assert!(
            text.chars()
                .all(|c| c.is_ascii_digit() || ".+-eEinumkKMGTP".contains(c)),
            "{text:?} accepted"
        );
    }
    if !text.is_empty() && text.len() <= 30 && text.bytes().all(|b| b.is_ascii_digit()) {
        assert_eq!(value, text.parse::<i128>().ok(), "{text:?}");
    }
    if !text.starts_with(['+', '-']) {
        assert_eq!(
            parse_quantity(&format!("-{text}")),
            value.map(|v| -v),
            "-{text:?}"
        );
        assert_eq!(parse_quantity(&format!("+{text}")), value, "+{text:?}");
    }

    // Both annotations, as a pod would carry them: one per line of the input, or both the same.
    let (ingress, egress) = text.split_once('\n').unwrap_or((text, text));
    match bandwidth_from_annotations([(INGRESS_ANNOTATION, ingress), (EGRESS_ANNOTATION, egress)]) {
        Ok(Some(limits)) => {
            for (rate, burst) in [
                (limits.ingress_rate, limits.ingress_burst),
                (limits.egress_rate, limits.egress_burst),
            ] {
                assert!(
                    (1_000..=1_000_000_000_000_000).contains(&rate),
                    "rate {rate}"
                );
                assert_eq!(burst, ANNOTATION_BURST);
            }
        }
        Ok(None) => panic!("both annotations present, no capability"),
        Err(_) => {}
    }
    let annotations = vec![(INGRESS_ANNOTATION.to_string(), ingress.to_string())];
    let mut caps = Map::new();
    let _ = cni_tests::cnitool::apply_annotations(&annotations, &mut caps);
});
