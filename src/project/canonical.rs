//! Phase 7: rewrite every short syntax into compose's canonical long form.
//!
//! Runs on the merged, interpolated and validated document (JSON), before it is turned into
//! the typed [`model`](super::model). Shapes only: paths and defaults come later
//! ([`normalize`](super::normalize)). The forms are those `docker compose config` prints:
//!
//! - `ports: ["127.0.0.1:8080-8081:80-81/udp"]` → one `{mode, host_ip, target, published,
//!   protocol}` per port (a host range for a single container port stays a range);
//! - `volumes: ["./src:/app:ro,z"]` → `{type: bind, source, target, read_only, bind: {selinux,
//!   create_host_path: true}}`; a name becomes `type: volume`, a lone path an anonymous volume;
//! - `depends_on: [db]` → `{db: {condition: service_started, required: true}}`;
//! - `healthcheck.test: "cmd"` → `["CMD-SHELL", "cmd"]`; `build: ./dir` → `{context: ./dir}`;
//! - `command`/`entrypoint` strings are split like a shell does (`sh -c "a b"` → 3 words);
//! - `environment`, `labels`, `build.args`, `sysctls`, ... lists of `K=V` → mappings;
//! - `extra_hosts` → `host=ip` strings; service `networks` list → mapping; `devices`,
//!   `secrets`, `configs`, `env_file`, `extends` strings → mappings;
//! - values that interpolation left as strings are typed where compose expects a number or a
//!   boolean (`tty: "true"`, `cpus: "0.5"`).

use serde_json::{Map, Value, json};

use super::error::{ProjectError, Result};
use super::yaml::{Pos, Spans};

/// A note about the document that is not an error: `(key path, message)`.
pub type Warning = (String, String);

/// Canonicalizes a whole document in place. `spans` locates errors. Returns warnings about
/// what compose reads but ignores (short volume options it does not know).
///
/// # Errors
/// A short syntax that cannot be parsed (an invalid port spec, a volume spec with too many
/// parts, an unterminated quote in a command), with its file position and key path.
pub fn canonicalize(doc: &mut Value, spans: &Spans) -> Result<Vec<Warning>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let at = |path: &str| locate(spans, path);
    if let Some(Value::Object(services)) = doc.get_mut("services") {
        for (name, svc) in services.iter_mut() {
            if svc.is_null() {
                *svc = json!({});
            }
            let base = format!("services.{name}");
            if let Err(PathErr { path, error }) = service(svc, &base, &mut warnings) {
                errors.push(ProjectError::invalid(at(&path), path, error.to_string()));
            }
        }
    }
    omit_empty(doc);
    enforce_unicity(doc);
    for kind in ["networks", "volumes", "secrets", "configs"] {
        if let Some(Value::Object(items)) = doc.get_mut(kind) {
            for (_, item) in items.iter_mut() {
                if item.is_null() {
                    *item = json!({});
                }
                if let Value::Object(m) = item {
                    for k in [
                        "external",
                        "internal",
                        "attachable",
                        "enable_ipv6",
                        "enable_ipv4",
                    ] {
                        to_bool(m, k);
                    }
                    // Legacy `external: {name: x}`.
                    if let Some(Value::Object(ext)) = m.get("external").cloned() {
                        if let Some(n) = ext.get("name") {
                            m.insert("name".into(), n.clone());
                        }
                        m.insert("external".into(), Value::Bool(true));
                    }
                    for k in ["labels", "driver_opts"] {
                        if let Some(v) = m.get_mut(k) {
                            to_string_map(v);
                        }
                    }
                    if let Some(Value::Object(ipam)) = m.get_mut("ipam")
                        && let Some(Value::Array(cfgs)) = ipam.get_mut("config")
                    {
                        for c in cfgs {
                            if let Some(aux) = c.get_mut("aux_addresses") {
                                to_string_map(aux);
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(m) = doc.as_object_mut() {
        m.shift_remove("version");
    }
    for (path, msg) in structure(doc) {
        errors.push(ProjectError::invalid(at(&path), path, msg));
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(ProjectError::from_many(errors))
    }
}

/// compose's checks of the canonical document that its schema cannot express, over every
/// declared resource (used or not): secrets and configs say where their content comes from
/// (one way only), an external volume sets nothing but its name, a published
/// port's `host_ip` is an IP address, a GPU request gives `count` or `device_ids`, a watch
/// rule has a path.
fn structure(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (kind, sources) in [
        ("secrets", &["file", "environment"][..]),
        ("configs", &["file", "environment", "content"][..]),
    ] {
        if let Some(Value::Object(items)) = doc.get(kind) {
            for (name, item) in items {
                let Value::Object(m) = item else { continue };
                let count = sources.iter().filter(|k| m.contains_key(**k)).count();
                let path = format!("{kind}.{name}");
                if count > 1 {
                    out.push((
                        path,
                        format!("{} attributes are mutually exclusive", sources.join("|")),
                    ));
                } else if count == 0 && !m.contains_key("driver") && !m.contains_key("external") {
                    out.push((path, format!("one of {} must be set", sources.join("|"))));
                }
            }
        }
    }
    for kind in ["volumes"] {
        if let Some(Value::Object(items)) = doc.get(kind) {
            for (name, item) in items {
                let Value::Object(m) = item else { continue };
                if m.get("external") != Some(&Value::Bool(true)) {
                    continue;
                }
                for k in m.keys() {
                    if k != "name" && k != "external" && !k.starts_with("x-") {
                        out.push((
                            format!("{kind}.{name}"),
                            format!("conflicting parameters \"external\" and {k:?} specified"),
                        ));
                    }
                }
            }
        }
    }
    let Some(Value::Object(services)) = doc.get("services") else {
        return out;
    };
    for (name, svc) in services {
        let base = format!("services.{name}");
        if let Some(Value::Array(ports)) = svc.get("ports") {
            for (i, p) in ports.iter().enumerate() {
                if let Some(ip) = p.get("host_ip").and_then(Value::as_str)
                    && ip.parse::<std::net::IpAddr>().is_err()
                {
                    out.push((
                        format!("{base}.ports[{i}].host_ip"),
                        format!("invalid ip address: `{ip}`"),
                    ));
                }
            }
        }
        let mut requests: Vec<(String, &Value)> = Vec::new();
        if let Some(Value::Array(g)) = svc.get("gpus") {
            requests.extend(
                g.iter()
                    .enumerate()
                    .map(|(i, r)| (format!("{base}.gpus[{i}]"), r)),
            );
        }
        if let Some(Value::Array(d)) = svc.pointer("/deploy/resources/reservations/devices") {
            requests.extend(d.iter().enumerate().map(|(i, r)| {
                (
                    format!("{base}.deploy.resources.reservations.devices[{i}]"),
                    r,
                )
            }));
        }
        for (path, r) in requests {
            if r.get("count").is_some() && r.get("device_ids").is_some() {
                out.push((
                    path,
                    "\"count\" and \"device_ids\" attributes are exclusive".to_owned(),
                ));
            }
        }
        if let Some(Value::Array(rules)) = svc.pointer("/develop/watch") {
            for (i, r) in rules.iter().enumerate() {
                if r.get("path").and_then(Value::as_str) == Some("") {
                    out.push((
                        format!("{base}.develop.watch[{i}].path"),
                        "value can't be blank".to_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// The position of `path`, or of its nearest ancestor that has one.
#[must_use]
pub fn locate(spans: &Spans, path: &str) -> Option<Pos> {
    let mut p = path;
    loop {
        if let Some(pos) = spans.get(p) {
            return Some(pos.clone());
        }
        let cut = p.rfind(['.', '['])?;
        p = &p[..cut];
    }
}

/// A short form that cannot be read (the message of a [`ProjectError::Invalid`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortFormError {
    /// A command with an unterminated quote.
    #[error(transparent)]
    Shell(#[from] crate::util::shell::SplitError),
    /// A `build.ssh` entry without a path that is not `default`.
    #[error("invalid ssh key `{0}` (expected `default` or ID=PATH)")]
    SshKey(String),
    /// A device spec with more than three parts.
    #[error("invalid device `{0}` (expected HOST[:CONTAINER[:PERMISSIONS]])")]
    Device(String),
    /// A port spec's protocol.
    #[error("invalid protocol `{protocol}` in port `{spec}` (expected tcp, udp or sctp)")]
    PortProtocol {
        /// The protocol as written.
        protocol: String,
        /// The port spec.
        spec: String,
    },
    /// `[v6` without its `]`.
    #[error("invalid IPv6 address in port `{0}`")]
    PortIpv6(String),
    /// A port spec of another shape.
    #[error("invalid port `{0}` (expected [[IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL])")]
    Port(String),
    /// A port or range that is not one.
    #[error(
        "invalid {which} `{value}` in port `{spec}` (expected a port 1-65535 or a range like \
         8000-8010)"
    )]
    PortRange {
        /// `container port` or `host port`.
        which: &'static str,
        /// The part as written.
        value: String,
        /// The port spec.
        spec: String,
    },
    /// A host range and a container range of different sizes.
    #[error("invalid port `{0}`: the host range and the container range have different sizes")]
    PortRangeSizes(String),
    /// An empty volume spec.
    #[error("invalid empty volume spec")]
    VolumeEmpty,
    /// `a::b`, `:b`, `a:`.
    #[error("invalid volume `{0}`: empty section between colons")]
    VolumeEmptySection(String),
    /// More than `[SOURCE:]TARGET[:OPTIONS]`.
    #[error("invalid volume `{0}`: too many colons (expected [SOURCE:]TARGET[:OPTIONS])")]
    VolumeColons(String),
}

/// A short form that cannot be read, at its key path.
#[derive(Debug)]
struct PathErr {
    /// `services.web.ports[1]`.
    path: String,
    error: ShortFormError,
}

/// Keys whose empty string compose treats as unset (its model holds them as plain strings,
/// left out when empty): `image: ${TAG}` with `TAG` empty is no image at all. `*` is any key
/// of a mapping, `[]` any item of a list.
const OMIT_EMPTY: &[&str] = &[
    "services.*.build.context",
    "services.*.build.dockerfile_inline",
    "services.*.build.isolation",
    "services.*.build.network",
    "services.*.build.provenance",
    "services.*.build.sbom",
    "services.*.build.target",
    "services.*.cgroup",
    "services.*.cgroup_parent",
    "services.*.container_name",
    "services.*.cpuset",
    "services.*.credential_spec.config",
    "services.*.credential_spec.file",
    "services.*.credential_spec.registry",
    "services.*.deploy.endpoint_mode",
    "services.*.deploy.mode",
    "services.*.deploy.restart_policy.condition",
    "services.*.deploy.rollback_config.failure_action",
    "services.*.deploy.rollback_config.order",
    "services.*.deploy.update_config.failure_action",
    "services.*.deploy.update_config.order",
    "services.*.develop.watch.[].target",
    "services.*.devices.[].permissions",
    "services.*.domainname",
    "services.*.hostname",
    "services.*.image",
    "services.*.ipc",
    "services.*.isolation",
    "services.*.log_driver",
    "services.*.logging.driver",
    "services.*.mac_address",
    "services.*.net",
    "services.*.network_mode",
    "services.*.networks.*.interface_name",
    "services.*.networks.*.ipv4_address",
    "services.*.networks.*.ipv6_address",
    "services.*.networks.*.mac_address",
    "services.*.pid",
    "services.*.platform",
    "services.*.ports.[].app_protocol",
    "services.*.ports.[].name",
    "services.*.ports.[].published",
    "services.*.post_start.[].user",
    "services.*.post_start.[].working_dir",
    "services.*.pre_stop.[].user",
    "services.*.pre_stop.[].working_dir",
    "services.*.restart",
    "services.*.runtime",
    "services.*.stop_signal",
    "services.*.user",
    "services.*.userns_mode",
    "services.*.uts",
    "services.*.volume_driver",
    "services.*.volumes.[].bind.propagation",
    "services.*.volumes.[].bind.recursive",
    "services.*.volumes.[].bind.selinux",
    "services.*.volumes.[].consistency",
    "services.*.volumes.[].image.subpath",
    "services.*.volumes.[].volume.subpath",
    "services.*.working_dir",
    "networks.*.driver",
    "networks.*.ipam.driver",
    "networks.*.ipam.config.[].gateway",
    "networks.*.ipam.config.[].ip_range",
    "networks.*.ipam.config.[].subnet",
    "volumes.*.driver",
    "secrets.*.driver",
    "secrets.*.environment",
    "secrets.*.file",
    "secrets.*.template_driver",
    "configs.*.content",
    "configs.*.driver",
    "configs.*.environment",
    "configs.*.file",
    "configs.*.template_driver",
];

/// Lists whose entries have an identity; a later entry with the identity of an earlier one
/// replaces it in place, as compose keeps one entry per identity even inside one file. The
/// identities read the short and the long form alike: compose enforces this before its
/// schema validation and again after canonicalisation.
/// How a list entry's identity is read.
type Identity = fn(&Value) -> String;

const UNIQUE: &[(&str, Identity)] = &[
    ("services.*.volumes", volume_identity),
    ("services.*.devices", device_identity),
    ("services.*.ports", port_identity),
    ("services.*.secrets", |v| mount_identity(v, "/run/secrets")),
    ("services.*.configs", |v| mount_identity(v, "")),
    ("services.*.env_file", |v| match v {
        Value::Object(_) => field(v, "path"),
        other => scalar_string(other),
    }),
    ("services.*.expose", scalar_string),
    ("services.*.dns", key_identity),
    ("services.*.dns_opt", key_identity),
    ("services.*.dns_search", key_identity),
    ("services.*.cap_add", key_identity),
    ("services.*.cap_drop", key_identity),
    ("services.*.links", key_identity),
    ("services.*.profiles", key_identity),
    ("services.*.tmpfs", key_identity),
    ("services.*.build.tags", key_identity),
    ("services.*.networks.*.aliases", key_identity),
    ("services.*.networks.*.link_local_ips", key_identity),
];

fn field(v: &Value, key: &str) -> String {
    v.get(key).map(scalar_string).unwrap_or_default()
}

fn key_identity(v: &Value) -> String {
    let s = scalar_string(v);
    s.split_once('=').map_or(s.clone(), |(k, _)| k.to_owned())
}

fn volume_identity(v: &Value) -> String {
    match v {
        Value::String(spec) if spec.chars().count() <= 2 => spec.clone(),
        Value::String(spec) => match split_volume_spec(spec) {
            Ok(parts) if parts.len() == 1 => parts[0].clone(),
            Ok(parts) => parts[1].clone(),
            Err(_) => spec.clone(),
        },
        other => field(other, "target"),
    }
}

fn device_identity(v: &Value) -> String {
    match v {
        Value::String(spec) => {
            let parts: Vec<&str> = spec.split(':').collect();
            parts.get(1).unwrap_or(&parts[0]).to_string()
        }
        other => field(other, "target"),
    }
}

fn mount_identity(v: &Value, default_dir: &str) -> String {
    match v {
        Value::Object(m) => match m.get("target") {
            Some(t) => scalar_string(t),
            None => format!("{default_dir}/{}", field(v, "source")),
        },
        other => format!("{default_dir}/{}", scalar_string(other)),
    }
}

fn port_identity(v: &Value) -> String {
    let Value::Object(_) = v else {
        return scalar_string(v);
    };
    let host = v
        .get("host_ip")
        .map_or_else(|| "0.0.0.0".to_owned(), scalar_string);
    let published = v.get("published").map(scalar_string).unwrap_or_default();
    let protocol = v
        .get("protocol")
        .map_or_else(|| "tcp".to_owned(), scalar_string);
    format!("{host}:{published}:{}/{protocol}", field(v, "target"))
}

/// Applies [`UNIQUE`]: keeps one entry per identity in the lists that have one.
pub fn enforce_unicity(doc: &mut Value) {
    fn walk(v: &mut Value, pattern: &[&str], identity: Identity) {
        match (pattern, v) {
            ([], Value::Array(items)) => {
                let mut out: Vec<Value> = Vec::with_capacity(items.len());
                let mut seen: std::collections::HashMap<String, usize> =
                    std::collections::HashMap::new();
                for it in items.drain(..) {
                    let id = identity(&it);
                    if let Some(&at) = seen.get(&id) {
                        out[at] = it;
                    } else {
                        seen.insert(id, out.len());
                        out.push(it);
                    }
                }
                *items = out;
            }
            (["*", rest @ ..], Value::Object(m)) => {
                for (_, it) in m.iter_mut() {
                    walk(it, rest, identity);
                }
            }
            ([key, rest @ ..], Value::Object(m)) => {
                if let Some(it) = m.get_mut(*key) {
                    walk(it, rest, identity);
                }
            }
            _ => {}
        }
    }
    for (p, identity) in UNIQUE {
        let parts: Vec<&str> = p.split('.').collect();
        walk(doc, &parts, *identity);
    }
}

/// Removes the empty strings of [`OMIT_EMPTY`].
fn omit_empty(doc: &mut Value) {
    fn walk(v: &mut Value, pattern: &[&str]) {
        let [first, rest @ ..] = pattern else {
            return;
        };
        match (v, *first) {
            (Value::Array(items), "[]") => {
                for it in items {
                    walk(it, rest);
                }
            }
            (Value::Object(m), "*") => {
                for (_, it) in m.iter_mut() {
                    walk(it, rest);
                }
            }
            (Value::Object(m), key)
                if rest.is_empty() && m.get(key).is_some_and(|x| x.as_str() == Some("")) =>
            {
                m.shift_remove(key);
            }
            (Value::Object(_), _) if rest.is_empty() => {}
            (Value::Object(m), key) => {
                if let Some(it) = m.get_mut(key) {
                    walk(it, rest);
                }
            }
            _ => {}
        }
    }
    for p in OMIT_EMPTY {
        let parts: Vec<&str> = p.split('.').collect();
        walk(doc, &parts);
    }
    // A mount's empty source: no volume (an anonymous one), but a bind of "" is the project
    // directory, as compose resolves it.
    if let Some(Value::Object(services)) = doc.get_mut("services") {
        for svc in services.values_mut() {
            if let Some(Value::Array(vols)) = svc.get_mut("volumes") {
                for v in vols.iter_mut().filter_map(Value::as_object_mut) {
                    if v.get("type").and_then(Value::as_str) != Some("bind")
                        && v.get("source").and_then(Value::as_str) == Some("")
                    {
                        v.shift_remove("source");
                    }
                }
            }
        }
    }
}

/// Where a service key's transformer works: the service's path (for errors) and the
/// warnings so far.
struct At<'a> {
    /// `services.NAME`.
    base: &'a str,
    /// The key being transformed.
    key: &'a str,
    warnings: &'a mut Vec<Warning>,
}

impl At<'_> {
    /// An error at `<base>.<rest>`.
    fn err(&self, rest: &str, error: ShortFormError) -> PathErr {
        PathErr {
            path: format!("{}.{rest}", self.base),
            error,
        }
    }
}

/// A [`Transform`] that needs neither the place nor the warnings and cannot fail.
macro_rules! plain {
    ($f:expr) => {
        |v, _| {
            $f(v);
            Ok(())
        }
    };
}

/// Turns one service key's short forms into the long form.
type Transform = fn(&mut Value, &mut At<'_>) -> std::result::Result<(), PathErr>;

/// Each service key with a short form and its transformer, in the order they are applied
/// (so the first error or warning of a service is the one of the earliest key here).
const SERVICE_KEYS: &[(&str, Transform)] = &[
    ("build", build),
    ("command", command),
    ("entrypoint", command),
    ("environment", plain!(to_env_map)),
    ("labels", plain!(to_string_map)),
    ("annotations", plain!(to_string_map)),
    ("sysctls", plain!(to_string_map)),
    ("storage_opt", plain!(to_string_map)),
    ("log_opt", plain!(to_string_map)),
    ("logging", logging),
    ("models", plain!(names_to_map)),
    ("env_file", plain!(env_file)),
    ("extra_hosts", plain!(extra_hosts)),
    ("dns", plain!(to_list)),
    ("dns_search", plain!(to_list)),
    ("tmpfs", plain!(to_list)),
    ("label_file", plain!(to_list)),
    ("expose", plain!(items_to_strings)),
    ("group_add", plain!(items_to_strings)),
    ("ports", ports),
    ("volumes", volumes),
    ("depends_on", plain!(depends_on)),
    ("healthcheck", plain!(healthcheck)),
    ("networks", plain!(networks)),
    ("ulimits", plain!(ulimits)),
    ("devices", devices),
    (
        "secrets",
        plain!(|v: &mut Value| file_refs(v, "/run/secrets")),
    ),
    ("configs", plain!(|v: &mut Value| file_refs(v, ""))),
    ("extends", plain!(extends)),
    ("gpus", plain!(gpus)),
    ("provider", plain!(provider)),
    ("blkio_config", |v, _| {
        if let Value::Object(b) = v {
            blkio(b);
        }
        Ok(())
    }),
    ("deploy", plain!(deploy)),
    ("post_start", hooks),
    ("pre_stop", hooks),
    ("develop", plain!(develop)),
    ("tty", plain!(bool_value)),
    ("stdin_open", plain!(bool_value)),
    ("privileged", plain!(bool_value)),
    ("read_only", plain!(bool_value)),
    ("init", plain!(bool_value)),
    ("attach", plain!(bool_value)),
    ("oom_kill_disable", plain!(bool_value)),
    ("use_api_socket", plain!(bool_value)),
    ("cpu_count", plain!(int_value)),
    ("cpu_period", plain!(int_value)),
    ("cpu_quota", plain!(int_value)),
    ("cpu_rt_period", plain!(int_value)),
    ("cpu_rt_runtime", plain!(int_value)),
    ("cpu_shares", plain!(int_value)),
    ("oom_score_adj", plain!(int_value)),
    ("pids_limit", plain!(int_value)),
    ("scale", plain!(int_value)),
    ("cpus", plain!(float_value)),
    ("cpu_percent", plain!(float_value)),
];

/// A service in long form: each key through its transformer ([`SERVICE_KEYS`]).
fn service(
    svc: &mut Value,
    base: &str,
    warnings: &mut Vec<Warning>,
) -> std::result::Result<(), PathErr> {
    let Value::Object(s) = svc else {
        return Ok(());
    };
    for (key, transform) in SERVICE_KEYS {
        if let Some(v) = s.get_mut(*key) {
            transform(
                v,
                &mut At {
                    base,
                    key,
                    warnings,
                },
            )?;
        }
    }
    Ok(())
}

/// `build: DIR` → `{context: DIR}`, and the build's own lists, maps and flags.
fn build(b: &mut Value, at: &mut At<'_>) -> std::result::Result<(), PathErr> {
    if let Value::String(ctx) = b {
        *b = json!({ "context": ctx.clone() });
    }
    let Value::Object(bm) = b else {
        return Ok(());
    };
    if let Some(v) = bm.get_mut("args") {
        to_env_map(v);
    }
    for k in ["labels", "additional_contexts"] {
        if let Some(v) = bm.get_mut(k) {
            to_string_map(v);
        }
    }
    if let Some(v) = bm.get_mut("extra_hosts") {
        extra_hosts(v);
    }
    for k in [
        "cache_from",
        "cache_to",
        "tags",
        "platforms",
        "no_cache_filter",
    ] {
        string_to_list(bm, k);
    }
    if let Some(Value::Array(secrets)) = bm.get_mut("secrets") {
        // Build secrets get no default target (the builder mounts them by id).
        for it in secrets.iter_mut() {
            file_ref(it, "");
        }
    }
    if let Some(v) = bm.get_mut("ssh") {
        ssh_keys(v).map_err(|m| at.err("build.ssh", m))?;
    }
    if let Some(u) = bm.get_mut("ulimits") {
        ulimits(u);
    }
    for k in ["provenance", "sbom"] {
        if let Some(v) = bm.get_mut(k)
            && !v.is_string()
        {
            *v = Value::String(scalar_string(v));
        }
    }
    to_bool(bm, "no_cache");
    to_bool(bm, "pull");
    to_bool(bm, "privileged");
    Ok(())
}

/// `command` and `entrypoint`: a string split like a shell does.
fn command(v: &mut Value, at: &mut At<'_>) -> std::result::Result<(), PathErr> {
    shell_command(v).map_err(|m| at.err(at.key, m))
}

/// `logging.options`: a string map.
fn logging(v: &mut Value, _: &mut At<'_>) -> std::result::Result<(), PathErr> {
    if let Value::Object(l) = v
        && let Some(o) = l.get_mut("options")
    {
        to_string_map(o);
    }
    Ok(())
}

/// `[a, b]` → `{a: null, b: null}`.
fn names_to_map(v: &mut Value) {
    if let Value::Array(list) = v {
        let m: Map<String, Value> = list
            .iter()
            .map(|n| (scalar_string(n), Value::Null))
            .collect();
        *v = Value::Object(m);
    }
}

/// Every item of a list as a string.
fn items_to_strings(v: &mut Value) {
    if let Value::Array(items) = v {
        for it in items {
            *it = Value::String(scalar_string(it));
        }
    }
}

/// `ports`: each short form (`"8080:80/udp"`, a range) → one long entry per port.
fn ports(v: &mut Value, at: &mut At<'_>) -> std::result::Result<(), PathErr> {
    let Value::Array(items) = v else {
        return Ok(());
    };
    let mut out = Vec::new();
    for (i, it) in items.iter_mut().enumerate() {
        match it {
            Value::Object(p) => {
                port_long(p);
                out.push(Value::Object(p.clone()));
            }
            other => {
                let spec = scalar_string(other);
                let ports = parse_port(&spec).map_err(|m| at.err(&format!("ports[{i}]"), m))?;
                out.extend(ports);
            }
        }
    }
    *v = Value::Array(out);
    Ok(())
}

/// `volumes`: each short form (`./data:/data:ro`) → the long one; options docker compose
/// ignores are warned about once a file.
fn volumes(v: &mut Value, at: &mut At<'_>) -> std::result::Result<(), PathErr> {
    let Value::Array(items) = v else {
        return Ok(());
    };
    for (i, it) in items.iter_mut().enumerate() {
        match it {
            Value::String(spec) => {
                let (v, ignored) =
                    parse_volume(spec).map_err(|m| at.err(&format!("volumes[{i}]"), m))?;
                for o in ignored {
                    // Each option once: a file that repeats it gets one line.
                    if !at
                        .warnings
                        .iter()
                        .any(|(_, w)| w.starts_with(&format!("volume option `{o}` ")))
                    {
                        at.warnings.push((
                            format!("{}.volumes[{i}]", at.base),
                            format!(
                                "volume option `{o}` in `{spec}` is ignored (docker compose ignores it too)"
                            ),
                        ));
                    }
                }
                *it = v;
            }
            Value::Object(v) => volume_long(v),
            _ => {}
        }
    }
    Ok(())
}

/// `healthcheck.test: "cmd"` → `["CMD-SHELL", "cmd"]`, and its number and flag.
fn healthcheck(v: &mut Value) {
    if let Value::Object(h) = v {
        if let Some(Value::String(t)) = h.get("test").cloned() {
            h.insert("test".into(), json!(["CMD-SHELL", t]));
        }
        to_int(h, "retries");
        to_bool(h, "disable");
    }
}

/// `networks: [a]` → `{a: null}`, and each network's lists, maps and numbers.
fn networks(v: &mut Value) {
    names_to_map(v);
    if let Value::Object(nets) = v {
        for (_, n) in nets.iter_mut() {
            if let Value::Object(nm) = n {
                string_to_list(nm, "aliases");
                if let Some(v) = nm.get_mut("driver_opts") {
                    to_string_map(v);
                }
                to_int(nm, "priority");
                to_int(nm, "gw_priority");
            }
        }
    }
}

/// `devices: ["/dev/x:/dev/y:rw"]` → `{source, target, permissions}`.
fn devices(v: &mut Value, at: &mut At<'_>) -> std::result::Result<(), PathErr> {
    let Value::Array(items) = v else {
        return Ok(());
    };
    for (i, it) in items.iter_mut().enumerate() {
        if let Value::String(spec) = it {
            let parts: Vec<&str> = spec.split(':').collect();
            let (src, tgt, perm) = match parts.as_slice() {
                [a] => (*a, *a, "rwm"),
                [a, b] => (*a, *b, "rwm"),
                [a, b, c] => (*a, *b, *c),
                _ => {
                    return Err(at.err(
                        &format!("devices[{i}]"),
                        ShortFormError::Device(spec.clone()),
                    ));
                }
            };
            *it = json!({"source": src, "target": tgt, "permissions": perm});
        }
    }
    Ok(())
}

/// `secrets`/`configs`: each reference in long form, targets under `prefix`.
fn file_refs(v: &mut Value, prefix: &str) {
    if let Value::Array(items) = v {
        for it in items.iter_mut() {
            file_ref(it, prefix);
        }
    }
}

/// `extends: NAME` → `{service: NAME}`.
fn extends(v: &mut Value) {
    if let Value::String(e) = v {
        *v = json!({ "service": e.clone() });
    }
}

/// `gpus: all` → one request of every device; each request in long form.
fn gpus(g: &mut Value) {
    match g {
        Value::String(a) if a.eq_ignore_ascii_case("all") => *g = json!([{"count": -1}]),
        Value::Array(items) => {
            for it in items {
                device_request(it);
            }
        }
        _ => {}
    }
}

/// `provider.options`: every value a list of strings.
fn provider(v: &mut Value) {
    if let Value::Object(p) = v
        && let Some(Value::Object(o)) = p.get_mut("options")
    {
        for v in o.values_mut() {
            let list = match &*v {
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .map(|i| Value::String(scalar_string(i)))
                        .collect(),
                ),
                other => json!([scalar_string(other)]),
            };
            *v = list;
        }
    }
}

/// `deploy`: numbers, durations, labels and device requests in compose's forms.
fn deploy(v: &mut Value) {
    let Value::Object(d) = v else {
        return;
    };
    to_int(d, "replicas");
    for k in ["update_config", "rollback_config"] {
        if let Some(Value::Object(u)) = d.get_mut(k) {
            // Plain (not optional) durations: normalised, and left out when zero.
            for dk in ["delay", "monitor"] {
                if let Some(Value::String(txt)) = u.get(dk).cloned()
                    && let Ok(dur) = super::model::Duration::parse(&txt)
                {
                    if dur.0 == 0 {
                        u.shift_remove(dk);
                    } else {
                        u.insert(dk.into(), Value::String(dur.to_string()));
                    }
                }
            }
            to_int(u, "parallelism");
            to_float(u, "max_failure_ratio");
        }
    }
    if let Some(v) = d.get_mut("labels") {
        to_string_map(v);
    }
    if let Some(Value::Object(r)) = d.get_mut("resources") {
        for k in ["limits", "reservations"] {
            if let Some(Value::Object(l)) = r.get_mut(k) {
                to_float(l, "cpus");
                to_int(l, "pids");
                if let Some(Value::Array(devs)) = l.get_mut("devices") {
                    for it in devs {
                        device_request(it);
                    }
                }
            }
        }
    }
    if let Some(Value::Object(rp)) = d.get_mut("restart_policy") {
        to_int(rp, "max_attempts");
    }
    if let Some(Value::Object(p)) = d.get_mut("placement") {
        to_int(p, "max_replicas_per_node");
    }
}

/// `post_start`/`pre_stop`: each hook's command, environment and flag.
fn hooks(v: &mut Value, at: &mut At<'_>) -> std::result::Result<(), PathErr> {
    let Value::Array(items) = v else {
        return Ok(());
    };
    for (i, it) in items.iter_mut().enumerate() {
        if let Value::Object(h) = it {
            if let Some(c) = h.get_mut("command") {
                shell_command(c).map_err(|m| at.err(&format!("{}[{i}].command", at.key), m))?;
            }
            if let Some(e) = h.get_mut("environment") {
                to_env_map(e);
            }
            to_bool(h, "privileged");
        }
    }
    Ok(())
}

/// `develop.watch`: each rule's lists and its `exec`.
fn develop(v: &mut Value) {
    if let Value::Object(dev) = v
        && let Some(Value::Array(rules)) = dev.get_mut("watch")
    {
        for r in rules {
            if let Value::Object(r) = r {
                string_to_list(r, "ignore");
                string_to_list(r, "include");
                if let Some(Value::Object(ex)) = r.get_mut("exec") {
                    if let Some(c) = ex.get_mut("command") {
                        let _ = shell_command(c);
                    }
                    if let Some(e) = ex.get_mut("environment") {
                        to_env_map(e);
                    }
                }
            }
        }
    }
}

/// `blkio_config` as compose prints it: device entries as `{Path, Weight}` / `{Path, Rate}`,
/// byte rates as decimal strings.
fn blkio(b: &mut Map<String, Value>) {
    to_int(b, "weight");
    if let Some(Value::Array(items)) = b.get_mut("weight_device") {
        for it in items.iter_mut() {
            if let Value::Object(m) = it {
                let path = m.get("path").cloned().unwrap_or(Value::Null);
                let mut w = m.get("weight").cloned().unwrap_or(Value::Null);
                if let Value::String(s) = &w
                    && let Ok(n) = s.parse::<i64>()
                {
                    w = json!(n);
                }
                *it = json!({"Path": path, "Weight": w});
            }
        }
    }
    for k in [
        "device_read_bps",
        "device_write_bps",
        "device_read_iops",
        "device_write_iops",
    ] {
        if let Some(Value::Array(items)) = b.get_mut(k) {
            for it in items.iter_mut() {
                if let Value::Object(m) = it {
                    let path = m.get("path").cloned().unwrap_or(Value::Null);
                    let rate = match m.get("rate") {
                        Some(Value::String(s)) => super::model::ByteSize::parse(s)
                            .map_or_else(|_| s.clone(), |b| b.0.to_string()),
                        Some(other) => scalar_string(other),
                        None => String::new(),
                    };
                    *it = json!({"Path": path, "Rate": rate});
                }
            }
        }
    }
}

/// `build.ssh` as a list of `ID` / `ID=PATH` strings (the mapping form `{ID: PATH}` too);
/// an entry without a path must be `default`, as compose requires.
fn ssh_keys(v: &mut Value) -> std::result::Result<(), ShortFormError> {
    let entries: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().map(scalar_string).collect(),
        Value::Object(m) => m
            .iter()
            .map(|(k, p)| match p {
                Value::Null => k.clone(),
                p => format!("{k}={}", scalar_string(p)),
            })
            .collect(),
        _ => return Ok(()),
    };
    for e in &entries {
        if !e.contains('=') && e != "default" {
            return Err(ShortFormError::SshKey(e.clone()));
        }
    }
    *v = Value::Array(entries.into_iter().map(Value::String).collect());
    Ok(())
}

fn device_request(it: &mut Value) {
    if let Value::Object(m) = it {
        if let Some(c) = m.get("count").cloned() {
            match c {
                Value::String(a) if a.eq_ignore_ascii_case("all") => {
                    m.insert("count".into(), json!(-1));
                }
                Value::String(n) => {
                    if let Ok(n) = n.parse::<i64>() {
                        m.insert("count".into(), json!(n));
                    }
                }
                _ => {}
            }
        }
        if let Some(v) = m.get_mut("options") {
            to_string_map(v);
        }
    }
}

fn ulimits(u: &mut Value) {
    if let Value::Object(m) = u {
        for (_, v) in m.iter_mut() {
            match v {
                Value::String(s) => {
                    if let Ok(n) = s.parse::<i64>() {
                        *v = json!(n);
                    }
                }
                Value::Object(sh) => {
                    to_int(sh, "soft");
                    to_int(sh, "hard");
                }
                _ => {}
            }
        }
    }
}

fn file_ref(it: &mut Value, prefix: &str) {
    match it {
        Value::String(name) => {
            *it = if prefix.is_empty() {
                json!({ "source": name.clone() })
            } else {
                json!({ "source": name.clone(), "target": format!("{prefix}/{name}") })
            };
        }
        Value::Object(m) => {
            if !prefix.is_empty()
                && !m.contains_key("target")
                && let Some(src) = m.get("source").and_then(Value::as_str)
            {
                let t = format!("{prefix}/{src}");
                m.insert("target".into(), Value::String(t));
            }
            for k in ["uid", "gid"] {
                if let Some(v) = m.get_mut(k)
                    && !v.is_string()
                {
                    *v = Value::String(scalar_string(v));
                }
            }
        }
        _ => {}
    }
}

fn env_file(v: &mut Value) {
    let items = match v {
        Value::String(s) => vec![Value::String(s.clone())],
        Value::Array(a) => a.clone(),
        _ => return,
    };
    let out: Vec<Value> = items
        .into_iter()
        .map(|it| match it {
            Value::String(p) => json!({ "path": p, "required": true }),
            Value::Object(mut m) => {
                to_bool(&mut m, "required");
                m.entry("required").or_insert(Value::Bool(true));
                Value::Object(m)
            }
            other => other,
        })
        .collect();
    *v = Value::Array(out);
}

fn depends_on(dep: &mut Value) {
    let mut out = Map::new();
    match dep {
        Value::Array(list) => {
            for d in list.iter() {
                out.insert(
                    scalar_string(d),
                    json!({"condition": "service_started", "required": true}),
                );
            }
        }
        Value::Object(m) => {
            for (k, v) in m.iter() {
                let mut e = match v {
                    Value::Object(e) => e.clone(),
                    _ => Map::new(),
                };
                e.entry("condition")
                    .or_insert_with(|| Value::String("service_started".into()));
                to_bool(&mut e, "required");
                to_bool(&mut e, "restart");
                e.entry("required").or_insert(Value::Bool(true));
                out.insert(k.clone(), Value::Object(e));
            }
        }
        _ => return,
    }
    *dep = Value::Object(out);
}

/// `host:ip`, `host=ip` or `{host: ip | [ip, ...]}` → `["host=ip", ...]`.
fn extra_hosts(v: &mut Value) {
    let mut out = Vec::new();
    match v {
        Value::Array(items) => {
            for it in items.iter() {
                let s = scalar_string(it);
                let entry = match s.split_once('=') {
                    Some(_) => s,
                    None => match s.split_once(':') {
                        Some((h, ip)) => format!("{h}={ip}"),
                        None => s,
                    },
                };
                out.push(Value::String(entry));
            }
        }
        Value::Object(m) => {
            for k in m.keys() {
                match &m[k] {
                    Value::Array(ips) => {
                        for ip in ips {
                            out.push(Value::String(format!("{k}={}", scalar_string(ip))));
                        }
                    }
                    ip => out.push(Value::String(format!("{k}={}", scalar_string(ip)))),
                }
            }
        }
        _ => return,
    }
    // compose keeps extra hosts in a map: sorted by host, addresses in order.
    out.sort_by(|a, b| {
        let host = |v: &Value| {
            scalar_string(v)
                .split('=')
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        host(a).cmp(&host(b))
    });
    *v = Value::Array(out);
}

fn string_to_list(m: &mut Map<String, Value>, key: &str) {
    if let Some(v) = m.get_mut(key) {
        to_list(v);
    }
}

/// `x` → `[x]`; the items of a list as strings.
fn to_list(v: &mut Value) {
    match v {
        Value::String(s) => *v = json!([s.clone()]),
        Value::Array(items) => {
            for it in items {
                if !it.is_string() {
                    *it = Value::String(scalar_string(it));
                }
            }
        }
        _ => {}
    }
}

/// The text of a scalar (numbers and booleans as written).
#[must_use]
pub fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        // Go prints an integral float without a fraction (`1e3` → `1000`).
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `["A=1", "B"]` or `{A: 1, B: null}` → `{A: "1", B: null}`.
fn to_env_map(v: &mut Value) {
    let mut out = Map::new();
    match v {
        Value::Array(items) => {
            for it in items.iter() {
                let s = scalar_string(it);
                match s.split_once('=') {
                    Some((k, val)) => out.insert(k.to_owned(), Value::String(val.to_owned())),
                    None => out.insert(s, Value::Null),
                };
            }
        }
        Value::Object(m) => {
            for (k, val) in m.iter() {
                let val = match val {
                    Value::Null => Value::Null,
                    other => Value::String(scalar_string(other)),
                };
                out.insert(k.clone(), val);
            }
        }
        _ => return,
    }
    *v = Value::Object(out);
}

/// `["a=1", "b"]` or `{a: 1}` → `{a: "1", b: ""}`.
fn to_string_map(v: &mut Value) {
    let mut out = Map::new();
    match v {
        Value::Array(items) => {
            for it in items.iter() {
                let s = scalar_string(it);
                match s.split_once('=') {
                    Some((k, val)) => out.insert(k.to_owned(), Value::String(val.to_owned())),
                    None => out.insert(s, Value::String(String::new())),
                };
            }
        }
        Value::Object(m) => {
            for (k, val) in m.iter() {
                out.insert(k.clone(), Value::String(scalar_string(val)));
            }
        }
        _ => return,
    }
    *v = Value::Object(out);
}

fn to_bool(m: &mut Map<String, Value>, key: &str) {
    if let Some(v) = m.get_mut(key) {
        bool_value(v);
    }
}

/// `"yes"`, `"on"`, `"1"`, … → `true`; `"no"`, `"off"`, `"0"`, … → `false`.
fn bool_value(v: &mut Value) {
    if let Value::String(s) = v {
        match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" | "1" => *v = Value::Bool(true),
            "false" | "no" | "n" | "off" | "0" => *v = Value::Bool(false),
            _ => {}
        }
    }
}

fn to_int(m: &mut Map<String, Value>, key: &str) {
    if let Some(v) = m.get_mut(key) {
        int_value(v);
    }
}

/// `"42"` → `42`.
fn int_value(v: &mut Value) {
    if let Value::String(s) = v
        && let Ok(n) = s.trim().parse::<i64>()
    {
        *v = json!(n);
    }
}

fn to_float(m: &mut Map<String, Value>, key: &str) {
    if let Some(v) = m.get_mut(key) {
        float_value(v);
    }
}

/// `"0.5"` → `0.5`.
fn float_value(v: &mut Value) {
    if let Value::String(s) = v
        && let Ok(n) = s.trim().parse::<f64>()
        && let Some(num) = serde_json::Number::from_f64(n)
    {
        *v = Value::Number(num);
    }
}

/// Splits a command string the way a POSIX shell splits words (quotes and backslashes; no
/// expansion). Lists are kept, their items made strings.
fn shell_command(v: &mut Value) -> std::result::Result<(), ShortFormError> {
    match v {
        Value::String(s) => {
            let words = crate::util::shell::split(s)?;
            *v = Value::Array(words.into_iter().map(Value::String).collect());
        }
        Value::Array(items) => {
            for it in items {
                if !it.is_string() {
                    *it = Value::String(scalar_string(it));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn port_long(p: &mut Map<String, Value>) {
    p.entry("mode").or_insert_with(|| json!("ingress"));
    p.entry("protocol").or_insert_with(|| json!("tcp"));
    to_int(p, "target");
    if let Some(v) = p.get_mut("published")
        && !v.is_string()
    {
        *v = Value::String(scalar_string(v));
    }
}

fn parse_range(
    s: &str,
    which: &'static str,
    spec: &str,
) -> std::result::Result<(u16, u16), ShortFormError> {
    let bad = || ShortFormError::PortRange {
        which,
        value: s.to_owned(),
        spec: spec.to_owned(),
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// `[[ip:]published:]target[/protocol]` with ranges → long-form ports, in the order compose
/// prints them (sorted by the text of `target/protocol`).
///
/// # Errors
/// A malformed spec.
pub fn parse_port(spec: &str) -> std::result::Result<Vec<Value>, ShortFormError> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(ShortFormError::PortProtocol {
            protocol: proto,
            spec: spec.to_owned(),
        });
    }
    // Split off an IP: either [v6]: or the part before the last two colons.
    let (ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| ShortFormError::PortIpv6(spec.to_owned()))?;
        let after = after.strip_prefix(':').unwrap_or(after);
        (Some(ip.to_owned()), after.to_owned())
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() > 3 {
            // Bare IPv6 host: everything before the last two colons.
            let n = parts.len();
            let ip = parts[..n - 2].join(":");
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(ShortFormError::Port(spec.to_owned()));
            }
            (Some(ip), parts[n - 2..].join(":"))
        } else if parts.len() == 3 {
            (Some(parts[0].to_owned()), parts[1..].join(":"))
        } else {
            (None, rest.to_owned())
        }
    };
    let (published, target) = match rest.rsplit_once(':') {
        Some((p, t)) => (Some(p.to_owned()), t.to_owned()),
        None => (None, rest.clone()),
    };
    let (t0, t1) = parse_range(&target, "container port", spec)?;
    let published = published.filter(|p| !p.is_empty());
    let pub_range = match &published {
        Some(p) => Some(parse_range(p, "host port", spec)?),
        None => None,
    };
    let count = u32::from(t1 - t0) + 1;
    let mut entries: Vec<(String, Value)> = Vec::new();
    for i in 0..count {
        #[allow(clippy::cast_possible_truncation)]
        let target = t0 + i as u16;
        let mut m = Map::new();
        m.insert("mode".into(), json!("ingress"));
        if let Some(ip) = ip.as_ref().filter(|ip| !ip.is_empty()) {
            m.insert("host_ip".into(), json!(ip));
        }
        m.insert("target".into(), json!(target));
        if let Some((p0, p1)) = pub_range {
            let published = if count == 1 {
                if p0 == p1 {
                    p0.to_string()
                } else {
                    format!("{p0}-{p1}")
                }
            } else {
                let span = u32::from(p1 - p0) + 1;
                if span != count {
                    return Err(ShortFormError::PortRangeSizes(spec.to_owned()));
                }
                #[allow(clippy::cast_possible_truncation)]
                let p = p0 + i as u16;
                p.to_string()
            };
            m.insert("published".into(), json!(published));
        }
        m.insert("protocol".into(), json!(proto));
        entries.push((format!("{target}/{proto}"), Value::Object(m)));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries.into_iter().map(|(_, v)| v).collect())
}

const PROPAGATIONS: [&str; 6] = [
    "rprivate", "private", "rshared", "shared", "rslave", "slave",
];

/// A short-syntax source that is a host path: `.`, `/` or `~` first, a Windows drive
/// (`C:…`) or a named pipe (`\\…`); anything else names a volume.
fn is_path(s: &str) -> bool {
    s.starts_with(['.', '/', '~']) || s.starts_with(r"\\") || windows_drive(s)
}

/// `C:` (a letter and a colon) at the start of `s`.
fn windows_drive(s: &str) -> bool {
    let mut chars = s.chars();
    matches!((chars.next(), chars.next()), (Some(c), Some(':')) if c.is_alphabetic())
}

/// A short volume spec split at its colons as compose splits it: a Windows drive letter's
/// colon (`C:\data:/data`) and colons inside `${…}` do not separate.
fn split_volume_spec(spec: &str) -> std::result::Result<Vec<String>, ShortFormError> {
    let mut parts = Vec::new();
    let mut buf = String::new();
    let mut depth = 0usize;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek() == Some(&'{') {
            depth += 1;
            buf.push(c);
            continue;
        }
        if c == '}' && depth > 0 {
            depth -= 1;
            buf.push(c);
            continue;
        }
        let drive = c == ':' && buf.chars().count() == 1 && buf.chars().all(char::is_alphabetic);
        if c == ':' && depth == 0 && !drive {
            if buf.is_empty() {
                return Err(ShortFormError::VolumeEmptySection(spec.to_owned()));
            }
            parts.push(std::mem::take(&mut buf));
        } else {
            buf.push(c);
        }
    }
    if buf.is_empty() {
        return Err(ShortFormError::VolumeEmptySection(spec.to_owned()));
    }
    parts.push(buf);
    Ok(parts)
}

/// `[source:]target[:options]` → a long-form mount, as compose reads it: `ro`/`rw`, `nocopy`,
/// `z`/`Z` and the propagation modes are kept (under `bind` even for a named volume); any
/// other option is ignored, as compose ignores it, and returned so it can be reported.
///
/// # Errors
/// An empty spec, an empty part or too many parts.
pub fn parse_volume(spec: &str) -> std::result::Result<(Value, Vec<String>), ShortFormError> {
    if spec.is_empty() {
        return Err(ShortFormError::VolumeEmpty);
    }
    if spec.chars().count() <= 2 {
        // compose takes a spec this short as a target as it is.
        return Ok((json!({"type": "volume", "target": spec}), Vec::new()));
    }
    let parts = split_volume_spec(spec)?;
    let (source, target, opts) = match parts.as_slice() {
        [t] => (None, t.as_str(), None),
        [s, t] => (Some(s.as_str()), t.as_str(), None),
        [s, t, o] => (Some(s.as_str()), t.as_str(), Some(o.as_str())),
        _ => {
            return Err(ShortFormError::VolumeColons(spec.to_owned()));
        }
    };
    let mut m = Map::new();
    let kind = if source.is_some_and(is_path) {
        "bind"
    } else {
        "volume"
    };
    m.insert("type".into(), json!(kind));
    if let Some(s) = source {
        m.insert("source".into(), json!(s));
    }
    m.insert("target".into(), json!(clean_path(target)));
    let mut bind = Map::new();
    let mut volume = Map::new();
    let mut ignored = Vec::new();
    for o in opts.into_iter().flat_map(|o| o.split(',')) {
        match o {
            "ro" => {
                m.insert("read_only".into(), json!(true));
            }
            "rw" => {
                m.shift_remove("read_only");
            }
            "z" | "Z" => {
                bind.insert("selinux".into(), json!(o));
            }
            "nocopy" => {
                volume.insert("nocopy".into(), json!(true));
            }
            p if PROPAGATIONS.contains(&p) => {
                bind.insert("propagation".into(), json!(p));
            }
            other => ignored.push(other.to_owned()),
        }
    }
    if kind == "bind" {
        bind.insert("create_host_path".into(), json!(true));
    }
    if !bind.is_empty() {
        m.insert("bind".into(), Value::Object(bind));
    }
    if kind == "volume" || !volume.is_empty() {
        m.insert("volume".into(), Value::Object(volume));
    }
    Ok((Value::Object(m), ignored))
}

/// A path cleaned as Go's `path.Clean` cleans it (compose cleans mount targets this way):
/// repeated and trailing slashes dropped, `.` and `..` folded lexically, `..` above the root
/// dropped; an empty path is `.`.
#[must_use]
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".to_owned();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

fn volume_long(v: &mut Map<String, Value>) {
    to_bool(v, "read_only");
    if let Some(Value::Object(b)) = v.get_mut("bind") {
        to_bool(b, "create_host_path");
    }
    if let Some(Value::Object(vo)) = v.get_mut("volume") {
        to_bool(vo, "nocopy");
        if let Some(l) = vo.get_mut("labels") {
            to_string_map(l);
        }
    }
    if let Some(Value::Object(t)) = v.get_mut("tmpfs") {
        // tmpfs mode is octal when written as a string.
        if let Some(Value::String(s)) = t.get("mode").cloned()
            && let Ok(n) = u32::from_str_radix(&s, 8)
        {
            t.insert("mode".into(), json!(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ports() {
        let p = parse_port("127.0.0.1:8080-8081:80-81/udp").unwrap();
        assert_eq!(
            p,
            vec![
                json!({"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "8080", "protocol": "udp"}),
                json!({"mode": "ingress", "host_ip": "127.0.0.1", "target": 81, "published": "8081", "protocol": "udp"}),
            ]
        );
        assert_eq!(
            parse_port("3000").unwrap(),
            vec![json!({"mode": "ingress", "target": 3000, "protocol": "tcp"})]
        );
        assert_eq!(
            parse_port("8080-8081:80").unwrap()[0]["published"],
            json!("8080-8081")
        );
        assert_eq!(
            parse_port("[::1]:90:90").unwrap()[0]["host_ip"],
            json!("::1")
        );
        assert_eq!(
            parse_port("127.0.0.1::53/udp").unwrap()[0].get("published"),
            None
        );
        let sorted: Vec<u64> = parse_port("98-101:98-101")
            .unwrap()
            .iter()
            .map(|p| p["target"].as_u64().unwrap())
            .collect();
        assert_eq!(sorted, vec![100, 101, 98, 99]);
        assert!(parse_port("80:80:80:80x").is_err());
        assert!(parse_port("99999").is_err());
        assert!(parse_port("80/xyz").is_err());
        assert!(parse_port("1-3:1-2").is_err());
    }

    #[test]
    fn canonical_volumes() {
        let v = |spec: &str| parse_volume(spec).unwrap().0;
        assert_eq!(
            v("./src:/app:ro,z"),
            json!({"type": "bind", "source": "./src", "target": "/app", "read_only": true, "bind": {"selinux": "z", "create_host_path": true}})
        );
        assert_eq!(
            v("data:/data"),
            json!({"type": "volume", "source": "data", "target": "/data", "volume": {}})
        );
        assert_eq!(
            v("/anon"),
            json!({"type": "volume", "target": "/anon", "volume": {}})
        );
        // SELinux and propagation options stay on a named volume, under `bind`.
        assert_eq!(
            v("data:/d:Z,rshared"),
            json!({"type": "volume", "source": "data", "target": "/d", "bind": {"selinux": "Z", "propagation": "rshared"}, "volume": {}})
        );
        // The target is cleaned; the source is kept as written.
        assert_eq!(v("/a//b:/var/www/html/")["target"], json!("/var/www/html"));
        assert_eq!(v("/a//b:/var/www/html/")["source"], json!("/a//b"));
        // A Windows drive is a host path, its colon no separator.
        assert_eq!(
            v(r"C:\data:/data:ro"),
            json!({"type": "bind", "source": r"C:\data", "target": "/data", "read_only": true, "bind": {"create_host_path": true}})
        );
        // Colons inside `${…}` (not interpolated) do not separate.
        assert_eq!(v("${A:-x}:/t")["source"], json!("${A:-x}"));
        // Options compose ignores are returned, not refused.
        let (m, ignored) = parse_volume("data:/c:cached,U,noexec,ro").unwrap();
        assert_eq!(ignored, vec!["cached", "U", "noexec"]);
        assert_eq!(m.get("consistency"), None);
        assert_eq!(m["read_only"], json!(true));
        assert!(
            parse_volume("ab:bc:cd:de")
                .unwrap_err()
                .to_string()
                .contains("too many colons")
        );
        assert!(
            parse_volume(":/t")
                .unwrap_err()
                .to_string()
                .contains("empty section")
        );
        assert!(parse_volume("").is_err());
        assert_eq!(v("/a"), json!({"type": "volume", "target": "/a"}));
    }

    #[test]
    fn clean_path_is_go_path_clean() {
        for (input, want) in [
            ("/var/www/html/", "/var/www/html"),
            ("/a//b/./c/..", "/a/b"),
            ("/../x", "/x"),
            ("a/../../b", "../b"),
            ("", "."),
            ("./", "."),
            ("/", "/"),
        ] {
            assert_eq!(clean_path(input), want, "{input}");
        }
    }

    #[test]
    fn canonical_shell_split() {
        assert_eq!(
            crate::util::shell::split(r#"sh -c "echo a b" c\ d 'e f'"#).unwrap(),
            vec!["sh", "-c", "echo a b", "c d", "e f"]
        );
        assert!(crate::util::shell::split("echo 'x").is_err());
        assert_eq!(crate::util::shell::split("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn canonical_service_short_forms() {
        let mut doc = json!({"services": {"w": {
            "build": "./app",
            "depends_on": ["db"],
            "environment": ["A=1", "B"],
            "healthcheck": {"test": "curl x", "retries": "3"},
            "extra_hosts": ["a:1.2.3.4", "b=5.6.7.8"],
            "networks": ["front"],
            "tty": "true",
            "cpus": "0.5",
            "secrets": ["s"],
            "devices": ["/dev/a:/dev/b"],
            "env_file": ".env",
            "expose": [80],
        }}});
        canonicalize(&mut doc, &Spans::new()).unwrap();
        let w = &doc["services"]["w"];
        assert_eq!(w["build"], json!({"context": "./app"}));
        assert_eq!(
            w["depends_on"]["db"],
            json!({"condition": "service_started", "required": true})
        );
        assert_eq!(w["environment"], json!({"A": "1", "B": null}));
        assert_eq!(w["healthcheck"]["test"], json!(["CMD-SHELL", "curl x"]));
        assert_eq!(w["healthcheck"]["retries"], json!(3));
        assert_eq!(w["extra_hosts"], json!(["a=1.2.3.4", "b=5.6.7.8"]));
        assert_eq!(w["networks"], json!({"front": null}));
        assert_eq!(w["tty"], json!(true));
        assert_eq!(w["cpus"], json!(0.5));
        assert_eq!(
            w["secrets"],
            json!([{"source": "s", "target": "/run/secrets/s"}])
        );
        assert_eq!(w["devices"][0]["permissions"], json!("rwm"));
        assert_eq!(w["env_file"], json!([{"path": ".env", "required": true}]));
        assert_eq!(w["expose"], json!(["80"]));
    }
}
