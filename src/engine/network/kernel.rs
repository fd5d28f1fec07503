//! The kernel objects of networks and their endpoints: bridges, nftables rules, DNS servers,
//! namespaces, veth pairs, port proxies — made, connected and removed.

use super::*;

/// A namespace key claimed by this process ([`Networks::claim_netns`]); dropping it ends the
/// claim.
#[derive(Debug)]
#[must_use = "the claim ends when dropped"]
pub struct NetnsClaim {
    path: PathBuf,
}

impl Drop for NetnsClaim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// True the first time a bridge is seen by this process.
pub(super) fn first_use_in_process(bridge: &str) -> bool {
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    let mut seen = match SEEN.get_or_init(Mutex::default).lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    seen.insert(bridge.to_string())
}

pub(super) fn bind_tcp_reuse(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
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

impl Networks {
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
        let (mtu, bridge_opt) = driver_options(spec)?;
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
        let gateway = gateway_in(spec, subnet)?;
        let ip_range = ip_range_in(spec, subnet)?;
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
        let upstreams = self.dns_upstreams()?;
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

    /// The address of a new endpoint on `net`: the one asked for (a free host address of
    /// the subnet), else the next free one after the last handed out (round robin).
    fn address_for(
        &self,
        net: &NetworkInfo,
        eps: &BTreeMap<String, Endpoint>,
        spec: &EndpointSpec,
    ) -> Result<Ipv4Addr> {
        let network = &net.name;
        if let Some(ip) = spec.ipv4_address {
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
            return Ok(ip);
        }
        let used: BTreeSet<Ipv4Addr> = eps.values().map(|e| e.ip).collect();
        let last: Option<Ipv4Addr> = std::fs::read_to_string(self.dir(network).join("ipam.json"))
            .ok()
            .and_then(|t| t.trim().trim_matches('"').parse().ok());
        ipam::next_free(&net.subnet, &net.ip_range, net.gateway, &used, last).ok_or_else(|| {
            Error::Conflict(format!(
                "network {network}: no free address left in {}",
                net.ip_range
            ))
        })
    }

    /// The upstream resolvers of a new network: set by the library user, else
    /// `TUG_DNS_UPSTREAM`, else the host's resolv.conf.
    fn dns_upstreams(&self) -> Result<Vec<String>> {
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
        Ok(upstreams)
    }

    /// Registers (or refreshes) the network in the host registry, with its DNS server.
    pub(super) fn register_host(&self, host: &HostLock, info: &NetworkInfo) -> Result<()> {
        host.register(&HostEntry {
            root: self.root.clone(),
            network: info.name.clone(),
            bridge: info.bridge.clone(),
            subnet: info.subnet,
            dns: self.dns_pid(&info.name)?,
        })
    }

    /// Makes the kernel objects of a recorded network (idempotent).
    pub(super) fn realize(&self, info: &NetworkInfo) -> Result<()> {
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

    /// Starts the network's DNS server unless it runs.
    pub(super) fn ensure_dns(&self, info: &NetworkInfo) -> Result<()> {
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
            crate::engine::helpers::NETWORK_DNS.to_string(),
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
    pub(super) fn teardown(&self, info: &NetworkInfo) -> Result<()> {
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
    pub(super) fn remove_damaged(&self, name: &str) -> Result<()> {
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

    /// Claims the namespace key `key` for this process while it wires it: until the claim
    /// is dropped (on failure, or once the owner's record names the namespace),
    /// [`Networks::gc_netns`] leaves the key alone, whatever its caller takes for live. The
    /// claim is the file `<root>/netns/.claim-<key>.<pid>` holding this process's
    /// [`ProcId`]; one whose process is gone is removed by the next `gc_netns`.
    ///
    /// # Errors
    /// A bad key, or the file cannot be written.
    pub fn claim_netns(&self, key: &str) -> Result<NetnsClaim> {
        check_key(key)?;
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let id = ProcId::of(me).ok_or_else(|| Error::Helper("no start time of tug".into()))?;
        let dir = self.root.join("netns");
        crate::engine::private::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("create {}", dir.display()), e))?;
        let path = dir.join(format!(".claim-{key}.{me}"));
        // Not synced: a claim means nothing after a crash of the machine.
        let bytes = serde_json::to_vec(&id)
            .map_err(|e| Error::State(path.display().to_string(), e.to_string()))?;
        write_derived(&path, &bytes)?;
        Ok(NetnsClaim { path })
    }

    /// Creates the network namespace of a container at `<root>/netns/<id>` (with `lo` up).
    pub fn create_netns(&self, container_id: &str) -> Result<PathBuf> {
        check_key(container_id)?;
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
        let ip = self.address_for(&net, &eps, spec)?;
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
            dns_names: dns_names(spec),
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

    pub(super) fn disconnect_locked(&self, container_id: &str) -> Result<()> {
        for veth in self.forget_endpoints_locked(container_id)? {
            netlink::delete_link(&veth)?;
        }
        Ok(())
    }

    /// Drops a container's endpoint records (addresses, DNS records) on every network and
    /// returns the host ends of its veth pairs, which still exist.
    pub(super) fn forget_endpoints_locked(&self, container_id: &str) -> Result<Vec<String>> {
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
    /// holding its other end dies; woken by link notifications), at most 50 ms; deletes any
    /// still there then. The kernel tears namespaces down in one queue, behind every other
    /// namespace being destroyed on the host: usually 5-15 ms here, but about one time in
    /// five on a busy machine a second or more (measured: `run --rm` took 0.8-1.1 s then).
    /// An explicit deletion costs about 20 ms and does not wait for that queue; it also
    /// frees a pair whose namespace a stray process keeps alive.
    pub(super) fn wait_links_gone(&self, veths: &[String]) -> Result<()> {
        for v in netlink::wait_links_gone(veths, std::time::Duration::from_millis(50)) {
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

    pub(super) fn start_proxy(
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
            crate::engine::helpers::NETWORK_PROXY.to_string(),
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

    pub(super) fn unpublish_locked(&self, container_id: &str) -> Result<()> {
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
}

/// The DNS names of an endpoint, lowercase, each once: the container name, the service and
/// `<service>.<project>`, the aliases, the hostname and the 12-character container id.
fn dns_names(spec: &EndpointSpec) -> Vec<String> {
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
    names
}
