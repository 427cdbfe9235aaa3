//! `alwayson-testsrv`: a backend for the network-namespace test bed.
//!
//! ```text
//! alwayson-testsrv --name NAME [--tcp ADDR:PORT]... [--udp ADDR:PORT]...
//!                  [--http ADDR:PORT]... [--status-file PATH]
//! ```
//!
//! - TCP: writes `NAME\n`, then echoes every byte until EOF.
//! - UDP: answers each datagram with `NAME\n` and the datagram, from the
//!   address it was sent to (so a VIP held on `lo` answers as the VIP).
//! - HTTP/1.1: any request gets `200 OK` and `NAME\n`, `Connection: close`;
//!   the status is the number in `--status-file` when that file exists.
//!
//! IPv6 sockets are `IPV6_V6ONLY`: give `0.0.0.0:P` and `[::]:P` for both
//! families. Prints `ready` once every listener is bound; exits 0 on SIGTERM,
//! SIGINT or SIGHUP.

use std::{
    io::{self, Read as _, Write as _},
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    thread,
    time::Duration,
};

use alwayson_tests::bed::sock;

const BACKLOG: i32 = 4096;
const STACK: usize = 64 * 1024;

struct Args {
    name: String,
    tcp: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
    http: Vec<SocketAddr>,
    status_file: Option<PathBuf>,
}

const USAGE: &str = "usage: alwayson-testsrv --name NAME [--tcp ADDR:PORT]... [--udp ADDR:PORT]... \
                     [--http ADDR:PORT]... [--status-file PATH]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args { name: String::new(), tcp: vec![], udp: vec![], http: vec![], status_file: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let addr = || value.parse::<SocketAddr>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--name" => args.name = value.clone(),
            "--tcp" => args.tcp.push(addr()?),
            "--udp" => args.udp.push(addr()?),
            "--http" => args.http.push(addr()?),
            "--status-file" => args.status_file = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.name.is_empty() {
        return Err("--name is required".into());
    }
    Ok(args)
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = thread::Builder::new().name(name).stack_size(STACK).spawn(f) {
        eprintln!("spawning a thread: {e}");
    }
}

/// Accepts forever, one thread per connection.
fn serve_tcp(listener: TcpListener, kind: &'static str, handle: fn(TcpStream, &Shared)) {
    let shared = SHARED.get().expect("shared state");
    loop {
        match listener.accept() {
            Ok((stream, _)) => spawn(kind.into(), move || handle(stream, shared)),
            // ECONNABORTED, EMFILE...: report and keep serving.
            Err(e) => {
                eprintln!("{kind} accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

struct Shared {
    hello: Vec<u8>,
    status_file: Option<PathBuf>,
}

static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();

fn echo(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    if stream.write_all(&shared.hello).is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

fn status(shared: &Shared) -> u16 {
    let Some(path) = &shared.status_file else { return 200 };
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().ok().filter(|s| (100..1000).contains(s)).unwrap_or(200),
        Err(_) => 200,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn http(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    // Up to the end of the headers (a body, if any, is ignored), EOF or 64 KiB.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    if request.is_empty() {
        return;
    }
    let code = status(shared);
    let head = request.starts_with(b"HEAD ");
    let mut response = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(code),
        shared.hello.len()
    )
    .into_bytes();
    if !head {
        response.extend_from_slice(&shared.hello);
    }
    let _ = stream.write_all(&response);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Drain what the client still sends so close() does not turn into a reset.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// Ancillary data room for one pktinfo.
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// Answers every datagram from the address it was sent to (`IP_PKTINFO` /
/// `IPV6_RECVPKTINFO`), so a wildcard socket answers for a VIP on `lo`.
fn serve_udp(socket: UdpSocket) {
    let hello = &SHARED.get().expect("shared state").hello;
    let fd = socket.as_raw_fd();
    let v6 = socket.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let pktinfo = if v6 {
        sock::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1 as libc::c_int)
    } else {
        sock::setsockopt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1 as libc::c_int)
    };
    if let Err(e) = pktinfo {
        eprintln!("udp pktinfo: {e}");
    }
    let mut buf = vec![0u8; 65536];
    loop {
        let mut reply = hello.to_vec();
        match recv_with_dst(fd, &mut buf) {
            Ok((n, peer, dst)) => {
                reply.extend_from_slice(&buf[..n]);
                if let Err(e) = send_from(fd, &reply, &peer, dst.as_ref()) {
                    eprintln!("udp send to {peer}: {e}");
                }
            }
            Err(e) => {
                eprintln!("udp recv: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The local address a datagram was sent to.
enum Dst {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

fn recv_with_dst(fd: i32, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Dst>)> {
    // SAFETY: zeroed C structs; every pointer handed to recvmsg outlives the call.
    unsafe {
        let mut peer: libc::sockaddr_storage = zeroed();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = Cmsg([0; 64]);
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&raw mut peer).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len();
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let peer = match i32::from(peer.ss_family) {
            libc::AF_INET => {
                let sin = &*(&raw const peer).cast::<libc::sockaddr_in>();
                SocketAddr::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()).into(),
                    u16::from_be(sin.sin_port),
                )
            }
            libc::AF_INET6 => {
                let sin6 = &*(&raw const peer).cast::<libc::sockaddr_in6>();
                SocketAddr::V6(std::net::SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                ))
            }
            family => return Err(io::Error::other(format!("peer address family {family}"))),
        };
        let mut dst = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, ty) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if level == libc::IPPROTO_IP && ty == libc::IP_PKTINFO {
                let info = libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>().read_unaligned();
                dst = Some(Dst::V4(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes())));
            } else if level == libc::IPPROTO_IPV6 && ty == libc::IPV6_PKTINFO {
                let info = libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>().read_unaligned();
                dst = Some(Dst::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, peer, dst))
    }
}

fn send_from(fd: i32, data: &[u8], peer: &SocketAddr, src: Option<&Dst>) -> io::Result<()> {
    let (name, namelen) = sock::sockaddr(peer);
    // SAFETY: as in recv_with_dst; the control buffer is large enough for one pktinfo.
    unsafe {
        let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
        let mut control = Cmsg([0; 64]);
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&raw const name) as *mut _;
        msg.msg_namelen = namelen;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        match src {
            Some(Dst::V4(addr)) => {
                msg.msg_control = control.0.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from_ne_bytes(addr.octets()) },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>().write_unaligned(info);
            }
            Some(Dst::V6(addr)) => {
                msg.msg_control = control.0.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr { s6_addr: addr.octets() },
                    ipi6_ifindex: 0,
                };
                libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>().write_unaligned(info);
            }
            None => {}
        }
        if libc::sendmsg(fd, &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Blocks the exit signals in this thread and every thread it spawns later;
/// `main` waits for them with `sigwait`.
fn block_exit_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("alwayson-testsrv: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let signals = block_exit_signals();
    let hello = format!("{}\n", args.name).into_bytes();
    let _ = SHARED.set(Shared { hello, status_file: args.status_file.clone() });

    let fail = |what: &str, addr: &SocketAddr, e: io::Error| -> ! {
        eprintln!("alwayson-testsrv {}: binding {what} {addr}: {e}", args.name);
        std::process::exit(1);
    };
    for addr in &args.tcp {
        let listener = sock::tcp_listener(addr, BACKLOG).unwrap_or_else(|e| fail("tcp", addr, e));
        spawn(format!("tcp {addr}"), move || serve_tcp(listener, "tcp", echo));
    }
    for addr in &args.http {
        let listener = sock::tcp_listener(addr, BACKLOG).unwrap_or_else(|e| fail("http", addr, e));
        spawn(format!("http {addr}"), move || serve_tcp(listener, "http", http));
    }
    for addr in &args.udp {
        let socket = sock::udp_socket(addr).unwrap_or_else(|e| fail("udp", addr, e));
        spawn(format!("udp {addr}"), move || serve_udp(socket));
    }
    println!("ready");
    let _ = io::stdout().flush();

    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait on the set blocked above.
    unsafe { libc::sigwait(&signals, &mut sig) };
    println!("{}: signal {sig}, exiting", args.name);
    let _ = io::stdout().flush();
    std::process::exit(0);
}
