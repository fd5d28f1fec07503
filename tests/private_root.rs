//! The state root is private to root: another local user (here `nobody`, uid 65534, through
//! `setpriv`, so no host user is created) cannot list the root, read a container's record
//! (its environment holds a password), its log or a copy of a secret, run a setuid binary a
//! container left in its upper layer, or write into an image layer through a directory that
//! is 1777 inside the image. A root made with an older tug's modes (0755/0644) is tightened
//! by the next command, which says so once. Every check has a control that passes first, so
//! a refusal is the state root's doing and not the test's.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{busybox_image, ok, require_root, run, tug, unique};

const PASSWORD: &str = "hunter2-private-root";

const COMPOSE: &str = r#"
services:
  app:
    image: busybox:latest
    network_mode: none
    environment:
      DB_PASSWORD: hunter2-private-root
    secrets: [pw]
    command: ["sh", "-c", "echo password=$$DB_PASSWORD; cp /bin/busybox /suid-bb; chmod 4755 /suid-bb"]
  reader:
    image: busybox:latest
    network_mode: none
    user: "65534:65534"
    secrets: [pw]
    command: ["sh", "-c", "echo secret=$$(cat /run/secrets/pw); cat /etc/hosts > /dev/null && echo hosts-ok"]
secrets:
  pw:
    file: ./pw.txt
"#;

/// Runs `args` as uid/gid 65534 with no supplementary groups and no capabilities. The
/// command is started by `env`, a process that is `nobody` from its start: setpriv's own
/// exec of its argument still reaches a path its new user cannot (measured here).
fn as_nobody(args: &[&str]) -> Output {
    run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
            "env",
        ])
        .args(args))
}

#[track_caller]
fn nobody_can(args: &[&str]) -> String {
    let o = as_nobody(args);
    assert!(
        o.status.success(),
        "control: nobody should be able to run {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn nobody_cannot(args: &[&str]) {
    let o = as_nobody(args);
    assert!(
        !o.status.success(),
        "nobody could run {args:?}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Permission denied"), "{args:?}: {err}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Files under `dir` (not following symlinks) whose path ends with `suffix`.
fn find(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

/// A project directory and a state root inside a temp dir every user may traverse, so that
/// only the state root's own modes stand between `nobody` and its files.
struct Setup {
    dir: tempfile::TempDir,
    name: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("tug-private-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("compose.yaml"), COMPOSE).unwrap();
        std::fs::write(dir.path().join("pw.txt"), "s3cret-file\n").unwrap();
        // A world-readable file next to the root: the control for every refusal below.
        std::fs::write(dir.path().join("control.txt"), "readable\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("control.txt"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Setup {
            dir,
            name: unique("tpr"),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn cmd(&self) -> Command {
        let mut c = tug(&self.root());
        c.current_dir(self.dir.path())
            .args(["-p", &self.name, "--progress", "plain"]);
        c
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = run(self.cmd().args(["down", "-v", "-t", "1"]));
    }
}

/// Imports a one-layer image whose `wdir/` is 1777, as a hostile image could have.
fn import_world_writable_layer(root: &Path, dir: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o1777);
    h.set_size(0);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, "wdir/", std::io::empty()).unwrap();
    let tar = dir.join("wdir.tar");
    std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
    ok(tug(root)
        .args(["image", "import"])
        .arg(&tar)
        .arg("tug-test-wdir:latest"));
}

#[test]
fn private_root_keeps_other_users_out() {
    if !require_root() {
        return;
    }
    let st = Setup::new();
    let root = st.root();
    busybox_image(&root);
    import_world_writable_layer(&root, st.dir.path());
    let out = ok(st.cmd().args(["up"]));
    // The services work as before: the secret is readable inside by a non-root user, the
    // password reached the process.
    assert!(out.contains("secret=s3cret-file"), "{out}");
    assert!(out.contains("hosts-ok"), "{out}");
    assert!(out.contains(&format!("password={PASSWORD}")), "{out}");

    // What there is to protect, seen as root.
    let record = find(&root.join("containers"), "/container.json")
        .into_iter()
        .find(|p| std::fs::read_to_string(p).unwrap().contains(PASSWORD))
        .expect("a container record holds the password");
    let log = record.with_file_name("container.log");
    assert!(std::fs::read_to_string(&log).unwrap().contains(PASSWORD));
    let suid = record.with_file_name("upper").join("suid-bb");
    let m = std::fs::metadata(&suid).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid()),
        (0o4755, 0),
        "{}",
        suid.display()
    );
    let secret = find(&root.join("projects"), "/secret/pw")
        .pop()
        .expect("a copy of the secret");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret-file\n");
    assert_eq!(std::fs::metadata(&secret).unwrap().mode() & 0o777, 0o444);
    let wdir = find(&root.join("layers"), "/wdir")
        .pop()
        .expect("the layer's wdir");
    assert_eq!(std::fs::metadata(&wdir).unwrap().mode() & 0o7777, 0o1777);

    // Controls: nobody reads and lists what is open to it next to the root.
    nobody_can(&["cat", s(&st.dir.path().join("control.txt"))]);
    nobody_can(&["ls", s(st.dir.path())]);

    // Refused, each one.
    nobody_cannot(&["ls", s(&root)]);
    nobody_cannot(&["cat", s(&record)]);
    nobody_cannot(&["cat", s(&log)]);
    nobody_cannot(&["cat", s(&secret)]);
    nobody_cannot(&[s(&suid), "id", "-u"]);
    nobody_cannot(&["touch", s(&wdir.join("planted"))]);
    assert!(!wdir.join("planted").exists());

    // The modes themselves.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&root), 0o700);
    for d in ["containers", "layers", "images", "projects", "volumes"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}");
    }
    assert_eq!(mode(&record), 0o600);
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(record.parent().unwrap()), 0o700);
    assert_eq!(mode(&root.join("images/index.json")), 0o600);
}

#[test]
fn private_root_made_by_an_older_tug_is_tightened_once() {
    if !require_root() {
        return;
    }
    let st = Setup::new();
    let root = st.root();
    busybox_image(&root);
    ok(st.cmd().args(["up"]));
    let record = find(&root.join("containers"), "/container.json")
        .into_iter()
        .find(|p| std::fs::read_to_string(p).unwrap().contains(PASSWORD))
        .expect("a container record holds the password");
    let secret = find(&root.join("projects"), "/secret/pw").pop().unwrap();
    // What an older tug left: directories 0755, files 0644, no marker.
    for p in find(&root, "") {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() && !p.starts_with(root.join("layers")) {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else if m.is_file() && p != secret && !p.starts_with(root.join("layers")) {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(root.join(".private-v1")).unwrap();
    // With those modes the password is anyone's (the attack this closes).
    let leaked = nobody_can(&["cat", s(&record)]);
    assert!(leaked.contains(PASSWORD));
    nobody_can(&["ls", s(&root)]);

    // The next command tightens the root and says so.
    let o = run(tug(&root).args(["container", "ls", "-a"]));
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("made the state root") && err.contains("private"),
        "{err}"
    );
    nobody_cannot(&["cat", s(&record)]);
    nobody_cannot(&["ls", s(&root)]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&record), 0o600);
    assert_eq!(mode(record.parent().unwrap()), 0o700);
    // A secret's copy keeps the mode compose gave it; it is private through its parents.
    assert_eq!(mode(&secret), 0o444);
    nobody_cannot(&["cat", s(&secret)]);
    // Once: the next command says nothing and the stack still works.
    let o = run(tug(&root).args(["container", "ls", "-a"]));
    assert!(String::from_utf8_lossy(&o.stderr).trim().is_empty());
    let out = ok(st.cmd().args(["up", "--force-recreate"]));
    assert!(out.contains("secret=s3cret-file"), "{out}");
}

/// Removes a network of the test even when it fails.
struct NetGuard(PathBuf, String);

impl Drop for NetGuard {
    fn drop(&mut self) {
        let _ = run(tug(&self.0).args(["network", "rm", &self.1]));
    }
}

#[test]
fn private_root_run_dir_is_private() {
    if !require_root() {
        return;
    }
    // The host-wide run directory (/run/tug) is made private by every command that takes the
    // host lock, an older tug's 0755 one included (`engine::private` unit tests change a
    // 0755 one; here the real one is checked, never loosened).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let g = NetGuard(root.clone(), unique("tprn"));
    ok(tug(&root).args(["network", "create", &g.1]));
    let m = std::fs::metadata("/run/tug").unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o700, 0));
    nobody_cannot(&["ls", "/run/tug"]);
}
