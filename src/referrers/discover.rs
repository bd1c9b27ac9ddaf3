//! `pack`: find everything that refers to the manifests an image brings,
//! in its source registry, three ways (the union is carried, once each):
//! - the OCI 1.1 referrers API, `GET /v2/<name>/referrers/<digest>`
//!   (remembered per registry when it answers 404: no API there);
//! - the referrers tag fallback, an index tagged `sha256-<hex>`;
//! - cosign's tag scheme, `sha256-<hex>.sig`, `.att`, `.sbom`.
//!
//! The repository's tag list is read once (one request) to learn which
//! fallback and cosign tags exist; a registry that refuses to list tags is
//! asked for each candidate tag instead. Referrers of referrers (a
//! signature on an attestation) are followed two levels deep.
//!
//! A referrer whose subject the bundle does not carry is refused: a
//! signature on an index of which `--platform` keeps one manifest, or a
//! cosign signature whose payload signs another digest, would arrive at
//! the site unable to verify anything there.
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use anyhow::{bail, Context};

use super::{classify, subject_tag, ArtifactView, Carried, Form, Kind, Mode, ReferrerRecord};
use crate::bundle::reader::ManifestDoc;
use crate::oci::media::{self, Descriptor, Parsed};
use crate::oci::registry::RegistryClient;
use crate::oci::{Digest, Reference};

/// How deep referrers of referrers are followed.
const MAX_DEPTH: usize = 2;
/// cosign's tag suffixes.
const COSIGN_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];
/// Largest signature payload read at pack to check what it signs.
const MAX_PAYLOAD: u64 = 1 << 20;

/// What was found for one image.
#[derive(Debug, Default)]
pub struct Found {
    pub carried: Carried,
    /// Config and layer blobs of the referrer manifests (in the image's
    /// repository).
    pub blobs: Vec<Descriptor>,
}

/// One referrer seen for a subject, before its manifest is read.
struct Candidate {
    form: Form,
    tag: Option<String>,
    suffix: Option<&'static str>,
    digest: Digest,
}

/// (registry, repository)
type RepoKey = (String, String);

/// The per-run discovery state: which registries have the API, which
/// tags each repository has.
pub struct Discoverer {
    client: RegistryClient,
    mode: Mode,
    api: Mutex<HashMap<String, bool>>,
    tags: Mutex<HashMap<RepoKey, Option<HashSet<String>>>>,
    docs: Mutex<HashMap<Digest, ManifestDoc>>,
}

impl Discoverer {
    pub fn new(client: RegistryClient, mode: Mode) -> Self {
        Discoverer {
            client,
            mode,
            api: Mutex::default(),
            tags: Mutex::default(),
            docs: Mutex::default(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Every referrer of `manifests` (the digests the bundle carries for
    /// image `r`), and of their referrers. `source_index`: the index a
    /// single platform was picked from (not carried): anything that refers
    /// to it is refused, naming the image.
    pub async fn for_image(
        &self,
        r: &Reference,
        manifests: &[Digest],
        source_index: Option<&Digest>,
    ) -> anyhow::Result<Found> {
        let mut found = Found::default();
        if self.mode == Mode::None {
            return Ok(found);
        }
        if let Some(index) = source_index {
            let stranded = self.kept_candidates(r, index).await?;
            if let Some((c, kind)) = stranded.first() {
                bail!(
                    "{r}: {kind} {} ({}) refers to index {index}, which this bundle does not carry \
                     (only one platform's manifest is kept): at the site it would verify nothing. \
                     Pack every platform (--platform all, or several), or leave such artifacts \
                     behind with --referrers none",
                    c.digest,
                    describe_candidate(c)
                );
            }
        }
        let mut carried: BTreeSet<Digest> = manifests.iter().cloned().collect();
        let mut queue: VecDeque<(Digest, usize)> =
            manifests.iter().map(|d| (d.clone(), 0)).collect();
        let mut blob_seen = HashSet::new();
        while let Some((subject, depth)) = queue.pop_front() {
            for (c, kind) in self.kept_candidates(r, &subject).await? {
                let doc = self.fetch(r, &c.digest).await?;
                let view = ArtifactView::of(&doc.bytes)
                    .with_context(|| format!("{r}: referrer {} is not JSON", c.digest))?;
                let subject = self
                    .linked_subject(r, &subject, &c, &view, &carried)
                    .await?;
                let parsed = match doc.parse() {
                    Ok(p @ Parsed::Manifest { .. }) => p,
                    _ => {
                        tracing::warn!(
                            "{r}: referrer {} ({}) is not an image manifest ({}); left behind",
                            c.digest,
                            describe_candidate(&c),
                            doc.media_type
                        );
                        continue;
                    }
                };
                for b in parsed.blobs() {
                    if blob_seen.insert(b.digest.clone()) {
                        found.blobs.push(b.clone());
                    }
                }
                found.carried.records.push(ReferrerRecord {
                    subject,
                    form: c.form,
                    tag: c.tag.clone(),
                    digest: doc.digest.clone(),
                    media_type: doc.media_type.clone(),
                    size: doc.bytes.len() as u64,
                    artifact_type: view.listed_artifact_type(),
                    kind,
                    annotations: view.annotations.clone(),
                });
                if carried.insert(doc.digest.clone()) {
                    if depth < MAX_DEPTH {
                        queue.push_back((doc.digest.clone(), depth + 1));
                    }
                    found.carried.manifests.push(doc);
                }
            }
        }
        Ok(found)
    }

    /// `pack --print-images`: the referrers of `subject` that would be
    /// kept (digest, cosign tag, kind); payloads are not read.
    pub async fn list(
        &self,
        r: &Reference,
        subject: &Digest,
    ) -> anyhow::Result<Vec<(Digest, Option<String>, Kind)>> {
        if self.mode == Mode::None {
            return Ok(Vec::new());
        }
        Ok(self
            .kept_candidates(r, subject)
            .await?
            .into_iter()
            .map(|(c, k)| (c.digest, c.tag, k))
            .collect())
    }

    /// The referrers of `subject` that `--referrers` keeps, with their kind.
    async fn kept_candidates(
        &self,
        r: &Reference,
        subject: &Digest,
    ) -> anyhow::Result<Vec<(Candidate, Kind)>> {
        let mut out = Vec::new();
        for c in self.candidates(r, subject).await? {
            let kind = match c.suffix {
                Some(s) => classify(Some(s), &ArtifactView::default()),
                None => {
                    let doc = self.fetch(r, &c.digest).await?;
                    classify(None, &ArtifactView::of(&doc.bytes).unwrap_or_default())
                }
            };
            if self.mode == Mode::Signatures && kind != Kind::Signature {
                continue;
            }
            out.push((c, kind));
        }
        Ok(out)
    }

    /// The subject a referrer links to: the one it was found under, unless
    /// it names another one itself (its `subject` field, or what a cosign
    /// signature's payload signs), which must then be carried too.
    async fn linked_subject(
        &self,
        r: &Reference,
        found_under: &Digest,
        c: &Candidate,
        view: &ArtifactView,
        carried: &BTreeSet<Digest>,
    ) -> anyhow::Result<Digest> {
        let mut named: Vec<Digest> = view.subject.iter().map(|s| s.digest.clone()).collect();
        if c.suffix == Some(".sig") || view.layers.iter().any(is_payload) {
            for l in view.layers.iter().filter(|l| is_payload(l)) {
                if l.size > MAX_PAYLOAD {
                    continue;
                }
                let bytes = self
                    .client
                    .pull_blob_bytes(&r.registry, &r.repository, l)
                    .await
                    .with_context(|| format!("{r}: reading signature payload {}", l.digest))?;
                if let Some(d) = super::cosign::payload_subject(&bytes) {
                    named.push(d);
                }
            }
        }
        for d in &named {
            if d != found_under && !carried.contains(d) {
                bail!(
                    "{r}: {} {} ({}) is attached to {found_under} but names {d} as what it \
                     signs or describes, and this bundle does not carry {d}: at the site it \
                     would verify nothing. Re-sign the image, or pack with --referrers none",
                    classify(c.suffix, view),
                    c.digest,
                    describe_candidate(c)
                );
            }
        }
        Ok(named
            .into_iter()
            .find(|d| d != found_under && carried.contains(d))
            .unwrap_or_else(|| found_under.clone()))
    }

    /// Every referrer of `subject` in `r`'s repository, by all three ways,
    /// each digest once.
    async fn candidates(&self, r: &Reference, subject: &Digest) -> anyhow::Result<Vec<Candidate>> {
        let (registry, repo) = (&r.registry, &r.repository);
        let mut out: Vec<Candidate> = Vec::new();
        let mut seen: HashSet<(Form, Digest)> = HashSet::new();
        let use_api = *self.api.lock().unwrap().get(registry).unwrap_or(&true);
        if use_api {
            let listed = self
                .client
                .get_referrers(registry, repo, subject)
                .await
                .with_context(|| format!("{r}: asking for the referrers of {subject}"))?;
            self.api
                .lock()
                .unwrap()
                .insert(registry.clone(), listed.is_some());
            for d in listed.unwrap_or_default() {
                if seen.insert((Form::Referrer, d.digest.clone())) {
                    out.push(Candidate {
                        form: Form::Referrer,
                        tag: None,
                        suffix: None,
                        digest: d.digest,
                    });
                }
            }
        }
        let fallback = subject_tag(subject, "");
        if self.has_tag(r, &fallback).await? {
            let idx = self
                .client
                .get_manifest(registry, repo, &fallback)
                .await
                .with_context(|| format!("{r}: reading the referrers tag {fallback}"))?;
            match media::parse(&idx.bytes, Some(&idx.media_type)) {
                Ok(Parsed::Index { manifests, .. }) => {
                    for d in manifests {
                        if seen.insert((Form::Referrer, d.digest.clone())) {
                            out.push(Candidate {
                                form: Form::Referrer,
                                tag: None,
                                suffix: None,
                                digest: d.digest,
                            });
                        }
                    }
                }
                _ => tracing::warn!(
                    "{r}: tag {fallback} is not an index; not read as the referrers tag"
                ),
            }
        }
        for suffix in COSIGN_SUFFIXES {
            let tag = subject_tag(subject, suffix);
            if !self.has_tag(r, &tag).await? {
                continue;
            }
            let Some(d) = self.client.head_manifest(registry, repo, &tag).await? else {
                continue;
            };
            if seen.insert((Form::CosignTag, d.clone())) {
                out.push(Candidate {
                    form: Form::CosignTag,
                    tag: Some(tag),
                    suffix: Some(suffix),
                    digest: d,
                });
            }
        }
        // A registry that lists cosign's tags as referrers too (Harbor's
        // accessories): the tag is what that manifest is; carried once.
        let tagged: HashSet<Digest> = out
            .iter()
            .filter(|c| c.form == Form::CosignTag)
            .map(|c| c.digest.clone())
            .collect();
        out.retain(|c| c.form == Form::CosignTag || !tagged.contains(&c.digest));
        Ok(out)
    }

    /// Whether `r`'s repository has `tag` (from its tag list, read once).
    async fn has_tag(&self, r: &Reference, tag: &str) -> anyhow::Result<bool> {
        let key = (r.registry.clone(), r.repository.clone());
        let known = self.tags.lock().unwrap().get(&key).cloned();
        let list = match known {
            Some(l) => l,
            None => {
                let l = match self.client.list_tags(&r.registry, &r.repository).await {
                    Ok(t) => Some(t.into_iter().collect::<HashSet<_>>()),
                    Err(e) => {
                        tracing::debug!("{r}: tags not listed ({e:#}); asking per tag");
                        None
                    }
                };
                self.tags.lock().unwrap().insert(key, l.clone());
                l
            }
        };
        match list {
            Some(set) => Ok(set.contains(tag)),
            None => Ok(self
                .client
                .head_manifest(&r.registry, &r.repository, tag)
                .await?
                .is_some()),
        }
    }

    /// A referrer manifest by digest (each fetched once per run).
    async fn fetch(&self, r: &Reference, digest: &Digest) -> anyhow::Result<ManifestDoc> {
        if let Some(d) = self.docs.lock().unwrap().get(digest) {
            return Ok(d.clone());
        }
        let m = self
            .client
            .get_manifest(&r.registry, &r.repository, &digest.to_string())
            .await
            .with_context(|| format!("{r}: fetching referrer {digest}"))?;
        let doc = ManifestDoc {
            digest: m.digest,
            media_type: m.media_type,
            bytes: m.bytes,
        };
        self.docs
            .lock()
            .unwrap()
            .insert(digest.clone(), doc.clone());
        Ok(doc)
    }
}

fn is_payload(l: &Descriptor) -> bool {
    l.media_type == super::SIMPLESIGNING_MEDIA_TYPE
}

fn describe_candidate(c: &Candidate) -> String {
    match &c.tag {
        Some(t) => format!("tag {t}"),
        None => "an OCI referrer".to_string(),
    }
}
