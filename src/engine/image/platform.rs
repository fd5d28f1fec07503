//! Choosing the host's image from a multi-platform index (manifest list).
//!
//! An index lists one manifest per platform (`os`, `architecture`, optional `variant`). tug
//! runs Linux containers natively, so it takes the entry for `linux` and the host's
//! architecture in Go's naming (`amd64`, `arm64`, …), preferring the host's variant (`v8` on
//! arm64) and otherwise the first match.

use oci_spec::image::Descriptor;

/// The descriptor for the host platform, if the index has one.
pub fn pick(manifests: &[Descriptor]) -> Option<&Descriptor> {
    let arch = super::host_arch();
    let want_variant = match arch {
        "arm64" => Some("v8"),
        _ => None,
    };
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == arch
            })
        })
        .collect();
    candidates
        .iter()
        .find(|d| d.platform().as_ref().and_then(|p| p.variant().as_deref()) == want_variant)
        .or_else(|| candidates.first())
        .copied()
}
