//! Which limits apply, and whether they are acceptable.
//!
//! The four keys may sit in the plugin config itself or come from the runtime as the
//! `bandwidth` capability. As in the reference, the presence of any one key in the config
//! (even `0`) makes the config win and the capability is ignored entirely.

use shared::gojson::{Decode, DecodeError, Document};
use shared::spec::config::BandwidthLimits;

use crate::error::BandwidthError;

const KEYS: [&str; 4] = ["ingressRate", "ingressBurst", "egressRate", "egressBurst"];

/// bandwidth's own keys: the four limits at the top of the config (the reference embeds
/// its `BandwidthEntry` in the config struct, so the keys are matched as Go matches them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BandwidthConf {
    /// `Some` as soon as any of the four keys is written, even as `0` or `null`: the
    /// reference then allocates its entry, and the capability is ignored.
    pub static_limits: Option<BandwidthLimits>,
}

impl Decode for BandwidthConf {
    fn decode(doc: &Document) -> Result<BandwidthConf, DecodeError> {
        if !KEYS.iter().any(|k| doc.root().has_field(k)) {
            return Ok(BandwidthConf::default());
        }
        Ok(BandwidthConf {
            static_limits: Some(doc.decode()?),
        })
    }
}

/// The limits of one invocation, validated; `None` when nothing is configured at all.
pub fn limits(
    conf: &BandwidthConf,
    runtime: Option<&BandwidthLimits>,
) -> Result<Option<BandwidthLimits>, BandwidthError> {
    let chosen = conf.static_limits.as_ref().or(runtime).cloned();
    if let Some(limits) = &chosen {
        validate(limits.ingress_rate, limits.ingress_burst)?;
        validate(limits.egress_rate, limits.egress_burst)?;
    }
    Ok(chosen)
}

/// Whether anything is to be shaped at all.
pub fn shapes_anything(limits: &BandwidthLimits) -> bool {
    shapes(limits.ingress_rate, limits.ingress_burst)
        || shapes(limits.egress_rate, limits.egress_burst)
}

/// A direction is shaped when both its rate and its burst are set.
pub fn shapes(rate: u64, burst: u64) -> bool {
    rate > 0 && burst > 0
}

/// The reference's `validateRateAndBurst`, with its messages.
fn validate(rate: u64, burst: u64) -> Result<(), BandwidthError> {
    let problem = if burst == 0 && rate != 0 {
        "if rate is set, burst must also be set"
    } else if rate == 0 && burst != 0 {
        "if burst is set, rate must also be set"
    } else if burst / 8 >= u64::from(u32::MAX) {
        // The kernel's TBF counts the bucket in 32 bits of bytes.
        "burst cannot be more than 4GB"
    } else {
        return Ok(());
    };
    Err(BandwidthError::Config(problem.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test should stop at the first surprise
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn conf(v: Value) -> Result<BandwidthConf, DecodeError> {
        Document::parse(v.to_string().as_bytes()).unwrap().decode()
    }

    fn keys(v: Value) -> BandwidthConf {
        conf(v).unwrap()
    }

    fn runtime() -> BandwidthLimits {
        BandwidthLimits {
            ingress_rate: 1000,
            ingress_burst: 2000,
            egress_rate: 0,
            egress_burst: 0,
        }
    }

    #[test]
    fn containerds_recorded_input_is_shaped() {
        // The bytes containerd's CRI sent for kubernetes.io/ingress-bandwidth: 10M and
        // egress-bandwidth: 20M (tests/tests/runtime_cri.rs records them).
        for stdin in [
            &include_bytes!("../../../shared/tests/fixtures/containerd-cri/kubernetes-datastore/bandwidth-add.json")[..],
            &include_bytes!("../../../shared/tests/fixtures/containerd-cri/local-datastore/bandwidth-del.json")[..],
        ] {
            let doc = Document::parse(stdin).unwrap();
            let (conf, _) = shared::spec::NetConf::parse(&doc, false).unwrap();
            let own: BandwidthConf = doc.decode().unwrap();
            let got = limits(&own, conf.runtime_config.bandwidth.as_ref())
                .unwrap()
                .unwrap();
            assert_eq!((got.ingress_rate, got.egress_rate), (10_000_000, 20_000_000));
            assert_eq!((got.ingress_burst, got.egress_burst), (4294967295, 4294967295));
            assert!(shapes_anything(&got));
        }
    }

    #[test]
    fn static_config_wins_even_when_zero_or_null() {
        let got = limits(&keys(json!({"ingressRate": 0})), Some(&runtime())).unwrap();
        assert_eq!(got, Some(BandwidthLimits::default()));
        let got = limits(&keys(json!({"EgressBurst": null})), Some(&runtime())).unwrap();
        assert_eq!(got, Some(BandwidthLimits::default()));
        let got = limits(&keys(json!({"x": 1})), Some(&runtime())).unwrap();
        assert_eq!(got, Some(runtime()));
        assert_eq!(limits(&keys(json!({})), None).unwrap(), None);
    }

    #[test]
    fn static_keys_are_matched_as_go_matches_them() {
        let c = keys(json!({"IngressRate": 8, "INGRESSBURST": 16, "egressrate": 1}));
        assert_eq!(
            c.static_limits,
            Some(BandwidthLimits {
                ingress_rate: 8,
                ingress_burst: 16,
                egress_rate: 1,
                egress_burst: 0
            })
        );
    }

    #[test]
    fn rate_and_burst_go_together_and_burst_has_a_ceiling() {
        let msg = |v: Value| limits(&keys(v), None).unwrap_err().to_string();
        assert_eq!(
            msg(json!({"ingressRate": 0, "ingressBurst": 123})),
            "if burst is set, rate must also be set"
        );
        assert_eq!(
            msg(json!({"egressRate": 5})),
            "if rate is set, burst must also be set"
        );
        let four_gib_bits = 4u64 * 1024 * 1024 * 1024 * 8;
        assert_eq!(
            msg(json!({"egressRate": 5, "egressBurst": four_gib_bits})),
            "burst cannot be more than 4GB"
        );
        assert!(limits(
            &keys(json!({"egressRate": 5, "egressBurst": four_gib_bits - 16})),
            None
        )
        .is_ok());
    }

    #[test]
    fn negative_or_fractional_values_are_refused_with_their_key() {
        for bad in [json!(-1), json!(1.5), json!("10M")] {
            let err = conf(json!({"ingressRate": bad})).unwrap_err();
            assert_eq!(err.path_string(), "ingressRate", "{err}");
        }
    }

    #[test]
    fn only_complete_directions_shape() {
        assert!(!shapes_anything(&BandwidthLimits::default()));
        assert!(shapes_anything(&runtime()));
        assert!(!shapes(0, 0));
    }
}
