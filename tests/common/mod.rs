//! Shared test helpers: the `tug` binary, temp state roots, root checks, test images.

#![allow(dead_code)]

pub mod project;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `tug` binary under test.
pub fn tug_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tug"))
}

/// This process's capability bounding set as `/proc/self/status` shows it (`CapBnd`): every
/// capability tug, started from here, may grant (a privileged container's, a privileged
/// exec's).
pub fn bounding_set() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap()
}

/// A `tug` command with `--root` pointing at `root` and a clean compose environment.
pub fn tug(root: &Path) -> Command {
    let mut c = Command::new(tug_bin());
    c.env("TUG_ROOT", root)
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("COMPOSE_PROFILES")
        .env_remove("COMPOSE_ENV_FILES")
        .env("NO_COLOR", "1");
    c
}

/// Runs a command and returns its output, panicking with both streams if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
#[track_caller]
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns stderr.
#[track_caller]
pub fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// True when tests that need root (namespaces, mounts, bridges) can run. Under `CI=true` a
/// test that needs root fails instead of skipping.
pub fn require_root() -> bool {
    let is_root = nix_is_root();
    if !is_root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs root and CI=true: it must not be skipped"
        );
        eprintln!("skipping: needs root");
    }
    is_root
}

/// The Debian package of each tool the tests run (README lists them too).
pub const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    ("losetup", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("script", "bsdutils"),
    ("socat", "socat"),
    ("timeout", "coreutils"),
    ("openssl", "openssl"),
    ("htpasswd", "apache2-utils"),
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("mmdebstrap", "mmdebstrap"),
    ("podman", "podman"),
    ("runc", "runc"),
    ("python3", "python3"),
    ("busybox", "busybox-static"),
    ("curl", "curl"),
];

/// Whether `tool` is an executable on root's search path.
pub fn have_tool(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .filter(|d| !d.is_empty())
        .any(|d| {
            std::fs::metadata(Path::new(d).join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// True when every tool in `tools` is installed. A test calls this up front, before it
/// starts anything: a missing tool is named with its Debian package (instead of a failure
/// deep inside the test, or a timeout). Under `CI=true` a missing tool fails the test, never
/// skips it; elsewhere the test is skipped with that message.
pub fn require_tools(tools: &[&str]) -> bool {
    require_tools_in(tools, std::env::var("CI").as_deref() == Ok("true"))
}

/// [`require_tools`] with the CI switch given.
pub fn require_tools_in(tools: &[&str], ci: bool) -> bool {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| !have_tool(t))
        .map(|t| {
            let pkg = TOOL_PACKAGES
                .iter()
                .find(|(tool, _)| tool == t)
                .map_or("?", |(_, p)| p);
            format!("{t} (Debian package {pkg})")
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "this test needs {}; install it (.ci/run installs every tool the tests use)",
        missing.join(", ")
    );
    assert!(!ci, "{msg}");
    eprintln!("skipping: {msg}");
    false
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A unique, short name for host-wide objects (projects, bridges): prefix + pid + counter.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Builds (once per process) a rootfs tarball from Debian's busybox-static: `/bin/busybox`
/// plus one link per applet, `/etc/passwd`, `/etc/group`, `/tmp`. Returns the tar path.
pub fn busybox_rootfs_tar() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    use std::sync::OnceLock;
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let busybox = Path::new("/bin/busybox");
        let meta = std::fs::metadata(busybox)
            .expect("/bin/busybox is missing: install Debian's busybox-static (.ci/run does)");
        // One tarball per busybox binary, shared by every test process (nextest runs each
        // test in its own process) under cargo's per-target scratch dir, never in /tmp.
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let tar = cache.join(format!(
            "busybox-rootfs-v1-{}-{}.tar",
            meta.size(),
            meta.mtime()
        ));
        if tar.exists() {
            return tar;
        }
        let dir = tempfile::Builder::new()
            .prefix("busybox-build-")
            .tempdir_in(cache)
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        let list = ok(Command::new(busybox).arg("--list-full"));
        for applet in list.lines().filter(|l| !l.is_empty() && *l != "bin/busybox") {
            let depth = applet.matches('/').count();
            let target = format!("{}bin/busybox", "../".repeat(depth));
            let _ = std::os::unix::fs::symlink(target, rootfs.join(applet));
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n",
        )
        .unwrap();
        let built = dir.path().join("busybox-rootfs.tar");
        ok(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("--numeric-owner")
            .arg("--mtime=@0")
            .arg("--sort=name")
            .arg("-cf")
            .arg(&built)
            .arg("."));
        // Atomic publish: a concurrent builder's rename replaces ours with equal content.
        std::fs::rename(&built, &tar).unwrap();
        tar
    })
    .clone()
}

/// Imports `busybox_rootfs_tar()` into the state root `root` as `busybox:latest` with
/// `CMD ["sh"]` (as `tug image import` does) and returns the image reference to use.
pub fn busybox_image(root: &Path) -> String {
    ok(tug(root)
        .args(["image", "import", "--change", r#"CMD ["sh"]"#])
        .arg(busybox_rootfs_tar())
        .arg("busybox:latest"));
    "busybox:latest".to_string()
}

/// Polls `f` every 100 ms until it returns true; panics naming `what` after `timeout`.
pub fn eventually(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Processes other than this one whose command line names `root` (supervisors, DNS servers,
/// port proxies of that state root), as `PID: COMMAND LINE`.
pub fn processes_of(root: &Path) -> Vec<String> {
    let r = root.display().to_string();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&r) {
            out.push(format!("{pid}: {cmd}"));
        }
    }
    out
}

/// A test's own cgroup directory: on drop, kills what is left in it and removes it.
pub struct CgroupDir(pub PathBuf);

impl Drop for CgroupDir {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for p in pids.lines() {
                let _ = Command::new("kill").args(["-9", p]).status();
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The cgroup2 tree of this machine: `/sys/fs/cgroup` on pure v2, `/sys/fs/cgroup/unified`
/// on a hybrid one.
pub fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| tug::engine::runtime::bpf::is_cgroup2(p))
}

/// Imports the busybox rootfs with extra entries as `name`: `add` fills a scratch directory
/// and returns the paths (relative to it) to append to the tarball; `changes` are
/// `image import --change` lines (`VOLUME /data`). `CMD ["sh"]` is always set.
pub fn busybox_image_with(
    root: &Path,
    name: &str,
    changes: &[&str],
    add: impl FnOnce(&Path) -> Vec<String>,
) {
    let scratch = tempfile::tempdir().unwrap();
    let tar = scratch.path().join("image.tar");
    std::fs::copy(busybox_rootfs_tar(), &tar).unwrap();
    let dir = scratch.path().join("add");
    std::fs::create_dir(&dir).unwrap();
    let entries = add(&dir);
    if !entries.is_empty() {
        ok(Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("--numeric-owner")
            .arg("-rf")
            .arg(&tar)
            .args(entries));
    }
    let mut cmd = tug(root);
    cmd.args(["image", "import", "--change", r#"CMD ["sh"]"#]);
    for c in changes {
        cmd.args(["--change", c]);
    }
    ok(cmd.arg(&tar).arg(name));
}
