//! `tug __shim exec`: a process run inside a running container (`exec`, hooks).

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use oci_spec::runtime::Spec;

use super::io::{copy_window_size, devnull, write_all_fd};
use crate::engine::container::state::{self, Status};
use crate::engine::container::{ContainerError, ContainerStore, ExecOptions, Result};
use crate::engine::runtime::{self};

/// Runs `opts` in the running container `id`: detached, with the caller's stdio, or on a
/// terminal allocated inside the container. Returns the exit code (0 when detached).
pub(super) fn exec_main(root: &Path, id: &str, opts: &ExecOptions) -> Result<i32> {
    let store = ContainerStore::open(root)?;
    let dir = store.container_dir(id);
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
    let proc_ = exec_process(&store, id, &spec, pid, opts)?;
    let spec = if opts.privileged {
        unconfined(spec)
    } else {
        spec
    };
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
        return exec_detached(id, run);
    }
    if !opts.tty {
        return run(runtime::Stdio {
            stdin: 0,
            stdout: 1,
            stderr: 2,
            tty: false,
        });
    }
    exec_on_terminal(id, &target, &cgroup, &spec, &proc_, opts.interactive)
}

/// The process to run: the container's, with `opts`' command, environment, user (looked up
/// in the container's own passwd and group files), working directory and terminal.
fn exec_process(
    store: &ContainerStore,
    id: &str,
    spec: &Spec,
    pid: i32,
    opts: &ExecOptions,
) -> Result<oci_spec::runtime::Process> {
    let rec = store.record(id)?;
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
        let eu = crate::engine::container::user::resolve_in_root(u, &rec.config.group_add, &root)?;
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
    if opts.privileged {
        proc_.set_capabilities(Some(privileged_caps()?));
    }
    Ok(proc_)
}

/// A privileged exec's capabilities, as Docker gives them (moby's `execSetPlatformOpt`):
/// every capability tug itself may grant (its bounding set, as for a privileged container)
/// in the bounding, permitted and effective sets; nothing inheritable or ambient, so a
/// program it starts as another user keeps none.
fn privileged_caps() -> Result<oci_spec::runtime::LinuxCapabilities> {
    let all: oci_spec::runtime::Capabilities = crate::engine::container::spec::all_caps()
        .iter()
        .filter_map(|c| {
            c.trim_start_matches("CAP_")
                .parse::<oci_spec::runtime::Capability>()
                .ok()
        })
        .collect();
    oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(all.clone())
        .permitted(all.clone())
        .effective(all)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()
        .map_err(|e| ContainerError::Invalid(e.to_string()))
}

/// The container's spec without its seccomp filter, for a privileged exec. Docker (through
/// runc, which installs the container's filter in every process it execs) keeps the filter,
/// so its `exec --privileged` still cannot `mount`, `unshare` or `sethostname` in a
/// container that is not privileged (moby issue 21984, open since 2016); tug's privileged
/// exec is unconfined as a privileged container is. Namespaces, the cgroup and its device
/// rules, mounts, masked and read-only paths stay the container's.
fn unconfined(mut spec: Spec) -> Spec {
    if let Some(mut linux) = spec.linux().clone() {
        linux.set_seccomp(None);
        spec.set_linux(Some(linux));
    }
    spec
}

/// A detached exec: a child in a session of its own runs it with /dev/null as stdio.
fn exec_detached(id: &str, run: impl FnOnce(runtime::Stdio) -> Result<i32>) -> Result<i32> {
    // SAFETY: single-threaded helper process.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => Ok(0),
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
        Err(e) => Err(ContainerError::Start {
            id: id.to_string(),
            reason: format!("fork: {e}"),
        }),
    }
}

/// An exec on a terminal: joins the container first, so the terminal comes from its own
/// devpts instance, and relays it to the caller.
fn exec_on_terminal(
    id: &str,
    target: &runtime::Joinable,
    cgroup: &crate::engine::runtime::cgroups::Cgroup,
    spec: &Spec,
    proc_: &oci_spec::runtime::Process,
    interactive: bool,
) -> Result<i32> {
    runtime::join_container(target, Some(cgroup)).map_err(|e| ContainerError::Start {
        id: id.to_string(),
        reason: e.to_string(),
    })?;
    let (pm, ps) = runtime::open_pty().map_err(|e| ContainerError::Start {
        id: id.to_string(),
        reason: format!("allocate terminal: {e}"),
    })?;
    copy_window_size(&pm, Some((24, 80)));
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
                spec,
                proc_,
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
            relay_terminal(&pty.master, child, interactive);
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

/// Copies the terminal's output to our stdout and, when `interactive`, our stdin to the
/// terminal, until the process `child` exited and its output is drained.
fn relay_terminal(master: &OwnedFd, child: nix::unistd::Pid, interactive: bool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut buf = [0u8; 8192];
    let mut stdin_open = interactive;
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        let ready = poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) > 0;
        let is_ready = |i: usize| {
            ready
                && fds
                    .get(i)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
        };
        let (from_terminal, from_caller) = (is_ready(0), is_ready(1));
        drop(fds);
        if from_terminal {
            match nix::unistd::read(master, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = write_all_fd(stdout.as_fd(), &buf[..n]);
                }
                _ => break,
            }
        }
        if from_caller {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = write_all_fd(master.as_fd(), &buf[..n]);
                }
                _ => stdin_open = false,
            }
        }
        if let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
            waitpid(child, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT))
        {
            // Drain what is left, then stop.
            loop {
                let mut p = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
                if poll(&mut p, PollTimeout::ZERO).unwrap_or(0) <= 0 {
                    break;
                }
                match nix::unistd::read(master, &mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = write_all_fd(stdout.as_fd(), &buf[..n]);
                    }
                    _ => break,
                }
            }
            break;
        }
    }
}
