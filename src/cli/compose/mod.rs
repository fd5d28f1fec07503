//! The compose verbs: `up`, `down`, `ps`, `logs`, `exec`, `run`, … Each turns its flags into
//! the options of one method of the compose service ([`crate::compose::Stack`]), calls it
//! and prints what it returns and reports (docker compose's `cmd/compose/<verb>.go`).

pub mod args;
mod lifecycle;
mod output;
mod printer;
mod query;
pub mod stats;
pub mod verbs;

use std::path::PathBuf;

use anyhow::Context as _;

use super::GlobalArgs;
use crate::compose::{ProjectLock, Stack, StackOptions};

pub(crate) use lifecycle::{install_interrupt_handler, interrupted};
pub use lifecycle::{run_create, run_down, run_up};
pub(crate) use output::{Mode, Progress};
pub use query::{run_ls, run_ps};

/// Prints what the project asks for that tug accepts and does not carry out: the keys
/// `ignored_keys` names (one line each), and SELinux relabelling (`:z`, `:Z`,
/// `bind.selinux`) when SELinux is enabled (without it, docker does nothing for them either).
/// Keys tug cannot carry out and that change what a service is (`devices`, `pid`, …) are
/// refused instead, when the container is created.
pub(crate) fn warn_unhonoured(project: &crate::project::Project) {
    for key in ignored_keys(project) {
        eprintln!(
            "warning: {key}: not carried out by tug, ignored (see docs/compose-compatibility.md)"
        );
    }
    if !std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        return;
    }
    let mut seen = Vec::new();
    for (name, s) in &project.services {
        for (i, v) in s.volumes.iter().enumerate() {
            if let Some(label) = v.bind.as_ref().and_then(|b| b.selinux.as_deref())
                && !seen.contains(&label)
            {
                seen.push(label);
                eprintln!(
                    "warning: services.{name}.volumes[{i}]: volume option `{label}` is not applied: \
                     tug does not relabel files for SELinux"
                );
            }
        }
    }
}

/// The key paths of the project that tug accepts and ignores (docs/compose-compatibility.md
/// lists them as "no, ignored"); swarm-only keys that docker compose ignores too are not
/// named.
fn ignored_keys(project: &crate::project::Project) -> Vec<String> {
    let mut out = Vec::new();
    let host_platform = format!("linux/{}", crate::engine::image::host_arch());
    for (name, s) in &project.services {
        let mut key = |set: bool, k: &str| {
            if set {
                out.push(format!("services.{name}.{k}"));
            }
        };
        key(!s.annotations.is_empty(), "annotations");
        key(s.cpu_period != 0, "cpu_period");
        key(s.cpu_quota != 0, "cpu_quota");
        key(s.oom_score_adj != 0, "oom_score_adj");
        // Kept among the extensions by the model (no field of its own).
        key(
            s.extensions.contains_key("pull_refresh_after"),
            "pull_refresh_after",
        );
        key(
            s.platform.as_deref().is_some_and(|p| {
                p != host_platform && !p.starts_with(&format!("{host_platform}/"))
            }),
            "platform",
        );
        key(
            !s.log_opt.is_empty() || s.logging.as_ref().is_some_and(|l| !l.options.is_empty()),
            "logging.options",
        );
        if let Some(d) = &s.deploy {
            key(
                d.resources
                    .reservations
                    .as_ref()
                    .is_some_and(|r| r.cpus != 0.0 || r.memory.0 != 0),
                "deploy.resources.reservations",
            );
        }
        for (net, opts) in &s.networks {
            let Some(o) = opts else { continue };
            key(
                !o.driver_opts.is_empty(),
                &format!("networks.{net}.driver_opts"),
            );
            key(o.gw_priority != 0, &format!("networks.{net}.gw_priority"));
            key(
                o.interface_name.is_some(),
                &format!("networks.{net}.interface_name"),
            );
            key(
                !o.link_local_ips.is_empty(),
                &format!("networks.{net}.link_local_ips"),
            );
        }
        for (i, v) in s.volumes.iter().enumerate() {
            key(
                v.volume.as_ref().is_some_and(|o| o.subpath.is_some()),
                &format!("volumes[{i}].volume.subpath"),
            );
            key(
                v.bind
                    .as_ref()
                    .and_then(|b| b.recursive.as_deref())
                    .is_some_and(|r| r != "enabled"),
                &format!("volumes[{i}].bind.recursive"),
            );
        }
        if let Some(b) = &s.build {
            for (i, r) in b.secrets.iter().enumerate() {
                key(
                    r.uid.is_some() || r.gid.is_some() || r.mode.is_some(),
                    &format!("build.secrets[{i}] (uid, gid, mode)"),
                );
            }
        }
    }
    for (name, n) in &project.networks {
        let mut key = |set: bool, k: &str| {
            if set {
                out.push(format!("networks.{name}.{k}"));
            }
        };
        key(n.enable_ipv4 == Some(false), "enable_ipv4");
        key(
            n.ipam.driver.as_deref().is_some_and(|d| d != "default"),
            "ipam.driver",
        );
        key(!n.ipam.options.is_empty(), "ipam.options");
        key(
            n.ipam.config.iter().any(|c| !c.aux_addresses.is_empty()),
            "ipam.config.aux_addresses",
        );
    }
    out
}

/// Loads the project named by the global flags and opens the engine for it. For a verb that
/// acts on what exists (`GlobalArgs::by_name`), a compose file that is missing or cannot be
/// loaded (a required variable unset) is not needed when the project is named (`-p`,
/// `COMPOSE_PROJECT_NAME`): the project is rebuilt from its labels in the state root.
pub(crate) fn open_stack(
    global: &GlobalArgs,
    services: &[String],
    options: StackOptions,
) -> anyhow::Result<Stack> {
    let root = state_root(global)?;
    let project = match super::config::load_project(global, services) {
        Ok(p) => p,
        Err(e) if global.by_name => {
            let name = global
                .project_name
                .clone()
                .or_else(|| std::env::var("COMPOSE_PROJECT_NAME").ok())
                .filter(|n| !n.is_empty());
            let Some(name) = name else {
                return Err(e);
            };
            let known = crate::compose::project_from_state(&root, &name)
                .context("cannot read the engine's state root")?;
            let no_file = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<crate::project::ProjectError>(),
                    Some(crate::project::ProjectError::NotFound { .. })
                )
            });
            if !no_file {
                eprintln!(
                    "warning: the compose file cannot be loaded ({}); acting on project \
                     {name} as the state root knows it",
                    super::render_error(&e),
                );
            }
            // A project the state root has nothing of is an empty one (`ps` lists nothing,
            // `down` removes nothing), as docker compose has it.
            known.unwrap_or_else(|| {
                eprintln!("warning: no resource of project {name} in the state root");
                crate::project::model::Project {
                    name,
                    ..crate::project::model::Project::default()
                }
            })
        }
        Err(e) => return Err(e),
    };
    let stack =
        Stack::open(&root, project, options).context("cannot open the engine's state root")?;
    if let Some(r) = stack.image_repair() {
        super::warn_index_repaired(r);
    }
    Ok(stack)
}

/// The state root, created if missing.
pub(crate) fn state_root(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    let root = global.state_root();
    crate::engine::private::ensure_root(&root)
        .with_context(|| format!("cannot create state root {}", root.display()))?;
    Ok(root)
}

/// Takes the project lock of a stack.
pub(crate) fn lock(stack: &Stack) -> anyhow::Result<ProjectLock> {
    Ok(stack.lock()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_tug_ignores_are_named_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  a:\n    image: x\n    oom_score_adj: 5\n    cpu_quota: 1000\n    \
             pull_refresh_after: 1h\n    platform: linux/s390x-nope\n    annotations: {k: v}\n    \
             logging: {options: {max-size: 1m}}\n    networks: {n: {interface_name: e9, gw_priority: 1}}\n    \
             volumes: [{type: volume, source: v, target: /v, volume: {subpath: s}}]\n    \
             deploy: {resources: {reservations: {memory: 1g}}, restart_policy: {delay: 1s}}\n  \
             b:\n    image: x\n    cpus: 1\n    restart: always\n    \
             deploy: {placement: {constraints: [x]}}\nnetworks:\n  n:\n    enable_ipv4: false\n    \
             ipam: {options: {o: x}}\nvolumes:\n  v:\n",
        )
        .unwrap();
        let opts = crate::project::LoadOptions {
            files: vec![dir.path().join("compose.yaml")],
            ..Default::default()
        };
        let project = crate::project::load(&opts).unwrap();
        let keys = super::ignored_keys(&project);
        assert_eq!(
            keys,
            [
                "services.a.annotations",
                "services.a.cpu_quota",
                "services.a.oom_score_adj",
                "services.a.pull_refresh_after",
                "services.a.platform",
                "services.a.logging.options",
                "services.a.deploy.resources.reservations",
                "services.a.networks.n.gw_priority",
                "services.a.networks.n.interface_name",
                "services.a.volumes[0].volume.subpath",
                "networks.n.enable_ipv4",
                "networks.n.ipam.options",
            ],
            "{keys:?}"
        );
    }
}
