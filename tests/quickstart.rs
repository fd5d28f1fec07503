//! The quickstart as README.md tells a new user to run it: `examples/quickstart/run.sh` brings
//! up web, worker, migrate, PostgreSQL and Redis, built from debian:bookworm (made offline by
//! `tug image bootstrap`, apt-get from the Debian mirror); a job goes web → Redis → worker →
//! PostgreSQL → web; an edit of web's source reaches the page through `tug watch`; the data
//! survives `down` + `up`; `down -v` leaves nothing of the project on the machine.
//!
//! Slow (a bootstrap, three image builds with apt-get): `.config/nextest.toml` gives it room.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{eventually, ok, processes_of, require_root, require_tools, run, tug, tug_bin};

/// The quickstart, copied into a temp dir (the test never edits the repository's files), with
/// its own state root, project name and port.
struct Quickstart {
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
    project: String,
    port: u16,
}

impl Quickstart {
    fn new() -> Quickstart {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart"),
            &dir.path().join("quickstart"),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Quickstart {
            dir,
            root: tempfile::tempdir().unwrap(),
            project: crate::common::unique("qs"),
            port,
        }
    }

    fn example(&self) -> PathBuf {
        self.dir.path().join("quickstart")
    }

    /// The environment run.sh and tug get: this test's root, project and port.
    fn env(&self, cmd: &mut Command) {
        cmd.env("TUG_ROOT", self.root.path())
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("WEB_PORT", self.port.to_string())
            .env("NO_COLOR", "1")
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROFILES")
            .env_remove("COMPOSE_ENV_FILES");
    }

    /// `run.sh` as README shows it, with the tug under test and the base image bootstrapped
    /// (tests reach no registry).
    fn run_sh(&self) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(self.example().join("run.sh"))
            .env("TUG", tug_bin())
            .env("QUICKSTART_BASE", "bootstrap")
            .current_dir(self.example());
        self.env(&mut cmd);
        run(&mut cmd)
    }

    /// `tug -f compose.yaml …` on the project.
    fn tug(&self) -> Command {
        let mut cmd = tug(self.root.path());
        self.env(&mut cmd);
        cmd.current_dir(self.example())
            .arg("-f")
            .arg(self.example().join("compose.yaml"))
            .args(["--progress", "plain"]);
        cmd
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `curl -sS URL`: status code and body.
    fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let out = run(Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .arg(self.url(path)));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Queues a job through web's API; returns its id.
    fn queue(&self, text: &str) -> String {
        let body = serde_json::json!({ "text": text }).to_string();
        let (code, out) = self.curl(
            &["-H", "Content-Type: application/json", "--data", &body],
            "/api/jobs",
        );
        assert_eq!(code, 202, "POST /api/jobs: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// The result of a job, once the worker has stored it.
    fn result(&self, id: &str) -> serde_json::Value {
        let mut found = None;
        eventually(
            &format!("the worker's result of job {id}"),
            Duration::from_secs(60),
            || {
                let (code, body) = self.curl(&[], &format!("/api/jobs/{id}"));
                if code == 200 {
                    found = serde_json::from_str(&body).ok();
                }
                found.is_some()
            },
        );
        found.unwrap()
    }

    /// `ps -a --format json` of the project.
    fn ps(&self) -> Vec<serde_json::Value> {
        ok(self
            .tug()
            .args(["ps", "-a", "--no-trunc", "--format", "json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        // Whatever happened: the project, then what the builds left (the RUN steps' pooled
        // namespaces and the default `bridge` network they join).
        let _ = run(self.tug().args(["down", "-v", "-t", "1"]));
        let _ = run(tug(self.root.path()).args(["builder", "prune", "--force"]));
        let _ = run(tug(self.root.path()).args(["network", "rm", "bridge"]));
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            // std::fs::copy keeps the mode (db/start.sh is executable).
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn quickstart_runs_as_readme_says_watches_keeps_its_data_and_leaves_nothing_behind() {
    if !require_root() || !require_tools(&["mmdebstrap", "curl", "ip", "nft"]) {
        return;
    }
    let qs = Quickstart::new();

    // 1. run.sh: base image bootstrapped, images built, stack up and waited for.
    let out = qs.run_sh();
    let err = stderr(&out);
    assert!(out.status.success(), "run.sh failed:\n{err}");
    assert!(
        err.contains("bootstrap debian:bookworm: running apt-get update"),
        "the bootstrap shows its progress:\n{err}"
    );
    assert!(
        err.contains(&format!("open http://127.0.0.1:{}/", qs.port)),
        "run.sh says where to go:\n{err}"
    );
    assert!(err.contains(" down "), "run.sh says how to stop:\n{err}");
    assert!(err.contains(" watch "), "run.sh says how to watch:\n{err}");
    let ps = qs.ps();
    let state = |service: &str| {
        ps.iter()
            .find(|c| c["Service"] == service)
            .unwrap_or_else(|| panic!("no {service} container: {ps:?}"))
            .clone()
    };
    for s in ["web", "worker", "db", "cache"] {
        assert_eq!(state(s)["State"], "running", "{s}: {ps:?}");
    }
    for s in ["web", "db", "cache"] {
        assert_eq!(state(s)["Health"], "healthy", "{s}: {ps:?}");
    }
    assert_eq!(state("migrate")["State"], "exited", "{ps:?}");
    assert_eq!(state("migrate")["ExitCode"], 0, "{ps:?}");

    // 2. A job: web queues it in Redis, the worker takes it and stores the result in
    // PostgreSQL, web reads it back from there.
    let token = format!("tug quickstart {}", qs.project);
    let id = qs.queue(&token);
    let result = qs.result(&id);
    assert_eq!(result["input"], token.as_str(), "{result}");
    assert_eq!(result["words"], 3, "{result}");
    assert_eq!(result["shout"], token.to_uppercase().as_str(), "{result}");
    assert!(
        result["worker"].as_str().is_some_and(|w| !w.is_empty()),
        "{result}"
    );
    // The page a user opens shows it.
    let (code, page) = qs.curl(&[], "/");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains(&token.to_uppercase()), "{page}");
    assert!(page.contains("Page views (counted in Redis): "), "{page}");
    // It is in PostgreSQL, put there by the worker, which took it from Redis's list.
    let sql = format!("SELECT shout FROM results WHERE id = '{id}'");
    let in_db = ok(qs
        .tug()
        .args(["exec", "-T", "db", "psql", "-U", "quickstart", "-tAc", &sql]));
    assert_eq!(in_db.trim(), token.to_uppercase());
    let worker_log = ok(qs.tug().args(["logs", "--no-log-prefix", "worker"]));
    assert!(worker_log.contains(&format!("job {id}")), "{worker_log}");
    let waiting = ok(qs
        .tug()
        .args(["exec", "-T", "cache", "redis-cli", "llen", "jobs"]));
    assert_eq!(waiting.trim(), "0");

    // 3. Watch: `tug watch` (in the background) syncs an edit of web's source into the
    // container, where web's reloader restarts the server: the page shows the change.
    ok(qs.tug().args(["watch", "--detach", "--no-up"]));
    // `--detach` returns once the session is registered, a moment before its directories
    // are watched: the background watch says "watching …" in its log when they are.
    let watch_log = qs
        .root
        .path()
        .join(format!("projects/{}/watch.log", qs.project));
    eventually(
        "the background watch to watch its directories",
        Duration::from_secs(30),
        || std::fs::read_to_string(&watch_log).is_ok_and(|l| l.contains("watching ")),
    );
    let ls = ok(qs.tug().args(["ls"]));
    assert!(ls.contains("watching"), "tug ls shows the watch:\n{ls}");
    let web = qs.example().join("app/web.py");
    let source = std::fs::read_to_string(&web).unwrap();
    let old_title = "Hello from the tug quickstart";
    assert!(source.contains(old_title));
    let new_title = format!("Edited while watched {}", qs.project);
    std::fs::write(&web, source.replace(old_title, &new_title)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = qs.curl(&[], "/").1;
        if page.contains(&new_title) {
            break page;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(&watch_log).unwrap_or_default();
            let web_log = run(qs.tug().args(["logs", "web"]));
            panic!(
                "the edited web.py did not reach the page through watch\npage:\n{page}\n\
                 watch log:\n{log}\nweb log:\n{}",
                String::from_utf8_lossy(&web_log.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // The job's result is still there: only the server restarted.
    assert!(page.contains(&token.to_uppercase()), "{page}");
    // It went through the watch's sync (the image has the old file, nothing is bind-mounted).
    let log = std::fs::read_to_string(&watch_log).unwrap_or_default();
    assert!(log.contains("web: synced "), "watch log:\n{log}");
    ok(qs.tug().args(["watch", "--stop"]));
    assert!(
        !ok(qs.tug().args(["ls"])).contains("watching"),
        "the watch is still listed after --stop"
    );

    // 4. `down` keeps the database volume; run.sh again brings the same data back.
    ok(qs.tug().args(["down"]));
    assert!(qs.ps().is_empty());
    let out = qs.run_sh();
    assert!(out.status.success(), "second run.sh:\n{}", stderr(&out));
    assert!(
        !stderr(&out).contains("bootstrap debian:bookworm"),
        "the base image is kept: {}",
        stderr(&out)
    );
    let (code, results) = qs.curl(&[], "/api/results");
    assert_eq!(code, 200, "{results}");
    assert!(
        results.contains(&id),
        "the result survived down + up: {results}"
    );
    let (_, page) = qs.curl(&[], "/");
    assert!(page.contains(&token.to_uppercase()), "{page}");

    // 5. `down -v` leaves nothing of the project: no container, volume or network in the
    // state root, and on the host no bridge, firewall table, namespace, mount, cgroup or
    // process of it.
    let ids: Vec<String> = qs
        .ps()
        .iter()
        .map(|c| c["ID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    let net: serde_json::Value = serde_json::from_str(&ok(tug(qs.root.path()).args([
        "network",
        "inspect",
        &format!("{}_default", qs.project),
    ])))
    .unwrap();
    let bridge = net[0]["bridge"].as_str().unwrap().to_string();
    ok(qs.tug().args(["down", "-v"]));
    assert!(qs.ps().is_empty());
    let volumes = ok(tug(qs.root.path()).args(["volume", "ls", "-q"]));
    assert!(!volumes.contains(&qs.project), "{volumes}");
    let networks = ok(tug(qs.root.path()).args(["network", "ls"]));
    assert!(!networks.contains(&qs.project), "{networks}");
    let containers = std::fs::read_dir(qs.root.path().join("containers"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(
        containers.is_empty(),
        "container records left: {containers:?}"
    );
    let link = run(Command::new("ip").args(["link", "show", &bridge]));
    assert!(!link.status.success(), "bridge {bridge} is still there");
    let table = run(Command::new("nft").args(["list", "table", "ip", &bridge]));
    assert!(
        !table.status.success(),
        "nft table ip {bridge} is still there"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for id in &ids {
        assert!(!mounts.contains(id.as_str()), "a mount of {id} is left");
        // Pure v2: /sys/fs/cgroup/tug-<id>; v1 and hybrid: one per hierarchy.
        let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .map(|h| h.unwrap().path())
            .chain([PathBuf::from("/sys/fs/cgroup")]);
        for h in hierarchies {
            let cg = h.join(format!("tug-{id}"));
            assert!(!cg.exists(), "{} is left", cg.display());
        }
    }
    assert!(
        !mounts.contains(&format!("netns/{}-", qs.project)),
        "a namespace of the project is left mounted"
    );
    let left: Vec<String> = processes_of(qs.root.path())
        .into_iter()
        .filter(|p| p.contains(&qs.project) || ids.iter().any(|id| p.contains(id.as_str())))
        .collect();
    assert!(left.is_empty(), "processes of the project left: {left:?}");

    // And once the builder's leftovers are released too, nothing of this state root runs.
    ok(tug(qs.root.path()).args(["builder", "prune", "--force"]));
    ok(tug(qs.root.path()).args(["network", "rm", "bridge"]));
    eventually(
        "the state root's helper processes to end",
        Duration::from_secs(10),
        || processes_of(qs.root.path()).is_empty(),
    );
}
