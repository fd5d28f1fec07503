//! The records of networks in the state root: `network.json`, `endpoints.json` and the
//! derived `dns.json` and `ipam.json` per network, port records; how they are written
//! (atomic; derived ones without fsync, see "State durability" in docs/ARCHITECTURE.md) and
//! read (a damaged record is skipped by listings and named by every error that touches it).

use super::*;

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename
/// (nothing when the file already holds `bytes`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, true)
}

/// Like [`write_atomic`] without the fsync, for derived files that `reconcile` regenerates
/// (DNS records, the allocation hint): readers still never see a torn file.
pub(super) fn write_derived(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, false)
}

pub(super) fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
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
    // The file's fsync only: like a container's state record, these describe kernel objects
    // that a system crash destroys too, and `reconcile` checks them against the kernel.
    let durability = if sync {
        crate::util::fs::Durability::File
    } else {
        crate::util::fs::Durability::None
    };
    crate::util::fs::write_atomic(path, bytes, crate::engine::private::FILE_MODE, durability)
        .map_err(|e| Error::Io(format!("write {}", path.display()), e))
}

pub(super) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v)
        .map_err(|e| Error::State(path.display().to_string(), e.to_string()))?;
    write_atomic(path, &bytes)
}

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::State(path.display().to_string(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(format!("read {}", path.display()), e)),
    }
}

/// True when `path` was last modified before the system booted (`btime` of /proc/stat): its
/// content cannot describe anything that still exists in the kernel.
pub(super) fn written_before_boot(path: &Path) -> bool {
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

impl Networks {
    pub(super) fn load(&self, name: &str) -> Result<NetworkInfo> {
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

    pub(super) fn endpoints_of(&self, name: &str) -> Result<BTreeMap<String, Endpoint>> {
        let p = self.dir(name).join("endpoints.json");
        match read_json(&p) {
            Ok(eps) => Ok(eps.unwrap_or_default()),
            // Torn by a system crash (see `write_endpoints`): every endpoint it held died
            // with that boot.
            Err(Error::State(..)) if written_before_boot(&p) => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn save_endpoints(
        &self,
        net: &NetworkInfo,
        eps: &BTreeMap<String, Endpoint>,
    ) -> Result<()> {
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
    pub(super) fn write_endpoints(
        &self,
        network: &str,
        eps: &BTreeMap<String, Endpoint>,
    ) -> Result<()> {
        let p = self.dir(network).join("endpoints.json");
        let bytes = serde_json::to_vec_pretty(eps)
            .map_err(|e| Error::State(p.display().to_string(), e.to_string()))?;
        write_derived(&p, &bytes)
    }

    pub(super) fn write_records(
        &self,
        net: &NetworkInfo,
        eps: &BTreeMap<String, Endpoint>,
    ) -> Result<()> {
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
    pub(super) fn names(&self) -> Result<Vec<String>> {
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
    pub(super) fn readable_endpoints(&self) -> Result<Vec<(String, BTreeMap<String, Endpoint>)>> {
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

    pub(super) fn dns_pid(&self, name: &str) -> Result<Option<ProcId>> {
        match read_json(&self.dir(name).join("dns.pid")) {
            // A damaged pid file names no server: a running one is found by its command
            // line (`kill_unrecorded_helpers`) before another is started.
            Err(Error::State(..)) => Ok(None),
            other => other,
        }
    }

    /// The port record of a container; a damaged one reads as none (its proxy is found by
    /// its command line, `kill_unrecorded_helpers`).
    pub(super) fn port_record(&self, path: &Path) -> Result<Option<ports::PortRecord>> {
        match read_json::<ports::PortRecord>(path) {
            Err(Error::State(..)) => Ok(None),
            other => other,
        }
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

    /// The published ports of a container (for `tug port` and `ps`).
    pub fn published(&self, container_id: &str) -> Result<Vec<Published>> {
        Ok(self
            .port_record(&self.ports_path(container_id))?
            .map(|r| r.ports)
            .unwrap_or_default())
    }
}
