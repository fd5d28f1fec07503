//! Control groups: where a container's processes are accounted and limited.
//!
//! Linux has two cgroup designs. **v1** mounts one hierarchy per controller (memory, cpu,
//! pids, freezer, …) under `/sys/fs/cgroup/<controller>`, and a process is placed in each
//! hierarchy separately. **v2** is a single unified hierarchy (`cgroup2` at `/sys/fs/cgroup`)
//! where a child directory can use the controllers its parent lists in
//! `cgroup.subtree_control`. A **hybrid** machine mounts the v1 hierarchies and, beside them,
//! a cgroup2 tree at `/sys/fs/cgroup/unified` that usually holds no controller (here it holds
//! only hugetlb): limits go through v1, and the process also joins the unified tree so that
//! nothing is left behind.
//!
//! A container's cgroup is `<hierarchy>/<path>` where `path` is the spec's `cgroupsPath`
//! (`/tug-<id>`: flat, and named so leak checks find it). [`Cgroup`] creates it, writes the
//! limits, adds processes, reads OOM kills, freezes, and removes it. The device allowlist is
//! the v1 `devices` controller's files, or on pure v2 an eBPF program (see [`super::bpf`]).
//! The hierarchy roots are parameters, so the v2 code is tested against a fake tree in a
//! temporary directory (and the device program against the real cgroup2 tree).
//!
//! **Joining without the global lock.** Moving a process by writing its pid into
//! `cgroup.procs` (or any pid other than the writer's own into `tasks`) takes the kernel's
//! global `cgroup_threadgroup_rwsem` for writing; when that lock has been idle, taking it waits
//! for a full RCU grace period (`rcu_sync_enter` → `synchronize_rcu`), about 10 ms. Two ways
//! in skip it, and a new container process uses both ([`Attach`]):
//! - on a v1 hierarchy, a thread that writes `0` into a `tasks` file moves *itself* only, and
//!   `cgroup_procs_write_start` takes no threadgroup lock for that (the thread is `current`,
//!   it cannot exit or exec under the write). The container's process is single-threaded
//!   right after `clone`, so this moves the whole process; the `tasks` files are opened by the
//!   supervisor before the clone and written by the child first thing;
//! - on cgroup2 (pure v2, or the unified tree of a hybrid machine), `clone3` with
//!   `CLONE_INTO_CGROUP` and a descriptor of the cgroup directory starts the child there; the
//!   fork path takes that lock for reading only. Kernels without it (before 5.7, or a seccomp
//!   filter that hides `clone3`) fall back to writing the pid into `cgroup.procs`.
//!
//! **The container's own view.** A container gets a cgroup namespace, unshared by its first
//! process once it is inside its cgroups: the namespace's root is then the container's
//! cgroup in every hierarchy, so `/proc/self/cgroup` reads `/` and a cgroup filesystem
//! mounted inside shows the container's cgroup as its root. The spec asks for the view as
//! one mount of type `cgroup` at `/sys/fs/cgroup` (as Docker writes it); [`container_view`]
//! expands it for the machine's layout, as runc does: on v2 a `cgroup2` mount; on v1 a
//! tmpfs holding one `cgroup` mount per hierarchy the container joined (named as on the
//! host, with a link per controller of a co-mounted one, `cpu -> cpu,cpuacct`), and on a
//! hybrid machine the unified tree beside them. Everything is read-only unless the
//! container is privileged. Runtimes, JVMs and Go programs size themselves from what they
//! read there (`memory.max`, `memory.limit_in_bytes`, `cpu.max`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory could not be read, written or created.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The process could not move itself into a cgroup.
    #[error("join cgroup {path}: {source}")]
    Join {
        /// The v1 `tasks` file.
        path: PathBuf,
        /// The cause (`EIO` for a short write).
        source: nix::Error,
    },
    /// No usable cgroup hierarchy was found.
    #[error("no cgroup hierarchy is mounted at {0}")]
    NotMounted(PathBuf),
    /// A limit cannot be expressed.
    #[error("invalid cgroup limit: {0}")]
    Invalid(String),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, CgroupError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which cgroup design the machine uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Only v1 hierarchies: controller name → mount point.
    V1 {
        /// Controller (or named hierarchy) → mount point.
        controllers: BTreeMap<String, PathBuf>,
    },
    /// v1 hierarchies plus a cgroup2 tree (usually `/sys/fs/cgroup/unified`).
    Hybrid {
        /// Controller → mount point of its v1 hierarchy.
        controllers: BTreeMap<String, PathBuf>,
        /// The cgroup2 mount.
        unified: PathBuf,
    },
    /// A single cgroup2 hierarchy.
    V2 {
        /// The cgroup2 mount.
        root: PathBuf,
    },
}

impl Layout {
    /// Detects the layout from `/proc/self/mountinfo`, once per process (the cgroup mounts
    /// do not change under a running tug; listing containers asks for every container).
    pub fn detect() -> Result<Layout> {
        static DETECTED: std::sync::OnceLock<Layout> = std::sync::OnceLock::new();
        if let Some(l) = DETECTED.get() {
            return Ok(l.clone());
        }
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err(Path::new("/proc/self/mountinfo")))?;
        Ok(DETECTED.get_or_init(|| Self::from_mountinfo(&text)).clone())
    }

    /// Parses mountinfo text: each line `id parent major:minor root mountpoint opts … - fstype
    /// source superopts`.
    #[must_use]
    pub fn from_mountinfo(text: &str) -> Layout {
        let mut controllers = BTreeMap::new();
        let mut unified = None;
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            if fields.len() < 5 || rfields.len() < 3 {
                continue;
            }
            let mountpoint = PathBuf::from(fields[4]);
            match rfields[0] {
                "cgroup2" if unified.is_none() => {
                    unified = Some(mountpoint);
                }
                "cgroup" => {
                    for opt in rfields[2].split(',') {
                        let known = [
                            "cpu",
                            "cpuacct",
                            "cpuset",
                            "memory",
                            "devices",
                            "freezer",
                            "blkio",
                            "pids",
                            "hugetlb",
                            "net_cls",
                            "net_prio",
                            "perf_event",
                            "rdma",
                        ];
                        if known.contains(&opt) {
                            controllers.insert(opt.to_string(), mountpoint.clone());
                        } else if let Some(name) = opt.strip_prefix("name=") {
                            controllers.insert(format!("name={name}"), mountpoint.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        match (controllers.is_empty(), unified) {
            (true, Some(root)) => Layout::V2 { root },
            (false, Some(unified)) => Layout::Hybrid {
                controllers,
                unified,
            },
            (_, None) => Layout::V1 { controllers },
        }
    }

    /// Short name for reports: `v1`, `v2` or `hybrid`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Layout::V1 { .. } => "v1",
            Layout::Hybrid { .. } => "hybrid",
            Layout::V2 { .. } => "v2",
        }
    }
}

/// What a cgroup's processes use (see [`Cgroup::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, in bytes (page cache included).
    pub memory: u64,
    /// Inactive file cache, in bytes (docker leaves it out of the usage it shows).
    pub inactive_file: u64,
    /// The memory limit, when there is one.
    pub memory_limit: Option<u64>,
    /// Processes.
    pub pids: u64,
    /// Bytes read from block devices.
    pub read_bytes: u64,
    /// Bytes written to block devices.
    pub write_bytes: u64,
}

/// One container's cgroup across the hierarchies of a [`Layout`].
#[derive(Debug, Clone)]
pub struct Cgroup {
    layout: Layout,
    /// Relative path inside each hierarchy (no leading `/`).
    rel: PathBuf,
}

/// The v1 controllers tug sets limits with or joins.
const V1_JOIN: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "name=systemd",
];

impl Cgroup {
    /// The cgroup at `path` (the spec's `cgroupsPath`, e.g. `/tug-<id>`) in `layout`.
    #[must_use]
    pub fn new(layout: Layout, path: &Path) -> Cgroup {
        let rel = path
            .strip_prefix("/")
            .map_or_else(|_| path.to_path_buf(), Path::to_path_buf);
        Cgroup { layout, rel }
    }

    /// The directories of this cgroup in the v1 hierarchies (none on pure v2).
    #[must_use]
    pub fn v1_dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        if let Layout::V1 { controllers } | Layout::Hybrid { controllers, .. } = &self.layout {
            for c in V1_JOIN {
                if let Some(m) = controllers.get(*c) {
                    let p = m.join(&self.rel);
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// The directory of this cgroup in the cgroup2 tree: the only one on pure v2, the unified
    /// one on a hybrid machine, none on pure v1.
    #[must_use]
    pub fn unified_dir(&self) -> Option<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => Some(root.join(&self.rel)),
            Layout::Hybrid { unified, .. } => Some(unified.join(&self.rel)),
            Layout::V1 { .. } => None,
        }
    }

    /// Opens what a new process needs to enter this (created) cgroup by itself: the `tasks`
    /// file of every v1 hierarchy and the cgroup2 directory (see the module docs).
    pub fn attach(&self) -> Result<Attach> {
        let mut tasks = Vec::new();
        for d in self.v1_dirs() {
            let p = d.join("tasks");
            let f = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&p)
                .map_err(io_err(&p))?;
            tasks.push((p, OwnedFd::from(f)));
        }
        let unified = match self.unified_dir() {
            Some(d) => {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(&d)
                    .map_err(io_err(&d))?;
                Some((d, OwnedFd::from(f)))
            }
            None => None,
        };
        Ok(Attach { tasks, unified })
    }

    /// Moves process `pid` into the cgroup2 directory only (the fallback when
    /// `CLONE_INTO_CGROUP` is not available; the v1 hierarchies were joined by the process).
    pub fn add_unified(&self, pid: i32) -> Result<()> {
        match self.unified_dir() {
            Some(d) => write_file(&d.join("cgroup.procs"), &pid.to_string()),
            None => Ok(()),
        }
    }

    /// Every directory of this cgroup (one per v1 hierarchy, plus the unified one).
    #[must_use]
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out = self.v1_dirs();
        out.extend(self.unified_dir());
        out
    }

    fn v1(&self, controller: &str) -> Option<PathBuf> {
        match &self.layout {
            Layout::V1 { controllers } | Layout::Hybrid { controllers, .. } => {
                controllers.get(controller).map(|m| m.join(&self.rel))
            }
            Layout::V2 { .. } => None,
        }
    }

    fn v2(&self) -> Option<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => Some(root.join(&self.rel)),
            _ => None,
        }
    }

    /// Creates the cgroup directories and writes the limits of `resources`.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<()> {
        if let Layout::V2 { root } = &self.layout {
            // Let children of the root use the controllers tug sets limits with.
            let avail = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let wanted: Vec<String> = avail
                .split_whitespace()
                .filter(|c| ["cpu", "cpuset", "memory", "pids", "io", "hugetlb"].contains(c))
                .map(|c| format!("+{c}"))
                .collect();
            if !wanted.is_empty() {
                // Best effort: a controller busy elsewhere must not stop the container.
                let _ = write_file(&root.join("cgroup.subtree_control"), &wanted.join(" "));
            }
        }
        for d in self.dirs() {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        if let Some(cs) = self.v1("cpuset") {
            // A new v1 cpuset is empty; it must inherit cpus and mems before it takes tasks.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let cur = fs::read_to_string(cs.join(f)).unwrap_or_default();
                if cur.trim().is_empty() {
                    let parent = cs.parent().map(|p| p.join(f));
                    if let Some(p) = parent {
                        let v = fs::read_to_string(&p).unwrap_or_default();
                        let _ = write_file(&cs.join(f), v.trim());
                    }
                }
            }
        }
        if let Some(r) = resources {
            self.apply(r)?;
        }
        Ok(())
    }

    /// Writes the limits of `r` into the cgroup files.
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(mem) = r.memory() {
            let limit = mem.limit().filter(|l| *l > 0);
            let swap = mem.swap();
            if let Some(dir) = self.v2() {
                if let Some(l) = limit {
                    write_file(&dir.join("memory.max"), &l.to_string())?;
                }
                if let (Some(l), Some(s)) = (limit, swap) {
                    // OCI swap is memory+swap; cgroup2 counts swap alone.
                    let v = if s < 0 {
                        "max".to_string()
                    } else {
                        (s - l).max(0).to_string()
                    };
                    write_file(&dir.join("memory.swap.max"), &v)?;
                }
            } else if let Some(dir) = self.v1("memory") {
                if let Some(l) = limit {
                    write_file(&dir.join("memory.limit_in_bytes"), &l.to_string())?;
                }
                if let Some(s) = swap {
                    let f = dir.join("memory.memsw.limit_in_bytes");
                    // Swap accounting may be off (no memsw files): then only memory is capped.
                    if f.exists() {
                        write_file(&f, &s.to_string())?;
                    }
                }
            }
        }
        if let Some(cpu) = r.cpu() {
            let period = cpu.period().unwrap_or(100_000);
            if let Some(dir) = self.v2() {
                if let Some(q) = cpu.quota().filter(|q| *q > 0) {
                    write_file(&dir.join("cpu.max"), &format!("{q} {period}"))?;
                }
                if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
                    write_file(
                        &dir.join("cpu.weight"),
                        &shares_to_weight(shares).to_string(),
                    )?;
                }
                if let Some(c) = cpu.cpus() {
                    write_file(&dir.join("cpuset.cpus"), c)?;
                }
                if let Some(m) = cpu.mems() {
                    write_file(&dir.join("cpuset.mems"), m)?;
                }
            } else {
                if let Some(dir) = self.v1("cpu") {
                    if let Some(q) = cpu.quota().filter(|q| *q > 0) {
                        write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                        write_file(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
                    }
                    if let Some(s) = cpu.shares().filter(|s| *s > 0) {
                        write_file(&dir.join("cpu.shares"), &s.to_string())?;
                    }
                }
                if let Some(dir) = self.v1("cpuset") {
                    if let Some(c) = cpu.cpus() {
                        write_file(&dir.join("cpuset.cpus"), c)?;
                    }
                    if let Some(m) = cpu.mems() {
                        write_file(&dir.join("cpuset.mems"), m)?;
                    }
                }
            }
        }
        if let Some(p) = r.pids() {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".to_string()
            };
            if let Some(dir) = self.v2().or_else(|| self.v1("pids")) {
                write_file(&dir.join("pids.max"), &v)?;
            }
        }
        if let (Some(devs), Some(dir)) = (r.devices(), self.v2()) {
            // No devices controller on v2: an eBPF program does the same (see `bpf`). A fake
            // tree (tests) is not cgroup2 and cannot take one.
            if super::bpf::is_cgroup2(&dir) {
                super::bpf::attach(&dir, devs)?;
            }
        }
        if let (Some(devs), Some(dir)) = (r.devices(), self.v1("devices")) {
            for d in devs {
                let typ = match d.typ() {
                    Some(oci_spec::runtime::LinuxDeviceType::C) => "c",
                    Some(oci_spec::runtime::LinuxDeviceType::B) => "b",
                    _ => "a",
                };
                let major = d.major().map_or("*".to_string(), |m| m.to_string());
                let minor = d.minor().map_or("*".to_string(), |m| m.to_string());
                let access = d.access().clone().unwrap_or_else(|| "rwm".to_string());
                let rule = if typ == "a" {
                    "a".to_string()
                } else {
                    format!("{typ} {major}:{minor} {access}")
                };
                let file = if d.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write_file(&dir.join(file), &rule)?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` into every hierarchy of this cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        for d in self.dirs() {
            write_file(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    #[must_use]
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if let Some(d) = self.v2() {
            (d.join("memory.events"), "oom_kill")
        } else if let Some(d) = self.v1("memory") {
            (d.join("memory.oom_control"), "oom_kill")
        } else {
            return 0;
        };
        let text = fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// What the cgroup's processes use now (`stats`): read from cgroup2 files on pure v2, from
    /// the v1 controllers otherwise; a value the hierarchy does not give is 0 (a memory limit
    /// of "max" or none is `None`).
    #[must_use]
    pub fn usage(&self) -> Usage {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let num = |text: String| text.trim().parse::<u64>().unwrap_or(0);
        let key = |text: &str, k: &str| -> u64 {
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(name, _)| *name == k)
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0)
        };
        if let Some(d) = self.v2() {
            let mut u = Usage {
                cpu_ns: key(&read(d.join("cpu.stat")), "usage_usec") * 1000,
                memory: num(read(d.join("memory.current"))),
                inactive_file: key(&read(d.join("memory.stat")), "inactive_file"),
                memory_limit: read(d.join("memory.max")).trim().parse().ok(),
                pids: num(read(d.join("pids.current"))),
                ..Usage::default()
            };
            // io.stat: `MAJ:MIN rbytes=… wbytes=… …` per device.
            for line in read(d.join("io.stat")).lines() {
                for field in line.split_whitespace() {
                    match field.split_once('=') {
                        Some(("rbytes", v)) => u.read_bytes += v.parse().unwrap_or(0),
                        Some(("wbytes", v)) => u.write_bytes += v.parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            return u;
        }
        let mut u = Usage::default();
        if let Some(d) = self.v1("cpuacct") {
            u.cpu_ns = num(read(d.join("cpuacct.usage")));
        }
        if let Some(d) = self.v1("memory") {
            u.memory = num(read(d.join("memory.usage_in_bytes")));
            u.inactive_file = key(&read(d.join("memory.stat")), "total_inactive_file");
            // v1 says "no limit" with a huge number (the page-rounded i64 maximum).
            u.memory_limit = Some(num(read(d.join("memory.limit_in_bytes"))))
                .filter(|l| *l > 0 && *l < i64::MAX as u64 / 2);
        }
        if let Some(d) = self.v1("pids") {
            u.pids = num(read(d.join("pids.current")));
        }
        if let Some(d) = self.v1("blkio") {
            // `MAJ:MIN Read N` / `MAJ:MIN Write N` lines.
            for line in read(d.join("blkio.throttle.io_service_bytes")).lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [_, op, n] = f.as_slice() {
                    let n: u64 = n.parse().unwrap_or(0);
                    match *op {
                        "Read" => u.read_bytes += n,
                        "Write" => u.write_bytes += n,
                        _ => {}
                    }
                }
            }
        }
        u
    }

    /// The pids in this cgroup (from the first hierarchy that answers).
    #[must_use]
    pub fn pids(&self) -> Vec<i32> {
        let dir = self
            .v2()
            .or_else(|| self.v1("pids"))
            .or_else(|| self.v1("memory"))
            .or_else(|| self.dirs().into_iter().next());
        let Some(dir) = dir else { return Vec::new() };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Freezes (`true`) or thaws every process of the cgroup.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        if let Some(d) = self.v2() {
            return write_file(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" });
        }
        let d = self
            .v1("freezer")
            .ok_or_else(|| CgroupError::NotMounted(PathBuf::from("freezer")))?;
        write_file(
            &d.join("freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
        )
    }

    /// True when the cgroup is frozen.
    #[must_use]
    pub fn is_frozen(&self) -> bool {
        if let Some(d) = self.v2() {
            return fs::read_to_string(d.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1");
        }
        self.v1("freezer").is_some_and(|d| {
            fs::read_to_string(d.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN" || s.trim() == "FREEZING")
        })
    }

    /// True when any directory of this cgroup exists.
    #[must_use]
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }

    /// Kills every remaining process (thawing first) and removes the directories.
    pub fn destroy(&self) -> Result<()> {
        if !self.exists() {
            return Ok(());
        }
        let _ = self.freeze(false);
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut last = Ok(());
        for d in self.dirs() {
            if d.exists() {
                let mut ok = false;
                for _ in 0..50 {
                    match fs::remove_dir(&d) {
                        Ok(()) => {
                            ok = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            ok = true;
                            break;
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                    }
                }
                if !ok {
                    last = fs::remove_dir(&d).map_err(io_err(&d));
                }
            }
        }
        last
    }
}

/// Descriptors with which a new container process enters its cgroup without the global
/// threadgroup lock (see the module docs), from [`Cgroup::attach`].
#[derive(Debug)]
pub struct Attach {
    /// The `tasks` file of each v1 hierarchy, open for writing.
    tasks: Vec<(PathBuf, OwnedFd)>,
    /// The cgroup2 directory, for `CLONE_INTO_CGROUP`.
    unified: Option<(PathBuf, OwnedFd)>,
}

impl Attach {
    /// The cgroup2 directory descriptor to clone into, if this layout has a cgroup2 tree.
    #[must_use]
    pub fn unified_fd(&self) -> Option<RawFd> {
        self.unified.as_ref().map(|(_, f)| f.as_raw_fd())
    }

    /// The v1 `tasks` files this process writes itself into.
    #[must_use]
    pub fn v1_count(&self) -> usize {
        self.tasks.len()
    }

    /// In the new, still single-threaded container process: writes `0` ("the calling
    /// thread") into every v1 `tasks` file, which moves the whole process without the global
    /// lock. Only `write`; no allocation unless it fails.
    pub fn join_self(&self) -> Result<()> {
        for (p, f) in &self.tasks {
            match nix::unistd::write(f, b"0") {
                Ok(1) => {}
                r => {
                    return Err(CgroupError::Join {
                        path: p.clone(),
                        source: r.err().unwrap_or(nix::Error::EIO),
                    });
                }
            }
        }
        Ok(())
    }

    /// Closes the child's copies of the descriptors (so a tiny init, which never execs, does
    /// not keep them).
    ///
    /// # Safety
    /// Only in a forked child that leaves by exec or `_exit` and never drops this value:
    /// its `OwnedFd`s would close the numbers again.
    pub unsafe fn close_in_child(&self) {
        for (_, f) in self.tasks.iter().chain(&self.unified) {
            // SAFETY: the child's own copy of an open descriptor (see above).
            unsafe { libc::close(f.as_raw_fd()) };
        }
    }
}

/// One step of mounting a container's view of its cgroups (see the module docs). Paths are
/// absolute in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewMount {
    /// A tmpfs (mode 755) that holds the mount points of the v1 hierarchies.
    Tmpfs(PathBuf),
    /// A v1 hierarchy: a `cgroup` filesystem with these options (`memory`, `cpu,cpuacct`,
    /// `name=systemd`).
    V1 {
        /// Mount point.
        dir: PathBuf,
        /// The hierarchy's controllers (or name), as mount data.
        options: String,
    },
    /// The cgroup2 tree.
    V2(PathBuf),
    /// `link -> target`: a controller of a co-mounted hierarchy.
    Symlink {
        /// The link.
        link: PathBuf,
        /// Its target (relative: the hierarchy's directory name).
        target: String,
    },
    /// Makes the tmpfs read-only once it holds everything.
    RemountReadOnly(PathBuf),
}

/// The mounts that show a container its own cgroups at `dest` on a machine with `layout`
/// (the container's process must already be in its cgroup namespace when they are made).
#[must_use]
pub fn container_view(layout: &Layout, dest: &Path, read_only: bool) -> Vec<ViewMount> {
    let controllers = match layout {
        Layout::V2 { .. } => return vec![ViewMount::V2(dest.to_path_buf())],
        Layout::V1 { controllers } | Layout::Hybrid { controllers, .. } => controllers,
    };
    // The hierarchies the container joined, by host mount point: their directory name and
    // controllers.
    let mut hierarchies: BTreeMap<PathBuf, Vec<&str>> = BTreeMap::new();
    for c in V1_JOIN {
        if let Some(m) = controllers.get(*c) {
            hierarchies.entry(m.clone()).or_default().push(c);
        }
    }
    let mut out = vec![ViewMount::Tmpfs(dest.to_path_buf())];
    let mut links = Vec::new();
    for (mountpoint, mut names) in hierarchies {
        let Some(dir) = mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        names.sort_unstable();
        out.push(ViewMount::V1 {
            dir: dest.join(&dir),
            options: names.join(","),
        });
        if dir.contains(',') {
            for n in dir.split(',') {
                links.push(ViewMount::Symlink {
                    link: dest.join(n),
                    target: dir.clone(),
                });
            }
        }
    }
    out.extend(links);
    if let Layout::Hybrid { unified, .. } = layout
        && let Some(name) = unified.file_name()
    {
        out.push(ViewMount::V2(dest.join(name)));
    }
    if read_only {
        out.push(ViewMount::RemountReadOnly(dest.to_path_buf()));
    }
    out
}

/// Converts v1 `cpu.shares` (2..262144, default 1024) to v2 `cpu.weight` (1..10000).
#[must_use]
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(value.as_bytes()).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    #[test]
    fn cgroups_detect_hybrid_and_v2() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                      32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let l = Layout::from_mountinfo(hybrid);
        assert_eq!(l.name(), "hybrid");
        let v2 = "32 25 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Layout::from_mountinfo(v2),
            Layout::V2 {
                root: PathBuf::from("/sys/fs/cgroup")
            }
        );
        let v1 = "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let Layout::V1 { controllers } = Layout::from_mountinfo(v1) else {
            panic!("expected v1")
        };
        assert_eq!(
            controllers["cpuacct"],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
    }

    #[test]
    fn cgroups_usage_from_fake_v2_and_v1_trees() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("v2");
        let d = root.join("tug-x");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        fs::write(d.join("memory.current"), "409600\n").unwrap();
        fs::write(d.join("memory.stat"), "anon 1\ninactive_file 8192\n").unwrap();
        fs::write(d.join("memory.max"), "max\n").unwrap();
        fs::write(d.join("pids.current"), "3\n").unwrap();
        fs::write(
            d.join("io.stat"),
            "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=1 wbytes=2\n",
        )
        .unwrap();
        let u = Cgroup::new(Layout::V2 { root }, Path::new("/tug-x")).usage();
        assert_eq!(
            u,
            Usage {
                cpu_ns: 1_500_000,
                memory: 409_600,
                inactive_file: 8192,
                memory_limit: None,
                pids: 3,
                read_bytes: 101,
                write_bytes: 22,
            }
        );
        let mut controllers = BTreeMap::new();
        for c in ["cpuacct", "memory", "pids", "blkio"] {
            let m = tmp.path().join("v1").join(c);
            fs::create_dir_all(m.join("tug-x")).unwrap();
            controllers.insert(c.to_string(), m);
        }
        let v1 = |c: &str, f: &str, text: &str| {
            fs::write(tmp.path().join("v1").join(c).join("tug-x").join(f), text).unwrap();
        };
        v1("cpuacct", "cpuacct.usage", "2000\n");
        v1("memory", "memory.usage_in_bytes", "1000\n");
        v1(
            "memory",
            "memory.stat",
            "cache 5\ntotal_inactive_file 100\n",
        );
        v1("memory", "memory.limit_in_bytes", "9223372036854771712\n");
        v1("pids", "pids.current", "1\n");
        v1(
            "blkio",
            "blkio.throttle.io_service_bytes",
            "8:0 Read 10\n8:0 Write 4\n8:0 Total 14\nTotal 14\n",
        );
        let u = Cgroup::new(Layout::V1 { controllers }, Path::new("/tug-x")).usage();
        assert_eq!(
            u,
            Usage {
                cpu_ns: 2000,
                memory: 1000,
                inactive_file: 100,
                memory_limit: None,
                pids: 1,
                read_bytes: 10,
                write_bytes: 4,
            }
        );
    }

    #[test]
    fn cgroups_v2_fake_tree_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        let cg = Cgroup::new(Layout::V2 { root: root.clone() }, Path::new("/tug-abc"));
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 * 1024 * 1024_i64)
                    .swap(128 * 1024 * 1024_i64)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000_i64)
                    .period(100_000_u64)
                    .shares(512_u64)
                    .cpus("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(20_i64).build().unwrap())
            .build()
            .unwrap();
        cg.create(Some(&res)).unwrap();
        let d = root.join("tug-abc");
        let rd = |f: &str| fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(rd("memory.max"), "67108864");
        assert_eq!(rd("memory.swap.max"), "67108864");
        assert_eq!(rd("cpu.max"), "50000 100000");
        assert_eq!(rd("cpu.weight"), shares_to_weight(512).to_string());
        assert_eq!(rd("cpuset.cpus"), "0");
        assert_eq!(rd("pids.max"), "20");
        let sub = fs::read_to_string(root.join("cgroup.subtree_control")).unwrap();
        assert!(sub.contains("+memory") && sub.contains("+pids"), "{sub}");
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills(), 2);
        cg.freeze(true).unwrap();
        assert!(cg.is_frozen());
        cg.freeze(false).unwrap();
        assert!(!cg.is_frozen());
        fs::write(d.join("cgroup.procs"), "").unwrap();
        assert_eq!(cg.dirs(), vec![d]);
    }

    #[test]
    fn cgroups_v1_fake_tree_attach_writes_self_into_every_tasks_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut controllers = BTreeMap::new();
        for c in ["cpu", "memory", "pids"] {
            let m = tmp.path().join(c);
            fs::create_dir_all(m.join("tug-abc")).unwrap();
            fs::write(m.join("tug-abc/tasks"), "").unwrap();
            controllers.insert(c.to_string(), m);
        }
        let unified = tmp.path().join("unified");
        fs::create_dir_all(unified.join("tug-abc")).unwrap();
        let cg = Cgroup::new(
            Layout::Hybrid {
                controllers,
                unified: unified.clone(),
            },
            Path::new("/tug-abc"),
        );
        let attach = cg.attach().unwrap();
        assert_eq!(attach.v1_count(), 3);
        assert!(attach.unified_fd().is_some());
        assert_eq!(cg.unified_dir(), Some(unified.join("tug-abc")));
        // In a real child this moves the calling thread; here the fake files take the "0".
        attach.join_self().unwrap();
        for c in ["cpu", "memory", "pids"] {
            let t = fs::read_to_string(tmp.path().join(c).join("tug-abc/tasks")).unwrap();
            assert_eq!(t, "0", "{c}");
        }
        // A missing tasks file is an error naming it, not a silent skip.
        fs::remove_file(tmp.path().join("pids/tug-abc/tasks")).unwrap();
        let e = cg.attach().unwrap_err().to_string();
        assert!(e.contains("pids/tug-abc/tasks"), "{e}");
    }

    #[test]
    fn cgroups_container_view_per_layout() {
        let dest = Path::new("/sys/fs/cgroup");
        // Pure v2 (the fake tree's root stands for /sys/fs/cgroup): one cgroup2 mount.
        let tmp = tempfile::tempdir().unwrap();
        let v2 = Layout::V2 {
            root: tmp.path().to_path_buf(),
        };
        assert_eq!(
            container_view(&v2, dest, true),
            vec![ViewMount::V2(dest.to_path_buf())]
        );
        // Hybrid, this machine's layout: a tmpfs, each joined hierarchy under its host name,
        // the unified tree, then read-only.
        let hybrid = Layout::from_mountinfo(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
             42 31 0:39 / /sys/fs/cgroup/net_cls rw - cgroup cgroup rw,net_cls\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        let d = |s: &str| dest.join(s);
        assert_eq!(
            container_view(&hybrid, dest, true),
            vec![
                ViewMount::Tmpfs(dest.to_path_buf()),
                ViewMount::V1 {
                    dir: d("cpu"),
                    options: "cpu".into()
                },
                ViewMount::V1 {
                    dir: d("memory"),
                    options: "memory".into()
                },
                ViewMount::V1 {
                    dir: d("systemd"),
                    options: "name=systemd".into()
                },
                ViewMount::V2(d("unified")),
                ViewMount::RemountReadOnly(dest.to_path_buf()),
            ],
            "net_cls is not joined by containers, so it is not shown"
        );
        // v1 with co-mounted controllers (Debian's cpu,cpuacct): one mount and a link per
        // controller; privileged: writable.
        let v1 = Layout::from_mountinfo(
            "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             31 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
        );
        assert_eq!(
            container_view(&v1, dest, false),
            vec![
                ViewMount::Tmpfs(dest.to_path_buf()),
                ViewMount::V1 {
                    dir: d("cpu,cpuacct"),
                    options: "cpu,cpuacct".into()
                },
                ViewMount::V1 {
                    dir: d("pids"),
                    options: "pids".into()
                },
                ViewMount::Symlink {
                    link: d("cpu"),
                    target: "cpu,cpuacct".into()
                },
                ViewMount::Symlink {
                    link: d("cpuacct"),
                    target: "cpu,cpuacct".into()
                },
            ]
        );
    }

    #[test]
    fn cgroups_shares_to_weight_bounds() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }
}
