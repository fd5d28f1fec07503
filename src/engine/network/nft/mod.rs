//! Packet filtering and NAT with nf_tables (through `nft -f`, never legacy iptables).
//!
//! nf_tables holds *tables* of *chains*; a base chain hooks into a netfilter hook (forward,
//! postrouting, …) at a priority, and a packet passes every base chain of every table on that
//! hook in priority order. An `accept` only ends the packet's walk through *that* chain: a
//! `drop` in another table's chain on the same hook still drops it.
//!
//! tug owns one table per network, `ip <bridge name>`, replaced atomically as a whole and
//! deleted with the network. The rules are data ([`rules`]: chains of matches and verdicts,
//! decided from the network's description) rendered for `nft -f`:
//! - `postrouting` (nat): masquerade traffic from the subnet that leaves through another
//!   interface (outbound access for non-internal networks);
//! - `forward` (filter): no new connection is forwarded into the bridge from another
//!   interface (this isolates networks from each other, as Docker's isolation chains do);
//!   for internal networks, anything entering or leaving the bridge from or to another
//!   interface is dropped.
//!
//! **Docker hazard.** A host where Docker runs (or ran) has an iptables-nft table `ip filter`
//! whose `FORWARD` chain has policy drop, and usually `net.bridge.bridge-nf-call-iptables=1`, so
//! even traffic between two ports of one bridge walks that chain. Because tug's own accept does
//! not override that drop, tug inserts two rules at the top of `ip filter FORWARD` when that
//! chain exists — `iifname BR accept` and `oifname BR ct state established,related accept` —
//! tagged with the comment `tug:BR`, and deletes them with the network. The next tug command
//! puts them back if Docker flushed them. That chain belongs to iptables-nft: when
//! `iptables-nft` is installed the rules are written through it (`-m comment`, `-m conntrack`),
//! because rules written with plain nft make the chain "incompatible" for iptables-nft and
//! would break Docker's own updates.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Error, Result};

pub mod rules;

pub use rules::{INTERNAL_INPUT, NetRules};

/// Runs `nft ARGS` (with `stdin` fed to it), output collected in temporary files (never
/// pipes, so no descendant can keep us waiting), with a deadline: a hung `nft` is killed and
/// tried once more. Returns (success, stdout, stderr).
fn run_nft(args: &[&str], stdin: Option<&str>) -> Result<(bool, String, String)> {
    use std::io::{Read, Seek};
    for attempt in 0..2 {
        let mut out = tempfile::tempfile().map_err(|e| Error::Io("temp file for nft".into(), e))?;
        let mut err = tempfile::tempfile().map_err(|e| Error::Io("temp file for nft".into(), e))?;
        let mut cmd = Command::new("nft");
        cmd.args(args)
            .stdout(Stdio::from(
                out.try_clone()
                    .map_err(|e| Error::Io("temp file for nft".into(), e))?,
            ))
            .stderr(Stdio::from(
                err.try_clone()
                    .map_err(|e| Error::Io("temp file for nft".into(), e))?,
            ))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Io("run nft (install the nftables package)".into(), e))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|e| Error::Io("write to nft".into(), e))?;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let pid = i32::try_from(child.id()).ok();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if std::time::Instant::now() < deadline => {
                    // Woken by a pidfd the moment nft exits (not reaped yet: it is our child).
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    let _ = crate::engine::proc::wait_gone(pid, None, left);
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Err(e) => return Err(Error::Io("wait for nft".into(), e)),
            }
        };
        let Some(status) = status else {
            if attempt == 0 {
                continue;
            }
            return Err(Error::Nft(format!(
                "`nft {}` did not finish in 20 s",
                args.join(" ")
            )));
        };
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.rewind().and_then(|()| out.read_to_string(&mut o));
        let _ = err.rewind().and_then(|()| err.read_to_string(&mut e));
        return Ok((status.success(), o, e));
    }
    Err(Error::Nft("nft did not finish".into()))
}

fn nft(script: &str) -> Result<String> {
    let (ok, out, err) = run_nft(&["-f", "-"], Some(script))?;
    if !ok {
        return Err(Error::Nft(err.trim().to_string()));
    }
    Ok(out)
}

fn nft_args(args: &[&str]) -> Result<Option<String>> {
    let (ok, out, _) = run_nft(args, None)?;
    Ok(ok.then_some(out))
}

/// The table's text (see [`rules::Table::for_network`]).
#[must_use]
pub fn ruleset(r: &NetRules) -> String {
    rules::Table::for_network(r).script()
}

/// Installs (or replaces) the network's table and, on a Docker-style host, its accept rules in
/// `ip filter FORWARD`.
pub fn install(r: &NetRules) -> Result<()> {
    nft(&ruleset(r))?;
    ensure_forward_accepts(&r.bridge, r.internal)
}

/// Deletes the network's table and its accept rules; missing is fine. `internal` says which
/// accept rules the network had, when known (see [`remove_forward_accepts`]).
pub fn remove(bridge: &str, internal: Option<bool>) -> Result<()> {
    match delete_table(bridge) {
        Ok(()) => {}
        // Without a usable nftables netlink socket, `nft` says what is wrong.
        Err(Error::Io(..)) if table_exists(bridge)? => {
            nft(&format!("delete table ip {bridge}\n"))?;
        }
        Err(e) => return Err(e),
    }
    let _ = std::fs::remove_file(forward_marker(bridge));
    remove_forward_accepts(bridge, internal)
}

/// Deletes table `ip <name>` over netlink; a missing table is fine.
///
/// nf_tables changes the ruleset only in transactions: the request travels between a
/// `NFNL_MSG_BATCH_BEGIN` and a `NFNL_MSG_BATCH_END` message (both addressed to the nftables
/// subsystem through `res_id`), and the kernel applies the batch as a whole when it reads the
/// end. `NFT_MSG_DELTABLE` names the table with `NFTA_TABLE_NAME`; with `NLM_F_ACK` the kernel
/// answers it with an error message whose code is 0 on success. One process less than
/// `nft delete table`, on every network removal.
pub fn delete_table(name: &str) -> Result<()> {
    const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    const NFNL_MSG_BATCH_END: u16 = 0x11;
    const NFT_MSG_DELTABLE: u16 = 2;
    const NFTA_TABLE_NAME: u16 = 1;
    if name.is_empty() || name.len() > 255 || name.contains('\0') {
        return Err(Error::Nft(format!("bad table name {name:?}")));
    }
    let subsys = NFNL_SUBSYS_NFTABLES.to_be_bytes();
    let mut buf = Vec::with_capacity(128);
    // batch begin: header + nfgenmsg with res_id = the subsystem (network byte order)
    push_header(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        libc::NLM_F_REQUEST as u16,
        1,
    );
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, subsys[0], subsys[1]]);
    let start = buf.len();
    push_header(
        &mut buf,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        2,
    );
    buf.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    let attr_len = 4 + name.len() + 1;
    buf.extend_from_slice(&u16::try_from(attr_len).unwrap_or(u16::MAX).to_ne_bytes());
    buf.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
    let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    push_header(&mut buf, NFNL_MSG_BATCH_END, libc::NLM_F_REQUEST as u16, 3);
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, subsys[0], subsys[1]]);
    match netfilter_send(&buf, false) {
        Ok(_) => Ok(()),
        Err(Error::Io(_, e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Appends a 16-byte netlink header of a 20-byte message (header + nfgenmsg, no attributes;
/// the caller fixes the length when it adds some).
fn push_header(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    buf.extend_from_slice(&20u32.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

/// True when the network's table exists.
pub fn table_exists(bridge: &str) -> Result<bool> {
    match ip_tables() {
        Ok(names) => Ok(names.iter().any(|n| n == bridge)),
        Err(_) => Ok(nft_args(&["list", "table", "ip", bridge])?.is_some()),
    }
}

/// True when a foreign `ip filter FORWARD` chain exists (Docker, iptables-nft, firewalld …).
fn foreign_forward() -> Result<Option<String>> {
    // Most hosts have no `ip filter` table at all: one netlink dump says so without
    // starting `nft`.
    if filter_table_absent() {
        return Ok(None);
    }
    nft_args(&["-a", "list", "chain", "ip", "filter", "FORWARD"])
}

/// Names of the host's nftables tables of the `ip` family, asked of the kernel over
/// netlink: a dump request (`NFT_MSG_GETTABLE` of the nftables subsystem on a
/// `NETLINK_NETFILTER` socket) answered by one message per table, each carrying the table's
/// name as attribute `NFTA_TABLE_NAME`. This costs two system calls where `nft list` costs
/// a process, which matters on every `up` (reconcile checks each network's table).
pub fn ip_tables() -> Result<Vec<String>> {
    const NFT_MSG_GETTABLE: u16 = 1;
    const NFTA_TABLE_NAME: u16 = 1;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    let mut names = Vec::new();
    for attrs in netfilter_request(NFT_MSG_GETTABLE, flags, libc::AF_INET as u8)? {
        for (kind, raw) in attrs {
            if kind == NFTA_TABLE_NAME {
                let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
                names.push(String::from_utf8_lossy(&raw[..end]).into_owned());
            }
        }
    }
    Ok(names)
}

/// The (table, chain) names of the host's nftables chains of the `ip` family, over netlink
/// (`NFT_MSG_GETCHAIN` dump; `NFTA_CHAIN_TABLE`, `NFTA_CHAIN_NAME`): one request for every
/// table, so `reconcile` can tell a network's table that lacks a chain of this version.
pub fn ip_chains() -> Result<Vec<(String, String)>> {
    const NFT_MSG_GETCHAIN: u16 = 4;
    const NFTA_CHAIN_TABLE: u16 = 1;
    const NFTA_CHAIN_NAME: u16 = 3;
    let text = |raw: &[u8]| {
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    };
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    let mut out = Vec::new();
    for attrs in netfilter_request(NFT_MSG_GETCHAIN, flags, libc::AF_INET as u8)? {
        let table = attrs.iter().find(|(k, _)| *k == NFTA_CHAIN_TABLE);
        let chain = attrs.iter().find(|(k, _)| *k == NFTA_CHAIN_NAME);
        if let (Some((_, t)), Some((_, c))) = (table, chain) {
            out.push((text(t), text(c)));
        }
    }
    Ok(out)
}

/// The ruleset generation: a number the kernel changes with every change to any nftables
/// table (`NFT_MSG_GETGEN`, attribute `NFTA_GEN_ID`). Equal generations mean an unchanged
/// ruleset, so a check made at one generation holds as long as it stays the same.
pub fn generation() -> Result<u32> {
    const NFT_MSG_GETGEN: u16 = 16;
    const NFTA_GEN_ID: u16 = 1;
    let msgs = netfilter_request(NFT_MSG_GETGEN, libc::NLM_F_REQUEST as u16, 0)?;
    msgs.iter()
        .flatten()
        .find(|(kind, raw)| *kind == NFTA_GEN_ID && raw.len() >= 4)
        .map(|(_, raw)| u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
        .ok_or_else(|| Error::Nft("no generation in the nftables netlink answer".into()))
}

/// The attributes (type, payload) of one netlink message.
type Attrs = Vec<(u16, Vec<u8>)>;

/// One request of the nftables netlink subsystem; returns the attributes (type, payload) of
/// every answer message until the dump ends (or the single answer, for a plain request).
fn netfilter_request(msg: u16, flags: u16, family: u8) -> Result<Vec<Attrs>> {
    // nlmsghdr (len, type, flags, seq, pid) + nfgenmsg (family, version, res_id).
    let mut req = Vec::with_capacity(20);
    push_header(&mut req, (NFNL_SUBSYS_NFTABLES << 8) | msg, flags, 1);
    req.extend_from_slice(&[family, 0, 0, 0]);
    netfilter_send(&req, flags & (libc::NLM_F_DUMP as u16) != 0)
}

/// The nftables subsystem of nfnetlink.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// Sends `req` (one or more netlink messages) on a new `NETLINK_NETFILTER` socket and reads
/// the answer: every message of a dump until its end, else the first answer (an
/// acknowledgement ends it too; an error code becomes the error).
fn netfilter_send(req: &[u8], dump: bool) -> Result<Vec<Attrs>> {
    use std::os::fd::AsRawFd;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    let io = |what: &str| {
        Error::Io(
            format!("nftables netlink {what}"),
            std::io::Error::last_os_error(),
        )
    };
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, socket,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|_| io("socket"))?;
    // The kernel is the default destination of an unbound netlink socket.
    if send(fd.as_raw_fd(), req, MsgFlags::empty()).is_err() {
        return Err(io("send"));
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let Ok(n) = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) else {
            return Err(io("recv"));
        };
        let u32_at = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let u16_at = |o: usize| u16::from_ne_bytes([buf[o], buf[o + 1]]);
        let mut off = 0;
        while off + 16 <= n {
            let len = u32_at(off) as usize;
            let kind = u16_at(off + 4);
            if len < 16 || off + len > n {
                return Err(Error::Nft("malformed nftables netlink answer".into()));
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR if len >= 20 => {
                    let code = u32_at(off + 16) as i32;
                    if code == 0 {
                        return Ok(out);
                    }
                    return Err(Error::Io(
                        "nftables netlink request".into(),
                        std::io::Error::from_raw_os_error(-code),
                    ));
                }
                _ => {
                    // Attributes follow the 16-byte header and the 4-byte nfgenmsg.
                    let mut attrs = Vec::new();
                    let mut a = off + 20;
                    while a + 4 <= off + len {
                        let alen = u16_at(a) as usize;
                        if alen < 4 || a + alen > off + len {
                            break;
                        }
                        attrs.push((u16_at(a + 2) & 0x3fff, buf[a + 4..a + alen].to_vec()));
                        a += (alen + 3) & !3;
                    }
                    out.push(attrs);
                }
            }
            off += (len + 3) & !3;
        }
        if !dump && !out.is_empty() {
            return Ok(out);
        }
    }
}

/// The accept rules of a bridge, as `iptables` arguments after the chain name.
fn iptables_rules(bridge: &str, internal: bool) -> Vec<Vec<String>> {
    let tag = rules::tag(bridge);
    rules::forward_accepts(bridge, internal)
        .iter()
        .filter_map(|r| r.iptables(&tag))
        .collect()
}

/// `iptables-nft`, if installed: the chain belongs to it, and rules written with plain `nft`
/// would make it "incompatible" for iptables-nft (breaking Docker's own rule updates).
fn iptables_nft() -> Option<&'static str> {
    [
        "/usr/sbin/iptables-nft",
        "/sbin/iptables-nft",
        "/usr/bin/iptables-nft",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
}

/// Inserts the accept rules into `ip filter FORWARD` if that chain exists and they are missing:
/// through iptables-nft when it is installed (so the chain stays readable by it), else with
/// nft.
pub fn ensure_forward_accepts(bridge: &str, internal: bool) -> Result<()> {
    if filter_table_absent() {
        return Ok(());
    }
    if let Some(bin) = iptables_nft() {
        let Some(lines) = iptables_forward(bin)? else {
            return Ok(());
        };
        let ours: Vec<&String> = lines.iter().filter(|l| is_ours(l, bridge)).collect();
        let want = iptables_rules(bridge, internal);
        if ours.len() == want.len() {
            return Ok(());
        }
        // Some are missing (Docker flushed the chain, or someone deleted one): put the whole
        // set back in one transaction, so no half set is left.
        let mut script = String::from("*filter\n");
        for l in &ours {
            script.push_str(&format!("-D{}\n", &l[2..]));
        }
        for rule in want.iter().rev() {
            script.push_str(&format!("-I FORWARD 1 {}\n", rule.join(" ")));
        }
        script.push_str("COMMIT\n");
        return iptables_restore(bin, &script).map_err(|e| {
            Error::Nft(format!(
                "cannot insert the accept rules of {bridge} into filter FORWARD: {e}"
            ))
        });
    }
    let Some(listing) = foreign_forward()? else {
        return Ok(());
    };
    let tag = format!("\"{}\"", rules::tag(bridge));
    if listing.contains(&tag) {
        return Ok(());
    }
    nft(&insert_script(bridge, internal)).map(|_| ())
}

/// The `nft -f` script that puts the accept rules of `bridge` at the top of
/// `ip filter FORWARD`; each insert goes to the top, so the last rule comes first.
fn insert_script(bridge: &str, internal: bool) -> String {
    let tag = rules::tag(bridge);
    let mut s = String::new();
    for r in rules::forward_accepts(bridge, internal).iter().rev() {
        s.push_str(&format!(
            "insert rule ip filter FORWARD {} comment \"{tag}\"\n",
            r.nft()
        ));
    }
    s
}

/// True when the kernel says there is no `ip filter` table (most hosts without Docker): one
/// netlink dump instead of a process. False when it cannot be asked.
fn filter_table_absent() -> bool {
    ip_tables().is_ok_and(|names| !names.iter().any(|n| n == "filter"))
}

/// The rules of `filter FORWARD` as `iptables -S` prints them (`-A FORWARD …` lines), or
/// `None` when there is no such chain.
fn iptables_forward(bin: &str) -> Result<Option<Vec<String>>> {
    let out = Command::new(bin)
        .args(["-w", "5", "-S", "FORWARD"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| Error::Io(format!("run {bin}"), e))?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A FORWARD "))
            .map(str::to_string)
            .collect(),
    ))
}

/// True when an `iptables -S` line is one of the accept rules of `bridge` (tagged `tug:BR`).
fn is_ours(line: &str, bridge: &str) -> bool {
    let quoted = format!("--comment \"tug:{bridge}\"");
    let plain = format!("--comment tug:{bridge} ");
    line.contains(&quoted) || line.contains(&plain) || line.ends_with(plain.trim_end())
}

/// Applies an `iptables-restore` script without flushing (`-n`): all its lines or none.
fn iptables_restore(bin: &str, script: &str) -> Result<()> {
    let restore = format!("{bin}-restore");
    let mut child = Command::new(&restore)
        .args(["-w", "5", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io(format!("run {restore}"), e))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(script.as_bytes())
            .map_err(|e| Error::Io(format!("write to {restore}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Io(format!("wait for {restore}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(format!(
            "{restore}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Where the ruleset generation at which a bridge's FORWARD accepts were last found in
/// place is kept (`/run/tug/forward/<bridge>`: a tmpfs, so a reboot forgets it).
fn forward_marker(bridge: &str) -> std::path::PathBuf {
    super::ipam::run_dir().join("forward").join(bridge)
}

/// [`ensure_forward_accepts`], skipped when the ruleset has not changed since the rules were
/// last found in place: the check costs an `nft` (and `iptables`) process, the skip one
/// netlink request. The generation is recorded only when this check changed nothing, so a
/// change made by someone else between the two reads is checked next time.
pub fn ensure_forward_accepts_cached(bridge: &str, internal: bool) -> Result<()> {
    let marker = forward_marker(bridge);
    let before = generation().ok();
    if before.is_some()
        && std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            == before
    {
        return Ok(());
    }
    ensure_forward_accepts(bridge, internal)?;
    if let Some(g) = before
        && generation().ok() == Some(g)
        && let Some(dir) = marker.parent()
        && crate::engine::private::create_dir_all(dir).is_ok()
    {
        let _ = crate::util::fs::write_atomic(
            &marker,
            g.to_string().as_bytes(),
            crate::engine::private::FILE_MODE,
            crate::util::fs::Durability::None,
        );
    }
    Ok(())
}

/// Deletes tug's rules of `bridge` from `ip filter FORWARD`. When `internal` says which set
/// the network has, one `iptables-nft-restore` deletes exactly that set (the usual case: one
/// process); when it is unknown or the set is not whole, the chain is listed and every rule
/// tagged for the bridge is deleted.
pub fn remove_forward_accepts(bridge: &str, internal: Option<bool>) -> Result<()> {
    if filter_table_absent() {
        return Ok(());
    }
    if let Some(bin) = iptables_nft() {
        if let Some(internal) = internal {
            let mut script = String::from("*filter\n");
            for rule in iptables_rules(bridge, internal) {
                script.push_str(&format!("-D FORWARD {}\n", rule.join(" ")));
            }
            script.push_str("COMMIT\n");
            if iptables_restore(bin, &script).is_ok() {
                return Ok(());
            }
        }
        let Some(lines) = iptables_forward(bin)? else {
            return Ok(());
        };
        let mut script = String::from("*filter\n");
        let mut any = false;
        for l in lines.iter().filter(|l| is_ours(l, bridge)) {
            script.push_str(&format!("-D{}\n", &l[2..]));
            any = true;
        }
        if !any {
            return Ok(());
        }
        script.push_str("COMMIT\n");
        return iptables_restore(bin, &script);
    }
    let Some(listing) = foreign_forward()? else {
        return Ok(());
    };
    let tag = format!("comment \"tug:{bridge}\"");
    let mut s = String::new();
    for line in listing.lines().filter(|l| l.contains(&tag)) {
        if let Some(h) = line.rsplit("# handle ").next().map(str::trim)
            && h.chars().all(|c| c.is_ascii_digit())
            && !h.is_empty()
        {
            s.push_str(&format!("delete rule ip filter FORWARD handle {h}\n"));
        }
    }
    if s.is_empty() {
        return Ok(());
    }
    nft(&s).map(|_| ())
}

/// Turns on IPv4 forwarding (needed for outbound traffic of non-internal networks). tug never
/// turns it off again: other software may rely on it once it is on.
pub fn enable_ip_forward() -> Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    let cur = std::fs::read_to_string(p).map_err(|e| Error::Io(format!("read {p}"), e))?;
    if cur.trim() != "1" {
        std::fs::write(p, "1").map_err(|e| Error::Io(format!("write {p}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact text `nft -f` gets (the e2e network tests check what it does).
    #[test]
    fn ruleset_text_is_unchanged() {
        let r = NetRules {
            bridge: "tugabc".into(),
            subnet: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
            internal: false,
        };
        assert_eq!(
            ruleset(&r),
            "add table ip tugabc\ndelete table ip tugabc\ntable ip tugabc {\n  \
             chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    \
             ip saddr 10.0.0.0/24 oifname != \"tugabc\" masquerade\n  }\n  \
             chain forward {\n    type filter hook forward priority filter; policy accept;\n    \
             oifname \"tugabc\" iifname != \"tugabc\" ct state new drop\n  }\n}\n"
        );
        let r = NetRules {
            internal: true,
            ..r
        };
        assert_eq!(
            ruleset(&r),
            "add table ip tugabc\ndelete table ip tugabc\ntable ip tugabc {\n  \
             chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n  }\n  \
             chain forward {\n    type filter hook forward priority filter; policy accept;\n    \
             oifname \"tugabc\" iifname != \"tugabc\" ct state new drop\n    \
             iifname \"tugabc\" oifname != \"tugabc\" drop\n    \
             oifname \"tugabc\" iifname != \"tugabc\" drop\n  }\n  \
             chain input {\n    type filter hook input priority filter; policy accept;\n    \
             iifname \"tugabc\" ip daddr 10.0.0.1 udp dport 53 accept\n    \
             iifname \"tugabc\" ip daddr 10.0.0.1 tcp dport 53 accept\n    \
             iifname \"tugabc\" ct state established,related accept\n    \
             iifname \"tugabc\" meta l4proto tcp reject with tcp reset\n    \
             iifname \"tugabc\" reject\n  }\n}\n"
        );
    }

    /// The accept rules in `ip filter FORWARD`, as nft and as iptables-nft write them.
    #[test]
    fn forward_accept_texts_are_unchanged() {
        assert_eq!(
            insert_script("br1", false),
            "insert rule ip filter FORWARD oifname \"br1\" ct state established,related accept \
             comment \"tug:br1\"\ninsert rule ip filter FORWARD iifname \"br1\" accept comment \
             \"tug:br1\"\n"
        );
        assert_eq!(
            insert_script("br1", true),
            "insert rule ip filter FORWARD iifname \"br1\" oifname \"br1\" accept comment \
             \"tug:br1\"\n"
        );
        let joined = |internal| {
            iptables_rules("br1", internal)
                .iter()
                .map(|r| r.join(" "))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            joined(false),
            [
                "-i br1 -m comment --comment tug:br1 -j ACCEPT",
                "-o br1 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment tug:br1 \
                 -j ACCEPT"
            ]
        );
        assert_eq!(
            joined(true),
            ["-i br1 -o br1 -m comment --comment tug:br1 -j ACCEPT"]
        );
    }

    #[test]
    fn internal_has_no_masquerade() {
        let r = NetRules {
            bridge: "tugabc".into(),
            subnet: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
            internal: true,
        };
        let s = ruleset(&r);
        assert!(!s.contains("masquerade"), "{s}");
        assert!(s.contains("drop"), "{s}");
        // Nothing of the host is reachable but the network's DNS server.
        assert!(s.contains("type filter hook input"), "{s}");
        assert!(
            s.contains("iifname \"tugabc\" ip daddr 10.0.0.1 udp dport 53 accept"),
            "{s}"
        );
        assert!(s.contains("iifname \"tugabc\" reject"), "{s}");
        let r = NetRules {
            internal: false,
            ..r
        };
        let s = ruleset(&r);
        assert!(!s.contains("hook input"), "{s}");
        assert!(
            s.contains("ip saddr 10.0.0.0/24 oifname != \"tugabc\" masquerade"),
            "{s}"
        );
        assert!(s.contains("ct state new drop"), "{s}");
        assert!(!s.contains("oifname != \"tugabc\" drop"), "{s}");
    }
}
