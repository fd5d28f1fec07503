//! `tug stats`: what the project's containers use, from their cgroups and network
//! namespaces, in docker's columns and words (`CPU %` over the last second against the
//! whole machine, memory without the inactive file cache, against the limit or the host's
//! memory).

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use serde_json::json;

use super::args::StatsArgs;
use super::open_stack;
use crate::cli::GlobalArgs;
use crate::cli::format::{Row, Template};
use crate::compose::{StackOptions, labels};
use crate::engine::container::{Status, Summary};
use crate::engine::runtime::cgroups::Usage;

const TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

const HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Container", "CONTAINER"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// CPU time of the whole machine (every CPU, every state but idle and iowait), in
/// nanoseconds, and the number of CPUs, from `/proc/stat`.
fn system_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut total = 0;
    let mut cpus = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            // user nice system idle iowait irq softirq steal: docker counts them all.
            total = rest
                .split_whitespace()
                .take(8)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>();
        } else if line.starts_with("cpu") {
            cpus += 1;
        }
    }
    // SAFETY: sysconf has no preconditions.
    let tick = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|t| *t > 0)
        .unwrap_or(100);
    (total * (1_000_000_000 / tick), cpus.max(1))
}

/// Bytes received and sent on the interfaces of a process's network namespace (not `lo`).
fn net_io(pid: Option<i32>) -> (u64, u64) {
    let Some(pid) = pid else { return (0, 0) };
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let Some((iface, rest)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        rx += f.first().copied().unwrap_or(0);
        tx += f.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

/// The host's memory, for containers without a limit.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A number with `sig` significant digits and no trailing zeros (Go's `%.Ng`, for the
/// magnitudes sizes have here).
fn significant(v: f64, sig: usize) -> String {
    let digits = if v >= 1.0 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let int = v.log10().floor() as usize + 1;
        sig.saturating_sub(int)
    } else {
        sig
    };
    let mut t = format!("{v:.digits$}");
    if t.contains('.') {
        t = t.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    t
}

/// A size as docker's `BytesSize` prints it: binary units, four significant digits
/// (`320KiB`, `23.54GiB`).
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", significant(v, 4), UNITS[i])
}

/// A size as docker's `HumanSizeWithPrecision(n, 3)` prints it (`1kB`, `2.13MB`).
fn decimal_size(bytes: u64) -> String {
    super::verbs::human_size(bytes)
}

struct Sample {
    usage: Usage,
    net: (u64, u64),
    system: u64,
}

fn sample(stack: &crate::compose::Stack, c: &Summary) -> Sample {
    let usage = stack.usage(&c.id);
    Sample {
        usage,
        net: net_io(c.pid),
        system: system_cpu().0,
    }
}

fn row(c: &Summary, before: &Sample, now: &Sample, cpus: u64, trunc: bool, host: u64) -> Row {
    let running = matches!(c.state, Status::Running | Status::Paused);
    let cpu_delta = now.usage.cpu_ns.saturating_sub(before.usage.cpu_ns);
    let sys_delta = now.system.saturating_sub(before.system);
    #[allow(clippy::cast_precision_loss)]
    let cpu = if sys_delta > 0 && running {
        cpu_delta as f64 / sys_delta as f64 * cpus as f64 * 100.0
    } else {
        0.0
    };
    let used = now.usage.memory.saturating_sub(now.usage.inactive_file);
    let limit = now.usage.memory_limit.unwrap_or(host).min(host.max(1));
    #[allow(clippy::cast_precision_loss)]
    let mem_pct = if limit > 0 && running {
        used as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    let (mem, net, block) = if running {
        (
            format!("{} / {}", binary_size(used), binary_size(limit)),
            format!("{} / {}", decimal_size(now.net.0), decimal_size(now.net.1)),
            format!(
                "{} / {}",
                decimal_size(now.usage.read_bytes),
                decimal_size(now.usage.write_bytes)
            ),
        )
    } else {
        ("0B / 0B".into(), "0B / 0B".into(), "0B / 0B".into())
    };
    Row::new([
        ("BlockIO", json!(block)),
        ("CPUPerc", json!(format!("{cpu:.2}%"))),
        ("Container", json!(c.id)),
        (
            "ID",
            json!(if trunc {
                c.id.chars().take(12).collect::<String>()
            } else {
                c.id.clone()
            }),
        ),
        ("MemPerc", json!(format!("{mem_pct:.2}%"))),
        ("MemUsage", json!(mem)),
        ("Name", json!(c.name)),
        ("NetIO", json!(net)),
        (
            "PIDs",
            json!(if running {
                now.usage.pids.to_string()
            } else {
                "0".to_owned()
            }),
        ),
    ])
    .with_labels(c.labels.clone())
}

/// `tug stats`.
///
/// # Errors
/// Loading, a service that does not exist, a bad `--format`.
pub fn run_stats(global: &GlobalArgs, args: &StatsArgs) -> anyhow::Result<i32> {
    let template = Template::parse(&args.format, TABLE).map_err(anyhow::Error::msg)?;
    let stack = open_stack(global, &[], StackOptions::default())?;
    if let Some(s) = &args.service
        && !stack.project().services.contains_key(s)
    {
        anyhow::bail!("no such service: {s}");
    }
    let (_, cpus) = system_cpu();
    let host = host_memory();
    let terminal = std::io::stdout().is_terminal();
    let mut before: BTreeMap<String, Sample> = BTreeMap::new();
    loop {
        let started = Instant::now();
        let mut cs: Vec<Summary> = stack
            .project_containers()?
            .into_iter()
            .filter(|c| {
                c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
                    && args
                        .service
                        .as_ref()
                        .is_none_or(|s| c.labels.get(labels::SERVICE) == Some(s))
                    && (args.all || matches!(c.state, Status::Running | Status::Paused))
            })
            .collect();
        cs.sort_by(|a, b| a.name.cmp(&b.name));
        if before.is_empty() {
            // The first CPU figure needs a second sample.
            for c in &cs {
                before.insert(c.id.clone(), sample(&stack, c));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let mut rows = Vec::new();
        let mut next = BTreeMap::new();
        for c in &cs {
            let now = sample(&stack, c);
            let prev = before.remove(&c.id).unwrap_or(Sample {
                usage: now.usage,
                net: now.net,
                system: now.system,
            });
            rows.push(row(c, &prev, &now, cpus, !args.no_trunc, host));
            next.insert(c.id.clone(), now);
        }
        before = next;
        let text = template
            .render(&rows, HEADERS)
            .map_err(anyhow::Error::msg)?;
        let mut out = std::io::stdout().lock();
        if !args.no_stream && terminal {
            // Redraw in place, as docker does.
            out.write_all(b"\x1b[2J\x1b[H")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if args.no_stream {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_docker_s_words() {
        assert_eq!(binary_size(327_680), "320KiB");
        assert_eq!(binary_size(25_275_136_000), "23.54GiB");
        assert_eq!(binary_size(1_572_864), "1.5MiB");
        assert_eq!(binary_size(0), "0B");
        assert_eq!(decimal_size(1000), "1kB");
        assert_eq!(decimal_size(2_130_000), "2.13MB");
    }
}
