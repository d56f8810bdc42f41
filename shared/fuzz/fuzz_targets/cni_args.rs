//! CNI_ARGS (`shared::spec::args`), cnitool's stricter reading of it, and the rest of the
//! CNI_* environment (`Environment::from_lookup`).
//!
//! Input: NUL-separated values of CNI_ARGS, CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
//! CNI_IFNAME and CNI_PATH, in that order (missing ones unset).
//!
//! Properties: nothing panics; the parsed pairs joined back are the input; a repeated key
//! reads as its last value; what cnitool accepts, the plugins accept identically.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::spec::args::CniArgs;
use shared::spec::env::Environment;

const VARS: [&str; 6] = [
    "CNI_ARGS",
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_PATH",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values: Vec<&str> = text.split('\0').collect();
    let raw = values[0];

    if let Ok(args) = CniArgs::parse(raw) {
        let joined: Vec<String> = args
            .pairs()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(joined.join(";"), raw, "pairs do not join back to the input");
        for (k, _) in args.pairs() {
            let last = args
                .pairs()
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str());
            assert_eq!(args.get(k), last);
        }
        let _ = args.ignore_unknown();
        let _ = args.check_known(&["IP", "K8S_POD_NAME"]);
    }
    if let Ok(pairs) = cni_tests::cnitool::parse_cni_args(raw) {
        let args = CniArgs::parse(raw).expect("what cnitool accepts, plugins accept");
        assert_eq!(args.pairs(), pairs.as_slice());
    }

    let lookup = |key: &str| {
        VARS.iter()
            .position(|v| *v == key)
            .and_then(|i| values.get(i))
            .map(|v| v.to_string())
    };
    if let Ok(env) = Environment::from_lookup(lookup) {
        let _ = env.validate();
        assert_eq!(env.args_raw, raw);
    }
});
