//! `tug config`: render the loaded project in canonical form, as `docker compose config`
//! does, plus `--explain` (where every variable came from, why every service is enabled).
//!
//! This module also turns the global flags and the `COMPOSE_*` variables into
//! [`LoadOptions`] for every verb that loads a project ([`load_options`], [`load_project`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::GlobalArgs;
use crate::project::interpolate::{Resolution, Source};
use crate::project::profiles::Reason;
use crate::project::{Graph, LoadOptions, Loaded, Project, load_explained};

/// Flags of `tug config`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Output format.
    #[arg(long, default_value = "yaml", value_parser = ["yaml", "json"])]
    pub format: String,
    /// Only validate the configuration, print nothing.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the service names, one per line.
    #[arg(long)]
    pub services: bool,
    /// Print the volume names, one per line.
    #[arg(long)]
    pub volumes: bool,
    /// Print the network names, one per line.
    #[arg(long)]
    pub networks: bool,
    /// Print the profile names, one per line.
    #[arg(long = "profiles", id = "list_profiles")]
    pub list_profiles: bool,
    /// Print the image names, one per line.
    #[arg(long)]
    pub images: bool,
    /// Print the service config hash, one per line (`*` for all services).
    #[arg(long, value_name = "SERVICE")]
    pub hash: Option<String>,
    /// Don't interpolate environment variables.
    #[arg(long)]
    pub no_interpolate: bool,
    /// Don't normalize the model (paths, defaults, env files).
    #[arg(long)]
    pub no_normalize: bool,
    /// Save to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Explain every interpolated variable (value, source, each use) and every service's
    /// enablement (`--format json` for JSON).
    #[arg(long)]
    pub explain: bool,
    /// Print the environment used for interpolation, KEY=VALUE lines.
    #[arg(long)]
    pub environment: bool,
    /// Print the variables the model uses, with their default and alternate values.
    #[arg(long)]
    pub variables: bool,
    /// Print the model names, one per line.
    #[arg(long)]
    pub models: bool,
    /// Don't resolve file paths (relative paths stay as written).
    #[arg(long)]
    pub no_path_resolution: bool,
    /// Don't check the model for consistency (undefined references, exclusive settings).
    #[arg(long)]
    pub no_consistency: bool,
    /// Don't resolve service env files (docker compose v2.40 prints the same model either
    /// way; accepted).
    #[arg(long)]
    pub no_env_resolution: bool,
    /// Pin image tags to digests (from tug's image store).
    #[arg(long)]
    pub resolve_image_digests: bool,
    /// Print an override file pinning every service image to its digest (from tug's image
    /// store).
    #[arg(long)]
    pub lock_image_digests: bool,
    /// Services to render (they are enabled whatever their profiles).
    pub service_names: Vec<String>,
}

/// The load options of the global flags, with `COMPOSE_FILE`, `COMPOSE_ENV_FILES` (and,
/// inside the loader, `COMPOSE_PROJECT_NAME` and `COMPOSE_PROFILES`) honoured.
#[must_use]
pub fn load_options(global: &GlobalArgs, services: &[String]) -> LoadOptions {
    // COMPOSE_FILE (shell or the working directory's .env) is read by the loader.
    let files = global.files.clone();
    let mut env_files = global.env_files.clone();
    if env_files.is_empty()
        && let Ok(ef) = std::env::var("COMPOSE_ENV_FILES")
    {
        env_files = ef
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    LoadOptions {
        files,
        project_name: global.project_name.clone(),
        project_directory: global.project_directory.clone(),
        profiles: global.profiles.clone(),
        env_files,
        services: services.to_vec(),
        all_resources: global.all_resources,
        ..LoadOptions::default()
    }
}

/// Loads the project of the global flags, printing the loader's warnings on stderr.
///
/// # Errors
/// The loader's error.
pub fn load_project(global: &GlobalArgs, services: &[String]) -> anyhow::Result<Project> {
    let loaded = load_explained(&load_options(global, services))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded.project)
}

pub(super) fn run(global: &GlobalArgs, args: &ConfigArgs) -> anyhow::Result<i32> {
    let mut opts = load_options(global, &args.service_names);
    opts.interpolate = !args.no_interpolate;
    opts.normalize = !args.no_normalize;
    opts.resolve_paths = !args.no_path_resolution;
    opts.consistency = !args.no_consistency;
    let mut loaded = load_explained(&opts)?;
    if args.resolve_image_digests || args.lock_image_digests {
        pin_digests(global, &mut loaded.project)?;
    }
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    if args.quiet {
        return Ok(0);
    }
    let out = render(&loaded, args)?;
    match &args.output {
        // Private as before (the file may hold the project's secrets' values).
        Some(path) => crate::util::fs::write_atomic(
            path,
            out.as_bytes(),
            0o600,
            crate::util::fs::Durability::FileAndDir,
        )
        .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(out.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(0)
}

fn lines<I: IntoIterator<Item = String>>(items: I) -> String {
    let mut s = String::new();
    for i in items {
        s.push_str(&i);
        s.push('\n');
    }
    s
}

fn render(loaded: &Loaded, args: &ConfigArgs) -> anyhow::Result<String> {
    let project = &loaded.project;
    if args.explain {
        return if args.format == "json" {
            let mut s = serde_json::to_string_pretty(&explain_json(loaded, &args.service_names))?;
            s.push('\n');
            Ok(s)
        } else {
            Ok(explain(loaded, &args.service_names))
        };
    }
    if args.environment {
        return Ok(lines(
            loaded
                .environment
                .to_map()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        ));
    }
    if args.variables {
        return variables_table(loaded, &args.format);
    }
    if args.models {
        return Ok(lines(project.models.keys().cloned()));
    }
    if args.lock_image_digests {
        let mut services = serde_json::Map::new();
        let mut names: Vec<&String> = project.services.keys().collect();
        names.sort();
        for n in names {
            if let Some(img) = &project.services[n].image {
                services.insert(n.clone(), serde_json::json!({ "image": img }));
            }
        }
        let doc = serde_json::json!({ "services": services });
        return if args.format == "json" {
            Ok(serde_json::to_string_pretty(&doc)? + "\n")
        } else {
            Ok(to_yaml(&doc))
        };
    }
    if args.services {
        let mut names: Vec<String> = project.services.keys().cloned().collect();
        names.sort();
        return Ok(lines(names));
    }
    if args.volumes {
        return Ok(lines(project.volumes.keys().cloned()));
    }
    if args.networks {
        return Ok(lines(project.networks.keys().cloned()));
    }
    if args.list_profiles {
        let set: BTreeSet<String> = project
            .services
            .values()
            .chain(project.disabled_services.values())
            .flat_map(|s| s.profiles.iter().cloned())
            .collect();
        return Ok(lines(set));
    }
    if args.images {
        let mut names: Vec<&String> = project.services.keys().collect();
        names.sort();
        return Ok(lines(names.into_iter().map(|n| {
            let s = &project.services[n];
            s.image
                .clone()
                .unwrap_or_else(|| format!("{}-{n}", project.name))
        })));
    }
    if let Some(which) = &args.hash {
        let mut names: Vec<String> = if which == "*" {
            project.services.keys().cloned().collect()
        } else {
            which.split(',').map(|s| s.trim().to_owned()).collect()
        };
        names.sort();
        let mut out = String::new();
        for n in names {
            let s = project
                .services
                .get(&n)
                .with_context(|| format!("no such service: {n}"))?;
            let _ = writeln!(out, "{n} {}", s.compose_hash());
        }
        return Ok(out);
    }
    let mut doc = project_json(project, &args.service_names)?;
    if let Value::Object(top) = &mut doc {
        // docker compose v2.40.3 does not print the top-level `models`.
        top.shift_remove("models");
    }
    drop_env_files(&mut doc);
    if args.no_interpolate {
        drop_typed_defaults(&mut doc);
    } else {
        escape_dollars(&mut doc);
    }
    if args.format == "json" {
        strip_service_extensions(&mut doc);
        let mut s = serde_json::to_string_pretty(&doc)?;
        s.push('\n');
        Ok(s)
    } else {
        yaml_shape(&mut doc);
        ssh_yaml(&mut doc);
        Ok(to_yaml(&doc))
    }
}

/// compose prints an ssh key with a path as `ID: PATH` in YAML (`ID=PATH` is how it is
/// written; compose cannot print it as JSON at all).
fn ssh_yaml(doc: &mut Value) {
    if let Some(Value::Object(services)) = doc.get_mut("services") {
        for s in services.values_mut() {
            if let Some(Value::Array(keys)) = s.pointer_mut("/build/ssh") {
                for k in keys {
                    if let Value::String(e) = k
                        && let Some((id, path)) = e.split_once('=')
                    {
                        *e = format!("{id}: {path}");
                    }
                }
            }
        }
    }
}

/// compose's YAML output leaves out what its JSON output prints as empty: unset `command` /
/// `entrypoint` (also in hooks), empty `ipam`, `placement`, `resources` and `exec`; and it
/// orders the top level as name, services, networks, volumes, secrets, configs, extensions.
fn yaml_shape(doc: &mut Value) {
    fn prune(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, val| match k.as_str() {
                    "command" | "entrypoint" => !val.is_null(),
                    _ => true,
                });
                for val in m.values_mut() {
                    prune(val);
                }
                m.retain(|k, val| match k.as_str() {
                    "ipam" | "placement" | "resources" | "exec" => {
                        !val.as_object().is_some_and(serde_json::Map::is_empty)
                    }
                    _ => true,
                });
            }
            Value::Array(items) => items.iter_mut().for_each(prune),
            _ => {}
        }
    }
    prune(doc);
    if let Value::Object(top) = doc {
        let order = [
            "name", "services", "networks", "volumes", "secrets", "configs",
        ];
        let mut entries: Vec<(String, Value)> = std::mem::take(top).into_iter().collect();
        entries.sort_by_key(|(k, _)| order.iter().position(|o| o == k).unwrap_or(order.len()));
        top.extend(entries);
    }
}

/// The project as compose prints it: top-level keys sorted, services sorted by name, only
/// the named services (and their dependencies) when some are named.
fn project_json(project: &Project, named: &[String]) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(project)?;
    let keep: Option<BTreeSet<String>> = if named.is_empty() {
        None
    } else {
        let g = Graph::new(project)?;
        Some(g.select(named, false)?.into_iter().collect())
    };
    if let Some(Value::Object(services)) = v.get_mut("services") {
        let mut entries: Vec<(String, Value)> = std::mem::take(services).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, s) in entries {
            if keep.as_ref().is_none_or(|set| set.contains(&k)) {
                services.insert(k, s);
            }
        }
    }
    for kind in ["networks", "volumes", "secrets", "configs"] {
        if let Some(Value::Object(m)) = v.get_mut(kind) {
            let mut entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            m.extend(entries);
        }
    }
    if let Value::Object(top) = &mut v {
        let mut entries: Vec<(String, Value)> = std::mem::take(top).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        top.extend(entries);
    }
    Ok(v)
}

/// compose keeps the env files in the model (they count in the config hash) but does not
/// print them once they are read into `environment`.
fn drop_env_files(doc: &mut Value) {
    if let Some(Value::Object(services)) = doc.get_mut("services") {
        for s in services.values_mut() {
            if let Value::Object(m) = s {
                m.shift_remove("env_file");
            }
        }
    }
}

/// compose's JSON output keeps the top-level `x-` keys only.
fn strip_service_extensions(doc: &mut Value) {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| !k.starts_with("x-"));
                m.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if let Value::Object(top) = doc {
        for (k, v) in top.iter_mut() {
            if !k.starts_with("x-") {
                strip(v);
            }
        }
    }
}

/// Without interpolation compose prints the document before it is typed: unset `command` and
/// `entrypoint` and empty `ipam` are absent.
fn drop_typed_defaults(doc: &mut Value) {
    if let Some(Value::Object(services)) = doc.get_mut("services") {
        for s in services.values_mut() {
            if let Value::Object(m) = s {
                for k in ["command", "entrypoint"] {
                    if m.get(k).is_some_and(Value::is_null) {
                        m.shift_remove(k);
                    }
                }
            }
        }
    }
    if let Some(Value::Object(nets)) = doc.get_mut("networks") {
        for n in nets.values_mut() {
            if let Value::Object(m) = n
                && m.get("ipam")
                    .is_some_and(|i| i.as_object().is_some_and(serde_json::Map::is_empty))
            {
                m.shift_remove("ipam");
            }
        }
    }
}

/// After interpolation a literal `$` is printed as `$$`, so the output can be loaded again.
fn escape_dollars(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
        Value::Array(items) => items.iter_mut().for_each(escape_dollars),
        Value::Object(m) => m.values_mut().for_each(escape_dollars),
        _ => {}
    }
}

/// Where and how a variable is set: `("set", Some(value), Some(source))`, `("set but
/// empty", …)` or `("not set", None, None)`.
fn variable_state<'a>(
    loaded: &'a Loaded,
    name: &str,
) -> (&'static str, Option<&'a str>, Option<&'a Source>) {
    match loaded.environment.lookup(name) {
        Some((v, src)) if v.is_empty() => ("set but empty", Some(v.as_str()), Some(src)),
        Some((v, src)) => ("set", Some(v.as_str()), Some(src)),
        None => ("not set", None, None),
    }
}

/// What one use of a variable produced.
fn use_text(l: &crate::project::interpolate::Lookup) -> String {
    match &l.resolution {
        Resolution::Found(_) => "its value".to_owned(),
        Resolution::Default => format!("the default value from the file: {:?}", l.value),
        Resolution::Alternative(_) => {
            format!("the alternative value from the file: {:?}", l.value)
        }
        Resolution::Unset => "an empty string".to_owned(),
        Resolution::NoAlternative => "an empty string (no alternative value)".to_owned(),
    }
}

/// The variables in first-use order, each with its uses.
fn variable_uses(loaded: &Loaded) -> Vec<(&str, Vec<&crate::project::interpolate::Lookup>)> {
    let mut out: Vec<(&str, Vec<&crate::project::interpolate::Lookup>)> = Vec::new();
    for l in &loaded.lookups {
        match out.iter_mut().find(|(n, _)| *n == l.name) {
            Some((_, uses)) => uses.push(l),
            None => out.push((l.name.as_str(), vec![l])),
        }
    }
    out
}

fn enablement_text(e: &crate::project::profiles::Enablement) -> String {
    match &e.reason {
        Reason::NoProfiles => "enabled: no profiles".to_owned(),
        Reason::Profile(p) => format!("enabled: profile `{p}` is active"),
        Reason::Named => "enabled: named on the command line".to_owned(),
        Reason::Inactive(ps) => format!(
            "disabled: none of its profiles ({}) is active",
            ps.join(", ")
        ),
    }
}

/// Why a named-services selection includes a service: `named`, `dependency of a, b`, or
/// `not selected`; `None` when no services were named or the service is disabled.
fn selection(loaded: &Loaded, named: &[String], service: &str) -> Option<String> {
    if named.is_empty() || !loaded.project.services.contains_key(service) {
        return None;
    }
    let sel = Graph::new(&loaded.project)
        .ok()
        .and_then(|g| g.select(named, false).ok())?;
    Some(if named.iter().any(|n| n == service) {
        "named".to_owned()
    } else if sel.iter().any(|n| n == service) {
        let by: Vec<&str> = loaded
            .project
            .services
            .iter()
            .filter(|(n, s)| sel.contains(n) && s.depends_on.contains_key(service))
            .map(|(n, _)| n.as_str())
            .collect();
        format!("pulled in as a dependency of {}", by.join(", "))
    } else {
        "not selected".to_owned()
    })
}

fn explain(loaded: &Loaded, named: &[String]) -> String {
    let mut out = String::new();
    out.push_str("variables:\n");
    let vars = variable_uses(loaded);
    if vars.is_empty() {
        out.push_str("  (none)\n");
    }
    for (name, uses) in &vars {
        match variable_state(loaded, name) {
            ("not set", ..) => {
                let _ = writeln!(out, "  {name}  (not set)");
            }
            (state, value, src) => {
                let _ = writeln!(
                    out,
                    "  {name}={:?}  ({state} in {})",
                    value.unwrap_or_default(),
                    src.map(source_text).unwrap_or_default()
                );
            }
        }
        for l in uses {
            let _ = writeln!(out, "    {} {}: {}", l.pos, l.path, use_text(l));
        }
    }
    out.push_str("services:\n");
    for e in &loaded.enablement {
        let _ = write!(out, "  {}: {}", e.service, enablement_text(e));
        if let Some(sel) = selection(loaded, named, &e.service) {
            let _ = write!(out, "; selected: {sel}");
        }
        out.push('\n');
    }
    out
}

/// `config --explain --format json`.
fn explain_json(loaded: &Loaded, named: &[String]) -> Value {
    let variables: Vec<Value> = variable_uses(loaded)
        .into_iter()
        .map(|(name, uses)| {
            let (state, value, src) = variable_state(loaded, name);
            serde_json::json!({
                "name": name,
                "state": state,
                "value": value,
                "source": src.map(source_text),
                "uses": uses.iter().map(|l| serde_json::json!({
                    "position": l.pos.to_string(),
                    "path": l.path,
                    "result": match l.resolution {
                        Resolution::Found(_) => "value",
                        Resolution::Default => "default",
                        Resolution::Alternative(_) => "alternative",
                        Resolution::Unset | Resolution::NoAlternative => "empty",
                    },
                    "value": l.value,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let services: Vec<Value> = loaded
        .enablement
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.service,
                "enabled": e.enabled,
                "reason": enablement_text(e),
                "selected": selection(loaded, named, &e.service),
            })
        })
        .collect();
    serde_json::json!({ "variables": variables, "services": services })
}

/// `config --variables`: each variable the files use, whether it is required, its default
/// and alternate values, as docker compose lists them.
fn variables_table(loaded: &Loaded, format: &str) -> anyhow::Result<String> {
    fn strings(n: &crate::project::yaml::Node, out: &mut Vec<String>) {
        use crate::project::yaml::Value as Y;
        match &n.value {
            Y::Str(s) => out.push(s.clone()),
            Y::Seq(items) => items.iter().for_each(|i| strings(i, out)),
            Y::Map(m) => m.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut vars: Vec<crate::project::interpolate::Variable> = Vec::new();
    for f in &loaded.project.compose_files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let docs = crate::project::yaml::parse(&f.to_string_lossy(), &text)?;
        let mut texts = Vec::new();
        for d in &docs {
            strings(d, &mut texts);
        }
        for t in texts {
            for v in crate::project::interpolate::variables(&t) {
                if !vars.iter().any(|x| x.name == v.name) {
                    vars.push(v);
                }
            }
        }
    }
    vars.sort_by(|a, b| a.name.cmp(&b.name));
    if format == "json" {
        let m: serde_json::Map<String, Value> = vars
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    serde_json::json!({
                        "Name": v.name,
                        "DefaultValue": v.default,
                        "PresenceValue": v.alternate,
                        "Required": v.required,
                    }),
                )
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&Value::Object(m))? + "\n");
    }
    let mut rows = vec!["NAME\tREQUIRED\tDEFAULT VALUE\tALTERNATE VALUE".to_owned()];
    for v in &vars {
        rows.push(format!(
            "{}\t{}\t{}\t{}",
            v.name, v.required, v.default, v.alternate
        ));
    }
    Ok(crate::cli::format::tabulate_min(&rows, 20))
}

/// `--resolve-image-digests`: every service image pinned to the digest of the image of that
/// name in tug's store (`busybox@sha256:…`), as docker compose pins them from registries.
fn pin_digests(global: &GlobalArgs, project: &mut Project) -> anyhow::Result<()> {
    let store = super::open_images(&global.state_root())?;
    for s in project.services.values_mut() {
        let Some(img) = s.image.clone() else { continue };
        if img.contains('@') {
            continue;
        }
        let found = store.resolve(&img).map_err(|_| {
            anyhow::anyhow!(
                "service {}: cannot resolve the digest of {img}: not in tug's image store (pull it first)",
                s.name
            )
        })?;
        let name = img
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map_or(img.as_str(), |(n, _)| n);
        s.image = Some(format!("{name}@{}", found.digest));
    }
    Ok(())
}

fn source_text(src: &Source) -> String {
    match src {
        Source::Shell => "the shell environment".to_owned(),
        Source::EnvFile { path, line } => format!("{}:{line}", path.display()),
    }
}

/// Renders JSON as block-style YAML (2-space indent, sequences indented under their key,
/// strings quoted only when they would otherwise read as another type).
#[must_use]
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => yaml_map(m, 0, &mut out),
        other => {
            yaml_scalar_or_flow(other, 0, &mut out);
            out.push('\n');
        }
    }
    out
}

fn indent(n: usize, out: &mut String) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn yaml_map(m: &serde_json::Map<String, Value>, ind: usize, out: &mut String) {
    for (k, val) in m {
        indent(ind, out);
        out.push_str(&yaml_string(k));
        out.push(':');
        yaml_value_after_key(val, ind, out);
    }
}

fn yaml_value_after_key(val: &Value, ind: usize, out: &mut String) {
    match val {
        Value::Object(mm) if !mm.is_empty() => {
            out.push('\n');
            yaml_map(mm, ind + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            yaml_seq(items, ind + 2, out);
        }
        other => {
            out.push(' ');
            yaml_scalar_or_flow(other, ind + 2, out);
            out.push('\n');
        }
    }
}

fn yaml_seq(items: &[Value], ind: usize, out: &mut String) {
    for it in items {
        indent(ind, out);
        out.push_str("- ");
        match it {
            Value::Object(mm) if !mm.is_empty() => {
                let mut first = true;
                for (k, val) in mm {
                    if !first {
                        indent(ind + 2, out);
                    }
                    first = false;
                    out.push_str(&yaml_string(k));
                    out.push(':');
                    yaml_value_after_key(val, ind + 2, out);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                yaml_seq(inner, ind + 2, out);
            }
            other => {
                yaml_scalar_or_flow(other, ind + 2, out);
                out.push('\n');
            }
        }
    }
}

fn yaml_scalar_or_flow(v: &Value, ind: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            if s.contains('\n')
                && !s.chars().any(|c| c.is_control() && c != '\n')
                && !s.starts_with(' ')
            {
                out.push_str(if s.ends_with('\n') { "|" } else { "|-" });
                for line in s.trim_end_matches('\n').split('\n') {
                    out.push('\n');
                    if !line.is_empty() {
                        indent(ind, out);
                        out.push_str(line);
                    }
                }
            } else {
                out.push_str(&yaml_string(s));
            }
        }
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

/// A string as go-yaml (compose's encoder) writes it: double-quoted when it would read back
/// as another type or holds a character YAML cannot print plainly; single-quoted when plain
/// text would be misread (`a: b`, `#x`, `- x`, a trailing colon); plain otherwise.
fn yaml_string(s: &str) -> String {
    let typed = !matches!(
        crate::project::yaml::plain_scalar(s),
        crate::project::yaml::Value::Str(_)
    ) || s.is_empty();
    let yaml11 = matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "yes" | "n" | "no" | "on" | "off"
    );
    let unprintable = s
        .chars()
        .any(|c| (c.is_control() && c != '\n') || c == '\u{feff}');
    if typed || yaml11 || unprintable {
        return serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    }
    let special_start = s.starts_with([
        '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@',
        '`', ' ',
    ]);
    let needs = special_start
        || s.ends_with(' ')
        || s.ends_with(':')
        || s.contains(": ")
        || s.contains(" #");
    if needs {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_yaml_quotes_what_would_change_type() {
        let v = serde_json::json!({"a": "1", "b": "true", "c": "plain", "d": "", "e": ["x", {"k": "v", "l": [1]}], "f": {}, "g": "a: b", "h": "l1\nl2"});
        let y = to_yaml(&v);
        assert_eq!(
            y,
            "a: \"1\"\nb: \"true\"\nc: plain\nd: \"\"\ne:\n  - x\n  - k: v\n    l:\n      - 1\nf: {}\ng: 'a: b'\nh: |-\n  l1\n  l2\n"
        );
    }
}
