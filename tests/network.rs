//! Networks on real bridges: endpoints in namespaces made by the engine, busybox tools run
//! inside them with `nsenter`, the embedded DNS server, published ports, isolation, cleanup.
//!
//! Traffic goes only to loopback and to the test's own namespaces.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tug::engine::network::{
    EndpointSpec, NetworkInfo, NetworkSpec, Networks, files, netlink, ports,
};

use crate::common::{self, require_root, unique};

/// Tools these tests run on the host (namespaces are entered with `nsenter`, commands are
/// bounded by `timeout`, tables are read with `nft`).
const TOOLS: &[&str] = &["ip", "nsenter", "nft", "timeout", "unshare"];

/// A test's network world: its own state root, networks, namespaces and processes, torn down
/// (and checked clean) even when the test fails.
struct Lab {
    root: tempfile::TempDir,
    nets: Networks,
    networks: Vec<NetworkInfo>,
    containers: Vec<String>,
    children: Vec<Child>,
    finished: bool,
}

impl Lab {
    fn new() -> Self {
        Self::with_upstreams(Vec::new())
    }

    fn with_upstreams(ups: Vec<String>) -> Self {
        let root = tempfile::tempdir().unwrap();
        let nets = Networks::open(root.path())
            .unwrap()
            .with_helper_exe(&common::tug_bin())
            .with_dns_upstreams(ups);
        Self {
            root,
            nets,
            networks: Vec::new(),
            containers: Vec::new(),
            children: Vec::new(),
            finished: false,
        }
    }

    fn network(&mut self, name: &str, internal: bool) -> NetworkInfo {
        let info = self
            .nets
            .create(&NetworkSpec {
                name: name.into(),
                internal,
                ..Default::default()
            })
            .unwrap();
        self.networks.push(info.clone());
        info
    }

    /// A namespace for `id`, connected to `network` as container `name` of `service`.
    fn endpoint(
        &mut self,
        id: &str,
        network: &str,
        name: &str,
        service: &str,
    ) -> (PathBuf, Ipv4Addr) {
        let ns = self.nets.create_netns(id).unwrap();
        if !self.containers.iter().any(|c| c == id) {
            self.containers.push(id.to_string());
        }
        let ep = self
            .nets
            .connect(
                &ns,
                network,
                &EndpointSpec {
                    container_id: id.into(),
                    container_name: name.into(),
                    service: Some(service.into()),
                    project: Some("proj".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        (ns, ep.ip)
    }

    /// Starts a long-running command inside a namespace.
    fn spawn_in(&mut self, ns: &Path, args: &[&str]) {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn teardown(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        for id in &self.containers {
            let _ = self.nets.disconnect_all(id);
        }
        for n in &self.networks {
            let _ = self.nets.remove(&n.name, true);
        }
    }

    /// Tears down and asserts that nothing of this test remains on the host.
    fn finish(mut self) {
        self.teardown();
        self.finished = true;
        let links = netlink::links(None).unwrap();
        for n in &self.networks {
            assert!(
                !links.iter().any(|l| l.name == n.bridge),
                "bridge {} remains",
                n.bridge
            );
            let t = Command::new("nft")
                .args(["list", "table", "ip", &n.bridge])
                .output()
                .unwrap();
            assert!(!t.status.success(), "nft table {} remains", n.bridge);
            assert!(
                !Path::new(&format!("/run/tug/networks/{}.json", n.bridge)).exists(),
                "registry entry of {} remains",
                n.bridge
            );
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = std::fs::canonicalize(self.root.path()).unwrap();
        assert!(
            !mountinfo.contains(&root.display().to_string()),
            "mounts under the test root remain"
        );
        for id in &self.containers {
            assert!(!self.nets.netns_path(id).exists(), "netns of {id} remains");
        }
        // Helper processes exit (records gone); no veth of ours stays.
        let root_s = root.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ours = helper_pids(&root_s);
            if ours.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "helper processes remain: {ours:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.finished {
            self.teardown();
        }
    }
}

/// Pids of tug helper processes whose command line names `root`.
fn helper_pids(root: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = ent.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("network-") && cmd.contains(root) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if !stat.contains(") Z") {
                out.push(pid);
            }
        }
    }
    out
}

/// Runs a command inside a namespace with a deadline; returns (success, stdout+stderr).
fn run_in(ns: &Path, args: &[&str], secs: u32) -> (bool, String) {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .output()
        .unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// Asks `server` for the A records of `name`; returns (rcode, addresses).
fn query(server: Ipv4Addr, name: &str) -> (ResponseCode, Vec<Ipv4Addr>) {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    sock.send_to(&m.to_vec().unwrap(), (server, 53)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("dns server did not answer");
    let r = Message::from_vec(&buf[..n]).unwrap();
    let ips = r
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    (r.metadata.response_code, ips)
}

/// Asks `server` over TCP; returns the A records.
fn query_tcp(server: Ipv4Addr, name: &str) -> Vec<Ipv4Addr> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect((server, 53)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let q = m.to_vec().unwrap();
    c.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    c.write_all(&q).unwrap();
    let mut l = [0u8; 2];
    c.read_exact(&mut l).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
    c.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf)
        .unwrap()
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

/// Polls `f` until it returns true or 10 s pass.
fn eventually(what: &str, f: impl FnMut() -> bool) {
    common::eventually(what, Duration::from_secs(10), f);
}

/// A fake upstream resolver on loopback: `outside.test` → 192.0.2.77, anything else NXDOMAIN.
struct FakeUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.metadata.message_type = MessageType::Response;
                r.add_queries(q.queries.clone());
                let qn = q.queries[0].name().to_ascii();
                if qn.trim_end_matches('.') == "outside.test" {
                    r.add_answer(Record::from_rdata(
                        q.queries[0].name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(192, 0, 2, 77))),
                    ));
                } else {
                    r.metadata.response_code = ResponseCode::NXDomain;
                }
                let _ = sock.send_to(&r.to_vec().unwrap(), from);
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_files(dir: &Path, net: &NetworkInfo, ip: Ipv4Addr, host: &str) -> (PathBuf, PathBuf) {
    let resolv = dir.join(format!("{host}.resolv"));
    let hosts = dir.join(format!("{host}.hosts"));
    std::fs::write(
        &resolv,
        files::resolv_conf(&files::ResolvSpec {
            embedded: Some(net.gateway),
            ..Default::default()
        }),
    )
    .unwrap();
    std::fs::write(
        &hosts,
        files::hosts_file(&files::HostsSpec {
            hostname: host.into(),
            ip: Some(ip),
            gateway: Some(net.gateway),
            ..Default::default()
        })
        .unwrap(),
    )
    .unwrap();
    (resolv, hosts)
}

/// `wget` by name from inside `ns`, with the container's resolv.conf and hosts bind-mounted
/// over the host's in a private mount namespace (as the runtime will do).
fn wget_by_name(ns: &Path, resolv: &Path, hosts: &Path, url: &str) -> (bool, String) {
    let script = format!(
        "mount --bind {} /etc/resolv.conf && mount --bind {} /etc/hosts && exec busybox wget -q -O - {url}",
        resolv.display(),
        hosts.display()
    );
    run_in(ns, &["unshare", "-m", "sh", "-c", &script], 8)
}

fn serve_http(lab: &mut Lab, ns: &Path, body: &str) {
    let www = lab.root.path().join(format!("www-{}", unique("w")));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), body).unwrap();
    lab.spawn_in(
        ns,
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            www.to_str().unwrap(),
        ],
    );
}

#[test]
fn network_two_endpoints_reach_each_other_by_name() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let name = unique("front");
    let net = lab.network(&name, false);
    let (web_ns, web_ip) = lab.endpoint(&unique("cweb"), &name, "proj-web-1", "web");
    let (cli_ns, cli_ip) = lab.endpoint(&unique("ccli"), &name, "proj-client-1", "client");
    assert!(net.subnet.contains(web_ip) && net.subnet.contains(cli_ip));
    assert_ne!(web_ip, cli_ip);
    serve_http(&mut lab, &web_ns, "hello from web");
    let (resolv, hosts) = write_files(lab.root.path(), &net, cli_ip, "client");
    for url in ["http://web/", "http://proj-web-1/", "http://web.proj/"] {
        let mut last = String::new();
        eventually(&format!("wget {url}"), || {
            let (ok, out) = wget_by_name(&cli_ns, &resolv, &hosts, url);
            last = out;
            ok && last.contains("hello from web")
        });
    }
    // The endpoint's interface is eth0 with the chosen MAC, and a default route exists.
    let (ok, out) = run_in(&web_ns, &["busybox", "ip", "addr", "show", "eth0"], 5);
    assert!(ok, "{out}");
    let o = web_ip.octets();
    let mac = format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    assert!(out.contains(&mac), "{out}");
    assert!(
        netlink::routes(Some(&web_ns))
            .unwrap()
            .iter()
            .any(|r| r.prefix == 0 && r.gateway == Some(net.gateway)),
        "no default route via the gateway"
    );
    lab.finish();
}

#[test]
fn network_separate_networks_do_not_reach_each_other() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (unique("neta"), unique("netb"));
    let net_a = lab.network(&a, false);
    let net_b = lab.network(&b, false);
    assert!(!net_a.subnet.overlaps(&net_b.subnet));
    let (web_ns, web_ip) = lab.endpoint(&unique("cweb"), &a, "web-1", "web");
    let (other_ns, other_ip) = lab.endpoint(&unique("coth"), &b, "other-1", "other");
    serve_http(&mut lab, &web_ns, "secret");
    // Same-network access works (control), by address from the host side of a's bridge.
    let (near_ns, _) = lab.endpoint(&unique("cnear"), &a, "near-1", "near");
    eventually("web answers on its own network", || {
        run_in(
            &near_ns,
            &[
                "busybox",
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{web_ip}/"),
            ],
            4,
        )
        .0
    });
    // The other network's DNS does not know web; by address it is unreachable.
    let (code, ips) = query(net_b.gateway, "web");
    assert!(ips.is_empty(), "web resolved on the other network: {ips:?}");
    assert_eq!(
        code,
        ResponseCode::ServFail,
        "no upstream configured → servfail"
    );
    let (code, ips) = query(net_a.gateway, "other");
    assert!(
        ips.is_empty() && code != ResponseCode::NoError,
        "{code:?} {ips:?}"
    );
    let (ok, out) = run_in(
        &other_ns,
        &[
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{web_ip}/"),
        ],
        4,
    );
    assert!(
        !ok && !out.contains("secret"),
        "reached another network: {out}"
    );
    let _ = other_ip;
    lab.finish();
}

#[test]
fn network_internal_has_no_route_out() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let name = unique("int");
    let net = lab.network(&name, true);
    let (ns, _) = lab.endpoint(&unique("cint"), &name, "db-1", "db");
    let (ns2, ip2) = lab.endpoint(&unique("cint2"), &name, "db-2", "db2");
    let routes = netlink::routes(Some(&ns)).unwrap();
    assert!(
        !routes.iter().any(|r| r.prefix == 0 && r.table == 254),
        "internal network endpoint has a default route: {routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.prefix == net.subnet.prefix && r.dst == net.subnet.addr)
    );
    let table = Command::new("nft")
        .args(["list", "table", "ip", &net.bridge])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(!table.contains("masquerade"), "{table}");
    assert!(
        table.contains(&format!(
            "iifname \"{}\" oifname != \"{}\" drop",
            net.bridge, net.bridge
        )),
        "{table}"
    );
    // Inside the network, names still work.
    serve_http(&mut lab, &ns2, "inside");
    let (code, ips) = query(net.gateway, "db2");
    assert_eq!((code, ips), (ResponseCode::NoError, vec![ip2]));
    eventually("internal peers reach each other", || {
        run_in(
            &ns,
            &[
                "busybox",
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{ip2}/"),
            ],
            4,
        )
        .0
    });
    lab.finish();
}

#[test]
fn network_dns_follows_restart_and_scale_and_forwards() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let up = FakeUpstream::start();
    let mut lab = Lab::with_upstreams(vec![up.addr.to_string()]);
    let name = unique("dns");
    let net = lab.network(&name, false);
    let id1 = unique("api");
    let (_, ip1) = lab.endpoint(&id1, &name, "proj-api-1", "api");
    assert_eq!(
        query(net.gateway, "api"),
        (ResponseCode::NoError, vec![ip1])
    );
    assert_eq!(
        query(net.gateway, "API.proj."),
        (ResponseCode::NoError, vec![ip1])
    );
    // Restart: the endpoint goes away and comes back with a new address.
    let id_tmp = unique("tmp");
    let (_, tmp_ip) = lab.endpoint(&id_tmp, &name, "proj-tmp-1", "tmp");
    let bridge_mac =
        || std::fs::read_to_string(format!("/sys/class/net/{}/address", net.bridge)).unwrap();
    let mac_before = bridge_mac();
    lab.nets.disconnect_all(&id1).unwrap();
    eventually("api gone", || query(net.gateway, "api").1.is_empty());
    // The bridge keeps its own MAC when a port leaves (peers' ARP caches stay right).
    assert_eq!(bridge_mac(), mac_before);
    let (_, ip1b) = lab.endpoint(&id1, &name, "proj-api-1", "api");
    assert_ne!(
        ip1, ip1b,
        "address was not reassigned (tmp holds the old one? {tmp_ip})"
    );
    assert_eq!(query(net.gateway, "api").1, vec![ip1b]);
    // Scale to 3: all replicas answer; order rotates.
    let (_, ip2) = lab.endpoint(&unique("api"), &name, "proj-api-2", "api");
    let (_, ip3) = lab.endpoint(&unique("api"), &name, "proj-api-3", "api");
    let (code, mut ips) = query(net.gateway, "api");
    assert_eq!(code, ResponseCode::NoError);
    let first = ips[0];
    ips.sort();
    let mut want = vec![ip1b, ip2, ip3];
    want.sort();
    assert_eq!(ips, want);
    let firsts: std::collections::BTreeSet<Ipv4Addr> = (0..6)
        .map(|_| query(net.gateway, "api").1[0])
        .chain([first])
        .collect();
    assert!(firsts.len() > 1, "no round robin: always {firsts:?}");
    // Each replica by its container name, over UDP and TCP.
    assert_eq!(query(net.gateway, "proj-api-3").1, vec![ip3]);
    assert_eq!(query_tcp(net.gateway, "proj-api-3"), vec![ip3]);
    // Unknown names go to the (fake, loopback) upstream.
    assert_eq!(
        query(net.gateway, "outside.test"),
        (ResponseCode::NoError, vec![Ipv4Addr::new(192, 0, 2, 77)])
    );
    assert_eq!(query(net.gateway, "nothing.test").0, ResponseCode::NXDomain);
    // A killed DNS server is restarted by the next command.
    let pid: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lab.nets.root().join("networks").join(&name).join("dns.pid")).unwrap(),
    )
    .unwrap();
    let pid = pid["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    lab.nets.reconcile().unwrap();
    assert_eq!(query(net.gateway, "proj-api-2").1, vec![ip2]);
    lab.finish();
}

#[test]
fn network_published_tcp_and_udp_answer_on_loopback() {
    if !require_root() || !common::require_tools(TOOLS) || !common::require_tools(&["socat"]) {
        return;
    }
    let mut lab = Lab::new();
    let name = unique("pub");
    lab.network(&name, false);
    let id = unique("cpub");
    let (ns, ip) = lab.endpoint(&id, &name, "proj-web-1", "web");
    serve_http(&mut lab, &ns, "published!");
    lab.spawn_in(&ns, &["socat", "UDP4-RECVFROM:9999,fork", "EXEC:cat"]);
    let mut maps = ports::parse_short("127.0.0.1::80").unwrap();
    maps.extend(ports::parse_short("127.0.0.1::9999/udp").unwrap());
    let published = lab.nets.publish(&id, "web", ip, &maps).unwrap();
    assert_eq!(published.len(), 2);
    assert!(published.iter().all(|p| p.host_port != 0));
    assert_eq!(lab.nets.published(&id).unwrap(), published);
    let tcp = published
        .iter()
        .find(|p| p.protocol == ports::Protocol::Tcp)
        .unwrap();
    let udp = published
        .iter()
        .find(|p| p.protocol == ports::Protocol::Udp)
        .unwrap();
    let mut body = String::new();
    eventually("http through the proxy", || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", tcp.host_port)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
        body.clear();
        let _ = s.read_to_string(&mut body);
        body.contains("published!")
    });
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    eventually("udp echo through the proxy", || {
        let _ = sock.send_to(b"ping-udp", ("127.0.0.1", udp.host_port));
        let mut buf = [0u8; 64];
        matches!(sock.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"ping-udp")
    });
    // The same host port again is a clear error naming the service and the port.
    let taken = ports::parse_short(&format!("127.0.0.1:{}:80", tcp.host_port)).unwrap();
    let other = unique("cother");
    let err = lab
        .nets
        .publish(&other, "api", ip, &taken)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("service api") && err.contains(&tcp.host_port.to_string()),
        "{err}"
    );
    lab.finish();
}

#[test]
fn network_same_name_in_two_roots_side_by_side() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let mut one = Lab::new();
    let mut two = Lab::new();
    let name = unique("shared");
    let n1 = one.network(&name, false);
    let n2 = two.network(&name, false);
    assert_ne!(n1.bridge, n2.bridge);
    assert!(
        !n1.subnet.overlaps(&n2.subnet),
        "{} vs {}",
        n1.subnet,
        n2.subnet
    );
    assert!(n1.bridge.len() <= 15);
    let (_, ip1) = one.endpoint(&unique("c"), &name, "app-1", "app");
    let (_, ip2) = two.endpoint(&unique("c"), &name, "app-1", "app");
    assert_eq!(query(n1.gateway, "app").1, vec![ip1]);
    assert_eq!(query(n2.gateway, "app").1, vec![ip2]);
    // A requested subnet that overlaps the other root's network is refused, naming it.
    let err = two
        .nets
        .create(&NetworkSpec {
            name: unique("clash"),
            subnet: Some(n1.subnet.to_string()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains(&name), "{err}");
    one.finish();
    two.finish();
}

#[test]
fn network_crash_leftovers_are_repaired() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let name = unique("crash");
    let net = lab.network(&name, false);
    let id = unique("cx");
    let (ns, _) = lab.endpoint(&id, &name, "x-1", "x");
    // A killed command: the namespace vanished without disconnect, the bridge was deleted.
    tug::engine::network::netns::remove(&ns).unwrap();
    netlink::delete_link(&net.bridge).unwrap();
    lab.nets.reconcile().unwrap();
    assert!(lab.nets.endpoints(&name).unwrap().is_empty());
    assert!(
        netlink::links(None)
            .unwrap()
            .iter()
            .any(|l| l.name == net.bridge)
    );
    // A state root deleted outright: the next allocation drops its bridge and rules.
    let gone = tempfile::tempdir().unwrap();
    let gone_path = std::fs::canonicalize(gone.path())
        .unwrap()
        .display()
        .to_string();
    let orphan = Networks::open(gone.path())
        .unwrap()
        .with_helper_exe(&common::tug_bin())
        .with_dns_upstreams(Vec::new())
        .create(&NetworkSpec {
            name: unique("orphan"),
            ..Default::default()
        })
        .unwrap();
    drop(gone);
    lab.nets
        .create(&NetworkSpec {
            name: unique("after"),
            ..Default::default()
        })
        .map(|i| lab.networks.push(i))
        .unwrap();
    assert!(
        !netlink::links(None)
            .unwrap()
            .iter()
            .any(|l| l.name == orphan.bridge)
    );
    eventually("orphan dns server exits", || {
        helper_pids(&gone_path).is_empty()
    });
    lab.finish();
}

#[test]
fn network_cli_create_ls_inspect_rm() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let name = unique("cli");
    let id = common::ok(
        common::tug(tmp.path())
            .env("TUG_DNS_UPSTREAM", "127.0.0.1:9")
            .args([
                "network",
                "create",
                "--internal",
                "--subnet",
                "10.89.250.0/24",
            ])
            .args([
                "--label",
                "a=b",
                "-o",
                "com.docker.network.driver.mtu=1400",
                &name,
            ]),
    );
    assert_eq!(id.trim().len(), 64);
    let ls = common::ok(common::tug(tmp.path()).args(["network", "ls"]));
    assert!(ls.contains(&name) && ls.contains("10.89.250.0/24"), "{ls}");
    let js = common::ok(common::tug(tmp.path()).args(["network", "inspect", &name]));
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert_eq!(v[0]["internal"], true);
    assert_eq!(v[0]["mtu"], 1400);
    assert_eq!(v[0]["labels"]["a"], "b");
    let bridge = v[0]["bridge"].as_str().unwrap().to_string();
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{bridge}/mtu")).unwrap();
    assert_eq!(mtu.trim(), "1400");
    // A bridge name given in driver_opts is used as is.
    let named = unique("brn");
    let brname = format!("tb{}", &named[named.len().saturating_sub(10)..]);
    common::ok(
        common::tug(tmp.path())
            .env("TUG_DNS_UPSTREAM", "127.0.0.1:9")
            .args([
                "network",
                "create",
                "-o",
                &format!("com.docker.network.bridge.name={brname}"),
                &named,
            ]),
    );
    assert!(std::path::Path::new(&format!("/sys/class/net/{brname}")).exists());
    common::ok(common::tug(tmp.path()).args(["network", "rm", &named]));
    assert!(!std::path::Path::new(&format!("/sys/class/net/{brname}")).exists());
    let err = common::fails(common::tug(tmp.path()).args(["network", "create", "--ipv6", "x6"]));
    assert!(err.contains("not supported yet"), "{err}");
    let err = common::fails(common::tug(tmp.path()).args([
        "network",
        "create",
        "--subnet",
        "10.89.251.0/31",
        "small",
    ]));
    assert!(err.contains("too small"), "{err}");
    let err = common::fails(
        common::tug(tmp.path()).args(["network", "create", "--subnet", "nonsense", "bad"]),
    );
    assert!(err.contains("ADDRESS/PREFIX"), "{err}");
    let err = common::fails(common::tug(tmp.path()).args(["network", "create", "../x"]));
    assert!(err.contains("invalid network name"), "{err}");
    let err = common::fails(common::tug(tmp.path()).args(["network", "create", &name]));
    assert!(err.contains("already exists"), "{err}");
    let err = common::fails(common::tug(tmp.path()).args(["network", "rm", "nope"]));
    assert!(err.contains("not found"), "{err}");
    common::ok(common::tug(tmp.path()).args(["network", "rm", &name]));
    assert!(
        !netlink::links(None)
            .unwrap()
            .iter()
            .any(|l| l.name == bridge)
    );
    let ls = common::ok(common::tug(tmp.path()).args(["network", "ls", "-q"]));
    assert!(ls.trim().is_empty(), "{ls}");
}

/// Splits an `iptables -S` line into arguments (double quotes group, as the shell does).
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The filter FORWARD chain as text: through iptables-nft when installed (tug writes its
/// rules with it then), else nft.
fn forward_chain() -> String {
    let ipt = "/usr/sbin/iptables-nft";
    let out = if Path::new(ipt).exists() {
        Command::new(ipt).args(["-S", "FORWARD"]).output().unwrap()
    } else {
        Command::new("nft")
            .args(["list", "chain", "ip", "filter", "FORWARD"])
            .output()
            .unwrap()
    };
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn network_works_behind_a_docker_style_forward_drop() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    // This thread (and every thread and process it starts) moves to a private network
    // namespace, so the drop policy below never touches the host's traffic.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1").unwrap();
    let mut nft = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    nft.stdin
        .take()
        .unwrap()
        .write_all(
            b"table ip filter {\n chain FORWARD {\n  type filter hook forward priority filter; policy drop;\n }\n}\n",
        )
        .unwrap();
    assert!(nft.wait().unwrap().success());

    let mut lab = Lab::new();
    let name = unique("dock");
    let net = lab.network(&name, false);
    let (web_ns, web_ip) = lab.endpoint(&unique("cweb"), &name, "web-1", "web");
    let (cli_ns, _) = lab.endpoint(&unique("ccli"), &name, "cli-1", "cli");
    serve_http(&mut lab, &web_ns, "through docker's drop");
    let tag = format!("tug:{}", net.bridge);
    assert!(forward_chain().contains(&tag), "{}", forward_chain());
    let url = format!("http://{web_ip}/");
    eventually("bridged traffic passes", || {
        run_in(&cli_ns, &["busybox", "wget", "-q", "-O", "-", &url], 4).0
    });
    // Without tug's rules the drop policy really blocks the bridge (the hazard is real) …
    tug::engine::network::nft::remove_forward_accepts(&net.bridge, Some(false)).unwrap();
    assert!(!forward_chain().contains(&tag));
    let (ok, _) = run_in(&cli_ns, &["busybox", "wget", "-q", "-O", "-", &url], 3);
    assert!(!ok, "traffic passed a drop policy without tug's rules");
    // … and the next command puts them back.
    lab.nets.reconcile().unwrap();
    assert!(forward_chain().contains(&tag));
    // A set with a rule missing (someone deleted one) is put back whole, without doubles.
    let ours = || forward_chain().lines().filter(|l| l.contains(&tag)).count();
    let full = ours();
    assert!(full >= 1, "{}", forward_chain());
    if Path::new("/usr/sbin/iptables-nft").exists() {
        let first = forward_chain()
            .lines()
            .find(|l| l.contains(&tag))
            .unwrap()
            .replacen("-A", "-D", 1);
        let args: Vec<String> = shell_words(&first);
        let delete_first = || {
            assert!(
                Command::new("/usr/sbin/iptables-nft")
                    .args(&args)
                    .status()
                    .unwrap()
                    .success()
            );
        };
        delete_first();
        assert_eq!(ours(), full - 1);
        lab.nets.reconcile().unwrap();
        assert_eq!(ours(), full, "{}", forward_chain());
        // Removing a set that is not whole falls back to listing: what is there goes.
        delete_first();
        tug::engine::network::nft::remove_forward_accepts(&net.bridge, Some(false)).unwrap();
        assert_eq!(ours(), 0, "{}", forward_chain());
        lab.nets.reconcile().unwrap();
        assert_eq!(ours(), full, "{}", forward_chain());
    }
    eventually("bridged traffic passes again", || {
        run_in(&cli_ns, &["busybox", "wget", "-q", "-O", "-", &url], 4).0
    });
    lab.finish();
    assert!(!forward_chain().contains("tug:"), "{}", forward_chain());
}

/// Cost of wiring one container into a network (namespace + veth + address + route + DNS
/// record), as the median of 30 runs. Run with
/// `cargo nextest run --release --run-ignored only --no-capture -E 'test(network_bench_wiring)'`.
#[test]
#[ignore = "benchmark"]
fn network_bench_wiring() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let name = unique("bench");
    lab.network(&name, false);
    let mut times = Vec::new();
    let mut ns_times = Vec::new();
    for i in 0..30 {
        let id = unique(&format!("b{i}"));
        let t = Instant::now();
        let ns = lab.nets.create_netns(&id).unwrap();
        ns_times.push(t.elapsed().as_secs_f64() * 1000.0);
        lab.nets
            .connect(
                &ns,
                &name,
                &EndpointSpec {
                    container_id: id.clone(),
                    container_name: format!("bench-{i}"),
                    service: Some("bench".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        lab.nets.disconnect_all(&id).unwrap();
        let _ = t;
    }
    times.sort_by(f64::total_cmp);
    ns_times.sort_by(f64::total_cmp);
    println!(
        "of which creating the namespace: median {:.2} ms",
        ns_times[ns_times.len() / 2]
    );
    println!(
        "wiring one container into a network: median {:.2} ms, min {:.2} ms, max {:.2} ms (n=30)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    lab.finish();
}

#[test]
fn network_multi_network_container_with_alias_static_ip_mac_and_priority() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let (front, back) = (unique("front"), unique("back"));
    let net_f = lab.network(&front, false);
    let net_b = lab.network(&back, false);
    let (_, web_ip) = lab.endpoint(&unique("cweb"), &front, "p-web-1", "web");
    let (db_ns, db_ip) = lab.endpoint(&unique("cdb"), &back, "p-db-1", "db");
    let app = unique("capp");
    let ns = lab.nets.create_netns(&app).unwrap();
    lab.containers.push(app.clone());
    let static_ip = Ipv4Addr::from(u32::from(net_b.subnet.addr) + 50);
    let spec = |priority: i32, aliases: Vec<String>, ip: Option<Ipv4Addr>, mac: Option<&str>| {
        EndpointSpec {
            container_id: app.clone(),
            container_name: "p-app-1".into(),
            service: Some("app".into()),
            project: Some("p".into()),
            aliases,
            ipv4_address: ip,
            mac_address: mac.map(str::to_string),
            priority,
            ..Default::default()
        }
    };
    let eps = lab
        .nets
        .connect_all(
            &ns,
            vec![
                (front.clone(), spec(0, vec![], None, None)),
                (
                    back.clone(),
                    spec(
                        10,
                        vec!["database-proxy".into()],
                        Some(static_ip),
                        Some("02:00:00:aa:bb:cc"),
                    ),
                ),
            ],
        )
        .unwrap();
    // Highest priority first: back is eth0 and holds the only default route.
    assert_eq!(
        (eps[0].network.as_str(), eps[0].ifname.as_str()),
        (back.as_str(), "eth0")
    );
    assert_eq!(
        (eps[1].network.as_str(), eps[1].ifname.as_str()),
        (front.as_str(), "eth1")
    );
    assert_eq!(eps[0].ip, static_ip);
    let defaults: Vec<_> = netlink::routes(Some(&ns))
        .unwrap()
        .into_iter()
        .filter(|r| r.prefix == 0 && r.table == 254)
        .collect();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0].gateway, Some(net_b.gateway));
    let (ok, out) = run_in(&ns, &["busybox", "ip", "link", "show", "eth0"], 5);
    assert!(ok && out.contains("02:00:00:aa:bb:cc"), "{out}");
    // The alias is scoped to its network.
    assert_eq!(query(net_b.gateway, "database-proxy").1, vec![static_ip]);
    assert!(query(net_f.gateway, "database-proxy").1.is_empty());
    // The app asks its first network's server (back) and still finds web on front …
    let (ok, out) = run_in(
        &ns,
        &["busybox", "nslookup", "web", &net_b.gateway.to_string()],
        6,
    );
    assert!(ok && out.contains(&web_ip.to_string()), "{out}");
    let (ok, out) = run_in(
        &ns,
        &["busybox", "nslookup", "db", &net_b.gateway.to_string()],
        6,
    );
    assert!(ok && out.contains(&db_ip.to_string()), "{out}");
    // … but db, only on back, does not.
    let (_, out) = run_in(
        &db_ns,
        &["busybox", "nslookup", "web", &net_b.gateway.to_string()],
        6,
    );
    assert!(!out.contains(&web_ip.to_string()), "{out}");
    // A static address already taken is a clear error.
    let other = unique("cother");
    let ns2 = lab.nets.create_netns(&other).unwrap();
    lab.containers.push(other.clone());
    let err = lab
        .nets
        .connect(
            &ns2,
            &back,
            &EndpointSpec {
                container_id: other,
                container_name: "p-other-1".into(),
                ipv4_address: Some(static_ip),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("already used by p-app-1"), "{err}");
    lab.finish();
}

#[test]
fn network_dns_uses_the_containers_own_dns_servers() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let up = FakeUpstream::start();
    // The network itself has no upstream: only the container that names one gets answers.
    let mut lab = Lab::new();
    let name = unique("own");
    let net = lab.network(&name, false);
    let with = unique("cw");
    let ns_with = lab.nets.create_netns(&with).unwrap();
    lab.containers.push(with.clone());
    lab.nets
        .connect(
            &ns_with,
            &name,
            &EndpointSpec {
                container_id: with.clone(),
                container_name: "with-dns".into(),
                dns: vec![up.addr.to_string()],
                ..Default::default()
            },
        )
        .unwrap();
    let (ns_without, _) = lab.endpoint(&unique("cwo"), &name, "without-dns", "plain");
    let gw = net.gateway.to_string();
    let mut out = String::new();
    eventually("forwarded to the container's dns server", || {
        let (ok, o) = run_in(&ns_with, &["busybox", "nslookup", "outside.test", &gw], 6);
        out = o;
        ok && out.contains("192.0.2.77")
    });
    let (_, out) = run_in(
        &ns_without,
        &["busybox", "nslookup", "outside.test", &gw],
        6,
    );
    assert!(!out.contains("192.0.2.77"), "{out}");
    // Names of the network still come from tug, not from the upstream.
    let (ok, out) = run_in(&ns_with, &["busybox", "nslookup", "plain", &gw], 6);
    assert!(ok && !out.contains("NXDOMAIN"), "{out}");
    lab.finish();
}

/// endpoints.json is renamed into place without fsync: a torn file is possible only after a
/// system crash, so one written before the current boot reads as empty (and reconcile sweeps
/// the veths it no longer knows); a torn file written in this boot is still an error.
#[test]
fn network_torn_endpoints_file_from_an_earlier_boot_reads_empty() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let name = unique("torn");
    let net = lab.network(&name, false);
    let id = unique("t");
    lab.endpoint(&id, &name, "c1", "svc");
    let veth = lab.nets.endpoints(&name).unwrap()[0].host_veth.clone();
    assert!(netlink::link_exists(&veth).unwrap());
    let file = lab
        .root
        .path()
        .join("networks")
        .join(&name)
        .join("endpoints.json");
    std::fs::write(&file, b"{\"t\": {\"network\": ").unwrap();
    let err = lab.nets.endpoints(&name).unwrap_err().to_string();
    assert!(err.contains("endpoints.json"), "{err}");

    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let before_boot = std::time::UNIX_EPOCH + Duration::from_secs(btime - 3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(before_boot)
        .unwrap();
    assert!(lab.nets.endpoints(&name).unwrap().is_empty());
    lab.nets.reconcile().unwrap();
    assert!(
        !netlink::link_exists(&veth).unwrap(),
        "reconcile removes the veth no record knows"
    );
    // The network works on: a new endpoint is recorded in a sound file.
    let id2 = unique("t");
    lab.endpoint(&id2, &name, "c2", "svc");
    let eps = lab.nets.endpoints(&name).unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].container_id, id2);
    assert!(links_on(&net.bridge).contains(&eps[0].host_veth));
    lab.finish();
}

fn links_on(bridge: &str) -> Vec<String> {
    let links = netlink::links(None).unwrap();
    let Some(br) = links.iter().find(|l| l.name == bridge) else {
        return Vec::new();
    };
    links
        .iter()
        .filter(|l| l.master == Some(br.index))
        .map(|l| l.name.clone())
        .collect()
}

#[test]
fn network_nft_tables_over_netlink_match_nft() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let name = unique("tugnl").replace('-', "_");
    struct Drop_(String);
    impl Drop for Drop_ {
        fn drop(&mut self) {
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", "ip", &self.0])
                .status();
        }
    }
    let before = tug::engine::network::nft::ip_tables().unwrap();
    let gen_before = tug::engine::network::nft::generation().unwrap();
    assert!(!before.contains(&name));
    crate::common::ok(std::process::Command::new("nft").args(["add", "table", "ip", &name]));
    let guard = Drop_(name.clone());
    let with = tug::engine::network::nft::ip_tables().unwrap();
    // Any change to the ruleset moves the generation on.
    assert_ne!(tug::engine::network::nft::generation().unwrap(), gen_before);
    assert!(with.contains(&name), "{name} not in {with:?}");
    // nft sees the same table the netlink dump reports.
    let listed =
        crate::common::ok(std::process::Command::new("nft").args(["list", "tables", "ip"]));
    assert!(
        listed
            .lines()
            .any(|l| l.trim() == format!("table ip {name}")),
        "{listed}"
    );
    assert!(tug::engine::network::nft::table_exists(&name).unwrap());
    drop(guard);
    assert!(!tug::engine::network::nft::table_exists(&name).unwrap());

    // Deleting a table over netlink (a batched NFT_MSG_DELTABLE) removes it with its chains
    // and rules, as `nft` sees it; deleting a missing table is no error.
    let mut add = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        add.stdin
            .take()
            .unwrap()
            .write_all(
                format!(
                    "table ip {name} {{\n chain c {{\n  type filter hook forward priority 10; policy accept;\n  counter accept\n }}\n}}\n"
                )
                .as_bytes(),
            )
            .unwrap();
    }
    assert!(add.wait().unwrap().success());
    let guard = Drop_(name.clone());
    assert!(tug::engine::network::nft::table_exists(&name).unwrap());
    tug::engine::network::nft::delete_table(&name).unwrap();
    assert!(!tug::engine::network::nft::table_exists(&name).unwrap());
    let listed =
        crate::common::ok(std::process::Command::new("nft").args(["list", "tables", "ip"]));
    assert!(!listed.contains(&name), "{listed}");
    tug::engine::network::nft::delete_table(&name).unwrap();
    drop(guard);
    assert!(tug::engine::network::nft::delete_table("").is_err());
}

#[test]
fn network_detached_veths_go_with_their_bridge_and_namespaces_at_the_end() {
    if !require_root() || !common::require_tools(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let gone_net = lab.network(&unique("tdgo"), false);
    let kept_net = lab.network(&unique("tdkeep"), false);
    let ids: Vec<String> = (0..3).map(|i| unique(&format!("tdc{i}"))).collect();
    let mut veths = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        lab.endpoint(id, &gone_net.name, &format!("c{i}"), "svc");
        veths.push(
            lab.nets
                .endpoints_of_container(id)
                .unwrap()
                .remove(0)
                .host_veth,
        );
    }
    // The last container is on the network that stays, too.
    let ns2 = lab.nets.netns_path(&ids[2]);
    lab.nets
        .connect(
            &ns2,
            &kept_net.name,
            &EndpointSpec {
                container_id: ids[2].clone(),
                container_name: "c2".into(),
                service: Some("svc".into()),
                project: Some("proj".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let bystander = unique("tdby");
    lab.endpoint(&bystander, &kept_net.name, "by", "svc");
    let kept_veth = lab
        .nets
        .endpoints_of_container(&ids[2])
        .unwrap()
        .into_iter()
        .find(|e| e.network == kept_net.name)
        .unwrap()
        .host_veth;
    assert_eq!(links_on(&gone_net.bridge).len(), 3);

    let detached: Vec<_> = ids
        .iter()
        .map(|id| lab.nets.detach_all(id).unwrap())
        .collect();
    // Records are gone at once; namespaces and veths stay until the network goes.
    for id in &ids[..2] {
        assert!(lab.nets.endpoints_of_container(id).unwrap().is_empty());
    }
    for v in &veths {
        assert!(netlink::link_exists(v).unwrap(), "{v} went too early");
    }
    lab.nets.remove(&gone_net.name, false).unwrap();
    let links = netlink::links(None).unwrap();
    for v in veths.iter().chain([&gone_net.bridge]) {
        assert!(
            !links.iter().any(|l| &l.name == v),
            "{v} outlived the bridge"
        );
    }
    // The peers inside the namespaces went with them.
    for id in &ids[..2] {
        let inside = netlink::link_names(&lab.nets.netns_path(id)).unwrap();
        assert_eq!(inside, vec!["lo".to_string()], "{id}: {inside:?}");
    }
    // The network that stays keeps its bridge and the bystander, in no device group.
    assert!(netlink::link_exists(&kept_veth).unwrap());
    lab.nets.finish_detached(&detached).unwrap();
    for id in &ids {
        assert!(!lab.nets.netns_path(id).exists(), "netns of {id} remains");
    }
    assert!(
        !netlink::link_exists(&kept_veth).unwrap(),
        "{kept_veth} remains"
    );
    let on_kept = links_on(&kept_net.bridge);
    assert_eq!(on_kept.len(), 1, "{on_kept:?}");
    let links = netlink::links(None).unwrap();
    for name in [&kept_net.bridge, &on_kept[0]] {
        let l = links.iter().find(|l| &l.name == name).unwrap();
        assert_eq!(l.group, 0, "{name} was put in a group");
    }
    lab.finish();
}
