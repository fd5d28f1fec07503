//! Persistent network namespaces.
//!
//! A network namespace lives as long as something refers to it: a process inside it, an open
//! file descriptor of `/proc/<pid>/ns/net`, or a bind mount of that file. tug makes a new one
//! on a short-lived thread (`unshare(CLONE_NEWNET)` only affects the calling thread) and bind
//! mounts `/proc/thread-self/ns/net` onto `<root>/netns/<container id>`, exactly what
//! `ip netns add` does with `/run/netns`. The container later joins it with `setns`. Removing
//! the namespace is unmounting that file (the kernel frees the namespace, and with it the
//! container ends of all veth pairs, once the last process inside is gone).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::{Error, Result};

/// Creates `path` (an empty file) and binds a new network namespace on it. An existing,
/// mounted namespace at `path` is kept (idempotent).
pub fn create(path: &Path) -> Result<()> {
    if is_mounted(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        crate::engine::private::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("create {}", dir.display()), e))?;
    }
    crate::engine::private::open_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::Io(format!("create {}", path.display()), e))?;
    let target: PathBuf = path.to_path_buf();
    let res = std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::Io("unshare a network namespace".into(), e.into()))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            Error::Io(
                format!("bind the namespace on {}", target.display()),
                e.into(),
            )
        })
    })
    .join()
    .map_err(|_| Error::Netlink("namespace thread panicked".into()))?;
    if let Err(e) = res {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// True when a namespace is bound at `path` (the file is an nsfs mount).
pub fn is_mounted(path: &Path) -> bool {
    // nsfs files report the NSFS magic number through statfs.
    match nix::sys::statfs::statfs(path) {
        Ok(s) => s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC,
        Err(_) => false,
    }
}

/// Unmounts and deletes the namespace file; missing is fine.
pub fn remove(path: &Path) -> Result<()> {
    // Several mounts may be stacked on the file if a crash raced; unmount them all.
    for _ in 0..8 {
        if !is_mounted(path) {
            break;
        }
        if let Err(e) = nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            return Err(Error::Io(format!("unmount {}", path.display()), e.into()));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io(format!("remove {}", path.display()), e)),
    }
}
