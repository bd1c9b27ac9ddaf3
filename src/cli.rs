//! Command-line interface: argument definitions and dispatch. Each verb's
//! work is in its own module; this file only parses, sets up logging and
//! maps errors to exit statuses.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error;

#[derive(Parser, Debug)]
#[command(
    name = "bundler",
    version,
    about = "Carry a Helm-packaged product (charts, images, hints) into an air-gapped Kubernetes site"
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). Secrets are never logged.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pull a product's charts and images and write *.bundle.tar files and the offline package.
    Pack(PackArgs),
    /// Verify bundles, push their images to the private registry, relocate and publish their charts.
    Sync(SyncArgs),
    /// Back up a release's values, check its images, run helm upgrade, roll back on failure.
    Upgrade(UpgradeArgs),
    /// Show what a bundle holds: charts, images, digests, sizes, shared blobs.
    Inspect(InspectArgs),
    /// Check every blob and checksum of one or more bundles.
    Verify(VerifyArgs),
}

/// TLS and transport options shared by verbs that talk to registries.
#[derive(Args, Debug, Clone, Default)]
pub struct TransportArgs {
    /// Accept plain HTTP and self-signed TLS certificates.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub insecure: Option<bool>,
    /// Trust this CA certificate (PEM) in addition to the system ones.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl TransportArgs {
    pub fn insecure(&self) -> bool {
        self.insecure.unwrap_or(false)
    }
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// The bundle manifest (see bundle-manifests/).
    pub manifest: PathBuf,
    /// Where to write bundles, chart .tgz files and the offline package.
    #[arg(short, long, default_value = ".")]
    pub output: PathBuf,
    /// Keep only these platforms (os/arch[/variant]) or "all"; overrides the manifest.
    #[arg(long)]
    pub platform: Vec<String>,
    /// Parallel blob downloads.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Architecture name in the offline package file name.
    #[arg(long, default_value = "amd64")]
    pub arch: String,
    /// Path of the helm binary used to discover images in rendered templates.
    #[arg(long, env = "BUNDLER_HELM")]
    pub helm: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transport: TransportArgs,
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The load-image.yaml (charts-syncer schema).
    #[arg(long, short = 'c', default_value = "load-image.yaml")]
    pub config: PathBuf,
    /// Push nothing; print the plan.
    #[arg(long)]
    pub dry_run: bool,
    /// Create missing Harbor projects.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
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
    /// Blobs moving at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transport: TransportArgs,
}

#[derive(Args, Debug, Clone)]
pub struct UpgradeArgs {
    /// The release to upgrade (e.g. skoala).
    pub release: String,
    /// The sync config the images and charts went through.
    #[arg(long, short = 'c', default_value = "load-image.yaml")]
    pub config: PathBuf,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Chart reference (oci://..., repo/name, or a .tgz); default: the relocated chart in the sync target.
    #[arg(long)]
    pub chart: Option<String>,
    /// Chart version; default: the newest synced.
    #[arg(long)]
    pub version: Option<String>,
    /// Image registry for global.imageRegistry; default: the sync target's.
    #[arg(long)]
    pub registry: Option<String>,
    /// Extra helm --set values.
    #[arg(long = "set", value_name = "K=V")]
    pub set: Vec<String>,
    /// Extra helm values files.
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// Where values backups are kept.
    #[arg(long, default_value = "backups")]
    pub backup_dir: PathBuf,
    /// Stop after the pre-flight; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Go on even when the pre-flight finds missing images.
    #[arg(long)]
    pub force: bool,
    /// helm --timeout.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// The helm binary.
    #[arg(long, env = "BUNDLER_HELM")]
    pub helm: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transport: TransportArgs,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub bundle: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[arg(required = true)]
    pub bundles: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "bundler=debug,info",
        _ => "bundler=trace,debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUNDLER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Parse arguments, run the verb, return the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { error::EXIT_USAGE } else { 0 };
        }
    };
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Pack(a) => runtime().and_then(|rt| rt.block_on(crate::pack::run(&a))),
        Command::Sync(a) => runtime().and_then(|rt| rt.block_on(crate::sync::run(&a))),
        Command::Upgrade(a) => runtime().and_then(|rt| rt.block_on(crate::upgrade::run(&a))),
        Command::Inspect(a) => crate::bundle::inspect::run(&a),
        Command::Verify(a) => crate::bundle::verify::run(&a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", error::redact(&format!("{e:#}")));
            error::exit_code(&e)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
