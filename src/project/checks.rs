//! Phase 9: semantic checks that the schema cannot express.
//!
//! - every service named by `depends_on`, `links`, `network_mode: service:` and
//!   `volumes_from` exists and is enabled;
//! - every named volume, network, secret and config a service uses is declared at the top
//!   level;
//! - the dependencies have no cycle (the error prints it: `a -> b -> a`);
//! - `container_name` is only set on a service with one replica;
//! - no two containers of the project publish the same host port (same protocol, same or
//!   wildcard host address).
//!
//! All problems are reported together, each with its file position and key path.

use std::collections::HashMap;

use super::canonical::locate;
use super::error::{ProjectError, Result};
use super::graph::Graph;
use super::model::Project;
use super::profiles::suggest;
use super::yaml::Spans;

/// Runs every check.
///
/// # Errors
/// All the problems found ([`ProjectError::Many`] when several).
// Long: one pass over the services checking each kind of reference (dependencies, networks,
// volumes, secrets, configs, namespaces, scale) against the declarations; the closures that
// place and name an error are shared by all of them.
pub fn check(project: &Project, spans: &Spans) -> Result<()> {
    let mut errors = Vec::new();
    let mut err = |path: String, msg: String| {
        errors.push(ProjectError::invalid(locate(spans, &path), path, msg));
    };
    let names = || project.services.keys();
    let service_ref = |name: &str,
                       what: &str,
                       target: &str,
                       path: String,
                       err: &mut dyn FnMut(String, String)| {
        if project.services.contains_key(target) {
            return;
        }
        if project.disabled_services.contains_key(target) {
            err(
                path,
                format!("service `{name}` {what} `{target}`, which is disabled by its profiles"),
            );
        } else {
            err(
                path,
                format!(
                    "service `{name}` {what} undefined service `{target}`{}",
                    suggest(target, names())
                ),
            );
        }
    };
    for (name, s) in &project.services {
        let base = format!("services.{name}");
        for (dep, d) in &s.depends_on {
            if !d.required && project.disabled_services.contains_key(dep) {
                continue;
            }
            service_ref(
                name,
                "depends on",
                dep,
                format!("{base}.depends_on.{dep}"),
                &mut err,
            );
        }
        for (i, l) in s.links.iter().enumerate() {
            let target = l.split(':').next().unwrap_or(l);
            service_ref(
                name,
                "links to",
                target,
                format!("{base}.links[{i}]"),
                &mut err,
            );
        }
        if let Some(t) = s.network_mode_service() {
            service_ref(
                name,
                "uses the network of",
                t,
                format!("{base}.network_mode"),
                &mut err,
            );
        }
        for (i, vf) in s.volumes_from.iter().enumerate() {
            if vf.starts_with("container:") {
                continue;
            }
            let target = vf.strip_prefix("service:").unwrap_or(vf);
            let target = target.split(':').next().unwrap_or(target);
            service_ref(
                name,
                "takes volumes from",
                target,
                format!("{base}.volumes_from[{i}]"),
                &mut err,
            );
        }
        for (i, v) in s.volumes.iter().enumerate() {
            if v.kind == super::model::VolumeType::Volume
                && let Some(src) = &v.source
                && !project.volumes.contains_key(src)
            {
                err(
                    format!("{base}.volumes[{i}]"),
                    format!(
                        "service `{name}` refers to undefined volume `{src}`: declare it under the top-level `volumes:`{}",
                        suggest(src, project.volumes.keys())
                    ),
                );
            }
        }
        for net in s.networks.keys() {
            if net != "default" && !project.networks.contains_key(net) {
                err(
                    format!("{base}.networks.{net}"),
                    format!(
                        "service `{name}` refers to undefined network `{net}`: declare it under the top-level `networks:`{}",
                        suggest(net, project.networks.keys())
                    ),
                );
            }
        }
        for (kind, refs, decl) in [
            ("secret", &s.secrets, &project.secrets),
            ("config", &s.configs, &project.configs),
        ] {
            for (i, r) in refs.iter().enumerate() {
                if !decl.contains_key(&r.source) {
                    err(
                        format!("{base}.{kind}s[{i}]"),
                        format!(
                            "service `{name}` refers to undefined {kind} `{}`: declare it under the top-level `{kind}s:`{}",
                            r.source,
                            suggest(&r.source, decl.keys())
                        ),
                    );
                }
            }
        }
        if s.image.is_none() && s.build.is_none() && s.provider.is_none() {
            err(
                base.clone(),
                format!(
                    "service `{name}` has neither an image nor a build context specified: set `image` or `build`"
                ),
            );
        }
        consistency(name, s, project, &mut err);
        if s.container_name.is_some() && s.replicas() > 1 {
            err(
                format!("{base}.container_name"),
                format!(
                    "service `{name}` sets container_name `{}` but runs {} replicas: a container name must be unique",
                    s.container_name.as_deref().unwrap_or_default(),
                    s.replicas()
                ),
            );
        }
    }
    port_conflicts(project, &mut err);
    if errors.is_empty() {
        // Cycles and undefined dependencies, with the cycle path.
        Graph::new(project)?;
        Ok(())
    } else {
        Err(ProjectError::from_many(errors))
    }
}

/// Host ports published twice on overlapping addresses, by one service or two.
fn port_conflicts(project: &Project, err: &mut dyn FnMut(String, String)) {
    // Port conflicts: (protocol, port) → users with their host address.
    // (service, host ip, key path) of each publisher.
    type Publishers = Vec<(String, String, String)>;
    let mut published: HashMap<(String, u16), Publishers> = HashMap::new();
    for (name, s) in &project.services {
        for (i, p) in s.ports.iter().enumerate() {
            let Some((a, b)) = p.published_range() else {
                continue;
            };
            // A range published by a single container port is a pool, not a fixed port.
            if a != b && s.ports.iter().filter(|q| q.target == p.target).count() == 1 {
                continue;
            }
            let ip = p.host_ip.clone().unwrap_or_default();
            for port in a..=b {
                let users = published
                    .entry((p.protocol().to_owned(), port))
                    .or_default();
                for (other, other_ip, other_path) in users.iter() {
                    let wildcard = |x: &str| x.is_empty() || x == "0.0.0.0" || x == "::";
                    if wildcard(&ip) || wildcard(other_ip) || *other_ip == ip {
                        let path = format!("services.{name}.ports[{i}]");
                        let msg = if other == name {
                            format!(
                                "service `{name}` publishes host port {port}/{} twice",
                                p.protocol()
                            )
                        } else {
                            format!(
                                "port conflict: services `{other}` ({other_path}) and `{name}` both publish host port {port}/{}",
                                p.protocol()
                            )
                        };
                        err(path, msg);
                    }
                }
                users.push((
                    name.clone(),
                    ip.clone(),
                    format!("services.{name}.ports[{i}]"),
                ));
            }
        }
    }
}

/// compose's consistency rules for one service, in its words where it has them: settings
/// that exclude each other, values that must agree, mount targets used twice.
// Long: compose's rules for one service, one after another and independent of each other,
// kept as one list to read side by side with compose's.
fn consistency(
    name: &str,
    s: &super::model::Service,
    project: &Project,
    err: &mut dyn FnMut(String, String),
) {
    let base = format!("services.{name}");
    if let Some(b) = &s.build {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|x| !x.is_empty());
        if set(&b.dockerfile) && set(&b.dockerfile_inline) {
            err(
                format!("{base}.build"),
                format!(
                    "service `{name}` declares both `dockerfile` and `dockerfile_inline`, which exclude each other"
                ),
            );
        }
        for (ctx, v) in &b.additional_contexts {
            if let Some(target) = v.strip_prefix("service:") {
                let path = format!("{base}.build.additional_contexts.{ctx}");
                match project.services.get(target) {
                    None => err(
                        path,
                        format!(
                            "service `{name}` declares unknown service `{target}` as additional context `{ctx}`"
                        ),
                    ),
                    Some(t) if t.build.is_none() => err(
                        path,
                        format!(
                            "service `{name}` declares service `{target}`, which has no `build`, as additional context `{ctx}`"
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
        if let Some(p) = s.platform.as_deref().filter(|p| !p.is_empty())
            && !b.platforms.is_empty()
            && !b.platforms.iter().any(|x| x == p)
        {
            err(
                format!("{base}.platform"),
                format!(
                    "service `{name}`: build.platforms ({}) must include the service's platform `{p}`",
                    b.platforms.join(", ")
                ),
            );
        }
    }
    if s.network_mode.is_some() && !s.networks.is_empty() {
        err(
            format!("{base}.network_mode"),
            format!(
                "service `{name}` declares `network_mode` and `networks`, which exclude each other"
            ),
        );
    }
    if let Some(first) = s
        .healthcheck
        .as_ref()
        .and_then(|h| h.test.as_ref())
        .and_then(|t| t.first())
        && !matches!(first.as_str(), "CMD" | "CMD-SHELL" | "NONE")
    {
        err(
            format!("{base}.healthcheck.test"),
            format!(
                "healthcheck.test must start with \"CMD\", \"CMD-SHELL\" or \"NONE\", found `{first}`"
            ),
        );
    }
    let deploy = s.deploy.as_ref();
    if let (Some(scale), Some(replicas)) = (s.scale, deploy.and_then(|d| d.replicas))
        && scale != replicas
    {
        err(
            format!("{base}.scale"),
            format!(
                "service `{name}` can't set distinct values on `scale` ({scale}) and `deploy.replicas` ({replicas})"
            ),
        );
    }
    let limits = deploy.and_then(|d| d.resources.limits.as_ref());
    let reservations = deploy.and_then(|d| d.resources.reservations.as_ref());
    // (key, set, deploy key, same value)
    let pairs = [
        (
            "cpus",
            s.cpus != 0.0,
            "deploy.resources.limits.cpus",
            #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
            limits.map(|l| l.cpus as f32 == s.cpus as f32),
        ),
        (
            "mem_limit",
            s.mem_limit.0 != 0,
            "deploy.resources.limits.memory",
            limits.map(|l| l.memory == s.mem_limit),
        ),
        (
            "mem_reservation",
            s.mem_reservation.0 != 0,
            "deploy.resources.reservations.memory",
            reservations.map(|r| r.memory == s.mem_reservation),
        ),
        (
            "pids_limit",
            s.pids_limit != 0,
            "deploy.resources.limits.pids",
            limits.map(|l| l.pids == s.pids_limit),
        ),
    ];
    for (key, set, other, same) in pairs {
        if set && same == Some(false) {
            err(
                format!("{base}.{key}"),
                format!("service `{name}` can't set distinct values on `{key}` and `{other}`"),
            );
        }
    }
    if let Some(d) = &s.develop {
        for (i, w) in d.watch.iter().enumerate() {
            if w.target.as_deref().is_none_or(str::is_empty)
                && w.action != "rebuild"
                && w.action != "restart"
            {
                err(
                    format!("{base}.develop.watch[{i}]"),
                    format!(
                        "service `{name}`: a watch rule with action `{}` needs a `target`",
                        w.action
                    ),
                );
            }
        }
    }
    // Mount targets: each at most once among tmpfs and volumes.
    let mut mounts: HashMap<String, String> = HashMap::new();
    let tmpfs = s.tmpfs.iter().enumerate().map(|(i, t)| {
        (
            t.split(':').next().unwrap_or(t).to_owned(),
            format!("{base}.tmpfs[{i}]"),
        )
    });
    let volumes = s
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| (v.target.clone(), format!("{base}.volumes[{i}]")));
    for (target, at) in tmpfs.chain(volumes) {
        if let Some(first) = mounts.get(&target) {
            err(
                at.clone(),
                format!("target {target} is already mounted as {first}"),
            );
        } else {
            mounts.insert(target, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::model::{Dependency, Port, Service};

    fn svc(name: &str) -> Service {
        Service {
            name: name.to_owned(),
            image: Some("busybox".to_owned()),
            ..Service::default()
        }
    }

    #[test]
    fn checks_undefined_references() {
        let mut p = Project::default();
        let mut web = svc("web");
        web.depends_on.insert("dbb".into(), Dependency::default());
        web.networks.insert("front".into(), None);
        p.services.insert("web".into(), web);
        p.services.insert("db".into(), svc("db"));
        let e = check(&p, &Spans::new()).unwrap_err().to_string();
        assert!(
            e.contains("undefined service `dbb`, did you mean `db`?"),
            "{e}"
        );
        assert!(e.contains("undefined network `front`"), "{e}");
    }

    #[test]
    fn checks_ports_and_container_names() {
        let mut p = Project::default();
        let port = |published: &str| Port {
            target: 80,
            published: Some(published.into()),
            ..Port::default()
        };
        let mut a = svc("a");
        a.ports.push(port("8080"));
        let mut b = svc("b");
        b.ports.push(port("8080"));
        b.container_name = Some("x".into());
        b.scale = Some(2);
        p.services.insert("a".into(), a);
        p.services.insert("b".into(), b);
        let e = check(&p, &Spans::new()).unwrap_err().to_string();
        assert!(e.contains("port conflict"), "{e}");
        assert!(e.contains("container_name"), "{e}");
    }

    #[test]
    fn checks_cycles() {
        let mut p = Project::default();
        let mut a = svc("a");
        a.depends_on.insert("b".into(), Dependency::default());
        let mut b = svc("b");
        b.depends_on.insert("a".into(), Dependency::default());
        p.services.insert("a".into(), a);
        p.services.insert("b".into(), b);
        let e = check(&p, &Spans::new()).unwrap_err().to_string();
        assert!(e.contains("a -> b -> a"), "{e}");
    }
}
