//! `mode = "nat"`: full NAT. A client's packet `client:cport → VIP:vport`
//! leaves as `nat address:nat port → backend:port`; the backend's reply
//! `backend:port → nat address:nat port` leaves as `VIP:vport → client:cport`.
//! Two tables hold a mapping, one per direction, both keyed by the packet's
//! 5-tuple as it arrives ([`crate::FlowKey`]):
//!
//! - `NAT_FORWARD`: the client's flow → [`NatForward`];
//! - `NAT_REVERSE`: the backend's reply flow → [`NatReverse`].
//!
//! The kernel creates both on a flow's first packet (a TCP SYN, or any UDP
//! packet) and marks what it sees ([`NAT_SEEN_REPLY`], [`NAT_SEEN_CLOSE`]);
//! the agent removes pairs that have timed out. Plain hash maps, not LRU: a
//! mapping holds a port, and ports must come back when and only when the
//! agent says the mapping is over.

/// Where a VIP's NATed flows leave from: one per VIP index in `NAT_SOURCES`.
/// `port_count` 0: the VIP is not NATed (no new mappings).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatSource {
    /// The balancer's own address (the VIP's family), words in network order.
    pub addr: [u32; 4],
    /// Source ports `port_min ..= port_min + port_count - 1`, host order.
    pub port_min: u16,
    pub port_count: u16,
}

/// A client flow's mapping (`NAT_FORWARD`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatForward {
    /// The balancer address the flow leaves from.
    pub nat_addr: [u32; 4],
    /// The backend as it was when mapped: the reverse key is derived from
    /// these even if the backend slot is reused since.
    pub backend_addr: [u32; 4],
    pub backend_port_be: u16,
    pub nat_port_be: u16,
    /// The backend slot (stats, and whether it still takes the flow).
    pub backend: u32,
    /// The VIP index.
    pub vip: u32,
    /// Last packet, in [`crate::types::coarse_seconds`].
    pub seen: u32,
    /// `NAT_SEEN_*` bits seen in this direction.
    pub flags: u32,
}

/// A reply flow's mapping back (`NAT_REVERSE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatReverse {
    pub client: [u32; 4],
    pub vip_addr: [u32; 4],
    pub client_port_be: u16,
    pub vip_port_be: u16,
    /// Where the client's first packet came in, and the two MAC addresses of
    /// that frame, swapped for the reply: the next hop towards the client is
    /// the one that delivered its packets, so a reply needs no FIB lookup.
    pub ifindex: u32,
    pub peer_mac: [u8; 6],
    pub own_mac: [u8; 6],
    pub vip: u32,
    pub backend: u32,
    pub seen: u32,
    pub flags: u32,
}

/// The backend answered: the mapping is established.
pub const NAT_SEEN_REPLY: u32 = 1;
/// A TCP FIN or RST went by, in either direction: the mapping is closing.
pub const NAT_SEEN_CLOSE: u32 = 2;

impl NatForward {
    /// The `NAT_REVERSE` key of this mapping's replies.
    pub const fn reverse_key(&self, proto: u8, family: u8) -> crate::FlowKey {
        crate::FlowKey {
            src: self.backend_addr,
            dst: self.nat_addr,
            sport_be: self.backend_port_be,
            dport_be: self.nat_port_be,
            proto,
            family,
            _pad: [0; 2],
        }
    }
}

impl NatReverse {
    /// The `NAT_FORWARD` key of the client flow this reply belongs to.
    pub const fn forward_key(&self, proto: u8, family: u8) -> crate::FlowKey {
        crate::FlowKey {
            src: self.client,
            dst: self.vip_addr,
            sport_be: self.client_port_be,
            dport_be: self.vip_port_be,
            proto,
            family,
            _pad: [0; 2],
        }
    }
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<NatSource>() == 20);
    assert!(size_of::<NatForward>() == 52);
    assert!(size_of::<NatReverse>() == 68);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, no implicit padding (sizes pinned above).
    unsafe impl aya::Pod for super::NatSource {}
    unsafe impl aya::Pod for super::NatForward {}
    unsafe impl aya::Pod for super::NatReverse {}
}
