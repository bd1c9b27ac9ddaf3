//! `bundler upgrade RELEASE` (SPEC §7): find the release, back up its
//! values, show the values diff, check every image the new chart renders is
//! in the private registry, `helm upgrade`, roll back on failure.
pub mod helm;
pub mod values;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::load_image::{RepoKind, SyncConfig};
use crate::error::{input_error, redact, RolledBack};
use crate::oci::auth::CredentialStore;
use crate::oci::reference::Reference;
use crate::oci::registry::{ClientOptions, RegistryClient};
use crate::state::{SyncState, SyncedChart};
use helm::{display_command, Helm, ListedRelease};

/// The chart to upgrade to, as helm takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartTarget {
    /// CHART argument: `oci://...`, a `.tgz`/dir, `repo/name`, or (with
    /// `repo_url`) the bare chart name.
    pub chart: String,
    /// `--repo URL` (HARBOR / CHARTMUSEUM targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub release: String,
    pub namespace: String,
    pub chart: ChartTarget,
    pub registry: String,
    pub helm_version: String,
    pub from_revision: String,
    pub from_chart: String,
    pub backup: PathBuf,
    pub values_diff: Vec<String>,
    pub images: Vec<String>,
    pub missing_images: Vec<String>,
    pub forced: bool,
    pub dry_run: bool,
    pub upgrade_command: String,
    /// `planned` (dry run), `upgraded`.
    pub outcome: String,
}

struct Out {
    json: bool,
}

impl Out {
    /// Human output: stdout, or stderr when stdout carries the JSON summary.
    fn say(&self, msg: impl AsRef<str>) {
        let msg = redact(msg.as_ref());
        if self.json {
            eprintln!("{msg}");
        } else {
            println!("{msg}");
            let _ = std::io::stdout().flush();
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct UpgradeArgs {
    /// The release to upgrade (e.g. skoala).
    pub release: String,
    /// The sync config the images and charts went through.
    #[arg(long, short = 'c', default_value = "load-image.yaml")]
    pub config: std::path::PathBuf,
    /// Namespace of the release; default: the one its bundle records, else the only namespace helm lists it in.
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
    pub values: Vec<std::path::PathBuf>,
    /// Where values backups are kept.
    #[arg(long, default_value = "backups")]
    pub backup_dir: std::path::PathBuf,
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
    pub helm: Option<std::path::PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transport: crate::oci::TransportArgs,
}

pub async fn run(args: &UpgradeArgs) -> anyhow::Result<()> {
    let out = Out { json: args.json };
    let release = args.release.as_str();

    // ---- inputs: config (optional), sync state, helm ----
    let config = load_config(&args.config)?;
    let state = SyncState::load(&args.config)?;
    let synced = find_synced(&state, release, args.chart.as_deref());
    let helm = Helm::detect(args.helm.as_deref()).await?;
    out.say(format!("helm {} ({})", helm.version, helm.path.display()));

    // ---- 1. find the release ----
    let ns_hint = args.namespace.clone().or_else(|| {
        synced
            .and_then(|s| s.release.as_ref())
            .and_then(|r| r.namespace.clone())
    });
    let listed = find_release(&helm, release, ns_hint.as_deref(), args.namespace.is_some()).await?;
    let ns = listed.namespace.clone();
    let from_rev = listed.revision.clone();
    out.say(format!(
        "release {release} in namespace {ns}: revision {from_rev}, chart {}, status {}",
        listed.chart, listed.status
    ));

    // chart, version, registry
    let chart = choose_chart(args, synced, config.as_ref())?;
    let registry = args
        .registry
        .clone()
        .or_else(|| synced.map(|s| s.registry.clone()).filter(|r| !r.is_empty()))
        .or_else(|| config.as_ref().and_then(SyncConfig::image_registry))
        .ok_or_else(|| {
            input_error(format!(
                "no image registry known for {release}: give --registry HOST[:PORT], or run in the \
                 directory of the sync config ({}) so its target registry is used",
                args.config.display()
            ))
        })?;
    let chart_flags = chart_flags(args, &chart, config.as_ref()).await;
    for f in &args.values {
        if !f.is_file() {
            return Err(input_error(format!(
                "{}: values file not found (-f)",
                f.display()
            )));
        }
    }

    // ---- 2. back up the current values ----
    let current_text = helm
        .run_ok(&strings(&[
            "get", "values", release, "-n", &ns, "-o", "yaml",
        ]))
        .await?;
    let current = values::parse_values(&current_text, "`helm get values` output")?;
    let backup = write_backup(&args.backup_dir, release, &from_rev, &current_text)?;
    out.say(format!("values backup: {}", backup.display()));

    // ---- 3. the values diff ----
    let mut new_values = current.clone();
    values::apply_set(&mut new_values, &format!("global.imageRegistry={registry}"));
    for f in &args.values {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        values::merge(
            &mut new_values,
            values::parse_values(&text, &f.display().to_string())
                .map_err(|e| input_error(format!("{e:#}")))?,
        );
    }
    for s in &args.set {
        values::apply_set(&mut new_values, s);
    }
    let values_diff = values::diff(&current, &new_values);
    if values_diff.is_empty() {
        out.say("values: no change");
    } else {
        out.say("values diff (current -> new):");
        for l in &values_diff {
            out.say(format!("  {l}"));
        }
    }

    // value flags shared by template and upgrade
    let mut value_flags = strings(&["-f"]);
    value_flags.push(backup.to_string_lossy().into_owned());
    value_flags.push("--set".into());
    value_flags.push(format!("global.imageRegistry={registry}"));
    if let Some(v) = &chart.version {
        value_flags.push("--version".into());
        value_flags.push(v.clone());
    }
    for f in &args.values {
        value_flags.push("-f".into());
        value_flags.push(f.to_string_lossy().into_owned());
    }
    for s in &args.set {
        value_flags.push("--set".into());
        value_flags.push(s.clone());
    }

    // ---- 4. pre-flight ----
    let mut template = strings(&["template", release, &chart.chart, "-n", &ns]);
    template.extend(value_flags.iter().cloned());
    template.extend(chart_flags.iter().cloned());
    let rendered = helm.run(&template).await?;
    if !rendered.ok {
        bail!(
            "pre-flight: rendering the chart failed, nothing was changed:\n  {}\n{}",
            display_command(&helm.path, &redact_args(&template)),
            redact(rendered.stderr.trim())
        );
    }
    let images = values::images_in_manifests(&rendered.stdout)?;
    out.say(format!(
        "pre-flight: {} image(s) in the rendered chart, checking {registry}",
        images.len()
    ));
    let store = config
        .as_ref()
        .map(SyncConfig::credential_store)
        .unwrap_or_else(|| CredentialStore {
            use_docker_config: true,
            ..Default::default()
        });
    let (missing, unchecked) = check_images(args, store, &registry, &images, &out).await?;
    if missing.is_empty() && unchecked.is_empty() {
        out.say("pre-flight: every image is present");
    } else {
        let mut problems = String::new();
        if !missing.is_empty() {
            problems.push_str(&format!(
                "{} image(s) needed by {release} are not in the registry {registry}:\n",
                missing.len()
            ));
            for m in &missing {
                problems.push_str(&format!("  - {m}\n"));
            }
        }
        if !unchecked.is_empty() {
            problems.push_str(&format!(
                "{} image(s) could not be checked:\n",
                unchecked.len()
            ));
            for m in &unchecked {
                problems.push_str(&format!("  - {m}\n"));
            }
        }
        if args.force {
            out.say(format!(
                "pre-flight: going on because of --force although\n{problems}"
            ));
        } else {
            bail!(
                "pre-flight failed, nothing was changed: {problems}sync the images first (bundler sync --config {}), \
                 or pass --force to upgrade anyway",
                args.config.display()
            );
        }
    }
    let missing: Vec<String> = missing.into_iter().chain(unchecked).collect();

    // ---- 5. upgrade ----
    let mut upgrade = strings(&["upgrade", release, &chart.chart, "-n", &ns]);
    upgrade.extend(value_flags.iter().cloned());
    upgrade.extend(chart_flags.iter().cloned());
    upgrade.push(helm.wait_flag().to_string());
    upgrade.push("--timeout".into());
    upgrade.push(args.timeout.clone());
    let upgrade_command = display_command(&helm.path, &redact_args(&upgrade));
    let mut summary = Summary {
        release: release.to_string(),
        namespace: ns.clone(),
        chart: chart.clone(),
        registry: registry.clone(),
        helm_version: helm.version.clone(),
        from_revision: from_rev.clone(),
        from_chart: listed.chart.clone(),
        backup: backup.clone(),
        values_diff,
        images,
        missing_images: missing,
        forced: args.force,
        dry_run: args.dry_run,
        upgrade_command: upgrade_command.clone(),
        outcome: "planned".into(),
    };
    if args.dry_run {
        out.say(format!("dry run: would run\n  {upgrade_command}"));
        out.say("dry run: nothing was changed");
        print_json(args, &summary)?;
        return Ok(());
    }
    crate::outcome::record(&summary);
    out.say(format!("running {upgrade_command}"));
    let r = helm.run(&upgrade).await?;
    if r.ok {
        out.say(format!(
            "upgraded {release} in {ns}; values backup kept at {}",
            backup.display()
        ));
        summary.outcome = "upgraded".into();
        print_json(args, &summary)?;
        return Ok(());
    }

    // ---- 6. roll back ----
    let failure = redact(r.stderr.trim());
    let old_version = listed.chart_version();
    let by_hand = restore_commands(
        &helm,
        release,
        &ns,
        &from_rev,
        &backup,
        &listed,
        old_version.as_deref(),
    );
    out.say(format!("helm upgrade failed: {failure}"));
    out.say(format!("rolling back {release} to revision {from_rev}"));
    let rollback = strings(&[
        "rollback",
        release,
        &from_rev,
        "-n",
        &ns,
        helm.wait_flag(),
        "--timeout",
        &args.timeout,
    ]);
    let rb = helm.run(&rollback).await?;
    if rb.ok {
        Err(anyhow::Error::new(RolledBack(format!(
            "helm upgrade of {release} failed ({failure}); rolled back to revision {from_rev}. \
             Values backup: {}. To restore by hand: {by_hand}",
            backup.display()
        ))))
    } else {
        bail!(
            "helm upgrade of {release} failed ({failure}) and the rollback to revision {from_rev} failed too ({}). \
             Values backup: {}. To restore by hand: {by_hand}",
            redact(rb.stderr.trim()),
            backup.display()
        )
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Hide `--password VALUE` in a command shown to the user.
fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide = false;
    for a in args {
        if hide {
            out.push("[redacted]".to_string());
            hide = false;
            continue;
        }
        if a == "--password" {
            hide = true;
        }
        if a.starts_with("--password=") {
            out.push("--password=[redacted]".into());
            continue;
        }
        out.push(a.clone());
    }
    out
}

fn restore_commands(
    helm: &Helm,
    release: &str,
    ns: &str,
    rev: &str,
    backup: &Path,
    listed: &ListedRelease,
    old_version: Option<&str>,
) -> String {
    let rollback = display_command(
        &helm.path,
        &strings(&["rollback", release, rev, "-n", ns, helm.wait_flag()]),
    );
    let mut s = rollback;
    if let (Some(name), Some(v)) = (listed.chart_name(), old_version) {
        let up = display_command(
            &helm.path,
            &strings(&[
                "upgrade",
                release,
                &format!("<repo>/{name}"),
                "-n",
                ns,
                "-f",
                &backup.to_string_lossy(),
                "--version",
                v,
            ]),
        );
        s.push_str(&format!(
            " (or reinstall the old chart with the backed-up values: {up})"
        ));
    }
    s
}

fn print_json(args: &UpgradeArgs, summary: &Summary) -> anyhow::Result<()> {
    if args.json {
        println!("{}", redact(&serde_json::to_string_pretty(summary)?));
    }
    Ok(())
}

/// The sync config: required when given explicitly; the default
/// `load-image.yaml` may be absent when flags say everything.
fn load_config(path: &Path) -> anyhow::Result<Option<SyncConfig>> {
    if !path.exists() && path == Path::new("load-image.yaml") {
        return Ok(None);
    }
    SyncConfig::load(path).map(Some)
}

/// The newest synced chart for this release: by `--chart` when it names a
/// synced chart_ref or name, else by release name, else by chart name.
fn find_synced<'a>(
    state: &'a SyncState,
    release: &str,
    chart: Option<&str>,
) -> Option<&'a SyncedChart> {
    let newest = |pred: &dyn Fn(&SyncedChart) -> bool| {
        state
            .charts
            .iter()
            .filter(|c| pred(c))
            .max_by(|a, b| crate::chart::package::compare_versions(&a.version, &b.version))
    };
    if let Some(c) = chart {
        return newest(&|s: &SyncedChart| s.chart_ref == c || s.name == c);
    }
    newest(&|s: &SyncedChart| s.release.as_ref().is_some_and(|r| r.name == release))
        .or_else(|| newest(&|s: &SyncedChart| s.name == release))
}

async fn find_release(
    helm: &Helm,
    release: &str,
    ns_hint: Option<&str>,
    ns_given: bool,
) -> anyhow::Result<ListedRelease> {
    if let Some(ns) = ns_hint {
        let found = helm.find_release(release, Some(ns)).await?;
        if let Some(r) = found.into_iter().next() {
            return Ok(r);
        }
        if ns_given {
            bail!(
                "release {release} not found in namespace {ns} (helm list -n {ns}); check the name and namespace"
            );
        }
    }
    let found = helm.find_release(release, None).await?;
    match found.len() {
        0 => bail!(
            "release {release} not found in any namespace (helm list -A); check the name, or install it first with helm install"
        ),
        1 => Ok(found.into_iter().next().unwrap()),
        _ => Err(input_error(format!(
            "release {release} exists in several namespaces ({}); choose one with -n",
            found.iter().map(|r| r.namespace.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn choose_chart(
    args: &UpgradeArgs,
    synced: Option<&SyncedChart>,
    config: Option<&SyncConfig>,
) -> anyhow::Result<ChartTarget> {
    let version = args.version.clone();
    if let Some(c) = &args.chart {
        // a synced chart named by --chart: take its repo and version
        if let Some(s) = synced {
            if s.chart_ref == *c || s.name == *c {
                let mut t = from_synced(s, config);
                if version.is_some() {
                    t.version = version;
                }
                return Ok(t);
            }
        }
        return Ok(ChartTarget {
            chart: c.clone(),
            repo_url: None,
            version,
        });
    }
    let Some(s) = synced else {
        return Err(input_error(format!(
            "no chart known for release {}: give --chart (oci://..., a .tgz, or repo/name) and --version, \
             or run in the directory where `bundler sync` ran (its record is {})",
            args.release,
            SyncState::path_for(&args.config).display()
        )));
    };
    let mut t = from_synced(s, config);
    if version.is_some() {
        t.version = version;
    }
    Ok(t)
}

fn from_synced(s: &SyncedChart, config: Option<&SyncConfig>) -> ChartTarget {
    let kind = s.kind.to_ascii_uppercase();
    let repo_url = s
        .repo_url
        .clone()
        .or_else(|| (kind == "HARBOR" || kind == "CHARTMUSEUM").then(|| s.chart_ref.clone()));
    let chart = if repo_url.is_some() {
        s.name.clone()
    } else if kind == "LOCAL"
        && Path::new(&s.chart_ref).is_relative()
        && !Path::new(&s.chart_ref).exists()
    {
        // relative to the config's directory
        let base = config
            .map(|c| c.file.clone())
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        base.join(&s.chart_ref).to_string_lossy().into_owned()
    } else {
        s.chart_ref.clone()
    };
    ChartTarget {
        chart,
        repo_url,
        version: Some(s.version.clone()),
    }
}

/// Flags for fetching the chart: `--repo`, credentials, TLS.
async fn chart_flags(
    args: &UpgradeArgs,
    chart: &ChartTarget,
    config: Option<&SyncConfig>,
) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(u) = &chart.repo_url {
        f.push("--repo".into());
        f.push(u.clone());
    }
    let target = config.and_then(|c| c.target_repo.as_ref());
    let is_oci = chart.chart.starts_with("oci://");
    let remote = is_oci || chart.repo_url.is_some();
    if remote {
        if let Some(a) = target.and_then(|t| t.auth.as_ref()) {
            if !a.username.is_empty() {
                f.push("--username".into());
                f.push(a.username.clone());
                f.push("--password".into());
                f.push(a.password.clone());
            }
        }
        if let Some(ca) = &args.transport.ca_file {
            f.push("--ca-file".into());
            f.push(ca.to_string_lossy().into_owned());
        }
        let url = chart
            .repo_url
            .clone()
            .unwrap_or_else(|| chart.chart.clone());
        if is_oci {
            let host = url
                .trim_start_matches("oci://")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            let config_plain = target
                .filter(|t| t.kind == RepoKind::Oci)
                .and_then(|t| t.oci_location())
                .is_some_and(|l| l.plain_http && l.registry == host);
            if config_plain || (args.transport.insecure() && speaks_plain_http(&host).await) {
                f.push("--plain-http".into());
            } else if args.transport.insecure() {
                f.push("--insecure-skip-tls-verify".into());
            }
        } else if args.transport.insecure() && url.starts_with("https://") {
            f.push("--insecure-skip-tls-verify".into());
        }
    }
    f
}

/// Whether `host` answers plain HTTP on `/v2/` (an insecure registry).
async fn speaks_plain_http(host: &str) -> bool {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    client
        .get(format!("http://{host}/v2/"))
        .send()
        .await
        .is_ok_and(|r| {
            r.headers().contains_key("docker-distribution-api-version")
                || r.status().as_u16() == 401
                || r.status().is_success()
        })
}

/// `<dir>/<release>/<UTC %Y%m%dT%H%M%SZ>-rev<N>.yaml`, never overwriting:
/// a second backup in the same second gets `-2`, `-3`, ...
fn write_backup(dir: &Path, release: &str, rev: &str, text: &str) -> anyhow::Result<PathBuf> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = time::OffsetDateTime::now_utc().format(&fmt)?;
    let rel_dir = dir.join(release);
    std::fs::create_dir_all(&rel_dir)
        .with_context(|| format!("creating the backup directory {}", rel_dir.display()))?;
    for n in 1..1000 {
        let name = if n == 1 {
            format!("{stamp}-rev{rev}.yaml")
        } else {
            format!("{stamp}-rev{rev}-{n}.yaml")
        };
        let path = rel_dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(text.as_bytes())
                    .and_then(|_| f.sync_all())
                    .with_context(|| format!("writing the values backup {}", path.display()))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating the values backup {}", path.display()))
            }
        }
    }
    bail!(
        "too many backups named {stamp}-rev{rev}*.yaml in {}",
        rel_dir.display()
    )
}

/// HEAD every image in the target registry; returns the missing ones and
/// the ones that could not be checked (each with the reason). Images that
/// point at another registry count as missing.
async fn check_images(
    args: &UpgradeArgs,
    store: CredentialStore,
    registry: &str,
    images: &[String],
    out: &Out,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let host = registry.split('/').next().unwrap_or(registry);
    let client = RegistryClient::new(
        ClientOptions {
            insecure: args.transport.insecure(),
            ca_file: args.transport.ca_file.clone(),
            max_attempts: 3,
            ..Default::default()
        },
        store,
    )?;
    enum Res {
        Present,
        Missing(String),
        Unchecked(String),
    }
    let checks = images.iter().map(|img| {
        let client = client.clone();
        async move {
            let r = match Reference::parse(img) {
                Ok(r) => r,
                Err(e) => {
                    return (
                        img.clone(),
                        Res::Missing(format!("not a valid image reference: {e:#}")),
                    )
                }
            };
            if r.registry != host {
                return (
                    img.clone(),
                    Res::Missing(format!(
                        "points at {}, not at the target registry {host}",
                        r.registry
                    )),
                );
            }
            match client
                .head_manifest(&r.registry, &r.repository, &r.manifest_reference())
                .await
            {
                Ok(Some(_)) => (img.clone(), Res::Present),
                Ok(None) => (img.clone(), Res::Missing(format!("not found in {host}"))),
                Err(e) => (img.clone(), Res::Unchecked(format!("{e:#}"))),
            }
        }
    });
    let results = futures_util::future::join_all(checks).await;
    let (mut missing, mut unchecked) = (Vec::new(), Vec::new());
    for (img, res) in results {
        match res {
            Res::Present => out.say(format!("  ok       {img}")),
            Res::Missing(why) => {
                out.say(format!("  MISSING  {img} ({why})"));
                missing.push(format!("{img} ({why})"));
            }
            Res::Unchecked(why) => {
                out.say(format!("  ERROR    {img} ({why})"));
                unchecked.push(format!("{img} ({why})"));
            }
        }
    }
    Ok((missing, unchecked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_backup(dir.path(), "web", "2", "a: 1\n").unwrap();
        let b = write_backup(dir.path(), "web", "2", "a: 2\n").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "a: 1\n");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "a: 2\n");
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with("Z-rev2.yaml"), "{name}");
        assert_eq!(a.parent().unwrap(), dir.path().join("web"));
    }
}
