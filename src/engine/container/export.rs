//! A container's root filesystem as one tar stream (`export`), and its changes as one image
//! layer (`commit`).
//!
//! **What is read.** A container's root filesystem is its image's layer directories under
//! its overlay upper directory (`upper/`, which holds what the container wrote, and overlay
//! whiteouts — character devices 0:0 — for what it deleted, `trusted.overlay.opaque=y` on
//! directories it replaced). tug reads those directories directly, merged as overlayfs
//! merges them ([`View`]), rather than the mounted overlay: the overlay exists only in the
//! supervisor's private mount namespace while the container runs, a stopped container has
//! none, and the merged mount would also show volumes, bind mounts and tmpfs mounted over it
//! (which `docker export` leaves out, as does tug: their mountpoints are in the tar as the
//! empty directories or files of the upper layer, their contents are not). Mounting the
//! overlay again for a stopped container would need a private mount namespace per export
//! for no gain: reading the layers gives the same tree, and the same code serves running and
//! stopped containers.
//!
//! **Hostile trees.** Every directory is listed and every entry opened inside its layer with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)` on paths the walk itself built from
//! directory listings ([`View`]): no symlink of the image or the container is followed, a
//! symlink is stored as a symlink (`etc -> /` stays a link, nothing of the host's `/etc` is
//! read), and a regular file is opened `O_NOFOLLOW`. A running container may change its
//! tree while it is read (as with `docker export`): an entry that disappears between its
//! listing and its opening is left out; a file that changes size keeps the size it was
//! listed with (cut or padded with zeros), so the stream stays well-formed.
//!
//! **What is kept.** Owners (numeric), modes with set-id and sticky bits, modification
//! times, extended attributes (file capabilities `security.capability` among them; the
//! overlay's own `trusted.overlay.*` are left out), device nodes and FIFOs, and hard links:
//! files of one layer linked more than once become tar hard links to their first name.
//!
//! **Refused.** An upper directory written by an overlay mounted with `redirect_dir` or
//! `metacopy` (kernel defaults, off on tug's supported kernels unless changed) is not a
//! complete diff: a renamed directory or a metadata-only copy-up points into the lower
//! layers. Such entries make the export fail with an error naming the path instead of
//! producing a wrong tree.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, ResolveFlag};
use tar::EntryType;

use crate::engine::build::layer::{Meta, TarOut};
use crate::engine::build::view::{Kind, View};
use crate::engine::runtime::inroot::Root;

/// Errors of `export` and of reading a container's changes.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A layer directory or an entry of it cannot be read.
    #[error("cannot read {path:?} of the container's file system: {source}")]
    Read {
        /// The path inside the container (`/` for a layer directory itself).
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// Writing the tar stream failed.
    #[error("cannot write the tar stream: {0}")]
    Write(#[source] io::Error),
    /// The upper directory holds overlay redirects or metacopy files.
    #[error(
        "{path:?} in the container's upper layer is an overlayfs {what} (overlayfs mounted with redirect_dir or metacopy on): tug cannot read its contents without the overlay"
    )]
    Overlay {
        /// The path inside the container.
        path: String,
        /// `redirect` or `metacopy`.
        what: &'static str,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, ExportError>;

fn read_err(path: &str) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Read {
        path: format!("/{path}"),
        source,
    }
}

/// Writes the merged tree of `layers` (lowest first) and `upper` (a container's overlay
/// upper directory) to `w` as a tar stream; returns `w` and the number of entries.
///
/// # Errors
/// A directory cannot be read, the upper directory holds overlay redirects or metacopy
/// files, or `w` fails.
pub fn rootfs_to_tar<W: Write>(layers: &[PathBuf], upper: &Path, w: W) -> Result<(W, usize)> {
    let mut dirs = layers.to_vec();
    dirs.push(upper.to_path_buf());
    let view = View::open(&dirs).map_err(read_err(""))?;
    let mut roots = Vec::with_capacity(dirs.len());
    for d in &dirs {
        roots.push(Root::open(d).map_err(|e| read_err("")(io::Error::from(e)))?);
    }
    let mut walk = Walk {
        view: &view,
        roots: &roots,
        upper: dirs.len() - 1,
        links: HashMap::new(),
        out: TarOut::new(w, None),
    };
    walk.dir(&mut Vec::new())?;
    let count = walk.out.count;
    let w = walk.out.finish().map_err(ExportError::Write)?;
    Ok((w, count))
}

struct Walk<'a, W: Write> {
    view: &'a View,
    roots: &'a [Root],
    /// Index of the upper directory among the layers.
    upper: usize,
    /// First path of each (layer, device, inode) linked more than once.
    links: HashMap<(usize, u64, u64), String>,
    out: TarOut<W>,
}

impl<W: Write> Walk<'_, W> {
    fn dir(&mut self, comps: &mut Vec<String>) -> Result<()> {
        for name in self.view.list(comps) {
            comps.push(name);
            let r = self.entry(comps);
            comps.pop();
            r?;
        }
        Ok(())
    }

    /// An O_PATH descriptor of `comps` in `layer`, resolved without following any symlink.
    fn open_path(&self, layer: usize, comps: &[String]) -> io::Result<std::os::fd::OwnedFd> {
        self.roots[layer]
            .open_in(
                Path::new(&comps.join("/")),
                OFlag::O_PATH | OFlag::O_NOFOLLOW,
                ResolveFlag::RESOLVE_NO_SYMLINKS,
            )
            .map_err(io::Error::from)
    }

    /// Refuses an upper-layer entry that carries an overlay redirect or metacopy xattr.
    fn check_overlay(&self, comps: &[String], layer: usize, kind: Kind) -> Result<()> {
        let what = match kind {
            _ if layer != self.upper => return Ok(()),
            Kind::Dir => ("trusted.overlay.redirect", "redirect"),
            Kind::File => ("trusted.overlay.metacopy", "metacopy"),
            _ => return Ok(()),
        };
        let path = comps.join("/");
        let fd = self.open_path(layer, comps).map_err(read_err(&path))?;
        let mut buf = [0u8; 256];
        let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
        if rustix::fs::getxattr(proc.as_str(), what.0, &mut buf[..]).is_ok() {
            return Err(ExportError::Overlay {
                path: format!("/{path}"),
                what: what.1,
            });
        }
        Ok(())
    }

    fn entry(&mut self, comps: &mut Vec<String>) -> Result<()> {
        // Gone since the listing (a running container): left out.
        let Some(e) = self.view.lstat(comps) else {
            return Ok(());
        };
        self.check_overlay(comps, e.layer, e.kind)?;
        let path = comps.join("/");
        let meta = Meta {
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            xattrs: if e.kind == Kind::Symlink {
                Vec::new()
            } else {
                self.view.xattrs(comps, e.layer)
            },
        };
        let w = ExportError::Write;
        match e.kind {
            Kind::Dir => {
                self.out.dir(&path, &meta).map_err(w)?;
                self.dir(comps)?;
            }
            Kind::Symlink => {
                let target = e.target.unwrap_or_default();
                self.out.symlink(&path, &target, &meta).map_err(w)?;
            }
            Kind::File => {
                let f = match self.view.open_file(comps) {
                    Ok(f) => f,
                    Err(x) if x.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(x) => return Err(read_err(&path)(x)),
                };
                let md = f.metadata().map_err(read_err(&path))?;
                if md.nlink() > 1 {
                    let key = (e.layer, md.dev(), md.ino());
                    if let Some(first) = self.links.get(&key) {
                        let first = first.clone();
                        return self.out.hardlink(&path, &first, &meta).map_err(w);
                    }
                    self.links.insert(key, path.clone());
                }
                self.out.file(&path, &meta, md.len(), f).map_err(w)?;
            }
            Kind::Other => {
                let fd = match self.open_path(e.layer, comps) {
                    Ok(fd) => fd,
                    Err(x) if x.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(x) => return Err(read_err(&path)(x)),
                };
                let md = std::fs::File::from(fd)
                    .metadata()
                    .map_err(read_err(&path))?;
                let ft = md.file_type();
                let kind = if ft.is_char_device() {
                    EntryType::Char
                } else if ft.is_block_device() {
                    EntryType::Block
                } else if ft.is_fifo() {
                    EntryType::Fifo
                } else {
                    // Sockets are not part of an archive (as docker's).
                    return Ok(());
                };
                self.out.special(&path, kind, md.rdev(), &meta).map_err(w)?;
            }
        }
        Ok(())
    }
}
