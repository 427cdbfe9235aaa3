//! The cluster bed's address plan (see the module documentation of
//! [`super`]). Every bed has its own namespaces, so the addresses are fixed:
//! nodes are numbered from 1 (`lb1`, AS 65001), backends and clients from 0
//! (`backend0`, as on [`crate::bed::TestBed`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The default VIP: every backend holds it on `lo`, every node serves it.
pub const VIP: &str = "10.77.163.1";
/// The range the router accepts announcements from: host routes in it only.
pub const VIP_RANGE: &str = "10.77.163.0/24";
pub const ROUTER_AS: u32 = 65000;

/// [`VIP`] on `port`.
pub fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().expect("VIP is an address"), port)
}

/// Node `node`'s AS: 65000 + node.
pub fn node_as(node: usize) -> u32 {
    ROUTER_AS + node as u32
}

/// The router on the front segment (10.77.160.1): the nodes' BGP neighbour,
/// the backends' default gateway.
pub fn router_v4() -> IpAddr {
    Ipv4Addr::new(10, 77, 160, 1).into()
}

/// The router on the clients' segment (10.77.161.1): the clients' gateway.
pub fn router_client_v4() -> IpAddr {
    Ipv4Addr::new(10, 77, 161, 1).into()
}

/// Node `node`'s `eth0`, on the front segment: 10.77.160.(10+node). Also its
/// BGP router id.
pub fn node_v4(node: usize) -> IpAddr {
    Ipv4Addr::new(10, 77, 160, 10 + node as u8).into()
}

/// Node `node`'s `eth1`, on the cluster segment: 10.77.162.(10+node).
pub fn node_cluster_v4(node: usize) -> IpAddr {
    Ipv4Addr::new(10, 77, 162, 10 + node as u8).into()
}

/// Backend `i` on the front segment: 10.77.160.(100+i).
pub fn backend_v4(i: usize) -> IpAddr {
    Ipv4Addr::new(10, 77, 160, 100 + i as u8).into()
}

/// Client `i` on the clients' segment: 10.77.161.(10+i).
pub fn client_v4(i: usize) -> IpAddr {
    Ipv4Addr::new(10, 77, 161, 10 + i as u8).into()
}

/// The UDP port of the agents' heartbeats (`[cluster] listen`, `peers`).
pub const HEARTBEAT_PORT: u16 = 7947;

/// Node `node`'s heartbeat address: its `eth1`, [`HEARTBEAT_PORT`].
pub fn node_heartbeat(node: usize) -> SocketAddr {
    SocketAddr::new(node_cluster_v4(node), HEARTBEAT_PORT)
}

/// Node `node`'s etcd client URL (on the cluster segment).
pub fn etcd_client_url(node: usize) -> String {
    format!("http://{}:2379", node_cluster_v4(node))
}

/// Node `node`'s etcd peer URL (on the cluster segment).
pub fn etcd_peer_url(node: usize) -> String {
    format!("http://{}:2380", node_cluster_v4(node))
}

/// The node a front-segment address belongs to, if any.
pub fn node_of(addr: IpAddr) -> Option<usize> {
    match addr {
        IpAddr::V4(v4) => match v4.octets() {
            [10, 77, 160, n] if (11..100).contains(&n) => Some(n as usize - 10),
            _ => None,
        },
        IpAddr::V6(_) => None,
    }
}

/// Readable MACs: `02:77:<segment>:<kind>:00:<index>` on the namespace's
/// side, byte 4 = 0xff on the other end of the veth.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Router = 0,
    Node = 1,
    Backend = 2,
    Client = 3,
}

pub(super) const FRONT: u8 = 160;
pub(super) const CLIENTS: u8 = 161;
pub(super) const CLUSTER: u8 = 162;

pub(super) fn mac(segment: u8, kind: Kind, index: usize) -> [u8; 6] {
    [0x02, 0x77, segment, kind as u8, 0, index as u8]
}

pub(super) fn peer_mac(segment: u8, kind: Kind, index: usize) -> [u8; 6] {
    let mut mac = mac(segment, kind, index);
    mac[4] = 0xff;
    mac
}
