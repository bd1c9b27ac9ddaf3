//! Packing a `spec.manifests` entry (see [`crate::manifests`]): read the
//! tree, build it with `kubectl kustomize` when it is a kustomization, find
//! every image, resolve them (archives first, then registries), check that
//! a relocation reaches every image, and lay out
//! `<name>_<version>.bundle.tar` with `original-manifests/` beside
//! `images.tar`.
use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::resolve::{resolve_archive_images, resolve_registry_image, take_local};
use super::{BundlePlan, PackContext, ResolvedImage};
use crate::bundle::writer::BundleSpec;
use crate::manifests::relocate::{self, Found};
use crate::manifests::{hints, ManifestsEntry, ManifestsPayload, ManifestsRecord, Tree};
use crate::oci::reference::RewriteRules;
use crate::oci::Reference;

/// Per entry: what pack found, for the summary and the closing report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ManifestsSummary {
    pub name: String,
    pub version: String,
    pub kind: crate::manifests::TreeKind,
    /// Distinct images (normalised references).
    pub images: usize,
    /// Places they appear (fields, args, ConfigMap data, hints).
    pub places: usize,
    /// Places a trial relocation rewrote; must equal `places`.
    pub relocated: usize,
    pub seconds: f64,
}

/// Registry a trial relocation at pack time points every image at.
const CHECK_REGISTRY: &str = "relocation-check.invalid";

/// Find an entry's images and tree (no blob resolved).
pub(super) fn find(
    entry: &ManifestsEntry,
) -> anyhow::Result<(Tree, String, Vec<hints::ManifestHint>, Found)> {
    let tree = Tree::load(entry)?;
    let (hints_text, hints) = match &entry.hints {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| {
                format!("manifests {}: reading hints {}", entry.name, p.display())
            })?;
            let h = hints::parse(&text, &p.display().to_string())?;
            (text, h)
        }
        None => (String::new(), Vec::new()),
    };
    let scratch =
        tempfile::tempdir().context("creating a scratch directory for kubectl kustomize")?;
    let found = relocate::find(&tree, &hints, scratch.path())
        .with_context(|| format!("manifests {} ({})", entry.name, entry.path.display()))?;
    Ok((tree, hints_text, hints, found))
}

/// `--print-images` / `--dry-run`: an entry's images and where they are.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ManifestsListing {
    manifests: String,
    kind: crate::manifests::TreeKind,
    apply: String,
    images: Vec<ListedImage>,
}

#[derive(Debug, Serialize)]
struct ListedImage {
    reference: String,
    from: Vec<String>,
}

impl ManifestsListing {
    pub(super) fn print_text(&self) {
        println!(
            "manifests {} ({:?} {}): {} images",
            self.manifests,
            self.kind,
            self.apply,
            self.images.len()
        );
        for i in &self.images {
            println!("  {}\n      from: {}", i.reference, i.from.join("; "));
        }
    }
}

pub(super) fn listing(entry: &ManifestsEntry) -> anyhow::Result<ManifestsListing> {
    let (tree, _, _, found) = find(entry)?;
    let mut images = Vec::new();
    for lit in found.literals() {
        let mut from: Vec<String> = Vec::new();
        for (src, occ) in &found.sources {
            for o in occ.iter().filter(|o| o.literal == lit) {
                from.push(format!(
                    "{src}: {} {}",
                    o.object,
                    crate::chart::yamledit::path_string(&o.path)
                ));
            }
        }
        if found.hinted.contains(&lit) {
            from.push("hints".into());
        }
        images.push(ListedImage {
            reference: lit,
            from,
        });
    }
    Ok(ManifestsListing {
        manifests: format!("{} {}", entry.name, entry.version),
        kind: tree.kind,
        apply: tree.apply,
        images,
    })
}

/// Trial relocation: every place must be rewritten and the result must
/// name no other registry, or the bundle would carry a product that sync
/// cannot relocate. Returns the places rewritten.
fn check_relocation(
    entry: &ManifestsEntry,
    tree: &Tree,
    hints: &[hints::ManifestHint],
    found: &Found,
) -> anyhow::Result<usize> {
    let rules = RewriteRules {
        prefix_registry: Some(CHECK_REGISTRY.to_string()),
        ..RewriteRules::default()
    };
    let target_of = |lit: &str| -> anyhow::Result<String> {
        Ok(rules.rewrite(&Reference::parse(lit)?)?.target.to_string())
    };
    let relocated = relocate::relocate(tree, hints, found, &target_of)
        .with_context(|| format!("manifests {}: relocation check", entry.name))?;
    let scratch = tempfile::tempdir()?;
    let after = relocate::find(&relocated.tree, &[], scratch.path())
        .with_context(|| format!("manifests {}: building the relocated copy", entry.name))?;
    let missed: Vec<String> = after
        .literals()
        .into_iter()
        .filter(|l| !l.starts_with(CHECK_REGISTRY))
        .collect();
    if !missed.is_empty() {
        anyhow::bail!(
            "manifests {}: a relocated copy still names {}; add a hint for each (nothing was written)",
            entry.name,
            missed.join(", ")
        );
    }

    Ok(after.count() + hints.len())
}

/// Each reference from the entry's archives, else from its registry.
async fn resolve_images(
    ctx: &PackContext<'_>,
    entry: &ManifestsEntry,
    refs: &BTreeMap<Reference, String>,
) -> anyhow::Result<Vec<ResolvedImage>> {
    let mut local: Vec<ResolvedImage> = Vec::new();
    for a in &entry.image_archives {
        local.extend(resolve_archive_images(a, ctx.platforms.as_deref())?);
    }
    let mut images = Vec::new();
    for r in refs.keys() {
        match take_local(&mut local, r)? {
            Some(img) => images.push(img),
            None => images.push(
                resolve_registry_image(&ctx.client, r, ctx.platforms.as_deref())
                    .await
                    .with_context(|| {
                        format!(
                            "manifests {}: image {r} (give it in an archive under images: to take it from disk)",
                            entry.name
                        )
                    })?,
            ),
        }
    }
    Ok(images)
}

pub(super) async fn plan_manifests(
    ctx: &PackContext<'_>,
    entry: &ManifestsEntry,
) -> anyhow::Result<(BundlePlan, ManifestsSummary)> {
    let started = Instant::now();
    let (tree, hints_text, hints, found) = find(entry)?;
    let relocated_places = check_relocation(entry, &tree, &hints, &found)?;

    // Distinct references, normalised, with the entry's own images.
    let mut refs: BTreeMap<Reference, String> = BTreeMap::new();
    for lit in found
        .literals()
        .into_iter()
        .chain(entry.images.iter().cloned())
    {
        let r = Reference::parse(&lit)
            .with_context(|| format!("manifests {}: image {lit:?}", entry.name))?;
        refs.entry(r).or_insert(lit);
    }
    let mut images = resolve_images(ctx, entry, &refs).await?;
    let (referrers, referrer_blobs) = super::referrers::discover(ctx, &images).await?;
    let (specs, mut blob_origins) = super::plan::collect(&mut images);
    super::plan::add_origins(&mut blob_origins, referrer_blobs);
    let blobs = blob_origins
        .iter()
        .map(|(d, _)| (d.digest.clone(), d.size))
        .collect();
    let record = ManifestsRecord {
        name: entry.name.clone(),
        version: entry.version.clone(),
        namespace: entry.namespace.clone(),
        kind: tree.kind,
        apply: tree.apply.clone(),
        source: entry.path.display().to_string(),
        images: refs.values().cloned().collect(),
    };
    let mut record_bytes = serde_json::to_vec_pretty(&record)?;
    record_bytes.push(b'\n');
    let spec = BundleSpec {
        chart: None,
        product: Some(ctx.product.clone()),
        hints: hints_text,
        chart_files: Vec::new(),
        images: specs,
        blobs,
        delta: None,
        referrers,
        manifests: Some(ManifestsPayload {
            record: record_bytes,
            files: tree.files.clone().into_iter().collect(),
        }),
    };
    let summary = ManifestsSummary {
        name: entry.name.clone(),
        version: entry.version.clone(),
        kind: tree.kind,
        images: refs.len(),
        places: found.count(),
        relocated: relocated_places,
        seconds: started.elapsed().as_secs_f64(),
    };
    ctx.progress.println(format!(
        "manifests {} {} ({:?} {}): {} images in {} places, relocation check rewrote {} ({:.2} s)",
        entry.name,
        entry.version,
        tree.kind,
        tree.apply,
        summary.images,
        summary.places,
        summary.relocated,
        summary.seconds
    ));
    let path = ctx
        .args
        .output
        .join(format!("{}_{}.bundle.tar", entry.name, entry.version));
    Ok((
        BundlePlan {
            path,
            spec,
            origins: blob_origins,
            chart_archive: None,
            hints: None,
        },
        summary,
    ))
}
