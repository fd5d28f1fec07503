//! A full disk (issue 14): a state root on a small loop-mounted ext4 file system, filled up.
//! Every command that fails for want of space fails with the error and leaves no temp file or
//! half-made object behind; once space is back, everything works again.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{busybox_image, ok, require_root, require_tools, run, tug, unique};

/// A loop device with an ext4 file system mounted on a temp dir; unmounted and detached on
/// drop, whatever happened.
struct LoopFs {
    dir: tempfile::TempDir,
    device: Option<String>,
    mounted: bool,
}

impl LoopFs {
    fn new(mib: u64) -> LoopFs {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = LoopFs {
            dir,
            device: None,
            mounted: false,
        };
        let img = fs.dir.path().join("disk.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib * 1024 * 1024)
            .unwrap();
        // No blocks reserved for root: tug runs as root and would write into them.
        ok(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img));
        let dev = ok(Command::new("losetup").args(["--find", "--show"]).arg(&img));
        fs.device = Some(dev.trim().to_string());
        std::fs::create_dir(fs.mountpoint()).unwrap();
        ok(Command::new("mount").arg(dev.trim()).arg(fs.mountpoint()));
        fs.mounted = true;
        fs
    }

    fn mountpoint(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let out = Command::new("umount").arg(self.mountpoint()).output();
            if !out.is_ok_and(|o| o.status.success()) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(self.mountpoint())
                    .output();
            }
        }
        if let Some(d) = &self.device {
            let _ = Command::new("losetup").args(["-d", d]).output();
        }
    }
}

/// Takes down what a test made in a state root: its project, its networks, then any process
/// still running from the root (supervisors, DNS servers, port proxies).
struct Teardown {
    root: PathBuf,
    dir: PathBuf,
    project: String,
    networks: Vec<String>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = run(tug(&self.root).current_dir(&self.dir).args([
            "-p",
            &self.project,
            "down",
            "-v",
            "-t",
            "0",
        ]));
        for n in &self.networks {
            let _ = run(tug(&self.root).args(["network", "rm", "-f", n]));
        }
        let ids = run(tug(&self.root).args(["container", "ls", "-aq"]));
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = run(tug(&self.root).args(["container", "rm", "-f", id]));
        }
        for line in crate::common::processes_of(&self.root) {
            if let Some(pid) = line.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Fills the file system: one file takes every free block, then small probes (a directory
/// and a 4 KiB file, as a `volume create` makes) take what is left until one fails. Each
/// step is preceded by a `syncfs`: ext4 makes blocks freed by earlier commands (files
/// replaced by renames) usable only once the journal commits them, and gives back blocks
/// reserved for delayed allocation after writeback; either could free room moments after
/// `dd` stopped, and a `volume create` then succeeded on the "full" disk.
fn fill(dir: &Path) -> PathBuf {
    let syncfs = || {
        let _ = Command::new("sync").arg("-f").arg(dir).output();
    };
    let f = dir.join("filler");
    syncfs();
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none", "conv=fsync"])
        .arg(format!("of={}", f.display()))
        .output();
    for round in 0..32 {
        syncfs();
        let _ = Command::new("dd")
            .args([
                "if=/dev/zero",
                "bs=4k",
                "status=none",
                "oflag=append",
                "conv=notrunc,fsync",
            ])
            .arg(format!("of={}", f.display()))
            .output();
        syncfs();
        // Full only when a probe cannot be made; a probe that could stays (it takes room).
        let probe = dir.join(format!("probe-{round}"));
        let made = std::fs::create_dir(&probe).is_ok()
            && std::fs::File::create(probe.join("f")).is_ok_and(|mut file| {
                use std::io::Write as _;
                file.write_all(&[0u8; 4096]).is_ok() && file.sync_all().is_ok()
            });
        if !made {
            break;
        }
    }
    f
}

/// Temp files and half-made objects anywhere under `root`.
fn debris(root: &Path) -> Vec<String> {
    let out = ok(Command::new("find").arg(root).args([
        "-name",
        "*.tmp",
        "-o",
        "-name",
        ".tmp-*",
        "-o",
        "-name",
        ".creating-*",
        "-o",
        "-name",
        ".removing-*",
        "-o",
        "-name",
        ".trash-*",
    ]));
    out.lines()
        .filter(|l| !l.contains("/images/.ingest"))
        .map(str::to_string)
        .collect()
}

#[test]
fn full_disk_failing_commands_leave_no_temp_files_and_recover() {
    if !require_root() || !require_tools(&["losetup", "mkfs.ext4"]) {
        return;
    }
    let fs = LoopFs::new(48);
    let root = fs.mountpoint().join("root");
    std::fs::create_dir(&root).unwrap();
    busybox_image(&root);
    let dir = tempfile::tempdir().unwrap();
    let name = unique("full");
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  web:\n    image: busybox:latest\n    init: true\n    command: [\"sleep\", \"1000\"]\n    volumes: [data:/data]\nvolumes:\n  data:\n",
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let mut c = tug(&root);
        c.current_dir(dir.path())
            .args(["-p", &name, "--progress", "plain"])
            .args(args);
        c
    };
    // Whatever goes wrong, nothing of this root outlives the test (its DNS servers and
    // supervisors would keep the file system busy).
    let _teardown = Teardown {
        root: root.clone(),
        dir: dir.path().to_path_buf(),
        project: name.clone(),
        networks: vec![format!("{name}n"), format!("{name}m")],
    };
    // A network made while there is room, so the full disk hits the other writes too; the
    // stores' directories exist (a listing on a full disk only reads).
    ok(tug(&root).args(["network", "create", &format!("{name}n")]));
    ok(&mut compose(&["ps", "-a"]));
    let filler = fill(&fs.mountpoint());
    let with = |args: &[String]| {
        let mut c = tug(&root);
        c.args(args);
        c
    };
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<String>>();
    for (what, mut cmd) in [
        ("volume create", with(&s(&["volume", "create", "v1"]))),
        (
            "network create",
            with(&s(&["network", "create", &format!("{name}m")])),
        ),
        ("up", compose(&["up", "-d"])),
        (
            "container run",
            with(&s(&[
                "container",
                "run",
                "-d",
                "--network",
                &format!("{name}n"),
                "busybox",
                "sleep",
                "100",
            ])),
        ),
    ] {
        let out = run(&mut cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} succeeded on a full disk");
        assert!(
            err.contains("No space left") || err.contains("os error 28"),
            "{what}: the error says why: {err}"
        );
        let left = debris(&root);
        assert!(left.is_empty(), "{what} left behind: {left:?}");
    }
    // Listings still work on a full disk.
    ok(&mut compose(&["ps", "-a"]));
    ok(tug(&root).args(["volume", "ls"]));
    // Room again: the same commands succeed, and the project comes down cleanly.
    std::fs::remove_file(&filler).unwrap();
    ok(&mut compose(&["up", "-d", "--wait"]));
    ok(tug(&root).args(["volume", "create", "v1"]));
    ok(&mut compose(&["down", "-v", "-t", "1"]));
    ok(tug(&root).args(["volume", "rm", "v1"]));
    ok(tug(&root).args(["network", "rm", &format!("{name}n")]));
    let left: Vec<_> = std::fs::read_dir(root.join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
