//! Reading what a bundle carries: `images.tar/referrers.json` and the
//! referrer manifests it names, checked against the bundle's blobs (the
//! file's own sha256 is checked with the other small files of
//! `bundle.json`).
use std::collections::BTreeSet;

use anyhow::{bail, Context};

use super::{ArtifactView, ReferrerRecord, ReferrersFile, REFERRERS_FILE};
use crate::bundle::reader::{BundleReader, ManifestDoc};
use crate::oci::media::{self, Parsed};
use crate::oci::Digest;

/// The referrers of one bundle.
#[derive(Clone, Debug, Default)]
pub struct BundleReferrers {
    pub records: Vec<ReferrerRecord>,
}

impl BundleReferrers {
    /// Read and check `referrers.json` (none: a bundle without referrers,
    /// or one written before bundler carried them). Every referrer's
    /// manifest and blobs must be in the bundle (or, in a delta, listed as
    /// external), and its subject must be a manifest the bundle carries.
    pub fn load(reader: &BundleReader) -> anyhow::Result<BundleReferrers> {
        if !reader.images_entries.contains_key(REFERRERS_FILE) {
            return Ok(BundleReferrers::default());
        }
        let what = format!("bundle {}: images.tar/{REFERRERS_FILE}", reader.label);
        let raw = reader.read_images_file(REFERRERS_FILE)?;
        let file: ReferrersFile =
            serde_json::from_slice(&raw).with_context(|| format!("{what} is malformed"))?;
        let mut manifests: BTreeSet<Digest> = BTreeSet::new();
        for img in &reader.images {
            manifests.insert(img.root.digest.clone());
            manifests.extend(img.children.iter().map(|c| c.digest.clone()));
        }
        manifests.extend(file.referrers.iter().map(|r| r.digest.clone()));
        for rec in &file.referrers {
            if !manifests.contains(&rec.subject) {
                bail!(
                    "{what}: referrer {} names subject {}, which the bundle does not carry: the bundle is damaged",
                    rec.digest,
                    rec.subject
                );
            }
            let doc = manifest(reader, rec)?;
            let parsed = doc
                .parse()
                .with_context(|| format!("{what}: referrer {}", rec.digest))?;
            for b in parsed.blobs() {
                let external = reader
                    .meta
                    .as_ref()
                    .and_then(|m| m.external_blob(&b.digest))
                    .is_some();
                match reader.blob(&b.digest) {
                    Some(e) if e.size == b.size => {}
                    Some(e) => bail!(
                        "{what}: blob {} of referrer {} is {} bytes, its manifest says {}",
                        b.digest,
                        rec.digest,
                        e.size,
                        b.size
                    ),
                    None if external => {}
                    None => bail!(
                        "{what}: blob {} of referrer {} is missing from the bundle",
                        b.digest,
                        rec.digest
                    ),
                }
            }
        }
        Ok(BundleReferrers {
            records: file.referrers,
        })
    }

    /// The referrers whose subject is `subject`.
    pub fn of<'a>(&'a self, subject: &Digest) -> impl Iterator<Item = &'a ReferrerRecord> {
        let subject = subject.clone();
        self.records.iter().filter(move |r| r.subject == subject)
    }

    /// Every referrer reachable from `subjects` (their referrers, and
    /// theirs), each after its subject.
    pub fn reachable(&self, subjects: &[Digest]) -> Vec<&ReferrerRecord> {
        let mut out: Vec<&ReferrerRecord> = Vec::new();
        let mut frontier: Vec<Digest> = subjects.to_vec();
        let mut seen: BTreeSet<(Digest, Digest)> = BTreeSet::new();
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for s in &frontier {
                for r in self.of(s) {
                    if seen.insert((r.subject.clone(), r.digest.clone())) {
                        out.push(r);
                        next.push(r.digest.clone());
                    }
                }
            }
            frontier = next;
        }
        out
    }
}

/// A referrer's manifest from the bundle, checked against its record.
pub fn manifest(reader: &BundleReader, rec: &ReferrerRecord) -> anyhow::Result<ManifestDoc> {
    let bytes = reader.read_blob(&rec.digest).with_context(|| {
        format!(
            "bundle {}: referrer {} of {}",
            reader.label, rec.digest, rec.subject
        )
    })?;
    if bytes.len() as u64 != rec.size {
        bail!(
            "bundle {}: referrer {} is {} bytes, {REFERRERS_FILE} says {}",
            reader.label,
            rec.digest,
            bytes.len(),
            rec.size
        );
    }
    let media_type = match media::parse(&bytes, Some(&rec.media_type)) {
        Ok(Parsed::Manifest { media_type, .. }) | Ok(Parsed::Index { media_type, .. }) => {
            media_type
        }
        Err(_) => rec.media_type.clone(),
    };
    Ok(ManifestDoc {
        digest: rec.digest.clone(),
        media_type,
        bytes: bytes.into(),
    })
}

/// The manifest of a referrer, as an [`ArtifactView`].
pub fn view(reader: &BundleReader, rec: &ReferrerRecord) -> anyhow::Result<ArtifactView> {
    let doc = manifest(reader, rec)?;
    ArtifactView::of(&doc.bytes)
        .with_context(|| format!("bundle {}: referrer {}", reader.label, rec.digest))
}
