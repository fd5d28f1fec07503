//! The last steps before the container's program runs, shared by the container's first process
//! and by `exec`: resource limits, the user and groups, the capability sets, no_new_privs, the
//! seccomp filter, the working directory, and `execve` with the spec's environment.
//!
//! Capabilities come in five sets. The **bounding** set caps what can ever be gained; the
//! **permitted** set is what the process may use; **effective** is what the kernel checks;
//! **inheritable** and **ambient** govern what survives `execve`. The bounding set is trimmed
//! first (that needs CAP_SETPCAP, which the process still holds), then the uid changes with
//! `PR_SET_KEEPCAPS` so the permitted set survives, then the sets are written as the spec says.
//!
//! Installing a seccomp filter needs either no_new_privs or CAP_SYS_ADMIN. Docker does not set
//! no_new_privs by default, so the filter is installed while the process still holds all its
//! capabilities, before they are dropped (the filter allows the few calls that follow).

use super::sys::{Linux, Syscall};
use nix::sys::resource::Resource;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{PosixRlimitType, Process, Spec};

use super::seccomp;

/// Errors of process setup.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The cause.
        source: nix::Error,
    },
    /// Capability handling failed.
    #[error("capabilities: {0}")]
    Caps(String),
    /// Seccomp failed.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// The program cannot be found or run.
    #[error("exec {program}: {reason}")]
    Exec {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// The spec has no process.
    #[error("the spec has no process")]
    NoProcess,
    /// A resource limit cannot be granted.
    #[error("{0}")]
    Limit(String),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, ProcessError>;

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> ProcessError {
    let what = what.into();
    move |source| ProcessError::Sys { what, source }
}

/// Parses capability names (`CAP_CHOWN`) into a set, skipping names this kernel lacks.
#[must_use]
pub fn cap_set<'a>(names: impl IntoIterator<Item = &'a String>) -> CapsHashSet {
    names
        .into_iter()
        .filter_map(|n| Capability::from_str(n).ok())
        .collect()
}

/// The kernel resource of an OCI rlimit type, and its Docker name (`--ulimit nofile=…`).
#[must_use]
pub fn rlimit_resource(t: PosixRlimitType) -> (Resource, &'static str) {
    match t {
        PosixRlimitType::RlimitCpu => (Resource::RLIMIT_CPU, "cpu"),
        PosixRlimitType::RlimitFsize => (Resource::RLIMIT_FSIZE, "fsize"),
        PosixRlimitType::RlimitData => (Resource::RLIMIT_DATA, "data"),
        PosixRlimitType::RlimitStack => (Resource::RLIMIT_STACK, "stack"),
        PosixRlimitType::RlimitCore => (Resource::RLIMIT_CORE, "core"),
        PosixRlimitType::RlimitRss => (Resource::RLIMIT_RSS, "rss"),
        PosixRlimitType::RlimitNproc => (Resource::RLIMIT_NPROC, "nproc"),
        PosixRlimitType::RlimitNofile => (Resource::RLIMIT_NOFILE, "nofile"),
        PosixRlimitType::RlimitMemlock => (Resource::RLIMIT_MEMLOCK, "memlock"),
        PosixRlimitType::RlimitAs => (Resource::RLIMIT_AS, "as"),
        PosixRlimitType::RlimitLocks => (Resource::RLIMIT_LOCKS, "locks"),
        PosixRlimitType::RlimitSigpending => (Resource::RLIMIT_SIGPENDING, "sigpending"),
        PosixRlimitType::RlimitMsgqueue => (Resource::RLIMIT_MSGQUEUE, "msgqueue"),
        PosixRlimitType::RlimitNice => (Resource::RLIMIT_NICE, "nice"),
        PosixRlimitType::RlimitRtprio => (Resource::RLIMIT_RTPRIO, "rtprio"),
        PosixRlimitType::RlimitRttime => (Resource::RLIMIT_RTTIME, "rttime"),
    }
}

/// This process's (soft, hard) limit of `res`; (0, 0) where it cannot be read.
fn get_rlimit(res: Resource) -> (libc::rlim_t, libc::rlim_t) {
    nix::sys::resource::getrlimit(res).unwrap_or((0, 0))
}

/// What this process may give a container: without `CAP_SYS_RESOURCE` no hard limit can
/// be raised, so its own hard limits; with it, anything, except open files, which the kernel
/// caps at `fs.nr_open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// `CAP_SYS_RESOURCE` is in the effective set.
    pub can_raise: bool,
    /// `/proc/sys/fs/nr_open`.
    pub nr_open: u64,
}

impl Grant {
    /// This process's.
    #[must_use]
    pub fn current() -> Grant {
        let can_raise =
            caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_RESOURCE).unwrap_or(false);
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
        Grant { can_raise, nr_open }
    }

    /// Refuses a hard limit above what may be granted, naming the limit and why. `own_hard`
    /// is this process's hard limit of that resource.
    ///
    /// # Errors
    /// The message for the user.
    pub fn check(&self, name: &str, hard: u64, own_hard: u64) -> Result<()> {
        if name == "nofile" && hard > self.nr_open {
            return Err(ProcessError::Limit(format!(
                "ulimit {name}: the hard limit {} is above {}, the kernel's maximum \
                 (fs.nr_open)",
                show(hard),
                self.nr_open
            )));
        }
        if !self.can_raise && hard > own_hard {
            return Err(ProcessError::Limit(format!(
                "ulimit {name}: the hard limit {} is above {}, the most tug may grant here \
                 (its own hard limit; raising it needs CAP_SYS_RESOURCE)",
                show(hard),
                show(own_hard)
            )));
        }
        Ok(())
    }
}

fn show(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

/// Checks that every rlimit of the spec can be granted by this process (see [`Grant`]).
///
/// # Errors
/// The first limit that cannot, named.
pub fn check_rlimits(p: &Process) -> Result<()> {
    let grant = Grant::current();
    for r in p.rlimits().iter().flatten() {
        let (res, name) = rlimit_resource(r.typ());
        grant.check(name, r.hard(), get_rlimit(res).1)?;
    }
    Ok(())
}

/// Applies the spec's rlimits as given (a hard limit above what this process may grant is an
/// error naming it, never silently lowered). Without a `RLIMIT_NOFILE` entry the open-files
/// limit is the hard limit this process has, soft and hard (Docker's containers inherit the
/// engine's limits, which its service raises to the maximum).
pub fn apply_rlimits(p: &Process) -> Result<()> {
    apply_rlimits_with(&Linux, Grant::current(), p)
}

/// [`apply_rlimits`] through `sys`, with what this process may grant.
///
/// # Errors
/// A limit above `grant` (named, before it is set), or the kernel refused one.
pub fn apply_rlimits_with(sys_: &dyn Syscall, grant: Grant, p: &Process) -> Result<()> {
    let mut nofile_given = false;
    for r in p.rlimits().iter().flatten() {
        let (res, name) = rlimit_resource(r.typ());
        nofile_given |= res == Resource::RLIMIT_NOFILE;
        let (_, hard) = sys_.getrlimit(res).unwrap_or((0, 0));
        grant.check(name, r.hard(), hard)?;
        sys_.setrlimit(res, r.soft().min(r.hard()), r.hard())
            .map_err(sys(format!("setrlimit {name}")))?;
    }
    if !nofile_given {
        raise_nofile_with(sys_);
    }
    Ok(())
}

/// Raises this process's soft open-files limit to its hard limit.
pub fn raise_nofile() {
    raise_nofile_with(&Linux);
}

fn raise_nofile_with(sys_: &dyn Syscall) {
    // Lowering nothing, raising the soft limit up to the hard one needs no privilege.
    if let Ok((soft, hard)) = sys_.getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = sys_.setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Everything from rlimits to the capability sets; returns the compiled seccomp filter still
/// to install when no_new_privs is set (it is installed last then).
pub fn finalize(p: &Process, spec: &Spec, compiled: Option<&[seccomp::BpfProgram]>) -> Result<()> {
    apply_rlimits(p)?;
    let caps = p.capabilities().clone().unwrap_or_default();
    let names = |s: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
        s.iter().flatten().map(|c| format!("CAP_{c}")).collect()
    };
    let bounding = cap_set(&names(caps.bounding()));
    // Bounding set first, while CAP_SETPCAP is still ours.
    for c in caps::all() {
        if !bounding.contains(&c) {
            let _ = caps::drop(None, CapSet::Bounding, c);
        }
    }
    let nnp = p.no_new_privileges().unwrap_or(false);
    let filters = match (
        compiled,
        spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()),
    ) {
        (Some(c), _) => Some(c.to_vec()),
        (None, Some(profile)) => Some(seccomp::compile(profile)?),
        (None, None) => None,
    };
    if let (false, Some(f)) = (nnp, &filters) {
        seccomp::install(f)?;
    }
    let user = p.user();
    let groups: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(sys("setgroups"))?;
    let gid = nix::unistd::Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("setgid"))?;
    let _ = nix::sys::prctl::set_keepcaps(true);
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("setuid"))?;
    let perm = cap_set(&names(caps.permitted()));
    let eff = cap_set(&names(caps.effective()));
    let inh = cap_set(&names(caps.inheritable()));
    let amb = cap_set(&names(caps.ambient()));
    // Effective must stay a subset of permitted at every step: shrink it first.
    let cur_eff = caps::read(None, CapSet::Effective).unwrap_or_default();
    let eff_first: CapsHashSet = cur_eff.intersection(&perm).copied().collect();
    caps::set(None, CapSet::Effective, &eff_first)
        .map_err(|e| ProcessError::Caps(e.to_string()))?;
    caps::set(None, CapSet::Inheritable, &inh).map_err(|e| ProcessError::Caps(e.to_string()))?;
    caps::set(None, CapSet::Permitted, &perm).map_err(|e| ProcessError::Caps(e.to_string()))?;
    caps::set(None, CapSet::Effective, &eff).map_err(|e| ProcessError::Caps(e.to_string()))?;
    let _ = caps::clear(None, CapSet::Ambient);
    for c in amb {
        let _ = caps::raise(None, CapSet::Ambient, c);
    }
    if nnp {
        nix::sys::prctl::set_no_new_privs().map_err(sys("no_new_privs"))?;
        if let Some(f) = &filters {
            seccomp::install(f)?;
        }
    }
    Ok(())
}

/// Finds `program` on the `PATH` of `env` (the container's environment), like a shell would.
#[must_use]
pub fn lookup(program: &str, env: &[String], cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        let p = cwd.join(program);
        return Some(p);
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
}

/// Opens `path` (resolved against this process's root, which is the container's by now)
/// without following any `/proc` magic link on the way: a working directory or program that
/// leads through `/proc/self/fd/N`, `/proc/self/exe` or `/proc/<pid>/root` could reach an
/// object outside the container (a descriptor this process still holds, tug's own binary).
fn open_no_magic(path: &Path, flags: nix::fcntl::OFlag) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    nix::fcntl::openat2(
        nix::fcntl::AT_FDCWD,
        path,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
}

/// Changes to the working directory and replaces this process with the spec's program. Both
/// are opened without following a magic link; the program runs from the descriptor it was
/// opened as (`execveat`), except a script, which the kernel can only start by path.
pub fn exec(p: &Process) -> Result<std::convert::Infallible> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsFd as _;
    let args = p.args().clone().unwrap_or_default();
    let env = p.env().clone().unwrap_or_default();
    let Some(program) = args.first() else {
        return Err(ProcessError::Exec {
            program: String::new(),
            reason: "no command given".to_string(),
        });
    };
    let fail = |reason: String| ProcessError::Exec {
        program: program.clone(),
        reason,
    };
    let magic = |e: nix::Error, what: &str| match e {
        nix::Error::ELOOP => {
            format!("{what} leads through a /proc magic link (refused) or a symlink loop")
        }
        e => e.desc().to_lowercase(),
    };
    let cwd = p.cwd();
    let dir = open_no_magic(cwd, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(|e| {
        fail(format!(
            "working directory {}: {}",
            cwd.display(),
            magic(e, "it")
        ))
    })?;
    nix::unistd::fchdir(dir.as_fd())
        .map_err(|e| fail(format!("working directory {}: {e}", cwd.display())))?;
    drop(dir);
    let Some(path) = lookup(program, &env, cwd) else {
        return Err(fail("executable file not found in $PATH".to_string()));
    };
    let exe = open_no_magic(&path, OFlag::O_PATH).map_err(|e| fail(magic(e, "the program")))?;
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap_or_default();
    let cargs: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let cenv: Vec<CString> = env
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let err = nix::unistd::execveat(
        exe.as_fd(),
        c"",
        &cargs,
        &cenv,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .unwrap_err();
    // ENOENT from a descriptor that exists: a script, whose interpreter would need the
    // (close-on-exec) descriptor as /dev/fd/N. It runs by path, once the path is checked to
    // still be the file opened above.
    let err = if err == nix::Error::ENOENT {
        let now = open_no_magic(&path, OFlag::O_PATH)
            .and_then(|fd| nix::sys::stat::fstat(fd.as_fd()))
            .map_err(|e| fail(magic(e, "the program")))?;
        let was = nix::sys::stat::fstat(exe.as_fd()).map_err(|e| fail(e.desc().to_lowercase()))?;
        if (now.st_dev, now.st_ino) != (was.st_dev, was.st_ino) {
            return Err(fail("the program changed while it was started".to_string()));
        }
        nix::unistd::execve(&cpath, &cargs, &cenv).unwrap_err()
    } else {
        err
    };
    Err(fail(err.desc().to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::runtime::sys::{Call, Recorder};
    use oci_spec::runtime::{PosixRlimitBuilder, ProcessBuilder};

    fn limit(t: PosixRlimitType, soft: u64, hard: u64) -> oci_spec::runtime::PosixRlimit {
        PosixRlimitBuilder::default()
            .typ(t)
            .soft(soft)
            .hard(hard)
            .build()
            .unwrap()
    }

    #[test]
    fn process_rlimits_are_set_as_given_and_nofile_is_raised_otherwise() {
        let grant = Grant {
            can_raise: false,
            nr_open: 1 << 20,
        };
        let sys = Recorder::with_limits(vec![(Resource::RLIMIT_NOFILE, 1024, 524_288)]);
        // The soft limit never exceeds the hard one; without a nofile entry, the open-files
        // soft limit goes up to this process's hard limit.
        let p = ProcessBuilder::default()
            .rlimits(vec![limit(PosixRlimitType::RlimitNproc, 900, 500)])
            .build()
            .unwrap();
        apply_rlimits_with(&sys, grant, &p).unwrap();
        assert_eq!(
            sys.calls(),
            [
                Call::Setrlimit(Resource::RLIMIT_NPROC, 500, 500),
                Call::Setrlimit(Resource::RLIMIT_NOFILE, 524_288, 524_288),
            ]
        );
        // A nofile entry is taken as given, and nothing else is raised.
        let sys = Recorder::with_limits(vec![(Resource::RLIMIT_NOFILE, 1024, 524_288)]);
        let p = ProcessBuilder::default()
            .rlimits(vec![limit(PosixRlimitType::RlimitNofile, 100, 200)])
            .build()
            .unwrap();
        apply_rlimits_with(&sys, grant, &p).unwrap();
        assert_eq!(
            sys.calls(),
            [Call::Setrlimit(Resource::RLIMIT_NOFILE, 100, 200)]
        );
    }

    #[test]
    fn process_rlimit_above_the_grant_is_refused_before_any_call() {
        let grant = Grant {
            can_raise: false,
            nr_open: 1 << 20,
        };
        let sys = Recorder::with_limits(vec![(Resource::RLIMIT_NOFILE, 1024, 4096)]);
        let p = ProcessBuilder::default()
            .rlimits(vec![limit(PosixRlimitType::RlimitNofile, 8192, 8192)])
            .build()
            .unwrap();
        let e = apply_rlimits_with(&sys, grant, &p).unwrap_err();
        assert!(e.to_string().contains("ulimit nofile"), "{e}");
        assert!(sys.calls().is_empty(), "{:?}", sys.calls());
    }

    #[test]
    fn process_rlimit_grant_names_the_limit_and_the_reason() {
        let plain = Grant {
            can_raise: false,
            nr_open: 1 << 20,
        };
        assert!(plain.check("nofile", 20_000, 20_000).is_ok());
        let e = plain
            .check("nofile", 30_000, 20_000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ulimit nofile") && e.contains("30000") && e.contains("20000"),
            "{e}"
        );
        assert!(e.contains("CAP_SYS_RESOURCE"), "{e}");
        let e = plain
            .check("core", libc::RLIM_INFINITY, 4096)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unlimited"), "{e}");
        // With CAP_SYS_RESOURCE any hard limit, but open files stop at fs.nr_open.
        let root = Grant {
            can_raise: true,
            nr_open: 1 << 20,
        };
        assert!(root.check("nproc", libc::RLIM_INFINITY, 100).is_ok());
        assert!(root.check("nofile", 1 << 20, 1024).is_ok());
        let e = root
            .check("nofile", (1 << 20) + 1, 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fs.nr_open"), "{e}");
    }
}
