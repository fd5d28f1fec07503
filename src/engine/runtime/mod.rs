//! tug's built-in OCI runtime: it executes an OCI runtime spec (`config.json`) the way runc
//! does, written on nix/libc.
//!
//! The sequence ([`launch`]), run by the single-threaded per-container supervisor:
//! 1. create the cgroup, write its limits, and open what the child needs to enter it
//!    ([`cgroups::Attach`]);
//! 2. `clone3(2)` a child with new pid/mount/uts/ipc(/net) namespaces ([`namespaces`]),
//!    started inside the cgroup2 directory (`CLONE_INTO_CGROUP`; on a hybrid machine the
//!    unified tree); plain `clone(2)` where `clone3` or that flag is missing;
//! 3. the child, still single-threaded, first writes itself into the `tasks` file of every v1
//!    hierarchy (moving oneself skips the global lock whose first use waits for an RCU grace
//!    period, see [`cgroups`]), so nothing of the container ever runs outside its cgroup; then
//!    it joins namespaces given by path (a prepared netns), takes its stdio, sets the
//!    hostname, builds its mount table and pivots into the root filesystem ([`rootfs`]).
//!    Only on the fallback path does the parent write the child's pid into the cgroup2
//!    `cgroup.procs` meanwhile, and the child waits for it on a pipe before going on;
//! 4. it sets rlimits, user, groups, capabilities, no_new_privs and seccomp ([`process`],
//!    [`seccomp`]) and `execve`s the program; with `init` it first forks and stays as a tiny
//!    init ([`init`]).
//!
//! The child reports a failure as text on an error pipe that is close-on-exec: end of file
//! without text means `execve` succeeded. [`exec_in`] runs another process in the namespaces,
//! root and cgroup of a running container (`exec`, healthchecks, hooks); [`enter`] joins its
//! mount namespace and root only (`cp`).

pub mod bpf;
pub mod cgroups;
pub mod init;
pub mod inroot;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod sys;

use std::io::{BufRead as _, Read as _, Write as _};
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
    /// The container's process failed before its program started: its message, read from
    /// the error pipe (the child writes it as text; it has no other way back).
    #[error("container init: {0}")]
    Child(String),
    /// An I/O step of the child's setup (its terminal, its stdio) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The child waited for the supervisor's go-ahead, which did not come.
    #[error("the supervisor did not {0}")]
    NoGo(Go),
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

/// What the child waits for the supervisor's byte on a pipe for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Go {
    /// The parent has moved it into cgroup2 (the fallback without `CLONE_INTO_CGROUP`).
    CgroupPlaced,
    /// The supervisor's work before the program (see [`BeforeStart`]) is done.
    Start,
}

impl std::fmt::Display for Go {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Go::CgroupPlaced => "place the container in its cgroup",
            Go::Start => "let the container start",
        })
    }
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |source| RuntimeError::Io { what, source }
}

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
    /// cgroup creation and limits, plus the child's entry into the v1 hierarchies (and, on
    /// the fallback path, the parent's write into cgroup2).
    pub cgroup_us: u64,
    /// `clone3(2)`/`clone(2)` as seen by the parent.
    pub clone_us: u64,
    /// Mount table and pivot_root inside the child.
    pub mount_us: u64,
    /// From the end of the mount phase until `execve` succeeded: process setup (user, caps,
    /// seccomp) and the exec itself.
    pub exec_us: u64,
    /// The parent had to move the child into cgroup2 by pid (no `CLONE_INTO_CGROUP`).
    #[serde(default)]
    pub cgroup_parent_join: bool,
}

/// `struct clone_args` of `clone3(2)`, up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, Linux 5.7).
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Start the child in the cgroup2 directory given by `clone_args.cgroup` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Starts a child the way `fork(2)` does (a copy of the address space, running on its copy
/// of the caller's stack), with the new namespaces `flags`, inside the cgroup2 directory
/// `cgroup`. The child runs `child` and exits with what it returns; the parent gets its pid.
/// Fails (and starts nothing) where `clone3` or `CLONE_INTO_CGROUP` is missing or `cgroup`
/// is not a cgroup2 directory.
///
/// # Safety
/// The caller must be single-threaded, and `child` must only do what is sound after `fork`
/// in such a process; it never returns into the caller's frames (the child `_exit`s).
pub unsafe fn clone_into_cgroup(
    flags: CloneFlags,
    cgroup: RawFd,
    child: impl FnOnce() -> i32,
) -> nix::Result<Pid> {
    let (Ok(cg), Ok(sig)) = (u64::try_from(cgroup), u64::try_from(libc::SIGCHLD)) else {
        return Err(nix::Error::EBADF);
    };
    let args = CloneArgs {
        flags: u64::from(flags.bits().cast_unsigned()) | CLONE_INTO_CGROUP,
        exit_signal: sig,
        cgroup: cg,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 reads `args` (size given); without CLONE_VM and with no stack the child
    // continues here on a private copy of this single-threaded process, as after fork.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        r if r < 0 => Err(nix::Error::last()),
        0 => {
            let code = child();
            // SAFETY: the child leaves without unwinding into the parent's frames.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(Pid::from_raw(i32::try_from(pid).unwrap_or(-1))),
    }
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
    rustix::pty::unlockpt(&master)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR
            | rustix::pty::OpenptFlags::NOCTTY
            | rustix::pty::OpenptFlags::CLOEXEC,
    )?;
    Ok((OwnedFd::from(master), slave))
}

/// In the container: allocates its terminal, sends the master to the supervisor over
/// `sock`, and makes the slave the stdio and controlling terminal.
fn console_setup(sock: RawFd) -> Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let (master, slave) = open_pty().map_err(io_err("allocate terminal"))?;
    let fds = [master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"m")];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| io_err("send terminal")(e.into()))?;
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

fn take_stdio(stdio: &Stdio) -> Result<()> {
    for (from, to) in [(stdio.stdin, 0), (stdio.stdout, 1), (stdio.stderr, 2)] {
        if from != to {
            // SAFETY: dup2 on descriptors owned by this process.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(io_err("dup2")(std::io::Error::last_os_error()));
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
        // fd 0 is the terminal's slave now.
        if let Err(e) = rustix::process::ioctl_tiocsctty(std::io::stdin()) {
            return Err(io_err("set controlling terminal")(e.into()));
        }
    }
    Ok(())
}

/// Waits for the parent's byte on `go_r`: it moved us into cgroup2 (the fallback path), or
/// its work before the program is done.
fn wait_go(go_r: RawFd, what: Go) -> Result<()> {
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer.
    if unsafe { libc::read(go_r, b.as_mut_ptr().cast(), 1) } == 1 {
        Ok(())
    } else {
        Err(RuntimeError::NoGo(what))
    }
}

/// The container's root in the child: the spec's mounts, devices, sysctls and masked paths,
/// then the pivot. Every path inside the rootfs is resolved inside it (see `rootfs`).
fn make_root(spec: &Spec, rootfs: &Path) -> std::result::Result<(), rootfs::RootfsError> {
    let root = rootfs::prepare(rootfs)?;
    for m in spec.mounts().iter().flatten() {
        rootfs::mount_one(&root, m)?;
    }
    let mut devices = rootfs::default_devices();
    if let Some(extra) = spec.linux().as_ref().and_then(|l| l.devices().clone()) {
        devices.retain(|d| !extra.iter().any(|e| e.path() == d.path()));
        devices.extend(extra);
    }
    rootfs::create_devices(&root, &devices)?;
    rootfs::sysctls(&root, spec)?;
    rootfs::mask(&root, spec)?;
    rootfs::pivot(root)?;
    rootfs::finish(spec)
}

/// Everything the child does; returns only on failure.
fn child_main(
    spec: &Spec,
    rootfs: &Path,
    stdio: &Stdio,
    init: bool,
    join: &[(CloneFlags, std::path::PathBuf)],
    cgroupns: bool,
    attach: &cgroups::Attach,
    err_w: RawFd,
    go_r: Option<RawFd>,
    start_go: Option<RawFd>,
    filters: Option<&[seccomp::BpfProgram]>,
    console: Option<RawFd>,
) -> String {
    // Into the v1 hierarchies first, while single-threaded and before anything else runs.
    let t_join = Instant::now();
    if let Err(e) = attach.join_self() {
        return e.to_string();
    }
    // SAFETY: this is the clone child, which leaves by exec or _exit and never drops `attach`.
    unsafe { attach.close_in_child() };
    let mut go_r = go_r;
    if cgroupns {
        // The namespace's root is the cgroup we are in now: on the fallback path the parent
        // must have placed us in cgroup2 first.
        if let Some(r) = go_r.take()
            && let Err(e) = wait_go(r, Go::CgroupPlaced)
        {
            return e.to_string();
        }
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP) {
            return format!("unshare the cgroup namespace: {e}");
        }
    }
    let join_us = us(t_join.elapsed());
    let t0 = Instant::now();
    reset_signals();
    if let Err(e) = namespaces::join(join) {
        return e.to_string();
    }
    if console.is_none()
        && let Err(e) = take_stdio(stdio)
    {
        return e.to_string();
    }
    if let Err(e) = namespaces::set_names(&sys::Linux, spec) {
        return e.to_string();
    }
    if let Err(e) = make_root(spec, rootfs) {
        return e.to_string();
    }
    if let Some(sock) = console {
        if let Err(e) = console_setup(sock) {
            return e.to_string();
        }
        // SAFETY: the socket is no longer needed.
        unsafe { libc::close(sock) };
    }
    let msg = format!("M{} {join_us}\n", us(t0.elapsed()));
    // SAFETY: err_w is the open error pipe; msg is a valid buffer.
    unsafe { libc::write(err_w, msg.as_ptr().cast(), msg.len()) };
    // On the fallback path the parent moves us into cgroup2 while we set up the mounts;
    // nothing before this point forks or runs container code. From here on (the init's
    // fork, exec) we must be inside it.
    if let Some(go_r) = go_r
        && let Err(e) = wait_go(go_r, Go::CgroupPlaced)
    {
        return e.to_string();
    }
    // The supervisor's work before the program starts (synced files): one more byte.
    if let Some(r) = start_go
        && let Err(e) = wait_go(r, Go::Start)
    {
        return e.to_string();
    }
    let Some(proc_) = spec.process().clone() else {
        return "the spec has no process".to_string();
    };
    if init {
        // The init gets the resource limits too (runc sets them before it execs an init).
        if let Err(e) = process::apply_rlimits(&proc_) {
            return e.to_string();
        }
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

/// Work the caller does once the container's mounts are made and its root is pivoted, before
/// any of its code runs (given the container's pid; its `/proc/<pid>/root` is the container's
/// root with every mount in place). It cannot fail the start: what it could not do is the
/// caller's to report (the supervisor logs what a sync before the start could not write).
pub type BeforeStart<'a> = &'a mut dyn FnMut(Pid);

/// Starts the container described by `spec` with its root filesystem at `rootfs` (already
/// mounted), in `cgroup` (created here with the spec's limits unless `cgroup_ready`: made
/// beforehand with the same limits). Returns once the program has been executed.
pub fn launch(
    spec: &Spec,
    rootfs: &Path,
    stdio: &Stdio,
    init: bool,
    cgroup: &cgroups::Cgroup,
    cgroup_ready: bool,
) -> Result<Started> {
    launch_with(spec, rootfs, stdio, init, cgroup, cgroup_ready, None)
}

/// [`launch`], with `before_start` run between the mounts and the program (see
/// [`BeforeStart`]).
// Long: the start sequence around the clone (cgroup, namespaces, pipes, clone3 or clone, the
// child's report) where each step depends on the descriptors of the one before.
pub fn launch_with(
    spec: &Spec,
    rootfs: &Path,
    stdio: &Stdio,
    init: bool,
    cgroup: &cgroups::Cgroup,
    cgroup_ready: bool,
    mut before_start: Option<BeforeStart<'_>>,
) -> Result<Started> {
    let mut timings = Timings::default();
    let t0 = Instant::now();
    if !cgroup_ready {
        let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
        cgroup.create(resources.as_ref())?;
    }
    let attach = cgroup.attach()?;
    timings.cgroup_us = us(t0.elapsed());
    let ns = namespaces::plan(spec);
    let (new, join, cgroupns) = (ns.clone, ns.join, ns.cgroup);
    // Compile the seccomp profile here, once, rather than in the child.
    let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => Some(seccomp::compile(profile).map_err(process::ProcessError::from)?),
        None => None,
    };
    let pipe = || {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| RuntimeError::Sys {
            what: "pipe",
            source,
        })
    };
    // The "go" pipe: the child waits for a byte on it after its mounts when the parent has
    // to move it into cgroup2 by pid, or has work to do before the program starts.
    let hook = before_start.is_some();
    let (go_r, mut go_w) = if attach.unified_fd().is_some() || hook {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let (err_r, err_w) = pipe()?;
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
    let go_r_fd = go_r.as_ref().map(AsRawFd::as_raw_fd);
    let go_w_fd = go_w.as_ref().map(AsRawFd::as_raw_fd);
    let err_r_fd = err_r.as_raw_fd();
    let err_w_fd = err_w.as_raw_fd();
    // What the child runs; `wait_go`: the parent places it in cgroup2 (fallback path). With a
    // `before_start` the child waits for one more byte after its mounts.
    let run_child = |wait_go: bool| -> i32 {
        // SAFETY: closing the parent's ends of the pipes in the child.
        unsafe {
            if let Some(w) = go_w_fd {
                libc::close(w);
            }
            libc::close(err_r_fd);
        }
        let msg = child_main(
            spec,
            rootfs,
            stdio,
            init,
            &join,
            cgroupns,
            &attach,
            err_w_fd,
            go_r_fd.filter(|_| wait_go),
            go_r_fd.filter(|_| hook),
            filters.as_deref(),
            console_child,
        );
        let line = format!("E{msg}\n");
        // SAFETY: writing a valid buffer to the error pipe.
        unsafe { libc::write(err_w_fd, line.as_ptr().cast(), line.len()) };
        127
    };
    let t1 = Instant::now();
    // SAFETY: the supervisor is single-threaded and the child only runs `run_child`, which
    // leaves by exec or _exit.
    let into = attach
        .unified_fd()
        .map(|fd| unsafe { clone_into_cgroup(new, fd, || run_child(false)) });
    let pid = match into {
        Some(Ok(pid)) => pid,
        other => {
            // No cgroup2 tree, or clone3/CLONE_INTO_CGROUP unavailable: plain clone(2) on a
            // stack of its own; the parent then moves the child into cgroup2, if any.
            timings.cgroup_parent_join = other.is_some();
            let wait_go = timings.cgroup_parent_join;
            // A large stack: only the touched pages are ever allocated.
            let mut stack = vec![0u8; 8 << 20];
            let cb = Box::new(|| -> isize {
                let code = run_child(wait_go);
                // SAFETY: leaving the child without returning into the parent's frames.
                unsafe { libc::_exit(code) }
            });
            // SAFETY: the supervisor is single-threaded, the stack outlives the call (the
            // child gets a copy of the address space, no CLONE_VM), and the callback never
            // returns to Rust frames of the parent.
            unsafe { nix::sched::clone(cb, &mut stack, new, Some(libc::SIGCHLD)) }.map_err(
                |source| RuntimeError::Sys {
                    what: "clone",
                    source,
                },
            )?
        }
    };
    drop(go_r);
    drop(err_w);
    drop(attach);
    timings.clone_us = us(t1.elapsed());
    let fail = |msg: String| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
        RuntimeError::Child(msg)
    };
    let mut err_r = std::io::BufReader::new(std::fs::File::from(err_r));
    if timings.cgroup_parent_join {
        let t_join = Instant::now();
        let joined = cgroup.add_unified(pid.as_raw());
        timings.cgroup_us += us(t_join.elapsed());
        if let Err(e) = joined {
            // The child may have failed (and exited) first: its own message says more.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            let mut text = String::new();
            let _ = err_r.read_to_string(&mut text);
            let msg = text
                .lines()
                .find_map(|l| l.strip_prefix('E'))
                .map_or_else(|| e.to_string(), str::to_string);
            return Err(RuntimeError::Child(msg));
        }
        if let Some(w) = go_w.as_ref() {
            let _ = nix::unistd::write(w, b"g");
        }
    }
    if !hook {
        drop(go_w.take());
    }
    let console = match console_pair {
        Some((ours, theirs)) => {
            drop(theirs);
            recv_console(&ours)
        }
        None => None,
    };
    // "M<mount µs> <cgroup join µs>" when the mounts are done, then end of file at exec, or
    // "E<message>" on failure.
    let mut text = String::new();
    let _ = err_r.read_line(&mut text);
    if let Some(f) = before_start.as_mut()
        && text.starts_with('M')
    {
        f(pid);
        if let Some(w) = go_w.take() {
            let _ = std::fs::File::from(w).write_all(b"g");
        }
    }
    drop(go_w);
    let t2 = Instant::now();
    let _ = err_r.read_to_string(&mut text);
    for line in text.lines() {
        if let Some(m) = line.strip_prefix('M') {
            let mut f = m.split(' ').map(|v| v.parse().unwrap_or(0));
            timings.mount_us = f.next().unwrap_or(0);
            timings.cgroup_us += f.next().unwrap_or(0);
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

/// A running container process to join (`exec`, healthchecks, hooks, `cp`): its pid and a
/// pidfd of it. The pidfd is what is joined (`setns(pidfd, …)`), so a pid that the container
/// left and another process took is never joined.
#[derive(Debug)]
pub struct Joinable {
    pid: i32,
    pidfd: OwnedFd,
}

impl Joinable {
    /// Takes a pidfd of `pid`; `is_it` is asked once the pidfd exists (compare the recorded
    /// start time): a false answer means the pid is no longer the container's.
    pub fn open(pid: i32, is_it: impl FnOnce() -> bool) -> Result<Joinable> {
        let sys = |source| RuntimeError::Sys {
            what: "pidfd_open",
            source,
        };
        let pidfd = crate::engine::proc::pidfd_open(pid).map_err(sys)?;
        if !is_it() {
            return Err(sys(nix::Error::ESRCH));
        }
        Ok(Joinable { pid, pidfd })
    }

    /// The process's pid.
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Opens the process's root directory (`/proc/<pid>/root`, `O_PATH`) and checks that the
    /// pid was still this process afterwards: the directory the container's processes see as
    /// `/`, with the container's own mounts below it.
    pub fn root(&self) -> Result<OwnedFd> {
        let sys = |source| RuntimeError::Sys {
            what: "open the container's root",
            source,
        };
        let root = nix::fcntl::open(
            format!("/proc/{}/root", self.pid).as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys)?;
        if !self.alive() {
            return Err(sys(nix::Error::ESRCH));
        }
        Ok(root)
    }

    fn alive(&self) -> bool {
        // SAFETY: pidfd_send_signal with signal 0 only checks that the process exists.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        r == 0
    }
}

/// Runs `proc_` (with `spec`'s seccomp profile) inside the namespaces, root and cgroup of the
/// container process `target`, and waits for it. Call it in a disposable, single-threaded
/// process: it joins the namespaces itself. Returns the exit code.
pub fn exec_in(
    target: &Joinable,
    cgroup: Option<&cgroups::Cgroup>,
    spec: &Spec,
    proc_: &oci_spec::runtime::Process,
    stdio: &Stdio,
    timeout: Option<Duration>,
) -> Result<i32> {
    join_container(target, cgroup)?;
    spawn_in(spec, proc_, stdio, timeout)
}

/// Moves the calling (single-threaded, disposable) process into the cgroup, the namespaces
/// and the root directory of the container process `target` (see [`enter`]).
pub fn join_container(target: &Joinable, cgroup: Option<&cgroups::Cgroup>) -> Result<()> {
    if let Some(cg) = cgroup {
        let me = nix::unistd::getpid().as_raw();
        cg.add(me)?;
    }
    // The cgroup namespace after the cgroup itself: its root then is the container's.
    enter(
        target,
        CloneFlags::CLONE_NEWCGROUP
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNS,
    )
}

/// Joins the namespaces `flags` (with the mount namespace) of `target` and its root
/// directory, and nothing of the host stays reachable:
/// - the process becomes non-dumpable first, so the container's processes cannot open its
///   `/proc/<pid>/` entries (its executable — tug's binary on the host — its descriptors, its
///   root) while it is in their namespaces (`execve` of the container's program resets it);
/// - the root is the container process's own root (`/proc/<pid>/root`, opened before the
///   mount namespace changes and checked to be that process's by its pidfd), not the mount
///   namespace's root that `setns` lands on, which is whatever is stacked topmost there;
/// - afterwards nothing may be stacked over that root (`/..` is the root's own mount), else
///   the join fails.
pub fn enter(target: &Joinable, flags: CloneFlags) -> Result<()> {
    let sys = |what: &'static str| move |source| RuntimeError::Sys { what, source };
    nix::sys::prctl::set_dumpable(false).map_err(sys("make the process non-dumpable"))?;
    let root = target.root()?;
    nix::sched::setns(&target.pidfd, flags).map_err(sys("join the container's namespaces"))?;
    nix::unistd::fchdir(&root).map_err(sys("enter the container's root"))?;
    nix::unistd::chroot(".").map_err(sys("enter the container's root"))?;
    drop(root);
    let cwd = nix::fcntl::AT_FDCWD;
    let me = inroot::identity_at(cwd, "/").map_err(sys("stat the container's root"))?;
    let over = inroot::identity_at(cwd, "/..").map_err(sys("stat the container's root"))?;
    if over.mnt_id != me.mnt_id {
        return Err(RuntimeError::Child(format!(
            "mount {} is stacked over the container's root; refusing to run in it",
            over.mnt_id
        )));
    }
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
                Err(e) => e.to_string(),
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
