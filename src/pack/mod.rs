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
//!
//! The steps live in submodules by concern: `plan` decides every bundle
//! (and prints the `--print-images` listing), `resolve` turns references
//! and archives into manifests and blob sources, `write` fills the bundles
//! and writes the chart archives beside them, `package` writes the outer
//! offline package and holds the atomic single-file write.
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::bundle::format::ProductInfo;
use crate::bundle::writer::{BundleSpec, ImageSpec};
use crate::chart::plan::HintsSource;
use crate::chart::render_check::{self, Miss, Proof};
use crate::chart::repo::PublishOptions;
use crate::config::manifest::BundleManifest;
use crate::oci::auth::CredentialStore;
use crate::oci::media::{Descriptor, Platform};
use crate::oci::registry::{ClientOptions, RegistryClient};
use crate::progress::Progress;

mod archive_names;
mod manifests;
mod package;
mod plan;
mod referrers;
mod resolve;
mod write;

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
    /// Where the chart's hints came from.
    hints: Option<HintsSource>,
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
    /// Per chart: the relocation check (images rendered, relocated, missed).
    relocation: Vec<Proof>,
    /// Rendered images that would not be relocated.
    unrelocated: Vec<Miss>,
    /// Per `spec.manifests` entry: images found and relocated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    manifests: Vec<manifests::ManifestsSummary>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleSummary {
    path: PathBuf,
    chart: Option<String>,
    /// given, shipped or discovered (chart bundles).
    #[serde(skip_serializing_if = "Option::is_none")]
    hints: Option<HintsSource>,
    images: Vec<String>,
    blobs: usize,
    bytes: u64,
    /// Delta bundles: layers left out (the site has them).
    external_blobs: usize,
    external_bytes: u64,
    /// Signatures, attestations, SBOMs and other referrers carried.
    #[serde(skip_serializing_if = "is_zero")]
    referrers: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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
    /// Kubernetes version for `helm template` (`.Capabilities.KubeVersion`),
    /// e.g. 1.33.0: images whose tag follows the cluster version render
    /// as they will on the site.
    #[arg(long, value_name = "VERSION")]
    pub kube_version: Option<String>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print every image with where it comes from (values path, hints
    /// file, archive, rendered template) and exit; no blob is downloaded.
    #[arg(long)]
    pub print_images: bool,
    /// Plan only: like --print-images, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the bundles even when the relocated chart renders images
    /// that are not relocated (they are still reported).
    #[arg(long)]
    pub allow_unrelocated: bool,
    /// Write delta bundles: leave out the layers these files say the site
    /// has (an inventory from `bundler inventory`, an earlier offline
    /// package, bundles, or a directory of bundles), by exact digest.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub against: Vec<std::path::PathBuf>,
    /// What to carry of what refers to each image (cosign signatures,
    /// attestations, SBOMs, OCI referrers): all, signatures only, or none.
    #[arg(long, value_enum, default_value_t = crate::referrers::Mode::All)]
    pub referrers: crate::referrers::Mode,
    /// Sign package.json with this private key (PEM ECDSA P-256 or Ed25519
    /// as openssl writes them, or a cosign.key whose password is in
    /// $COSIGN_PASSWORD or $BUNDLER_SIGN_KEY_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<std::path::PathBuf>,
    /// Write the offline package as numbered volumes of at most SIZE
    /// (e.g. 4G, 700M) for removable media.
    #[arg(long, value_name = "SIZE", value_parser = package::parse_size)]
    pub split: Option<u64>,
    /// With --split: add K Reed-Solomon parity volumes; any K missing or
    /// damaged volumes can then be rebuilt.
    #[arg(long, value_name = "K", requires = "split", value_parser = clap::value_parser!(u16).range(0..=256))]
    pub parity: Option<u16>,
    #[command(flatten)]
    pub transport: crate::oci::TransportArgs,
}
/// What every step of one pack run shares: the flags, the manifest, and
/// the clients and settings derived from them.
struct PackContext<'a> {
    args: &'a PackArgs,
    manifest: &'a BundleManifest,
    /// The manifest loader already resolved every path against the
    /// manifest's directory; an empty base leaves them as they are.
    base_dir: PathBuf,
    platforms: Option<Vec<Platform>>,
    client: RegistryClient,
    progress: Progress,
    fetch_opts: PublishOptions,
    helm: Option<PathBuf>,
    /// --print-images / --dry-run: plan and print, write nothing.
    listing_only: bool,
    product: ProductInfo,
    /// Finds what refers to each image (`--referrers`).
    referrers: crate::referrers::discover::Discoverer,
    /// `--sign-key`, read before any network work.
    sign_key: Option<crate::package::sign::SigningKey>,
}

impl<'a> PackContext<'a> {
    fn new(
        args: &'a PackArgs,
        manifest: &'a BundleManifest,
        platforms: Option<Vec<Platform>>,
    ) -> anyhow::Result<Self> {
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
        let referrers = crate::referrers::discover::Discoverer::new(client.clone(), args.referrers);
        Ok(PackContext {
            args,
            manifest,
            base_dir: PathBuf::new(),
            platforms,
            client,
            progress,
            fetch_opts,
            helm: render_check::find_helm(args.helm.as_deref()),
            listing_only: args.print_images || args.dry_run,
            product: ProductInfo {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
            },
            referrers,
            sign_key: None,
        })
    }

    /// `--split` / `--parity`.
    fn split(&self) -> Option<crate::package::write::Split> {
        self.args
            .split
            .map(|volume_size| crate::package::write::Split {
                volume_size,
                parity: self.args.parity.unwrap_or(0) as usize,
            })
    }
}

pub async fn run(args: &PackArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let manifest = BundleManifest::load(&args.manifest)?;
    let platforms = platform_selection(&args.platform, &manifest)?;
    // Read before any network work: a bad --against file fails fast.
    let against = load_against(&args.against)?;
    // A bad key or a missing password fails before any network work.
    let sign_key = args
        .sign_key
        .as_deref()
        .map(crate::package::sign::load_signing_key)
        .transpose()
        .map_err(|e| crate::error::input_error(format!("{e:#}")))?;
    prepare_output(args)?;
    let mut ctx = PackContext::new(args, &manifest, platforms)?;
    ctx.sign_key = sign_key;
    let mut summary = PackSummary::default();

    // Plan every bundle before writing any, so that a bad reference fails
    // the run before bytes move.
    let mut plans: Vec<BundlePlan> = Vec::new();
    let mut listing = plan::ImageListing::default();
    let found = plan::find_all_charts(&ctx, &manifest.charts).await?;
    for (entry, found) in manifest.charts.iter().zip(found) {
        plans.extend(plan::plan_chart(&ctx, entry, found, &mut listing, &mut summary).await?);
    }
    for entry in &manifest.manifests {
        if ctx.listing_only {
            listing.manifests.push(manifests::listing(entry)?);
            continue;
        }
        let (p, s) = manifests::plan_manifests(&ctx, entry).await?;
        summary.manifests.push(s);
        plans.push(p);
    }
    if ctx.listing_only {
        return plan::print_listing(&ctx, listing).await;
    }
    // With --json, a failure prints the summary so far (the misses too).
    crate::outcome::record(&summary);
    render_check::refuse_misses(
        &summary.unrelocated,
        args.allow_unrelocated,
        "nothing was written",
    )?;
    plans.extend(plan::images_bundle_plan(&ctx).await?);
    if let Some(against) = &against {
        // Manifests bundles are always whole (see crate::manifests).
        for p in plans.iter_mut().filter(|p| p.spec.manifests.is_none()) {
            p.spec.delta = against.plan(&p.spec);
        }
    }

    package::check_free_space(&ctx, &plans)?;
    let mut staged = package::Staged::default();
    write::write_bundles(&ctx, plans, &mut summary, &mut staged).await?;
    ctx.progress.finish();
    let package = package::write_offline_package(&ctx, staged)?;
    summary.package = Some(package.clone());
    let stats = ctx.client.stats();
    summary.bytes_downloaded = stats.bytes_downloaded;
    summary.retries = stats.retries;
    summary.seconds = started.elapsed().as_secs_f64();
    print_summary(&summary, &package, args.json)
}

/// The `--against` files, read into what the site already has.
fn load_against(files: &[PathBuf]) -> anyhow::Result<Option<crate::bundle::delta::Against>> {
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(crate::bundle::delta::Against::load(files).map_err(
        |e| crate::error::input_error(format!("--against: {e:#}")),
    )?))
}

/// Check `--output`, and (unless only listing) create it, arm the
/// interrupt handler and clear partial files an earlier pack left.
fn prepare_output(args: &PackArgs) -> anyhow::Result<()> {
    if args.output.exists() && !args.output.is_dir() {
        return Err(crate::error::input_error(format!(
            "--output {}: exists and is not a directory",
            args.output.display()
        )));
    }
    // --print-images / --dry-run write nothing, not even the directory.
    if !(args.print_images || args.dry_run) {
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("creating output directory {}", args.output.display()))?;
        crate::interrupt::install("pack");
        for p in crate::interrupt::remove_stale_partials(&args.output) {
            tracing::info!(
                "removed {} (left by a pack that no longer runs)",
                p.display()
            );
        }
    }
    Ok(())
}

/// The JSON summary, or one line per bundle and the package.
fn print_summary(
    summary: &PackSummary,
    package: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        for b in &summary.bundles {
            println!(
                "{}  {} images, {} blobs, {}{}{}",
                b.path.display(),
                b.images.len(),
                b.blobs,
                crate::progress::human_bytes(b.bytes),
                if b.referrers > 0 {
                    format!(
                        ", {} referrers (signatures, attestations, SBOMs)",
                        b.referrers
                    )
                } else {
                    String::new()
                },
                if b.external_blobs > 0 {
                    format!(
                        "  (delta: {} blobs external, {} not carried)",
                        b.external_blobs,
                        crate::progress::human_bytes(b.external_bytes)
                    )
                } else {
                    String::new()
                }
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
