//! The Internet checksum (RFC 1071) of the headers the program writes (an
//! IPv4 header; the ICMP errors of `too_big.rs`, by `fold`), and incremental
//! updates (RFC 1624) of checksums over fields it rewrites.
//! One's-complement sums do not care about byte order, so the header's words
//! are summed as they lie in memory and the result is stored the same way.

use network_types::ip::Ipv4Hdr;

/// The checksum field for `header` (its own checksum field must be zero).
#[inline(always)]
pub fn ipv4_header(header: &Ipv4Hdr) -> [u8; 2] {
    // SAFETY: Ipv4Hdr is 20 bytes of plain integers.
    let bytes = unsafe { &*(header as *const Ipv4Hdr as *const [u8; Ipv4Hdr::LEN]) };
    let mut sum = 0u32;
    for i in 0..Ipv4Hdr::LEN / 2 {
        sum += u32::from(u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]));
    }
    fold(u64::from(sum))
}

/// An incremental checksum update (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`):
/// the one's-complement sum of `~old + new` over every 32-bit word that
/// changes. A 32-bit one's-complement sum folds to the 16-bit one, and like
/// the checksum it does not care about byte order as long as the words are
/// taken as they lie in memory and the field is read and written the same way.
#[derive(Clone, Copy)]
pub struct Delta(u64);

impl Delta {
    pub const NONE: Self = Self(0);

    /// A word changes from `old` to `new`. A few dozen words cannot overflow the sum.
    #[inline(always)]
    pub const fn word(self, old: u32, new: u32) -> Self {
        Self(self.0 + !old as u64 + new as u64)
    }

    /// An IPv6 address changes.
    #[inline(always)]
    pub const fn words(self, old: &[u32; 4], new: &[u32; 4]) -> Self {
        self.word(old[0], new[0]).word(old[1], new[1]).word(old[2], new[2]).word(old[3], new[3])
    }

    /// The checksum field `check` (as it lies in memory) once the words have changed.
    #[inline(always)]
    pub const fn apply(self, check: u16) -> u16 {
        u16::from_ne_bytes(fold(self.0 + !check as u64))
    }
}

/// The checksum field for data whose 32-bit words, loaded as they lie in
/// memory, add up to `sum` (a one's-complement sum may be taken over wider
/// words and folded: RFC 1071, 2(B)).
/// Two folds of each width are enough: the second 32-bit fold leaves at most
/// 2^32, whose two 16-bit folds end in 1.
#[inline(always)]
pub const fn fold(sum: u64) -> [u8; 2] {
    let mut sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_ne_bytes()
}
