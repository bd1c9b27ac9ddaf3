//! What `serve` serves: every image of the bundles, under its served name,
//! with manifests kept in memory (they are small) and blobs as extents of
//! the bundle files (read by position on each request, never copied).
//!
//! One catalog for all bundles: the same image in a chart bundle and in the
//! image-only bundle is served once; blobs are deduplicated by digest.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::names::Naming;
use crate::bundle::location::BundleLocation;
use crate::bundle::reader::{BundleReader, Extent, ManifestDoc};
use crate::oci::Digest;

/// A bundle file blobs are read from (the bundle, or the package it sits in).
pub struct SourceFile {
    pub file: Arc<crate::package::source::PackageFile>,
    pub label: String,
}

/// Where a blob's bytes are.
#[derive(Clone, Copy, Debug)]
pub struct BlobLoc {
    pub source: usize,
    pub extent: Extent,
}

/// One served repository.
#[derive(Default)]
pub struct Repo {
    /// tag → the manifest or index the bundle holds under it.
    pub tags: BTreeMap<String, Digest>,
    /// Every manifest reachable in this repository (roots and children).
    pub manifests: HashSet<Digest>,
    /// Every blob (config, layer) reachable in this repository.
    pub blobs: HashSet<Digest>,
}

/// An image as the start line lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServedImage {
    /// The reference in the bundle.
    pub from: String,
    /// `NAME[:TAG]` as served (prefix it with the server's address).
    pub name: String,
    pub digest: String,
}

#[derive(Default)]
pub struct Catalog {
    pub sources: Vec<SourceFile>,
    pub repos: BTreeMap<String, Repo>,
    pub manifests: HashMap<Digest, ManifestDoc>,
    pub blobs: HashMap<Digest, BlobLoc>,
    /// (upstream registry, repository) → served name, for containerd's
    /// mirror requests (`?ns=docker.io`).
    pub upstream: HashMap<(String, String), String>,
    pub images: Vec<ServedImage>,
    /// Names in `images` (an image in two bundles is listed once).
    listed: HashSet<String>,
    /// What the referrers API answers (see [`crate::referrers::serve`]).
    pub referrers: crate::referrers::serve::ServedReferrers,
}

impl Catalog {
    /// Add every image of `reader` under the names `naming` gives.
    pub fn add_bundle(&mut self, reader: &BundleReader, naming: &Naming) -> anyhow::Result<()> {
        let source = self.sources.len();
        let file = reader
            .file()
            .try_clone()
            .with_context(|| format!("opening {} again", reader.path.display()))?;
        self.sources.push(SourceFile {
            file: Arc::new(file),
            label: reader.label.clone(),
        });
        for img in &reader.images {
            let (upstream, name) = naming
                .served(&img.reference)
                .with_context(|| format!("bundle {}: image {}", reader.label, img.reference))?;
            self.upstream.insert(
                (upstream, upstream_repo(naming, &img.reference, &name)),
                name.clone(),
            );
            let repo = self.repos.entry(name.clone()).or_default();
            if let Some(tag) = &img.reference.tag {
                match repo.tags.get(tag) {
                    Some(d) if d != &img.root.digest => tracing::warn!(
                        "{name}:{tag} is {d} in an earlier bundle and {} in {}: serving the first",
                        img.root.digest,
                        reader.label
                    ),
                    Some(_) => {}
                    None => {
                        repo.tags.insert(tag.clone(), img.root.digest.clone());
                    }
                }
            }
            for doc in std::iter::once(&img.root).chain(img.children.iter()) {
                repo.manifests.insert(doc.digest.clone());
                self.manifests
                    .entry(doc.digest.clone())
                    .or_insert_with(|| doc.clone());
            }
            for b in &img.blobs {
                // A blob the bundle does not hold (a foreign layer, or a
                // platform pack left out) is not served: clients get 404.
                if let Some(extent) = reader.blob(&b.digest) {
                    repo.blobs.insert(b.digest.clone());
                    self.blobs
                        .entry(b.digest.clone())
                        .or_insert(BlobLoc { source, extent });
                }
            }
            let tagged = match &img.reference.tag {
                Some(t) => format!("{name}:{t}"),
                None => format!("{name}@{}", img.root.digest),
            };
            if self.listed.insert(tagged.clone()) {
                self.images.push(ServedImage {
                    from: img.reference.to_string(),
                    name: tagged,
                    digest: img.root.digest.to_string(),
                });
            }
        }
        crate::referrers::serve::add_bundle(self, reader, source)
            .with_context(|| format!("bundle {}: its referrers", reader.label))
    }

    /// The served repository for a request's name, and containerd's `ns`
    /// (the upstream registry a `hosts.toml` mirror stands in for).
    pub fn resolve(&self, name: &str, ns: Option<&str>) -> Option<(&str, &Repo)> {
        if let Some(ns) = ns {
            let key = (normalize_registry(ns), name.to_string());
            if let Some(served) = self.upstream.get(&key) {
                if let Some((k, r)) = self.repos.get_key_value(served) {
                    return Some((k.as_str(), r));
                }
            }
        }
        self.repos.get_key_value(name).map(|(k, r)| (k.as_str(), r))
    }
}

/// The repository path an upstream client asks for: the original one when
/// names follow the origin, the rewritten one under `--config`.
fn upstream_repo(naming: &Naming, r: &crate::oci::Reference, served: &str) -> String {
    match naming {
        Naming::Origin => r.repository.clone(),
        Naming::Rules(_) => served.to_string(),
    }
}

/// Docker Hub's aliases are one registry.
pub fn normalize_registry(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::oci::reference::DOCKER_HUB.to_string()
        }
        h => h.to_string(),
    }
}

/// The bundles of the command line, in the forms `sync`, `inspect` and
/// `verify` take: `*.bundle.tar` files, offline packages (read in place),
/// directories of either.
/// A package is checked whole against its package.json (every member
/// hashed) first, and signed by `key` when one is required.
pub fn list_bundles(
    paths: &[PathBuf],
    key: Option<(crate::package::sign::VerifyKey, PathBuf)>,
) -> anyhow::Result<Vec<BundleLocation>> {
    let mut out = Vec::new();
    let check = crate::package::read::PackageCheck {
        contents: true,
        volumes: true,
        key,
    };
    for p in paths {
        out.extend(crate::bundle::location::list_bundles_checked(p, &check)?);
    }
    Ok(out)
}
