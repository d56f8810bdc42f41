//! Decoding that leaves out what it cannot read, for DEL: a runtime that stops its DEL chain
//! at the first failure strands everything the plugins before us made, so a value DEL does
//! not need must not make it fail. Every failing value is removed from a copy of the
//! document, by the path its error names, until the rest decodes.

use super::error::{DecodeError, Segment};
use super::value::{key_matches, Value};
use super::{Decode, Document};

/// More than any real config has wrong at once; bounds the work on a hostile document.
const MAX_DROPS: usize = 64;

pub fn decode<T: Decode>(doc: &Document) -> Result<(T, Vec<DecodeError>), DecodeError> {
    let mut dropped = Vec::new();
    let mut current: Option<Document> = None;
    loop {
        let attempt = current.as_ref().unwrap_or(doc);
        let err = match T::decode(attempt) {
            Ok(value) => return Ok((value, dropped)),
            Err(e) => e,
        };
        if err.path().is_empty() || dropped.len() >= MAX_DROPS {
            return Err(err);
        }
        let mut next = attempt.clone();
        if !remove_at(&mut next.root, err.path()) {
            return Err(err);
        }
        dropped.push(err);
        current = Some(next);
    }
}

/// Removes the value at `path`. A struct field may be written under several spellings, and
/// the decoder read the last of them: every spelling goes (the field takes its default).
fn remove_at(value: &mut Value, path: &[Segment]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (value, first) {
        (Value::Object(entries), Segment::Field(name)) => {
            if rest.is_empty() {
                let before = entries.len();
                entries.retain(|(k, _)| !key_matches(name, k));
                return entries.len() != before;
            }
            let mut removed = false;
            for (_, inner) in entries
                .iter_mut()
                .filter(|(k, v)| key_matches(name, k) && !v.is_null())
            {
                removed |= remove_at(inner, rest);
            }
            removed
        }
        (Value::Array(items), Segment::Index(i)) if *i < items.len() => {
            if rest.is_empty() {
                items.remove(*i);
                true
            } else {
                remove_at(&mut items[*i], rest)
            }
        }
        _ => false,
    }
}
