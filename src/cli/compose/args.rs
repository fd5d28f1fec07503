//! Flags of the compose verbs, named and shaped as docker compose v2 has them.

use clap::Args;

/// `--scale SERVICE=N`, parsed.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Service.
    pub service: String,
    /// Replicas.
    pub replicas: u32,
}

/// A `--scale` value not of the form `SERVICE=N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    /// No `=`.
    #[error("invalid scale {0:?}: expected SERVICE=REPLICAS")]
    Form(String),
    /// `N` is not a number.
    #[error("invalid scale {0:?}: {1:?} is not a number of replicas")]
    Replicas(String, String),
    /// Nothing before `=`.
    #[error("invalid scale {0:?}: no service name")]
    Service(String),
}

/// Parses `SERVICE=N`.
///
/// # Errors
/// Not in that form.
pub fn parse_scale(s: &str) -> Result<Scale, ScaleError> {
    let (service, n) = s
        .split_once('=')
        .ok_or_else(|| ScaleError::Form(s.to_owned()))?;
    let replicas = n
        .parse()
        .map_err(|_| ScaleError::Replicas(s.to_owned(), n.to_owned()))?;
    if service.is_empty() {
        return Err(ScaleError::Service(s.to_owned()));
    }
    Ok(Scale {
        service: service.to_string(),
        replicas,
    })
}

/// Flags `up` and `create` share.
#[derive(Debug, Clone, Args)]
pub struct CreateFlags {
    /// Build images before starting containers.
    #[arg(long, conflicts_with = "no_build")]
    pub build: bool,
    /// Don't build an image, even if it's missing.
    #[arg(long)]
    pub no_build: bool,
    /// Pull image before running.
    #[arg(long, value_parser = ["always", "missing", "never", "build"])]
    pub pull: Option<String>,
    /// Recreate containers even if their configuration and image haven't changed.
    #[arg(long, conflicts_with = "no_recreate")]
    pub force_recreate: bool,
    /// If containers already exist, don't recreate them.
    #[arg(long)]
    pub no_recreate: bool,
    /// Remove containers for services not defined in the Compose file.
    #[arg(long)]
    pub remove_orphans: bool,
    /// Scale SERVICE to NUM instances. Overrides the `scale` setting in the Compose file.
    #[arg(long, value_name = "SERVICE=NUM", value_parser = parse_scale)]
    pub scale: Vec<Scale>,
    /// Pull without printing progress information.
    #[arg(long)]
    pub quiet_pull: bool,
    /// Assume "yes" as answer to all prompts and run non-interactively (tug does not ask).
    #[arg(short = 'y', long, alias = "y")]
    pub yes: bool,
    /// Services.
    pub services: Vec<String>,
}

/// `tug up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub create: CreateFlags,
    /// Detached mode: run containers in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Wait for services to be running|healthy. Implies detached mode.
    #[arg(long)]
    pub wait: bool,
    /// Maximum duration in seconds to wait for the project to be running|healthy.
    #[arg(long, value_name = "SECONDS")]
    pub wait_timeout: Option<u64>,
    /// Stops all containers if any container was stopped.
    #[arg(long, conflicts_with = "detach")]
    pub abort_on_container_exit: bool,
    /// Stops all containers if any container exited with failure.
    #[arg(long, conflicts_with = "detach")]
    pub abort_on_container_failure: bool,
    /// Automatically attach to log output of dependent services.
    #[arg(long)]
    pub attach_dependencies: bool,
    /// Enable interactive shortcuts when running attached (not supported by tug:
    /// `--menu=false` is accepted).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    pub menu: Option<bool>,
    /// Produce monochrome output.
    #[arg(long)]
    pub no_color: bool,
    /// Suppress the build output.
    #[arg(long)]
    pub quiet_build: bool,
    /// Watch source code and rebuild/refresh containers when files are updated
    /// (develop.watch; with --detach the watch runs in the background, as `watch --detach`).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Return the exit code of the selected service container. Implies
    /// --abort-on-container-exit.
    #[arg(long, value_name = "SERVICE")]
    pub exit_code_from: Option<String>,
    /// Restrict attaching to the specified services.
    #[arg(long, value_name = "SERVICE")]
    pub attach: Vec<String>,
    /// Do not attach (stream logs) to the specified services.
    #[arg(long, value_name = "SERVICE")]
    pub no_attach: Vec<String>,
    /// Don't start the services after creating them.
    #[arg(long)]
    pub no_start: bool,
    /// Use this timeout in seconds for container shutdown when attached or when containers
    /// are already running.
    #[arg(short = 't', long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Show timestamps.
    #[arg(long)]
    pub timestamps: bool,
    /// Don't prefix output with the service name.
    #[arg(long)]
    pub no_log_prefix: bool,
    /// Recreate dependent containers. Incompatible with --no-recreate.
    #[arg(long, conflicts_with = "no_recreate")]
    pub always_recreate_deps: bool,
    /// Don't start linked services.
    #[arg(long)]
    pub no_deps: bool,
    /// Recreate anonymous volumes instead of retrieving data from the previous containers.
    #[arg(short = 'V', long)]
    pub renew_anon_volumes: bool,
}

/// `tug create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub create: CreateFlags,
}

/// `tug down`.
#[derive(Debug, Clone, Args)]
pub struct DownArgs {
    /// Remove named volumes declared in the "volumes" section of the Compose file and
    /// anonymous volumes attached to containers.
    #[arg(short, long, alias = "volume")]
    pub volumes: bool,
    /// Remove images used by services. "local" removes only images that don't have a custom
    /// tag.
    #[arg(long, value_parser = ["local", "all"])]
    pub rmi: Option<String>,
    /// Remove containers for services not defined in the Compose file.
    #[arg(long)]
    pub remove_orphans: bool,
    /// Specify a shutdown timeout in seconds.
    #[arg(short = 't', long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Services.
    pub services: Vec<String>,
}

/// `tug start`, `pause`, `unpause`.
#[derive(Debug, Clone, Args)]
pub struct ServicesArgs {
    /// Services (default: all).
    pub services: Vec<String>,
}

/// `tug stop`.
#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Specify a shutdown timeout in seconds.
    #[arg(short = 't', long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Services (default: all).
    pub services: Vec<String>,
}

/// `tug restart`.
#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// Specify a shutdown timeout in seconds.
    #[arg(short = 't', long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Don't restart dependent services.
    #[arg(long)]
    pub no_deps: bool,
    /// Services (default: all).
    pub services: Vec<String>,
}

/// `tug kill`.
#[derive(Debug, Clone, Args)]
pub struct KillArgs {
    /// SIGNAL to send to the container.
    #[arg(short, long, default_value = "SIGKILL")]
    pub signal: String,
    /// Remove containers for services not defined in the Compose file.
    #[arg(long)]
    pub remove_orphans: bool,
    /// Services (default: all).
    pub services: Vec<String>,
}

/// `tug rm`.
#[derive(Debug, Clone, Args)]
pub struct RmArgs {
    /// Don't ask to confirm removal.
    #[arg(short, long)]
    pub force: bool,
    /// Stop the containers, if required, before removing.
    #[arg(short, long)]
    pub stop: bool,
    /// Remove any anonymous volumes attached to containers.
    #[arg(short, long)]
    pub volumes: bool,
    /// Deprecated, no effect (docker compose still accepts it).
    #[arg(short, long, hide = true)]
    pub all: bool,
    /// Services (default: all).
    pub services: Vec<String>,
}

/// `tug ps`.
#[derive(Debug, Clone, Args)]
pub struct PsArgs {
    /// Show all stopped containers (including those created by the run command).
    #[arg(short, long)]
    pub all: bool,
    /// Only display IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Display services.
    #[arg(long)]
    pub services: bool,
    /// Filter services by status.
    #[arg(long, value_parser = ["paused", "restarting", "removing", "running", "dead", "created", "exited"])]
    pub status: Vec<String>,
    /// Filter services by a property (supported filters: status), KEY=VALUE.
    #[arg(long, value_name = "FILTER")]
    pub filter: Option<String>,
    /// Format output using a custom template: 'table' (default), 'table TEMPLATE', 'json',
    /// or a Go template ({{.Name}}, {{json .}}, {{.Label "key"}}, …).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Include orphaned services (not declared by project); `--orphans=false` to leave them
    /// out.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    pub orphans: bool,
    /// Services.
    #[arg(value_name = "SERVICE")]
    pub names: Vec<String>,
}

/// `tug logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs for each container.
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative time.
    #[arg(long)]
    pub until: Option<String>,
    /// Produce monochrome output.
    #[arg(long)]
    pub no_color: bool,
    /// Don't print prefix in logs.
    #[arg(long)]
    pub no_log_prefix: bool,
    /// Index of the container if service has multiple replicas.
    #[arg(long)]
    pub index: Option<u32>,
    /// Services.
    pub services: Vec<String>,
}

/// `tug exec`.
#[derive(Debug, Clone, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Detached mode: run command in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Set environment variables.
    #[arg(short, long = "env", value_name = "KEY=VAL")]
    pub env: Vec<String>,
    /// Run the command as this user.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Path to workdir directory for this command.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Disable pseudo-TTY allocation. By default `exec` allocates a TTY.
    #[arg(short = 'T', long = "no-tty", alias = "no-TTY")]
    pub no_tty: bool,
    /// Allocate a pseudo-TTY (the default; accepted as docker compose accepts it).
    #[arg(short = 't', long, hide = true)]
    pub tty: bool,
    /// Index of the container if service has multiple replicas.
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// Give extended privileges to the process (every capability, no seccomp filter).
    #[arg(long)]
    pub privileged: bool,
    /// Keep STDIN open even if not attached (always on, as in docker compose).
    #[arg(short = 'i', long, default_value_t = true, hide = true)]
    pub interactive: bool,
    /// Service.
    pub service: String,
    /// Command and arguments.
    #[arg(required = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `tug run`.
#[derive(Debug, Clone, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run container in background and print container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Don't start linked services.
    #[arg(long)]
    pub no_deps: bool,
    /// Set environment variables.
    #[arg(short, long = "env", value_name = "KEY=VAL")]
    pub env: Vec<String>,
    /// Bind mount a volume.
    #[arg(
        short,
        long = "volume",
        alias = "volumes",
        value_name = "SRC:DST[:OPTS]"
    )]
    pub volumes: Vec<String>,
    /// Publish a container's port(s) to the host.
    #[arg(short, long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Run command with all service's ports enabled and mapped to the host.
    #[arg(short = 'P', long)]
    pub service_ports: bool,
    /// Override the entrypoint of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Run as specified username or uid.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Disable pseudo-TTY allocation (default: auto-detected).
    #[arg(short = 'T', long = "no-TTY")]
    pub no_tty: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY (the default when stdin is a terminal; accepted as docker
    /// compose accepts it).
    #[arg(short = 't', long, hide = true)]
    pub tty: bool,
    /// Build image before starting container.
    #[arg(long)]
    pub build: bool,
    /// Add Linux capabilities.
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Set environment variables from a file.
    #[arg(long, value_name = "FILE")]
    pub env_from_file: Vec<std::path::PathBuf>,
    /// Add or override a label.
    #[arg(short, long = "label", alias = "labels", value_name = "KEY=VAL")]
    pub label: Vec<String>,
    /// Pull image before running.
    #[arg(long, value_parser = ["always", "missing", "never", "build"])]
    pub pull: Option<String>,
    /// Don't print anything to STDOUT but the command's output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Suppress progress output of builds.
    #[arg(long)]
    pub quiet_build: bool,
    /// Pull without printing progress information.
    #[arg(long)]
    pub quiet_pull: bool,
    /// Remove containers for services not defined in the Compose file.
    #[arg(long)]
    pub remove_orphans: bool,
    /// Use the service's network aliases in the network(s) the container connects to.
    #[arg(long)]
    pub use_aliases: bool,
    /// Service.
    pub service: String,
    /// Command and arguments.
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `tug top`.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Services.
    pub services: Vec<String>,
}

/// `tug port`.
#[derive(Debug, Clone, Args)]
pub struct PortArgs {
    /// tcp or udp.
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"])]
    pub protocol: String,
    /// Index of the container if service has multiple replicas.
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// Service.
    pub service: String,
    /// Private port.
    pub private_port: u16,
}

/// `tug cp`.
#[derive(Debug, Clone, Args)]
pub struct CpArgs {
    /// Include containers created by the run command.
    #[arg(long)]
    pub all: bool,
    /// Archive mode (copy all uid/gid information): not supported by tug yet.
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH: not supported by tug yet.
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// Index of the container if service has multiple replicas.
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// Source: `SERVICE:SRC_PATH` or a local path (`-` for a tar stream on stdin).
    pub source: String,
    /// Destination: `SERVICE:DEST_PATH` or a local path.
    pub destination: String,
}

/// `tug wait`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Drops project when the first container stops.
    #[arg(long)]
    pub down_project: bool,
    /// Services.
    #[arg(required = true)]
    pub services: Vec<String>,
}

/// `tug ls`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// Show all stopped Compose projects.
    #[arg(short, long)]
    pub all: bool,
    /// Only display project names.
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter output based on conditions provided (name=REGEX).
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Format the output: table, json, or a Go template.
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// `tug images`.
#[derive(Debug, Clone, Args)]
pub struct ImagesArgs {
    /// Only display IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format the output: table, json, or a Go template.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Services.
    pub services: Vec<String>,
}

/// `tug events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Output events as a stream of json objects.
    #[arg(long)]
    pub json: bool,
    /// Show all events created since timestamp (tug keeps no event history: from now on
    /// only, once that time has come).
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp.
    #[arg(long)]
    pub until: Option<String>,
    /// Services.
    pub services: Vec<String>,
}

/// `tug pull`.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Pull without printing progress information.
    #[arg(short, long)]
    pub quiet: bool,
    /// Pull what it can and ignores images with pull failures.
    #[arg(long)]
    pub ignore_pull_failures: bool,
    /// Also pull services declared as dependencies.
    #[arg(long)]
    pub include_deps: bool,
    /// Ignore images that can be built.
    #[arg(long)]
    pub ignore_buildable: bool,
    /// Apply pull policy ("missing"|"always").
    #[arg(long, value_parser = ["missing", "always"])]
    pub policy: Option<String>,
    /// Deprecated, no effect: pulls run in parallel.
    #[arg(long, hide = true)]
    pub no_parallel: bool,
    /// Services.
    pub services: Vec<String>,
}

/// `tug push`.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Push what it can and ignores images with push failures.
    #[arg(long)]
    pub ignore_push_failures: bool,
    /// Push without printing progress information.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also push images of services declared as dependencies.
    #[arg(long)]
    pub include_deps: bool,
    /// Services.
    pub services: Vec<String>,
}

/// `tug scale`.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Don't start linked services.
    #[arg(long)]
    pub no_deps: bool,
    /// `SERVICE=REPLICAS` pairs.
    #[arg(required = true, value_parser = parse_scale)]
    pub scale: Vec<Scale>,
}

/// `tug version`.
#[derive(Debug, Clone, Args)]
pub struct VersionArgs {
    /// Shows only tug's version number.
    #[arg(long)]
    pub short: bool,
    /// Format the output.
    #[arg(short, long, value_parser = ["pretty", "json"])]
    pub format: Option<String>,
}

/// `tug volumes`.
#[derive(Debug, Clone, Args)]
pub struct VolumesArgs {
    /// Only display volume names.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format the output: table, `table TEMPLATE`, json, or a Go template ({{.Name}}, …).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Services.
    pub services: Vec<String>,
}

/// `tug stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Format output using a custom template: table, `table TEMPLATE`, json, or a Go template.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Disable streaming stats and only pull the first result.
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Service.
    pub service: Option<String>,
}

/// `tug export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Index of the container if service has multiple replicas.
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// Write to a file, instead of STDOUT.
    #[arg(short = 'o', long)]
    pub output: Option<std::path::PathBuf>,
    /// Service.
    pub service: String,
}

/// `tug commit`.
#[derive(Debug, Clone, Args)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, USER, VOLUME, WORKDIR); repeatable.
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Index of the container if service has multiple replicas.
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// Commit message.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Pause container during commit (`--pause=false` to leave it running).
    #[arg(short, long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    pub pause: bool,
    /// Service.
    pub service: String,
    /// `REPOSITORY[:TAG]` of the new image (unnamed without it).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}
