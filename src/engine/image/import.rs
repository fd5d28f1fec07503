//! `import`: a root file system tarball becomes a single-layer image (as `docker import`), and
//! the helpers every way of adding an image shares (writing config + manifest + index).
//!
//! The tarball (plain, gzip or zstd) is read once: a compressed one becomes the layer blob as
//! it is (no recompression), a plain one is gzip-compressed into it; at the same time the
//! uncompressed stream is hashed (its diff_id) and unpacked into the layer cache. `--change` takes Dockerfile instructions that set run defaults: `CMD`,
//! `ENTRYPOINT` (JSON or shell form), `ENV`, `EXPOSE`, `LABEL`, `USER`, `VOLUME`, `WORKDIR`,
//! `STOPSIGNAL`.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use oci_spec::image::{
    Config, Descriptor, HistoryBuilder, ImageConfiguration, ImageManifest, ImageManifestBuilder,
    MediaType, RootFsBuilder,
};

use super::fsutil::{self, io_ctx};
use super::layout::{self, BlobWriter};
use super::{Error, Image, ImageStore, Reference, Result, unpack};

/// A layer blob that is in the store: (blob digest, blob size, media type, diff_id).
#[derive(Debug, Clone)]
pub(crate) struct StoredLayer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub diff_id: String,
}

/// A reader that copies everything it reads into a writer (the new blob).
struct Tee<R, W> {
    inner: R,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Where an imported layer's bytes go: as they are, or gzip-compressed.
enum BlobSink {
    Raw(BlobWriter),
    Gzip(flate2::write::GzEncoder<BlobWriter>),
}

impl BlobSink {
    fn finish(self) -> std::io::Result<BlobWriter> {
        match self {
            Self::Raw(b) => Ok(b),
            Self::Gzip(g) => g.finish(),
        }
    }
}

impl Write for BlobSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Raw(b) => b.write(buf),
            Self::Gzip(g) => g.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Raw(b) => b.flush(),
            Self::Gzip(g) => g.flush(),
        }
    }
}

/// Options of `import`.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dockerfile instructions applied to the config (`CMD ["sh"]`, `ENV A=b`, …).
    pub changes: Vec<String>,
    /// Commit message, recorded in the history.
    pub message: Option<String>,
    /// What the history says created the layer.
    pub created_by: Option<String>,
    /// The image's creation time (RFC 3339); now when `None`. A fixed time makes the same
    /// content the same image (`bootstrap busybox` twice gives one image, not a dangling one).
    pub created: Option<String>,
}

impl ImageStore {
    /// Imports a root file system tarball as a single-layer image named `name` (or unnamed).
    pub fn import(
        &self,
        input: impl Read + Send + 'static,
        name: Option<&str>,
        opts: &ImportOptions,
    ) -> Result<Image> {
        let name = name.map(Reference::parse).transpose()?;
        let mut config = Config::default();
        for c in &opts.changes {
            apply_change(&mut config, c)?;
        }
        let _lock = self.lock_shared()?;
        let layer = self.ingest_layer(input, "imported tarball")?;
        let created = opts.created.clone().unwrap_or_else(now_rfc3339);
        let mut history = HistoryBuilder::default()
            .created(created.clone())
            .created_by(
                opts.created_by
                    .clone()
                    .unwrap_or_else(|| "tug image import".to_string()),
            );
        if let Some(m) = &opts.message {
            history = history.comment(m.clone());
        }
        let history = history.build().map_err(|e| Error::Corrupt(e.to_string()))?;
        let image = match &opts.created {
            Some(at) => {
                self.commit_image_at(at, Some(config), &[layer], vec![history], name.as_slice())?
            }
            None => self.commit_image(Some(config), &[layer], vec![history], name.as_slice())?,
        };
        Ok(image)
    }

    /// Reads a tar stream (plain, gzip or zstd), unpacks it into the layer cache and stores
    /// the bytes as they came as the layer blob (no recompression). Three stages, each on its
    /// own thread, joined by bounded channels of 1 MiB chunks: (1) read the input, hash it
    /// and write it to the blob; (2) decompress and hash the tar stream (the diff_id);
    /// (3, this thread) unpack. Callers hold the shared store lock.
    pub(crate) fn ingest_layer(
        &self,
        input: impl Read + Send + 'static,
        what: &str,
    ) -> Result<StoredLayer> {
        let blob: BlobWriter = self.layout().ingest()?;
        // A plain tarball is gzip-compressed into its blob (registries and skopeo keep gzip
        // layers as they are); a compressed one is stored as it came.
        let mut input = std::io::BufReader::with_capacity(1 << 20, input);
        let head = std::io::BufRead::fill_buf(&mut input)
            .map_err(io_ctx(format!("cannot read {what}")))?;
        let sink = match unpack::detect(head) {
            unpack::Compression::None => BlobSink::Gzip(flate2::write::GzEncoder::new(
                blob,
                flate2::Compression::new(1),
            )),
            _ => BlobSink::Raw(blob),
        };
        let stored = fsutil::ThreadedReader::new(Tee {
            inner: input,
            copy: sink,
        });
        let decoder =
            unpack::Decoder::new(stored).map_err(io_ctx(format!("cannot read {what}")))?;
        let kind = decoder.kind();
        let mut threaded = fsutil::ThreadedReader::new(fsutil::HashingReader::new(decoder));
        let tmp = self.new_layer_tmp()?;
        let result = (|| {
            unpack::unpack(&mut threaded, &tmp, what, true)?;
            let hashing = threaded.finish().map_err(|e| Error::BadLayer {
                layer: what.to_string(),
                reason: e.to_string(),
            })?;
            let (diff_id, _, decoder) = hashing.into_parts();
            // Bytes after the end of the compressed stream still belong to the blob.
            let tee = decoder
                .into_inner()
                .finish()
                .map_err(io_ctx(format!("cannot read {what}")))?;
            let blob = tee
                .copy
                .finish()
                .map_err(io_ctx("cannot write the layer blob"))?;
            let (digest, size) = blob.commit(None)?;
            let dest = self.layer_dir(&diff_id)?;
            self.commit_layer(&tmp, &dest)?;
            let media_type = match kind {
                unpack::Compression::None | unpack::Compression::Gzip => layout::OCI_LAYER_GZIP,
                unpack::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            Ok(StoredLayer {
                digest,
                size,
                media_type: media_type.to_string(),
                diff_id,
            })
        })();
        if result.is_err() {
            let _ = fsutil::remove_tree(&tmp);
        }
        result
    }

    /// Writes config, manifest and index entries of a new image made of `layers` (already in
    /// the store) and returns it.
    pub(crate) fn commit_image(
        &self,
        config: Option<Config>,
        layers: &[StoredLayer],
        history: Vec<oci_spec::image::History>,
        names: &[Reference],
    ) -> Result<Image> {
        self.commit_image_at(&now_rfc3339(), config, layers, history, names)
    }

    /// [`ImageStore::commit_image`] with the image's creation time given.
    pub(crate) fn commit_image_at(
        &self,
        created: &str,
        config: Option<Config>,
        layers: &[StoredLayer],
        history: Vec<oci_spec::image::History>,
        names: &[Reference],
    ) -> Result<Image> {
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
            .build()
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut ic = ImageConfiguration::default();
        ic.set_created(Some(created.to_owned()));
        ic.set_architecture(super::host_arch().into());
        ic.set_os("linux".into());
        ic.set_config(config);
        ic.set_rootfs(rootfs);
        ic.set_history(Some(history));
        let config_bytes = ic.to_string().map_err(|e| Error::Corrupt(e.to_string()))?;
        self.commit_raw(config_bytes.as_bytes(), layers, names)
    }

    /// Stores `config_bytes` as the config blob and writes a manifest for it and `layers`.
    pub(crate) fn commit_raw(
        &self,
        config_bytes: &[u8],
        layers: &[StoredLayer],
        names: &[Reference],
    ) -> Result<Image> {
        let config_digest = self.layout().put_blob(config_bytes)?;
        let descs: Vec<Descriptor> = layers
            .iter()
            .map(|l| {
                Ok(Descriptor::new(
                    MediaType::from(l.media_type.as_str()),
                    l.size,
                    parse_digest(&l.digest)?,
                ))
            })
            .collect::<Result<_>>()?;
        let manifest: ImageManifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_bytes.len() as u64,
                parse_digest(&config_digest)?,
            ))
            .layers(descs)
            .build()
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let manifest_bytes = manifest
            .to_string()
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let manifest_digest = self.layout().put_blob(manifest_bytes.as_bytes())?;
        self.add_to_index(
            &manifest_digest,
            manifest_bytes.len() as u64,
            layout::OCI_MANIFEST,
            names,
        )?;
        self.resolve(&manifest_digest)
    }
}

pub(crate) fn parse_digest(d: &str) -> Result<oci_spec::image::Digest> {
    d.parse()
        .map_err(|e| Error::Corrupt(format!("bad digest {d}: {e}")))
}

/// The current time in RFC 3339 (UTC, seconds).
pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// Why a `--change` instruction cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No instruction.
    #[error("empty instruction")]
    Empty,
    /// An instruction `--change` does not take.
    #[error("supported: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL")]
    Unsupported,
    /// A JSON form that is not an array of strings.
    #[error("bad JSON array: {0}")]
    Json(#[source] serde_json::Error),
    /// `CMD`/`ENTRYPOINT` without a command.
    #[error("missing command")]
    MissingCommand,
    /// `ENV`/`LABEL` without anything.
    #[error("missing KEY=VALUE")]
    MissingKeyValue,
    /// The legacy `KEY VALUE` form without a value.
    #[error("missing value")]
    MissingValue,
    /// A quote not closed.
    #[error("unterminated quote")]
    UnterminatedQuote,
    /// A word without `=`.
    #[error("{0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    /// `=VALUE`.
    #[error("empty key")]
    EmptyKey,
    /// An `EXPOSE` word that is not a port.
    #[error("want PORT[/tcp|udp|sctp]")]
    Port,
    /// A relative `WORKDIR`.
    #[error("WORKDIR must be an absolute path")]
    RelativeWorkdir,
}

/// Applies one Dockerfile instruction to `config`.
pub(crate) fn apply_change(config: &mut Config, change: &str) -> Result<()> {
    let bad = |reason: ChangeError| Error::BadChange {
        change: change.to_string(),
        reason,
    };
    let change_trim = change.trim();
    let (instr, rest) = change_trim
        .split_once(char::is_whitespace)
        .map_or((change_trim, ""), |(a, b)| (a, b.trim()));
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.set_cmd(Some(command_form(rest).map_err(bad)?));
        }
        "ENTRYPOINT" => {
            config.set_entrypoint(Some(command_form(rest).map_err(bad)?));
        }
        "ENV" => {
            let mut env = config.env().clone().unwrap_or_default();
            for (k, v) in key_values(rest).map_err(bad)? {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(a, _)| a) != k);
                env.push(format!("{k}={v}"));
            }
            config.set_env(Some(env));
        }
        "LABEL" => {
            let mut labels: HashMap<String, String> = config.labels().clone().unwrap_or_default();
            for (k, v) in key_values(rest).map_err(bad)? {
                labels.insert(k, v);
            }
            config.set_labels(Some(labels));
        }
        "EXPOSE" => {
            let mut ports = config.exposed_ports().clone().unwrap_or_default();
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(bad(ChangeError::Port));
                }
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            config.set_exposed_ports(Some(ports));
        }
        "USER" if !rest.is_empty() => {
            config.set_user(Some(rest.to_string()));
        }
        "WORKDIR" if rest.starts_with('/') => {
            config.set_working_dir(Some(rest.to_string()));
        }
        "WORKDIR" => return Err(bad(ChangeError::RelativeWorkdir)),
        "STOPSIGNAL" if !rest.is_empty() => {
            config.set_stop_signal(Some(rest.to_string()));
        }
        "VOLUME" => {
            let mut vols = config.volumes().clone().unwrap_or_default();
            let list = if rest.starts_with('[') {
                serde_json::from_str::<Vec<String>>(rest).map_err(|e| bad(ChangeError::Json(e)))?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            for v in list {
                if !vols.contains(&v) {
                    vols.push(v);
                }
            }
            config.set_volumes(Some(vols));
        }
        "" => return Err(bad(ChangeError::Empty)),
        _ => return Err(bad(ChangeError::Unsupported)),
    }
    Ok(())
}

/// `["a","b"]` (exec form) or `a b` (shell form: `/bin/sh -c "a b"`).
fn command_form(rest: &str) -> std::result::Result<Vec<String>, ChangeError> {
    if rest.starts_with('[') {
        serde_json::from_str::<Vec<String>>(rest).map_err(ChangeError::Json)
    } else if rest.is_empty() {
        Err(ChangeError::MissingCommand)
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
    }
}

/// `K=V K2="v 2"` or the legacy `K V with spaces`.
fn key_values(rest: &str) -> std::result::Result<Vec<(String, String)>, ChangeError> {
    if rest.is_empty() {
        return Err(ChangeError::MissingKeyValue);
    }
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or(ChangeError::MissingValue)?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            match quote {
                Some(q) if c == q => {
                    quote = None;
                    chars.next();
                }
                Some(_) => {
                    if c == '\\' {
                        chars.next();
                        if let Some(n) = chars.next() {
                            word.push(n);
                        }
                        continue;
                    }
                    word.push(c);
                    chars.next();
                }
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    chars.next();
                }
                None if c.is_whitespace() => break,
                None => {
                    word.push(c);
                    chars.next();
                }
            }
        }
        if quote.is_some() {
            return Err(ChangeError::UnterminatedQuote);
        }
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| ChangeError::NotKeyValue(word.clone()))?;
        if k.is_empty() {
            return Err(ChangeError::EmptyKey);
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply() {
        let mut c = Config::default();
        apply_change(&mut c, r#"CMD ["sh"]"#).unwrap();
        assert_eq!(c.cmd().as_deref(), Some(&["sh".to_string()][..]));
        apply_change(&mut c, "ENTRYPOINT echo hi").unwrap();
        assert_eq!(c.entrypoint().as_ref().unwrap()[2], "echo hi");
        apply_change(&mut c, r#"ENV A=1 B="two words""#).unwrap();
        apply_change(&mut c, "ENV A 3").unwrap();
        assert_eq!(
            c.env().clone().unwrap(),
            vec!["B=two words".to_string(), "A=3".to_string()]
        );
        apply_change(&mut c, "EXPOSE 80 53/udp").unwrap();
        assert_eq!(c.exposed_ports().clone().unwrap(), vec!["80/tcp", "53/udp"]);
        apply_change(&mut c, "WORKDIR /srv").unwrap();
        assert!(apply_change(&mut c, "WORKDIR srv").is_err());
        assert!(apply_change(&mut c, "RUN x").is_err());
        assert!(apply_change(&mut c, "CMD [broken").is_err());
    }
}
