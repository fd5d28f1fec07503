//! Unpacking a layer tarball into a directory that overlayfs can stack.
//!
//! A layer is a tar stream (plain, gzip or zstd — detected from the first bytes) of the files
//! a layer adds or changes. Deletions are written as *OCI whiteouts*: an empty file
//! `dir/.wh.NAME` means "NAME is deleted", and `dir/.wh..wh..opq` means "dir hides everything
//! below it in lower layers". overlayfs spells the same things differently: a deleted NAME is a
//! character device 0:0 named NAME, and an opaque dir carries the xattr
//! `trusted.overlay.opaque=y`. The unpacker converts the first spelling into the second.
//!
//! Tar headers come from the tar crate in raw mode; tug itself folds GNU long names (`L`/`K`)
//! and PAX records (`x`: path, linkpath, uid, gid, mtime, `SCHILY.xattr.*`) into the entry that
//! follows, with a size limit on each, so a hostile header cannot make it allocate without
//! bound.
//!
//! Safety: a layer is untrusted. Every entry path is normalised lexically and rejected if it is
//! absolute or climbs above the layer root with `..`. Parent directories are opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so a symlink created by
//! an earlier entry (`evil -> /etc`, `up -> ../../..`) resolves *inside* the layer directory,
//! as it would inside the container, and never to the host. The last component is created with
//! `*at` calls that do not follow symlinks (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `linkat`
//! without `AT_SYMLINK_FOLLOW`). Hard-link targets are resolved the same way, so a link can
//! only point at a file of this layer. xattrs in the `trusted.overlay.` namespace are dropped:
//! only the whiteout conversion may set them.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

use super::{Error, Result};

/// Longest GNU long name / PAX header tug accepts.
const MAX_EXT_HEADER: u64 = 1 << 20;
/// Longest path tug accepts in a layer.
const MAX_PATH: usize = 4096;
/// Name of the opaque-directory marker.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Prefix of whiteout files.
const WHITEOUT: &[u8] = b".wh.";

/// The compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Detects compression from the first bytes.
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `r` in the decompressor its first bytes ask for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<(Box<dyn Read + 'a>, Compression)> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let kind = detect(br.fill_buf()?);
    Ok(match kind {
        Compression::None => (Box::new(br), kind),
        Compression::Gzip => (Box::new(flate2::bufread::MultiGzDecoder::new(br)), kind),
        Compression::Zstd => (
            Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
            kind,
        ),
    })
}

/// A decompressor chosen from the first bytes, that gives its input back.
pub enum Decoder<R: BufRead> {
    /// Plain tar.
    Plain(R),
    /// gzip (all members).
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    /// zstd.
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decoder<R> {
    /// Looks at the first bytes of `r` and wraps it.
    pub fn new(mut r: R) -> io::Result<Self> {
        Ok(match detect(r.fill_buf()?) {
            Compression::None => Self::Plain(r),
            Compression::Gzip => Self::Gzip(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::Zstd => Self::Zstd(zstd::stream::read::Decoder::with_buffer(r)?),
        })
    }

    /// The compression.
    pub fn kind(&self) -> Compression {
        match self {
            Self::Plain(_) => Compression::None,
            Self::Gzip(_) => Compression::Gzip,
            Self::Zstd(_) => Compression::Zstd,
        }
    }

    /// The input back.
    pub fn into_inner(self) -> R {
        match self {
            Self::Plain(r) => r,
            Self::Gzip(d) => d.into_inner(),
            Self::Zstd(d) => d.finish(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(r) => r.read(buf),
            Self::Gzip(d) => d.read(buf),
            Self::Zstd(d) => d.read(buf),
        }
    }
}

/// The size of the tar stream inside a layer file, read from its header or trailer without
/// decompressing: plain tar is its own size; gzip keeps the uncompressed length (modulo
/// 2^32) in the last four bytes of its (last) member, exact for the usual single-member layer
/// under 4 GiB; zstd keeps it in the frame header when the writer knew it (otherwise the
/// compressed size is returned).
pub fn uncompressed_size(file: &std::fs::File) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut head = [0u8; 18];
    let n = file.read_at(&mut head, 0)?;
    Ok(match detect(&head[..n]) {
        Compression::None => len,
        Compression::Gzip if len >= 18 => {
            let mut tail = [0u8; 4];
            file.read_exact_at(&mut tail, len - 4)?;
            u64::from(u32::from_le_bytes(tail))
        }
        Compression::Gzip => len,
        Compression::Zstd => zstd::zstd_safe::get_frame_content_size(&head[..n])
            .ok()
            .flatten()
            .unwrap_or(len),
    })
}

/// Like [`decompress`], for readers that can move to another thread.
pub fn decompress_send<R: Read + Send + 'static>(r: R) -> io::Result<Box<dyn Read + Send>> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let kind = detect(br.fill_buf()?);
    Ok(match kind {
        Compression::None => Box::new(br),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
    })
}

/// Unpacks a layer file (any compression) into the empty directory `dest`, decompressing and
/// hashing on a second thread (and with `writeback`, writing to disk on a third, see
/// [`unpack`]). Returns the diff_id and the stats.
pub fn unpack_file(
    file: std::fs::File,
    dest: &Path,
    layer: &str,
    writeback: bool,
) -> Result<(String, Stats)> {
    let reader = decompress_send(file).map_err(|e| Error::BadLayer {
        layer: layer.to_string(),
        reason: e.to_string(),
    })?;
    let mut threaded =
        super::fsutil::ThreadedReader::new(super::fsutil::HashingReader::new(reader));
    let stats = unpack(&mut threaded, dest, layer, writeback)?;
    let hashing = threaded.finish().map_err(|e| Error::BadLayer {
        layer: layer.to_string(),
        reason: e.to_string(),
    })?;
    let (diff_id, _, _) = hashing.into_parts();
    Ok((diff_id, stats))
}

/// What an unpack did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Entries written.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Unpacks the (already decompressed) tar stream `r` into the existing, empty directory
/// `dest`. Reads `r` to its end, so a hashing reader underneath sees the whole stream. With
/// `writeback`, the files go to disk while the unpack runs ([`super::fsutil::Flusher`]), for a
/// caller that syncs them before trusting them.
pub fn unpack(r: impl Read, dest: &Path, layer: &str, writeback: bool) -> Result<Stats> {
    let root = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| Error::Io {
        context: format!("cannot open {}", dest.display()),
        source: e.into(),
    })?;
    let mut u = Unpacker {
        root,
        layer: layer.to_string(),
        privileged: nix::unistd::geteuid().is_root(),
        owner: (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ),
        umask: current_umask(),
        parent_cache: None,
        dirs: Vec::new(),
        stats: Stats::default(),
        buf: vec![0; 256 * 1024],
        flusher: None,
    };
    if writeback {
        u.flusher = Some(
            super::fsutil::Flusher::start(&u.root).map_err(|e| Error::Io {
                context: "cannot start the writeback thread".into(),
                source: e,
            })?,
        );
    }
    let mut archive = tar::Archive::new(r);
    u.run(&mut archive)?;
    // Whatever follows the end-of-archive blocks still belongs to the stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| u.bad(format!("reading the stream: {e}")))?;
    u.finish_dirs()?;
    Ok(u.stats)
}

/// Extended header data that applies to the next entry.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: PaxRecords,
}

/// An open parent directory: its normalised path, fd, and the group a new entry in it gets.
struct Parent {
    path: Vec<u8>,
    fd: Rc<OwnedFd>,
    /// The directory's gid if it is set-group-ID (new entries inherit it), else None.
    sgid_group: Option<u32>,
}

struct Unpacker {
    root: OwnedFd,
    layer: String,
    privileged: bool,
    /// Effective uid and gid: the owner a new file gets (unless its directory is set-group-ID).
    owner: (u32, u32),
    /// The process umask, which `openat`/`mkdirat` apply to the mode they are given.
    umask: u32,
    /// The last parent directory opened.
    parent_cache: Option<Parent>,
    /// Directories whose times are set at the end (children change them).
    dirs: Vec<(Vec<u8>, i64)>,
    stats: Stats,
    buf: Vec<u8>,
    /// Writes the new files to disk in the background (see [`unpack`]).
    flusher: Option<super::fsutil::Flusher>,
}

/// A tar entry's path or PAX header the unpacker refuses (the `reason` of
/// [`Error::BadLayer`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum EntryError {
    /// An absolute path.
    #[error("absolute path {0:?}")]
    Absolute(String),
    /// A path over [`MAX_PATH`].
    #[error("path longer than 4096 bytes")]
    TooLong,
    /// A NUL byte in a path.
    #[error("path contains a NUL byte")]
    Nul,
    /// `..` above the layer's root.
    #[error("path {0:?} escapes the layer")]
    Escapes(String),
    /// A PAX record without `<len> `.
    #[error("bad PAX record: no length")]
    PaxNoLength,
    /// A PAX record whose length is not a number or not its length.
    #[error("bad PAX record length")]
    PaxLength,
    /// A PAX record without `key=value`.
    #[error("bad PAX record: no '='")]
    PaxNoEquals,
}

/// Normalises an entry path into its components. Rejects absolute paths and paths that climb
/// above the root; the root itself is an empty list.
fn normalise(raw: &[u8]) -> std::result::Result<Vec<&[u8]>, EntryError> {
    if raw.first() == Some(&b'/') {
        return Err(EntryError::Absolute(
            String::from_utf8_lossy(raw).into_owned(),
        ));
    }
    if raw.len() > MAX_PATH {
        return Err(EntryError::TooLong);
    }
    if raw.contains(&0) {
        return Err(EntryError::Nul);
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(EntryError::Escapes(
                        String::from_utf8_lossy(raw).into_owned(),
                    ));
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn join(components: &[&[u8]]) -> Vec<u8> {
    components.join(&b'/')
}

fn cstr(b: &[u8]) -> CString {
    // Components never contain NUL (checked in `normalise`).
    CString::new(b).unwrap_or_default()
}

fn in_root_how(flags: OFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_IN_ROOT
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    )
}

impl Unpacker {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::BadLayer {
            layer: self.layer.clone(),
            reason: reason.into(),
        }
    }

    fn sys(&self, what: &str, path: &[u8], e: Errno) -> Error {
        self.bad(format!(
            "cannot {what} {:?}: {}",
            String::from_utf8_lossy(path),
            io::Error::from(e)
        ))
    }

    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<()> {
        let entries = archive
            .entries()
            .map_err(|e| self.bad(format!("not a tar stream: {e}")))?
            .raw(true);
        let mut pending = Pending::default();
        for entry in entries {
            let mut entry = entry.map_err(|e| self.bad(format!("reading the tar stream: {e}")))?;
            let kind = entry.header().entry_type();
            let size = entry
                .header()
                .entry_size()
                .map_err(|e| self.bad(format!("bad header: {e}")))?;
            match kind {
                tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
                | tar::EntryType::XHeader => {
                    if size > MAX_EXT_HEADER {
                        return Err(self.bad(format!(
                            "extended header of {size} bytes (limit {MAX_EXT_HEADER})"
                        )));
                    }
                    let mut data = Vec::with_capacity(size as usize);
                    entry
                        .read_to_end(&mut data)
                        .map_err(|e| self.bad(format!("reading an extended header: {e}")))?;
                    match kind {
                        tar::EntryType::GNULongName => {
                            trim_nul(&mut data);
                            pending.long_name = Some(data);
                        }
                        tar::EntryType::GNULongLink => {
                            trim_nul(&mut data);
                            pending.long_link = Some(data);
                        }
                        _ => pending.pax = parse_pax(&data).map_err(|r| self.bad(r.to_string()))?,
                    }
                    continue;
                }
                tar::EntryType::XGlobalHeader => {
                    if size > MAX_EXT_HEADER {
                        return Err(self.bad("global extended header too large"));
                    }
                    io::copy(&mut entry, &mut io::sink())
                        .map_err(|e| self.bad(format!("reading a global header: {e}")))?;
                    continue;
                }
                _ => {}
            }
            let p = std::mem::take(&mut pending);
            self.entry(&mut entry, &p, size)?;
        }
        if pending.long_name.is_some() || pending.long_link.is_some() || !pending.pax.is_empty() {
            return Err(self.bad("extended header without an entry after it"));
        }
        Ok(())
    }

    // Long: one arm per tar entry type (whiteouts, directories, files, links, devices, FIFOs),
    // each with its in-root and ownership rules; the arms share the entry's resolved parent.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        p: &Pending,
        size: u64,
    ) -> Result<()> {
        let header = entry.header().clone();
        let pax = |key: &[u8]| {
            p.pax
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_slice())
        };
        let path_bytes: Vec<u8> = match (&p.long_name, pax(b"path")) {
            (_, Some(v)) => v.to_vec(),
            (Some(n), None) => n.clone(),
            (None, None) => header.path_bytes().into_owned(),
        };
        let link_bytes: Option<Vec<u8>> = match (&p.long_link, pax(b"linkpath")) {
            (_, Some(v)) => Some(v.to_vec()),
            (Some(n), None) => Some(n.clone()),
            (None, None) => header.link_name_bytes().map(std::borrow::Cow::into_owned),
        };
        if let Some(v) = pax(b"size")
            && parse_num(v) != Some(size)
        {
            return Err(self.bad("PAX size records are not supported"));
        }
        let uid = match pax(b"uid") {
            Some(v) => parse_num(v).ok_or_else(|| self.bad("bad PAX uid"))?,
            None => header
                .uid()
                .map_err(|e| self.bad(format!("bad uid: {e}")))?,
        };
        let gid = match pax(b"gid") {
            Some(v) => parse_num(v).ok_or_else(|| self.bad("bad PAX gid"))?,
            None => header
                .gid()
                .map_err(|e| self.bad(format!("bad gid: {e}")))?,
        };
        let mtime: i64 = match pax(b"mtime") {
            Some(v) => {
                let s = String::from_utf8_lossy(v);
                let whole = s.split('.').next().unwrap_or("0");
                whole.parse().map_err(|_| self.bad("bad PAX mtime"))?
            }
            None => header
                .mtime()
                .map(|m| i64::try_from(m).unwrap_or(0))
                .map_err(|e| self.bad(format!("bad mtime: {e}")))?,
        };
        let mode = header
            .mode()
            .map_err(|e| self.bad(format!("bad mode: {e}")))?
            & 0o7777;
        let uid = u32::try_from(uid).map_err(|_| self.bad("uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| self.bad("gid out of range"))?;
        let xattrs: Vec<(&[u8], &[u8])> = p
            .pax
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(b"SCHILY.xattr.").map(|n| (n, v.as_slice())))
            .filter(|(n, _)| !n.starts_with(b"trusted.overlay."))
            .collect();

        let comps = normalise(&path_bytes).map_err(|r| self.bad(r.to_string()))?;
        let kind = header.entry_type();
        let Some((name, parents)) = comps.split_last() else {
            // The layer root itself ("./"): only a directory may describe it.
            if kind.is_dir() {
                self.apply_meta(self.root_fd(), c".", uid, gid, Some(mode), &[], &path_bytes)?;
                self.dirs.push((Vec::new(), mtime));
            }
            return Ok(());
        };
        let name = *name;
        if name.contains(&0) {
            return Err(self.bad("path contains a NUL byte"));
        }
        let parent_path = join(parents);
        self.stats.entries += 1;

        // Whiteouts.
        if name == OPAQUE {
            let (dir, _, _) = self.open_parent(&parent_path)?;
            return self.set_xattr_fd(dir.as_fd(), b"trusted.overlay.opaque", b"y", &path_bytes);
        }
        if let Some(target) = name.strip_prefix(WHITEOUT) {
            if target.is_empty()
                || target == b"."
                || target == b".."
                || target.starts_with(WHITEOUT)
            {
                return Err(self.bad(format!(
                    "bad whiteout {:?}",
                    String::from_utf8_lossy(&path_bytes)
                )));
            }
            let (dir, _, _) = self.open_parent(&parent_path)?;
            let target_c = cstr(target);
            self.create(
                dir.as_fd(),
                &target_c,
                &path_bytes,
                "create whiteout",
                || {
                    mknodat(
                        dir.as_fd(),
                        target_c.as_c_str(),
                        SFlag::S_IFCHR,
                        Mode::empty(),
                        0,
                    )
                },
            )?;
            return Ok(());
        }

        let (dir, new_owner, parent_sgid) = self.open_parent(&parent_path)?;
        let name_c = cstr(name);
        let dfd = dir.as_fd();
        match kind {
            tar::EntryType::Directory => {
                let (create_mode, _) = self.create_mode(mode);
                let created = match mkdirat(dfd, name_c.as_c_str(), create_mode) {
                    Ok(()) => true,
                    Err(Errno::EEXIST) => {
                        // A directory stays (and gets this entry's metadata); anything else
                        // is replaced.
                        self.clear(dfd, &name_c, true, &path_bytes)?;
                        match mkdirat(dfd, name_c.as_c_str(), create_mode) {
                            Ok(()) => true,
                            Err(Errno::EEXIST) => false,
                            Err(e) => return Err(self.sys("create directory", &path_bytes, e)),
                        }
                    }
                    Err(e) => return Err(self.sys("create directory", &path_bytes, e)),
                };
                // In a set-group-ID parent the new directory inherits the bit: chmod then.
                if created && !parent_sgid {
                    self.apply_new_meta(
                        dfd,
                        &name_c,
                        (uid, gid),
                        new_owner,
                        mode,
                        &xattrs,
                        &path_bytes,
                    )?;
                } else {
                    self.apply_meta(dfd, &name_c, uid, gid, Some(mode), &xattrs, &path_bytes)?;
                }
                self.dirs.push((path_bytes_norm(&comps), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let (create_mode, needs_chmod) = self.create_mode(mode);
                let fd = self.create(dfd, &name_c, &path_bytes, "create", || {
                    openat(
                        dfd,
                        name_c.as_c_str(),
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        create_mode,
                    )
                })?;
                let mut file = File::from(fd);
                let mut left = size;
                while left > 0 {
                    let want =
                        usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(self.buf.len());
                    let n = entry
                        .read(&mut self.buf[..want])
                        .map_err(|e| self.bad(format!("reading file data: {e}")))?;
                    if n == 0 {
                        return Err(self.bad("unexpected end of the tar stream"));
                    }
                    file.write_all(&self.buf[..n]).map_err(|e| Error::Io {
                        context: format!("cannot write {}", String::from_utf8_lossy(&path_bytes)),
                        source: e,
                    })?;
                    left -= n as u64;
                }
                self.stats.bytes += size;
                if let Some(f) = &mut self.flusher {
                    f.wrote(size);
                }
                let fd = file.as_fd();
                // A new file belongs to `new_owner` and has `create_mode` already.
                if self.privileged && (uid, gid) != new_owner {
                    nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                        .map_err(|e| self.sys("chown", &path_bytes, e))?;
                }
                if needs_chmod {
                    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode))
                        .map_err(|e| self.sys("chmod", &path_bytes, e))?;
                }
                for (n, v) in &xattrs {
                    self.set_xattr_fd(fd, n, v, &path_bytes)?;
                }
                let t = TimeSpec::new(mtime, 0);
                nix::sys::stat::futimens(fd, &t, &t)
                    .map_err(|e| self.sys("set times of", &path_bytes, e))?;
            }
            tar::EntryType::Symlink => {
                let target = link_bytes.ok_or_else(|| self.bad("symlink without a target"))?;
                if target.contains(&0) || target.len() > MAX_PATH {
                    return Err(self.bad("bad symlink target"));
                }
                self.create(dfd, &name_c, &path_bytes, "create symlink", || {
                    symlinkat(OsStr::from_bytes(&target), dfd, name_c.as_c_str())
                })?;
                if self.privileged && (uid, gid) != new_owner {
                    fchownat(
                        dfd,
                        name_c.as_c_str(),
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| self.sys("chown", &path_bytes, e))?;
                }
                for (n, v) in &xattrs {
                    self.set_xattr_at(dfd, &name_c, n, v, &path_bytes)?;
                }
                self.set_times(dfd, &name_c, mtime, &path_bytes)?;
            }
            tar::EntryType::Link => {
                let target = link_bytes.ok_or_else(|| self.bad("hard link without a target"))?;
                let tcomps =
                    normalise(&target).map_err(|r| self.bad(format!("hard link target: {r}")))?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(self.bad("hard link to the layer root"));
                };
                let tname_c = cstr(tname);
                let tdir = self.open_existing_parent(&join(tparents), &target)?;
                self.create(dfd, &name_c, &path_bytes, "create hard link", || {
                    linkat(
                        tdir.as_fd(),
                        tname_c.as_c_str(),
                        dfd,
                        name_c.as_c_str(),
                        AtFlags::empty(),
                    )
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.create(dfd, &name_c, &path_bytes, "create device node", || {
                    mknodat(
                        dfd,
                        name_c.as_c_str(),
                        sflag,
                        Mode::from_bits_truncate(0o600),
                        nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
                    )
                })?;
                self.apply_meta(dfd, &name_c, uid, gid, Some(mode), &xattrs, &path_bytes)?;
                self.set_times(dfd, &name_c, mtime, &path_bytes)?;
            }
            other => {
                return Err(self.bad(format!(
                    "unsupported tar entry type {other:?} for {:?}",
                    String::from_utf8_lossy(&path_bytes)
                )));
            }
        }
        Ok(())
    }

    fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens the directory `path` (normalised, relative to the root) resolving inside the root,
    /// creating missing directories (mode 0755, root-owned) as tar does. The last one stays
    /// open: entries of one directory come one after another in a layer. Returns the fd, the
    /// owner a new entry in it gets, and whether it is set-group-ID (a directory made in it
    /// inherits the bit).
    fn open_parent(&mut self, path: &[u8]) -> Result<(Rc<OwnedFd>, (u32, u32), bool)> {
        if let Some(p) = &self.parent_cache
            && p.path == path
        {
            let sgid = p.sgid_group.is_some();
            return Ok((p.fd.clone(), self.new_owner(p.sgid_group), sgid));
        }
        let fd = Rc::new(self.open_dir_creating(path)?);
        let st = nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| self.sys("inspect directory", path, e))?;
        let sgid_group = (st.st_mode & libc::S_ISGID != 0).then_some(st.st_gid);
        self.parent_cache = Some(Parent {
            path: path.to_vec(),
            fd: fd.clone(),
            sgid_group,
        });
        Ok((fd, self.new_owner(sgid_group), sgid_group.is_some()))
    }

    /// Who owns an entry created in a directory (`sgid_group`: see [`Parent`]).
    fn new_owner(&self, sgid_group: Option<u32>) -> (u32, u32) {
        (self.owner.0, sgid_group.unwrap_or(self.owner.1))
    }

    /// The mode to create an entry with (what `mode` asks, minus the bits the kernel would
    /// drop), and whether a chmod must follow: set-ID and sticky bits, bits the umask
    /// removes, and set-ID bits a chown clears are only right after an explicit chmod.
    fn create_mode(&self, mode: u32) -> (Mode, bool) {
        let perm = mode & 0o777;
        (
            Mode::from_bits_truncate(perm),
            mode & 0o7000 != 0 || perm & self.umask != 0,
        )
    }

    fn open_dir_creating(&self, path: &[u8]) -> Result<OwnedFd> {
        if path.is_empty() {
            return self.root.try_clone().map_err(|e| Error::Io {
                context: "cannot duplicate a directory fd".into(),
                source: e,
            });
        }
        let how = in_root_how(OFlag::O_RDONLY | OFlag::O_DIRECTORY);
        match openat2(self.root.as_fd(), cstr(path).as_c_str(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.sys("open directory", path, e)),
        }
        // Create the missing directories one level at a time, each resolved inside the root.
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        let mut dir = self.root.try_clone().map_err(|e| Error::Io {
            context: "cannot duplicate a directory fd".into(),
            source: e,
        })?;
        for i in 0..comps.len() {
            let prefix = join(&comps[..=i]);
            match openat2(self.root.as_fd(), cstr(&prefix).as_c_str(), how) {
                Ok(fd) => dir = fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(
                        dir.as_fd(),
                        cstr(comps[i]).as_c_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.sys("create directory", &prefix, e)),
                    }
                    dir = openat2(self.root.as_fd(), cstr(&prefix).as_c_str(), how)
                        .map_err(|e| self.sys("open directory", &prefix, e))?;
                }
                Err(e) => return Err(self.sys("open directory", &prefix, e)),
            }
        }
        Ok(dir)
    }

    /// Opens an existing directory (for hard-link targets), resolving inside the root.
    fn open_existing_parent(&self, path: &[u8], whole: &[u8]) -> Result<OwnedFd> {
        if path.is_empty() {
            return self.root.try_clone().map_err(|e| Error::Io {
                context: "cannot duplicate a directory fd".into(),
                source: e,
            });
        }
        openat2(
            self.root.as_fd(),
            cstr(path).as_c_str(),
            in_root_how(OFlag::O_PATH | OFlag::O_DIRECTORY),
        )
        .map_err(|e| self.sys("find hard link target", whole, e))
    }

    /// Creates the entry `name` in `dir` with `make` (a no-follow `*at` call that fails with
    /// `EEXIST` when the name is taken); a name taken by an earlier entry is cleared (see
    /// [`Self::clear`]) and `make` tried once more. The common case costs one call.
    fn create<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CString,
        whole: &[u8],
        what: &str,
        mut make: impl FnMut() -> nix::Result<T>,
    ) -> Result<T> {
        match make() {
            Err(Errno::EEXIST) => {
                self.clear(dir, name, false, whole)?;
                make().map_err(|e| self.sys(what, whole, e))
            }
            r => r.map_err(|e| self.sys(what, whole, e)),
        }
    }

    /// Makes room for a new entry `name` in `dir`: an existing non-directory is removed; an
    /// existing directory is kept if the new entry is a directory too, else removed with its
    /// contents.
    fn clear(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CString,
        new_is_dir: bool,
        whole: &[u8],
    ) -> Result<()> {
        let st = match nix::sys::stat::fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.sys("inspect", whole, e)),
        };
        let is_dir = (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
        if is_dir && new_is_dir {
            return Ok(());
        }
        // Something is replaced: cached parent fds may point into it.
        self.parent_cache = None;
        if is_dir {
            remove_tree_at(dir, name).map_err(|e| self.sys("remove", whole, e))
        } else {
            unlinkat(dir, name.as_c_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| self.sys("remove", whole, e))
        }
    }

    /// chown (when root), chmod (unless `mode` is None: symlinks) and xattrs of `name` in `dir`,
    /// never following a symlink.
    fn apply_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        xattrs: &[(&[u8], &[u8])],
        whole: &[u8],
    ) -> Result<()> {
        let owner = self.privileged.then_some((uid, gid));
        self.set_meta(dir, name, owner, mode, xattrs, whole)
    }

    /// Like [`Self::apply_meta`] for an entry this unpack just created with
    /// [`Self::create_mode`] and owned by `new_owner`: skips the chown and chmod calls that
    /// would change nothing.
    fn apply_new_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        owner: (u32, u32),
        new_owner: (u32, u32),
        mode: u32,
        xattrs: &[(&[u8], &[u8])],
        whole: &[u8],
    ) -> Result<()> {
        let chown = (self.privileged && owner != new_owner).then_some(owner);
        let chmod = self.create_mode(mode).1.then_some(mode);
        self.set_meta(dir, name, chown, chmod, xattrs, whole)
    }

    /// chown to `owner` and chmod to `mode` when given, then the xattrs; the entry is not a
    /// symlink when `mode` is given (it was just created by this unpack).
    fn set_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        xattrs: &[(&[u8], &[u8])],
        whole: &[u8],
    ) -> Result<()> {
        if let Some((uid, gid)) = owner {
            fchownat(
                dir,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.sys("chown", whole, e))?;
        }
        if let Some(mode) = mode {
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| self.sys("chmod", whole, e))?;
        }
        for (n, v) in xattrs {
            self.set_xattr_at(dir, name, n, v, whole)?;
        }
        Ok(())
    }

    fn set_times(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        mtime: i64,
        whole: &[u8],
    ) -> Result<()> {
        let t = TimeSpec::new(mtime, 0);
        nix::sys::stat::utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.sys("set times of", whole, e))
    }

    fn set_xattr_fd(
        &self,
        fd: BorrowedFd<'_>,
        name: &[u8],
        value: &[u8],
        whole: &[u8],
    ) -> Result<()> {
        let rc = rustix::fs::fsetxattr(
            fd,
            OsStr::from_bytes(name),
            value,
            rustix::fs::XattrFlags::empty(),
        );
        self.xattr_result(rc, name, whole)
    }

    fn set_xattr_at(
        &self,
        dir: BorrowedFd<'_>,
        entry: &std::ffi::CStr,
        name: &[u8],
        value: &[u8],
        whole: &[u8],
    ) -> Result<()> {
        // No *at variant of setxattr on older kernels: go through the directory fd's /proc
        // link (the directory was resolved inside the root) and do not follow the last
        // component (lsetxattr).
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(entry.to_bytes());
        let rc = rustix::fs::lsetxattr(
            OsStr::from_bytes(&p),
            OsStr::from_bytes(name),
            value,
            rustix::fs::XattrFlags::empty(),
        );
        self.xattr_result(rc, name, whole)
    }

    fn xattr_result(&self, rc: rustix::io::Result<()>, name: &[u8], whole: &[u8]) -> Result<()> {
        let Err(e) = rc else {
            return Ok(());
        };
        let e = Errno::from_raw(e.raw_os_error());
        // security.* labels the host cannot hold (SELinux off, …) are skipped, as tar does.
        if name.starts_with(b"security.")
            && matches!(e, Errno::ENOTSUP | Errno::EPERM | Errno::EINVAL)
        {
            return Ok(());
        }
        Err(self.sys(
            &format!("set xattr {} on", String::from_utf8_lossy(name)),
            whole,
            e,
        ))
    }

    /// Sets directory times last (creating children changes them), deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        self.parent_cache = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
        for (path, mtime) in dirs {
            let fd = if path.is_empty() {
                self.root.try_clone().map_err(|e| Error::Io {
                    context: "cannot duplicate a directory fd".into(),
                    source: e,
                })?
            } else {
                match openat2(
                    self.root.as_fd(),
                    cstr(&path).as_c_str(),
                    in_root_how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
                ) {
                    Ok(fd) => fd,
                    // Replaced by a later entry: nothing to do.
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                    Err(e) => return Err(self.sys("open directory", &path, e)),
                }
            };
            let t = TimeSpec::new(mtime, 0);
            nix::sys::stat::futimens(fd.as_fd(), &t, &t)
                .map_err(|e| self.sys("set times of", &path, e))?;
        }
        Ok(())
    }
}

/// The process umask, read from `/proc/self/status` (`umask(2)` can only read it by changing
/// it, which would race with other threads creating files). If it cannot be read, every bit
/// counts as masked, so every mode gets its explicit chmod.
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

fn path_bytes_norm(comps: &[&[u8]]) -> Vec<u8> {
    join(comps)
}

fn trim_nul(v: &mut Vec<u8>) {
    while v.last() == Some(&0) {
        v.pop();
    }
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX records as (key, value) pairs.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Parses PAX records: `"<len> <key>=<value>\n"` repeated.
fn parse_pax(mut data: &[u8]) -> std::result::Result<PaxRecords, EntryError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or(EntryError::PaxNoLength)?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(EntryError::PaxLength)?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(EntryError::PaxLength);
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or(EntryError::PaxNoEquals)?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// Removes the directory `name` in `dir` and everything below it, never following symlinks.
fn remove_tree_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> std::result::Result<(), Errno> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut children: Vec<(CString, bool)> = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name();
        if n.to_bytes() == b"." || n.to_bytes() == b".." {
            continue;
        }
        let is_dir = matches!(e.file_type(), Some(nix::dir::Type::Directory));
        children.push((n.to_owned(), is_dir));
    }
    for (n, is_dir) in children {
        if is_dir {
            remove_tree_at(d.as_fd(), &n)?;
        } else {
            match unlinkat(d.as_fd(), n.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(Errno::EISDIR) => remove_tree_at(d.as_fd(), &n)?,
                Err(e) => return Err(e),
            }
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncompressed_size_from_headers_and_trailers() {
        use std::io::Write;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let check = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            uncompressed_size(&std::fs::File::open(&p).unwrap()).unwrap()
        };
        assert_eq!(check("plain", &data), data.len() as u64);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < data.len());
        assert_eq!(check("gz", &gz), data.len() as u64);
        let zs = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(check("zst", &zs), data.len() as u64);
        // A zstd stream that does not record its size: the compressed size.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.write_all(&data).unwrap();
        let streamed = enc.finish().unwrap();
        let got = check("zst-stream", &streamed);
        assert!(got == data.len() as u64 || got == streamed.len() as u64);
    }

    #[test]
    fn normalise_rejects_escapes() {
        assert!(normalise(b"/etc/passwd").is_err());
        assert!(normalise(b"../x").is_err());
        assert!(normalise(b"a/../../x").is_err());
        assert_eq!(normalise(b"./a/./b/../c/").unwrap(), vec![&b"a"[..], b"c"]);
        assert!(normalise(b"./").unwrap().is_empty());
    }

    #[test]
    fn pax_records() {
        let r = parse_pax(b"30 mtime=1350244992.023960108\n19 path=a/long/nam\n").unwrap();
        assert_eq!(r[0].0, b"mtime");
        assert_eq!(r[1].1, b"a/long/nam");
        assert!(parse_pax(b"99 path=x\n").is_err());
    }
}
