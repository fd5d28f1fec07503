//! The record of a project's watch session: `<root>/projects/<project>/watch.json` (pid and
//! start time of the watching process, its services, whether it runs in the background and
//! where its output goes). One session per project at a time; `tug ls` shows it, `tug watch
//! --stop` and `tug down` end it. A record whose process is gone (or is another process now)
//! counts as no session.
//!
//! A background session (`--detach`) is tug again, as `watch --no-up` with the caller's
//! project options, in a session of its own with its output in `watch.log`
//! ([`spawn_background`]); it is known to run once it has registered.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::container::state;

/// Set in the environment of the background process [`spawn_background`] starts.
pub const BACKGROUND: &str = "TUG_WATCH_BACKGROUND";

/// Errors of a session's record and of the background process.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A session of the project runs already.
    #[error(
        "a watch of project {project} already runs (pid {pid}); stop it with `tug watch --stop`"
    )]
    AlreadyRunning {
        /// The project.
        project: String,
        /// The session's process.
        pid: i32,
    },
    /// A file of the session cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The record cannot be serialized.
    #[error("watch record: {0}")]
    Record(#[from] serde_json::Error),
    /// The session's process cannot be signalled.
    #[error("cannot stop the watch (pid {pid}): {source}")]
    Signal {
        /// The session's process.
        pid: i32,
        /// The cause.
        source: nix::Error,
    },
    /// The background process cannot be started.
    #[error("cannot start the background watch: {0}")]
    Spawn(#[source] std::io::Error),
    /// The background process ended before it registered.
    #[error("the background watch ended ({status}):\n{log}")]
    Ended {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it wrote.
        log: String,
    },
    /// The background process did not register in time.
    #[error("the background watch did not start within {} s", waited.as_secs())]
    Timeout {
        /// How long it was given.
        waited: Duration,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, SessionError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SessionError {
    let path = path.to_path_buf();
    move |source| SessionError::Io { path, source }
}

/// A watch session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The watching process.
    pub pid: i32,
    /// Its start time (clock ticks since boot), to tell a reused pid.
    pub start: Option<u64>,
    /// The services watched.
    pub services: Vec<String>,
    /// Started with `--detach`.
    pub detached: bool,
    /// Where a background session writes its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

/// The project's directory in the state root.
#[must_use]
pub fn project_dir(root: &Path, project: &str) -> PathBuf {
    root.join("projects").join(project)
}

fn record_path(root: &Path, project: &str) -> PathBuf {
    project_dir(root, project).join("watch.json")
}

/// Where a background session of `project` writes its output.
#[must_use]
pub fn log_path(root: &Path, project: &str) -> PathBuf {
    project_dir(root, project).join("watch.log")
}

/// The live session of `project`, if any.
#[must_use]
pub fn running(root: &Path, project: &str) -> Option<Record> {
    let bytes = std::fs::read(record_path(root, project)).ok()?;
    let r: Record = serde_json::from_slice(&bytes).ok()?;
    state::alive(Some(r.pid), r.start).then_some(r)
}

/// This process's registration as `project`'s session; dropping it removes the record.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
    pid: i32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Only our own record: a later session may have replaced a stale one.
        let ours = std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .is_some_and(|r| r.pid == self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Registers this process as `project`'s session.
///
/// # Errors
/// Another session runs (named by its pid), or the record cannot be written.
pub fn register(
    root: &Path,
    project: &str,
    services: &[String],
    detached: bool,
    log: Option<PathBuf>,
) -> Result<Registration> {
    let dir = project_dir(root, project);
    crate::engine::private::create_dir_all(&dir).map_err(io(&dir))?;
    // Its own lock: the caller may hold the project's (`up --watch`).
    let lock_path = dir.join("watch.lock");
    let file = crate::engine::private::open_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io(&lock_path)(e.into()))?;
    if let Some(r) = running(root, project) {
        return Err(SessionError::AlreadyRunning {
            project: project.to_string(),
            pid: r.pid,
        });
    }
    let pid = std::process::id() as i32;
    let rec = Record {
        pid,
        start: state::start_time(pid),
        services: services.to_vec(),
        detached,
        log,
    };
    let path = record_path(root, project);
    let bytes = serde_json::to_vec_pretty(&rec)?;
    crate::util::fs::write_atomic(&path, &bytes, 0o600, crate::util::fs::Durability::None)
        .map_err(io(&path))?;
    Ok(Registration { path, pid })
}

/// Ends `project`'s session (SIGTERM, then SIGKILL after `timeout`) and waits until it is
/// gone. Returns the session that was ended, if one ran.
///
/// # Errors
/// The process cannot be signalled.
pub fn stop(root: &Path, project: &str, timeout: Duration) -> Result<Option<Record>> {
    use nix::sys::signal::{Signal, kill};
    let Some(r) = running(root, project) else {
        return Ok(None);
    };
    let pid = nix::unistd::Pid::from_raw(r.pid);
    let gone = || !state::alive(Some(r.pid), r.start);
    match kill(pid, Signal::SIGTERM) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(source) => return Err(SessionError::Signal { pid: r.pid, source }),
    }
    let deadline = Instant::now() + timeout;
    while !gone() {
        if Instant::now() >= deadline {
            let _ = kill(pid, Signal::SIGKILL);
            let hard = Instant::now() + Duration::from_secs(5);
            while !gone() && Instant::now() < hard {
                std::thread::sleep(Duration::from_millis(10));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A killed session leaves its record behind.
    let path = record_path(root, project);
    let stale = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        .is_some_and(|x| x.pid == r.pid);
    if stale {
        let _ = std::fs::remove_file(&path);
    }
    Ok(Some(r))
}

/// Starts `project`'s session in the background: tug again with `args` (the caller's
/// project options and `watch --no-up …`), in a session of its own, its output in the
/// project's watch log. Returns its pid once it has registered (a minute at most).
///
/// # Errors
/// A session runs already, the log cannot be opened, or the process cannot start, ends
/// before it registers (with what it wrote) or does not register in time.
pub fn spawn_background(root: &Path, project: &str, args: &[OsString]) -> Result<i32> {
    use std::os::unix::process::CommandExt as _;
    if let Some(r) = running(root, project) {
        return Err(SessionError::AlreadyRunning {
            project: project.to_string(),
            pid: r.pid,
        });
    }
    let log = log_path(root, project);
    let out = crate::engine::private::open_options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&log)
        .map_err(io(&log))?;
    let err = out.try_clone().map_err(io(&log))?;
    let exe = std::env::current_exe().map_err(SessionError::Spawn)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env(BACKGROUND, "1")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches nothing of the parent's memory.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(SessionError::Spawn)?;
    let pid = child.id() as i32;
    let waited = Duration::from_secs(60);
    let deadline = Instant::now() + waited;
    loop {
        if running(root, project).is_some_and(|r| r.pid == pid) {
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(SessionError::Ended {
                status,
                log: text.trim_end().to_string(),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SessionError::Timeout { waited });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
