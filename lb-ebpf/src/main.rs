//! The `balancer` XDP program: parse, look up the VIP, pick the backend,
//! forward. `process` says what happens to a packet; the entry point counts it.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
// Map keys are passed by reference on purpose: by value they would be copied on
// the 512-byte BPF stack first.
#![allow(clippy::needless_borrows_for_generic_args)]

mod checksum;
mod counters;
mod forward;
mod frame;
mod maps;
mod nat;
mod notice;
mod parse;
mod record;
mod select;
mod too_big;
mod tunnel;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, macros::xdp, programs::XdpContext};
use lb_common::{DropReason, Mode, Verdict, VipKey, VipValue};

use crate::{parse::Packet, select::Choice};

// A verdict is returned as its `xdp_action` and counted in its slot.
const _: () = {
    assert!(Verdict::Aborted.action() == xdp_action::XDP_ABORTED);
    assert!(Verdict::Drop.action() == xdp_action::XDP_DROP);
    assert!(Verdict::Pass.action() == xdp_action::XDP_PASS);
    assert!(Verdict::Tx.action() == xdp_action::XDP_TX);
    assert!(Verdict::Redirect.action() == xdp_action::XDP_REDIRECT);
};

// `frags`: jumbo-MTU interfaces deliver frames in several buffers, and most
// drivers refuse a program that does not declare it can take them.
#[xdp(frags)]
pub fn balancer(ctx: XdpContext) -> u32 {
    let verdict = match process(&ctx) {
        Ok(verdict) => verdict,
        Err(reason) => {
            counters::drop(reason);
            Verdict::Drop
        }
    };
    counters::verdict(verdict);
    verdict.action()
}

/// `dsr`, `tunnel` and `nat` are built; another mode (a newer agent's)
/// drops with its own reason.
#[inline(always)]
fn supported(mode: u8) -> Result<(), DropReason> {
    if mode == Mode::Dsr as u8 || mode == Mode::Tunnel as u8 || mode == Mode::Nat as u8 {
        Ok(())
    } else {
        Err(DropReason::UnsupportedMode)
    }
}

#[inline(always)]
fn process(ctx: &XdpContext) -> Result<Verdict, DropReason> {
    // An ICMP too-big error goes where the flow it is about goes, but is no
    // flow of its own: nothing is recorded for it.
    let (flow, too_big) = match parse::packet(ctx)? {
        Packet::Flow(flow) => (flow, false),
        Packet::TooBig(flow) => (flow, true),
        Packet::Other => return Ok(Verdict::Pass),
        Packet::Unbalanceable { addr, family, reason, passed } => {
            if select::is_vip_address(&VipKey::of_address(addr, family)) {
                return Err(reason);
            }
            counters::event(passed);
            return Ok(Verdict::Pass);
        }
    };
    if !select::maybe_vip_address(&flow.key.dst, flow.key.family) {
        return not_for_a_vip(ctx, &flow, too_big);
    }
    let Some(vip) = select::vip(&flow.key) else {
        return not_for_a_vip(ctx, &flow, too_big);
    };
    supported(vip.mode)?;
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if vip.mode == Mode::Nat as u8 {
        // ICMP errors about NAT flows are not translated: they pass to the host.
        if too_big {
            return Ok(Verdict::Pass);
        }
        let sent = nat::forward(ctx, &flow, &vip, now)?;
        if let Some(note) = flow.note {
            counters::event(note);
        }
        counters::traffic(vip.index, sent.backend, u64::from(flow.len), sent.new_flow);
        return Ok(sent.verdict);
    }
    let choice = balance(ctx, &flow, &vip, !too_big, now)?;
    let verdict = if vip.mode == Mode::Tunnel as u8 {
        match tunnel::encap(ctx, &flow, choice.index, &choice.backend, now, !too_big)? {
            tunnel::Sent::Backend(verdict) => verdict,
            // Answered, not forwarded: no traffic for the VIP or the backend.
            tunnel::Sent::TooBig => return Ok(Verdict::Tx),
        }
    } else {
        forward::dsr(ctx, choice.index, &choice.backend, now)?
    };
    if let Some(note) = flow.note {
        counters::event(note);
    }
    counters::traffic(vip.index, choice.index, u64::from(flow.len), choice.new_flow);
    Ok(verdict)
}

/// A TCP or UDP packet to no VIP: a NAT reply (rewritten back to the
/// client), or the host's own traffic, passed untouched.
#[inline(always)]
fn not_for_a_vip(ctx: &XdpContext, flow: &parse::Flow, too_big: bool) -> Result<Verdict, DropReason> {
    if too_big {
        return Ok(Verdict::Pass);
    }
    let verdict = nat::reply(ctx, flow)?;
    if verdict != Verdict::Pass {
        if let Some(note) = flow.note {
            counters::event(note);
        }
    }
    Ok(verdict)
}

/// The flow's backend, with the notices for the ways that can go wrong.
#[inline(always)]
fn balance(
    ctx: &XdpContext,
    flow: &parse::Flow,
    vip: &VipValue,
    record: bool,
    now: u64,
) -> Result<Choice, DropReason> {
    let choice = match select::backend(flow, vip, record, now) {
        Err(DropReason::NoBackend) => {
            notice::no_backend(ctx, vip.index, now);
            return Err(DropReason::NoBackend);
        }
        other => other?,
    };
    if !choice.remembered {
        notice::conn_table_full(ctx, now);
    }
    Ok(choice)
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
