//! The build cache: one record per filesystem step, keyed by the step's cache key, stored as
//! an image-store pin (`<root>/images/pins/build-<key>.json`) so its layer survives `image
//! rm` of the image it went into; `tug builder prune` removes the records and then the
//! content nothing else uses.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::image::{ImageStore, Pin};

/// Prefix of the builder's pins.
pub const PIN_PREFIX: &str = "build-";

/// A layer in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Blob digest.
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The layer (`None`: the step changed nothing).
    pub layer: Option<LayerRef>,
    /// When the step ran (RFC 3339).
    pub created: String,
}

/// `sha256:<hex>` of the parts, each followed by a NUL.
#[must_use]
pub fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn pin_name(key: &str) -> String {
    format!("{PIN_PREFIX}{}", key.trim_start_matches("sha256:"))
}

/// The record of `key`, if there is one whose layer is still complete in the store.
#[must_use]
pub fn lookup(store: &ImageStore, key: &str) -> Option<Record> {
    let pin = store.read_pin(&pin_name(key))?;
    let rec: Record = serde_json::from_value(pin.record).ok()?;
    if let Some(l) = &rec.layer
        && !store.layout().has_blob(&l.digest)
    {
        return None;
    }
    Some(rec)
}

/// Saves the record of `key`.
pub fn save(store: &ImageStore, key: &str, rec: &Record) -> crate::engine::image::Result<()> {
    let pin = Pin {
        blobs: rec.layer.iter().map(|l| l.digest.clone()).collect(),
        diff_ids: rec.layer.iter().map(|l| l.diff_id.clone()).collect(),
        record: serde_json::to_value(rec).unwrap_or_default(),
    };
    store.pin(&pin_name(key), &pin)
}
