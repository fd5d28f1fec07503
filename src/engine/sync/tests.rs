//! The sync on a plain directory standing in for a container's root (no container needed):
//! what lands where, what is left alone, and that links made by the "container" never lead
//! a write out of its root.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use super::*;

struct Fixture {
    _t: tempfile::TempDir,
    host: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    for d in [&host, &root, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    Fixture {
        host,
        root,
        outside,
        _t: t,
    }
}

fn me() -> Owner {
    Owner {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    }
}

fn container(f: &Fixture) -> Container {
    Container::from_root(Root::open(&f.root).unwrap(), me(), "test")
}

fn rule(f: &Fixture, target: &str) -> Rule {
    Rule {
        source: f.host.clone(),
        target: PathBuf::from(target),
        ..Rule::default()
    }
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn sync_rule_copies_the_tree_and_then_only_what_differs() {
    let f = fixture();
    std::fs::create_dir_all(f.host.join("src/deep")).unwrap();
    std::fs::write(f.host.join("src/deep/a.txt"), "a").unwrap();
    std::fs::write(f.host.join("main.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        f.host.join("main.sh"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("src/deep/a.txt", f.host.join("link")).unwrap();
    std::fs::create_dir_all(f.host.join(".git")).unwrap();
    std::fs::write(f.host.join(".git/HEAD"), "ref").unwrap();
    std::fs::write(f.host.join(".main.sh.swp"), "x").unwrap();
    std::fs::create_dir_all(f.host.join("node_modules/x")).unwrap();
    std::fs::write(f.host.join("node_modules/x/i.js"), "x").unwrap();
    let c = container(&f);
    let mut r = rule(&f, "/app");
    r.ignore = vec!["node_modules".into()];
    let filter = r.filter().unwrap();
    let rep = c.sync_rule(&r, &filter);
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(read(&f.root.join("app/src/deep/a.txt")), "a");
    assert_eq!(
        std::fs::read_link(f.root.join("app/link")).unwrap(),
        Path::new("src/deep/a.txt")
    );
    // Set-ID bits are dropped; the rest of the mode is kept.
    let md = std::fs::metadata(f.root.join("app/main.sh")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o755);
    assert_eq!(
        md.mtime(),
        std::fs::metadata(f.host.join("main.sh")).unwrap().mtime()
    );
    assert!(!f.root.join("app/.git").exists());
    assert!(!f.root.join("app/.main.sh.swp").exists());
    assert!(!f.root.join("app/node_modules").exists());
    assert_eq!(rep.written, 3);
    // Equal content is not written again, whatever the times say; a changed file is.
    std::fs::write(f.host.join("src/deep/a.txt"), "b").unwrap();
    let ino = std::fs::metadata(f.root.join("app/main.sh")).unwrap().ino();
    let rep = c.sync_rule(&r, &filter);
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!((rep.written, rep.unchanged), (1, 2));
    assert_eq!(read(&f.root.join("app/src/deep/a.txt")), "b");
    assert_eq!(
        std::fs::metadata(f.root.join("app/main.sh")).unwrap().ino(),
        ino
    );
}

#[test]
fn sync_paths_mirror_creates_changes_renames_and_deletes() {
    let f = fixture();
    let c = container(&f);
    let r = rule(&f, "/srv/app");
    let filter = r.filter().unwrap();
    std::fs::write(f.host.join("a.txt"), "one").unwrap();
    let rep = c.sync_paths(&r, &filter, &set(&["a.txt"]), &set(&[]));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(read(&f.root.join("srv/app/a.txt")), "one");
    // Rename: the old name is gone on the host, the new one is there.
    std::fs::rename(f.host.join("a.txt"), f.host.join("b.txt")).unwrap();
    let rep = c.sync_paths(&r, &filter, &set(&["a.txt", "b.txt"]), &set(&[]));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(!f.root.join("srv/app/a.txt").exists());
    assert_eq!(read(&f.root.join("srv/app/b.txt")), "one");
    assert_eq!(rep.removed, 1);
    // A directory made and filled before it was watched is copied whole.
    std::fs::create_dir_all(f.host.join("new/sub")).unwrap();
    std::fs::write(f.host.join("new/sub/x"), "x").unwrap();
    std::fs::write(f.host.join("new/y"), "y").unwrap();
    let rep = c.sync_paths(&r, &filter, &set(&["new", "new/y"]), &set(&["new"]));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(read(&f.root.join("srv/app/new/sub/x")), "x");
    assert_eq!(read(&f.root.join("srv/app/new/y")), "y");
    // A file replaced by a directory and a directory replaced by a file.
    std::fs::remove_file(f.host.join("b.txt")).unwrap();
    std::fs::create_dir(f.host.join("b.txt")).unwrap();
    std::fs::write(f.host.join("b.txt/inner"), "i").unwrap();
    std::fs::remove_dir_all(f.host.join("new")).unwrap();
    std::fs::write(f.host.join("new"), "now a file").unwrap();
    let rep = c.sync_paths(
        &r,
        &filter,
        &set(&["b.txt", "b.txt/inner", "new"]),
        &set(&["b.txt"]),
    );
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(read(&f.root.join("srv/app/b.txt/inner")), "i");
    assert_eq!(read(&f.root.join("srv/app/new")), "now a file");
    // Deleting a directory deletes it in the container.
    std::fs::remove_dir_all(f.host.join("b.txt")).unwrap();
    let rep = c.sync_paths(&r, &filter, &set(&["b.txt", "b.txt/inner"]), &set(&[]));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(!f.root.join("srv/app/b.txt").exists());
    // Nothing is left under a temporary name.
    let names: Vec<_> = std::fs::read_dir(f.root.join("srv/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".tug-sync")),
        "{names:?}"
    );
}

#[test]
fn sync_links_made_in_the_container_resolve_inside_it() {
    let f = fixture();
    let c = container(&f);
    // The "container" turned its targets into links to its root, up and out, and to a host
    // directory by absolute path.
    std::os::unix::fs::symlink("/", f.root.join("app")).unwrap();
    std::os::unix::fs::symlink("../../../../..", f.root.join("climb")).unwrap();
    std::os::unix::fs::symlink(&f.outside, f.root.join("abs")).unwrap();
    std::fs::write(f.host.join("pwned"), "x").unwrap();
    for target in ["/app", "/climb", "/abs"] {
        let r = rule(&f, target);
        let filter = r.filter().unwrap();
        let rep = c.sync_rule(&r, &filter);
        assert!(rep.errors.is_empty(), "{target}: {:?}", rep.errors);
        let rep = c.sync_paths(&r, &filter, &set(&["pwned"]), &set(&[]));
        assert!(rep.errors.is_empty(), "{target}: {:?}", rep.errors);
    }
    // Each landed inside the root: at its `/`, or at the host path's copy inside the root.
    assert!(f.root.join("pwned").is_file());
    assert!(
        f.root
            .join(f.outside.strip_prefix("/").unwrap())
            .join("pwned")
            .is_file()
    );
    assert_eq!(std::fs::read_dir(&f.outside).unwrap().count(), 0);
    // A removal through the same links stays inside too.
    std::fs::write(f.outside.join("keep"), "k").unwrap();
    let r = rule(&f, "/abs");
    std::fs::write(f.host.join("keep"), "k").unwrap();
    std::fs::remove_file(f.host.join("keep")).unwrap();
    let filter = r.filter().unwrap();
    let rep = c.sync_paths(&r, &filter, &set(&["keep"]), &set(&[]));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(f.outside.join("keep").exists());
}

#[test]
fn sync_replaces_special_files_without_opening_them() {
    let f = fixture();
    let c = container(&f);
    std::fs::create_dir_all(f.root.join("app")).unwrap();
    // A FIFO where a file goes: opening it for writing would block forever.
    nix::unistd::mkfifo(&f.root.join("app/f"), Mode::from_bits_truncate(0o644)).unwrap();
    std::os::unix::fs::symlink(f.outside.join("target"), f.root.join("app/l")).unwrap();
    std::fs::write(f.host.join("f"), "file").unwrap();
    std::fs::write(f.host.join("l"), "link replaced").unwrap();
    let r = rule(&f, "/app");
    let filter = r.filter().unwrap();
    let rep = c.sync_rule(&r, &filter);
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(read(&f.root.join("app/f")), "file");
    assert!(
        std::fs::symlink_metadata(f.root.join("app/l"))
            .unwrap()
            .is_file()
    );
    assert!(!f.outside.join("target").exists());
}

#[test]
fn sync_of_a_single_file_rule_and_errors_name_the_path() {
    let f = fixture();
    let c = container(&f);
    std::fs::write(f.host.join("package.json"), "{}").unwrap();
    let r = Rule {
        source: f.host.join("package.json"),
        target: PathBuf::from("/app/package.json"),
        ..Rule::default()
    };
    let filter = r.filter().unwrap();
    let rep = c.sync_paths(&r, &filter, &set(&[""]), &set(&[]));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(read(&f.root.join("app/package.json")), "{}");
    // A file in the way of a directory the sync needs: the error names the path.
    std::fs::write(f.root.join("blocked"), "").unwrap();
    std::fs::write(f.host.join("x"), "x").unwrap();
    let r = rule(&f, "/blocked/sub");
    let rep = c.sync_paths(&r, &r.filter().unwrap(), &set(&["x"]), &set(&[]));
    assert_eq!(rep.errors.len(), 1);
    assert!(
        rep.errors[0].to_string().starts_with("/blocked"),
        "{}",
        rep.errors[0]
    );
    let bad = rule(&f, "relative/path");
    assert!(!c.sync_rule(&bad, &Filter::default()).errors.is_empty());
}

#[test]
fn sync_writes_large_trees_in_parallel() {
    let f = fixture();
    let c = container(&f);
    for i in 0..300 {
        let d = f.host.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let r = rule(&f, "/app");
    let rep = c.sync_rule(&r, &r.filter().unwrap());
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(rep.written, 300);
    for i in 0..300 {
        assert_eq!(
            read(&f.root.join(format!("app/d{}/f{i}", i % 7))),
            i.to_string()
        );
    }
}

#[test]
fn sync_compare_removes_only_what_the_host_had_and_deleted() {
    let f = fixture();
    for d in ["d/e", "node_modules", "s"] {
        std::fs::create_dir_all(f.host.join(d)).unwrap();
    }
    for p in ["a.txt", "d/b.txt", "d/e/c.txt", "keep.txt", "s/f.txt"] {
        std::fs::write(f.host.join(p), p).unwrap();
    }
    std::fs::write(f.host.join("node_modules/x.js"), "x").unwrap();
    let c = container(&f);
    let mut r = rule(&f, "/app");
    r.ignore = vec!["node_modules".into()];
    let filter = r.filter().unwrap();
    let (rep, seen) = c.compare_rule(&r, &filter, &Seen::new());
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(
        seen,
        set(&[
            "a.txt",
            "d",
            "d/b.txt",
            "d/e",
            "d/e/c.txt",
            "keep.txt",
            "s",
            "s/f.txt"
        ])
    );
    // What the host never had: the image's and the container's own files (one in a
    // directory the host will delete), and an ignored tree; outside the target, a file
    // of the same relative name.
    let app = f.root.join("app");
    std::fs::write(app.join("image.txt"), "i").unwrap();
    std::fs::write(app.join("d/e/made.txt"), "m").unwrap();
    std::fs::create_dir_all(app.join("node_modules")).unwrap();
    std::fs::write(app.join("node_modules/x.js"), "container's").unwrap();
    std::fs::create_dir_all(f.root.join("other")).unwrap();
    std::fs::write(f.root.join("other/a.txt"), "other").unwrap();
    // The container turns `s` into a link to a directory elsewhere in its root.
    std::fs::create_dir_all(f.root.join("elsewhere")).unwrap();
    std::fs::write(f.root.join("elsewhere/f.txt"), "elsewhere").unwrap();
    std::fs::remove_dir_all(app.join("s")).unwrap();
    std::os::unix::fs::symlink("/elsewhere", app.join("s")).unwrap();
    // The host deletes (while no event reaches the watch).
    std::fs::remove_file(f.host.join("a.txt")).unwrap();
    std::fs::remove_dir_all(f.host.join("d")).unwrap();
    std::fs::remove_dir_all(f.host.join("node_modules")).unwrap();
    std::fs::remove_dir_all(f.host.join("s")).unwrap();
    // A record from before the ignore pattern: an ignored path is never removed.
    let mut before = seen.clone();
    before.insert("node_modules".into());
    before.insert("node_modules/x.js".into());
    let (rep, seen) = c.compare_rule(&r, &filter, &before);
    assert_eq!(seen, set(&["keep.txt"]));
    for gone in ["a.txt", "d/b.txt", "d/e/c.txt"] {
        assert!(!app.join(gone).exists(), "{gone} is still there");
    }
    // A directory stays for what the host never had in it; an empty one goes.
    assert!(app.join("d/e/made.txt").exists());
    assert_eq!(read(&app.join("image.txt")), "i");
    assert_eq!(read(&app.join("node_modules/x.js")), "container's");
    assert_eq!(read(&f.root.join("other/a.txt")), "other");
    // Nothing is removed through a link, even one that stays inside the root; the link
    // itself, at a path the host deleted, goes (unfollowed).
    assert_eq!(read(&f.root.join("elsewhere/f.txt")), "elsewhere");
    assert!(std::fs::symlink_metadata(app.join("s")).is_err());
    assert_eq!(rep.removed, 4, "{rep:?}");
    let msgs: Vec<String> = rep.errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains("/app/s/f.txt") && msgs[0].contains("symlink"),
        "{msgs:?}"
    );
    // An empty directory the host deleted goes.
    std::fs::create_dir_all(f.host.join("empty")).unwrap();
    let (_, seen) = c.compare_rule(&r, &filter, &seen);
    assert!(app.join("empty").is_dir());
    std::fs::remove_dir(f.host.join("empty")).unwrap();
    let (rep, _) = c.compare_rule(&r, &filter, &seen);
    assert!(!app.join("empty").exists());
    assert_eq!(rep.removed, 1);
    // Without a record nothing is removed (sync_rule).
    std::fs::write(app.join("stray.txt"), "s").unwrap();
    assert_eq!(c.sync_rule(&r, &filter).removed, 0);
    assert!(app.join("stray.txt").exists());
}

#[test]
fn sync_host_paths_and_the_record_round_trip() {
    let f = fixture();
    std::fs::create_dir_all(f.host.join("a/b")).unwrap();
    std::fs::write(f.host.join("a/b/c.txt"), "c").unwrap();
    std::fs::write(f.host.join("a/x.log"), "x").unwrap();
    let mut r = rule(&f, "/app");
    r.ignore = vec!["**/*.log".into()];
    let filter = r.filter().unwrap();
    assert_eq!(
        host_paths(&r, &filter, "").unwrap(),
        set(&["a", "a/b", "a/b/c.txt"])
    );
    assert_eq!(
        host_paths(&r, &filter, "a/b").unwrap(),
        set(&["a/b", "a/b/c.txt"])
    );
    assert!(host_paths(&r, &filter, "missing").is_none());
    let dir = f.root.join("state");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(read_seen(&dir).is_empty());
    let mut rec = SeenByRule::new();
    rec.insert(seen_key(&r), set(&["a", "a/b"]));
    write_seen(&dir, &rec).unwrap();
    assert_eq!(read_seen(&dir), rec);
}
