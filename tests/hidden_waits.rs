//! Hidden waits (issue 14): a networked one-shot run costs what its work costs. A process
//! that wired a container's network must not keep that network namespace alive (a socket
//! made inside it does), or every removal waits for a timeout before deleting the veth
//! itself.

use std::process::Command;
use std::time::Duration;

use crate::common::{busybox_image, ok, require_root, tug, unique};

/// Host links whose name starts with `prefix`.
fn links_named(prefix: &str) -> Vec<String> {
    ok(Command::new("ip").args(["-br", "link"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Deletes a link this test made, if it is still there.
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

#[test]
fn hidden_waits_netlink_work_in_a_namespace_leaves_it_free_to_die() {
    if !require_root() {
        return;
    }
    use tug::engine::network::{netlink, netns};
    let root = tempfile::tempdir().unwrap();
    let ns = root.path().join("netns").join("c1");
    netns::create(&ns).unwrap();
    // The first netlink work of this process happens inside the namespace.
    netlink::loopback_up(&ns).unwrap();
    // Host link names have at most 15 bytes.
    let host: String = unique("rbw").chars().take(15).collect();
    let _guard = LinkGuard(host.clone());
    ok(Command::new("ip")
        .args([
            "link", "add", &host, "type", "veth", "peer", "name", "eth9", "netns",
        ])
        .arg(&ns));
    assert_eq!(links_named(&host), vec![host.clone()]);
    netns::remove(&ns).unwrap();
    // Nothing of this process holds the namespace: the kernel destroys it, and the pair
    // with it, at once (milliseconds; the bound only keeps a broken build from hanging).
    let left = netlink::wait_links_gone(std::slice::from_ref(&host), Duration::from_secs(1));
    assert!(
        left.is_empty(),
        "{host} outlived its namespace: something in this process keeps the namespace alive"
    );
}

#[test]
fn hidden_waits_container_run_rm_leaves_no_link_or_namespace() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    busybox_image(r);
    let net = unique("rbn");
    ok(tug(r).args(["network", "create", &net]));
    let info: serde_json::Value =
        serde_json::from_str(&ok(tug(r).args(["network", "inspect", &net]))).unwrap();
    let bridge = info[0]["bridge"].as_str().unwrap().to_string();
    let t0 = std::time::Instant::now();
    for _ in 0..3 {
        ok(tug(r).args([
            "container",
            "run",
            "--rm",
            "--network",
            &net,
            "busybox",
            "true",
        ]));
        let ports = ok(Command::new("ip").args(["-br", "link", "show", "master", &bridge]));
        assert!(ports.trim().is_empty(), "veths left on {bridge}: {ports}");
        let left: Vec<_> = std::fs::read_dir(r.join("netns"))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "namespaces left: {left:?}");
    }
    // Not a benchmark: a removal that waits out a fixed 2 s timeout for each run (the veth
    // going only when the waiting process gives up) makes three runs take 6 s or more.
    assert!(
        t0.elapsed() < Duration::from_millis(5500),
        "three one-shot runs took {:?}: a removal waited for a timeout",
        t0.elapsed()
    );
    ok(tug(r).args(["network", "rm", &net]));
}

#[test]
fn hidden_waits_compose_run_rm_needs_no_up_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let p = crate::common::project::Project::new(
        r#"
services:
  job:
    image: busybox:latest
    command: ["sh", "-c", "echo done > /data/out"]
    volumes: [data:/data]
volumes:
  data:
"#,
    );
    let t0 = std::time::Instant::now();
    for _ in 0..3 {
        // No `up` first: the one-off makes the project's network and volume itself.
        p.tug(&["run", "--rm", "job"]);
        let left: Vec<_> = std::fs::read_dir(p.root().join("netns"))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "namespaces left: {left:?}");
        assert!(p.ps().is_empty(), "{:?}", p.ps());
    }
    assert!(
        t0.elapsed() < Duration::from_millis(5500),
        "three one-shot runs took {:?}: a removal waited for a timeout",
        t0.elapsed()
    );
    let vols = ok(tug(p.root()).args(["volume", "ls", "-q"]));
    assert_eq!(vols.trim(), format!("{}_data", p.name));
}
