//! The agent's Maglev rings, computed in the test: which backend a flow's
//! ring slot names under a given config, and which flows a ring change moves.
//! Tests use it to pick flows on slots that change (coverage by construction,
//! not by luck) and to say how many of their flows a change could hurt.

use std::net::{IpAddr, SocketAddr};

use lb_common::FlowKey;
use lb_userspace::maglev::{self, Member, NO_MEMBER};

use crate::{agent::VipConf, bed::TestBed};

/// A VIP's ring as the agent builds it from a [`VipConf`], by bed backend index.
pub struct Ring {
    seed: u32,
    /// Slot -> bed backend index (`None`: empty slot).
    slots: Vec<Option<usize>>,
}

impl Ring {
    /// The ring of `vip` with hash seed `seed` and `size` slots: what the agent
    /// writes when every backend of `vip` is up (no health checks), primaries
    /// only (no backups in `vip`).
    pub fn of(bed: &TestBed, vip: &VipConf, seed: u32, size: u32) -> Self {
        assert!(vip.backends.iter().all(|b| !b.backup), "the model knows no backups");
        let members: Vec<Member> = vip
            .backends
            .iter()
            .map(|b| {
                let addr =
                    if vip.address.is_ipv6() { bed.backend_v6(b.index) } else { bed.backend_v4(b.index) };
                Member { id: SocketAddr::new(addr, vip.port), weight: b.weight }
            })
            .collect();
        let slots = maglev::build(&members, size)
            .into_iter()
            .map(|m| (m != NO_MEMBER).then(|| vip.backends[m as usize].index))
            .collect();
        Self { seed, slots }
    }

    /// The slot `flow` hashes to, as the kernel computes it.
    pub fn slot(&self, flow: &FlowKey) -> usize {
        (flow.hash(self.seed) % self.slots.len() as u32) as usize
    }

    /// The backend `flow`'s slot names.
    pub fn owner(&self, flow: &FlowKey) -> Option<usize> {
        self.slots[self.slot(flow)]
    }
}

/// The flow of a TCP connection from `local` to `vip`.
pub fn tcp_flow(local: SocketAddr, vip: SocketAddr) -> FlowKey {
    FlowKey::new(local.ip(), local.port(), vip.ip(), vip.port(), lb_common::types::PROTO_TCP)
}

/// `client`'s address in `vip`'s family with port `port`.
pub fn client_addr(bed: &TestBed, client: usize, vip: SocketAddr, port: u16) -> SocketAddr {
    let ip: IpAddr = if vip.is_ipv6() { bed.client_v6(client) } else { bed.client_v4(client) };
    SocketAddr::new(ip, port)
}
