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
) -> Result<(), String> {
    let lower: Vec<PathBuf> = if layers.is_empty() {
        vec![empty.to_path_buf()]
    } else {
        layers.to_vec()
    };
    if upper.is_none() && lower.len() == 1 {
        return rootfs::mount_overlay(&lower, None, target).map_err(|e| e.to_string());
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
        .map_err(|e| format!("mount overlay at {}: {e}", target.display()));
    }
    // Too many layers for one page of options: the new mount API, which has no
    // redirect_dir option here; refuse if the kernel's default would make redirects.
    for p in ["redirect_dir", "metacopy"] {
        let v = std::fs::read_to_string(format!("/sys/module/overlay/parameters/{p}"))
            .unwrap_or_default();
        if v.trim() == "Y" {
            return Err(format!(
                "the stage has {} layers and overlayfs {p} is on by default: cannot mount it for a RUN step",
                lower.len()
            ));
        }
    }
    rootfs::mount_overlay(&lower, upper, target).map_err(|e| e.to_string())
}

/// Entry point of `tug __build-run REQUEST`: returns the command's exit status (128+n for
/// a signal), or an error before it ran.
pub fn main(request: &Path) -> Result<i32, String> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let bytes = std::fs::read(request).map_err(|e| format!("{}: {e}", request.display()))?;
    let req: Request = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let spec_bytes =
        std::fs::read(&req.spec).map_err(|e| format!("{}: {e}", req.spec.display()))?;
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&spec_bytes).map_err(|e| e.to_string())?;
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
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| e.to_string())?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare mount namespace: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("make / a slave mount: {e}"))?;
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
    let layout = cgroups::Layout::detect().map_err(|e| e.to_string())?;
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
            return Err(e.to_string());
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
                return Err(format!("wait: {e}"));
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
        return Err("interrupted".into());
    }
    Ok(code)
}
