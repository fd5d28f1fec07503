//! Malformed input never crashes `tug config`: the corpus in `tests/fixtures/malformed/` plus
//! inputs generated here (deep nesting, invalid UTF-8, NUL and control bytes, huge keys and
//! files) that are too big or too binary to commit.
//!
//! Every input must make `tug -f FILE config` exit with status 1 — the status docker compose
//! v2 uses for the same files — within a time limit and a memory limit, print nothing on
//! stdout, and print a short message on stderr that names the file. A panic, a backtrace, a
//! Rust debug dump (`Os { code: .. }`, `Some(..)`) or a death by signal (stack overflow,
//! out of memory) fails the test. `tests/fixtures/malformed/known-failures.txt` lists the
//! inputs tug does not handle cleanly yet; they must keep failing until their line is removed.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::tug_bin;

/// Exit status of `tug` for a project it cannot load (docker compose v2 uses 1 as well).
const EXIT_INVALID: i32 = 1;
/// Longest acceptable error message.
const MAX_MESSAGE_BYTES: usize = 4096;
const MAX_MESSAGE_LINES: usize = 12;
/// Wall-clock limit per input; alias bombs must be refused, not expanded.
const TIME_LIMIT: Duration = Duration::from_secs(60);
/// Address-space limit of the child: an expanded alias bomb would need far more.
const MEMORY_LIMIT: u64 = 4 << 30;

const DEBUG_NOISE: &[&str] = &[
    "panicked",
    "backtrace",
    "RUST_BACKTRACE",
    "Os {",
    "kind: ",
    "Error {",
    "Some(",
    "None,",
    "\\u{",
];

struct Outcome {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `tug -f file config` in `cwd` with an empty environment, a memory limit and a time
/// limit (the child is killed when it runs over).
fn run_tug_config(file: &Path, cwd: &Path) -> Result<Outcome, String> {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(tug_bin());
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/home/tug-malformed")
        .env("TUG_ROOT", root.path())
        .arg("-f")
        .arg(file)
        .arg("config")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
    // which is async-signal-safe; lowering a limit needs no privilege.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &raw const lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start tug: {e}"))?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > TIME_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {TIME_LIMIT:?}: killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Ok(Outcome {
        status,
        stdout,
        stderr,
    })
}

/// Checks the outcome of one malformed input; `Err(why)` when tug misbehaved.
fn check_clean_failure(file: &Path, cwd: &Path) -> Result<(), String> {
    let o = run_tug_config(file, cwd)?;
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let code = o.status.code();
    if code.is_none() {
        use std::os::unix::process::ExitStatusExt as _;
        return Err(format!(
            "killed by signal {:?}; stderr: {}",
            o.status.signal(),
            o.stderr.chars().take(500).collect::<String>()
        ));
    }
    let mut problems = Vec::new();
    if code != Some(EXIT_INVALID) {
        problems.push(format!("exit status {code:?}, expected {EXIT_INVALID}"));
    }
    if !o.stdout.is_empty() {
        problems.push(format!(
            "printed on stdout: {}",
            o.stdout.chars().take(200).collect::<String>()
        ));
    }
    let msg = o.stderr.trim_end();
    if msg.is_empty() {
        problems.push("no error message".to_string());
    }
    if msg.len() > MAX_MESSAGE_BYTES || msg.lines().count() > MAX_MESSAGE_LINES {
        problems.push(format!(
            "message too long ({} bytes, {} lines)",
            msg.len(),
            msg.lines().count()
        ));
    }
    if !msg.contains(&name) {
        problems.push(format!("message does not name the file `{name}`"));
    }
    for noise in DEBUG_NOISE {
        if msg.contains(noise) {
            problems.push(format!("message contains `{noise}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n  stderr: {}",
            problems.join("; "),
            msg.chars().take(600).collect::<String>()
        ))
    }
}

/// Inputs tug does not handle cleanly yet (`file: reason` in `known-failures.txt`). Each
/// must still fail the checks, so that a fix forces its line out of the list.
fn known_failures() -> std::collections::BTreeMap<String, String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed/known-failures.txt");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(':') {
            Some((f, r)) => (f.trim().to_string(), r.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

fn assert_all_fail_cleanly(files: &[PathBuf], cwd: &Path) {
    let known = known_failures();
    let mut failures = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        match (check_clean_failure(file, cwd), known.get(&name)) {
            (Ok(()), None) | (Err(_), Some(_)) => {}
            (Ok(()), Some(reason)) => failures.push(format!(
                "{name}: now handled cleanly; remove it from known-failures.txt (was: {reason})"
            )),
            (Err(why), None) => failures.push(format!("{name}: {why}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed inputs were not handled cleanly:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn malformed_corpus_fails_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "only {} malformed files", files.len());
    let cwd = tempfile::tempdir().unwrap();
    assert_all_fail_cleanly(&files, cwd.path());
}

/// Writes the generated inputs into `dir` and returns their paths.
fn generate(dir: &Path) -> Vec<PathBuf> {
    let head = "services:\n  web:\n    image: nginx\n";
    let mut inputs: Vec<(&str, Vec<u8>)> = Vec::new();

    // Nesting deep enough to overflow any recursive parser or converter without a limit.
    let depth = 200_000;
    let mut flow = format!("{head}    x-deep: ").into_bytes();
    flow.extend(std::iter::repeat_n(b'[', depth));
    flow.extend(std::iter::repeat_n(b']', depth));
    flow.push(b'\n');
    inputs.push(("deep-flow-sequences.yaml", flow));

    let mut maps = format!("{head}    x-deep: ").into_bytes();
    maps.extend(b"{a: ".repeat(depth));
    maps.extend(std::iter::repeat_n(b'}', depth));
    maps.push(b'\n');
    inputs.push(("deep-flow-mappings.yaml", maps));

    let mut block = String::from(head);
    block.push_str("    x-deep:\n");
    for level in 0..3_000 {
        block.push_str(&" ".repeat(6 + level));
        block.push_str("k:\n");
    }
    block.push_str("services: {}\n");
    inputs.push(("deep-block-mappings.yaml", block.into_bytes()));

    let mut utf8 = head.as_bytes().to_vec();
    utf8.extend(b"    command: [\"caf\xe9\", \"\xff\xfe\"]\n");
    inputs.push(("invalid-utf8.yaml", utf8));

    let mut utf8_key = b"services:\n  w\xc3\x28b:\n    image: nginx\n".to_vec();
    utf8_key.extend(b"\n");
    inputs.push(("invalid-utf8-key.yaml", utf8_key));

    let mut nul = head.as_bytes().to_vec();
    nul.extend(b"    hostname: a\0b\n");
    inputs.push(("nul-byte.yaml", nul));

    let mut ctrl = head.as_bytes().to_vec();
    ctrl.extend(b"    hostname: \"a\x01b\x1b[31m\"\n");
    inputs.push(("control-characters.yaml", ctrl));

    // A 4 MiB service name with a space: invalid, and the message must stay short.
    let huge_key = format!(
        "services:\n  \"{}\":\n    image: nginx\n",
        "a b".repeat(1 << 20)
    );
    inputs.push(("huge-invalid-key.yaml", huge_key.into_bytes()));

    // A 4 MiB string where a list belongs.
    let huge_value = format!("{head}    ports: \"{}\"\n", "9".repeat(4 << 20));
    inputs.push(("huge-wrong-type.yaml", huge_value.into_bytes()));

    // A 1 MiB line that never closes its quote.
    let long_line = format!("{head}    hostname: \"{}\n", "x".repeat(1 << 20));
    inputs.push(("long-unclosed-quote.yaml", long_line.into_bytes()));

    // A big file (20k services) with one wrong value at the very end.
    let mut big = String::from("services:\n");
    for i in 0..20_000 {
        big.push_str(&format!(
            "  svc{i}:\n    image: busybox\n    environment:\n      INDEX: \"{i}\"\n"
        ));
    }
    big.push_str("  last:\n    image: [not, a, string]\n");
    inputs.push(("big-file-bad-tail.yaml", big.into_bytes()));

    // Ten thousand aliases of one anchor in a single sequence: cheap, but a quadratic
    // expansion or unbounded alias budget shows up here.
    let mut aliases = String::from("x-item: &item {a: 1, b: [1, 2, 3]}\n");
    aliases.push_str("services:\n  web:\n    image: nginx\n    x-many: [");
    aliases.push_str(&vec!["*item"; 10_000].join(", "));
    aliases.push_str("]\n    ports: {bad: mapping}\n");
    inputs.push(("many-aliases-then-error.yaml", aliases.into_bytes()));

    inputs
        .into_iter()
        .map(|(name, bytes)| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect()
}

#[test]
fn malformed_generated_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let files = generate(dir.path());
    assert_all_fail_cleanly(&files, dir.path());
}

/// An env file referenced by a valid compose file can be malformed too; the message must
/// name the env file.
#[test]
fn malformed_env_file_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  web:\n    image: nginx\n    env_file: ./bad.env\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.env"), b"OK=1\nBAD=\xff\xfe\n").unwrap();
    let o = run_tug_config(&dir.path().join("compose.yaml"), dir.path()).unwrap();
    assert_eq!(o.status.code(), Some(EXIT_INVALID), "stderr: {}", o.stderr);
    assert!(o.stderr.contains("bad.env"), "stderr: {}", o.stderr);
    for noise in DEBUG_NOISE {
        assert!(!o.stderr.contains(noise), "stderr: {}", o.stderr);
    }
}

/// Broken file-system situations around a compose file: include cycles, directories where
/// files belong, symlink loops, missing extends targets. Each must fail cleanly and name the
/// culprit.
#[test]
fn malformed_file_system_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    write(
        "cycle-one.yaml",
        "include:\n  - cycle-two.yaml\nservices:\n  a:\n    image: x\n",
    );
    write(
        "cycle-two.yaml",
        "include:\n  - cycle-one.yaml\nservices:\n  b:\n    image: x\n",
    );
    std::fs::create_dir(d.join("a-directory.yaml")).unwrap();
    std::fs::create_dir(d.join("envdir")).unwrap();
    write(
        "env-is-dir.yaml",
        "services:\n  a:\n    image: x\n    env_file: ./envdir\n",
    );
    std::os::unix::fs::symlink("loop-b.yaml", d.join("loop-a.yaml")).unwrap();
    std::os::unix::fs::symlink("loop-a.yaml", d.join("loop-b.yaml")).unwrap();
    write(
        "extends-missing.yaml",
        "services:\n  a:\n    extends:\n      file: ./no-such-base.yaml\n      service: base\n",
    );
    write(
        "include-missing.yaml",
        "include:\n  - ./no-such-include.yaml\nservices:\n  a:\n    image: x\n",
    );
    let cases = [
        ("cycle-one.yaml", "cycle-"),
        ("a-directory.yaml", "a-directory.yaml"),
        ("env-is-dir.yaml", "envdir"),
        ("loop-a.yaml", "loop-a.yaml"),
        ("extends-missing.yaml", "no-such-base.yaml"),
        ("include-missing.yaml", "no-such-include.yaml"),
    ];
    let mut failures = Vec::new();
    for (file, fragment) in cases {
        let o = run_tug_config(&d.join(file), d).unwrap();
        let msg = o.stderr.trim_end();
        let mut problems = Vec::new();
        if o.status.code() != Some(EXIT_INVALID) {
            problems.push(format!("exit status {:?}", o.status.code()));
        }
        if !msg.contains(fragment) {
            problems.push(format!("message lacks `{fragment}`"));
        }
        if msg.lines().count() > MAX_MESSAGE_LINES || msg.len() > MAX_MESSAGE_BYTES {
            problems.push("message too long".to_string());
        }
        problems.extend(
            DEBUG_NOISE
                .iter()
                .filter(|n| msg.contains(**n))
                .map(|n| format!("message contains `{n}`")),
        );
        if !problems.is_empty() {
            failures.push(format!("{file}: {}\n  stderr: {msg}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
