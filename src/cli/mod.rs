//! Command-line interface: clap definitions (one file per verb group) and output.
//!
//! This is the only module that prints. Each verb turns its flags into an options struct and
//! calls into `project`, `plan` or `engine`; errors come back as values and are printed here.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Options of every command: where the engine keeps its state, and dry runs.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// State root of tug's engine (images, containers, volumes, networks).
    #[arg(long = "root", global = true, env = "TUG_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Execute command in dry run mode: print the plan, change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// The verb may act on the project as the state root knows it (by its name, from the
    /// labels) when the compose file cannot be loaded. Set by `dispatch`, not a flag.
    #[arg(skip)]
    pub by_name: bool,
}

/// docker compose's project options. They come before the verb (`tug -f a.yaml up`), as in
/// docker compose, and may also follow a verb that loads a project (`tug up --file a.yaml`);
/// `tug image …`, `tug container …` and the other engine verbs do not take them.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Project options")]
pub struct ComposeArgs {
    /// Compose configuration files (repeatable); default: compose.yaml & co. in the working
    /// directory or its parents.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Project name.
    #[arg(short = 'p', long = "project-name", value_name = "NAME")]
    pub project_name: Option<String>,
    /// Alternate working directory (default: the directory of the first compose file).
    #[arg(long, value_name = "DIR")]
    pub project_directory: Option<PathBuf>,
    /// Profiles to enable (repeatable).
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// Alternate environment files (repeatable).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Set type of progress output (default: COMPOSE_PROGRESS, else auto).
    #[arg(long, value_parser = ["auto", "tty", "plain", "json", "quiet"])]
    pub progress: Option<String>,
    /// Control when to print ANSI control characters (default: COMPOSE_ANSI, else auto).
    #[arg(long, value_parser = ["never", "always", "auto"])]
    pub ansi: Option<String>,
    /// Do not print ANSI control characters (deprecated: --ansi never).
    #[arg(long, hide = true)]
    pub no_ansi: bool,
    /// Control max parallelism, -1 for unlimited (default: COMPOSE_PARALLEL_LIMIT, else -1).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub parallel: Option<i64>,
    /// Run compose in backward compatibility mode (docker-compose v1 names): not supported.
    #[arg(long)]
    pub compatibility: bool,
    /// Include all resources, even those not used by services.
    #[arg(long)]
    pub all_resources: bool,
    /// Show more output (accepted; tug prints the same).
    #[arg(long, hide = true)]
    pub verbose: bool,
}

impl ComposeArgs {
    /// `self` with what `later` sets on top (lists add up, single values are replaced).
    fn overlay(&self, later: &ComposeArgs) -> ComposeArgs {
        let mut out = self.clone();
        out.files.extend(later.files.iter().cloned());
        out.profiles.extend(later.profiles.iter().cloned());
        out.env_files.extend(later.env_files.iter().cloned());
        let pick = |a: &Option<String>, b: &Option<String>| b.clone().or_else(|| a.clone());
        out.project_name = pick(&self.project_name, &later.project_name);
        out.progress = pick(&self.progress, &later.progress);
        out.ansi = pick(&self.ansi, &later.ansi);
        out.project_directory = later
            .project_directory
            .clone()
            .or_else(|| self.project_directory.clone());
        out.parallel = later.parallel.or(self.parallel);
        out.no_ansi |= later.no_ansi;
        out.compatibility |= later.compatibility;
        out.all_resources |= later.all_resources;
        out.verbose |= later.verbose;
        out
    }
}

/// The arguments of a verb that loads a project: docker compose's project options (long
/// forms only: after the verb `-f` and `-p` keep the verb's own meaning, `logs -f`,
/// `run -p`), then the verb's own.
#[derive(Debug)]
pub struct Verb<T> {
    /// Project options given after the verb.
    pub compose: ComposeArgs,
    /// The verb's own arguments.
    pub args: T,
}

impl<T> std::ops::Deref for Verb<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.args
    }
}

/// The verb-level project options: no short forms, and no default from the environment. The
/// verb's own arguments that follow are listed under the usual heading, not under theirs.
fn verb_compose_args(cmd: clap::Command) -> clap::Command {
    ComposeArgs::augment_args(cmd)
        .mut_arg("files", |a| a.short(None))
        .mut_arg("project_name", |a| a.short(None))
        .next_help_heading(None)
}

impl<T: Args> Args for Verb<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        T::augment_args(verb_compose_args(cmd))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        T::augment_args_for_update(verb_compose_args(cmd))
    }
}

impl<T: clap::FromArgMatches> clap::FromArgMatches for Verb<T> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Verb {
            compose: ComposeArgs::from_arg_matches(m)?,
            args: T::from_arg_matches(m)?,
        })
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.compose.update_from_arg_matches(m)?;
        self.args.update_from_arg_matches(m)
    }
}

/// What a command runs with: the engine options and the project options, resolved (flags
/// before and after the verb, then `COMPOSE_*` variables, then defaults).
#[derive(Debug, Clone)]
pub struct GlobalArgs {
    /// `-f`.
    pub files: Vec<PathBuf>,
    /// `-p`.
    pub project_name: Option<String>,
    /// `--project-directory`.
    pub project_directory: Option<PathBuf>,
    /// `--profile`.
    pub profiles: Vec<String>,
    /// `--env-file`.
    pub env_files: Vec<PathBuf>,
    /// `--root` / `TUG_ROOT`.
    pub root: Option<PathBuf>,
    /// `--progress`: auto, tty, plain, json or quiet.
    pub progress: String,
    /// `--ansi`: never, always or auto.
    pub ansi: String,
    /// `--parallel`: operations at once, 0 for no limit.
    pub parallel: usize,
    /// `--all-resources`.
    pub all_resources: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// The verb may act on the project as the state root knows it (by its name, from the
    /// labels) when the compose file cannot be loaded. Set by `dispatch`, not a flag.
    pub by_name: bool,
}

impl Default for GlobalArgs {
    fn default() -> Self {
        GlobalArgs {
            files: Vec::new(),
            project_name: None,
            project_directory: None,
            profiles: Vec::new(),
            env_files: Vec::new(),
            root: None,
            progress: "auto".to_owned(),
            ansi: "auto".to_owned(),
            parallel: 0,
            all_resources: false,
            dry_run: false,
            by_name: false,
        }
    }
}

impl GlobalArgs {
    /// Resolves the options of a command line.
    ///
    /// # Errors
    /// An option tug cannot honour (`--compatibility`), or a bad `COMPOSE_*` value.
    pub fn resolve(engine: &EngineArgs, compose: &ComposeArgs) -> anyhow::Result<GlobalArgs> {
        if compose.compatibility {
            anyhow::bail!(
                "--compatibility (docker-compose v1 container names) is not supported by tug"
            );
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let progress = compose
            .progress
            .clone()
            .or_else(|| env("COMPOSE_PROGRESS"))
            .unwrap_or_else(|| "auto".to_owned());
        if !["auto", "tty", "plain", "json", "quiet"].contains(&progress.as_str()) {
            anyhow::bail!(
                "invalid progress mode {progress:?} (COMPOSE_PROGRESS): expected auto, tty, plain, json or quiet"
            );
        }
        let ansi = if compose.no_ansi {
            "never".to_owned()
        } else {
            compose
                .ansi
                .clone()
                .or_else(|| env("COMPOSE_ANSI"))
                .unwrap_or_else(|| "auto".to_owned())
        };
        if !["never", "always", "auto"].contains(&ansi.as_str()) {
            anyhow::bail!("invalid --ansi {ansi:?} (COMPOSE_ANSI): expected never, always or auto");
        }
        let parallel = match compose.parallel {
            Some(n) => n,
            None => match env("COMPOSE_PARALLEL_LIMIT") {
                Some(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("invalid COMPOSE_PARALLEL_LIMIT {v:?}"))?,
                None => -1,
            },
        };
        Ok(GlobalArgs {
            files: compose.files.clone(),
            project_name: compose.project_name.clone(),
            project_directory: compose.project_directory.clone(),
            profiles: compose.profiles.clone(),
            env_files: compose.env_files.clone(),
            root: engine.root.clone(),
            progress,
            ansi,
            parallel: usize::try_from(parallel).unwrap_or(0),
            all_resources: compose.all_resources,
            dry_run: engine.dry_run,
            by_name: false,
        })
    }

    /// The engine's state root: `--root`, `TUG_ROOT`, or `/var/lib/tug`. The first call
    /// makes it private (`engine::private::ensure_root`: created `0700`, a root made by an
    /// older tug tightened once, which is said on stderr); an error there is left to the
    /// store that opens the root next, which names it.
    #[must_use]
    pub fn state_root(&self) -> PathBuf {
        let root = self
            .root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/tug"));
        if let Ok(Some(t)) = crate::engine::private::ensure_root(&root) {
            eprintln!(
                "tug: made the state root {} private to root: {} directories and files were \
                 open to other users (directories are now 0700, records and logs 0600)",
                t.root.display(),
                t.changed
            );
        }
        root
    }

    /// Whether to colour output on a stream that is (or is not) a terminal: `--ansi`, then
    /// `NO_COLOR`, then the terminal.
    #[must_use]
    pub fn colour(&self, terminal: bool) -> bool {
        match self.ansi.as_str() {
            "never" => false,
            "always" => true,
            _ => terminal && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

/// tug: compose-style stacks on a built-in container engine.
#[derive(Debug, Parser)]
#[command(name = "tug", version, about, disable_version_flag = true)]
#[allow(clippy::manual_non_exhaustive)]
pub struct Cli {
    /// Print version (`-v` too, as docker compose has it).
    #[arg(short = 'V', long = "version", short_alias = 'v', action = clap::ArgAction::Version)]
    version: (),
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub compose: ComposeArgs,
    /// Deprecated name of --project-directory (docker compose still accepts it).
    #[arg(long, value_name = "DIR", hide = true)]
    pub workdir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Defines a wrapper whose clap definition is built only when its verb is the one given
/// (`Command::defer`): building the definitions of every verb costs about a millisecond, at
/// every start of tug. The wrapper parses as the type it wraps.
macro_rules! deferred_wrapper {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name<T>(pub T);

        impl<T> std::ops::Deref for $name<T> {
            type Target = T;
            fn deref(&self) -> &T {
                &self.0
            }
        }

        impl<T: clap::FromArgMatches> clap::FromArgMatches for $name<T> {
            fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
                T::from_arg_matches(m).map($name)
            }
            fn from_arg_matches_mut(m: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
                T::from_arg_matches_mut(m).map($name)
            }
            fn update_from_arg_matches(
                &mut self,
                m: &clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                self.0.update_from_arg_matches(m)
            }
            fn update_from_arg_matches_mut(
                &mut self,
                m: &mut clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                self.0.update_from_arg_matches_mut(m)
            }
        }
    };
}

deferred_wrapper!(
    /// A verb's arguments, defined when the verb is used.
    Lazy
);
deferred_wrapper!(
    /// A verb group (`network …`, `volume …`), defined when the group is used.
    LazySub
);

/// Runs a deferred definition, keeping the verb's own description: the arguments' type may
/// carry one of its own, which clap would otherwise let win, since it comes last.
fn keep_about(cmd: clap::Command, build: fn(clap::Command) -> clap::Command) -> clap::Command {
    let about = cmd.get_about().cloned();
    let long = cmd.get_long_about().cloned();
    let mut cmd = build(cmd);
    if let Some(a) = about {
        cmd = cmd.about(a);
    }
    if let Some(l) = long {
        cmd = cmd.long_about(l);
    }
    cmd
}

impl<T: Args> Lazy<T> {
    fn build(cmd: clap::Command) -> clap::Command {
        keep_about(cmd, T::augment_args)
    }
    fn build_for_update(cmd: clap::Command) -> clap::Command {
        keep_about(cmd, T::augment_args_for_update)
    }
}

/// Set when every verb must be defined at once (shell completions).
static EAGER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn eager() -> bool {
    EAGER.load(std::sync::atomic::Ordering::Relaxed)
}

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        if eager() {
            return Self::build(cmd);
        }
        cmd.defer(Self::build)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        if eager() {
            return Self::build_for_update(cmd);
        }
        cmd.defer(Self::build_for_update)
    }
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

impl<T: Subcommand> LazySub<T> {
    fn build(cmd: clap::Command) -> clap::Command {
        keep_about(cmd, T::augment_subcommands)
    }
    fn build_for_update(cmd: clap::Command) -> clap::Command {
        keep_about(cmd, T::augment_subcommands_for_update)
    }
}

impl<T: Subcommand> Subcommand for LazySub<T> {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        if eager() {
            return Self::build(cmd);
        }
        cmd.defer(Self::build)
    }
    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        if eager() {
            return Self::build_for_update(cmd);
        }
        cmd.defer(Self::build_for_update)
    }
    fn has_subcommand(name: &str) -> bool {
        T::has_subcommand(name)
    }
}

/// Every verb.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse, resolve and render the compose file in canonical form.
    Config(Lazy<Verb<config::ConfigArgs>>),
    /// Manage images: list, import, load, save, pull, push, bootstrap base images.
    Image(Lazy<image::ImageArgs>),
    /// Manage containers: run, ls, stop, kill, rm, logs, exec, inspect, top, pause, cp.
    Container(Lazy<container::ContainerArgs>),
    /// Log in to a container registry.
    Login(Lazy<image::LoginArgs>),
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
    Network(LazySub<network::NetworkCommand>),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(LazySub<volume::VolumeCommand>),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(LazySub<build::BuilderCommand>),
    /// Create and start containers.
    Up(Lazy<Verb<compose::args::UpArgs>>),
    /// Stop and remove containers, networks.
    Down(Lazy<Verb<compose::args::DownArgs>>),
    /// Creates containers for a service.
    Create(Lazy<Verb<compose::args::CreateArgs>>),
    /// Start services.
    Start(Lazy<Verb<compose::args::ServicesArgs>>),
    /// Stop services.
    Stop(Lazy<Verb<compose::args::StopArgs>>),
    /// Restart service containers.
    Restart(Lazy<Verb<compose::args::RestartArgs>>),
    /// Force stop service containers.
    Kill(Lazy<Verb<compose::args::KillArgs>>),
    /// Removes stopped service containers.
    Rm(Lazy<Verb<compose::args::RmArgs>>),
    /// Pause services.
    Pause(Lazy<Verb<compose::args::ServicesArgs>>),
    /// Unpause services.
    Unpause(Lazy<Verb<compose::args::ServicesArgs>>),
    /// List containers.
    Ps(Lazy<Verb<compose::args::PsArgs>>),
    /// View output from containers.
    Logs(Lazy<Verb<compose::args::LogsArgs>>),
    /// Execute a command in a running container.
    Exec(Lazy<Verb<compose::args::ExecArgs>>),
    /// Run a one-off command on a service.
    Run(Lazy<Verb<compose::args::RunArgs>>),
    /// Display the running processes.
    Top(Lazy<Verb<compose::args::TopArgs>>),
    /// Print the public port for a port binding.
    Port(Lazy<Verb<compose::args::PortArgs>>),
    /// Copy files/folders between a service container and the local filesystem.
    Cp(Lazy<Verb<compose::args::CpArgs>>),
    /// Block until containers of all (or specified) services stop.
    Wait(Lazy<Verb<compose::args::WaitArgs>>),
    /// Export a service container's filesystem as a tar archive.
    Export(Lazy<Verb<compose::args::ExportArgs>>),
    /// Create a new image from a service container's changes.
    Commit(Lazy<Verb<compose::args::CommitArgs>>),
    /// List running compose projects.
    Ls(Lazy<compose::args::LsArgs>),
    /// List images used by the created containers.
    Images(Lazy<Verb<compose::args::ImagesArgs>>),
    /// Receive real time events from containers.
    Events(Lazy<Verb<compose::args::EventsArgs>>),
    /// Scale services.
    Scale(Lazy<Verb<compose::args::ScaleArgs>>),
    /// Pull service images.
    Pull(Lazy<Verb<compose::args::PullArgs>>),
    /// Build or rebuild services.
    Build(Lazy<Verb<build::ComposeBuildArgs>>),
    /// Push service images.
    Push(Lazy<Verb<compose::args::PushArgs>>),
    /// Show the tug version information.
    Version(Lazy<compose::args::VersionArgs>),
    /// Watch the build context for services and rebuild/refresh containers when files are
    /// updated (develop.watch).
    Watch(Lazy<Verb<watch::WatchArgs>>),
    /// List volumes.
    Volumes(Lazy<Verb<compose::args::VolumesArgs>>),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(Lazy<Verb<compose::args::StatsArgs>>),
    /// Install `docker` and `docker-compose` links to tug in a directory, so that clients of
    /// docker compose (testcontainers, CI scripts, IDEs) run tug.
    InstallShim(Lazy<shim::InstallArgs>),
}

mod build;
mod compose;
pub mod config;
mod container;
pub mod format;
mod image;
mod listing;
mod network;
mod shim;
mod volume;
mod watch;

/// Runs tug with the process arguments and returns the exit code.
#[must_use]
pub fn main() -> i32 {
    quiet_on_closed_output();
    let args: Vec<OsString> = std::env::args_os().collect();
    // Helper processes (`tug __shim …`, `__build-run`, `__network-dns`, …) skip clap: they
    // must start fast and stay small (see `engine::helpers`).
    if let Some(outcome) = crate::engine::helpers::dispatch(&args) {
        return outcome.unwrap_or_else(|e| {
            eprintln!("error: {e}");
            126
        });
    }
    match persona(&args) {
        Persona::Tug => run_with(args),
        Persona::Compose(rest) => {
            COMPOSE_PERSONA.store(true, std::sync::atomic::Ordering::Relaxed);
            // `docker-compose --version` answers as `version` does.
            if rest.len() == 2 && (rest[1] == "--version" || rest[1] == "-v") {
                return run_with([rest[0].clone(), "version".into()]);
            }
            run_with(rest)
        }
        Persona::Docker(rest) => shim::other_docker(&rest),
    }
}

/// Set when tug runs as `docker-compose` or `docker compose`: `version` then reports the
/// docker compose version whose interface tug implements.
static COMPOSE_PERSONA: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether tug runs as docker compose (`docker-compose`, or `docker compose` via the shim).
#[must_use]
pub fn compose_persona() -> bool {
    COMPOSE_PERSONA.load(std::sync::atomic::Ordering::Relaxed)
}

/// How tug was invoked.
#[derive(Debug, PartialEq, Eq)]
enum Persona {
    /// As `tug`.
    Tug,
    /// As `docker-compose`, or as `docker compose` (the shim): the arguments to parse, with
    /// `compose` and docker's own options before it taken out.
    Compose(Vec<OsString>),
    /// As `docker` with another command: the arguments, for the real docker.
    Docker(Vec<OsString>),
}

/// Tells tug, `docker-compose` and the `docker` shim apart by the name tug was run as.
fn persona(args: &[OsString]) -> Persona {
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        "docker-compose" => Persona::Compose(args.to_vec()),
        "docker" => {
            // docker's own options before the command (`docker --context x compose …`).
            let with_value = [
                "-c",
                "--context",
                "-H",
                "--host",
                "-l",
                "--log-level",
                "--config",
                "--tlscacert",
                "--tlscert",
                "--tlskey",
            ];
            let mut i = 1;
            while i < args.len() {
                let a = args[i].to_string_lossy();
                if with_value.contains(&a.as_ref()) {
                    i += 2;
                } else if a.starts_with('-') {
                    i += 1;
                } else {
                    break;
                }
            }
            if args.get(i).is_some_and(|a| a == "compose") {
                let mut rest = vec![OsString::from("docker-compose")];
                rest.extend(args[i + 1..].iter().cloned());
                Persona::Compose(rest)
            } else {
                Persona::Docker(args.to_vec())
            }
        }
        _ => Persona::Tug,
    }
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

/// Where the output went away (`tug ps | head -1`): every verb ends quietly with code 0, the
/// way a verb that meets a broken pipe as an error does. Rust ignores SIGPIPE, so a write to
/// a closed pipe fails, and `println!` turns that failure into a panic; this is the one place
/// that handles it, for every verb and every print.
fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("os error 32") {
            std::process::exit(0);
        }
        default(info);
    }));
}

impl Command {
    /// Verbs that never touch the engine and work for any user.
    fn works_without_root(&self) -> bool {
        matches!(
            self,
            Command::Config(_)
                | Command::Version(_)
                | Command::Completion { .. }
                | Command::Login(_)
                | Command::Logout { .. }
                | Command::InstallShim(_)
        )
    }
}

/// What a user who is not root is told, once, before anything is tried.
const NEEDS_ROOT: &str = "tug's engine needs root (it makes namespaces, mounts, cgroups and \
bridges, and keeps its state in a root-only directory): run tug as root, e.g. with sudo; \
rootless mode does not exist yet. Without root, `tug config`, `tug version`, \
`tug completion`, `tug login`/`logout` and `--help` work";

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let Cli {
        engine,
        mut compose,
        workdir,
        command,
        version: (),
    } = cli;
    if compose.project_directory.is_none() {
        compose.project_directory = workdir;
    }
    // Verbs that act on what exists work by project name alone, as docker compose's do.
    let by_name = matches!(
        command,
        Command::Down(_)
            | Command::Ps(_)
            | Command::Logs(_)
            | Command::Stop(_)
            | Command::Start(_)
            | Command::Restart(_)
            | Command::Kill(_)
            | Command::Rm(_)
            | Command::Exec(_)
            | Command::Port(_)
            | Command::Top(_)
            | Command::Pause(_)
            | Command::Unpause(_)
            | Command::Images(_)
            | Command::Wait(_)
            | Command::Cp(_)
            | Command::Export(_)
            | Command::Commit(_)
            | Command::Events(_)
            | Command::Volumes(_)
            | Command::Stats(_)
    );
    if !command.works_without_root() && !nix::unistd::geteuid().is_root() {
        anyhow::bail!("{NEEDS_ROOT}");
    }
    // The options of the command line; with a verb that loads a project, its own project
    // options on top.
    let base = || GlobalArgs::resolve(&engine, &compose);
    let with = |v: &ComposeArgs| {
        GlobalArgs::resolve(&engine, &compose.overlay(v)).map(|mut g| {
            g.by_name = by_name;
            g
        })
    };
    match command {
        Command::Config(a) => config::run(&with(&a.compose)?, &a.args),
        Command::Image(args) => image::run(&base()?, args.0),
        Command::Container(args) => container::run(&base()?, args.0),
        Command::Login(args) => image::login(&args, &mut std::io::stdout().lock()),
        Command::Logout { registry } => {
            image::logout(registry.as_deref(), &mut std::io::stdout().lock())
        }
        Command::Completion { shell } => {
            let mut cmd = self::command();
            clap_complete::generate(shell, &mut cmd, "tug", &mut std::io::stdout());
            Ok(0)
        }
        Command::Network(cmd) => network::run(&base()?, &cmd),
        Command::Volume(cmd) => volume::run(&base()?, &cmd),
        Command::Builder(cmd) => build::run_builder(&base()?, &cmd),
        Command::Build(a) => build::run_compose_build(&with(&a.compose)?, &a.args),
        Command::Up(a) => compose::run_up(&with(&a.compose)?, &a.args),
        Command::Down(a) => compose::run_down(&with(&a.compose)?, &a.args),
        Command::Create(a) => compose::run_create(&with(&a.compose)?, &a.args),
        Command::Start(a) => compose::verbs::run_start(&with(&a.compose)?, &a.args),
        Command::Stop(a) => compose::verbs::run_stop(&with(&a.compose)?, &a.args),
        Command::Restart(a) => compose::verbs::run_restart(&with(&a.compose)?, &a.args),
        Command::Kill(a) => compose::verbs::run_kill(&with(&a.compose)?, &a.args),
        Command::Rm(a) => compose::verbs::run_rm(&with(&a.compose)?, &a.args),
        Command::Pause(a) => compose::verbs::run_pause(&with(&a.compose)?, &a.args, true),
        Command::Unpause(a) => compose::verbs::run_pause(&with(&a.compose)?, &a.args, false),
        Command::Ps(a) => compose::run_ps(&with(&a.compose)?, &a.args),
        Command::Logs(a) => compose::verbs::run_logs(&with(&a.compose)?, &a.args),
        Command::Exec(a) => compose::verbs::run_exec(&with(&a.compose)?, &a.args),
        Command::Run(a) => compose::verbs::run_run(&with(&a.compose)?, &a.args),
        Command::Top(a) => compose::verbs::run_top(&with(&a.compose)?, &a.args),
        Command::Port(a) => compose::verbs::run_port(&with(&a.compose)?, &a.args),
        Command::Cp(a) => compose::verbs::run_cp(&with(&a.compose)?, &a.args),
        Command::Wait(a) => compose::verbs::run_wait(&with(&a.compose)?, &a.args),
        Command::Export(a) => compose::verbs::run_export(&with(&a.compose)?, &a.args),
        Command::Commit(a) => compose::verbs::run_commit(&with(&a.compose)?, &a.args),
        Command::Ls(args) => compose::run_ls(&base()?, &args),
        Command::Images(a) => compose::verbs::run_images(&with(&a.compose)?, &a.args),
        Command::Events(a) => compose::verbs::run_events(&with(&a.compose)?, &a.args),
        Command::Scale(a) => compose::verbs::run_scale(&with(&a.compose)?, &a.args),
        Command::Pull(a) => compose::verbs::run_pull(&with(&a.compose)?, &a.args),
        Command::Push(a) => compose::verbs::run_push(&with(&a.compose)?, &a.args),
        Command::Version(args) => compose::verbs::run_version(&args),
        Command::Watch(a) => watch::run(&with(&a.compose)?, &a.args),
        Command::InstallShim(args) => shim::install(&args),
        Command::Volumes(a) => compose::verbs::run_volumes(&with(&a.compose)?, &a.args),
        Command::Stats(a) => compose::stats::run_stats(&with(&a.compose)?, &a.args),
    }
}

/// The whole command line definition, every verb defined (shell completions, tests that
/// compare tug's flags with docker compose's).
#[must_use]
pub fn command() -> clap::Command {
    // Completions cover every verb, and the `help` verb's tree of them too, which clap
    // derives from the verbs as they are defined when it builds: no deferring.
    EAGER.store(true, std::sync::atomic::Ordering::Relaxed);
    Cli::command()
}

/// Renders an error chain on one line per cause, without Rust debug noise.
/// Opens the image store of `root`, telling the user if opening it repaired a damaged index.
pub(crate) fn open_images(
    root: &std::path::Path,
) -> anyhow::Result<crate::engine::image::ImageStore> {
    use anyhow::Context as _;
    let store = crate::engine::image::ImageStore::open(root)
        .with_context(|| format!("cannot open the image store in {}", root.display()))?;
    if let Some(r) = store.repaired() {
        warn_index_repaired(r);
    }
    Ok(store)
}

/// The warning for an image index rebuilt when the store was opened.
pub(crate) fn warn_index_repaired(r: &crate::engine::image::IndexRepair) {
    eprintln!(
        "warning: the image index was damaged ({}) and has been rebuilt: {} named image \
         entries recovered from its previous version, {} image(s) found without a name \
         (list them with `tug image ls`, name them with `tug image tag ID NAME`); the damaged \
         file is kept as {}",
        r.reason,
        r.named,
        r.unnamed,
        r.damaged.display()
    );
}

pub(crate) fn render_error(err: &anyhow::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn verbs_defined_when_used_parse_and_describe_as_when_defined_at_once() {
        let helps = |eager: bool| -> Vec<String> {
            EAGER.store(eager, std::sync::atomic::Ordering::Relaxed);
            let names: Vec<String> = Cli::command()
                .get_subcommands()
                .map(|s| s.get_name().to_string())
                .collect();
            names
                .iter()
                .map(|n| {
                    let e = Cli::try_parse_from(["tug", n.as_str(), "--help"]).unwrap_err();
                    e.render().to_string()
                })
                .collect()
        };
        let eager = helps(true);
        let lazy = helps(false);
        assert_eq!(lazy.len(), eager.len());
        for (l, e) in lazy.iter().zip(&eager) {
            assert_eq!(l, e);
        }
        // A verb's description is its own, not its arguments' type's.
        let down = Cli::try_parse_from(["tug", "down", "--help"])
            .unwrap_err()
            .render();
        assert!(
            down.to_string()
                .starts_with("Stop and remove containers, networks"),
            "{down}"
        );
        let cli = Cli::try_parse_from(["tug", "down", "-v", "-t", "3"]).unwrap();
        let Command::Down(args) = cli.command else {
            panic!("not down")
        };
        assert!(args.volumes);
        assert_eq!(args.timeout, Some(3));
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_name_tug_runs_as_picks_its_persona() {
        assert_eq!(persona(&os(&["/usr/bin/tug", "up"])), Persona::Tug);
        assert_eq!(
            persona(&os(&["/x/docker-compose", "-f", "a.yaml", "up"])),
            Persona::Compose(os(&["/x/docker-compose", "-f", "a.yaml", "up"]))
        );
        assert_eq!(
            persona(&os(&[
                "/shim/docker",
                "--context",
                "c",
                "compose",
                "-p",
                "x",
                "ps"
            ])),
            Persona::Compose(os(&["docker-compose", "-p", "x", "ps"]))
        );
        assert_eq!(
            persona(&os(&["docker", "ps", "-a"])),
            Persona::Docker(os(&["docker", "ps", "-a"]))
        );
    }

    fn parse(v: &[&str]) -> Cli {
        Cli::try_parse_from(v).unwrap_or_else(|e| panic!("{v:?}: {e}"))
    }

    #[test]
    fn short_flags_keep_their_verb_meaning_after_the_verb() {
        // Before the verb, -f and -p are the project options; after it, the verb's own.
        let cli = parse(&["tug", "-f", "a.yaml", "logs", "-f", "web"]);
        assert_eq!(cli.compose.files, vec![PathBuf::from("a.yaml")]);
        let Command::Logs(a) = cli.command else {
            panic!("not logs")
        };
        assert!(a.follow);
        assert_eq!(a.services, vec!["web".to_string()]);
        let Command::Rm(a) = parse(&["tug", "-p", "x", "rm", "-fs"]).command else {
            panic!("not rm")
        };
        assert!(a.force && a.stop);
        let Command::Run(a) = parse(&["tug", "run", "-p", "80:80", "web", "ls", "-p"]).command
        else {
            panic!("not run")
        };
        assert_eq!(a.publish, vec!["80:80".to_string()]);
        assert_eq!(a.command, vec!["ls".to_string(), "-p".to_string()]);
        let Command::Version(a) = parse(&["tug", "version", "-f", "json"]).command else {
            panic!("not version")
        };
        assert_eq!(a.format.as_deref(), Some("json"));
    }

    #[test]
    fn project_options_after_the_verb_add_to_those_before() {
        let cli = parse(&[
            "tug",
            "-f",
            "a.yaml",
            "--profile",
            "x",
            "up",
            "--file",
            "b.yaml",
            "--project-name",
            "p",
            "--profile",
            "y",
        ]);
        let Command::Up(a) = &cli.command else {
            panic!("not up")
        };
        let g = GlobalArgs::resolve(&cli.engine, &cli.compose.overlay(&a.compose)).unwrap();
        assert_eq!(
            g.files,
            vec![PathBuf::from("a.yaml"), PathBuf::from("b.yaml")]
        );
        assert_eq!(g.project_name.as_deref(), Some("p"));
        assert_eq!(g.profiles, vec!["x".to_string(), "y".to_string()]);
        // Engine verbs do not take them.
        assert!(Cli::try_parse_from(["tug", "image", "ls", "--file", "a.yaml"]).is_err());
        assert!(Cli::try_parse_from(["tug", "-f", "a.yaml", "image", "ls"]).is_ok());
        // --compatibility is refused by name.
        let cli = parse(&["tug", "--compatibility", "ps"]);
        let e = GlobalArgs::resolve(&cli.engine, &cli.compose).unwrap_err();
        assert!(e.to_string().contains("--compatibility"), "{e}");
    }
}
