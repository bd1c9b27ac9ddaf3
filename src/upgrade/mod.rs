//! `bundler upgrade RELEASE...` (SPEC §7): for every release find it, back
//! up its values, show the values diff, check every image the new chart
//! renders is in the private registry — all of that before the first
//! change — then `helm upgrade` them in order; when one fails, it and those
//! already upgraded in this run are rolled back in reverse order, because
//! the components of one product (skoala and skoala-init) only work at
//! matching versions.
pub mod access;
pub mod after;
pub mod backup;
pub mod chart_guard;
pub mod cluster;
pub mod helm;
pub mod pending;
pub mod pins;
pub mod plan;
pub mod plan_file;
pub mod proof;
pub mod record;
pub mod scoped;
pub mod secrets_mask;
pub mod values;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use crate::error::{input_error, redact, NotRolledBack, RolledBack};
use crate::state::SyncState;
use helm::{display_command, Helm};
use plan::{strings, Plan};

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

/// What `--json` prints: the run, and one entry per release.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub helm_version: String,
    pub dry_run: bool,
    /// `planned` (dry run), `upgraded`, `rolled-back`, `failed`.
    pub outcome: String,
    pub releases: Vec<ReleaseSummary>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSummary {
    pub release: String,
    pub namespace: String,
    pub chart: ChartTarget,
    pub registry: String,
    /// `None`: the release was not installed before (`--install`).
    pub from_revision: Option<String>,
    pub from_chart: Option<String>,
    pub backup: Option<PathBuf>,
    pub values_diff: Vec<String>,
    pub images: Vec<String>,
    pub missing_images: Vec<String>,
    /// Backed-up values that pinned another image than the bundle carries.
    pub stale_pins: Vec<pins::StalePin>,
    /// The post-upgrade check, one entry per image the release runs.
    pub image_checks: Vec<proof::ImageCheck>,
    pub upgrade_command: String,
    /// `planned`, `upgraded`, `installed`, `failed`, `check-failed` (helm
    /// succeeded, the release does not run the package's images),
    /// `rolled-back`, `failed-unchanged` (failed before writing a
    /// revision), `rollback-failed`, `not-started`.
    pub outcome: String,
    /// The revision the release stands at after the run (`None`: not installed).
    pub revision: Option<String>,
    pub status: Option<String>,
}

pub struct Out {
    json: bool,
}

impl Out {
    /// Human output: stdout, or stderr when stdout carries the JSON summary.
    pub fn say(&self, msg: impl AsRef<str>) {
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
    /// The releases to upgrade, in this order (e.g. skoala skoala-init);
    /// NAME@CONTEXT reaches that release through another kubeconfig context.
    #[arg(required_unless_present_any = ["all", "plan"], conflicts_with_all = ["all", "plan"])]
    pub releases: Vec<String>,
    /// Every chart of the synced package that has a release (with
    /// --install: also those without), in the package's order.
    #[arg(long)]
    pub all: bool,
    /// Install a release that does not exist yet (helm upgrade --install --create-namespace).
    #[arg(long)]
    pub install: bool,
    /// The sync config the images and charts went through.
    #[arg(long, short = 'c', default_value = "load-image.yaml")]
    pub config: std::path::PathBuf,
    /// Namespace of the release; default: the one its bundle records, else the only namespace helm lists it in.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// kubeconfig context for every helm call that reaches the cluster.
    #[arg(long)]
    pub kube_context: Option<String>,
    /// kubeconfig file for every helm call that reaches the cluster.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Chart reference (oci://..., repo/name, or a .tgz); default: the relocated chart in the sync target. One release only.
    #[arg(long)]
    pub chart: Option<String>,
    /// Chart version; default: the newest synced. One release only.
    #[arg(long)]
    pub version: Option<String>,
    /// Image registry for global.imageRegistry; default: the sync target's.
    #[arg(long)]
    pub registry: Option<String>,
    /// Extra helm --set values; with several releases each names its own: RELEASE:K=V.
    #[arg(long = "set", value_name = "[RELEASE:]K=V")]
    pub set: Vec<String>,
    /// Extra helm values files; with several releases each names its own: RELEASE:FILE.
    #[arg(short = 'f', long = "values", value_name = "[RELEASE:]FILE")]
    pub values: Vec<std::path::PathBuf>,
    /// An upgrade plan: the releases in order, each with its context and own values (YAML).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["all", "set", "values"])]
    pub plan: Option<std::path::PathBuf>,
    /// Replay backed-up image values that pin another image than the bundle carries.
    #[arg(long)]
    pub keep_pinned_images: bool,
    /// When the post-upgrade check finds images that are not the package's, leave the release as helm left it (exit 3).
    #[arg(long)]
    pub no_rollback: bool,
    /// The kubectl binary that writes bundler's deploy record (also $BUNDLER_KUBECTL).
    #[arg(long)]
    pub kubectl: Option<std::path::PathBuf>,
    /// Where values backups are kept.
    #[arg(long, default_value = "backups")]
    pub backup_dir: std::path::PathBuf,
    /// Stop after the pre-flight; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Go on even when the pre-flight finds missing images, or the release runs a chart of another name.
    #[arg(long)]
    pub force: bool,
    /// A release left pending by an interrupted helm run: back up its values, roll it back to its last deployed revision (or remove an interrupted install), then upgrade.
    #[arg(long)]
    pub recover: bool,
    /// helm --timeout for each upgrade and each rollback (also bounds the helm process).
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
    let timeout = check_flags(args)?;

    // ---- inputs: config (optional), sync state, helm ----
    let config = plan::load_config(&args.config)?;
    let state = SyncState::load(&args.config)?;
    let mut cluster = Vec::new();
    if let Some(c) = &args.kube_context {
        cluster.extend(["--kube-context".to_string(), c.clone()]);
    }
    if let Some(k) = &args.kubeconfig {
        cluster.extend(["--kubeconfig".to_string(), k.to_string_lossy().into_owned()]);
    }
    let helm = Helm::detect(args.helm.as_deref(), cluster).await?;
    out.say(format!("helm {} ({})", helm.version, helm.path.display()));

    // ---- steps 1-4 for every release, before any change ----
    let (releases, own_values) = if let Some(f) = &args.plan {
        plan_file::load(f)?
    } else {
        let releases = if args.all {
            every_synced_release(&helm, &state, args, &out).await?
        } else {
            args.releases.clone()
        };
        let own = scoped::split(&args.set, &args.values, &releases)?;
        (releases, own)
    };
    let mut cx = plan::RunContext {
        args,
        config: config.as_ref(),
        state: &state,
        out: &out,
        access: access::Access::default(),
    };
    let plans = make_plans(&mut cx, &helm, &releases, &own_values).await?;
    let mut summaries: Vec<ReleaseSummary> = plans.iter().map(summary_of).collect();
    if args.dry_run {
        // helm's private config dir goes away with this run: name it, not its path
        if let Some(dir) = cx.access.private_dir() {
            let dir = dir.to_string_lossy().into_owned();
            for s in summaries.iter_mut() {
                s.upgrade_command = s
                    .upgrade_command
                    .replace(&dir, "<private dir made at run time>");
            }
        }
        for s in &summaries {
            out.say(format!("dry run: would run\n  {}", s.upgrade_command));
        }
        out.say("dry run: nothing was changed");
        return print_json(args, &helm, "planned", summaries);
    }
    crate::outcome::record(&summary(args, &helm, "planned", summaries.clone()));

    // ---- 5. upgrade in order, 7. prove each; 6. on failure roll back in reverse ----
    let after_cx = AfterContext {
        args,
        config: config.as_ref(),
        timeout,
        out: &out,
    };
    match upgrade_in_order(&plans, &mut summaries, &after_cx).await? {
        None => {
            settle(&plans, &mut summaries).await;
            out.say(stand_line(&summaries));
            print_json(args, &helm, "upgraded", summaries)
        }
        Some(Failure { index, why, check }) if check && args.no_rollback => {
            for s in summaries.iter_mut().skip(index + 1) {
                s.outcome = "not-started".into();
            }
            settle(&plans, &mut summaries).await;
            let stands = stand_line(&summaries);
            out.say(&stands);
            crate::outcome::record(&summary(args, &helm, "check-failed", summaries));
            Err(anyhow::Error::new(NotRolledBack(format!(
                "post-upgrade check of {} failed: {why}; not rolled back (--no-rollback). {stands}. \
                 To put it back: {}",
                plans[index].release,
                restore_command(&plans[index])
            ))))
        }
        Some(Failure { index, why, check }) => {
            let undo = undo_run(&plans, &mut summaries, index, timeout, &out).await;
            let outcome = if undo.errors.is_empty() {
                "rolled-back"
            } else {
                "failed"
            };
            // the records of releases put back say so (a rollback is a new revision)
            for (i, p) in plans.iter().enumerate().take(index + 1) {
                if summaries[i].outcome == "rolled-back" && p.current.is_some() {
                    after::record(p, args, "rolled-back", &[], &out).await;
                }
            }
            // with --json, cli prints the recorded summary beside the error
            crate::outcome::record(&summary(args, &helm, outcome, summaries));
            Err(failure_error(&plans, index, &why, check, &undo))
        }
    }
}

/// What the steps after each helm upgrade need.
struct AfterContext<'a> {
    args: &'a UpgradeArgs,
    config: Option<&'a crate::config::load_image::SyncConfig>,
    timeout: Duration,
    out: &'a Out,
}

/// The release that failed, why, and whether helm succeeded but the
/// post-upgrade check did not.
struct Failure {
    index: usize,
    why: String,
    check: bool,
}

/// Flag checks that need no cluster; returns `--timeout` as a duration.
fn check_flags(args: &UpgradeArgs) -> anyhow::Result<Duration> {
    let timeout = helm::parse_duration(&args.timeout)
        .map_err(|e| input_error(format!("--timeout {}: {e:#}", args.timeout)))?;
    if (args.chart.is_some() || args.version.is_some())
        && (args.all || args.plan.is_some() || args.releases.len() > 1)
    {
        return Err(input_error(
            "--chart and --version name one chart: give them with one release only",
        ));
    }
    if args.no_rollback && args.dry_run {
        return Err(input_error(
            "--no-rollback and --dry-run: a dry run changes nothing to roll back",
        ));
    }
    // `-f` files are checked with the releases they belong to (scoped::split)
    Ok(timeout)
}

/// Steps 1-4 for every release (`NAME` or `NAME@CONTEXT`), in order.
async fn make_plans(
    cx: &mut plan::RunContext<'_>,
    helm: &Helm,
    releases: &[String],
    own_values: &[scoped::ReleaseValues],
) -> anyhow::Result<Vec<Plan>> {
    let mut plans: Vec<Plan> = Vec::new();
    for (spec, own) in releases.iter().zip(own_values) {
        // NAME@CONTEXT: this release lives in another cluster (seed 002:
        // skoala on the global service cluster, skoala-init on a worker)
        let (r, rhelm) = match spec.split_once('@') {
            Some((r, ctx)) if !r.is_empty() && !ctx.is_empty() => (r, helm.with_context(ctx)),
            Some(_) => {
                return Err(input_error(format!(
                    "{spec}: write a release as NAME or NAME@KUBE-CONTEXT"
                )))
            }
            None => (spec.as_str(), helm.clone()),
        };
        if plans
            .iter()
            .any(|p| p.release == r && p.helm.cluster == rhelm.cluster)
        {
            return Err(input_error(format!("release {spec} is named twice")));
        }
        plans.push(plan::prepare(cx, r, rhelm, own).await?);
    }
    Ok(plans)
}

/// Run every upgrade in order, each proven when helm returns; stop at the
/// first failure.
async fn upgrade_in_order(
    plans: &[Plan],
    summaries: &mut [ReleaseSummary],
    cx: &AfterContext<'_>,
) -> anyhow::Result<Option<Failure>> {
    let (timeout, out) = (cx.timeout, cx.out);
    for (i, p) in plans.iter().enumerate() {
        out.say(format!("running {}", summaries[i].upgrade_command));
        let r = p.helm.change(&p.upgrade, timeout).await?;
        if r.ok {
            let what = if p.current.is_some() {
                "upgraded"
            } else {
                "installed"
            };
            out.say(format!(
                "{what} {} in {}{}",
                p.release,
                p.namespace,
                p.backup
                    .as_ref()
                    .map(|b| format!("; values backup kept at {}", b.display()))
                    .unwrap_or_default()
            ));
            summaries[i].outcome = what.into();
            // ---- 7. the proof: what the release holds now ----
            let failed = match after::prove(p, cx.args, cx.config, out).await {
                Ok(checks) => {
                    let failed = after::failure(p, &checks);
                    summaries[i].image_checks = checks;
                    failed
                }
                Err(e) => Some(format!("reading what the release holds failed: {e:#}")),
            };
            if let Some(why) = failed {
                out.say(format!("post-upgrade check of {} failed: {why}", p.release));
                summaries[i].outcome = "check-failed".into();
                return Ok(Some(Failure {
                    index: i,
                    why,
                    check: true,
                }));
            }
            after::record(p, cx.args, "upgraded", &summaries[i].image_checks, out).await;
            continue;
        }
        let why = redact(r.stderr.trim());
        out.say(format!("helm upgrade of {} failed: {why}", p.release));
        summaries[i].outcome = "failed".into();
        return Ok(Some(Failure {
            index: i,
            why,
            check: false,
        }));
    }
    Ok(None)
}

/// What undoing a failed run found.
struct UndoReport {
    errors: Vec<String>,
    /// The failed release itself had no new revision.
    failed_untouched: bool,
    /// "now: web stands at revision 4 (deployed), ..."
    stands: String,
}

/// Roll back the failed release and those upgraded before it, in reverse
/// order; then read where every release stands.
async fn undo_run(
    plans: &[Plan],
    summaries: &mut [ReleaseSummary],
    failed: usize,
    timeout: Duration,
    out: &Out,
) -> UndoReport {
    let mut errors = Vec::new();
    let mut failed_untouched = false;
    for i in (0..=failed).rev() {
        let p = &plans[i];
        match roll_back(p, timeout, out).await {
            Ok(Undo::NothingChanged) => {
                summaries[i].outcome = "failed-unchanged".into();
                failed_untouched |= i == failed;
            }
            Ok(Undo::Done) => summaries[i].outcome = "rolled-back".into(),
            Err(e) => {
                summaries[i].outcome = "rollback-failed".into();
                errors.push(format!("{}: {e:#}", p.release));
            }
        }
    }
    for s in summaries.iter_mut().skip(failed + 1) {
        s.outcome = "not-started".into();
    }
    settle(plans, summaries).await;
    let stands = stand_line(summaries);
    out.say(&stands);
    UndoReport {
        errors,
        failed_untouched,
        stands,
    }
}

/// The run's error: what failed, where each release stands, the backups
/// and the commands to restore by hand.
fn failure_error(
    plans: &[Plan],
    failed: usize,
    why: &str,
    check: bool,
    undo: &UndoReport,
) -> anyhow::Error {
    let p = &plans[failed];
    let what = if check {
        format!("post-upgrade check of {} failed", p.release)
    } else {
        format!("helm upgrade of {} failed", p.release)
    };
    let backups: Vec<String> = plans[..=failed]
        .iter()
        .filter_map(|p| p.backup.as_ref().map(|b| b.display().to_string()))
        .collect();
    let by_hand: Vec<String> = plans[..=failed].iter().rev().map(restore_command).collect();
    let back_to = match p.from_revision() {
        Some(rev) if undo.failed_untouched => {
            format!("it still stands at revision {rev} (helm wrote no new revision)")
        }
        None if undo.failed_untouched => "it was not installed".to_string(),
        Some(rev) => format!("rolled back to revision {rev}"),
        None => "uninstalled again".to_string(),
    };
    let others = if failed > 0 {
        format!(
            " {} already upgraded in this run were rolled back too, in reverse order.",
            plans[..failed]
                .iter()
                .map(|p| p.release.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    let backups = if backups.is_empty() {
        "none".to_string()
    } else {
        backups.join(", ")
    };
    if undo.errors.is_empty() {
        // rolled back: nothing is left to do by hand
        anyhow::Error::new(RolledBack(format!(
            "{what} ({why}); {back_to}.{others} {}. Values backup(s): {backups}.",
            undo.stands
        )))
    } else {
        anyhow::Error::new(NotRolledBack(format!(
            "{what} ({why}) and rolling back failed too: {}. {}. Values backup(s): {backups}. \
             To restore by hand: {}",
            undo.errors.join("; "),
            undo.stands,
            by_hand.join("; ")
        )))
    }
}

/// `--all`: the newest synced chart of every chart name, in the record's
/// (the package's) order; those without a release are left out unless
/// `--install`.
async fn every_synced_release(
    helm: &Helm,
    state: &SyncState,
    args: &UpgradeArgs,
    out: &Out,
) -> anyhow::Result<Vec<String>> {
    let names = state.release_names();
    if names.is_empty() {
        return Err(input_error(format!(
            "--all: no synced charts recorded in {}; run bundler sync first, or name the releases",
            SyncState::path_for(&args.config).display()
        )));
    }
    if args.install {
        return Ok(names);
    }
    let mut found = Vec::new();
    for n in names {
        let ns = args.namespace.as_deref();
        if helm.find_release(&n, ns).await?.is_empty() {
            out.say(format!(
                "--all: {n} has no release in the cluster; skipped (--install would install it)"
            ));
        } else {
            found.push(n);
        }
    }
    if found.is_empty() {
        bail!("--all: none of the synced charts has a release in the cluster; pass --install to install them");
    }
    Ok(found)
}

enum Undo {
    Done,
    /// The failed upgrade wrote no revision: nothing to undo.
    NothingChanged,
}

/// Put one release back where it stood: `helm rollback` to the backed-up
/// revision, or `helm uninstall` when it was installed by this run.
async fn roll_back(p: &Plan, timeout: Duration, out: &Out) -> anyhow::Result<Undo> {
    let helm = &p.helm;
    // an upgrade that failed before writing a revision left nothing to undo
    if let Ok(latest) = helm.latest(&p.release, &p.namespace).await {
        let unchanged = match (&latest, p.from_revision()) {
            (Some(h), Some(rev)) => h.revision == rev,
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            out.say(format!(
                "{}: nothing to roll back (no new revision was written)",
                p.release
            ));
            return Ok(Undo::NothingChanged);
        }
    }
    let args = match p.from_revision() {
        Some(rev) => {
            out.say(format!("rolling back {} to revision {rev}", p.release));
            strings(&[
                "rollback",
                &p.release,
                rev,
                "-n",
                &p.namespace,
                helm.wait_flag(),
                "--timeout",
                &helm::show_duration(timeout),
            ])
        }
        None => {
            out.say(format!(
                "uninstalling {} (it was installed by this run)",
                p.release
            ));
            strings(&[
                "uninstall",
                &p.release,
                "-n",
                &p.namespace,
                helm.wait_flag(),
                "--timeout",
                &helm::show_duration(timeout),
            ])
        }
    };
    let args = helm.on_cluster(args);
    let r = helm.change(&args, timeout).await?;
    if !r.ok {
        bail!(
            "`{}`: {}",
            display_command(&helm.path, &args),
            redact(r.stderr.trim())
        );
    }
    Ok(Undo::Done)
}

/// Read where each release stands now (helm history), for the summary.
async fn settle(plans: &[Plan], summaries: &mut [ReleaseSummary]) {
    for (p, s) in plans.iter().zip(summaries.iter_mut()) {
        match p.helm.latest(&p.release, &p.namespace).await {
            Ok(Some(h)) => {
                s.revision = Some(h.revision);
                s.status = Some(h.status);
            }
            Ok(None) => {
                s.revision = None;
                s.status = Some("not installed".into());
            }
            Err(e) => s.status = Some(format!("unknown ({e:#})")),
        }
    }
}

fn stand_line(summaries: &[ReleaseSummary]) -> String {
    let parts: Vec<String> = summaries
        .iter()
        .map(|s| match (&s.revision, &s.status) {
            (Some(r), Some(st)) => format!("{} stands at revision {r} ({st})", s.release),
            (None, Some(st)) => format!("{} is {st}", s.release),
            _ => format!("{}: unknown", s.release),
        })
        .collect();
    format!("now: {}", parts.join(", "))
}

fn summary_of(p: &Plan) -> ReleaseSummary {
    let helm = &p.helm;
    ReleaseSummary {
        release: p.release.clone(),
        namespace: p.namespace.clone(),
        chart: p.chart.clone(),
        registry: p.registry.clone(),
        from_revision: p.from_revision().map(str::to_string),
        from_chart: p.current.as_ref().map(|c| c.chart.clone()),
        backup: p.backup.clone(),
        values_diff: p.values_diff.clone(),
        images: p.images.clone(),
        missing_images: p.missing_images.clone(),
        stale_pins: p.stale_pins.clone(),
        image_checks: Vec::new(),
        upgrade_command: display_command(&helm.path, &p.upgrade),
        outcome: "planned".into(),
        revision: p.from_revision().map(str::to_string),
        status: p.current.as_ref().map(|c| c.status.clone()),
    }
}

/// What to run by hand to put a release back where it stood.
fn restore_command(p: &Plan) -> String {
    let helm = &p.helm;
    let Some(rev) = p.from_revision() else {
        return display_command(
            &helm.path,
            &helm.on_cluster(strings(&["uninstall", &p.release, "-n", &p.namespace])),
        );
    };
    let mut s = display_command(
        &helm.path,
        &helm.on_cluster(strings(&[
            "rollback",
            &p.release,
            rev,
            "-n",
            &p.namespace,
            helm.wait_flag(),
        ])),
    );
    let listed = p.current.as_ref().expect("a revision means a release");
    if let (Some(name), Some(v), Some(backup)) = (
        listed.chart_name(),
        listed.chart_version(),
        p.backup.as_ref(),
    ) {
        let mut up = strings(&["upgrade", &p.release]);
        up.extend(old_chart_args(&p.chart, &name, &v));
        up.extend(strings(&[
            "-n",
            &p.namespace,
            "-f",
            &backup.to_string_lossy(),
            "--version",
            &v,
        ]));
        let up = display_command(&helm.path, &helm.on_cluster(up));
        s.push_str(&format!(
            " (or reinstall the old chart with the backed-up values: {up})"
        ));
    }
    s
}

/// CHART (and `--repo URL`) naming the old chart `name` `version` where
/// this run's chart came from: the same OCI repository or chart repository,
/// the LOCAL `.tgz` beside the new one; `REPO/name` only when nothing says.
fn old_chart_args(c: &ChartTarget, name: &str, version: &str) -> Vec<String> {
    if let Some(url) = &c.repo_url {
        return vec![name.to_string(), "--repo".into(), url.clone()];
    }
    if let Some(rest) = c.chart.strip_prefix("oci://") {
        let base = rest.rsplit_once('/').map(|(b, _)| b).unwrap_or(rest);
        return vec![format!("oci://{base}/{name}")];
    }
    if c.chart.ends_with(".tgz") {
        let old = std::path::Path::new(&c.chart).with_file_name(format!("{name}-{version}.tgz"));
        if old.is_file() {
            return vec![old.to_string_lossy().into_owned()];
        }
    }
    vec![format!("REPO/{name}")]
}

fn summary(
    args: &UpgradeArgs,
    helm: &Helm,
    outcome: &str,
    releases: Vec<ReleaseSummary>,
) -> Summary {
    Summary {
        helm_version: helm.version.clone(),
        dry_run: args.dry_run,
        outcome: outcome.into(),
        releases,
    }
}

fn print_json(
    args: &UpgradeArgs,
    helm: &Helm,
    outcome: &str,
    releases: Vec<ReleaseSummary>,
) -> anyhow::Result<()> {
    if args.json {
        let s = summary(args, helm, outcome, releases);
        println!("{}", redact(&serde_json::to_string_pretty(&s)?));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_by_hand_names_where_the_old_chart_is() {
        let t = |chart: &str, repo_url: Option<&str>| ChartTarget {
            chart: chart.into(),
            repo_url: repo_url.map(str::to_string),
            version: Some("1.2.0".into()),
        };
        assert_eq!(
            old_chart_args(&t("oci://reg:5000/charts/shop", None), "shop", "1.1.0"),
            vec!["oci://reg:5000/charts/shop"]
        );
        assert_eq!(
            old_chart_args(&t("shop", Some("https://h/chartrepo/p")), "shop", "1.1.0"),
            vec!["shop", "--repo", "https://h/chartrepo/p"]
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shop-1.1.0.tgz"), b"x").unwrap();
        let new = dir.path().join("shop-1.2.0.tgz").display().to_string();
        assert_eq!(
            old_chart_args(&t(&new, None), "shop", "1.1.0"),
            vec![dir.path().join("shop-1.1.0.tgz").display().to_string()]
        );
        assert_eq!(
            old_chart_args(&t(&new, None), "shop", "0.9.0"),
            vec!["REPO/shop"]
        );
    }
}
