//! Helper processes (DNS server, port proxy): spawning them detached and recognising them.
//!
//! A helper is tug itself re-executed with a hidden verb. The parent binds the sockets (so a
//! taken port or address fails the command at once with a clear error) and hands them down:
//! in the child, between `fork` and `exec`, the descriptors lose `FD_CLOEXEC` so they survive
//! the `exec`, and their numbers travel as arguments. The child starts its own session
//! (`setsid`), so it outlives the command and ignores the terminal's signals.
//!
//! A pid alone can be reused after the process died, so a helper is recorded as (pid, start
//! time in clock ticks since boot, field 22 of `/proc/<pid>/stat`); it is alive when a process
//! with that pid and start time exists and is not a zombie.

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// Identity of a running helper.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

/// Reads (start time, state) of a pid.
fn stat_of(pid: i32) -> Option<(u64, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' field index 0 is field 3 (state); start time is field 22 → index 19.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

impl ProcId {
    /// The identity of a live pid.
    pub fn of(pid: i32) -> Option<Self> {
        stat_of(pid).map(|(start, _)| Self { pid, start })
    }

    /// True when this very process still runs.
    pub fn alive(&self) -> bool {
        matches!(stat_of(self.pid), Some((start, st)) if start == self.start && st != 'Z' && st != 'X')
    }

    /// Sends SIGTERM, waits up to 2 s, then SIGKILL (and waits up to 1 s more). The wait
    /// wakes when the process exits (a pidfd), not at the next tick of a poll.
    pub fn stop(&self) {
        use crate::engine::container::state::wait_gone;
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        use std::time::Duration;
        if !self.alive() {
            return;
        }
        let (pid, start) = (Some(self.pid), Some(self.start));
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        if wait_gone(pid, start, Duration::from_secs(2)) {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = wait_gone(pid, start, Duration::from_secs(1));
    }
}

/// Starts `exe args…` detached, keeping `fds` open in the child, stderr appended to `log`.
pub fn spawn(exe: &Path, args: &[String], fds: &[RawFd], log: &Path) -> Result<ProcId> {
    let logf = crate::engine::private::open_options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::Io(format!("open {}", log.display()), e))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(logf));
    let keep: Vec<RawFd> = fds.to_vec();
    // SAFETY: the closure runs in the forked child before exec and only calls setsid and
    // fcntl, which are async-signal-safe; it allocates nothing (`keep` was built before fork).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in &keep {
                let flags = libc::fcntl(*fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(*fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Io(format!("start helper {}", exe.display()), e))?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let id = ProcId::of(pid).ok_or_else(|| {
        Error::Helper(format!(
            "helper {} exited at once (see {})",
            exe.display(),
            log.display()
        ))
    })?;
    // Reap it when it ends, in case this process lives longer than the helper.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(id)
}
