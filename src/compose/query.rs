//! What the read-only compose verbs (`top`, `port`, `images`, `volumes`, `stats`, `ps`) ask
//! of the engine about a project's containers. They return data; the CLI formats it.

use std::path::PathBuf;

use super::{Error, Result, Stack, labels};
use crate::engine::container::{Record, Status, Summary};
use crate::engine::image::Image;
use crate::engine::network::Published;
use crate::engine::runtime::cgroups::Usage;
use crate::engine::volume::VolumeInfo;

/// A container's processes: pid, uid and command line of each.
pub type Processes = Vec<(i32, u32, String)>;

/// A container and the image it was made from (if the store still has it).
#[derive(Debug)]
pub struct ContainerImage {
    /// The container.
    pub container: Summary,
    /// Its image.
    pub image: Option<Image>,
}

impl Stack {
    /// `top`: the processes (pid, uid, command) of each running container of the services.
    ///
    /// # Errors
    /// An unknown service, or processes that cannot be read.
    pub fn top(&self, services: &[String]) -> Result<Vec<(Summary, Processes)>> {
        let mut out = Vec::new();
        for c in self
            .service_containers(services)?
            .into_iter()
            .filter(|c| c.state == Status::Running)
        {
            let procs = self.containers.top(&c.id)?;
            out.push((c, procs));
        }
        Ok(out)
    }

    /// `port`: where a container port of a replica is published.
    ///
    /// # Errors
    /// No such replica, or the port is not published.
    pub fn port(
        &self,
        service: &str,
        index: u32,
        private_port: u16,
        protocol: &str,
    ) -> Result<Published> {
        let c = self.container_of(service, index)?;
        self.networks
            .published(&c.name)?
            .into_iter()
            .find(|p| p.container_port == private_port && p.protocol.to_string() == protocol)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no port {private_port}/{protocol} published for {service}"
                ))
            })
    }

    /// `images`: the services' containers with their images, by container name.
    ///
    /// # Errors
    /// An unknown service, or the store cannot be read.
    pub fn container_images(&self, services: &[String]) -> Result<Vec<ContainerImage>> {
        let mut cs = self.service_containers(services)?;
        cs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(cs
            .into_iter()
            .map(|c| {
                let image = self.images.resolve(&c.image_id).ok();
                ContainerImage {
                    container: c,
                    image,
                }
            })
            .collect())
    }

    /// `volumes`: the project's named volumes (with services named, those their containers
    /// mount), by name.
    ///
    /// # Errors
    /// An unknown service, or the stores cannot be read.
    pub fn project_volumes(&self, services: &[String]) -> Result<Vec<VolumeInfo>> {
        for s in services {
            if !self.project.services.contains_key(s) {
                return Err(Error::NotFound(format!("no such service: {s}")));
            }
        }
        // Volumes the named services' containers mount.
        let used: Option<Vec<PathBuf>> = if services.is_empty() {
            None
        } else {
            let mut v = Vec::new();
            for c in self.service_containers(services)? {
                if let Ok(i) = self.containers.inspect(&c.id) {
                    v.extend(i.record.config.mounts.into_iter().map(|m| m.source));
                }
            }
            Some(v)
        };
        let mut volumes: Vec<VolumeInfo> = self
            .volumes
            .list()?
            .into_iter()
            .filter(|v| {
                v.labels.get(labels::PROJECT) == Some(&self.project.name)
                    && v.labels.get("tug.anonymous").map(String::as_str) != Some("true")
                    && used.as_ref().is_none_or(|u| {
                        u.iter()
                            .any(|m| m.starts_with(self.volumes.mountpoint(&v.name)))
                    })
            })
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// A container's resource usage now (zeros when its cgroup cannot be read).
    #[must_use]
    pub fn usage(&self, id: &str) -> Usage {
        self.containers
            .cgroup(id)
            .map(|cg| cg.usage())
            .unwrap_or_default()
    }

    /// A container's record, if it can be read (for listings).
    #[must_use]
    pub fn record(&self, id: &str) -> Option<Record> {
        self.containers.inspect(id).ok().map(|i| i.record)
    }

    /// The ports a container publishes (none when its records cannot be read).
    #[must_use]
    pub fn published(&self, name: &str) -> Vec<Published> {
        self.networks.published(name).unwrap_or_default()
    }

    /// The networks a container is attached to (none when its records cannot be read).
    #[must_use]
    pub fn networks_of(&self, name: &str) -> Vec<String> {
        self.networks
            .endpoints_of_container(name)
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.network)
            .collect()
    }

    /// Whether the image store has `reference`.
    #[must_use]
    pub fn has_image(&self, reference: &str) -> bool {
        self.images.resolve(reference).is_ok()
    }

    /// The id of the image `reference` names in the store, if it has it.
    #[must_use]
    pub fn image_id(&self, reference: &str) -> Option<String> {
        self.images.resolve(reference).ok().map(|i| i.id)
    }

    /// After a rebuild of `reference`: removes the image it named before (`old`, an id) if
    /// it is dangling now (no name left) and no container uses it. Best effort.
    pub fn remove_replaced_image(&self, reference: &str, old: &str) {
        if self.images.resolve(reference).is_ok_and(|i| i.id != old)
            && self.images.resolve(old).is_ok_and(|i| i.names.is_empty())
        {
            let in_use: std::collections::HashSet<String> = self
                .containers
                .list(true)
                .map(|cs| cs.into_iter().map(|c| c.image_id).collect())
                .unwrap_or_default();
            if !in_use.contains(old) {
                let _ = self.images.remove(old, false, &in_use);
            }
        }
    }
}
