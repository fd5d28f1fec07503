//! A project known only by its name, rebuilt from what the state root holds of it, as docker
//! compose does from its labels: `tug -p NAME down -v` (and `ps`, `logs`, `stop`, `start`,
//! `restart`, `kill`, `rm`, `exec`, `port`, `top`) work from any directory, without the
//! compose file and without the variables it needs.
//!
//! What the labels say is enough for those verbs: the services (`com.docker.compose.service`
//! of the containers, their image, `container_name` when the name is not the generated one,
//! `depends_on` from `com.docker.compose.depends_on` — so stops keep the dependency order —
//! and whether a healthcheck exists, from the container's record), the project's networks
//! and volumes (`com.docker.compose.network` / `.volume` of the engine objects, by their
//! keys). What only the file has (hooks, build settings, replicas not running) is not there;
//! the verbs that would need it (`up`, `create`, `run`) still load the file.

use std::path::Path;

use indexmap::IndexMap;

use super::{Result, labels};
use crate::engine::container::ContainerStore;
use crate::engine::network::Networks;
use crate::engine::volume::Volumes;
use crate::project::model::{Dependency, Healthcheck, Network, Project, Service, Volume};

/// The project `name` as the state root at `root` knows it; `None` when nothing of it is
/// there (no container, network or volume with its label).
///
/// # Errors
/// A store cannot be read.
pub fn project_from_state(root: &Path, name: &str) -> Result<Option<Project>> {
    let store = ContainerStore::open(root)?;
    let mut services: IndexMap<String, Service> = IndexMap::new();
    let mut working_dir = None;
    let mut files = None;
    for c in store.list(true)? {
        if c.labels.get(labels::PROJECT).map(String::as_str) != Some(name) {
            continue;
        }
        let Some(service) = c.labels.get(labels::SERVICE) else {
            continue;
        };
        let oneoff = c.labels.get(labels::ONEOFF).map(String::as_str) == Some("True");
        let s = services.entry(service.clone()).or_insert_with(|| Service {
            name: service.clone(),
            ..Service::default()
        });
        if s.image.is_none() || !oneoff {
            s.image = Some(c.image.clone()).filter(|i| !i.is_empty());
        }
        if oneoff {
            continue;
        }
        working_dir = working_dir.or_else(|| c.labels.get(labels::WORKING_DIR).cloned());
        files = files.or_else(|| c.labels.get(labels::CONFIG_FILES).cloned());
        if let Some(deps) = c.labels.get(labels::DEPENDS_ON) {
            s.depends_on = parse_depends_on(deps);
        }
        let number = c.labels.get(labels::NUMBER).map_or("1", String::as_str);
        if c.name != format!("{name}-{service}-{number}") {
            s.container_name = Some(c.name.clone());
        }
        let check = store
            .record(&c.id)
            .ok()
            .and_then(|r| r.config.healthcheck)
            .filter(|h| h.test.first().is_some_and(|t| t != "NONE"));
        if let Some(h) = check {
            s.healthcheck = Some(Healthcheck {
                test: Some(h.test),
                ..Healthcheck::default()
            });
        }
    }
    let mut networks: IndexMap<String, Network> = IndexMap::new();
    for n in Networks::open(root)?.list()? {
        if n.labels.get(labels::PROJECT).map(String::as_str) != Some(name) {
            continue;
        }
        if let Some(key) = n.labels.get(labels::NETWORK) {
            networks.insert(
                key.clone(),
                Network {
                    name: Some(n.name.clone()),
                    internal: n.internal,
                    ..Network::default()
                },
            );
        }
    }
    let mut volumes: IndexMap<String, Volume> = IndexMap::new();
    for v in Volumes::open(root)?.list()? {
        let anonymous = v.labels.get("tug.anonymous").map(String::as_str) == Some("true");
        if anonymous || v.labels.get(labels::PROJECT).map(String::as_str) != Some(name) {
            continue;
        }
        if let Some(key) = v.labels.get(labels::VOLUME) {
            volumes.insert(
                key.clone(),
                Volume {
                    name: Some(v.name.clone()),
                    ..Volume::default()
                },
            );
        }
    }
    if services.is_empty() && networks.is_empty() && volumes.is_empty() {
        return Ok(None);
    }
    Ok(Some(Project {
        name: name.to_string(),
        working_dir: working_dir.map(Into::into).unwrap_or_default(),
        compose_files: files
            .map(|f| {
                f.split(',')
                    .filter(|s| !s.is_empty())
                    .map(Into::into)
                    .collect()
            })
            .unwrap_or_default(),
        services,
        networks,
        volumes,
        ..Project::default()
    }))
}

/// Parses `com.docker.compose.depends_on`: `service:condition:restart`, comma-separated.
fn parse_depends_on(label: &str) -> IndexMap<String, Dependency> {
    label
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(':');
            let service = parts.next().filter(|s| !s.is_empty())?;
            // A condition this tug does not know waits for the start, as before.
            let condition = parts
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or_default();
            let restart = parts.next() == Some("true");
            Some((
                service.to_string(),
                Dependency {
                    condition,
                    restart,
                    ..Dependency::default()
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::model::Condition;

    #[test]
    fn depends_on_label_round_trips() {
        let deps = parse_depends_on(
            "db:service_healthy:true,migrate:service_completed_successfully:false",
        );
        assert_eq!(deps.len(), 2);
        assert_eq!(deps["db"].condition, Condition::ServiceHealthy);
        assert!(deps["db"].restart);
        assert_eq!(
            deps["migrate"].condition,
            Condition::ServiceCompletedSuccessfully
        );
        assert!(!deps["migrate"].restart);
        assert!(deps["db"].required);
        assert!(parse_depends_on("").is_empty());
    }
}
