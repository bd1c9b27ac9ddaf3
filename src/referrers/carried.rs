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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use super::*;
    use crate::bundle::writer::{self, BundleSpec, ImageSpec};
    use crate::oci::Reference;
    use crate::referrers::{Carried, Form, Kind};

    fn desc(b: &[u8], mt: &str) -> serde_json::Value {
        serde_json::json!({"mediaType": mt, "digest": Digest::of(b).to_string(), "size": b.len()})
    }

    /// An image and a cosign `.sig` for it, as a bundle spec and the blob bytes.
    fn spec(subject_override: Option<Digest>) -> (BundleSpec, Vec<Vec<u8>>) {
        let (config, layer) = (b"{\"os\":\"linux\"}".to_vec(), b"layer".to_vec());
        let root = ManifestDoc::new(
            media::OCI_MANIFEST,
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
                "config": desc(&config, media::OCI_CONFIG),
                "layers": [desc(&layer, media::OCI_LAYER_GZIP)],
            }))
            .unwrap(),
        );
        let payload = format!(
            r#"{{"critical":{{"image":{{"docker-manifest-digest":"{}"}}}}}}"#,
            root.digest
        )
        .into_bytes();
        let sig_config = b"{\"sig\":true}".to_vec();
        let sig = ManifestDoc::new(
            media::OCI_MANIFEST,
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
                "config": desc(&sig_config, media::OCI_CONFIG),
                "layers": [desc(&payload, crate::referrers::SIMPLESIGNING_MEDIA_TYPE)],
            }))
            .unwrap(),
        );
        let blobs = vec![config, layer, payload, sig_config];
        let mut sizes = BTreeMap::new();
        for b in &blobs {
            sizes.insert(Digest::of(b), b.len() as u64);
        }
        let record = ReferrerRecord {
            subject: subject_override.unwrap_or(root.digest.clone()),
            form: Form::CosignTag,
            tag: Some(crate::referrers::subject_tag(&root.digest, ".sig")),
            digest: sig.digest.clone(),
            media_type: media::OCI_MANIFEST.into(),
            size: sig.bytes.len() as u64,
            artifact_type: Some(media::OCI_CONFIG.into()),
            kind: Kind::Signature,
            annotations: BTreeMap::new(),
        };
        let spec = BundleSpec {
            images: vec![ImageSpec {
                reference: Reference::parse("example.com/signed/app:1").unwrap(),
                root,
                children: Vec::new(),
                platform: None,
                source_index: None,
                docker: None,
            }],
            blobs: sizes,
            referrers: Carried {
                manifests: vec![sig],
                records: vec![record],
            },
            ..Default::default()
        };
        (spec, blobs)
    }

    fn write(dir: &std::path::Path, spec: &BundleSpec, blobs: &[Vec<u8>]) -> std::path::PathBuf {
        let p = writer::begin(&dir.join("x.bundle.tar"), spec).unwrap();
        for s in p.slots.clone() {
            let bytes = blobs.iter().find(|b| Digest::of(b) == s.digest).unwrap();
            let mut w = p.slot_writer(&s);
            w.write_all(bytes).unwrap();
            w.finish().unwrap();
        }
        p.commit().unwrap()
    }

    #[test]
    fn referrers_travel_as_blobs_with_their_links_in_referrers_json() {
        let (spec, blobs) = spec(None);
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &spec, &blobs);
        let reader = BundleReader::open(&path).unwrap();
        // The image is what it was: one image, its signature is no image.
        assert_eq!(reader.images.len(), 1);
        let meta = reader.meta.as_ref().unwrap();
        assert!(meta.files.contains_key("images.tar/referrers.json"));
        let loaded = BundleReferrers::load(&reader).unwrap();
        let subject = &reader.images[0].root.digest;
        let found: Vec<&ReferrerRecord> = loaded.of(subject).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(
            manifest(&reader, found[0]).unwrap().bytes,
            spec.referrers.manifests[0].bytes
        );
        crate::bundle::verify::verify(
            &reader,
            &crate::progress::Progress::new(crate::progress::Mode::Quiet),
        )
        .unwrap();
        // Deterministic: the same spec gives the same bytes.
        let dir2 = tempfile::tempdir().unwrap();
        let again = write(dir2.path(), &spec, &blobs);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }

    #[test]
    fn a_referrer_whose_subject_is_not_in_the_bundle_is_not_written() {
        let (spec, _) = spec(Some(Digest::of(b"an index left behind")));
        let dir = tempfile::tempdir().unwrap();
        let e = writer::begin(&dir.path().join("x.bundle.tar"), &spec)
            .err()
            .expect("refused");
        assert!(
            format!("{e:#}").contains("which the bundle does not carry"),
            "{e:#}"
        );
    }
}
