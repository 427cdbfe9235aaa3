//! The few socket calls std does not offer: `IPV6_V6ONLY` before bind, a
//! listen backlog of our choosing, bind-before-connect. Shared by the bed and
//! `alwayson-testsrv`.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

/// `addr` as a `sockaddr_storage` and its length.
pub fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: T) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed along.
    cvt(unsafe {
        libc::setsockopt(fd, level, name, (&raw const value).cast(), size_of::<T>() as libc::socklen_t)
    })
    .map(drop)
}

/// A socket of `addr`'s family, close-on-exec, with `SO_REUSEADDR`; IPv6
/// sockets are `IPV6_V6ONLY`, so `0.0.0.0:P` and `[::]:P` bind side by side.
pub fn socket(addr: &SocketAddr, ty: libc::c_int) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscall; the fd is owned right away.
    let fd = unsafe { OwnedFd::from_raw_fd(cvt(libc::socket(family, ty | libc::SOCK_CLOEXEC, 0))?) };
    setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1 as libc::c_int)?;
    if addr.is_ipv6() {
        setsockopt(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1 as libc::c_int)?;
    }
    Ok(fd)
}

pub fn bind(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of length len.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) }).map(drop)
}

/// A TCP listener on `addr` with the given backlog.
pub fn tcp_listener(addr: &SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let fd = socket(addr, libc::SOCK_STREAM)?;
    bind(&fd, addr)?;
    // SAFETY: plain syscall on an fd we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(TcpListener::from(fd))
}

/// A UDP socket bound to `addr`.
pub fn udp_socket(addr: &SocketAddr) -> io::Result<UdpSocket> {
    let fd = socket(addr, libc::SOCK_DGRAM)?;
    bind(&fd, addr)?;
    Ok(UdpSocket::from(fd))
}

/// A TCP connection from `local` (port 0: any) to `remote`. Blocking connect
/// bounded by `SO_SNDTIMEO`, which Linux applies to `connect`.
pub fn tcp_connect_from(local: &SocketAddr, remote: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let fd = socket(remote, libc::SOCK_STREAM)?;
    bind(&fd, local)?;
    let stream = TcpStream::from(fd);
    stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    let (storage, len) = sockaddr(remote);
    // SAFETY: storage holds a valid sockaddr of length len.
    let ret = unsafe { libc::connect(stream.as_raw_fd(), (&raw const storage).cast(), len) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EINPROGRESS) => {
                io::Error::new(io::ErrorKind::TimedOut, format!("connect to {remote}: timed out"))
            }
            _ => err,
        });
    }
    stream.set_write_timeout(None)?;
    Ok(stream)
}
