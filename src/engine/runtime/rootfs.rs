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
//! to, /dev/shm, /dev/mqueue, a read-only /sys, bind mounts, volumes, tmpfs), then
//! **pivot_root**s into the rootfs and detaches the old root so no host path stays reachable.
//! Last, Docker's *masked paths* (kernel information a container must not read: /proc/kcore,
//! /proc/keys, …) are covered by /dev/null or an empty read-only tmpfs, and the *read-only
//! paths* (/proc/sys, /proc/sysrq-trigger, …) are bind-remounted read-only.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

/// Errors of root filesystem setup.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
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

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// The overlay through the new mount API: no limit on the number of layers.
fn mount_overlay_fsconfig(
    lower: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    volatile: bool,
) -> Result<()> {
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let fail = |what: &'static str| RootfsError::Io {
        what,
        path: target.display().to_string(),
        source: io::Error::last_os_error(),
    };
    let name = cstr("overlay");
    // SAFETY: fsopen takes a valid NUL-terminated string and flags; returns a new fd or -1.
    let fsfd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), 1 as libc::c_uint) };
    if fsfd < 0 {
        return Err(fail("fsopen overlay for"));
    }
    let fsfd = fsfd as libc::c_int;
    let set = |key: &str, value: &str| -> Result<()> {
        let k = cstr(key);
        let v = cstr(value);
        // SAFETY: fsfd is an fs context fd; key and value are valid C strings for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd,
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r < 0 {
            Err(fail("fsconfig overlay for"))
        } else {
            Ok(())
        }
    };
    let result = (|| {
        for l in lower.iter().rev() {
            set("lowerdir+", &l.display().to_string())?;
        }
        if let Some((u, w)) = upper {
            set("upperdir", &u.display().to_string())?;
            set("workdir", &w.display().to_string())?;
        }
        set("index", "off")?;
        set("xino", "off")?;
        if volatile {
            let k = cstr("volatile");
            // SAFETY: fsfd is valid; FSCONFIG_SET_FLAG takes a key and no value.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fsfd,
                    0 as libc::c_uint,
                    k.as_ptr(),
                    std::ptr::null::<libc::c_char>(),
                    0,
                )
            };
            if r < 0 {
                return Err(fail("fsconfig overlay for"));
            }
        }
        // SAFETY: fsfd is valid; the null key/value are allowed for CMD_CREATE.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd,
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        };
        if r < 0 {
            return Err(fail("create overlay for"));
        }
        // SAFETY: fsfd is a created fs context; flags are valid.
        let mfd = unsafe { libc::syscall(libc::SYS_fsmount, fsfd, 1 as libc::c_uint, 0) };
        if mfd < 0 {
            return Err(fail("fsmount overlay for"));
        }
        let mfd = mfd as libc::c_int;
        let empty = cstr("");
        let t = CString::new(target.as_os_str().as_bytes()).unwrap_or_default();
        // SAFETY: mfd is a detached mount; empty path + flag move it onto the target path.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mfd,
                empty.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        let err = if r < 0 {
            Some(fail("move_mount overlay to"))
        } else {
            None
        };
        // SAFETY: mfd is our fd.
        unsafe { libc::close(mfd) };
        err.map_or(Ok(()), Err)
    })();
    // SAFETY: fsfd is our fd.
    unsafe { libc::close(fsfd) };
    result
}

/// Joins `dest` (absolute, from the spec) under `root`, refusing `..` components.
pub fn under(root: &Path, dest: &Path) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in dest.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => return Err(RootfsError::BadPath(dest.display().to_string())),
        }
    }
    Ok(out)
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

/// Creates the mount point for `source` at `target`: a file for a file, else a directory.
fn ensure_target(source: Option<&Path>, target: &Path, is_bind: bool) -> Result<()> {
    if fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    let is_file = is_bind && source.is_some_and(|s| fs::metadata(s).is_ok_and(|m| !m.is_dir()));
    if is_file {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(ioerr("create", parent))?;
        }
        fs::write(target, b"").map_err(ioerr("create", target))?;
    } else {
        fs::create_dir_all(target).map_err(ioerr("create", target))?;
    }
    Ok(())
}

/// Performs one spec mount under `rootfs`.
pub fn mount_one(rootfs: &Path, m: &Mount) -> Result<()> {
    let target = under(rootfs, m.destination())?;
    let opts = m.options().clone().unwrap_or_default();
    let (flags, propagation, data) = parse_options(&opts);
    let typ = m.typ().as_deref().unwrap_or("none");
    let is_bind = flags.contains(MsFlags::MS_BIND) || typ == "bind";
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup_view(&target, flags);
    }
    ensure_target(m.source().as_deref(), &target, is_bind)?;
    if is_bind {
        let src = m.source().clone().unwrap_or_default();
        mount(
            Some(&src),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | (flags & MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(merr(&target))?;
        let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None::<&str>,
            )
            .map_err(merr(&target))?;
        }
    } else {
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let d = (!data.is_empty()).then_some(data.as_str());
        let res = mount(Some(&src), &target, Some(typ), flags, d);
        match res {
            Ok(()) => {}
            // A new sysfs needs a network namespace of our own; with the host's network, bind
            // the host's /sys read-only instead (what runc does as well in that case).
            Err(nix::Error::EPERM) if typ == "sysfs" => {
                mount(
                    Some("/sys"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(merr(&target))?;
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
                    None::<&str>,
                )
                .map_err(merr(&target))?;
            }
            Err(e) => return Err(merr(&target)(e)),
        }
    }
    if !propagation.is_empty() {
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            propagation,
            None::<&str>,
        )
        .map_err(merr(&target))?;
    }
    Ok(())
}

/// Mounts the container's view of its own cgroups at `target` (see
/// [`super::cgroups::container_view`]); `flags` are the spec mount's (`ro` unless
/// privileged, `nosuid`, `nodev`, `noexec`). The process is already in its cgroup namespace.
fn mount_cgroup_view(target: &Path, flags: MsFlags) -> Result<()> {
    use super::cgroups::{Layout, ViewMount, container_view};
    let layout = Layout::detect().map_err(|e| RootfsError::Io {
        what: "detect the cgroup layout for",
        path: target.display().to_string(),
        source: io::Error::other(e.to_string()),
    })?;
    let read_only = flags.contains(MsFlags::MS_RDONLY);
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let fs_flags = base | (flags & (MsFlags::MS_RDONLY | MsFlags::MS_RELATIME));
    for step in container_view(&layout, target, read_only) {
        match step {
            ViewMount::Tmpfs(dir) => {
                ensure_target(None, &dir, false)?;
                mount(Some("tmpfs"), &dir, Some("tmpfs"), base, Some("mode=755"))
                    .map_err(merr(&dir))?;
            }
            ViewMount::V1 { dir, options } => {
                fs::create_dir_all(&dir).map_err(ioerr("create", &dir))?;
                mount(
                    Some("cgroup"),
                    &dir,
                    Some("cgroup"),
                    fs_flags,
                    Some(options.as_str()),
                )
                .map_err(merr(&dir))?;
            }
            ViewMount::V2(dir) => {
                ensure_target(None, &dir, false)?;
                mount(
                    Some("cgroup2"),
                    &dir,
                    Some("cgroup2"),
                    fs_flags,
                    None::<&str>,
                )
                .map_err(merr(&dir))?;
            }
            ViewMount::Symlink { link, target } => {
                symlink(&target, &link).map_err(ioerr("symlink", &link))?;
            }
            ViewMount::RemountReadOnly(dir) => {
                mount(
                    None::<&str>,
                    &dir,
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
                    Some("mode=755"),
                )
                .map_err(merr(&dir))?;
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

/// Creates device nodes under `rootfs` and the standard /dev symlinks.
pub fn create_devices(rootfs: &Path, devices: &[LinuxDevice]) -> Result<()> {
    for d in devices {
        let target = under(rootfs, d.path())?;
        if let Some(p) = target.parent() {
            fs::create_dir_all(p).map_err(ioerr("create", p))?;
        }
        let kind = match d.typ() {
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        let mode = d.file_mode().unwrap_or(0o666);
        let dev = libc::makedev(d.major() as u32, d.minor() as u32);
        let path = CString::new(target.as_os_str().as_bytes()).unwrap_or_default();
        let _ = fs::remove_file(&target);
        // SAFETY: path is a valid C string; mknod has no memory preconditions.
        let r = unsafe { libc::mknod(path.as_ptr(), kind | (mode & 0o7777), dev) };
        if r != 0 {
            return Err(RootfsError::Io {
                what: "mknod",
                path: target.display().to_string(),
                source: io::Error::last_os_error(),
            });
        }
        // mknod is subject to the umask: set the mode exactly.
        // SAFETY: as above.
        unsafe {
            libc::chmod(path.as_ptr(), mode & 0o7777);
            libc::chown(path.as_ptr(), d.uid().unwrap_or(0), d.gid().unwrap_or(0));
        }
    }
    let dev = rootfs.join("dev");
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        let l = dev.join(link);
        // /dev/core only where the kernel has /proc/kcore (as runc does).
        if link == "core" && !Path::new("/proc/kcore").exists() {
            continue;
        }
        if fs::symlink_metadata(&l).is_err() {
            symlink(to, &l).map_err(ioerr("symlink", &l))?;
        }
    }
    Ok(())
}

/// Makes the whole mount tree private to this namespace, then makes `rootfs` a mount point.
pub fn prepare(rootfs: &Path) -> Result<()> {
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
    .map_err(merr(rootfs))
}

/// Switches the root to `rootfs` and detaches the old root.
pub fn pivot(rootfs: &Path) -> Result<()> {
    std::env::set_current_dir(rootfs).map_err(ioerr("chdir", rootfs))?;
    nix::unistd::pivot_root(".", ".").map_err(merr(rootfs))?;
    // The old root is now stacked under "."; make it private so the detach does not propagate.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(merr(Path::new("/")))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(merr(Path::new("/")))?;
    std::env::set_current_dir("/").map_err(ioerr("chdir", Path::new("/")))
}

/// Masks and write-protects paths after the pivot, and makes `/` read-only if asked.
pub fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    for p in linux.masked_paths().iter().flatten() {
        let path = Path::new(p);
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(merr(path))?,
            Ok(_) => mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(merr(path))?,
            Err(_) => {}
        }
    }
    for p in linux.readonly_paths().iter().flatten() {
        let path = Path::new(p);
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(merr(path))?;
        mount(
            None::<&str>,
            path,
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

/// Writes `linux.sysctl` values under /proc/sys (after /proc is mounted, before it is made
/// read-only).
pub fn sysctls(rootfs: &Path, spec: &Spec) -> Result<()> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()) else {
        return Ok(());
    };
    for (k, v) in map {
        let rel = k.replace('.', "/");
        let path = rootfs.join("proc/sys").join(&rel);
        fs::write(&path, v.as_bytes()).map_err(ioerr("write sysctl", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rootfs_under_refuses_dotdot() {
        assert_eq!(
            under(Path::new("/r"), Path::new("/etc/hosts")).unwrap(),
            PathBuf::from("/r/etc/hosts")
        );
        assert!(under(Path::new("/r"), Path::new("/../etc")).is_err());
    }
}
