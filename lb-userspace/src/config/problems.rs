//! Collecting problems: each failed check records one and yields `None`, so
//! one run reports everything.

use std::ops::Range;

use toml::Spanned;

use super::{raw::RawDuration, Config, Location, Problem};

/// The problems found so far, and the text they point into.
pub(super) struct Problems<'t> {
    text: &'t str,
    list: Vec<Problem>,
}

impl<'t> Problems<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Problems { text, list: Vec::new() }
    }

    pub(super) fn add(&mut self, field: String, value: String, reason: String, span: Option<Range<usize>>) {
        let location = span.map(|span| Location::of(self.text, span.start));
        self.list.push(Problem { field, value, reason, location, repeat: false });
    }

    /// A value another entry already has (see [`Problem::repeat`]).
    pub(super) fn add_repeat(&mut self, field: String, value: String, reason: String, span: Range<usize>) {
        self.add(field, value, reason, Some(span));
        self.list.last_mut().expect("just added").repeat = true;
    }

    /// Runs `parse` on a value from the file; a failure becomes a problem.
    pub(super) fn check<V: Shown, T>(
        &mut self,
        field: String,
        raw: &Spanned<V>,
        parse: impl FnOnce(&V) -> Result<T, String>,
    ) -> Option<T> {
        parse(raw.get_ref())
            .map_err(|reason| self.add(field, raw.get_ref().shown(), reason, Some(raw.span())))
            .ok()
    }

    /// As [`Problems::check`], with `default` when the key is absent.
    pub(super) fn check_or<V: Shown, T>(
        &mut self,
        field: String,
        raw: Option<&Spanned<V>>,
        default: T,
        parse: impl FnOnce(&V) -> Result<T, String>,
    ) -> Option<T> {
        match raw {
            Some(raw) => self.check(field, raw, parse),
            None => Some(default),
        }
    }

    pub(super) fn finish(mut self, build: impl FnOnce() -> Option<Config>) -> Result<Config, Vec<Problem>> {
        match build() {
            Some(config) if self.list.is_empty() => Ok(config),
            _ => {
                if self.list.is_empty() {
                    // A check yielded None without saying why: never accept that silently.
                    debug_assert!(false, "a config check failed without recording a problem");
                    self.add(
                        "config".into(),
                        String::new(),
                        "rejected without a reason (a bug)".into(),
                        None,
                    );
                }
                // File order; problems with no place in the file (counts, defaults) last.
                self.list.sort_by_key(|p| (p.location.is_none(), p.location));
                Err(self.list)
            }
        }
    }
}

/// How a problem shows the value it is about: as written in TOML.
pub(super) trait Shown {
    fn shown(&self) -> String;
}

impl Shown for String {
    fn shown(&self) -> String {
        format!("{self:?}")
    }
}

impl Shown for i64 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for RawDuration {
    fn shown(&self) -> String {
        match self {
            RawDuration::Millis(ms) => ms.shown(),
            RawDuration::Text(s) => s.shown(),
        }
    }
}

/// `vip[1] (web)`: the index always, the name when the file gives one.
pub(super) fn labelled(path: String, name: Option<&Spanned<String>>) -> String {
    match name {
        Some(name) => format!("{path} ({})", name.get_ref()),
        None => path,
    }
}
