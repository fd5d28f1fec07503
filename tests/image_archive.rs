//! `image load` / `image save`: docker-archive and oci-archive, interop with skopeo, corrupt
//! archives, a load killed half-way, and `podman load` of what tug saves.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, fails, ok, tug};

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tug-archive-")
        .tempdir()
        .unwrap()
}

fn inspect(root: &Path, name: &str) -> serde_json::Value {
    let out = ok(tug(root).args(["image", "inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn have_skopeo() -> bool {
    common::require_tools(&["skopeo"])
}

fn dir_listing(p: &Path) -> Vec<String> {
    let out = ok(Command::new("find")
        .arg(p)
        .args(["-printf", "%P %y %m %s %l\n"]));
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn image_archive_load_what_skopeo_writes() {
    if !have_skopeo() {
        return;
    }
    let dir = root();
    let src = dir.path().join("src");
    common::busybox_image(&src);
    let want = inspect(&src, "busybox");
    let oci = format!(
        "oci:{}:docker.io/library/busybox:latest",
        src.join("images").display()
    );
    let da = dir.path().join("da.tar");
    let oa = dir.path().join("oa.tar");
    ok(Command::new("skopeo")
        .args(["copy", "-q", &oci])
        .arg(format!("docker-archive:{}:me/bb:da", da.display())));
    ok(Command::new("skopeo")
        .args(["copy", "-q", &oci])
        .arg(format!("oci-archive:{}:docker.io/me/bb:oa", oa.display())));

    let dst = dir.path().join("dst");
    let out = ok(tug(&dst).args(["image", "load", "-i"]).arg(&da));
    assert_eq!(out.trim(), "Loaded image: me/bb:da");
    let out = ok(tug(&dst).args(["image", "load", "--input"]).arg(&oa));
    assert_eq!(out.trim(), "Loaded image: me/bb:oa");
    for name in ["me/bb:da", "me/bb:oa"] {
        let got = inspect(&dst, name);
        assert_eq!(got["Id"], want["Id"], "{name}: same config, same image id");
        assert_eq!(got["RootFS"], want["RootFS"]);
        let layer = Path::new(got["LayerDirs"][0].as_str().unwrap());
        let orig = Path::new(want["LayerDirs"][0].as_str().unwrap());
        assert_eq!(dir_listing(layer), dir_listing(orig), "{name}: same files");
    }
    // The oci-archive kept the manifest digest.
    assert_eq!(inspect(&dst, "me/bb:oa")["Digest"], want["Digest"]);
}

#[test]
fn image_archive_save_is_loadable_by_skopeo_and_tug() {
    if !have_skopeo() {
        return;
    }
    let dir = root();
    let src = dir.path().join("src");
    common::busybox_image(&src);
    ok(tug(&src).args(["image", "tag", "busybox", "other:2"]));
    let want = inspect(&src, "busybox");
    let archive = dir.path().join("saved.tar");
    ok(tug(&src)
        .args(["image", "save", "-o"])
        .arg(&archive)
        .args(["busybox", "other:2"]));
    // skopeo reads it and checks every layer against the config's diff_ids.
    let out = ok(Command::new("skopeo").arg("inspect").arg(format!(
        "docker-archive:{}:busybox:latest",
        archive.display()
    )));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    let copy = dir.path().join("copy");
    ok(Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("docker-archive:{}:other:2", archive.display()))
        .arg(format!("oci:{}:x", copy.display())));
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(copy.join("blobs/sha256").join(&mdigest[7..])).unwrap(),
    )
    .unwrap();
    let cdigest = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(copy.join("blobs/sha256").join(&cdigest[7..])).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["rootfs"], want["RootFS"],
        "same layers through skopeo"
    );
    assert_eq!(config["config"]["Cmd"], want["Config"]["Cmd"]);

    // tug loads its own archive into a fresh root, with both names.
    let dst = dir.path().join("dst");
    let out = ok(tug(&dst).args(["image", "load", "-i"]).arg(&archive));
    assert!(
        out.contains("Loaded image: busybox:latest") && out.contains("Loaded image: other:2"),
        "{out}"
    );
    assert_eq!(inspect(&dst, "other:2")["Id"], want["Id"]);
    // Saving an unknown image fails and writes nothing.
    let none = dir.path().join("none.tar");
    let err = fails(
        tug(&src)
            .args(["image", "save", "-o"])
            .arg(&none)
            .arg("nosuch"),
    );
    assert!(err.contains("no such image: nosuch"), "{err}");
    assert!(!none.exists());
}

#[test]
fn image_archive_corrupt_layer_is_rejected() {
    let dir = root();
    let src = dir.path().join("src");
    common::busybox_image(&src);
    let archive = dir.path().join("a.tar");
    ok(tug(&src)
        .args(["image", "save", "-o"])
        .arg(&archive)
        .arg("busybox"));
    // Rewrite the archive with one byte of the layer changed.
    let mut input = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    let mut out = tar::Builder::new(Vec::new());
    for e in input.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        let name = e.path().unwrap().into_owned();
        if name.to_string_lossy().ends_with(".tar") {
            let n = data.len();
            data[n / 2] ^= 0xff;
        }
        let mut h = e.header().clone();
        out.append_data(&mut h, &name, data.as_slice()).unwrap();
    }
    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, out.into_inner().unwrap()).unwrap();
    let dst = dir.path().join("dst");
    ok(tug(&dst).args(["image", "ls"]));
    let err = fails(tug(&dst).args(["image", "load", "-i"]).arg(&bad));
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(ok(tug(&dst).args(["image", "ls", "-q"])).trim(), "");
    assert_eq!(
        std::fs::read_dir(dst.join("images/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(std::fs::read_dir(dst.join("layers")).unwrap().count(), 0);
    // Not an archive at all.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"junk").unwrap();
    let err = fails(tug(&dst).args(["image", "load", "-i"]).arg(&junk));
    assert!(err.contains("invalid archive"), "{err}");
}

/// Kills the child when dropped (test failures included).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn image_archive_load_killed_midway_leaves_a_sane_store() {
    let dir = root();
    let src = dir.path().join("src");
    common::busybox_image(&src);
    let archive = dir.path().join("a.tar");
    ok(tug(&src)
        .args(["image", "save", "-o"])
        .arg(&archive)
        .arg("busybox"));
    let bytes = std::fs::read(&archive).unwrap();
    let dst = dir.path().join("dst");
    ok(tug(&dst).args(["image", "ls"]));
    // Feed half the archive through a pipe, then kill -9 while tug waits for the rest.
    let child = tug(&dst)
        .args(["image", "load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(&bytes[..bytes.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let ingest = dst.join("images/.ingest");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let busy = std::fs::read_dir(&ingest).unwrap().any(|e| {
            let p = e.unwrap().path();
            std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_some())
        });
        if busy {
            break;
        }
        assert!(Instant::now() < deadline, "tug load never started writing");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.0.wait();
    drop(stdin);
    assert!(
        std::fs::read_dir(&ingest).unwrap().next().is_some(),
        "the kill left leftovers"
    );
    // The next command cleans up; the store is empty and usable.
    assert_eq!(ok(tug(&dst).args(["image", "ls", "-q"])).trim(), "");
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dst.join("layers")).unwrap().count(), 0);
    let out = ok(tug(&dst).args(["image", "load", "-i"]).arg(&archive));
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
}

#[test]
fn image_archive_save_loads_into_podman() {
    if !common::require_tools(&["podman"]) {
        return;
    }
    let dir = root();
    let src = dir.path().join("src");
    common::busybox_image(&src);
    ok(tug(&src).args(["image", "tag", "busybox", "tugsaved/other:2"]));
    let want = inspect(&src, "busybox");
    let archive = dir.path().join("saved.tar");
    ok(tug(&src)
        .args(["image", "save", "-o"])
        .arg(&archive)
        .args(["busybox", "tugsaved/other:2"]));
    // A podman of its own: storage, run state and tmp in the tempdir, vfs (no mounts), no
    // daemon. The tempdir's removal cleans everything up.
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(dir.path().join("podman-root"))
            .arg("--runroot")
            .arg(dir.path().join("podman-run"))
            .arg("--tmpdir")
            .arg(dir.path().join("podman-tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "file",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(args);
        c
    };
    let out = ok(&mut podman(&["load", "-i", archive.to_str().unwrap()]));
    assert!(out.contains("busybox:latest"), "{out}");
    let out = ok(&mut podman(&["images", "--format", "json"]));
    let images: serde_json::Value = serde_json::from_str(&out).unwrap();
    let images = images.as_array().unwrap();
    // One image (podman lists it once per name): the same config digest, so the same image
    // id, with both names.
    let id = want["Id"].as_str().unwrap();
    assert!(!images.is_empty(), "{out}");
    assert!(
        images.iter().all(|i| i["Id"].as_str() == Some(&id[7..])),
        "{out}"
    );
    let names: Vec<String> = images
        .iter()
        .flat_map(|i| i["Names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("/busybox:latest"))
            && names.iter().any(|n| n.ends_with("tugsaved/other:2")),
        "{names:?}"
    );
    // podman checked the layer against the diff_id: its rootfs is tug's.
    let out = ok(&mut podman(&["image", "inspect", "busybox:latest"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v[0]["RootFS"]["Layers"], want["RootFS"]["diff_ids"],
        "{out}"
    );
}
