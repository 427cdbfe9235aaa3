//! Path MTU discovery through the balancer: an ICMP "too big" error about a
//! VIP flow reaches the backend serving that flow, whose kernel then lowers
//! its path MTU to the client, and no other backend hears of it.
//!
//! The error is sent from the client's namespace (standing in for a router on
//! the way back) with a raw socket, quoting the reply the backend sent from
//! the VIP. UDP, so the backend's kernel takes the error for its listening
//! socket without TCP's sequence-number check.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use alwayson_tests::{
    agent::{config_toml, Agent, VipConf},
    bed::{sock, TestBed, UDP_PORT, VIP4, VIP6},
    packet::{self, Frame, L4},
    root_or_skip,
};
use lb_common::Event;

const TIMEOUT: Duration = Duration::from_secs(3);
const MTU: u16 = 1300;
/// The client's port of the flow the error is about.
const CLIENT_PORT: u16 = 40_053;

/// Sends one datagram from `client`:[`CLIENT_PORT`] to `vip` and returns the
/// name of the backend that answered.
fn serving_backend(bed: &TestBed, client: IpAddr, vip: SocketAddr) -> String {
    bed.client_ns(0).run(|| {
        let socket = UdpSocket::bind(SocketAddr::new(client, CLIENT_PORT)).expect("bind");
        socket.connect(vip).expect("connect");
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        socket.send(b"which backend?").expect("send");
        let mut buf = [0u8; 2048];
        let n = socket.recv(&mut buf).expect("an answer through the VIP");
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        answer.split('\n').next().unwrap_or_default().to_string()
    })
}

/// The ICMP message (no IP header) of a too-big error about the reply `vip` →
/// `client`:[`CLIENT_PORT`], sent by `client`.
fn too_big_message(client: IpAddr, vip: SocketAddr) -> Vec<u8> {
    let reply = Frame::new(vip, SocketAddr::new(client, CLIENT_PORT), L4::Udp);
    let frame = packet::too_big(client, &reply, MTU, 1000);
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

/// What backend `i`'s kernel says about its route to `client`.
fn route_to(bed: &TestBed, i: usize, client: IpAddr) -> String {
    let family = if client.is_ipv4() { "-4" } else { "-6" };
    bed.backend_ns(i).ip(&[family, "route", "get", &client.to_string()]).expect("ip route get")
}

fn has_mtu(route: &str) -> bool {
    route.contains(&format!("mtu {MTU}"))
}

#[test]
fn a_too_big_error_lowers_the_path_mtu_of_the_serving_backend_only() {
    root_or_skip!("a_too_big_error_lowers_the_path_mtu_of_the_serving_backend_only");
    let bed = TestBed::builder().clients(1).backends(3).build().expect("bed");
    let vips = [
        VipConf::new(VIP4, UDP_PORT, "udp").backends(0..3),
        VipConf::new(VIP6, UDP_PORT, "udp").backends(0..3),
    ];
    let agent = Agent::start(&bed, &config_toml(&bed, &vips), &[]).expect("agent");

    for (client, vip) in [(bed.client_v4(0), VIP4), (bed.client_v6(0), VIP6)] {
        let vip = SocketAddr::new(vip.parse().unwrap(), UDP_PORT);
        let serving = serving_backend(&bed, client, vip);
        let backend =
            (0..3).find(|&i| bed.backend_name(i) == serving).expect("a backend of the bed answered");
        for i in 0..3 {
            assert!(!has_mtu(&route_to(&bed, i, client)), "backend{i} has a lowered MTU before the error");
        }
        let before = agent.stats().unwrap().counters().unwrap();
        send_raw(&bed, vip.ip(), &too_big_message(client, vip));
        let routes = alwayson_tests::wait_until(
            "the serving backend to lower its MTU",
            TIMEOUT,
            Duration::from_millis(10),
            || {
                let routes: Vec<String> = (0..3).map(|i| route_to(&bed, i, client)).collect();
                has_mtu(&routes[backend]).then_some(routes)
            },
        )
        .unwrap_or_else(|e| {
            panic!("{e}: {vip} served by {serving}; its route: {}", route_to(&bed, backend, client))
        });
        for (i, route) in routes.iter().enumerate().filter(|(i, _)| *i != backend) {
            assert!(!has_mtu(route), "backend{i} (not serving the flow) lowered its MTU too: {route}");
        }
        let moved = agent.stats().unwrap().counters().unwrap().since(&before);
        assert_eq!(moved.event(Event::IcmpTooBig), 1, "counted once ({moved})");
    }
}
