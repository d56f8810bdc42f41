//! Text that Go reads and serde_json refuses, made acceptable the way Go reads it.
//!
//! `encoding/json` replaces each byte that is not part of valid UTF-8 with U+FFFD, and each
//! `\u` escape of a UTF-16 surrogate that has no partner with U+FFFD too. serde_json refuses
//! both, which would turn a config Go plugins accept into a decode error. Outside strings
//! either is a syntax error for both parsers, before and after the repair.

use std::borrow::Cow;

const REPLACEMENT_UTF8: &[u8] = "\u{fffd}".as_bytes();
const REPLACEMENT_ESCAPE: &[u8] = b"\\ufffd";

/// The input with Go's replacements made; borrowed when nothing needed replacing.
pub fn repair(bytes: &[u8]) -> Cow<'_, [u8]> {
    let text = valid_utf8(bytes);
    if !needs_surrogate_repair(&text) {
        return text;
    }
    Cow::Owned(replace_lone_surrogates(&text))
}

/// Each byte that does not start a valid sequence becomes U+FFFD, one per byte, as Go's
/// `utf8.DecodeRune` steps over it (a truncated three-byte sequence is two replacements).
fn valid_utf8(bytes: &[u8]) -> Cow<'_, [u8]> {
    if std::str::from_utf8(bytes).is_ok() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => {
                out.extend_from_slice(rest);
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.extend_from_slice(&rest[..good]);
                out.extend_from_slice(REPLACEMENT_UTF8);
                rest = &rest[good + 1..];
            }
        }
    }
    Cow::Owned(out)
}

fn needs_surrogate_repair(bytes: &[u8]) -> bool {
    bytes
        .windows(3)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && matches!(w[2], b'd' | b'D'))
}

/// The code unit of a `\uXXXX` escape at the start of `bytes`, if it is one.
fn escape_at(bytes: &[u8]) -> Option<u16> {
    let hex = bytes.get(..6)?;
    if hex[0] != b'\\' || hex[1] != b'u' {
        return None;
    }
    let digits = std::str::from_utf8(&hex[2..6]).ok()?;
    u16::from_str_radix(digits, 16).ok()
}

fn replace_lone_surrogates(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match escape_at(&bytes[i..]) {
            Some(0xD800..=0xDBFF) => {
                let low = escape_at(&bytes[i + 6..]);
                if matches!(low, Some(0xDC00..=0xDFFF)) {
                    out.extend_from_slice(&bytes[i..i + 12]);
                    i += 12;
                } else {
                    // Go writes U+FFFD for the high half and reads what follows afresh.
                    out.extend_from_slice(REPLACEMENT_ESCAPE);
                    i += 6;
                }
            }
            Some(0xDC00..=0xDFFF) => {
                out.extend_from_slice(REPLACEMENT_ESCAPE);
                i += 6;
            }
            Some(_) => {
                out.extend_from_slice(&bytes[i..i + 6]);
                i += 6;
            }
            // Any other escape (`\\`, `\"`, `\n`...) is copied whole, so the character it
            // escapes is never taken for the start of another escape.
            None => {
                let end = (i + 2).min(bytes.len());
                out.extend_from_slice(&bytes[i..end]);
                i = end;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(input: &[u8]) -> String {
        String::from_utf8(repair(input).into_owned()).expect("repaired text is UTF-8")
    }

    #[test]
    fn valid_text_is_borrowed() {
        assert!(matches!(repair(br#"{"a":"\u00e9"}"#), Cow::Borrowed(_)));
        assert!(matches!(
            repair("{\"a\":\"é\"}".as_bytes()),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn each_invalid_byte_becomes_one_replacement() {
        assert_eq!(fixed(b"\"a\xffb\""), "\"a\u{fffd}b\"");
        // A truncated three-byte sequence: two bytes, two replacements, as Go's decoder.
        assert_eq!(fixed(b"\"\xe2\x82x\""), "\"\u{fffd}\u{fffd}x\"");
    }

    #[test]
    fn lone_surrogates_become_replacement_escapes() {
        assert_eq!(fixed(br#""\ud800""#), r#""\ufffd""#);
        assert_eq!(fixed(br#""\udc00x""#), r#""\ufffdx""#);
        assert_eq!(fixed(br#""\ud800\u0041""#), r#""\ufffd\u0041""#);
        // A real pair stays.
        assert_eq!(fixed(br#""\ud83d\ude00""#), r#""\ud83d\ude00""#);
        // A high half followed by another high half and its low: one replaced, one pair.
        assert_eq!(fixed(br#""\ud800\ud83d\ude00""#), r#""\ufffd\ud83d\ude00""#);
        // An escaped backslash followed by "ud800" is text, not an escape.
        assert_eq!(fixed(br#""\\ud800""#), r#""\\ud800""#);
    }
}
