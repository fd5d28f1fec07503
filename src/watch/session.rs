//! The record of a project's watch session: `<root>/projects/<project>/watch.json` (pid and
//! start time of the watching process, its services, whether it runs in the background and
//! where its output goes). One session per project at a time; `tug ls` shows it, `tug watch
//! --stop` and `tug down` end it. A record whose process is gone (or is another process now)
//! counts as no session.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::engine::container::state;

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
    crate::engine::private::create_dir_all(&dir)
        .map_err(|e| Error::Io(dir.display().to_string(), e))?;
    // Its own lock: the caller may hold the project's (`up --watch`).
    let lock_path = dir.join("watch.lock");
    let file = crate::engine::private::open_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Io(lock_path.display().to_string(), e))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Io(lock_path.display().to_string(), e.into()))?;
    if let Some(r) = running(root, project) {
        return Err(Error::Invalid(format!(
            "a watch of project {project} already runs (pid {}); stop it with `tug watch --stop`",
            r.pid
        )));
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
    let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::util::fs::write_atomic(&path, &bytes, 0o600, crate::util::fs::Durability::None)
        .map_err(|e| Error::Io(path.display().to_string(), e))?;
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
        Err(e) => {
            return Err(Error::Invalid(format!(
                "cannot stop the watch (pid {}): {e}",
                r.pid
            )));
        }
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
