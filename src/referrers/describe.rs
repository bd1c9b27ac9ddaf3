//! What `inspect` and `diff` say about referrers: per image, whether it is
//! signed (and by which key, when `--key` is given), the predicate types of
//! its attestations and the formats of its SBOMs; between two bundles or
//! packages, the referrers added and removed.
use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine;
use serde::Serialize;

use super::carried::{self, BundleReferrers};
use super::cosign::{self, PublicKey};
use super::{sbom_format, Kind, ReferrerRecord, SIGSTORE_PREDICATE_ANNOTATION};
use crate::bundle::reader::{BundleImage, BundleReader};
use crate::oci::Digest;

/// Largest attestation layer read to find its predicate type.
const MAX_ENVELOPE: u64 = 4 << 20;

/// The referrers of one image, for `inspect`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageReferrers {
    pub signatures: usize,
    /// With `--key`: whether one signature verifies with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by_key: Option<bool>,
    /// With `--key`, when a signature verifies: the key's fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// Predicate types of the attestations.
    pub attestations: Vec<String>,
    /// Formats of the SBOMs (attached, or attested).
    pub sboms: Vec<String>,
    /// Other referrers.
    pub other: usize,
    /// Every referrer, as carried.
    pub referrers: Vec<ReferrerRecord>,
}

impl ImageReferrers {
    /// The one-line summary `inspect` prints.
    pub fn line(&self) -> String {
        let signed = match (self.signatures, self.signed_by_key, &self.key_fingerprint) {
            (0, _, _) => "unsigned".to_string(),
            (n, Some(true), Some(fp)) => {
                format!("signed ({}; valid for key {fp})", signatures(n))
            }
            (n, Some(false), _) => format!("{}, NONE valid for the key given", signatures(n)),
            (n, _, _) => format!("signed ({})", signatures(n)),
        };
        let mut parts = vec![signed];
        if !self.attestations.is_empty() {
            parts.push(format!("attestations: {}", self.attestations.join(", ")));
        }
        if !self.sboms.is_empty() {
            parts.push(format!("SBOM: {}", self.sboms.join(", ")));
        }
        if self.other > 0 {
            parts.push(format!("{} other referrers", self.other));
        }
        parts.join("; ")
    }
}

fn signatures(n: usize) -> String {
    format!("{n} signature{}", if n == 1 { "" } else { "s" })
}

/// The referrers of `img` (of its root, its platform manifests, and
/// theirs).
pub fn for_image(
    reader: &BundleReader,
    referrers: &BundleReferrers,
    img: &BundleImage,
    key: Option<&PublicKey>,
) -> anyhow::Result<ImageReferrers> {
    let mut subjects = vec![img.root.digest.clone()];
    subjects.extend(img.children.iter().map(|c| c.digest.clone()));
    let mut out = ImageReferrers::default();
    let (mut atts, mut sboms) = (BTreeSet::new(), BTreeSet::new());
    for rec in referrers.reachable(&subjects) {
        out.referrers.push(rec.clone());
        match rec.kind {
            Kind::Signature => out.signatures += 1,
            Kind::Attestation => {
                for p in predicate_types(reader, rec)? {
                    if let Some(f) = sbom_format(&p) {
                        sboms.insert(f.to_string());
                    }
                    atts.insert(p);
                }
            }
            Kind::Sbom => {
                let view = carried::view(reader, rec)?;
                let mut types: Vec<String> =
                    view.layers.iter().map(|l| l.media_type.clone()).collect();
                types.extend(rec.artifact_type.clone());
                let f = types
                    .iter()
                    .find_map(|t| sbom_format(t))
                    .unwrap_or("unknown");
                sboms.insert(f.to_string());
            }
            Kind::Other => out.other += 1,
        }
    }
    out.attestations = atts.into_iter().collect();
    out.sboms = sboms.into_iter().collect();
    if let Some(key) = key {
        let ok = cosign::check_signed(reader, referrers, &img.root.digest, key)?.is_ok();
        out.signed_by_key = Some(ok);
        out.key_fingerprint = ok.then(|| key.fingerprint.clone());
    }
    Ok(out)
}

/// Fill in `inspect`'s per-image referrers (only when the bundle carries
/// any: a bundle without them reports as before).
pub fn annotate(
    report: &mut crate::bundle::inspect::InspectReport,
    reader: &BundleReader,
    key: Option<&PublicKey>,
) -> anyhow::Result<()> {
    let referrers = BundleReferrers::load(reader)?;
    if referrers.records.is_empty() && key.is_none() {
        return Ok(());
    }
    for (line, img) in report.images.iter_mut().zip(reader.images.iter()) {
        line.referrers = Some(for_image(reader, &referrers, img, key)?);
    }
    Ok(())
}

/// Predicate types an attestation names: the annotations cosign and
/// Sigstore bundles carry, else the in-toto statement inside its DSSE
/// envelope.
fn predicate_types(reader: &BundleReader, rec: &ReferrerRecord) -> anyhow::Result<Vec<String>> {
    let view = carried::view(reader, rec)?;
    let mut out = BTreeSet::new();
    if let Some(p) = view.annotations.get(SIGSTORE_PREDICATE_ANNOTATION) {
        out.insert(p.clone());
    }
    for l in &view.layers {
        let ann = l.annotations.clone().unwrap_or_default();
        if let Some(p) = ann
            .get("predicateType")
            .or_else(|| ann.get("in-toto.io/predicate-type"))
        {
            out.insert(p.clone());
            continue;
        }
        if l.size > MAX_ENVELOPE || reader.blob(&l.digest).is_none() {
            continue;
        }
        if let Some(p) = envelope_predicate(&reader.read_blob(&l.digest)?) {
            out.insert(p);
        }
    }
    Ok(out.into_iter().collect())
}

/// `predicateType` of the in-toto statement in a DSSE envelope (or a
/// Sigstore bundle holding one).
fn envelope_predicate(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let env = v.get("dsseEnvelope").unwrap_or(&v);
    let payload = env.get("payload")?.as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    let st: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    Some(st.get("predicateType")?.as_str()?.to_string())
}

/// One referrer in a diff.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerLine {
    /// The image it belongs to.
    pub image: String,
    pub kind: Kind,
    pub digest: Digest,
    pub subject: Digest,
}

/// Referrers added and removed between OLD and NEW (bundles, packages or
/// directories of bundles; an inventory records none, so a side that is
/// one yields no referrer lines).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrersDiff {
    pub referrers_added: Vec<ReferrerLine>,
    pub referrers_removed: Vec<ReferrerLine>,
}

impl ReferrersDiff {
    /// `diff`'s text lines: `+`/`-` per referrer.
    pub fn print(&self) {
        for (sign, lines) in [("+", &self.referrers_added), ("-", &self.referrers_removed)] {
            for l in lines {
                println!(
                    "{sign} {} {} of {} (refers to {})",
                    l.kind, l.digest, l.image, l.subject
                );
            }
        }
    }
}

pub fn diff_paths(old: &Path, new: &Path) -> anyhow::Result<Option<ReferrersDiff>> {
    let (Some(o), Some(n)) = (lines_of(old)?, lines_of(new)?) else {
        return Ok(None);
    };
    Ok(Some(ReferrersDiff {
        referrers_added: n.difference(&o).cloned().collect(),
        referrers_removed: o.difference(&n).cloned().collect(),
    }))
}

/// Every referrer of every image under `path`, or `None` when `path` is
/// not a bundle, package or directory of them (an inventory).
fn lines_of(path: &Path) -> anyhow::Result<Option<BTreeSet<ReferrerLine>>> {
    let Ok(locations) = crate::bundle::location::list_bundles(path) else {
        return Ok(None);
    };
    if locations.is_empty() {
        return Ok(None);
    }
    let mut out = BTreeSet::new();
    for loc in locations {
        let reader = loc.open()?;
        let referrers = BundleReferrers::load(&reader)?;
        for img in &reader.images {
            let mut subjects = vec![img.root.digest.clone()];
            subjects.extend(img.children.iter().map(|c| c.digest.clone()));
            for rec in referrers.reachable(&subjects) {
                out.insert(ReferrerLine {
                    image: img.reference.to_string(),
                    kind: rec.kind,
                    digest: rec.digest.clone(),
                    subject: rec.subject.clone(),
                });
            }
        }
    }
    Ok(Some(out))
}
