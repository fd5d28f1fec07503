//! Registry credentials and registry settings.
//!
//! Credentials for a registry host come from, in order:
//! 1. tug's own file, written by `tug login`: `$TUG_CONFIG/auth.json` (default
//!    `$XDG_CONFIG_HOME/tug` or `~/.config/tug`), mode 0600, in Docker's format
//!    (`{"auths": {"HOST": {"auth": base64("user:password")}}}`);
//! 2. Docker's `config.json` (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`):
//!    a credential helper for the host (`credHelpers`) or for all hosts (`credsStore`) —
//!    the program `docker-credential-<name>`, asked with `get` and the server on stdin, answers
//!    `{"Username": …, "Secret": …}` — or else the inline `auths` entry.
//!
//! Docker Hub is keyed `https://index.docker.io/v1/` in Docker's files; tug accepts that key
//! and `docker.io` for it.
//!
//! This is hand-written rather than the `docker_credential` crate (1.4): that crate only reads
//! (tug also writes its own file, which comes first), its config error carries no reason (no
//! path, no parse position), and a helper without credentials for the host is an error there,
//! where Docker and tug go on anonymously.
//!
//! Settings (`$TUG_CONFIG/registries.json`, all optional): `insecure` (hosts reached over plain
//! HTTP; loopback hosts always are), `mirrors` (`{"docker.io": ["mirror:5000"]}`, tried in order
//! before the registry itself when pulling) and `ca_certs` (PEM files trusted besides the
//! system roots). `TUG_INSECURE_REGISTRIES` (comma-separated) adds insecure hosts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::fsutil::io_ctx;
use super::{DOCKER_HUB, Error, Result};

/// Docker's key for Docker Hub in `config.json`.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A username and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(
        default,
        rename = "credsStore",
        skip_serializing_if = "Option::is_none"
    )]
    creds_store: Option<String>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// Registry settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegistrySettings {
    /// Hosts reached over plain HTTP.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Mirrors per registry host, tried in order before the registry when pulling.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Extra PEM CA certificate files.
    #[serde(default)]
    pub ca_certs: Vec<PathBuf>,
}

/// tug's configuration directory.
#[must_use]
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TUG_CONFIG") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("tug");
    }
    home().join(".config/tug")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

fn docker_config() -> PathBuf {
    std::env::var_os("DOCKER_CONFIG")
        .map_or_else(|| home().join(".docker"), PathBuf::from)
        .join("config.json")
}

/// The keys a host may have in an auth file.
fn keys_for(host: &str) -> Vec<String> {
    if host == DOCKER_HUB || host == "index.docker.io" || host == "registry-1.docker.io" {
        vec![
            DOCKER_HUB_KEY.to_string(),
            DOCKER_HUB.to_string(),
            "index.docker.io".to_string(),
        ]
    } else {
        vec![
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
        ]
    }
}

fn read_auth_file(path: &Path) -> Result<AuthFile> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| Error::Registry {
            reference: path.display().to_string(),
            reason: format!("cannot parse: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
        Err(e) => Err(io_ctx(format!("cannot read {}", path.display()))(e)),
    }
}

fn decode_entry(e: &AuthEntry) -> Option<Credentials> {
    if let Some(a) = &e.auth {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        return Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    }
}

/// The path of tug's credentials file.
#[must_use]
pub fn auth_file() -> PathBuf {
    config_dir().join("auth.json")
}

/// Where credentials are looked up: tug's file, Docker's `config.json`, and the directory of
/// the `docker-credential-*` programs (`None`: found on `PATH`).
#[derive(Debug, Clone)]
struct Sources {
    own: PathBuf,
    docker: PathBuf,
    helpers: Option<PathBuf>,
}

impl Sources {
    fn from_env() -> Self {
        Self {
            own: auth_file(),
            docker: docker_config(),
            helpers: None,
        }
    }
}

/// Credentials for `host`, or `None` for anonymous access.
pub fn lookup(host: &str) -> Result<Option<Credentials>> {
    lookup_in(&Sources::from_env(), host)
}

fn lookup_in(src: &Sources, host: &str) -> Result<Option<Credentials>> {
    let keys = keys_for(host);
    let own = read_auth_file(&src.own)?;
    for k in &keys {
        if let Some(c) = own.auths.get(k).and_then(decode_entry) {
            return Ok(Some(c));
        }
    }
    let docker = read_auth_file(&src.docker)?;
    let helper = keys
        .iter()
        .find_map(|k| docker.cred_helpers.get(k))
        .or(docker.creds_store.as_ref());
    if let Some(h) = helper {
        let server = if keys[0] == DOCKER_HUB_KEY {
            DOCKER_HUB_KEY
        } else {
            host
        };
        if let Some(c) = run_helper(src.helpers.as_deref(), h, server)? {
            return Ok(Some(c));
        }
    }
    for k in &keys {
        if let Some(c) = docker.auths.get(k).and_then(decode_entry) {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Asks `docker-credential-<helper> get` (in `dir`, or on `PATH`) for the credentials of
/// `server`. A helper that fails (its "credentials not found") means none.
fn run_helper(dir: Option<&Path>, helper: &str, server: &str) -> Result<Option<Credentials>> {
    if !helper
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(Error::Registry {
            reference: server.to_string(),
            reason: format!("invalid credential helper name {helper:?}"),
        });
    }
    let program = format!("docker-credential-{helper}");
    let path = dir.map_or_else(|| PathBuf::from(&program), |d| d.join(&program));
    let mut child = match Command::new(&path)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Registry {
                reference: server.to_string(),
                reason: format!("credential helper {program} is configured but not installed"),
            });
        }
        Err(e) => return Err(io_ctx(format!("cannot run {program}"))(e)),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(io_ctx(format!("cannot run {program}")))?;
    if !out.status.success() {
        // "credentials not found in native keychain": anonymous.
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let a: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|e| Error::Registry {
        reference: server.to_string(),
        reason: format!("{program} answered something else than credentials: {e}"),
    })?;
    Ok(Some(Credentials {
        username: a.username,
        password: a.secret,
    }))
}

/// Stores credentials for `host` in tug's own file (mode 0600, written atomically).
pub fn store(host: &str, creds: &Credentials) -> Result<()> {
    let path = auth_file();
    let mut file = read_auth_file(&path)?;
    let key = keys_for(host).remove(0);
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.password));
    file.auths.insert(
        key,
        AuthEntry {
            auth: Some(token),
            ..AuthEntry::default()
        },
    );
    write_private(&path, &file)
}

/// Removes credentials for `host` from tug's own file; false if there were none.
pub fn remove(host: &str) -> Result<bool> {
    let path = auth_file();
    let mut file = read_auth_file(&path)?;
    let mut removed = false;
    for k in keys_for(host) {
        removed |= file.auths.remove(&k).is_some();
    }
    if removed {
        write_private(&path, &file)?;
    }
    Ok(removed)
}

fn write_private(path: &Path, file: &AuthFile) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_ctx(format!("cannot create {}", dir.display())))?;
    let data = serde_json::to_vec_pretty(file).map_err(|e| Error::Corrupt(e.to_string()))?;
    crate::util::fs::write_atomic(path, &data, 0o600, crate::util::fs::Durability::FileAndDir)
        .map_err(io_ctx(format!("cannot write {}", path.display())))
}

/// Reads the registry settings (missing file: defaults).
pub fn settings() -> Result<RegistrySettings> {
    let path = config_dir().join("registries.json");
    let mut s: RegistrySettings = match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| Error::Registry {
            reference: path.display().to_string(),
            reason: format!("cannot parse: {e}"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistrySettings::default(),
        Err(e) => return Err(io_ctx(format!("cannot read {}", path.display()))(e)),
    };
    if let Ok(v) = std::env::var("TUG_INSECURE_REGISTRIES") {
        s.insecure.extend(
            v.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string),
        );
    }
    Ok(s)
}

/// True if `host` (with optional port) is a loopback address or name.
#[must_use]
pub fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:41234"));
        assert!(is_loopback("127.8.9.1"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn decodes_docker_auth_entries() {
        let e = AuthEntry {
            auth: Some(base64::engine::general_purpose::STANDARD.encode("me:p:w")),
            ..AuthEntry::default()
        };
        let c = decode_entry(&e).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("me", "p:w"));
        assert_eq!(keys_for("docker.io")[0], DOCKER_HUB_KEY);
    }

    /// A temp directory with tug's file, Docker's `config.json` and helper programs.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("bin")).unwrap();
            Self { dir }
        }
        fn sources(&self) -> Sources {
            Sources {
                own: self.dir.path().join("auth.json"),
                docker: self.dir.path().join("config.json"),
                helpers: Some(self.dir.path().join("bin")),
            }
        }
        fn docker_config(&self, json: &str) {
            std::fs::write(self.dir.path().join("config.json"), json).unwrap();
        }
        /// A helper that records the server it was asked about and answers `user`/`secret`
        /// (or fails as "credentials not found" when `user` is empty).
        fn helper(&self, name: &str, user: &str) {
            use std::os::unix::fs::PermissionsExt as _;
            let log = self.dir.path().join(format!("{name}.asked"));
            let answer = if user.is_empty() {
                "echo 'credentials not found in native keychain'; exit 1".to_string()
            } else {
                format!(
                    r#"printf '{{"ServerURL":"%s","Username":"{user}","Secret":"pw-{user}"}}' "$server""#
                )
            };
            let script = format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\nprintf %s \"$server\" > '{}'\n{answer}\n",
                log.display()
            );
            let path = self
                .dir
                .path()
                .join("bin")
                .join(format!("docker-credential-{name}"));
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        fn asked(&self, name: &str) -> Option<String> {
            std::fs::read_to_string(self.dir.path().join(format!("{name}.asked"))).ok()
        }
        fn lookup(&self, host: &str) -> Result<Option<Credentials>> {
            lookup_in(&self.sources(), host)
        }
    }

    fn user(c: Option<Credentials>) -> Option<(String, String)> {
        c.map(|c| (c.username, c.password))
    }

    fn basic(user: &str, pw: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    }

    #[test]
    fn docker_config_auths_by_host_and_by_docker_hub_key() {
        let f = Fixture::new();
        f.docker_config(&format!(
            r#"{{"auths": {{"reg.example:5000": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "https://other.example": {{"username": "o", "password": "p"}}}}}}"#,
            basic("me", "s3cret"),
            basic("hub", "h")
        ));
        assert_eq!(
            user(f.lookup("reg.example:5000").unwrap()),
            Some(("me".into(), "s3cret".into()))
        );
        assert_eq!(
            user(f.lookup("docker.io").unwrap()),
            Some(("hub".into(), "h".into()))
        );
        assert_eq!(
            user(f.lookup("other.example").unwrap()),
            Some(("o".into(), "p".into()))
        );
        assert_eq!(user(f.lookup("unknown.example").unwrap()), None);
    }

    #[test]
    fn creds_store_answers_for_every_host_before_inline_auths() {
        let f = Fixture::new();
        f.helper("store", "fromstore");
        f.docker_config(&format!(
            r#"{{"credsStore": "store", "auths": {{"reg.example": {{"auth": "{}"}}}}}}"#,
            basic("inline", "x")
        ));
        assert_eq!(
            user(f.lookup("reg.example").unwrap()),
            Some(("fromstore".into(), "pw-fromstore".into()))
        );
        assert_eq!(f.asked("store").as_deref(), Some("reg.example"));
        // Docker Hub is asked by Docker's key for it.
        f.lookup("docker.io").unwrap();
        assert_eq!(f.asked("store").as_deref(), Some(DOCKER_HUB_KEY));
    }

    #[test]
    fn cred_helpers_for_a_host_win_over_creds_store() {
        let f = Fixture::new();
        f.helper("store", "fromstore");
        f.helper("special", "fromhelper");
        f.docker_config(r#"{"credsStore": "store", "credHelpers": {"reg.example": "special"}}"#);
        assert_eq!(
            user(f.lookup("reg.example").unwrap()),
            Some(("fromhelper".into(), "pw-fromhelper".into()))
        );
        assert_eq!(f.asked("store"), None);
        assert_eq!(
            user(f.lookup("elsewhere.example").unwrap()),
            Some(("fromstore".into(), "pw-fromstore".into()))
        );
    }

    #[test]
    fn a_helper_without_credentials_means_inline_auths_or_anonymous() {
        let f = Fixture::new();
        f.helper("empty", "");
        f.docker_config(&format!(
            r#"{{"credsStore": "empty", "auths": {{"reg.example": {{"auth": "{}"}}}}}}"#,
            basic("inline", "x")
        ));
        assert_eq!(
            user(f.lookup("reg.example").unwrap()),
            Some(("inline".into(), "x".into()))
        );
        assert_eq!(user(f.lookup("other.example").unwrap()), None);
        assert_eq!(f.asked("empty").as_deref(), Some("other.example"));
    }

    #[test]
    fn tugs_own_file_comes_first() {
        let f = Fixture::new();
        f.helper("store", "fromstore");
        f.docker_config(r#"{"credsStore": "store"}"#);
        std::fs::write(
            f.dir.path().join("auth.json"),
            format!(
                r#"{{"auths": {{"reg.example": {{"auth": "{}"}}}}}}"#,
                basic("tug", "t")
            ),
        )
        .unwrap();
        assert_eq!(
            user(f.lookup("reg.example").unwrap()),
            Some(("tug".into(), "t".into()))
        );
        assert_eq!(f.asked("store"), None);
    }

    #[test]
    fn helper_errors_name_the_helper_and_bad_files_their_path() {
        let f = Fixture::new();
        f.docker_config(r#"{"credHelpers": {"reg.example": "absent"}}"#);
        let e = f.lookup("reg.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-absent") && e.contains("not installed"),
            "{e}"
        );
        // A helper name is a program suffix, never a path.
        f.docker_config(r#"{"credsStore": "../../bin/sh"}"#);
        let e = f.lookup("reg.example").unwrap_err().to_string();
        assert!(e.contains("invalid credential helper name"), "{e}");
        // A helper that answers something else than credentials.
        let bad = f.dir.path().join("bin/docker-credential-garbled");
        std::fs::write(&bad, "#!/bin/sh\necho not-json\n").unwrap();
        std::fs::set_permissions(&bad, {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::Permissions::from_mode(0o755)
        })
        .unwrap();
        f.docker_config(r#"{"credsStore": "garbled"}"#);
        let e = f.lookup("reg.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-garbled answered something else"),
            "{e}"
        );
        f.docker_config("{ not json");
        let e = f.lookup("reg.example").unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("cannot parse"),
            "{e}"
        );
    }
}
