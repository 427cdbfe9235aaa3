//! Forwarding. `dsr`: L2 direct server return — the IP packet is untouched, the
//! frame is re-addressed to the backend's next hop and sent back out (XDP_TX)
//! or out of another interface (XDP_REDIRECT). Next hops come from
//! `bpf_fib_lookup`, cached per backend and CPU for `NEXTHOP_TTL_NS`; the
//! tunnel mode (`tunnel.rs`) sends through the same cache and `send`.
//!
//! For DSR the next hop must be the backend itself: a frame for a backend behind a
//! gateway would go to the router with the VIP still as its destination, and
//! the router would send it straight back. Such a backend drops as
//! `NotOnLink`, and that answer is cached like any other, so a stream of
//! packets to it costs one FIB lookup per second and CPU, as forwarding does.
//!
//! VLAN-tagged frames keep their tags as they came in. XDP_TX sends them back on
//! the same link and VLAN, which works when the backend is on the client's VLAN.
//! A tagged frame whose backend's egress differs from the ingress interface
//! (XDP_REDIRECT) is unsupported: it is not re-tagged, so it leaves another port
//! with the ingress tags; in native mode a redirect into a VLAN device (no
//! `ndo_xdp_xmit`) fails and the kernel drops the frame, uncounted here.

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
    EbpfContext,
};
use lb_common::{sizes::NEXTHOP_TTL_NS, types::FAMILY_V4, Backend, DropReason, NextHop, Verdict};
use network_types::eth::EthHdr;

use crate::{frame::ptr_at, maps::NEXTHOPS};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// A cached next hop with this interface: the FIB named a gateway. No interface has index 0.
const NOT_ON_LINK: u32 = 0;

#[inline(always)]
pub fn dsr(ctx: &XdpContext, index: u32, backend: &Backend, now: u64) -> Result<Verdict, DropReason> {
    let hop = next_hop(ctx, index, backend, now, Reach::OnLink)?;
    send(ctx, &hop)
}

/// Addresses the frame to `hop` and sends it: back out (XDP_TX) or out of
/// another interface (XDP_REDIRECT).
#[inline(always)]
pub fn send(ctx: &XdpContext, hop: &NextHop) -> Result<Verdict, DropReason> {
    // The parser (or the encapsulation) already proved the Ethernet header is there.
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(DropReason::Truncated)?;
    unsafe {
        (*eth).dst_addr = hop.dmac;
        (*eth).src_addr = hop.smac;
    }
    if hop.ifindex as usize == ctx.ingress_ifindex() {
        Ok(Verdict::Tx)
    } else {
        // bpf_redirect answers XDP_ABORTED on bad flags; never let that out.
        match unsafe { bpf_redirect(hop.ifindex, 0) } as u32 {
            xdp_action::XDP_REDIRECT => Ok(Verdict::Redirect),
            _ => Err(DropReason::NoRoute),
        }
    }
}

/// Which next hops can take a backend's packets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Only the backend itself (DSR: the IP header still names the VIP).
    OnLink,
    /// Any, a gateway too (tunnel: the outer header names the backend).
    AnyHop,
}

#[inline(always)]
pub fn next_hop(
    ctx: &XdpContext,
    index: u32,
    backend: &Backend,
    now: u64,
    reach: Reach,
) -> Result<NextHop, DropReason> {
    let cached = NEXTHOPS.get_ptr_mut(index).ok_or(DropReason::Internal)?;
    let hop = unsafe { *cached };
    if hop.stamp_ns != 0 && now.wrapping_sub(hop.stamp_ns) < NEXTHOP_TTL_NS {
        match (hop.ifindex, reach) {
            (NOT_ON_LINK, Reach::OnLink) => return Err(DropReason::NotOnLink),
            // Cached by DSR before the VIP became a tunnel's: ask again.
            (NOT_ON_LINK, Reach::AnyHop) => {}
            _ => return Ok(hop),
        }
    }

    let mut params: FibParams = unsafe { zeroed() };
    params.ifindex = ctx.ingress_ifindex() as u32;
    if backend.family == FAMILY_V4 {
        params.family = AF_INET;
        params.__bindgen_anon_4.ipv4_dst = backend.addr[0];
    } else {
        params.family = AF_INET6;
        params.__bindgen_anon_4.ipv6_dst = backend.addr;
    }
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut params, size_of::<FibParams>() as i32, 0) } as u32;
    // The kernel names the gateway before it looks for a neighbour, so an
    // unresolved gateway is as telling as a resolved one.
    if reach == Reach::OnLink
        && (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
        && via_gateway(&params, backend)
    {
        let hop = NextHop {
            stamp_ns: now.max(1),
            ifindex: NOT_ON_LINK,
            dmac: [0; 6],
            smac: [0; 6],
            mtu: 0,
            _pad: [0; 6],
        };
        unsafe { *cached = hop };
        return Err(DropReason::NotOnLink);
    }
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NO_NEIGH => return Err(DropReason::NoNeighbour),
        _ => return Err(DropReason::NoRoute),
    }
    // On success the kernel leaves the route's MTU where the (zero) packet length was.
    let mtu = unsafe { params.__bindgen_anon_1.mtu_result };
    let hop = NextHop {
        stamp_ns: now.max(1),
        ifindex: params.ifindex,
        dmac: params.dmac,
        smac: params.smac,
        mtu,
        _pad: [0; 6],
    };
    unsafe { *cached = hop };
    Ok(hop)
}

/// Whether the FIB's answer is a gateway: the kernel overwrites the
/// destination with the route's gateway when the route has one.
#[inline(always)]
fn via_gateway(params: &FibParams, backend: &Backend) -> bool {
    // SAFETY: both union members are plain integers over the same bytes.
    let (v4, v6) = unsafe { (params.__bindgen_anon_4.ipv4_dst, params.__bindgen_anon_4.ipv6_dst) };
    if backend.family == FAMILY_V4 {
        // An IPv4 route through an IPv6 gateway (RFC 5549) turns the answer to IPv6.
        params.family != AF_INET || v4 != backend.addr[0]
    } else {
        v6 != backend.addr
    }
}
