//! `bundler upgrade RELEASE...` (SPEC §7): for every release find it, back
//! up its values, show the values diff, check every image the new chart
//! renders is in the private registry — all of that before the first
//! change — then `helm upgrade` them in order; when one fails, it and those
//! already upgraded in this run are rolled back in reverse order, because
//! the components of one product (skoala and skoala-init) only work at
//! matching versions.
pub mod access;
pub mod backup;
pub mod chart_guard;
pub mod helm;
pub mod pending;
pub mod plan;
pub mod secrets_mask;
pub mod values;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use crate::error::{input_error, redact, RolledBack};
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
    pub upgrade_command: String,
    /// `planned`, `upgraded`, `installed`, `failed`, `rolled-back`,
    /// `failed-unchanged` (failed before writing a revision),
    /// `rollback-failed`, `not-started`.
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
    #[arg(required_unless_present = "all", conflicts_with = "all")]
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
    let releases = if args.all {
        every_synced_release(&helm, &state, args, &out).await?
    } else {
        args.releases.clone()
    };
    let mut cx = plan::RunContext {
        args,
        config: config.as_ref(),
        state: &state,
        out: &out,
        access: access::Access::default(),
    };
    let plans = make_plans(&mut cx, &helm, &releases).await?;
    let mut summaries: Vec<ReleaseSummary> = plans.iter().map(summary_of).collect();
    if args.dry_run {
        for s in &summaries {
            out.say(format!("dry run: would run\n  {}", s.upgrade_command));
        }
        out.say("dry run: nothing was changed");
        return print_json(args, &helm, "planned", summaries);
    }
    crate::outcome::record(&summary(args, &helm, "planned", summaries.clone()));

    // ---- 5. upgrade in order; 6. on failure roll back in reverse ----
    match upgrade_in_order(&plans, &mut summaries, timeout, &out).await? {
        None => {
            settle(&plans, &mut summaries).await;
            out.say(stand_line(&summaries));
            print_json(args, &helm, "upgraded", summaries)
        }
        Some((failed, why)) => {
            let undo = undo_run(&plans, &mut summaries, failed, timeout, &out).await;
            let outcome = if undo.errors.is_empty() {
                "rolled-back"
            } else {
                "failed"
            };
            // with --json, cli prints the recorded summary beside the error
            crate::outcome::record(&summary(args, &helm, outcome, summaries));
            Err(failure_error(&plans, failed, &why, &undo))
        }
    }
}

/// Flag checks that need no cluster; returns `--timeout` as a duration.
fn check_flags(args: &UpgradeArgs) -> anyhow::Result<Duration> {
    let timeout = helm::parse_duration(&args.timeout)
        .map_err(|e| input_error(format!("--timeout {}: {e:#}", args.timeout)))?;
    if (args.chart.is_some() || args.version.is_some()) && (args.all || args.releases.len() > 1) {
        return Err(input_error(
            "--chart and --version name one chart: give them with one release only",
        ));
    }
    for f in &args.values {
        if !f.is_file() {
            return Err(input_error(format!(
                "{}: values file not found (-f)",
                f.display()
            )));
        }
    }
    Ok(timeout)
}

/// Steps 1-4 for every release (`NAME` or `NAME@CONTEXT`), in order.
async fn make_plans(
    cx: &mut plan::RunContext<'_>,
    helm: &Helm,
    releases: &[String],
) -> anyhow::Result<Vec<Plan>> {
    let mut plans: Vec<Plan> = Vec::new();
    for spec in releases {
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
        plans.push(plan::prepare(cx, r, rhelm).await?);
    }
    Ok(plans)
}

/// Run every upgrade in order; stop at the first failure: (index, why).
async fn upgrade_in_order(
    plans: &[Plan],
    summaries: &mut [ReleaseSummary],
    timeout: Duration,
    out: &Out,
) -> anyhow::Result<Option<(usize, String)>> {
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
            continue;
        }
        let why = redact(r.stderr.trim());
        out.say(format!("helm upgrade of {} failed: {why}", p.release));
        summaries[i].outcome = "failed".into();
        return Ok(Some((i, why)));
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
fn failure_error(plans: &[Plan], failed: usize, why: &str, undo: &UndoReport) -> anyhow::Error {
    let p = &plans[failed];
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
    let tail = format!(
        "{}. Values backup(s): {}. To restore by hand: {}",
        undo.stands,
        if backups.is_empty() {
            "none".to_string()
        } else {
            backups.join(", ")
        },
        by_hand.join("; ")
    );
    if undo.errors.is_empty() {
        anyhow::Error::new(RolledBack(format!(
            "helm upgrade of {} failed ({why}); {back_to}.{others} {tail}",
            p.release
        )))
    } else {
        anyhow::anyhow!(
            "helm upgrade of {} failed ({why}) and rolling back failed too: {}. {tail}",
            p.release,
            undo.errors.join("; ")
        )
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
    let mut names: Vec<String> = Vec::new();
    for c in &state.charts {
        let r = c
            .release
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_else(|| c.name.clone());
        if !names.contains(&r) {
            names.push(r);
        }
    }
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
        let up = display_command(
            &helm.path,
            &helm.on_cluster(strings(&[
                "upgrade",
                &p.release,
                &format!("<repo>/{name}"),
                "-n",
                &p.namespace,
                "-f",
                &backup.to_string_lossy(),
                "--version",
                &v,
            ])),
        );
        s.push_str(&format!(
            " (or reinstall the old chart with the backed-up values: {up})"
        ));
    }
    s
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
