//! Rows of the container and image listings (`ps`, `container ls`, `images`), with the
//! fields and words docker's clients print, for `--format` templates, JSON and tables.

use std::path::Path;

use serde_json::{Value, json};

use crate::cli::format::{self, ellipsis, go_quote, go_time, human_duration, seconds_since};
use crate::engine::container::{
    HealthStatus, Mount, MountKind, Record, Status, Summary as ContainerSummary,
};
use crate::engine::network::Published;

/// "Up 3 minutes", "Exited (0) 2 seconds ago", as Docker words a status.
pub(crate) fn status_text(c: &ContainerSummary) -> String {
    let since = |t: Option<&str>| human_duration(t.map_or(0, seconds_since));
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
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            c.exit_code.unwrap_or(0),
            since(c.finished_at.as_deref())
        ),
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

/// One port of a container as docker lists it: published (`ip` set) or only exposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortEntry {
    /// Host address; empty for an exposed port.
    pub ip: String,
    /// Port in the container.
    pub private: u16,
    /// Port on the host; 0 for an exposed port.
    pub public: u16,
    /// `tcp`, `udp`, `sctp`.
    pub protocol: String,
}

/// Ports as docker's `DisplayablePorts` prints them: exposed ports (and ports published on
/// the same number) grouped into ranges first, then the other mappings, in port order.
pub(crate) fn ports_text(ports: &[PortEntry]) -> String {
    let mut sorted = ports.to_vec();
    sorted.sort_by(|a, b| {
        (a.private, &a.ip, a.public, &a.protocol).cmp(&(b.private, &b.ip, b.public, &b.protocol))
    });
    // Group key → (first, last), in the order keys appear.
    let mut groups: Vec<(String, u16, u16)> = Vec::new();
    let mut done: Vec<String> = Vec::new();
    let mut mappings: Vec<String> = Vec::new();
    let form = |key: &str, a: u16, b: u16| -> String {
        let (ip, proto) = match key.rsplit_once('/') {
            Some((ip, p)) if !ip.is_empty() => (ip, p),
            _ => ("", key.trim_start_matches('/')),
        };
        let range = if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        };
        if ip.is_empty() {
            format!("{range}/{proto}")
        } else {
            format!("{ip}:{range}->{range}/{proto}")
        }
    };
    for p in &sorted {
        let key = if p.ip.is_empty() {
            format!("/{}", p.protocol)
        } else {
            if p.public != p.private {
                let host = if p.ip.contains(':') {
                    format!("[{}]", p.ip)
                } else {
                    p.ip.clone()
                };
                mappings.push(format!("{host}:{}->{}/{}", p.public, p.private, p.protocol));
                continue;
            }
            format!("{}/{}", p.ip, p.protocol)
        };
        match groups.iter_mut().find(|(k, ..)| *k == key) {
            Some((_, first, last)) if p.private == last.saturating_add(1) => *last = p.private,
            Some(g) => {
                done.push(form(&g.0, g.1, g.2));
                g.1 = p.private;
                g.2 = p.private;
            }
            None => groups.push((key, p.private, p.private)),
        }
    }
    for (k, a, b) in &groups {
        done.push(form(k, *a, *b));
    }
    done.extend(mappings);
    done.join(", ")
}

/// The command of a container as docker lists it: the program, then its arguments, those
/// with a space in single quotes (`sh -c 'echo hi'`).
pub(crate) fn command_line(c: &ContainerSummary) -> String {
    let mut words = c.command.iter();
    let mut out = words.next().cloned().unwrap_or_default();
    for w in words {
        out.push(' ');
        if w.contains(' ') {
            out.push('\'');
            out.push_str(w);
            out.push('\'');
        } else {
            out.push_str(w);
        }
    }
    out
}

/// Headers of `ps` columns (docker's names; `RunningFor` is CREATED).
/// Column titles of the container fields (docker's; `RunningFor` is CREATED).
pub(crate) const CONTAINER_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("Names", "NAMES"),
    ("Project", "PROJECT"),
    ("Service", "SERVICE"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Networks", "NETWORKS"),
];

/// docker compose's `ps` table.
pub(crate) const PS_TABLE: &str = "table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}";

/// What a container row is built from.
pub(crate) struct Context<'a> {
    /// The state root (volume mounts are named from their path under it).
    pub root: &'a Path,
    /// A container's record, by id (none when it cannot be read).
    pub record: &'a dyn Fn(&str) -> Option<Record>,
    /// The ports a container publishes, by name.
    pub published: &'a dyn Fn(&str) -> Vec<Published>,
    /// The networks a container is attached to, by name.
    pub networks: &'a dyn Fn(&str) -> Vec<String>,
    /// Ports a container exposes besides its image's (a compose service's `expose`).
    pub expose: &'a dyn Fn(&ContainerSummary) -> Vec<String>,
}

/// The ports of a container that runs: its published ports (a stopped container has none,
/// as in docker) and the ports it only exposes (image `EXPOSE`, service `expose`).
fn container_ports(
    ctx: &Context<'_>,
    c: &ContainerSummary,
    record: Option<&Record>,
) -> Vec<PortEntry> {
    if !matches!(c.state, Status::Running | Status::Paused) {
        return Vec::new();
    }
    let mut out: Vec<PortEntry> = (ctx.published)(&c.name)
        .into_iter()
        .map(|p: Published| PortEntry {
            ip: p.host_ip.to_string(),
            private: p.container_port,
            public: p.host_port,
            protocol: p.protocol.to_string(),
        })
        .collect();
    let mut exposed: Vec<String> = record
        .and_then(|r| r.image_config.as_ref())
        .and_then(|ic| ic.exposed_ports().clone())
        .unwrap_or_default();
    exposed.extend((ctx.expose)(c));
    for e in exposed {
        let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
        let (a, b) = port.split_once('-').unwrap_or((port, port));
        let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
            continue;
        };
        for private in a..=b {
            if !out
                .iter()
                .any(|p| p.private == private && p.protocol == proto)
            {
                out.push(PortEntry {
                    ip: String::new(),
                    private,
                    public: 0,
                    protocol: proto.to_owned(),
                });
            }
        }
    }
    out
}

/// The name of a mount as docker lists it: a volume's name, else the host path.
fn mount_name(root: &Path, m: &Mount) -> String {
    if m.kind == MountKind::Volume
        && let Ok(rest) = m.source.strip_prefix(root.join("volumes"))
        && let Some(name) = rest.components().next()
    {
        return name.as_os_str().to_string_lossy().into_owned();
    }
    m.source.display().to_string()
}

/// One container with docker compose's `ps` fields (`container ls` leaves out the compose
/// ones); `trunc` shortens the id, the command and mount names as docker does.
pub(crate) fn container_row(ctx: &Context<'_>, c: &ContainerSummary, trunc: bool) -> format::Row {
    let record = (ctx.record)(&c.id);
    let ports = container_ports(ctx, c, record.as_ref());
    let mut publishers = ports.clone();
    publishers.sort_by_key(|p| p.private);
    let mounts = record
        .as_ref()
        .map(|r| r.config.mounts.clone())
        .unwrap_or_default();
    let shown: Vec<&Mount> = mounts
        .iter()
        .filter(|m| matches!(m.kind, MountKind::Volume | MountKind::Bind))
        .collect();
    let mount_names: Vec<String> = shown
        .iter()
        .map(|m| {
            let n = mount_name(ctx.root, m);
            if trunc { ellipsis(&n, 15) } else { n }
        })
        .collect();
    let networks: Vec<String> = (ctx.networks)(&c.name);
    let command = command_line(c);
    let running = c.state == Status::Running;
    let label = |k: &str| json!(c.labels.get(k).cloned().unwrap_or_default());
    format::Row::new([
        (
            "Command",
            json!(go_quote(&if trunc {
                ellipsis(&command, 20)
            } else {
                command
            })),
        ),
        ("CreatedAt", json!(go_time(&c.created))),
        (
            "ExitCode",
            json!(if matches!(c.state, Status::Exited | Status::Dead) {
                c.exit_code.unwrap_or(0)
            } else {
                0
            }),
        ),
        (
            "Health",
            json!(match c.health {
                HealthStatus::None => "",
                _ if !running => "",
                h => h.as_str(),
            }),
        ),
        (
            "ID",
            json!(if trunc {
                c.id.chars().take(12).collect::<String>()
            } else {
                c.id.clone()
            }),
        ),
        ("Image", json!(c.image)),
        (
            "Labels",
            json!(
                c.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        (
            "LocalVolumes",
            json!(
                shown
                    .iter()
                    .filter(|m| m.kind == MountKind::Volume)
                    .count()
                    .to_string()
            ),
        ),
        ("Mounts", json!(mount_names.join(","))),
        ("Name", json!(c.name)),
        ("Names", json!(c.name)),
        ("Networks", json!(networks.join(","))),
        ("Ports", json!(ports_text(&ports))),
        ("Project", label(PROJECT_LABEL)),
        (
            "Publishers",
            Value::Array(
                publishers
                    .iter()
                    .map(|p| {
                        json!({
                            "URL": p.ip,
                            "TargetPort": p.private,
                            "PublishedPort": p.public,
                            "Protocol": p.protocol,
                        })
                    })
                    .collect(),
            ),
        ),
        (
            "RunningFor",
            json!(format!("{} ago", human_duration(seconds_since(&c.created)))),
        ),
        ("Service", label(SERVICE_LABEL)),
        ("Size", json!("0B")),
        ("State", json!(c.state.as_str())),
        ("Status", json!(status_text(c))),
    ])
    .with_labels(c.labels.clone())
}

/// The fields docker compose adds to docker's container fields.
pub(crate) const COMPOSE_ONLY_FIELDS: [&str; 6] = [
    "ExitCode",
    "Health",
    "Name",
    "Project",
    "Publishers",
    "Service",
];

/// docker's `ps` table (`tug container ls`).
pub(crate) const DOCKER_PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";
