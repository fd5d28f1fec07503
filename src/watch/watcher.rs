//! One inotify watcher for every watched path of a session (notify, through
//! notify-debouncer-full), watching directory by directory so ignored trees (`.git`,
//! `node_modules/` when ignored) cost no kernel watches.
//!
//! The machine-wide limits are per user: `fs.inotify.max_user_instances` (one instance per
//! session, whatever the number of services and paths) and `fs.inotify.max_user_watches` (one
//! watch per directory). When either is exhausted the error names the sysctl and the value
//! that would do.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, NoCache, new_debouncer};

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// The limit of inotify instances is exhausted (`fs.inotify.max_user_instances`, or
    /// this user namespace's).
    #[error("{}", instance_limit_message(limit))]
    InstanceLimit {
        /// The limit that applies.
        limit: Limit,
    },
    /// The limit of inotify watches is exhausted (`fs.inotify.max_user_watches`, or this user
    /// namespace's): `wanted` more watches were needed on top of the `in_use` this user's
    /// processes hold.
    #[error("{}", watch_limit_message(limit, *in_use, *wanted))]
    WatchLimit {
        /// The limit that applies.
        limit: Limit,
        /// Watches this user's processes hold.
        in_use: u64,
        /// Watches still needed for the paths.
        wanted: u64,
    },
    /// inotify failed otherwise (on `path`, when it is about one).
    #[error("file watcher: {}{source}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Notify {
        /// The path being watched.
        path: Option<PathBuf>,
        /// The cause.
        source: notify::Error,
    },
    /// A watched path cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The watcher's thread is gone.
    #[error("file watcher: the file watcher stopped")]
    Stopped,
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, WatcherError>;

/// How long a path's events are held to fold them (a write is often create + modify + close).
pub const DEBOUNCE: Duration = Duration::from_millis(4);
/// How often the debouncer looks for held events that are due. Its thread wakes at this rate
/// while the watch is idle too: 250 times a second, measured at 0.7% of a core here (release
/// build; every 2 ms cost 1.25% for a median 3 ms faster).
pub const TICK: Duration = Duration::from_millis(4);

/// What the watcher delivered.
#[derive(Debug)]
pub enum Received {
    /// Debounced events.
    Events(Vec<notify::Event>),
    /// Errors of the watcher (reported, the watch goes on).
    Errors(Vec<notify::Error>),
    /// Nothing came before the timeout.
    Timeout,
}

/// The session's watcher.
pub struct Watcher {
    debouncer: Debouncer<notify::RecommendedWatcher, NoCache>,
    rx: mpsc::Receiver<DebounceEventResult>,
    /// Directories (and single files' parents) watched so far (a path once).
    watched: std::collections::HashSet<PathBuf>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("count", &self.watched.len())
            .finish_non_exhaustive()
    }
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A kernel limit on inotify that applies to this process: the machine's per-user limit
/// (`fs.inotify.*`), or this user namespace's when it is lower (`user.max_inotify_*`, read in
/// `/proc/sys/user/`: a user namespace counts its users' instances and watches against its own
/// limits as well as its parents').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The sysctl to raise.
    pub sysctl: &'static str,
    /// Its value, when it can be read.
    pub value: Option<u64>,
    /// It is this user namespace's limit (lower than the machine's).
    pub namespace: bool,
}

impl Limit {
    /// The limit of watches (`watches`) or of instances that applies here.
    #[must_use]
    pub fn current(watches: bool) -> Limit {
        let (machine, own) = if watches {
            (
                (
                    "fs.inotify.max_user_watches",
                    "/proc/sys/fs/inotify/max_user_watches",
                ),
                (
                    "user.max_inotify_watches",
                    "/proc/sys/user/max_inotify_watches",
                ),
            )
        } else {
            (
                (
                    "fs.inotify.max_user_instances",
                    "/proc/sys/fs/inotify/max_user_instances",
                ),
                (
                    "user.max_inotify_instances",
                    "/proc/sys/user/max_inotify_instances",
                ),
            )
        };
        let value = read_number(machine.1);
        match (value, read_number(own.1)) {
            (Some(m), Some(n)) if n < m => Limit {
                sysctl: own.0,
                value: Some(n),
                namespace: true,
            },
            _ => Limit {
                sysctl: machine.0,
                value,
                namespace: false,
            },
        }
    }

    fn shown(&self) -> String {
        self.value.map_or_else(
            || self.sysctl.to_string(),
            |v| format!("{} = {v}", self.sysctl),
        )
    }

    fn whose(&self, what: &str) -> String {
        if self.namespace {
            format!("this user namespace's limit of inotify {what}")
        } else {
            format!("the kernel's limit of inotify {what} per user")
        }
    }

    fn raise(&self, to: u64) -> String {
        let mut s = format!("`sysctl {}={to}`", self.sysctl);
        if self.namespace {
            s.push_str(" in this user namespace (as its owner, with CAP_SYS_RESOURCE there)");
        }
        s
    }
}

/// The identity of the user namespace of process `pid` (`self` for this one).
fn user_ns(pid: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(format!("/proc/{pid}/ns/user")).ok()?;
    Some((m.dev(), m.ino()))
}

/// The inotify watches this user's processes hold now (from `/proc/*/fdinfo`); with
/// `namespace`, only those of processes in this user namespace.
fn watches_in_use(namespace: bool) -> u64 {
    let me = nix::unistd::geteuid().as_raw();
    let own_ns = if namespace { user_ns("self") } else { None };
    let mut n = 0;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for p in procs.flatten() {
        use std::os::unix::fs::MetadataExt as _;
        // Processes only (`self` and `thread-self` are this one again).
        let numeric = p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit());
        if !numeric || p.metadata().map(|m| m.uid()).ok() != Some(me) {
            continue;
        }
        if own_ns.is_some() && user_ns(&p.file_name().to_string_lossy()) != own_ns {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for f in fds.flatten() {
            if let Ok(text) = std::fs::read_to_string(f.path()) {
                n += text
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count() as u64;
            }
        }
    }
    n
}

/// The message for an exhausted limit of watches: `wanted` more watches were needed on top
/// of the `in_use` ones.
#[must_use]
pub fn watch_limit_message(limit: &Limit, in_use: u64, wanted: u64) -> String {
    let need = in_use + wanted;
    let suggest = need.next_power_of_two().max(limit.value.unwrap_or(0) * 2);
    format!(
        "{} is reached ({}): watching these paths needs {wanted} (one per directory) on top \
         of the {in_use} in use; raise it with {}, or ignore large directories in the watch \
         rules",
        limit.whose("watches"),
        limit.shown(),
        limit.raise(suggest),
    )
}

/// The message for an exhausted limit of instances.
#[must_use]
pub fn instance_limit_message(limit: &Limit) -> String {
    let suggest = limit.value.unwrap_or(64).max(64) * 2;
    format!(
        "{} is reached ({}): other programs hold them all; close some, or raise it with {} \
         (a tug watch needs one)",
        limit.whose("instances"),
        limit.shown(),
        limit.raise(suggest),
    )
}

fn is_limit(e: &notify::Error) -> bool {
    matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC))
}

impl Watcher {
    /// Starts the watcher (no path watched yet).
    ///
    /// # Errors
    /// The inotify instance cannot be made (the per-user limit of instances, named).
    pub fn new() -> Result<Watcher> {
        let (tx, rx) = mpsc::channel();
        let debouncer = new_debouncer(DEBOUNCE, Some(TICK), tx).map_err(|e| match &e.kind {
            notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
                WatcherError::InstanceLimit {
                    limit: Limit::current(false),
                }
            }
            _ => WatcherError::Notify {
                path: None,
                source: e,
            },
        })?;
        Ok(Watcher {
            debouncer,
            rx,
            watched: std::collections::HashSet::new(),
        })
    }

    /// How many directories are watched.
    #[must_use]
    pub fn count(&self) -> usize {
        self.watched.len()
    }

    /// Watches `path`: a directory and every directory below it that `prune` keeps, or (for
    /// a file) its directory; a directory watched already is watched again (the kernel keeps
    /// one watch: a directory deleted and made again under the same name needs a new one).
    /// Returns how many directories were walked.
    ///
    /// # Errors
    /// The path cannot be read, or the kernel's watch limit is reached (named).
    pub fn add_tree(&mut self, path: &Path, prune: &dyn Fn(&Path) -> bool) -> Result<usize> {
        let md = std::fs::metadata(path).map_err(|source| WatcherError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        if md.is_dir() {
            collect_dirs(path, prune, &mut dirs);
        } else if let Some(parent) = path.parent() {
            dirs.push(parent.to_path_buf());
        }
        let total = dirs.len();
        for (i, d) in dirs.iter().enumerate() {
            match self.debouncer.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(d.clone());
                }
                Err(e) if is_limit(&e) => {
                    let limit = Limit::current(true);
                    return Err(WatcherError::WatchLimit {
                        limit,
                        in_use: watches_in_use(limit.namespace),
                        wanted: (total - i) as u64,
                    });
                }
                // Gone meanwhile: its removal is an event of its parent.
                Err(e)
                    if matches!(&e.kind, notify::ErrorKind::PathNotFound)
                        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) =>
                    {}
                Err(source) => {
                    return Err(WatcherError::Notify {
                        path: Some(d.clone()),
                        source,
                    });
                }
            }
        }
        Ok(total)
    }

    /// Waits up to `timeout` (forever with `None`) for the next delivery.
    ///
    /// # Errors
    /// The watcher's thread is gone.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Received> {
        let got = match timeout {
            Some(t) => match self.rx.recv_timeout(t) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(Received::Timeout),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(WatcherError::Stopped);
                }
            },
            None => self.rx.recv().map_err(|_| WatcherError::Stopped)?,
        };
        Ok(match got {
            Ok(events) => Received::Events(events.into_iter().map(|d| d.event).collect()),
            Err(errors) => Received::Errors(errors),
        })
    }
}

/// `dir` and the directories below it that `prune` keeps (symlinks are not followed).
fn collect_dirs(dir: &Path, prune: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    if prune(dir) {
        return;
    }
    out.push(dir.to_path_buf());
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), prune, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_limit_messages_name_the_sysctl_and_a_value() {
        let machine = Limit {
            sysctl: "fs.inotify.max_user_watches",
            value: Some(8192),
            namespace: false,
        };
        let m = watch_limit_message(&machine, 8000, 900);
        assert!(
            m.starts_with("the kernel's limit of inotify watches per user"),
            "{m}"
        );
        assert!(m.contains("fs.inotify.max_user_watches = 8192"), "{m}");
        assert!(m.contains("needs 900"), "{m}");
        assert!(
            m.contains("sysctl fs.inotify.max_user_watches=16384"),
            "{m}"
        );
        let m = instance_limit_message(&Limit {
            sysctl: "fs.inotify.max_user_instances",
            value: Some(128),
            namespace: false,
        });
        assert!(
            m.contains("sysctl fs.inotify.max_user_instances=256"),
            "{m}"
        );
        let m = watch_limit_message(
            &Limit {
                sysctl: "user.max_inotify_watches",
                value: Some(10),
                namespace: true,
            },
            10,
            21,
        );
        assert!(m.starts_with("this user namespace's limit"), "{m}");
        assert!(
            m.contains("sysctl user.max_inotify_watches=32` in this user namespace"),
            "{m}"
        );
        // Here (the test's own namespace) the machine's limit applies unless a lower one is set.
        let here = Limit::current(true);
        assert_eq!(
            here.namespace,
            here.sysctl == "user.max_inotify_watches",
            "{here:?}"
        );
    }

    #[test]
    fn watch_sees_a_directory_made_and_filled_at_once() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("skip/deep")).unwrap();
        std::fs::create_dir_all(t.path().join("keep")).unwrap();
        let mut w = Watcher::new().unwrap();
        let skip = t.path().join("skip");
        let n = w.add_tree(t.path(), &|d: &Path| d == skip).unwrap();
        assert_eq!(n, 2);
        std::fs::write(t.path().join("keep/a"), "a").unwrap();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !seen.iter().any(|p: &PathBuf| p.ends_with("keep/a")) {
            assert!(std::time::Instant::now() < deadline, "no event: {seen:?}");
            if let Received::Events(ev) = w.recv(Some(Duration::from_millis(100))).unwrap() {
                seen.extend(ev.into_iter().flat_map(|e| e.paths));
            }
        }
        // Nothing is watched under the pruned directory.
        std::fs::write(t.path().join("skip/deep/x"), "x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        while let Received::Events(ev) = w.recv(Some(Duration::from_millis(20))).unwrap() {
            assert!(
                ev.iter()
                    .flat_map(|e| &e.paths)
                    .all(|p| !p.ends_with("deep/x")),
                "{ev:?}"
            );
        }
    }
}
