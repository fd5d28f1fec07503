//! Carrying out a build: stages, steps, the cache, the image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::cache::{self, LayerRef, Record};
use super::context::{self, Source};
use super::dockerfile::{self, Args, Instruction};
use super::layer::TarOut;
use super::view::View;
use super::{
    BuildError, BuildOptions, BuildOutput, DownloadError, Event, Result, SecretSource, StepError,
    io_ctx, shell,
};
use crate::engine::container::{self, ContainerConfig, Mount, MountKind, NetworkMode};
use crate::engine::image::{self, ImageStore, Reference};

/// Keys of the build network namespaces older versions of tug kept between builds
/// (`build-slot-N`); `tug builder prune` releases any that are left.
pub const NET_SLOT_PREFIX: &str = "build-slot-";

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The state of a stage after some steps.
#[derive(Debug, Clone)]
struct State {
    layers: Vec<LayerRef>,
    /// The Docker-style `config` object.
    config: Map<String, Value>,
    history: Vec<Value>,
    /// Cache key of the filesystem so far.
    key: String,
    created: String,
    author: Option<String>,
    /// ARGs declared in this stage (name → value).
    args: Vec<(String, Option<String>)>,
    cmd_set: bool,
}

impl State {
    fn env(&self) -> Vec<(String, String)> {
        self.config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|e| match e.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (e.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
        self.config.insert(
            "Env".into(),
            Value::Array(
                env.into_iter()
                    .map(|(k, v)| Value::String(format!("{k}={v}")))
                    .collect(),
            ),
        );
    }

    /// Expansion lookup: ENV wins over ARG.
    fn lookup(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.env().into_iter().find(|(k, _)| k == name) {
            return Some(v);
        }
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    fn workdir(&self) -> String {
        self.config
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string()
    }

    fn user(&self) -> String {
        self.config
            .get("User")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .get("Shell")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .filter(|v: &Vec<String>| !v.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn history(&mut self, created_by: &str, empty: bool, key: Option<&str>) {
        let mut h = json!({
            "created": self.created,
            "created_by": created_by,
            "comment": "tug.build",
        });
        if empty {
            h["empty_layer"] = json!(true);
        }
        if let Some(k) = key {
            h["tug.cache.key"] = json!(k);
        }
        self.history.push(h);
    }
}

/// A stage of the Dockerfile.
#[derive(Debug, Clone)]
struct Stage {
    index: usize,
    name: Option<String>,
    from: Instruction,
    /// FROM's image after expansion with the global args.
    base: String,
    steps: Vec<Instruction>,
}

/// What one stage left behind.
#[derive(Debug, Clone)]
struct Done {
    state: State,
    dirs: Vec<PathBuf>,
}

struct Shared<'a> {
    root: PathBuf,
    store: ImageStore,
    opts: &'a BuildOptions,
    file: String,
    escape: char,
    context: Source,
    named: HashMap<String, Source>,
    global_args: Vec<(String, Option<String>)>,
    stages: Vec<Stage>,
    events: &'a (dyn Fn(Event) + Sync),
    total: usize,
    /// Each finished stage's result, for the stages that read it and for the end.
    results: Mutex<HashMap<usize, Result<Arc<Done>>>>,
    cv: Condvar,
    counters: Mutex<(usize, usize)>,
    net: Mutex<Option<NetWiring>>,
    used_args: Mutex<HashSet<String>>,
    exe: PathBuf,
}

struct NetWiring {
    guard: Option<container::net::WiringGuard>,
    mode: NetworkMode,
    hosts: String,
    resolv: String,
}

impl Drop for NetWiring {
    fn drop(&mut self) {
        drop(self.guard.take());
    }
}

fn platform_args() -> Vec<(String, String)> {
    let arch = image::host_arch().to_string();
    let p = format!("linux/{arch}");
    vec![
        ("BUILDPLATFORM".into(), p.clone()),
        ("BUILDOS".into(), "linux".into()),
        ("BUILDARCH".into(), arch.clone()),
        ("BUILDVARIANT".into(), String::new()),
        ("TARGETPLATFORM".into(), p),
        ("TARGETOS".into(), "linux".into()),
        ("TARGETARCH".into(), arch),
        ("TARGETVARIANT".into(), String::new()),
    ]
}

/// Proxy args Docker passes to RUN without a declaration.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn source_date_epoch(opts: &BuildOptions) -> Option<i64> {
    opts.build_args
        .get("SOURCE_DATE_EPOCH")
        .and_then(|v| v.parse().ok())
}

/// Builds the image `opts` describes in the state root `root`: the Dockerfile's stages, each
/// needed one on its own thread (a stage waits for the stages it reads from), then the
/// target's image and its tags.
pub fn build(
    root: &Path,
    opts: &BuildOptions,
    events: &(dyn Fn(Event) + Sync),
) -> Result<BuildOutput> {
    let (context_dir, text, file, df_path) = read_dockerfile(opts)?;
    let df = dockerfile::parse(&text).map_err(|e| BuildError::Dockerfile {
        file: file.clone(),
        line: e.line,
        message: e.message,
    })?;
    let (stages, global_args, used) = split_stages(&df, &file, opts)?;
    let target = match &opts.target {
        Some(t) => stages
            .iter()
            .find(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
            .map(|s| s.index)
            .ok_or_else(|| BuildError::Invalid(format!("target stage {t:?} could not be found")))?,
        None => stages.len() - 1,
    };
    let store = ImageStore::open(root)?;
    let _hold = store.hold()?;
    for name in &opts.cache_from {
        seed_cache(&store, name)?;
    }
    let context = context::open(&context_dir, df_path.as_deref())?;
    let mut named = HashMap::new();
    for (n, p) in &opts.additional_contexts {
        let mut s = context::open(p, None)?;
        s.name = format!("context {n}");
        named.insert(n.clone(), s);
    }
    let needed = needed_stages(&stages, target);
    let total: usize = stages
        .iter()
        .filter(|s| needed[s.index])
        .map(|s| s.steps.len() + 1)
        .sum();
    let exe = opts
        .exe
        .clone()
        .or_else(|| std::env::var_os("TUG_EXE").map(PathBuf::from))
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("tug"));
    let shared = Shared {
        root: root.to_path_buf(),
        store: store.clone(),
        opts,
        file: file.clone(),
        escape: df.escape,
        context,
        named,
        global_args,
        stages: stages.clone(),
        events,
        total,
        results: Mutex::new(HashMap::new()),
        cv: Condvar::new(),
        counters: Mutex::new((0, 0)),
        net: Mutex::new(None),
        used_args: Mutex::new(used),
        exe,
    };
    let tmp = root.join("build").join("tmp");
    std::fs::create_dir_all(&tmp).map_err(io_ctx(format!("cannot create {}", tmp.display())))?;
    remove_stale_steps(&tmp);
    shared.run_needed(&needed);
    drop(
        shared
            .net
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(),
    );
    let results = shared
        .results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let done = target_result(results, &stages, &needed, target)?;
    let (cached, ran) = *shared
        .counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut state = done.state.clone();
    add_labels(&mut state, &opts.labels);
    let image = commit(&store, &state, &opts.tags)?;
    let declared = shared
        .used_args
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let unused_args = opts
        .build_args
        .keys()
        .filter(|k| !declared.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .filter(|k| *k != "SOURCE_DATE_EPOCH")
        .cloned()
        .collect();
    Ok(BuildOutput {
        image,
        cached,
        ran,
        unused_args,
    })
}

/// The target stage's result, or the build's error: the first failure in stage order (a
/// stage that failed because a stage it reads from did is not one).
fn target_result(
    mut results: HashMap<usize, Result<Arc<Done>>>,
    stages: &[Stage],
    needed: &[bool],
    target: usize,
) -> Result<Arc<Done>> {
    // The first failure (in stage order) is the error; a stage that failed because a stage
    // it reads from did is not.
    let first_err = stages.iter().filter(|s| needed[s.index]).find(|s| {
        matches!(
            results.get(&s.index),
            Some(Err(e)) if !matches!(e, BuildError::DependencyFailed)
        )
    });
    if let Some(s) = first_err
        && let Some(Err(e)) = results.remove(&s.index)
    {
        return Err(e);
    }
    match results.remove(&target) {
        Some(Ok(done)) => Ok(done),
        _ => Err(BuildError::Invalid(
            "the target stage did not finish".into(),
        )),
    }
}

/// The build's `--label`s on the image's config.
fn add_labels(state: &mut State, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    let l = state
        .config
        .entry("Labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if !l.is_object() {
        *l = Value::Object(Map::new());
    }
    if let Some(m) = l.as_object_mut() {
        for (k, v) in labels {
            m.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

/// The build context (canonical) and the Dockerfile: its text, its name for messages, its
/// path (`None` for an inline one).
fn read_dockerfile(opts: &BuildOptions) -> Result<(PathBuf, String, String, Option<PathBuf>)> {
    let context_dir = std::fs::canonicalize(&opts.context).map_err(io_ctx(format!(
        "cannot find the build context {}",
        opts.context.display()
    )))?;
    let (text, file, df_path) = match &opts.dockerfile_inline {
        Some(t) => (t.clone(), "Dockerfile (inline)".to_string(), None),
        None => {
            let p = match &opts.dockerfile {
                Some(p) if p.is_absolute() => p.clone(),
                Some(p) => context_dir.join(p),
                None => context_dir.join("Dockerfile"),
            };
            let t = std::fs::read_to_string(&p).map_err(io_ctx(format!(
                "cannot read the Dockerfile {}",
                p.display()
            )))?;
            let name = p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            (t, name, Some(p))
        }
    };
    Ok((context_dir, text, file, df_path))
}

/// Stages, global args and the arg names declared.
type Stages = (Vec<Stage>, Vec<(String, Option<String>)>, HashSet<String>);

/// The Dockerfile's stages (`FROM` up to the next `FROM`), with the global `ARG`s before the
/// first `FROM` (the platform's and the build's values) and the names they declare.
fn split_stages(df: &dockerfile::Dockerfile, file: &str, opts: &BuildOptions) -> Result<Stages> {
    let derr = |line: usize, message: String| BuildError::Dockerfile {
        file: file.to_owned(),
        line,
        message,
    };
    // Global args and stages.
    let mut global_args: Vec<(String, Option<String>)> = platform_args()
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    let mut stages: Vec<Stage> = Vec::new();
    let mut used = HashSet::new();
    for inst in &df.instructions {
        match (inst.keyword.as_str(), stages.last_mut()) {
            ("FROM", _) => {
                let words = shell_words_raw(&inst.args);
                let (image_raw, name) = match words.as_slice() {
                    [img] => (img.clone(), None),
                    [img, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (img.clone(), Some(name.to_ascii_lowercase()))
                    }
                    _ => {
                        return Err(derr(inst.line, "FROM requires IMAGE [AS NAME]".into()));
                    }
                };
                let lookup = |n: &str| {
                    global_args
                        .iter()
                        .rev()
                        .find(|(k, _)| k == n)
                        .and_then(|(_, v)| v.clone())
                };
                let base = shell::word(&image_raw, &lookup, df.escape)
                    .map_err(|e| derr(inst.line, e.to_string()))?;
                if base.is_empty() {
                    return Err(derr(
                        inst.line,
                        format!("FROM {image_raw}: the image name is empty"),
                    ));
                }
                if let Some(n) = &name {
                    if stages.iter().any(|s| s.name.as_deref() == Some(n)) {
                        return Err(derr(inst.line, format!("duplicate stage name {n:?}")));
                    }
                    if !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        return Err(derr(inst.line, format!("invalid stage name {n:?}")));
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    name,
                    from: inst.clone(),
                    base,
                    steps: Vec::new(),
                });
            }
            ("ARG", None) => {
                let pairs = dockerfile::name_values(&inst.args.text(), df.escape, false)
                    .map_err(|e| derr(inst.line, format!("ARG {e}")))?;
                for (k, v) in pairs {
                    used.insert(k.clone());
                    let value = match opts.build_args.get(&k) {
                        Some(b) => Some(b.clone()),
                        None => match v {
                            Some(v) => {
                                let lookup = |n: &str| {
                                    global_args
                                        .iter()
                                        .rev()
                                        .find(|(k, _)| k == n)
                                        .and_then(|(_, v)| v.clone())
                                };
                                Some(
                                    shell::word(&v, &lookup, df.escape)
                                        .map_err(|e| derr(inst.line, e.to_string()))?,
                                )
                            }
                            None => None,
                        },
                    };
                    global_args.push((k, value));
                }
            }
            (_, None) => {
                return Err(derr(
                    inst.line,
                    format!(
                        "{} before the first FROM (only ARG may come first)",
                        inst.keyword
                    ),
                ));
            }
            (_, Some(s)) => s.steps.push(inst.clone()),
        }
    }
    if stages.is_empty() {
        return Err(derr(1, "the Dockerfile has no FROM".into()));
    }
    Ok((stages, global_args, used))
}

/// Which stages the target needs: itself and every stage it reads from (its base, `COPY
/// --from`, `RUN --mount=from=`), transitively.
fn needed_stages(stages: &[Stage], target: usize) -> Vec<bool> {
    let deps = |s: &Stage| -> Vec<usize> {
        let mut d = Vec::new();
        let find = |n: &str| -> Option<usize> {
            let n = n.to_ascii_lowercase();
            stages
                .iter()
                .take(s.index)
                .find(|x| x.name.as_deref() == Some(n.as_str()))
                .map(|x| x.index)
                .or_else(|| n.parse::<usize>().ok().filter(|i| *i < s.index))
        };
        if let Some(i) = find(&s.base) {
            d.push(i);
        }
        for st in &s.steps {
            if let Some(f) = st.flag("from")
                && let Some(i) = find(f)
            {
                d.push(i);
            }
            for m in st.flags_named("mount") {
                for kv in m.split(',') {
                    if let Some(f) = kv.strip_prefix("from=")
                        && let Some(i) = find(f)
                    {
                        d.push(i);
                    }
                }
            }
        }
        d
    };
    let mut needed = vec![false; stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if needed[i] {
            continue;
        }
        needed[i] = true;
        todo.extend(deps(&stages[i]));
    }
    needed
}

/// Downloads `url` into the new directory `dir` as Docker's `ADD` does: the file is named
/// after the URL's last path segment, mode 0600, modification time from `Last-Modified`
/// (clamped by `SOURCE_DATE_EPOCH`); `--checksum=sha256:…` is verified. Returns the name.
fn download(
    url: &str,
    dir: &Path,
    checksum: Option<&str>,
    epoch: Option<i64>,
) -> std::result::Result<String, DownloadError> {
    use sha2::Digest as _;
    use std::io::Write as _;
    let path_part = url.split(['?', '#']).next().unwrap_or(url);
    let name = path_part
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && !path_part.ends_with("//") && !n.contains(':'))
        .unwrap_or("download")
        .to_string();
    if name == "." || name == ".." || name.starts_with(".wh.") {
        return Err(DownloadError::Name(name));
    }
    std::fs::create_dir_all(dir)?;
    let file = dir.join(&name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (digest, modified) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()?;
        let mut resp = client
            .get(url)
            .send()
            .await
            .map_err(DownloadError::Unreachable)?
            .error_for_status()?;
        let modified = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| jiff::fmt::rfc2822::parse(v).ok())
            .map(|z| z.timestamp().as_second());
        let mut f = std::fs::File::create(&file)?;
        let mut h = sha2::Sha256::new();
        while let Some(chunk) = resp.chunk().await? {
            h.update(&chunk);
            f.write_all(&chunk)?;
        }
        Ok::<_, DownloadError>((format!("sha256:{}", hex::encode(h.finalize())), modified))
    })?;
    if let Some(want) = checksum
        && want != digest
    {
        return Err(DownloadError::Checksum {
            want: want.to_owned(),
            got: digest,
        });
    }
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let mut mtime = modified.unwrap_or_else(|| jiff::Timestamp::now().as_second());
    if let Some(e) = epoch {
        mtime = mtime.min(e);
    }
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(mtime).unwrap_or(0));
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(t))?;
    Ok(name)
}

/// Removes the step directories (`<pid>-<id>`) of builds whose process is gone. Their
/// mounts lived in the helper's mount namespace and went with it.
fn remove_stale_steps(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `cache_from`: an image built by tug carries its steps' cache keys in its history
/// (`tug.cache.key`); each one whose record is missing is recorded again with the image's
/// layer. Only local images are read; other images have no keys and seed nothing.
fn seed_cache(store: &ImageStore, name: &str) -> Result<()> {
    let img = store.resolve(name).map_err(|e| {
        BuildError::Invalid(format!(
            "cache_from {name}: {e} (only local images are used)"
        ))
    })?;
    let raw = store.layout().read_blob(&img.id)?;
    let v: Value = serde_json::from_slice(&raw)
        .map_err(|e| BuildError::Invalid(format!("cache_from {name}: {e}")))?;
    let layers: Vec<LayerRef> = img
        .manifest
        .layers()
        .iter()
        .zip(img.diff_ids())
        .map(|(d, id)| LayerRef {
            digest: d.digest().to_string(),
            size: d.size(),
            media_type: d.media_type().to_string(),
            diff_id: id.clone(),
        })
        .collect();
    let mut i = 0;
    for h in v["history"].as_array().into_iter().flatten() {
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        let layer = if empty {
            None
        } else {
            i += 1;
            layers.get(i - 1).cloned()
        };
        if let Some(key) = h["tug.cache.key"].as_str()
            && cache::lookup(store, key).is_none()
        {
            let created = h["created"].as_str().unwrap_or_default().to_string();
            cache::save(store, key, &Record { layer, created })?;
        }
    }
    Ok(())
}

fn shell_words_raw(a: &Args) -> Vec<String> {
    match a {
        Args::Exec(v) => v.clone(),
        Args::Shell(s) => s.split_whitespace().map(str::to_string).collect(),
    }
}

/// Writes config and manifest of `state` and tags it.
fn commit(store: &ImageStore, state: &State, tags: &[String]) -> Result<image::Image> {
    let names: Vec<Reference> = tags
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<std::result::Result<_, _>>()?;
    let mut cfg = Map::new();
    cfg.insert("architecture".into(), json!(image::host_arch()));
    cfg.insert("os".into(), json!("linux"));
    cfg.insert("created".into(), json!(state.created));
    if let Some(a) = &state.author {
        cfg.insert("author".into(), json!(a));
    }
    cfg.insert("config".into(), Value::Object(state.config.clone()));
    cfg.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": state.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()}),
    );
    cfg.insert("history".into(), Value::Array(state.history.clone()));
    let bytes =
        serde_json::to_vec(&Value::Object(cfg)).map_err(|e| BuildError::Invalid(e.to_string()))?;
    let layers: Vec<image::StoredLayerRef> = state
        .layers
        .iter()
        .map(|l| image::StoredLayerRef {
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
            diff_id: l.diff_id.clone(),
        })
        .collect();
    Ok(store.commit_config(&bytes, &layers, &names)?)
}

impl Shared<'_> {
    /// Runs every needed stage on its own thread (a stage waits for the stages it reads
    /// from); each one's result goes to `results`.
    fn run_needed(&self, needed: &[bool]) {
        // Step numbers run on across the needed stages.
        let mut offsets = vec![0usize; self.stages.len()];
        let mut n = 0;
        for s in &self.stages {
            if needed[s.index] {
                offsets[s.index] = n;
                n += s.steps.len() + 1;
            }
        }
        std::thread::scope(|scope| {
            for s in self.stages.iter().filter(|s| needed[s.index]) {
                let offset = offsets[s.index];
                scope.spawn(move || {
                    let r = self.run_stage(s, offset).map(Arc::new);
                    let mut res = self
                        .results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    res.insert(s.index, r);
                    self.cv.notify_all();
                    drop(res);
                });
            }
        });
    }

    /// The time recorded for a step that runs now: `SOURCE_DATE_EPOCH` when given (then
    /// equal inputs give equal image digests), else now.
    fn created_now(&self) -> String {
        match source_date_epoch(self.opts).and_then(|e| jiff::Timestamp::from_second(e).ok()) {
            Some(t) => t.to_string(),
            None => now_rfc3339(),
        }
    }

    fn ev(&self, e: Event) {
        (self.events)(e);
    }

    /// Reports a step about to run (or taken from the cache, which is counted now).
    fn step_started(&self, label: &str, n: usize, inst: &Instruction, cached: bool) {
        self.ev(Event::Step {
            stage: label.to_string(),
            n,
            total: self.total,
            instruction: inst.original.clone(),
            cached,
        });
        if cached {
            self.count(true);
        }
    }

    /// Counts a step taken from the cache or built.
    fn count(&self, cached: bool) {
        let mut c = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
    }

    fn step_err(
        &self,
        stage: &Stage,
        inst: &Instruction,
        cause: StepError,
        output: Vec<String>,
    ) -> BuildError {
        BuildError::Step(Box::new(super::StepFailure {
            step: format!(
                "[{} {}]",
                stage
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("stage-{}", stage.index)),
                inst.keyword
            ),
            file: self.file.clone(),
            line: inst.line,
            instruction: inst.original.clone(),
            cause,
            output,
        }))
    }

    fn wait_for(&self, index: usize) -> Result<Arc<Done>> {
        let mut res = self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(r) = res.get(&index) {
                return match r {
                    Ok(d) => Ok(d.clone()),
                    // A dependency's failure is reported by the dependency itself.
                    Err(_) => Err(BuildError::DependencyFailed),
                };
            }
            res = self
                .cv
                .wait(res)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn stage_by_ref(&self, current: usize, name: &str) -> Option<usize> {
        let n = name.to_ascii_lowercase();
        self.stages
            .iter()
            .take(current)
            .find(|s| s.name.as_deref() == Some(n.as_str()))
            .map(|s| s.index)
            .or_else(|| n.parse::<usize>().ok().filter(|i| *i < current))
    }

    fn layer_dirs(&self, layers: &[LayerRef]) -> Result<Vec<PathBuf>> {
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            let d = self.store.layer_dir(&l.diff_id)?;
            if !d.exists() {
                self.store
                    .unpack_blob(&l.digest, &l.media_type, &l.diff_id)?;
            }
            out.push(d);
        }
        Ok(out)
    }

    fn run_stage(&self, stage: &Stage, offset: usize) -> Result<Done> {
        let mut n = offset + 1;
        let t0 = Instant::now();
        let label = stage
            .name
            .clone()
            .unwrap_or_else(|| stage.index.to_string());
        // FROM.
        let mut state = if let Some(dep) = self.stage_by_ref(stage.index, &stage.base) {
            self.ev(Event::Step {
                stage: label.clone(),
                n,
                total: self.total,
                instruction: stage.from.original.clone(),
                cached: true,
            });
            let d = self.wait_for(dep)?;
            let mut s = d.state.clone();
            s.args.clear();
            s.cmd_set = false;
            s
        } else {
            self.ev(Event::Step {
                stage: label.clone(),
                n,
                total: self.total,
                instruction: stage.from.original.clone(),
                cached: false,
            });
            self.base_image(stage)?
        };
        if let Some(p) = stage.from.flag("platform") {
            let lookup = |k: &str| self.global(k);
            let p = shell::word(p, &lookup, self.escape)
                .map_err(|e| self.step_err(stage, &stage.from, e.into(), Vec::new()))?;
            let host = format!("linux/{}", image::host_arch());
            if !p.is_empty() && p != host {
                return Err(self.step_err(
                    stage,
                    &stage.from,
                    StepError::Platform { platform: p, host },
                    Vec::new(),
                ));
            }
        }
        self.ev(Event::Done {
            n,
            secs: t0.elapsed().as_secs_f64(),
        });
        // ONBUILD triggers of the base image run first.
        let triggers: Vec<String> = state
            .config
            .get("OnBuild")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        // (also when the base is an earlier stage, as BuildKit does).
        if !triggers.is_empty() {
            state.config.remove("OnBuild");
            for t in triggers {
                let df = dockerfile::parse(&t).map_err(|source| {
                    self.step_err(
                        stage,
                        &stage.from,
                        StepError::TriggerSyntax {
                            trigger: t.clone(),
                            source,
                        },
                        Vec::new(),
                    )
                })?;
                for mut inst in df.instructions {
                    inst.line = stage.from.line;
                    if matches!(inst.keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                        return Err(self.step_err(
                            stage,
                            &inst,
                            StepError::Trigger(inst.keyword.clone()),
                            Vec::new(),
                        ));
                    }
                    self.step(stage, &mut state, &inst, n, &label)?;
                }
            }
        }
        for inst in &stage.steps {
            n += 1;
            self.step(stage, &mut state, inst, n, &label)?;
        }
        let dirs = self.layer_dirs(&state.layers)?;
        Ok(Done { state, dirs })
    }

    fn global(&self, k: &str) -> Option<String> {
        self.global_args
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.clone())
    }

    fn base_image(&self, stage: &Stage) -> Result<State> {
        if stage.base == "scratch" {
            let mut config = Map::new();
            config.insert("Env".into(), json!([format!("PATH={DEFAULT_PATH}")]));
            config.insert("WorkingDir".into(), json!("/"));
            return Ok(State {
                layers: Vec::new(),
                config,
                history: Vec::new(),
                key: cache::key(&["scratch"]),
                created: now_rfc3339(),
                author: None,
                args: Vec::new(),
                cmd_set: false,
            });
        }
        let err = |m: StepError| self.step_err(stage, &stage.from, m, Vec::new());
        let img = match (self.opts.pull, self.store.resolve(&stage.base)) {
            (false, Ok(i)) => i,
            (_, local) => match self.store.pull(&stage.base, &image::no_progress()) {
                Ok(i) => i,
                Err(e) => match local {
                    Ok(i) if self.opts.pull => {
                        let _ = e;
                        i
                    }
                    _ => {
                        return Err(err(StepError::BaseImage {
                            image: stage.base.clone(),
                            source: e,
                        }));
                    }
                },
            },
        };
        self.store.layer_dirs(&img).map_err(|e| err(e.into()))?;
        let raw = self.store.layout().read_blob(&img.id)?;
        let v: Value = serde_json::from_slice(&raw).map_err(|source| {
            err(StepError::BaseConfig {
                image: stage.base.clone(),
                source,
            })
        })?;
        let mut config = v
            .get("config")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        config.retain(|_, v| !v.is_null());
        let has_path = config
            .get("Env")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .any(|e| e.starts_with("PATH="))
            });
        let mut state = State {
            layers: img
                .manifest
                .layers()
                .iter()
                .zip(img.diff_ids())
                .map(|(d, id)| LayerRef {
                    digest: d.digest().to_string(),
                    size: d.size(),
                    media_type: d.media_type().to_string(),
                    diff_id: id.clone(),
                })
                .collect(),
            config,
            history: v
                .get("history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            key: cache::key(&["image", &img.id]),
            created: v
                .get("created")
                .and_then(Value::as_str)
                .map_or_else(now_rfc3339, str::to_string),
            author: v.get("author").and_then(Value::as_str).map(str::to_string),
            args: Vec::new(),
            cmd_set: false,
        };
        if !has_path {
            state.set_env("PATH", DEFAULT_PATH);
        }
        Ok(state)
    }

    /// Expands `s` with the stage's variables.
    fn expand(&self, state: &State, s: &str) -> std::result::Result<String, StepError> {
        let lookup = |k: &str| state.lookup(k);
        Ok(shell::word(s, &lookup, self.escape)?)
    }

    fn expand_words(&self, state: &State, s: &str) -> std::result::Result<Vec<String>, StepError> {
        let lookup = |k: &str| state.lookup(k);
        Ok(shell::words(s, &lookup, self.escape)?)
    }

    // Long: one arm per Dockerfile instruction; each arm is short and works on the same stage
    // state.
    fn step(
        &self,
        stage: &Stage,
        state: &mut State,
        inst: &Instruction,
        n: usize,
        label: &str,
    ) -> Result<()> {
        let t0 = Instant::now();
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let meta_event = |cached: bool| {
            self.ev(Event::Step {
                stage: label.to_string(),
                n,
                total: self.total,
                instruction: inst.original.clone(),
                cached,
            });
        };
        let created_by = format!("{} # buildkit", inst.original);
        let text = inst.args.text();
        match inst.keyword.as_str() {
            "ENV" => {
                meta_event(false);
                let pairs =
                    dockerfile::name_values(&text, self.escape, true).map_err(|source| {
                        e(StepError::Pairs {
                            keyword: "ENV",
                            source,
                        })
                    })?;
                // Every value is expanded with the environment before the instruction.
                let mut values = Vec::new();
                for (k, v) in pairs {
                    values.push((
                        k,
                        self.expand(state, v.as_deref().unwrap_or("")).map_err(e)?,
                    ));
                }
                for (k, v) in values {
                    state.set_env(&k, &v);
                }
                state.history(&created_by, true, None);
            }
            "ARG" => {
                meta_event(false);
                let pairs =
                    dockerfile::name_values(&text, self.escape, false).map_err(|source| {
                        e(StepError::Pairs {
                            keyword: "ARG",
                            source,
                        })
                    })?;
                for (k, v) in pairs {
                    self.used_args
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(k.clone());
                    let value = match self.opts.build_args.get(&k) {
                        Some(b) => Some(b.clone()),
                        None => match v {
                            Some(v) => Some(self.expand(state, &v).map_err(e)?),
                            // `ARG NAME` re-imports a global default or a predefined arg.
                            None => self.global(&k),
                        },
                    };
                    state.args.push((k, value));
                }
            }
            "LABEL" => {
                meta_event(false);
                let pairs =
                    dockerfile::name_values(&text, self.escape, true).map_err(|source| {
                        e(StepError::Pairs {
                            keyword: "LABEL",
                            source,
                        })
                    })?;
                let mut labels = state
                    .config
                    .get("Labels")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (k, v) in pairs {
                    let k = self.expand(state, &k).map_err(e)?;
                    let v = self.expand(state, v.as_deref().unwrap_or("")).map_err(e)?;
                    labels.insert(k, Value::String(v));
                }
                state.config.insert("Labels".into(), Value::Object(labels));
                state.history(&created_by, true, None);
            }
            "MAINTAINER" => {
                meta_event(false);
                state.author = Some(self.expand(state, &text).map_err(e)?);
                state.history(&created_by, true, None);
            }
            "EXPOSE" => {
                meta_event(false);
                let mut ports = state
                    .config
                    .get("ExposedPorts")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for w in self.expand_words(state, &text).map_err(e)? {
                    for p in expose_ports(&w).map_err(e)? {
                        ports.insert(p, json!({}));
                    }
                }
                state
                    .config
                    .insert("ExposedPorts".into(), Value::Object(ports));
                state.history(&created_by, true, None);
            }
            "VOLUME" => {
                meta_event(false);
                let list = match &inst.args {
                    Args::Exec(v) => v
                        .iter()
                        .map(|s| self.expand(state, s))
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(e)?,
                    Args::Shell(s) => self.expand_words(state, s).map_err(e)?,
                };
                if list.iter().any(String::is_empty) || list.is_empty() {
                    return Err(e(StepError::EmptyVolume));
                }
                let mut vols = state
                    .config
                    .get("Volumes")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for v in list {
                    vols.insert(v, json!({}));
                }
                state.config.insert("Volumes".into(), Value::Object(vols));
                state.history(&created_by, true, None);
            }
            "USER" => {
                meta_event(false);
                let u = self.expand(state, &text).map_err(e)?;
                if u.is_empty() {
                    return Err(e(StepError::NoArgument("USER")));
                }
                state.config.insert("User".into(), json!(u));
                state.history(&created_by, true, None);
            }
            "STOPSIGNAL" => {
                meta_event(false);
                let s = self.expand(state, &text).map_err(e)?;
                container::parse_signal(&s).map_err(|x| e(StepError::Signal(x)))?;
                state.config.insert("StopSignal".into(), json!(s));
                state.history(&created_by, true, None);
            }
            "SHELL" => {
                meta_event(false);
                let Args::Exec(v) = &inst.args else {
                    return Err(e(StepError::ShellNotJson));
                };
                if v.is_empty() {
                    return Err(e(StepError::ShellEmpty));
                }
                state.config.insert("Shell".into(), json!(v));
                state.history(&created_by, true, None);
            }
            "CMD" | "ENTRYPOINT" => {
                meta_event(false);
                let cmd = match &inst.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(s) if s.is_empty() && inst.keyword == "ENTRYPOINT" => Vec::new(),
                    Args::Shell(s) => {
                        let mut c = state.shell();
                        c.push(s.clone());
                        c
                    }
                };
                if inst.keyword == "CMD" {
                    state.config.insert("Cmd".into(), json!(cmd));
                    state.cmd_set = true;
                } else {
                    state.config.insert(
                        "Entrypoint".into(),
                        if cmd.is_empty() {
                            Value::Null
                        } else {
                            json!(cmd)
                        },
                    );
                    state.config.retain(|_, v| !v.is_null());
                    if !state.cmd_set {
                        state.config.remove("Cmd");
                    }
                }
                state.history(&created_by, true, None);
            }
            "HEALTHCHECK" => {
                meta_event(false);
                let hc = self.healthcheck(state, inst).map_err(e)?;
                state.config.insert("Healthcheck".into(), hc);
                state.history(&created_by, true, None);
            }
            "ONBUILD" => {
                meta_event(false);
                let t = text.trim();
                let kw = t
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                if matches!(kw.as_str(), "ONBUILD" | "FROM" | "MAINTAINER" | "") {
                    return Err(e(StepError::Trigger(kw)));
                }
                let mut list = state
                    .config
                    .get("OnBuild")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                list.push(json!(t));
                state.config.insert("OnBuild".into(), Value::Array(list));
                state.history(&created_by, true, None);
            }
            "WORKDIR" => {
                let w = self.expand(state, &text).map_err(e)?;
                if w.is_empty() {
                    return Err(e(StepError::NoArgument("WORKDIR")));
                }
                let abs = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", state.workdir())
                };
                let clean = format!("/{}", super::ignore::clean(&abs));
                state.config.insert("WorkingDir".into(), json!(clean));
                // The directory is made when missing (a layer with it), as BuildKit does.
                let dirs = self.layer_dirs(&state.layers)?;
                let view = View::open(&dirs).map_err(|x| e(x.into()))?;
                let comps = view.resolve(&clean, true).map_err(|x| e(x.into()))?;
                let exists = view.lstat(&comps).is_some();
                if exists {
                    meta_event(true);
                    state.history(&created_by, true, None);
                } else {
                    // Made directories belong to the current USER (as BuildKit makes them).
                    let passwd = view.read_text("/etc/passwd").unwrap_or_default();
                    let group = view.read_text("/etc/group").unwrap_or_default();
                    let owner = container::user::resolve(&state.user(), &[], &passwd, &group)
                        .map(|u| (u.uid, u.gid))
                        .map_err(|x| e(x.into()))?;
                    let key = cache::key(&[
                        &state.key,
                        "WORKDIR",
                        &clean,
                        &format!("{}:{}", owner.0, owner.1),
                    ]);
                    let req = super::copy::Request {
                        sources: Vec::new(),
                        inline: Vec::new(),
                        dest: format!("{clean}/"),
                        workdir: "/",
                        chown: Some(owner).filter(|o| *o != (0, 0)),
                        chmod: None,
                        add: false,
                        parents: false,
                        now: source_date_epoch(self.opts)
                            .unwrap_or_else(|| jiff::Timestamp::now().as_second()),
                    };
                    let items = super::copy::plan(&req, &[], &view).map_err(|x| e(x.into()))?;
                    self.fs_step(stage, state, inst, n, label, &key, &created_by, |out| {
                        super::copy::write(&items, &[], out)?;
                        Ok(())
                    })?;
                }
            }
            "COPY" | "ADD" => self.copy(stage, state, inst, n, label, &created_by)?,
            "RUN" => self.run(stage, state, inst, n, label, &created_by)?,
            "FROM" => unreachable_from(),
            other => return Err(e(StepError::Instruction(other.to_owned()))),
        }
        self.ev(Event::Done {
            n,
            secs: t0.elapsed().as_secs_f64(),
        });
        Ok(())
    }

    fn healthcheck(
        &self,
        state: &State,
        inst: &Instruction,
    ) -> std::result::Result<Value, StepError> {
        let text = inst.args.text();
        let t = text.trim();
        if t.eq_ignore_ascii_case("NONE") {
            if !inst.flags.is_empty() {
                return Err(StepError::HealthcheckNoneOptions);
            }
            return Ok(json!({"Test": ["NONE"]}));
        }
        let rest = match t.split_once(char::is_whitespace) {
            Some((c, r)) if c.eq_ignore_ascii_case("CMD") => r.trim(),
            _ => return Err(StepError::HealthcheckForm),
        };
        let test = if rest.starts_with('[') {
            match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(v);
                    t
                }
                Err(_) => vec!["CMD-SHELL".into(), rest.to_string()],
            }
        } else {
            vec!["CMD-SHELL".into(), rest.to_string()]
        };
        let mut hc = json!({"Test": test});
        for f in &inst.flags {
            let v = f.value.clone().unwrap_or_default();
            let v = self.expand(state, &v)?;
            let dur = |v: &str| -> std::result::Result<Value, StepError> {
                let d = container::config::parse_duration(v)?;
                Ok(json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
            };
            match f.name.as_str() {
                "interval" => hc["Interval"] = dur(&v)?,
                "timeout" => hc["Timeout"] = dur(&v)?,
                "start-period" => hc["StartPeriod"] = dur(&v)?,
                "start-interval" => hc["StartInterval"] = dur(&v)?,
                "retries" => {
                    hc["Retries"] = json!(
                        v.parse::<u64>()
                            .map_err(|_| StepError::Retries(v.clone()))?
                    );
                }
                o => return Err(StepError::HealthcheckFlag(o.to_owned())),
            }
        }
        Ok(hc)
    }

    /// Runs a filesystem step: cache lookup, else `produce` writes the layer's tar stream.
    fn fs_step(
        &self,
        stage: &Stage,
        state: &mut State,
        inst: &Instruction,
        n: usize,
        label: &str,
        key: &str,
        created_by: &str,
        produce: impl FnOnce(&mut TarOut<&mut dyn std::io::Write>) -> Result<()> + Send,
    ) -> Result<()> {
        if !self.opts.no_cache
            && let Some(rec) = cache::lookup(&self.store, key)
        {
            self.step_started(label, n, inst, true);
            return self.apply(state, rec, key, created_by);
        }
        self.step_started(label, n, inst, false);
        let layer = self
            .ingest(produce)
            .map_err(|x| self.step_err(stage, inst, x.into(), Vec::new()))?;
        let rec = Record {
            layer,
            created: self.created_now(),
        };
        cache::save(&self.store, key, &rec)?;
        self.count(false);
        self.apply(state, rec, key, created_by)
    }

    /// Streams a tar through the store's ingest; `None` when it has no entries.
    fn ingest(
        &self,
        produce: impl FnOnce(&mut TarOut<&mut dyn std::io::Write>) -> Result<()> + Send,
    ) -> Result<Option<LayerRef>> {
        let clamp = source_date_epoch(self.opts);
        let (r, w) = std::io::pipe().map_err(io_ctx("pipe"))?;
        std::thread::scope(|s| {
            let writer = s.spawn(move || -> Result<usize> {
                let mut w = w;
                let mut dynw: &mut dyn std::io::Write = &mut w;
                let mut out = TarOut::new(&mut dynw as &mut dyn std::io::Write, clamp);
                produce(&mut out)?;
                let count = out.count;
                out.finish().map_err(io_ctx("cannot write the layer"))?;
                Ok(count)
            });
            // Read everything first into a counting ingest.
            let stored = self.store.ingest_tar(r, "build step");
            let count = writer
                .join()
                .map_err(|_| BuildError::Invalid("layer writer panicked".into()))??;
            let stored = stored?;
            if count == 0 {
                return Ok(None);
            }
            Ok(Some(LayerRef {
                digest: stored.digest,
                size: stored.size,
                media_type: stored.media_type,
                diff_id: stored.diff_id,
            }))
        })
    }

    fn apply(&self, state: &mut State, rec: Record, key: &str, created_by: &str) -> Result<()> {
        state.key = key.to_string();
        state.created.clone_from(&rec.created);
        let empty = rec.layer.is_none();
        if let Some(l) = rec.layer {
            let d = self.store.layer_dir(&l.diff_id)?;
            if !d.exists() {
                self.store
                    .unpack_blob(&l.digest, &l.media_type, &l.diff_id)?;
            }
            state.layers.push(l);
        }
        state.history(created_by, empty, Some(key));
        Ok(())
    }

    fn resolve_chown(
        &self,
        state: &State,
        view: &View,
        spec: &str,
    ) -> std::result::Result<(u32, u32), StepError> {
        let spec = self.expand(state, spec)?;
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (spec.clone(), None),
        };
        let passwd = view.read_text("/etc/passwd").unwrap_or_default();
        let group = view.read_text("/etc/group").unwrap_or_default();
        let uid = match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => container::user::resolve(&u, &[], &passwd, &group)?.uid,
        };
        let gid = match &g {
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => container::user::resolve(&format!("0:{g}"), &[], &passwd, &group)?.gid,
            },
            // `--chown=user` takes the user's group; `--chown=1000` gid 1000.
            None => match u.parse::<u32>() {
                Ok(n) => n,
                Err(_) => container::user::resolve(&u, &[], &passwd, &group)?.gid,
            },
        };
        Ok((uid, gid))
    }

    /// `COPY` and `ADD`: the sources (context, stage, named context, image, URLs, here-documents),
    /// ownership and mode, the planned items and their content hash, the layer.
    fn copy(
        &self,
        stage: &Stage,
        state: &mut State,
        inst: &Instruction,
        n: usize,
        label: &str,
        created_by: &str,
    ) -> Result<()> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let add = inst.keyword == "ADD";
        for f in &inst.flags {
            match f.name.as_str() {
                "from" | "chown" | "chmod" | "link" | "parents" => {}
                "keep-git-dir" | "checksum" if add => {}
                "exclude" => {}
                o => return Err(e(StepError::Flag(o.to_owned()))),
            }
        }
        let mut words = match &inst.args {
            Args::Exec(v) => v
                .iter()
                .map(|s| self.expand(state, s))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(e)?,
            Args::Shell(s) => {
                // Heredoc markers are sources of their own.
                let mut out = Vec::new();
                for w in dockerfile::raw_words(s, self.escape) {
                    if w.starts_with("<<")
                        && inst.heredocs.iter().any(|h| {
                            w.trim_start_matches("<<")
                                .trim_start_matches('-')
                                .trim_matches(['"', '\''])
                                == h.name
                        })
                    {
                        out.push(w);
                    } else {
                        out.push(self.expand(state, &w).map_err(e)?);
                    }
                }
                out
            }
        };
        if words.len() < 2 {
            return Err(e(StepError::TooFewArguments(inst.keyword.clone())));
        }
        let dest = words.pop().unwrap_or_default();
        let dirs = self.layer_dirs(&state.layers)?;
        let view = View::open(&dirs).map_err(|x| e(x.into()))?;
        let src = self.copy_source(stage, state, inst)?;
        let src = &src;
        // `ADD URL`: downloaded by tug (over the host's network) into a directory of its own,
        // which is a source like any other (never unpacked).
        let (downloads, url_names, _dl_cleanup) = self.downloads(stage, inst, &words, add)?;
        let chown = match inst.flag("chown") {
            Some(c) => Some(self.resolve_chown(state, &view, c).map_err(e)?),
            None => None,
        };
        let chmod = match inst.flag("chmod") {
            Some(m) => {
                let m = self.expand(state, m).map_err(e)?;
                Some(
                    u32::from_str_radix(&m, 8)
                        .ok()
                        .filter(|v| *v <= 0o7777)
                        .ok_or_else(|| e(StepError::Chmod(m.clone())))?,
                )
            }
            None => None,
        };
        let mut inline = Vec::new();
        let mut sources = Vec::new();
        for w in words {
            if let Some(h) = inst.heredocs.iter().find(|h| {
                w.starts_with("<<")
                    && w.trim_start_matches("<<")
                        .trim_start_matches('-')
                        .trim_matches(['"', '\''])
                        == h.name
            }) {
                let body = if h.expand {
                    self.expand_heredoc(state, &h.body).map_err(e)?
                } else {
                    h.body.clone()
                };
                inline.push((h.name.clone(), body));
            } else {
                match url_names.get(&w) {
                    Some((i, name)) => sources.push((*i, name.clone())),
                    None => sources.push((0usize, w)),
                }
            }
        }
        let now =
            source_date_epoch(self.opts).unwrap_or_else(|| jiff::Timestamp::now().as_second());
        let req = super::copy::Request {
            sources,
            inline,
            dest: dest.clone(),
            workdir: &state.workdir(),
            chown,
            chmod,
            add,
            parents: inst.flag("parents").is_some_and(|v| v != "false"),
            now,
        };
        let mut all: Vec<&Source> = vec![src];
        all.extend(downloads.iter());
        let items = super::copy::plan(&req, &all, &view).map_err(|x| e(x.into()))?;
        let content = super::copy::hash(&items, &all).map_err(|x| e(x.into()))?;
        let key = cache::key(&[&state.key, &inst.keyword, &content]);
        self.fs_step(stage, state, inst, n, label, &key, created_by, |out| {
            super::copy::write(&items, &all, out)
        })
    }

    /// Where `COPY`/`ADD` reads from: `--from` (a stage, a named context or an image) or the
    /// context, with `--exclude` patterns added to its ignore rules.
    fn copy_source(&self, stage: &Stage, state: &State, inst: &Instruction) -> Result<Source> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let mut from_src: Option<Source> = None;
        if let Some(f) = inst.flag("from") {
            let f = self.expand(state, f).map_err(e)?;
            if let Some(i) = self.stage_by_ref(stage.index, &f) {
                let d = self.wait_for(i)?;
                from_src = Some(Source {
                    view: View::open(&d.dirs).map_err(|x| e(x.into()))?,
                    ignore: None,
                    reset_owner: false,
                    key: Some(d.state.key.clone()),
                    name: format!("stage {f}"),
                    remote: false,
                });
            } else if let Some(s) = self.named.get(&f) {
                from_src = Some(s.clone());
            } else {
                let img = self
                    .store
                    .resolve(&f)
                    .or_else(|_| self.store.pull(&f, &image::no_progress()))
                    .map_err(|source| {
                        e(StepError::FromImage {
                            from: f.clone(),
                            source,
                        })
                    })?;
                let dirs = self.store.layer_dirs(&img)?;
                from_src = Some(Source {
                    view: View::open(&dirs).map_err(|x| e(x.into()))?,
                    ignore: None,
                    reset_owner: false,
                    key: Some(cache::key(&["image", &img.id])),
                    name: format!("image {f}"),
                    remote: false,
                });
            }
        }
        let mut src: Source = from_src.unwrap_or_else(|| self.context.clone());
        // `--exclude=PATTERN`: more ignore patterns, for this copy only.
        let excludes = inst.flags_named("exclude");
        if !excludes.is_empty() {
            let mut text = src
                .ignore
                .as_ref()
                .map(|i| i.lines.join("\n"))
                .unwrap_or_default();
            for x in excludes {
                text.push('\n');
                text.push_str(&self.expand(state, x).map_err(e)?);
            }
            src.ignore =
                Some(super::ignore::Ignore::parse(&text).map_err(|x| e(StepError::Exclude(x)))?);
        }
        Ok(src)
    }

    /// `ADD URL`s among `words`: each downloaded into a directory of its own under the
    /// build's temporary directory (removed when the returned guard drops), as sources (from
    /// index 1; the context is 0) and the name each file got.
    #[allow(clippy::type_complexity)]
    fn downloads(
        &self,
        stage: &Stage,
        inst: &Instruction,
        words: &[String],
        add: bool,
    ) -> Result<(Vec<Source>, HashMap<String, (usize, String)>, Cleanup)> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let mut downloads: Vec<Source> = Vec::new();
        let dl_dir = self.root.join("build").join("tmp").join(format!(
            "{}-dl-{}",
            std::process::id(),
            &container::ContainerStore::new_id()[..12]
        ));
        let cleanup = Cleanup(dl_dir.clone());
        let mut url_names: HashMap<String, (usize, String)> = HashMap::new();
        for w in words {
            let remote = w.contains("://") || w.starts_with("git@");
            if !remote {
                continue;
            }
            if !add {
                return Err(e(StepError::CopyUrl(w.clone())));
            }
            if !(w.starts_with("http://") || w.starts_with("https://")) || w.ends_with(".git") {
                return Err(e(StepError::AddUrl(w.clone())));
            }
            let dir = dl_dir.join(downloads.len().to_string());
            let checksum = inst.flag("checksum").map(str::to_string);
            let name = download(w, &dir, checksum.as_deref(), source_date_epoch(self.opts))
                .map_err(|source| {
                    e(StepError::Download {
                        url: w.clone(),
                        source,
                    })
                })?;
            downloads.push(Source {
                view: View::open(std::slice::from_ref(&dir)).map_err(|x| e(x.into()))?,
                ignore: None,
                reset_owner: true,
                key: None,
                name: format!("download of {w}"),
                remote: true,
            });
            url_names.insert(w.clone(), (downloads.len(), name));
        }
        Ok((downloads, url_names, cleanup))
    }

    fn expand_heredoc(&self, state: &State, body: &str) -> std::result::Result<String, StepError> {
        // Only variables are expanded in a here-document (quotes stay).
        let mut out = String::new();
        for line in body.split_inclusive('\n') {
            let mut escaped = String::new();
            for c in line.chars() {
                if c == '"' || c == '\'' {
                    escaped.push(self.escape);
                }
                escaped.push(c);
            }
            out.push_str(&self.expand(state, &escaped)?);
        }
        Ok(out)
    }

    fn net(&self) -> Result<(NetworkMode, String, String)> {
        let mode = self
            .opts
            .network
            .clone()
            .unwrap_or_else(|| "default".into());
        match mode.as_str() {
            "none" => Ok((NetworkMode::None, String::new(), String::new())),
            "host" => Ok((
                NetworkMode::Host,
                std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
                std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            )),
            "default" | "bridge" | "" => {
                let mut g = self
                    .net
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if g.is_none() {
                    *g = Some(self.wire_slot()?);
                }
                let w = g
                    .as_ref()
                    .map(|w| (w.mode.clone(), w.hosts.clone(), w.resolv.clone()));
                w.ok_or_else(|| BuildError::Invalid("build network".into()))
            }
            o => Err(BuildError::Invalid(format!(
                "network {o:?} is not supported for builds (default, none or host)"
            ))),
        }
    }

    /// A `RUN` step: its command, flags and mounts, the cache, else a container on the
    /// stage's layers whose changes become the step's layer.
    fn run(
        &self,
        stage: &Stage,
        state: &mut State,
        inst: &Instruction,
        n: usize,
        label: &str,
        created_by: &str,
    ) -> Result<()> {
        let argv = self.run_command(state, inst);
        let network = self.run_network_flag(stage, state, inst)?;
        let step_id = container::ContainerStore::new_id();
        // Named after this process, so the next build removes what a killed one left.
        let dir = self.root.join("build").join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            &step_id[..16]
        ));
        let cleanup = Cleanup(dir.clone());
        for d in ["upper", "work", "rootfs", "empty", "secrets"] {
            std::fs::create_dir_all(dir.join(d))
                .map_err(io_ctx(format!("cannot create {}", dir.display())))?;
        }
        let mounts = self.run_mounts(stage, state, inst, &dir)?;
        let net_choice = network.clone().unwrap_or_else(|| "default".into());
        let env_list = self.run_env(state);
        let mut env_sorted = env_list.clone();
        env_sorted.sort();
        let key = cache::key(&[
            &state.key,
            "RUN",
            &serde_json::to_string(&argv).unwrap_or_default(),
            &env_sorted.join("\n"),
            &state.user(),
            &state.workdir(),
            &mounts.key.join("\n"),
            &net_choice,
            &self.opts.extra_hosts.join(","),
        ]);
        if !self.opts.no_cache
            && let Some(rec) = cache::lookup(&self.store, &key)
        {
            self.step_started(label, n, inst, true);
            drop(cleanup);
            return self.apply(state, rec, &key, created_by);
        }
        self.step_started(label, n, inst, false);
        // The container.
        let run = RunStep {
            id: &step_id,
            dir: &dir,
            argv,
            env: env_list,
            network,
            mounts,
        };
        let layer = self.run_container(stage, state, inst, n, run)?;
        let rec = Record {
            layer,
            created: self.created_now(),
        };
        cache::save(&self.store, &key, &rec)?;
        self.count(false);
        drop(cleanup);
        self.apply(state, rec, &key, created_by)
    }

    /// A `RUN` step's command: the exec form as written, or the shell form (with its
    /// here-documents) through the stage's `SHELL`.
    fn run_command(&self, state: &State, inst: &Instruction) -> Vec<String> {
        match &inst.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) => {
                let mut c = state.shell();
                let only_heredoc = !inst.heredocs.is_empty()
                    && dockerfile::raw_words(s, self.escape).len() == 1
                    && s.trim_start().starts_with("<<");
                let script = if only_heredoc {
                    inst.heredocs[0].body.clone()
                } else if inst.heredocs.is_empty() {
                    s.clone()
                } else {
                    let mut t = format!("{s}\n");
                    for h in &inst.heredocs {
                        t.push_str(&h.body);
                        t.push_str(&h.name);
                        t.push('\n');
                    }
                    t
                };
                if only_heredoc && script.starts_with("#!") {
                    // A script with its own interpreter.
                    vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        format!(
                            "cat > /.tug-heredoc <<'TUG_HEREDOC_EOF'\n{script}TUG_HEREDOC_EOF\nchmod +x /.tug-heredoc && /.tug-heredoc; r=$?; rm -f /.tug-heredoc; exit $r"
                        ),
                    ]
                } else {
                    c.push(script);
                    c
                }
            }
        }
    }

    /// A `RUN` step's flags other than `--mount`: its `--network` (the build's when not given);
    /// `--security` other than `sandbox` and unknown flags are refused.
    fn run_network_flag(
        &self,
        stage: &Stage,
        state: &State,
        inst: &Instruction,
    ) -> Result<Option<String>> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let mut network = self.opts.network.clone();
        for f in &inst.flags {
            match f.name.as_str() {
                "mount" => {}
                "network" => {
                    network = Some(
                        self.expand(state, f.value.as_deref().unwrap_or(""))
                            .map_err(e)?,
                    );
                }
                "security" => {
                    let v = f.value.as_deref().unwrap_or("");
                    if v != "sandbox" {
                        return Err(e(StepError::Security(v.to_owned())));
                    }
                }
                o => return Err(e(StepError::Flag(o.to_owned()))),
            }
        }
        Ok(network)
    }

    /// A `RUN` step's `--mount`s, each by its type.
    fn run_mounts(
        &self,
        stage: &Stage,
        state: &State,
        inst: &Instruction,
        dir: &Path,
    ) -> Result<RunMounts> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let mut out = RunMounts::default();
        for (mi, spec) in inst.flags_named("mount").into_iter().enumerate() {
            let spec = self.expand(state, spec).map_err(e)?;
            let m = parse_mount(&spec).map_err(e)?;
            let target = m
                .get("target")
                .or_else(|| m.get("dst"))
                .or_else(|| m.get("destination"))
                .cloned();
            let typ = m.get("type").map_or("bind", String::as_str);
            let abs = |t: &str| {
                if t.starts_with('/') {
                    t.to_string()
                } else {
                    format!("{}/{t}", state.workdir())
                }
            };
            match typ {
                "cache" => self.cache_mount(stage, inst, &mut out, &m, target, &abs)?,
                "tmpfs" => tmpfs_mount(&mut out, &m, target, &abs).map_err(e)?,
                "secret" => self.secret_mount(stage, inst, &mut out, &m, target, &abs, dir, mi)?,
                "bind" => self.bind_mount(stage, inst, &mut out, &m, target, &abs, dir, mi)?,
                "ssh" => return Err(e(StepError::SshMount)),
                o => return Err(e(StepError::MountType(o.to_owned()))),
            }
        }
        Ok(out)
    }

    /// `--mount=type=cache`: a directory of the state root kept between builds (by `id`),
    /// made with `mode`, `uid`, `gid`; `sharing=locked` holds its lock while the step runs.
    fn cache_mount(
        &self,
        stage: &Stage,
        inst: &Instruction,
        out: &mut RunMounts,
        m: &BTreeMap<String, String>,
        target: Option<String>,
        abs: &dyn Fn(&str) -> String,
    ) -> Result<()> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let target = abs(&target.ok_or_else(|| {
            e(StepError::MountNeeds {
                kind: "cache",
                key: "target",
            })
        })?);
        let id = m.get("id").cloned().unwrap_or_else(|| target.clone());
        let hex = &cache::key(&["cache-mount", &id])[7..23];
        let host = self
            .root
            .join("build")
            .join("mounts")
            .join(format!("cache-{hex}"));
        if !host.exists() {
            std::fs::create_dir_all(&host)
                .map_err(io_ctx(format!("cannot create {}", host.display())))?;
            let mode = m
                .get("mode")
                .and_then(|v| u32::from_str_radix(v, 8).ok())
                .unwrap_or(0o755);
            let uid = m.get("uid").and_then(|v| v.parse().ok()).unwrap_or(0);
            let gid = m.get("gid").and_then(|v| v.parse().ok()).unwrap_or(0);
            let _ = std::os::unix::fs::chown(&host, Some(uid), Some(gid));
            let _ =
                std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(mode));
        }
        if m.get("sharing").map(String::as_str) == Some("locked") {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(host.with_extension("lock"))
                .map_err(io_ctx("cache mount lock"))?;
            out.locks.push(
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                    .map_err(|(_, x)| e(StepError::CacheLock(x)))?,
            );
        }
        out.key.push(format!("cache:{id}:{target}"));
        out.mounts.push(Mount {
            kind: MountKind::Bind,
            source: host,
            target,
            read_only: m.contains_key("ro") || m.contains_key("readonly"),
            options: Vec::new(),
        });
        Ok(())
    }

    /// `--mount=type=secret`: the build's secret `id` as a read-only file (never in a layer);
    /// a missing one is an error when `required`.
    #[allow(clippy::too_many_arguments)]
    fn secret_mount(
        &self,
        stage: &Stage,
        inst: &Instruction,
        out: &mut RunMounts,
        m: &BTreeMap<String, String>,
        target: Option<String>,
        abs: &dyn Fn(&str) -> String,
        dir: &Path,
        mi: usize,
    ) -> Result<()> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let id = m
            .get("id")
            .cloned()
            .or_else(|| {
                target
                    .as_ref()
                    .and_then(|t| t.rsplit('/').next().map(str::to_string))
            })
            .ok_or_else(|| {
                e(StepError::MountNeeds {
                    kind: "secret",
                    key: "id",
                })
            })?;
        let target = abs(&target.unwrap_or_else(|| format!("/run/secrets/{id}")));
        let required = m.get("required").is_some_and(|v| v != "false");
        let content = match self.opts.secrets.get(&id) {
            Some(SecretSource::File(p)) => Some(std::fs::read(p).map_err(|error| {
                e(StepError::SecretFile {
                    id: id.clone(),
                    path: p.clone(),
                    error,
                })
            })?),
            Some(SecretSource::Env(v)) => Some(
                std::env::var(v)
                    .map_err(|_| {
                        e(StepError::SecretEnv {
                            id: id.clone(),
                            var: v.clone(),
                        })
                    })?
                    .into_bytes(),
            ),
            Some(SecretSource::Content(c)) => Some(c.clone()),
            None if required => {
                return Err(e(StepError::SecretMissing(id)));
            }
            None => None,
        };
        if let Some(c) = content {
            let p = dir.join("secrets").join(format!("s{mi}"));
            std::fs::write(&p, c).map_err(io_ctx("cannot write a secret"))?;
            let mode = m
                .get("mode")
                .and_then(|v| u32::from_str_radix(v, 8).ok())
                .unwrap_or(0o400);
            let uid = m.get("uid").and_then(|v| v.parse().ok()).unwrap_or(0);
            let gid = m.get("gid").and_then(|v| v.parse().ok()).unwrap_or(0);
            let _ = std::os::unix::fs::chown(&p, Some(uid), Some(gid));
            let _ =
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode));
            out.key.push(format!("secret:{id}:{target}"));
            out.mounts.push(Mount {
                kind: MountKind::Bind,
                source: p,
                target,
                read_only: true,
                options: Vec::new(),
            });
        }
        Ok(())
    }

    /// `--mount=type=bind`: a path of the context, a stage, a named context or an image,
    /// read-only (or `rw`: writable, the writes thrown away) through an overlay the helper
    /// mounts; the context's content enters the cache key through its hash.
    #[allow(clippy::too_many_arguments)]
    fn bind_mount(
        &self,
        stage: &Stage,
        inst: &Instruction,
        out: &mut RunMounts,
        m: &BTreeMap<String, String>,
        target: Option<String>,
        abs: &dyn Fn(&str) -> String,
        dir: &Path,
        mi: usize,
    ) -> Result<()> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let target = abs(&target.ok_or_else(|| {
            e(StepError::MountNeeds {
                kind: "bind",
                key: "target",
            })
        })?);
        // `rw`: writable, and what is written is thrown away (an overlay with a
        // scratch upper directory).
        let rw = m.get("rw").is_some_and(|v| v != "false")
            || m.get("readwrite").is_some_and(|v| v != "false");
        let source = m
            .get("source")
            .or_else(|| m.get("src"))
            .cloned()
            .unwrap_or_default();
        let (src_dirs, src_key, src_name) = self.bind_source(stage, inst, m.get("from"))?;
        let v = View::open(&src_dirs).map_err(|x| e(x.into()))?;
        let comps = v.resolve(&source, true).map_err(|error| {
            e(StepError::MountSource {
                path: source.clone(),
                error,
            })
        })?;
        if v.lstat(&comps).is_none() {
            return Err(e(StepError::MountSourceMissing {
                path: source,
                from: src_name,
            }));
        }
        let mnt = dir.join(format!("from-{mi}"));
        std::fs::create_dir_all(&mnt).map_err(io_ctx("mount point"))?;
        if rw {
            let (u, w) = (
                dir.join(format!("rw-{mi}-upper")),
                dir.join(format!("rw-{mi}-work")),
            );
            std::fs::create_dir_all(&u).map_err(io_ctx("mount scratch"))?;
            std::fs::create_dir_all(&w).map_err(io_ctx("mount scratch"))?;
            out.rw_overlays.push((src_dirs, mnt.clone(), u, w));
        } else {
            out.overlays.push((src_dirs, mnt.clone()));
        }
        let mut host = mnt;
        for c in &comps {
            host.push(c);
        }
        // The spec wants the source to exist now; the helper mounts the
        // overlay over `mnt` before the container starts, hiding this stub.
        let is_dir = v
            .lstat(&comps)
            .is_some_and(|x| x.kind == super::view::Kind::Dir);
        let stub = if is_dir {
            host.clone()
        } else {
            host.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        std::fs::create_dir_all(&stub).map_err(io_ctx("mount point"))?;
        if !is_dir {
            std::fs::write(&host, b"").map_err(io_ctx("mount point"))?;
        }
        // The context's content is part of the key only through its hash.
        let content_key = if src_key == "context" {
            self.context_hash(&v, &comps)?
        } else {
            src_key
        };
        out.key.push(format!(
            "bind:{content_key}:{}:{target}:{rw}",
            comps.join("/")
        ));
        out.mounts.push(Mount {
            kind: MountKind::Bind,
            source: host,
            target,
            read_only: !rw,
            options: Vec::new(),
        });
        Ok(())
    }

    /// Where a bind mount's `from=` points: an earlier stage, a named context or an image (the
    /// build context without one), as (layer directories, cache key part, name for errors).
    fn bind_source(
        &self,
        stage: &Stage,
        inst: &Instruction,
        from: Option<&String>,
    ) -> Result<(Vec<PathBuf>, String, String)> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        Ok(match from {
            Some(f) => match self.stage_by_ref(stage.index, f) {
                Some(i) => {
                    let d = self.wait_for(i)?;
                    (d.dirs.clone(), d.state.key.clone(), format!("stage {f}"))
                }
                None => match self.named.get(f) {
                    Some(s) => (
                        s.view.dirs().to_vec(),
                        format!("context:{f}"),
                        format!("context {f}"),
                    ),
                    None => {
                        let img = self.store.resolve(f).map_err(|source| {
                            e(StepError::MountFrom {
                                from: f.clone(),
                                source,
                            })
                        })?;
                        (
                            self.store.layer_dirs(&img)?,
                            cache::key(&["image", &img.id]),
                            format!("image {f}"),
                        )
                    }
                },
            },
            None => (
                self.context.view.dirs().to_vec(),
                "context".to_string(),
                "context".to_string(),
            ),
        })
    }

    /// The hash of what `comps` (a file or a directory tree) holds in the build context.
    fn context_hash(&self, v: &View, comps: &[String]) -> Result<String> {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let src = &self.context;
        if v.lstat(comps)
            .is_some_and(|x| x.kind == super::view::Kind::File)
        {
            src.hash_file(comps, &mut h)?;
        } else {
            for rel in src.walk(comps) {
                let mut full = comps.to_vec();
                full.extend(rel.iter().cloned());
                sha2::Digest::update(&mut h, full.join("/").as_bytes());
                if src
                    .view
                    .lstat(&full)
                    .is_some_and(|x| x.kind == super::view::Kind::File)
                {
                    src.hash_file(&full, &mut h)?;
                }
            }
        }
        Ok(hex::encode(sha2::Digest::finalize(h)))
    }

    /// A `RUN` step's network: the build's (a namespace on the default `bridge` network,
    /// wired once per build), or its own `--network` (`none`, `host`); its `hosts`,
    /// `hostname` and `resolv.conf` written into `dir` for the container.
    fn run_network_files(
        &self,
        stage: &Stage,
        inst: &Instruction,
        network: Option<&str>,
        dir: &Path,
        hostname: &str,
    ) -> Result<NetworkMode> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let (mode, hosts, resolv) = {
            let saved = self.opts.network.clone();
            if network != saved.as_deref() {
                // A step's own --network.
                match network.unwrap_or("default") {
                    "none" => (NetworkMode::None, String::new(), String::new()),
                    "host" => (
                        NetworkMode::Host,
                        std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
                        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                    ),
                    "default" => self.net()?,
                    o => {
                        return Err(e(StepError::Network(o.to_owned())));
                    }
                }
            } else {
                self.net()?
            }
        };
        let mut hosts = if hosts.is_empty() {
            container::default_hosts(hostname)
        } else {
            hosts
        };
        for h in &self.opts.extra_hosts {
            if let Some((name, ip)) = h.split_once([':', '=']) {
                hosts.push_str(&format!("{ip}\t{name}\n"));
            }
        }
        let resolv = if resolv.is_empty() {
            container::default_resolv_conf()
        } else {
            resolv
        };
        std::fs::write(dir.join("hosts"), hosts).map_err(io_ctx("hosts"))?;
        std::fs::write(dir.join("hostname"), format!("{hostname}\n"))
            .map_err(io_ctx("hostname"))?;
        std::fs::write(dir.join("resolv.conf"), resolv).map_err(io_ctx("resolv.conf"))?;
        Ok(mode)
    }

    /// A `RUN` step's environment: `ENV`, then build args (not overriding `ENV`) and the proxy
    /// args, `PATH` by default; as `K=V`.
    fn run_env(&self, state: &State) -> Vec<String> {
        let mut env: Vec<(String, String)> = state.env();
        for (k, v) in &state.args {
            if let Some(v) = v
                && !env.iter().any(|(n, _)| n == k)
            {
                env.push((k.clone(), v.clone()));
            }
        }
        for p in PROXY_ARGS {
            if let Some(v) = self.opts.build_args.get(*p)
                && !env.iter().any(|(n, _)| n == p)
            {
                env.push(((*p).to_string(), v.clone()));
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The container of a `RUN` step (not cached): its user, network, files and spec, the
    /// helper that runs it, and its changes as a layer (`None` when it changed nothing).
    fn run_container(
        &self,
        stage: &Stage,
        state: &State,
        inst: &Instruction,
        n: usize,
        run: RunStep<'_>,
    ) -> Result<Option<LayerRef>> {
        let e = |m: StepError| self.step_err(stage, inst, m, Vec::new());
        let RunStep {
            id: step_id,
            dir,
            argv,
            env: env_list,
            network,
            mounts,
        } = run;
        let dirs = self.layer_dirs(&state.layers)?;
        let view = View::open(&dirs).map_err(|x| e(x.into()))?;
        let passwd = view.read_text("/etc/passwd").unwrap_or_default();
        let group = view.read_text("/etc/group").unwrap_or_default();
        let user = container::user::resolve_for_build(&state.user(), &passwd, &group)
            .map_err(|x| e(x.into()))?;
        let hostname = "buildkitsandbox".to_string();
        let mode = self.run_network_files(stage, inst, network.as_deref(), dir, &hostname)?;
        let cfg = ContainerConfig {
            command: Some(argv.clone()),
            entrypoint: Some(Vec::new()),
            env: env_list,
            working_dir: Some(state.workdir()),
            hostname: Some(hostname),
            network: mode,
            mounts: mounts.mounts,
            resources: container::Resources {
                shm_size: self.opts.shm_size,
                ..Default::default()
            },
            ..ContainerConfig::default()
        };
        let spec = container::spec::build(&container::spec::SpecInput {
            id: step_id,
            config: &cfg,
            image: None,
            user: &user,
            state_dir: dir,
            joined_netns: None,
        })
        .map_err(|x| e(x.into()))?;
        // Mount points that are not in the image must not end up in the layer.
        let mut stubs: Vec<Vec<String>> = Vec::new();
        for m in spec.mounts().iter().flatten() {
            let d = m.destination().to_string_lossy().into_owned();
            let comps = super::view::split(&d);
            for i in 1..=comps.len() {
                let c = comps[..i].to_vec();
                if view.lstat(&c).is_none() && !stubs.contains(&c) {
                    stubs.push(c);
                }
            }
        }
        // The working directory is created when missing (and kept, as Docker does).
        let wd = view
            .resolve(&state.workdir(), true)
            .map_err(|x| e(x.into()))?;
        if view.lstat(&wd).is_none() {
            let mut p = dir.join("upper");
            for c in &wd {
                p.push(c);
            }
            std::fs::create_dir_all(&p).map_err(io_ctx("working directory"))?;
        }
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec(&spec).unwrap_or_default(),
        )
        .map_err(io_ctx("config.json"))?;
        let req = super::run::Request {
            layers: dirs.clone(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            rootfs: dir.join("rootfs"),
            empty: dir.join("empty"),
            spec: dir.join("config.json"),
            id: step_id.to_owned(),
            overlays: mounts.overlays,
            rw_overlays: mounts.rw_overlays,
        };
        std::fs::write(
            dir.join("run.json"),
            serde_json::to_vec(&req).unwrap_or_default(),
        )
        .map_err(io_ctx("run.json"))?;
        let (code, output) = self.spawn_run(&dir.join("run.json"), n).map_err(&e)?;
        drop(mounts.locks);
        if code != 0 {
            let tail: Vec<String> = output.iter().rev().take(20).rev().cloned().collect();
            return Err(self.step_err(stage, inst, StepError::Exit(code), tail));
        }
        // Remove mount point stubs (deepest first) when they are empty. The upper directory
        // is the container's: resolved beneath it, following no symlink it made.
        stubs.sort_by_key(|c| std::cmp::Reverse(c.len()));
        for c in &stubs {
            super::layer::remove_empty_beneath(&dir.join("upper"), c);
        }
        let upper = dir.join("upper");
        self.ingest(|out| {
            super::layer::upper_to_tar(&upper, out)
                .map_err(io_ctx("cannot read the step's changes"))?;
            Ok(())
        })
        .map_err(|x| e(x.into()))
    }

    /// A network namespace on the default `bridge` network for the RUN steps of this build,
    /// wired at the first step that needs it and released when the build ends: a build
    /// leaves no namespace or link behind on the host (the `bridge` network stays, as
    /// docker0 does). Wiring costs milliseconds; a fully cached build wires nothing.
    fn wire_slot(&self) -> Result<NetWiring> {
        let nets = crate::engine::network::Networks::open(&self.root)
            .map_err(|x| BuildError::Invalid(format!("build network: {x}")))?
            .with_helper_exe(&self.exe);
        let id = container::ContainerStore::new_id();
        let mut cfg = ContainerConfig {
            name: id.clone(),
            hostname: Some("buildkitsandbox".into()),
            ..ContainerConfig::default()
        };
        let guard =
            container::net::wire(&nets, &id, &mut cfg, &container::net::NetRequest::default())
                .map_err(|x| BuildError::Invalid(format!("build network: {x}")))?;
        Ok(NetWiring {
            guard,
            mode: cfg.network.clone(),
            hosts: cfg.etc_hosts.clone().unwrap_or_default(),
            resolv: cfg.resolv_conf.clone().unwrap_or_default(),
        })
    }

    fn spawn_run(
        &self,
        request: &Path,
        n: usize,
    ) -> std::result::Result<(i32, Vec<String>), StepError> {
        let (r, w) = std::io::pipe()?;
        let w2 = w.try_clone()?;
        let mut child = std::process::Command::new(&self.exe)
            .arg(crate::engine::helpers::BUILD_RUN)
            .arg(request)
            .stdin(std::process::Stdio::null())
            .stdout(w)
            .stderr(w2)
            .spawn()
            .map_err(|error| StepError::Spawn {
                exe: self.exe.clone(),
                error,
            })?;
        let mut lines = Vec::new();
        let mut reader = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let l = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    self.ev(Event::Output { n, line: l.clone() });
                    lines.push(l);
                    if lines.len() > 2000 {
                        lines.drain(..1000);
                    }
                }
            }
        }
        let status = child.wait()?;
        let code = status
            .code()
            .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
        Ok((code, lines))
    }
}

/// `--mount=type=tmpfs` (with `size`).
fn tmpfs_mount(
    out: &mut RunMounts,
    m: &BTreeMap<String, String>,
    target: Option<String>,
    abs: &dyn Fn(&str) -> String,
) -> std::result::Result<(), StepError> {
    let e = |x: StepError| x;
    let target = abs(&target.ok_or_else(|| {
        e(StepError::MountNeeds {
            kind: "tmpfs",
            key: "target",
        })
    })?);
    let mut options = Vec::new();
    if let Some(s) = m.get("size") {
        options.push(format!("size={s}"));
    }
    out.key.push(format!("tmpfs:{target}"));
    out.mounts.push(Mount {
        kind: MountKind::Tmpfs,
        source: PathBuf::new(),
        target,
        read_only: false,
        options,
    });
    Ok(())
}

/// A `RUN` step that is not cached, ready for its container: the step's id and directory,
/// its command, environment (`K=V`), `--network` and mounts.
struct RunStep<'a> {
    id: &'a str,
    dir: &'a Path,
    argv: Vec<String>,
    env: Vec<String>,
    network: Option<String>,
    mounts: RunMounts,
}

/// What a `RUN` step's `--mount`s add: the container's mounts, the overlays its helper
/// mounts first (read-only, and writable ones whose writes are thrown away), their part of
/// the cache key, and the cache locks held while it runs.
#[derive(Default)]
struct RunMounts {
    mounts: Vec<Mount>,
    overlays: Vec<(Vec<PathBuf>, PathBuf)>,
    rw_overlays: Vec<(Vec<PathBuf>, PathBuf, PathBuf, PathBuf)>,
    key: Vec<String>,
    locks: Vec<nix::fcntl::Flock<std::fs::File>>,
}

fn unreachable_from() {}

/// Removes a step's temporary directory.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `type=cache,target=/x,ro` → map.
fn parse_mount(spec: &str) -> std::result::Result<BTreeMap<String, String>, StepError> {
    let mut m = BTreeMap::new();
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((k, v)) => m.insert(k.to_ascii_lowercase(), v.to_string()),
            None => m.insert(part.to_ascii_lowercase(), String::new()),
        };
    }
    if m.is_empty() {
        return Err(StepError::EmptyMount);
    }
    Ok(m)
}

/// `80`, `80/udp`, `8000-8002/tcp` → the port keys.
fn expose_ports(w: &str) -> std::result::Result<Vec<String>, StepError> {
    let (range, proto) = match w.split_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(StepError::ExposeProtocol {
            protocol: proto,
            word: w.to_owned(),
        });
    }
    let (a, b) = match range.split_once('-') {
        Some((a, b)) => (a, b),
        None => (range, range),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| StepError::ExposePort(w.to_owned()))
    };
    let (a, b) = (port(a)?, port(b)?);
    if b < a {
        return Err(StepError::ExposeRange(w.to_owned()));
    }
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_expose_and_mount_parsing() {
        assert_eq!(expose_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expose_ports("8000-8002").unwrap().len(), 3);
        assert!(expose_ports("x").is_err());
        assert!(expose_ports("80/foo").is_err());
        let m = parse_mount("type=cache,target=/c,ro").unwrap();
        assert_eq!(m["type"], "cache");
        assert_eq!(m["ro"], "");
    }
}
