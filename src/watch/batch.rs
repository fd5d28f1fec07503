//! From file events to work: events are gathered into one batch until the watched trees have
//! been quiet for a moment (an editor's write-and-rename dance, a `git checkout` of 500 files
//! become one batch), then matched against the rules, giving per service what to sync,
//! whether to restart or rebuild, and which commands to run. Pure: tested without a watcher.
//!
//! When the kernel's event queue overflowed (more events than
//! `fs.inotify.max_queued_events` waited to be read), what happened meanwhile is unknown: every
//! sync rule is compared whole ([`SyncWork::full`]), which writes what differs and removes
//! what the host had and has deleted (see `engine::sync`); nothing is restarted or rebuilt for
//! changes that may not have happened.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::EventKind;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};

use super::rules::{Action, Trigger};

/// The changed host paths of one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Each changed path, with whether it may be a new directory (created or moved in): such
    /// a directory is copied whole and watched.
    pub paths: BTreeMap<PathBuf, bool>,
    /// The kernel dropped events (queue overflow): every rule is compared again.
    pub rescan: bool,
    /// A directory was made: what fills it (a checkout, a copy) usually follows at once.
    pub dirs_made: bool,
}

impl Changes {
    /// Adds one event; returns whether it is about a change (opens and reads are not:
    /// tug's own reads of the files it syncs would otherwise trigger syncs).
    pub fn add(&mut self, event: &notify::Event) -> bool {
        if event.need_rescan() {
            self.rescan = true;
            return true;
        }
        let fresh = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
            EventKind::Access(_) | EventKind::Other => return false,
            EventKind::Create(kind) => {
                self.dirs_made |= kind == notify::event::CreateKind::Folder;
                true
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                // [from, to]
                if let [from, to] = event.paths.as_slice() {
                    self.paths.entry(from.clone()).or_insert(false);
                    self.paths.insert(to.clone(), true);
                    return true;
                }
                true
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => true,
            EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any => false,
        };
        if event.paths.is_empty() {
            return false;
        }
        for p in &event.paths {
            let e = self.paths.entry(p.clone()).or_insert(false);
            *e |= fresh;
        }
        true
    }

    /// True when nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.rescan
    }
}

/// Gathers events into batches: a batch ends once no change came for `quiet`, or `max` after
/// its first change (a tree that never rests still gets synced).
#[derive(Debug)]
pub struct Batcher {
    quiet: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    changes: Changes,
}

impl Batcher {
    /// A batcher with the given quiet period and longest batch.
    #[must_use]
    pub fn new(quiet: Duration, max: Duration) -> Batcher {
        Batcher {
            quiet,
            max,
            first: None,
            last: None,
            changes: Changes::default(),
        }
    }

    /// Adds events seen at `now`.
    pub fn add<'a>(&mut self, now: Instant, events: impl IntoIterator<Item = &'a notify::Event>) {
        let mut any = false;
        for e in events {
            any |= self.changes.add(e);
        }
        if any {
            self.first.get_or_insert(now);
            self.last = Some(now);
        }
    }

    /// When the current batch is due (`None`: nothing pending). A batch that made a
    /// directory waits four quiet periods: the files that fill it are usually on their way.
    #[must_use]
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        let quiet = if self.changes.dirs_made {
            self.quiet * 4
        } else {
            self.quiet
        };
        Some((last + quiet).min(first + self.max))
    }

    /// Ends the batch and returns its changes.
    pub fn take(&mut self) -> Changes {
        self.first = None;
        self.last = None;
        std::mem::take(&mut self.changes)
    }
}

/// What one sync rule copies in a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncWork {
    /// The trigger (index into the session's triggers).
    pub trigger: usize,
    /// Changed paths, relative to the rule's path.
    pub rels: BTreeSet<String>,
    /// Those that may be new directories.
    pub fresh: BTreeSet<String>,
    /// Compare the whole rule instead (after a queue overflow).
    pub full: bool,
}

/// What a batch asks of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceWork {
    /// Files to copy, per rule.
    pub syncs: Vec<SyncWork>,
    /// Restart the service's containers (after the syncs).
    pub restart: bool,
    /// Build the image and recreate (instead of everything else).
    pub rebuild: bool,
    /// `sync+exec` triggers whose command runs (after the syncs).
    pub execs: Vec<usize>,
    /// Changed paths that matched a rule of the service.
    pub paths: usize,
}

/// Matches a batch against the rules: per service, what to do. `is_dir` tells what a path
/// is on the host now (false when it is gone).
pub fn plan(
    triggers: &[Trigger],
    changes: &Changes,
    is_dir: impl Fn(&Path) -> bool,
) -> BTreeMap<String, ServiceWork> {
    let mut out: BTreeMap<String, ServiceWork> = BTreeMap::new();
    for (i, t) in triggers.iter().enumerate() {
        let mut sync = SyncWork {
            trigger: i,
            full: changes.rescan,
            ..SyncWork::default()
        };
        let mut hits = 0;
        for (path, fresh) in &changes.paths {
            let dir = is_dir(path);
            let Some(rel) = t.matches(path, dir) else {
                continue;
            };
            hits += 1;
            if *fresh && dir {
                sync.fresh.insert(rel.clone());
            }
            sync.rels.insert(rel);
        }
        if hits == 0 {
            // After an overflow the sync rules are compared whole; nothing is restarted or
            // rebuilt for changes that may not have happened.
            if changes.rescan && t.action.syncs() {
                out.entry(t.service.clone()).or_default().syncs.push(sync);
            }
            continue;
        }
        let w = out.entry(t.service.clone()).or_default();
        w.paths += hits;
        match t.action {
            Action::Rebuild => w.rebuild = true,
            Action::Restart => w.restart = true,
            Action::Sync | Action::SyncRestart | Action::SyncExec => {
                if t.action == Action::SyncRestart {
                    w.restart = true;
                }
                if t.action == Action::SyncExec {
                    w.execs.push(i);
                }
                w.syncs.push(sync);
            }
        }
    }
    // A rebuild recreates the containers, which get the host's files before they start.
    for w in out.values_mut() {
        if w.rebuild {
            w.syncs.clear();
            w.execs.clear();
            w.restart = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind};

    fn ev(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    fn trigger(service: &str, path: &str, action: Action) -> Trigger {
        super::super::rules::test_trigger(service, path, action, &["*.log"])
    }

    #[test]
    fn watch_batches_end_after_a_quiet_period() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Duration::from_millis(10), Duration::from_secs(1));
        assert_eq!(b.due(), None);
        let write = ev(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &["/p/a"],
        );
        b.add(t0, [&write]);
        assert_eq!(b.due(), Some(t0 + Duration::from_millis(10)));
        // Every change pushes the end back, up to the longest batch.
        b.add(t0 + Duration::from_millis(8), [&write]);
        assert_eq!(b.due(), Some(t0 + Duration::from_millis(18)));
        b.add(t0 + Duration::from_millis(995), [&write]);
        assert_eq!(b.due(), Some(t0 + Duration::from_secs(1)));
        // A new directory waits longer for what fills it.
        let mut b = Batcher::new(Duration::from_millis(10), Duration::from_secs(1));
        b.add(t0, [&ev(EventKind::Create(CreateKind::Folder), &["/p/d"])]);
        assert_eq!(b.due(), Some(t0 + Duration::from_millis(40)));
        // Opens and reads (tug's own, while it syncs) are no change.
        let mut b = Batcher::new(Duration::from_millis(10), Duration::from_secs(1));
        let open = ev(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            &["/p/a"],
        );
        b.add(t0, [&open]);
        assert_eq!(b.due(), None);
        assert!(b.take().is_empty());
    }

    #[test]
    fn watch_batch_becomes_work_per_service() {
        let triggers = vec![
            trigger("web", "/p/web", Action::Sync),
            trigger("web", "/p/web/package.json", Action::Rebuild),
            trigger("api", "/p/api", Action::SyncRestart),
            trigger("api", "/p/api/cfg", Action::SyncExec),
            trigger("worker", "/p/worker", Action::Restart),
        ];
        let mut c = Changes::default();
        c.add(&ev(EventKind::Create(CreateKind::Folder), &["/p/api/new"]));
        c.add(&ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &["/p/api/old.txt", "/p/api/cfg/new.txt"],
        ));
        c.add(&ev(
            EventKind::Remove(RemoveKind::File),
            &["/p/api/debug.log"],
        ));
        c.add(&ev(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &["/p/other/x"],
        ));
        let is_dir = |p: &Path| p == Path::new("/p/api/new");
        let w = plan(&triggers, &c, is_dir);
        assert_eq!(w.keys().collect::<Vec<_>>(), ["api"]);
        let api = &w["api"];
        assert!(api.restart && !api.rebuild);
        assert_eq!(api.execs, vec![3]);
        assert_eq!(api.syncs.len(), 2);
        assert_eq!(
            api.syncs[0].rels,
            ["cfg/new.txt", "new", "old.txt"]
                .iter()
                .map(|s| (*s).to_string())
                .collect()
        );
        assert_eq!(api.syncs[0].fresh, ["new".to_string()].into());
        assert_eq!(api.syncs[1].rels, ["new.txt".to_string()].into());
        // A rebuild replaces the rest for its service.
        let mut c = Changes::default();
        c.add(&ev(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &["/p/web/package.json"],
        ));
        c.add(&ev(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &["/p/worker/x"],
        ));
        let w = plan(&triggers, &c, |_| false);
        assert!(w["web"].rebuild && w["web"].syncs.is_empty());
        assert!(w["worker"].restart);
        // An overflow compares every rule.
        let c = Changes {
            rescan: true,
            ..Changes::default()
        };
        let w = plan(&triggers, &c, |_| false);
        assert_eq!(w.keys().collect::<Vec<_>>(), ["api", "web"]);
        assert!(w["api"].syncs.iter().all(|s| s.full) && !w["api"].restart);
        assert!(!w["web"].rebuild);
    }
}
