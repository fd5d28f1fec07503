//! Helper processes (DNS server, port proxy): spawning them detached and recognising them.
//!
//! A helper is tug itself re-executed with a hidden verb. The parent binds the sockets (so a
//! taken port or address fails the command at once with a clear error) and hands them down:
//! in the child, between `fork` and `exec`, the descriptors lose `FD_CLOEXEC` so they survive
//! the `exec`, and their numbers travel as arguments. The child starts its own session
//! (`setsid`), so it outlives the command and ignores the terminal's signals.
//!
//! A helper is recorded as its [`ProcId`] (pid and start time: a pid alone can be reused).

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Error, Result};

pub use crate::engine::proc::ProcId;

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
