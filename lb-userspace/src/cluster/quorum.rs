//! What the nodes agree on, from the views they publish through etcd: the
//! effective health of each backend (so every node builds the same Maglev
//! rings), which node may withdraw its announcements, and whether this node's
//! rings match the others'. Pure: the caller brings the views of the live nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one node publishes. Backends are keyed by a stable identity string
/// (the caller builds it: "<vip addr>:<port>/<proto> <backend addr>:<port>").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub node: String,
    /// The node's own checks: true = up.
    pub up: BTreeMap<String, bool>,
    /// Per VIP name: a digest of everything that shapes its ring, as this node computed it.
    pub digests: BTreeMap<String, String>,
    /// Whether the node announces its VIPs now.
    pub announcing: bool,
    /// Whether the node would withdraw if allowed (it is the odd one out).
    pub wants_out: bool,
    /// When each backend this node sees up came up, in Unix milliseconds: a
    /// slow start ramps from the earliest, the same on every node.
    #[serde(default)]
    pub came_up: BTreeMap<String, u64>,
}

/// Effective health: a backend is usable when more than half of the live
/// nodes that know it see it up; a tie (e.g. 1 against 1 of 2) keeps it up,
/// because the node that cannot reach it is the one that withdraws (see
/// `odd_one_out`). A backend no view knows is absent from the result.
pub fn effective(views: &[View]) -> BTreeMap<String, bool> {
    let mut votes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for view in views {
        for (backend, &up) in &view.up {
            let (ups, downs) = votes.entry(backend).or_default();
            if up {
                *ups += 1;
            } else {
                *downs += 1;
            }
        }
    }
    votes.into_iter().map(|(backend, (ups, downs))| (backend.to_owned(), ups >= downs)).collect()
}

/// When each backend came up, as the cluster agrees: the earliest any live
/// node that sees it up reports (slow starts then ramp alike everywhere).
pub fn came_up(views: &[View]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for v in views {
        for (id, &at) in &v.came_up {
            if v.up.get(id) == Some(&true) {
                out.entry(id.clone()).and_modify(|t| *t = (*t).min(at)).or_insert(at);
            }
        }
    }
    out
}

/// The backends `local` sees down while the effective state uses them:
/// non-empty means this node is cut off from something the others reach.
pub fn odd_one_out(local: &View, effective: &BTreeMap<String, bool>) -> Vec<String> {
    local
        .up
        .iter()
        .filter(|&(backend, &up)| !up && effective.get(backend) == Some(&true))
        .map(|(backend, _)| backend.clone())
        .collect()
}

/// Whether `node` may withdraw now. Never leave fewer than half of the live
/// nodes announcing (2 * announcing_after >= live). Nodes that want out are
/// granted one by one, each grant counted against the ones before it: first
/// those already withdrawn, then the others in node-name order. Every node,
/// reading the same views, reaches the same answer, so they cannot all leave
/// at once. Nodes not announcing for another reason (stopped, cut off from
/// etcd) count as not announcing. A node that does not want out, or that no
/// view names, gets false.
pub fn may_withdraw(views: &[View], node: &str) -> bool {
    let live = views.len();
    let mut out = views.iter().filter(|v| !v.announcing && !v.wants_out).count();
    let mut candidates: Vec<&View> = views.iter().filter(|v| v.wants_out).collect();
    // Those already out go first: granting them changes nothing, whereas
    // granting a newcomer ahead of them would make one of them come back in
    // while the newcomer leaves, and for a moment both would be out.
    // A denied one (others left since) comes back in.
    candidates.sort_by(|a, b| (a.announcing, &a.node).cmp(&(b.announcing, &b.node)));
    for view in candidates {
        // `out` never counts the candidate at hand, so `live - out >= 1`.
        let granted = 2 * (live - out - 1) >= live;
        if granted {
            out += 1;
        }
        if view.node == node {
            return granted;
        }
    }
    false
}

/// How many nodes may be out at once by the odd-one-out rule: half of the
/// live ones (rounded down), less those already out for other reasons
/// (stopped, no usable backend). The nodes claim these slots in etcd, which
/// lets exactly one claim each win, whatever each node's copy of the views.
pub fn out_slots(views: &[View]) -> usize {
    let other = views.iter().filter(|v| !v.announcing && !v.wants_out).count();
    (views.len() / 2).saturating_sub(other)
}

/// What `check_digests` found, as VIP names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DigestCheck {
    pub differs: Vec<String>,
    pub undecided: Vec<String>,
}

/// VIPs whose digest on `local` differs from the one a strict majority of
/// the views that carry that VIP agree on (`views` normally includes
/// `local`'s own). No strict majority: no alarm (nothing to compare
/// against), returned in `undecided` instead. Only `local`'s VIPs are checked.
pub fn check_digests(views: &[View], local: &View) -> DigestCheck {
    let mut check = DigestCheck::default();
    for (vip, mine) in &local.digests {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut carried = 0;
        for digest in views.iter().filter_map(|v| v.digests.get(vip)) {
            *counts.entry(digest).or_default() += 1;
            carried += 1;
        }
        match counts.into_iter().find(|&(_, n)| 2 * n > carried) {
            Some((majority, _)) if majority != mine => check.differs.push(vip.clone()),
            Some(_) => {}
            None => check.undecided.push(vip.clone()),
        }
    }
    check
}

/// 64-bit FNV-1a over the parts, each followed by 0xff so that moving a
/// boundary changes the digest (0xff never occurs in UTF-8 text), as 16
/// lowercase hex digits. Stable across builds and machines, unlike `std`'s hashers.
pub fn digest(parts: impl IntoIterator<Item = impl AsRef<[u8]>>) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for part in parts {
        for &byte in part.as_ref().iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: &str = "10.0.0.1:80/tcp 10.1.0.1:80";
    const Y: &str = "10.0.0.1:80/tcp 10.1.0.2:80";

    fn view(node: &str, up: &[(&str, bool)]) -> View {
        View {
            node: node.to_owned(),
            up: up.iter().map(|&(b, u)| (b.to_owned(), u)).collect(),
            digests: BTreeMap::new(),
            announcing: true,
            wants_out: false,
            came_up: BTreeMap::new(),
        }
    }

    #[test]
    fn a_slow_start_ramps_from_the_earliest_node_that_saw_the_backend_up() {
        let a = View { came_up: [(X.to_owned(), 2_000)].into(), ..view("lb1", &[(X, true)]) };
        let b = View { came_up: [(X.to_owned(), 1_500)].into(), ..view("lb2", &[(X, true)]) };
        let c = View { came_up: [(X.to_owned(), 900)].into(), ..view("lb3", &[(X, false)]) };
        assert_eq!(came_up(&[a, b, c])[X], 1_500, "a node that sees it down does not count");
    }

    fn wanting_out(node: &str) -> View {
        View { wants_out: true, ..view(node, &[]) }
    }

    fn granted(views: &[View]) -> Vec<&str> {
        views.iter().filter(|v| may_withdraw(views, &v.node)).map(|v| v.node.as_str()).collect()
    }

    /// How many announce once every granted node has left and every denied
    /// one is back in.
    fn announcing_after(views: &[View]) -> usize {
        views
            .iter()
            .filter(|v| if v.wants_out { !may_withdraw(views, &v.node) } else { v.announcing })
            .count()
    }

    #[test]
    fn all_up_is_up() {
        let views = [view("lb1", &[(X, true)]), view("lb2", &[(X, true)]), view("lb3", &[(X, true)])];
        let eff = effective(&views);
        assert_eq!(eff, BTreeMap::from([(X.to_owned(), true)]));
        assert!(views.iter().all(|v| odd_one_out(v, &eff).is_empty()));
    }

    #[test]
    fn two_of_three_down_is_down_and_nobody_is_odd() {
        let views = [view("lb1", &[(X, false)]), view("lb2", &[(X, false)]), view("lb3", &[(X, true)])];
        let eff = effective(&views);
        assert!(!eff[X]);
        assert!(views.iter().all(|v| odd_one_out(v, &eff).is_empty()));
    }

    #[test]
    fn one_of_three_down_is_up_and_that_node_is_odd() {
        let views = [view("lb1", &[(X, true)]), view("lb2", &[(X, false)]), view("lb3", &[(X, true)])];
        let eff = effective(&views);
        assert!(eff[X]);
        assert_eq!(odd_one_out(&views[1], &eff), [X]);
        assert!(odd_one_out(&views[0], &eff).is_empty());
        assert!(odd_one_out(&views[2], &eff).is_empty());
    }

    #[test]
    fn a_tie_keeps_it_up_and_the_node_seeing_it_down_is_odd() {
        let views = [view("lb1", &[(X, false)]), view("lb2", &[(X, true)])];
        let eff = effective(&views);
        assert!(eff[X]);
        assert_eq!(odd_one_out(&views[0], &eff), [X]);
        assert!(odd_one_out(&views[1], &eff).is_empty());
    }

    #[test]
    fn a_backend_one_view_knows_follows_it_and_unknown_ones_are_absent() {
        let views = [view("lb1", &[(X, true), (Y, false)]), view("lb2", &[(X, true)])];
        let eff = effective(&views);
        assert_eq!(eff, BTreeMap::from([(X.to_owned(), true), (Y.to_owned(), false)]));
        let views = [view("lb1", &[(X, true)]), view("lb2", &[(X, true), (Y, true)])];
        assert!(effective(&views)[Y]);
        assert!(effective(&[]).is_empty());
    }

    #[test]
    fn three_nodes_one_wants_out_is_granted() {
        let views = [view("lb1", &[]), wanting_out("lb2"), view("lb3", &[])];
        assert_eq!(granted(&views), ["lb2"]);
        assert_eq!(announcing_after(&views), 2);
    }

    #[test]
    fn three_nodes_two_cut_off_from_different_backends_only_the_first_goes() {
        let lb1 = View { wants_out: true, ..view("lb1", &[(X, false), (Y, true)]) };
        let lb2 = View { wants_out: true, ..view("lb2", &[(X, true), (Y, false)]) };
        let lb3 = view("lb3", &[(X, true), (Y, true)]);
        // Listed out of name order: the answer must not depend on it.
        let views = [lb2, lb3, lb1];
        let eff = effective(&views);
        assert_eq!(odd_one_out(&views[2], &eff), [X]);
        assert_eq!(odd_one_out(&views[0], &eff), [Y]);
        assert!(may_withdraw(&views, "lb1"));
        assert!(!may_withdraw(&views, "lb2"));
        assert!(!may_withdraw(&views, "lb3"), "lb3 does not want out");
        assert_eq!(announcing_after(&views), 2);
    }

    #[test]
    fn three_nodes_all_want_out_one_goes() {
        let views = [wanting_out("lb3"), wanting_out("lb1"), wanting_out("lb2")];
        assert_eq!(granted(&views), ["lb1"]);
        assert_eq!(announcing_after(&views), 2);
    }

    #[test]
    fn two_nodes_one_wants_out_is_granted() {
        let views = [view("lb1", &[]), wanting_out("lb2")];
        assert_eq!(granted(&views), ["lb2"]);
        assert_eq!(announcing_after(&views), 1);
    }

    #[test]
    fn two_nodes_both_want_out_exactly_one_goes() {
        let views = [wanting_out("lb2"), wanting_out("lb1")];
        assert_eq!(granted(&views), ["lb1"]);
        assert_eq!(announcing_after(&views), 1);
    }

    #[test]
    fn four_nodes_three_want_out_two_go() {
        let views = [wanting_out("lb1"), view("lb2", &[]), wanting_out("lb3"), wanting_out("lb4")];
        assert_eq!(granted(&views), ["lb1", "lb3"]);
        assert_eq!(announcing_after(&views), 2);
    }

    #[test]
    fn a_lone_node_never_withdraws() {
        assert!(!may_withdraw(&[wanting_out("lb1")], "lb1"));
        assert!(!may_withdraw(&[], "lb1"));
    }

    #[test]
    fn a_node_already_out_stays_granted_ahead_of_earlier_names() {
        let withdrawn = View { announcing: false, ..wanting_out("lb3") };
        let views = [wanting_out("lb1"), view("lb2", &[]), withdrawn.clone()];
        assert_eq!(granted(&views), ["lb3"]);
        assert_eq!(announcing_after(&views), 2);
        // Two nodes: the one already out keeps the only grant.
        let views = [wanting_out("lb1"), View { node: "lb2".into(), ..withdrawn }];
        assert_eq!(granted(&views), ["lb2"]);
    }

    #[test]
    fn nodes_out_for_other_reasons_count_against_the_grants() {
        let stopped = View { announcing: false, ..view("lb2", &[]) };
        let views = [wanting_out("lb1"), stopped.clone(), view("lb3", &[])];
        assert!(!may_withdraw(&views, "lb1"));
        // A node already out is called back in when others have left since.
        let withdrawn = View { announcing: false, ..wanting_out("lb1") };
        let views = [withdrawn, stopped, view("lb3", &[])];
        assert!(!may_withdraw(&views, "lb1"));
    }

    #[test]
    fn out_slots_keep_at_least_half_announcing() {
        let three = [view("lb1", &[]), view("lb2", &[]), view("lb3", &[])];
        assert_eq!(out_slots(&three), 1);
        assert_eq!(out_slots(&three[..2]), 1, "two nodes: one may go, one of two is half");
        assert_eq!(out_slots(&three[..1]), 0, "a lone node never goes");
        let four = [view("lb1", &[]), view("lb2", &[]), view("lb3", &[]), view("lb4", &[])];
        assert_eq!(out_slots(&four), 2);
        let stopped = View { announcing: false, ..view("lb2", &[]) };
        assert_eq!(out_slots(&[view("lb1", &[]), stopped.clone(), view("lb3", &[])]), 0);
        let withdrawn = View { announcing: false, ..wanting_out("lb2") };
        assert_eq!(out_slots(&[view("lb1", &[]), withdrawn, view("lb3", &[])]), 1, "its own slot");
    }

    fn with_digests(node: &str, digests: &[(&str, &str)]) -> View {
        View {
            digests: digests.iter().map(|&(v, d)| (v.to_owned(), d.to_owned())).collect(),
            ..view(node, &[])
        }
    }

    #[test]
    fn the_node_whose_digest_differs_sees_it_and_the_others_see_nothing() {
        let views = [
            with_digests("lb1", &[("web", "aa"), ("dns", "11")]),
            with_digests("lb2", &[("web", "bb"), ("dns", "11")]),
            with_digests("lb3", &[("web", "aa"), ("dns", "11")]),
        ];
        assert_eq!(
            check_digests(&views, &views[1]),
            DigestCheck { differs: vec!["web".into()], undecided: vec![] }
        );
        assert_eq!(check_digests(&views, &views[0]), DigestCheck::default());
        assert_eq!(check_digests(&views, &views[2]), DigestCheck::default());
    }

    #[test]
    fn a_one_to_one_split_is_undecided_on_both() {
        let views = [with_digests("lb1", &[("web", "aa")]), with_digests("lb2", &[("web", "bb")])];
        let undecided = DigestCheck { differs: vec![], undecided: vec!["web".into()] };
        assert_eq!(check_digests(&views, &views[0]), undecided);
        assert_eq!(check_digests(&views, &views[1]), undecided);
    }

    #[test]
    fn only_views_carrying_the_vip_count() {
        // lb3 lacks "web": 2 "aa" of 4 views would be no strict majority, but
        // they are 2 of the 3 views that carry it.
        let views = [
            with_digests("lb1", &[("web", "aa")]),
            with_digests("lb2", &[("web", "aa")]),
            with_digests("lb3", &[("dns", "11")]),
            with_digests("lb4", &[("web", "bb"), ("dns", "22")]),
        ];
        let check = check_digests(&views, &views[3]);
        assert_eq!(check, DigestCheck { differs: vec!["web".into()], undecided: vec!["dns".into()] });
    }

    #[test]
    fn digest_is_fnv1a_with_a_separator_after_each_part() {
        assert_eq!(digest(Vec::<&[u8]>::new()), "cbf29ce484222325", "FNV-1a 64 offset basis");
        // FNV-1a 64 of "a" is af63dc4c8601ec8c; this is "a" then 0xff.
        assert_eq!(digest(["a"]), "089bc907b544c769");
        assert_eq!(digest(["ab", "c"]), digest(vec![b"ab".to_vec(), b"c".to_vec()]));
        assert_ne!(digest(["ab", "c"]), digest(["ab", "d"]));
        assert_ne!(digest(["ab", "c"]), digest(["a", "bc"]));
        assert_ne!(digest(["ab", "c"]), digest(["abc"]));
        assert_eq!(digest(["4099", "7", "x 1"]).len(), 16);
    }
}
