//! What a `develop.watch` session asks of the stack besides syncing files (see `sync.rs`):
//! restart a service, rebuild its image and recreate it, run a `sync+exec` command. Each is
//! the compose verbs' own path under the project lock — `restart`, `up --build --no-deps
//! SERVICE`, `exec` — so a watch does exactly what those verbs do, and reports the plans'
//! events to the caller's [`Reporter`].

use super::service::Reporter;
use super::{Error, Result, Stack};
use crate::engine::container::ExecOptions;
use crate::plan::{Op, UpOptions};
use crate::project::model::ServiceHook;

/// The exec of a hook (`post_start`, `pre_stop`, a watch's `exec`): its command, environment,
/// user, working directory and privileges.
pub(crate) fn hook_exec(hook: &ServiceHook, cmd: Vec<String>) -> ExecOptions {
    let env = hook
        .environment
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    ExecOptions {
        cmd,
        env,
        user: hook.user.clone(),
        workdir: hook.working_dir.clone(),
        privileged: hook.privileged,
        ..ExecOptions::default()
    }
}

impl Stack {
    /// A watch's `restart` (and `sync+restart`): `restart SERVICE` under the project lock.
    ///
    /// # Errors
    /// The lock, or containers that cannot stop or start.
    pub fn watch_restart(&self, service: &str, rep: &mut dyn Reporter) -> Result<()> {
        let _lock = self.lock()?;
        self.restart(&[service.to_string()], rep)
    }

    /// A watch's `rebuild`: `up --build --no-deps SERVICE` under the project lock (tug's
    /// builder: cached steps stay cached; the service is recreated when its image changed),
    /// then a restart of the running services that depend on it with `restart: true`. With
    /// `prune`, the image the service used before is removed when it is dangling and no
    /// container uses it.
    ///
    /// # Errors
    /// An unknown service, the lock, a failed build, or containers that cannot be recreated
    /// or restarted.
    pub fn watch_rebuild(&self, service: &str, prune: bool, rep: &mut dyn Reporter) -> Result<()> {
        let image = self
            .project
            .services
            .get(service)
            .map(|s| crate::plan::service_image(&self.project.name, s))
            .ok_or_else(|| Error::NotFound(format!("no such service: {service}")))?;
        let before = self.image_id(&image);
        let _lock = self.lock()?;
        let up = UpOptions {
            services: vec![service.to_string()],
            build: true,
            no_deps: true,
            ..UpOptions::default()
        };
        self.converge(&up, rep)?;
        self.restart_dependents(service, rep)?;
        if prune && let Some(old) = before {
            self.remove_replaced_image(&image, &old);
        }
        Ok(())
    }

    /// Restarts the running services that ask to be restarted when `service` is updated
    /// (`depends_on: {SERVICE: {restart: true}}`).
    fn restart_dependents(&self, service: &str, rep: &mut dyn Reporter) -> Result<()> {
        let dependents: Vec<String> = self
            .project
            .services
            .values()
            .filter(|s| s.depends_on.get(service).is_some_and(|d| d.restart))
            .map(|s| s.name.clone())
            .collect();
        if dependents.is_empty() {
            return Ok(());
        }
        let stop = self.plan_stop(&dependents)?;
        let running: Vec<String> = stop
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::StopContainer { service, .. } => Some(service.clone()),
                _ => None,
            })
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        let outcome = self.execute(&stop, rep);
        super::service::check(&stop, &outcome)?;
        let start = self.plan_start(&running)?;
        let outcome = self.execute(&start, rep);
        super::service::check(&start, &outcome)
    }

    /// A watch's `sync+exec` command in the container `id`, with the caller's stdout and
    /// stderr; returns its exit code.
    ///
    /// # Errors
    /// The rule has no command, or the exec cannot be started.
    pub fn watch_exec(&self, id: &str, hook: &ServiceHook) -> Result<i32> {
        let cmd = hook
            .command
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::Invalid("a sync+exec rule needs exec.command".into()))?;
        Ok(self.containers.exec(id, &hook_exec(hook, cmd))?)
    }
}
