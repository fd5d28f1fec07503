//! tug's built-in OCI runtime: it executes an OCI runtime spec (`config.json`) the way runc
//! does, written on nix/libc.
//!
//! The sequence ([`launch`]), run by the single-threaded per-container supervisor:
//! 1. create the cgroup and write its limits ([`cgroups`]);
//! 2. `clone(2)` a child with new pid/mount/uts/ipc(/net) namespaces ([`namespaces`]);
//! 3. while the parent puts it into the cgroup (on v1 each join waits for an RCU grace
//!    period, milliseconds), the child joins namespaces given by path (a prepared netns),
//!    takes its stdio, sets the hostname, builds its mount table and pivots into the root
//!    filesystem ([`rootfs`]); then it blocks on a pipe until the parent is done, so that
//!    nothing of the container runs or forks outside its cgroup;
//! 4. it sets rlimits, user, groups, capabilities, no_new_privs and seccomp ([`process`],
//!    [`seccomp`]) and `execve`s the program; with `init` it first forks and stays as a tiny
//!    init ([`init`]).
//!
//! The child reports a failure as text on an error pipe that is close-on-exec: end of file
//! without text means `execve` succeeded. [`exec_in`] runs another process in the namespaces
//! and cgroup of a running container (`exec`, healthchecks).

pub mod bpf;
pub mod cgroups;
pub mod init;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// cgroup setup failed.
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
    /// A system call of the parent failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: nix::Error,
    },
    /// The container's process failed before its program started.
    #[error("container init: {0}")]
    Child(String),
    /// Joining a namespace failed.
    #[error(transparent)]
    Namespace(#[from] namespaces::NamespaceError),
    /// Process setup failed.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    /// An exec'd command ran past its timeout and was killed.
    #[error("the command exceeded its timeout")]
    Timeout,
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, RuntimeError>;

/// The container's standard streams: file descriptors in the calling process.
#[derive(Debug, Clone, Copy)]
pub struct Stdio {
    /// Becomes fd 0.
    pub stdin: RawFd,
    /// Becomes fd 1.
    pub stdout: RawFd,
    /// Becomes fd 2.
    pub stderr: RawFd,
    /// The streams are a terminal: make it the controlling terminal of a new session.
    pub tty: bool,
}

/// Where the start time went (for the note's latency breakdown).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// cgroup creation and limits, plus moving the child in (overlapping its mounts).
    pub cgroup_us: u64,
    /// `clone(2)` until the child runs.
    pub clone_us: u64,
    /// Mount table and pivot_root inside the child.
    pub mount_us: u64,
    /// From the cgroup join until `execve` succeeded: process setup (user, caps, seccomp),
    /// plus whatever of the mount phase outlasted the join.
    pub exec_us: u64,
}

/// A started container process.
#[derive(Debug)]
pub struct Started {
    /// Its pid (in the caller's pid namespace).
    pub pid: Pid,
    /// Where the time went.
    pub timings: Timings,
    /// The terminal master, when the container has a terminal (allocated inside its own
    /// devpts instance and passed back over a socket, as runc's console socket does).
    pub console: Option<OwnedFd>,
}

/// Opens a new pseudo-terminal pair from `/dev/ptmx` of the current mount namespace.
pub fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER returns a new descriptor for the slave side.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: slave is a fresh descriptor we own.
    Ok((OwnedFd::from(master), unsafe {
        OwnedFd::from_raw_fd(slave)
    }))
}

/// In the container: allocates its terminal, sends the master to the supervisor over
/// `sock`, and makes the slave the stdio and controlling terminal.
fn console_setup(sock: RawFd) -> std::result::Result<(), String> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let (master, slave) = open_pty().map_err(|e| format!("allocate terminal: {e}"))?;
    let fds = [master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"m")];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("send terminal: {e}"))?;
    drop(master);
    let s = slave.as_raw_fd();
    take_stdio(&Stdio {
        stdin: s,
        stdout: s,
        stderr: s,
        tty: true,
    })
}

fn recv_console(sock: &OwnedFd) -> Option<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just gave us this descriptor.
            return Some(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    None
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Resets signal mask and dispositions inherited from the supervisor (Rust ignores SIGPIPE;
/// the supervisor blocks SIGCHLD) so the program starts with the defaults.
pub fn reset_signals() {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for s in Signal::iterator() {
        if s != Signal::SIGKILL && s != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL is always sound.
            let _ = unsafe { signal(s, SigHandler::SigDfl) };
        }
    }
}

fn take_stdio(stdio: &Stdio) -> std::result::Result<(), String> {
    for (from, to) in [(stdio.stdin, 0), (stdio.stdout, 1), (stdio.stderr, 2)] {
        if from != to {
            // SAFETY: dup2 on descriptors owned by this process.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(format!("dup2: {}", std::io::Error::last_os_error()));
            }
        }
    }
    // Nothing else of the supervisor (or of whoever started it) may leak into the program:
    // every other descriptor closes at exec.
    // SAFETY: close_range with the CLOEXEC flag only changes descriptor flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if stdio.tty {
        let _ = nix::unistd::setsid();
        // SAFETY: TIOCSCTTY on fd 0, which is a terminal slave.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(format!(
                "set controlling terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Everything the child does; returns only on failure.
fn child_main(
    spec: &Spec,
    rootfs: &Path,
    stdio: &Stdio,
    init: bool,
    join: &[(CloneFlags, std::path::PathBuf)],
    err_w: RawFd,
    go_r: RawFd,
    filters: Option<&[seccomp::BpfProgram]>,
    console: Option<RawFd>,
) -> String {
    let t0 = Instant::now();
    reset_signals();
    if let Err(e) = namespaces::join(join) {
        return e.to_string();
    }
    if console.is_none()
        && let Err(e) = take_stdio(stdio)
    {
        return e;
    }
    if let Some(h) = spec.hostname()
        && let Err(e) = nix::unistd::sethostname(h)
    {
        return format!("sethostname: {e}");
    }
    if let Some(d) = spec.domainname().as_ref().filter(|d| !d.is_empty()) {
        // SAFETY: the pointer and length describe d's bytes.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return format!("setdomainname: {}", std::io::Error::last_os_error());
        }
    }
    let mounts = || -> std::result::Result<(), rootfs::RootfsError> {
        rootfs::prepare(rootfs)?;
        for m in spec.mounts().iter().flatten() {
            rootfs::mount_one(rootfs, m)?;
        }
        let mut devices = rootfs::default_devices();
        if let Some(extra) = spec.linux().as_ref().and_then(|l| l.devices().clone()) {
            devices.retain(|d| !extra.iter().any(|e| e.path() == d.path()));
            devices.extend(extra);
        }
        rootfs::create_devices(rootfs, &devices)?;
        rootfs::sysctls(rootfs, spec)?;
        rootfs::pivot(rootfs)?;
        rootfs::finish(spec)
    };
    if let Err(e) = mounts() {
        return e.to_string();
    }
    if let Some(sock) = console {
        if let Err(e) = console_setup(sock) {
            return e;
        }
        // SAFETY: the socket is no longer needed.
        unsafe { libc::close(sock) };
    }
    let msg = format!("M{}\n", us(t0.elapsed()));
    // SAFETY: err_w is the open error pipe; msg is a valid buffer.
    unsafe { libc::write(err_w, msg.as_ptr().cast(), msg.len()) };
    // The parent moves us into the cgroup while we set up the mounts (joining a v1
    // hierarchy waits for an RCU grace period); nothing before this point forks or runs
    // container code. From here on (the init's fork, exec) we must be inside it.
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer.
    if unsafe { libc::read(go_r, b.as_mut_ptr().cast(), 1) } != 1 {
        return "the supervisor did not place the container in its cgroup".to_string();
    }
    let Some(proc_) = spec.process().clone() else {
        return "the spec has no process".to_string();
    };
    if init {
        init::block_all();
        // SAFETY: this process is single-threaded (a clone child of the supervisor).
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                // SAFETY: closing our copy of the error pipe so the parent sees EOF at exec.
                unsafe { libc::close(err_w) };
                let code = init::run(child);
                // SAFETY: _exit ends the process without running atexit handlers.
                unsafe { libc::_exit(code) };
            }
            Ok(nix::unistd::ForkResult::Child) => reset_signals(),
            Err(e) => return format!("fork init child: {e}"),
        }
    }
    if let Err(e) = process::finalize(&proc_, spec, filters) {
        return e.to_string();
    }
    match process::exec(&proc_) {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    }
}

/// Starts the container described by `spec` with its root filesystem at `rootfs` (already
/// mounted), in `cgroup`. Returns once the program has been executed.
pub fn launch(
    spec: &Spec,
    rootfs: &Path,
    stdio: &Stdio,
    init: bool,
    cgroup: &cgroups::Cgroup,
) -> Result<Started> {
    let mut timings = Timings::default();
    let t0 = Instant::now();
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    cgroup.create(resources.as_ref())?;
    timings.cgroup_us = us(t0.elapsed());
    let (new, join) = namespaces::plan(spec);
    // Compile the seccomp profile here, once, rather than in the child.
    let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => Some(seccomp::compile(profile).map_err(process::ProcessError::from)?),
        None => None,
    };
    let (go_r, go_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| RuntimeError::Sys {
            what: "pipe",
            source,
        })?;
    let (err_r, err_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| RuntimeError::Sys {
            what: "pipe",
            source,
        })?;
    // A terminal is allocated inside the container (its own devpts) and its master comes back
    // over this socket pair.
    let console_pair = if stdio.tty && stdio.stdin < 0 {
        Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|source| RuntimeError::Sys {
                what: "socketpair",
                source,
            })?,
        )
    } else {
        None
    };
    let console_child = console_pair.as_ref().map(|(_, c)| c.as_raw_fd());
    let go_r_fd = go_r.as_raw_fd();
    let go_w_fd = go_w.as_raw_fd();
    let err_r_fd = err_r.as_raw_fd();
    let err_w_fd = err_w.as_raw_fd();
    let t1 = Instant::now();
    // A large stack: only the touched pages are ever allocated.
    let mut stack = vec![0u8; 8 << 20];
    let cb = Box::new(|| -> isize {
        // SAFETY: closing the parent's ends of the pipes in the child.
        unsafe {
            libc::close(go_w_fd);
            libc::close(err_r_fd);
        }
        let msg = child_main(
            spec,
            rootfs,
            stdio,
            init,
            &join,
            err_w_fd,
            go_r_fd,
            filters.as_deref(),
            console_child,
        );
        let line = format!("E{msg}\n");
        // SAFETY: writing a valid buffer to the error pipe, then exiting.
        unsafe {
            libc::write(err_w_fd, line.as_ptr().cast(), line.len());
            libc::_exit(127);
        }
    });
    // SAFETY: the supervisor is single-threaded, the stack outlives the call (the child gets a
    // copy of the address space, no CLONE_VM), and the callback never returns to Rust frames
    // of the parent.
    let pid = unsafe { nix::sched::clone(cb, &mut stack, new, Some(libc::SIGCHLD)) }.map_err(
        |source| RuntimeError::Sys {
            what: "clone",
            source,
        },
    )?;
    drop(go_r);
    drop(err_w);
    timings.clone_us = us(t1.elapsed());
    let fail = |msg: String| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
        RuntimeError::Child(msg)
    };
    let t_join = Instant::now();
    let joined = cgroup.add(pid.as_raw());
    timings.cgroup_us += us(t_join.elapsed());
    if let Err(e) = joined {
        // The child may have failed (and exited) first: its own message says more.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
        let mut text = String::new();
        let _ = std::fs::File::from(err_r).read_to_string(&mut text);
        let msg = text
            .lines()
            .find_map(|l| l.strip_prefix('E'))
            .map_or_else(|| e.to_string(), str::to_string);
        return Err(RuntimeError::Child(msg));
    }
    let mut go = std::fs::File::from(go_w);
    let _ = go.write_all(b"g");
    drop(go);
    let t2 = Instant::now();
    let console = match console_pair {
        Some((ours, theirs)) => {
            drop(theirs);
            recv_console(&ours)
        }
        None => None,
    };
    let mut text = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut text);
    for line in text.lines() {
        if let Some(m) = line.strip_prefix('M') {
            timings.mount_us = m.parse().unwrap_or(0);
        } else if let Some(e) = line.strip_prefix('E') {
            return Err(fail(e.to_string()));
        }
    }
    timings.exec_us = us(t2.elapsed());
    if stdio.tty && stdio.stdin < 0 && console.is_none() {
        return Err(fail("the container did not send its terminal".to_string()));
    }
    Ok(Started {
        pid,
        timings,
        console,
    })
}

/// Runs `proc_` (with `spec`'s seccomp profile) inside the namespaces and cgroup of the
/// container whose first process is `pid`, and waits for it. Call it in a disposable,
/// single-threaded process: it joins the namespaces itself. Returns the exit code.
pub fn exec_in(
    pid: i32,
    cgroup: Option<&cgroups::Cgroup>,
    spec: &Spec,
    proc_: &oci_spec::runtime::Process,
    stdio: &Stdio,
    timeout: Option<Duration>,
) -> Result<i32> {
    join_container(pid, cgroup)?;
    spawn_in(spec, proc_, stdio, timeout)
}

/// Moves the calling (single-threaded, disposable) process into the cgroup and the
/// namespaces of the container whose first process is `pid`.
pub fn join_container(pid: i32, cgroup: Option<&cgroups::Cgroup>) -> Result<()> {
    if let Some(cg) = cgroup {
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        cg.add(me)?;
    }
    // Open every namespace before joining any: after the mount namespace the host's /proc is
    // gone.
    let list = namespaces::of_process(pid);
    let mut files = Vec::new();
    for (f, p) in &list {
        let file = std::fs::File::open(p).map_err(|source| namespaces::NamespaceError::Open {
            path: p.clone(),
            source,
        })?;
        files.push((*f, file, p.clone()));
    }
    for (f, file, p) in &files {
        nix::sched::setns(file, *f).map_err(|source| namespaces::NamespaceError::Join {
            path: p.clone(),
            source,
        })?;
    }
    drop(files);
    Ok(())
}

/// Forks the process `proc_` (with `spec`'s seccomp profile) from a process that has joined
/// a container, and waits for it; returns its exit code.
pub fn spawn_in(
    spec: &Spec,
    proc_: &oci_spec::runtime::Process,
    stdio: &Stdio,
    timeout: Option<Duration>,
) -> Result<i32> {
    let (err_r, err_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| RuntimeError::Sys {
            what: "pipe",
            source,
        })?;
    // SAFETY: the caller is single-threaded (see above).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(err_r);
            reset_signals();
            let msg = match take_stdio(stdio) {
                Err(e) => e,
                Ok(()) => match process::finalize(proc_, spec, None) {
                    Err(e) => e.to_string(),
                    Ok(()) => match process::exec(proc_) {
                        Ok(never) => match never {},
                        Err(e) => e.to_string(),
                    },
                },
            };
            let fd: OwnedFd = err_w;
            let _ = std::fs::File::from(fd).write_all(msg.as_bytes());
            // SAFETY: _exit without unwinding.
            unsafe { libc::_exit(126) };
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(err_w);
            let mut text = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut text);
            let deadline = timeout.map(|t| Instant::now() + t);
            let flags = deadline.map(|_| nix::sys::wait::WaitPidFlag::WNOHANG);
            let status = loop {
                match waitpid(child, flags) {
                    Ok(WaitStatus::Exited(_, c)) => break c,
                    Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
                    Ok(WaitStatus::StillAlive) => {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            let _ =
                                nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                            let _ = waitpid(child, None);
                            return Err(RuntimeError::Timeout);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => {}
                    Err(source) => {
                        return Err(RuntimeError::Sys {
                            what: "wait",
                            source,
                        });
                    }
                }
            };
            if !text.is_empty() {
                return Err(RuntimeError::Child(text));
            }
            Ok(status)
        }
        Err(source) => Err(RuntimeError::Sys {
            what: "fork",
            source,
        }),
    }
}

/// Wraps a raw descriptor that the caller owns.
///
/// # Safety
/// `fd` must be open and owned by nobody else.
#[must_use]
pub unsafe fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
