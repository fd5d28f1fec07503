//! From a compose service to a container's configuration: the labels compose tools read, the
//! process, security and resource options. Mounts and the network namespace need the engine
//! and are added by the backend. No I/O here.

use std::collections::BTreeMap;

use crate::engine::container::{ContainerConfig, Healthcheck, Resources, RestartPolicy, Ulimit};
use crate::project::model::{Project, Restart, Service};

use super::{Error, Result};

/// Label names docker compose puts on containers, networks and volumes.
pub mod labels {
    /// Project name.
    pub const PROJECT: &str = "com.docker.compose.project";
    /// Service name.
    pub const SERVICE: &str = "com.docker.compose.service";
    /// Replica number.
    pub const NUMBER: &str = "com.docker.compose.container-number";
    /// `True` for `run` containers.
    pub const ONEOFF: &str = "com.docker.compose.oneoff";
    /// Config hash of the service.
    pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
    /// `service:condition:restart,...`.
    pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
    /// Image id.
    pub const IMAGE: &str = "com.docker.compose.image";
    /// Version of the tool that made it.
    pub const VERSION: &str = "com.docker.compose.version";
    /// Project directory.
    pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
    /// Compose files, comma separated.
    pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
    /// Network key in the project.
    pub const NETWORK: &str = "com.docker.compose.network";
    /// Volume key in the project.
    pub const VOLUME: &str = "com.docker.compose.volume";
}

/// The compose version tug reports in labels (the docker compose release whose behaviour
/// tug follows).
pub const COMPOSE_VERSION: &str = "2.40.3";

/// Keys tug does not carry out yet: a service that sets one is refused with this message
/// rather than started without it.
fn unsupported(s: &Service) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |set: bool, key: &'static str| {
        if set {
            v.push(key);
        }
    };
    check(!s.devices.is_empty(), "devices");
    check(!s.device_cgroup_rules.is_empty(), "device_cgroup_rules");
    check(!s.gpus.is_empty(), "gpus");
    check(
        s.ipc
            .as_deref()
            .is_some_and(|i| i != "private" && i != "shareable"),
        "ipc",
    );
    check(s.pid.is_some(), "pid");
    check(s.userns_mode.is_some(), "userns_mode");
    check(s.uts.is_some(), "uts");
    check(s.cgroup_parent.is_some(), "cgroup_parent");
    check(
        s.cgroup.as_deref().is_some_and(|c| c != "private"),
        "cgroup",
    );
    check(!s.storage_opt.is_empty(), "storage_opt");
    check(
        s.isolation.as_deref().is_some_and(|i| i != "default"),
        "isolation",
    );
    check(s.blkio_config.is_some(), "blkio_config");
    check(s.credential_spec.is_some(), "credential_spec");
    check(!s.external_links.is_empty(), "external_links");
    check(s.use_api_socket, "use_api_socket");
    check(s.provider.is_some(), "provider");
    check(!s.models.is_empty(), "models");
    check(
        s.cpu_rt_runtime != 0 || s.cpu_rt_period != 0,
        "cpu_rt_runtime/cpu_rt_period",
    );
    check(
        s.cpu_count != 0 || s.cpu_percent != 0.0,
        "cpu_count/cpu_percent",
    );
    check(s.oom_kill_disable, "oom_kill_disable");
    check(s.mem_reservation.0 != 0, "mem_reservation");
    check(s.mem_swappiness.0 != 0, "mem_swappiness");
    check(
        s.logging
            .as_ref()
            .and_then(|l| l.driver.as_deref())
            .is_some_and(|d| d != "json-file" && d != "local")
            || s.log_driver
                .as_deref()
                .is_some_and(|d| d != "json-file" && d != "local"),
        "logging.driver (only json-file/local)",
    );
    v
}

/// Refuses a service that uses something tug cannot do yet.
///
/// # Errors
/// The keys that are not supported.
pub fn check_supported(s: &Service) -> Result<()> {
    let keys = unsupported(s);
    if keys.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "service {}: {} not supported by tug yet",
            s.name,
            keys.join(", ")
        )))
    }
}

/// The `com.docker.compose.depends_on` label value.
#[must_use]
pub fn depends_on_label(s: &Service) -> String {
    s.depends_on
        .iter()
        .map(|(name, d)| format!("{name}:{}:{}", d.condition, d.restart))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels of container `number` of a service.
#[must_use]
pub fn container_labels(
    project: &Project,
    s: &Service,
    number: u32,
    oneoff: bool,
    hash: &str,
    image_id: &str,
) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = s.labels.clone();
    if let Some(d) = &s.deploy {
        for (k, v) in &d.labels {
            l.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    l.insert(labels::PROJECT.into(), project.name.clone());
    l.insert(labels::SERVICE.into(), s.name.clone());
    l.insert(labels::NUMBER.into(), number.to_string());
    l.insert(
        labels::ONEOFF.into(),
        if oneoff { "True" } else { "False" }.into(),
    );
    l.insert(labels::CONFIG_HASH.into(), hash.to_string());
    l.insert(labels::DEPENDS_ON.into(), depends_on_label(s));
    l.insert(labels::IMAGE.into(), image_id.to_string());
    l.insert(labels::VERSION.into(), COMPOSE_VERSION.into());
    l.insert(
        labels::WORKING_DIR.into(),
        project.working_dir.display().to_string(),
    );
    l.insert(
        labels::CONFIG_FILES.into(),
        project
            .compose_files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    l
}

fn restart_policy(s: &Service) -> Result<RestartPolicy> {
    if let Some(r) = s.restart {
        return Ok(match r {
            Restart::No => RestartPolicy::No,
            Restart::Always => RestartPolicy::Always,
            Restart::UnlessStopped => RestartPolicy::UnlessStopped,
            Restart::OnFailure(max_retries) => RestartPolicy::OnFailure { max_retries },
        });
    }
    if let Some(p) = s.deploy.as_ref().and_then(|d| d.restart_policy.as_ref()) {
        return Ok(match p.condition.as_deref() {
            Some("none") => RestartPolicy::No,
            Some("on-failure") => RestartPolicy::OnFailure {
                max_retries: p.max_attempts.and_then(|n| u32::try_from(n).ok()),
            },
            _ => RestartPolicy::Always,
        });
    }
    Ok(RestartPolicy::No)
}

fn healthcheck(s: &Service) -> Option<Healthcheck> {
    let h = s.healthcheck.as_ref()?;
    if h.disable {
        return Some(Healthcheck {
            test: vec!["NONE".into()],
            ..Healthcheck::default()
        });
    }
    // No test: the image's (Docker merges the service's fields over the image's healthcheck).
    let test = h.test.clone().unwrap_or_default();
    Some(Healthcheck {
        test,
        interval: h.interval.map(crate::project::model::Duration::to_std),
        timeout: h.timeout.map(crate::project::model::Duration::to_std),
        retries: h.retries.and_then(|r| u32::try_from(r).ok()),
        start_period: h.start_period.map(crate::project::model::Duration::to_std),
        start_interval: h
            .start_interval
            .map(crate::project::model::Duration::to_std),
    })
}

fn resources(s: &Service) -> Resources {
    let limits = s.deploy.as_ref().and_then(|d| d.resources.limits.as_ref());
    let memory = if s.mem_limit.0 > 0 {
        Some(s.mem_limit.0)
    } else {
        limits.map(|l| l.memory.0).filter(|&m| m > 0)
    };
    let cpus = if s.cpus > 0.0 {
        Some(s.cpus)
    } else {
        limits.map(|l| l.cpus).filter(|&c| c > 0.0)
    };
    let pids = if s.pids_limit != 0 {
        Some(s.pids_limit)
    } else {
        limits.map(|l| l.pids).filter(|&p| p != 0)
    };
    Resources {
        memory,
        memswap: (s.memswap_limit.0 != 0).then_some(s.memswap_limit.0),
        cpus,
        cpu_shares: u64::try_from(s.cpu_shares).ok().filter(|&c| c > 0),
        cpuset: s.cpuset.clone(),
        pids_limit: pids,
        shm_size: u64::try_from(s.shm_size.0).ok().filter(|&b| b > 0),
    }
}

/// The container configuration of one replica, without mounts and network (the backend adds
/// those). `name` is the container name, `image_id` the resolved image.
///
/// # Errors
/// Unsupported keys, or values the engine cannot take (a bad restart policy, a negative
/// ulimit).
pub fn container_config(
    project: &Project,
    s: &Service,
    name: &str,
    number: u32,
    hash: &str,
    image: &str,
    image_id: &str,
) -> Result<ContainerConfig> {
    check_supported(s)?;
    let env: Vec<String> = s
        .environment
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    let mut ulimits = BTreeMap::new();
    for (k, u) in &s.ulimits {
        let (soft, hard) = u.soft_hard();
        let conv = |v: i64| {
            if v < 0 {
                Ok(u64::MAX)
            } else {
                u64::try_from(v).map_err(|_| {
                    Error::Invalid(format!("service {}: ulimit {k} out of range", s.name))
                })
            }
        };
        ulimits.insert(
            k.clone(),
            Ulimit {
                soft: conv(soft)?,
                hard: conv(hard)?,
            },
        );
    }
    let mut security_opt = s.security_opt.clone();
    if s.privileged {
        security_opt.retain(|o| !o.starts_with("seccomp"));
    }
    Ok(ContainerConfig {
        name: name.to_string(),
        image: image.to_string(),
        image_id: image_id.to_string(),
        labels: container_labels(project, s, number, false, hash, image_id),
        entrypoint: s.entrypoint.clone(),
        command: s.command.clone(),
        env,
        working_dir: s.working_dir.clone(),
        user: s.user.clone(),
        group_add: s.group_add.clone(),
        hostname: s.hostname.clone(),
        domainname: s.domainname.clone(),
        tty: s.tty,
        stdin_open: s.stdin_open,
        init: s.init.unwrap_or(false),
        read_only: s.read_only,
        privileged: s.privileged,
        cap_add: s.cap_add.clone(),
        cap_drop: s.cap_drop.clone(),
        security_opt,
        sysctls: s.sysctls.clone(),
        ulimits,
        resources: resources(s),
        restart: restart_policy(s)?,
        stop_signal: s.stop_signal.clone(),
        stop_grace_period: s
            .stop_grace_period
            .map(crate::project::model::Duration::to_std),
        healthcheck: healthcheck(s),
        runtime: s.runtime.clone().filter(|r| r != "tug"),
        ..ContainerConfig::default()
    })
}
