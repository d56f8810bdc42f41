//! Results (`shared::spec::result`): a delegated IPAM plugin's stdout or a prevResult, of any
//! version, and its conversion to every other version; also the error object a failing
//! plugin prints instead.
//!
//! Properties: parsing in any assumed version never panics; conversion to every version
//! never panics and re-parses; 1.1.0 output re-parses to the very same result, older
//! versions to the result without the 1.1.0-only fields; converting through a version and
//! on to another gives what converting directly gives, unless the first version dropped
//! fields the second has; printed (pretty) output parses as the value it prints.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::spec::error::CniError;
use shared::spec::{CniResult, Version};

fuzz_target!(|data: &[u8]| {
    if let Some(err) = CniError::from_json(data) {
        for version in [None, Some(Version::V0_3_1), Some(Version::LATEST)] {
            let printed = err.to_json(version);
            let again = CniError::from_json(printed.as_bytes()).expect("our error object parses");
            assert_eq!(again.msg, err.msg);
            assert_eq!(again.details, err.details);
            assert_eq!(again.code.as_u32(), err.code.as_u32());
        }
    }

    for assumed in Version::ALL {
        let Ok(result) = CniResult::from_slice(data, assumed) else {
            continue;
        };
        // The model as 1.1.0 holds it, and as every older version sees it.
        let latest = CniResult::from_value(&result.to_value(Version::LATEST), Version::LATEST)
            .expect("1.1.0 output re-parses");
        assert_eq!(latest, result, "1.1.0 output re-parses to another result");
        for via in Version::ALL {
            let value = result.to_value(via);
            let seen = CniResult::from_value(&value, via)
                .unwrap_or_else(|e| panic!("{via} output does not re-parse: {e}\n{value}"));
            assert_eq!(
                seen.to_value(via),
                value,
                "{via} output is not a fixed point"
            );
            if via == Version::LATEST {
                assert_eq!(seen, result);
            }
            let pretty = result.to_pretty_json(via);
            let parsed: serde_json::Value =
                serde_json::from_str(&pretty).expect("pretty output is JSON");
            assert_eq!(parsed, value, "pretty output differs from the value");
            // Read as any version (as a runtime may label it), the fields of the labelled
            // version survive.
            for to in Version::ALL {
                let direct = result.to_value(to);
                let through = seen.to_value(to);
                if via == Version::LATEST || to < Version::LATEST {
                    assert_eq!(through, direct, "{via} then {to} differs from {to}");
                }
            }
        }
    }
});
