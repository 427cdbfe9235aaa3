//! The `balancer` XDP program: parse, look up the VIP, pick the backend,
//! forward. `process` says what happens to a packet; the entry point counts it.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
// Map keys are passed by reference on purpose: by value they would be copied on
// the 512-byte BPF stack first.
#![allow(clippy::needless_borrows_for_generic_args)]

mod counters;
mod forward;
mod maps;
mod notice;
mod parse;
mod select;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, macros::xdp, programs::XdpContext};
use lb_common::{DropReason, Mode};

use crate::{parse::Packet, select::Conn};

#[xdp]
pub fn balancer(ctx: XdpContext) -> u32 {
    let action = match process(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            counters::drop(reason);
            xdp_action::XDP_DROP
        }
    };
    counters::verdict(action);
    action
}

#[inline(always)]
fn process(ctx: &XdpContext) -> Result<u32, DropReason> {
    let flow = match parse::packet(ctx)? {
        Packet::Flow(flow) => flow,
        Packet::Other => return Ok(xdp_action::XDP_PASS),
        Packet::Unbalanceable { addr, family, reason, passed } => {
            let key = lb_common::VipKey { addr, port_be: 0, proto: 0, family };
            if select::is_vip_address(key) {
                return Err(reason);
            }
            counters::event(passed);
            return Ok(xdp_action::XDP_PASS);
        }
    };
    if !select::maybe_vip_address(&flow.key.dst, flow.key.family) {
        return Ok(xdp_action::XDP_PASS);
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // Established flows: one connection-table lookup, no VIP lookup by key.
    let (vip_index, mode, choice) = match select::connection(&flow, now) {
        Conn::Hit { choice, mode, vip } => (vip, mode, choice),
        conn => {
            let Some(vip) = select::vip(&flow.key) else {
                return Ok(xdp_action::XDP_PASS);
            };
            let known = match conn {
                Conn::Stale(entry) => Some(entry),
                _ => None,
            };
            if vip.mode != Mode::Dsr as u8 {
                return Err(DropReason::UnsupportedMode);
            }
            let choice = match select::balance(&flow, &vip, known, now) {
                Err(DropReason::NoBackend) => {
                    notice::no_backend(ctx, vip.index);
                    return Err(DropReason::NoBackend);
                }
                other => other?,
            };
            if !choice.remembered {
                notice::conn_table_full(ctx);
            }
            (vip.index, vip.mode, choice)
        }
    };
    if let Some(note) = flow.note {
        counters::event(note);
    }
    if mode != Mode::Dsr as u8 {
        return Err(DropReason::UnsupportedMode);
    }
    let action = forward::dsr(ctx, choice.index, &choice.backend, now)?;
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    counters::traffic(vip_index, choice.index, bytes, choice.new_flow);
    Ok(action)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_fib_lookup` is a GPL-only helper.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
