//! Chunked uploads: PATCHes of `chunk_size` bytes into one session, whose
//! URL and offset are remembered in a state file after every chunk, so a
//! stopped run resumes where it stopped (the registry is asked how much it
//! holds; the prefix is re-hashed from disk).
//!
//! A failed chunk does not restart the blob: after a backoff the registry
//! is asked where the session stands (it may hold part of the chunk) and
//! the upload goes on from there, or from a new session when the old one
//! is gone.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::body::{corrupt_error, hash_prefix};
use super::token::credential_error;
use super::transport::Streamed;
use super::transport::{backoff, commit_wait, retryable_status, sensitive, show, status_error};
use super::uploads::{check_stored, lost_answer, next_location, range_end, with_digest, Upload};
use super::{Digest, PayloadTooLarge, RegistryClient, SourceDamaged, UploadInterrupted};
use crate::progress::Transfer;

/// A chunked upload session remembered between runs.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct UploadState {
    registry: String,
    repo: String,
    digest: String,
    url: String,
    offset: u64,
}

fn write_state(path: &Path, st: &UploadState) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating upload state dir {}", dir.display()))?;
    }
    // Unique temp name: concurrent runs may save the same session.
    crate::atomic_file::write_atomic(path, &serde_json::to_vec(st)?)
}

/// The state file of one blob's chunked upload (none when there is no
/// state directory: nothing is remembered).
struct ResumeFile<'a> {
    path: Option<PathBuf>,
    up: &'a Upload<'a>,
}

impl ResumeFile<'_> {
    fn save(&self, url: &Url, offset: u64) {
        let Some(p) = &self.path else { return };
        let st = UploadState {
            registry: self.up.registry.to_string(),
            repo: self.up.repo.to_string(),
            digest: self.up.digest.to_string(),
            url: url.to_string(),
            offset,
        };
        if let Err(e) = write_state(p, &st) {
            tracing::warn!("cannot remember the upload for resuming: {e:#}");
        }
    }

    fn forget(&self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The session URL an earlier run left for this very blob.
    fn load(&self) -> Option<Url> {
        let bytes = std::fs::read(self.path.as_ref()?).ok()?;
        match serde_json::from_slice::<UploadState>(&bytes) {
            Ok(st)
                if st.registry == self.up.registry
                    && st.repo == self.up.repo
                    && st.digest == self.up.digest.to_string() =>
            {
                Url::parse(&st.url).ok()
            }
            _ => {
                self.forget();
                None
            }
        }
    }
}

/// Where a chunked upload stands: the session URL, the bytes the registry
/// holds, and the hash of those bytes.
struct Position {
    loc: Url,
    offset: u64,
    hasher: Sha256,
}

/// What became of one PATCH.
enum ChunkAnswer {
    /// The registry holds everything up to the chunk's end.
    Accepted { loc: Url, hasher: Sha256 },
    /// Worth another try after asking the registry where it stands.
    Failed(String),
    /// Refused as too large (413): the chunk size for this registry is
    /// now smaller; go on from where the registry stands, at once.
    Shrunk,
}

/// What the answer to one PATCH means.
enum Patched {
    /// In, with the session's next URL.
    Accepted(Url),
    Failed(String),
    Shrunk,
}

impl RegistryClient {
    pub(super) fn state_dir(&self) -> Option<PathBuf> {
        if let Some(d) = &self.inner.opts.upload_state_dir {
            return Some(d.clone());
        }
        if let Some(d) = std::env::var_os("BUNDLER_STATE_DIR").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(d));
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(cache.join("bundler").join("uploads"))
    }

    /// The state file of a chunked upload of `digest` to `registry/repo`.
    pub fn upload_state_path(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
    ) -> Option<PathBuf> {
        let key = Digest::of(format!("{registry}\n{repo}\n{digest}").as_bytes());
        self.state_dir()
            .map(|d| d.join(format!("{}.json", key.hex())))
    }

    pub(super) async fn upload_chunked(
        &self,
        up: &Upload<'_>,
        session: Option<Url>,
        progress: &mut Option<&mut Transfer>,
    ) -> anyhow::Result<()> {
        let size = up.size();
        let max = self.max_attempts();
        let resume = ResumeFile {
            path: self.upload_state_path(up.registry, up.repo, up.digest),
            up,
        };
        let mut pos = self.open_chunked(up, &resume, session).await?;
        resume.save(&pos.loc, pos.offset);
        if let Some(p) = progress.as_deref_mut() {
            p.inc(pos.offset);
        }
        let mut attempt = 0u32;
        let mut chunks_this_run = 0u64;
        while pos.offset < size {
            // A stop lets this chunk finish (and its URL be saved), but
            // starts no new one (see `crate::graceful`).
            let Some(in_flight) = crate::graceful::hold() else {
                crate::graceful::park_if_stopping().await;
                continue;
            };
            let end = (pos.offset + self.chunk_size_for(up.registry)).min(size);
            let failure = match self
                .patch_chunk(up, &resume, &pos, end, attempt, progress)
                .await?
            {
                ChunkAnswer::Accepted { loc, hasher } => {
                    pos = Position {
                        loc,
                        offset: end,
                        hasher,
                    };
                    resume.save(&pos.loc, pos.offset);
                    chunks_this_run += 1;
                    self.maybe_interrupt(chunks_this_run, pos.offset < size)?;
                    continue;
                }
                ChunkAnswer::Failed(why) => why,
                ChunkAnswer::Shrunk => {
                    pos = self.where_now(up, pos).await?;
                    resume.save(&pos.loc, pos.offset);
                    if let Some(p) = progress.as_deref_mut() {
                        p.reset();
                        p.inc(pos.offset);
                    }
                    continue;
                }
            };
            // The chunk failed: nothing in flight to wait for any more.
            drop(in_flight);
            crate::graceful::park_if_stopping().await;
            attempt += 1;
            if attempt >= max {
                bail!(
                    "chunked upload to {} failed after {attempt} attempts: {failure}",
                    show(&pos.loc)
                );
            }
            self.count_retry();
            tracing::debug!("chunk upload of {} failed ({failure}); retrying", up.digest);
            tokio::time::sleep(backoff(attempt)).await;
            pos = self.where_now(up, pos).await?;
            resume.save(&pos.loc, pos.offset);
            if let Some(p) = progress.as_deref_mut() {
                p.reset();
                p.inc(pos.offset);
            }
        }
        self.complete_chunked(up, &resume, pos).await
    }

    /// The session to go on with: one an earlier run left that the
    /// registry still has (then `session` is cancelled), else `session`,
    /// else a new one.
    async fn open_chunked(
        &self,
        up: &Upload<'_>,
        resume: &ResumeFile<'_>,
        session: Option<Url>,
    ) -> anyhow::Result<Position> {
        let mut resumed = None;
        if let Some(url) = resume.load() {
            match self.upload_status(up.registry, up.scopes, &url).await {
                Ok(Some((u, off))) if off <= up.size() => {
                    tracing::info!(
                        "resuming upload of {} at {off} of {} bytes",
                        up.digest,
                        up.size()
                    );
                    resumed = Some((u, off));
                }
                _ => resume.forget(),
            }
        }
        let (loc, offset) = match resumed {
            Some((u, off)) => {
                if let Some(s) = session {
                    self.cancel_upload(up.registry, up.scopes, &s).await;
                }
                (u, off)
            }
            None => match session {
                Some(s) => (s, 0),
                None => (self.start_upload(up.registry, up.repo, up.scopes).await?, 0),
            },
        };
        let hasher = hash_prefix(up.source, offset).await?;
        Ok(Position {
            loc,
            offset,
            hasher,
        })
    }

    /// PATCH `source[pos.offset..end)` into the session.
    async fn patch_chunk(
        &self,
        up: &Upload<'_>,
        resume: &ResumeFile<'_>,
        pos: &Position,
        end: u64,
        attempt: u32,
        progress: &mut Option<&mut Transfer>,
    ) -> anyhow::Result<ChunkAnswer> {
        let h = Arc::new(Mutex::new(pos.hasher.clone()));
        let mut extra = HeaderMap::new();
        extra.insert(
            "content-range",
            HeaderValue::from_str(&format!("{}-{}", pos.offset, end - 1))?,
        );
        let res = self
            .stream_range(
                up,
                Method::PATCH,
                &pos.loc,
                &pos.loc,
                (pos.offset, end),
                extra,
                h.clone(),
                progress,
            )
            .await
            .inspect_err(|e| {
                if e.is::<SourceDamaged>() {
                    resume.forget();
                }
            })?;
        let answer = self.judge_patch(up, resume, pos, end, attempt, res).await?;
        Ok(match answer {
            Patched::Accepted(loc) => ChunkAnswer::Accepted {
                loc,
                hasher: h.lock().unwrap().clone(),
            },
            Patched::Failed(why) => ChunkAnswer::Failed(why),
            Patched::Shrunk => ChunkAnswer::Shrunk,
        })
    }

    /// What the answer to a PATCH means: the session's next URL when the
    /// chunk is in, a reason to retry, or a final error.
    async fn judge_patch(
        &self,
        up: &Upload<'_>,
        resume: &ResumeFile<'_>,
        pos: &Position,
        end: u64,
        attempt: u32,
        res: Streamed,
    ) -> anyhow::Result<Patched> {
        let resp = match res {
            Ok(resp) => resp,
            Err(e) => {
                if e.is_stall() {
                    tracing::warn!(
                        "PATCH {}: {} (attempt {} of {}); retrying",
                        show(&pos.loc),
                        e.text(),
                        attempt + 1,
                        self.max_attempts()
                    );
                }
                return Ok(Patched::Failed(e.text()));
            }
        };
        let status = resp.status();
        if status.is_success() {
            let loc = next_location(&resp, &pos.loc)?;
            let held = range_end(&resp).unwrap_or(end);
            return Ok(if held == end {
                Patched::Accepted(loc)
            } else {
                Patched::Failed(format!("registry holds {held} bytes, expected {end}"))
            });
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            let refused = PayloadTooLarge::new("PATCH", &pos.loc, end - pos.offset);
            self.shrink_after_413(up.registry, &refused)
                .inspect_err(|_| resume.forget())?;
            return Ok(Patched::Shrunk);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            self.forget_token(up.registry, up.scopes);
            if attempt + 1 >= self.max_attempts() {
                let creds = self.creds_for(up.registry).await;
                return Err(credential_error(
                    up.registry,
                    creds.as_ref(),
                    format!("PATCH {} answered {status}", show(&pos.loc)),
                ));
            }
            return Ok(Patched::Failed(status.to_string()));
        }
        if retryable_status(status) || status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(Patched::Failed(status.to_string()));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(Patched::Failed("upload session gone (404)".to_string()));
        }
        resume.forget();
        Err(status_error(resp, "uploading a chunk").await)
    }

    /// The test knob that simulates a stopped process.
    fn maybe_interrupt(&self, chunks_this_run: u64, more_to_send: bool) -> anyhow::Result<()> {
        if Some(chunks_this_run) == self.inner.opts.interrupt_after_chunks && more_to_send {
            return Err(UploadInterrupted(format!(
                "upload interrupted after {chunks_this_run} chunks \
                 (fault injection); the session is kept for resuming"
            ))
            .into());
        }
        Ok(())
    }

    /// After a failed chunk: where the registry stands (it may hold part
    /// of the chunk), or a new session when the old one is gone.
    async fn where_now(&self, up: &Upload<'_>, pos: Position) -> anyhow::Result<Position> {
        let status = self
            .upload_status(up.registry, up.scopes, &pos.loc)
            .await
            .ok()
            .flatten();
        Ok(match status {
            Some((loc, held)) if held <= up.size() => {
                let hasher = if held == pos.offset {
                    pos.hasher
                } else {
                    hash_prefix(up.source, held).await?
                };
                Position {
                    loc,
                    offset: held,
                    hasher,
                }
            }
            _ => Position {
                loc: self.start_upload(up.registry, up.repo, up.scopes).await?,
                offset: 0,
                hasher: Sha256::new(),
            },
        })
    }

    /// Everything is sent: the completing PUT. The stream checked the hash
    /// before the last byte; when every byte was already there (resumed
    /// at the end) the re-hashed prefix is checked here.
    async fn complete_chunked(
        &self,
        up: &Upload<'_>,
        resume: &ResumeFile<'_>,
        pos: Position,
    ) -> anyhow::Result<()> {
        let got = hex::encode(pos.hasher.finalize());
        if got != up.digest.hex() {
            self.cancel_upload(up.registry, up.scopes, &pos.loc).await;
            resume.forget();
            return Err(SourceDamaged(corrupt_error(up.digest, &got)).into());
        }
        let put_url = with_digest(&pos.loc, up.digest);
        let closed = self.close_chunked(up, &put_url).await;
        resume.forget();
        let Some(resp) = closed? else {
            // Found in place after a lost answer.
            return Ok(());
        };
        if !resp.status().is_success() {
            return Err(status_error(resp, "completing a chunked upload").await);
        }
        check_stored(&resp, up.digest)
    }

    /// The closing PUT, sent once: the registry gets a commit's time to
    /// answer (it hashes and moves the whole blob now). An answer lost
    /// then is a slow commit, not a reason to send the PUT again (the
    /// session is gone once the registry committed): the blob is looked
    /// for until it appears or the commit wait is over.
    /// `None`: the answer was lost but the blob is in place.
    async fn close_chunked(
        &self,
        up: &Upload<'_>,
        put_url: &Url,
    ) -> anyhow::Result<Option<Response>> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let auth = self.auth_header(up.registry, up.scopes).await?;
            let mut rb = self
                .inner
                .http
                .put(put_url.clone())
                .header(CONTENT_LENGTH, HeaderValue::from_static("0"));
            if let Some(a) = &auth {
                rb = rb.header(AUTHORIZATION, sensitive(a)?);
            }
            self.count_request();
            let sent_at = Instant::now();
            let res = self
                .send_within(rb, commit_wait(self.stall(), up.size()))
                .await;
            if let Some((why, lost)) = lost_answer(&res, Some(sent_at)) {
                if self.committed_after_all(up, put_url, &why, lost).await {
                    return Ok(None);
                }
            }
            match res {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && attempt == 1 => {
                    self.forget_token(up.registry, up.scopes);
                }
                Ok(r) if !retryable_status(r.status()) || attempt >= self.max_attempts() => {
                    return Ok(Some(r))
                }
                Ok(_) => {}
                Err(e) if attempt >= self.max_attempts() => {
                    return Err(e.give_up(&format!("PUT {}", show(put_url)), attempt))
                }
                Err(_) => {}
            }
            self.count_retry();
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}
