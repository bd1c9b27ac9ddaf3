//! `bundler pack MANIFEST --output DIR`: pull a product's charts and images
//! and write one `<chart>_<version>.bundle.tar` per chart, one image-only
//! bundle for `spec.images`, the chart `.tgz` files, and the outer offline
//! package `<name>_<version>_<arch>.tar` (seed 002's layout).
//!
//! Blobs never pass through a temp copy: the bundle writer lays the whole
//! file out first, and each blob is streamed from the registry (or copied
//! from a local archive) straight into its slot with positioned writes,
//! several at once. A blob already written into an earlier bundle of the same
//! run is copied locally instead of downloaded again.
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::bundle::format::{ChartInfo, ProductInfo};
use crate::bundle::reader::ManifestDoc;
use crate::bundle::writer::{self, BundleSpec, ImageSpec};
use crate::chart::hints::Hints;
use crate::chart::repo::PublishOptions;
use crate::config::manifest::{BundleManifest, ChartEntry, ImageSource};
use crate::oci::archive;
use crate::oci::auth::CredentialStore;
use crate::oci::media::{self, Descriptor, Parsed, Platform};
use crate::oci::registry::{ClientOptions, RegistryClient};
use crate::oci::{Digest, Reference};
use crate::progress::Progress;

/// Where a blob's bytes come from when filling a bundle slot.
#[derive(Clone, Debug)]
enum BlobOrigin {
    Registry {
        registry: String,
        repository: String,
        desc: Descriptor,
    },
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

/// One bundle to write: where, what, where its blobs come from, and the
/// chart archive that goes beside it.
struct BundlePlan {
    path: PathBuf,
    spec: BundleSpec,
    origins: Vec<(Descriptor, BlobOrigin)>,
    /// (`<name>-<version>.tgz`, bytes)
    chart_archive: Option<(String, Vec<u8>)>,
}

/// An image resolved to exactly what goes into a bundle.
struct ResolvedImage {
    spec: ImageSpec,
    blobs: Vec<(Descriptor, BlobOrigin)>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct PackSummary {
    bundles: Vec<BundleSummary>,
    package: Option<PathBuf>,
    chart_archives: Vec<PathBuf>,
    bytes_downloaded: u64,
    bytes_copied_locally: u64,
    retries: u64,
    seconds: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleSummary {
    path: PathBuf,
    chart: Option<String>,
    images: Vec<String>,
    blobs: usize,
    bytes: u64,
}

#[derive(clap::Args, Debug)]
pub struct PackArgs {
    /// The bundle manifest (see bundle-manifests/).
    pub manifest: std::path::PathBuf,
    /// Where to write bundles, chart .tgz files and the offline package.
    #[arg(short, long, default_value = ".")]
    pub output: std::path::PathBuf,
    /// Keep only these platforms (os/arch[/variant]) or "all"; overrides the manifest.
    #[arg(long)]
    pub platform: Vec<String>,
    /// Parallel blob downloads (1 to 1024).
    #[arg(long, default_value_t = 8, value_parser = crate::cli::concurrency_parser())]
    pub concurrency: usize,
    /// Architecture name in the offline package file name.
    #[arg(long, default_value = "amd64")]
    pub arch: String,
    /// Path of the helm binary used to discover images in rendered templates.
    #[arg(long, env = "BUNDLER_HELM")]
    pub helm: Option<std::path::PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transport: crate::oci::TransportArgs,
}

pub async fn run(args: &PackArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let manifest = BundleManifest::load(&args.manifest)?;
    // The manifest loader already resolved every path against the
    // manifest's directory; an empty base leaves them as they are.
    let base_dir = PathBuf::new();
    let platforms = platform_selection(&args.platform, &manifest)?;
    if args.output.exists() && !args.output.is_dir() {
        return Err(crate::error::input_error(format!(
            "--output {}: exists and is not a directory",
            args.output.display()
        )));
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating output directory {}", args.output.display()))?;
    crate::interrupt::install("pack");
    for p in crate::interrupt::remove_stale_partials(&args.output) {
        tracing::info!(
            "removed {} (left by a pack that no longer runs)",
            p.display()
        );
    }

    let client = RegistryClient::new(
        ClientOptions {
            insecure: args.transport.insecure(),
            ca_file: args.transport.ca_file.clone(),
            ..ClientOptions::default()
        },
        CredentialStore {
            use_docker_config: true,
            ..CredentialStore::default()
        },
    )?;
    let progress = Progress::auto(args.json);
    let fetch_opts = PublishOptions {
        insecure: args.transport.insecure(),
        ca_file: args.transport.ca_file.clone(),
        ..PublishOptions::default()
    };
    let helm = find_helm(args.helm.as_deref());
    let product = ProductInfo {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
    };

    // Plan every bundle before writing any, so that a bad reference fails
    // the run before bytes move.
    let mut plans: Vec<BundlePlan> = Vec::new();
    for entry in &manifest.charts {
        let auth = manifest.chart_auth.get(&entry.name);
        let (chart, tgz) =
            crate::chart::repo::fetch_with_auth(entry, &base_dir, &client, &fetch_opts, auth)
                .await
                .with_context(|| {
                    format!(
                        "fetching chart {} from the bundle manifest {}",
                        entry.name,
                        manifest.file.display()
                    )
                })?;
        let (hints, extra_images) = chart_hints(entry, &chart, &base_dir, helm.as_deref())?;
        let mut refs: Vec<Reference> = Vec::new();
        for h in hints
            .resolve(&chart)
            .with_context(|| format!("resolving image hints of chart {}", chart.name))?
        {
            refs.push(h.reference);
        }
        refs.extend(extra_images);
        for s in &entry.images {
            refs.push(Reference::parse(s).with_context(|| {
                format!(
                    "chart {} in {}: images",
                    entry.name,
                    manifest.file.display()
                )
            })?);
        }
        // Images the entry's archives provide come from disk; the archives'
        // images are part of the chart even when no hint names them.
        let mut local: HashMap<String, ResolvedImage> = HashMap::new();
        for a in &entry.image_archives {
            let path = if a.is_absolute() {
                a.clone()
            } else {
                base_dir.join(a)
            };
            for img in resolve_archive_images(&path, platforms.as_deref())? {
                refs.push(img.spec.reference.clone());
                local.insert(img.spec.reference.to_string(), img);
            }
        }
        dedup_refs(&mut refs);
        progress.println(format!(
            "chart {} {}: {} images",
            chart.name,
            chart.version,
            refs.len()
        ));
        let mut images = Vec::new();
        for r in &refs {
            match local.remove(&r.to_string()) {
                Some(img) => images.push(img),
                None => {
                    images.push(resolve_registry_image(&client, r, platforms.as_deref()).await?)
                }
            }
        }
        let spec_images = collect(&mut images);
        let (specs, blob_origins) = spec_images;
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
            product: Some(product.clone()),
            hints: hints.to_yaml(),
            chart_files: chart.files.clone(),
            images: specs,
            blobs,
        };
        let path = args
            .output
            .join(format!("{}_{}.bundle.tar", chart.name, chart.version));
        plans.push(BundlePlan {
            path,
            spec,
            origins: blob_origins,
            chart_archive: Some((format!("{}-{}.tgz", chart.name, chart.version), tgz)),
        });
    }
    if !manifest.images.is_empty() {
        let mut images = Vec::new();
        for src in &manifest.images {
            match src {
                ImageSource::Reference(s) => {
                    let r = Reference::parse(s).with_context(|| {
                        format!("{}: spec.images: {s:?}", manifest.file.display())
                    })?;
                    images.push(resolve_registry_image(&client, &r, platforms.as_deref()).await?);
                }
                ImageSource::Archive(path) => {
                    let path = if path.is_absolute() {
                        path.clone()
                    } else {
                        base_dir.join(path)
                    };
                    images.extend(resolve_archive_images(&path, platforms.as_deref())?);
                }
            }
        }
        let (specs, blob_origins) = collect(&mut images);
        let mut blobs = BTreeMap::new();
        for (d, _) in &blob_origins {
            blobs.insert(d.digest.clone(), d.size);
        }
        let spec = BundleSpec {
            chart: None,
            product: Some(product.clone()),
            hints: String::new(),
            chart_files: Vec::new(),
            images: specs,
            blobs,
        };
        let path = args.output.join(format!(
            "{}-images_{}.bundle.tar",
            manifest.name, manifest.version
        ));
        plans.push(BundlePlan {
            path,
            spec,
            origins: blob_origins,
            chart_archive: None,
        });
    }

    let mut summary = PackSummary::default();
    // digest -> (bundle path, offset) of blobs already written in this run.
    let written: Arc<Mutex<HashMap<Digest, (PathBuf, u64)>>> = Arc::default();
    let mut package_members: Vec<PathBuf> = Vec::new();
    for BundlePlan {
        path,
        spec,
        origins,
        chart_archive,
    } in plans
    {
        crate::interrupt::doing(format!("writing {}", path.display()));
        // Shared with the blob tasks; unwrapped again for commit.
        let pending = Arc::new(
            writer::begin(&path, &spec).with_context(|| format!("writing {}", path.display()))?,
        );
        let origin_by_digest: HashMap<Digest, BlobOrigin> =
            origins.into_iter().map(|(d, o)| (d.digest, o)).collect();
        let total: u64 = pending.slots.iter().map(|s| s.size).sum();
        progress.add_total(total);
        let mut tasks = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
        for slot in pending.slots.clone() {
            let origin = origin_by_digest
                .get(&slot.digest)
                .cloned()
                .with_context(|| format!("internal: no source for blob {}", slot.digest))?;
            // A blob an earlier bundle of this run holds is copied from there.
            let local = written.lock().unwrap().get(&slot.digest).cloned();
            let (client, pending, sem, progress) = (
                client.clone(),
                pending.clone(),
                sem.clone(),
                progress.clone(),
            );
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let mut transfer = progress.transfer(&slot.digest.to_string(), slot.size);
                let from_file = match (local, origin) {
                    (Some((src, off)), _) => Some((src, off)),
                    (None, BlobOrigin::File { path, offset, len }) => {
                        if len != slot.size {
                            bail!(
                                "blob {} in {} has size {len}, its manifest says {}",
                                slot.digest,
                                path.display(),
                                slot.size
                            );
                        }
                        Some((path, offset))
                    }
                    (
                        None,
                        BlobOrigin::Registry {
                            registry,
                            repository,
                            desc,
                        },
                    ) => {
                        let f = pending.file.clone();
                        let base = slot.offset;
                        let mut sink = move |off: u64, chunk: &[u8]| -> anyhow::Result<()> {
                            f.write_all_at(chunk, base + off)
                                .context("writing blob into the bundle")?;
                            Ok(())
                        };
                        // pull_blob checks size and sha256 itself.
                        client
                            .pull_blob(
                                &registry,
                                &repository,
                                &desc,
                                &mut sink,
                                Some(&mut transfer),
                            )
                            .await
                            .with_context(|| {
                                format!("pulling blob {} of {registry}/{repository}", desc.digest)
                            })?;
                        None
                    }
                };
                let copied_locally = from_file.is_some();
                if let Some((src, off)) = from_file {
                    // Disk to disk, blocking: off the async workers.
                    let (pending, s) = (pending.clone(), slot.clone());
                    tokio::task::spawn_blocking(move || pending.fill_from_file(&s, &src, off))
                        .await
                        .context("blob copy panicked")??;
                    transfer.inc(slot.size);
                }
                transfer.finish("packed");
                anyhow::Ok((slot, copied_locally))
            });
        }
        let mut copied = 0u64;
        let mut filled = Vec::new();
        while let Some(res) = tasks.join_next().await {
            let (slot, local) = res
                .context("blob task panicked")?
                .with_context(|| format!("writing {}", path.display()))?;
            if local {
                copied += slot.size;
            }
            filled.push(slot);
        }
        summary.bytes_copied_locally += copied;
        let pending = Arc::try_unwrap(pending)
            .map_err(|_| anyhow::anyhow!("internal: a blob task still holds {}", path.display()))?;
        let final_path = pending.commit()?;
        {
            let mut w = written.lock().unwrap();
            for s in &filled {
                w.entry(s.digest.clone())
                    .or_insert((final_path.clone(), s.offset));
            }
        }
        progress.println(format!("wrote {}", final_path.display()));
        summary.bundles.push(BundleSummary {
            path: final_path.clone(),
            chart: spec
                .chart
                .as_ref()
                .map(|c| format!("{}-{}", c.name, c.version)),
            images: spec
                .images
                .iter()
                .map(|i| i.reference.to_string())
                .collect(),
            blobs: filled.len(),
            bytes: std::fs::metadata(&final_path).map(|m| m.len()).unwrap_or(0),
        });
        package_members.push(final_path);
        if let Some((name, tgz)) = chart_archive {
            let p = args.output.join(&name);
            write_atomic(&p, &tgz)?;
            summary.chart_archives.push(p.clone());
            package_members.push(p);
        }
    }
    progress.finish();

    let package = args.output.join(format!(
        "{}_{}_{}.tar",
        manifest.name, manifest.version, args.arch
    ));
    write_package(&package, &package_members)?;
    summary.package = Some(package.clone());
    let stats = client.stats();
    summary.bytes_downloaded = stats.bytes_downloaded;
    summary.retries = stats.retries;
    summary.seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for b in &summary.bundles {
            println!(
                "{}  {} images, {} blobs, {}",
                b.path.display(),
                b.images.len(),
                b.blobs,
                crate::progress::human_bytes(b.bytes)
            );
        }
        println!("{}  (offline package)", package.display());
    }
    Ok(())
}

/// `--platform` flags override the manifest; `None` keeps every platform.
fn platform_selection(
    flags: &[String],
    manifest: &BundleManifest,
) -> anyhow::Result<Option<Vec<Platform>>> {
    if flags.is_empty() {
        return Ok(manifest.platforms.clone());
    }
    if flags.iter().any(|f| f == "all") {
        return Ok(None);
    }
    flags
        .iter()
        .map(|f| {
            Platform::parse(f).map_err(|e| crate::error::input_error(format!("--platform: {e}")))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

fn find_helm(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
}

/// The hints for a chart: the manifest's hints file, else the chart's
/// `.relok8s-images.yaml`, else discovered. Also returns images found only in
/// rendered templates (packed, but not relocatable through values).
fn chart_hints(
    entry: &ChartEntry,
    chart: &crate::chart::Chart,
    base_dir: &Path,
    helm: Option<&Path>,
) -> anyhow::Result<(Hints, Vec<Reference>)> {
    if let Some(h) = &entry.hints {
        let path = if h.is_absolute() {
            h.clone()
        } else {
            base_dir.join(h)
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading hints file {}", path.display()))?;
        return Ok((
            Hints::parse(&text)
                .with_context(|| format!("parsing hints file {}", path.display()))?,
            Vec::new(),
        ));
    }
    if let Some((_, bytes)) = chart
        .files
        .iter()
        .find(|(p, _)| p == ".relok8s-images.yaml")
    {
        let text = String::from_utf8_lossy(bytes);
        return Ok((
            Hints::parse(&text)
                .with_context(|| format!("parsing .relok8s-images.yaml of chart {}", chart.name))?,
            Vec::new(),
        ));
    }
    let found = crate::chart::discover::discover(chart, helm)
        .with_context(|| format!("discovering images of chart {}", chart.name))?;
    Ok((found.hints, found.extra_images))
}

fn describe_source(entry: &ChartEntry) -> String {
    use crate::config::manifest::ChartSource;
    match &entry.source {
        ChartSource::Repo(u) | ChartSource::Oci(u) => u.clone(),
        ChartSource::Path(p) => p.display().to_string(),
    }
}

fn dedup_refs(refs: &mut Vec<Reference>) {
    let mut seen = std::collections::HashSet::new();
    refs.retain(|r| seen.insert(r.to_string()));
}

/// Split resolved images into bundle image specs and the blob sources
/// (deduplicated by digest: every blob is stored once per bundle).
fn collect(images: &mut Vec<ResolvedImage>) -> (Vec<ImageSpec>, Vec<(Descriptor, BlobOrigin)>) {
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

/// Fetch an image's manifest (and, for an index, the child manifests that
/// are kept) from its registry.
async fn resolve_registry_image(
    client: &RegistryClient,
    r: &Reference,
    platforms: Option<&[Platform]>,
) -> anyhow::Result<ResolvedImage> {
    let fetched = client
        .get_manifest(&r.registry, &r.repository, &r.manifest_reference())
        .await
        .with_context(|| format!("fetching the manifest of {r}"))?;
    let root = ManifestDoc {
        digest: fetched.digest.clone(),
        media_type: fetched.media_type.clone(),
        bytes: fetched.bytes.clone(),
    };
    let parsed = media::parse(&root.bytes, Some(&root.media_type))
        .with_context(|| format!("manifest of {r}"))?;
    let origin = |d: &Descriptor| BlobOrigin::Registry {
        registry: r.registry.clone(),
        repository: r.repository.clone(),
        desc: d.clone(),
    };
    match parsed {
        Parsed::Manifest { config, layers, .. } => {
            let docker = Some((
                config.digest.clone(),
                layers.iter().map(|l| l.digest.clone()).collect(),
            ));
            let blobs = std::iter::once(&config)
                .chain(layers.iter())
                .map(|d| (d.clone(), origin(d)))
                .collect();
            let platform = platforms.and_then(|p| (p.len() == 1).then(|| p[0].clone()));
            Ok(ResolvedImage {
                spec: ImageSpec {
                    reference: r.clone(),
                    root,
                    children: Vec::new(),
                    platform,
                    source_index: None,
                    docker,
                },
                blobs,
            })
        }
        Parsed::Index { manifests, .. } => {
            let chosen: Vec<&Descriptor> = match platforms {
                Some(ps) if ps.len() == 1 => {
                    let want = &ps[0];
                    let m = media::find_platform(&manifests, want, &r.to_string())
                        .context("choose another platform with --platform or spec.platforms")?;
                    vec![m]
                }
                // Several platforms, or all: keep the whole index so that
                // its digest survives (a filtered index would be a new one).
                _ => manifests.iter().collect(),
            };
            let mut children = Vec::new();
            let mut blobs = Vec::new();
            let mut docker = None;
            for m in &chosen {
                let child = client
                    .get_manifest(&r.registry, &r.repository, &m.digest.to_string())
                    .await
                    .with_context(|| {
                        format!(
                            "fetching {} manifest {} of {r}",
                            m.platform
                                .as_ref()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            m.digest
                        )
                    })?;
                let parsed = media::parse(&child.bytes, Some(&child.media_type))?;
                let Parsed::Manifest { config, layers, .. } = parsed else {
                    bail!("{r}: nested index {} is not supported", m.digest);
                };
                let preferred = platforms
                    .and_then(|p| p.first())
                    .cloned()
                    .unwrap_or(Platform {
                        os: "linux".into(),
                        architecture: "amd64".into(),
                        variant: None,
                    });
                if docker.is_none() || m.platform.as_ref().is_some_and(|p| preferred.matches(p)) {
                    docker = Some((
                        config.digest.clone(),
                        layers.iter().map(|l| l.digest.clone()).collect(),
                    ));
                }
                for d in std::iter::once(&config).chain(layers.iter()) {
                    blobs.push((d.clone(), origin(d)));
                }
                children.push(ManifestDoc {
                    digest: child.digest,
                    media_type: child.media_type,
                    bytes: child.bytes,
                });
            }
            if chosen.len() == 1 && platforms.is_some_and(|p| p.len() == 1) {
                let only = children.pop().unwrap();
                let platform = chosen[0].platform.clone();
                Ok(ResolvedImage {
                    spec: ImageSpec {
                        reference: r.clone(),
                        root: only,
                        children: Vec::new(),
                        platform,
                        source_index: Some(root.digest.clone()),
                        docker,
                    },
                    blobs,
                })
            } else {
                Ok(ResolvedImage {
                    spec: ImageSpec {
                        reference: r.clone(),
                        root,
                        children,
                        platform: None,
                        source_index: None,
                        docker,
                    },
                    blobs,
                })
            }
        }
    }
}

/// Images of a `docker save` archive or an OCI layout (dir or tar).
fn resolve_archive_images(
    path: &Path,
    platforms: Option<&[Platform]>,
) -> anyhow::Result<Vec<ResolvedImage>> {
    crate::file_kind::check_path(path, "image archive", true)?;
    let images = archive::open_archive(path)
        .with_context(|| format!("reading image archive {}", path.display()))?;
    let mut out = Vec::new();
    for img in images {
        let reference = img.reference.clone().with_context(|| format!("an image in {} has no name (no RepoTags / ref.name annotation); name it before packing", path.display()))?;
        let origin_of = |loc: &archive::BlobLocation| match loc {
            archive::BlobLocation::File { path, offset, len } => BlobOrigin::File {
                path: path.clone(),
                offset: *offset,
                len: *len,
            },
        };
        let mut blobs: Vec<(Descriptor, BlobOrigin)> = img
            .blobs
            .iter()
            .map(|(d, l)| (d.clone(), origin_of(l)))
            .collect();
        let want = platforms.and_then(|p| (p.len() == 1).then(|| p[0].clone()));
        let spec = match (img.root.parse()?, want) {
            // One platform of an index: that platform's manifest alone,
            // with only its blobs; the index digest goes to the digest map.
            (Parsed::Index { manifests, .. }, Some(w)) => {
                let desc = media::find_platform(&manifests, &w, &reference.to_string())
                    .with_context(|| format!("in image archive {}", path.display()))?;
                let child = img
                    .children
                    .iter()
                    .find(|c| c.digest == desc.digest)
                    .with_context(|| {
                        format!(
                            "{reference}: the {w} manifest {} is not in {}",
                            desc.digest,
                            path.display()
                        )
                    })?
                    .clone();
                let Parsed::Manifest { config, layers, .. } = child.parse()? else {
                    bail!("nested index in {}", path.display())
                };
                let keep: std::collections::HashSet<Digest> =
                    std::iter::once(config.digest.clone())
                        .chain(layers.iter().map(|l| l.digest.clone()))
                        .collect();
                blobs.retain(|(d, _)| keep.contains(&d.digest));
                ImageSpec {
                    reference,
                    platform: desc.platform.clone(),
                    root: child,
                    children: Vec::new(),
                    source_index: Some(img.root.digest.clone()),
                    docker: Some((
                        config.digest,
                        layers.into_iter().map(|l| l.digest).collect(),
                    )),
                }
            }
            // Everything else is kept as the archive has it.
            _ => img.image_spec(reference)?,
        };
        out.push(ResolvedImage { spec, blobs });
    }
    Ok(out)
}

/// Unique temp name, removed on failure (a full disk must not leave a
/// partial file behind either) and on SIGINT/SIGTERM.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::atomic_file::write_atomic(path, bytes)
}

/// The outer offline package: an uncompressed, deterministic tar of the
/// bundles and chart archives (kernel-side copies: `std::io::copy` between
/// files uses copy_file_range on Linux).
fn write_package(path: &Path, members: &[PathBuf]) -> anyhow::Result<()> {
    let tmp = crate::atomic_file::temp_path_for(path);
    let result = (|| -> anyhow::Result<()> {
        let out = crate::atomic_file::create_tracked(&tmp)?;
        let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
        let mut sorted: Vec<&PathBuf> = members.iter().collect();
        sorted.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
        for m in sorted {
            let name = m
                .file_name()
                .context("member without file name")?
                .to_string_lossy()
                .into_owned();
            let mut f =
                std::fs::File::open(m).with_context(|| format!("opening {}", m.display()))?;
            let mut h = tar::Header::new_gnu();
            h.set_size(
                f.metadata()
                    .with_context(|| format!("reading {}", m.display()))?
                    .len(),
            );
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut h, &name, &mut f)
                .with_context(|| format!("adding {name} to the package"))?;
        }
        let w = builder.into_inner()?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    })();
    let result = result.and_then(|()| {
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        crate::interrupt::untrack(&tmp);
        return Err(e.context(format!("writing the offline package {}", path.display())));
    }
    crate::interrupt::untrack(&tmp);
    Ok(())
}
