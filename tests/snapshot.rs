//! `export` and `commit` (compose and `container` verbs) on real containers: the tar is the
//! file system the container sees (its changes, deletions applied, no volumes), links are
//! stored as links, owners and modes kept; a hostile image's links pull nothing of the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{busybox_image_with, eventually, fails, ok, require_root, run, tug, unique};

/// One entry of a tar: kind, owner, mode, link target, contents.
#[derive(Debug, Clone)]
struct Entry {
    kind: tar::EntryType,
    uid: u64,
    gid: u64,
    mode: u32,
    link: Option<String>,
    data: Vec<u8>,
    rdev: (u32, u32),
}

fn read_tar(bytes: &[u8]) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let h = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.insert(
            path.trim_end_matches('/').to_string(),
            Entry {
                kind: h.entry_type(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mode: h.mode().unwrap(),
                link: e.link_name().unwrap().map(|l| l.display().to_string()),
                data,
                rdev: (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                ),
            },
        );
    }
    out
}

/// A compose project in its own state root, taken down (`down -v`) when dropped.
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
        Project {
            dir,
            root,
            name: unique("snap"),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = tug(self.root.path());
        c.current_dir(self.dir.path()).args(["-p", &self.name]);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.cmd().args(args))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.cmd().args(["down", "-v", "-t", "0"]).output();
    }
}

/// The test image: busybox plus an image file the container deletes, a link to `/`, a
/// file owned by 1234:5678, a set-uid file, two hard-linked names, a device node.
fn image(root: &Path, name: &str) {
    busybox_image_with(root, name, &[], |d| {
        use std::os::unix::fs::{PermissionsExt, symlink};
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/motd"), "deleted by the container\n").unwrap();
        symlink("/", d.join("hostroot")).unwrap();
        std::fs::write(d.join("owned"), "owned\n").unwrap();
        std::os::unix::fs::chown(d.join("owned"), Some(1234), Some(5678)).unwrap();
        std::fs::write(d.join("suid"), "x").unwrap();
        std::fs::set_permissions(d.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::write(d.join("one"), "linked\n").unwrap();
        std::fs::hard_link(d.join("one"), d.join("two")).unwrap();
        nix::sys::stat::mknod(
            &d.join("null2"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        [
            "etc/motd", "hostroot", "owned", "suid", "one", "two", "null2",
        ]
        .iter()
        .map(ToString::to_string)
        .collect()
    });
}

const STACK: &str = r#"
services:
  app:
    image: exp:1
    network_mode: none
    command: ["sh", "-c", "rm /etc/motd && echo new > /new && chown 4321:4322 /new && echo v > /data/in-volume && echo t > /scratch/in-tmpfs && touch /ready && exec sleep 1000"]
    volumes: [data:/data]
    tmpfs: [/scratch]
volumes:
  data:
"#;

fn check_export(t: &BTreeMap<String, Entry>) {
    let names: Vec<&String> = t.keys().collect();
    // Deleted image file absent, new file present with its owner, image files kept.
    assert!(!t.contains_key("etc/motd"), "{names:?}");
    assert!(t.contains_key("etc/passwd"), "{names:?}");
    let new = &t["new"];
    assert_eq!(
        (new.data.as_slice(), new.uid, new.gid),
        (&b"new\n"[..], 4321, 4322)
    );
    let owned = &t["owned"];
    assert_eq!((owned.uid, owned.gid), (1234, 5678));
    assert_eq!(t["suid"].mode & 0o7777, 0o4755);
    // A link to / is a link; nothing under it was followed.
    let l = &t["hostroot"];
    assert_eq!(
        (l.kind, l.link.as_deref()),
        (tar::EntryType::Symlink, Some("/"))
    );
    assert!(
        !names.iter().any(|n| n.starts_with("hostroot/")),
        "{names:?}"
    );
    // Hard links stay links; device nodes stay devices.
    let (one, two) = (&t["one"], &t["two"]);
    assert!(
        (one.kind == tar::EntryType::Link && one.link.as_deref() == Some("two"))
            || (two.kind == tar::EntryType::Link && two.link.as_deref() == Some("one")),
        "{one:?} {two:?}"
    );
    let dev = &t["null2"];
    assert_eq!((dev.kind, dev.rdev), (tar::EntryType::Char, (1, 3)));
    // Volumes and tmpfs: their mountpoints only.
    assert_eq!(t["data"].kind, tar::EntryType::Directory);
    assert!(!t.contains_key("data/in-volume"), "{names:?}");
    assert!(!t.contains_key("scratch/in-tmpfs"), "{names:?}");
    // No whiteout or overlay bookkeeping leaks into the archive.
    assert!(!names.iter().any(|n| n.contains(".wh.")), "{names:?}");
}

#[test]
fn export_is_the_file_system_the_container_sees() {
    if !require_root() {
        return;
    }
    let p = Project::new(STACK);
    image(p.root.path(), "exp:1");
    p.ok(&["up", "-d"]);
    eventually("the container's changes", Duration::from_secs(20), || {
        run(p.cmd().args(["exec", "app", "test", "-f", "/ready"]))
            .status
            .success()
    });

    // To a file, running.
    p.ok(&["export", "app", "-o", "running.tar"]);
    check_export(&read_tar(&std::fs::read(p.path("running.tar")).unwrap()));
    // To stdout (not a terminal), running.
    let out = run(p.cmd().args(["export", "--index", "1", "app"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_export(&read_tar(&out.stdout));

    // Stopped: the same tree, and `container export` gives it too.
    p.ok(&["stop", "-t", "0"]);
    p.ok(&["export", "app", "--output", "stopped.tar"]);
    check_export(&read_tar(&std::fs::read(p.path("stopped.tar")).unwrap()));
    let name = format!("{}-app-1", p.name);
    ok(tug(p.root.path()).current_dir(p.dir.path()).args([
        "container",
        "export",
        "-o",
        "c.tar",
        &name,
    ]));
    check_export(&read_tar(&std::fs::read(p.path("c.tar")).unwrap()));

    // No such replica: an error, and no file left behind.
    let err = fails(
        p.cmd()
            .args(["export", "--index", "2", "app", "-o", "none.tar"]),
    );
    assert!(err.contains("index 2"), "{err}");
    assert!(!p.path("none.tar").exists());
}

#[test]
fn export_of_a_hostile_image_reads_nothing_of_the_host() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // Links out of the tree, at the top and as directories on the way.
    busybox_image_with(root.path(), "hostile:1", &[], |d| {
        use std::os::unix::fs::symlink;
        symlink("/etc", d.join("hostetc")).unwrap();
        symlink("../../../../../../etc/shadow", d.join("shadow")).unwrap();
        std::fs::create_dir(d.join("deep")).unwrap();
        symlink("/proc/self/root/etc", d.join("deep/etc")).unwrap();
        ["hostetc", "shadow", "deep"]
            .iter()
            .map(ToString::to_string)
            .collect()
    });
    let name = unique("hostile");
    // Created, never started: exported from its layers.
    ok(tug(root.path()).args(["container", "create", "--name", &name, "hostile:1"]));
    let out = run(tug(root.path()).args(["container", "export", &name]));
    let _ = tug(root.path())
        .args(["container", "rm", "-f", &name])
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = read_tar(&out.stdout);
    for (n, target) in [
        ("hostetc", "/etc"),
        ("shadow", "../../../../../../etc/shadow"),
        ("deep/etc", "/proc/self/root/etc"),
    ] {
        assert_eq!(t[n].kind, tar::EntryType::Symlink, "{n}");
        assert_eq!(t[n].link.as_deref(), Some(target), "{n}");
    }
    assert!(
        !t.keys()
            .any(|k| k.starts_with("hostetc/") || k.starts_with("deep/etc/")),
        "{:?}",
        t.keys().collect::<Vec<_>>()
    );
    // Every regular file's bytes are the image's: none holds the host's /etc/hostname.
    let host = std::fs::read("/etc/hostname").unwrap_or_default();
    if !host.is_empty() {
        assert!(
            !t.iter().any(|(k, e)| e.kind == tar::EntryType::Regular
                && e.data == host
                && k != "etc/hostname"),
            "a host file's contents are in the tar"
        );
    }
}

#[test]
fn commit_makes_an_image_of_the_container_s_changes() {
    if !require_root() {
        return;
    }
    let p = Project::new(STACK);
    image(p.root.path(), "exp:1");
    p.ok(&["up", "-d"]);
    eventually("the container's changes", Duration::from_secs(20), || {
        run(p.cmd().args(["exec", "app", "test", "-f", "/ready"]))
            .status
            .success()
    });
    p.ok(&[
        "commit",
        "-a",
        "Ann Author <ann@example.com>",
        "-m",
        "a message",
        "-c",
        r#"CMD ["cat", "/new"]"#,
        "--change",
        "ENV FROM_CHANGE=yes",
        "app",
        "snap:1",
    ]);
    // Paused during the commit only: it runs on.
    p.ok(&["exec", "app", "true"]);

    let run_new = |args: &[&str]| {
        ok(tug(p.root.path())
            .args(["container", "run", "--rm"])
            .args(args))
    };
    // CMD from --change; the new file, its owner, the deletion carried as a whiteout.
    assert_eq!(run_new(&["snap:1"]), "new\n");
    assert_eq!(
        run_new(&[
            "snap:1",
            "sh",
            "-c",
            "stat -c %u:%g /new; test -e /etc/motd && echo motd; test -e /data/in-volume && echo vol; test -e /scratch/in-tmpfs && echo tmpfs; echo $FROM_CHANGE; readlink /hostroot"
        ]),
        "4321:4322\nyes\n/\n"
    );
    // The layer has the whiteout; the history the author and message.
    let inspect = ok(tug(p.root.path()).args(["image", "inspect", "snap:1"]));
    assert!(
        inspect.contains("Ann Author <ann@example.com>"),
        "{inspect}"
    );
    assert!(inspect.contains("a message"), "{inspect}");
    ok(tug(p.root.path())
        .current_dir(p.dir.path())
        .args(["image", "save", "-o", "snap.tar", "snap:1"]));
    let saved = std::fs::read(p.path("snap.tar")).unwrap();
    let mut found = false;
    let mut outer = tar::Archive::new(saved.as_slice());
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        let mut dec = Vec::new();
        let layer = if bytes.starts_with(&[0x1f, 0x8b]) {
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(bytes.as_slice()),
                &mut dec,
            )
            .unwrap();
            dec.as_slice()
        } else {
            bytes.as_slice()
        };
        let mut inner = tar::Archive::new(layer);
        if let Ok(entries) = inner.entries() {
            for x in entries.flatten() {
                if x.path().is_ok_and(|p| p.ends_with("etc/.wh.motd")) {
                    found = true;
                }
            }
        }
    }
    assert!(found, "no etc/.wh.motd whiteout in the committed layer");

    // A stopped container commits too; a bad --change is refused before anything is made.
    p.ok(&["stop", "-t", "0"]);
    let err = fails(
        p.cmd()
            .args(["commit", "-c", "RUN rm -rf /", "app", "snap:2"]),
    );
    assert!(err.contains("RUN"), "{err}");
    let name = format!("{}-app-1", p.name);
    let id = ok(tug(p.root.path()).args(["container", "commit", "--pause=false", &name, "snap:3"]));
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(run_new(&["snap:3", "cat", "/new"]), "new\n");
}
