//! The runtime list as its net effect per VIP and backend, so that its length
//! is bound by what the API changed rather than by how many requests it took.
//!
//! A list is compacted as it grows ([`record`]), one operation at a time, on
//! the assumption that every operation applied, in order, on the file the list
//! is kept against: true of what the agent records (it records only what
//! applied) and of what [`replay`](super::replay) keeps. Under that assumption
//! replaying the compacted list on that file gives the same config (VIP and
//! backend order included) and admin states as replaying the full list, and
//! drops nothing. Operations are matched by name, so adds must carry their
//! resolved names, as [`apply`](super::apply) leaves them.
//!
//! A VIP or backend *lives* from the add that made it (or from the start of
//! the list, for one in the file) to the removal that ends it; an operation on
//! a name before the last add or removal of it (or of its VIP) was about
//! something else that had that name. Within one life:
//! - a weight or admin state replaces the one set before it;
//! - an admin state back to `ready` with none set before it is dropped: admin
//!   states exist only in the API layer, start `ready`, and are forgotten with
//!   what they belong to;
//! - a removal drops everything done to the removed VIP or backend (a VIP's
//!   backends included). If the add that made it is in the list, that goes as
//!   well and so does the removal: it never happened. Otherwise (the file's, or
//!   a backend that came with an added VIP) the removal stays, in the place of
//!   the first operation it dropped. Earlier is safe, it only makes the configs
//!   in between smaller; later would not be, since a dropped backend removal
//!   could be what left room for another VIP's add.
//!
//! Everything else stays as it is, in order, so a removal followed by an add
//! of the same name keeps both. What is left is at most one removal and one
//! add per VIP name, and one removal, add, weight and admin state per backend
//! name in a VIP.
//!
//! Replayed on a *changed* file, a compacted list can end differently from the
//! full one where the full list's result hung on a step that compaction took
//! out:
//! - an add and its removal are gone, so if the file now has that VIP or
//!   backend, the file's one stays (and what came later and needed its room or
//!   its address is dropped instead); the full list's add would be refused
//!   and its removal would take the file's one away;
//! - the operations in between no longer see a VIP or backend that is removed
//!   in the end, so one that the full list would drop for a conflict with it or
//!   for lack of room may apply;
//! - fewer operations are dropped and reported, since fewer are replayed.
//!
//! Dropping an overwritten weight or admin state changes nothing there: within
//! one life the backend is there for all of them or for none.

use super::{Admin, Op};

/// Appends `ops` to `list`, which stays compacted.
pub fn record(list: &mut Vec<Op>, ops: impl IntoIterator<Item = Op>) {
    for op in ops {
        push(list, op);
    }
}

/// What an operation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Subject<'a> {
    Vip(&'a str),
    Backend(&'a str, &'a str),
}

impl Subject<'_> {
    /// Whether `other` is this or part of it (a VIP holds its backends).
    fn holds(self, other: Subject) -> bool {
        match (self, other) {
            (Subject::Vip(v), Subject::Vip(w) | Subject::Backend(w, _)) => v == w,
            (Subject::Backend(..), _) => self == other,
        }
    }
}

/// An add without a name (not gone through `apply`) matches nothing: no VIP or
/// backend can be named "", so it is never taken for another.
fn name(json: &serde_json::Value) -> &str {
    json.get("name").and_then(|n| n.as_str()).unwrap_or("")
}

fn subject(op: &Op) -> Subject<'_> {
    match op {
        Op::AddVip { vip } => Subject::Vip(name(vip)),
        Op::RemoveVip { vip } => Subject::Vip(vip),
        Op::AddBackend { vip, backend } => Subject::Backend(vip, name(backend)),
        Op::RemoveBackend { vip, backend }
        | Op::SetWeight { vip, backend, .. }
        | Op::SetAdmin { vip, backend, .. } => Subject::Backend(vip, backend),
    }
}

/// Whether `op` begins or ends a life of something named `subject` or of its VIP.
fn starts_or_ends(op: &Op, subject: Subject) -> bool {
    let adds_or_removes = matches!(
        op,
        Op::AddVip { .. } | Op::RemoveVip { .. } | Op::AddBackend { .. } | Op::RemoveBackend { .. }
    );
    adds_or_removes && self::subject(op).holds(subject)
}

fn push(list: &mut Vec<Op>, op: Op) {
    let about = subject(&op);
    // Where the current life of `about` began: older operations on its name were about something else.
    let born = list.iter().rposition(|o| starts_or_ends(o, about));
    let since = born.map_or(0, |i| i + 1);
    match &op {
        Op::AddVip { .. } | Op::AddBackend { .. } => list.push(op),
        Op::SetWeight { .. } => {
            drop_from(list, since, |o| matches!(o, Op::SetWeight { .. }) && subject(o) == about);
            list.push(op);
        }
        Op::SetAdmin { admin, .. } => {
            drop_from(list, since, |o| matches!(o, Op::SetAdmin { .. }) && subject(o) == about);
            if *admin != Admin::Ready {
                list.push(op);
            }
        }
        Op::RemoveVip { .. } | Op::RemoveBackend { .. } => {
            let added_here = born.is_some_and(|i| {
                matches!(list[i], Op::AddVip { .. } | Op::AddBackend { .. }) && subject(&list[i]) == about
            });
            if added_here {
                drop_from(list, since - 1, |o| about.holds(subject(o)));
            } else {
                let first = drop_from(list, since, |o| about.holds(subject(o)));
                list.insert(first.unwrap_or(list.len()), op);
            }
        }
    }
}

/// Drops the operations from `since` on that `doomed` picks; where the first was.
fn drop_from(list: &mut Vec<Op>, since: usize, doomed: impl Fn(&Op) -> bool) -> Option<usize> {
    let first = list[since..].iter().position(&doomed).map(|i| since + i);
    let mut i = 0;
    list.retain(|o| {
        let keep = i < since || !doomed(o);
        i += 1;
        keep
    });
    first
}

#[cfg(test)]
mod cases;
#[cfg(test)]
mod equivalence;
