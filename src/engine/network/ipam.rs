//! IP address management: subnets, the host-wide registry, bridge names.
//!
//! Subnets are IPv4 prefixes (`10.89.3.0/24`). A new network takes the first subnet of the
//! pool (default `10.89.0.0/16` cut into `/24`s, or `TUG_NETWORK_POOL=10.90.0.0/16:26`) that
//! overlaps no route or address of the host and no subnet of any other tug network — also one
//! of *another state root* on this host. For that last point every state root registers its
//! networks in one host-wide directory, `/run/tug/networks/<bridge>.json`, written and read
//! under one host-wide lock (`/run/tug/lock`, `flock`). `/run` is a tmpfs: after a reboot the
//! registry is empty, and so are the bridges it described. An entry whose state root no longer
//! has the network is stale: the next allocation deletes its bridge and rules and drops it.
//!
//! Bridge names are at most 15 bytes (IFNAMSIZ - 1), so they are derived: `tug` + 8 hex digits
//! of a hash of (state root, network name, salt), where the salt is bumped until the name is
//! free on the host. Two roots with the same network name therefore get different bridges.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Error, Result, write_atomic};

/// An IPv4 prefix, e.g. `10.89.0.0/24`. The address is always the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    /// A prefix from any address inside it.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if prefix > 32 {
            return Err(Error::Invalid(format!("prefix length {prefix} is over 32")));
        }
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & Self::mask_of(prefix)),
            prefix,
        })
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        Self::mask_of(self.prefix)
    }

    /// First address (the network address).
    pub fn first(&self) -> u32 {
        u32::from(self.addr)
    }

    /// Last address (broadcast).
    pub fn last(&self) -> u32 {
        self.first() | !self.mask()
    }

    /// True when `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.first()
    }

    /// True when the two prefixes share an address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| Error::Invalid(format!("subnet {s:?} is not in ADDRESS/PREFIX form")))?;
        if a.contains(':') {
            return Err(Error::Unsupported(format!(
                "IPv6 subnet {s:?}: IPv6 networks are not supported yet"
            )));
        }
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| Error::Invalid(format!("subnet {s:?}: {a:?} is not an IPv4 address")))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| Error::Invalid(format!("subnet {s:?}: bad prefix length {p:?}")))?;
        Self::new(addr, prefix)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where subnets come from: `base` cut into prefixes of length `size`.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub base: Ipv4Net,
    pub size: u8,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            base: Ipv4Net {
                addr: Ipv4Addr::new(10, 89, 0, 0),
                prefix: 16,
            },
            size: 24,
        }
    }
}

impl FromStr for Pool {
    type Err = Error;
    /// `BASE/PREFIX:SIZE`, e.g. `10.89.0.0/16:24`.
    fn from_str(s: &str) -> Result<Self> {
        let (base, size) = s
            .split_once(':')
            .ok_or_else(|| Error::Invalid(format!("address pool {s:?} is not BASE/PREFIX:SIZE")))?;
        let base: Ipv4Net = base.parse()?;
        let size: u8 = size
            .parse()
            .ok()
            .filter(|z| *z >= base.prefix && *z <= 30)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "address pool {s:?}: size must be between {} and 30",
                    base.prefix
                ))
            })?;
        Ok(Self { base, size })
    }
}

impl Pool {
    /// The pool configured by `TUG_NETWORK_POOL`, or the default.
    pub fn from_env() -> Result<Self> {
        match std::env::var("TUG_NETWORK_POOL") {
            Ok(s) if !s.is_empty() => s.parse(),
            _ => Ok(Self::default()),
        }
    }

    /// Every candidate subnet in order.
    pub fn candidates(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let count = 1u64 << (self.size - self.base.prefix);
        let step = 1u64 << (32 - self.size);
        (0..count).map(move |i| Ipv4Net {
            addr: Ipv4Addr::from((u64::from(self.base.first()) + i * step) as u32),
            prefix: self.size,
        })
    }
}

/// One registered network of some state root on this host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostEntry {
    pub root: PathBuf,
    pub network: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// The network's DNS server, stopped when the entry is found stale.
    #[serde(default)]
    pub dns: Option<super::helper::ProcId>,
}

/// The host-wide directory (`/run/tug`, or `TUG_RUN_DIR`).
pub fn run_dir() -> PathBuf {
    std::env::var_os("TUG_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/tug"))
}

/// The host-wide lock, held while subnets and bridge names are chosen and networks made.
pub struct HostLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
    dir: PathBuf,
}

impl fmt::Debug for HostLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostLock({})", self.dir.display())
    }
}

impl HostLock {
    /// Takes the lock (blocking).
    pub fn take() -> Result<Self> {
        let dir = run_dir();
        // Private like the state root (an older tug made it 0755: changed here).
        crate::engine::private::ensure_private_dir(&dir)
            .and_then(|()| crate::engine::private::create_dir_all(&dir.join("networks")))
            .map_err(|e| Error::Io(format!("create {}", dir.display()), e))?;
        let path = dir.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::Io(format!("open {}", path.display()), e))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::Io(format!("lock {}", path.display()), e.into()))?;
        Ok(Self { _lock: lock, dir })
    }

    fn entry_path(&self, bridge: &str) -> PathBuf {
        self.dir.join("networks").join(format!("{bridge}.json"))
    }

    /// Every registered network.
    pub fn entries(&self) -> Result<Vec<HostEntry>> {
        let dir = self.dir.join("networks");
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::Io(format!("read {}", dir.display()), e)),
        };
        for ent in rd.flatten() {
            let p = ent.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            // A torn or foreign file is ignored (writes are atomic, so this is rare).
            if let Ok(bytes) = std::fs::read(&p)
                && let Ok(e) = serde_json::from_slice::<HostEntry>(&bytes)
            {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Registers (or updates) a network.
    pub fn register(&self, e: &HostEntry) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(e).map_err(|x| Error::Invalid(x.to_string()))?;
        write_atomic(&self.entry_path(&e.bridge), &bytes)
    }

    /// Drops a registration.
    pub fn unregister(&self, bridge: &str) -> Result<()> {
        match std::fs::remove_file(self.entry_path(bridge)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io(format!("unregister {bridge}"), e)),
        }
    }
}

/// Derives a host-unique bridge name for (root, network): `tug` + 8 hex digits.
pub fn bridge_name(root: &Path, network: &str, taken: &BTreeSet<String>) -> Result<String> {
    for salt in 0u32..1000 {
        let name = format!(
            "tug{}",
            short_hash(
                &[
                    root.as_os_str().as_encoded_bytes(),
                    network.as_bytes(),
                    &salt.to_le_bytes()
                ],
                8
            )
        );
        if !taken.contains(&name) && !super::netlink::link_exists(&name)? {
            return Ok(name);
        }
    }
    Err(Error::Invalid(format!(
        "no free bridge name for network {network}"
    )))
}

/// `len` hex digits of the SHA-256 of the parts (NUL separated).
pub fn short_hash(parts: &[&[u8]], len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    let mut s = hex::encode(h.finalize());
    s.truncate(len);
    s
}

/// The subnets in use on the host: routes (except default routes) and interface addresses.
pub fn host_prefixes() -> Result<Vec<Ipv4Net>> {
    let mut out = Vec::new();
    for r in super::netlink::routes(None)? {
        if r.prefix == 0 || r.dst.is_loopback() || r.dst.is_multicast() {
            continue;
        }
        out.push(Ipv4Net::new(r.dst, r.prefix)?);
    }
    for (ip, prefix) in super::netlink::host_addresses()? {
        if ip.is_loopback() {
            continue;
        }
        out.push(Ipv4Net::new(ip, prefix)?);
    }
    Ok(out)
}

/// Chooses a subnet: the requested one after checking it, or the first free one of the pool.
pub fn choose_subnet(
    requested: Option<Ipv4Net>,
    pool: &Pool,
    registered: &[HostEntry],
    host: &[Ipv4Net],
) -> Result<Ipv4Net> {
    if let Some(want) = requested {
        if let Some(e) = registered.iter().find(|e| e.subnet.overlaps(&want)) {
            return Err(Error::Conflict(format!(
                "subnet {want} overlaps {} of network {} (state root {})",
                e.subnet,
                e.network,
                e.root.display()
            )));
        }
        if let Some(h) = host.iter().find(|h| h.overlaps(&want)) {
            return Err(Error::Conflict(format!(
                "subnet {want} overlaps {h}, a route or address of this host"
            )));
        }
        return Ok(want);
    }
    pool.candidates()
        .find(|c| {
            !registered.iter().any(|e| e.subnet.overlaps(c)) && !host.iter().any(|h| h.overlaps(c))
        })
        .ok_or_else(|| {
            Error::Conflict(format!(
                "the address pool {}:{} is exhausted (set TUG_NETWORK_POOL or give a subnet)",
                pool.base, pool.size
            ))
        })
}

/// Picks the next free host address in `range` (inside `subnet`), skipping the network and
/// broadcast addresses, the gateway and `used`. The search starts after `last` (the previous
/// allocation) and wraps, so a just-freed address is not handed out again at once (stale DNS
/// caches of peers then do not point at a new container).
pub fn next_free(
    subnet: &Ipv4Net,
    range: &Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let lo = range.first().max(subnet.first() + 1);
    let hi = range.last().min(subnet.last().saturating_sub(1));
    if lo > hi {
        return None;
    }
    let start = match last {
        Some(l) if (lo..hi).contains(&u32::from(l)) => u32::from(l) + 1,
        _ => lo,
    };
    (start..=hi)
        .chain(lo..start)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != gateway && !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_overlap() {
        let a: Ipv4Net = "10.1.2.3/24".parse().unwrap();
        assert_eq!(a.to_string(), "10.1.2.0/24");
        let b: Ipv4Net = "10.1.0.0/16".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        let c: Ipv4Net = "10.2.0.0/24".parse().unwrap();
        assert!(!a.overlaps(&c));
        assert!("fd00::/64".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn pool_skips_taken() {
        let pool: Pool = "10.50.0.0/16:24".parse().unwrap();
        let host = vec!["10.50.0.0/23".parse().unwrap()];
        let reg = vec![HostEntry {
            root: "/x".into(),
            network: "n".into(),
            bridge: "tugx".into(),
            subnet: "10.50.2.0/24".parse().unwrap(),
            dns: None,
        }];
        let s = choose_subnet(None, &pool, &reg, &host).unwrap();
        assert_eq!(s.to_string(), "10.50.3.0/24");
        let err = choose_subnet(Some("10.50.2.128/25".parse().unwrap()), &pool, &reg, &host)
            .unwrap_err()
            .to_string();
        assert!(err.contains("network n"), "{err}");
    }

    #[test]
    fn next_free_skips_gateway_and_used() {
        let s: Ipv4Net = "10.0.0.0/29".parse().unwrap();
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut used = BTreeSet::new();
        used.insert(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            next_free(&s, &s, gw, &used, None),
            Some(Ipv4Addr::new(10, 0, 0, 3))
        );
        // After .5 was handed out, .6 comes next even though .3 is free; then it wraps.
        let last = Some(Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(
            next_free(&s, &s, gw, &used, last),
            Some(Ipv4Addr::new(10, 0, 0, 6))
        );
        let last = Some(Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(
            next_free(&s, &s, gw, &used, last),
            Some(Ipv4Addr::new(10, 0, 0, 3))
        );
        for i in 3..7 {
            used.insert(Ipv4Addr::new(10, 0, 0, i));
        }
        assert_eq!(next_free(&s, &s, gw, &used, None), None);
    }
}
