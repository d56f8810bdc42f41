//! Test support for the suite's config types: documents with their keys respelled the ways
//! Go's decoder accepts, for the property that a respelled document decodes to the same
//! value (each config type's tests run it with proptest).

use serde_json::{Map, Value};

/// A small deterministic generator: the respelling is a function of the seed alone, so a
/// failing case replays from the seed proptest prints.
struct Bits(u64);

impl Bits {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `value` with every object key respelled (ASCII letters in either case; `k` and `s` now
/// and then as KELVIN SIGN and LATIN SMALL LETTER LONG S, which fold to them in Go), except
/// the keys of objects found under a key named in `maps` (maps keep their keys exactly, in
/// Go as here), and everything under a key named in `opaque` (values kept as written).
pub fn respell(value: &Value, seed: u64, maps: &[&str], opaque: &[&str]) -> Value {
    let mut bits = Bits(seed | 1);
    walk(value, &mut bits, maps, opaque, false)
}

fn walk(value: &Value, bits: &mut Bits, maps: &[&str], opaque: &[&str], exact: bool) -> Value {
    match value {
        Value::Object(object) => {
            let mut out = Map::new();
            for (key, v) in object {
                let child = if opaque.contains(&key.as_str()) {
                    v.clone()
                } else {
                    walk(v, bits, maps, opaque, maps.contains(&key.as_str()))
                };
                let name = if exact {
                    key.clone()
                } else {
                    respell_key(key, bits)
                };
                out.insert(name, child);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| walk(v, bits, maps, opaque, false))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn respell_key(key: &str, bits: &mut Bits) -> String {
    key.chars()
        .map(|c| {
            let roll = bits.next();
            match c.to_ascii_lowercase() {
                'k' if roll % 8 == 0 => '\u{212A}',
                's' if roll % 8 == 0 => '\u{17F}',
                _ if roll & 2 == 0 => c.to_ascii_uppercase(),
                _ => c.to_ascii_lowercase(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn respells_keys_but_not_map_keys_or_opaque_values() {
        let doc = json!({"hostPort": 1, "capabilities": {"portMappings": true},
                         "prevResult": {"ips": []}, "list": [{"containerPort": 2}]});
        let mut changed = false;
        for seed in 0..64 {
            let out = respell(&doc, seed, &["capabilities"], &["prevResult"]);
            let object = out.as_object().expect("object");
            let key = |want: &str| {
                object
                    .keys()
                    .find(|k| crate::gojson::value::key_matches(want, k))
                    .cloned()
                    .expect("a respelled key")
            };
            changed |= key("hostPort") != "hostPort";
            assert_eq!(out[key("capabilities")], json!({"portMappings": true}));
            assert_eq!(out[key("prevResult")], json!({"ips": []}));
            assert_eq!(out[key("list")].as_array().map(Vec::len), Some(1));
        }
        assert!(changed, "no seed changed a key");
    }
}
