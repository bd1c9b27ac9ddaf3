//! `bundler sync --config load-image.yaml`: push the bundles' images to the
//! private registry under the rewritten references, relocate their charts
//! and publish them to the target chart repository.
//!
//! Order of work, so that a failure leaves nothing visible that matters and
//! every byte that moves is read once:
//! 1. [`bundles`]: every bundle is opened (tar index, manifests hashed) and
//!    its small files checked against `bundle.json`; charts are relocated
//!    and packaged ([`charts`]). A problem stops the run before the first
//!    request. Blobs are not read here (`--verify` adds the full check).
//! 2. [`plan`]: HEAD requests only, to learn which images are unchanged and
//!    which blobs must be uploaded, mounted or left alone.
//! 3. [`crate::transfer`], phase 1: every blob of the run, each hashed as it
//!    streams; phase 2, only when all are in and matched their digests:
//!    manifests, then tags.
//! 4. Charts are published, and what `upgrade` needs is recorded.
//!
//! [`report`] formats the outcome: the summary line or `--json`, and
//! failures grouped by cause.
pub mod bundles;
pub mod charts;
pub mod concurrent;
pub mod fanout;
pub mod plan;
pub mod report;
pub mod timeline;

use anyhow::Context;

use crate::bundle::reader::BundleReader;
use crate::chart::repo::PublishOptions;
use crate::config::load_image::SyncConfig;
use crate::oci::media::Platform;
use crate::oci::registry::{ClientOptions, RegistryClient};
use crate::progress::Progress;
use crate::state::SyncState;
use crate::transfer;
use report::{ChartLine, ImageLine, SyncSummary};
use timeline::Timeline;

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
    /// Read and check every blob of every bundle first (what `bundler verify`
    /// does); without it, a blob is checked as it uploads and blobs the
    /// target already has are not read at all.
    #[arg(long)]
    pub verify: bool,
    /// Blobs moving at once (1 to 1024).
    #[arg(long, default_value_t = 8, value_parser = crate::cli::concurrency_parser())]
    pub concurrency: usize,
    /// Print a JSON summary on stdout (also on failure, with an `error` field).
    #[arg(long)]
    pub json: bool,
    /// Publish charts even when they render images that are not in the target registry.
    #[arg(long)]
    pub allow_unrelocated: bool,
    /// Refuse to push any image without a valid cosign signature for
    /// --key, checked offline against the bundle's own copy before
    /// anything is pushed (also `requireSignature: {key: ...}` in the config).
    #[arg(long, requires = "key")]
    pub require_signature: bool,
    /// Refuse an offline package that is not signed by --key (checked
    /// offline, before anything is read or pushed).
    #[arg(long, requires = "key")]
    pub verify_signature: bool,
    /// Public key for --verify-signature (PEM P-256/Ed25519, or cosign.pub;
    /// overrides source.signatureKey) and for --require-signature (cosign.pub).
    #[arg(long, value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub transport: crate::oci::TransportArgs,
}

pub async fn run(args: &SyncArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    if args.concurrency == 0 {
        return Err(crate::error::input_error(
            "--concurrency 0: at least one blob must be able to move; use 1 or more",
        ));
    }
    let mut config = SyncConfig::load(&args.config)?;
    // --key alone asks for the check too: a key given is never ignored.
    // With --require-signature it is the images' cosign key (the package
    // is checked as well only with --verify-signature).
    if args.verify_signature || (args.key.is_some() && !args.require_signature) {
        config.package_signature_key = args.key.clone();
    }
    crate::interrupt::install("sync");
    crate::interrupt::doing(format!("syncing with {}", args.config.display()));
    let progress = Progress::auto(args.json || args.print_images);
    progress.counting_acknowledged();
    let platforms = parse_platforms(&args.platform)?;
    let timeline = Timeline::new(started);

    // Where relative paths went, when the config is elsewhere (issue 22).
    for n in crate::paths::config_path_notes(&config) {
        progress.println(n);
    }
    // 1. Everything that needs no network.
    let selected = bundles::open_selected(&config, &progress)?;
    if args.verify {
        verify_all(&selected, &progress)?;
    }
    let chosen = bundles::select_images(&selected, &config, &platforms)?;
    let prepared = charts::prepare_all(&selected, &config, &chosen.platform_map)?;
    if !args.dry_run && !args.print_images {
        charts::check_local_space(&config, &prepared)?;
    }
    let mut summary = SyncSummary {
        dry_run: args.dry_run,
        bundles: selected.iter().map(|b| b.reader.label.clone()).collect(),
        images: chosen.jobs.iter().map(ImageLine::of).collect(),
        ..SyncSummary::default()
    };
    if args.print_images {
        for l in &summary.images {
            println!("{} -> {}", l.from, l.to);
        }
        return Ok(());
    }
    // Before any request (also under --dry-run, which then says whether
    // the push would be refused).
    if !args.skip_images {
        check_referrers(args, &config, &selected, &chosen.jobs)?;
    }
    let target_desc = charts::describe_target(&config);
    timeline.ended("open", started);
    if args.dry_run {
        // A delta's external blobs: checked in the target as a real run
        // would (only then does a dry run reach the registry).
        let has_external = (selected.iter())
            .any(|b| crate::bundle::delta::delta_counts(&b.reader).is_some_and(|c| c.0 > 0));
        if has_external && !args.skip_images && !chosen.jobs.is_empty() {
            let client = registry_client(args, &config)?;
            let items: Vec<_> = (chosen.jobs.iter())
                .map(|j| (&selected[j.bundle].reader, &j.image, &j.target))
                .collect();
            crate::bundle::delta::check::check_external_dry_run(
                &client,
                &config.rewrite,
                &items,
                &progress,
            )
            .await?;
        }
        for b in &selected {
            if let Some(c) = crate::manifests::publish::read_bundle(&b.reader)? {
                let r = &c.record;
                println!("manifests {} {} -> {target_desc}", r.name, r.version);
            }
        }
        return print_dry_run(args, &selected, &target_desc, summary, started);
    }

    let client = registry_client(args, &config)?;
    crate::outcome::record(&summary);

    // 2-3. Images (into Harbor projects made first when asked to).
    if !args.skip_images && !chosen.jobs.is_empty() {
        // A delta's external blobs must all be in the target before anything moves.
        let items: Vec<_> = (chosen.jobs.iter())
            .map(|j| (&selected[j.bundle].reader, &j.image, &j.target))
            .collect();
        let t = std::time::Instant::now();
        crate::bundle::delta::check::check_external(&client, &config.rewrite, &items, &progress)
            .await?;
        timeline.ended("externalBlobs", t);
        if args.auto_create_repository.unwrap_or(false) {
            charts::create_image_projects(
                &config,
                &chosen.jobs,
                args.transport.insecure(),
                args.transport.ca_file.clone(),
                &progress,
            )
            .await?;
        }
        let readers: Vec<&BundleReader> = selected.iter().map(|b| &b.reader).collect();
        let jobs = chosen.jobs.clone();
        let mut result = if config.mirrors.is_empty() {
            push_images(
                &client,
                &readers,
                chosen.jobs,
                args,
                &progress,
                &mut summary,
                &timeline,
            )
            .await
        } else {
            fanout::push_images(
                &client,
                &readers,
                chosen.jobs,
                args.concurrency,
                &progress,
                &mut summary,
                &timeline,
            )
            .await
        };
        // Referrers after their images (a registry may refuse a referrer
        // whose subject is not there yet), to each image's target.
        if result.is_ok() {
            match crate::referrers::push::push_all(&client, &readers, &jobs, &progress).await {
                Ok(r) => summary.referrers = (r.pushed > 0 || r.left_behind > 0).then_some(r),
                Err(e) => result = Err(e),
            }
        }
        summary.timeline = timeline.phases();
        summary.bytes_uploaded = client.stats().bytes_uploaded;
        summary.retries = client.stats().retries;
        summary.bytes_read = report::bytes_read();
        summary.seconds = started.elapsed().as_secs_f64();
        crate::outcome::record(&summary);
        result?;
    }

    // 3b. Prove it: the charts to publish render only images in the target.
    if let Some(target) = config.image_registry() {
        let t = std::time::Instant::now();
        let inputs = charts::proof_inputs(&prepared);
        summary.unrelocated =
            crate::chart::render_check::prove_all_synced(&inputs, &target, &client, &progress)
                .await?;
        timeline.ended("renderCheck", t);
        crate::outcome::record(&summary);
        let refused = "no chart was published";
        crate::chart::render_check::refuse_misses(
            &summary.unrelocated,
            args.allow_unrelocated,
            refused,
        )?;
    }

    // 3c. Manifests trees: relocated, proven and published.
    let readers: Vec<&BundleReader> = selected.iter().map(|b| &b.reader).collect();
    let manifests_opts = crate::manifests::publish::SyncOptions {
        force: args.force,
        allow_unrelocated: args.allow_unrelocated,
        dry_run: false,
    };
    summary.manifests =
        crate::manifests::publish::sync_all(&readers, &config, &client, &manifests_opts, &progress)
            .await?;

    // 4. Charts, relocated in step 1.
    let publish_opts = PublishOptions {
        insecure: args.transport.insecure(),
        ca_file: args.transport.ca_file.clone(),
        force: args.force,
        auto_create_repository: args.auto_create_repository.unwrap_or(false),
    };
    // Charts go up with their own credentials (target.repo.auth).
    let chart_client = chart_client(args, &config)?;
    let t = std::time::Instant::now();
    let published = charts::publish_all(
        &selected,
        prepared,
        &config,
        &chart_client,
        &publish_opts,
        &progress,
        &mut summary.charts,
    )
    .await;
    summary.seconds = started.elapsed().as_secs_f64();
    crate::outcome::record(&summary);
    timeline.ended("charts", t);
    let synced = published?;
    progress.finish();
    if !synced.is_empty() {
        SyncState::record(&config.file, synced)?;
    }
    let pushed = summary
        .images
        .iter()
        .map(|l| (l.from.as_str(), l.to.as_str()));
    let t = std::time::Instant::now();
    crate::inventory::write_after_sync(&client, &config, pushed, &progress).await;
    timeline.ended("inventory", t);
    summary.timeline = timeline.phases();

    let stats = client.stats();
    summary.bytes_uploaded = stats.bytes_uploaded;
    summary.retries = stats.retries;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.bytes_read = report::bytes_read();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for t in &summary.targets {
            println!("{}", t.text());
        }
        println!("{}", summary.text());
    }
    Ok(())
}

/// The referrers of every bundle that has images to push, read and checked
/// before any request (a damaged `referrers.json` stops the run here), and
/// `--require-signature --key` (or `requireSignature.key`): every image to
/// push has a valid cosign signature for the key in its bundle.
fn check_referrers(
    args: &SyncArgs,
    config: &SyncConfig,
    selected: &[bundles::SelectedBundle],
    jobs: &[transfer::ImageJob],
) -> anyhow::Result<()> {
    use crate::referrers::carried::BundleReferrers;
    use crate::referrers::cosign::{Gated, PublicKey};
    let mut loaded: std::collections::BTreeMap<usize, BundleReferrers> = Default::default();
    for j in jobs {
        if let std::collections::btree_map::Entry::Vacant(e) = loaded.entry(j.bundle) {
            e.insert(BundleReferrers::load(&selected[j.bundle].reader)?);
        }
    }
    let key_path = match (
        args.require_signature,
        &args.key,
        &config.require_signature_key,
    ) {
        (true, Some(k), _) => k.clone(),
        (_, _, Some(k)) => k.clone(),
        _ => return Ok(()),
    };
    let key = PublicKey::load(&key_path)?;
    let gated: Vec<Gated> = jobs
        .iter()
        .map(|j| {
            let reader = &selected[j.bundle].reader;
            Gated {
                reference: j.image.reference.to_string(),
                digest: j.image.root.digest.clone(),
                picked_from: reader
                    .images
                    .iter()
                    .find(|i| i.children.iter().any(|c| c.digest == j.image.root.digest))
                    .map(|i| i.root.digest.clone()),
                reader,
                referrers: &loaded[&j.bundle],
            }
        })
        .collect();
    crate::referrers::cosign::require(&gated, &key)
}

/// `--verify`: every blob of every bundle read and checked first.
fn verify_all(selected: &[bundles::SelectedBundle], progress: &Progress) -> anyhow::Result<()> {
    for b in selected {
        crate::bundle::verify::verify(&b.reader, progress).with_context(|| {
            format!(
                "bundle {} failed verification; nothing was pushed",
                b.reader.label
            )
        })?;
    }
    Ok(())
}

fn registry_client(args: &SyncArgs, config: &SyncConfig) -> anyhow::Result<RegistryClient> {
    RegistryClient::new(
        ClientOptions {
            insecure: args.transport.insecure(),
            ca_file: args.transport.ca_file.clone(),
            max_connections: args.concurrency * 4,
            ..env_tuning(ClientOptions::default())
        },
        charts::credential_store(config),
    )
}

/// The client chart pushes use: same transport, the chart repository's
/// credentials (`charts::chart_credential_store`).
fn chart_client(args: &SyncArgs, config: &SyncConfig) -> anyhow::Result<RegistryClient> {
    RegistryClient::new(
        ClientOptions {
            insecure: args.transport.insecure(),
            ca_file: args.transport.ca_file.clone(),
            ..env_tuning(ClientOptions::default())
        },
        charts::chart_credential_store(config),
    )
}

/// Plan, then the two transfer phases; the summary is filled in as far as
/// the run got.
async fn push_images(
    client: &RegistryClient,
    readers: &[&BundleReader],
    jobs: Vec<transfer::ImageJob>,
    args: &SyncArgs,
    progress: &Progress,
    summary: &mut SyncSummary,
    timeline: &Timeline,
) -> anyhow::Result<()> {
    let plan = plan::make(client, jobs, args.concurrency, timeline)
        .await
        .map_err(|f| {
            summary.images_failed = f.images();
            f.into_error()
        })?;
    summary.images_unchanged = plan.unchanged_count();
    summary.blobs_skipped = plan.skipped();
    let changed = plan.changed().count();
    progress.println(format!(
        "plan: {} ({} unchanged); blobs: {} to upload ({}), {} to mount, {} already there",
        report::count(plan.jobs.len(), "image", "images"),
        summary.images_unchanged,
        plan.uploads().count(),
        crate::progress::human_bytes(plan.upload_bytes()),
        plan.mounts(),
        summary.blobs_skipped,
    ));
    for s in plan
        .steps
        .iter()
        .filter(|s| s.action == plan::BlobAction::Skip)
    {
        let label = format!("{}@{}", s.repo, &s.desc.digest.hex()[..12]);
        progress.blob_line("skipped", &label, s.desc.size, None);
    }
    if changed == 0 {
        return Ok(());
    }
    let t = std::time::Instant::now();
    let blobs = transfer::push_blobs(client, readers, &plan, args.concurrency, progress, timeline)
        .await
        .map_err(|f| {
            summary.images_failed = f.images();
            f.into_error()
        })?;
    summary.blobs_uploaded = blobs.uploaded;
    summary.blobs_mounted = blobs.mounted;
    summary.blobs_skipped += blobs.skipped;
    timeline.ended("blobs", t);
    let t = std::time::Instant::now();
    // Small documents: as many at once as the plan's HEADs.
    let par = plan::head_parallelism(args.concurrency);
    let pushed = transfer::push_manifests(client, &plan, par, progress).await;
    timeline.ended("manifests", t);
    match pushed {
        Ok(n) => {
            summary.images_pushed = n;
            Ok(())
        }
        Err(f) => {
            summary.images_pushed = f.pushed;
            summary.images_failed = f.images();
            Err(f.into_error())
        }
    }
}

fn parse_platforms(raw: &[String]) -> anyhow::Result<Vec<Platform>> {
    raw.iter()
        .filter(|p| p.as_str() != "all")
        .map(|p| {
            Platform::parse(p).map_err(|e| crate::error::input_error(format!("--platform: {e}")))
        })
        .collect()
}

fn print_dry_run(
    args: &SyncArgs,
    selected: &[bundles::SelectedBundle],
    target_desc: &str,
    mut summary: SyncSummary,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    for l in &summary.images {
        println!("image {} -> {}", l.from, l.to);
    }
    for b in selected {
        if let Some((n, v)) = &b.chart {
            println!("chart {n} {v} -> {target_desc}");
            summary.charts.push(ChartLine {
                name: n.clone(),
                version: v.clone(),
                target: target_desc.to_string(),
                outcome: "planned".into(),
            });
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(())
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
