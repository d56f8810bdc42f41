//! A decode failure and where in the document it happened, so that a message can name the
//! field to fix (`runtimeConfig.portMappings[0].hostPort: invalid type ...`).

use std::fmt;

/// One step from a value to one inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A struct field (its canonical name) or a map key.
    Field(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// From the document's root to the failing value.
    path: Vec<Segment>,
    message: String,
    syntax: bool,
}

impl DecodeError {
    pub(crate) fn syntax(e: serde_json::Error) -> DecodeError {
        DecodeError {
            path: Vec::new(),
            message: e.to_string(),
            syntax: true,
        }
    }

    /// The error seen from one level up.
    pub(crate) fn within(mut self, segment: Segment) -> DecodeError {
        self.path.insert(0, segment);
        self
    }

    /// The document is not JSON at all (as opposed to JSON of the wrong shape).
    pub fn is_syntax(&self) -> bool {
        self.syntax
    }

    pub fn path(&self) -> &[Segment] {
        &self.path
    }

    /// `a.b[2].c`; empty at the root.
    pub fn path_string(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// What was wrong, without the path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path_string(), self.message)
        }
    }
}

impl std::error::Error for DecodeError {}

impl serde::de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> DecodeError {
        DecodeError {
            path: Vec::new(),
            message: msg.to_string(),
            syntax: false,
        }
    }
}
