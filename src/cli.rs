//! Command-line interface: composes the verbs. Each verb's module owns its
//! argument struct and its `run` (as cargo's commands do); this file only
//! parses, sets up logging, dispatches and maps errors to exit statuses.
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::sync::OnceLock;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error;

#[derive(Parser, Debug)]
#[command(
    name = "bundler",
    version = version(),
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
    #[command(after_help = PACK_EXAMPLES)]
    Pack(crate::pack::PackArgs),
    /// Verify bundles, push their images to the private registry, relocate and publish their charts.
    #[command(after_help = SYNC_EXAMPLES)]
    Sync(crate::sync::SyncArgs),
    /// Back up a release's values, check its images, run helm upgrade, roll back on failure.
    #[command(after_help = UPGRADE_EXAMPLES)]
    Upgrade(crate::upgrade::UpgradeArgs),
    /// What the site runs: chart versions and images deployed vs carried vs in the registry, and drift.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(crate::status::StatusArgs),
    /// Apply a relocated manifests tree (kubectl apply --server-side) after checking its images are in the registry.
    #[command(after_help = APPLY_EXAMPLES)]
    Apply(crate::apply::ApplyArgs),
    /// Show what a bundle holds: charts, images, digests, sizes, shared blobs.
    #[command(after_help = INSPECT_EXAMPLES)]
    Inspect(crate::bundle::inspect::InspectArgs),
    /// Check every blob and checksum of bundles, offline packages or directories of bundles.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(crate::bundle::verify::VerifyArgs),
    /// Record what the site registry holds for the product's images (for pack --against).
    #[command(after_help = INVENTORY_EXAMPLES)]
    Inventory(crate::inventory::InventoryArgs),
    /// Images added, removed and changed between packages, bundles or inventories, and what a delta would carry.
    #[command(after_help = DIFF_EXAMPLES)]
    Diff(crate::diff::DiffArgs),
    /// Serve the bundles' images (OCI registry API, read-only) and charts (/charts/) straight from the files.
    Serve(crate::serve::ServeArgs),
    /// Rebuild the missing or damaged volumes of a split offline package from its parity volumes.
    Repair(crate::package::repair::RepairArgs),
}

const STATUS_EXAMPLES: &str = "\
Examples:
  bundler status                                   # every release the sync record knows
  bundler status skoala@global skoala-init@worker1 --kubeconfig site.kubeconfig --json";
const PACK_EXAMPLES: &str = "\
Examples:
  bundler pack bundle-manifests/example.yaml --output out/
  bundler pack my-product.yaml --insecure --platform linux/amd64 --json
  bundler pack my-product.yaml --output out/ --against site-inventory.json";
const SYNC_EXAMPLES: &str = "\
Examples:
  bundler sync --config load-image.yaml --dry-run
  bundler sync -c load-image.yaml --insecure --auto-create-repository --json";
const UPGRADE_EXAMPLES: &str = "\
Examples:
  bundler upgrade skoala -n skoala-system --dry-run
  bundler upgrade skoala -n skoala-system -c load-image.yaml --set replicas=2";
const APPLY_EXAMPLES: &str = "\
Examples:
  bundler apply cube --config load-image.yaml --dry-run
  bundler apply dashboard -c load-image.yaml --kube-context site --json";
const INSPECT_EXAMPLES: &str = "\
Examples:
  bundler inspect out/demo_1.0.0.bundle.tar
  bundler inspect out/demo_1.0.0_amd64.tar --json";
const INVENTORY_EXAMPLES: &str = "\
Examples:
  bundler inventory --config load-image.yaml -o site.json
  bundler inventory -c load-image.yaml --images running-images.txt --insecure
  bundler pack my-product.yaml --against site.json      (on the connected side)";
const DIFF_EXAMPLES: &str = "\
Examples:
  bundler diff site.json out/demo_1.1.0_amd64.tar
  bundler diff old/demo_1.0.0_amd64.tar out/demo_1.1.0_amd64.tar --json";
const VERIFY_EXAMPLES: &str = "\
Examples:
  bundler verify out/*.bundle.tar
  bundler verify out/demo_1.0.0_amd64.tar out/ --json";

/// `--version`: the crate version, the bundle format it writes and reads,
/// and the commit it was built from (set by build.rs).
fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (bundle format {}, commit {})",
            env!("CARGO_PKG_VERSION"),
            crate::bundle::format::FORMAT_VERSION,
            env!("BUNDLER_GIT_COMMIT")
        )
    })
}

/// `--concurrency`: 1 to 1024 (0 would move nothing and wait forever).
pub fn concurrency_parser() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024)
}

/// Long flags of `cmd` whose value is optional (`--insecure`,
/// `--insecure=false`). They are all `require_equals`, so a bare flag never
/// takes the next word (`pack --insecure MANIFEST`).
fn optional_value_flags(cmd: &clap::Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter(|a| {
            a.get_num_args()
                .is_some_and(|n| n.min_values() == 0 && n.max_values() == 1)
        })
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// charts-syncer writes `--insecure true`; with `require_equals` clap would
/// read `true` as a positional. Join a bare optional-value flag with a
/// following literal `true`/`false` (the only values such a flag takes, so
/// this is unambiguous; a file named `true` is still `./true`). Words after
/// `--` are left alone.
pub fn join_optional_values(args: Vec<OsString>) -> Vec<OsString> {
    let cli = Cli::command();
    let verb = args.iter().skip(1).find_map(|a| {
        let a = a.to_str()?;
        cli.get_subcommands().find(|c| c.get_name() == a)
    });
    let Some(verb) = verb else { return args };
    let flags = optional_value_flags(verb);
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter().peekable();
    while let Some(a) = iter.next() {
        if a == "--" {
            out.push(a);
            out.extend(iter);
            break;
        }
        let is_flag = a.to_str().is_some_and(|s| flags.contains(s));
        let value = iter
            .peek()
            .and_then(|n| n.to_str())
            .filter(|n| *n == "true" || *n == "false")
            .map(str::to_string);
        match (is_flag, value) {
            (true, Some(v)) => {
                iter.next();
                let mut joined = a;
                joined.push("=");
                joined.push(v);
                out.push(joined);
            }
            _ => out.push(a),
        }
    }
    out
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
        // Colour codes only on a terminal: piped logs (CI, `2>file`) stay
        // plain text (issue 22).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Parse arguments, run the verb, return the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse_from(join_optional_values(std::env::args_os().collect())) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { error::EXIT_USAGE } else { 0 };
        }
    };
    init_logging(cli.verbose);
    // Verbs whose `--json` summary CI reads get a JSON object on failure too
    // (inspect and verify print their own per-bundle results).
    let json_on_failure = match &cli.command {
        Command::Pack(a) => a.json,
        Command::Sync(a) => a.json,
        Command::Upgrade(a) => a.json,
        Command::Status(a) => a.json,
        Command::Apply(a) => a.json,
        Command::Inspect(_) | Command::Verify(_) | Command::Serve(_) => false,
        Command::Inventory(_) | Command::Diff(_) | Command::Repair(_) => false,
    };
    let result = match cli.command {
        Command::Pack(a) => runtime().and_then(|rt| rt.block_on(crate::pack::run(&a))),
        Command::Sync(a) => runtime().and_then(|rt| rt.block_on(crate::sync::run(&a))),
        Command::Upgrade(a) => runtime().and_then(|rt| rt.block_on(crate::upgrade::run(&a))),
        Command::Status(a) => runtime().and_then(|rt| rt.block_on(crate::status::run(&a))),
        Command::Apply(a) => runtime().and_then(|rt| rt.block_on(crate::apply::run(&a))),
        Command::Inspect(a) => crate::bundle::inspect::run(&a),
        Command::Verify(a) => crate::bundle::verify::run(&a),
        Command::Inventory(a) => runtime().and_then(|rt| rt.block_on(crate::inventory::run(&a))),
        Command::Diff(a) => crate::diff::run(&a),
        Command::Serve(a) => runtime().and_then(|rt| rt.block_on(crate::serve::run(&a))),
        Command::Repair(a) => crate::package::repair::run(&a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", error::redact(&format!("{e:#}")));
            let status = error::exit_code(&e);
            if json_on_failure {
                let v = crate::outcome::failure_json(&e, status);
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            status
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(join_optional_values(
            args.iter().map(OsString::from).collect(),
        ))
    }

    #[test]
    fn bare_insecure_does_not_take_the_manifest() {
        for args in [
            &["bundler", "pack", "--insecure", "m.yaml"][..],
            &["bundler", "pack", "m.yaml", "--insecure"],
            &["bundler", "pack", "--insecure=true", "m.yaml"],
            &["bundler", "pack", "--insecure", "true", "m.yaml"],
        ] {
            let Command::Pack(p) = parse(args).unwrap().command else {
                panic!("not pack")
            };
            assert_eq!(p.manifest.to_str(), Some("m.yaml"), "{args:?}");
            assert!(p.transport.insecure(), "{args:?}");
        }
        let Command::Pack(p) = parse(&["bundler", "pack", "--insecure", "false", "m.yaml"])
            .unwrap()
            .command
        else {
            panic!("not pack")
        };
        assert!(!p.transport.insecure());
        assert_eq!(p.manifest.to_str(), Some("m.yaml"));
        // After `--`, `true` is a positional (a manifest named "true").
        let Command::Pack(p) = parse(&["bundler", "pack", "--insecure", "--", "true"])
            .unwrap()
            .command
        else {
            panic!("not pack")
        };
        assert_eq!(p.manifest.to_str(), Some("true"));
    }

    #[test]
    fn charts_syncer_forms_of_sync_flags() {
        let Command::Sync(s) = parse(&[
            "bundler",
            "sync",
            "--auto-create-repository",
            "false",
            "--insecure",
            "true",
            "-c",
            "x.yaml",
        ])
        .unwrap()
        .command
        else {
            panic!("not sync")
        };
        assert_eq!(s.auto_create_repository, Some(false));
        assert!(s.transport.insecure());
        assert_eq!(s.config.to_str(), Some("x.yaml"));
        // A bare flag before another flag.
        let Command::Sync(s) = parse(&["bundler", "sync", "--auto-create-repository", "--dry-run"])
            .unwrap()
            .command
        else {
            panic!("not sync")
        };
        assert_eq!(s.auto_create_repository, Some(true));
        assert!(s.dry_run);
        assert!(parse(&["bundler", "sync", "--insecure=maybe"]).is_err());
    }

    #[test]
    fn every_optional_value_flag_requires_equals() {
        for verb in Cli::command().get_subcommands() {
            for a in verb.get_arguments() {
                let optional = a
                    .get_num_args()
                    .is_some_and(|n| n.min_values() == 0 && n.max_values() == 1);
                assert!(
                    !optional || a.is_require_equals_set(),
                    "{} --{}: an optional value without require_equals swallows the next word",
                    verb.get_name(),
                    a.get_id()
                );
            }
        }
    }

    #[test]
    fn concurrency_zero_is_refused_by_every_verb() {
        let mut seen = 0;
        for verb in Cli::command().get_subcommands() {
            if verb
                .get_arguments()
                .all(|a| a.get_long() != Some("concurrency"))
            {
                continue;
            }
            seen += 1;
            let name = verb.get_name();
            let mut args = vec!["bundler", name, "--concurrency", "0"];
            if verb.get_positionals().next().is_some() {
                args.push("x");
            }
            let err = parse(&args)
                .err()
                .unwrap_or_else(|| panic!("{name} accepted --concurrency 0"));
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{name}"
            );
            assert!(err.to_string().contains("--concurrency"), "{err}");
        }
        assert!(seen >= 2, "pack and sync take --concurrency");
    }

    #[test]
    fn every_argument_is_described_and_every_verb_has_examples() {
        for verb in Cli::command().get_subcommands() {
            let after = verb
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                after.contains("Examples:"),
                "{} --help has no examples",
                verb.get_name()
            );
            for a in verb.get_arguments() {
                if a.is_hide_set() || ["help", "version"].contains(&a.get_id().as_str()) {
                    continue;
                }
                assert!(
                    a.get_help()
                        .is_some_and(|h| !h.to_string().trim().is_empty()),
                    "{} {}: no description in --help",
                    verb.get_name(),
                    a.get_id()
                );
            }
        }
    }

    #[test]
    fn version_names_the_format_and_the_commit() {
        let v = version();
        assert!(v.contains(crate::bundle::format::FORMAT_VERSION), "{v}");
        assert!(v.contains("commit "), "{v}");
    }
}
