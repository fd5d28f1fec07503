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
fn root_with_base() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    ok(tug(t.path()).args([
        "image",
        "bootstrap",
        "busybox",
        "--name",
        "conformance-base",
    ]));
    ok(tug(t.path()).args(["image", "tag", "conformance-base", "busybox"]));
    t
}

/// Copies case `name` into a fresh directory and runs its `prepare.sh`.
fn case_dir(name: &str, into: &Path) -> PathBuf {
    let dst = into.join(name);
    copy_tree(&fixtures().join(name), &dst);
    for f in ["expected.json"] {
        let _ = std::fs::remove_file(dst.join(f));
    }
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
