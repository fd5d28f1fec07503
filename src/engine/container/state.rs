//! A container's observed state, stored in `state.json` in its directory.
//!
//! The supervisor owns the file while it lives and rewrites it atomically (temp file, fsync,
//! rename) at every transition. Readers never trust it blindly: a recorded pid is alive only
//! if `/proc/<pid>/stat` shows the same start time (pids are reused), and a "running" record
//! whose supervisor and process are both gone is reported as exited. So `ls` and `inspect`
//! are right without the supervisor, and `stop`/`rm` can repair the record when it died.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::private;
use crate::engine::runtime::Timings;

/// Lifecycle status, as Docker names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    #[default]
    Created,
    /// The process runs.
    Running,
    /// The process runs but its cgroup is frozen.
    Paused,
    /// Waiting to be restarted by its policy.
    Restarting,
    /// The process has exited.
    Exited,
    /// Removal failed half-way.
    Dead,
}

impl Status {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// Health status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No healthcheck.
    #[default]
    None,
    /// In the start period, or no check finished yet.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` consecutive checks failed.
    Unhealthy,
}

impl HealthStatus {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::None => "none",
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One healthcheck run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthLog {
    /// RFC 3339 start time.
    pub start: String,
    /// RFC 3339 end time.
    pub end: String,
    /// Exit code (-1: timed out).
    pub exit_code: i32,
    /// The first 4 KiB of its output.
    pub output: String,
}

/// Health of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Status.
    pub status: HealthStatus,
    /// Consecutive failures.
    pub failing_streak: u32,
    /// The last five runs.
    pub log: Vec<HealthLog>,
}

/// The state record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Status.
    pub status: Status,
    /// Host pid of the container's first process.
    pub pid: Option<i32>,
    /// Its start time (clock ticks since boot), to detect pid reuse.
    pub pid_start: Option<u64>,
    /// Host pid of the supervisor.
    pub supervisor_pid: Option<i32>,
    /// Its start time.
    pub supervisor_start: Option<u64>,
    /// RFC 3339 time of the last start.
    pub started_at: Option<String>,
    /// RFC 3339 time of the last exit.
    pub finished_at: Option<String>,
    /// Exit code of the last run.
    pub exit_code: Option<i32>,
    /// The last run was killed by the OOM killer.
    pub oom_killed: bool,
    /// Restarts done by the restart policy.
    pub restart_count: u32,
    /// Health, when the container has a healthcheck.
    pub health: Option<Health>,
    /// Why the last start failed.
    pub error: Option<String>,
    /// Start latency breakdown of the last start.
    pub timings: Option<StartTimings>,
}

/// Where the time of a start went, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTimings {
    /// Building the spec (at create).
    pub spec_us: u64,
    /// Mounting the overlay root filesystem.
    pub overlay_us: u64,
    /// The runtime's own steps.
    pub cgroup_us: u64,
    /// clone().
    pub clone_us: u64,
    /// Mount table and pivot_root in the child.
    pub mount_us: u64,
    /// Process setup until execve.
    pub exec_us: u64,
    /// The supervisor moved the process into cgroup2 by pid (no `CLONE_INTO_CGROUP`).
    #[serde(default)]
    pub cgroup_parent_join: bool,
}

impl StartTimings {
    /// Combines the supervisor's and the runtime's figures.
    #[must_use]
    pub fn new(spec_us: u64, overlay_us: u64, t: Timings) -> Self {
        StartTimings {
            spec_us,
            overlay_us,
            cgroup_us: t.cgroup_us,
            clone_us: t.clone_us,
            mount_us: t.mount_us,
            exec_us: t.exec_us,
            cgroup_parent_join: t.cgroup_parent_join,
        }
    }
}

pub use crate::engine::proc::{alive, start_time, wait_gone};

/// A wait for changes to container directories (their state, exit records, logs) and to
/// the store's directory (containers created or removed), through inotify: a waiter sleeps
/// until a file there is renamed into place, created or removed (and, for log followers,
/// written), instead of looking every few milliseconds. Changes that write nothing (a
/// process dying without its supervisor) are caught by the callers' own bound on each wait.
///
/// Make one only when a first look finds something to wait for: closing an inotify instance
/// that watched a directory blocks for an RCU grace period (10-20 ms here), which a wait
/// that ends at its first look would pay for nothing (20 dependencies of an `up` paid it
/// one after another: +250 ms).
#[derive(Debug)]
pub struct Watch {
    fd: std::os::fd::OwnedFd,
    mask: rustix::fs::inotify::WatchFlags,
}

impl Watch {
    /// Watches `dirs` for new states and records (missing directories are skipped); `None`
    /// when inotify is not available (the per-user limit of instances is reached): callers
    /// then look again after a short sleep.
    #[must_use]
    pub fn states<P: AsRef<Path>>(dirs: &[P]) -> Option<Watch> {
        Self::new(dirs, false)
    }

    /// Like [`Watch::states`], and also wakes when a file is written to (log followers).
    #[must_use]
    pub fn writes<P: AsRef<Path>>(dirs: &[P]) -> Option<Watch> {
        Self::new(dirs, true)
    }

    fn new<P: AsRef<Path>>(dirs: &[P], writes: bool) -> Option<Watch> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        let mut mask = WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::DELETE_SELF
            | WatchFlags::ONLYDIR;
        if writes {
            mask |= WatchFlags::MODIFY;
        }
        let w = Watch { fd, mask };
        for d in dirs {
            w.add(d.as_ref());
        }
        Some(w)
    }

    /// Watches one more directory (nothing when it is missing).
    pub fn add(&self, dir: &Path) {
        let _ = rustix::fs::inotify::add_watch(&self.fd, dir, self.mask);
    }

    /// Sleeps until something changes in a watched directory, a signal arrives, or
    /// `timeout` passes; consumes the pending events.
    pub fn wait(&self, timeout: std::time::Duration) {
        use std::os::fd::AsFd as _;
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            self.fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)), Ok(n) if n > 0) {
            let mut buf = [0u8; 4096];
            while nix::unistd::read(&self.fd, &mut buf).is_ok_and(|n| n > 0) {}
        }
    }
}

/// The current time in RFC 3339 with nanoseconds.
#[must_use]
pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Writes `bytes` to `path` atomically (`util::fs::write_atomic`), with the fsync only when
/// `sync`. Readers never see a torn file either way; without the fsync a power loss may
/// leave the file empty. Used without it for the files of
/// auto-removed (`--rm`) containers, which do not outlive their run: after a crash, such a
/// container without a readable record is garbage that `list` removes.
/// The file is private (`0600`).
///
/// The fsync is of the file only: the record is rewritten at every transition of the
/// container, on the path of every start, and after a power loss the rename that did not
/// reach the disk leaves the previous record, which the next command checks against the
/// processes (none survive a reboot).
pub fn write_atomic_sync(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let durability = if sync {
        crate::util::fs::Durability::File
    } else {
        crate::util::fs::Durability::None
    };
    crate::util::fs::write_atomic(path, bytes, private::FILE_MODE, durability)
}

/// Whether the state record of a container directory exists but cannot be read: what is
/// wrong with it (its supervisor rewrites it at the next transition).
#[must_use]
pub fn damage(dir: &Path) -> Option<String> {
    let path = dir.join("state.json");
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice::<State>(&b).err().map(|e| {
            format!(
                "state file {} is damaged ({e}); its status is unknown: remove the container \
                 with `tug container rm -f` (or `tug rm -f`/`tug down`), or restart it",
                path.display()
            )
        }),
        Err(_) => None,
    }
}

/// Reads the state record of a container directory (default when missing or unreadable).
#[must_use]
pub fn read(dir: &Path) -> State {
    fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes the state record.
pub fn write(dir: &Path, st: &State) -> std::io::Result<()> {
    write_sync(dir, st, true)
}

/// Writes the state record, with the fsync only when `sync` (see [`write_atomic_sync`]).
pub fn write_sync(dir: &Path, st: &State, sync: bool) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?;
    write_atomic_sync(&dir.join("state.json"), &bytes, sync)
}

/// The state as it really is: the record corrected by liveness checks.
#[must_use]
pub fn observe(dir: &Path) -> State {
    let mut st = read(dir);
    let sup_alive = alive(st.supervisor_pid, st.supervisor_start);
    let proc_alive = alive(st.pid, st.pid_start);
    match st.status {
        Status::Running | Status::Paused if !proc_alive && !sup_alive => {
            st.status = Status::Exited;
            if st.exit_code.is_none() {
                st.exit_code = Some(255);
                st.error = Some("the supervisor died before recording the exit".into());
            }
        }
        // Supervisor alive: it is about to record the exit; report it as running.
        Status::Restarting if !sup_alive => {
            st.status = Status::Exited;
        }
        Status::Created if sup_alive => {}
        _ => {}
    }
    st
}

/// The DNS server's liveness check over the container store of a state root: an endpoint
/// key is a container name or id; `<containers>/.names/<key>` gives the id,
/// `<containers>/<id>/state.json` the recorded state, corrected by the pid check of
/// [`observe`] (so a crash or an exit the supervisor did not record yet counts as stopped).
/// Running and paused containers answer (as with Docker). A key that is no container of the
/// store (library users that wire namespaces themselves) counts as running.
#[derive(Debug, Clone)]
pub struct StoreLiveness {
    containers: std::path::PathBuf,
}

impl StoreLiveness {
    /// The check for the containers of state root `root`.
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Self {
            containers: root.join("containers"),
        }
    }
}

impl crate::engine::network::dns::Liveness for StoreLiveness {
    fn running(&self, key: &str) -> bool {
        let plain = |k: &str| !k.is_empty() && !k.contains('/') && !k.starts_with('.');
        if !plain(key) {
            return true;
        }
        let id = fs::read_to_string(self.containers.join(".names").join(key))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| key.to_string());
        if !plain(&id) {
            return true;
        }
        let dir = self.containers.join(&id);
        if !dir.join("container.json").exists() {
            return true;
        }
        matches!(observe(&dir).status, Status::Running | Status::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_state_liveness() {
        let me = std::process::id() as i32;
        let s = start_time(me).unwrap();
        assert!(alive(Some(me), Some(s)));
        assert!(!alive(Some(me), Some(s + 1)));
        assert!(!alive(None, None));
        let tmp = tempfile::tempdir().unwrap();
        let st = State {
            status: Status::Running,
            pid: Some(me),
            pid_start: Some(s + 7),
            supervisor_pid: Some(999_999_999),
            ..Default::default()
        };
        write(tmp.path(), &st).unwrap();
        let o = observe(tmp.path());
        assert_eq!(o.status, Status::Exited);
        assert_eq!(o.exit_code, Some(255));
    }

    #[test]
    fn container_state_damage_is_named_with_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(damage(tmp.path()), None, "a missing state is no damage");
        write(tmp.path(), &State::default()).unwrap();
        assert_eq!(damage(tmp.path()), None);
        std::fs::write(tmp.path().join("state.json"), b"{\"status\": \"runn").unwrap();
        let d = damage(tmp.path()).unwrap();
        assert!(d.contains("state.json") && d.contains("rm -f"), "{d}");
        // A failed write leaves no temp file next to the record.
        let blocked = tmp.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::create_dir(blocked.join("state.json")).unwrap();
        std::fs::write(blocked.join("state.json/x"), b"").unwrap();
        assert!(write(&blocked, &State::default()).is_err());
        let left: Vec<_> = std::fs::read_dir(&blocked)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
