//! Links, addresses and routes over rtnetlink (the kernel's routing netlink protocol).
//!
//! A netlink socket talks to the network stack of the namespace it was *created* in. To
//! configure the inside of a container's network namespace we therefore open the socket on a
//! short-lived thread that first joins that namespace with `setns(CLONE_NEWNET)` (network
//! namespaces are per thread, so the rest of the process is untouched). Every call here runs on
//! such a fresh thread with its own single-threaded tokio runtime, so callers may be sync or
//! async without nesting runtimes.
//!
//! Objects tug creates:
//! - a bridge per network (`tug` + hash, see `ipam::bridge_name`), holding the gateway address;
//! - a veth pair per endpoint: the host end (`tv…`) is a port of the bridge, the peer is moved
//!   into the container's namespace and renamed `eth0`, `eth1`, …

use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::{Error, Result};

/// A link as seen in a dump.
#[derive(Debug, Clone)]
pub struct LinkEntry {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub master: Option<u32>,
    /// The device group (`ip link set … group N`; 0 unless someone set one).
    pub group: u32,
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(|e| nl_err(.., e))`
fn nl_err(what: &str, e: rtnetlink::Error) -> Error {
    Error::Netlink(format!("{what}: {e}"))
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Runs `f` with a netlink handle on a fresh thread, optionally inside the network namespace
/// bound at `netns`.
fn run<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    let joined = std::thread::spawn(move || -> Result<T> {
        // The runtime is built before joining the namespace: its drivers may create sockets
        // the process keeps (tokio's signal driver makes a process-wide socket pair on first
        // use), and a socket holds the namespace it was made in alive. Made inside a
        // container's namespace, it kept that namespace (and the container's veths) alive
        // until this process exited.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io("start netlink runtime".into(), e))?;
        if let Some(path) = &netns {
            let file = std::fs::File::open(path)
                .map_err(|e| Error::Io(format!("open network namespace {}", path.display()), e))?;
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::Io(
                    format!("join network namespace {}", path.display()),
                    e.into(),
                )
            })?;
        }
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection()
                .map_err(|e| Error::Io("open netlink socket".into(), e))?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
    .join();
    match joined {
        Ok(r) => r,
        Err(_) => Err(Error::Netlink("netlink worker thread panicked".into())),
    }
}

async fn dump_links(h: &Handle) -> Result<Vec<LinkEntry>> {
    let mut out = Vec::new();
    let mut s = h.link().get().execute();
    while let Some(msg) = s.try_next().await.map_err(|e| nl_err("list links", e))? {
        out.push(entry_of(&msg));
    }
    Ok(out)
}

fn entry_of(msg: &LinkMessage) -> LinkEntry {
    let mut e = LinkEntry {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        master: None,
        group: 0,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => e.name.clone_from(n),
            LinkAttribute::Controller(m) => e.master = Some(*m),
            LinkAttribute::Group(g) => e.group = *g,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        e.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    e
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl_err(&format!("look up link {name}"), e)),
    }
}

/// Lists every link of the namespace (the host's when `netns` is `None`).
pub fn links(netns: Option<&Path>) -> Result<Vec<LinkEntry>> {
    run(netns, |h| async move { dump_links(&h).await })
}

/// True when a link of that name exists in the host namespace.
pub fn link_exists(name: &str) -> Result<bool> {
    let name = name.to_string();
    run(None, move |h| async move {
        Ok(index_of(&h, &name).await?.is_some())
    })
}

/// Creates (or completes) a bridge with the gateway address, brings it up.
pub fn ensure_bridge(name: &str, mtu: Option<u32>, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    let name = name.to_string();
    run(None, move |h| async move {
        if index_of(&h, &name).await?.is_none() {
            // A bridge without an address of its own takes the lowest MAC of its ports and
            // changes it when that port leaves: peers' ARP caches then point at a MAC nobody
            // has and the gateway (and DNS) is unreachable for a minute. A fixed, locally
            // administered address derived from the name avoids that.
            let mut mac = [0u8; 6];
            let digest = <sha2::Sha256 as sha2::Digest>::digest(name.as_bytes());
            mac.copy_from_slice(&digest[..6]);
            mac[0] = (mac[0] & 0xfc) | 0x02;
            let mut b = LinkBridge::new(&name).address(mac.to_vec());
            if let Some(m) = mtu {
                b = b.mtu(m);
            }
            if let Err(e) = h.link().add(b.build()).execute().await
                && errno_of(&e) != Some(libc::EEXIST)
            {
                return Err(nl_err(&format!("create bridge {name}"), e));
            }
        }
        let idx = index_of(&h, &name)
            .await?
            .ok_or_else(|| Error::Netlink(format!("bridge {name} vanished after creation")))?;
        if let Err(e) = h.address().add(idx, gateway.into(), prefix).execute().await
            && errno_of(&e) != Some(libc::EEXIST)
        {
            return Err(nl_err(&format!("add {gateway}/{prefix} to {name}"), e));
        }
        // A bridge without an address of its own takes the lowest of its ports' and changes
        // it when that port goes: containers would keep the gateway's old MAC in their ARP
        // cache and lose DNS and the default route for minutes. Fix it from the gateway
        // address, as Docker does (02:42 + the IPv4 address).
        let o = gateway.octets();
        let mac = vec![0x02, 0x42, o[0], o[1], o[2], o[3]];
        h.link()
            .set(LinkUnspec::new_with_index(idx).address(mac).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("bring {name} up"), e))?;
        Ok(())
    })
}

/// Waits until none of the host links `names` exists, at most `timeout`; returns the names
/// still there then. Woken by the kernel's link notifications (an rtnetlink socket in the
/// `RTMGRP_LINK` group, opened in this thread's namespace before the first check), so a
/// link that goes is seen at once and nothing is polled.
#[must_use]
pub fn wait_links_gone(names: &[String], timeout: std::time::Duration) -> Vec<String> {
    use std::os::fd::AsFd as _;
    let left = || -> Vec<String> {
        names
            .iter()
            .filter(|n| Path::new("/sys/class/net").join(n).exists())
            .cloned()
            .collect()
    };
    if names.is_empty() {
        return Vec::new();
    }
    use nix::sys::socket::{
        AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, socket,
    };
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkRoute,
    )
    .ok();
    let groups = u32::try_from(libc::RTMGRP_LINK).unwrap_or(1);
    let subscribed = sock.as_ref().is_some_and(|s| {
        bind(
            std::os::fd::AsRawFd::as_raw_fd(s),
            &NetlinkAddr::new(0, groups),
        )
        .is_ok()
    });
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let still = left();
        let now = std::time::Instant::now();
        if still.is_empty() || now >= deadline {
            return still;
        }
        let wait = deadline - now;
        match (&sock, subscribed) {
            (Some(s), true) => {
                let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [nix::poll::PollFd::new(
                    s.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
                // Drain: any link event means "look again"; an overrun (ENOBUFS) too.
                while nix::sys::socket::recv(
                    std::os::fd::AsRawFd::as_raw_fd(s),
                    &mut buf,
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                )
                .is_ok_and(|n| n > 0)
                {}
            }
            // No notifications here (a kernel or sandbox without them): look again shortly.
            _ => std::thread::sleep(wait.min(std::time::Duration::from_millis(5))),
        }
    }
}

/// Deletes a link of the host namespace; a missing link is not an error.
pub fn delete_link(name: &str) -> Result<()> {
    let name = name.to_string();
    run(None, move |h| async move {
        let Some(idx) = index_of(&h, &name).await? else {
            return Ok(());
        };
        match h.link().del(idx).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl_err(&format!("delete link {name}"), e)),
        }
    })
}

/// Deletes links of the host namespace in one go; missing ones are not an error.
///
/// Deleting a link makes the kernel wait for RCU grace periods (a bridge waits for two,
/// about 20 ms each here), and one request per link waits for them once per link. One
/// request can name a whole device group instead (`ip link del group N`): the kernel then
/// unregisters every device of the group together and waits once. So the links are put in
/// a group no device of the host uses, then that group is deleted. Deleting a veth deletes
/// its peer too, whichever namespace holds it.
pub fn delete_links(names: &[String]) -> Result<()> {
    let names = names.to_vec();
    run(None, move |h| async move {
        let all = dump_links(&h).await?;
        let mine: Vec<&LinkEntry> = all.iter().filter(|l| names.contains(&l.name)).collect();
        if mine.len() <= 1 {
            for l in mine {
                del_index(&h, l).await?;
            }
            return Ok(());
        }
        let group = free_group(&mine[0].name, &all);
        let mut grouped = 0;
        for l in &mine {
            match h
                .link()
                .set(
                    LinkUnspec::new_with_index(l.index)
                        .link_group(group)
                        .build(),
                )
                .execute()
                .await
            {
                Ok(()) => grouped += 1,
                Err(e) if errno_of(&e) == Some(libc::ENODEV) => {}
                Err(e) => return Err(nl_err(&format!("group link {}", l.name), e)),
            }
        }
        if grouped == 0 {
            return Ok(());
        }
        let mut del = h.link().del(0);
        del.message_mut()
            .attributes
            .push(LinkAttribute::Group(group));
        match del.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
            // A kernel that refuses group deletion: one by one.
            Err(_) => {
                for l in &mine {
                    del_index(&h, l).await?;
                }
                Ok(())
            }
        }
    })
}

/// A device group number that no link in `all` is in (0, the default, never), starting from
/// one derived from `seed`.
fn free_group(seed: &str, all: &[LinkEntry]) -> u32 {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
    let mut group = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    while group == 0 || all.iter().any(|l| l.group == group) {
        group = group.wrapping_add(1);
    }
    group
}

async fn del_index(h: &Handle, l: &LinkEntry) -> Result<()> {
    match h.link().del(l.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(nl_err(&format!("delete link {}", l.name), e)),
    }
}

/// How one endpoint's interface inside the namespace is configured.
#[derive(Debug, Clone)]
pub struct VethPlan {
    pub host: String,
    pub bridge: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub mac: [u8; 6],
    pub mtu: Option<u32>,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub default_route: bool,
}

/// Creates the veth pair, plugs the host end into the bridge and configures the peer inside
/// the namespace. The peer is *created* inside the namespace, already named and with its MAC
/// (`IFLA_NET_NS_FD` in the peer's attributes): moving an existing link between namespaces
/// waits for an RCU grace period and costs tens of milliseconds. On error, the host end is
/// deleted (which deletes the peer).
pub fn create_endpoint(plan: &VethPlan) -> Result<()> {
    let p = plan.clone();
    let host_side = run(None, move |h| async move {
        let br = index_of(&h, &p.bridge)
            .await?
            .ok_or_else(|| Error::Netlink(format!("bridge {} does not exist", p.bridge)))?;
        // A leftover of a crashed run with the same name is replaced.
        if let Some(old) = index_of(&h, &p.host).await? {
            let _ = h.link().del(old).execute().await;
        }
        let ns = std::fs::File::open(&p.netns)
            .map_err(|e| Error::Io(format!("open network namespace {}", p.netns.display()), e))?;
        use std::os::fd::AsRawFd;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(p.ifname.clone())
            .address(p.mac.to_vec())
            .setns_by_fd(ns.as_raw_fd());
        if let Some(m) = p.mtu {
            peer = peer.mtu(m);
        }
        let mut v = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(p.host.clone())
            .controller(br)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(m) = p.mtu {
            v = v.mtu(m);
        }
        h.link()
            .add(v.build())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("create veth {}", p.host), e))?;
        drop(ns);
        Ok(())
    });
    if let Err(e) = host_side {
        let _ = delete_link(&plan.host);
        return Err(e);
    }
    let p = plan.clone();
    let inside = run(Some(&plan.netns.clone()), move |h| async move {
        let idx = index_of(&h, &p.ifname)
            .await?
            .ok_or_else(|| Error::Netlink(format!("{} is not in the namespace", p.ifname)))?;
        h.address()
            .add(idx, p.ip.into(), p.prefix)
            .execute()
            .await
            .map_err(|e| nl_err(&format!("add {}/{} to {}", p.ip, p.prefix, p.ifname), e))?;
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("bring {} up", p.ifname), e))?;
        if p.default_route {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(p.gateway)
                .output_interface(idx)
                .build();
            h.route()
                .add(route)
                .execute()
                .await
                .map_err(|e| nl_err(&format!("add default route via {}", p.gateway), e))?;
        }
        Ok(())
    });
    if let Err(e) = inside {
        let _ = delete_link(&plan.host);
        return Err(e);
    }
    Ok(())
}

/// Brings `lo` up inside a namespace.
pub fn loopback_up(netns: &Path) -> Result<()> {
    run(Some(netns), |h| async move {
        if let Some(lo) = index_of(&h, "lo").await? {
            h.link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(|e| nl_err("bring lo up", e))?;
        }
        Ok(())
    })
}

/// True when the namespace already has a default route.
pub fn has_default_route(netns: &Path) -> Result<bool> {
    Ok(routes(Some(netns))?
        .iter()
        .any(|r| r.prefix == 0 && r.table == RouteHeader::RT_TABLE_MAIN))
}

/// An IPv4 route of a dump.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub table: u8,
}

/// Every IPv4 route of the namespace (all tables).
pub fn routes(netns: Option<&Path>) -> Result<Vec<RouteEntry>> {
    run(netns, |h| async move { dump_routes(&h).await })
}

async fn dump_routes(h: &Handle) -> Result<Vec<RouteEntry>> {
    let mut out = Vec::new();
    let mut s = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(m) = s.try_next().await.map_err(|e| nl_err("list routes", e))? {
        let mut r = RouteEntry {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: m.header.destination_prefix_length,
            gateway: None,
            table: m.header.table,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = *d,
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
                RouteAttribute::Table(t) => r.table = u8::try_from(*t).unwrap_or(u8::MAX),
                _ => {}
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// What `connect` needs to know of a namespace, in one visit: its interface names (to pick
/// the next `ethN`) and whether it has a default route already.
pub fn netns_view(netns: &Path) -> Result<(Vec<String>, bool)> {
    run(Some(netns), |h| async move {
        let names = dump_links(&h).await?.into_iter().map(|l| l.name).collect();
        let default = dump_routes(&h)
            .await?
            .iter()
            .any(|r| r.prefix == 0 && r.table == RouteHeader::RT_TABLE_MAIN);
        Ok((names, default))
    })
}

/// Every IPv4 address with its prefix on the host's interfaces.
pub fn host_addresses() -> Result<Vec<(Ipv4Addr, u8)>> {
    run(None, |h| async move {
        let mut out = Vec::new();
        let mut s = h.address().get().execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| nl_err("list addresses", e))?
        {
            for a in &m.attributes {
                if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = a {
                    out.push((*ip, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    })
}

/// The names of the interfaces inside a namespace (for choosing `ethN`).
pub fn link_names(netns: &Path) -> Result<Vec<String>> {
    Ok(links(Some(netns))?.into_iter().map(|l| l.name).collect())
}

/// Kind name of a bridge, as netlink reports it.
pub fn bridge_kind() -> String {
    InfoKind::Bridge.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, group: u32) -> LinkEntry {
        LinkEntry {
            index: 1,
            name: name.into(),
            kind: None,
            master: None,
            group,
        }
    }

    #[test]
    fn the_deletion_group_is_one_no_device_uses() {
        let start = free_group("tv1234", &[]);
        assert_ne!(start, 0);
        assert_eq!(free_group("tv1234", &[]), start, "derived from the name");
        // The devices already in that group (and the next) push it further.
        let taken = [
            link("a", start),
            link("b", start.wrapping_add(1)),
            link("c", 0),
        ];
        let g = free_group("tv1234", &taken);
        assert_eq!(g, start.wrapping_add(2));
        assert!(taken.iter().all(|l| l.group != g));
    }
}
