//! Command-line interface: clap definitions (one file per verb group) and output.
//!
//! This is the only module that prints. Each verb turns its flags into an options struct and
//! calls into `project`, `plan` or `engine`; errors come back as values and are printed here.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Options every command accepts, named as docker compose names them.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Compose configuration files (repeatable); default: compose.yaml & co. in the working
    /// directory or its parents.
    #[arg(short = 'f', long = "file", global = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Project name.
    #[arg(short = 'p', long = "project-name", global = true, value_name = "NAME")]
    pub project_name: Option<String>,
    /// Alternate working directory (default: the directory of the first compose file).
    #[arg(long, global = true, value_name = "DIR")]
    pub project_directory: Option<PathBuf>,
    /// Profiles to enable (repeatable).
    #[arg(long = "profile", global = true, value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// Alternate environment files (repeatable).
    #[arg(long = "env-file", global = true, value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// State root of tug's engine (images, containers, volumes, networks).
    #[arg(long = "root", global = true, env = "TUG_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl GlobalArgs {
    /// The engine's state root: `--root`, `TUG_ROOT`, or `/var/lib/tug`.
    #[must_use]
    pub fn state_root(&self) -> PathBuf {
        self.root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/tug"))
    }
}

/// tug: compose-style stacks on a built-in container engine.
#[derive(Debug, Parser)]
#[command(name = "tug", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Every verb.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse, resolve and render the compose file in canonical form.
    Config(config::ConfigArgs),
    /// Manage images: list, import, load, save, pull, push, bootstrap base images.
    Image(image::ImageArgs),
    /// Manage containers: run, ls, stop, kill, rm, logs, exec, inspect, top, pause, cp.
    Container(container::ContainerArgs),
    /// Log in to a container registry.
    Login(image::LoginArgs),
    /// Log out from a container registry.
    Logout {
        /// Registry host (default: docker.io).
        registry: Option<String>,
    },
    /// Generate shell completions.
    Completion {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// A network's DNS server (started by tug itself).
    #[command(hide = true)]
    NetworkDns(network::DnsArgs),
    /// A container's port proxy (started by tug itself).
    #[command(hide = true)]
    NetworkProxy(network::ProxyArgs),
}

pub mod config;
mod container;
mod image;
mod network;
mod volume;

/// Runs tug with the process arguments and returns the exit code.
#[must_use]
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The hidden `tug __shim …` (container supervisor, exec/cp helpers) skips clap: it must
    // start fast and stay small.
    if args.get(1).is_some_and(|a| a == "__shim") {
        return match crate::engine::container::supervisor::main(&args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                126
            }
        };
    }
    run_with(container::rewrite_args(args))
}

/// Runs tug with the given arguments and returns the exit code.
pub fn run_with<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return 0;
            }
            eprintln!("error: {}", render_error(&err));
            1
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let Cli { global, command } = cli;
    match command {
        Command::Config(args) => config::run(&global, &args),
        Command::Image(args) => image::run(&global, args),
        Command::Container(args) => container::run(&global, args),
        Command::Login(args) => image::login(&args, &mut std::io::stdout().lock()),
        Command::Logout { registry } => {
            image::logout(registry.as_deref(), &mut std::io::stdout().lock())
        }
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "tug", &mut std::io::stdout());
            Ok(0)
        }
        Command::Network(cmd) => network::run(&global, &cmd),
        Command::Volume(cmd) => volume::run(&global, &cmd),
        Command::NetworkDns(args) => network::run_dns(&args),
        Command::NetworkProxy(args) => network::run_proxy(&args),
    }
}

/// Renders an error chain on one line per cause, without Rust debug noise.
fn render_error(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
