//! Image store: import, bootstrap, ls/inspect/tag/rm, interop with skopeo.

use std::path::Path;
use std::process::Command;

use crate::common::{self, fails, ok, tug};

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tug-image-")
        .tempdir()
        .unwrap()
}

fn inspect(root: &Path, name: &str) -> serde_json::Value {
    let out = ok(tug(root).args(["image", "inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

#[test]
fn image_import_busybox_and_resolve_short_names() {
    let dir = root();
    let r = dir.path();
    let name = common::busybox_image(r);
    assert_eq!(name, "busybox:latest");
    let img = inspect(r, "busybox");
    assert_eq!(img["Names"][0], "docker.io/library/busybox:latest");
    assert_eq!(img["RepoTags"][0], "busybox:latest");
    assert_eq!(img["Config"]["Cmd"][0], "sh");
    // The same image by full name, by id and by id prefix.
    let id = img["Id"].as_str().unwrap().to_string();
    assert_eq!(inspect(r, "docker.io/library/busybox:latest")["Id"], id);
    assert_eq!(inspect(r, &id)["Id"], id);
    assert_eq!(inspect(r, &id[7..19])["Id"], id);
    // The layer is unpacked and runnable as a root file system.
    let dirs = img["LayerDirs"].as_array().unwrap();
    assert_eq!(dirs.len(), 1);
    let layer = Path::new(dirs[0].as_str().unwrap());
    assert!(layer.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).unwrap(),
        Path::new("../bin/busybox")
    );
    // ls shows the short name; -q the short id; json one object per line.
    let ls = ok(tug(r).args(["image", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with("busybox ") && l.contains(&id[7..19])),
        "{ls}"
    );
    assert_eq!(ok(tug(r).args(["image", "ls", "-q"])).trim(), &id[7..19]);
    let js = ok(tug(r).args(["image", "ls", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(js.lines().next().unwrap()).unwrap();
    assert_eq!(v["Repository"], "busybox");
    assert_eq!(v["Tag"], "latest");
    // Unknown images are a one-line error naming the reference.
    let err = fails(tug(r).args(["image", "inspect", "nosuch:tag"]));
    assert!(err.contains("no such image: nosuch:tag"), "{err}");
}

#[test]
fn image_import_applies_changes_and_reads_stdin_gzip() {
    let dir = root();
    let r = dir.path();
    let tar = common::busybox_rootfs_tar();
    let gz = r.join("rootfs.tar.gz");
    ok(Command::new("sh").arg("-c").arg(format!(
        "gzip -1 -c {} > {}",
        tar.display(),
        gz.display()
    )));
    let mut cmd = tug(r);
    cmd.args([
        "image",
        "import",
        "-c",
        "ENV A=1 B=\"two words\"",
        "-c",
        "WORKDIR /srv",
        "-c",
        "EXPOSE 8080",
        "-c",
        "ENTRYPOINT [\"/bin/sh\", \"-c\"]",
        "-c",
        "USER 1000:1000",
        "-",
        "me/app:v1",
    ]);
    cmd.stdin(std::fs::File::open(&gz).unwrap());
    ok(&mut cmd);
    let img = inspect(r, "me/app:v1");
    let cfg = &img["Config"];
    assert_eq!(cfg["Env"], serde_json::json!(["A=1", "B=two words"]));
    assert_eq!(cfg["WorkingDir"], "/srv");
    assert_eq!(cfg["User"], "1000:1000");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert!(cfg["ExposedPorts"].get("8080/tcp").is_some(), "{cfg}");
    // The diff_id is the digest of the uncompressed tarball, whatever the input compression.
    let want = format!(
        "sha256:{}",
        ok(Command::new("sha256sum").arg(&tar))
            .split_whitespace()
            .next()
            .unwrap()
    );
    assert_eq!(img["RootFS"]["diff_ids"][0], want.as_str());
    // A bad change is refused and nothing is stored.
    let err = fails(
        tug(r)
            .args(["image", "import", "-c", "RUN true"])
            .arg(&tar)
            .arg("x:y"),
    );
    assert!(err.contains("invalid change"), "{err}");
    fails(tug(r).args(["image", "inspect", "x:y"]));
}

#[test]
fn image_tag_rm_and_garbage_collection() {
    let dir = root();
    let r = dir.path();
    common::busybox_image(r);
    ok(tug(r).args(["image", "tag", "busybox", "localhost:5000/bb:1"]));
    let ls = ok(tug(r).args(["image", "ls"]));
    assert!(ls.contains("localhost:5000/bb"), "{ls}");
    // Removing by id with two names needs --force.
    let id = inspect(r, "busybox")["Id"].as_str().unwrap().to_string();
    let err = fails(tug(r).args(["image", "rm", &id]));
    assert!(err.contains("referenced by 2 names"), "{err}");
    // Removing one name only untags.
    let out = ok(tug(r).args(["image", "rm", "localhost:5000/bb:1"]));
    assert!(out.contains("Untagged: localhost:5000/bb:1"), "{out}");
    assert!(!out.contains("Deleted"), "{out}");
    let layer = r.join("layers").join(
        inspect(r, "busybox")["RootFS"]["diff_ids"][0]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    assert!(layer.is_dir());
    // Removing the last name deletes the image, its blobs and its layer.
    let out = ok(tug(r).args(["image", "rm", "busybox"]));
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(!layer.exists());
    let blobs = std::fs::read_dir(r.join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
    assert_eq!(ok(tug(r).args(["image", "ls", "-q"])).trim(), "");
}

#[test]
fn image_bootstrap_busybox_is_runnable() {
    if !common::require_root() {
        return;
    }
    let dir = root();
    let r = dir.path();
    ok(tug(r).args(["image", "bootstrap", "busybox", "--name", "bb:boot"]));
    let img = inspect(r, "bb:boot");
    assert_eq!(img["Config"]["Cmd"][0], "sh");
    let layer = img["LayerDirs"][0].as_str().unwrap().to_string();
    let out = ok(Command::new("chroot").arg(&layer).args([
        "/bin/sh",
        "-c",
        "echo ok; id -u; test -d /var/www && echo www",
    ]));
    // /var/www is there, as in the busybox image of registries (httpd serves it by default).
    assert_eq!(out, "ok\n0\nwww\n");
    // Bootstrapping is deterministic in content: the same diff_id twice.
    ok(tug(r).args(["image", "bootstrap", "busybox", "--name", "bb:again"]));
    assert_eq!(img["RootFS"], inspect(r, "bb:again")["RootFS"]);
}

#[test]
fn image_store_is_readable_by_skopeo() {
    if !common::require_tools(&["skopeo"]) {
        return;
    }
    let dir = root();
    let r = dir.path();
    common::busybox_image(r);
    let img = inspect(r, "busybox");
    let src = format!(
        "oci:{}:docker.io/library/busybox:latest",
        r.join("images").display()
    );
    let out = ok(Command::new("skopeo").args(["inspect", &src]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], img["Digest"]);
    // skopeo copies it out as a docker-archive and verifies every blob on the way.
    let archive = r.join("bb.tar");
    ok(Command::new("skopeo").args([
        "copy",
        &src,
        &format!("docker-archive:{}:busybox:latest", archive.display()),
    ]));
    assert!(archive.metadata().unwrap().len() > 1_000_000);
}

/// A one-file rootfs tarball whose content is `marker`.
fn small_tar(dir: &Path, marker: &str) -> std::path::PathBuf {
    let src = dir.join(format!("src-{marker}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("marker"), marker).unwrap();
    let tar = dir.join(format!("{marker}.tar"));
    ok(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}

fn layer_of(r: &Path, name: &str) -> std::path::PathBuf {
    let v = inspect(r, name);
    r.join("layers").join(
        v["RootFS"]["diff_ids"][0]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    )
}

#[test]
fn image_prune_keeps_what_containers_use() {
    if !common::require_root() {
        return;
    }
    let dir = root();
    let r = dir.path();
    common::busybox_image(r);
    let busybox_layer = layer_of(r, "busybox");
    let used_id = ok(tug(r)
        .args(["image", "import"])
        .arg(small_tar(r, "used"))
        .arg("used:1"));
    let used_id = used_id.trim().to_string();
    let used_layer = layer_of(r, "used:1");
    // A container that uses "used:1".
    // No network: this test is about images (the default network would outlive the root).
    ok(tug(r).args([
        "container",
        "create",
        "--name",
        "c1",
        "--network",
        "none",
        "used:1",
        "true",
    ]));
    // "old:1" moves to a new image: the first one is left unnamed (dangling).
    ok(tug(r)
        .args(["image", "import"])
        .arg(small_tar(r, "old-a"))
        .arg("old:1"));
    let dangling_layer = layer_of(r, "old:1");
    ok(tug(r)
        .args(["image", "import"])
        .arg(small_tar(r, "old-b"))
        .arg("old:1"));
    assert!(ok(tug(r).args(["image", "ls"])).contains("<none>"));

    // prune: only the dangling image goes.
    ok(tug(r).args(["image", "prune"]));
    assert!(!dangling_layer.exists());
    assert!(busybox_layer.is_dir() && used_layer.is_dir());
    assert!(!ok(tug(r).args(["image", "ls"])).contains("<none>"));

    // prune -a: every image no container uses goes; the used one stays.
    ok(tug(r).args(["image", "prune", "-a"]));
    assert!(!busybox_layer.exists());
    assert!(used_layer.is_dir());
    let ls = ok(tug(r).args(["image", "ls"]));
    assert!(
        ls.contains("used") && !ls.contains("busybox") && !ls.contains("old"),
        "{ls}"
    );

    // rm of an image in use: refused; with --force only untagged, content kept.
    let err = fails(tug(r).args(["image", "rm", "used:1"]));
    assert!(err.contains("in use by a container"), "{err}");
    let out = ok(tug(r).args(["image", "rm", "--force", "used:1"]));
    assert!(
        out.contains("Untagged: used:1") && !out.contains("Deleted"),
        "{out}"
    );
    assert!(used_layer.is_dir());
    assert_eq!(inspect(r, &used_id)["Id"], used_id.as_str());
    // Once no container uses it, prune removes it and the store is empty.
    ok(tug(r).args(["container", "rm", "c1"]));
    ok(tug(r).args(["image", "prune"]));
    assert!(!used_layer.exists());
    assert_eq!(
        std::fs::read_dir(r.join("images/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(std::fs::read_dir(r.join("layers")).unwrap().count(), 0);
}

#[test]
fn image_concurrent_commands_keep_the_store_consistent() {
    let dir = root();
    let r = dir.path();
    let tars: Vec<_> = (0..4).map(|i| small_tar(r, &format!("c{i}"))).collect();
    let mut children = Vec::new();
    for (i, t) in tars.iter().enumerate() {
        children.push(
            tug(r)
                .args(["image", "import"])
                .arg(t)
                .arg(format!("c:{i}"))
                .spawn()
                .unwrap(),
        );
        children.push(
            tug(r)
                .args(["image", "prune"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for i in 0..4 {
        let v = inspect(r, &format!("c:{i}"));
        let layer = Path::new(v["LayerDirs"][0].as_str().unwrap());
        assert_eq!(
            std::fs::read_to_string(layer.join("marker")).unwrap(),
            format!("c{i}")
        );
    }
    assert_eq!(ok(tug(r).args(["image", "ls", "-q"])).lines().count(), 4);
}

#[test]
fn image_bootstrap_debian_with_mmdebstrap() {
    if !common::require_root() {
        return;
    }
    if !common::require_tools(&["mmdebstrap"]) {
        return;
    }
    let dir = root();
    let r = dir.path();
    let out = common::run(tug(r).args([
        "image",
        "bootstrap",
        "debian:bookworm",
        "--include",
        "netbase",
        "--name",
        "deb:test",
    ]));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let img = inspect(r, "deb:test");
    // stdout is the id alone; stderr tells mmdebstrap's steps as they happen (20 s or more).
    assert_eq!(stdout.trim(), img["Id"].as_str().unwrap(), "{stdout}");
    for step in [
        "bootstrap debian:bookworm: running apt-get update...",
        "bootstrap debian:bookworm: installing essential packages...",
        "bootstrap debian:bookworm: storing the image",
        "bootstrap debian:bookworm: done in ",
    ] {
        assert!(stderr.contains(step), "no {step:?} in:\n{stderr}");
    }
    assert_eq!(img["Config"]["Cmd"][0], "bash");
    let layer = Path::new(img["LayerDirs"][0].as_str().unwrap());
    assert!(
        std::fs::read_to_string(layer.join("etc/debian_version"))
            .unwrap()
            .starts_with("12.")
    );
    // The extra package is installed, setuid bits survived the round trip through the store.
    assert!(layer.join("etc/services").is_file(), "netbase is installed");
    let su = std::fs::metadata(layer.join("usr/bin/su")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&su.permissions()) & 0o4000,
        0o4000
    );
    let out = ok(Command::new("chroot").arg(layer).args([
        "/bin/bash",
        "-c",
        "dpkg-query -W -f '${Status}' netbase",
    ]));
    assert_eq!(out, "install ok installed");
    // A bad suite is a clear error.
    let err = fails(tug(r).args(["image", "bootstrap", "debian:no such"]));
    assert!(err.contains("invalid suite"), "{err}");
}

/// A damaged `index.json` (cut short, as a disk or a hand edit may leave it) is rebuilt by the
/// next command, which says so once: names come back from the previous version of the index,
/// the image of the last change is kept without its name, the damaged file is kept aside.
/// Without a previous version every image is still there, unnamed.
#[test]
fn image_damaged_index_is_rebuilt_and_no_image_is_lost() {
    let dir = root();
    let r = dir.path();
    common::busybox_image(r);
    ok(tug(r).args(["image", "tag", "busybox", "keep:1"]));
    let tar = small_tar(r, "last");
    ok(tug(r).args(["image", "import"]).arg(&tar).arg("last:1"));
    let busybox = inspect(r, "busybox")["Id"].as_str().unwrap().to_string();
    let last = inspect(r, "last:1")["Id"].as_str().unwrap().to_string();
    let index = r.join("images/index.json");
    let prev: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.join("images/index.json.prev")).unwrap()).unwrap();
    // The previous version is the index before the last change: it names keep:1, not last:1.
    let prev_names = prev.to_string();
    assert!(prev_names.contains("keep:1"), "{prev_names}");
    assert!(!prev_names.contains("last:1"), "{prev_names}");

    let whole = std::fs::read(&index).unwrap();
    let cut = &whole[..whole.len() / 2];
    std::fs::write(&index, cut).unwrap();
    let out = common::run(tug(r).args(["image", "ls", "--format", "json"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the image index was damaged") && stderr.contains("has been rebuilt"),
        "{stderr}"
    );
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |repo: &str, tag: &str, id: &str| {
        rows.iter().any(|v| {
            v["Repository"] == repo && v["Tag"] == tag && id.contains(v["ID"].as_str().unwrap())
        })
    };
    assert!(has("busybox", "latest", &busybox), "{listed}");
    assert!(has("keep", "1", &busybox), "{listed}");
    assert!(has("<none>", "<none>", &last), "{listed}");
    // The damaged file is kept as it was; the next command finds a sound index and says nothing.
    let kept: Vec<_> = std::fs::read_dir(r.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("index.json.damaged-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), cut);
    let again = common::run(tug(r).args(["image", "ls"]));
    assert!(
        again.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The unnamed image is whole: it can be named again and used.
    ok(tug(r).args(["image", "tag", &last, "last:1"]));
    assert_eq!(inspect(r, "last:1")["Id"], last);

    // No previous version: every image is still listed, without names, and nothing is
    // garbage: an image rm of another image keeps them.
    std::fs::remove_file(r.join("images/index.json.prev")).unwrap();
    std::fs::write(&index, b"{\"schemaVersion\": 2, \"manif").unwrap();
    let out = common::run(tug(r).args(["image", "ls", "-q", "--no-trunc"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(ids.contains(&busybox) && ids.contains(&last), "{ids}");
    ok(tug(r).args(["image", "tag", &busybox, "busybox:latest"]));
    let layer = layer_of(r, "busybox");
    assert!(layer.join("bin/busybox").is_file());
}
