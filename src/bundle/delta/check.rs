//! Sync's side of a delta: before anything is pushed, every external blob
//! must be in the target repository, or in another repository of the same
//! registry that it can be mounted from. One missing blob refuses the whole
//! run (listed: image, blob, size) and nothing is pushed; otherwise the
//! blobs found elsewhere are mounted into their target repositories (no
//! bytes move), so that the registry accepts the manifests that follow.
use std::collections::BTreeMap;

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::bundle::format::ExternalBlob;
use crate::bundle::reader::{BundleImage, BundleReader};
use crate::oci::reference::RewriteRules;
use crate::oci::registry::{BlobSource, PushOutcome, RegistryClient};
use crate::oci::{Digest, Reference};
use crate::progress::{human_bytes, Progress};

/// HEAD requests in flight at once.
const CHECKS_AT_ONCE: usize = 16;
/// Missing blobs listed in the error before "... and N more".
const LIST_AT_MOST: usize = 40;

/// One image to push: its bundle, the image, its target.
pub type PushItem<'a> = (&'a BundleReader, &'a BundleImage, &'a Reference);

#[derive(Debug, Default, Clone, Copy)]
pub struct CheckReport {
    /// (target repository, blob) pairs checked.
    pub external: usize,
    pub mounted: usize,
}

/// An external blob one target repository needs.
struct Need {
    registry: String,
    repository: String,
    blob: ExternalBlob,
    /// Images that need it (for the error).
    images: Vec<String>,
    /// Other repositories of the registry that may hold it.
    elsewhere: Vec<String>,
}

enum Found {
    InTarget,
    In(String),
    Missing,
}

/// Check (and mount) every external blob of the delta bundles among
/// `items`; an error when any is missing, before anything was pushed.
pub async fn check_external(
    client: &RegistryClient,
    rewrite: &RewriteRules,
    items: &[PushItem<'_>],
    progress: &Progress,
) -> anyhow::Result<CheckReport> {
    check_external_opts(client, rewrite, items, progress, true).await
}

/// [`check_external`] for `sync --dry-run`: the same refusal when a blob
/// is missing, but nothing is mounted (a dry run changes nothing).
pub async fn check_external_dry_run(
    client: &RegistryClient,
    rewrite: &RewriteRules,
    items: &[PushItem<'_>],
    progress: &Progress,
) -> anyhow::Result<CheckReport> {
    check_external_opts(client, rewrite, items, progress, false).await
}

async fn check_external_opts(
    client: &RegistryClient,
    rewrite: &RewriteRules,
    items: &[PushItem<'_>],
    progress: &Progress,
    do_mount: bool,
) -> anyhow::Result<CheckReport> {
    let changed = images_to_push(client, items).await?;
    let needs = collect_needs(rewrite, &changed);
    if needs.is_empty() {
        return Ok(CheckReport::default());
    }
    let found: Vec<Found> = stream::iter(needs.iter().map(|n| locate(client, n)))
        .buffered(CHECKS_AT_ONCE)
        .try_collect()
        .await
        .context(
            "checking the external blobs of the delta bundles in the target; nothing was pushed",
        )?;
    let missing: Vec<&Need> = needs
        .iter()
        .zip(&found)
        .filter(|(_, f)| matches!(f, Found::Missing))
        .map(|(n, _)| n)
        .collect();
    if !missing.is_empty() {
        bail!("{}", missing_message(&missing));
    }
    if !do_mount {
        let elsewhere = found.iter().filter(|f| matches!(f, Found::In(_))).count();
        progress.println(format!(
            "delta: {} external blobs are in the target ({elsewhere} would be mounted from other repositories)",
            needs.len()
        ));
        return Ok(CheckReport {
            external: needs.len(),
            mounted: 0,
        });
    }
    let mounts = needs.iter().zip(&found).filter_map(|(n, f)| match f {
        Found::In(from) => Some(mount(client, n, from)),
        _ => None,
    });
    let outcomes: Vec<PushOutcome> = stream::iter(mounts)
        .buffer_unordered(CHECKS_AT_ONCE)
        .try_collect()
        .await?;
    let report = CheckReport {
        external: needs.len(),
        mounted: outcomes
            .iter()
            .filter(|o| **o == PushOutcome::Mounted)
            .count(),
    };
    progress.println(format!(
        "delta: {} external blobs are in the target ({} mounted from other repositories)",
        report.external, report.mounted
    ));
    Ok(report)
}

/// Mount an external blob into the repository that needs it.
async fn mount(client: &RegistryClient, n: &Need, from: &str) -> anyhow::Result<PushOutcome> {
    client
        .push_blob(
            &n.registry,
            &n.repository,
            &n.blob.digest,
            // Never uploaded: a refused mount falls back to an upload of
            // these zero bytes, which fails the digest check.
            BlobSource::Bytes(bytes::Bytes::new()),
            Some(from),
            None,
        )
        .await
        .with_context(|| {
            format!(
                "mounting external blob {} from {}/{from} into {}/{}",
                n.blob.digest, n.registry, n.registry, n.repository
            )
        })
}

/// The delta images whose target does not already resolve to their
/// digest. An image already there needs none of its blobs (the registry
/// accepted its manifest because they were there; sync skips it).
async fn images_to_push<'a>(
    client: &RegistryClient,
    items: &[PushItem<'a>],
) -> anyhow::Result<Vec<PushItem<'a>>> {
    let deltas: Vec<PushItem<'a>> = items
        .iter()
        .filter(|(r, _, _)| r.is_delta())
        .copied()
        .collect();
    let present: Vec<bool> = stream::iter(deltas.iter().map(|(_, image, target)| async move {
        let at = client
            .head_manifest(
                &target.registry,
                &target.repository,
                &target.manifest_reference(),
            )
            .await?;
        anyhow::Ok(at.as_ref() == Some(&image.root.digest))
    }))
    .buffered(CHECKS_AT_ONCE)
    .try_collect()
    .await
    .context("checking the targets of the delta bundles; nothing was pushed")?;
    Ok(deltas
        .into_iter()
        .zip(present)
        .filter(|(_, there)| !there)
        .map(|(item, _)| item)
        .collect())
}

/// External blobs per (target registry, repository), deduplicated.
fn collect_needs(rewrite: &RewriteRules, items: &[PushItem<'_>]) -> Vec<Need> {
    let mut needs: BTreeMap<(String, String, Digest), Need> = BTreeMap::new();
    for (reader, image, target) in items {
        let Some(meta) = reader.meta.as_ref().filter(|m| m.delta.is_some()) else {
            continue;
        };
        for (desc, _) in super::manifest_blobs(image) {
            if reader.blob(&desc.digest).is_some() {
                continue;
            }
            let Some(ext) = meta.external_blob(&desc.digest) else {
                continue;
            };
            let key = (
                target.registry.clone(),
                target.repository.clone(),
                desc.digest.clone(),
            );
            let need = needs.entry(key).or_insert_with(|| Need {
                registry: target.registry.clone(),
                repository: target.repository.clone(),
                blob: ext.clone(),
                images: Vec::new(),
                elsewhere: mount_sources(rewrite, ext, target),
            });
            need.images.push(format!("{} -> {target}", image.reference));
        }
    }
    needs.into_values().collect()
}

/// Repositories of the target's registry that may hold `ext`: the one the
/// inventory names, and where the image that carried it was synced to.
fn mount_sources(rewrite: &RewriteRules, ext: &ExternalBlob, target: &Reference) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(repo) = &ext.repository {
        if let Some((host, path)) = repo.split_once('/') {
            if host == target.registry {
                out.push(path.to_string());
            }
        }
    }
    if let Some(img) = &ext.image {
        if let Ok(t) = Reference::parse(img).and_then(|r| rewrite.rewrite(&r)) {
            if t.target.registry == target.registry {
                out.push(t.target.repository);
            }
        }
    }
    out.retain(|r| r != &target.repository);
    out.dedup();
    out
}

async fn locate(client: &RegistryClient, n: &Need) -> anyhow::Result<Found> {
    let d = &n.blob.digest;
    if client
        .blob_exists(&n.registry, &n.repository, d)
        .await?
        .is_some()
    {
        return Ok(Found::InTarget);
    }
    for repo in &n.elsewhere {
        if client.blob_exists(&n.registry, repo, d).await?.is_some() {
            return Ok(Found::In(repo.clone()));
        }
    }
    Ok(Found::Missing)
}

fn missing_message(missing: &[&Need]) -> String {
    let bytes: u64 = missing.iter().map(|n| n.blob.size).sum();
    // One line per image: the blobs it lacks, and where they were looked for.
    let mut by_image: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    for n in missing {
        let looked: Vec<String> = std::iter::once(n.repository.clone())
            .chain(n.elsewhere.iter().cloned())
            .collect();
        let blob = format!("{} ({})", n.blob.digest, human_bytes(n.blob.size));
        for img in &n.images {
            let e = by_image
                .entry(img.clone())
                .or_insert_with(|| (Vec::new(), format!("{}: {}", n.registry, looked.join(", "))));
            e.0.push(blob.clone());
        }
    }
    let mut lines = Vec::new();
    for (img, (blobs, looked)) in by_image.iter().take(LIST_AT_MOST) {
        lines.push(format!(
            "  - image {img}: missing blob{} {} (looked in {looked})",
            if blobs.len() == 1 { "" } else { "s" },
            blobs.join(", ")
        ));
    }
    if by_image.len() > LIST_AT_MOST {
        lines.push(format!(
            "  ... and {} more images",
            by_image.len() - LIST_AT_MOST
        ));
    }
    format!(
        "this delta does not fit the target: {} external blob{} ({}) that the bundles do not carry {} not in the target registry; nothing was pushed:\n{}\n\
         sync the full package, or pack a delta against an inventory of this site (`bundler inventory`)",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        human_bytes(bytes),
        if missing.len() == 1 { "is" } else { "are" },
        lines.join("\n")
    )
}
