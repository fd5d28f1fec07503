//! Phase 6b: `include`: bring in the resources of other compose projects.
//!
//! `include: [path/to/compose.yaml, {path: [a.yaml, a.override.yaml], project_directory: dir,
//! env_file: x.env}]`. Each entry is loaded as a project of its own: its files are merged,
//! interpolated with the shell environment over its own env file (default: `.env` in its
//! project directory), its `extends` and nested `include`s resolved, and its relative paths
//! made absolute against its own project directory. Its services, networks, volumes, secrets
//! and configs are then added to the including file; defining the same resource differently
//! in both is an error.

use std::path::{Path, PathBuf};

use super::dotenv;
use super::error::{ProjectError, Result};
use super::extends::{absolutize_tree, apply_extends, read_tree};
use super::find::absolute;
use super::interpolate::{Environment, Lookup, Source};
use super::merge::merge_files;
use super::yaml::{Node, Value};

/// Maximum depth of nested includes.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Resolves the `include` entries of `tree` (a file in directory `dir`).
///
/// # Errors
/// A missing file, a conflicting resource, too deep nesting, or any error of the included
/// project.
// Long: the steps of each `include` entry (paths, env files, loading, name conflicts, merge)
// share the entry and the tree being built.
pub fn apply_includes(
    tree: &mut Node,
    dir: &Path,
    shell: &Environment,
    interpolate: bool,
    log: &mut Vec<Lookup>,
    depth: usize,
) -> Result<()> {
    let Some(inc) = tree.as_map_mut().and_then(|m| m.shift_remove("include")) else {
        return Ok(());
    };
    if depth > MAX_INCLUDE_DEPTH {
        return Err(ProjectError::invalid(
            Some(inc.pos.clone()),
            "include",
            format!("includes nested deeper than {MAX_INCLUDE_DEPTH} levels (an include loop?)"),
        ));
    }
    let Value::Seq(entries) = inc.value else {
        return Err(ProjectError::invalid(
            Some(inc.pos),
            "include",
            "expected a list of paths or mappings",
        ));
    };
    for (i, entry) in entries.into_iter().enumerate() {
        let here = format!("include[{i}]");
        let (paths, project_dir, env_files) = match &entry.value {
            Value::Str(s) => (vec![s.clone()], None, Vec::new()),
            Value::Map(m) => {
                let list = |k: &str| -> Vec<String> {
                    match m.get(k).map(|n| &n.value) {
                        Some(Value::Str(s)) => vec![s.clone()],
                        Some(Value::Seq(items)) => items
                            .iter()
                            .filter_map(|n| n.as_str().map(str::to_owned))
                            .collect(),
                        _ => Vec::new(),
                    }
                };
                (
                    list("path"),
                    m.get("project_directory")
                        .and_then(Node::as_str)
                        .map(str::to_owned),
                    list("env_file"),
                )
            }
            _ => {
                return Err(ProjectError::invalid(
                    Some(entry.pos.clone()),
                    here,
                    format!("expected a path or a mapping, found {}", entry.kind()),
                ));
            }
        };
        if paths.is_empty() {
            return Err(ProjectError::invalid(
                Some(entry.pos.clone()),
                here,
                "`path` is required",
            ));
        }
        let files: Vec<PathBuf> = paths.iter().map(|p| absolute(dir, Path::new(p))).collect();
        for f in &files {
            if !f.is_file() {
                return Err(ProjectError::invalid(
                    Some(entry.pos.clone()),
                    here.clone(),
                    format!("included file {} not found", f.display()),
                ));
            }
        }
        let inc_dir = match &project_dir {
            Some(d) => absolute(dir, Path::new(d)),
            None => files[0].parent().unwrap_or(Path::new("/")).to_path_buf(),
        };
        // The included project's environment: shell over its env files.
        let mut env = Environment::new();
        let env_paths: Vec<PathBuf> = if env_files.is_empty() {
            let dflt = inc_dir.join(".env");
            // A `.env` directory (a Python virtualenv) is not an env file; anything else
            // is read, and refused when it is not a regular file.
            if std::fs::metadata(&dflt).is_ok_and(|m| !m.is_dir()) {
                vec![dflt]
            } else {
                Vec::new()
            }
        } else {
            env_files
                .iter()
                .map(|p| absolute(dir, Path::new(p)))
                .collect()
        };
        for p in &env_paths {
            let entries = dotenv::read(p, shell, false)
                .map_err(|e| e.with_key(&format!("{here}.env_file")))?;
            for e in entries {
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
        for (k, (v, src)) in shell_vars(shell) {
            env.set(k, v, src);
        }
        let env_ref = interpolate.then_some(&env);
        let mut merged: Option<Node> = None;
        for f in &files {
            let mut t = read_tree(f, env_ref, log)?;
            apply_extends(&mut t, f, env_ref, log, false)?;
            apply_includes(
                &mut t,
                f.parent().unwrap_or(Path::new("/")),
                shell,
                interpolate,
                log,
                depth + 1,
            )?;
            merged = Some(match merged {
                None => t,
                Some(m) => merge_files(m, t),
            });
        }
        let Some(mut inc_tree) = merged else {
            continue;
        };
        absolutize_tree(&mut inc_tree, &inc_dir);
        add_resources(tree, inc_tree, &here)?;
    }
    Ok(())
}

fn shell_vars(shell: &Environment) -> Vec<(String, (String, Source))> {
    shell
        .to_map()
        .into_keys()
        .filter_map(|k| shell.lookup(&k).map(|v| (k, v.clone())))
        .collect()
}

fn add_resources(tree: &mut Node, inc: Node, here: &str) -> Result<()> {
    let Value::Map(inc_map) = inc.value else {
        return Ok(());
    };
    let Some(top) = tree.as_map_mut() else {
        return Ok(());
    };
    for kind in ["services", "networks", "volumes", "secrets", "configs"] {
        let Some(Node {
            value: Value::Map(items),
            pos,
            ..
        }) = inc_map.get(kind).cloned()
        else {
            continue;
        };
        let target = top
            .entry(kind.to_owned())
            .or_insert_with(|| Node::new(Value::Map(indexmap::IndexMap::new()), pos.clone()));
        if matches!(target.value, Value::Null) {
            target.value = Value::Map(indexmap::IndexMap::new());
        }
        let Some(tm) = target.as_map_mut() else {
            continue;
        };
        for (k, v) in items {
            match tm.get(&k) {
                Some(existing) if !same(existing, &v) => {
                    return Err(ProjectError::invalid(
                        Some(existing.pos.clone()),
                        format!("{kind}.{k}"),
                        format!("conflicts with the {kind} `{k}` imported by {here}"),
                    ));
                }
                Some(_) => {}
                None => {
                    tm.insert(k, v);
                }
            }
        }
    }
    Ok(())
}

fn same(a: &Node, b: &Node) -> bool {
    a.to_json("", &mut Default::default()) == b.to_json("", &mut Default::default())
}
