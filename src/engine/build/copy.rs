//! `COPY` and `ADD`: what is copied where ([`plan`]), the content hash of the inputs (the
//! cache key), and the layer's tar stream ([`write`]).
//!
//! Docker's rules: a destination ending in `/` (or `.`), several sources, or a directory
//! source make the destination a directory; a relative destination is relative to the
//! working directory; a directory source copies its contents; a source that is a symlink is
//! followed (inside the source), symlinks below a directory are copied as links; files from
//! a local context belong to 0:0 unless `--chown`, files from a stage keep their owner;
//! `--chmod` applies to every copied entry; missing parent directories are created (0755,
//! owned like the copied files). `ADD` of a local tar archive (plain, gzip, zstd) unpacks it
//! into the destination.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use super::context::Source;
use super::layer::{Meta, TarOut};
use super::view::{Entry, Kind, View};
use super::{BuildError, Result, io_ctx};

/// One thing to put in the layer.
#[derive(Debug, Clone)]
pub enum Item {
    /// A directory entry (created parent or copied directory).
    Dir {
        /// Destination path (relative to the root, clean).
        dest: String,
        /// Its metadata.
        meta: Meta,
    },
    /// A copied entry of a source.
    Copy {
        /// Index of the source.
        src: usize,
        /// Path in the source.
        comps: Vec<String>,
        /// The source entry.
        entry: Entry,
        /// Destination path.
        dest: String,
        /// Metadata to write.
        meta: Meta,
    },
    /// A tar archive to unpack under `dest` (`ADD`).
    Archive {
        /// Index of the source.
        src: usize,
        /// Path of the archive in the source.
        comps: Vec<String>,
        /// Destination directory.
        dest: String,
        /// Owner override.
        chown: Option<(u32, u32)>,
    },
    /// A here-document file.
    Inline {
        /// Destination path.
        dest: String,
        /// Content.
        body: String,
        /// Metadata.
        meta: Meta,
    },
}

/// A copy request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Sources and their patterns (expanded, in order).
    pub sources: Vec<(usize, String)>,
    /// Here-documents (name, body) as sources.
    pub inline: Vec<(String, String)>,
    /// Destination as written (expanded).
    pub dest: String,
    /// The stage's working directory.
    pub workdir: &'a str,
    /// Resolved `--chown`.
    pub chown: Option<(u32, u32)>,
    /// `--chmod` bits.
    pub chmod: Option<u32>,
    /// `ADD`: unpack local archives.
    pub add: bool,
    /// `--parents`.
    pub parents: bool,
    /// Modification time for created directories and here-documents.
    pub now: i64,
}

fn archive_kind(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if head.len() > 262 && &head[257..262] == b"ustar" {
        Some("tar")
    } else {
        None
    }
}

fn is_archive(src: &Source, comps: &[String]) -> Option<&'static str> {
    let mut f = src.view.open_file(comps).ok()?;
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    head.truncate(n);
    archive_kind(&head)
}

fn clean_abs(p: &str) -> String {
    super::ignore::clean(p)
}

/// Decides what goes where. `dest_view` is the stage's filesystem (for existing
/// directories and symlinks in the destination path).
// Long: Docker's COPY destination rules (trailing slash, existing directory, wildcard, single
// file) as one decision over the same request.
pub fn plan(req: &Request<'_>, sources: &[&Source], dest_view: &View) -> Result<Vec<Item>> {
    let abs = if req.dest.starts_with('/') {
        req.dest.clone()
    } else {
        format!("{}/{}", req.workdir, req.dest)
    };
    let dir_hint = req.dest.ends_with('/') || req.dest == "." || req.dest.ends_with("/.");
    // Resolve the destination in the stage: its parents through symlinks, the last too
    // when it is an existing directory.
    let dest_comps = dest_view
        .resolve(&abs, true)
        .map_err(|e| BuildError::Invalid(format!("destination {}: {e}", req.dest)))?;
    let dest_is_existing_dir = dest_view
        .lstat(&dest_comps)
        .is_some_and(|e| e.kind == Kind::Dir);
    let mut matched: Vec<(usize, Vec<String>, Entry)> = Vec::new();
    for (si, pat) in &req.sources {
        let src = sources[*si];
        for comps in src.expand(pat)? {
            let e = src.view.lstat(&comps).ok_or_else(|| {
                BuildError::Invalid(format!("{pat}: not found in the {}", src.name))
            })?;
            matched.push((*si, comps, e));
        }
    }
    let many = matched.len() + req.inline.len() > 1;
    let into_dir = dir_hint || many || dest_is_existing_dir;
    if many && !dir_hint && !dest_is_existing_dir {
        return Err(BuildError::Invalid(format!(
            "when copying more than one source, the destination must be a directory ending in /: {}",
            req.dest
        )));
    }
    let owner = |src: &Source, e: &Entry| -> (u32, u32) {
        req.chown.unwrap_or(if src.reset_owner {
            (0, 0)
        } else {
            (e.uid, e.gid)
        })
    };
    let dir_owner = req.chown.unwrap_or((0, 0));
    let mut items = Vec::new();
    let mut made: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    // Parent directories of `target` (a clean relative path): existing ones with their
    // metadata, missing ones created.
    let mut parents = |target: &str, items: &mut Vec<Item>| {
        let comps: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
        for i in 1..comps.len() {
            let p = comps[..i].join("/");
            if !made.insert(p.clone()) {
                continue;
            }
            let pc: Vec<String> = comps[..i].iter().map(|s| (*s).to_string()).collect();
            let meta = match dest_view.lstat(&pc) {
                Some(e) if e.kind == Kind::Dir => Meta {
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    mtime: e.mtime,
                    xattrs: dest_view.xattrs(&pc, e.layer),
                },
                _ => Meta {
                    mode: 0o755,
                    uid: dir_owner.0,
                    gid: dir_owner.1,
                    mtime: req.now,
                    xattrs: Vec::new(),
                },
            };
            items.push(Item::Dir { dest: p, meta });
        }
    };
    let base = dest_comps.join("/");
    if into_dir && !base.is_empty() {
        parents(&format!("{base}/x"), &mut items);
    }
    let join = |a: &str, b: &str| -> String {
        if a.is_empty() {
            b.to_string()
        } else if b.is_empty() {
            a.to_string()
        } else {
            format!("{a}/{b}")
        }
    };
    for (name, body) in &req.inline {
        let dest = if into_dir {
            join(&base, name)
        } else {
            base.clone()
        };
        if !into_dir {
            parents(&dest, &mut items);
        }
        items.push(Item::Inline {
            dest: clean_abs(&dest),
            body: body.clone(),
            meta: Meta {
                mode: req.chmod.unwrap_or(0o644),
                uid: dir_owner.0,
                gid: dir_owner.1,
                mtime: req.now,
                xattrs: Vec::new(),
            },
        });
    }
    for (si, comps, e) in matched {
        let src = sources[si];
        let rel_base = if req.parents {
            comps.join("/")
        } else {
            comps.last().cloned().unwrap_or_default()
        };
        if e.kind == Kind::Dir {
            // The contents go into the destination (or dest/<path> with --parents).
            let target = if req.parents {
                join(&base, &rel_base)
            } else {
                base.clone()
            };
            let tc = super::view::split(&target);
            let existed = dest_view.lstat(&tc).is_some_and(|d| d.kind == Kind::Dir);
            if !target.is_empty() && !existed {
                parents(&target, &mut items);
                let (u, g) = owner(src, &e);
                items.push(Item::Dir {
                    dest: target.clone(),
                    meta: Meta {
                        mode: req.chmod.unwrap_or(e.mode),
                        uid: u,
                        gid: g,
                        mtime: e.mtime,
                        xattrs: Vec::new(),
                    },
                });
            }
            for rel in src.walk(&comps) {
                let mut full = comps.clone();
                full.extend(rel.iter().cloned());
                let Some(ce) = src.view.lstat(&full) else {
                    continue;
                };
                let dest = join(&target, &rel.join("/"));
                check_name(&dest)?;
                let (u, g) = owner(src, &ce);
                let mode = match (req.chmod, ce.kind) {
                    (Some(m), Kind::File | Kind::Dir) => m,
                    _ => ce.mode,
                };
                items.push(Item::Copy {
                    src: si,
                    meta: Meta {
                        mode,
                        uid: u,
                        gid: g,
                        mtime: ce.mtime,
                        xattrs: if ce.kind == Kind::Symlink {
                            Vec::new()
                        } else {
                            src.view.xattrs(&full, ce.layer)
                        },
                    },
                    comps: full,
                    entry: ce,
                    dest,
                });
            }
            continue;
        }
        if req.add && e.kind == Kind::File && !src.remote {
            match is_archive(src, &comps) {
                Some("bzip2" | "xz") => {
                    return Err(BuildError::Invalid(format!(
                        "ADD {}: bzip2 and xz archives are not supported (use gzip or zstd)",
                        comps.join("/")
                    )));
                }
                Some(_) => {
                    let target = base.clone();
                    if !target.is_empty() {
                        parents(&format!("{target}/x"), &mut items);
                    }
                    items.push(Item::Archive {
                        src: si,
                        comps,
                        dest: target,
                        chown: req.chown,
                    });
                    continue;
                }
                None => {}
            }
        }
        let dest = if into_dir {
            join(&base, &rel_base)
        } else {
            base.clone()
        };
        if dest.is_empty() {
            return Err(BuildError::Invalid(format!(
                "cannot copy {} over the root directory",
                comps.join("/")
            )));
        }
        check_name(&dest)?;
        parents(&dest, &mut items);
        let (u, g) = owner(src, &e);
        items.push(Item::Copy {
            src: si,
            meta: Meta {
                mode: req.chmod.unwrap_or(e.mode),
                uid: u,
                gid: g,
                mtime: e.mtime,
                xattrs: src.view.xattrs(&comps, e.layer),
            },
            comps,
            entry: e,
            dest,
        });
    }
    Ok(items)
}

/// A name that would read as a whiteout when the layer is applied is refused.
fn check_name(dest: &str) -> Result<()> {
    let last = dest.rsplit('/').next().unwrap_or(dest);
    if last.starts_with(".wh.") {
        return Err(BuildError::Invalid(format!(
            "{dest}: names starting with .wh. are reserved for layer whiteouts"
        )));
    }
    Ok(())
}

/// The content hash of what `items` copy (paths, kinds, modes, owners, sizes, link targets,
/// file contents; not times). Sources that are stages contribute their key instead of
/// their file contents.
pub fn hash(items: &[Item], sources: &[&Source]) -> Result<String> {
    let mut h = Sha256::new();
    for it in items {
        match it {
            Item::Dir { dest, meta } => {
                h.update(format!(
                    "D {dest} {:o} {}:{}\n",
                    meta.mode, meta.uid, meta.gid
                ));
            }
            Item::Inline { dest, body, meta } => {
                h.update(format!(
                    "I {dest} {:o} {}:{} {}\n",
                    meta.mode,
                    meta.uid,
                    meta.gid,
                    body.len()
                ));
                h.update(body.as_bytes());
            }
            Item::Archive {
                src,
                comps,
                dest,
                chown,
            } => {
                h.update(format!("A {dest} {chown:?} {}\n", comps.join("/")));
                match &sources[*src].key {
                    Some(k) => h.update(k.as_bytes()),
                    None => sources[*src].hash_file(comps, &mut h)?,
                }
            }
            Item::Copy {
                src,
                comps,
                entry,
                dest,
                meta,
            } => {
                h.update(format!(
                    "C {dest} {:?} {:o} {}:{} {} {:?} {:?}\n",
                    entry.kind,
                    meta.mode,
                    meta.uid,
                    meta.gid,
                    entry.size,
                    entry.target,
                    meta.xattrs
                ));
                let s = sources[*src];
                match &s.key {
                    Some(k) => {
                        h.update(k.as_bytes());
                        h.update(comps.join("/").as_bytes());
                    }
                    None if entry.kind == Kind::File => s.hash_file(comps, &mut h)?,
                    None => {}
                }
            }
        }
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Writes the layer for `items`.
pub fn write<W: Write>(items: &[Item], sources: &[&Source], out: &mut TarOut<W>) -> Result<()> {
    let werr = |e: std::io::Error| io_ctx("cannot write the layer")(e);
    for it in items {
        match it {
            Item::Dir { dest, meta } => out.dir(dest, meta).map_err(werr)?,
            Item::Inline { dest, body, meta } => out
                .file(dest, meta, body.len() as u64, body.as_bytes())
                .map_err(werr)?,
            Item::Copy {
                src,
                comps,
                entry,
                dest,
                meta,
            } => {
                let s = sources[*src];
                match entry.kind {
                    Kind::Dir => out.dir(dest, meta).map_err(werr)?,
                    Kind::Symlink => out
                        .symlink(
                            dest,
                            entry.target.as_deref().unwrap_or(std::path::Path::new("")),
                            meta,
                        )
                        .map_err(werr)?,
                    Kind::File => {
                        let f = s
                            .view
                            .open_file(comps)
                            .map_err(io_ctx(format!("cannot read {}", comps.join("/"))))?;
                        out.file(dest, meta, entry.size, f).map_err(werr)?;
                    }
                    Kind::Other => {
                        let kind = match entry.mode & 0o170_000 {
                            0o060_000 => tar::EntryType::Block,
                            0o010_000 => tar::EntryType::Fifo,
                            _ => tar::EntryType::Char,
                        };
                        out.special(dest, kind, entry.rdev, meta).map_err(werr)?;
                    }
                }
            }
            Item::Archive {
                src,
                comps,
                dest,
                chown,
            } => {
                let f = sources[*src]
                    .view
                    .open_file(comps)
                    .map_err(io_ctx(format!("cannot read {}", comps.join("/"))))?;
                unpack_archive(f, dest, *chown, out, &comps.join("/"))?;
            }
        }
    }
    Ok(())
}

/// Re-writes the entries of a local archive under `dest`.
fn unpack_archive<W: Write>(
    f: std::fs::File,
    dest: &str,
    chown: Option<(u32, u32)>,
    out: &mut TarOut<W>,
    what: &str,
) -> Result<()> {
    let bad = |e: String| BuildError::Invalid(format!("ADD {what}: {e}"));
    let (r, _) = crate::engine::image::decompress_any(f).map_err(|e| bad(e.to_string()))?;
    let mut a = tar::Archive::new(r);
    let entries = a.entries().map_err(|e| bad(e.to_string()))?;
    for e in entries {
        let mut e = e.map_err(|e| bad(e.to_string()))?;
        let raw = e
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let rel = super::ignore::clean(&raw);
        if rel.is_empty() {
            continue;
        }
        if rel == ".." || rel.starts_with("../") {
            return Err(bad(format!("entry {raw:?} leaves the destination")));
        }
        let path = if dest.is_empty() {
            rel.clone()
        } else {
            format!("{dest}/{rel}")
        };
        check_name(&path)?;
        let h = e.header().clone();
        let (uid, gid) = chown.unwrap_or((
            u32::try_from(h.uid().unwrap_or(0)).unwrap_or(0),
            u32::try_from(h.gid().unwrap_or(0)).unwrap_or(0),
        ));
        let meta = Meta {
            mode: h.mode().unwrap_or(0o644),
            uid,
            gid,
            mtime: i64::try_from(h.mtime().unwrap_or(0)).unwrap_or(0),
            xattrs: Vec::new(),
        };
        let werr = |e: std::io::Error| io_ctx("cannot write the layer")(e);
        match h.entry_type() {
            tar::EntryType::Directory => out.dir(&path, &meta).map_err(werr)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = e.size();
                out.file(&path, &meta, size, &mut e).map_err(werr)?;
            }
            tar::EntryType::Symlink => {
                let t = e
                    .link_name()
                    .map_err(|x| bad(x.to_string()))?
                    .map(std::borrow::Cow::into_owned)
                    .unwrap_or_default();
                out.symlink(&path, &t, &meta).map_err(werr)?;
            }
            tar::EntryType::Link => {
                let t = e
                    .link_name()
                    .map_err(|x| bad(x.to_string()))?
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let t = super::ignore::clean(&t);
                if t.is_empty() || t.starts_with("..") {
                    return Err(bad(format!("hard link {raw:?} leaves the destination")));
                }
                let t = if dest.is_empty() {
                    t
                } else {
                    format!("{dest}/{t}")
                };
                out.hardlink(&path, &t, &meta).map_err(werr)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let dev = libc::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                out.special(&path, h.entry_type(), dev, &meta)
                    .map_err(werr)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(srcs: &[&str], dest: &str) -> Request<'a> {
        Request {
            sources: srcs.iter().map(|s| (0, (*s).to_string())).collect(),
            inline: Vec::new(),
            dest: dest.into(),
            workdir: "/w",
            chown: None,
            chmod: None,
            add: false,
            parents: false,
            now: 0,
        }
    }

    fn dests(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Dir { dest, .. } => format!("{dest}/"),
                Item::Copy { dest, .. } | Item::Inline { dest, .. } => dest.clone(),
                Item::Archive { dest, .. } => format!("{dest}:archive"),
            })
            .collect()
    }

    #[test]
    fn copy_plans_docker_destinations() {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join("ctx");
        std::fs::create_dir_all(c.join("dir/in")).unwrap();
        std::fs::write(c.join("a.txt"), "a").unwrap();
        std::fs::write(c.join("b.txt"), "b").unwrap();
        std::fs::write(c.join("dir/in/f"), "f").unwrap();
        let src = super::super::context::open(&c, None).unwrap();
        let l = t.path().join("layer");
        std::fs::create_dir_all(l.join("srv")).unwrap();
        std::os::unix::fs::symlink("/srv", l.join("app")).unwrap();
        let stage = View::open(&[l]).unwrap();
        let p =
            |srcs: &[&str], dest: &str| dests(&plan(&req(srcs, dest), &[&src], &stage).unwrap());
        assert_eq!(p(&["a.txt"], "/x"), vec!["x"]);
        assert_eq!(p(&["a.txt"], "/x/"), vec!["x/", "x/a.txt"]);
        // An existing directory (through a symlink) takes the file.
        assert_eq!(p(&["a.txt"], "/app"), vec!["srv/", "srv/a.txt"]);
        assert_eq!(p(&["a.txt"], "rel"), vec!["w/", "w/rel"]);
        assert_eq!(p(&["*.txt"], "/d/"), vec!["d/", "d/a.txt", "d/b.txt"]);
        assert!(plan(&req(&["*.txt"], "/d"), &[&src], &stage).is_err());
        assert_eq!(p(&["dir"], "/o"), vec!["o/", "o/in", "o/in/f"]);
        assert!(plan(&req(&["../x"], "/o"), &[&src], &stage).is_err());
        let items = plan(&req(&["a.txt"], "/x"), &[&src], &stage).unwrap();
        let h1 = hash(&items, &[&src]).unwrap();
        std::fs::write(c.join("a.txt"), "changed").unwrap();
        let items = plan(&req(&["a.txt"], "/x"), &[&src], &stage).unwrap();
        assert_ne!(h1, hash(&items, &[&src]).unwrap());
    }
}
