//! The command line around the verbs (issue 14): a closed output ends any verb quietly, and a
//! user who is not root is told once, up front, what tug needs and what works without it.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use crate::common::{busybox_image, ok, require_root, tug, tug_bin};

/// Runs `cmd` with its stdout a pipe whose reader is already gone (`… | head -0`).
fn with_closed_stdout(cmd: &mut Command) -> std::process::Output {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    cmd.stdout(Stdio::from(w)).stderr(Stdio::piped());
    cmd.output().unwrap()
}

#[test]
fn cli_setup_a_closed_output_pipe_ends_every_listing_verb_quietly() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    busybox_image(r);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  web:\n    image: busybox:latest\n    command: [\"sleep\", \"1000\"]\n    init: true\n",
    )
    .unwrap();
    let project = crate::common::unique("pipe");
    let compose = |args: &[&str]| {
        let mut c = tug(r);
        c.current_dir(dir.path()).args(["-p", &project]).args(args);
        c
    };
    ok(&mut compose(&["up", "-d"]));
    let verbs: Vec<Vec<&str>> = vec![
        vec!["ps"],
        vec!["ps", "-q"],
        vec!["ps", "--format", "json"],
        vec!["ls"],
        vec!["images"],
        vec!["config"],
        vec!["top"],
        vec!["logs"],
        vec!["image", "ls"],
        vec!["container", "ls", "-a"],
        vec!["network", "ls"],
        vec!["volume", "ls"],
        vec!["version"],
    ];
    for v in &verbs {
        let out = with_closed_stdout(&mut compose(v));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(0) && !err.contains("panicked"),
            "tug {v:?} with a closed stdout: {}\n{err}",
            out.status
        );
    }
    ok(&mut compose(&["down", "-t", "0"]));
}

#[test]
fn cli_setup_a_user_who_is_not_root_is_told_once_what_tug_needs() {
    if !require_root() {
        return;
    }
    // A project directory `nobody` can read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  web:\n    image: busybox:latest\n",
    )
    .unwrap();
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new(tug_bin());
        c.current_dir(dir.path())
            .env("TUG_ROOT", "/nonexistent-tug-root")
            .env("TUG_CONFIG", dir.path().join("cfg"))
            .env_remove("COMPOSE_PROJECT_NAME")
            .args(args)
            .uid(65534)
            .gid(65534);
        c.output().unwrap()
    };
    for v in [
        &["ps"][..],
        &["up", "-d"],
        &["down"],
        &["image", "ls"],
        &["container", "run", "busybox"],
        &["network", "ls"],
        &["volume", "create", "x"],
    ] {
        let out = as_nobody(v);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "tug {v:?}: {err}");
        assert_eq!(
            err.matches("needs root").count(),
            1,
            "tug {v:?} says it once: {err}"
        );
        assert!(
            err.contains("tug config")
                && !err.contains("Permission denied")
                && !err.contains("EPERM"),
            "tug {v:?}: {err}"
        );
    }
    // What needs no engine works.
    let out = as_nobody(&["config", "--services"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");
    assert!(as_nobody(&["version"]).status.success());
}

#[test]
fn cli_setup_a_missing_test_tool_fails_under_ci_and_names_its_package() {
    use crate::common::require_tools_in;
    assert!(require_tools_in(&["sh"], true));
    let under_ci = std::panic::catch_unwind(|| require_tools_in(&["socat-not-here"], true));
    let msg = under_ci.expect_err("a missing tool fails under CI=true");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("socat-not-here"), "{msg}");
    // Outside CI the test is skipped (false), with the same message on stderr.
    assert!(!require_tools_in(&["socat-not-here"], false));
    // Every tool the tests run is listed with its package (README names them too).
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    for (tool, pkg) in crate::common::TOOL_PACKAGES {
        if ["coreutils"].contains(pkg) {
            continue;
        }
        assert!(
            readme.contains(pkg),
            "README does not name {pkg} (for {tool})"
        );
        assert!(
            ci.contains(pkg),
            ".ci/run does not install {pkg} (for {tool})"
        );
    }
}
