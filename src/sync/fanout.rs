//! Sync to several registries at once (`target.mirrors`): the main target
//! and every mirror get every image, each blob is read from the bundle once
//! for all of them ([`crate::oci::registry::FeedSender`]), and a target
//! that fails does not keep the others from completing: its images get no
//! manifest (nothing half-visible there), the others get theirs, the run
//! fails naming it, and the summary has one line per target.
use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::plan::{self, BlobAction, Plan};
use super::report::{self, SyncSummary};
use super::timeline::Timeline;
use crate::bundle::reader::BundleReader;
use crate::oci::registry::RegistryClient;
use crate::progress::Progress;
use crate::transfer::{self, ImageJob};

/// One target registry's part of a run.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetLine {
    pub registry: String,
    pub images: usize,
    pub images_pushed: usize,
    pub images_unchanged: usize,
    pub images_failed: usize,
    pub blobs_uploaded: usize,
    /// Bytes of the blobs uploaded to this registry (per target; the
    /// bundle is read once for all of them).
    pub bytes_uploaded: u64,
    pub ok: bool,
}

impl TargetLine {
    pub fn text(&self) -> String {
        format!(
            "target {}: {} ({} pushed, {} unchanged, {} failed); {} uploaded ({})",
            self.registry,
            report::count(self.images, "image", "images"),
            self.images_pushed,
            self.images_unchanged,
            self.images_failed,
            report::count(self.blobs_uploaded, "blob", "blobs"),
            crate::progress::human_bytes(self.bytes_uploaded),
        )
    }
}

/// Plan, blobs for every target, then the manifests of the targets whose
/// blobs are all in. Fills `summary` (with `targets`) as far as it got.
pub async fn push_images(
    client: &RegistryClient,
    readers: &[&BundleReader],
    jobs: Vec<ImageJob>,
    concurrency: usize,
    progress: &Progress,
    summary: &mut SyncSummary,
    timeline: &Timeline,
) -> anyhow::Result<()> {
    // One plan per target registry, made at once: a registry that cannot
    // be planned (down, credentials refused) fails alone.
    let mut by_registry: BTreeMap<String, Vec<ImageJob>> = BTreeMap::new();
    for j in jobs {
        by_registry
            .entry(j.target.registry.clone())
            .or_default()
            .push(j);
    }
    let planned =
        futures_util::future::join_all(by_registry.into_iter().map(|(reg, jobs)| async move {
            let images: Vec<String> = jobs.iter().map(|j| j.target.to_string()).collect();
            (
                reg,
                images,
                plan::make(client, jobs, concurrency, timeline).await,
            )
        }))
        .await;
    let mut plans = Vec::new();
    let mut unplanned: Vec<(String, usize, super::report::Failures)> = Vec::new();
    for (reg, images, p) in planned {
        match p {
            Ok(p) => plans.push(p),
            Err(f) => unplanned.push((reg, images.len(), f)),
        }
    }
    if plans.is_empty() {
        let (_, _, f) = unplanned.remove(0);
        summary.images_failed = f.images();
        return Err(f.into_error());
    }
    let plan = merge(plans);
    summary.images_unchanged = plan.unchanged_count();
    summary.blobs_skipped = plan.skipped();
    progress.println(format!(
        "plan: {} to {} ({} unchanged); blobs: {} uploads ({}, read once), {} to mount, {} already there",
        report::count(plan.jobs.len(), "image", "images"),
        report::count(registries(&plan).len(), "registry", "registries"),
        summary.images_unchanged,
        plan.uploads().count(),
        crate::progress::human_bytes(plan.upload_bytes()),
        plan.mounts(),
        summary.blobs_skipped,
    ));
    let t = std::time::Instant::now();
    let blobs =
        transfer::push_blobs_per_registry(client, readers, &plan, concurrency, progress, timeline)
            .await
            .map_err(|f| {
                summary.images_failed = f.images();
                f.into_error()
            })?;
    timeline.ended("blobs", t);
    summary.blobs_uploaded = blobs.report.uploaded;
    summary.blobs_mounted = blobs.report.mounted;
    summary.blobs_skipped += blobs.report.skipped;
    let t = std::time::Instant::now();
    let manifests = transfer::push_manifests_except(
        client,
        &plan,
        plan::head_parallelism(concurrency),
        progress,
        &blobs.failed_registries,
    )
    .await;
    timeline.ended("manifests", t);
    summary.images_pushed = manifests.pushed.len();
    let mut failed_jobs = manifests.failed.clone();
    for (i, job) in plan.changed() {
        if blobs.failed_registries.contains(&job.target.registry) {
            failed_jobs.insert(i);
        }
    }
    summary.images_failed = failed_jobs.len();
    summary.targets = target_lines(&plan, &blobs.failed_registries, &failed_jobs);
    for (reg, images, _) in &unplanned {
        summary.images_failed += images;
        summary.targets.push(TargetLine {
            registry: reg.clone(),
            images: *images,
            images_failed: *images,
            ok: false,
            ..TargetLine::default()
        });
    }
    let failed: Vec<&TargetLine> = summary.targets.iter().filter(|t| !t.ok).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = failed.iter().map(|t| t.registry.as_str()).collect();
    let ok: Vec<&str> = (summary.targets.iter())
        .filter(|t| t.ok)
        .map(|t| t.registry.as_str())
        .collect();
    let cause = if let Some((_, _, f)) = unplanned.into_iter().next() {
        f.into_error()
    } else if !blobs.failures.is_empty() {
        blobs.failures.into_error()
    } else {
        manifests.failures.into_error()
    };
    Err(cause.context(format!(
        "{} failed: {}; {}",
        report::count(names.len(), "target", "targets"),
        names.join(", "),
        if ok.is_empty() {
            "no target is complete".to_string()
        } else {
            format!(
                "complete: {} (run sync again for the others)",
                ok.join(", ")
            )
        }
    )))
}

/// One plan of several (each of its own registries): jobs and steps
/// concatenated, the indices between them shifted.
fn merge(plans: Vec<Plan>) -> Plan {
    let mut out = Plan::default();
    for p in plans {
        let (jobs_before, steps_before) = (out.jobs.len(), out.steps.len());
        out.jobs.extend(p.jobs);
        out.unchanged.extend(p.unchanged);
        for mut s in p.steps {
            for i in &mut s.images {
                *i += jobs_before;
            }
            if let BlobAction::MountAfterUpload { after, .. } = &mut s.action {
                *after += steps_before;
            }
            out.steps.push(s);
        }
    }
    out
}

fn registries(plan: &Plan) -> Vec<&str> {
    let mut r: Vec<&str> = plan
        .jobs
        .iter()
        .map(|j| j.target.registry.as_str())
        .collect();
    r.sort();
    r.dedup();
    r
}

/// One line per target registry, in the order the targets first appear.
fn target_lines(
    plan: &Plan,
    failed_registries: &HashSet<String>,
    failed_jobs: &HashSet<usize>,
) -> Vec<TargetLine> {
    let mut order: Vec<String> = Vec::new();
    let mut lines: BTreeMap<String, TargetLine> = BTreeMap::new();
    for (i, job) in plan.jobs.iter().enumerate() {
        let reg = job.target.registry.clone();
        let l = lines.entry(reg.clone()).or_insert_with(|| {
            order.push(reg.clone());
            TargetLine {
                registry: reg.clone(),
                ok: true,
                ..TargetLine::default()
            }
        });
        l.images += 1;
        if plan.unchanged[i] {
            l.images_unchanged += 1;
        } else if failed_jobs.contains(&i) {
            l.images_failed += 1;
            l.ok = false;
        } else {
            l.images_pushed += 1;
        }
    }
    for s in plan.steps.iter().filter(|s| s.action == BlobAction::Upload) {
        if let Some(l) = lines.get_mut(&s.registry) {
            if !failed_registries.contains(&s.registry) {
                l.blobs_uploaded += 1;
                l.bytes_uploaded += s.desc.size;
            }
        }
    }
    for r in failed_registries {
        if let Some(l) = lines.get_mut(r) {
            l.ok = false;
        }
    }
    order.into_iter().filter_map(|r| lines.remove(&r)).collect()
}
