//! Paths inside a root directory, resolved inside it.
//!
//! A container's root filesystem (and an image layer) is written by whoever made the image,
//! and while the container runs, by its processes: any directory in it may be a symlink to
//! `/`, to `../../..`, or to a host path. Joining a path onto the rootfs's host path and
//! handing it to the kernel resolves those links against the *host's* root. Everything here
//! instead goes through a descriptor of the root and **`openat2(2)`** with
//! `RESOLVE_IN_ROOT` (an absolute symlink or a `..` stops at that descriptor, exactly as if
//! the process were `chroot`ed there) and `RESOLVE_NO_MAGICLINKS` (no `/proc/<pid>/fd/N`-style
//! link may lead to an object outside). Missing directories are made one component at a
//! time, each with `mkdirat` in the directory just resolved, and files with
//! `O_CREAT | O_EXCL` (which never follows a link). What the caller gets is a descriptor of
//! the object, which it then uses (`/proc/self/fd/N` as a mount target, `*at` calls) without
//! resolving the path again.
//!
//! nix's `openat2` is used rather than the `pathrs` crate: tug needs openat2 (Linux 5.6) for
//! layer unpacking already, the runtime calls these functions in the clone child of a
//! single-threaded supervisor, where a small amount of plain code is easiest to reason about,
//! and pathrs's main addition — emulating the resolution on kernels without openat2 — is not
//! needed on the kernels tug supports.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, fstat, mkdirat};

/// The identity of a file: device and inode, plus its mount's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// The id of the mount it was reached through (`STATX_MNT_ID`).
    pub mnt_id: u64,
}

/// The identity of `path` relative to `dir` (`""` with `AT_EMPTY_PATH` for `dir` itself),
/// not following a final symlink.
pub fn identity_at(dir: BorrowedFd<'_>, path: &str) -> nix::Result<Identity> {
    use rustix::fs::{AtFlags, StatxFlags};
    let flags = if path.is_empty() {
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    let st = rustix::fs::statx(dir, path, flags, StatxFlags::INO | StatxFlags::MNT_ID)
        .map_err(|e| Errno::from_raw(e.raw_os_error()))?;
    Ok(Identity {
        dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        mnt_id: st.stx_mnt_id,
    })
}

/// The components of an absolute (or relative) path inside a root: `/`, `.` and empty
/// components are dropped; `..` is refused (`None`), as no spec or compose path needs it.
#[must_use]
pub fn components(path: &Path) -> Option<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The components of `path` for a resolution inside the root, `..` kept (the kernel stops it
/// at the root); `absolute` tells whether it starts at the root.
fn parts(path: &[u8]) -> (bool, Vec<OsString>) {
    let parts = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
        .collect();
    (path.first() == Some(&b'/'), parts)
}

fn cpath(components: &[OsString]) -> CString {
    if components.is_empty() {
        return c".".to_owned();
    }
    let mut b = Vec::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            b.push(b'/');
        }
        b.extend_from_slice(c.as_bytes());
    }
    // Components come from paths split at '/', which never hold a NUL byte where they come
    // from (Rust strings checked on the way in, readlink results).
    CString::new(b).unwrap_or_else(|_| c".".to_owned())
}

fn cname(name: &OsStr) -> nix::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// How many symlinks a creating resolution follows before it gives up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// A root directory, held open; every path given to it resolves inside it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    id: Identity,
}

impl Root {
    /// Opens `path` (a trusted host path: the rootfs, a layer or volume directory) as a root.
    pub fn open(path: &Path) -> nix::Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Root::from_fd(fd)
    }

    /// Takes `fd` (a directory) as a root.
    pub fn from_fd(fd: OwnedFd) -> nix::Result<Root> {
        let id = identity_at(fd.as_fd(), "")?;
        Ok(Root { fd, id })
    }

    /// The root's descriptor.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The root's identity when it was opened.
    #[must_use]
    pub fn identity(&self) -> Identity {
        self.id
    }

    /// True when `fd` is the root directory itself (a path that resolved to the root, e.g.
    /// through a symlink to `/`).
    #[must_use]
    pub fn is_root(&self, fd: BorrowedFd<'_>) -> bool {
        fstat(fd).is_ok_and(|st| st.st_dev == self.id.dev && st.st_ino == self.id.ino)
    }

    fn how(flags: OFlag, extra: ResolveFlag) -> OpenHow {
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | extra)
    }

    /// Opens `path` inside the root with `flags` (plus `O_CLOEXEC`) and the extra resolve
    /// flags `extra` (e.g. `RESOLVE_NO_SYMLINKS`).
    pub fn open_in(&self, path: &Path, flags: OFlag, extra: ResolveFlag) -> nix::Result<OwnedFd> {
        let (_, comps) = parts(path.as_os_str().as_bytes());
        self.open_parts(&comps, flags, extra)
    }

    fn open_parts(
        &self,
        comps: &[OsString],
        flags: OFlag,
        extra: ResolveFlag,
    ) -> nix::Result<OwnedFd> {
        openat2(
            self.fd.as_fd(),
            cpath(comps).as_c_str(),
            Self::how(flags, extra),
        )
    }

    fn open_dir(&self, comps: &[OsString]) -> nix::Result<OwnedFd> {
        self.open_parts(
            comps,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            ResolveFlag::empty(),
        )
    }

    /// Opens the directory `path` inside the root (`O_PATH`), making what is missing of it
    /// (mode `mode`, minus the umask) one component at a time; a dangling symlink on the way
    /// is followed (inside the root) and its target made, as runc does.
    pub fn mkdir_all(&self, path: &Path, mode: Mode) -> nix::Result<OwnedFd> {
        let (_, comps) = parts(path.as_os_str().as_bytes());
        match self.open_dir(&comps) {
            Err(Errno::ENOENT) => {}
            r => return r,
        }
        self.mkdir_parts(comps, mode, &mut 0)
    }

    /// [`Root::mkdir_all`] for a path known to be missing (the caller just tried it).
    pub fn mkdir_missing(&self, path: &Path, mode: Mode) -> nix::Result<OwnedFd> {
        let (_, comps) = parts(path.as_os_str().as_bytes());
        self.mkdir_parts(comps, mode, &mut 0)
    }

    /// Makes the missing directory `comps`: first as one `mkdirat` in its parent (the common
    /// case: only the last component is missing), else one component at a time.
    fn mkdir_parts(
        &self,
        comps: Vec<OsString>,
        mode: Mode,
        links: &mut usize,
    ) -> nix::Result<OwnedFd> {
        if let Some((last, parent)) = comps.split_last()
            && let Ok(dir) = self.open_dir(parent)
        {
            match mkdirat(dir.as_fd(), cname(last)?.as_c_str(), mode) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            match self.open_dir(&comps) {
                Err(Errno::ENOENT) => {}
                r => return r,
            }
        }
        let mut queue: std::collections::VecDeque<OsString> = comps.into();
        let mut done: Vec<OsString> = Vec::new();
        let mut dir = self.open_dir(&done)?;
        while let Some(c) = queue.pop_front() {
            done.push(c.clone());
            match self.open_dir(&done) {
                Ok(fd) => {
                    dir = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
            // `dir` was resolved inside the root: the new name is made in it, and the prefix
            // is resolved again (inside the root) in case something else is there now.
            match mkdirat(dir.as_fd(), cname(&c)?.as_c_str(), mode) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            match self.open_dir(&done) {
                Ok(fd) => dir = fd,
                Err(Errno::ENOENT) => {
                    // The name is a symlink to something missing: make its target instead.
                    let target = readlinkat(dir.as_fd(), cname(&c)?.as_c_str())?;
                    *links += 1;
                    if *links > MAX_LINKS {
                        return Err(Errno::ELOOP);
                    }
                    done.pop();
                    let (absolute, t) = parts(target.as_bytes());
                    if absolute {
                        done.clear();
                    }
                    for p in t.into_iter().rev() {
                        queue.push_front(p);
                    }
                    dir = self.open_dir(&done)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(dir)
    }

    /// Opens the file `path` inside the root (`O_PATH`), creating an empty regular file
    /// (mode `mode`, minus the umask) where nothing is, and the missing parent directories
    /// (mode 0755). A dangling symlink at the end is followed inside the root, and its target
    /// made.
    pub fn create_file(&self, path: &Path, mode: Mode) -> nix::Result<OwnedFd> {
        let (_, comps) = parts(path.as_os_str().as_bytes());
        let mut links = 0;
        self.create_parts(comps, mode, &mut links)
    }

    fn create_parts(
        &self,
        mut comps: Vec<OsString>,
        mode: Mode,
        links: &mut usize,
    ) -> nix::Result<OwnedFd> {
        loop {
            match self.open_parts(&comps, OFlag::O_PATH, ResolveFlag::empty()) {
                Err(Errno::ENOENT) => {}
                r => return r,
            }
            let Some(last) = comps.pop() else {
                return Err(Errno::ENOENT);
            };
            let dir = self.mkdir_parts(comps.clone(), Mode::from_bits_truncate(0o755), links)?;
            let name = cname(&last)?;
            // O_EXCL never follows a symlink at the last component: a dangling link there
            // fails with EEXIST.
            match openat(
                dir.as_fd(),
                name.as_c_str(),
                OFlag::O_RDONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                mode,
            ) {
                Ok(_) => {
                    comps.push(last);
                    return self.open_parts(&comps, OFlag::O_PATH, ResolveFlag::empty());
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            comps.push(last.clone());
            match self.open_parts(&comps, OFlag::O_PATH, ResolveFlag::empty()) {
                Err(Errno::ENOENT) => {}
                r => return r,
            }
            // A dangling symlink: create what it points to, inside the root.
            let target = readlinkat(dir.as_fd(), name.as_c_str())?;
            *links += 1;
            if *links > MAX_LINKS {
                return Err(Errno::ELOOP);
            }
            comps.pop();
            let (absolute, t) = parts(target.as_bytes());
            if absolute {
                comps.clear();
            }
            comps.extend(t);
        }
    }

    /// Reads the regular file `path` inside the root, up to `limit` bytes (`EFBIG` past it).
    pub fn read(&self, path: &Path, limit: u64) -> nix::Result<Vec<u8>> {
        use std::io::Read as _;
        let fd = self.open_in(
            path,
            OFlag::O_RDONLY | OFlag::O_NOCTTY,
            ResolveFlag::empty(),
        )?;
        let st = fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EINVAL);
        }
        let mut out = Vec::new();
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        if out.len() as u64 > limit {
            return Err(Errno::EFBIG);
        }
        Ok(out)
    }
}

/// `readlinkat(2)` of `name` in `dir`.
fn readlinkat(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> nix::Result<OsString> {
    nix::fcntl::readlinkat(dir, name)
}

/// `/proc/self/fd/N`: a path the kernel resolves to exactly the object of descriptor `N` (the
/// host's procfs, before the container's root becomes the process's root).
#[must_use]
pub fn proc_fd(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inroot_links_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        let root = t.path().join("root");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("climb")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", root.join("magic")).unwrap();
        let r = Root::open(&root).unwrap();
        // A link to / is the root itself.
        let fd = r
            .open_in(Path::new("/up"), OFlag::O_PATH, ResolveFlag::empty())
            .unwrap();
        assert!(r.is_root(fd.as_fd()));
        // Directories made under links land inside the root.
        r.mkdir_all(Path::new("/climb/a/b"), Mode::from_bits_truncate(0o755))
            .unwrap();
        assert!(root.join("a/b").is_dir());
        r.create_file(Path::new("/abs/f"), Mode::from_bits_truncate(0o644))
            .unwrap();
        assert!(
            root.join(outside.strip_prefix("/").unwrap())
                .join("f")
                .is_file()
        );
        assert!(!outside.join("f").exists());
        // A dangling link is followed inside the root: its target is made there.
        std::os::unix::fs::symlink(outside.join("made"), root.join("dangling")).unwrap();
        r.create_file(Path::new("/dangling"), Mode::from_bits_truncate(0o644))
            .unwrap();
        assert!(!outside.join("made").exists());
        assert!(
            root.join(outside.strip_prefix("/").unwrap())
                .join("made")
                .is_file()
        );
        std::os::unix::fs::symlink("../../gone/dir", root.join("real/dl")).unwrap();
        r.mkdir_all(Path::new("/real/dl/sub"), Mode::from_bits_truncate(0o755))
            .unwrap();
        assert!(root.join("gone/dir/sub").is_dir());
        // Magic links are refused; `..` stops at the root.
        // (an absolute link resolves in the root, where no procfs is: not a magic link)
        assert_eq!(
            r.open_in(Path::new("/magic"), OFlag::O_PATH, ResolveFlag::empty())
                .unwrap_err(),
            Errno::ENOENT
        );
        let proc_self = Root::open(Path::new("/proc/self")).unwrap();
        assert_eq!(
            proc_self
                .open_in(Path::new("/fd/0"), OFlag::O_PATH, ResolveFlag::empty())
                .unwrap_err(),
            Errno::ELOOP
        );
        let fd = r
            .open_in(
                Path::new("/../../real/.."),
                OFlag::O_PATH,
                ResolveFlag::empty(),
            )
            .unwrap();
        assert!(r.is_root(fd.as_fd()));
        assert!(components(Path::new("/a/../b")).is_none());
        // RESOLVE_NO_SYMLINKS refuses any link on the way.
        assert_eq!(
            r.open_in(
                Path::new("/up/real"),
                OFlag::O_PATH,
                ResolveFlag::RESOLVE_NO_SYMLINKS
            )
            .unwrap_err(),
            Errno::ELOOP
        );
        std::fs::write(root.join("real/file"), "0123456789").unwrap();
        assert_eq!(
            r.read(Path::new("/up/real/file"), 10).unwrap(),
            b"0123456789"
        );
        assert_eq!(
            r.read(Path::new("/real/file"), 9).unwrap_err(),
            Errno::EFBIG
        );
    }
}
