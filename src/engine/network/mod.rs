//! Networks: bridges, endpoints, addresses, embedded DNS, published ports.
//!
//! A tug network is a Linux *bridge* (a virtual switch in the host's network namespace) with
//! the network's gateway address on it. A container joins it through a *veth pair* (two
//! virtual interfaces joined back to back): one end is a port of the bridge, the other is moved
//! into the container's network namespace and named `eth0`, `eth1`, …. Outbound traffic is
//! masqueraded by nftables; names are answered by a DNS server per network bound on the
//! gateway; published ports are proxied from the host by a process per container.
//!
//! State, all written atomically (temp file + rename; fsynced unless noted):
//! - `<root>/networks/<name>/network.json` — the network ([`NetworkInfo`]);
//! - `<root>/networks/<name>/endpoints.json` — its endpoints (container id → [`Endpoint`];
//!   renamed into place but not fsynced, see [`Networks::reconcile`] and `write_endpoints`);
//! - `<root>/networks/<name>/dns.json` — the DNS server's records (derived from endpoints);
//! - `<root>/networks/<name>/dns.pid` — the DNS server process;
//! - `<root>/networks/<name>/ipam.json` — the last address handed out (allocation goes round);
//! - `<root>/netns/<container id>` — the container's namespace (a bind mount);
//! - `<root>/ports/<container id>.json` — published ports and the proxy process;
//! - `/run/tug/networks/<bridge>.json` — the host-wide registry (see [`ipam`]).
//!
//! Mutations take `<root>/networks/.lock` (and, for network creation and removal, the host-wide
//! lock after it, never the other way round). Every step writes its record *before* it makes
//! the kernel object, so [`Networks::reconcile`] can find and finish or undo whatever a killed
//! command left half done.
//!
//! `Networks` is split by concern: `validate` (names, MACs, keys), `records` (the files
//! above, reading and writing), `kernel` (bridges, rules, namespaces, veths, DNS servers and
//! proxies: create, connect, disconnect, remove) and `repair` (`reconcile`, the registry's
//! stale entries, [`Networks::gc_netns`], helpers nobody recorded).

pub mod dns;
pub mod files;
pub mod helper;
pub mod ipam;
mod kernel;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod ports;
mod records;
mod repair;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use self::helper::ProcId;
use self::ipam::{HostEntry, HostLock, Ipv4Net};
pub use self::kernel::NetnsClaim;
pub use self::ports::{PortMapping, Protocol, Published};
pub use self::records::write_atomic;
use self::records::{read_json, write_derived, write_json};
use self::repair::kill_unrecorded_helpers;
use self::validate::{
    check_key, driver_options, gateway_in, ip_range_in, mac_string, parse_mac, validate_name,
};

/// Errors of the network engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("nft: {0}")]
    Nft(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Conflict(String),
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network {0} already exists")]
    Exists(String),
    #[error("network {name} is in use by {containers}")]
    InUse { name: String, containers: String },
    #[error("service {service}: host port {port} is already in use")]
    PortTaken { service: String, port: String },
    #[error("helper process: {0}")]
    Helper(String),
    #[error("state file {0}: {1}")]
    State(String, String),
}

/// Result of the network engine.
pub type Result<T> = std::result::Result<T, Error>;

/// What a network should be (compose's `networks:` entry).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub internal: bool,
    /// `bridge` (default) is the only driver.
    #[serde(default)]
    pub driver: Option<String>,
    /// Bridge options: `com.docker.network.driver.mtu` (or `mtu`),
    /// `com.docker.network.bridge.name` (or `bridge_name`).
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default)]
    pub enable_ipv6: bool,
    /// `ipam.config[0].subnet` / `gateway` / `ip_range`.
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ip_range: Option<String>,
}

/// A network as it exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Ipv4Net,
    pub internal: bool,
    pub mtu: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub driver_opts: BTreeMap<String, String>,
    /// Resolvers the DNS server forwards unknown names to.
    pub dns_upstreams: Vec<String>,
    pub created: String,
}

/// How a container joins a network (compose's `services.*.networks.*`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub container_id: String,
    pub container_name: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub ipv4_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub ipv6_address: Option<String>,
    #[serde(default)]
    pub mac_address: Option<String>,
    /// Higher first; the highest-priority non-internal network gets the default route.
    #[serde(default)]
    pub priority: i32,
    /// The container's `dns:` servers (used by the embedded server for its questions).
    #[serde(default)]
    pub dns: Vec<String>,
}

/// A container's attachment to one network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub container_id: String,
    pub container_name: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    /// Interface name inside the container (`eth0`, …).
    pub ifname: String,
    /// Host end of the veth pair.
    pub host_veth: String,
    pub netns: PathBuf,
    /// Names the DNS server answers with this address.
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub dns_upstreams: Vec<String>,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// A container whose network records are gone but whose namespace and veths are left for
/// [`Networks::finish_detached`] (see [`Networks::detach_all`]).
#[derive(Debug)]
#[must_use = "a detached container's namespace is removed by Networks::finish_detached"]
pub struct Detached {
    netns: PathBuf,
    veths: Vec<String>,
}

/// The network engine of one state root.
#[derive(Debug, Clone)]
pub struct Networks {
    root: PathBuf,
    exe: PathBuf,
    upstreams: Option<Vec<String>>,
}

/// Held while mutating network state of a root.
struct RootLock {
    _f: nix::fcntl::Flock<std::fs::File>,
}

impl Networks {
    /// Opens the network state of `root` (created on demand).
    pub fn open(root: &Path) -> Result<Self> {
        let root = crate::engine::root::StateRoot::at(root)
            .map_err(|e| Error::Io(format!("resolve {}", root.display()), e))?;
        Self::open_in(&root)
    }

    /// The networks of an opened state root.
    ///
    /// # Errors
    /// The store's directory cannot be made, or tug's executable cannot be found.
    pub fn open_in(root: &crate::engine::root::StateRoot) -> Result<Self> {
        let dir = root.networks();
        crate::engine::private::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("create {}", dir.display()), e))?;
        let exe =
            std::env::current_exe().map_err(|e| Error::Io("find the tug executable".into(), e))?;
        Ok(Self {
            root: root.path().to_path_buf(),
            exe,
            upstreams: None,
        })
    }

    /// Uses `exe` (a tug binary) for helper processes instead of the current executable (for
    /// tests that use the library from another binary).
    #[must_use]
    pub fn with_helper_exe(mut self, exe: &Path) -> Self {
        self.exe = exe.to_path_buf();
        self
    }

    /// Resolvers new networks forward unknown names to (instead of `TUG_DNS_UPSTREAM` or the
    /// host's resolv.conf).
    #[must_use]
    pub fn with_dns_upstreams(mut self, upstreams: Vec<String>) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> Result<RootLock> {
        let p = self.root.join("networks/.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| Error::Io(format!("open {}", p.display()), e))?;
        let f = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::Io(format!("lock {}", p.display()), e.into()))?;
        Ok(RootLock { _f: f })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join("networks").join(name)
    }

    /// The namespace path of a container.
    pub fn netns_path(&self, container_id: &str) -> PathBuf {
        self.root.join("netns").join(container_id)
    }

    /// The namespace of a container if it exists (for `network_mode: container:`/`service:`).
    pub fn netns_of(&self, container_id: &str) -> Option<PathBuf> {
        let p = self.netns_path(container_id);
        netns::is_mounted(&p).then_some(p)
    }

    fn ports_path(&self, container_id: &str) -> PathBuf {
        self.root.join("ports").join(format!("{container_id}.json"))
    }

    /// /etc/hosts of a container (`spec.ip`/`gateway` are usually its first endpoint's).
    pub fn hosts_file(spec: &files::HostsSpec) -> Result<String> {
        files::hosts_file(spec)
    }

    /// /etc/resolv.conf of a container.
    pub fn resolv_conf(spec: &files::ResolvSpec) -> String {
        files::resolv_conf(spec)
    }
}
