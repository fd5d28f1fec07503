//! Parallel use of one state root (issue 14): QA runs replicas of a stack side by side. Five
//! projects with named volumes come up at once, round after round, and volumes are created
//! while others list them; no command may delete what another live command is making.

use std::process::Output;
use std::time::Duration;

use crate::common::project::Project;
use crate::common::{busybox_image, eventually, ok, require_root, run, tug};

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn parallel_volume_creates_while_lists_run_all_succeed() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_path_buf();
    let mut handles = Vec::new();
    for i in 0..40 {
        let r1 = r.clone();
        handles.push(std::thread::spawn(move || {
            let out = run(tug(&r1).args(["volume", "create", &format!("race{i}")]));
            (format!("volume create race{i}"), out)
        }));
        let r2 = r.clone();
        handles.push(std::thread::spawn(move || {
            (
                "volume ls".to_string(),
                run(tug(&r2).args(["volume", "ls", "-q"])),
            )
        }));
    }
    for h in handles {
        let (what, out) = h.join().unwrap();
        check(&out, &what);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("damaged"), "{what}: {err}");
    }
    let ls = ok(tug(&r).args(["volume", "ls", "-q"]));
    let mut names: Vec<&str> = ls.lines().collect();
    names.sort_unstable();
    let mut want: Vec<String> = (0..40).map(|i| format!("race{i}")).collect();
    want.sort();
    assert_eq!(names, want);
    // Every one is whole: a record and its data directory, no staging leftovers.
    for n in &want {
        assert!(r.join("volumes").join(n).join("_data").is_dir(), "{n}");
    }
    let stray: Vec<String> = std::fs::read_dir(r.join("volumes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".creating-") || n.starts_with(".removing-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn parallel_volume_creates_of_one_name_make_one_volume() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_path_buf();
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let r = r.clone();
            std::thread::spawn(move || run(tug(&r).args(["volume", "create", "same"])))
        })
        .collect();
    let outs: Vec<Output> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let created = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(created, 1, "exactly one create wins");
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("already exists"), "{err}");
    }
}

const REPLICA: &str = r#"
services:
  db:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "echo up > /data/mark; exec sleep 1000"]
    volumes: [data:/data]
  app:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    volumes: [cache:/cache]
    depends_on: [db]
volumes:
  data:
  cache:
"#;

#[test]
fn parallel_five_projects_up_on_one_root_twenty_rounds() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    busybox_image(root.path());
    let projects: Vec<Project> = (0..5)
        .map(|_| Project::in_root(root.path(), REPLICA))
        .collect();
    for round in 0..20 {
        let outs: Vec<(String, Output)> = std::thread::scope(|s| {
            let hs: Vec<_> = projects
                .iter()
                .map(|p| {
                    s.spawn(move || {
                        let mut c = p.cmd();
                        c.args(["up", "-d", "--wait"]);
                        (p.name.clone(), run(&mut c))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (name, out) in &outs {
            check(out, &format!("round {round}: up of {name}"));
        }
        for p in &projects {
            let ps = p.ps();
            assert_eq!(ps.len(), 2, "round {round}: {ps:?}");
            assert!(ps.iter().all(|c| c["State"] == "running"), "{ps:?}");
        }
        // Down in parallel too (with the volumes), so the next round creates them again.
        let outs: Vec<(String, Output)> = std::thread::scope(|s| {
            let hs: Vec<_> = projects
                .iter()
                .map(|p| {
                    s.spawn(move || {
                        let mut c = p.cmd();
                        c.args(["down", "-v", "-t", "1"]);
                        (p.name.clone(), run(&mut c))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (name, out) in &outs {
            check(out, &format!("round {round}: down of {name}"));
        }
    }
    eventually("no volume is left", Duration::from_secs(5), || {
        ok(tug(root.path()).args(["volume", "ls", "-q"]))
            .trim()
            .is_empty()
    });
}

#[test]
fn parallel_one_offs_survive_ups_of_their_project() {
    if !require_root() {
        return;
    }
    // `up` repairs namespaces named like the project's containers that have no record; a
    // one-off being wired at that moment is not one of them.
    let p = Project::new(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
  job:
    image: busybox:latest
    command: ["true"]
"#,
    );
    p.tug(&["up", "-d"]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let ups = s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = run(p.cmd().args(["up", "-d"]));
                check(&out, "up");
            }
        });
        for i in 0..15 {
            let out = run(p.cmd().args(["run", "--rm", "job"]));
            check(&out, &format!("run {i}"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        ups.join().unwrap();
    });
}
