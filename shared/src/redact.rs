//! Credentials never leave the process in text we print: a URL's userinfo
//! (`https://user:password@host`, as an `etcd_endpoints` or a kubeconfig `server:` may
//! carry) is replaced wherever it appears in an error object or a log line, so no message
//! written anywhere in the suite can echo it.

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

#[cfg(test)]
mod tests {
    use super::*;

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
