//! `spec.manifests` of the bundle manifest: products (or parts of one)
//! that are not Helm charts: one YAML file, a directory of YAML files, or a
//! kustomize tree.
//!
//! ```yaml
//! spec:
//!   manifests:
//!     - name: dashboard
//!       version: v2.2.0
//!       path: ./cube-studio/install/kubernetes/dashboard/v2.2.0-cluster.yaml
//!     - name: cube
//!       version: 2022.09.01
//!       path: ./cube-studio/install/kubernetes/cube   # the directory carried
//!       kustomize: overlays       # the kustomization inside it that is built
//!       namespace: infra          # optional: `kubectl apply -n`
//!       hints: hints/cube.yaml    # optional: images no reader can see
//!       images: [{archive: ./images/cube.tar}, docker.io/library/busybox:1.36]
//! ```
//!
//! Kept apart from `config::manifest` (the chart schema) so the two grow
//! without touching each other; this module only borrows its YAML helpers.
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::manifest::{chart_images, RawImage};
use crate::config::yaml::{lenient_string, Doc};

/// One `spec.manifests` entry, paths resolved against the manifest's
/// directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestsEntry {
    pub name: String,
    pub version: String,
    /// `kubectl apply -n`; also the namespace `apply` checks exists.
    pub namespace: Option<String>,
    /// A YAML file, a directory of YAML files, or (with a kustomization in
    /// it or `kustomize:`) the root of a kustomize tree: what is carried.
    pub path: PathBuf,
    /// For kustomize trees: the directory (relative to `path`) that is
    /// built; bases and components it names must lie under `path`.
    pub kustomize: Option<String>,
    pub hints: Option<PathBuf>,
    /// Image references named in the entry (added to what is found).
    pub images: Vec<String>,
    /// Local archives that provide images (taken from disk, not pulled).
    pub image_archives: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifestsEntry {
    #[serde(default, deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    version: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    path: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    kustomize: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    hints: Option<String>,
    images: Option<Vec<RawImage>>,
}

fn plain_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '\\', ' ']) && !s.starts_with('.')
}

/// Parse `spec.manifests`; `chart_names` are the chart entries' names (a
/// bundle file name may not be used twice).
pub(crate) fn parse(
    doc: &Doc,
    raw: Option<Vec<RawManifestsEntry>>,
    chart_names: &[String],
    resolve: &dyn Fn(&str) -> PathBuf,
) -> anyhow::Result<Vec<ManifestsEntry>> {
    let mut out: Vec<ManifestsEntry> = Vec::new();
    for (i, m) in raw.unwrap_or_default().into_iter().enumerate() {
        let at = format!("spec.manifests[{i}]");
        let key = |k: &str| format!("{at}.{k}");
        let name = m.name.map(|s| s.trim().to_string()).unwrap_or_default();
        if !plain_name(&name) {
            return Err(doc.error_at(
                &key("name"),
                &[&at],
                format!("{name:?}: give a name usable in a file name (no '/', no spaces, no leading '.')"),
            ));
        }
        if out.iter().any(|e| e.name == name) || chart_names.contains(&name) {
            return Err(doc.error_at(
                &key("name"),
                &[&at],
                format!("{name:?} is already used by another chart or manifests entry (the bundle file is named after it)"),
            ));
        }
        let version = m.version.map(|s| s.trim().to_string()).unwrap_or_default();
        if !plain_name(&version) {
            return Err(doc.error_at(
                &key("version"),
                &[&at],
                format!("{version:?}: give a version usable in a file name (no '/', no spaces)"),
            ));
        }
        let Some(path) = m.path.filter(|p| !p.trim().is_empty()) else {
            return Err(doc.error_at(
                &key("path"),
                &[&at],
                "missing: a YAML file, a directory of YAML files, or a kustomize tree",
            ));
        };
        let kustomize = m.kustomize.filter(|k| !k.trim().is_empty());
        if let Some(k) = &kustomize {
            if k.starts_with('/') || k.split('/').any(|c| c == "..") {
                return Err(doc.error_at(
                    &key("kustomize"),
                    &[],
                    format!("{k:?}: must be a directory inside path (relative, no '..')"),
                ));
            }
        }
        let (images, image_archives) = chart_images(doc, &at, m.images, resolve)?;
        out.push(ManifestsEntry {
            name,
            version,
            namespace: m.namespace.filter(|n| !n.trim().is_empty()),
            path: resolve(&path),
            kustomize,
            hints: m
                .hints
                .filter(|h| !h.trim().is_empty())
                .map(|h| resolve(&h)),
            images,
            image_archives,
        });
    }
    Ok(out)
}
