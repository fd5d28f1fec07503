//! Phase 8: resolve relative paths, read `env_file`s, apply compose's defaults.
//!
//! - Relative paths (build contexts, bind-mount sources, env files, secret and config files,
//!   watch paths) are resolved against the project directory; `~` is the user's home.
//! - Each service's `env_file`s are read in order and merged under its `environment`; a
//!   variable declared without a value takes it from the interpolation environment. Build
//!   args without a value are looked up the same way and dropped when not found.
//! - A service with neither `networks` nor `network_mode` joins the `default` network, which
//!   is then declared as `<project>_default`. Networks, volumes, secrets and configs get their
//!   actual name (`<project>_<key>`, or the key itself when external); resources no enabled
//!   service uses are dropped, as compose does.
//! - `links`, `network_mode: service:X` and `volumes_from: X` add an implicit `depends_on`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::dotenv;
use super::error::{ProjectError, Result};
use super::find::absolute;
use super::interpolate::Environment;
use super::model::{Dependency, Network, Project, VolumeType};

/// Normalises a project name the way compose does: lowercase, only `a-z0-9_-`, starting
/// with a letter or digit.
#[must_use]
pub fn normalize_name(raw: &str) -> String {
    let lower = raw.to_lowercase();
    let kept: String = lower
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(['_', '-']).to_owned()
}

/// Checks an explicitly given project name.
///
/// # Errors
/// When it is not already a valid name.
pub fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ProjectError::invalid(
            None,
            "name",
            format!(
                "invalid project name `{name}`: it must contain only lowercase letters, digits, \
                 dashes and underscores, and start with a letter or digit"
            ),
        ))
    }
}

fn expand_home(p: &str, env: &Environment) -> PathBuf {
    if let Some(rest) = p.strip_prefix('~') {
        let home = env
            .get("HOME")
            .map(str::to_owned)
            .or_else(|| std::env::var("HOME").ok())
            .unwrap_or_else(|| "/root".to_owned());
        let rest = rest.trim_start_matches('/');
        if rest.is_empty() {
            return PathBuf::from(home);
        }
        return Path::new(&home).join(rest);
    }
    PathBuf::from(p)
}

fn resolve(dir: &Path, p: &str, env: &Environment) -> String {
    absolute(dir, &expand_home(p, env))
        .to_string_lossy()
        .into_owned()
}

/// A path as compose resolves a build context or an env file: `~` expanded, a relative path
/// joined to `dir` (and cleaned), an absolute one kept exactly as written.
fn resolve_path(dir: &Path, p: &str, env: &Environment) -> String {
    let expanded = expand_home(p, env).to_string_lossy().into_owned();
    if expanded.starts_with('/') {
        return expanded;
    }
    resolve(dir, &expanded, env)
}

/// A host path as compose resolves a bind source, a secret or config file, an ssh key or a
/// `device` of a bind-mounted volume: `~` expanded, a relative path joined to `dir` (and
/// cleaned), an absolute one — Unix or Windows (`C:\…`, `\\server\share`) — kept exactly
/// as written.
fn resolve_host_path(dir: &Path, p: &str, env: &Environment) -> String {
    let expanded = expand_home(p, env).to_string_lossy().into_owned();
    if expanded.starts_with('/') || windows_absolute(&expanded) {
        return expanded;
    }
    resolve(dir, &expanded, env)
}

/// An absolute Windows path: a drive and a separator (`C:\x`, `C:/x`) or a UNC / device
/// path (`\\server\share`, `//server/share`).
fn windows_absolute(p: &str) -> bool {
    let b = p.as_bytes();
    let sep = |c: u8| c == b'\\' || c == b'/';
    match b {
        [letter, b':', s, ..] => letter.is_ascii_alphabetic() && sep(*s),
        [a, b, ..] => sep(*a) && sep(*b),
        _ => false,
    }
}

fn is_remote_context(c: &str) -> bool {
    c.contains("://") || c.starts_with("git@") || c.starts_with("github.com/")
}

/// Resolves every relative path of the project against `dir`; with `all` false only the env
/// and label files (which are read right after), as `config --no-path-resolution` wants.
pub fn resolve_paths(project: &mut Project, dir: &Path, env: &Environment, all: bool) {
    if !all {
        for s in project.services.values_mut() {
            for e in &mut s.env_file {
                e.path = resolve(dir, &e.path, env);
            }
            for l in &mut s.label_file {
                *l = resolve(dir, l, env);
            }
        }
        return;
    }
    for s in project.services.values_mut() {
        if let Some(b) = s.build.as_mut() {
            let ctx = b.context.clone().unwrap_or_else(|| ".".to_owned());
            if !is_remote_context(&ctx) {
                b.context = Some(resolve_path(dir, &ctx, env));
            }
            for v in b.additional_contexts.values_mut() {
                if !(is_remote_context(v)
                    || v.starts_with("docker-image:")
                    || v.starts_with("service:")
                    || v.starts_with("oci-layout:"))
                {
                    *v = resolve_path(dir, v, env);
                }
            }
            // `ID=PATH` ssh keys: the path resolved like a bind source.
            for k in &mut b.ssh {
                if let serde_json::Value::String(entry) = k
                    && let Some((id, path)) = entry.split_once('=')
                {
                    *entry = format!("{id}={}", resolve_host_path(dir, path, env));
                }
            }
        }
        for e in &mut s.env_file {
            e.path = resolve(dir, &e.path, env);
        }
        for l in &mut s.label_file {
            *l = resolve(dir, l, env);
        }
        for v in &mut s.volumes {
            if v.kind == VolumeType::Bind {
                let src = v.source.get_or_insert_default();
                *src = resolve_host_path(dir, src, env);
            }
        }
        if let Some(d) = s.develop.as_mut() {
            for w in &mut d.watch {
                w.path = resolve(dir, &w.path, env);
            }
        }
    }
    for f in project
        .secrets
        .values_mut()
        .chain(project.configs.values_mut())
    {
        if let Some(file) = f.file.as_mut() {
            *file = resolve_host_path(dir, file, env);
        }
    }
    // A local volume that is a bind mount of a host directory.
    for v in project.volumes.values_mut() {
        if v.driver.as_deref() == Some("local")
            && v.driver_opts.get("o").map(String::as_str) == Some("bind")
            && let Some(dev) = v.driver_opts.get_mut("device")
        {
            *dev = resolve_host_path(dir, dev, env);
        }
    }
}

/// Reads every service's `env_file`s into its `environment` (and `label_file`s into its
/// `labels`) and resolves variables declared without a value.
///
/// # Errors
/// A required env file that is missing or malformed.
pub fn apply_env_files(project: &mut Project, env: &Environment) -> Result<()> {
    for s in project.services.values_mut() {
        let mut from_files = std::collections::BTreeMap::new();
        for f in &s.env_file {
            let path = Path::new(&f.path);
            if !path.exists() {
                if f.required {
                    return Err(ProjectError::invalid(
                        None,
                        format!("services.{}.env_file", s.name),
                        format!("env file {} not found", f.path),
                    ));
                }
                continue;
            }
            let raw = f.format.as_deref() == Some("raw");
            let entries = dotenv::read(path, env, raw)
                .map_err(|e| e.with_key(&format!("services.{}.env_file", s.name)))?;
            for e in entries {
                from_files.insert(e.key, e.value);
            }
        }
        for (k, v) in from_files {
            s.environment.entry(k).or_insert(v);
        }
        // label_file: KEY=VALUE lines under the explicit labels.
        for lf in std::mem::take(&mut s.label_file) {
            let entries = dotenv::read(Path::new(&lf), env, false)
                .map_err(|e| e.with_key(&format!("services.{}.label_file", s.name)))?;
            for e in entries {
                s.labels.entry(e.key).or_insert(e.value.unwrap_or_default());
            }
        }
        for (k, v) in &mut s.environment {
            if v.is_none() {
                *v = env.get(k).map(str::to_owned);
            }
        }
        if let Some(b) = s.build.as_mut() {
            let args = std::mem::take(&mut b.args);
            for (k, v) in args {
                match v {
                    Some(v) => {
                        b.args.insert(k, Some(v));
                    }
                    None => {
                        if let Some(v) = env.get(&k) {
                            b.args.insert(k, Some(v.to_owned()));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Applies compose's defaults: the default network, actual resource names, implicit
/// dependencies, the default Dockerfile; drops unused resources unless `all_resources`.
pub fn apply_defaults(project: &mut Project, all_resources: bool) {
    let pname = project.name.clone();
    let mut used_networks = BTreeSet::new();
    let mut used_volumes = BTreeSet::new();
    let mut used_secrets = BTreeSet::new();
    let mut used_configs = BTreeSet::new();
    for s in project.services.values_mut() {
        if s.network_mode.is_none() && s.networks.is_empty() && s.provider.is_none() {
            s.networks.insert("default".to_owned(), None);
        }
        used_networks.extend(s.networks.keys().cloned());
        for v in &s.volumes {
            if v.kind == VolumeType::Volume
                && let Some(src) = &v.source
            {
                used_volumes.insert(src.clone());
            }
        }
        // compose cleans every mount target (`/var/www/html/` is `/var/www/html`).
        for v in &mut s.volumes {
            v.target = super::canonical::clean_path(&v.target);
        }
        used_secrets.extend(s.secrets.iter().map(|r| r.source.clone()));
        used_configs.extend(s.configs.iter().map(|r| r.source.clone()));
        if let Some(b) = s.build.as_mut() {
            used_secrets.extend(b.secrets.iter().map(|r| r.source.clone()));
            if b.dockerfile.is_none() && b.dockerfile_inline.is_none() {
                b.dockerfile = Some("Dockerfile".to_owned());
            }
        }
        // Implicit dependencies, as compose adds them.
        let mut implicit: Vec<(String, bool)> = Vec::new();
        for l in &s.links {
            let target = l.split(':').next().unwrap_or(l);
            implicit.push((target.to_owned(), true));
        }
        // Namespaces shared with another service: `network_mode`, `ipc`, `pid`, `uts`,
        // `cgroup` set to `service:X`.
        implicit.extend(s.network_mode_service().map(|svc| (svc.to_owned(), true)));
        for ns in [&s.ipc, &s.pid, &s.uts, &s.cgroup] {
            if let Some(svc) = ns.as_deref().and_then(|m| m.strip_prefix("service:")) {
                implicit.push((svc.to_owned(), true));
            }
        }
        for vf in &s.volumes_from {
            if vf.starts_with("container:") {
                continue;
            }
            let target = vf.strip_prefix("service:").unwrap_or(vf);
            let target = target.split(':').next().unwrap_or(target);
            implicit.push((target.to_owned(), false));
        }
        for (name, restart) in implicit {
            s.depends_on.entry(name).or_insert_with(|| Dependency {
                restart,
                ..Dependency::default()
            });
        }
    }
    if used_networks.contains("default") && !project.networks.contains_key("default") {
        project
            .networks
            .insert("default".to_owned(), Network::default());
    }
    if !all_resources {
        project.networks.retain(|k, _| used_networks.contains(k));
        project.volumes.retain(|k, _| used_volumes.contains(k));
        project.secrets.retain(|k, _| used_secrets.contains(k));
        project.configs.retain(|k, _| used_configs.contains(k));
    }
    for (k, n) in &mut project.networks {
        if n.name.is_none() {
            n.name = Some(if n.external {
                k.clone()
            } else {
                format!("{pname}_{k}")
            });
        }
    }
    for (k, v) in &mut project.volumes {
        if v.name.is_none() {
            v.name = Some(if v.external {
                k.clone()
            } else {
                format!("{pname}_{k}")
            });
        }
    }
    for (k, f) in project.secrets.iter_mut().chain(project.configs.iter_mut()) {
        if f.name.is_none() {
            f.name = Some(if f.external {
                k.clone()
            } else {
                format!("{pname}_{k}")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_project_names() {
        assert_eq!(normalize_name("My App.v2"), "myappv2");
        assert_eq!(normalize_name("__x-Y"), "x-y");
        assert!(check_name("web_1").is_ok());
        assert!(check_name("Web").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn normalize_home_and_relative_paths() {
        let mut env = Environment::new();
        env.set("HOME", "/home/u", super::super::interpolate::Source::Shell);
        assert_eq!(resolve(Path::new("/p"), "./a/../b", &env), "/p/b");
        assert_eq!(resolve(Path::new("/p"), "~/x", &env), "/home/u/x");
        assert_eq!(resolve(Path::new("/p"), "/abs", &env), "/abs");
    }
}
