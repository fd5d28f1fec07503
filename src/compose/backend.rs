//! Plan operations carried out on the engine.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::convert::{self, labels};
use super::{Error, Result, Stack};
use crate::compose::executor::Backend;
use crate::engine::container::{
    ContainerConfig, ContainerError, ImageInfo, Mount, MountKind, NetworkMode, Status,
};
use crate::engine::image::Image;
use crate::engine::network::files::{HostsSpec, ResolvSpec};
use crate::engine::network::{EndpointSpec, NetworkSpec, Networks, PortMapping, ports};
use crate::engine::volume::{Prepare, VolumeSpec};
use crate::plan::{Op, service_image};
use crate::project::model::{self, FileReference, Service, ServiceVolume, VolumeType};

/// Overrides of a one-off (`run`) container.
#[derive(Debug, Clone, Default)]
pub struct OneOff {
    /// Command instead of the service's.
    pub command: Option<Vec<String>>,
    /// Entrypoint instead of the service's.
    pub entrypoint: Option<Vec<String>>,
    /// Extra `K=V`.
    pub env: Vec<String>,
    /// User.
    pub user: Option<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Extra `-v` mounts (short syntax).
    pub volumes: Vec<String>,
    /// Extra `-p` ports (short syntax).
    pub publish: Vec<String>,
    /// Publish the service's own ports too.
    pub service_ports: bool,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// Remove the container when it exits.
    pub remove: bool,
    /// Give the container the service's network aliases (`run --use-aliases`).
    pub use_aliases: bool,
}

impl Backend for Stack {
    fn apply(&self, op: &Op) -> Result<()> {
        self.apply_op(op)
    }
}

impl Stack {
    fn service(&self, name: &str) -> Result<&Service> {
        self.project
            .services
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("no such service: {name}")))
    }

    /// Carries out one operation.
    ///
    /// # Errors
    /// Whatever the engine reports, with the service or object named.
    pub fn apply_op(&self, op: &Op) -> Result<()> {
        match op {
            Op::CreateNetwork { key, name } => self.create_network(key, name),
            Op::CreateVolume { key, name } => self.create_volume(key, name),
            Op::PullImage { image } => {
                let quiet = crate::engine::image::no_progress();
                self.images.pull(image, &quiet)?;
                Ok(())
            }
            Op::BuildImage { service, image } => self
                .build_service(service, image, &self.options.build, &|_| {})
                .map(|_| ()),
            Op::CreateContainer {
                service,
                number,
                name,
            } => self.create_container(service, *number, name),
            Op::StartContainer { service, name } => {
                let id = self.container_id(name)?;
                self.sync_on_start(service, &id)?;
                if let Err(e) = self.containers.start(&id, false) {
                    // A start still finishing for a killed command already did the job.
                    let status = self.containers.state(&id).status;
                    if !matches!(
                        status,
                        crate::engine::container::Status::Running
                            | crate::engine::container::Status::Restarting
                    ) {
                        return Err(e.into());
                    }
                }
                let hooks = self.service(service).map(|s| s.post_start.clone())?;
                self.run_hooks(service, &id, &hooks, "post_start")
            }
            Op::StopContainer { service, name } => {
                let timeout = self.options.stop_timeout.or_else(|| {
                    self.project
                        .services
                        .get(service)
                        .and_then(|s| s.stop_grace_period)
                        .map(crate::project::model::Duration::to_std)
                });
                let id = self.container_id(name)?;
                if let Some(s) = self.project.services.get(service) {
                    let running = self.containers.state(&id).status
                        == crate::engine::container::Status::Running;
                    if running {
                        self.run_hooks(service, &id, &s.pre_stop, "pre_stop")?;
                    }
                }
                if self.options.teardown {
                    self.containers.stop_process(&id, timeout)?;
                } else {
                    self.containers.stop(&id, timeout)?;
                }
                Ok(())
            }
            Op::RemoveContainer { name, .. } => self.remove_container(name),
            Op::WaitFor {
                service, condition, ..
            } => self.wait_for(service, *condition),
            Op::RemoveNetwork { name } => {
                // Deleting the bridge is the kernel's slowest step here (it waits for RCU
                // grace periods, with the CPU idle): the files of the containers removed
                // before are deleted meanwhile. Their veths go with the bridge.
                let (removed, purged) = std::thread::scope(|s| {
                    let purge = s.spawn(|| self.purge_retired());
                    let removed = self.networks.remove(name, false);
                    (removed, purge.join())
                });
                match removed {
                    Ok(()) | Err(crate::engine::network::Error::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                purged.unwrap_or_else(|_| {
                    Err(Error::Invalid("deleting container files panicked".into()))
                })
            }
            Op::RemoveVolume { name } => match self.volumes.remove(name, &[]) {
                Ok(()) | Err(crate::engine::volume::Error::NotFound(_)) => Ok(()),
                Err(e) => Err(e.into()),
            },
            Op::RemoveImage { image } => {
                let in_use = self.images_in_use()?;
                match self.images.remove(image, false, &in_use) {
                    Ok(_) | Err(crate::engine::image::Error::NotFound(_)) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Runs `post_start` or `pre_stop` hooks in a container, in order; a failing hook fails
    /// the operation.
    fn run_hooks(
        &self,
        service: &str,
        id: &str,
        hooks: &[crate::project::model::ServiceHook],
        what: &str,
    ) -> Result<()> {
        for h in hooks {
            let Some(cmd) = h.command.clone().filter(|c| !c.is_empty()) else {
                continue;
            };
            let code = self
                .containers
                .exec(id, &super::develop::hook_exec(h, cmd.clone()))?;
            if code != 0 {
                return Err(Error::Dependency(format!(
                    "service {service}: {what} hook {cmd:?} exited with code {code}"
                )));
            }
        }
        Ok(())
    }

    /// Image ids used by any container of the state root.
    ///
    /// # Errors
    /// The container store cannot be read.
    pub fn images_in_use(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .containers
            .list(true)?
            .into_iter()
            .map(|c| c.image_id)
            .collect())
    }

    /// The id of a container by name.
    ///
    /// # Errors
    /// No such container.
    pub fn container_id(&self, name: &str) -> Result<String> {
        Ok(self.containers.resolve(name)?)
    }

    fn create_network(&self, key: &str, name: &str) -> Result<()> {
        let n = self
            .project
            .networks
            .get(key)
            .ok_or_else(|| Error::NotFound(format!("network {key} is not declared")))?;
        if n.driver.as_deref().is_some_and(|d| d != "bridge") {
            return Err(Error::Unsupported(format!(
                "network {key}: driver {} is not supported (only bridge)",
                n.driver.as_deref().unwrap_or_default()
            )));
        }
        if n.ipam.config.len() > 1 {
            return Err(Error::Unsupported(format!(
                "network {key}: more than one ipam.config entry is not supported yet"
            )));
        }
        let mut labels_map = n.labels.clone();
        labels_map.insert(labels::PROJECT.into(), self.project.name.clone());
        labels_map.insert(labels::NETWORK.into(), key.to_string());
        labels_map.insert(labels::VERSION.into(), convert::COMPOSE_VERSION.into());
        let pool = n.ipam.config.first();
        let spec = NetworkSpec {
            name: name.to_string(),
            labels: labels_map,
            internal: n.internal,
            driver: n.driver.clone(),
            driver_opts: n.driver_opts.clone(),
            enable_ipv6: n.enable_ipv6.unwrap_or(false),
            subnet: pool.and_then(|p| p.subnet.clone()),
            gateway: pool.and_then(|p| p.gateway.clone()),
            ip_range: pool.and_then(|p| p.ip_range.clone()),
        };
        match self.networks.create(&spec) {
            Ok(_) | Err(crate::engine::network::Error::Exists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn create_volume(&self, key: &str, name: &str) -> Result<()> {
        let v = self
            .project
            .volumes
            .get(key)
            .ok_or_else(|| Error::NotFound(format!("volume {key} is not declared")))?;
        let mut labels_map = v.labels.clone();
        labels_map.insert(labels::PROJECT.into(), self.project.name.clone());
        labels_map.insert(labels::VOLUME.into(), key.to_string());
        labels_map.insert(labels::VERSION.into(), convert::COMPOSE_VERSION.into());
        self.volumes.ensure(&VolumeSpec {
            name: name.to_string(),
            driver: v.driver.clone(),
            driver_opts: v.driver_opts.clone(),
            labels: labels_map,
        })?;
        Ok(())
    }

    fn volume_name(&self, key: &str) -> String {
        self.project.volumes.get(key).map_or_else(
            || format!("{}_{key}", self.project.name),
            |v| v.actual_name(&self.project.name, key),
        )
    }

    fn network_name(&self, key: &str) -> String {
        self.project.networks.get(key).map_or_else(
            || format!("{}_{key}", self.project.name),
            |n| n.actual_name(&self.project.name, key),
        )
    }

    /// Per-container files (secrets, configs) live here.
    fn files_dir(&self, container: &str) -> PathBuf {
        self.root
            .join("projects")
            .join(&self.project.name)
            .join("files")
            .join(container)
    }

    fn create_container(&self, service: &str, number: u32, name: &str) -> Result<()> {
        let s = self.service(service)?;
        self.build_and_create(s, number, name, None).map(|_| ())
    }

    /// Creates a one-off (`run`) container of a service; returns its id.
    ///
    /// # Errors
    /// As for a service container, plus bad `-v`/`-p` values.
    pub fn create_oneoff(&self, s: &Service, name: &str, o: &OneOff) -> Result<String> {
        self.build_and_create(s, 1, name, Some(o))
    }

    // Long: a service container in the order creation needs: image, config, mounts, image
    // VOLUMEs, network, the create; the compose layer's move out of the engine splits it.
    fn build_and_create(
        &self,
        s: &Service,
        number: u32,
        name: &str,
        oneoff: Option<&OneOff>,
    ) -> Result<String> {
        let image_ref = service_image(&self.project.name, s);
        let image = self.images.resolve(&image_ref)?;
        let mut config = convert::container_config(
            &self.project,
            s,
            name,
            number,
            self.hash(&s.name),
            &image_ref,
            &image.id,
        )?;
        if config.hostname.is_none() {
            config.hostname = Some(name.to_string());
        }
        // A replica's anonymous volumes are named after it and outlive it; a one-off gets
        // fresh ones of its own, deleted with it (`run --rm`) or by `down -v`.
        let mut anon = Anon {
            replica: oneoff.is_none().then_some(number),
            made: Vec::new(),
        };
        config.mounts = self.mounts(s, name, &mut anon, &image)?;
        let mut service = s.clone();
        if let Some(o) = oneoff {
            config
                .labels
                .insert(labels::ONEOFF.to_string(), "True".to_string());
            if o.command.is_some() {
                config.command.clone_from(&o.command);
            }
            if o.entrypoint.is_some() {
                config.entrypoint.clone_from(&o.entrypoint);
                if o.command.is_none() {
                    config.command = None;
                }
            }
            config.env.extend(o.env.iter().cloned());
            if o.user.is_some() {
                config.user.clone_from(&o.user);
            }
            if o.workdir.is_some() {
                config.working_dir.clone_from(&o.workdir);
            }
            config.tty = o.tty;
            config.stdin_open = o.interactive;
            config.auto_remove = o.remove;
            config.restart = crate::engine::container::RestartPolicy::No;
            for v in &o.volumes {
                let req = crate::engine::volume::MountRequest::parse_short(v)?;
                let sv = ServiceVolume {
                    kind: match req.kind {
                        crate::engine::volume::MountKind::Bind => VolumeType::Bind,
                        crate::engine::volume::MountKind::Tmpfs => VolumeType::Tmpfs,
                        crate::engine::volume::MountKind::Volume => VolumeType::Volume,
                    },
                    source: req.source.map(|src| {
                        if src.starts_with('.') {
                            self.project.working_dir.join(src).display().to_string()
                        } else {
                            src
                        }
                    }),
                    target: req.target.clone(),
                    read_only: req.read_only,
                    ..ServiceVolume::default()
                };
                config
                    .mounts
                    .push(self.mount(s, &sv, &mut anon, &image, 0, 0)?);
            }
            // A one-off publishes the service's ports only with --service-ports, plus -p.
            if !o.service_ports {
                service.ports.clear();
            }
            for p in &o.publish {
                for m in crate::engine::network::ports::parse_short(p)? {
                    service.ports.push(crate::project::model::Port {
                        target: m.container_port,
                        published: (m.host_port != 0).then(|| m.host_port.to_string()),
                        host_ip: m.host_ip.map(|ip| ip.to_string()),
                        protocol: Some(m.protocol.to_string()),
                        ..crate::project::model::Port::default()
                    });
                }
            }
        }
        // The image's VOLUME paths that no mount covers get anonymous volumes too, as the
        // Docker engine gives them; ours are the service's, so a recreation keeps them.
        let targets = crate::engine::container::volumes::image_volume_targets(
            image.config.config().as_ref(),
            &config.mounts,
        );
        if !targets.is_empty() {
            let (uid, gid) = image_user_ids(self, &image);
            for target in targets {
                let sv = ServiceVolume {
                    kind: VolumeType::Volume,
                    target,
                    ..ServiceVolume::default()
                };
                config
                    .mounts
                    .push(self.mount(s, &sv, &mut anon, &image, uid, gid)?);
            }
        }
        config.anonymous_volumes = anon.made;
        let wiring = {
            // Only the wiring is serialised; the container store writes each container's
            // files in its own directory, so creates overlap (and their fsyncs share the
            // filesystem's journal commits).
            let _guard = self
                .wiring
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let aliases = oneoff.is_none_or(|o| o.use_aliases);
            self.wire_network(&service, name, aliases, &mut config)?
        };
        let info = ImageInfo {
            id: image.id.clone(),
            layers: self.images.layer_dirs(&image)?,
            config: image.config.config().clone(),
        };
        // A failed create drops the wiring, which undoes it.
        let id = self.containers.create(config, &info)?;
        if let Some(w) = wiring {
            w.disarm();
        }
        Ok(id)
    }

    fn remove_container(&self, name: &str) -> Result<()> {
        let id = match self.containers.resolve(name) {
            Ok(id) => Some(id),
            Err(ContainerError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        // A container that no longer runs no longer uses its network namespace: the kernel's
        // teardown of its links and the removal of its files (which waits for the
        // supervisor's unmount) then happen at once. A running one is stopped first. While
        // the stack is taken down, a container whose processes are gone (its stop may not
        // be recorded yet) counts as stopped, and its files are deleted later.
        let running = id.as_ref().is_some_and(|id| {
            let st = self.containers.state(id);
            match st.status {
                Status::Restarting => true,
                Status::Running | Status::Paused => {
                    !self.options.teardown
                        || crate::engine::container::state::alive(st.pid, st.pid_start)
                }
                _ => false,
            }
        });
        if running {
            if let Some(id) = &id {
                self.containers.remove(id, true)?;
            }
            self.disconnect(name)?;
        } else {
            std::thread::scope(|s| -> Result<()> {
                let network = s.spawn(|| self.disconnect(name));
                let files = id.as_ref().map_or(Ok(()), |id| {
                    if self.options.teardown {
                        super::push_to(&self.retired, self.containers.retire_stopped(id)?);
                        Ok(())
                    } else {
                        self.containers.remove(id, true)
                    }
                });
                let network = network.join().unwrap_or_else(|_| {
                    Err(Error::Invalid(format!("disconnecting {name} panicked")))
                });
                files?;
                network?;
                Ok(())
            })?;
        }
        let files = self.files_dir(name);
        if files.exists() {
            std::fs::remove_dir_all(&files)
                .map_err(|e| Error::Io(format!("remove {}", files.display()), e))?;
        }
        Ok(())
    }

    /// Takes a removed container's network namespace, endpoints and ports away; with
    /// `teardown`, its namespace and veths are left to the network removals and
    /// [`Stack::settle`].
    fn disconnect(&self, name: &str) -> Result<()> {
        if !self.options.teardown {
            return self.networks.disconnect_all(name).map_err(Into::into);
        }
        super::push_to(&self.detached, self.networks.detach_all(name)?);
        Ok(())
    }

    /// The network namespace, endpoints, published ports, /etc/hosts and resolv.conf.
    fn wire_network(
        &self,
        s: &Service,
        name: &str,
        service_alias: bool,
        config: &mut ContainerConfig,
    ) -> Result<Option<crate::engine::container::net::WiringGuard>> {
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let hostname = config.hostname.clone().unwrap_or_else(|| name.to_string());
        match &s.network_mode {
            Some(model::NetworkMode::Host) => {
                config.network = NetworkMode::Host;
                return Ok(None);
            }
            Some(model::NetworkMode::None) => {
                config.network = NetworkMode::None;
                config.etc_hosts = Some(Networks::hosts_file(&HostsSpec {
                    hostname,
                    domainname: s.domainname.clone(),
                    ip: None,
                    extra_hosts: s.extra_hosts.clone(),
                    gateway: None,
                })?);
                return Ok(None);
            }
            Some(m @ (model::NetworkMode::Service(_) | model::NetworkMode::Container(_))) => {
                let target = match m {
                    model::NetworkMode::Service(svc) => {
                        let other = self.service(svc)?;
                        other.container_name_for(&self.project.name, 1)
                    }
                    _ => m.to_string().trim_start_matches("container:").to_string(),
                };
                let id = self.container_id(&target).map_err(|_| {
                    Error::Dependency(format!(
                        "service {}: network_mode {m}: container {target} does not exist",
                        s.name
                    ))
                })?;
                config.network = NetworkMode::Container(id);
                return Ok(None);
            }
            Some(model::NetworkMode::Bridge) | None => {}
            Some(model::NetworkMode::Network(n)) if n == "default" => {}
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "service {}: network_mode {other} is not supported",
                    s.name
                )));
            }
        }
        let endpoints = self.endpoint_specs(s, name, &hostname, service_alias)?;
        let extra_hosts = self.link_hosts(s, &endpoints);
        let maps = published_ports(s)?;
        if !maps.is_empty() && endpoints.is_empty() {
            return Err(Error::Invalid(format!(
                "service {}: ports need a network",
                s.name
            )));
        }
        let wiring = crate::engine::container::net::attach(
            &self.networks,
            crate::engine::container::net::Attach {
                key: name.to_string(),
                service: s.name.clone(),
                endpoints,
                hosts: HostsSpec {
                    hostname,
                    domainname: s.domainname.clone(),
                    extra_hosts,
                    ..HostsSpec::default()
                },
                resolv: ResolvSpec {
                    dns: s.dns.clone(),
                    search: s.dns_search.clone(),
                    options: s.dns_opt.clone(),
                    host: host_resolv,
                    ..ResolvSpec::default()
                },
                ports: maps,
                // Leftovers of a container of the same name (a killed command) go first.
                replace: true,
            },
            config,
        )?;
        Ok(Some(wiring))
    }

    /// One endpoint per network of the service, the default route's network first.
    fn endpoint_specs(
        &self,
        s: &Service,
        name: &str,
        hostname: &str,
        service_alias: bool,
    ) -> Result<Vec<(String, EndpointSpec)>> {
        let mut endpoints = Vec::new();
        for key in s.networks_by_priority() {
            let opts = s.networks.get(key).cloned().flatten().unwrap_or_default();
            let mut aliases = if service_alias {
                vec![s.name.clone()]
            } else {
                Vec::new()
            };
            aliases.extend(opts.aliases.iter().cloned());
            let ipv4_address = opts
                .ipv4_address
                .as_deref()
                .map(|a| {
                    a.parse::<Ipv4Addr>().map_err(|_| {
                        Error::Invalid(format!(
                            "service {}: ipv4_address {a:?} is not an IPv4 address",
                            s.name
                        ))
                    })
                })
                .transpose()?;
            endpoints.push((
                self.network_name(key),
                EndpointSpec {
                    container_id: name.to_string(),
                    container_name: name.to_string(),
                    service: service_alias.then(|| s.name.clone()),
                    project: Some(self.project.name.clone()),
                    hostname: Some(hostname.to_string()),
                    aliases,
                    ipv4_address,
                    ipv6_address: opts.ipv6_address.clone(),
                    mac_address: opts.mac_address.clone().or_else(|| s.mac_address.clone()),
                    priority: i32::try_from(opts.priority).unwrap_or(0),
                    dns: s.dns.clone(),
                },
            ));
        }
        Ok(endpoints)
    }

    /// `extra_hosts` plus the aliases of `links:`: `links: [db:database]` adds `database` as
    /// a name of db on this container's view; tug's DNS answers per network, so a link alias
    /// becomes an /etc/hosts entry (the linked container's address on a network this
    /// container joins).
    fn link_hosts(&self, s: &Service, endpoints: &[(String, EndpointSpec)]) -> Vec<String> {
        let links: Vec<(String, String)> = s
            .links
            .iter()
            .map(|l| match l.split_once(':') {
                Some((svc, alias)) => (svc.to_string(), alias.to_string()),
                None => (l.clone(), l.clone()),
            })
            .collect();
        let mut extra_hosts = s.extra_hosts.clone();
        for (svc, alias) in &links {
            if svc == alias {
                continue;
            }
            if let Ok(other) = self.service(svc) {
                let other_name = other.container_name_for(&self.project.name, 1);
                if let Ok(eps) = self.networks.endpoints_of_container(&other_name)
                    && let Some(ep) = eps
                        .iter()
                        .find(|e| endpoints.iter().any(|(net, _)| *net == e.network))
                {
                    extra_hosts.push(format!("{alias}:{}", ep.ip));
                }
            }
        }
        extra_hosts
    }

    /// Mounts of one container: volumes, binds, tmpfs, secrets and configs.
    fn mounts(
        &self,
        s: &Service,
        name: &str,
        anon: &mut Anon,
        image: &Image,
    ) -> Result<Vec<Mount>> {
        let mut out = Vec::new();
        let (uid, gid) = image_user_ids(self, image);
        for v in &s.volumes {
            out.push(self.mount(s, v, anon, image, uid, gid)?);
        }
        for t in &s.tmpfs {
            let (target, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
            out.push(Mount {
                kind: MountKind::Tmpfs,
                source: PathBuf::from("tmpfs"),
                target: target.to_string(),
                read_only: false,
                options: opts
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string)
                    .collect(),
            });
        }
        for r in &s.secrets {
            out.push(self.file_mount(s, name, "secret", r)?);
        }
        for r in &s.configs {
            out.push(self.file_mount(s, name, "config", r)?);
        }
        let shared = self.volumes_from(s, &out)?;
        out.extend(shared);
        Ok(out)
    }

    /// `volumes_from`: the bind and volume mounts (named, anonymous, binds, and what the
    /// source itself got through `volumes_from`) of another container, from its record: the
    /// first replica of a service (`name`, `service:name`), or a container by name
    /// (`container:name`). `:ro` makes them read-only, `:rw` writable, no mode keeps the
    /// source's. Tmpfs and the source's secrets and configs are not shared; a target this
    /// service mounts itself, or an earlier source already gave, keeps that mount.
    fn volumes_from(&self, s: &Service, own: &[Mount]) -> Result<Vec<Mount>> {
        let mut out: Vec<Mount> = Vec::new();
        for vf in &s.volumes_from {
            let source = parse_volumes_from(vf).map_err(|e| {
                Error::Invalid(format!("service {}: volumes_from {vf:?}: {e}", s.name))
            })?;
            let container = match source.kind {
                VolumesFromKind::Container => source.name.to_string(),
                VolumesFromKind::Service => self
                    .service(source.name)
                    .map_err(|_| {
                        Error::Invalid(format!(
                            "service {}: volumes_from {vf:?}: no service {}",
                            s.name, source.name
                        ))
                    })?
                    .container_name_for(&self.project.name, 1),
            };
            let record = self
                .containers
                .resolve(&container)
                .and_then(|id| self.containers.record(&id))
                .map_err(|_| {
                    Error::Dependency(format!(
                        "service {}: volumes_from {vf:?}: container {container} does not exist",
                        s.name
                    ))
                })?;
            let files = self.files_dir(&record.config.name);
            for m in record.config.mounts {
                let shareable = matches!(m.kind, MountKind::Bind | MountKind::Volume)
                    && !m.source.starts_with(&files);
                let taken = own.iter().chain(&out).any(|o| o.target == m.target);
                if !shareable || taken {
                    continue;
                }
                let read_only = source.read_only.unwrap_or(m.read_only);
                out.push(Mount { read_only, ..m });
            }
        }
        Ok(out)
    }

    fn mount(
        &self,
        s: &Service,
        v: &ServiceVolume,
        anon: &mut Anon,
        image: &Image,
        uid: u32,
        gid: u32,
    ) -> Result<Mount> {
        match v.kind {
            VolumeType::Bind => {
                let src = v.source.clone().unwrap_or_default();
                let path = PathBuf::from(&src);
                if !path.exists() {
                    let create = v.bind.as_ref().is_none_or(|b| b.create_host_path);
                    if !create {
                        return Err(Error::Invalid(format!(
                            "service {}: bind source {src} does not exist",
                            s.name
                        )));
                    }
                    std::fs::create_dir_all(&path)
                        .map_err(|e| Error::Io(format!("create {src}"), e))?;
                }
                let mut options = Vec::new();
                if let Some(p) = v.bind.as_ref().and_then(|b| b.propagation.clone()) {
                    options.push(p);
                }
                Ok(Mount {
                    kind: MountKind::Bind,
                    source: path,
                    target: v.target.clone(),
                    read_only: v.read_only,
                    options,
                })
            }
            VolumeType::Volume => {
                let nocopy = v.volume.as_ref().is_some_and(|o| o.nocopy);
                let vol = match &v.source {
                    Some(key) if self.project.volumes.contains_key(key) => self.volume_name(key),
                    Some(other) => other.clone(),
                    None => self.anonymous_volume(s, anon, &v.target)?,
                };
                let layers = if nocopy {
                    Vec::new()
                } else {
                    self.images.layer_dirs(image)?
                };
                let _guard = self
                    .preparing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let path = self.volumes.prepare(
                    &vol,
                    &Prepare {
                        layers,
                        target: v.target.clone(),
                        nocopy,
                        uid,
                        gid,
                    },
                )?;
                // `data:/d:rshared` keeps its propagation under `bind` for a volume too.
                let options = v
                    .bind
                    .as_ref()
                    .and_then(|b| b.propagation.clone())
                    .into_iter()
                    .collect();
                Ok(Mount {
                    kind: MountKind::Volume,
                    source: path,
                    target: v.target.clone(),
                    read_only: v.read_only,
                    options,
                })
            }
            VolumeType::Tmpfs => {
                let mut options = Vec::new();
                if let Some(t) = &v.tmpfs {
                    if t.size.0 > 0 {
                        options.push(format!("size={}", t.size.0));
                    }
                    if t.mode != 0 {
                        options.push(format!("mode={:o}", t.mode));
                    }
                }
                Ok(Mount {
                    kind: MountKind::Tmpfs,
                    source: PathBuf::from("tmpfs"),
                    target: v.target.clone(),
                    read_only: v.read_only,
                    options,
                })
            }
            other => Err(Error::Unsupported(format!(
                "service {}: volume type {other} is not supported",
                s.name
            ))),
        }
    }

    /// An anonymous volume (`<project>_<service>_anon_<16 hex>`, which `down -v` removes):
    /// a replica's is named after project, service, replica and target, so the same replica
    /// finds its data again when it is recreated (`-V` renews it); a one-off's is new.
    fn anonymous_volume(&self, s: &Service, anon: &mut Anon, target: &str) -> Result<String> {
        let suffix = match anon.replica {
            Some(number) => hex::encode(Sha256::digest(
                format!("{}/{}/{number}/{target}", self.project.name, s.name).as_bytes(),
            ))[..16]
                .to_string(),
            None => hex::encode(rand::random::<[u8; 8]>()),
        };
        let name = format!("{}_{}_anon_{suffix}", self.project.name, s.name);
        if anon.replica.is_some()
            && self.options.renew_anon_volumes
            && self.volumes.exists(&name)?
        {
            self.volumes.remove(&name, &[])?;
        }
        if anon.replica.is_none() {
            anon.made.push(name.clone());
        }
        let mut l = BTreeMap::new();
        l.insert(labels::PROJECT.to_string(), self.project.name.clone());
        l.insert(labels::SERVICE.to_string(), s.name.clone());
        l.insert("tug.anonymous".to_string(), "true".to_string());
        self.volumes.ensure(&VolumeSpec {
            name: name.clone(),
            driver: None,
            driver_opts: BTreeMap::new(),
            labels: l,
        })?;
        Ok(name)
    }

    /// A secret or config: its content copied into the container's files directory with the
    /// requested owner and mode, bind-mounted read-only at its target.
    fn file_mount(
        &self,
        s: &Service,
        container: &str,
        kind: &str,
        r: &FileReference,
    ) -> Result<Mount> {
        let objects = if kind == "secret" {
            &self.project.secrets
        } else {
            &self.project.configs
        };
        let obj = objects.get(&r.source).ok_or_else(|| {
            Error::NotFound(format!(
                "service {}: {kind} {} is not declared",
                s.name, r.source
            ))
        })?;
        if obj.external {
            return Err(Error::Unsupported(format!(
                "service {}: external {kind}s need a swarm; not supported",
                s.name
            )));
        }
        let content = if let Some(f) = &obj.file {
            // Only a regular file (a FIFO is not waited on, `/dev/zero` not read), copied by
            // streaming: never whole in memory.
            Content::File(
                crate::project::input::open_regular(Path::new(f)).map_err(|e| {
                    Error::Io(
                        format!("service {}: {kind} {}: cannot copy {f}", s.name, r.source),
                        e,
                    )
                })?,
            )
        } else if let Some(var) = &obj.environment {
            self.project
                .environment
                .get(var)
                .cloned()
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{kind} {}: environment variable {var} is not set",
                        r.source
                    ))
                })?
                .into_bytes()
                .into()
        } else if let Some(c) = &obj.content {
            c.clone().into_bytes().into()
        } else {
            return Err(Error::Invalid(format!(
                "{kind} {}: needs file, environment or content",
                r.source
            )));
        };
        // `projects/<p>/files/<container>/<kind>/`: private directories (the copy is read in
        // the container through its bind mount, never through this path).
        let dir = self.files_dir(container).join(kind);
        crate::engine::private::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("create {}", dir.display()), e))?;
        let path = dir.join(&r.source);
        // Permission bits only (no set-id or sticky bits on a copy made by root).
        let mode = r.mode.map_or(0o444, |m| m.0) & 0o777;
        let uid = r.uid.as_deref().and_then(|u| u.parse().ok()).unwrap_or(0);
        let gid = r.gid.as_deref().and_then(|g| g.parse().ok()).unwrap_or(0);
        write_file(&path, content, uid, gid, mode)?;
        let target = match &r.target {
            Some(t) if t.starts_with('/') => t.clone(),
            Some(t) if kind == "secret" => format!("/run/secrets/{t}"),
            Some(t) => format!("/{t}"),
            None if kind == "secret" => format!("/run/secrets/{}", r.source),
            None => format!("/{}", r.source),
        };
        Ok(Mount {
            kind: MountKind::Bind,
            source: path,
            target,
            read_only: true,
            options: Vec::new(),
        })
    }
}

/// Whose anonymous volumes a container gets, and those made for it alone.
struct Anon {
    /// A service replica's number; `None` for a one-off (`run`).
    replica: Option<u32>,
    /// The one-off's own anonymous volumes, made so far.
    made: Vec<String>,
}

/// What a secret or config holds: bytes, or a regular file opened for copying.
enum Content {
    Bytes(Vec<u8>),
    File(std::fs::File),
}

impl From<Vec<u8>> for Content {
    fn from(b: Vec<u8>) -> Self {
        Content::Bytes(b)
    }
}

/// Writes a secret or config copy: a private temporary file that gets its owner and mode
/// before it is renamed into place, so the copy never exists with others' access.
fn write_file(path: &Path, content: Content, uid: u32, gid: u32, mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let private = crate::engine::private::FILE_MODE;
    crate::util::fs::write_atomic_with(path, private, crate::util::fs::Durability::None, |f| {
        match content {
            Content::Bytes(b) => f.write_all(&b)?,
            Content::File(mut src) => {
                std::io::copy(&mut src, f)?;
            }
        }
        std::os::unix::fs::fchown(&*f, Some(uid), Some(gid))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    })
    .map_err(|e| Error::Io(format!("write {}", path.display()), e))
}

/// The uid and gid the image runs as (its `User`), resolved in the image's /etc/passwd and
/// /etc/group as the container's process will be. Root when unknown.
fn image_user_ids(stack: &Stack, image: &Image) -> (u32, u32) {
    let user = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    if user.is_empty() {
        return (0, 0);
    }
    let layers = stack.images.layer_dirs(image).unwrap_or_default();
    crate::engine::container::user::resolve_in_layers(&user, &[], &layers)
        .map_or((0, 0), |u| (u.uid, u.gid))
}

/// Where a `volumes_from` entry takes mounts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VolumesFromKind {
    Service,
    Container,
}

/// One parsed `volumes_from` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VolumesFrom<'a> {
    kind: VolumesFromKind,
    name: &'a str,
    /// `Some(true)` for `:ro`, `Some(false)` for `:rw`, None to keep the source's mode.
    read_only: Option<bool>,
}

/// A `volumes_from` entry that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum VolumesFromError {
    /// A mode other than `ro` and `rw`.
    #[error("unknown mode {0:?} (use ro or rw)")]
    Mode(String),
    /// `service:` or `container:` alone.
    #[error("no service or container name")]
    NoName,
}

/// Parses `NAME`, `service:NAME`, `container:NAME`, each with an optional `:ro` or `:rw`.
fn parse_volumes_from(v: &str) -> std::result::Result<VolumesFrom<'_>, VolumesFromError> {
    let (kind, rest) = if let Some(r) = v.strip_prefix("container:") {
        (VolumesFromKind::Container, r)
    } else if let Some(r) = v.strip_prefix("service:") {
        (VolumesFromKind::Service, r)
    } else {
        (VolumesFromKind::Service, v)
    };
    let (name, read_only) = match rest.split_once(':') {
        None => (rest, None),
        Some((n, "ro")) => (n, Some(true)),
        Some((n, "rw")) => (n, Some(false)),
        Some((_, mode)) => return Err(VolumesFromError::Mode(mode.to_owned())),
    };
    if name.is_empty() {
        return Err(VolumesFromError::NoName);
    }
    Ok(VolumesFrom {
        kind,
        name,
        read_only,
    })
}

/// The service's published ports (`expose`-mode entries without a host port are not
/// published); they go to the container's first endpoint.
fn published_ports(s: &Service) -> Result<Vec<PortMapping>> {
    let mut maps: Vec<PortMapping> = Vec::new();
    for p in &s.ports {
        if p.published.is_none() && p.mode.as_deref() == Some("expose") {
            continue;
        }
        maps.extend(ports::parse_long(
            p.target,
            p.published.as_deref(),
            p.host_ip.as_deref(),
            p.protocol.as_deref(),
        )?);
    }
    Ok(maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_from_entries_parse() {
        let p = |v| parse_volumes_from(v).unwrap();
        assert_eq!(
            p("db"),
            VolumesFrom {
                kind: VolumesFromKind::Service,
                name: "db",
                read_only: None
            }
        );
        assert_eq!(p("service:db:ro").name, "db");
        assert_eq!(p("service:db:ro").read_only, Some(true));
        assert_eq!(p("db:rw").read_only, Some(false));
        let c = p("container:x-1:ro");
        assert_eq!(
            (c.kind, c.name, c.read_only),
            (VolumesFromKind::Container, "x-1", Some(true))
        );
        assert!(parse_volumes_from("db:z").is_err());
        assert!(parse_volumes_from("service:").is_err());
        assert!(parse_volumes_from("container::ro").is_err());
    }
}
