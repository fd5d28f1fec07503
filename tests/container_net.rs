//! `tug container run` with networks, as `docker run`: user networks joined by name with DNS
//! between containers, the default `bridge` network, `-p` published on the host, and removal
//! (`rm`, `--rm`) leaving no veth, namespace or port proxy behind.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{self, fails, ok, processes_of};

/// A state root with the busybox image; on drop removes containers and networks, then checks
/// that nothing of the root is left (mounts, veths, processes).
struct NetEnv {
    dir: tempfile::TempDir,
    veths: std::cell::RefCell<Vec<String>>,
}

impl NetEnv {
    fn new() -> Option<NetEnv> {
        if !common::require_root() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("tug-ctrnet-")
            .tempdir()
            .unwrap();
        common::busybox_image(dir.path());
        Some(NetEnv {
            dir,
            veths: std::cell::RefCell::new(Vec::new()),
        })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn tug(&self) -> Command {
        let mut c = common::tug(self.root());
        // The embedded DNS servers forward unknown names only to loopback.
        c.env("TUG_DNS_UPSTREAM", "127.0.0.1:9");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(self.tug().args(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.tug().args(args))
    }

    fn id(&self, name: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["container", "inspect", name])).unwrap();
        v[0]["id"].as_str().unwrap().to_string()
    }

    /// Endpoints (container id → host veth) of network `net`, remembered for the leak check.
    fn endpoints(&self, net: &str) -> Vec<(String, String)> {
        let p = self
            .root()
            .join("networks")
            .join(net)
            .join("endpoints.json");
        let Ok(t) = std::fs::read_to_string(p) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        let out: Vec<(String, String)> = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, e)| (k.clone(), e["host_veth"].as_str().unwrap().to_string()))
            .collect();
        self.veths
            .borrow_mut()
            .extend(out.iter().map(|(_, v)| v.clone()));
        out
    }

    fn netns(&self, id: &str) -> PathBuf {
        self.root().join("netns").join(id)
    }
}

fn mounted(p: &Path) -> bool {
    let s = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(s.as_str()))
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl Drop for NetEnv {
    fn drop(&mut self) {
        let ids = self.ok(&["container", "ls", "-a", "-q", "--no-trunc"]);
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = self.run(&["container", "rm", "--force", id]);
        }
        let nets = self.run(&["network", "ls", "-q"]);
        for n in String::from_utf8_lossy(&nets.stdout).lines() {
            let _ = self.run(&["network", "rm", "--force", n.trim()]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let leaks = || {
            let r = self.root().display().to_string();
            let mut l: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&r))
                .map(|l| format!("mount: {l}"))
                .collect();
            l.extend(processes_of(self.root()));
            for v in self.veths.borrow().iter() {
                if link_exists(v) {
                    l.push(format!("veth {v}"));
                }
            }
            l
        };
        let mut l = leaks();
        while !l.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            l = leaks();
        }
        if !std::thread::panicking() {
            assert!(l.is_empty(), "leaked: {l:#?}");
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /` on 127.0.0.1:port; the body, or None when nothing answers.
fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn httpd(body: &str) -> String {
    format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www")
}

#[test]
fn container_net_user_network_dns_by_name_and_rm_leaves_nothing() {
    let Some(env) = NetEnv::new() else { return };
    let net = common::unique("tcn");
    env.ok(&["network", "create", &net]);
    let web = common::unique("web");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &web,
        "--network",
        &net,
        "busybox",
        "sh",
        "-c",
        &httpd("hello-from-web"),
    ]);
    let web_id = env.id(&web);
    assert!(mounted(&env.netns(&web_id)), "no namespace for {web}");
    // A second container on the same network reaches the first by its name (retry while
    // httpd starts); --rm removes it and its wiring when it exits.
    let client = common::unique("cli");
    let script = format!(
        "for i in $(seq 1 50); do timeout 5 wget -q -O - http://{web}/ && exit 0; sleep 0.1; done; exit 1"
    );
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--name",
        &client,
        "--network",
        &net,
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.trim(), "hello-from-web");
    // The name resolves to web's address on the network, through the embedded DNS server.
    let eps = env.endpoints(&net);
    assert_eq!(eps.len(), 1, "only web is left on {net}: {eps:?}");
    let ip = {
        let p = env
            .root()
            .join("networks")
            .join(&net)
            .join("endpoints.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v[&web_id]["ip"].as_str().unwrap().to_string()
    };
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        &net,
        "busybox",
        "nslookup",
        &web,
    ]);
    assert!(out.contains(&ip), "nslookup {web} gave {out}");
    // The client's --rm left no trace: its namespace is gone and only web is connected.
    let left: Vec<String> = std::fs::read_dir(env.root().join("netns"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![web_id.clone()], "namespaces left after --rm");
    let veth = eps[0].1.clone();
    assert!(link_exists(&veth));
    // rm: veth, namespace, endpoint and DNS record go; the network stays.
    env.ok(&["container", "rm", "--force", &web]);
    assert!(!link_exists(&veth), "veth {veth} left after rm");
    assert!(!mounted(&env.netns(&web_id)), "namespace left after rm");
    assert!(!env.netns(&web_id).exists());
    assert!(env.endpoints(&net).is_empty());
    let dns =
        std::fs::read_to_string(env.root().join("networks").join(&net).join("dns.json")).unwrap();
    assert!(!dns.contains(&web_id), "DNS record left: {dns}");
    assert!(env.ok(&["network", "ls", "-q"]).lines().any(|l| l == net));
}

#[test]
fn container_net_default_bridge_and_published_port() {
    let Some(env) = NetEnv::new() else { return };
    let port = free_port();
    let web = common::unique("pub");
    let publish = format!("127.0.0.1:{port}:80");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &web,
        "-p",
        &publish,
        "busybox",
        "sh",
        "-c",
        &httpd("published-hello"),
    ]);
    // No --network: the default network `bridge` was made and joined.
    assert!(
        env.ok(&["network", "ls", "-q"])
            .lines()
            .any(|l| l == "bridge"),
        "no bridge network"
    );
    let eps = env.endpoints("bridge");
    assert_eq!(eps.len(), 1);
    let id = env.id(&web);
    assert_eq!(eps[0].0, id);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut body = None;
    while Instant::now() < deadline && body.is_none() {
        body = http_get(port).filter(|b| !b.is_empty());
        if body.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(body.as_deref().map(str::trim), Some("published-hello"));
    let proxies: Vec<String> = processes_of(env.root())
        .into_iter()
        .filter(|p| p.contains("network-proxy"))
        .collect();
    assert_eq!(proxies.len(), 1, "{proxies:?}");
    // The address and port are taken: a second container cannot publish the same one, and
    // its failure leaves no container and no namespace.
    let e = fails(env.tug().args([
        "container",
        "run",
        "-d",
        "--name",
        "second",
        "-p",
        &publish,
        "busybox",
        "true",
    ]));
    assert!(e.contains("already in use"), "{e}");
    assert!(
        env.run(&["container", "inspect", "second"])
            .status
            .code()
            .is_some_and(|c| c != 0)
    );
    assert_eq!(
        std::fs::read_dir(env.root().join("netns")).unwrap().count(),
        1
    );
    // rm: the port no longer answers, the proxy is gone, the bridge network stays.
    env.ok(&["container", "rm", "--force", &web]);
    assert!(
        http_get(port).is_none(),
        "port {port} still answers after rm"
    );
    assert!(
        !processes_of(env.root())
            .iter()
            .any(|p| p.contains("network-proxy")),
        "proxy left after rm"
    );
    assert!(!link_exists(&eps[0].1));
    assert!(!mounted(&env.netns(&id)));
    assert!(
        env.ok(&["network", "ls", "-q"])
            .lines()
            .any(|l| l == "bridge"),
        "the default network must not be removed implicitly"
    );
    // Nor by a prune, which removes an unused user network beside it.
    let spare = common::unique("spare");
    env.ok(&["network", "create", &spare]);
    let pruned = env.ok(&["network", "prune"]);
    assert!(pruned.lines().any(|l| l == spare), "{pruned}");
    assert!(!pruned.lines().any(|l| l == "bridge"), "{pruned}");
    let left = env.ok(&["network", "ls", "-q"]);
    assert!(left.lines().any(|l| l == "bridge"), "{left}");
    assert!(!left.lines().any(|l| l == spare), "{left}");
}

#[test]
fn container_net_bad_network_or_port_is_refused_and_creates_nothing() {
    let Some(env) = NetEnv::new() else { return };
    let e = fails(env.tug().args([
        "container",
        "run",
        "--rm",
        "--network",
        "nosuchnet",
        "busybox",
        "true",
    ]));
    assert!(e.contains("network nosuchnet not found"), "{e}");
    let e = fails(env.tug().args([
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        "8080:80",
        "busybox",
        "true",
    ]));
    assert!(e.contains("need a network"), "{e}");
    let e = fails(env.tug().args([
        "container",
        "run",
        "--rm",
        "-p",
        "99999:80",
        "busybox",
        "true",
    ]));
    assert!(e.contains("invalid published port"), "{e}");
    assert!(env.ok(&["container", "ls", "-a", "-q"]).trim().is_empty());
    let ns = env.root().join("netns");
    assert!(!ns.exists() || std::fs::read_dir(&ns).unwrap().count() == 0);
}

#[test]
fn container_net_orphaned_wiring_of_a_killed_run_is_released_by_the_next() {
    let Some(env) = NetEnv::new() else { return };
    let nets = tug::engine::network::Networks::open(env.root()).unwrap();
    /// Releases both namespaces even when an assertion fails.
    struct Release(tug::engine::network::Networks, Vec<String>);
    impl Drop for Release {
        fn drop(&mut self) {
            for id in &self.1 {
                let _ = self.0.disconnect_all(id);
            }
        }
    }
    let _release = Release(nets.clone(), vec!["ab".repeat(32), "cd".repeat(32)]);
    // A run killed after wiring: a namespace keyed by an id that is no container.
    let orphan = "ab".repeat(32);
    let ns = nets.create_netns(&orphan).unwrap();
    // A run still wiring (its claim names a live process, this one): left alone.
    let busy = "cd".repeat(32);
    let claim = nets.claim_netns(&busy).unwrap();
    let busy_ns = nets.create_netns(&busy).unwrap();
    assert!(mounted(&ns) && mounted(&busy_ns));
    env.ok(&["container", "run", "--rm", "busybox", "true"]);
    assert!(!mounted(&ns), "orphaned namespace left");
    assert!(mounted(&busy_ns), "a wiring in progress was released");
    drop(claim);
    nets.disconnect_all(&busy).unwrap();
    assert!(!mounted(&busy_ns));
}
