//! `tunnel`: the client's IP packet, unchanged, inside an outer header to the
//! backend: IPv4-in-IPv4 (protocol 4) for IPv4 VIPs, IPv6-in-IPv6 (next
//! header 41) for IPv6 VIPs. The backend strips it (the `decap` program, or
//! the kernel's ipip/ip6tnl) and answers the client directly, as with DSR;
//! but the outer header names the backend, so the next hop may be a gateway.
//!
//! The frame grows at its head by the outer header (`bpf_xdp_adjust_head`);
//! the Ethernet header, VLAN tags included, moves to the new front and is
//! re-addressed to the next hop. Outer source: [`TunnelSource`] (Katran's
//! derivation). Outer TTL / hop limit 64; the TOS / traffic-class byte (DSCP
//! and ECN) is the inner packet's, so the path treats the flow as it would
//! the client's packet and congestion marks reach the backend. No flow label
//! is set: the outer source already differs per client, which is what ECMP
//! and the backend's receive hashing need.
//!
//! An outer packet longer than the egress MTU (`mtu_result` of the FIB
//! lookup, cached with the next hop) is not sent: `too_big.rs` answers the
//! client instead, so its path MTU discovery sees the tunnel's overhead.
//!
//! Lengths come from the inner header, which the parser checked against the
//! whole frame (fragments of a multi-buffer frame included): the frame's own
//! length may hold Ethernet padding that is no part of the packet.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{sizes::MAX_VLAN_TAGS, types::FAMILY_V4, Backend, DropReason, TunnelSource, Verdict};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    vlan::VlanHdr,
};

use crate::{
    checksum,
    forward::{self, Reach},
    frame::{ethernet, ptr_at, ETH_P_IPV4, ETH_P_IPV6, MACS_LEN},
    maps::CONFIG,
    parse::Flow,
    too_big,
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
/// The TTL / hop limit of the headers the program writes (here and in too_big.rs).
pub const TTL: u8 = 64;
/// The Don't Fragment bit in the first byte of the IPv4 `frags` field.
pub const IPV4_DF: u8 = 0x40;

/// What became of a tunnel VIP's packet.
pub enum Sent {
    /// Encapsulated and sent towards the backend.
    Backend(Verdict),
    /// Too big for the egress once encapsulated: answered with an ICMP error
    /// to the client (`too_big.rs`), XDP_TX.
    TooBig,
}

/// Encapsulates the packet towards `backend`; one too big for the egress
/// MTU is answered instead, unless `answerable` is false (the packet is an
/// ICMP error itself), when it drops.
#[inline(always)]
pub fn encap(
    ctx: &XdpContext,
    flow: &Flow,
    index: u32,
    backend: &Backend,
    now: u64,
    answerable: bool,
) -> Result<Sent, DropReason> {
    let source = CONFIG.get(0).ok_or(DropReason::Internal)?.tunnel;
    let hop = forward::next_hop(ctx, index, backend, now, Reach::AnyHop)?;
    // The parser walked these already; walking again is cheaper than carrying them.
    let (_, l3) = ethernet(ctx).ok_or(DropReason::Truncated)?;
    let fits = if flow.key.family == FAMILY_V4 {
        ipv4(ctx, l3, flow, backend, &source, hop.mtu)?
    } else {
        ipv6(ctx, l3, flow, backend, &source, hop.mtu)?
    };
    if !fits {
        if !answerable {
            return Err(DropReason::EncapTooBig);
        }
        too_big::answer(ctx, l3, flow, hop.mtu, now)?;
        return Ok(Sent::TooBig);
    }
    forward::send(ctx, &hop).map(Sent::Backend)
}

/// Whether an outer packet of `len` bytes exceeds the egress MTU (0: unknown).
#[inline(always)]
fn too_big(len: u32, mtu: u16) -> bool {
    mtu != 0 && len > u32::from(mtu)
}

#[inline(always)]
fn ipv4(
    ctx: &XdpContext,
    l3: usize,
    flow: &Flow,
    backend: &Backend,
    source: &TunnelSource,
    mtu: u16,
) -> Result<bool, DropReason> {
    let inner: *const Ipv4Hdr = ptr_at(ctx, l3).ok_or(DropReason::Truncated)?;
    let (tos, id, frags, inner_len) =
        unsafe { ((*inner).tos, (*inner).id, (*inner).frags, u16::from_be_bytes((*inner).tot_len)) };
    let total = inner_len.checked_add(Ipv4Hdr::LEN as u16).ok_or(DropReason::EncapNoRoom)?;
    if too_big(u32::from(total), mtu) {
        return Ok(false);
    }
    let src = source.v4(flow.key.src[0], flow.key.sport_be);
    let mut outer = Ipv4Hdr {
        vihl: 0x45,
        tos,
        tot_len: total.to_be_bytes(),
        // The inner packet's: a unique-enough identifier should a router
        // fragment the outer packet (never a fragment itself: the parser
        // drops fragments to VIPs).
        id,
        // DF as the inner packet has it (RFC 2003): a client doing path MTU
        // discovery gets its "fragmentation needed" from a router on the
        // tunnel's path too, and a packet it allowed to be fragmented stays
        // fragmentable. Never set where the client did not set it.
        frags: [frags[0] & IPV4_DF, 0],
        ttl: TTL,
        proto: IPPROTO_IPIP,
        check: [0; 2],
        src_addr: src.to_ne_bytes(),
        dst_addr: backend.addr[0].to_ne_bytes(),
    };
    outer.check = checksum::ipv4_header(&outer);
    grow(ctx, Ipv4Hdr::LEN, l3, ETH_P_IPV4)?;
    let at: *mut Ipv4Hdr = ptr_at(ctx, l3).ok_or(DropReason::Truncated)?;
    unsafe { at.write(outer) };
    Ok(true)
}

#[inline(always)]
fn ipv6(
    ctx: &XdpContext,
    l3: usize,
    flow: &Flow,
    backend: &Backend,
    source: &TunnelSource,
    mtu: u16,
) -> Result<bool, DropReason> {
    let inner: *const Ipv6Hdr = ptr_at(ctx, l3).ok_or(DropReason::Truncated)?;
    let (vcf, inner_payload) = unsafe { ((*inner).vcf, u16::from_be_bytes((*inner).payload_len)) };
    // No jumbograms: a payload beyond 65,535 bytes needs a hop-by-hop option.
    let payload = inner_payload.checked_add(Ipv6Hdr::LEN as u16).ok_or(DropReason::EncapNoRoom)?;
    // The outer packet is its payload and its own header.
    if too_big(u32::from(payload) + Ipv6Hdr::LEN as u32, mtu) {
        return Ok(false);
    }
    let src = source.v6(&flow.key.src, flow.key.sport_be);
    let word = |w: u32| w.to_ne_bytes();
    let (s, d) = (src, backend.addr);
    let outer = Ipv6Hdr {
        // Version 6, the inner traffic class (it straddles the first two bytes), flow label 0.
        vcf: [0x60 | (vcf[0] & 0x0f), vcf[1] & 0xf0, 0, 0],
        payload_len: payload.to_be_bytes(),
        next_hdr: IPPROTO_IPV6,
        hop_limit: TTL,
        src_addr: concat(word(s[0]), word(s[1]), word(s[2]), word(s[3])),
        dst_addr: concat(word(d[0]), word(d[1]), word(d[2]), word(d[3])),
    };
    grow(ctx, Ipv6Hdr::LEN, l3, ETH_P_IPV6)?;
    let at: *mut Ipv6Hdr = ptr_at(ctx, l3).ok_or(DropReason::Truncated)?;
    unsafe { at.write(outer) };
    Ok(true)
}

#[inline(always)]
pub(crate) fn concat(a: [u8; 4], b: [u8; 4], c: [u8; 4], d: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3]]
}

/// Makes room for an outer header of `by` bytes between the Ethernet header
/// (which ends at `l3`) and the IP packet: the frame grows at its head and
/// the VLAN tags move to the new front, behind the MAC addresses (which
/// `forward::send` writes). The EtherType stays `ether_type`: the outer
/// header has the inner one's family.
#[inline(always)]
pub(crate) fn grow(ctx: &XdpContext, by: usize, l3: usize, ether_type: u16) -> Result<(), DropReason> {
    // SAFETY: the helper checks the headroom itself; it fails rather than overrun.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(by as i32)) } != 0 {
        return Err(DropReason::EncapNoRoom);
    }
    let tags = (l3 - EthHdr::LEN) / VlanHdr::LEN;
    for i in 0..MAX_VLAN_TAGS {
        if i >= tags {
            break;
        }
        let at = MACS_LEN + i * VlanHdr::LEN;
        let from: *const [u8; VlanHdr::LEN] = ptr_at(ctx, by + at).ok_or(DropReason::Truncated)?;
        let to: *mut [u8; VlanHdr::LEN] = ptr_at(ctx, at).ok_or(DropReason::Truncated)?;
        unsafe { *to = *from };
    }
    let ether: *mut [u8; 2] = ptr_at(ctx, l3 - 2).ok_or(DropReason::Truncated)?;
    unsafe { *ether = ether_type.to_ne_bytes() };
    Ok(())
}
