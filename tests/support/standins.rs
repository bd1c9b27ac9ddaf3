//! Stand-in images for charts whose real images cannot be pulled here (no
//! internet): one small single-platform image per reference, each with a
//! layer naming it, in one OCI layout whose `ref.name` annotations are the
//! full references (what `pack` reads from an `archive:`).
use std::path::Path;

use super::images::{self, Blob};

/// Write an OCI layout at `dir` holding one stand-in image per reference.
/// Returns the manifest digest of each, in order (the same for the same
/// reference with or without `@digest`).
pub fn write_standin_layout(dir: &Path, references: &[String]) -> Vec<String> {
    let mut manifests: Vec<Blob> = Vec::new();
    let mut all: Vec<Blob> = Vec::new();
    for r in references {
        // The content names the image without its digest, so that a test
        // can learn a stand-in's digest first and pin it in chart values.
        let name = r.split('@').next().unwrap();
        let layer = images::layer("standin.txt", format!("stand-in for {name}\n").as_bytes());
        let (m, blobs) = images::image(&images::AMD64, &[layer]);
        all.extend(blobs);
        manifests.push(m);
    }
    let roots: Vec<(&str, &Blob, &str)> = references
        .iter()
        .zip(&manifests)
        .map(|(r, m)| (r.as_str(), m, images::OCI_MANIFEST))
        .collect();
    images::write_layout(dir, &roots, &all.iter().collect::<Vec<_>>());
    manifests.iter().map(|m| m.digest.clone()).collect()
}
