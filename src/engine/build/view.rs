//! A read-only view of a stack of layer directories as overlayfs would merge them, without
//! mounting anything: lookups, symlink resolution confined to the root, directory listings
//! and file reads. The build context is a view of one directory.
//!
//! Every lookup goes through `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` on the layer's directory fd with a path that [`View::resolve`]
//! made free of symlinks, so nothing outside a layer is ever reached, whatever the layers or
//! the context hold (a symlink `etc -> /` resolves to the view's root). Symlinks are followed
//! by this module, not the kernel, because they must resolve in the *merged* tree.
//!
//! This is the builder's own in-root helper; `engine::runtime` is getting general ones (see
//! the report of issue 17) and the two should be unified.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

/// Symlinks followed in one resolution before giving up (as Linux's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (device, fifo, socket).
    Other,
}

/// Metadata of an entry of the view.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Kind.
    pub kind: Kind,
    /// Permission bits and set-id/sticky bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Device number (devices).
    pub rdev: u64,
    /// Index of the layer that provides it (0 = lowest).
    pub layer: usize,
    /// Symlink target.
    pub target: Option<PathBuf>,
}

/// A merged, read-only view of layer directories (lowest first).
#[derive(Debug, Clone)]
pub struct View {
    roots: Arc<Vec<OwnedFd>>,
    dirs: Arc<Vec<PathBuf>>,
    /// Lookups already made (the layers do not change while a build reads them).
    memo: Arc<std::sync::Mutex<std::collections::HashMap<Vec<String>, Option<Entry>>>>,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_IN_ROOT
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

fn cpath(comps: &[String]) -> CString {
    let s = if comps.is_empty() {
        ".".to_string()
    } else {
        comps.join("/")
    };
    CString::new(s).unwrap_or_default()
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn opaque(fd: &OwnedFd) -> bool {
    // An O_PATH descriptor has no xattrs of its own: through its /proc link.
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd));
    let mut buf = [0u8; 4];
    rustix::fs::getxattr(path.as_str(), "trusted.overlay.opaque", &mut buf[..])
        .is_ok_and(|n| n == 1 && buf[0] == b'y')
}

impl View {
    /// A view of `dirs` (lowest first). An empty list is an empty tree (`FROM scratch`).
    pub fn open(dirs: &[PathBuf]) -> std::io::Result<View> {
        let mut roots = Vec::with_capacity(dirs.len());
        for d in dirs {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags_dir()
                .open(d)?;
            roots.push(OwnedFd::from(f));
        }
        Ok(View {
            roots: Arc::new(roots),
            dirs: Arc::new(dirs.to_vec()),
            memo: Arc::default(),
        })
    }

    /// The layer directories.
    #[must_use]
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn open_in(&self, layer: usize, comps: &[String], flags: OFlag) -> std::io::Result<OwnedFd> {
        openat2(
            self.roots[layer].as_fd(),
            cpath(comps).as_c_str(),
            how(flags),
        )
        .map_err(std::io::Error::from)
    }

    fn meta_in(&self, layer: usize, comps: &[String]) -> Option<std::fs::Metadata> {
        let fd = self
            .open_in(layer, comps, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .ok()?;
        File::from(fd).metadata().ok()
    }

    /// The layers (top first) in which directory `comps` (symlink-free) is merged, in
    /// order; empty when it is not a directory of the view.
    fn dir_layers(&self, comps: &[String]) -> Vec<usize> {
        // One layer (a context, a single-layer image): nothing to merge.
        if self.roots.len() == 1 {
            return match self.meta_in(0, comps) {
                Some(m) if m.is_dir() => vec![0],
                _ => Vec::new(),
            };
        }
        let mut set: Vec<usize> = (0..self.roots.len()).rev().collect();
        for i in 0..comps.len() {
            let prefix = &comps[..=i];
            let mut next = Vec::new();
            for (k, &l) in set.iter().enumerate() {
                match self.meta_in(l, prefix) {
                    None => continue,
                    Some(m) if m.is_dir() => {
                        next.push(l);
                        // An opaque directory hides the layers below it (only worth asking
                        // when there are any).
                        if k + 1 < set.len()
                            && let Ok(fd) =
                                self.open_in(l, prefix, OFlag::O_PATH | OFlag::O_DIRECTORY)
                            && opaque(&fd)
                        {
                            break;
                        }
                    }
                    // A whiteout or a non-directory hides everything below.
                    Some(_) => break,
                }
            }
            if next.is_empty() {
                return next;
            }
            set = next;
        }
        set
    }

    /// The entry at the symlink-free path `comps`, without following a final symlink.
    #[must_use]
    pub fn lstat(&self, comps: &[String]) -> Option<Entry> {
        if let Some(e) = self
            .memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(comps)
        {
            return e.clone();
        }
        let e = self.lstat_uncached(comps);
        self.memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(comps.to_vec(), e.clone());
        e
    }

    fn lstat_uncached(&self, comps: &[String]) -> Option<Entry> {
        if comps.is_empty() {
            let top = *self.dir_layers(&[]).first()?;
            let m = self.meta_in(top, &[])?;
            return Some(entry(&m, top, None));
        }
        let (name, parent) = comps.split_last()?;
        let _ = name;
        for l in self.dir_layers(parent) {
            if let Some(m) = self.meta_in(l, comps) {
                if is_whiteout(&m) {
                    return None;
                }
                let target = if m.file_type().is_symlink() {
                    self.readlink_in(l, comps)
                } else {
                    None
                };
                return Some(entry(&m, l, target));
            }
        }
        None
    }

    fn readlink_in(&self, layer: usize, comps: &[String]) -> Option<PathBuf> {
        let fd = self
            .open_in(layer, comps, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .ok()?;
        // An empty path reads the link `fd` itself (an O_PATH | O_NOFOLLOW descriptor).
        let target = rustix::fs::readlinkat(&fd, c"", Vec::new()).ok()?;
        Some(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }

    /// Resolves `path` (absolute or relative to the root) inside the view: `..` stops at
    /// the root, symlinks are followed inside the view (the last one only with
    /// `follow_last`). Returns the symlink-free components; the last may not exist.
    pub fn resolve(&self, path: &str, follow_last: bool) -> std::io::Result<Vec<String>> {
        let mut todo: Vec<String> = split(path).into_iter().rev().collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." | "" => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            let last = todo.is_empty();
            if last && !follow_last {
                break;
            }
            match self.lstat(&cur) {
                Some(Entry {
                    kind: Kind::Symlink,
                    target: Some(t),
                    ..
                }) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    cur.pop();
                    let t = t.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        cur.clear();
                    }
                    for p in split(&t).into_iter().rev() {
                        todo.push(p);
                    }
                }
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => {}
                Some(_) if !last => {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                Some(_) => {}
                None if !last => {
                    // A missing parent: the rest is appended as it is (may be created).
                    for p in todo.drain(..).rev() {
                        if p == ".." {
                            cur.pop();
                        } else if p != "." && !p.is_empty() {
                            cur.push(p);
                        }
                    }
                    break;
                }
                None => {}
            }
        }
        Ok(cur)
    }

    /// Entry names of directory `comps` (symlink-free), merged, whiteouts removed, sorted.
    #[must_use]
    pub fn list(&self, comps: &[String]) -> Vec<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut hidden = std::collections::BTreeSet::new();
        for l in self.dir_layers(comps) {
            let Ok(fd) = self.open_in(l, comps, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
                continue;
            };
            let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
                continue;
            };
            for e in dir.iter().filter_map(Result::ok) {
                let n = e.file_name().to_bytes();
                if n == b"." || n == b".." {
                    continue;
                }
                let name = String::from_utf8_lossy(n).into_owned();
                if names.contains(&name) || hidden.contains(&name) {
                    continue;
                }
                let mut p = comps.to_vec();
                p.push(name.clone());
                match self.meta_in(l, &p) {
                    Some(m) if is_whiteout(&m) => {
                        hidden.insert(name);
                    }
                    Some(_) => {
                        names.insert(name);
                    }
                    None => {}
                }
            }
        }
        names.into_iter().collect()
    }

    /// Opens the regular file at symlink-free `comps` for reading.
    pub fn open_file(&self, comps: &[String]) -> std::io::Result<File> {
        let e = self
            .lstat(comps)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))?;
        if e.kind != Kind::File {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.open_in(e.layer, comps, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)
            .map(File::from)
    }

    /// Reads a small text file (`/etc/passwd`), following symlinks inside the view.
    #[must_use]
    pub fn read_text(&self, path: &str) -> Option<String> {
        let comps = self.resolve(path, true).ok()?;
        let mut f = self.open_file(&comps).ok()?;
        let mut s = String::new();
        f.by_ref().take(16 << 20).read_to_string(&mut s).ok()?;
        Some(s)
    }

    /// Extended attributes of a non-symlink entry (name, value), `trusted.overlay.*` left
    /// out; read through an `O_PATH` descriptor opened inside the layer.
    #[must_use]
    pub fn xattrs(&self, comps: &[String], layer: usize) -> Vec<(String, Vec<u8>)> {
        if layer >= self.roots.len() {
            return Vec::new();
        }
        match self.open_in(layer, comps, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(fd) => list_xattrs(Path::new(&format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            ))),
            Err(_) => Vec::new(),
        }
    }
}

/// The extended attributes of `p` (a `/proc/self/fd/N` path follows to its file; any other
/// path is read without following a final symlink), `trusted.overlay.*` left out.
#[must_use]
pub fn list_xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let follow = p.starts_with("/proc/self/fd");
    let mut names = vec![0u8; 4096];
    let n = if follow {
        rustix::fs::listxattr(p, &mut names[..])
    } else {
        rustix::fs::llistxattr(p, &mut names[..])
    };
    let Ok(n) = n else {
        return Vec::new();
    };
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let key = OsStr::from_bytes(name);
        let mut val = vec![0u8; 65536];
        let m = if follow {
            rustix::fs::getxattr(p, key, &mut val[..])
        } else {
            rustix::fs::lgetxattr(p, key, &mut val[..])
        };
        if let Ok(m) = m {
            val.truncate(m);
            out.push((String::from_utf8_lossy(name).into_owned(), val));
        }
    }
    out.sort();
    out
}

trait DirFlags {
    fn custom_flags_dir(&mut self) -> &mut Self;
}

impl DirFlags for std::fs::OpenOptions {
    fn custom_flags_dir(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
    }
}

fn entry(m: &std::fs::Metadata, layer: usize, target: Option<PathBuf>) -> Entry {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other
    };
    Entry {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        mtime: m.mtime(),
        rdev: m.rdev(),
        layer,
        target,
    }
}

/// Splits a path into its non-empty components.
#[must_use]
pub fn split(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mknod_whiteout(p: &Path) {
        use nix::sys::stat::{Mode, SFlag, mknod};
        mknod(p, SFlag::S_IFCHR, Mode::empty(), 0).expect("mknod needs root");
    }

    #[test]
    fn view_merges_layers_and_confines_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let (l0, l1) = (t.path().join("l0"), t.path().join("l1"));
        std::fs::create_dir_all(l0.join("etc")).unwrap();
        std::fs::create_dir_all(l0.join("gone")).unwrap();
        std::fs::create_dir_all(l0.join("opq")).unwrap();
        std::fs::write(l0.join("opq/old"), "x").unwrap();
        std::fs::write(l0.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(l0.join("etc/a"), "a0").unwrap();
        std::fs::create_dir_all(l1.join("etc")).unwrap();
        std::fs::write(l1.join("etc/a"), "a1").unwrap();
        std::fs::create_dir_all(l1.join("opq")).unwrap();
        std::fs::write(l1.join("opq/new"), "y").unwrap();
        rustix::fs::setxattr(
            l1.join("opq"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        mknod_whiteout(&l1.join("gone"));
        symlink("/etc", l1.join("link")).unwrap();
        symlink("../../../../etc/passwd", l1.join("escape")).unwrap();
        symlink("/", l1.join("up")).unwrap();
        let v = View::open(&[l0.clone(), l1.clone()]).unwrap();
        assert_eq!(v.list(&[]), vec!["escape", "etc", "link", "opq", "up"]);
        assert_eq!(v.list(&["etc".into()]), vec!["a", "passwd"]);
        assert_eq!(v.list(&["opq".into()]), vec!["new"]);
        assert!(v.lstat(&["gone".into()]).is_none());
        assert_eq!(v.read_text("/link/a").unwrap(), "a1");
        assert_eq!(
            v.read_text("escape").unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(
            v.resolve("/up/up/etc/../etc/a", true).unwrap(),
            vec!["etc", "a"]
        );
        assert_eq!(v.resolve("link", false).unwrap(), vec!["link"]);
        assert_eq!(
            v.resolve("missing/x/../y", true).unwrap(),
            vec!["missing", "y"]
        );
        symlink("loop", l1.join("loop")).unwrap();
        assert!(v.resolve("loop", true).is_err());
        assert!(View::open(&[]).unwrap().lstat(&["x".into()]).is_none());
    }
}
