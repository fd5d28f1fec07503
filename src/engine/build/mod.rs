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
}

/// A failed step: where, what, why, and its last output lines.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    pub message: String,
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
            self.message,
            tail_text(&self.output)
        )
    }
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
