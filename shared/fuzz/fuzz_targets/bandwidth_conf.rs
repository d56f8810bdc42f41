//! bandwidth's stdin: the four static keys or the `bandwidth` capability
//! (`bandwidth::config::limits`), and the TBF each shaped direction becomes.
//!
//! Properties: nothing panics; accepted limits are shaped only in pairs of rate and burst,
//! with a burst below 4 GB; the TBF arithmetic never panics for any accepted limit.

#![no_main]

use bandwidth::config::{limits, shapes, shapes_anything};
use bandwidth::shaping::tbf;
use libfuzzer_sys::fuzz_target;
use shared::gojson::Document;
use shared::spec::NetConf;

/// The kernel's usual ticks per microsecond, and two odd ones /proc/net/psched may report.
const TICKS: [f64; 3] = [15.625, 1.0, 1000.0];

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = Document::parse(data) else {
        return;
    };
    let (Ok((conf, _)), Ok(own)) = (NetConf::parse(&doc, false), doc.decode()) else {
        return;
    };
    let Ok(Some(limits)) = limits(&own, conf.runtime_config.bandwidth.as_ref()) else {
        return;
    };
    let _ = shapes_anything(&limits);
    for (rate, burst) in [
        (limits.ingress_rate, limits.ingress_burst),
        (limits.egress_rate, limits.egress_burst),
    ] {
        assert_eq!(rate == 0, burst == 0, "rate and burst come in pairs");
        assert!(burst / 8 < u64::from(u32::MAX), "burst over 4 GB accepted");
        if shapes(rate, burst) {
            for tick in TICKS {
                let _ = tbf(rate, burst, tick);
            }
        }
    }
    let _ = bandwidth::ifb_name(&conf.name, "fuzz-container");
});
