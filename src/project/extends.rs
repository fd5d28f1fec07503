//! Phase 6a: `extends`: a service starts from another service's configuration.
//!
//! `extends: base` (or `{service: base}`) takes `base` from the same file; `{file: other.yml,
//! service: base}` takes it from another file (parsed and interpolated with the same
//! environment). The base's own `extends` is resolved first; a loop is an error. The service
//! is then merged over its base with the same rules as a later file over an earlier one.
//! Relative paths in a service taken from a file in another directory are made absolute
//! against that file's directory, so that they keep pointing at the same place.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::error::{ProjectError, Result};
use super::find::absolute;
use super::interpolate::{Environment, Lookup, interpolate_tree};
use super::merge::merge_files;
use super::yaml::{Node, Value, parse};

/// Reads, parses and interpolates a compose file into one tree (several documents merged).
///
/// # Errors
/// I/O, UTF-8, YAML or interpolation errors.
pub fn read_tree(path: &Path, env: Option<&Environment>, log: &mut Vec<Lookup>) -> Result<Node> {
    let bytes = super::input::read_compose_file(path)?;
    let text = String::from_utf8(bytes).map_err(|e| ProjectError::Utf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    let name = path.display().to_string();
    let docs = parse(&name, &text)?;
    if docs.is_empty() {
        return Err(ProjectError::invalid(
            Some(super::yaml::Pos {
                file: name.as_str().into(),
                line: 1,
                col: 1,
            }),
            "",
            "empty compose file: it must define at least one of services, networks, volumes, secrets, configs, include or name",
        ));
    }
    let mut tree: Option<Node> = None;
    for d in docs {
        tree = Some(match tree {
            None => d,
            Some(t) => merge_files(t, d),
        });
    }
    let mut tree = tree.unwrap_or_else(|| {
        Node::new(
            Value::Map(IndexMap::new()),
            super::yaml::Pos {
                file: name.as_str().into(),
                line: 1,
                col: 1,
            },
        )
    });
    if matches!(tree.value, Value::Null) {
        tree.value = Value::Map(IndexMap::new());
    }
    if !matches!(tree.value, Value::Map(_)) {
        return Err(ProjectError::invalid(
            Some(tree.pos.clone()),
            "",
            format!("a compose file must be a mapping, found {}", tree.kind()),
        ));
    }
    if let Some(env) = env {
        interpolate_tree(&mut tree, env, log)?;
    }
    Ok(tree)
}

/// Resolves `extends` of every service of `tree` (a file at `file`). With `lenient`, a base
/// service missing from the file is left for later (it may come from another `-f` file).
///
/// # Errors
/// Unknown base service or file, or a loop.
pub fn apply_extends(
    tree: &mut Node,
    file: &Path,
    env: Option<&Environment>,
    log: &mut Vec<Lookup>,
    lenient: bool,
) -> Result<()> {
    // Only the services that extend another are touched (and cloned).
    let names: Vec<String> = tree
        .get("services")
        .and_then(Node::as_map)
        .map(|m| {
            m.iter()
                .filter(|(_, s)| s.get("extends").is_some())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Ok(());
    }
    // Other files read for `extends: {file: ...}`.
    let mut cache: HashMap<PathBuf, Node> = HashMap::new();
    let mut resolved = Vec::with_capacity(names.len());
    for name in names {
        let mut stack = Vec::new();
        let current = (file, &*tree);
        let node = resolve_service(
            file, &name, current, &mut cache, env, log, &mut stack, lenient,
        )?;
        resolved.push((name, node));
    }
    if let Some(services) = tree
        .as_map_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Node::as_map_mut)
    {
        for (name, node) in resolved {
            services.insert(name, node);
        }
    }
    Ok(())
}

// Long: the steps of one `extends` (find the base in this file or another, refuse a cycle,
// resolve the base's own `extends`, merge) share the file cache, the stack and the log.
#[allow(clippy::too_many_arguments)]
fn resolve_service(
    file: &Path,
    name: &str,
    current: (&Path, &Node),
    cache: &mut HashMap<PathBuf, Node>,
    env: Option<&Environment>,
    log: &mut Vec<Lookup>,
    stack: &mut Vec<(PathBuf, String)>,
    lenient: bool,
) -> Result<Node> {
    let key = (file.to_path_buf(), name.to_owned());
    if stack.contains(&key) {
        let mut chain: Vec<String> = stack.iter().map(|(_, s)| s.clone()).collect();
        chain.push(name.to_owned());
        return Err(ProjectError::invalid(
            None,
            format!("services.{name}.extends"),
            format!(
                "circular extends in {}: {}",
                file.display(),
                chain.join(" -> ")
            ),
        ));
    }
    if file != current.0 && !cache.contains_key(file) {
        let t = read_tree(file, env, log)?;
        cache.insert(file.to_path_buf(), t);
    }
    let tree = if file == current.0 {
        current.1
    } else {
        &cache[file]
    };
    let svc = tree
        .get("services")
        .and_then(|s| s.get(name))
        .cloned()
        .ok_or_else(|| {
            ProjectError::invalid(
                None,
                format!("services.{name}"),
                format!(
                    "cannot extend service `{name}`: no such service in {}",
                    file.display()
                ),
            )
        })?;
    let Some(ext) = svc.get("extends").cloned() else {
        return Ok(svc);
    };
    let (base_file, base_name) = match &ext.value {
        Value::Str(s) => (None, s.clone()),
        Value::Map(m) => {
            let service = m.get("service").and_then(Node::as_str).ok_or_else(|| {
                ProjectError::invalid(
                    Some(ext.pos.clone()),
                    format!("services.{name}.extends"),
                    "expected `service: NAME`",
                )
            })?;
            (
                m.get("file").and_then(Node::as_str).map(str::to_owned),
                service.to_owned(),
            )
        }
        _ => {
            return Err(ProjectError::invalid(
                Some(ext.pos.clone()),
                format!("services.{name}.extends"),
                format!("expected a service name or a mapping, found {}", ext.kind()),
            ));
        }
    };
    let dir = file.parent().unwrap_or(Path::new("/"));
    let base_path = match &base_file {
        Some(f) => absolute(dir, Path::new(f)),
        None => file.to_path_buf(),
    };
    if base_file.is_some() && !base_path.is_file() {
        return Err(ProjectError::invalid(
            Some(ext.pos.clone()),
            format!("services.{name}.extends.file"),
            format!("cannot extend from {}: no such file", base_path.display()),
        ));
    }
    if base_file.is_none()
        && tree
            .get("services")
            .and_then(|s| s.get(&base_name))
            .is_none()
    {
        if lenient {
            // The base may come from another -f file: resolved after merging.
            return Ok(svc);
        }
        return Err(ProjectError::invalid(
            Some(ext.pos.clone()),
            format!("services.{name}.extends"),
            format!(
                "service `{name}` extends undefined service `{base_name}`{}",
                super::profiles::suggest(
                    &base_name,
                    tree.get("services")
                        .and_then(Node::as_map)
                        .map(|m| m.keys().collect::<Vec<_>>())
                        .unwrap_or_default()
                        .into_iter()
                )
            ),
        ));
    }
    stack.push(key);
    let mut base = resolve_service(
        &base_path, &base_name, current, cache, env, log, stack, lenient,
    )?;
    stack.pop();
    let base_dir = base_path.parent().unwrap_or(Path::new("/"));
    if base_dir != dir {
        absolutize_service(&mut base, base_dir);
    }
    let mut over = svc;
    if let Some(m) = over.as_map_mut() {
        m.shift_remove("extends");
    }
    if let Some(m) = base.as_map_mut() {
        m.shift_remove("extends");
    }
    // Merge as a later file over an earlier one, at the service's path.
    let wrap = |n: Node| {
        let pos = n.pos.clone();
        let mut svcs = IndexMap::new();
        svcs.insert(name.to_owned(), n);
        let mut top = IndexMap::new();
        top.insert(
            "services".to_owned(),
            Node::new(Value::Map(svcs), pos.clone()),
        );
        Node::new(Value::Map(top), pos)
    };
    let merged = merge_files(wrap(base), wrap(over));
    let out = merged
        .get("services")
        .and_then(|s| s.get(name))
        .cloned()
        .unwrap_or_else(|| Node::new(Value::Map(IndexMap::new()), merged.pos.clone()));
    Ok(out)
}

fn abs_str(dir: &Path, s: &str) -> String {
    if s.starts_with('.') {
        absolute(dir, Path::new(s)).to_string_lossy().into_owned()
    } else {
        s.to_owned()
    }
}

fn is_local_path(s: &str) -> bool {
    s.starts_with('.')
        || (!s.contains("://")
            && !s.starts_with('/')
            && !s.starts_with('~')
            && !s.starts_with("git@"))
}

/// Makes the relative paths of one service node absolute against `dir`.
pub fn absolutize_service(svc: &mut Node, dir: &Path) {
    let Some(m) = svc.as_map_mut() else {
        return;
    };
    if let Some(b) = m.get_mut("build") {
        match &mut b.value {
            Value::Str(s) if is_local_path(s) => {
                *s = absolute(dir, Path::new(s.as_str()))
                    .to_string_lossy()
                    .into_owned();
            }
            Value::Map(bm) => match bm.get_mut("context") {
                Some(c) => {
                    if let Value::Str(s) = &mut c.value
                        && is_local_path(s)
                    {
                        *s = absolute(dir, Path::new(s.as_str()))
                            .to_string_lossy()
                            .into_owned();
                    }
                }
                None => {
                    let pos = b.pos.clone();
                    bm.insert(
                        "context".to_owned(),
                        Node::new(Value::Str(dir.to_string_lossy().into_owned()), pos),
                    );
                }
            },
            _ => {}
        }
    }
    for key in ["env_file", "label_file"] {
        if let Some(n) = m.get_mut(key) {
            match &mut n.value {
                Value::Str(s) => {
                    *s = absolute(dir, Path::new(s.as_str()))
                        .to_string_lossy()
                        .into_owned();
                }
                Value::Seq(items) => {
                    for it in items {
                        match &mut it.value {
                            Value::Str(s) => {
                                *s = absolute(dir, Path::new(s.as_str()))
                                    .to_string_lossy()
                                    .into_owned();
                            }
                            Value::Map(em) => {
                                if let Some(Value::Str(s)) =
                                    em.get_mut("path").map(|p| &mut p.value)
                                {
                                    *s = absolute(dir, Path::new(s.as_str()))
                                        .to_string_lossy()
                                        .into_owned();
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(Value::Seq(vols)) = m.get_mut("volumes").map(|v| &mut v.value) {
        for v in vols {
            match &mut v.value {
                Value::Str(s) => {
                    let mut parts: Vec<String> = s.split(':').map(str::to_owned).collect();
                    if parts.len() >= 2 && parts[0].starts_with('.') {
                        parts[0] = abs_str(dir, &parts[0]);
                        *s = parts.join(":");
                    }
                }
                Value::Map(vm) => {
                    let is_bind = vm.get("type").and_then(Node::as_str) == Some("bind");
                    if is_bind
                        && let Some(Value::Str(s)) = vm.get_mut("source").map(|p| &mut p.value)
                        && !s.starts_with('/')
                        && !s.starts_with('~')
                    {
                        *s = absolute(dir, Path::new(s.as_str()))
                            .to_string_lossy()
                            .into_owned();
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(Value::Map(dev)) = m.get_mut("develop").map(|d| &mut d.value)
        && let Some(Value::Seq(rules)) = dev.get_mut("watch").map(|w| &mut w.value)
    {
        for r in rules {
            if let Value::Map(rm) = &mut r.value
                && let Some(Value::Str(s)) = rm.get_mut("path").map(|p| &mut p.value)
                && !s.starts_with('/')
            {
                *s = absolute(dir, Path::new(s.as_str()))
                    .to_string_lossy()
                    .into_owned();
            }
        }
    }
}

/// Makes the relative paths of a whole file tree absolute against `dir` (services, secret
/// and config files).
pub fn absolutize_tree(tree: &mut Node, dir: &Path) {
    if let Some(services) = tree
        .as_map_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Node::as_map_mut)
    {
        for svc in services.values_mut() {
            absolutize_service(svc, dir);
        }
    }
    for kind in ["secrets", "configs"] {
        if let Some(items) = tree
            .as_map_mut()
            .and_then(|m| m.get_mut(kind))
            .and_then(Node::as_map_mut)
        {
            for item in items.values_mut() {
                if let Some(Value::Str(s)) = item
                    .as_map_mut()
                    .and_then(|m| m.get_mut("file"))
                    .map(|f| &mut f.value)
                    && !s.starts_with('/')
                    && !s.starts_with('~')
                {
                    *s = absolute(dir, Path::new(s.as_str()))
                        .to_string_lossy()
                        .into_owned();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn extends_same_and_other_file() {
        let tmp = tempfile::tempdir().unwrap();
        let main = write(
            tmp.path(),
            "compose.yaml",
            "services:\n  base: {image: a, environment: {A: '1'}}\n  web:\n    extends: base\n    environment: {B: '2'}\n  other:\n    extends: {file: sub/common.yaml, service: tmpl}\n",
        );
        write(
            tmp.path(),
            "sub/common.yaml",
            "services:\n  tmpl: {image: t, build: ./ctx, volumes: ['./data:/data']}\n",
        );
        let mut log = Vec::new();
        let mut tree = read_tree(&main, None, &mut log).unwrap();
        apply_extends(&mut tree, &main, None, &mut log, false).unwrap();
        let v = tree.to_json("", &mut Default::default());
        assert_eq!(v["services"]["web"]["image"], "a");
        assert_eq!(
            v["services"]["web"]["environment"],
            serde_json::json!({"A": "1", "B": "2"})
        );
        assert!(v["services"]["web"].get("extends").is_none());
        let sub = tmp.path().join("sub");
        assert_eq!(
            v["services"]["other"]["build"],
            sub.join("ctx").to_string_lossy().as_ref()
        );
        assert_eq!(
            v["services"]["other"]["volumes"][0],
            format!("{}:/data", sub.join("data").display())
        );
    }

    #[test]
    fn extends_loops_and_unknown_services_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let main = write(
            tmp.path(),
            "compose.yaml",
            "services:\n  a: {extends: b}\n  b: {extends: a}\n",
        );
        let mut log = Vec::new();
        let mut tree = read_tree(&main, None, &mut log).unwrap();
        let e = apply_extends(&mut tree, &main, None, &mut log, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("circular extends"), "{e}");
        let main = write(tmp.path(), "c2.yaml", "services:\n  a: {extends: nope}\n");
        let mut tree = read_tree(&main, None, &mut log).unwrap();
        let e = apply_extends(&mut tree, &main, None, &mut log, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
