//! The tiny init for `init: true`: PID 1 of the container is a copy of tug that starts the
//! program as its child, forwards every signal it receives to it, reaps every zombie (orphans
//! in a pid namespace are re-parented to PID 1), and exits with the program's status.
//!
//! PID 1 of a namespace ignores signals it has no handler for, even from outside; a blocked
//! signal is queued instead, so init blocks all signals and reads them from a signalfd.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Blocks every signal; call before forking the program so none is lost in between.
pub fn block_all() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None);
}

/// Runs the init loop for `child` and returns the exit code to exit with.
#[must_use]
pub fn run(child: Pid) -> i32 {
    let Ok(sfd) = SignalFd::with_flags(&SigSet::all(), SfdFlags::SFD_CLOEXEC) else {
        return 1;
    };
    loop {
        let Ok(Some(info)) = sfd.read_signal() else {
            continue;
        };
        let signo = info.ssi_signo as i32;
        if signo == libc::SIGCHLD {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, code)) if p == child => return code,
                    Ok(WaitStatus::Signaled(p, sig, _)) if p == child => return 128 + sig as i32,
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        } else if let Ok(sig) = Signal::try_from(signo) {
            let _ = kill(child, sig);
        }
    }
}
