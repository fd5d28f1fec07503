//! The kernel calls of the runtime's setup logic, behind a trait (youki's `Syscall`): the
//! logic that decides which calls to make — namespaces to join, the UTS names, resource
//! limits, the supervisor's mount namespace — takes a `&dyn Syscall`, so its unit tests run
//! without root against [`Recorder`], a fake that records every call and can fail one.
//! [`Linux`] makes the calls. Calls that only make sense in a real process (clone, exec,
//! pivot) stay where they are.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;

/// The kernel, as the runtime's setup logic sees it.
pub trait Syscall {
    /// Joins the namespace at `path` (`open` + `setns(fd, ns)`).
    ///
    /// # Errors
    /// The file cannot be opened, or `setns` refuses it.
    fn setns(&self, path: &Path, ns: CloneFlags) -> Result<(), SetnsError>;
    /// `unshare(flags)`.
    ///
    /// # Errors
    /// The kernel's.
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// `mount(source, target, fstype, flags, data)`.
    ///
    /// # Errors
    /// The kernel's.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// `sethostname(name)`.
    ///
    /// # Errors
    /// The kernel's.
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// `setdomainname(name)`.
    ///
    /// # Errors
    /// The kernel's.
    fn setdomainname(&self, name: &str) -> nix::Result<()>;
    /// This process's (soft, hard) limit of `res`.
    ///
    /// # Errors
    /// The kernel's.
    fn getrlimit(&self, res: Resource) -> nix::Result<(u64, u64)>;
    /// `setrlimit(res, soft, hard)`.
    ///
    /// # Errors
    /// The kernel's.
    fn setrlimit(&self, res: Resource, soft: u64, hard: u64) -> nix::Result<()>;
}

/// Why joining a namespace failed.
#[derive(Debug)]
pub enum SetnsError {
    /// The namespace file cannot be opened.
    Open(std::io::Error),
    /// `setns` refused it.
    Join(Errno),
}

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Linux;

impl Syscall for Linux {
    fn setns(&self, path: &Path, ns: CloneFlags) -> Result<(), SetnsError> {
        let file = std::fs::File::open(path).map_err(SetnsError::Open)?;
        nix::sched::setns(&file, ns).map_err(SetnsError::Join)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn setdomainname(&self, name: &str) -> nix::Result<()> {
        rustix::system::setdomainname(name.as_bytes())
            .map_err(|e| Errno::from_raw(e.raw_os_error()))
    }

    fn getrlimit(&self, res: Resource) -> nix::Result<(u64, u64)> {
        nix::sys::resource::getrlimit(res)
    }

    fn setrlimit(&self, res: Resource, soft: u64, hard: u64) -> nix::Result<()> {
        nix::sys::resource::setrlimit(res, soft, hard)
    }
}

/// One call a [`Recorder`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Setns(PathBuf, CloneFlags),
    Unshare(CloneFlags),
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Sethostname(String),
    Setdomainname(String),
    Setrlimit(Resource, u64, u64),
}

/// A fake kernel for unit tests: records every call (reads too, as nothing), answers
/// `getrlimit` from a table, and fails the calls a test asks to fail.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: std::sync::Mutex<Vec<Call>>,
    limits: Vec<(Resource, u64, u64)>,
    fail: Option<fn(&Call) -> Option<Errno>>,
}

impl Recorder {
    /// A recorder whose `getrlimit` answers (soft, hard) from `limits` (others unlimited).
    #[must_use]
    pub fn with_limits(limits: Vec<(Resource, u64, u64)>) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// A recorder that fails each call for which `fail` returns an errno (after recording it).
    #[must_use]
    pub fn failing(fail: fn(&Call) -> Option<Errno>) -> Self {
        Self {
            fail: Some(fail),
            ..Self::default()
        }
    }

    /// The calls so far.
    #[must_use]
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, call: Call) -> nix::Result<()> {
        let failure = self.fail.and_then(|f| f(&call));
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call);
        failure.map_or(Ok(()), Err)
    }
}

impl Syscall for Recorder {
    fn setns(&self, path: &Path, ns: CloneFlags) -> Result<(), SetnsError> {
        self.record(Call::Setns(path.to_path_buf(), ns))
            .map_err(SetnsError::Join)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(Call::Unshare(flags))
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        })
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(Call::Sethostname(name.to_string()))
    }

    fn setdomainname(&self, name: &str) -> nix::Result<()> {
        self.record(Call::Setdomainname(name.to_string()))
    }

    fn getrlimit(&self, res: Resource) -> nix::Result<(u64, u64)> {
        Ok(self
            .limits
            .iter()
            .find(|(r, _, _)| *r == res)
            .map_or((libc::RLIM_INFINITY, libc::RLIM_INFINITY), |(_, s, h)| {
                (*s, *h)
            }))
    }

    fn setrlimit(&self, res: Resource, soft: u64, hard: u64) -> nix::Result<()> {
        self.record(Call::Setrlimit(res, soft, hard))
    }
}
