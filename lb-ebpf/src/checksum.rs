//! The Internet checksum (RFC 1071) of the headers the program writes: an
//! IPv4 header, and the ICMP errors of `too_big.rs` (`fold`).
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
    // Ten 16-bit words carry at most 4 bits out: two folds are always enough.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_ne_bytes()
}

/// The checksum field for data whose 32-bit words, loaded as they lie in
/// memory, add up to `sum` (a one's-complement sum may be taken over wider
/// words and folded: RFC 1071, 2(B)).
#[inline(always)]
pub fn fold(sum: u64) -> [u8; 2] {
    let mut sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_ne_bytes()
}
