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
