//! Client sockets: opened on a thread inside the client's namespace (a socket
//! stays in the namespace it was created in) and handed back.

use std::{
    collections::BTreeSet,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use super::{sock, TestBed};
use crate::http::{invalid, Client};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Self {
        if addr.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }

    pub fn unspecified(self) -> IpAddr {
        match self {
            Self::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Self::V6 => Ipv6Addr::UNSPECIFIED.into(),
        }
    }
}

impl TestBed {
    /// A TCP connection from client `client` to `remote`.
    pub fn tcp_connect(&self, client: usize, remote: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        self.client_ns(client).run(|| TcpStream::connect_timeout(&remote, timeout))
    }

    /// A TCP connection from client `client`'s source port `local_port` to `remote`.
    pub fn tcp_connect_from(
        &self,
        client: usize,
        local_port: u16,
        remote: SocketAddr,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let local = SocketAddr::new(Family::of(&remote.ip()).unspecified(), local_port);
        self.client_ns(client).run(|| sock::tcp_connect_from(&local, &remote, timeout))
    }

    /// A UDP socket in client `client`'s namespace, bound to an ephemeral port.
    pub fn udp_socket(&self, client: usize, family: Family) -> io::Result<UdpSocket> {
        let local = SocketAddr::new(family.unspecified(), 0);
        self.client_ns(client).run(|| UdpSocket::bind(local))
    }

    /// Connects to a testsrv TCP port, reads its name, checks the echo of a
    /// line, and returns the name.
    pub fn tcp_name(&self, client: usize, remote: SocketAddr, timeout: Duration) -> io::Result<String> {
        let stream = self.tcp_connect(client, remote, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut reader = BufReader::new(stream);
        let mut name = String::new();
        reader.read_line(&mut name)?;
        let Some(name) = name.strip_suffix('\n') else {
            return Err(invalid(format!("{remote}: no name line, got {name:?}")));
        };
        let probe = b"ping from the bed\n";
        reader.get_mut().write_all(probe)?;
        let mut echo = vec![0u8; probe.len()];
        reader.read_exact(&mut echo)?;
        if echo != probe {
            return Err(invalid(format!("{remote}: echo {:?}", String::from_utf8_lossy(&echo))));
        }
        Ok(name.to_string())
    }

    /// The names [`Self::tcp_name`] gets on `n` new connections.
    pub fn tcp_names(
        &self,
        client: usize,
        remote: SocketAddr,
        n: usize,
        timeout: Duration,
    ) -> io::Result<BTreeSet<String>> {
        (0..n).map(|_| self.tcp_name(client, remote, timeout)).collect()
    }

    /// Sends a datagram to a testsrv UDP port and returns the name in the answer.
    pub fn udp_name(&self, client: usize, remote: SocketAddr, timeout: Duration) -> io::Result<String> {
        self.udp_name_from(client, 0, remote, timeout)
    }

    /// [`Self::udp_name`] from local port `port` (0: any), so the flow is known.
    pub fn udp_name_from(
        &self,
        client: usize,
        port: u16,
        remote: SocketAddr,
        timeout: Duration,
    ) -> io::Result<String> {
        let local = SocketAddr::new(Family::of(&remote.ip()).unspecified(), port);
        let socket = self.client_ns(client).run(|| UdpSocket::bind(local))?;
        // Connected: an answer from any other address than `remote` is not taken.
        socket.connect(remote)?;
        socket.set_read_timeout(Some(timeout))?;
        let probe = b"ping from the bed";
        socket.send(probe)?;
        let mut buf = [0u8; 2048];
        let n = socket.recv(&mut buf)?;
        let answer = &buf[..n];
        let Some(split) = answer.iter().position(|&b| b == b'\n') else {
            return Err(invalid(format!("{remote}: answer {:?}", String::from_utf8_lossy(answer))));
        };
        if &answer[split + 1..] != probe {
            return Err(invalid(format!("{remote}: answer {:?}", String::from_utf8_lossy(answer))));
        }
        Ok(String::from_utf8_lossy(&answer[..split]).into_owned())
    }

    /// `GET /` over HTTP/1.1 ([`Client`]): the status code and the body.
    pub fn http_get(
        &self,
        client: usize,
        remote: SocketAddr,
        timeout: Duration,
    ) -> io::Result<(u16, String)> {
        let response = Client::tcp_in(self.client_ns(client), remote).timeout(timeout).get("/")?;
        Ok((response.status, response.text()))
    }
}
