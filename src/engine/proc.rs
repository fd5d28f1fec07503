//! Process identity: a pid alone can be reused after its process died, so tug names a process
//! it must find again (a container's supervisor and init, a helper, the creator of a staging
//! directory) by its pid plus its start time (clock ticks since boot, field 22 of
//! `/proc/<pid>/stat`). Such a process is alive when a process with that pid and start time
//! exists and is not a zombie. Used by every part of the engine; it imports none of them.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Identity of a running process: pid and start time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

impl ProcId {
    /// The identity of a live pid.
    #[must_use]
    pub fn of(pid: i32) -> Option<Self> {
        start_time(pid).map(|start| Self { pid, start })
    }

    /// True when this very process still runs.
    #[must_use]
    pub fn alive(&self) -> bool {
        alive(Some(self.pid), Some(self.start))
    }

    /// Sends SIGTERM, waits up to 2 s, then SIGKILL (and waits up to 1 s more). The wait
    /// wakes when the process exits (a pidfd), not at the next tick of a poll.
    pub fn stop(&self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
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

/// Start time of `pid` in clock ticks since boot, if it runs (and is not a zombie).
#[must_use]
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The start time in a `/proc/<pid>/stat` line, `None` for a zombie or a dead process.
fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // Index 0 is field 3 (state); the start time is field 22, index 19.
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

/// A pidfd for `pid` (Linux 5.3+).
///
/// # Errors
/// The kernel has no pidfds (`ENOSYS`) or the pid is gone (`ESRCH`).
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(raw).map_err(|_| nix::Error::EBADF)?;
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: `fd` is a descriptor pidfd_open just returned and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until the process `pid` that started at `start` is gone (exited, even if not reaped
/// yet), at most `timeout`; returns whether it is gone. A pidfd (Linux 5.3+) wakes the
/// waiter the moment the process exits; where there is none, /proc is polled every 10 ms.
#[must_use]
pub fn wait_gone(pid: Option<i32>, start: Option<u64>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let Some(p) = pid.filter(|p| *p > 0) else {
        return true;
    };
    let pidfd = pidfd_open(p).ok();
    // Checked after opening the pidfd, so a pid reused in between is not waited on.
    if !alive(pid, start) {
        return true;
    }
    let Some(pidfd) = pidfd else {
        while alive(pid, start) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        return true;
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
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
                if Instant::now() >= deadline {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_reads_start_time_after_the_last_paren() {
        let line = "42 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 rest";
        assert_eq!(parse_start_time(line), Some(987_654));
        let zombie = "42 (x) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 5 rest";
        assert_eq!(parse_start_time(zombie), None);
    }

    #[test]
    fn proc_knows_this_process_and_not_a_wrong_start() {
        let me = i32::try_from(std::process::id()).unwrap();
        let id = ProcId::of(me).unwrap();
        assert!(id.alive());
        assert!(
            !ProcId {
                pid: me,
                start: id.start + 1
            }
            .alive()
        );
        assert!(wait_gone(None, None, Duration::ZERO));
    }
}
