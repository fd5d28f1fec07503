//! Shutdown order (issue 14): `down`, `stop` and Ctrl-C of an attached `up` stop dependents
//! before their dependencies, even when a service in between has exited (a one-shot job) or
//! was stopped by hand. Each service appends to one shared file when SIGTERM arrives and
//! when its shutdown has finished, so the file's order is the order things happened in.

use std::time::Duration;

use crate::common::project::Project;
use crate::common::{eventually, require_root};

/// `db` ← `migrate` (one-shot) ← `api`; `db` and `api` log their shutdown, which takes a
/// second each.
const STACK: &str = r#"
services:
  db:
    image: busybox:latest
    command: ["sh", "-c", "trap 'echo db-term >> /log/events; sleep 1; echo db-done >> /log/events; exit 0' TERM; echo db-up >> /log/events; while :; do sleep 0.1; done"]
    volumes: ["./log:/log"]
  migrate:
    image: busybox:latest
    command: ["sh", "-c", "echo migrated >> /log/events"]
    volumes: ["./log:/log"]
    depends_on: [db]
  api:
    image: busybox:latest
    command: ["sh", "-c", "trap 'echo api-term >> /log/events; sleep 1; echo api-done >> /log/events; exit 0' TERM; echo api-up >> /log/events; while :; do sleep 0.1; done"]
    volumes: ["./log:/log"]
    depends_on:
      migrate: {condition: service_completed_successfully}
"#;

fn project() -> Project {
    let p = Project::new(STACK);
    std::fs::create_dir(p.dir.path().join("log")).unwrap();
    p
}

fn events(p: &Project) -> Vec<String> {
    std::fs::read_to_string(p.dir.path().join("log/events"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `api` runs (so `migrate` has completed).
fn wait_up(p: &Project) {
    eventually("api runs", Duration::from_secs(30), || {
        events(p).iter().any(|e| e == "api-up")
    });
    assert_eq!(
        p.state_of(&p.container("migrate")).as_deref(),
        Some("exited")
    );
}

/// `api` finished its shutdown before `db` was asked to stop.
#[track_caller]
fn assert_dependent_stopped_first(p: &Project) {
    let ev = events(p);
    let pos = |what: &str| {
        ev.iter()
            .position(|e| e == what)
            .unwrap_or_else(|| panic!("no {what} in {ev:?}"))
    };
    assert!(
        pos("api-done") < pos("db-term"),
        "db was stopped before api had finished stopping: {ev:?}"
    );
    assert!(pos("db-done") > pos("db-term"), "{ev:?}");
}

#[test]
fn shutdown_down_stops_the_dependent_before_the_dependency_past_an_exited_job() {
    if !require_root() {
        return;
    }
    let p = project();
    p.tug(&["up", "-d"]);
    wait_up(&p);
    p.tug(&["down"]);
    assert_dependent_stopped_first(&p);
}

#[test]
fn shutdown_stop_stops_the_dependent_before_the_dependency_past_an_exited_job() {
    if !require_root() {
        return;
    }
    let p = project();
    p.tug(&["up", "-d"]);
    wait_up(&p);
    p.tug(&["stop"]);
    assert_dependent_stopped_first(&p);
    for s in ["db", "api"] {
        assert_eq!(p.state_of(&p.container(s)).as_deref(), Some("exited"));
    }
}

#[test]
fn shutdown_stop_keeps_the_order_when_the_middle_was_stopped_by_hand() {
    if !require_root() {
        return;
    }
    // `mid` is a long-running service here, stopped by hand before the whole stack stops.
    let yaml = STACK
        .replace(
            r#"command: ["sh", "-c", "echo migrated >> /log/events"]"#,
            r#"command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]"#,
        )
        .replace(
            "condition: service_completed_successfully",
            "condition: service_started",
        );
    let p = Project::new(&yaml);
    std::fs::create_dir(p.dir.path().join("log")).unwrap();
    p.tug(&["up", "-d"]);
    eventually("api runs", Duration::from_secs(30), || {
        events(&p).iter().any(|e| e == "api-up")
    });
    p.tug(&["stop", "migrate"]);
    assert_eq!(p.state_of(&p.container("api")).as_deref(), Some("running"));
    p.tug(&["down"]);
    assert_dependent_stopped_first(&p);
}

#[test]
fn shutdown_ctrl_c_of_attached_up_stops_the_dependent_before_the_dependency() {
    if !require_root() {
        return;
    }
    let p = project();
    let child = p
        .cmd()
        .arg("up")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_up(&p);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    // Interrupted: 130, as docker compose exits.
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_dependent_stopped_first(&p);
}
