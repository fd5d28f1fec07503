//! The per-container supervisor (like conmon, without a daemon), and the other helpers tug
//! re-executes itself as (`tug __shim …`): `exec`, `cp-out`, `cp-in`.
//!
//! `ContainerStore::start` runs `tug __shim run <root> <id> [--attach]` with a status pipe as
//! fd 3. The shim forks, the parent exits at once and the child starts a new session, so the
//! supervisor outlives the tug command. It is single-threaded and has no async runtime: one
//! `poll(2)` loop over the container's output pipes (or its terminal), a signalfd for SIGCHLD,
//! and timers for healthchecks. It:
//! - enters a private mount namespace and mounts the overlay root filesystem there (gone with
//!   it: no mount can leak into the host);
//! - starts the container with the built-in runtime, or with an external OCI runtime
//!   (`runc create` + `start`, `delete` after the exit) on the same bundle;
//! - writes every output line to the log (with timestamp and stream tag); when attached it
//!   also copies output to the caller's stdout/stderr and the caller's input to the container;
//! - records start, exit code and OOM kills in `state.json`, applies the restart policy with
//!   an exponential backoff (100 ms doubling, reset after 10 s of running), runs
//!   healthchecks and records health;
//! - reports `ok <pid>` or `err <message>` on the status pipe, and `exit <code>` when attached.

mod cp;
mod exec;
mod health;
mod io;
mod run;

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::Spec;

use crate::engine::container::logs::LogWriter;
use crate::engine::container::state::{self, State};
use crate::engine::container::{ContainerError, ContainerStore, ExecOptions, Record, Result};
use crate::engine::runtime::cgroups::Cgroup;

pub(in crate::engine::container) use cp::copy;

/// Why a shim (supervisor, exec, cp) could not do its work. The supervisor records it as
/// text in the container's state and on its status pipe, for the command that started it.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The command line is not what the engine passes.
    #[error("missing shim argument")]
    MissingArgument,
    /// `tug __shim` with an unknown first argument.
    #[error("unknown shim command")]
    UnknownCommand,
    /// The exec options are not what the engine writes.
    #[error("exec options: {0}")]
    ExecOptions(#[source] serde_json::Error),
    /// The container's store or its helpers failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The root filesystem cannot be mounted.
    #[error(transparent)]
    Rootfs(#[from] crate::engine::runtime::rootfs::RootfsError),
    /// The image has no layer to mount.
    #[error("the image has no layers")]
    NoLayers,
    /// The built-in runtime could not start the container.
    #[error(transparent)]
    Runtime(#[from] crate::engine::runtime::RuntimeError),
    /// A stdio descriptor for an external runtime cannot be duplicated.
    #[error("dup: {0}")]
    Dup(#[source] nix::Error),
    /// An external runtime (`--runtime`) cannot be run.
    #[error("cannot run {runtime}: {source}")]
    RuntimeCommand {
        /// The runtime's program.
        runtime: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `RUNTIME create` failed.
    #[error(
        "{runtime} create failed ({status}) before the container started (see the container's log)"
    )]
    RuntimeCreate {
        /// The runtime's program.
        runtime: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// `RUNTIME create` left no pid file.
    #[error("{runtime} create wrote no pid file")]
    NoPidFile {
        /// The runtime's program.
        runtime: String,
    },
    /// `RUNTIME start` failed.
    #[error("{runtime} start failed ({status})")]
    RuntimeStart {
        /// The runtime's program.
        runtime: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
}

/// Entry point of `tug __shim …` (args: the full argv). Returns the exit code.
///
/// # Errors
/// A command line the engine does not write, or what the exec or cp helper reports.
pub fn main(args: &[OsString]) -> std::result::Result<i32, ShimError> {
    let a: Vec<String> = args
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let get = |i: usize| a.get(i).cloned().ok_or(ShimError::MissingArgument);
    match a.get(2).map(String::as_str) {
        Some("run") => {
            let root = PathBuf::from(get(3)?);
            let id = get(4)?;
            let flags = a.get(5..).unwrap_or_default();
            let attach = flags.iter().any(|s| s == "--attach");
            let cgroup_pipe = flags.iter().any(|s| s == "--cgroup-pipe");
            Ok(run::run_main(&root, &id, attach, cgroup_pipe))
        }
        Some("exec") => {
            let root = PathBuf::from(get(3)?);
            let id = get(4)?;
            let opts: ExecOptions =
                serde_json::from_str(&get(5)?).map_err(ShimError::ExecOptions)?;
            Ok(exec::exec_main(&root, &id, &opts)?)
        }
        Some("cp-out") => {
            cp::cp_out(&get(3)?, Path::new(&get(4)?))?;
            Ok(0)
        }
        Some("cp-in") => {
            cp::cp_in(&get(3)?, Path::new(&get(4)?), Path::new(&get(5)?))?;
            Ok(0)
        }
        _ => Err(ShimError::UnknownCommand),
    }
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor number; harmless if it is not open.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

struct StatusPipe(Option<fs::File>);

impl StatusPipe {
    fn send(&mut self, line: &str) {
        if let Some(f) = &mut self.0 {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
    fn close(&mut self) {
        self.0 = None;
    }
}

struct Supervisor {
    store: ContainerStore,
    id: String,
    dir: PathBuf,
    rec: Record,
    spec: Spec,
    cgroup: Cgroup,
    log: LogWriter,
    st: State,
    attach: bool,
    /// The starter's "cgroup made" pipe, for the first run only.
    cgroup_ready: Option<OwnedFd>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Supervisor {
    fn new(store: ContainerStore, id: &str, attach: bool) -> Result<Supervisor> {
        let dir = store.container_dir(id);
        let rec = store.record(id)?;
        let spec_path = dir.join("bundle/config.json");
        let bytes = fs::read(&spec_path).map_err(|source| ContainerError::Io {
            path: spec_path.clone(),
            source,
        })?;
        let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt {
            path: spec_path,
            reason: e.to_string(),
        })?;
        let cgroup = store.cgroup(id)?;
        let log_path = dir.join("container.log");
        let log = LogWriter::open(
            &log_path,
            rec.config.log_max_size.unwrap_or(super::logs::DEFAULT_MAX),
        )
        .map_err(|source| ContainerError::Io {
            path: log_path,
            source,
        })?;
        let mut st = state::read(&dir);
        let me = std::process::id() as i32;
        st.supervisor_pid = Some(me);
        st.supervisor_start = state::start_time(me);
        st.error = None;
        Ok(Supervisor {
            id: id.to_string(),
            dir,
            rec,
            spec,
            cgroup,
            log,
            st,
            attach,
            store,
            cgroup_ready: None,
        })
    }

    fn save(&self) {
        let _ = state::write_sync(&self.dir, &self.st, !self.rec.config.auto_remove);
    }
}
