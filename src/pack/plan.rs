//! Planning: fetch each chart, find its images (values, hints, rendered
//! templates, archives) and resolve them into a bundle plan, all before any
//! blob moves, so that a bad reference fails the run before bytes are
//! written. `--print-images` / `--dry-run` stop here and print the listing.
use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use super::resolve::{resolve_archive_images, resolve_registry_image, take_local};
use super::{BlobOrigin, BundlePlan, PackContext, PackSummary, ResolvedImage};
use crate::bundle::format::ChartInfo;
use crate::bundle::writer::{BundleSpec, ImageSpec};
use crate::chart::discover::ImageOrigin;
use crate::chart::learn_controls::{Learned, Renderer};
use crate::chart::plan::{plan_chart_images_learned, ChartImages, HintsSource, PlannedImage};
use crate::chart::render_check::{self, ReleaseDefaults, RenderedManifests};
use crate::chart::Chart;
use crate::config::manifest::{ChartEntry, ImageSource};
use crate::oci::media::Descriptor;
use crate::oci::{Digest, Reference};

/// What `--print-images` / `--dry-run` print.
#[derive(Debug, Default, Serialize)]
pub(super) struct ImageListing {
    charts: Vec<ChartListing>,
    /// `spec.images`
    images: Vec<PlannedImage>,
    /// By image reference: what refers to it (`--referrers`), listed under it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    referrers: BTreeMap<String, Vec<super::referrers::ListedReferrer>>,
    /// `spec.manifests`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) manifests: Vec<super::manifests::ManifestsListing>,
}

#[derive(Debug, Serialize)]
struct ChartListing {
    chart: String,
    hints: HintsSource,
    images: Vec<PlannedImage>,
    notes: Vec<String>,
}

impl ImageListing {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        let line = |p: &PlannedImage| {
            let origins: Vec<String> = p.origins.iter().map(|o| o.to_string()).collect();
            println!("  {}\n      from: {}", p.reference, origins.join("; "));
            for r in self
                .referrers
                .get(&p.reference.to_string())
                .into_iter()
                .flatten()
            {
                println!(
                    "      {} {}{} (refers to {})",
                    r.kind,
                    r.digest,
                    r.tag
                        .as_ref()
                        .map(|t| format!(" tag {t}"))
                        .unwrap_or_default(),
                    r.subject
                );
            }
        };
        for c in &self.charts {
            println!(
                "chart {} (hints {}): {} images",
                c.chart,
                c.hints,
                c.images.len()
            );
            c.images.iter().for_each(line);
            for n in &c.notes {
                println!("  note: {n}");
            }
        }
        self.manifests.iter().for_each(|m| m.print_text());
        if !self.images.is_empty() {
            println!("spec.images: {} images", self.images.len());
            self.images.iter().for_each(line);
        }
        Ok(())
    }
}

/// A chart fetched and searched for images, before its images are resolved.
pub(super) struct FoundChart {
    chart: Chart,
    tgz: Vec<u8>,
    release: ReleaseDefaults,
    rendered: Option<anyhow::Result<RenderedManifests>>,
    planned: ChartImages,
    /// The images the entry's archives hold.
    local: Vec<ResolvedImage>,
}

/// How many charts are fetched, rendered and learned at once (helm runs
/// are CPU-bound; a few overlap fetches and renders without crowding).
const CHARTS_IN_PARALLEL: usize = 4;

/// Fetch, render and learn every chart, a few at a time; in manifest
/// order, the first failure wins.
pub(super) async fn find_all_charts(
    ctx: &PackContext<'_>,
    entries: &[ChartEntry],
) -> anyhow::Result<Vec<FoundChart>> {
    use futures_util::{StreamExt, TryStreamExt};
    futures_util::stream::iter(entries)
        .map(|e| find_chart_images(ctx, e))
        .buffered(CHARTS_IN_PARALLEL)
        .try_collect()
        .await
}

/// Plan one chart's bundle. When only listing, the chart goes into
/// `listing` instead and nothing is resolved.
pub(super) async fn plan_chart(
    ctx: &PackContext<'_>,
    entry: &ChartEntry,
    found: FoundChart,
    listing: &mut ImageListing,
    summary: &mut PackSummary,
) -> anyhow::Result<Option<BundlePlan>> {
    if ctx.listing_only {
        let (chart, planned) = (&found.chart, &found.planned);
        listing.charts.push(ChartListing {
            chart: format!("{} {}", chart.name, chart.version),
            hints: planned.source.clone(),
            images: planned.images.clone(),
            notes: planned.notes.clone(),
        });
        return Ok(None);
    }
    chart_bundle_plan(ctx, entry, found, summary)
        .await
        .map(Some)
}

/// Fetch the chart, render it (when helm is there) and plan its images.
async fn find_chart_images(
    ctx: &PackContext<'_>,
    entry: &ChartEntry,
) -> anyhow::Result<FoundChart> {
    let (manifest, progress) = (ctx.manifest, &ctx.progress);
    let auth = manifest.chart_auth.get(&entry.name);
    let (chart, tgz) = crate::chart::repo::fetch_with_auth(
        entry,
        &ctx.base_dir,
        &ctx.client,
        &ctx.fetch_opts,
        auth,
    )
    .await
    .with_context(|| {
        format!(
            "fetching chart {} from the bundle manifest {}",
            entry.name,
            manifest.file.display()
        )
    })?;
    let mut release = ReleaseDefaults::from(entry.release.as_ref());
    release.kube_version = ctx.args.kube_version.clone();
    // helm runs off the async threads, so that charts render in parallel.
    let has_hints = entry.hints.is_some() || chart.file(".relok8s-images.yaml").is_some();
    let (rendered, learned) = {
        let (chart, release, helm) = (chart.clone(), release.clone(), ctx.helm.clone());
        tokio::task::spawn_blocking(move || {
            let Some(helm) = helm else {
                return (None, Ok(None));
            };
            // One packaged copy serves the render at defaults and learning.
            let renderer = match Renderer::new(&chart, &helm, &release) {
                Ok(r) => r,
                Err(e) => return (Some(Err(e)), Ok(None)),
            };
            let rendered = renderer.render(&[]).map(|t| RenderedManifests::parse(&t));
            let learned = match (&rendered, has_hints) {
                (Ok(base), false) => learn_chart_controls(renderer, &chart, base).map(Some),
                _ => Ok(None),
            };
            (Some(rendered), learned)
        })
        .await
        .context("rendering the chart")?
    };
    let learned = learned?;
    let rendered_images = match &rendered {
        Some(Ok(r)) => Some(r.images()),
        _ => None,
    };
    if let Some(Err(e)) = &rendered {
        progress.println(format!(
            "chart {} {}: helm template fails at default values ({e:#}); only values were searched for images",
            chart.name, chart.version
        ));
    }
    let mut planned = plan_chart_images_learned(
        entry,
        &chart,
        &ctx.base_dir,
        rendered_images.as_deref(),
        learned.as_ref(),
        &manifest.file,
    )?;
    // Images the entry's archives provide come from disk; the archives'
    // images are part of the chart even when no hint names them.
    let mut local: Vec<ResolvedImage> = Vec::new();
    for a in &entry.image_archives {
        let path = if a.is_absolute() {
            a.clone()
        } else {
            ctx.base_dir.join(a)
        };
        crate::paths::require_manifest_path("image archive", &path)?;
        let mut imgs = resolve_archive_images(&path, ctx.platforms.as_deref())?;
        super::archive_names::name_plain_tags(&path, &mut imgs, Some((&chart.name, &planned)))?;
        for img in imgs {
            planned.add(
                img.spec.reference.clone(),
                ImageOrigin::Archive { path: path.clone() },
            );
            local.push(img);
        }
    }
    super::archive_names::warn_unreferenced(&chart.name, &planned);
    for n in &planned.notes {
        progress.println(format!(
            "chart {}: not expressible as a hint: {n}",
            chart.name
        ));
    }
    progress.println(format!(
        "chart {} {}: {} images, hints {}",
        chart.name,
        chart.version,
        planned.images.len(),
        planned.source
    ));
    Ok(FoundChart {
        chart,
        tgz,
        release,
        rendered,
        planned,
        local,
    })
}

/// For a chart with no hints that renders: which values control each
/// rendered image, learned by rendering ([`crate::chart::learn_controls`]).
fn learn_chart_controls(
    renderer: Renderer,
    chart: &Chart,
    base: &RenderedManifests,
) -> anyhow::Result<Learned> {
    let started = std::time::Instant::now();
    let guessed = crate::chart::discover::discover_with_rendered(chart, Some(&base.images()))?;
    let merged = crate::chart::hints::MergedValues::of(chart)?;
    let mut hint_paths = Vec::new();
    for t in &guessed.hints.templates {
        if let Ok(r) = crate::chart::hints::resolve_one(t, &merged.values) {
            hint_paths.extend(r.parts.into_iter().map(|p| p.path));
        }
    }
    let learned =
        crate::chart::learn_controls::learn_with(chart, renderer, &base.text, &hint_paths)
            .with_context(|| {
                format!(
                    "learning the image values of chart {} {}",
                    chart.name, chart.version
                )
            })?;
    tracing::debug!(
        "chart {} {}: learned the controls of {} image sites with {} renders in {:?}",
        chart.name,
        chart.version,
        learned.sites.len(),
        learned.renders,
        started.elapsed()
    );
    Ok(learned)
}

/// Resolve a chart's images (archives first, then registries), prove the
/// relocation, and lay out its bundle.
async fn chart_bundle_plan(
    ctx: &PackContext<'_>,
    entry: &ChartEntry,
    found: FoundChart,
    summary: &mut PackSummary,
) -> anyhow::Result<BundlePlan> {
    let FoundChart {
        chart,
        tgz,
        release,
        rendered,
        planned,
        mut local,
    } = found;
    let progress = &ctx.progress;
    let refs: Vec<Reference> = planned.images.iter().map(|p| p.reference.clone()).collect();
    let mut images = Vec::new();
    for r in &refs {
        match take_local(&mut local, r)? {
            Some(img) => images.push(img),
            // `repo:tag@sha256:…` and the archive's `repo:tag` are one image.
            None if super::archive_names::carried_from_archive(&images, r) => {}
            None => {
                images.push(resolve_registry_image(&ctx.client, r, ctx.platforms.as_deref()).await?)
            }
        }
    }
    let proof = render_check::prove_pack(
        &chart,
        &planned.hints,
        &refs,
        ctx.helm.as_deref(),
        rendered.as_ref(),
        &release,
    )?;
    if proof.skipped.is_some() {
        // A warning, also under --json (stdout stays the summary).
        eprintln!("warning: {}", proof.summary());
    } else {
        progress.println(proof.summary());
    }
    for m in &proof.misses {
        progress.println(format!("  missed: {m}"));
    }
    for w in &proof.warnings {
        eprintln!("warning: {w}");
    }
    let (referrers, referrer_blobs) = super::referrers::discover(ctx, &images).await?;
    let (specs, mut blob_origins) = collect(&mut images);
    add_origins(&mut blob_origins, referrer_blobs);
    let mut blobs = BTreeMap::new();
    for (d, _) in &blob_origins {
        blobs.insert(d.digest.clone(), d.size);
    }
    let spec = BundleSpec {
        chart: Some(ChartInfo {
            name: chart.name.clone(),
            version: chart.version.clone(),
            release: entry.release.clone(),
            source: Some(describe_source(entry)),
        }),
        product: Some(ctx.product.clone()),
        hints: planned.hints.to_yaml(),
        chart_files: chart.files.clone(),
        images: specs,
        blobs,
        delta: None,
        referrers,
        manifests: None,
    };
    let path = ctx
        .args
        .output
        .join(format!("{}_{}.bundle.tar", chart.name, chart.version));
    summary.unrelocated.extend(proof.misses.iter().cloned());
    summary.relocation.push(proof);
    Ok(BundlePlan {
        path,
        spec,
        origins: blob_origins,
        chart_archive: Some((format!("{}-{}.tgz", chart.name, chart.version), tgz)),
        hints: Some(planned.source.clone()),
    })
}

/// `--print-images` / `--dry-run`: add `spec.images` to the listing and
/// print it.
pub(super) async fn print_listing(
    ctx: &PackContext<'_>,
    mut listing: ImageListing,
) -> anyhow::Result<()> {
    let manifest = ctx.manifest;
    for src in &manifest.images {
        match src {
            ImageSource::Reference(s) => listing.images.push(PlannedImage {
                reference: Reference::parse(s)
                    .with_context(|| format!("{}: spec.images: {s:?}", manifest.file.display()))?,
                origins: vec![ImageOrigin::Manifest],
            }),
            ImageSource::Archive(path) => {
                for img in resolve_archive_images(path, ctx.platforms.as_deref())? {
                    listing.images.push(PlannedImage {
                        reference: img.spec.reference,
                        origins: vec![ImageOrigin::Archive { path: path.clone() }],
                    });
                }
            }
        }
    }
    // What refers to each registry image (manifests read, no blob). The
    // listing does not depend on it: an image registry out of reach is
    // noted, not fatal.
    let registry_images: Vec<Reference> = (listing.charts.iter().flat_map(|c| c.images.iter()))
        .chain(listing.images.iter())
        .filter(|p| {
            !p.origins
                .iter()
                .any(|o| matches!(o, ImageOrigin::Archive { .. }))
        })
        .map(|p| p.reference.clone())
        .collect();
    for r in registry_images {
        match super::referrers::list(ctx, &r).await {
            Ok(found) if !found.is_empty() => {
                listing.referrers.insert(r.to_string(), found);
            }
            Ok(_) => {}
            Err(e) => eprintln!("note: {r}: referrers not listed: {e:#}"),
        }
    }
    ctx.progress.finish();
    listing.print(ctx.args.json)?;
    Ok(())
}

/// The image-only bundle for `spec.images`, if the manifest has any.
pub(super) async fn images_bundle_plan(
    ctx: &PackContext<'_>,
) -> anyhow::Result<Option<BundlePlan>> {
    let manifest = ctx.manifest;
    if manifest.images.is_empty() {
        return Ok(None);
    }
    let mut images = Vec::new();
    for src in &manifest.images {
        match src {
            ImageSource::Reference(s) => {
                let r = Reference::parse(s)
                    .with_context(|| format!("{}: spec.images: {s:?}", manifest.file.display()))?;
                images
                    .push(resolve_registry_image(&ctx.client, &r, ctx.platforms.as_deref()).await?);
            }
            ImageSource::Archive(path) => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    ctx.base_dir.join(path)
                };
                crate::paths::require_manifest_path("image archive", &path)?;
                let mut imgs = resolve_archive_images(&path, ctx.platforms.as_deref())?;
                super::archive_names::name_plain_tags(&path, &mut imgs, None)?;
                images.extend(imgs);
            }
        }
    }
    let (referrers, referrer_blobs) = super::referrers::discover(ctx, &images).await?;
    let (specs, mut blob_origins) = collect(&mut images);
    add_origins(&mut blob_origins, referrer_blobs);
    let mut blobs = BTreeMap::new();
    for (d, _) in &blob_origins {
        blobs.insert(d.digest.clone(), d.size);
    }
    let spec = BundleSpec {
        chart: None,
        product: Some(ctx.product.clone()),
        hints: String::new(),
        chart_files: Vec::new(),
        images: specs,
        blobs,
        delta: None,
        referrers,
        manifests: None,
    };
    let path = ctx.args.output.join(format!(
        "{}-images_{}.bundle.tar",
        manifest.name, manifest.version
    ));
    Ok(Some(BundlePlan {
        path,
        spec,
        origins: blob_origins,
        chart_archive: None,
        hints: None,
    }))
}

fn describe_source(entry: &ChartEntry) -> String {
    use crate::config::manifest::ChartSource;
    match &entry.source {
        ChartSource::Repo(u) | ChartSource::Oci(u) => u.clone(),
        ChartSource::Path(p) => p.display().to_string(),
    }
}

/// Add the referrers' blob sources (a blob an image has too is kept once).
pub(super) fn add_origins(
    origins: &mut Vec<(Descriptor, BlobOrigin)>,
    more: Vec<(Descriptor, BlobOrigin)>,
) {
    for (d, o) in more {
        if !origins.iter().any(|(x, _)| x.digest == d.digest) {
            origins.push((d, o));
        }
    }
}

/// Split resolved images into bundle image specs and the blob sources
/// (deduplicated by digest: every blob is stored once per bundle).
pub(super) fn collect(
    images: &mut Vec<ResolvedImage>,
) -> (Vec<ImageSpec>, Vec<(Descriptor, BlobOrigin)>) {
    let mut specs = Vec::new();
    let mut blobs: BTreeMap<Digest, (Descriptor, BlobOrigin)> = BTreeMap::new();
    for img in images.drain(..) {
        specs.push(img.spec);
        for (d, o) in img.blobs {
            blobs.entry(d.digest.clone()).or_insert((d, o));
        }
    }
    (specs, blobs.into_values().collect())
}
