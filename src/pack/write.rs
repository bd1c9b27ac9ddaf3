//! Writing the planned bundles: each bundle file is laid out first, then
//! its blob slots are filled concurrently with positioned writes — streamed
//! from the registry, copied from a local archive, or copied from an
//! earlier bundle of the same run that already holds the blob (so a shared
//! layer is downloaded once).
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};

use super::package::Staged;
use super::{BlobOrigin, BundlePlan, BundleSummary, PackContext, PackSummary};
use crate::bundle::writer::{self, BlobSlot, BundleSpec, PendingBundle};
use crate::chart::plan::HintsSource;
use crate::oci::registry::RegistryClient;
use crate::oci::Digest;
use crate::progress::Progress;

/// Blobs already written by this run, shared with the blob tasks.
type WrittenBlobs = Arc<Mutex<HashMap<Digest, (PathBuf, u64)>>>;

/// Write every planned bundle and the chart archives beside them, under
/// temp names (renamed with the package at the end of the run, issue
/// 20.14); `staged` collects them.
pub(super) async fn write_bundles(
    ctx: &PackContext<'_>,
    plans: Vec<BundlePlan>,
    summary: &mut PackSummary,
    staged: &mut Staged,
) -> anyhow::Result<()> {
    // digest -> (bundle temp path, offset) of blobs already written in this run.
    let written: WrittenBlobs = Arc::default();
    for plan in plans {
        write_bundle(ctx, plan, &written, summary, staged).await?;
    }
    Ok(())
}

async fn write_bundle(
    ctx: &PackContext<'_>,
    plan: BundlePlan,
    written: &WrittenBlobs,
    summary: &mut PackSummary,
    staged: &mut Staged,
) -> anyhow::Result<()> {
    let BundlePlan {
        path,
        spec,
        origins,
        chart_archive,
        hints,
    } = plan;
    let (args, client, progress) = (ctx.args, &ctx.client, &ctx.progress);
    crate::interrupt::doing(format!("writing {}", path.display()));
    // Shared with the blob tasks; unwrapped again for commit.
    let pending = Arc::new(
        writer::begin(&path, &spec).with_context(|| format!("writing {}", path.display()))?,
    );
    let origin_by_digest: HashMap<Digest, BlobOrigin> =
        origins.into_iter().map(|(d, o)| (d.digest, o)).collect();
    let total: u64 = pending.slots.iter().map(|s| s.size).sum();
    progress.add_total(total);
    let mut tasks = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    for slot in pending.slots.clone() {
        let origin = origin_by_digest
            .get(&slot.digest)
            .cloned()
            .with_context(|| format!("internal: no source for blob {}", slot.digest))?;
        // A blob an earlier bundle of this run holds is copied from there.
        let local = written.lock().unwrap().get(&slot.digest).cloned();
        let (client, pending, sem, progress) = (
            client.clone(),
            pending.clone(),
            sem.clone(),
            progress.clone(),
        );
        tasks.spawn(fill_slot(
            client, pending, sem, progress, slot, origin, local,
        ));
    }
    let mut copied = 0u64;
    let mut filled = Vec::new();
    while let Some(res) = tasks.join_next().await {
        let (slot, local) = res
            .context("blob task panicked")?
            .with_context(|| format!("writing {}", path.display()))?;
        if local {
            copied += slot.size;
        }
        filled.push(slot);
    }
    summary.bytes_copied_locally += copied;
    let pending = Arc::try_unwrap(pending)
        .map_err(|_| anyhow::anyhow!("internal: a blob task still holds {}", path.display()))?;
    let (temp_path, final_path) = pending.finish_unrenamed()?;
    staged.add(temp_path.clone(), final_path.clone());
    {
        let mut w = written.lock().unwrap();
        for s in &filled {
            w.entry(s.digest.clone())
                .or_insert((temp_path.clone(), s.offset));
        }
    }
    progress.println(format!("wrote {}", final_path.display()));
    let mut line = bundle_summary(final_path.clone(), &spec, hints, filled.len());
    line.bytes = std::fs::metadata(&temp_path).map(|m| m.len()).unwrap_or(0);
    summary.bundles.push(line);
    if let Some((name, tgz)) = chart_archive {
        let p = args.output.join(&name);
        staged.write_file(&p, &tgz)?;
        summary.chart_archives.push(p);
    }
    Ok(())
}

/// Fill one blob slot: from a local file (an earlier bundle of this run,
/// or an image archive) or streamed from its registry. Returns the slot
/// and whether its bytes were copied locally.
async fn fill_slot(
    client: RegistryClient,
    pending: Arc<PendingBundle>,
    sem: Arc<tokio::sync::Semaphore>,
    progress: Progress,
    slot: BlobSlot,
    origin: BlobOrigin,
    local: Option<(PathBuf, u64)>,
) -> anyhow::Result<(BlobSlot, bool)> {
    let _permit = sem.acquire_owned().await?;
    let mut transfer = progress.transfer(&slot.digest.to_string(), slot.size);
    let from_file = match (local, origin) {
        (Some((src, off)), _) => Some((src, off)),
        (None, BlobOrigin::File { path, offset, len }) => {
            if len != slot.size {
                bail!(
                    "blob {} in {} has size {len}, its manifest says {}",
                    slot.digest,
                    path.display(),
                    slot.size
                );
            }
            Some((path, offset))
        }
        (
            None,
            BlobOrigin::Registry {
                registry,
                repository,
                desc,
            },
        ) => {
            let f = pending.file.clone();
            let base = slot.offset;
            let mut sink = move |off: u64, chunk: &[u8]| -> anyhow::Result<()> {
                f.write_all_at(chunk, base + off)
                    .context("writing blob into the bundle")?;
                Ok(())
            };
            // pull_blob checks size and sha256 itself.
            client
                .pull_blob(
                    &registry,
                    &repository,
                    &desc,
                    &mut sink,
                    Some(&mut transfer),
                )
                .await
                .with_context(|| {
                    format!("pulling blob {} of {registry}/{repository}", desc.digest)
                })?;
            None
        }
    };
    let copied_locally = from_file.is_some();
    if let Some((src, off)) = from_file {
        // Disk to disk, blocking: off the async workers.
        let (pending, s) = (pending.clone(), slot.clone());
        tokio::task::spawn_blocking(move || pending.fill_from_file(&s, &src, off))
            .await
            .context("blob copy panicked")??;
        transfer.inc(slot.size);
    }
    transfer.finish("packed");
    Ok((slot, copied_locally))
}

/// The summary line of a written bundle.
fn bundle_summary(
    final_path: PathBuf,
    spec: &BundleSpec,
    hints: Option<HintsSource>,
    blobs: usize,
) -> BundleSummary {
    BundleSummary {
        path: final_path.clone(),
        chart: spec
            .chart
            .as_ref()
            .map(|c| format!("{}-{}", c.name, c.version)),
        hints,
        images: spec
            .images
            .iter()
            .map(|i| i.reference.to_string())
            .collect(),
        blobs,
        bytes: std::fs::metadata(&final_path).map(|m| m.len()).unwrap_or(0),
        external_blobs: spec.delta.as_ref().map_or(0, |d| d.external.len()),
        external_bytes: spec
            .delta
            .as_ref()
            .map_or(0, |d| d.external.iter().map(|e| e.size).sum()),
        referrers: spec.referrers.records.len(),
    }
}
