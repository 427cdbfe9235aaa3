//! Bounds-checked header access and the parser: Ethernet, up to two VLAN tags,
//! IPv4 (options skipped, fragments flagged), IPv6 (hop-by-hop, routing and
//! destination-options headers walked up to a bound), TCP and UDP.
//!
//! Policy for what cannot be balanced, in one place:
//! - not IP, or IP carrying neither TCP nor UDP: `Packet::Other`, passed untouched;
//! - a runt Ethernet frame or a truncated VLAN tag: `Err(Truncated)`, dropped;
//! - an IP header that is truncated or inconsistent (IHL < 5, lengths beyond the
//!   frame): `Err`, dropped; the kernel would drop it too;
//! - fragments, truncated or over-long IPv6 extension chains, truncated TCP/UDP
//!   headers, a TCP data offset below 5 or past the IP packet:
//!   `Packet::Unbalanceable`, dropped when addressed to a VIP address, passed
//!   otherwise.
//!
//! Headers are read from the frame's linear part only. A multi-buffer (jumbo)
//! frame continues in fragments, which count towards its length but are never
//! read.
//!
//! ICMP fragmentation-needed (IPv4) and packet-too-big (IPv6) errors sent to
//! the address that sent the packet they quote are `Packet::TooBig`: about a
//! VIP flow, they belong to its backend (path MTU discovery). A quote cut short
//! or malformed is `Unbalanceable`. Other ICMP is `Other`.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    sizes::MAX_IPV6_EXT_HEADERS,
    types::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP},
    DropReason, Event, FlowKey,
};
use network_types::{
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::frame::{ethernet, frame_len_reaching, ptr_at, ETH_P_IPV4, ETH_P_IPV6};

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// ICMP type and code of "fragmentation needed and DF set".
const ICMP_FRAG_NEEDED: [u8; 2] = [3, 4];
/// ICMPv6 type of "packet too big".
const ICMPV6_TOO_BIG: u8 = 2;
/// Type, code, checksum and four more bytes (unused or the MTU) before the quote.
pub const ICMP_HEADER_LEN: usize = 8;

const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;
/// More-fragments flag and fragment offset bits of the IPv4 `frags` field.
const IPV4_FRAG_MASK: u16 = 0x3fff;
/// The fragment offset bits alone.
const IPV4_FRAG_OFFSET: u16 = 0x1fff;

/// A 32-bit load from the packet at any alignment. Headers sit at any offset
/// in the frame; Rust would (rightly, for its own rules) load a `[u8; 4]` byte by
/// byte, while the kernel allows misaligned packet loads. Assembly states the
/// load exactly, with no alignment promise to the compiler. `p` must have passed
/// a bounds check for 4 bytes.
#[inline(always)]
pub fn load_u32(p: *const u8) -> u32 {
    let v: u64;
    // SAFETY: a 4-byte read the caller bounds-checked; no other effect.
    unsafe {
        core::arch::asm!("{v} = *(u32 *)({p} + 0)", p = in(reg) p, v = out(reg) v, options(readonly, nostack))
    };
    v as u32
}

/// As [`load_u32`], 16 bits.
#[inline(always)]
pub fn load_u16(p: *const u8) -> u16 {
    let v: u64;
    // SAFETY: a 2-byte read the caller bounds-checked; no other effect.
    unsafe {
        core::arch::asm!("{v} = *(u16 *)({p} + 0)", p = in(reg) p, v = out(reg) v, options(readonly, nostack))
    };
    v as u16
}

/// A TCP or UDP packet, ready for the VIP lookup.
// C layout, `len`, `syn` and `close` sharing a word and `note` on its own:
// the verifier's work depends on which fields are copied together (this
// order: 12k instructions processed; `syn` beside `note`: 27k). No header
// offsets: a number that differs on each path through the parser (VLAN tags,
// options, extension headers) keeps the verifier from pruning any path
// after it (an `l4` field here took the program from 19k to 52k).
#[repr(C)]
pub struct Flow {
    pub key: FlowKey,
    /// Bytes of the frame, fragments of a multi-buffer frame included.
    pub len: u32,
    /// A TCP SYN without ACK: always (re)selects a backend.
    pub syn: bool,
    /// A TCP FIN or RST: the flow is closing (NAT marks its mapping).
    pub close: bool,
    /// Something about the packet worth counting once it has been forwarded.
    pub note: Option<Event>,
}

pub enum Packet {
    Flow(Flow),
    /// Cannot be balanced; `addr`/`family` say where it was going.
    Unbalanceable {
        addr: [u32; 4],
        family: u8,
        reason: DropReason,
        passed: Event,
    },
    /// An ICMP error saying a packet was too big; `flow` is the flow that
    /// packet was a reply in, as the client sends it (the quote reversed).
    TooBig(Flow),
    /// Not for the balancer at all.
    Other,
}

type ParseResult = Result<Packet, DropReason>;

#[inline(always)]
pub fn packet(ctx: &XdpContext) -> ParseResult {
    let (ether_type, offset) = ethernet(ctx).ok_or(DropReason::Truncated)?;
    match ether_type {
        ETH_P_IPV4 => ipv4(ctx, offset),
        ETH_P_IPV6 => ipv6(ctx, offset),
        _ => Ok(Packet::Other),
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize) -> ParseResult {
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3).ok_or(DropReason::Truncated)?;
    let ip = unsafe { &*ip };
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN {
        return Err(DropReason::BadIpHeader);
    }
    let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
    if total_len < header_len {
        return Err(DropReason::BadIpLength);
    }
    let len = frame_len_reaching(ctx, l3 + total_len).ok_or(DropReason::BadIpLength)?;
    let addr = |a: &[u8; 4]| [load_u32(a.as_ptr()), 0, 0, 0];
    let (src, dst) = (addr(&ip.src_addr), addr(&ip.dst_addr));
    if u16::from_be_bytes(ip.frags) & IPV4_FRAG_MASK != 0 {
        return Ok(Packet::Unbalanceable {
            addr: dst,
            family: FAMILY_V4,
            reason: DropReason::Fragment,
            passed: Event::FragmentPassed,
        });
    }
    if ip.proto == IPPROTO_ICMP {
        return too_big_v4(ctx, l3 + header_len, l3 + total_len, len, dst);
    }
    let note = (header_len > Ipv4Hdr::LEN).then_some(Event::Ipv4Options);
    transport(ctx, l3 + header_len, l3 + total_len, len, ip.proto, src, dst, FAMILY_V4, note)
}

/// An ICMP message at `l4` (the IP packet ends at `ip_end`, the frame is
/// `len` bytes, sent to `dst`).
#[inline(always)]
fn too_big_v4(ctx: &XdpContext, l4: usize, ip_end: usize, len: u32, dst: [u32; 4]) -> ParseResult {
    let cut_short = quote_cut_short(dst, FAMILY_V4);
    let Some(type_code) = icmp_type_code(ctx, l4, ip_end) else { return Ok(cut_short) };
    if type_code != ICMP_FRAG_NEEDED {
        return Ok(Packet::Other);
    }
    let quote = l4 + ICMP_HEADER_LEN;
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, quote).filter(|_| quote + Ipv4Hdr::LEN <= ip_end) else {
        return Ok(cut_short);
    };
    let ip = unsafe { &*ip };
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN {
        return Ok(cut_short);
    }
    // A later fragment carries no ports where they would be read.
    if u16::from_be_bytes(ip.frags) & IPV4_FRAG_OFFSET != 0 {
        return Ok(Packet::Other);
    }
    let src = [load_u32(ip.src_addr.as_ptr()), 0, 0, 0];
    let to = [load_u32(ip.dst_addr.as_ptr()), 0, 0, 0];
    quoted_ports(ctx, quote + header_len, ip_end, len, ip.proto, src, to, dst, FAMILY_V4)
}

/// Type and code of the ICMP (or ICMPv6) message at `l4`, if its whole header
/// is within the IP packet (which ends at `ip_end`).
#[inline(always)]
fn icmp_type_code(ctx: &XdpContext, l4: usize, ip_end: usize) -> Option<[u8; 2]> {
    // The whole header, not a byte: a one-byte bound check compiles to a
    // comparison the verifier does not take as a bound.
    let header = ptr_at::<[u8; ICMP_HEADER_LEN]>(ctx, l4).filter(|_| l4 + ICMP_HEADER_LEN <= ip_end)?;
    Some(unsafe { [(*header)[0], (*header)[1]] })
}

/// What a quote that cannot be read becomes: unbalanceable, to `dst`.
#[inline(always)]
fn quote_cut_short(dst: [u32; 4], family: u8) -> Packet {
    Packet::Unbalanceable {
        addr: dst,
        family,
        reason: DropReason::Truncated,
        passed: Event::UnclassifiedPassed,
    }
}

/// The ports of a quoted TCP or UDP packet `src` → `to` at `l4` (the first four
/// bytes are all an ICMP quote surely holds), turned into the flow it answered.
/// Only a quote of a packet this address (`dst`) sent is about one of its flows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn quoted_ports(
    ctx: &XdpContext,
    l4: usize,
    ip_end: usize,
    len: u32,
    proto: u8,
    src: [u32; 4],
    to: [u32; 4],
    dst: [u32; 4],
    family: u8,
) -> ParseResult {
    if (proto != PROTO_TCP && proto != PROTO_UDP) || src != dst {
        return Ok(Packet::Other);
    }
    let Some(ports) = ptr_at::<[u8; 4]>(ctx, l4).filter(|_| l4 + 4 <= ip_end) else {
        return Ok(quote_cut_short(dst, family));
    };
    let ports = ports as *const u8;
    let (sport_be, dport_be) = (load_u16(ports), load_u16(unsafe { ports.add(2) }));
    let key = FlowKey { src: to, dst, sport_be: dport_be, dport_be: sport_be, proto, family, _pad: [0; 2] };
    Ok(Packet::TooBig(Flow { key, len, syn: false, close: false, note: Some(Event::IcmpTooBig) }))
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize) -> ParseResult {
    let ip: *const Ipv6Hdr = ptr_at(ctx, l3).ok_or(DropReason::Truncated)?;
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return Err(DropReason::BadIpHeader);
    }
    let end = l3 + Ipv6Hdr::LEN + usize::from(u16::from_be_bytes(ip.payload_len));
    let len = frame_len_reaching(ctx, end).ok_or(DropReason::BadIpLength)?;
    let (src, dst) = (v6_words(&ip.src_addr), v6_words(&ip.dst_addr));
    let unbalanceable =
        |reason, passed| Packet::Unbalanceable { addr: dst, family: FAMILY_V6, reason, passed };

    let mut next = ip.next_hdr;
    let mut offset = l3 + Ipv6Hdr::LEN;
    let mut note = None;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Every one of these starts with (next header, length in 8-byte units minus one).
                let Some(ext) = ptr_at::<[u8; 2]>(ctx, offset) else {
                    return Ok(unbalanceable(DropReason::Truncated, Event::UnclassifiedPassed));
                };
                let ext = unsafe { *ext };
                next = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
                note = Some(Event::Ipv6ExtHeaders);
            }
            _ => break,
        }
    }
    match next {
        IPPROTO_FRAGMENT => Ok(unbalanceable(DropReason::Fragment, Event::FragmentPassed)),
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
            Ok(unbalanceable(DropReason::Ipv6ExtChain, Event::UnclassifiedPassed))
        }
        IPPROTO_ICMPV6 => too_big_v6(ctx, offset, end, len, dst),
        _ => transport(ctx, offset, end, len, next, src, dst, FAMILY_V6, note),
    }
}

/// An ICMPv6 message at `l4` (the IP packet ends at `ip_end`, the frame is
/// `len` bytes, sent to `dst`). The quoted packet's own extension headers are
/// not walked: a quote with any is `Other`.
#[inline(always)]
fn too_big_v6(ctx: &XdpContext, l4: usize, ip_end: usize, len: u32, dst: [u32; 4]) -> ParseResult {
    let cut_short = quote_cut_short(dst, FAMILY_V6);
    let Some([icmp_type, _]) = icmp_type_code(ctx, l4, ip_end) else { return Ok(cut_short) };
    if icmp_type != ICMPV6_TOO_BIG {
        return Ok(Packet::Other);
    }
    let quote = l4 + ICMP_HEADER_LEN;
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, quote).filter(|_| quote + Ipv6Hdr::LEN <= ip_end) else {
        return Ok(cut_short);
    };
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return Ok(cut_short);
    }
    let (src, to) = (v6_words(&ip.src_addr), v6_words(&ip.dst_addr));
    quoted_ports(ctx, quote + Ipv6Hdr::LEN, ip_end, len, ip.next_hdr, src, to, dst, FAMILY_V6)
}

/// An IPv6 address in the packet as the four words of a key.
#[inline(always)]
fn v6_words(a: &[u8; 16]) -> [u32; 4] {
    let p = a.as_ptr();
    unsafe { [load_u32(p), load_u32(p.add(4)), load_u32(p.add(8)), load_u32(p.add(12))] }
}

/// Reads the ports (and TCP flags) at `l4`; the header must end within the
/// IP packet (`ip_end`), TCP options included. The frame is `len` bytes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transport(
    ctx: &XdpContext,
    l4: usize,
    ip_end: usize,
    len: u32,
    proto: u8,
    src: [u32; 4],
    dst: [u32; 4],
    family: u8,
    note: Option<Event>,
) -> ParseResult {
    let unbalanceable =
        |reason| Packet::Unbalanceable { addr: dst, family, reason, passed: Event::UnclassifiedPassed };
    let (sport_be, dport_be, syn, close) = match proto {
        PROTO_TCP => {
            let Some(tcp) = ptr_at::<TcpHdr>(ctx, l4).filter(|_| l4 + TcpHdr::LEN <= ip_end) else {
                return Ok(unbalanceable(DropReason::Truncated));
            };
            let tcp = unsafe { &*tcp };
            // The high nibble of byte 12 is the header's length in words. Its
            // end is compared, never read: in a multi-buffer frame the options
            // may continue into a fragment.
            let header_len = usize::from(unsafe { *(tcp as *const TcpHdr as *const u8).add(12) } >> 4) * 4;
            if header_len < TcpHdr::LEN || l4 + header_len > ip_end {
                return Ok(unbalanceable(DropReason::BadL4Header));
            }
            // Byte 13 of the TCP header holds the flags (CWR..FIN).
            let flags = unsafe { *(tcp as *const TcpHdr as *const u8).add(13) };
            let syn = flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
            let close = flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0;
            (load_u16(tcp.source.as_ptr()), load_u16(tcp.dest.as_ptr()), syn, close)
        }
        PROTO_UDP => {
            let Some(udp) = ptr_at::<UdpHdr>(ctx, l4).filter(|_| l4 + UdpHdr::LEN <= ip_end) else {
                return Ok(unbalanceable(DropReason::Truncated));
            };
            let udp = unsafe { &*udp };
            (load_u16(udp.src.as_ptr()), load_u16(udp.dst.as_ptr()), false, false)
        }
        _ => return Ok(Packet::Other),
    };
    Ok(Packet::Flow(Flow {
        key: FlowKey { src, dst, sport_be, dport_be, proto, family, _pad: [0; 2] },
        len,
        syn,
        close,
        note,
    }))
}
