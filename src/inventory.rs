//! `bundler inventory --config load-image.yaml [-o FILE]`: what the site
//! registry holds for a product's images (target reference, manifest
//! digests, every blob digest it has) and the charts sync published. The
//! file travels back to the connected side, where `pack --against` leaves
//! out what it names. `sync` writes the same into `.bundler/inventory.json`
//! after each run ([`write_after_sync`]).
//!
//! Only names and digests are written: the registry's credentials come
//! from the config and never reach the file.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::bundle::delta::{
    open_bundles, Inventory, InventoryBlob, InventoryChart, InventoryImage,
};
use crate::config::load_image::{Source, SyncConfig};
use crate::oci::media::{self, Parsed};
use crate::oci::registry::{ClientOptions, RegistryClient};
use crate::oci::{Digest, Reference};
use crate::progress::Progress;
use crate::state::SyncState;

pub const INVENTORY_FILE: &str = "inventory.json";
/// Lines of an `--images` file at most (a list, not a data set).
const MAX_IMAGE_LINES: usize = 100_000;

#[derive(clap::Args, Debug)]
pub struct InventoryArgs {
    /// The load-image.yaml whose target registry is read (and whose bundles name the images).
    #[arg(long, short = 'c', default_value = "load-image.yaml")]
    pub config: PathBuf,
    /// Write the inventory here (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Original image references, one a line, instead of the images of the config's bundles.
    #[arg(long, value_name = "FILE")]
    pub images: Option<PathBuf>,
    /// Registry requests at once (1 to 1024).
    #[arg(long, default_value_t = 8, value_parser = crate::cli::concurrency_parser())]
    pub concurrency: usize,
    #[command(flatten)]
    pub transport: crate::oci::TransportArgs,
}

/// An image to look up: its original reference (when known) and target.
pub struct Wanted {
    pub source: Option<String>,
    pub target: Reference,
}

pub async fn run(args: &InventoryArgs) -> anyhow::Result<()> {
    let config = SyncConfig::load(&args.config)?;
    let sources = match &args.images {
        Some(f) => read_image_list(f)?,
        None => bundle_images(&config)?,
    };
    let mut wanted = Vec::new();
    let mut seen = BTreeSet::new();
    for r in sources {
        let t = config
            .rewrite
            .rewrite(&r)
            .with_context(|| format!("rewriting image {r} with {}", config.file.display()))?;
        if seen.insert(t.target.to_string()) {
            wanted.push(Wanted {
                source: Some(r.to_string()),
                target: t.target,
            });
        }
    }
    let client = RegistryClient::new(
        ClientOptions {
            insecure: args.transport.insecure(),
            ca_file: args.transport.ca_file.clone(),
            ..ClientOptions::default()
        },
        config.credential_store(),
    )?;
    let mut inv = read_registry(&client, &wanted, args.concurrency.max(1), true).await?;
    inv.charts = published_charts(&config.file)?;
    match &args.output {
        Some(p) => {
            inv.write(p)?;
            eprintln!(
                "{}: {} images, {} blobs{}",
                p.display(),
                inv.images.len(),
                inv.images.iter().map(|i| i.blobs.len()).sum::<usize>(),
                if inv.missing.is_empty() {
                    String::new()
                } else {
                    format!("; {} not in the registry", inv.missing.len())
                }
            );
        }
        None => println!("{}", serde_json::to_string_pretty(&inv)?),
    }
    Ok(())
}

/// After a sync: read the target for the images of the run (no blob
/// HEADs: the registry just accepted their manifests), merge with what
/// the file already lists, and write `.bundler/inventory.json`. A failure
/// is a warning: the images are synced either way.
pub async fn write_after_sync<'a>(
    client: &RegistryClient,
    config: &SyncConfig,
    images: impl IntoIterator<Item = (&'a str, &'a str)>,
    progress: &Progress,
) {
    if let Err(e) = try_write_after_sync(client, config, images).await {
        progress.println(format!(
            "warning: could not write {}: {}",
            inventory_path(&config.file).display(),
            crate::error::redact(&format!("{e:#}"))
        ));
    }
}

async fn try_write_after_sync<'a>(
    client: &RegistryClient,
    config: &SyncConfig,
    images: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> anyhow::Result<()> {
    let mut wanted = Vec::new();
    let mut seen = BTreeSet::new();
    for (from, to) in images {
        if seen.insert(to.to_string()) {
            wanted.push(Wanted {
                source: Some(from.to_string()),
                target: Reference::parse(to)?,
            });
        }
    }
    let mut inv = read_registry(client, &wanted, 8, false).await?;
    inv.charts = published_charts(&config.file)?;
    let path = inventory_path(&config.file);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Two syncs beside the same config must not drop each other's images.
    let _lock = crate::atomic_file::DirLock::acquire(path.parent().unwrap_or(Path::new(".")))?;
    // Temp files of killed runs (their PID no longer runs) go, as in pack.
    for p in crate::interrupt::remove_stale_partials(path.parent().unwrap_or(Path::new("."))) {
        tracing::info!(
            "removed {} (left by a run that no longer runs)",
            p.display()
        );
    }
    match Inventory::load(&path) {
        Ok(older) => inv.merge_older(older),
        Err(e) if path.exists() => {
            tracing::warn!("replacing {}: {e:#}", path.display());
        }
        Err(_) => {}
    }
    inv.write(&path)
}

/// `.bundler/inventory.json` beside the sync config.
pub fn inventory_path(config: &Path) -> PathBuf {
    SyncState::path_for(config).with_file_name(INVENTORY_FILE)
}

/// Read every wanted image from the registry. `check_blobs`: HEAD each
/// blob and list only those the registry holds (a registry may have lost
/// blobs to garbage collection); else trust the manifests.
pub async fn read_registry(
    client: &RegistryClient,
    wanted: &[Wanted],
    concurrency: usize,
    check_blobs: bool,
) -> anyhow::Result<Inventory> {
    let found: Vec<Option<InventoryImage>> =
        stream::iter(wanted.iter().map(|w| read_image(client, w, check_blobs)))
            .buffered(concurrency)
            .try_collect()
            .await?;
    let mut images = Vec::new();
    let mut missing = Vec::new();
    for (w, f) in wanted.iter().zip(found) {
        match f {
            Some(i) => images.push(i),
            None => missing.push(w.target.to_string()),
        }
    }
    images.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(Inventory::new(images, missing, Vec::new()))
}

async fn read_image(
    client: &RegistryClient,
    w: &Wanted,
    check_blobs: bool,
) -> anyhow::Result<Option<InventoryImage>> {
    let t = &w.target;
    let reference = t.manifest_reference();
    if client
        .head_manifest(&t.registry, &t.repository, &reference)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let root = client
        .get_manifest(&t.registry, &t.repository, &reference)
        .await?;
    let parsed = media::parse(&root.bytes, Some(&root.media_type))
        .with_context(|| format!("manifest of {t}"))?;
    let mut manifests = Vec::new();
    let mut descs = Vec::new();
    match &parsed {
        Parsed::Manifest { .. } => descs.extend(parsed.blobs().into_iter().cloned()),
        Parsed::Index {
            manifests: kids, ..
        } => {
            for k in kids {
                // Children sync left out (one platform kept) are absent.
                let d = k.digest.to_string();
                if client
                    .head_manifest(&t.registry, &t.repository, &d)
                    .await?
                    .is_none()
                {
                    continue;
                }
                let child = client.get_manifest(&t.registry, &t.repository, &d).await?;
                let p = media::parse(&child.bytes, Some(&child.media_type))
                    .with_context(|| format!("manifest {d} of {t}"))?;
                descs.extend(p.blobs().into_iter().cloned());
                manifests.push(child.digest);
            }
        }
    }
    let mut blobs = Vec::new();
    let mut seen: BTreeSet<Digest> = BTreeSet::new();
    for d in descs {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        if check_blobs
            && client
                .blob_exists(&t.registry, &t.repository, &d.digest)
                .await?
                .is_none()
        {
            tracing::warn!(
                "{t}: blob {} is named by its manifest but not in the registry",
                d.digest
            );
            continue;
        }
        blobs.push(InventoryBlob {
            digest: d.digest,
            size: d.size,
            media_type: d.media_type,
        });
    }
    Ok(Some(InventoryImage {
        target: t.to_string(),
        source: w.source.clone(),
        digest: root.digest,
        media_type: parsed.media_type().to_string(),
        manifests,
        blobs,
    }))
}

/// The charts sync recorded as published (`.bundler/synced.json`).
fn published_charts(config: &Path) -> anyhow::Result<Vec<InventoryChart>> {
    Ok(SyncState::load(config)?
        .charts
        .into_iter()
        .map(|c| InventoryChart {
            name: c.name,
            version: c.version,
            kind: c.kind,
            chart_ref: c.chart_ref,
        })
        .collect())
}

/// Images of the bundles the config's source names.
fn bundle_images(config: &SyncConfig) -> anyhow::Result<Vec<Reference>> {
    let Source::Bundles(path) = &config.source else {
        bail!(
            "{}: the source is not a bundles path: name the images with --images FILE",
            config.file.display()
        );
    };
    let readers = open_bundles(path).with_context(|| {
        format!(
            "reading the bundles of {} (or name the images with --images FILE)",
            config.file.display()
        )
    })?;
    Ok(readers
        .iter()
        .flat_map(|r| r.images.iter().map(|i| i.reference.clone()))
        .collect())
}

/// `--images FILE`: one original reference a line; `#` comments.
fn read_image_list(path: &Path) -> anyhow::Result<Vec<Reference>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --images {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if out.len() == MAX_IMAGE_LINES {
            bail!(
                "--images {}: more than {MAX_IMAGE_LINES} images",
                path.display()
            );
        }
        out.push(
            Reference::parse(l)
                .with_context(|| format!("--images {} line {}: {l:?}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}
