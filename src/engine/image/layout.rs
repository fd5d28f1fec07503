//! The OCI image layout on disk: `<root>/images/{oci-layout, index.json, blobs/sha256/<hex>}`.
//!
//! Every piece of an image — manifest, config, layers — is a *blob* named by the sha256 digest
//! of its bytes. `index.json` lists the manifests the store holds; each entry that has a name
//! carries it in the annotation `org.opencontainers.image.ref.name` (tug writes the full,
//! normalised reference there, e.g. `docker.io/library/busybox:latest`), so other OCI tools
//! (`skopeo copy oci:<root>/images:NAME …`) read the store as it is.
//!
//! A blob is written to `.ingest/` first, hashed while it is written, and renamed into
//! `blobs/sha256/` only when its digest is the expected one: a blob file that exists is
//! complete and correct. `index.json` is replaced atomically under the index lock.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{self, HashingWriter, io_ctx};
use super::reference::validate_digest;
use super::{Error, Result};

/// The annotation that names a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of a Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Largest manifest or image index tug reads into memory: 4 MiB, the size the OCI
/// distribution spec asks registries to accept at least. A larger one is refused before it
/// is read whole.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config tug reads into memory: 16 MiB.
pub const MAX_CONFIG: u64 = 16 << 20;

/// Refuses a descriptor whose size is over `limit` (one of [`MAX_MANIFEST`],
/// [`MAX_CONFIG`], whole MiB) before anything of it is fetched or read; `kind` names the
/// limit.
pub fn check_limit(what: &str, size: u64, limit: u64, kind: &str) -> Result<()> {
    if size > limit {
        return Err(Error::Size {
            what: what.to_string(),
            reason: format!(
                "{size} bytes, over the {} MiB limit for {kind}",
                limit >> 20
            ),
        });
    }
    Ok(())
}

/// Refuses content of `actual` bytes whose descriptor says `declared`; `source` says where
/// the content is (`the archive holds`, `the registry sent`).
pub fn check_size(what: &str, declared: u64, actual: u64, source: &str) -> Result<()> {
    if declared != actual {
        return Err(Error::Size {
            what: what.to_string(),
            reason: format!("its descriptor says {declared} bytes, {source} {actual}"),
        });
    }
    Ok(())
}

/// Layer media types tug can unpack (compression is detected from the bytes).
pub const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// One manifest entry of `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// Media type of the manifest.
    pub media_type: String,
    /// Digest of the manifest.
    pub digest: String,
    /// Size of the manifest in bytes.
    pub size: u64,
    /// Annotations; `org.opencontainers.image.ref.name` names the image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Other fields (platform, …) kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl IndexEntry {
    /// The entry's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

/// `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    /// The manifests.
    #[serde(default)]
    pub manifests: Vec<IndexEntry>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: Vec::new(),
            extra: serde_json::Map::new(),
        }
    }
}

/// What [`Layout::repair_index`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRepair {
    /// Where the damaged `index.json` was kept.
    pub damaged: PathBuf,
    /// Why it did not parse.
    pub reason: String,
    /// Named entries recovered from `index.json.prev`.
    pub named: usize,
    /// Image manifests found among the blobs and listed without a name.
    pub unnamed: usize,
}

/// The layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens (creating if needed) the layout at `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        for d in [dir.join("blobs/sha256"), dir.join(".ingest")] {
            crate::engine::private::create_dir_all(&d)
                .map_err(io_ctx(format!("cannot create {}", d.display())))?;
        }
        let layout = Self {
            dir: dir.to_path_buf(),
        };
        let marker = dir.join("oci-layout");
        if marker.exists() && layout.index_path().exists() {
            return Ok(layout);
        }
        // First use: create the files under the index lock, so concurrent first commands do
        // not trip over each other's temporary files.
        let _guard = fsutil::lock(&dir.join(".index.lock"), fsutil::LockKind::Exclusive)?;
        if !marker.exists() {
            fsutil::write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !layout.index_path().exists() {
            layout.write_index(&Index::default())?;
        }
        Ok(layout)
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// Where temporary blobs are written.
    pub fn ingest_dir(&self) -> PathBuf {
        self.dir.join(".ingest")
    }

    /// The path of the blob `digest` (which must be a valid sha256 digest).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        validate_digest(digest).map_err(|reason| Error::Corrupt(format!("{digest}: {reason}")))?;
        Ok(self.dir.join("blobs/sha256").join(&digest[7..]))
    }

    /// True if the blob is present.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// Reads a (small) blob and checks its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::Corrupt(format!("blob {digest} is missing")));
            }
            Err(e) => return Err(io_ctx(format!("cannot read {}", path.display()))(e)),
        };
        let actual = fsutil::sha256_digest(&data);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", path.display()),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::Corrupt(format!("blob {digest} is missing"))
            } else {
                io_ctx(format!("cannot open {}", path.display()))(e)
            }
        })
    }

    /// Stores `data` as a blob and returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<String> {
        let digest = fsutil::sha256_digest(data);
        if !self.has_blob(&digest) {
            let mut w = self.ingest()?;
            w.write_all(data)
                .map_err(io_ctx("cannot write a blob to the ingest directory"))?;
            w.commit(Some(&digest))?;
        }
        Ok(digest)
    }

    /// Starts writing a blob of unknown digest.
    pub fn ingest(&self) -> Result<BlobWriter> {
        let path = self
            .ingest_dir()
            .join(format!("blob-{}", fsutil::random_suffix()));
        let file = crate::engine::private::open_options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_ctx(format!("cannot create {}", path.display())))?;
        Ok(BlobWriter {
            layout: self.clone(),
            path: Some(path),
            writer: Some(HashingWriter::new(BufWriter::with_capacity(1 << 20, file))),
            kicked: 0,
        })
    }

    /// Reads `index.json`.
    ///
    /// # Errors
    /// [`Error::DamagedIndex`] when the file does not parse (see [`Layout::repair_index`]).
    pub fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        match Self::read_index_at(&path)? {
            Some(Ok(index)) => Ok(index),
            Some(Err(reason)) => Err(Error::DamagedIndex { path, reason }),
            None => Ok(Index::default()),
        }
    }

    /// `None` when the file is missing; `Some(Err(why))` when it does not parse.
    fn read_index_at(path: &Path) -> Result<Option<std::result::Result<Index, serde_json::Error>>> {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_ctx(format!("cannot read {}", path.display()))(e)),
        };
        Ok(Some(serde_json::from_slice(&data)))
    }

    fn prev_index_path(&self) -> PathBuf {
        self.dir.join("index.json.prev")
    }

    /// Replaces `index.json` atomically. Callers hold the index lock.
    ///
    /// The version it replaces stays as `index.json.prev` (a hard link, so nothing is
    /// copied): if `index.json` is ever damaged, [`Layout::repair_index`] gets every name
    /// back from it but those of the last change.
    pub fn write_index(&self, index: &Index) -> Result<()> {
        let data = serde_json::to_vec_pretty(index)
            .map_err(|e| Error::Corrupt(format!("cannot serialise index.json: {e}")))?;
        let current = self.index_path();
        if matches!(Self::read_index_at(&current), Ok(Some(Ok(_)))) {
            // Best effort: a missing backup costs names only if the index is damaged later.
            let tmp = self
                .dir
                .join(format!(".tmp-prev-{}", fsutil::random_suffix()));
            if fs::hard_link(&current, &tmp).is_ok()
                && fs::rename(&tmp, self.prev_index_path()).is_err()
            {
                let _ = fs::remove_file(&tmp);
            }
        }
        fsutil::write_atomic(&current, &data)
    }

    /// Rebuilds a damaged `index.json`; callers hold the index lock. The entries of
    /// `index.json.prev` whose manifests are still stored keep their names; every other
    /// image manifest among the blobs is listed without a name (as a dangling image), so
    /// no image is lost and garbage collection removes nothing that was in use. The
    /// damaged file is kept as `index.json.damaged-<seconds since the epoch>`.
    ///
    /// Returns `None` when the index is not damaged (another process repaired it first).
    ///
    /// # Errors
    /// The blobs cannot be listed or the new index cannot be written.
    pub fn repair_index(&self) -> Result<Option<IndexRepair>> {
        let path = self.index_path();
        let Some(Err(reason)) = Self::read_index_at(&path)? else {
            return Ok(None);
        };
        let mut index = match Self::read_index_at(&self.prev_index_path()) {
            Ok(Some(Ok(prev))) => prev,
            _ => Index::default(),
        };
        index.manifests.retain(|e| self.has_blob(&e.digest));
        let named = index
            .manifests
            .iter()
            .filter(|e| e.name().is_some())
            .count();
        let known: std::collections::HashSet<String> =
            index.manifests.iter().map(|e| e.digest.clone()).collect();
        let mut found = Vec::new();
        for digest in self.blob_digests()? {
            if known.contains(&digest) {
                continue;
            }
            if let Some(entry) = self.manifest_entry(&digest) {
                found.push(entry);
            }
        }
        found.sort_by(|a, b| a.digest.cmp(&b.digest));
        let unnamed = found.len();
        index.manifests.extend(found);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kept = self.dir.join(format!("index.json.damaged-{secs}"));
        fs::rename(&path, &kept).map_err(io_ctx(format!(
            "cannot move the damaged {} aside",
            path.display()
        )))?;
        // The damaged file must not become the backup.
        fsutil::write_atomic(
            &path,
            &serde_json::to_vec_pretty(&index)
                .map_err(|e| Error::Corrupt(format!("cannot serialise index.json: {e}")))?,
        )?;
        Ok(Some(IndexRepair {
            damaged: kept,
            reason: reason.to_string(),
            named,
            unnamed,
        }))
    }

    /// An index entry for the blob `digest` if it is an image manifest (small JSON with a
    /// config descriptor and a list of layers).
    fn manifest_entry(&self, digest: &str) -> Option<IndexEntry> {
        let path = self.blob_path(digest).ok()?;
        let size = fs::metadata(&path).ok()?.len();
        if size > MAX_MANIFEST {
            return None;
        }
        let data = self.read_blob(digest).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
        let config = v.get("config")?;
        config.get("digest")?.as_str()?;
        v.get("layers")?.as_array()?;
        let media_type = v
            .get("mediaType")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(OCI_MANIFEST)
            .to_string();
        if ![OCI_MANIFEST, DOCKER_MANIFEST].contains(&media_type.as_str()) {
            return None;
        }
        Some(IndexEntry {
            media_type,
            digest: digest.to_string(),
            size,
            annotations: BTreeMap::new(),
            extra: serde_json::Map::new(),
        })
    }

    /// Digests of every blob file present.
    pub fn blob_digests(&self) -> Result<Vec<String>> {
        let dir = self.dir.join("blobs/sha256");
        let rd = fs::read_dir(&dir).map_err(io_ctx(format!("cannot list {}", dir.display())))?;
        Ok(rd
            .filter_map(std::result::Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && super::reference::is_lower_hex(n))
            .map(|n| format!("sha256:{n}"))
            .collect())
    }
}

/// Bytes of a blob written between two writeback kicks (see [`BlobWriter`]).
const KICK: u64 = 8 << 20;

/// A blob being written: hashed as it goes, renamed into place by [`BlobWriter::commit`],
/// removed if dropped uncommitted. Every 8 MiB it asks the kernel to start writing what it
/// has so far to disk (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so
/// the `fsync` of `commit` finds most of a large blob already written instead of starting
/// all of it then.
pub struct BlobWriter {
    layout: Layout,
    path: Option<PathBuf>,
    writer: Option<HashingWriter<BufWriter<File>>>,
    /// Bytes of the file whose writeback has been started.
    kicked: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.as_ref().map_or(0, HashingWriter::count)
    }

    /// Flushes, checks the digest against `expected` (if given), and makes the blob visible.
    /// Returns (digest, size).
    pub fn commit(mut self, expected: Option<&str>) -> Result<(String, u64)> {
        let path = self.path.take().unwrap_or_default();
        let result = self.commit_inner(&path, expected);
        if result.is_err() {
            let _ = fs::remove_file(&path);
        }
        result
    }

    fn commit_inner(&mut self, path: &Path, expected: Option<&str>) -> Result<(String, u64)> {
        let Some(writer) = self.writer.take() else {
            return Err(Error::Corrupt("blob writer used twice".into()));
        };
        let (buf, digest, size) = writer.finish();
        let file = buf
            .into_inner()
            .map_err(|e| io_ctx(format!("cannot write {}", path.display()))(e.into_error()))?;
        file.sync_all()
            .map_err(io_ctx(format!("cannot sync {}", path.display())))?;
        drop(file);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(Error::DigestMismatch {
                what: "blob".to_string(),
                expected: expected.to_string(),
                actual: digest,
            });
        }
        let dest = self.layout.blob_path(&digest)?;
        fs::rename(path, &dest)
            .map_err(io_ctx(format!("cannot rename into {}", dest.display())))?;
        fsutil::sync_dir(dest.parent().unwrap_or(Path::new(".")))?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(w) = &mut self.writer else {
            return Err(io::Error::other("blob writer closed"));
        };
        let n = w.write(buf)?;
        // What the file holds (the rest still sits in the BufWriter).
        let in_file = w.count() - w.inner.buffer().len() as u64;
        if in_file - self.kicked >= KICK {
            start_writeback(w.inner.get_ref(), self.kicked, in_file - self.kicked);
            self.kicked = in_file;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.writer {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Starts writing `len` bytes of `file` from `offset` to disk without waiting for it. Only a
/// hint: an error changes nothing (the `fsync` that follows is what counts).
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: `file` is an open descriptor for the duration of the call; sync_file_range
    // reads no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// Reads everything from `r` (used for small JSON documents).
pub fn read_all(mut r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    r.by_ref()
        .take(limit + 1)
        .read_to_end(&mut v)
        .map_err(io_ctx(format!("cannot read {what}")))?;
    if v.len() as u64 > limit {
        return Err(Error::Corrupt(format!(
            "{what} is larger than {limit} bytes"
        )));
    }
    Ok(v)
}
