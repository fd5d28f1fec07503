//! `tug network …` and the hidden helper verbs of networks (DNS server, port proxy).

use std::collections::BTreeMap;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::GlobalArgs;
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

pub(super) fn run(global: &GlobalArgs, cmd: &NetworkCommand) -> anyhow::Result<i32> {
    let nets = Networks::open(&global.state_root())?;
    match cmd {
        NetworkCommand::Ls(a) => {
            for w in nets.reconcile().context("repair network state")? {
                eprintln!("warning: {w}");
            }
            let list = nets.list()?;
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
        NetworkCommand::Prune { .. } => {
            for n in nets.prune(&|_| false)? {
                println!("{n}");
            }
        }
    }
    Ok(0)
}

/// Flags of the hidden `tug network-dns`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// The records file.
    #[arg(long)]
    pub records: PathBuf,
    /// Inherited, bound UDP socket.
    #[arg(long)]
    pub udp_fd: i32,
    /// Inherited, listening TCP socket.
    #[arg(long)]
    pub tcp_fd: i32,
}

pub(super) fn run_dns(a: &DnsArgs) -> anyhow::Result<i32> {
    check_fd(a.udp_fd)?;
    check_fd(a.tcp_fd)?;
    // SAFETY: the fds were bound by the parent tug command for this process alone (checked
    // open above) and are wrapped exactly once.
    let udp = unsafe { std::net::UdpSocket::from_raw_fd(a.udp_fd) };
    // SAFETY: as above.
    let tcp = unsafe { std::net::TcpListener::from_raw_fd(a.tcp_fd) };
    network::dns::serve(&a.records, udp, tcp)?;
    Ok(0)
}

/// Flags of the hidden `tug network-proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The container's port record (the proxy exits when it disappears).
    #[arg(long)]
    pub record: PathBuf,
    /// JSON list of {fd, protocol, target}.
    #[arg(long)]
    pub spec: String,
}

pub(super) fn run_proxy(a: &ProxyArgs) -> anyhow::Result<i32> {
    let entries: Vec<network::ports::ProxyEntry> =
        serde_json::from_str(&a.spec).context("bad proxy spec")?;
    for e in &entries {
        check_fd(e.fd)?;
    }
    network::ports::serve(&a.record, entries)?;
    Ok(0)
}

fn check_fd(fd: i32) -> anyhow::Result<()> {
    if fd < 3
        || nix::fcntl::fcntl(
            // SAFETY: only used to query flags; an invalid fd yields EBADF, nothing is closed.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
    {
        anyhow::bail!("file descriptor {fd} is not open (this verb is started by tug itself)");
    }
    Ok(())
}
