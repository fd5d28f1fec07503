//! The compose verbs that stream: an attached `up` (the services' output until they stop or
//! the user interrupts, then a graceful stop), `logs` (with `--follow`) and `events`. Each
//! hands what happens to a callback as it happens; the caller prints it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use super::service::Reporter;
use super::{Result, Stack, labels};
use crate::engine::container::{Status, Summary, logs};
use crate::plan;

/// The name compose shows for a container: `web-1` for the project's `<project>-web-1`, the
/// whole name otherwise (`container_name`, one-off containers).
#[must_use]
pub fn source_name(c: &Summary) -> String {
    let project = c.labels.get(labels::PROJECT).map_or("", String::as_str);
    let service = c.labels.get(labels::SERVICE).map_or("", String::as_str);
    let number = c.labels.get(labels::NUMBER).map_or("", String::as_str);
    if c.name == format!("{project}-{service}-{number}") {
        c.name[project.len() + 1..].to_owned()
    } else {
        c.name.clone()
    }
}

/// The log positions an attached `up` starts from: the output of containers that exist
/// before it runs is shown from now on, not replayed (see [`Stack::follow_existing`]).
#[derive(Debug, Default)]
pub struct Followers(BTreeMap<String, logs::Follower>);

/// An attached `up`: which services' output to show and when to stop.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// The services named on the command line (all when empty).
    pub services: Vec<String>,
    /// `--attach-dependencies`: the services they depend on too.
    pub attach_dependencies: bool,
    /// `--attach`: only these.
    pub attach: Vec<String>,
    /// `--no-attach`: not these.
    pub no_attach: Vec<String>,
    /// `--exit-code-from`: the exit code is this service's (and its exit stops all).
    pub exit_code_from: Option<String>,
    /// `--abort-on-container-exit`.
    pub abort_on_container_exit: bool,
    /// `--abort-on-container-failure`.
    pub abort_on_container_failure: bool,
    /// Exits from this time on are this `up`'s.
    pub since: Option<jiff::Timestamp>,
}

/// Why an attached `up` stops the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Every attached container has exited.
    AllExited,
    /// `--abort-on-container-exit`/`-failure`/`--exit-code-from`: one has.
    Aborting,
    /// Ctrl-C (or SIGTERM).
    Interrupted,
}

/// What an attached `up` sees, in order.
#[derive(Debug)]
pub enum AttachEvent<'a> {
    /// The attached containers, by [`source_name`].
    Attaching(&'a [String]),
    /// A line of a container's output.
    Log {
        /// The container, by [`source_name`].
        source: &'a str,
        /// The line.
        record: &'a logs::LogRecord,
    },
    /// A container exited; `restarting` when its restart policy starts it again.
    Exited {
        /// The container, by [`source_name`].
        source: &'a str,
        /// Its exit code.
        code: i32,
        /// Its restart policy restarts it.
        restarting: bool,
    },
    /// The project is stopped now, for this reason.
    Stopping(StopReason),
}

/// `logs`.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// The services (all when empty).
    pub services: Vec<String>,
    /// `--index`: one replica.
    pub index: Option<u32>,
    /// Records from this time on.
    pub since: Option<jiff::Timestamp>,
    /// Records up to this time.
    pub until: Option<jiff::Timestamp>,
    /// The last this many records of each container.
    pub tail: Option<usize>,
    /// Keep following until every container has stopped for good.
    pub follow: bool,
}

/// What `logs` sees, in order.
#[derive(Debug)]
pub enum LogEvent<'a> {
    /// The containers whose logs follow, by [`source_name`], sorted.
    Sources(&'a [String]),
    /// One record.
    Record {
        /// The container, by [`source_name`].
        source: &'a str,
        /// The record.
        record: &'a logs::LogRecord,
    },
}

/// What `events` sees.
#[derive(Debug)]
pub enum ContainerEvent<'a> {
    /// A container changed state (`create`, `start`, `die`, `health_status: healthy`, …).
    Changed {
        /// The container.
        container: &'a Summary,
        /// What happened, in docker's words.
        action: &'a str,
    },
    /// A container is gone.
    Destroyed {
        /// Its id.
        id: &'a str,
    },
}

impl Stack {
    /// Log positions at the end of the logs of the project's containers that exist now.
    ///
    /// # Errors
    /// The container store cannot be read.
    pub fn follow_existing(&self) -> Result<Followers> {
        let mut followers = BTreeMap::new();
        for c in self.project_containers()? {
            if let Ok(path) = self.containers.log_path(&c.id) {
                followers.insert(c.id.clone(), logs::Follower::at_end(&path));
            }
        }
        Ok(Followers(followers))
    }

    /// Attached `up`, as docker compose does it: the attached containers, then their output
    /// and a status when one exits, until every attached container has exited (or, with
    /// the abort options, one has), or `interrupts` counts one; then the project is stopped
    /// gracefully, and a second interrupt kills what still runs. Returns the exit code:
    /// `exit_code_from`'s, the failing container's on an abort, 130 after an interrupt, else
    /// 0.
    ///
    /// # Errors
    /// A store cannot be read, or the stop fails.
    pub fn attach(
        &self,
        opts: &AttachOptions,
        followers: Followers,
        interrupts: &(dyn Fn() -> usize + Sync),
        on: &mut dyn FnMut(AttachEvent<'_>),
        rep: &mut dyn Reporter,
    ) -> Result<i32> {
        let (exit_code, reason) = self.stream_attached(opts, followers, interrupts, on)?;
        // An interrupt that came while the last exits were read counts too.
        let reason = if interrupts() > 0 {
            StopReason::Interrupted
        } else {
            reason
        };
        on(AttachEvent::Stopping(reason));
        self.stop_attached(interrupts, rep)?;
        Ok(if reason == StopReason::Interrupted {
            130
        } else {
            exit_code
        })
    }

    /// Whether a container belongs in an attached `up`'s output.
    fn attached_filter(&self, opts: &AttachOptions) -> Result<impl Fn(&Summary) -> bool> {
        // Named services (and, with --attach-dependencies, what they depend on) or all.
        let named: Vec<String> = if opts.services.is_empty() {
            Vec::new()
        } else if opts.attach_dependencies {
            plan::select_services(&self.desired(), &opts.services, false)?
        } else {
            opts.services.clone()
        };
        let attach = opts.attach.clone();
        let no_attach = opts.no_attach.clone();
        let off: Vec<String> = self
            .project
            .services
            .values()
            .filter(|s| s.attach == Some(false))
            .map(|s| s.name.clone())
            .collect();
        let attached = move |service: &str| -> bool {
            if no_attach.iter().any(|s| s == service) {
                return false;
            }
            if !attach.is_empty() {
                return attach.iter().any(|s| s == service);
            }
            if !named.is_empty() && !named.iter().any(|s| s == service) {
                return false;
            }
            !off.iter().any(|s| s == service)
        };
        Ok(move |c: &Summary| {
            c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
                && attached(c.labels.get(labels::SERVICE).map_or("", String::as_str))
        })
    }

    /// The attached containers' output and exits until the project is to stop; returns the
    /// exit code so far and why it stops.
    fn stream_attached(
        &self,
        opts: &AttachOptions,
        mut followers: Followers,
        interrupts: &(dyn Fn() -> usize + Sync),
        on: &mut dyn FnMut(AttachEvent<'_>),
    ) -> Result<(i32, StopReason)> {
        let keep = self.attached_filter(opts)?;
        let mine = |cs: Vec<Summary>| -> Vec<Summary> { cs.into_iter().filter(&keep).collect() };
        let first = mine(self.project_containers()?);
        let names: Vec<String> = first.iter().map(source_name).collect();
        on(AttachEvent::Attaching(&names));
        // Each exit is reported once: by the container and the time it ended, counting
        // only what ended since this `up` began (a container may end before we look at it).
        let mut reported: HashSet<(String, String)> = HashSet::new();
        let mut exit_code = 0;
        let mut aborting = false;
        // Woken by log writes, state changes and new containers (inotify), or a Ctrl-C.
        let store = self.root.join("containers");
        let watch = crate::engine::container::state::Watch::writes(&[&store]);
        let mut watched: BTreeSet<String> = BTreeSet::new();
        loop {
            let containers = mine(self.project_containers()?);
            // A directory watched only now may have changed since it was read.
            let mut fresh = false;
            if let Some(w) = &watch {
                for c in &containers {
                    if watched.insert(c.id.clone()) {
                        w.add(&store.join(&c.id));
                        fresh = true;
                    }
                }
            }
            for c in &containers {
                let name = source_name(c);
                let f = followers.0.entry(c.id.clone()).or_insert_with(|| {
                    let path = self.containers.log_path(&c.id).unwrap_or_default();
                    logs::Follower::at_start(&path)
                });
                for rec in f.poll() {
                    on(AttachEvent::Log {
                        source: &name,
                        record: &rec,
                    });
                }
            }
            if interrupts() > 0 {
                return Ok((exit_code, StopReason::Interrupted));
            }
            let mut exited_now = Vec::new();
            for c in &containers {
                let Some(end) = c.finished_at.as_deref() else {
                    continue;
                };
                let after_start = end
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| opts.since.is_none_or(|s| t >= s));
                if after_start && reported.insert((c.id.clone(), end.to_owned())) {
                    exited_now.push(c);
                }
            }
            for c in &exited_now {
                let code = c.exit_code.unwrap_or(0);
                // Running again (or about to be): its restart policy restarted it.
                let restarting = !matches!(c.state, Status::Exited | Status::Dead);
                on(AttachEvent::Exited {
                    source: &source_name(c),
                    code,
                    restarting,
                });
                if restarting {
                    continue;
                }
                if opts.exit_code_from.as_deref()
                    == c.labels.get(labels::SERVICE).map(String::as_str)
                {
                    exit_code = code;
                }
                let failed = code != 0;
                if (opts.abort_on_container_exit || opts.exit_code_from.is_some())
                    || (opts.abort_on_container_failure && failed)
                {
                    if !aborting && opts.exit_code_from.is_none() {
                        exit_code = code;
                    }
                    aborting = true;
                }
            }
            let all_down = !containers.is_empty()
                && containers
                    .iter()
                    .all(|c| matches!(c.state, Status::Exited | Status::Dead));
            if aborting {
                return Ok((exit_code, StopReason::Aborting));
            }
            if all_down {
                return Ok((exit_code, StopReason::AllExited));
            }
            match &watch {
                Some(_) if fresh => {}
                Some(w) => w.wait(Duration::from_millis(500)),
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Stops everything that still runs, in dependency order; a second interrupt meanwhile
    /// kills what still runs.
    fn stop_attached(
        &self,
        interrupts: &(dyn Fn() -> usize + Sync),
        rep: &mut dyn Reporter,
    ) -> Result<()> {
        let plan = self.plan_stop(&[])?;
        let finished = std::sync::atomic::AtomicBool::new(false);
        let outcome = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                    if interrupts() >= 2 {
                        if let Ok(cs) = self.project_containers() {
                            for c in cs.iter().filter(|c| c.state == Status::Running) {
                                let _ = self.containers.kill(&c.id, "SIGKILL");
                            }
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            for w in &plan.warnings {
                rep.warn(w);
            }
            let outcome = self.execute(&plan, rep);
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            outcome
        });
        super::service::check(&plan, &outcome)
    }

    /// `logs`: the records of the services' containers (with `follow`, then new ones until
    /// every container has stopped for good), handed to `on` as they are read.
    ///
    /// # Errors
    /// An unknown service, or a store cannot be read.
    pub fn logs(&self, opts: &LogsOptions, on: &mut dyn FnMut(LogEvent<'_>)) -> Result<()> {
        let mut cs = self.service_containers(&opts.services)?;
        if let Some(i) = opts.index {
            cs.retain(|c| c.labels.get(labels::NUMBER) == Some(&i.to_string()));
        }
        let mut by_name: Vec<&Summary> = cs.iter().collect();
        by_name.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<String> = by_name.into_iter().map(source_name).collect();
        on(LogEvent::Sources(&names));
        let keep = |r: &logs::LogRecord| -> bool {
            let t = r.time.parse::<jiff::Timestamp>().ok();
            opts.since.is_none_or(|s| t.is_some_and(|t| t >= s))
                && opts.until.is_none_or(|u| t.is_some_and(|t| t <= u))
        };
        let mut followers = Vec::new();
        for c in &cs {
            let name = source_name(c);
            let path = self.containers.log_path(&c.id)?;
            let mut recs: Vec<logs::LogRecord> = logs::read_all(&path)
                .into_iter()
                .filter(|r| keep(r))
                .collect();
            if let Some(n) = opts.tail {
                let skip = recs.len().saturating_sub(n);
                recs.drain(..skip);
            }
            for r in &recs {
                on(LogEvent::Record {
                    source: &name,
                    record: r,
                });
            }
            if opts.follow {
                followers.push((name, c.clone(), logs::Follower::at_end(&path)));
            }
        }
        // Woken by the followed logs' writes and the states' changes (inotify), not a timer.
        let watch = crate::engine::container::state::Watch::writes(
            &followers
                .iter()
                .map(|(_, c, _)| self.containers.container_dir(&c.id))
                .collect::<Vec<_>>(),
        );
        while opts.follow && !followers.is_empty() {
            for (name, _, f) in &mut followers {
                for r in f.poll() {
                    if keep(&r) {
                        on(LogEvent::Record {
                            source: name,
                            record: &r,
                        });
                    }
                }
            }
            // Stop following when every followed container has stopped for good
            // (exited, and no supervisor left that could restart it).
            let all_done = followers.iter().all(|(_, c, _)| {
                let st = self.containers.state(&c.id);
                matches!(st.status, Status::Exited | Status::Dead)
                    && !crate::engine::container::state::alive(
                        st.supervisor_pid,
                        st.supervisor_start,
                    )
            });
            if all_done {
                for (name, _, f) in &mut followers {
                    for r in f.poll() {
                        on(LogEvent::Record {
                            source: name,
                            record: &r,
                        });
                    }
                }
                break;
            }
            match &watch {
                Some(w) => w.wait(Duration::from_millis(500)),
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Ok(())
    }

    /// `events`: container state changes of the services' containers as they happen, handed
    /// to `on`, until `until` (or forever).
    ///
    /// # Errors
    /// An unknown service, or the store cannot be read.
    pub fn events(
        &self,
        services: &[String],
        until: Option<jiff::Timestamp>,
        on: &mut dyn FnMut(ContainerEvent<'_>),
    ) -> Result<()> {
        let mut last: BTreeMap<String, (Status, String)> = BTreeMap::new();
        let mut first = true;
        // Woken by containers appearing or going and by their states' changes (inotify).
        let store = self.root.join("containers");
        let watch = crate::engine::container::state::Watch::states(&[&store]);
        loop {
            if until.is_some_and(|u| jiff::Timestamp::now() > u) {
                return Ok(());
            }
            let cs = self.service_containers(services)?;
            let mut seen = Vec::new();
            let mut fresh = false;
            for c in &cs {
                if !last.contains_key(&c.id)
                    && let Some(w) = &watch
                {
                    w.add(&store.join(&c.id));
                    fresh = true;
                }
                seen.push(c.id.clone());
                let health = c.health.as_str().to_string();
                let now = (c.state, health.clone());
                let before = last.insert(c.id.clone(), now.clone());
                if first || before.as_ref() == Some(&now) {
                    continue;
                }
                let action = match (before.map(|b| b.0), c.state) {
                    (None, Status::Created) => "create".to_string(),
                    (_, Status::Running) if now.1 == "healthy" || now.1 == "unhealthy" => {
                        format!("health_status: {}", now.1)
                    }
                    (_, Status::Running) => "start".to_string(),
                    (_, Status::Exited) => "die".to_string(),
                    (_, Status::Paused) => "pause".to_string(),
                    (_, Status::Restarting) => "restart".to_string(),
                    (_, s) => s.as_str().to_string(),
                };
                on(ContainerEvent::Changed {
                    container: c,
                    action: &action,
                });
            }
            let gone: Vec<String> = last.keys().filter(|k| !seen.contains(k)).cloned().collect();
            for id in gone {
                last.remove(&id);
                on(ContainerEvent::Destroyed { id: &id });
            }
            first = false;
            match &watch {
                // A directory watched only now may have changed since it was read.
                Some(_) if fresh => {}
                Some(w) => w.wait(Duration::from_millis(1000)),
                None => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}
