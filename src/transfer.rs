//! The transfer engine: carries out a sync plan ([`crate::sync::plan`]) in
//! two phases, so that nothing is visible before everything is in.
//!
//! 1. **Blobs.** Every upload of the run, `--concurrency` at a time, each
//!    streamed from its bundle file and hashed as it streams (one read per
//!    byte; a mismatch aborts that upload before it commits). A blob
//!    uploaded into one repository is then mounted into the others of the
//!    same registry that need it. Small JSON blobs (image configs) are read
//!    and checked before the first upload and sent from memory.
//! 2. **Manifests and tags**, only when every blob of the run is in and
//!    matched its digest: child manifests of an index first, the tagged
//!    manifest last. A damaged blob therefore fails the run before any
//!    manifest is pushed; the blobs already committed have no manifest and
//!    stay invisible (registry garbage collection takes them, a re-run
//!    skips them).
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures_util::stream::{self, FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use crate::bundle::reader::{BundleImage, BundleReader};
use crate::oci::registry::{feed, BlobSource, PushOutcome, RegistryClient, SourceDamaged};
use crate::oci::{Digest, Reference};
use crate::progress::Progress;
use crate::sync::plan::{self, BlobAction, Plan};
use crate::sync::report::{Failures, Stage};
use crate::sync::timeline::Timeline;

/// One image to push: which bundle it is in, what it is, where it goes.
#[derive(Clone, Debug)]
pub struct ImageJob {
    pub bundle: usize,
    pub image: BundleImage,
    pub target: Reference,
}

/// What the blob phase did.
#[derive(Debug, Default)]
pub struct BlobReport {
    pub uploaded: usize,
    pub mounted: usize,
    /// Found in place when its turn came (another client put it there).
    pub skipped: usize,
}

/// Config blobs up to this size are read whole, checked, and sent from
/// memory (they are a few KiB; a JSON blob larger than this streams).
const SMALL_JSON_BLOB: u64 = 1 << 20;

#[derive(Default)]
struct Counters {
    uploaded: AtomicUsize,
    mounted: AtomicUsize,
    skipped: AtomicUsize,
}

impl Counters {
    fn count(&self, outcome: PushOutcome) {
        match outcome {
            PushOutcome::Uploaded => &self.uploaded,
            PushOutcome::Mounted => &self.mounted,
            PushOutcome::Skipped => &self.skipped,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// Shared by every blob task of the phase.
struct BlobRun<'a> {
    client: &'a RegistryClient,
    readers: &'a [&'a BundleReader],
    plan: &'a Plan,
    progress: &'a Progress,
    uploads: Semaphore,
    counters: Counters,
    /// Set on a damaged blob: tasks not yet started do not start.
    stop: AtomicBool,
    /// Configs read and checked before the phase, by step.
    small: HashMap<usize, Bytes>,
    failures: Mutex<Failures>,
    /// First upload started, last upload ended (the timeline's
    /// `blobs.uploads`).
    upload_span: Mutex<(Option<Instant>, Option<Instant>)>,
    /// Registries a blob failed for (their images get no manifest).
    failed_registries: Mutex<HashSet<String>>,
}

/// What the blob phase left: what it did, what failed, and for which
/// target registries (`target.mirrors`: the others may go on).
pub struct BlobPhase {
    pub report: BlobReport,
    pub failures: Failures,
    pub failed_registries: HashSet<String>,
}

/// Phase 1 for every target registry at once; failures are returned per
/// registry instead of failing the phase (see [`push_blobs`]).
pub async fn push_blobs_per_registry(
    client: &RegistryClient,
    readers: &[&BundleReader],
    plan: &Plan,
    concurrency: usize,
    progress: &Progress,
    timeline: &Timeline,
) -> Result<BlobPhase, Failures> {
    let t = Instant::now();
    let small = read_small_blobs(readers, plan)?;
    timeline.ended("blobs.readConfigs", t);
    progress.add_total(plan.upload_bytes());
    let run = BlobRun {
        client,
        readers,
        plan,
        progress,
        uploads: Semaphore::new(concurrency.max(1)),
        counters: Counters::default(),
        stop: AtomicBool::new(false),
        small,
        failures: Mutex::new(Failures::new(Stage::Blobs)),
        upload_span: Mutex::new((None, None)),
        failed_registries: Mutex::new(HashSet::new()),
    };
    run_steps(&run).await;
    if let (Some(a), Some(b)) = *run.upload_span.lock().unwrap_or_else(|e| e.into_inner()) {
        timeline.span("blobs.uploads", a, b);
    }
    let mut failures = run.failures.into_inner().unwrap_or_else(|e| e.into_inner());
    let report = BlobReport {
        uploaded: run.counters.uploaded.load(Ordering::Relaxed),
        mounted: run.counters.mounted.load(Ordering::Relaxed),
        skipped: run.counters.skipped.load(Ordering::Relaxed),
    };
    failures.blobs_in = report.uploaded + report.mounted;
    Ok(BlobPhase {
        report,
        failures,
        failed_registries: run
            .failed_registries
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
    })
}

/// Every upload and mount of the plan: largest first, uploads of one blob
/// into several registries fed from one read.
async fn run_steps(run: &BlobRun<'_>) {
    let plan = run.plan;
    // Mounts that wait for an upload of this run, by that upload's step.
    let mut after: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        if let BlobAction::MountAfterUpload { after: u, .. } = s.action {
            after.entry(u).or_default().push(i);
        }
    }
    // Uploads of the same blob of the same bundle into several registries
    // (`target.mirrors`), streamed from the bundle: one read feeds them.
    let mut groups: HashMap<(usize, &Digest), Vec<usize>> = HashMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        if s.action == BlobAction::Upload && !run.small.contains_key(&i) {
            groups
                .entry((s.bundle, &s.desc.digest))
                .or_default()
                .push(i);
        }
    }
    // Largest first: the permits are handed out in this order (tokio's
    // semaphore is fair), so the last blob to start is a small one and
    // the slots drain together (as a plain parallel PUT of the same files
    // sorted by size does), instead of one big layer finishing alone.
    let mut order: Vec<usize> = (0..plan.steps.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(plan.steps[i].desc.size));
    type Task<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
    let mut tasks: FuturesUnordered<Task<'_>> = FuturesUnordered::new();
    // Members of a fed group, started with it.
    let mut launched: HashSet<usize> = HashSet::new();
    for i in order {
        let s = &plan.steps[i];
        match &s.action {
            BlobAction::Upload => {
                let key = (s.bundle, &s.desc.digest);
                if groups.get(&key).is_some_and(|g| g.len() > 1) {
                    let members: Vec<(usize, Vec<usize>)> = (groups.remove(&key))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|m| (m, after.remove(&m).unwrap_or_default()))
                        .collect();
                    launched.extend(members.iter().map(|m| m.0));
                    tasks.push(Box::pin(fed_uploads(run, members)));
                } else if !launched.contains(&i) {
                    let dependents = after.remove(&i).unwrap_or_default();
                    tasks.push(Box::pin(upload_then_mount(run, i, dependents, None)));
                }
            }
            BlobAction::Mount { .. } => {
                tasks.push(Box::pin(upload_then_mount(run, i, Vec::new(), None)))
            }
            BlobAction::MountAfterUpload { .. } | BlobAction::Skip => {}
        }
    }
    while tasks.next().await.is_some() {}
}

/// The uploads of one blob into several registries, fed from one read of
/// the bundle (one permit: one blob moving), each followed by the mounts
/// that wait for it.
async fn fed_uploads(run: &BlobRun<'_>, members: Vec<(usize, Vec<usize>)>) {
    let Ok(_permit) = run.uploads.acquire().await else {
        return;
    };
    let first = &run.plan.steps[members[0].0];
    let (path, offset, len) = match bundle_source(run.readers[first.bundle], &first.desc.digest) {
        Ok(BlobSource::FileRange { path, offset, len }) => (path, offset, len),
        Ok(_) => unreachable!("bundle_source gives a file range"),
        Err(e) => {
            for (step, deps) in &members {
                run.fail(*step, deps, &e);
            }
            return;
        }
    };
    let (sender, taps) = feed(path.clone(), offset, len, members.len());
    let uploads = members.into_iter().zip(taps).map(|((step, deps), tap)| {
        let source = BlobSource::Fed {
            tap: std::sync::Arc::new(tap),
            path: path.clone(),
            offset,
            len,
        };
        upload_then_mount(run, step, deps, Some(source))
    });
    futures_util::future::join(sender.run(), futures_util::future::join_all(uploads)).await;
}

impl BlobRun<'_> {
    /// Record that `step` (and the mounts waiting for it) failed.
    fn fail(&self, step: usize, dependents: &[usize], e: &anyhow::Error) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut regs = self
            .failed_registries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for &s in std::iter::once(&step).chain(dependents) {
            let st = &self.plan.steps[s];
            regs.insert(st.registry.clone());
            for &img in &st.images {
                f.add(self.plan.jobs[img].target.to_string(), e);
            }
        }
    }
}

/// Phase 1: every blob of the plan. On any failure no manifest may follow;
/// the error lists every cause with the images it hit.
pub async fn push_blobs(
    client: &RegistryClient,
    readers: &[&BundleReader],
    plan: &Plan,
    concurrency: usize,
    progress: &Progress,
    timeline: &Timeline,
) -> Result<BlobReport, Failures> {
    let phase =
        push_blobs_per_registry(client, readers, plan, concurrency, progress, timeline).await?;
    if phase.failures.is_empty() {
        Ok(phase.report)
    } else {
        Err(phase.failures)
    }
}

/// Read and check every config that must be uploaded, before the first
/// upload: a damaged config stops the run with nothing sent.
fn read_small_blobs(
    readers: &[&BundleReader],
    plan: &Plan,
) -> Result<HashMap<usize, Bytes>, Failures> {
    let mut out = HashMap::new();
    let mut failures = Failures::new(Stage::Blobs);
    for (i, s) in plan.steps.iter().enumerate() {
        let small = s.action == BlobAction::Upload
            && s.desc.size <= SMALL_JSON_BLOB
            && s.desc.media_type.ends_with("json");
        if !small {
            continue;
        }
        let reader = readers[s.bundle];
        match reader.read_blob(&s.desc.digest) {
            Ok(b) => {
                out.insert(i, Bytes::from(b));
            }
            Err(e) => {
                let e = anyhow::Error::new(SourceDamaged(format!(
                    "bundle {}: blob {} is corrupted or unreadable: {e:#}",
                    reader.label, s.desc.digest
                )));
                for &img in &s.images {
                    failures.add(plan.jobs[img].target.to_string(), &e);
                }
            }
        }
    }
    if failures.is_empty() {
        Ok(out)
    } else {
        Err(failures)
    }
}

/// One step (an upload or a mount), then the mounts that waited for it.
async fn upload_then_mount(
    run: &BlobRun<'_>,
    step: usize,
    dependents: Vec<usize>,
    fed: Option<BlobSource>,
) {
    let done = one_step(run, step, fed).await;
    if let Ok(false) = done {
        // Stopped (a damaged blob elsewhere): its mounts have nothing to
        // mount from.
        return;
    }
    if let Err(e) = done {
        let damaged = e.chain().any(|c| c.is::<SourceDamaged>());
        if damaged {
            run.stop.store(true, Ordering::Relaxed);
        }
        run.fail(step, &dependents, &e);
        return;
    }
    let mounts: FuturesUnordered<_> = dependents
        .iter()
        .map(|&d| async move { (d, one_step(run, d, None).await) })
        .collect();
    let results: Vec<(usize, anyhow::Result<bool>)> = mounts.collect().await;
    for (d, r) in results {
        if let Err(e) = r {
            run.fail(d, &[], &e);
        }
    }
}

/// One upload or mount; `Ok(false)` when the run was stopped before it.
/// With `fed`: an upload of a fed group (its permit is the group's).
async fn one_step(run: &BlobRun<'_>, i: usize, fed: Option<BlobSource>) -> anyhow::Result<bool> {
    let s = &run.plan.steps[i];
    let reader = run.readers[s.bundle];
    let label = format!("{}@{}", s.repo, short(&s.desc.digest));
    let (mount_from, permit) = match &s.action {
        BlobAction::Upload if fed.is_some() => (None, None),
        BlobAction::Upload => (None, Some(run.uploads.acquire().await?)),
        BlobAction::Mount { from } | BlobAction::MountAfterUpload { from, .. } => {
            (Some(from.as_str()), None)
        }
        BlobAction::Skip => return Ok(true),
    };
    if run.stop.load(Ordering::Relaxed) {
        return Ok(false);
    }
    let source = match (run.small.get(&i), fed) {
        (Some(b), _) => BlobSource::Bytes(b.clone()),
        (None, Some(fed)) => fed,
        (None, None) => bundle_source(reader, &s.desc.digest)?,
    };
    let began = Instant::now();
    let outcome = if mount_from.is_some() {
        // No progress bar: a mount moves no bytes (if the registry refuses
        // it, the client uploads instead, which the summary counts).
        run.client
            .push_planned_blob(
                &s.registry,
                &s.repo,
                &s.desc.digest,
                source,
                mount_from,
                None,
            )
            .await
    } else {
        let mut t = run.progress.transfer(&label, s.desc.size);
        let r = run
            .client
            .push_planned_blob(
                &s.registry,
                &s.repo,
                &s.desc.digest,
                source,
                None,
                Some(&mut t),
            )
            .await;
        if let Ok(o) = &r {
            t.finish(outcome_word(*o));
        }
        r
    }
    .map_err(|e| {
        if e.chain().any(|c| c.is::<SourceDamaged>()) {
            e.context(format!(
                "bundle {}: blob {} is corrupted",
                reader.label, s.desc.digest
            ))
        } else {
            e
        }
    })?;
    if permit.is_some() || s.action == BlobAction::Upload {
        let mut span = run.upload_span.lock().unwrap_or_else(|e| e.into_inner());
        span.0 = Some(span.0.map_or(began, |a| a.min(began)));
        span.1 = Some(Instant::now());
    }
    drop(permit);
    run.counters.count(outcome);
    if mount_from.is_some() {
        run.progress.blob_line(
            outcome_word(outcome),
            &label,
            s.desc.size,
            mount_from.filter(|_| outcome == PushOutcome::Mounted),
        );
    }
    Ok(true)
}

fn outcome_word(o: PushOutcome) -> &'static str {
    match o {
        PushOutcome::Uploaded => "uploaded",
        PushOutcome::Mounted => "mounted",
        PushOutcome::Skipped => "skipped",
    }
}

/// Phase 2: the manifests of every changed image, bounded; returns how
/// many images were pushed. Failures name what was pushed beside them.
pub async fn push_manifests(
    client: &RegistryClient,
    plan: &Plan,
    concurrency: usize,
    progress: &Progress,
) -> Result<usize, Failures> {
    let done = push_manifests_except(client, plan, concurrency, progress, &HashSet::new()).await;
    if done.failures.is_empty() {
        Ok(done.pushed.len())
    } else {
        Err(done.failures)
    }
}

/// What phase 2 did.
pub struct ManifestPhase {
    /// Jobs whose manifests are in.
    pub pushed: Vec<usize>,
    /// Jobs that failed, with the causes.
    pub failed: HashSet<usize>,
    pub failures: Failures,
}

/// Phase 2 for the changed images of every registry but `skip` (whose
/// blobs did not all get in).
pub async fn push_manifests_except(
    client: &RegistryClient,
    plan: &Plan,
    concurrency: usize,
    progress: &Progress,
    skip: &HashSet<String>,
) -> ManifestPhase {
    let results: Vec<(usize, anyhow::Result<()>)> = stream::iter(
        plan.changed()
            .filter(|(_, job)| !skip.contains(&job.target.registry)),
    )
    .map(|(i, job)| async move { (i, push_manifest(client, job, progress).await) })
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    let mut done = ManifestPhase {
        pushed: Vec::new(),
        failed: HashSet::new(),
        failures: Failures::new(Stage::Manifests),
    };
    for (i, r) in results {
        match r {
            Ok(()) => done.pushed.push(i),
            Err(e) => {
                done.failed.insert(i);
                done.failures.add(plan.jobs[i].target.to_string(), &e);
            }
        }
    }
    done.failures.pushed = done.pushed.len();
    done
}

async fn push_manifest(
    client: &RegistryClient,
    job: &ImageJob,
    progress: &Progress,
) -> anyhow::Result<()> {
    push_manifest_inner(client, job, progress)
        .await
        .map_err(|e| crate::sync::concurrent::explain_manifest_failure(e, &job.target))
}

async fn push_manifest_inner(
    client: &RegistryClient,
    job: &ImageJob,
    progress: &Progress,
) -> anyhow::Result<()> {
    let (registry, repo) = (job.target.registry.as_str(), job.target.repository.as_str());
    let root = &job.image.root;
    for child in &job.image.children {
        client
            .put_manifest(
                registry,
                repo,
                &child.digest.to_string(),
                &child.media_type,
                child.bytes.clone(),
            )
            .await
            .with_context(|| format!("pushing manifest {}", child.digest))?;
    }
    let got = client
        .put_manifest(
            registry,
            repo,
            &plan::tag_or_digest(job),
            &root.media_type,
            root.bytes.clone(),
        )
        .await?;
    anyhow::ensure!(
        got == root.digest,
        "the registry stored {} as {got}, expected {}",
        job.target,
        root.digest
    );
    progress.println(format!("pushed {} ({})", job.target, root.digest));
    Ok(())
}

/// The byte range of a blob in its bundle file, as a push source.
fn bundle_source(reader: &BundleReader, digest: &Digest) -> anyhow::Result<BlobSource> {
    let extent = reader
        .blob(digest)
        .with_context(|| format!("blob {digest} is not in bundle {}", reader.label))?;
    if let crate::package::source::PackageFile::Volumes(_) = reader.file() {
        return Ok(BlobSource::PackageRange {
            file: std::sync::Arc::new(reader.file().try_clone()?),
            offset: extent.offset,
            len: extent.size,
        });
    }
    Ok(BlobSource::FileRange {
        path: reader.path.clone(),
        offset: extent.offset,
        len: extent.size,
    })
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}
