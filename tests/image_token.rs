//! Bearer-token auth against a real `docker-registry` configured with `auth: token`, and a
//! token server run by the test on 127.0.0.1.
//!
//! The registry answers `401` with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`; the
//! client asks the realm (the token server below) for a token for
//! `repository:<name>:pull[,push]`, sending the user's basic credentials; the token is a JWT
//! signed RS256 with a key whose self-signed certificate is in the registry's
//! `rootcertbundle` and in the JWT header's `x5c`. The registry checks signature, issuer,
//! audience (= service), times and the granted actions. The test makes the key and certificate
//! with the `openssl` CLI and signs with `openssl dgst -sha256 -sign`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::common::{fails, ok};
use crate::image_registry::{Env, base64_encode, have, inspect, listing, registry_with};

const USER: &str = "tokuser";
const PASSWORD: &str = "t0ken-pass";
const SERVICE: &str = "tug-test-registry";
const ISSUER: &str = "tug-test-issuer";

/// A token server on 127.0.0.1 (plain HTTP), stopped and joined on drop.
struct TokenServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Every request: (user or "-", scopes, status).
    log: Arc<Mutex<Vec<(String, String, u16)>>>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(hex, 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Key material: the private key file and the certificate's DER, base64 (for `x5c`).
struct Keys {
    key: PathBuf,
    cert_pem: PathBuf,
    cert_der_b64: String,
}

fn make_keys(dir: &Path) -> Keys {
    let key = dir.join("token.key");
    let cert_pem = dir.join("token.crt");
    ok(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=tug-test-token-issuer", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert_pem)
        .stderr(Stdio::null()));
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert_pem)
        .output()
        .unwrap();
    assert!(der.status.success() && !der.stdout.is_empty());
    Keys {
        key,
        cert_pem,
        cert_der_b64: base64::engine::general_purpose::STANDARD.encode(&der.stdout),
    }
}

/// A JWT for `sub` granting `access` (a JSON array), RS256, `x5c` = the certificate.
fn sign_token(keys: &Keys, sub: &str, access: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [keys.cert_der_b64]});
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", rand_suffix()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&keys.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{input}.{}", b64url(&out.stdout))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) * 1_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

/// Answers one token request.
fn serve_one(
    stream: TcpStream,
    keys: &Keys,
    log: &Mutex<Vec<(String, String, u16)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut user: Option<(String, String)> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
            && let Some(b) = value.trim().strip_prefix("Basic ")
            && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim())
            && let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':')
        {
            user = Some((u.to_string(), p.to_string()));
        }
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    let mut service = String::new();
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "scope" => scopes.push(percent_decode(v)),
            "service" => service = percent_decode(v),
            _ => {}
        }
    }
    let who = user.as_ref().map_or("-".to_string(), |(u, _)| u.clone());
    let (status, body) = match &user {
        Some((u, p)) if u != USER || p != PASSWORD => {
            (401, r#"{"details":"bad credentials"}"#.to_string())
        }
        _ if service != SERVICE => (400, r#"{"details":"unknown service"}"#.to_string()),
        _ => {
            // Known user: every requested action. Anonymous: a token with no access at all
            // (as public token servers answer), which the registry then refuses.
            let access: Vec<serde_json::Value> = if user.is_some() {
                scopes
                    .iter()
                    .filter_map(|s| {
                        let mut parts = s.splitn(3, ':');
                        let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(serde_json::json!({
                            "type": t,
                            "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>(),
                        }))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let token = sign_token(keys, &who, &serde_json::Value::Array(access));
            (
                200,
                serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                    .to_string(),
            )
        }
    };
    log.lock().unwrap().push((who, scopes.join(" "), status));
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Bad Request",
    };
    let mut w = stream;
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

fn token_server(keys: Keys) -> TokenServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let thread = {
        let stop = stop.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = conn {
                    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                    let _ = serve_one(s, &keys, &log);
                }
            }
        })
    };
    TokenServer {
        addr,
        stop,
        thread: Some(thread),
        log,
    }
}

/// Files and sizes under a state root's store (images and layers), for "unchanged" checks.
fn store_listing(root: &Path) -> String {
    let mut out = String::new();
    for d in ["images", "layers"] {
        let p = root.join(d);
        if p.exists() {
            out.push_str(&listing(&p));
        }
    }
    out
}

#[test]
fn image_token_auth_push_pull_and_refusal() {
    if !have("docker-registry") || !have("openssl") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("tug-token-registry-")
        .tempdir()
        .unwrap();
    let keys = make_keys(dir.path());
    let auth = format!(
        "auth:\n  token:\n    realm: http://{{REALM}}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        keys.cert_pem.display()
    );
    let server = token_server(keys);
    let auth = auth.replace("{REALM}", &server.addr.to_string());
    let reg = registry_with(dir, &auth);

    let env = Env::new();
    crate::common::busybox_image(&env.root("a"));
    let want = inspect(&env, "a", "busybox");
    let name = format!("{}/tok/bb:1", reg.host);

    // Without credentials the token server hands out a token with no access: refused.
    let err = fails(env.tug("a").args(["image", "push", "busybox", &name]));
    assert!(
        err.contains("authentication refused") && err.contains("tok/bb:1"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // `tug login` checks the credentials through the token server and stores them.
    let out = ok(env
        .tug("a")
        .args(["login", "-u", USER, "--password", PASSWORD, &reg.host]));
    assert!(out.contains("Login Succeeded"), "{out}");
    // A wrong password: login refused, and nothing stored over the good one.
    let err = fails(
        env.tug("a")
            .args(["login", "-u", USER, "--password", "nope", &reg.host]),
    );
    assert!(err.contains("authentication refused"), "{err}");

    // Push and pull with the stored credentials; digests equal.
    let out = ok(env.tug("a").args(["image", "push", "busybox", &name]));
    assert!(out.contains(want["Digest"].as_str().unwrap()), "{out}");
    ok(env.tug("b").args(["image", "pull", &name]));
    let got = inspect(&env, "b", &name);
    assert_eq!(got["Digest"], want["Digest"]);
    assert_eq!(got["Id"], want["Id"]);
    {
        let log = server.log.lock().unwrap();
        assert!(
            log.iter()
                .any(|(u, s, st)| u == USER && s == "repository:tok/bb:pull,push" && *st == 200),
            "no push-scoped token was issued: {log:?}"
        );
        assert!(
            log.iter()
                .any(|(u, s, st)| u == USER && s == "repository:tok/bb:pull" && *st == 200),
            "no pull-scoped token was issued: {log:?}"
        );
    }

    // A wrong password (Docker's config.json, since tug login refuses to store one): the
    // pull is refused in one line naming the reference, and the store is unchanged.
    let docker = env.dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            reg.host,
            base64_encode(format!("{USER}:wrong").as_bytes())
        ),
    )
    .unwrap();
    let c = env.root("c");
    crate::common::busybox_image(&c);
    let before = store_listing(&c);
    // tug's own credentials win over Docker's: log out first so the wrong ones are used.
    ok(env.tug("c").args(["logout", &reg.host]));
    let err = fails(env.tug("c").args(["image", "pull", &name]));
    assert!(
        err.contains("authentication refused") && err.contains("tok/bb:1"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("the token server said: bad credentials"),
        "{err}"
    );
    assert_eq!(
        store_listing(&c),
        before,
        "a refused pull changed the store"
    );
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, st)| *st == 401),
        "the token server never refused"
    );
}
