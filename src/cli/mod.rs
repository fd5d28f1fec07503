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
    /// Set type of progress output.
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "tty", "plain", "json", "quiet"])]
    pub progress: String,
    /// Execute command in dry run mode: print the plan, change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// The verb may act on the project as the state root knows it (by its name, from the
    /// labels) when the compose file cannot be loaded. Set by `dispatch`, not a flag.
    #[arg(skip)]
    pub by_name: bool,
}

impl GlobalArgs {
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
}

/// tug: compose-style stacks on a built-in container engine.
#[derive(Debug, Parser)]
#[command(name = "tug", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
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
    Config(Lazy<config::ConfigArgs>),
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
    /// A network's DNS server (started by tug itself).
    #[command(hide = true)]
    NetworkDns(Lazy<network::DnsArgs>),
    /// A container's port proxy (started by tug itself).
    #[command(hide = true)]
    NetworkProxy(Lazy<network::ProxyArgs>),
    /// Create and start containers.
    Up(Lazy<compose::args::UpArgs>),
    /// Stop and remove containers, networks.
    Down(Lazy<compose::args::DownArgs>),
    /// Creates containers for a service.
    Create(Lazy<compose::args::CreateArgs>),
    /// Start services.
    Start(Lazy<compose::args::ServicesArgs>),
    /// Stop services.
    Stop(Lazy<compose::args::StopArgs>),
    /// Restart service containers.
    Restart(Lazy<compose::args::RestartArgs>),
    /// Force stop service containers.
    Kill(Lazy<compose::args::KillArgs>),
    /// Removes stopped service containers.
    Rm(Lazy<compose::args::RmArgs>),
    /// Pause services.
    Pause(Lazy<compose::args::ServicesArgs>),
    /// Unpause services.
    Unpause(Lazy<compose::args::ServicesArgs>),
    /// List containers.
    Ps(Lazy<compose::args::PsArgs>),
    /// View output from containers.
    Logs(Lazy<compose::args::LogsArgs>),
    /// Execute a command in a running container.
    Exec(Lazy<compose::args::ExecArgs>),
    /// Run a one-off command on a service.
    Run(Lazy<compose::args::RunArgs>),
    /// Display the running processes.
    Top(Lazy<compose::args::TopArgs>),
    /// Print the public port for a port binding.
    Port(Lazy<compose::args::PortArgs>),
    /// Copy files/folders between a service container and the local filesystem.
    Cp(Lazy<compose::args::CpArgs>),
    /// Block until containers of all (or specified) services stop.
    Wait(Lazy<compose::args::WaitArgs>),
    /// List running compose projects.
    Ls(Lazy<compose::args::LsArgs>),
    /// List images used by the created containers.
    Images(Lazy<compose::args::ImagesArgs>),
    /// Receive real time events from containers.
    Events(Lazy<compose::args::EventsArgs>),
    /// Scale services.
    Scale(Lazy<compose::args::ScaleArgs>),
    /// Pull service images.
    Pull(Lazy<compose::args::PullArgs>),
    /// Build or rebuild services.
    Build(Lazy<build::ComposeBuildArgs>),
    /// Push service images.
    Push(Lazy<compose::args::PushArgs>),
    /// Show the tug version information.
    Version(Lazy<compose::args::VersionArgs>),
    /// Watch the build context for services and rebuild/refresh containers when files are
    /// updated (develop.watch).
    Watch(Lazy<watch::WatchArgs>),
}

mod build;
mod compose;
pub mod config;
mod container;
mod image;
mod network;
mod volume;
mod watch;

/// Runs tug with the process arguments and returns the exit code.
#[must_use]
pub fn main() -> i32 {
    quiet_on_closed_output();
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
    // The hidden `tug __build-run REQUEST` (one RUN step of a build) skips clap too.
    if args.get(1).is_some_and(|a| a == "__build-run") {
        let Some(req) = args.get(2) else {
            eprintln!("error: missing build request");
            return 126;
        };
        return match crate::engine::build::run::main(std::path::Path::new(req)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                126
            }
        };
    }
    run_with(rewrite_args(container::rewrite_args(args)))
}

/// Global options that take a value, as they appear before the verb.
const GLOBAL_WITH_VALUE: [&str; 11] = [
    "-f",
    "--file",
    "-p",
    "--project-name",
    "--project-directory",
    "--profile",
    "--env-file",
    "--root",
    "--progress",
    "--ansi",
    "--parallel",
];

/// `-f` is the global `--file` and `-p` the global `--project-name`, as in docker compose;
/// after the verbs where compose gives them another meaning (`logs -f`, `rm -f`, `run -p`)
/// they are rewritten to that verb's long flag before parsing.
#[must_use]
pub fn rewrite_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let mut i = 1;
    let mut verb = None;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if GLOBAL_WITH_VALUE.contains(&a.as_ref()) {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        verb = Some(i);
        break;
    }
    let Some(v) = verb else { return args };
    // (short, long, whether the flag takes no value: such a flag may also come in a cluster
    // of short flags, `rm -fs` = `rm --force -s`)
    let rewrites: &[(&str, &str, bool)] = match args[v].to_str() {
        Some("logs") => &[("-f", "--follow", true)],
        Some("rm") => &[("-f", "--force", true)],
        Some("run") => &[("-p", "--publish", false)],
        Some("version") => &[("-f", "--format", false)],
        _ => return args,
    };
    let mut j = v + 1;
    while j < args.len() {
        let a = args[j].to_string_lossy().into_owned();
        if a == "--" {
            break;
        }
        let cluster = a.len() > 2
            && a.starts_with('-')
            && !a.starts_with("--")
            && a[1..].chars().all(|c| c.is_ascii_alphabetic());
        if let Some((_, long, _)) = rewrites.iter().find(|(s, _, _)| *s == a) {
            args[j] = (*long).into();
        } else if let Some((short, long, _)) = rewrites
            .iter()
            .find(|(s, _, flag)| *flag && cluster && a[1..].contains(&s[1..]))
        {
            let rest: String = a[1..]
                .chars()
                .filter(|c| !short[1..].contains(*c))
                .collect();
            args[j] = (*long).into();
            if !rest.is_empty() {
                args.insert(j + 1, format!("-{rest}").into());
                j += 1;
            }
        } else if !a.starts_with('-') && args[v] == "run" {
            // `run SERVICE CMD…`: what follows the service belongs to the command.
            let prev = args[j - 1].to_string_lossy();
            let takes_value = [
                "-e",
                "--env",
                "-v",
                "--volume",
                "--publish",
                "--entrypoint",
                "-u",
                "--user",
                "-w",
                "--workdir",
                "--name",
            ]
            .contains(&prev.as_ref());
            if !takes_value {
                break;
            }
        }
        j += 1;
    }
    args
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
        mut global,
        command,
    } = cli;
    // Verbs that act on what exists work by project name alone, as docker compose's do.
    global.by_name = matches!(
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
            | Command::Events(_)
    );
    if !command.works_without_root() && !nix::unistd::geteuid().is_root() {
        anyhow::bail!("{NEEDS_ROOT}");
    }
    match command {
        Command::Config(args) => config::run(&global, &args),
        Command::Image(args) => image::run(&global, args.0),
        Command::Container(args) => container::run(&global, args.0),
        Command::Login(args) => image::login(&args, &mut std::io::stdout().lock()),
        Command::Logout { registry } => {
            image::logout(registry.as_deref(), &mut std::io::stdout().lock())
        }
        Command::Completion { shell } => {
            // Completions cover every verb, and the `help` verb's tree of them too, which
            // clap derives from the verbs as they are defined when it builds: no deferring.
            EAGER.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "tug", &mut std::io::stdout());
            Ok(0)
        }
        Command::Network(cmd) => network::run(&global, &cmd),
        Command::Volume(cmd) => volume::run(&global, &cmd),
        Command::Builder(cmd) => build::run_builder(&global, &cmd),
        Command::Build(args) => build::run_compose_build(&global, &args),
        Command::NetworkDns(args) => network::run_dns(&args),
        Command::NetworkProxy(args) => network::run_proxy(&args),
        Command::Up(args) => compose::run_up(&global, &args),
        Command::Down(args) => compose::run_down(&global, &args),
        Command::Create(args) => compose::run_create(&global, &args),
        Command::Start(args) => compose::verbs::run_start(&global, &args),
        Command::Stop(args) => compose::verbs::run_stop(&global, &args),
        Command::Restart(args) => compose::verbs::run_restart(&global, &args),
        Command::Kill(args) => compose::verbs::run_kill(&global, &args),
        Command::Rm(args) => compose::verbs::run_rm(&global, &args),
        Command::Pause(args) => compose::verbs::run_pause(&global, &args, true),
        Command::Unpause(args) => compose::verbs::run_pause(&global, &args, false),
        Command::Ps(args) => compose::run_ps(&global, &args),
        Command::Logs(args) => compose::verbs::run_logs(&global, &args),
        Command::Exec(args) => compose::verbs::run_exec(&global, &args),
        Command::Run(args) => compose::verbs::run_run(&global, &args),
        Command::Top(args) => compose::verbs::run_top(&global, &args),
        Command::Port(args) => compose::verbs::run_port(&global, &args),
        Command::Cp(args) => compose::verbs::run_cp(&global, &args),
        Command::Wait(args) => compose::verbs::run_wait(&global, &args),
        Command::Ls(args) => compose::run_ls(&global, &args),
        Command::Images(args) => compose::verbs::run_images(&global, &args),
        Command::Events(args) => compose::verbs::run_events(&global, &args),
        Command::Scale(args) => compose::verbs::run_scale(&global, &args),
        Command::Pull(args) => compose::verbs::run_pull(&global, &args),
        Command::Push(args) => compose::verbs::run_push(&global, &args),
        Command::Version(args) => compose::verbs::run_version(&args),
        Command::Watch(args) => watch::run(&global, &args),
    }
}

/// Renders an error chain on one line per cause, without Rust debug noise.
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
    fn short_flags_that_collide_with_globals_are_rewritten_after_their_verb() {
        assert_eq!(
            rewrite_args(os(&["tug", "-f", "a.yaml", "logs", "-f", "web"])),
            os(&["tug", "-f", "a.yaml", "logs", "--follow", "web"])
        );
        assert_eq!(
            rewrite_args(os(&["tug", "-p", "x", "rm", "-f", "-s"])),
            os(&["tug", "-p", "x", "rm", "--force", "-s"])
        );
        assert_eq!(
            rewrite_args(os(&["tug", "run", "-p", "80:80", "web", "ls", "-p"])),
            os(&["tug", "run", "--publish", "80:80", "web", "ls", "-p"])
        );
        assert_eq!(
            rewrite_args(os(&["tug", "up", "-f"])),
            os(&["tug", "up", "-f"])
        );
    }

    #[test]
    fn clusters_of_short_flags_keep_their_verb_meaning() {
        assert_eq!(
            rewrite_args(os(&["tug", "rm", "-fs"])),
            os(&["tug", "rm", "--force", "-s"])
        );
        assert_eq!(
            rewrite_args(os(&["tug", "rm", "-sfv", "web"])),
            os(&["tug", "rm", "--force", "-sv", "web"])
        );
        assert_eq!(
            rewrite_args(os(&["tug", "logs", "-tf", "web"])),
            os(&["tug", "logs", "--follow", "-t", "web"])
        );
        // A flag that takes a value is not split: `-p8080:80` is a value, not a cluster.
        assert_eq!(
            rewrite_args(os(&["tug", "run", "-dp", "80:80", "web"])),
            os(&["tug", "run", "-dp", "80:80", "web"])
        );
        // Clusters without the rewritten letter stay as they are.
        assert_eq!(
            rewrite_args(os(&["tug", "rm", "-sv"])),
            os(&["tug", "rm", "-sv"])
        );
        let cli = Cli::try_parse_from(rewrite_args(os(&["tug", "rm", "-fs", "web"])));
        assert!(cli.is_ok(), "{cli:?}");
    }
}
