//! Where `mode = "tunnel"`'s outer packets come from.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Where encapsulated packets (`mode = "tunnel"`) come from, as Katran
/// derives it: a prefix per family whose host bits the flow fills. A backend
/// set up for Katran's sources (172.16.0.0/16, 100::/64) takes ours, and its
/// NIC's receive hashing, which sees only the outer header, spreads flows
/// over its queues. Words in network order, as addresses in the maps.
///
/// - IPv4: the prefix, host bits = the client's port XOR the low 16 bits of
///   the client's address (a prefix longer than /16 keeps the low bits of that).
/// - IPv6: the prefix, host bits of the last word = the client's last 32 bits
///   XOR its port; bits 64–95 are the prefix's (zero for a /64).
///
/// Katran, on a little-endian host, XORs the port in byte-swapped; both keep
/// the prefix, which is all a backend checks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelSource {
    pub v4_prefix: u32,
    /// The IPv4 bits the flow sets.
    pub v4_host: u32,
    pub v6_prefix: [u32; 4],
    /// The bits of the IPv6 address's last word the flow sets.
    pub v6_host: u32,
    pub _pad: u32,
}

impl TunnelSource {
    /// Katran's: 172.16.0.0/16 and 100::/64.
    pub const KATRAN: Self =
        Self::new(Ipv4Addr::new(172, 16, 0, 0), 16, Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64);

    /// From prefixes (IPv4 /16../32, IPv6 /64../128; the agent's config
    /// checks the lengths). Host bits of the prefixes are ignored.
    pub const fn new(v4: Ipv4Addr, v4_len: u8, v6: Ipv6Addr, v6_len: u8) -> Self {
        let v4_host = host_mask(v4_len as u32);
        let v6_host = host_mask((v6_len as u32).saturating_sub(96));
        let o = v6.octets();
        let w = [
            u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
            u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
            u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
            u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
        ];
        Self {
            v4_prefix: u32::from_ne_bytes(v4.octets()) & !v4_host,
            v4_host,
            v6_prefix: [w[0], w[1], w[2], w[3] & !v6_host],
            v6_host,
            _pad: 0,
        }
    }

    /// The outer source for a client at `client` (word 0 of its address), port `sport_be`.
    #[inline(always)]
    pub const fn v4(&self, client: u32, sport_be: u16) -> u32 {
        self.v4_prefix | ((client ^ port_word(sport_be)) & self.v4_host)
    }

    /// The outer source for a client at `client`, port `sport_be`.
    #[inline(always)]
    pub const fn v6(&self, client: &[u32; 4], sport_be: u16) -> [u32; 4] {
        let p = self.v6_prefix;
        [p[0], p[1], p[2], p[3] | ((client[3] ^ port_word(sport_be)) & self.v6_host)]
    }
}

/// The network-order word of the last `32 - prefix_len` bits of an address
/// (`prefix_len` up to 32; 0 beyond).
const fn host_mask(prefix_len: u32) -> u32 {
    let bits = match u32::MAX.checked_shr(prefix_len) {
        Some(bits) => bits,
        None => 0,
    };
    u32::from_ne_bytes(bits.to_be_bytes())
}

/// A network-order port as the low 16 bits of a network-order address word.
#[inline(always)]
const fn port_word(port_be: u16) -> u32 {
    let b = port_be.to_ne_bytes();
    u32::from_ne_bytes([0, 0, b[0], b[1]])
}

const _: () = assert!(core::mem::size_of::<TunnelSource>() == 32);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no implicit padding (size pinned above).
unsafe impl aya::Pod for TunnelSource {}

#[cfg(test)]
mod tests {
    use core::net::{Ipv4Addr, Ipv6Addr};

    use super::TunnelSource;
    use crate::types::{addr_words, words_addr, FAMILY_V4, FAMILY_V6};

    fn v4(source: &TunnelSource, client: &str, port: u16) -> Ipv4Addr {
        let (words, _) = addr_words(client.parse().unwrap());
        match words_addr([source.v4(words[0], port.to_be()), 0, 0, 0], FAMILY_V4) {
            core::net::IpAddr::V4(a) => a,
            other => panic!("{other}"),
        }
    }

    fn v6(source: &TunnelSource, client: &str, port: u16) -> Ipv6Addr {
        let (words, _) = addr_words(client.parse().unwrap());
        match words_addr(source.v6(&words, port.to_be()), FAMILY_V6) {
            core::net::IpAddr::V6(a) => a,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn katran_sources_keep_the_prefix_and_xor_the_port_into_the_host_bits() {
        let k = TunnelSource::KATRAN;
        // 0x0102 ^ 0x3039 (12345) = 0x313b: 172.16.49.59.
        assert_eq!(v4(&k, "192.0.1.2", 12345), Ipv4Addr::new(172, 16, 0x31, 0x3b));
        assert_eq!(v4(&k, "10.77.2.7", 40000), Ipv4Addr::new(172, 16, 0x02 ^ 0x9c, 0x07 ^ 0x40));
        // The last 32 bits 0x0a0b0c0d ^ 0x3039; bits 64–95 zero.
        let a = v6(&k, "2001:db8::a0b:c0d", 12345);
        assert_eq!(a, Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0x0a0b, 0x0c0d ^ 0x3039));
    }

    #[test]
    fn longer_prefixes_keep_only_their_host_bits_of_the_derivation() {
        let s = TunnelSource::new(Ipv4Addr::new(10, 77, 174, 0), 24, "fd77::174:0".parse().unwrap(), 112);
        assert_eq!(v4(&s, "10.77.2.7", 40000), Ipv4Addr::new(10, 77, 174, 0x07 ^ 0x40));
        assert_eq!(v6(&s, "fd77::2:10", 40000), "fd77::174:9c50".parse::<Ipv6Addr>().unwrap());
        // A /32 and a /128 are one address; host bits written in a prefix are ignored.
        let one = TunnelSource::new(Ipv4Addr::new(10, 77, 174, 9), 32, "fd77::174:9".parse().unwrap(), 128);
        assert_eq!(v4(&one, "10.77.2.7", 40000), Ipv4Addr::new(10, 77, 174, 9));
        assert_eq!(v6(&one, "fd77::2:10", 40000), "fd77::174:9".parse::<Ipv6Addr>().unwrap());
        let sloppy =
            TunnelSource::new(Ipv4Addr::new(10, 77, 174, 99), 24, "fd77::174:99".parse().unwrap(), 112);
        assert_eq!(sloppy, s);
    }
}
