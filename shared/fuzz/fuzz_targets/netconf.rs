//! The network configuration every plugin reads on stdin (`shared::spec::config`): NetConf,
//! its runtimeConfig capabilities and its prevResult, decoded by Go's rules
//! (`shared::gojson`).
//!
//! Properties: parsing never panics; DEL's lenient parse accepts everything the strict one
//! does, with the same result, and anything whose name is readable; version negotiation
//! and prevResult decoding in every version never panic; the document printed back
//! re-parses to the same tree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::gojson::Document;
use shared::spec::{NetConf, Version};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = Document::parse(data) else {
        return;
    };
    let strict = NetConf::parse(&doc, false);
    let lenient = NetConf::parse(&doc, true);
    if let Ok((conf, _)) = &strict {
        let (again, dropped) = lenient.as_ref().expect("lenient accepts what strict does");
        assert!(dropped.is_empty(), "nothing dropped from a valid config");
        assert_eq!(format!("{conf:?}"), format!("{again:?}"));
    }
    let printed = serde_json::to_vec(&doc.to_json()).expect("a document serialises");
    let reparsed = Document::parse(&printed).expect("printed document re-parses");
    assert_eq!(
        reparsed.to_json(),
        doc.to_json(),
        "document changed across print"
    );

    let Ok((conf, _)) = lenient else {
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
});
