//! A supervisor killed with SIGKILL (issue 14): the next command sees that nothing supervises
//! the container any more, ends what is left of it, reports it exited, and applies its
//! restart policy.

use std::time::Duration;

use crate::common::project::Project;
use crate::common::{eventually, ok, require_root, tug};

fn inspect(p: &Project, name: &str) -> serde_json::Value {
    let out = ok(tug(p.root()).args(["container", "inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    if v.is_array() { v[0].clone() } else { v }
}

fn pid_alive(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie has exited.
    !stat.is_empty()
        && !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
}

#[test]
fn supervisor_killed_is_detected_and_the_restart_policy_applies() {
    if !require_root() {
        return;
    }
    let p = Project::new(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    restart: always
    command: ["sleep", "1000"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 200ms
  job:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 200ms
"#,
    );
    p.tug(&["up", "-d", "--wait"]);
    let mut before = Vec::new();
    for s in ["web", "job"] {
        let name = p.container(s);
        let i = inspect(&p, &name);
        let sup = i["state_detail"]["supervisor_pid"].as_i64().unwrap();
        let pid = i["state_detail"]["pid"].as_i64().unwrap();
        assert!(pid_alive(sup) && pid_alive(pid), "{i}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(sup).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        before.push((name, sup, pid));
    }
    eventually("the supervisors are gone", Duration::from_secs(10), || {
        before.iter().all(|(_, sup, _)| !pid_alive(*sup))
    });
    // The next command: nothing is shown as up and healthy that nobody supervises.
    let ps = p.ps();
    let state = |n: &str| {
        ps.iter()
            .find(|c| c["Name"] == n)
            .map(|c| {
                (
                    c["State"].as_str().unwrap().to_string(),
                    c["ExitCode"].clone(),
                )
            })
            .unwrap()
    };
    let (job_name, _, job_pid) = &before[1];
    let (st, code) = state(job_name);
    assert_eq!(st, "exited", "restart: no stays down: {ps:?}");
    assert_eq!(code, 137, "{ps:?}");
    assert!(!pid_alive(*job_pid), "the unsupervised process was ended");
    let i = inspect(&p, job_name);
    assert!(
        i["state_detail"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("supervisor died"),
        "{i}"
    );
    // restart: always brings it back under a new supervisor, healthy again.
    let (web_name, web_sup, web_pid) = &before[0];
    assert!(!pid_alive(*web_pid), "the unsupervised process was ended");
    eventually("web is back and healthy", Duration::from_secs(20), || {
        let i = inspect(&p, web_name);
        i["state"] == "running"
            && i["health"] == "healthy"
            && i["state_detail"]["supervisor_pid"]
                .as_i64()
                .is_some_and(|s| s != *web_sup && pid_alive(s))
    });
    let i = inspect(&p, web_name);
    assert!(i["restart_count"].as_u64().unwrap_or(0) >= 1, "{i}");
    // And the stack comes down as usual.
    p.tug(&["down", "-t", "1"]);
    assert!(p.ps().is_empty());
}
