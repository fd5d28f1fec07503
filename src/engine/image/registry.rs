//! Pulling from and pushing to registries (the OCI distribution API), with oci-client.
//!
//! A registry serves manifests at `/v2/<repo>/manifests/<tag|digest>` and blobs at
//! `/v2/<repo>/blobs/<digest>`. Access starts with `GET /v2/`: a registry that wants
//! credentials answers 401 with `WWW-Authenticate` — either `Basic` (send the user and
//! password with every request) or `Bearer realm=…,service=…` (ask the realm for a token
//! scoped to `repository:<repo>:pull[,push]`, with the credentials if there are any, and send
//! that token). oci-client does this dance; tug supplies credentials (see [`super::auth`]).
//!
//! Pull: the manifest is fetched by tag or digest (by tug's own request, read up to
//! [`layout::MAX_MANIFEST`]: oci-client reads a body of any size); a manifest list / OCI
//! index is narrowed to the host platform; the config (at most [`layout::MAX_CONFIG`]) and
//! every missing layer are downloaded in parallel into `.ingest/`, each verified against its
//! digest and its descriptor's size (never written past it, refused when shorter) before it
//! becomes a blob. A transfer that breaks is resumed: the bytes written so far stay
//! in the ingest file with their running hash, and the next request asks for the rest with an
//! HTTP `Range: bytes=N-` header (`206 Partial Content`); a registry that answers `200` with
//! the whole blob instead gets a fresh ingest file. A pull is a transfer, like `skopeo copy`:
//! layers are unpacked (and checked against their diff_ids) on first use, by
//! [`ImageStore::layer_dirs`], or right away with `tug image pull --unpack`. The manifest is
//! stored with the bytes the registry served,
//! so its digest is the registry's. Loopback registries and those configured as insecure are
//! spoken to over plain HTTP; every other one over HTTPS.
//!
//! Push: each blob the registry lacks is streamed from disk in 4 MB pieces (one chunked
//! upload `PATCH` each, so a blob is never whole in memory) and hashed on the way; a local
//! blob whose bytes do not match its name ends the stream with an error before the upload is
//! committed. The manifest goes last, so a registry never serves an image with missing blobs.
//!
//! Progress is reported through a callback; the engine never prints.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::BlobResponse;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_spec::image::{ImageIndex, ImageManifest};

use super::auth::{self, Credentials, RegistrySettings};
use super::fsutil::{self, io_ctx};
use super::layout;
use super::{Error, Image, ImageStore, Reference, Result, platform};

/// How many blobs move at once.
const PARALLEL: usize = 3;
/// Attempts per blob before giving up.
const ATTEMPTS: u32 = 3;

/// Manifest media types tug asks for.
const ACCEPT: &[&str] = &[
    layout::OCI_MANIFEST,
    layout::DOCKER_MANIFEST,
    layout::OCI_INDEX,
    layout::DOCKER_MANIFEST_LIST,
];

/// Config media types tug accepts.
const CONFIG_TYPES: &[&str] = &[layout::OCI_CONFIG, layout::DOCKER_CONFIG];

/// Progress of a pull or push.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The manifest is known: its digest and the layers (digest, size).
    Resolved {
        /// The manifest digest.
        digest: String,
        /// Layers, lowest first.
        layers: Vec<(String, u64)>,
    },
    /// Bytes of a blob moved so far (cumulative).
    Bytes {
        /// The blob.
        digest: String,
        /// Bytes so far.
        done: u64,
        /// Size.
        total: u64,
    },
    /// A blob was already there (local store on pull, registry on push).
    Skipped {
        /// The blob.
        digest: String,
    },
    /// A transfer failed and is tried again.
    Retrying {
        /// The blob.
        digest: String,
        /// The next attempt (2, 3, …).
        attempt: u32,
        /// Why the last one failed.
        reason: String,
    },
    /// A broken transfer goes on from `offset` (the registry honoured an HTTP range).
    Resumed {
        /// The blob.
        digest: String,
        /// Bytes kept from the attempts before.
        offset: u64,
    },
    /// A broken transfer starts over (the registry sent the whole blob again).
    Restarted {
        /// The blob.
        digest: String,
    },
    /// A blob is complete and verified.
    Done {
        /// The blob.
        digest: String,
    },
    /// A layer is unpacked into the layer cache.
    Unpacked {
        /// The layer blob.
        digest: String,
    },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A progress callback that ignores everything.
#[must_use]
pub fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_ctx("cannot start the async runtime"))
}

/// True when `host` is spoken to over plain HTTP (loopback and insecure hosts).
fn plain_http(host: &str, settings: &RegistrySettings) -> bool {
    auth::is_loopback(host) || settings.insecure.iter().any(|h| h == host)
}

/// The PEM files of the configured CAs.
fn ca_files(settings: &RegistrySettings) -> Result<Vec<Vec<u8>>> {
    settings
        .ca_certs
        .iter()
        .map(|p| std::fs::read(p).map_err(io_ctx(format!("cannot read CA file {}", p.display()))))
        .collect()
}

/// A client for `host`: plain HTTP for loopback and insecure hosts, HTTPS with the system
/// roots (and configured CAs) for the rest.
fn client_for(host: &str, settings: &RegistrySettings) -> Result<Client> {
    let protocol = if plain_http(host, settings) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let certs = ca_files(settings)?
        .into_iter()
        .map(|data| Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        })
        .collect();
    let config = ClientConfig {
        protocol,
        extra_root_certificates: certs,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(|e| Error::Registry {
        reference: host.to_string(),
        reason: format!("cannot set up the HTTP client: {e}"),
    })
}

/// Manifest requests, made by tug itself: oci-client reads a manifest's body whole, whatever
/// its size, where this reads at most [`layout::MAX_MANIFEST`] and checks a size the
/// manifest's descriptor gives. Same protocol, CA files and timeouts as [`client_for`]; the
/// credentials are the bearer token oci-client obtained, or the basic credentials.
struct Manifests {
    http: reqwest::Client,
    scheme: &'static str,
    authorization: Option<String>,
}

impl Manifests {
    fn new(
        host: &str,
        settings: &RegistrySettings,
        token: Option<&str>,
        auth: &RegistryAuth,
    ) -> Result<Self> {
        use base64::Engine as _;
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60));
        let mut roots = Vec::new();
        for pem in ca_files(settings)? {
            roots.push(
                reqwest::Certificate::from_pem(&pem).map_err(|e| Error::Registry {
                    reference: host.to_string(),
                    reason: format!("bad CA file: {e}"),
                })?,
            );
        }
        if !roots.is_empty() {
            b = b.tls_certs_merge(roots);
        }
        let http = b.build().map_err(|e| Error::Registry {
            reference: host.to_string(),
            reason: format!("cannot set up the HTTP client: {e}"),
        })?;
        let authorization = match (token, auth) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, RegistryAuth::Basic(u, p)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )),
            (None, _) => None,
        };
        Ok(Self {
            http,
            scheme: if plain_http(host, settings) {
                "http"
            } else {
                "https"
            },
            authorization,
        })
    }

    /// GETs the manifest `oref` names; `declared` is the size its descriptor gives (a
    /// manifest picked from an index). Returns the bytes and their digest (checked against
    /// the registry's `Docker-Content-Digest`).
    async fn get(
        &self,
        oref: &oci_client::Reference,
        shown: &str,
        declared: Option<u64>,
    ) -> Result<(Vec<u8>, String)> {
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            oref.resolve_registry(),
            oref.repository(),
            oref.digest().or(oref.tag()).unwrap_or("latest")
        );
        let what = format!("manifest of {shown}");
        let mut req = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, ACCEPT.join(", "));
        if let Some(a) = &self.authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let broken = |e: reqwest::Error| map_err(shown, OciDistributionError::RequestError(e));
        let mut res = req.send().await.map_err(broken)?;
        let status = res.status();
        if status.is_success()
            && let Some(n) = res.content_length()
        {
            layout::check_limit(&what, n, layout::MAX_MANIFEST, "manifests")?;
            if let Some(d) = declared {
                layout::check_size(&what, d, n, "the registry sends")?;
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(broken)? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > layout::MAX_MANIFEST {
                return Err(Error::Size {
                    what,
                    reason: format!(
                        "the registry sends more than {} bytes, the limit for manifests",
                        layout::MAX_MANIFEST
                    ),
                });
            }
        }
        if status != reqwest::StatusCode::OK {
            let message = String::from_utf8_lossy(&body).into_owned();
            let e = match status.as_u16() {
                401 => OciDistributionError::UnauthorizedError { url },
                c if status.is_client_error() => {
                    match serde_json::from_slice::<oci_client::errors::OciEnvelope>(&body) {
                        Ok(envelope) => OciDistributionError::RegistryError { envelope, url },
                        Err(_) => OciDistributionError::ServerError {
                            code: c,
                            url,
                            message,
                        },
                    }
                }
                c => OciDistributionError::ServerError {
                    code: c,
                    url,
                    message,
                },
            };
            return Err(map_err(shown, e));
        }
        if let Some(d) = declared {
            layout::check_size(&what, d, body.len() as u64, "the registry sent")?;
        }
        let digest = fsutil::sha256_digest(&body);
        if let Some(h) = res
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            && h.starts_with("sha256:")
            && h != digest
        {
            return Err(Error::DigestMismatch {
                what,
                expected: h.to_string(),
                actual: digest,
            });
        }
        Ok((body, digest))
    }
}

fn registry_auth(host: &str) -> Result<RegistryAuth> {
    Ok(match auth::lookup(host)? {
        Some(c) => RegistryAuth::Basic(c.username, c.password),
        None => RegistryAuth::Anonymous,
    })
}

fn oci_ref(host: &str, r: &Reference, digest: Option<&str>) -> oci_client::Reference {
    match (digest.or(r.digest.as_deref()), &r.tag) {
        (Some(d), _) => oci_client::Reference::with_digest(
            host.to_string(),
            r.repository.clone(),
            d.to_string(),
        ),
        (None, Some(t)) => {
            oci_client::Reference::with_tag(host.to_string(), r.repository.clone(), t.clone())
        }
        (None, None) => {
            oci_client::Reference::with_tag(host.to_string(), r.repository.clone(), "latest".into())
        }
    }
}

/// Turns an oci-client error into one line that names the reference.
fn map_err(reference: &str, e: OciDistributionError) -> Error {
    let reference = reference.to_string();
    match e {
        OciDistributionError::AuthenticationFailure(reason) => Error::AuthRefused {
            reference,
            reason: one_line(&token_server_reason(&reason)),
        },
        OciDistributionError::UnauthorizedError { .. } => Error::AuthRefused {
            reference,
            reason: "the registry answered 401 unauthorized".into(),
        },
        OciDistributionError::ImageManifestNotFoundError(_) => Error::UnknownTag(reference),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| matches!(c, OciErrorCode::NameUnknown)) {
                Error::UnknownImage(reference)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::ManifestUnknown))
            {
                Error::UnknownTag(reference)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Error::AuthRefused {
                    reason: one_line(
                        &envelope
                            .errors
                            .iter()
                            .map(|e| e.message.clone())
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                    reference,
                }
            } else {
                Error::Registry {
                    reference,
                    reason: one_line(
                        &envelope
                            .errors
                            .iter()
                            .map(|e| format!("{:?}: {}", e.code, e.message))
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => Error::UnknownTag(reference),
        OciDistributionError::ServerError { code, message, .. } => Error::Registry {
            reference,
            reason: format!("HTTP {code}: {}", one_line(&message)),
        },
        OciDistributionError::RequestError(e) if e.status().is_some() => {
            let code = e.status().map_or(0, |s| s.as_u16());
            match code {
                401 | 403 => Error::AuthRefused {
                    reference,
                    reason: format!("the registry answered {code}"),
                },
                404 => Error::UnknownTag(reference),
                _ => Error::Registry {
                    reference,
                    reason: format!("HTTP {code}"),
                },
            }
        }
        OciDistributionError::RequestError(e) => {
            let mut reason = e.to_string();
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
            while let Some(s) = src {
                reason = format!("{reason}: {s}");
                src = s.source();
            }
            Error::Unreachable {
                reference,
                reason: one_line(&reason),
            }
        }
        OciDistributionError::DigestError(d) => Error::DigestMismatch {
            what: reference,
            expected: String::new(),
            actual: one_line(&d.to_string()),
        },
        OciDistributionError::UnsupportedMediaTypeError(m) => Error::UnsupportedMediaType {
            media_type: m,
            reference,
        },
        other => Error::Registry {
            reference,
            reason: one_line(&other.to_string()),
        },
    }
}

/// What a token server's refusal says: the `details` of Docker's auth server, or the messages
/// of a distribution-style `errors` list; the body as it is otherwise.
fn token_server_reason(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_string();
    };
    if let Some(d) = v.get("details").and_then(|d| d.as_str()) {
        return format!("the token server said: {d}");
    }
    let messages: Vec<&str> = v
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if messages.is_empty() {
        body.to_string()
    } else {
        format!("the token server said: {}", messages.join("; "))
    }
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 300 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(300).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

fn is_retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Unreachable { .. }
            | Error::Registry { .. }
            | Error::DigestMismatch { .. }
            | Error::Io { .. }
    )
}

/// The media type a manifest document declares.
fn declared_media_type(raw: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(raw)
        .ok()?
        .get("mediaType")?
        .as_str()
        .map(str::to_string)
}

impl ImageStore {
    /// Pulls `reference` from its registry (or a configured mirror) and returns the image.
    pub fn pull(&self, reference: &str, progress: &ProgressFn) -> Result<Image> {
        let r = Reference::parse(reference)?;
        let settings = auth::settings()?;
        let mut hosts: Vec<String> = settings.mirrors.get(&r.domain).cloned().unwrap_or_default();
        hosts.push(r.domain.clone());
        let rt = runtime()?;
        let mut last = None;
        for (i, host) in hosts.iter().enumerate() {
            match rt.block_on(self.pull_from(host, &r, &settings, progress)) {
                Ok(img) => return Ok(img),
                Err(
                    e @ (Error::Unreachable { .. } | Error::UnknownTag(_) | Error::UnknownImage(_)),
                ) if i + 1 < hosts.len() => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NotFound(reference.to_string())))
    }

    // Long: the pull protocol in order: manifest or index, platform choice, config, layers in
    // parallel, index update; one retry context for all.
    async fn pull_from(
        &self,
        host: &str,
        r: &Reference,
        settings: &RegistrySettings,
        progress: &ProgressFn,
    ) -> Result<Image> {
        let shown = r.familiar();
        let client = client_for(host, settings)?;
        let auth = registry_auth(host)?;
        let oref = oci_ref(host, r, None);
        let token = client
            .auth(&oref, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| map_err(&shown, e))?;
        let manifests = Manifests::new(host, settings, token.as_deref(), &auth)?;
        let (mut raw, mut digest) = manifests.get(&oref, &shown, None).await?;
        if let Some(d) = &r.digest {
            check_digest(&shown, d, &raw)?;
        }
        let mut media_type =
            declared_media_type(&raw).unwrap_or_else(|| layout::OCI_MANIFEST.to_string());
        if media_type == layout::OCI_INDEX || media_type == layout::DOCKER_MANIFEST_LIST {
            let index = ImageIndex::from_reader(raw.as_slice()).map_err(|e| Error::Registry {
                reference: shown.clone(),
                reason: format!("bad image index: {e}"),
            })?;
            let pick = platform::pick(index.manifests()).ok_or_else(|| Error::Registry {
                reference: shown.clone(),
                reason: format!("no image for linux/{}", super::host_arch()),
            })?;
            let d = pick.digest().to_string();
            layout::check_limit(
                &format!("manifest {d} of {shown}"),
                pick.size(),
                layout::MAX_MANIFEST,
                "manifests",
            )?;
            let pref = oci_ref(host, r, Some(&d));
            let (inner, _) = manifests.get(&pref, &shown, Some(pick.size())).await?;
            raw = inner;
            check_digest(&shown, &d, &raw)?;
            digest = d;
            media_type = declared_media_type(&raw).unwrap_or_else(|| pick.media_type().to_string());
        }
        if media_type != layout::OCI_MANIFEST && media_type != layout::DOCKER_MANIFEST {
            return Err(Error::UnsupportedMediaType {
                media_type,
                reference: shown,
            });
        }
        let manifest = ImageManifest::from_reader(raw.as_slice()).map_err(|e| Error::Registry {
            reference: shown.clone(),
            reason: format!("bad manifest: {e}"),
        })?;
        let config_type = manifest.config().media_type().to_string();
        if !CONFIG_TYPES.contains(&config_type.as_str()) {
            return Err(Error::UnsupportedMediaType {
                media_type: config_type,
                reference: shown,
            });
        }
        for l in manifest.layers() {
            let mt = l.media_type().to_string();
            if !layout::LAYER_TYPES.contains(&mt.as_str()) {
                return Err(Error::UnsupportedMediaType {
                    media_type: mt,
                    reference: shown,
                });
            }
        }
        progress(Progress::Resolved {
            digest: digest.clone(),
            layers: manifest
                .layers()
                .iter()
                .map(|l| (l.digest().to_string(), l.size()))
                .collect(),
        });

        let _lock = self.lock_shared()?;
        // The config first: a config that does not parse, or does not list one diff_id per
        // layer, stops the pull before the layers move.
        let config_digest = manifest.config().digest().to_string();
        let config_size = manifest.config().size();
        layout::check_limit(
            &format!("config of {shown}"),
            config_size,
            layout::MAX_CONFIG,
            "image configs",
        )?;
        self.fetch_blob(
            &client,
            &oref,
            &shown,
            &config_digest,
            config_size,
            progress,
        )
        .await?;
        let raw_config = self.layout().read_blob(&config_digest)?;
        let config = oci_spec::image::ImageConfiguration::from_reader(raw_config.as_slice())
            .map_err(|e| Error::Registry {
                reference: shown.clone(),
                reason: format!("bad image config: {e}"),
            })?;
        if config.rootfs().diff_ids().len() != manifest.layers().len() {
            return Err(Error::Registry {
                reference: shown,
                reason: "layer and diff_id counts differ".into(),
            });
        }
        let jobs = manifest.layers().iter().map(|l| {
            let digest = l.digest().to_string();
            let size = l.size();
            let client = &client;
            let oref = &oref;
            let shown = &shown;
            async move {
                self.fetch_blob(client, oref, shown, &digest, size, progress)
                    .await
            }
        });
        futures::stream::iter(jobs)
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        let stored = self.layout().put_blob(&raw)?;
        if stored != digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest of {shown}"),
                expected: digest,
                actual: stored,
            });
        }
        let names = if r.tag.is_some() {
            vec![r.without_digest()]
        } else {
            Vec::new()
        };
        self.add_to_index(&digest, raw.len() as u64, &media_type, &names)?;
        self.resolve(&digest)
    }

    /// Downloads one blob into the store unless present, verifying digest and size. A transfer
    /// that breaks is resumed where it stopped (an HTTP `Range` request; the bytes already
    /// written stay and the running hash goes on), or started again if the registry answers
    /// with the whole blob; at most [`ATTEMPTS`] tries.
    async fn fetch_blob(
        &self,
        client: &Client,
        oref: &oci_client::Reference,
        shown: &str,
        digest: &str,
        size: u64,
        progress: &ProgressFn,
    ) -> Result<()> {
        if self.layout().has_blob(digest) {
            // The same digest is the same bytes: a descriptor that gives another size lies.
            let path = self.layout().blob_path(digest)?;
            let held = std::fs::metadata(&path)
                .map_err(io_ctx(format!("cannot stat {}", path.display())))?
                .len();
            layout::check_size(
                &format!("blob {digest} of {shown}"),
                size,
                held,
                "the store holds",
            )?;
            progress(Progress::Skipped {
                digest: digest.to_string(),
            });
            return Ok(());
        }
        let mut partial: Option<layout::BlobWriter> = None;
        let mut attempt = 1;
        loop {
            let result = self
                .fetch_once(client, oref, shown, digest, size, progress, &mut partial)
                .await;
            let result = match result {
                Ok(()) => match partial.take() {
                    Some(w) => w.commit(Some(digest)).map(|_| ()).map_err(|e| match e {
                        Error::DigestMismatch {
                            expected, actual, ..
                        } => Error::DigestMismatch {
                            what: format!("blob of {shown}"),
                            expected,
                            actual,
                        },
                        other => other,
                    }),
                    None => Ok(()),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    progress(Progress::Done {
                        digest: digest.to_string(),
                    });
                    return Ok(());
                }
                Err(e) if attempt < ATTEMPTS && is_retryable(&e) => {
                    attempt += 1;
                    if matches!(e, Error::DigestMismatch { .. }) {
                        // Bad bytes: never resume on top of them.
                        partial = None;
                    }
                    progress(Progress::Retrying {
                        digest: digest.to_string(),
                        attempt,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One transfer attempt into `partial` (created when `None`; resumed from its length when
    /// it holds bytes). Ends with `partial` holding exactly `size` bytes, not yet committed.
    async fn fetch_once(
        &self,
        client: &Client,
        oref: &oci_client::Reference,
        shown: &str,
        digest: &str,
        size: u64,
        progress: &ProgressFn,
        partial: &mut Option<layout::BlobWriter>,
    ) -> Result<()> {
        use std::io::Write;
        let offset = partial.as_ref().map_or(0, layout::BlobWriter::written);
        let mut stream = if offset > 0 && offset < size {
            match client
                .pull_blob_stream_partial(oref, digest, offset, None)
                .await
                .map_err(|e| map_err(shown, e))?
            {
                BlobResponse::Partial(s) => {
                    progress(Progress::Resumed {
                        digest: digest.to_string(),
                        offset,
                    });
                    s
                }
                BlobResponse::Full(s) => {
                    // The registry ignored the range: start the blob again.
                    *partial = None;
                    progress(Progress::Restarted {
                        digest: digest.to_string(),
                    });
                    s
                }
            }
        } else {
            if offset >= size {
                *partial = None;
            }
            client
                .pull_blob_stream(oref, digest)
                .await
                .map_err(|e| map_err(shown, e))?
        };
        if partial.is_none() {
            *partial = Some(self.layout().ingest()?);
        }
        let Some(w) = partial.as_mut() else {
            return Err(Error::Corrupt("no ingest file".into()));
        };
        let what = || format!("blob {digest} of {shown}");
        // A registry that announces another length than the descriptor's is refused before
        // a byte is written.
        if let Some(n) = stream.content_length {
            let announced = w.written() + n;
            if announced != size {
                *partial = None;
                return layout::check_size(&what(), size, announced, "the registry sends");
            }
        }
        let mut done = w.written();
        let mut last_report = done;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Unreachable {
                reference: shown.to_string(),
                reason: format!("transfer of {digest} broke at {done} bytes: {e}"),
            })?;
            done += chunk.len() as u64;
            if done > size {
                // Cut off: nothing past the descriptor's size is written.
                *partial = None;
                return Err(Error::Size {
                    what: what(),
                    reason: format!(
                        "its descriptor says {size} bytes, the registry sends more (cut off)"
                    ),
                });
            }
            w.write_all(&chunk)
                .map_err(io_ctx("cannot write a blob to the ingest directory"))?;
            if done - last_report >= 256 * 1024 || done == size {
                last_report = done;
                progress(Progress::Bytes {
                    digest: digest.to_string(),
                    done,
                    total: size,
                });
            }
        }
        if done < size {
            // The body ended where the registry said it would (a broken connection is an
            // error of the stream above): the blob is smaller than its descriptor says.
            *partial = None;
            return layout::check_size(&what(), size, done, "the registry sent");
        }
        Ok(())
    }

    /// Pushes the local image `source` (default: `target` itself) to the registry as `target`.
    /// Returns the manifest digest.
    pub fn push(
        &self,
        source: Option<&str>,
        target: &str,
        progress: &ProgressFn,
    ) -> Result<String> {
        let r = Reference::parse(target)?;
        if r.digest.is_some() {
            return Err(Error::InvalidReference {
                reference: target.to_string(),
                reason: "push needs a tag, not a digest".into(),
            });
        }
        let img = self.resolve(source.unwrap_or(target))?;
        let settings = auth::settings()?;
        let rt = runtime()?;
        let _lock = self.lock_shared()?;
        rt.block_on(self.push_to(&img, &r, &settings, progress))
    }

    async fn push_to(
        &self,
        img: &Image,
        r: &Reference,
        settings: &RegistrySettings,
        progress: &ProgressFn,
    ) -> Result<String> {
        let shown = r.familiar();
        let host = r.domain.as_str();
        let client = client_for(host, settings)?;
        let auth = registry_auth(host)?;
        let oref = oci_ref(host, r, None);
        client
            .auth(&oref, &auth, RegistryOperation::Push)
            .await
            .map_err(|e| map_err(&shown, e))?;
        progress(Progress::Resolved {
            digest: img.digest.clone(),
            layers: img
                .manifest
                .layers()
                .iter()
                .map(|l| (l.digest().to_string(), l.size()))
                .collect(),
        });
        let mut blobs: Vec<(String, u64)> = img
            .manifest
            .layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size()))
            .collect();
        blobs.push((img.id.clone(), img.manifest.config().size()));
        let jobs = blobs.into_iter().map(|(digest, size)| {
            let client = &client;
            let oref = &oref;
            let shown = &shown;
            async move {
                let exists = client
                    .blob_exists(oref, &digest)
                    .await
                    .map_err(|e| map_err(shown, e))?;
                if exists {
                    progress(Progress::Skipped { digest });
                    return Ok::<(), Error>(());
                }
                let path = self.layout().blob_path(&digest)?;
                let mut attempt = 1;
                loop {
                    // A fresh stream per attempt: the file is read again from the start.
                    let failure = Arc::new(std::sync::Mutex::new(None));
                    let stream = blob_stream(
                        path.clone(),
                        digest.clone(),
                        size,
                        progress.clone(),
                        failure.clone(),
                    );
                    match client
                        .push_blob_stream(oref, stream, &digest, Some(size))
                        .await
                    {
                        Ok(_) => break,
                        Err(e) => {
                            if let Some(local) = failure.lock().ok().and_then(|mut f| f.take()) {
                                return Err(local);
                            }
                            let e = map_err(shown, e);
                            if attempt >= ATTEMPTS || !is_retryable(&e) {
                                return Err(e);
                            }
                            attempt += 1;
                            progress(Progress::Retrying {
                                digest: digest.clone(),
                                attempt,
                                reason: e.to_string(),
                            });
                            tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt)))
                                .await;
                        }
                    }
                }
                progress(Progress::Bytes {
                    digest: digest.clone(),
                    done: size,
                    total: size,
                });
                progress(Progress::Done { digest });
                Ok(())
            }
        });
        futures::stream::iter(jobs)
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        let raw = self.layout().read_blob(&img.digest)?;
        let content_type =
            http::HeaderValue::from_str(&img.manifest_media_type).map_err(|e| Error::Registry {
                reference: shown.clone(),
                reason: format!("bad media type: {e}"),
            })?;
        client
            .push_manifest_raw(&oref, raw, content_type)
            .await
            .map_err(|e| map_err(&shown, e))?;
        Ok(img.digest.clone())
    }
}

/// The size of the pieces a blob is pushed in: one `PATCH` request each, and the most of a
/// blob that is in memory at once.
const PUSH_PIECE: usize = 4 << 20;

type PushItem = std::result::Result<bytes::Bytes, OciDistributionError>;

/// The local blob at `path` as a stream of [`PUSH_PIECE`]-sized pieces, read on the blocking
/// pool and hashed on the way. If the bytes do not hash to `digest` (or the file cannot be
/// read, or is longer than `size`), the stream ends with an error, so the upload is never
/// committed, and the reason is left in `failure`.
fn blob_stream(
    path: std::path::PathBuf,
    digest: String,
    size: u64,
    progress: ProgressFn,
    failure: Arc<std::sync::Mutex<Option<Error>>>,
) -> impl futures::Stream<Item = PushItem> + Send + 'static {
    struct State {
        reader: Option<fsutil::HashingReader<std::fs::File>>,
        path: std::path::PathBuf,
        opened: bool,
        finished: bool,
    }
    let fail = move |e: Error| -> PushItem {
        let msg = e.to_string();
        if let Ok(mut f) = failure.lock() {
            *f = Some(e);
        }
        Err(OciDistributionError::GenericError(Some(msg)))
    };
    let state = State {
        reader: None,
        path,
        opened: false,
        finished: false,
    };
    futures::stream::unfold(state, move |mut st| {
        let digest = digest.clone();
        let progress = progress.clone();
        let fail = fail.clone();
        async move {
            if st.finished {
                return None;
            }
            if !st.opened {
                st.opened = true;
                match std::fs::File::open(&st.path) {
                    Ok(f) => st.reader = Some(fsutil::HashingReader::new(f)),
                    Err(e) => {
                        st.finished = true;
                        let e = io_ctx(format!("cannot read {}", st.path.display()))(e);
                        return Some((fail(e), st));
                    }
                }
            }
            let reader = st.reader.take()?;
            let read = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut reader = reader;
                let mut buf = vec![0u8; PUSH_PIECE];
                let mut n = 0;
                while n < buf.len() {
                    match reader.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return (reader, Err(e)),
                    }
                }
                buf.truncate(n);
                (reader, Ok(buf))
            })
            .await;
            let (reader, buf) = match read {
                Ok(r) => r,
                Err(e) => {
                    st.finished = true;
                    return Some((
                        fail(Error::Corrupt(format!("reading a blob failed: {e}"))),
                        st,
                    ));
                }
            };
            let buf = match buf {
                Ok(b) => b,
                Err(e) => {
                    st.finished = true;
                    let e = io_ctx(format!("cannot read {}", st.path.display()))(e);
                    return Some((fail(e), st));
                }
            };
            if buf.is_empty() {
                st.finished = true;
                let (actual, count, _) = reader.into_parts();
                if actual != digest || count != size {
                    let e = Error::DigestMismatch {
                        what: format!("local blob {}", st.path.display()),
                        expected: format!("{digest} ({size} bytes)"),
                        actual: format!("{actual} ({count} bytes)"),
                    };
                    return Some((fail(e), st));
                }
                return None;
            }
            let done = reader.count();
            st.reader = Some(reader);
            progress(Progress::Bytes {
                digest,
                done,
                total: size,
            });
            Some((Ok(bytes::Bytes::from(buf)), st))
        }
    })
}

fn check_digest(shown: &str, expected: &str, raw: &[u8]) -> Result<()> {
    let actual = fsutil::sha256_digest(raw);
    if actual == expected {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            what: format!("manifest of {shown}"),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Checks `creds` against the registry `host` and stores them for tug (`tug login`).
pub fn login(host: &str, creds: &Credentials) -> Result<()> {
    let host = normalise_host(host);
    let settings = auth::settings()?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = client_for(&host, &settings)?;
        let auth = RegistryAuth::Basic(creds.username.clone(), creds.password.clone());
        // Any repository will do: the answer to a wrong password is 401 either way, and to a
        // right one 404 (no such image).
        let probe = oci_client::Reference::with_tag(
            host.clone(),
            "tug-login-probe/check".into(),
            "latest".into(),
        );
        let token = client
            .auth(&probe, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| map_err(&host, e))?;
        let manifests = Manifests::new(&host, &settings, token.as_deref(), &auth)?;
        match manifests.get(&probe, &host, None).await {
            Ok(_) | Err(Error::UnknownImage(_) | Error::UnknownTag(_)) => Ok(()),
            Err(other) => Err(other),
        }
    })?;
    auth::store(&host, creds)
}

/// Forgets tug's stored credentials for `host`; false if there were none.
pub fn logout(host: &str) -> Result<bool> {
    auth::remove(&normalise_host(host))
}

/// `https://index.docker.io/v1/`, `index.docker.io` → `docker.io`; strips a URL scheme.
fn normalise_host(host: &str) -> String {
    let h = host
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let h = h.split('/').next().unwrap_or(h);
    if h == "index.docker.io" || h == "registry-1.docker.io" || h.is_empty() {
        super::DOCKER_HUB.to_string()
    } else {
        h.to_string()
    }
}
