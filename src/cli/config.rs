//! `tug config`: render the loaded project in canonical form.

use clap::Args;

use super::GlobalArgs;

/// Flags of `tug config`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Output format.
    #[arg(long, default_value = "yaml", value_parser = ["yaml", "json"])]
    pub format: String,
    /// Only validate the configuration, print nothing.
    #[arg(short, long)]
    pub quiet: bool,
}

pub(super) fn run(_global: &GlobalArgs, _args: &ConfigArgs) -> anyhow::Result<i32> {
    anyhow::bail!("`tug config` is being written (issue 2)")
}
