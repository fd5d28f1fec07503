//! The per-container supervisor (like conmon, without a daemon), and the other helpers tug
//! re-executes itself as (`tug __shim …`): `exec`, `cp-out`, `cp-in`.
//!
//! `ContainerStore::start` runs `tug __shim run <root> <id> [--attach]` with a status pipe as
//! fd 3. The shim forks, the parent exits at once and the child starts a new session, so the
//! supervisor outlives the tug command. It is single-threaded and has no async runtime: one
//! `poll(2)` loop over the container's output pipes (or its terminal), a signalfd for SIGCHLD,
//! and timers for healthchecks. It:
//! - enters a private mount namespace and mounts the overlay root filesystem there (gone with
//!   it: no mount can leak into the host);
//! - starts the container with the built-in runtime, or with an external OCI runtime
//!   (`runc create` + `start`, `delete` after the exit) on the same bundle;
//! - writes every output line to the log (with timestamp and stream tag); when attached it
//!   also copies output to the caller's stdout/stderr and the caller's input to the container;
//! - records start, exit code and OOM kills in `state.json`, applies the restart policy with
//!   an exponential backoff (100 ms doubling, reset after 10 s of running), runs
//!   healthchecks and records health;
//! - reports `ok <pid>` or `err <message>` on the status pipe, and `exit <code>` when attached.

use std::ffi::OsString;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::config::{Healthcheck, NetworkMode, RestartPolicy};
use super::logs::{LogWriter, Stream};
use super::state::{self, Health, HealthLog, HealthStatus, StartTimings, State, Status};
use super::{ContainerError, ContainerStore, ExecOptions, Record, Result};
use crate::engine::runtime::{self, cgroups::Cgroup, rootfs};

/// Entry point of `tug __shim …` (args: the full argv). Returns the exit code.
pub fn main(args: &[OsString]) -> std::result::Result<i32, String> {
    let a: Vec<String> = args
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let get = |i: usize| a.get(i).cloned().ok_or("missing shim argument".to_string());
    match a.get(2).map(String::as_str) {
        Some("run") => {
            let root = PathBuf::from(get(3)?);
            let id = get(4)?;
            let flags = a.get(5..).unwrap_or_default();
            let attach = flags.iter().any(|s| s == "--attach");
            let cgroup_pipe = flags.iter().any(|s| s == "--cgroup-pipe");
            Ok(run_main(&root, &id, attach, cgroup_pipe))
        }
        Some("exec") => {
            let root = PathBuf::from(get(3)?);
            let id = get(4)?;
            let opts: ExecOptions = serde_json::from_str(&get(5)?).map_err(|e| e.to_string())?;
            exec_main(&root, &id, &opts).map_err(|e| e.to_string())
        }
        Some("cp-out") => {
            cp_out(&get(3)?, Path::new(&get(4)?)).map_err(|e| e.to_string())?;
            Ok(0)
        }
        Some("cp-in") => {
            cp_in(&get(3)?, Path::new(&get(4)?), Path::new(&get(5)?)).map_err(|e| e.to_string())?;
            Ok(0)
        }
        _ => Err("unknown shim command".to_string()),
    }
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor number; harmless if it is not open.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

struct StatusPipe(Option<fs::File>);

impl StatusPipe {
    fn send(&mut self, line: &str) {
        if let Some(f) = &mut self.0 {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
    fn close(&mut self) {
        self.0 = None;
    }
}

fn run_main(root: &Path, id: &str, attach: bool, cgroup_pipe: bool) -> i32 {
    // Containers get the engine's limits with the open-files soft limit at its hard limit:
    // an external runtime (runc) passes on what it inherits from here.
    runtime::process::raise_nofile();
    set_cloexec(3);
    // SAFETY: fd 3 is the status pipe our starter gave us; we own it from here on.
    let status_file = unsafe { fs::File::from_raw_fd(3) };
    // fd 4 (with --cgroup-pipe): one byte `c` once the starter made the cgroup.
    let cgroup_ready = cgroup_pipe.then(|| {
        set_cloexec(4);
        // SAFETY: fd 4 is the pipe our starter gave us; we own it from here on.
        unsafe { OwnedFd::from_raw_fd(4) }
    });
    // An attached start spawns the shim in a session of its own and waits for the exit: the
    // shim is the supervisor. A detached one detaches here (fork, the parent exits at once).
    let leader = nix::unistd::getsid(None).is_ok_and(|s| s == nix::unistd::getpid());
    if !(attach && leader) {
        // SAFETY: this process is single-threaded (a fresh exec of tug, no runtime started).
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Parent { .. }) => {
                // SAFETY: leave at once, without running destructors that touch shared state.
                unsafe { libc::_exit(0) }
            }
            Ok(nix::unistd::ForkResult::Child) => {}
            Err(e) => {
                let mut s = StatusPipe(Some(status_file));
                s.send(&format!("err fork supervisor: {e}"));
                return 1;
            }
        }
        let _ = nix::unistd::setsid();
    }
    let mut status = StatusPipe(Some(status_file));
    let store = match ContainerStore::open(root) {
        Ok(s) => s,
        Err(e) => {
            status.send(&format!("err {e}"));
            return 1;
        }
    };
    match Supervisor::new(store, id, attach) {
        Ok(mut sup) => {
            sup.cgroup_ready = cgroup_ready;
            sup.run(&mut status)
        }
        Err(e) => {
            status.send(&format!("err {e}"));
            1
        }
    }
}

/// The container's stdio as seen from the supervisor.
struct Io {
    /// Passed to the container (fds 0, 1, 2) and closed here after the start.
    child: [RawFd; 3],
    to_close: Vec<OwnedFd>,
    tty: bool,
    /// Output read ends (stdout, stderr); with a terminal only the master (as stdout).
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// The terminal master, to which attached input is written.
    master: Option<RawFd>,
    /// Held open so a detached `-i` container does not see end of input.
    _stdin_hold: Option<OwnedFd>,
}

fn devnull() -> std::io::Result<OwnedFd> {
    Ok(OwnedFd::from(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?,
    ))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

impl Io {
    fn new(tty: bool, stdin_open: bool, attached: bool) -> std::io::Result<Io> {
        if tty {
            // The terminal itself is allocated inside the container (see `runtime::launch`).
            return Ok(Io {
                child: [-1, -1, -1],
                to_close: Vec::new(),
                tty: true,
                out: None,
                err: None,
                master: None,
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
            master: None,
            _stdin_hold: hold,
        })
    }
}

struct HealthRun {
    pid: Pid,
    out: Option<OwnedFd>,
    started: Instant,
    start_ts: String,
    buf: Vec<u8>,
}

struct Supervisor {
    store: ContainerStore,
    id: String,
    dir: PathBuf,
    rec: Record,
    spec: Spec,
    cgroup: Cgroup,
    log: LogWriter,
    st: State,
    attach: bool,
    /// The starter's "cgroup made" pipe, for the first run only.
    cgroup_ready: Option<OwnedFd>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Supervisor {
    fn new(store: ContainerStore, id: &str, attach: bool) -> Result<Supervisor> {
        let dir = store.container_dir(id);
        let rec = store.record(id)?;
        let spec_path = dir.join("bundle/config.json");
        let bytes = fs::read(&spec_path).map_err(|source| ContainerError::Io {
            path: spec_path.clone(),
            source,
        })?;
        let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt {
            path: spec_path,
            reason: e.to_string(),
        })?;
        let cgroup = store.cgroup(id)?;
        let log_path = dir.join("container.log");
        let log = LogWriter::open(
            &log_path,
            rec.config.log_max_size.unwrap_or(super::logs::DEFAULT_MAX),
        )
        .map_err(|source| ContainerError::Io {
            path: log_path,
            source,
        })?;
        let mut st = state::read(&dir);
        let me = std::process::id() as i32;
        st.supervisor_pid = Some(me);
        st.supervisor_start = state::start_time(me);
        st.error = None;
        Ok(Supervisor {
            id: id.to_string(),
            dir,
            rec,
            spec,
            cgroup,
            log,
            st,
            attach,
            store,
            cgroup_ready: None,
        })
    }

    fn save(&self) {
        let _ = state::write_sync(&self.dir, &self.st, !self.rec.config.auto_remove);
    }

    /// Private mount namespace, overlay mounted at bundle/rootfs.
    fn mount_rootfs(&self) -> std::result::Result<u64, String> {
        let rootfs = self.dir.join("bundle/rootfs");
        let t = Instant::now();
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("unshare mount namespace: {e}"))?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(|e| format!("make / a slave mount: {e}"))?;
        if self.rec.layers.is_empty() {
            return Err("the image has no layers".to_string());
        }
        let upper = self.dir.join("upper");
        let work = self.dir.join("work");
        // An auto-removed container's upper layer dies with it: no syncs (see rootfs).
        rootfs::mount_overlay_opts(
            &self.rec.layers,
            Some((&upper, &work)),
            &rootfs,
            self.rec.config.auto_remove,
        )
        .map_err(|e| e.to_string())?;
        Ok(us(t.elapsed()))
    }

    fn run(&mut self, status: &mut StatusPipe) -> i32 {
        let overlay_us = match self.mount_rootfs() {
            Ok(t) => t,
            Err(e) => {
                self.st.status = Status::Exited;
                self.st.error = Some(e.clone());
                self.st.exit_code = Some(127);
                self.save();
                // The starter may have made the cgroup already.
                let _ = self.cgroup.destroy();
                status.send(&format!("err {e}"));
                return 1;
            }
        };
        let _ = sigprocmask(
            SigmaskHow::SIG_BLOCK,
            Some(&SigSet::from_iter([Signal::SIGCHLD])),
            None,
        );
        let Ok(mut sfd) = SignalFd::with_flags(
            &SigSet::from_iter([Signal::SIGCHLD]),
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        ) else {
            status.send("err signalfd");
            return 1;
        };
        let mut first = true;
        let mut backoff = Duration::from_millis(100);
        let mut attached = self.attach;
        loop {
            let io = match Io::new(self.rec.config.tty, self.rec.config.stdin_open, attached) {
                Ok(io) => io,
                Err(e) => {
                    status.send(&format!("err stdio: {e}"));
                    return 1;
                }
            };
            let started_at = Instant::now();
            let launched = self.launch(&io, overlay_us);
            let Io {
                child: _,
                to_close,
                tty,
                mut out,
                err,
                mut master,
                _stdin_hold,
            } = io;
            drop(to_close);
            let (main_pid, cpid, console) = match launched {
                Ok(p) => p,
                Err(e) => {
                    self.st.status = Status::Exited;
                    self.st.exit_code = Some(127);
                    self.st.error = Some(e.clone());
                    self.st.pid = None;
                    self.st.finished_at = Some(state::now());
                    self.save();
                    let _ = self.cgroup.destroy();
                    if first {
                        status.send(&format!("err {e}"));
                    }
                    break;
                }
            };
            if let Some(c) = console {
                if attached {
                    let mut ws = libc::winsize {
                        ws_row: 0,
                        ws_col: 0,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write a winsize struct.
                    unsafe {
                        if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 {
                            libc::ioctl(c.as_raw_fd(), libc::TIOCSWINSZ, &ws);
                        }
                    }
                    if self.rec.config.stdin_open {
                        master = Some(c.as_raw_fd());
                    }
                }
                out = Some(c);
            }
            if first {
                status.send(&format!("ok {cpid}"));
                if !attached {
                    status.close();
                }
            }
            let code = self.watch(&mut sfd, main_pid, out, err, master, tty, attached);
            let oom = self.cgroup.oom_kills() > 0;
            if let Some(rt) = self.rec.config.runtime.clone() {
                self.delete_external(&rt);
            }
            let _ = self.cgroup.destroy();
            self.st.status = Status::Exited;
            self.st.exit_code = Some(code);
            self.st.oom_killed = oom;
            self.st.pid = None;
            self.st.pid_start = None;
            self.st.finished_at = Some(state::now());
            if let Some(h) = &mut self.st.health {
                h.status = HealthStatus::Unhealthy;
            }
            let restart = self.should_restart(code);
            // An auto-removed container that is not restarted is retired below; its exit
            // state is only written when retiring fails.
            let retire = self.rec.config.auto_remove && !restart;
            if !retire {
                self.save();
            }
            if attached {
                // The caller detaches at the first exit (docker run does the same).
                if !self.rec.config.auto_remove {
                    status.send(&format!("exit {code}"));
                    status.close();
                }
                if let Ok(n) = devnull() {
                    for fd in 0..3 {
                        // SAFETY: replacing our stdio with /dev/null.
                        unsafe { libc::dup2(n.as_raw_fd(), fd) };
                    }
                }
                attached = false;
            }
            first = false;
            if !restart {
                if retire {
                    // Report the exit once the container is gone, then unmount its root
                    // filesystem (from the trash: the unmount waits for an RCU grace period)
                    // and delete its files.
                    let trash = self.store.retire_keeping_mount(&self.id);
                    if matches!(trash, Ok(Some(_))) {
                        // Its anonymous volumes go with it, before the exit is reported (as
                        // `docker run --rm` returns once they are gone).
                        self.store
                            .remove_anonymous_volumes(&self.rec.config.anonymous_volumes);
                    } else {
                        self.save();
                    }
                    status.send(&format!("exit {code}"));
                    status.close();
                    let gone = match &trash {
                        Ok(Some(t)) => t.clone(),
                        _ => self.dir.clone(),
                    };
                    let _ = nix::mount::umount2(
                        &gone.join("bundle/rootfs"),
                        nix::mount::MntFlags::MNT_DETACH,
                    );
                    if let Ok(Some(t)) = trash {
                        let _ = super::purge(&t);
                    }
                }
                break;
            }
            if started_at.elapsed() >= Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            self.st.status = Status::Restarting;
            self.save();
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if self.dir.join("stop-requested").exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
            if self.dir.join("stop-requested").exists() {
                self.st.status = Status::Exited;
                self.save();
                break;
            }
            self.st.restart_count += 1;
        }
        let _ = nix::mount::umount2(
            &self.dir.join("bundle/rootfs"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        0
    }

    fn should_restart(&self, code: i32) -> bool {
        if self.dir.join("stop-requested").exists() || !self.dir.join("container.json").exists() {
            return false;
        }
        match &self.rec.config.restart {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                code != 0 && max_retries.is_none_or(|m| self.st.restart_count < m)
            }
        }
    }

    /// Starts one run; returns (pid to wait for, container pid, terminal master).
    fn launch(
        &mut self,
        io: &Io,
        overlay_us: u64,
    ) -> std::result::Result<(Pid, i32, Option<OwnedFd>), String> {
        if let NetworkMode::Container(other) = &self.rec.config.network {
            let path = self.store.netns_of(other).map_err(|e| e.to_string())?;
            if let Some(linux) = self.spec.linux_mut()
                && let Some(nss) = linux.namespaces_mut()
            {
                for ns in nss.iter_mut() {
                    if ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                        ns.set_path(Some(path.clone()));
                    }
                }
            }
        }
        let stdio = runtime::Stdio {
            stdin: io.child[0],
            stdout: io.child[1],
            stderr: io.child[2],
            tty: io.tty,
        };
        let (main, cpid, timings, console) = match self.rec.config.runtime.clone() {
            None => {
                let init = self.rec.config.init;
                let rootfs = self.dir.join("bundle/rootfs");
                // The first run's cgroup may have been made by the starting command while
                // this process started (see `ContainerStore::start`).
                let ready = std::mem::take(&mut self.cgroup_ready).is_some_and(|f| {
                    let mut b = [0u8; 1];
                    matches!(fs::File::from(f).read(&mut b), Ok(1)) && b[0] == b'c'
                });
                // Synced host files (`develop.watch`) are written before the program starts.
                let rules = crate::engine::sync::read_rules(&self.dir);
                let mut warnings = Vec::new();
                let me = &*self;
                let mut sync = |pid: Pid| {
                    warnings = me.sync_before_start(&rules, pid);
                    Ok(())
                };
                let hook: Option<runtime::BeforeStart<'_>> =
                    (!rules.is_empty()).then_some(&mut sync);
                let s = runtime::launch_with(
                    &self.spec,
                    &rootfs,
                    &stdio,
                    init,
                    &self.cgroup,
                    ready,
                    hook,
                )
                .map_err(|e| e.to_string())?;
                self.log_warnings(&warnings);
                (s.pid, s.pid.as_raw(), s.timings, s.console)
            }
            Some(rt) => {
                let (m, c, t) = self.launch_external(&rt, &stdio)?;
                (m, c, t, None)
            }
        };
        self.st.status = Status::Running;
        self.st.pid = Some(cpid);
        self.st.pid_start = state::start_time(cpid);
        self.st.started_at = Some(state::now());
        self.st.finished_at = None;
        self.st.exit_code = None;
        self.st.oom_killed = false;
        self.st.error = None;
        self.st.timings = Some(StartTimings::new(self.rec.spec_us, overlay_us, timings));
        self.st.health = self.healthcheck().map(|_| Health {
            status: HealthStatus::Starting,
            ..Default::default()
        });
        self.save();
        Ok((main, cpid, console))
    }

    /// Writes the host files of `rules` that differ from what the new container process
    /// `pid` (mounts made, program not started) sees; returns what failed.
    fn sync_before_start(&self, rules: &[crate::engine::sync::Rule], pid: Pid) -> Vec<String> {
        use crate::engine::sync::{Container, Owner};
        let owner = self
            .spec
            .process()
            .as_ref()
            .map(|p| Owner {
                uid: p.user().uid(),
                gid: p.user().gid(),
            })
            .unwrap_or_default();
        let root = match runtime::inroot::Root::open(Path::new(&format!("/proc/{pid}/root"))) {
            Ok(r) => r,
            Err(e) => return vec![format!("open the container's root: {e}")],
        };
        let c = Container::from_root(root, owner, &self.id);
        let mut out = Vec::new();
        for r in rules {
            match r.filter() {
                Ok(f) => out.extend(c.sync_rule(r, &f).errors.iter().map(ToString::to_string)),
                Err(e) => out.push(e.to_string()),
            }
        }
        out
    }

    /// Records what the sync before the start could not do in the container's log.
    fn log_warnings(&mut self, warnings: &[String]) {
        for w in warnings {
            self.log.write(
                super::logs::Stream::Stderr,
                format!("tug: sync before start: {w}\n").as_bytes(),
            );
        }
    }

    fn launch_external(
        &mut self,
        rt: &str,
        stdio: &runtime::Stdio,
    ) -> std::result::Result<(Pid, i32, runtime::Timings), String> {
        let state_root = self.store.root().join("runc");
        let pid_file = self.dir.join("runtime.pid");
        let _ = fs::remove_file(&pid_file);
        let dup = |fd: RawFd| -> std::result::Result<std::process::Stdio, String> {
            // SAFETY: dup of a descriptor we hold; the copy is owned by the Stdio.
            let n = unsafe { libc::dup(fd) };
            if n < 0 {
                return Err(format!("dup: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: n is a fresh descriptor owned by nobody else.
            Ok(std::process::Stdio::from(unsafe {
                OwnedFd::from_raw_fd(n)
            }))
        };
        // `create` + `start` rather than `run`: runc then leaves the container's cgroup in
        // place when the container exits, so its OOM kill count can be read before
        // `delete`. The container's init is orphaned when `create` exits and comes to us as a
        // child subreaper, so its exit status is ours to wait for.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag of this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let t = Instant::now();
        let runc = |verb: &str| {
            let mut c = std::process::Command::new(rt);
            c.arg("--root").arg(&state_root).arg(verb);
            c
        };
        // A leftover of a killed supervisor under the same id would make `create` fail.
        let _ = runc("delete")
            .arg("-f")
            .arg(&self.id)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let created = runc("create")
            .arg("--bundle")
            .arg(self.dir.join("bundle"))
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&self.id)
            .stdin(dup(stdio.stdin)?)
            .stdout(dup(stdio.stdout)?)
            .stderr(dup(stdio.stderr)?)
            .status()
            .map_err(|e| format!("cannot run {rt}: {e}"))?;
        if !created.success() {
            return Err(format!(
                "{rt} create failed ({created}) before the container started (see the container's log)"
            ));
        }
        let cpid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| format!("{rt} create wrote no pid file"))?;
        // Between `create` and `start` the mounts are made and the program has not started:
        // synced host files are written now.
        let rules = crate::engine::sync::read_rules(&self.dir);
        if !rules.is_empty() {
            let warnings = self.sync_before_start(&rules, Pid::from_raw(cpid));
            self.log_warnings(&warnings);
        }
        let started = runc("start")
            .arg(&self.id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {rt}: {e}"))?;
        if !started.success() {
            self.delete_external(rt);
            return Err(format!("{rt} start failed ({started})"));
        }
        let tm = runtime::Timings {
            exec_us: us(t.elapsed()),
            ..Default::default()
        };
        Ok((Pid::from_raw(cpid), cpid, tm))
    }

    /// `runc delete -f` of this container: its runc state and cgroup.
    fn delete_external(&self, rt: &str) {
        let _ = std::process::Command::new(rt)
            .arg("--root")
            .arg(self.store.root().join("runc"))
            .arg("delete")
            .arg("-f")
            .arg(&self.id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn healthcheck(&self) -> Option<Healthcheck> {
        let hc = self.rec.config.healthcheck.clone()?;
        match hc.test.first().map(String::as_str) {
            Some("CMD") | Some("CMD-SHELL") => Some(hc),
            _ => None,
        }
    }

    /// Forks a helper that runs the healthcheck inside the container.
    fn start_check(&self, hc: &Healthcheck, cpid: i32) -> Option<HealthRun> {
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
                // SAFETY: setting O_NONBLOCK on our read end.
                unsafe {
                    let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
                    libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
                }
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

    fn finish_check(&mut self, hc: &Healthcheck, run: HealthRun, code: i32, since_start: Duration) {
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

    fn next_check_delay(hc: &Healthcheck, since_start: Duration) -> Duration {
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

    /// The poll loop of one run; returns the exit code.
    #[allow(clippy::too_many_lines)]
    fn watch(
        &mut self,
        sfd: &mut SignalFd,
        main: Pid,
        mut out: Option<OwnedFd>,
        mut err: Option<OwnedFd>,
        master: Option<RawFd>,
        tty: bool,
        attached: bool,
    ) -> i32 {
        let cpid = self.st.pid.unwrap_or(0);
        let hc = self.healthcheck();
        let run_start = Instant::now();
        let mut next_check = hc
            .as_ref()
            .map(|h| Instant::now() + Self::next_check_delay(h, Duration::ZERO));
        let mut check: Option<HealthRun> = None;
        let mut exit: Option<i32> = None;
        let mut drain_until: Option<Instant> = None;
        let mut fwd_stdin = master.is_some() && attached;
        let mut tee = attached;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            if let Some(code) = exit {
                let drained = out.is_none() && err.is_none();
                if drained || drain_until.is_some_and(|d| Instant::now() >= d) {
                    if let Some(run) = check.take() {
                        let _ = nix::sys::signal::kill(run.pid, Signal::SIGKILL);
                        let _ = waitpid(run.pid, None);
                    }
                    self.log.flush();
                    return code;
                }
            }
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(5);
            let mut kinds: Vec<u8> = Vec::with_capacity(5);
            let mut add = |fd: RawFd, kind: u8| {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                kinds.push(kind);
            };
            add(sfd.as_raw_fd(), 0);
            if let Some(o) = &out {
                add(o.as_raw_fd(), 1);
            }
            if let Some(e) = &err {
                add(e.as_raw_fd(), 2);
            }
            if fwd_stdin {
                add(0, 3);
            }
            if let Some(run) = &check
                && let Some(o) = &run.out
            {
                add(o.as_raw_fd(), 4);
            }
            let now = Instant::now();
            let mut timeout_ms: i32 = -1;
            if let (Some(n), None, None) = (next_check, &check, exit) {
                timeout_ms =
                    i32::try_from(n.saturating_duration_since(now).as_millis()).unwrap_or(i32::MAX);
            }
            if exit.is_some() {
                timeout_ms = 20;
            }
            // SAFETY: fds is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n < 0 {
                continue;
            }
            for (pfd, kind) in fds.iter().zip(kinds.iter()) {
                if pfd.revents == 0 {
                    continue;
                }
                match kind {
                    0 => {
                        while let Ok(Some(_)) = sfd.read_signal() {}
                        loop {
                            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                                Ok(WaitStatus::Exited(p, c)) => {
                                    self.reaped(
                                        p,
                                        c,
                                        main,
                                        &mut exit,
                                        &mut check,
                                        hc.as_ref(),
                                        run_start,
                                    );
                                }
                                Ok(WaitStatus::Signaled(p, s, _)) => {
                                    self.reaped(
                                        p,
                                        128 + s as i32,
                                        main,
                                        &mut exit,
                                        &mut check,
                                        hc.as_ref(),
                                        run_start,
                                    );
                                }
                                Ok(WaitStatus::StillAlive) | Err(_) => break,
                                Ok(_) => {}
                            }
                        }
                        if exit.is_some() && drain_until.is_none() {
                            drain_until = Some(Instant::now() + Duration::from_millis(500));
                            next_check = None;
                        }
                    }
                    1 | 2 => {
                        let fd = if *kind == 1 { &mut out } else { &mut err };
                        let Some(f) = fd.as_ref() else { continue };
                        // SAFETY: reading into our buffer from an fd we own.
                        let r = unsafe {
                            libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                        };
                        if r <= 0 {
                            if r < 0
                                && std::io::Error::last_os_error().kind()
                                    == std::io::ErrorKind::Interrupted
                            {
                                continue;
                            }
                            *fd = None;
                            continue;
                        }
                        let data = &buf[..r as usize];
                        let stream = if *kind == 1 {
                            Stream::Stdout
                        } else {
                            Stream::Stderr
                        };
                        self.log.write(stream, data);
                        if tee {
                            let target = if *kind == 1 || tty { 1 } else { 2 };
                            if write_all_fd(target, data).is_err() {
                                tee = false;
                            }
                        }
                    }
                    3 => {
                        // SAFETY: reading the caller's input into our buffer.
                        let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                        if r <= 0 {
                            fwd_stdin = false;
                            continue;
                        }
                        if let Some(m) = master {
                            let _ = write_all_fd(m, &buf[..r as usize]);
                        }
                    }
                    4 => {
                        if let Some(run) = &mut check
                            && let Some(o) = &run.out
                        {
                            // SAFETY: reading from our non-blocking pipe.
                            let r = unsafe {
                                libc::read(o.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                            };
                            if r > 0 {
                                if run.buf.len() < 4096 {
                                    run.buf.extend_from_slice(&buf[..r as usize]);
                                }
                            } else if r == 0 {
                                run.out = None;
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let (Some(h), Some(n), None, None) = (&hc, next_check, &check, exit)
                && Instant::now() >= n
            {
                check = self.start_check(h, cpid);
                next_check = None;
            }
            if let (Some(h), None, None, None) = (&hc, next_check, &check, exit) {
                next_check = Some(Instant::now() + Self::next_check_delay(h, run_start.elapsed()));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reaped(
        &mut self,
        p: Pid,
        code: i32,
        main: Pid,
        exit: &mut Option<i32>,
        check: &mut Option<HealthRun>,
        hc: Option<&Healthcheck>,
        run_start: Instant,
    ) {
        if p == main {
            *exit = Some(code);
        } else if check.as_ref().is_some_and(|c| c.pid == p)
            && let (Some(mut run), Some(h)) = (check.take(), hc)
        {
            if let Some(o) = &run.out {
                let mut b = [0u8; 4096];
                // SAFETY: non-blocking read of what is left in the pipe.
                let r = unsafe { libc::read(o.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
                if r > 0 && run.buf.len() < 4096 {
                    run.buf.extend_from_slice(&b[..r as usize]);
                }
            }
            self.finish_check(h, run, code, run_start.elapsed());
        }
    }
}

fn write_all_fd(fd: RawFd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writing from a valid buffer to a descriptor we hold.
        let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[r as usize..];
    }
    Ok(())
}

fn exec_main(root: &Path, id: &str, opts: &ExecOptions) -> Result<i32> {
    let store = ContainerStore::open(root)?;
    let dir = store.container_dir(id);
    let rec = store.record(id)?;
    let spec_path = dir.join("bundle/config.json");
    let bytes = fs::read(&spec_path).map_err(|source| ContainerError::Io {
        path: spec_path.clone(),
        source,
    })?;
    let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt {
        path: spec_path,
        reason: e.to_string(),
    })?;
    let st = store.state(id);
    let (Status::Running, Some(pid)) = (st.status, st.pid) else {
        return Err(ContainerError::NotRunning(id.to_string()));
    };
    let target = runtime::Joinable::open(pid, || state::alive(Some(pid), st.pid_start))
        .map_err(|_| ContainerError::NotRunning(id.to_string()))?;
    let mut proc_ = spec
        .process()
        .clone()
        .ok_or_else(|| ContainerError::Invalid("the spec has no process".into()))?;
    proc_.set_args(Some(opts.cmd.clone()));
    let mut env = proc_.env().clone().unwrap_or_default();
    for e in &opts.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if let Some(u) = &opts.user {
        // The container's /etc/passwd and /etc/group, resolved inside its root.
        let root_dir = PathBuf::from(format!("/proc/{pid}/root"));
        let root = runtime::inroot::Root::open(&root_dir).map_err(|e| ContainerError::Io {
            path: root_dir.clone(),
            source: e.into(),
        })?;
        let eu = super::user::resolve_in_root(u, &rec.config.group_add, &root)
            .map_err(ContainerError::Invalid)?;
        let user = oci_spec::runtime::UserBuilder::default()
            .uid(eu.uid)
            .gid(eu.gid)
            .additional_gids(eu.groups)
            .build()
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        proc_.set_user(user);
        env.retain(|x| !x.starts_with("HOME="));
        env.push(format!("HOME={}", eu.home));
    }
    if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    proc_.set_env(Some(env));
    if let Some(w) = &opts.workdir {
        proc_.set_cwd(PathBuf::from(w));
    }
    proc_.set_terminal(Some(opts.tty));
    let cgroup = store.cgroup(id)?;
    let run = |stdio: runtime::Stdio| -> Result<i32> {
        runtime::exec_in(&target, Some(&cgroup), &spec, &proc_, &stdio, opts.timeout).map_err(|e| {
            ContainerError::Start {
                id: id.to_string(),
                reason: e.to_string(),
            }
        })
    };
    if opts.detach {
        // SAFETY: single-threaded helper process.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Parent { .. }) => return Ok(0),
            Ok(nix::unistd::ForkResult::Child) => {
                let _ = nix::unistd::setsid();
                let n = devnull().map_err(|source| ContainerError::Io {
                    path: PathBuf::from("/dev/null"),
                    source,
                })?;
                let fd = n.as_raw_fd();
                let code = run(runtime::Stdio {
                    stdin: fd,
                    stdout: fd,
                    stderr: fd,
                    tty: false,
                })
                .unwrap_or(255);
                // SAFETY: end the detached helper.
                unsafe { libc::_exit(code) }
            }
            Err(e) => {
                return Err(ContainerError::Start {
                    id: id.to_string(),
                    reason: format!("fork: {e}"),
                });
            }
        }
    }
    if !opts.tty {
        return run(runtime::Stdio {
            stdin: 0,
            stdout: 1,
            stderr: 2,
            tty: false,
        });
    }
    // Join the container first, so the terminal comes from its own devpts instance.
    runtime::join_container(&target, Some(&cgroup)).map_err(|e| ContainerError::Start {
        id: id.to_string(),
        reason: e.to_string(),
    })?;
    let (pm, ps) = runtime::open_pty().map_err(|e| ContainerError::Start {
        id: id.to_string(),
        reason: format!("allocate terminal: {e}"),
    })?;
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills ws or fails, leaving the default; TIOCSWINSZ reads it.
    unsafe {
        libc::ioctl(1, libc::TIOCGWINSZ, &mut ws);
        libc::ioctl(pm.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
    struct Pty {
        master: OwnedFd,
        slave: OwnedFd,
    }
    let pty = Pty {
        master: pm,
        slave: ps,
    };
    // SAFETY: single-threaded helper process.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(pty.master);
            let s = pty.slave.as_raw_fd();
            let code = match runtime::spawn_in(
                &spec,
                &proc_,
                &runtime::Stdio {
                    stdin: s,
                    stdout: s,
                    stderr: s,
                    tty: true,
                },
                None,
            )
            .map_err(|e| e.to_string())
            {
                Ok(c) => c,
                Err(e) => {
                    let _ = nix::unistd::write(&pty.slave, format!("{e}\r\n").as_bytes());
                    126
                }
            };
            // SAFETY: end the forked helper.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(pty.slave);
            let m = pty.master.as_raw_fd();
            let mut buf = [0u8; 8192];
            let mut stdin_open = opts.interactive;
            loop {
                let mut fds = vec![libc::pollfd {
                    fd: m,
                    events: libc::POLLIN,
                    revents: 0,
                }];
                if stdin_open {
                    fds.push(libc::pollfd {
                        fd: 0,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
                // SAFETY: valid pollfd array.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
                if n > 0 && fds[0].revents != 0 {
                    // SAFETY: read into our buffer.
                    let r = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
                    if r <= 0 {
                        break;
                    }
                    let _ = write_all_fd(1, &buf[..r as usize]);
                }
                if n > 0 && fds.len() > 1 && fds[1].revents != 0 {
                    // SAFETY: read into our buffer.
                    let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                    if r <= 0 {
                        stdin_open = false;
                    } else {
                        let _ = write_all_fd(m, &buf[..r as usize]);
                    }
                }
                if let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                    waitpid(child, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT))
                {
                    // Drain what is left, then stop.
                    // SAFETY: read into our buffer (non-blocking by poll above).
                    loop {
                        let mut p = [libc::pollfd {
                            fd: m,
                            events: libc::POLLIN,
                            revents: 0,
                        }];
                        // SAFETY: valid pollfd array.
                        if unsafe { libc::poll(p.as_mut_ptr(), 1, 0) } <= 0 {
                            break;
                        }
                        // SAFETY: read into our buffer.
                        let r = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
                        if r <= 0 {
                            break;
                        }
                        let _ = write_all_fd(1, &buf[..r as usize]);
                    }
                    break;
                }
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => return Ok(c),
                    Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                    Err(nix::Error::EINTR) | Ok(_) => {}
                    Err(_) => return Ok(255),
                }
            }
        }
        Err(e) => Err(ContainerError::Start {
            id: id.to_string(),
            reason: format!("fork: {e}"),
        }),
    }
}

/// Joins the mount namespace and the root of the running container whose first process is
/// `target` (`PID:START`, the pid and its recorded start time), for `cp`: from here on every
/// path resolves inside the container (see `runtime::enter`).
fn join_root(target: &str) -> Result<()> {
    let (pid, start) = target.split_once(':').unwrap_or((target, ""));
    let pid: i32 = pid
        .parse()
        .map_err(|_| ContainerError::Invalid(format!("bad process {target:?}")))?;
    let start = start.parse::<u64>().ok();
    let t = runtime::Joinable::open(pid, || state::alive(Some(pid), start))
        .map_err(|_| ContainerError::NotRunning(pid.to_string()))?;
    runtime::enter(&t, nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| ContainerError::Start {
        id: pid.to_string(),
        reason: e.to_string(),
    })
}

fn cp_out(target: &str, src: &Path) -> Result<()> {
    join_root(target)?;
    let name = src
        .file_name()
        .map_or_else(|| PathBuf::from("root"), PathBuf::from);
    let stdout = std::io::stdout().lock();
    let mut b = tar::Builder::new(stdout);
    b.follow_symlinks(false);
    let md = fs::symlink_metadata(src).map_err(|source| ContainerError::Io {
        path: src.to_path_buf(),
        source,
    })?;
    let r = if md.is_dir() {
        b.append_dir_all(&name, src)
    } else {
        b.append_path_with_name(src, &name)
    };
    r.and_then(|()| b.finish())
        .map_err(|source| ContainerError::Io {
            path: src.to_path_buf(),
            source,
        })
}

/// Unpacks the tar on stdin (one top entry, `name`) inside the container: into `dest` when it
/// is a directory there, else as `dest` itself (unpacked next to it, then renamed).
fn cp_in(target: &str, dest: &Path, name: &Path) -> Result<()> {
    join_root(target)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContainerError::Io { path, source }
    };
    let unpack = |dir: &Path| -> Result<()> {
        let mut a = tar::Archive::new(std::io::stdin().lock());
        a.set_preserve_permissions(true);
        a.set_overwrite(true);
        a.unpack(dir).map_err(io(dir))
    };
    if fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
        return unpack(dest);
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    let tmp = tempfile::Builder::new()
        .prefix(".tug-cp-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    unpack(tmp.path())?;
    fs::rename(tmp.path().join(name), dest).map_err(io(dest))
}

/// `cp` in either direction, with Docker's destination rules: into an existing directory
/// the source keeps its name; otherwise the destination path names the copy.
pub(super) fn copy(
    exe: &Path,
    _root: &Path,
    id: &str,
    src: &Path,
    dest: &Path,
    into: bool,
) -> Result<()> {
    use std::process::{Command, Stdio};
    let store_state = |p: &Path| ContainerError::Io {
        path: p.to_path_buf(),
        source: std::io::Error::other("copy failed"),
    };
    let dir = _root.join("containers").join(id);
    let st = state::observe(&dir);
    let pid = st
        .pid
        .ok_or_else(|| ContainerError::NotRunning(id.to_string()))?;
    // The helper joins this process (checked by its start time) and resolves every path
    // inside the container; nothing here looks into the container's files.
    let target = format!(
        "{pid}:{}",
        st.pid_start.map(|s| s.to_string()).unwrap_or_default()
    );
    if into {
        // Host → container: tar the host path under its own name; the helper unpacks it
        // into `dest` (a directory there) or renames it to `dest`.
        let name = src
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| ContainerError::Invalid(format!("bad path {}", src.display())))?;
        let mut child = Command::new(exe)
            .arg("__shim")
            .arg("cp-in")
            .arg(&target)
            .arg(dest)
            .arg(&name)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|source| ContainerError::Io {
                path: exe.to_path_buf(),
                source,
            })?;
        let stdin = child.stdin.take().ok_or_else(|| store_state(src))?;
        let mut b = tar::Builder::new(stdin);
        b.follow_symlinks(false);
        let md = fs::symlink_metadata(src).map_err(|source| ContainerError::Io {
            path: src.to_path_buf(),
            source,
        })?;
        let r = if md.is_dir() {
            b.append_dir_all(&name, src)
        } else {
            b.append_path_with_name(src, &name)
        };
        r.and_then(|()| b.finish())
            .map_err(|source| ContainerError::Io {
                path: src.to_path_buf(),
                source,
            })?;
        drop(b);
        let status = child.wait().map_err(|source| ContainerError::Io {
            path: exe.to_path_buf(),
            source,
        })?;
        if !status.success() {
            return Err(store_state(dest));
        }
        return Ok(());
    }
    // Container → host.
    let child = Command::new(exe)
        .arg("__shim")
        .arg("cp-out")
        .arg(&target)
        .arg(src)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| ContainerError::Io {
            path: exe.to_path_buf(),
            source,
        })?;
    let out = child.stdout.ok_or_else(|| store_state(src))?;
    let name = src
        .file_name()
        .map_or_else(|| PathBuf::from("root"), PathBuf::from);
    if dest.is_dir() {
        let mut a = tar::Archive::new(out);
        a.set_preserve_permissions(true);
        // Set-ID bits of the container's files are not carried onto the host.
        a.set_mask(0o6000);
        a.unpack(dest).map_err(|source| ContainerError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
    } else {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::tempdir_in(parent).map_err(|source| ContainerError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
        let mut a = tar::Archive::new(out);
        a.set_preserve_permissions(true);
        // Set-ID bits of the container's files are not carried onto the host.
        a.set_mask(0o6000);
        a.unpack(tmp.path()).map_err(|source| ContainerError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
        let got = tmp.path().join(&name);
        if !got.exists() && fs::symlink_metadata(&got).is_err() {
            return Err(ContainerError::NotFound(format!(
                "{}:{}",
                id,
                src.display()
            )));
        }
        fs::rename(&got, dest).map_err(|source| ContainerError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}
