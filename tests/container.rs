//! Containers end to end: the built-in runtime and the supervisor, checked from inside a
//! busybox container, and cross-checked with runc on the same bundle. Every test has its own
//! state root and asserts, even when it fails, that no container, mount, cgroup or process is
//! left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{self, fails, ok, tug};

/// A state root with the busybox image; on drop removes every container and checks for
/// leaks (mounts, cgroups, processes).
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Option<Env> {
        if !common::require_root() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("tug-ctr-")
            .tempdir()
            .unwrap();
        common::busybox_image(dir.path());
        Some(Env { dir })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn tug(&self) -> Command {
        let mut c = tug(self.root());
        // Containers join the default network; its DNS server forwards only to loopback.
        c.env("TUG_DNS_UPSTREAM", "127.0.0.1:9");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(self.tug().args(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.tug().args(args))
    }

    fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["container", "inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    fn ids(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.root().join("containers")) else {
            return Vec::new();
        };
        rd.filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64)
            .collect()
    }

    /// Waits until `f` holds, or fails with `what`.
    fn until(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }
}

/// Leaks of a state root: mounts under it, tug cgroups of its containers, processes whose
/// command line names it.
fn leaks(root: &Path, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let r = root.display().to_string();
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mi.lines().filter(|l| l.contains(&r)) {
        out.push(format!("mount: {l}"));
    }
    for id in ids {
        for base in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/freezer",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            let p = PathBuf::from(base).join(format!("tug-{id}"));
            if p.exists() {
                out.push(format!("cgroup: {}", p.display()));
            }
        }
    }
    out.extend(
        common::processes_of(root)
            .into_iter()
            .map(|p| format!("process {p}")),
    );
    out
}

impl Drop for Env {
    fn drop(&mut self) {
        let ids = self.ids();
        for id in &ids {
            let _ = self.run(&["container", "rm", "--force", id]);
        }
        // The default network made by the first networked `run` (never removed implicitly).
        let nets = self.run(&["network", "ls", "-q"]);
        for n in String::from_utf8_lossy(&nets.stdout).lines() {
            let _ = self.run(&["network", "rm", "--force", n.trim()]);
        }
        // Supervisors exit right after their container; give them a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut l = leaks(self.root(), &ids);
        while !l.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            l = leaks(self.root(), &ids);
        }
        if !std::thread::panicking() {
            assert!(l.is_empty(), "leaked: {l:#?}");
            assert!(self.ids().is_empty(), "containers left: {:?}", self.ids());
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A probe run inside the container: what Docker's defaults look like from inside.
const PROBE: &str = r#"
echo "pid1=$$"
echo "procs=$(ps -o pid | tail -n +2 | wc -l)"
echo "hostname=$(hostname)"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\t '
for f in /proc/timer_list /proc/sched_debug /proc/keys /proc/kcore; do
  [ -e $f ] && echo "$f bytes=$(cat $f 2>/dev/null | wc -c)"
done
echo "firmware=$(ls /sys/firmware 2>/dev/null | wc -l)"
mount -t tmpfs none /mnt 2>/dev/null && echo mount=allowed || echo mount=refused
(echo 1 > /proc/sys/vm/overcommit_memory) 2>/dev/null && echo procsys=rw || echo procsys=ro
(echo x > /proc/sysrq-trigger) 2>/dev/null && echo sysrq=rw || echo sysrq=ro
touch /sys/x 2>/dev/null && echo sys=rw || echo sys=ro
unshare -n true 2>/dev/null && echo unshare=allowed || echo unshare=refused
echo "dev=$(ls /dev | tr '\n' ' ')"
echo "shm=$(df -k /dev/shm | tail -1 | awk '{print $2}')"
echo "ptmx=$(readlink /dev/ptmx)"
echo "net=$(ls /sys/class/net | tr '\n' ' ')"
echo "hosts=$(grep -c localhost /etc/hosts)"
echo "resolv=$(grep -c nameserver /etc/resolv.conf)"
echo "etchostname=$(cat /etc/hostname)"
echo "id=$(id)"
echo "fds=$(ls /proc/self/fd | tr '\n' ' ')"
"#;

fn probe(env: &Env, runtime: Option<&str>) -> String {
    let mut args = vec!["container", "run", "--rm", "--hostname", "probe"];
    if let Some(r) = runtime {
        args.extend(["--runtime", r]);
    }
    args.extend(["busybox", "sh", "-c", PROBE]);
    env.ok(&args)
}

#[test]
fn container_defaults_seen_from_inside_match_docker_and_runc() {
    let Some(env) = Env::new() else { return };
    let ours = probe(&env, None);
    for want in [
        "pid1=1",
        "hostname=probe",
        "CapInh:0000000000000000",
        "CapPrm:00000000a80425fb",
        "CapEff:00000000a80425fb",
        "CapBnd:00000000a80425fb",
        "CapAmb:0000000000000000",
        "NoNewPrivs:0",
        "Seccomp:2",
        "/proc/timer_list bytes=0",
        "/proc/keys bytes=0",
        "firmware=0",
        "mount=refused",
        "procsys=ro",
        "sysrq=ro",
        "sys=ro",
        "unshare=refused",
        "shm=65536",
        "ptmx=pts/ptmx",
        "net=eth0 lo ",
        "hosts=2",
        "etchostname=probe",
        "id=uid=0(root) gid=0(root) groups=0(root)",
        "fds=0 1 2 3 ",
    ] {
        assert!(
            ours.lines().any(|l| l.trim_end() == want.trim_end()),
            "missing {want:?} in:\n{ours}"
        );
    }
    // Host processes are invisible: only the probe's own few processes exist.
    let procs: u32 = ours
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!((2..=6).contains(&procs), "{ours}");
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
    ] {
        assert!(
            ours.contains(&format!(" {d} ")) || ours.contains(&format!("={d} ")),
            "no /dev/{d} in {ours}"
        );
    }
    // The same bundle under runc gives the same answers.
    let runc = probe(&env, Some("runc"));
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with("procs="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&ours), strip(&runc), "built-in vs runc");
}

#[test]
fn container_supplementary_groups_like_docker() {
    let Some(env) = Env::new() else { return };
    // Root gets its primary group as a supplementary one (Docker since CVE-2022-36109).
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "id; grep Groups /proc/self/status",
    ]);
    assert_eq!(out, "uid=0(root) gid=0(root) groups=0(root)\nGroups:\t0 \n");
    // A named user: its primary group and the groups that list it; group_add adds more.
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "app",
        "--group-add",
        "7",
        "busybox",
        "grep",
        "Groups",
        "/proc/self/status",
    ]);
    assert_eq!(out, "Groups:\t7 1000 2000 \n");
    // An explicit group: no memberships from /etc/group, as runc's GetExecUser.
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "app:app",
        "busybox",
        "grep",
        "Groups",
        "/proc/self/status",
    ]);
    assert_eq!(out, "Groups:\t1000 \n");
    // The same under runc.
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime",
        "runc",
        "--user",
        "app",
        "busybox",
        "grep",
        "Groups",
        "/proc/self/status",
    ]);
    assert_eq!(out, "Groups:\t1000 2000 \n");
    let e = String::from_utf8_lossy(
        &env.run(&[
            "container",
            "run",
            "--rm",
            "--network",
            "none",
            "--group-add",
            "nosuch",
            "busybox",
            "true",
        ])
        .stderr,
    )
    .into_owned();
    assert!(e.contains("unable to find group nosuch"), "{e}");
}

#[test]
fn container_hostile_image_group_file_stays_inside_the_image() {
    let Some(env) = Env::new() else { return };
    // A host file the image's /etc/group points at by absolute path: if tug followed the
    // link on the host, root would get group 4242.
    let host = tempfile::tempdir().unwrap();
    let host_group = host.path().join("group");
    std::fs::write(&host_group, "root:x:0:\nleak:x:4242:root\n").unwrap();
    let target = host_group.clone();
    common::busybox_image_with(env.root(), "evil-link:1", &[], move |d| {
        std::fs::create_dir(d.join("etc")).unwrap();
        std::os::unix::fs::symlink(&target, d.join("etc/group")).unwrap();
        vec!["etc/group".into()]
    });
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "evil-link:1",
        "grep",
        "Groups",
        "/proc/self/status",
    ]);
    assert_eq!(out, "Groups:\t0 \n", "the host's group file was read");
    // A FIFO as /etc/passwd: refused at once by name, never waited on.
    common::busybox_image_with(env.root(), "evil-fifo:1", &[], |d| {
        std::fs::create_dir(d.join("etc")).unwrap();
        nix::unistd::mkfifo(&d.join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        vec!["etc/passwd".into()]
    });
    let t0 = Instant::now();
    let o = env.run(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "app",
        "evil-fifo:1",
        "true",
    ]);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "blocked on the FIFO"
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("/etc/passwd is a FIFO"),
        "{o:?}"
    );
}

/// `Max open files` (soft, hard) from /proc/self/limits text.
fn open_files(limits: &str) -> (String, String) {
    let l = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open files limit in {limits}"));
    let f: Vec<&str> = l.split_whitespace().collect();
    (f[3].to_string(), f[4].to_string())
}

#[test]
fn container_open_files_limit_is_the_engines_hard_limit_and_ulimits_apply() {
    use std::os::unix::process::CommandExt as _;
    let Some(env) = Env::new() else { return };
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) };
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let hard = own.rlim_max.min(nr_open).to_string();
    let mine = std::fs::read_to_string("/proc/self/limits").unwrap();
    let procs = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("Max processes"))
            .map(str::to_string)
            .unwrap()
    };
    for rt in ["tug", "runc"] {
        // tug itself started with a soft limit of 1024 (a login shell's): the container still
        // gets the hard limit as both.
        let mut cmd = env.tug();
        cmd.args([
            "container",
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            rt,
            "busybox",
            "cat",
            "/proc/self/limits",
        ]);
        // SAFETY: setrlimit is async-signal-safe; it lowers the child's soft limit only.
        unsafe {
            cmd.pre_exec(|| {
                let mut l = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
                l.rlim_cur = l.rlim_cur.min(1024);
                libc::setrlimit(libc::RLIMIT_NOFILE, &l);
                Ok(())
            });
        }
        let limits = ok(&mut cmd);
        assert_eq!(
            open_files(&limits),
            (hard.clone(), hard.clone()),
            "{rt}: {limits}"
        );
        // Other limits are the engine's own, as Docker's containers inherit dockerd's.
        assert_eq!(procs(&limits), procs(&mine), "{rt}");
        // --ulimit sets soft and hard as written.
        let limits = env.ok(&[
            "container",
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            rt,
            "--ulimit",
            "nofile=100:200",
            "busybox",
            "cat",
            "/proc/self/limits",
        ]);
        assert_eq!(open_files(&limits), ("100".into(), "200".into()), "{rt}");
    }
    // Above what tug may grant (its hard limit without CAP_SYS_RESOURCE, fs.nr_open with
    // it): a clear error naming the limit, and no container left.
    let too_many = format!("nofile={0}:{0}", nr_open + 1);
    let o = env.run(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        &too_many,
        "busybox",
        "true",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        e.contains("ulimit nofile: the hard limit") && e.contains(&(nr_open + 1).to_string()),
        "{e}"
    );
    assert!(
        env.ids().is_empty(),
        "a refused container was left: {:?}",
        env.ids()
    );
}

#[test]
fn container_exit_code_env_user_workdir_read_only() {
    let Some(env) = Env::new() else { return };
    let o = env.run(&["container", "run", "--rm", "busybox", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "--user",
        "app",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "echo $FOO; id -u; id -G; pwd; echo $HOME",
    ]);
    assert_eq!(out, "bar\n1000\n1000 2000\n/tmp\n/home/app\n");
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--user",
        "1234:55",
        "--group-add",
        "extra",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; id -G",
    ]);
    assert_eq!(out, "1234\n55\n55 2000\n");
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--read-only",
        "busybox",
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo root=rw || echo root=ro; touch /dev/shm/x && echo shm=rw",
    ]);
    assert_eq!(out, "root=ro\nshm=rw\n");
    // Entrypoint + command are combined as Docker does.
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--entrypoint",
        "echo",
        "busybox",
        "a",
        "b",
    ]);
    assert_eq!(out, "a b\n");
    // A missing program is exit code 127, and --rm leaves nothing behind.
    let o = env.run(&["container", "run", "--rm", "busybox", "nosuchprogram"]);
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    assert!(env.ids().is_empty());
}

#[test]
fn container_bad_input_is_refused_and_creates_nothing() {
    let Some(env) = Env::new() else { return };
    let e = fails(env.tug().args(["container", "run", "nosuchimage", "true"]));
    assert!(e.contains("nosuchimage"), "{e}");
    let e = fails(
        env.tug()
            .args(["container", "run", "--name", "bad name", "busybox", "true"]),
    );
    assert!(e.contains("invalid container name"), "{e}");
    let e = fails(env.tug().args([
        "container",
        "run",
        "--rm",
        "--restart",
        "always",
        "busybox",
        "true",
    ]));
    assert!(e.contains("conflicting"), "{e}");
    let e = fails(
        env.tug()
            .args(["container", "run", "--cap-add", "NOPE", "busybox", "true"]),
    );
    assert!(e.contains("unknown capability"), "{e}");
    let e = fails(
        env.tug()
            .args(["container", "run", "--user", "ghost", "busybox", "true"]),
    );
    assert!(e.contains("ghost"), "{e}");
    let e = fails(env.tug().args(["container", "stop", "nosuch"]));
    assert!(e.contains("no such container"), "{e}");
    assert!(env.ids().is_empty());
    // Names are unique.
    env.ok(&["container", "create", "--name", "dup", "busybox", "true"]);
    let e = fails(
        env.tug()
            .args(["container", "create", "--name", "dup", "busybox", "true"]),
    );
    assert!(e.contains("already in use"), "{e}");
}

#[test]
fn container_detached_logs_stop_timeout_then_sigkill() {
    let Some(env) = Env::new() else { return };
    let name = common::unique("logs");
    env.ok(&[
        "container", "run", "-d", "--name", &name, "busybox", "sh", "-c",
        "for i in 1 2 3; do echo out$i; sleep 0.1; echo err$i >&2; sleep 0.1; done; exec sleep 1000",
    ]);
    env.until("three log lines", 10, || {
        env.ok(&["container", "logs", &name]).lines().count() == 3
            && env.run(&["container", "logs", &name]).stderr.len() == 15
    });
    let o = env.run(&["container", "logs", &name]);
    assert_eq!(stdout(&o), "out1\nout2\nout3\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err1\nerr2\nerr3\n");
    // The log file keeps the interleaving.
    let log = std::fs::read_to_string(env.inspect(&name)["log_path"].as_str().unwrap()).unwrap();
    let texts: Vec<&str> = log
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap())
        .collect();
    assert_eq!(texts, ["out1", "err1", "out2", "err2", "out3", "err3"]);
    assert_eq!(
        env.ok(&["container", "logs", "--tail", "2", &name]),
        "out3\n"
    );
    let ts = env.ok(&["container", "logs", "-t", &name]);
    assert!(ts.starts_with("20"), "{ts}");
    // --since filters by timestamp: the second stdout line's time keeps lines 2 and 3.
    let second = ts
        .lines()
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        env.ok(&["container", "logs", "--since", &second, &name]),
        "out2\nout3\n"
    );
    assert_eq!(
        env.ok(&["container", "logs", "--since", "1h", &name])
            .lines()
            .count(),
        3
    );
    let ls = env.ok(&["container", "ls", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(ls.lines().next().unwrap()).unwrap();
    assert_eq!(v["State"], "running");
    assert_eq!(v["Names"], name.as_str());
    // sleep as PID 1 ignores SIGTERM: stop waits the timeout, then SIGKILL.
    let t = Instant::now();
    env.ok(&["container", "stop", "-t", "1", &name]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let i = env.inspect(&name);
    assert_eq!(i["state"], "exited");
    assert_eq!(i["exit_code"], 137);
    assert_eq!(env.ok(&["container", "ls", "-q"]), "");
    assert!(env.ok(&["container", "ls", "-a"]).contains("Exited (137)"));
    env.ok(&["container", "rm", &name]);
    assert!(env.ids().is_empty());
}

#[test]
fn container_exec_joins_the_same_namespaces() {
    let Some(env) = Env::new() else { return };
    let name = common::unique("exec");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &name,
        "busybox",
        "sleep",
        "1000",
    ]);
    let inside = env.ok(&[
        "container",
        "exec",
        &name,
        "sh",
        "-c",
        "for n in pid mnt net uts ipc; do readlink /proc/1/ns/$n; readlink /proc/self/ns/$n; done",
    ]);
    let lines: Vec<&str> = inside.lines().collect();
    assert_eq!(lines.len(), 10, "{inside}");
    for pair in lines.chunks(2) {
        assert_eq!(pair[0], pair[1], "exec is in another namespace: {inside}");
    }
    let pid = env.inspect(&name)["pid"].as_i64().unwrap();
    let host_pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(lines[0], host_pidns.to_str().unwrap());
    let out = env.ok(&[
        "container",
        "exec",
        "-u",
        "app",
        "-w",
        "/tmp",
        "-e",
        "X=1",
        &name,
        "sh",
        "-c",
        "id -u; pwd; echo $X; grep CapEff /proc/self/status | tr -d '\\t'",
    ]);
    assert_eq!(out, "1000\n/tmp\n1\nCapEff:0000000000000000\n");
    let root = env.ok(&[
        "container",
        "exec",
        &name,
        "grep",
        "-E",
        "CapEff|Seccomp:",
        "/proc/self/status",
    ]);
    assert_eq!(
        root.replace('\t', ""),
        "CapEff:00000000a80425fb\nSeccomp:2\n"
    );
    let o = env.run(&["container", "exec", &name, "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    let top = env.ok(&["container", "top", &name]);
    assert!(top.contains("sleep 1000"), "{top}");
    // exec into a stopped container is refused.
    env.ok(&["container", "stop", "-t", "0", &name]);
    let e = fails(env.tug().args(["container", "exec", &name, "true"]));
    assert!(e.contains("not running"), "{e}");
}

#[test]
fn container_exec_privileged_gets_every_capability_and_no_seccomp_filter() {
    let Some(env) = Env::new() else { return };
    let name = common::unique("privexec");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "busybox",
        "sleep",
        "1000",
    ]);
    // What the process has, and whether `unshare(CLONE_NEWUTS)` works: Docker's default
    // seccomp profile refuses it to a container without CAP_SYS_ADMIN.
    let probe = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|Seccomp):' /proc/self/status \
                 | tr -d '\\t'; unshare -u hostname changed-inside 2>&1 && echo unshared; \
                 hostname; grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; ls /dev | wc -l";
    let exec = |extra: &[&str]| -> String {
        let mut a = vec!["container", "exec"];
        a.extend_from_slice(extra);
        a.extend([name.as_str(), "sh", "-c", probe]);
        env.ok(&a)
    };
    let plain = exec(&[]);
    let full = common::bounding_set();
    let priv_ = exec(&["--privileged"]);
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    let (plain, priv_) = (lines(&plain), lines(&priv_));
    // A plain exec: Docker's default set, the seccomp filter, unshare refused.
    assert_eq!(
        plain[..6],
        [
            "CapInh:0000000000000000",
            "CapPrm:00000000a80425fb",
            "CapEff:00000000a80425fb",
            "CapBnd:00000000a80425fb",
            "CapAmb:0000000000000000",
            "Seccomp:2",
        ],
        "{plain:#?}"
    );
    assert!(
        plain[6].contains("Operation not permitted"),
        "unshare worked in a plain exec: {plain:#?}"
    );
    assert!(!plain.iter().any(|l| l == "unshared"), "{plain:#?}");
    // A privileged one: every capability tug holds, nothing inheritable or ambient, no
    // seccomp filter, so unshare works (a new UTS namespace: the container's name stays).
    assert_eq!(
        priv_[..6],
        [
            "CapInh:0000000000000000".to_string(),
            format!("CapPrm:{full}"),
            format!("CapEff:{full}"),
            format!("CapBnd:{full}"),
            "CapAmb:0000000000000000".to_string(),
            "Seccomp:0".to_string(),
        ],
        "{priv_:#?}"
    );
    assert_eq!(priv_[6], "unshared", "{priv_:#?}");
    // It is still in the container: the same hostname (the change was in its own new
    // namespace), /sys read-only, the same devices.
    assert_eq!(priv_[7], plain[7]);
    assert_eq!(priv_[8], "ro");
    assert_eq!(priv_[8], plain[8]);
    assert_eq!(priv_[9], plain[9], "a privileged exec saw other devices");
    // As another user, as with Docker: the sets are given but, neither inheritable nor
    // ambient, do not survive the exec of a program by a user other than root; the bounding
    // set and the missing filter do.
    let user = env.ok(&[
        "container",
        "exec",
        "--privileged",
        "-u",
        "1000",
        &name,
        "sh",
        "-c",
        "id -u; grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status | tr -d '\\t'",
    ]);
    assert_eq!(
        user,
        format!("1000\nCapEff:0000000000000000\nCapBnd:{full}\nSeccomp:0\n")
    );
    // Nothing of it stays: the next plain exec has the defaults again.
    assert_eq!(lines(&exec(&[]))[..6], plain[..6]);
    env.ok(&["container", "rm", "-f", &name]);
}

#[test]
fn container_memory_limit_oom_is_reported() {
    let Some(env) = Env::new() else { return };
    // The same hog under the built-in runtime and under runc: both report the OOM kill.
    for runtime in ["tug", "runc"] {
        let name = common::unique("oom");
        let o = env.run(&[
            "container",
            "run",
            "--name",
            &name,
            "--runtime",
            runtime,
            "--network",
            "none",
            "-m",
            "16m",
            "--memory-swap",
            "16m",
            "busybox",
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ]);
        assert!(!stdout(&o).contains("survived"), "{runtime}: {o:?}");
        let i = env.inspect(&name);
        assert_eq!(i["oom_killed"], true, "{runtime}: {i}");
        assert_ne!(i["exit_code"], 0, "{runtime}: {i}");
    }
    // Without a limit hit, runc reports no OOM and the container's own exit code.
    let name = common::unique("nooom");
    let o = env.run(&[
        "container",
        "run",
        "--name",
        &name,
        "--runtime",
        "runc",
        "--network",
        "none",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let i = env.inspect(&name);
    assert_eq!(i["oom_killed"], false, "{i}");
    assert_eq!(i["exit_code"], 3, "{i}");
    // Within the limit, the same container works.
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo ${#x}",
    ]);
    assert_eq!(out, "1000000\n");
}

#[test]
fn container_pids_limit_holds() {
    let Some(env) = Env::new() else { return };
    let script = "for i in $(seq 1 20); do sleep 2 & done; echo all started";
    let o = env.run(&[
        "container",
        "run",
        "--rm",
        "--pids-limit",
        "8",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(!stdout(&o).contains("all started"), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("can't fork"),
        "{o:?}"
    );
    // The same script under a higher limit succeeds: the limit is what stopped it.
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--pids-limit",
        "40",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.contains("all started"), "{out}");
}

#[test]
fn container_restart_policy_restarts_with_one_log() {
    let Some(env) = Env::new() else { return };
    let name = common::unique("rst");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &name,
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    env.until("restarts to finish", 20, || {
        let i = env.inspect(&name);
        i["state"] == "exited" && i["restart_count"] == 2
    });
    assert_eq!(env.inspect(&name)["exit_code"], 3);
    assert_eq!(env.ok(&["container", "logs", &name]), "run\nrun\nrun\n");
    // `always` restarts until stopped, and stop ends it.
    let n2 = common::unique("always");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &n2,
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "echo x; sleep 0.2",
    ]);
    env.until("a restart", 20, || {
        env.inspect(&n2)["restart_count"].as_u64() >= Some(2)
    });
    env.ok(&["container", "stop", "-t", "1", &n2]);
    env.until("stopped", 10, || env.inspect(&n2)["state"] == "exited");
    let count = env.inspect(&n2)["restart_count"].clone();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        env.inspect(&n2)["restart_count"],
        count,
        "restarted after stop"
    );
    assert_eq!(env.inspect(&n2)["state"], "exited");
}

#[test]
fn container_init_reaps_zombies_and_forwards_signals() {
    let Some(env) = Env::new() else { return };
    let script = "(sleep 0.1 &); exec sleep 1000";
    let with = common::unique("init");
    let without = common::unique("noinit");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        "--name",
        &with,
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    env.ok(&[
        "container",
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &without,
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    std::thread::sleep(Duration::from_millis(800));
    let zombies = |n: &str| {
        env.ok(&["container", "exec", n, "ps", "-o", "stat"])
            .lines()
            .filter(|l| l.trim().starts_with('Z'))
            .count()
    };
    assert_eq!(zombies(&with), 0);
    assert_eq!(
        zombies(&without),
        1,
        "the probe must be able to see a zombie"
    );
    // With init, SIGTERM reaches sleep (forwarded): it ends by SIGTERM (143), not by the
    // SIGKILL that follows the stop timeout (137).
    env.ok(&["container", "stop", "-t", "30", &with]);
    assert_eq!(env.inspect(&with)["exit_code"], 143);
    // An attached `run` forwards the signals it gets to the container.
    let mut child = env
        .tug()
        .args([
            "container",
            "run",
            "--rm",
            "--init",
            "--network",
            "none",
            "busybox",
            "sleep",
            "1000",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("attached run did not forward SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(143));
}

#[test]
fn container_network_none_host_and_joined_netns() {
    if !crate::common::require_tools(&["ip"]) {
        return;
    }
    let Some(env) = Env::new() else { return };
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(out.trim(), host_ns.to_str().unwrap());
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "busybox",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_ne!(out.trim(), host_ns.to_str().unwrap());
    let ns = common::unique("tugns");
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    ok(Command::new("ip").args(["netns", "add", &ns]));
    let _guard = Netns(ns.clone());
    let want = ok(Command::new("ip").args(["netns", "exec", &ns, "readlink", "/proc/self/ns/net"]));
    let path = format!("ns:/var/run/netns/{ns}");
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        &path,
        "busybox",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(out.trim(), want.trim());
    // network container:NAME shares another container's namespace.
    let a = common::unique("neta");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &a,
        "busybox",
        "sleep",
        "1000",
    ]);
    let a_ns = env.ok(&["container", "exec", &a, "readlink", "/proc/self/ns/net"]);
    let net = format!("container:{a}");
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        &net,
        "busybox",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(out, a_ns);
}

#[test]
fn container_healthcheck_goes_healthy_then_unhealthy() {
    let Some(env) = Env::new() else { return };
    let name = common::unique("health");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &name,
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "--health-timeout",
        "2s",
        "busybox",
        "sh",
        "-c",
        "sleep 0.5; touch /tmp/ok; exec sleep 1000",
    ]);
    assert_eq!(env.inspect(&name)["health"], "starting");
    env.until("healthy", 15, || env.inspect(&name)["health"] == "healthy");
    assert!(env.ok(&["container", "ls"]).contains("(healthy)"));
    env.ok(&["container", "exec", &name, "rm", "/tmp/ok"]);
    env.until("unhealthy", 15, || {
        env.inspect(&name)["health"] == "unhealthy"
    });
    let log = &env.inspect(&name)["state_detail"]["health"]["log"];
    assert!(log.as_array().is_some_and(|l| !l.is_empty()), "{log}");
}

#[test]
fn container_pause_unpause_and_cp() {
    let Some(env) = Env::new() else { return };
    let name = common::unique("pause");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &name,
        "busybox",
        "sh",
        "-c",
        "while :; do date +%s%N > /tmp/tick; sleep 0.05; done",
    ]);
    env.ok(&["container", "pause", &name]);
    assert_eq!(env.inspect(&name)["state"], "paused");
    // exec is refused while paused; read the file through the container's root instead.
    let e = fails(env.tug().args(["container", "exec", &name, "true"]));
    assert!(e.contains("not running"), "{e}");
    let pid = env.inspect(&name)["pid"].as_i64().unwrap();
    let tick = format!("/proc/{pid}/root/tmp/tick");
    std::thread::sleep(Duration::from_millis(100));
    let a = std::fs::read_to_string(&tick).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let b = std::fs::read_to_string(&tick).unwrap();
    assert_eq!(a, b, "a paused container kept running");
    env.ok(&["container", "unpause", &name]);
    assert_eq!(env.inspect(&name)["state"], "running");
    // cp both ways.
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join("d")).unwrap();
    std::fs::write(host.path().join("d/f.txt"), "hello").unwrap();
    let src = host.path().join("d");
    env.ok(&[
        "container",
        "cp",
        src.to_str().unwrap(),
        &format!("{name}:/tmp"),
    ]);
    assert_eq!(
        env.ok(&["container", "exec", &name, "cat", "/tmp/d/f.txt"]),
        "hello"
    );
    env.ok(&[
        "container",
        "exec",
        &name,
        "sh",
        "-c",
        "echo back > /tmp/out.txt",
    ]);
    let dest = host.path().join("copied.txt");
    env.ok(&[
        "container",
        "cp",
        &format!("{name}:/tmp/out.txt"),
        dest.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(dest).unwrap(), "back\n");
}

#[test]
fn container_survives_supervisor_death_and_reports_rss() {
    let Some(env) = Env::new() else { return };
    let name = common::unique("sup");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &name,
        "busybox",
        "sleep",
        "1000",
    ]);
    let st = &env.inspect(&name)["state_detail"];
    let sup = st["supervisor_pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{sup}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let (rss, anon) = (field("VmRSS:"), field("RssAnon:"));
    eprintln!("supervisor RSS: {rss} kB, of which private (RssAnon) {anon} kB");
    // File pages of the tug binary are shared by every supervisor; the private part is the
    // per-container cost.
    assert!(anon <= 2048, "supervisor private RSS {anon} kB");
    // Kill the supervisor: the container keeps running and is still reported, stopped and
    // removed correctly.
    ok(Command::new("kill").args(["-9", &sup.to_string()]));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(env.inspect(&name)["state"], "running");
    env.ok(&["container", "stop", "-t", "0", &name]);
    let i = env.inspect(&name);
    assert_eq!(i["state"], "exited");
    env.ok(&["container", "rm", &name]);
}

#[test]
fn container_security_options_caps_privileged_seccomp_sysctl_ulimit() {
    let Some(env) = Env::new() else { return };
    let status = |args: &[&str]| -> String {
        let mut a = vec!["container", "run", "--rm"];
        a.extend_from_slice(args);
        a.extend([
            "busybox",
            "sh",
            "-c",
            "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\\t'",
        ]);
        env.ok(&a)
    };
    assert_eq!(
        status(&["--cap-drop", "ALL", "--cap-add", "KILL"]),
        "CapEff:0000000000000020\nNoNewPrivs:0\nSeccomp:2\n"
    );
    let bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap();
    assert_eq!(
        status(&["--privileged"]),
        format!("CapEff:{bounding}\nNoNewPrivs:0\nSeccomp:0\n")
    );
    assert_eq!(
        status(&["--security-opt", "no-new-privileges"]),
        "CapEff:00000000a80425fb\nNoNewPrivs:1\nSeccomp:2\n"
    );
    assert!(status(&["--security-opt", "seccomp=unconfined"]).ends_with("Seccomp:0\n"));
    // CAP_SYS_ADMIN opens mount (capability and seccomp).
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "busybox",
        "sh",
        "-c",
        "mount -t tmpfs none /tmp && echo mounted",
    ]);
    assert_eq!(out, "mounted\n");
    // A profile file is honoured, under both runtimes.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    for rt in ["tug", "runc"] {
        let out = env.ok(&[
            "container",
            "run",
            "--rm",
            "--runtime",
            rt,
            "--security-opt",
            &opt,
            "busybox",
            "sh",
            "-c",
            "mkdir /tmp/x 2>/dev/null && echo made || echo refused; touch /tmp/y && echo touched",
        ]);
        assert_eq!(out, "refused\ntouched\n", "{rt}");
    }
    // sysctls and ulimits (never above the current hard limit).
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--ulimit",
        "nofile=100:200",
        "busybox",
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward; ulimit -n; ulimit -Hn",
    ]);
    assert_eq!(out, "1\n100\n200\n");
}

#[test]
fn container_cgroup_limits_are_written_and_removed() {
    let Some(env) = Env::new() else { return };
    let name = common::unique("cg");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--name",
        &name,
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "-m",
        "32m",
        "--pids-limit",
        "50",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id = env.inspect(&name)["id"].as_str().unwrap().to_string();
    let layout = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let read = |p: String| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    if layout.contains("/sys/fs/cgroup/memory ") {
        let cg = |c: &str, f: &str| read(format!("/sys/fs/cgroup/{c}/tug-{id}/{f}"));
        assert_eq!(cg("cpu", "cpu.cfs_quota_us").trim(), "50000");
        assert_eq!(cg("cpu", "cpu.shares").trim(), "512");
        assert_eq!(cg("cpuset", "cpuset.cpus").trim(), "0");
        assert_eq!(cg("memory", "memory.limit_in_bytes").trim(), "33554432");
        assert_eq!(cg("pids", "pids.max").trim(), "50");
        let pid = env.inspect(&name)["pid"].as_i64().unwrap().to_string();
        assert!(cg("memory", "cgroup.procs").lines().any(|l| l == pid));
    } else {
        let cg = |f: &str| read(format!("/sys/fs/cgroup/tug-{id}/{f}"));
        assert_eq!(cg("cpu.max").trim(), "50000 100000");
        assert_eq!(cg("memory.max").trim(), "33554432");
        assert_eq!(cg("pids.max").trim(), "50");
    }
    env.ok(&["container", "rm", "--force", &name]);
    // Env's drop asserts the cgroups are gone.
}

/// The container's process joins its cgroup by itself (v1: writing `0` into each hierarchy's
/// `tasks` right after clone; cgroup2: `clone3` with `CLONE_INTO_CGROUP`): seen from inside
/// (`/proc/self/cgroup`, through the tiny init's child too) and from the host, with the
/// limits in force, the supervisor never moving it by pid, and nothing left afterwards.
#[test]
fn container_cgroup_is_joined_by_the_child_in_every_hierarchy() {
    let Some(env) = Env::new() else { return };
    let name = common::unique("cgjoin");
    env.ok(&[
        "container",
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        "--name",
        &name,
        "-m",
        "48m",
        "--pids-limit",
        "30",
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/cgroup; echo done; exec sleep 1000",
    ]);
    let i = env.inspect(&name);
    let id = i["id"].as_str().unwrap().to_string();
    let pid = i["pid"].as_i64().unwrap();
    let mut out = String::new();
    env.until("the cgroup listing", 10, || {
        out = env.ok(&["container", "logs", &name]);
        out.contains("done")
    });
    let ours = format!("/tug-{id}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let layout = tug::engine::runtime::cgroups::Layout::from_mountinfo(&mountinfo);
    let cg = tug::engine::runtime::cgroups::Cgroup::new(layout, Path::new(&ours));
    let dirs = cg.dirs();
    assert!(!dirs.is_empty());
    // Seen from the host, every hierarchy tug manages (v1 controllers, name=systemd, the
    // cgroup2 line "0::") holds the container's process in its cgroup, not the supervisor's.
    let host = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let joined = host.lines().filter(|l| l.ends_with(&ours)).count();
    assert_eq!(joined, dirs.len(), "{host}\nexpected: {dirs:?}");
    // Inside, its cgroup namespace is rooted there: every line reads `/`.
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(':')).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.ends_with(":/")),
        "{out}"
    );
    // From the host: the container's first process is listed in each v1 hierarchy and in
    // cgroup2, and the limits are there.
    for d in &dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}: {procs}",
            d.display()
        );
    }
    if let Some(mem) = cg
        .v1_dirs()
        .iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
    {
        let l = std::fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(l.trim(), "50331648");
    }
    // This kernel has clone3 and CLONE_INTO_CGROUP: the supervisor never wrote a pid.
    let t = &i["state_detail"]["timings"];
    assert_eq!(t["cgroup_parent_join"], false, "{t}");
    env.ok(&["container", "rm", "--force", &name]);
    for d in &dirs {
        assert!(!d.exists(), "left behind: {}", d.display());
    }
}

/// Where `clone3` is missing (old kernels; seccomp profiles such as Docker's answer ENOSYS so
/// that libcs fall back), the supervisor starts the child with plain `clone` and moves it into
/// cgroup2 by pid while the child joins the v1 hierarchies itself: checked here by running tug
/// under a filter that fails `clone3` with ENOSYS (glibc's own spawns fall back as well).
#[test]
fn container_cgroup_fallback_without_clone3_joins_every_hierarchy() {
    use std::os::unix::process::CommandExt as _;
    let Some(env) = Env::new() else { return };
    let name = common::unique("cgfallback");
    let mut cmd = env.tug();
    cmd.args([
        "container",
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
        "-m",
        "40m",
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/cgroup; echo done; exec sleep 1000",
    ]);
    // SAFETY: the closure only makes the seccomp system call on a static program.
    unsafe {
        cmd.pre_exec(|| {
            let nr = u32::try_from(libc::SYS_clone3).unwrap_or(435);
            let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
            let prog = [
                libc::sock_filter {
                    code: 0x20,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                libc::sock_filter {
                    code: 0x15,
                    jt: 0,
                    jf: 1,
                    k: nr,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: enosys,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ALLOW,
                },
            ];
            let fprog = libc::sock_fprog {
                len: 4,
                filter: prog.as_ptr().cast_mut(),
            };
            let r = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &raw const fprog,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = common::run(&mut cmd);
    assert!(out.status.success(), "{out:?}");
    let mut text = String::new();
    env.until("the cgroup listing", 10, || {
        text = env.ok(&["container", "logs", &name]);
        text.contains("done")
    });
    let i = env.inspect(&name);
    let pid = i["pid"].as_i64().unwrap();
    let id = i["id"].as_str().unwrap().to_string();
    let t = &i["state_detail"]["timings"];
    assert_eq!(t["cgroup_parent_join"], true, "{t}");
    let ours = format!("/tug-{id}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let layout = tug::engine::runtime::cgroups::Layout::from_mountinfo(&mountinfo);
    let dirs = tug::engine::runtime::cgroups::Cgroup::new(layout, Path::new(&ours)).dirs();
    let host = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let joined = host.lines().filter(|l| l.ends_with(&ours)).count();
    assert_eq!(joined, dirs.len(), "{host}\nexpected: {dirs:?}");
    // Its cgroup namespace is rooted at the container's cgroup in cgroup2 too (the child
    // unshares it only once the supervisor has moved it there; unshared before the move, the
    // line could read `/tug-…`).
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(':')).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.ends_with(":/")),
        "{text}"
    );
    env.ok(&["container", "rm", "--force", &name]);
}

#[test]
fn container_stdin_and_terminal() {
    if !crate::common::require_tools(&["script"]) {
        return;
    }
    let Some(env) = Env::new() else { return };
    let mut child = env
        .tug()
        .args([
            "container",
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "cat; echo done",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line1\nline2\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "line1\nline2\ndone\n");
    // Without -i stdin is /dev/null.
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "cat; echo eof",
    ]);
    assert_eq!(out, "eof\n");
    // With -t the process has a terminal (run under `script` to give tug one).
    if Path::new("/usr/bin/script").exists() {
        let cmd = format!(
            "TUG_ROOT={} {} container run --rm -t busybox tty",
            env.root().display(),
            common::tug_bin().display()
        );
        let out = ok(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
        assert!(out.contains("/dev/pts/0"), "{out}");
        let name = common::unique("tty");
        env.ok(&[
            "container",
            "run",
            "-d",
            "--name",
            &name,
            "busybox",
            "sleep",
            "1000",
        ]);
        let cmd = format!(
            "TUG_ROOT={} {} container exec -t {name} tty",
            env.root().display(),
            common::tug_bin().display()
        );
        let out = ok(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
        assert!(out.contains("/dev/pts/0"), "{out}");
    }
}

#[test]
fn container_overlay_with_many_layers_uses_the_new_mount_api() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut layers = Vec::new();
    // 150 layers with long paths: far beyond the one page mount(2) can pass.
    for i in 0..150 {
        let l = dir.path().join(format!("layer-{i:03}-{}", "x".repeat(40)));
        std::fs::create_dir_all(&l).unwrap();
        std::fs::write(l.join(format!("f{i}")), i.to_string()).unwrap();
        std::fs::write(l.join("top"), i.to_string()).unwrap();
        layers.push(l);
    }
    let total: usize = layers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(total > 4096, "{total}");
    let (upper, work, target) = (
        dir.path().join("u"),
        dir.path().join("w"),
        dir.path().join("t"),
    );
    for d in [&upper, &work, &target] {
        std::fs::create_dir_all(d).unwrap();
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    tug::engine::runtime::rootfs::mount_overlay(&layers, Some((&upper, &work)), &target).unwrap();
    let guard = Unmount(target.clone());
    assert_eq!(std::fs::read_to_string(target.join("f0")).unwrap(), "0");
    assert_eq!(std::fs::read_to_string(target.join("f149")).unwrap(), "149");
    // The last layer listed (highest) wins.
    assert_eq!(std::fs::read_to_string(target.join("top")).unwrap(), "149");
    std::fs::write(target.join("new"), "w").unwrap();
    assert!(upper.join("new").exists());
    drop(guard);
    assert!(!target.join("f0").exists());
}

/// Loads busybox again as `hc:latest` with a Docker `Healthcheck` in its config (saved,
/// config edited, loaded): `test -e /tmp/ok`, every 200 ms, 2 retries.
fn image_with_healthcheck(env: &Env) {
    let dir = env.root().join("hc-archive");
    let x = dir.join("x");
    std::fs::create_dir_all(&x).unwrap();
    let tar = dir.join("b.tar");
    env.ok(&["image", "save", "-o", tar.to_str().unwrap(), "busybox"]);
    ok(Command::new("tar").arg("-C").arg(&x).arg("-xf").arg(&tar));
    let mf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("manifest.json")).unwrap()).unwrap();
    let cfg_name = mf[0]["Config"].as_str().unwrap().to_string();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join(&cfg_name)).unwrap()).unwrap();
    cfg["config"]["Healthcheck"] = serde_json::json!({
        "Test": ["CMD-SHELL", "test -e /tmp/ok"],
        "Interval": 200_000_000u64,
        "Timeout": 2_000_000_000u64,
        "Retries": 2,
    });
    std::fs::remove_file(x.join(&cfg_name)).unwrap();
    std::fs::write(x.join("hc.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let mut mf2 = mf.clone();
    mf2[0]["Config"] = "hc.json".into();
    mf2[0]["RepoTags"] = serde_json::json!(["hc:latest"]);
    std::fs::write(x.join("manifest.json"), serde_json::to_vec(&mf2).unwrap()).unwrap();
    let _ = std::fs::remove_file(x.join("repositories"));
    let tar2 = dir.join("hc.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&x)
        .arg("-cf")
        .arg(&tar2)
        .arg("."));
    env.ok(&["image", "load", "-i", tar2.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn container_image_healthcheck_applies_merges_and_can_be_disabled() {
    let Some(env) = Env::new() else { return };
    image_with_healthcheck(&env);
    let run = |name: &str, extra: &[&str], script: &str| {
        let mut args = vec![
            "container",
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
        ];
        args.extend_from_slice(extra);
        args.extend(["hc:latest", "sh", "-c", script]);
        env.ok(&args);
    };
    // The image's healthcheck runs with no flags: healthy once /tmp/ok exists.
    let a = common::unique("hca");
    run(&a, &[], "sleep 0.3; touch /tmp/ok; exec sleep 1000");
    assert_eq!(env.inspect(&a)["health"], "starting");
    env.until("healthy", 15, || env.inspect(&a)["health"] == "healthy");
    // --no-healthcheck turns it off.
    let b = common::unique("hcb");
    run(&b, &["--no-healthcheck"], "exec sleep 1000");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(env.inspect(&b)["health"], "none");
    // A flag without --health-cmd overrides one field; the test still comes from the image,
    // so without /tmp/ok the container goes unhealthy.
    let c = common::unique("hcc");
    run(&c, &["--health-interval", "300ms"], "exec sleep 1000");
    let hc = env.inspect(&c)["record"]["config"]["healthcheck"].clone();
    assert_eq!(
        hc["test"],
        serde_json::json!(["CMD-SHELL", "test -e /tmp/ok"]),
        "{hc}"
    );
    assert_eq!(hc["retries"], 2, "{hc}");
    assert_eq!(hc["interval"]["nanos"], 300_000_000, "{hc}");
    env.until("unhealthy", 15, || env.inspect(&c)["health"] == "unhealthy");
    // --health-cmd replaces the image's test.
    let d = common::unique("hcd");
    run(&d, &["--health-cmd", "true"], "exec sleep 1000");
    env.until("healthy", 15, || env.inspect(&d)["health"] == "healthy");
}

#[test]
fn container_image_healthcheck_under_compose_disable_and_override() {
    let Some(env) = Env::new() else { return };
    image_with_healthcheck(&env);
    let dir = env.root().join("proj");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        r#"services:
  plain:
    image: hc:latest
    network_mode: none
    command: ["sh", "-c", "touch /tmp/ok; exec sleep 1000"]
  off:
    image: hc:latest
    network_mode: none
    command: ["sleep", "1000"]
    healthcheck:
      disable: true
  slow:
    image: hc:latest
    network_mode: none
    command: ["sleep", "1000"]
    healthcheck:
      interval: 300ms
"#,
    )
    .unwrap();
    let p = common::unique("hcp");
    let compose = |args: &[&str]| {
        let mut c = env.tug();
        c.current_dir(&dir).args(["-p", &p]).args(args);
        ok(&mut c)
    };
    compose(&["up", "-d"]);
    let name = |s: &str| format!("{p}-{s}-1");
    env.until("plain healthy", 15, || {
        env.inspect(&name("plain"))["health"] == "healthy"
    });
    assert_eq!(env.inspect(&name("off"))["health"], "none");
    let hc = env.inspect(&name("slow"))["record"]["config"]["healthcheck"].clone();
    assert_eq!(
        hc["test"],
        serde_json::json!(["CMD-SHELL", "test -e /tmp/ok"]),
        "{hc}"
    );
    assert_eq!(hc["interval"]["nanos"], 300_000_000, "{hc}");
    env.until("slow unhealthy", 15, || {
        env.inspect(&name("slow"))["health"] == "unhealthy"
    });
    compose(&["down", "-t", "0"]);
}

#[test]
fn container_rm_reports_first_then_deletes_and_stale_trash_is_purged() {
    let Some(env) = Env::new() else { return };
    let trash = |env: &Env| -> Vec<String> {
        std::fs::read_dir(env.root().join("containers"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".trash-"))
            .collect()
    };
    // run --rm: the container is gone when run returns; its files follow shortly.
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo data > /big; echo done",
    ]);
    assert_eq!(out, "done\n");
    assert!(env.ids().is_empty(), "{:?}", env.ids());
    assert!(env.ok(&["container", "ls", "-a", "-q"]).trim().is_empty());
    env.until("trash deleted", 10, || trash(&env).is_empty());
    // Trash of a removal whose process died is purged by the next listing.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = env
        .root()
        .join("containers")
        .join(format!(".trash-{}-{dead}", "ab".repeat(32)));
    std::fs::create_dir_all(stale.join("upper/etc")).unwrap();
    std::fs::write(stale.join("upper/etc/x"), "x").unwrap();
    env.ok(&["container", "ls", "-a"]);
    assert!(!stale.exists(), "stale trash left");
}

/// What a container sees of its cgroups, per runtime: `/proc/self/cgroup`, the memory limit
/// where the machine's layout puts it, the cgroup2 tree's member list, and whether writes
/// are refused.
const CGROUP_PROBE: &str = r#"
echo "self=$(cut -d: -f3 /proc/self/cgroup | sort -u | tr '\n' ' ')"
if [ -e /sys/fs/cgroup/memory.max ]; then
  echo "limit=$(cat /sys/fs/cgroup/memory.max)"
else
  echo "limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
fi
for d in /sys/fs/cgroup /sys/fs/cgroup/unified; do
  [ -f $d/cgroup.procs ] && echo "v2procs=$(wc -l < $d/cgroup.procs)"
done
mkdir /sys/fs/cgroup/memory/x /sys/fs/cgroup/x 2>/dev/null && echo write=allowed || echo write=refused
"#;

#[test]
fn container_sees_its_own_cgroup_read_only_with_its_memory_limit() {
    let Some(env) = Env::new() else { return };
    let layout = tug::engine::runtime::cgroups::Layout::detect().unwrap();
    for rt in ["tug", "runc"] {
        let out = env.ok(&[
            "container",
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            rt,
            "-m",
            "64m",
            "busybox",
            "sh",
            "-c",
            CGROUP_PROBE,
        ]);
        // A cgroup namespace: the container's cgroup is the root of every hierarchy.
        assert!(out.lines().any(|l| l == "self=/ "), "{rt}: {out}");
        assert!(out.lines().any(|l| l == "limit=67108864"), "{rt}: {out}");
        assert!(out.lines().any(|l| l == "write=refused"), "{rt}: {out}");
        // The cgroup2 tree (pure v2, or the unified tree of a hybrid machine) is the
        // container's own: only the probe's processes are members (runc shows no unified
        // tree on a hybrid machine, as under Docker).
        let v2_shown = out.lines().find_map(|l| l.strip_prefix("v2procs="));
        match (&layout, rt) {
            (tug::engine::runtime::cgroups::Layout::V1 { .. }, _)
            | (tug::engine::runtime::cgroups::Layout::Hybrid { .. }, "runc") => {}
            _ => {
                let n: u32 = v2_shown
                    .unwrap_or_else(|| panic!("{rt}: no cgroup2 tree in {out}"))
                    .trim()
                    .parse()
                    .unwrap();
                assert!((1..=4).contains(&n), "{rt}: {n} members: {out}");
            }
        }
    }
    // An exec joins the same namespace and sees the same.
    let id = env
        .ok(&[
            "container",
            "run",
            "-d",
            "--network",
            "none",
            "-m",
            "32m",
            "busybox",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    let out = env.ok(&["container", "exec", &id, "sh", "-c", CGROUP_PROBE]);
    assert!(out.lines().any(|l| l == "self=/ "), "{out}");
    assert!(out.lines().any(|l| l == "limit=33554432"), "{out}");
    env.ok(&["container", "rm", "--force", &id]);
}

/// Volume names in the state root.
fn volume_names(env: &Env) -> Vec<String> {
    env.ok(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn container_image_volumes_are_anonymous_volumes_filled_from_the_image() {
    let Some(env) = Env::new() else { return };
    common::busybox_image_with(
        env.root(),
        "volimg:1",
        &["VOLUME /data", "VOLUME /cache/"],
        |d| {
            std::fs::create_dir(d.join("data")).unwrap();
            std::fs::write(d.join("data/seed"), "seeded\n").unwrap();
            vec!["data".into()]
        },
    );
    // Each VOLUME path is a mount of its own, holding the image's content.
    let id = env
        .ok(&[
            "container",
            "run",
            "-d",
            "--network",
            "none",
            "volimg:1",
            "sh",
            "-c",
            "cp /data/seed /data/copy; exec sleep 1000",
        ])
        .trim()
        .to_string();
    let vols = volume_names(&env);
    assert_eq!(vols.len(), 2, "{vols:?}");
    let mounts = env.ok(&[
        "container",
        "exec",
        &id,
        "sh",
        "-c",
        "awk '$5==\"/data\"||$5==\"/cache\"{print $5}' /proc/self/mountinfo | sort",
    ]);
    assert_eq!(mounts, "/cache\n/data\n");
    // What the container writes there is in a volume, outside its writable layer.
    env.until("the copy in the volume", 10, || {
        vols.iter().any(|v| {
            let v: serde_json::Value =
                serde_json::from_str(&env.ok(&["volume", "inspect", v])).unwrap();
            let dir = v[0]["mountpoint"].as_str().unwrap().to_string();
            std::fs::read_to_string(Path::new(&dir).join("copy")).is_ok_and(|c| c == "seeded\n")
        })
    });
    // `rm` keeps them (for `volume prune`); `rm -v` deletes them.
    let keep = env
        .ok(&[
            "container",
            "create",
            "--network",
            "none",
            "volimg:1",
            "true",
        ])
        .trim()
        .to_string();
    assert_eq!(volume_names(&env).len(), 4);
    env.ok(&["container", "rm", &keep]);
    assert_eq!(
        volume_names(&env).len(),
        4,
        "plain rm keeps anonymous volumes"
    );
    env.ok(&["volume", "prune"]);
    assert_eq!(volume_names(&env), vols, "prune takes the unused ones only");
    env.ok(&["container", "rm", "--force", "-v", &id]);
    assert!(
        volume_names(&env).is_empty(),
        "rm -v leaves {:?}",
        volume_names(&env)
    );
    // `run --rm` deletes them when the container goes.
    let out = env.ok(&[
        "container",
        "run",
        "--rm",
        "--network",
        "none",
        "volimg:1",
        "cat",
        "/data/seed",
    ]);
    assert_eq!(out, "seeded\n");
    assert!(
        volume_names(&env).is_empty(),
        "run --rm leaves {:?}",
        volume_names(&env)
    );
    // A bind at a VOLUME path takes its place; `-v PATH` asks for another anonymous one.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("seed"), "from the host\n").unwrap();
    let bind = format!("{}:/data", host.path().display());
    let id = env
        .ok(&[
            "container",
            "run",
            "-d",
            "--network",
            "none",
            "-v",
            &bind,
            "-v",
            "/extra",
            "volimg:1",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    assert_eq!(
        env.ok(&["container", "exec", &id, "cat", "/data/seed"]),
        "from the host\n"
    );
    let mounts = env.ok(&[
        "container",
        "exec",
        &id,
        "sh",
        "-c",
        "awk '$5==\"/extra\"||$5==\"/cache\"{print $5}' /proc/self/mountinfo | sort",
    ]);
    assert_eq!(mounts, "/cache\n/extra\n");
    assert_eq!(volume_names(&env).len(), 2, "{:?}", volume_names(&env));
    env.ok(&["container", "rm", "--force", "-v", &id]);
    assert!(volume_names(&env).is_empty());
}
