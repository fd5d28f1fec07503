//! The compose verbs: `up`, `down`, `ps`, `logs`, `exec`, `run`, … Each turns its flags into
//! options, asks `plan` what to do and the engine to do it, and prints the outcome.

pub mod args;
mod lifecycle;
mod output;
mod printer;
mod query;
pub mod stats;
pub mod verbs;

use std::path::PathBuf;

use anyhow::Context as _;

use super::GlobalArgs;
use crate::engine::compose::{ProjectLock, Stack, StackOptions};

pub(crate) use lifecycle::{check, converge, install_interrupt_handler, interrupted};
pub use lifecycle::{run_create, run_down, run_up};
pub(crate) use output::{Mode, Progress};
pub use query::{run_ls, run_ps};
pub(crate) use verbs::{start_plan, stop_plan};

/// Prints, once per option, what the project asks for that tug does not do on this host:
/// SELinux relabelling (`:z`, `:Z`, `bind.selinux`) when SELinux is enabled (without it,
/// docker does nothing for them either).
pub(crate) fn warn_unhonoured(project: &crate::project::Project) {
    if !std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        return;
    }
    let mut seen = Vec::new();
    for (name, s) in &project.services {
        for (i, v) in s.volumes.iter().enumerate() {
            if let Some(label) = v.bind.as_ref().and_then(|b| b.selinux.as_deref())
                && !seen.contains(&label)
            {
                seen.push(label);
                eprintln!(
                    "warning: services.{name}.volumes[{i}]: volume option `{label}` is not applied: \
                     tug does not relabel files for SELinux"
                );
            }
        }
    }
}

/// Loads the project named by the global flags and opens the engine for it. For a verb that
/// acts on what exists (`GlobalArgs::by_name`), a compose file that is missing or cannot be
/// loaded (a required variable unset) is not needed when the project is named (`-p`,
/// `COMPOSE_PROJECT_NAME`): the project is rebuilt from its labels in the state root.
pub(crate) fn open_stack(
    global: &GlobalArgs,
    services: &[String],
    options: StackOptions,
) -> anyhow::Result<Stack> {
    let root = state_root(global)?;
    let project = match super::config::load_project(global, services) {
        Ok(p) => p,
        Err(e) if global.by_name => {
            let name = global
                .project_name
                .clone()
                .or_else(|| std::env::var("COMPOSE_PROJECT_NAME").ok())
                .filter(|n| !n.is_empty());
            let Some(name) = name else {
                return Err(e);
            };
            let known = crate::engine::compose::project_from_state(&root, &name)
                .context("cannot read the engine's state root")?;
            let no_file = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<crate::project::ProjectError>(),
                    Some(crate::project::ProjectError::NotFound { .. })
                )
            });
            if !no_file {
                eprintln!(
                    "warning: the compose file cannot be loaded ({}); acting on project \
                     {name} as the state root knows it",
                    super::render_error(&e),
                );
            }
            // A project the state root has nothing of is an empty one (`ps` lists nothing,
            // `down` removes nothing), as docker compose has it.
            known.unwrap_or_else(|| {
                eprintln!("warning: no resource of project {name} in the state root");
                crate::project::model::Project {
                    name,
                    ..crate::project::model::Project::default()
                }
            })
        }
        Err(e) => return Err(e),
    };
    Stack::open(&root, project, options).context("cannot open the engine's state root")
}

/// The state root, created if missing.
pub(crate) fn state_root(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    let root = global.state_root();
    crate::engine::private::ensure_root(&root)
        .with_context(|| format!("cannot create state root {}", root.display()))?;
    Ok(root)
}

/// Takes the project lock of a stack.
pub(crate) fn lock(stack: &Stack) -> anyhow::Result<ProjectLock> {
    ProjectLock::take(&stack.root, &stack.project.name).context("cannot lock the project")
}
