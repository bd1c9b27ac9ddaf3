//! Upload sessions: opening, asking after and cancelling them, and the
//! monolithic streaming PUT (chunked PATCH uploads are in `chunked`).
//!
//! Each request of a session is retried here; a session lost as a whole
//! (its completing answer dropped after the registry committed, or the
//! registry discarding it) is `blobs`' business.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, LOCATION};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::body::{range_body, StreamShared};
use super::commit_wait::LostAnswer;
use super::token::credential_error;
use super::transport::{
    backoff, header_digest, location, retry_after, retryable_status, sensitive, show, status_error,
    tls_error, Streamed, TransferError,
};
use super::{api_host, BlobSource, Digest, PayloadTooLarge, RegistryClient, SourceDamaged};
use crate::progress::Transfer;

/// Upload sessions tried for one blob before giving up (each request in a
/// session has its own retries).
pub(super) const UPLOAD_SESSIONS: u32 = 3;

/// One blob going up: what every step of its upload needs.
pub(super) struct Upload<'a> {
    pub(super) registry: &'a str,
    pub(super) repo: &'a str,
    pub(super) digest: &'a Digest,
    pub(super) source: &'a BlobSource,
    /// Push scope of `repo`, plus pull of the mount source when mounting.
    pub(super) scopes: &'a [String],
}

impl Upload<'_> {
    pub(super) fn size(&self) -> u64 {
        self.source.len()
    }
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

/// The upload URL a response points at (`Location`), else `loc`.
pub(super) fn next_location(resp: &Response, loc: &Url) -> anyhow::Result<Url> {
    if resp.headers().contains_key(LOCATION) {
        location(resp)
    } else {
        Ok(loc.clone())
    }
}

/// The registry's `Docker-Content-Digest` of a committed blob, when it
/// sends one, must be the digest we pushed.
pub(super) fn check_stored(resp: &Response, digest: &Digest) -> anyhow::Result<()> {
    if let Some(d) = header_digest(resp)? {
        if &d != digest {
            bail!("the registry stored {d} instead of {digest}");
        }
    }
    Ok(())
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
        let _ = self.send_watched(rb).await;
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
        Ok(Some((
            next_location(&resp, loc)?,
            range_end(&resp).unwrap_or(0),
        )))
    }

    /// Stream `source[start..end)` to `url`, hashed into `hasher` (checked
    /// against the digest when `end` is the blob's end). A damaged source
    /// cancels the session at `session` and fails with [`SourceDamaged`].
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn stream_range(
        &self,
        up: &Upload<'_>,
        method: Method,
        url: &Url,
        session: &Url,
        range: (u64, u64),
        extra: HeaderMap,
        hasher: Arc<Mutex<Sha256>>,
        progress: &mut Option<&mut Transfer>,
    ) -> anyhow::Result<Streamed> {
        let (res, _) = self
            .stream_range_timed(up, method, url, session, range, extra, hasher, progress)
            .await?;
        Ok(res)
    }

    /// [`Self::stream_range`], with the moment the last body byte went out
    /// (None: not all of it did).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn stream_range_timed(
        &self,
        up: &Upload<'_>,
        method: Method,
        url: &Url,
        session: &Url,
        (start, end): (u64, u64),
        extra: HeaderMap,
        hasher: Arc<Mutex<Sha256>>,
        progress: &mut Option<&mut Transfer>,
    ) -> anyhow::Result<(Streamed, Option<Instant>)> {
        let shared = StreamShared::default();
        let expect = (end == up.size()).then(|| up.digest.clone());
        let body = range_body(up.source, start, end, hasher, expect, shared.clone()).await?;
        let res = self
            .send_stream(
                up.registry,
                up.scopes,
                method,
                url,
                end - start,
                extra,
                body,
                &shared,
                progress,
            )
            .await?;
        let failure = shared.failure.lock().unwrap().clone();
        if let Some(msg) = failure {
            self.cancel_upload(up.registry, up.scopes, session).await;
            return Err(SourceDamaged(msg).into());
        }
        let body_out = *shared.body_out.lock().unwrap();
        Ok((res, body_out))
    }

    /// One streaming PUT of the whole blob per attempt, each in a fresh
    /// session (the first may be given: a refused mount opens one).
    pub(super) async fn upload_monolithic(
        &self,
        up: &Upload<'_>,
        mut session: Option<Url>,
        progress: &mut Option<&mut Transfer>,
    ) -> anyhow::Result<()> {
        let mut attempt = 0u32;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let loc = match session.take() {
                Some(u) => u,
                None => self.start_upload(up.registry, up.repo, up.scopes).await?,
            };
            let put_url = with_digest(&loc, up.digest);
            let (res, body_out) = self
                .stream_range_timed(
                    up,
                    Method::PUT,
                    &put_url,
                    &loc,
                    (0, up.size()),
                    HeaderMap::new(),
                    Arc::new(Mutex::new(Sha256::new())),
                    progress,
                )
                .await?;
            if let Some((why, lost)) = lost_answer(&res, body_out) {
                if self.committed_after_all(up, &put_url, &why, lost).await {
                    return Ok(());
                }
            }
            let retry_in = match res {
                Ok(resp) => {
                    match self
                        .judge_put(up, &put_url, resp, attempt, &mut reauthed)
                        .await?
                    {
                        PutAnswer::Stored => return Ok(()),
                        PutAnswer::Reauthenticate => {
                            attempt -= 1;
                            Duration::ZERO
                        }
                        PutAnswer::RetryIn(d) => d,
                        PutAnswer::TooLarge => {
                            self.cancel_upload(up.registry, up.scopes, &loc).await;
                            return Err(PayloadTooLarge::new("PUT", &put_url, up.size()).into());
                        }
                    }
                }
                Err(e) => self.put_failed(up, &put_url, &e, attempt)?,
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

    /// What the answer to a monolithic PUT means.
    async fn judge_put(
        &self,
        up: &Upload<'_>,
        put_url: &Url,
        resp: Response,
        attempt: u32,
        reauthed: &mut bool,
    ) -> anyhow::Result<PutAnswer> {
        let status = resp.status();
        let max = self.max_attempts();
        if status.is_success() {
            check_stored(&resp, up.digest)?;
            return Ok(PutAnswer::Stored);
        }
        if status == StatusCode::UNAUTHORIZED && !*reauthed {
            // Token expired during the upload: new token, new session.
            *reauthed = true;
            self.forget_token(up.registry, up.scopes);
            return Ok(PutAnswer::Reauthenticate);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let creds = self.creds_for(up.registry).await;
            return Err(credential_error(
                up.registry,
                creds.as_ref(),
                format!("PUT {} answered {status}", show(put_url)),
            ));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Ok(PutAnswer::TooLarge);
        }
        if retryable_status(status) && attempt < max {
            return Ok(PutAnswer::RetryIn(
                retry_after(&resp).unwrap_or_else(|| backoff(attempt)),
            ));
        }
        Err(status_error(resp, &format!("uploading (attempt {attempt} of {max})")).await)
    }

    /// A PUT that ended in a transport error: how long before the next
    /// attempt, or the final error.
    fn put_failed(
        &self,
        up: &Upload<'_>,
        put_url: &Url,
        e: &TransferError,
        attempt: u32,
    ) -> anyhow::Result<Duration> {
        if let Some(t) = e.tls() {
            if t.contains("certificate") {
                return Err(tls_error(api_host(up.registry), &t));
            }
        }
        if attempt >= self.max_attempts() {
            return Err(e.give_up(&format!("PUT {}", show(put_url)), attempt));
        }
        if e.is_stall() {
            tracing::warn!(
                "PUT {}: {} (attempt {attempt} of {}); retrying",
                show(put_url),
                e.text(),
                self.max_attempts()
            );
        } else {
            tracing::debug!("upload of {} failed, retrying: {}", up.digest, e.text());
        }
        Ok(backoff(attempt))
    }
}

/// Whether the answer to a request that completes an upload was lost
/// after its whole body went out (`body_out`): a transport failure, or a
/// gateway's 502/504 (a proxy that gave up waiting for the registry).
/// What happened, and whether it looks like a slow commit.
pub(super) fn lost_answer(
    res: &Streamed,
    body_out: Option<Instant>,
) -> Option<(String, LostAnswer)> {
    let out = body_out?;
    let since = out.elapsed();
    match res {
        Err(e) => Some((e.text(), LostAnswer::after(since, e.is_stall()))),
        Ok(r)
            if matches!(
                r.status(),
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
            ) =>
        {
            let timed_out = r.status() == StatusCode::GATEWAY_TIMEOUT;
            Some((
                format!("answered {}", r.status()),
                LostAnswer::after(since, timed_out),
            ))
        }
        Ok(_) => None,
    }
}

/// What a monolithic PUT's answer means.
enum PutAnswer {
    Stored,
    /// A 401 to a token that expired mid-upload: once, not an attempt.
    Reauthenticate,
    RetryIn(Duration),
    /// 413: the body is over a limit; re-sending it cannot help.
    TooLarge,
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
