//! Offline base images, built from the host's Debian packages instead of a registry.
//!
//! - `busybox`: the statically linked `/bin/busybox` of Debian's `busybox-static`, one symlink
//!   per applet (as `busybox --list-full` names them), a minimal `/etc/passwd` and
//!   `/etc/group`, and the usual empty directories. The tarball is written in memory with
//!   fixed owners and times, so the same busybox binary always gives the same layer.
//! - `debian:<suite>`: `mmdebstrap --variant=minbase` writes a root file system tarball of the
//!   suite from the Debian mirror (plus `--include` packages); it becomes a single-layer image.
//!   It takes 20 s or more; its steps are reported as [`BootstrapEvent`]s as they happen.

use std::io::{BufRead as _, Cursor, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::fsutil::io_ctx;
use super::import::ImportOptions;
use super::{Error, Image, ImageStore, Result};

/// Where `bootstrap busybox` takes the binary from.
pub const BUSYBOX: &str = "/bin/busybox";

/// Options of `bootstrap debian:<suite>`.
#[derive(Debug, Clone, Default)]
pub struct DebianOptions {
    /// The suite (`bookworm`, `trixie`, `stable`, …).
    pub suite: String,
    /// Extra packages.
    pub include: Vec<String>,
    /// Mirror URL; mmdebstrap's default when `None`.
    pub mirror: Option<String>,
}

/// Progress of a bootstrap, for the caller to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapEvent<'a> {
    /// A step of the tool that makes the root file system, in its own words (mmdebstrap's
    /// `running apt-get update...`, `installing essential packages...`).
    Step(&'a str),
    /// The root file system is made and is being stored as an image.
    Importing,
}

impl ImageStore {
    /// Builds a busybox image from `busybox` (a static busybox binary) and stores it as
    /// `name` (default `busybox:latest`), with `CMD ["sh"]`.
    pub fn bootstrap_busybox(&self, busybox: &Path, name: Option<&str>) -> Result<Image> {
        let tar = busybox_tar(busybox)?;
        // The binary's time is the image's: the same binary gives the same image.
        let created = std::fs::metadata(busybox)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .map(|t| t.to_string());
        let opts = ImportOptions {
            created,
            changes: vec![
                r#"CMD ["sh"]"#.to_string(),
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ],
            message: Some(format!("busybox from {}", busybox.display())),
            created_by: Some("tug image bootstrap busybox".to_string()),
        };
        self.import(
            Cursor::new(tar),
            Some(name.unwrap_or("busybox:latest")),
            &opts,
        )
    }

    /// Builds a Debian image with mmdebstrap and stores it as `name` (default
    /// `debian:<suite>`), with `CMD ["bash"]`. `progress` hears mmdebstrap's steps as it
    /// prints them.
    pub fn bootstrap_debian(
        &self,
        opts: &DebianOptions,
        name: Option<&str>,
        progress: &dyn Fn(BootstrapEvent<'_>),
    ) -> Result<Image> {
        let suite = &opts.suite;
        if suite.is_empty()
            || !suite
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return Err(Error::Tool {
                tool: "mmdebstrap".into(),
                detail: format!("invalid suite {suite:?}"),
            });
        }
        for p in &opts.include {
            if p.is_empty()
                || !p
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+-.:_=".contains(&c))
            {
                return Err(Error::Tool {
                    tool: "mmdebstrap".into(),
                    detail: format!("invalid package name {p:?}"),
                });
            }
        }
        let default_name = format!("debian:{suite}");
        let name = name.unwrap_or(&default_name);
        super::Reference::parse(name)?;
        // The work directory lives in .ingest/: hold the store lock so no other command takes
        // it for a killed command's leftovers.
        let _lock = self.lock_shared()?;
        let work = tempfile::Builder::new()
            .prefix("bootstrap-")
            .tempdir_in(self.layout().ingest_dir())
            .map_err(io_ctx("cannot create a work directory"))?;
        let out: PathBuf = work.path().join("rootfs.tar");
        let log = work.path().join("mmdebstrap.log");
        let mut cmd = Command::new("mmdebstrap");
        cmd.arg("--variant=minbase").arg("--format=tar");
        if !opts.include.is_empty() {
            cmd.arg(format!("--include={}", opts.include.join(",")));
        }
        cmd.arg(suite).arg(&out);
        if let Some(m) = &opts.mirror {
            cmd.arg(m);
        }
        // Everything mmdebstrap says goes to the log (its tail is the error when it fails);
        // its `I: ` lines on stderr are its steps, reported as they come.
        let mut logf =
            std::fs::File::create(&log).map_err(io_ctx("cannot create the mmdebstrap log"))?;
        let logf2 = logf
            .try_clone()
            .map_err(io_ctx("cannot create the mmdebstrap log"))?;
        cmd.stdout(logf2)
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null());
        let mut child = cmd.spawn().map_err(|e| Error::Tool {
            tool: "mmdebstrap".into(),
            detail: if e.kind() == std::io::ErrorKind::NotFound {
                "mmdebstrap is not installed (apt-get install mmdebstrap)".into()
            } else {
                e.to_string()
            },
        })?;
        if let Some(stderr) = child.stderr.take() {
            let mut lines = std::io::BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let _ = logf.write_all(&line);
                let text = String::from_utf8_lossy(&line);
                if let Some(step) = text.trim_end().strip_prefix("I: ") {
                    progress(BootstrapEvent::Step(step));
                }
            }
        }
        let status = child.wait().map_err(|e| Error::Tool {
            tool: "mmdebstrap".into(),
            detail: e.to_string(),
        })?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(Error::Tool {
                tool: "mmdebstrap".into(),
                detail: format!("{status}: {}", tail.join(" | ")),
            });
        }
        progress(BootstrapEvent::Importing);
        let file =
            std::fs::File::open(&out).map_err(io_ctx("cannot open the mmdebstrap tarball"))?;
        let import = ImportOptions {
            created: None,
            changes: vec![
                r#"CMD ["bash"]"#.to_string(),
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ],
            message: Some(format!("debian {suite} (mmdebstrap minbase)")),
            created_by: Some(format!(
                "tug image bootstrap debian:{suite}{}",
                if opts.include.is_empty() {
                    String::new()
                } else {
                    format!(" --include {}", opts.include.join(","))
                }
            )),
        };
        self.import(file, Some(name), &import)
    }
}

/// A tarball of a busybox root file system.
pub fn busybox_tar(busybox: &Path) -> Result<Vec<u8>> {
    let bin = std::fs::read(busybox).map_err(io_ctx(format!(
        "cannot read {} (install Debian's busybox-static)",
        busybox.display()
    )))?;
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(io_ctx(format!("cannot run {}", busybox.display())))?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool: busybox.display().to_string(),
            detail: format!("--list-full: {}", out.status),
        });
    }
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut b = tar::Builder::new(Vec::with_capacity(bin.len() + 256 * 1024));
    let mtime = 0;
    let wrap = |e: std::io::Error| Error::Io {
        context: "cannot build the busybox tarball".into(),
        source: e,
    };
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(0);
        b.append_data(&mut h, path, std::io::empty()).map_err(wrap)
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).map_err(wrap)
    };
    for (d, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("root", 0o700),
        ("home", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("var/tmp", 0o1777),
        ("var/www", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
    ] {
        dir(&mut b, d, mode)?;
    }
    file(&mut b, "bin/busybox", 0o755, &bin)?;
    file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    file(&mut b, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    let mut applets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "bin/busybox" && !l.contains(".."))
        .collect();
    applets.sort_unstable();
    applets.dedup();
    for applet in applets {
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(0);
        b.append_link(&mut h, applet, &target).map_err(wrap)?;
    }
    b.into_inner().map_err(wrap)
}
