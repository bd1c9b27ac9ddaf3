//! The bundles a sync reads: where they are (a directory, one bundle, or
//! the bundles inside an offline package), which pass the config's chart
//! filters, and the cheap checks that run before any request: the tar
//! index, the manifests (hashed when the reader opens them), and every
//! small file against the sha256 that `bundle.json` records. Blobs are not
//! read here: a blob that must move is hashed while it streams
//! ([`crate::transfer`]), one read per byte.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, Context};

use crate::bundle::format::{BUNDLE_JSON, IMAGES_TAR};
use crate::bundle::location::BundleLocation;
use crate::bundle::reader::{BundleImage, BundleReader};
use crate::config::load_image::{Source, SyncConfig};
use crate::oci::media::Platform;
use crate::oci::Digest;
use crate::progress::Progress;
use crate::transfer::ImageJob;

/// A bundle that passed the filters, with its chart identity.
pub struct SelectedBundle {
    pub reader: BundleReader,
    pub chart: Option<(String, String)>,
}

/// Open every bundle of the config's source, drop those the chart filters
/// exclude, and check the small files of the others.
pub fn open_selected(
    config: &SyncConfig,
    progress: &Progress,
) -> anyhow::Result<Vec<SelectedBundle>> {
    let locations = match &config.source {
        Source::Bundles(p) => list_bundles(p, config)?,
        Source::Repo { .. } => bail!(
            "{}: source.repo: syncing straight from a chart repository is not supported by bundler; \
             run `bundler pack` on the connected side and point source.intermediateBundlesPath at the bundles",
            config.file.display()
        ),
    };
    if locations.is_empty() {
        bail!("no *.bundle.tar found in {}", source_display(config));
    }
    let mut selected = Vec::new();
    for loc in &locations {
        let reader = loc
            .open()
            .with_context(|| format!("bundle {} was refused; nothing was pushed", loc.label()))?;
        let chart = reader.chart_name_version().with_context(|| {
            format!(
                "reading the chart of bundle {}; nothing was pushed",
                reader.label
            )
        })?;
        if let Some((name, version)) = &chart {
            if !config.wants_chart(name, version) {
                progress.println(format!(
                    "skip {} (filtered by charts/skipCharts)",
                    reader.label
                ));
                continue;
            }
        }
        check_small_files(&reader)
            .with_context(|| format!("bundle {} was refused; nothing was pushed", reader.label))?;
        selected.push(SelectedBundle { reader, chart });
    }
    refuse_duplicate_charts(&selected, config)?;
    // Charts need target.repo; image-only products do not.
    let charts: Vec<(String, String)> = selected.iter().filter_map(|b| b.chart.clone()).collect();
    config.chart_target(&charts)?;
    Ok(selected)
}

/// Every file `bundle.json` lists (chart files, hints, index.json, ...) has
/// the sha256 it records, and no file was added after packing. These are
/// small (the reader refuses large ones), so reading them costs little;
/// blobs are left to the streaming check.
pub(crate) fn check_small_files(reader: &BundleReader) -> anyhow::Result<()> {
    let Some(meta) = &reader.meta else {
        return Ok(());
    };
    let mut problems = Vec::new();
    for (name, want) in &meta.files {
        let bytes = match name.strip_prefix(&format!("{IMAGES_TAR}/")) {
            Some(inner) => reader.read_images_file(inner),
            None => reader.read_file(name),
        };
        match bytes {
            Ok(b) => {
                let got = Digest::of(&b);
                if &got != want {
                    problems.push(format!(
                        "{name} is corrupted: sha256 {got}, bundle.json says {want}"
                    ));
                }
            }
            Err(e) => problems.push(format!("{name} is listed in bundle.json: {e:#}")),
        }
    }
    let listed: HashSet<&str> = meta.files.keys().map(String::as_str).collect();
    for name in reader.entries.keys() {
        if name != BUNDLE_JSON && name != IMAGES_TAR && !listed.contains(name.as_str()) {
            problems.push(format!(
                "{name} is not listed in bundle.json (added after packing?)"
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "bundle {}: {} problem{}:\n  {}",
            reader.label,
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// The images a run pushes, deduplicated, and what charts need to know
/// about the platform choice.
#[derive(Default)]
pub struct SelectedImages {
    /// One job per distinct (target, digest): an image carried by a chart
    /// bundle and by an image-only bundle is pushed, and counted, once.
    pub jobs: Vec<ImageJob>,
    /// Per bundle: index digest -> platform manifest digest chosen by
    /// `--platform` (for digest-pinned references in the chart values).
    pub platform_map: HashMap<usize, HashMap<Digest, Digest>>,
}

/// Rewrite every image of the selected bundles to its target and apply
/// `--platform`. A `--platform` that no image of the bundles has is refused
/// (an amd64-only bundle asked for arm64 would otherwise report its images
/// as "unchanged" while nothing matched).
pub fn select_images(
    selected: &[SelectedBundle],
    config: &SyncConfig,
    platforms: &[Platform],
) -> anyhow::Result<SelectedImages> {
    let mut out = SelectedImages::default();
    let mut planned = HashSet::new();
    let mut mismatched: BTreeMap<String, String> = BTreeMap::new();
    for (bi, b) in selected.iter().enumerate() {
        for (ii, img) in b.reader.images.iter().enumerate() {
            let rewritten = config
                .rewrite
                .rewrite(&img.reference)
                .with_context(|| format!("bundle {}: image {}", b.reader.label, img.reference))?;
            let known = b.reader.platforms.get(ii).cloned().flatten();
            let img = match select_platform(img, platforms)? {
                Some(chosen) => {
                    out.platform_map
                        .entry(bi)
                        .or_default()
                        .insert(img.root.digest.clone(), chosen.root.digest.clone());
                    chosen
                }
                None => {
                    if let Some(have) = known.filter(|_| img.children.is_empty()) {
                        if !platforms.is_empty() && !platforms.iter().any(|p| p.matches(&have)) {
                            mismatched.insert(img.reference.to_string(), have.to_string());
                        }
                    }
                    img.clone()
                }
            };
            // The main target, then each of `target.mirrors`.
            let mut targets = vec![rewritten.target];
            for m in &config.mirrors {
                let r = m.rewrite.rewrite(&img.reference).with_context(|| {
                    format!(
                        "bundle {}: image {} (target.mirrors)",
                        b.reader.label, img.reference
                    )
                })?;
                targets.push(r.target);
            }
            for target in targets {
                if !planned.insert((target.to_string(), img.root.digest.clone())) {
                    continue;
                }
                out.jobs.push(ImageJob {
                    bundle: bi,
                    image: img.clone(),
                    target,
                });
            }
        }
    }
    if !mismatched.is_empty() {
        let want: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
        let lines: Vec<String> = mismatched
            .iter()
            .map(|(r, p)| format!("  - {r} (only {p})"))
            .collect();
        return Err(crate::error::input_error(format!(
            "--platform {}: {} image{} of the bundles {} no such platform; nothing was pushed \
             (drop --platform to push the images as the bundles hold them):\n{}",
            want.join(","),
            mismatched.len(),
            if mismatched.len() == 1 { "" } else { "s" },
            if mismatched.len() == 1 { "has" } else { "have" },
            lines.join("\n")
        )));
    }
    Ok(out)
}

/// `--platform os/arch` (one): an image kept in the bundle as a whole
/// index is pushed as the chosen platform's manifest alone (byte for byte,
/// its own digest) with only that platform's blobs. Several platforms keep
/// the whole index: a filtered index would get a new digest.
fn select_platform(
    img: &BundleImage,
    platforms: &[Platform],
) -> anyhow::Result<Option<BundleImage>> {
    use crate::oci::media::{self, Parsed};
    if platforms.len() != 1 || img.children.is_empty() {
        return Ok(None);
    }
    let want = &platforms[0];
    let Parsed::Index { manifests, .. } =
        media::parse(&img.root.bytes, Some(&img.root.media_type))?
    else {
        return Ok(None);
    };
    let desc = media::find_platform(&manifests, want, &img.reference.to_string())
        .context("in the bundle")?;
    let child = img
        .children
        .iter()
        .find(|c| c.digest == desc.digest)
        .with_context(|| {
            format!(
                "{}: the {want} manifest {} is not in the bundle",
                img.reference, desc.digest
            )
        })?;
    let Parsed::Manifest { config, layers, .. } =
        media::parse(&child.bytes, Some(&child.media_type))?
    else {
        bail!(
            "{}: nested index {} is not supported",
            img.reference,
            child.digest
        );
    };
    let blobs = std::iter::once(config).chain(layers).collect();
    Ok(Some(BundleImage {
        root: child.clone(),
        children: Vec::new(),
        blobs,
        ..img.clone()
    }))
}

/// The bundles of `source.intermediateBundlesPath` (a directory, a bundle
/// or an offline package; see [`crate::bundle::location`]). A package is
/// checked whole against its `package.json` (every member hashed) and, when
/// a key is required, its signature, before anything is pushed.
fn list_bundles(path: &Path, config: &SyncConfig) -> anyhow::Result<Vec<BundleLocation>> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "source.intermediateBundlesPath {} does not exist: it resolves to {} \
             (relative paths are from the current directory, as in charts-syncer)",
            path.display(),
            crate::paths::resolved(&crate::paths::cwd(), path).display()
        )
    })?;
    crate::file_kind::require_file(path, &meta, "source.intermediateBundlesPath", true)?;
    let key = match &config.package_signature_key {
        Some(k) => Some((
            crate::package::sign::load_verify_key(k, "signature key")
                .map_err(|e| crate::error::input_error(format!("{e:#}")))?,
            k.clone(),
        )),
        None => None,
    };
    let check = crate::package::read::PackageCheck {
        contents: true,
        volumes: true,
        key,
    };
    let found = crate::bundle::location::list_bundles_checked(path, &check)
        .map_err(|e| e.context("no image was pushed"))?;
    if let (Some(k), Some(BundleLocation::File(b))) = (&config.package_signature_key, found.first())
    {
        bail!(
            "{}: a signature by {} is required, but {} is a bundle, not a signed offline package: nothing was pushed",
            config.file.display(),
            k.display(),
            b.display()
        );
    }
    Ok(found)
}

/// One chart version carried twice with different content (issue 20.15):
/// sync would publish one and fail on (or, with --force, replace it by)
/// the other. The same bundle content twice is harmless.
fn refuse_duplicate_charts(selected: &[SelectedBundle], config: &SyncConfig) -> anyhow::Result<()> {
    let mut items = Vec::new();
    for b in selected {
        let Some((name, version)) = &b.chart else {
            continue;
        };
        let digest = b
            .reader
            .read_file(BUNDLE_JSON)
            .ok()
            .map(|raw| Digest::of(&raw));
        items.push((b.reader.label.clone(), format!("{name}-{version}"), digest));
    }
    crate::package::toc::refuse_duplicate_charts(
        &format!("{} (nothing was pushed)", source_display(config)),
        items
            .iter()
            .map(|(l, c, d)| (l.as_str(), c.as_str(), d.as_ref())),
    )
}

fn source_display(config: &SyncConfig) -> String {
    match &config.source {
        Source::Bundles(p) => p.display().to_string(),
        Source::Repo { repo, .. } => repo.url.clone(),
    }
}
