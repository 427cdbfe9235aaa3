//! Duplicates: VIPs in the file, backends in a VIP, by identity and by name.

use std::{
    collections::{hash_map::Entry as Slot, HashMap},
    fmt,
    hash::Hash,
    net::SocketAddr,
    ops::Range,
};

use toml::Spanned;

use super::{
    problems::{labelled, Problems, Shown},
    raw::{RawBackend, RawVip},
    values::{choice, PROTOCOLS},
    Protocol,
};

/// What identifies a VIP (and makes its default name).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct VipId {
    pub(super) socket: SocketAddr,
    pub(super) protocol: Protocol,
}

impl fmt::Display for VipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.socket, self.protocol)
    }
}

/// A member of a list that must not repeat itself: VIPs in the file, backends
/// in a VIP. `id` is `None` when its values are invalid (reported elsewhere).
pub(super) struct Entry<'r, K> {
    path: String,
    name: Option<&'r Spanned<String>>,
    id: Option<K>,
    id_span: Range<usize>,
}

pub(super) fn vip_entry(i: usize, raw: &RawVip) -> Entry<'_, VipId> {
    let id = (|| {
        let socket =
            SocketAddr::new(raw.address.get_ref().parse().ok()?, u16::try_from(*raw.port.get_ref()).ok()?);
        let protocol = raw.protocol.as_ref().map_or(Ok(Protocol::Tcp), |s| choice(s.get_ref(), PROTOCOLS));
        Some(VipId { socket, protocol: protocol.ok()? })
    })();
    Entry {
        path: labelled(format!("vip[{i}]"), raw.name.as_ref()),
        name: raw.name.as_ref(),
        id,
        id_span: raw.address.span(),
    }
}

pub(super) fn backend_entry<'r>(
    vip: &str,
    j: usize,
    raw: &'r RawBackend,
    vip_port: Option<u16>,
) -> Entry<'r, SocketAddr> {
    let port = raw.port.as_ref().map_or(vip_port, |port| u16::try_from(*port.get_ref()).ok());
    let id =
        raw.address.get_ref().parse().ok().zip(port).map(|(address, port)| SocketAddr::new(address, port));
    let path = labelled(format!("{vip}.backend[{j}]"), raw.name.as_ref());
    Entry { path, name: raw.name.as_ref(), id, id_span: raw.address.span() }
}

/// Reports entries whose identity or name an earlier entry already has. A
/// default name is the identity, so two unnamed twins are reported once.
pub(super) fn no_repeats<K: Copy + Eq + Hash + fmt::Display>(
    entries: &[Entry<K>],
    same_as: &str,
    p: &mut Problems,
) {
    for (i, first, id) in duplicates(entries.iter().map(|e| e.id)) {
        let reason = format!("{same_as} {}", entries[first].path);
        p.add_repeat(entries[i].path.clone(), id.to_string(), reason, entries[i].id_span.clone());
    }
    let names = entries
        .iter()
        .map(|e| e.name.map(|name| name.get_ref().clone()).or_else(|| e.id.map(|id| id.to_string())));
    for (i, first, name) in duplicates(names) {
        let (e, first) = (&entries[i], &entries[first]);
        if e.name.is_none() && first.name.is_none() {
            continue;
        }
        let span = e.name.map_or(e.id_span.clone(), Spanned::span);
        let reason = format!("duplicate name: {} has it too", first.path);
        p.add_repeat(format!("{}.name", e.path), name.shown(), reason, span);
    }
}

/// `(index, index of its first occurrence, key)` for every repeated key;
/// `None` keys never match.
fn duplicates<K: Eq + Hash + Clone>(keys: impl Iterator<Item = Option<K>>) -> Vec<(usize, usize, K)> {
    let mut seen = HashMap::new();
    let mut repeats = Vec::new();
    for (i, key) in keys.enumerate() {
        let Some(key) = key else { continue };
        match seen.entry(key.clone()) {
            Slot::Occupied(first) => repeats.push((i, *first.get(), key)),
            Slot::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }
    repeats
}
