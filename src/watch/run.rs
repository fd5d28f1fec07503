//! A watch session at work: the watcher's events become batches, a batch becomes work per
//! service; syncs are written at once (in the watching thread, a few milliseconds), while
//! restarts, rebuilds and `sync+exec` commands run on one worker thread per service, so a
//! long rebuild of one service does not hold up the syncs of the others. A worker folds the
//! requests that arrive while it is busy into one, and after a restart or a rebuild compares
//! the service's synced files again (whatever changed while its containers were down).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::batch::{Batcher, Changes, ServiceWork, plan};
use super::rules::Trigger;
use super::watcher::{Received, Watcher, WatcherError};
use super::{Error, Options, Prepared, Reporter, Result};
use crate::compose::{Stack, labels};
use crate::engine::container::Status;
use crate::engine::sync::{self, Seen};

/// How long the watched trees must be quiet before a batch is carried out.
pub const QUIET: Duration = Duration::from_millis(5);
/// Restarts, rebuilds and commands wait until the watched trees have been quiet (no event
/// and no batch being synced) for this long, so a burst that arrives as several batches
/// (the writer paused, the machine is busy) still restarts or rebuilds once. 500 ms, as
/// docker compose's watch waits before it acts: at 100 ms a 500-file burst written on a
/// busy machine (CI, two cores, tests in parallel) paused long enough to restart twice.
/// Syncs do not wait for it.
pub const ACTION_QUIET: Duration = Duration::from_millis(500);

/// When the watching thread last saw an event or finished a batch, and whether it is
/// carrying one out now.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    last: std::sync::atomic::AtomicU64,
    busy: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
            busy: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::SeqCst);
    }

    fn busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::SeqCst);
        self.touch();
    }

    /// How long it has been quiet (nothing while a batch is being carried out).
    fn idle(&self) -> Duration {
        if self.busy.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        self.origin
            .elapsed()
            .saturating_sub(Duration::from_micros(self.last.load(Ordering::SeqCst)))
    }
}
/// The longest a batch gathers events when the trees never rest.
pub const MAX_BATCH: Duration = Duration::from_secs(2);

/// Work done on a service's worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `restart`, `sync+restart`.
    Restart,
    /// `rebuild`.
    Rebuild,
    /// A `sync+exec` command.
    Exec,
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Work::Restart => "restart",
            Work::Rebuild => "rebuild",
            Work::Exec => "exec",
        })
    }
}

/// What happened, for the caller to show.
#[derive(Debug)]
pub enum Report {
    /// The watch is set up.
    Watching {
        /// Services with rules.
        services: Vec<String>,
        /// Directories watched.
        dirs: usize,
    },
    /// Files were written into (or removed from) a service's containers.
    Synced {
        /// Service.
        service: String,
        /// Paths changed in each container.
        files: usize,
        /// Containers synced.
        containers: usize,
        /// Time taken.
        elapsed: Duration,
        /// Compared whole (initial sync, catch-up) rather than from events.
        full: bool,
    },
    /// A path could not be synced (the watch goes on).
    SyncFailed {
        /// Service.
        service: String,
        /// The error, naming the path.
        error: String,
    },
    /// Changes for a service none of whose containers runs.
    NotRunning {
        /// Service.
        service: String,
        /// Changed paths.
        files: usize,
    },
    /// Containers restarted.
    Restarted {
        /// Service.
        service: String,
        /// Time taken.
        elapsed: Duration,
    },
    /// Image built and containers recreated.
    Rebuilt {
        /// Service.
        service: String,
        /// Time taken.
        elapsed: Duration,
    },
    /// A `sync+exec` command ran.
    Executed {
        /// Service.
        service: String,
        /// Container name.
        container: String,
        /// Its exit code.
        code: i32,
    },
    /// An action failed (the watch goes on).
    Failed {
        /// Service.
        service: String,
        /// What failed.
        work: Work,
        /// Why.
        error: crate::compose::Error,
    },
    /// A problem of the watcher itself (the watch goes on).
    Warning(WatcherError),
}

/// Records the sync rules of every service of `triggers`, so its containers get the host
/// files before each start (see `compose`'s sync records).
///
/// # Errors
/// A record cannot be written.
pub fn record(stack: &Stack, triggers: &[Trigger]) -> Result<()> {
    for s in super::rules::services(triggers) {
        stack.record_sync(&s, &super::rules::sync_rules(triggers, &s))?;
    }
    Ok(())
}

/// A request to a service's worker.
#[derive(Debug, Default, Clone)]
struct Job {
    restart: bool,
    rebuild: bool,
    execs: Vec<usize>,
}

impl Job {
    fn merge(&mut self, other: Job) {
        self.restart |= other.restart;
        self.rebuild |= other.rebuild;
        for e in other.execs {
            if !self.execs.contains(&e) {
                self.execs.push(e);
            }
        }
    }
}

/// How long the list of a service's running containers is reused between batches (a sync
/// that finds one gone, a restart and a rebuild read it again at once).
const CONTAINERS_TTL: Duration = Duration::from_secs(2);

/// A service's running containers (id, name), as last read.
type Listed = (Instant, Vec<(String, String)>);

/// A watch session.
pub struct Session<'a> {
    stack: &'a Stack,
    triggers: &'a [Trigger],
    options: Options,
    reporter: &'a dyn Reporter,
    listed: std::sync::Mutex<BTreeMap<String, Listed>>,
    owners: std::sync::Mutex<BTreeMap<String, sync::Owner>>,
    /// Per trigger: what the host has under it as the session knows it (see [`Seen`]).
    seen: std::sync::Mutex<Vec<Seen>>,
    /// Services whose `seen` changed since the containers' records were written.
    unrecorded: std::sync::Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("project", &self.stack.project().name)
            .field("triggers", &self.triggers.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Session<'a> {
    /// The session of `prepared` (see [`super::prepare`]).
    #[must_use]
    pub fn new(
        stack: &'a Stack,
        prepared: &'a Prepared,
        options: Options,
        reporter: &'a dyn Reporter,
    ) -> Session<'a> {
        Session {
            stack,
            triggers: &prepared.triggers,
            options,
            reporter,
            listed: std::sync::Mutex::new(BTreeMap::new()),
            owners: std::sync::Mutex::new(BTreeMap::new()),
            seen: std::sync::Mutex::new(vec![Seen::new(); prepared.triggers.len()]),
            unrecorded: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    fn report(&self, r: Report) {
        self.reporter.report(r);
    }

    /// The services that have rules, in file order.
    #[must_use]
    pub fn services(&self) -> Vec<String> {
        super::rules::services(self.triggers)
    }

    /// `initial_sync: true` rules: every file that differs from the container's is written.
    fn initial_sync(&self) {
        let mut by_service: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, t) in self.triggers.iter().enumerate() {
            if t.initial_sync && t.action.syncs() {
                by_service.entry(&t.service).or_default().push(i);
            }
        }
        for (service, idx) in by_service {
            self.sync_full(service, &idx);
        }
    }

    /// The user a container's process runs as (read once per container).
    fn owner(&self, id: &str) -> sync::Owner {
        let mut owners = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *owners
            .entry(id.to_string())
            .or_insert_with(|| self.stack.sync_owner(id))
    }

    /// The running containers of `service` (id, name); `again`: not from the last reading.
    fn containers(&self, service: &str, again: bool) -> Vec<(String, String)> {
        let mut listed = self
            .listed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !again
            && let Some((at, list)) = listed.get(service)
            && at.elapsed() < CONTAINERS_TTL
        {
            return list.clone();
        }
        let list = self.read_containers(service);
        listed.insert(service.to_string(), (Instant::now(), list.clone()));
        list
    }

    fn read_containers(&self, service: &str) -> Vec<(String, String)> {
        self.stack
            .project_containers()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| {
                c.labels.get(labels::SERVICE).map(String::as_str) == Some(service)
                    && c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
                    && matches!(c.state, Status::Running | Status::Paused)
            })
            .map(|c| (c.id, c.name))
            .collect()
    }

    /// Compares the rules `idx` of `service` whole with its containers.
    fn sync_full(&self, service: &str, idx: &[usize]) {
        let work: Vec<super::batch::SyncWork> = idx
            .iter()
            .map(|&i| super::batch::SyncWork {
                trigger: i,
                full: true,
                ..Default::default()
            })
            .collect();
        self.sync_service(service, &work, 0);
    }

    /// Writes a batch's files into every running container of `service`; reports.
    fn sync_service(&self, service: &str, work: &[super::batch::SyncWork], paths: usize) {
        if work.is_empty() {
            return;
        }
        let t0 = Instant::now();
        let mut changed = 0;
        let mut synced = 0;
        let mut errors: BTreeSet<String> = BTreeSet::new();
        let full = work.iter().all(|w| w.full);
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut again = false;
        loop {
            let mut stale = false;
            for (id, _) in self.containers(service, again) {
                if !done.insert(id.clone()) {
                    continue;
                }
                let c = match self.stack.sync_container(&id, self.owner(&id)) {
                    Ok(c) => c,
                    // Stopped or replaced since the list was read: read it again (one that
                    // stopped gets the files when it starts).
                    Err(sync::SyncError::NotRunning(_)) => {
                        stale = true;
                        continue;
                    }
                    Err(e) => {
                        errors.insert(e.to_string());
                        continue;
                    }
                };
                let rep = self.sync_one(&c, &id, work);
                changed = changed.max(rep.changed());
                synced += 1;
                errors.extend(rep.errors.iter().map(ToString::to_string));
            }
            if !stale || again {
                break;
            }
            again = true;
        }
        self.note_changes(service, work, synced > 0);
        if synced == 0 && errors.is_empty() {
            if paths > 0 {
                self.report(Report::NotRunning {
                    service: service.to_string(),
                    files: paths,
                });
            }
            return;
        }
        for error in errors {
            self.report(Report::SyncFailed {
                service: service.to_string(),
                error,
            });
        }
        if changed > 0 {
            self.report(Report::Synced {
                service: service.to_string(),
                files: changed,
                containers: synced,
                elapsed: t0.elapsed(),
                full,
            });
        }
    }

    /// Writes `work` into the container `c` (id `id`). A rule compared whole removes what
    /// the host had when the container was last synced, as this session knows it and as
    /// the container's record says, and no longer has; the record is rewritten then.
    fn sync_one(
        &self,
        c: &sync::Container,
        id: &str,
        work: &[super::batch::SyncWork],
    ) -> sync::Report {
        let mut rep = sync::Report::default();
        let mut record: Option<sync::SeenByRule> = None;
        for w in work {
            let t = &self.triggers[w.trigger];
            if !w.full {
                rep.merge(c.sync_paths(&t.rule, &t.filter, &w.rels, &w.fresh));
                continue;
            }
            let key = sync::seen_key(&t.rule);
            let record = record.get_or_insert_with(|| self.stack.sync_seen(id));
            let mut before = lock(&self.seen)[w.trigger].clone();
            before.extend(record.get(&key).into_iter().flatten().cloned());
            let (r, now) = c.compare_rule(&t.rule, &t.filter, &before);
            rep.merge(r);
            lock(&self.seen)[w.trigger].clone_from(&now);
            record.insert(key, now);
        }
        if let Some(record) = record
            && let Err(e) = self.stack.record_seen(id, &record)
        {
            rep.errors.push(sync::SyncError::Invalid(e.to_string()));
        }
        rep
    }

    /// Keeps what the session knows of the host up to date with a batch synced from events
    /// (paths made, changed or gone), so that a whole comparison after a queue overflow
    /// knows what the host has deleted since.
    /// A whole comparison that found no running container reads the host's tree instead.
    fn note_changes(&self, service: &str, work: &[super::batch::SyncWork], synced: bool) {
        let mut changed = false;
        for w in work {
            let t = &self.triggers[w.trigger];
            if w.full {
                if !synced && let Some(now) = sync::host_paths(&t.rule, &t.filter, "") {
                    lock(&self.seen)[w.trigger] = now;
                }
                continue;
            }
            let mut seen = lock(&self.seen);
            let seen = &mut seen[w.trigger];
            for rel in w.rels.iter().filter(|r| !r.is_empty()) {
                changed |= note_path(seen, t, rel, w.fresh.contains(rel));
            }
        }
        if changed {
            lock(&self.unrecorded).insert(service.to_string());
        }
    }

    /// Writes, for every running container of a service whose batches added or removed
    /// paths, what the session knows of the host: the next start of such a container (the
    /// supervisor's sync) then removes what the host deletes while it is stopped.
    fn record_seen(&self) {
        let services = std::mem::take(&mut *lock(&self.unrecorded));
        for service in services {
            let record: sync::SeenByRule = {
                let seen = lock(&self.seen);
                self.triggers
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.service == service && t.action.syncs())
                    .map(|(i, t)| (sync::seen_key(&t.rule), seen[i].clone()))
                    .collect()
            };
            for (id, _) in self.containers(&service, false) {
                // Best effort: a container removed meanwhile has no record to keep.
                let _ = self.stack.record_seen(&id, &record);
            }
        }
    }

    /// What the host has under every sync rule, at the start of the session.
    fn read_host(&self) {
        let mut seen = lock(&self.seen);
        for (i, t) in self.triggers.iter().enumerate() {
            if t.action.syncs()
                && let Some(paths) = sync::host_paths(&t.rule, &t.filter, "")
            {
                seen[i] = paths;
            }
        }
    }

    /// Carries out a job on a service's worker.
    fn work(&self, service: &str, job: &Job) {
        if job.rebuild || job.restart {
            let work = if job.rebuild {
                Work::Rebuild
            } else {
                Work::Restart
            };
            let t0 = Instant::now();
            let r = {
                let mut progress = self.reporter.progress(work);
                if job.rebuild {
                    self.stack
                        .watch_rebuild(service, self.options.prune, &mut *progress)
                } else {
                    self.stack.watch_restart(service, &mut *progress)
                }
            };
            let service = service.to_string();
            let elapsed = t0.elapsed();
            self.report(match (r, work) {
                (Ok(()), Work::Rebuild) => Report::Rebuilt { service, elapsed },
                (Ok(()), _) => Report::Restarted { service, elapsed },
                (Err(error), work) => Report::Failed {
                    service,
                    work,
                    error,
                },
            });
        }
        if job.rebuild || job.restart {
            // What changed while the containers were down or being replaced.
            let idx: Vec<usize> = self
                .triggers
                .iter()
                .enumerate()
                .filter(|(_, t)| t.service == service && t.action.syncs())
                .map(|(i, _)| i)
                .collect();
            self.sync_full(service, &idx);
        }
        if job.rebuild {
            return;
        }
        for &i in &job.execs {
            let Some(hook) = self.triggers[i].exec.as_ref() else {
                continue;
            };
            for (id, name) in self.containers(service, true) {
                self.report(match self.stack.watch_exec(&id, hook) {
                    Ok(code) => Report::Executed {
                        service: service.to_string(),
                        container: name,
                        code,
                    },
                    Err(error) => Report::Failed {
                        service: service.to_string(),
                        work: Work::Exec,
                        error,
                    },
                });
            }
        }
    }

    /// Watches until `stop` says so (asked every 100 ms at most): first the `initial_sync`
    /// rules, then every change.
    ///
    /// # Errors
    /// The watcher cannot be set up (a path is missing, a kernel limit is reached).
    pub fn run(&self, stop: &(dyn Fn() -> bool + Sync)) -> Result<()> {
        let mut watcher = Watcher::new()?;
        let prune = |dir: &Path| self.triggers.iter().all(|t| t.prunes(dir));
        let mut roots: BTreeSet<&Path> = BTreeSet::new();
        for t in self.triggers {
            roots.insert(&t.rule.source);
        }
        super::rules::check_paths(self.triggers)?;
        // A root below another root is covered by its walk.
        let tops: Vec<&Path> = roots
            .iter()
            .filter(|r| {
                !roots
                    .iter()
                    .any(|o| o != *r && r.starts_with(o) && o.is_dir())
            })
            .copied()
            .collect();
        for r in &tops {
            watcher.add_tree(r, &prune)?;
        }
        // Once the trees are watched: what changes from now on has events.
        self.read_host();
        self.initial_sync();
        self.report(Report::Watching {
            services: self.services(),
            dirs: watcher.count(),
        });
        let services = self.services();
        let activity = Activity::new();
        std::thread::scope(|scope| -> Result<()> {
            let mut workers: BTreeMap<String, mpsc::Sender<Job>> = BTreeMap::new();
            for s in &services {
                let (tx, rx) = mpsc::channel::<Job>();
                workers.insert(s.clone(), tx);
                let activity = &activity;
                scope.spawn(move || {
                    while let Ok(mut job) = rx.recv() {
                        // Wait for the trees to rest, folding what else comes meanwhile.
                        loop {
                            let idle = activity.idle();
                            if idle >= ACTION_QUIET {
                                while let Ok(more) = rx.try_recv() {
                                    job.merge(more);
                                }
                                break;
                            }
                            let wait = (ACTION_QUIET - idle).max(Duration::from_millis(5));
                            match rx.recv_timeout(wait) {
                                Ok(more) => job.merge(more),
                                Err(mpsc::RecvTimeoutError::Timeout) => {}
                                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            }
                        }
                        self.work(s, &job);
                    }
                });
            }
            let mut batcher = Batcher::new(QUIET, MAX_BATCH);
            let result = loop {
                if stop() {
                    break Ok(());
                }
                let wait = batcher.due().map_or(Duration::from_millis(100), |d| {
                    d.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(100))
                });
                match watcher.recv(Some(wait)) {
                    Ok(Received::Events(ev)) => {
                        activity.touch();
                        batcher.add(Instant::now(), ev.iter());
                    }
                    Ok(Received::Errors(errs)) => {
                        for source in errs {
                            self.report(Report::Warning(WatcherError::Notify {
                                path: None,
                                source,
                            }));
                        }
                    }
                    Ok(Received::Timeout) => {}
                    Err(e) => break Err(Error::from(e)),
                }
                if batcher.due().is_some_and(|d| d <= Instant::now()) {
                    let changes = batcher.take();
                    activity.busy(true);
                    self.batch(&mut watcher, &tops, &changes, &prune, &workers);
                    activity.busy(false);
                } else if batcher.due().is_none() && activity.idle() >= ACTION_QUIET {
                    // Off the path of a sync: once the trees have rested.
                    self.record_seen();
                }
            };
            drop(workers);
            self.record_seen();
            result
        })
    }

    /// Carries out one batch.
    fn batch(
        &self,
        watcher: &mut Watcher,
        tops: &[&Path],
        changes: &Changes,
        prune: &dyn Fn(&Path) -> bool,
        workers: &BTreeMap<String, mpsc::Sender<Job>>,
    ) {
        let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        // After an overflow the directories made meanwhile had no event: the trees are
        // walked again (before the whole comparison) so that they are watched.
        if changes.rescan {
            for r in tops {
                if let Err(e) = watcher.add_tree(r, prune) {
                    self.report(Report::Warning(e));
                }
            }
        }
        // New directories are watched before they are copied: what is made in them from now
        // on has events, what was made before is in the copy.
        for (p, fresh) in &changes.paths {
            if *fresh
                && is_dir(p)
                && let Err(e) = watcher.add_tree(p, prune)
            {
                self.report(Report::Warning(e));
            }
        }
        let work: BTreeMap<String, ServiceWork> = plan(self.triggers, changes, is_dir);
        for (service, w) in work {
            if !w.rebuild {
                self.sync_service(&service, &w.syncs, w.paths);
            }
            if w.rebuild || w.restart || !w.execs.is_empty() {
                let job = Job {
                    restart: w.restart,
                    rebuild: w.rebuild,
                    execs: w.execs,
                };
                if let Some(tx) = workers.get(&service) {
                    let _ = tx.send(job);
                }
            }
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Notes in `seen` what the host has at `rel` of trigger `t` now (`fresh`: a directory made
/// or moved in, whose whole tree is new): a path gone is forgotten with what was below it; a
/// path there is known, with its parent directories and, when fresh, its tree. Returns
/// whether `seen` changed.
fn note_path(seen: &mut Seen, t: &Trigger, rel: &str, fresh: bool) -> bool {
    let host = t.rule.source_of(rel);
    let Ok(md) = std::fs::symlink_metadata(&host) else {
        let below = format!("{rel}/");
        let under: Vec<String> = seen
            .range(below.clone()..)
            .take_while(|p| p.starts_with(&below))
            .cloned()
            .collect();
        let mut changed = seen.remove(rel);
        for p in under {
            changed |= seen.remove(&p);
        }
        return changed;
    };
    if t.filter.skip(rel, md.is_dir()) {
        return false;
    }
    let before = seen.len();
    let mut parent = rel;
    while let Some((p, _)) = parent.rsplit_once('/') {
        if !t.filter.skip(p, true) {
            seen.insert(p.to_string());
        }
        parent = p;
    }
    seen.insert(rel.to_string());
    if fresh
        && md.is_dir()
        && let Some(tree) = sync::host_paths(&t.rule, &t.filter, rel)
    {
        seen.extend(tree);
    }
    seen.len() != before
}
