//! The embedded DNS server of a network.
//!
//! DNS (RFC 1035) is a question/answer protocol over UDP (and TCP with a 2-byte length prefix):
//! a query names a domain and a record type (A = IPv4 address, AAAA, PTR = reverse, …); the
//! answer carries records. Each tug network runs one small server process
//! (`tug network-dns`, hidden) bound to the bridge's gateway address, port 53, on the host.
//! Containers on the network get `nameserver <gateway>` in their resolv.conf.
//!
//! The server answers from a *records file* (`<root>/networks/<name>/dns.json`) that the
//! engine rewrites atomically whenever an endpoint joins or leaves; the server notices a new
//! file (by inode/mtime/size) on the next query, so answers follow scaling and recreation
//! without restarting anyone. A stopped container keeps its endpoint (namespace, veth and
//! address stay reserved, so it gets them back at start), but the server answers only for
//! endpoints whose container *runs*: at each question it asks a [`Liveness`] given by whoever
//! starts the server (the engine's helper entry gives the container store's check,
//! `container::state::StoreLiveness`: name → id → `state.json`, with the pid checked against
//! `/proc`; the network module knows nothing of containers). So `stop`, `start`, an exit, a crash
//! and restarts by the supervisor's restart policy (which happen without any tug command)
//! all show in the next answer. A name of the network whose containers all stopped gets
//! NXDOMAIN (it is not relayed upstream). A name known on the network gets all its addresses (replicas of a
//! service), rotated per query (round robin); AAAA questions for known names get an empty
//! NOERROR answer (no IPv6 yet) so resolvers do not go elsewhere. A container on several
//! networks asks only its first network's server; that server also answers the names of the
//! container's other networks (from their records files), with the addresses there. `PTR` questions for endpoint
//! addresses get the container name. Every other question is relayed verbatim (over UDP, or
//! over TCP when it came over TCP) to the upstream resolvers: the ones set for the asking
//! container (`dns:`), else the network's (`TUG_DNS_UPSTREAM` at network creation, else the
//! host's `/etc/resolv.conf`).
//!
//! The server exits by itself when its records file disappears (network removed, or the state
//! root deleted), so a crash of tug can never leave it running forever.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Error, Result};

/// What the server knows: names → addresses of one network, plus upstreams.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Records {
    /// Upstream resolvers (`IP` or `IP:PORT`) for names the network does not know.
    pub upstreams: Vec<String>,
    /// One entry per endpoint.
    pub endpoints: Vec<DnsEndpoint>,
}

/// The names of one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DnsEndpoint {
    pub ip: Ipv4Addr,
    /// The container, to find its other networks.
    #[serde(default)]
    pub container_id: String,
    /// Lowercase names without trailing dot; the first is the PTR answer.
    pub names: Vec<String>,
    /// The container's own `dns:` servers, used for its forwarded questions.
    #[serde(default)]
    pub upstreams: Vec<String>,
}

/// Parses `IP` or `IP:PORT` (port 53 by default).
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// The host's resolvers from `/etc/resolv.conf` (IPv4 and IPv6, as written).
pub fn host_upstreams() -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|s| resolv_conf_nameservers(&s))
        .unwrap_or_default()
}

/// The `nameserver` lines of a resolv.conf.
pub fn resolv_conf_nameservers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .map(str::to_string)
        .collect()
}

/// One records file, parsed, with the stamp it was read at.
#[derive(Default)]
struct Table {
    stamp: Option<(u64, i64, i64, u64)>,
    records: Records,
    /// Name → (address, container key) of every endpoint with that name.
    by_name: HashMap<String, Vec<(Ipv4Addr, String)>>,
}

impl Table {
    /// Reloads `path` if it changed. Returns false when it is gone.
    fn refresh(&mut self, path: &Path) -> bool {
        let Ok(md) = std::fs::metadata(path) else {
            return false;
        };
        let stamp = (md.ino(), md.mtime(), md.mtime_nsec(), md.size());
        if self.stamp == Some(stamp) {
            return true;
        }
        if let Ok(bytes) = std::fs::read(path)
            && let Ok(r) = serde_json::from_slice::<Records>(&bytes)
        {
            let mut by_name: HashMap<String, Vec<(Ipv4Addr, String)>> = HashMap::new();
            for e in &r.endpoints {
                for n in &e.names {
                    let v = by_name.entry(n.to_ascii_lowercase()).or_default();
                    if !v.iter().any(|(ip, _)| *ip == e.ip) {
                        v.push((e.ip, e.container_id.clone()));
                    }
                }
            }
            self.by_name = by_name;
            self.records = r;
            self.stamp = Some(stamp);
        }
        true
    }
}

struct State {
    path: PathBuf,
    /// Whether the container behind an endpoint key runs.
    liveness: Box<dyn Liveness>,
    own: Table,
    /// The records of the other networks of the same state root, for containers that are on
    /// several networks (a container resolves the names of every network it is on, each
    /// with the addresses on that network).
    siblings: HashMap<PathBuf, Table>,
    rr: AtomicUsize,
}

/// What a name is on the networks a client sees.
enum Lookup {
    /// The addresses of its running containers.
    Found(Vec<Ipv4Addr>),
    /// Known, but none of its containers runs (stopped, exited, restarting, crashed).
    Stopped,
    /// Not a name of these networks.
    Unknown,
}

/// Whether the container behind an endpoint runs (an endpoint's key is the container name
/// or id it was connected with): the server answers a record only when it does. Asked at
/// every question, so it must be cheap (the container store's check reads two small files).
pub trait Liveness: Send {
    /// True when the container keyed `key` runs (or is paused), or is no container the
    /// implementation knows (library users that wire namespaces themselves).
    fn running(&self, key: &str) -> bool;
}

/// Every endpoint counts as running.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysRunning;

impl Liveness for AlwaysRunning {
    fn running(&self, _key: &str) -> bool {
        true
    }
}

impl State {
    fn refresh(&mut self) -> bool {
        let path = self.path.clone();
        self.own.refresh(&path)
    }

    /// The addresses of `entries` whose containers run.
    fn live(liveness: &dyn Liveness, entries: &[(Ipv4Addr, String)]) -> Vec<Ipv4Addr> {
        entries
            .iter()
            .filter(|(_, k)| liveness.running(k))
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// `name` on the client's own network, then on its other networks.
    fn lookup(&mut self, client: IpAddr, name: &str) -> Lookup {
        let mut known = false;
        if let Some(entries) = self.own.by_name.get(name) {
            known = true;
            let ips = Self::live(self.liveness.as_ref(), entries);
            if !ips.is_empty() {
                return Lookup::Found(ips);
            }
        }
        if let IpAddr::V4(c) = client {
            match self.lookup_siblings(c, name) {
                Lookup::Unknown => {}
                found @ Lookup::Found(_) => return found,
                Lookup::Stopped => known = true,
            }
        }
        if known {
            Lookup::Stopped
        } else {
            Lookup::Unknown
        }
    }

    /// `name` on the other networks the client's container is on.
    fn lookup_siblings(&mut self, client: Ipv4Addr, name: &str) -> Lookup {
        let Some(cid) = self
            .own
            .records
            .endpoints
            .iter()
            .find(|e| e.ip == client && !e.container_id.is_empty())
            .map(|e| e.container_id.clone())
        else {
            return Lookup::Unknown;
        };
        let Some(net_dir) = self.path.parent().map(Path::to_path_buf) else {
            return Lookup::Unknown;
        };
        let Some(rd) = net_dir.parent().and_then(|n| std::fs::read_dir(n).ok()) else {
            return Lookup::Unknown;
        };
        let mut found: Vec<Ipv4Addr> = Vec::new();
        let mut known = false;
        let mut seen = Vec::new();
        for ent in rd.flatten() {
            let dir = ent.path();
            if dir == net_dir {
                continue;
            }
            let file = dir.join("dns.json");
            seen.push(file.clone());
            let t = self.siblings.entry(file.clone()).or_default();
            if !t.refresh(&file) {
                continue;
            }
            if t.records.endpoints.iter().any(|e| e.container_id == cid)
                && let Some(entries) = t.by_name.get(name)
            {
                known = true;
                for ip in Self::live(self.liveness.as_ref(), entries) {
                    if !found.contains(&ip) {
                        found.push(ip);
                    }
                }
            }
        }
        self.siblings.retain(|k, _| seen.contains(k));
        match (found.is_empty(), known) {
            (false, _) => Lookup::Found(found),
            (true, true) => Lookup::Stopped,
            (true, false) => Lookup::Unknown,
        }
    }
}

enum Answer {
    Local(Vec<u8>),
    Forward(Vec<SocketAddr>),
    Drop,
}

fn answer(state: &Mutex<State>, query: &[u8], client: IpAddr) -> Answer {
    let Ok(msg) = Message::from_vec(query) else {
        return Answer::Drop;
    };
    if msg.metadata.message_type != MessageType::Query {
        return Answer::Drop;
    }
    let mut st = match state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    st.refresh();
    let reply = |code: ResponseCode, answers: Vec<Record>| -> Answer {
        let mut r = Message::response(msg.metadata.id, msg.metadata.op_code);
        r.metadata.recursion_desired = msg.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.metadata.authoritative = true;
        r.metadata.response_code = code;
        r.add_queries(msg.queries.clone());
        r.add_answers(answers);
        match r.to_vec() {
            Ok(v) => Answer::Local(v),
            Err(_) => Answer::Drop,
        }
    };
    if msg.metadata.op_code != OpCode::Query || msg.queries.len() != 1 {
        return reply(ResponseCode::NotImp, Vec::new());
    }
    let q = &msg.queries[0];
    let mut name = q.name().to_ascii().to_ascii_lowercase();
    if name.ends_with('.') {
        name.pop();
    }
    match st.lookup(client, &name) {
        Lookup::Found(mut ips) => {
            if q.query_type() != RecordType::A && q.query_type() != RecordType::ANY {
                return reply(ResponseCode::NoError, Vec::new());
            }
            if ips.len() > 1 {
                let k = st.rr.fetch_add(1, Ordering::Relaxed) % ips.len();
                ips.rotate_left(k);
            }
            let recs = ips
                .into_iter()
                .map(|ip| Record::from_rdata(q.name().clone(), 0, RData::A(A(ip))))
                .collect();
            return reply(ResponseCode::NoError, recs);
        }
        // A name of the network whose containers are all stopped: the network owns it, so
        // it does not exist now (asking upstream would only leak it and make clients wait).
        Lookup::Stopped => return reply(ResponseCode::NXDomain, Vec::new()),
        Lookup::Unknown => {}
    }
    if q.query_type() == RecordType::PTR
        && let Some(ip) = ptr_ip(&name)
        && let Some(e) = st
            .own
            .records
            .endpoints
            .iter()
            .find(|e| e.ip == ip && st.liveness.running(&e.container_id))
        && let Some(first) = e.names.first()
        && let Ok(target) = Name::from_ascii(format!("{first}."))
    {
        let rec = Record::from_rdata(q.name().clone(), 0, RData::PTR(PTR(target)));
        return reply(ResponseCode::NoError, vec![rec]);
    }
    let own: Vec<String> = match client {
        IpAddr::V4(c) => st
            .own
            .records
            .endpoints
            .iter()
            .find(|e| e.ip == c && !e.upstreams.is_empty())
            .map(|e| e.upstreams.clone())
            .unwrap_or_else(|| st.own.records.upstreams.clone()),
        IpAddr::V6(_) => st.own.records.upstreams.clone(),
    };
    let ups: Vec<SocketAddr> = own.iter().filter_map(|u| parse_upstream(u)).collect();
    if ups.is_empty() {
        return reply(ResponseCode::ServFail, Vec::new());
    }
    Answer::Forward(ups)
}

fn ptr_ip(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = rest
        .split('.')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let mut r = Message::response(msg.metadata.id, msg.metadata.op_code);
    r.metadata.recursion_desired = msg.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.response_code = ResponseCode::ServFail;
    r.add_queries(msg.queries.clone());
    r.to_vec().ok()
}

async fn forward(query: &[u8], ups: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in ups {
        let bind: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await
            && from == *up
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    servfail(query)
}

/// Relays a question over TCP (for clients that asked over TCP, typically after a truncated
/// UDP answer).
async fn forward_tcp(query: &[u8], ups: &[SocketAddr]) -> Option<Vec<u8>> {
    let len = u16::try_from(query.len()).ok()?;
    for up in ups {
        let attempt = async {
            let mut c = tokio::net::TcpStream::connect(up).await.ok()?;
            c.write_all(&len.to_be_bytes()).await.ok()?;
            c.write_all(query).await.ok()?;
            let mut l = [0u8; 2];
            c.read_exact(&mut l).await.ok()?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
            c.read_exact(&mut buf).await.ok()?;
            Some(buf)
        };
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(4), attempt).await {
            return Some(r);
        }
    }
    servfail(query)
}

async fn handle(state: &Mutex<State>, query: &[u8], client: IpAddr, tcp: bool) -> Option<Vec<u8>> {
    match answer(state, query, client) {
        Answer::Local(v) => Some(v),
        Answer::Forward(ups) if tcp => forward_tcp(query, &ups).await,
        Answer::Forward(ups) => forward(query, &ups).await,
        Answer::Drop => None,
    }
}

/// Runs the server on already bound sockets until the records file disappears.
pub fn serve(
    records: &Path,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    liveness: Box<dyn Liveness>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io("start the dns runtime".into(), e))?;
    let mut st = State {
        path: records.to_path_buf(),
        liveness,
        own: Table::default(),
        siblings: HashMap::new(),
        rr: AtomicUsize::new(0),
    };
    st.refresh();
    let state = Arc::new(Mutex::new(st));
    rt.block_on(async move {
        udp.set_nonblocking(true)
            .map_err(|e| Error::Io("dns udp socket".into(), e))?;
        tcp.set_nonblocking(true)
            .map_err(|e| Error::Io("dns tcp socket".into(), e))?;
        let udp = Arc::new(
            tokio::net::UdpSocket::from_std(udp)
                .map_err(|e| Error::Io("dns udp socket".into(), e))?,
        );
        let tcp = tokio::net::TcpListener::from_std(tcp)
            .map_err(|e| Error::Io("dns tcp socket".into(), e))?;
        {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((mut conn, peer)) = tcp.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        loop {
                            let mut len = [0u8; 2];
                            let ok = tokio::time::timeout(
                                Duration::from_secs(10),
                                conn.read_exact(&mut len),
                            )
                            .await;
                            if !matches!(ok, Ok(Ok(_))) {
                                return;
                            }
                            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                            if conn.read_exact(&mut q).await.is_err() {
                                return;
                            }
                            let Some(resp) = handle(&state, &q, peer.ip(), true).await else {
                                return;
                            };
                            let Ok(n) = u16::try_from(resp.len()) else {
                                return;
                            };
                            if conn.write_all(&n.to_be_bytes()).await.is_err()
                                || conn.write_all(&resp).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            });
        }
        {
            // Exit when the records file is gone (network removed or root deleted).
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let gone = {
                        let mut g = match state.lock() {
                            Ok(g) => g,
                            Err(p) => p.into_inner(),
                        };
                        !g.refresh()
                    };
                    if gone {
                        std::process::exit(0);
                    }
                }
            });
        }
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let q = buf[..n].to_vec();
            let state = state.clone();
            let udp = udp.clone();
            tokio::spawn(async move {
                if let Some(resp) = handle(&state, &q, peer.ip(), false).await {
                    let _ = udp.send_to(&resp, peer).await;
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_names_parse() {
        assert_eq!(
            ptr_ip("4.3.89.10.in-addr.arpa"),
            Some(Ipv4Addr::new(10, 89, 3, 4))
        );
        assert_eq!(ptr_ip("example.com"), None);
    }

    #[test]
    fn nameservers_from_resolv_conf() {
        let t = "# x\nnameserver 1.2.3.4\nsearch a\nnameserver ::1\n";
        assert_eq!(resolv_conf_nameservers(t), vec!["1.2.3.4", "::1"]);
        assert_eq!(
            parse_upstream("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("1.2.3.4"),
            Some("1.2.3.4:53".parse().unwrap())
        );
    }
}
