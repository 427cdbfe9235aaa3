//! Weighted Maglev ring construction (Eisenbud et al., NSDI 2016), pure.
//!
//! Every member gets a permutation of the ring's slots from two hashes of its
//! identity (address and port): `offset` and `skip`, the permutation being
//! `offset, offset + skip, offset + 2·skip, … (mod M)`. Members take turns
//! claiming the next free slot of their permutation until the ring is full.
//! Weights: in round `r` a member may hold up to `r · weight / max_weight`
//! slots, so the heaviest claims one slot per round and the others in
//! proportion. Members are ordered by identity before anything else, so the
//! ring depends only on the set of (identity, weight) pairs: every LB node
//! with the same config builds the same ring.

use std::net::SocketAddr;

use lb_common::{hash::hash_words, types::addr_words};

/// A built ring's slot that no member owns (no member has a positive weight).
pub const NO_MEMBER: u32 = u32::MAX;

/// Seeds of the two permutation hashes. Fixed: rings must not depend on anything
/// but the members.
const OFFSET_SEED: u32 = 0x6d61_676c;
const SKIP_SEED: u32 = 0x6576_3031;

/// One ring member: who it is and how much traffic it should get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: SocketAddr,
    /// 0 = no slots.
    pub weight: u32,
}

/// Whether `m` can be a ring size: the permutation needs a prime.
pub fn is_prime(m: u32) -> bool {
    if m < 2 {
        return false;
    }
    let m = u64::from(m);
    (2..).take_while(|d| d * d <= m).all(|d| m % d != 0)
}

/// Builds a ring of `size` slots (a prime). Each slot holds the index into
/// `members` of the member that owns it, or [`NO_MEMBER`] when no member has a
/// positive weight.
pub fn build(members: &[Member], size: u32) -> Vec<u32> {
    debug_assert!(is_prime(size), "ring size {size} is not prime");
    let mut ring = vec![NO_MEMBER; size as usize];
    let mut order: Vec<usize> = (0..members.len()).filter(|&i| members[i].weight > 0).collect();
    if order.is_empty() {
        return ring;
    }
    order.sort_by_key(|&i| members[i].id);
    order.dedup_by_key(|i| members[*i].id);

    let max_weight = order.iter().map(|&i| u64::from(members[i].weight)).max().expect("order is not empty");
    // Everything the fill loop needs about a member, in one place: it runs M times.
    let mut claimants: Vec<Claimant> = order
        .iter()
        .map(|&i| Claimant {
            cursor: Cursor::new(members[i].id, size),
            index: i as u32,
            weight: u64::from(members[i].weight),
            held: 0,
        })
        .collect();
    let mut free = FreeSlots::new(size);
    let mut round = 0u64;
    loop {
        round += 1;
        for member in claimants.iter_mut() {
            while member.held * max_weight < round * member.weight {
                let slot = free.claim(&mut member.cursor);
                ring[slot] = member.index;
                member.held += 1;
                if free.left == 0 {
                    return ring;
                }
            }
        }
    }
}

/// A member with a positive weight, while the ring fills.
struct Claimant {
    cursor: Cursor,
    /// Into the caller's `members`.
    index: u32,
    weight: u64,
    /// Slots claimed so far.
    held: u64,
}

/// A member's walk along its permutation: slot `j` of it is `offset + j·skip (mod M)`.
struct Cursor {
    position: u32,
    skip: u32,
    offset: u32,
    /// `skip⁻¹ mod M`: turns a slot back into its place in the permutation.
    skip_inverse: u32,
    size: u32,
}

impl Cursor {
    fn new(id: SocketAddr, size: u32) -> Self {
        let (addr, family) = addr_words(id.ip());
        let identity = [addr[0], addr[1], addr[2], addr[3], u32::from(id.port()) << 8 | u32::from(family)];
        let offset = hash_words(OFFSET_SEED, &identity) % size;
        let skip = hash_words(SKIP_SEED, &identity) % (size - 1) + 1;
        // M is prime, so skip^(M-2) is skip's inverse (Fermat).
        Self { position: offset, skip, offset, skip_inverse: pow_mod(skip, size - 2, size), size }
    }

    /// Where `slot` comes in this member's permutation.
    #[inline(always)]
    fn place(&self, slot: u32) -> u64 {
        let m = u64::from(self.size);
        // Both factors are below M < 2³², so the product fits.
        (u64::from(slot) + m - u64::from(self.offset)) % m * u64::from(self.skip_inverse) % m
    }

    #[inline(always)]
    fn advance(&mut self) {
        // position + skip < 2·size, so one subtraction is the modulo.
        self.position = match self.position + self.skip {
            p if p >= self.size => p - self.size,
            p => p,
        };
    }
}

fn pow_mod(base: u32, mut exp: u32, m: u32) -> u32 {
    let (mut base, mut acc, m) = (u64::from(base), 1u64, u64::from(m));
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    acc as u32
}

/// The ring's free slots, and how a member finds the first of them in its
/// permutation.
///
/// While many slots are free, walking the permutation finds one in a few
/// probes of a bitset that fits in cache. With F slots left a walk costs about
/// M/F probes; once F is below about √M/2 (the best point measured) it is
/// cheaper to compute each free slot's place in the member's permutation and
/// take the earliest. Every slot a member has walked past is taken for good,
/// so the earliest free place is exactly where its walk would stop: the ring
/// is the same either way.
struct FreeSlots {
    taken: Vec<u64>,
    /// Free slots; the ring is full at 0.
    left: u32,
    /// Below this many free slots, switch to `list`.
    list_below: u32,
    list: Vec<u32>,
}

impl FreeSlots {
    fn new(size: u32) -> Self {
        let mut taken = vec![0u64; (size as usize).div_ceil(64)];
        // Bits past the ring's end count as taken, so `untaken` never lists them.
        if !size.is_multiple_of(64) {
            *taken.last_mut().expect("size > 0") = !0 << (size % 64);
        }
        Self { taken, left: size, list_below: size.isqrt() / 2, list: Vec::new() }
    }

    /// Takes the next free slot of `member`'s permutation (the ring is not full).
    #[inline(always)]
    fn claim(&mut self, member: &mut Cursor) -> usize {
        self.left -= 1;
        if self.left >= self.list_below {
            return self.walk(member);
        }
        // Empty only before the switch: it holds every free slot from then on.
        if self.list.is_empty() {
            self.list = self.untaken();
        }
        let (i, _) =
            self.list.iter().enumerate().min_by_key(|&(_, &s)| member.place(s)).expect("ring not full");
        // No walk follows (the free count only goes down): the cursor's position is left as it is.
        self.list.swap_remove(i) as usize
    }

    fn walk(&mut self, member: &mut Cursor) -> usize {
        loop {
            let slot = member.position as usize;
            member.advance();
            let (word, bit) = (slot / 64, 1u64 << (slot % 64));
            let w = &mut self.taken[word];
            if *w & bit == 0 {
                *w |= bit;
                return slot;
            }
        }
    }

    fn untaken(&self) -> Vec<u32> {
        let mut list = Vec::with_capacity(self.left as usize + 1);
        for (i, &w) in self.taken.iter().enumerate() {
            let mut free = !w;
            while free != 0 {
                list.push((i * 64) as u32 + free.trailing_zeros());
                free &= free - 1;
            }
        }
        list
    }
}

/// Slots whose owner differs between two rings of the same size, by identity.
pub fn changed_slots<'a>(
    old: &'a [u32],
    old_members: &'a [Member],
    new: &'a [u32],
    new_members: &'a [Member],
) -> impl Iterator<Item = usize> + 'a {
    let id = |ring: &[u32], members: &[Member], slot: usize| members.get(ring[slot] as usize).map(|m| m.id);
    (0..new.len()).filter(move |&s| id(old, old_members, s) != id(new, new_members, s))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    const M: u32 = 65_537;

    fn member(i: u32, weight: u32) -> Member {
        let ip = Ipv4Addr::from(0x0a4d_0000 + i);
        Member { id: SocketAddr::new(IpAddr::V4(ip), 80), weight }
    }

    fn shares(ring: &[u32], n: usize) -> Vec<u64> {
        let mut count = vec![0u64; n];
        for &slot in ring {
            count[slot as usize] += 1;
        }
        count
    }

    /// The textbook fill: every claim walks the permutation one slot at a time.
    fn walk_only(members: &[Member], size: u32) -> Vec<u32> {
        let mut order: Vec<usize> = (0..members.len()).filter(|&i| members[i].weight > 0).collect();
        order.sort_by_key(|&i| members[i].id);
        let max_weight = order.iter().map(|&i| members[i].weight).max().unwrap();
        let mut cursor: Vec<Cursor> = order.iter().map(|&i| Cursor::new(members[i].id, size)).collect();
        let (mut ring, mut held, mut filled) = (vec![NO_MEMBER; size as usize], vec![0u32; order.len()], 0);
        for round in 1.. {
            for (k, &member) in order.iter().enumerate() {
                while held[k] * max_weight < round * members[member].weight {
                    while ring[cursor[k].position as usize] != NO_MEMBER {
                        cursor[k].advance();
                    }
                    ring[cursor[k].position as usize] = member as u32;
                    (held[k], filled) = (held[k] + 1, filled + 1);
                    if filled == size {
                        return ring;
                    }
                }
            }
        }
        unreachable!()
    }

    #[test]
    fn finishing_from_the_free_list_gives_the_walked_ring() {
        for (size, n, weights) in
            [(251, 3, 1), (4_099, 10, 4), (65_537, 100, 1), (65_537, 37, 7), (131_071, 1, 1)]
        {
            let members: Vec<Member> = (0..n).map(|i| member(i, 1 + i % weights)).collect();
            assert_eq!(build(&members, size), walk_only(&members, size), "M={size} N={n}");
        }
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537) && is_prime(655_373) && is_prime(2) && is_prime(13));
        assert!(!is_prime(0) && !is_prime(1) && !is_prime(65_536) && !is_prime(65_539 * 3));
    }

    #[test]
    fn equal_weights_give_floor_or_ceil_of_m_over_n() {
        for n in [1u32, 2, 3, 7, 10, 100, 1000] {
            let members: Vec<_> = (0..n).map(|i| member(i, 1)).collect();
            let ring = build(&members, M);
            assert!(ring.iter().all(|&s| s < n), "ring has empty slots for n={n}");
            let (lo, hi) = (u64::from(M / n), u64::from(M.div_ceil(n)));
            for (i, c) in shares(&ring, n as usize).into_iter().enumerate() {
                assert!((lo..=hi).contains(&c), "n={n}: member {i} holds {c}, want {lo}..={hi}");
            }
        }
    }

    #[test]
    fn weights_are_respected_within_one_percent() {
        for weights in [vec![1, 2, 1], vec![1, 2, 3, 4], vec![100, 1, 50, 25, 7], vec![3; 5]] {
            let members: Vec<_> = weights.iter().enumerate().map(|(i, &w)| member(i as u32, w)).collect();
            let ring = build(&members, M);
            let total: u32 = weights.iter().sum();
            for (i, c) in shares(&ring, members.len()).into_iter().enumerate() {
                let want = f64::from(weights[i]) / f64::from(total);
                let got = c as f64 / f64::from(M);
                assert!(
                    (got - want).abs() <= 0.01 * want.max(0.01),
                    "{weights:?}: member {i} got {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn zero_weight_gets_nothing_and_no_members_means_empty() {
        let members = [member(0, 0), member(1, 5), member(2, 0)];
        let ring = build(&members, 13);
        assert!(ring.iter().all(|&s| s == 1));
        assert!(build(&[member(0, 0)], 13).iter().all(|&s| s == NO_MEMBER));
        assert!(build(&[], 13).iter().all(|&s| s == NO_MEMBER));
    }

    #[test]
    fn removing_one_of_100_moves_its_slots_plus_at_most_one_percent() {
        let members: Vec<_> = (0..100).map(|i| member(i, 1)).collect();
        let before = build(&members, M);
        for gone in [0usize, 37, 99] {
            let rest: Vec<_> =
                members.iter().copied().enumerate().filter(|&(i, _)| i != gone).map(|(_, m)| m).collect();
            let after = build(&rest, M);
            let own = before.iter().filter(|&&s| s as usize == gone).count();
            let moved = changed_slots(&before, &members, &after, &rest).count();
            let others_moved = moved - own;
            let others = M as usize - own;
            assert!(
                others_moved * 100 <= others,
                "removing member {gone}: {others_moved} of {others} other slots moved (> 1%)"
            );
        }
    }

    #[test]
    fn ring_does_not_depend_on_input_order() {
        let mut members: Vec<_> = (0..50).map(|i| member(i, 1 + i % 4)).collect();
        members.push(Member { id: "[fd77::5]:443".parse().unwrap(), weight: 2 });
        let by_id =
            |ring: Vec<u32>, ms: &[Member]| ring.into_iter().map(|s| ms[s as usize].id).collect::<Vec<_>>();
        let reference = by_id(build(&members, 4_099), &members);
        let mut shuffled = members.clone();
        shuffled.reverse();
        shuffled.swap(3, 17);
        assert_eq!(reference, by_id(build(&shuffled, 4_099), &shuffled));
    }

    #[test]
    fn duplicate_identities_hold_one_share() {
        let a = member(1, 1);
        let ring = build(&[a, member(2, 1), a], 13);
        assert!(ring.iter().all(|&s| s == 0 || s == 1));
    }

    #[test]
    fn ipv6_members_get_distinct_permutations() {
        let members: Vec<_> = (1..=3u16)
            .map(|i| Member {
                id: SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, i)), 80),
                weight: 1,
            })
            .collect();
        let counts = shares(&build(&members, M), 3);
        assert!(counts.iter().all(|&c| c == 21_845 || c == 21_846), "{counts:?}");
    }
}
