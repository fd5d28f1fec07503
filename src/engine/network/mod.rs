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

pub mod dns;
pub mod files;
pub mod helper;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod ports;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use self::helper::ProcId;
use self::ipam::{HostEntry, HostLock, Ipv4Net};
pub use self::ports::{PortMapping, Protocol, Published};

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

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename
/// (nothing when the file already holds `bytes`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, true)
}

/// Like [`write_atomic`] without the fsync, for derived files that `reconcile` regenerates
/// (DNS records, the allocation hint): readers still never see a torn file.
fn write_derived(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, false)
}

fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    // Most writes (reconcile at every command) find the file as it should be: a read is
    // cheaper than a temp file, an fsync and a rename.
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let dir = path
        .parent()
        .ok_or_else(|| Error::Invalid(format!("{} has no parent", path.display())))?;
    crate::engine::private::create_dir_all(dir)
        .map_err(|e| Error::Io(format!("create {}", dir.display()), e))?;
    crate::engine::private::write_atomic(path, bytes, crate::engine::private::FILE_MODE, sync)
        .map_err(|e| Error::Io(format!("write {}", path.display()), e))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v)
        .map_err(|e| Error::State(path.display().to_string(), e.to_string()))?;
    write_atomic(path, &bytes)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::State(path.display().to_string(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(format!("read {}", path.display()), e)),
    }
}

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

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid network name {name:?}: use letters, digits, '_', '-', '.' (starting with a letter or digit)"
        )))
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || Error::Invalid(format!("mac_address {s:?} is not like 02:42:ac:11:00:02"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if m[0] & 1 == 1 {
        return Err(Error::Invalid(format!(
            "mac_address {s:?} is a multicast address"
        )));
    }
    Ok(m)
}

fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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
        crate::engine::private::create_dir_all(&root.join("networks"))
            .map_err(|e| Error::Io(format!("create {}", root.join("networks").display()), e))?;
        let root = std::fs::canonicalize(root)
            .map_err(|e| Error::Io(format!("resolve {}", root.display()), e))?;
        let exe =
            std::env::current_exe().map_err(|e| Error::Io("find the tug executable".into(), e))?;
        Ok(Self {
            root,
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

    fn load(&self, name: &str) -> Result<NetworkInfo> {
        validate_name(name)?;
        match read_json(&self.dir(name).join("network.json")) {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(Error::NotFound(name.to_string())),
            Err(Error::State(path, e)) => Err(Error::State(
                path,
                format!(
                    "damaged ({e}); restore the file, or remove the network with \
                     `tug network rm {name}` (or `tug down` of its project) and let it be made \
                     again"
                ),
            )),
            Err(e) => Err(e),
        }
    }

    fn endpoints_of(&self, name: &str) -> Result<BTreeMap<String, Endpoint>> {
        let p = self.dir(name).join("endpoints.json");
        match read_json(&p) {
            Ok(eps) => Ok(eps.unwrap_or_default()),
            // Torn by a system crash (see `write_endpoints`): every endpoint it held died
            // with that boot.
            Err(Error::State(..)) if written_before_boot(&p) => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    fn save_endpoints(&self, net: &NetworkInfo, eps: &BTreeMap<String, Endpoint>) -> Result<()> {
        self.write_endpoints(&net.name, eps)?;
        self.write_records(net, eps)
    }

    /// Writes a network's endpoints atomically (temp + rename) but without fsync: the
    /// records only describe kernel objects (veths, namespaces) that a system crash destroys
    /// too, and a killed process cannot tear a renamed file. After a system crash the file may
    /// be old (reconcile drops endpoints whose namespace is gone) or torn: a file that does
    /// not parse and was last written before the current boot is read as empty
    /// ([`written_before_boot`]). Dropping the fsync takes most of the cost off wiring a
    /// container.
    fn write_endpoints(&self, network: &str, eps: &BTreeMap<String, Endpoint>) -> Result<()> {
        let p = self.dir(network).join("endpoints.json");
        let bytes = serde_json::to_vec_pretty(eps)
            .map_err(|e| Error::State(p.display().to_string(), e.to_string()))?;
        write_derived(&p, &bytes)
    }

    fn write_records(&self, net: &NetworkInfo, eps: &BTreeMap<String, Endpoint>) -> Result<()> {
        let records = dns::Records {
            upstreams: net.dns_upstreams.clone(),
            endpoints: eps
                .values()
                .map(|e| dns::DnsEndpoint {
                    ip: e.ip,
                    container_id: e.container_id.clone(),
                    names: e.dns_names.clone(),
                    upstreams: e.dns_upstreams.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&records)
            .map_err(|e| Error::State("dns.json".into(), e.to_string()))?;
        write_derived(&self.dir(&net.name).join("dns.json"), &bytes)
    }

    /// Names of every network of this root.
    fn names(&self) -> Result<Vec<String>> {
        let dir = self.root.join("networks");
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&dir)
            .map_err(|e| Error::Io(format!("read {}", dir.display()), e))?
            .flatten()
        {
            let name = ent.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && ent.path().join("network.json").exists() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every network of this root with a readable record. One whose record is damaged is
    /// left out (see [`Networks::damaged`]; using it fails naming the file, removing it
    /// works), so it never stops work on the others.
    pub fn list(&self) -> Result<Vec<NetworkInfo>> {
        let mut out = Vec::new();
        for n in self.names()? {
            match self.load(&n) {
                Ok(info) => out.push(info),
                Err(Error::State(..) | Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The networks whose record cannot be read: (name, what is wrong and what to do).
    pub fn damaged(&self) -> Vec<(String, String)> {
        let Ok(names) = self.names() else {
            return Vec::new();
        };
        names
            .into_iter()
            .filter_map(|n| match self.load(&n) {
                Err(e @ Error::State(..)) => Some((n, e.to_string())),
                _ => None,
            })
            .collect()
    }

    /// The endpoints of every network whose files can be read, for work that spans all
    /// networks (a container's removal): a damaged file of one network does not stop it.
    fn readable_endpoints(&self) -> Result<Vec<(String, BTreeMap<String, Endpoint>)>> {
        Ok(self
            .names()?
            .into_iter()
            .filter_map(|n| self.endpoints_of(&n).ok().map(|eps| (n, eps)))
            .collect())
    }

    /// One network.
    pub fn inspect(&self, name: &str) -> Result<NetworkInfo> {
        self.load(name)
    }

    /// The endpoints of a network.
    pub fn endpoints(&self, name: &str) -> Result<Vec<Endpoint>> {
        self.load(name)?;
        Ok(self.endpoints_of(name)?.into_values().collect())
    }

    /// An `external: true` network: it must exist.
    pub fn require_external(&self, name: &str) -> Result<NetworkInfo> {
        self.load(name).map_err(|e| match e {
            Error::NotFound(n) => Error::NotFound(format!(
                "{n} is declared external but does not exist (create it with `tug network create {n}`)"
            )),
            e => e,
        })
    }

    /// Creates a network: subnet, bridge, rules, DNS server.
    pub fn create(&self, spec: &NetworkSpec) -> Result<NetworkInfo> {
        validate_name(&spec.name)?;
        if spec.enable_ipv6 {
            return Err(Error::Unsupported(format!(
                "network {}: enable_ipv6 is not supported yet",
                spec.name
            )));
        }
        if let Some(d) = spec.driver.as_deref()
            && d != "bridge"
        {
            return Err(Error::Unsupported(format!(
                "network {}: driver {d:?} is not supported (only bridge)",
                spec.name
            )));
        }
        let mut mtu = None;
        let mut bridge_opt = None;
        for (k, v) in &spec.driver_opts {
            match k.as_str() {
                "com.docker.network.driver.mtu" | "mtu" => {
                    mtu = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|m| (68..=65535).contains(m))
                            .ok_or_else(|| {
                                Error::Invalid(format!("network {}: bad mtu {v:?}", spec.name))
                            })?,
                    );
                }
                "com.docker.network.bridge.name" | "bridge_name" => {
                    if v.is_empty()
                        || v.len() > 15
                        || !v
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                    {
                        return Err(Error::Invalid(format!(
                            "network {}: bridge name {v:?} must be 1 to 15 letters, digits, '_', '-' or '.'",
                            spec.name
                        )));
                    }
                    bridge_opt = Some(v.clone());
                }
                "com.docker.network.bridge.enable_ip_masquerade"
                | "com.docker.network.bridge.enable_icc"
                | "com.docker.network.bridge.host_binding_ipv4" => {}
                other => {
                    return Err(Error::Unsupported(format!(
                        "network {}: driver option {other:?} is not supported",
                        spec.name
                    )));
                }
            }
        }
        let requested = spec
            .subnet
            .as_deref()
            .map(str::parse::<Ipv4Net>)
            .transpose()?;
        let _l = self.lock()?;
        if self.dir(&spec.name).join("network.json").exists() {
            return Err(Error::Exists(spec.name.clone()));
        }
        let host = HostLock::take()?;
        self.prune_registry(&host)?;
        let registered = host.entries()?;
        let host_prefixes = ipam::host_prefixes()?;
        let pool = ipam::Pool::from_env()?;
        if let Some(r) = requested
            && r.prefix > 30
        {
            return Err(Error::Invalid(format!(
                "network {}: subnet {r} is too small (at most /30)",
                spec.name
            )));
        }
        let subnet = ipam::choose_subnet(requested, &pool, &registered, &host_prefixes)?;
        let gateway = match spec.gateway.as_deref() {
            Some(g) => {
                let g: Ipv4Addr = g.parse().map_err(|_| {
                    Error::Invalid(format!(
                        "network {}: gateway {g:?} is not an IPv4 address",
                        spec.name
                    ))
                })?;
                if !subnet.contains(g)
                    || u32::from(g) == subnet.first()
                    || u32::from(g) == subnet.last()
                {
                    return Err(Error::Invalid(format!(
                        "network {}: gateway {g} is not a host address of {subnet}",
                        spec.name
                    )));
                }
                g
            }
            None => Ipv4Addr::from(subnet.first() + 1),
        };
        let ip_range = match spec.ip_range.as_deref() {
            Some(r) => {
                let r: Ipv4Net = r.parse()?;
                if !(subnet.first() <= r.first() && r.last() <= subnet.last()) {
                    return Err(Error::Invalid(format!(
                        "network {}: ip_range {r} is not inside {subnet}",
                        spec.name
                    )));
                }
                r
            }
            None => subnet,
        };
        let taken: BTreeSet<String> = registered.iter().map(|e| e.bridge.clone()).collect();
        let bridge = match bridge_opt {
            Some(b) => {
                if taken.contains(&b) || netlink::link_exists(&b)? {
                    return Err(Error::Conflict(format!(
                        "network {}: bridge name {b} is already in use on this host",
                        spec.name
                    )));
                }
                b
            }
            None => ipam::bridge_name(&self.root, &spec.name, &taken)?,
        };
        let upstreams = match self.upstreams.clone() {
            Some(u) => u,
            None => match std::env::var("TUG_DNS_UPSTREAM") {
                Ok(s) if !s.trim().is_empty() => s
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect(),
                _ => dns::host_upstreams(),
            },
        };
        for u in &upstreams {
            if dns::parse_upstream(u).is_none() {
                return Err(Error::Invalid(format!(
                    "dns upstream {u:?} is not IP or IP:PORT"
                )));
            }
        }
        let info = NetworkInfo {
            name: spec.name.clone(),
            id: hex::encode(rand::random::<[u8; 32]>()),
            bridge: bridge.clone(),
            subnet,
            gateway,
            ip_range,
            internal: spec.internal,
            mtu,
            labels: spec.labels.clone(),
            driver_opts: spec.driver_opts.clone(),
            dns_upstreams: upstreams,
            created: now(),
        };
        // Record first (state, then registry), then make the kernel objects.
        write_json(&self.dir(&spec.name).join("network.json"), &info)?;
        self.register_host(&host, &info)?;
        let made = self
            .save_endpoints(&info, &BTreeMap::new())
            .and_then(|()| self.realize(&info))
            .and_then(|()| self.register_host(&host, &info));
        if let Err(e) = made {
            let _ = self.teardown(&info);
            let _ = host.unregister(&bridge);
            let _ = std::fs::remove_dir_all(self.dir(&spec.name));
            return Err(e);
        }
        Ok(info)
    }

    /// Registers (or refreshes) the network in the host registry, with its DNS server.
    fn register_host(&self, host: &HostLock, info: &NetworkInfo) -> Result<()> {
        host.register(&HostEntry {
            root: self.root.clone(),
            network: info.name.clone(),
            bridge: info.bridge.clone(),
            subnet: info.subnet,
            dns: self.dns_pid(&info.name)?,
        })
    }

    /// Makes the kernel objects of a recorded network (idempotent).
    fn realize(&self, info: &NetworkInfo) -> Result<()> {
        netlink::ensure_bridge(&info.bridge, info.mtu, info.gateway, info.subnet.prefix)?;
        if info.internal {
            // tug gives containers no IPv6; without an IPv6 address of its own, the bridge
            // offers an internal network no way to the host's IPv6 services either.
            let _ = std::fs::write(
                format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", info.bridge),
                "1",
            );
        }
        nft::install(&nft::NetRules {
            bridge: info.bridge.clone(),
            subnet: info.subnet.to_string(),
            gateway: info.gateway.to_string(),
            internal: info.internal,
        })?;
        if !info.internal {
            nft::enable_ip_forward()?;
        }
        self.ensure_dns(info)
    }

    fn dns_pid(&self, name: &str) -> Result<Option<ProcId>> {
        match read_json(&self.dir(name).join("dns.pid")) {
            // A damaged pid file names no server: a running one is found by its command
            // line (`kill_unrecorded_helpers`) before another is started.
            Err(Error::State(..)) => Ok(None),
            other => other,
        }
    }

    /// The port record of a container; a damaged one reads as none (its proxy is found by
    /// its command line, `kill_unrecorded_helpers`).
    fn port_record(&self, path: &Path) -> Result<Option<ports::PortRecord>> {
        match read_json::<ports::PortRecord>(path) {
            Err(Error::State(..)) => Ok(None),
            other => other,
        }
    }

    /// Starts the network's DNS server unless it runs.
    fn ensure_dns(&self, info: &NetworkInfo) -> Result<()> {
        if let Some(p) = self.dns_pid(&info.name)?
            && p.alive()
        {
            return Ok(());
        }
        // A command killed between starting the server and recording its pid leaves a
        // server nobody knows, holding the port: end it first.
        kill_unrecorded_helpers(&self.dir(&info.name).join("dns.json"));
        let addr = SocketAddr::new(IpAddr::V4(info.gateway), 53);
        let udp = std::net::UdpSocket::bind(addr)
            .map_err(|e| Error::Io(format!("network {}: bind dns on {addr}/udp", info.name), e))?;
        let tcp = bind_tcp_reuse(addr)
            .map_err(|e| Error::Io(format!("network {}: bind dns on {addr}/tcp", info.name), e))?;
        let dir = self.dir(&info.name);
        let args = vec![
            "network-dns".to_string(),
            "--records".to_string(),
            dir.join("dns.json").display().to_string(),
            "--udp-fd".to_string(),
            udp.as_raw_fd().to_string(),
            "--tcp-fd".to_string(),
            tcp.as_raw_fd().to_string(),
        ];
        let id = helper::spawn(
            &self.exe,
            &args,
            &[udp.as_raw_fd(), tcp.as_raw_fd()],
            &dir.join("dns.log"),
        )?;
        write_json(&dir.join("dns.pid"), &id)
    }

    /// Removes the kernel objects and helpers of a network (not its state files).
    fn teardown(&self, info: &NetworkInfo) -> Result<()> {
        // Deleting a bridge waits in the kernel for every pending RCU callback (tens of
        // milliseconds), and the rules' removal may start a process: both at once.
        // Its DNS server takes milliseconds to exit (closing its sockets): a third task.
        let dns = self.dns_pid(&info.name)?;
        let (links, rules) = std::thread::scope(|s| {
            let rules = s.spawn(|| nft::remove(&info.bridge, Some(info.internal)));
            let helpers = s.spawn(|| {
                if let Some(p) = dns {
                    p.stop();
                }
                kill_unrecorded_helpers(&self.dir(&info.name).join("dns.json"));
            });
            let links = (|| {
                // The bridge, the veths of its endpoints and tug's veths still plugged into
                // it (containers being taken down, see `detach_all`) go in one request:
                // the kernel then waits for its grace periods once for all of them.
                let mut names: Vec<String> = self
                    .endpoints_of(&info.name)
                    .unwrap_or_default()
                    .into_values()
                    .map(|ep| ep.host_veth)
                    .collect();
                let all = netlink::links(None)?;
                if let Some(br) = all.iter().find(|l| l.name == info.bridge) {
                    names.extend(
                        all.iter()
                            .filter(|l| l.master == Some(br.index) && l.name.starts_with("tv"))
                            .map(|l| l.name.clone()),
                    );
                }
                names.push(info.bridge.clone());
                netlink::delete_links(&names)
            })();
            let rules = rules
                .join()
                .unwrap_or_else(|_| Err(Error::Nft("removing the rules panicked".into())));
            let _ = helpers.join();
            (links, rules)
        });
        links.and(rules)
    }

    /// Removes a network. Fails while containers are connected unless `force`, which
    /// disconnects them (their namespaces stay).
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        let info = match self.load(name) {
            Ok(info) => info,
            Err(Error::State(..)) => return self.remove_damaged(name),
            Err(e) => return Err(e),
        };
        let _l = self.lock()?;
        let eps = match self.endpoints_of(name) {
            Ok(eps) => eps,
            // An endpoints file that cannot be read lists nothing: the network is removed as
            // asked (`down` has removed its containers; whatever is still plugged into the
            // bridge loses it, with the veths that go with the bridge).
            Err(Error::State(..)) => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        if !eps.is_empty() && !force {
            let names: Vec<String> = eps.values().map(|e| e.container_name.clone()).collect();
            return Err(Error::InUse {
                name: name.to_string(),
                containers: names.join(", "),
            });
        }
        let host = HostLock::take()?;
        self.teardown(&info)?;
        host.unregister(&info.bridge)?;
        let dir = self.dir(name);
        std::fs::remove_dir_all(&dir).map_err(|e| Error::Io(format!("remove {}", dir.display()), e))
    }

    /// Removes a network whose record is damaged: its bridge, rules and DNS server are found
    /// through the host registry (which names them for this root and network), then its
    /// directory goes. Whatever still uses it loses it: this is what its owner asked for.
    fn remove_damaged(&self, name: &str) -> Result<()> {
        let _l = self.lock()?;
        let host = HostLock::take()?;
        let entry = host
            .entries()?
            .into_iter()
            .find(|e| e.root == self.root && e.network == name);
        if let Some(e) = entry {
            if let Some(p) = e.dns {
                p.stop();
            }
            kill_unrecorded_helpers(&self.dir(name).join("dns.json"));
            let all = netlink::links(None)?;
            let mut names: Vec<String> = Vec::new();
            if let Some(br) = all.iter().find(|l| l.name == e.bridge) {
                names.extend(
                    all.iter()
                        .filter(|l| l.master == Some(br.index) && l.name.starts_with("tv"))
                        .map(|l| l.name.clone()),
                );
                names.push(e.bridge.clone());
            }
            if !names.is_empty() {
                netlink::delete_links(&names)?;
            }
            nft::remove(&e.bridge, None)?;
            host.unregister(&e.bridge)?;
        }
        let dir = self.dir(name);
        std::fs::remove_dir_all(&dir).map_err(|e| Error::Io(format!("remove {}", dir.display()), e))
    }

    /// Removes every network without endpoints; returns their names.
    pub fn prune(&self, keep: &dyn Fn(&NetworkInfo) -> bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for n in self.list()? {
            if keep(&n) || !self.endpoints_of(&n.name)?.is_empty() {
                continue;
            }
            self.remove(&n.name, false)?;
            removed.push(n.name);
        }
        Ok(removed)
    }

    /// Creates the network namespace of a container at `<root>/netns/<id>` (with `lo` up).
    pub fn create_netns(&self, container_id: &str) -> Result<PathBuf> {
        if container_id.is_empty() || container_id.contains('/') || container_id.starts_with('.') {
            return Err(Error::Invalid(format!("bad container id {container_id:?}")));
        }
        let p = self.netns_path(container_id);
        netns::create(&p)?;
        netlink::loopback_up(&p)?;
        Ok(p)
    }

    /// Connects the namespace `netns` to network `network`.
    pub fn connect(
        &self,
        netns_path: &Path,
        network: &str,
        spec: &EndpointSpec,
    ) -> Result<Endpoint> {
        let net = self.load(network)?;
        if spec.ipv6_address.is_some() {
            return Err(Error::Unsupported(format!(
                "network {network}: ipv6_address is not supported yet"
            )));
        }
        if !netns::is_mounted(netns_path) && !netns_path.starts_with("/proc") {
            return Err(Error::Invalid(format!(
                "{} is not a network namespace",
                netns_path.display()
            )));
        }
        let _l = self.lock()?;
        // The bridge and DNS server may be gone (reboot, crash): bring them back.
        let dns_alive = self.dns_pid(network)?.is_some_and(|p| p.alive());
        if !dns_alive || !netlink::link_exists(&net.bridge)? {
            self.realize(&net)?;
            self.register_host(&HostLock::take()?, &net)?;
        } else if first_use_in_process(&net.bridge) {
            // Docker may have started since the network was made: make sure its FORWARD
            // drop does not cut the bridge (once per network and process, it costs an nft run).
            nft::ensure_forward_accepts_cached(&net.bridge, net.internal)?;
        }
        let mut eps = self.endpoints_of(network)?;
        if eps.contains_key(&spec.container_id) {
            return Err(Error::Conflict(format!(
                "container {} is already connected to network {network}",
                spec.container_name
            )));
        }
        let used: BTreeSet<Ipv4Addr> = eps.values().map(|e| e.ip).collect();
        let ip = match spec.ipv4_address {
            Some(ip) => {
                if !net.subnet.contains(ip)
                    || ip == net.gateway
                    || u32::from(ip) == net.subnet.first()
                    || u32::from(ip) == net.subnet.last()
                {
                    return Err(Error::Invalid(format!(
                        "ipv4_address {ip} is not a free host address of {} (network {network})",
                        net.subnet
                    )));
                }
                if let Some(o) = eps.values().find(|e| e.ip == ip) {
                    return Err(Error::Conflict(format!(
                        "ipv4_address {ip} on network {network} is already used by {}",
                        o.container_name
                    )));
                }
                ip
            }
            None => {
                let last: Option<Ipv4Addr> =
                    std::fs::read_to_string(self.dir(network).join("ipam.json"))
                        .ok()
                        .and_then(|t| t.trim().trim_matches('"').parse().ok());
                ipam::next_free(&net.subnet, &net.ip_range, net.gateway, &used, last).ok_or_else(
                    || {
                        Error::Conflict(format!(
                            "network {network}: no free address left in {}",
                            net.ip_range
                        ))
                    },
                )?
            }
        };
        write_derived(
            &self.dir(network).join("ipam.json"),
            ip.to_string().as_bytes(),
        )?;
        let mac = match &spec.mac_address {
            Some(m) => parse_mac(m)?,
            None => {
                let o = ip.octets();
                [0x02, 0x42, o[0], o[1], o[2], o[3]]
            }
        };
        let (existing, has_default) = netlink::netns_view(netns_path)?;
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !existing.contains(n))
            .unwrap_or_else(|| "eth0".into());
        let h = ipam::short_hash(
            &[
                self.root.as_os_str().as_encoded_bytes(),
                spec.container_id.as_bytes(),
                network.as_bytes(),
            ],
            10,
        );
        let mut names: Vec<String> = Vec::new();
        let mut add = |n: &str| {
            let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        };
        add(&spec.container_name);
        if let Some(s) = &spec.service {
            add(s);
            if let Some(p) = &spec.project {
                add(&format!("{s}.{p}"));
            }
        }
        for a in &spec.aliases {
            add(a);
        }
        if let Some(hn) = &spec.hostname {
            add(hn);
        }
        add(&spec.container_id.chars().take(12).collect::<String>());
        let ep = Endpoint {
            network: network.to_string(),
            container_id: spec.container_id.clone(),
            container_name: spec.container_name.clone(),
            ip,
            prefix: net.subnet.prefix,
            gateway: net.gateway,
            mac: mac_string(&mac),
            ifname: ifname.clone(),
            host_veth: format!("tv{h}"),
            netns: netns_path.to_path_buf(),
            dns_names: names,
            dns_upstreams: spec.dns.clone(),
        };
        let default_route = !net.internal && !has_default;
        // Record first, so a crash in the middle is found by reconcile.
        eps.insert(spec.container_id.clone(), ep.clone());
        self.write_endpoints(network, &eps)?;
        let plan = netlink::VethPlan {
            host: ep.host_veth.clone(),
            bridge: net.bridge.clone(),
            netns: netns_path.to_path_buf(),
            ifname,
            mac,
            mtu: net.mtu,
            ip,
            prefix: net.subnet.prefix,
            gateway: net.gateway,
            default_route,
        };
        if let Err(e) = netlink::create_endpoint(&plan) {
            eps.remove(&spec.container_id);
            let _ = self.write_endpoints(network, &eps);
            return Err(e);
        }
        self.write_records(&net, &eps)?;
        Ok(ep)
    }

    /// Connects to several networks, highest `priority` first (that one gets the default
    /// route), then by network name.
    pub fn connect_all(
        &self,
        netns_path: &Path,
        mut networks: Vec<(String, EndpointSpec)>,
    ) -> Result<Vec<Endpoint>> {
        networks.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then_with(|| a.0.cmp(&b.0)));
        let mut out = Vec::new();
        for (n, spec) in &networks {
            match self.connect(netns_path, n, spec) {
                Ok(ep) => out.push(ep),
                Err(e) => {
                    if let Some(first) = networks.first() {
                        let _ = self.disconnect_endpoints(&first.1.container_id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// The endpoints of one container on all networks.
    pub fn endpoints_of_container(&self, container_id: &str) -> Result<Vec<Endpoint>> {
        let mut out = Vec::new();
        for (_, mut eps) in self.readable_endpoints()? {
            if let Some(e) = eps.remove(container_id) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Removes one endpoint of a container (`tug network disconnect`): its veth and DNS
    /// records on `network`; the namespace and the container's other endpoints stay.
    /// Returns the endpoint that was removed.
    pub fn disconnect(&self, network: &str, container_id: &str) -> Result<Endpoint> {
        let net = self.load(network)?;
        let _l = self.lock()?;
        let mut eps = self.endpoints_of(network)?;
        let Some(ep) = eps.remove(container_id) else {
            return Err(Error::Conflict(format!(
                "container {container_id} is not connected to network {network}"
            )));
        };
        // Record first: a crash after it leaves an orphan veth that reconcile deletes.
        self.save_endpoints(&net, &eps)?;
        netlink::delete_link(&ep.host_veth)?;
        Ok(ep)
    }

    /// Removes a container's endpoints (veths, DNS records) but keeps its namespace.
    pub fn disconnect_endpoints(&self, container_id: &str) -> Result<()> {
        let _l = self.lock()?;
        self.disconnect_locked(container_id)
    }

    fn disconnect_locked(&self, container_id: &str) -> Result<()> {
        for veth in self.forget_endpoints_locked(container_id)? {
            netlink::delete_link(&veth)?;
        }
        Ok(())
    }

    /// Drops a container's endpoint records (addresses, DNS records) on every network and
    /// returns the host ends of its veth pairs, which still exist.
    fn forget_endpoints_locked(&self, container_id: &str) -> Result<Vec<String>> {
        let mut veths = Vec::new();
        for (n, mut eps) in self.readable_endpoints()? {
            if let Some(ep) = eps.remove(container_id) {
                // A network whose record is damaged keeps its stale entry; the veth still
                // goes (with the namespace), and the network's removal takes the rest.
                if let Ok(net) = self.load(&n) {
                    self.save_endpoints(&net, &eps)?;
                }
                veths.push(ep.host_veth);
            }
        }
        Ok(veths)
    }

    /// Everything of a container: endpoints on every network, DNS records, published ports
    /// (proxy stopped), and its namespace. Missing pieces are fine (idempotent).
    ///
    /// The veths are not deleted one by one: removing the namespace drops its last
    /// reference, and the kernel destroys every pair with a leg in it, batching the
    /// namespaces that die together under one RCU grace period, where each explicit link
    /// deletion waits for a grace period of its own (about 20 ms against 4 ms here). This
    /// waits, outside the store lock, until the host ends are gone, and deletes any that is
    /// still there after a while (a namespace kept alive by a stray process).
    pub fn disconnect_all(&self, container_id: &str) -> Result<()> {
        let veths = {
            let _l = self.lock()?;
            let veths = self.forget_endpoints_locked(container_id)?;
            self.unpublish_locked(container_id)?;
            netns::remove(&self.netns_path(container_id))?;
            veths
        };
        self.wait_links_gone(&veths)
    }

    /// The first half of [`Networks::disconnect_all`] for a container that is about to be
    /// removed together with its networks (`down`): its endpoint records, DNS names and
    /// published ports go, but its namespace and veths stay for [`Networks::finish_detached`],
    /// so that the veths are deleted in the same request as their bridge (see
    /// [`netlink::delete_links`]) rather than by the kernel's teardown of each namespace,
    /// which would wait for grace periods of its own while the bridge is being deleted. A
    /// command killed in between leaves a namespace that `gc_netns` removes and veths that
    /// `reconcile` deletes.
    pub fn detach_all(&self, container_id: &str) -> Result<Detached> {
        let _l = self.lock()?;
        let veths = self.forget_endpoints_locked(container_id)?;
        self.unpublish_locked(container_id)?;
        Ok(Detached {
            netns: self.netns_path(container_id),
            veths,
        })
    }

    /// Finishes containers detached by [`Networks::detach_all`]: deletes their veths that
    /// are still there (those of networks that stay) in one request, then their namespaces.
    pub fn finish_detached(&self, detached: &[Detached]) -> Result<()> {
        let left: Vec<String> = detached
            .iter()
            .flat_map(|d| d.veths.iter())
            .filter(|v| Path::new("/sys/class/net").join(v).exists())
            .cloned()
            .collect();
        let deleted = if left.is_empty() {
            Ok(())
        } else {
            netlink::delete_links(&left)
        };
        // Each unmount waits for a grace period of its own: all at once.
        let removed = std::thread::scope(|s| {
            let handles: Vec<_> = detached
                .iter()
                .map(|d| s.spawn(|| netns::remove(&d.netns)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Netlink("removing a namespace panicked".into()))
                    })
                })
                .collect::<Result<Vec<()>>>()
        });
        deleted.and(removed.map(|_| ()))
    }

    /// Waits until the links `veths` are gone (the kernel destroys a pair once the namespace
    /// holding its other end dies; woken by link notifications), at most 2 s; deletes any
    /// still there then (a namespace kept alive by a stray process).
    fn wait_links_gone(&self, veths: &[String]) -> Result<()> {
        for v in netlink::wait_links_gone(veths, std::time::Duration::from_secs(2)) {
            netlink::delete_link(&v)?;
        }
        Ok(())
    }

    /// Publishes ports of a container: binds them on the host and starts its proxy towards
    /// `target` (the container's address on one of its networks). `service` names the
    /// service in errors. Returns the bound ports (random ones resolved).
    pub fn publish(
        &self,
        container_id: &str,
        service: &str,
        target: Ipv4Addr,
        maps: &[PortMapping],
    ) -> Result<Vec<Published>> {
        let _l = self.lock()?;
        self.unpublish_locked(container_id)?;
        if maps.is_empty() {
            return Ok(Vec::new());
        }
        let bound = ports::bind_all(service, maps)?;
        let rec = ports::PortRecord {
            container_id: container_id.to_string(),
            service: service.to_string(),
            target,
            ports: bound.iter().map(|(_, p)| p.clone()).collect(),
            proxy: None,
        };
        self.start_proxy(rec, bound)
    }

    fn start_proxy(
        &self,
        mut rec: ports::PortRecord,
        bound: Vec<(ports::Bound, Published)>,
    ) -> Result<Vec<Published>> {
        let path = self.ports_path(&rec.container_id);
        write_json(&path, &rec)?;
        let mut entries = Vec::new();
        let mut fds = Vec::new();
        for (b, p) in &bound {
            let fd = match b {
                ports::Bound::Tcp(l) => l.as_raw_fd(),
                ports::Bound::Udp(u) => u.as_raw_fd(),
            };
            fds.push(fd);
            entries.push(ports::ProxyEntry {
                fd,
                protocol: p.protocol,
                target: SocketAddr::new(IpAddr::V4(rec.target), p.container_port),
            });
        }
        let spec = serde_json::to_string(&entries)
            .map_err(|e| Error::State("proxy spec".into(), e.to_string()))?;
        let args = vec![
            "network-proxy".to_string(),
            "--record".to_string(),
            path.display().to_string(),
            "--spec".to_string(),
            spec,
        ];
        let log = self
            .root
            .join("ports")
            .join(format!("{}.log", rec.container_id));
        let id = match helper::spawn(&self.exe, &args, &fds, &log) {
            Ok(id) => id,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        drop(bound);
        rec.proxy = Some(id);
        write_json(&path, &rec)?;
        Ok(rec.ports)
    }

    fn unpublish_locked(&self, container_id: &str) -> Result<()> {
        let path = self.ports_path(container_id);
        if let Some(p) = self.port_record(&path)?.and_then(|rec| rec.proxy) {
            p.stop();
        }
        if path.exists() {
            kill_unrecorded_helpers(&path);
            std::fs::remove_file(&path)
                .map_err(|e| Error::Io(format!("remove {}", path.display()), e))?;
        }
        let _ = std::fs::remove_file(self.root.join("ports").join(format!("{container_id}.log")));
        Ok(())
    }

    /// The published ports of a container (for `tug port` and `ps`).
    pub fn published(&self, container_id: &str) -> Result<Vec<Published>> {
        Ok(self
            .port_record(&self.ports_path(container_id))?
            .map(|r| r.ports)
            .unwrap_or_default())
    }

    /// /etc/hosts of a container (`spec.ip`/`gateway` are usually its first endpoint's).
    pub fn hosts_file(spec: &files::HostsSpec) -> Result<String> {
        files::hosts_file(spec)
    }

    /// /etc/resolv.conf of a container.
    pub fn resolv_conf(spec: &files::ResolvSpec) -> String {
        files::resolv_conf(spec)
    }

    /// Repairs what killed commands or reboots left: stale host registrations (with their
    /// bridges and rules), missing bridges/rules/DNS servers of recorded networks, endpoints
    /// whose veth or namespace is gone, orphan veths on tug bridges, dead port proxies.
    /// Problems that do not stop the command (a port proxy that cannot get its port back)
    /// are returned as warnings.
    pub fn reconcile(&self) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        let _l = self.lock()?;
        let host = HostLock::take()?;
        self.prune_registry(&host)?;
        let links = netlink::links(None)?;
        let infos = self.list()?;
        // Tables of internal networks made before they kept containers off the host.
        let chains = if infos.iter().any(|i| i.internal) {
            nft::ip_chains().ok()
        } else {
            None
        };
        for info in infos {
            let bridge = links.iter().find(|l| l.name == info.bridge);
            let outdated = info.internal
                && chains.as_ref().is_some_and(|cs| {
                    !cs.iter()
                        .any(|(t, c)| *t == info.bridge && c == nft::INTERNAL_INPUT)
                });
            if bridge.is_none() || outdated || !nft::table_exists(&info.bridge)? {
                self.realize(&info)?;
            } else {
                self.ensure_dns(&info)?;
                nft::ensure_forward_accepts_cached(&info.bridge, info.internal)?;
            }
            self.register_host(&host, &info)?;
            let mut eps = match self.endpoints_of(&info.name) {
                Ok(eps) => eps,
                Err(e) => {
                    // Nothing of this network's endpoints can be repaired; the others can.
                    warnings.push(format!("network {}: {e}", info.name));
                    continue;
                }
            };
            let before = eps.len();
            eps.retain(|_, ep| {
                let ok =
                    links.iter().any(|l| l.name == ep.host_veth) && netns::is_mounted(&ep.netns);
                if !ok {
                    let _ = netlink::delete_link(&ep.host_veth);
                }
                ok
            });
            if eps.len() != before {
                self.save_endpoints(&info, &eps)?;
            } else {
                self.write_records(&info, &eps)?;
            }
            if let Some(br) = bridge {
                for l in links
                    .iter()
                    .filter(|l| l.master == Some(br.index) && l.name.starts_with("tv"))
                {
                    if !eps.values().any(|e| e.host_veth == l.name) {
                        netlink::delete_link(&l.name)?;
                    }
                }
            }
        }
        drop(host);
        // Port proxies: restart dead ones; drop records of containers without namespace.
        let pdir = self.root.join("ports");
        if let Ok(rd) = std::fs::read_dir(&pdir) {
            for ent in rd.flatten() {
                let p = ent.path();
                if p.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let Some(rec) = self.port_record(&p)? else {
                    continue;
                };
                if rec.proxy.is_some_and(|x| x.alive()) {
                    continue;
                }
                // A container without endpoints any more (its namespace is gone) publishes
                // nothing: drop the record instead of reviving the proxy.
                if self.endpoints_of_container(&rec.container_id)?.is_empty() {
                    self.unpublish_locked(&rec.container_id)?;
                    continue;
                }
                let maps: Vec<PortMapping> = rec
                    .ports
                    .iter()
                    .map(|p| PortMapping {
                        host_ip: Some(p.host_ip),
                        host_port: p.host_port,
                        container_port: p.container_port,
                        protocol: p.protocol,
                    })
                    .collect();
                kill_unrecorded_helpers(&p);
                let restarted = ports::bind_all(&rec.service, &maps)
                    .and_then(|bound| self.start_proxy(rec, bound));
                if let Err(e) = restarted {
                    warnings.push(format!("restarting the port proxy: {e}"));
                }
            }
        }
        Ok(warnings)
    }

    /// Drops host registrations whose state root no longer has the network, deleting their
    /// bridges and rules.
    fn prune_registry(&self, host: &HostLock) -> Result<()> {
        for e in host.entries()? {
            let state = e
                .root
                .join("networks")
                .join(&e.network)
                .join("network.json");
            // Stale only when provably so: the root no longer has the network, or has it
            // with another bridge. A record that cannot be read is damaged, not gone: its
            // bridge, rules and DNS server stay until the network is removed.
            let alive = match read_json::<NetworkInfo>(&state) {
                Ok(Some(i)) => i.bridge == e.bridge,
                Ok(None) => false,
                Err(_) => true,
            };
            if !alive {
                if let Some(p) = e.dns {
                    p.stop();
                }
                netlink::delete_link(&e.bridge)?;
                nft::remove(&e.bridge, None)?;
                host.unregister(&e.bridge)?;
            }
        }
        Ok(())
    }

    /// Removes namespaces of containers that are not in `live` (and their endpoints/ports).
    pub fn gc_netns(&self, live: &BTreeSet<String>) -> Result<Vec<String>> {
        let dir = self.root.join("netns");
        let mut removed = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(removed);
        };
        for ent in rd.flatten() {
            let id = ent.file_name().to_string_lossy().into_owned();
            if !live.contains(&id) {
                self.disconnect_all(&id)?;
                removed.push(id);
            }
        }
        Ok(removed)
    }
}

/// True when `path` was last modified before the system booted (`btime` of /proc/stat): its
/// content cannot describe anything that still exists in the kernel.
fn written_before_boot(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(path) else {
        return false;
    };
    let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<i64>().ok())
    });
    btime.is_some_and(|b| md.mtime() < b)
}

/// Ends every tug helper process (DNS server, port proxy) whose command line names `path`
/// (its `--records`/`--record` file): the ones a killed command started but never recorded.
/// Recorded helpers are stopped through their pid file before this runs, so whatever still
/// matches is unknown to the state and would hold its ports forever.
fn kill_unrecorded_helpers(path: &Path) {
    let want = path.as_os_str().as_encoded_bytes();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let helper = args
            .nth(1)
            .is_some_and(|a| a == b"network-dns" || a == b"network-proxy");
        if helper && cmdline.split(|b| *b == 0).any(|a| a == want) {
            let Ok(pid) = i32::try_from(pid) else {
                continue;
            };
            // Its start time, read before the signal, so a reused pid is not waited on.
            let start = crate::engine::container::state::start_time(pid);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            // Woken by a pidfd when it exits; a zombie (not reaped yet) has released its
            // sockets and counts as gone.
            let _ = crate::engine::container::state::wait_gone(
                Some(pid),
                start,
                std::time::Duration::from_secs(2),
            );
        }
    }
}

/// True the first time a bridge is seen by this process.
fn first_use_in_process(bridge: &str) -> bool {
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    let mut seen = match SEEN.get_or_init(Mutex::default).lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    seen.insert(bridge.to_string())
}

fn bind_tcp_reuse(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockProtocol, SockType, SockaddrIn, bind, listen,
        setsockopt, socket, sockopt,
    };
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("ipv6 is not supported yet"));
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Tcp,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?;
    listen(&fd, Backlog::new(64).map_err(std::io::Error::from)?)?;
    Ok(std::net::TcpListener::from(fd))
}
