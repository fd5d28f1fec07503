//! Registry pull/push against Debian's `docker-registry` started on 127.0.0.1 by each test
//! (own config, storage and port), with and without htpasswd basic auth; credentials from
//! `tug login`, Docker's config.json and a credential helper; skopeo interop; a pull killed
//! with SIGKILL half-way.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, fails, ok, tug};

/// A `docker-registry` on 127.0.0.1, killed on drop.
pub(crate) struct Registry {
    child: Child,
    pub(crate) host: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn have(tool: &str) -> bool {
    crate::common::require_tools(&[tool])
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a registry; with `htpasswd` = Some((user, password)) it requires basic auth.
fn registry(htpasswd: Option<(&str, &str)>) -> Registry {
    let dir = tempfile::Builder::new()
        .prefix("tug-registry-")
        .tempdir()
        .unwrap();
    let mut auth = String::new();
    if let Some((user, pass)) = htpasswd {
        let file = dir.path().join("htpasswd");
        ok(Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(&file)
            .args([user, pass]));
        auth = format!(
            "auth:\n  htpasswd:\n    realm: tug-test\n    path: {}\n",
            file.display()
        );
    }
    registry_with(dir, &auth)
}

/// Starts a registry whose data and config live in `dir`, with the YAML `auth` section `auth`
/// (empty: anonymous).
pub(crate) fn registry_with(dir: tempfile::TempDir, auth: &str) -> Registry {
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
        dir.path().join("data").display()
    );
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = Registry {
        child,
        host: format!("127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    reg
}

/// A test environment: a state root, and a config dir and Docker config dir of its own.
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
}

impl Env {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("tug-pull-")
                .tempdir()
                .unwrap(),
        }
    }

    pub(crate) fn root(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn tug(&self, root: &str) -> Command {
        let mut c = tug(&self.root(root));
        c.env("TUG_CONFIG", self.dir.path().join("config"))
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env_remove("TUG_INSECURE_REGISTRIES");
        c
    }
}

pub(crate) fn inspect(env: &Env, root: &str, name: &str) -> serde_json::Value {
    let out = ok(env.tug(root).args(["image", "inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

pub(crate) fn listing(p: &Path) -> String {
    ok(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . -printf '%P %y %m %U %s %l\\n' | sort",
        p.display()
    )))
}

#[test]
fn image_registry_push_pull_anonymous() {
    if !have("docker-registry") {
        return;
    }
    let reg = registry(None);
    let env = Env::new();
    common::busybox_image(&env.root("a"));
    let want = inspect(&env, "a", "busybox");
    let name = format!("{}/tug/busybox:1", reg.host);
    let out = ok(env.tug("a").args(["image", "push", "busybox", &name]));
    assert!(out.contains(want["Digest"].as_str().unwrap()), "{out}");
    // Pushing again moves no blob.
    let again = env
        .tug("a")
        .args(["image", "push", "busybox", &name])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // Pull into a fresh root: same manifest digest, same image id, same files.
    let out = ok(env.tug("b").args(["image", "pull", &name]));
    assert_eq!(out.trim(), name);
    let got = inspect(&env, "b", &name);
    assert_eq!(got["Digest"], want["Digest"]);
    assert_eq!(got["Id"], want["Id"]);
    let l1 = PathBuf::from(want["LayerDirs"][0].as_str().unwrap());
    let l2 = PathBuf::from(got["LayerDirs"][0].as_str().unwrap());
    assert_eq!(listing(&l1), listing(&l2));
    // Pull by digest, into another root.
    let by_digest = format!(
        "{}/tug/busybox@{}",
        reg.host,
        want["Digest"].as_str().unwrap()
    );
    ok(env.tug("c").args(["image", "pull", &by_digest]));
    assert_eq!(inspect(&env, "c", &by_digest)["Id"], want["Id"]);
    // Pulling what is there skips the layers.
    let again = env
        .tug("b")
        .args(["image", "pull", &name])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // Clear one-line errors naming the reference.
    let err =
        fails(
            env.tug("b")
                .args(["image", "pull", &format!("{}/tug/busybox:nosuch", reg.host)]),
        );
    assert!(
        err.contains("unknown tag") && err.contains("tug/busybox:nosuch"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = fails(
        env.tug("b")
            .args(["image", "pull", &format!("{}/tug/nosuch:1", reg.host)]),
    );
    assert!(
        err.contains("unknown") && err.contains("tug/nosuch:1"),
        "{err}"
    );
    let dead = format!("127.0.0.1:{}/x/y:1", free_port());
    let err = fails(env.tug("b").args(["image", "pull", &dead]));
    assert!(
        err.contains("unreachable") && err.contains("x/y:1"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn image_registry_basic_auth_login_and_docker_config() {
    if !have("docker-registry") || !have("htpasswd") {
        return;
    }
    let reg = registry(Some(("tugger", "s3cret")));
    let env = Env::new();
    common::busybox_image(&env.root("a"));
    let name = format!("{}/private/bb:1", reg.host);
    // No credentials: refused, one line.
    let err = fails(env.tug("a").args(["image", "push", "busybox", &name]));
    assert!(
        err.contains("authentication refused") && err.contains("private/bb:1"),
        "{err}"
    );
    // A wrong password is refused by login and nothing is stored.
    let mut c = env.tug("a");
    c.args(["login", "-u", "tugger", "--password-stdin", &reg.host]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"wrong\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication refused"));
    let auth_file = env.dir.path().join("config/auth.json");
    assert!(!auth_file.exists());
    // The right one is stored, mode 0600.
    let out = ok(env
        .tug("a")
        .args(["login", "-u", "tugger", "--password", "s3cret", &reg.host]));
    assert!(out.contains("Login Succeeded"));
    assert_eq!(
        std::fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    ok(env.tug("a").args(["image", "push", "busybox", &name]));
    ok(env.tug("b").args(["image", "pull", &name]));
    let out = ok(env.tug("a").args(["logout", &reg.host]));
    assert!(out.contains("Removing login credentials"), "{out}");
    fails(env.tug("c").args(["image", "pull", &name]));

    // Docker's config.json `auths` entry works too.
    let docker = env.dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let token = base64_encode(b"tugger:s3cret");
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{token}"}}}}}}"#, reg.host),
    )
    .unwrap();
    ok(env.tug("c").args(["image", "pull", &name]));

    // And a credential helper named in credHelpers.
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-tugtest");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"tugger\",\"Secret\":\"s3cret\"}' \"$server\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "tugtest"}}}}"#, reg.host),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ok(env
        .tug("d")
        .env("PATH", path)
        .args(["image", "pull", &name]));
    assert_eq!(
        inspect(&env, "d", &name)["Id"],
        inspect(&env, "a", "busybox")["Id"]
    );
}

pub(crate) fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn image_registry_skopeo_interop() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let reg = registry(None);
    let env = Env::new();
    common::busybox_image(&env.root("a"));
    let want = inspect(&env, "a", "busybox");
    // skopeo copies tug's store, as it is, to the registry; tug pulls it back.
    let src = format!(
        "oci:{}:docker.io/library/busybox:latest",
        env.root("a").join("images").display()
    );
    let dest = format!("{}/sk/bb:1", reg.host);
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false", &src])
        .arg(format!("docker://{dest}")));
    ok(env.tug("b").args(["image", "pull", &dest]));
    assert_eq!(inspect(&env, "b", &dest)["Id"], want["Id"]);
    assert_eq!(inspect(&env, "b", &dest)["Digest"], want["Digest"]);
    // tug pushes; skopeo reads it from the registry and sees the same digest.
    let pushed = format!("{}/tug/bb:2", reg.host);
    ok(env.tug("a").args(["image", "push", "busybox", &pushed]));
    let out = ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{pushed}")));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], want["Digest"]);
}

/// Kills the child when dropped.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn image_registry_pull_killed_midway_then_recovers() {
    if !have("docker-registry") {
        return;
    }
    let reg = registry(None);
    let env = Env::new();
    // An image with a 48 MB incompressible layer, so the transfer takes a moment.
    let rootfs = env.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    ok(Command::new("sh").arg("-c").arg(format!(
        "head -c 48000000 /dev/urandom > {}/blob && tar -C {} -cf {}/big.tar .",
        rootfs.display(),
        rootfs.display(),
        env.dir.path().display()
    )));
    ok(env
        .tug("a")
        .args(["image", "import"])
        .arg(env.dir.path().join("big.tar"))
        .arg("big:1"));
    let name = format!("{}/tug/big:1", reg.host);
    ok(env.tug("a").args(["image", "push", "big:1", &name]));
    let want = inspect(&env, "a", "big:1");

    let b = env.root("b");
    ok(env.tug("b").args(["image", "ls"]));
    let ingest = b.join("images/.ingest");
    let child = env
        .tug("b")
        .args(["image", "pull", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // Wait until a blob is part-written, then SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut caught = false;
    while Instant::now() < deadline {
        let partial = std::fs::read_dir(&ingest).unwrap().any(|e| {
            e.unwrap()
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() > 1_000_000)
        });
        if partial {
            caught = true;
            break;
        }
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .ok();
    let _ = child.0.wait();
    eprintln!("kill caught the pull mid-transfer: {caught}");
    if caught {
        // Nothing half-done is visible: no image, no big blob, and the next command cleans.
        let ls = ok(env.tug("b").args(["image", "ls", "-q"]));
        assert_eq!(ls.trim(), "", "no image after a killed pull");
        assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0);
        let big = want["Manifest"]["layers"][0]["digest"].as_str().unwrap();
        assert!(!b.join("images/blobs/sha256").join(&big[7..]).exists());
    }
    // The pull works afterwards and gives the same image.
    ok(env.tug("b").args(["image", "pull", &name]));
    assert_eq!(inspect(&env, "b", &name)["Digest"], want["Digest"]);
    let ls = ok(env.tug("b").args(["image", "ls"]));
    assert!(ls.contains("tug/big"), "{ls}");
}

#[test]
fn image_registry_compose_up_pulls_missing_images_and_pull_verb() {
    if !have("docker-registry") {
        return;
    }
    let reg = registry(None);
    let env = Env::new();
    common::busybox_image(&env.root("a"));
    let name = format!("{}/tug/box:1", reg.host);
    ok(env.tug("a").args(["image", "push", "busybox", &name]));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        format!(
            "services:\n  one:\n    image: {name}\n    command: [\"sh\", \"-c\", \"echo pulled-and-ran\"]\n"
        ),
    )
    .unwrap();
    let project = common::unique("pull");
    // `tug pull` brings the image into an empty root.
    ok(env
        .tug("b")
        .current_dir(dir.path())
        .args(["-p", &project, "pull"]));
    ok(env.tug("b").args(["image", "inspect", &name]));
    // `up` in another empty root pulls what it misses, then runs the service.
    ok(env
        .tug("c")
        .current_dir(dir.path())
        .args(["-p", &project, "up", "-d", "--wait"]));
    // `--wait` returns once the job runs; its output is logged when it has run.
    ok(env
        .tug("c")
        .current_dir(dir.path())
        .args(["-p", &project, "wait", "one"]));
    let logs =
        ok(env
            .tug("c")
            .current_dir(dir.path())
            .args(["-p", &project, "logs", "--no-log-prefix"]));
    ok(env
        .tug("c")
        .current_dir(dir.path())
        .args(["-p", &project, "down"]));
    assert!(logs.contains("pulled-and-ran"), "{logs}");
}

/// `image ls --format json` rows.
fn ls_json(env: &Env, root: &str) -> Vec<serde_json::Value> {
    ok(env.tug(root).args(["image", "ls", "--format", "json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn image_registry_pull_is_a_transfer_and_unpacks_on_first_use() {
    if !have("docker-registry") {
        return;
    }
    let reg = registry(None);
    let env = Env::new();
    common::busybox_image(&env.root("a"));
    let want = inspect(&env, "a", "busybox");
    let name = format!("{}/tug/lazy:1", reg.host);
    ok(env.tug("a").args(["image", "push", "busybox", &name]));
    let diff_id = want["RootFS"]["diff_ids"][0].as_str().unwrap().to_string();

    // SIZE is the uncompressed size: the layer's tar stream plus the config, as podman shows.
    let layer = want["Manifest"]["layers"][0]["digest"].as_str().unwrap();
    let blob = env.root("a").join("images/blobs/sha256").join(&layer[7..]);
    let tar_len: u64 = ok(Command::new("sh")
        .arg("-c")
        .arg(format!("zcat {} | wc -c", blob.display())))
    .trim()
    .parse()
    .unwrap();
    let config_size = want["Manifest"]["config"]["size"].as_u64().unwrap();
    assert_eq!(want["Size"].as_u64(), Some(tar_len + config_size), "{want}");
    assert!(
        want["Size"].as_u64().unwrap() > want["CompressedSize"].as_u64().unwrap(),
        "{want}"
    );
    let rows_a = ls_json(&env, "a");
    let human = rows_a[0]["Size"].as_str().unwrap().to_string();
    assert!(human.ends_with("MB") || human.ends_with("kB"), "{human}");
    let table = ok(env.tug("a").args(["image", "ls"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("busybox") && l.ends_with(&human)),
        "{table}"
    );

    // A pull moves and verifies blobs only: no layer directory yet, but the same SIZE.
    ok(env.tug("b").args(["image", "pull", "-q", &name]));
    let layer_dir = env.root("b").join("layers").join(&diff_id[7..]);
    assert!(!layer_dir.exists(), "pull unpacked the layer");
    let rows_b = ls_json(&env, "b");
    assert_eq!(rows_b.len(), 1);
    assert_eq!(rows_b[0]["Size"].as_str(), Some(human.as_str()));
    // First use unpacks it (inspect lists the layer directories), checking the diff_id.
    let got = inspect(&env, "b", &name);
    assert!(layer_dir.is_dir(), "first use did not unpack");
    assert_eq!(got["LayerDirs"][0].as_str(), layer_dir.to_str());
    assert_eq!(got["Size"], want["Size"]);
    let l1 = PathBuf::from(want["LayerDirs"][0].as_str().unwrap());
    assert_eq!(listing(&l1), listing(&layer_dir));

    // `--unpack` unpacks right away, and says so.
    let out = env
        .tug("c")
        .args(["image", "pull", "--unpack", &name])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: unpacked", &layer[7..19])),
        "{stderr}"
    );
    assert!(env.root("c").join("layers").join(&diff_id[7..]).is_dir());
}

#[test]
fn image_registry_wrong_diff_id_is_caught_at_first_use() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let reg = registry(None);
    let env = Env::new();
    common::busybox_image(&env.root("a"));
    let want = inspect(&env, "a", "busybox");
    // An OCI layout with busybox's layer but a config naming another diff_id.
    let src = env.root("a").join("images/blobs/sha256");
    let layout = env.dir.path().join("bad-layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = want["Manifest"]["layers"][0].clone();
    let ldigest = layer["digest"].as_str().unwrap();
    std::fs::copy(src.join(&ldigest[7..]), blobs.join(&ldigest[7..])).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        use sha2::Digest as _;
        let hex = hex::encode(sha2::Sha256::digest(data));
        std::fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let config = serde_json::json!({
        "architecture": want["Architecture"], "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "ab".repeat(32))]},
    });
    let (cdigest, csize) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
        "layers": [layer],
    });
    let (mdigest, msize) = put(manifest.to_string().as_bytes());
    std::fs::write(
        layout.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": mdigest, "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": "1"}}]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let name = format!("{}/tug/baddiff:1", reg.host);
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{name}")));

    // The pull is a transfer: every blob digest is right, so it succeeds.
    ok(env.tug("b").args(["image", "pull", "-q", &name]));
    // First use unpacks and checks the diff_id: a clear error, and no layer directory.
    let err = fails(env.tug("b").args([
        "container",
        "create",
        "--name",
        &common::unique("bad"),
        &name,
    ]));
    assert!(
        err.contains("digest mismatch") && err.contains("uncompressed layer"),
        "{err}"
    );
    let layers = env.root("b").join("layers");
    let left: Vec<_> = std::fs::read_dir(&layers)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // `pull --unpack` reports the same at once.
    let err = fails(
        env.tug("c")
            .args(["image", "pull", "-q", "--unpack", &name]),
    );
    assert!(err.contains("digest mismatch"), "{err}");
}
