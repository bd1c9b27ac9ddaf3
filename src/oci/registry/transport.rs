//! Transport: the scheme of each host, the retried request loop (auth from
//! `token`, stalls from `stall`) and the streaming request uploads use,
//! and the text of transport errors (redacted, without URLs' queries).
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::body::StreamShared;
use super::stall::{stalled_advice, stalled_text, StallWatch, Stalled};
use super::token::{credential_error, Refusals};
use super::{api_host, Digest, RegistryClient};
use crate::progress::Transfer;

const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(5);
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Once a whole upload body is out, the registry gets the stall timeout
/// plus a second per this many bytes to answer: verifying and committing
/// a large blob (re-reading it, or copying it inside object storage) takes
/// time proportional to its size, while a small one must not wait long on
/// a registry that went silent.
const COMMIT_BYTES_PER_SEC: f64 = (50 << 20) as f64;

/// How long a registry may take to answer after the last of `len` body
/// bytes went out.
pub(super) fn commit_wait(stall: Duration, len: u64) -> Duration {
    stall + Duration::from_secs_f64(len as f64 / COMMIT_BYTES_PER_SEC)
}
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// The longest the https half of a scheme probe waits for an answer.
const TLS_PROBE_WAIT: Duration = Duration::from_secs(5);
/// How long a failed scheme probe is answered from memory.
const PROBE_FAILURE_MEMORY: Duration = Duration::from_secs(5);

/// What the scheme probe of a host (`insecure`) found.
pub(super) enum Probe {
    Found(&'static str),
    Failed { at: Instant, error: String },
}

/// Why one attempt of a request got no usable answer.
pub(super) enum TransferError {
    Http(reqwest::Error),
    /// The connection ended early (with what we know).
    Broken(String),
    /// No progress for a whole stall timeout (see `stall`).
    Stalled(String),
}

impl TransferError {
    pub(super) fn text(&self) -> String {
        match self {
            TransferError::Http(e) => chain_text(e),
            TransferError::Broken(s) | TransferError::Stalled(s) => s.clone(),
        }
    }

    /// A TLS error that retrying cannot fix.
    pub(super) fn tls(&self) -> Option<String> {
        match self {
            TransferError::Http(e) => tls_failure(e),
            _ => None,
        }
    }

    pub(super) fn is_stall(&self) -> bool {
        matches!(self, TransferError::Stalled(_))
    }

    /// The final error after `attempts` attempts of `what` (`PUT url`).
    pub(super) fn give_up(&self, what: &str, attempts: u32) -> anyhow::Error {
        let text = self.text();
        if self.is_stall() {
            anyhow::Error::new(Stalled(format!(
                "{what} failed after {attempts} attempts: {text}{}",
                stalled_advice()
            )))
        } else {
            let advice = match self {
                TransferError::Http(e) if super::advice::is_unreachable(&text) => e
                    .url()
                    .map(|u| {
                        let host = match u.port() {
                            Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
                            None => u.host_str().unwrap_or("").to_string(),
                        };
                        super::advice::unreachable(&host, u.scheme() == "http")
                    })
                    .unwrap_or_default(),
                _ => String::new(),
            };
            anyhow!("{what} failed after {attempts} attempts: {text}{advice}")
        }
    }
}

/// The answer to one attempt of a request.
pub(super) type Streamed = Result<Response, TransferError>;

/// One logical request: retried, authenticated.
pub(super) struct Call<'a> {
    pub(super) registry: &'a str,
    pub(super) scopes: &'a [String],
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<Bytes>,
}

/// A URL for messages: no query (upload state, signatures), no userinfo.
pub(super) fn show(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

pub(super) fn backoff(attempt: u32) -> Duration {
    let exp = RETRY_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(RETRY_CAP);
    // Full jitter over the upper half.
    let ms = d.as_millis() as u64;
    Duration::from_millis(rand::random_range(ms / 2..=ms.max(1)))
}

pub(super) fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

pub(super) fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

/// The whole source chain of an error, for classification and messages,
/// without the request URL that reqwest puts in (it may carry a query with
/// upload state or signatures; callers name the URL themselves).
pub(super) fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    use std::sync::OnceLock;
    static URL: OnceLock<regex::Regex> = OnceLock::new();
    let re = URL.get_or_init(|| regex::Regex::new(r" for url \([^)]*\)").unwrap());
    re.replace_all(&chain_text_raw(e), "").into_owned()
}

pub(super) fn chain_text_raw(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A TLS error that retrying cannot fix (untrusted certificate, or TLS
/// spoken to a plain HTTP server).
pub(super) fn tls_failure(e: &reqwest::Error) -> Option<String> {
    let text = chain_text(e);
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("invalid peer")
        || lower.contains("corrupt message")
        || lower.contains("invalidcontenttype")
        || lower.contains("tls handshake")
    {
        Some(text)
    } else {
        None
    }
}

pub(super) fn tls_error(host: &str, detail: &str) -> anyhow::Error {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
        anyhow!(
            "TLS connection to {host} failed ({detail}); the registry may serve plain HTTP: \
             use `--insecure` to allow plain HTTP and unverified TLS"
        )
    } else {
        anyhow!(
            "the TLS certificate of {host} was not trusted ({detail}): use `--ca-file FILE` \
             with the CA certificate (PEM) that signed it, or `--insecure` to skip verification"
        )
    }
}

/// A short, redacted description of a registry error response.
pub(super) async fn status_error(resp: Response, what: &str) -> anyhow::Error {
    let status = resp.status();
    let url = show(resp.url());
    let body = read_limited(resp, 4096, ERROR_BODY_WAIT)
        .await
        .unwrap_or_default();
    let mut detail = String::new();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
                        e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                    )
                })
                .collect();
            detail = parts.join("; ");
        }
    }
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&body).chars().take(200).collect();
    }
    let detail = crate::error::redact(detail.trim());
    if detail.is_empty() {
        anyhow!("{what}: {url} answered {status}")
    } else {
        anyhow!("{what}: {url} answered {status}: {detail}")
    }
}

/// A response body larger than we accept (not worth another attempt).
#[derive(Debug)]
pub(super) struct BodyTooLarge(pub(super) String);

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BodyTooLarge {}

/// How long an error response's body may take: it only adds detail.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(5);

/// Read a response body, refusing more than `limit` bytes ([`BodyTooLarge`])
/// and failing with [`Stalled`] when it makes no progress for `stall`.
pub(super) async fn read_limited(
    resp: Response,
    limit: u64,
    stall: Duration,
) -> anyhow::Result<Vec<u8>> {
    if let Some(n) = resp.content_length() {
        if n > limit {
            return Err(BodyTooLarge(format!(
                "response of {n} bytes is larger than the {limit} bytes allowed"
            ))
            .into());
        }
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    let mut watch = StallWatch::new(stall);
    loop {
        let chunk = match tokio::time::timeout_at(watch.deadline(), stream.next()).await {
            Err(_) if watch.stalled() => {
                return Err(Stalled(format!("reading response: {}", watch.text())).into())
            }
            Err(_) => continue,
            Ok(None) => return Ok(out),
            Ok(Some(chunk)) => {
                chunk.map_err(|e| anyhow!("reading response: {}", chain_text(&e)))?
            }
        };
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(
                BodyTooLarge(format!("response is larger than the {limit} bytes allowed")).into(),
            );
        }
        out.extend_from_slice(&chunk);
        if watch.moved(chunk.len() as u64) {
            return Err(Stalled(format!("reading response: {}", watch.text())).into());
        }
    }
}

pub(super) fn header_digest(resp: &Response) -> anyhow::Result<Option<Digest>> {
    match resp.headers().get(DOCKER_CONTENT_DIGEST) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| anyhow!("Docker-Content-Digest header is not text"))?;
            Ok(Some(s.trim().parse()?))
        }
    }
}

/// `Location` of a response, resolved against the request URL.
pub(super) fn location(resp: &Response) -> anyhow::Result<Url> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .ok_or_else(|| anyhow!("{} answered without a Location header", show(resp.url())))?
        .to_str()
        .map_err(|_| anyhow!("Location header is not text"))?;
    resp.url()
        .join(loc)
        .map_err(|e| anyhow!("bad Location header from {}: {e}", show(resp.url())))
}

pub(super) fn sensitive(value: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| anyhow!("invalid credentials"))?;
    v.set_sensitive(true);
    Ok(v)
}

impl RegistryClient {
    // ----- URLs and schemes -------------------------------------------------

    /// `scheme://host` for a registry.
    ///
    /// With `insecure`, the scheme is probed like docker does for insecure
    /// registries (https first, then http) and remembered for the run. A
    /// host that answers neither is probed again with the usual backoff
    /// (it may be starting: settling on https then would send every retry
    /// to a plain-HTTP server); when every attempt fails the error names
    /// both schemes, and is remembered for a moment so that concurrent
    /// callers do not each wait out the same retries.
    pub(super) async fn base(&self, registry: &str) -> anyhow::Result<String> {
        let host = api_host(registry);
        if !self.inner.opts.insecure {
            return Ok(format!("https://{host}"));
        }
        let mut schemes = self.inner.schemes.lock().await;
        match schemes.get(host) {
            Some(Probe::Found(s)) => return Ok(format!("{s}://{host}")),
            Some(Probe::Failed { at, error }) if at.elapsed() < PROBE_FAILURE_MEMORY => {
                bail!("{error}")
            }
            _ => {}
        }
        let max = self.max_attempts();
        let mut attempt = 0u32;
        let (errors, stalled) = loop {
            attempt += 1;
            match self.probe_schemes(host).await {
                Ok(s) => {
                    schemes.insert(host.to_string(), Probe::Found(s));
                    return Ok(format!("{s}://{host}"));
                }
                Err(failed) if attempt >= max => break failed,
                Err((errors, stalled)) => {
                    if stalled {
                        tracing::warn!(
                            "{host} does not answer: {errors} (attempt {attempt} of {max}); retrying"
                        );
                    } else {
                        tracing::debug!("{host} answers neither https nor http yet: {errors}");
                    }
                    self.count_retry();
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        };
        let error = format!(
            "cannot reach registry {host} over https or http (--insecure) after {attempt} \
             attempts: {errors}{}",
            if stalled {
                stalled_advice()
            } else if super::advice::is_unreachable(&errors) {
                super::advice::unreachable(host, true)
            } else {
                String::new()
            }
        );
        schemes.insert(
            host.to_string(),
            Probe::Failed {
                at: Instant::now(),
                error: error.clone(),
            },
        );
        bail!("{error}")
    }

    /// `GET /v2/` over https, then http: the first scheme that answers
    /// anything, or what each said (and whether one stalled). A TLS server
    /// answers a handshake at once, so https gets at most
    /// [`TLS_PROBE_WAIT`]: a plain-HTTP server that sits on the handshake
    /// bytes does not cost a whole stall timeout.
    async fn probe_schemes(&self, host: &str) -> Result<&'static str, (String, bool)> {
        let mut errors = Vec::new();
        let mut stalled = false;
        for (scheme, wait) in [
            ("https", self.stall().min(TLS_PROBE_WAIT)),
            ("http", self.stall()),
        ] {
            self.count_request();
            let url = format!("{scheme}://{host}/v2/");
            match self.send_within(self.inner.http.get(&url), wait).await {
                Ok(_) => return Ok(scheme),
                Err(e) => {
                    stalled |= e.is_stall();
                    errors.push((url, e.text()));
                }
            }
        }
        // The same cause on both (connection refused): say it once.
        let text = if errors.windows(2).all(|w| w[0].1 == w[1].1) {
            let urls: Vec<&str> = errors.iter().map(|(u, _)| u.as_str()).collect();
            format!("{}: {}", urls.join(" and "), errors[0].1)
        } else {
            let each: Vec<String> = errors.iter().map(|(u, t)| format!("{u}: {t}")).collect();
            each.join("; ")
        };
        Err((text, stalled))
    }

    pub(super) async fn url(&self, registry: &str, path_and_query: &str) -> anyhow::Result<Url> {
        let base = self.base(registry).await?;
        Url::parse(&format!("{base}{path_and_query}"))
            .with_context(|| format!("invalid registry URL {base}{path_and_query}"))
    }

    // ----- the request loop -------------------------------------------------

    /// Send a request with auth and retries. Returns any response that is
    /// not a retryable failure or an auth failure.
    pub(super) async fn send(&self, call: Call<'_>) -> anyhow::Result<Response> {
        let max = self.max_attempts();
        let mut attempt = 0u32;
        let mut refusals = Refusals::default();
        loop {
            attempt += 1;
            let auth = self.auth_header(call.registry, call.scopes).await?;
            let resp = match self.send_once(&call, auth.as_deref()).await? {
                Ok(resp) => resp,
                Err(e) => {
                    let wait = self.after_network_error(&call, attempt, &e)?;
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let status = resp.status();
            tracing::debug!("{} {} -> {status}", call.method, show(&call.url));
            if status == StatusCode::UNAUTHORIZED {
                self.learn_challenge(&call, &resp, auth.is_some(), &mut refusals)
                    .await?;
                attempt -= 1; // authenticating is not a retry
                continue;
            }
            if status == StatusCode::FORBIDDEN && auth.is_some() {
                let creds = self.creds_for(call.registry).await;
                return Err(credential_error(
                    call.registry,
                    creds.as_ref(),
                    format!("{} {} answered 403", call.method, show(&call.url)),
                ));
            }
            if !retryable_status(status) {
                return Ok(resp);
            }
            if attempt >= max {
                let what = format!("{} failed after {attempt} attempts", call.method);
                return Err(status_error(resp, &what).await);
            }
            let d = retry_after(&resp).unwrap_or_else(|| backoff(attempt));
            self.count_retry();
            tracing::debug!(
                "retrying {} {} in {:?} after {status}",
                call.method,
                show(&call.url),
                d
            );
            tokio::time::sleep(d).await;
        }
    }

    /// Send `rb` and wait for the answer's head, at most one stall timeout.
    pub(super) async fn send_watched(&self, rb: reqwest::RequestBuilder) -> Streamed {
        self.send_within(rb, self.stall()).await
    }

    /// Send `rb` and wait for the answer's head, at most `wait`.
    pub(super) async fn send_within(
        &self,
        rb: reqwest::RequestBuilder,
        wait: Duration,
    ) -> Streamed {
        match tokio::time::timeout(wait, rb.send()).await {
            Ok(r) => r.map_err(TransferError::Http),
            Err(_) => Err(TransferError::Stalled(stalled_text(wait, 0))),
        }
    }

    /// One try of a call, with `auth` when we have it.
    async fn send_once(&self, call: &Call<'_>, auth: Option<&str>) -> anyhow::Result<Streamed> {
        let mut rb = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(call.headers.clone());
        if let Some(a) = auth {
            rb = rb.header(AUTHORIZATION, sensitive(a)?);
        }
        if let Some(b) = &call.body {
            rb = rb.body(b.clone());
        }
        self.count_request();
        tracing::debug!("{} {}", call.method, show(&call.url));
        Ok(self.send_watched(rb).await)
    }

    /// A try that ended in a transport error: how long to wait before the
    /// next, or the final error (retries spent, or TLS that cannot work).
    fn after_network_error(
        &self,
        call: &Call<'_>,
        attempt: u32,
        e: &TransferError,
    ) -> anyhow::Result<Duration> {
        if let Some(t) = e.tls() {
            if !self.inner.opts.insecure || t.contains("certificate") {
                return Err(tls_error(api_host(call.registry), &t));
            }
        }
        let what = format!("{} {}", call.method, show(&call.url));
        if attempt >= self.max_attempts() {
            return Err(e.give_up(&what, attempt));
        }
        self.count_retry();
        if e.is_stall() {
            tracing::warn!(
                "{what}: {} (attempt {attempt} of {}); retrying",
                e.text(),
                self.max_attempts()
            );
        } else {
            tracing::debug!("retrying {what} after: {}", e.text());
        }
        Ok(backoff(attempt))
    }

    pub(super) async fn simple(
        &self,
        registry: &str,
        scopes: &[String],
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> anyhow::Result<Response> {
        self.send(Call {
            registry,
            scopes,
            method,
            url,
            headers,
            body,
        })
        .await
    }

    /// Send a streaming request (no retry here: the caller restarts the
    /// upload), updating `progress` while bytes go out.
    ///
    /// Stalls: while the body goes out, fewer than `STALL_MIN_BYTES` taken
    /// by the peer in one stall timeout fails the attempt; once all of it
    /// is out, the registry gets [`commit_wait`] to answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_stream(
        &self,
        registry: &str,
        scopes: &[String],
        method: Method,
        url: &Url,
        len: u64,
        extra: HeaderMap,
        body: reqwest::Body,
        shared: &StreamShared,
        progress: &mut Option<&mut Transfer>,
    ) -> anyhow::Result<Streamed> {
        let auth = self.auth_header(registry, scopes).await?;
        let mut rb = self
            .inner
            .http
            .request(method, url.clone())
            .headers(extra)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len.to_string())
            .body(body);
        if let Some(a) = &auth {
            rb = rb.header(AUTHORIZATION, sensitive(a)?);
        }
        self.count_request();
        let fut = rb.send();
        tokio::pin!(fut);
        let mut reported = 0u64;
        let mut watch = StallWatch::new(self.stall());
        let commit_wait = commit_wait(self.stall(), len);
        let mut body_out_at: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let res = loop {
            tokio::select! {
                r = &mut fut => break r.map_err(TransferError::Http),
                _ = tick.tick() => {
                    let d = self.report_sent(shared, &mut reported, progress);
                    if reported < len {
                        if watch.moved(d) {
                            break Err(TransferError::Stalled(format!("sending: {}", watch.text())));
                        }
                    } else if body_out_at.get_or_insert_with(Instant::now).elapsed() >= commit_wait {
                        break Err(TransferError::Stalled(format!(
                            "{} after the whole body was sent",
                            stalled_text(commit_wait, 0)
                        )));
                    }
                }
            }
        };
        self.report_sent(shared, &mut reported, progress);
        if let Err(e) = &res {
            if e.is_stall() {
                if let Some(p) = progress.as_deref_mut() {
                    p.stalled();
                }
            }
        }
        Ok(res)
    }

    /// Count the body bytes handed out since the last call into the stats
    /// and `progress`; returns how many.
    fn report_sent(
        &self,
        shared: &StreamShared,
        reported: &mut u64,
        progress: &mut Option<&mut Transfer>,
    ) -> u64 {
        let now = shared.sent.load(Ordering::Relaxed);
        if now <= *reported {
            return 0;
        }
        let d = now - *reported;
        *reported = now;
        self.inner
            .stats
            .bytes_uploaded
            .fetch_add(d, Ordering::Relaxed);
        if let Some(p) = progress.as_deref_mut() {
            p.inc(d);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        for a in 1..40 {
            let d = backoff(a);
            assert!(d <= RETRY_CAP, "{d:?}");
        }
        assert!(backoff(1) <= Duration::from_millis(200));
    }

    #[test]
    fn show_drops_query_and_userinfo() {
        let u = Url::parse("https://u:p@h/v2/x?sig=secret").unwrap();
        assert_eq!(show(&u), "https://h/v2/x");
    }
}
