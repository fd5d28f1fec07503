//! The compose lifecycle end to end: real stacks of busybox services on real bridges, volumes
//! and containers. Each test has its own state root and project name, and its guard takes
//! the stack down (`down -v`) and checks that nothing of it is left, even when it fails.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{busybox_image, eventually, fails, ok, require_root, run, tug, unique};

/// A compose project in a temp dir with its own state root.
struct Stack {
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
    name: String,
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
            name: unique("tc"),
        }
    }

    fn write(&self, yaml: &str) {
        std::fs::write(self.dir.path().join("compose.yaml"), yaml).unwrap();
    }

    fn cmd(&self) -> Command {
        let mut c = tug(self.root.path());
        c.current_dir(self.dir.path())
            .args(["-p", &self.name, "--progress", "plain"]);
        c
    }

    fn tug(&self, args: &[&str]) -> String {
        ok(self.cmd().args(args))
    }

    fn output(&self, args: &[&str]) -> Output {
        run(self.cmd().args(args))
    }

    /// `ps -a --format json`, one object per container.
    fn ps(&self) -> Vec<serde_json::Value> {
        // Full ids (`--no-trunc`): tests find containers' directories by them.
        self.tug(&["ps", "-a", "--no-trunc", "--format", "json"])
            .lines()
            .map(|l| serde_json::from_str(l).expect("ps --format json prints one object a line"))
            .collect()
    }

    fn state_of(&self, name: &str) -> Option<String> {
        self.ps()
            .into_iter()
            .find(|c| c["Name"] == name)
            .map(|c| c["State"].as_str().unwrap().to_string())
    }

    fn id_of(&self, name: &str) -> String {
        self.ps()
            .into_iter()
            .find(|c| c["Name"] == name)
            .map(|c| c["ID"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    /// Names of what the state root still holds of the project.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let root = self.root().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for l in mounts.lines().filter(|l| l.contains(&root)) {
            left.push(format!("mount {l}"));
        }
        for sub in ["containers", "netns", "networks"] {
            if let Ok(rd) = std::fs::read_dir(self.root().join(sub)) {
                // Dot files are the stores' own bookkeeping (locks, name index).
                for e in rd
                    .flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                {
                    left.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        left
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = run(self
            .cmd()
            .args(["down", "-v", "--remove-orphans", "-t", "1"]));
        // Containers of other projects made by a test (none here) would be removed by
        // `container rm`; the state root itself goes with the temp dir.
        let left = self.leftovers();
        if !std::thread::panicking() {
            assert!(left.is_empty(), "left behind after down: {left:?}");
        }
    }
}

const CHAIN: &str = r#"
services:
  migrate:
    image: busybox:latest
    command: ["sh", "-c", "sleep 1; echo migrated > /data/done"]
    volumes: [data:/data]
  db:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "sleep 1; touch /tmp/ready; exec httpd -f -p 5432 -h /data"]
    volumes: [data:/data]
    depends_on:
      migrate: {condition: service_completed_successfully}
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 200ms
      retries: 50
  app:
    image: busybox:latest
    init: true
    environment:
      GREETING: hello
    command: ["sh", "-c", "timeout 5 wget -q -O - http://db:5432/done; exec sleep 1000"]
    depends_on:
      db: {condition: service_healthy, restart: true}
volumes:
  data:
"#;

#[test]
fn compose_start_order_follows_dependencies_and_health() {
    if !require_root() {
        return;
    }
    let s = Stack::new(CHAIN);
    s.tug(&["up", "-d"]);
    let ps = s.ps();
    let names: Vec<&str> = ps.iter().map(|c| c["Name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let migrate = format!("{}-migrate-1", s.name);
    let db = format!("{}-db-1", s.name);
    let app = format!("{}-app-1", s.name);
    assert_eq!(s.state_of(&migrate).as_deref(), Some("exited"));
    assert_eq!(s.state_of(&db).as_deref(), Some("running"));
    let db_row = ps.iter().find(|c| c["Name"] == db.as_str()).unwrap();
    assert_eq!(db_row["Health"], "healthy", "{db_row}");
    // app ran only after db was healthy, and db after migrate wrote its file: app's first
    // output is the file migrate wrote, fetched from db by service name.
    eventually("app's log", Duration::from_secs(10), || {
        s.tug(&["logs", "--no-log-prefix", "app"])
            .contains("migrated")
    });
    // Labels docker compose tools read are there.
    let app_row = ps.iter().find(|c| c["Name"] == app.as_str()).unwrap();
    let labels = app_row["Labels"].as_str().unwrap();
    for l in [
        "com.docker.compose.project=",
        "com.docker.compose.service=app",
        "com.docker.compose.container-number=1",
        "com.docker.compose.oneoff=False",
        "com.docker.compose.config-hash=",
        "com.docker.compose.depends_on=db:service_healthy:true",
    ] {
        assert!(labels.contains(l), "missing label {l} in {labels}");
    }
}

#[test]
fn compose_up_twice_is_a_noop_and_a_changed_env_recreates_only_that_service() {
    if !require_root() {
        return;
    }
    let s = Stack::new(CHAIN);
    s.tug(&["up", "-d"]);
    let db = format!("{}-db-1", s.name);
    let app = format!("{}-app-1", s.name);
    let (db_id, app_id) = (s.id_of(&db), s.id_of(&app));
    // The one-shot migrate job exited and would run again; everything else is unchanged.
    let plan = s.tug(&["up", "-d", "--dry-run", "db", "app", "--no-deps"]);
    assert_eq!(plan.trim(), "nothing to do", "{plan}");
    s.tug(&["up", "-d", "--no-deps", "db", "app"]);
    assert_eq!(s.id_of(&db), db_id, "db was recreated by a no-op up");
    assert_eq!(s.id_of(&app), app_id, "app was recreated by a no-op up");

    // A changed environment recreates app only.
    s.write(&CHAIN.replace("GREETING: hello", "GREETING: bonjour"));
    let plan = s.tug(&["up", "-d", "--dry-run"]);
    assert!(plan.contains(&format!("remove container {app}")), "{plan}");
    assert!(!plan.contains(&format!("remove container {db}")), "{plan}");
    s.tug(&["up", "-d"]);
    assert_eq!(s.id_of(&db), db_id, "db must not be recreated");
    assert_ne!(s.id_of(&app), app_id, "app must be recreated");
    let env = s.tug(&["exec", "-T", "app", "sh", "-c", "echo $GREETING"]);
    assert_eq!(env.trim(), "bonjour");

    // A changed db recreates db and restarts app (restart: true) without recreating it.
    let app_id = s.id_of(&app);
    s.write(
        &CHAIN
            .replace("GREETING: hello", "GREETING: bonjour")
            .replace("retries: 50", "retries: 60"),
    );
    let plan = s.tug(&["up", "-d", "--dry-run"]);
    assert!(plan.contains(&format!("remove container {db}")), "{plan}");
    assert!(!plan.contains(&format!("remove container {app}")), "{plan}");
    assert!(
        plan.contains(&format!("stop container {app}"))
            && plan.contains("dependency db recreated (restart: true)"),
        "{plan}"
    );
    s.tug(&["up", "-d"]);
    assert_eq!(s.id_of(&app), app_id, "app is restarted, not recreated");
    assert_eq!(s.state_of(&app).as_deref(), Some("running"));
}

#[test]
fn compose_scale_up_and_down_and_dns_answers_every_replica() {
    if !require_root() {
        return;
    }
    let s = Stack::new(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "echo $$HOSTNAME > /tmp/i; exec httpd -f -p 80 -h /tmp"]
  probe:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
"#,
    );
    s.tug(&["up", "-d"]);
    s.tug(&["up", "-d", "--scale", "web=3"]);
    let webs: Vec<String> = s
        .ps()
        .into_iter()
        .filter(|c| c["Service"] == "web")
        .map(|c| c["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(webs.len(), 3, "{webs:?}");
    // Each replica answers at its own address under the service name.
    let out = s.tug(&["exec", "-T", "probe", "nslookup", "web"]);
    let addrs = out.lines().filter(|l| l.starts_with("Address: ")).count();
    assert_eq!(addrs, 3, "three addresses for web:\n{out}");
    // Replicas have their own hostnames (their container names).
    let mut names = Vec::new();
    for i in 1..=3 {
        let idx = i.to_string();
        names.push(
            s.tug(&["exec", "-T", "--index", &idx, "web", "cat", "/tmp/i"])
                .trim()
                .to_string(),
        );
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "{names:?}");
    s.tug(&["up", "-d", "--scale", "web=1"]);
    let webs: Vec<serde_json::Value> = s
        .ps()
        .into_iter()
        .filter(|c| c["Service"] == "web")
        .collect();
    assert_eq!(webs.len(), 1);
    assert_eq!(webs[0]["Name"], format!("{}-web-1", s.name));
    let out = s.tug(&["exec", "-T", "probe", "nslookup", "web"]);
    let addrs = out.lines().filter(|l| l.starts_with("Address: ")).count();
    assert_eq!(addrs, 1, "one address for web after scaling down:\n{out}");
}

#[test]
fn compose_named_volume_survives_down_and_goes_with_down_v() {
    if !require_root() {
        return;
    }
    let yaml = r#"
services:
  box:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    volumes: [keep:/keep]
volumes:
  keep:
"#;
    let s = Stack::new(yaml);
    s.tug(&["up", "-d"]);
    s.tug(&[
        "exec",
        "-T",
        "box",
        "sh",
        "-c",
        "echo precious > /keep/file",
    ]);
    s.tug(&["down"]);
    assert!(s.ps().is_empty(), "down removes containers");
    let vols = ok(tug(s.root()).args(["volume", "ls", "-q"]));
    assert!(vols.contains(&format!("{}_keep", s.name)), "{vols}");
    s.tug(&["up", "-d"]);
    let got = s.tug(&["exec", "-T", "box", "cat", "/keep/file"]);
    assert_eq!(got.trim(), "precious");
    s.tug(&["down", "-v"]);
    let vols = ok(tug(s.root()).args(["volume", "ls", "-q"]));
    assert!(!vols.contains(&format!("{}_keep", s.name)), "{vols}");
}

#[test]
fn compose_published_port_exec_run_and_logs() {
    if !require_root() {
        return;
    }
    let s = Stack::new(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "echo serving; echo it-works > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
    ports: ["127.0.0.1::8080"]
"#,
    );
    s.tug(&["up", "-d"]);
    let port = s.tug(&["port", "web", "8080"]);
    let port = port.trim();
    assert!(port.starts_with("127.0.0.1:"), "{port}");
    let body = ok(Command::new("timeout")
        .args(["5", "busybox", "wget", "-q", "-O", "-"])
        .arg(format!("http://{port}/")));
    assert_eq!(body.trim(), "it-works");
    // exec: exit code comes back.
    let out = s.output(&["exec", "-T", "web", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    // run: a one-off container on the same network, removed with --rm.
    let out = s.tug(&[
        "run",
        "--rm",
        "-T",
        "web",
        "sh",
        "-c",
        "timeout 5 wget -q -O - http://web:8080/",
    ]);
    assert!(out.contains("it-works"), "{out}");
    assert_eq!(s.ps().len(), 1, "run --rm leaves no container");
    let logs = s.tug(&["logs", "web"]);
    assert!(logs.contains("serving"), "{logs}");
    assert!(logs.contains("web-1  | "), "prefix: {logs}");
}

#[test]
fn compose_failed_dependency_fails_up_with_its_logs() {
    if !require_root() {
        return;
    }
    let s = Stack::new(
        r#"
services:
  job:
    image: busybox:latest
    command: ["sh", "-c", "echo boom-reason; exit 3"]
  app:
    image: busybox:latest
    command: ["sleep", "1000"]
    depends_on:
      job: {condition: service_completed_successfully}
"#,
    );
    let err = fails(s.cmd().args(["up", "-d"]));
    assert!(
        err.contains("didn't complete successfully: exited with code 3"),
        "{err}"
    );
    assert!(err.contains("boom-reason"), "the job's log is shown: {err}");
    let app = format!("{}-app-1", s.name);
    assert_ne!(s.state_of(&app).as_deref(), Some("running"));
}

#[test]
fn compose_concurrent_ups_are_serialized_and_converge() {
    if !require_root() {
        return;
    }
    let s = Stack::new(
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
    deploy: {replicas: 2}
"#,
    );
    let mut c1 = s.cmd();
    c1.args(["up", "-d"]);
    let mut c2 = s.cmd();
    c2.args(["up", "-d"]);
    let h1 = std::thread::spawn(move || run(&mut c1));
    let h2 = std::thread::spawn(move || run(&mut c2));
    let (o1, o2) = (h1.join().unwrap(), h2.join().unwrap());
    assert!(
        o1.status.success(),
        "{}",
        String::from_utf8_lossy(&o1.stderr)
    );
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    let ps = s.ps();
    assert_eq!(ps.len(), 3, "exactly a-1, b-1, b-2: {ps:?}");
    assert!(ps.iter().all(|c| c["State"] == "running"));
}

#[test]
fn compose_killed_up_is_finished_by_the_next_up() {
    if !require_root() {
        return;
    }
    let mut yaml = String::from("services:\n");
    for i in 0..6 {
        yaml.push_str(&format!(
            "  s{i}:\n    image: busybox:latest\n    init: true\n    command: [\"sleep\", \"1000\"]\n"
        ));
    }
    let s = Stack::new(&yaml);
    let mut child = s.cmd().args(["up", "-d"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let _ = child.kill();
    let _ = child.wait();
    s.tug(&["up", "-d"]);
    let ps = s.ps();
    assert_eq!(ps.len(), 6, "{ps:?}");
    assert!(ps.iter().all(|c| c["State"] == "running"), "{ps:?}");
    // And a following up has nothing left to do.
    let plan = s.tug(&["up", "-d", "--dry-run"]);
    assert_eq!(plan.trim(), "nothing to do");
}

#[test]
fn compose_service_with_build_only_is_built_by_up() {
    if !require_root() {
        return;
    }
    let s = Stack::new(
        r#"
services:
  app:
    build: .
"#,
    );
    std::fs::write(
        s.dir.path().join("Dockerfile"),
        "FROM busybox\nRUN echo built > /built\nCMD [\"sleep\", \"1000\"]\n",
    )
    .unwrap();
    ok(s.cmd().args(["up", "-d"]));
    assert_eq!(
        ok(s.cmd().args(["exec", "app", "cat", "/built"])),
        "built\n"
    );
    // An unsupported build key is refused by name.
    std::fs::write(
        s.dir.path().join("compose.yaml"),
        "services:\n  app:\n    build:\n      context: .\n      ssh: [default]\n",
    )
    .unwrap();
    let err = fails(s.cmd().args(["up", "-d", "--build"]));
    assert!(err.contains("build.ssh") && err.contains("app"), "{err}");
    // The RUN step joined the default `bridge` network, which stays like docker's.
    ok(s.cmd().args(["down"]));
    ok(s.cmd().args(["builder", "prune", "--force"]));
    ok(s.cmd().args(["network", "rm", "bridge"]));
}

#[test]
fn compose_post_start_hook_runs_and_attached_up_returns_the_exit_code() {
    if !require_root() {
        return;
    }
    let s = Stack::new(
        r#"
services:
  box:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    post_start:
      - command: ["sh", "-c", "echo hooked > /tmp/hook"]
  job:
    image: busybox:latest
    command: ["sh", "-c", "echo job-output; exit 5"]
"#,
    );
    s.tug(&["up", "-d", "box"]);
    let got = s.tug(&["exec", "-T", "box", "cat", "/tmp/hook"]);
    assert_eq!(got.trim(), "hooked");
    // Attached: streams the job's output with its prefix and returns its exit code.
    let out = s.output(&["up", "--exit-code-from", "job", "job"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // docker compose's prefix: the container's name without the project.
    assert!(stdout.contains("job-1  | job-output"), "{stdout}");
}

#[test]
fn compose_logs_follow_across_restarts_and_ends_when_the_service_stops_for_good() {
    if !require_root() {
        return;
    }
    let s = Stack::new(
        r#"
services:
  flaky:
    image: busybox:latest
    restart: on-failure:2
    command: ["sh", "-c", "echo attempt; sleep 0.5; exit 1"]
"#,
    );
    s.tug(&["up", "-d"]);
    // Follows from now on across the restarts, and returns by itself once the policy gives
    // up (3 runs: the first and two restarts).
    let started = Instant::now();
    let out = s.output(&["logs", "-f", "--no-log-prefix", "flaky"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("attempt").count(), 3, "{text}");
    let flaky = format!("{}-flaky-1", s.name);
    assert_eq!(s.state_of(&flaky).as_deref(), Some("exited"));
}

#[test]
fn compose_attached_up_stops_on_ctrl_c_and_a_second_ctrl_c_kills() {
    if !require_root() {
        return;
    }
    // `sleep` as PID 1 of its namespace ignores SIGTERM, so a graceful stop would wait out
    // the whole grace period: only the second Ctrl-C can end it early.
    let s = Stack::new(
        r#"
services:
  stubborn:
    image: busybox:latest
    command: ["sleep", "1000"]
    stop_grace_period: 120s
"#,
    );
    let mut child = s
        .cmd()
        .arg("up")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let name = format!("{}-stubborn-1", s.name);
    eventually("the service runs", Duration::from_secs(30), || {
        s.state_of(&name).as_deref() == Some("running")
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    // The first Ctrl-C starts a graceful stop that is still waiting a while later.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "one Ctrl-C must wait for the grace period"
    );
    assert_eq!(s.state_of(&name).as_deref(), Some("running"));
    let second = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        second.elapsed() < Duration::from_secs(20),
        "the second Ctrl-C kills at once, took {:?}",
        second.elapsed()
    );
    // docker compose's words, on stdout as it prints them.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Gracefully Stopping"), "{stdout}");
    let ps = s.ps();
    let c = ps.iter().find(|c| c["Name"] == name.as_str()).unwrap();
    assert_eq!(c["State"], "exited", "{c}");
    assert_eq!(c["ExitCode"], 137, "killed by SIGKILL: {c}");
}

#[test]
fn compose_progress_tty_draws_a_live_board_on_a_terminal() {
    if !require_root() || !crate::common::require_tools(&["script"]) {
        return;
    }
    let s = Stack::new(
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
    depends_on: [a]
"#,
    );
    // `script` gives tug a terminal, which the board needs; its output is what a user sees.
    let bin = crate::common::tug_bin();
    let line = format!("{} -p {} --progress tty up -d", bin.display(), s.name);
    let out = ok(Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .current_dir(s.dir.path())
        .env("TUG_ROOT", s.root())
        .env_remove("NO_COLOR"));
    // The header counts objects: the network, two containers and b's wait for a.
    assert!(out.contains("[+]"), "{out:?}");
    assert!(out.contains("Running 0/4"), "{out:?}");
    assert!(out.contains("Running 4/4"), "{out:?}");
    for name in [format!("{}-a-1", s.name), format!("{}-b-1", s.name)] {
        let done = format!("Container {name}");
        let at = out
            .rfind(&done)
            .unwrap_or_else(|| panic!("{done} in {out:?}"));
        // The object's line ends with a tick and its last step.
        assert!(out[..at].ends_with("\x1b[32m✔\x1b[0m "), "{out:?}");
        assert!(out[at..].contains("Started"), "{out:?}");
    }
    // A redraw moves the cursor up over the board: it is live, not a log of lines.
    assert!(
        out.contains("\x1b[1A") || out.contains("\x1b[2A"),
        "{out:?}"
    );
    assert_eq!(s.ps().len(), 2);
}

#[test]
fn compose_down_removes_a_netns_left_by_a_create_killed_before_its_record() {
    if !require_root() || !crate::common::require_tools(&["ip"]) {
        return;
    }
    let s = Stack::new(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
"#,
    );
    s.tug(&["up", "-d"]);
    // What a `create` killed between wiring and recording leaves: a namespace wired into
    // the project's network under the name of a container that was never recorded.
    let stray = format!("{}-web-2", s.name);
    let nets = tug::engine::network::Networks::open(s.root()).unwrap();
    let ns = nets.create_netns(&stray).unwrap();
    let ep = nets
        .connect(
            &ns,
            &format!("{}_default", s.name),
            &tug::engine::network::EndpointSpec {
                container_id: stray.clone(),
                container_name: stray.clone(),
                service: Some("web".into()),
                project: Some(s.name.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    let host_veth = ep.host_veth.clone();
    assert!(s.root().join("netns").join(&stray).exists());
    // A namespace of another project's container must survive this project's down.
    let other = format!("other{}-web-1", s.name);
    nets.create_netns(&other).unwrap();
    s.tug(&["down"]);
    assert!(!s.root().join("netns").join(&stray).exists());
    let links = ok(Command::new("ip").args(["-br", "link"]));
    assert!(
        !links.contains(&host_veth),
        "{host_veth} left behind: {links}"
    );
    assert!(s.root().join("netns").join(&other).exists());
    nets.disconnect_all(&other).unwrap();
    assert!(!s.root().join("netns").join(&other).exists());
}

#[test]
fn compose_restart_and_quick_stop_start_keep_the_container_filesystem() {
    if !require_root() {
        return;
    }
    let s = Stack::new(
        r#"
services:
  box:
    image: busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
"#,
    );
    s.tug(&["up", "-d"]);
    let name = format!("{}-box-1", s.name);
    s.tug(&["exec", "-T", "box", "sh", "-c", "echo kept > /marker"]);
    // `stop` returns once the exit is recorded, while the supervisor may still be
    // unmounting the root filesystem: the next start must not race that unmount.
    for _ in 0..4 {
        s.tug(&["stop", "box"]);
        assert_eq!(s.state_of(&name).as_deref(), Some("exited"));
        s.tug(&["start", "box"]);
        assert_eq!(s.state_of(&name).as_deref(), Some("running"));
        let got = s.tug(&["exec", "-T", "box", "cat", "/marker"]);
        assert_eq!(got.trim(), "kept");
    }
    s.tug(&["restart", "box"]);
    assert_eq!(s.state_of(&name).as_deref(), Some("running"));
    let got = s.tug(&["exec", "-T", "box", "cat", "/marker"]);
    assert_eq!(got.trim(), "kept");
    // The restarted process sees its root: a lost race with the old run's unmount would
    // leave it an empty directory.
    let ls = s.tug(&["exec", "-T", "box", "ls", "/bin/busybox"]);
    assert_eq!(ls.trim(), "/bin/busybox");
}

const IMAGE_VOLUME: &str = r#"
services:
  db:
    image: volimg:1
    init: true
    command: ["sleep", "1000"]
    environment:
      V: "1"
    mem_limit: 64m
    group_add: ["extra", "4321"]
    ulimits:
      nofile: {soft: 1000, hard: 2000}
"#;

#[test]
fn compose_image_volume_keeps_its_data_across_recreation_and_goes_with_down_v() {
    if !require_root() {
        return;
    }
    let s = Stack::new(IMAGE_VOLUME);
    crate::common::busybox_image_with(s.root(), "volimg:1", &["VOLUME /data"], |d| {
        std::fs::create_dir(d.join("data")).unwrap();
        std::fs::write(d.join("data/seed"), "seeded\n").unwrap();
        vec!["data".into()]
    });
    let anon_volumes = || -> Vec<String> {
        ok(tug(s.root()).args(["volume", "ls", "-q"]))
            .lines()
            .filter(|v| v.starts_with(&format!("{}_db_anon_", s.name)))
            .map(str::to_string)
            .collect()
    };
    s.tug(&["up", "-d"]);
    let c = format!("{}-db-1", s.name);
    // The image's VOLUME is a volume of the service, filled from the image.
    assert_eq!(
        s.tug(&["exec", "-T", "db", "cat", "/data/seed"]),
        "seeded\n"
    );
    s.tug(&["exec", "-T", "db", "sh", "-c", "echo precious > /data/file"]);
    assert_eq!(anon_volumes().len(), 1, "{:?}", anon_volumes());
    // The rest of Docker's defaults, from compose keys: the memory limit readable in the
    // container's own cgroup, group_add on top of the primary group, ulimits as written.
    let limit = s.tug(&[
        "exec", "-T", "db", "sh", "-c",
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(limit.trim(), "67108864");
    assert_eq!(
        s.tug(&["exec", "-T", "db", "grep", "Groups", "/proc/self/status"]),
        "Groups:\t0 2000 4321 \n"
    );
    let limits = s.tug(&[
        "exec",
        "-T",
        "db",
        "grep",
        "open files",
        "/proc/self/limits",
    ]);
    let f: Vec<&str> = limits.split_whitespace().collect();
    assert_eq!((f[3], f[4]), ("1000", "2000"), "{limits}");
    // Recreated by force, and by a change of its config: same data.
    let first = s.id_of(&c);
    s.tug(&["up", "-d", "--force-recreate"]);
    let second = s.id_of(&c);
    assert_ne!(first, second, "not recreated");
    assert_eq!(
        s.tug(&["exec", "-T", "db", "cat", "/data/file"]),
        "precious\n"
    );
    s.write(&IMAGE_VOLUME.replace(r#"V: "1""#, r#"V: "2""#));
    s.tug(&["up", "-d"]);
    assert_ne!(s.id_of(&c), second, "a config change did not recreate");
    assert_eq!(
        s.tug(&["exec", "-T", "db", "cat", "/data/file"]),
        "precious\n"
    );
    assert_eq!(anon_volumes().len(), 1, "{:?}", anon_volumes());
    // A one-off gets fresh anonymous volumes of its own, gone with `run --rm`.
    let listing = s.tug(&["run", "--rm", "-T", "db", "ls", "/data"]);
    assert_eq!(listing, "seed\n");
    assert_eq!(anon_volumes().len(), 1, "{:?}", anon_volumes());
    // -V renews them: the image's content again.
    s.tug(&["up", "-d", "--force-recreate", "-V"]);
    assert_eq!(s.tug(&["exec", "-T", "db", "ls", "/data"]), "seed\n");
    s.tug(&["exec", "-T", "db", "sh", "-c", "echo again > /data/file"]);
    // `down` keeps them (the replica finds its data at the next `up`); `down -v` removes them.
    s.tug(&["down", "-t", "1"]);
    assert_eq!(anon_volumes().len(), 1);
    s.tug(&["up", "-d"]);
    assert_eq!(s.tug(&["exec", "-T", "db", "cat", "/data/file"]), "again\n");
    s.tug(&["down", "-v", "-t", "1"]);
    assert!(anon_volumes().is_empty(), "{:?}", anon_volumes());
    // `rm -v` removes them with the service's containers too, but not a running replica's.
    s.tug(&["up", "-d", "--scale", "db=2"]);
    assert_eq!(anon_volumes().len(), 2);
    s.tug(&["exec", "-T", "db", "sh", "-c", "echo one > /data/file"]);
    ok(tug(s.root()).args(["container", "stop", "-t", "1", &format!("{}-db-2", s.name)]));
    s.tug(&["rm", "--force", "-v", "db"]);
    assert_eq!(anon_volumes().len(), 1, "{:?}", anon_volumes());
    assert_eq!(s.tug(&["exec", "-T", "db", "cat", "/data/file"]), "one\n");
    s.tug(&["rm", "--stop", "--force", "-v", "db"]);
    assert!(anon_volumes().is_empty(), "{:?}", anon_volumes());
}

#[test]
fn compose_ulimit_above_what_tug_may_grant_fails_naming_it() {
    if !require_root() {
        return;
    }
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let yaml = format!(
        "services:\n  box:\n    image: busybox:latest\n    command: [\"true\"]\n    ulimits:\n      nofile: {}\n",
        nr_open + 1
    );
    let s = Stack::new(&yaml);
    let o = s.output(&["up", "-d"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{o:?}");
    assert!(e.contains("ulimit nofile: the hard limit"), "{e}");
}
