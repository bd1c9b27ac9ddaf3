//! `bundler apply NAME`: apply a relocated manifests tree (see
//! [`crate::manifests`]) to the cluster, after the pre-flight `upgrade`
//! runs for charts (every image the copy names is in the private
//! registry). Thin on purpose: kubectl does the work. `kubectl diff
//! --server-side` says what will change (and is all `--dry-run` runs), then
//! `kubectl apply --server-side` applies; nothing is pruned.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::load_image::SyncConfig;
use crate::manifests::publish::{pull, read_tree_dir};
use crate::manifests::relocate;
use crate::manifests::state::{self, SyncedManifests};
use crate::manifests::tree::kubectl;
use crate::manifests::{Tree, TreeKind};
use crate::oci::registry::{ClientOptions, RegistryClient};
use crate::oci::Reference;

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Name of a manifests entry sync published (spec.manifests[].name).
    pub name: String,
    /// The sync config; its directory holds what sync recorded (.bundler/).
    #[arg(long, short = 'c', default_value = "load-image.yaml")]
    pub config: PathBuf,
    /// Version to apply (default: the newest synced).
    #[arg(long)]
    pub version: Option<String>,
    /// Namespace for objects that name none (default: the entry's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// kubeconfig context to use (kubectl --context).
    #[arg(long)]
    pub kube_context: Option<String>,
    /// kubeconfig file (kubectl --kubeconfig; default $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Show what would change (`kubectl diff --server-side`); apply nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Take over fields another manager owns (`kubectl apply --force-conflicts`).
    #[arg(long)]
    pub force_conflicts: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transport: crate::oci::TransportArgs,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApplySummary {
    name: String,
    version: String,
    /// The relocated copy kubectl was given.
    path: PathBuf,
    dry_run: bool,
    /// Images the copy names, all checked present in the registry.
    images: Vec<String>,
    /// Objects `kubectl diff` reported as created or changed.
    changed: Vec<String>,
    /// `kubectl apply` output, one line per object.
    applied: Vec<String>,
}

pub async fn run(args: &ApplyArgs) -> anyhow::Result<()> {
    let config = SyncConfig::load(&args.config)?;
    let st = state::load(&args.config)?;
    let Some(entry) = st.find(&args.name, args.version.as_deref()) else {
        return Err(crate::error::input_error(format!(
            "no manifests {:?}{} were synced with {} (see {}); run bundler sync first",
            args.name,
            args.version
                .as_deref()
                .map(|v| format!(" at version {v}"))
                .unwrap_or_default(),
            args.config.display(),
            state::path_for(&args.config).display()
        )));
    };
    let client = RegistryClient::new(
        ClientOptions {
            insecure: args.transport.insecure(),
            ca_file: args.transport.ca_file.clone(),
            ..ClientOptions::default()
        },
        config.credential_store(),
    )?;
    let (dir, tree) = local_copy(entry, &args.config, &client).await?;
    let mut summary = ApplySummary {
        name: entry.name.clone(),
        version: entry.version.clone(),
        path: tree.apply_path(&dir),
        dry_run: args.dry_run,
        ..ApplySummary::default()
    };

    // Pre-flight: every image the copy names is in the registry.
    let scratch = tempfile::tempdir()?;
    let found = relocate::find(&tree, &[], scratch.path())
        .with_context(|| format!("reading {}", dir.display()))?;
    let mut images: Vec<String> = found.literals().into_iter().collect();
    images.extend(entry.images.iter().cloned());
    images.sort();
    images.dedup();
    let mut missing = Vec::new();
    for img in &images {
        let r = Reference::parse(img)?;
        let there = client
            .head_manifest(&r.registry, &r.repository, &r.manifest_reference())
            .await
            .with_context(|| format!("checking {img}"))?;
        if there.is_none() {
            missing.push(img.clone());
        }
    }
    if !missing.is_empty() {
        bail!(
            "pre-flight: {} not in the registry: {}; nothing was applied (run bundler sync first)",
            if missing.len() == 1 {
                "this image is"
            } else {
                "these images are"
            },
            missing.join(", ")
        );
    }
    summary.images = images;

    let namespace = args.namespace.clone().or_else(|| entry.namespace.clone());
    let target = kubectl_target(&tree, &dir);
    summary.changed = kubectl_diff(args, namespace.as_deref(), &target)?;
    if !args.dry_run {
        summary.applied = kubectl_apply(args, namespace.as_deref(), &target)?;
    }
    print(&summary, args.json)
}

/// The relocated copy on disk: the LOCAL directory, or the OCI artifact
/// pulled into `.bundler/manifests/<name>-<version>/` beside the config.
async fn local_copy(
    entry: &SyncedManifests,
    config: &Path,
    client: &RegistryClient,
) -> anyhow::Result<(PathBuf, Tree)> {
    if entry.target_kind == "OCI" {
        let dir = state::path_for(config)
            .with_file_name("manifests")
            .join(format!("{}-{}", entry.name, entry.version));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing an older copy at {}", dir.display()))?;
        }
        let tree = pull(client, &entry.location, &dir)
            .await
            .with_context(|| format!("pulling {}", entry.location))?;
        return Ok((dir, tree));
    }
    let dir = PathBuf::from(&entry.location);
    if !dir.is_dir() {
        bail!(
            "{}: the relocated copy sync wrote is gone; run bundler sync again",
            dir.display()
        );
    }
    let tree = read_tree_dir(&dir, entry.kind, &entry.apply)?;
    Ok((dir, tree))
}

/// `-f FILE`, `-f DIR` or `-k DIR`.
fn kubectl_target(tree: &Tree, dir: &Path) -> Vec<String> {
    let flag = if tree.kind == TreeKind::Kustomize {
        "-k"
    } else {
        "-f"
    };
    vec![flag.to_string(), tree.apply_path(dir).display().to_string()]
}

fn kubectl_command(args: &ApplyArgs, verb: &str, namespace: Option<&str>) -> Command {
    let mut c = Command::new(kubectl());
    if let Some(k) = &args.kubeconfig {
        c.arg("--kubeconfig").arg(k);
    }
    if let Some(ctx) = &args.kube_context {
        c.arg("--context").arg(ctx);
    }
    c.arg(verb)
        .arg("--server-side")
        .arg("--field-manager=bundler");
    if let Some(ns) = namespace {
        c.arg("--namespace").arg(ns);
    }
    c
}

/// `kubectl diff --server-side`: the objects that would be created or
/// changed (exit 0: none, 1: some, other: an error).
fn kubectl_diff(
    args: &ApplyArgs,
    namespace: Option<&str>,
    target: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut c = kubectl_command(args, "diff", namespace);
    if args.force_conflicts {
        c.arg("--force-conflicts");
    }
    c.args(target);
    let out = c
        .output()
        .with_context(|| format!("running {} diff", kubectl().display()))?;
    match out.status.code() {
        Some(0) | Some(1) => {}
        _ => bail!(
            "kubectl diff {} failed: {}; nothing was applied",
            target.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
    // `diff -u -N /tmp/LIVE-123/apps.v1.Deployment.ns.name /tmp/MERGED-...`
    let text = String::from_utf8_lossy(&out.stdout);
    let mut changed: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("diff "))
        .filter_map(|l| l.split_whitespace().find(|w| w.contains("/LIVE-")))
        .filter_map(|p| p.rsplit('/').next())
        .map(str::to_string)
        .collect();
    changed.sort();
    changed.dedup();
    Ok(changed)
}

fn kubectl_apply(
    args: &ApplyArgs,
    namespace: Option<&str>,
    target: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut c = kubectl_command(args, "apply", namespace);
    if args.force_conflicts {
        c.arg("--force-conflicts");
    }
    c.args(target);
    let out = c
        .output()
        .with_context(|| format!("running {} apply", kubectl().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "kubectl apply --server-side {} failed: {}{}",
            target.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!(
                    " (applied before the failure: {})",
                    stdout.trim().replace('\n', ", ")
                )
            }
        );
    }
    Ok(stdout.lines().map(str::to_string).collect())
}

fn print(s: &ApplySummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!(
        "{} {}: {} images in the registry; {} object(s) {}",
        s.name,
        s.version,
        s.images.len(),
        s.changed.len(),
        if s.dry_run { "would change" } else { "changed" }
    );
    for c in &s.changed {
        println!("  {c}");
    }
    for l in &s.applied {
        println!("  {l}");
    }
    Ok(())
}
