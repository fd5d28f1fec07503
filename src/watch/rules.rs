//! A project's `develop.watch` rules, ready to match paths: one [`Trigger`] per rule, with
//! its action, filter and (for `rebuild`) the build context's `.dockerignore`.

use std::path::{Path, PathBuf};

use crate::engine::build::ignore::{Ignore, PatternError};
use crate::engine::sync::{self, Filter, filter::may_reinclude_below};
use crate::project::model::{Project, ServiceHook};

/// A rule compose would refuse, or one that cannot be read; each names the service and the
/// rule's index in its `develop.watch`.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// An action compose does not have.
    #[error("service {service}: develop.watch[{index}]: {source}")]
    Action {
        /// The service.
        service: String,
        /// The rule's index.
        index: usize,
        /// The action as written.
        source: UnknownAction,
    },
    /// A sync action without `target`.
    #[error("service {service}: develop.watch[{index}]: action {action} needs a target")]
    NoTarget {
        /// The service.
        service: String,
        /// The rule's index.
        index: usize,
        /// The action as written.
        action: String,
    },
    /// A `target` that is not an absolute path.
    #[error(
        "service {service}: develop.watch[{index}]: target {target:?} must be an absolute \
         path in the container"
    )]
    RelativeTarget {
        /// The service.
        service: String,
        /// The rule's index.
        index: usize,
        /// The target as written.
        target: String,
    },
    /// `rebuild` of a service without `build:`.
    #[error(
        "service {service}: develop.watch[{index}]: action rebuild needs a build section in \
         the service"
    )]
    NoBuild {
        /// The service.
        service: String,
        /// The rule's index.
        index: usize,
    },
    /// `sync+exec` without `exec.command`.
    #[error("service {service}: develop.watch[{index}]: action sync+exec needs exec.command")]
    NoCommand {
        /// The service.
        service: String,
        /// The rule's index.
        index: usize,
    },
    /// An `ignore` or `include` pattern that does not compile.
    #[error("service {service}: develop.watch[{index}]: {source}")]
    Pattern {
        /// The service.
        service: String,
        /// The rule's index.
        index: usize,
        /// The pattern's error, with the rule's path.
        source: sync::SyncError,
    },
    /// The rule's `path` does not exist on the host.
    #[error("service {service}: develop.watch[{index}]: path {} does not exist", path.display())]
    MissingPath {
        /// The service.
        service: String,
        /// The rule's index.
        index: usize,
        /// The host path.
        path: PathBuf,
    },
    /// The build context's `.dockerignore` has a bad pattern.
    #[error("{}: {source}", path.display())]
    DockerIgnore {
        /// The file.
        path: PathBuf,
        /// The pattern's error.
        source: PatternError,
    },
    /// The build context's `.dockerignore` cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, RuleError>;

/// An action compose does not have (as written).
#[derive(Debug, thiserror::Error)]
#[error("unknown watch action {0:?} (expected sync, rebuild, restart, sync+restart or sync+exec)")]
pub struct UnknownAction(pub String);

/// What a change under a rule's path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Copy the changed files into the container.
    Sync,
    /// Restart the service's containers.
    Restart,
    /// Copy, then restart.
    SyncRestart,
    /// Copy, then run a command in the container.
    SyncExec,
    /// Build the service's image and recreate its containers.
    Rebuild,
}

impl Action {
    /// Parses compose's spelling.
    ///
    /// # Errors
    /// An action compose does not have.
    pub fn parse(s: &str) -> std::result::Result<Action, UnknownAction> {
        Ok(match s {
            "sync" => Action::Sync,
            "restart" => Action::Restart,
            "sync+restart" => Action::SyncRestart,
            "sync+exec" => Action::SyncExec,
            "rebuild" => Action::Rebuild,
            other => return Err(UnknownAction(other.to_string())),
        })
    }

    /// Whether the action copies files.
    #[must_use]
    pub fn syncs(self) -> bool {
        matches!(self, Action::Sync | Action::SyncRestart | Action::SyncExec)
    }
}

/// One `develop.watch` rule of one service.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// The service.
    pub service: String,
    /// Its index in the service's `develop.watch`.
    pub index: usize,
    /// The action.
    pub action: Action,
    /// What is synced (for the sync actions; `target` is empty otherwise).
    pub rule: sync::Rule,
    /// The rule's `ignore`/`include` and the default ignores.
    pub filter: Filter,
    /// For `rebuild`: the build context and its `.dockerignore`.
    pub context: Option<(PathBuf, Ignore)>,
    /// For `sync+exec`: the command.
    pub exec: Option<ServiceHook>,
    /// `initial_sync`.
    pub initial_sync: bool,
}

impl Trigger {
    /// The path relative to the rule's path when `path` is under it and not ignored
    /// (`is_dir`: what the path is on the host now).
    #[must_use]
    pub fn matches(&self, path: &Path, is_dir: bool) -> Option<String> {
        let rel = self.rule.rel_of(path)?;
        if self.filter.skip(&rel, is_dir) {
            return None;
        }
        if let Some((ctx, ignore)) = &self.context
            && let Ok(r) = path.strip_prefix(ctx)
        {
            let r = r.to_string_lossy();
            if !r.is_empty() && ignore.ignored(&r) {
                return None;
            }
        }
        Some(rel)
    }

    /// Whether nothing below the host directory `dir` can trigger this rule.
    #[must_use]
    pub fn prunes(&self, dir: &Path) -> bool {
        let Some(rel) = self.rule.rel_of(dir) else {
            return true;
        };
        if self.filter.prune(&rel) {
            return true;
        }
        if let Some((ctx, ignore)) = &self.context
            && let Ok(r) = dir.strip_prefix(ctx)
        {
            let r = r.to_string_lossy();
            return !r.is_empty() && ignore.ignored(&r) && !may_reinclude_below(ignore, &r);
        }
        false
    }
}

/// The `.dockerignore` of a build: `<Dockerfile>.dockerignore` next to the Dockerfile, else
/// `<context>/.dockerignore` (as BuildKit looks for them).
fn dockerignore(context: &Path, dockerfile: Option<&str>) -> Result<Ignore> {
    let df = dockerfile.unwrap_or("Dockerfile");
    let candidates = [
        context.join(format!("{df}.dockerignore")),
        context.join(".dockerignore"),
    ];
    for c in candidates {
        match std::fs::read_to_string(&c) {
            Ok(text) => {
                return Ignore::parse(&text).map_err(|source| RuleError::DockerIgnore {
                    path: c.clone(),
                    source,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RuleError::Io { path: c, source }),
        }
    }
    Ok(Ignore::default())
}

/// The watch rules of `services` (all services with rules when empty), in file order.
///
/// # Errors
/// A rule compose would refuse: an unknown action, a sync without `target`, a `rebuild` of a
/// service without `build:`, a bad pattern.
pub fn triggers(project: &Project, services: &[String]) -> Result<Vec<Trigger>> {
    let mut out = Vec::new();
    for s in project.services.values() {
        if !services.is_empty() && !services.contains(&s.name) {
            continue;
        }
        let Some(dev) = &s.develop else { continue };
        for (index, w) in dev.watch.iter().enumerate() {
            let service = || s.name.clone();
            let action = Action::parse(&w.action).map_err(|source| RuleError::Action {
                service: service(),
                index,
                source,
            })?;
            let target = w.target.clone().unwrap_or_default();
            if action.syncs() {
                if target.is_empty() {
                    return Err(RuleError::NoTarget {
                        service: service(),
                        index,
                        action: w.action.clone(),
                    });
                }
                if !target.starts_with('/') {
                    return Err(RuleError::RelativeTarget {
                        service: service(),
                        index,
                        target,
                    });
                }
            }
            let context = if action == Action::Rebuild {
                let b = s.build.as_ref().ok_or_else(|| RuleError::NoBuild {
                    service: service(),
                    index,
                })?;
                let ctx = PathBuf::from(b.context.clone().unwrap_or_else(|| ".".into()));
                let ignore = dockerignore(&ctx, b.dockerfile.as_deref())?;
                Some((ctx, ignore))
            } else {
                None
            };
            let rule = sync::Rule {
                source: PathBuf::from(&w.path),
                target: PathBuf::from(target),
                ignore: w.ignore.clone(),
                include: w.include.clone(),
            };
            let filter = rule.filter().map_err(|source| RuleError::Pattern {
                service: service(),
                index,
                source,
            })?;
            let exec = (action == Action::SyncExec).then(|| w.exec.clone());
            if let Some(e) = &exec
                && e.command.as_ref().is_none_or(Vec::is_empty)
            {
                return Err(RuleError::NoCommand {
                    service: service(),
                    index,
                });
            }
            out.push(Trigger {
                service: s.name.clone(),
                index,
                action,
                rule,
                filter,
                context,
                exec,
                initial_sync: w.initial_sync,
            });
        }
    }
    Ok(out)
}

/// Refuses a trigger whose `path` does not exist on the host.
///
/// # Errors
/// [`RuleError::MissingPath`].
pub fn check_paths(triggers: &[Trigger]) -> Result<()> {
    for t in triggers {
        if std::fs::symlink_metadata(&t.rule.source).is_err() {
            return Err(RuleError::MissingPath {
                service: t.service.clone(),
                index: t.index,
                path: t.rule.source.clone(),
            });
        }
    }
    Ok(())
}

/// The services of `triggers`, in file order.
#[must_use]
pub fn services(triggers: &[Trigger]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in triggers {
        if !out.contains(&t.service) {
            out.push(t.service.clone());
        }
    }
    out
}

/// The sync rules of one service (what its containers get before every start).
#[must_use]
pub fn sync_rules(triggers: &[Trigger], service: &str) -> Vec<sync::Rule> {
    triggers
        .iter()
        .filter(|t| t.service == service && t.action.syncs())
        .map(|t| t.rule.clone())
        .collect()
}

/// A trigger for tests: `path` synced to `/app` with `ignore`.
#[cfg(test)]
pub(crate) fn test_trigger(service: &str, path: &str, action: Action, ignore: &[&str]) -> Trigger {
    let rule = sync::Rule {
        source: PathBuf::from(path),
        target: PathBuf::from("/app"),
        ignore: ignore.iter().map(|s| (*s).to_string()).collect(),
        include: None,
    };
    Trigger {
        service: service.into(),
        index: 0,
        action,
        filter: rule.filter().unwrap_or_default(),
        rule,
        context: None,
        exec: None,
        initial_sync: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_trigger_matching_and_pruning() {
        let mut t = test_trigger("web", "/p/src", Action::Rebuild, &["tmp/"]);
        t.context = Some((
            PathBuf::from("/p"),
            Ignore::parse("src/generated\n*.md").unwrap(),
        ));
        assert_eq!(
            t.matches(Path::new("/p/src/a.c"), false).as_deref(),
            Some("a.c")
        );
        assert_eq!(t.matches(Path::new("/p/src"), true).as_deref(), Some(""));
        assert!(t.matches(Path::new("/p/other/a.c"), false).is_none());
        assert!(t.matches(Path::new("/p/src/tmp/x"), false).is_none());
        // The .dockerignore of the context counts for rebuilds.
        assert!(
            t.matches(Path::new("/p/src/generated/x.c"), false)
                .is_none()
        );
        assert!(t.prunes(Path::new("/p/src/generated")));
        assert!(t.prunes(Path::new("/p/src/tmp")));
        assert!(t.prunes(Path::new("/elsewhere")));
        assert!(!t.prunes(Path::new("/p/src/lib")));
        assert!(t.matches(Path::new("/p/src/.git/index"), false).is_none());
        assert!(Action::parse("sync+exec").unwrap().syncs());
        assert!(!Action::parse("rebuild").unwrap().syncs());
        assert!(Action::parse("copy").is_err());
    }
}
