//! `tug image build` (a plain Dockerfile build), `tug builder prune`, and the progress
//! output every build shares (also `tug build` and `up --build`). The work is in
//! `engine::build`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::GlobalArgs;
use crate::engine::build::{self, BuildOptions, Event, SecretSource};

/// `tug image build` arguments (docker build's names).
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default `DIR/Dockerfile`); `-f FILE` works too, as in docker build.
    #[arg(long = "dockerfile", value_name = "FILE")]
    pub dockerfile: Option<PathBuf>,
    /// The stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Build-time variable `K=V` (or `K` to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Label `K=V` for the image.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Pull the base images even when present.
    #[arg(long)]
    pub pull: bool,
    /// Network of RUN steps: default, none, host.
    #[arg(long)]
    pub network: Option<String>,
    /// Secret for `RUN --mount=type=secret`: `id=NAME,src=PATH` or `id=NAME,env=VAR`.
    #[arg(long)]
    pub secret: Vec<String>,
    /// `host:ip` added to /etc/hosts of RUN steps.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Named context `name=DIR` (`COPY --from=name`).
    #[arg(long = "build-context")]
    pub build_context: Vec<String>,
    /// A local image (built by tug) whose layers seed the cache; repeatable.
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// The context directory.
    pub context: PathBuf,
}

/// `tug builder …`.
#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache (and the layers only it kept).
    Prune {
        /// Accepted for docker compatibility (everything is removed).
        #[arg(short, long)]
        all: bool,
        /// Do not ask (tug never asks). (`-f` is the global compose-file flag.)
        #[arg(long)]
        force: bool,
    },
}

/// Parses `K=V` list entries (`K` alone takes `$K`).
pub fn key_values(items: &[String], from_env: bool) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for i in items {
        match i.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                m.insert(k.to_string(), v.to_string());
            }
            None if from_env && !i.is_empty() => {
                if let Ok(v) = std::env::var(i) {
                    m.insert(i.clone(), v);
                }
            }
            _ => bail!("invalid {i:?}: KEY=VALUE expected"),
        }
    }
    Ok(m)
}

/// Parses `--secret id=…,src=…|env=…`.
pub fn secrets(items: &[String]) -> anyhow::Result<BTreeMap<String, SecretSource>> {
    let mut m = BTreeMap::new();
    for s in items {
        let mut id = None;
        let mut src = None;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(SecretSource::File(PathBuf::from(v))),
                Some(("env", v)) => src = Some(SecretSource::Env(v.to_string())),
                Some(("type", "file" | "env")) => {}
                _ => bail!("invalid --secret {s:?}: id=NAME,src=PATH or id=NAME,env=VAR expected"),
            }
        }
        let id = id.context("--secret needs id=")?;
        let src = src.unwrap_or_else(|| SecretSource::Env(id.clone()));
        m.insert(id, src);
    }
    Ok(m)
}

/// How build progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// One line per step; RUN output only on failure.
    Steps,
    /// One line per step and every RUN output line.
    Plain,
    /// Nothing.
    Quiet,
}

impl Progress {
    /// From `--progress` (and `-q`).
    #[must_use]
    pub fn from_flag(flag: &str, quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        match flag {
            "quiet" => Progress::Quiet,
            "plain" => Progress::Plain,
            _ => Progress::Steps,
        }
    }
}

/// A progress printer for builds (stderr), prefixed with `prefix` (a service name). On a
/// terminal (progress `auto`/`tty`) it is a live board: one line per step that spins while
/// it runs and shows the RUN step's latest output line, collapsed to a tick and the time
/// when it is done. Elsewhere, one line per step (and with `plain` every output line).
pub fn reporter(progress: Progress, prefix: &str) -> impl Fn(Event) + Sync + use<> {
    let tty = std::io::stderr().is_terminal() && progress == Progress::Steps;
    let board = tty.then(|| {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(
            10,
        ))
    });
    let bars: Mutex<std::collections::HashMap<usize, (indicatif::ProgressBar, String)>> =
        Mutex::new(std::collections::HashMap::new());
    let lock = Mutex::new(());
    let p = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix} ")
    };
    move |e: Event| {
        if progress == Progress::Quiet {
            return;
        }
        if let Some(board) = &board {
            let mut bars = bars
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match e {
                Event::Step {
                    stage,
                    n,
                    total,
                    instruction,
                    cached,
                } => {
                    let first: String = instruction
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(80)
                        .collect();
                    let label = format!("{p}#{n}/{total} [{stage}] {first}");
                    let bar = board.add(indicatif::ProgressBar::new_spinner());
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                    if cached {
                        bar.finish_with_message(format!("{label} CACHED"));
                    } else {
                        bar.set_message(label.clone());
                        bar.enable_steady_tick(std::time::Duration::from_millis(100));
                    }
                    bars.insert(n, (bar, label));
                }
                Event::Output { n, line } => {
                    if let Some((bar, label)) = bars.get(&n) {
                        let short: String = line.chars().take(100).collect();
                        bar.set_message(format!("{label}\n    > {short}"));
                    }
                }
                Event::Done { n, secs } => {
                    if let Some((bar, label)) = bars.get(&n)
                        && !bar.is_finished()
                    {
                        bar.finish_with_message(format!("{label} ✔ {secs:.1}s"));
                    }
                }
            }
            return;
        }
        let _g = lock.lock();
        let mut err = std::io::stderr().lock();
        match e {
            Event::Step {
                stage,
                n,
                total,
                instruction,
                cached,
            } => {
                let first = instruction.lines().next().unwrap_or("");
                let short: String = first.chars().take(100).collect();
                let tag = if cached { " CACHED" } else { "" };
                let _ = writeln!(err, "{p}#{n}/{total} [{stage}] {short}{tag}");
            }
            Event::Output { n, line } => {
                if progress == Progress::Plain {
                    let _ = writeln!(err, "{p}#{n} {line}");
                }
            }
            Event::Done { n, secs } => {
                if progress == Progress::Plain {
                    let _ = writeln!(err, "{p}#{n} DONE {secs:.1}s");
                }
            }
        }
    }
}

/// Runs `tug image build`.
pub fn run_image_build(global: &GlobalArgs, args: &BuildArgs) -> anyhow::Result<i32> {
    let root = global.state_root();
    let mut build_contexts = BTreeMap::new();
    for (k, v) in key_values(&args.build_context, false)? {
        build_contexts.insert(k, PathBuf::from(v));
    }
    let opts = BuildOptions {
        context: args.context.clone(),
        // `-f` is parsed as the global compose-file flag; here it names the Dockerfile.
        dockerfile: args.dockerfile.clone().or_else(|| {
            global
                .files
                .first()
                .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        }),
        tags: args.tags.clone(),
        target: args.target.clone(),
        build_args: key_values(&args.build_args, true)?,
        labels: key_values(&args.labels, false)?,
        no_cache: args.no_cache,
        pull: args.pull,
        network: args.network.clone(),
        secrets: secrets(&args.secret)?,
        additional_contexts: build_contexts,
        extra_hosts: args.add_host.clone(),
        cache_from: args.cache_from.clone(),
        ..BuildOptions::default()
    };
    let progress = Progress::from_flag(&global.progress, args.quiet);
    let report = reporter(progress, "");
    let out = build::build(&root, &opts, &report)?;
    for a in &out.unused_args {
        eprintln!("warning: build arg {a} was given but not declared in the Dockerfile");
    }
    let mut stdout = std::io::stdout().lock();
    if args.quiet {
        writeln!(stdout, "{}", out.image.id)?;
    } else {
        eprintln!(
            "built {} ({} steps cached, {} run){}",
            out.image.short_id(),
            out.cached,
            out.ran,
            if args.tags.is_empty() {
                String::new()
            } else {
                format!(", tagged {}", args.tags.join(", "))
            }
        );
        writeln!(stdout, "{}", out.image.id)?;
    }
    Ok(0)
}

/// Runs `tug builder …`.
pub fn run_builder(global: &GlobalArgs, cmd: &BuilderCommand) -> anyhow::Result<i32> {
    match cmd {
        BuilderCommand::Prune { .. } => {
            let root = global.state_root();
            let store = super::open_images(&root)?;
            let containers = crate::engine::container::ContainerStore::open(&root)?;
            let in_use = containers
                .list(true)?
                .into_iter()
                .map(|c| c.image_id)
                .collect();
            let (n, r) = store.unpin_prefix(build::cache::PIN_PREFIX, &in_use)?;
            let mounts = root.join("build").join("mounts");
            let _ = std::fs::remove_dir_all(&mounts);
            build::release_network_slots(&root);
            println!(
                "Removed {n} cache records; reclaimed {} bytes ({} blobs, {} layers)",
                r.bytes_freed, r.blobs_removed, r.layers_removed
            );
            Ok(0)
        }
    }
}

/// `tug build` arguments (docker compose build's flags).
#[derive(Debug, Args)]
pub struct ComposeBuildArgs {
    /// Services to build (default: every service with a `build:` section).
    pub services: Vec<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Pull the base images even when present.
    #[arg(long)]
    pub pull: bool,
    /// Build-time variable `K=V` for every service (over its `args`).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also build the images of the services the named ones depend on.
    #[arg(long)]
    pub with_dependencies: bool,
    /// Push the images once they are built.
    #[arg(long)]
    pub push: bool,
    /// Memory limit of the build (refused: RUN steps are not limited).
    #[arg(short = 'm', long, value_name = "BYTES")]
    pub memory: Option<String>,
    /// Builder instance (refused: tug has its own builder only).
    #[arg(long)]
    pub builder: Option<String>,
    /// Check the build without building (refused: no build checks).
    #[arg(long)]
    pub check: bool,
    /// Print the equivalent bake file (refused: no bake).
    #[arg(long)]
    pub print: bool,
    /// Provenance attestation (`false` accepted: tug adds no attestations).
    #[arg(long)]
    pub provenance: Option<String>,
    /// SBOM attestation (`false` accepted: tug adds no attestations).
    #[arg(long)]
    pub sbom: Option<String>,
    /// SSH agent for `RUN --mount=type=ssh` (refused: no ssh mounts).
    #[arg(long)]
    pub ssh: Option<String>,
}

/// The flags of docker compose's `build` tug's builder cannot carry out: an error naming the
/// first one given (an attestation flag that asks for none is fine).
fn refused_build_flag(args: &ComposeBuildArgs) -> Option<String> {
    let off = |v: &Option<String>| {
        v.as_deref()
            .is_none_or(|v| matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | ""))
    };
    if args.memory.is_some() {
        return Some("build --memory: tug's builder does not limit the memory of RUN steps".into());
    }
    if args.builder.is_some() {
        return Some("build --builder: tug has one builder, its own; drop the flag".into());
    }
    if args.check {
        return Some("build --check: build checks are not supported by tug".into());
    }
    if args.print {
        return Some("build --print: tug has no bake file to print".into());
    }
    if !off(&args.provenance) {
        return Some("build --provenance: tug does not make provenance attestations".into());
    }
    if !off(&args.sbom) {
        return Some("build --sbom: tug does not make SBOM attestations".into());
    }
    if args.ssh.is_some() {
        return Some("build --ssh: tug's builder does not forward an SSH agent".into());
    }
    None
}

/// Runs `tug build`: flags → [`crate::compose::BuildServicesOptions`] → `Stack::build`, whose
/// steps and lines [`BuildReport`] prints.
pub fn run_compose_build(global: &GlobalArgs, args: &ComposeBuildArgs) -> anyhow::Result<i32> {
    let stack = super::compose::open_stack(
        global,
        &args.services,
        crate::compose::StackOptions::default(),
    )?;
    let opts = crate::compose::BuildServicesOptions {
        services: args.services.clone(),
        with_dependencies: args.with_dependencies,
        overrides: crate::compose::BuildOverrides {
            no_cache: args.no_cache,
            pull: args.pull,
            args: key_values(&args.build_args, true)?,
        },
        push: args.push,
    };
    if let Some(m) = refused_build_flag(args) {
        bail!("{m}");
    }
    let mut report = BuildReport {
        progress: Progress::from_flag(&global.progress, args.quiet),
    };
    stack.build(&opts, &mut report)?;
    Ok(0)
}

/// What `tug build` prints: each service's build steps (see [`reporter`]), prefixed with
/// its name, and one line per image built or pushed or service skipped (`web: built …`).
struct BuildReport {
    progress: Progress,
}

impl crate::compose::Reporter for BuildReport {
    fn event(&mut self, _node: &crate::plan::Node, _event: &crate::compose::executor::Event) {}

    fn line(&mut self, _kind: &str, object: &str, done: &str) {
        if self.progress != Progress::Quiet {
            eprintln!("{object}: {done}");
        }
    }

    fn warn(&mut self, text: &str) {
        eprintln!("warning: {text}");
    }

    fn show_plan(&mut self, _plan: &crate::plan::Plan) {}

    fn build_progress(&mut self, service: &str) -> Box<dyn Fn(Event) + Sync + '_> {
        Box::new(reporter(self.progress, &format!("{service}:")))
    }
}
