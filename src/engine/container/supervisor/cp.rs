//! `cp` between the host and a running container: the helpers `tug __shim cp-out` and
//! `cp-in` run their tar inside the container's root; the host side only streams.

use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::container::state::{self};
use crate::engine::container::{ContainerError, Result};
use crate::engine::runtime::{self};
/// Joins the mount namespace and the root of the running container whose first process is
/// `target` (`PID:START`, the pid and its recorded start time), for `cp`: from here on every
/// path resolves inside the container (see `runtime::enter`).
fn join_root(target: &str) -> Result<()> {
    let (pid, start) = target.split_once(':').unwrap_or((target, ""));
    let pid: i32 = pid
        .parse()
        .map_err(|_| ContainerError::Invalid(format!("bad process {target:?}")))?;
    let start = start.parse::<u64>().ok();
    let t = runtime::Joinable::open(pid, || state::alive(Some(pid), start))
        .map_err(|_| ContainerError::NotRunning(pid.to_string()))?;
    runtime::enter(&t, nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| ContainerError::Start {
        id: pid.to_string(),
        reason: e.to_string(),
    })
}

pub(super) fn cp_out(target: &str, src: &Path) -> Result<()> {
    join_root(target)?;
    let name = src
        .file_name()
        .map_or_else(|| PathBuf::from("root"), PathBuf::from);
    let stdout = std::io::stdout().lock();
    let mut b = tar::Builder::new(stdout);
    append_tree(&mut b, src, &name)
}

/// Writes `src` (a directory with everything under it, or one entry) into `b` as `name`,
/// never following symlinks, and ends the archive.
fn append_tree<W: std::io::Write>(b: &mut tar::Builder<W>, src: &Path, name: &Path) -> Result<()> {
    b.follow_symlinks(false);
    let io = |source| ContainerError::Io {
        path: src.to_path_buf(),
        source,
    };
    let md = fs::symlink_metadata(src).map_err(io)?;
    let r = if md.is_dir() {
        b.append_dir_all(name, src)
    } else {
        b.append_path_with_name(src, name)
    };
    r.and_then(|()| b.finish()).map_err(io)
}

/// Unpacks the tar on stdin (one top entry, `name`) inside the container: into `dest` when it
/// is a directory there, else as `dest` itself (unpacked next to it, then renamed).
pub(super) fn cp_in(target: &str, dest: &Path, name: &Path) -> Result<()> {
    join_root(target)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContainerError::Io { path, source }
    };
    let unpack = |dir: &Path| -> Result<()> {
        let mut a = tar::Archive::new(std::io::stdin().lock());
        a.set_preserve_permissions(true);
        a.set_overwrite(true);
        a.unpack(dir).map_err(io(dir))
    };
    if fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
        return unpack(dest);
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    let tmp = tempfile::Builder::new()
        .prefix(".tug-cp-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    unpack(tmp.path())?;
    fs::rename(tmp.path().join(name), dest).map_err(io(dest))
}

/// `cp` in either direction, with Docker's destination rules: into an existing directory
/// the source keeps its name; otherwise the destination path names the copy.
pub(in crate::engine::container) fn copy(
    exe: &Path,
    _root: &Path,
    id: &str,
    src: &Path,
    dest: &Path,
    into: bool,
) -> Result<()> {
    let dir = _root.join("containers").join(id);
    let st = state::observe(&dir);
    let pid = st
        .pid
        .ok_or_else(|| ContainerError::NotRunning(id.to_string()))?;
    // The helper joins this process (checked by its start time) and resolves every path
    // inside the container; nothing here looks into the container's files.
    let target = format!(
        "{pid}:{}",
        st.pid_start.map(|s| s.to_string()).unwrap_or_default()
    );
    if into {
        copy_in(exe, &target, src, dest)
    } else {
        copy_out(exe, id, &target, src, dest)
    }
}

/// Host → container: tars the host path under its own name; the helper unpacks it into
/// `dest` (a directory there) or renames it to `dest`.
fn copy_in(exe: &Path, target: &str, src: &Path, dest: &Path) -> Result<()> {
    use std::process::{Command, Stdio};
    let name = src
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| ContainerError::Invalid(format!("bad path {}", src.display())))?;
    let mut child = Command::new(exe)
        .arg(crate::engine::helpers::SHIM)
        .arg("cp-in")
        .arg(target)
        .arg(dest)
        .arg(&name)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|source| ContainerError::Io {
            path: exe.to_path_buf(),
            source,
        })?;
    let stdin = child.stdin.take().ok_or_else(|| copy_failed(src))?;
    let mut b = tar::Builder::new(stdin);
    append_tree(&mut b, src, &name)?;
    drop(b);
    let status = child.wait().map_err(|source| ContainerError::Io {
        path: exe.to_path_buf(),
        source,
    })?;
    if !status.success() {
        return Err(copy_failed(dest));
    }
    Ok(())
}

/// Container → host: the helper tars `src` inside the container; it is unpacked into
/// `dest` (a directory) or renamed to `dest`, refusing entries that leave it and dropping
/// set-ID bits.
fn copy_out(exe: &Path, id: &str, target: &str, src: &Path, dest: &Path) -> Result<()> {
    use std::process::{Command, Stdio};
    let child = Command::new(exe)
        .arg(crate::engine::helpers::SHIM)
        .arg("cp-out")
        .arg(target)
        .arg(src)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| ContainerError::Io {
            path: exe.to_path_buf(),
            source,
        })?;
    let out = child.stdout.ok_or_else(|| copy_failed(src))?;
    let name = src
        .file_name()
        .map_or_else(|| PathBuf::from("root"), PathBuf::from);
    if dest.is_dir() {
        let mut a = tar::Archive::new(out);
        a.set_preserve_permissions(true);
        // Set-ID bits of the container's files are not carried onto the host.
        a.set_mask(0o6000);
        a.unpack(dest).map_err(|source| ContainerError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
    } else {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::tempdir_in(parent).map_err(|source| ContainerError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
        let mut a = tar::Archive::new(out);
        a.set_preserve_permissions(true);
        // Set-ID bits of the container's files are not carried onto the host.
        a.set_mask(0o6000);
        a.unpack(tmp.path()).map_err(|source| ContainerError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
        let got = tmp.path().join(&name);
        if !got.exists() && fs::symlink_metadata(&got).is_err() {
            return Err(ContainerError::NotFound(format!(
                "{}:{}",
                id,
                src.display()
            )));
        }
        fs::rename(&got, dest).map_err(|source| ContainerError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

fn copy_failed(p: &Path) -> ContainerError {
    ContainerError::Io {
        path: p.to_path_buf(),
        source: std::io::Error::other("copy failed"),
    }
}
