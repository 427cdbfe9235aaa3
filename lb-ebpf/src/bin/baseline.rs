//! Two trivial programs, kept beside the balancer so they are built the same way:
//! `xdp_drop`, the floor per-packet costs are measured against, and `xdp_pass`,
//! which the test bed attaches to veth peers (XDP_TX on a veth only delivers
//! when the peer runs an XDP program). Both take multi-buffer frames, as the
//! balancer does: a veth refuses a program without `frags` when its peer's MTU
//! is above a page.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp(frags)]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp(frags)]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
