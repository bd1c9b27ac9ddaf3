//! The plan of a sync, made with HEAD requests only, before any blob is
//! read: the cheapest way to learn what must move.
//!
//! 1. Every target manifest is HEADed (in parallel, bounded). An image whose
//!    tag already points at the same digest is unchanged: that HEAD is all
//!    it costs. The registry accepted that manifest, so its blobs are in its
//!    repository and can be mounted into others.
//! 2. Every blob of a changed image is HEADed in its target repository
//!    (unless an unchanged image there already proves it present).
//! 3. Each missing blob gets one action: mounted from a repository of the
//!    same registry that has it, or uploaded once per registry (the first
//!    repository that needs it) and mounted into the others after that.
//!
//! The plan's upload bytes are the progress total: only bytes that move.
//! A delta package's external-blob check belongs here too (before the first
//! upload): every blob the bundle does not carry must be present.
use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::stream::{self, StreamExt};

use super::report::Failures;
use crate::oci::media::Descriptor;
use crate::oci::registry::RegistryClient;
use crate::oci::Digest;
use crate::transfer::ImageJob;

/// What happens to one blob in one target repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobAction {
    /// Already in the repository.
    Skip,
    /// In another repository of the registry before the run: mount it.
    Mount { from: String },
    /// Nowhere in the registry: stream it from the bundle (hashed as it
    /// goes).
    Upload,
    /// Uploaded in this run into `from` (step `after`): mount it once that
    /// upload is in.
    MountAfterUpload { from: String, after: usize },
}

/// One blob of one target repository.
#[derive(Clone, Debug)]
pub struct BlobStep {
    pub registry: String,
    pub repo: String,
    pub desc: Descriptor,
    /// The bundle to read it from (index into the run's bundles).
    pub bundle: usize,
    pub action: BlobAction,
    /// The jobs (images) that need this blob in this repository.
    pub images: Vec<usize>,
}

/// The whole plan.
#[derive(Debug, Default)]
pub struct Plan {
    pub jobs: Vec<ImageJob>,
    /// Per job: its tag already points at its digest.
    pub unchanged: Vec<bool>,
    /// Every blob of every changed image, once per target repository.
    pub steps: Vec<BlobStep>,
}

impl Plan {
    pub fn changed(&self) -> impl Iterator<Item = (usize, &ImageJob)> {
        self.jobs
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.unchanged[*i])
    }

    pub fn unchanged_count(&self) -> usize {
        self.unchanged.iter().filter(|u| **u).count()
    }

    /// Bytes that will move (the uploads).
    pub fn upload_bytes(&self) -> u64 {
        self.uploads().map(|s| s.desc.size).sum()
    }

    pub fn uploads(&self) -> impl Iterator<Item = &BlobStep> {
        self.steps.iter().filter(|s| s.action == BlobAction::Upload)
    }

    pub fn mounts(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| {
                matches!(
                    s.action,
                    BlobAction::Mount { .. } | BlobAction::MountAfterUpload { .. }
                )
            })
            .count()
    }

    /// Blobs of changed images already in place.
    pub fn skipped(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.action == BlobAction::Skip)
            .count()
    }
}

/// The reference a job's manifest goes under: its tag, else its digest.
pub fn tag_or_digest(job: &ImageJob) -> String {
    job.target
        .tag
        .clone()
        .unwrap_or_else(|| job.image.root.digest.to_string())
}

/// Requests in flight while planning: HEADs are small, so more of them than
/// uploads, still bounded.
fn head_parallelism(concurrency: usize) -> usize {
    (concurrency.max(1) * 4).min(64)
}

/// Make the plan. Failures (the registry down, credentials refused) are
/// per image, to be grouped by cause; nothing has been pushed then.
pub async fn make(
    client: &RegistryClient,
    jobs: Vec<ImageJob>,
    concurrency: usize,
) -> Result<Plan, Failures> {
    let par = head_parallelism(concurrency);
    let mut failures = Failures::new(super::report::Stage::Plan);

    // 1. Manifests.
    let heads: Vec<(usize, anyhow::Result<Option<Digest>>)> =
        stream::iter(jobs.iter().enumerate().map(|(i, job)| async move {
            let r = client
                .head_manifest(
                    &job.target.registry,
                    &job.target.repository,
                    &tag_or_digest(job),
                )
                .await;
            (i, r)
        }))
        .buffer_unordered(par)
        .collect()
        .await;
    let mut unchanged = vec![false; jobs.len()];
    for (i, r) in heads {
        match r {
            Ok(d) => unchanged[i] = d.as_ref() == Some(&jobs[i].image.root.digest),
            Err(e) => failures.add(jobs[i].target.to_string(), &e),
        }
    }
    if !failures.is_empty() {
        return Err(failures);
    }

    // Where each blob is known to be: (registry, digest) -> repositories.
    let mut holders: HashMap<(String, Digest), Vec<String>> = HashMap::new();
    let mut present: HashSet<(String, String, Digest)> = HashSet::new();
    for job in jobs
        .iter()
        .zip(&unchanged)
        .filter(|(_, u)| **u)
        .map(|(j, _)| j)
    {
        for b in &job.image.blobs {
            note_present(&mut holders, &mut present, job, &b.digest);
        }
    }

    // 2. Blobs of changed images, once per repository.
    let mut needed: BTreeMap<(String, String, Digest), BlobStep> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate().filter(|(i, _)| !unchanged[*i]) {
        for b in &job.image.blobs {
            let key = (
                job.target.registry.clone(),
                job.target.repository.clone(),
                b.digest.clone(),
            );
            needed
                .entry(key)
                .or_insert_with(|| BlobStep {
                    registry: job.target.registry.clone(),
                    repo: job.target.repository.clone(),
                    desc: b.clone(),
                    bundle: job.bundle,
                    action: BlobAction::Upload,
                    images: Vec::new(),
                })
                .images
                .push(i);
        }
    }
    let to_head: Vec<&(String, String, Digest)> =
        needed.keys().filter(|k| !present.contains(*k)).collect();
    let found: Vec<(usize, anyhow::Result<bool>)> = stream::iter(to_head.iter().enumerate().map(
        |(n, (reg, repo, d))| async move {
            (
                n,
                client.blob_exists(reg, repo, d).await.map(|s| s.is_some()),
            )
        },
    ))
    .buffer_unordered(par)
    .collect()
    .await;
    for (n, r) in found {
        let (reg, repo, d) = to_head[n];
        match r {
            Ok(true) => {
                present.insert((reg.clone(), repo.clone(), d.clone()));
                holders
                    .entry((reg.clone(), d.clone()))
                    .or_default()
                    .push(repo.clone());
            }
            Ok(false) => {}
            Err(e) => {
                for &i in &needed[to_head[n]].images {
                    failures.add(jobs[i].target.to_string(), &e);
                }
            }
        }
    }
    if !failures.is_empty() {
        return Err(failures);
    }

    // 3. One action per missing blob.
    let mut steps = Vec::new();
    let mut uploaded_at: HashMap<(String, Digest), (String, usize)> = HashMap::new();
    for (key, mut step) in needed {
        let present_here = present.contains(&key);
        let (reg, _, d) = key;
        let rk = (reg, d);
        step.action = if present_here {
            BlobAction::Skip
        } else if let Some(from) = holders.get(&rk).and_then(|h| h.first()) {
            BlobAction::Mount { from: from.clone() }
        } else if let Some((from, after)) = uploaded_at.get(&rk) {
            BlobAction::MountAfterUpload {
                from: from.clone(),
                after: *after,
            }
        } else {
            uploaded_at.insert(rk, (step.repo.clone(), steps.len()));
            BlobAction::Upload
        };
        steps.push(step);
    }
    Ok(Plan {
        jobs,
        unchanged,
        steps,
    })
}

fn note_present(
    holders: &mut HashMap<(String, Digest), Vec<String>>,
    present: &mut HashSet<(String, String, Digest)>,
    job: &ImageJob,
    digest: &Digest,
) {
    let key = (
        job.target.registry.clone(),
        job.target.repository.clone(),
        digest.clone(),
    );
    if present.insert(key) {
        holders
            .entry((job.target.registry.clone(), digest.clone()))
            .or_default()
            .push(job.target.repository.clone());
    }
}
