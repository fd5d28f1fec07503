//! Image references and Docker Hub name normalisation.
//!
//! A reference names an image in a registry: `[domain[:port]/]path[:tag][@digest]`. The first
//! path component is a registry domain only if it contains a `.` or a `:`, or is `localhost`;
//! otherwise the image lives on Docker Hub (`docker.io`), where single-component names are in
//! the `library/` namespace. So `busybox` is `docker.io/library/busybox:latest`, as Docker and
//! Podman read it. A reference without tag or digest means the tag `latest`.
//!
//! The grammar is distribution's `reference` package (the one `oci_spec::distribution::Reference`
//! ports). The parser here is hand-written because oci_spec's compiles a large regex on first
//! use, about 35 ms of CPU in every tug process that names an image (a 16 ms container start
//! became 47 ms); a unit test checks that both agree on a corpus of valid and invalid
//! references. The store records the full, normalised form; [`Reference::familiar`] gives back the short
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
    /// Parses and normalises `s` with Docker's rules (the grammar of distribution's
    /// `reference` package, `docker.io` and `library/` for short names, `latest` when neither
    /// tag nor digest is given), plus two rules of tug's store: `registry-1.docker.io` is
    /// Docker Hub too, and a digest is `sha256` (the only algorithm the store keeps). Errors
    /// name the reference and the rule it breaks.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidReference {
            reference: s.to_string(),
            reason: why.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if let Err(why) = validate_digest(d) {
                    return Err(bad(&if grammatical_digest(d) {
                        why.to_string()
                    } else {
                        invalid_part(s).to_string()
                    }));
                }
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
        if name.len() > 255 {
            return Err(bad("repository name longer than 255 characters"));
        }
        if tag.as_deref().is_some_and(|t| !valid_tag(t)) || name.is_empty() {
            return Err(bad(invalid_part(s)));
        }
        let (domain, path) = match name.split_once('/') {
            // distribution's rule: a first component with '.', ':' or an uppercase letter,
            // or `localhost`, is a registry host.
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_domain(&domain) || path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad(invalid_part(s)));
        }
        let domain = if domain == "index.docker.io" || domain == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            domain
        };
        let repository = if domain == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path
        };
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

/// A tag: a word character, then up to 127 of word characters, '.' and '-'.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// A registry host: DNS labels of letters, digits and inner '-', and an optional port.
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

/// `algorithm:hex` as the reference grammar has it (at least 32 hex digits), whatever the
/// algorithm: such a digest is well formed but may still be one the store does not keep.
fn grammatical_digest(d: &str) -> bool {
    d.split_once(':').is_some_and(|(alg, hex)| {
        let a = alg.as_bytes();
        !a.is_empty()
            && a[0].is_ascii_lowercase()
            && a.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+._-".contains(&c))
            && hex.len() >= 32
            && hex.bytes().all(|c| c.is_ascii_hexdigit())
    })
}

/// Which part of `s` breaks the reference grammar, for the error message: the digest, the
/// tag, or else the name. Only called after the parser refused `s`.
fn invalid_part(s: &str) -> &'static str {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest
        && validate_digest(d).is_err()
    {
        return "invalid digest (want sha256:<64 lowercase hex digits>)";
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let tag_ok = |t: &str| {
        let b = t.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    };
    if tag.is_some_and(|t| !tag_ok(t)) {
        return "invalid tag (letters, digits, '_', '.', '-'; at most 128)";
    }
    let path = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => path,
        _ => name,
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return "repository name must be lowercase";
    }
    "invalid repository name (registry host, then lowercase letters and digits separated by \
     '.', '_', '__', '-' or '/')"
}

/// A digest the store cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DigestError {
    /// `sha256:` without 64 lowercase hex digits.
    #[error("invalid sha256 digest (want 64 lowercase hex digits)")]
    Hex,
    /// Another algorithm than sha256.
    #[error("unsupported digest algorithm {0}")]
    Algorithm(String),
    /// No `algorithm:`.
    #[error("invalid digest (want sha256:<hex>)")]
    Form,
}

/// Checks that `d` is `sha256:` followed by 64 lowercase hex digits.
pub(crate) fn validate_digest(d: &str) -> std::result::Result<(), DigestError> {
    match d.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && is_lower_hex(hex) => Ok(()),
        Some(("sha256", _)) => Err(DigestError::Hex),
        Some((alg, _)) => Err(DigestError::Algorithm(alg.to_owned())),
        None => Err(DigestError::Form),
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
        assert_eq!(
            full("registry-1.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(full("library/busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(full("me/a__b-c.d"), "docker.io/me/a__b-c.d:latest");
        assert_eq!(full("localhost:5000/x"), "localhost:5000/x:latest");
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
        // Digests the store cannot keep are refused by name.
        let e = Reference::parse(&format!("busybox@sha512:{}", "a".repeat(128))).unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported digest algorithm sha512"),
            "{e}"
        );
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

    #[test]
    fn errors_name_the_reference_and_the_part() {
        let e = |s: &str| Reference::parse(s).unwrap_err().to_string();
        let m = e("Busybox");
        assert!(
            m.contains("\"Busybox\"") && m.contains("must be lowercase"),
            "{m}"
        );
        let m = e("quay.io/Me/app");
        assert!(
            m.contains("\"quay.io/Me/app\"") && m.contains("lowercase"),
            "{m}"
        );
        let m = e("busybox:-x");
        assert!(
            m.contains("\"busybox:-x\"") && m.contains("invalid tag"),
            "{m}"
        );
        let m = e("busybox@md5:abc");
        assert!(
            m.contains("\"busybox@md5:abc\"") && m.contains("invalid digest"),
            "{m}"
        );
        let m = e("a//b");
        assert!(m.contains("invalid repository name"), "{m}");
        assert!(e("").contains("empty reference"));
        let long = format!("me/{}", "a".repeat(300));
        assert!(e(&long).contains("longer than 255"));
    }

    #[test]
    fn registry_hosts_and_ports() {
        let r = Reference::parse("localhost:5000/x:y").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "x", Some("y"))
        );
        assert_eq!(r.familiar(), "localhost:5000/x:y");
        let r = Reference::parse("registry-1.docker.io/me/app").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.repository.as_str()),
            ("docker.io", "me/app")
        );
        assert_eq!(r.familiar(), "me/app:latest");
        // A first component without '.' or ':' is a Docker Hub namespace, not a host.
        let r = Reference::parse("myhost/app").unwrap();
        assert_eq!(r.name(), "docker.io/myhost/app");
        // A name without '/' has no registry host: this is tag 5000 of a Docker Hub image.
        assert_eq!(full("test.com:5000"), "docker.io/library/test.com:5000");
        let d = format!("sha256:{}", "b".repeat(64));
        let r = Reference::parse(&format!("localhost:5000/x@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("localhost:5000/x@{d}"));
        assert_eq!(r.without_digest().to_string(), "localhost:5000/x:latest");
    }

    /// The hand-written parser agrees with oci_spec's port of distribution's grammar: the
    /// same references are accepted, with the same registry, repository, tag and digest
    /// (after tug's two rules: `registry-1.docker.io` is Docker Hub, digests are sha256).
    #[test]
    fn agrees_with_oci_spec_on_a_corpus() {
        let h = |c: char, n: usize| c.to_string().repeat(n);
        let mut corpus: Vec<String> = [
            "busybox",
            "busybox:1.36",
            "me/app",
            "docker.io/busybox",
            "index.docker.io/me/app:v1",
            "localhost/app",
            "localhost:5000/a/b:c",
            "quay.io/x/y",
            "library/busybox:1",
            "me/a__b-c.d",
            "a---b",
            "a__b",
            "myhost/app",
            "test.com:5000",
            "test.com:5000/x",
            "Quay.io/x/y",
            "a.b-c.d:80/x/y/z:tag_1.2-3",
            "x:_t",
            "x:.t",
            "x:t.",
            "Busybox",
            "a//b",
            "-a",
            "a-",
            "a:",
            "a:-x",
            ":x",
            "a b",
            "a/../b",
            "/a",
            "a..b",
            "a___b",
            "a/b/",
            "a:b:c",
            "a@",
            "@sha256:x",
            "localhost:/x",
            "local_host/x",
            "-h.io/x",
            "h-.io/x",
            "h.io:99999/x",
            "h.io:/x",
            "me/App",
            "x:tag!",
            "docker.io/library/busybox:latest",
            "registry-1.docker.io/busybox",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        corpus.push(format!("x:{}", h('t', 128)));
        corpus.push(format!("x:{}", h('t', 129)));
        corpus.push(format!("me/{}", h('a', 252)));
        corpus.push(format!("me/{}", h('a', 253)));
        corpus.push(format!("busybox@sha256:{}", h('a', 64)));
        corpus.push(format!("quay.io/x:1@sha256:{}", h('b', 64)));
        corpus.push(format!("busybox@sha256:{}", h('A', 64)));
        corpus.push(format!("busybox@sha256:{}", h('a', 63)));
        for s in &corpus {
            let ours = Reference::parse(s).ok();
            let theirs = oci_spec::distribution::Reference::try_from(s.as_str())
                .ok()
                .map(|r| {
                    let domain = match r.registry() {
                        "registry-1.docker.io" | "index.docker.io" => DOCKER_HUB,
                        d => d,
                    };
                    let repository = if domain == DOCKER_HUB && !r.repository().contains('/') {
                        format!("{OFFICIAL_NAMESPACE}/{}", r.repository())
                    } else {
                        r.repository().to_string()
                    };
                    Reference {
                        domain: domain.to_string(),
                        repository,
                        tag: r.tag().map(str::to_string),
                        digest: r.digest().map(str::to_string),
                    }
                })
                .filter(|r| {
                    r.digest
                        .as_deref()
                        .is_none_or(|d| validate_digest(d).is_ok())
                });
            assert_eq!(ours, theirs, "{s:?}");
        }
        // Where oci_spec departs from distribution: a first component with an uppercase
        // letter is a registry host there (and for docker), a Docker Hub namespace in
        // oci_spec 0.8 (which then breaks its own lowercase rule).
        let r = Reference::parse("UPPER/x").unwrap();
        assert_eq!((r.domain.as_str(), r.repository.as_str()), ("UPPER", "x"));
    }
}
