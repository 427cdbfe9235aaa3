//! Facts shared by the XDP program and the agent: sizes, map names, the
//! `#[repr(C)]` keys and values the maps hold, the counter layout and the
//! flow hash. Both sides compile this crate, so nothing here is mirrored by hand.
#![no_std]

pub mod counters;
pub mod hash;
pub mod maps;
pub mod nat;
pub mod sizes;
pub mod tunnel;
pub mod types;

pub use counters::{DecapCounter, DropReason, Event, Verdict};
pub use nat::{NatForward, NatReverse, NatSource};
pub use tunnel::TunnelSource;
pub use types::{
    Backend, BackendState, ConnValue, DataplaneConfig, FlowKey, Mode, NextHop, RingSlot, TrafficStats,
    VipKey, VipValue, NO_BACKEND,
};
