//! `ps` and `ls`: what runs, in docker compose's table and JSON shapes.

use std::collections::BTreeMap;

use serde_json::json;

use super::args::{LsArgs, PsArgs};
use super::{open_stack, state_root};
use crate::cli::GlobalArgs;
use crate::engine::compose::{StackOptions, labels};
use crate::engine::container::{
    ContainerStore, HealthStatus, MountKind, Status, Summary as ContainerSummary,
};
use crate::engine::network::Published;

/// "Up 3 minutes", "Exited (0) 2 seconds ago", as Docker words a status.
fn status_text(c: &ContainerSummary) -> String {
    let since = |t: Option<&str>| -> String {
        t.and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| human_duration(jiff::Timestamp::now().duration_since(t).as_secs()))
            .unwrap_or_default()
    };
    match c.state {
        Status::Running => {
            let mut s = format!("Up {}", since(c.started_at.as_deref()));
            match c.health {
                HealthStatus::Healthy => s.push_str(" (healthy)"),
                HealthStatus::Unhealthy => s.push_str(" (unhealthy)"),
                HealthStatus::Starting => s.push_str(" (health: starting)"),
                HealthStatus::None => {}
            }
            s
        }
        Status::Paused => format!("Up {} (Paused)", since(c.started_at.as_deref())),
        Status::Restarting => format!("Restarting ({})", c.exit_code.unwrap_or(0)),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            c.exit_code.unwrap_or(0),
            since(c.finished_at.as_deref())
        ),
        Status::Created => "Created".to_string(),
        Status::Dead if c.damaged.is_some() => "Dead (damaged record)".to_string(),
        Status::Dead => "Dead".to_string(),
    }
}

fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".to_string(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".to_string(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

fn ports_text(ps: &[Published]) -> String {
    ps.iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip, p.host_port, p.container_port, p.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn command_text(c: &ContainerSummary) -> String {
    let full = c.command.join(" ");
    let short: String = full.chars().take(20).collect();
    if full.chars().count() > 20 {
        format!("\"{short}…\"")
    } else {
        format!("\"{full}\"")
    }
}

/// `tug ps`.
///
/// # Errors
/// Loading the project or reading the engine.
pub fn run_ps(global: &GlobalArgs, args: &PsArgs) -> anyhow::Result<i32> {
    let stack = open_stack(global, &[], StackOptions::default())?;
    for n in &args.names {
        if !stack.project.services.contains_key(n) {
            anyhow::bail!("no such service: {n}");
        }
    }
    let mut cs: Vec<ContainerSummary> = stack
        .project_containers()?
        .into_iter()
        .filter(|c| {
            let svc = c.labels.get(labels::SERVICE).map_or("", String::as_str);
            let oneoff = c.labels.get(labels::ONEOFF).map(String::as_str) == Some("True");
            (args.names.is_empty() || args.names.iter().any(|n| n == svc))
                && (args.all
                    || (!oneoff && c.state != Status::Exited && c.state != Status::Created)
                    || !args.status.is_empty())
                && (args.status.is_empty() || args.status.iter().any(|s| s == c.state.as_str()))
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
    if args.services {
        let mut seen: Vec<String> = Vec::new();
        for c in &cs {
            if let Some(s) = c.labels.get(labels::SERVICE)
                && !seen.contains(s)
            {
                seen.push(s.clone());
            }
        }
        for s in seen {
            println!("{s}");
        }
        return Ok(0);
    }
    if args.quiet {
        for c in &cs {
            println!("{}", c.id);
        }
        return Ok(0);
    }
    let rows: Vec<(ContainerSummary, Vec<Published>)> = cs
        .into_iter()
        .map(|c| {
            let p = stack.networks.published(&c.name).unwrap_or_default();
            (c, p)
        })
        .collect();
    if args.format == "json" {
        for (c, p) in &rows {
            let labels_text = c
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let networks: Vec<String> = stack
                .networks
                .endpoints_of_container(&c.name)
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.network)
                .collect();
            let mounts = stack
                .containers
                .inspect(&c.id)
                .map(|i| i.record.config.mounts)
                .unwrap_or_default();
            let obj = json!({
                "Command": command_text(c),
                "CreatedAt": c.created,
                "ExitCode": c.exit_code.unwrap_or(0),
                "Health": match c.health { HealthStatus::None => "", h => h.as_str() },
                "ID": c.id,
                "Image": c.image,
                "Labels": labels_text,
                "LocalVolumes": mounts.iter().filter(|m| m.kind == MountKind::Volume).count().to_string(),
                "Mounts": mounts.iter().map(|m| m.source.display().to_string()).collect::<Vec<_>>().join(","),
                "Name": c.name,
                "Names": c.name,
                "Networks": networks.join(","),
                "Ports": ports_text(p),
                "Project": c.labels.get(labels::PROJECT).cloned().unwrap_or_default(),
                "Publishers": p.iter().map(|p| json!({
                    "URL": p.host_ip.to_string(),
                    "TargetPort": p.container_port,
                    "PublishedPort": p.host_port,
                    "Protocol": p.protocol.to_string(),
                })).collect::<Vec<_>>(),
                "RunningFor": status_text(c),
                "Service": c.labels.get(labels::SERVICE).cloned().unwrap_or_default(),
                "Size": "0B",
                "State": c.state.as_str(),
                "Status": status_text(c),
            });
            println!("{obj}");
        }
        return Ok(0);
    }
    let mut table = vec![[
        "NAME".to_string(),
        "IMAGE".to_string(),
        "COMMAND".to_string(),
        "SERVICE".to_string(),
        "STATUS".to_string(),
        "PORTS".to_string(),
    ]];
    for (c, p) in &rows {
        table.push([
            c.name.clone(),
            c.image.clone(),
            command_text(c),
            c.labels.get(labels::SERVICE).cloned().unwrap_or_default(),
            status_text(c),
            ports_text(p),
        ]);
    }
    print_table(&table);
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
/// Reading the engine.
pub fn run_ls(global: &GlobalArgs, args: &LsArgs) -> anyhow::Result<i32> {
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
        .filter(|(_, (counts, _))| args.all || counts.contains_key("running"))
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
    } else if args.format == "json" {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, s, f)| json!({"Name": n, "Status": s, "ConfigFiles": f}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        let mut table = vec![[
            "NAME".to_string(),
            "STATUS".to_string(),
            "CONFIG FILES".to_string(),
        ]];
        for (n, s, f) in rows {
            table.push([n, s, f]);
        }
        print_table(&table);
    }
    Ok(0)
}
