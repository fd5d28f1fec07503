//! `develop.watch`: file changes sync into running containers, restart them, run a command in
//! them or rebuild their image.
//!
//! - [`rules`]: the project's rules as [`rules::Trigger`]s (action, path → target, filter,
//!   the build context's `.dockerignore` for `rebuild`);
//! - [`watcher`]: one inotify watcher (notify + notify-debouncer-full) for every path of the
//!   session, directory by directory, skipping ignored trees;
//! - [`batch`]: events → batches (a burst is one batch) → work per service;
//! - [`run`]: the session: syncs written at once through `engine::sync` (from the host side,
//!   into the container's root resolved inside it), restarts, rebuilds and `sync+exec`
//!   commands on a worker per service through the caller's [`run::Driver`];
//! - [`session`]: the session's record (one per project; `--detach`, `--stop`, `ls`, `down`).
//!
//! Only the CLI prints: the session reports [`run::Report`]s.

pub mod batch;
pub mod rules;
pub mod run;
pub mod session;
pub mod watcher;

pub use rules::{Action, Trigger, triggers};
pub use run::{Driver, Report, Session};

/// Errors of a watch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule or request that cannot be carried out.
    #[error("{0}")]
    Invalid(String),
    /// A kernel limit on inotify is reached (the message names the sysctl).
    #[error("{0}")]
    Limit(String),
    /// The file watcher failed.
    #[error("file watcher: {0}")]
    Watch(String),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The compose layer failed.
    #[error(transparent)]
    Compose(#[from] crate::compose::Error),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;
