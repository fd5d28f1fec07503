//! The image builder: a Dockerfile and a context directory become an image in the store,
//! built on tug's own runtime.
//!
//! ```text
//! Dockerfile ──► dockerfile::parse ──► stages (FROM … up to the next FROM)
//!             ──► only the stages the target needs; independent ones on their own threads
//!             ──► each step: metadata (config only) or a filesystem step (COPY/ADD/RUN/
//!                 WORKDIR) whose result is a layer, looked up in the cache first
//!             ──► config + manifest ──► image store (tags)
//! ```
//!
//! - **Layers**: a `COPY`/`ADD` writes its files as a deterministic tar stream; a `RUN` runs
//!   in a container (`tug __build-run`, see [`run`]) on an overlay of the stage's layers and
//!   its upper directory's diff becomes the tar stream ([`layer`]). Either stream goes
//!   through the image store's ingest: gzip blob, diff_id and unpacked layer directory in
//!   one pass.
//! - **Cache** ([`cache`]): each filesystem step has a key — the key of the previous
//!   filesystem step, the step's expanded instruction, and what it reads: for `RUN` its
//!   environment (build args included), user, working dir, mounts and network; for `COPY`
//!   the content hash of every source file with its mode (not its mtime). A hit reuses the
//!   layer and starts nothing. Records pin their blobs in the store, so they survive
//!   `image rm` of the result until `tug builder prune`.
//! - **Paths** inside a stage's filesystem or the context are resolved inside them
//!   ([`view`]); `COPY ../x` and symlinks in the context that point outside it never reach
//!   outside.

pub mod cache;
pub mod context;
pub mod copy;
pub mod dockerfile;
mod exec;
pub mod ignore;
pub mod layer;
pub mod run;
pub mod shell;
pub mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use exec::{NET_SLOT_PREFIX, build};

/// Errors of the builder.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is wrong (syntax or meaning), with its line.
    #[error("{file}:{line}: {message}")]
    Dockerfile {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A step failed.
    #[error("{0}")]
    Step(Box<StepFailure>),
    /// The context or an option is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] crate::engine::image::Error),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stage this one reads from failed (that stage's own error is the one reported).
    #[error("a stage this one depends on failed")]
    DependencyFailed,
}

/// A failed step: where, what, why, and its last output lines.
#[derive(Debug)]
pub struct StepFailure {
    /// `[stage KEYWORD]`.
    pub step: String,
    /// The Dockerfile's name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The instruction.
    pub instruction: String,
    /// Why.
    pub cause: StepError,
    /// The last lines of its output.
    pub output: Vec<String>,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step {} ({}:{}) `{}` failed: {}{}",
            self.step,
            self.file,
            self.line,
            self.instruction,
            self.cause,
            tail_text(&self.output)
        )
    }
}

/// Why a step failed: the instruction's arguments, what it reads, or its command.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A variable reference that cannot be expanded.
    #[error(transparent)]
    Expand(#[from] shell::ExpandError),
    /// `ENV`, `ARG` or `LABEL` arguments that are not name/value pairs.
    #[error("{keyword} {source}")]
    Pairs {
        /// The instruction.
        keyword: &'static str,
        /// Why.
        #[source]
        source: dockerfile::NameValueError,
    },
    /// An `EXPOSE` protocol other than tcp, udp or sctp.
    #[error("invalid proto {protocol:?} in EXPOSE {word}")]
    ExposeProtocol {
        /// The protocol.
        protocol: String,
        /// The word it is in.
        word: String,
    },
    /// An `EXPOSE` port that is not a number.
    #[error("invalid port {0:?} in EXPOSE")]
    ExposePort(String),
    /// An `EXPOSE` range whose end comes first.
    #[error("invalid range {0:?} in EXPOSE")]
    ExposeRange(String),
    /// `VOLUME` with an empty path.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// `USER` or `WORKDIR` without an argument.
    #[error("{0} requires an argument")]
    NoArgument(&'static str),
    /// `COPY`/`ADD` without a source and a destination.
    #[error("{0} requires at least two arguments")]
    TooFewArguments(String),
    /// `SHELL` in shell form.
    #[error("SHELL requires the arguments to be in JSON form")]
    ShellNotJson,
    /// `SHELL []`.
    #[error("SHELL requires at least one argument")]
    ShellEmpty,
    /// A `STOPSIGNAL` that is no signal.
    #[error(transparent)]
    Signal(crate::engine::container::ContainerError),
    /// `HEALTHCHECK NONE --flag`.
    #[error("HEALTHCHECK NONE takes no options")]
    HealthcheckNoneOptions,
    /// `HEALTHCHECK` without `CMD` or `NONE`.
    #[error("HEALTHCHECK requires CMD or NONE")]
    HealthcheckForm,
    /// A `HEALTHCHECK` duration.
    #[error(transparent)]
    Duration(#[from] crate::util::units::UnitError),
    /// `HEALTHCHECK --retries` that is not a number.
    #[error("invalid --retries {0:?}")]
    Retries(String),
    /// A `HEALTHCHECK` flag Docker does not have.
    #[error("unknown HEALTHCHECK flag --{0}")]
    HealthcheckFlag(String),
    /// `ONBUILD ONBUILD`, `ONBUILD FROM`, `ONBUILD MAINTAINER`.
    #[error("{0} is not allowed as an ONBUILD trigger")]
    Trigger(String),
    /// A base image's `ONBUILD` trigger that does not parse.
    #[error("ONBUILD trigger {trigger:?}: {}", source.message)]
    TriggerSyntax {
        /// The trigger.
        trigger: String,
        /// Why.
        #[source]
        source: dockerfile::ParseError,
    },
    /// An instruction Docker does not have.
    #[error("unknown instruction {0}")]
    Instruction(String),
    /// A flag the instruction does not take.
    #[error("unknown flag --{0}")]
    Flag(String),
    /// `FROM --platform` of another platform.
    #[error("platform {platform} is not the host's ({host}): tug builds for the host only")]
    Platform {
        /// The platform asked for.
        platform: String,
        /// The host's.
        host: String,
    },
    /// The base image is neither in the store nor pullable.
    #[error("base image {image} is not in the store and cannot be pulled: {source}")]
    BaseImage {
        /// The image.
        image: String,
        /// Why the pull failed.
        #[source]
        source: crate::engine::image::Error,
    },
    /// The base image's config is not JSON.
    #[error("config of {image}: {source}")]
    BaseConfig {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The image store.
    #[error(transparent)]
    Image(#[from] crate::engine::image::Error),
    /// A user or group of `USER`, `--chown` or a made directory.
    #[error(transparent)]
    User(#[from] crate::engine::container::user::UserError),
    /// The runtime spec of a `RUN` step.
    #[error(transparent)]
    Spec(#[from] crate::engine::container::spec::SpecError),
    /// Reading the stage's filesystem or the context.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Planning, hashing or writing the step's layer.
    #[error(transparent)]
    Layer(Box<BuildError>),
    /// `--from=IMAGE` that cannot be found.
    #[error("--from={from}: {source}")]
    FromImage {
        /// The image.
        from: String,
        /// Why.
        #[source]
        source: crate::engine::image::Error,
    },
    /// A `COPY --exclude` pattern.
    #[error("--exclude: {0}")]
    Exclude(#[source] ignore::PatternError),
    /// `COPY URL`.
    #[error("COPY {0}: COPY takes local paths; use ADD for URLs")]
    CopyUrl(String),
    /// `ADD` of a git repository or another scheme.
    #[error("ADD {0}: only http(s) URLs of files are supported (not git repositories)")]
    AddUrl(String),
    /// `ADD URL` that cannot be downloaded.
    #[error("ADD {url}: {source}")]
    Download {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: DownloadError,
    },
    /// `--chmod` that is not an octal mode.
    #[error("invalid --chmod {0:?} (an octal mode is expected)")]
    Chmod(String),
    /// `RUN --security=insecure`.
    #[error("--security={0} is not supported (RUN steps run with Docker's default isolation)")]
    Security(String),
    /// `RUN --network` other than default, none or host.
    #[error("--network={0} is not supported (default, none or host)")]
    Network(String),
    /// `--mount` with nothing in it.
    #[error("empty --mount")]
    EmptyMount,
    /// A `--mount` without a key its type needs.
    #[error("{kind} mount needs {key}=")]
    MountNeeds {
        /// `cache`, `tmpfs`, `secret`, `bind`.
        kind: &'static str,
        /// `target`, `id`.
        key: &'static str,
    },
    /// `--mount=type=ssh`.
    #[error("ssh mounts are not supported")]
    SshMount,
    /// A mount type BuildKit does not have.
    #[error("unknown mount type {0:?}")]
    MountType(String),
    /// A `sharing=locked` cache mount's lock.
    #[error("cache mount lock: {0}")]
    CacheLock(#[source] nix::Error),
    /// A secret's file cannot be read.
    #[error("secret {id}: {}: {error}", path.display())]
    SecretFile {
        /// The secret.
        id: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// A secret's environment variable is not set.
    #[error("secret {id}: environment variable {var} is not set")]
    SecretEnv {
        /// The secret.
        id: String,
        /// The variable.
        var: String,
    },
    /// A `required` secret the build was not given.
    #[error("secret {0} is required but was not given")]
    SecretMissing(String),
    /// A bind mount's `from=` image that cannot be found.
    #[error("mount from={from}: {source}")]
    MountFrom {
        /// The image.
        from: String,
        /// Why.
        #[source]
        source: crate::engine::image::Error,
    },
    /// A bind mount's source that cannot be resolved.
    #[error("mount source {path}: {error}")]
    MountSource {
        /// The source as written.
        path: String,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// A bind mount's source that is not there.
    #[error("mount source {path}: not found in the {from}")]
    MountSourceMissing {
        /// The source as written.
        path: String,
        /// Where it was looked for (`context`, `stage NAME`, `image NAME`).
        from: String,
    },
    /// The `RUN` helper cannot be started.
    #[error("cannot run {}: {error}", exe.display())]
    Spawn {
        /// tug's binary.
        exe: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The command of a `RUN` step failed.
    #[error("the command exited with code {0}")]
    Exit(i32),
}

impl From<BuildError> for StepError {
    fn from(e: BuildError) -> Self {
        StepError::Layer(Box::new(e))
    }
}

/// Why `ADD URL` could not download the file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// A URL whose last segment cannot name a file (`.`, `..`, a whiteout).
    #[error("cannot name a file {0:?}")]
    Name(String),
    /// The HTTP request.
    #[error("cannot download it (is the network reachable?): {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The HTTP client or the response.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// The file or the runtime for the download.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// `--checksum` that the file does not have.
    #[error("checksum mismatch: expected {want}, got {got}")]
    Checksum {
        /// The checksum given.
        want: String,
        /// The file's.
        got: String,
    },
}

fn tail_text(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("\n--- last output ---\n{}", lines.join("\n"))
    }
}

/// Releases the network namespaces of RUN steps that older versions of tug kept between
/// builds (`tug builder prune`). Returns how many were released; a slot in use by a running
/// build is left alone.
pub fn release_network_slots(root: &std::path::Path) -> usize {
    let Ok(nets) = crate::engine::network::Networks::open(root) else {
        return 0;
    };
    let dir = root.join("build");
    let mut n = 0;
    for i in 0..8 {
        let key = format!("{NET_SLOT_PREFIX}{i}");
        let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(format!("{key}.lock")))
        else {
            continue;
        };
        let Ok(_held) = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        else {
            continue;
        };
        let _ = std::fs::remove_file(dir.join(format!("{key}.json")));
        if nets.disconnect_all(&key).is_ok() {
            n += 1;
        }
    }
    n
}

/// Result alias of the builder.
pub type Result<T> = std::result::Result<T, BuildError>;

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// A build secret (`RUN --mount=type=secret,id=…`): never written to a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the host.
    File(PathBuf),
    /// An environment variable of the builder process.
    Env(String),
    /// The secret itself (a compose secret from the project's environment).
    Content(Vec<u8>),
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile (default `<context>/Dockerfile`); relative paths are relative to the
    /// context.
    pub dockerfile: Option<PathBuf>,
    /// The Dockerfile's text, instead of a file.
    pub dockerfile_inline: Option<String>,
    /// Names for the result.
    pub tags: Vec<String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// Labels added to the result.
    pub labels: BTreeMap<String, String>,
    /// Ignore the cache.
    pub no_cache: bool,
    /// Pull base images even if present.
    pub pull: bool,
    /// Network of `RUN` steps: `default` (a bridge with outbound NAT), `none`, `host`.
    pub network: Option<String>,
    /// Secrets by id.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Extra named contexts (`COPY --from=name`).
    pub additional_contexts: BTreeMap<String, PathBuf>,
    /// `host:ip` entries added to `/etc/hosts` of `RUN` steps.
    pub extra_hosts: Vec<String>,
    /// Size of `/dev/shm` in `RUN` steps.
    pub shm_size: Option<u64>,
    /// Images whose layers seed the cache (local images only).
    pub cache_from: Vec<String>,
    /// The tug binary run as the `RUN` helper (default: this executable).
    pub exe: Option<PathBuf>,
}

/// What the builder reports while it works.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step starts (`cached`: its result comes from the cache).
    Step {
        /// Stage name or index.
        stage: String,
        /// 1-based step number over the whole build.
        n: usize,
        /// Number of steps.
        total: usize,
        /// The instruction as written.
        instruction: String,
        /// Its result is cached.
        cached: bool,
    },
    /// A line of a `RUN` step's output.
    Output {
        /// The step number.
        n: usize,
        /// The line.
        line: String,
    },
    /// A step is done.
    Done {
        /// The step number.
        n: usize,
        /// Seconds it took.
        secs: f64,
    },
}

/// The outcome of a build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The image (`id` is its config digest).
    pub image: crate::engine::image::Image,
    /// Filesystem steps whose result came from the cache.
    pub cached: usize,
    /// Filesystem steps that ran.
    pub ran: usize,
    /// Build args given but never declared (Docker warns about them).
    pub unused_args: Vec<String>,
}
