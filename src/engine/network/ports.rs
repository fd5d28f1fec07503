//! Published ports: a userland proxy per container.
//!
//! A published port `HOST_IP:HOST_PORT:CONTAINER_PORT/PROTO` makes a socket on the host that
//! forwards to the container's address on its network. tug does this with a small proxy
//! process per container (`tug network-proxy`, hidden) rather than nftables DNAT, because:
//! - the host port is really *bound*: a port already in use fails `up` with a clear error
//!   instead of silently shadowing another program, and a random port (`"80"`) is simply a
//!   bind to port 0, shown by `tug port`;
//! - `127.0.0.1` works without `route_localnet=1` (DNAT to a bridge from loopback needs it,
//!   and it weakens the host's martian filtering);
//! - it involves no forward-hook filtering, so Docker's `FORWARD` drop policy cannot break it,
//!   and the same code will work for rootless tug later.
//!
//! The cost is that the container sees the gateway as the client address, and one extra copy
//! per byte; both are fine for development stacks.
//!
//! TCP: each accepted connection is joined to a new connection to the container. UDP: each
//! client address gets its own connected socket towards the container; replies go back to that
//! client; a flow idle for 60 s is dropped.
//!
//! The sockets are bound by the tug command (errors appear there) and inherited by the proxy.
//! The container's record is `<root>/ports/<container id>.json`; the proxy exits when it
//! disappears.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::helper::ProcId;
use super::{Error, Result};

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" => Err(Error::Unsupported(
                "sctp ports are not supported yet".into(),
            )),
            o => Err(Error::Invalid(format!(
                "unknown protocol {o:?} (tcp or udp)"
            ))),
        }
    }
}

/// One port to publish (ranges already expanded). `host_port` 0 means "any free port".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// A published port as bound on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.protocol, self.host_ip, self.host_port
        )
    }
}

fn parse_range(s: &str, what: &str) -> Result<(u16, u16)> {
    let bad = || Error::Invalid(format!("bad {what} {s:?}"));
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parses compose's short syntax: `[[HOST_IP:][HOST_PORT[-END]]:]CONTAINER_PORT[-END][/PROTO]`
/// (IPv6 host addresses in brackets).
pub fn parse_short(spec: &str) -> Result<Vec<PortMapping>> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, p.parse::<Protocol>()?),
        None => (spec, Protocol::Tcp),
    };
    let (host_ip, rest) = if let Some(r) = body.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .ok_or_else(|| Error::Invalid(format!("bad port {spec:?}")))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| Error::Invalid(format!("bad host address in port {spec:?}")))?;
        (Some(ip), rest.to_string())
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (None, body.to_string()),
            3 => {
                let ip = if parts[0].is_empty() {
                    None
                } else {
                    Some(parts[0].parse::<IpAddr>().map_err(|_| {
                        Error::Invalid(format!("bad host address {:?} in port {spec:?}", parts[0]))
                    })?)
                };
                (ip, format!("{}:{}", parts[1], parts[2]))
            }
            _ => return Err(Error::Invalid(format!("bad port {spec:?}"))),
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (if h.is_empty() { None } else { Some(h) }, c),
        None => (None, rest.as_str()),
    };
    let (c0, c1) = parse_range(container, "container port")?;
    let host = host.map(|h| parse_range(h, "host port")).transpose()?;
    expand(host_ip, host, (c0, c1), proto, spec)
}

/// Compose's long syntax: `target`, `published` (`"8080"`, `"8080-8081"`, absent or empty for
/// a random port), `host_ip`, `protocol`. (`expose:` publishes nothing: containers of a network
/// reach every port of each other anyway; it is metadata only, as in Docker.)
pub fn parse_long(
    target: u16,
    published: Option<&str>,
    host_ip: Option<&str>,
    protocol: Option<&str>,
) -> Result<Vec<PortMapping>> {
    let spec = format!(
        "{}:{}:{target}/{}",
        host_ip.unwrap_or(""),
        published.unwrap_or(""),
        protocol.unwrap_or("tcp")
    );
    if target == 0 {
        return Err(Error::Invalid(format!("port {spec:?}: target port 0")));
    }
    let protocol: Protocol = protocol.unwrap_or("tcp").parse()?;
    let host_ip = host_ip
        .filter(|h| !h.is_empty())
        .map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| Error::Invalid(format!("port {spec:?}: bad host_ip {h:?}")))
        })
        .transpose()?;
    let host = published
        .filter(|p| !p.is_empty())
        .map(|p| parse_range(p, "published port"))
        .transpose()?;
    expand(host_ip, host, (target, target), protocol, &spec)
}

/// Expands ranges into single mappings. A host range longer than one with a single container
/// port is not supported (Docker picks one free port of the range; tug asks for a fixed one).
pub fn expand(
    host_ip: Option<IpAddr>,
    host: Option<(u16, u16)>,
    container: (u16, u16),
    protocol: Protocol,
    spec: &str,
) -> Result<Vec<PortMapping>> {
    if host_ip.is_some_and(|ip| ip.is_ipv6()) {
        return Err(Error::Unsupported(format!(
            "port {spec:?}: IPv6 host addresses are not supported yet"
        )));
    }
    let n = container.1 - container.0 + 1;
    let mut out = Vec::new();
    match host {
        None => {
            for p in container.0..=container.1 {
                out.push(PortMapping {
                    host_ip,
                    host_port: 0,
                    container_port: p,
                    protocol,
                });
            }
        }
        Some((h0, h1)) => {
            if h1 - h0 + 1 != n {
                return Err(Error::Unsupported(format!(
                    "port {spec:?}: host and container ranges must have the same length"
                )));
            }
            for i in 0..n {
                out.push(PortMapping {
                    host_ip,
                    host_port: h0 + i,
                    container_port: container.0 + i,
                    protocol,
                });
            }
        }
    }
    Ok(out)
}

/// The record of a container's published ports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortRecord {
    pub container_id: String,
    pub service: String,
    pub target: Ipv4Addr,
    pub ports: Vec<Published>,
    pub proxy: Option<ProcId>,
}

/// A bound socket waiting to be handed to the proxy.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

fn bind_one(addr: SocketAddr, proto: Protocol) -> std::io::Result<Bound> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn, bind, listen, setsockopt,
        socket, sockopt,
    };
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("ipv6 is not supported yet"));
    };
    let (ty, sp) = match proto {
        Protocol::Tcp => (SockType::Stream, SockProtocol::Tcp),
        Protocol::Udp => (SockType::Datagram, SockProtocol::Udp),
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, sp)?;
    if proto == Protocol::Tcp {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4))?;
    Ok(match proto {
        Protocol::Tcp => {
            listen(
                &fd,
                nix::sys::socket::Backlog::new(128).map_err(std::io::Error::from)?,
            )?;
            Bound::Tcp(std::net::TcpListener::from(fd))
        }
        Protocol::Udp => Bound::Udp(std::net::UdpSocket::from(fd)),
    })
}

/// Binds every mapping; a taken port is an error naming the service and the port.
pub fn bind_all(service: &str, maps: &[PortMapping]) -> Result<Vec<(Bound, Published)>> {
    let mut out = Vec::new();
    for m in maps {
        let ip = m.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, m.host_port);
        let b = bind_one(addr, m.protocol).map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                Error::PortTaken {
                    service: service.to_string(),
                    port: format!("{ip}:{}/{}", m.host_port, m.protocol),
                }
            } else {
                Error::Io(
                    format!(
                        "service {service}: bind {ip}:{}/{}",
                        m.host_port, m.protocol
                    ),
                    e,
                )
            }
        })?;
        let local = match &b {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(u) => u.local_addr(),
        }
        .map_err(|e| Error::Io("read bound address".into(), e))?;
        out.push((
            b,
            Published {
                host_ip: ip,
                host_port: local.port(),
                container_port: m.container_port,
                protocol: m.protocol,
            },
        ));
    }
    Ok(out)
}

/// What the proxy process is told: one entry per inherited socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyEntry {
    pub fd: i32,
    pub protocol: Protocol,
    pub target: SocketAddr,
}

/// Runs the proxy until `record` disappears.
pub fn serve(record: &Path, entries: Vec<ProxyEntry>) -> Result<()> {
    use std::os::fd::FromRawFd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io("start the proxy runtime".into(), e))?;
    let record: PathBuf = record.to_path_buf();
    rt.block_on(async move {
        for e in entries {
            match e.protocol {
                Protocol::Tcp => {
                    // SAFETY: the fd was bound by the parent and handed to this process for
                    // its sole use; it is taken over exactly once here.
                    let std = unsafe { std::net::TcpListener::from_raw_fd(e.fd) };
                    std.set_nonblocking(true)
                        .map_err(|x| Error::Io("proxy socket".into(), x))?;
                    let l = tokio::net::TcpListener::from_std(std)
                        .map_err(|x| Error::Io("proxy socket".into(), x))?;
                    tokio::spawn(tcp_loop(l, e.target));
                }
                Protocol::Udp => {
                    // SAFETY: as above, an inherited fd owned by this process alone.
                    let std = unsafe { std::net::UdpSocket::from_raw_fd(e.fd) };
                    std.set_nonblocking(true)
                        .map_err(|x| Error::Io("proxy socket".into(), x))?;
                    let s = tokio::net::UdpSocket::from_std(std)
                        .map_err(|x| Error::Io("proxy socket".into(), x))?;
                    tokio::spawn(udp_loop(Arc::new(s), e.target));
                }
            }
        }
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if !record.exists() {
                return Ok(());
            }
        }
    })
}

async fn tcp_loop(l: tokio::net::TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let Ok(Ok(mut out)) = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::TcpStream::connect(target),
            )
            .await
            else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
        });
    }
}

async fn udp_loop(sock: Arc<tokio::net::UdpSocket>, target: SocketAddr) {
    let flows: Arc<tokio::sync::Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>> =
        Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let existing = flows.lock().await.get(&client).cloned();
        let up = match existing {
            Some(u) => u,
            None => {
                let Ok(u) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows.lock().await.insert(client, u.clone());
                let (u2, sock2, flows2) = (u.clone(), sock.clone(), flows.clone());
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65536];
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(60), u2.recv(&mut b)).await
                    {
                        let _ = sock2.send_to(&b[..n], client).await;
                    }
                    flows2.lock().await.remove(&client);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_syntax() {
        let m = parse_short("127.0.0.1:8080:80").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].host_port, 8080);
        assert_eq!(m[0].container_port, 80);
        assert_eq!(m[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        let m = parse_short("80").unwrap();
        assert_eq!((m[0].host_port, m[0].protocol), (0, Protocol::Tcp));
        let m = parse_short("9000-9002:9000-9002/udp").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].host_port, 9002);
        assert_eq!(m[2].protocol, Protocol::Udp);
        let m = parse_short("8000:80").unwrap();
        assert_eq!((m[0].host_port, m[0].host_ip), (8000, None));
        let m = parse_short("127.0.0.1::80").unwrap();
        assert_eq!(m[0].host_port, 0);
        assert!(parse_short("abc").is_err());
        assert!(parse_short("80/sctp").is_err());
        assert!(parse_short("1-3:80").is_err());
        assert!(parse_short("0").is_err());
        let m = parse_long(80, Some("8080"), Some("127.0.0.1"), Some("udp")).unwrap();
        assert_eq!(
            m,
            vec![PortMapping {
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Udp,
            }]
        );
        assert_eq!(parse_long(80, None, None, None).unwrap()[0].host_port, 0);
        assert!(parse_long(80, Some("x"), None, None).is_err());
    }
}
