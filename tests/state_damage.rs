//! State that survives damage (issue 14): damage to one object's record affects only that
//! object. Two projects share a state root; each kind of state file of the first is broken
//! in turn: the second keeps working, the damaged object is listed as damaged or named in a
//! clear error, and `down -v` of the first removes everything of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::project::Project;
use crate::common::{busybox_image, eventually, ok, processes_of, require_root, run, tug};

fn stack(port: u16) -> String {
    format!(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "mkdir -p /www && echo up > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:{port}:80"]
    volumes: [data:/data]
    healthcheck:
      test: ["CMD", "true"]
      interval: 200ms
volumes:
  data:
"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn id_of(p: &Project, name: &str) -> String {
    p.ps()
        .into_iter()
        .find(|c| c["Name"] == name)
        .and_then(|c| c["ID"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Everything of project `p` left on the host: containers, namespaces, links on its
/// bridge, network and volume directories, processes of its containers.
fn leftovers(p: &Project, ids: &[String], bridge: &str) -> Vec<String> {
    let mut left = Vec::new();
    let r = p.root();
    for id in ids {
        if r.join("containers").join(id).exists() {
            left.push(format!("container {id}"));
        }
    }
    for sub in ["netns", "networks", "volumes", "ports"] {
        if let Ok(rd) = std::fs::read_dir(r.join(sub)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.contains(&p.name) {
                    left.push(format!("{sub}/{n}"));
                }
            }
        }
    }
    let links = ok(Command::new("ip").args(["-br", "link"]));
    if links.lines().any(|l| l.starts_with(&format!("{bridge} "))) {
        left.push(format!("bridge {bridge}"));
    }
    for line in processes_of(r) {
        if ids.iter().any(|id| line.contains(id.as_str())) {
            left.push(format!("process {line}"));
        }
    }
    left
}

/// The files of project `a` that a kind of damage breaks.
fn targets(a: &Project, id: &str, kind: &str) -> Vec<PathBuf> {
    let r = a.root();
    let net = r.join("networks").join(format!("{}_default", a.name));
    let name = a.container("web");
    match kind {
        "container.json" | "state.json" => vec![r.join("containers").join(id).join(kind)],
        "container.json (missing)" => vec![r.join("containers").join(id).join("container.json")],
        "network.json" | "endpoints.json" | "dns.json" | "ipam.json" | "dns.pid" => {
            vec![net.join(kind)]
        }
        "volume.json" => vec![
            r.join("volumes")
                .join(format!("{}_data", a.name))
                .join(kind),
        ],
        "port record" => vec![r.join("ports").join(format!("{name}.json"))],
        other => panic!("unknown kind {other}"),
    }
}

fn damage(path: &Path, kind: &str) {
    assert!(path.exists(), "{kind}: {} does not exist", path.display());
    if kind.ends_with("(missing)") {
        std::fs::remove_file(path).unwrap();
    } else {
        // Truncated half-way through, as a full disk or a crash of another tool leaves it.
        let text = std::fs::read(path).unwrap();
        std::fs::write(path, &text[..text.len() / 2]).unwrap();
    }
}

#[test]
fn state_damage_to_one_project_leaves_the_other_working_and_is_removable() {
    if !require_root() || !crate::common::require_tools(&["ip"]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    busybox_image(root.path());
    let a = Project::in_root(root.path(), &stack(free_port()));
    let b = Project::in_root(root.path(), &stack(free_port()));
    b.tug(&["up", "-d", "--wait"]);
    let b_web = b.container("web");
    for kind in [
        "container.json",
        "container.json (missing)",
        "state.json",
        "network.json",
        "endpoints.json",
        "dns.json",
        "ipam.json",
        "dns.pid",
        "volume.json",
        "port record",
    ] {
        a.tug(&["up", "-d", "--wait"]);
        let a_web = a.container("web");
        let id = id_of(&a, &a_web);
        let info: serde_json::Value = serde_json::from_str(&ok(tug(a.root()).args([
            "network",
            "inspect",
            &format!("{}_default", a.name),
        ])))
        .unwrap();
        let bridge = info[0]["bridge"].as_str().unwrap().to_string();
        for t in targets(&a, &id, kind) {
            damage(&t, kind);
        }

        // The other project and the root-wide listings keep working.
        b.tug(&["up", "-d", "--wait"]);
        let out = b.tug(&["exec", "-T", "web", "echo", "fine"]);
        assert_eq!(out.trim(), "fine", "{kind}");
        assert_eq!(b.state_of(&b_web).as_deref(), Some("running"), "{kind}");
        for listing in [
            &["network", "ls"][..],
            &["volume", "ls"],
            &["container", "ls", "-a"],
            &["ls"],
        ] {
            let out = run(tug(a.root()).args(listing));
            assert!(
                out.status.success(),
                "{kind}: tug {listing:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The damaged project's own listing works; a damaged container shows as such.
        let out = run(a.cmd().args(["ps", "-a"]));
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{kind}: ps: {se}");
        // (The supervisor rewrites state.json at its next healthcheck: by now it may have
        // healed, and then the container is simply up.)
        let healed = kind == "state.json" && so.contains("(healthy)");
        if (kind.starts_with("container.json") || kind == "state.json") && !healed {
            assert!(
                so.contains("damaged"),
                "{kind}: ps does not say damaged: {so}"
            );
            assert!(se.contains(&id), "{kind}: the warning names the file: {se}");
        }

        // `down -v` removes every bit of it, and nothing of the other project.
        let out = run(a.cmd().args(["down", "-v", "-t", "1"]));
        assert!(
            out.status.success(),
            "{kind}: down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = leftovers(&a, std::slice::from_ref(&id), &bridge);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{kind}: left after down -v: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(b.state_of(&b_web).as_deref(), Some("running"), "{kind}");
    }
}

#[test]
fn state_damage_error_names_the_file_and_rm_f_removes_a_damaged_container() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    busybox_image(r);
    let out = ok(tug(r).args([
        "container",
        "run",
        "-d",
        "--name",
        "broken",
        "--init",
        "busybox",
        "sleep",
        "1000",
    ]));
    let id = out.trim().to_string();
    let rec = r.join("containers").join(&id).join("container.json");
    let text = std::fs::read(&rec).unwrap();
    std::fs::write(&rec, &text[..text.len() / 3]).unwrap();
    // Any use names the file and what to do.
    let err = String::from_utf8_lossy(&run(tug(r).args(["container", "inspect", "broken"])).stderr)
        .into_owned();
    assert!(
        err.contains(&rec.display().to_string()) && err.contains("rm -f"),
        "{err}"
    );
    // Listed, as damaged, and still running.
    let ls = run(tug(r).args(["container", "ls"]));
    assert!(String::from_utf8_lossy(&ls.stdout).contains("damaged"));
    assert!(String::from_utf8_lossy(&ls.stderr).contains(&rec.display().to_string()));
    // The name stays taken until it is removed; `rm -f` ends its processes and frees it.
    let err = String::from_utf8_lossy(
        &run(tug(r).args([
            "container",
            "run",
            "-d",
            "--name",
            "broken",
            "busybox",
            "true",
        ]))
        .stderr,
    )
    .into_owned();
    assert!(err.contains("already in use"), "{err}");
    ok(tug(r).args(["container", "rm", "-f", "broken"]));
    assert!(!r.join("containers").join(&id).exists());
    assert!(!r.join("netns").join(&id).exists());
    eventually("its processes are gone", Duration::from_secs(10), || {
        processes_of(r).iter().all(|l| !l.contains(&id))
    });
    ok(tug(r).args([
        "container",
        "run",
        "--rm",
        "--name",
        "broken",
        "busybox",
        "true",
    ]));
}

#[test]
fn state_damage_a_failed_create_cleans_up_in_the_failing_command() {
    if !require_root() || !crate::common::require_tools(&["ip"]) {
        return;
    }
    // 10.255.255.254 is no address of this host: binding the published port fails after the
    // container's namespace and veth were made.
    let p = Project::new(
        r#"
services:
  web:
    image: busybox:latest
    command: ["sleep", "1000"]
    deploy: {replicas: 2}
    ports:
      - target: 80
        host_ip: 10.255.255.254
"#,
    );
    let out = p.output(&["up", "-d"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("10.255.255.254"), "{err}");
    // Right after the failing command, before any other: nothing of the two creates.
    let r = p.root();
    for sub in ["netns", "ports"] {
        let left: Vec<_> = std::fs::read_dir(r.join(sub))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
    let info: serde_json::Value = serde_json::from_str(&ok(tug(r).args([
        "network",
        "inspect",
        &format!("{}_default", p.name),
    ])))
    .unwrap();
    assert_eq!(info[0]["endpoints"], serde_json::json!([]), "{info}");
    let bridge = info[0]["bridge"].as_str().unwrap();
    let ports = ok(Command::new("ip").args(["-br", "link", "show", "master", bridge]));
    assert!(ports.trim().is_empty(), "veths left on {bridge}: {ports}");
    let cs: Vec<_> = std::fs::read_dir(r.join("containers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(cs.is_empty(), "{cs:?}");
}
