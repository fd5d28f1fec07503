//! Clients that drive `docker compose` drive tug: the `docker`/`docker-compose` links of
//! `tug install-shim`, compose's version words, and testcontainers-python's compose module
//! running a real stack through the shim.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{busybox_image, fails, ok, require_root, tug, tug_bin};

/// `tug install-shim DIR`, returning DIR.
fn install_shim(root: &Path, dir: &Path) -> PathBuf {
    let out = ok(tug(root).arg("install-shim").arg(dir));
    assert!(out.contains("docker_command_path"), "{out}");
    dir.to_path_buf()
}

#[test]
fn shim_runs_tug_as_docker_compose_and_passes_other_docker_commands_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let shim = install_shim(&root, &tmp.path().join("shim"));
    for name in ["docker", "docker-compose"] {
        let target = std::fs::canonicalize(shim.join(name)).unwrap();
        assert_eq!(target, std::fs::canonicalize(tug_bin()).unwrap(), "{name}");
    }
    // Installing again is fine; a foreign file of that name is not replaced without --force.
    install_shim(&root, &shim);
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("docker-compose"), "#!/bin/sh\n").unwrap();
    let err = fails(tug(&root).arg("install-shim").arg(&other));
    assert!(err.contains("--force"), "{err}");

    // A fake "real" docker after the shim on PATH gets the other commands.
    let real = tmp.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    let fake = real.join("docker");
    std::fs::write(&fake, "#!/bin/sh\necho \"real docker: $*\"\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}:/usr/bin:/bin", shim.display(), real.display());
    let run = |prog: &str, args: &[&str]| -> String {
        ok(Command::new(shim.join(prog))
            .args(args)
            .env("PATH", &path)
            .env("TUG_ROOT", &root)
            .current_dir(tmp.path()))
    };
    assert_eq!(run("docker", &["ps", "-a"]), "real docker: ps -a\n");

    // As docker compose: compose's version words, which clients checking for v2 parse.
    for (prog, pre) in [("docker", &["compose"][..]), ("docker-compose", &[][..])] {
        let v = run(prog, &[pre, &["version"]].concat());
        assert!(
            v.starts_with("Docker Compose version v2.40.3"),
            "{prog}: {v}"
        );
        assert_eq!(
            run(prog, &[pre, &["version", "--short"]].concat()),
            "2.40.3\n"
        );
        let js: serde_json::Value = serde_json::from_str(&run(
            prog,
            &[pre, &["version", "--format", "json"]].concat(),
        ))
        .unwrap();
        assert_eq!(js["version"], "v2.40.3");
    }
    assert!(run("docker-compose", &["--version"]).starts_with("Docker Compose version v2"));
    // docker's own options before `compose` are skipped.
    assert!(
        run("docker", &["--context", "default", "compose", "version"])
            .starts_with("Docker Compose version")
    );
    // As tug: tug's own version.
    let v = ok(tug(&root).arg("version"));
    assert!(v.starts_with("tug version "), "{v}");

    // Project verbs work through the shim, the compose options in compose's places.
    let proj = tmp.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("compose.yaml"),
        "services:\n  web:\n    image: busybox\n",
    )
    .unwrap();
    let out = ok(Command::new(shim.join("docker"))
        .args([
            "compose",
            "-f",
            "compose.yaml",
            "-p",
            "shimproj",
            "config",
            "--services",
        ])
        .env("PATH", &path)
        .env("TUG_ROOT", &root)
        .current_dir(&proj));
    assert_eq!(out, "web\n");

    // Without another docker on PATH, a clear error.
    let err = fails(
        Command::new(shim.join("docker"))
            .arg("ps")
            .env("PATH", format!("{}:/nonexistent", shim.display()))
            .env("TUG_ROOT", &root),
    );
    assert!(
        err.contains("tug's shim") && err.contains("docker ps"),
        "{err}"
    );
}

/// The Python interpreter with testcontainers-python: `TUG_TEST_PYTHON` (`.ci/run` makes a
/// venv and sets it), else a venv this test makes under cargo's scratch directory with pip.
/// `None` (the test is skipped) only outside CI.
fn testcontainers_python() -> Option<PathBuf> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let has_module = |py: &Path| {
        Command::new(py)
            .args(["-c", "import testcontainers.compose"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(p) = std::env::var_os("TUG_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            has_module(&p),
            "TUG_TEST_PYTHON={} cannot import testcontainers.compose (pip install testcontainers)",
            p.display()
        );
        return Some(p);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testcontainers-venv");
    let py = venv.join("bin/python");
    if !has_module(&py) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "testcontainers==4.15.0"])
                .status()
                .is_ok_and(|s| s.success());
        if !made || !has_module(&py) {
            assert!(
                !ci,
                "testcontainers-python is missing: set TUG_TEST_PYTHON to a python with \
                 `pip install testcontainers` (.ci/run does), or give this test python3-venv \
                 and PyPI"
            );
            eprintln!("skipping: testcontainers-python unavailable (python3-venv, PyPI)");
            return None;
        }
    }
    Some(py)
}

/// What the Python side does with testcontainers' `DockerCompose`, driving tug through the
/// shim: start with wait, find the service's host and port and reach it, list containers,
/// exec, read logs and the config, stop (down -v). It prints what it saw as JSON.
const DRIVER: &str = r#"
import json, sys, urllib.request
from testcontainers.compose import DockerCompose

shim, ctx = sys.argv[1], sys.argv[2]
compose = DockerCompose(ctx, compose_file_name="compose.yaml", docker_command_path=shim, wait=True)
seen = {}
with compose:
    host, port = compose.get_service_host_and_port("web", 80)
    seen["host"] = host
    seen["port"] = port
    seen["body"] = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
    seen["containers"] = sorted((c.Service, c.State, c.Health or "") for c in compose.get_containers())
    web = compose.get_container("web")
    seen["web_name"] = web.Name
    seen["web_id"] = web.ID
    out, err, code = compose.exec_in_container(["sh", "-c", "echo from-exec; echo to-stderr >&2"], service_name="web")
    seen["exec"] = [out, err, code]
    logs_out, logs_err = compose.get_logs("worker")
    seen["logs"] = logs_out
    seen["config"] = compose.get_config()
print(json.dumps(seen))
"#;

#[test]
fn testcontainers_python_drives_tug_through_the_shim() {
    if !require_root() {
        return;
    }
    let Some(python) = testcontainers_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    busybox_image(&root);
    let shim = install_shim(&root, &tmp.path().join("shim"));
    // The project directory names the project (testcontainers passes no -p).
    let ctx = tmp.path().join(crate::common::unique("tcproj"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("compose.yaml"),
        r#"services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-testcontainers > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1::80"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"]
      interval: 1s
      retries: 30
  worker:
    image: busybox
    command: ["sh", "-c", "echo worker-started; exec sleep 300"]
    depends_on:
      web:
        condition: service_healthy
"#,
    )
    .unwrap();
    std::fs::write(tmp.path().join("driver.py"), DRIVER).unwrap();
    let out = Command::new(&python)
        .arg(tmp.path().join("driver.py"))
        .arg(shim.join("docker"))
        .arg(&ctx)
        .env("TUG_ROOT", &root)
        .env(
            "PATH",
            format!(
                "{}:{}",
                shim.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Whatever happened, nothing of the project may be left running.
    let left = ok(tug(&root)
        .current_dir(&ctx)
        .args(["ps", "-a", "--format", "{{.Name}}"]));
    if !left.trim().is_empty() {
        let _ = tug(&root).current_dir(&ctx).args(["down", "-v"]).output();
    }
    assert!(
        out.status.success(),
        "driver failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(left.trim().is_empty(), "containers left after stop: {left}");
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("driver output is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}")
    });
    assert_eq!(seen["host"], "127.0.0.1", "{seen}");
    assert!(seen["port"].as_u64().is_some_and(|p| p > 0), "{seen}");
    assert_eq!(seen["body"], "hello-testcontainers\n", "{seen}");
    assert_eq!(
        seen["containers"],
        serde_json::json!([["web", "running", "healthy"], ["worker", "running", ""]]),
        "{seen}"
    );
    assert!(
        seen["web_name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-web-1")),
        "{seen}"
    );
    assert_eq!(seen["web_id"].as_str().map(str::len), Some(12), "{seen}");
    assert_eq!(
        seen["exec"],
        serde_json::json!(["from-exec\n", "to-stderr\n", 0]),
        "{seen}"
    );
    assert!(
        seen["logs"]
            .as_str()
            .is_some_and(|l| l.contains("worker-1  | worker-started")),
        "{seen}"
    );
    assert_eq!(
        seen["config"]["services"]["web"]["ports"][0]["target"], 80,
        "{seen}"
    );
    // down -v removed the project's network with the containers.
    let nets = ok(tug(&root).args(["network", "ls"]));
    assert!(!nets.contains("_default"), "{nets}");
}

/// `image bootstrap busybox` twice gives one image, not a second one and a dangling first;
/// a podman-named image (`localhost/NAME`) is found under `NAME`, as podman finds it; and
/// `image ls -a` is accepted.
#[test]
fn images_as_podman_and_docker_users_expect() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = ok(tug(root).args(["image", "bootstrap", "busybox"]));
    let b = ok(tug(root).args(["image", "bootstrap", "busybox"]));
    assert_eq!(a, b);
    let ids = ok(tug(root).args(["image", "ls", "-a", "-q"]));
    assert_eq!(ids.lines().count(), 1, "{ids}");
    assert_eq!(
        ok(tug(root).args(["image", "ls", "--filter", "dangling=true", "-q"])),
        ""
    );
    ok(tug(root).args(["image", "tag", "busybox", "localhost/podbox:1"]));
    let inspect = ok(tug(root).args(["image", "inspect", "podbox:1"]));
    assert!(inspect.contains(a.trim()), "{inspect}");
    // A name with a registry is not looked up under localhost/.
    fails(tug(root).args(["image", "inspect", "example.com/podbox:1"]));
}
