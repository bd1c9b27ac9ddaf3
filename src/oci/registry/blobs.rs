//! Blobs: HEAD, push (skip when present, mount from another repository,
//! else upload with session-level retries), and verified pulls.
use std::sync::atomic::Ordering;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};

use url::Url;

use super::limits::LimitBelowFloor;
use super::stall::StallWatch;
use super::transport::{backoff, location, show, status_error, TransferError};
use super::uploads::{Upload, UPLOAD_SESSIONS};
use super::{
    pull_scope, push_scope, BlobSource, Digest, PayloadTooLarge, PushOutcome, RegistryClient,
    SourceDamaged, UploadInterrupted, MAX_BLOB_IN_MEMORY,
};
use crate::oci::media::Descriptor;
use crate::progress::Transfer;

impl RegistryClient {
    // ----- blobs ---------------------------------------------------------------

    /// HEAD a blob: its size if present in `repo`.
    pub async fn blob_exists(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
    ) -> anyhow::Result<Option<u64>> {
        let scopes = [pull_scope(repo)];
        let url = self
            .url(registry, &format!("/v2/{repo}/blobs/{digest}"))
            .await?;
        let resp = self
            .simple(registry, &scopes, Method::HEAD, url, HeaderMap::new(), None)
            .await
            .with_context(|| format!("checking blob {digest} in {registry}/{repo}"))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(
                status_error(resp, &format!("HEAD blob {digest} in {registry}/{repo}")).await,
            );
        }
        let len = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Some(len))
    }

    /// Push one blob: skipped if present, mounted from `mount_from` (another
    /// repository of the same registry) when given and possible, else
    /// streamed from `source` while its sha256 is checked; a mismatch aborts
    /// the upload (nothing is committed) with an error naming the digest.
    pub async fn push_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        source: BlobSource,
        mount_from: Option<&str>,
        progress: Option<&mut Transfer>,
    ) -> anyhow::Result<PushOutcome> {
        let dest = BlobDest {
            registry,
            repo,
            digest,
            head_first: true,
        };
        self.push_blob_inner(dest, source, mount_from, progress)
            .await
            .with_context(|| format!("pushing blob {digest} to {registry}/{repo}"))
    }

    /// [`Self::push_blob`] for a caller that has just HEADed the blob
    /// itself (a sync plan): no second HEAD, straight to the mount or the
    /// upload. Should another client have put it there meanwhile, the
    /// registry takes it again (the content is the same).
    pub async fn push_planned_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        source: BlobSource,
        mount_from: Option<&str>,
        progress: Option<&mut Transfer>,
    ) -> anyhow::Result<PushOutcome> {
        let dest = BlobDest {
            registry,
            repo,
            digest,
            head_first: false,
        };
        self.push_blob_inner(dest, source, mount_from, progress)
            .await
            .with_context(|| format!("pushing blob {digest} to {registry}/{repo}"))
    }

    async fn push_blob_inner(
        &self,
        dest: BlobDest<'_>,
        source: BlobSource,
        mount_from: Option<&str>,
        mut progress: Option<&mut Transfer>,
    ) -> anyhow::Result<PushOutcome> {
        let BlobDest {
            registry,
            repo,
            digest,
            head_first,
        } = dest;
        let size = source.len();
        let skip = |progress: &mut Option<&mut Transfer>| {
            if let Some(p) = progress.as_deref_mut() {
                p.skip(size);
            }
        };
        if head_first && self.blob_exists(registry, repo, digest).await?.is_some() {
            skip(&mut progress);
            return Ok(PushOutcome::Skipped);
        }
        let mut scopes = vec![push_scope(repo)];
        let mut session = None;
        if let Some(from) = mount_from.filter(|f| *f != repo) {
            scopes.push(pull_scope(from));
            match self.mount(registry, repo, digest, from, &scopes).await? {
                Mount::Mounted => {
                    skip(&mut progress);
                    return Ok(PushOutcome::Mounted);
                }
                Mount::Opened(u) => session = Some(u),
                Mount::Refused => {}
            }
        }
        let up = Upload {
            registry,
            repo,
            digest,
            source: &source,
            scopes: &scopes,
        };
        self.upload_in_sessions(&up, session, &mut progress).await?;
        Ok(PushOutcome::Uploaded)
    }

    /// POST a cross-repository mount of `digest` from `from` into `repo`.
    async fn mount(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        from: &str,
        scopes: &[String],
    ) -> anyhow::Result<Mount> {
        let mut url = self
            .url(registry, &format!("/v2/{repo}/blobs/uploads/"))
            .await?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .simple(registry, scopes, Method::POST, url, h, None)
            .await?;
        Ok(match resp.status() {
            StatusCode::CREATED => Mount::Mounted,
            // Mount refused; the registry opened an upload instead.
            StatusCode::ACCEPTED => Mount::Opened(location(&resp)?),
            s => {
                tracing::debug!(
                    "mount of {digest} from {from} into {repo} refused ({s}); uploading"
                );
                Mount::Refused
            }
        })
    }

    /// Whether `up` goes up in chunks: above the chunk threshold (blobs
    /// streamed from disk), or when it is larger than a body the registry
    /// refused (then from memory too).
    fn goes_chunked(&self, up: &Upload<'_>) -> bool {
        let size = up.size();
        (size > self.inner.opts.chunk_threshold
            && matches!(
                up.source,
                BlobSource::FileRange { .. }
                    | BlobSource::PackageRange { .. }
                    | BlobSource::Fed { .. }
            ))
            || self.body_limit(up.registry).is_some_and(|l| size > l)
    }

    /// Upload `up`, in a new session when one is lost as a whole.
    ///
    /// Each request already retries; this loop is for a session that is
    /// lost as a whole: the answer to the completing PUT was dropped after
    /// the registry committed the blob (a retry then finds the session
    /// gone: 404 BLOB_UPLOAD_UNKNOWN), or the registry discarded the
    /// session. Ask whether the blob is there; if not, start a new session.
    async fn upload_in_sessions(
        &self,
        up: &Upload<'_>,
        mut session: Option<Url>,
        progress: &mut Option<&mut Transfer>,
    ) -> anyhow::Result<()> {
        let mut sessions_left = UPLOAD_SESSIONS;
        loop {
            let result = if self.goes_chunked(up) {
                self.upload_chunked(up, session.take(), progress).await
            } else {
                self.upload_monolithic(up, session.take(), progress).await
            };
            let err = match result {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Some(refused) = err.downcast_ref::<PayloadTooLarge>() {
                // Only a monolithic PUT ends so (chunked uploads shrink
                // their chunks themselves); from now on the blob goes up
                // in chunks under the limit. Not a lost session.
                self.shrink_after_413(up.registry, refused)?;
                if let Some(p) = progress.as_deref_mut() {
                    p.reset();
                }
                continue;
            }
            let final_kind = err.chain().any(|c| {
                c.is::<crate::error::CredentialError>()
                    || c.is::<SourceDamaged>()
                    || c.is::<UploadInterrupted>()
                    || c.is::<LimitBelowFloor>()
            });
            if final_kind {
                return Err(err);
            }
            if let Ok(Some(_)) = self.blob_exists(up.registry, up.repo, up.digest).await {
                tracing::info!(
                    "upload of {} to {}/{} reported an error but the blob is in place: {err:#}",
                    up.digest,
                    up.registry,
                    up.repo
                );
                return Ok(());
            }
            sessions_left -= 1;
            if sessions_left == 0 {
                return Err(err);
            }
            tracing::warn!(
                "upload of {} to {}/{} lost its session ({err:#}); starting a new one",
                up.digest,
                up.registry,
                up.repo
            );
            self.count_retry();
            if let Some(p) = progress.as_deref_mut() {
                p.reset();
            }
        }
    }

    /// Stream a blob into `sink`, checking size and sha256; on a retry the
    /// sink is called again from offset 0 (`sink(offset, chunk)`).
    pub async fn pull_blob(
        &self,
        registry: &str,
        repo: &str,
        desc: &Descriptor,
        sink: &mut (dyn FnMut(u64, &[u8]) -> anyhow::Result<()> + Send),
        progress: Option<&mut Transfer>,
    ) -> anyhow::Result<()> {
        self.pull_blob_inner(registry, repo, desc, sink, progress)
            .await
            .with_context(|| format!("pulling blob {} from {registry}/{repo}", desc.digest))
    }

    async fn pull_blob_inner(
        &self,
        registry: &str,
        repo: &str,
        desc: &Descriptor,
        sink: &mut (dyn FnMut(u64, &[u8]) -> anyhow::Result<()> + Send),
        mut progress: Option<&mut Transfer>,
    ) -> anyhow::Result<()> {
        let scopes = [pull_scope(repo)];
        let url = self
            .url(registry, &format!("/v2/{repo}/blobs/{}", desc.digest))
            .await?;
        let max = self.max_attempts();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let resp = self
                .simple(
                    registry,
                    &scopes,
                    Method::GET,
                    url.clone(),
                    HeaderMap::new(),
                    None,
                )
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                bail!("blob not found in the registry");
            }
            if !resp.status().is_success() {
                return Err(status_error(resp, "GET blob").await);
            }
            if let Some(n) = resp.content_length() {
                if n != desc.size {
                    bail!(
                        "the registry serves {n} bytes, the descriptor says {}",
                        desc.size
                    );
                }
            }
            if attempt > 1 {
                if let Some(p) = progress.as_deref_mut() {
                    p.reset();
                }
            }
            let hasher = match self.read_blob(resp, desc, sink, &mut progress).await? {
                Ok(h) => h,
                Err(e) => {
                    let what = format!("GET {}", show(&url));
                    if attempt >= max {
                        return Err(e.give_up(&what, attempt));
                    }
                    self.count_retry();
                    if e.is_stall() {
                        tracing::warn!(
                            "{what}: {} (attempt {attempt} of {max}); retrying",
                            e.text()
                        );
                    } else {
                        tracing::debug!("pull of {} failed ({}); retrying", desc.digest, e.text());
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            };
            let got = hex::encode(hasher.finalize());
            if got != desc.digest.hex() {
                bail!(
                    "content hashes to sha256:{got}, not {} (corrupt in the registry or in transit)",
                    desc.digest
                );
            }
            return Ok(());
        }
    }

    /// Stream a blob's body into `sink`, hashed: the hash of all of it, or
    /// why this attempt broke off (a dropped connection, a stall, too few
    /// bytes). Errors are final: too many bytes, a failing sink.
    async fn read_blob(
        &self,
        resp: reqwest::Response,
        desc: &Descriptor,
        sink: &mut (dyn FnMut(u64, &[u8]) -> anyhow::Result<()> + Send),
        progress: &mut Option<&mut Transfer>,
    ) -> anyhow::Result<Result<Sha256, TransferError>> {
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        let mut stream = resp.bytes_stream();
        let mut watch = StallWatch::new(self.stall());
        loop {
            let item = match tokio::time::timeout_at(watch.deadline(), stream.next()).await {
                Err(_) if watch.stalled() => break,
                Err(_) => continue,
                Ok(None) if n == desc.size => return Ok(Ok(hasher)),
                Ok(None) => {
                    return Ok(Err(TransferError::Broken(format!(
                        "connection closed after {n} of {} bytes",
                        desc.size
                    ))))
                }
                Ok(Some(item)) => item,
            };
            let chunk = match item {
                Ok(c) => c,
                Err(e) => return Ok(Err(TransferError::Http(e))),
            };
            if n + chunk.len() as u64 > desc.size {
                bail!(
                    "the registry serves more than the {} bytes the descriptor says",
                    desc.size
                );
            }
            sink(n, &chunk)?;
            hasher.update(&chunk);
            n += chunk.len() as u64;
            self.inner
                .stats
                .bytes_downloaded
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if let Some(p) = progress.as_deref_mut() {
                p.inc(chunk.len() as u64);
            }
            if watch.moved(chunk.len() as u64) {
                break;
            }
        }
        if let Some(p) = progress.as_deref_mut() {
            p.stalled();
        }
        Ok(Err(TransferError::Stalled(format!(
            "receiving: {} ({n} of {} bytes in)",
            watch.text(),
            desc.size
        ))))
    }

    /// Fetch a small blob (config, helm chart) into memory, verified.
    pub async fn pull_blob_bytes(
        &self,
        registry: &str,
        repo: &str,
        desc: &Descriptor,
    ) -> anyhow::Result<Bytes> {
        if desc.size > MAX_BLOB_IN_MEMORY {
            bail!(
                "blob {} in {registry}/{repo} is {} bytes, more than the {} bytes kept in memory",
                desc.digest,
                desc.size,
                MAX_BLOB_IN_MEMORY
            );
        }
        let mut buf: Vec<u8> = Vec::with_capacity(desc.size as usize);
        let mut sink = |off: u64, chunk: &[u8]| -> anyhow::Result<()> {
            buf.truncate(off as usize);
            buf.extend_from_slice(chunk);
            Ok(())
        };
        self.pull_blob(registry, repo, desc, &mut sink, None)
            .await?;
        Ok(Bytes::from(buf))
    }
}

/// Where a blob goes, and whether to HEAD it there first.
struct BlobDest<'a> {
    registry: &'a str,
    repo: &'a str,
    digest: &'a Digest,
    head_first: bool,
}

/// What a mount request did.
enum Mount {
    Mounted,
    /// Refused, with an upload session opened instead.
    Opened(Url),
    Refused,
}
