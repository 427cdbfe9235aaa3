//! The `decap` XDP program, for backends of tunnel VIPs (`alwayson decap`):
//! strips the outer header of IPv4-in-IPv4 and IPv6-in-IPv6 packets and
//! passes the inner packet to the stack, as if it had arrived as it is. The
//! Ethernet header (VLAN tags included) is kept; its EtherType stays right,
//! since only same-family tunnels are stripped (the balancer builds no
//! others). Everything else passes untouched.
//!
//! Any outer destination is taken, not only this host's addresses. Routers
//! deliver an IPIP packet by its outer destination, so one from off-link is
//! ours; a neighbour that addresses our MAC with another outer destination
//! could as well have sent us the inner packet itself, so stripping gives it
//! nothing it did not have. A list of local addresses in a map would instead
//! go stale, silently, when the host's addresses change after the command
//! has exited. (A host that forwards other hosts' IPIP should not run this.)
//!
//! Outer fragments pass: only the stack can reassemble them. A tunnel packet
//! whose headers are cut short or inconsistent is dropped, counted. Each
//! outcome is counted per CPU in `DECAP_COUNTERS` (`lb_common::DecapCounter`).
#![no_std]
#![no_main]

#[path = "../frame.rs"]
mod frame;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use lb_common::{sizes::MAX_VLAN_TAGS, DecapCounter};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    vlan::VlanHdr,
};

use crate::frame::{ethernet, frame_len_reaching, ptr_at, ETH_P_IPV4, ETH_P_IPV6, MACS_LEN};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
/// More-fragments flag and fragment offset bits of the IPv4 `frags` field.
const IPV4_FRAG_MASK: u16 = 0x3fff;

/// By `DecapCounter` slot.
#[map]
static DECAP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DecapCounter::ALL.len() as u32, 0);

/// What to do with a frame: strip this many bytes of outer header, pass it
/// as it is, or drop it.
enum Outcome {
    Strip(usize),
    Pass,
    Malformed,
}

#[xdp(frags)]
pub fn decap(ctx: XdpContext) -> u32 {
    let (action, counter) = match process(&ctx) {
        Outcome::Strip(_) => (xdp_action::XDP_PASS, DecapCounter::Decapsulated),
        Outcome::Pass => (xdp_action::XDP_PASS, DecapCounter::Passed),
        Outcome::Malformed => (xdp_action::XDP_DROP, DecapCounter::Malformed),
    };
    if let Some(count) = DECAP_COUNTERS.get_ptr_mut(counter.slot()) {
        unsafe { *count += 1 };
    }
    action
}

#[inline(always)]
fn process(ctx: &XdpContext) -> Outcome {
    // A frame too short for its Ethernet header is the stack's to judge.
    let Some((ether_type, l3)) = ethernet(ctx) else { return Outcome::Pass };
    let outcome = match ether_type {
        ETH_P_IPV4 => ipv4(ctx, l3),
        ETH_P_IPV6 => ipv6(ctx, l3),
        _ => Outcome::Pass,
    };
    match outcome {
        Outcome::Strip(by) => strip(ctx, l3, by, ether_type),
        other => other,
    }
}

/// An IPv4 header at `l3`: its length if it carries IPv4-in-IPv4 to strip.
#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize) -> Outcome {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else { return Outcome::Pass };
    let ip = unsafe { &*ip };
    if ip.proto != IPPROTO_IPIP {
        return Outcome::Pass;
    }
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN {
        return Outcome::Malformed;
    }
    if u16::from_be_bytes(ip.frags) & IPV4_FRAG_MASK != 0 {
        return Outcome::Pass;
    }
    let total = usize::from(u16::from_be_bytes(ip.tot_len));
    inner(ctx, l3, header_len, total, 4)
}

/// An IPv6 header at `l3`: its length if it carries IPv6-in-IPv6 to strip
/// (directly: an outer packet with extension headers passes).
#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize) -> Outcome {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else { return Outcome::Pass };
    let ip = unsafe { &*ip };
    if ip.next_hdr != IPPROTO_IPV6 {
        return Outcome::Pass;
    }
    if ip.vcf[0] >> 4 != 6 {
        return Outcome::Malformed;
    }
    let total = Ipv6Hdr::LEN + usize::from(u16::from_be_bytes(ip.payload_len));
    inner(ctx, l3, Ipv6Hdr::LEN, total, 6)
}

/// Whether the outer packet at `l3` (`header_len` of header, `total` bytes
/// in all) holds a whole inner header of IP version `version` and ends
/// within the frame (all of its buffers).
#[inline(always)]
fn inner(ctx: &XdpContext, l3: usize, header_len: usize, total: usize, version: u8) -> Outcome {
    let min_inner = if version == 4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
    if total < header_len + min_inner || frame_len_reaching(ctx, l3 + total).is_none() {
        return Outcome::Malformed;
    }
    // The inner header's first byte, read where the whole inner header must be.
    let first = if version == 4 {
        ptr_at::<Ipv4Hdr>(ctx, l3 + header_len).map(|ip| unsafe { (*ip).vihl })
    } else {
        ptr_at::<Ipv6Hdr>(ctx, l3 + header_len).map(|ip| unsafe { (*ip).vcf[0] })
    };
    match first {
        Some(first) if first >> 4 == version => Outcome::Strip(header_len),
        _ => Outcome::Malformed,
    }
}

/// Removes the `by` bytes of outer header at `l3`: the Ethernet header and
/// its tags move up against the inner packet, and the frame starts there.
#[inline(always)]
fn strip(ctx: &XdpContext, l3: usize, by: usize, ether_type: u16) -> Outcome {
    let Some(macs) = ptr_at::<[u8; MACS_LEN]>(ctx, 0) else { return Outcome::Malformed };
    let macs = unsafe { *macs };
    let tags = (l3 - EthHdr::LEN) / VlanHdr::LEN;
    let mut saved = [[0u8; VlanHdr::LEN]; MAX_VLAN_TAGS];
    for (i, tag) in saved.iter_mut().enumerate() {
        if i >= tags {
            break;
        }
        let Some(from) = ptr_at::<[u8; VlanHdr::LEN]>(ctx, MACS_LEN + i * VlanHdr::LEN) else {
            return Outcome::Malformed;
        };
        *tag = unsafe { *from };
    }
    // SAFETY: the helper checks the frame keeps a minimum length; it fails rather than overrun.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, by as i32) } != 0 {
        return Outcome::Malformed;
    }
    let Some(to) = ptr_at::<[u8; MACS_LEN]>(ctx, 0) else { return Outcome::Malformed };
    unsafe { *to = macs };
    for (i, tag) in saved.iter().enumerate() {
        if i >= tags {
            break;
        }
        let Some(to) = ptr_at::<[u8; VlanHdr::LEN]>(ctx, MACS_LEN + i * VlanHdr::LEN) else {
            return Outcome::Malformed;
        };
        unsafe { *to = *tag };
    }
    let Some(to) = ptr_at::<[u8; 2]>(ctx, l3 - 2) else { return Outcome::Malformed };
    unsafe { *to = ether_type.to_ne_bytes() };
    Outcome::Strip(by)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
