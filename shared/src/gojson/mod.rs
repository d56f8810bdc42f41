//! JSON decoded the way Go's `encoding/json` decodes it.
//!
//! Every byte a plugin reads was written by a Go program: the kubelet and containerd, CRI-O,
//! podman, Multus, cnitool, and the Go plugin before us in the chain (`prevResult`). Their
//! structs often marshal without json tags (containerd's CRI sends `"HostPort"`,
//! `"IngressRate"`), and the Go plugins read such keys because `encoding/json` matches keys
//! to fields leniently. serde is strict, so every input of the suite is decoded here instead,
//! by one mechanism for every type:
//!
//! - **Keys**: a key names the struct field spelled exactly like it, else the field equal to
//!   it under Unicode case folding (`HostPort`, `HOSTPORT`, even `hoſtPort` with a long s).
//!   Map keys (`HashMap`, `serde_json::Value`) stay exact, as in Go.
//! - **Duplicates**: the last occurrence of a field wins, whatever the spelling.
//! - **`null`** into a struct field leaves the field's default; into an `Option`, `None`;
//!   inside a list or map it is the element type's zero value, as Go's zero value.
//! - **Unknown keys** are ignored (and stay in the [`Document`] for whoever passes the
//!   config on).
//! - **Text**: invalid UTF-8 and lone UTF-16 surrogates in strings become U+FFFD, where
//!   serde_json would refuse the whole document.
//! - **Numbers** keep serde's rules, which are Go's: an integer field refuses `1500.0`,
//!   `1e3` and out-of-range values; a float field takes integers.
//!
//! Types decoded here must not use `#[serde(flatten)]` or `#[serde(untagged)]`: serde buffers
//! those values and matches their keys itself, exactly. Go's embedded structs are written as
//! separate types decoded from the same document: a type that embeds others derives
//! `Deserialize` with `#[serde(remote = "Self")]` (an inherent `deserialize`, no trait impl),
//! marks the embedded parts `#[serde(skip)]`, and implements [`Decode`] by decoding itself
//! through [`Document::deserializer`] and then each part.

mod de;
mod error;
mod lenient;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod text;
mod value;

pub use de::Deserializer as ValueDeserializer;
pub use error::{DecodeError, Segment};
pub use value::Value;

use serde::de::DeserializeOwned;

/// A parsed input document: the tree every typed view of it is decoded from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    root: Value,
}

/// What can be decoded from a whole document. Every serde type can; a type made of several
/// views of the same object (Go's embedded structs) implements it by decoding each part.
pub trait Decode: Sized {
    fn decode(doc: &Document) -> Result<Self, DecodeError>;
}

impl<T: DeserializeOwned> Decode for T {
    fn decode(doc: &Document) -> Result<Self, DecodeError> {
        from_value(&doc.root)
    }
}

impl Document {
    /// Parses JSON text, repairing text as Go does (see the module documentation).
    pub fn parse(bytes: &[u8]) -> Result<Document, DecodeError> {
        let repaired = text::repair(bytes);
        let root: Value = serde_json::from_slice(&repaired).map_err(DecodeError::syntax)?;
        Ok(Document { root })
    }

    pub fn from_value(root: Value) -> Document {
        Document { root }
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// A serde deserializer over the whole document, for [`Decode`] implementations.
    pub fn deserializer(&self) -> ValueDeserializer<'_> {
        ValueDeserializer::new(&self.root)
    }

    /// A typed view of the document.
    pub fn decode<T: Decode>(&self) -> Result<T, DecodeError> {
        T::decode(self)
    }

    /// A typed view for a command that must not fail on what it does not need (DEL): a value
    /// that cannot be decoded is left out, as if absent, and decoding tries again. Returns
    /// the value and what was left out; fails only when nothing usable remains.
    pub fn decode_lenient<T: Decode>(&self) -> Result<(T, Vec<DecodeError>), DecodeError> {
        lenient::decode(self)
    }

    /// The document as plain JSON, for code that edits or forwards it: duplicate keys
    /// collapsed to their last value.
    pub fn to_json(&self) -> serde_json::Value {
        self.root.to_json()
    }
}

/// Decodes one value of the tree.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, DecodeError> {
    T::deserialize(de::Deserializer::new(value))
}

/// Parses and decodes in one step.
pub fn from_slice<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    Document::parse(bytes)?.decode()
}

/// Decodes a value already held as `serde_json::Value` (its duplicates are already gone).
pub fn from_json<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, DecodeError> {
    from_value(&Value::from_json(value))
}

#[cfg(test)]
mod tests;
