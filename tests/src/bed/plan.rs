//! The bed's address plan: fixed addresses and readable MACs per namespace
//! (see the module documentation of [`super`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::TestBed;

/// The bed's default VIPs (every client routes them via the LB, every backend
/// holds them on `lo`).
pub const VIP4: &str = "10.77.100.1";
pub const VIP6: &str = "fd77::100";
pub const DEFAULT_VIPS: [&str; 2] = [VIP4, VIP6];

/// [`VIP4`] on `port`.
pub fn vip4(port: u16) -> SocketAddr {
    SocketAddr::new(VIP4.parse().expect("VIP4 is an address"), port)
}

/// The IPv6 address whose last group reads like the decimal `n` (`fd77::1:` + "10").
fn v6_with_digits(group7: u16, n: u16) -> Ipv6Addr {
    let digits = u16::from_str_radix(&n.to_string(), 16).expect("at most 4 decimal digits");
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, group7, digits)
}

impl TestBed {
    pub fn lb_v4(&self) -> IpAddr {
        Ipv4Addr::new(10, 77, 0, 2).into()
    }

    pub fn lb_v6(&self) -> IpAddr {
        Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2).into()
    }

    pub fn backend_v4(&self, i: usize) -> IpAddr {
        Ipv4Addr::new(10, 77, 1, 10 + i as u8).into()
    }

    pub fn backend_v6(&self, i: usize) -> IpAddr {
        v6_with_digits(1, 10 + i as u16).into()
    }

    pub fn client_v4(&self, i: usize) -> IpAddr {
        Ipv4Addr::new(10, 77, 2, 10 + i as u8).into()
    }

    pub fn client_v6(&self, i: usize) -> IpAddr {
        v6_with_digits(2, 10 + i as u16).into()
    }

    /// `eth0` of the LB namespace. Bridge-side ends have the same MAC with
    /// byte 2 = 0xff.
    pub fn lb_mac(&self) -> [u8; 6] {
        [0x02, 0x77, 0, 0, 0, 0x02]
    }

    pub fn backend_mac(&self, i: usize) -> [u8; 6] {
        [0x02, 0x77, 0, 0x01, 0, i as u8]
    }

    pub fn client_mac(&self, i: usize) -> [u8; 6] {
        [0x02, 0x77, 0, 0x02, 0, i as u8]
    }

    /// The backend's name as its servers answer it.
    pub fn backend_name(&self, i: usize) -> String {
        format!("backend{i}")
    }
}
