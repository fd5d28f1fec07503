//! Image references and Docker Hub name normalisation.
//!
//! A reference names an image in a registry: `[domain[:port]/]path[:tag][@digest]`. The first
//! path component is a registry domain only if it contains a `.` or a `:`, or is `localhost`;
//! otherwise the image lives on Docker Hub (`docker.io`), where single-component names are in
//! the `library/` namespace. So `busybox` is `docker.io/library/busybox:latest`, as Docker and
//! Podman read it. A reference without tag or digest means the tag `latest`.
//!
//! The store records the full, normalised form; [`Reference::familiar`] gives back the short
//! form people type (`busybox:latest`, `myuser/app:1`, `localhost:5000/x:y`).

use std::fmt;

use super::{Error, Result};

/// The registry that names without a domain refer to.
pub const DOCKER_HUB: &str = "docker.io";
/// The namespace of single-component Docker Hub names.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`).
    pub domain: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, if given (a reference with neither tag nor digest gets `latest`).
    pub tag: Option<String>,
    /// Manifest digest (`sha256:<hex>`), if given.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s`. Errors name the reference and the rule it breaks.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidReference {
            reference: s.to_string(),
            reason: why.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        if s.len() > 4096 {
            return Err(bad("too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(|why| bad(&why))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(bad(
                "invalid tag (letters, digits, '_', '.', '-'; at most 128)",
            ));
        }
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_domain(&domain) {
            return Err(bad("invalid registry domain"));
        }
        let domain = if domain == "index.docker.io" || domain == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            domain
        };
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad(
                "invalid repository name (lowercase letters, digits and separators '.', '_', '-', '/')",
            ));
        }
        let repository = if domain == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path
        };
        if repository.len() > 255 {
            return Err(bad("repository name longer than 255 characters"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_string())
        } else {
            tag
        };
        Ok(Self {
            domain,
            repository,
            tag,
            digest,
        })
    }

    /// `domain/repository`, e.g. `docker.io/library/busybox`.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.repository)
    }

    /// The short form of the repository, as Docker shows it (`busybox`, `me/app`,
    /// `localhost:5000/app`).
    #[must_use]
    pub fn familiar_name(&self) -> String {
        if self.domain == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The short form of the whole reference (`busybox:latest`).
    #[must_use]
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The same reference without its digest (the form stored as an image name).
    #[must_use]
    pub fn without_digest(&self) -> Self {
        Self {
            digest: None,
            tag: Some(self.tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string())),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    /// The full, normalised form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// One path component: lowercase alphanumerics separated by `.`, `_`, `__`, or runs of `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__', or one or more '-'.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_lower_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Checks that `d` is `sha256:` followed by 64 lowercase hex digits.
pub(crate) fn validate_digest(d: &str) -> std::result::Result<(), String> {
    match d.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && is_lower_hex(hex) => Ok(()),
        Some(("sha256", _)) => Err("invalid sha256 digest (want 64 lowercase hex digits)".into()),
        Some((alg, _)) => Err(format!("unsupported digest algorithm {alg}")),
        None => Err("invalid digest (want sha256:<hex>)".into()),
    }
}

pub(crate) fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_docker_hub_names() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(full("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            full("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(full("index.docker.io/me/app:v1"), "docker.io/me/app:v1");
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("localhost:5000/a/b:c"), "localhost:5000/a/b:c");
        assert_eq!(full("quay.io/x/y"), "quay.io/x/y:latest");
    }

    #[test]
    fn digests_and_tags() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        let r = Reference::parse(&format!("busybox:1@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert!(Reference::parse("busybox@sha256:abc").is_err());
        assert!(Reference::parse("busybox@md5:abc").is_err());
    }

    #[test]
    fn familiar_forms() {
        let f = |s: &str| Reference::parse(s).unwrap().familiar();
        assert_eq!(f("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(f("me/app:1"), "me/app:1");
        assert_eq!(f("docker.io/library/a/b"), "library/a/b:latest");
        assert_eq!(f("localhost:5000/a"), "localhost:5000/a:latest");
    }

    #[test]
    fn rejects_bad_names() {
        for s in [
            "", "Busybox", "a//b", "-a", "a-", "a:", "a:-x", ":x", "a b", "a/../b", "/a", "a..b",
            "a___b",
        ] {
            assert!(Reference::parse(s).is_err(), "{s:?} should be rejected");
        }
        assert!(Reference::parse("a__b").is_ok());
        assert!(Reference::parse("a---b").is_ok());
    }
}
