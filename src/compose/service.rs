//! The compose service: what each compose verb does, as methods of [`Stack`] taking option
//! structs (docker compose's `pkg/compose` under `cmd/compose/<verb>.go`). A verb of the CLI
//! turns its flags into these options, calls one method and prints what comes back; progress
//! and warnings reach it through a [`Reporter`], never as printed text.
//!
//! Plans are made by `plan` (reconcile) and carried out by the [`executor`](super::executor);
//! this module only sequences them (images before the containers that use them, stops before
//! starts, repairs before a plan runs on the networks).

use std::collections::BTreeMap;

use super::executor::{Event, Outcome, execute};
use super::{Error, ProjectLock, Result, Stack, labels};
use crate::engine::build;
use crate::engine::container::{Status, Summary};
use crate::plan::{self, DownOptions, Node, Op, Plan, PullPolicy, UpOptions};

/// What the compose layer tells its caller while it works: the events of the plans it runs,
/// steps done outside a plan and warnings. The CLI shows them; a caller that wants nothing
/// shown implements the methods as no-ops.
pub trait Reporter {
    /// How many operations may run at once (`--parallel`); 0 for no bound.
    fn parallel(&self) -> usize {
        0
    }
    /// A plan is about to run.
    fn plan_started(&mut self, _plan: &Plan) {}
    /// One event of the running plan.
    fn event(&mut self, node: &Node, event: &Event);
    /// The plan has run.
    fn plan_finished(&mut self, _plan: &Plan) {}
    /// A step done outside a plan (`Container web-1`, `Killed`).
    fn line(&mut self, kind: &str, object: &str, done: &str);
    /// A warning.
    fn warn(&mut self, text: &str);
    /// Under `--dry-run` (see [`StackOptions::dry_run`](super::StackOptions::dry_run)): the
    /// plan that would run.
    fn show_plan(&mut self, plan: &Plan);
    /// Where the builder's events of `service`'s image build go while it runs (they come
    /// from the builder's threads); nowhere unless the caller shows them.
    fn build_progress(&mut self, _service: &str) -> Box<dyn Fn(build::Event) + Sync + '_> {
        Box::new(|_| {})
    }
}

/// `kill`.
#[derive(Debug, Clone, Default)]
pub struct KillOptions {
    /// The services (all when empty).
    pub services: Vec<String>,
    /// The signal (`SIGKILL`, `9`, …).
    pub signal: String,
    /// Containers of services the project no longer has too.
    pub remove_orphans: bool,
}

/// `scale`.
#[derive(Debug, Clone, Default)]
pub struct ScaleOptions {
    /// Service and number of replicas, as given.
    pub scale: Vec<(String, u32)>,
    /// Leave the services they depend on alone.
    pub no_deps: bool,
}

/// `pull`.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The services (all when empty).
    pub services: Vec<String>,
    /// The services they depend on too.
    pub include_deps: bool,
    /// Leave out services that have a `build:` section.
    pub ignore_buildable: bool,
    /// `--policy missing`: only images the store lacks.
    pub missing_only: bool,
    /// A failed pull is not an error.
    pub ignore_failures: bool,
}

/// `push`.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// The services (all when empty).
    pub services: Vec<String>,
    /// The services they depend on too.
    pub include_deps: bool,
    /// A failed push is a warning.
    pub ignore_failures: bool,
}

/// `wait`.
#[derive(Debug, Clone, Default)]
pub struct WaitServicesOptions {
    /// The services (all when empty).
    pub services: Vec<String>,
    /// Take the project down once the first container has exited.
    pub down_project: bool,
}

impl Stack {
    /// Runs a plan, reporting its events; decides nothing.
    pub fn execute(&self, plan: &Plan, rep: &mut dyn Reporter) -> Outcome {
        rep.plan_started(plan);
        let parallel = rep.parallel();
        let outcome = execute(plan, self, parallel, |node, ev| rep.event(node, ev));
        rep.plan_finished(plan);
        outcome
    }

    /// Runs a plan (under `--dry-run`, shows it instead); its failures become one error.
    ///
    /// # Errors
    /// [`Error::Failed`]: what failed, each cause once.
    pub fn apply(&self, plan: &Plan, rep: &mut dyn Reporter) -> Result<()> {
        if self.options.dry_run {
            rep.show_plan(plan);
            return Ok(());
        }
        let outcome = self.execute(plan, rep);
        check(plan, &outcome)
    }

    /// Runs a plan after reporting its warnings; its failures become one error.
    fn run_plan(&self, plan: &Plan, rep: &mut dyn Reporter) -> Result<()> {
        for w in &plan.warnings {
            rep.warn(w);
        }
        let outcome = self.execute(plan, rep);
        check(plan, &outcome)
    }

    /// Takes the project lock (see [`ProjectLock`]).
    ///
    /// # Errors
    /// The lock file cannot be made or locked.
    pub fn lock(&self) -> Result<ProjectLock> {
        ProjectLock::take(&self.root, &self.project.name)
            .map_err(|e| Error::context("cannot lock the project".into(), e))
    }

    /// Brings back what a crash or reboot took from the networks (bridges, rules, DNS
    /// servers, port proxies) and removes namespaces an interrupted command left, before a
    /// plan runs on them; each repair is reported as a warning.
    ///
    /// # Errors
    /// A network cannot be repaired or a store read.
    pub fn repair(&self, rep: &mut dyn Reporter) -> Result<()> {
        for w in self.networks.reconcile()? {
            rep.warn(&w);
        }
        for key in self.remove_stray_netns()? {
            rep.warn(&format!(
                "removed the network namespace of {key}, left by an interrupted command"
            ));
        }
        Ok(())
    }

    /// What `up` would do now.
    ///
    /// # Errors
    /// Reconcile refuses (unknown service, conflicting flags, missing external objects), or
    /// a store cannot be read.
    pub fn plan_up(&self, up: &UpOptions) -> Result<Plan> {
        Ok(plan::plan_up(&self.desired(), &self.observed()?, up)?)
    }

    /// Reconciles and applies (under `--dry-run`, shows the plan): images first, then
    /// everything else planned again, so that a pulled or built image is compared with the
    /// containers' images.
    ///
    /// # Errors
    /// Planning fails, or operations fail ([`Error::Failed`]).
    pub fn converge(&self, up: &UpOptions, rep: &mut dyn Reporter) -> Result<()> {
        let plan = self.plan_up(up)?;
        if self.options.dry_run {
            rep.show_plan(&plan);
            return Ok(());
        }
        let image_nodes: Vec<&Node> = plan
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::PullImage { .. } | Op::BuildImage { .. }))
            .collect();
        let plan = if image_nodes.is_empty() {
            plan
        } else {
            let mut images = Plan::default();
            for n in image_nodes {
                images.push(n.op.clone(), n.cause.clone(), vec![]);
            }
            self.run_plan(&images, rep)?;
            let mut again = up.clone();
            // What was pulled or built is now in the store: don't do it twice.
            again.pull = Some(PullPolicy::Never);
            again.build = false;
            again.no_build = true;
            self.plan_up(&again)?
        };
        self.run_plan(&plan, rep)
    }

    /// What `down` would do now.
    ///
    /// # Errors
    /// Reconcile refuses, or a store cannot be read.
    pub fn plan_down(&self, opts: &DownOptions) -> Result<Plan> {
        Ok(plan::plan_down(&self.desired(), &self.observed()?, opts)?)
    }

    /// `down` (under `--dry-run`, shows the plan): repairs, runs the plan, then finishes what
    /// the removals left for later ([`Stack::settle`]).
    ///
    /// # Errors
    /// Planning, repairs, or operations that fail.
    pub fn down(&self, opts: &DownOptions, rep: &mut dyn Reporter) -> Result<()> {
        let plan = self.plan_down(opts)?;
        if self.options.dry_run {
            rep.show_plan(&plan);
            return Ok(());
        }
        self.repair(rep)?;
        let outcome = self.execute(&plan, rep);
        let settled = self.settle();
        check(&plan, &outcome)?;
        settled
    }

    /// The service containers (no one-offs) of the named services (all when empty), in
    /// start order of their services, replicas by number.
    ///
    /// # Errors
    /// An unknown service, or the container store cannot be read.
    pub fn service_containers(&self, services: &[String]) -> Result<Vec<Summary>> {
        for s in services {
            if !self.project.services.contains_key(s) {
                return Err(Error::NotFound(format!("no such service: {s}")));
            }
        }
        let desired = self.desired();
        let all: Vec<String> = desired.services.iter().map(|s| s.name.clone()).collect();
        let order = plan::select_services(&desired, &all, true)?;
        let mut cs = self.project_containers()?;
        cs.retain(|c| {
            let svc = c.labels.get(labels::SERVICE).map_or("", String::as_str);
            c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
                && (services.is_empty() || services.iter().any(|s| s == svc))
        });
        let pos = |c: &Summary| {
            let svc = c.labels.get(labels::SERVICE).map_or("", String::as_str);
            let n: u32 = c
                .labels
                .get(labels::NUMBER)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (order.iter().position(|s| s == svc).unwrap_or(usize::MAX), n)
        };
        cs.sort_by_key(pos);
        Ok(cs)
    }

    /// The container of a service with replica number `index`.
    ///
    /// # Errors
    /// An unknown service, no such replica, or the store cannot be read.
    pub fn container_of(&self, service: &str, index: u32) -> Result<Summary> {
        self.service_containers(&[service.to_string()])?
            .into_iter()
            .find(|c| c.labels.get(labels::NUMBER) == Some(&index.to_string()))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "service {service} has no container with index {index}"
                ))
            })
    }

    /// A plan that stops the containers of the given services (all when empty), dependents
    /// first.
    ///
    /// # Errors
    /// Planning fails or a store cannot be read.
    pub fn plan_stop(&self, services: &[String]) -> Result<Plan> {
        let down = self.plan_down(&DownOptions {
            services: services.to_vec(),
            ..DownOptions::default()
        })?;
        let mut plan = Plan::default();
        let mut remap: BTreeMap<usize, usize> = BTreeMap::new();
        for (i, n) in down.nodes.into_iter().enumerate() {
            if let Op::StopContainer { .. } = n.op {
                let after = n
                    .after
                    .iter()
                    .filter_map(|a| remap.get(a).copied())
                    .collect();
                remap.insert(i, plan.push(n.op, "stop".to_string(), after));
            }
        }
        Ok(plan)
    }

    /// A plan that starts the stopped containers of the given services (all when empty),
    /// each after its dependencies meet their conditions.
    ///
    /// # Errors
    /// No container to start, an unknown service, or a store cannot be read.
    pub fn plan_start(&self, services: &[String]) -> Result<Plan> {
        let cs = self.service_containers(services)?;
        if cs.is_empty() {
            return Err(Error::NotFound("no container to start".into()));
        }
        let desired = self.desired();
        let mut plan = Plan::default();
        let mut started: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for c in &cs {
            let svc = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
            if !matches!(c.state, Status::Created | Status::Exited) {
                continue;
            }
            let mut after = Vec::new();
            if let Some(d) = desired.service(&svc) {
                for dep in &d.depends_on {
                    if let Some(ids) = started.get(&dep.service) {
                        let w = plan.push(
                            Op::WaitFor {
                                service: dep.service.clone(),
                                condition: dep.condition,
                                required: dep.required,
                            },
                            format!("{svc} depends on it"),
                            ids.clone(),
                        );
                        after.push(w);
                    }
                }
            }
            let id = plan.push(
                Op::StartContainer {
                    service: svc.clone(),
                    name: c.name.clone(),
                },
                c.state.as_str().to_string(),
                after,
            );
            started.entry(svc).or_default().push(id);
        }
        Ok(plan)
    }

    /// `stop`: the containers of the services, dependents first.
    ///
    /// # Errors
    /// Planning, or containers that cannot stop.
    pub fn stop(&self, services: &[String], rep: &mut dyn Reporter) -> Result<()> {
        let plan = self.plan_stop(services)?;
        self.apply(&plan, rep)
    }

    /// `start`: the stopped containers of the services, dependencies first.
    ///
    /// # Errors
    /// Nothing to start, or containers that cannot start.
    pub fn start(&self, services: &[String], rep: &mut dyn Reporter) -> Result<()> {
        let plan = self.plan_start(services)?;
        self.apply(&plan, rep)
    }

    /// `restart`: [`Stack::stop`], then [`Stack::start`] (under `--dry-run`, the stop plan
    /// only).
    ///
    /// # Errors
    /// As stop and start.
    pub fn restart(&self, services: &[String], rep: &mut dyn Reporter) -> Result<()> {
        self.stop(services, rep)?;
        if self.options.dry_run {
            return Ok(());
        }
        self.start(services, rep)
    }

    /// `kill`: sends a signal to the running containers of the services.
    ///
    /// # Errors
    /// No running container, or one that cannot be signalled.
    pub fn kill(&self, opts: &KillOptions, rep: &mut dyn Reporter) -> Result<()> {
        let mut cs = self.service_containers(&opts.services)?;
        if opts.remove_orphans {
            let known: Vec<&String> = self.project.services.keys().collect();
            cs.extend(self.project_containers()?.into_iter().filter(|c| {
                c.labels
                    .get(labels::SERVICE)
                    .is_some_and(|s| !known.contains(&s))
            }));
        }
        let mut any = false;
        for c in cs.iter().filter(|c| c.state == Status::Running) {
            any = true;
            self.containers
                .kill(&c.id, &opts.signal)
                .map_err(|e| Error::context(format!("cannot kill {}", c.name), e.into()))?;
            rep.line("Container", &c.name, "Killed");
        }
        if !any {
            return Err(Error::NotFound("no container to kill".into()));
        }
        Ok(())
    }

    /// The containers of the services that `rm` may remove (created, exited or dead).
    ///
    /// # Errors
    /// An unknown service, or the store cannot be read.
    pub fn removable_containers(&self, services: &[String]) -> Result<Vec<Summary>> {
        Ok(self
            .service_containers(services)?
            .into_iter()
            .filter(|c| matches!(c.state, Status::Created | Status::Exited | Status::Dead))
            .collect())
    }

    /// `rm`: removes the given containers (from [`Stack::removable_containers`]) and, with
    /// `volumes`, their services' anonymous volumes that no container uses any more.
    ///
    /// # Errors
    /// A container or volume that cannot be removed.
    pub fn remove(&self, cs: &[Summary], volumes: bool, rep: &mut dyn Reporter) -> Result<()> {
        let mut plan = Plan::default();
        for c in cs {
            plan.push(
                Op::RemoveContainer {
                    service: c.labels.get(labels::SERVICE).cloned().unwrap_or_default(),
                    name: c.name.clone(),
                },
                "rm",
                vec![],
            );
        }
        self.apply(&plan, rep)?;
        if volumes {
            // Anonymous volumes of the removed containers: the service's, except those a
            // container still uses (another replica's, or one shared by `volumes_from`).
            let used = self.volumes.referenced_by_containers()?;
            for v in self.volumes.list()? {
                let ours = v.labels.get(labels::PROJECT) == Some(&self.project.name)
                    && v.labels.get("tug.anonymous").map(String::as_str) == Some("true")
                    && v.labels.get(labels::SERVICE).is_some_and(|s| {
                        cs.iter().any(|c| c.labels.get(labels::SERVICE) == Some(s))
                    });
                if ours && !used.contains_key(&v.name) {
                    self.volumes.remove(&v.name, &[])?;
                }
            }
        }
        Ok(())
    }

    /// `pause` (or with `pause` false, `unpause`): the running (paused) containers of the
    /// services.
    ///
    /// # Errors
    /// A container that cannot be paused or unpaused.
    pub fn pause(&self, services: &[String], pause: bool, rep: &mut dyn Reporter) -> Result<()> {
        for c in self.service_containers(services)? {
            let wanted = if pause {
                c.state == Status::Running
            } else {
                c.state == Status::Paused
            };
            if wanted {
                self.containers.pause(&c.id, pause)?;
                rep.line(
                    "Container",
                    &c.name,
                    if pause { "Paused" } else { "Unpaused" },
                );
            }
        }
        Ok(())
    }

    /// `scale`: the services to the given numbers of replicas, without recreating.
    ///
    /// # Errors
    /// Planning, or operations that fail.
    pub fn scale(&self, opts: &ScaleOptions, rep: &mut dyn Reporter) -> Result<()> {
        let plan = self.plan_up(&UpOptions {
            services: opts.scale.iter().map(|(s, _)| s.clone()).collect(),
            no_deps: opts.no_deps,
            no_recreate: true,
            scale: opts.scale.iter().cloned().collect(),
            ..UpOptions::default()
        })?;
        self.apply(&plan, rep)
    }

    /// `pull`: the images of the services that name one (not those built by
    /// `pull_policy: build`).
    ///
    /// # Errors
    /// A failed pull, unless `ignore_failures`.
    pub fn pull(&self, opts: &PullOptions, rep: &mut dyn Reporter) -> Result<()> {
        let desired = self.desired();
        let services = plan::select_services(&desired, &opts.services, !opts.include_deps)?;
        let mut images: Vec<String> = Vec::new();
        for name in &services {
            if let Some(s) = self.project.services.get(name)
                && let Some(img) = &s.image
                && s.pull_policy != Some(crate::project::model::PullPolicy::Build)
                && !(opts.ignore_buildable && s.build.is_some())
                && !images.contains(img)
            {
                if opts.missing_only && self.images.resolve(img).is_ok() {
                    continue;
                }
                images.push(img.clone());
            }
        }
        let mut plan = Plan::default();
        for image in images {
            plan.push(Op::PullImage { image }, "pull", vec![]);
        }
        let outcome = self.execute(&plan, rep);
        if !outcome.failed.is_empty() && !opts.ignore_failures {
            let msgs: Vec<String> = outcome.failed.iter().map(|(_, e)| e.to_string()).collect();
            return Err(Error::Failed(msgs.join("\n")));
        }
        Ok(())
    }

    /// `push`: the images of the services that have both `build:` and `image:`.
    ///
    /// # Errors
    /// A failed push, unless `ignore_failures` (then it is a warning).
    pub fn push(&self, opts: &PushOptions, rep: &mut dyn Reporter) -> Result<()> {
        let quiet = crate::engine::image::no_progress();
        let selected: Vec<String> = if opts.services.is_empty() {
            self.project.services.keys().cloned().collect()
        } else {
            plan::select_services(&self.desired(), &opts.services, !opts.include_deps)?
        };
        for (name, s) in &self.project.services {
            if !selected.contains(name) {
                continue;
            }
            let (Some(img), Some(_)) = (&s.image, &s.build) else {
                continue;
            };
            match self.images.push(None, img, &quiet) {
                Ok(_) => rep.line("Image", img, "Pushed"),
                Err(e) if opts.ignore_failures => rep.warn(&format!("{img}: {e}")),
                Err(e) => return Err(Error::context(format!("cannot push {img}"), e.into())),
            }
        }
        Ok(())
    }

    /// Pushes one image of the store (`build --push`).
    ///
    /// # Errors
    /// The push fails.
    pub(super) fn push_image(&self, image: &str) -> Result<()> {
        let quiet = crate::engine::image::no_progress();
        self.images
            .push(None, image, &quiet)
            .map(|_| ())
            .map_err(|e| Error::context(format!("cannot push {image}"), e.into()))
    }

    /// `wait`: waits for the containers of the services to exit, calling `exited` with each
    /// one's code, in start order; with `down_project`, after the first, takes the project
    /// down. Returns the last code.
    ///
    /// # Errors
    /// A store cannot be read, or the project cannot be taken down.
    pub fn wait_services(
        &self,
        opts: &WaitServicesOptions,
        exited: &mut dyn FnMut(i32),
        rep: &mut dyn Reporter,
    ) -> Result<i32> {
        let cs = self.service_containers(&opts.services)?;
        let mut last = 0;
        for c in &cs {
            let code = self.containers.wait(&c.id, None)?.unwrap_or(0);
            exited(code);
            last = code;
            if opts.down_project {
                break;
            }
        }
        if opts.down_project {
            let _l = self.lock()?;
            let plan = self.plan_down(&DownOptions::default())?;
            self.apply(&plan, rep)?;
        }
        Ok(last)
    }
}

/// Turns the failures of a run into one error.
///
/// # Errors
/// [`Error::Failed`] when something failed.
pub fn check(plan: &Plan, outcome: &Outcome) -> Result<()> {
    match failures(plan, outcome) {
        Some(m) => Err(Error::Failed(m)),
        None => Ok(()),
    }
}

/// The error of a plan that failed, each cause once: operations that failed for the same
/// reason share one line (`wait for db (service_healthy)` of three dependents is one line;
/// `start container a-1, b-1: exec /x: no such file or directory` names both containers).
/// `None` when nothing failed.
#[must_use]
pub fn failures(plan: &Plan, outcome: &Outcome) -> Option<String> {
    if outcome.failed.is_empty() {
        return None;
    }
    // (cause, operations) in the order the causes first failed.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (i, e) in &outcome.failed {
        let op = plan.nodes[*i].op.to_string();
        let cause = cause(&e.to_string());
        match groups.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, ops)) => {
                if !ops.contains(&op) {
                    ops.push(op);
                }
            }
            None => groups.push((cause, vec![op])),
        }
    }
    let lines: Vec<String> = groups
        .into_iter()
        .map(|(cause, ops)| format!("{}: {cause}", join_ops(&ops)))
        .collect();
    Some(lines.join("\n"))
}

/// `start container a-1`, `start container b-1` → `start container a-1, b-1`.
fn join_ops(ops: &[String]) -> String {
    let Some(first) = ops.first() else {
        return String::new();
    };
    let verb = |o: &str| o.rsplit_once(' ').map(|(v, _)| v.to_owned());
    let same = ops.iter().all(|o| verb(o) == verb(first));
    if same && let Some(v) = verb(first) {
        let objects: Vec<&str> = ops
            .iter()
            .filter_map(|o| o.rsplit_once(' ').map(|(_, x)| x))
            .collect();
        return format!("{v} {}", objects.join(", "));
    }
    ops.join(", ")
}

/// An error without the engine's `cannot start container <id>: ` lead-in, which only
/// repeats the operation.
fn cause(e: &str) -> String {
    let mut rest = e;
    while let Some(after) = rest.strip_prefix("cannot ") {
        let Some((head, tail)) = after.split_once(": ") else {
            break;
        };
        let id = head.rsplit(' ').next().unwrap_or("");
        if id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            rest = tail;
        } else {
            break;
        }
    }
    rest.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Condition;

    #[test]
    fn failures_name_each_cause_once() {
        let mut plan = Plan::default();
        let w1 = plan.push(
            Op::WaitFor {
                service: "db".into(),
                condition: Condition::ServiceHealthy,
                required: true,
            },
            "web depends on it",
            vec![],
        );
        let w2 = plan.push(
            Op::WaitFor {
                service: "db".into(),
                condition: Condition::ServiceHealthy,
                required: true,
            },
            "api depends on it",
            vec![],
        );
        let s1 = plan.push(
            Op::StartContainer {
                service: "a".into(),
                name: "p-a-1".into(),
            },
            "new",
            vec![],
        );
        let s2 = plan.push(
            Op::StartContainer {
                service: "b".into(),
                name: "p-b-1".into(),
            },
            "new",
            vec![],
        );
        let unhealthy = || Error::Dependency("db is unhealthy".into());
        let start = |id: String| {
            Error::Container(crate::engine::container::ContainerError::Start {
                id,
                reason: "exec /x: not found".into(),
            })
        };
        let outcome = Outcome {
            failed: vec![
                (w1, unhealthy()),
                (w2, unhealthy()),
                (s1, start("a".repeat(64))),
                (s2, start("b".repeat(64))),
            ],
            ..Outcome::default()
        };
        assert_eq!(
            failures(&plan, &outcome).unwrap(),
            "wait for db (service_healthy): db is unhealthy\nstart container p-a-1, p-b-1: exec /x: not found"
        );
        assert!(failures(&plan, &Outcome::default()).is_none());
    }
}
