//! The loader: runs the numbered phases (see [`super`]) in order, one function each, and
//! returns a [`Project`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::canonical::{canonicalize, locate};
use super::checks::check;
use super::dotenv;
use super::error::{ProjectError, Result};
use super::extends::{apply_extends, read_tree};
use super::find::{absolute, find_files};
use super::include::apply_includes;
use super::interpolate::{Environment, Lookup, Source};
use super::merge::{merge_files, strip_tags};
use super::model::Project;
use super::normalize::{
    apply_defaults, apply_env_files, check_name, normalize_name, resolve_paths,
};
use super::profiles::{Enablement, select};
use super::validate::{render_path, validate};
use super::yaml::{Node, Spans};

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Directory the command runs in (files are searched from here; `-f` paths are relative
    /// to it). Default: the current directory.
    pub cwd: Option<PathBuf>,
    /// `-f` files, in order (empty: search the default file and its override).
    pub files: Vec<PathBuf>,
    /// `-p`.
    pub project_name: Option<String>,
    /// `--project-directory` (default: the first file's directory).
    pub project_directory: Option<PathBuf>,
    /// `--profile` (COMPOSE_PROFILES from the environment or `.env` is added when empty).
    pub profiles: Vec<String>,
    /// `--env-file` (default: `.env` in the project directory).
    pub env_files: Vec<PathBuf>,
    /// Services named on the command line: they are enabled whatever their profiles.
    pub services: Vec<String>,
    /// Interpolate variables (`--no-interpolate` turns it off).
    pub interpolate: bool,
    /// Apply compose's defaults: default network, resource names, implicit dependencies,
    /// default Dockerfile (`--no-normalize` turns it off; paths and env files are always
    /// resolved, as compose does).
    pub normalize: bool,
    /// The shell environment (default: the process environment).
    pub environment: Option<BTreeMap<String, String>>,
    /// Make relative paths absolute (`--no-path-resolution` turns it off; env files are
    /// still read from the project directory).
    pub resolve_paths: bool,
    /// Run the consistency checks (`--no-consistency` turns them off).
    pub consistency: bool,
    /// Keep networks, volumes, secrets and configs no service uses (`--all-resources`).
    pub all_resources: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            cwd: None,
            files: Vec::new(),
            project_name: None,
            project_directory: None,
            profiles: Vec::new(),
            env_files: Vec::new(),
            services: Vec::new(),
            interpolate: true,
            normalize: true,
            environment: None,
            resolve_paths: true,
            consistency: true,
            all_resources: false,
        }
    }
}

/// A loaded project with what `tug config --explain` needs to tell how it was built.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The project.
    pub project: Project,
    /// Every variable reference, in file order.
    pub lookups: Vec<Lookup>,
    /// Why each service (enabled or not) is in the state it is, in file order.
    pub enablement: Vec<Enablement>,
    /// Warnings (obsolete `version:`, unset variables, ...).
    pub warnings: Vec<String>,
    /// The interpolation environment.
    pub environment: Environment,
}

/// Loads a project.
///
/// # Errors
/// Any phase's error: each names the file, line, column and key path when it is about the
/// content of a file.
pub fn load(opts: &LoadOptions) -> Result<Project> {
    load_explained(opts).map(|l| l.project)
}

/// Loads a project and keeps the explanations (variable sources, service enablement).
///
/// The phases, in the order they run (the module docs of [`super`] number them the same):
/// 1 find the files, 2 the interpolation environment, 3 parse, 4 the project name,
/// 5 per file interpolate, include, extends and merge, 6 extends across files, 7 validate,
/// 8 canonical forms, 9 the typed model, 10 profiles, 11 normalize, 12 checks.
///
/// # Errors
/// As [`load`].
pub fn load_explained(opts: &LoadOptions) -> Result<Loaded> {
    let cwd = match &opts.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().map_err(|source| ProjectError::Io {
            path: PathBuf::from("."),
            source,
        })?,
    };
    let (files, project_dir) = locate_files(opts, &cwd)?;
    let (mut shell_env, mut env) = environment(opts, &cwd, &project_dir)?;
    // Phase 3: parse every file.
    let mut lookups = Vec::new();
    let mut trees = Vec::new();
    for f in &files {
        trees.push(read_tree(f, None, &mut lookups)?);
    }
    let name = project_name(opts, &trees, &env, &project_dir)?;
    env.set_default("COMPOSE_PROJECT_NAME", &name, Source::Shell);
    shell_env.set_default("COMPOSE_PROJECT_NAME", &name, Source::Shell);
    let tree = combine(opts, &cwd, &files, trees, &env, &shell_env, &mut lookups)?;
    let mut spans = Spans::new();
    let mut doc = tree.to_json("", &mut spans);
    let mut warnings = validate_document(&mut doc, &spans, &lookups)?;
    // Phase 8: short forms to long forms.
    for (path, message) in canonicalize(&mut doc, &spans)? {
        let at = locate(&spans, &path)
            .map(|p| format!("{p}: "))
            .unwrap_or_default();
        warnings.push(format!("{at}{path}: {message}"));
    }
    // Phase 9: the typed model.
    let mut project: Project = match <Project as serde::Deserialize>::deserialize(&doc) {
        Ok(p) => p,
        Err(e) => return Err(type_error(&doc, &spans, &e.to_string())),
    };
    for (name, s) in &mut project.services {
        s.name.clone_from(name);
    }
    project.name = name;
    project.working_dir = project_dir.clone();
    project.compose_files = files.clone();
    project.environment = env.to_map();
    let enablement = apply_profiles(&mut project, opts, &env)?;
    // Phase 11.
    resolve_paths(&mut project, &project_dir, &env, opts.resolve_paths);
    apply_env_files(&mut project, &env)?;
    if opts.normalize {
        apply_defaults(&mut project, opts.all_resources);
    }
    // Phase 12.
    if opts.consistency {
        check(&project, &spans)?;
    }
    Ok(Loaded {
        project,
        lookups,
        enablement,
        warnings,
        environment: env,
    })
}

/// Phase 1: the compose files and the project directory. Without `-f`, `COMPOSE_FILE` comes
/// from the shell or from the `.env` of the working directory (or `--project-directory`);
/// without either, the default files are searched for.
fn locate_files(opts: &LoadOptions, cwd: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    let mut explicit_files = opts.files.clone();
    if explicit_files.is_empty() {
        let base = opts
            .project_directory
            .as_ref()
            .map_or_else(|| cwd.to_path_buf(), |d| absolute(cwd, d));
        let from_shell = match &opts.environment {
            Some(e) => e.get("COMPOSE_FILE").cloned(),
            None => std::env::var("COMPOSE_FILE").ok(),
        };
        let from_dotenv = || {
            let p = base.join(".env");
            if !p.is_file() {
                return None;
            }
            dotenv::read(&p, &Environment::new(), false)
                .ok()?
                .into_iter()
                .find(|e| e.key == "COMPOSE_FILE")
                .and_then(|e| e.value)
        };
        if let Some(cf) = from_shell.filter(|s| !s.is_empty()).or_else(from_dotenv) {
            let sep = match &opts.environment {
                Some(e) => e.get("COMPOSE_PATH_SEPARATOR").cloned(),
                None => std::env::var("COMPOSE_PATH_SEPARATOR").ok(),
            }
            .unwrap_or_else(|| ":".to_owned());
            explicit_files = cf
                .split(sep.as_str())
                .filter(|s| !s.is_empty())
                .map(|s| absolute(&base, Path::new(s)))
                .collect();
        }
    }
    let files = find_files(cwd, &explicit_files)?;
    let first_dir = files
        .iter()
        .find(|f| f.as_os_str() != "-")
        .and_then(|f| f.parent())
        .map_or_else(|| cwd.to_path_buf(), Path::to_path_buf);
    let project_dir = match &opts.project_directory {
        Some(d) => absolute(cwd, d),
        None => first_dir,
    };
    Ok((files, project_dir))
}

/// Phase 2: the shell's environment (for `include`s) and the interpolation environment
/// (the env files, then the shell over them).
fn environment(
    opts: &LoadOptions,
    cwd: &Path,
    project_dir: &Path,
) -> Result<(Environment, Environment)> {
    let mut shell: BTreeMap<String, String> = match &opts.environment {
        Some(e) => e.clone(),
        None => std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    };
    // As docker compose: `PWD` is the working directory when the shell did not export it.
    shell
        .entry("PWD".to_owned())
        .or_insert_with(|| cwd.to_string_lossy().into_owned());
    let mut shell_env = Environment::new();
    for (k, v) in &shell {
        shell_env.set(k.clone(), v.clone(), Source::Shell);
    }
    let mut env = Environment::new();
    let env_paths: Vec<PathBuf> = if opts.env_files.is_empty() {
        let d = project_dir.join(".env");
        // A `.env` directory (a Python virtualenv) is not an env file; anything else is
        // read, and refused when it is not a regular file.
        if std::fs::metadata(&d).is_ok_and(|m| !m.is_dir()) {
            vec![d]
        } else {
            Vec::new()
        }
    } else {
        opts.env_files.iter().map(|p| absolute(cwd, p)).collect()
    };
    for p in &env_paths {
        if !p.exists() {
            return Err(ProjectError::Io {
                path: p.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "env file not found"),
            });
        }
        let mut lookup = env.clone();
        for (k, v) in &shell {
            lookup.set(k.clone(), v.clone(), Source::Shell);
        }
        for e in dotenv::read(p, &lookup, false)? {
            if let Some(v) = e.value {
                env.set(
                    e.key,
                    v,
                    Source::EnvFile {
                        path: p.clone(),
                        line: e.line,
                    },
                );
            }
        }
    }
    for (k, v) in &shell {
        env.set(k.clone(), v.clone(), Source::Shell);
    }
    Ok((shell_env, env))
}

/// Phase 4: the project name, known before interpolation (files may use
/// `${COMPOSE_PROJECT_NAME}`): `-p`, `COMPOSE_PROJECT_NAME`, `name:` (interpolated on its
/// own), the directory.
fn project_name(
    opts: &LoadOptions,
    trees: &[Node],
    env: &Environment,
    project_dir: &Path,
) -> Result<String> {
    let explicit = opts
        .project_name
        .clone()
        .or_else(|| env.get("COMPOSE_PROJECT_NAME").map(str::to_owned))
        .filter(|n| !n.is_empty());
    let declared = trees
        .iter()
        .rev()
        .find_map(|t| t.get("name").cloned())
        .and_then(|n| n.as_str().map(str::to_owned).map(|s| (s, n)));
    let name = match (explicit, declared) {
        (Some(n), _) => n,
        (None, Some((raw, node))) => {
            let v = if opts.interpolate {
                super::interpolate::interpolate_with(&raw, env).map_err(|e| {
                    ProjectError::invalid(Some(node.pos.clone()), "name", e.to_string())
                })?
            } else {
                raw
            };
            if v.is_empty() {
                dir_name(project_dir)?
            } else {
                normalize_name(&v)
            }
        }
        (None, None) => dir_name(project_dir)?,
    };
    check_name(&name)?;
    Ok(name)
}

/// Phases 5 and 6: each file interpolated, its `include`s and its own `extends` resolved,
/// merged onto the files before it; then the `extends` whose base is in another file.
fn combine(
    opts: &LoadOptions,
    cwd: &Path,
    files: &[PathBuf],
    trees: Vec<Node>,
    env: &Environment,
    shell_env: &Environment,
    lookups: &mut Vec<Lookup>,
) -> Result<Node> {
    let env_ref = opts.interpolate.then_some(env);
    let mut tree: Option<Node> = None;
    for (f, mut t) in files.iter().zip(trees) {
        if let Some(e) = env_ref {
            super::interpolate::interpolate_tree(&mut t, e, lookups)?;
        }
        let dir = if f.as_os_str() == "-" {
            cwd.to_path_buf()
        } else {
            f.parent()
                .map_or_else(|| cwd.to_path_buf(), Path::to_path_buf)
        };
        apply_includes(&mut t, &dir, shell_env, opts.interpolate, lookups, 0)?;
        // extends inside the file first (so that a later file's `!override` wins over the
        // extended result, as in compose).
        if f.as_os_str() != "-" {
            apply_extends(&mut t, f, env_ref, lookups, true)?;
        }
        tree = Some(match tree {
            None => t,
            Some(prev) => merge_files(prev, t),
        });
    }
    let Some(mut tree) = tree else {
        return Err(ProjectError::NotFound {
            dir: cwd.to_path_buf(),
        });
    };
    strip_tags(&mut tree);
    // Phase 6: the remaining extends (a base from another -f file), after merging.
    apply_extends(&mut tree, &files[0], env_ref, lookups, false)?;
    Ok(tree)
}

/// Phase 7: schema validation, after dropping repeated entries of the lists that have an
/// identity (compose does so before it validates: a repeated `cap_add` is no error).
/// Returns the warnings: the schema's, and one per unset variable.
fn validate_document(
    doc: &mut serde_json::Value,
    spans: &Spans,
    lookups: &[Lookup],
) -> Result<Vec<String>> {
    super::canonical::enforce_unicity(doc);
    let mut warnings = Vec::new();
    match validate(doc) {
        Ok(ws) => {
            for w in ws {
                let path = render_path(&w.path);
                let at = locate(spans, &path)
                    .map(|p| format!("{p}: "))
                    .unwrap_or_default();
                warnings.push(format!("{at}{w}"));
            }
        }
        Err(errors) => {
            return Err(ProjectError::from_many(
                errors
                    .into_iter()
                    .map(|e| {
                        let path = render_path(&e.path);
                        let mut message = e.message.clone();
                        if let Some(s) = &e.suggestion {
                            message.push_str(&format!(", did you mean `{s}`?"));
                        }
                        ProjectError::invalid(locate(spans, &path), path, message)
                    })
                    .collect(),
            ));
        }
    }
    for l in lookups {
        if l.resolution == super::interpolate::Resolution::Unset {
            warnings.push(format!(
                "{}: the {:?} variable is not set, defaulting to a blank string",
                l.pos, l.name
            ));
        }
    }
    Ok(warnings)
}

/// Phase 10: the active profiles (`--profile`, else `COMPOSE_PROFILES`) and the services
/// they enable.
fn apply_profiles(
    project: &mut Project,
    opts: &LoadOptions,
    env: &Environment,
) -> Result<Vec<Enablement>> {
    let mut profiles = opts.profiles.clone();
    if profiles.is_empty()
        && let Some(p) = env.get("COMPOSE_PROFILES")
    {
        profiles = p
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    project.profiles.clone_from(&profiles);
    select(project, &profiles, &opts.services)
}

/// Turns a serde error of the typed model into a positioned error. serde_json does not give
/// the path, so the service is found by trying each one.
fn type_error(doc: &serde_json::Value, spans: &Spans, message: &str) -> ProjectError {
    if let Some(serde_json::Value::Object(services)) = doc.get("services") {
        for (name, svc) in services {
            if let Err(e) = serde_json::from_value::<super::model::Service>(svc.clone()) {
                // Find the key: try each one alone.
                let mut path = format!("services.{name}");
                let mut message = e.to_string();
                if let serde_json::Value::Object(m) = svc {
                    for (k, v) in m {
                        let mut one = serde_json::Map::new();
                        one.insert(k.clone(), v.clone());
                        if let Err(e) = serde_json::from_value::<super::model::Service>(
                            serde_json::Value::Object(one),
                        ) {
                            path = super::yaml::join_path(&path, k);
                            message = e.to_string();
                            break;
                        }
                    }
                }
                return ProjectError::invalid(locate(spans, &path), path, humanize(&message));
            }
        }
    }
    if let serde_json::Value::Object(top) = doc {
        for (kind, items) in top.iter().filter(|(k, _)| *k != "services") {
            let try_one = |v: serde_json::Value| {
                let mut one = serde_json::Map::new();
                one.insert(kind.clone(), v);
                serde_json::from_value::<Project>(serde_json::Value::Object(one)).err()
            };
            if let Some(e) = try_one(items.clone()) {
                let mut path = kind.clone();
                let mut message = e.to_string();
                if let serde_json::Value::Object(m) = items {
                    for (k, v) in m {
                        let mut inner = serde_json::Map::new();
                        inner.insert(k.clone(), v.clone());
                        if let Some(e) = try_one(serde_json::Value::Object(inner)) {
                            path = super::yaml::join_path(&path, k);
                            message = e.to_string();
                            break;
                        }
                    }
                }
                return ProjectError::invalid(locate(spans, &path), path, humanize(&message));
            }
        }
    }
    ProjectError::invalid(None, "", humanize(message))
}

/// serde's type names in words.
fn humanize(message: &str) -> String {
    message
        .replace("expected u16", "expected a port number (0-65535)")
        .replace("expected u32", "expected a positive integer")
        .replace("expected u64", "expected a positive integer")
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a map", "expected a mapping")
        .replace("expected a sequence", "expected a list")
}

/// The project name derived from the project directory.
fn dir_name(project_dir: &Path) -> Result<String> {
    let base = project_dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = normalize_name(&base);
    if n.is_empty() {
        return Err(ProjectError::invalid(
            None,
            "name",
            format!(
                "cannot derive a project name from the directory {}; set `name:` or use -p",
                project_dir.display()
            ),
        ));
    }
    Ok(n)
}
