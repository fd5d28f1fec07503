//! Networks and volumes through `tug up`: DNS that follows container state, `volumes_from`,
//! `tug network connect/disconnect`. Each test has its own state root and project; its guard
//! runs `down -v` and checks that no bridge, veth, nft table, namespace or mount of the test
//! remains, even when the test fails.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tug::engine::network::{NetworkInfo, netlink, nft};

use crate::common::{self, busybox_image, eventually, ok, require_root, run, tug, unique};

/// A compose project in a temp dir with its own state root.
struct Stack {
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
    name: String,
    /// Bridges and host veths seen while the stack ran, checked after `down`.
    bridges: Vec<String>,
    veths: Vec<String>,
}

impl Stack {
    fn new(yaml: &str) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
        busybox_image(root.path());
        Stack {
            dir,
            root,
            name: unique("tn"),
            bridges: Vec::new(),
            veths: Vec::new(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = tug(self.root.path());
        // Names the networks do not know go to a closed port on loopback, never elsewhere.
        c.current_dir(self.dir.path())
            .env("TUG_DNS_UPSTREAM", "127.0.0.1:9")
            .args(["-p", &self.name, "--progress", "plain"]);
        c
    }

    fn tug(&mut self, args: &[&str]) -> String {
        let out = ok(self.cmd().args(args));
        self.note_objects();
        out
    }

    fn output(&self, args: &[&str]) -> Output {
        run(self.cmd().args(args))
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    /// Remembers the bridges and veths of the state root (for the leftover check).
    fn note_objects(&mut self) {
        let Ok(rd) = std::fs::read_dir(self.root().join("networks")) else {
            return;
        };
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path().join("network.json"))
                && let Ok(info) = serde_json::from_slice::<NetworkInfo>(&b)
                && !self.bridges.contains(&info.bridge)
            {
                self.bridges.push(info.bridge);
            }
            if let Ok(b) = std::fs::read(e.path().join("endpoints.json"))
                && let Ok(eps) = serde_json::from_slice::<serde_json::Value>(&b)
                && let Some(map) = eps.as_object()
            {
                for ep in map.values() {
                    if let Some(v) = ep["host_veth"].as_str()
                        && !self.veths.iter().any(|x| x == v)
                    {
                        self.veths.push(v.to_string());
                    }
                }
            }
        }
    }

    /// `nslookup NAME` in a container of `service`: the addresses, or None when the name
    /// does not resolve.
    fn resolve(&self, service: &str, name: &str) -> Option<Vec<String>> {
        let out = self.output(&["exec", "-T", service, "nslookup", name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return None;
        }
        // busybox prints the server first, then "Name: x" and its "Address: ip" lines.
        let addrs: Vec<String> = text
            .split_once("Name:")
            .map(|(_, rest)| {
                rest.lines()
                    .filter_map(|l| l.strip_prefix("Address:"))
                    .map(|a| a.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        (!addrs.is_empty()).then_some(addrs)
    }

    /// What is left of the test on the host and in the state root.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let root = std::fs::canonicalize(self.root())
            .unwrap()
            .display()
            .to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for l in mounts.lines().filter(|l| l.contains(&root)) {
            left.push(format!("mount {l}"));
        }
        for sub in ["containers", "netns", "networks", "volumes"] {
            if let Ok(rd) = std::fs::read_dir(self.root().join(sub)) {
                for e in rd
                    .flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                {
                    left.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        let links = netlink::links(None).unwrap();
        for l in links {
            if self.bridges.contains(&l.name) || self.veths.contains(&l.name) {
                left.push(format!("link {}", l.name));
            }
        }
        for b in &self.bridges {
            if nft::table_exists(b).unwrap_or(true) {
                left.push(format!("nft table of {b}"));
            }
        }
        left
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.note_objects();
        let _ = run(self
            .cmd()
            .args(["down", "-v", "--remove-orphans", "-t", "1"]));
        let left = self.leftovers();
        if !std::thread::panicking() {
            assert!(left.is_empty(), "left behind after down: {left:?}");
        }
    }
}

#[test]
fn network_compose_dns_follows_stop_start_exit_and_restart() {
    if !require_root() {
        return;
    }
    let mut s = Stack::new(
        r#"
services:
  a:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
  b:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
  c:
    image: busybox:latest
    command: ["sh", "-c", "while [ ! -f /tmp/go ]; do sleep 0.1; done"]
  d:
    image: busybox:latest
    restart: always
    command: ["sh", "-c", "if [ -f /tmp/once ]; then exec sleep 1000; fi; touch /tmp/once; while [ ! -f /tmp/go ]; do sleep 0.1; done; exit 3"]
"#,
    );
    s.tug(&["up", "-d"]);
    let proj = s.name.clone();
    let b_names = ["b".to_string(), format!("{proj}-b-1"), format!("b.{proj}")];
    let b_addr = s.resolve("a", "b").expect("b resolves while it runs");
    assert_eq!(b_addr.len(), 1, "{b_addr:?}");
    for n in &b_names {
        assert_eq!(s.resolve("a", n).as_ref(), Some(&b_addr), "{n}");
    }

    // Stopped: every name of b is gone; the others still answer.
    s.tug(&["stop", "b"]);
    for n in &b_names {
        assert_eq!(s.resolve("a", n), None, "{n} resolves after stop");
    }
    assert!(s.resolve("a", "c").is_some(), "c still resolves");
    // Started again: back, at the same address (kept while stopped).
    s.tug(&["start", "b"]);
    for n in &b_names {
        assert_eq!(s.resolve("a", n).as_ref(), Some(&b_addr), "{n} after start");
    }

    // A container that exits by itself drops out without any tug command.
    assert!(s.resolve("a", "c").is_some());
    s.tug(&["exec", "-T", "c", "touch", "/tmp/go"]);
    eventually("c to drop out of DNS", Duration::from_secs(15), || {
        s.resolve("a", "c").is_none()
    });

    // A restart by the restart policy: d exits once, the supervisor starts it again, and it
    // answers again.
    assert!(s.resolve("a", "d").is_some());
    s.tug(&["exec", "-T", "d", "touch", "/tmp/go"]);
    let d = format!("{proj}-d-1");
    eventually("d to be restarted", Duration::from_secs(20), || {
        let (state, restarts) = container_state(&s, &d);
        state == "running" && restarts >= 1
    });
    eventually(
        "d to resolve after its restart",
        Duration::from_secs(15),
        || s.resolve("a", "d").is_some(),
    );
}

/// (state, restart count) of a container from `tug container inspect`.
fn container_state(s: &Stack, name: &str) -> (String, u64) {
    let out = ok(tug(s.root()).args(["container", "inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v[0]["state"].as_str().unwrap_or_default().to_string(),
        v[0]["restart_count"].as_u64().unwrap_or(0),
    )
}

#[test]
fn network_compose_volumes_from_shares_mounts_read_only_with_ro() {
    if !require_root() {
        return;
    }
    // The readers come first in the file: only the implicit dependency creates the writer
    // before them.
    let mut s = Stack::new("services: {}\n");
    let yaml = format!(
        r#"
services:
  reader:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    volumes_from: ["writer:ro"]
  helper:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    volumes_from: ["service:writer"]
  byname:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    volumes_from: ["container:{}-writer-1:ro"]
  writer:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "echo anon > /data/f; echo named > /named/f; exec sleep 1000"]
    volumes: ["/data", "shared:/named", "./hostdir:/host"]
volumes:
  shared:
"#,
        s.name
    );
    std::fs::write(s.dir.path().join("compose.yaml"), yaml).unwrap();
    std::fs::create_dir(s.dir.path().join("hostdir")).unwrap();
    std::fs::write(s.dir.path().join("hostdir/h"), "from the host\n").unwrap();
    s.tug(&["up", "-d"]);
    let cat = |s: &Stack, svc: &str, path: &str| -> Option<String> {
        let out = s.output(&["exec", "-T", svc, "cat", path]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    eventually("the writer to write", Duration::from_secs(10), || {
        cat(&s, "writer", "/named/f").is_some()
    });
    for reader in ["reader", "byname", "helper"] {
        assert_eq!(
            cat(&s, reader, "/data/f").as_deref(),
            Some("anon"),
            "{reader}"
        );
        assert_eq!(
            cat(&s, reader, "/named/f").as_deref(),
            Some("named"),
            "{reader}"
        );
        assert_eq!(
            cat(&s, reader, "/host/h").as_deref(),
            Some("from the host"),
            "{reader}"
        );
    }
    // `:ro` readers cannot write to any of the shared mounts.
    for reader in ["reader", "byname"] {
        for dir in ["/data", "/named", "/host"] {
            let out = s.output(&["exec", "-T", reader, "touch", &format!("{dir}/x")]);
            assert!(!out.status.success(), "{reader} wrote to {dir}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("Read-only"), "{reader} {dir}: {err}");
        }
    }
    assert!(!s.dir.path().join("hostdir/x").exists());
    // Without a mode the source's (writable) mode is kept: the writer sees what helper wrote.
    s.tug(&["exec", "-T", "helper", "sh", "-c", "echo shared > /data/g"]);
    assert_eq!(cat(&s, "writer", "/data/g").as_deref(), Some("shared"));
}

#[test]
fn network_compose_volumes_from_a_missing_container_fails_clearly() {
    if !require_root() {
        return;
    }
    let mut s = Stack::new(
        r#"
services:
  reader:
    image: busybox:latest
    command: ["sleep", "1000"]
    volumes_from: ["container:no-such-container-here"]
  bad:
    image: busybox:latest
    command: ["sleep", "1000"]
    volumes_from: ["container:other:rx"]
"#,
    );
    let out = s.output(&["up", "-d", "reader"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-container-here") && err.contains("does not exist"),
        "{err}"
    );
    let out = s.output(&["up", "-d", "bad"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rx"), "{err}");
    s.note_objects();
}

#[test]
fn network_compose_connect_and_disconnect_a_running_container() {
    if !require_root() {
        return;
    }
    let mut s = Stack::new(
        r#"
services:
  a:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    networks: [front]
  c:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "echo from-c > /tmp/i; exec httpd -f -p 80 -h /tmp"]
    networks: [back]
  h:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    network_mode: host
networks:
  front:
  back:
"#,
    );
    s.tug(&["up", "-d"]);
    let p = s.name.clone();
    let (a, back) = (format!("{p}-a-1"), format!("{p}_back"));
    let c_ip = s.resolve("c", "c").expect("c resolves on its own network")[0].clone();
    let fetch = |s: &Stack, target: &str| -> bool {
        let out = s.output(&[
            "exec",
            "-T",
            "a",
            "timeout",
            "3",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{target}/i"),
        ]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "from-c"
    };
    // Separate networks: a neither resolves nor reaches c.
    assert_eq!(s.resolve("a", "c"), None);
    assert!(!fetch(&s, &c_ip), "a reaches c before connect");

    s.tug(&["network", "connect", &back, &a, "--alias", "extra-name"]);
    let ifaces = s.tug(&["exec", "-T", "a", "ip", "-o", "-4", "addr"]);
    assert!(
        ifaces.contains("eth1"),
        "a has a second interface:\n{ifaces}"
    );
    assert_eq!(s.resolve("a", "c"), Some(vec![c_ip.clone()]));
    assert!(fetch(&s, "c"), "a reaches c by name after connect");
    // c resolves a (container name and alias) at a's address on back.
    let a_on_back = s
        .resolve("c", "extra-name")
        .expect("alias resolves on back");
    assert_eq!(s.resolve("c", &a), Some(a_on_back.clone()));
    assert!(ifaces.contains(&a_on_back[0]), "{ifaces} has {a_on_back:?}");
    // Twice is an error; so is a container on the host's network.
    let out = s.output(&["network", "connect", &back, &a]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already connected"));
    let out = s.output(&["network", "connect", &back, &format!("{p}-h-1")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("host's network"));

    s.tug(&["network", "disconnect", &back, &a]);
    let ifaces = s.tug(&["exec", "-T", "a", "ip", "-o", "-4", "addr"]);
    assert!(!ifaces.contains("eth1"), "eth1 is gone:\n{ifaces}");
    assert_eq!(s.resolve("a", "c"), None);
    assert_eq!(s.resolve("c", "extra-name"), None);
    assert!(!fetch(&s, &c_ip), "a reaches c after disconnect");
    let out = s.output(&["network", "disconnect", &back, &a]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not connected"));
    // a is still fine on its own network.
    assert!(s.resolve("a", "a").is_some());
}

#[test]
fn network_compose_down_leaves_no_links_on_project_or_external_networks() {
    if !require_root() {
        return;
    }
    let ext = unique("ext");
    let mut s = Stack::new(&format!(
        r#"
services:
  a:
    image: busybox:latest
    command: ["sleep", "1000"]
    networks: [inner, outer]
  b:
    image: busybox:latest
    command: ["sleep", "1000"]
    networks: [outer]
networks:
  inner: {{}}
  outer:
    external: true
    name: {ext}
"#
    ));
    // Removes the external network even when the test fails (dropped before the stack).
    struct External<'a>(&'a Path, String);
    impl Drop for External<'_> {
        fn drop(&mut self) {
            let _ = run(tug(self.0).args(["network", "rm", "--force", &self.1]));
        }
    }
    ok(tug(s.root()).args(["network", "create", &ext]));
    let root = s.root().to_path_buf();
    let _ext_guard = External(&root, ext.clone());
    s.tug(&["up", "-d"]);
    let veths = s.veths.clone();
    assert_eq!(veths.len(), 3, "{veths:?}");
    let ext_info: NetworkInfo = serde_json::from_slice(
        &std::fs::read(s.root().join("networks").join(&ext).join("network.json")).unwrap(),
    )
    .unwrap();
    s.tug(&["down"]);
    // When `down` returns, every container link is gone (those on the project's network went
    // while its bridge was deleted, the rest were waited for at the end), the project's
    // bridge is gone and the external network is untouched.
    let links: Vec<String> = netlink::links(None)
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    for v in &veths {
        assert!(!links.contains(v), "{v} still exists after down");
    }
    assert!(links.contains(&ext_info.bridge), "external bridge removed");
    // Nor is anything else of the containers left: supervisors (which may still have been
    // unmounting when the containers were retired), files, namespaces.
    let left: Vec<String> = common::processes_of(s.root())
        .into_iter()
        .filter(|p| !p.contains("network-dns"))
        .collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    for dir in ["containers", "netns"] {
        let entries: Vec<String> = std::fs::read_dir(s.root().join(dir))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n != ".names")
                    .collect()
            })
            .unwrap_or_default();
        assert!(entries.is_empty(), "{dir} left after down: {entries:?}");
    }
    let nets = ok(tug(s.root()).args(["network", "ls", "-q"]));
    assert_eq!(
        nets.lines().collect::<Vec<_>>(),
        vec![ext.as_str()],
        "{nets}"
    );
    ok(tug(s.root()).args(["network", "rm", &ext]));
}
