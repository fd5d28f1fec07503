//! Hostile images and compromised containers (issue 13): images built here, whose symlinks
//! point at the host (`/proc -> /`, `/etc -> <host dir>`, `/data -> ../../..`, chains through
//! `..`), and containers that swap a symlink in between two starts. Each must either run
//! contained or be refused with a clear error, and a canary directory on the host must stay
//! untouched: an inotify watch on it sees nothing (no file created, opened or listed).
//!
//! The attacks never aim at a real host path that an escape would write to: where a link
//! points at `/`, the mount targets under it lead to `/tmp/<canary>`, so a regression lands in
//! the canary (and fails the test) instead of the host's `/`. Checks that run where an escape
//! would put them (exec, healthchecks, hooks) only read: they look for the canary's marker
//! file, which only the host has, and for `/hostile-image`, which only the image has.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{self, fails, ok, tug};

/// A directory on the host that no container may reach, with a marker file only the host
/// has, watched with inotify from its creation on.
pub(crate) struct Canary {
    dir: tempfile::TempDir,
    inotify: OwnedFd,
    files: Vec<(String, String)>,
}

impl Canary {
    /// `/tmp/tug-canary-…` with `marker` and the `extra` files in it.
    pub(crate) fn new(extra: &[(&str, &str)]) -> Canary {
        let dir = tempfile::Builder::new()
            .prefix("tug-canary-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut files = vec![(
            "marker".to_string(),
            format!("host marker {}\n", dir.path().display()),
        )];
        files.extend(
            extra
                .iter()
                .map(|(n, c)| ((*n).to_string(), (*c).to_string())),
        );
        for (n, c) in &files {
            let p = dir.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        // SAFETY: inotify_init1 has no memory preconditions; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
        // SAFETY: a valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_ALL_EVENTS) };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        Canary {
            dir,
            inotify,
            files,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The canary's path as a string (`/tmp/tug-canary-…`).
    pub(crate) fn p(&self) -> String {
        self.path().display().to_string()
    }

    /// What happened in the canary since it was made (as `name: MASK`).
    fn events(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: reading into a buffer we own, of the given length.
            let n =
                unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            let n = usize::try_from(n).unwrap();
            while off + 16 <= n {
                let mask = u32::from_ne_bytes(buf[off + 4..off + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap()) as usize;
                let name = String::from_utf8_lossy(&buf[off + 16..off + 16 + len])
                    .trim_end_matches('\0')
                    .to_string();
                out.push(format!("{name:?}: mask {mask:#x}"));
                off += 16 + len;
            }
        }
        out
    }

    /// Nothing was created, opened, read or listed in the canary, and its files are as made.
    #[track_caller]
    pub(crate) fn assert_untouched(&self) {
        let ev = self.events();
        assert!(
            ev.is_empty(),
            "the host canary {} was touched from a container: {ev:?}",
            self.p()
        );
        let mut names: Vec<String> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = self
            .files
            .iter()
            .map(|(n, _)| n.split('/').next().unwrap().to_string())
            .collect();
        want.sort();
        want.dedup();
        assert_eq!(
            names,
            want,
            "files appeared in the host canary {}",
            self.p()
        );
        for (n, c) in &self.files {
            assert_eq!(
                &std::fs::read_to_string(self.path().join(n)).unwrap(),
                c,
                "{n} in the canary changed"
            );
        }
        // Our own listing above shows up as events: start clean for the next check.
        let _ = self.events();
    }

    /// A read-only shell check: fails (exit 3, prints ESCAPED) where the host's canary marker
    /// is visible, fails (exit 4) outside the image, else prints CONTAINED.
    fn check(&self) -> String {
        format!(
            "if [ -e {}/marker ]; then echo ESCAPED; exit 3; fi; \
             if [ ! -e /hostile-image ]; then echo NOT-IN-IMAGE; exit 4; fi; echo CONTAINED",
            self.p()
        )
    }
}

/// How the test image differs from busybox.
enum Edit<'a> {
    /// Replace the path (whatever it was) by a symlink to the target.
    Link(&'a str, &'a str),
    /// A directory.
    Dir(&'a str),
    /// A file with this content.
    File(&'a str, &'a str),
}

/// A state root with busybox; on drop removes every container, volume and network and checks
/// that no mount or process of it is left.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Option<Env> {
        if !common::require_root() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("tug-hostile-")
            .tempdir()
            .unwrap();
        common::busybox_image(dir.path());
        Some(Env { dir })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn tug(&self) -> Command {
        let mut c = tug(self.root());
        c.env("TUG_DNS_UPSTREAM", "127.0.0.1:9");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(self.tug().args(args))
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        ok(self.tug().args(args))
    }

    #[track_caller]
    fn fails(&self, args: &[&str]) -> String {
        fails(self.tug().args(args))
    }

    fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["container", "inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    /// Builds busybox with `edits`, a `/hostile-image` marker, `CMD ["sleep", "1000"]` and
    /// (when given) a `CMD-SHELL` healthcheck every 200 ms, and loads it as `name:latest`
    /// from a docker-archive written here.
    fn image(&self, name: &str, edits: &[Edit<'_>], health: Option<&str>) -> String {
        use sha2::Digest as _;
        let work = tempfile::Builder::new()
            .prefix("img-")
            .tempdir_in(self.root())
            .unwrap();
        let rootfs = work.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        ok(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-xf")
            .arg(common::busybox_rootfs_tar()));
        std::fs::write(rootfs.join("hostile-image"), format!("image {name}\n")).unwrap();
        for e in edits {
            match e {
                Edit::Link(path, to) => {
                    let p = rootfs.join(path.trim_start_matches('/'));
                    if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p).unwrap();
                    } else if p.symlink_metadata().is_ok() {
                        std::fs::remove_file(&p).unwrap();
                    }
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::os::unix::fs::symlink(to, &p).unwrap();
                }
                Edit::Dir(path) => {
                    std::fs::create_dir_all(rootfs.join(path.trim_start_matches('/'))).unwrap();
                }
                Edit::File(path, content) => {
                    let p = rootfs.join(path.trim_start_matches('/'));
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(p, content).unwrap();
                }
            }
        }
        let archive = work.path().join("archive");
        std::fs::create_dir(&archive).unwrap();
        let layer = archive.join("layer.tar");
        ok(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("--numeric-owner")
            .arg("-cf")
            .arg(&layer)
            .arg("."));
        let diff_id = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(std::fs::read(&layer).unwrap()))
        );
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let mut config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["sleep", "1000"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        if let Some(h) = health {
            config["config"]["Healthcheck"] = serde_json::json!({
                "Test": ["CMD-SHELL", h],
                "Interval": 200_000_000u64,
                "Timeout": 5_000_000_000u64,
                "Retries": 3,
            });
        }
        std::fs::write(
            archive.join("config.json"),
            serde_json::to_vec(&config).unwrap(),
        )
        .unwrap();
        let manifest = serde_json::json!([{
            "Config": "config.json",
            "RepoTags": [format!("{name}:latest")],
            "Layers": ["layer.tar"],
        }]);
        std::fs::write(
            archive.join("manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        let tar = work.path().join("image.tar");
        ok(Command::new("tar")
            .arg("-C")
            .arg(&archive)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        self.ok(&["image", "load", "-i", tar.to_str().unwrap()]);
        format!("{name}:latest")
    }

    /// Runs `script` in the container with `exec` and returns its stdout.
    #[track_caller]
    fn exec(&self, name: &str, script: &str) -> String {
        self.ok(&["container", "exec", name, "sh", "-c", script])
            .trim()
            .to_string()
    }

    fn until(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }

    fn leaks(&self) -> Vec<String> {
        let r = self.root().display().to_string();
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut out: Vec<String> = mi
            .lines()
            .filter(|l| l.contains(&r))
            .map(|l| format!("mount: {l}"))
            .collect();
        out.extend(
            common::processes_of(self.root())
                .into_iter()
                .map(|p| format!("process {p}")),
        );
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let ids = self.run(&["container", "ls", "-a", "-q"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.run(&["container", "rm", "--force", id.trim()]);
        }
        let nets = self.run(&["network", "ls", "-q"]);
        for n in String::from_utf8_lossy(&nets.stdout).lines() {
            let _ = self.run(&["network", "rm", "--force", n.trim()]);
        }
        let vols = self.run(&["volume", "ls", "-q"]);
        for v in String::from_utf8_lossy(&vols.stdout).lines() {
            let _ = self.run(&["volume", "rm", "--force", v.trim()]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut l = self.leaks();
        while !l.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            l = self.leaks();
        }
        if !std::thread::panicking() {
            assert!(l.is_empty(), "leaked: {l:#?}");
        }
    }
}

/// A compose project of a test: taken down (`down -v`) on drop, even when the test fails.
struct Project<'a> {
    env: &'a Env,
    dir: tempfile::TempDir,
    name: String,
}

impl<'a> Project<'a> {
    fn new(env: &'a Env, yaml: &str) -> Project<'a> {
        let dir = tempfile::Builder::new()
            .prefix("proj-")
            .tempdir_in(env.root())
            .unwrap();
        std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
        Project {
            env,
            dir,
            name: common::unique("hp"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.env.tug();
        cmd.current_dir(self.path())
            .env("HOSTILE_SECRET", "secret!")
            .args(["-p", &self.name, "--progress", "plain"])
            .args(args);
        cmd
    }
}

impl Drop for Project<'_> {
    fn drop(&mut self) {
        let _ = common::run(&mut self.cmd(&["down", "-v", "-t", "1"]));
    }
}

/// What an exec'd process sees of its root, from inside: `/proc/1/root` is its own root (same
/// inode, and `/` as seen from it), and its mount table is the container init's.
const SAME_ROOT: &str = r#"[ "$(readlink /proc/1/root)" = / ] || { echo "root of pid 1 is $(readlink /proc/1/root)"; exit 5; }
[ "$(stat -Lc %d:%i /proc/1/root)" = "$(stat -c %d:%i /)" ] || { echo "/ differs from pid 1's root"; exit 6; }
cmp -s /proc/self/mountinfo /proc/1/mountinfo || { echo "mount table differs from pid 1's"; exit 7; }
echo SAME-ROOT"#;

/// `/proc -> /` or `/sys -> /` in an image: refused before anything is mounted (proc and
/// sysfs go only on plain directories), and nothing reaches the host. Where the old runtime
/// started it, the proc mount landed on the host's `/`, the old-root detach removed that
/// mount instead of the host root, and every exec ran in the host's filesystem.
#[test]
fn hostile_proc_or_sys_linked_to_root_is_refused() {
    let Some(env) = Env::new() else { return };
    let canary = Canary::new(&[]);
    for (link, fs) in [("/proc", "proc"), ("/sys", "sysfs")] {
        let img = env.image(
            &common::unique("hostile-root"),
            &[Edit::Link(link, "/")],
            Some(&canary.check()),
        );
        let name = common::unique("hr");
        let out = env.run(&[
            "container",
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            &img,
        ]);
        if out.status.success() {
            // It must not have started; if it did, show what an exec sees before failing.
            let seen = env.run(&["container", "exec", &name, "sh", "-c", &canary.check()]);
            panic!(
                "an image with {link} -> / was started; exec saw: {}",
                String::from_utf8_lossy(&seen.stdout)
            );
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(link) && err.contains(fs) && err.contains("symlink"),
            "unclear error for {link} -> /: {err}"
        );
        canary.assert_untouched();
    }
}

/// `/etc -> /tmp/<canary>`: the `hosts`, `hostname` and `resolv.conf` bind targets are made
/// inside the container (at its own `/tmp/<canary>`), the mounts are there, the image's
/// healthcheck, exec and cp see the container's root, and the host's canary sees nothing —
/// not even a read of its `passwd` for `exec --user`.
#[test]
fn hostile_etc_linked_to_a_host_dir_stays_inside() {
    let Some(env) = Env::new() else { return };
    let canary = Canary::new(&[("passwd", "leak:x:4242:4242::/:/bin/sh\n")]);
    let img = env.image(
        &common::unique("hostile-etc"),
        &[Edit::Link("/etc", &canary.p())],
        Some(&canary.check()),
    );
    let name = common::unique("he");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--network",
        "none",
        "--hostname",
        "inside",
        "--name",
        &name,
        &img,
    ]);
    env.until(
        "healthy (the image's healthcheck sees the container)",
        20,
        || env.inspect(&name)["health"] == "healthy",
    );
    assert_eq!(env.exec(&name, &canary.check()), "CONTAINED");
    assert_eq!(env.exec(&name, SAME_ROOT), "SAME-ROOT");
    // The files are mounted where the container's own /etc leads.
    assert_eq!(env.exec(&name, "cat /etc/hostname"), "inside");
    let hosts = env.exec(&name, "cat /etc/hosts");
    assert!(hosts.contains("localhost"), "{hosts}");
    let mounts = env.exec(&name, "cat /proc/self/mountinfo");
    for f in ["hosts", "hostname", "resolv.conf"] {
        let at = format!(" {}/{f} ", canary.p());
        assert!(mounts.contains(&at), "no mount at {at} inside:\n{mounts}");
    }
    // The user is looked up in the container's files, never in the host's canary.
    let err = env.fails(&["container", "exec", "-u", "leak", &name, "id", "-u"]);
    assert!(err.contains("leak"), "{err}");
    // cp in both directions resolves inside the container.
    let out = env.root().join("hostname-out");
    env.ok(&[
        "container",
        "cp",
        &format!("{name}:/etc/hostname"),
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "inside\n");
    let input = env.root().join("cp-in.txt");
    std::fs::write(&input, "copied in\n").unwrap();
    env.ok(&[
        "container",
        "cp",
        input.to_str().unwrap(),
        &format!("{name}:{}/cp-in.txt", canary.p()),
    ]);
    assert_eq!(
        env.exec(&name, &format!("cat {}/cp-in.txt", canary.p())),
        "copied in"
    );
    env.ok(&["container", "rm", "--force", &name]);
    canary.assert_untouched();
}

/// Volume, bind and tmpfs targets under symlinks that lead out of the image — `/data -> /`,
/// `/up -> ../../…/tmp/<canary>`, a chain through `..`, an absolute link to the canary — are
/// resolved inside the container: the mounts are where the container's own paths lead, the
/// host canary sees nothing, and a target that resolves to the container's root is refused.
#[test]
fn hostile_mount_targets_under_symlinks_stay_inside() {
    let Some(env) = Env::new() else { return };
    let canary = Canary::new(&[]);
    let c = canary.p();
    let climb = format!("{}{}", "../".repeat(14), c.trim_start_matches('/'));
    let img = env.image(
        &common::unique("hostile-vol"),
        &[
            Edit::Link("/data", "/"),
            Edit::Link("/up", &climb),
            Edit::Dir("/d/e"),
            Edit::Link("/chain", "d/e/../../hop"),
            Edit::Link("/hop", &format!("d/../{climb}")),
            Edit::Link("/abs", &c),
        ],
        // The healthcheck also checks, from inside, that it runs in the container's root.
        Some(&format!("{}\n{SAME_ROOT}", canary.check())),
    );
    let host_bind = tempfile::Builder::new()
        .prefix("bind-")
        .tempdir_in(env.root())
        .unwrap();
    std::fs::write(host_bind.path().join("from-host"), "bound\n").unwrap();
    let name = common::unique("hv");
    let targets = [
        format!("/data{c}/vol"),
        "/up/vol2".to_string(),
        "/chain/vol3".to_string(),
        "/abs/vol4".to_string(),
    ];
    let mut args: Vec<String> = [
        "container",
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let dirs: Vec<std::path::PathBuf> = (0..targets.len())
        .map(|i| env.root().join(format!("vol{i}")))
        .collect();
    for (d, t) in dirs.iter().zip(&targets) {
        std::fs::create_dir(d).unwrap();
        args.extend(["-v".into(), format!("{}:{t}", d.display())]);
    }
    args.extend([
        "-v".into(),
        format!("{}:/data{c}/bind:ro", host_bind.path().display()),
        "--tmpfs".into(),
        format!("/data{c}/tmpfs"),
        img.clone(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&argv);
    env.until("healthy", 20, || env.inspect(&name)["health"] == "healthy");
    assert_eq!(env.exec(&name, &canary.check()), "CONTAINED");
    assert_eq!(env.exec(&name, SAME_ROOT), "SAME-ROOT");
    // Every mount sits at the path the container's own symlinks lead to.
    let mounts = env.exec(&name, "cat /proc/self/mountinfo");
    for at in [
        format!("{c}/vol"),
        format!("{c}/vol2"),
        format!("{c}/vol3"),
        format!("{c}/vol4"),
        format!("{c}/bind"),
        format!("{c}/tmpfs"),
    ] {
        assert!(
            mounts.contains(&format!(" {at} ")),
            "no mount at {at} inside:\n{mounts}"
        );
    }
    assert_eq!(
        env.exec(&name, &format!("cat /data{c}/bind/from-host")),
        "bound"
    );
    // A write through the container's path lands in the mounted directory.
    env.exec(&name, "echo w > /up/vol2/written");
    assert_eq!(
        std::fs::read_to_string(dirs[1].join("written")).unwrap(),
        "w\n"
    );
    env.ok(&["container", "rm", "--force", &name]);
    // A target that resolves to the container's root is refused.
    let err = env.fails(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{}:/data", dirs[0].display()),
        &img,
        "true",
    ]);
    assert!(err.contains("/data") && err.contains("root"), "{err}");
    canary.assert_untouched();
}

/// A compromised container replaces the parent of its volume's target with a symlink to `/`
/// and exits; the next start (by the restart policy, or by `tug start`) mounts the volume
/// where the container's own path now leads, inside it, never on the host.
#[test]
fn hostile_symlink_swapped_between_starts_stays_inside() {
    let Some(env) = Env::new() else { return };
    let canary = Canary::new(&[]);
    let c = canary.p();
    // The image has no /data: tug makes it (in the container's upper layer) for the mount,
    // where the container can rename it (overlayfs renames a lower directory only with
    // redirect_dir).
    let img = env.image(&common::unique("hostile-swap"), &[], None);
    let bind = |n: &str| {
        let d = env.root().join(n);
        std::fs::create_dir(&d).unwrap();
        d.display().to_string()
    };
    let swap =
        "if [ -L /data ]; then exec sleep 1000; fi; mv /data /data.old && ln -s / /data; exit 1";
    // By the restart policy.
    let a = common::unique("hsa");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--network",
        "none",
        "--restart",
        "on-failure:3",
        "--name",
        &a,
        "-v",
        &format!("{}:/data{c}/v", bind(&a)),
        &img,
        "sh",
        "-c",
        swap,
    ]);
    let mut last = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        last = env.inspect(&a);
        if last["state"] == "running" && last["restart_count"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last["state"], "running", "not restarted: {last:#}");
    assert_eq!(env.exec(&a, "readlink /data"), "/");
    assert_eq!(env.exec(&a, &canary.check()), "CONTAINED");
    assert_eq!(env.exec(&a, SAME_ROOT), "SAME-ROOT");
    let mounts = env.exec(&a, "cat /proc/self/mountinfo");
    assert!(mounts.contains(&format!(" {c}/v ")), "{mounts}");
    // By an explicit start.
    let b = common::unique("hsb");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &b,
        "-v",
        &format!("{}:/data{c}/v", bind(&b)),
        &img,
        "sh",
        "-c",
        swap,
    ]);
    env.until("exited", 20, || env.inspect(&b)["state"] == "exited");
    env.ok(&["container", "start", &b]);
    env.until("running", 20, || env.inspect(&b)["state"] == "running");
    assert_eq!(env.exec(&b, &canary.check()), "CONTAINED");
    let mounts = env.exec(&b, "cat /proc/self/mountinfo");
    assert!(mounts.contains(&format!(" {c}/v ")), "{mounts}");
    // A swap that makes the target itself resolve to the root: the next start is refused.
    let r = common::unique("hsr");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &r,
        "-v",
        &format!("{}:/data/sub", bind(&r)),
        &img,
        "sh",
        "-c",
        "if [ -L /data ]; then exec sleep 1000; fi; mv /data /data.old && mkdir /p && ln -s / /p/sub && ln -s p /data; exit 1",
    ]);
    env.until("exited", 20, || env.inspect(&r)["state"] == "exited");
    let out = env.run(&["container", "start", &r]);
    if out.status.success() {
        let seen = env.run(&["container", "exec", &r, "sh", "-c", &canary.check()]);
        panic!(
            "a container whose volume target leads to / was started again; exec saw: {}",
            String::from_utf8_lossy(&seen.stdout)
        );
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/data/sub") && err.contains("root"), "{err}");
    for n in [&a, &b, &r] {
        env.ok(&["container", "rm", "--force", n]);
    }
    canary.assert_untouched();
}

/// A compose service on a hostile image (HEALTHCHECK in the image, `/data -> /`,
/// `/run -> /tmp/<canary>`, `/etc` to a dir under it): named volume, bind, tmpfs, secret and
/// config targets under the links, `post_start`/`pre_stop` hooks, `exec` and `cp` both ways
/// all stay inside the container; `up --wait` waits on the image's healthcheck.
#[test]
fn hostile_compose_service_stays_inside() {
    let Some(env) = Env::new() else { return };
    let canary = Canary::new(&[("x/secret", "host secret\n")]);
    let c = canary.p();
    let img = env.image(
        &common::unique("hostile-compose"),
        &[
            Edit::Link("/data", "/"),
            Edit::Link("/run", &c),
            Edit::Link("/etc", &format!("{c}/etc")),
            Edit::Link("/lnk", &c),
            Edit::Link("/lnk2", "/srv"),
            Edit::File("/srv/x/seed", "seed\n"),
        ],
        Some(&canary.check()),
    );
    let check = canary.check();
    let project = Project::new(
        &env,
        &format!(
            r#"
services:
  app:
    image: {img}
    volumes:
      - vol:/data{c}/vol
      - leak:/lnk/x
      - seed:/lnk2/x
      - ./bind:/data{c}/bind
      - type: tmpfs
        target: /data{c}/tmpfs
    secrets: [s1]
    configs:
      - source: c1
        target: /data{c}/c1
    post_start:
      - command: ["sh", "-c", "{check}"]
    pre_stop:
      - command: ["sh", "-c", "{check}"]
volumes:
  vol: {{}}
  leak: {{}}
  seed: {{}}
secrets:
  s1:
    environment: HOSTILE_SECRET
configs:
  c1:
    content: "config!"
"#
        ),
    );
    std::fs::create_dir(project.path().join("bind")).unwrap();
    std::fs::write(project.path().join("bind/from-host"), "bound\n").unwrap();
    let compose = |args: &[&str]| project.cmd(args);
    ok(&mut compose(&["up", "-d", "--wait"]));
    let exec = |script: &str| {
        ok(&mut compose(&["exec", "-T", "app", "sh", "-c", script]))
            .trim()
            .to_string()
    };
    assert_eq!(exec(&check), "CONTAINED");
    assert_eq!(exec(SAME_ROOT), "SAME-ROOT");
    assert_eq!(exec("cat /run/secrets/s1"), "secret!");
    assert_eq!(exec(&format!("cat {c}/secrets/s1")), "secret!");
    assert_eq!(exec(&format!("cat /data{c}/c1")), "config!");
    assert_eq!(exec(&format!("cat /data{c}/bind/from-host")), "bound");
    // Copy-up follows the image's links inside the image: the image's /srv/x is copied up,
    // the host's /tmp/<canary>/x is not.
    assert_eq!(exec("cat /lnk2/x/seed"), "seed");
    assert_eq!(exec("ls -A /lnk/x"), "");
    let mounts = exec("cat /proc/self/mountinfo");
    for at in [
        format!("{c}/vol"),
        format!("{c}/bind"),
        format!("{c}/tmpfs"),
        format!("{c}/c1"),
        format!("{c}/secrets/s1"),
        format!("{c}/etc/hosts"),
        format!("{c}/x"),
        "/srv/x".to_string(),
    ] {
        assert!(
            mounts.contains(&format!(" {at} ")),
            "no mount at {at} inside:\n{mounts}"
        );
    }
    // cp both ways: out of the image's root, and into a path under the links.
    let out = project.path().join("marker-out");
    ok(&mut compose(&[
        "cp",
        "app:/hostile-image",
        out.to_str().unwrap(),
    ]));
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("image hostile-compose"),
        "cp copied something else"
    );
    let input = project.path().join("in.txt");
    std::fs::write(&input, "in\n").unwrap();
    ok(&mut compose(&[
        "cp",
        input.to_str().unwrap(),
        &format!("app:/data{c}/vol/in.txt"),
    ]));
    assert_eq!(exec(&format!("cat {c}/vol/in.txt")), "in");
    ok(&mut compose(&["down", "-v", "-t", "1"]));
    canary.assert_untouched();
}

/// `-v SRC:/` and a compose bind onto `/` are refused as Docker refuses them: a mount over
/// the container's root filesystem.
#[test]
fn mount_target_root_is_refused() {
    let Some(env) = Env::new() else { return };
    let src = env.root().join("src");
    std::fs::create_dir(&src).unwrap();
    for target in ["/", "//", "/."] {
        let err = env.fails(&[
            "container",
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{}:{target}", src.display()),
            "busybox",
            "true",
        ]);
        assert!(err.contains("destination can't be '/'"), "{target}: {err}");
    }
    let project = Project::new(
        &env,
        "services:\n  app:\n    image: busybox\n    volumes:\n      - ./x:/\n",
    );
    std::fs::create_dir(project.path().join("x")).unwrap();
    let err = fails(&mut project.cmd(&["up", "-d"]));
    assert!(
        err.contains("destination can't be '/'") && err.contains("app"),
        "{err}"
    );
}

/// A program or working directory reached through a `/proc` magic link is refused, at start
/// and in `exec`: `/proc/self/exe` of the process that starts the program is tug's own binary
/// on the host (running it inside the container would hand the container a descriptor of
/// it), and `/proc/self/fd/N` may be a descriptor of the host.
#[test]
fn hostile_magic_link_programs_are_refused() {
    let Some(env) = Env::new() else { return };
    let err = env.fails(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "/proc/self/exe",
        "version",
    ]);
    assert!(err.contains("magic link"), "{err}");
    let name = common::unique("hm");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
        "busybox",
        "sleep",
        "1000",
    ]);
    let out = env.run(&["container", "exec", &name, "/proc/self/exe", "version"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && text.contains("magic link"),
        "{text}"
    );
    // A link in the container's files to the magic link is refused the same way.
    env.exec(&name, "ln -s /proc/self/exe /bin/selfexe");
    let out = env.run(&["container", "exec", &name, "selfexe", "version"]);
    assert!(!out.status.success(), "{out:?}");
    let out = env.run(&["container", "exec", "-w", "/proc/self/cwd", &name, "pwd"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("magic link"),
        "{text}"
    );
    // `cp` out does not carry set-ID bits of the container's files onto the host.
    env.exec(&name, "cp /bin/busybox /tmp/suid && chmod 6755 /tmp/suid");
    let out = env.root().join("suid-out");
    env.ok(&[
        "container",
        "cp",
        &format!("{name}:/tmp/suid"),
        out.to_str().unwrap(),
    ]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&out).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o755, "mode {mode:o}");
    env.ok(&["container", "rm", "--force", &name]);
}

/// The pivot fails closed: with a mount stacked over the prepared root (what a mount target
/// resolving to the root used to produce), `rootfs::pivot` refuses after the pivot instead of
/// letting the program run where the old root or the stacked mount is. Run in a thread of
/// its own with a private mount namespace, so the test's own view of the host never changes.
#[test]
fn hostile_pivot_fails_closed_when_a_mount_is_stacked_over_the_root() {
    use tug::engine::runtime::{inroot, rootfs};
    if !common::require_root() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("tug-pivot-")
        .tempdir()
        .unwrap();
    let rootfs_path = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs_path).unwrap();
    let run = |stack: bool| {
        let p = rootfs_path.clone();
        std::thread::spawn(move || -> Result<(), String> {
            // Only this thread enters the new mount namespace (and is pivoted).
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("unshare: {e}"))?;
            let root = rootfs::prepare(&p).map_err(|e| e.to_string())?;
            if stack {
                nix::mount::mount(
                    Some("tmpfs"),
                    inroot::proc_fd(root.fd()).as_str(),
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                )
                .map_err(|e| format!("stack: {e}"))?;
            }
            rootfs::pivot(root).map_err(|e| e.to_string())
        })
        .join()
        .unwrap()
    };
    assert_eq!(run(false), Ok(()));
    let err = run(true).unwrap_err();
    assert!(err.contains("stacked over the container's root"), "{err}");
}

/// What a legitimate image does with links still works: `/etc/resolv.conf` as a dangling
/// relative link (as systemd-resolved images have it) gets its target made inside the
/// container, and the file is mounted there.
#[test]
fn hostile_dangling_resolv_conf_link_is_followed_inside() {
    let Some(env) = Env::new() else { return };
    let img = env.image(
        &common::unique("resolv-link"),
        &[Edit::Link(
            "/etc/resolv.conf",
            "../run/systemd/resolve/stub-resolv.conf",
        )],
        None,
    );
    let name = common::unique("hd");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
        &img,
    ]);
    assert_eq!(
        env.exec(&name, "readlink /etc/resolv.conf"),
        "../run/systemd/resolve/stub-resolv.conf"
    );
    let mounts = env.exec(&name, "cat /proc/self/mountinfo");
    assert!(
        mounts.contains(" /run/systemd/resolve/stub-resolv.conf "),
        "{mounts}"
    );
    env.exec(&name, "cat /etc/resolv.conf");
    env.ok(&["container", "rm", "--force", &name]);
}
