//! Calico's label selector language, as far as pool `nodeSelector`s use it:
//!
//! ```text
//! all()  global()  has(k)  !has(k)  k == 'v'  k != 'v'  k in {'a','b'}  k not in {'a'}
//! k starts with 'p'  k ends with 's'  k contains 'c'  !e  e && e  e || e  ( e )
//! ```
//!
//! `&&` binds tighter than `||`; `!` binds tightest. As in Calico, a comparison on a label the
//! node does not have is false, except the negative ones (`!=`, `not in`), which are true.
//! An empty selector selects everything.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    StartsWith(String, String),
    EndsWith(String, String),
    Contains(String, String),
    Not(Box<Selector>),
    And(Box<Selector>, Box<Selector>),
    Or(Box<Selector>, Box<Selector>),
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Ok(Selector::All);
        }
        let mut parser = Parser { tokens, pos: 0 };
        let selector = parser.or()?;
        match parser.peek() {
            None => Ok(selector),
            Some(t) => Err(format!("unexpected {t} after the expression")),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let label = |k: &String| labels.get(k);
        match self {
            Selector::All => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Eq(k, v) => label(k) == Some(v),
            Selector::Ne(k, v) => label(k) != Some(v),
            Selector::In(k, set) => label(k).is_some_and(|v| set.contains(v)),
            Selector::NotIn(k, set) => !label(k).is_some_and(|v| set.contains(v)),
            Selector::StartsWith(k, p) => label(k).is_some_and(|v| v.starts_with(p.as_str())),
            Selector::EndsWith(k, s) => label(k).is_some_and(|v| v.ends_with(s.as_str())),
            Selector::Contains(k, c) => label(k).is_some_and(|v| v.contains(c.as_str())),
            Selector::Not(e) => !e.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A label key or a keyword (`all`, `has`, `in`, `not`, `starts`, ...).
    Word(String),
    Str(String),
    Op(&'static str),
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Str(s) => write!(f, "string {s:?}"),
            Token::Op(o) => write!(f, "{o:?}"),
        }
    }
}

/// Characters Kubernetes allows in label keys (with prefix) and in bare words.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    // Longest operators first, so `!=` is not read as `!` then `=`.
    const OPS: [&str; 10] = ["&&", "||", "==", "!=", "!", "(", ")", "{", "}", ","];
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(tokens);
        };
        if let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) {
            tokens.push(Token::Op(op));
            rest = &rest[op.len()..];
        } else if c == '\'' || c == '"' {
            let body = &rest[1..];
            let end = body
                .find(c)
                .ok_or_else(|| format!("unterminated string starting at {rest:?}"))?;
            tokens.push(Token::Str(body[..end].to_string()));
            rest = &body[end + 1..];
        } else if is_word_char(c) {
            let end = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
            tokens.push(Token::Word(rest[..end].to_string()));
            rest = &rest[end..];
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), String> {
        match self.next() {
            Some(Token::Op(o)) if o == op => Ok(()),
            Some(t) => Err(format!("expected {op:?}, found {t}")),
            None => Err(format!("expected {op:?}, found the end")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Str(s)) => Ok(s),
            Some(t) => Err(format!("expected a quoted string, found {t}")),
            None => Err("expected a quoted string, found the end".into()),
        }
    }

    fn or(&mut self) -> Result<Selector, String> {
        let mut left = self.and()?;
        while self.eat_op("||") {
            left = Selector::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Selector, String> {
        let mut left = self.unary()?;
        while self.eat_op("&&") {
            left = Selector::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Selector, String> {
        if self.eat_op("!") {
            return Ok(Selector::Not(Box::new(self.unary()?)));
        }
        if self.eat_op("(") {
            let inner = self.or()?;
            self.expect_op(")")?;
            return Ok(inner);
        }
        self.term()
    }

    fn term(&mut self) -> Result<Selector, String> {
        let word = match self.next() {
            Some(Token::Word(w)) => w,
            Some(t) => return Err(format!("expected a label or function, found {t}")),
            None => return Err("expected a label or function, found the end".into()),
        };
        // Functions: `all()`, `global()`, `has(key)`.
        if self.eat_op("(") {
            let selector = match word.as_str() {
                "all" | "global" => Selector::All,
                "has" => match self.next() {
                    Some(Token::Word(k)) => Selector::Has(k),
                    _ => return Err("has() takes a label key".into()),
                },
                other => return Err(format!("unknown function {other}()")),
            };
            self.expect_op(")")?;
            return Ok(selector);
        }
        let key = word;
        if self.eat_op("==") {
            return Ok(Selector::Eq(key, self.string()?));
        }
        if self.eat_op("!=") {
            return Ok(Selector::Ne(key, self.string()?));
        }
        if self.eat_word("in") {
            return Ok(Selector::In(key, self.set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(format!("expected \"in\" after {key:?} not"));
            }
            return Ok(Selector::NotIn(key, self.set()?));
        }
        if self.eat_word("starts") {
            if !self.eat_word("with") {
                return Err("expected \"with\" after \"starts\"".into());
            }
            return Ok(Selector::StartsWith(key, self.string()?));
        }
        if self.eat_word("ends") {
            if !self.eat_word("with") {
                return Err("expected \"with\" after \"ends\"".into());
            }
            return Ok(Selector::EndsWith(key, self.string()?));
        }
        if self.eat_word("contains") {
            return Ok(Selector::Contains(key, self.string()?));
        }
        Err(format!("expected an operator after label {key:?}"))
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        self.expect_op("{")?;
        let mut values = Vec::new();
        if self.eat_op("}") {
            return Ok(values);
        }
        loop {
            values.push(self.string()?);
            if self.eat_op("}") {
                return Ok(values);
            }
            self.expect_op(",")?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(text: &str) -> Selector {
        Selector::parse(text).expect("selector parses")
    }

    #[test]
    fn empty_and_all_select_everything() {
        let none = labels(&[]);
        assert!(sel("").matches(&none));
        assert!(sel("   ").matches(&none));
        assert!(sel("all()").matches(&none));
        assert!(sel("global()").matches(&none));
    }

    #[test]
    fn comparisons_on_present_and_missing_labels() {
        let l = labels(&[("zone", "a"), ("kubernetes.io/os", "linux")]);
        assert!(sel("has(zone)").matches(&l));
        assert!(!sel("!has(zone)").matches(&l));
        assert!(sel("!has(rack)").matches(&l));
        assert!(sel("zone == 'a'").matches(&l));
        assert!(sel("zone == \"a\"").matches(&l));
        assert!(!sel("zone != 'a'").matches(&l));
        assert!(sel("rack != 'a'").matches(&l), "missing label is not equal");
        assert!(!sel("rack == 'a'").matches(&l));
        assert!(sel("zone in {'a', 'b'}").matches(&l));
        assert!(!sel("zone in {}").matches(&l));
        assert!(sel("zone not in {'b'}").matches(&l));
        assert!(sel("rack not in {'b'}").matches(&l));
        assert!(!sel("rack in {'b'}").matches(&l));
        assert!(sel("kubernetes.io/os == 'linux'").matches(&l));
        assert!(sel("kubernetes.io/os starts with 'lin'").matches(&l));
        assert!(sel("kubernetes.io/os ends with 'ux'").matches(&l));
        assert!(sel("kubernetes.io/os contains 'nu'").matches(&l));
    }

    #[test]
    fn boolean_structure_and_precedence() {
        let l = labels(&[("a", "1"), ("b", "2")]);
        assert!(sel("a == '1' && b == '2'").matches(&l));
        assert!(!sel("a == '1' && b == '3'").matches(&l));
        assert!(sel("a == '9' || b == '2'").matches(&l));
        // && binds tighter: false || (true && true)
        assert!(sel("a == '9' || a == '1' && b == '2'").matches(&l));
        // (false || true) && false
        assert!(!sel("(a == '9' || a == '1') && b == '3'").matches(&l));
        assert!(sel("!(a == '9')").matches(&l));
        assert!(!sel("!(has(a) && has(b))").matches(&l));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in [
            "zone ==",
            "zone = 'a'",
            "has(zone",
            "zone == 'a",
            "zone in {'a' 'b'}",
            "&& has(a)",
            "has(a) has(b)",
            "bogus()",
            "zone not 'a'",
            "zone $ 'a'",
            "(has(a)",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
