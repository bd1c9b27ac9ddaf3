//! `bundler sync --config load-image.yaml`: verify bundles, push their
//! images to the private registry under the rewritten references, relocate
//! their charts and publish them to the target chart repository.
//!
//! Order of work, so that a failure leaves nothing half-done that matters:
//! 1. every bundle is opened (tar index only) and verified before anything
//!    is pushed; a damaged bundle stops the run before the first request;
//! 2. images move through [`crate::transfer`]: blobs first (skipped when
//!    present, mounted when another repository of the registry has them,
//!    else streamed from the bundle file), then child manifests, then the
//!    tagged manifest: a tag never points at missing blobs;
//! 3. charts are relocated and packaged with step 1 (so a chart or hints
//!    problem also stops the run before anything is pushed), and published
//!    only after all their images are in.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::bundle::location::BundleLocation;
use crate::bundle::reader::BundleReader;
use crate::chart::hints::Hints;
use crate::chart::repo::{PublishOptions, PublishOutcome};
use crate::config::load_image::{RepoKind, Source, SyncConfig};
use crate::oci::media::Platform;
use crate::oci::registry::{ClientOptions, RegistryClient};
use crate::oci::Digest;
use crate::progress::Progress;
use crate::state::{SyncState, SyncedChart};
use crate::transfer::{self, ImageJob};

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncSummary {
    pub dry_run: bool,
    pub bundles: Vec<String>,
    pub images: Vec<ImageLine>,
    pub images_pushed: usize,
    pub images_unchanged: usize,
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    pub bytes_uploaded: u64,
    pub retries: u64,
    pub charts: Vec<ChartLine>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageLine {
    pub from: String,
    pub to: String,
    pub digest: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartLine {
    pub name: String,
    pub version: String,
    pub target: String,
    pub outcome: String,
}

/// A bundle that passed the filters, with its chart identity.
struct SelectedBundle {
    reader: BundleReader,
    chart: Option<(String, String)>,
}

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// The load-image.yaml (charts-syncer schema).
    #[arg(long, short = 'c', default_value = "load-image.yaml")]
    pub config: std::path::PathBuf,
    /// Push nothing; print the plan.
    #[arg(long)]
    pub dry_run: bool,
    /// Create missing Harbor projects (`--auto-create-repository[=BOOL]`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL", value_parser = clap::value_parser!(bool))]
    pub auto_create_repository: Option<bool>,
    /// Push only these platforms of multi-platform images (default: what the bundle holds).
    #[arg(long)]
    pub platform: Vec<String>,
    /// Do not push images; relocate and publish charts only.
    #[arg(long)]
    pub skip_images: bool,
    /// Print every image reference (from -> to) and exit.
    #[arg(long)]
    pub print_images: bool,
    /// Replace a chart version already in the target whose content differs.
    #[arg(long)]
    pub force: bool,
    /// Blobs moving at once (1 to 1024).
    #[arg(long, default_value_t = 8, value_parser = crate::cli::concurrency_parser())]
    pub concurrency: usize,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transport: crate::oci::TransportArgs,
}

pub async fn run(args: &SyncArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let config = SyncConfig::load(&args.config)?;
    let insecure = args.transport.insecure();
    let progress = Progress::auto(args.json || args.print_images);
    let platforms: Vec<Platform> = args
        .platform
        .iter()
        .filter(|p| p.as_str() != "all")
        .map(|p| {
            Platform::parse(p).map_err(|e| crate::error::input_error(format!("--platform: {e}")))
        })
        .collect::<anyhow::Result<_>>()?;

    let locations = match &config.source {
        Source::Bundles(p) => list_bundles(p)?,
        Source::Repo { .. } => bail!(
            "{}: source.repo: syncing straight from a chart repository is not supported by bundler; \
             run `bundler pack` on the connected side and point source.intermediateBundlesPath at the bundles",
            config.file.display()
        ),
    };
    if locations.is_empty() {
        bail!("no *.bundle.tar found in {}", source_display(&config));
    }

    // 1. Index, filter and verify every bundle before anything moves.
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
        selected.push(SelectedBundle { reader, chart });
    }
    // Charts need target.repo; image-only products do not.
    let charts: Vec<(String, String)> = selected.iter().filter_map(|b| b.chart.clone()).collect();
    config.chart_target(&charts)?;
    for b in &selected {
        crate::bundle::verify::verify(&b.reader, &progress).with_context(|| {
            format!(
                "bundle {} failed verification; nothing was pushed",
                b.reader.label
            )
        })?;
    }

    let client = RegistryClient::new(
        ClientOptions {
            insecure,
            ca_file: args.transport.ca_file.clone(),
            max_connections: args.concurrency.max(1) * 2,
            ..env_tuning(ClientOptions::default())
        },
        credential_store(&config),
    )?;

    // 2. Plan images.
    let mut jobs: Vec<ImageJob> = Vec::new();
    let mut planned = std::collections::HashSet::new();
    // Per bundle: index digest -> platform manifest digest chosen by
    // --platform (for digest-pinned references in the chart values).
    let mut platform_map: HashMap<usize, HashMap<Digest, Digest>> = HashMap::new();
    let mut summary = SyncSummary {
        dry_run: args.dry_run,
        ..SyncSummary::default()
    };
    for (bi, b) in selected.iter().enumerate() {
        summary.bundles.push(b.reader.label.clone());
        for img in &b.reader.images {
            let rewritten = config
                .rewrite
                .rewrite(&img.reference)
                .with_context(|| format!("bundle {}: image {}", b.reader.label, img.reference))?;
            let img = match select_platform(img, &platforms)? {
                Some(chosen) => {
                    platform_map
                        .entry(bi)
                        .or_default()
                        .insert(img.root.digest.clone(), chosen.root.digest.clone());
                    chosen
                }
                None => img.clone(),
            };
            summary.images.push(ImageLine {
                from: img.reference.to_string(),
                to: rewritten.target.to_string(),
                digest: img.root.digest.to_string(),
            });
            // The same image in two bundles (a chart bundle and the
            // image-only bundle) is pushed once.
            if !planned.insert((rewritten.target.to_string(), img.root.digest.clone())) {
                continue;
            }
            jobs.push(ImageJob {
                bundle: bi,
                image: img,
                target: rewritten.target,
            });
        }
    }
    // Relocate and package every chart now (no network): a chart or hints
    // problem stops the run before the first image is pushed.
    let mut prepared = Vec::with_capacity(selected.len());
    for (bi, b) in selected.iter().enumerate() {
        prepared.push(
            prepare_chart(b, &config, platform_map.get(&bi)).with_context(|| {
                format!("bundle {} was refused; nothing was pushed", b.reader.label)
            })?,
        );
    }

    if args.print_images {
        for l in &summary.images {
            println!("{} -> {}", l.from, l.to);
        }
        return Ok(());
    }

    let target_desc = describe_target(&config);
    if args.dry_run {
        for l in &summary.images {
            println!("image {} -> {}", l.from, l.to);
        }
        for b in &selected {
            if let Some((n, v)) = &b.chart {
                println!("chart {n} {v} -> {target_desc}");
                summary.charts.push(ChartLine {
                    name: n.clone(),
                    version: v.clone(),
                    target: target_desc.clone(),
                    outcome: "planned".into(),
                });
            }
        }
        summary.seconds = started.elapsed().as_secs_f64();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        return Ok(());
    }

    // 3. Push images (into Harbor projects made first when asked to).
    if !args.skip_images && !jobs.is_empty() && args.auto_create_repository.unwrap_or(false) {
        create_image_projects(
            &config,
            &jobs,
            insecure,
            args.transport.ca_file.clone(),
            &progress,
        )
        .await?;
    }
    if !args.skip_images && !jobs.is_empty() {
        let readers: Vec<&BundleReader> = selected.iter().map(|b| &b.reader).collect();
        let report =
            transfer::push_images(&client, &readers, jobs, args.concurrency.max(1), &progress)
                .await?;
        summary.images_pushed = report.images_pushed;
        summary.images_unchanged = report.images_unchanged;
        summary.blobs_uploaded = report.blobs_uploaded;
        summary.blobs_skipped = report.blobs_skipped;
        summary.blobs_mounted = report.blobs_mounted;
    }

    // 4. Publish the charts relocated in step 1.
    let publish_opts = PublishOptions {
        insecure,
        ca_file: args.transport.ca_file.clone(),
        force: args.force,
        auto_create_repository: args.auto_create_repository.unwrap_or(false),
    };
    let image_registry = config.image_registry().unwrap_or_default();
    let mut synced = Vec::new();
    for (b, prep) in selected.iter().zip(prepared) {
        let (
            Some((name, version)),
            Some(PreparedChart {
                chart,
                tgz,
                release,
            }),
        ) = (&b.chart, prep)
        else {
            continue;
        };
        let Some(target_repo) = config.chart_target(&charts)? else {
            continue;
        };
        let outcome =
            crate::chart::repo::publish(target_repo, &chart, &tgz, &client, &publish_opts)
                .await
                .with_context(|| format!("publishing chart {name} {version} to {target_desc}"))?;
        let outcome_s = match outcome {
            PublishOutcome::Published => "published",
            PublishOutcome::AlreadyPresent => "already present",
        };
        progress.println(format!(
            "chart {name} {version}: {outcome_s} ({target_desc})"
        ));
        summary.charts.push(ChartLine {
            name: name.clone(),
            version: version.clone(),
            target: target_desc.clone(),
            outcome: outcome_s.into(),
        });
        synced.push(synced_chart(
            name,
            version,
            &image_registry,
            release,
            target_repo,
        ));
    }
    progress.finish();
    if !synced.is_empty() {
        SyncState::record(&config.file, synced)?;
    }

    let stats = client.stats();
    summary.bytes_uploaded = stats.bytes_uploaded;
    summary.retries = stats.retries;
    summary.seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "synced {} images ({} pushed, {} unchanged; blobs: {} uploaded, {} mounted, {} already there; {} moved) and {} charts in {:.1}s",
            summary.images.len(),
            summary.images_pushed,
            summary.images_unchanged,
            summary.blobs_uploaded,
            summary.blobs_mounted,
            summary.blobs_skipped,
            crate::progress::human_bytes(summary.bytes_uploaded),
            summary.charts.len(),
            summary.seconds
        );
    }
    Ok(())
}

/// A bundle's chart, relocated and packaged, ready to publish.
struct PreparedChart {
    chart: crate::chart::Chart,
    tgz: Vec<u8>,
    release: Option<crate::bundle::format::ReleaseInfo>,
}

/// Load, relocate and package the chart of a bundle (None: no chart).
fn prepare_chart(
    b: &SelectedBundle,
    config: &SyncConfig,
    platform_map: Option<&HashMap<Digest, Digest>>,
) -> anyhow::Result<Option<PreparedChart>> {
    let Some((name, version)) = &b.chart else {
        return Ok(None);
    };
    let files = b.reader.chart_files()?;
    if files.is_empty() {
        return Ok(None);
    }
    let mut chart = crate::chart::Chart::from_files(files)
        .with_context(|| format!("loading the chart of bundle {}", b.reader.label))?;
    let hints = match b.reader.hints()? {
        Some(text) => {
            Hints::parse(&text).with_context(|| format!("{}: hints.yaml", b.reader.label))?
        }
        None => Hints::default(),
    };
    let mut digest_map = digest_map(&b.reader);
    digest_map.extend(platform_map.cloned().unwrap_or_default());
    let meta_chart = b.reader.meta.as_ref().and_then(|m| m.chart.clone());
    let source_repo = meta_chart
        .as_ref()
        .and_then(|c| c.source.clone())
        .filter(|s| s.contains("://"));
    let target_url = config
        .target_repo
        .as_ref()
        .map(|r| r.url.clone())
        .unwrap_or_default();
    let repos = source_repo.as_deref().map(|s| (s, target_url.as_str()));
    let relocation =
        crate::chart::relocate::relocate(&mut chart, &hints, &config.rewrite, &digest_map, repos)
            .with_context(|| format!("relocating chart {name} {version} from {}", b.reader.label))?;
    tracing::debug!("relocated {name} {version}:\n{}", relocation.diff);
    let tgz = crate::chart::package::package_tgz(&chart)?;
    Ok(Some(PreparedChart {
        chart,
        tgz,
        release: meta_chart.and_then(|c| c.release),
    }))
}

/// Test and tuning knobs read from the environment (not flags: they are
/// for tests that need chunked uploads of small blobs, and for sites that
/// must tune around a proxy's body-size limit):
/// - `BUNDLER_CHUNK_THRESHOLD` (bytes): blobs larger than this go up as
///   resumable chunked uploads (default 256 MiB);
/// - `BUNDLER_CHUNK_SIZE` (bytes): bytes per PATCH of a chunked upload
///   (default 64 MiB).
///
/// Values that do not parse as a positive integer are ignored (warned).
fn env_tuning(mut opts: ClientOptions) -> ClientOptions {
    let read = |name: &str| -> Option<u64> {
        let v = std::env::var(name).ok()?;
        match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                tracing::warn!("ignoring {name}={v:?}: not a positive number of bytes");
                None
            }
        }
    };
    if let Some(n) = read("BUNDLER_CHUNK_THRESHOLD") {
        opts.chunk_threshold = n;
    }
    if let Some(n) = read("BUNDLER_CHUNK_SIZE") {
        opts.chunk_size = n;
    }
    opts
}

/// The bundles of `source.intermediateBundlesPath` (a directory, a bundle
/// or an offline package; see [`crate::bundle::location`]).
fn list_bundles(path: &Path) -> anyhow::Result<Vec<BundleLocation>> {
    std::fs::metadata(path).with_context(|| format!("source.intermediateBundlesPath {} does not exist (relative paths are from the current directory)", path.display()))?;
    crate::bundle::location::list_bundles(path)
}

fn source_display(config: &SyncConfig) -> String {
    match &config.source {
        Source::Bundles(p) => p.display().to_string(),
        Source::Repo { repo, .. } => repo.url.clone(),
    }
}

/// index digest → platform manifest digest kept, from bundle.json.
fn digest_map(reader: &BundleReader) -> HashMap<Digest, Digest> {
    reader
        .meta
        .as_ref()
        .map(|m| {
            m.images
                .iter()
                .filter_map(|i| i.source_index.clone().map(|s| (s, i.digest.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn describe_target(config: &SyncConfig) -> String {
    let Some(r) = &config.target_repo else {
        return "no chart repository (target.repo not set)".into();
    };
    match r.kind {
        RepoKind::Local => format!(
            "LOCAL {}",
            r.path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        RepoKind::Oci => format!("OCI {}", r.url),
        RepoKind::Harbor => format!("HARBOR {}", r.url),
        RepoKind::Chartmuseum => format!("CHARTMUSEUM {}", r.url),
        RepoKind::Helm => format!("HELM {}", r.url),
    }
}

fn synced_chart(
    name: &str,
    version: &str,
    registry: &str,
    release: Option<crate::bundle::format::ReleaseInfo>,
    r: &crate::config::load_image::RepoSpec,
) -> SyncedChart {
    let (kind, chart_ref, repo_url) = match r.kind {
        RepoKind::Local => {
            let dir = r.path.clone().unwrap_or_default();
            let abs = std::fs::canonicalize(&dir).unwrap_or(dir);
            (
                "LOCAL",
                abs.join(format!("{name}-{version}.tgz"))
                    .display()
                    .to_string(),
                None,
            )
        }
        RepoKind::Oci => {
            // Validated when the config was loaded.
            let loc = r.oci_location().unwrap_or_default();
            let path = if loc.path.is_empty() {
                String::new()
            } else {
                format!("/{}", loc.path)
            };
            ("OCI", format!("oci://{}{path}/{name}", loc.registry), None)
        }
        RepoKind::Harbor => ("HARBOR", name.to_string(), Some(r.url.clone())),
        RepoKind::Chartmuseum => ("CHARTMUSEUM", name.to_string(), Some(r.url.clone())),
        RepoKind::Helm => ("HELM", name.to_string(), Some(r.url.clone())),
    };
    SyncedChart {
        name: name.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        chart_ref,
        repo_url,
        registry: registry.to_string(),
        release,
        synced_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }
}

/// The image registry's credentials (`target.containers.auth`), plus the
/// chart repository's (`target.repo.auth`) for its own host: OCI and
/// Harbor >= 2.8 chart pushes go through the same registry client.
fn credential_store(config: &SyncConfig) -> crate::oci::auth::CredentialStore {
    let mut store = config.credential_store();
    let Some(repo) = &config.target_repo else {
        return store;
    };
    let host = match repo.kind {
        RepoKind::Oci => repo.oci_location().map(|l| l.registry),
        RepoKind::Harbor => crate::chart::repo::parse_harbor_url(&repo.url)
            .ok()
            .map(|(_, host, _)| host),
        _ => None,
    };
    if let (Some(auth), Some(host)) = (&repo.auth, host) {
        store.explicit.entry(host).or_insert_with(|| auth.clone());
    }
    store
}

/// `--auto-create-repository`: Harbor refuses pushes into a project that
/// does not exist, so create the project (first path segment) of every image
/// target. A registry that is not a Harbor (404 on the project API) is left
/// alone: plain registries create repositories on push.
async fn create_image_projects(
    config: &SyncConfig,
    jobs: &[ImageJob],
    insecure: bool,
    ca_file: Option<PathBuf>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let opts = PublishOptions {
        insecure,
        ca_file,
        ..PublishOptions::default()
    };
    let http = crate::chart::repo::http_client(&opts)?;
    let store = credential_store(config);
    let mut seen = std::collections::BTreeSet::new();
    for j in jobs {
        let project = j
            .target
            .repository
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        if project.is_empty() || !seen.insert((j.target.registry.clone(), project.clone())) {
            continue;
        }
        let auth = store.lookup(&j.target.registry);
        let mut last_err = None;
        // https first; plain http only when --insecure allows it.
        let schemes: &[&str] = if insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        for scheme in schemes {
            let origin = format!("{scheme}://{}", j.target.registry);
            match crate::chart::repo::ensure_harbor_project(&http, &origin, &project, auth.as_ref())
                .await
            {
                Ok(crate::chart::repo::ProjectOutcome::Created) => {
                    progress.println(format!(
                        "created Harbor project {project} on {}",
                        j.target.registry
                    ));
                    last_err = None;
                    break;
                }
                Ok(_) => {
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            return Err(e.context(format!("--auto-create-repository on {}", j.target.registry)));
        }
    }
    Ok(())
}

/// `--platform os/arch` (one): an image kept in the bundle as a whole
/// index is pushed as the chosen platform's manifest alone (byte for byte,
/// its own digest) with only that platform's blobs. Several platforms keep
/// the whole index: a filtered index would get a new digest.
fn select_platform(
    img: &crate::bundle::reader::BundleImage,
    platforms: &[Platform],
) -> anyhow::Result<Option<crate::bundle::reader::BundleImage>> {
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
    Ok(Some(crate::bundle::reader::BundleImage {
        root: child.clone(),
        children: Vec::new(),
        blobs,
        ..img.clone()
    }))
}
