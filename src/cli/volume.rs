//! `tug volume …`: named volumes of the state root.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, Subcommand};

use super::GlobalArgs;
use crate::engine::volume::{VolumeSpec, Volumes};

/// `tug volume` verbs.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Create a volume.
    Create(CreateArgs),
    /// Remove volumes (and their data).
    #[command(alias = "remove")]
    Rm {
        /// Volumes to remove.
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove even if a container record refers to it.
        #[arg(long)]
        force: bool,
    },
    /// Show volumes in detail (JSON).
    Inspect {
        /// Volumes to show.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused ones with --all).
    Prune {
        /// Named volumes too.
        #[arg(short, long)]
        all: bool,
        /// Accepted for compatibility (tug never asks).
        #[arg(long)]
        force: bool,
    },
}

/// Flags of `tug volume create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Volume name (random if omitted).
    pub name: Option<String>,
    /// Driver (only `local`).
    #[arg(short, long)]
    pub driver: Option<String>,
    /// Labels KEY=VALUE.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Driver options KEY=VALUE (type, o, device).
    #[arg(short = 'o', long = "opt")]
    pub opts: Vec<String>,
}

fn kv(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("{what} {s:?} is not KEY=VALUE"),
        })
        .collect()
}

pub(super) fn run(global: &GlobalArgs, cmd: &VolumeCommand) -> anyhow::Result<i32> {
    let vols = Volumes::open(&global.state_root())?;
    match cmd {
        VolumeCommand::Ls { quiet, format } => {
            let list = vols.list()?;
            for (name, what) in vols.damaged() {
                eprintln!("warning: volume {name} is damaged: {what}");
            }
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if *quiet {
                for v in &list {
                    println!("{}", v.name);
                }
            } else {
                println!("{:<8} NAME", "DRIVER");
                for v in &list {
                    println!("{:<8} {}", v.driver, v.name);
                }
            }
        }
        VolumeCommand::Create(a) => {
            let labels = kv(&a.labels, "label")?;
            let info = match &a.name {
                Some(n) => vols.create(&VolumeSpec {
                    name: n.clone(),
                    driver: a.driver.clone(),
                    driver_opts: kv(&a.opts, "option")?,
                    labels,
                })?,
                None => vols.create_anonymous(labels)?,
            };
            println!("{}", info.name);
        }
        VolumeCommand::Rm { names, force } => {
            let used = vols.referenced_by_containers()?;
            let mut failed = false;
            for n in names {
                let by = if *force {
                    Vec::new()
                } else {
                    used.get(n).cloned().unwrap_or_default()
                };
                match vols.remove(n, &by) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                out.push(vols.inspect(n)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Prune { all, .. } => {
            let used: BTreeSet<String> = vols.referenced_by_containers()?.into_keys().collect();
            for n in vols.prune(&used, *all)? {
                println!("{n}");
            }
        }
    }
    Ok(0)
}
