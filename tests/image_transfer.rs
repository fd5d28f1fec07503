//! Broken transfers: a loopback TCP proxy between tug and a real `docker-registry` cuts the
//! first download of a large blob after a number of bytes; the pull must go on from there with
//! an HTTP `Range` request (distribution's filesystem driver serves ranges) and end with
//! verified digests; with the `Range` header stripped by the proxy (a registry that ignores
//! ranges) it starts the blob again and says so.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::ok;
use crate::image_registry::{Env, have, inspect, registry_with};

/// A proxy from a free 127.0.0.1 port to `upstream`. The first connection that asks for a
/// blob whose path contains `cut_path` is closed after `cut_after` bytes of the answer. With
/// `strip_range`, `Range` headers are removed from requests (a registry that ignores ranges).
struct CutProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The request heads (lower-cased) that asked for the blob.
    requests: Arc<Mutex<Vec<String>>>,
    /// Set once the cut happened.
    cut: Arc<AtomicBool>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cut_proxy(upstream: String, cut_path: String, cut_after: u64, strip_range: bool) -> CutProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let cut = Arc::new(AtomicBool::new(false));
    let armed_once = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stop, requests, cut) = (stop.clone(), requests.clone(), cut.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for s in [&client, &server] {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                }
                let armed = Arc::new(AtomicBool::new(false));
                // Client to registry: watch the request heads.
                {
                    let (mut from, mut to) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (armed, armed_once, requests, cut_path) = (
                        armed.clone(),
                        armed_once.clone(),
                        requests.clone(),
                        cut_path.clone(),
                    );
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut pending: Vec<u8> = Vec::new();
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            pending.extend_from_slice(&buf[..n]);
                            // Pulls send only bodiless GET/HEAD requests: forward them head by
                            // head, without the Range line when told to drop it.
                            let mut out: Vec<u8> = Vec::new();
                            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n")
                            {
                                let raw = String::from_utf8_lossy(&pending[..end]).into_owned();
                                pending.drain(..end + 4);
                                let head = raw.to_ascii_lowercase();
                                if head.starts_with("get ") && head.contains(&cut_path) {
                                    requests.lock().unwrap().push(head);
                                    if !armed_once.swap(true, Ordering::SeqCst) {
                                        armed.store(true, Ordering::SeqCst);
                                    }
                                }
                                for line in raw.split("\r\n") {
                                    if strip_range
                                        && line.to_ascii_lowercase().starts_with("range:")
                                    {
                                        continue;
                                    }
                                    out.extend_from_slice(line.as_bytes());
                                    out.extend_from_slice(b"\r\n");
                                }
                                out.extend_from_slice(b"\r\n");
                            }
                            if to.write_all(&out).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
                // Registry to client: cut once armed and past the limit.
                {
                    let (mut from, mut to) = (server, client);
                    let cut = cut.clone();
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut sent_armed = 0u64;
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let mut n = n as u64;
                            let mut stop_now = false;
                            if armed.load(Ordering::SeqCst) {
                                if sent_armed + n >= cut_after {
                                    n = cut_after - sent_armed;
                                    stop_now = true;
                                }
                                sent_armed += n;
                            }
                            let len = usize::try_from(n).unwrap();
                            if to.write_all(&buf[..len]).is_err() {
                                break;
                            }
                            if stop_now {
                                cut.store(true, Ordering::SeqCst);
                                let _ = to.shutdown(Shutdown::Both);
                                let _ = from.shutdown(Shutdown::Both);
                                return;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        })
    };
    CutProxy {
        addr,
        stop,
        thread: Some(thread),
        requests,
        cut,
    }
}

#[test]
fn image_transfer_cut_blob_download_resumes_with_range_or_restarts() {
    if !have("docker-registry") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("tug-cut-registry-")
        .tempdir()
        .unwrap();
    let reg = registry_with(dir, "");
    let env = Env::new();
    // An image with a 40 MB incompressible layer.
    let rootfs = env.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    ok(Command::new("sh").arg("-c").arg(format!(
        "head -c 40000000 /dev/urandom > {}/blob && tar -C {} -cf {}/big.tar .",
        rootfs.display(),
        rootfs.display(),
        env.dir.path().display()
    )));
    ok(env
        .tug("a")
        .args(["image", "import"])
        .arg(env.dir.path().join("big.tar"))
        .arg("big:1"));
    ok(env
        .tug("a")
        .args(["image", "push", "big:1", &format!("{}/tug/big:1", reg.host)]));
    let want = inspect(&env, "a", "big:1");
    let layer = want["Manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let size = want["Manifest"]["layers"][0]["size"].as_u64().unwrap();
    assert!(size > 39_000_000, "layer of {size} bytes");

    let cut_after = 15_000_000;
    let proxy = cut_proxy(
        reg.host.clone(),
        format!("/blobs/{layer}"),
        cut_after,
        false,
    );
    let name = format!("{}/tug/big:1", proxy.addr);
    let out = env
        .tug("b")
        .args(["image", "pull", &name])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pull failed: {stderr}");
    eprintln!("{stderr}");
    assert!(proxy.cut.load(Ordering::SeqCst), "the proxy never cut");

    // Exactly two requests for the blob: the cut one, then one with a range starting past
    // the first bytes (what was kept), answered with the rest.
    let requests = proxy.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(!requests[0].contains("\r\nrange:"), "{}", requests[0]);
    let range = requests[1]
        .lines()
        .find_map(|l| l.strip_prefix("range: bytes="))
        .unwrap_or_else(|| panic!("second request has no range: {}", requests[1]));
    let from: u64 = range.trim().trim_end_matches('-').parse().unwrap();
    assert!(
        from > 0 && from <= cut_after,
        "resumed from {from}, cut after {cut_after} bytes (with headers)"
    );
    assert!(
        stderr.contains(&format!("resuming at {from} bytes")),
        "{stderr}"
    );

    // Verified: same manifest digest and image id, and the stored blob hashes to its name.
    let got = inspect(&env, "b", &name);
    assert_eq!(got["Digest"], want["Digest"]);
    assert_eq!(got["Id"], want["Id"]);
    let blob = env.root("b").join("images/blobs/sha256").join(&layer[7..]);
    let sum = ok(Command::new("sha256sum").arg(&blob));
    assert_eq!(sum.split_whitespace().next(), Some(&layer[7..]));
    assert_eq!(
        std::fs::read_dir(env.root("b").join("images/.ingest"))
            .unwrap()
            .count(),
        0,
        "ingest left behind"
    );
    drop(proxy);

    // A registry that ignores ranges answers the second request with the whole blob: tug
    // says so, starts the blob again, and still ends with verified content.
    let proxy = cut_proxy(reg.host.clone(), format!("/blobs/{layer}"), cut_after, true);
    let name = format!("{}/tug/big:1", proxy.addr);
    let out = env
        .tug("c")
        .args(["image", "pull", &name])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pull failed: {stderr}");
    assert!(proxy.cut.load(Ordering::SeqCst), "the proxy never cut");
    assert!(
        stderr.contains("ignored the range, downloading again") && !stderr.contains("resuming"),
        "{stderr}"
    );
    assert_eq!(proxy.requests.lock().unwrap().len(), 2);
    assert_eq!(inspect(&env, "c", &name)["Digest"], want["Digest"]);
}

/// Runs `cmd` and returns (success, stderr, peak RSS in bytes) of that one process.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also gives its rusage"
)]
fn run_measured(cmd: &mut Command, stderr_file: &std::path::Path) -> (bool, String, u64) {
    let err = std::fs::File::create(stderr_file).unwrap();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unwaited child; `status` and `usage` are valid for writes.
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let stderr = std::fs::read_to_string(stderr_file).unwrap_or_default();
    (ok, stderr, u64::try_from(usage.ru_maxrss).unwrap() * 1024)
}

#[test]
fn image_transfer_push_streams_a_large_layer_from_disk() {
    if !have("docker-registry") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("tug-push-registry-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    let reg = registry_with(dir, "");
    let env = Env::new();
    // An image with a 64 MB incompressible layer.
    let rootfs = env.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    ok(Command::new("sh").arg("-c").arg(format!(
        "head -c 64000000 /dev/urandom > {}/blob && tar -C {} -cf {}/big.tar . && rm {}/blob",
        rootfs.display(),
        rootfs.display(),
        env.dir.path().display(),
        rootfs.display()
    )));
    ok(env
        .tug("a")
        .args(["image", "import"])
        .arg(env.dir.path().join("big.tar"))
        .arg("big:1"));
    std::fs::remove_file(env.dir.path().join("big.tar")).unwrap();
    let want = inspect(&env, "a", "big:1");
    let layer = want["Manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let size = want["Manifest"]["layers"][0]["size"].as_u64().unwrap();
    assert!(size > 63_000_000, "layer of {size} bytes");

    let name = format!("{}/tug/bigpush:1", reg.host);
    let (pushed, stderr, rss) = run_measured(
        env.tug("a").args(["image", "push", "big:1", &name]),
        &env.dir.path().join("push.err"),
    );
    assert!(pushed, "push failed: {stderr}");
    // What the program itself takes: `image inspect` of the same image.
    let (inspected, _, base) = run_measured(
        env.tug("a").args(["image", "inspect", "big:1"]),
        &env.dir.path().join("inspect.err"),
    );
    assert!(inspected);
    eprintln!("push of a {size}-byte layer: peak RSS {rss} bytes (inspect: {base} bytes)");
    // Reading the blob into memory would need at least its size on top of the program;
    // streaming needs a few 4 MB pieces.
    assert!(
        rss < base + size / 2,
        "push peaked at {rss} bytes (inspect {base}) for a {size}-byte layer: not streamed"
    );

    // The registry holds the blob with the right bytes, and a pull gives the same image.
    let stored = data
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[7..9])
        .join(&layer[7..])
        .join("data");
    let sum = ok(Command::new("sha256sum").arg(&stored));
    assert_eq!(sum.split_whitespace().next(), Some(&layer[7..]));
    ok(env.tug("b").args(["image", "pull", &name]));
    let got = inspect(&env, "b", &name);
    assert_eq!(got["Digest"], want["Digest"]);
    assert_eq!(got["Id"], want["Id"]);

    // A local blob that was damaged on disk is refused while streaming, before the upload is
    // committed: the new repository never gets the layer.
    let local = env.root("a").join("images/blobs/sha256").join(&layer[7..]);
    {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&local)
            .unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(1000)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(1000)).unwrap();
        f.write_all(&[b[0] ^ 0xff]).unwrap();
    }
    let bad = format!("{}/tug/damaged:1", reg.host);
    let err = crate::common::fails(env.tug("a").args(["image", "push", "big:1", &bad]));
    assert!(
        err.contains("digest mismatch") && err.contains("local blob"),
        "{err}"
    );
    let head = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{bad}")])
        .output();
    if let Ok(h) = head {
        assert!(!h.status.success(), "the damaged image was published");
    }
}
