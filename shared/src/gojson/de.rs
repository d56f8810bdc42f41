//! The serde `Deserializer` over a [`Value`] that applies `encoding/json`'s rules: struct
//! fields matched exactly then by case folding, the last duplicate winning, `null` leaving a
//! field's default. Every error carries the path of the value that failed.

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::error::{DecodeError, Segment};
use super::value::{key_matches, Value};

type Result<T> = std::result::Result<T, DecodeError>;

pub struct Deserializer<'a> {
    value: &'a Value,
}

impl<'a> Deserializer<'a> {
    pub fn new(value: &'a Value) -> Deserializer<'a> {
        Deserializer { value }
    }
}

/// Primitives read `null` as their zero value, as Go stores zero values for `null` elements
/// of lists and maps (struct fields never see `null`: it is dropped before, see
/// [`struct_entries`]).
macro_rules! zero_on_null {
    ($($method:ident => $visit:ident($zero:expr)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
                if self.value.is_null() {
                    visitor.$visit($zero)
                } else {
                    self.deserialize_any(visitor)
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Deserializer<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    // serde_json only holds finite floats.
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Seq::new(items)),
            Value::Object(entries) => visitor.visit_map(Map::new(all_entries(entries))),
        }
    }

    zero_on_null! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0),
        deserialize_i16 => visit_i64(0),
        deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0),
        deserialize_i128 => visit_i64(0),
        deserialize_u8 => visit_u64(0),
        deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0),
        deserialize_u64 => visit_u64(0),
        deserialize_u128 => visit_u64(0),
        deserialize_f32 => visit_f64(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_str => visit_borrowed_str(""),
        deserialize_string => visit_borrowed_str(""),
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            // Go leaves a nil slice: an empty list.
            Value::Null => visitor.visit_seq(Seq::new(&[])),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Null => visitor.visit_map(Map::new(Vec::new())),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            Value::Object(entries) => visitor.visit_map(Map::new(struct_entries(entries, fields))),
            Value::Null => visitor.visit_map(Map::new(Vec::new())),
            // serde would read a struct from a list, field by field; Go refuses.
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            Value::String(s) => {
                let variant: BorrowedStrDeserializer<'de, DecodeError> =
                    BorrowedStrDeserializer::new(s);
                visitor.visit_enum(variant)
            }
            Value::Object(entries) if entries.len() == 1 => {
                let (variant, value) = &entries[0];
                visitor.visit_enum(Enum { variant, value })
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => de::Unexpected::Unsigned(u),
            (_, Some(i)) => de::Unexpected::Signed(i),
            _ => de::Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

/// A map's entries: exact keys, all of them (for `HashMap`, `serde_json::Value`; Go's maps
/// keep exact keys too, and a later duplicate replaces an earlier one when inserted).
fn all_entries(entries: &[(String, Value)]) -> Vec<(&str, &Value)> {
    entries.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

/// A struct's entries: each key renamed to the field it names (exactly, else by case
/// folding), one entry per field holding the last value written for it, `null`s dropped so
/// the field keeps its default. Keys naming no field pass through (and are ignored).
fn struct_entries<'a>(
    entries: &'a [(String, Value)],
    fields: &'static [&'static str],
) -> Vec<(&'a str, &'a Value)> {
    let mut out: Vec<(&'a str, &'a Value)> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        if value.is_null() {
            continue;
        }
        let name: &'a str = fields
            .iter()
            .find(|f| **f == key.as_str())
            .or_else(|| fields.iter().find(|f| key_matches(f, key)))
            .copied()
            .unwrap_or(key.as_str());
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => out.push((name, value)),
        }
    }
    out
}

struct Map<'a> {
    entries: std::vec::IntoIter<(&'a str, &'a Value)>,
    /// The entry whose key was just handed out.
    current: Option<(&'a str, &'a Value)>,
}

impl<'a> Map<'a> {
    fn new(entries: Vec<(&'a str, &'a Value)>) -> Map<'a> {
        Map {
            entries: entries.into_iter(),
            current: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for Map<'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some((key, value));
        let key_de: BorrowedStrDeserializer<'de, DecodeError> = BorrowedStrDeserializer::new(key);
        seed.deserialize(key_de)
            .map(Some)
            .map_err(|e| e.within(Segment::Field(key.to_owned())))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value> {
        let Some((key, value)) = self.current.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        seed.deserialize(Deserializer::new(value))
            .map_err(|e| e.within(Segment::Field(key.to_owned())))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Seq<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
}

impl<'a> Seq<'a> {
    fn new(items: &'a [Value]) -> Seq<'a> {
        Seq {
            items: items.iter().enumerate(),
        }
    }
}

impl<'de> de::SeqAccess<'de> for Seq<'de> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let Some((index, item)) = self.items.next() else {
            return Ok(None);
        };
        seed.deserialize(Deserializer::new(item))
            .map(Some)
            .map_err(|e| e.within(Segment::Index(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// `{"Variant": value}`, serde's externally tagged enums.
struct Enum<'a> {
    variant: &'a str,
    value: &'a Value,
}

impl<'de> de::EnumAccess<'de> for Enum<'de> {
    type Error = DecodeError;
    type Variant = Variant<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Variant<'de>)> {
        let name: BorrowedStrDeserializer<'de, DecodeError> =
            BorrowedStrDeserializer::new(self.variant);
        let tag = seed.deserialize(name)?;
        Ok((
            tag,
            Variant {
                name: self.variant,
                value: self.value,
            },
        ))
    }
}

struct Variant<'a> {
    name: &'a str,
    value: &'a Value,
}

impl<'de> de::VariantAccess<'de> for Variant<'de> {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<()> {
        match self.value {
            Value::Null => Ok(()),
            other => Err(de::Error::custom(format!(
                "variant {} takes no value, got {}",
                self.name,
                other.kind()
            ))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(Deserializer::new(self.value))
            .map_err(|e| e.within(Segment::Field(self.name.to_owned())))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_seq(Deserializer::new(self.value), visitor)
            .map_err(|e| e.within(Segment::Field(self.name.to_owned())))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_struct(Deserializer::new(self.value), "", fields, visitor)
            .map_err(|e| e.within(Segment::Field(self.name.to_owned())))
    }
}

// `IntoDeserializer` lets serde's own value deserializers carry our error type.
impl<'de> IntoDeserializer<'de, DecodeError> for Deserializer<'de> {
    type Deserializer = Deserializer<'de>;

    fn into_deserializer(self) -> Deserializer<'de> {
        self
    }
}
