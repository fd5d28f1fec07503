//! Turns a [`ContainerConfig`] and the image's config into an OCI runtime spec, with Docker's
//! defaults: the 14 default capabilities, the default seccomp profile, masked and read-only
//! paths, the device allowlist, /dev/shm of 64 MiB, the command combined from entrypoint and
//! cmd. Both runtimes (the built-in one and runc) execute the result, so this is the single
//! place where Docker's behaviour is encoded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, Linux, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, Mount as OciMount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::config::{ContainerConfig, MountKind, NetworkMode};
use super::user::ExecUser;
use crate::engine::runtime::seccomp;

/// Docker's default capabilities.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths a container must not read (covered by /dev/null or an empty tmpfs).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths a container sees read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the spec is built from.
#[derive(Debug)]
pub struct SpecInput<'a> {
    /// Container id.
    pub id: &'a str,
    /// The options.
    pub config: &'a ContainerConfig,
    /// The image's run defaults.
    pub image: Option<&'a oci_spec::image::Config>,
    /// The resolved user.
    pub user: &'a ExecUser,
    /// The container's state directory (hosts, hostname, resolv.conf live there).
    pub state_dir: &'a Path,
    /// Path of the network namespace to join for `NetworkMode::Container`.
    pub joined_netns: Option<PathBuf>,
}

/// The cgroup path of a container (flat, named so leak checks find it).
#[must_use]
pub fn cgroup_path(id: &str) -> PathBuf {
    PathBuf::from(format!("/tug-{id}"))
}

/// Normalises a capability name (`net_admin` → `CAP_NET_ADMIN`).
#[must_use]
pub fn cap_name(s: &str) -> String {
    let up = s.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") || up == "ALL" {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Every capability this kernel and this process's bounding set know: a privileged
/// container's, and a privileged exec's.
pub(crate) fn all_caps() -> Vec<String> {
    let bounding = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all());
    let mut v: Vec<String> = bounding.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

/// Why a container's runtime spec cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The configuration asks for something a container cannot have (named in the message).
    #[error("{0}")]
    Invalid(String),
    /// oci-spec refused a value while building the spec.
    #[error(transparent)]
    Oci(#[from] oci_spec::OciSpecError),
}

/// The capability list of a container: defaults, plus `cap_add`, minus `cap_drop`.
pub fn capabilities(config: &ContainerConfig) -> Result<Vec<String>, SpecError> {
    if config.privileged {
        return Ok(all_caps());
    }
    let adds: Vec<String> = config.cap_add.iter().map(|c| cap_name(c)).collect();
    let drops: Vec<String> = config.cap_drop.iter().map(|c| cap_name(c)).collect();
    let known = caps::all();
    for c in adds.iter().chain(&drops) {
        if c != "ALL" && !known.iter().any(|k| k.to_string() == *c) {
            return Err(SpecError::Invalid(format!("unknown capability {c:?}")));
        }
    }
    let mut set: Vec<String> = if adds.iter().any(|c| c == "ALL") {
        all_caps()
    } else {
        DEFAULT_CAPS.iter().map(|s| (*s).to_string()).collect()
    };
    for a in adds.iter().filter(|a| *a != "ALL") {
        if !set.contains(a) {
            set.push(a.clone());
        }
    }
    if drops.iter().any(|c| c == "ALL") {
        set.retain(|c| adds.contains(c));
    } else {
        set.retain(|c| !drops.contains(c));
    }
    Ok(set)
}

/// Combines entrypoint and command as Docker does: an entrypoint given on the container
/// resets the image's command.
pub fn command(config: &ContainerConfig, image: Option<&oci_spec::image::Config>) -> Vec<String> {
    let img_ep = image
        .and_then(|i| i.entrypoint().clone())
        .unwrap_or_default();
    let img_cmd = image.and_then(|i| i.cmd().clone()).unwrap_or_default();
    let ep = config.entrypoint.clone().unwrap_or(img_ep);
    let cmd = match (&config.entrypoint, &config.command) {
        (_, Some(c)) => c.clone(),
        (Some(_), None) => Vec::new(),
        (None, None) => img_cmd,
    };
    ep.into_iter().chain(cmd).collect()
}

/// The environment: the image's, then the container's (same key replaces), plus PATH,
/// HOSTNAME, HOME and TERM defaults.
#[must_use]
pub fn environment(
    config: &ContainerConfig,
    image: Option<&oci_spec::image::Config>,
    hostname: &str,
    home: &str,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        if let Some(e) = env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            *e = kv;
        } else {
            env.push(kv);
        }
    };
    set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string());
    set(format!("HOSTNAME={hostname}"));
    if config.tty {
        set("TERM=xterm".to_string());
    }
    for e in image.and_then(|i| i.env().clone()).unwrap_or_default() {
        set(e);
    }
    for e in &config.env {
        let kv = if e.contains('=') {
            e.clone()
        } else {
            // `-e NAME` takes the value from tug's environment, or is dropped.
            match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            }
        };
        set(kv);
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    env
}

fn rlimit_type(name: &str) -> Option<PosixRlimitType> {
    Some(match name {
        "core" => PosixRlimitType::RlimitCore,
        "cpu" => PosixRlimitType::RlimitCpu,
        "data" => PosixRlimitType::RlimitData,
        "fsize" => PosixRlimitType::RlimitFsize,
        "locks" => PosixRlimitType::RlimitLocks,
        "memlock" => PosixRlimitType::RlimitMemlock,
        "msgqueue" => PosixRlimitType::RlimitMsgqueue,
        "nice" => PosixRlimitType::RlimitNice,
        "nofile" => PosixRlimitType::RlimitNofile,
        "nproc" => PosixRlimitType::RlimitNproc,
        "rss" => PosixRlimitType::RlimitRss,
        "rtprio" => PosixRlimitType::RlimitRtprio,
        "rttime" => PosixRlimitType::RlimitRttime,
        "sigpending" => PosixRlimitType::RlimitSigpending,
        "stack" => PosixRlimitType::RlimitStack,
        "as" => PosixRlimitType::RlimitAs,
        _ => return None,
    })
}

fn mnt(dest: &str, typ: &str, source: &str, opts: &[&str]) -> OciMount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(opts.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
        .build()
        .unwrap_or_default()
}

fn dev_rule(typ: &str, major: Option<i64>, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
    let t = match typ {
        "c" => LinuxDeviceType::C,
        "b" => LinuxDeviceType::B,
        _ => LinuxDeviceType::A,
    };
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(t)
        .access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().unwrap_or_default()
}

/// Docker's device cgroup allowlist (everything else denied).
#[must_use]
pub fn device_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    let mut deny = LinuxDeviceCgroupBuilder::default()
        .allow(privileged)
        .access("rwm")
        .build()
        .unwrap_or_default();
    deny.set_typ(Some(LinuxDeviceType::A));
    if privileged {
        return vec![deny];
    }
    vec![
        deny,
        dev_rule("c", None, None, "m"),
        dev_rule("b", None, None, "m"),
        dev_rule("c", Some(1), Some(3), "rwm"),
        dev_rule("c", Some(1), Some(5), "rwm"),
        dev_rule("c", Some(1), Some(7), "rwm"),
        dev_rule("c", Some(1), Some(8), "rwm"),
        dev_rule("c", Some(1), Some(9), "rwm"),
        dev_rule("c", Some(5), Some(0), "rwm"),
        dev_rule("c", Some(5), Some(1), "rwm"),
        dev_rule("c", Some(5), Some(2), "rwm"),
        dev_rule("c", Some(136), None, "rwm"),
        dev_rule("c", Some(10), Some(200), "rwm"),
    ]
}

/// Builds the runtime spec, section by section in Docker's order: the process, the mounts,
/// the kernel's side (namespaces, cgroup resources, masked paths, seccomp, sysctls).
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let c = input.config;
    let hostname = c
        .hostname
        .clone()
        .unwrap_or_else(|| input.id.chars().take(12).collect());
    let (process, seccomp_opt, cap_names) = process(input, &hostname)?;
    let mounts = mounts(input)?;
    let linux = linux(input, &cap_names, seccomp_opt.as_deref())?;
    let mut annotations = HashMap::new();
    annotations.insert("tug.id".to_string(), input.id.to_string());
    if c.init {
        annotations.insert("tug.init".to_string(), "true".to_string());
    }
    let mut sb = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(c.read_only)
                .build()?,
        )
        .mounts(mounts)
        .process(process)
        .hostname(hostname)
        .linux(linux)
        .annotations(annotations);
    if let Some(d) = &c.domainname {
        sb = sb.domainname(d.clone());
    }
    Ok(sb.build()?)
}

/// The container's process: command, environment, working directory, user, capabilities,
/// rlimits, `no-new-privileges`; with the `seccomp=` security option and the capability
/// names (which the default seccomp profile depends on).
fn process(
    input: &SpecInput<'_>,
    hostname: &str,
) -> Result<(Process, Option<String>, Vec<String>), SpecError> {
    let c = input.config;
    let args = command(c, input.image);
    if args.is_empty() {
        return Err(SpecError::Invalid("no command specified".to_string()));
    }
    let env = environment(c, input.image, hostname, &input.user.home);
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| input.image.and_then(|i| i.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(SpecError::Invalid(format!(
            "working directory {cwd:?} is not an absolute path"
        )));
    }
    let cap_names = capabilities(c)?;
    let capset: oci_spec::runtime::Capabilities = cap_names
        .iter()
        .filter_map(|n| n.trim_start_matches("CAP_").parse::<Capability>().ok())
        .collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capset.clone())
        .effective(capset.clone())
        .permitted(capset)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()?;
    let mut rlimits = Vec::new();
    for (name, u) in &c.ulimits {
        let typ = rlimit_type(name)
            .ok_or_else(|| SpecError::Invalid(format!("unknown ulimit {name:?}")))?;
        if u.soft > u.hard {
            return Err(SpecError::Invalid(format!(
                "ulimit {name}: soft limit {} exceeds hard limit {}",
                u.soft, u.hard
            )));
        }
        rlimits.push(
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(u.soft)
                .hard(u.hard)
                .build()?,
        );
    }
    let mut nnp = false;
    let mut seccomp_opt: Option<String> = None;
    for o in &c.security_opt {
        let (k, v) = o.split_once(['=', ':']).unwrap_or((o.as_str(), "true"));
        match k {
            "no-new-privileges" => nnp = v != "false",
            "seccomp" => seccomp_opt = Some(v.to_string()),
            "label" | "apparmor" => {}
            _ => return Err(SpecError::Invalid(format!("unknown security option {o:?}"))),
        }
    }
    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.groups.clone())
        .build()?;
    let pb = ProcessBuilder::default()
        .terminal(c.tty)
        .user(user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(nnp)
        // Only the limits asked for (oci-spec's default would be 1024 open files); the rest
        // are the engine's own, the open-files soft limit raised to its hard limit (see
        // `runtime::process::apply_rlimits`), as Docker's containers inherit dockerd's.
        .rlimits(rlimits);
    Ok((pb.build()?, seccomp_opt, cap_names))
}

/// The container's mounts: Docker's fixed ones (`/proc`, `/dev`, `/sys`, cgroups, shm, the
/// `resolv.conf`/`hostname`/`hosts` files of its state directory), then its own, parents
/// before children.
fn mounts(input: &SpecInput<'_>) -> Result<Vec<OciMount>, SpecError> {
    let c = input.config;
    let shm = c.resources.shm_size.unwrap_or(64 << 20);
    let shm_opt = format!("size={}k", shm.div_ceil(1024).max(1));
    let sys_opts: &[&str] = if c.privileged {
        &["nosuid", "noexec", "nodev", "rw"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let cgroup_opts: &[&str] = if c.privileged {
        &["nosuid", "noexec", "nodev", "relatime", "rw"]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"]
    };
    let dir = |f: &str| input.state_dir.join(f).display().to_string();
    let mut mounts = vec![
        mnt("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mnt(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mnt(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mnt("/sys", "sysfs", "sysfs", sys_opts),
        // The container's own cgroups (read-only unless privileged), seen through its cgroup
        // namespace; the runtime expands this for the machine's layout.
        mnt("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_opts),
        mnt(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mnt(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_opt],
        ),
        mnt(
            "/etc/resolv.conf",
            "bind",
            &dir("resolv.conf"),
            &["rbind", "rprivate"],
        ),
        mnt(
            "/etc/hostname",
            "bind",
            &dir("hostname"),
            &["rbind", "rprivate"],
        ),
        mnt("/etc/hosts", "bind", &dir("hosts"), &["rbind", "rprivate"]),
    ];
    for m in &c.mounts {
        mounts.push(user_mount(m)?);
    }
    // Mount parents before children.
    let fixed = 10;
    mounts[fixed..].sort_by_key(|m| m.destination().components().count());
    Ok(mounts)
}

/// One of the container's own mounts (bind, volume, tmpfs); a target that is not absolute, is
/// the root, or a bind source that does not exist is refused.
fn user_mount(m: &super::config::Mount) -> Result<OciMount, SpecError> {
    if !m.target.starts_with('/') {
        return Err(SpecError::Invalid(format!(
            "mount target {:?} is not an absolute path",
            m.target
        )));
    }
    // A mount over the container's root filesystem: Docker refuses it with these words.
    if crate::engine::runtime::inroot::components(Path::new(&m.target))
        .is_some_and(|c| c.is_empty())
    {
        let kind = match m.kind {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        };
        return Err(SpecError::Invalid(format!(
            "invalid mount config for type \"{kind}\": invalid specification: destination can't be '/' ({}:{})",
            m.source.display(),
            m.target
        )));
    }
    let mut opts: Vec<String> = Vec::new();
    match m.kind {
        MountKind::Bind | MountKind::Volume => {
            if !m.source.exists() {
                return Err(SpecError::Invalid(format!(
                    "bind source {} does not exist",
                    m.source.display()
                )));
            }
            opts.push("rbind".into());
            if m.read_only {
                opts.push("ro".into());
            }
            if !m
                .options
                .iter()
                .any(|o| o.contains("private") || o.contains("slave") || o.contains("shared"))
            {
                opts.push("rprivate".into());
            }
            opts.extend(m.options.iter().cloned());
            Ok(MountBuilder::default()
                .destination(&m.target)
                .typ("bind")
                .source(&m.source)
                .options(opts)
                .build()?)
        }
        MountKind::Tmpfs => {
            opts.extend(["nosuid".into(), "nodev".into(), "noexec".into()]);
            if m.read_only {
                opts.push("ro".into());
            }
            opts.extend(m.options.iter().cloned());
            Ok(MountBuilder::default()
                .destination(&m.target)
                .typ("tmpfs")
                .source("tmpfs")
                .options(opts)
                .build()?)
        }
    }
}

/// The kernel's side: namespaces, cgroup path and resources, devices, and unless privileged
/// the masked and read-only paths and the seccomp profile; sysctls.
fn linux(
    input: &SpecInput<'_>,
    cap_names: &[String],
    seccomp_opt: Option<&str>,
) -> Result<Linux, SpecError> {
    let c = input.config;
    let mut lb = LinuxBuilder::default()
        .namespaces(namespaces(input)?)
        .cgroups_path(cgroup_path(input.id))
        .resources(resources(&c.resources, c.privileged)?)
        .devices(crate::engine::runtime::rootfs::default_devices());
    if !c.privileged {
        lb = lb
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|s| (*s).to_string())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|s| (*s).to_string())
                    .collect::<Vec<_>>(),
            );
        match seccomp_opt {
            Some("unconfined") => {}
            Some(path) => {
                lb = lb.seccomp(
                    seccomp::load_profile(Path::new(path))
                        .map_err(|e| SpecError::Invalid(e.to_string()))?,
                );
            }
            None => lb = lb.seccomp(seccomp::default_profile(cap_names)),
        }
    }
    if !c.sysctls.is_empty() {
        let m: HashMap<String, String> = c.sysctls.clone().into_iter().collect();
        lb = lb.sysctl(m);
    }
    Ok(lb.build()?)
}

/// New namespaces (pid, ipc, uts, mount, cgroup) and the network's: none (a new one), host
/// (none made), a prepared one or another container's.
fn namespaces(input: &SpecInput<'_>) -> Result<Vec<LinuxNamespace>, SpecError> {
    let c = input.config;
    let mut namespaces = vec![];
    for t in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        // Docker's default on cgroup v2 (`cgroupns=private`), here on every layout: the
        // container sees its own cgroup as the root, never the host's tree.
        LinuxNamespaceType::Cgroup,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(t).build()?);
    }
    let net_path = match &c.network {
        NetworkMode::None => Some(None),
        NetworkMode::Host => None,
        NetworkMode::Netns(p) => Some(Some(p.clone())),
        NetworkMode::Container(other) => {
            Some(Some(input.joined_netns.clone().ok_or_else(|| {
                SpecError::Invalid(format!(
                    "container {other} of network mode container:{other} is not running"
                ))
            })?))
        }
    };
    if let Some(p) = net_path {
        let mut b = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
        if let Some(p) = p {
            b = b.path(p);
        }
        namespaces.push(b.build()?);
    }
    Ok(namespaces)
}

/// cgroup resources: the device allowlist, memory, CPU, pids.
fn resources(r: &super::config::Resources, privileged: bool) -> Result<LinuxResources, SpecError> {
    let mut rb = LinuxResourcesBuilder::default().devices(device_rules(privileged));
    if r.memory.is_some() || r.memswap.is_some() {
        let mut mb = LinuxMemoryBuilder::default();
        if let Some(m) = r.memory {
            mb = mb.limit(m);
        }
        if let Some(s) = r.memswap {
            mb = mb.swap(s);
        }
        rb = rb.memory(mb.build()?);
    }
    if r.cpus.is_some() || r.cpu_shares.is_some() || r.cpuset.is_some() {
        let mut cb = LinuxCpuBuilder::default();
        if let Some(cpus) = r.cpus {
            if !(cpus > 0.0 && cpus.is_finite()) {
                return Err(SpecError::Invalid(format!("invalid cpus {cpus}")));
            }
            cb = cb.period(100_000_u64).quota((cpus * 100_000.0) as i64);
        }
        if let Some(s) = r.cpu_shares {
            cb = cb.shares(s);
        }
        if let Some(s) = &r.cpuset {
            cb = cb.cpus(s.clone());
        }
        rb = rb.cpu(cb.build()?);
    }
    if let Some(p) = r.pids_limit {
        rb = rb.pids(LinuxPidsBuilder::default().limit(p).build()?);
    }
    Ok(rb.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> ExecUser {
        ExecUser {
            uid: 0,
            gid: 0,
            groups: vec![],
            home: "/root".into(),
        }
    }

    #[test]
    fn container_spec_command_combination() {
        let img = oci_spec::image::ConfigBuilder::default()
            .entrypoint(vec!["/ep".to_string()])
            .cmd(vec!["a".to_string()])
            .build()
            .unwrap();
        let mut c = ContainerConfig::default();
        assert_eq!(command(&c, Some(&img)), vec!["/ep", "a"]);
        c.command = Some(vec!["b".into()]);
        assert_eq!(command(&c, Some(&img)), vec!["/ep", "b"]);
        c.command = None;
        c.entrypoint = Some(vec!["/other".into()]);
        assert_eq!(command(&c, Some(&img)), vec!["/other"]);
    }

    #[test]
    fn container_spec_caps_add_drop() {
        let mut c = ContainerConfig {
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["CAP_CHOWN".into()],
            ..Default::default()
        };
        let caps = capabilities(&c).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(caps.len(), 14);
        c.cap_add = vec!["NOPE".into()];
        assert!(capabilities(&c).is_err());
        c.cap_add = vec!["KILL".into()];
        c.cap_drop = vec!["ALL".into()];
        assert_eq!(capabilities(&c).unwrap(), vec!["CAP_KILL".to_string()]);
    }

    #[test]
    fn container_spec_defaults() {
        let c = ContainerConfig {
            command: Some(vec!["true".into()]),
            env: vec!["A=1".into()],
            read_only: true,
            ..Default::default()
        };
        let spec = build(&SpecInput {
            id: "0123456789abcdef",
            config: &c,
            image: None,
            user: &user(),
            state_dir: Path::new("/s"),
            joined_netns: None,
        })
        .unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        let p = spec.process().as_ref().unwrap();
        assert!(p.env().as_ref().unwrap().contains(&"A=1".to_string()));
        let l = spec.linux().as_ref().unwrap();
        assert!(l.seccomp().is_some());
        assert!(
            l.masked_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/kcore".to_string())
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        // No resource limit unless asked for (not oci-spec's 1024 open files).
        assert_eq!(p.rlimits().as_deref(), Some(&[][..]));
        let ns = l.namespaces().as_ref().unwrap();
        assert_eq!(ns.len(), 6);
        assert!(
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none())
        );
        // The cgroup view: one `cgroup` mount at /sys/fs/cgroup, read-only, after /sys.
        let mounts = spec.mounts().as_ref().unwrap();
        let at = |d: &str| {
            mounts
                .iter()
                .position(|m| m.destination() == Path::new(d))
                .unwrap()
        };
        let cg = &mounts[at("/sys/fs/cgroup")];
        assert_eq!(cg.typ().as_deref(), Some("cgroup"));
        assert!(cg.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert!(at("/sys") < at("/sys/fs/cgroup"));
        let bad = ContainerConfig {
            working_dir: Some("rel".into()),
            command: Some(vec!["x".into()]),
            ..Default::default()
        };
        assert!(
            build(&SpecInput {
                id: "x",
                config: &bad,
                image: None,
                user: &user(),
                state_dir: Path::new("/s"),
                joined_netns: None,
            })
            .is_err()
        );
    }
}
