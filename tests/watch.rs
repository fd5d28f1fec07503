//! `tug watch` on real stacks: files edited on the host are read back from inside the
//! containers (polled with a deadline), actions restart, run commands and rebuild, synced
//! files survive restarts and recreation, and containers that turn their targets into links
//! to the host cannot make a sync write outside them.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    busybox_image, ok, processes_of, require_root, require_tools, run, tug, tug_bin, unique,
};
use crate::hostile::Canary;

/// A compose project in a temp dir with its own state root; on drop the watch ends, the
/// stack goes down and nothing of it may be left.
struct Project {
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
    name: String,
}

impl Project {
    fn new(yaml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
        busybox_image(root.path());
        Project {
            dir,
            root,
            name: unique("tw"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a host file (making its directory).
    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
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

    /// `tug watch ARGS` in the foreground, its output collected.
    fn watch(&self, args: &[&str]) -> Watching {
        let mut c = self.cmd();
        c.arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Watching::spawn(c)
    }

    /// A file's content read inside the service's container (`None` when it cannot be
    /// read there).
    fn read_in(&self, service: &str, path: &str) -> Option<String> {
        self.read_with(service, &["cat", path])
    }

    fn read_with(&self, service: &str, argv: &[&str]) -> Option<String> {
        let out = self.output(&[&["exec", "-T", service], argv].concat());
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sh(&self, service: &str, script: &str) -> String {
        self.tug(&["exec", "-T", service, "sh", "-c", script])
    }

    #[track_caller]
    fn until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[track_caller]
    fn until_content(&self, service: &str, path: &str, want: &str) {
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            last = self.read_in(service, path).or(last);
            if last.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{service}:{path} never became {want:?} (last read: {last:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[track_caller]
    fn until_gone(&self, service: &str, path: &str) {
        self.until(&format!("{path} to disappear in {service}"), || {
            self.read_with(service, &["test", "-e", path]).is_none()
        });
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.output(&["watch", "--stop"]);
        let _ = self.output(&["down", "-v", "--remove-orphans", "-t", "1"]);
        if std::thread::panicking() {
            return;
        }
        let root = self.root.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
        assert!(left.is_empty(), "mounts left: {left:?}");
        let procs = processes_of(self.root.path());
        assert!(procs.is_empty(), "processes left: {procs:?}");
    }
}

/// A running `tug watch`; SIGINT (then SIGKILL) on drop.
struct Watching {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watching {
    fn spawn(mut c: Command) -> Watching {
        let mut child = c.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(l);
                }
            });
        }
        let w = Watching { child, lines };
        w.until_line("the watch to start", |l| l.starts_with("watching "));
        w
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    #[track_caller]
    fn until_line(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| f(l)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; output so far: {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the watch with Ctrl-C; returns its exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.interrupt();
        }
    }
}

#[test]
fn watch_mirrors_creates_edits_renames_and_deletes_with_the_users_ownership() {
    if !require_root() {
        return;
    }
    let p = Project::new(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    user: "1000:1000"
    command: ["sleep", "1000"]
    volumes:
      - cache:/app/cache
      - ./data:/data
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
          ignore: ["*.tmp", "build/"]
volumes:
  cache:
"#,
    );
    p.write("src/a.txt", "one");
    p.write("src/cache/.keep", "");
    p.write("data/bound.txt", "bound");
    let w = p.watch(&[]);
    // An edit.
    p.write("src/a.txt", "two");
    p.until_content("web", "/app/a.txt", "two");
    w.until_line("a line per batch", |l| {
        l.starts_with("web: synced ") && l.contains(" ms")
    });
    // Files belong to the service's user; so do directories the sync makes.
    let owner = p.sh("web", "stat -c %u:%g /app/a.txt");
    assert_eq!(owner.trim(), "1000:1000");
    // A directory made and filled at once (before the watcher can watch it).
    let made = Command::new("sh")
        .arg("-c")
        .arg("mkdir -p src/new/deep && echo n > src/new/deep/n.txt && echo m > src/new/m.txt")
        .current_dir(p.dir.path())
        .status()
        .unwrap();
    assert!(made.success());
    p.until_content("web", "/app/new/deep/n.txt", "n\n");
    p.until_content("web", "/app/new/m.txt", "m\n");
    let owner = p.sh("web", "stat -c %u:%g /app/new/deep");
    assert_eq!(owner.trim(), "1000:1000");
    // What is made in the new directory afterwards is seen too (it is watched now).
    p.write("src/new/deep/later.txt", "later");
    p.until_content("web", "/app/new/deep/later.txt", "later");
    // Renames of a file and of a directory.
    std::fs::rename(p.path("src/a.txt"), p.path("src/b.txt")).unwrap();
    p.until_content("web", "/app/b.txt", "two");
    p.until_gone("web", "/app/a.txt");
    std::fs::rename(p.path("src/new"), p.path("src/renamed")).unwrap();
    p.until_content("web", "/app/renamed/deep/n.txt", "n\n");
    p.until_gone("web", "/app/new");
    // Deletes.
    std::fs::remove_file(p.path("src/b.txt")).unwrap();
    std::fs::remove_dir_all(p.path("src/renamed")).unwrap();
    p.until_gone("web", "/app/b.txt");
    p.until_gone("web", "/app/renamed");
    // Ignored paths (the rule's patterns, .git, editors' swap files) are not synced: they
    // are written before a file that is, which arrives after (or with) them.
    p.write("src/x.tmp", "ignored");
    p.write("src/build/out.o", "ignored");
    p.write("src/.git/HEAD", "ignored");
    p.write("src/.b.txt.swp", "ignored");
    p.write("src/c.txt~", "ignored");
    p.write("src/sentinel.txt", "s");
    p.until_content("web", "/app/sentinel.txt", "s");
    for gone in [
        "/app/x.tmp",
        "/app/build",
        "/app/.git",
        "/app/.b.txt.swp",
        "/app/c.txt~",
    ] {
        assert!(
            p.read_with("web", &["test", "-e", gone]).is_none(),
            "{gone} was synced"
        );
    }
    // A target under a volume lands in the volume, as the container sees it.
    p.write("src/cache/v.txt", "in the volume");
    p.until_content("web", "/app/cache/v.txt", "in the volume");
    let vol = p
        .root
        .path()
        .join(format!("volumes/{}_cache/_data/v.txt", p.name));
    assert_eq!(std::fs::read_to_string(&vol).unwrap(), "in the volume");
    // The sibling bind mount works beside the watch (docker compose refuses the pair).
    assert_eq!(
        p.read_in("web", "/data/bound.txt").as_deref(),
        Some("bound")
    );
    drop(w);
}

/// An image whose rootfs is one static binary, `/bin/busybox`, without the links that make
/// its applets commands: there is no `sh`, `tar` or `rm` to run in it (docker compose's sync
/// runs both `tar` and `rm` in the container).
fn static_image(root: &Path) -> String {
    let t = tempfile::tempdir().unwrap();
    let rootfs = t.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let tar = t.path().join("static.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("."));
    ok(tug(root)
        .args([
            "image",
            "import",
            "--change",
            r#"CMD ["/bin/busybox", "sleep", "1000"]"#,
        ])
        .arg(&tar)
        .arg("static:latest"));
    "static:latest".into()
}

#[test]
fn watch_syncs_into_an_image_with_only_a_static_binary() {
    if !require_root() {
        return;
    }
    let p = Project::new(
        r#"
services:
  app:
    image: static:latest
    init: true
    develop:
      watch:
        - path: ./src
          target: /srv/app
          action: sync
"#,
    );
    static_image(p.root.path());
    p.write("src/index.html", "v1");
    let w = p.watch(&[]);
    // No shell, tar or rm in the image: read back with the binary itself.
    for tool in ["sh", "tar", "rm"] {
        assert!(
            p.read_with("app", &[tool, "--help"]).is_none(),
            "the image has {tool}"
        );
    }
    p.write("src/index.html", "v2");
    p.write("src/sub/page.html", "page");
    let read = |path: &str| p.read_with("app", &["/bin/busybox", "cat", path]);
    p.until("the edit in the static image", || {
        read("/srv/app/index.html").as_deref() == Some("v2")
    });
    p.until("the new file in the static image", || {
        read("/srv/app/sub/page.html").as_deref() == Some("page")
    });
    std::fs::remove_file(p.path("src/sub/page.html")).unwrap();
    p.until("the delete in the static image", || {
        p.read_with(
            "app",
            &["/bin/busybox", "test", "-e", "/srv/app/sub/page.html"],
        )
        .is_none()
    });
    drop(w);
}

#[test]
fn watch_cannot_be_redirected_out_of_a_container_by_its_symlinks() {
    if !require_root() {
        return;
    }
    let canary = Canary::new(&[]);
    let c = canary.p();
    let climb = format!("../../../../../../../../..{c}");
    // The container replaces its targets with links that, resolved on the host, lead into the
    // canary: an absolute link to it, and a relative one that climbs out first. (Never to
    // the host's real `/`: a regression lands in the canary.)
    let yaml = format!(
        r#"
services:
  evil:
    image: busybox:latest
    init: true
    restart: always
    command: ["sh", "-c", "rm -rf /app /app2; ln -s {c} /app; ln -s {climb} /app2; touch /tmp/linked; exec sleep 1000"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
          initial_sync: true
        - path: ./src
          target: /app2/sub
          action: sync
"#
    );
    let p = Project::new(&yaml);
    p.write("src/f.txt", "one");
    p.write("src/dir/g.txt", "g");
    p.tug(&["up", "-d"]);
    p.until("the links", || {
        p.read_with("evil", &["test", "-e", "/tmp/linked"])
            .is_some()
    });
    let w = p.watch(&["--no-up"]);
    p.write("src/f.txt", "two");
    p.write("src/new.txt", "new");
    std::fs::remove_file(p.path("src/dir/g.txt")).unwrap();
    // Every write landed inside the container, at the canary's path there.
    p.until_content("evil", &format!("{c}/f.txt"), "two");
    p.until_content("evil", &format!("{c}/new.txt"), "new");
    p.until_content("evil", &format!("{c}/sub/f.txt"), "two");
    p.until_gone("evil", &format!("{c}/dir/g.txt"));
    // A restart syncs before the process starts, through the same links.
    p.write("src/restarted.txt", "r");
    drop(w);
    p.tug(&["restart", "evil"]);
    p.until_content("evil", &format!("{c}/restarted.txt"), "r");
    canary.assert_untouched();
}

#[test]
fn watch_synced_files_survive_restarts_recreation_and_crashes() {
    if !require_root() {
        return;
    }
    let yaml = |generation: u32| {
        format!(
            r#"
services:
  app:
    image: busybox:latest
    init: true
    environment:
      GEN: "{generation}"
    command: ["sh", "-c", "echo $$GEN:$$(cat /app/v.txt 2>/dev/null || echo missing) >> /out/seen; exec sleep 1000"]
    volumes: ["./out:/out"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
  viarunc:
    image: busybox:latest
    runtime: runc
    command: ["sh", "-c", "echo $$(cat /app/v.txt) >> /out/runc-seen; trap 'exit 0' TERM; sleep 1000 & wait"]
    volumes: ["./out:/out"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
  crashy:
    image: busybox:latest
    restart: on-failure
    command: ["sh", "-c", "cat /app/v.txt >> /out/crashy 2>/dev/null; while [ ! -e /out/crash ]; do sleep 0.1; done; rm /out/crash; exit 1"]
    volumes: ["./out:/out"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
"#
        )
    };
    let p = Project::new(&yaml(1));
    p.write("src/v.txt", "v1");
    std::fs::create_dir_all(p.path("out")).unwrap();
    let seen = || std::fs::read_to_string(p.path("out/seen")).unwrap_or_default();
    // The first start of a watched service already has the host's files.
    let runc_seen = || std::fs::read_to_string(p.path("out/runc-seen")).unwrap_or_default();
    let w = p.watch(&[]);
    p.until("the first start", || seen().contains("1:"));
    assert_eq!(seen(), "1:v1\n");
    // With runc as the runtime the files are written between `runc create` and `start`.
    p.until("the first start under runc", || !runc_seen().is_empty());
    assert_eq!(runc_seen(), "v1\n");
    p.write("src/v.txt", "v2");
    p.until_content("app", "/app/v.txt", "v2");
    drop(w);
    // Changed while no watch runs: a restart gets it before the process starts.
    p.write("src/v.txt", "v3");
    p.tug(&["restart", "app"]);
    p.until("the restart", || seen().lines().count() == 2);
    assert_eq!(seen(), "1:v1\n1:v3\n");
    p.tug(&["restart", "viarunc"]);
    p.until("the restart under runc", || {
        runc_seen().lines().count() == 2
    });
    assert_eq!(runc_seen(), "v1\nv3\n");
    // A recreated container (changed config) starts with the synced files.
    std::fs::write(p.path("compose.yaml"), yaml(2)).unwrap();
    p.write("src/v.txt", "v4");
    p.tug(&["up", "-d"]);
    p.until("the recreated start", || seen().contains("2:"));
    assert_eq!(seen().lines().last(), Some("2:v4"));
    // A container restarted by its restart policy gets the file changed meanwhile.
    p.write("src/v.txt", "v5");
    p.write("out/crash", "");
    p.until("the crashing container to see v5", || {
        std::fs::read_to_string(p.path("out/crashy"))
            .unwrap_or_default()
            .ends_with("v5")
    });
    // `down` forgets the sync: a new stack starts from the image.
    p.tug(&["down", "-t", "1"]);
    std::fs::remove_file(p.path("out/seen")).unwrap();
    p.tug(&["up", "-d", "app"]);
    p.until("the start after down", || seen().contains("2:"));
    assert_eq!(seen(), "2:missing\n");
}

#[test]
fn watch_actions_restart_exec_and_initial_sync_and_a_burst_restarts_once() {
    if !require_root() {
        return;
    }
    let p = Project::new(
        r#"
services:
  svc:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "echo started >> /out/starts; exec sleep 1000"]
    volumes: ["./out:/out"]
    develop:
      watch:
        - path: ./conf
          target: /etc/app
          action: sync+restart
        - path: ./hooks
          target: /hooks
          action: sync+exec
          exec:
            command: ["sh", "-c", "cat /hooks/h.txt > /out/exec-ran; id -u >> /out/exec-ran"]
            user: "1000"
        - path: ./restart-only
          action: restart
        - path: ./init
          target: /init
          action: sync
          initial_sync: true
"#,
    );
    for d in ["conf", "hooks", "restart-only", "out"] {
        std::fs::create_dir_all(p.path(d)).unwrap();
    }
    // The exec command runs as user 1000 and writes here.
    std::fs::set_permissions(
        p.path("out"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    p.write("init/same.txt", "same\n");
    p.write("init/diff.txt", "host\n");
    p.write("init/only-host.txt", "h\n");
    p.tug(&["up", "-d"]);
    let starts = || {
        std::fs::read_to_string(p.path("out/starts"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    p.until("the first start", || starts() == 1);
    // The container has its own copies: one equal to the host's, one not.
    p.sh(
        "svc",
        "mkdir -p /init && echo same > /init/same.txt && echo old > /init/diff.txt",
    );
    let inode = p.sh("svc", "stat -c %i /init/same.txt");
    let w = p.watch(&["--no-up"]);
    // initial_sync: what differs is written, what is equal is left alone.
    p.until_content("svc", "/init/diff.txt", "host\n");
    p.until_content("svc", "/init/only-host.txt", "h\n");
    assert_eq!(p.sh("svc", "stat -c %i /init/same.txt"), inode);
    assert_eq!(starts(), 1, "the initial sync restarted the service");
    // sync+restart.
    p.write("conf/c.txt", "c");
    p.until("the restart", || starts() == 2);
    p.until_content("svc", "/etc/app/c.txt", "c");
    w.until_line("the restart line", |l| l.starts_with("svc: restarted in "));
    // sync+exec: the command runs (as its user) after the sync.
    p.write("hooks/h.txt", "hooked\n");
    p.until("the exec", || {
        std::fs::read_to_string(p.path("out/exec-ran")).unwrap_or_default() == "hooked\n1000\n"
    });
    assert_eq!(starts(), 2, "sync+exec restarted the service");
    // restart alone.
    p.write("restart-only/x", "x");
    p.until("the restart-only restart", || starts() == 3);
    // A burst of 500 files restarts once, with every file right.
    std::thread::sleep(Duration::from_millis(500));
    let before = starts();
    for i in 0..500 {
        p.write(&format!("conf/burst/f{i:03}"), &format!("{i}\n"));
    }
    let want: String = (0..500).map(|i| format!("f{i:03}={i}\n")).collect();
    p.until("the burst in the container", || {
        p.read_with(
            "svc",
            &[
                "sh",
                "-c",
                "cd /etc/app/burst && for f in *; do echo \"$f=$(cat $f)\"; done",
            ],
        )
        .is_some_and(|got| got == want)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        starts(),
        before + 1,
        "a burst must restart once; watch output: {:#?}",
        w.lines()
    );
    drop(w);
}

#[test]
fn watch_detached_is_listed_stopped_and_ended_by_down_and_up_watch_works() {
    if !require_root() {
        return;
    }
    let p = Project::new(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
"#,
    );
    p.write("src/a.txt", "a");
    let out = p.tug(&["watch", "--detach"]);
    assert!(out.contains("in the background"), "{out}");
    let ls = p.tug(&["ls"]);
    let row = ls
        .lines()
        .find(|l| l.starts_with(&p.name))
        .unwrap_or_default();
    assert!(row.contains("watching"), "{ls}");
    // A second session of the same project is refused.
    let again = p.output(&["watch", "--no-up"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already runs"),
        "{again:?}"
    );
    p.write("src/a.txt", "background");
    p.until_content("web", "/app/a.txt", "background");
    let log = std::fs::read_to_string(p.root.path().join(format!("projects/{}/watch.log", p.name)))
        .unwrap();
    assert!(log.contains("web: synced"), "{log}");
    let stopped = p.tug(&["watch", "--stop"]);
    assert!(stopped.contains("stopped the watch"), "{stopped}");
    assert!(!p.tug(&["ls"]).contains("watching"));
    assert!(!p.output(&["watch", "--stop"]).status.success());
    // `up -d --watch` starts one in the background; `down` ends it.
    p.tug(&["up", "-d", "--watch"]);
    assert!(p.tug(&["ls"]).contains("watching"));
    p.tug(&["down", "-t", "1"]);
    assert!(processes_of(p.root.path()).is_empty());
    assert!(!p.tug(&["ls", "-a"]).contains("watching"));
    // Attached `up --watch`: logs and syncs until Ctrl-C.
    let mut c = p.cmd();
    c.args(["up", "--watch"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut up = Watching::spawn(c);
    p.write("src/a.txt", "attached");
    p.until_content("web", "/app/a.txt", "attached");
    // Ctrl-C stops the stack and ends with 130, as docker compose does.
    let status = up.interrupt();
    assert_eq!(status.code(), Some(130), "{:#?}", up.lines());
    assert!(
        up.lines().iter().any(|l| l.contains("Stopped")),
        "{:#?}",
        up.lines()
    );
}

#[test]
fn watch_errors_name_the_file_and_the_watch_goes_on() {
    if !require_root() {
        return;
    }
    let p = Project::new(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    volumes: ["./ro:/app/ro:ro"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
  plain:
    image: busybox:latest
    command: ["sleep", "1000"]
"#,
    );
    std::fs::create_dir_all(p.path("ro")).unwrap();
    p.write("src/ok.txt", "ok");
    let w = p.watch(&[]);
    p.write("src/ro/denied.txt", "x");
    let line = w.until_line("the error", |l| l.contains("sync failed"));
    assert!(line.contains("/app/ro/denied.txt"), "{line}");
    p.write("src/after.txt", "after");
    p.until_content("web", "/app/after.txt", "after");
    drop(w);
    // Nothing to watch, and bad rules, are said before anything starts.
    let refused = |args: &[&str], want: &str| {
        let out = p.output(&[&["watch"], args].concat());
        assert!(!out.status.success(), "watch {args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    };
    refused(&["plain"], "develop.watch");
    let rule = |r: &str| {
        std::fs::write(
            p.path("compose.yaml"),
            format!(
                "services:\n  web:\n    image: busybox:latest\n    develop:\n      watch:\n        - {r}\n"
            ),
        )
        .unwrap();
    };
    rule("{path: ./src, action: sync+exec, target: /app}");
    refused(&[], "exec.command");
    rule("{path: ./missing, action: sync, target: /app}");
    refused(&[], "missing does not exist");
}

#[test]
fn watch_rebuild_builds_once_recreates_and_keeps_the_synced_files() {
    if !require_root() {
        return;
    }
    let p = Project::new(
        r#"
services:
  api:
    build: ./api
    init: true
    volumes: ["./out:/out"]
    develop:
      watch:
        - path: ./api/app.txt
          action: rebuild
        - path: ./api/Dockerfile
          action: rebuild
        - path: ./static
          target: /static
          action: sync
  client:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "echo up >> /out/client; exec sleep 1000"]
    volumes: ["./out:/out"]
    depends_on:
      api: {condition: service_started, restart: true}
"#,
    );
    let dockerfile = "FROM busybox\nCOPY app.txt /app/app.txt\nCMD [\"sh\", \"-c\", \"cat /app/app.txt /static/s.txt >> /out/api-seen; echo --- >> /out/api-seen; exec sleep 1000\"]\n";
    p.write("api/Dockerfile", dockerfile);
    p.write("api/app.txt", "v1\n");
    p.write("static/s.txt", "s1\n");
    std::fs::create_dir_all(p.path("out")).unwrap();
    let seen = || std::fs::read_to_string(p.path("out/api-seen")).unwrap_or_default();
    let lines = |f: &str| {
        std::fs::read_to_string(p.path(f))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let images = || p.tug(&["image", "ls", "-q"]).lines().count();
    // The first start (after the first build) already has the synced file.
    let w = p.watch(&[]);
    p.until("the first start", || seen().contains("---"));
    assert_eq!(seen(), "v1\ns1\n---\n");
    p.write("static/s.txt", "s2\n");
    p.until_content("api", "/static/s.txt", "s2\n");
    let api = |p: &Project| p.tug(&["ps", "-q", "api"]).trim().to_string();
    let first = api(&p);
    let images_before = images();
    // A change to a rebuild path: one build, a new container with the new content and the
    // synced file, and the dependent that asks for it restarted.
    p.write("api/app.txt", "v2\n");
    w.until_line("the rebuild", |l| l.starts_with("api: rebuilt in "));
    p.until("the recreated start", || seen().matches("---").count() == 2);
    assert!(seen().ends_with("v2\ns2\n---\n"), "{}", seen());
    assert_ne!(api(&p), first, "api was not recreated");
    p.until_content("api", "/app/app.txt", "v2\n");
    p.until("the client's restart", || lines("out/client") == 2);
    std::thread::sleep(Duration::from_secs(2));
    let rebuilt = |w: &Watching| {
        w.lines()
            .iter()
            .filter(|l| l.starts_with("api: rebuilt in "))
            .count()
    };
    assert_eq!(rebuilt(&w), 1, "{:#?}", w.lines());
    // The image it replaced is pruned (dangling and unused).
    assert_eq!(images(), images_before);
    // A change to the Dockerfile rebuilds too, once.
    p.write(
        "api/Dockerfile",
        &dockerfile.replace("FROM busybox\n", "FROM busybox\nENV GEN=2\n"),
    );
    p.until("the second rebuild", || rebuilt(&w) == 2);
    p.until("the second recreated start", || {
        seen().matches("---").count() == 3
    });
    assert_eq!(p.sh("api", "echo $GEN:$(cat /static/s.txt)").trim(), "2:s2");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rebuilt(&w), 2, "{:#?}", w.lines());
    drop(w);
}

#[test]
fn watch_privileged_sync_exec_exec_and_hooks_run_unconfined() {
    if !require_root() {
        return;
    }
    let p = Project::new(
        r#"
services:
  svc:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    volumes: ["./out:/out", "./probe:/probe:ro"]
    post_start:
      - command: ["sh", "/probe/probe.sh", "/out/post-start"]
        privileged: true
    develop:
      watch:
        - path: ./hooks
          target: /hooks
          action: sync+exec
          exec:
            command: ["sh", "/probe/probe.sh", "/out/exec-ran"]
            privileged: true
        - path: ./plain
          target: /plain
          action: sync+exec
          exec:
            command: ["sh", "/probe/probe.sh", "/out/plain-ran"]
"#,
    );
    // What the process has, and whether unshare(CLONE_NEWUTS) works (Docker's default
    // seccomp profile refuses it without CAP_SYS_ADMIN).
    p.write(
        "probe/probe.sh",
        "{ grep -E '^(CapEff|Seccomp):' /proc/self/status | tr -d '\\t'\n\
         unshare -u true 2>/dev/null && echo unshared || echo refused; } > \"$1.tmp\"\n\
         mv \"$1.tmp\" \"$1\"\n",
    );
    for d in ["hooks", "plain", "out"] {
        std::fs::create_dir_all(p.path(d)).unwrap();
    }
    let full = crate::common::bounding_set();
    let unconfined = format!("CapEff:{full}\nSeccomp:0\nunshared\n");
    let confined = "CapEff:00000000a80425fb\nSeccomp:2\nrefused\n";
    let read = |f: &str| std::fs::read_to_string(p.path(f)).unwrap_or_default();
    let w = p.watch(&[]);
    // A privileged post_start hook.
    p.until("the post_start hook", || !read("out/post-start").is_empty());
    assert_eq!(read("out/post-start"), unconfined);
    // sync+exec with privileged: true, and without.
    p.write("hooks/h.txt", "h");
    p.until("the privileged exec", || !read("out/exec-ran").is_empty());
    assert_eq!(read("out/exec-ran"), unconfined);
    w.until_line("the exec line", |l| l.starts_with("svc: exec in "));
    p.write("plain/x.txt", "x");
    p.until("the plain exec", || !read("out/plain-ran").is_empty());
    assert_eq!(read("out/plain-ran"), confined);
    assert!(
        !w.lines().iter().any(|l| l.contains("failed")),
        "{:#?}",
        w.lines()
    );
    drop(w);
    // `tug exec --privileged` and a plain `tug exec`.
    let probe = |privileged: bool| {
        let mut a = vec!["exec", "-T"];
        if privileged {
            a.push("--privileged");
        }
        a.extend(["svc", "sh", "-c", "sh /probe/probe.sh /tmp/p && cat /tmp/p"]);
        p.tug(&a)
    };
    assert_eq!(probe(true), unconfined);
    assert_eq!(probe(false), confined);
}

/// The directory of `service`'s container in the project's state root.
fn container_dir(p: &Project, service: &str) -> PathBuf {
    let id = p.tug(&["ps", "-q", service]).trim().to_string();
    assert!(!id.is_empty(), "{service} has no container");
    std::fs::read_dir(p.root.path().join("containers"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|d| d.file_name().unwrap().to_string_lossy().starts_with(&id))
        .unwrap_or_else(|| panic!("no directory for container {id}"))
}

#[test]
fn watch_deletes_what_the_host_deleted_after_a_queue_overflow_and_at_a_start() {
    if !require_root() {
        return;
    }
    let p = Project::new(
        r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
          ignore: ["node_modules/"]
"#,
    );
    for f in [
        "a.txt",
        "b.txt",
        "gone/x.txt",
        "node_modules/m.js",
        "keep.txt",
    ] {
        p.write(&format!("src/{f}"), f);
    }
    let mut w = p.watch(&[]);
    // The first start had the host's files; the container adds its own, one under an
    // ignored directory, and one of the same name outside the target.
    p.until_content("web", "/app/gone/x.txt", "gone/x.txt");
    p.sh(
        "web",
        "echo own > /app/made.txt && mkdir -p /app/node_modules /other && \
         echo own > /app/node_modules/own.js && echo other > /other/b.txt",
    );
    // A real overflow of the kernel's event queue: the watch is stopped (SIGSTOP) while
    // more events than the queue holds arrive, then files are deleted: their events are
    // dropped, the kernel queues an overflow instead.
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(w.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    {
        use std::io::Write as _;
        // open + modify + close: three events each.
        for i in 0..max {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p.path("src/flood.txt"))
                .unwrap();
            writeln!(f, "{i}").unwrap();
        }
    }
    std::fs::remove_file(p.path("src/b.txt")).unwrap();
    std::fs::remove_dir_all(p.path("src/gone")).unwrap();
    std::fs::remove_dir_all(p.path("src/node_modules")).unwrap();
    p.write("src/new/n.txt", "n");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    // The rule is compared whole (the line says so) ...
    w.until_line("the whole comparison", |l| {
        l.starts_with("web: synced ") && l.contains("that differed")
    });
    p.until_gone("web", "/app/b.txt");
    p.until_gone("web", "/app/gone");
    p.until_content("web", "/app/new/n.txt", "n");
    // ... and removes only what the host had: the container's own files, the ignored
    // tree and what is outside the target stay.
    for (path, want) in [
        ("/app/a.txt", "a.txt"),
        ("/app/keep.txt", "keep.txt"),
        ("/app/made.txt", "own\n"),
        ("/app/node_modules/own.js", "own\n"),
        ("/app/node_modules/m.js", "node_modules/m.js"),
        ("/other/b.txt", "other\n"),
    ] {
        if path == "/app/node_modules/m.js" {
            // Ignored: it never reached the container.
            assert!(p.read_in("web", path).is_none(), "{path} was synced");
            continue;
        }
        assert_eq!(p.read_in("web", path).as_deref(), Some(want), "{path}");
    }
    // The new directory made during the overflow is watched.
    p.write("src/new/later.txt", "l");
    p.until_content("web", "/app/new/later.txt", "l");
    // A file made while the watch runs, deleted while the container is stopped: gone at
    // its start (the container's record says the host had it).
    p.write("src/r.txt", "r");
    p.until_content("web", "/app/r.txt", "r");
    let dir = container_dir(&p, "web");
    p.until("the container's record to list r.txt", || {
        std::fs::read_to_string(dir.join("sync-seen.json")).is_ok_and(|t| t.contains("\"r.txt\""))
    });
    p.tug(&["stop", "-t", "1", "web"]);
    std::fs::remove_file(p.path("src/r.txt")).unwrap();
    p.tug(&["start", "web"]);
    p.until_gone("web", "/app/r.txt");
    assert_eq!(p.read_in("web", "/app/made.txt").as_deref(), Some("own\n"));
    // And with no watch running: a restart removes what the host deleted meanwhile.
    w.interrupt();
    std::fs::remove_file(p.path("src/keep.txt")).unwrap();
    p.tug(&["restart", "-t", "1", "web"]);
    p.until_gone("web", "/app/keep.txt");
    assert_eq!(p.read_in("web", "/app/a.txt").as_deref(), Some("a.txt"));
    assert_eq!(p.read_in("web", "/app/made.txt").as_deref(), Some("own\n"));
}

#[test]
fn watch_names_the_inotify_limit_it_reaches_in_a_user_namespace() {
    if !require_root() || !require_tools(&["unshare"]) {
        return;
    }
    let p = Project::new(
        r#"
services:
  web:
    image: busybox:latest
    command: ["sleep", "1000"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
"#,
    );
    for i in 0..40 {
        std::fs::create_dir_all(p.path(&format!("src/d{i:02}"))).unwrap();
    }
    // The machine's limits stay as they are (other tests run beside this one): the watch
    // runs in a user namespace of its own whose limit is lowered. The kernel counts its
    // watches and instances against that namespace's limits as well as the machine's.
    let limited = |sysctl: &str, value: u32| -> Output {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "sh", "-c"])
            .arg(format!(
                "echo {value} > /proc/sys/user/{sysctl} && exec \"$0\" \"$@\""
            ))
            .arg(tug_bin())
            .args(["-p", &p.name, "watch", "--no-up"])
            .env("TUG_ROOT", p.root.path())
            .env("NO_COLOR", "1")
            .current_dir(p.dir.path())
            .stdin(Stdio::null());
        run(&mut c)
    };
    let out = limited("max_inotify_watches", 10);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // 41 directories (src and 40 below it): the 11th watch fails, 31 are missing.
    assert!(
        err.contains(
            "this user namespace's limit of inotify watches is reached \
             (user.max_inotify_watches = 10): watching these paths needs 31 (one per \
             directory) on top of the 10 in use; raise it with \
             `sysctl user.max_inotify_watches=64` in this user namespace"
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let out = limited("max_inotify_instances", 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err.contains(
            "this user namespace's limit of inotify instances is reached \
             (user.max_inotify_instances = 0)"
        ),
        "{err}"
    );
    // A watch that could not start leaves no session behind.
    assert!(!p.tug(&["ls", "-a"]).contains("watching"));
    assert!(!p.output(&["watch", "--stop"]).status.success());
}

#[test]
fn watch_deletions_without_events_never_follow_a_containers_links() {
    if !require_root() {
        return;
    }
    let canary = Canary::new(&[("x.txt", "canary's")]);
    let c = canary.p();
    let p = Project::new(
        r#"
services:
  evil:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
"#,
    );
    for d in ["abs", "rel", "host"] {
        p.write(&format!("src/{d}/x.txt"), d);
    }
    let w = p.watch(&[]);
    p.until_content("evil", "/app/host/x.txt", "host");
    drop(w);
    // The container turns the directories into links: to its own /victim, absolute and
    // climbing, and to the canary's path (which is the host's, were it resolved there).
    p.sh(
        "evil",
        &format!(
            "mkdir -p /victim {c} && echo victim > /victim/x.txt && echo own > {c}/x.txt && \
             rm -rf /app/abs /app/rel /app/host && ln -s /victim /app/abs && \
             ln -s ../../../../victim /app/rel && ln -s {c} /app/host"
        ),
    );
    // The host deletes them while the container is stopped; its start compares the rule.
    p.tug(&["stop", "-t", "1", "evil"]);
    for d in ["abs", "rel", "host"] {
        std::fs::remove_dir_all(p.path(&format!("src/{d}"))).unwrap();
    }
    p.tug(&["start", "evil"]);
    // The links, at paths the host deleted, go (unfollowed); what they led to stays.
    for l in ["/app/abs", "/app/rel", "/app/host"] {
        p.until_gone("evil", l);
    }
    assert_eq!(
        p.read_in("evil", "/victim/x.txt").as_deref(),
        Some("victim\n")
    );
    assert_eq!(
        p.read_in("evil", &format!("{c}/x.txt")).as_deref(),
        Some("own\n")
    );
    // What was not removed is said in the container's log (on its stderr).
    let log = p.output(&["logs", "evil"]);
    let err = String::from_utf8_lossy(&log.stderr);
    assert!(
        err.contains(
            "tug: sync before start: /app/abs/x.txt: not removed: a symlink is on the way"
        ),
        "{err}"
    );
    canary.assert_untouched();
}
