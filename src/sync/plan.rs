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
use std::sync::Mutex;

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
pub fn head_parallelism(concurrency: usize) -> usize {
    (concurrency.max(1) * 4).min(64)
}

/// (registry, repository, blob digest).
type BlobKey = (String, String, Digest);

/// Where blobs are known to be, from unchanged images and blob HEADs.
#[derive(Default)]
struct Known {
    present: HashSet<BlobKey>,
    /// (registry, digest) -> repositories that have it.
    holders: HashMap<(String, Digest), Vec<String>>,
}

impl Known {
    fn note(&mut self, key: &BlobKey) {
        if self.present.insert(key.clone()) {
            self.holders
                .entry((key.0.clone(), key.2.clone()))
                .or_default()
                .push(key.1.clone());
        }
    }

    fn holder(&self, registry: &str, digest: &Digest) -> Option<&String> {
        self.holders
            .get(&(registry.to_string(), digest.clone()))
            .and_then(|h| h.first())
    }
}

fn blob_key(job: &ImageJob, digest: &Digest) -> BlobKey {
    (
        job.target.registry.clone(),
        job.target.repository.clone(),
        digest.clone(),
    )
}

/// Make the plan. Failures (the registry down, credentials refused) are
/// per image, to be grouped by cause; nothing has been pushed then.
///
/// One pass per image: its manifest HEAD, then (changed) the HEADs of its
/// blobs not already asked for, so that the blob HEADs of the first images
/// overlap the manifest HEADs of the last instead of waiting for all of
/// them. A blob of an unchanged image is known present without a HEAD.
pub async fn make(
    client: &RegistryClient,
    jobs: Vec<ImageJob>,
    concurrency: usize,
    timeline: &super::timeline::Timeline,
) -> Result<Plan, Failures> {
    let par = head_parallelism(concurrency);
    let mut failures = Failures::new(super::report::Stage::Plan);
    let t = std::time::Instant::now();
    let (unchanged, found) = head_all(client, &jobs, par, &mut failures).await;
    timeline.ended("plan.heads", t);
    if !failures.is_empty() {
        return Err(failures);
    }
    let mut known = Known::default();
    for (job, _) in jobs.iter().zip(&unchanged).filter(|(_, u)| **u) {
        for b in &job.image.blobs {
            known.note(&blob_key(job, &b.digest));
        }
    }
    for key in &found {
        known.note(key);
    }
    let needed = blob_steps(&jobs, &unchanged);
    Ok(Plan {
        jobs,
        unchanged,
        steps: assign_actions(needed, &known),
    })
}

/// Every manifest HEAD, and the blob HEADs of changed images (each
/// (repository, blob) once, at most `par` requests in flight): per job
/// whether it is unchanged, and the blobs found present.
async fn head_all(
    client: &RegistryClient,
    jobs: &[ImageJob],
    par: usize,
    failures: &mut Failures,
) -> (Vec<bool>, Vec<BlobKey>) {
    let asked: Mutex<HashSet<BlobKey>> = Mutex::new(HashSet::new());
    let slots = tokio::sync::Semaphore::new(par);
    let (asked, slots) = (&asked, &slots);
    type Heads = (
        usize,
        anyhow::Result<bool>,
        Vec<(BlobKey, anyhow::Result<bool>)>,
    );
    let heads: Vec<Heads> = stream::iter(jobs.iter().enumerate().map(|(i, job)| async move {
        let manifest = {
            let _slot = slots.acquire().await;
            client
                .head_manifest(
                    &job.target.registry,
                    &job.target.repository,
                    &tag_or_digest(job),
                )
                .await
        };
        let unchanged = manifest.map(|d| d.as_ref() == Some(&job.image.root.digest));
        if !matches!(unchanged, Ok(false)) {
            return (i, unchanged, Vec::new());
        }
        let mine: Vec<BlobKey> = {
            let mut a = asked.lock().unwrap_or_else(|e| e.into_inner());
            (job.image.blobs.iter())
                .map(|b| blob_key(job, &b.digest))
                .filter(|k| a.insert(k.clone()))
                .collect()
        };
        let blobs = futures_util::future::join_all(mine.into_iter().map(|k| async move {
            let _slot = slots.acquire().await;
            let r = client
                .blob_exists(&k.0, &k.1, &k.2)
                .await
                .map(|s| s.is_some());
            (k, r)
        }))
        .await;
        (i, unchanged, blobs)
    }))
    .buffer_unordered(par)
    .collect()
    .await;
    let mut unchanged = vec![false; jobs.len()];
    let mut found = Vec::new();
    let mut blob_errors: HashMap<BlobKey, anyhow::Error> = HashMap::new();
    for (i, r, blobs) in heads {
        match r {
            Ok(u) => unchanged[i] = u,
            Err(e) => failures.add(jobs[i].target.to_string(), &e),
        }
        for (k, r) in blobs {
            match r {
                Ok(true) => found.push(k),
                Ok(false) => {}
                Err(e) => {
                    blob_errors.insert(k, e);
                }
            }
        }
    }
    // A blob HEAD that failed fails every changed image that needs it.
    for (job, _) in jobs.iter().zip(&unchanged).filter(|(_, u)| !**u) {
        for b in &job.image.blobs {
            if let Some(e) = blob_errors.get(&blob_key(job, &b.digest)) {
                failures.add(job.target.to_string(), e);
            }
        }
    }
    (unchanged, found)
}

/// The blobs of changed images, once per target repository, each with the
/// images that need it there.
fn blob_steps(jobs: &[ImageJob], unchanged: &[bool]) -> BTreeMap<BlobKey, BlobStep> {
    let mut needed: BTreeMap<BlobKey, BlobStep> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate().filter(|(i, _)| !unchanged[*i]) {
        for b in &job.image.blobs {
            needed
                .entry(blob_key(job, &b.digest))
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
    needed
}

/// Step 3: one action per blob: skip what is in place, mount what another
/// repository has, upload the rest once per registry and mount it from
/// there into the others.
fn assign_actions(needed: BTreeMap<BlobKey, BlobStep>, known: &Known) -> Vec<BlobStep> {
    let mut steps = Vec::new();
    let mut uploaded_at: HashMap<(String, Digest), (String, usize)> = HashMap::new();
    for (key, mut step) in needed {
        step.action = if known.present.contains(&key) {
            BlobAction::Skip
        } else if let Some(from) = known.holder(&key.0, &key.2) {
            BlobAction::Mount { from: from.clone() }
        } else if let Some((from, after)) = uploaded_at.get(&(key.0.clone(), key.2.clone())) {
            BlobAction::MountAfterUpload {
                from: from.clone(),
                after: *after,
            }
        } else {
            uploaded_at.insert((key.0, key.2), (step.repo.clone(), steps.len()));
            BlobAction::Upload
        };
        steps.push(step);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(repo: &str, blob: &[u8]) -> (BlobKey, BlobStep) {
        let digest = Digest::of(blob);
        let key = ("reg".to_string(), repo.to_string(), digest.clone());
        let desc = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest,
            size: blob.len() as u64,
            platform: None,
            annotations: None,
        };
        let s = BlobStep {
            registry: "reg".into(),
            repo: repo.into(),
            desc,
            bundle: 0,
            action: BlobAction::Upload,
            images: vec![0],
        };
        (key, s)
    }

    #[test]
    fn a_blob_nowhere_is_uploaded_once_per_registry_and_mounted_into_the_others() {
        let needed: BTreeMap<_, _> = [step("a", b"x"), step("b", b"x"), step("c", b"x")]
            .into_iter()
            .collect();
        let steps = assign_actions(needed, &Known::default());
        assert_eq!(steps[0].action, BlobAction::Upload);
        for s in &steps[1..] {
            assert_eq!(
                s.action,
                BlobAction::MountAfterUpload {
                    from: "a".into(),
                    after: 0
                }
            );
        }
    }

    #[test]
    fn a_blob_in_place_is_skipped_and_one_elsewhere_is_mounted_without_reading() {
        let (ka, sa) = step("a", b"y");
        let (kb, sb) = step("b", b"y");
        let mut known = Known::default();
        known.note(&ka);
        let steps = assign_actions([(ka, sa), (kb, sb)].into_iter().collect(), &known);
        assert_eq!(steps[0].action, BlobAction::Skip);
        assert_eq!(steps[1].action, BlobAction::Mount { from: "a".into() });
        let plan = Plan {
            jobs: Vec::new(),
            unchanged: Vec::new(),
            steps,
        };
        assert_eq!(plan.upload_bytes(), 0);
        assert_eq!((plan.skipped(), plan.mounts()), (1, 1));
    }
}
