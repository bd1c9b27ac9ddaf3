//! Products that are not Helm charts: raw YAML files, directories of them,
//! and kustomize trees (seed 004's cube-studio install: `kubectl apply -f
//! dashboard/...`, `kubectl apply -k cube/overlays`).
//!
//! The same path as charts, with kubectl in helm's place:
//! - [`entry`]: `spec.manifests` of the bundle manifest;
//! - [`tree`]: the files an entry carries, and `kubectl kustomize`;
//! - [`scan`]: where images hide in manifests (fields, args, env,
//!   ConfigMap data);
//! - [`hints`]: the images no reader can see, addressed by file and path;
//! - [`relocate`]: rewriting them for the private registry, every other
//!   byte kept;
//! - [`publish`]: what sync does with a manifests bundle (prove, then write
//!   a LOCAL directory or push an OCI artifact), and pulling it back;
//! - [`state`]: what sync recorded for `bundler apply`.
//!
//! In a bundle, a manifests entry is `<name>_<version>.bundle.tar` with the
//! tree under `original-manifests/`, [`MANIFESTS_JSON`] describing it, the
//! hints as `hints.yaml` and the images in `images.tar`, all hashed in
//! `bundle.json` whose `formatVersion` is [`MANIFESTS_FORMAT_VERSION`]: a
//! bundler that predates manifests refuses it ("upgrade bundler") instead
//! of syncing its images and silently dropping the manifests.
pub mod entry;
pub mod hints;
pub mod publish;
pub mod relocate;
pub mod scan;
pub mod state;
pub mod tree;

use serde::{Deserialize, Serialize};

pub use entry::ManifestsEntry;
pub use tree::{Tree, TreeKind};

/// Files of the tree, by path relative to the entry's path.
pub const MANIFESTS_DIR: &str = "original-manifests/";
/// The entry's description inside the bundle.
pub const MANIFESTS_JSON: &str = "manifests.json";
/// `bundle.json` `formatVersion` of a manifests bundle. Its major is not a
/// number, so older readers refuse the bundle.
pub const MANIFESTS_FORMAT_VERSION: &str = "manifests-1.0";
/// OCI artifact type of a relocated tree pushed to an OCI target.
pub const ARTIFACT_TYPE: &str = "application/vnd.bundler.manifests.v1";
/// Media type of its one layer: the tree as an uncompressed tar.
pub const TREE_LAYER_MEDIA_TYPE: &str = "application/vnd.bundler.manifests.tree.v1.tar";

/// `manifests.json`: what the entry is and how it is applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManifestsRecord {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub kind: TreeKind,
    /// `kubectl apply -f`/`-k` path relative to the tree's root.
    pub apply: String,
    /// Where the tree came from (the manifest's path), for the record.
    pub source: String,
    /// Every image reference as the manifests write it.
    pub images: Vec<String>,
}

/// Contents of a manifests bundle besides its images: written by pack,
/// read back by sync.
#[derive(Clone, Debug, Default)]
pub struct ManifestsPayload {
    /// `manifests.json` bytes.
    pub record: Vec<u8>,
    /// Files under `original-manifests/`.
    pub files: Vec<(String, Vec<u8>)>,
}
