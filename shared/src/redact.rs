//! Credentials never leave the process in text we print: a URL's userinfo
//! (`https://user:password@host`, as an `etcd_endpoints` or a kubeconfig `server:` may
//! carry) is replaced wherever it appears in an error object or a log line, so no message
//! written anywhere in the suite can echo it.
//!
//! Text that comes from outside (an API server's error body, a file that should have held a
//! node name) is quoted only through [`quoted`]: bounded, on one line, with authorization
//! credentials hidden, because a reflecting proxy or a misplaced secret file would
//! otherwise put a token into every log line and error object.

use std::borrow::Cow;

/// What replaces a URL's userinfo.
pub const HIDDEN: &str = "***";

/// `text` with the userinfo of every `scheme://userinfo@host` in it replaced by [`HIDDEN`].
pub fn url_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first character that cannot be in it.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | ',' | ';' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) if userinfo_end > 0 => {
                out.push_str(HIDDEN);
                out.push_str(&authority[userinfo_end..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// How much of a foreign text a message quotes by default: enough for any real error
/// message, a node name or an MTU, too little to carry a document.
pub const QUOTE_MAX: usize = 240;

/// Words after which the rest of the token is a credential (`Authorization: Bearer abc`,
/// `"token": "abc"`), matched case-insensitively.
const SECRET_MARKERS: &[&str] = &["bearer ", "basic ", "token", "password", "authorization"];

/// `text` made safe to quote in a message: control characters become spaces, credentials
/// after an authorization marker and in URLs are hidden, and at most `max` characters are
/// kept (the cut says how much was left out).
pub fn quoted(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    excerpt(one_line.trim(), max)
}

/// [`quoted`] without the change to control characters, for text shown with `{:?}` (where
/// a stray newline is the point of the message).
pub fn excerpt(text: &str, max: usize) -> String {
    let safe = hide_after_markers(&url_credentials(text));
    let total = safe.chars().count();
    if total <= max {
        return safe;
    }
    let kept: String = safe.chars().take(max).collect();
    format!("{kept}... ({} more characters)", total - max)
}

/// `text` with URL userinfo and the credential after every authorization marker hidden, at
/// any length: what a log line's message goes through.
pub fn secrets(text: &str) -> String {
    hide_after_markers(&url_credentials(text))
}

/// Hides the word (or quoted string) after each marker, and after the `:` or `=` that may
/// follow it.
fn hide_after_markers(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut hide = vec![false; text.len()];
    for marker in SECRET_MARKERS {
        let mut from = 0;
        while let Some(found) = lower[from..].find(marker) {
            let mut i = from + found + marker.len();
            from = i;
            let bytes = text.as_bytes();
            // Skip the separators between the marker and its value: `": "`, `=`, spaces.
            while i < bytes.len() && matches!(bytes[i], b' ' | b':' | b'=' | b'"' | b'\'') {
                i += 1;
            }
            // A second marker word ("authorization: bearer x"): its own match hides x.
            let rest = &lower[i..];
            if SECRET_MARKERS
                .iter()
                .any(|m| rest.starts_with(m.trim_end()))
            {
                continue;
            }
            while i < bytes.len() && !matches!(bytes[i], b' ' | b'"' | b'\'' | b',' | b';' | b'}') {
                hide[i] = true;
                i += 1;
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut hiding = false;
    for (i, c) in text.char_indices() {
        if hide[i] {
            if !hiding {
                out.push_str(HIDDEN);
                hiding = true;
            }
        } else {
            hiding = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_one_bounded_line_without_credentials() {
        assert_eq!(
            quoted(
                "forbidden:\n  Authorization: Bearer eyJhbGciOi.secret\n",
                240
            ),
            "forbidden:   Authorization: Bearer ***"
        );
        assert_eq!(
            quoted(r#"{"kind":"Status","token":"s3cr3t","message":"no"}"#, 240),
            r#"{"kind":"Status","token":"***","message":"no"}"#
        );
        assert_eq!(quoted("basic dXNlcjpwYXNz; next", 240), "basic ***; next");
        let long = "x".repeat(1000);
        assert_eq!(quoted(&long, 10), "xxxxxxxxxx... (990 more characters)");
        assert_eq!(quoted("node-1\n", 240), "node-1");
        assert_eq!(quoted("see https://u:p@h/x", 240), "see https://***@h/x");
        assert_eq!(quoted("token=ünïcødé rest", 240), "token=*** rest");
    }

    #[test]
    fn userinfo_is_hidden_wherever_it_appears() {
        assert_eq!(
            url_credentials("https://user:pa%40ss@10.0.0.1:2379/v3/kv: refused"),
            "https://***@10.0.0.1:2379/v3/kv: refused"
        );
        assert_eq!(
            url_credentials("a http://u:p@h, b https://x@y \"http://q:r@s\""),
            "a http://***@h, b https://***@y \"http://***@s\""
        );
        assert_eq!(
            url_credentials("mail me@host, see http://h/p@x"),
            "mail me@host, see http://h/p@x"
        );
        assert!(matches!(url_credentials("http://h:1/"), Cow::Borrowed(_)));
    }
}
