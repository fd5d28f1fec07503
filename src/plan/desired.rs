//! From the loaded project to the desired state reconcile works on, and the config hash that
//! decides when a container must be recreated.

use super::state::{Condition, Dependency, Desired, DesiredResource, DesiredService, PullPolicy};
use crate::project::model::{self, Project, Service, VolumeType};

/// The image reference a service runs: `image:`, or `<project>-<service>` for a service that
/// only has `build:` (the name docker compose gives such images).
#[must_use]
pub fn service_image(project: &str, service: &Service) -> String {
    service
        .image
        .clone()
        .unwrap_or_else(|| format!("{project}-{}", service.name))
}

/// The config hash of a service: the one docker compose v2 writes in the
/// `com.docker.compose.config-hash` label (see [`Service::compose_hash`]), so a container
/// made by either tool is judged the same way.
#[must_use]
pub fn config_hash(service: &Service) -> String {
    service.compose_hash()
}

/// The project network keys a service is attached to (none under `network_mode`).
#[must_use]
pub fn service_networks(service: &Service) -> Vec<String> {
    if service.network_mode.is_some() {
        return Vec::new();
    }
    service.networks.keys().cloned().collect()
}

/// The project named-volume keys a service mounts.
#[must_use]
pub fn service_volumes(project: &Project, service: &Service) -> Vec<String> {
    service
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeType::Volume)
        .filter_map(|v| v.source.clone())
        .filter(|src| project.volumes.contains_key(src))
        .collect()
}

fn condition(c: model::Condition) -> Condition {
    match c {
        model::Condition::ServiceStarted => Condition::ServiceStarted,
        model::Condition::ServiceHealthy => Condition::ServiceHealthy,
        model::Condition::ServiceCompletedSuccessfully => Condition::ServiceCompletedSuccessfully,
    }
}

fn pull_policy(service: &Service) -> PullPolicy {
    match service.pull_policy {
        Some(model::PullPolicy::Always) => PullPolicy::Always,
        Some(model::PullPolicy::Never) => PullPolicy::Never,
        Some(model::PullPolicy::Build) => PullPolicy::Build,
        _ => PullPolicy::Missing,
    }
}

/// The services whose containers `service` takes something from at creation:
/// `volumes_from` services (`name`, `service:name`, with an optional mode), `volumes_from:
/// container:NAME` and `network_mode: container:NAME` when NAME is the first container of a
/// service of the project, and `network_mode: service:`.
fn created_after(project: &Project, service: &Service) -> Vec<String> {
    let owner = |container: &str| -> Option<&str> {
        project
            .services
            .values()
            .find(|o| o.name != service.name && o.container_name_for(&project.name, 1) == container)
            .map(|o| o.name.as_str())
    };
    let mut names: Vec<&str> = Vec::new();
    for v in &service.volumes_from {
        if let Some(c) = v.strip_prefix("container:") {
            names.extend(owner(c.split(':').next().unwrap_or(c)));
        } else {
            let v = v.strip_prefix("service:").unwrap_or(v);
            names.push(v.split(':').next().unwrap_or(v));
        }
    }
    names.extend(service.network_mode_service());
    if let Some(model::NetworkMode::Container(c)) = &service.network_mode {
        names.extend(owner(c));
    }
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if !name.is_empty() && !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// Builds the desired state. `image_id` looks an image reference up in the store.
pub fn desired_from_project(
    project: &Project,
    mut image_id: impl FnMut(&str) -> Option<String>,
) -> Desired {
    let services = project
        .services
        .values()
        .map(|s| {
            let image = service_image(&project.name, s);
            let mut depends_on: Vec<Dependency> = s
                .depends_on
                .iter()
                // An optional dependency on a service disabled by its profiles.
                .filter(|(name, _)| project.services.contains_key(*name))
                .map(|(name, d)| Dependency {
                    service: name.clone(),
                    condition: condition(d.condition),
                    required: d.required,
                    restart: d.restart,
                })
                .collect();
            // `network_mode: service:X` needs X's container running first.
            if let Some(x) = s.network_mode_service()
                && !depends_on.iter().any(|d| d.service == x)
            {
                depends_on.push(Dependency {
                    service: x.to_string(),
                    condition: Condition::ServiceStarted,
                    required: true,
                    restart: true,
                });
            }
            DesiredService {
                name: s.name.clone(),
                replicas: s.replicas(),
                hash: config_hash(s),
                image_id: image_id(&image),
                image,
                build: s.build.is_some(),
                pull_policy: pull_policy(s),
                depends_on,
                networks: service_networks(s),
                volumes: service_volumes(project, s),
                container_name: s.container_name.clone(),
                created_after: created_after(project, s),
            }
        })
        .collect();
    let networks = project
        .networks
        .iter()
        .map(|(k, n)| DesiredResource {
            key: k.clone(),
            name: n.actual_name(&project.name, k),
            external: n.external,
        })
        .collect();
    let volumes = project
        .volumes
        .iter()
        .map(|(k, v)| DesiredResource {
            key: k.clone(),
            name: v.actual_name(&project.name, k),
            external: v.external,
        })
        .collect();
    Desired {
        project: project.name.clone(),
        services,
        networks,
        volumes,
    }
}
