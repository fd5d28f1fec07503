//! Layers the builder makes: a deterministic tar stream (entries sorted by path, numeric
//! owners, no user or group names, times as given), stored through the image store's
//! ingest (gzip blob + diff_id + unpacked layer directory in one pass).
//!
//! A `RUN` step's layer is the overlay upper directory's diff: overlayfs whiteouts (a
//! character device 0:0) become OCI whiteouts (`.wh.NAME`), an opaque directory
//! (`trusted.overlay.opaque=y`) gets a `.wh..wh..opq` entry, and other `trusted.overlay.*`
//! attributes (copy-up bookkeeping) are dropped. Files linked more than once in the upper
//! directory become tar hard links.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, OFlags};

use tar::{EntryType, Header};

/// Metadata of an entry to write.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Permission bits (with set-id and sticky bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds).
    pub mtime: i64,
    /// Extended attributes.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// A tar stream being written.
pub struct TarOut<W: Write> {
    b: tar::Builder<W>,
    /// Clamp modification times to this (`SOURCE_DATE_EPOCH`).
    pub clamp: Option<i64>,
    /// Entries written.
    pub count: usize,
}

impl<W: Write> TarOut<W> {
    /// A new stream on `w`.
    pub fn new(w: W, clamp: Option<i64>) -> Self {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Complete);
        b.follow_symlinks(false);
        TarOut { b, clamp, count: 0 }
    }

    fn header(&mut self, kind: EntryType, m: &Meta, size: u64) -> io::Result<Header> {
        if !m.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = m
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            self.b
                .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode & 0o7777);
        h.set_uid(u64::from(m.uid));
        h.set_gid(u64::from(m.gid));
        let mt = match self.clamp {
            Some(c) => m.mtime.min(c),
            None => m.mtime,
        };
        h.set_mtime(u64::try_from(mt).unwrap_or(0));
        h.set_size(size);
        Ok(h)
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, m: &Meta) -> io::Result<()> {
        let mut h = self.header(EntryType::Directory, m, 0)?;
        let p = format!("{}/", path.trim_end_matches('/'));
        self.count += 1;
        self.b.append_data(&mut h, p, io::empty())
    }

    /// A regular file with `size` bytes from `r`.
    pub fn file(&mut self, path: &str, m: &Meta, size: u64, r: impl Read) -> io::Result<()> {
        let mut h = self.header(EntryType::Regular, m, size)?;
        self.count += 1;
        // A file that changed size while being read must not corrupt the stream.
        self.b
            .append_data(&mut h, path, ExactReader { r, left: size })
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &Path, m: &Meta) -> io::Result<()> {
        let mut h = self.header(EntryType::Symlink, m, 0)?;
        self.count += 1;
        // The tar crate writes a link to `/` as `//`: written as it is.
        if target == Path::new("/") {
            h.set_link_name_literal("/")?;
            return self.b.append_data(&mut h, path, io::empty());
        }
        self.b.append_link(&mut h, path, target)
    }

    /// A hard link to an earlier entry.
    pub fn hardlink(&mut self, path: &str, target: &str, m: &Meta) -> io::Result<()> {
        let mut h = self.header(EntryType::Link, m, 0)?;
        self.count += 1;
        self.b.append_link(&mut h, path, target)
    }

    /// A device, fifo (kind `Char`, `Block`, `Fifo`).
    pub fn special(&mut self, path: &str, kind: EntryType, rdev: u64, m: &Meta) -> io::Result<()> {
        let mut h = self.header(kind, m, 0)?;
        h.set_device_major(libc::major(rdev))?;
        h.set_device_minor(libc::minor(rdev))?;
        self.count += 1;
        self.b.append_data(&mut h, path, io::empty())
    }

    /// An OCI whiteout for `path`.
    pub fn whiteout(&mut self, path: &str) -> io::Result<()> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        let m = Meta {
            mode: 0o644,
            ..Meta::default()
        };
        self.file(&format!("{dir}.wh.{name}"), &m, 0, io::empty())
    }

    /// The end of the stream.
    pub fn finish(self) -> io::Result<W> {
        self.b.into_inner()
    }
}

/// Reads exactly `left` bytes: pads with zeros if the source is short, stops if it is long.
struct ExactReader<R> {
    r: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = usize::try_from(self.left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = self.r.read(&mut buf[..max])?;
        let n = if n == 0 {
            buf[..max].fill(0);
            max
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes the overlay upper directory `upper` as an OCI layer diff. Returns the number of
/// entries written (0: the step changed nothing).
///
/// The directory is walked through descriptors: each directory is opened with `O_NOFOLLOW`
/// in the one above it, each entry examined and opened relative to its directory without
/// following a symlink, so a container that swaps a directory for a link to a host path
/// while its upper directory is read (`commit --pause=false`) makes the walk fail or skip
/// the entry, never read the host. An entry gone between its listing and its opening is
/// left out.
pub fn upper_to_tar<W: Write>(upper: &Path, out: &mut TarOut<W>) -> io::Result<usize> {
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    let root = rustix::fs::open(
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    walk(&root, "", out, &mut links)?;
    Ok(out.count)
}

fn opaque(dir: &OwnedFd) -> bool {
    let mut buf = [0u8; 4];
    rustix::fs::fgetxattr(dir, "trusted.overlay.opaque", &mut buf[..])
        .is_ok_and(|n| n == 1 && buf[0] == b'y')
}

/// `f(…)`, with a vanished entry (`ENOENT`) as `None`.
fn present<T>(r: rustix::io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The entries of directory `dir`, sorted.
fn sorted_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let n = e?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n));
        }
    }
    names.sort();
    Ok(names)
}

fn walk<W: Write>(
    dir: &OwnedFd,
    rel: &str,
    out: &mut TarOut<W>,
    links: &mut HashMap<(u64, u64), String>,
) -> io::Result<()> {
    let nofollow = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for name in sorted_names(dir)? {
        let n = name.to_string_lossy();
        let r = if rel.is_empty() {
            n.to_string()
        } else {
            format!("{rel}/{n}")
        };
        let Some(st) = present(rustix::fs::statat(
            dir,
            name.as_os_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ))?
        else {
            continue;
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        let rdev = st.st_rdev;
        let xattrs = if ft == FileType::Symlink {
            Vec::new()
        } else {
            match present(rustix::fs::openat(
                dir,
                name.as_os_str(),
                OFlags::PATH | nofollow,
                rustix::fs::Mode::empty(),
            ))? {
                Some(fd) => super::view::list_xattrs(Path::new(&format!(
                    "/proc/self/fd/{}",
                    fd.as_raw_fd()
                ))),
                None => continue,
            }
        };
        let meta = Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            xattrs,
        };
        match ft {
            FileType::CharacterDevice if rdev == 0 => out.whiteout(&r)?,
            FileType::Directory => {
                let Some(sub) = present(rustix::fs::openat(
                    dir,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | nofollow,
                    rustix::fs::Mode::empty(),
                ))?
                else {
                    continue;
                };
                out.dir(&r, &meta)?;
                if opaque(&sub) {
                    out.file(
                        &format!("{r}/.wh..wh..opq"),
                        &Meta {
                            mode: 0o644,
                            ..Meta::default()
                        },
                        0,
                        io::empty(),
                    )?;
                }
                walk(&sub, &r, out, links)?;
            }
            FileType::Symlink => {
                let Some(t) = present(rustix::fs::readlinkat(dir, name.as_os_str(), Vec::new()))?
                else {
                    continue;
                };
                let t = OsString::from_vec(t.into_bytes());
                out.symlink(&r, Path::new(&t), &meta)?;
            }
            FileType::RegularFile => {
                if st.st_nlink > 1 {
                    #[allow(clippy::useless_conversion)]
                    let key = (u64::from(st.st_dev), u64::from(st.st_ino));
                    if let Some(first) = links.get(&key) {
                        let first = first.clone();
                        out.hardlink(&r, &first, &meta)?;
                        continue;
                    }
                    links.insert(key, r.clone());
                }
                let Some(f) = present(rustix::fs::openat(
                    dir,
                    name.as_os_str(),
                    OFlags::RDONLY | nofollow,
                    rustix::fs::Mode::empty(),
                ))?
                else {
                    continue;
                };
                let size = u64::try_from(st.st_size).unwrap_or(0);
                out.file(&r, &meta, size, std::fs::File::from(f))?;
            }
            FileType::CharacterDevice => out.special(&r, EntryType::Char, rdev, &meta)?,
            FileType::BlockDevice => out.special(&r, EntryType::Block, rdev, &meta)?,
            FileType::Fifo => out.special(&r, EntryType::Fifo, 0, &meta)?,
            // Sockets are not part of a layer.
            _ => {}
        }
    }
    Ok(())
}

/// Removes `comps` under `dir` when it is an empty directory or an empty regular file,
/// resolving every component beneath `dir` without following a symlink (the tree is a
/// container's). Anything else is left alone.
pub fn remove_empty_beneath(dir: &Path, comps: &[String]) {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    use nix::sys::stat::{FileStat, SFlag, fstatat};
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let Some((name, parent)) = comps.split_last() else {
        return;
    };
    if name.contains('/') || name == ".." || name == "." {
        return;
    }
    let Ok(root) = std::fs::File::open(dir) else {
        return;
    };
    let rel = if parent.is_empty() {
        ".".to_string()
    } else {
        parent.join("/")
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let Ok(pfd) = openat2(&root, rel.as_str(), how) else {
        return;
    };
    let Ok(st): Result<FileStat, _> = fstatat(
        &pfd,
        name.as_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) else {
        return;
    };
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind == SFlag::S_IFDIR {
        let _ = unlinkat(&pfd, name.as_str(), UnlinkatFlags::RemoveDir);
    } else if kind == SFlag::S_IFREG && st.st_size == 0 {
        let _ = unlinkat(&pfd, name.as_str(), UnlinkatFlags::NoRemoveDir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_stub_removal_follows_no_symlink() {
        let t = tempfile::tempdir().unwrap();
        let (u, outside) = (t.path().join("upper"), t.path().join("outside"));
        std::fs::create_dir_all(u.join("run")).unwrap();
        std::fs::create_dir_all(outside.join("shm")).unwrap();
        std::fs::write(outside.join("hosts"), "").unwrap();
        // The container replaced /etc and /dev with links out of its tree.
        std::os::unix::fs::symlink(&outside, u.join("etc")).unwrap();
        std::os::unix::fs::symlink("../outside", u.join("dev")).unwrap();
        remove_empty_beneath(&u, &["etc".into(), "hosts".into()]);
        remove_empty_beneath(&u, &["dev".into(), "shm".into()]);
        assert!(outside.join("hosts").exists() && outside.join("shm").exists());
        remove_empty_beneath(&u, &["run".into()]);
        assert!(!u.join("run").exists());
        std::fs::write(u.join("full"), "x").unwrap();
        remove_empty_beneath(&u, &["full".into()]);
        assert!(u.join("full").exists());
    }

    #[test]
    fn layer_upper_diff_translates_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let u = t.path().join("upper");
        std::fs::create_dir_all(u.join("d/sub")).unwrap();
        std::fs::write(u.join("d/f"), "hello").unwrap();
        std::fs::hard_link(u.join("d/f"), u.join("d/g")).unwrap();
        std::os::unix::fs::symlink("/etc", u.join("l")).unwrap();
        nix::sys::stat::mknod(
            &u.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        for (name, value) in [
            ("trusted.overlay.opaque", &b"y"[..]),
            ("trusted.overlay.origin", &b"zz"[..]),
        ] {
            rustix::fs::setxattr(
                u.join("d/sub"),
                name,
                value,
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        }
        let mut out = TarOut::new(Vec::new(), Some(0));
        assert_eq!(upper_to_tar(&u, &mut out).unwrap(), 7);
        let bytes = out.finish().unwrap();
        let mut a = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            assert_eq!(e.header().mtime().unwrap(), 0);
            if let Some(x) = e.pax_extensions().unwrap() {
                for r in x {
                    assert!(!r.unwrap().key().unwrap().contains("overlay"));
                }
            }
            seen.push((p, e.header().entry_type()));
        }
        let names: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "d/",
                "d/f",
                "d/g",
                "d/sub/",
                "d/sub/.wh..wh..opq",
                ".wh.gone",
                "l"
            ]
        );
        assert_eq!(seen[2].1, EntryType::Link);
        // The same directory gives the same bytes.
        let mut again = TarOut::new(Vec::new(), Some(0));
        upper_to_tar(&u, &mut again).unwrap();
        assert_eq!(again.finish().unwrap(), bytes);
    }
}
