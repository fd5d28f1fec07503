//! The builder: the conformance suite against docker BuildKit's recorded results
//! (`tests/fixtures/build/*/expected.json`, made by `regen.sh`), cache behaviour, contexts
//! and hostile inputs, RUN mounts and secrets, multi-stage builds, compose `build:`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{fails, ok, require_root, run, tug, unique};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build")
}

/// A temp state root with tug's busybox bootstrapped as `conformance-base` (and `busybox`).
/// RUN steps join the root's default `bridge` network, which outlives builds (as docker0
/// does): on drop the root's networks are removed, so their bridges and nft tables do not
/// stay on the host when the directory goes.
fn root_with_base() -> BuildRoot {
    let t = tempfile::tempdir().unwrap();
    ok(tug(t.path()).args([
        "image",
        "bootstrap",
        "busybox",
        "--name",
        "conformance-base",
    ]));
    ok(tug(t.path()).args(["image", "tag", "conformance-base", "busybox"]));
    BuildRoot(t)
}

struct BuildRoot(tempfile::TempDir);

impl BuildRoot {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for BuildRoot {
    fn drop(&mut self) {
        let ids = run(tug(self.path()).args(["container", "ls", "-a", "-q"]));
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = run(tug(self.path()).args(["container", "rm", "--force", id.trim()]));
        }
        let nets = run(tug(self.path()).args(["network", "ls", "-q"]));
        for n in String::from_utf8_lossy(&nets.stdout).lines() {
            let _ = run(tug(self.path()).args(["network", "rm", "--force", n.trim()]));
        }
    }
}

/// Copies case `name` into a fresh directory and runs its `prepare.sh`.
fn case_dir(name: &str, into: &Path) -> PathBuf {
    let dst = into.join(name);
    copy_tree(&fixtures().join(name), &dst);
    let _ = std::fs::remove_file(dst.join("expected.json"));
    if dst.join("prepare.sh").exists() {
        ok(std::process::Command::new("sh")
            .arg("prepare.sh")
            .current_dir(&dst));
    }
    dst
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let to = dst.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &to);
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The config keys the suite compares, without empty values.
fn significant(config: &Value) -> Value {
    const KEYS: &[&str] = &[
        "User",
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "Labels",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "Shell",
        "OnBuild",
    ];
    let mut out = serde_json::Map::new();
    for k in KEYS {
        match config.get(*k) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(v) => {
                out.insert((*k).to_string(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn inspect_config(root: &Path, image: &str) -> Value {
    let v: Value = serde_json::from_str(&ok(tug(root).args(["image", "inspect", image]))).unwrap();
    v[0]["Config"].clone()
}

#[test]
fn build_conformance_matches_docker_buildkit() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let work = tempfile::tempdir().unwrap();
    let mut cases: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().join("expected.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "the suite has {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(c).join("expected.json")).unwrap(),
        )
        .unwrap();
        let dir = case_dir(c, work.path());
        let tag = format!("conf-{c}");
        let out = run(tug(root.path())
            .args(["image", "build", "-q", "-t", &tag])
            .arg(&dir));
        if let Some(err) = expected.get("error") {
            if out.status.success() {
                failures.push(format!("{c}: docker failed ({err}) but tug built it"));
            }
            continue;
        }
        if !out.status.success() {
            failures.push(format!(
                "{c}: build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let got =
            run(tug(root.path()).args(["container", "run", "--rm", "--network", "none", &tag]));
        let output = String::from_utf8_lossy(&got.stdout).into_owned();
        if output != expected["output"].as_str().unwrap_or_default() {
            failures.push(format!(
                "{c}: output differs\n--- docker\n{}--- tug\n{output}--- tug stderr\n{}",
                expected["output"].as_str().unwrap_or_default(),
                String::from_utf8_lossy(&got.stderr)
            ));
        }
        let want = significant(&expected["config"]);
        let have = significant(&inspect_config(root.path(), &tag));
        if want != have {
            failures.push(format!(
                "{c}: config differs\n--- docker\n{want:#}\n--- tug\n{have:#}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from docker BuildKit:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// A context directory with `files` (path, content) and a Dockerfile.
fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("Dockerfile"), dockerfile).unwrap();
    for (p, c) in files {
        let p = t.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    t
}

/// `(cached, run)` from `tug image build`'s summary line.
fn counts(stderr: &str) -> (usize, usize) {
    let l = stderr
        .lines()
        .find(|l| l.starts_with("built "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let nums: Vec<usize> = l
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    // "built <id> (N steps cached, M run)": the id may hold digits too; take the last two.
    (nums[nums.len() - 2], nums[nums.len() - 1])
}

/// Builds `dir` as `tag`; returns (stderr, image id). `exe_log`: a wrapper that records every
/// run of tug as the RUN helper (`TUG_EXE`).
fn build(
    root: &Path,
    dir: &Path,
    tag: &str,
    extra: &[&str],
    exe_log: Option<&Path>,
) -> (String, String) {
    let mut c = tug(root);
    c.args(["image", "build", "-t", tag]).args(extra).arg(dir);
    if let Some(log) = exe_log {
        let w = log.with_extension("sh");
        std::fs::write(
            &w,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\nexec {} \"$@\"\n",
                log.display(),
                crate::common::tug_bin().display()
            ),
        )
        .unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&w).unwrap().permissions(),
            0o755,
        );
        std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        c.env("TUG_EXE", &w);
    }
    let out = run(&mut c);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build of {tag} failed:\n{err}");
    (err, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn build_cache_reuses_steps_and_invalidates_from_the_change() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let ctx = context(
        "FROM busybox\nCOPY a.txt /a\nRUN cat /a > /b\nARG X=1\nRUN echo $X > /x\nCOPY b.txt /bb\nCMD [\"sh\", \"-c\", \"cat /b /x /bb\"]\n",
        &[("a.txt", "A1\n"), ("b.txt", "B1\n")],
    );
    let log = root.path().join("helper.log");
    let (e, id1) = build(root.path(), ctx.path(), "cache-test", &[], Some(&log));
    assert_eq!(counts(&e), (0, 4), "{e}");
    let helpers = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("__build-run"))
            .count()
    };
    assert_eq!(helpers(&log), 2);
    // Fully cached: no container, same image id.
    std::fs::write(&log, "").unwrap();
    let (e, id2) = build(root.path(), ctx.path(), "cache-test", &[], Some(&log));
    assert_eq!(counts(&e), (4, 0), "{e}");
    assert_eq!(id1, id2, "a fully cached build gives the same image");
    assert_eq!(helpers(&log), 0, "a cached build started a container");
    // A new mtime alone changes nothing.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("a.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    let (e, _) = build(root.path(), ctx.path(), "cache-test", &[], None);
    assert_eq!(counts(&e), (4, 0), "{e}");
    // The last COPY's input: only that step runs.
    std::fs::write(ctx.path().join("b.txt"), "B2\n").unwrap();
    let (e, _) = build(root.path(), ctx.path(), "cache-test", &[], Some(&log));
    assert_eq!(counts(&e), (3, 1), "{e}");
    assert_eq!(helpers(&log), 0, "a COPY change reran a RUN before it");
    // A build arg: the RUN before its ARG stays cached, the one using it reruns.
    let (e, _) = build(
        root.path(),
        ctx.path(),
        "cache-test",
        &["--build-arg", "X=2"],
        None,
    );
    assert_eq!(counts(&e), (2, 2), "{e}");
    let out = ok(tug(root.path()).args([
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "cache-test",
    ]));
    assert_eq!(out, "A1\n2\nB2\n");
    // The first COPY's input: everything from there on.
    std::fs::write(ctx.path().join("a.txt"), "A2\n").unwrap();
    let (e, _) = build(root.path(), ctx.path(), "cache-test", &[], None);
    assert_eq!(counts(&e), (0, 4), "{e}");
    // The cache survives `image rm` of the result.
    ok(tug(root.path()).args(["image", "rm", "cache-test"]));
    let (e, _) = build(root.path(), ctx.path(), "cache-test", &[], None);
    assert_eq!(counts(&e), (4, 0), "{e}");
    // --no-cache, then `builder prune` empties the cache.
    let (e, _) = build(root.path(), ctx.path(), "cache-test", &["--no-cache"], None);
    assert_eq!(counts(&e), (0, 4), "{e}");
    let out = ok(tug(root.path()).args(["builder", "prune", "--force"]));
    assert!(out.contains("cache records"), "{out}");
    // cache_from: the image's history carries its steps' keys.
    let (e, _) = build(
        root.path(),
        ctx.path(),
        "cache-test",
        &["--cache-from", "cache-test"],
        None,
    );
    assert_eq!(counts(&e), (4, 0), "{e}");
    ok(tug(root.path()).args(["builder", "prune", "--force"]));
    ok(tug(root.path()).args(["image", "rm", "cache-test"]));
    let (e, _) = build(root.path(), ctx.path(), "cache-test", &[], None);
    assert_eq!(counts(&e), (0, 4), "{e}");
}

/// Every file of every layer directory of the state root, with its content, for leak checks.
fn layer_contents(root: &Path) -> String {
    let mut all = String::new();
    fn walk(p: &Path, all: &mut String) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(&e.path(), all);
            } else if t.is_file() {
                all.push_str(&String::from_utf8_lossy(
                    &std::fs::read(e.path()).unwrap_or_default(),
                ));
            }
        }
    }
    walk(&root.join("layers"), &mut all);
    // Blobs are compressed: unpack each layer blob's text too.
    for e in std::fs::read_dir(root.join("images/blobs/sha256"))
        .unwrap()
        .flatten()
    {
        let b = std::fs::read(e.path()).unwrap();
        if b.starts_with(&[0x1f, 0x8b]) {
            let mut s = Vec::new();
            let _ =
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(b.as_slice()), &mut s);
            all.push_str(&String::from_utf8_lossy(&s));
        }
    }
    all
}

#[test]
fn build_dockerignore_and_secrets_stay_out_of_layers() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let ctx = context(
        "FROM busybox\nCOPY . /ctx\nRUN --mount=type=secret,id=tok,required=true wc -c < /run/secrets/tok > /secret-seen\nCMD [\"sh\", \"-c\", \"cd /ctx && find . -type f | sort; cat /secret-seen; ls /run/secrets 2>&1 || true\"]\n",
        &[
            ("app.txt", "app\n"),
            ("private.key", "PRIVATE-KEY-MATERIAL-1234\n"),
            ("docs/keep.md", "keep\n"),
            ("docs/drop.md", "drop\n"),
            (".dockerignore", "*.key\ndocs\n!docs/keep.md\n"),
        ],
    );
    let secret = ctx.path().join("../tok-secret");
    std::fs::write(&secret, "s3cr3t-token-value").unwrap();
    build(
        root.path(),
        ctx.path(),
        "ignore-test",
        &["--secret", &format!("id=tok,src={}", secret.display())],
        None,
    );
    let out = ok(tug(root.path()).args([
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "ignore-test",
    ]));
    assert!(
        out.starts_with("./.dockerignore\n./Dockerfile\n./app.txt\n./docs/keep.md\n18\n"),
        "{out}"
    );
    assert!(
        !out.contains("private.key") && !out.contains("drop.md"),
        "{out}"
    );
    let all = layer_contents(root.path());
    assert!(
        !all.contains("PRIVATE-KEY-MATERIAL"),
        "an ignored file reached a layer"
    );
    assert!(
        !all.contains("s3cr3t-token-value"),
        "a build secret reached a layer"
    );
    // A required secret that is not given fails clearly.
    let err = fails(
        tug(root.path())
            .args(["image", "build", "-t", "x"])
            .arg(ctx.path()),
    );
    assert!(err.contains("secret tok is required"), "{err}");
    let _ = std::fs::remove_file(secret);
}

#[test]
fn build_hostile_contexts_never_read_outside() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("outside.txt"), "OUTSIDE-CONTENT-5678\n").unwrap();
    let ctx = outer.path().join("ctx");
    std::fs::create_dir_all(ctx.join("dir")).unwrap();
    std::os::unix::fs::symlink("../outside.txt", ctx.join("escape")).unwrap();
    std::os::unix::fs::symlink(outer.path().join("outside.txt"), ctx.join("abs-escape")).unwrap();
    std::os::unix::fs::symlink("../../outside.txt", ctx.join("dir/link")).unwrap();
    let df = |s: &str| std::fs::write(ctx.join("Dockerfile"), s).unwrap();
    // `COPY ../x` resolves inside the context: not found.
    df("FROM busybox\nCOPY ../outside.txt /x\n");
    let err = fails(
        tug(root.path())
            .args(["image", "build", "-t", "h"])
            .arg(&ctx),
    );
    assert!(
        err.contains("not found") && err.contains("Dockerfile:2"),
        "{err}"
    );
    // A symlink pointing outside resolves inside the context too.
    for link in ["escape", "abs-escape"] {
        df(&format!("FROM busybox\nCOPY {link} /x\n"));
        let err = fails(
            tug(root.path())
                .args(["image", "build", "-t", "h"])
                .arg(&ctx),
        );
        assert!(err.contains("not found"), "{link}: {err}");
    }
    // A symlink inside a copied directory is copied as a link, never followed.
    df("FROM busybox\nCOPY dir /d\nCMD [\"readlink\", \"/d/link\"]\n");
    build(root.path(), &ctx, "h", &[], None);
    let out = ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "h"]));
    assert_eq!(out, "../../outside.txt\n");
    assert!(!layer_contents(root.path()).contains("OUTSIDE-CONTENT"));
    // A huge build arg: built, and the value reaches the RUN step intact.
    let big = "x".repeat(100_000);
    df("FROM busybox\nARG BIG\nRUN test ${#BIG} -eq 100000 && echo ok > /big\n");
    build(
        root.path(),
        &ctx,
        "h",
        &["--build-arg", &format!("BIG={big}")],
        None,
    );
    // Past the kernel's limit for one environment string: a clear error naming the step.
    df(&format!(
        "FROM busybox\nARG BIG={}\nRUN echo ${{#BIG}}\n",
        "y".repeat(300_000)
    ));
    let err = fails(
        tug(root.path())
            .args(["image", "build", "-t", "h"])
            .arg(&ctx),
    );
    assert!(
        err.contains("Dockerfile:3") && err.contains("argument list too long"),
        "{}",
        &err[..err.len().min(400)]
    );
    // 10,000 files in the context.
    let many = tempfile::tempdir().unwrap();
    for i in 0..10_000 {
        let d = many.path().join(format!("d{}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(d.join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    std::fs::write(many.path().join("Dockerfile"), "FROM busybox\nCOPY . /many\nCMD [\"sh\", \"-c\", \"find /many -type f | wc -l; cat /many/d7/f4507\"]\n").unwrap();
    build(root.path(), many.path(), "many", &[], None);
    let out = ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "many"]));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["10001", "4507"]
    );
}

#[test]
fn build_failure_names_the_step_and_tags_nothing() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let ctx = context(
        "FROM busybox AS base\nRUN echo base > /base\n\nFROM base AS broken\nRUN echo some output && echo more output >&2 && exit 3\n\nFROM base AS good\nCMD [\"cat\", \"/base\"]\n\nFROM broken\n",
        &[],
    );
    let err = fails(
        tug(root.path())
            .args(["image", "build", "-t", "fails:1"])
            .arg(ctx.path()),
    );
    assert!(err.contains("Dockerfile:5"), "{err}");
    assert!(err.contains("exit 3") && err.contains("code 3"), "{err}");
    assert!(
        err.contains("some output") && err.contains("more output"),
        "{err}"
    );
    let ls = ok(tug(root.path()).args(["image", "ls"]));
    assert!(
        !ls.contains("fails"),
        "a failed build left a tagged image:\n{ls}"
    );
    // --target builds only what the target needs (the failing stage is not built).
    ok(tug(root.path())
        .args(["image", "build", "-t", "good", "--target", "good"])
        .arg(ctx.path()));
    assert_eq!(
        ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "good"])),
        "base\n"
    );
    // Bad Dockerfiles name the line.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nBOGUS x\n").unwrap();
    let err = fails(
        tug(root.path())
            .args(["image", "build", "-t", "x"])
            .arg(ctx.path()),
    );
    assert!(
        err.contains("Dockerfile:2") && err.contains("unknown instruction"),
        "{err}"
    );
}

#[test]
fn build_run_cache_mount_persists_and_metadata_reaches_containers() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let ctx = context(
        "FROM busybox\nRUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /count\nRUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd\nUSER app\nWORKDIR /srv/app\nENV GREETING=hello\nEXPOSE 8080\nHEALTHCHECK --interval=1s CMD true\nENTRYPOINT [\"sh\", \"-c\"]\nCMD [\"echo $GREETING; id -u; pwd; cat /count; ls /cache 2>&1 | head -1\"]\n",
        &[],
    );
    build(root.path(), ctx.path(), "meta", &[], None);
    let out = ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "meta"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..4], &["hello", "1000", "/srv/app", "1"], "{out}");
    assert!(
        lines[4].contains("No such file"),
        "the cache mount leaked into the image: {out}"
    );
    build(root.path(), ctx.path(), "meta", &["--no-cache"], None);
    let out = ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "meta"]));
    assert_eq!(
        out.lines().nth(3),
        Some("2"),
        "the cache mount did not persist: {out}"
    );
    let c = inspect_config(root.path(), "meta");
    assert_eq!(c["User"], "app");
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["ExposedPorts"]["8080/tcp"], serde_json::json!({}));
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 1_000_000_000_u64);
    // The healthcheck reaches a running container.
    let name = unique("bh");
    ok(tug(root.path()).args([
        "container",
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--entrypoint",
        "sleep",
        "meta",
        "30",
    ]));
    crate::common::eventually("healthy", std::time::Duration::from_secs(15), || {
        let v: Value =
            serde_json::from_str(&ok(tug(root.path()).args(["container", "inspect", &name])))
                .unwrap();
        v.to_string().contains("\"healthy\"")
    });
    ok(tug(root.path()).args(["container", "rm", "--force", &name]));
}

#[test]
fn build_compose_up_build_wait_and_second_up_rebuilds_nothing() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("web")).unwrap();
    std::fs::create_dir_all(p.join("job")).unwrap();
    std::fs::write(p.join("web/Dockerfile"), "FROM busybox\nRUN mkdir /www && echo hello-web > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n").unwrap();
    std::fs::write(p.join("job/Dockerfile"), "FROM busybox\nARG WHO\nRUN echo \"hi $WHO\" > /greeting\nCMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n").unwrap();
    std::fs::write(
        p.join("compose.yaml"),
        "services:\n  web:\n    build: ./web\n    healthcheck:\n      test: [\"CMD\", \"sh\", \"-c\", \"timeout 2 wget -q -O- http://127.0.0.1:8080/\"]\n      interval: 1s\n  job:\n    build:\n      context: ./job\n      args:\n        WHO: compose\n    depends_on:\n      web:\n        condition: service_healthy\n",
    )
    .unwrap();
    let project = unique("bld");
    let compose = |args: &[&str]| {
        let mut c = tug(root.path());
        c.current_dir(p).args(["-p", &project]).args(args);
        c
    };
    let guard = Down(root.path().to_path_buf(), p.to_path_buf(), project.clone());
    ok(&mut compose(&["up", "--build", "-d", "--wait"]));
    assert_eq!(
        ok(&mut compose(&["exec", "job", "cat", "/greeting"])),
        "hi compose\n"
    );
    let ids = |c: &mut dyn FnMut(&[&str]) -> std::process::Command| ok(&mut c(&["ps", "-q"]));
    let before = ids(&mut |a| compose(a));
    let images = || {
        let mut v: Vec<String> = ok(tug(root.path()).args(["image", "ls", "-q", "--no-trunc"]))
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let images_before = images();
    let out = run(&mut compose(&["up", "--build", "-d", "--wait"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ids(&mut |a| compose(a)),
        before,
        "the second up recreated containers"
    );
    assert_eq!(images(), images_before, "the second up built new images");
    // `tug build` with a changed arg rebuilds the service.
    let err = String::from_utf8_lossy(
        &run(&mut compose(&["build", "--build-arg", "WHO=cli", "job"])).stderr,
    )
    .into_owned();
    assert!(err.contains("built"), "{err}");
    drop(guard);
}

struct Down(PathBuf, PathBuf, String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = run(tug(&self.0)
            .current_dir(&self.1)
            .args(["-p", &self.2, "down", "-v", "-t", "1"]));
    }
}

#[test]
fn build_heredocs_run_and_copy() {
    // Docker 20.10's built-in Dockerfile frontend has no here-documents (and `# syntax=`
    // cannot fetch a newer one offline), so this case is checked against the documented
    // behaviour instead of a recorded oracle.
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let ctx = context(
        "FROM busybox\nENV GREETING=hi\nRUN <<EOF\necho one > /h1\necho two >> /h1\nEOF\nRUN cat > /h2 <<EOT && echo after >> /h2\nline $HOME\nEOT\nCOPY <<EOF /h3\ncopied ${GREETING}\nEOF\nRUN <<EOF\n#!/bin/sh\necho shebang > /h4\nEOF\nRUN sh <<'Q'\necho '$NOT' > /h5\nQ\nCOPY <<a.txt <<b.txt /multi/\nA\na.txt\nB\nb.txt\nCMD [\"sh\", \"-c\", \"cat /h1 /h2 /h3 /h4 /h5 /multi/a.txt /multi/b.txt\"]\n",
        &[],
    );
    build(
        root.path(),
        ctx.path(),
        "heredoc",
        &["--network", "none"],
        None,
    );
    let out =
        ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "heredoc"]));
    assert_eq!(
        out,
        "one\ntwo\nline /root\nafter\ncopied hi\nshebang\n$NOT\nA\nB\n"
    );
}

#[test]
fn build_debian_apt_get_through_the_build_bridge() {
    if !require_root() {
        return;
    }
    if std::process::Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mmdebstrap missing under CI"
        );
        eprintln!("skipping: mmdebstrap not installed");
        return;
    }
    let root = root_with_base();
    ok(tug(root.path()).args([
        "image",
        "bootstrap",
        "debian:bookworm",
        "--name",
        "debian:bookworm",
    ]));
    let ctx = context(
        "FROM debian:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*\nCOPY app.txt /app/\nCMD [\"sh\", \"-c\", \"hello; cat /app/app.txt\"]\n",
        &[("app.txt", "app v1\n")],
    );
    build(root.path(), ctx.path(), "deb-app", &[], None);
    let out =
        ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "deb-app"]));
    assert_eq!(out, "Hello, world!\napp v1\n");
    // Changing the app rebuilds only the COPY.
    std::fs::write(ctx.path().join("app.txt"), "app v2\n").unwrap();
    let (e, _) = build(root.path(), ctx.path(), "deb-app", &[], None);
    assert_eq!(counts(&e), (1, 1), "{e}");
}

#[test]
fn build_result_pushed_and_pulled_into_a_fresh_root_runs() {
    if !require_root() || !crate::image_registry::have("docker-registry") {
        return;
    }
    let root = root_with_base();
    let reg = crate::image_registry::registry_with(tempfile::tempdir().unwrap(), "");
    let ctx = context(
        "FROM busybox\nCOPY a.txt /a.txt\nRUN echo ran >> /a.txt\nCMD [\"cat\", \"/a.txt\"]\n",
        &[("a.txt", "pushed\n")],
    );
    let name = format!("{}/tug/built:1", reg.host);
    build(root.path(), ctx.path(), &name, &[], None);
    ok(tug(root.path()).args(["image", "push", "-q", &name]));
    let fresh = tempfile::tempdir().unwrap();
    ok(tug(fresh.path()).args(["image", "pull", "-q", &name]));
    let out = ok(tug(fresh.path()).args(["container", "run", "--rm", "--network", "none", &name]));
    assert_eq!(out, "pushed\nran\n");
    assert_eq!(
        inspect_config(fresh.path(), &name),
        inspect_config(root.path(), &name)
    );
}

#[test]
fn build_independent_stages_run_in_parallel() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let ctx = context(
        "FROM busybox AS a\nRUN sleep 3 && echo a > /a\n\nFROM busybox AS b\nRUN sleep 3 && echo b > /b\n\nFROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCMD [\"cat\", \"/a\", \"/b\"]\n",
        &[],
    );
    let t0 = std::time::Instant::now();
    build(root.path(), ctx.path(), "par", &["--network", "none"], None);
    let took = t0.elapsed();
    assert!(
        took < std::time::Duration::from_millis(5500),
        "two 3 s stages took {took:?}: not in parallel"
    );
    assert_eq!(
        ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "par"])),
        "a\nb\n"
    );
}

#[test]
fn build_source_date_epoch_gives_equal_digests_for_equal_inputs() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let ctx = context(
        "FROM busybox\nCOPY a.txt /a\nRUN mkdir -p /out && echo made > /out/f && touch /out/g\nCMD [\"cat\", \"/out/f\"]\n",
        &[("a.txt", "a\n")],
    );
    let args = [
        "--no-cache",
        "--network",
        "none",
        "--build-arg",
        "SOURCE_DATE_EPOCH=1700000000",
    ];
    let (_, id1) = build(root.path(), ctx.path(), "sde", &args, None);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, id2) = build(root.path(), ctx.path(), "sde", &args, None);
    assert_eq!(id1, id2, "the same inputs gave different images");
    let v: Value =
        serde_json::from_str(&ok(tug(root.path()).args(["image", "inspect", "sde"]))).unwrap();
    assert_eq!(v[0]["Created"], "2023-11-14T22:13:20Z");
    // Without it, a RUN's files carry the time they were made (as docker's): new digests.
    let (_, id3) = build(
        root.path(),
        ctx.path(),
        "sde",
        &["--no-cache", "--network", "none"],
        None,
    );
    assert_ne!(id1, id3);
}

#[test]
fn build_copy_exclude_and_parents() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let ctx = context(
        "FROM busybox\nCOPY --exclude=*.log --exclude=tmp . /ex/\nCOPY --parents src/a/*.c /p/\nCMD [\"sh\", \"-c\", \"cd /ex && find . -type f | sort; cd /p && find . -type f | sort\"]\n",
        &[
            ("keep.txt", "k\n"),
            ("drop.log", "d\n"),
            ("tmp/x", "x\n"),
            ("src/a/one.c", "1\n"),
            ("src/a/two.h", "2\n"),
        ],
    );
    build(root.path(), ctx.path(), "ex", &["--network", "none"], None);
    let out = ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "ex"]));
    assert_eq!(
        out,
        "./Dockerfile\n./keep.txt\n./src/a/one.c\n./src/a/two.h\n./src/a/one.c\n"
    );
}

#[test]
fn build_add_url_downloads_and_fails_clearly_without_a_server() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("file.txt"), "downloaded\n").unwrap();
    let port = crate::image_registry::free_port();
    let mut httpd = std::process::Command::new("busybox")
        .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
        .arg(www.path())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _k = Kill(&mut httpd);
    crate::common::eventually("httpd", std::time::Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let ctx = context(
        &format!(
            "FROM busybox\nADD http://127.0.0.1:{port}/file.txt /dl/\nADD http://127.0.0.1:{port}/file.txt /named\nCMD [\"sh\", \"-c\", \"cat /dl/file.txt /named; stat -c '%a %u' /named\"]\n"
        ),
        &[],
    );
    build(
        root.path(),
        ctx.path(),
        "addurl",
        &["--network", "none"],
        None,
    );
    let out =
        ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "addurl"]));
    assert_eq!(out, "downloaded\ndownloaded\n600 0\n");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nADD http://127.0.0.1:1/nothing.txt /x\n",
    )
    .unwrap();
    let err = fails(
        tug(root.path())
            .args(["image", "build", "-t", "x"])
            .arg(ctx.path()),
    );
    assert!(
        err.contains("cannot download") && err.contains("Dockerfile:2"),
        "{err}"
    );
}

#[test]
fn build_compose_keys_reach_the_builder() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("extra")).unwrap();
    std::fs::write(p.join("extra/data.txt"), "from extra context\n").unwrap();
    std::fs::write(p.join(".env"), "BUILD_TOKEN=compose-secret-value\n").unwrap();
    std::fs::write(
        p.join("compose.yaml"),
        r#"services:
  app:
    build:
      context: .
      dockerfile_inline: |
        FROM busybox AS base
        ARG FLAVOUR
        RUN echo "flavour=$$FLAVOUR" > /flavour
        FROM base AS final
        COPY --from=extra data.txt /data.txt
        RUN --mount=type=secret,id=token,required=true wc -c < /run/secrets/token > /token-len
        CMD ["sh", "-c", "cat /flavour /data.txt /token-len"]
        FROM base AS other
        RUN exit 1
      target: final
      args:
        FLAVOUR: vanilla
      labels:
        com.example.built-by: tug
      tags:
        - app-extra:1
      additional_contexts:
        extra: ./extra
      secrets:
        - token
      network: none
secrets:
  token:
    environment: BUILD_TOKEN
"#,
    )
    .unwrap();
    let project = unique("bk");
    let mut c = tug(root.path());
    c.current_dir(p).args(["-p", &project, "build", "-q"]);
    ok(&mut c);
    let image = format!("{project}-app");
    let out = ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", &image]));
    assert_eq!(out, "flavour=vanilla\nfrom extra context\n20\n");
    let cfg = inspect_config(root.path(), "app-extra:1");
    assert_eq!(cfg["Labels"]["com.example.built-by"], "tug");
    assert!(!layer_contents(root.path()).contains("compose-secret-value"));
}

#[test]
fn build_run_cannot_make_tug_touch_host_paths_through_its_links() {
    // A RUN step moves the directory holding a mount point and puts a symlink to a host
    // directory in its place: removing the mount-point stubs afterwards must not follow it.
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("hostile"), "").unwrap();
    std::fs::create_dir(outside.path().join("empty-dir")).unwrap();
    let secret = outside.path().join("secret-src");
    std::fs::write(&secret, "SECRET-THAT-MUST-NOT-LEAK").unwrap();
    let ctx = context(
        &format!(
            "FROM busybox\nRUN --mount=type=secret,id=s,target=/run/secrets/hostile --mount=type=tmpfs,target=/run/t/empty-dir mv /run/secrets /run/moved && ln -s {o} /run/secrets && mv /run/t /run/t2 && ln -s {o} /run/t\n",
            o = outside.path().display()
        ),
        &[],
    );
    build(
        root.path(),
        ctx.path(),
        "hostile",
        &[
            "--network",
            "none",
            "--secret",
            &format!("id=s,src={}", secret.display()),
        ],
        None,
    );
    assert!(
        outside.path().join("hostile").exists(),
        "tug removed a host file"
    );
    assert!(
        outside.path().join("empty-dir").exists(),
        "tug removed a host directory"
    );
    assert!(!layer_contents(root.path()).contains("SECRET-THAT-MUST-NOT-LEAK"));
}

#[test]
fn build_run_bind_mounts_read_only_and_scratch_writable() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let ctx = context(
        "FROM busybox AS tools\nRUN echo tool > /tool\nFROM busybox\nRUN --mount=type=bind,source=src,target=/src,rw --mount=type=bind,from=tools,source=/tool,target=/mnt/tool echo added > /src/new && cat /src/a /src/new /mnt/tool > /out && (echo x > /mnt/tool 2>/dev/null && echo writable || echo read-only) >> /out\nCMD [\"sh\", \"-c\", \"cat /out; ls /src 2>&1 | head -1\"]\n",
        &[("src/a", "from context\n")],
    );
    build(
        root.path(),
        ctx.path(),
        "binds",
        &["--network", "none"],
        None,
    );
    let out = ok(tug(root.path()).args(["container", "run", "--rm", "--network", "none", "binds"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..4],
        &["from context", "added", "tool", "read-only"],
        "{out}"
    );
    assert!(
        !ctx.path().join("src/new").exists(),
        "a rw bind mount wrote into the context"
    );
}

#[test]
fn build_killed_mid_run_leaves_nothing_the_next_build_does_not_remove() {
    if !require_root() {
        return;
    }
    let root = root_with_base();
    let marker = format!(
        "{}.{}",
        40 + std::process::id() % 50,
        std::process::id() % 997
    );
    let ctx = context(&format!("FROM busybox\nRUN sleep {marker}\n"), &[]);
    let mut child = tug(root.path())
        .args(["image", "build", "--network", "none", "-t", "killed"])
        .arg(ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).replace('\0', " ").trim() == format!("sleep {marker}")
            })
        })
    };
    crate::common::eventually("the RUN step", std::time::Duration::from_secs(20), running);
    nix_kill(child.id(), 15);
    let _ = child.wait();
    // The helper ends the container when the builder dies.
    crate::common::eventually(
        "the container's end",
        std::time::Duration::from_secs(10),
        || !running(),
    );
    assert!(
        std::fs::read_dir(root.path().join("build/tmp"))
            .unwrap()
            .count()
            > 0,
        "the killed build's step directory is expected to be left for the next build"
    );
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nRUN true\n").unwrap();
    build(
        root.path(),
        ctx.path(),
        "next",
        &["--network", "none"],
        None,
    );
    assert_eq!(
        std::fs::read_dir(root.path().join("build/tmp"))
            .unwrap()
            .count(),
        0
    );
    let ls = ok(tug(root.path()).args(["image", "ls"]));
    assert!(!ls.contains("killed"), "{ls}");
}

fn nix_kill(pid: u32, sig: i32) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

#[test]
fn build_compose_build_flags_like_docker_compose() {
    if !require_root() || !crate::image_registry::have("docker-registry") {
        return;
    }
    let root = root_with_base();
    let reg = crate::image_registry::registry_with(tempfile::tempdir().unwrap(), "");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for (svc, text) in [("db", "db-1"), ("api", "api-1")] {
        std::fs::create_dir_all(p.join(svc)).unwrap();
        std::fs::write(
            p.join(svc).join("Dockerfile"),
            format!("FROM busybox\nRUN echo {text} > /v\nCMD [\"cat\", \"/v\"]\n"),
        )
        .unwrap();
    }
    std::fs::write(
        p.join("compose.yaml"),
        format!(
            "services:\n  db:\n    build: ./db\n    image: {h}/tug/db:1\n  api:\n    build: ./api\n    image: {h}/tug/api:1\n    depends_on: [db]\n",
            h = reg.host
        ),
    )
    .unwrap();
    let project = unique("bflags");
    let compose = |args: &[&str]| {
        let mut c = tug(root.path());
        c.current_dir(p).args(["-p", &project]).args(args);
        c
    };
    let guard = Down(root.path().to_path_buf(), p.to_path_buf(), project.clone());
    // --with-dependencies builds what the named service depends on, first.
    let out = run(&mut compose(&["build", "--with-dependencies", "api"]));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let (db, api) = (err.find("db: built"), err.find("api: built"));
    assert!(db.is_some() && api.is_some() && db < api, "{err}");
    // Without it only the named one.
    let err = String::from_utf8_lossy(&run(&mut compose(&["build", "api"])).stderr).into_owned();
    assert!(
        err.contains("api: built") && !err.contains("db: built"),
        "{err}"
    );
    // An attestation flag that asks for none is fine; one that asks for one is refused by name.
    ok(&mut compose(&[
        "build",
        "--provenance=false",
        "--sbom",
        "false",
        "api",
    ]));
    for flag in [
        &["--sbom=true"][..],
        &["--memory", "1g"],
        &["--ssh", "default"],
        &["--print"],
    ] {
        let out = run(compose(&["build"]).args(flag).arg("api"));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let name = flag[0].split('=').next().unwrap();
        assert!(
            !out.status.success() && err.contains(name),
            "{flag:?}: {err}"
        );
    }
    // --push: the built image reaches the registry and runs from a fresh root.
    let err = String::from_utf8_lossy(&run(&mut compose(&["build", "--push", "api"])).stderr)
        .into_owned();
    assert!(err.contains("api: pushed"), "{err}");
    let api_image = format!("{}/tug/api:1", reg.host);
    let fresh = tempfile::tempdir().unwrap();
    ok(tug(fresh.path()).args(["image", "pull", "-q", &api_image]));
    let out =
        ok(tug(fresh.path()).args(["container", "run", "--rm", "--network", "none", &api_image]));
    assert_eq!(out, "api-1\n");
    // `run --build` builds the changed Dockerfile before the one-off runs; plain `run` does not.
    std::fs::write(
        p.join("api/Dockerfile"),
        "FROM busybox\nRUN echo api-2 > /v\nCMD [\"cat\", \"/v\"]\n",
    )
    .unwrap();
    assert_eq!(
        ok(&mut compose(&["run", "--rm", "--no-deps", "api"])),
        "api-1\n"
    );
    assert_eq!(
        ok(&mut compose(&[
            "run",
            "--rm",
            "--no-deps",
            "--build",
            "api"
        ])),
        "api-2\n"
    );
    drop(guard);
}
