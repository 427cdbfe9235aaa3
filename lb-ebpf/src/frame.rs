//! Bounds-checked access to the frame and the Ethernet walk, shared by the
//! programs: the balancer (`mod frame`) and `decap` (the same file, by path).

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::sizes::MAX_VLAN_TAGS;
use network_types::{
    eth::{EthHdr, EtherType},
    vlan::VlanHdr,
};

pub const ETH_P_IPV4: u16 = EtherType::Ipv4 as u16;
pub const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
/// Where the MAC addresses end and the VLAN tags (if any) begin.
pub const MACS_LEN: usize = 12;
const ETH_P_8021Q: u16 = EtherType::Ieee8021q as u16;
const ETH_P_8021AD: u16 = EtherType::Ieee8021ad as u16;

/// A pointer to a `T` at `offset` into the frame, or `None` if it does not fit.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The EtherType behind the Ethernet header and up to [`MAX_VLAN_TAGS`]
/// tags, and the offset of what it types (the IP header); `None` when the
/// frame ends inside them.
#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Option<(u16, usize)> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut offset = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: *const VlanHdr = ptr_at(ctx, offset)?;
        ether_type = unsafe { (*vlan).ether_type };
        offset += VlanHdr::LEN;
    }
    Some((ether_type, offset))
}

/// The length of the frame if it holds at least `end` bytes, else `None`.
/// The linear part answers for every single-buffer frame; only when it is too
/// short is the helper asked, which counts a multi-buffer frame's fragments
/// too. (A multi-buffer frame whose IP packet ends in the linear part is taken
/// for its linear part: what follows could only be padding.)
#[inline(always)]
pub fn frame_len_reaching(ctx: &XdpContext, end: usize) -> Option<u32> {
    let linear = ctx.data_end() - ctx.data();
    if end <= linear {
        return Some(linear as u32);
    }
    // SAFETY: reads the context the kernel passed, nothing else.
    let whole = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    (end <= whole).then_some(whole as u32)
}
