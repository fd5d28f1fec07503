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
//!   commands on a worker per service through the compose layer's own paths
//!   (`Stack::watch_restart`, `watch_rebuild`, `watch_exec`);
//! - [`session`]: the session's record (one per project; `--detach`, `--stop`, `ls`, `down`).
//!
//! The CLI turns its flags into [`Options`], calls [`prepare`] (before the services come up,
//! so their first start has the host's files) and [`Session::run`], and shows what the
//! session tells its [`Reporter`]; only the CLI prints.

pub mod batch;
pub mod rules;
pub mod run;
pub mod session;
pub mod watcher;

pub use rules::{Action, RuleError, Trigger, triggers};
pub use run::{Report, Session, Work};
pub use session::SessionError;
pub use watcher::WatcherError;

use crate::compose::Stack;

/// Errors of a watch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule compose would refuse, or a missing path.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// No selected service has rules.
    #[error(
        "no selected service has develop.watch rules: add `develop: watch:` rules to the \
         services to watch"
    )]
    NoRules,
    /// The file watcher failed, or a kernel limit on inotify is reached (named).
    #[error(transparent)]
    Watcher(#[from] WatcherError),
    /// The session's record or background process.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The compose layer failed.
    #[error(transparent)]
    Compose(#[from] crate::compose::Error),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// What a session does beyond its rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `--prune`: a rebuild removes the image it replaced when it is dangling and unused.
    pub prune: bool,
}

/// What a session tells its caller, who shows it.
pub trait Reporter: Sync {
    /// Something happened.
    fn report(&self, report: Report);
    /// Where the events of the plans of a restart or a rebuild of a service go (the
    /// compose verbs' progress).
    fn progress(&self, work: Work) -> Box<dyn crate::compose::Reporter + '_>;
}

/// Whether [`prepare`] registers this process as the project's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// No: another process will (`--detach` checks the rules here, then starts it).
    No,
    /// As a session in the foreground.
    Foreground,
    /// As the background session (`--detach`'s process), writing to the watch log.
    Background,
}

/// A session made ready before the services are brought up: its rules are known (and
/// checked) and recorded for the containers' starts, and it may be registered.
#[derive(Debug)]
pub struct Prepared {
    triggers: Vec<Trigger>,
    /// Selected services without rules (not watched), for the caller to warn about.
    pub unwatched: Vec<String>,
    _registration: Option<session::Registration>,
}

impl Prepared {
    /// The services that have rules, in file order.
    #[must_use]
    pub fn services(&self) -> Vec<String> {
        rules::services(&self.triggers)
    }
}

/// Checks the watch rules of `services` (all with rules when empty), records the sync rules
/// for the containers' starts and registers the session as `register` says.
///
/// # Errors
/// No rules, a bad rule or a missing path, another session, or a record that cannot be
/// written.
pub fn prepare(stack: &Stack, services: &[String], register: Register) -> Result<Prepared> {
    let triggers = triggers(stack.project(), services)?;
    if triggers.is_empty() {
        return Err(Error::NoRules);
    }
    let unwatched = services
        .iter()
        .filter(|s| !triggers.iter().any(|t| &t.service == *s))
        .cloned()
        .collect();
    rules::check_paths(&triggers)?;
    let project = &stack.project().name;
    let registration = match register {
        Register::No => None,
        Register::Foreground | Register::Background => {
            let background = register == Register::Background;
            let log = background.then(|| session::log_path(stack.root(), project));
            Some(session::register(
                stack.root(),
                project,
                &rules::services(&triggers),
                background,
                log,
            )?)
        }
    };
    run::record(stack, &triggers)?;
    Ok(Prepared {
        triggers,
        unwatched,
        _registration: registration,
    })
}

/// Ends the project's session, if one runs, and forgets the synced files of its services
/// (`down` of the whole project: the next stack starts from its images).
///
/// # Errors
/// The session cannot be signalled, or the records cannot be removed.
pub fn end_for_down(stack: &Stack) -> Result<()> {
    session::stop(
        stack.root(),
        &stack.project().name,
        std::time::Duration::from_secs(10),
    )?;
    stack.forget_sync()?;
    Ok(())
}
