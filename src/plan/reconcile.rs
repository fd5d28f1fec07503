//! Reconcile: compare the desired state with the observed state and emit the plan.
//!
//! All decisions of `up` and `down` live here: what to create, recreate, scale, start, stop and
//! remove, and in which order. The executor only carries the result out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ops::{Op, Plan};
use super::state::{
    Condition, Desired, DesiredResource, DesiredService, DownOptions, Observed, ObservedContainer,
    PullPolicy, RunState, UpOptions,
};
use crate::project::graph;

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReconcileError {
    /// A service named on the command line is not in the project.
    #[error("no such service: {0}")]
    NoSuchService(String),
    /// `--no-recreate` with `--force-recreate`, and the like.
    #[error("{0}")]
    Flags(String),
    /// An external network or volume does not exist.
    #[error("{kind} {name} declared as external, but could not be found")]
    ExternalMissing {
        /// `network` or `volume`.
        kind: &'static str,
        /// Engine name.
        name: String,
    },
    /// The image is missing and may not be pulled.
    #[error("service {service}: image {image} is not in the store and pull_policy is never{hint}")]
    ImageMissing {
        /// Service.
        service: String,
        /// Image reference.
        image: String,
        /// Extra advice.
        hint: String,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, ReconcileError>;

/// The container name of replica `number` of a service.
#[must_use]
pub fn container_name(project: &str, service: &DesiredService, number: u32) -> String {
    match &service.container_name {
        Some(n) => n.clone(),
        None => format!("{project}-{}-{number}", service.name),
    }
}

/// The services an operation on `named` touches: the named ones plus, unless `no_deps`, their
/// dependencies (transitively), in the project's order. Empty `named` means every service.
///
/// # Errors
/// A named service that the project does not have.
pub fn select_services(desired: &Desired, named: &[String], no_deps: bool) -> Result<Vec<String>> {
    for n in named {
        if desired.service(n).is_none() {
            return Err(ReconcileError::NoSuchService(n.clone()));
        }
    }
    let services: Vec<(&str, Vec<&str>)> = desired
        .services
        .iter()
        .map(|s| {
            let deps = s.depends_on.iter().map(|d| d.service.as_str()).collect();
            (s.name.as_str(), deps)
        })
        .collect();
    Ok(graph::select(&services, named, no_deps))
}

/// Services in start order: every service after its dependencies and the services it takes
/// mounts or a namespace from (`created_after`), ties in file order ([`graph::start_order`]).
fn start_order<'a>(desired: &'a Desired, selected: &[String]) -> Vec<&'a DesiredService> {
    let chosen: Vec<&DesiredService> = desired
        .services
        .iter()
        .filter(|s| selected.contains(&s.name))
        .collect();
    let services: Vec<(&str, Vec<&str>)> = chosen
        .iter()
        .map(|s| {
            let after = s
                .depends_on
                .iter()
                .map(|d| d.service.as_str())
                .chain(s.created_after.iter().map(String::as_str))
                .collect();
            (s.name.as_str(), after)
        })
        .collect();
    graph::start_order(&services)
        .into_iter()
        .filter_map(|n| chosen.iter().find(|s| s.name == n).copied())
        .collect()
}

fn describe_state(c: &ObservedContainer) -> &'static str {
    match c.state {
        RunState::Created => "created",
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Exited => "exited",
    }
}

/// Emits a create node for every used, missing network or volume (`kind`); a missing
/// external one is an error. Returns the node of each created key.
fn plan_resources<'a>(
    plan: &mut Plan,
    declared: &'a [DesiredResource],
    used: &BTreeSet<&str>,
    existing: &[String],
    kind: &'static str,
) -> Result<HashMap<&'a str, usize>> {
    let mut nodes = HashMap::new();
    for r in declared {
        if !used.contains(r.key.as_str()) || existing.contains(&r.name) {
            continue;
        }
        if r.external {
            return Err(ReconcileError::ExternalMissing {
                kind,
                name: r.name.clone(),
            });
        }
        let (key, name) = (r.key.clone(), r.name.clone());
        let op = if kind == "network" {
            Op::CreateNetwork { key, name }
        } else {
            Op::CreateVolume { key, name }
        };
        nodes.insert(r.key.as_str(), plan.push(op, "missing", vec![]));
    }
    Ok(nodes)
}

/// Plans `up`.
///
/// # Errors
/// Unknown services, contradictory flags, missing external resources or unpullable images.
pub fn plan_up(desired: &Desired, observed: &Observed, opts: &UpOptions) -> Result<Plan> {
    check_flags(desired, opts)?;
    let selected = select_services(desired, &opts.services, opts.no_deps)?;
    let order = start_order(desired, &selected);
    let mut r = Reconciler {
        desired,
        observed,
        opts,
        named: if opts.services.is_empty() {
            selected.iter().cloned().collect()
        } else {
            opts.services.iter().cloned().collect()
        },
        selected,
        plan: Plan::default(),
        net_nodes: HashMap::new(),
        vol_nodes: HashMap::new(),
        image_nodes: HashMap::new(),
        image_changed: BTreeSet::new(),
        start_nodes: BTreeMap::new(),
        create_nodes: BTreeMap::new(),
        recreated: BTreeSet::new(),
    };
    r.resources(&order)?;
    r.images(&order)?;
    // Containers, service by service in start order.
    for s in &order {
        r.service(s);
    }
    r.orphans();
    r.final_waits(&order);
    Ok(prune_idle_waits(r.plan))
}

/// Flags that exclude each other, and `--scale` of a service the project does not have.
fn check_flags(desired: &Desired, opts: &UpOptions) -> Result<()> {
    if opts.force_recreate && opts.no_recreate {
        return Err(ReconcileError::Flags(
            "--force-recreate and --no-recreate are incompatible".into(),
        ));
    }
    if opts.always_recreate_deps && opts.no_recreate {
        return Err(ReconcileError::Flags(
            "--always-recreate-deps and --no-recreate are incompatible".into(),
        ));
    }
    if opts.build && opts.no_build {
        return Err(ReconcileError::Flags(
            "--build and --no-build are incompatible".into(),
        ));
    }
    for s in opts.scale.keys() {
        if desired.service(s).is_none() {
            return Err(ReconcileError::NoSuchService(s.clone()));
        }
    }
    Ok(())
}

/// The decisions of `up`, made one phase at a time (resources, images, each service's
/// containers, orphans, `--wait`); the plan grows in that order, so node numbers (and the
/// printed plan) follow it.
struct Reconciler<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    opts: &'a UpOptions,
    /// The services this run touches.
    selected: Vec<String>,
    /// The services named on the command line (all selected ones when none is).
    named: BTreeSet<String>,
    plan: Plan,
    /// The create node of each missing network and volume, by key.
    net_nodes: HashMap<&'a str, usize>,
    vol_nodes: HashMap<&'a str, usize>,
    /// The pull or build node of each image reference.
    image_nodes: HashMap<String, usize>,
    /// Image references pulled or built in this run.
    image_changed: BTreeSet<&'a str>,
    /// The start nodes of each service planned so far (what its dependents wait for).
    start_nodes: BTreeMap<&'a str, Vec<usize>>,
    /// The create (and recreate) nodes of each service, for `created_after`.
    create_nodes: BTreeMap<&'a str, Vec<usize>>,
    /// Services with a container recreated in this run.
    recreated: BTreeSet<&'a str>,
}

/// What one service's containers wait for.
struct Prerequisites {
    /// Its networks, volumes and image.
    common: Vec<usize>,
    /// Its creates: those and the creates of the services it takes mounts or a namespace
    /// from.
    create: Vec<usize>,
    /// Its starts: one wait node per dependency in this run.
    gates: Vec<usize>,
}

impl<'a> Reconciler<'a> {
    /// Create nodes for the missing networks and volumes the selected services use.
    fn resources(&mut self, order: &[&'a DesiredService]) -> Result<()> {
        let used_nets: BTreeSet<&str> = order
            .iter()
            .flat_map(|s| s.networks.iter().map(String::as_str))
            .collect();
        self.net_nodes = plan_resources(
            &mut self.plan,
            &self.desired.networks,
            &used_nets,
            &self.observed.networks,
            "network",
        )?;
        let used_vols: BTreeSet<&str> = order
            .iter()
            .flat_map(|s| s.volumes.iter().map(String::as_str))
            .collect();
        self.vol_nodes = plan_resources(
            &mut self.plan,
            &self.desired.volumes,
            &used_vols,
            &self.observed.volumes,
            "volume",
        )?;
        Ok(())
    }

    /// Images: one pull or build node per distinct reference that needs one.
    fn images(&mut self, order: &[&'a DesiredService]) -> Result<()> {
        for s in order {
            if self.image_nodes.contains_key(&s.image) {
                continue;
            }
            let Some((op, cause)) = self.image_op(s)? else {
                continue;
            };
            let id = self.plan.push(op, cause, vec![]);
            self.image_nodes.insert(s.image.clone(), id);
            self.image_changed.insert(s.image.as_str());
        }
        Ok(())
    }

    /// The policy that applies to a service's image: `--build`/a missing buildable image,
    /// `--pull`, or the service's own.
    fn image_policy(&self, s: &DesiredService) -> PullPolicy {
        let opts = self.opts;
        if s.build && !opts.no_build && (opts.build || s.image_id.is_none()) {
            return PullPolicy::Build;
        }
        match (opts.pull, s.pull_policy) {
            (Some(p), _) => p,
            (None, PullPolicy::Build) if s.image_id.is_some() || opts.no_build => {
                PullPolicy::Missing
            }
            (None, p) => p,
        }
    }

    /// The image operation a service needs, with its cause; `None` when the store's image
    /// will do.
    fn image_op(&self, s: &DesiredService) -> Result<Option<(Op, &'static str)>> {
        let pull = || Op::PullImage {
            image: s.image.clone(),
        };
        Ok(Some(match self.image_policy(s) {
            PullPolicy::Build => (
                Op::BuildImage {
                    service: s.name.clone(),
                    image: s.image.clone(),
                },
                if self.opts.build {
                    "--build"
                } else {
                    "image not in the store"
                },
            ),
            PullPolicy::Always => (pull(), "pull policy always"),
            PullPolicy::Missing if s.image_id.is_none() => (pull(), "image not in the store"),
            PullPolicy::Missing | PullPolicy::Never if s.image_id.is_some() => return Ok(None),
            PullPolicy::Missing | PullPolicy::Never => {
                return Err(ReconcileError::ImageMissing {
                    service: s.name.clone(),
                    image: s.image.clone(),
                    hint: if s.build {
                        "; drop --no-build to build it".into()
                    } else {
                        String::new()
                    },
                });
            }
        }))
    }

    /// What a service's containers wait for; the gates (wait nodes) are planned here.
    fn prerequisites(&mut self, s: &'a DesiredService) -> Prerequisites {
        let mut common: Vec<usize> = Vec::new();
        common.extend(
            s.networks
                .iter()
                .filter_map(|n| self.net_nodes.get(n.as_str())),
        );
        common.extend(
            s.volumes
                .iter()
                .filter_map(|v| self.vol_nodes.get(v.as_str())),
        );
        if let Some(&i) = self.image_nodes.get(&s.image) {
            common.push(i);
        }
        // Creates wait for the creates of the services they take mounts or a namespace from.
        let mut create = common.clone();
        for src in &s.created_after {
            create.extend(self.create_nodes.get(src.as_str()).into_iter().flatten());
        }
        // Gates: one wait node per dependency in this run.
        let mut gates: Vec<usize> = Vec::new();
        if !self.opts.no_start {
            for d in &s.depends_on {
                if !self.selected.contains(&d.service) {
                    continue;
                }
                let after = self
                    .start_nodes
                    .get(d.service.as_str())
                    .cloned()
                    .unwrap_or_default();
                let id = self.plan.push(
                    Op::WaitFor {
                        service: d.service.clone(),
                        condition: d.condition,
                        required: d.required,
                    },
                    format!("{} depends on it", s.name),
                    after,
                );
                gates.push(id);
            }
        }
        Prerequisites {
            common,
            create,
            gates,
        }
    }

    /// One service's containers: scale down, recreate or start what exists, scale up.
    fn service(&mut self, s: &'a DesiredService) {
        let pre = self.prerequisites(s);
        let want = self.opts.scale.get(&s.name).copied().unwrap_or(s.replicas);
        let mut existing: Vec<&'a ObservedContainer> = self
            .observed
            .containers
            .iter()
            .filter(|c| c.service == s.name && !c.oneoff)
            .collect();
        existing.sort_by_key(|c| c.number);
        // Scale down: the highest numbers go first.
        let keep = usize::try_from(want).unwrap_or(usize::MAX);
        if existing.len() > keep {
            for c in existing.split_off(keep).iter().rev() {
                self.stop_and_remove(&s.name, c, &format!("scale to {want}"));
            }
        }
        let mut starts = Vec::new();
        let mut creates = Vec::new();
        let mut used: BTreeSet<u32> = BTreeSet::new();
        for c in &existing {
            used.insert(c.number);
            self.existing_container(s, c, &pre, &mut starts, &mut creates);
        }
        // Scale up: fill the lowest free numbers.
        let mut number = 1;
        let missing = keep.saturating_sub(existing.len());
        for _ in 0..missing {
            while used.contains(&number) {
                number += 1;
            }
            used.insert(number);
            let cause = if existing.is_empty() && number == 1 {
                "missing".to_string()
            } else {
                format!("scale to {want}")
            };
            let create =
                self.create_and_start(s, number, cause, pre.create.clone(), &pre, &mut starts);
            creates.push(create);
        }
        self.start_nodes.insert(s.name.as_str(), starts);
        self.create_nodes.insert(s.name.as_str(), creates);
    }

    /// Why an existing container of `s` is recreated (or, for a `restart: true` dependency
    /// that was recreated, restarted), if it is.
    fn recreate_cause(&self, s: &DesiredService, c: &ObservedContainer) -> Option<String> {
        let opts = self.opts;
        let is_named = self.named.contains(&s.name);
        let force = if is_named {
            opts.force_recreate
        } else {
            opts.always_recreate_deps
        };
        if opts.no_recreate {
            None
        } else if force {
            Some(if is_named {
                "--force-recreate".into()
            } else {
                "--always-recreate-deps".into()
            })
        } else if c.hash != s.hash {
            Some("configuration changed".into())
        } else if s.image_id.is_some() && c.image_id.is_some() && c.image_id != s.image_id {
            Some("image changed".into())
        } else if self.image_changed.contains(s.image.as_str()) && s.image_id.is_none() {
            None
        } else {
            s.depends_on
                .iter()
                .find(|d| d.restart && self.recreated.contains(d.service.as_str()))
                .map(|d| format!("dependency {} recreated (restart: true)", d.service))
        }
    }

    /// An existing container: recreated, restarted (a `restart: true` dependency was
    /// recreated), started (created or exited) or left alone.
    fn existing_container(
        &mut self,
        s: &'a DesiredService,
        c: &ObservedContainer,
        pre: &Prerequisites,
        starts: &mut Vec<usize>,
        creates: &mut Vec<usize>,
    ) {
        let no_start = self.opts.no_start;
        let Some(cause) = self.recreate_cause(s, c) else {
            if !no_start && matches!(c.state, RunState::Created | RunState::Exited) {
                let mut after = pre.common.clone();
                after.extend(pre.gates.iter().copied());
                starts.push(self.plan.push(
                    Op::StartContainer {
                        service: s.name.clone(),
                        name: c.name.clone(),
                    },
                    describe_state(c),
                    after,
                ));
            }
            return;
        };
        let restart_only = cause.starts_with("dependency ");
        let mut after = pre.common.clone();
        if c.state == RunState::Running || c.state == RunState::Paused {
            let stop_after = if restart_only {
                pre.gates.clone()
            } else {
                vec![]
            };
            after.push(self.plan.push(
                Op::StopContainer {
                    service: s.name.clone(),
                    name: c.name.clone(),
                },
                cause.clone(),
                stop_after,
            ));
        }
        if restart_only {
            if !no_start {
                after.extend(pre.gates.iter().copied());
                starts.push(self.plan.push(
                    Op::StartContainer {
                        service: s.name.clone(),
                        name: c.name.clone(),
                    },
                    cause,
                    after,
                ));
            }
            return;
        }
        let rm = self.plan.push(
            Op::RemoveContainer {
                service: s.name.clone(),
                name: c.name.clone(),
            },
            cause.clone(),
            after,
        );
        let mut create_after = vec![rm];
        create_after.extend(pre.create.iter().filter(|i| !pre.common.contains(i)));
        let create = self.create_and_start(s, c.number, cause, create_after, pre, starts);
        creates.push(create);
        self.recreated.insert(s.name.as_str());
    }

    /// A create node for replica `number` after `create_after`, and unless `--no-start` its
    /// start after the create and the gates; returns the create node.
    fn create_and_start(
        &mut self,
        s: &DesiredService,
        number: u32,
        cause: String,
        create_after: Vec<usize>,
        pre: &Prerequisites,
        starts: &mut Vec<usize>,
    ) -> usize {
        let name = container_name(&self.desired.project, s, number);
        let create = self.plan.push(
            Op::CreateContainer {
                service: s.name.clone(),
                number,
                name: name.clone(),
            },
            cause.clone(),
            create_after,
        );
        if !self.opts.no_start {
            let mut after = vec![create];
            after.extend(pre.gates.iter().copied());
            starts.push(self.plan.push(
                Op::StartContainer {
                    service: s.name.clone(),
                    name,
                },
                cause,
                after,
            ));
        }
        create
    }

    /// A stop node (when it runs) and a remove node for a container.
    fn stop_and_remove(&mut self, service: &str, c: &ObservedContainer, cause: &str) {
        let mut after = Vec::new();
        if c.state == RunState::Running || c.state == RunState::Paused {
            after.push(self.plan.push(
                Op::StopContainer {
                    service: service.to_owned(),
                    name: c.name.clone(),
                },
                cause,
                vec![],
            ));
        }
        self.plan.push(
            Op::RemoveContainer {
                service: service.to_owned(),
                name: c.name.clone(),
            },
            cause,
            after,
        );
    }

    /// Containers of services the project no longer has: removed with `--remove-orphans`,
    /// else a warning each.
    fn orphans(&mut self) {
        let known: BTreeSet<&str> = self
            .desired
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let mut orphans: Vec<&ObservedContainer> = self
            .observed
            .containers
            .iter()
            .filter(|c| !c.oneoff && !known.contains(c.service.as_str()))
            .collect();
        orphans.sort_by(|a, b| a.name.cmp(&b.name));
        for c in orphans {
            if self.opts.remove_orphans {
                self.stop_and_remove(&c.service, c, "orphan");
            } else {
                self.plan.warnings.push(format!(
                    "found orphan container {} for service {}; run with --remove-orphans to clean it up",
                    c.name, c.service
                ));
            }
        }
    }

    /// `--wait`: one final gate per service of the run.
    fn final_waits(&mut self, order: &[&'a DesiredService]) {
        if !self.opts.wait || self.opts.no_start {
            return;
        }
        for s in order {
            let after = self
                .start_nodes
                .get(s.name.as_str())
                .cloned()
                .unwrap_or_default();
            self.plan.push(
                Op::WaitFor {
                    service: s.name.clone(),
                    condition: Condition::Ready,
                    required: true,
                },
                "--wait",
                after,
            );
        }
    }
}

/// Drops `wait for` nodes that gate nothing: a dependency gate whose dependents got no start
/// operation (everything already running) is noise.
fn prune_idle_waits(plan: Plan) -> Plan {
    let n = plan.nodes.len();
    let mut needed = vec![true; n];
    for (i, node) in plan.nodes.iter().enumerate() {
        if let Op::WaitFor { .. } = node.op {
            let is_final = node.cause == "--wait";
            let gates_something = plan.nodes.iter().any(|m| m.after.contains(&i));
            needed[i] = is_final || gates_something;
        }
    }
    if needed.iter().all(|&x| x) {
        return plan;
    }
    let mut remap = vec![usize::MAX; n];
    let mut out = Plan {
        nodes: Vec::new(),
        warnings: plan.warnings,
    };
    for (i, node) in plan.nodes.into_iter().enumerate() {
        if !needed[i] {
            continue;
        }
        remap[i] = out.nodes.len();
        let after = node
            .after
            .iter()
            .filter(|&&a| needed[a])
            .map(|&a| remap[a])
            .collect();
        out.push(node.op, node.cause, after);
    }
    out
}

/// Plans `down`: stop dependents before their dependencies, remove containers, then networks,
/// volumes (`-v`) and images (`--rmi`).
///
/// # Errors
/// A named service the project does not have.
pub fn plan_down(desired: &Desired, observed: &Observed, opts: &DownOptions) -> Result<Plan> {
    for n in &opts.services {
        if desired.service(n).is_none() {
            return Err(ReconcileError::NoSuchService(n.clone()));
        }
    }
    let whole = opts.services.is_empty();
    let known: BTreeSet<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();
    let chosen = |c: &ObservedContainer| -> bool {
        if whole {
            known.contains(c.service.as_str()) || opts.remove_orphans || c.oneoff
        } else {
            opts.services.contains(&c.service)
        }
    };
    let mut plan = Plan::default();
    let removed = down_containers(&mut plan, desired, observed, &chosen);
    if whole {
        let leftover = observed.containers.iter().any(|c| !chosen(c));
        down_resources(&mut plan, desired, observed, opts, leftover, &removed);
    }
    Ok(plan)
}

/// The stops and removals of the chosen containers, dependents first; returns the removal
/// nodes.
fn down_containers(
    plan: &mut Plan,
    desired: &Desired,
    observed: &Observed,
    chosen: &dyn Fn(&ObservedContainer) -> bool,
) -> Vec<usize> {
    let known: BTreeSet<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();
    // Reverse start order: dependents first.
    let all: Vec<String> = desired.services.iter().map(|s| s.name.clone()).collect();
    let mut order: Vec<&str> = start_order(desired, &all)
        .into_iter()
        .map(|s| s.name.as_str())
        .collect();
    order.reverse();
    // Orphans and one-offs of unknown services stop first.
    let mut groups: Vec<(String, Vec<&ObservedContainer>)> = Vec::new();
    let mut extra: Vec<&ObservedContainer> = observed
        .containers
        .iter()
        .filter(|c| chosen(c) && !known.contains(c.service.as_str()))
        .collect();
    extra.sort_by(|a, b| a.name.cmp(&b.name));
    if !extra.is_empty() {
        groups.push((String::new(), extra));
    }
    for s in order {
        let mut cs: Vec<&ObservedContainer> = observed
            .containers
            .iter()
            .filter(|c| c.service == s && chosen(c))
            .collect();
        cs.sort_by(|a, b| (a.oneoff, a.number, &a.name).cmp(&(b.oneoff, b.number, &b.name)));
        groups.push((s.to_string(), cs));
    }
    // Per service, the stops that whatever depends on it must wait for: its own stops, or,
    // when it has nothing to stop (exited, stopped by hand, not chosen), what it waited for
    // itself, so the order passes through it.
    let mut stopped: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut removed: Vec<usize> = Vec::new();
    for (service, cs) in &groups {
        // A service stops after every service that depends on it, directly or through
        // services in between whatever their state, has stopped.
        let mut after: Vec<usize> = Vec::new();
        for d in &desired.services {
            let depends = d.depends_on.iter().any(|x| &x.service == service)
                || d.created_after.iter().any(|x| x == service);
            if depends {
                for &i in stopped.get(&d.name).into_iter().flatten() {
                    if !after.contains(&i) {
                        after.push(i);
                    }
                }
            }
        }
        after.sort_unstable();
        let mut mine = Vec::new();
        for c in cs {
            let cause = if known.contains(c.service.as_str()) {
                if c.oneoff { "one-off" } else { "down" }
            } else {
                "orphan"
            };
            let mut rm_after = Vec::new();
            if c.state == RunState::Running || c.state == RunState::Paused {
                let id = plan.push(
                    Op::StopContainer {
                        service: c.service.clone(),
                        name: c.name.clone(),
                    },
                    cause,
                    after.clone(),
                );
                mine.push(id);
                rm_after.push(id);
            }
            removed.push(plan.push(
                Op::RemoveContainer {
                    service: c.service.clone(),
                    name: c.name.clone(),
                },
                cause,
                rm_after,
            ));
        }
        if !service.is_empty() {
            stopped.insert(service.clone(), if mine.is_empty() { after } else { mine });
        }
    }
    removed
}

/// After every removal: the project's networks (unless orphans still use them, `leftover`),
/// with `-v` its volumes and anonymous volumes, with `--rmi` its images.
fn down_resources(
    plan: &mut Plan,
    desired: &Desired,
    observed: &Observed,
    opts: &DownOptions,
    leftover: bool,
    removed: &[usize],
) {
    for n in &desired.networks {
        if n.external || !observed.networks.contains(&n.name) {
            continue;
        }
        if leftover {
            plan.warnings.push(format!(
                "network {} kept: orphan containers still use it (use --remove-orphans)",
                n.name
            ));
            continue;
        }
        plan.push(
            Op::RemoveNetwork {
                name: n.name.clone(),
            },
            "down",
            removed.to_vec(),
        );
    }
    if opts.volumes {
        for v in &desired.volumes {
            if v.external || !observed.volumes.contains(&v.name) {
                continue;
            }
            plan.push(
                Op::RemoveVolume {
                    name: v.name.clone(),
                },
                "down -v",
                removed.to_vec(),
            );
        }
        // Anonymous volumes of the project's services (`<project>_<service>_anon_<16 hex>`,
        // as the compose backend names them).
        for v in &observed.volumes {
            let anon = desired.services.iter().any(|s| {
                v.strip_prefix(&format!("{}_{}_anon_", desired.project, s.name))
                    .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            });
            if anon {
                plan.push(
                    Op::RemoveVolume { name: v.clone() },
                    "down -v (anonymous)",
                    removed.to_vec(),
                );
            }
        }
    }
    if let Some(rmi) = &opts.rmi {
        let mut images: BTreeSet<&str> = BTreeSet::new();
        for s in &desired.services {
            // `local` removes only images without a custom tag: those tug named after the
            // service because it built them.
            let local_name = s.build && s.image == format!("{}-{}", desired.project, s.name);
            if rmi == "all" || local_name {
                images.insert(s.image.as_str());
            }
        }
        for image in images {
            plan.push(
                Op::RemoveImage {
                    image: image.to_string(),
                },
                format!("--rmi {rmi}"),
                removed.to_vec(),
            );
        }
    }
}
