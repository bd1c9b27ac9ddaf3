//! Steps 1–4 of an upgrade, for one release: find it (or plan its
//! install), choose chart, version and registry, back up its values, show
//! the values diff, render the chart and check every image it names is in
//! the registry. Nothing here changes the cluster; with several releases
//! every plan is made before the first upgrade.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::access::{Access, Transport};
use super::helm::{display_command, Helm, ListedRelease};
use super::pins::{self, StalePin};
use super::scoped::ReleaseValues;
use super::{values, ChartTarget, Out, UpgradeArgs};
use crate::carried::CarriedChart;
use crate::config::load_image::SyncConfig;
use crate::error::{input_error, redact};
use crate::oci::auth::CredentialStore;
use crate::oci::reference::Reference;
use crate::oci::registry::{ClientOptions, RegistryClient};
use crate::state::{SyncState, SyncedChart};

/// Everything known about one release before anything is changed.
pub struct Plan {
    pub release: String,
    pub namespace: String,
    /// The release as `helm list` showed it; `None`: not installed yet (`--install`).
    pub current: Option<ListedRelease>,
    pub chart: ChartTarget,
    pub registry: String,
    pub backup: Option<PathBuf>,
    pub values_diff: Vec<String>,
    pub images: Vec<String>,
    /// Missing or unchecked images (only non-empty with `--force`).
    pub missing_images: Vec<String>,
    /// The `helm upgrade` argv (without the program).
    pub upgrade: Vec<String>,
    /// helm with this release's cluster flags.
    pub helm: Helm,
    /// What the package carries for this chart version (`None`: sync did
    /// not record it, or the chart is not a synced one).
    pub carried: Option<CarriedChart>,
    /// Backed-up values that pin another image than the bundle carries.
    pub stale_pins: Vec<StalePin>,
    /// Rendered images that are not the package's but were kept by
    /// `--keep-pinned-images`: the post-upgrade check lets them through.
    pub kept_images: Vec<String>,
    /// Images the pre-flight found missing or could not check, let through
    /// by `--force`: the post-upgrade check accepts them absent too.
    pub forced_images: Vec<String>,
}

impl Plan {
    pub fn from_revision(&self) -> Option<&str> {
        self.current.as_ref().map(|c| c.revision.as_str())
    }
}

/// What every plan of a run shares.
pub struct RunContext<'a> {
    pub args: &'a UpgradeArgs,
    pub config: Option<&'a SyncConfig>,
    pub state: &'a SyncState,
    pub out: &'a Out,
    pub access: Access,
}

/// Plan `release`, reached through `helm` (whose cluster flags may name
/// another context than the run's).
pub async fn prepare(
    cx: &mut RunContext<'_>,
    release: &str,
    helm: Helm,
    own: &ReleaseValues,
) -> anyhow::Result<Plan> {
    let (args, out) = (cx.args, cx.out);
    let helm = &helm;
    let synced = find_synced(cx.state, release, args.chart.as_deref());

    // ---- 1. find the release ----
    let ns_hint = args.namespace.clone().or_else(|| {
        synced
            .and_then(|s| s.release.as_ref())
            .and_then(|r| r.namespace.clone())
    });
    let current = find_release(
        helm,
        release,
        ns_hint.as_deref(),
        args.namespace.is_some(),
        args.install,
    )
    .await?;
    let current = super::pending::resolve(cx, helm, release, current).await?;
    let ns = match &current {
        Some(c) => {
            out.say(format!(
                "release {release} in namespace {}: revision {}, chart {}, status {}",
                c.namespace, c.revision, c.chart, c.status
            ));
            c.namespace.clone()
        }
        None => {
            let ns = ns_hint.unwrap_or_else(|| "default".to_string());
            out.say(format!(
                "release {release} is not installed: it will be installed in namespace {ns} (--install)"
            ));
            ns
        }
    };

    // chart, version, registry
    let mut chart = choose_chart(args, release, synced, cx.config, cx.state)?;
    super::chart_guard::check(args, release, current.as_ref(), synced, &chart)?;
    let carried = match (synced, chart.version.as_deref()) {
        (Some(s), Some(v)) => CarriedChart::load(&args.config, &s.name, v)?,
        _ => None,
    };
    let registry = args
        .registry
        .clone()
        .or_else(|| synced.map(|s| s.registry.clone()).filter(|r| !r.is_empty()))
        .or_else(|| cx.config.and_then(SyncConfig::image_registry))
        .ok_or_else(|| {
            input_error(format!(
                "no image registry known for {release}: give --registry HOST[:PORT], or run in the \
                 directory of the sync config ({}) so its target registry is used",
                args.config.display()
            ))
        })?;
    let transport = Transport {
        insecure: args.transport.insecure(),
        ca_file: args.transport.ca_file.clone(),
    };
    let chart_flags = cx
        .access
        .chart_flags(helm, &mut chart, cx.config, &transport)
        .await?;

    // ---- 2. back up the current values ----
    let (current_text, backup) = match &current {
        Some(c) => {
            let text = helm
                .query_ok(&helm.on_cluster(strings(&[
                    "get", "values", release, "-n", &ns, "-o", "yaml",
                ])))
                .await?;
            // a dry run writes nothing: its render reads the values from stdin
            let backup = if args.dry_run {
                out.say(format!(
                    "values backup: none written (--dry-run); a run writes {}",
                    args.backup_dir
                        .join(release)
                        .join(format!("<UTC time>-rev{}.yaml", c.revision))
                        .display()
                ));
                PathBuf::from(DRY_RUN_BACKUP)
            } else {
                let b = super::backup::write(&args.backup_dir, release, &c.revision, &text)?;
                out.say(format!("values backup: {}", b.display()));
                b
            };
            (text, Some(backup))
        }
        None => {
            out.say(format!("{release}: nothing to back up (not installed yet)"));
            (String::new(), None)
        }
    };
    let current_values = values::parse_values(&current_text, "`helm get values` output")?;

    // ---- 3. the values diff (stale image pins take the bundle's) ----
    // helm applies --set-string after every -f and --set, so a path this
    // run's own values set is left to them: the user's word of today wins
    let own_overlay = own_values_overlay(own)?;
    let stale_pins: Vec<StalePin> = carried
        .as_ref()
        .map(|c| pins::stale_pins(&current_values, c))
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            let path: Vec<String> = p.path.split('.').map(str::to_string).collect();
            crate::chart::hints::lookup(&own_overlay, &path).is_none()
        })
        .collect();
    let replaced: &[StalePin] = if args.keep_pinned_images {
        &[]
    } else {
        &stale_pins
    };
    let values_diff = show_values_diff(
        args,
        own,
        release,
        &registry,
        &current_values,
        (replaced, &stale_pins),
        out,
    )?;
    let mut value_flags = value_flags(
        own,
        backup.as_deref(),
        &registry,
        chart.version.as_deref(),
        replaced,
    );

    // ---- 4. pre-flight ----
    let mut template = strings(&["template", release, &chart.chart, "-n", &ns]);
    template.extend(value_flags.iter().cloned());
    template.extend(chart_flags.iter().cloned());
    let stdin =
        (backup.as_deref() == Some(Path::new(DRY_RUN_BACKUP))).then_some(current_text.as_bytes());
    if stdin.is_some() {
        swap_backup_arg(&mut template, "-");
    }
    let rendered = helm.exec(&template, stdin, helm.query_bound).await?;
    if rendered.killed_after.is_some() {
        bail!("{}", rendered.stderr);
    }
    if !rendered.ok {
        bail!(
            "pre-flight of {release}: rendering the chart failed, nothing was changed:\n  {}\n{}",
            display_command(&helm.path, &template),
            redact(rendered.stderr.trim())
        );
    }
    let images = values::images_in_manifests(&rendered.stdout)?;
    out.say(format!(
        "pre-flight of {release}: {} image(s) in the rendered chart, checking {registry}",
        images.len()
    ));
    let kept_images: Vec<String> = match &carried {
        Some(c) if args.keep_pinned_images && !stale_pins.is_empty() => images
            .iter()
            .filter(|i| Reference::parse(i).map_or(true, |r| c.find(&r).is_none()))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    let kept_pins = (!kept_images.is_empty()).then_some(&stale_pins[..]);
    let missing = preflight_images(cx, release, &registry, &images, kept_pins).await?;
    let forced_images: Vec<String> = images
        .iter()
        .filter(|i| missing.iter().any(|m| m.starts_with(&format!("{i} ("))))
        .cloned()
        .collect();
    if args.dry_run {
        // the command shown names what a real run would write
        swap_backup_arg(&mut value_flags, "<the values backup>");
    }

    // ---- the upgrade command (run later, after every plan) ----
    let mut upgrade = strings(&["upgrade", release, &chart.chart, "-n", &ns]);
    if current.is_none() {
        upgrade.push("--install".into());
        upgrade.push("--create-namespace".into());
    }
    upgrade.extend(value_flags);
    upgrade.extend(chart_flags);
    upgrade.push(helm.wait_flag().to_string());
    upgrade.push("--timeout".into());
    upgrade.push(args.timeout.clone());
    let upgrade = helm.on_cluster(upgrade);
    Ok(Plan {
        release: release.to_string(),
        namespace: ns,
        current,
        chart,
        registry,
        backup: backup.filter(|b| b != Path::new(DRY_RUN_BACKUP)),
        values_diff,
        images,
        missing_images: missing,
        upgrade,
        helm: helm.clone(),
        carried,
        stale_pins,
        kept_images,
        forced_images,
    })
}

/// This release's own `-f` files and `--set` values of this run, merged.
fn own_values_overlay(own: &ReleaseValues) -> anyhow::Result<serde_yaml_ng::Value> {
    let mut v = serde_yaml_ng::Value::Mapping(Default::default());
    for f in &own.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        values::merge(
            &mut v,
            values::parse_values(&text, &f.display().to_string())
                .map_err(|e| input_error(format!("{e:#}")))?,
        );
    }
    for s in &own.set {
        values::apply_set(&mut v, s);
    }
    Ok(v)
}

/// Stands for the backup path in a dry run, which writes no backup.
const DRY_RUN_BACKUP: &str = "\0dry-run-backup";

/// Replace the dry run's backup placeholder in `-f` arguments.
fn swap_backup_arg(args: &mut [String], with: &str) {
    for a in args.iter_mut() {
        if a == DRY_RUN_BACKUP {
            *a = with.to_string();
        }
    }
}

/// The values the upgrade applies (current + registry + `-f` + `--set`,
/// merged as helm merges them), diffed against the current ones and shown.
fn show_values_diff(
    args: &UpgradeArgs,
    own: &ReleaseValues,
    release: &str,
    registry: &str,
    current: &serde_yaml_ng::Value,
    (replaced, stale): (&[StalePin], &[StalePin]),
    out: &Out,
) -> anyhow::Result<Vec<String>> {
    let mut new_values = current.clone();
    values::apply_set(&mut new_values, &format!("global.imageRegistry={registry}"));
    for p in replaced {
        let escaped = p.carried.replace(',', "\\,");
        values::apply_set_string(&mut new_values, &format!("{}={escaped}", p.path));
    }
    for f in &own.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        values::merge(
            &mut new_values,
            values::parse_values(&text, &f.display().to_string())
                .map_err(|e| input_error(format!("{e:#}")))?,
        );
    }
    for s in &own.set {
        values::apply_set(&mut new_values, s);
    }
    let mut diff = values::diff(current, &new_values);
    pins::annotate_diff(&mut diff, replaced);
    if args.keep_pinned_images {
        diff.extend(pins::kept_lines(stale));
    }
    if diff.is_empty() {
        out.say(format!("{release} values: no change"));
    } else {
        out.say(format!("{release} values diff (current -> new):"));
        for l in &diff {
            out.say(format!("  {l}"));
        }
    }
    Ok(diff)
}

/// The value flags shared by `template` and `upgrade`: the backup first,
/// then the registry, then the user's `-f` and `--set` in order.
fn value_flags(
    own: &ReleaseValues,
    backup: Option<&Path>,
    registry: &str,
    version: Option<&str>,
    replaced: &[StalePin],
) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(b) = backup {
        flags.push("-f".to_string());
        flags.push(b.to_string_lossy().into_owned());
    }
    flags.push("--set".into());
    flags.push(format!("global.imageRegistry={registry}"));
    if let Some(v) = version {
        flags.push("--version".into());
        flags.push(v.to_string());
    }
    flags.extend(pins::set_flags(replaced));
    for f in &own.files {
        flags.push("-f".into());
        flags.push(f.to_string_lossy().into_owned());
    }
    for s in &own.set {
        flags.push("--set".into());
        flags.push(s.clone());
    }
    flags
}

/// Check the images; refuse (unless `--force`) when one is missing or
/// could not be checked. Returns the problems that `--force` let through.
async fn preflight_images(
    cx: &RunContext<'_>,
    release: &str,
    registry: &str,
    images: &[String],
    kept_pins: Option<&[StalePin]>,
) -> anyhow::Result<Vec<String>> {
    let (args, out) = (cx.args, cx.out);
    let store = cx
        .config
        .map(SyncConfig::credential_store)
        .unwrap_or_else(|| CredentialStore {
            use_docker_config: true,
            ..Default::default()
        });
    let (missing, unchecked) = check_images(args, store, registry, images, out).await?;
    if missing.is_empty() && unchecked.is_empty() {
        out.say(format!("pre-flight of {release}: every image is present"));
        return Ok(Vec::new());
    }
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
    // One cause (a TLS or connection problem hits every image alike) is
    // said once, with the images it hit (issue 22).
    let mut causes: Vec<(String, Vec<String>)> = Vec::new();
    for (img, cause) in &unchecked {
        match causes.iter_mut().find(|(c, _)| c == cause) {
            Some((_, imgs)) => imgs.push(img.clone()),
            None => causes.push((cause.clone(), vec![img.clone()])),
        }
    }
    for (cause, imgs) in &causes {
        problems.push_str(&format!(
            "{} image(s) could not be checked: {cause}\n",
            imgs.len()
        ));
        for m in imgs {
            problems.push_str(&format!("  - {m}\n"));
        }
    }
    let tls = !causes.is_empty() && causes.iter().all(|(c, _)| c.contains("TLS"));
    if args.force {
        out.say(format!(
            "pre-flight: going on because of --force although\n{problems}"
        ));
        Ok(missing
            .into_iter()
            .chain(unchecked.into_iter().map(|(i, c)| format!("{i} ({c})")))
            .collect())
    } else if tls && missing.is_empty() {
        bail!(
            "pre-flight failed, nothing was changed: {problems}the images were not checked \
             because of that connection problem: pass --ca-file FILE (the CA that signed the \
             registry's certificate) or --insecure, or --force to upgrade without checking"
        )
    } else {
        if let Some(pins) = kept_pins {
            // the images are missing because old pins are replayed, not because sync was skipped
            let pins: Vec<String> = pins
                .iter()
                .map(|p| {
                    format!(
                        "{}={:?} (the bundle carries {:?})",
                        p.path, p.pinned, p.carried
                    )
                })
                .collect();
            bail!(
                "pre-flight failed, nothing was changed: {problems}--keep-pinned-images replays values pinned \
                 at install that name other images than the bundle carries: {}; drop --keep-pinned-images to \
                 run the bundle's images, or push the pinned images to {registry} as well",
                pins.join(", ")
            )
        }
        bail!(
            "pre-flight failed, nothing was changed: {problems}{}sync the images first (bundler sync --config {}), \
             or pass --force to upgrade anyway",
            if tls {
                "pass --ca-file FILE or --insecure for the TLS problem; "
            } else {
                ""
            },
            args.config.display()
        )
    }
}

pub fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The sync config: required when given explicitly; the default
/// `load-image.yaml` may be absent when flags say everything.
pub fn load_config(path: &Path) -> anyhow::Result<Option<SyncConfig>> {
    if !path.exists() && path == Path::new("load-image.yaml") {
        return Ok(None);
    }
    SyncConfig::load(path).map(Some)
}

/// The newest synced chart for this release: by `--chart` when it names a
/// synced chart_ref or name, else by release name, else by chart name.
pub fn find_synced<'a>(
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
    install: bool,
) -> anyhow::Result<Option<ListedRelease>> {
    if let Some(ns) = ns_hint {
        let found = helm.find_release(release, Some(ns)).await?;
        if let Some(r) = found.into_iter().next() {
            return Ok(Some(r));
        }
        if ns_given && install {
            return Ok(None);
        }
        if ns_given {
            bail!(
                "release {release} not found in namespace {ns} of {} (helm list -n {ns}); check the name, \
                 namespace and cluster, or pass --install to install it",
                super::cluster::describe(helm)
            );
        }
    }
    let found = helm.find_release(release, None).await?;
    match found.len() {
        0 if install => Ok(None),
        0 => bail!(
            "release {release} not found in any namespace of {} (helm list -A); check the name and the \
             cluster (--kube-context, --kubeconfig, NAME@CONTEXT), or pass --install to install it",
            super::cluster::describe(helm)
        ),
        1 => Ok(found.into_iter().next()),
        _ => Err(input_error(format!(
            "release {release} exists in several namespaces ({}); choose one with -n",
            found.iter().map(|r| r.namespace.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn choose_chart(
    args: &UpgradeArgs,
    release: &str,
    synced: Option<&SyncedChart>,
    config: Option<&SyncConfig>,
    state: &SyncState,
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
        if !state.charts.is_empty() {
            // the record is here: it just has no chart for this release name
            let mut known: Vec<String> = state
                .charts
                .iter()
                .map(|c| match &c.release {
                    Some(r) => format!("{} {} (release {})", c.name, c.version, r.name),
                    None => format!("{} {}", c.name, c.version),
                })
                .collect();
            known.dedup();
            return Err(input_error(format!(
                "no synced chart is for release {release}: {} records {}. Name the release the \
                 bundle records, or give --chart with one of those chart names (e.g. --chart {}), \
                 or --chart oci://.../a .tgz and --version",
                SyncState::path_for(&args.config).display(),
                known.join(", "),
                state.charts[0].name
            )));
        }
        return Err(input_error(format!(
            "no chart known for release {}: give --chart (oci://..., a .tgz, or repo/name) and --version, \
             or run in the directory where `bundler sync` ran (its record is {})",
            release,
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

/// HEAD every image in the target registry; returns the missing ones and
/// the ones that could not be checked (each with the reason). Images that
/// point at another registry count as missing.
async fn check_images(
    args: &UpgradeArgs,
    store: CredentialStore,
    registry: &str,
    images: &[String],
    out: &Out,
) -> anyhow::Result<(Vec<String>, Vec<(String, String)>)> {
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
                // The cause without the image (said once, below).
                let cause = why
                    .strip_prefix(&format!("checking manifest {img}: "))
                    .unwrap_or(&why)
                    .to_string();
                out.say(format!(
                    "  ERROR    {img} (could not be checked: see below)"
                ));
                unchecked.push((img, cause));
            }
        }
    }
    Ok((missing, unchecked))
}
