//! The supervisor's I/O loop: one `poll(2)` over the SIGCHLD signalfd, the container's output
//! (pipes or terminal master), the caller's input when attached and a running healthcheck's
//! output; output goes to the log (and to the caller when attached).

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Supervisor;
use super::health::HealthRun;
use crate::engine::container::config::Healthcheck;
use crate::engine::container::logs::Stream;
/// The container's stdio as seen from the supervisor.
pub(super) struct Io {
    /// Passed to the container (fds 0, 1, 2) and closed here after the start.
    pub(super) child: [RawFd; 3],
    pub(super) to_close: Vec<OwnedFd>,
    pub(super) tty: bool,
    /// Output read ends (stdout, stderr); with a terminal only the master (as stdout).
    pub(super) out: Option<OwnedFd>,
    pub(super) err: Option<OwnedFd>,
    /// Held open so a detached `-i` container does not see end of input.
    pub(super) _stdin_hold: Option<OwnedFd>,
}

pub(super) fn devnull() -> std::io::Result<OwnedFd> {
    Ok(OwnedFd::from(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?,
    ))
}

pub(super) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

impl Io {
    pub(super) fn new(tty: bool, stdin_open: bool, attached: bool) -> std::io::Result<Io> {
        if tty {
            // The terminal itself is allocated inside the container (see `runtime::launch`).
            return Ok(Io {
                child: [-1, -1, -1],
                to_close: Vec::new(),
                tty: true,
                out: None,
                err: None,
                _stdin_hold: None,
            });
        }
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let mut to_close = Vec::new();
        let mut hold = None;
        let stdin = if attached && stdin_open {
            0
        } else if stdin_open {
            let (r, w) = pipe()?;
            hold = Some(w);
            let fd = r.as_raw_fd();
            to_close.push(r);
            fd
        } else {
            let n = devnull()?;
            let fd = n.as_raw_fd();
            to_close.push(n);
            fd
        };
        let child = [stdin, out_w.as_raw_fd(), err_w.as_raw_fd()];
        to_close.push(out_w);
        to_close.push(err_w);
        Ok(Io {
            child,
            to_close,
            tty: false,
            out: Some(out_r),
            err: Some(err_r),
            _stdin_hold: hold,
        })
    }
}

/// What a descriptor in the I/O loop's poll set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The SIGCHLD signalfd: a child (the container, a healthcheck) changed state.
    Signals,
    /// The container's stdout, or its terminal.
    Stdout,
    /// The container's stderr (none with a terminal).
    Stderr,
    /// The attached caller's input, for the container's terminal.
    CallerInput,
    /// The output of the running healthcheck.
    HealthOutput,
}

/// The container's output and the attached caller of one run.
pub(super) struct RunIo {
    /// The container's stdout (or terminal master) and stderr; `None` once at end.
    pub(super) out: Option<OwnedFd>,
    pub(super) err: Option<OwnedFd>,
    /// The caller's input goes to the terminal (`out`): attached with `-i -t`.
    pub(super) forward_input: bool,
    /// The container has a terminal: all of its output goes to the caller's stdout.
    pub(super) tty: bool,
    /// Output is copied to the caller (attached), until a write to it fails.
    pub(super) tee: bool,
}

/// The exit of the container's process and the healthcheck schedule of one run.
struct RunState {
    main: Pid,
    cpid: i32,
    hc: Option<Healthcheck>,
    run_start: Instant,
    next_check: Option<Instant>,
    check: Option<HealthRun>,
    exit: Option<i32>,
    drain_until: Option<Instant>,
}

/// Reads what `fd` has into `buf`: `Some(n)` bytes, `None` at end of file or on an error
/// (an interrupted read is tried again).
fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Option<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

impl Supervisor {
    /// The poll loop of one run; returns the exit code.
    pub(super) fn watch(&mut self, sfd: &mut SignalFd, main: Pid, mut io: RunIo) -> i32 {
        let hc = self.healthcheck();
        let mut run = RunState {
            main,
            cpid: self.st.pid.unwrap_or(0),
            next_check: hc
                .as_ref()
                .map(|h| Instant::now() + Self::next_check_delay(h, Duration::ZERO)),
            hc,
            run_start: Instant::now(),
            check: None,
            exit: None,
            drain_until: None,
        };
        let mut buf = vec![0u8; 16 << 10];
        loop {
            if let Some(code) = run.exit {
                let drained = io.out.is_none() && io.err.is_none();
                if drained || run.drain_until.is_some_and(|d| Instant::now() >= d) {
                    if let Some(check) = run.check.take() {
                        let _ = nix::sys::signal::kill(check.pid, Signal::SIGKILL);
                        let _ = waitpid(check.pid, None);
                    }
                    self.log.flush();
                    return code;
                }
            }
            for source in Self::ready(sfd, &io, &run) {
                match source {
                    Source::Signals => self.reap_all(sfd, &mut run),
                    Source::Stdout | Source::Stderr => self.copy_output(source, &mut io, &mut buf),
                    Source::CallerInput => {
                        let stdin = std::io::stdin();
                        match read_some(stdin.as_fd(), &mut buf) {
                            Some(n) => {
                                if let Some(t) = &io.out {
                                    let _ = write_all_fd(t.as_fd(), &buf[..n]);
                                }
                            }
                            None => io.forward_input = false,
                        }
                    }
                    Source::HealthOutput => {
                        if let Some(check) = &mut run.check {
                            check.collect(&mut buf);
                        }
                    }
                }
            }
            self.schedule_check(&mut run);
        }
    }

    /// Waits until a source is ready (or a healthcheck is due, or the drain after the exit
    /// needs another look) and returns the ready ones.
    fn ready(sfd: &SignalFd, io: &RunIo, run: &RunState) -> Vec<Source> {
        let stdin = std::io::stdin();
        let mut sources = vec![(sfd.as_fd(), Source::Signals)];
        if let Some(o) = &io.out {
            sources.push((o.as_fd(), Source::Stdout));
        }
        if let Some(e) = &io.err {
            sources.push((e.as_fd(), Source::Stderr));
        }
        if io.forward_input {
            sources.push((stdin.as_fd(), Source::CallerInput));
        }
        if let Some(check) = &run.check
            && let Some(o) = &check.out
        {
            sources.push((o.as_fd(), Source::HealthOutput));
        }
        let mut fds: Vec<PollFd<'_>> = sources
            .iter()
            .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        let timeout = if run.exit.is_some() {
            PollTimeout::from(20u16)
        } else if let (Some(n), None) = (run.next_check, &run.check) {
            PollTimeout::try_from(n.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::MAX)
        } else {
            PollTimeout::NONE
        };
        if nix::poll::poll(&mut fds, timeout).is_err() {
            return Vec::new();
        }
        fds.iter()
            .zip(sources.iter())
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, (_, s))| *s)
            .collect()
    }

    /// Reaps every child that exited: the container's process ends the run (after its output
    /// is drained), a healthcheck's is recorded.
    fn reap_all(&mut self, sfd: &mut SignalFd, run: &mut RunState) {
        while let Ok(Some(_)) = sfd.read_signal() {}
        loop {
            let (p, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) => (p, c),
                Ok(WaitStatus::Signaled(p, s, _)) => (p, 128 + s as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            if p == run.main {
                run.exit = Some(code);
            } else if run.check.as_ref().is_some_and(|c| c.pid == p)
                && let (Some(mut check), Some(h)) = (run.check.take(), run.hc.clone())
            {
                let mut b = [0u8; 4096];
                check.collect(&mut b);
                self.finish_check(&h, check, code, run.run_start.elapsed());
            }
        }
        if run.exit.is_some() && run.drain_until.is_none() {
            run.drain_until = Some(Instant::now() + Duration::from_millis(500));
            run.next_check = None;
        }
    }

    /// Copies what the container wrote on `source` to the log (and to the caller).
    fn copy_output(&mut self, source: Source, io: &mut RunIo, buf: &mut [u8]) {
        let slot = if source == Source::Stdout {
            &mut io.out
        } else {
            &mut io.err
        };
        let Some(f) = slot.as_ref() else { return };
        let Some(n) = read_some(f.as_fd(), buf) else {
            *slot = None;
            return;
        };
        let data = &buf[..n];
        let stream = if source == Source::Stdout {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        self.log.write(stream, data);
        if io.tee {
            let written = if source == Source::Stdout || io.tty {
                write_all_fd(std::io::stdout().as_fd(), data)
            } else {
                write_all_fd(std::io::stderr().as_fd(), data)
            };
            if written.is_err() {
                io.tee = false;
            }
        }
    }

    /// Starts the healthcheck when it is due, and plans the next one after it ended.
    fn schedule_check(&mut self, run: &mut RunState) {
        if let (Some(h), Some(n), None, None) = (&run.hc, run.next_check, &run.check, run.exit)
            && Instant::now() >= n
        {
            run.check = self.start_check(h, run.cpid);
            run.next_check = None;
        }
        if let (Some(h), None, None, None) = (&run.hc, run.next_check, &run.check, run.exit) {
            run.next_check =
                Some(Instant::now() + Self::next_check_delay(h, run.run_start.elapsed()));
        }
    }
}

/// Writes all of `data` to `fd` (an interrupted write is tried again).
pub(super) fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Gives a terminal the window size of the caller's (our stdout), or `fallback` (rows,
/// columns) where our stdout is no terminal.
pub(super) fn copy_window_size(console: &OwnedFd, fallback: Option<(u16, u16)>) {
    use rustix::termios::{Winsize, tcgetwinsize, tcsetwinsize};
    let ws = match (tcgetwinsize(std::io::stdout()), fallback) {
        (Ok(ws), _) => ws,
        (Err(_), Some((rows, cols))) => Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
        (Err(_), None) => return,
    };
    let _ = tcsetwinsize(console, ws);
}
