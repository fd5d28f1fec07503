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

/// One flag of docker compose: (verb, short, long, takes a value).
type ComposeFlag = (String, Option<char>, String, bool);

/// docker compose v2.40's flags, from `tests/fixtures/cli/compose-flags.txt` (its `--help`,
/// recorded by `regen-compose-flags.sh`), plus the hidden ones its source defines (they do
/// not show in `--help`, but clients pass them).
fn compose_flags() -> Vec<ComposeFlag> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cli/compose-flags.txt"),
    )
    .expect("compose-flags.txt");
    let mut out: Vec<ComposeFlag> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "bad line {l:?}");
            (
                f[0].to_string(),
                f[1].strip_prefix('-').and_then(|s| s.chars().next()),
                f[2].trim_start_matches("--").to_string(),
                f[3] != "-",
            )
        })
        .collect();
    // Hidden in docker compose v2.40.3 (cmd/compose/*.go: MarkHidden, SetNormalizeFunc).
    for (verb, short, long, value) in [
        ("global", None, "workdir", true),
        ("global", None, "no-ansi", false),
        ("global", None, "verbose", false),
        ("global", Some('v'), "version", false),
        ("exec", Some('i'), "interactive", false),
        ("exec", Some('t'), "tty", false),
        ("exec", None, "no-TTY", false),
        ("run", Some('t'), "tty", false),
        ("rm", Some('a'), "all", false),
        ("down", None, "volume", false),
        ("up", None, "y", false),
        ("create", None, "y", false),
        // (`pull --parallel`, a deprecated no-op flag, is left out: tug's `--parallel N`
        // project option takes that name after the verb.)
        ("pull", None, "no-parallel", false),
    ] {
        out.push((verb.to_string(), short, long.to_string(), value));
    }
    out
}

/// docker compose verbs tug does not have yet, with the reason. Shrinks only: the test fails
/// when one of them exists.
const VERBS_NOT_YET: &[(&str, &str)] = &[
    ("build", "building images is issue 17 (src/engine/build)"),
    ("watch", "develop.watch is not implemented (src/watch)"),
    (
        "bridge",
        "converts compose files into Kubernetes/Helm models: out of scope",
    ),
    (
        "publish",
        "publishes the compose file as an OCI artifact: not yet",
    ),
    ("attach", "attaching stdin to a running container: not yet"),
    ("commit", "an image from a container's changes: not yet"),
    ("export", "a container's file system as a tar: not yet"),
    (
        "stats",
        "resource usage from the containers' cgroups: not yet",
    ),
];

#[test]
fn every_docker_compose_flag_is_accepted() {
    let mut cli = tug::cli::command();
    cli.build();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (verb, short, long, value) in compose_flags() {
        let cmd = if verb == "global" {
            Some(&cli)
        } else {
            cli.find_subcommand(&verb)
        };
        let Some(cmd) = cmd else {
            if !VERBS_NOT_YET.iter().any(|(v, _)| *v == verb) {
                problems.push(format!("no verb `{verb}`"));
            }
            continue;
        };
        checked += 1;
        // The flag by its long name, or a visible or hidden alias of one.
        let arg = cmd.get_arguments().find(|a| {
            a.get_long() == Some(long.as_str())
                || a.get_all_aliases()
                    .is_some_and(|al| al.contains(&long.as_str()))
        });
        let Some(arg) = arg else {
            problems.push(format!("{verb}: no --{long}"));
            continue;
        };
        if let Some(c) = short {
            let shorts: Vec<char> = arg
                .get_short()
                .into_iter()
                .chain(arg.get_all_short_aliases().unwrap_or_default())
                .collect();
            if !shorts.contains(&c) {
                problems.push(format!("{verb}: --{long} has no -{c}"));
            }
        }
        // A flag whose value is optional (`--orphans`, `--orphans=false`) is a boolean flag.
        let takes = arg.get_action().takes_values()
            && arg.get_num_args().is_none_or(|r| r.min_values() > 0);
        if takes != value {
            problems.push(format!(
                "{verb}: --{long} {} a value in docker compose, {} in tug",
                if value { "takes" } else { "takes no" },
                if takes { "takes one" } else { "takes none" }
            ));
        }
    }
    for (verb, why) in VERBS_NOT_YET {
        if cli.find_subcommand(verb).is_some() {
            problems.push(format!(
                "`{verb}` exists now: remove it from VERBS_NOT_YET (was: {why})"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} flag(s) of docker compose v2.40 missing or different:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(checked > 190, "only {checked} flags checked");
}
