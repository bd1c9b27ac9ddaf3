//! Upload sessions: opening and cancelling them, the monolithic streaming
//! PUT, and chunked PATCH uploads whose session is remembered in a state
//! file so a later run resumes where this one stopped.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, LOCATION};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::body::*;
use super::transport::*;
use super::*;
use crate::progress::Transfer;

/// Upload sessions tried for one blob before giving up (each request in a
/// session has its own retries).
pub(super) const UPLOAD_SESSIONS: u32 = 3;

/// A chunked upload session remembered between runs.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct UploadState {
    registry: String,
    repo: String,
    digest: String,
    url: String,
    offset: u64,
}

pub(super) fn write_state(path: &Path, st: &UploadState) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating upload state dir {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(st)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub(super) fn with_digest(loc: &Url, digest: &Digest) -> Url {
    let mut u = loc.clone();
    u.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    u
}

/// `Range: 0-N` of an upload status → bytes the registry holds.
pub(super) fn range_end(resp: &Response) -> Option<u64> {
    range_end_str(resp.headers().get("range")?.to_str().ok()?)
}

pub(super) fn range_end_str(v: &str) -> Option<u64> {
    let v = v.trim().trim_start_matches("bytes=");
    let (_, end) = v.split_once('-')?;
    let end: u64 = end.trim().parse().ok()?;
    // distribution answers "0-0" for an empty upload: treat as 0 bytes.
    Some(if end == 0 { 0 } else { end + 1 })
}

impl RegistryClient {
    /// POST to open an upload session; its URL.
    pub(super) async fn start_upload(
        &self,
        registry: &str,
        repo: &str,
        scopes: &[String],
    ) -> anyhow::Result<Url> {
        let url = self
            .url(registry, &format!("/v2/{repo}/blobs/uploads/"))
            .await?;
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .simple(registry, scopes, Method::POST, url, h, None)
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(resp, "starting a blob upload").await);
        }
        location(&resp)
    }

    /// Best effort: cancel an upload session.
    pub(super) async fn cancel_upload(&self, registry: &str, scopes: &[String], loc: &Url) {
        let auth = self.auth_header(registry, scopes).await.ok().flatten();
        let mut rb = self.inner.http.delete(loc.clone());
        if let Some(a) = auth.as_deref().and_then(|a| sensitive(a).ok()) {
            rb = rb.header(AUTHORIZATION, a);
        }
        self.count_request();
        let _ = rb.send().await;
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn upload_monolithic(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        source: &BlobSource,
        mut session: Option<Url>,
        scopes: &[String],
        mut progress: Option<&mut Transfer>,
    ) -> anyhow::Result<()> {
        let size = source.len();
        let max = self.max_attempts();
        let mut attempt = 0u32;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let loc = match session.take() {
                Some(u) => u,
                None => self.start_upload(registry, repo, scopes).await?,
            };
            let put_url = with_digest(&loc, digest);
            let shared = StreamShared::default();
            let body = range_body(
                source,
                0,
                size,
                Arc::new(Mutex::new(Sha256::new())),
                Some(digest.clone()),
                shared.clone(),
            )
            .await?;
            let res = self
                .send_stream(
                    registry,
                    scopes,
                    Method::PUT,
                    &put_url,
                    size,
                    HeaderMap::new(),
                    body,
                    &shared,
                    &mut progress,
                )
                .await?;
            let failure = shared.failure.lock().unwrap().clone();
            if let Some(msg) = failure {
                self.cancel_upload(registry, scopes, &loc).await;
                return Err(SourceDamaged(msg).into());
            }
            let retry_in = match res {
                Ok(resp) if resp.status().is_success() => {
                    if let Some(d) = header_digest(&resp)? {
                        if &d != digest {
                            bail!("the registry stored {d} instead of {digest}");
                        }
                    }
                    return Ok(());
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !reauthed => {
                    // Token expired during the upload: new token, new session.
                    reauthed = true;
                    self.forget_token(registry, scopes);
                    attempt -= 1;
                    Duration::ZERO
                }
                Ok(resp)
                    if resp.status() == StatusCode::UNAUTHORIZED
                        || resp.status() == StatusCode::FORBIDDEN =>
                {
                    let creds = self.creds_for(registry).await;
                    return Err(credential_error(
                        registry,
                        creds.as_ref(),
                        format!("PUT {} answered {}", show(&put_url), resp.status()),
                    ));
                }
                Ok(resp) if retryable_status(resp.status()) && attempt < max => {
                    retry_after(&resp).unwrap_or_else(|| backoff(attempt))
                }
                Ok(resp) => {
                    return Err(status_error(
                        resp,
                        &format!("uploading (attempt {attempt} of {max})"),
                    )
                    .await)
                }
                Err(e) => {
                    if let Some(t) = tls_failure(&e) {
                        if t.contains("certificate") {
                            return Err(tls_error(api_host(registry), &t));
                        }
                    }
                    if attempt >= max {
                        bail!(
                            "PUT {} failed after {attempt} attempts: {}",
                            show(&put_url),
                            chain_text(&e)
                        );
                    }
                    tracing::debug!("upload of {digest} failed, retrying: {}", chain_text(&e));
                    backoff(attempt)
                }
            };
            if retry_in > Duration::ZERO {
                self.count_retry();
            }
            if let Some(p) = progress.as_deref_mut() {
                p.reset();
            }
            tokio::time::sleep(retry_in).await;
        }
    }

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

    /// GET an upload session: (its current URL, bytes the registry holds),
    /// or None when the session is gone or unusable.
    pub(super) async fn upload_status(
        &self,
        registry: &str,
        scopes: &[String],
        loc: &Url,
    ) -> anyhow::Result<Option<(Url, u64)>> {
        let resp = self
            .simple(
                registry,
                scopes,
                Method::GET,
                loc.clone(),
                HeaderMap::new(),
                None,
            )
            .await?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            tracing::debug!("upload session {} is gone ({})", show(loc), resp.status());
            return Ok(None);
        }
        let url = if resp.headers().contains_key(LOCATION) {
            location(&resp)?
        } else {
            loc.clone()
        };
        Ok(Some((url, range_end(&resp).unwrap_or(0))))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn upload_chunked(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        source: &BlobSource,
        session: Option<Url>,
        scopes: &[String],
        mut progress: Option<&mut Transfer>,
    ) -> anyhow::Result<()> {
        let size = source.len();
        let chunk = self.inner.opts.chunk_size.max(1);
        let max = self.max_attempts();
        let state_path = self.upload_state_path(registry, repo, digest);
        let save = |url: &Url, offset: u64| {
            if let Some(p) = &state_path {
                let st = UploadState {
                    registry: registry.to_string(),
                    repo: repo.to_string(),
                    digest: digest.to_string(),
                    url: url.to_string(),
                    offset,
                };
                if let Err(e) = write_state(p, &st) {
                    tracing::warn!("cannot remember the upload for resuming: {e:#}");
                }
            }
        };
        let forget = || {
            if let Some(p) = &state_path {
                let _ = std::fs::remove_file(p);
            }
        };

        // Resume a session from an earlier run when the registry still has it.
        let mut resumed = None;
        if let Some(p) = &state_path {
            if let Ok(bytes) = std::fs::read(p) {
                match serde_json::from_slice::<UploadState>(&bytes) {
                    Ok(st)
                        if st.registry == registry
                            && st.repo == repo
                            && st.digest == digest.to_string() =>
                    {
                        if let Ok(url) = Url::parse(&st.url) {
                            match self.upload_status(registry, scopes, &url).await {
                                Ok(Some((u, off))) if off <= size => {
                                    tracing::info!(
                                        "resuming upload of {digest} at {off} of {size} bytes"
                                    );
                                    resumed = Some((u, off));
                                }
                                _ => forget(),
                            }
                        }
                    }
                    _ => forget(),
                }
            }
        }
        let (mut loc, mut offset) = match resumed {
            Some((u, off)) => {
                if let Some(s) = session {
                    self.cancel_upload(registry, scopes, &s).await;
                }
                (u, off)
            }
            None => match session {
                Some(s) => (s, 0),
                None => (self.start_upload(registry, repo, scopes).await?, 0),
            },
        };
        save(&loc, offset);
        let mut hasher = hash_prefix(source, offset).await?;
        if let Some(p) = progress.as_deref_mut() {
            p.inc(offset);
        }
        let mut attempt = 0u32;
        let mut chunks_this_run = 0u64;
        while offset < size {
            let end = (offset + chunk).min(size);
            let shared = StreamShared::default();
            let h = Arc::new(Mutex::new(hasher.clone()));
            let body = range_body(
                source,
                offset,
                end,
                h.clone(),
                (end == size).then(|| digest.clone()),
                shared.clone(),
            )
            .await?;
            let mut extra = HeaderMap::new();
            extra.insert(
                "content-range",
                HeaderValue::from_str(&format!("{}-{}", offset, end - 1))?,
            );
            let res = self
                .send_stream(
                    registry,
                    scopes,
                    Method::PATCH,
                    &loc,
                    end - offset,
                    extra,
                    body,
                    &shared,
                    &mut progress,
                )
                .await?;
            let failure = shared.failure.lock().unwrap().clone();
            if let Some(msg) = failure {
                self.cancel_upload(registry, scopes, &loc).await;
                forget();
                return Err(SourceDamaged(msg).into());
            }
            let failure = match res {
                Ok(resp) if resp.status().is_success() => {
                    let new_loc = if resp.headers().contains_key(LOCATION) {
                        location(&resp)?
                    } else {
                        loc.clone()
                    };
                    let held = range_end(&resp).unwrap_or(end);
                    loc = new_loc;
                    if held == end {
                        hasher = h.lock().unwrap().clone();
                        offset = end;
                        save(&loc, offset);
                        chunks_this_run += 1;
                        if Some(chunks_this_run) == self.inner.opts.interrupt_after_chunks
                            && offset < size
                        {
                            return Err(UploadInterrupted(format!(
                                "upload interrupted after {chunks_this_run} chunks \
                                 (fault injection); the session is kept for resuming"
                            ))
                            .into());
                        }
                        continue;
                    }
                    format!("registry holds {held} bytes, expected {end}")
                }
                Ok(resp)
                    if resp.status() == StatusCode::UNAUTHORIZED
                        || resp.status() == StatusCode::FORBIDDEN =>
                {
                    self.forget_token(registry, scopes);
                    if attempt + 1 >= max {
                        let creds = self.creds_for(registry).await;
                        return Err(credential_error(
                            registry,
                            creds.as_ref(),
                            format!("PATCH {} answered {}", show(&loc), resp.status()),
                        ));
                    }
                    format!("{}", resp.status())
                }
                Ok(resp) if retryable_status(resp.status()) => format!("{}", resp.status()),
                Ok(resp) if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                    format!("{}", resp.status())
                }
                Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                    "upload session gone (404)".to_string()
                }
                Ok(resp) => {
                    forget();
                    return Err(status_error(resp, "uploading a chunk").await);
                }
                Err(e) => chain_text(&e),
            };
            // Something went wrong: back off, then learn where the registry
            // is (it may hold part of the failed chunk) and continue there,
            // or start a new session when the old one is gone.
            attempt += 1;
            if attempt >= max {
                bail!(
                    "chunked upload to {} failed after {attempt} attempts: {failure}",
                    show(&loc)
                );
            }
            self.count_retry();
            tracing::debug!("chunk upload of {digest} failed ({failure}); retrying");
            tokio::time::sleep(backoff(attempt)).await;
            let status = self
                .upload_status(registry, scopes, &loc)
                .await
                .ok()
                .flatten();
            match status {
                Some((u, held)) if held <= size => {
                    loc = u;
                    if held != offset {
                        offset = held;
                        hasher = hash_prefix(source, offset).await?;
                    }
                }
                _ => {
                    loc = self.start_upload(registry, repo, scopes).await?;
                    offset = 0;
                    hasher = Sha256::new();
                }
            }
            save(&loc, offset);
            if let Some(p) = progress.as_deref_mut() {
                p.reset();
                p.inc(offset);
            }
        }
        // Everything sent; the stream checked the hash before the last
        // byte. When all bytes were already there (resumed at the end),
        // check the re-hashed prefix here.
        let got = hex::encode(hasher.clone().finalize());
        if got != digest.hex() {
            self.cancel_upload(registry, scopes, &loc).await;
            forget();
            return Err(SourceDamaged(corrupt_error(digest, &got)).into());
        }
        let put_url = with_digest(&loc, digest);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .simple(registry, scopes, Method::PUT, put_url, h, None)
            .await?;
        forget();
        if !resp.status().is_success() {
            return Err(status_error(resp, "completing a chunked upload").await);
        }
        if let Some(d) = header_digest(&resp)? {
            if &d != digest {
                bail!("the registry stored {d} instead of {digest}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_appended_to_location_with_query() {
        let d = Digest::of(b"x");
        let u = Url::parse("http://h/v2/r/blobs/uploads/abc?_state=xyz").unwrap();
        let w = with_digest(&u, &d);
        assert_eq!(
            w.as_str(),
            format!(
                "http://h/v2/r/blobs/uploads/abc?_state=xyz&digest=sha256%3A{}",
                d.hex()
            )
        );
        let u = Url::parse("http://h/v2/r/blobs/uploads/abc").unwrap();
        assert!(with_digest(&u, &d).as_str().contains("?digest=sha256"));
    }

    #[test]
    fn range_header() {
        assert_eq!(range_end_str("0-1048575"), Some(1048576));
        assert_eq!(range_end_str("bytes=0-9"), Some(10));
        assert_eq!(range_end_str("0-0"), Some(0));
    }
}
