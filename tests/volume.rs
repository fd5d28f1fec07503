//! Named volumes: the CLI, copy-up from a real imported image, ownership for non-root users,
//! local driver options (bind, tmpfs) mounted and unmounted, persistence and removal.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;

use tug::engine::image::ImageStore;
use tug::engine::volume::{self, Prepare, VolumeSpec, Volumes};

use crate::common::{self, fails, ok, require_root, tug, unique};

/// Unmounts whatever a failed test left mounted under its root.
struct MountGuard(std::path::PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let root = std::fs::canonicalize(&self.0).unwrap_or_else(|_| self.0.clone());
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for l in info.lines() {
            if let Some(mp) = l.split(' ').nth(4)
                && mp.starts_with(&*root.to_string_lossy())
            {
                let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn assert_no_mounts_under(root: &std::path::Path) {
    let root = std::fs::canonicalize(root).unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains(&*root.to_string_lossy()),
        "mounts remain under {}",
        root.display()
    );
}

#[test]
fn volume_cli_create_ls_inspect_rm_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let name = unique("data");
    let out = ok(tug(tmp.path()).args(["volume", "create", "--label", "team=a", &name]));
    assert_eq!(out.trim(), name);
    let err = fails(tug(tmp.path()).args(["volume", "create", &name]));
    assert!(err.contains("already exists"), "{err}");
    let err = fails(tug(tmp.path()).args(["volume", "create", "../evil"]));
    assert!(err.contains("invalid volume name"), "{err}");
    let err = fails(tug(tmp.path()).args(["volume", "create", "-o", "size=1", "x1"]));
    assert!(err.contains("not supported"), "{err}");
    let anon = ok(tug(tmp.path()).args(["volume", "create"]))
        .trim()
        .to_string();
    assert_eq!(anon.len(), 64);
    let ls = ok(tug(tmp.path()).args(["volume", "ls", "-q"]));
    assert!(ls.contains(&name) && ls.contains(&anon), "{ls}");
    let js = ok(tug(tmp.path()).args(["volume", "inspect", &name]));
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert_eq!(v[0]["labels"]["team"], "a");
    let mp = std::path::PathBuf::from(v[0]["mountpoint"].as_str().unwrap());
    assert!(mp.ends_with(format!("volumes/{name}/_data")) && mp.is_dir());
    std::fs::write(mp.join("keep.txt"), "kept").unwrap();
    // Reopening the store (a later `up`) sees the same data.
    let vols = Volumes::open(tmp.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(vols.mountpoint(&name).join("keep.txt")).unwrap(),
        "kept"
    );
    // Plain prune takes anonymous volumes only; --all takes the named one too.
    let pruned = ok(tug(tmp.path()).args(["volume", "prune"]));
    assert_eq!(pruned.trim(), anon);
    assert!(mp.join("keep.txt").exists());
    ok(tug(tmp.path()).args(["volume", "rm", &name]));
    assert!(!mp.exists());
    let err = fails(tug(tmp.path()).args(["volume", "rm", &name]));
    assert!(err.contains("not found"), "{err}");
    let err = vols.require_external("nope").unwrap_err().to_string();
    assert!(err.contains("external"), "{err}");
}

#[test]
fn volume_in_use_by_a_container_record_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let vols = Volumes::open(tmp.path()).unwrap();
    let name = unique("used");
    let info = vols
        .create(&VolumeSpec {
            name: name.clone(),
            ..Default::default()
        })
        .unwrap();
    let cdir = tmp.path().join("containers/abc123");
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::write(
        cdir.join("config.json"),
        serde_json::json!({"mounts": [{"source": info.mountpoint}]}).to_string(),
    )
    .unwrap();
    let err = fails(tug(tmp.path()).args(["volume", "rm", &name]));
    assert!(err.contains("in use by abc123"), "{err}");
    let out = ok(tug(tmp.path()).args(["volume", "prune", "--all"]));
    assert!(!out.contains(&name));
    ok(tug(tmp.path()).args(["volume", "rm", "--force", &name]));
    assert!(!vols.exists(&name).unwrap());
}

#[test]
fn volume_copy_up_from_image_and_ownership_for_non_root_user() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let _g = MountGuard(tmp.path().to_path_buf());
    let reference = common::busybox_image(tmp.path());
    let store = ImageStore::open(tmp.path()).unwrap();
    let image = store.resolve(&reference).unwrap();
    let layers = store.layer_dirs(&image).unwrap();
    let vols = Volumes::open(tmp.path()).unwrap();

    // A new empty volume over /etc gets the image's /etc.
    let etc = unique("etc");
    vols.ensure(&VolumeSpec {
        name: etc.clone(),
        ..Default::default()
    })
    .unwrap();
    let how = Prepare {
        layers: layers.clone(),
        target: "/etc".into(),
        uid: 1000,
        gid: 1000,
        ..Default::default()
    };
    let data = vols.prepare(&etc, &how).unwrap();
    let passwd = std::fs::read_to_string(data.join("passwd")).unwrap();
    assert!(passwd.contains("app:x:1000"), "{passwd}");
    // The image's directory owner (root) is kept, not the user's.
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), 0);
    // Only the first use copies: a file deleted by the service stays deleted.
    std::fs::remove_file(data.join("passwd")).unwrap();
    vols.prepare(&etc, &how).unwrap();
    assert!(!data.join("passwd").exists());

    // nocopy leaves it empty.
    let nc = unique("nocopy");
    vols.ensure(&VolumeSpec {
        name: nc.clone(),
        ..Default::default()
    })
    .unwrap();
    let d = vols
        .prepare(
            &nc,
            &Prepare {
                nocopy: true,
                ..how.clone()
            },
        )
        .unwrap();
    assert!(std::fs::read_dir(&d).unwrap().next().is_none());

    // A path the image lacks, non-root USER: the volume belongs to that user.
    let own = unique("own");
    vols.ensure(&VolumeSpec {
        name: own.clone(),
        ..Default::default()
    })
    .unwrap();
    let d = vols
        .prepare(
            &own,
            &Prepare {
                target: "/home/app/data".into(),
                ..how.clone()
            },
        )
        .unwrap();
    let md = std::fs::metadata(&d).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    // Root USER: stays root.
    let rootv = unique("rootv");
    vols.ensure(&VolumeSpec {
        name: rootv.clone(),
        ..Default::default()
    })
    .unwrap();
    let d = vols
        .prepare(
            &rootv,
            &Prepare {
                target: "/srv".into(),
                uid: 0,
                gid: 0,
                ..how
            },
        )
        .unwrap();
    assert_eq!(std::fs::metadata(&d).unwrap().uid(), 0);
    for n in [etc, nc, own, rootv] {
        vols.remove(&n, &[]).unwrap();
    }
    assert!(vols.list().unwrap().is_empty());
}

#[test]
fn volume_driver_opts_bind_and_tmpfs_are_mounted_and_unmounted() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let _g = MountGuard(tmp.path().to_path_buf());
    let vols = Volumes::open(tmp.path()).unwrap();
    let src = tmp.path().join("hostdir");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("from-host"), "hi").unwrap();

    let b = unique("bind");
    let mut opts = BTreeMap::new();
    opts.insert("type".to_string(), "none".to_string());
    opts.insert("o".to_string(), "bind".to_string());
    opts.insert("device".to_string(), src.display().to_string());
    vols.create(&VolumeSpec {
        name: b.clone(),
        driver_opts: opts,
        ..Default::default()
    })
    .unwrap();
    let d = vols.prepare(&b, &Prepare::default()).unwrap();
    assert!(volume::is_mount_point(&d).unwrap());
    assert_eq!(std::fs::read_to_string(d.join("from-host")).unwrap(), "hi");
    std::fs::write(d.join("from-volume"), "yo").unwrap();
    assert!(src.join("from-volume").exists());

    let t = unique("tmpfs");
    let mut opts = BTreeMap::new();
    opts.insert("type".to_string(), "tmpfs".to_string());
    opts.insert("o".to_string(), "size=1m,mode=0700".to_string());
    vols.create(&VolumeSpec {
        name: t.clone(),
        driver_opts: opts,
        ..Default::default()
    })
    .unwrap();
    let d = vols.prepare(&t, &Prepare::default()).unwrap();
    let st = nix::sys::statfs::statfs(&d).unwrap();
    assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);

    // Removing unmounts; the bind source on the host keeps its files.
    vols.remove(&b, &[]).unwrap();
    vols.remove(&t, &[]).unwrap();
    assert!(src.join("from-host").exists() && src.join("from-volume").exists());
    assert_no_mounts_under(tmp.path());
    let left: BTreeSet<String> = vols.list().unwrap().into_iter().map(|v| v.name).collect();
    assert!(left.is_empty(), "{left:?}");
}
