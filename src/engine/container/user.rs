//! Resolving `user` and `group_add` against the image's `/etc/passwd` and `/etc/group`, as
//! Docker does (moby's `getUser` over runc's `GetExecUser`):
//! - a user name must exist; a number may be absent (then gid 0 and home `/`);
//! - `user:group` sets the primary group (a name must exist, a number may be absent);
//! - the supplementary groups are, in this order: the primary gid (Docker adds it since the
//!   fix of CVE-2022-36109, so that a group's *negative* permissions cannot be shed by
//!   dropping it), then — only when no group was given (`user`, not `user:group`) — every
//!   group of `/etc/group` that lists the user as a member, then `group_add` (names looked up
//!   in `/etc/group`, numbers taken as they are).
//!
//! **The files come from an untrusted image.** They are looked up the way the container will
//! see them — through the image's layers, topmost first, honouring whiteouts and opaque
//! directories, and resolving symlinks *inside* the image (an absolute link target starts at
//! the image's root, `..` stops there) — and opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` under the layer that holds them, so no link can lead to a host
//! file. Only a regular file of at most [`MAX_FILE`] bytes is read (opened non-blocking: a
//! FIFO or a device is refused by name, never waited on or read without end).

use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

use crate::engine::runtime::inroot::Root;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (the primary gid first).
    pub groups: Vec<u32>,
    /// Home directory (for `HOME`).
    pub home: String,
}

/// The largest `/etc/passwd` or `/etc/group` read (8 MiB).
pub const MAX_FILE: u64 = 8 << 20;

/// Symbolic links followed while looking up one file (the kernel's limit).
const MAX_LINKS: usize = 40;

/// The components of an absolute path inside the image, `.` dropped and `..` applied
/// (never above the root, as in the container).
fn push_components(out: &mut Vec<String>, path: &Path) {
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
}

/// An overlayfs whiteout: a character device 0:0.
fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// An opaque directory hides what lower layers have under it.
fn is_opaque(dir: &Path) -> bool {
    if std::fs::symlink_metadata(dir.join(".wh..wh..opq")).is_ok() {
        return true;
    }
    let Ok(p) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
    else {
        return false;
    };
    let mut buf = [0u8; 8];
    // SAFETY: valid C strings and a buffer of the given length; lgetxattr does not follow a
    // final symlink.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// Why a user cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A user name that the passwd file does not have.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// A group name that the group file does not have.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// The passwd or group file cannot be read safely (a symlink loop, not a regular file,
    /// too large, unreadable); the message names the file.
    #[error("{0}")]
    File(String),
}

/// Where `path` (absolute, in the image) is in the stack of `layers` (lowest first): the
/// layer that holds it and its path there, reached through real directories only (symlinks
/// on the way are resolved inside the image). `None` when the image has no such file.
fn locate(layers: &[PathBuf], path: &str) -> Result<Option<(usize, PathBuf)>, UserError> {
    let mut comps = Vec::new();
    push_components(&mut comps, Path::new(path));
    let mut links = 0;
    'lookup: loop {
        // The layers (topmost first) whose directory at `prefix` is part of the merged one.
        let mut active: Vec<usize> = (0..layers.len()).rev().collect();
        let mut prefix = PathBuf::new();
        for i in 0..comps.len() {
            let name = &comps[i];
            let mut found: Option<(usize, std::fs::Metadata)> = None;
            let mut below = Vec::new();
            for &l in &active {
                let dir = layers[l].join(&prefix);
                if std::fs::symlink_metadata(dir.join(format!(".wh.{name}"))).is_ok() {
                    break;
                }
                let Ok(md) = std::fs::symlink_metadata(dir.join(name)) else {
                    continue;
                };
                if is_whiteout(&md) {
                    break;
                }
                let is_dir = md.is_dir();
                if found.is_none() {
                    found = Some((l, md));
                }
                if !is_dir {
                    break;
                }
                below.push(l);
                if is_opaque(&dir.join(name)) {
                    break;
                }
            }
            let Some((l, md)) = found else {
                return Ok(None);
            };
            if md.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(UserError::File(format!(
                        "too many levels of symbolic links in {path}"
                    )));
                }
                let link = layers[l].join(&prefix).join(name);
                let target = std::fs::read_link(&link)
                    .map_err(|e| UserError::File(format!("cannot read the link {path}: {e}")))?;
                let mut next = if target.is_absolute() {
                    Vec::new()
                } else {
                    comps[..i].to_vec()
                };
                push_components(&mut next, &target);
                next.extend(comps[i + 1..].iter().cloned());
                comps = next;
                continue 'lookup;
            }
            if i + 1 == comps.len() {
                return Ok(Some((l, prefix.join(name))));
            }
            if !md.is_dir() {
                return Ok(None);
            }
            prefix.push(name);
            active = below;
        }
        return Ok(None);
    }
}

/// Why a file could not be read.
enum ReadError {
    /// It does not exist.
    Missing,
    /// Anything else, as a message naming the file.
    Other(String),
}

/// Reads `rel` under the directory `dir`: resolved with `RESOLVE_IN_ROOT` (no magic links),
/// a regular file only (checked on a path descriptor before the file itself is opened, so a
/// FIFO or a device is never opened), at most [`MAX_FILE`] bytes. `shown` names the file in
/// errors.
fn read_regular_at(
    dir: std::os::fd::BorrowedFd<'_>,
    rel: &Path,
    shown: &str,
) -> Result<String, ReadError> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let path_fd = match openat2(dir, rel, how) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Err(ReadError::Missing),
        Err(e) => {
            return Err(ReadError::Other(format!(
                "cannot open {shown}: {}",
                std::io::Error::from(e)
            )));
        }
    };
    let fail =
        |what: &str, e: std::io::Error| ReadError::Other(format!("cannot {what} {shown}: {e}"));
    let md = nix::sys::stat::fstat(path_fd.as_fd())
        .map_err(|e| fail("stat", std::io::Error::from(e)))?;
    let kind = match md.st_mode & libc::S_IFMT {
        libc::S_IFREG => None,
        libc::S_IFIFO => Some("a FIFO"),
        libc::S_IFCHR | libc::S_IFBLK => Some("a device"),
        libc::S_IFDIR => Some("a directory"),
        libc::S_IFLNK => Some("a symbolic link"),
        _ => Some("a socket"),
    };
    if let Some(kind) = kind {
        return Err(ReadError::Other(format!(
            "{shown} is {kind}, not a regular file"
        )));
    }
    let too_big = || {
        ReadError::Other(format!(
            "{shown} is larger than the {} MiB tug reads",
            MAX_FILE >> 20
        ))
    };
    if u64::try_from(md.st_size).unwrap_or(0) > MAX_FILE {
        return Err(too_big());
    }
    // Reopen the checked inode itself for reading (not the path again).
    let reopen = format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&path_fd)
    );
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&reopen)
        .map_err(|e| fail("open", e))?;
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| fail("read", e))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(too_big());
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads a file of the image (`path` absolute, e.g. `/etc/passwd`) as the container would
/// see it, through its `layers` (lowest first). `Ok(None)` when the image has none.
///
/// # Errors
/// A symlink loop, or a file that is not a regular file or is too large.
pub fn read_image_file(layers: &[PathBuf], path: &str) -> Result<Option<String>, UserError> {
    let Some((l, rel)) = locate(layers, path)? else {
        return Ok(None);
    };
    let root = Root::open(&layers[l]).map_err(|e| {
        UserError::File(format!(
            "cannot open {}: {}",
            layers[l].display(),
            std::io::Error::from(e)
        ))
    })?;
    match read_regular_at(root.fd(), &rel, path) {
        Ok(text) => Ok(Some(text)),
        Err(ReadError::Missing) => Ok(None),
        Err(ReadError::Other(e)) => Err(UserError::File(e)),
    }
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 6 {
                return None;
            }
            Some(Passwd {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn groups(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(Group {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group` or `uid:gid`) and `group_add` with the
/// given passwd and group file contents.
///
/// # Errors
/// A user or group name that the files do not have.
pub fn resolve(
    spec: &str,
    group_add: &[String],
    passwd_text: &str,
    group_text: &str,
) -> Result<ExecUser, UserError> {
    let users = passwd(passwd_text);
    let grps = groups(group_text);
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let (uid, mut gid, name, home) = if let Ok(n) = u.parse::<u32>() {
        match users.iter().find(|p| p.uid == n) {
            Some(p) => (p.uid, p.gid, Some(p.name.clone()), p.home.clone()),
            None => (n, 0, None, "/".to_string()),
        }
    } else {
        let p = users
            .iter()
            .find(|p| p.name == u)
            .ok_or_else(|| UserError::NoUser(u.to_string()))?;
        (p.uid, p.gid, Some(p.name.clone()), p.home.clone())
    };
    let explicit_group = g.is_some_and(|g| !g.is_empty());
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        gid = if let Ok(n) = g.parse::<u32>() {
            n
        } else {
            grps.iter()
                .find(|x| x.name == g)
                .map(|x| x.gid)
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?
        };
    }
    let mut extra: Vec<u32> = vec![gid];
    let mut add = |id: u32| {
        if !extra.contains(&id) {
            extra.push(id);
        }
    };
    // The user's memberships count only when the group is implicit (runc's GetExecUser).
    if let (Some(name), false) = (&name, explicit_group) {
        for gr in &grps {
            if gr.members.iter().any(|m| m == name) {
                add(gr.gid);
            }
        }
    }
    for ga in group_add {
        let id = if let Ok(n) = ga.parse::<u32>() {
            n
        } else {
            grps.iter()
                .find(|x| &x.name == ga)
                .map(|x| x.gid)
                .ok_or_else(|| UserError::NoGroup(ga.clone()))?
        };
        add(id);
    }
    Ok(ExecUser {
        uid,
        gid,
        groups: extra,
        home,
    })
}

/// [`resolve`] as a Dockerfile's `RUN` step gets it from BuildKit (runc's `GetExecUser`):
/// the supplementary groups are the user's `/etc/group` memberships only, without the
/// primary gid that `docker run` adds (moby's fix of CVE-2022-36109 is not BuildKit's: `id`
/// in a `RUN` of docker 20.10's BuildKit shows no `groups=`).
///
/// # Errors
/// As [`resolve`].
pub fn resolve_for_build(
    spec: &str,
    passwd_text: &str,
    group_text: &str,
) -> Result<ExecUser, UserError> {
    let mut user = resolve(spec, &[], passwd_text, group_text)?;
    let explicit_group = spec.split_once(':').is_some_and(|(_, g)| !g.is_empty());
    let name = passwd(passwd_text)
        .into_iter()
        .find(|p| p.uid == user.uid)
        .map(|p| p.name);
    let member_of_primary = !explicit_group
        && name.is_some_and(|n| {
            groups(group_text)
                .iter()
                .any(|g| g.gid == user.gid && g.members.contains(&n))
        });
    if !member_of_primary && user.groups.first() == Some(&user.gid) {
        user.groups.remove(0);
    }
    Ok(user)
}

/// Resolves a user against the files of an image's layers (lowest first).
///
/// # Errors
/// As [`resolve`], and a passwd or group file that cannot be read safely.
pub fn resolve_in_layers(
    spec: &str,
    group_add: &[String],
    layers: &[PathBuf],
) -> Result<ExecUser, UserError> {
    let p = read_image_file(layers, "/etc/passwd")?.unwrap_or_default();
    let g = read_image_file(layers, "/etc/group")?.unwrap_or_default();
    resolve(spec, group_add, &p, &g)
}

/// Resolves a user against the files of a running container's root (`/proc/<pid>/root`,
/// held open), resolved inside it: a link never leads out, a FIFO is never opened.
///
/// # Errors
/// As [`resolve_in_layers`].
pub fn resolve_in_root(
    spec: &str,
    group_add: &[String],
    root: &Root,
) -> Result<ExecUser, UserError> {
    let read = |path: &str| -> Result<String, UserError> {
        match read_regular_at(root.fd(), Path::new(path), path) {
            Err(ReadError::Missing) => Ok(String::new()),
            Err(ReadError::Other(e)) => Err(UserError::File(e)),
            Ok(text) => Ok(text),
        }
    };
    let p = read("/etc/passwd")?;
    let g = read("/etc/group")?;
    resolve(spec, group_add, &p, &g)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
    const G: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nwheel:x:10:root\n";

    #[test]
    fn container_user_resolution_like_docker() {
        // Root: its primary group, then the groups that list it (busybox's wheel).
        let r = resolve("", &[], P, G).unwrap();
        assert_eq!((r.uid, r.gid, r.groups.clone()), (0, 0, vec![0, 10]));
        let a = resolve("app", &[], P, G).unwrap();
        assert_eq!(
            (a.uid, a.gid, a.groups, a.home),
            (1000, 1000, vec![1000, 2000], "/home/app".into())
        );
        // A uid of the passwd file is that user, memberships included.
        let n = resolve("1000", &[], P, G).unwrap();
        assert_eq!(n.groups, vec![1000, 2000]);
        // An explicit group: no memberships, but group_add (names and numbers) still.
        let n = resolve("1234:55", &["extra".into(), "7".into()], P, G).unwrap();
        assert_eq!((n.uid, n.gid, n.groups), (1234, 55, vec![55, 2000, 7]));
        let ng = resolve("app:extra", &[], P, G).unwrap();
        assert_eq!((ng.gid, ng.groups), (2000, vec![2000]));
        // An unknown uid: gid 0, home /.
        let u = resolve("4321", &[], P, G).unwrap();
        assert_eq!((u.gid, u.groups, u.home), (0, vec![0], "/".into()));
        assert!(resolve("ghost", &[], P, G).is_err());
        assert!(resolve("app:ghosts", &[], P, G).is_err());
        assert!(matches!(
            resolve("ghost", &[], P, G),
            Err(UserError::NoUser(u)) if u == "ghost"
        ));
        let e = resolve("app", &["nogroup".into()], P, G)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unable to find group nogroup"), "{e}");
    }

    #[test]
    fn container_user_files_are_found_through_layers_whiteouts_and_links() {
        let t = tempfile::tempdir().unwrap();
        let l0 = t.path().join("l0");
        let l1 = t.path().join("l1");
        let l2 = t.path().join("l2");
        for l in [&l0, &l1, &l2] {
            std::fs::create_dir_all(l.join("etc")).unwrap();
        }
        std::fs::write(l0.join("etc/passwd"), "low\n").unwrap();
        std::fs::write(l0.join("etc/group"), "low\n").unwrap();
        std::fs::create_dir_all(l1.join("usr/share")).unwrap();
        std::fs::write(l1.join("usr/share/group"), "linked\n").unwrap();
        // The top layer links /etc/group, absolutely and through `..` above the root, to a
        // file of a lower layer.
        std::os::unix::fs::symlink("../../../../usr/share/group", l2.join("etc/group")).unwrap();
        let layers = vec![l0.clone(), l1.clone(), l2.clone()];
        assert_eq!(
            read_image_file(&layers, "/etc/passwd").unwrap().as_deref(),
            Some("low\n")
        );
        assert_eq!(
            read_image_file(&layers, "/etc/group").unwrap().as_deref(),
            Some("linked\n")
        );
        // An opaque /etc in the top layer hides the lower passwd.
        std::fs::write(l2.join("etc/.wh..wh..opq"), "").unwrap();
        assert_eq!(read_image_file(&layers, "/etc/passwd").unwrap(), None);
        std::fs::remove_file(l2.join("etc/.wh..wh..opq")).unwrap();
        // A whiteout of the file hides it too.
        std::fs::write(l1.join("etc/.wh.passwd"), "").unwrap();
        assert_eq!(read_image_file(&layers, "/etc/passwd").unwrap(), None);
        // A link loop is an error, not a hang.
        std::os::unix::fs::symlink("/etc/loop", l2.join("etc/loop")).unwrap();
        assert!(read_image_file(&layers, "/etc/loop").is_err());
    }

    #[test]
    fn container_user_files_never_leave_the_image() {
        let t = tempfile::tempdir().unwrap();
        let l = t.path().join("layer");
        std::fs::create_dir_all(l.join("etc")).unwrap();
        // A host file outside the layer, named absolutely: resolves inside the image (none).
        let outside = t.path().join("secret");
        std::fs::write(&outside, "host secret\n").unwrap();
        std::os::unix::fs::symlink(&outside, l.join("etc/passwd")).unwrap();
        let layers = vec![l.clone()];
        assert_eq!(read_image_file(&layers, "/etc/passwd").unwrap(), None);
        // A FIFO is refused by name, without blocking.
        std::fs::remove_file(l.join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(&l.join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_image_file(&layers, "/etc/passwd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/passwd is a FIFO"), "{e}");
        // A running container's root is read the same way: the link stays inside.
        std::fs::remove_file(l.join("etc/passwd")).unwrap();
        std::fs::write(l.join("etc/group"), "root:x:0:\nstaff:x:50:root\n").unwrap();
        let u = resolve_in_root("", &["staff".into()], &Root::open(&l).unwrap()).unwrap();
        assert_eq!(u.groups, vec![0, 50]);
    }
}
