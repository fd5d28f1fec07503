//! Layer unpacking: every tar feature a layer uses, and a hostile-layer corpus generated here
//! (traversal, absolute paths, symlink and hard-link escapes, huge headers, truncated gzip):
//! each is rejected or contained, and a rejected import leaves the store as it was.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, fails, ok, tug};

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tug-unpack-")
        .tempdir()
        .unwrap()
}

/// Builds tarballs entry by entry with raw headers (no path checks: hostile names allowed).
struct TarGen {
    b: tar::Builder<Vec<u8>>,
}

impl TarGen {
    fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, name: &[u8], mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        let gnu = h.as_gnu_mut().unwrap();
        assert!(name.len() < 100, "use long() for long names");
        gnu.name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        h
    }

    fn raw(&mut self, h: &tar::Header, data: &[u8]) -> &mut Self {
        self.b.append(h, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = Self::header(tar::EntryType::Directory, name.as_bytes(), mode, 0);
        self.raw(&h, &[])
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        let h = Self::header(
            tar::EntryType::Regular,
            name.as_bytes(),
            mode,
            data.len() as u64,
        );
        self.raw(&h, data)
    }

    fn file_owned(&mut self, name: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> &mut Self {
        let mut h = Self::header(
            tar::EntryType::Regular,
            name.as_bytes(),
            mode,
            data.len() as u64,
        );
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.raw(&h, data)
    }

    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, name.as_bytes(), 0o777, 0);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.raw(&h, &[])
    }

    fn device(&mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(kind, name.as_bytes(), 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.raw(&h, &[])
    }

    /// A PAX extended header (records) for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let h = Self::header(
            tar::EntryType::XHeader,
            b"././@PaxHeader",
            0o644,
            data.len() as u64,
        );
        self.raw(&h, &data)
    }

    /// A GNU long-name entry for the next entry.
    fn gnu_long(&mut self, name: &[u8]) -> &mut Self {
        let h = Self::header(
            tar::EntryType::GNULongName,
            b"././@LongLink",
            0o644,
            name.len() as u64 + 1,
        );
        let mut data = name.to_vec();
        data.push(0);
        self.raw(&h, &data)
    }

    fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Everything in the store that a rejected import must leave untouched.
fn store_state(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["images/blobs/sha256", "images/.ingest", "layers"] {
        if let Ok(rd) = std::fs::read_dir(root.join(sub)) {
            for e in rd {
                out.push(format!(
                    "{sub}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        }
    }
    out.sort();
    out.push(std::fs::read_to_string(root.join("images/index.json")).unwrap_or_default());
    out
}

/// Imports `tar` as `name`; returns the unpacked layer directory.
fn import_ok(root: &Path, tar: &Path, name: &str) -> PathBuf {
    ok(tug(root).args(["image", "import"]).arg(tar).arg(name));
    let out = ok(tug(root).args(["image", "inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    PathBuf::from(v[0]["LayerDirs"][0].as_str().unwrap())
}

/// Imports `tar`, which must be rejected with a message containing `want`, leaving the store
/// as it was.
#[track_caller]
fn import_rejected(root: &Path, tar: &Path, want: &str) {
    let before = store_state(root);
    let err = fails(
        tug(root)
            .args(["image", "import"])
            .arg(tar)
            .arg("hostile:latest"),
    );
    assert!(err.contains(want), "expected {want:?} in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    // The next command cleans what the failed one left; then the store is as before.
    ok(tug(root).args(["image", "ls"]));
    assert_eq!(store_state(root), before);
}

#[test]
fn image_unpack_tar_features() {
    if !common::require_root() {
        return;
    }
    let dir = root();
    let r = dir.path();
    let long_dir = "d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    let gnu_name = format!("{}/gnu-{}", "g".repeat(90), "n".repeat(100));
    let tar = TarGen::new()
        .dir("./", 0o755)
        .dir("etc", 0o755)
        .file("etc/hello", 0o644, b"hello\n")
        .file_owned("suid", 0o4755, 1234, 5678, b"#!/bin/sh\n")
        .link(tar::EntryType::Link, "etc/hello-hard", "etc/hello")
        .link(tar::EntryType::Symlink, "abs-link", "/etc/hello")
        .device("null", tar::EntryType::Char, 1, 3)
        .device("fifo", tar::EntryType::Fifo, 0, 0)
        .pax(&[("path", long_file.as_bytes())])
        .file("placeholder", 0o600, b"pax long name\n")
        .gnu_long(gnu_name.as_bytes())
        .file("placeholder2", 0o640, b"gnu long name\n")
        .pax(&[
            ("SCHILY.xattr.user.tug", b"yes"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("uid", b"3000000"),
        ])
        .file("xattr-file", 0o644, b"x")
        .file("replaced", 0o644, b"first")
        .file("replaced", 0o644, b"second")
        .dir("deep/a/b", 0o700)
        .file("deep/a/b/c", 0o644, b"c")
        .bytes();
    let tarp = write(r, "features.tar", &tar);
    let layer = import_ok(r, &tarp, "features:1");

    assert_eq!(std::fs::read(layer.join("etc/hello")).unwrap(), b"hello\n");
    let m = std::fs::metadata(layer.join("suid")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o4755));
    assert_eq!(m.mtime(), 1_600_000_000);
    let a = std::fs::metadata(layer.join("etc/hello")).unwrap();
    let b = std::fs::metadata(layer.join("etc/hello-hard")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link shares the inode");
    assert_eq!(
        std::fs::read_link(layer.join("abs-link")).unwrap(),
        Path::new("/etc/hello")
    );
    let n = std::fs::symlink_metadata(layer.join("null")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(
        std::fs::symlink_metadata(layer.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        std::fs::read(layer.join(&long_file)).unwrap(),
        b"pax long name\n"
    );
    assert_eq!(
        std::fs::read(layer.join(&gnu_name)).unwrap(),
        b"gnu long name\n"
    );
    assert!(!layer.join("placeholder").exists() && !layer.join("placeholder2").exists());
    let x = layer.join("xattr-file");
    assert_eq!(getxattr(&x, "user.tug").as_deref(), Some(&b"yes"[..]));
    assert_eq!(
        getxattr(&x, "trusted.overlay.opaque"),
        None,
        "overlay xattrs from a layer are dropped"
    );
    assert_eq!(std::fs::metadata(&x).unwrap().uid(), 3_000_000, "PAX uid");
    assert_eq!(std::fs::read(layer.join("replaced")).unwrap(), b"second");
    let deep = std::fs::metadata(layer.join("deep/a/b")).unwrap();
    assert_eq!(deep.mode() & 0o777, 0o700);
    assert_eq!(
        deep.mtime(),
        1_600_000_000,
        "directory times are set after their children"
    );
}

/// Owners and modes come out exactly as the tar says, whatever the kernel does to a new entry
/// by itself: the umask, a set-group-ID parent (whose group and bit new entries inherit),
/// set-ID bits; and an entry that replaces an earlier one of the same name never follows it.
#[test]
fn image_unpack_owners_and_modes_are_exact() {
    if !common::require_root() {
        return;
    }
    let dir = root();
    let r = dir.path();
    let outside = r.join("outside-target");
    let mut shared = TarGen::header(tar::EntryType::Directory, b"shared", 0o2775, 0);
    shared.set_gid(50);
    shared.set_cksum();
    let tar = TarGen::new()
        .dir("./", 0o755)
        .raw(&shared, &[])
        .file("shared/root-file", 0o644, b"r")
        .file_owned("shared/group-file", 0o660, 0, 50, b"g")
        .dir("shared/sub", 0o755)
        .link(tar::EntryType::Symlink, "shared/link", "root-file")
        .file("world-writable", 0o666, b"w")
        .file_owned("sgid-exec", 0o2755, 0, 50, b"#!/bin/sh\n")
        .dir("sticky", 0o1777)
        .link(
            tar::EntryType::Symlink,
            "was-link",
            outside.to_str().unwrap(),
        )
        .file("was-link", 0o644, b"file now")
        .file("was-file", 0o644, b"x")
        .dir("was-file", 0o750)
        .dir("was-dir", 0o755)
        .file("was-dir/child", 0o644, b"c")
        .file("was-dir", 0o600, b"file now")
        .bytes();
    let tarp = write(r, "owners.tar", &tar);
    let layer = import_ok(r, &tarp, "owners:1");

    let meta = |p: &str| {
        let m = std::fs::symlink_metadata(layer.join(p)).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(meta("shared"), (0, 50, 0o2775));
    assert_eq!(
        meta("shared/root-file"),
        (0, 0, 0o644),
        "not the parent's group"
    );
    assert_eq!(meta("shared/group-file"), (0, 50, 0o660));
    assert_eq!(
        meta("shared/sub"),
        (0, 0, 0o755),
        "no inherited set-group-ID bit"
    );
    assert_eq!(meta("shared/link").1, 0, "symlink group");
    assert_eq!(
        meta("world-writable"),
        (0, 0, 0o666),
        "the umask does not apply"
    );
    assert_eq!(meta("sgid-exec"), (0, 50, 0o2755));
    assert_eq!(meta("sticky"), (0, 0, 0o1777));
    assert_eq!(std::fs::read(layer.join("was-link")).unwrap(), b"file now");
    assert!(
        !outside.exists(),
        "a file replacing a symlink never follows it"
    );
    assert!(layer.join("was-file").is_dir());
    assert_eq!(meta("was-file").2, 0o750);
    assert_eq!(std::fs::read(layer.join("was-dir")).unwrap(), b"file now");
    assert_eq!(meta("was-dir").2, 0o600);
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    python_getxattr(p, name)
}

/// Reads an xattr (not following symlinks) with python3's os.getxattr.
fn python_getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import os,sys\ntry: sys.stdout.buffer.write(os.getxattr(sys.argv[1], sys.argv[2], follow_symlinks=False))\nexcept OSError: sys.exit(3)")
        .arg(p)
        .arg(name)
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

#[test]
fn image_unpack_whiteouts_become_overlay_whiteouts() {
    if !common::require_root() {
        return;
    }
    let dir = root();
    let r = dir.path();
    let lower = TarGen::new()
        .dir("keep", 0o755)
        .file("keep/a", 0o644, b"a")
        .file("gone", 0o644, b"gone")
        .dir("opaque", 0o755)
        .file("opaque/old", 0o644, b"old")
        .bytes();
    let upper = TarGen::new()
        .file(".wh.gone", 0o644, b"")
        .dir("opaque", 0o755)
        .file("opaque/.wh..wh..opq", 0o644, b"")
        .file("opaque/new", 0o644, b"new")
        .file("keep/.wh.a", 0o644, b"")
        .bytes();
    let l1 = import_ok(r, &write(r, "lower.tar", &lower), "lower:1");
    let l2 = import_ok(r, &write(r, "upper.tar", &upper), "upper:1");
    let wh = std::fs::symlink_metadata(l2.join("gone")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is char 0:0"
    );
    assert!(!l2.join(".wh.gone").exists());
    assert_eq!(
        getxattr(&l2.join("opaque"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!l2.join("opaque/.wh..wh..opq").exists());

    // Stacked with overlayfs, the upper layer deletes and hides what it should.
    let mnt = r.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    ok(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={}:{}", l2.display(), l1.display()))
        .arg(&mnt));
    assert!(!mnt.join("gone").exists());
    assert!(!mnt.join("keep/a").exists());
    assert!(mnt.join("keep").is_dir());
    assert!(!mnt.join("opaque/old").exists());
    assert_eq!(std::fs::read(mnt.join("opaque/new")).unwrap(), b"new");
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn image_unpack_compressions() {
    let dir = root();
    let r = dir.path();
    let tar = TarGen::new().file("f", 0o644, b"compressed").bytes();
    let plain = write(r, "l.tar", &tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gzp = write(r, "l.tar.gz", &gz.finish().unwrap());
    let zst = write(
        r,
        "l.tar.zst",
        &zstd::encode_all(tar.as_slice(), 3).unwrap(),
    );
    let mut ids = Vec::new();
    for (p, n) in [(&plain, "c:plain"), (&gzp, "c:gzip"), (&zst, "c:zstd")] {
        let layer = import_ok(r, p, n);
        assert_eq!(std::fs::read(layer.join("f")).unwrap(), b"compressed");
        ids.push(layer);
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "same diff_id whatever the compression"
    );
}

#[test]
fn image_unpack_hostile_corpus_is_rejected_or_contained() {
    if !common::require_root() {
        return;
    }
    let dir = root();
    let r = dir.path();
    common::busybox_image(r);
    // A host directory the layers aim at.
    let target = r.join("host-target");
    std::fs::create_dir(&target).unwrap();
    let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();

    // Traversal and absolute paths are rejected.
    let t = TarGen::new().file("../escape", 0o644, b"x").bytes();
    import_rejected(r, &write(r, "t1.tar", &t), "escapes the layer");
    let t = TarGen::new().file("a/../../escape", 0o644, b"x").bytes();
    import_rejected(r, &write(r, "t2.tar", &t), "escapes the layer");
    let abs = format!("{}/abs", target.display());
    let t = TarGen::new().file(&abs, 0o644, b"x").bytes();
    import_rejected(r, &write(r, "t3.tar", &t), "absolute path");
    assert!(!Path::new(&abs).exists());
    // A hard link that climbs out is rejected.
    let t = TarGen::new()
        .link(tar::EntryType::Link, "hl", "../../../../etc/passwd")
        .bytes();
    import_rejected(r, &write(r, "t4.tar", &t), "escapes the layer");
    // A hard link through an absolute symlink resolves inside the layer, where there is no
    // such file: rejected, and the host file gained no link.
    let t = TarGen::new()
        .link(tar::EntryType::Symlink, "s", "/etc")
        .link(tar::EntryType::Link, "hl", "s/passwd")
        .bytes();
    import_rejected(r, &write(r, "t5.tar", &t), "hard link");
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_links
    );
    // Huge extended headers are refused before they are read.
    let mut h = TarGen::header(tar::EntryType::XHeader, b"././@PaxHeader", 0o644, 0);
    h.set_size(1 << 33);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend_from_slice(&[0u8; 1024]);
    import_rejected(r, &write(r, "t6.tar", &t), "extended header");
    let t = TarGen::new()
        .gnu_long(&vec![b'a'; 2 << 20])
        .file("x", 0o644, b"")
        .bytes();
    import_rejected(r, &write(r, "t7.tar", &t), "extended header");
    // Truncated gzip.
    let tar = TarGen::new()
        .file("big", 0o644, &vec![7u8; 1 << 20])
        .bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    import_rejected(
        r,
        &write(r, "t8.tar.gz", &gz[..gz.len() / 2]),
        "invalid layer",
    );
    // Not a tarball at all.
    import_rejected(
        r,
        &write(r, "t9.tar", b"this is not a tar stream at all"),
        "invalid layer",
    );

    // Symlinks pointing out of the layer are stored as symlinks, and writes through them stay
    // inside the layer directory.
    let rel = "../".repeat(20) + &target.display().to_string()[1..];
    let mut tg = TarGen::new();
    // The directories the symlinks lead to exist inside the layer.
    let mut prefix = String::new();
    for c in target.display().to_string()[1..].split('/') {
        prefix.push_str(c);
        tg.dir(&prefix, 0o755);
        prefix.push('/');
    }
    let t = tg
        .link(
            tar::EntryType::Symlink,
            "abs",
            &target.display().to_string(),
        )
        .file("abs/pwned-abs", 0o644, b"x")
        .link(tar::EntryType::Symlink, "up", &rel)
        .file("up/pwned-rel", 0o644, b"x")
        .link(tar::EntryType::Symlink, "root", "/")
        .file("root/pwned-root", 0o644, b"x")
        .bytes();
    let layer = import_ok(r, &write(r, "contained.tar", &t), "contained:1");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing written on the host"
    );
    let inside = layer.join(&target.display().to_string()[1..]);
    assert!(
        inside.join("pwned-abs").is_file(),
        "absolute symlink resolved inside the layer"
    );
    assert!(
        inside.join("pwned-rel").is_file(),
        "relative symlink clamped to the layer"
    );
    assert!(layer.join("pwned-root").is_file());
    // A symlink to a place that does not exist inside the layer cannot be written through.
    let t = TarGen::new()
        .link(
            tar::EntryType::Symlink,
            "abs",
            &target.display().to_string(),
        )
        .file("abs/pwned", 0o644, b"x")
        .bytes();
    import_rejected(r, &write(r, "t11.tar", &t), "cannot open directory");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    // A whiteout whose name climbs is rejected.
    let t = TarGen::new().file("a/.wh...", 0o644, b"").bytes();
    import_rejected(r, &write(r, "t10.tar", &t), "bad whiteout");
    // The store is still healthy.
    let ls = ok(tug(r).args(["image", "ls"]));
    assert!(ls.contains("busybox") && ls.contains("contained"), "{ls}");
}
