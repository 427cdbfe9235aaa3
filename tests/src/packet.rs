//! Crafted frames for fixture tests: well-formed ones from etherparse, and
//! surgical edits that make them VLAN-tagged, fragmented, optioned or broken.

use std::net::{IpAddr, SocketAddr};

use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, Icmpv6Type, PacketBuilder, PacketBuilderStep};
use lb_common::{
    types::{PROTO_TCP, PROTO_UDP},
    FlowKey,
};

pub const ETH_LEN: usize = 14;
/// Where the quoted IPv4 header starts in an untagged IPv4 [`too_big`] frame.
pub const QUOTE_V4: usize = ETH_LEN + 20 + 8;

/// What rides on IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// `syn`: a SYN (no ACK); otherwise an established segment (ACK set).
    Tcp {
        syn: bool,
    },
    Udp,
}

/// A TCP or UDP frame, described by what a test cares about.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlans: Vec<u16>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub l4: L4,
    pub payload: Vec<u8>,
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("bad socket address {s}: {e}"))
}

impl Frame {
    pub fn new(src: SocketAddr, dst: SocketAddr, l4: L4) -> Self {
        Self {
            src_mac: [0x02, 0x77, 0, 0, 0, 0xfe],
            dst_mac: [0x02, 0x77, 0, 0, 0, 0x01],
            vlans: Vec::new(),
            src,
            dst,
            l4,
            payload: b"always on".to_vec(),
        }
    }

    pub fn tcp(src: &str, dst: &str) -> Self {
        Self::new(addr(src), addr(dst), L4::Tcp { syn: false })
    }

    pub fn syn(src: &str, dst: &str) -> Self {
        Self::new(addr(src), addr(dst), L4::Tcp { syn: true })
    }

    pub fn udp(src: &str, dst: &str) -> Self {
        Self::new(addr(src), addr(dst), L4::Udp)
    }

    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push(id);
        self
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        (self.src_mac, self.dst_mac) = (src, dst);
        self
    }

    /// A payload of `n` bytes (a repeating pattern, so a misplaced byte shows).
    pub fn payload_len(mut self, n: usize) -> Self {
        self.payload = (0..n).map(|i| (i % 251) as u8).collect();
        self
    }

    /// A payload that makes the whole frame `len` bytes long.
    pub fn frame_len(self, len: usize) -> Self {
        let headers = self.clone().payload_len(0).bytes().len();
        assert!(len >= headers, "a frame of {len} bytes cannot hold its {headers} bytes of headers");
        self.payload_len(len - headers)
    }

    /// The key the balancer's connection table has for this frame's flow.
    pub fn flow_key(&self) -> FlowKey {
        let proto = match self.l4 {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp => PROTO_UDP,
        };
        FlowKey::new(self.src.ip(), self.src.port(), self.dst.ip(), self.dst.port(), proto)
    }

    /// Offset of the IP header.
    pub fn l3(&self) -> usize {
        ETH_LEN + 4 * self.vlans.len()
    }

    /// Offset of the TCP or UDP header (no IPv4 options, no IPv6 extension headers).
    pub fn l4(&self) -> usize {
        self.l3() + if self.dst.is_ipv4() { 20 } else { 40 }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let ip: PacketBuilderStep<_> = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
            _ => panic!("mixed address families {} -> {}", self.src, self.dst),
        };
        let (sport, dport) = (self.src.port(), self.dst.port());
        let mut out = Vec::new();
        match self.l4 {
            L4::Tcp { syn: true } => ip.tcp(sport, dport, 1000, 64240).syn().write(&mut out, &self.payload),
            L4::Tcp { syn: false } => ip.tcp(sport, dport, 1000, 64240).ack(1).write(&mut out, &self.payload),
            L4::Udp => ip.udp(sport, dport).write(&mut out, &self.payload),
        }
        .expect("etherparse writes a well-formed frame");
        // Tags go between the source MAC and the EtherType, outermost first.
        for (i, &id) in self.vlans.iter().enumerate() {
            let tpid: u16 = if i == 0 && self.vlans.len() > 1 { 0x88a8 } else { 0x8100 };
            let at = 12 + 4 * i;
            let tag = [tpid.to_be_bytes(), id.to_be_bytes()].concat();
            out.splice(at..at, tag);
        }
        out
    }
}

/// An ICMP fragmentation-needed (IPv4) or packet-too-big (IPv6) error from
/// `router` to the sender of `quoted`, with the MACs of a [`Frame::new`],
/// quoting the first `quote_len` bytes of `quoted`'s IP packet.
pub fn too_big(router: IpAddr, quoted: &Frame, mtu: u16, quote_len: usize) -> Vec<u8> {
    let inner = quoted.bytes();
    let ip_packet = &inner[quoted.l3()..];
    let quote = &ip_packet[..quote_len.min(ip_packet.len())];
    let template = Frame::new(quoted.dst, quoted.src, quoted.l4);
    let eth = PacketBuilder::ethernet2(template.src_mac, template.dst_mac);
    let mut out = Vec::new();
    match (router, quoted.src.ip()) {
        (IpAddr::V4(r), IpAddr::V4(s)) => {
            let frag_needed = DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu };
            eth.ipv4(r.octets(), s.octets(), 64)
                .icmpv4(Icmpv4Type::DestinationUnreachable(frag_needed))
                .write(&mut out, quote)
        }
        (IpAddr::V6(r), IpAddr::V6(s)) => eth
            .ipv6(r.octets(), s.octets(), 64)
            .icmpv6(Icmpv6Type::PacketTooBig { mtu: u32::from(mtu) })
            .write(&mut out, quote),
        _ => panic!("mixed address families {router} -> {}", quoted.src),
    }
    .expect("etherparse writes a well-formed frame");
    out
}

/// The frame with its MAC addresses replaced: what DSR forwarding must produce.
pub fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out
}

/// Adds `words` 32-bit words of IPv4 options (NOPs) after the base header.
pub fn add_ipv4_options(frame: &mut Vec<u8>, l3: usize, words: u8) {
    frame.splice(l3 + 20..l3 + 20, std::iter::repeat_n(1u8, 4 * usize::from(words)));
    frame[l3] = 0x40 | (5 + words);
    let total = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) + 4 * u16::from(words);
    frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
}

/// Sets the IPv4 flags/fragment-offset field (e.g. 0x2000 = more fragments, offset 0).
pub fn set_ipv4_frag(frame: &mut [u8], l3: usize, frags: u16) {
    frame[l3 + 6..l3 + 8].copy_from_slice(&frags.to_be_bytes());
}

pub fn set_ipv4_total_len(frame: &mut [u8], l3: usize, len: u16) {
    frame[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn set_ipv4_ihl(frame: &mut [u8], l3: usize, ihl: u8) {
    frame[l3] = (frame[l3] & 0xf0) | (ihl & 0x0f);
}

/// Adds `n` to the IPv4 total length or the IPv6 payload length.
fn grow_ip_len(frame: &mut [u8], l3: usize, n: u16) {
    let at = if frame[l3] >> 4 == 4 { l3 + 2 } else { l3 + 4 };
    let len = u16::from_be_bytes([frame[at], frame[at + 1]]) + n;
    frame[at..at + 2].copy_from_slice(&len.to_be_bytes());
}

/// Sets the data offset (header length in 32-bit words) of the TCP header at `l4`.
pub fn set_tcp_doff(frame: &mut [u8], l4: usize, doff: u8) {
    frame[l4 + 12] = (frame[l4 + 12] & 0x0f) | (doff << 4);
}

/// Adds `words` 32-bit words of TCP options (NOPs) after the TCP header at
/// `l4` (which must have none yet) of the IP packet at `l3`.
pub fn add_tcp_options(frame: &mut Vec<u8>, l3: usize, l4: usize, words: u8) {
    frame.splice(l4 + 20..l4 + 20, std::iter::repeat_n(1u8, 4 * usize::from(words)));
    set_tcp_doff(frame, l4, 5 + words);
    grow_ip_len(frame, l3, 4 * u16::from(words));
}

/// Inserts 8-byte IPv6 extension headers of the given kinds (0 hop-by-hop,
/// 43 routing, 44 fragment, 60 destination options) after the fixed header.
pub fn add_ipv6_ext(frame: &mut Vec<u8>, l3: usize, kinds: &[u8]) {
    let upper = frame[l3 + 6];
    let mut headers = Vec::new();
    for (i, _) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(upper);
        headers.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
    }
    if let Some(&first) = kinds.first() {
        frame[l3 + 6] = first;
    }
    frame.splice(l3 + 40..l3 + 40, headers);
    let len = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) + 8 * kinds.len() as u16;
    frame[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes());
}

/// The RFC 1071 checksum of `header` (its checksum field zero), as a number.
pub fn internet_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 =
        header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sets the IPv4 TOS byte (DSCP and ECN) and the DF bit of the IPv4 packet at
/// `l3`, keeping its header checksum right.
pub fn set_ipv4_tos_df(frame: &mut [u8], l3: usize, tos: u8, df: bool) {
    frame[l3 + 1] = tos;
    frame[l3 + 6] = (frame[l3 + 6] & !0x40) | if df { 0x40 } else { 0 };
    frame[l3 + 10..l3 + 12].fill(0);
    let sum = internet_checksum(&frame[l3..l3 + 20]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Sets the traffic class of the IPv6 packet at `l3`.
pub fn set_ipv6_traffic_class(frame: &mut [u8], l3: usize, class: u8) {
    frame[l3] = 0x60 | class >> 4;
    frame[l3 + 1] = (class << 4) | (frame[l3 + 1] & 0x0f);
}

/// What the balancer's tunnel mode must make of `frame` (whose IP packet
/// starts at `l3`): the same Ethernet header (tags included) re-addressed to
/// `dst_mac` from `src_mac`, an outer header `src` → `dst` as the mode
/// writes it (TTL 64, the inner TOS / traffic class, IPv4: the inner DF and
/// identification, IPv6: flow label 0), then the inner IP packet unchanged.
pub fn encapsulated(
    frame: &[u8],
    l3: usize,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
) -> Vec<u8> {
    let inner = &frame[l3..];
    let mut out = with_macs(&frame[..l3], dst_mac, src_mac);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + inner.len()).expect("an IPv4 packet");
            let mut h = vec![0x45, inner[1]];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&inner[4..6]);
            h.extend_from_slice(&[inner[6] & 0x40, 0, 64, 4, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let sum = internet_checksum(&h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let class = inner[0] << 4 | inner[1] >> 4;
            let payload = u16::try_from(inner.len()).expect("an IPv6 packet");
            out.extend_from_slice(&[0x60 | class >> 4, class << 4, 0, 0]);
            out.extend_from_slice(&payload.to_be_bytes());
            out.extend_from_slice(&[41, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families {src} -> {dst}"),
    }
    out.extend_from_slice(inner);
    out
}

/// The RFC 1071 sum over the TCP or UDP segment of the IP packet at `l3`
/// (no options, no extension headers) and its pseudo-header, checksum field
/// included: 0 when the segment's checksum is right. Computed from scratch,
/// to judge checksums the program updated incrementally.
pub fn transport_checksum(frame: &[u8], l3: usize) -> u16 {
    let (mut pseudo, l4) = if frame[l3] >> 4 == 4 {
        (frame[l3 + 12..l3 + 20].to_vec(), l3 + 20)
    } else {
        (frame[l3 + 8..l3 + 40].to_vec(), l3 + 40)
    };
    let proto = if frame[l3] >> 4 == 4 { frame[l3 + 9] } else { frame[l3 + 6] };
    let segment = &frame[l4..];
    let len = if proto == PROTO_UDP {
        usize::from(u16::from_be_bytes([segment[4], segment[5]]))
    } else if frame[l3] >> 4 == 4 {
        usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]])) - 20
    } else {
        usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]))
    };
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    pseudo.extend_from_slice(&segment[..len]);
    internet_checksum(&pseudo)
}

/// Sets the flags byte of the TCP header of the IP packet at `l3` (no
/// options), with a checksum computed afresh.
pub fn set_tcp_flags(frame: &mut [u8], l3: usize, flags: u8) {
    let l4 = l3 + if frame[l3] >> 4 == 4 { 20 } else { 40 };
    frame[l4 + 13] = flags;
    frame[l4 + 16..l4 + 18].fill(0);
    let sum = transport_checksum(frame, l3);
    frame[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
}
