//! Spoofed floods: TCP ACKs, TCP SYNs and UDP datagrams to a VIP, each flow
//! from a random source address and port and sent twice, as a
//! connection-table flood from many hosts looks (see [`BLOCK`] for why
//! twice). Frames are sent by an `AF_PACKET` socket on a client's `eth0`,
//! addressed to the LB's MAC, so they stay inside the bed's namespaces and
//! pass no IP stack on the way to the balancer.
//!
//! Spoofed sources are in [`SPOOF_NET`], a part of the bed's /16 that no
//! namespace uses. Every namespace that could answer them must drop its
//! answers ([`drop_answers_to_spoofed`]): the backends answer a SYN with a
//! SYN-ACK, an ACK with a reset, a datagram with an ICMP error, and each
//! answer to an on-link address would first ARP for it, filling the kernel's
//! neighbour table (shared by every namespace of the host) with thousands of
//! unresolvable entries.

use std::{
    collections::HashSet,
    ffi::CString,
    fmt, io,
    mem::{size_of, zeroed},
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};

use crate::bed::TestBed;

/// Where spoofed sources come from: 10.77.128.0/17, which the bed's address
/// plan (10.77.0.x, 10.77.1.x, 10.77.2.x, VIPs at 10.77.100.x) leaves unused.
pub const SPOOF_NET: &str = "10.77.128.0/17";
const SPOOF_BASE: u32 = u32::from_be_bytes([10, 77, 128, 0]);
const SPOOF_HOSTS: u32 = 1 << 15;

/// Routes [`SPOOF_NET`] to a blackhole in the LB's, every client's and every
/// backend's namespace: answers to spoofed sources are dropped where they are
/// made, silently, instead of being ARPed for.
pub fn drop_answers_to_spoofed(bed: &TestBed) -> Result<()> {
    let clients = (0..bed.clients()).map(|i| bed.client_ns(i));
    let backends = (0..bed.backends()).map(|i| bed.backend_ns(i));
    for ns in std::iter::once(bed.lb_ns()).chain(clients).chain(backends) {
        ns.ip(&["route", "add", "blackhole", SPOOF_NET])?;
    }
    Ok(())
}

/// What to send, how fast, and when to stop.
#[derive(Clone, Copy, Debug)]
pub struct FloodSpec {
    /// The VIP address.
    pub dst: Ipv4Addr,
    /// TCP ACKs and SYNs go to this port.
    pub tcp_port: u16,
    /// UDP datagrams go to this port; `None`: TCP only.
    pub udp_port: Option<u16>,
    /// Frames per second (paced in 1 ms steps).
    pub rate: u64,
    /// The flood ends after this many frames…
    pub max_packets: u64,
    /// …or after this long, whichever comes first.
    pub max_time: Duration,
}

/// What a flood sent.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    pub sent: u64,
    pub acks: u64,
    pub syns: u64,
    pub udp: u64,
    /// Distinct 5-tuples among the frames sent.
    pub distinct: usize,
    pub elapsed: Duration,
    /// Sends the kernel refused (ENOBUFS…); the flood goes on.
    pub send_errors: u64,
    pub first_error: Option<String>,
    /// Seeds the random tuples: the same seed sends the same frames.
    pub seed: u64,
}

impl FloodReport {
    /// Frames per second, over the flood's whole time.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for FloodReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} spoofed frames ({} TCP ACK, {} TCP SYN, {} UDP; {} distinct 5-tuples) in {:.2} s: \
             {:.0}/s; {} send errors{}; seed {}",
            self.sent,
            self.acks,
            self.syns,
            self.udp,
            self.distinct,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.send_errors,
            self.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
            self.seed
        )
    }
}

/// A flood running on its own thread until its bounds end it or it is
/// stopped. Dropped without [`Flood::stop`] or [`Flood::wait`] (a test that
/// panicked), the thread is stopped and joined all the same, and its socket closed.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// `None` once joined.
    thread: Option<JoinHandle<FloodReport>>,
}

impl Flood {
    /// Starts flooding from client `client` (its MAC, its `eth0`) to the LB's MAC.
    pub fn start(bed: &TestBed, client: usize, spec: FloodSpec) -> Result<Self> {
        let socket = bed
            .client_ns(client)
            .run(|| packet_socket("eth0"))
            .with_context(|| format!("an AF_PACKET socket on client {client}'s eth0"))?;
        let seed: u64 = rand::random();
        let frames = Frames { src_mac: bed.client_mac(client), dst_mac: bed.lb_mac(), spec };
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::Builder::new()
            .name("spoof-flood".into())
            .spawn(move || flood(&socket, &frames, seed, &stop2, &sent2))
            .context("spawning the flood thread")?;
        Ok(Self { stop, sent, thread: Some(thread) })
    }

    /// Frames sent so far.
    pub fn sent_so_far(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits for the flood's bounds to end it.
    pub fn wait(mut self) -> FloodReport {
        self.thread.take().expect("joined only once").join().expect("flood thread")
    }

    /// Ends the flood now.
    pub fn stop(self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A panicked flood thread has nothing more to report.
            let _ = thread.join();
        }
    }
}

fn flood(socket: &OwnedFd, frames: &Frames, seed: u64, stop: &AtomicBool, sent: &AtomicU64) -> FloodReport {
    let spec = frames.spec;
    let mut report = FloodReport { seed, ..FloodReport::default() };
    let mut distinct = HashSet::with_capacity(spec.max_packets.min(1 << 20) as usize);
    let mut buf = Vec::with_capacity(128);
    let start = Instant::now();
    let mut tuples = Tuples::new(spec.udp_port.is_some(), seed);
    while !stop.load(Ordering::Relaxed) && report.sent < spec.max_packets {
        let elapsed = start.elapsed();
        if elapsed >= spec.max_time {
            break;
        }
        let due = ((elapsed.as_secs_f64() * spec.rate as f64) as u64).min(spec.max_packets);
        while report.sent < due {
            let (src, sport, kind, seq) = tuples.next();
            frames.write(&mut buf, kind, src, sport, seq);
            distinct.insert((src, sport, kind == Kind::Udp));
            // SAFETY: buf is initialised for its length; the socket is bound to the device.
            let n = unsafe { libc::send(socket.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                report.send_errors += 1;
                if report.first_error.is_none() {
                    report.first_error = Some(io::Error::last_os_error().to_string());
                }
            }
            match kind {
                Kind::Ack => report.acks += 1,
                Kind::Syn => report.syns += 1,
                Kind::Udp => report.udp += 1,
            }
            report.sent += 1;
        }
        sent.store(report.sent, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
    }
    sent.store(report.sent, Ordering::Relaxed);
    report.elapsed = start.elapsed();
    report.distinct = distinct.len();
    report
}

/// Tuples sent in a block, then again: a table that keeps entries touched
/// twice ahead of those touched once (the kernel's LRU keeps an active and
/// an inactive list, as the page cache does) would shrug off a flood of
/// one-packet flows; a second packet per flow makes the flood's entries look
/// as alive as an established connection's.
const BLOCK: usize = 32;

/// The flood's 5-tuples (source address, source port, kind, TCP sequence):
/// [`BLOCK`] new random ones in the mix of 5 ACKs, 2 SYNs and 1 datagram in
/// 8 (ACKs instead of datagrams for a TCP-only flood), then the same again,
/// each TCP one as an ACK.
struct Tuples {
    rng: StdRng,
    udp: bool,
    block: Vec<(Ipv4Addr, u16, Kind, u32)>,
    /// Next in `block`, counting the second round from `BLOCK`.
    at: usize,
    made: u64,
}

impl Tuples {
    fn new(udp: bool, seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            udp,
            block: Vec::with_capacity(BLOCK),
            at: 2 * BLOCK,
            made: 0,
        }
    }

    fn next(&mut self) -> (Ipv4Addr, u16, Kind, u32) {
        if self.at == 2 * BLOCK {
            self.block.clear();
            for _ in 0..BLOCK {
                let kind = match self.made % 8 {
                    5 | 6 => Kind::Syn,
                    7 if self.udp => Kind::Udp,
                    _ => Kind::Ack,
                };
                self.made += 1;
                // Host parts 1..=32766: neither the /17's network nor its broadcast address.
                let src = Ipv4Addr::from(SPOOF_BASE + self.rng.gen_range(1..SPOOF_HOSTS - 1));
                self.block.push((src, self.rng.gen_range(1024..=u16::MAX), kind, self.rng.gen()));
            }
            self.at = 0;
        }
        let (src, sport, kind, seq) = self.block[self.at % BLOCK];
        let again = self.at >= BLOCK;
        self.at += 1;
        match kind {
            Kind::Syn if again => (src, sport, Kind::Ack, seq.wrapping_add(1)),
            _ => (src, sport, kind, seq),
        }
    }
}

/// An `AF_PACKET` socket bound to `ifname` of the calling thread's
/// namespace, for sending whole frames. Protocol 0: it receives nothing.
fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let name = CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: plain call with a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain syscall; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::sa_family_t;
    addr.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: addr is a valid sockaddr_ll of the size passed.
    let ret = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ack,
    Syn,
    Udp,
}

/// Writes the flood's frames: Ethernet, IPv4 (no options), TCP (no options,
/// no payload) or UDP (8 bytes of payload), checksums complete.
struct Frames {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    spec: FloodSpec,
}

const UDP_PAYLOAD: &[u8; 8] = b"flooding";

impl Frames {
    fn write(&self, out: &mut Vec<u8>, kind: Kind, src: Ipv4Addr, sport: u16, seq: u32) {
        let (proto, dport, l4_len) = match kind {
            Kind::Ack | Kind::Syn => (libc::IPPROTO_TCP as u8, self.spec.tcp_port, 20u16),
            Kind::Udp => {
                (libc::IPPROTO_UDP as u8, self.spec.udp_port.unwrap_or(0), 8 + UDP_PAYLOAD.len() as u16)
            }
        };
        let (src, dst) = (src.octets(), self.spec.dst.octets());
        out.clear();
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        out.extend_from_slice(&0x0800u16.to_be_bytes());
        let l3 = out.len();
        out.extend_from_slice(&[0x45, 0]);
        out.extend_from_slice(&(20 + l4_len).to_be_bytes());
        // Identification 0, don't fragment, TTL 64, checksum filled in below.
        out.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        out.extend_from_slice(&src);
        out.extend_from_slice(&dst);
        let ip_sum = checksum(0, &out[l3..l3 + 20]);
        out[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());

        let l4 = out.len();
        out.extend_from_slice(&sport.to_be_bytes());
        out.extend_from_slice(&dport.to_be_bytes());
        let sum_at = match kind {
            Kind::Ack | Kind::Syn => {
                let (ack, flags) = if kind == Kind::Syn { (0u32, 0x02) } else { (1u32, 0x10) };
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&ack.to_be_bytes());
                // Data offset 5 words, the flags, window 64240, checksum, urgent pointer.
                out.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
                l4 + 16
            }
            Kind::Udp => {
                out.extend_from_slice(&l4_len.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(UDP_PAYLOAD);
                l4 + 6
            }
        };
        // The pseudo-header: addresses, protocol, L4 length.
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&src);
        pseudo[4..8].copy_from_slice(&dst);
        pseudo[9] = proto;
        pseudo[10..].copy_from_slice(&l4_len.to_be_bytes());
        let mut sum = checksum(sum_words(0, &pseudo), &out[l4..]);
        if kind == Kind::Udp && sum == 0 {
            // Zero means "no checksum" in UDP over IPv4.
            sum = 0xffff;
        }
        out[sum_at..sum_at + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words, added to `acc`.
fn sum_words(acc: u32, bytes: &[u8]) -> u32 {
    bytes.chunks(2).fold(acc, |acc, w| acc + u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
}

/// The Internet checksum of `bytes`, starting from the partial sum `acc`.
fn checksum(acc: u32, bytes: &[u8]) -> u16 {
    let mut sum = sum_words(acc, bytes);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    fn frames() -> Frames {
        let spec = FloodSpec {
            dst: Ipv4Addr::new(10, 77, 100, 1),
            tcp_port: 80,
            udp_port: Some(53),
            rate: 1,
            max_packets: 1,
            max_time: Duration::from_secs(1),
        };
        Frames { src_mac: [2, 0x77, 0, 2, 0, 0], dst_mac: [2, 0x77, 0, 0, 0, 2], spec }
    }

    #[test]
    fn flood_frames_parse_with_correct_checksums() {
        let frames = frames();
        let mut rng = StdRng::seed_from_u64(7);
        let mut buf = Vec::new();
        for kind in [Kind::Ack, Kind::Syn, Kind::Udp] {
            for _ in 0..200 {
                let src = Ipv4Addr::from(SPOOF_BASE + rng.gen_range(1..SPOOF_HOSTS - 1));
                let sport = rng.gen_range(1024..=u16::MAX);
                frames.write(&mut buf, kind, src, sport, rng.gen());
                let packet = SlicedPacket::from_ethernet(&buf).expect("a well-formed frame");
                let Some(NetSlice::Ipv4(ip)) = &packet.net else { panic!("not IPv4: {packet:?}") };
                let header = ip.header().to_header();
                assert_eq!(header.header_checksum, header.calc_header_checksum(), "{kind:?}");
                assert_eq!((header.source, header.destination), (src.octets(), [10, 77, 100, 1]));
                assert!(header.dont_fragment && header.fragment_offset.value() == 0);
                let payload = ip.payload().payload;
                match &packet.transport {
                    Some(TransportSlice::Tcp(tcp)) => {
                        let h = tcp.to_header();
                        assert_eq!(h.checksum, h.calc_checksum_ipv4(&header, &[]).unwrap(), "{kind:?}");
                        assert_eq!((h.source_port, h.destination_port), (sport, 80));
                        assert_eq!((h.syn, h.ack), (kind == Kind::Syn, kind == Kind::Ack));
                        assert_eq!(payload.len(), 20);
                    }
                    Some(TransportSlice::Udp(udp)) => {
                        let h = udp.to_header();
                        assert_eq!(h.checksum, h.calc_checksum_ipv4(&header, UDP_PAYLOAD).unwrap());
                        assert_eq!((h.source_port, h.destination_port), (sport, 53));
                        assert_eq!(kind, Kind::Udp);
                    }
                    other => panic!("{kind:?}: transport {other:?}"),
                }
            }
        }
    }

    #[test]
    fn checksum_of_a_known_ipv4_header() {
        // The classic example header (Wikipedia, "IPv4 header checksum").
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(0, &header), 0xb861);
    }
}
