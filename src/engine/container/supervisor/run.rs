//! One run of a container and the restart loop around it: the overlay, the launch (built-in
//! runtime or `runc create` + `start`), the exit record, the restart policy.

use std::fs;
use std::io::Read as _;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use super::io::{Io, RunIo, copy_window_size, devnull};
use super::{ShimError, StatusPipe, Supervisor, set_cloexec, us};
use crate::engine::container::ContainerStore;
use crate::engine::container::config::{NetworkMode, RestartPolicy};
use crate::engine::container::state::{self, Health, HealthStatus, StartTimings, Status};
use crate::engine::runtime::{self, rootfs};
pub(super) fn run_main(root: &Path, id: &str, attach: bool, cgroup_pipe: bool) -> i32 {
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

impl Supervisor {
    /// Private mount namespace, overlay mounted at bundle/rootfs.
    pub(super) fn mount_rootfs(&self) -> std::result::Result<u64, ShimError> {
        let rootfs = self.dir.join("bundle/rootfs");
        let t = Instant::now();
        rootfs::private_mount_namespace(&runtime::sys::Linux)?;
        if self.rec.layers.is_empty() {
            return Err(ShimError::NoLayers);
        }
        let upper = self.dir.join("upper");
        let work = self.dir.join("work");
        // An auto-removed container's upper layer dies with it: no syncs (see rootfs).
        rootfs::mount_overlay_opts(
            &self.rec.layers,
            Some((&upper, &work)),
            &rootfs,
            self.rec.config.auto_remove,
        )?;
        Ok(us(t.elapsed()))
    }

    /// Runs the container until it exits for good: launch, I/O loop, exit record, restart
    /// policy. Returns the shim's exit code.
    pub(super) fn run(&mut self, status: &mut StatusPipe) -> i32 {
        let overlay_us = match self.mount_rootfs() {
            Ok(t) => t,
            Err(e) => {
                self.st.status = Status::Exited;
                self.st.error = Some(e.to_string());
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
                out,
                err,
                _stdin_hold,
            } = io;
            drop(to_close);
            let (main_pid, cpid, console) = match launched {
                Ok(p) => p,
                Err(e) => {
                    self.record_failed_launch(&e);
                    if first {
                        status.send(&format!("err {e}"));
                    }
                    break;
                }
            };
            let mut run_io = RunIo {
                out,
                err,
                forward_input: false,
                tty,
                tee: attached,
            };
            if let Some(c) = console {
                if attached {
                    copy_window_size(&c, None);
                    run_io.forward_input = self.rec.config.stdin_open;
                }
                run_io.out = Some(c);
            }
            if first {
                status.send(&format!("ok {cpid}"));
                if !attached {
                    status.close();
                }
            }
            let code = self.watch(&mut sfd, main_pid, run_io);
            let restart = self.record_exit(code);
            // An auto-removed container that is not restarted is retired below; its exit
            // state is only written when retiring fails.
            let retire = self.rec.config.auto_remove && !restart;
            if !retire {
                self.save();
            }
            if attached {
                self.detach_caller(status, code);
                attached = false;
            }
            first = false;
            if !restart {
                if retire {
                    self.retire(status, code);
                }
                break;
            }
            if started_at.elapsed() >= Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            if !self.wait_to_restart(&mut backoff) {
                break;
            }
        }
        let _ = nix::mount::umount2(
            &self.dir.join("bundle/rootfs"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        0
    }

    /// Records a launch that failed (exit code 127, the reason in `error`).
    fn record_failed_launch(&mut self, e: &ShimError) {
        self.st.status = Status::Exited;
        self.st.exit_code = Some(127);
        self.st.error = Some(e.to_string());
        self.st.pid = None;
        self.st.finished_at = Some(state::now());
        self.save();
        let _ = self.cgroup.destroy();
    }

    /// Records the end of a run (exit code, OOM kills), removes its cgroup and says whether
    /// the restart policy starts it again.
    fn record_exit(&mut self, code: i32) -> bool {
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
        self.should_restart(code)
    }

    /// The attached caller detaches at the first exit (docker run does the same): it gets
    /// the exit code (unless the container is auto-removed, which reports once it is gone)
    /// and our stdio becomes /dev/null.
    fn detach_caller(&self, status: &mut StatusPipe, code: i32) {
        if !self.rec.config.auto_remove {
            status.send(&format!("exit {code}"));
            status.close();
        }
        if let Ok(n) = devnull() {
            let _ = nix::unistd::dup2_stdin(&n);
            let _ = nix::unistd::dup2_stdout(&n);
            let _ = nix::unistd::dup2_stderr(&n);
        }
    }

    /// Removes an auto-removed container: reports the exit once it is gone (with its
    /// anonymous volumes, as `docker run --rm` returns once they are gone), then unmounts
    /// its root filesystem from the trash (the unmount waits for an RCU grace period) and
    /// deletes its files.
    fn retire(&self, status: &mut StatusPipe, code: i32) {
        let trash = self.store.retire_keeping_mount(&self.id);
        if matches!(trash, Ok(Some(_))) {
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
            let _ = crate::engine::container::purge(&t);
        }
    }

    /// Waits out the restart back-off (doubling, at most a minute), watching for a stop.
    /// Returns false when the container was stopped meanwhile.
    fn wait_to_restart(&mut self, backoff: &mut Duration) -> bool {
        self.st.status = Status::Restarting;
        self.save();
        let until = Instant::now() + *backoff;
        while Instant::now() < until {
            if self.dir.join("stop-requested").exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(60));
        if self.dir.join("stop-requested").exists() {
            self.st.status = Status::Exited;
            self.save();
            return false;
        }
        self.st.restart_count += 1;
        true
    }

    pub(super) fn should_restart(&self, code: i32) -> bool {
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
    pub(super) fn launch(
        &mut self,
        io: &Io,
        overlay_us: u64,
    ) -> std::result::Result<(Pid, i32, Option<OwnedFd>), ShimError> {
        if let NetworkMode::Container(other) = &self.rec.config.network {
            let path = self.store.netns_of(other)?;
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
                let mut sync = |pid: Pid| warnings = me.sync_before_start(&rules, pid);
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
                )?;
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
    /// `pid` (mounts made, program not started) sees, and removes those the host deleted
    /// since the container was last synced (`engine::sync::sync_at_start`); returns what
    /// failed.
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
        crate::engine::sync::sync_at_start(&c, &self.dir, rules)
    }

    /// Records what the sync before the start could not do in the container's log.
    fn log_warnings(&mut self, warnings: &[String]) {
        for w in warnings {
            self.log.write(
                crate::engine::container::logs::Stream::Stderr,
                format!("tug: sync before start: {w}\n").as_bytes(),
            );
        }
    }

    pub(super) fn launch_external(
        &mut self,
        rt: &str,
        stdio: &runtime::Stdio,
    ) -> std::result::Result<(Pid, i32, runtime::Timings), ShimError> {
        let state_root = self.store.root().join("runc");
        let pid_file = self.dir.join("runtime.pid");
        let _ = fs::remove_file(&pid_file);
        let dup = |fd: RawFd| -> std::result::Result<std::process::Stdio, ShimError> {
            // SAFETY: `fd` is one of the container's stdio descriptors, which this process
            // holds open for the whole launch; it is only borrowed for the dup.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::unistd::dup(fd)
                .map(std::process::Stdio::from)
                .map_err(ShimError::Dup)
        };
        // `create` + `start` rather than `run`: runc then leaves the container's cgroup in
        // place when the container exits, so its OOM kill count can be read before
        // `delete`. The container's init is orphaned when `create` exits and comes to us as a
        // child subreaper, so its exit status is ours to wait for.
        let _ = nix::sys::prctl::set_child_subreaper(true);
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
            .map_err(|source| ShimError::RuntimeCommand {
                runtime: rt.to_owned(),
                source,
            })?;
        if !created.success() {
            return Err(ShimError::RuntimeCreate {
                runtime: rt.to_owned(),
                status: created,
            });
        }
        let cpid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| ShimError::NoPidFile {
                runtime: rt.to_owned(),
            })?;
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
            .map_err(|source| ShimError::RuntimeCommand {
                runtime: rt.to_owned(),
                source,
            })?;
        if !started.success() {
            self.delete_external(rt);
            return Err(ShimError::RuntimeStart {
                runtime: rt.to_owned(),
                status: started,
            });
        }
        let tm = runtime::Timings {
            exec_us: us(t.elapsed()),
            ..Default::default()
        };
        Ok((Pid::from_raw(cpid), cpid, tm))
    }

    /// `runc delete -f` of this container: its runc state and cgroup.
    pub(super) fn delete_external(&self, rt: &str) {
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
}
