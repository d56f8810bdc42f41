//! The network configuration every plugin reads on stdin (`shared::spec::config`): NetConf,
//! its runtimeConfig capabilities and its prevResult.
//!
//! Properties: parsing never panics; version negotiation and prevResult decoding in every
//! version never panic; a parsed config printed back re-parses to the same config.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::spec::{NetConf, Version};

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = NetConf::parse(data) else {
        return;
    };
    let _ = conf.negotiate_version(&Version::ALL);
    for version in Version::ALL {
        if let Ok(Some(prev)) = conf.prev_result(version) {
            for to in Version::ALL {
                let _ = prev.to_value(to);
            }
        }
    }
    let _ = conf.cni_arg("ips");

    let printed = serde_json::to_vec(&conf).expect("a parsed config serialises");
    let again = NetConf::parse(&printed).unwrap_or_else(|e| {
        panic!(
            "printed config does not re-parse: {e}\n{}",
            String::from_utf8_lossy(&printed)
        )
    });
    assert_eq!(
        serde_json::to_value(&conf).expect("serialises"),
        serde_json::to_value(&again).expect("serialises"),
        "config changed across print and re-parse"
    );
});
