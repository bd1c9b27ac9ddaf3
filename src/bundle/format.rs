//! Names and the `bundle.json` schema of the bundle format.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::oci::media::Platform;
use crate::oci::Digest;

/// Version of the layout written; readers refuse a newer major version.
pub const FORMAT_VERSION: &str = "1.0";
pub const HINTS_FILE: &str = "hints.yaml";
pub const CHART_DIR: &str = "original-chart/";
pub const BUNDLE_JSON: &str = "bundle.json";
pub const IMAGES_TAR: &str = "images.tar";

/// `bundle.json`: bundler's own record, ignored by other readers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundleJson {
    pub format_version: String,
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartInfo>,
    /// The product this bundle belongs to (bundle manifest metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<ProductInfo>,
    pub images: Vec<ImageRecord>,
    /// sha256 of every file that is not a content-addressed blob, by path
    /// (`hints.yaml`, `original-chart/...`, `images.tar/index.json`, ...).
    pub files: BTreeMap<String, Digest>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChartInfo {
    pub name: String,
    pub version: String,
    /// Release defaults for `upgrade` (from the bundle manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseInfo>,
    /// Where the chart came from (repo URL, oci://, or local path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProductInfo {
    pub name: String,
    pub version: String,
}

/// One image of the bundle: its kept digest and, for a platform chosen
/// from an index, the index it came from (the digest map).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageRecord {
    /// The full original reference, as the chart / manifest named it.
    pub reference: String,
    /// Digest of the manifest or index kept (what `index.json` points at).
    pub digest: Digest,
    pub media_type: String,
    /// Platform kept, when one platform was selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The index the platform manifest was chosen from (when filtered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_index: Option<Digest>,
    /// Total bytes of the image's blobs (config + layers, all platforms kept).
    pub size: u64,
    /// Child manifests of an index root deliberately left out of the bundle
    /// (readers accept their absence only when listed here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<Digest>,
}
