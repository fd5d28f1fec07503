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
    (
        "bridge",
        "converts compose files into Kubernetes/Helm models: out of scope",
    ),
    (
        "publish",
        "publishes the compose file as an OCI artifact: not yet",
    ),
    ("attach", "attaching stdin to a running container: not yet"),
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

/// A project of the output tests, taken down (`down -v`) when dropped, even on failure.
struct Project {
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
    name: String,
}

impl Project {
    fn new(yaml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
        crate::common::busybox_image(root.path());
        Project {
            dir,
            root,
            name: crate::common::unique("out"),
        }
    }

    fn cmd(&self) -> std::process::Command {
        let mut c = tug(self.root.path());
        c.current_dir(self.dir.path()).args(["-p", &self.name]);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.cmd().args(args))
    }

    fn ps_json(&self) -> Vec<serde_json::Value> {
        self.ok(&["ps", "-a", "--format", "json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.cmd().args(["down", "-v", "-t", "1"]).output();
    }
}

const OUTPUT_STACK: &str = r#"
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1::80"]
    expose: ["3000"]
    volumes: [data:/data]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
  worker:
    image: busybox
    command: ["sh", "-c", "echo line one; echo to stderr >&2; echo line two; exit 3"]
volumes:
  data:
"#;

/// `ps`, `ls`, `images`, `container ls`, `image ls`, `logs` and attached `up` print what
/// docker compose prints, and take Go templates.
#[test]
fn compose_output_reads_like_docker_compose() {
    if !crate::common::require_root() {
        return;
    }
    let p = Project::new(OUTPUT_STACK);
    let web = format!("{}-web-1", p.name);
    let worker = format!("{}-worker-1", p.name);

    // Attached `up` of the worker: `Attaching to` first, its lines prefixed by
    // service-replica, the stderr line on stderr, then the exit status line.
    let out = crate::common::run(p.cmd().args(["up", "worker"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("Attaching to worker-1\n"), "{stdout}");
    assert!(
        stdout.contains("worker-1  | line one\nworker-1  | line two\n"),
        "{stdout}"
    );
    assert!(stderr.contains("worker-1  | to stderr\n"), "{stderr}");
    assert!(
        stdout.contains("\r\x1b[Kworker-1 exited with code 3\n"),
        "{stdout:?}"
    );
    // --exit-code-from: the container's exit code, and the abort said on stderr.
    let out = crate::common::run(p.cmd().args(["up", "--exit-code-from", "worker", "worker"]));
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Aborting on container exit..."));

    p.ok(&["up", "-d"]);
    crate::common::eventually("web healthy", std::time::Duration::from_secs(30), || {
        p.ps_json()
            .iter()
            .any(|c| c["Name"] == web.as_str() && c["Health"] == "healthy")
    });

    // ps: docker compose's columns; ports only for the running container; the command cut
    // to 20 characters as docker cuts it.
    let ps = p.ok(&["ps", "-a"]);
    let mut lines = ps.lines();
    let header = lines.next().unwrap();
    let cols: Vec<&str> = header
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cols,
        [
            "NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS"
        ],
        "{ps}"
    );
    let web_row = ps.lines().find(|l| l.starts_with(&web)).unwrap();
    assert!(web_row.contains("\"sh -c 'mkdir -p /ww…\""), "{ps}");
    assert!(web_row.contains(" ago "), "{ps}");
    assert!(web_row.contains("(healthy)"), "{ps}");
    assert!(web_row.contains("3000/tcp, 127.0.0.1:"), "{ps}");
    assert!(web_row.trim_end().ends_with("->80/tcp"), "{ps}");
    let worker_row = ps.lines().find(|l| l.starts_with(&worker)).unwrap();
    assert!(worker_row.contains("Exited (3)"), "{ps}");
    assert!(!worker_row.contains("/tcp"), "{ps}");
    // Columns line up as docker's tabwriter lines them up (in characters: `…` is one).
    let status_col = header[..header.find("STATUS").unwrap()].chars().count();
    let at = |row: &str| row.chars().skip(status_col).collect::<String>();
    assert!(at(web_row).starts_with("Up "), "STATUS misaligned:\n{ps}");
    assert!(
        at(worker_row).starts_with("Exited "),
        "STATUS misaligned:\n{ps}"
    );

    // ps --format json: compose's fields and words.
    let js = p.ps_json();
    let w = js.iter().find(|c| c["Name"] == web.as_str()).unwrap();
    assert_eq!(w["ID"].as_str().unwrap().len(), 12);
    assert!(w["RunningFor"].as_str().unwrap().ends_with(" ago"), "{w}");
    let created = w["CreatedAt"].as_str().unwrap();
    assert!(
        regex::Regex::new(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \S+$")
            .unwrap()
            .is_match(created),
        "{created}"
    );
    assert_eq!(w["Mounts"], format!("{}_data", p.name));
    assert_eq!(w["LocalVolumes"], "1");
    assert_eq!(w["Service"], "web");
    assert_eq!(w["Publishers"][0]["TargetPort"], 80);
    assert_eq!(w["Publishers"][0]["URL"], "127.0.0.1");
    let k = js.iter().find(|c| c["Name"] == worker.as_str()).unwrap();
    assert_eq!(k["ExitCode"], 3);
    assert_eq!(k["Publishers"], serde_json::json!([]));
    assert_eq!(
        p.ok(&["ps", "--format", "json", "--no-trunc"])
            .lines()
            .count(),
        1
    );

    // Templates.
    assert_eq!(
        p.ok(&["ps", "--format", "{{.Name}} {{.State}}"]),
        format!("{web} running\n")
    );
    assert_eq!(
        p.ok(&["ps", "-a", "--format", "table {{.Service}}\\t{{.State}}"]),
        "SERVICE   STATE\nweb       running\nworker    exited\n"
    );
    assert_eq!(
        p.ok(&[
            "ps",
            "--format",
            "{{.Label \"com.docker.compose.service\"}}"
        ]),
        "web\n"
    );
    let one: serde_json::Value =
        serde_json::from_str(&p.ok(&["ps", "--format", "{{json .}}"])).unwrap();
    assert_eq!(one["Name"], web.as_str());
    let err =
        crate::common::fails(
            p.cmd()
                .args(["ps", "--format", "{{range .Publishers}}x{{end}}"]),
        );
    assert!(err.contains("`range` is not supported"), "{err}");
    assert_eq!(
        p.ok(&["ps", "--status", "exited", "--format", "{{.Service}}"]),
        "worker\n"
    );
    assert_eq!(
        p.ok(&["ps", "-a", "--filter", "status=exited", "-q"])
            .trim()
            .len(),
        64
    );

    // ls, images, container ls, image ls.
    let ls = p.ok(&["ls", "-a", "--format", "{{.Name}}: {{.Status}}"]);
    assert!(
        ls.contains(&format!("{}: exited(1), running(1)", p.name)),
        "{ls}"
    );
    let ls: serde_json::Value = serde_json::from_str(&p.ok(&["ls", "--format", "json"])).unwrap();
    assert_eq!(ls[0]["Name"], p.name.as_str());
    let images = p.ok(&["images"]);
    assert!(images.starts_with("CONTAINER "), "{images}");
    assert!(images.contains(" busybox "), "{images}");
    assert_eq!(
        p.ok(&[
            "images",
            "--format",
            "{{.ContainerName}} {{.Repository}}:{{.Tag}}"
        ]),
        format!("{web} busybox:latest\n{worker} busybox:latest\n")
    );
    assert_eq!(
        ok(tug(p.root.path()).args(["container", "ls", "--format", "{{.Names}}"])),
        format!("{web}\n")
    );
    let cls = ok(tug(p.root.path()).args(["container", "ls", "-a", "--format", "json"]));
    let c: serde_json::Value = serde_json::from_str(cls.lines().next().unwrap()).unwrap();
    assert!(
        c.get("Names").is_some() && c.get("Service").is_none(),
        "{c}"
    );
    assert_eq!(
        ok(tug(p.root.path()).args(["image", "ls", "-a", "--format", "{{.Repository}}:{{.Tag}}"])),
        "busybox:latest\n"
    );

    // logs: service-replica prefixes padded to the widest plus one; stderr lines on stderr;
    // colours only when asked for (NO_COLOR is set by the test helper).
    let out = crate::common::run(p.cmd().args(["logs"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("worker-1  | line one\n"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("worker-1  | to stderr"),
        "{out:?}"
    );
    let coloured = p.ok(&["--ansi", "always", "logs", "worker"]);
    assert!(
        coloured.starts_with("\x1b[36mworker-1  | \x1b[0mline one\n"),
        "{coloured:?}"
    );
    assert_eq!(
        p.ok(&[
            "--ansi",
            "always",
            "logs",
            "--no-color",
            "--no-log-prefix",
            "-n",
            "3",
            "worker"
        ]),
        "line one\nline two\n"
    );

    // stats: docker's columns, from the cgroups.
    let stats = p.ok(&["stats", "--no-stream"]);
    assert!(
        stats.starts_with("CONTAINER ID   NAME ") && stats.contains("MEM USAGE / LIMIT"),
        "{stats}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&p.ok(&["stats", "--no-stream", "--format", "json", "web"])).unwrap();
    assert_eq!(st["Name"], web.as_str());
    assert_eq!(st["PIDs"], "1");
    assert!(
        regex::Regex::new(r"^[\d.]+[KMG]?i?B / [\d.]+[KMGT]iB$")
            .unwrap()
            .is_match(st["MemUsage"].as_str().unwrap()),
        "{st}"
    );
    assert!(st["CPUPerc"].as_str().unwrap().ends_with('%'), "{st}");

    // A stopped service shows no health and no ports.
    p.ok(&["stop", "-t", "1"]);
    let ps = p.ok(&[
        "ps",
        "-a",
        "--format",
        "{{.Name}}|{{.Status}}|{{.Ports}}|{{.Health}}",
    ]);
    let web_row = ps.lines().find(|l| l.starts_with(&web)).unwrap();
    assert!(web_row.starts_with(&format!("{web}|Exited (")), "{ps}");
    assert!(web_row.ends_with("||"), "{ps}");
}

/// The project options show under the verbs that load a project, not under engine verbs.
#[test]
fn project_options_only_under_the_verbs_that_use_them() {
    let tmp = tempfile::tempdir().unwrap();
    for verb in ["image", "container", "network", "volume"] {
        let h = ok(tug(tmp.path()).args([verb, "--help"]));
        assert!(!h.contains("--project-name"), "{verb}: {h}");
        assert!(!h.contains("--env-file"), "{verb}: {h}");
    }
    for verb in ["up", "ps", "config", "logs"] {
        let h = ok(tug(tmp.path()).args([verb, "--help"]));
        assert!(h.contains("--project-name"), "{verb}: {h}");
        assert!(h.contains("--profile"), "{verb}: {h}");
    }
    // Before the verb, as docker compose has them.
    let err = fails(tug(tmp.path()).args(["image", "ls", "--project-name", "x"]));
    assert!(err.contains("--project-name"), "{err}");
}
