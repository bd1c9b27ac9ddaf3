//! `serve`: the referrers a bundle carries, answered the three ways a
//! client may look for them, so that a client pulling from `serve` sees
//! the same signatures as one pulling from the source registry:
//! `GET /v2/<name>/referrers/<digest>` (OCI 1.1, with the `artifactType`
//! filter), the `sha256-<hex>` fallback tag (an index synthesized from the
//! same descriptors) and cosign's `sha256-<hex>.sig|.att|.sbom` tags; the
//! referrer manifests and their blobs are served like any image's.
use std::collections::BTreeMap;

use super::carried::BundleReferrers;
use super::push::descriptor_json;
use super::{subject_tag, Form};
use crate::bundle::reader::{BundleReader, ManifestDoc};
use crate::oci::media;
use crate::oci::Digest;
use crate::serve::index::{BlobLoc, Catalog};

/// Per served repository and subject: the referrer descriptors.
#[derive(Default)]
pub struct ServedReferrers {
    by_subject: BTreeMap<(String, Digest), Vec<serde_json::Value>>,
}

impl ServedReferrers {
    /// The referrers index of `subject` in `repo`, filtered by
    /// `artifactType` when asked (and whether the filter was applied).
    pub fn index(&self, repo: &str, subject: &Digest, artifact_type: Option<&str>) -> Vec<u8> {
        let all = self
            .by_subject
            .get(&(repo.to_string(), subject.clone()))
            .cloned()
            .unwrap_or_default();
        let manifests: Vec<serde_json::Value> = all
            .into_iter()
            .filter(|d| {
                artifact_type
                    .is_none_or(|want| d.get("artifactType").and_then(|a| a.as_str()) == Some(want))
            })
            .collect();
        index_bytes(manifests)
    }
}

fn index_bytes(manifests: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap_or_default()
}

/// Add the referrers of `reader` (bundle number `source` of the catalog)
/// to every served repository that holds their subject. Called after the
/// bundle's images are in the catalog.
pub fn add_bundle(
    catalog: &mut Catalog,
    reader: &BundleReader,
    source: usize,
) -> anyhow::Result<()> {
    let referrers = BundleReferrers::load(reader)?;
    if referrers.records.is_empty() {
        return Ok(());
    }
    // Rounds: a referrer of a referrer lands once its subject has.
    let mut changed = true;
    while changed {
        changed = false;
        for rec in &referrers.records {
            let names: Vec<String> = catalog
                .repos
                .iter()
                .filter(|(_, r)| {
                    r.manifests.contains(&rec.subject) && !r.manifests.contains(&rec.digest)
                })
                .map(|(n, _)| n.clone())
                .collect();
            if names.is_empty() {
                continue;
            }
            let doc = super::carried::manifest(reader, rec)?;
            let blobs: Vec<Digest> = doc
                .parse()
                .map(|p| p.blobs().into_iter().map(|b| b.digest.clone()).collect())
                .unwrap_or_default();
            for b in &blobs {
                if let Some(extent) = reader.blob(b) {
                    catalog
                        .blobs
                        .entry(b.clone())
                        .or_insert(BlobLoc { source, extent });
                }
            }
            catalog
                .manifests
                .entry(rec.digest.clone())
                .or_insert_with(|| doc.clone());
            for name in names {
                let repo = catalog.repos.get_mut(&name).expect("listed above");
                repo.manifests.insert(rec.digest.clone());
                for b in &blobs {
                    if reader.blob(b).is_some() {
                        repo.blobs.insert(b.clone());
                    }
                }
                match rec.form {
                    Form::CosignTag => {
                        if let Some(tag) = &rec.tag {
                            repo.tags.entry(tag.clone()).or_insert(rec.digest.clone());
                        }
                    }
                    Form::Referrer => {
                        let list = catalog
                            .referrers
                            .by_subject
                            .entry((name.clone(), rec.subject.clone()))
                            .or_default();
                        let d = descriptor_json(rec);
                        if !list.contains(&d) {
                            list.push(d);
                        }
                    }
                }
                changed = true;
            }
        }
    }
    // The fallback tags, from the same descriptors.
    let subjects: Vec<((String, Digest), Vec<serde_json::Value>)> = catalog
        .referrers
        .by_subject
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for ((name, subject), list) in subjects {
        let doc = ManifestDoc::new(media::OCI_INDEX, index_bytes(list));
        let tag = subject_tag(&subject, "");
        if let Some(repo) = catalog.repos.get_mut(&name) {
            repo.manifests.insert(doc.digest.clone());
            repo.tags.insert(tag, doc.digest.clone());
        }
        catalog.manifests.insert(doc.digest.clone(), doc);
    }
    Ok(())
}
