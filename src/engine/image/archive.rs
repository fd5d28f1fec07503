//! `load` and `save`: images in tar archives, as `docker save` / `docker load` exchange them.
//!
//! Two archive formats exist:
//! - *docker-archive*: `manifest.json` at the top, a list of `{Config, RepoTags, Layers}` whose
//!   paths name the config JSON and one uncompressed layer tarball per layer inside the
//!   archive (older Docker also wrote `repositories` and per-layer `json`/`VERSION` files, and
//!   may link identical layers with symlinks; Docker 25+ puts the files under
//!   `blobs/sha256/`).
//! - *oci-archive*: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) in a tar.
//!
//! `load` reads the archive once, writing every regular file into `.ingest/` while hashing it;
//! nothing becomes visible before its digest is checked (layer blobs against their descriptor
//! or against the config's diff_id, configs against their name). Layers keep the bytes the
//! archive has: an uncompressed layer becomes an `…layer.v1.tar` blob whose digest is its
//! diff_id. `save` writes a docker-archive (config `<hex>.json`, layers `<diff hex>.tar`,
//! `manifest.json`, `repositories`) that `docker load` and `podman load` read.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use super::fsutil::{self, HashingWriter, io_ctx};
use super::import::StoredLayer;
use super::layout::{self, REF_NAME};
use super::{Error, Image, ImageStore, Reference, Result, unpack};

/// Largest docker-archive `manifest.json` (it lists every image of the archive): 16 MiB.
/// Manifests, indexes and configs have the store's limits ([`layout::MAX_MANIFEST`],
/// [`layout::MAX_CONFIG`]).
const MAX_JSON: u64 = 16 << 20;

/// One entry of a docker-archive `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A file extracted from the archive into `.ingest/`.
struct Extracted {
    tmp: PathBuf,
    digest: String,
    size: u64,
}

/// The archive's files, by normalised path.
struct ArchiveFiles {
    files: HashMap<String, Extracted>,
    links: HashMap<String, String>,
    _dir: tempfile::TempDir,
    name: String,
}

impl ArchiveFiles {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::BadArchive {
            archive: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// The file at `path`, following the archive's own symlinks (inside the archive only).
    fn get(&self, path: &str) -> Result<&Extracted> {
        let mut p = normalise(path).ok_or_else(|| self.bad(format!("bad path {path:?}")))?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&p) {
                return Ok(f);
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(self.bad(format!("{path} is missing")))
    }

    /// Reads a JSON document of at most `limit` bytes (`kind` names the limit).
    fn read_json(&self, path: &str, limit: u64, kind: &str) -> Result<Vec<u8>> {
        let f = self.get(path)?;
        layout::check_limit(&format!("{path} in {}", self.name), f.size, limit, kind)?;
        fs::read(&f.tmp).map_err(io_ctx(format!("cannot read {}", f.tmp.display())))
    }
}

/// Normalises a path inside an archive; `None` if it climbs out.
fn normalise(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// What `load` loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The images, in archive order.
    pub images: Vec<Image>,
    /// Names given to them (full form).
    pub names: Vec<String>,
}

impl ImageStore {
    /// Loads every image of a docker-archive or oci-archive (plain or compressed tar).
    pub fn load(&self, input: impl Read, archive_name: &str) -> Result<Loaded> {
        let _lock = self.lock_shared()?;
        let files = self.extract(input, archive_name)?;
        if files.files.contains_key("manifest.json") {
            self.load_docker(&files)
        } else if files.files.contains_key("index.json") {
            self.load_oci(&files)
        } else {
            Err(files
                .bad("neither manifest.json (docker-archive) nor index.json (oci-archive) found"))
        }
    }

    /// Reads the archive once, writing its regular files into a temporary directory.
    fn extract(&self, input: impl Read, archive_name: &str) -> Result<ArchiveFiles> {
        let bad = |reason: String| Error::BadArchive {
            archive: archive_name.to_string(),
            reason,
        };
        let dir = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(self.layout().ingest_dir())
            .map_err(io_ctx("cannot create a temporary directory"))?;
        let (reader, _) =
            unpack::decompress(input).map_err(io_ctx(format!("cannot read {archive_name}")))?;
        let mut archive = tar::Archive::new(reader);
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let entries = archive
            .entries()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?;
        for (n, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| bad(format!("reading the archive: {e}")))?;
            let path = entry
                .path()
                .map_err(|e| bad(format!("bad path: {e}")))?
                .to_string_lossy()
                .into_owned();
            let norm = normalise(&path)
                .ok_or_else(|| bad(format!("path {path:?} escapes the archive")))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let tmp = dir.path().join(format!("f{n}"));
                    let f = crate::engine::private::open_options()
                        .write(true)
                        .create_new(true)
                        .open(&tmp)
                        .map_err(io_ctx(format!("cannot create {}", tmp.display())))?;
                    let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, f));
                    io::copy(&mut entry, &mut w)
                        .map_err(|e| bad(format!("reading {path}: {e}")))?;
                    let (buf, digest, size) = w.finish();
                    buf.into_inner().map_err(|e| {
                        io_ctx(format!("cannot write {}", tmp.display()))(e.into_error())
                    })?;
                    files.insert(norm, Extracted { tmp, digest, size });
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| bad(format!("bad link: {e}")))?
                        .ok_or_else(|| bad(format!("link {path} without target")))?
                        .to_string_lossy()
                        .into_owned();
                    let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                        norm.rsplit_once('/').map_or("", |(d, _)| d).to_string()
                    } else {
                        String::new()
                    };
                    let joined = if target.starts_with('/') {
                        target
                    } else {
                        format!("{base}/{target}")
                    };
                    let t = normalise(&joined)
                        .ok_or_else(|| bad(format!("link {path} escapes the archive")))?;
                    links.insert(norm, t);
                }
                _ => {}
            }
        }
        Ok(ArchiveFiles {
            files,
            links,
            _dir: dir,
            name: archive_name.to_string(),
        })
    }

    fn load_docker(&self, files: &ArchiveFiles) -> Result<Loaded> {
        let raw = files.read_json("manifest.json", MAX_JSON, "archive manifests")?;
        let entries: Vec<DockerArchiveEntry> =
            serde_json::from_slice(&raw).map_err(|e| files.bad(format!("manifest.json: {e}")))?;
        if entries.is_empty() {
            return Err(files.bad("manifest.json lists no image"));
        }
        let mut loaded = Loaded {
            images: Vec::new(),
            names: Vec::new(),
        };
        for e in entries {
            let config_bytes = files.read_json(&e.config, layout::MAX_CONFIG, "image configs")?;
            let config = ImageConfiguration::from_reader(config_bytes.as_slice())
                .map_err(|err| files.bad(format!("{}: {err}", e.config)))?;
            // Docker names configs after their digest: check it when it does.
            let cfg_file = files.get(&e.config)?;
            let stem = Path::new(&e.config)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if stem.len() == 64
                && super::reference::is_lower_hex(&stem)
                && cfg_file.digest[7..] != stem
            {
                return Err(Error::DigestMismatch {
                    what: format!("config {} in {}", e.config, files.name),
                    expected: format!("sha256:{stem}"),
                    actual: cfg_file.digest.clone(),
                });
            }
            let diff_ids = config.rootfs().diff_ids().clone();
            if diff_ids.len() != e.layers.len() {
                return Err(files.bad(format!(
                    "{} lists {} layers but its config {} diff_ids",
                    e.config,
                    e.layers.len(),
                    diff_ids.len()
                )));
            }
            let mut layers = Vec::new();
            for (path, diff_id) in e.layers.iter().zip(&diff_ids) {
                let f = files.get(path)?;
                let head = read_head(&f.tmp)?;
                let media_type = match unpack::detect(&head) {
                    unpack::Compression::None => {
                        if &f.digest != diff_id {
                            return Err(Error::DigestMismatch {
                                what: format!("layer {path} in {}", files.name),
                                expected: diff_id.clone(),
                                actual: f.digest.clone(),
                            });
                        }
                        "application/vnd.oci.image.layer.v1.tar"
                    }
                    unpack::Compression::Gzip => layout::OCI_LAYER_GZIP,
                    unpack::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                };
                self.adopt_blob(f)?;
                // Unpacking verifies the diff_id of compressed layers.
                self.unpack_blob(&f.digest, media_type, diff_id)?;
                layers.push(StoredLayer {
                    digest: f.digest.clone(),
                    size: f.size,
                    media_type: media_type.to_string(),
                    diff_id: diff_id.clone(),
                });
            }
            let names: Vec<Reference> = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<_>>()?;
            let image = self.commit_raw(&config_bytes, &layers, &names)?;
            loaded.names.extend(names.iter().map(ToString::to_string));
            loaded.images.push(image);
        }
        Ok(loaded)
    }

    fn load_oci(&self, files: &ArchiveFiles) -> Result<Loaded> {
        let raw = files.read_json("index.json", layout::MAX_MANIFEST, "indexes")?;
        let index = ImageIndex::from_reader(raw.as_slice())
            .map_err(|e| files.bad(format!("index.json: {e}")))?;
        let mut loaded = Loaded {
            images: Vec::new(),
            names: Vec::new(),
        };
        for desc in index.manifests() {
            let name = desc
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .map(|n| Reference::parse(n))
                .transpose()?;
            let mut digest = desc.digest().to_string();
            let mut size = desc.size();
            let mut media_type = desc.media_type().to_string();
            // An index inside: take the host platform's manifest.
            if media_type == layout::OCI_INDEX || media_type == layout::DOCKER_MANIFEST_LIST {
                let raw = self.oci_blob(files, &digest, size, layout::MAX_MANIFEST, "indexes")?;
                let inner = ImageIndex::from_reader(raw.as_slice())
                    .map_err(|e| files.bad(format!("{digest}: {e}")))?;
                let pick = super::platform::pick(inner.manifests()).ok_or_else(|| {
                    files.bad(format!(
                        "{digest} has no manifest for linux/{}",
                        super::host_arch()
                    ))
                })?;
                digest = pick.digest().to_string();
                size = pick.size();
                media_type = pick.media_type().to_string();
            }
            if media_type != layout::OCI_MANIFEST && media_type != layout::DOCKER_MANIFEST {
                return Err(Error::UnsupportedMediaType {
                    media_type,
                    reference: files.name.clone(),
                });
            }
            let raw_manifest =
                self.oci_blob(files, &digest, size, layout::MAX_MANIFEST, "manifests")?;
            let manifest = ImageManifest::from_reader(raw_manifest.as_slice())
                .map_err(|e| files.bad(format!("manifest {digest}: {e}")))?;
            let config_digest = manifest.config().digest().to_string();
            let raw_config = self.oci_blob(
                files,
                &config_digest,
                manifest.config().size(),
                layout::MAX_CONFIG,
                "image configs",
            )?;
            let config = ImageConfiguration::from_reader(raw_config.as_slice())
                .map_err(|e| files.bad(format!("config {config_digest}: {e}")))?;
            let diff_ids = config.rootfs().diff_ids();
            if diff_ids.len() != manifest.layers().len() {
                return Err(files.bad(format!(
                    "manifest {digest}: layer and diff_id counts differ"
                )));
            }
            // Every layer is checked against its descriptor (size, digest) before any of
            // them enters the store.
            let mut checked = Vec::new();
            for l in manifest.layers() {
                let ld = l.digest().to_string();
                super::reference::validate_digest(&ld)
                    .map_err(|r| files.bad(format!("{ld}: {r}")))?;
                let f = files.get(&format!("blobs/sha256/{}", &ld[7..]))?;
                layout::check_size(
                    &format!("layer {ld} in {}", files.name),
                    l.size(),
                    f.size,
                    "the archive holds",
                )?;
                if f.digest != ld {
                    return Err(Error::DigestMismatch {
                        what: format!("layer in {}", files.name),
                        expected: ld,
                        actual: f.digest.clone(),
                    });
                }
                checked.push((f, ld));
            }
            for ((f, ld), (l, diff_id)) in checked
                .into_iter()
                .zip(manifest.layers().iter().zip(diff_ids))
            {
                self.adopt_blob(f)?;
                self.unpack_blob(&ld, l.media_type().as_ref(), diff_id)?;
            }
            self.layout().put_blob(&raw_config)?;
            self.layout().put_blob(&raw_manifest)?;
            let names: Vec<Reference> = name.into_iter().collect();
            self.add_to_index(&digest, raw_manifest.len() as u64, &media_type, &names)?;
            loaded.names.extend(names.iter().map(ToString::to_string));
            loaded.images.push(self.resolve(&digest)?);
        }
        Ok(loaded)
    }

    /// A small blob of an oci-archive, checked against its descriptor: its size (`size`, and
    /// at most `limit`) before it is read, its digest after.
    fn oci_blob(
        &self,
        files: &ArchiveFiles,
        digest: &str,
        size: u64,
        limit: u64,
        kind: &str,
    ) -> Result<Vec<u8>> {
        super::reference::validate_digest(digest)
            .map_err(|r| files.bad(format!("{digest}: {r}")))?;
        let path = format!("blobs/sha256/{}", &digest[7..]);
        let what = format!("{digest} in {}", files.name);
        layout::check_limit(&what, size, limit, kind)?;
        layout::check_size(&what, size, files.get(&path)?.size, "the archive holds")?;
        let data = files.read_json(&path, limit, kind)?;
        let actual = fsutil::sha256_digest(&data);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob in {}", files.name),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    }

    /// Moves an extracted (already hashed) file into the blob store under its digest.
    fn adopt_blob(&self, f: &Extracted) -> Result<()> {
        if self.layout().has_blob(&f.digest) {
            return Ok(());
        }
        let dest = self.layout().blob_path(&f.digest)?;
        let file =
            File::open(&f.tmp).map_err(io_ctx(format!("cannot open {}", f.tmp.display())))?;
        file.sync_all()
            .map_err(io_ctx(format!("cannot sync {}", f.tmp.display())))?;
        // A link keeps the extracted file usable if the archive names it twice.
        match fs::hard_link(&f.tmp, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_ctx(format!("cannot link {}", dest.display()))(e)),
        }
        fsutil::sync_dir(dest.parent().unwrap_or(Path::new(".")))
    }

    /// Writes `images` as a docker-archive to `output` (atomically: temp file + rename).
    pub fn save(&self, images: &[String], output: &Path) -> Result<()> {
        let mut resolved: Vec<(Image, Vec<String>)> = Vec::new();
        for name in images {
            let img = self.resolve(name)?;
            // Saved under the name asked for; by id: under all its names.
            let tags = match Reference::parse(name) {
                Ok(r) if r.digest.is_none() && img.names.contains(&r.to_string()) => {
                    vec![r.familiar()]
                }
                _ => img.familiar_names(),
            };
            match resolved.iter_mut().find(|(i, _)| i.id == img.id) {
                Some((_, t)) => t.extend(tags),
                None => resolved.push((img, tags)),
            }
        }
        let _lock = self.lock_shared()?;
        // Written atomically (a failed save leaves no partial archive and keeps an old one).
        let wrote = crate::util::fs::write_atomic_with(
            output,
            0o600,
            crate::util::fs::Durability::FileAndDir,
            |f| -> std::result::Result<(), SaveError> {
                self.write_archive(&resolved, f).map_err(SaveError::Image)
            },
        );
        match wrote {
            Ok(()) => Ok(()),
            Err(SaveError::Image(e)) => Err(e),
            Err(SaveError::Io(e)) => Err(io_ctx(format!("cannot write {}", output.display()))(e)),
        }
    }

    /// Writes the `docker save` archive of `resolved` (images and the names to save them
    /// under) into `file`.
    fn write_archive(&self, resolved: &[(Image, Vec<String>)], file: &mut File) -> Result<()> {
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
        let mut manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut written: std::collections::HashSet<String> = std::collections::HashSet::new();
        let scratch = tempfile::Builder::new()
            .prefix("save-")
            .tempdir_in(self.layout().ingest_dir())
            .map_err(io_ctx("cannot create a temporary directory"))?;
        for (img, tags) in resolved {
            let config_name = format!("{}.json", &img.id[7..]);
            if written.insert(config_name.clone()) {
                let raw = self.layout().read_blob(&img.id)?;
                append_bytes(&mut builder, &config_name, &raw)?;
            }
            let mut layer_names = Vec::new();
            for (desc, diff_id) in img.manifest.layers().iter().zip(img.diff_ids()) {
                let name = format!("{}.tar", &diff_id[7..]);
                if written.insert(name.clone()) {
                    self.append_layer(
                        &mut builder,
                        &scratch,
                        desc.digest().as_ref(),
                        diff_id,
                        &name,
                    )?;
                }
                layer_names.push(name);
            }
            for t in tags {
                if let Ok(r) = Reference::parse(t) {
                    repositories.entry(r.familiar_name()).or_default().insert(
                        r.tag.clone().unwrap_or_default(),
                        img.diff_ids()
                            .last()
                            .map(|d| d[7..].to_string())
                            .unwrap_or_default(),
                    );
                }
            }
            manifest.push(DockerArchiveEntry {
                config: config_name,
                repo_tags: Some(tags.clone()),
                layers: layer_names,
            });
        }
        let mj = serde_json::to_vec(&manifest).map_err(|e| Error::Corrupt(e.to_string()))?;
        append_bytes(&mut builder, "manifest.json", &mj)?;
        let rj = serde_json::to_vec(&repositories).map_err(|e| Error::Corrupt(e.to_string()))?;
        append_bytes(&mut builder, "repositories", &rj)?;
        builder
            .into_inner()
            .and_then(|mut buf| buf.flush())
            .map_err(io_ctx("cannot write the archive"))
    }

    /// Appends a layer as an uncompressed tar, checking its diff_id on the way.
    fn append_layer<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        scratch: &tempfile::TempDir,
        digest: &str,
        diff_id: &str,
        name: &str,
    ) -> Result<()> {
        let blob = self.layout().open_blob(digest)?;
        let blob_size = blob.metadata().map_err(io_ctx("cannot stat a blob"))?.len();
        let (reader, kind) =
            unpack::decompress(blob).map_err(io_ctx(format!("cannot read layer {digest}")))?;
        let mut hashing = fsutil::HashingReader::new(reader);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(0);
        if kind == unpack::Compression::None {
            // Stream the blob as it is; the archive file is discarded if the check fails.
            h.set_size(blob_size);
            builder
                .append_data(&mut h, name, &mut hashing)
                .map_err(io_ctx("cannot write the archive"))?;
        } else {
            // The tar header needs the size first: decompress into a scratch file.
            let mut f = tempfile::tempfile_in(scratch.path())
                .map_err(io_ctx("cannot create a temporary file"))?;
            let n = io::copy(&mut hashing, &mut f).map_err(|e| Error::BadLayer {
                layer: digest.to_string(),
                reason: e.to_string(),
            })?;
            f.rewind()
                .map_err(io_ctx("cannot rewind a temporary file"))?;
            h.set_size(n);
            builder
                .append_data(&mut h, name, &mut f)
                .map_err(io_ctx("cannot write the archive"))?;
        }
        let (actual, _, _) = hashing.into_parts();
        if actual != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("uncompressed layer {digest}"),
                expected: diff_id.to_string(),
                actual,
            });
        }
        Ok(())
    }
}

/// What writing a saved archive into its file can fail with: the store's own error, or the
/// file's creation, flush and rename.
enum SaveError {
    Image(Error),
    Io(io::Error),
}

impl From<io::Error> for SaveError {
    fn from(e: io::Error) -> Self {
        SaveError::Io(e)
    }
}

fn append_bytes<W: Write>(builder: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    builder
        .append_data(&mut h, name, data)
        .map_err(io_ctx("cannot write the archive"))
}

fn read_head(p: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(p).map_err(io_ctx(format!("cannot open {}", p.display())))?;
    let mut head = vec![0u8; 8];
    let n = f
        .read(&mut head)
        .map_err(io_ctx(format!("cannot read {}", p.display())))?;
    head.truncate(n);
    Ok(head)
}
