//! `RUN` steps: the helper process `tug __build-run <request.json>` that runs one command in
//! a container on tug's runtime and exits with its status.
//!
//! The builder is multi-threaded and must not fork, and a mount made by it would outlive it
//! if it were killed; so each `RUN` re-executes tug, which (single-threaded) enters a private
//! mount namespace, mounts the stage's layers with the step's upper directory as an overlay
//! (`redirect_dir=off,metacopy=off`, so the upper directory is a complete diff), mounts the
//! read-only overlays of `--mount=type=bind,from=<stage>`, starts the container with
//! [`runtime::launch`] (the spec comes from `container::spec`, Docker's isolation defaults),
//! waits for it, removes its cgroup and exits. Everything it mounted dies with its mount
//! namespace. A SIGTERM/SIGINT (or the builder's death, through `PR_SET_PDEATHSIG`) kills
//! the container first. Cost: about one one-shot container.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::runtime::{self, cgroups, rootfs};

/// Why a `RUN` step's helper could not run its command (its exit status is not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The request or the spec it names cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request or the spec is not what the builder writes.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A system call of the helper failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// An overlay of the step's layers could not be mounted.
    #[error("mount overlay at {}: {source}", target.display())]
    Overlay {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Too many layers for one mount call, and the kernel's overlay defaults would make a
    /// diff that is not plain.
    #[error(
        "the stage has {layers} layers and overlayfs {param} is on by default: cannot mount it \
         for a RUN step"
    )]
    OverlayDefaults {
        /// The stage's layers.
        layers: usize,
        /// The overlay module parameter that is on.
        param: &'static str,
    },
    /// Mounting failed.
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    /// The cgroup layout cannot be read.
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
    /// The container did not start.
    #[error(transparent)]
    Launch(#[from] runtime::RuntimeError),
    /// A signal (or the builder's end) stopped the step.
    #[error("interrupted")]
    Interrupted,
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> RunError {
    move |source| RunError::Sys { what, source }
}

/// What the helper does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The stage's layer directories, lowest first (empty: an empty root).
    pub layers: Vec<PathBuf>,
    /// Upper and work directories of the overlay.
    pub upper: PathBuf,
    /// Overlay work directory.
    pub work: PathBuf,
    /// Where to mount the root filesystem.
    pub rootfs: PathBuf,
    /// An empty directory (the lower layer of an empty root).
    pub empty: PathBuf,
    /// The runtime spec (`config.json`).
    pub spec: PathBuf,
    /// The container id (names its cgroup).
    pub id: String,
    /// Read-only overlays to mount first: (layers, mount point).
    pub overlays: Vec<(Vec<PathBuf>, PathBuf)>,
    /// Writable overlays whose writes are thrown away: (layers, mount point, upper, work).
    #[serde(default)]
    pub rw_overlays: Vec<(Vec<PathBuf>, PathBuf, PathBuf, PathBuf)>,
}

fn mount_layers(
    layers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    empty: &Path,
) -> Result<(), RunError> {
    let lower: Vec<PathBuf> = if layers.is_empty() {
        vec![empty.to_path_buf()]
    } else {
        layers.to_vec()
    };
    if upper.is_none() && lower.len() == 1 {
        return Ok(rootfs::mount_overlay(&lower, None, target)?);
    }
    let esc = |p: &Path| {
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace(':', "\\:")
            .replace(',', "\\,")
    };
    let lowers: Vec<String> = lower.iter().rev().map(|p| esc(p)).collect();
    let mut data = format!("lowerdir={}", lowers.join(":"));
    if let Some((u, w)) = upper {
        data.push_str(&format!(",upperdir={},workdir={}", esc(u), esc(w)));
    }
    // The upper directory must be a plain diff: no redirects, no metadata-only copy-ups.
    data.push_str(",index=off,xino=off,redirect_dir=off,metacopy=off");
    if data.len() < 3500 {
        return nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|source| RunError::Overlay {
            target: target.to_path_buf(),
            source,
        });
    }
    // Too many layers for one page of options: the new mount API, which has no
    // redirect_dir option here; refuse if the kernel's default would make redirects.
    for p in ["redirect_dir", "metacopy"] {
        let v = std::fs::read_to_string(format!("/sys/module/overlay/parameters/{p}"))
            .unwrap_or_default();
        if v.trim() == "Y" {
            return Err(RunError::OverlayDefaults {
                layers: lower.len(),
                param: p,
            });
        }
    }
    Ok(rootfs::mount_overlay(&lower, upper, target)?)
}

/// Entry point of `tug __build-run REQUEST`: returns the command's exit status (128+n for
/// a signal), or an error before it ran.
///
/// # Errors
/// The request cannot be read, mounting or starting failed, or a signal interrupted it.
pub fn main(request: &Path) -> Result<i32, RunError> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let req: Request = read_json(request)?;
    let spec: oci_spec::runtime::Spec = read_json(&req.spec)?;
    // The builder's death ends us (and we end the container).
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(sys("block signals"))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(sys("unshare mount namespace"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(sys("make / a slave mount"))?;
    for (layers, target) in &req.overlays {
        mount_layers(layers, None, target, &req.empty)?;
    }
    for (layers, target, upper, work) in &req.rw_overlays {
        mount_layers(layers, Some((upper, work)), target, &req.empty)?;
    }
    mount_layers(
        &req.layers,
        Some((&req.upper, &req.work)),
        &req.rootfs,
        &req.empty,
    )?;
    let layout = cgroups::Layout::detect()?;
    let cgroup = cgroups::Cgroup::new(
        layout,
        &crate::engine::container::spec::cgroup_path(&req.id),
    );
    let stdio = runtime::Stdio {
        stdin: 0,
        stdout: 1,
        stderr: 2,
        tty: false,
    };
    let started = runtime::launch(&spec, &req.rootfs, &stdio, false, &cgroup, false);
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = cgroup.destroy();
            return Err(e.into());
        }
    };
    let pid = started.pid;
    let mut killed = false;
    let code = loop {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => break c,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                let _ = cgroup.destroy();
                return Err(RunError::Sys {
                    what: "wait",
                    source: e,
                });
            }
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(_) => {
                // Killing the container's first process ends its whole pid namespace.
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                killed = true;
            }
            Err(_) => {}
        }
    };
    // Reap anything else (there is nothing: the pid namespace's init is gone).
    let _ = cgroup.destroy();
    let _ = nix::mount::umount2(&req.rootfs, nix::mount::MntFlags::MNT_DETACH);
    if killed {
        return Err(RunError::Interrupted);
    }
    Ok(code)
}

/// A JSON file the builder wrote for this helper.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RunError> {
    let bytes = std::fs::read(path).map_err(|source| RunError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| RunError::Json {
        path: path.to_path_buf(),
        source,
    })
}
