//! The referrers of the images a bundle carries (signatures, attestations,
//! SBOMs; see [`crate::referrers`]): found in each image's registry while
//! planning, so that a referrer whose subject the bundle would not carry
//! fails the run before bytes move; their blobs are then filled like the
//! images' (streamed from the registry into the bundle).
use serde::Serialize;

use super::{BlobOrigin, PackContext, ResolvedImage};
use crate::oci::media::{self, Descriptor, Parsed};
use crate::oci::{Digest, Reference};
use crate::referrers::{Carried, Kind, Mode};

/// The referrers of `images` (registry images only: an image archive
/// holds none), and where their blobs come from.
pub(super) async fn discover(
    ctx: &PackContext<'_>,
    images: &[ResolvedImage],
) -> anyhow::Result<(Carried, Vec<(Descriptor, BlobOrigin)>)> {
    let mut carried = Carried::default();
    let mut origins = Vec::new();
    if ctx.referrers.mode() == Mode::None {
        return Ok((carried, origins));
    }
    for img in images {
        if img
            .blobs
            .iter()
            .any(|(_, o)| matches!(o, BlobOrigin::File { .. }))
        {
            continue;
        }
        let r = &img.spec.reference;
        let mut manifests = vec![img.spec.root.digest.clone()];
        manifests.extend(img.spec.children.iter().map(|c| c.digest.clone()));
        let found = ctx
            .referrers
            .for_image(r, &manifests, img.spec.source_index.as_ref())
            .await?;
        if !found.carried.is_empty() {
            ctx.progress.println(format!(
                "{r}: {} referrer{} ({})",
                found.carried.records.len(),
                if found.carried.records.len() == 1 {
                    ""
                } else {
                    "s"
                },
                kinds(&found.carried)
            ));
        }
        for desc in found.blobs {
            origins.push((
                desc.clone(),
                BlobOrigin::Registry {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    desc,
                },
            ));
        }
        carried.extend(found.carried);
    }
    Ok((carried, origins))
}

fn kinds(c: &Carried) -> String {
    let mut counts: std::collections::BTreeMap<Kind, usize> = Default::default();
    for r in &c.records {
        *counts.entry(r.kind).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One referrer as `--print-images` lists it under its subject.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListedReferrer {
    pub subject: Digest,
    pub kind: Kind,
    pub digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `--print-images`: the referrers of a registry image (its manifests are
/// read, no blob is).
pub(super) async fn list(
    ctx: &PackContext<'_>,
    r: &Reference,
) -> anyhow::Result<Vec<ListedReferrer>> {
    if ctx.referrers.mode() == Mode::None {
        return Ok(Vec::new());
    }
    let root = ctx
        .client
        .get_manifest(&r.registry, &r.repository, &r.manifest_reference())
        .await?;
    let mut subjects = vec![root.digest.clone()];
    if let Ok(Parsed::Index { manifests, .. }) = media::parse(&root.bytes, Some(&root.media_type)) {
        subjects.extend(manifests.into_iter().map(|m| m.digest));
    }
    let mut out = Vec::new();
    for s in subjects {
        for (digest, tag, kind) in ctx.referrers.list(r, &s).await? {
            out.push(ListedReferrer {
                subject: s.clone(),
                kind,
                digest,
                tag,
            });
        }
    }
    Ok(out)
}
