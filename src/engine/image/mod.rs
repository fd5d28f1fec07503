//! The image store: OCI image layout, layer cache, import/load/save, registry pull/push, and
//! offline base images.
//!
//! An *image* is a manifest that names a config blob (the run defaults: command, env, user,
//! working dir, … and the list of layer `diff_ids`) and an ordered list of layer blobs
//! (compressed tar streams of file-system changes). An image's id is the digest of its config,
//! as in Docker. The store keeps everything under the state root:
//!
//! ```text
//! <root>/images/              OCI image layout (oci-layout, index.json, blobs/sha256/<hex>)
//! <root>/images/.ingest/      blobs and archives being written (removed by the next command)
//! <root>/images/.lock         store lock: shared while adding content, exclusive for GC
//! <root>/images/.index.lock   serialises read-modify-write of index.json
//! <root>/layers/<diff hex>/   each layer unpacked once, keyed by its diff_id, with overlayfs
//!                             whiteouts; the runtime stacks these with overlayfs
//! <root>/layers/.tmp-*, .del-*  layers being unpacked or removed
//! ```
//!
//! Invariants: a blob file exists only when complete and digest-verified; a layer directory
//! exists only when completely unpacked and its diff_id verified; `index.json` is replaced
//! atomically; a process killed at any point leaves only `.ingest/` files and `.tmp-`/`.del-`
//! directories, which the next command that can take the store lock exclusively removes.
//! A damaged `index.json` is rebuilt when the store is opened, from the previous version
//! (`index.json.prev`) and the manifests among the blobs ([`Layout::repair_index`]).

mod archive;
pub mod auth;
mod bootstrap;
mod fsutil;
mod import;
pub mod layout;
mod platform;
mod reference;
mod registry;
mod unpack;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};

pub use archive::Loaded;
pub use bootstrap::{BUSYBOX, BootstrapEvent, DebianOptions, busybox_tar};
pub use import::{ChangeError, ImportOptions};
pub(crate) use import::{apply_change, now_rfc3339};
pub use layout::{Index, IndexEntry, IndexRepair, Layout};
pub use reference::{DEFAULT_TAG, DOCKER_HUB, Reference};
pub use registry::{Progress, ProgressFn, login, logout, no_progress};
pub use unpack::{Compression, Stats as UnpackStats, decompress as decompress_any};

use fsutil::{LockGuard, LockKind, io_ctx};

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reference that does not parse.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No image matches.
    #[error("no such image: {0}")]
    NotFound(String),
    /// An id prefix matches several images.
    #[error("image id prefix {prefix} is ambiguous: it matches {count} images")]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// How many images it matches.
        count: usize,
    },
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Content did not hash to the digest it should have.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The expected digest.
        expected: String,
        /// The digest of the content.
        actual: String,
    },
    /// A layer that cannot or must not be unpacked.
    #[error("invalid layer {layer}: {reason}")]
    BadLayer {
        /// The layer (digest or source).
        layer: String,
        /// What is wrong.
        reason: String,
    },
    /// A media type tug does not handle.
    #[error("unsupported media type {media_type} in {reference}")]
    UnsupportedMediaType {
        /// The media type.
        media_type: String,
        /// The image or blob it appeared in.
        reference: String,
    },
    /// The store's files are not what they should be.
    #[error("corrupt image store: {0}")]
    Corrupt(String),
    /// `index.json` does not parse (opening the store repairs it: [`Layout::repair_index`]).
    #[error("damaged image index {}: {reason}", path.display())]
    DamagedIndex {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        reason: serde_json::Error,
    },
    /// A `--change` instruction tug cannot apply.
    #[error("invalid change {change:?}: {reason}")]
    BadChange {
        /// The instruction.
        change: String,
        /// Why.
        #[source]
        reason: import::ChangeError,
    },
    /// Removing an image that must not be removed without force.
    #[error("cannot remove {image}: {reason}")]
    Conflict {
        /// The image as named by the user.
        image: String,
        /// Why.
        reason: String,
    },
    /// Content whose size is not the size its descriptor gives, or is over tug's limit for
    /// its kind (manifests and indexes 4 MiB, configs 16 MiB).
    #[error("invalid size of {what}: {reason}")]
    Size {
        /// What was checked.
        what: String,
        /// The sizes.
        reason: String,
    },
    /// An archive (docker-archive / oci-archive) that cannot be read.
    #[error("invalid archive {archive}: {reason}")]
    BadArchive {
        /// The archive path.
        archive: String,
        /// What is wrong.
        reason: String,
    },
    /// A helper program failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The program.
        tool: String,
        /// Exit status and the tail of its output.
        detail: String,
    },
    /// The registry has no such repository.
    #[error("unknown image {0}: the registry has no such repository")]
    UnknownImage(String),
    /// The repository has no such tag or digest.
    #[error("unknown tag {0}: the registry has no such tag or digest")]
    UnknownTag(String),
    /// The registry refused the credentials (or their absence).
    #[error("authentication refused for {reference}: {reason}")]
    AuthRefused {
        /// The reference or registry.
        reference: String,
        /// What the registry said.
        reason: String,
    },
    /// The registry cannot be reached.
    #[error("registry for {reference} is unreachable: {reason}")]
    Unreachable {
        /// The reference.
        reference: String,
        /// The network error.
        reason: String,
    },
    /// Any other registry error.
    #[error("registry error for {reference}: {reason}")]
    Registry {
        /// The reference or registry.
        reference: String,
        /// What went wrong.
        reason: String,
    },
    /// A verb that is not implemented yet.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
}

/// Result alias of the image store.
pub type Result<T> = std::result::Result<T, Error>;

/// An image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<hex>` of the config blob (Docker's image id).
    pub id: String,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// Media type of the manifest.
    pub manifest_media_type: String,
    /// Full, normalised names (`docker.io/library/busybox:latest`), sorted.
    pub names: Vec<String>,
    /// The image config (run defaults, layer diff_ids, history).
    pub config: ImageConfiguration,
    /// The manifest (config and layer descriptors).
    pub manifest: ImageManifest,
    /// Sum of the layer blob sizes plus the config size, in bytes.
    pub size: u64,
}

impl Image {
    /// The layer diff_ids, lowest first.
    #[must_use]
    pub fn diff_ids(&self) -> &[String] {
        self.config.rootfs().diff_ids()
    }

    /// The names in the short form Docker shows (`busybox:latest`).
    #[must_use]
    pub fn familiar_names(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|n| Reference::parse(n).map_or_else(|_| n.clone(), |r| r.familiar()))
            .collect()
    }

    /// The 12-hex-digit short id.
    #[must_use]
    pub fn short_id(&self) -> &str {
        let hex = self.id.strip_prefix("sha256:").unwrap_or(&self.id);
        &hex[..hex.len().min(12)]
    }
}

/// What `remove` did.
#[derive(Debug, Default, Clone)]
pub struct RemoveReport {
    /// Names removed (full form).
    pub untagged: Vec<String>,
    /// Image ids deleted.
    pub deleted: Vec<String>,
}

/// What `prune` / garbage collection removed.
#[derive(Debug, Default, Clone)]
pub struct PruneReport {
    /// Image ids deleted.
    pub images_deleted: Vec<String>,
    /// Blobs removed.
    pub blobs_removed: usize,
    /// Layer directories removed.
    pub layers_removed: usize,
    /// Bytes of blobs freed.
    pub bytes_freed: u64,
}

/// The image store at `<root>/images` and `<root>/layers`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    layout: Layout,
    layers: PathBuf,
    repair: Option<IndexRepair>,
}

impl ImageStore {
    /// Opens (creating if needed) the store under the state root `root`, and removes what a
    /// killed command left behind if no other tug process is using the store.
    pub fn open(root: &Path) -> Result<Self> {
        let root = crate::engine::root::StateRoot::at(root)
            .map_err(io_ctx(format!("cannot open {}", root.display())))?;
        Self::open_in(&root)
    }

    /// The image store of an opened state root.
    ///
    /// # Errors
    /// The layout cannot be opened or made.
    pub fn open_in(root: &crate::engine::root::StateRoot) -> Result<Self> {
        let layout = Layout::open(&root.images())?;
        let layers = root.layers();
        // Private: a layer may hold a directory that is 1777 inside the image, or setuid files.
        crate::engine::private::create_dir_all(&layers)
            .map_err(io_ctx(format!("cannot create {}", layers.display())))?;
        let mut store = Self {
            root: root.path().to_path_buf(),
            layout,
            layers,
            repair: None,
        };
        store.cleanup_leftovers()?;
        if matches!(store.layout.read_index(), Err(Error::DamagedIndex { .. })) {
            let _index = store.lock_index()?;
            store.repair = store.layout.repair_index()?;
        }
        Ok(store)
    }

    /// What opening the store repaired, if `index.json` was damaged (for the caller to tell
    /// the user once: the next command finds a sound index).
    #[must_use]
    pub fn repaired(&self) -> Option<&IndexRepair> {
        self.repair.as_ref()
    }

    /// The state root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI layout directory (`<root>/images`).
    #[must_use]
    pub fn layout_dir(&self) -> &Path {
        self.layout.dir()
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    fn lock_path(&self) -> PathBuf {
        self.layout.dir().join(".lock")
    }

    /// Shared store lock: held while adding content, so GC cannot remove it half-way.
    pub(crate) fn lock_shared(&self) -> Result<LockGuard> {
        fsutil::lock(&self.lock_path(), LockKind::Shared)
    }

    /// Exclusive store lock: held by garbage collection.
    pub(crate) fn lock_exclusive(&self) -> Result<LockGuard> {
        fsutil::lock(&self.lock_path(), LockKind::Exclusive)
    }

    fn lock_index(&self) -> Result<LockGuard> {
        fsutil::lock(&self.layout.dir().join(".index.lock"), LockKind::Exclusive)
    }

    /// Removes temporary files of killed commands, when nobody else holds the store lock.
    fn cleanup_leftovers(&self) -> Result<()> {
        let Some(_guard) = fsutil::try_lock_exclusive(&self.lock_path())? else {
            return Ok(());
        };
        let ingest = self.layout.ingest_dir();
        if let Ok(rd) = fs::read_dir(&ingest) {
            for e in rd.filter_map(std::result::Result::ok) {
                let p = e.path();
                if p.is_dir() {
                    let _ = fsutil::remove_tree(&p);
                } else {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        for p in fsutil::entries_with_prefix(&self.layers, &[".tmp-", ".del-"]) {
            fsutil::remove_tree(&p)?;
        }
        // Temporary files of index.json and oci-layout are written under the index lock.
        let _index = self.lock_index()?;
        for p in fsutil::entries_with_prefix(self.layout.dir(), &[".tmp-"]) {
            let _ = fs::remove_file(&p);
        }
        Ok(())
    }

    /// Reads `index.json`.
    pub fn index(&self) -> Result<Index> {
        self.layout.read_index()
    }

    /// Every image, one per manifest, with all its names.
    pub fn list(&self) -> Result<Vec<Image>> {
        let index = self.layout.read_index()?;
        let mut order: Vec<String> = Vec::new();
        let mut by_digest: std::collections::HashMap<String, (IndexEntry, Vec<String>)> =
            std::collections::HashMap::new();
        for e in index.manifests {
            let entry = by_digest.entry(e.digest.clone()).or_insert_with(|| {
                order.push(e.digest.clone());
                (e.clone(), Vec::new())
            });
            if let Some(n) = e.name() {
                entry.1.push(n.to_string());
            }
        }
        let mut images = Vec::new();
        for d in order {
            if let Some((entry, mut names)) = by_digest.remove(&d) {
                names.sort();
                names.dedup();
                images.push(self.load_image(&entry, names)?);
            }
        }
        Ok(images)
    }

    fn load_image(&self, entry: &IndexEntry, names: Vec<String>) -> Result<Image> {
        let what = names
            .first()
            .cloned()
            .unwrap_or_else(|| entry.digest.clone());
        if entry.media_type != layout::OCI_MANIFEST && entry.media_type != layout::DOCKER_MANIFEST {
            return Err(Error::UnsupportedMediaType {
                media_type: entry.media_type.clone(),
                reference: what,
            });
        }
        let raw = self.layout.read_blob(&entry.digest)?;
        let manifest = ImageManifest::from_reader(raw.as_slice())
            .map_err(|e| Error::Corrupt(format!("manifest of {what}: {e}")))?;
        let config_digest = manifest.config().digest().to_string();
        let raw_config = self.layout.read_blob(&config_digest)?;
        let config = ImageConfiguration::from_reader(raw_config.as_slice())
            .map_err(|e| Error::Corrupt(format!("config of {what}: {e}")))?;
        let size = manifest
            .layers()
            .iter()
            .map(oci_spec::image::Descriptor::size)
            .sum::<u64>()
            + manifest.config().size();
        Ok(Image {
            id: config_digest,
            digest: entry.digest.clone(),
            manifest_media_type: entry.media_type.clone(),
            names,
            config,
            manifest,
            size,
        })
    }

    /// Finds an image by name (`busybox`, `busybox:1`, `docker.io/library/busybox:latest`),
    /// by `name@digest` or `@digest` of its manifest, or by id or id prefix (`sha256:…`,
    /// at least 3 hex digits).
    pub fn resolve(&self, reference: &str) -> Result<Image> {
        let images = self.list()?;
        let parsed = Reference::parse(reference);
        if let Ok(r) = &parsed {
            if let Some(d) = &r.digest {
                if let Some(img) = images.iter().find(|i| &i.digest == d || &i.id == d) {
                    return Ok(img.clone());
                }
            } else {
                let full = r.to_string();
                if let Some(img) = images.iter().find(|i| i.names.contains(&full)) {
                    return Ok(img.clone());
                }
                // A short name is also found under `localhost/`, as podman names the images
                // it builds and saves (`busybox` → `localhost/busybox:latest`).
                let first = reference.split('/').next().unwrap_or_default();
                let short = !reference.contains('/')
                    || !(first.contains('.') || first.contains(':') || first == "localhost");
                if short && let Ok(local) = Reference::parse(&format!("localhost/{reference}")) {
                    let local = local.to_string();
                    if let Some(img) = images.iter().find(|i| i.names.contains(&local)) {
                        return Ok(img.clone());
                    }
                }
            }
        }
        // An id or id prefix.
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 3 && hex.len() <= 64 && reference::is_lower_hex(hex) {
            let matches: Vec<&Image> = images
                .iter()
                .filter(|i| i.id[7..].starts_with(hex) || i.digest[7..].starts_with(hex))
                .collect();
            let ids: BTreeSet<&str> = matches.iter().map(|i| i.id.as_str()).collect();
            match ids.len() {
                0 => {}
                1 => return Ok(matches[0].clone()),
                n => {
                    return Err(Error::Ambiguous {
                        prefix: reference.to_string(),
                        count: n,
                    });
                }
            }
        }
        match parsed {
            Err(e) if !(hex.len() >= 3 && reference::is_lower_hex(hex)) => Err(e),
            _ => Err(Error::NotFound(reference.to_string())),
        }
    }

    /// The unpacked layer directories of `image`, lowest first, ready to be stacked with
    /// overlayfs. Layers missing from the cache (a pulled image not used yet) are unpacked
    /// from their blobs first, each checked against its diff_id.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>> {
        self.layer_dirs_with_progress(image, &registry::no_progress())
    }

    /// [`Self::layer_dirs`], reporting [`Progress::Unpacked`] for each layer it unpacks.
    pub fn layer_dirs_with_progress(
        &self,
        image: &Image,
        progress: &registry::ProgressFn,
    ) -> Result<Vec<PathBuf>> {
        let diff_ids = image.diff_ids();
        let layers = image.manifest.layers();
        if diff_ids.len() != layers.len() {
            return Err(Error::Corrupt(format!(
                "image {} has {} layers but {} diff_ids",
                image.id,
                layers.len(),
                diff_ids.len()
            )));
        }
        let mut out = Vec::with_capacity(layers.len());
        let mut guard = None;
        for (desc, diff_id) in layers.iter().zip(diff_ids) {
            let dir = self.layer_dir(diff_id)?;
            if !dir.exists() {
                if guard.is_none() {
                    guard = Some(self.lock_shared()?);
                }
                self.unpack_blob(desc.digest().as_ref(), desc.media_type().as_ref(), diff_id)?;
                progress(Progress::Unpacked {
                    digest: desc.digest().to_string(),
                });
            }
            out.push(dir);
        }
        Ok(out)
    }

    /// `<root>/layers/<hex>` for a diff_id.
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf> {
        reference::validate_digest(diff_id)
            .map_err(|reason| Error::Corrupt(format!("diff_id {diff_id}: {reason}")))?;
        Ok(self.layers.join(&diff_id[7..]))
    }

    /// The uncompressed size of the image: the tar streams of its layers (what `image ls`
    /// shows, as podman does), read from each blob's header or trailer (see
    /// [`unpack::uncompressed_size`]), plus the config. A missing blob counts its compressed
    /// size.
    #[must_use]
    pub fn unpacked_size(&self, image: &Image) -> u64 {
        let layers: u64 = image
            .manifest
            .layers()
            .iter()
            .map(|l| {
                self.layout
                    .open_blob(l.digest().as_ref())
                    .ok()
                    .and_then(|f| unpack::uncompressed_size(&f).ok())
                    .unwrap_or_else(|| l.size())
            })
            .sum();
        layers + image.manifest.config().size()
    }

    /// Unpacks layer blob `digest` into the layer cache, verifying its diff_id. Callers hold
    /// the shared store lock.
    pub(crate) fn unpack_blob(
        &self,
        digest: &str,
        media_type: &str,
        diff_id: &str,
    ) -> Result<PathBuf> {
        let dest = self.layer_dir(diff_id)?;
        if dest.exists() {
            return Ok(dest);
        }
        if !layout::LAYER_TYPES.contains(&media_type) {
            return Err(Error::UnsupportedMediaType {
                media_type: media_type.to_string(),
                reference: digest.to_string(),
            });
        }
        let blob = self.layout.open_blob(digest)?;
        let tmp = self.new_layer_tmp()?;
        let result = (|| {
            let (actual, _) = unpack::unpack_file(blob, &tmp, digest, true)?;
            if actual != diff_id {
                return Err(Error::DigestMismatch {
                    what: format!("uncompressed layer {digest}"),
                    expected: diff_id.to_string(),
                    actual,
                });
            }
            self.commit_layer(&tmp, &dest)
        })();
        if result.is_err() {
            let _ = fsutil::remove_tree(&tmp);
        }
        result.map(|()| dest)
    }

    /// A fresh temporary directory for unpacking a layer.
    pub(crate) fn new_layer_tmp(&self) -> Result<PathBuf> {
        let tmp = self
            .layers
            .join(format!(".tmp-{}", fsutil::random_suffix()));
        fs::create_dir(&tmp).map_err(io_ctx(format!("cannot create {}", tmp.display())))?;
        Ok(tmp)
    }

    /// Renames a completely unpacked layer into place; if another process won the race, its
    /// copy is kept and ours removed.
    pub(crate) fn commit_layer(&self, tmp: &Path, dest: &Path) -> Result<()> {
        // Make the unpacked files durable before the directory becomes visible: a crash after
        // the rename must never leave a layer directory with files the disk does not hold.
        // (Most of the data is on disk already: the unpack wrote it back as it went.)
        nix::unistd::syncfs(
            fs::File::open(tmp).map_err(io_ctx(format!("cannot open {}", tmp.display())))?,
        )
        .map_err(|e| io_ctx(format!("cannot sync {}", tmp.display()))(e.into()))?;
        match fs::rename(tmp, dest) {
            Ok(()) => fsutil::sync_dir(&self.layers),
            Err(_) if dest.exists() => fsutil::remove_tree(tmp),
            Err(e) => Err(io_ctx(format!("cannot rename into {}", dest.display()))(e)),
        }
    }

    /// Adds index entries (manifest `digest`) for each name, moving a name that pointed at
    /// another manifest. With no names, adds one unnamed entry if the manifest is not listed.
    pub(crate) fn add_to_index(
        &self,
        digest: &str,
        size: u64,
        media_type: &str,
        names: &[Reference],
    ) -> Result<()> {
        let _g = self.lock_index()?;
        let mut index = self.layout.read_index()?;
        let full: Vec<String> = names
            .iter()
            .map(|r| r.without_digest().to_string())
            .collect();
        index
            .manifests
            .retain(|e| !e.name().is_some_and(|n| full.iter().any(|f| f == n)));
        let entry = |name: Option<&str>| {
            let mut annotations = std::collections::BTreeMap::new();
            if let Some(n) = name {
                annotations.insert(layout::REF_NAME.to_string(), n.to_string());
            }
            IndexEntry {
                media_type: media_type.to_string(),
                digest: digest.to_string(),
                size,
                annotations,
                extra: serde_json::Map::new(),
            }
        };
        if full.is_empty() {
            if !index.manifests.iter().any(|e| e.digest == digest) {
                index.manifests.push(entry(None));
            }
        } else {
            // A named entry replaces an unnamed one of the same manifest.
            index
                .manifests
                .retain(|e| !(e.digest == digest && e.name().is_none()));
            for n in &full {
                index.manifests.push(entry(Some(n)));
            }
        }
        // Manifests whose last name moved away stay as unnamed (dangling) entries.
        self.keep_dangling(&mut index)?;
        self.layout.write_index(&index)
    }

    /// Adds an unnamed entry for every manifest of the old index that lost all its entries.
    fn keep_dangling(&self, index: &mut Index) -> Result<()> {
        let old = self.layout.read_index()?;
        let present: HashSet<String> = index.manifests.iter().map(|e| e.digest.clone()).collect();
        let mut seen = HashSet::new();
        for e in old.manifests {
            if !present.contains(&e.digest) && seen.insert(e.digest.clone()) {
                let mut e = e;
                e.annotations.remove(layout::REF_NAME);
                index.manifests.push(e);
            }
        }
        Ok(())
    }

    /// Gives the image `source` the extra name `target`.
    pub fn tag(&self, source: &str, target: &str) -> Result<Image> {
        let _lock = self.lock_shared()?;
        let image = self.resolve(source)?;
        let r = Reference::parse(target)?;
        if r.digest.is_some() {
            return Err(Error::InvalidReference {
                reference: target.to_string(),
                reason: "a tag cannot contain a digest".into(),
            });
        }
        let size = self.layout.open_blob(&image.digest).and_then(|f| {
            f.metadata()
                .map(|m| m.len())
                .map_err(io_ctx("cannot stat a manifest"))
        })?;
        self.add_to_index(&image.digest, size, &image.manifest_media_type, &[r])?;
        self.resolve(target)
    }

    /// Removes an image name, or an image (`rm` / `rmi`), as Docker does: removing a name
    /// untags it, and the image is deleted when no name is left. Removing by id deletes the
    /// image with all its names (with `force` if it has several). An image in `in_use` (image
    /// ids used by containers) is not deleted: without `force` this is an error, with `force`
    /// the names go and the image stays as an unnamed entry until no container uses it.
    /// Blobs and layers no image uses any more are removed.
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
        in_use: &HashSet<String>,
    ) -> Result<RemoveReport> {
        let _store = self.lock_exclusive()?;
        let image = self.resolve(reference)?;
        let by_name = Reference::parse(reference)
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.to_string())
            .filter(|full| image.names.contains(full));
        let mut report = RemoveReport::default();
        let used = in_use.contains(&image.id);
        {
            let _g = self.lock_index()?;
            let mut index = self.layout.read_index()?;
            match &by_name {
                Some(full) if image.names.len() > 1 => {
                    index.manifests.retain(|e| e.name() != Some(full.as_str()));
                    report.untagged.push(full.clone());
                }
                _ => {
                    if by_name.is_none() && image.names.len() > 1 && !force {
                        return Err(Error::Conflict {
                            image: reference.to_string(),
                            reason: format!(
                                "image is referenced by {} names (use --force)",
                                image.names.len()
                            ),
                        });
                    }
                    if used && !force {
                        return Err(Error::Conflict {
                            image: reference.to_string(),
                            reason: "image is in use by a container (use --force to untag it)"
                                .into(),
                        });
                    }
                    report.untagged.extend(image.names.iter().cloned());
                    index.manifests.retain(|e| e.digest != image.digest);
                    if used {
                        index.manifests.push(IndexEntry {
                            media_type: image.manifest_media_type.clone(),
                            digest: image.digest.clone(),
                            size: self.layout.read_blob(&image.digest)?.len() as u64,
                            annotations: std::collections::BTreeMap::new(),
                            extra: serde_json::Map::new(),
                        });
                    } else {
                        report.deleted.push(image.id.clone());
                    }
                }
            }
            self.layout.write_index(&index)?;
        }
        self.collect_garbage(in_use)?;
        Ok(report)
    }

    /// Removes unnamed images (with `all`: every image no container uses), then blobs and
    /// layer directories no remaining image needs. `in_use` holds the image ids containers
    /// use; they and their content are kept.
    pub fn prune(&self, all: bool, in_use: &HashSet<String>) -> Result<PruneReport> {
        let _store = self.lock_exclusive()?;
        let images = self.list()?;
        let mut report = PruneReport::default();
        let doomed: HashSet<String> = images
            .iter()
            .filter(|i| !in_use.contains(&i.id) && (all || i.names.is_empty()))
            .map(|i| i.digest.clone())
            .collect();
        if !doomed.is_empty() {
            let _g = self.lock_index()?;
            let mut index = self.layout.read_index()?;
            index.manifests.retain(|e| !doomed.contains(&e.digest));
            self.layout.write_index(&index)?;
            report.images_deleted = images
                .iter()
                .filter(|i| doomed.contains(&i.digest))
                .map(|i| i.id.clone())
                .collect();
        }
        let gc = self.collect_garbage(in_use)?;
        report.blobs_removed = gc.blobs_removed;
        report.layers_removed = gc.layers_removed;
        report.bytes_freed = gc.bytes_freed;
        Ok(report)
    }

    /// Removes blobs and layer directories that no image in the index references. Callers
    /// hold the exclusive store lock.
    fn collect_garbage(&self, in_use: &HashSet<String>) -> Result<PruneReport> {
        let _ = in_use; // in-use images are kept in the index, so their content is referenced.
        let index = self.layout.read_index()?;
        let mut keep_blobs: HashSet<String> = HashSet::new();
        let mut keep_layers: HashSet<String> = HashSet::new();
        for e in &index.manifests {
            keep_blobs.insert(e.digest.clone());
            let Ok(raw) = self.layout.read_blob(&e.digest) else {
                continue;
            };
            let Ok(m) = ImageManifest::from_reader(raw.as_slice()) else {
                continue;
            };
            let cd = m.config().digest().to_string();
            keep_blobs.insert(cd.clone());
            for l in m.layers() {
                keep_blobs.insert(l.digest().to_string());
            }
            if let Ok(raw) = self.layout.read_blob(&cd)
                && let Ok(c) = ImageConfiguration::from_reader(raw.as_slice())
            {
                for d in c.rootfs().diff_ids() {
                    keep_layers.insert(d.trim_start_matches("sha256:").to_string());
                }
            }
        }
        // Content pinned by other parts of tug (the build cache) stays too.
        for pin in self.pins() {
            keep_blobs.extend(pin.blobs);
            keep_layers.extend(
                pin.diff_ids
                    .iter()
                    .map(|d| d.trim_start_matches("sha256:").to_string()),
            );
        }
        let mut report = PruneReport::default();
        for d in self.layout.blob_digests()? {
            if !keep_blobs.contains(&d) {
                let p = self.layout.blob_path(&d)?;
                report.bytes_freed += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&p).map_err(io_ctx(format!("cannot remove {}", p.display())))?;
                report.blobs_removed += 1;
            }
        }
        let rd = fs::read_dir(&self.layers)
            .map_err(io_ctx(format!("cannot list {}", self.layers.display())))?;
        for e in rd.filter_map(std::result::Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && reference::is_lower_hex(&name) && !keep_layers.contains(&name) {
                // Rename first, so a half-removed layer is never taken for a complete one.
                let del = self
                    .layers
                    .join(format!(".del-{}", fsutil::random_suffix()));
                fs::rename(e.path(), &del)
                    .map_err(io_ctx(format!("cannot remove layer {name}")))?;
                fsutil::remove_tree(&del)?;
                report.layers_removed += 1;
            }
        }
        Ok(report)
    }
}

/// Content that garbage collection keeps although no image names it: one JSON file per pin
/// in `<root>/images/pins/` (the build cache keeps its layers this way).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    /// Blob digests to keep.
    #[serde(default)]
    pub blobs: Vec<String>,
    /// Layer diff_ids whose unpacked directories to keep.
    #[serde(default)]
    pub diff_ids: Vec<String>,
    /// What the owner of the pin records with it.
    #[serde(default)]
    pub record: serde_json::Value,
}

impl ImageStore {
    /// The pins directory (`<root>/images/pins`).
    #[must_use]
    pub fn pins_dir(&self) -> PathBuf {
        self.layout.dir().join("pins")
    }

    /// Writes pin `name` (a file name) atomically. Callers hold the shared store lock (see
    /// [`ImageStore::hold`]) from before the content was added until the pin is written.
    pub fn pin(&self, name: &str, pin: &Pin) -> Result<()> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::Corrupt(format!("bad pin name {name:?}")));
        }
        let dir = self.pins_dir();
        fs::create_dir_all(&dir).map_err(io_ctx(format!("cannot create {}", dir.display())))?;
        let bytes = serde_json::to_vec(pin).map_err(|e| Error::Corrupt(e.to_string()))?;
        fsutil::write_atomic(&dir.join(format!("{name}.json")), &bytes)
    }

    /// Reads pin `name`, if present.
    #[must_use]
    pub fn read_pin(&self, name: &str) -> Option<Pin> {
        let bytes = fs::read(self.pins_dir().join(format!("{name}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every pin.
    #[must_use]
    pub fn pins(&self) -> Vec<Pin> {
        let Ok(rd) = fs::read_dir(self.pins_dir()) else {
            return Vec::new();
        };
        rd.filter_map(std::result::Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Removes the pins whose file name starts with `prefix`, then the content nothing
    /// needs any more. Returns (pins removed, what GC removed).
    pub fn unpin_prefix(
        &self,
        prefix: &str,
        in_use: &HashSet<String>,
    ) -> Result<(usize, PruneReport)> {
        let _store = self.lock_exclusive()?;
        let mut n = 0;
        if let Ok(rd) = fs::read_dir(self.pins_dir()) {
            for e in rd.filter_map(std::result::Result::ok) {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    fs::remove_file(e.path()).map_err(io_ctx("cannot remove a pin"))?;
                    n += 1;
                }
            }
        }
        Ok((n, self.collect_garbage(in_use)?))
    }

    /// Holds the shared store lock (no GC runs) until the guard is dropped.
    pub fn hold(&self) -> Result<Hold> {
        Ok(Hold {
            _guard: self.lock_shared()?,
        })
    }
}

/// A layer blob in the store, as the builder records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLayerRef {
    /// Blob digest.
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
}

impl ImageStore {
    /// Stores a layer tar stream (plain, gzip or zstd): blob, diff_id and unpacked layer
    /// directory in one pass. Callers hold the shared store lock ([`ImageStore::hold`]).
    pub fn ingest_tar(
        &self,
        input: impl std::io::Read + Send + 'static,
        what: &str,
    ) -> Result<StoredLayerRef> {
        let l = self.ingest_layer(input, what)?;
        Ok(StoredLayerRef {
            digest: l.digest,
            size: l.size,
            media_type: l.media_type,
            diff_id: l.diff_id,
        })
    }

    /// Stores `config_bytes` (a complete image config) and a manifest for it and `layers`
    /// (already in the store), named `names`.
    pub fn commit_config(
        &self,
        config_bytes: &[u8],
        layers: &[StoredLayerRef],
        names: &[Reference],
    ) -> Result<Image> {
        let layers: Vec<import::StoredLayer> = layers
            .iter()
            .map(|l| import::StoredLayer {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: l.diff_id.clone(),
            })
            .collect();
        self.commit_raw(config_bytes, &layers, names)
    }
}

/// The shared store lock, held (see [`ImageStore::hold`]).
pub struct Hold {
    _guard: LockGuard,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

/// Unpacks a layer tarball (plain, gzip or zstd) into the directory `dest` (created; must not
/// exist) exactly as the store unpacks layers: resolved inside `dest`, whiteouts converted to
/// overlayfs form. Returns the diff_id (digest of the uncompressed tar) and the stats.
pub fn unpack_layer_file(src: &Path, dest: &Path) -> Result<(String, unpack::Stats)> {
    let f = fs::File::open(src).map_err(io_ctx(format!("cannot open {}", src.display())))?;
    fs::create_dir(dest).map_err(io_ctx(format!("cannot create {}", dest.display())))?;
    unpack::unpack_file(f, dest, &src.display().to_string(), false)
}

/// The OCI architecture name of the host (`amd64`, `arm64`, …).
#[must_use]
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}
