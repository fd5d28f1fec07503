//! `tug network …`.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::GlobalArgs;
use crate::engine::container::{ContainerStore, NetworkMode};
use crate::engine::network::{self, NetworkSpec, Networks};

/// `tug network` verbs.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Create a network.
    Create(CreateArgs),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        /// Networks to remove.
        #[arg(required = true)]
        names: Vec<String>,
        /// Disconnect connected containers first.
        #[arg(long)]
        force: bool,
    },
    /// Show networks in detail (JSON).
    Inspect {
        /// Networks to show.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container to a further network (a new interface and DNS names there).
    Connect {
        /// The network.
        network: String,
        /// The container (name, id or id prefix).
        container: String,
        /// Extra DNS names of the container on this network.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Its IPv4 address on the network (default: the next free one).
        #[arg(long)]
        ip: Option<String>,
        /// IPv6 address (not supported yet).
        #[arg(long)]
        ip6: Option<String>,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// The network.
        network: String,
        /// The container (name, id or id prefix).
        container: String,
        /// Accepted for compatibility (a disconnect is never refused for being in use).
        #[arg(long)]
        force: bool,
    },
    /// Remove every network no container uses.
    Prune {
        /// Do not ask (tug never asks; accepted for compatibility).
        #[arg(long)]
        force: bool,
    },
}

/// Flags of `tug network ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// Flags of `tug network create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Network name.
    pub name: String,
    /// Driver (only `bridge`).
    #[arg(short, long)]
    pub driver: Option<String>,
    /// Subnet in CIDR form.
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Range container addresses are taken from.
    #[arg(long)]
    pub ip_range: Option<String>,
    /// No outbound access.
    #[arg(long)]
    pub internal: bool,
    /// IPv6 (not supported yet).
    #[arg(long)]
    pub ipv6: bool,
    /// Labels KEY=VALUE.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Driver options KEY=VALUE.
    #[arg(short = 'o', long = "opt")]
    pub opts: Vec<String>,
}

fn kv(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| {
            let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
            if k.is_empty() {
                anyhow::bail!("{what} {s:?} is not KEY=VALUE");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

// Long: one arm per `network` subcommand, each a few lines of flags to a network call.
pub(super) fn run(global: &GlobalArgs, cmd: &NetworkCommand) -> anyhow::Result<i32> {
    let nets = Networks::open(&global.state_root())?;
    match cmd {
        NetworkCommand::Ls(a) => {
            for w in nets.reconcile().context("repair network state")? {
                eprintln!("warning: {w}");
            }
            let list = nets.list()?;
            for (name, what) in nets.damaged() {
                eprintln!("warning: network {name} is damaged: {what}");
            }
            if a.format == "json" {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if a.quiet {
                for n in &list {
                    println!("{}", n.name);
                }
            } else {
                println!(
                    "{:<24} {:<12} {:<18} {:<8} ID",
                    "NAME", "BRIDGE", "SUBNET", "INTERNAL"
                );
                for n in &list {
                    println!(
                        "{:<24} {:<12} {:<18} {:<8} {}",
                        n.name,
                        n.bridge,
                        n.subnet.to_string(),
                        n.internal,
                        n.id.get(..12).unwrap_or(&n.id)
                    );
                }
            }
        }
        NetworkCommand::Create(a) => {
            let spec = NetworkSpec {
                name: a.name.clone(),
                labels: kv(&a.labels, "label")?,
                internal: a.internal,
                driver: a.driver.clone(),
                driver_opts: kv(&a.opts, "option")?,
                enable_ipv6: a.ipv6,
                subnet: a.subnet.clone(),
                gateway: a.gateway.clone(),
                ip_range: a.ip_range.clone(),
            };
            let info = nets.create(&spec)?;
            println!("{}", info.id);
        }
        NetworkCommand::Rm { names, force } => {
            let mut failed = false;
            for n in names {
                match nets.remove(n, *force) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                let info = nets.inspect(n)?;
                let eps = nets.endpoints(n)?;
                let mut v = serde_json::to_value(&info)?;
                v["endpoints"] = serde_json::to_value(&eps)?;
                out.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Connect {
            network,
            container,
            aliases,
            ip,
            ip6,
        } => {
            if ip6.is_some() {
                anyhow::bail!("--ip6: IPv6 is not supported yet");
            }
            let ipv4_address = ip
                .as_deref()
                .map(|a| {
                    a.parse::<std::net::Ipv4Addr>()
                        .with_context(|| format!("--ip {a:?} is not an IPv4 address"))
                })
                .transpose()?;
            let (key, name) = endpoint_key(global, &nets, container)?;
            let ns = nets.netns_of(&key).with_context(|| {
                format!("container {name} has no network namespace (it was removed half-way?)")
            })?;
            let existing = nets.endpoints_of_container(&key)?;
            let store = ContainerStore::open(&global.state_root())?;
            let hostname = store.record(&store.resolve(container)?)?.config.hostname;
            nets.connect(
                &ns,
                network,
                &network::EndpointSpec {
                    container_id: key,
                    container_name: name,
                    hostname,
                    aliases: aliases.clone(),
                    ipv4_address,
                    dns: existing
                        .first()
                        .map(|e| e.dns_upstreams.clone())
                        .unwrap_or_default(),
                    ..Default::default()
                },
            )?;
        }
        NetworkCommand::Disconnect {
            network, container, ..
        } => {
            let (key, name) = endpoint_key(global, &nets, container)?;
            let before = nets.endpoints_of_container(&key)?;
            nets.disconnect(network, &key).map_err(|e| match e {
                network::Error::Conflict(_) => {
                    anyhow::anyhow!("container {name} is not connected to network {network}")
                }
                e => e.into(),
            })?;
            // The container's resolv.conf names its first network's DNS server and its
            // default route goes through one network: say when those went.
            if before.first().is_some_and(|e| &e.network == network) && before.len() > 1 {
                eprintln!(
                    "warning: {name} used network {network} for DNS (its resolv.conf); names \
                     resolve again after the container is recreated"
                );
            }
        }
        NetworkCommand::Prune { .. } => {
            // Like docker's `bridge`, the default network of `container run` is never pruned.
            let default = crate::engine::container::net::DEFAULT_NETWORK;
            for n in nets.prune(&|n| n.name == default)? {
                println!("{n}");
            }
        }
    }
    Ok(0)
}

/// The key of a container's namespace and endpoints in the network engine (a compose
/// container's name, a `container run` container's id), from its record: its namespace must
/// be one the network engine made (`<root>/netns/<key>`). Returns (key, container name).
fn endpoint_key(
    global: &GlobalArgs,
    nets: &Networks,
    container: &str,
) -> anyhow::Result<(String, String)> {
    let store = ContainerStore::open(&global.state_root())?;
    let id = store.resolve(container)?;
    let rec = store.record(&id)?;
    let name = rec.config.name.clone();
    let own = nets.root().join("netns");
    match &rec.config.network {
        NetworkMode::Netns(p) if p.parent() == Some(own.as_path()) => {
            let key = p
                .file_name()
                .map(|k| k.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((key, name))
        }
        NetworkMode::Host => anyhow::bail!(
            "container {name} uses the host's network: it cannot be connected to networks"
        ),
        NetworkMode::Container(_) => anyhow::bail!(
            "container {name} shares another container's network namespace: connect that \
             container instead"
        ),
        NetworkMode::None => anyhow::bail!(
            "container {name} has network mode none: it cannot be connected to networks"
        ),
        NetworkMode::Netns(p) => anyhow::bail!(
            "container {name} runs in namespace {} that tug's networks do not manage",
            p.display()
        ),
    }
}
