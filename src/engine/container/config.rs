//! What a container should be: [`ContainerConfig`], the options a user (or compose) gives,
//! saved in the container's directory. The engine turns it, with the image's config, into an
//! OCI runtime spec (see `spec.rs`). No I/O here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Options of one container, as Docker and compose name them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    /// Container name (unique in the state root); empty: a generated name.
    pub name: String,
    /// The image reference as given.
    pub image: String,
    /// The resolved image id (`sha256:…`), filled by the store.
    pub image_id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Overrides the image's entrypoint (`Some(vec![])` clears it).
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's command.
    pub command: Option<Vec<String>>,
    /// `K=V` entries, over the image's environment.
    pub env: Vec<String>,
    /// Overrides the image's working directory.
    pub working_dir: Option<String>,
    /// `name`, `uid`, `name:group` or `uid:gid`; over the image's user.
    pub user: Option<String>,
    /// Extra groups (names resolved in the image's /etc/group, or numbers).
    pub group_add: Vec<String>,
    /// Hostname (default: the first 12 hex digits of the id).
    pub hostname: Option<String>,
    /// NIS domain name.
    pub domainname: Option<String>,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open (attach the caller's stdin).
    pub stdin_open: bool,
    /// Run tug's tiny init as PID 1.
    pub init: bool,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
    /// All capabilities, no seccomp, no masked paths, writable /sys.
    pub privileged: bool,
    /// Capabilities added to Docker's default set (`NET_ADMIN` or `CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities removed from it.
    pub cap_drop: Vec<String>,
    /// `seccomp=unconfined`, `seccomp=<file>`, `no-new-privileges[:true]`.
    pub security_opt: Vec<String>,
    /// Namespaced sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// Resource limits by name (`nofile`, `nproc`, …).
    pub ulimits: BTreeMap<String, Ulimit>,
    /// cgroup limits.
    pub resources: Resources,
    /// Bind mounts, volumes and tmpfs mounts. A volume mount without a source asks for an
    /// anonymous volume, made at create (see `container::volumes`).
    pub mounts: Vec<Mount>,
    /// Anonymous volumes made for this container (the image's `VOLUME` paths, `-v PATH`, a
    /// compose one-off's): deleted with it by `rm -v` and when it is auto-removed.
    pub anonymous_volumes: Vec<String>,
    /// Network namespace.
    pub network: NetworkMode,
    /// `engine::network` holds this container's namespace, endpoints and published ports
    /// under the container's id; removing the container releases them
    /// (`Networks::disconnect_all`). Set by `container::net::wire`.
    pub network_owned: bool,
    /// Contents of /etc/hosts (`None`: localhost entries plus the hostname).
    pub etc_hosts: Option<String>,
    /// Contents of /etc/resolv.conf (`None`: the host's, without loopback servers).
    pub resolv_conf: Option<String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Signal `stop` sends first (default: the image's, else SIGTERM).
    pub stop_signal: Option<String>,
    /// How long `stop` waits before SIGKILL (default 10 s).
    pub stop_grace_period: Option<Duration>,
    /// Healthcheck (`None`: none).
    pub healthcheck: Option<Healthcheck>,
    /// Remove the container when it exits (`run --rm`).
    pub auto_remove: bool,
    /// OCI runtime: `None` for the built-in one, or a runc-compatible binary (`runc`).
    pub runtime: Option<String>,
    /// Rotate the log when it grows beyond this many bytes (default 10 MiB).
    pub log_max_size: Option<u64>,
}

/// A soft and hard resource limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// cgroup limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Memory plus swap in bytes (-1: unlimited swap).
    pub memswap: Option<i64>,
    /// CPUs (fractional, `1.5`).
    pub cpus: Option<f64>,
    /// Relative CPU weight (v1 shares, default 1024).
    pub cpu_shares: Option<u64>,
    /// CPUs allowed (`0-1`, `0,2`).
    pub cpuset: Option<String>,
    /// Maximum number of processes (`-1` or `None`: unlimited).
    pub pids_limit: Option<i64>,
    /// Size of /dev/shm in bytes (default 64 MiB).
    pub shm_size: Option<u64>,
}

/// The kind of a mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    #[default]
    Bind,
    /// A named volume (its `_data` directory, already resolved).
    Volume,
    /// A tmpfs.
    Tmpfs,
}

/// One mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mount {
    /// Kind.
    pub kind: MountKind,
    /// Host path (bind, volume); ignored for tmpfs.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// Extra mount options (`size=…`, `mode=…` for tmpfs; propagation for binds).
    pub options: Vec<String>,
}

/// The network namespace of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A new namespace with only loopback.
    #[default]
    None,
    /// The host's namespace.
    Host,
    /// A prepared namespace (bind mount made by the network layer) to join.
    Netns(PathBuf),
    /// The namespace of another container (id).
    Container(String),
}

/// When the supervisor restarts the container after it exits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// Always, until stopped.
    Always,
    /// When it exits non-zero, at most `max_retries` times (`None`: no limit).
    OnFailure {
        /// Limit on restarts.
        max_retries: Option<u32>,
    },
    /// Like `always`, except after an explicit stop.
    UnlessStopped,
}

/// A restart policy Docker does not have (`--restart`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid restart policy {policy:?}")]
pub struct InvalidRestartPolicy {
    /// The policy as written.
    pub policy: String,
}

impl std::str::FromStr for RestartPolicy {
    type Err = InvalidRestartPolicy;
    fn from_str(s: &str) -> Result<Self, InvalidRestartPolicy> {
        let invalid = || InvalidRestartPolicy {
            policy: s.to_owned(),
        };
        Ok(match s {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure { max_retries: None },
            other => match other.strip_prefix("on-failure:") {
                Some(n) => RestartPolicy::OnFailure {
                    max_retries: Some(n.parse().map_err(|_| invalid())?),
                },
                None => return Err(invalid()),
            },
        })
    }
}

/// A healthcheck, as compose and Docker define it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// Time between checks (default 30 s).
    pub interval: Option<Duration>,
    /// A check that takes longer fails (default 30 s).
    pub timeout: Option<Duration>,
    /// Consecutive failures before unhealthy (default 3).
    pub retries: Option<u32>,
    /// Failures during this period do not count (default 0).
    pub start_period: Option<Duration>,
    /// Time between checks during the start period (default 5 s).
    pub start_interval: Option<Duration>,
}

/// Reads the `Healthcheck` of a Docker image config (`config.Healthcheck` in the config
/// blob's JSON; Docker's extension, not part of the OCI image spec). Its durations are
/// nanoseconds, 0 meaning "not set"; `Test` is `["NONE"]`, `["CMD", …]` or
/// `["CMD-SHELL", cmd]`. `None` when the config has none or it is malformed.
#[must_use]
pub fn image_healthcheck(config_json: &[u8]) -> Option<Healthcheck> {
    let v: serde_json::Value = serde_json::from_slice(config_json).ok()?;
    let h = v.get("config")?.get("Healthcheck")?.as_object()?;
    let test: Vec<String> = h
        .get("Test")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let dur = |k: &str| {
        h.get(k)
            .and_then(serde_json::Value::as_u64)
            .filter(|&n| n > 0)
            .map(Duration::from_nanos)
    };
    Some(Healthcheck {
        test,
        interval: dur("Interval"),
        timeout: dur("Timeout"),
        retries: h
            .get("Retries")
            .and_then(serde_json::Value::as_u64)
            .filter(|&n| n > 0)
            .and_then(|n| u32::try_from(n).ok()),
        start_period: dur("StartPeriod"),
        start_interval: dur("StartInterval"),
    })
}

/// The healthcheck a container runs, as Docker merges it at create: none given → the
/// image's; `test: ["NONE"]` → none (the image's is disabled); otherwise every field not
/// given (an empty `test`, an unset duration or retries) comes from the image's.
#[must_use]
pub fn merge_healthcheck(
    image: Option<&Healthcheck>,
    container: Option<Healthcheck>,
) -> Option<Healthcheck> {
    let Some(mut c) = container else {
        return image.cloned();
    };
    if c.test.first().map(String::as_str) == Some("NONE") {
        return Some(c);
    }
    if let Some(i) = image {
        if c.test.is_empty() {
            c.test.clone_from(&i.test);
        }
        c.interval = c.interval.or(i.interval);
        c.timeout = c.timeout.or(i.timeout);
        c.retries = c.retries.or(i.retries);
        c.start_period = c.start_period.or(i.start_period);
        c.start_interval = c.start_interval.or(i.start_interval);
    }
    Some(c)
}

/// Parses a Docker duration (`1m30s`, `500ms`, `10`=seconds): [`crate::util::units::parse_duration`].
///
/// # Errors
/// Not a duration.
pub fn parse_duration(s: &str) -> Result<Duration, crate::util::units::UnitError> {
    crate::util::units::parse_duration(s)
}

/// Parses a Docker byte size (`512m`, `1g`, `1024`, `64MiB`), not negative:
/// [`crate::util::units::parse_bytes`].
///
/// # Errors
/// Not a size, or a negative one.
pub fn parse_bytes(s: &str) -> Result<u64, crate::util::units::UnitError> {
    crate::util::units::parse_bytes(s)
}

#[cfg(test)]
mod tests {

    #[test]
    fn container_healthcheck_from_image_config_and_merge() {
        let raw = br#"{"config":{"Healthcheck":{"Test":["CMD-SHELL","test -e /ok"],
            "Interval":2000000000,"Timeout":0,"StartPeriod":500000000,"Retries":4}}}"#;
        let img = image_healthcheck(raw).unwrap();
        assert_eq!(img.test, ["CMD-SHELL", "test -e /ok"]);
        assert_eq!(img.interval, Some(Duration::from_secs(2)));
        assert_eq!(img.timeout, None);
        assert_eq!(img.start_period, Some(Duration::from_millis(500)));
        assert_eq!(img.retries, Some(4));
        assert!(image_healthcheck(br#"{"config":{}}"#).is_none());
        assert!(image_healthcheck(b"not json").is_none());
        // No container healthcheck: the image's.
        assert_eq!(merge_healthcheck(Some(&img), None), Some(img.clone()));
        // NONE disables it.
        let none = Healthcheck {
            test: vec!["NONE".into()],
            ..Healthcheck::default()
        };
        assert_eq!(
            merge_healthcheck(Some(&img), Some(none.clone())),
            Some(none)
        );
        // Field by field: the container's interval, the image's test and retries.
        let c = Healthcheck {
            interval: Some(Duration::from_secs(9)),
            ..Healthcheck::default()
        };
        let m = merge_healthcheck(Some(&img), Some(c)).unwrap();
        assert_eq!(m.test, img.test);
        assert_eq!(m.interval, Some(Duration::from_secs(9)));
        assert_eq!(m.retries, Some(4));
        // A container test replaces the image's.
        let c = Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            ..Healthcheck::default()
        };
        let m = merge_healthcheck(Some(&img), Some(c)).unwrap();
        assert_eq!(m.test, ["CMD", "true"]);
        assert_eq!(m.start_period, Some(Duration::from_millis(500)));
        assert_eq!(merge_healthcheck(None, None), None);
    }

    use super::*;

    #[test]
    fn container_config_parses_durations_and_sizes() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn container_config_restart_policies() {
        assert_eq!("no".parse::<RestartPolicy>().unwrap(), RestartPolicy::No);
        assert_eq!(
            "on-failure:3".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::OnFailure {
                max_retries: Some(3)
            }
        );
        assert!("sometimes".parse::<RestartPolicy>().is_err());
    }
}
