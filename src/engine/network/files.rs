//! The contents of a container's `/etc/hosts` and `/etc/resolv.conf`.
//!
//! The C library resolves names by reading `/etc/hosts` first, then asking the `nameserver`s of
//! `/etc/resolv.conf` (in order, up to three), appending each `search` domain to names with
//! fewer than `ndots` dots. tug writes both files for every container (scratch images have
//! none): `/etc/hosts` maps localhost, the container's own hostname to its first address and
//! `extra_hosts`; resolv.conf names the network's embedded DNS server (the gateway), which
//! answers names of the network and forwards the rest (to the container's `dns:` servers if it
//! has any). Without a network (`network_mode: none` or `host`) resolv.conf lists the `dns:`
//! servers, else the host's.

use std::net::Ipv4Addr;

use super::{Error, Result};

/// What a container's /etc/hosts is made of.
#[derive(Debug, Clone, Default)]
pub struct HostsSpec {
    pub hostname: String,
    pub domainname: Option<String>,
    /// The container's own address (first network), if any.
    pub ip: Option<Ipv4Addr>,
    /// `extra_hosts` entries as `NAME:IP` or `NAME=IP`; `host-gateway` means `gateway`.
    pub extra_hosts: Vec<String>,
    /// The address `host-gateway` stands for (the gateway of the first network).
    pub gateway: Option<Ipv4Addr>,
}

/// Renders /etc/hosts.
pub fn hosts_file(spec: &HostsSpec) -> Result<String> {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for e in &spec.extra_hosts {
        let (name, ip) = e
            .split_once('=')
            .or_else(|| e.split_once(':'))
            .ok_or_else(|| Error::Invalid(format!("extra_hosts entry {e:?} is not NAME:IP")))?;
        let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
        let ip = if ip == "host-gateway" {
            spec.gateway
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "extra_hosts entry {e:?}: host-gateway needs a network"
                    ))
                })?
                .to_string()
        } else {
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| Error::Invalid(format!("extra_hosts entry {e:?}: bad address")))?
                .to_string()
        };
        s.push_str(&format!("{ip}\t{}\n", name.trim()));
    }
    if let Some(ip) = spec.ip {
        match spec.domainname.as_deref().filter(|d| !d.is_empty()) {
            Some(d) => s.push_str(&format!("{ip}\t{}.{d} {}\n", spec.hostname, spec.hostname)),
            None => s.push_str(&format!("{ip}\t{}\n", spec.hostname)),
        }
    }
    Ok(s)
}

/// What a container's /etc/resolv.conf is made of.
#[derive(Debug, Clone, Default)]
pub struct ResolvSpec {
    /// The embedded DNS server (gateway of the first network), if the container has one.
    pub embedded: Option<Ipv4Addr>,
    /// `dns:` servers.
    pub dns: Vec<String>,
    /// `dns_search:` domains.
    pub search: Vec<String>,
    /// `dns_opt:` options.
    pub options: Vec<String>,
    /// The host's resolv.conf text (used when there is neither `embedded` nor `dns`).
    pub host: String,
}

/// Renders /etc/resolv.conf.
pub fn resolv_conf(spec: &ResolvSpec) -> String {
    let mut s = String::new();
    let servers: Vec<String> = if let Some(ip) = spec.embedded {
        vec![ip.to_string()]
    } else if !spec.dns.is_empty() {
        spec.dns.clone()
    } else {
        let host = super::dns::resolv_conf_nameservers(&spec.host);
        if host.is_empty() {
            vec!["127.0.0.1".to_string()]
        } else {
            host
        }
    };
    let host_search: Vec<String> = spec
        .host
        .lines()
        .filter_map(|l| l.strip_prefix("search "))
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect();
    let search = if !spec.search.is_empty() {
        spec.search.clone()
    } else if spec.embedded.is_none() {
        host_search
    } else {
        Vec::new()
    };
    if !search.is_empty() && search != ["."] {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    for ns in servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    if !spec.options.is_empty() {
        s.push_str(&format!("options {}\n", spec.options.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_extra_and_domain() {
        let h = hosts_file(&HostsSpec {
            hostname: "web".into(),
            domainname: Some("example.test".into()),
            ip: Some(Ipv4Addr::new(10, 89, 0, 2)),
            extra_hosts: vec!["db:10.0.0.9".into(), "gw=host-gateway".into()],
            gateway: Some(Ipv4Addr::new(10, 89, 0, 1)),
        })
        .unwrap();
        assert!(h.contains("127.0.0.1\tlocalhost\n"), "{h}");
        assert!(h.contains("10.0.0.9\tdb\n"), "{h}");
        assert!(h.contains("10.89.0.1\tgw\n"), "{h}");
        assert!(h.contains("10.89.0.2\tweb.example.test web\n"), "{h}");
        assert!(
            hosts_file(&HostsSpec {
                extra_hosts: vec!["nope".into()],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn resolv_embedded_and_custom() {
        let r = resolv_conf(&ResolvSpec {
            embedded: Some(Ipv4Addr::new(10, 89, 0, 1)),
            dns: vec!["9.9.9.9".into()],
            search: vec!["corp.test".into()],
            options: vec!["ndots:2".into()],
            host: "nameserver 1.1.1.1\n".into(),
        });
        assert_eq!(
            r,
            "search corp.test\nnameserver 10.89.0.1\noptions ndots:2\n"
        );
        let r = resolv_conf(&ResolvSpec {
            host: "search lan\nnameserver 1.1.1.1\n".into(),
            ..Default::default()
        });
        assert_eq!(r, "search lan\nnameserver 1.1.1.1\n");
    }
}
