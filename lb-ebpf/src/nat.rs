//! `mode = "nat"`: full NAT. A client's packet `client:cport → VIP:vport`
//! leaves as `nat address:nat port → backend:bport`; the backend's reply
//! `backend:bport → nat address:nat port` comes back here and leaves as
//! `VIP:vport → client:cport`. Backends need nothing: they answer the
//! balancer's own address.
//!
//! A mapping is a pair of entries, both keyed by a packet's 5-tuple as it
//! arrives (`lb_common::nat`): `NAT_FORWARD` by the client's flow,
//! `NAT_REVERSE` by the backend's reply flow. Only a TCP SYN or a UDP packet
//! creates one; the backend is the ring slot's owner (the mapping pins the
//! flow, so the connection table plays no part). The source port comes from
//! the VIP's range in `NAT_SOURCES`: a per-CPU cursor picks the first
//! candidate, then up to `NAT_PORT_TRIES` consecutive ports (wrapping in the range) are
//! tried, each by inserting the reverse entry with `BPF_NOEXIST`, so two CPUs
//! can never take one port toward one backend. A VIP with no ports
//! (`port_count` 0, not written yet) drops as `nat_no_port`.
//!
//! The reverse entry keeps the ingress interface and the client frame's MAC
//! addresses, swapped: replies go back the way the client's packets came,
//! with no FIB lookup. The agent, not the kernel, removes pairs: the plain
//! hash maps never evict a mapping (and its port) behind its back.
//!
//! Checksums are updated incrementally (RFC 1624): the IPv4 header's for the
//! addresses, TCP's and UDP's for the pseudo-header addresses and the ports.
//! A zero UDP checksum over IPv4 (none computed) stays zero; a UDP result of
//! zero is sent as 0xffff. TTL / hop limit are left as they are.
//!
//! Not translated: ICMP errors about NAT flows (they pass to the host), IP
//! fragments (the parser's policy: dropped to a VIP, passed otherwise),
//! IPv6 packets with extension headers (see `ipv6_ext_headers`).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use lb_common::{
    nat::{NAT_SEEN_CLOSE, NAT_SEEN_REPLY},
    sizes::NAT_PORT_TRIES,
    types::{coarse_seconds, FAMILY_V4, FLAG_NAT, PROTO_TCP},
    Backend, DropReason, Event, FlowKey, NatForward, NatReverse, NextHop, Verdict, VipValue,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::{
    checksum::Delta,
    counters,
    forward::{self, Reach},
    frame::{ethernet, ptr_at},
    maps::{CONFIG, NAT_FORWARD, NAT_REVERSE, NAT_SOURCES},
    parse::{load_u16, Flow},
    select,
};

const EEXIST: i32 = 17;

/// Where the checksum field lies in each header.
const IPV4_CHECK: usize = 10;
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

/// A NAT VIP's packet, sent: what the caller counts.
pub struct Sent {
    pub verdict: Verdict,
    pub backend: u32,
    /// The packet made a new mapping.
    pub new_flow: bool,
}

/// Where a new mapping is put together before it goes into the tables, per
/// CPU: the whole NAT path is inlined into the program, whose 512 bytes of
/// stack the other modes already use most of.
#[repr(C)]
struct Scratch {
    reply: FlowKey,
    reverse: NatReverse,
    forward: NatForward,
    /// Where this CPU's next port search starts, counted in allocations.
    next: u32,
}

/// Spreads the CPUs' cursors over a range, so they do not search one place.
const CPU_SPREAD: u32 = 40_503;

/// The kernel's own; the agent never reads it.
#[map]
static NAT_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// A packet of a NAT VIP: its mapping (made if need be), rewritten, sent
/// toward the backend.
#[inline(always)]
pub fn forward(ctx: &XdpContext, flow: &Flow, vip: &VipValue, now: u64) -> Result<Sent, DropReason> {
    if ipv6_ext_headers(ctx, flow)? {
        return Err(DropReason::Ipv6ExtChain);
    }
    let seen = coarse_seconds(now);
    let mark = if flow.close { NAT_SEEN_CLOSE } else { 0 };
    let mut found = None;
    if let Some(entry) = NAT_FORWARD.get_ptr_mut(&flow.key) {
        let entry = unsafe { &mut *entry };
        match pinned(entry, &flow.key, vip) {
            Some(backend) => {
                touch(&mut entry.seen, &mut entry.flags, seen, mark);
                found = Some((entry as *const NatForward, backend));
            }
            // The backend is gone, DOWN or another's: the pair goes, and
            // the packet is taken for a flow without one.
            None => forget(&flow.key, entry)?,
        }
    }
    let new_flow = found.is_none();
    let (mapping, backend) = match found {
        Some(found) => found,
        None => map(ctx, flow, vip, seen, mark)?,
    };
    // The entry itself, not a copy: read while the agent may remove it, as
    // the connection table is (at worst this packet goes astray).
    let m = unsafe { &*mapping };
    let index = m.backend;
    let hop = forward::next_hop(ctx, index, &backend, now, Reach::AnyHop)?;
    rewrite(ctx, flow, &m.nat_addr, &m.backend_addr, m.nat_port_be, m.backend_port_be)?;
    let verdict = forward::send(ctx, &hop)?;
    Ok(Sent { verdict, backend: index, new_flow })
}

/// A packet to no VIP: a backend's reply to a NAT mapping is rewritten and
/// sent back to the client; anything else passes untouched. Costs nothing
/// but a flag test unless some VIP is NAT (`FLAG_NAT`).
#[inline(always)]
pub fn reply(ctx: &XdpContext, flow: &Flow) -> Result<Verdict, DropReason> {
    if CONFIG.get(0).is_none_or(|config| config.flags & FLAG_NAT == 0) {
        return Ok(Verdict::Pass);
    }
    if ipv6_ext_headers(ctx, flow)? {
        return Ok(Verdict::Pass);
    }
    let Some(entry) = NAT_REVERSE.get_ptr_mut(&flow.key) else { return Ok(Verdict::Pass) };
    let e = unsafe { &mut *entry };
    let seen = coarse_seconds(unsafe { bpf_ktime_get_coarse_ns() });
    let mark = NAT_SEEN_REPLY | if flow.close { NAT_SEEN_CLOSE } else { 0 };
    touch(&mut e.seen, &mut e.flags, seen, mark);
    rewrite(ctx, flow, &e.vip_addr, &e.client, e.vip_port_be, e.client_port_be)?;
    let hop =
        NextHop { stamp_ns: 0, ifindex: e.ifindex, dmac: e.peer_mac, smac: e.own_mac, mtu: 0, _pad: [0; 6] };
    let (vip, backend) = (e.vip, e.backend);
    let verdict = forward::send(ctx, &hop)?;
    counters::traffic(vip, backend, u64::from(flow.len), false);
    Ok(verdict)
}

/// Whether an IPv6 packet carries extension headers: NAT finds the TCP / UDP
/// header right behind the IP header (IPv4: behind its options), so such
/// packets are not translated (a NAT VIP's drop as `ipv6_ext_chain`, replies
/// pass). Walking the chain again here, or carrying its length from the
/// parser, would multiply the paths the verifier has to walk.
#[inline(always)]
fn ipv6_ext_headers(ctx: &XdpContext, flow: &Flow) -> Result<bool, DropReason> {
    if flow.key.family == FAMILY_V4 {
        return Ok(false);
    }
    let (_, l3) = ethernet(ctx).ok_or(DropReason::Truncated)?;
    let ip = ptr_at::<Ipv6Hdr>(ctx, l3).ok_or(DropReason::Truncated)?;
    Ok(unsafe { (*ip).next_hdr } != flow.key.proto)
}

/// Marks an entry's direction as seen: `seen` written once a second at most
/// and flags only when they change, so a shared cache line stays clean.
/// Plain stores, not atomic: another CPU's simultaneous mark may be lost
/// and is made again by that direction's next packet.
#[inline(always)]
fn touch(last: &mut u32, flags: &mut u32, seen: u32, mark: u32) {
    if *last != seen {
        *last = seen;
    }
    if *flags & mark != mark {
        *flags |= mark;
    }
}

/// The port a flow reaches a backend on: its own, or the VIP's port the
/// client asked for when the backend has none (0: every port of a port-0 VIP).
#[inline(always)]
fn backend_port(backend: &Backend, key: &FlowKey) -> u16 {
    if backend.port_be != 0 {
        backend.port_be
    } else {
        key.dport_be
    }
}

/// The mapping's backend, if it still takes the flow: the slot belongs to the
/// VIP, keeps flows (UP or DRAINING), and is still the backend mapped.
#[inline(always)]
fn pinned(value: &NatForward, key: &FlowKey, vip: &VipValue) -> Option<Backend> {
    if value.vip != vip.index {
        return None;
    }
    let backend = select::usable(value.backend, vip.index)?;
    (backend.addr == value.backend_addr && backend_port(&backend, key) == value.backend_port_be)
        .then_some(backend)
}

/// Removes a pair (what is already gone stays gone).
#[inline(always)]
fn forget(key: &FlowKey, value: &NatForward) -> Result<(), DropReason> {
    let scratch = unsafe { &mut *NAT_SCRATCH.get_ptr_mut(0).ok_or(DropReason::Internal)? };
    // Taken before the entry goes: its memory is the table's again after.
    scratch.reply = value.reverse_key(key.proto, key.family);
    let _ = NAT_FORWARD.remove(key);
    let _ = NAT_REVERSE.remove(&scratch.reply);
    Ok(())
}

/// Makes the mapping of a flow that has none, in this CPU's scratch entry.
#[inline(always)]
fn map(
    ctx: &XdpContext,
    flow: &Flow,
    vip: &VipValue,
    seen: u32,
    mark: u32,
) -> Result<(*const NatForward, Backend), DropReason> {
    let key = &flow.key;
    if key.proto == PROTO_TCP && !flow.syn {
        return Err(DropReason::NatNoEntry);
    }
    let (index, backend) = select::ring_owner(key, vip)?;
    let source = NAT_SOURCES.get(vip.index).ok_or(DropReason::Internal)?;
    let count = u32::from(source.port_count);
    if count == 0 {
        return Err(DropReason::NatNoPort);
    }
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(DropReason::Truncated)?;
    let s = unsafe { &mut *NAT_SCRATCH.get_ptr_mut(0).ok_or(DropReason::Internal)? };
    let backend_port_be = backend_port(&backend, key);
    // Field by field: a whole value would be built on the stack first.
    let r = &mut s.reverse;
    r.client = key.src;
    r.vip_addr = key.dst;
    r.client_port_be = key.sport_be;
    r.vip_port_be = key.dport_be;
    r.ifindex = ctx.ingress_ifindex() as u32;
    unsafe {
        r.peer_mac = (*eth).src_addr;
        r.own_mac = (*eth).dst_addr;
    }
    r.vip = vip.index;
    r.backend = index;
    r.seen = seen;
    r.flags = 0;
    let k = &mut s.reply;
    k.src = backend.addr;
    k.dst = source.addr;
    k.sport_be = backend_port_be;
    k.proto = key.proto;
    k.family = key.family;
    k._pad = [0; 2];

    // A cursor, not the flow hash, picks the first port: it walks the range
    // in order, so it comes to each port about when that port's previous
    // mapping, made a whole lap earlier, has expired. Starting at random
    // places would meet live mappings far sooner as the range fills.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let mut offset = s.next.wrapping_add(cpu.wrapping_mul(CPU_SPREAD)) % count;
    let mut free = false;
    for _ in 0..NAT_PORT_TRIES {
        s.next = s.next.wrapping_add(1);
        s.reply.dport_be = source.port_min.wrapping_add(offset as u16).to_be();
        match NAT_REVERSE.insert(&s.reply, &s.reverse, u64::from(BPF_NOEXIST)) {
            Ok(()) => {
                free = true;
                break;
            }
            Err(e) if e == -EEXIST => {}
            Err(_) => return Err(DropReason::NatTableFull),
        }
        offset += 1;
        if offset == count {
            offset = 0;
        }
    }
    if !free {
        return Err(DropReason::NatNoPort);
    }
    let f = &mut s.forward;
    f.nat_addr = source.addr;
    f.backend_addr = backend.addr;
    f.backend_port_be = backend_port_be;
    f.nat_port_be = s.reply.dport_be;
    f.backend = index;
    f.vip = vip.index;
    f.seen = seen;
    f.flags = mark;
    // Fails when the table is full (or, rarely, when another CPU mapped the
    // same flow a moment ago: the client's retransmission then finds it).
    if NAT_FORWARD.insert(key, &s.forward, u64::from(BPF_NOEXIST)).is_err() {
        let _ = NAT_REVERSE.remove(&s.reply);
        return Err(DropReason::NatTableFull);
    }
    counters::event(Event::NatMapped);
    Ok((&s.forward as *const NatForward, backend))
}

/// Rewrites the packet's addresses and ports to these, checksums with them.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    flow: &Flow,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport_be: u16,
    dport_be: u16,
) -> Result<(), DropReason> {
    let key = &flow.key;
    // The parser walked these already; walking again is cheaper than carrying them.
    let (_, l3) = ethernet(ctx).ok_or(DropReason::Truncated)?;
    let (addresses, l4) = if key.family == FAMILY_V4 {
        let ip = ptr_at::<Ipv4Hdr>(ctx, l3).ok_or(DropReason::Truncated)? as *mut u8;
        // Behind the options, if any.
        let l4 = l3 + usize::from(unsafe { *ip } & 0x0f) * 4;
        let delta = Delta::NONE.word(key.src[0], src[0]).word(key.dst[0], dst[0]);
        unsafe {
            let check = ip.add(IPV4_CHECK);
            store_u16(check, delta.apply(load_u16(check)));
            store_u32(ip.add(12), src[0]);
            store_u32(ip.add(16), dst[0]);
        }
        (delta, l4)
    } else {
        let ip = ptr_at::<Ipv6Hdr>(ctx, l3).ok_or(DropReason::Truncated)? as *mut u8;
        for i in 0..4 {
            unsafe {
                store_u32(ip.add(8 + 4 * i), src[i]);
                store_u32(ip.add(24 + 4 * i), dst[i]);
            }
        }
        // No extension headers: `ipv6_ext_headers` turned them away.
        (Delta::NONE.words(&key.src, src).words(&key.dst, dst), l3 + Ipv6Hdr::LEN)
    };
    let delta = addresses.word(ports(key.sport_be, key.dport_be), ports(sport_be, dport_be));
    let (l4, check) = if key.proto == PROTO_TCP {
        (ptr_at::<TcpHdr>(ctx, l4).ok_or(DropReason::Truncated)? as *mut u8, TCP_CHECK)
    } else {
        (ptr_at::<UdpHdr>(ctx, l4).ok_or(DropReason::Truncated)? as *mut u8, UDP_CHECK)
    };
    unsafe {
        let at = l4.add(check);
        let old = load_u16(at);
        if key.proto == PROTO_TCP {
            store_u16(at, delta.apply(old));
        } else if old != 0 || key.family != FAMILY_V4 {
            // UDP: zero means "no checksum" (IPv4 only), so a computed zero is sent as all ones.
            let new = delta.apply(old);
            store_u16(at, if new == 0 { 0xffff } else { new });
        }
        store_u16(l4, sport_be);
        store_u16(l4.add(2), dport_be);
    }
    Ok(())
}

/// Two ports as they lie in the header: one 32-bit word of the checksum.
#[inline(always)]
fn ports(sport_be: u16, dport_be: u16) -> u32 {
    let (s, d) = (sport_be.to_ne_bytes(), dport_be.to_ne_bytes());
    u32::from_ne_bytes([s[0], s[1], d[0], d[1]])
}

/// A 32-bit store into the packet at any alignment (see `parse::load_u32`).
/// `p` must have passed a bounds check for 4 bytes.
#[inline(always)]
unsafe fn store_u32(p: *mut u8, v: u32) {
    unsafe {
        core::arch::asm!("*(u32 *)({p} + 0) = {v}", p = in(reg) p, v = in(reg) u64::from(v), options(nostack))
    };
}

/// As [`store_u32`], 16 bits.
#[inline(always)]
unsafe fn store_u16(p: *mut u8, v: u16) {
    unsafe {
        core::arch::asm!("*(u16 *)({p} + 0) = {v}", p = in(reg) p, v = in(reg) u64::from(v), options(nostack))
    };
}
