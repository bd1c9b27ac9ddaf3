//! The transfer engine: pushes many images from bundle files into a
//! registry at once.
//!
//! - Every image is its own task; blob uploads share one bound
//!   (`--concurrency`), manifests do not wait for it, so finished images'
//!   manifests go up while other blobs still move (pipelining).
//! - A blob is uploaded once per registry per run: the first task that needs
//!   it uploads it, concurrent tasks wait for that upload and then mount it
//!   into their own repository (cross-repository mount, no bytes moved).
//! - An image whose tag already points at the same digest is skipped with a
//!   single HEAD: the registry only accepted that manifest because all of
//!   its blobs were there.
//! - A manifest goes up only after all its blobs are in place; child
//!   manifests of an index before the index; the tag last.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{OnceCell, Semaphore};

use crate::bundle::reader::{BundleImage, BundleReader};
use crate::oci::media::Descriptor;
use crate::oci::registry::{BlobSource, PushOutcome, RegistryClient};
use crate::oci::{Digest, Reference};
use crate::progress::Progress;

/// One image to push: which bundle it is in, what it is, where it goes.
#[derive(Clone, Debug)]
pub struct ImageJob {
    pub bundle: usize,
    pub image: BundleImage,
    pub target: Reference,
}

#[derive(Debug, Default)]
pub struct TransferReport {
    pub images_pushed: usize,
    pub images_unchanged: usize,
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
}

#[derive(Default)]
struct Counters {
    images_pushed: AtomicUsize,
    images_unchanged: AtomicUsize,
    uploaded: AtomicUsize,
    skipped: AtomicUsize,
    mounted: AtomicUsize,
}

/// Which repository of a registry holds a blob, once its first push is done.
type BlobCells = Mutex<HashMap<(String, Digest), Arc<OnceCell<String>>>>;

pub async fn push_images(
    client: &RegistryClient,
    readers: &[&BundleReader],
    jobs: Vec<ImageJob>,
    concurrency: usize,
    progress: &Progress,
) -> anyhow::Result<TransferReport> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let cells: Arc<BlobCells> = Arc::default();
    let counters = Arc::new(Counters::default());
    let mut unique = std::collections::HashSet::new();
    let total: u64 = jobs
        .iter()
        .flat_map(|j| j.image.blobs.iter())
        .filter(|d| unique.insert(d.digest.clone()))
        .map(|d| d.size)
        .sum();
    progress.add_total(total);

    let mut tasks = FuturesUnordered::new();
    for job in jobs {
        let reader = readers[job.bundle];
        let (client, sem, cells, counters, progress) = (
            client.clone(),
            sem.clone(),
            cells.clone(),
            counters.clone(),
            progress.clone(),
        );
        tasks.push(async move {
            push_image(&client, reader, &job, &sem, &cells, &counters, &progress)
                .await
                .with_context(|| {
                    format!(
                        "pushing {} to {} (from {})",
                        job.image.reference, job.target, reader.label
                    )
                })
        });
    }
    // Keep going with the other images when one fails: what is pushed is
    // complete and correct, and a re-run only has to do what failed.
    let mut errors: Vec<anyhow::Error> = Vec::new();
    while let Some(res) = tasks.next().await {
        if let Err(e) = res {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => {}
        1 => return Err(errors.pop().unwrap()),
        n => {
            let lines: Vec<String> = errors
                .iter()
                .map(|e| format!("  - {}", crate::error::redact(&format!("{e:#}"))))
                .collect();
            return Err(anyhow::anyhow!("{n} images failed (the others were pushed; run sync again after fixing the cause):\n{}", lines.join("\n")));
        }
    }
    Ok(TransferReport {
        images_pushed: counters.images_pushed.load(Ordering::Relaxed),
        images_unchanged: counters.images_unchanged.load(Ordering::Relaxed),
        blobs_uploaded: counters.uploaded.load(Ordering::Relaxed),
        blobs_skipped: counters.skipped.load(Ordering::Relaxed),
        blobs_mounted: counters.mounted.load(Ordering::Relaxed),
    })
}

async fn push_image(
    client: &RegistryClient,
    reader: &BundleReader,
    job: &ImageJob,
    sem: &Arc<Semaphore>,
    cells: &BlobCells,
    counters: &Counters,
    progress: &Progress,
) -> anyhow::Result<()> {
    let registry = job.target.registry.as_str();
    let repo = job.target.repository.as_str();
    let root = &job.image.root;
    let tag_or_digest = job
        .target
        .tag
        .clone()
        .unwrap_or_else(|| root.digest.to_string());

    // Unchanged image: one HEAD and done. Its blobs are known to be in
    // this repository now (the registry accepted the manifest), so other
    // images can mount them, and each counts once toward the total.
    if client
        .head_manifest(registry, repo, &tag_or_digest)
        .await?
        .as_ref()
        == Some(&root.digest)
    {
        counters.images_unchanged.fetch_add(1, Ordering::Relaxed);
        let mut newly_known = 0u64;
        for b in &job.image.blobs {
            let cell = cells
                .lock()
                .unwrap()
                .entry((registry.to_string(), b.digest.clone()))
                .or_default()
                .clone();
            if cell.set(repo.to_string()).is_ok() {
                newly_known += b.size;
            }
        }
        progress
            .transfer(&job.target.to_string(), 0)
            .skip(newly_known);
        return Ok(());
    }

    let mut blob_tasks = FuturesUnordered::new();
    for desc in &job.image.blobs {
        blob_tasks.push(ensure_blob(
            client, reader, registry, repo, desc, sem, cells, counters, progress,
        ));
    }
    while let Some(res) = blob_tasks.next().await {
        res?;
    }
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
            &tag_or_digest,
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
    counters.images_pushed.fetch_add(1, Ordering::Relaxed);
    progress.println(format!("pushed {} ({})", job.target, root.digest));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn ensure_blob(
    client: &RegistryClient,
    reader: &BundleReader,
    registry: &str,
    repo: &str,
    desc: &Descriptor,
    sem: &Arc<Semaphore>,
    cells: &BlobCells,
    counters: &Counters,
    progress: &Progress,
) -> anyhow::Result<()> {
    let cell = cells
        .lock()
        .unwrap()
        .entry((registry.to_string(), desc.digest.clone()))
        .or_default()
        .clone();
    let mut first = false;
    let holder = cell
        .get_or_try_init(|| async {
            first = true;
            let _permit = sem.acquire().await?;
            let source = bundle_source(reader, &desc.digest)?;
            let mut transfer =
                progress.transfer(&format!("{repo}@{}", short(&desc.digest)), desc.size);
            let outcome = client
                .push_blob(
                    registry,
                    repo,
                    &desc.digest,
                    source,
                    None,
                    Some(&mut transfer),
                )
                .await?;
            match outcome {
                PushOutcome::Uploaded => counters.uploaded.fetch_add(1, Ordering::Relaxed),
                PushOutcome::Mounted => counters.mounted.fetch_add(1, Ordering::Relaxed),
                PushOutcome::Skipped => {
                    transfer.skip(desc.size);
                    counters.skipped.fetch_add(1, Ordering::Relaxed)
                }
            };
            transfer.finish(match outcome {
                PushOutcome::Uploaded => "uploaded",
                PushOutcome::Mounted => "mounted",
                PushOutcome::Skipped => "present",
            });
            anyhow::Ok(repo.to_string())
        })
        .await?
        .clone();
    if first || holder == repo {
        return Ok(());
    }
    // Another repository of this registry got the blob in this run: mount.
    let _permit = sem.acquire().await?;
    let source = bundle_source(reader, &desc.digest)?;
    match client
        .push_blob(registry, repo, &desc.digest, source, Some(&holder), None)
        .await?
    {
        PushOutcome::Mounted => counters.mounted.fetch_add(1, Ordering::Relaxed),
        PushOutcome::Skipped => counters.skipped.fetch_add(1, Ordering::Relaxed),
        PushOutcome::Uploaded => counters.uploaded.fetch_add(1, Ordering::Relaxed),
    };
    Ok(())
}

/// The byte range of a blob in its bundle file, as a push source.
fn bundle_source(reader: &BundleReader, digest: &Digest) -> anyhow::Result<BlobSource> {
    let extent = reader
        .blob(digest)
        .with_context(|| format!("blob {digest} is not in bundle {}", reader.label))?;
    Ok(BlobSource::FileRange {
        path: reader.path.clone(),
        offset: extent.offset,
        len: extent.size,
    })
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}
