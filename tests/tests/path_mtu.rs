//! Path MTU discovery through the balancer: an ICMP "too big" error about a
//! VIP flow reaches the backend serving that flow, whose kernel then lowers
//! its path MTU to the client, and no other backend hears of it.
//!
//! The error is sent from the client's namespace (standing in for a router on
//! the way back) with a raw socket, quoting the reply the backend sent from
//! the VIP. UDP, so the backend's kernel takes the error for its listening
//! socket without TCP's sequence-number check.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use alwayson_tests::{
    agent::{config_toml, Agent, VipConf},
    bed::{sock, TestBed, UDP_PORT, VIP4, VIP6},
    packet::{self, Frame, L4},
    require_root, wait_until,
};
use lb_common::Event;

const TIMEOUT: Duration = Duration::from_secs(3);
const MTU: u16 = 1300;

/// The ICMP message (no IP header) of a too-big error about the reply `vip` →
/// `client`, sent by `client`.
fn too_big_message(client: SocketAddr, vip: SocketAddr) -> Vec<u8> {
    let reply = Frame::new(vip, client, L4::Udp);
    let frame = packet::too_big(client.ip(), &reply, MTU, 1000);
    let ip_header = if client.is_ipv4() { 20 } else { 40 };
    frame[packet::ETH_LEN + ip_header..].to_vec()
}

/// Sends `message` to `to` on a raw ICMP (or ICMPv6) socket in the client's
/// namespace; the kernel puts the IP header on (and, for ICMPv6, the checksum).
fn send_raw(bed: &TestBed, to: IpAddr, message: &[u8]) {
    bed.client_ns(0).run(|| {
        let (domain, proto) = if to.is_ipv4() {
            (libc::AF_INET, libc::IPPROTO_ICMP)
        } else {
            (libc::AF_INET6, libc::IPPROTO_ICMPV6)
        };
        // SAFETY: socket(2) with constant arguments; the fd is owned at once.
        let fd = unsafe { libc::socket(domain, libc::SOCK_RAW, proto) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let (addr, len) = sock::sockaddr(&SocketAddr::new(to, 0));
        // SAFETY: the buffer and address outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const addr).cast(),
                len,
            )
        };
        assert_eq!(sent, message.len() as isize, "sendto: {}", std::io::Error::last_os_error());
    });
}

/// Which backends' kernels hold a path MTU of [`MTU`] towards `client`.
fn lowered(bed: &TestBed, client: IpAddr) -> BTreeSet<usize> {
    let family = if client.is_ipv4() { "-4" } else { "-6" };
    (0..bed.backends())
        .filter(|&i| {
            let route =
                bed.backend_ns(i).ip(&[family, "route", "get", &client.to_string()]).expect("ip route get");
            route.contains(&format!("mtu {MTU}"))
        })
        .collect()
}

/// Two flows from `client` through `vip` that land on different backends:
/// (client port, backend) each.
fn flows_on_two_backends(bed: &TestBed, vip: SocketAddr) -> [(u16, usize); 2] {
    let mut first: Option<(u16, usize)> = None;
    for port in 40_000..40_064 {
        let name = bed.udp_name_from(0, port, vip, TIMEOUT).expect("an answer through the VIP");
        let backend =
            (0..bed.backends()).find(|&i| bed.backend_name(i) == name).expect("a backend of the bed");
        match first {
            None => first = Some((port, backend)),
            Some(f) if f.1 != backend => return [f, (port, backend)],
            Some(_) => {}
        }
    }
    panic!("64 flows through {vip} all landed on one backend");
}

#[test]
#[ignore = "needs root"]
fn a_too_big_error_lowers_the_path_mtu_of_the_serving_backend_only() {
    require_root("a_too_big_error_lowers_the_path_mtu_of_the_serving_backend_only");
    let bed = TestBed::builder().clients(1).backends(3).build().expect("bed");
    let vips = [
        VipConf::new(VIP4, UDP_PORT, "udp").backends(0..3),
        VipConf::new(VIP6, UDP_PORT, "udp").backends(0..3),
    ];
    let agent = Agent::start(&bed, &config_toml(&bed, &vips), &[]).expect("agent");

    for (client, vip) in [(bed.client_v4(0), VIP4), (bed.client_v6(0), VIP6)] {
        let vip = SocketAddr::new(vip.parse().unwrap(), UDP_PORT);
        assert!(lowered(&bed, client).is_empty(), "a lowered MTU before any error");
        // One flow's error, then the other's: each must reach its own backend,
        // the first one alone (the path MTU is per destination, not per flow).
        let mut want = BTreeSet::new();
        for (port, backend) in flows_on_two_backends(&bed, vip) {
            let before = agent.stats().unwrap().counters().unwrap();
            send_raw(&bed, vip.ip(), &too_big_message(SocketAddr::new(client, port), vip));
            want.insert(backend);
            let what = format!("backends {want:?} (and no other) to lower their MTU towards {client}");
            let got = wait_until(&what, TIMEOUT, Duration::from_millis(10), || {
                let now = lowered(&bed, client);
                now.is_superset(&want).then_some(now)
            });
            assert_eq!(got.unwrap_or_else(|e| panic!("{e}: {:?} have", lowered(&bed, client))), want);
            let moved = agent.stats().unwrap().counters().unwrap().since(&before);
            assert_eq!(moved.event(Event::IcmpTooBig), 1, "counted once ({moved})");
        }
    }
}
