//! HAProxy's configuration format as lines of words: sections
//! (`global`, `defaults`, `frontend`, `backend`, `listen`, others) whose lines
//! are a keyword and its arguments, with `#` comments, `\` escapes and
//! single or double quotes. Every line keeps its number for warnings.

use super::ImportError;

/// One meaningful line: its 1-based number and its words, unquoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub words: Vec<String>,
}

impl Line {
    /// The word at `i`, or "".
    pub fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    /// `userlist`, `peers`, `resolvers`, `cache`…: nothing of them is imported.
    Other(String),
}

#[derive(Clone, Debug)]
pub struct Section {
    pub kind: SectionKind,
    pub name: Option<String>,
    /// The section header's line.
    pub header: Line,
    pub lines: Vec<Line>,
}

const OTHER_SECTIONS: &[&str] = &[
    "userlist",
    "peers",
    "resolvers",
    "cache",
    "program",
    "mailers",
    "ring",
    "http-errors",
    "crt-store",
    "traces",
];

/// The sections of `text`, in order.
pub fn parse(text: &str) -> Result<Vec<Section>, ImportError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let words = split(raw).map_err(|reason| ImportError::Syntax { line: number, reason })?;
        if words.is_empty() {
            continue;
        }
        let line = Line { number, words };
        let kind = match line.word(0) {
            "global" => Some(SectionKind::Global),
            "defaults" => Some(SectionKind::Defaults),
            "frontend" => Some(SectionKind::Frontend),
            "backend" => Some(SectionKind::Backend),
            "listen" => Some(SectionKind::Listen),
            other if OTHER_SECTIONS.contains(&other) => Some(SectionKind::Other(other.to_owned())),
            _ => None,
        };
        match kind {
            Some(kind) => {
                let name = line.words.get(1).cloned();
                let needs_name =
                    matches!(kind, SectionKind::Frontend | SectionKind::Backend | SectionKind::Listen);
                if needs_name && name.is_none() {
                    return Err(ImportError::Syntax {
                        line: number,
                        reason: format!("`{}` needs a name", line.word(0)),
                    });
                }
                sections.push(Section { kind, name, header: line, lines: Vec::new() });
            }
            None => match sections.last_mut() {
                Some(section) => section.lines.push(line),
                None => {
                    return Err(ImportError::Syntax {
                        line: number,
                        reason: format!("`{}` outside of any section", line.word(0)),
                    })
                }
            },
        }
    }
    Ok(sections)
}

/// The words of one line: blanks separate them, `#` starts a comment, `\`
/// escapes the next character, quotes group (no escapes in single quotes).
fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                let next = chars.next().ok_or("a line may not end with `\\`")?;
                word.push(next);
                in_word = true;
            }
            '"' | '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated {c}quote{c}")),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => word.push(chars.next().ok_or("unterminated quote")?),
                        Some(other) => word.push(other),
                    }
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// An HAProxy time (`inter 2s`, `timeout check 500`): milliseconds by
/// default, or `us`, `ms`, `s`, `m`, `h`, `d`. In milliseconds, rounded up.
pub fn time_ms(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let value: u64 = s[..digits].parse().ok()?;
    let ms = match &s[digits..] {
        "" | "ms" => value,
        "us" => value.div_ceil(1000),
        "s" => value.checked_mul(1000)?,
        "m" => value.checked_mul(60_000)?,
        "h" => value.checked_mul(3_600_000)?,
        "d" => value.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_comments_quotes_and_escapes() {
        assert_eq!(
            split("  server a 10.0.0.1:80 check # web").unwrap(),
            ["server", "a", "10.0.0.1:80", "check"]
        );
        assert_eq!(
            split(r#"http-check send meth GET uri "/a b" hdr x\ y 'z#'"#).unwrap(),
            ["http-check", "send", "meth", "GET", "uri", "/a b", "hdr", "x y", "z#"]
        );
        assert!(split("option \"open").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(time_ms("2s"), Some(2000));
        assert_eq!(time_ms("250"), Some(250));
        assert_eq!(time_ms("1500us"), Some(2));
        assert_eq!(time_ms("1m"), Some(60_000));
        assert_eq!(time_ms("2x"), None);
    }

    #[test]
    fn sections_keep_line_numbers() {
        let s = parse("global\n  daemon\n\nbackend b\n  server s 10.0.0.1:80\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].kind, SectionKind::Backend);
        assert_eq!(s[1].lines[0].number, 5);
        assert!(parse("  server s 1.2.3.4:80\n").is_err());
    }
}
