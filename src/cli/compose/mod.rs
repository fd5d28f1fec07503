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

pub use lifecycle::{run_create, run_down, run_up};
pub use query::{run_ls, run_ps};

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

/// Loads the project named by the global flags and opens the engine for it.
pub(crate) fn open_stack(
    global: &GlobalArgs,
    services: &[String],
    options: StackOptions,
) -> anyhow::Result<Stack> {
    let project = super::config::load_project(global, services)?;
    let root = state_root(global)?;
    Stack::open(&root, project, options).context("cannot open the engine's state root")
}

/// The state root, created if missing.
pub(crate) fn state_root(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    let root = global.state_root();
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create state root {}", root.display()))?;
    Ok(root)
}

/// Takes the project lock of a stack.
pub(crate) fn lock(stack: &Stack) -> anyhow::Result<ProjectLock> {
    ProjectLock::take(&stack.root, &stack.project.name).context("cannot lock the project")
}
