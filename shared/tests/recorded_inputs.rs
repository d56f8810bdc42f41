//! Every plugin input a real runtime sent (containerd's CRI plugin, podman), recorded by
//! the runtime tests into `tests/fixtures/`: each decodes strictly, by Go's rules, with
//! nothing dropped, and its prevResult, when there is one, in its own version. VERSION's
//! input carries only the version.

use std::fs;
use std::path::Path;

use shared::gojson::Document;
use shared::spec::{NetConf, Version};

#[test]
fn every_recorded_input_decodes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for runtime in fs::read_dir(&root).expect("fixtures") {
        let runtime = runtime.expect("entry").path();
        let mut dirs = vec![runtime.clone()];
        dirs.extend(
            fs::read_dir(&runtime)
                .expect("dir")
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
        for dir in dirs {
            for file in fs::read_dir(&dir).expect("dir").flatten() {
                let path = file.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let bytes = fs::read(&path).expect("fixture");
                let doc = Document::parse(&bytes).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                // VERSION's stdin carries only cniVersion.
                if path.to_string_lossy().ends_with("-version.json") {
                    assert!(doc.root().has_field("cniVersion"), "{path:?}");
                    continue;
                }
                let (conf, dropped) =
                    NetConf::parse(&doc, false).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                assert!(dropped.is_empty(), "{path:?}");
                let version = conf
                    .negotiate_version(&Version::ALL)
                    .unwrap_or_else(|e| panic!("{path:?}: {e}"));
                if conf.prev_result.is_some() {
                    let prev = conf
                        .prev_result(version)
                        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
                    assert!(prev.is_some_and(|p| !p.ips.is_empty()), "{path:?}");
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 20, "only {seen} fixtures under {root:?}");
}
