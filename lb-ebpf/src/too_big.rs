//! The balancer's own "too big" answers, for tunnel VIPs: a client's packet
//! that would exceed the egress MTU once encapsulated becomes, in place, an
//! ICMP fragmentation-needed (IPv4, type 3 code 4) or ICMPv6 packet-too-big
//! (type 2) error back to the client, sent by XDP_TX. Routers beyond the
//! balancer would address theirs to the outer source, which routes nowhere,
//! so path MTU discovery through the tunnel depends on this answer.
//!
//! The error comes from the VIP address the client sent to, TTL / hop limit
//! 64, to the MAC the frame came from. Its MTU is the egress MTU less the
//! outer header (20 or 40 bytes). It quotes the start of the client's packet
//! from the frame's linear part, the whole error within 576 bytes (IPv4,
//! RFC 1812) or 1,280 (IPv6, RFC 4443), the quote a multiple of 8 bytes
//! (`bpf_csum_diff` sums whole 32-bit words). The frame grows at its head by the
//! new IP and ICMP headers, the quote stays where it is, and the tail (the
//! fragments of a multi-buffer frame included) is cut after the quote.
//!
//! Only IPv4 packets with DF set are answered: without DF the client allowed
//! fragmentation, which XDP cannot do, so those drop (`encap_too_big`). An
//! ICMP error is never answered with one (the caller says so). A per-CPU
//! budget of `too_big_limit` answers per second keeps the balancer from being
//! a reflector: past it, `too_big_limited` and the packet drops.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_csum_diff, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use lb_common::{
    types::{coarse_seconds, FAMILY_V4},
    DropReason, Event, Verdict,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    checksum, counters,
    frame::{ptr_at, ETH_P_IPV4, ETH_P_IPV6, MACS_LEN},
    maps::CONFIG,
    parse::{Flow, ICMP_HEADER_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6},
    tunnel::{self, IPV4_DF, TTL},
};

/// Per CPU: the second (`coarse_seconds`) the budget is counted in, and the
/// errors sent in it. The kernel's own; the agent never reads it.
#[map]
static TOO_BIG_BUDGET: PerCpuArray<[u32; 2]> = PerCpuArray::with_max_entries(1, 0);

/// The longest quotes: the error within 576 (IPv4) or 1,280 (IPv6) bytes,
/// in whole 8-byte words.
const QUOTE_V4: usize = (576 - Ipv4Hdr::LEN - ICMP_HEADER_LEN) & !7;
const QUOTE_V6: usize = (1280 - Ipv6Hdr::LEN - ICMP_HEADER_LEN) & !7;
/// The longest ICMP message (header and quote).
const MESSAGE_MAX: usize = ICMP_HEADER_LEN + QUOTE_V6;
/// The most `bpf_csum_diff` sums in one call.
const CSUM_CHUNK: usize = 512;
/// The last chunk starts at 1,024 and the verifier knows its length as at
/// most 1,020 (`mask_1020`); and `mask_2040` bounds the copy.
const SCRATCH_LEN: usize = 2048;

/// Per CPU: the ICMP message, copied for its checksum.
#[map]
static SCRATCH: PerCpuArray<[u8; SCRATCH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Answers the client's packet at `l3` (too big for `mtu` once
/// encapsulated) with an ICMP error, or says why it drops.
#[inline(always)]
pub fn answer(ctx: &XdpContext, l3: usize, flow: &Flow, mtu: u16, now: u64) -> Result<Verdict, DropReason> {
    if flow.key.family == FAMILY_V4 {
        ipv4(ctx, l3, flow, mtu.saturating_sub(Ipv4Hdr::LEN as u16), now)?;
    } else {
        ipv6(ctx, l3, flow, mtu.saturating_sub(Ipv6Hdr::LEN as u16), now)?;
    }
    counters::event(Event::TooBigSent);
    Ok(Verdict::Tx)
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize, flow: &Flow, mtu: u16, now: u64) -> Result<(), DropReason> {
    let inner: *const Ipv4Hdr = ptr_at(ctx, l3).ok_or(DropReason::Truncated)?;
    let (vihl, frags, total) =
        unsafe { ((*inner).vihl, (*inner).frags, u16::from_be_bytes((*inner).tot_len)) };
    if frags[0] & IPV4_DF == 0 {
        return Err(DropReason::EncapTooBig);
    }
    // At least the IP header and 8 bytes beyond it (RFC 792).
    let quote = quote_len(ctx, l3, usize::from(total), QUOTE_V4, usize::from(vihl & 0x0f) * 4 + 8)?;
    spend(now)?;
    let macs = swapped_macs(ctx)?;
    let by = Ipv4Hdr::LEN + ICMP_HEADER_LEN;
    tunnel::grow(ctx, by, l3, ETH_P_IPV4)?;
    write(ctx, 0, macs)?;
    let mut ip = Ipv4Hdr {
        vihl: 0x45,
        tos: 0,
        tot_len: ((by + quote) as u16).to_be_bytes(),
        id: [0; 2],
        // Never fragmented on its way: 576 bytes pass every IPv4 link.
        frags: [IPV4_DF, 0],
        ttl: TTL,
        proto: IPPROTO_ICMP,
        check: [0; 2],
        src_addr: flow.key.dst[0].to_ne_bytes(),
        dst_addr: flow.key.src[0].to_ne_bytes(),
    };
    ip.check = checksum::ipv4_header(&ip);
    write(ctx, l3, ip)?;
    // Fragmentation needed: unused, then the next-hop MTU.
    let [m0, m1] = mtu.to_be_bytes();
    let icmp = l3 + Ipv4Hdr::LEN;
    write(ctx, icmp, [3u8, 4, 0, 0, 0, 0, m0, m1])?;
    cut(ctx, l3 + by + quote)?;
    let sum = sum(ctx, icmp, ICMP_HEADER_LEN + quote)?;
    write(ctx, icmp + 2, checksum::fold(sum))
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize, flow: &Flow, mtu: u16, now: u64) -> Result<(), DropReason> {
    let inner: *const Ipv6Hdr = ptr_at(ctx, l3).ok_or(DropReason::Truncated)?;
    let total = usize::from(u16::from_be_bytes(unsafe { (*inner).payload_len })) + Ipv6Hdr::LEN;
    let quote = quote_len(ctx, l3, total, QUOTE_V6, Ipv6Hdr::LEN + 8)?;
    spend(now)?;
    let macs = swapped_macs(ctx)?;
    let by = Ipv6Hdr::LEN + ICMP_HEADER_LEN;
    tunnel::grow(ctx, by, l3, ETH_P_IPV6)?;
    write(ctx, 0, macs)?;
    let length = (ICMP_HEADER_LEN + quote) as u16;
    let (s, d) = (flow.key.dst, flow.key.src);
    let ip = Ipv6Hdr {
        vcf: [0x60, 0, 0, 0],
        payload_len: length.to_be_bytes(),
        next_hdr: IPPROTO_ICMPV6,
        hop_limit: TTL,
        src_addr: tunnel::concat(
            s[0].to_ne_bytes(),
            s[1].to_ne_bytes(),
            s[2].to_ne_bytes(),
            s[3].to_ne_bytes(),
        ),
        dst_addr: tunnel::concat(
            d[0].to_ne_bytes(),
            d[1].to_ne_bytes(),
            d[2].to_ne_bytes(),
            d[3].to_ne_bytes(),
        ),
    };
    write(ctx, l3, ip)?;
    // Packet too big: the MTU in 32 bits.
    let [m0, m1, m2, m3] = u32::from(mtu).to_be_bytes();
    let icmp = l3 + Ipv6Hdr::LEN;
    write(ctx, icmp, [2u8, 0, 0, 0, m0, m1, m2, m3])?;
    cut(ctx, l3 + by + quote)?;
    // The pseudo-header: both addresses, the upper-layer length and next header (32 bits each).
    let mut sum = u64::from(u32::from_ne_bytes([0, 0, 0, IPPROTO_ICMPV6]));
    sum += u64::from(u32::from(length).to_be());
    for i in 0..4 {
        sum += u64::from(s[i]) + u64::from(d[i]);
    }
    sum += self::sum(ctx, icmp, ICMP_HEADER_LEN + quote)?;
    write(ctx, icmp + 2, checksum::fold(sum))
}

/// How much of the IP packet at `l3` (`total` bytes) to quote: at most
/// `longest`, within the frame's linear part, whole 8-byte words; too big
/// to answer (dropped) when that is less than `least`.
#[inline(always)]
fn quote_len(
    ctx: &XdpContext,
    l3: usize,
    total: usize,
    longest: usize,
    least: usize,
) -> Result<usize, DropReason> {
    let linear = (ctx.data_end() - ctx.data()).saturating_sub(l3);
    let quote = total.min(linear).min(longest) & !7;
    if quote < least {
        return Err(DropReason::EncapTooBig);
    }
    Ok(quote)
}

/// Takes one error from this CPU's budget for the current second.
#[inline(always)]
fn spend(now: u64) -> Result<(), DropReason> {
    let limit = CONFIG.get(0).map_or(0, |c| c.too_big_limit);
    let budget = TOO_BIG_BUDGET.get_ptr_mut(0).ok_or(DropReason::Internal)?;
    let budget = unsafe { &mut *budget };
    let second = coarse_seconds(now);
    if budget[0] != second {
        *budget = [second, 0];
    }
    if budget[1] >= limit {
        counters::event(Event::TooBigLimited);
        return Err(DropReason::EncapTooBig);
    }
    budget[1] += 1;
    Ok(())
}

/// The frame's MAC addresses, destination and source swapped: the error
/// goes back to where the packet came from.
#[inline(always)]
fn swapped_macs(ctx: &XdpContext) -> Result<[u8; MACS_LEN], DropReason> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(DropReason::Truncated)?;
    let (d, s) = unsafe { ((*eth).dst_addr, (*eth).src_addr) };
    Ok([s[0], s[1], s[2], s[3], s[4], s[5], d[0], d[1], d[2], d[3], d[4], d[5]])
}

#[inline(always)]
fn write<T>(ctx: &XdpContext, at: usize, value: T) -> Result<(), DropReason> {
    let p: *mut T = ptr_at(ctx, at).ok_or(DropReason::Truncated)?;
    unsafe { p.write_unaligned(value) };
    Ok(())
}

/// Cuts the frame, fragments included, to `len` bytes.
#[inline(always)]
fn cut(ctx: &XdpContext, len: usize) -> Result<(), DropReason> {
    // SAFETY: reads the context the kernel passed.
    let whole = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    if whole > len {
        // SAFETY: the helper checks the new length itself.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((whole - len) as i32)) } != 0 {
            return Err(DropReason::EncapTooBig);
        }
    }
    Ok(())
}

/// The one's-complement sum (unfolded) of the `len` bytes at `at` (the
/// ICMP message: a multiple of 8, at most [`MESSAGE_MAX`]). Copied to
/// scratch first: `bpf_csum_diff` sums up to 512 bytes a call and wants
/// memory the verifier can bound for any length, which packet data of a
/// variable length is not.
#[inline(always)]
fn sum(ctx: &XdpContext, at: usize, len: usize) -> Result<u64, DropReason> {
    let buf = SCRATCH.get_ptr_mut(0).ok_or(DropReason::Internal)?;
    // Bounds the verifier sees: 8..=2040 bytes, within the scratch space.
    let len = mask_2040(len as u64);
    if len == 0 || len > MESSAGE_MAX as u64 {
        return Err(DropReason::EncapTooBig);
    }
    // SAFETY: the helper bounds-checks the frame; buf holds SCRATCH_LEN bytes.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, at as u32, buf as *mut c_void, len as u32) } != 0 {
        return Err(DropReason::EncapTooBig);
    }
    let mut sum = 0u64;
    for k in 0..MESSAGE_MAX.div_ceil(CSUM_CHUNK) {
        let from = (k * CSUM_CHUNK) as u64;
        let part = if len > from { (len - from).min(CSUM_CHUNK as u64) } else { 0 };
        // SAFETY: at most 1,020 bytes from at most 1,024 in: within buf.
        let r = unsafe {
            let to = (buf as *mut u8).add(k * CSUM_CHUNK) as *mut u32;
            bpf_csum_diff(core::ptr::null_mut(), 0, to, mask_1020(part) as u32, 0)
        };
        if r < 0 {
            return Err(DropReason::EncapTooBig);
        }
        sum += r as u64;
    }
    Ok(sum)
}

// Masks stated in assembly: LLVM drops a mask it can prove changes nothing,
// and the verifier, which proves less, then sees no bound.

/// `v & 0x7f8`: 0..=2040, whole 8-byte words.
#[inline(always)]
fn mask_2040(mut v: u64) -> u64 {
    // SAFETY: arithmetic on a register, nothing else.
    unsafe { core::arch::asm!("{v} &= 2040", v = inout(reg) v, options(pure, nomem, nostack)) };
    v
}

/// `v & 0x3fc`: 0..=1020, whole 32-bit words (512 and less unchanged when so).
#[inline(always)]
fn mask_1020(mut v: u64) -> u64 {
    // SAFETY: arithmetic on a register, nothing else.
    unsafe { core::arch::asm!("{v} &= 1020", v = inout(reg) v, options(pure, nomem, nostack)) };
    v
}
