//! What `encoding/json` does, case by case; each case was checked against Go's decoder.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;

#[derive(Debug, Default, Deserialize, PartialEq)]
struct Mapping {
    #[serde(rename = "hostPort", default)]
    host_port: i64,
    #[serde(rename = "containerPort", default)]
    container_port: i64,
    #[serde(default)]
    protocol: String,
    #[serde(rename = "hostIP", default)]
    host_ip: String,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct Runtime {
    #[serde(rename = "portMappings", default)]
    port_mappings: Vec<Mapping>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct Conf {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Runtime,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    args: Option<serde_json::Value>,
}

fn conf(text: &str) -> Result<Conf, DecodeError> {
    from_slice(text.as_bytes())
}

#[test]
fn containerd_cri_port_mappings_decode() {
    // The bytes containerd 1.6's CRI plugin sends: its Go structs have no json tags.
    let c = conf(
        r#"{"name":"k8s-pod-network","runtimeConfig":{"portMappings":[
            {"HostPort":30081,"ContainerPort":80,"Protocol":"tcp","HostIP":""}]}}"#,
    )
    .expect("decodes");
    assert_eq!(
        c.runtime_config.port_mappings,
        vec![Mapping {
            host_port: 30081,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }]
    );
}

#[test]
fn keys_match_fields_under_case_folding() {
    let c = conf(r#"{"NAME":"n","Mtu":1400,"sNaT":true}"#).expect("decodes");
    assert_eq!((c.name.as_str(), c.mtu, c.snat), ("n", 1400, Some(true)));
    // The Kelvin sign folds to k and the long s to s, as in Go's EqualFold.
    assert!(key_matches_for_test("hostPort", "HOſTPORT"));
    assert!(key_matches_for_test("kind", "\u{212A}ind"));
    assert!(!key_matches_for_test("name", "nam"));
    assert!(!key_matches_for_test("name", "names"));
    assert!(key_matches_for_test("a_b", "A_B"));
    assert!(!key_matches_for_test("a_b", "A-B"));
}

fn key_matches_for_test(field: &str, key: &str) -> bool {
    value::key_matches(field, key)
}

#[test]
fn the_last_duplicate_wins_whatever_its_spelling() {
    let c = conf(r#"{"mtu":1,"MTU":2,"name":"a","name":"b"}"#).expect("decodes");
    assert_eq!((c.mtu, c.name.as_str()), (2, "b"));
    let c = conf(r#"{"MTU":2,"mtu":1}"#).expect("decodes");
    assert_eq!(c.mtu, 1);
    // An exact duplicate around a folded one: document order decides.
    let c = conf(r#"{"mtu":1,"Mtu":3,"mtu":2}"#).expect("decodes");
    assert_eq!(c.mtu, 2);
}

#[test]
fn an_exact_match_is_preferred_over_a_folded_one() {
    #[derive(Deserialize, Default)]
    struct Two {
        #[serde(rename = "Key", default)]
        upper: u8,
        #[serde(rename = "key", default)]
        lower: u8,
    }
    let t: Two = from_slice(br#"{"key":1,"Key":2}"#).expect("decodes");
    assert_eq!((t.upper, t.lower), (2, 1));
    // Neither spelled exactly: the first field (in declaration order) takes it.
    let t: Two = from_slice(br#"{"KEY":3}"#).expect("decodes");
    assert_eq!((t.upper, t.lower), (3, 0));
}

#[test]
fn null_leaves_a_fields_default() {
    let c = conf(r#"{"name":null,"mtu":null,"snat":null,"runtimeConfig":null,"labels":null}"#)
        .expect("decodes");
    assert_eq!(c, Conf::default());
    // null after a value leaves the value, as Go leaves a plain field untouched.
    let c = conf(r#"{"mtu":9000,"mtu":null}"#).expect("decodes");
    assert_eq!(c.mtu, 9000);
    // A null list element is the element's zero value.
    let c = conf(r#"{"runtimeConfig":{"portMappings":[null,{"hostPort":1}]}}"#).expect("ok");
    assert_eq!(c.runtime_config.port_mappings[0], Mapping::default());
    assert_eq!(c.runtime_config.port_mappings[1].host_port, 1);
    // A null document is an empty one.
    assert_eq!(conf("null").expect("decodes"), Conf::default());
}

#[test]
fn unknown_keys_are_ignored_and_kept_in_the_document() {
    let doc = Document::parse(br#"{"name":"n","cni.dev/x":{"a":1},"future":[1]}"#).expect("ok");
    let c: Conf = doc.decode().expect("decodes");
    assert_eq!(c.name, "n");
    assert_eq!(doc.to_json()["cni.dev/x"]["a"], 1);
    assert_eq!(doc.to_json()["future"][0], 1);
}

#[test]
fn map_keys_stay_exact() {
    let c = conf(r#"{"labels":{"App":"x","app":"y"},"args":{"CNI":{"ips":[]}}}"#).expect("ok");
    assert_eq!(c.labels.len(), 2);
    assert_eq!(c.labels["App"], "x");
    let args = c.args.expect("args");
    assert!(args.get("CNI").is_some() && args.get("cni").is_none());
}

#[test]
fn numbers_follow_gos_rules() {
    for bad in ["1500.0", "1e3", "-1", "4294967296", "\"1500\"", "true"] {
        let err = conf(&format!(r#"{{"mtu":{bad}}}"#)).expect_err(bad);
        assert_eq!(err.path_string(), "mtu", "{bad}: {err}");
    }
    #[derive(Deserialize)]
    struct Float {
        f: f64,
    }
    let f: Float = from_slice(br#"{"f":3}"#).expect("an integer into a float");
    assert_eq!(f.f, 3.0);
}

#[test]
fn errors_name_the_path_of_the_field() {
    let err = conf(r#"{"runtimeConfig":{"PortMappings":[{"hostPort":1},{"HostPort":"x"}]}}"#)
        .expect_err("a string port");
    assert_eq!(err.path_string(), "runtimeConfig.portMappings[1].hostPort");
    assert!(err.message().contains("invalid type"), "{err}");
    assert!(err
        .to_string()
        .starts_with("runtimeConfig.portMappings[1].hostPort: "));
}

#[test]
fn text_is_repaired_as_go_repairs_it() {
    let c: Conf = from_slice(b"{\"name\":\"a\xffb\"}").expect("invalid UTF-8 is replaced");
    assert_eq!(c.name, "a\u{fffd}b");
    let c = conf(r#"{"name":"x\ud800y"}"#).expect("a lone surrogate is replaced");
    assert_eq!(c.name, "x\u{fffd}y");
    let err = Document::parse(b"{\"name\":").expect_err("truncated");
    assert!(err.is_syntax());
}

#[test]
fn field_lookup_reads_like_a_struct_field() {
    let doc = Document::parse(br#"{"IngressRate":1,"ingressrate":null,"x":2}"#).expect("ok");
    assert_eq!(doc.root().field("ingressRate"), Some(&Value::Null));
    assert!(doc.root().has_field("INGRESSRATE"));
    assert!(!doc.root().has_field("egressRate"));
}

#[test]
fn lenient_decoding_leaves_out_what_it_cannot_read() {
    let doc = Document::parse(
        br#"{"name":"n","mtu":"big","runtimeConfig":{"portMappings":[{"hostPort":1},{"HostPort":"x"}]}}"#,
    )
    .expect("ok");
    assert!(doc.decode::<Conf>().is_err());
    let (c, dropped): (Conf, _) = doc.decode_lenient().expect("the rest decodes");
    assert_eq!(c.name, "n");
    assert_eq!(c.mtu, 0);
    // The unreadable field goes, not the mapping: it keeps its other fields.
    assert_eq!(c.runtime_config.port_mappings.len(), 2);
    assert_eq!(c.runtime_config.port_mappings[1].host_port, 0);
    let paths: Vec<String> = dropped.iter().map(DecodeError::path_string).collect();
    assert_eq!(paths, ["mtu", "runtimeConfig.portMappings[1].hostPort"]);
    // Not an object at all: nothing to work from.
    let doc = Document::parse(b"[1]").expect("ok");
    assert!(doc.decode_lenient::<Conf>().is_err());
}

#[test]
fn enums_and_values_decode() {
    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Proto {
        Tcp,
        Udp,
    }
    #[derive(Deserialize)]
    struct P {
        p: Proto,
        v: serde_json::Value,
    }
    let p: P = from_slice(br#"{"P":"udp","V":{"a":[1,"x",null,true,1.5]}}"#).expect("ok");
    assert_eq!(p.p, Proto::Udp);
    assert_eq!(p.v, serde_json::json!({"a":[1,"x",null,true,1.5]}));
    assert!(
        from_slice::<P>(br#"{"p":"TCP","v":1}"#).is_err(),
        "variants are exact"
    );
    let _ = Proto::Tcp;
}

#[test]
fn big_numbers_pass_through_unchanged() {
    let text = br#"{"x":18446744073709551615,"y":-9223372036854775808,"z":0.1}"#;
    let doc = Document::parse(text).expect("ok");
    assert_eq!(
        doc.to_json().to_string(),
        r#"{"x":18446744073709551615,"y":-9223372036854775808,"z":0.1}"#
    );
}

#[test]
fn a_struct_refuses_a_list() {
    // serde's derive reads a struct from a list, field by field; Go refuses the list.
    let err = conf(r#"{"runtimeConfig": {"portMappings": [[8080, 80, "tcp", ""]]}}"#)
        .expect_err("a list is no object");
    assert_eq!(err.path_string(), "runtimeConfig.portMappings[0]");
    assert!(conf(r#"["n", 1500]"#).is_err());
}
