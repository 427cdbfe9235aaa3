//! What is wrong with a config: the error of loading one, and the problems
//! of a well-formed one, each pointing at its field and place in the file.

use std::{fmt, io, path::PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // `error`, not `source`: said once, in this message, and not again as
    // the cause of it.
    #[error("reading {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    /// Not TOML, or not our schema: unknown keys, wrong types, missing
    /// required keys. The message carries line and column; `field` is the
    /// path of the key that failed, as serde walked to it
    /// (`vip[0].backend[1].wieght`), empty when the text is not TOML at all.
    /// (Boxed: every `Result` that carries a `ConfigError` stays small.)
    #[error("{}", error.to_string().trim_end())]
    Syntax { field: String, error: Box<toml::de::Error> },
    /// Well-formed but wrong values; one line per problem.
    #[error("{}", lines(.0))]
    Invalid(Vec<Problem>),
    /// A read or syntax error as another process reported it: its message,
    /// and the key that failed (a syntax error's [`ConfigError::key_problem`]).
    #[error("{message}")]
    Reported { message: String, problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems naming a field: every one of an invalid config, a
    /// syntax error's key as reported by another process, else none.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) | ConfigError::Reported { problems, .. } => problems,
            _ => &[],
        }
    }

    /// A syntax error as a problem of the key that failed (unknown, wrong
    /// type), when serde got as far as a key.
    pub fn key_problem(&self) -> Option<Problem> {
        match self {
            ConfigError::Syntax { field, error } if !field.is_empty() => {
                Some(Problem::new(field.clone(), "", error.message().trim()))
            }
            _ => None,
        }
    }
}

/// A serde path as a problem's field: `vip[0].backend[1].port`. Segments
/// that serde's `Spanned` adds for itself (`$__serde_spanned_private_value`)
/// are no key of the document, and are left out.
pub fn field_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut field = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } if key.starts_with("$__") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    field
}

fn lines(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n")
}

/// One wrong value: which field, what it holds, why that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Path of the field, 0-based indices, the name when the file gives one:
    /// `vip[1] (web).backend[0].weight`.
    pub field: String,
    /// The value as written (strings quoted), or as resolved for defaults.
    pub value: String,
    pub reason: String,
    /// Where the value is in the file; `None` for defaults and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The value repeats another entry's identity or name (for the API, a
    /// conflict with what exists rather than a bad value).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
}

impl Problem {
    /// A problem outside any file (an API request): no location.
    pub fn new(field: impl Into<String>, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
            location: None,
            repeat: false,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.field, self.value, self.reason)?;
        if let Some(at) = self.location {
            write!(f, " (at {at})")?;
        }
        Ok(())
    }
}

/// A position in the file, both 1-based; the column counts characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The position of byte `offset` of `text`.
    pub(super) fn of(text: &str, offset: usize) -> Location {
        let before = &text[..offset.min(text.len())];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1 }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}
