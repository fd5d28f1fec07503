//! `tug container …`: run, create, start, ls, stop, kill, rm, logs, inspect, exec, top,
//! pause, unpause, cp, wait, commit, export. Flags become a `ContainerConfig` or options; the work is in
//! `engine::container`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use super::GlobalArgs;
use crate::engine::container::commit::CommitOptions;
use crate::engine::container::config::{parse_bytes, parse_duration};
use crate::engine::container::{
    ContainerConfig, ContainerStore, ExecOptions, Healthcheck, ImageInfo, Mount, MountKind,
    NetworkMode, RestartPolicy, Status, Summary, Ulimit, generated_name, logs, net,
};
use crate::engine::network::Networks;

/// `tug container` arguments.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    #[command(subcommand)]
    pub command: ContainerCommand,
}

/// Output format of `ls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// A table.
    #[default]
    Table,
    /// One JSON object per container, one per line.
    Json,
}

/// Options that create a container (`run` and `create`).
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Environment variable `K=V` (or `K` to take tug's value); repeatable.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Bind mount `HOST:CONTAINER[:ro]`, or `PATH` for an anonymous volume; repeatable.
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// tmpfs mount `PATH[:OPTIONS]`; repeatable.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Label `K=V`; repeatable.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Network: a network made with `tug network create`, `none`, `host`,
    /// `container:NAME` or a netns path (`ns:/path`); default: the `bridge` network.
    #[arg(long)]
    pub network: Option<String>,
    /// Extra DNS name of the container on its network; repeatable.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// Publish a port `[IP:][HOST:]CONTAINER[/PROTO]`; repeatable.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// User `name|uid[:group|gid]`.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Extra group; repeatable.
    #[arg(long = "group-add")]
    pub group_add: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Override the image's entrypoint (a single program; `""` clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run tug's tiny init as PID 1 (reaps zombies, forwards signals).
    #[arg(long)]
    pub init: bool,
    /// Read-only root filesystem.
    #[arg(long)]
    pub read_only: bool,
    /// All capabilities, no seccomp, no masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// Add a capability; repeatable.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a capability; repeatable.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Security option (`seccomp=unconfined`, `seccomp=FILE`, `no-new-privileges`).
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Sysctl `K=V`; repeatable.
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Ulimit `NAME=SOFT[:HARD]`; repeatable.
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Memory limit (`512m`).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Memory plus swap limit (`-1`: unlimited swap).
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// CPUs (`1.5`).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPUs allowed (`0-1`).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Process limit.
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Size of /dev/shm.
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Restart policy: no, always, on-failure[:N], unless-stopped.
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Signal to stop the container.
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds to wait before killing at stop.
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u64>,
    /// Healthcheck command (run with /bin/sh -c).
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between healthchecks (`30s`).
    #[arg(long = "health-interval")]
    pub health_interval: Option<String>,
    /// Healthcheck timeout.
    #[arg(long = "health-timeout")]
    pub health_timeout: Option<String>,
    /// Failures before unhealthy.
    #[arg(long = "health-retries")]
    pub health_retries: Option<u32>,
    /// Start period.
    #[arg(long = "health-start-period")]
    pub health_start_period: Option<String>,
    /// Interval during the start period.
    #[arg(long = "health-start-interval")]
    pub health_start_interval: Option<String>,
    /// Disable the image's healthcheck.
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// OCI runtime: the built-in one (default) or a runc-compatible binary (`runc`).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Image.
    pub image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The container verbs.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create and start a container; its exit code becomes tug's.
    Run {
        /// Run in the background and print the id.
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Create a container without starting it.
    Create {
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Start containers.
    Start {
        /// Attach to the output and return the exit code.
        #[arg(short = 'a', long)]
        attach: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    #[command(visible_aliases = ["list", "ps"])]
    Ls {
        /// Show all containers (default: running only).
        #[arg(short, long)]
        all: bool,
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Output format: table, `table TEMPLATE`, json, or a Go template ({{.Names}},
        /// {{json .}}, {{.Label "key"}}, …), with docker's fields.
        #[arg(long, default_value = "table")]
        format: String,
        /// Full ids.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Stop containers: stop signal, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time")]
        time: Option<u64>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        /// Signal (name or number).
        #[arg(short = 's', long, default_value = "KILL")]
        signal: String,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        /// Remove the anonymous volumes of the containers too.
        #[arg(short = 'v', long)]
        volumes: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show a container's log.
    Logs {
        /// Keep following the log.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long)]
        tail: Option<String>,
        /// Prefix lines with their timestamp.
        #[arg(short = 't', long)]
        timestamps: bool,
        /// Only lines since this time (RFC 3339) or duration ago (`10m`).
        #[arg(long)]
        since: Option<String>,
        /// Container.
        container: String,
    },
    /// Show containers as JSON.
    Inspect {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container.
    Exec {
        /// Run in the background.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Keep stdin attached.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Allocate a terminal.
        #[arg(short = 't', long)]
        tty: bool,
        /// Environment `K=V`; repeatable.
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// User.
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Working directory.
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        /// Give the command every capability and no seccomp filter (the container's
        /// namespaces, devices and mounts stay as they are).
        #[arg(long)]
        privileged: bool,
        /// Container.
        container: String,
        /// Command and arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Show the processes of a container.
    Top {
        /// Container.
        container: String,
    },
    /// Freeze the processes of containers.
    Pause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw paused containers.
    Unpause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Copy files between a container and the host (`CONTAINER:PATH` on one side).
    Cp {
        /// Source.
        src: String,
        /// Destination.
        dest: String,
    },
    /// Wait for containers to stop and print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Create a new image from a container's changes.
    Commit {
        /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>").
        #[arg(short, long)]
        author: Option<String>,
        /// Apply Dockerfile instruction to the created image; repeatable.
        #[arg(short, long)]
        change: Vec<String>,
        /// Commit message.
        #[arg(short, long)]
        message: Option<String>,
        /// Pause container during commit (`--pause=false` to leave it running).
        #[arg(short, long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
        pause: bool,
        /// Container.
        container: String,
        /// `REPOSITORY[:TAG]` of the new image (unnamed without it).
        #[arg(value_name = "REPOSITORY[:TAG]")]
        reference: Option<String>,
    },
    /// Export a container's filesystem as a tar archive.
    Export {
        /// Write to a file, instead of STDOUT.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Container.
        container: String,
    },
}

fn kv_map(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for i in items {
        let (k, v) = i
            .split_once('=')
            .with_context(|| format!("invalid {what} {i:?}: expected KEY=VALUE"))?;
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

fn opt_duration(s: Option<&String>) -> anyhow::Result<Option<Duration>> {
    s.map(|s| parse_duration(s).map_err(anyhow::Error::msg))
        .transpose()
}

/// Turns the flags into a `ContainerConfig`.
// Long: one flag to one field of the configuration, in the order of the flags.
pub fn config_from(a: &CreateArgs) -> anyhow::Result<ContainerConfig> {
    let mut mounts = Vec::new();
    for v in &a.volumes {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            // An anonymous volume, made (and filled from the image) at create.
            [d] if d.starts_with('/') => {
                mounts.push(Mount {
                    kind: MountKind::Volume,
                    target: (*d).to_string(),
                    ..Mount::default()
                });
                continue;
            }
            [s, d] => (*s, *d, ""),
            [s, d, o] => (*s, *d, *o),
            _ => bail!("invalid volume {v:?}: expected HOST:CONTAINER[:ro] or PATH"),
        };
        if !src.starts_with('/') && !src.starts_with('.') {
            bail!("invalid volume {v:?}: named volumes need `tug up`; give a host path");
        }
        let source = std::fs::canonicalize(src)
            .with_context(|| format!("bind source {src} does not exist"))?;
        let read_only = opts.split(',').any(|o| o == "ro");
        mounts.push(Mount {
            kind: MountKind::Bind,
            source,
            target: dst.to_string(),
            read_only,
            options: opts
                .split(',')
                .filter(|o| !o.is_empty() && *o != "ro" && *o != "rw")
                .map(str::to_string)
                .collect(),
        });
    }
    for t in &a.tmpfs {
        let (target, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        mounts.push(Mount {
            kind: MountKind::Tmpfs,
            source: PathBuf::new(),
            target: target.to_string(),
            read_only: false,
            options: opts
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    // User networks are wired in `create` (they need the id); here only the plain modes.
    let network = match net::parse_network(a.network.as_deref()) {
        net::NetChoice::Mode(m) => m,
        net::NetChoice::Network(_) => NetworkMode::None,
    };
    let mut ulimits = BTreeMap::new();
    for u in &a.ulimit {
        let (name, vals) = u
            .split_once('=')
            .with_context(|| format!("invalid ulimit {u:?}: expected NAME=SOFT[:HARD]"))?;
        let (s, h) = vals.split_once(':').unwrap_or((vals, vals));
        let parse = |x: &str| -> anyhow::Result<u64> {
            if x == "-1" || x == "unlimited" {
                Ok(u64::MAX)
            } else {
                x.parse()
                    .with_context(|| format!("invalid ulimit value {x:?}"))
            }
        };
        ulimits.insert(
            name.to_string(),
            Ulimit {
                soft: parse(s)?,
                hard: parse(h)?,
            },
        );
    }
    let bytes = |s: &Option<String>| -> anyhow::Result<Option<i64>> {
        match s.as_deref() {
            None => Ok(None),
            Some("-1") => Ok(Some(-1)),
            Some(v) => Ok(Some(
                i64::try_from(parse_bytes(v).map_err(anyhow::Error::msg)?)
                    .context("size too large")?,
            )),
        }
    };
    let healthcheck = if a.no_healthcheck {
        Some(Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        })
    } else {
        // Flags without --health-cmd override those fields of the image's healthcheck.
        let hc = Healthcheck {
            test: a
                .health_cmd
                .as_ref()
                .map(|cmd| vec!["CMD-SHELL".into(), cmd.clone()])
                .unwrap_or_default(),
            interval: opt_duration(a.health_interval.as_ref())?,
            timeout: opt_duration(a.health_timeout.as_ref())?,
            retries: a.health_retries,
            start_period: opt_duration(a.health_start_period.as_ref())?,
            start_interval: opt_duration(a.health_start_interval.as_ref())?,
        };
        (hc != Healthcheck::default()).then_some(hc)
    };
    let entrypoint = a.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            Vec::new()
        } else {
            vec![e.clone()]
        }
    });
    Ok(ContainerConfig {
        name: a.name.clone().unwrap_or_default(),
        image: a.image.clone(),
        labels: kv_map(&a.labels, "label")?,
        entrypoint,
        command: (!a.command.is_empty()).then(|| a.command.clone()),
        env: a.env.clone(),
        working_dir: a.workdir.clone(),
        user: a.user.clone(),
        group_add: a.group_add.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        stdin_open: a.interactive,
        init: a.init,
        read_only: a.read_only,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        security_opt: a.security_opt.clone(),
        sysctls: kv_map(&a.sysctl, "sysctl")?,
        ulimits,
        resources: crate::engine::container::Resources {
            memory: bytes(&a.memory)?,
            memswap: bytes(&a.memory_swap)?,
            cpus: a.cpus,
            cpu_shares: a.cpu_shares,
            cpuset: a.cpuset_cpus.clone(),
            pids_limit: a.pids_limit,
            shm_size: a
                .shm_size
                .as_deref()
                .map(parse_bytes)
                .transpose()
                .map_err(anyhow::Error::msg)?,
        },
        mounts,
        network,
        restart: a
            .restart
            .parse::<RestartPolicy>()
            .map_err(anyhow::Error::msg)?,
        stop_signal: a.stop_signal.clone(),
        stop_grace_period: a.stop_timeout.map(Duration::from_secs),
        healthcheck,
        auto_remove: a.rm,
        runtime: a.runtime.clone().filter(|r| r != "tug" && !r.is_empty()),
        ..Default::default()
    })
}

/// Resolves the image and creates the container; returns the store and the id.
fn create(root: &Path, a: &CreateArgs) -> anyhow::Result<(ContainerStore, String)> {
    let config = config_from(a)?;
    let images = super::open_images(root)?;
    let img = images.resolve(&a.image)?;
    let layers = images.layer_dirs(&img)?;
    let info = ImageInfo {
        id: img.id.clone(),
        layers,
        config: img.config.config().clone(),
    };
    let store = ContainerStore::open(root)?;
    let id = ContainerStore::new_id();
    let mut config = config;
    if config.name.is_empty() {
        config.name = generated_name();
    }
    let nets = Networks::open(root)
        .with_context(|| format!("cannot open the networks in {}", root.display()))?;
    let request = net::NetRequest {
        network: a.network.clone(),
        publish: a.publish.clone(),
        aliases: a.network_alias.clone(),
    };
    let guard = net::wire(&nets, &id, &mut config, &request)?;
    store.create_with_id(&id, config, &info)?;
    if let Some(g) = guard {
        g.disarm();
    }
    Ok((store, id))
}

/// Puts the terminal on stdin into raw mode while alive.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enable(on: bool) -> RawMode {
        use nix::sys::termios;
        if !on || !nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
            return RawMode(None);
        }
        let Ok(orig) = termios::tcgetattr(std::io::stdin()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 to the container while attached.
fn forward_signals(store: &ContainerStore, id: &str) {
    use nix::sys::signal::{SigSet, Signal};
    let set = SigSet::from_iter([
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ]);
    if set.thread_block().is_err() {
        return;
    }
    let store = store.clone();
    let id = id.to_string();
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            let _ = store.kill(&id, sig.as_str());
        }
    });
}

fn attach_and_wait(store: &ContainerStore, id: &str, tty: bool) -> anyhow::Result<i32> {
    let raw = RawMode::enable(tty);
    let started = store.start(id, true);
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            drop(raw);
            let rec = store.record(id).ok();
            if rec.is_some_and(|r| r.config.auto_remove) {
                let _ = store.remove_with_volumes(id, true);
            }
            let msg = e.to_string();
            let code = if msg.contains("not found in $PATH") || msg.contains("no such file") {
                127
            } else if msg.contains("permission denied") {
                126
            } else {
                125
            };
            eprintln!("error: {msg}");
            return Ok(code);
        }
    };
    forward_signals(store, id);
    let code = started.wait()?;
    drop(raw);
    Ok(code)
}

fn short(id: &str, no_trunc: bool) -> &str {
    if no_trunc {
        id
    } else {
        &id[..id.len().min(12)]
    }
}

fn parse_since(s: &str) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    if let Ok(n) = s.parse::<i64>() {
        return jiff::Timestamp::from_second(n).map_err(anyhow::Error::from);
    }
    let d = parse_duration(s).map_err(anyhow::Error::msg)?;
    let span = jiff::SignedDuration::try_from(d).context("duration too large")?;
    Ok(jiff::Timestamp::now() - span)
}

fn print_record(r: &logs::LogRecord, timestamps: bool) -> std::io::Result<()> {
    let line = if timestamps {
        format!("{} {}", r.time, r.text)
    } else {
        r.text.clone()
    };
    let nl = if r.partial { "" } else { "\n" };
    if r.stream == "stderr" {
        let mut e = std::io::stderr().lock();
        write!(e, "{line}{nl}")?;
        e.flush()
    } else {
        let mut o = std::io::stdout().lock();
        write!(o, "{line}{nl}")?;
        o.flush()
    }
}

/// Runs a `tug container` verb.
// Long: one arm per `container` subcommand, each a few lines of flags to a store call.
#[allow(clippy::too_many_lines)]
pub fn run(global: &GlobalArgs, args: ContainerArgs) -> anyhow::Result<i32> {
    let root = global.state_root();
    let open = || {
        ContainerStore::open(&root)
            .with_context(|| format!("cannot open the container store in {}", root.display()))
    };
    match args.command {
        ContainerCommand::Run { detach, create: c } => {
            if detach && c.rm && c.tty && c.interactive {
                // accepted: docker allows -dit --rm
            }
            let (store, id) = create(&root, &c)?;
            if detach {
                if let Err(e) = store.start(&id, false) {
                    if c.rm {
                        let _ = store.remove(&id, true);
                    }
                    return Err(e.into());
                }
                println!("{id}");
                return Ok(0);
            }
            attach_and_wait(&store, &id, c.tty)
        }
        ContainerCommand::Create { create: c } => {
            let (_, id) = create(&root, &c)?;
            println!("{id}");
            Ok(0)
        }
        ContainerCommand::Start { attach, containers } => {
            let store = open()?;
            if attach {
                if containers.len() != 1 {
                    bail!("start --attach takes one container");
                }
                let id = store.resolve(&containers[0])?;
                let tty = store.record(&id)?.config.tty;
                return attach_and_wait(&store, &id, tty);
            }
            for c in &containers {
                store.start(c, false)?;
                println!("{c}");
            }
            Ok(0)
        }
        ContainerCommand::Ls {
            all,
            quiet,
            format,
            no_trunc,
        } => {
            let template =
                crate::cli::format::Template::parse(&format, crate::cli::listing::DOCKER_PS_TABLE)
                    .map_err(anyhow::Error::msg)?;
            let store = open()?;
            let list = store.list(all)?;
            for s in list.iter().filter(|s| s.damaged.is_some()) {
                eprintln!(
                    "warning: container {} is damaged: {}",
                    s.name,
                    s.damaged.as_deref().unwrap_or_default()
                );
            }
            if quiet {
                let mut out = std::io::stdout().lock();
                for s in &list {
                    writeln!(out, "{}", short(&s.id, no_trunc))?;
                }
                return Ok(0);
            }
            let networks = Networks::open(&root)?;
            let no_expose = |_: &Summary| Vec::new();
            let record = |id: &str| store.inspect(id).ok().map(|i| i.record);
            let published = |name: &str| networks.published(name).unwrap_or_default();
            let attached = |name: &str| -> Vec<String> {
                networks
                    .endpoints_of_container(name)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| e.network)
                    .collect()
            };
            let ctx = crate::cli::listing::Context {
                root: &root,
                record: &record,
                published: &published,
                networks: &attached,
                expose: &no_expose,
            };
            let rows: Vec<crate::cli::format::Row> = list
                .iter()
                .map(|c| {
                    let mut r = crate::cli::listing::container_row(&ctx, c, !no_trunc);
                    // docker's fields, without those docker compose adds.
                    for k in crate::cli::listing::COMPOSE_ONLY_FIELDS {
                        r.fields.shift_remove(k);
                    }
                    r
                })
                .collect();
            print!(
                "{}",
                template
                    .render(&rows, crate::cli::listing::CONTAINER_HEADERS)
                    .map_err(anyhow::Error::msg)?
            );
            Ok(0)
        }
        ContainerCommand::Stop { time, containers } => {
            let store = open()?;
            let mut failed = false;
            for c in &containers {
                match store.stop(c, time.map(Duration::from_secs)) {
                    Ok(()) => println!("{c}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
        ContainerCommand::Kill { signal, containers } => {
            let store = open()?;
            let mut failed = false;
            for c in &containers {
                match store.kill(c, &signal) {
                    Ok(()) => println!("{c}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
        ContainerCommand::Rm {
            force,
            volumes,
            containers,
        } => {
            let store = open()?;
            let mut failed = false;
            for c in &containers {
                let removed = if volumes {
                    store.remove_with_volumes(c, force).map(|_| ())
                } else {
                    store.remove(c, force)
                };
                match removed {
                    Ok(()) => println!("{c}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
        ContainerCommand::Logs {
            follow,
            tail,
            timestamps,
            since,
            container,
        } => {
            let store = open()?;
            let id = store.resolve(&container)?;
            let path = store.log_path(&id)?;
            let since = since.as_deref().map(parse_since).transpose()?;
            let keep = |r: &logs::LogRecord| {
                since.is_none_or(|s| r.time.parse::<jiff::Timestamp>().is_ok_and(|t| t >= s))
            };
            let mut follower = logs::Follower::at_start(&path);
            let mut records: Vec<logs::LogRecord> = logs::read_rotated(&path);
            records.extend(follower.poll());
            records.retain(|r| keep(r));
            if let Some(t) = tail.as_deref().filter(|t| *t != "all") {
                let n: usize = t.parse().with_context(|| format!("invalid --tail {t:?}"))?;
                let skip = records.len().saturating_sub(n);
                records.drain(..skip);
            }
            for r in &records {
                print_record(r, timestamps)?;
            }
            if follow {
                // Woken by the log's writes and the state's changes (inotify), not a timer.
                let watch =
                    crate::engine::container::state::Watch::writes(&[store.container_dir(&id)]);
                loop {
                    let running = matches!(
                        store.state(&id).status,
                        Status::Running | Status::Paused | Status::Restarting
                    );
                    for r in follower.poll() {
                        if keep(&r) {
                            print_record(&r, timestamps)?;
                        }
                    }
                    if !running || !store.container_dir(&id).exists() {
                        break;
                    }
                    match &watch {
                        Some(w) => w.wait(Duration::from_millis(500)),
                        None => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
            Ok(0)
        }
        ContainerCommand::Inspect { containers } => {
            let store = open()?;
            let mut all = Vec::new();
            for c in &containers {
                all.push(store.inspect(c)?);
            }
            println!("{}", serde_json::to_string_pretty(&all)?);
            Ok(0)
        }
        ContainerCommand::Exec {
            detach,
            interactive,
            tty,
            env,
            user,
            workdir,
            privileged,
            container,
            command,
        } => {
            let store = open()?;
            let raw = RawMode::enable(tty && !detach);
            let code = store.exec(
                &container,
                &ExecOptions {
                    cmd: command,
                    env,
                    user,
                    workdir,
                    tty,
                    interactive,
                    detach,
                    timeout: None,
                    privileged,
                },
            )?;
            drop(raw);
            Ok(code)
        }
        ContainerCommand::Top { container } => {
            let store = open()?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<10}{:<8}CMD", "PID", "UID")?;
            for (pid, uid, cmd) in store.top(&container)? {
                writeln!(out, "{pid:<10}{uid:<8}{cmd}")?;
            }
            Ok(0)
        }
        ContainerCommand::Pause { containers } => {
            let store = open()?;
            for c in &containers {
                store.pause(c, true)?;
                println!("{c}");
            }
            Ok(0)
        }
        ContainerCommand::Unpause { containers } => {
            let store = open()?;
            for c in &containers {
                store.pause(c, false)?;
                println!("{c}");
            }
            Ok(0)
        }
        ContainerCommand::Cp { src, dest } => {
            let store = open()?;
            let split = |s: &str| -> Option<(String, String)> {
                let (c, p) = s.split_once(':')?;
                (!c.is_empty() && !c.contains('/')).then(|| (c.to_string(), p.to_string()))
            };
            match (split(&src), split(&dest)) {
                (Some((c, p)), None) => store.copy(&c, Path::new(&p), Path::new(&dest), false)?,
                (None, Some((c, p))) => store.copy(&c, Path::new(&src), Path::new(&p), true)?,
                _ => bail!("cp needs exactly one side as CONTAINER:PATH"),
            }
            Ok(0)
        }
        ContainerCommand::Wait { containers } => {
            let store = open()?;
            for c in &containers {
                let code = store.wait(c, None)?;
                println!("{}", code.unwrap_or(0));
            }
            Ok(0)
        }
        ContainerCommand::Commit {
            author,
            change,
            message,
            pause,
            container,
            reference,
        } => {
            let store = open()?;
            let images = crate::engine::image::ImageStore::open(&root)?;
            let image = store.commit(
                &images,
                &container,
                &CommitOptions {
                    reference,
                    author,
                    message,
                    changes: change,
                    pause,
                },
            )?;
            println!("{}", image.id);
            Ok(0)
        }
        ContainerCommand::Export { output, container } => {
            let store = open()?;
            write_tar(
                output.as_deref(),
                "cowardly refusing to save to a terminal. Use the -o flag or redirect",
                |w| {
                    store.export(&container, w)?;
                    Ok(())
                },
            )?;
            Ok(0)
        }
    }
}

/// Writes the tar stream `produce` makes to `output` — into a temporary file of its
/// directory, renamed into place once complete, so a failed export leaves no partial
/// archive — or to stdout, refused (`refusal`) when stdout is a terminal.
///
/// # Errors
/// `produce` fails, or the file cannot be written.
pub(crate) fn write_tar(
    output: Option<&Path>,
    refusal: &str,
    produce: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let Some(path) = output else {
        let out = std::io::stdout();
        if out.is_terminal() {
            bail!("{refusal}");
        }
        let mut w = std::io::BufWriter::with_capacity(1 << 20, out.lock());
        produce(&mut w)?;
        return Ok(w.flush()?);
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".tug-export-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
    produce(&mut w)?;
    let tmp = w
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_short_flags_are_docker_s() {
        use clap::Parser as _;
        let parse = |v: &[&str]| {
            crate::cli::Cli::try_parse_from(v).unwrap_or_else(|e| panic!("{v:?}: {e}"))
        };
        let crate::cli::Command::Container(c) =
            parse(&["tug", "container", "logs", "-f", "x"]).command
        else {
            panic!("not container")
        };
        assert!(matches!(
            c.0.command,
            ContainerCommand::Logs { follow: true, .. }
        ));
        // `-p` publishes; `-p` after the image is the command's.
        let crate::cli::Command::Container(c) = parse(&[
            "tug",
            "container",
            "run",
            "-it",
            "-e",
            "A=-p",
            "-p",
            "80:80",
            "--name",
            "n",
            "-p8:8",
            "--rm",
            "busybox",
            "httpd",
            "-p",
            "80",
        ])
        .command
        else {
            panic!("not container")
        };
        let ContainerCommand::Run { create, .. } = c.0.command else {
            panic!("not run")
        };
        assert_eq!(create.publish, vec!["80:80".to_string(), "8:8".to_string()]);
        assert_eq!(create.env, vec!["A=-p".to_string()]);
        assert_eq!(create.name.as_deref(), Some("n"));
        assert_eq!(create.command, vec!["httpd", "-p", "80"]);
    }
}
