//! The state root is private to root: how tug creates the directories and files it keeps,
//! and the one-time tightening of a root made by an older tug.
//!
//! Everything tug keeps lives under the state root (`/var/lib/tug`, `--root`, `TUG_ROOT`) and
//! the host-wide run directory (`/run/tug`, `TUG_RUN_DIR`): image blobs and unpacked layers,
//! containers' records (`container.json` holds the environment, passwords included), logs,
//! upper layers, volumes' data, copies of secrets. No other local user may reach any of it: a
//! layer may hold a directory that is 1777 inside the image (a host user could write into
//! every container started from it), a container may leave a setuid-root binary in its upper
//! layer (a host user could run it), and records and logs hold secrets. Hence:
//!
//! - the root and every directory tug makes in it are `0700` ([`create_dir_all`],
//!   [`create_dir`]); this alone makes everything below unreachable to other users, whatever
//!   the modes further down;
//! - every file tug writes is `0600` ([`write_atomic`] with [`FILE_MODE`], [`write_new`],
//!   [`open_options`]), through a temporary file with a unique name (`util::fs`: process id,
//!   a counter and random bits, so two threads of one command never share one);
//! - content whose owner and mode a container sees keeps them: the root directories of image
//!   layers and upper layers (the container's `/`), `_data` of volumes, the `hosts`,
//!   `hostname` and `resolv.conf` bound into containers (`0644`), and copies of secrets and
//!   configs (the owner and mode compose gives them, `0444` by default). They are private
//!   because their parents are.
//!
//! Why `0700` and never `0711`: no path under the root is ever looked up by a container's
//! non-root user. The kernel reaches lower and upper layers through the overlay mount, which
//! checks access to them with the credentials of the process that mounted it (root), and a
//! bind mount (volumes, secrets, configs, hosts files) hands the container the mounted inode
//! itself, not a path through its parents. Everything else under the root is opened by tug
//! running as root. (User namespaces with a remapped root would change this: the remapped
//! root would need to traverse the path to its layers, and `0711` on those directories.)
//!
//! A root made by an older tug (`0755` directories, `0644` files) is tightened once, by the
//! first command that opens it ([`ensure_root`]): the root, tug's directories in it and the
//! files of tug's own records get the modes above; content, and anything in the directory
//! that is not tug's, is left alone. A marker file
//! (`<root>/.private-v1`) records that it was done, so later commands pay one `stat`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::util::fs::{Durability, write_atomic};

/// Mode of every directory tug makes in the state root.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file tug writes for itself in the state root.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the files bound into containers that every user in them must read (`hosts`,
/// `hostname`, `resolv.conf`).
pub const SHARED_FILE_MODE: u32 = 0o644;
/// The marker of a root whose modes are tightened.
pub const MARKER: &str = ".private-v1";

/// Creates `path` and its missing parents as `0700` directories (existing ones are kept).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates the directory `path` (`0700`); its parent must exist.
pub fn create_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(DIR_MODE).create(path)
}

/// `OpenOptions` whose created file is `0600`.
#[must_use]
pub fn open_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Gives an open file `mode` when the process umask may have dropped bits of it (any bit
/// for group or others).
fn fix_mode(f: &File, mode: u32) -> io::Result<()> {
    if mode & 0o077 != 0 {
        f.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Writes a file that nobody reads yet (in a directory that is not in place yet), with
/// `mode`, and an `fsync` when `sync`: no temporary file needed.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    fix_mode(&f, mode)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_data()?;
    }
    Ok(())
}

/// What [`ensure_root`] changed in a root made by an older tug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    /// The root.
    pub root: PathBuf,
    /// Directories and files whose mode was changed.
    pub changed: usize,
}

/// Roots this process has already checked.
fn checked() -> &'static Mutex<HashSet<PathBuf>> {
    static CHECKED: std::sync::OnceLock<Mutex<HashSet<PathBuf>>> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Makes the state root private: creates it (`0700`) when missing; tightens a root made by
/// an older tug once (see the module docs) and says what it changed, so the caller can tell
/// the user. Costs one `stat` of the marker when the root is already private, and nothing
/// the second time in a process.
///
/// # Errors
/// The root cannot be created, or a mode cannot be changed.
pub fn ensure_root(root: &Path) -> io::Result<Option<Tightened>> {
    if checked().lock().map(|s| s.contains(root)).unwrap_or(false) {
        return Ok(None);
    }
    let marker = root.join(MARKER);
    let result = match fs::metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dir_all(root)?;
            write_marker(&marker)?;
            None
        }
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(_) if fs::symlink_metadata(&marker).is_ok() => None,
        Ok(_) => {
            let changed = tighten(root)?;
            write_marker(&marker)?;
            (changed > 0).then(|| Tightened {
                root: root.to_path_buf(),
                changed,
            })
        }
    };
    if let Ok(mut s) = checked().lock() {
        s.insert(root.to_path_buf());
    }
    Ok(result)
}

/// Makes the directory `dir` (`/run/tug`) `0700`, creating it when missing; an existing
/// one with other modes is changed. Once per process per directory.
///
/// # Errors
/// The directory cannot be created or changed.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if checked().lock().map(|s| s.contains(dir)).unwrap_or(false) {
        return Ok(());
    }
    create_dir_all(dir)?;
    let mut n = 0;
    set_mode(dir, DIR_MODE, &mut n)?;
    if let Ok(mut s) = checked().lock() {
        s.insert(dir.to_path_buf());
    }
    Ok(())
}

fn write_marker(marker: &Path) -> io::Result<()> {
    write_atomic(
        marker,
        b"tug: this state root is private to root (directories 0700, records 0600); \
          see docs/ARCHITECTURE.md, \"State root permissions\"\n",
        FILE_MODE,
        Durability::FileAndDir,
    )
}

/// Sets the permission bits of `path` (not following a symlink; a symlink is left alone)
/// to `mode` when they differ; counts the change.
fn set_mode(path: &Path, mode: u32, changed: &mut usize) -> io::Result<()> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if m.file_type().is_symlink() || m.mode() & 0o7777 == mode {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    *changed += 1;
    Ok(())
}

/// [`set_mode`] for the walk of an older root: a path that cannot be changed (an immutable
/// file, a read-only mount inside the root) is left as it is; the root's own `0700` is the
/// barrier, the modes below are a second one.
fn try_mode(path: &Path, mode: u32, changed: &mut usize) {
    let _ = set_mode(path, mode, changed);
}

/// Entries of a directory (none when it cannot be read).
fn entries(dir: &Path) -> Vec<(PathBuf, fs::FileType, String)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let t = e.file_type().ok()?;
            Some((e.path(), t, e.file_name().to_string_lossy().into_owned()))
        })
        .collect()
}

/// Directories `0700` and regular files `0600` in the whole tree under `dir`, not crossing
/// into other file systems (mount points) and not following symlinks. `keep_files` names
/// directories whose files keep their modes (copies of secrets and configs).
fn tighten_tree(dir: &Path, dev: u64, keep_files: &dyn Fn(&Path) -> bool, changed: &mut usize) {
    try_mode(dir, DIR_MODE, changed);
    let keep = keep_files(dir);
    for (p, t, _) in entries(dir) {
        if t.is_dir() {
            if fs::symlink_metadata(&p).is_ok_and(|m| m.dev() == dev) {
                tighten_tree(&p, dev, keep_files, changed);
            }
        } else if t.is_file() && !keep {
            try_mode(&p, FILE_MODE, changed);
        }
    }
}

/// The directories tug makes directly in a state root; the tightening walks these only.
const TOP_DIRS: &[&str] = &[
    "images",
    "layers",
    "containers",
    "volumes",
    "projects",
    "networks",
    "netns",
    "ports",
    "runc",
];

/// The one-time tightening of a root made by an older tug. Content (layers, upper layers,
/// volumes' data, files bound into containers, network namespaces) keeps its modes, and so
/// does whatever else the directory holds (a `--root` pointed at a directory with other
/// things in it changes only tug's). A shared directory (sticky or writable by others, as
/// `/tmp`) given as the root keeps its own mode: tug's directories in it are private.
fn tighten(root: &Path) -> io::Result<usize> {
    let mut n = 0;
    // The root itself may be a symlink (`/var/lib/tug` → a larger disk): its target is
    // the directory to close.
    let meta = fs::metadata(root)?;
    let shared = meta.mode() & 0o1002 != 0;
    if !shared && meta.mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(root, fs::Permissions::from_mode(DIR_MODE))?;
        n += 1;
    }
    for (p, t, name) in entries(root) {
        if !t.is_dir() || !TOP_DIRS.contains(&name.as_str()) {
            continue;
        }
        // Below each of tug's directories, mount points (another disk holding `images/`
        // is fine; a mount made inside one is not tug's) are not crossed.
        let dev = fs::symlink_metadata(&p).map_or(meta.dev(), |m| m.dev());
        match name.as_str() {
            // Layer roots are the image's own directories; network namespaces are mounts.
            "layers" | "netns" => try_mode(&p, DIR_MODE, &mut n),
            "containers" => {
                try_mode(&p, DIR_MODE, &mut n);
                for (c, ct, cname) in entries(&p) {
                    if !ct.is_dir() {
                        continue;
                    }
                    if cname == ".names" {
                        tighten_tree(&c, dev, &|_| false, &mut n);
                        continue;
                    }
                    try_mode(&c, DIR_MODE, &mut n);
                    try_mode(&c.join("bundle"), DIR_MODE, &mut n);
                    try_mode(&c.join("work"), DIR_MODE, &mut n);
                    for f in [
                        "container.json",
                        "state.json",
                        "container.log",
                        "container.log.1",
                        "stop-requested",
                        "bundle/config.json",
                    ] {
                        try_mode(&c.join(f), FILE_MODE, &mut n);
                    }
                }
            }
            "volumes" => {
                try_mode(&p, DIR_MODE, &mut n);
                for (v, vt, _) in entries(&p) {
                    if vt.is_dir() {
                        try_mode(&v, DIR_MODE, &mut n);
                        try_mode(&v.join("volume.json"), FILE_MODE, &mut n);
                    }
                }
            }
            // projects/<p>/files/<container>/{secret,config}/<name>: owner and mode as
            // compose says.
            "projects" => tighten_tree(
                &p,
                dev,
                &|d| {
                    d.parent()
                        .and_then(Path::parent)
                        .and_then(Path::file_name)
                        .is_some_and(|f| f == "files")
                },
                &mut n,
            ),
            _ => tighten_tree(&p, dev, &|_| false, &mut n),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn private_new_root_is_0700_with_marker() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("a/root");
        assert_eq!(ensure_root(&root).unwrap(), None);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        assert_eq!(mode(&root.join(MARKER)), 0o600);
    }

    #[test]
    fn private_old_root_is_tightened_once_content_kept() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let open =
            |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        let id = "a".repeat(64);
        for d in [
            format!("containers/{id}/upper/tmp"),
            format!("containers/{id}/bundle/rootfs"),
            "containers/.names".into(),
            "layers/abc/tmp".into(),
            "volumes/v/_data".into(),
            "projects/p/files/c1/secret".into(),
            "images/blobs/sha256".into(),
            "networks/n".into(),
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let files = [
            format!("containers/{id}/container.json"),
            format!("containers/{id}/container.log"),
            format!("containers/{id}/bundle/config.json"),
            format!("containers/{id}/hosts"),
            "containers/.names/web".into(),
            "volumes/v/volume.json".into(),
            "volumes/v/_data/file".into(),
            "projects/p/files/c1/secret/pw".into(),
            "projects/p.lock".into(),
            "images/index.json".into(),
            "images/blobs/sha256/00".into(),
            "networks/n/network.json".into(),
            "layers/abc/etc".into(),
        ];
        for f in &files {
            fs::write(root.join(f), "x").unwrap();
            open(&root.join(f), 0o644);
        }
        open(&root.join("projects/p/files/c1/secret/pw"), 0o444);
        open(&root.join("layers/abc/tmp"), 0o1777);
        open(&root.join(format!("containers/{id}/upper/tmp")), 0o1777);
        // Not tug's: left as they are.
        fs::create_dir_all(root.join("notes")).unwrap();
        fs::write(root.join("notes/todo"), "x").unwrap();
        fs::write(root.join("README"), "x").unwrap();
        open(&root.join("notes/todo"), 0o644);
        open(&root.join("README"), 0o644);
        open(&root, 0o755);
        let r = ensure_root(&root).unwrap().unwrap();
        assert_eq!(mode(&root.join("notes")), 0o755);
        assert_eq!(mode(&root.join("notes/todo")), 0o644);
        assert_eq!(mode(&root.join("README")), 0o644);
        assert!(r.changed > 10, "{r:?}");
        assert_eq!(mode(&root), 0o700);
        for d in [
            "containers",
            "layers",
            "volumes",
            "volumes/v",
            "projects",
            "images",
            "networks/n",
        ] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        for f in [
            format!("containers/{id}/container.json"),
            format!("containers/{id}/container.log"),
            format!("containers/{id}/bundle/config.json"),
            "containers/.names/web".into(),
            "volumes/v/volume.json".into(),
            "projects/p.lock".into(),
            "images/index.json".into(),
            "images/blobs/sha256/00".into(),
            "networks/n/network.json".into(),
        ] {
            assert_eq!(mode(&root.join(&f)), 0o600, "{f}");
        }
        // Content keeps its modes.
        assert_eq!(mode(&root.join(format!("containers/{id}/hosts"))), 0o644);
        assert_eq!(mode(&root.join("projects/p/files/c1/secret/pw")), 0o444);
        assert_eq!(mode(&root.join("layers/abc/tmp")), 0o1777);
        assert_eq!(mode(&root.join("layers/abc/etc")), 0o644);
        assert_eq!(
            mode(&root.join(format!("containers/{id}/upper/tmp"))),
            0o1777
        );
        assert_eq!(mode(&root.join("volumes/v/_data")), 0o755);
        assert_eq!(mode(&root.join("volumes/v/_data/file")), 0o644);
        assert!(root.join(MARKER).exists());
        // Once: a marked root is not walked again, even by a fresh process (the memo aside).
        checked().lock().unwrap().clear();
        open(&root.join("images/index.json"), 0o644);
        assert_eq!(ensure_root(&root).unwrap(), None);
        assert_eq!(mode(&root.join("images/index.json")), 0o644);
    }

    #[test]
    fn private_run_dir_made_0755_by_an_older_tug_is_tightened() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("run");
        fs::create_dir(&run).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&run).unwrap();
        assert_eq!(mode(&run), 0o700);
        let fresh = t.path().join("fresh/run");
        ensure_private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }

    #[test]
    fn private_shared_directory_as_root_keeps_its_mode() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("shared");
        fs::create_dir_all(root.join("images")).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_root(&root).unwrap();
        assert_eq!(mode(&root), 0o1777);
        assert_eq!(mode(&root.join("images")), 0o700);
    }

    #[test]
    fn private_root_behind_a_symlink_is_tightened() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("disk/tug");
        fs::create_dir_all(real.join("containers")).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
        let link = t.path().join("tug");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(ensure_root(&link).unwrap().is_some());
        assert_eq!(mode(&real), 0o700);
        assert_eq!(mode(&real.join("containers")), 0o700);
    }

    #[test]
    fn private_writes_are_0600() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.json");
        write_atomic(&p, b"1", FILE_MODE, Durability::None).unwrap();
        assert_eq!(mode(&p), 0o600);
        write_new(&t.path().join("g"), b"1", FILE_MODE, false).unwrap();
        assert_eq!(mode(&t.path().join("g")), 0o600);
    }
}
