//! `sync`: push each image's referrers after the image, to the image's
//! relocated repository, byte for byte (digests never change, so the
//! signatures verify at the site with the same key).
//!
//! - An OCI 1.1 referrer is pushed by digest. A registry with the
//!   referrers API answers `OCI-Subject`; one without it (CNCF distribution
//!   2.8) stores the manifest but indexes nothing, so the client keeps the
//!   `sha256-<hex>` fallback tag: the index already there is read, our
//!   descriptors are added to it (an entry already there is never
//!   dropped, and its JSON is kept as it was) and the merged index is
//!   pushed under the tag.
//! - A cosign tag (`sha256-<hex>.sig|.att|.sbom`) is pushed under its tag.
//!   When the target already holds another manifest under it (the image
//!   was signed there too), the two are merged as cosign does when it adds
//!   a signature: the layers already there first, then ours; that one
//!   manifest gets a new digest, every signature in it keeps verifying.
//! - Referrers are pushed in rounds: those of the image's manifests, then
//!   their own referrers, so that every subject exists before what names
//!   it (Harbor refuses a referrer whose subject is missing).
use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;

use super::carried::{self, BundleReferrers};
use super::{subject_tag, Form, ReferrerRecord};
use crate::bundle::reader::BundleReader;
use crate::oci::media::{self, Parsed};
use crate::oci::registry::{BlobSource, RegistryClient};
use crate::oci::{Digest, Reference};
use crate::progress::Progress;
use crate::transfer::ImageJob;

/// What the referrer push did, for the summary.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// Referrers pushed (each target repository counted).
    pub pushed: usize,
    /// Of those, taken by the target's referrers API (`OCI-Subject`).
    pub via_referrers_api: usize,
    /// Of those, listed through the `sha256-<hex>` fallback tag.
    pub via_fallback_tag: usize,
    /// cosign tags written.
    pub cosign_tags: usize,
    /// cosign tags merged with a different manifest already there.
    pub cosign_tags_merged: usize,
    /// Referrers of an index not pushed (`sync --platform` kept one
    /// platform): left behind.
    pub left_behind: usize,
}

/// Push the referrers of every job's image (the images are in already).
pub async fn push_all(
    client: &RegistryClient,
    readers: &[&BundleReader],
    jobs: &[ImageJob],
    progress: &Progress,
) -> anyhow::Result<PushReport> {
    let mut report = PushReport::default();
    let mut loaded: HashMap<usize, BundleReferrers> = HashMap::new();
    for job in jobs {
        if let std::collections::hash_map::Entry::Vacant(e) = loaded.entry(job.bundle) {
            e.insert(BundleReferrers::load(readers[job.bundle])?);
        }
        let referrers = &loaded[&job.bundle];
        if referrers.records.is_empty() {
            continue;
        }
        let reader = readers[job.bundle];
        let mut pushed: Vec<Digest> = vec![job.image.root.digest.clone()];
        pushed.extend(job.image.children.iter().map(|c| c.digest.clone()));
        for img in reader.images.iter().filter(|i| {
            i.children.iter().any(|c| c.digest == job.image.root.digest)
                && i.root.digest != job.image.root.digest
        }) {
            report.left_behind += referrers
                .reachable(std::slice::from_ref(&img.root.digest))
                .len();
        }
        let todo = referrers.reachable(&pushed);
        let mut fallback: BTreeMap<Digest, Vec<&ReferrerRecord>> = BTreeMap::new();
        for rec in todo {
            push_one(client, reader, rec, &job.target, &mut report, &mut fallback)
                .await
                .with_context(|| {
                    format!(
                        "pushing {} {} of {} to {}",
                        rec.kind, rec.digest, rec.subject, job.target
                    )
                })?;
        }
        for (subject, recs) in fallback {
            update_fallback_tag(client, &job.target, &subject, &recs)
                .await
                .with_context(|| {
                    format!(
                        "updating the referrers tag {} of {}",
                        subject_tag(&subject, ""),
                        job.target
                    )
                })?;
            report.via_fallback_tag += recs.len();
        }
    }
    if report.pushed > 0 {
        progress.println(format!(
            "referrers: {} pushed ({} through the referrers API, {} listed in fallback tags, {} cosign tags{})",
            report.pushed,
            report.via_referrers_api,
            report.via_fallback_tag,
            report.cosign_tags,
            if report.cosign_tags_merged > 0 {
                format!(", {} merged with signatures already there", report.cosign_tags_merged)
            } else {
                String::new()
            }
        ));
    }
    Ok(report)
}

/// Push one referrer's blobs and manifest into the target repository.
async fn push_one<'a>(
    client: &RegistryClient,
    reader: &BundleReader,
    rec: &'a ReferrerRecord,
    target: &Reference,
    report: &mut PushReport,
    fallback: &mut BTreeMap<Digest, Vec<&'a ReferrerRecord>>,
) -> anyhow::Result<()> {
    let (registry, repo) = (&target.registry, &target.repository);
    let doc = carried::manifest(reader, rec)?;
    let parsed = doc.parse()?;
    for b in parsed.blobs() {
        match reader.blob(&b.digest) {
            Some(ext) => {
                let source = BlobSource::FileRange {
                    path: reader.path.clone(),
                    offset: ext.offset,
                    len: ext.size,
                };
                client
                    .push_blob(registry, repo, &b.digest, source, None, None)
                    .await?;
            }
            // A delta leaves out what the site has: it must be there.
            None => {
                if client
                    .blob_exists(registry, repo, &b.digest)
                    .await?
                    .is_none()
                {
                    bail!(
                        "blob {} is neither in bundle {} nor in {registry}/{repo}",
                        b.digest,
                        reader.label
                    );
                }
            }
        }
    }
    match rec.form {
        Form::CosignTag => {
            let tag = rec
                .tag
                .clone()
                .unwrap_or_else(|| subject_tag(&rec.subject, ".sig"));
            push_cosign_tag(
                client,
                target,
                &tag,
                &doc.media_type,
                doc.bytes.clone(),
                report,
            )
            .await?;
            report.cosign_tags += 1;
        }
        Form::Referrer => {
            let put = client
                .put_manifest_with_subject(
                    registry,
                    repo,
                    &rec.digest.to_string(),
                    &doc.media_type,
                    doc.bytes.clone(),
                )
                .await?;
            if put.oci_subject.is_some() {
                report.via_referrers_api += 1;
            } else {
                fallback.entry(rec.subject.clone()).or_default().push(rec);
            }
        }
    }
    report.pushed += 1;
    Ok(())
}

/// A cosign tag: pushed as is, or merged with what the target has there.
async fn push_cosign_tag(
    client: &RegistryClient,
    target: &Reference,
    tag: &str,
    media_type: &str,
    ours: Bytes,
    report: &mut PushReport,
) -> anyhow::Result<()> {
    let (registry, repo) = (&target.registry, &target.repository);
    let existing = client.head_manifest(registry, repo, tag).await?;
    let bytes = match existing {
        Some(d) if d == Digest::of(&ours) => return Ok(()),
        Some(_) => {
            let theirs = client.get_manifest(registry, repo, tag).await?;
            match merge_cosign_layers(&theirs.bytes, &ours)? {
                None => return Ok(()),
                Some(merged) => {
                    report.cosign_tags_merged += 1;
                    Bytes::from(merged)
                }
            }
        }
        None => ours,
    };
    client
        .put_manifest(registry, repo, tag, media_type, bytes)
        .await?;
    Ok(())
}

/// cosign's way of adding signatures to a `.sig` (or `.att`) manifest: the
/// layers already there, then ours not among them. `None`: nothing to add.
pub fn merge_cosign_layers(theirs: &[u8], ours: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut t: serde_json::Value =
        serde_json::from_slice(theirs).context("the manifest already in the target")?;
    let o: serde_json::Value = serde_json::from_slice(ours)?;
    let digest_of = |l: &serde_json::Value| {
        l.get("digest")
            .and_then(|d| d.as_str())
            .unwrap_or("")
            .to_string()
    };
    let ours_layers = o
        .get("layers")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    let Some(layers) = t.get_mut("layers").and_then(|l| l.as_array_mut()) else {
        bail!("the manifest already in the target has no layers: not cosign's");
    };
    let mut added = false;
    for l in ours_layers {
        let sig = |x: &serde_json::Value| {
            x.pointer("/annotations/dev.cosignproject.cosign~1signature")
                .cloned()
        };
        if !layers
            .iter()
            .any(|x| digest_of(x) == digest_of(&l) && sig(x) == sig(&l))
        {
            layers.push(l);
            added = true;
        }
    }
    Ok(added.then(|| serde_json::to_vec(&t)).transpose()?)
}

/// The `sha256-<hex>` fallback tag: what the target has, plus ours.
async fn update_fallback_tag(
    client: &RegistryClient,
    target: &Reference,
    subject: &Digest,
    recs: &[&ReferrerRecord],
) -> anyhow::Result<()> {
    let (registry, repo) = (&target.registry, &target.repository);
    let tag = subject_tag(subject, "");
    let mut entries: Vec<serde_json::Value> = Vec::new();
    if client.head_manifest(registry, repo, &tag).await?.is_some() {
        let have = client.get_manifest(registry, repo, &tag).await?;
        match media::parse(&have.bytes, Some(&have.media_type)) {
            Ok(Parsed::Index { .. }) => {}
            _ => bail!(
                "{registry}/{repo}:{tag} exists and is not an index: it cannot list referrers; \
                 remove or rename that tag"
            ),
        }
        let v: serde_json::Value = serde_json::from_slice(&have.bytes)?;
        entries = v
            .get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
    }
    let before = entries.len();
    for rec in recs {
        let listed = entries
            .iter()
            .any(|e| e.get("digest").and_then(|d| d.as_str()) == Some(&rec.digest.to_string()));
        if !listed {
            entries.push(descriptor_json(rec));
        }
    }
    if entries.len() == before && before > 0 {
        return Ok(());
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": entries,
    });
    client
        .put_manifest(
            registry,
            repo,
            &tag,
            media::OCI_INDEX,
            Bytes::from(serde_json::to_vec(&index)?),
        )
        .await?;
    Ok(())
}

/// The descriptor of a referrer as the referrers API lists it.
pub fn descriptor_json(rec: &ReferrerRecord) -> serde_json::Value {
    let mut d = serde_json::Map::new();
    d.insert("mediaType".into(), rec.media_type.clone().into());
    d.insert("digest".into(), rec.digest.to_string().into());
    d.insert("size".into(), rec.size.into());
    if let Some(a) = &rec.artifact_type {
        d.insert("artifactType".into(), a.clone().into());
    }
    if !rec.annotations.is_empty() {
        d.insert(
            "annotations".into(),
            serde_json::to_value(&rec.annotations).unwrap_or_default(),
        );
    }
    serde_json::Value::Object(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_merge_keeps_what_is_there_and_adds_ours() {
        let theirs = br#"{"schemaVersion":2,"layers":[{"digest":"sha256:a","annotations":{"dev.cosignproject.cosign/signature":"X"}}]}"#;
        let ours = br#"{"schemaVersion":2,"layers":[{"digest":"sha256:b","annotations":{"dev.cosignproject.cosign/signature":"Y"}}]}"#;
        let merged = merge_cosign_layers(theirs, ours).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        let sigs: Vec<&str> = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l["annotations"]["dev.cosignproject.cosign/signature"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(sigs, ["X", "Y"]);
        assert!(merge_cosign_layers(&merged, ours).unwrap().is_none());
    }
}
