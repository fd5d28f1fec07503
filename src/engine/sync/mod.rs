//! Host files mirrored into a running container's file system, from the host side.
//!
//! `develop.watch` sync writes straight into the container's root as its processes see it:
//! the root directory of the container's first process (`/proc/<pid>/root`, opened through a
//! pidfd so a reused pid is never taken for the container's) is held as a descriptor, and
//! every path below it is resolved inside it with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` ([`inroot`]). A lookup from that descriptor crosses the mounts of
//! the container's own mount namespace, so a target under a volume, a bind mount or a tmpfs
//! lands where the container reads it, and a symlink the container made (`/app -> /`,
//! `-> ../../..`, `-> /host/path`) resolves inside the container, never on the host. No
//! process runs in the container: images without a shell, `tar` or `rm` (a static binary
//! alone) receive syncs all the same.
//!
//! How each write is made:
//! - a file is written to a new temporary name (`O_CREAT | O_EXCL | O_NOFOLLOW`) in its
//!   resolved parent directory, given its owner, mode and modification time, and renamed over
//!   the old name: the container never reads half a file, and whatever was at the name (a
//!   symlink, a device node, a FIFO the container made) is replaced, never opened. Only a
//!   name that is a mount point (a file bind-mounted there) is written in place, after
//!   checking through an `O_PATH` descriptor that it is a regular file;
//! - missing directories are made one component at a time with `mkdirat` in the directory
//!   just resolved and opened with `O_NOFOLLOW`;
//! - a removal uses `unlinkat` in the resolved parent; a directory is emptied through
//!   descriptors (`O_NOFOLLOW`), never crossing into another mount (a volume under it keeps
//!   its data);
//! - nothing is written on kernel interface file systems (procfs, sysfs, cgroupfs, …): from
//!   the host, a sysctl file there would be the host's;
//! - what a sync creates belongs to the container's process user (the image's `USER` or the
//!   service's `user:`), as if the container had written it; modes come from the host file,
//!   without set-ID bits.
//!
//! [`Container::compare_rule`] compares by content (size, mode, then bytes; not modification
//! times, which differ between a build and the host) and writes only what differs: it is the
//! initial sync, the catch-up after an inotify queue overflow or a restart, and the sync made
//! before a container's process starts ([`sync_at_start`]). Files are written in parallel
//! once their directories exist.
//!
//! A whole comparison also removes what the host deleted while no event said so (the queue
//! overflowed, the container was stopped). What is in the container and not on the host is
//! not enough to go by: the image and the container's processes make files under a target
//! that the host never had (`node_modules` installed by the Dockerfile, generated files,
//! caches), and removing them would break the container. So a comparison is given what the
//! host had when the container was last synced ([`Seen`], recorded per container in
//! [`SEEN_FILE`]) and removes what of that is gone from the host — only paths the rule covers
//! (never an ignored one), looked up beneath the target without following any link, and a
//! directory only once it is empty; nothing when the host's tree could not be read whole.

pub mod filter;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{Read as _, Seek as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, ResolveFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, unlinkat};
use serde::{Deserialize, Serialize};

pub use filter::Filter;

use crate::engine::container::{ContainerStore, Status, state};
use crate::engine::runtime::{self, inroot, inroot::Root};

/// Errors of a sync; each names the path it is about (in the container unless said).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A file system operation failed.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The path in the container (or on the host, for reads of the source).
        path: String,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The container has no running process whose root could be reached.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// A rule that cannot be carried out.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, SyncError>;

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(Errno) -> SyncError {
    let path = path.display().to_string();
    move |e| SyncError::Io {
        path,
        what,
        source: std::io::Error::from(e),
    }
}

/// Who owns what a sync creates: the user the container's process runs as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One sync rule: a host file or directory and the path it has in the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Host path (absolute).
    pub source: PathBuf,
    /// Path in the container (absolute).
    pub target: PathBuf,
    /// `.dockerignore` patterns, relative to `source`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// Only files matching these patterns are synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
}

impl Rule {
    /// The rule's filter.
    ///
    /// # Errors
    /// A pattern that does not compile, named with the rule's path.
    pub fn filter(&self) -> Result<Filter> {
        Filter::new(&self.ignore, self.include.as_deref())
            .map_err(|e| SyncError::Invalid(format!("{}: {e}", self.source.display())))
    }

    /// The container path of `rel` (relative to `source`).
    #[must_use]
    pub fn target_of(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.target.clone()
        } else {
            self.target.join(rel)
        }
    }

    /// The host path of `rel`.
    #[must_use]
    pub fn source_of(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.source.clone()
        } else {
            self.source.join(rel)
        }
    }

    /// `path` relative to `source`, `/`-separated; `None` when it is not below it.
    #[must_use]
    pub fn rel_of(&self, path: &Path) -> Option<String> {
        let r = path.strip_prefix(&self.source).ok()?;
        Some(r.to_string_lossy().into_owned())
    }
}

/// The file in a container's directory that holds the rules synced before every start.
pub const RULES_FILE: &str = "sync.json";

/// The file in a container's directory that holds, per rule, the host paths the container
/// was last synced with ([`Seen`]).
pub const SEEN_FILE: &str = "sync-seen.json";

/// The host paths a rule covered when a container was last compared with the host (or got
/// a change), relative to the rule's source: the host's, as the container received them.
/// A later whole comparison removes from the container what is in it and no longer on the
/// host — and only that: a file the container's image or its processes made under the
/// target, which the host never had, stays.
pub type Seen = BTreeSet<String>;

/// Per rule (by source and target), what the container was last synced with.
pub type SeenByRule = BTreeMap<(PathBuf, PathBuf), Seen>;

/// A rule's key in a [`SeenByRule`].
#[must_use]
pub fn seen_key(rule: &Rule) -> (PathBuf, PathBuf) {
    (rule.source.clone(), rule.target.clone())
}

#[derive(Serialize, Deserialize)]
struct SeenEntry {
    source: PathBuf,
    target: PathBuf,
    paths: Seen,
}

/// What the container of directory `dir` was last synced with (empty when never).
#[must_use]
pub fn read_seen(dir: &Path) -> SeenByRule {
    std::fs::read(dir.join(SEEN_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<SeenEntry>>(&b).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|e| ((e.source, e.target), e.paths))
        .collect()
}

/// Records what the container of directory `dir` has been synced with.
///
/// # Errors
/// The file cannot be written.
pub fn write_seen(dir: &Path, seen: &SeenByRule) -> std::io::Result<()> {
    let entries: Vec<SeenEntry> = seen
        .iter()
        .map(|((source, target), paths)| SeenEntry {
            source: source.clone(),
            target: target.clone(),
            paths: paths.clone(),
        })
        .collect();
    let bytes = serde_json::to_vec(&entries).map_err(std::io::Error::other)?;
    crate::util::fs::write_atomic(
        &dir.join(SEEN_FILE),
        &bytes,
        0o600,
        crate::util::fs::Durability::None,
    )
}

/// The sync before a container's program starts (the supervisor's): each rule compared
/// whole with the container's root (`c`), removing what the host had at the container's
/// last sync and has deleted since; what the host has now is recorded in the container's
/// directory `dir` for the next start. Returns what failed.
#[must_use]
pub fn sync_at_start(c: &Container, dir: &Path, rules: &[Rule]) -> Vec<String> {
    let before = read_seen(dir);
    let mut after = SeenByRule::new();
    let mut out = Vec::new();
    for r in rules {
        match r.filter() {
            Ok(f) => {
                let prev = before.get(&seen_key(r)).cloned().unwrap_or_default();
                let (rep, seen) = c.compare_rule(r, &f, &prev);
                out.extend(rep.errors.iter().map(ToString::to_string));
                after.insert(seen_key(r), seen);
            }
            Err(e) => out.push(e.to_string()),
        }
    }
    if let Err(e) = write_seen(dir, &after) {
        out.push(format!("record the synced paths: {e}"));
    }
    out
}

/// The host paths of `rule` below its relative path `below` (`""`: the whole rule; `below`
/// itself included unless empty) that the rule covers, as a whole comparison would see them;
/// `None` when the host's tree could not be read whole.
#[must_use]
pub fn host_paths(rule: &Rule, filter: &Filter, below: &str) -> Option<Seen> {
    let mut work = Work::default();
    let mut report = Report::default();
    let md = std::fs::symlink_metadata(rule.source_of(below)).ok()?;
    if md.is_dir() {
        work.dirs.insert(below.to_string(), md.mode());
        walk(rule, filter, below, &mut work, &mut report);
    } else {
        add_entry(rule, below, md, &mut work, &mut report);
    }
    report.errors.is_empty().then(|| {
        work.dirs
            .into_keys()
            .chain(work.entries.into_iter().map(|(rel, _)| rel))
            .filter(|rel| !rel.is_empty())
            .collect()
    })
}

/// Why a path that is gone on the host was not removed from the container.
enum Gone {
    /// It is on a kernel interface file system.
    Refused(&'static str),
    /// A symlink is on the way below the target.
    Link,
    /// The kernel refused.
    Sys(Errno),
}

/// Removes `rel` below the directory `target` (see [`Container::remove_gone`]); returns
/// whether something was removed.
fn remove_beneath(
    target: BorrowedFd<'_>,
    rel: &str,
    filter: &Filter,
) -> std::result::Result<bool, Gone> {
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let held;
    let dir = if parent.is_empty() {
        target
    } else {
        let how = nix::fcntl::OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        held = match nix::fcntl::openat2(target, parent, how) {
            Ok(fd) => fd,
            // Gone with its parent, or no directory there any more.
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(false),
            Err(Errno::ELOOP | Errno::EXDEV) => return Err(Gone::Link),
            Err(e) => return Err(Gone::Sys(e)),
        };
        held.as_fd()
    };
    if let Some(fs) = refused_fs(dir) {
        return Err(Gone::Refused(fs));
    }
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(Gone::Sys(e)),
        Ok(st) if is_dir(&st) => {
            if filter.skip(rel, true) {
                return Ok(false);
            }
            match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
                Ok(()) => Ok(true),
                // Something the host never had is in it: the directory stays for it.
                Err(Errno::ENOTEMPTY | Errno::EEXIST) => Ok(false),
                Err(e) => Err(Gone::Sys(e)),
            }
        }
        Ok(_) => {
            if filter.skip(rel, false) {
                return Ok(false);
            }
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
                .map(|()| true)
                .map_err(Gone::Sys)
        }
    }
}

/// Records `rules` in the container directory `dir`: they are synced before each start of
/// its process (see the supervisor). An empty list removes the record.
///
/// # Errors
/// The file cannot be written.
pub fn write_rules(dir: &Path, rules: &[Rule]) -> std::io::Result<()> {
    let path = dir.join(RULES_FILE);
    if rules.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let bytes = serde_json::to_vec_pretty(rules).map_err(std::io::Error::other)?;
    crate::util::fs::write_atomic(&path, &bytes, 0o600, crate::util::fs::Durability::None)
}

/// The rules recorded in the container directory `dir` (none when there is no record).
#[must_use]
pub fn read_rules(dir: &Path) -> Vec<Rule> {
    std::fs::read(dir.join(RULES_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files and symlinks written.
    pub written: usize,
    /// Directories made.
    pub dirs: usize,
    /// Paths removed.
    pub removed: usize,
    /// Files compared and found equal (not written).
    pub unchanged: usize,
    /// Bytes written.
    pub bytes: u64,
    /// What failed, one entry per path; the rest was done.
    pub errors: Vec<SyncError>,
}

impl Report {
    /// Adds `other` to this report.
    pub fn merge(&mut self, other: Report) {
        self.written += other.written;
        self.dirs += other.dirs;
        self.removed += other.removed;
        self.unchanged += other.unchanged;
        self.bytes += other.bytes;
        self.errors.extend(other.errors);
    }

    /// How many paths were changed in the container.
    #[must_use]
    pub fn changed(&self) -> usize {
        self.written + self.dirs + self.removed
    }
}

/// The user a container's process runs as (from its runtime spec).
#[must_use]
pub fn owner_of(store: &ContainerStore, id: &str) -> Owner {
    let spec = store.container_dir(id).join("bundle/config.json");
    std::fs::read(spec)
        .ok()
        .and_then(|b| serde_json::from_slice::<oci_spec::runtime::Spec>(&b).ok())
        .and_then(|s| s.process().clone())
        .map(|p| Owner {
            uid: p.user().uid(),
            gid: p.user().gid(),
        })
        .unwrap_or_default()
}

/// File systems nothing is synced onto: kernel interfaces, where a file opened by tug on the
/// host would act on the host (a sysctl, a cgroup, a device).
fn refused_fs(fd: BorrowedFd<'_>) -> Option<&'static str> {
    use nix::sys::statfs::{self as s, fstatfs};
    let t = fstatfs(fd).ok()?.filesystem_type();
    let named = [
        (s::PROC_SUPER_MAGIC, "procfs"),
        (s::SYSFS_MAGIC, "sysfs"),
        (s::CGROUP_SUPER_MAGIC, "cgroupfs"),
        (s::CGROUP2_SUPER_MAGIC, "cgroup2"),
        (s::DEBUGFS_MAGIC, "debugfs"),
        (s::TRACEFS_MAGIC, "tracefs"),
        (s::SECURITYFS_MAGIC, "securityfs"),
        (s::BPF_FS_MAGIC, "bpffs"),
        (s::DEVPTS_SUPER_MAGIC, "devpts"),
        (s::NSFS_MAGIC, "nsfs"),
        (s::SELINUX_MAGIC, "selinuxfs"),
        (s::SMACK_MAGIC, "smackfs"),
    ];
    if let Some((_, name)) = named.iter().find(|(m, _)| *m == t) {
        return Some(name);
    }
    // Not in nix: configfs, efivarfs, fusectl, pstore, binfmt_misc, mqueue.
    let raw = [
        (0x6265_6570_i64, "configfs"),
        (0xde5e_81e4, "efivarfs"),
        (0x6573_5543, "fusectl"),
        (0x6165_676c, "pstore"),
        (0x4249_4e4d, "binfmt_misc"),
        (0x1980_0202, "mqueue"),
    ];
    #[allow(clippy::unnecessary_cast, clippy::cast_possible_wrap)]
    let t = t.0 as i64;
    raw.iter().find(|(m, _)| *m == t).map(|(_, n)| *n)
}

fn tmp_name() -> OsString {
    static N: AtomicU64 = AtomicU64::new(0);
    OsString::from(format!(
        ".tug-sync-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn is_dir(st: &nix::sys::stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFDIR
}

fn is_reg(st: &nix::sys::stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFREG
}

/// Re-opens the object of an `O_PATH` descriptor with `flags` (through this process's own
/// `/proc/self/fd`), after its type was checked on the descriptor.
fn reopen(fd: BorrowedFd<'_>, flags: OFlag) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        inroot::proc_fd(fd).as_str(),
        flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
}

/// The permission bits a synced file gets: the host's, without set-ID bits.
fn mode_of(md: &Metadata) -> Mode {
    Mode::from_bits_truncate(md.mode() & 0o1777)
}

/// A directory of the container, resolved for this sync.
/// One entry to write: its parent directory in the container, its name there, what it is,
/// and its path on the host.
type Job<'a> = (PathBuf, OsString, &'a Entry, PathBuf);

struct Dir {
    fd: OwnedFd,
    /// Why nothing may be written in it.
    refused: Option<&'static str>,
}

/// One entry of a sync: what the host has at `rel`.
enum Entry {
    File(Metadata),
    Link(PathBuf),
}

/// The work of one sync, made from the host's state.
#[derive(Default)]
struct Work {
    removals: Vec<String>,
    /// Directories to make (with the host's mode), parents first.
    dirs: BTreeMap<String, u32>,
    entries: Vec<(String, Entry)>,
}

/// The root of a running container, as its processes see it.
pub struct Container {
    root: Root,
    owner: Owner,
    name: String,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Container {
    /// Opens the root of the running (or paused) container `id` of `store`. Hold it only for
    /// one batch: while it is open, the container's root file system stays mounted after its
    /// process exits.
    ///
    /// # Errors
    /// The container does not run, or its root cannot be opened.
    pub fn open(store: &ContainerStore, id: &str) -> Result<Container> {
        Container::open_as(store, id, owner_of(store, id))
    }

    /// [`Container::open`] with the owner already known (see [`owner_of`]).
    ///
    /// # Errors
    /// The container does not run, or its root cannot be opened.
    pub fn open_as(store: &ContainerStore, id: &str, owner: Owner) -> Result<Container> {
        let dir = store.container_dir(id);
        let st = state::observe(&dir);
        if !matches!(st.status, Status::Running | Status::Paused) {
            return Err(SyncError::NotRunning(id.to_string()));
        }
        let pid = st
            .pid
            .ok_or_else(|| SyncError::NotRunning(id.to_string()))?;
        let start = st.pid_start;
        let target = runtime::Joinable::open(pid, || state::alive(Some(pid), start))
            .map_err(|_| SyncError::NotRunning(id.to_string()))?;
        let fd = target
            .root()
            .map_err(|_| SyncError::NotRunning(id.to_string()))?;
        let root = Root::from_fd(fd).map_err(io_err(Path::new("/"), "open the root"))?;
        Ok(Container {
            root,
            owner,
            name: id.to_string(),
        })
    }

    /// A root held by the caller (the supervisor's new container, a test's directory).
    #[must_use]
    pub fn from_root(root: Root, owner: Owner, name: &str) -> Container {
        Container {
            root,
            owner,
            name: name.to_string(),
        }
    }

    /// The owner given to what a sync creates.
    #[must_use]
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Syncs the whole of `rule`: every file whose content or mode differs from the host's
    /// (or that is missing) is written; nothing is removed (see [`Container::compare_rule`]).
    pub fn sync_rule(&self, rule: &Rule, filter: &Filter) -> Report {
        self.compare_rule(rule, filter, &Seen::new()).0
    }

    /// Compares the whole of `rule` with the container: what the host has that differs (or
    /// is missing) is written, and what the host had when the container was last synced
    /// (`before`) and no longer has is removed (see the module docs). Returns
    /// what was done and the paths the host has now (with `before`'s kept when the host's
    /// tree could not be read whole: nothing is removed then, nothing forgotten).
    pub fn compare_rule(&self, rule: &Rule, filter: &Filter, before: &Seen) -> (Report, Seen) {
        let mut work = Work::default();
        let mut report = Report::default();
        if let Err(e) = check_rule(rule) {
            report.errors.push(e);
            return (report, before.clone());
        }
        match std::fs::symlink_metadata(&rule.source) {
            Ok(md) if md.is_dir() => {
                work.dirs.insert(String::new(), md.mode());
                walk(rule, filter, "", &mut work, &mut report);
            }
            Ok(md) => add_entry(rule, "", md, &mut work, &mut report),
            Err(e) => report.errors.push(SyncError::Io {
                path: rule.source.display().to_string(),
                what: "read the watched path on the host",
                source: e,
            }),
        }
        let now: Seen = work
            .dirs
            .keys()
            .chain(work.entries.iter().map(|(rel, _)| rel))
            .filter(|rel| !rel.is_empty())
            .cloned()
            .collect();
        let seen = if report.errors.is_empty() {
            let gone: Vec<&String> = before.difference(&now).filter(|r| !r.is_empty()).collect();
            self.remove_gone(rule, filter, &gone, &mut report);
            now
        } else {
            before.union(&now).cloned().collect()
        };
        self.run(rule, &work, true, &mut report);
        (report, seen)
    }

    /// Removes from the container the paths `gone` of `rule` (relative to its target, none
    /// empty), deepest first: only what the rule covers (never an ignored path), looked up
    /// inside the rule's target without following any symlink on the way (resolved in the
    /// root up to the target, then beneath it), so nothing outside the target is touched;
    /// a directory only once it is empty (what the container or its image made in it
    /// stays with it).
    fn remove_gone(&self, rule: &Rule, filter: &Filter, gone: &[&String], report: &mut Report) {
        if gone.is_empty() {
            return;
        }
        let target = match self.root.open_in(
            &rule.target,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            ResolveFlag::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return,
            Err(e) => {
                report
                    .errors
                    .push(io_err(&rule.target, "open the target directory")(e));
                return;
            }
        };
        let mut gone = gone.to_vec();
        gone.sort_unstable_by(|a, b| b.cmp(a));
        for rel in gone {
            let path = rule.target_of(rel);
            match remove_beneath(target.as_fd(), rel, filter) {
                Ok(true) => report.removed += 1,
                Ok(false) => {}
                Err(e) => report.errors.push(match e {
                    Gone::Refused(fs) => SyncError::Invalid(format!(
                        "{}: refusing to remove on {fs}",
                        path.display()
                    )),
                    Gone::Link => SyncError::Invalid(format!(
                        "{}: not removed: a symlink is on the way in the container",
                        path.display()
                    )),
                    Gone::Sys(e) => io_err(&path, "remove")(e),
                }),
            }
        }
    }

    /// Syncs the paths `rels` of `rule` (relative to its source) to what the host has now:
    /// each is written, made or removed. A directory in `fresh` (created or moved in on the
    /// host) is copied whole, so files made in it before it was watched are not missed.
    pub fn sync_paths(
        &self,
        rule: &Rule,
        filter: &Filter,
        rels: &BTreeSet<String>,
        fresh: &BTreeSet<String>,
    ) -> Report {
        let mut report = Report::default();
        if let Err(e) = check_rule(rule) {
            report.errors.push(e);
            return report;
        }
        let mut work = Work::default();
        // A path below a directory copied whole is covered by that copy.
        let covered = |rel: &str| {
            fresh.iter().any(|d| {
                rel != d
                    && rels.contains(d)
                    && (d.is_empty() || rel.starts_with(d.as_str()))
                    && rel.as_bytes().get(d.len()) == Some(&b'/')
            })
        };
        for rel in rels {
            if covered(rel) {
                continue;
            }
            match std::fs::symlink_metadata(rule.source_of(rel)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if rel.is_empty() {
                        report.errors.push(SyncError::Invalid(format!(
                            "{}: the watched path is gone on the host; {} is kept",
                            rule.source.display(),
                            rule.target.display()
                        )));
                    } else if !work.removals.iter().any(|r| {
                        rel.starts_with(r.as_str()) && rel.as_bytes().get(r.len()) == Some(&b'/')
                    }) {
                        work.removals.push(rel.clone());
                    }
                }
                Err(e) => report.errors.push(SyncError::Io {
                    path: rule.source_of(rel).display().to_string(),
                    what: "read on the host",
                    source: e,
                }),
                Ok(md) if md.is_dir() => {
                    if filter.skip(rel, true) {
                        continue;
                    }
                    work.dirs.insert(rel.clone(), md.mode());
                    if fresh.contains(rel) {
                        walk(rule, filter, rel, &mut work, &mut report);
                    }
                }
                Ok(md) => {
                    if !filter.skip(rel, false) {
                        add_entry(rule, rel, md, &mut work, &mut report);
                    }
                }
            }
        }
        self.run(rule, &work, false, &mut report);
        report
    }

    /// Carries out `work`: removals, then directories (parents first), then files and links
    /// in parallel. With `compare`, files equal to the host's are left alone.
    fn run(&self, rule: &Rule, work: &Work, compare: bool, report: &mut Report) {
        for rel in &work.removals {
            let target = rule.target_of(rel);
            match self.remove(&target) {
                Ok(true) => report.removed += 1,
                Ok(false) => {}
                Err(e) => report.errors.push(e),
            }
        }
        let mut dirs: BTreeMap<PathBuf, Dir> = BTreeMap::new();
        for (rel, mode) in &work.dirs {
            let target = rule.target_of(rel);
            let mode = Mode::from_bits_truncate(mode & 0o1777);
            match self.ensure_dir(&target, mode, !rel.is_empty(), &mut report.dirs) {
                Ok(fd) => {
                    let refused = refused_fs(fd.as_fd());
                    dirs.insert(target, Dir { fd, refused });
                }
                Err(e) => report.errors.push(e),
            }
        }
        // Parents of entries that are not directories of the work (a single file's rule, a
        // file changed alone).
        let mut jobs: Vec<Job<'_>> = Vec::new();
        for (rel, entry) in &work.entries {
            let target = rule.target_of(rel);
            let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
                report.errors.push(SyncError::Invalid(format!(
                    "{}: cannot sync onto the container's root",
                    rule.source_of(rel).display()
                )));
                continue;
            };
            if !dirs.contains_key(parent) {
                match self.ensure_dir(
                    parent,
                    Mode::from_bits_truncate(0o755),
                    false,
                    &mut report.dirs,
                ) {
                    Ok(fd) => {
                        let refused = refused_fs(fd.as_fd());
                        dirs.insert(parent.to_path_buf(), Dir { fd, refused });
                    }
                    Err(e) => {
                        report.errors.push(e);
                        continue;
                    }
                }
            }
            jobs.push((
                parent.to_path_buf(),
                name.to_os_string(),
                entry,
                rule.source_of(rel),
            ));
        }
        let next = AtomicUsize::new(0);
        let shared = Mutex::new(Report::default());
        let worker = || {
            let mut mine = Report::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else {
                    break;
                };
                let Some(dir) = dirs.get(&job.0) else {
                    continue;
                };
                self.write_one(dir, job, compare, &mut mine);
            }
            shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .merge(mine);
        };
        // Small batches (an editor's save) are written inline: a thread costs more than the
        // write.
        let threads = match jobs.len() {
            0..=16 => 1,
            n => (n / 16).min(4),
        };
        if threads == 1 {
            worker();
        } else {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(worker);
                }
            });
        }
        report.merge(
            shared
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    /// Writes one entry of the work into its (open) parent directory, counting it in `out`.
    /// With `compare`, an entry equal to the host's is left alone.
    fn write_one(&self, dir: &Dir, job: &Job<'_>, compare: bool, out: &mut Report) {
        let (parent, name, entry, host) = job;
        let target = parent.join(name);
        if let Some(fs) = dir.refused {
            out.errors.push(SyncError::Invalid(format!(
                "{}: refusing to write on {fs}",
                target.display()
            )));
            return;
        }
        let r = match entry {
            Entry::File(md) => {
                if compare && same_file(dir.fd.as_fd(), name, host, md) {
                    out.unchanged += 1;
                    return;
                }
                self.put_file(dir.fd.as_fd(), name, host, md)
            }
            Entry::Link(text) => {
                if compare
                    && nix::fcntl::readlinkat(dir.fd.as_fd(), name.as_os_str())
                        .is_ok_and(|t| Path::new(&t) == text)
                {
                    out.unchanged += 1;
                    return;
                }
                self.put_link(dir.fd.as_fd(), name, text).map(|()| 0)
            }
        };
        match r {
            Ok(n) => {
                out.written += 1;
                out.bytes += n;
            }
            Err((what, e)) => out.errors.push(SyncError::Io {
                path: target.display().to_string(),
                what,
                source: e,
            }),
        }
    }

    /// Opens the directory `path` in the container, making what is missing of it (owned by
    /// the owner; the last component with `mode`, its parents 0755). With `replace`, a
    /// non-directory at `path` itself is removed first.
    fn ensure_dir(
        &self,
        path: &Path,
        mode: Mode,
        replace: bool,
        made: &mut usize,
    ) -> Result<OwnedFd> {
        self.ensure_dir_at(path, mode, replace, made, &mut 0)
    }

    fn ensure_dir_at(
        &self,
        path: &Path,
        mode: Mode,
        replace: bool,
        made: &mut usize,
        links: &mut usize,
    ) -> Result<OwnedFd> {
        match self.root.open_in(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            ResolveFlag::empty(),
        ) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR) if replace => {
                self.remove(path)?;
            }
            Err(e) => return Err(io_err(path, "open the directory")(e)),
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io_err(path, "open the directory")(Errno::ENOENT));
        };
        let pfd =
            self.ensure_dir_at(parent, Mode::from_bits_truncate(0o755), false, made, links)?;
        if let Some(fs) = refused_fs(pfd.as_fd()) {
            return Err(SyncError::Invalid(format!(
                "{}: refusing to write on {fs}",
                path.display()
            )));
        }
        let created = match mkdirat(pfd.as_fd(), name, mode) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(io_err(path, "make the directory")(e)),
        };
        let fd = match openat(
            pfd.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // A dangling symlink the container made: its target is made instead, inside the
            // root (as the runtime does for mount targets).
            Err(Errno::ENOTDIR | Errno::ELOOP)
                if !created && *links < 40 && readlink_of(pfd.as_fd(), name).is_some() =>
            {
                *links += 1;
                let text = readlink_of(pfd.as_fd(), name).unwrap_or_default();
                let next = normalize(&parent.join(text));
                return self.ensure_dir_at(&next, mode, false, made, links);
            }
            Err(e) => return Err(io_err(path, "open the directory")(e)),
        };
        if created {
            *made += 1;
            nix::unistd::fchown(
                &fd,
                Some(Uid::from_raw(self.owner.uid)),
                Some(Gid::from_raw(self.owner.gid)),
            )
            .map_err(io_err(path, "set the owner"))?;
            nix::sys::stat::fchmod(&fd, mode).map_err(io_err(path, "set the mode"))?;
        }
        Ok(fd)
    }

    /// Writes the host file `host` as `name` in `dir`; returns the bytes written.
    fn put_file(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        host: &Path,
        md: &Metadata,
    ) -> std::result::Result<u64, (&'static str, std::io::Error)> {
        let mut src = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(host)
            .map_err(|e| ("read the host file", e))?;
        let tmp = tmp_name();
        let fd = openat(
            dir,
            tmp.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| ("create the file", e.into()))?;
        let drop_tmp = || {
            let _ = unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        };
        let mut dst = File::from(fd);
        let written = (|| -> std::result::Result<u64, (&'static str, std::io::Error)> {
            let n = std::io::copy(&mut src, &mut dst).map_err(|e| ("write the file", e))?;
            self.finish_file(&dst, md)?;
            Ok(n)
        })();
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                drop_tmp();
                return Err(e);
            }
        };
        drop(dst);
        let mut again = true;
        loop {
            match nix::fcntl::renameat(dir, tmp.as_os_str(), dir, name) {
                Ok(()) => return Ok(n),
                // A directory is where the file goes: it is replaced (as on the host).
                Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) if again => {
                    again = false;
                    if let Err(e) = remove_tree(dir, name) {
                        drop_tmp();
                        return Err(("replace the directory", e.into()));
                    }
                }
                // A mount point (a file bind-mounted there): written in place.
                Err(Errno::EBUSY) => {
                    drop_tmp();
                    src.rewind().map_err(|e| ("read the host file", e))?;
                    return self.write_in_place(dir, name, &mut src, md);
                }
                Err(e) => {
                    drop_tmp();
                    return Err(("rename the file into place", e.into()));
                }
            }
        }
    }

    fn finish_file(
        &self,
        f: &File,
        md: &Metadata,
    ) -> std::result::Result<(), (&'static str, std::io::Error)> {
        nix::unistd::fchown(
            f,
            Some(Uid::from_raw(self.owner.uid)),
            Some(Gid::from_raw(self.owner.gid)),
        )
        .map_err(|e| ("set the owner", e.into()))?;
        nix::sys::stat::fchmod(f, mode_of(md)).map_err(|e| ("set the mode", e.into()))?;
        let t = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
        nix::sys::stat::futimens(
            f,
            &t(md.atime(), md.atime_nsec()),
            &t(md.mtime(), md.mtime_nsec()),
        )
        .map_err(|e| ("set the times", e.into()))
    }

    fn write_in_place(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        src: &mut File,
        md: &Metadata,
    ) -> std::result::Result<u64, (&'static str, std::io::Error)> {
        let p = openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ("open the mounted file", e.into()))?;
        let st = fstat(&p).map_err(|e| ("open the mounted file", e.into()))?;
        if !is_reg(&st) {
            return Err((
                "write the mounted file",
                std::io::Error::other("not a regular file"),
            ));
        }
        let fd = reopen(p.as_fd(), OFlag::O_WRONLY | OFlag::O_TRUNC)
            .map_err(|e| ("open the mounted file", e.into()))?;
        let mut dst = File::from(fd);
        let n = std::io::copy(src, &mut dst).map_err(|e| ("write the file", e))?;
        let _ = nix::sys::stat::fchmod(&dst, mode_of(md));
        Ok(n)
    }

    fn put_link(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        text: &Path,
    ) -> std::result::Result<(), (&'static str, std::io::Error)> {
        let tmp = tmp_name();
        nix::unistd::symlinkat(text, dir, tmp.as_os_str())
            .map_err(|e| ("create the symlink", e.into()))?;
        let done = nix::unistd::fchownat(
            dir,
            tmp.as_os_str(),
            Some(Uid::from_raw(self.owner.uid)),
            Some(Gid::from_raw(self.owner.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| ("set the owner", e.into()))
        .and_then(|()| {
            match nix::fcntl::renameat(dir, tmp.as_os_str(), dir, name) {
                Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) => remove_tree(dir, name)
                    .and_then(|()| nix::fcntl::renameat(dir, tmp.as_os_str(), dir, name)),
                r => r,
            }
            .map_err(|e| ("rename the symlink into place", e.into()))
        });
        if done.is_err() {
            let _ = unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        done
    }

    /// Removes `path` in the container (a directory with what is in it, but not what other
    /// mounts hold). Returns whether something was there.
    ///
    /// # Errors
    /// The removal failed.
    pub fn remove(&self, path: &Path) -> Result<bool> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(SyncError::Invalid(format!(
                "{}: refusing to remove the container's root",
                path.display()
            )));
        };
        let dir = match self.root.open_in(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            ResolveFlag::empty(),
        ) {
            Ok(d) => d,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(false),
            Err(e) => return Err(io_err(path, "open the parent directory")(e)),
        };
        if let Some(fs) = refused_fs(dir.as_fd()) {
            return Err(SyncError::Invalid(format!(
                "{}: refusing to remove on {fs}",
                path.display()
            )));
        }
        match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(io_err(path, "stat")(e)),
            Ok(st) if is_dir(&st) => remove_tree(dir.as_fd(), name)
                .map(|()| true)
                .map_err(io_err(path, "remove the directory")),
            Ok(_) => unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                .map(|()| true)
                .map_err(io_err(path, "remove")),
        }
    }
}

fn readlink_of(dir: BorrowedFd<'_>, name: &OsStr) -> Option<PathBuf> {
    nix::fcntl::readlinkat(dir, name).ok().map(PathBuf::from)
}

/// `path` made absolute with `.` and `..` folded lexically, never above `/` (the result is
/// resolved inside the root again, so this only decides which path inside it is meant).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Refuses a rule whose target cannot be resolved inside a root (relative, or with `..`).
fn check_rule(rule: &Rule) -> Result<()> {
    if !rule.target.is_absolute() || inroot::components(&rule.target).is_none() {
        return Err(SyncError::Invalid(format!(
            "target {}: must be an absolute path without `..`",
            rule.target.display()
        )));
    }
    Ok(())
}

fn add_entry(rule: &Rule, rel: &str, md: Metadata, work: &mut Work, report: &mut Report) {
    let ft = md.file_type();
    if ft.is_symlink() {
        match std::fs::read_link(rule.source_of(rel)) {
            Ok(t) => work.entries.push((rel.to_string(), Entry::Link(t))),
            Err(e) => report.errors.push(SyncError::Io {
                path: rule.source_of(rel).display().to_string(),
                what: "read the host symlink",
                source: e,
            }),
        }
    } else if ft.is_file() {
        work.entries.push((rel.to_string(), Entry::File(md)));
    }
    // FIFOs, sockets and devices on the host are not synced.
}

/// Adds what is below the host directory `rel` of `rule` (filtered) to `work`.
fn walk(rule: &Rule, filter: &Filter, rel: &str, work: &mut Work, report: &mut Report) {
    let host = rule.source_of(rel);
    let rd = match std::fs::read_dir(&host) {
        Ok(rd) => rd,
        Err(e) => {
            report.errors.push(SyncError::Io {
                path: host.display().to_string(),
                what: "read the host directory",
                source: e,
            });
            return;
        }
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let child = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let Ok(md) = e.metadata() else { continue };
        if md.is_dir() {
            if filter.prune(&child) {
                continue;
            }
            if !filter.skip(&child, true) {
                work.dirs.insert(child.clone(), md.mode());
            }
            walk(rule, filter, &child, work, report);
        } else if !filter.skip(&child, false) {
            add_entry(rule, &child, md, work, report);
        }
    }
}

/// Whether the file `name` in `dir` has the host file's size, permission bits and bytes.
fn same_file(dir: BorrowedFd<'_>, name: &OsStr, host: &Path, md: &Metadata) -> bool {
    let Ok(p) = openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let Ok(st) = fstat(&p) else { return false };
    if !is_reg(&st)
        || u64::try_from(st.st_size).ok() != Some(md.len())
        || st.st_mode & 0o1777 != md.mode() & 0o1777
    {
        return false;
    }
    let (Ok(fd), Ok(mut h)) = (reopen(p.as_fd(), OFlag::O_RDONLY), File::open(host)) else {
        return false;
    };
    let mut c = File::from(fd);
    let mut a = vec![0u8; 64 << 10];
    let mut b = vec![0u8; 64 << 10];
    loop {
        let Ok(n) = read_full(&mut h, &mut a) else {
            return false;
        };
        let Ok(m) = read_full(&mut c, &mut b[..n.max(1)]) else {
            return false;
        };
        if n != m || a[..n] != b[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Removes the directory `name` in `dir` and everything in it, through descriptors: no
/// symlink is followed and no other mount is entered (its mount point stays, `EBUSY`).
fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    let fd = match openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Not a directory (any more): a plain unlink.
        Err(Errno::ENOTDIR | Errno::ELOOP) => {
            return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        }
        Err(e) => return Err(e),
    };
    let here = inroot::identity_at(fd.as_fd(), "")?;
    let above = inroot::identity_at(dir, "")?;
    if here.mnt_id != above.mnt_id {
        return Err(Errno::EBUSY);
    }
    let mut d = nix::dir::Dir::from_fd(fd.try_clone().map_err(|_| Errno::EMFILE)?)?;
    let mut names: Vec<(OsString, Option<nix::dir::Type>)> = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        names.push((
            <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(n).to_os_string(),
            e.file_type(),
        ));
    }
    let mut first_err = None;
    for (n, t) in names {
        let r = match t {
            Some(nix::dir::Type::Directory) => remove_tree(fd.as_fd(), &n),
            Some(_) => unlinkat(fd.as_fd(), n.as_os_str(), UnlinkatFlags::NoRemoveDir),
            None => match unlinkat(fd.as_fd(), n.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Err(Errno::EISDIR) => remove_tree(fd.as_fd(), &n),
                r => r,
            },
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

#[cfg(test)]
mod tests;
