//! `tug image …`: the image store verbs (ls, inspect, tag, rm, prune, import, load, save, pull,
//! push, login, logout, bootstrap). Flags become options; the work is in `engine::image`.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::GlobalArgs;
use crate::engine::image::{self, DebianOptions, Image, ImageStore, ImportOptions, Reference};

/// `tug image` arguments.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// Output format of `ls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// A table.
    #[default]
    Table,
    /// One JSON object per image and name, one per line (as `docker images --format json`).
    Json,
}

/// The image verbs.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(visible_alias = "list")]
    Ls {
        /// Show all images (tug keeps no intermediate images: the same as without).
        #[arg(short, long)]
        all: bool,
        /// Filter output: `dangling=true|false`, `reference=PATTERN`.
        #[arg(long, value_name = "FILTER")]
        filter: Vec<String>,
        /// Output format: table, `table TEMPLATE`, json, or a Go template ({{.Repository}},
        /// {{json .}}, …), with docker's fields.
        #[arg(long, default_value = "table")]
        format: String,
        /// Only show image ids.
        #[arg(short, long)]
        quiet: bool,
        /// Show full ids.
        #[arg(long)]
        no_trunc: bool,
        /// Show manifest digests.
        #[arg(long)]
        digests: bool,
        /// Only images whose name matches this reference (`busybox`, `busybox:*`).
        reference: Option<String>,
    },
    /// Show images as JSON.
    Inspect {
        /// Images (name, id or id prefix).
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Give an image another name.
    Tag {
        /// Existing image.
        source: String,
        /// New name.
        target: String,
    },
    /// Remove images (untag; delete when no name is left).
    #[command(visible_alias = "rmi")]
    Rm {
        /// Remove even if referenced by several names or used by a container (then only
        /// untag). (`-f` is the global compose-file flag, so only the long form.)
        #[arg(long)]
        force: bool,
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove unused images and their blobs and layers.
    Prune {
        /// Remove every image no container uses, not only unnamed ones.
        #[arg(short, long)]
        all: bool,
        /// Do not ask (tug never asks; accepted for docker compatibility).
        #[arg(long)]
        force: bool,
    },
    /// Import a root file system tarball (plain, gzip or zstd; `-` for stdin) as an image.
    Import {
        /// The tarball, or `-`.
        file: PathBuf,
        /// Name for the image.
        name: Option<String>,
        /// Dockerfile instruction to apply (`CMD ["sh"]`, `ENV K=V`, …); repeatable.
        #[arg(short, long = "change")]
        change: Vec<String>,
        /// Commit message.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Load images from a docker-archive or oci-archive tarball.
    Load {
        /// The archive (default: stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Print only the loaded names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Save images to a docker-archive tarball.
    Save {
        /// Output file.
        #[arg(short, long, required = true)]
        output: PathBuf,
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Pull an image from a registry (layers are unpacked on first use).
    Pull {
        /// Reference (`busybox`, `localhost:5000/app:1`, `name@sha256:…`).
        reference: String,
        /// Print no progress.
        #[arg(short, long)]
        quiet: bool,
        /// Unpack the layers now instead of on first use.
        #[arg(long)]
        unpack: bool,
    },
    /// Push an image to a registry.
    Push {
        /// The image (pushed under this name unless TARGET is given).
        reference: String,
        /// Push under this name instead (`localhost:5000/app:1`).
        target: Option<String>,
        /// Print no progress.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Unpack a layer tarball into a new directory as the store does (safe resolution,
    /// overlayfs whiteouts); prints the diff_id. For inspection and benchmarks.
    UnpackLayer {
        /// The layer (plain, gzip or zstd tar).
        file: PathBuf,
        /// The directory to create.
        dest: PathBuf,
    },
    /// Log in to a registry (credentials are checked, then stored mode 0600 in tug's config).
    Login(LoginArgs),
    /// Forget the stored credentials of a registry.
    Logout {
        /// Registry host (default: docker.io).
        registry: Option<String>,
    },
    /// Build an image from a Dockerfile.
    Build(super::build::BuildArgs),
    /// Build a base image from the host's Debian packages, offline from any registry:
    /// `busybox` (from busybox-static) or `debian:<suite>` (with mmdebstrap).
    Bootstrap {
        /// `busybox` or `debian:<suite>`.
        what: String,
        /// Name of the image (default `busybox:latest` / `debian:<suite>`).
        #[arg(long)]
        name: Option<String>,
        /// Extra Debian packages (comma-separated; repeatable).
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
        /// Debian mirror URL (default: mmdebstrap's).
        #[arg(long)]
        mirror: Option<String>,
        /// The busybox binary to use.
        #[arg(long, default_value = image::BUSYBOX)]
        busybox: PathBuf,
        /// Print no progress (only the image id).
        #[arg(short, long)]
        quiet: bool,
    },
}

/// `tug login` arguments.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host (default: docker.io).
    pub registry: Option<String>,
    /// User name.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin; `-p` is the global project flag).
    #[arg(long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

/// Runs `tug login`.
pub fn login(args: &LoginArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    let registry = args
        .registry
        .clone()
        .unwrap_or_else(|| image::DOCKER_HUB.to_string());
    let Some(username) = args.username.clone() else {
        bail!("--username is required (tug does not prompt)");
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin cannot be used together"),
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("a password is required: --password-stdin or --password"),
    };
    image::login(&registry, &image::auth::Credentials { username, password })?;
    writeln!(out, "Login Succeeded")?;
    Ok(0)
}

/// Runs `tug logout`.
pub fn logout(registry: Option<&str>, out: &mut impl Write) -> anyhow::Result<i32> {
    let registry = registry.unwrap_or(image::DOCKER_HUB);
    if image::logout(registry)? {
        writeln!(out, "Removing login credentials for {registry}")?;
    } else {
        writeln!(out, "Not logged in to {registry}")?;
    }
    Ok(0)
}

/// What `image bootstrap debian:<suite>` shows while mmdebstrap works (20 s or more): on a
/// terminal one spinner line with the current step and the time so far, otherwise one line
/// per step on stderr. stdout stays the image id alone.
struct BootstrapProgress {
    what: String,
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
    start: std::time::Instant,
}

impl BootstrapProgress {
    fn new(what: &str, quiet: bool) -> BootstrapProgress {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.set_prefix(format!("bootstrap {what}"));
            b.set_message("starting mmdebstrap");
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        if !quiet && bar.is_none() {
            eprintln!(
                "bootstrap {what}: mmdebstrap makes a Debian root file system from the mirror \
                 (20 s or more)"
            );
        }
        BootstrapProgress {
            what: what.to_string(),
            quiet,
            bar,
            start: std::time::Instant::now(),
        }
    }

    fn show(&self, event: image::BootstrapEvent<'_>) {
        if self.quiet {
            return;
        }
        let msg = match event {
            image::BootstrapEvent::Step(step) => step.to_string(),
            image::BootstrapEvent::Importing => "storing the image".to_string(),
        };
        match &self.bar {
            Some(b) => b.set_message(msg),
            None => eprintln!(
                "bootstrap {}: {msg} ({:.1} s)",
                self.what,
                self.start.elapsed().as_secs_f64()
            ),
        }
    }

    fn finish(&self, ok: bool) {
        if self.quiet {
            return;
        }
        let took = self.start.elapsed().as_secs_f64();
        match &self.bar {
            Some(b) if ok => b.finish_with_message(format!("done in {took:.1} s")),
            Some(b) => b.abandon_with_message("failed"),
            None if ok => eprintln!("bootstrap {}: done in {took:.1} s", self.what),
            None => {}
        }
    }
}

/// Progress display: bars on a terminal, one line per finished layer otherwise.
struct Bars {
    multi: Option<indicatif::MultiProgress>,
    bars:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>>,
}

impl Bars {
    fn finish(&self) {
        if let Ok(bars) = self.bars.lock() {
            for b in bars.values() {
                if !b.is_finished() {
                    b.abandon();
                }
            }
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

fn short(d: &str) -> String {
    let h = d.strip_prefix("sha256:").unwrap_or(d);
    h[..h.len().min(12)].to_string()
}

/// The key of the overall bar among the per-blob bars.
const TOTAL: &str = "total";

/// Sets the overall bar to the sum of the blob bars.
fn update_total(map: &std::collections::HashMap<String, indicatif::ProgressBar>) {
    if let Some(total) = map.get(TOTAL) {
        let sum: u64 = map
            .iter()
            .filter(|(k, _)| k.as_str() != TOTAL)
            .map(|(_, b)| b.position())
            .sum();
        total.set_position(sum);
        if total.length().is_some_and(|l| sum >= l) {
            total.finish();
        }
    }
}

fn progress_reporter(quiet: bool, done_word: &'static str) -> (image::ProgressFn, Bars) {
    use std::io::IsTerminal;
    let bars = Bars {
        multi: (!quiet && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new),
        bars: std::sync::Arc::default(),
    };
    if quiet {
        return (image::no_progress(), bars);
    }
    let multi = bars.multi.clone();
    let map = bars.bars.clone();
    let style =
        indicatif::ProgressStyle::with_template("{prefix}: {msg} {bar:30} {bytes}/{total_bytes}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let f = move |p: image::Progress| {
        let Ok(mut map) = map.lock() else { return };
        match (&multi, p) {
            (Some(m), image::Progress::Resolved { layers, .. }) => {
                let total: u64 = layers.iter().map(|(_, size)| size).sum();
                for (d, size) in layers {
                    let b = m.add(indicatif::ProgressBar::new(size));
                    b.set_style(style.clone());
                    b.set_prefix(short(&d));
                    b.set_message("waiting");
                    map.insert(d, b);
                }
                // The overall bar: bytes of every layer, moved or already there.
                let b = m.add(indicatif::ProgressBar::new(total));
                b.set_style(style.clone());
                b.set_prefix(format!("{:<12}", "total"));
                map.insert(TOTAL.to_string(), b);
            }
            (Some(_), image::Progress::Bytes { digest, done, .. }) => {
                if let Some(b) = map.get(&digest) {
                    b.set_message("transferring");
                    b.set_position(done);
                }
                update_total(&map);
            }
            (Some(_), image::Progress::Skipped { digest }) => {
                if let Some(b) = map.get(&digest) {
                    b.set_position(b.length().unwrap_or(0));
                    b.finish_with_message("already exists");
                }
                update_total(&map);
            }
            (Some(_), image::Progress::Done { digest }) => {
                if let Some(b) = map.get(&digest) {
                    b.set_message(done_word);
                }
            }
            (Some(_), image::Progress::Unpacked { digest }) => {
                if let Some(b) = map.get(&digest) {
                    b.finish_with_message("unpacked");
                }
            }
            (
                Some(m),
                image::Progress::Retrying {
                    digest,
                    attempt,
                    reason,
                },
            ) => {
                let _ = m.println(format!(
                    "{}: retrying (attempt {attempt}): {reason}",
                    short(&digest)
                ));
            }
            (Some(m), image::Progress::Resumed { digest, offset }) => {
                let _ = m.println(format!("{}: resuming at {offset} bytes", short(&digest)));
            }
            (Some(m), image::Progress::Restarted { digest }) => {
                let _ = m.println(format!(
                    "{}: the registry ignored the range, downloading again from the start",
                    short(&digest)
                ));
            }
            (None, image::Progress::Unpacked { digest }) => {
                eprintln!("{}: unpacked", short(&digest));
            }
            (None, image::Progress::Resumed { digest, offset }) => {
                eprintln!("{}: resuming at {offset} bytes", short(&digest));
            }
            (None, image::Progress::Restarted { digest }) => {
                eprintln!(
                    "{}: the registry ignored the range, downloading again from the start",
                    short(&digest)
                );
            }
            (None, image::Progress::Skipped { digest }) => {
                eprintln!("{}: already exists", short(&digest));
            }
            (None, image::Progress::Done { digest }) => {
                eprintln!("{}: {done_word}", short(&digest));
            }
            (
                None,
                image::Progress::Retrying {
                    digest,
                    attempt,
                    reason,
                },
            ) => {
                eprintln!("{}: retrying (attempt {attempt}): {reason}", short(&digest));
            }
            _ => {}
        }
    };
    (std::sync::Arc::new(f), bars)
}

/// Runs `tug image …`.
// Long: one arm per `image` subcommand, each a few lines of flags to a store call.
pub fn run(global: &GlobalArgs, args: ImageArgs) -> anyhow::Result<i32> {
    let root = global.state_root();
    let store = super::open_images(&root)?;
    let mut out = std::io::stdout().lock();
    match args.command {
        ImageCommand::Ls {
            all: _,
            filter,
            format,
            quiet,
            no_trunc,
            digests,
            reference,
        } => ls(
            &store,
            &mut out,
            &LsOptions {
                format: &format,
                filters: &filter,
                quiet,
                no_trunc,
                digests,
                reference: reference.as_deref(),
            },
        )?,
        ImageCommand::Inspect { images } => {
            let mut docs = Vec::new();
            let mut failed = false;
            for name in &images {
                match store.resolve(name) {
                    Ok(img) => docs.push(inspect_json(&store, &img)),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&docs)?)?;
            return Ok(i32::from(failed));
        }
        ImageCommand::Tag { source, target } => {
            store.tag(&source, &target)?;
        }
        ImageCommand::Rm { force, images } => {
            let in_use = images_in_use(&root)?;
            let mut failed = false;
            for name in &images {
                match store.remove(name, force, &in_use) {
                    Ok(r) => {
                        for n in &r.untagged {
                            writeln!(out, "Untagged: {}", familiar(n))?;
                        }
                        for id in &r.deleted {
                            writeln!(out, "Deleted: {id}")?;
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
        ImageCommand::Prune { all, force: _ } => {
            let in_use = images_in_use(&root)?;
            let r = store.prune(all, &in_use)?;
            for id in &r.images_deleted {
                writeln!(out, "deleted: {id}")?;
            }
            writeln!(
                out,
                "Total reclaimed space: {} ({} blobs, {} layers)",
                human_size(r.bytes_freed),
                r.blobs_removed,
                r.layers_removed
            )?;
        }
        ImageCommand::Import {
            file,
            name,
            change,
            message,
        } => {
            let opts = ImportOptions {
                changes: change,
                message,
                created_by: None,
                created: None,
            };
            let img = if file.as_os_str() == "-" {
                store.import(std::io::stdin(), name.as_deref(), &opts)?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                store.import(f, name.as_deref(), &opts)?
            };
            writeln!(out, "{}", img.id)?;
        }
        ImageCommand::Load { input, quiet } => {
            let loaded = match &input {
                Some(p) if p.as_os_str() != "-" => {
                    let f = std::fs::File::open(p)
                        .with_context(|| format!("cannot open {}", p.display()))?;
                    store.load(f, &p.display().to_string())?
                }
                _ => store.load(std::io::stdin().lock(), "stdin")?,
            };
            for img in loaded.images.iter().filter(|i| i.names.is_empty()) {
                if !quiet {
                    writeln!(out, "Loaded image ID: {}", img.id)?;
                }
            }
            for n in &loaded.names {
                writeln!(out, "Loaded image: {}", familiar(n))?;
            }
        }
        ImageCommand::Save { output, images } => {
            store.save(&images, &output)?;
        }
        ImageCommand::Pull {
            reference,
            quiet,
            unpack,
        } => {
            let (progress, bars) = progress_reporter(quiet, "Pull complete");
            let result = store.pull(&reference, &progress).and_then(|img| {
                if unpack {
                    store.layer_dirs_with_progress(&img, &progress)?;
                }
                Ok(img)
            });
            bars.finish();
            let img = result?;
            if !quiet {
                eprintln!("Digest: {}", img.digest);
            }
            let full = Reference::parse(&reference)?;
            writeln!(out, "{full}")?;
        }
        ImageCommand::Push {
            reference,
            target,
            quiet,
        } => {
            let (progress, bars) = progress_reporter(quiet, "Pushed");
            let dest = target.as_deref().unwrap_or(&reference);
            let source = target.as_ref().map(|_| reference.as_str());
            let result = store.push(source, dest, &progress);
            bars.finish();
            let digest = result?;
            writeln!(
                out,
                "{}: digest: {digest}",
                Reference::parse(dest)?.familiar()
            )?;
        }
        ImageCommand::Login(args) => return login(&args, &mut out),
        ImageCommand::UnpackLayer { file, dest } => {
            let (diff_id, stats) = image::unpack_layer_file(&file, &dest)?;
            writeln!(out, "{diff_id}")?;
            eprintln!(
                "{} entries, {} bytes of file data",
                stats.entries, stats.bytes
            );
        }
        ImageCommand::Logout { registry } => return logout(registry.as_deref(), &mut out),
        ImageCommand::Build(a) => return super::build::run_image_build(global, &a),
        ImageCommand::Bootstrap {
            what,
            name,
            include,
            mirror,
            busybox,
            quiet,
        } => {
            let img = if what == "busybox" {
                if !include.is_empty() {
                    bail!("--include applies to debian:<suite> only");
                }
                store.bootstrap_busybox(&busybox, name.as_deref())?
            } else if let Some(suite) = what.strip_prefix("debian:") {
                let opts = DebianOptions {
                    suite: suite.to_string(),
                    include,
                    mirror,
                };
                let progress = BootstrapProgress::new(&what, quiet);
                let img = store.bootstrap_debian(&opts, name.as_deref(), &|e| progress.show(e));
                progress.finish(img.is_ok());
                img?
            } else {
                bail!("cannot bootstrap {what:?}: want busybox or debian:<suite>");
            };
            writeln!(out, "{}", img.id)?;
        }
    }
    Ok(0)
}

/// Image ids used by containers of the state root (from the container store), so GC keeps
/// them and their layers.
fn images_in_use(root: &Path) -> anyhow::Result<HashSet<String>> {
    let store = crate::engine::container::ContainerStore::open(root)
        .context("cannot read the containers to find the images they use")?;
    Ok(store
        .list(true)
        .context("cannot read the containers to find the images they use")?
        .into_iter()
        .map(|c| c.image_id)
        .filter(|id| !id.is_empty())
        .collect())
}

fn familiar(full: &str) -> String {
    Reference::parse(full).map_or_else(|_| full.to_string(), |r| r.familiar())
}

/// (repository, tag) rows of an image: one per name, or `<none>` when unnamed.
fn rows(img: &Image) -> Vec<(String, String)> {
    if img.names.is_empty() {
        return vec![("<none>".into(), "<none>".into())];
    }
    img.names
        .iter()
        .map(|n| match Reference::parse(n) {
            Ok(r) => (r.familiar_name(), r.tag.unwrap_or_else(|| "<none>".into())),
            Err(_) => (n.clone(), "<none>".into()),
        })
        .collect()
}

/// What `image ls` shows.
struct LsOptions<'a> {
    format: &'a str,
    filters: &'a [String],
    quiet: bool,
    no_trunc: bool,
    digests: bool,
    reference: Option<&'a str>,
}

// Long: docker's `image ls`: its filters, `--quiet`, then its table or template rows.
fn ls(store: &ImageStore, out: &mut impl Write, o: &LsOptions<'_>) -> anyhow::Result<()> {
    let default = if o.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    let template =
        crate::cli::format::Template::parse(o.format, default).map_err(anyhow::Error::msg)?;
    let mut patterns: Vec<String> = o.reference.map(str::to_owned).into_iter().collect();
    let mut dangling: Option<bool> = None;
    for f in o.filters {
        match f.split_once('=') {
            Some(("reference", v)) => patterns.push(v.to_owned()),
            Some(("dangling", v)) => {
                dangling = Some(match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => anyhow::bail!("invalid filter 'dangling={v}'"),
                });
            }
            Some((k, _)) => anyhow::bail!("invalid filter '{k}' (supported: dangling, reference)"),
            None => anyhow::bail!("bad format of filter {f:?} (expected name=value)"),
        }
    }
    let mut images = store.list()?;
    images.sort_by(|a, b| b.config.created().cmp(a.config.created()));
    let matches = |repo: &str, tag: &str| -> bool {
        if let Some(d) = dangling
            && d != (repo == "<none>")
        {
            return false;
        }
        patterns.iter().all(|f| {
            let (frepo, ftag) = match f.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, Some(t)),
                _ => (f.as_str(), None),
            };
            let frepo_norm =
                Reference::parse(frepo).map_or_else(|_| frepo.to_string(), |r| r.familiar_name());
            glob_match(&frepo_norm, repo) && ftag.is_none_or(|t| glob_match(t, tag))
        })
    };
    if o.quiet {
        let mut seen = HashSet::new();
        for img in &images {
            if rows(img).iter().any(|(r, t)| matches(r, t)) {
                let id = if o.no_trunc {
                    img.id.clone()
                } else {
                    img.short_id().to_string()
                };
                if seen.insert(id.clone()) {
                    writeln!(out, "{id}")?;
                }
            }
        }
        return Ok(());
    }
    let now = jiff::Timestamp::now();
    let mut table = Vec::new();
    for img in &images {
        let created = img
            .config
            .created()
            .as_deref()
            .and_then(|c| c.parse::<jiff::Timestamp>().ok());
        for (repo, tag) in rows(img) {
            if !matches(&repo, &tag) {
                continue;
            }
            let id = if o.no_trunc {
                img.id.clone()
            } else {
                img.short_id().to_string()
            };
            let size = human_size(store.unpacked_size(img));
            table.push(crate::cli::format::Row::new([
                ("Containers", json!("N/A")),
                (
                    "CreatedAt",
                    json!(
                        created
                            .map(|t| crate::cli::format::go_time(&t.to_string()))
                            .unwrap_or_default()
                    ),
                ),
                (
                    "CreatedSince",
                    json!(
                        created
                            .map(|t| since(now, t))
                            .unwrap_or_else(|| "N/A".into())
                    ),
                ),
                ("Digest", json!(img.digest)),
                ("ID", json!(id)),
                ("Repository", json!(repo)),
                ("SharedSize", json!("N/A")),
                ("Size", json!(size)),
                ("Tag", json!(tag)),
                ("UniqueSize", json!("N/A")),
                ("VirtualSize", json!(size)),
            ]));
        }
    }
    write!(
        out,
        "{}",
        template
            .render(
                &table,
                &[
                    ("Repository", "REPOSITORY"),
                    ("Tag", "TAG"),
                    ("Digest", "DIGEST"),
                    ("ID", "IMAGE ID"),
                    ("CreatedSince", "CREATED"),
                    ("CreatedAt", "CREATED AT"),
                    ("Size", "SIZE"),
                    ("Containers", "CONTAINERS"),
                    ("SharedSize", "SHARED SIZE"),
                    ("UniqueSize", "UNIQUE SIZE"),
                    ("VirtualSize", "VIRTUAL SIZE"),
                ],
            )
            .map_err(anyhow::Error::msg)?
    )?;
    Ok(())
}

/// `*` matches any run of characters.
fn glob_match(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, rest)) => {
            let Some(s) = s.strip_prefix(pre) else {
                return false;
            };
            (0..=s.len()).any(|i| s.is_char_boundary(i) && glob_match(rest, &s[i..]))
        }
    }
}

fn inspect_json(store: &ImageStore, img: &Image) -> serde_json::Value {
    let repo_digests: Vec<String> = img
        .names
        .iter()
        .filter_map(|n| Reference::parse(n).ok())
        .map(|r| format!("{}@{}", r.familiar_name(), img.digest))
        .collect();
    // The config as stored: oci-spec's model drops Docker's Healthcheck, Shell, OnBuild, ….
    let raw_config: Option<serde_json::Value> = std::fs::read(
        store
            .layout_dir()
            .join("blobs/sha256")
            .join(img.id.trim_start_matches("sha256:")),
    )
    .ok()
    .and_then(|b| serde_json::from_slice(&b).ok());
    let config = raw_config
        .as_ref()
        .and_then(|v| v.get("config").cloned())
        .unwrap_or_else(|| json!(img.config.config()));
    let layers: Vec<String> = store
        .layer_dirs(img)
        .map(|v| v.iter().map(|p| p.display().to_string()).collect())
        .unwrap_or_default();
    json!({
        "Id": img.id,
        "RepoTags": img.familiar_names(),
        "RepoDigests": repo_digests,
        "Names": img.names,
        "Digest": img.digest,
        "Created": img.config.created(),
        "Author": img.config.author(),
        "Architecture": img.config.architecture().to_string(),
        "Os": img.config.os().to_string(),
        "Config": config,
        "RootFS": img.config.rootfs(),
        "History": img.config.history(),
        "Size": store.unpacked_size(img),
        "CompressedSize": img.size,
        "Manifest": img.manifest,
        "LayerDirs": layers,
    })
}

/// Sizes as Docker prints them (SI units, 3 significant digits).
fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else if v >= 100.0 {
        format!("{v:.0}{}", UNITS[u])
    } else if v >= 10.0 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}

/// "3 minutes ago", as Docker writes it.
fn since(now: jiff::Timestamp, t: jiff::Timestamp) -> String {
    let secs = (now.as_second() - t.as_second()).max(0);
    let (n, unit) = match secs {
        s if s < 1 => return "Less than a second ago".into(),
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 * 2 => (s / 3600, "hour"),
        s if s < 86_400 * 14 => (s / 86_400, "day"),
        s if s < 86_400 * 60 => (s / (86_400 * 7), "week"),
        s if s < 86_400 * 365 * 2 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    if n == 1 {
        let article = if unit == "hour" { "An" } else { "1" };
        format!("{article} {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_globs() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert!(glob_match("bus*", "busybox"));
        assert!(!glob_match("bus*z", "busybox"));
        assert!(glob_match("*", ""));
    }
}
