//! Repair: what a reboot, a crash or a killed command left is found and made right —
//! bridges and rules re-made, dead helpers restarted, stale registry entries, stray
//! namespaces and unrecorded helpers removed.

use super::*;

/// Ends every tug helper process (DNS server, port proxy) whose command line names `path`
/// (its `--records`/`--record` file): the ones a killed command started but never recorded.
/// Recorded helpers are stopped through their pid file before this runs, so whatever still
/// matches is unknown to the state and would hold its ports forever.
pub(super) fn kill_unrecorded_helpers(path: &Path) {
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
            .is_some_and(crate::engine::helpers::is_network_helper);
        if helper && cmdline.split(|b| *b == 0).any(|a| a == want) {
            let Ok(pid) = i32::try_from(pid) else {
                continue;
            };
            // Its start time, read before the signal, so a reused pid is not waited on.
            let start = crate::engine::proc::start_time(pid);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            // Woken by a pidfd when it exits; a zombie (not reaped yet) has released its
            // sockets and counts as gone.
            let _ =
                crate::engine::proc::wait_gone(Some(pid), start, std::time::Duration::from_secs(2));
        }
    }
}

impl Networks {
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
    pub(super) fn prune_registry(&self, host: &HostLock) -> Result<()> {
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

    /// The one cleanup of stray namespaces: removes every namespace under `<root>/netns`
    /// (with its endpoints and published ports, as [`Networks::disconnect_all`]) whose key
    /// the caller does not call `owned` and that no live process claims
    /// ([`Networks::claim_netns`]). Callers pass what they know to be theirs: compose keeps
    /// every key that is not a container name of its project or that names an existing
    /// container; `container run` keeps every key that is not a container id or that is
    /// one. Claims of processes that are gone are removed. Returns the keys removed.
    ///
    /// # Errors
    /// A namespace or its records cannot be removed.
    pub fn gc_netns(&self, owned: &dyn Fn(&str) -> bool) -> Result<Vec<String>> {
        let dir = self.root.join("netns");
        let mut removed = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(removed);
        };
        let mut keys = Vec::new();
        let mut claimed = BTreeSet::new();
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if let Some(claim) = name.strip_prefix(".claim-") {
                let Some((key, _pid)) = claim.rsplit_once('.') else {
                    continue;
                };
                match read_json::<ProcId>(&ent.path()) {
                    Ok(Some(p)) if p.alive() => {
                        claimed.insert(key.to_string());
                    }
                    // Unreadable (renamed into place whole, so damaged): keep the key this
                    // time rather than take a namespace that may be in use.
                    Err(_) => {
                        claimed.insert(key.to_string());
                    }
                    Ok(_) => {
                        let _ = std::fs::remove_file(ent.path());
                    }
                }
            } else if !name.starts_with('.') {
                keys.push(name);
            }
        }
        for key in keys {
            if !owned(&key) && !claimed.contains(&key) {
                self.disconnect_all(&key)?;
                removed.push(key);
            }
        }
        Ok(removed)
    }
}
