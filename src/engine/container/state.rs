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

/// Start time of `pid` in clock ticks since boot, if it runs (and is not a zombie).
#[must_use]
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// True when `pid` runs and started at `start`.
#[must_use]
pub fn alive(pid: Option<i32>, start: Option<u64>) -> bool {
    match (pid, start) {
        (Some(p), Some(s)) if p > 0 => start_time(p) == Some(s),
        (Some(p), None) if p > 0 => start_time(p).is_some(),
        _ => false,
    }
}

/// Waits until the process `pid` that started at `start` is gone (exited, even if not reaped
/// yet), at most `timeout`; returns whether it is gone. A pidfd (Linux 5.3+) wakes the
/// waiter the moment the process exits; where there is none, /proc is polled every 10 ms.
#[must_use]
pub fn wait_gone(pid: Option<i32>, start: Option<u64>, timeout: std::time::Duration) -> bool {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    let deadline = std::time::Instant::now() + timeout;
    let Some(p) = pid.filter(|p| *p > 0) else {
        return true;
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; the
    // descriptor is owned by the OwnedFd from here on.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
    let pidfd = i32::try_from(raw).ok().filter(|fd| *fd >= 0).map(|fd| {
        // SAFETY: `fd` is a descriptor pidfd_open just returned and nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    // Checked after opening the pidfd, so a pid reused in between is not waited on.
    if !alive(pid, start) {
        return true;
    }
    let Some(pidfd) = pidfd else {
        while alive(pid, start) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        return true;
    };
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => {}
            Ok(_) | Err(_) => {
                if !alive(pid, start) {
                    return true;
                }
                if std::time::Instant::now() >= deadline {
                    return false;
                }
            }
        }
    }
}

/// A wait for changes to container directories (their state, exit records, logs) and to
/// the store's directory (containers created or removed), through inotify: a waiter sleeps
/// until a file there is renamed into place, created or removed (and, for log followers,
/// written), instead of looking every few milliseconds. Changes that write nothing (a
/// process dying without its supervisor) are caught by the callers' own bound on each wait.
#[derive(Debug)]
pub struct Watch {
    fd: std::os::fd::OwnedFd,
    mask: u32,
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
        use std::os::fd::FromRawFd as _;
        // SAFETY: inotify_init1 takes flags only; the result is checked and owned below.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a descriptor inotify_init1 just returned and nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let mut mask = libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_DELETE_SELF
            | libc::IN_ONLYDIR;
        if writes {
            mask |= libc::IN_MODIFY;
        }
        let w = Watch { fd, mask };
        for d in dirs {
            w.add(d.as_ref());
        }
        Some(w)
    }

    /// Watches one more directory (nothing when it is missing).
    pub fn add(&self, dir: &Path) {
        use std::os::unix::ffi::OsStrExt as _;
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
        unsafe {
            libc::inotify_add_watch(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                c.as_ptr(),
                self.mask,
            );
        }
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

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_sync(path, bytes, true)
}

/// [`write_atomic`], with the fsync only when `sync`. Readers never see a torn file either
/// way; without the fsync a power loss may leave the file empty. Used for the files of
/// auto-removed (`--rm`) containers, which do not outlive their run: after a crash, such a
/// container without a readable record is garbage that `list` removes.
/// The file is private (`0600`).
pub fn write_atomic_sync(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    private::write_atomic(path, bytes, private::FILE_MODE, sync)
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
