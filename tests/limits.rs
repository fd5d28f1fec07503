//! Input limits that fail cleanly: env files that are FIFOs or devices (`/dev/zero`) are
//! refused at once without being read, large ones name the 1 MiB limit, compose files stop at
//! 16 MiB, interpolation nested 16,000 deep gives a clear error naming the file, line and
//! key; a secret whose file is `/dev/zero` or a FIFO is refused at `up`. Descriptors that lie
//! about sizes — from a registry the test serves itself (a layer or config larger or smaller
//! than its descriptor, an endless manifest, an oversized config) and in oci-archives — are
//! refused without touching what the store held. Each tug runs with a deadline and an
//! address-space limit, and its peak memory (`ru_maxrss` from `wait4`) is checked.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::{busybox_image, ok, require_root, run, tug, unique};

/// Wall-clock limit of one command: a FIFO must not make tug wait.
const DEADLINE: Duration = Duration::from_secs(20);
/// Address-space limit of the child: reading `/dev/zero` whole would pass it at once.
const ADDRESS_SPACE: u64 = 2 << 30;
/// Peak resident memory allowed for one command (KiB): the largest input tug may read is a
/// 16 MiB compose file.
const MAX_RSS_KIB: i64 = 160 * 1024;

/// How a bounded command ended.
struct Bounded {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    max_rss_kib: i64,
    elapsed: Duration,
}

impl Bounded {
    #[track_caller]
    fn refused_with(&self, fragments: &[&str]) {
        assert_eq!(
            (self.code, self.signal),
            (Some(1), None),
            "exit status; stderr: {}",
            self.stderr
        );
        for f in fragments {
            assert!(
                self.stderr.contains(f),
                "message lacks `{f}`: {}",
                self.stderr
            );
        }
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert!(
            self.max_rss_kib < MAX_RSS_KIB,
            "peak memory {} KiB: {}",
            self.max_rss_kib,
            self.stderr
        );
    }
}

/// Runs `cmd` with an address-space limit and a deadline (killed after it), stdin from
/// /dev/null, stderr to a file; returns how it ended and its peak memory.
fn run_bounded(cmd: Command) -> Bounded {
    run_bounded_with(cmd, Stdio::null())
}

/// [`run_bounded`] with `stdin`.
fn run_bounded_with(mut cmd: Command, stdin: Stdio) -> Bounded {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    cmd.stdin(stdin)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
    // which is async-signal-safe; lowering a limit needs no privilege.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &raw const lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also gives its peak memory"
    )]
    let child = cmd.spawn().expect("cannot start tug");
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: `status` and `usage` are valid for writes for the duration of the call;
        // `pid` is our own child, not yet reaped (std's Child never waits on its own).
        let r = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if start.elapsed() > DEADLINE && !killed {
            // SAFETY: kill has no memory effects; `pid` is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    assert!(
        !killed,
        "{cmd:?} was still running after {DEADLINE:?}: killed"
    );
    let st = std::process::ExitStatus::from_raw(status);
    Bounded {
        code: st.code(),
        signal: st.signal(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        max_rss_kib: usage.ru_maxrss,
        elapsed,
    }
}

/// A `tug` command in `dir` (project files there) with a state root of its own.
fn tug_in(dir: &Path, args: &[&str]) -> Command {
    let mut c = tug(&dir.join(".root"));
    c.current_dir(dir).args(args);
    c
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn limits_env_files_are_refused_at_once_with_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    mkfifo(&d.join("fifo.env"));
    std::fs::write(d.join("big.env"), "A=1\n".repeat(300_000)).unwrap();
    let case = |name: &str, yaml: &str| {
        let dir = d.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("compose.yaml"), yaml).unwrap();
        dir
    };
    // env_file: /dev/zero — refused without reading a byte of it.
    let dir = case(
        "zero",
        "services:\n  a:\n    image: x\n    env_file: /dev/zero\n",
    );
    let b = run_bounded(tug_in(&dir, &["config"]));
    b.refused_with(&[
        "services.a.env_file",
        "/dev/zero",
        "a device, not a regular file",
    ]);
    assert!(b.elapsed < Duration::from_secs(5), "{:?}", b.elapsed);
    // env_file: a FIFO nobody writes to — refused, not waited on.
    let fifo = d.join("fifo.env");
    let dir = case(
        "fifo",
        &format!(
            "services:\n  a:\n    image: x\n    env_file: {}\n",
            fifo.display()
        ),
    );
    let b = run_bounded(tug_in(&dir, &["config"]));
    b.refused_with(&["services.a.env_file", "fifo.env", "a FIFO"]);
    assert!(b.elapsed < Duration::from_secs(5), "{:?}", b.elapsed);
    // label_file too.
    let dir = case(
        "label",
        "services:\n  a:\n    image: x\n    label_file: /dev/zero\n",
    );
    run_bounded(tug_in(&dir, &["config"])).refused_with(&["services.a.label_file", "a device"]);
    // Over 1 MiB: the limit is named.
    let dir = case(
        "big",
        &format!(
            "services:\n  a:\n    image: x\n    env_file: {}\n",
            d.join("big.env").display()
        ),
    );
    run_bounded(tug_in(&dir, &["config"]))
        .refused_with(&["big.env", "larger than 1 MiB, the limit for env files"]);
    // --env-file and the project's .env.
    let plain = case("plain", "services:\n  a:\n    image: x\n");
    let fifo_s = fifo.to_str().unwrap();
    run_bounded(tug_in(&plain, &["--env-file", fifo_s, "config"])).refused_with(&["a FIFO"]);
    run_bounded(tug_in(&plain, &["--env-file", "/dev/zero", "config"]))
        .refused_with(&["/dev/zero", "a device"]);
    mkfifo(&plain.join(".env"));
    run_bounded(tug_in(&plain, &["config"])).refused_with(&[".env", "a FIFO"]);
    // A `.env` directory (a Python virtualenv) is no env file: ignored, as before.
    let venv = case("venv", "services:\n  a:\n    image: x\n");
    std::fs::create_dir(venv.join(".env")).unwrap();
    ok(&mut tug_in(&venv, &["config"]));
    // An include's env_file.
    let inc = case(
        "include",
        "include:\n  - path: sub.yaml\n    env_file: /dev/zero\n",
    );
    std::fs::write(inc.join("sub.yaml"), "services:\n  a:\n    image: x\n").unwrap();
    run_bounded(tug_in(&inc, &["config"])).refused_with(&["include[0].env_file", "a device"]);
    // A compose file named on the command line must be a file; one read from standard input
    // that is /dev/zero is read up to 16 MiB.
    let stdin = case("stdin", "");
    run_bounded(tug_in(&stdin, &["-f", "/dev/zero", "config"])).refused_with(&["/dev/zero"]);
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let b = run_bounded_with(tug_in(&stdin, &["-f", "-", "config"]), zero.into());
    b.refused_with(&["larger than 16 MiB, the limit for compose files"]);
}

#[test]
fn limits_deep_interpolation_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for depth in [65, 12_000, 16_000] {
        let nested = format!("{}x{}", "${UNSET_V:-".repeat(depth), "}".repeat(depth));
        std::fs::write(
            d.join("compose.yaml"),
            format!("services:\n  a:\n    image: x\n    environment:\n      DEEP: \"{nested}\"\n"),
        )
        .unwrap();
        let b = run_bounded(tug_in(d, &["config"]));
        b.refused_with(&[
            "compose.yaml:5:",
            "services.a.environment.DEEP",
            "nested more than 64 levels",
        ]);
        assert!(
            b.elapsed < Duration::from_secs(10),
            "{depth}: {:?}",
            b.elapsed
        );
        // The same in an env file names its line.
        std::fs::write(d.join("deep.env"), format!("A=1\nB={nested}\n")).unwrap();
        std::fs::write(
            d.join("compose.yaml"),
            "services:\n  a:\n    image: x\n    env_file: deep.env\n",
        )
        .unwrap();
        run_bounded(tug_in(d, &["config"])).refused_with(&["deep.env:2:1", "the limit is 64"]);
    }
    // 64 levels are fine.
    let nested = format!("{}x{}", "${UNSET_V:-".repeat(64), "}".repeat(64));
    std::fs::write(
        d.join("compose.yaml"),
        format!("services:\n  a:\n    image: x\n    environment:\n      DEEP: \"{nested}\"\n"),
    )
    .unwrap();
    let out = ok(&mut tug_in(d, &["config", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["services"]["a"]["environment"]["DEEP"], "x");
}

/// Takes a project down even when the test fails.
struct Down(PathBuf, String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = run(tug(&self.0.join(".root"))
            .current_dir(&self.0)
            .args(["-p", &self.1, "down", "-v", "-t", "1"]));
    }
}

#[test]
fn limits_secret_files_must_be_regular() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    busybox_image(&d.join(".root"));
    mkfifo(&d.join("fifo"));
    for (source, kind) in [("/dev/zero", "a device"), ("./fifo", "a FIFO")] {
        let name = unique("tls");
        let _down = Down(d.to_path_buf(), name.clone());
        std::fs::write(
            d.join("compose.yaml"),
            format!(
                "services:\n  a:\n    image: busybox:latest\n    network_mode: none\n    command: [\"true\"]\n    secrets: [s]\nsecrets:\n  s:\n    file: {source}\n"
            ),
        )
        .unwrap();
        let b = run_bounded(tug_in(d, &["-p", &name, "--progress", "plain", "up"]));
        b.refused_with(&["secret s", kind, "not a regular file"]);
    }
}

// ----- descriptors that lie -------------------------------------------------------------

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A one-layer image: (layer tar.gz, config JSON).
fn tiny_image(tag: &str) -> (Vec<u8>, Vec<u8>) {
    let mut b = tar::Builder::new(Vec::new());
    let data = format!("hello from {tag}\n");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, "hello.txt", data.as_bytes()).unwrap();
    let tar = b.into_inner().unwrap();
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::json!({
        "architecture": tug::engine::image::host_arch(),
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    (layer, serde_json::to_vec(&config).unwrap())
}

fn manifest(config: &[u8], config_size: u64, layer: &[u8], layer_size: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(layer),
            "size": layer_size,
        }],
    }))
    .unwrap()
}

/// A response body.
#[derive(Clone)]
enum Body {
    /// With `Content-Length`.
    Fixed(Vec<u8>),
    /// Chunked, no length announced.
    Chunked(Vec<u8>),
    /// Chunked, `{` then spaces without end (until the client goes, or 256 MiB).
    Endless,
}

/// A registry served by the test on 127.0.0.1 (plain HTTP): path → (content type, body).
struct LyingRegistry {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LyingRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(mut s: TcpStream, routes: &HashMap<String, (String, Body)>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let api = ("application/json".to_string(), Body::Fixed(b"{}".to_vec()));
    // `/v2/`: the API is there, no auth.
    let found = if path == "/v2/" {
        Some(&api)
    } else {
        routes.get(path)
    };
    let Some((ctype, body)) = found else {
        let msg = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#;
        let _ = write!(
            s,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            msg.len()
        );
        let _ = s.write_all(msg);
        return;
    };
    let mut h = format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nConnection: close\r\n");
    match body {
        Body::Fixed(b) => {
            h.push_str(&format!("Content-Length: {}\r\n", b.len()));
            if path.contains("/manifests/") {
                h.push_str(&format!("Docker-Content-Digest: {}\r\n", sha256(b)));
            }
        }
        Body::Chunked(_) | Body::Endless => h.push_str("Transfer-Encoding: chunked\r\n"),
    }
    h.push_str("\r\n");
    if s.write_all(h.as_bytes()).is_err() || method == "HEAD" {
        return;
    }
    let chunk = |s: &mut TcpStream, b: &[u8]| -> std::io::Result<()> {
        write!(s, "{:x}\r\n", b.len())?;
        s.write_all(b)?;
        s.write_all(b"\r\n")
    };
    let _ = match body {
        Body::Fixed(b) => s.write_all(b),
        Body::Chunked(b) => chunk(&mut s, b).and_then(|()| s.write_all(b"0\r\n\r\n")),
        Body::Endless => {
            let spaces = vec![b' '; 64 * 1024];
            let mut r = chunk(&mut s, b"{");
            let mut sent = 0usize;
            while r.is_ok() && sent < 256 << 20 {
                r = chunk(&mut s, &spaces);
                sent += spaces.len();
            }
            r
        }
    };
}

fn lying_registry(routes: HashMap<String, (String, Body)>) -> LyingRegistry {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let routes = Arc::new(routes);
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = conn else { continue };
                let routes = routes.clone();
                std::thread::spawn(move || respond(s, &routes));
            }
        })
    };
    LyingRegistry {
        addr,
        stop,
        thread: Some(thread),
    }
}

/// What the store holds: index, blob names and sizes, layer directories, ingest leftovers.
fn store_state(root: &Path) -> Vec<String> {
    let mut out = vec![std::fs::read_to_string(root.join("images/index.json")).unwrap()];
    for sub in ["images/blobs/sha256", "layers", "images/.ingest"] {
        let mut names: Vec<String> = std::fs::read_dir(root.join(sub))
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        format!(
                            "{sub}/{} {}",
                            e.file_name().to_string_lossy(),
                            e.metadata().map(|m| m.len()).unwrap_or(0)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        out.extend(names);
    }
    out
}

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

#[test]
fn limits_registry_descriptors_that_lie_are_refused_and_the_store_is_untouched() {
    // Each repository is one lie, with an image of its own (so its blobs are fetched);
    // `ok` is the control.
    let mut routes: HashMap<String, (String, Body)> = HashMap::new();
    let mut add_image = |repo: &str,
                         layer_size: &dyn Fn(u64) -> u64,
                         config_size: &dyn Fn(u64) -> u64,
                         layer_body: &dyn Fn(&[u8]) -> Body,
                         config_body: &dyn Fn(&[u8]) -> Body| {
        let (layer, config) = tiny_image(repo);
        let m = manifest(
            &config,
            config_size(config.len() as u64),
            &layer,
            layer_size(layer.len() as u64),
        );
        routes.insert(
            format!("/v2/{repo}/manifests/latest"),
            (MANIFEST_TYPE.into(), Body::Fixed(m)),
        );
        routes.insert(
            format!("/v2/{repo}/blobs/{}", sha256(&layer)),
            ("application/octet-stream".into(), layer_body(&layer)),
        );
        routes.insert(
            format!("/v2/{repo}/blobs/{}", sha256(&config)),
            ("application/octet-stream".into(), config_body(&config)),
        );
    };
    let same = |n: u64| n;
    let fixed = |b: &[u8]| Body::Fixed(b.to_vec());
    let chunked = |b: &[u8]| Body::Chunked(b.to_vec());
    let endless = |_: &[u8]| Body::Endless;
    add_image("ok", &same, &same, &fixed, &fixed);
    // The layer is larger than its descriptor says (announced, or only streamed).
    add_image("bigger", &|n| n - 10, &same, &fixed, &fixed);
    add_image("bigger-chunked", &|n| n - 10, &same, &chunked, &fixed);
    // Smaller than its descriptor says.
    add_image("smaller", &|n| n + 10, &same, &fixed, &fixed);
    add_image("smaller-chunked", &|n| n + 10, &same, &chunked, &fixed);
    // The config lies; a config of 1 GiB is refused before it is fetched.
    add_image("config-lies", &same, &|n| n + 3, &fixed, &chunked);
    add_image("config-huge", &same, &|_| 1 << 30, &fixed, &endless);
    // A manifest that lies about the size of a blob the store already holds (the `ok`
    // image's layer): refused too, though nothing is fetched.
    let (ok_layer, ok_config) = tiny_image("ok");
    routes.insert(
        "/v2/held-lies/manifests/latest".into(),
        (
            MANIFEST_TYPE.into(),
            Body::Fixed(manifest(
                &ok_config,
                ok_config.len() as u64,
                &ok_layer,
                ok_layer.len() as u64 + 1,
            )),
        ),
    );
    // A manifest without end, and one over 4 MiB announced as such.
    routes.insert(
        "/v2/endless/manifests/latest".into(),
        (MANIFEST_TYPE.into(), Body::Endless),
    );
    let mut huge = b"{".to_vec();
    huge.resize(5 << 20, b' ');
    routes.insert(
        "/v2/huge/manifests/latest".into(),
        (MANIFEST_TYPE.into(), Body::Fixed(huge)),
    );
    // An index whose entry gives the wrong size of the manifest it picks.
    let (layer, config) = tiny_image("index-lies");
    let m = manifest(&config, config.len() as u64, &layer, layer.len() as u64);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": sha256(&m),
            "size": m.len() + 7,
            "platform": {"architecture": tug::engine::image::host_arch(), "os": "linux"},
        }],
    }))
    .unwrap();
    routes.insert(
        "/v2/index-lies/manifests/latest".into(),
        (INDEX_TYPE.into(), Body::Fixed(index)),
    );
    routes.insert(
        format!("/v2/index-lies/manifests/{}", sha256(&m)),
        (MANIFEST_TYPE.into(), Body::Fixed(m)),
    );
    let reg = lying_registry(routes);
    let host = reg.addr.to_string();

    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let cmd = |args: &[&str]| {
        let mut c = tug(&root);
        c.env("TUG_CONFIG", t.path().join("config"))
            .env("DOCKER_CONFIG", t.path().join("docker"))
            .env_remove("TUG_INSECURE_REGISTRIES")
            .args(args);
        c
    };
    // Control: the honest image pulls and runs nothing yet; it is the state to keep.
    ok(&mut cmd(&["image", "pull", &format!("{host}/ok:latest")]));
    let before = store_state(&root);
    let cases: &[(&str, &[&str])] = &[
        ("bigger", &["invalid size of blob", "the registry sends"]),
        (
            "bigger-chunked",
            &["invalid size of blob", "more (cut off)"],
        ),
        ("smaller", &["invalid size of blob", "the registry sends"]),
        (
            "smaller-chunked",
            &["invalid size of blob", "the registry sent"],
        ),
        (
            "config-lies",
            &["invalid size of blob", "the registry sent"],
        ),
        ("held-lies", &["invalid size of blob", "the store holds"]),
        (
            "config-huge",
            &[
                "invalid size of config",
                "over the 16 MiB limit for image configs",
            ],
        ),
        (
            "endless",
            &["invalid size of manifest", "more than 4194304 bytes"],
        ),
        (
            "huge",
            &[
                "invalid size of manifest",
                "over the 4 MiB limit for manifests",
            ],
        ),
        (
            "index-lies",
            &["invalid size of manifest", "its descriptor says"],
        ),
    ];
    for (repo, fragments) in cases {
        let b = run_bounded(cmd(&["image", "pull", &format!("{host}/{repo}:latest")]));
        b.refused_with(fragments);
        // The index, every blob that was there and the layers are as they were; the lying
        // blob never entered and no ingest file is left. (Blobs a pull verified before the
        // lie showed stay, unreferenced, as after any failed pull: the next pull uses them,
        // `image prune` removes them.)
        let after = store_state(&root);
        assert_eq!(after[0], before[0], "{repo} changed index.json");
        for entry in &before {
            assert!(after.contains(entry), "{repo} changed {entry}");
        }
        let (layer, config) = tiny_image(repo);
        for lying in [&layer, &config] {
            let name = format!("images/blobs/sha256/{}", &sha256(lying)[7..]);
            let kept = after.iter().any(|e| e.starts_with(&name));
            let config_was_right = *lying == config && !repo.starts_with("config-");
            assert!(
                !kept || config_was_right,
                "{repo}: {name} entered the store"
            );
        }
        assert!(
            !after
                .iter()
                .any(|e| e.starts_with("layers/") || e.starts_with("images/.ingest/")),
            "{repo}: {after:?}"
        );
    }
}

/// An oci-archive: `oci-layout`, `index.json` and the blobs.
fn oci_archive(path: &Path, index: &[u8], blobs: &[&[u8]]) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", index);
    for blob in blobs {
        add(&format!("blobs/sha256/{}", &sha256(blob)[7..]), blob);
    }
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

fn oci_index(m: &[u8], size: usize, name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": sha256(m),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    }))
    .unwrap()
}

#[test]
fn limits_archive_descriptors_that_lie_are_refused_and_the_store_is_untouched() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let (layer, config) = tiny_image("archive");
    let (ls, cs) = (layer.len() as u64, config.len() as u64);
    // Control: an honest archive loads.
    let good = manifest(&config, cs, &layer, ls);
    let a = t.path().join("good.tar");
    oci_archive(
        &a,
        &oci_index(&good, good.len(), "good:1"),
        &[&layer, &config, &good],
    );
    ok(tug(&root).args(["image", "load", "-i"]).arg(&a));
    let before = store_state(&root);
    // The layer larger or smaller than its descriptor says, the config larger.
    for (name, l, c) in [
        ("layer-bigger", ls - 1, cs),
        ("layer-smaller", ls + 1, cs),
        ("config-lies", ls, cs + 1),
    ] {
        let m = manifest(&config, c, &layer, l);
        let a = t.path().join(format!("{name}.tar"));
        oci_archive(&a, &oci_index(&m, m.len(), "lie:1"), &[&layer, &config, &m]);
        let mut cmd = tug(&root);
        cmd.args(["image", "load", "-i"]).arg(&a);
        run_bounded(cmd).refused_with(&["invalid size of", "the archive holds"]);
        assert_eq!(store_state(&root), before, "{name} changed the store");
    }
    // index.json gives the wrong size of the manifest.
    let a = t.path().join("index-lies.tar");
    oci_archive(
        &a,
        &oci_index(&good, good.len() + 5, "lie:1"),
        &[&layer, &config, &good],
    );
    let mut c = tug(&root);
    c.args(["image", "load", "-i"]).arg(&a);
    run_bounded(c).refused_with(&["invalid size of", "its descriptor says"]);
    // A manifest over 4 MiB (its descriptor tells the truth) is not read.
    let mut big: serde_json::Value = serde_json::from_slice(&good).unwrap();
    big["annotations"] = serde_json::json!({"padding": " ".repeat(5 << 20)});
    let big = serde_json::to_vec(&big).unwrap();
    let a = t.path().join("manifest-huge.tar");
    oci_archive(
        &a,
        &oci_index(&big, big.len(), "lie:1"),
        &[&layer, &config, &big],
    );
    let mut c = tug(&root);
    c.args(["image", "load", "-i"]).arg(&a);
    run_bounded(c).refused_with(&["over the 4 MiB limit for manifests"]);
    assert_eq!(store_state(&root), before);
}
