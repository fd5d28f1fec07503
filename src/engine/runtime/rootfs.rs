//! The container's root filesystem and mount table.
//!
//! An image is a stack of read-only layer directories. **overlayfs** presents them as one tree
//! (`lowerdir=top:…:bottom`) with a per-container writable `upperdir` (and a `workdir` the
//! kernel needs for atomic copy-up). `mount(2)` passes options in one page, so with many layers
//! the option string no longer fits: then the overlay is built with the **new mount API**
//! (`fsopen("overlay")`, one `fsconfig("lowerdir+", dir)` per layer, `fsmount`, `move_mount`).
//!
//! Inside the container's new mount namespace the runtime mounts the spec's list (proc, a
//! tmpfs /dev with the standard nodes, a private devpts instance whose `ptmx` /dev/ptmx points
//! to, /dev/shm, /dev/mqueue, a read-only /sys, bind mounts, volumes, tmpfs), Docker's *masked
//! paths* (kernel information a container must not read: /proc/kcore, /proc/keys, … covered by
//! /dev/null or an empty read-only tmpfs) and *read-only paths* (/proc/sys,
//! /proc/sysrq-trigger, … bind-remounted read-only), then **pivot_root**s into the rootfs,
//! detaches the old root and checks that the root is what was prepared.
//!
//! **The rootfs is hostile.** Every directory in it may be a symlink the image (or, at a
//! restart, the container's own processes) made, pointing at `/`, `../..` or a host path. No
//! path inside it is ever joined onto the rootfs's host path: each mount target is opened
//! through a descriptor of the rootfs with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! ([`inroot`](super::inroot)), missing targets are made with `mkdirat`/`openat` in the
//! directory just resolved, and the mount is made on the descriptor: `mount(2)` on
//! `/proc/self/fd/N` (the host's procfs: nothing of the container is the process's root yet)
//! for new filesystems, and for binds a detached copy of the source (`open_tree`) attached
//! with `move_mount` onto the descriptor, whose own descriptor then takes the flag and
//! propagation changes. A target that resolves to the rootfs itself is refused (a mount there
//! would be stacked over the container's root), and proc and sysfs go only on plain
//! directories reached without any symlink, as runc requires. Device nodes, sysctl writes and
//! the masked and read-only paths go through the same resolution.
//!
//! **The pivot is checked.** `pivot_root(".", ".")` is made with the rootfs descriptor as the
//! working directory (never a path lookup, which would land on whatever is stacked on it);
//! after the old root is detached, `/` must be the prepared rootfs (device, inode and mount
//! id) and `/..` — which the kernel resolves to the topmost mount stacked on the root — must
//! be that same mount: otherwise the old root (or anything else) is still over it, and the
//! start fails before the program runs.

use std::fs;
use std::io;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, ResolveFlag};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use super::inroot::{self, Root, proc_fd};

/// Errors of root filesystem setup.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A call on the process's own mount namespace failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: nix::Error,
    },
    /// A mount failed.
    #[error("mount {target}: {source}")]
    Mount {
        /// Where.
        target: String,
        /// Why.
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// A path in the spec leaves the root filesystem.
    #[error("mount destination {0} is not a clean absolute path")]
    BadPath(String),
    /// A mount target is (or resolves to) the container's root directory.
    #[error(
        "mount {0}: the target is the container's root directory (through a symlink of the image or of the container); a mount over the root is refused"
    )]
    TargetIsRoot(String),
    /// proc or sysfs would go on a symlink (or a path through one) or on a non-directory.
    #[error(
        "mount {dest}: {fs} goes only on a plain directory, and {dest} is a symlink, passes through one, or is not a directory"
    )]
    NotPlainDir {
        /// The mount destination.
        dest: String,
        /// The filesystem type.
        fs: String,
    },
    /// A path inside the rootfs could not be resolved or made.
    #[error("{what} {path} in the container's root filesystem: {source}")]
    InRoot {
        /// The operation.
        what: &'static str,
        /// The path inside the container.
        path: String,
        /// The cause.
        source: Errno,
    },
    /// After `pivot_root` the root is not the prepared root filesystem.
    #[error("pivot_root: {0}; refusing to start the container")]
    Pivot(String),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, RootfsError>;

fn merr(target: &Path) -> impl FnOnce(nix::Error) -> RootfsError + '_ {
    move |source| RootfsError::Mount {
        target: target.display().to_string(),
        source,
    }
}

fn ioerr<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

fn inerr<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> RootfsError + 'a {
    move |source| RootfsError::InRoot {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Mounts an overlay of `lower` (lowest first, as the image store lists them) with `upper` and
/// `work` at `target`. With no upper dir the overlay is read-only.
pub fn mount_overlay(
    lower: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<()> {
    mount_overlay_opts(lower, upper, target, false)
}

/// Like [`mount_overlay`]; `volatile` skips every sync of the upper layer (also the one at
/// unmount, which costs a sync of the whole host filesystem) — for containers whose upper
/// layer is thrown away when they exit (`--rm`).
pub fn mount_overlay_opts(
    lower: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    volatile: bool,
) -> Result<()> {
    // overlayfs wants the top layer first.
    let lowers: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| escape_overlay(&p.display().to_string()))
        .collect();
    if lower.len() == 1 && upper.is_none() {
        return mount(
            Some(&lower[0]),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(merr(target));
    }
    let mut data = format!("lowerdir={}", lowers.join(":"));
    if let Some((u, w)) = upper {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
    }
    data.push_str(",index=off,xino=off");
    let volatile = volatile && upper.is_some();
    if volatile {
        data.push_str(",volatile");
    }
    if data.len() < 3000 {
        return mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(merr(target));
    }
    mount_overlay_fsconfig(lower, upper, target, volatile)
}

fn escape_overlay(p: &str) -> String {
    p.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Moves the calling process into a mount namespace of its own whose mounts receive the
/// host's but never propagate back (`MS_REC | MS_SLAVE` on `/`): what it mounts there (a
/// container's overlay) cannot leak into the host and is gone with it.
///
/// # Errors
/// The call that failed, for the start error.
pub fn private_mount_namespace(sys: &dyn super::sys::Syscall) -> Result<()> {
    let fail = |what| move |source| RootfsError::Sys { what, source };
    sys.unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(fail("unshare mount namespace"))?;
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )
    .map_err(fail("make / a slave mount"))
}

/// The overlay through the new mount API: no limit on the number of layers.
fn mount_overlay_fsconfig(
    lower: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    volatile: bool,
) -> Result<()> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
    let fail = |what: &'static str| {
        move |e: rustix::io::Errno| RootfsError::Io {
            what,
            path: target.display().to_string(),
            source: e.into(),
        }
    };
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(fail("fsopen overlay for"))?;
    let set = |key: &str, value: &Path| {
        rustix::mount::fsconfig_set_string(&fs, key, value).map_err(fail("fsconfig overlay for"))
    };
    for l in lower.iter().rev() {
        set("lowerdir+", l)?;
    }
    if let Some((u, w)) = upper {
        set("upperdir", u)?;
        set("workdir", w)?;
    }
    set("index", Path::new("off"))?;
    set("xino", Path::new("off"))?;
    if volatile {
        rustix::mount::fsconfig_set_flag(&fs, "volatile").map_err(fail("fsconfig overlay for"))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(fail("create overlay for"))?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(fail("fsmount overlay for"))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(fail("move_mount overlay to"))
}

/// Mount flags and the remaining data string from OCI mount options.
#[must_use]
pub fn parse_options(options: &[String]) -> (MsFlags, MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "norelatime" => flags &= !MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "async" => flags &= !MsFlags::MS_SYNCHRONOUS,
            "private" => propagation = MsFlags::MS_PRIVATE,
            "rprivate" => propagation = MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "slave" => propagation = MsFlags::MS_SLAVE,
            "rslave" => propagation = MsFlags::MS_SLAVE | MsFlags::MS_REC,
            "shared" => propagation = MsFlags::MS_SHARED,
            "rshared" => propagation = MsFlags::MS_SHARED | MsFlags::MS_REC,
            "unbindable" => propagation = MsFlags::MS_UNBINDABLE,
            "runbindable" => propagation = MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    (flags, propagation, data.join(","))
}

/// A detached copy of the mount tree at `path` relative to `dir` (`""`: `dir` itself;
/// `recursive`: with the mounts under it), as `MS_BIND` (`MS_REC`) would attach it.
fn clone_tree(dir: Option<BorrowedFd<'_>>, path: &Path, recursive: bool) -> nix::Result<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    if path.as_os_str().is_empty() {
        flags |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    let dir = dir.unwrap_or(rustix::fs::CWD);
    rustix::mount::open_tree(dir, path, flags).map_err(|e| Errno::from_raw(e.raw_os_error()))
}

/// Attaches the detached mount `tree` onto the object of `target` (on top of whatever is
/// mounted there). Afterwards `tree` is a descriptor of the attached mount's root.
fn attach(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> nix::Result<()> {
    use rustix::mount::MoveMountFlags;
    rustix::mount::move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| Errno::from_raw(e.raw_os_error()))
}

/// Propagation other than private: the whole tree was made private by [`prepare`], and new
/// mounts and bind copies under a private parent are private, so `private`/`rprivate` (every
/// bind's default) needs no call.
fn needs_propagation(propagation: MsFlags) -> bool {
    !propagation.is_empty()
        && !propagation
            .difference(MsFlags::MS_REC)
            .eq(&MsFlags::MS_PRIVATE)
}

/// Opens (or makes) the target of `m` inside the root: a file for a bind of a file, else a
/// directory. proc, sysfs and cgroup targets must be plain directories reached without a
/// symlink.
fn open_target(root: &Root, m: &Mount, typ: &str, is_bind: bool) -> Result<OwnedFd> {
    let dest = m.destination();
    let special = matches!(typ, "proc" | "sysfs" | "cgroup" | "cgroup2");
    let not_plain = || RootfsError::NotPlainDir {
        dest: dest.display().to_string(),
        fs: typ.to_string(),
    };
    // proc and sysfs: no symlink on the way, and a directory at the end.
    let (extra, dir) = if special {
        (ResolveFlag::RESOLVE_NO_SYMLINKS, OFlag::O_DIRECTORY)
    } else {
        (ResolveFlag::empty(), OFlag::empty())
    };
    let fd = match root.open_in(dest, OFlag::O_PATH | dir, extra) {
        Ok(fd) => fd,
        Err(Errno::ELOOP | Errno::ENOTDIR) if special => return Err(not_plain()),
        Err(Errno::ENOENT) => {
            let is_file = is_bind
                && m.source()
                    .as_deref()
                    .is_some_and(|s| fs::metadata(s).is_ok_and(|m| !m.is_dir()));
            let made = if is_file {
                root.create_file(dest, Mode::from_bits_truncate(0o644))
            } else {
                root.mkdir_missing(dest, Mode::from_bits_truncate(0o755))
            }
            .map_err(inerr("create", dest))?;
            if !special {
                return Ok(made);
            }
            // A dangling link was followed to make the directory: refuse it all the same.
            root.open_in(dest, OFlag::O_PATH | dir, extra)
                .map_err(|e| match e {
                    Errno::ELOOP | Errno::ENOTDIR => not_plain(),
                    e => inerr("open", dest)(e),
                })?
        }
        Err(e) => return Err(inerr("open", dest)(e)),
    };
    Ok(fd)
}

/// Performs one spec mount inside `root`: the target is resolved in the root and the mount
/// made on its descriptor (see the module docs).
pub fn mount_one(root: &Root, m: &Mount) -> Result<()> {
    let dest = m.destination();
    let dest_s = || dest.display().to_string();
    let comps = inroot::components(dest).ok_or_else(|| RootfsError::BadPath(dest_s()))?;
    if comps.is_empty() {
        return Err(RootfsError::TargetIsRoot(dest_s()));
    }
    let opts = m.options().clone().unwrap_or_default();
    let (flags, propagation, data) = parse_options(&opts);
    let typ = m.typ().as_deref().unwrap_or("none");
    let is_bind = flags.contains(MsFlags::MS_BIND) || typ == "bind";
    let target = open_target(root, m, typ, is_bind)?;
    if root.is_root(target.as_fd()) {
        return Err(RootfsError::TargetIsRoot(dest_s()));
    }
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup_view(root, dest, &target, flags);
    }
    let on = proc_fd(target.as_fd());
    // The attached mount's own descriptor, for flag and propagation changes.
    let mut mounted: Option<OwnedFd> = None;
    let bind = |src: &Path, recursive: bool, extra: MsFlags| -> Result<OwnedFd> {
        let tree = clone_tree(None, src, recursive).map_err(|e| RootfsError::Mount {
            target: format!("{} (bind source {})", dest.display(), src.display()),
            source: e,
        })?;
        attach(tree.as_fd(), target.as_fd()).map_err(merr(dest))?;
        if !extra.is_empty() {
            mount(
                None::<&str>,
                proc_fd(tree.as_fd()).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None::<&str>,
            )
            .map_err(merr(dest))?;
        }
        Ok(tree)
    };
    if is_bind {
        let src = m.source().clone().unwrap_or_default();
        let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        mounted = Some(bind(&src, flags.contains(MsFlags::MS_REC), extra)?);
    } else {
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let d = (!data.is_empty()).then_some(data.as_str());
        match mount(Some(&src), on.as_str(), Some(typ), flags, d) {
            Ok(()) => {}
            // A new sysfs needs a network namespace of our own; with the host's network, bind
            // the host's /sys read-only instead (what runc does as well in that case).
            Err(nix::Error::EPERM) if typ == "sysfs" => {
                mounted = Some(bind(Path::new("/sys"), true, MsFlags::MS_RDONLY | flags)?);
            }
            Err(e) => return Err(merr(dest)(e)),
        }
    }
    if needs_propagation(propagation) {
        let fd = match mounted {
            Some(fd) => fd,
            None => {
                // A new filesystem: its root is what the target resolves to now; it must be
                // a different mount than the one the target was on.
                let fd = root
                    .open_in(dest, OFlag::O_PATH, ResolveFlag::empty())
                    .map_err(inerr("open", dest))?;
                let was = inroot::identity_at(target.as_fd(), "").map_err(inerr("stat", dest))?;
                let now = inroot::identity_at(fd.as_fd(), "").map_err(inerr("stat", dest))?;
                if was.mnt_id == now.mnt_id {
                    return Err(RootfsError::Mount {
                        target: dest_s(),
                        source: Errno::ESTALE,
                    });
                }
                fd
            }
        };
        mount(
            None::<&str>,
            proc_fd(fd.as_fd()).as_str(),
            None::<&str>,
            propagation,
            None::<&str>,
        )
        .map_err(merr(dest))?;
    }
    Ok(())
}

/// Mounts the container's view of its own cgroups on `target`, the descriptor of `dest` (see
/// [`super::cgroups::container_view`]); `flags` are the spec mount's (`ro` unless
/// privileged, `nosuid`, `nodev`, `noexec`). The process is already in its cgroup namespace.
/// The v1 hierarchies go in a tmpfs made here, reached through its root's descriptor.
fn mount_cgroup_view(root: &Root, dest: &Path, target: &OwnedFd, flags: MsFlags) -> Result<()> {
    use super::cgroups::{Layout, ViewMount, container_view};
    let layout = Layout::detect().map_err(|e| RootfsError::Io {
        what: "detect the cgroup layout for",
        path: dest.display().to_string(),
        source: io::Error::other(e.to_string()),
    })?;
    let read_only = flags.contains(MsFlags::MS_RDONLY);
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let fs_flags = base | (flags & (MsFlags::MS_RDONLY | MsFlags::MS_RELATIME));
    // The tmpfs's root, once mounted: where the v1 hierarchies' mount points are made.
    let mut tmpfs: Option<OwnedFd> = None;
    fn in_tmpfs<'a>(tmpfs: &'a Option<OwnedFd>, dest: &Path) -> Result<BorrowedFd<'a>> {
        tmpfs.as_ref().map(|f| f.as_fd()).ok_or(RootfsError::Mount {
            target: dest.display().to_string(),
            source: Errno::EINVAL,
        })
    }
    // Paths of the view are relative to `dest` (empty: `dest` itself).
    for step in container_view(&layout, Path::new(""), read_only) {
        match &step {
            ViewMount::Tmpfs(_) => {
                mount(
                    Some("tmpfs"),
                    proc_fd(target.as_fd()).as_str(),
                    Some("tmpfs"),
                    base,
                    Some("mode=755"),
                )
                .map_err(merr(dest))?;
                let fd = root
                    .open_in(
                        dest,
                        OFlag::O_PATH | OFlag::O_DIRECTORY,
                        ResolveFlag::RESOLVE_NO_SYMLINKS,
                    )
                    .map_err(inerr("open", dest))?;
                let was = inroot::identity_at(target.as_fd(), "").map_err(inerr("stat", dest))?;
                let now = inroot::identity_at(fd.as_fd(), "").map_err(inerr("stat", dest))?;
                if was.mnt_id == now.mnt_id {
                    return Err(RootfsError::Mount {
                        target: dest.display().to_string(),
                        source: Errno::ESTALE,
                    });
                }
                tmpfs = Some(fd);
            }
            ViewMount::V2(rel) if rel.as_os_str().is_empty() => {
                mount(
                    Some("cgroup2"),
                    proc_fd(target.as_fd()).as_str(),
                    Some("cgroup2"),
                    fs_flags,
                    None::<&str>,
                )
                .map_err(merr(dest))?;
            }
            ViewMount::V1 { dir: rel, .. } | ViewMount::V2(rel) => {
                let (fstype, data) = match &step {
                    ViewMount::V1 { options, .. } => ("cgroup", Some(options.as_str())),
                    _ => ("cgroup2", None),
                };
                let at = dest.join(rel);
                let parent = in_tmpfs(&tmpfs, dest)?;
                nix::sys::stat::mkdirat(parent, rel.as_path(), Mode::from_bits_truncate(0o755))
                    .map_err(inerr("create", &at))?;
                let sub = nix::fcntl::openat(
                    parent,
                    rel.as_path(),
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(inerr("open", &at))?;
                mount(
                    Some(fstype),
                    proc_fd(sub.as_fd()).as_str(),
                    Some(fstype),
                    fs_flags,
                    data,
                )
                .map_err(merr(&at))?;
            }
            ViewMount::Symlink { link, target } => {
                let at = dest.join(link);
                nix::unistd::symlinkat(target.as_str(), in_tmpfs(&tmpfs, dest)?, link.as_path())
                    .map_err(inerr("symlink", &at))?;
            }
            ViewMount::RemountReadOnly(_) => {
                mount(
                    None::<&str>,
                    proc_fd(in_tmpfs(&tmpfs, dest)?).as_str(),
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
                    Some("mode=755"),
                )
                .map_err(merr(dest))?;
            }
        }
    }
    Ok(())
}

/// The device nodes every container gets (`/dev/null`, `/dev/zero`, …), as OCI devices.
#[must_use]
pub fn default_devices() -> Vec<LinuxDevice> {
    let mk = |path: &str, major: i64, minor: i64| {
        oci_spec::runtime::LinuxDeviceBuilder::default()
            .path(path)
            .typ(LinuxDeviceType::C)
            .major(major)
            .minor(minor)
            .file_mode(0o666_u32)
            .uid(0_u32)
            .gid(0_u32)
            .build()
            .unwrap_or_default()
    };
    vec![
        mk("/dev/null", 1, 3),
        mk("/dev/zero", 1, 5),
        mk("/dev/full", 1, 7),
        mk("/dev/random", 1, 8),
        mk("/dev/urandom", 1, 9),
        mk("/dev/tty", 5, 0),
    ]
}

/// Creates device nodes inside the root and the standard /dev symlinks. Each node is made
/// with `mknodat` in its parent directory (resolved inside the root) with its exact mode (the
/// umask is cleared meanwhile) and owned with a no-follow `fchownat`.
pub fn create_devices(root: &Root, devices: &[LinuxDevice]) -> Result<()> {
    let old = nix::sys::stat::umask(Mode::empty());
    let made = make_nodes(root, devices);
    nix::sys::stat::umask(old);
    made?;
    let dev = Path::new("/dev");
    let dir = root
        .mkdir_all(dev, Mode::from_bits_truncate(0o755))
        .map_err(inerr("create", dev))?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        // /dev/core only where the kernel has /proc/kcore (as runc does).
        if link == "core" && !Path::new("/proc/kcore").exists() {
            continue;
        }
        match nix::unistd::symlinkat(to, dir.as_fd(), link) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(inerr("symlink", &dev.join(link))(e)),
        }
    }
    Ok(())
}

fn make_nodes(root: &Root, devices: &[LinuxDevice]) -> Result<()> {
    // Most nodes share /dev: its descriptor is kept from one node to the next.
    let mut parent: Option<(PathBuf, OwnedFd, bool)> = None;
    for d in devices {
        let path = d.path();
        let name = path
            .file_name()
            .ok_or_else(|| RootfsError::BadPath(path.display().to_string()))?;
        let dir_path = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let (dir, dir_setgid) = match parent.take() {
            Some((p, fd, g)) if p == dir_path => (fd, g),
            _ => {
                let fd = root
                    .mkdir_all(&dir_path, Mode::from_bits_truncate(0o755))
                    .map_err(inerr("create", &dir_path))?;
                if dir_path != Path::new("/") && root.is_root(fd.as_fd()) {
                    return Err(RootfsError::TargetIsRoot(dir_path.display().to_string()));
                }
                let g = nix::sys::stat::fstat(fd.as_fd())
                    .map_or(true, |st| st.st_mode & libc::S_ISGID != 0);
                (fd, g)
            }
        };
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666) & 0o7777);
        let dev = libc::makedev(
            u32::try_from(d.major()).unwrap_or(0),
            u32::try_from(d.minor()).unwrap_or(0),
        );
        // The common case (a fresh /dev tmpfs) costs one call; a name that is taken (by the
        // image, or an earlier entry) is removed (never followed) and made again.
        let mknod = || nix::sys::stat::mknodat(dir.as_fd(), name, kind, mode, dev);
        match mknod() {
            Err(Errno::EEXIST) => {
                let _ = nix::unistd::unlinkat(
                    dir.as_fd(),
                    name,
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
                mknod()
            }
            r => r,
        }
        .map_err(inerr("mknod", path))?;
        // A new node belongs to root (this process), unless its directory is set-group-ID: a
        // chown is needed only for another owner.
        let (uid, gid) = (d.uid().unwrap_or(0), d.gid().unwrap_or(0));
        if uid != 0 || gid != 0 || dir_setgid {
            nix::unistd::fchownat(
                dir.as_fd(),
                name,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(inerr("chown", path))?;
        }
        parent = Some((dir_path, dir, dir_setgid));
    }
    Ok(())
}

/// Makes the whole mount tree private to this namespace, makes `rootfs` (a trusted host path:
/// the container's bundle) a mount point, and opens it as the [`Root`] every later path is
/// resolved in.
pub fn prepare(rootfs: &Path) -> Result<Root> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(merr(Path::new("/")))?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(merr(rootfs))?;
    Root::open(rootfs).map_err(|e| RootfsError::Io {
        what: "open",
        path: rootfs.display().to_string(),
        source: e.into(),
    })
}

/// Switches the root to `root` and detaches the old root, then checks (failing closed) that
/// `/` is the prepared root filesystem and that nothing — the old root included — is stacked
/// over it. The root's descriptor is closed on the way.
pub fn pivot(root: Root) -> Result<()> {
    nix::unistd::fchdir(root.fd()).map_err(merr(Path::new(".")))?;
    nix::unistd::pivot_root(".", ".").map_err(merr(Path::new(".")))?;
    // The old root is now stacked over "."; make it a slave so the detach does not propagate.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(merr(Path::new("/")))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(merr(Path::new("/")))?;
    std::env::set_current_dir("/").map_err(ioerr("chdir", Path::new("/")))?;
    let want = root.identity();
    drop(root);
    let cwd = nix::fcntl::AT_FDCWD;
    let fail = |what: String| RootfsError::Pivot(what);
    let now = inroot::identity_at(cwd, "/").map_err(|e| fail(format!("stat /: {e}")))?;
    if now != want {
        return Err(fail(format!(
            "/ is not the prepared root filesystem (mount {} inode {}, expected mount {} inode {})",
            now.mnt_id, now.ino, want.mnt_id, want.ino
        )));
    }
    // `..` of the root resolves to the topmost mount stacked on it.
    let over = inroot::identity_at(cwd, "/..").map_err(|e| fail(format!("stat /..: {e}")))?;
    if over.mnt_id != want.mnt_id {
        return Err(fail(format!(
            "mount {} is stacked over the container's root (the old root or a mount that landed on it)",
            over.mnt_id
        )));
    }
    Ok(())
}

/// Covers the spec's masked paths (an empty read-only tmpfs over a directory, the container's
/// `/dev/null` over anything else) and bind-remounts its read-only paths read-only, each
/// resolved inside the root without following any symlink. Paths that do not exist are
/// skipped, as runc does.
pub fn mask(root: &Root, spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let open = |p: &Path| -> Result<Option<OwnedFd>> {
        match root.open_in(p, OFlag::O_PATH, ResolveFlag::RESOLVE_NO_SYMLINKS) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(inerr("open", p)(e)),
        }
    };
    let mut null: Option<OwnedFd> = None;
    for p in linux.masked_paths().iter().flatten() {
        let path = Path::new(p);
        let Some(fd) = open(path)? else { continue };
        if root.is_root(fd.as_fd()) {
            return Err(RootfsError::TargetIsRoot(p.clone()));
        }
        let on = proc_fd(fd.as_fd());
        let is_dir = nix::sys::stat::fstat(fd.as_fd())
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        if is_dir {
            mount(
                Some("tmpfs"),
                on.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(merr(path))?;
        } else {
            if null.is_none() {
                let dn = Path::new("/dev/null");
                null = Some(
                    root.open_in(dn, OFlag::O_PATH, ResolveFlag::RESOLVE_NO_SYMLINKS)
                        .map_err(inerr("open", dn))?,
                );
            }
            let src = null
                .as_ref()
                .map(|n| proc_fd(n.as_fd()))
                .unwrap_or_default();
            mount(
                Some(src.as_str()),
                on.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(merr(path))?;
        }
    }
    for p in linux.readonly_paths().iter().flatten() {
        let path = Path::new(p);
        let Some(fd) = open(path)? else { continue };
        if root.is_root(fd.as_fd()) {
            return Err(RootfsError::TargetIsRoot(p.clone()));
        }
        let tree = clone_tree(Some(fd.as_fd()), Path::new(""), true).map_err(merr(path))?;
        attach(tree.as_fd(), fd.as_fd()).map_err(merr(path))?;
        mount(
            None::<&str>,
            proc_fd(tree.as_fd()).as_str(),
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(merr(path))?;
    }
    Ok(())
}

/// After the pivot: makes `/` read-only if the spec asks.
pub fn finish(spec: &Spec) -> Result<()> {
    if spec
        .root()
        .as_ref()
        .and_then(oci_spec::runtime::Root::readonly)
        == Some(true)
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(merr(Path::new("/")))?;
    }
    Ok(())
}

/// The path under /proc/sys of a sysctl key (`net.ipv4.ip_forward`); `None` for a key that is
/// empty or has an empty, `.` or `..` part.
fn sysctl_path(key: &str) -> Option<PathBuf> {
    let mut p = PathBuf::from("/proc/sys");
    for part in key.split(['.', '/']) {
        if part.is_empty() || part == ".." {
            return None;
        }
        p.push(part);
    }
    Some(p)
}

/// Writes `linux.sysctl` values under /proc/sys (after /proc is mounted, before it is made
/// read-only), each file resolved inside the root without symlinks and checked to be on the
/// container's procfs.
pub fn sysctls(root: &Root, spec: &Spec) -> Result<()> {
    use std::io::Write as _;
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()) else {
        return Ok(());
    };
    for (k, v) in map {
        let path = sysctl_path(&k).ok_or_else(|| RootfsError::BadPath(format!("sysctl {k}")))?;
        let fd = root
            .open_in(
                &path,
                OFlag::O_WRONLY | OFlag::O_NOCTTY,
                ResolveFlag::RESOLVE_NO_SYMLINKS,
            )
            .map_err(inerr("open", &path))?;
        let on_proc = nix::sys::statfs::fstatfs(fd.as_fd())
            .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
        if !on_proc {
            return Err(inerr("write sysctl", &path)(Errno::EXDEV));
        }
        fs::File::from(fd)
            .write_all(v.as_bytes())
            .map_err(ioerr("write sysctl", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_private_mount_namespace_unshares_then_makes_root_a_slave() {
        use crate::engine::runtime::sys::{Call, Recorder};
        let sys = Recorder::default();
        private_mount_namespace(&sys).unwrap();
        assert_eq!(
            sys.calls(),
            [
                Call::Unshare(nix::sched::CloneFlags::CLONE_NEWNS),
                Call::Mount {
                    source: None,
                    target: PathBuf::from("/"),
                    fstype: None,
                    flags: MsFlags::MS_REC | MsFlags::MS_SLAVE,
                    data: None,
                },
            ]
        );
        // Without a namespace of its own, nothing is mounted (it would reach the host).
        let sys = Recorder::failing(|c| matches!(c, Call::Unshare(_)).then_some(Errno::EPERM));
        let e = private_mount_namespace(&sys).unwrap_err().to_string();
        assert!(e.contains("unshare mount namespace"), "{e}");
        assert_eq!(sys.calls().len(), 1);
    }

    #[test]
    fn rootfs_options_split_flags_and_data() {
        let o: Vec<String> = [
            "nosuid",
            "noexec",
            "mode=1777",
            "size=65536k",
            "rprivate",
            "ro",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        let (f, p, d) = parse_options(&o);
        assert!(f.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY));
        assert_eq!(p, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(d, "mode=1777,size=65536k");
    }

    #[test]
    fn rootfs_sysctl_paths_stay_under_proc_sys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert!(sysctl_path("net..x").is_none());
        assert!(sysctl_path("../../etc/passwd").is_none());
        assert!(needs_propagation(MsFlags::MS_SHARED | MsFlags::MS_REC));
        assert!(!needs_propagation(MsFlags::MS_PRIVATE | MsFlags::MS_REC));
        assert!(!needs_propagation(MsFlags::empty()));
    }
}
