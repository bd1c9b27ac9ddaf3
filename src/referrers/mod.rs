//! What refers to an image: cosign signatures, attestations, SBOMs and any
//! OCI 1.1 referrer (a manifest whose `subject` names the image).
//!
//! A site that admits only signed images needs these to travel with the
//! images, byte for byte: a signature verifies only against the exact
//! manifest digest it signed, and a re-encoded referrer is a new artifact.
//! So `pack` carries every referrer as an ordinary manifest with its
//! blobs in `images.tar/blobs/sha256/`, and records each subject link in
//! `images.tar/referrers.json` ([`REFERRERS_FILE`]), whose sha256 is in
//! `bundle.json`'s `files` like every other small file.
//!
//! Why a file of its own rather than a new `bundle.json` field: every
//! released reader parses `bundle.json` with `deny_unknown_fields`, so a new
//! field would make every existing bundler refuse a bundle of signed
//! images. An extra file in `images.tar` and extra blobs are ignored by
//! them (and by `docker load` / `ctr import`), so old readers keep working
//! and a bundle without referrers is byte-identical to before.
//!
//! Submodules by concern: [`discover`] (pack: the referrers API, the
//! `sha256-<hex>` fallback tag and cosign's tags), [`carried`] (reading and
//! checking what a bundle carries), [`push`] (sync: after their subjects,
//! through the API or the fallback tag), [`cosign`] (offline key-based
//! signature checks for `--require-signature`), [`serve`] (the API and the
//! tags answered from bundles) and [`describe`] (inspect and diff).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bundle::reader::ManifestDoc;
use crate::oci::Digest;

pub mod carried;
pub mod cosign;
pub mod describe;
pub mod discover;
pub mod push;
pub mod serve;

/// The subject links, inside `images.tar`.
pub const REFERRERS_FILE: &str = "referrers.json";
/// cosign's annotation holding the base64 signature of a `.sig` layer.
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Media type of cosign's simple-signing payload layer.
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// `artifactType` of cosign's signature when attached as an OCI 1.1 referrer.
pub const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Annotation of a Sigstore bundle referrer naming what it attests.
pub const SIGSTORE_PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// The predicate type of a Sigstore bundle that is a plain signature.
pub const SIGSTORE_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// `pack --referrers`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Signatures, attestations, SBOMs and every other referrer.
    #[default]
    All,
    /// Signatures only.
    Signatures,
    /// Nothing that refers to the images.
    None,
}

/// What a referrer is, for `--referrers signatures`, inspect and the
/// signature gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Signature,
    Attestation,
    Sbom,
    Other,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Signature => "signature",
            Kind::Attestation => "attestation",
            Kind::Sbom => "sbom",
            Kind::Other => "referrer",
        })
    }
}

/// How a referrer is attached to its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// OCI 1.1: the manifest names its subject; found through the referrers
    /// API or the `sha256-<hex>` fallback tag index, pushed the same way.
    Referrer,
    /// cosign's tag scheme: `sha256-<hex>.sig|.att|.sbom` in the subject's
    /// repository.
    CosignTag,
}

/// One subject link of `referrers.json`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReferrerRecord {
    /// The manifest or index referred to (an image root, a platform
    /// manifest of it, or another referrer).
    pub subject: Digest,
    pub form: Form,
    /// cosign's tag (`sha256-<hex>.sig`) for [`Form::CosignTag`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The referrer manifest (a blob of `images.tar`).
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// `artifactType` as the referrers API lists it (the manifest's
    /// `artifactType`, else its config media type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub kind: Kind,
    /// The manifest's annotations (the referrers API lists them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `images.tar/referrers.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReferrersFile {
    pub referrers: Vec<ReferrerRecord>,
}

/// The referrers a bundle is written with: their manifests (stored like
/// any manifest blob) and their subject links. Their config and layer
/// blobs go into the bundle's blob list like image blobs.
#[derive(Clone, Debug, Default)]
pub struct Carried {
    pub manifests: Vec<ManifestDoc>,
    pub records: Vec<ReferrerRecord>,
}

impl Carried {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The bytes of `referrers.json`: records sorted, so that the same
    /// referrers always give the same file (the bundle is deterministic).
    pub fn file_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut referrers = self.records.clone();
        referrers.sort();
        referrers.dedup();
        let mut b = serde_json::to_vec_pretty(&ReferrersFile { referrers })?;
        b.push(b'\n');
        Ok(b)
    }

    /// Add what another image brought (shared subjects are kept once).
    pub fn extend(&mut self, other: Carried) {
        for m in other.manifests {
            if !self.manifests.iter().any(|x| x.digest == m.digest) {
                self.manifests.push(m);
            }
        }
        for r in other.records {
            if !self.records.contains(&r) {
                self.records.push(r);
            }
        }
    }
}

/// cosign's tag for `subject`: `sha256-<hex>` plus `.sig`, `.att`, `.sbom`
/// (or nothing: the OCI 1.1 referrers tag fallback).
pub fn subject_tag(subject: &Digest, suffix: &str) -> String {
    format!("sha256-{}{suffix}", subject.hex())
}

/// The fields of a referrer manifest that say what it is.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactView {
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub config: Option<crate::oci::media::Descriptor>,
    #[serde(default)]
    pub layers: Vec<crate::oci::media::Descriptor>,
    #[serde(default)]
    pub subject: Option<crate::oci::media::Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl ArtifactView {
    pub fn of(bytes: &[u8]) -> anyhow::Result<ArtifactView> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The `artifactType` the referrers API lists: the manifest's own,
    /// else its config media type.
    pub fn listed_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
            .filter(|s| !s.is_empty())
    }
}

/// What a referrer is, from how it was found and what it says it is.
pub fn classify(cosign_suffix: Option<&str>, view: &ArtifactView) -> Kind {
    match cosign_suffix {
        Some(".sig") => return Kind::Signature,
        Some(".att") => return Kind::Attestation,
        Some(".sbom") => return Kind::Sbom,
        _ => {}
    }
    let at = view.listed_artifact_type().unwrap_or_default();
    let layer_types: Vec<&str> = view.layers.iter().map(|l| l.media_type.as_str()).collect();
    if at == COSIGN_SIG_ARTIFACT || layer_types.contains(&SIMPLESIGNING_MEDIA_TYPE) {
        return Kind::Signature;
    }
    if at.contains("sigstore.bundle") {
        return match view.annotations.get(SIGSTORE_PREDICATE_ANNOTATION) {
            Some(p) if p == SIGSTORE_SIGN_PREDICATE => Kind::Signature,
            _ => Kind::Attestation,
        };
    }
    if sbom_format(&at).is_some() || layer_types.iter().any(|t| sbom_format(t).is_some()) {
        return Kind::Sbom;
    }
    if at.contains("in-toto") || at.contains("dsse") || at.contains("cosign.artifact.att") {
        return Kind::Attestation;
    }
    Kind::Other
}

/// The SBOM format a media type or predicate type names, if any.
pub fn sbom_format(media_or_predicate: &str) -> Option<&'static str> {
    let s = media_or_predicate.to_ascii_lowercase();
    if s.contains("spdx") {
        Some("spdx")
    } else if s.contains("cyclonedx") {
        Some("cyclonedx")
    } else if s.contains("syft") {
        Some("syft")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: &str) -> ArtifactView {
        ArtifactView::of(json.as_bytes()).unwrap()
    }

    #[test]
    fn classifies_the_forms_cosign_writes() {
        let empty = view("{}");
        assert_eq!(classify(Some(".sig"), &empty), Kind::Signature);
        assert_eq!(classify(Some(".att"), &empty), Kind::Attestation);
        assert_eq!(classify(Some(".sbom"), &empty), Kind::Sbom);
        let bundle = r#"{"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","annotations":{"dev.sigstore.bundle.predicateType":"https://sigstore.dev/cosign/sign/v1"}}"#;
        assert_eq!(classify(None, &view(bundle)), Kind::Signature);
        let att = r#"{"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","annotations":{"dev.sigstore.bundle.predicateType":"https://spdx.dev/Document"}}"#;
        assert_eq!(classify(None, &view(att)), Kind::Attestation);
        let sbom = r#"{"artifactType":"application/spdx+json"}"#;
        assert_eq!(classify(None, &view(sbom)), Kind::Sbom);
        let other = r#"{"config":{"mediaType":"application/vnd.example.thing","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}}"#;
        assert_eq!(classify(None, &view(other)), Kind::Other);
    }

    #[test]
    fn referrers_file_is_sorted_and_deduplicated() {
        let d = |s: &str| Digest::of(s.as_bytes());
        let rec = |subject: &str, digest: &str| ReferrerRecord {
            subject: d(subject),
            form: Form::Referrer,
            tag: None,
            digest: d(digest),
            media_type: crate::oci::media::OCI_MANIFEST.into(),
            size: 1,
            artifact_type: None,
            kind: Kind::Other,
            annotations: BTreeMap::new(),
        };
        let a = Carried {
            manifests: Vec::new(),
            records: vec![rec("s", "b"), rec("s", "a"), rec("s", "b")],
        };
        let b = Carried {
            manifests: Vec::new(),
            records: vec![rec("s", "a"), rec("s", "b")],
        };
        assert_eq!(a.file_bytes().unwrap(), b.file_bytes().unwrap());
        let parsed: ReferrersFile = serde_json::from_slice(&a.file_bytes().unwrap()).unwrap();
        assert_eq!(parsed.referrers.len(), 2);
    }
}
