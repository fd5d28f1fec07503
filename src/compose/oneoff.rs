//! The compose verbs that work in one container: `run` (a one-off container of a service,
//! with what it needs made first), `exec` and `cp`.

use std::path::PathBuf;

use super::service::Reporter;
use super::{Error, OneOff, Result, Stack, labels};
use crate::engine::container::{ExecOptions, Status, Summary};
use crate::plan::{Op, Plan, UpOptions};

/// `run --pull`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunPull {
    /// No `--pull`: the image is pulled by the service's own plan when missing.
    #[default]
    Unset,
    /// `--pull always`.
    Always,
    /// `--pull missing`: when the store lacks it (and the service has no `build:`).
    Missing,
    /// `--pull never` (or anything else).
    Never,
}

/// `run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The service.
    pub service: String,
    /// The container name (default `<project>-<service>-run-<random>`).
    pub name: Option<String>,
    /// What the one-off container changes of its service's container.
    pub oneoff: OneOff,
    /// Capabilities added to the service's.
    pub cap_add: Vec<String>,
    /// Capabilities dropped besides the service's.
    pub cap_drop: Vec<String>,
    /// `K=V` labels added to the service's.
    pub labels: Vec<String>,
    /// Start it and return at once.
    pub detach: bool,
    /// Don't start the services it depends on.
    pub no_deps: bool,
    /// Remove containers of services the project no longer has, first.
    pub remove_orphans: bool,
    /// `--pull`.
    pub pull: RunPull,
    /// `--build`: build the service's image again first.
    pub build: bool,
}

/// The steps of `run` that report progress, each to a reporter of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStep {
    /// Removing orphan containers (`--remove-orphans`).
    Orphans,
    /// Pulling the service's image (`--pull`).
    Pull,
    /// Starting the services it depends on.
    Dependencies,
    /// Making its networks, volumes and image.
    Prepare,
}

/// How `run` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Detached: the container runs, by this name.
    Detached(String),
    /// Attached: the container's exit code.
    Exited(i32),
}

/// `cp`: one side is `SERVICE:PATH`, the other a host path.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// From.
    pub source: String,
    /// To.
    pub destination: String,
    /// The replica.
    pub index: u32,
    /// `--all`: a one-off container of the service too, when no service container has the
    /// index.
    pub all: bool,
}

impl Stack {
    /// `run`: removes orphans (if asked), pulls the image (if asked), starts what the service
    /// depends on, makes its networks, volumes and image as `up` would, then creates the
    /// one-off container and runs it. Each step reports to a reporter `reporter` gives for
    /// it.
    ///
    /// # Errors
    /// An unknown service, a failed step, or a container that cannot be made or started.
    pub fn run(
        &self,
        opts: &RunOptions,
        reporter: &dyn Fn(RunStep) -> Box<dyn Reporter>,
    ) -> Result<RunOutcome> {
        let mut s = self
            .project
            .services
            .get(&opts.service)
            .ok_or_else(|| Error::NotFound(format!("no such service: {}", opts.service)))?
            .clone();
        // What the one-off container adds to its service.
        s.cap_add.extend(opts.cap_add.iter().cloned());
        s.cap_drop.extend(opts.cap_drop.iter().cloned());
        for l in &opts.labels {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            s.labels.insert(k.to_owned(), v.to_owned());
        }
        if opts.remove_orphans {
            let _l = self.lock()?;
            self.apply(
                &self.plan_remove_orphans()?,
                &mut *reporter(RunStep::Orphans),
            )?;
        }
        // --pull: the service's image first (always: again; missing: when the store lacks it).
        let image = crate::plan::service_image(&self.project.name, &s);
        let pull = match opts.pull {
            RunPull::Always => true,
            RunPull::Missing => s.build.is_none() && !self.has_image(&image),
            RunPull::Unset | RunPull::Never => false,
        };
        if pull {
            let mut plan = Plan::default();
            plan.push(Op::PullImage { image }, "run --pull", vec![]);
            let outcome = self.execute(&plan, &mut *reporter(RunStep::Pull));
            if let Some((_, e)) = outcome.failed.into_iter().next() {
                return Err(e);
            }
        }
        // Held until the one-off is created: another command of the project (`up`, `down`)
        // repairs namespaces named like the project's containers that have no record yet,
        // and must not take this one's while it is being wired.
        let creating = self.lock()?;
        if !opts.no_deps && !s.depends_on.is_empty() {
            let plan = self.plan_up(&UpOptions {
                services: s.depends_on.keys().cloned().collect(),
                no_recreate: true,
                ..UpOptions::default()
            })?;
            if !self
                .execute(&plan, &mut *reporter(RunStep::Dependencies))
                .ok()
            {
                return Err(Error::Failed(format!(
                    "cannot start the dependencies of {}",
                    opts.service
                )));
            }
        }
        self.prepare_oneoff(opts, &mut *reporter(RunStep::Prepare))?;
        let suffix = hex::encode(rand::random::<[u8; 6]>());
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}-run-{}", self.project.name, s.name, &suffix[..12]));
        let id = self.create_oneoff(&s, &name, &opts.oneoff)?;
        drop(creating);
        if opts.detach {
            self.containers.start(&id, false)?;
            return Ok(RunOutcome::Detached(name));
        }
        let started = self.containers.start(&id, true)?;
        let code = started.wait()?;
        if opts.oneoff.remove {
            let _ = self.networks.disconnect_all(&name);
        }
        Ok(RunOutcome::Exited(code))
    }

    /// A plan that stops and removes the containers of services the project no longer has.
    fn plan_remove_orphans(&self) -> Result<Plan> {
        let mut plan = Plan::default();
        for c in self.project_containers()? {
            let svc = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
            if self.project.services.contains_key(&svc) {
                continue;
            }
            let stop = (c.state == Status::Running).then(|| {
                plan.push(
                    Op::StopContainer {
                        service: svc.clone(),
                        name: c.name.clone(),
                    },
                    "orphan",
                    vec![],
                )
            });
            plan.push(
                Op::RemoveContainer {
                    service: svc,
                    name: c.name.clone(),
                },
                "orphan",
                stop.into_iter().collect(),
            );
        }
        Ok(plan)
    }

    /// The service's own networks, volumes and image, as `up` would make them (docker
    /// compose's `run` does too): a one-off needs no `up` first.
    fn prepare_oneoff(&self, opts: &RunOptions, rep: &mut dyn Reporter) -> Result<()> {
        let up = self.plan_up(&UpOptions {
            services: vec![opts.service.clone()],
            no_deps: true,
            no_recreate: true,
            no_start: true,
            // `run --build`: the service's image is built again (cached steps stay).
            build: opts.build,
            ..UpOptions::default()
        })?;
        let mut needed = Plan::default();
        for n in up.nodes {
            if matches!(
                n.op,
                Op::CreateNetwork { .. }
                    | Op::CreateVolume { .. }
                    | Op::PullImage { .. }
                    | Op::BuildImage { .. }
            ) {
                needed.push(n.op, n.cause, vec![]);
            }
        }
        if !needed.nodes.is_empty() && !self.execute(&needed, rep).ok() {
            return Err(Error::Failed(format!(
                "cannot prepare the networks and volumes of {}",
                opts.service
            )));
        }
        Ok(())
    }

    /// `exec`: runs a command in a running replica of a service; returns its exit code.
    ///
    /// # Errors
    /// No such replica, one that is not running, or the exec fails.
    pub fn exec(&self, service: &str, index: u32, opts: &ExecOptions) -> Result<i32> {
        let c = self.container_of(service, index)?;
        if c.state != Status::Running {
            return Err(Error::Invalid(format!("service {service} is not running")));
        }
        Ok(self.containers.exec(&c.id, opts)?)
    }

    /// Runs a command in a container by id (a watch's `exec` action).
    ///
    /// # Errors
    /// The exec fails.
    pub fn exec_in(&self, id: &str, opts: &ExecOptions) -> Result<i32> {
        Ok(self.containers.exec(id, opts)?)
    }

    /// `cp`: copies between a replica (or with `all`, a one-off container) of a service and
    /// the host.
    ///
    /// # Errors
    /// Neither or both sides name a service, no such container, or the copy fails.
    pub fn copy(&self, opts: &CopyOptions) -> Result<()> {
        let split = |s: &str| -> Option<(String, String)> {
            let (svc, path) = s.split_once(':')?;
            self.project
                .services
                .contains_key(svc)
                .then(|| (svc.to_string(), path.to_string()))
        };
        match (split(&opts.source), split(&opts.destination)) {
            (Some((svc, path)), None) => {
                let c = self.copy_target(&svc, opts)?;
                self.containers.copy(
                    &c.id,
                    &PathBuf::from(path),
                    &PathBuf::from(&opts.destination),
                    false,
                )?;
            }
            (None, Some((svc, path))) => {
                let c = self.copy_target(&svc, opts)?;
                self.containers.copy(
                    &c.id,
                    &PathBuf::from(&opts.source),
                    &PathBuf::from(path),
                    true,
                )?;
            }
            _ => {
                return Err(Error::Invalid(
                    "copying needs exactly one side of the form SERVICE:PATH".into(),
                ));
            }
        }
        Ok(())
    }

    /// The container `cp` copies from or to.
    fn copy_target(&self, svc: &str, opts: &CopyOptions) -> Result<Summary> {
        match self.container_of(svc, opts.index) {
            Ok(c) => Ok(c),
            Err(e) if opts.all => {
                let mut oneoffs: Vec<Summary> = self
                    .project_containers()?
                    .into_iter()
                    .filter(|c| {
                        c.labels.get(labels::SERVICE).map(String::as_str) == Some(svc)
                            && c.labels.get(labels::ONEOFF).map(String::as_str) == Some("True")
                    })
                    .collect();
                oneoffs.sort_by(|a, b| a.created.cmp(&b.created));
                let i = usize::try_from(opts.index.max(1) - 1).unwrap_or(0);
                oneoffs.into_iter().nth(i).ok_or(e)
            }
            Err(e) => Err(e),
        }
    }
}
