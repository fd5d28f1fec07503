//! Healthchecks: a forked helper runs the check inside the container (`runtime::exec_in`),
//! the I/O loop collects its output, the result goes to `state.json` as Docker records it.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::Supervisor;
use super::io::{devnull, pipe};
use crate::engine::container::config::Healthcheck;
use crate::engine::container::state::{self, Health, HealthLog, HealthStatus};
use crate::engine::runtime::{self};
pub(super) struct HealthRun {
    pub(super) pid: Pid,
    pub(super) out: Option<OwnedFd>,
    pub(super) started: Instant,
    pub(super) start_ts: String,
    pub(super) buf: Vec<u8>,
}

impl HealthRun {
    /// Reads what the check wrote so far (the pipe is non-blocking); at most 4 KiB are kept.
    pub(super) fn collect(&mut self, buf: &mut [u8]) {
        let Some(o) = &self.out else { return };
        match nix::unistd::read(o, buf) {
            Ok(0) => self.out = None,
            Ok(n) => {
                if self.buf.len() < 4096 {
                    self.buf.extend_from_slice(&buf[..n]);
                }
            }
            Err(_) => {}
        }
    }
}

/// Sets `O_NONBLOCK` on a descriptor of ours.
fn set_nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(fl) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_retain(fl) | OFlag::O_NONBLOCK),
        );
    }
}

impl Supervisor {
    pub(super) fn healthcheck(&self) -> Option<Healthcheck> {
        let hc = self.rec.config.healthcheck.clone()?;
        match hc.test.first().map(String::as_str) {
            Some("CMD") | Some("CMD-SHELL") => Some(hc),
            _ => None,
        }
    }

    /// Forks a helper that runs the healthcheck inside the container.
    pub(super) fn start_check(&self, hc: &Healthcheck, cpid: i32) -> Option<HealthRun> {
        let cmd: Vec<String> = match hc.test.first().map(String::as_str) {
            Some("CMD") => hc.test[1..].to_vec(),
            Some("CMD-SHELL") => vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                hc.test[1..].join(" "),
            ],
            _ => return None,
        };
        let (r, w) = pipe().ok()?;
        let mut proc_ = self.spec.process().clone()?;
        proc_.set_args(Some(cmd));
        proc_.set_terminal(Some(false));
        let timeout = hc.timeout.unwrap_or(Duration::from_secs(30));
        // SAFETY: the supervisor is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(r);
                let null = devnull().map(IntoRawFd::into_raw_fd).unwrap_or(-1);
                let wfd = w.as_raw_fd();
                let stdio = runtime::Stdio {
                    stdin: null,
                    stdout: wfd,
                    stderr: wfd,
                    tty: false,
                };
                // The container's first process is our child: its pid stays ours until we
                // reap it, so it cannot have been reused.
                let code = match runtime::Joinable::open(cpid, || true).and_then(|t| {
                    runtime::exec_in(
                        &t,
                        Some(&self.cgroup),
                        &self.spec,
                        &proc_,
                        &stdio,
                        Some(timeout),
                    )
                }) {
                    Ok(c) => c,
                    Err(runtime::RuntimeError::Timeout) => {
                        let _ = nix::unistd::write(&w, b"health check exceeded timeout\n");
                        255
                    }
                    Err(e) => {
                        let _ = nix::unistd::write(&w, format!("{e}\n").as_bytes());
                        255
                    }
                };
                // SAFETY: leave the helper without running the supervisor's destructors.
                unsafe { libc::_exit(code) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(w);
                set_nonblocking(&r);
                Some(HealthRun {
                    pid: child,
                    out: Some(r),
                    started: Instant::now(),
                    start_ts: state::now(),
                    buf: Vec::new(),
                })
            }
            Err(_) => None,
        }
    }

    pub(super) fn finish_check(
        &mut self,
        hc: &Healthcheck,
        run: HealthRun,
        code: i32,
        since_start: Duration,
    ) {
        let timeout = hc.timeout.unwrap_or(Duration::from_secs(30));
        let timed_out = run.started.elapsed() >= timeout && code == 255;
        let exit_code = if timed_out { -1 } else { code };
        let mut output = String::from_utf8_lossy(&run.buf).into_owned();
        output.truncate(4096);
        let in_start = since_start < hc.start_period.unwrap_or(Duration::ZERO);
        let retries = hc.retries.unwrap_or(3).max(1);
        let h = self.st.health.get_or_insert_with(Health::default);
        if exit_code == 0 {
            h.failing_streak = 0;
            h.status = HealthStatus::Healthy;
        } else if !in_start {
            h.failing_streak += 1;
            if h.failing_streak >= retries {
                h.status = HealthStatus::Unhealthy;
            }
        }
        h.log.push(HealthLog {
            start: run.start_ts,
            end: state::now(),
            exit_code,
            output,
        });
        if h.log.len() > 5 {
            h.log.remove(0);
        }
        self.save();
    }

    pub(super) fn next_check_delay(hc: &Healthcheck, since_start: Duration) -> Duration {
        let in_start = since_start < hc.start_period.unwrap_or(Duration::ZERO);
        match (in_start, hc.start_interval) {
            (true, Some(si)) => si,
            (true, None) => hc
                .interval
                .unwrap_or(Duration::from_secs(30))
                .min(Duration::from_secs(5)),
            _ => hc.interval.unwrap_or(Duration::from_secs(30)),
        }
        .max(Duration::from_millis(10))
    }
}
