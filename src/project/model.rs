//! The compose model: serde types for a project in canonical long form.
//!
//! Every short syntax of the compose format (`ports: ["8080:80"]`, `volumes: ["./src:/app"]`,
//! `depends_on: [db]`, `build: ./dir`, ...) has already been expanded by the loader
//! (`project::canonical`) before these types are built, so each field has exactly one shape.
//! Field names and the JSON they serialize to follow the compose specification and match what
//! `docker compose config --format json` prints (same keys, same normal forms): durations are
//! Go-style strings (`1m30s`), byte sizes are decimal strings (`"67108864"`), `command` and
//! `entrypoint` are always present (`null` when unset).
//!
//! This module does no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `x-` extension keys kept verbatim.
pub type Extensions = IndexMap<String, Value>;

/// A key → optional value mapping (`environment`, build `args`): `None` means "declared
/// without a value" (`- FOO` in list form).
pub type MappingWithEquals = BTreeMap<String, Option<String>>;

/// A plain key → value mapping (labels, sysctls, driver options).
pub type Mapping = BTreeMap<String, String>;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// Unset or empty: compose leaves an empty string out of its output.
#[allow(clippy::ref_option)]
fn is_none_or_empty(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(str::is_empty)
}

/// The actual name of a top-level resource: its `name`, else the key when external, else
/// `<project>_<key>`. An empty `name` (`name: ${UNSET}`) counts as none: compose prints no
/// name then.
fn actual_name(name: Option<&str>, external: bool, project: &str, key: &str) -> String {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => n.to_owned(),
        None if external => key.to_owned(),
        None => format!("{project}_{key}"),
    }
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// Writes a float the way Go's encoding/json does: integral values without a fraction.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn go_float<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        #[allow(clippy::cast_possible_truncation)]
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

fn is_zero_bytes(v: &ByteSize) -> bool {
    v.0 == 0
}

/// A whole compose project after loading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Normalised project name (lowercase letters, digits, `-` and `_`).
    #[serde(default)]
    pub name: String,
    /// The project directory: relative paths in the files were resolved against it.
    #[serde(skip)]
    pub working_dir: PathBuf,
    /// The compose files that were loaded, in order.
    #[serde(skip)]
    pub compose_files: Vec<PathBuf>,
    /// Services that are enabled (active profiles), in file order.
    #[serde(default)]
    pub services: IndexMap<String, Service>,
    /// Networks used by the enabled services (plus `default` when a service needs it).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub networks: IndexMap<String, Network>,
    /// Named volumes used by the enabled services.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub volumes: IndexMap<String, Volume>,
    /// Secrets used by the enabled services.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub secrets: IndexMap<String, FileObject>,
    /// Configs used by the enabled services.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub configs: IndexMap<String, FileObject>,
    /// AI models (`models:` top-level element), kept as declared.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub models: IndexMap<String, Value>,
    /// Services disabled by profiles, in file order (not rendered).
    #[serde(skip)]
    pub disabled_services: IndexMap<String, Service>,
    /// Active profiles.
    #[serde(skip)]
    pub profiles: Vec<String>,
    /// The variables the files were interpolated with (shell env over env files).
    #[serde(skip)]
    pub environment: BTreeMap<String, String>,
    /// Top-level `x-` extensions.
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// One service, in canonical long form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The service name (the key in `services:`); not rendered.
    #[serde(skip)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub annotations: Mapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub develop: Option<Develop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub cpu_count: i64,
    #[serde(
        default,
        skip_serializing_if = "is_zero_f64",
        serialize_with = "go_float"
    )]
    pub cpu_percent: f64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub cpu_period: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub cpu_quota: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub cpu_rt_period: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub cpu_rt_runtime: i64,
    /// Number of CPUs (fractional).
    #[serde(
        default,
        skip_serializing_if = "is_zero_f64",
        serialize_with = "go_float"
    )]
    pub cpus: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub cpu_shares: i64,
    /// Command; `None` keeps the image's, `Some(vec![])` clears it. Always rendered.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_spec: Option<Value>,
    /// Dependencies in long form, in file order.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub depends_on: IndexMap<String, Dependency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// Entrypoint; `None` keeps the image's, `Some(vec![])` clears it. Always rendered.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Value>,
    /// Final environment (env_file entries merged under `environment`); `None` value =
    /// declared without a value and not found in the interpolation environment.
    #[serde(default, skip_serializing_if = "MappingWithEquals::is_empty")]
    pub environment: MappingWithEquals,
    /// Env files (already read into `environment` after loading, unless not normalised).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<EnvFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<Extends>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_links: Vec<String>,
    /// `host=ip` entries (the canonical compose form).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<DeviceRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_file: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub log_opt: Mapping,
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub mem_limit: ByteSize,
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub mem_reservation: ByteSize,
    /// `-1` = unlimited swap.
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub memswap_limit: ByteSize,
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub mem_swappiness: ByteSize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub models: IndexMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    /// `none`, `host`, `bridge`, `service:NAME`, `container:NAME` or a network's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// Networks the service joins (sorted by name); `None` value = joined with no options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub oom_kill_disable: bool,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub oom_score_adj: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub pids_limit: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `no`, `always`, `on-failure[:N]`, `unless-stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Number of containers (also `deploy.replicas`); see [`Service::replicas`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub shm_size: ByteSize,
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub storage_opt: Mapping,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub sysctls: Mapping,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_api_socket: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ServiceVolume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_start: Vec<ServiceHook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_stop: Vec<ServiceHook>,
    /// `x-` keys of the service.
    #[serde(flatten)]
    pub extensions: Extensions,
}

impl Service {
    /// Number of containers: `scale`, else `deploy.replicas`, else 1.
    #[must_use]
    pub fn replicas(&self) -> u32 {
        self.scale
            .or_else(|| self.deploy.as_ref().and_then(|d| d.replicas))
            .unwrap_or(1)
    }

    /// Name of container number `n` (1-based): `container_name` when set, else
    /// `<project>-<service>-<n>`.
    #[must_use]
    pub fn container_name_for(&self, project: &str, n: u32) -> String {
        match &self.container_name {
            Some(name) => name.clone(),
            None => format!("{project}-{}-{n}", self.name),
        }
    }

    /// Names of the services this one depends on (`depends_on`, file order).
    pub fn dependencies(&self) -> impl Iterator<Item = &str> {
        self.depends_on.keys().map(String::as_str)
    }

    /// The service named by `network_mode: service:NAME`, if any.
    #[must_use]
    pub fn network_mode_service(&self) -> Option<&str> {
        match &self.network_mode {
            Some(NetworkMode::Service(s)) => Some(s),
            _ => None,
        }
    }

    /// The config hash docker compose v2 puts on containers (`com.docker.compose.config-hash`,
    /// printed by `config --hash`): SHA-256 of the service's JSON as Go's encoding/json writes
    /// it, without `build`, `pull_policy`, `scale`, `deploy.replicas`, `depends_on`,
    /// `profiles` and `x-` keys, with `env_file` as a list of paths.
    #[must_use]
    pub fn compose_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut o = self.clone();
        o.build = None;
        o.pull_policy = None;
        o.scale = None;
        if let Some(d) = o.deploy.as_mut() {
            d.replicas = None;
        }
        o.depends_on.clear();
        o.profiles.clear();
        o.extensions.clear();
        let mut v = serde_json::to_value(&o).unwrap_or(Value::Null);
        if let Some(Value::Array(files)) = v.get_mut("env_file") {
            for f in files.iter_mut() {
                if let Some(p) = f.get("path").cloned() {
                    *f = p;
                }
            }
        }
        let json = v.to_string();
        // Go's encoding/json escapes these inside strings.
        let mut go = String::with_capacity(json.len());
        for c in json.chars() {
            match c {
                '<' => go.push_str("\\u003c"),
                '>' => go.push_str("\\u003e"),
                '&' => go.push_str("\\u0026"),
                '\u{2028}' => go.push_str("\\u2028"),
                '\u{2029}' => go.push_str("\\u2029"),
                c => go.push(c),
            }
        }
        hex::encode(Sha256::digest(go.as_bytes()))
    }

    /// Networks ordered by `priority` (highest first), then by name: the order to connect in.
    #[must_use]
    pub fn networks_by_priority(&self) -> Vec<&str> {
        let mut v: Vec<(&str, i64)> = self
            .networks
            .iter()
            .map(|(k, n)| (k.as_str(), n.as_ref().map_or(0, |n| n.priority)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.into_iter().map(|(k, _)| k).collect()
    }
}

/// `build:` in long form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// Absolute path of the build context (or a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Dockerfile path relative to the context (default `Dockerfile`). Empty when the file
    /// sets it empty (`dockerfile: ${UNSET}`): compose keeps that as "the builder's default"
    /// and prints nothing.
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub dockerfile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_inline: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<String>,
    #[serde(default, skip_serializing_if = "MappingWithEquals::is_empty")]
    pub args: MappingWithEquals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<Value>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_to: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_cache: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_cache_filter: Vec<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub additional_contexts: Mapping,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pull: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileReference>,
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub shm_size: ByteSize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// `develop:` (watch rules).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Develop {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<WatchRule>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// One `develop.watch` rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchRule {
    /// Absolute host path watched.
    pub path: String,
    /// `sync`, `rebuild`, `restart`, `sync+restart`, `sync+exec`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For `sync+exec`: the command run after syncing.
    #[serde(default)]
    pub exec: ServiceHook,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub initial_sync: bool,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// A lifecycle hook (`post_start`, `pre_stop`) or a watch `exec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceHook {
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "MappingWithEquals::is_empty")]
    pub environment: MappingWithEquals,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// A reference from a service to a secret or config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileReference {
    pub source: String,
    /// Path in the container (secrets default to `/run/secrets/<source>`; configs to
    /// `/<source>` at run time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// File mode (rendered as an octal string like compose does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// A file permission mode; deserializes from an integer or an octal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0{:o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(FileMode)
                .ok_or_else(|| de::Error::custom("file mode must be a positive integer")),
            Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
                .map(FileMode)
                .map_err(|_| de::Error::custom(format!("invalid octal file mode `{s}`"))),
            _ => Err(de::Error::custom(
                "file mode must be a number or an octal string",
            )),
        }
    }
}

/// One `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    /// `service_started`, `service_healthy` or `service_completed_successfully`.
    #[serde(default)]
    pub condition: Condition,
    /// Restart this service when the dependency is updated.
    #[serde(default, skip_serializing_if = "is_false")]
    pub restart: bool,
    /// When false a missing or disabled dependency is only a warning.
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(flatten)]
    pub extensions: Extensions,
}

impl Default for Dependency {
    fn default() -> Self {
        Dependency {
            condition: Condition::default(),
            restart: false,
            required: true,
            extensions: Extensions::new(),
        }
    }
}

/// `deploy:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deploy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<Value>,
    /// Always rendered (compose renders `{}` when empty).
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Always rendered (compose renders `{}` when empty).
    #[serde(default)]
    pub placement: Placement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<String>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// `deploy.placement`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<Value>,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub max_replicas_per_node: u64,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// `deploy.resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Resource>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// Limits or reservations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// CPUs (fractional).
    #[serde(
        default,
        skip_serializing_if = "is_zero_f64",
        serialize_with = "go_float"
    )]
    pub cpus: f64,
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub memory: ByteSize,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub pids: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generic_resources: Vec<Value>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// `deploy.restart_policy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// A device request (`gpus`, `deploy.resources.reservations.devices`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Device count; `-1` = all.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub count: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub options: Mapping,
}

/// A device mapping in long form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceMapping {
    pub source: String,
    pub target: String,
    /// cgroup permissions (`rwm`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permissions: String,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// `env_file` entry in long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvFile {
    /// Absolute path.
    pub path: String,
    /// A missing file is an error only when required (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub required: bool,
    /// `raw` disables interpolation and quote handling inside the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// `extends:` in long form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extends {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub service: String,
}

/// `healthcheck:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "cmd"]` or `["NONE"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub disable: bool,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// `logging:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub options: Mapping,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// A service's attachment to one network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceNetwork {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub driver_opts: Mapping,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub gw_priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub priority: i64,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// A published or exposed port in long form (one entry per port of a range).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `ingress` or `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Container port.
    pub target: u16,
    /// Host port or host port range (`"8080"`, `"8080-8090"`); `None` = ephemeral or not
    /// published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

impl Port {
    /// The protocol, `tcp` when unset.
    #[must_use]
    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().unwrap_or("tcp")
    }

    /// Host port range `(first, last)` when published.
    #[must_use]
    pub fn published_range(&self) -> Option<(u16, u16)> {
        let p = self.published.as_deref()?;
        match p.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => {
                let v = p.parse().ok()?;
                Some((v, v))
            }
        }
    }
}

/// A mount of a service in long form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceVolume {
    /// `bind`, `volume`, `tmpfs`, `image`, `npipe` or `cluster`.
    #[serde(rename = "type")]
    pub kind: VolumeType,
    /// Host path (absolute, for binds), volume name (volumes), image (image); `None` for
    /// anonymous volumes and tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageMountOptions>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// Options of a bind mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindOptions {
    /// `z` or `Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux: Option<String>,
    /// `rprivate`, `private`, `rshared`, `shared`, `rslave`, `slave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
    /// Create the host directory when missing (true for short syntax).
    #[serde(default, skip_serializing_if = "is_false")]
    pub create_host_path: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<String>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            selinux: None,
            propagation: None,
            create_host_path: true,
            recursive: None,
            extensions: Extensions::new(),
        }
    }
}

/// Options of a volume mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeOptions {
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    #[serde(default, skip_serializing_if = "is_false")]
    pub nocopy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// Options of a tmpfs mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TmpfsOptions {
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub size: ByteSize,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub mode: u64,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// Options of an image mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageMountOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// A ulimit: one value for soft and hard, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ulimit {
    /// `nproc: 65535`.
    Single(i64),
    /// `nofile: {soft: 1024, hard: 4096}`.
    SoftHard { soft: i64, hard: i64 },
}

impl Ulimit {
    /// `(soft, hard)`.
    #[must_use]
    pub fn soft_hard(self) -> (i64, i64) {
        match self {
            Ulimit::Single(v) => (v, v),
            Ulimit::SoftHard { soft, hard } => (soft, hard),
        }
    }
}

impl Serialize for Ulimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match *self {
            Ulimit::Single(v) if v != 0 => s.serialize_i64(v),
            Ulimit::Single(_) => s.serialize_map(Some(0))?.end(),
            Ulimit::SoftHard { soft, hard } => {
                // Zero values are left out, as Go's `omitempty` does.
                let mut m = s.serialize_map(None)?;
                if soft != 0 {
                    m.serialize_entry("soft", &soft)?;
                }
                if hard != 0 {
                    m.serialize_entry("hard", &hard)?;
                }
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ulimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let int = |v: Option<&Value>| -> Result<i64, D::Error> {
            match v {
                None => Ok(0),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .ok_or_else(|| de::Error::custom("ulimit must be an integer")),
                Some(Value::String(s)) => s
                    .parse()
                    .map_err(|_| de::Error::custom(format!("invalid ulimit `{s}`"))),
                Some(_) => Err(de::Error::custom("ulimit must be an integer")),
            }
        };
        match Value::deserialize(d)? {
            Value::Object(m) => Ok(Ulimit::SoftHard {
                soft: int(m.get("soft"))?,
                hard: int(m.get("hard"))?,
            }),
            v => Ok(Ulimit::Single(int(Some(&v))?)),
        }
    }
}

/// A top-level network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Actual name (`<project>_<key>` unless set or external); empty when the file sets an
    /// empty name (see [`Network::actual_name`]).
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub driver_opts: Mapping,
    /// Always rendered (compose renders `{}` when empty).
    #[serde(default)]
    pub ipam: Ipam,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub attachable: bool,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ipv4: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ipv6: Option<bool>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

impl Network {
    /// The network's name on the engine.
    #[must_use]
    pub fn actual_name(&self, project: &str, key: &str) -> String {
        actual_name(self.name.as_deref(), self.external, project, key)
    }
}

/// IP address management of a network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ipam {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamPool>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub options: Mapping,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// One IPAM pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamPool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub aux_addresses: Mapping,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// A top-level volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Actual name (`<project>_<key>` unless set or external); empty when the file sets an
    /// empty name (see [`Volume::actual_name`]).
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub driver_opts: Mapping,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    #[serde(flatten)]
    pub extensions: Extensions,
}

impl Volume {
    /// The volume's name on the engine.
    #[must_use]
    pub fn actual_name(&self, project: &str, key: &str) -> String {
        actual_name(self.name.as_deref(), self.external, project, key)
    }
}

/// A top-level secret or config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub name: Option<String>,
    /// Absolute host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Name of a variable of the interpolation environment holding the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Inline content (configs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub driver_opts: Mapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_driver: Option<String>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// Implements `Display` and `Serialize` by the compose spelling of a typed value, and
/// `Deserialize` by its `FromStr` (the loader's error then names the file, line and key).
macro_rules! compose_string {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.spelling())
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.spelling())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(de::Error::custom)
            }
        }
    };
}

/// A value that is not one of those a key allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}")]
pub struct ValueError {
    /// What the value is of (`restart policy`).
    pub what: &'static str,
    /// The value.
    pub value: String,
}

impl ValueError {
    fn new(what: &'static str, value: &str) -> ValueError {
        ValueError {
            what,
            value: value.to_owned(),
        }
    }
}

/// A `depends_on` entry's `condition`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Condition {
    /// `service_started`: the dependency's containers are started.
    #[default]
    ServiceStarted,
    /// `service_healthy`: they report healthy.
    ServiceHealthy,
    /// `service_completed_successfully`: they exited with status 0.
    ServiceCompletedSuccessfully,
}

impl Condition {
    fn spelling(self) -> std::borrow::Cow<'static, str> {
        match self {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
        .into()
    }
}

impl std::str::FromStr for Condition {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Ok(match s {
            "service_started" => Condition::ServiceStarted,
            "service_healthy" => Condition::ServiceHealthy,
            "service_completed_successfully" => Condition::ServiceCompletedSuccessfully,
            _ => return Err(ValueError::new("depends_on condition", s)),
        })
    }
}

compose_string!(Condition);

/// A mount's `type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VolumeType {
    /// A host path.
    Bind,
    /// A named or anonymous volume.
    #[default]
    Volume,
    /// A tmpfs.
    Tmpfs,
    /// An image's filesystem.
    Image,
    /// A Windows named pipe.
    Npipe,
    /// A cluster volume (swarm).
    Cluster,
}

impl VolumeType {
    fn spelling(self) -> std::borrow::Cow<'static, str> {
        match self {
            VolumeType::Bind => "bind",
            VolumeType::Volume => "volume",
            VolumeType::Tmpfs => "tmpfs",
            VolumeType::Image => "image",
            VolumeType::Npipe => "npipe",
            VolumeType::Cluster => "cluster",
        }
        .into()
    }
}

impl std::str::FromStr for VolumeType {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Ok(match s {
            "bind" => VolumeType::Bind,
            "volume" => VolumeType::Volume,
            "tmpfs" => VolumeType::Tmpfs,
            "image" => VolumeType::Image,
            "npipe" => VolumeType::Npipe,
            "cluster" => VolumeType::Cluster,
            _ => return Err(ValueError::new("volume type", s)),
        })
    }
}

compose_string!(VolumeType);

/// A service's `pull_policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullPolicy {
    /// `always`.
    Always,
    /// `never`.
    Never,
    /// `missing`.
    Missing,
    /// `if_not_present` (the same as `missing`).
    IfNotPresent,
    /// `build`: build the image, never pull it.
    Build,
    /// `refresh`.
    Refresh,
    /// `daily`.
    Daily,
    /// `weekly`.
    Weekly,
    /// `every_<duration>`: the duration as written (`12h`).
    Every(String),
}

impl PullPolicy {
    fn spelling(&self) -> std::borrow::Cow<'static, str> {
        match self {
            PullPolicy::Always => "always".into(),
            PullPolicy::Never => "never".into(),
            PullPolicy::Missing => "missing".into(),
            PullPolicy::IfNotPresent => "if_not_present".into(),
            PullPolicy::Build => "build".into(),
            PullPolicy::Refresh => "refresh".into(),
            PullPolicy::Daily => "daily".into(),
            PullPolicy::Weekly => "weekly".into(),
            PullPolicy::Every(d) => format!("every_{d}").into(),
        }
    }
}

impl std::str::FromStr for PullPolicy {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Ok(match s {
            "always" => PullPolicy::Always,
            "never" => PullPolicy::Never,
            "missing" => PullPolicy::Missing,
            "if_not_present" => PullPolicy::IfNotPresent,
            "build" => PullPolicy::Build,
            "refresh" => PullPolicy::Refresh,
            "daily" => PullPolicy::Daily,
            "weekly" => PullPolicy::Weekly,
            _ => match s.strip_prefix("every_") {
                Some(d) if !d.is_empty() => PullPolicy::Every(d.to_owned()),
                _ => return Err(ValueError::new("pull_policy", s)),
            },
        })
    }
}

compose_string!(PullPolicy);

/// A service's `restart` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// `no`.
    No,
    /// `always`.
    Always,
    /// `on-failure`, with `:N` at most N restarts.
    OnFailure(Option<u32>),
    /// `unless-stopped`.
    UnlessStopped,
}

impl Restart {
    fn spelling(self) -> std::borrow::Cow<'static, str> {
        match self {
            Restart::No => "no".into(),
            Restart::Always => "always".into(),
            Restart::OnFailure(None) => "on-failure".into(),
            Restart::OnFailure(Some(n)) => format!("on-failure:{n}").into(),
            Restart::UnlessStopped => "unless-stopped".into(),
        }
    }
}

impl std::str::FromStr for Restart {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Ok(match s {
            "no" => Restart::No,
            "always" => Restart::Always,
            "unless-stopped" => Restart::UnlessStopped,
            "on-failure" => Restart::OnFailure(None),
            other => match other.strip_prefix("on-failure:").map(str::parse) {
                Some(Ok(n)) => Restart::OnFailure(Some(n)),
                _ => return Err(ValueError::new("restart policy", other)),
            },
        })
    }
}

compose_string!(Restart);

/// A service's `network_mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// `none`: a network namespace with loopback only.
    None,
    /// `host`: the host's network namespace.
    Host,
    /// `bridge`: Docker's default bridge network.
    Bridge,
    /// `service:NAME`: the namespace of another service's container.
    Service(String),
    /// `container:NAME`: the namespace of a container.
    Container(String),
    /// Any other value: a network by that name.
    Network(String),
}

impl NetworkMode {
    fn spelling(&self) -> std::borrow::Cow<'static, str> {
        match self {
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Bridge => "bridge".into(),
            NetworkMode::Service(s) => format!("service:{s}").into(),
            NetworkMode::Container(c) => format!("container:{c}").into(),
            NetworkMode::Network(n) => n.clone().into(),
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Ok(match s {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            "bridge" => NetworkMode::Bridge,
            _ => {
                if let Some(x) = s.strip_prefix("service:") {
                    NetworkMode::Service(x.to_owned())
                } else if let Some(x) = s.strip_prefix("container:") {
                    NetworkMode::Container(x.to_owned())
                } else {
                    NetworkMode::Network(s.to_owned())
                }
            }
        })
    }
}

compose_string!(NetworkMode);

/// A duration with nanosecond precision, written the way Go prints a `time.Duration`
/// (`1m30s`, `500ms`, `1h0m0s`); parsed from that syntax (plus `d` and `w` units) or from a
/// number of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Duration {
    /// Nanoseconds.
    #[must_use]
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// As a `std::time::Duration`.
    #[must_use]
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0)
    }

    /// Parses `1h2m3.5s`, `500ms`, `10us`, `1µs`, `3ns`, `2d`, `1w` (and a bare `0`).
    ///
    /// # Errors
    /// A message naming what is wrong when `s` is not a duration.
    pub fn parse(s: &str) -> Result<Duration, crate::util::units::UnitError> {
        crate::util::units::parse_duration_nanos(s).map(Duration)
    }
}

impl fmt::Display for Duration {
    /// Go's `time.Duration.String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns == 0 {
            return f.write_str("0s");
        }
        fn frac(v: u64, digits: u32) -> String {
            // v is the fractional part as an integer with `digits` digits; trim zeros.
            let s = format!("{v:0width$}", width = digits as usize);
            let s = s.trim_end_matches('0');
            if s.is_empty() {
                String::new()
            } else {
                format!(".{s}")
            }
        }
        if ns < 1_000 {
            return write!(f, "{ns}ns");
        }
        if ns < 1_000_000 {
            return write!(f, "{}{}µs", ns / 1_000, frac(ns % 1_000, 3));
        }
        if ns < 1_000_000_000 {
            return write!(f, "{}{}ms", ns / 1_000_000, frac(ns % 1_000_000, 6));
        }
        let secs = ns / 1_000_000_000;
        let sub = ns % 1_000_000_000;
        let h = secs / 3600;
        let m = (secs % 3600) / 60;
        let s = secs % 60;
        if h > 0 {
            write!(f, "{h}h{m}m")?;
        } else if m > 0 {
            write!(f, "{m}m")?;
        }
        write!(f, "{s}{}s", frac(sub, 9))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Duration::parse(&s).map_err(de::Error::custom),
            Value::Number(n) => {
                // A bare number is a count of seconds, as in compose's schema.
                let secs = n
                    .as_f64()
                    .filter(|v| *v >= 0.0)
                    .ok_or_else(|| de::Error::custom("duration must not be negative"))?;
                Duration::parse(&format!("{secs}s")).map_err(de::Error::custom)
            }
            _ => Err(de::Error::custom("duration must be a string like `1m30s`")),
        }
    }
}

/// A byte size (`64m`, `1g`, `1024`), rendered as a decimal string like compose does. Signed
/// only because `memswap_limit: -1` means "unlimited".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub i64);

impl ByteSize {
    /// The size in bytes when not negative.
    #[must_use]
    pub fn bytes(self) -> Option<u64> {
        u64::try_from(self.0).ok()
    }

    /// Parses `1024`, `64m`, `1.5g`, `10kb`, `2GiB` (binary units, case-insensitive).
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(s: &str) -> Result<ByteSize, crate::util::units::UnitError> {
        crate::util::units::parse_byte_size(s).map(ByteSize)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => ByteSize::parse(&s).map_err(de::Error::custom),
            Value::Number(n) => n
                .as_i64()
                .map(ByteSize)
                .ok_or_else(|| de::Error::custom("byte size must be an integer")),
            _ => Err(de::Error::custom(
                "byte size must be a string like `64m` or a number",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_duration_prints_like_go() {
        for (input, out) in [
            ("1m30s", "1m30s"),
            ("90s", "1m30s"),
            ("1500ms", "1.5s"),
            ("0.5s", "500ms"),
            ("1h1m", "1h1m0s"),
            ("10us", "10µs"),
            ("3ns", "3ns"),
            ("0", "0s"),
            ("1d", "24h0m0s"),
            ("1.25ms", "1.25ms"),
        ] {
            assert_eq!(Duration::parse(input).unwrap().to_string(), out, "{input}");
        }
        for bad in ["", "1x", "s", "-1s", "1m30", "abc"] {
            assert!(Duration::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn model_byte_sizes() {
        assert_eq!(ByteSize::parse("64m").unwrap().0, 67_108_864);
        assert_eq!(ByteSize::parse("1g").unwrap().0, 1_073_741_824);
        assert_eq!(ByteSize::parse("50M").unwrap().0, 52_428_800);
        assert_eq!(ByteSize::parse("1.5k").unwrap().0, 1536);
        assert_eq!(ByteSize::parse("-1").unwrap().0, -1);
        assert_eq!(ByteSize::parse("100").unwrap().0, 100);
        assert!(ByteSize::parse("12q").is_err());
        assert!(ByteSize::parse("9999999999999p").is_err());
    }

    #[test]
    fn model_service_round_trips_through_json() {
        let v = serde_json::json!({
            "image": "nginx",
            "command": ["echo", "hi"],
            "ports": [{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}],
            "healthcheck": {"test": ["CMD", "true"], "interval": "1m30s"},
            "ulimits": {"nofile": {"soft": 1, "hard": 2}, "nproc": 5},
            "shm_size": "67108864",
            "depends_on": {"db": {"condition": "service_healthy", "required": true}},
            "x-foo": 1,
        });
        let s: Service = serde_json::from_value(v).unwrap();
        assert_eq!(s.image.as_deref(), Some("nginx"));
        assert_eq!(s.ulimits["nproc"], Ulimit::Single(5));
        assert_eq!(s.shm_size.0, 67_108_864);
        assert_eq!(s.replicas(), 1);
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["healthcheck"]["interval"], "1m30s");
        assert_eq!(back["entrypoint"], Value::Null);
        assert_eq!(back["x-foo"], 1);
    }
}
