//! Wiring a single container (`tug container run/create`) into networks, as `docker run`
//! does: `--network NAME` joins a user network, no `--network` joins the default network
//! [`DEFAULT_NETWORK`] (`bridge`, created on first use with a subnet from the pool and never
//! removed implicitly), `-p` publishes ports.
//!
//! The container's namespace, endpoints and port proxy are held by `engine::network` under
//! the container's id (`<root>/netns/<id>`, the network's `endpoints.json`,
//! `<root>/ports/<id>.json`). The container record says so (`ContainerConfig::network_owned`),
//! and removing the container ([`super::ContainerStore::remove_files`], also reached by
//! `--rm` from the supervisor) releases all of it with `Networks::disconnect_all(id)`.
//!
//! [`attach`] is the one way a container's networking is made, for `container run`, builds
//! and compose's services alike: a claim on the key, the namespace, one endpoint per
//! network, `/etc/hosts` and `resolv.conf` from the first endpoint, published ports; the
//! [`WiringGuard`] it returns undoes it unless disarmed once the container record owns it.
//! While wiring, the claim ([`Networks::claim_netns`]) keeps the one cleanup of stray
//! namespaces ([`Networks::gc_netns`]) away. A command killed between wiring and the
//! container record leaves a namespace keyed by an id that is no container and has no live
//! claim: the next wiring ([`gc_orphans`]) releases it.

use crate::engine::network::files::{HostsSpec, ResolvSpec};
use crate::engine::network::{self, EndpointSpec, NetworkSpec, Networks, PortMapping, ports};

use super::config::{ContainerConfig, NetworkMode};
use super::{ContainerError, Result};

/// The network a container joins when no `--network` is given (Docker's name).
pub const DEFAULT_NETWORK: &str = "bridge";

/// How `container run/create` asks for networking.
#[derive(Debug, Clone, Default)]
pub struct NetRequest {
    /// `none`, `host`, `container:NAME`, `ns:PATH`, a network name, or `None` for
    /// [`DEFAULT_NETWORK`].
    pub network: Option<String>,
    /// `-p` entries: `[ip:][host[-end]:]container[-end][/proto]`.
    pub publish: Vec<String>,
    /// Extra DNS names of the container on its network (`--network-alias`).
    pub aliases: Vec<String>,
}

/// What a request means before anything is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetChoice {
    /// A namespace mode that needs no network (none, host, container:, ns:).
    Mode(NetworkMode),
    /// A tug network to join by name.
    Network(String),
}

/// Parses `--network`.
pub fn parse_network(network: Option<&str>) -> NetChoice {
    match network {
        None | Some("" | "default") => NetChoice::Network(DEFAULT_NETWORK.to_string()),
        Some("none") => NetChoice::Mode(NetworkMode::None),
        Some("host") => NetChoice::Mode(NetworkMode::Host),
        Some(o) => {
            if let Some(c) = o.strip_prefix("container:") {
                NetChoice::Mode(NetworkMode::Container(c.to_string()))
            } else if let Some(p) = o.strip_prefix("ns:") {
                NetChoice::Mode(NetworkMode::Netns(p.into()))
            } else {
                NetChoice::Network(o.to_string())
            }
        }
    }
}

/// Parses every `-p` entry.
pub fn parse_publish(items: &[String]) -> Result<Vec<PortMapping>> {
    let mut maps = Vec::new();
    for p in items {
        maps.extend(
            ports::parse_short(p).map_err(|e| {
                ContainerError::Invalid(format!("invalid published port {p:?}: {e}"))
            })?,
        );
    }
    Ok(maps)
}

/// What a container's networking is made of.
#[derive(Debug, Clone, Default)]
pub struct Attach {
    /// The key of its namespace and endpoints (compose: the container name, known before the
    /// id; `container run`: the id).
    pub key: String,
    /// Named in errors about published ports (the service, or the container's name).
    pub service: String,
    /// The networks to join with their endpoints.
    pub endpoints: Vec<(String, EndpointSpec)>,
    /// `/etc/hosts`; the address and `host-gateway` come from the first endpoint.
    pub hosts: HostsSpec,
    /// `resolv.conf`; the embedded server is the first endpoint's gateway.
    pub resolv: ResolvSpec,
    /// Ports published to the first endpoint's address.
    pub ports: Vec<PortMapping>,
    /// Remove what a killed command left under the same key first (compose's keys are
    /// container names, which come back; a fresh id has nothing to remove).
    pub replace: bool,
}

/// Networking made by [`attach`]: undone when dropped, unless disarmed.
#[derive(Debug)]
pub struct WiringGuard {
    nets: Option<Networks>,
    key: String,
    /// The endpoints made, in the order asked.
    pub endpoints: Vec<network::Endpoint>,
    _claim: network::NetnsClaim,
}

impl WiringGuard {
    /// Keeps the wiring (the container record now owns it).
    pub fn disarm(mut self) {
        self.nets = None;
    }
}

impl Drop for WiringGuard {
    fn drop(&mut self) {
        if let Some(n) = self.nets.take() {
            let _ = n.disconnect_all(&self.key);
        }
    }
}

/// Makes a container's networking as `a` says and fills `config.network`, `etc_hosts` and
/// `resolv_conf`. A failure undoes what was made.
///
/// # Errors
/// A network operation failed (a taken port, an address in use, a network that is gone).
pub fn attach(
    nets: &Networks,
    a: Attach,
    config: &mut ContainerConfig,
) -> network::Result<WiringGuard> {
    let claim = nets.claim_netns(&a.key)?;
    if a.replace {
        nets.disconnect_all(&a.key)?;
    }
    // From here on the guard undoes everything made if a later step fails.
    let mut wiring = WiringGuard {
        nets: Some(nets.clone()),
        key: a.key.clone(),
        endpoints: Vec::new(),
        _claim: claim,
    };
    let ns = nets.create_netns(&a.key)?;
    wiring.endpoints = nets.connect_all(&ns, a.endpoints)?;
    let first = wiring.endpoints.first();
    config.etc_hosts = Some(Networks::hosts_file(&HostsSpec {
        ip: first.map(|e| e.ip),
        gateway: first.map(|e| e.gateway),
        ..a.hosts
    })?);
    config.resolv_conf = Some(Networks::resolv_conf(&ResolvSpec {
        embedded: first.map(|e| e.gateway),
        ..a.resolv
    }));
    if !a.ports.is_empty() {
        let Some(ep) = first else {
            return Err(network::Error::Invalid(format!(
                "{}: ports need a network",
                a.service
            )));
        };
        nets.publish(&a.key, &a.service, ep.ip, &a.ports)?;
    }
    config.network = NetworkMode::Netns(ns);
    Ok(wiring)
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Releases the namespaces (with endpoints and port proxies) of container ids that are no
/// container and that no live process claims: leftovers of a killed `run`/`create`.
/// Namespaces keyed otherwise (compose keys them by container name, builds by slot) are
/// not touched. Returns the ids released.
pub fn gc_orphans(nets: &Networks) -> Vec<String> {
    let containers = nets.root().join("containers");
    nets.gc_netns(&|key| !is_id(key) || containers.join(key).exists())
        .unwrap_or_default()
}

fn net_err(e: network::Error) -> ContainerError {
    ContainerError::Network(e)
}

/// Makes sure the default network exists (made on first use; a concurrent maker wins).
fn ensure_default(nets: &Networks) -> Result<()> {
    match nets.inspect(DEFAULT_NETWORK) {
        Ok(_) => Ok(()),
        Err(network::Error::NotFound(_)) => {
            let spec = NetworkSpec {
                name: DEFAULT_NETWORK.to_string(),
                ..NetworkSpec::default()
            };
            match nets.create(&spec) {
                Ok(_) | Err(network::Error::Exists(_)) => Ok(()),
                Err(e) => Err(net_err(e)),
            }
        }
        Err(e) => Err(net_err(e)),
    }
}

/// Wires container `id` (named `config.name`, which must be set) as `req` asks and fills
/// `config.network`, `etc_hosts`, `resolv_conf` and `network_owned`. The returned guard
/// undoes the wiring unless disarmed once the container record exists.
pub fn wire(
    nets: &Networks,
    id: &str,
    config: &mut ContainerConfig,
    req: &NetRequest,
) -> Result<Option<WiringGuard>> {
    let maps = parse_publish(&req.publish)?;
    let name = match parse_network(req.network.as_deref()) {
        NetChoice::Mode(m) => {
            if !maps.is_empty() && !matches!(m, NetworkMode::Host) {
                return Err(ContainerError::Invalid(
                    "published ports need a network (not none, container: or ns:)".into(),
                ));
            }
            // Docker ignores -p with the host's network (the ports are the host's already).
            config.network = m;
            return Ok(None);
        }
        NetChoice::Network(n) => n,
    };
    if config.name.is_empty() {
        return Err(ContainerError::Invalid(
            "a networked container needs its name before wiring".into(),
        ));
    }
    if name == DEFAULT_NETWORK {
        ensure_default(nets)?;
    } else {
        nets.inspect(&name).map_err(|e| match e {
            network::Error::NotFound(n) => ContainerError::Invalid(format!(
                "network {n} not found (create it with `tug network create {n}`)"
            )),
            e => net_err(e),
        })?;
    }
    let hostname = config
        .hostname
        .clone()
        .unwrap_or_else(|| id.chars().take(12).collect());
    gc_orphans(nets);
    let guard = attach(
        nets,
        Attach {
            key: id.to_string(),
            service: config.name.clone(),
            endpoints: vec![(
                name,
                EndpointSpec {
                    container_id: id.to_string(),
                    container_name: config.name.clone(),
                    hostname: Some(hostname.clone()),
                    aliases: req.aliases.clone(),
                    ..EndpointSpec::default()
                },
            )],
            hosts: HostsSpec {
                hostname,
                domainname: config.domainname.clone(),
                ..HostsSpec::default()
            },
            resolv: ResolvSpec {
                host: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                ..ResolvSpec::default()
            },
            ports: maps,
            replace: false,
        },
        config,
    )
    .map_err(net_err)?;
    config.network_owned = true;
    Ok(Some(guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_net_parses_network_choices() {
        assert_eq!(
            parse_network(None),
            NetChoice::Network("bridge".to_string())
        );
        assert_eq!(
            parse_network(Some("none")),
            NetChoice::Mode(NetworkMode::None)
        );
        assert_eq!(
            parse_network(Some("container:web")),
            NetChoice::Mode(NetworkMode::Container("web".into()))
        );
        assert_eq!(
            parse_network(Some("front")),
            NetChoice::Network("front".into())
        );
        assert!(parse_publish(&["127.0.0.1:8080:80".into()]).is_ok());
        assert!(parse_publish(&["x:80".into()]).is_err());
    }

    #[test]
    fn container_net_refuses_ports_without_a_network() {
        let dir = tempfile::tempdir().unwrap();
        let nets = Networks::open(dir.path()).unwrap();
        let mut c = ContainerConfig {
            name: "a".into(),
            ..ContainerConfig::default()
        };
        let req = NetRequest {
            network: Some("none".into()),
            publish: vec!["8080:80".into()],
            aliases: Vec::new(),
        };
        let e = wire(&nets, &"0".repeat(64), &mut c, &req).unwrap_err();
        assert!(e.to_string().contains("need a network"), "{e}");
        let req = NetRequest {
            network: Some("nosuchnet".into()),
            ..NetRequest::default()
        };
        let e = wire(&nets, &"0".repeat(64), &mut c, &req).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        assert!(!dir.path().join("netns").join("0".repeat(64)).exists());
    }
}
