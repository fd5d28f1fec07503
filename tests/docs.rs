//! The user docs stay true: `docs/cli.md` and the man pages in `docs/man/` are what the clap
//! definitions generate, `docs/compose-compatibility.md` has a row for every key of the
//! compose schema in `schema/`, and README's commands are the ones the repository runs.
//!
//! After changing a verb or a flag, regenerate the generated files with
//! `TUG_UPDATE_DOCS=1 cargo nextest run -E 'test(/^docs::/)'`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn updating() -> bool {
    std::env::var_os("TUG_UPDATE_DOCS").is_some_and(|v| v == "1")
}

/// Compares a generated file with the committed one (or writes it with `TUG_UPDATE_DOCS=1`).
fn check_generated(path: &Path, generated: &str) {
    if updating() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "{} is not what the clap definitions generate (first difference at line {line}): \
             run TUG_UPDATE_DOCS=1 cargo nextest run -E 'test(/^docs::/)' and commit the result",
            path.display()
        );
    }
}

/// The whole command line, every verb defined, `help` left out.
fn cli() -> clap::Command {
    let mut cmd = tug::cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

const PROJECT_OPTIONS: &str = "Project options";

fn flag_names(a: &clap::Arg) -> String {
    let mut names = Vec::new();
    if let Some(s) = a.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("--{l}"));
    }
    let takes_value = a.get_action().takes_values();
    let value = if takes_value {
        a.get_value_names()
            .map(|v| {
                v.iter()
                    .map(|n| format!("<{n}>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| format!("<{}>", a.get_id().as_str().to_uppercase()))
    } else {
        String::new()
    };
    if names.is_empty() {
        // A positional argument.
        let v = if value.is_empty() {
            format!("<{}>", a.get_id().as_str().to_uppercase())
        } else {
            value
        };
        let many = matches!(a.get_num_args(), Some(r) if r.max_values() > 1);
        return format!("`{v}{}`", if many { "..." } else { "" });
    }
    let mut s = names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if !value.is_empty() {
        let _ = write!(s, " `{value}`");
    }
    s
}

fn arg_help(a: &clap::Arg) -> String {
    let mut parts = vec![
        a.get_long_help()
            .or(a.get_help())
            .map(ToString::to_string)
            .unwrap_or_default()
            .replace('\n', " ")
            .trim()
            .trim_end_matches('.')
            .to_string(),
    ];
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !values.is_empty() && values.len() <= 12 {
        parts.push(format!("Values: {}", values.join(", ")));
    }
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && a.get_action().takes_values() {
        parts.push(format!("Default: `{}`", defaults.join(",")));
    }
    if let Some(env) = a.get_env() {
        parts.push(format!("Environment: `{}`", env.to_string_lossy()));
    }
    parts.retain(|p| !p.is_empty());
    format!("{}.", parts.join(". "))
}

fn about(c: &clap::Command) -> String {
    c.get_long_about()
        .or(c.get_about())
        .map(ToString::to_string)
        .unwrap_or_default()
}

fn anchor(path: &str) -> String {
    path.replace(' ', "-")
}

fn render_command(out: &mut String, c: &clap::Command, path: &str, top: bool) {
    if !top {
        let _ = writeln!(out, "## {path}\n");
        let text = about(c);
        if !text.is_empty() {
            let _ = writeln!(out, "{text}\n");
        }
        let usage = c.clone().render_usage().to_string();
        let _ = writeln!(out, "```\n{}\n```\n", usage.trim());
    }
    let args: Vec<&clap::Arg> = c
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter(|a| a.get_id() != "help" && a.get_id() != "version")
        .filter(|a| top || !a.is_global_set())
        .filter(|a| top || a.get_help_heading() != Some(PROJECT_OPTIONS))
        .collect();
    let positionals: Vec<&&clap::Arg> = args.iter().filter(|a| a.is_positional()).collect();
    let options: Vec<&&clap::Arg> = args.iter().filter(|a| !a.is_positional()).collect();
    if !positionals.is_empty() {
        let _ = writeln!(out, "Arguments:\n");
        for a in positionals {
            let _ = writeln!(out, "- {}: {}", flag_names(a), arg_help(a));
        }
        out.push('\n');
    }
    if !options.is_empty() {
        let _ = writeln!(out, "Options:\n");
        for a in options {
            let _ = writeln!(out, "- {}: {}", flag_names(a), arg_help(a));
        }
        out.push('\n');
    }
    if !top
        && c.get_arguments()
            .any(|a| a.get_help_heading() == Some(PROJECT_OPTIONS))
    {
        let _ = writeln!(
            out,
            "Also takes the [project options](#project-options) (long forms only after the verb).\n"
        );
    }
    let subs: Vec<&clap::Command> = c.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !subs.is_empty() && !top {
        let _ = writeln!(out, "Commands:\n");
        for s in &subs {
            let p = format!("{path} {}", s.get_name());
            let _ = writeln!(
                out,
                "- [`{}`](#{}): {}",
                s.get_name(),
                anchor(&p),
                s.get_about().map(ToString::to_string).unwrap_or_default()
            );
        }
        out.push('\n');
    }
    for s in subs {
        render_command(out, s, &format!("{path} {}", s.get_name()), false);
    }
}

/// docs/cli.md: every visible verb, its usage, arguments and options, from the clap
/// definitions.
fn cli_markdown() -> String {
    let cmd = cli();
    let mut out = String::new();
    out.push_str(
        "# tug command line\n\n\
         <!-- Generated from the clap definitions by tests/docs.rs; do not edit. Regenerate with \
         TUG_UPDATE_DOCS=1 cargo nextest run -E 'test(/^docs::/)'. -->\n\n",
    );
    let _ = writeln!(
        out,
        "{}\n\n`tug --help` and `tug VERB --help` print the same; `man tug` and `man tug-VERB` \
         too, once the pages in `docs/man/` are installed (see [getting-started.md](getting-started.md)).\n",
        about(&cmd)
    );
    let _ = writeln!(
        out,
        "```\n{}\n```\n",
        cmd.clone().render_usage().to_string().trim()
    );
    let _ = writeln!(out, "## Options of every command\n");
    let top: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help")
        .collect();
    for a in top
        .iter()
        .filter(|a| a.get_help_heading() != Some(PROJECT_OPTIONS))
    {
        let _ = writeln!(out, "- {}: {}", flag_names(a), arg_help(a));
    }
    let _ = writeln!(
        out,
        "\n## Project options\n\n\
         docker compose's project options. They come before the verb (`tug -f a.yaml up`); the \
         verbs that load a project also take their long forms after the verb \
         (`tug up --file a.yaml`). The engine verbs (`image`, `container`, `network`, `volume`, \
         `builder`) do not take them.\n"
    );
    for a in top
        .iter()
        .filter(|a| a.get_help_heading() == Some(PROJECT_OPTIONS))
    {
        let _ = writeln!(out, "- {}: {}", flag_names(a), arg_help(a));
    }
    let _ = writeln!(out, "\n## Commands\n");
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let p = format!("tug {}", s.get_name());
        let _ = writeln!(
            out,
            "- [`{}`](#{}): {}",
            s.get_name(),
            anchor(&p),
            s.get_about().map(ToString::to_string).unwrap_or_default()
        );
    }
    out.push('\n');
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_command(&mut out, s, &format!("tug {}", s.get_name()), false);
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[test]
fn docs_cli_reference_is_generated_from_the_clap_definitions() {
    let md = cli_markdown();
    // Every visible verb is in it.
    for s in cli().get_subcommands().filter(|s| !s.is_hide_set()) {
        assert!(
            md.contains(&format!("## tug {}\n", s.get_name())),
            "{}",
            s.get_name()
        );
    }
    check_generated(&repo().join("docs/cli.md"), &md);
}

#[test]
fn docs_man_pages_are_generated_from_the_clap_definitions() {
    let tmp = tempfile::tempdir().unwrap();
    clap_mangen::generate_to(cli(), tmp.path()).unwrap();
    let dir = repo().join("docs/man");
    let names = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let generated = names(tmp.path());
    assert!(generated.contains("tug.1") && generated.contains("tug-up.1"));
    if updating() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    for n in &generated {
        let text = std::fs::read_to_string(tmp.path().join(n)).unwrap();
        check_generated(&dir.join(n), &text);
    }
    let stale: Vec<String> = names(&dir).difference(&generated).cloned().collect();
    assert!(
        stale.is_empty(),
        "docs/man/ has pages of no command: {stale:?} (TUG_UPDATE_DOCS=1 regenerates the directory)"
    );
}

/// Every key path of the compose schema: `services.*.build.context`, `include[].path`; `*` is
/// a name (a map key), `[]` a list entry. Extension keys (`x-…`) are left out.
fn schema_keys() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("schema/compose-spec.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let defs = schema["$defs"].clone();
    let resolve = |n: &serde_json::Value| -> serde_json::Value {
        let mut n = n.clone();
        for _ in 0..10 {
            let Some(r) = n.get("$ref").and_then(|r| r.as_str()).map(str::to_string) else {
                break;
            };
            n = defs[r.rsplit('/').next().unwrap()].clone();
        }
        n
    };
    fn walk(
        node: &serde_json::Value,
        path: &str,
        depth: usize,
        resolve: &dyn Fn(&serde_json::Value) -> serde_json::Value,
        out: &mut BTreeSet<String>,
    ) {
        let node = resolve(node);
        if depth > 8 || !node.is_object() {
            return;
        }
        let mut alts = vec![node.clone()];
        for k in ["oneOf", "anyOf", "allOf"] {
            if let Some(list) = node[k].as_array() {
                alts.extend(list.iter().map(resolve));
            }
        }
        for o in &alts {
            if let Some(items) = o.get("items") {
                walk(items, &format!("{path}[]"), depth + 1, resolve, out);
            }
            if let Some(props) = o.get("properties").and_then(|p| p.as_object()) {
                for (k, v) in props {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.insert(p.clone());
                    walk(v, &p, depth + 1, resolve, out);
                }
            }
            if let Some(pats) = o.get("patternProperties").and_then(|p| p.as_object()) {
                for (pat, v) in pats {
                    if !pat.starts_with("^x-") {
                        walk(v, &format!("{path}.*"), depth + 1, resolve, out);
                    }
                }
            }
            if let Some(ap) = o.get("additionalProperties").filter(|a| a.is_object()) {
                walk(ap, &format!("{path}.*"), depth + 1, resolve, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&schema, "", 0, &resolve, &mut out);
    out
}

#[test]
fn docs_compose_compatibility_table_has_every_schema_key() {
    let keys = schema_keys();
    assert!(
        keys.contains("services.*.develop.watch[].action"),
        "{keys:?}"
    );
    assert!(keys.len() > 300, "{}", keys.len());
    let doc = std::fs::read_to_string(repo().join("docs/compose-compatibility.md")).unwrap();
    let mut rows = BTreeSet::new();
    let mut bad = Vec::new();
    for (n, line) in doc.lines().enumerate() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((key, rest)) = rest.split_once('`') else {
            continue;
        };
        let cells: Vec<&str> = rest.split('|').map(str::trim).collect();
        let status = cells.get(1).copied().unwrap_or("");
        if !["yes", "partial", "no"].contains(&status) {
            bad.push(format!(
                "line {}: {key}: status {status:?} (yes, partial or no)",
                n + 1
            ));
        }
        if cells.get(2).is_none_or(|c| c.is_empty()) && status != "yes" {
            bad.push(format!(
                "line {}: {key}: says {status} without saying how",
                n + 1
            ));
        }
        if !rows.insert(key.to_string()) {
            bad.push(format!("line {}: {key} twice", n + 1));
        }
    }
    let missing: Vec<&String> = keys.difference(&rows).collect();
    let extra: Vec<&String> = rows.difference(&keys).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && bad.is_empty(),
        "docs/compose-compatibility.md against schema/compose-spec.json:\n\
         keys with no row: {missing:?}\nrows of no key: {extra:?}\n{}",
        bad.join("\n")
    );
}

/// The packages `.ci/run` installs with apt (its first install list).
fn ci_packages() -> Vec<String> {
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let start = ci.find("apt-get install").unwrap();
    let block = &ci[start..];
    let end = block.find(">/dev/null").unwrap();
    block[..end]
        .split_whitespace()
        .filter(|w| !w.starts_with('-') && *w != "\\" && *w != "apt-get" && *w != "install")
        .map(str::to_string)
        .collect()
}

#[test]
fn docs_readme_commands_are_the_ones_the_repository_runs() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(blocks.len() >= 2, "README has its two commands");
    // 1. The quickstart script, which exists and is executable.
    assert!(
        blocks[0].contains("./examples/quickstart/run.sh"),
        "{}",
        blocks[0]
    );
    let script = repo().join("examples/quickstart/run.sh");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&script).unwrap().permissions());
    assert!(mode & 0o111 != 0, "run.sh is not executable");
    // 2. The test command: what .ci/run runs, after installing the packages it installs.
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let test_cmd = ci
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap()
        .trim();
    assert_eq!(test_cmd, "cargo nextest run --locked");
    assert!(blocks[1].contains(test_cmd), "{}", blocks[1]);
    let readme_pkgs: BTreeSet<&str> = blocks[1]
        .split("install -y")
        .nth(1)
        .and_then(|s| s.split("&&").next())
        .unwrap_or("")
        .split_whitespace()
        .filter(|w| !w.starts_with('-'))
        .collect();
    let ci_pkgs = ci_packages();
    let ci_set: BTreeSet<&str> = ci_pkgs.iter().map(String::as_str).collect();
    assert_eq!(
        readme_pkgs, ci_set,
        "README's test command installs what .ci/run installs"
    );
    // Every package a test names for its tools is in the list.
    let common = std::fs::read_to_string(repo().join("tests/common/mod.rs")).unwrap();
    let table = common.split("TOOL_PACKAGES").nth(1).unwrap();
    let table = &table[..table.find("];").unwrap()];
    for pkg in table
        .lines()
        .filter_map(|l| l.trim().strip_prefix("(\""))
        .filter_map(|l| l.split("\", \"").nth(1).map(|p| p.trim_end_matches("\"),")))
    {
        if pkg != "coreutils" {
            assert!(
                ci_set.contains(pkg),
                "{pkg} (tests/common TOOL_PACKAGES) is not installed by .ci/run"
            );
        }
    }
    // The docs README links to exist.
    for link in readme
        .split("](")
        .skip(1)
        .filter_map(|l| l.split(')').next())
    {
        if !link.starts_with("http") && !link.starts_with('#') {
            let path: PathBuf = repo().join(link.split('#').next().unwrap());
            assert!(
                path.exists(),
                "README links to {link}, which does not exist"
            );
        }
    }
}
