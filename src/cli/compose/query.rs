//! `ps` and `ls`: what runs, in docker compose's table and JSON shapes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::args::{LsArgs, PsArgs};
use super::{open_stack, state_root};
use crate::cli::GlobalArgs;
use crate::cli::format;
use crate::cli::listing;
use crate::compose::{StackOptions, labels};
use crate::engine::container::{ContainerStore, Status, Summary as ContainerSummary};

/// `tug ps`.
///
/// # Errors
/// Loading the project, reading the engine, or a bad `--filter`/`--format`.
pub fn run_ps(global: &GlobalArgs, args: &PsArgs) -> anyhow::Result<i32> {
    let mut statuses = args.status.clone();
    if let Some(f) = &args.filter {
        match f.split_once('=') {
            Some(("status", v)) => statuses.push(v.to_owned()),
            Some(("source", _)) => anyhow::bail!("ps --filter source is not supported"),
            Some((k, _)) => anyhow::bail!("unknown filter {k}"),
            None => anyhow::bail!("arguments to --filter should be in form KEY=VAL"),
        }
    }
    let template =
        format::Template::parse(&args.format, listing::PS_TABLE).map_err(anyhow::Error::msg)?;
    let stack = open_stack(global, &[], StackOptions::default())?;
    for n in &args.names {
        if !stack.project().services.contains_key(n) {
            anyhow::bail!("no such service: {n}");
        }
    }
    let known = |svc: &str| stack.project().services.contains_key(svc);
    let all = args.all || !statuses.is_empty();
    let mut cs: Vec<ContainerSummary> = stack
        .project_containers()?
        .into_iter()
        .filter(|c| {
            let svc = c.labels.get(labels::SERVICE).map_or("", String::as_str);
            let oneoff = c.labels.get(labels::ONEOFF).map(String::as_str) == Some("True");
            let shown = if all {
                true
            } else {
                !oneoff
                    && matches!(
                        c.state,
                        Status::Running | Status::Paused | Status::Restarting
                    )
            };
            (args.names.is_empty() || args.names.iter().any(|n| n == svc))
                && (args.orphans || known(svc))
                && shown
                && (statuses.is_empty() || statuses.iter().any(|s| s == c.state.as_str()))
        })
        .collect();
    cs.sort_by(|a, b| a.name.cmp(&b.name));
    for c in cs.iter().filter(|c| c.damaged.is_some()) {
        eprintln!(
            "warning: container {} is damaged: {}",
            c.name,
            c.damaged.as_deref().unwrap_or_default()
        );
    }
    if args.quiet {
        for c in &cs {
            println!("{}", c.id);
        }
        return Ok(0);
    }
    if args.services {
        let mut seen: Vec<String> = Vec::new();
        for c in &cs {
            if let Some(s) = c.labels.get(labels::SERVICE)
                && !seen.contains(s)
            {
                seen.push(s.clone());
            }
        }
        println!("{}", seen.join("\n"));
        return Ok(0);
    }
    let expose = |c: &ContainerSummary| -> Vec<String> {
        c.labels
            .get(labels::SERVICE)
            .and_then(|s| stack.project().services.get(s))
            .map(|s| s.expose.clone())
            .unwrap_or_default()
    };
    let record = |id: &str| stack.record(id);
    let published = |name: &str| stack.published(name);
    let networks = |name: &str| stack.networks_of(name);
    let ctx = listing::Context {
        root: stack.root(),
        record: &record,
        published: &published,
        networks: &networks,
        expose: &expose,
    };
    let rows: Vec<format::Row> = cs
        .iter()
        .map(|c| listing::container_row(&ctx, c, !args.no_trunc))
        .collect();
    let out = template
        .render(&rows, listing::CONTAINER_HEADERS)
        .map_err(anyhow::Error::msg)?;
    print!("{out}");
    Ok(0)
}

/// Prints rows as left-aligned columns separated by three spaces.
pub(crate) fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `tug ls`: projects found in the state root, by their containers' labels.
///
/// # Errors
/// Reading the engine, or a bad `--filter`/`--format`.
pub fn run_ls(global: &GlobalArgs, args: &LsArgs) -> anyhow::Result<i32> {
    let mut name_filters = Vec::new();
    for f in &args.filter {
        match f.split_once('=') {
            Some(("name", v)) => name_filters.push(
                regex::Regex::new(v).map_err(|e| anyhow::anyhow!("invalid filter {f:?}: {e}"))?,
            ),
            Some((k, _)) => anyhow::bail!("invalid filter '{k}'"),
            None => anyhow::bail!("bad format of filter (expected name=value)"),
        }
    }
    let template = list_template(
        &args.format,
        "table {{.Name}}\t{{.Status}}\t{{.ConfigFiles}}",
    )?;
    let root = state_root(global)?;
    let store = ContainerStore::open(&root)?;
    let mut projects: BTreeMap<String, (BTreeMap<&'static str, usize>, String)> = BTreeMap::new();
    let all = store.list(true)?;
    for c in &all {
        let Some(p) = c.labels.get(labels::PROJECT) else {
            continue;
        };
        let e = projects.entry(p.clone()).or_default();
        *e.0.entry(c.state.as_str()).or_default() += 1;
        if e.1.is_empty() {
            e.1 = c
                .labels
                .get(labels::CONFIG_FILES)
                .cloned()
                .unwrap_or_default();
        }
    }
    let rows: Vec<(String, String, String)> = projects
        .into_iter()
        .filter(|(name, (counts, _))| {
            (args.all || counts.contains_key("running"))
                && name_filters.iter().all(|r| r.is_match(name))
        })
        .map(|(name, (counts, files))| {
            let mut status = counts
                .iter()
                .map(|(s, n)| format!("{s}({n})"))
                .collect::<Vec<_>>()
                .join(", ");
            if crate::cli::watch::is_watching(&root, &name) {
                status.push_str(", watching");
            }
            (name, status, files)
        })
        .collect();
    if args.quiet {
        for r in &rows {
            println!("{}", r.0);
        }
        return Ok(0);
    }
    let objects: Vec<format::Row> = rows
        .iter()
        .map(|(n, s, f)| {
            let mut r = format::Row::default();
            r.fields.insert("Name".into(), json!(n));
            r.fields.insert("Status".into(), json!(s));
            r.fields.insert("ConfigFiles".into(), json!(f));
            r
        })
        .collect();
    print!(
        "{}",
        render_list(
            &template,
            &objects,
            &[
                ("Name", "NAME"),
                ("Status", "STATUS"),
                ("ConfigFiles", "CONFIG FILES")
            ],
            false,
        )?
    );
    Ok(0)
}

/// The format of a compose listing verb (`ls`, `images`, `volumes`): `table` (the default),
/// `json` (one array), or a template.
pub(crate) enum ListFormat {
    /// A JSON array of all rows.
    JsonArray,
    /// A template (tables included).
    Template(format::Template),
}

/// Parses the `--format` of a listing verb.
///
/// # Errors
/// A template outside the supported subset.
pub(crate) fn list_template(format: &str, table: &str) -> anyhow::Result<ListFormat> {
    if format.trim().eq_ignore_ascii_case("json") {
        return Ok(ListFormat::JsonArray);
    }
    let f = if format.trim().eq_ignore_ascii_case("pretty") {
        "table"
    } else {
        format
    };
    Ok(ListFormat::Template(
        format::Template::parse(f, table).map_err(anyhow::Error::msg)?,
    ))
}

/// Renders a listing as docker compose does: tables with a minimum column width of 20, a
/// JSON array on one line (with an empty line after it when `blank_after_json`, as `images`
/// prints it), or one line per row.
///
/// # Errors
/// A field the rows do not have.
pub(crate) fn render_list(
    fmt: &ListFormat,
    rows: &[format::Row],
    headers: &[(&str, &str)],
    blank_after_json: bool,
) -> anyhow::Result<String> {
    match fmt {
        ListFormat::JsonArray => {
            let v: Vec<Value> = rows
                .iter()
                .map(|r| Value::Object(r.fields.clone()))
                .collect();
            let mut s = serde_json::to_string(&v)?;
            s.push('\n');
            if blank_after_json {
                s.push('\n');
            }
            Ok(s)
        }
        ListFormat::Template(t) => t.render_min(rows, headers, 20).map_err(anyhow::Error::msg),
    }
}
