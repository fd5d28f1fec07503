//! The command line itself: help, version, completions, errors.

use crate::common::{fails, ok, tug};

#[test]
fn version_and_help() {
    let tmp = tempfile::tempdir().unwrap();
    let v = ok(tug(tmp.path()).arg("--version"));
    assert!(v.starts_with("tug "), "{v}");
    let h = ok(tug(tmp.path()).arg("--help"));
    assert!(h.contains("config"), "{h}");
}

#[test]
fn completions_generate_for_every_shell() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(tug(tmp.path()).args(["completion", shell]));
        assert!(out.contains("tug"), "{shell}: {out}");
        assert!(out.len() > 500, "{shell} completion is suspiciously short");
    }
}

#[test]
fn unknown_verb_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(tug(tmp.path()).arg("frobnicate"));
    assert!(err.contains("frobnicate"), "{err}");
}
