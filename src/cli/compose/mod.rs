//! The compose verbs: `up`, `down`, `ps`, `logs`, `exec`, `run`, … Each turns its flags into
//! options, asks `plan` what to do and the engine to do it, and prints the outcome.

pub mod args;
mod lifecycle;
mod output;
mod query;
pub mod verbs;

use std::path::PathBuf;

use anyhow::Context as _;

use super::GlobalArgs;
use crate::engine::compose::{ProjectLock, Stack, StackOptions};

pub(crate) use lifecycle::{check, converge};
pub use lifecycle::{run_create, run_down, run_up};
pub(crate) use output::{Mode, Progress};
pub use query::{run_ls, run_ps};
pub(crate) use verbs::{start_plan, stop_plan};

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
    crate::engine::private::ensure_root(&root)
        .with_context(|| format!("cannot create state root {}", root.display()))?;
    Ok(root)
}

/// Takes the project lock of a stack.
pub(crate) fn lock(stack: &Stack) -> anyhow::Result<ProjectLock> {
    ProjectLock::take(&stack.root, &stack.project.name).context("cannot lock the project")
}
