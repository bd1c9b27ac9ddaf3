//! Command-line interface: composes the verbs. Each verb's module owns its
//! argument struct and its `run` (as cargo's commands do); this file only
//! parses, sets up logging, dispatches and maps errors to exit statuses.
use clap::{Parser, Subcommand};

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
    Pack(crate::pack::PackArgs),
    /// Verify bundles, push their images to the private registry, relocate and publish their charts.
    Sync(crate::sync::SyncArgs),
    /// Back up a release's values, check its images, run helm upgrade, roll back on failure.
    Upgrade(crate::upgrade::UpgradeArgs),
    /// Show what a bundle holds: charts, images, digests, sizes, shared blobs.
    Inspect(crate::bundle::inspect::InspectArgs),
    /// Check every blob and checksum of one or more bundles.
    Verify(crate::bundle::verify::VerifyArgs),
    /// Serve the bundles' images (OCI registry API, read-only) and charts (/charts/) straight from the files.
    Serve(crate::serve::ServeArgs),
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
        Command::Serve(a) => runtime().and_then(|rt| rt.block_on(crate::serve::run(&a))),
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
