//! Named volumes and the resolution of compose volume entries into mounts.
//!
//! A named volume is a directory the engine owns, `<root>/volumes/<name>/_data`, bind-mounted
//! into containers. Its record `<root>/volumes/<name>/volume.json` holds labels, driver
//! options and whether it was *initialised*. The `local` driver's options make `_data` itself
//! a mount point, mounted when the volume is first used and unmounted when it is removed:
//! `type: none, o: bind, device: /path` (a bind mount of a host directory) or
//! `type: tmpfs, o: size=64m` (any other `type` with `device` is passed to mount(2) as is).
//!
//! **Copy-up.** Like Docker, the first time a new empty volume is mounted over a path that the
//! image has content at, that content (files, links, modes, owners) is copied into the volume,
//! so e.g. a database image's initial data directory appears in it.
//!
//! **Ownership.** When the image runs as a non-root `USER` and the path does not exist in the
//! image (nothing to copy the owner from), Docker leaves `_data` owned by root and the
//! service cannot write to its own volume. tug instead gives the empty, new `_data` to that
//! user and group. A directory that did exist in the image keeps the image's owner and mode.
//!
//! Volumes are never removed by anything but `volume rm`, `volume prune` and `down -v`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, ResolveFlag, openat};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat, mkdirat, mknodat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::engine::runtime::inroot::Root;
use serde::{Deserialize, Serialize};

/// Errors of the volume store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("volume {0} not found")]
    NotFound(String),
    #[error(
        "volume {0} is declared external but does not exist (create it with `tug volume create {0}`)"
    )]
    ExternalMissing(String),
    #[error("volume {0} already exists")]
    Exists(String),
    #[error("volume {name} is in use by {by}")]
    InUse { name: String, by: String },
    #[error("state file {0}: {1}")]
    State(String, String),
}

/// Result of the volume store.
pub type Result<T> = std::result::Result<T, Error>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let w = what.into();
    move |e| Error::Io(w, e)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::util::fs::write_atomic(
        path,
        bytes,
        crate::engine::private::FILE_MODE,
        crate::util::fs::Durability::FileAndDir,
    )
    .map_err(io(format!("write {}", path.display())))
}

/// Names this process (pid and start time, so a reused pid is not taken for it) plus a
/// counter, for the staging names of this store: `<pid>.<start>.<n>`.
fn owner_tag() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let start = i32::try_from(pid)
        .ok()
        .and_then(crate::engine::proc::start_time)
        .unwrap_or(0);
    format!("{pid}.{start}.{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Whether the process named by a staging name's tail (`<pid>.<start>.<n>`, see
/// [`owner_tag`]) still runs. An unparsable tail counts as gone.
fn owner_alive(tail: &str) -> bool {
    let mut parts = tail.rsplitn(3, '.');
    let (_, start, pid) = (parts.next(), parts.next(), parts.next());
    let pid = pid
        .and_then(|p| p.rsplit('-').next())
        .and_then(|p| p.parse::<i32>().ok());
    let start = start
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s != 0);
    crate::engine::proc::alive(pid, start)
}

/// What a volume should be (compose's top-level `volumes:` entry or `volume create`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub name: String,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A volume as it exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub driver_opts: BTreeMap<String, String>,
    pub created: String,
    /// True once the first container used it (copy-up and ownership done).
    #[serde(default)]
    pub initialized: bool,
}

/// How a volume is being mounted the first time: for copy-up and ownership.
#[derive(Debug, Clone, Default)]
pub struct Prepare {
    /// The image's unpacked layers, lowest first.
    pub layers: Vec<PathBuf>,
    /// Mount target inside the container (absolute).
    pub target: String,
    /// `volume.nocopy`.
    pub nocopy: bool,
    /// The image user's uid/gid (numeric, resolved by the caller).
    pub uid: u32,
    pub gid: u32,
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid volume name {name:?}: use letters, digits, '_', '-', '.' (starting with a letter or digit)"
        )))
    }
}

/// The volume store of one state root.
#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
}

impl Volumes {
    /// Opens `<root>/volumes` (created on demand).
    pub fn open(root: &Path) -> Result<Self> {
        let root = crate::engine::root::StateRoot::at(root)
            .map_err(io(format!("resolve {}", root.display())))?;
        Self::open_in(&root)
    }

    /// The volumes of an opened state root.
    ///
    /// # Errors
    /// The store's directory cannot be made.
    pub fn open_in(root: &crate::engine::root::StateRoot) -> Result<Self> {
        let dir = root.volumes();
        crate::engine::private::create_dir_all(&dir)
            .map_err(io(format!("create {}", dir.display())))?;
        Ok(Self {
            root: root.path().to_path_buf(),
        })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// `<root>/volumes/<name>/_data`.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir(name).join("_data")
    }

    fn load(&self, name: &str) -> Result<Option<VolumeInfo>> {
        validate_name(name)?;
        let p = self.dir(name).join("volume.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::State(
                    p.display().to_string(),
                    format!(
                        "damaged ({e}); restore it, or remove the volume and its data with \
                         `tug volume rm {name}`"
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(format!("read {}", p.display()), e)),
        }
    }

    fn save(&self, v: &VolumeInfo) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(v)
            .map_err(|e| Error::State(v.name.clone(), e.to_string()))?;
        write_atomic(&self.dir(&v.name).join("volume.json"), &bytes)
    }

    /// One volume.
    pub fn inspect(&self, name: &str) -> Result<VolumeInfo> {
        self.load(name)?
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// True when the volume exists.
    pub fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.load(name)?.is_some())
    }

    /// Every volume with a readable record, by name. A volume whose record is damaged is
    /// left out (and reported by [`Volumes::damaged`]; using it fails naming the file), so
    /// one damaged volume never stops work on the others. What creates and removals killed
    /// half-way left behind is deleted on the way (see [`Volumes::repair`]).
    pub fn list(&self) -> Result<Vec<VolumeInfo>> {
        self.repair();
        let dir = self.root.join("volumes");
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&dir)
            .map_err(io(format!("read {}", dir.display())))?
            .flatten()
        {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || validate_name(&name).is_err() {
                continue;
            }
            if let Ok(Some(v)) = self.load(&name) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The volumes that cannot be used: (name, what is wrong and what to do).
    pub fn damaged(&self) -> Vec<(String, String)> {
        let dir = self.root.join("volumes");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || validate_name(&name).is_err() {
                continue;
            }
            match self.load(&name) {
                Ok(Some(_)) => {}
                Ok(None) => out.push((
                    name.clone(),
                    format!(
                        "{} has no record volume.json; move its _data away if you need it, \
                         then delete the directory",
                        self.dir(&name).display()
                    ),
                )),
                Err(e) => out.push((name, e.to_string())),
            }
        }
        out.sort();
        out
    }

    /// Takes the store's lock, which orders the moments a volume appears or disappears
    /// (the rename of a new volume into place, the repair of leftovers) and nothing else.
    fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let path = self.root.join("volumes/.lock");
        let f = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::Io(format!("lock {}", path.display()), e.into()))
    }

    /// Deletes what is provably abandoned, under the store's lock: a staging directory of a
    /// create or removal (`.creating-…`, `.removing-…`) whose process is gone, and a volume
    /// directory without a record and without data (left by an older tug whose create was
    /// killed: a create now renames a complete volume into place, so no live command makes
    /// such a directory). A record-less directory that holds data is kept (see
    /// [`Volumes::damaged`]); nothing is deleted through a mount.
    pub fn repair(&self) {
        let dir = self.root.join("volumes");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut leftovers = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if let Some(tail) = name
                .strip_prefix(".creating-")
                .or_else(|| name.strip_prefix(".removing-"))
            {
                if !owner_alive(tail) {
                    leftovers.push(ent.path());
                }
            } else if !name.starts_with('.')
                && validate_name(&name).is_ok()
                && !ent.path().join("volume.json").exists()
            {
                leftovers.push(ent.path());
            }
        }
        if leftovers.is_empty() {
            return;
        }
        let Ok(_lock) = self.lock() else { return };
        for path in leftovers {
            let data = path.join("_data");
            let staging = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            // Checked again under the lock: a create may have renamed a volume into place.
            let abandoned = path.exists()
                && (staging
                    || (!path.join("volume.json").exists()
                        && (!data.exists() || is_empty(&data).unwrap_or(false))));
            if abandoned && !is_mount_point(&data).unwrap_or(true) {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }

    /// Creates a volume; an existing one is an error. The volume is made complete (data
    /// directory and record) in a staging directory of this process and renamed into place,
    /// so a volume directory always has its record and two commands creating the same name
    /// cannot both succeed.
    pub fn create(&self, spec: &VolumeSpec) -> Result<VolumeInfo> {
        validate_name(&spec.name)?;
        if self.load(&spec.name)?.is_some() {
            return Err(Error::Exists(spec.name.clone()));
        }
        let driver = spec.driver.clone().unwrap_or_else(|| "local".into());
        if driver != "local" {
            return Err(Error::Unsupported(format!(
                "volume {}: driver {driver:?} is not supported (only local)",
                spec.name
            )));
        }
        check_opts(&spec.name, &spec.driver_opts)?;
        let info = VolumeInfo {
            name: spec.name.clone(),
            driver,
            mountpoint: self.mountpoint(&spec.name),
            labels: spec.labels.clone(),
            driver_opts: spec.driver_opts.clone(),
            created: jiff::Timestamp::now().to_string(),
            initialized: false,
        };
        let staging =
            self.root
                .join("volumes")
                .join(format!(".creating-{}-{}", spec.name, owner_tag()));
        let result = self.create_in(&staging, &info);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result.map(|()| info)
    }

    fn create_in(&self, staging: &Path, info: &VolumeInfo) -> Result<()> {
        // The volume's directory is private (`0700`); `_data` gets the mode the container
        // sees at the mount target (left to the umask, changed by copy-up or ownership).
        crate::engine::private::create_dir_all(staging)
            .map_err(io(format!("create {}", staging.display())))?;
        let data = staging.join("_data");
        std::fs::create_dir(&data).map_err(io(format!("create {}", data.display())))?;
        let bytes = serde_json::to_vec_pretty(info)
            .map_err(|e| Error::State(info.name.clone(), e.to_string()))?;
        write_atomic(&staging.join("volume.json"), &bytes)?;
        let dir = self.dir(&info.name);
        let _lock = self.lock()?;
        match std::fs::rename(staging, &dir) {
            Ok(()) => Ok(()),
            // rename(2) replaces only an empty directory: a non-empty one is a volume.
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST))
                    || e.kind() == std::io::ErrorKind::DirectoryNotEmpty =>
            {
                if self.load(&info.name)?.is_some() {
                    Err(Error::Exists(info.name.clone()))
                } else {
                    Err(Error::State(
                        dir.display().to_string(),
                        "a directory without the record volume.json is in the way; move its \
                         _data away if you need it, then delete the directory"
                            .into(),
                    ))
                }
            }
            Err(e) => Err(Error::Io(format!("rename into {}", dir.display()), e)),
        }
    }

    /// The volume, created if missing (compose's "created on first use"); a volume another
    /// command creates at the same moment is taken as it is.
    pub fn ensure(&self, spec: &VolumeSpec) -> Result<VolumeInfo> {
        match self.load(&spec.name)? {
            Some(v) => Ok(v),
            None => match self.create(spec) {
                Err(Error::Exists(_)) => self.inspect(&spec.name),
                other => other,
            },
        }
    }

    /// An `external: true` volume: it must exist.
    pub fn require_external(&self, name: &str) -> Result<VolumeInfo> {
        self.load(name)?
            .ok_or_else(|| Error::ExternalMissing(name.to_string()))
    }

    /// A new anonymous volume (random name, label `tug.anonymous=true`).
    pub fn create_anonymous(&self, labels: BTreeMap<String, String>) -> Result<VolumeInfo> {
        let mut labels = labels;
        labels.insert("tug.anonymous".into(), "true".into());
        self.create(&VolumeSpec {
            name: hex::encode(rand::random::<[u8; 32]>()),
            driver: None,
            driver_opts: BTreeMap::new(),
            labels,
        })
    }

    /// Makes the volume ready for a container and returns the host path to bind: mounts the
    /// driver's filesystem, and on first use copies the image's content up and fixes the
    /// ownership (see the module docs).
    pub fn prepare(&self, name: &str, how: &Prepare) -> Result<PathBuf> {
        let mut info = self.inspect(name)?;
        let data = self.mountpoint(name);
        // Only `_data` itself: a volume removed meanwhile is not made again without a record.
        match std::fs::create_dir(&data) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Io(format!("create {}", data.display()), e));
            }
            _ => {}
        }
        self.mount_driver(&info)?;
        if !info.initialized {
            let empty = is_empty(&data)?;
            let mut copied = false;
            if empty && !how.nocopy && !how.layers.is_empty() {
                copied = copy_up(&how.layers, &how.target, &data)?;
            }
            if empty && !copied && how.uid != 0 {
                nix::unistd::chown(
                    &data,
                    Some(nix::unistd::Uid::from_raw(how.uid)),
                    Some(nix::unistd::Gid::from_raw(how.gid)),
                )
                .map_err(|e| Error::Io(format!("chown {}", data.display()), e.into()))?;
            }
            info.initialized = true;
            self.save(&info)?;
        }
        Ok(data)
    }

    fn mount_driver(&self, info: &VolumeInfo) -> Result<()> {
        let Some(ty) = info.driver_opts.get("type") else {
            return Ok(());
        };
        let data = self.mountpoint(&info.name);
        if is_mount_point(&data)? {
            return Ok(());
        }
        let o = info.driver_opts.get("o").cloned().unwrap_or_default();
        let device = info.driver_opts.get("device").cloned();
        let (mut flags, data_opts) = mount_flags(&o);
        let is_bind = o.split(',').any(|x| x == "bind" || x == "rbind");
        let (src, fstype): (String, Option<String>) = if is_bind {
            let dev = device.ok_or_else(|| {
                Error::Invalid(format!(
                    "volume {}: o=bind needs a device (a host path)",
                    info.name
                ))
            })?;
            if !Path::new(&dev).is_dir() {
                return Err(Error::Invalid(format!(
                    "volume {}: bind device {dev} is not a directory",
                    info.name
                )));
            }
            flags |= MsFlags::MS_BIND;
            if o.split(',').any(|x| x == "rbind") {
                flags |= MsFlags::MS_REC;
            }
            (dev, None)
        } else if ty == "tmpfs" {
            (
                device.unwrap_or_else(|| "tmpfs".into()),
                Some("tmpfs".into()),
            )
        } else {
            let dev = device.ok_or_else(|| {
                Error::Invalid(format!("volume {}: type {ty} needs a device", info.name))
            })?;
            (dev, Some(ty.clone()))
        };
        let d = (!data_opts.is_empty()).then(|| data_opts.join(","));
        nix::mount::mount(
            Some(src.as_str()),
            &data,
            fstype.as_deref(),
            flags,
            d.as_deref(),
        )
        .map_err(|e| Error::Io(format!("mount volume {} ({src})", info.name), e.into()))
    }

    fn unmount(&self, name: &str) -> Result<()> {
        let data = self.mountpoint(name);
        for _ in 0..8 {
            if !is_mount_point(&data)? {
                break;
            }
            nix::mount::umount2(&data, MntFlags::MNT_DETACH)
                .map_err(|e| Error::Io(format!("unmount {}", data.display()), e.into()))?;
        }
        // Never delete through a mount (a bind volume's device is the user's data).
        if is_mount_point(&data)? {
            return Err(Error::Io(
                format!("unmount {}", data.display()),
                std::io::Error::other("still mounted"),
            ));
        }
        Ok(())
    }

    /// Removes a volume and its data. `in_use` lists the containers using it (from the
    /// caller's container records); a used volume is kept.
    pub fn remove(&self, name: &str, in_use: &[String]) -> Result<()> {
        match self.inspect(name) {
            // A damaged record does not keep its volume from being removed.
            Ok(_) | Err(Error::State(..)) => {}
            Err(e) => return Err(e),
        }
        if !in_use.is_empty() {
            return Err(Error::InUse {
                name: name.to_string(),
                by: in_use.join(", "),
            });
        }
        self.unmount(name)?;
        // One rename makes the volume gone; a removal killed after it leaves a staging
        // directory that the next listing deletes.
        let dir = self.dir(name);
        let trash = self
            .root
            .join("volumes")
            .join(format!(".removing-{name}-{}", owner_tag()));
        std::fs::rename(&dir, &trash).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(name.to_string())
            } else {
                Error::Io(format!("remove {}", dir.display()), e)
            }
        })?;
        std::fs::remove_dir_all(&trash).map_err(io(format!("remove {}", trash.display())))
    }

    /// Removes unused volumes: anonymous ones, or all with `all`. Returns their names.
    pub fn prune(&self, in_use: &BTreeSet<String>, all: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for v in self.list()? {
            let anon = v.labels.get("tug.anonymous").map(String::as_str) == Some("true");
            if in_use.contains(&v.name) || !(all || anon) {
                continue;
            }
            self.remove(&v.name, &[])?;
            out.push(v.name);
        }
        Ok(out)
    }

    /// Names of the volumes that container records under `<root>/containers` refer to (any
    /// JSON file there that names the volume's `_data` path).
    pub fn referenced_by_containers(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let dir = self.root.join("containers");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        let vols = self.list()?;
        for ent in rd.flatten() {
            // Dot entries are the store's own (`.names`, the `.trash-…` of a container being
            // removed, whose anonymous volumes are being deleted right now): no container.
            if ent.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(files) = std::fs::read_dir(ent.path()) else {
                continue;
            };
            let mut text = String::new();
            for f in files.flatten() {
                if f.path().extension().and_then(|e| e.to_str()) == Some("json")
                    && let Ok(t) = std::fs::read_to_string(f.path())
                {
                    text.push_str(&t);
                }
            }
            for v in &vols {
                let needle = format!("{}", v.mountpoint.display());
                if text.contains(&needle) {
                    out.entry(v.name.clone())
                        .or_default()
                        .push(ent.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Ok(out)
    }
}

fn check_opts(name: &str, opts: &BTreeMap<String, String>) -> Result<()> {
    for k in opts.keys() {
        if !matches!(k.as_str(), "type" | "o" | "device") {
            return Err(Error::Unsupported(format!(
                "volume {name}: driver option {k:?} is not supported (type, o, device)"
            )));
        }
    }
    if opts.contains_key("o") && !opts.contains_key("type") {
        return Err(Error::Invalid(format!(
            "volume {name}: driver option o needs type"
        )));
    }
    Ok(())
}

/// Splits mount options into flags and filesystem data.
fn mount_flags(o: &str) -> (MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in o.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match opt {
            "bind" | "rbind" | "rw" | "defaults" => {}
            "ro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            other => data.push(other.to_string()),
        }
    }
    (flags, data)
}

fn is_empty(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir)
        .map_err(io(format!("read {}", dir.display())))?
        .next()
        .is_none())
}

/// True when `path` is a mount point (listed in this process's mountinfo).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(io("read /proc/self/mountinfo"))?;
    let want = path.to_string_lossy();
    Ok(info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == want)
    }))
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True for an overlayfs whiteout (a 0:0 character device).
fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn cname(name: &OsStr) -> Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| Error::Invalid(format!("bad file name {}", name.to_string_lossy())))
}

fn sys(what: &str, path: &Path) -> impl FnOnce(Errno) -> Error {
    let w = format!("{what} {}", path.display());
    move |e| Error::Io(w, e.into())
}

/// Opens the directory `comps` of `layer` for reading, only if every component is a real
/// directory in that layer (no symlink, nothing outside it): how a layer holds a path.
fn open_layer_dir(layer: &Root, comps: &[OsString]) -> Option<OwnedFd> {
    let mut p = PathBuf::from("/");
    p.extend(comps);
    layer
        .open_in(
            &p,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_XDEV,
        )
        .ok()
}

fn stat_at(dir: &OwnedFd, name: &OsStr) -> Option<FileStat> {
    let n = cname(name).ok()?;
    fstatat(dir.as_fd(), n.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok()
}

/// True when the directory `dir` of a layer is opaque (lower layers do not show under it).
fn is_opaque(dir: &OwnedFd) -> bool {
    if stat_at(dir, OsStr::new(".wh..wh..opq")).is_some() {
        return true;
    }
    let mut buf = [0u8; 4];
    // SAFETY: dir is an open (non-O_PATH) directory; the name is NUL-terminated and the buffer
    // pointer and length describe a valid writable array.
    let r = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    r == 1 && buf[0] == b'y'
}

/// What the merged image has at a name.
enum Found {
    Dir,
    Other,
    Link(OsString),
    Gone,
}

/// Looks `name` up in directory `dir` (symlink-free) of the merged image: the topmost layer
/// that has it, or hides it (whiteout, opaque parent), decides.
fn lookup_merged(layers: &[Root], dir: &[OsString], name: &OsStr) -> Found {
    let wh = {
        let mut w = OsString::from(".wh.");
        w.push(name);
        w
    };
    for layer in layers.iter().rev() {
        let Some(d) = open_layer_dir(layer, dir) else {
            continue;
        };
        if stat_at(&d, &wh).is_some() {
            return Found::Gone;
        }
        if let Some(st) = stat_at(&d, name) {
            return match st.st_mode & libc::S_IFMT {
                _ if is_whiteout(&st) => Found::Gone,
                libc::S_IFDIR => Found::Dir,
                libc::S_IFLNK => cname(name)
                    .ok()
                    .and_then(|n| nix::fcntl::readlinkat(d.as_fd(), n.as_c_str()).ok())
                    .map_or(Found::Gone, Found::Link),
                _ => Found::Other,
            };
        }
        if is_opaque(&d) {
            return Found::Gone;
        }
    }
    Found::Gone
}

/// Resolves the container path `target` in the merged image (the layers, lowest first), with
/// its symlinks followed the way the container would see them — an absolute link or `..`
/// stops at the image's root, never on the host — and returns the symlink-free path of the
/// directory it leads to, or None when the image has no directory there.
fn resolve_in_image(layers: &[Root], target: &str) -> Option<Vec<OsString>> {
    let mut queue: std::collections::VecDeque<OsString> = target
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(OsString::from)
        .collect();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        match lookup_merged(layers, &done, &c) {
            Found::Dir => done.push(c),
            Found::Link(t) => {
                links += 1;
                if links > 40 {
                    return None;
                }
                let t = t.as_bytes();
                if t.first() == Some(&b'/') {
                    done.clear();
                }
                for part in t
                    .split(|&b| b == b'/')
                    .filter(|p| !p.is_empty() && *p != b".")
                    .rev()
                {
                    queue.push_front(OsStr::from_bytes(part).to_os_string());
                }
            }
            Found::Other | Found::Gone => return None,
        }
    }
    Some(done)
}

/// Merges the directory `target` of the image (every layer, lowest first) into `dest`,
/// honouring OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) and overlayfs ones (0:0 devices,
/// `trusted.overlay.opaque`). Returns true when the image has the path as a directory (its
/// owner and mode are applied to `dest`).
///
/// The image is hostile: `target` is resolved in the merged image as the container sees it
/// ([`resolve_in_image`]), each layer's copy is opened without following any symlink, and
/// everything is read and written through directory descriptors with no-follow `*at` calls,
/// so a link in the image never leads the copy to a host file, in either direction.
pub fn copy_up(layers: &[PathBuf], target: &str, dest: &Path) -> Result<bool> {
    let roots: Vec<Root> = layers
        .iter()
        .map(|l| Root::open(l).map_err(sys("open layer", l)))
        .collect::<Result<_>>()?;
    let Some(canon) = resolve_in_image(&roots, target) else {
        return Ok(false);
    };
    if canon.is_empty() {
        return Err(Error::Invalid(format!(
            "volume target {target} is the image's root directory"
        )));
    }
    let dst = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open", dest))?;
    let mut found = false;
    for (layer, path) in roots.iter().zip(layers) {
        // A whiteout of the target or of a directory above it, or an opaque directory above
        // it, hides what lower layers had.
        for i in 0..canon.len() {
            let Some(dir) = open_layer_dir(layer, &canon[..i]) else {
                break;
            };
            let mut wh = OsString::from(".wh.");
            wh.push(&canon[i]);
            let gone = stat_at(&dir, &wh).is_some()
                || stat_at(&dir, &canon[i]).is_some_and(|st| is_whiteout(&st))
                || (i > 0 && is_opaque(&dir));
            if gone {
                clear_dir(&dst, dest)?;
                found = false;
                break;
            }
        }
        let Some(src) = open_layer_dir(layer, &canon) else {
            continue;
        };
        if is_opaque(&src) {
            clear_dir(&dst, dest)?;
        }
        let st = fstat(src.as_fd()).map_err(sys("stat", path))?;
        merge_dir(&src, &dst, dest)?;
        copy_attrs(&dst, &st, dest)?;
        found = true;
    }
    Ok(found)
}

/// The names in the directory `dir` (without `.` and `..`).
fn entries(dir: &OwnedFd, path: &Path) -> Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::openat(
        dir.as_fd(),
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("read", path))?;
    Ok(d.iter()
        .flatten()
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect())
}

/// Removes every entry of the directory `dir` (descriptor-relative, no link followed).
fn clear_dir(dir: &OwnedFd, path: &Path) -> Result<()> {
    for n in entries(dir, path)? {
        remove_at(dir, &n, &path.join(&n))?;
    }
    Ok(())
}

/// Removes `name` in `dir`, a directory with everything under it.
fn remove_at(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<()> {
    let n = cname(name)?;
    let Some(st) = stat_at(dir, name) else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = openat(
            dir.as_fd(),
            n.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", path))?;
        clear_dir(&sub, path)?;
        unlinkat(dir.as_fd(), n.as_c_str(), UnlinkatFlags::RemoveDir).map_err(sys("remove", path))
    } else {
        unlinkat(dir.as_fd(), n.as_c_str(), UnlinkatFlags::NoRemoveDir).map_err(sys("remove", path))
    }
}

/// Gives the object of `fd` the owner and mode of `st`.
fn copy_attrs(fd: &OwnedFd, st: &FileStat, path: &Path) -> Result<()> {
    nix::unistd::fchown(
        fd.as_fd(),
        Some(nix::unistd::Uid::from_raw(st.st_uid)),
        Some(nix::unistd::Gid::from_raw(st.st_gid)),
    )
    .map_err(sys("chown", path))?;
    nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o7777))
        .map_err(sys("chmod", path))
}

/// Copies the entries of the layer directory `src` into `dst` (both descriptors; nothing is
/// resolved by path, no link is followed).
fn merge_dir(src: &OwnedFd, dst: &OwnedFd, dst_path: &Path) -> Result<()> {
    for name in entries(src, dst_path)? {
        let d_path = dst_path.join(&name);
        let bytes = name.as_bytes();
        if bytes == b".wh..wh..opq" {
            continue;
        }
        if let Some(hidden) = bytes.strip_prefix(b".wh.") {
            remove_at(
                dst,
                OsStr::from_bytes(hidden),
                &dst_path.join(OsStr::from_bytes(hidden)),
            )?;
            continue;
        }
        let Some(st) = stat_at(src, &name) else {
            continue;
        };
        if is_whiteout(&st) {
            remove_at(dst, &name, &d_path)?;
            continue;
        }
        let n = cname(&name)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFDIR {
            if stat_at(dst, &name).is_some_and(|m| m.st_mode & libc::S_IFMT != libc::S_IFDIR) {
                remove_at(dst, &name, &d_path)?;
            }
            let dir_flags =
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub_src = openat(src.as_fd(), n.as_c_str(), dir_flags, Mode::empty())
                .map_err(sys("open", &d_path))?;
            match mkdirat(dst.as_fd(), n.as_c_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(sys("create", &d_path)(e)),
            }
            let sub_dst = openat(dst.as_fd(), n.as_c_str(), dir_flags, Mode::empty())
                .map_err(sys("open", &d_path))?;
            if is_opaque(&sub_src) {
                clear_dir(&sub_dst, &d_path)?;
            }
            merge_dir(&sub_src, &sub_dst, &d_path)?;
            copy_attrs(&sub_dst, &st, &d_path)?;
            continue;
        }
        remove_at(dst, &name, &d_path)?;
        let uid = Some(nix::unistd::Uid::from_raw(st.st_uid));
        let gid = Some(nix::unistd::Gid::from_raw(st.st_gid));
        match kind {
            libc::S_IFLNK => {
                let t = nix::fcntl::readlinkat(src.as_fd(), n.as_c_str())
                    .map_err(sys("readlink", &d_path))?;
                nix::unistd::symlinkat(t.as_os_str(), dst.as_fd(), n.as_c_str())
                    .map_err(sys("symlink", &d_path))?;
                nix::unistd::fchownat(
                    dst.as_fd(),
                    n.as_c_str(),
                    uid,
                    gid,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(sys("chown", &d_path))?;
            }
            libc::S_IFREG => {
                let from = openat(
                    src.as_fd(),
                    n.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys("open", &d_path))?;
                let to = openat(
                    dst.as_fd(),
                    n.as_c_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(sys("create", &d_path))?;
                let mut from = std::fs::File::from(from);
                let mut to = std::fs::File::from(to);
                std::io::copy(&mut from, &mut to)
                    .map_err(io(format!("copy {}", d_path.display())))?;
                let to = OwnedFd::from(to);
                copy_attrs(&to, &st, &d_path)?;
            }
            _ => {
                // Devices, fifos and sockets are recreated with mknod.
                let k = nix::sys::stat::SFlag::from_bits_truncate(kind);
                mknodat(
                    dst.as_fd(),
                    n.as_c_str(),
                    k,
                    Mode::from_bits_truncate(st.st_mode & 0o777),
                    st.st_rdev,
                )
                .map_err(sys("mknod", &d_path))?;
                nix::unistd::fchownat(
                    dst.as_fd(),
                    n.as_c_str(),
                    uid,
                    gid,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(sys("chown", &d_path))?;
                nix::sys::stat::fchmodat(
                    dst.as_fd(),
                    n.as_c_str(),
                    Mode::from_bits_truncate(st.st_mode & 0o7777),
                    nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                )
                .map_err(sys("chmod", &d_path))?;
            }
        }
    }
    Ok(())
}

/// One compose volume entry of a service, parsed (short or long syntax).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountRequest {
    pub kind: MountKind,
    /// Volume name, host path (relative to the project dir allowed), or none.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub nocopy: bool,
    /// `bind.create_host_path` (true for the short syntax, as in compose).
    pub create_host_path: bool,
    /// `bind.propagation`.
    pub propagation: Option<String>,
    /// `tmpfs.size` in bytes, `tmpfs.mode`.
    pub tmpfs_size: Option<u64>,
    pub tmpfs_mode: Option<u32>,
}

/// The kind of a mount request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountKind {
    #[default]
    Volume,
    Bind,
    Tmpfs,
}

impl MountRequest {
    /// Parses the short syntax `[SOURCE:]TARGET[:MODE]` (MODE: ro, rw, z, Z, nocopy, and
    /// propagation modes, comma separated).
    pub fn parse_short(spec: &str) -> Result<Self> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [t] => (None, *t, None),
            [s, t] if t.starts_with('/') => (Some(*s), *t, None),
            [t, m] => (None, *t, Some(*m)),
            [s, t, m] => (Some(*s), *t, Some(*m)),
            _ => return Err(Error::Invalid(format!("bad volume {spec:?}"))),
        };
        if !target.starts_with('/') {
            return Err(Error::Invalid(format!(
                "volume {spec:?}: the target {target:?} must be an absolute path"
            )));
        }
        let mut r = MountRequest {
            target: target.to_string(),
            create_host_path: true,
            ..Default::default()
        };
        match source {
            None | Some("") => r.kind = MountKind::Volume,
            Some(s) if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') => {
                r.kind = MountKind::Bind;
                r.source = Some(s.to_string());
            }
            Some(s) => {
                validate_name(s)?;
                r.kind = MountKind::Volume;
                r.source = Some(s.to_string());
            }
        }
        for m in mode.unwrap_or("").split(',').filter(|m| !m.is_empty()) {
            match m {
                "ro" => r.read_only = true,
                "rw" => r.read_only = false,
                "nocopy" => r.nocopy = true,
                "z" | "Z" | "cached" | "delegated" | "consistent" => {}
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                    r.propagation = Some(m.to_string());
                }
                o => {
                    return Err(Error::Invalid(format!(
                        "volume {spec:?}: unknown mode {o:?}"
                    )));
                }
            }
        }
        Ok(r)
    }
}

/// A mount the runtime performs: `source` is a host path (or `tmpfs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    pub kind: MountKind,
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    /// Mount options: propagation (`rprivate`…), tmpfs `size=`/`mode=`.
    pub options: Vec<String>,
}

/// Resolves a bind or tmpfs request (named volumes go through [`Volumes::prepare`]):
/// relative paths against `project_dir`, `~` against `home`; creates a missing host
/// directory when `create_host_path` is set, else fails.
pub fn resolve_bind_or_tmpfs(
    req: &MountRequest,
    project_dir: &Path,
    home: Option<&Path>,
) -> Result<ResolvedMount> {
    match req.kind {
        MountKind::Tmpfs => {
            let mut options = Vec::new();
            if let Some(s) = req.tmpfs_size {
                options.push(format!("size={s}"));
            }
            if let Some(m) = req.tmpfs_mode {
                options.push(format!("mode={m:o}"));
            }
            Ok(ResolvedMount {
                kind: MountKind::Tmpfs,
                source: PathBuf::from("tmpfs"),
                target: req.target.clone(),
                read_only: req.read_only,
                options,
            })
        }
        MountKind::Bind => {
            let src = req.source.as_deref().ok_or_else(|| {
                Error::Invalid(format!("bind mount at {} has no source", req.target))
            })?;
            let path = if let Some(rest) = src.strip_prefix('~') {
                let home = home.ok_or_else(|| {
                    Error::Invalid(format!("bind source {src:?}: no home directory known"))
                })?;
                home.join(rest.trim_start_matches('/'))
            } else {
                project_dir.join(src)
            };
            let path = normalize(&path);
            if !path.exists() {
                if req.create_host_path {
                    std::fs::create_dir_all(&path)
                        .map_err(io(format!("create {}", path.display())))?;
                } else {
                    return Err(Error::Invalid(format!(
                        "bind source {} does not exist (and create_host_path is false)",
                        path.display()
                    )));
                }
            }
            let options = vec![req.propagation.clone().unwrap_or_else(|| "rprivate".into())];
            Ok(ResolvedMount {
                kind: MountKind::Bind,
                source: path,
                target: req.target.clone(),
                read_only: req.read_only,
                options,
            })
        }
        MountKind::Volume => Err(Error::Invalid(
            "named volumes are resolved by Volumes::prepare".into(),
        )),
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_syntax() {
        let r = MountRequest::parse_short("data:/var/lib/db:ro").unwrap();
        assert_eq!(r.kind, MountKind::Volume);
        assert_eq!(r.source.as_deref(), Some("data"));
        assert!(r.read_only);
        let r = MountRequest::parse_short("./src:/app").unwrap();
        assert_eq!(r.kind, MountKind::Bind);
        let r = MountRequest::parse_short("/cache").unwrap();
        assert_eq!((r.kind, r.source), (MountKind::Volume, None));
        assert!(MountRequest::parse_short("a:b:c:d").is_err());
        assert!(MountRequest::parse_short("x:rel").is_err());
        assert!(MountRequest::parse_short("x:/a:bogus").is_err());
    }

    #[test]
    fn bind_resolution() {
        let t = tempfile::tempdir().unwrap();
        let mut r = MountRequest::parse_short("./sub/../new:/x").unwrap();
        let m = resolve_bind_or_tmpfs(&r, t.path(), None).unwrap();
        assert_eq!(m.source, t.path().join("new"));
        assert!(m.source.is_dir());
        r.source = Some("./missing".into());
        r.create_host_path = false;
        assert!(resolve_bind_or_tmpfs(&r, t.path(), None).is_err());
    }

    #[test]
    fn copy_up_merges_layers_with_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let l1 = t.path().join("l1");
        let l2 = t.path().join("l2");
        std::fs::create_dir_all(l1.join("data/sub")).unwrap();
        std::fs::write(l1.join("data/a"), "a").unwrap();
        std::fs::write(l1.join("data/gone"), "x").unwrap();
        std::fs::write(l1.join("data/sub/b"), "b").unwrap();
        std::fs::create_dir_all(l2.join("data")).unwrap();
        std::fs::write(l2.join("data/.wh.gone"), "").unwrap();
        std::fs::write(l2.join("data/a"), "a2").unwrap();
        std::os::unix::fs::symlink("a", l2.join("data/link")).unwrap();
        let dest = t.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        assert!(copy_up(&[l1, l2], "/data", &dest).unwrap());
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "a2");
        assert_eq!(std::fs::read_to_string(dest.join("sub/b")).unwrap(), "b");
        assert!(!dest.join("gone").exists());
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("a")
        );
        let empty = t.path().join("e");
        std::fs::create_dir(&empty).unwrap();
        assert!(!copy_up(&[t.path().join("l1")], "/nothing", &empty).unwrap());
    }
}
