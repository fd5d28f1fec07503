//! Validation of what callers name: network names, MAC addresses, namespace keys.

use super::*;

pub(super) fn validate_name(name: &str) -> Result<()> {
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

pub(super) fn parse_mac(s: &str) -> Result<[u8; 6]> {
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

pub(super) fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A namespace key (a container name or id, a build slot): one path component, not hidden.
pub(super) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('/') || key.starts_with('.') {
        return Err(Error::Invalid(format!("bad container id {key:?}")));
    }
    Ok(())
}

/// The driver options of a bridge network tug carries out: (MTU, bridge name). Options
/// Docker's bridge driver has and tug does not honour differently are accepted; any other is
/// refused by name.
pub(super) fn driver_options(spec: &NetworkSpec) -> Result<(Option<u32>, Option<String>)> {
    let mut mtu = None;
    let mut bridge = None;
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
                bridge = Some(v.clone());
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
    Ok((mtu, bridge))
}

/// The gateway of a network in `subnet`: the spec's (a host address of the subnet), else the
/// subnet's first host address.
pub(super) fn gateway_in(spec: &NetworkSpec, subnet: Ipv4Net) -> Result<Ipv4Addr> {
    let Some(g) = spec.gateway.as_deref() else {
        return Ok(Ipv4Addr::from(subnet.first() + 1));
    };
    let g: Ipv4Addr = g.parse().map_err(|_| {
        Error::Invalid(format!(
            "network {}: gateway {g:?} is not an IPv4 address",
            spec.name
        ))
    })?;
    if !subnet.contains(g) || u32::from(g) == subnet.first() || u32::from(g) == subnet.last() {
        return Err(Error::Invalid(format!(
            "network {}: gateway {g} is not a host address of {subnet}",
            spec.name
        )));
    }
    Ok(g)
}

/// The range addresses are handed out from: the spec's `ip_range` (inside `subnet`), else
/// the whole subnet.
pub(super) fn ip_range_in(spec: &NetworkSpec, subnet: Ipv4Net) -> Result<Ipv4Net> {
    let Some(r) = spec.ip_range.as_deref() else {
        return Ok(subnet);
    };
    let r: Ipv4Net = r.parse()?;
    if !(subnet.first() <= r.first() && r.last() <= subnet.last()) {
        return Err(Error::Invalid(format!(
            "network {}: ip_range {r} is not inside {subnet}",
            spec.name
        )));
    }
    Ok(r)
}
