//! Writing a bundle. CONTRACT (bodies belong to the bundle work).
//!
//! Every offset of the output is known before a byte of blob data moves
//! (tar headers are fixed-size, blob sizes come from descriptors), so the
//! writer lays out the whole file first, writes the small parts, and hands
//! back one slot per blob; the caller fills the slots in parallel with
//! positioned writes (`FileExt::write_at`), straight from the network or a
//! source file, then commits (fsync + rename from a temp name).
use std::path::{Path, PathBuf};

use super::format::{ChartInfo, ProductInfo};
use super::reader::ManifestDoc;
use crate::oci::media::Platform;
use crate::oci::{Digest, Reference};

/// An image to put in a bundle.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub reference: Reference,
    /// What index.json points at (index when all platforms are kept, else
    /// the chosen platform manifest).
    pub root: ManifestDoc,
    /// Child manifests of `root` when it is an index.
    pub children: Vec<ManifestDoc>,
    pub platform: Option<Platform>,
    pub source_index: Option<Digest>,
    /// For the docker archive `manifest.json`: the config and layers of one
    /// platform manifest (None when no platform manifest could be chosen).
    pub docker: Option<(Digest, Vec<Digest>)>,
}

#[derive(Clone, Debug, Default)]
pub struct BundleSpec {
    pub chart: Option<ChartInfo>,
    pub product: Option<ProductInfo>,
    pub hints: String,
    /// Chart files relative to the chart root (written under
    /// `original-chart/`).
    pub chart_files: Vec<(String, Vec<u8>)>,
    pub images: Vec<ImageSpec>,
    /// Every config/layer blob with its size (deduplicated by digest).
    pub blobs: std::collections::BTreeMap<Digest, u64>,
}

/// A region of the output to be filled with one blob's bytes.
#[derive(Clone, Debug)]
pub struct BlobSlot {
    pub digest: Digest,
    pub offset: u64,
    pub size: u64,
}

/// A bundle being written: layout done, blob slots still to fill.
pub struct PendingBundle {
    pub temp_path: PathBuf,
    pub final_path: PathBuf,
    pub slots: Vec<BlobSlot>,
    pub file: std::sync::Arc<std::fs::File>,
}

/// Lay out and write everything but blob data.
pub fn begin(_final_path: &Path, _spec: &BundleSpec) -> anyhow::Result<PendingBundle> {
    anyhow::bail!("bundle writer not implemented yet")
}

impl PendingBundle {
    /// fsync and rename to the final name (after every slot is filled).
    pub fn commit(self) -> anyhow::Result<PathBuf> {
        anyhow::bail!("bundle writer not implemented yet")
    }
}
