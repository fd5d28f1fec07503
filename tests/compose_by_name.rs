//! Project verbs by project name alone (issue 14): teardown scripts run `tug -p NAME down -v`
//! from anywhere, without the compose file and without the variables it requires, as docker
//! compose does from its labels.

use std::time::Duration;

use crate::common::project::Project;
use crate::common::{eventually, ok, require_root, run, tug};

const STACK: &str = r#"
services:
  db:
    image: busybox:latest
    command: ["sh", "-c", "trap 'echo db-term >> /log/events; sleep 1; echo db-done >> /log/events; exit 0' TERM; echo db-up >> /log/events; echo db-started; while :; do sleep 0.1; done"]
    volumes: ["./log:/log", "data:/data"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 200ms
  api:
    image: busybox:latest
    command: ["sh", "-c", "trap 'echo api-term >> /log/events; sleep 1; echo api-done >> /log/events; exit 0' TERM; echo api-up >> /log/events; while :; do sleep 0.1; done"]
    volumes: ["./log:/log"]
    ports: ["127.0.0.1:${WEB_PORT:?set WEB_PORT}:80"]
    depends_on:
      db: {condition: service_healthy}
volumes:
  data:
"#;

fn events(p: &Project) -> Vec<String> {
    std::fs::read_to_string(p.dir.path().join("log/events"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn by_name_every_project_verb_works_without_the_compose_file_or_its_variables() {
    if !require_root() {
        return;
    }
    let p = Project::new(STACK);
    std::fs::create_dir(p.dir.path().join("log")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    ok(p.cmd().env("WEB_PORT", &port).args(["up", "-d", "--wait"]));
    // From a directory without a compose file, with no WEB_PORT.
    let elsewhere = tempfile::tempdir().unwrap();
    let by_name = |args: &[&str]| {
        let mut c = tug(p.root());
        c.current_dir(elsewhere.path())
            .env_remove("WEB_PORT")
            .args(["-p", &p.name, "--progress", "plain"])
            .args(args);
        c
    };
    let api = p.container("api");
    let db = p.container("db");

    let ps = ok(&mut by_name(&["ps", "--format", "json"]));
    assert!(ps.contains(&api) && ps.contains(&db), "{ps}");
    let logs = ok(&mut by_name(&["logs", "db"]));
    assert!(logs.contains("db-started"), "{logs}");
    let top = ok(&mut by_name(&["top", "api"]));
    assert!(top.contains("sleep") || top.contains("sh"), "{top}");
    let port_out = ok(&mut by_name(&["port", "api", "80"]));
    assert_eq!(port_out.trim(), format!("127.0.0.1:{port}"));
    let exec = ok(&mut by_name(&["exec", "-T", "db", "echo", "inside"]));
    assert_eq!(exec.trim(), "inside");

    // stop keeps the dependency order the labels record.
    ok(&mut by_name(&["stop", "-t", "5"]));
    let ev = events(&p);
    let pos = |w: &str| ev.iter().position(|e| e == w).unwrap_or(usize::MAX);
    assert!(pos("api-done") < pos("db-term"), "{ev:?}");
    // start waits for db to be healthy again (the healthcheck is known from the record).
    ok(&mut by_name(&["start"]));
    eventually("both run again", Duration::from_secs(20), || {
        p.ps().iter().all(|c| c["State"] == "running")
    });
    ok(&mut by_name(&["restart", "-t", "5", "api"]));
    ok(&mut by_name(&["kill", "api"]));
    eventually("api is killed", Duration::from_secs(10), || {
        p.state_of(&api).as_deref() == Some("exited")
    });
    ok(&mut by_name(&["rm", "-f", "api"]));
    assert!(p.state_of(&api).is_none());

    // In the project's directory without the variable: a warning names the problem, and the
    // verb still acts on the project.
    let out = run(p
        .cmd()
        .env_remove("WEB_PORT")
        .args(["ps", "--format", "json"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WEB_PORT"), "{err}");

    // down -v takes everything: containers, network, volume.
    ok(&mut by_name(&["down", "-v", "-t", "5"]));
    assert!(ok(&mut by_name(&["ps", "-aq"])).trim().is_empty());
    let nets = ok(tug(p.root()).args(["network", "ls", "-q"]));
    assert!(!nets.contains(&p.name), "{nets}");
    let vols = ok(tug(p.root()).args(["volume", "ls", "-q"]));
    assert!(!vols.contains(&p.name), "{vols}");
}

#[test]
fn by_name_a_project_the_root_does_not_know_is_empty() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    for verb in [&["down"][..], &["ps", "-q"]] {
        let out = run(tug(root.path())
            .current_dir(elsewhere.path())
            .args(["-p", "nothing-here"])
            .args(verb));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{verb:?}: {err}");
        assert!(out.stdout.is_empty());
        assert!(err.contains("no resource of project nothing-here"), "{err}");
    }
    // Without a name there is nothing to go by: the missing file is the error.
    let out = run(tug(root.path())
        .current_dir(elsewhere.path())
        .args(["down"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no compose file found"), "{err}");
}
