//! Containers: the store of container records and states under `<root>/containers`, and the
//! per-container supervisor that runs them.
//!
//! A container directory `<root>/containers/<id>/` holds:
//! - `container.json`: the [`Record`] (options, image layers and config) — a create writes
//!   every file into `.creating-<id>-<pid>` and renames that into place, so a container
//!   directory always has its record;
//! - `state.json`: the observed [`state::State`], owned by the supervisor;
//! - `bundle/config.json` (the OCI spec) and `bundle/rootfs` (overlay mount point);
//! - `upper/`, `work/`: the overlay's writable layer; `hosts`, `hostname`, `resolv.conf`;
//! - `container.log` (+ `.1`): the log; `stop-requested`: a stop's intent, read by the
//!   supervisor so the restart policy does not restart a stopped container.
//!
//! Names are reserved atomically as files `<root>/containers/.names/<name>` holding the id.
//! Nothing here forks the calling process: a start spawns tug again (`tug __shim run`, with
//! `posix_spawn`, which shares the caller's memory until the exec instead of copying it),
//! and that process detaches and becomes the supervisor (see [`supervisor`]).

pub mod commit;
pub mod config;
pub mod export;
pub mod logs;
pub mod net;
pub mod spec;
pub mod state;
pub mod supervisor;
pub mod user;
pub mod volumes;

use crate::engine::root::StateRoot;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use config::{
    ContainerConfig, Healthcheck, Mount, MountKind, NetworkMode, Resources, RestartPolicy, Ulimit,
};
pub use state::{Health, HealthStatus, State, Status};

use crate::engine::private;
use crate::engine::runtime::cgroups::{Cgroup, Layout};

/// Errors of the container store.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A container's runtime spec cannot be made from its configuration.
    #[error("invalid container config: {0}")]
    Spec(#[from] spec::SpecError),
    /// A container's user cannot be resolved in its image.
    #[error("invalid container config: {0}")]
    User(#[from] user::UserError),
    /// No container has this name or id (prefix).
    #[error("no such container: {0}")]
    NotFound(String),
    /// An id prefix matches several containers.
    #[error("container id prefix {0} is ambiguous")]
    Ambiguous(String),
    /// The name is taken.
    #[error("the container name {0:?} is already in use by container {1}")]
    NameInUse(String, String),
    /// The options are invalid.
    #[error("invalid container config: {0}")]
    Invalid(String),
    /// The operation needs a running container.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The operation needs a stopped container.
    #[error("container {0} is running: stop it first or use force")]
    Running(String),
    /// Starting failed.
    #[error("cannot start container {id}: {reason}")]
    Start {
        /// The container.
        id: String,
        /// Why.
        reason: String,
    },
    /// A file of the store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record is damaged.
    #[error(
        "container record {path} is damaged ({reason}); the container cannot be used: \
         remove it with `tug container rm -f` and its id or name (`tug rm -f` or `tug down` for \
         a compose service), which ends its processes and deletes its files and links"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] crate::engine::runtime::cgroups::CgroupError),
    /// Unknown signal name or number.
    #[error("invalid signal {0:?}")]
    Signal(String),
    /// Wiring or releasing the container's network failed.
    #[error(transparent)]
    Network(#[from] crate::engine::network::Error),
    /// Making or preparing one of its volumes failed.
    #[error(transparent)]
    Volume(#[from] crate::engine::volume::Error),
    /// Reading its file system (`export`, `commit`) failed.
    #[error(transparent)]
    Export(#[from] export::ExportError),
    /// The image store (`commit`).
    #[error(transparent)]
    Image(#[from] crate::engine::image::Error),
}

/// Result alias of the container store.
pub type Result<T> = std::result::Result<T, ContainerError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The image a container is created from, as the image store resolves it.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// Image id (`sha256:…`).
    pub id: String,
    /// Unpacked layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    /// The image's run defaults.
    pub config: Option<oci_spec::image::Config>,
}

/// What `container.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The id (64 hex digits).
    pub id: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The options.
    pub config: ContainerConfig,
    /// Image layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    /// The image's run defaults.
    pub image_config: Option<oci_spec::image::Config>,
    /// Time spent building the spec, in microseconds.
    #[serde(default)]
    pub spec_us: u64,
}

/// One line of `container ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Image id.
    pub image_id: String,
    /// The command (entrypoint + cmd).
    pub command: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// Status.
    pub state: Status,
    /// Exit code of the last run.
    pub exit_code: Option<i32>,
    /// The last run was OOM-killed.
    pub oom_killed: bool,
    /// Health.
    pub health: HealthStatus,
    /// Host pid of the first process, when running.
    pub pid: Option<i32>,
    /// Last start.
    pub started_at: Option<String>,
    /// Last exit.
    pub finished_at: Option<String>,
    /// Restarts by the policy.
    pub restart_count: u32,
    /// Set when the container's record cannot be read: what is wrong and what to do. The
    /// other fields are what could be recovered (name, labels, state); `rm -f` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

/// Everything about one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inspect {
    /// The summary.
    #[serde(flatten)]
    pub summary: Summary,
    /// The record.
    pub record: Record,
    /// The full state.
    pub state_detail: State,
    /// The container's directory.
    pub dir: PathBuf,
    /// The log file.
    pub log_path: PathBuf,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecOptions {
    /// Command and arguments.
    pub cmd: Vec<String>,
    /// Extra `K=V` environment.
    pub env: Vec<String>,
    /// User (default: the container's).
    pub user: Option<String>,
    /// Working directory (default: the container's).
    pub workdir: Option<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin attached.
    pub interactive: bool,
    /// Do not wait.
    pub detach: bool,
    /// Kill the command after this long (healthchecks).
    pub timeout: Option<Duration>,
    /// `--privileged`: the process gets every capability (bounding, permitted and effective
    /// sets) and no seccomp filter, even in a container that is not privileged; it stays in
    /// the container's namespaces, cgroup (device rules) and mounts.
    pub privileged: bool,
}

/// A started container; for an attached start, [`Started::wait`] returns its exit code.
#[derive(Debug)]
pub struct Started {
    /// Container id.
    pub id: String,
    /// Host pid of its first process.
    pub pid: i32,
    status: Option<BufReader<fs::File>>,
}

impl Started {
    /// Waits for the exit code sent by an attached supervisor (after `--rm` removal).
    pub fn wait(mut self) -> Result<i32> {
        let Some(r) = self.status.as_mut() else {
            return Err(ContainerError::NotRunning(self.id.clone()));
        };
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => {
                    return Err(ContainerError::Start {
                        id: self.id.clone(),
                        reason: "the supervisor ended without reporting the exit code".into(),
                    });
                }
                Ok(_) => {
                    if let Some(c) = line.trim().strip_prefix("exit ") {
                        return Ok(c.parse().unwrap_or(255));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ContainerError::Io {
                        path: PathBuf::from("supervisor status pipe"),
                        source: e,
                    });
                }
            }
        }
    }
}

/// The files the runtime bind-mounts over `/etc` (`hosts`, `hostname`, `resolv.conf`).
const ETC_BINDS: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// Creates the `/etc` bind-mount targets the image lacks as empty files in the container's
/// (not yet mounted) upper layer. Made in the container instead, each costs an overlay
/// create (a temp file in the work dir, a rename, and a copy-up of `/etc`) on the start path.
/// Nothing is made when the image's `/etc` is not a plain directory (a symlink, a whiteout)
/// or already has the file: the runtime then handles the target as before. Best effort.
fn precreate_bind_targets(upper: &Path, layers: &[PathBuf]) {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let mut etc_meta = None;
    let mut missing: Vec<&str> = ETC_BINDS.to_vec();
    // Topmost layer first: the first `etc` found is the one the container sees.
    for layer in layers.iter().rev() {
        if fs::symlink_metadata(layer.join(".wh.etc")).is_ok() {
            break;
        }
        match fs::symlink_metadata(layer.join("etc")) {
            Ok(m) if m.is_dir() => {
                if etc_meta.is_none() {
                    etc_meta = Some(m);
                }
                missing.retain(|f| fs::symlink_metadata(layer.join("etc").join(f)).is_err());
                if fs::symlink_metadata(layer.join("etc/.wh..wh..opq")).is_ok() {
                    break;
                }
            }
            Ok(_) => return,
            Err(_) => {}
        }
    }
    if missing.is_empty() {
        return;
    }
    let etc = upper.join("etc");
    if fs::create_dir(&etc).is_err() {
        return;
    }
    // The merged /etc shows the upper directory's owner and mode: keep the image's.
    if let Some(m) = &etc_meta {
        let _ = fs::set_permissions(&etc, fs::Permissions::from_mode(m.mode() & 0o7777));
        let _ = std::os::unix::fs::lchown(&etc, Some(m.uid()), Some(m.gid()));
    }
    for f in missing {
        let _ = fs::File::create(etc.join(f));
    }
}

unsafe extern "C" {
    /// The process environment (POSIX `environ`), handed to the shim unchanged.
    static environ: *const *const libc::c_char;
}

/// Runs `exe args…` with `status_fd` as its fd 3, `extra_fd` as its fd 4 (and /dev/null as
/// stdio when `null_stdio`;
/// in a new session when `setsid`), through `posix_spawn`: glibc starts the child with
/// `CLONE_VM | CLONE_VFORK`, so nothing of this (possibly large, possibly multi-threaded)
/// process is copied, and only the listed descriptors reach the child (everything else here
/// is close-on-exec).
fn spawn_shim(
    exe: &Path,
    args: &[&std::ffi::OsStr],
    status_fd: std::os::fd::RawFd,
    extra_fd: Option<std::os::fd::RawFd>,
    null_stdio: bool,
    setsid: bool,
) -> std::io::Result<nix::unistd::Pid> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    let cstr = |b: &[u8]| CString::new(b).map_err(std::io::Error::other);
    let path = cstr(exe.as_os_str().as_bytes())?;
    let mut owned = vec![path.clone()];
    for a in args {
        owned.push(cstr(a.as_bytes())?);
    }
    let mut argv: Vec<*mut libc::c_char> = owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let null = c"/dev/null";
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(rc))
        }
    };
    // SAFETY: the file actions and attributes are initialised before use and destroyed on
    // every path; every pointer handed to posix_spawn (path, argv, environ) stays valid for
    // the call.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut fa))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut fa);
            return Err(e);
        }
        let result = (|| {
            // dup2 clears close-on-exec on the new descriptor.
            check(libc::posix_spawn_file_actions_adddup2(
                &mut fa, status_fd, 3,
            ))?;
            // Made after the status pipe, so never fd 3 itself.
            if let Some(fd) = extra_fd {
                check(libc::posix_spawn_file_actions_adddup2(&mut fa, fd, 4))?;
            }
            if null_stdio {
                for (fd, flags) in [
                    (0, libc::O_RDONLY),
                    (1, libc::O_WRONLY),
                    (2, libc::O_WRONLY),
                ] {
                    check(libc::posix_spawn_file_actions_addopen(
                        &mut fa,
                        fd,
                        null.as_ptr(),
                        flags,
                        0,
                    ))?;
                }
            }
            // The supervisor starts with no blocked signals, whatever this thread blocks.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            let mut flags = libc::c_short::try_from(libc::POSIX_SPAWN_SETSIGMASK).unwrap_or(0);
            if setsid {
                flags |= libc::POSIX_SPAWN_SETSID;
            }
            check(libc::posix_spawnattr_setflags(&mut attr, flags))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &fa,
                &attr,
                argv.as_ptr(),
                environ.cast(),
            ))?;
            Ok(nix::unistd::Pid::from_raw(pid))
        })();
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut attr);
        result
    }
}

/// Parses a signal name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal> {
    use std::str::FromStr;
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map_err(|_| ContainerError::Signal(s.to_string()));
    }
    let up = t.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| ContainerError::Signal(s.to_string()))
}

/// The container store at `<root>/containers`.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    root: PathBuf,
    dir: PathBuf,
    exe: PathBuf,
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && n.len() <= 128
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Who still holds a container being retired (see [`ContainerStore::retire_inner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retire {
    /// Another process: wait for the container's supervisor to end first (and end it after
    /// 3 s).
    AfterSupervisorEnds,
    /// The supervisor itself, which keeps the root filesystem mounted and unmounts it later.
    BySupervisor,
    /// Another process, once the exit is recorded; the supervisor may still be unmounting.
    OnceExitRecorded,
}

/// A container retired by [`ContainerStore::retire_stopped`]: its files, still to delete
/// once its supervisor has ended.
#[derive(Debug)]
#[must_use = "the retired container's files are deleted by Retired::purge"]
pub struct Retired {
    trash: Option<PathBuf>,
    supervisor: (Option<i32>, Option<u64>),
}

impl Retired {
    /// Waits for the supervisor to end (ending it after 10 s), then deletes the files. A
    /// command that dies before this leaves trash that the next listing deletes.
    pub fn purge(self) -> Result<()> {
        let (pid, start) = self.supervisor;
        if !state::wait_gone(pid, start, Duration::from_secs(10))
            && let Some(p) = pid
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = state::wait_gone(pid, start, Duration::from_secs(5));
        }
        match &self.trash {
            Some(t) => purge(t),
            None => Ok(()),
        }
    }
}

/// Deletes a retired container directory (see [`ContainerStore::retire`]).
pub fn purge(trash: &Path) -> Result<()> {
    fs::remove_dir_all(trash).or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(io_err(trash)(e))
        }
    })
}

/// A fresh `adjective_name` container name (Docker style).
#[must_use]
pub fn generated_name() -> String {
    const A: &[&str] = &[
        "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nimble", "proud", "quiet", "swift", "tidy", "vivid", "witty", "zesty",
    ];
    const B: &[&str] = &[
        "otter", "heron", "lynx", "panda", "raven", "tapir", "walrus", "yak", "zebra", "koala",
        "badger", "falcon", "gecko", "ibis", "marten", "newt",
    ];
    use rand::Rng as _;
    let mut r = rand::rng();
    format!(
        "{}_{}_{}",
        A[r.random_range(0..A.len())],
        B[r.random_range(0..B.len())],
        r.random_range(0..1000)
    )
}

/// Default /etc/hosts content.
#[must_use]
pub fn default_hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}

/// Default /etc/resolv.conf: the host's without loopback nameservers (unreachable from a
/// container), or public defaults when none remain.
#[must_use]
pub fn default_resolv_conf() -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    let mut servers = 0;
    for l in host.lines() {
        let t = l.trim();
        if let Some(addr) = t.strip_prefix("nameserver") {
            let a = addr.trim();
            if a.starts_with("127.") || a == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(l);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

impl ContainerStore {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<ContainerStore> {
        let root = StateRoot::at(root).map_err(io_err(root))?;
        Self::open_in(&root)
    }

    /// The container store of an opened state root.
    ///
    /// # Errors
    /// The store's directory cannot be made.
    pub fn open_in(root: &StateRoot) -> Result<ContainerStore> {
        let dir = root.containers();
        private::create_dir_all(&dir.join(".names")).map_err(io_err(&dir))?;
        let exe = std::env::var_os("TUG_EXE")
            .map(PathBuf::from)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("tug"));
        Ok(ContainerStore {
            root: root.path().to_path_buf(),
            dir,
            exe,
        })
    }

    /// Uses `exe` as the tug binary re-executed for supervisors and exec helpers.
    #[must_use]
    pub fn with_exe(mut self, exe: PathBuf) -> Self {
        self.exe = exe;
        self
    }

    /// The state root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of container `id`.
    #[must_use]
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn ids(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(std::result::Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect()
    }

    /// Resolves a name, full id or unique id prefix to an id.
    pub fn resolve(&self, key: &str) -> Result<String> {
        if key.is_empty() {
            return Err(ContainerError::NotFound(key.to_string()));
        }
        // A full id needs no listing.
        if key.len() == 64
            && key.bytes().all(|b| b.is_ascii_hexdigit())
            && self.dir.join(key).is_dir()
        {
            return Ok(key.to_string());
        }
        if valid_name(key)
            && let Ok(id) = fs::read_to_string(self.dir.join(".names").join(key))
        {
            let id = id.trim().to_string();
            if !id.is_empty() && self.dir.join(&id).is_dir() {
                return Ok(id);
            }
        }
        let matches: Vec<String> = self
            .ids()
            .into_iter()
            .filter(|i| i.starts_with(key))
            .collect();
        match matches.len() {
            0 => Err(ContainerError::NotFound(key.to_string())),
            1 => Ok(matches.into_iter().next().unwrap_or_default()),
            _ => Err(ContainerError::Ambiguous(key.to_string())),
        }
    }

    /// Whether a container with this name exists (its name is reserved and its record
    /// written): two lookups, where a listing reads every container.
    #[must_use]
    pub fn has_name(&self, name: &str) -> bool {
        valid_name(name)
            && fs::read_to_string(self.dir.join(".names").join(name))
                .is_ok_and(|id| self.dir.join(id.trim()).join("container.json").exists())
    }

    /// Reads the record of `id`.
    pub fn record(&self, id: &str) -> Result<Record> {
        let p = self.dir.join(id).join("container.json");
        let bytes = fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ContainerError::NotFound(id.to_string())
            } else {
                ContainerError::Io {
                    path: p.clone(),
                    source: e,
                }
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt {
            path: p,
            reason: e.to_string(),
        })
    }

    /// The cgroup of container `id`.
    pub fn cgroup(&self, id: &str) -> Result<Cgroup> {
        Ok(Cgroup::new(Layout::detect()?, &spec::cgroup_path(id)))
    }

    /// A fresh container id (64 hex digits), for callers that must know the id before the
    /// container exists (a network namespace named after it): pass it to
    /// [`ContainerStore::create_with_id`].
    #[must_use]
    pub fn new_id() -> String {
        random_hex(32)
    }

    /// Creates a container from `config` and the resolved `image`; returns its id.
    pub fn create(&self, config: ContainerConfig, image: &ImageInfo) -> Result<String> {
        self.create_with_id(&Self::new_id(), config, image)
    }

    /// Creates a container with a given id (from [`ContainerStore::new_id`]).
    pub fn create_with_id(
        &self,
        id: &str,
        mut config: ContainerConfig,
        image: &ImageInfo,
    ) -> Result<String> {
        if id.len() != 64
            || !id.bytes().all(|b| b.is_ascii_hexdigit())
            || self.dir.join(id).exists()
        {
            return Err(ContainerError::Invalid(format!(
                "bad or used container id {id:?}"
            )));
        }
        let id = id.to_string();
        if config.auto_remove && config.restart != RestartPolicy::No {
            return Err(ContainerError::Invalid(
                "conflicting options: auto-remove and a restart policy".into(),
            ));
        }
        if config.runtime.is_some() && config.tty {
            return Err(ContainerError::Invalid(
                "a terminal is not supported with an external runtime".into(),
            ));
        }
        if config.runtime.is_some() && config.init {
            return Err(ContainerError::Invalid(
                "init is not supported with an external runtime".into(),
            ));
        }
        if config.name.is_empty() {
            config.name = generated_name();
        }
        // The image's healthcheck applies unless the container's replaces or disables it.
        let image_hc = self.image_healthcheck(&image.id);
        config.healthcheck =
            config::merge_healthcheck(image_hc.as_ref(), config.healthcheck.take());
        if !valid_name(&config.name) {
            return Err(ContainerError::Invalid(format!(
                "invalid container name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                config.name
            )));
        }
        config.image_id.clone_from(&image.id);
        let name_file = self.dir.join(".names").join(&config.name);
        // Reserve the name; a stale reservation (its container is gone) is taken over.
        let reserve = || {
            private::open_options()
                .write(true)
                .create_new(true)
                .open(&name_file)
        };
        let mut f = match reserve() {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let other = fs::read_to_string(&name_file).unwrap_or_default();
                let other = other.trim();
                if !other.is_empty() && self.dir.join(other).join("container.json").exists() {
                    return Err(ContainerError::NameInUse(
                        config.name.clone(),
                        other.to_string(),
                    ));
                }
                let _ = fs::remove_file(&name_file);
                reserve().map_err(io_err(&name_file))?
            }
            Err(e) => return Err(io_err(&name_file)(e)),
        };
        use std::io::Write as _;
        f.write_all(id.as_bytes()).map_err(io_err(&name_file))?;
        drop(f);
        let dir = self.dir.join(&id);
        let made = match self.make_anonymous_volumes(&mut config, image) {
            Ok(made) => made,
            Err(e) => {
                let _ = fs::remove_file(&name_file);
                return Err(e);
            }
        };
        let result = self.create_in(&id, &dir, &config, image);
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
            let _ = fs::remove_file(&name_file);
            self.remove_anonymous_volumes(&made);
        }
        result.map(|()| id)
    }

    fn create_in(
        &self,
        id: &str,
        dir: &Path,
        config: &ContainerConfig,
        image: &ImageInfo,
    ) -> Result<()> {
        // Everything is written into a staging directory named after this process, which
        // becomes the container's directory with one rename once its record is in it: a
        // container directory is always complete, and a create killed half-way leaves only
        // `.creating-<id>-<pid>`, which `list` deletes once that process is gone. Files in the
        // staging directory need no temp-and-rename of their own.
        let staging = self
            .dir
            .join(format!(".creating-{id}-{}", std::process::id()));
        // The container's directory, `bundle/` and `work/` are private (`0700`); `upper/` is
        // the container's `/` and `bundle/rootfs` its mount point: their modes are what the
        // container sees (the directory above keeps other users out).
        private::create_dir(&staging).map_err(io_err(&staging))?;
        for d in ["bundle", "work"] {
            let p = staging.join(d);
            private::create_dir(&p).map_err(io_err(&p))?;
        }
        for d in ["bundle/rootfs", "upper"] {
            let p = staging.join(d);
            fs::create_dir(&p).map_err(io_err(&p))?;
        }
        let result = self.write_new(id, &staging, dir, config, image);
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    /// Writes the files of a new container into `staging` (which will be `dir`) and renames it.
    fn write_new(
        &self,
        id: &str,
        staging: &Path,
        dir: &Path,
        config: &ContainerConfig,
        image: &ImageInfo,
    ) -> Result<()> {
        let t0 = Instant::now();
        let user_spec = config
            .user
            .clone()
            .or_else(|| image.config.as_ref().and_then(|c| c.user().clone()))
            .unwrap_or_default();
        let user = user::resolve_in_layers(&user_spec, &config.group_add, &image.layers)?;
        let joined = match &config.network {
            NetworkMode::Container(other) => Some(self.netns_of(other)?),
            _ => None,
        };
        let mut spec = spec::build(&spec::SpecInput {
            id,
            config,
            image: image.config.as_ref(),
            user: &user,
            state_dir: dir,
            joined_netns: joined,
        })?;
        if let Some(p) = spec.process() {
            crate::engine::runtime::process::check_rlimits(p)
                .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        }
        // The labels travel in the runtime spec's annotations too (as OCI runtimes expect
        // them): should the record be damaged, they still say which project and service the
        // container belongs to, so `ps` lists it and `down` removes it.
        let mut annotations = spec.annotations().clone().unwrap_or_default();
        for (k, v) in &config.labels {
            annotations.entry(k.clone()).or_insert_with(|| v.clone());
        }
        spec.set_annotations(Some(annotations));
        let spec_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(0);
        // An auto-removed container does not outlive its run: its files skip the fsync
        // (a power loss leaves garbage that `list` removes, never a half-written file).
        let sync = !config.auto_remove;
        let hostname = spec.hostname().clone().unwrap_or_default();
        let files = [
            ("hostname", format!("{hostname}\n")),
            (
                "hosts",
                config
                    .etc_hosts
                    .clone()
                    .unwrap_or_else(|| default_hosts(&hostname)),
            ),
            (
                "resolv.conf",
                config
                    .resolv_conf
                    .clone()
                    .unwrap_or_else(default_resolv_conf),
            ),
        ];
        let write_mode = |name: &str, bytes: &[u8], mode: u32| -> Result<()> {
            let p = staging.join(name);
            private::write_new(&p, bytes, mode, sync).map_err(io_err(&p))
        };
        let write = |name: &str, bytes: &[u8]| write_mode(name, bytes, private::FILE_MODE);
        // Bound into the container, read by every user in it.
        for (f, content) in files {
            write_mode(f, content.as_bytes(), private::SHARED_FILE_MODE)?;
        }
        let spec_json = serde_json::to_vec_pretty(&spec).map_err(|e| ContainerError::Corrupt {
            path: dir.join("bundle/config.json"),
            reason: e.to_string(),
        })?;
        write("bundle/config.json", &spec_json)?;
        // No state.json yet: a missing state reads as `created` (see `state::read`).
        precreate_bind_targets(&staging.join("upper"), &image.layers);
        let rec = Record {
            id: id.to_string(),
            created: state::now(),
            config: config.clone(),
            layers: image.layers.clone(),
            image_config: image.config.clone(),
            spec_us,
        };
        let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| ContainerError::Corrupt {
            path: dir.join("container.json"),
            reason: e.to_string(),
        })?;
        write("container.json", &bytes)?;
        fs::rename(staging, dir).map_err(io_err(dir))
    }

    /// The `Healthcheck` of image `image_id` (`sha256:…`), read from its raw config blob in
    /// the image store's OCI layout (`<root>/images/blobs/sha256/<hex>`): oci-spec's image
    /// config does not model it.
    pub fn image_healthcheck(&self, image_id: &str) -> Option<Healthcheck> {
        let hex = image_id.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let blob = fs::read(self.root.join("images/blobs/sha256").join(hex)).ok()?;
        config::image_healthcheck(&blob)
    }

    /// The network namespace path of a running container (`network: container:<id>`).
    pub fn netns_of(&self, key: &str) -> Result<PathBuf> {
        let id = self.resolve(key)?;
        let st = state::observe(&self.dir.join(&id));
        match (st.status, st.pid) {
            (Status::Running | Status::Paused, Some(pid)) => {
                Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
            }
            _ => Err(ContainerError::NotRunning(key.to_string())),
        }
    }

    /// The observed state of `id` (paused is read from the freezer).
    pub fn state(&self, id: &str) -> State {
        let mut st = state::observe(&self.dir.join(id));
        if st.status == Status::Running && self.cgroup(id).is_ok_and(|c| c.is_frozen()) {
            st.status = Status::Paused;
        }
        st
    }

    /// Starts container `key`. With `attach`, the supervisor takes this process's stdio and
    /// reports the exit code through [`Started::wait`].
    pub fn start(&self, key: &str, attach: bool) -> Result<Started> {
        let id = self.resolve(key)?;
        let dir = self.dir.join(&id);
        let st = self.state(&id);
        if matches!(
            st.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            return Err(ContainerError::Start {
                id,
                reason: "it is already running".into(),
            });
        }
        // A supervisor still finishing the previous run must be gone first.
        let _ = state::wait_gone(
            st.supervisor_pid,
            st.supervisor_start,
            Duration::from_secs(5),
        );
        let _ = fs::remove_file(dir.join("stop-requested"));
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
            ContainerError::Start {
                id: id.clone(),
                reason: format!("pipe: {e}"),
            }
        })?;
        let mut args: Vec<&std::ffi::OsStr> = vec![
            crate::engine::helpers::SHIM.as_ref(),
            "run".as_ref(),
            self.root.as_os_str(),
            id.as_ref(),
        ];
        if attach {
            // The caller waits for the exit anyway: the shim starts in a session of its own
            // and is the supervisor itself (no fork). It stays this process's child; it is
            // reparented when this process exits, or reaped as a zombie by a long-lived one.
            args.push("--attach".as_ref());
        }
        // The built-in runtime's cgroup is made here while the shim starts (exec, reading
        // the bundle, mounting the overlay), and the supervisor is told over a pipe (its
        // fd 4) that it need not make it; a supervisor that reads no `c` makes it itself.
        let rec = self.record(&id)?;
        let cg_pipe = if rec.config.runtime.is_none() {
            Some(
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
                    ContainerError::Start {
                        id: id.clone(),
                        reason: format!("pipe: {e}"),
                    }
                })?,
            )
        } else {
            None
        };
        // fd 3 of the child is set first: the pipe's end must not be 3 itself.
        let cg_pipe = match cg_pipe {
            Some((r, w2)) if r.as_raw_fd() <= 4 => {
                match nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)) {
                    // SAFETY: fcntl just returned this new descriptor.
                    Ok(fd) => Some((
                        unsafe {
                            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                        },
                        w2,
                    )),
                    Err(_) => None,
                }
            }
            other => other,
        };
        let extra = cg_pipe.as_ref().map(|(r, _)| r.as_raw_fd());
        if extra.is_some() {
            args.push("--cgroup-pipe".as_ref());
        }
        let child =
            spawn_shim(&self.exe, &args, w.as_raw_fd(), extra, !attach, attach).map_err(|e| {
                ContainerError::Start {
                    id: id.clone(),
                    reason: format!("cannot run {}: {e}", self.exe.display()),
                }
            })?;
        drop(w);
        let mut made_cgroup = false;
        if let Some((r, cg_w)) = cg_pipe {
            drop(r);
            if self.prepare_cgroup(&id, &dir) {
                made_cgroup = true;
                let _ = std::io::Write::write_all(&mut fs::File::from(cg_w), b"c");
            }
        }
        if !attach {
            // The first shim process forks the supervisor and exits at once.
            let _ = nix::sys::wait::waitpid(child, None);
        }
        let mut reader = BufReader::new(fs::File::from(r));
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let line = line.trim();
        if let Some(pid) = line.strip_prefix("ok ") {
            return Ok(Started {
                id,
                pid: pid.parse().unwrap_or(0),
                status: attach.then_some(reader),
            });
        }
        let reason = line.strip_prefix("err ").map_or_else(
            || "the supervisor exited without a report".to_string(),
            str::to_string,
        );
        if made_cgroup && let Ok(cg) = self.cgroup(&id) {
            let _ = cg.destroy();
        }
        Err(ContainerError::Start { id, reason })
    }

    /// Makes the cgroup of container `id` with the limits of its bundle's spec; false when
    /// anything fails (the supervisor then makes it and reports the error).
    fn prepare_cgroup(&self, id: &str, dir: &Path) -> bool {
        let Ok(bytes) = fs::read(dir.join("bundle/config.json")) else {
            return false;
        };
        let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(&bytes) else {
            return false;
        };
        let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
        self.cgroup(id)
            .is_ok_and(|cg| cg.create(resources.as_ref()).is_ok())
    }

    /// Sends `signal` to the container's first process.
    pub fn kill(&self, key: &str, signal: &str) -> Result<()> {
        let id = self.resolve(key)?;
        let sig = parse_signal(signal)?;
        let st = self.state(&id);
        if !matches!(st.status, Status::Running | Status::Paused)
            || !state::alive(st.pid, st.pid_start)
        {
            return Err(ContainerError::NotRunning(key.to_string()));
        }
        let pid = nix::unistd::Pid::from_raw(st.pid.unwrap_or(0));
        nix::sys::signal::kill(pid, sig).map_err(|e| ContainerError::Io {
            path: PathBuf::from(format!("/proc/{pid}")),
            source: std::io::Error::from(e),
        })
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout` (default: the
    /// container's stop_grace_period, else 10 s). The restart policy does not restart it.
    /// Returns once the supervisor has recorded the exit.
    pub fn stop(&self, key: &str, timeout: Option<Duration>) -> Result<()> {
        let id = self.resolve(key)?;
        self.stop_process(&id, timeout)?;
        self.settle(&id);
        Ok(())
    }

    /// [`ContainerStore::stop`] without the wait for the exit record: returns as soon as the
    /// container's processes are gone. Its supervisor records the exit a moment later (after
    /// reaping it and syncing the record); [`ContainerStore::retire_stopped`] waits for that.
    /// For callers that remove the container next (`down`), where the stop of one container
    /// holds up the stop of the next.
    pub fn stop_process(&self, key: &str, timeout: Option<Duration>) -> Result<()> {
        let id = self.resolve(key)?;
        let dir = self.dir.join(&id);
        // A damaged record does not keep a container from being stopped: the defaults apply.
        let rec = self.record(&id).ok();
        // Read by the supervisor (no restart) while this command runs: it must be visible,
        // not durable, so no fsync (a stop chain of `down` pays it once per container).
        let _ = state::write_atomic_sync(&dir.join("stop-requested"), b"1", false);
        let st = self.state(&id);
        if !matches!(
            st.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            return Ok(());
        }
        if st.status == Status::Paused {
            let _ = self.cgroup(&id)?.freeze(false);
        }
        let sig_name = rec
            .as_ref()
            .and_then(|rec| {
                rec.config.stop_signal.clone().or_else(|| {
                    rec.image_config
                        .as_ref()
                        .and_then(|c| c.stop_signal().clone())
                })
            })
            .unwrap_or_else(|| "SIGTERM".to_string());
        let sig = parse_signal(&sig_name)?;
        let timeout = timeout
            .or(rec.as_ref().and_then(|r| r.config.stop_grace_period))
            .unwrap_or(Duration::from_secs(10));
        let pid = nix::unistd::Pid::from_raw(st.pid.unwrap_or(0));
        if state::alive(st.pid, st.pid_start) {
            let _ = nix::sys::signal::kill(pid, sig);
        }
        if !state::wait_gone(st.pid, st.pid_start, timeout) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = state::wait_gone(st.pid, st.pid_start, Duration::from_secs(10));
        }
        Ok(())
    }

    /// Waits for the supervisor to record the exit; repairs the record when it is gone.
    fn settle(&self, id: &str) {
        let dir = self.dir.join(id);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pause = Duration::from_micros(250);
        loop {
            let st = state::read(&dir);
            let sup = state::alive(st.supervisor_pid, st.supervisor_start);
            // The supervisor has recorded the exit; what it still does (unmounting the root
            // filesystem, which syncs the upper layer's filesystem) need not hold up the
            // caller: `start` and `remove` wait for the supervisor to be gone themselves.
            if sup
                && matches!(st.status, Status::Exited | Status::Dead)
                && !state::alive(st.pid, st.pid_start)
            {
                return;
            }
            if !sup {
                let mut fixed = state::observe(&dir);
                if fixed != st {
                    fixed.pid = None;
                    fixed.finished_at.get_or_insert_with(state::now);
                    let _ = state::write(&dir, &fixed);
                }
                if let Ok(cg) = self.cgroup(id) {
                    let _ = cg.destroy();
                }
                return;
            }
            if Instant::now() >= deadline {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state::alive(st.pid, st.pid_start) {
                // The supervisor records the exit and then exits itself.
                let _ = state::wait_gone(st.supervisor_pid, st.supervisor_start, left);
            } else {
                // The process is gone and the supervisor is about to record it: it does so
                // right after reaping, but exits only after unmounting the root filesystem
                // (tens of milliseconds more), so look again shortly rather than wait for
                // the supervisor to end.
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(1));
            }
        }
    }

    /// Waits until the container is not running; returns its exit code. Woken by a pidfd
    /// when the process exits and by inotify when the supervisor records it (or a restart).
    pub fn wait(&self, key: &str, timeout: Option<Duration>) -> Result<Option<i32>> {
        let id = self.resolve(key)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        // Made only when a look must wait for the record to change: closing an inotify
        // instance that watched something costs 10-20 ms (an RCU grace period).
        let mut watch: Option<Option<state::Watch>> = None;
        loop {
            let st = self.state(&id);
            if !matches!(
                st.status,
                Status::Running | Status::Paused | Status::Restarting
            ) {
                return Ok(st.exit_code);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(ContainerError::Running(id));
            }
            let left = deadline.map_or(Duration::from_secs(3600), |d| d - now);
            if state::alive(st.pid, st.pid_start) {
                if state::wait_gone(st.pid, st.pid_start, left) {
                    self.settle(&id);
                }
            } else {
                // Restarting, or the record is about to change: the next state file. A watch
                // made only now may have missed the change: look again at once.
                match &watch {
                    None => watch = Some(state::Watch::states(&[self.dir.join(&id)])),
                    Some(Some(w)) => w.wait(left.min(Duration::from_millis(250))),
                    Some(None) => std::thread::sleep(left.min(Duration::from_millis(20))),
                }
            }
        }
    }

    /// Removes a container; `force` kills it first if it runs.
    pub fn remove(&self, key: &str, force: bool) -> Result<()> {
        let id = self.resolve(key)?;
        let st = self.state(&id);
        if matches!(
            st.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            if !force {
                return Err(ContainerError::Running(id));
            }
            self.stop(&id, Some(Duration::ZERO))?;
        }
        self.remove_files(&id)
    }

    /// Removes the directory, cgroup and name of `id` (the container no longer runs).
    pub fn remove_files(&self, id: &str) -> Result<()> {
        if let Some(trash) = self.retire(id)? {
            purge(&trash)?;
        }
        Ok(())
    }

    /// The part of [`ContainerStore::remove_files`] that makes the container gone: cgroup,
    /// network, name, record, and its directory renamed to `.trash-<id>-<pid>` (one rename,
    /// so a `run --rm` reports the exit without waiting for the tree to be deleted). Returns
    /// the trash to [`purge`]; `list` purges trash whose process died.
    pub fn retire(&self, id: &str) -> Result<Option<PathBuf>> {
        self.retire_inner(id, Retire::AfterSupervisorEnds)
    }

    /// [`ContainerStore::retire`] for the container's own supervisor, which holds the root
    /// filesystem mount in its private namespace and unmounts it from the trash afterwards:
    /// a detaching unmount waits for an RCU grace period (about 2 ms), which is better spent
    /// after the exit has been reported.
    pub(crate) fn retire_keeping_mount(&self, id: &str) -> Result<Option<PathBuf>> {
        self.retire_inner(id, Retire::BySupervisor)
    }

    /// Retires a container that no longer runs as soon as its exit is recorded, without
    /// waiting for its supervisor to end: what the supervisor still does then is unmount the
    /// root filesystem, and the last unmount of an overlay syncs the whole filesystem under
    /// its upper layer (milliseconds, or far more when other writes are pending). The
    /// container is gone when this returns; [`Retired::purge`] waits for the supervisor and
    /// deletes the files. A container that still runs is retired the usual way.
    pub fn retire_stopped(&self, key: &str) -> Result<Retired> {
        let id = self.resolve(key)?;
        self.settle(&id);
        let st = state::read(&self.dir.join(&id));
        let trash = if matches!(
            st.status,
            Status::Running | Status::Paused | Status::Restarting
        ) {
            self.retire_inner(&id, Retire::AfterSupervisorEnds)?
        } else {
            self.retire_inner(&id, Retire::OnceExitRecorded)?
        };
        Ok(Retired {
            trash,
            supervisor: (st.supervisor_pid, st.supervisor_start),
        })
    }

    fn retire_inner(&self, id: &str, how: Retire) -> Result<Option<PathBuf>> {
        let dir = self.dir.join(id);
        let st = state::read(&dir);
        if how == Retire::AfterSupervisorEnds
            && state::alive(st.supervisor_pid, st.supervisor_start)
            && st.supervisor_pid != Some(std::process::id() as i32)
        {
            let _ = state::wait_gone(
                st.supervisor_pid,
                st.supervisor_start,
                Duration::from_secs(3),
            );
            if let Some(p) = st.supervisor_pid
                && state::alive(st.supervisor_pid, st.supervisor_start)
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Ok(cg) = self.cgroup(id) {
            cg.destroy()?;
        }
        match self.record(id) {
            Ok(rec) => {
                if rec.config.network_owned {
                    crate::engine::network::Networks::open(&self.root)?.disconnect_all(id)?;
                }
                let nf = self.dir.join(".names").join(&rec.config.name);
                if fs::read_to_string(&nf).is_ok_and(|s| s.trim() == id) {
                    let _ = fs::remove_file(&nf);
                }
            }
            Err(_) => {
                // A damaged record: what it would say is found by the names things follow.
                // The namespace keyed by the id (a `container run`'s), and every name that
                // points to the id.
                let nets = crate::engine::network::Networks::open(&self.root)?;
                if self.root.join("netns").join(id).exists() {
                    nets.disconnect_all(id)?;
                }
                for (owner, name) in self.names_by_id() {
                    if owner == id {
                        let _ = fs::remove_file(self.dir.join(".names").join(name));
                    }
                }
            }
        }
        if how != Retire::BySupervisor {
            let rootfs = dir.join("bundle/rootfs");
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        // One rename makes the container gone (a trash directory is no container); only
        // where that fails is the record dropped instead, which makes it garbage too.
        let trash = self.dir.join(format!(".trash-{id}-{}", std::process::id()));
        match fs::rename(&dir, &trash) {
            Ok(()) => Ok(Some(trash)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(_) => {
                let _ = fs::remove_file(dir.join("container.json"));
                Ok(Some(dir))
            }
        }
    }

    /// Deletes trash left by removals whose process died before deleting it.
    fn purge_stale_trash(&self) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.filter_map(std::result::Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            // `.trash-<id>-<pid>` (a removal) and `.creating-<id>-<pid>` (a create killed
            // before its directory got its name) belong to their process while it lives.
            let Some(rest) = name
                .strip_prefix(".trash-")
                .or_else(|| name.strip_prefix(".creating-"))
            else {
                continue;
            };
            let owner_alive = rest
                .rsplit_once('-')
                .and_then(|(_, p)| p.parse::<i32>().ok())
                .is_some_and(|pid| {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
                });
            if !owner_alive {
                let _ = purge(&e.path());
            }
        }
    }

    fn summary(&self, rec: &Record, st: &State) -> Summary {
        Summary {
            id: rec.id.clone(),
            name: rec.config.name.clone(),
            image: rec.config.image.clone(),
            image_id: rec.config.image_id.clone(),
            command: spec::command(&rec.config, rec.image_config.as_ref()),
            labels: rec.config.labels.clone(),
            created: rec.created.clone(),
            state: st.status,
            exit_code: st.exit_code,
            oom_killed: st.oom_killed,
            health: st.health.as_ref().map_or(HealthStatus::None, |h| h.status),
            pid: if matches!(st.status, Status::Running | Status::Paused) {
                st.pid
            } else {
                None
            },
            started_at: st.started_at.clone(),
            finished_at: st.finished_at.clone(),
            restart_count: st.restart_count,
            damaged: None,
        }
    }

    /// Every container (`all == false`: only running ones), oldest first. A container whose
    /// record cannot be read is listed as damaged ([`Summary::damaged`]); one whose
    /// supervisor died while it ran is recovered on the way ([`ContainerStore::recover`]).
    /// A record-less directory left by an older tug's killed create (its `creator` process
    /// gone) is removed.
    pub fn list(&self, all: bool) -> Result<Vec<Summary>> {
        self.purge_stale_trash();
        let mut out = Vec::new();
        let mut names: Option<BTreeMap<String, String>> = None;
        for id in self.ids() {
            let dir = self.dir.join(&id);
            let rec = match self.record(&id) {
                Ok(rec) => rec,
                Err(e) => {
                    let creator_gone = fs::read_to_string(dir.join("creator"))
                        .ok()
                        .and_then(|p| p.trim().parse::<i32>().ok())
                        .is_some_and(|pid| {
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
                        });
                    if creator_gone && !dir.join("container.json").exists() {
                        let _ = fs::remove_dir_all(&dir);
                        continue;
                    }
                    let names = names.get_or_insert_with(|| self.names_by_id());
                    let d = self.damaged_summary(&id, &e, names);
                    if all || d.pid.is_some() {
                        out.push(d);
                    }
                    continue;
                }
            };
            if let Some(what) = state::damage(&dir) {
                let mut d = self.summary(&rec, &State::default());
                d.state = Status::Dead;
                d.damaged = Some(what);
                out.push(d);
                continue;
            }
            let mut st = self.state(&id);
            if self.supervisor_died(&st) {
                self.recover(&id, &rec);
                st = self.state(&id);
            }
            if all
                || matches!(
                    st.status,
                    Status::Running | Status::Paused | Status::Restarting
                )
            {
                out.push(self.summary(&rec, &st));
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(out)
    }

    /// Container id → name, from the name reservations.
    fn names_by_id(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(rd) = fs::read_dir(self.dir.join(".names")) {
            for e in rd.flatten() {
                if let Ok(id) = fs::read_to_string(e.path()) {
                    out.insert(
                        id.trim().to_string(),
                        e.file_name().to_string_lossy().into_owned(),
                    );
                }
            }
        }
        out
    }

    /// What can be said of a container whose record cannot be read: its name (from the name
    /// reservations), its labels (kept in its runtime spec's annotations), its state.
    fn damaged_summary(
        &self,
        id: &str,
        err: &ContainerError,
        names: &BTreeMap<String, String>,
    ) -> Summary {
        let dir = self.dir.join(id);
        let st = state::observe(&dir);
        let labels: BTreeMap<String, String> = fs::read(dir.join("bundle/config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<oci_spec::runtime::Spec>(&b).ok())
            .and_then(|spec| spec.annotations().clone())
            .map(|a| {
                a.into_iter()
                    .filter(|(k, _)| !k.starts_with("tug."))
                    .collect()
            })
            .unwrap_or_default();
        let damaged = match err {
            ContainerError::NotFound(_) => ContainerError::Corrupt {
                path: dir.join("container.json"),
                reason: "the file is missing".into(),
            }
            .to_string(),
            e => e.to_string(),
        };
        let alive = state::alive(st.pid, st.pid_start);
        Summary {
            id: id.to_string(),
            name: names
                .get(id)
                .cloned()
                .unwrap_or_else(|| id.chars().take(12).collect()),
            image: String::new(),
            image_id: String::new(),
            command: Vec::new(),
            labels,
            created: st.started_at.clone().unwrap_or_default(),
            state: Status::Dead,
            exit_code: st.exit_code,
            oom_killed: st.oom_killed,
            health: HealthStatus::None,
            pid: if alive { st.pid } else { None },
            started_at: st.started_at,
            finished_at: st.finished_at,
            restart_count: st.restart_count,
            damaged: Some(damaged),
        }
    }

    /// Whether the state says the container runs while its supervisor is gone (killed, or
    /// OOM-killed): nothing holds its output, runs its healthchecks or restarts it any more.
    fn supervisor_died(&self, st: &State) -> bool {
        matches!(
            st.status,
            Status::Running | Status::Paused | Status::Restarting
        ) && st.supervisor_pid.is_some()
            && !state::alive(st.supervisor_pid, st.supervisor_start)
    }

    /// Recovers a container whose supervisor died while it ran (see
    /// [`ContainerStore::supervisor_died`]), as the next command that lists it: ends what is
    /// left of it (an unsupervised process would run on with its output going nowhere and
    /// `ps` showing a health nobody checks), records the exit with the reason, and applies
    /// its restart policy (a new supervisor starts it again) or, for `--rm`, removes it. One
    /// command does it (a lock in the container's directory); the others go on.
    pub fn recover(&self, id: &str, rec: &Record) {
        let dir = self.dir.join(id);
        let Ok(file) = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".recover.lock"))
        else {
            return;
        };
        let Ok(_lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        else {
            return;
        };
        // Looked at again under the lock: another command may have recovered it already.
        let mut st = state::read(&dir);
        if !self.supervisor_died(&st) {
            return;
        }
        if let Ok(cg) = self.cgroup(id) {
            let _ = cg.freeze(false);
        }
        let was_running = state::alive(st.pid, st.pid_start);
        if let Some(p) = st.pid.filter(|_| was_running) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = state::wait_gone(st.pid, st.pid_start, Duration::from_secs(5));
        }
        // Whatever else is left in its cgroup.
        if let Ok(cg) = self.cgroup(id) {
            let _ = cg.destroy();
        }
        st.status = Status::Exited;
        if was_running || st.exit_code.is_none() {
            st.exit_code = Some(137);
        }
        st.error = Some(
            "its supervisor died while it ran (killed?): tug ended the container and applied \
             its restart policy"
                .into(),
        );
        st.pid = None;
        st.pid_start = None;
        st.finished_at = Some(state::now());
        if let Some(h) = &mut st.health {
            h.status = HealthStatus::Unhealthy;
        }
        let stopped = dir.join("stop-requested").exists();
        let restart = !stopped
            && match &rec.config.restart {
                RestartPolicy::No => false,
                RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                RestartPolicy::OnFailure { max_retries } => {
                    max_retries.is_none_or(|m| st.restart_count < m)
                }
            };
        if restart {
            st.restart_count += 1;
        }
        let _ = state::write(&dir, &st);
        if rec.config.auto_remove {
            let _ = self.remove_files(id);
        } else if restart {
            let _ = self.start(id, false);
        }
    }

    /// Everything about container `key`.
    pub fn inspect(&self, key: &str) -> Result<Inspect> {
        let id = self.resolve(key)?;
        let rec = self.record(&id)?;
        let st = self.state(&id);
        let dir = self.dir.join(&id);
        Ok(Inspect {
            summary: self.summary(&rec, &st),
            record: rec,
            state_detail: st,
            log_path: dir.join("container.log"),
            dir,
        })
    }

    /// The log file of container `key`.
    pub fn log_path(&self, key: &str) -> Result<PathBuf> {
        let id = self.resolve(key)?;
        Ok(self.dir.join(id).join("container.log"))
    }

    /// Freezes (`true`) or thaws the container's processes.
    pub fn pause(&self, key: &str, paused: bool) -> Result<()> {
        let id = self.resolve(key)?;
        let st = self.state(&id);
        match (st.status, paused) {
            (Status::Running, true) | (Status::Paused, false) => {}
            (Status::Paused, true) => {
                return Err(ContainerError::Invalid(format!(
                    "container {key} is already paused"
                )));
            }
            (Status::Running, false) => {
                return Err(ContainerError::Invalid(format!(
                    "container {key} is not paused"
                )));
            }
            _ => return Err(ContainerError::NotRunning(key.to_string())),
        }
        Ok(self.cgroup(&id)?.freeze(paused)?)
    }

    /// The processes of a running container: (pid, uid, command line).
    pub fn top(&self, key: &str) -> Result<Vec<(i32, u32, String)>> {
        let id = self.resolve(key)?;
        let st = self.state(&id);
        if !matches!(st.status, Status::Running | Status::Paused) {
            return Err(ContainerError::NotRunning(key.to_string()));
        }
        let mut out = Vec::new();
        let mut pids = self.cgroup(&id)?.pids();
        pids.sort_unstable();
        for pid in pids {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = cmdline
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let uid = fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|u| u.split_whitespace().next().and_then(|x| x.parse().ok()))
                })
                .unwrap_or(0);
            out.push((pid, uid, cmd));
        }
        Ok(out)
    }

    /// Runs a command in a running container (a re-executed, single-threaded tug joins its
    /// namespaces). Inherits this process's stdio; returns the command's exit code.
    pub fn exec(&self, key: &str, opts: &ExecOptions) -> Result<i32> {
        let id = self.resolve(key)?;
        let st = self.state(&id);
        if st.status != Status::Running {
            return Err(ContainerError::NotRunning(key.to_string()));
        }
        if opts.cmd.is_empty() {
            return Err(ContainerError::Invalid("exec needs a command".into()));
        }
        let json =
            serde_json::to_string(opts).map_err(|e| ContainerError::Invalid(e.to_string()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg(crate::engine::helpers::SHIM)
            .arg("exec")
            .arg(&self.root)
            .arg(&id)
            .arg(json);
        if !opts.interactive && !opts.tty {
            cmd.stdin(Stdio::null());
        }
        let status = cmd.status().map_err(|e| ContainerError::Start {
            id: id.clone(),
            reason: format!("cannot run {}: {e}", self.exe.display()),
        })?;
        Ok(status.code().unwrap_or(255))
    }

    /// Copies `src` (a path inside the container when `into` is false, on the host otherwise)
    /// to `dest` through a tar stream handled by a helper inside the container's mount
    /// namespace.
    pub fn copy(&self, key: &str, src: &Path, dest: &Path, into: bool) -> Result<()> {
        let id = self.resolve(key)?;
        let st = self.state(&id);
        if !matches!(st.status, Status::Running | Status::Paused) {
            return Err(ContainerError::NotRunning(key.to_string()));
        }
        supervisor::copy(&self.exe, &self.root, &id, src, dest, into)
    }

    /// Writes container `key`'s root filesystem — image layers and its changes, without
    /// volumes, bind mounts or tmpfs — to `w` as a tar stream (see [`export`]), running or
    /// not. Returns `w`.
    pub fn export<W: std::io::Write>(&self, key: &str, w: W) -> Result<W> {
        let id = self.resolve(key)?;
        let rec = self.record(&id)?;
        let upper = self.dir.join(&id).join("upper");
        Ok(export::rootfs_to_tar(&rec.layers, &upper, w)?.0)
    }
}
