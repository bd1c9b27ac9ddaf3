//! The registry client (OCI distribution spec), written on reqwest.
//!
//! Why not `oci-client`: its blob push takes the whole blob in memory, it has
//! no cross-repository mount with the source repository in the token scope,
//! no resumable chunked upload and no per-run shared connection pool with
//! retry accounting; all of which SPEC §8 needs. References, digests and
//! media types are our own small modules.
//!
//! CONTRACT: this API is what `pack`, `sync`, `upgrade` and `chart::repo`
//! call; the bodies belong to the registry work.
//!
//! How it works:
//! - one `reqwest::Client` (one connection pool) per client, shared by every
//!   clone; TLS is verified unless `insecure`, `ca_file` adds CAs;
//! - with `insecure`, each host is probed once (`GET /v2/` over https, then
//!   http) to learn its scheme;
//! - auth follows the registry's `WWW-Authenticate` challenge: Basic sends
//!   the credentials, Bearer fetches a token for the scopes the operation
//!   needs (cached per host and scope set); a 401 re-authenticates once;
//! - every request is retried with exponential backoff and jitter on 5xx,
//!   429 (Retry-After honoured) and network errors, up to `max_attempts`;
//! - blobs go up as one streaming PUT hashed on the way out (the last chunk
//!   is withheld when the hash is wrong, so nothing is committed), or, above
//!   `chunk_threshold`, as resumable chunked PATCHes whose session is kept in
//!   a state file.
//!
//! Secrets: Authorization headers are marked sensitive and never formatted;
//! URLs are shown without their query; registry error bodies are redacted.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
    RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use url::Url;

use super::auth::{parse_www_authenticate, Challenge, CredentialStore, Credentials};
use super::media::{self, Descriptor};
use super::Digest;
use crate::error::CredentialError;
use crate::progress::Transfer;

/// Blobs larger than this go up in resumable chunks (default).
pub const DEFAULT_CHUNK_THRESHOLD: u64 = 256 << 20;
/// Size of one PATCH of a chunked upload (default).
pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;
/// Largest blob `pull_blob_bytes` keeps in memory.
pub const MAX_BLOB_IN_MEMORY: u64 = 64 << 20;
/// Largest manifest or index we accept.
pub const MAX_MANIFEST_SIZE: u64 = 16 << 20;
/// Read size when streaming a blob from disk.
const READ_CHUNK: usize = 512 << 10;
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(5);
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Accept plain HTTP and self-signed TLS.
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Attempts per request before giving up (>= 1).
    pub max_attempts: u32,
    /// Simultaneous connections per registry host.
    pub max_connections: usize,
    /// Blobs larger than this are uploaded in resumable chunks.
    pub chunk_threshold: u64,
    /// Bytes per PATCH of a chunked upload.
    pub chunk_size: u64,
    /// Where chunked-upload sessions are remembered between runs; `None`:
    /// `$BUNDLER_STATE_DIR`, else `$XDG_CACHE_HOME/bundler/uploads`, else
    /// `~/.cache/bundler/uploads`.
    pub upload_state_dir: Option<PathBuf>,
    /// Fault injection for tests: stop a chunked upload with an error after
    /// this many PATCHes of one run (the session is kept for resuming).
    pub interrupt_after_chunks: Option<u64>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: false,
            ca_file: None,
            max_attempts: 5,
            max_connections: 16,
            chunk_threshold: DEFAULT_CHUNK_THRESHOLD,
            chunk_size: DEFAULT_CHUNK_SIZE,
            upload_state_dir: None,
            interrupt_after_chunks: None,
        }
    }
}

/// A manifest or index as the registry served it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// sha256 of `bytes` (checked against the reference when pinned, and
    /// against `Docker-Content-Digest` when the registry sends it).
    pub digest: Digest,
}

/// Where a blob to push comes from.
#[derive(Clone, Debug)]
pub enum BlobSource {
    /// A byte range of a file (a blob inside a bundle): streamed, never
    /// loaded whole.
    FileRange {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// Small blobs already in memory (configs, synthesized manifests).
    Bytes(Bytes),
}

impl BlobSource {
    pub fn len(&self) -> u64 {
        match self {
            BlobSource::FileRange { len, .. } => *len,
            BlobSource::Bytes(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Already in the target repository (HEAD said so).
    Skipped,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// Counters over the client's life, for `--json` summaries.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub requests: u64,
    pub retries: u64,
    pub bytes_uploaded: u64,
    pub bytes_downloaded: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    bytes_uploaded: AtomicU64,
    bytes_downloaded: AtomicU64,
}

/// A registry client shared by every task of a run (one connection pool).
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    opts: ClientOptions,
    creds: CredentialStore,
    /// Credentials looked up per host (docker helpers run once).
    cred_cache: Mutex<HashMap<String, Option<Credentials>>>,
    /// Scheme per host when `insecure` (probed once).
    schemes: tokio::sync::Mutex<HashMap<String, &'static str>>,
    /// Last challenge per host.
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Bearer tokens per (host, sorted scopes).
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
    stats: Counters,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

/// One logical request: retried, authenticated.
struct Call<'a> {
    registry: &'a str,
    scopes: &'a [String],
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
}

/// The API host of a registry name (`docker.io` is served elsewhere).
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        r => r,
    }
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// A URL for messages: no query (upload state, signatures), no userinfo.
fn show(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

fn backoff(attempt: u32) -> Duration {
    let exp = RETRY_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(RETRY_CAP);
    // Full jitter over the upper half.
    let ms = d.as_millis() as u64;
    Duration::from_millis(rand::random_range(ms / 2..=ms.max(1)))
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

/// The whole source chain of an error, for classification and messages,
/// without the request URL that reqwest puts in (it may carry a query with
/// upload state or signatures; callers name the URL themselves).
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    use std::sync::OnceLock;
    static URL: OnceLock<regex::Regex> = OnceLock::new();
    let re = URL.get_or_init(|| regex::Regex::new(r" for url \([^)]*\)").unwrap());
    re.replace_all(&chain_text_raw(e), "").into_owned()
}

fn chain_text_raw(e: &(dyn std::error::Error + 'static)) -> String {
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
fn tls_failure(e: &reqwest::Error) -> Option<String> {
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

fn tls_error(host: &str, detail: &str) -> anyhow::Error {
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

fn credential_error(registry: &str, creds: Option<&Credentials>, what: String) -> anyhow::Error {
    let detail = match creds {
        Some(c) => format!(
            "the credentials for user {:?} were rejected ({what})",
            c.username
        ),
        None => format!(
            "credentials are missing: the registry requires authentication and none are \
             configured for this host ({what})"
        ),
    };
    anyhow::Error::new(CredentialError {
        registry: registry.to_string(),
        detail,
    })
}

/// A short, redacted description of a registry error response.
async fn status_error(resp: Response, what: &str) -> anyhow::Error {
    let status = resp.status();
    let url = show(resp.url());
    let body = read_limited(resp, 4096).await.unwrap_or_default();
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

/// Read a response body, refusing more than `limit` bytes.
async fn read_limited(resp: Response, limit: u64) -> anyhow::Result<Vec<u8>> {
    if let Some(n) = resp.content_length() {
        if n > limit {
            bail!("response of {n} bytes is larger than the {limit} bytes allowed");
        }
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow!("reading response: {}", chain_text(&e)))?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            bail!("response is larger than the {limit} bytes allowed");
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn header_digest(resp: &Response) -> anyhow::Result<Option<Digest>> {
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
fn location(resp: &Response) -> anyhow::Result<Url> {
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

fn with_digest(loc: &Url, digest: &Digest) -> Url {
    let mut u = loc.clone();
    u.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    u
}

/// `Range: 0-N` of an upload status → bytes the registry holds.
fn range_end(resp: &Response) -> Option<u64> {
    range_end_str(resp.headers().get("range")?.to_str().ok()?)
}

fn range_end_str(v: &str) -> Option<u64> {
    let v = v.trim().trim_start_matches("bytes=");
    let (_, end) = v.split_once('-')?;
    let end: u64 = end.trim().parse().ok()?;
    // distribution answers "0-0" for an empty upload: treat as 0 bytes.
    Some(if end == 0 { 0 } else { end + 1 })
}

fn sensitive(value: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| anyhow!("invalid credentials"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// The blob's source does not hold the blob (wrong hash, too short): no
/// new upload session can help.
#[derive(Debug)]
pub struct SourceDamaged(pub String);

impl std::fmt::Display for SourceDamaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SourceDamaged {}

/// A chunked upload stopped on purpose by `interrupt_after_chunks` (the
/// test knob that simulates a stopped process): its session is kept for a
/// later run and must not be retried now.
#[derive(Debug)]
pub struct UploadInterrupted(pub String);

impl std::fmt::Display for UploadInterrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UploadInterrupted {}

/// Upload sessions tried for one blob before giving up (each request in a
/// session has its own retries).
const UPLOAD_SESSIONS: u32 = 3;

fn corrupt_error(digest: &Digest, got: &str) -> String {
    format!(
        "blob {digest}: the source is corrupt (its content hashes to sha256:{got}); \
         the upload was aborted and nothing was committed"
    )
}

/// Shared state between an upload body stream and its driver.
#[derive(Clone, Default)]
struct StreamShared {
    /// Bytes handed to the HTTP stack.
    sent: Arc<AtomicU64>,
    /// Set when the stream refused to finish (digest mismatch, short file).
    failure: Arc<Mutex<Option<String>>>,
}

enum Reader {
    File(tokio::fs::File),
    Mem(Bytes, usize),
}

struct BodyState {
    reader: Reader,
    remaining: u64,
    hasher: Arc<Mutex<Sha256>>,
    /// Checked after the last byte was read, before it is sent.
    expect: Option<Digest>,
    shared: StreamShared,
    done: bool,
}

/// A streaming body of `source[start..end)`, hashed into `hasher` as it
/// goes; when `expect` is given (`end` is the blob's end), the final chunk
/// is only yielded if the hash matches, else the stream fails.
async fn range_body(
    source: &BlobSource,
    start: u64,
    end: u64,
    hasher: Arc<Mutex<Sha256>>,
    expect: Option<Digest>,
    shared: StreamShared,
) -> anyhow::Result<reqwest::Body> {
    let stream = range_stream(source, start, end, hasher, expect, shared).await?;
    Ok(reqwest::Body::wrap_stream(stream))
}

async fn range_stream(
    source: &BlobSource,
    start: u64,
    end: u64,
    hasher: Arc<Mutex<Sha256>>,
    expect: Option<Digest>,
    shared: StreamShared,
) -> anyhow::Result<impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static>
{
    let reader = match source {
        BlobSource::FileRange { path, offset, .. } => {
            let mut f = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            f.seek(std::io::SeekFrom::Start(offset + start))
                .await
                .with_context(|| format!("seeking in {}", path.display()))?;
            Reader::File(f)
        }
        BlobSource::Bytes(b) => Reader::Mem(b.clone(), start as usize),
    };
    let state = BodyState {
        reader,
        remaining: end - start,
        hasher,
        expect,
        shared,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if st.remaining == 0 {
            // Empty range: only the digest check is left.
            st.done = true;
            if let Some(exp) = &st.expect {
                let got = hex::encode(st.hasher.lock().unwrap().clone().finalize());
                if got != exp.hex() {
                    let msg = corrupt_error(exp, &got);
                    *st.shared.failure.lock().unwrap() = Some(msg.clone());
                    return Some((Err(std::io::Error::other(msg)), st));
                }
            }
            return None;
        }
        let n = st.remaining.min(READ_CHUNK as u64) as usize;
        let chunk = match &mut st.reader {
            Reader::File(f) => {
                let mut buf = vec![0u8; n];
                if let Err(e) = f.read_exact(&mut buf).await {
                    st.done = true;
                    let msg = format!("reading the blob source: {e} (the file is shorter than its index says: truncated or corrupt)");
                    *st.shared.failure.lock().unwrap() = Some(msg.clone());
                    return Some((Err(std::io::Error::other(msg)), st));
                }
                Bytes::from(buf)
            }
            Reader::Mem(b, pos) => {
                let c = b.slice(*pos..*pos + n);
                *pos += n;
                c
            }
        };
        st.hasher.lock().unwrap().update(&chunk);
        st.remaining -= n as u64;
        if st.remaining == 0 {
            st.done = true;
            if let Some(exp) = &st.expect {
                let got = hex::encode(st.hasher.lock().unwrap().clone().finalize());
                if got != exp.hex() {
                    // Withhold the last bytes: the registry never sees a
                    // complete body, so it cannot commit the blob.
                    let msg = corrupt_error(exp, &got);
                    *st.shared.failure.lock().unwrap() = Some(msg.clone());
                    return Some((Err(std::io::Error::other(msg)), st));
                }
            }
        }
        st.shared.sent.fetch_add(n as u64, Ordering::Relaxed);
        Some((Ok::<Bytes, std::io::Error>(chunk), st))
    });
    Ok(stream)
}

/// Hash `source[0..len)` from disk into a fresh hasher (resume).
async fn hash_prefix(source: &BlobSource, len: u64) -> anyhow::Result<Sha256> {
    match source {
        BlobSource::Bytes(b) => {
            let mut h = Sha256::new();
            h.update(&b[..len as usize]);
            Ok(h)
        }
        BlobSource::FileRange { path, offset, .. } => {
            let path = path.clone();
            let offset = *offset;
            tokio::task::spawn_blocking(move || -> anyhow::Result<Sha256> {
                use std::io::{Read, Seek};
                let mut f = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                f.seek(std::io::SeekFrom::Start(offset))?;
                let mut h = Sha256::new();
                let mut left = len;
                let mut buf = vec![0u8; 1 << 20];
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    f.read_exact(&mut buf[..n])
                        .with_context(|| format!("reading {}", path.display()))?;
                    h.update(&buf[..n]);
                    left -= n as u64;
                }
                Ok(h)
            })
            .await?
        }
    }
}

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

impl RegistryClient {
    pub fn new(opts: ClientOptions, creds: CredentialStore) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("bundler/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .pool_max_idle_per_host(opts.max_connections.max(1))
            .tcp_nodelay(true);
        if opts.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(ca) = &opts.ca_file {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading CA file {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow!("{}: not a PEM CA certificate: {e}", ca.display()))?;
            if certs.is_empty() {
                bail!("{}: holds no PEM certificate", ca.display());
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().context("building the HTTP client")?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http,
                opts,
                creds,
                cred_cache: Mutex::new(HashMap::new()),
                schemes: tokio::sync::Mutex::new(HashMap::new()),
                challenges: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                stats: Counters::default(),
            }),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    fn max_attempts(&self) -> u32 {
        self.inner.opts.max_attempts.max(1)
    }

    fn count_request(&self) {
        self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn count_retry(&self) {
        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
    }

    // ----- URLs and schemes -------------------------------------------------

    /// `scheme://host` for a registry.
    async fn base(&self, registry: &str) -> anyhow::Result<String> {
        let host = api_host(registry);
        if !self.inner.opts.insecure {
            return Ok(format!("https://{host}"));
        }
        let mut schemes = self.inner.schemes.lock().await;
        if let Some(s) = schemes.get(host) {
            return Ok(format!("{s}://{host}"));
        }
        // Probe like docker does for insecure registries: https first.
        let mut found = None;
        for scheme in ["https", "http"] {
            self.count_request();
            match self
                .inner
                .http
                .get(format!("{scheme}://{host}/v2/"))
                .send()
                .await
            {
                Ok(_) => {
                    found = Some(scheme);
                    break;
                }
                Err(e) => {
                    tracing::debug!("probe {scheme}://{host}/v2/: {}", chain_text(&e));
                }
            }
        }
        match found {
            Some(s) => {
                schemes.insert(host.to_string(), s);
                Ok(format!("{s}://{host}"))
            }
            // Not remembered: the registry may be down right now.
            None => Ok(format!("https://{host}")),
        }
    }

    async fn url(&self, registry: &str, path_and_query: &str) -> anyhow::Result<Url> {
        let base = self.base(registry).await?;
        Url::parse(&format!("{base}{path_and_query}"))
            .with_context(|| format!("invalid registry URL {base}{path_and_query}"))
    }

    // ----- credentials and tokens -------------------------------------------

    async fn creds_for(&self, registry: &str) -> Option<Credentials> {
        if let Some(c) = self.inner.cred_cache.lock().unwrap().get(registry) {
            return c.clone();
        }
        let store = self.inner.creds.clone();
        let reg = registry.to_string();
        let found = tokio::task::spawn_blocking(move || store.lookup(&reg))
            .await
            .unwrap_or(None);
        self.inner
            .cred_cache
            .lock()
            .unwrap()
            .insert(registry.to_string(), found.clone());
        found
    }

    fn token_key(registry: &str, scopes: &[String]) -> (String, String) {
        let mut s: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        s.sort();
        s.dedup();
        (registry.to_string(), s.join(" "))
    }

    /// The Authorization header value for a request, from the challenge
    /// the host sent before (None when none was seen yet).
    async fn auth_header(
        &self,
        registry: &str,
        scopes: &[String],
    ) -> anyhow::Result<Option<String>> {
        let ch = self.inner.challenges.lock().unwrap().get(registry).cloned();
        match ch {
            None => Ok(None),
            Some(Challenge::Basic { .. }) => {
                Ok(self.creds_for(registry).await.map(|c| c.basic_header()))
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let key = Self::token_key(registry, scopes);
                if let Some((tok, exp)) = self.inner.tokens.lock().unwrap().get(&key) {
                    if Instant::now() < *exp {
                        return Ok(Some(format!("Bearer {tok}")));
                    }
                }
                let mut want: Vec<String> = scopes.to_vec();
                if want.is_empty() {
                    if let Some(s) = scope {
                        want.extend(s.split_whitespace().map(String::from));
                    }
                }
                let (tok, ttl) = self
                    .fetch_token(registry, &realm, service.as_deref(), &want)
                    .await?;
                self.inner
                    .tokens
                    .lock()
                    .unwrap()
                    .insert(key, (tok.clone(), Instant::now() + ttl));
                Ok(Some(format!("Bearer {tok}")))
            }
        }
    }

    fn forget_token(&self, registry: &str, scopes: &[String]) {
        let key = Self::token_key(registry, scopes);
        self.inner.tokens.lock().unwrap().remove(&key);
    }

    /// GET the token realm with service and scopes (basic creds if any).
    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> anyhow::Result<(String, Duration)> {
        let mut url = Url::parse(realm)
            .map_err(|e| anyhow!("{registry}: invalid token realm {realm:?}: {e}"))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let creds = self.creds_for(registry).await;
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let mut rb = self.inner.http.get(url.clone());
            if let Some(c) = &creds {
                rb = rb.header(AUTHORIZATION, sensitive(&c.basic_header())?);
            }
            self.count_request();
            match rb.send().await {
                Ok(r) if retryable_status(r.status()) && attempt < self.max_attempts() => {
                    let d = retry_after(&r).unwrap_or_else(|| backoff(attempt));
                    self.count_retry();
                    tokio::time::sleep(d).await;
                }
                Ok(r) => break r,
                Err(e) => {
                    if let Some(t) = tls_failure(&e) {
                        if !self.inner.opts.insecure {
                            return Err(tls_error(url.host_str().unwrap_or(realm), &t));
                        }
                    }
                    if attempt >= self.max_attempts() {
                        bail!(
                            "token request to {} failed after {attempt} attempts: {}",
                            show(&url),
                            chain_text(&e)
                        );
                    }
                    self.count_retry();
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(credential_error(
                registry,
                creds.as_ref(),
                format!("token service {} answered {status}", show(&url)),
            ));
        }
        if !status.is_success() {
            return Err(status_error(resp, "token request").await);
        }
        let body = read_limited(resp, 1 << 20).await?;
        #[derive(serde::Deserialize)]
        struct TokenResp {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let t: TokenResp = serde_json::from_slice(&body).map_err(|_| {
            anyhow!(
                "token service {} answered something that is not a token",
                show(&url)
            )
        })?;
        let tok = t
            .token
            .filter(|s| !s.is_empty())
            .or(t.access_token.filter(|s| !s.is_empty()))
            .ok_or_else(|| anyhow!("token service {} answered without a token", show(&url)))?;
        // Refresh a little early; the spec's default lifetime is 60 s.
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).max(10) - 5);
        Ok((tok, ttl))
    }

    // ----- the request loop -------------------------------------------------

    /// Send a request with auth and retries. Returns any response that is
    /// not a retryable failure or an auth failure.
    async fn send(&self, call: Call<'_>) -> anyhow::Result<Response> {
        let max = self.max_attempts();
        let mut attempt = 0u32;
        // A 401 to a request sent without auth teaches the challenge; a 401
        // to auth we sent (an expired or revoked token, a token fetched
        // just before a clock-skewed expiry) earns one fresh token. A
        // second refusal of either kind is a credential error.
        let mut challenged = false;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let auth = self.auth_header(call.registry, call.scopes).await?;
            let mut rb = self
                .inner
                .http
                .request(call.method.clone(), call.url.clone())
                .headers(call.headers.clone());
            if let Some(a) = &auth {
                rb = rb.header(AUTHORIZATION, sensitive(a)?);
            }
            if let Some(b) = &call.body {
                rb = rb.body(b.clone());
            }
            self.count_request();
            tracing::debug!("{} {}", call.method, show(&call.url));
            match rb.send().await {
                Err(e) => {
                    if let Some(t) = tls_failure(&e) {
                        if !self.inner.opts.insecure || t.contains("certificate") {
                            return Err(tls_error(api_host(call.registry), &t));
                        }
                    }
                    if attempt >= max {
                        bail!(
                            "{} {} failed after {attempt} attempts: {}",
                            call.method,
                            show(&call.url),
                            chain_text(&e)
                        );
                    }
                    self.count_retry();
                    tracing::debug!(
                        "retrying {} {} after: {}",
                        call.method,
                        show(&call.url),
                        chain_text(&e)
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Ok(resp) => {
                    let status = resp.status();
                    tracing::debug!("{} {} -> {status}", call.method, show(&call.url));
                    if status == StatusCode::UNAUTHORIZED {
                        let creds = self.creds_for(call.registry).await;
                        let what = format!("{} {} answered 401", call.method, show(&call.url));
                        let seen = if auth.is_some() {
                            &mut reauthed
                        } else {
                            &mut challenged
                        };
                        if *seen {
                            return Err(credential_error(call.registry, creds.as_ref(), what));
                        }
                        *seen = true;
                        let ch = resp
                            .headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_www_authenticate);
                        let Some(ch) = ch else {
                            return Err(credential_error(call.registry, creds.as_ref(), what));
                        };
                        if matches!(ch, Challenge::Basic { .. }) && creds.is_none() {
                            return Err(credential_error(call.registry, None, what));
                        }
                        self.inner
                            .challenges
                            .lock()
                            .unwrap()
                            .insert(call.registry.to_string(), ch);
                        self.forget_token(call.registry, call.scopes);
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
                    if retryable_status(status) {
                        if attempt >= max {
                            return Err(status_error(
                                resp,
                                &format!("{} failed after {attempt} attempts", call.method),
                            )
                            .await);
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
                        continue;
                    }
                    return Ok(resp);
                }
            }
        }
    }

    async fn simple(
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

    // ----- manifests ---------------------------------------------------------

    /// GET a manifest or index by tag or digest. Errors name the reference.
    pub async fn get_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<FetchedManifest> {
        let what = format!("manifest {registry}/{repo}:{reference}");
        self.get_manifest_inner(registry, repo, reference)
            .await
            .with_context(|| format!("fetching {what}"))
    }

    async fn get_manifest_inner(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<FetchedManifest> {
        let scopes = [pull_scope(repo)];
        let url = self
            .url(registry, &format!("/v2/{repo}/manifests/{reference}"))
            .await?;
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
        let resp = self
            .simple(registry, &scopes, Method::GET, url, h, None)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            bail!("not found in the registry ({})", resp.status());
        }
        if !resp.status().is_success() {
            return Err(status_error(resp, "GET manifest").await);
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
            .unwrap_or_default();
        let served = header_digest(&resp)?;
        let bytes = Bytes::from(read_limited(resp, MAX_MANIFEST_SIZE).await?);
        self.inner
            .stats
            .bytes_downloaded
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let digest = Digest::of(&bytes);
        if reference.contains(':') {
            let want: Digest = reference.parse()?;
            if want != digest {
                bail!("the registry served content with digest {digest}, not the {want} asked for");
            }
        }
        if let Some(d) = served {
            if d != digest {
                bail!("the registry says the manifest is {d} but its content hashes to {digest}");
            }
        }
        let media_type = if media_type.is_empty()
            || media_type == "application/json"
            || media_type == "text/plain"
        {
            // Fall back to the mediaType field of the document.
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
                .unwrap_or(media_type)
        } else {
            media_type
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// HEAD a manifest: its digest, or `None` when the registry says 404.
    pub async fn head_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<Option<Digest>> {
        let scopes = [pull_scope(repo)];
        let url = self
            .url(registry, &format!("/v2/{repo}/manifests/{reference}"))
            .await?;
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
        let resp = self
            .simple(registry, &scopes, Method::HEAD, url, h, None)
            .await
            .with_context(|| format!("checking manifest {registry}/{repo}:{reference}"))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(
                resp,
                &format!("HEAD manifest {registry}/{repo}:{reference}"),
            )
            .await);
        }
        match header_digest(&resp)? {
            Some(d) => Ok(Some(d)),
            // No digest header: fetch it and hash.
            None => Ok(Some(
                self.get_manifest(registry, repo, reference).await?.digest,
            )),
        }
    }

    /// PUT a manifest (bytes as given) under a tag or its digest; returns
    /// the digest the registry computed, which must equal ours.
    pub async fn put_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> anyhow::Result<Digest> {
        let ours = Digest::of(&bytes);
        if reference.contains(':') {
            let want: Digest = reference.parse()?;
            if want != ours {
                bail!(
                    "manifest for {registry}/{repo}@{want} hashes to {ours}: refusing to push it"
                );
            }
        }
        let scopes = [push_scope(repo)];
        let url = self
            .url(registry, &format!("/v2/{repo}/manifests/{reference}"))
            .await?;
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .map_err(|_| anyhow!("invalid media type {media_type:?}"))?,
        );
        let n = bytes.len() as u64;
        let resp = self
            .simple(registry, &scopes, Method::PUT, url, h, Some(bytes))
            .await
            .with_context(|| format!("pushing manifest {registry}/{repo}:{reference}"))?;
        if !resp.status().is_success() {
            return Err(status_error(
                resp,
                &format!("pushing manifest {registry}/{repo}:{reference}"),
            )
            .await);
        }
        self.inner
            .stats
            .bytes_uploaded
            .fetch_add(n, Ordering::Relaxed);
        if let Some(d) = header_digest(&resp)? {
            if d != ours {
                bail!("pushing manifest {registry}/{repo}:{reference}: the registry computed {d}, we sent {ours}");
            }
        }
        Ok(ours)
    }

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
        self.push_blob_inner(registry, repo, digest, source, mount_from, progress)
            .await
            .with_context(|| format!("pushing blob {digest} to {registry}/{repo}"))
    }

    async fn push_blob_inner(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
        source: BlobSource,
        mount_from: Option<&str>,
        mut progress: Option<&mut Transfer>,
    ) -> anyhow::Result<PushOutcome> {
        let size = source.len();
        if self.blob_exists(registry, repo, digest).await?.is_some() {
            if let Some(p) = progress.as_deref_mut() {
                p.skip(size);
            }
            return Ok(PushOutcome::Skipped);
        }
        let mut scopes = vec![push_scope(repo)];
        let mut session = None;
        if let Some(from) = mount_from.filter(|f| *f != repo) {
            scopes.push(pull_scope(from));
            let mut url = self
                .url(registry, &format!("/v2/{repo}/blobs/uploads/"))
                .await?;
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from);
            let mut h = HeaderMap::new();
            h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            let resp = self
                .simple(registry, &scopes, Method::POST, url, h, None)
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    if let Some(p) = progress.as_deref_mut() {
                        p.skip(size);
                    }
                    return Ok(PushOutcome::Mounted);
                }
                StatusCode::ACCEPTED => {
                    // Mount refused; the registry opened an upload instead.
                    session = Some(location(&resp)?);
                }
                _ => {
                    tracing::debug!(
                        "mount of {digest} from {from} into {repo} refused ({}); uploading",
                        resp.status()
                    );
                }
            }
        }
        let chunked = size > self.inner.opts.chunk_threshold
            && matches!(source, BlobSource::FileRange { .. });
        // Each request already retries; this loop is for a session that is
        // lost as a whole: the answer to the completing PUT was dropped after
        // the registry committed the blob (a retry then finds the session
        // gone: 404 BLOB_UPLOAD_UNKNOWN), or the registry discarded the
        // session. Ask whether the blob is there; if not, start a new session.
        let mut sessions_left = UPLOAD_SESSIONS;
        loop {
            let result = if chunked {
                self.upload_chunked(
                    registry,
                    repo,
                    digest,
                    &source,
                    session.take(),
                    &scopes,
                    progress.as_deref_mut(),
                )
                .await
            } else {
                self.upload_monolithic(
                    registry,
                    repo,
                    digest,
                    &source,
                    session.take(),
                    &scopes,
                    progress.as_deref_mut(),
                )
                .await
            };
            let err = match result {
                Ok(()) => return Ok(PushOutcome::Uploaded),
                Err(e) => e,
            };
            let final_kind = err.chain().any(|c| {
                c.is::<crate::error::CredentialError>()
                    || c.is::<SourceDamaged>()
                    || c.is::<UploadInterrupted>()
            });
            if final_kind {
                return Err(err);
            }
            if let Ok(Some(_)) = self.blob_exists(registry, repo, digest).await {
                tracing::info!("upload of {digest} to {registry}/{repo} reported an error but the blob is in place: {err:#}");
                return Ok(PushOutcome::Uploaded);
            }
            sessions_left -= 1;
            if sessions_left == 0 {
                return Err(err);
            }
            tracing::warn!("upload of {digest} to {registry}/{repo} lost its session ({err:#}); starting a new one");
            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = progress.as_deref_mut() {
                p.reset();
            }
        }
    }

    /// POST to open an upload session; its URL.
    async fn start_upload(
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
    async fn cancel_upload(&self, registry: &str, scopes: &[String], loc: &Url) {
        let auth = self.auth_header(registry, scopes).await.ok().flatten();
        let mut rb = self.inner.http.delete(loc.clone());
        if let Some(a) = auth.as_deref().and_then(|a| sensitive(a).ok()) {
            rb = rb.header(AUTHORIZATION, a);
        }
        self.count_request();
        let _ = rb.send().await;
    }

    #[allow(clippy::too_many_arguments)]
    /// Send a streaming request (no retry here: the caller restarts the
    /// upload), updating `progress` while bytes go out.
    async fn send_stream(
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
    ) -> anyhow::Result<Result<Response, reqwest::Error>> {
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
        let mut sync = |progress: &mut Option<&mut Transfer>| {
            let now = shared.sent.load(Ordering::Relaxed);
            if now > reported {
                let d = now - reported;
                reported = now;
                self.inner
                    .stats
                    .bytes_uploaded
                    .fetch_add(d, Ordering::Relaxed);
                if let Some(p) = progress.as_deref_mut() {
                    p.inc(d);
                }
            }
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let res = loop {
            tokio::select! {
                r = &mut fut => break r,
                _ = tick.tick() => sync(progress),
            }
        };
        sync(progress);
        Ok(res)
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_monolithic(
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

    fn state_dir(&self) -> Option<PathBuf> {
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
    async fn upload_status(
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
    async fn upload_chunked(
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
            let mut hasher = Sha256::new();
            let mut n = 0u64;
            let mut stream = resp.bytes_stream();
            let mut failed = None;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(chunk) => {
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
                    }
                    Err(e) => {
                        failed = Some(chain_text(&e));
                        break;
                    }
                }
            }
            if failed.is_none() && n != desc.size {
                failed = Some(format!(
                    "connection closed after {n} of {} bytes",
                    desc.size
                ));
            }
            if let Some(f) = failed {
                if attempt >= max {
                    bail!("GET {} failed after {attempt} attempts: {f}", show(&url));
                }
                self.count_retry();
                tracing::debug!("pull of {} failed ({f}); retrying", desc.digest);
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
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

    /// List tags of a repository (`/v2/<repo>/tags/list`), for `upgrade`.
    /// A repository the registry does not know has no tags.
    pub async fn list_tags(&self, registry: &str, repo: &str) -> anyhow::Result<Vec<String>> {
        let scopes = [pull_scope(repo)];
        let mut url = self
            .url(registry, &format!("/v2/{repo}/tags/list?n=1000"))
            .await?;
        let mut tags = Vec::new();
        for _page in 0..10_000 {
            let resp = self
                .simple(
                    registry,
                    &scopes,
                    Method::GET,
                    url.clone(),
                    HeaderMap::new(),
                    None,
                )
                .await
                .with_context(|| format!("listing tags of {registry}/{repo}"))?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            if !resp.status().is_success() {
                return Err(
                    status_error(resp, &format!("listing tags of {registry}/{repo}")).await,
                );
            }
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| {
                    let (target, rel) = l.split_once(';')?;
                    rel.contains("next").then(|| {
                        target
                            .trim()
                            .trim_start_matches('<')
                            .trim_end_matches('>')
                            .to_string()
                    })
                });
            let base = resp.url().clone();
            let body = read_limited(resp, 64 << 20).await?;
            #[derive(serde::Deserialize)]
            struct TagList {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let list: TagList = serde_json::from_slice(&body)
                .with_context(|| format!("tag list of {registry}/{repo} is not valid JSON"))?;
            tags.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => url = base.join(&n)?,
                None => return Ok(tags),
            }
        }
        Ok(tags)
    }

    pub fn stats(&self) -> Stats {
        let s = &self.inner.stats;
        Stats {
            requests: s.requests.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            bytes_uploaded: s.bytes_uploaded.load(Ordering::Relaxed),
            bytes_downloaded: s.bytes_downloaded.load(Ordering::Relaxed),
        }
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
    fn show_drops_query_and_userinfo() {
        let u = Url::parse("https://u:p@h/v2/x?sig=secret").unwrap();
        assert_eq!(show(&u), "https://h/v2/x");
    }

    #[test]
    fn docker_hub_api_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[tokio::test]
    async fn corrupt_stream_withholds_last_chunk() {
        let data = Bytes::from(vec![7u8; READ_CHUNK * 2 + 10]);
        let src = BlobSource::Bytes(data.clone());
        // A wrong expectation: the stream fails instead of the last chunk.
        let wrong = Digest::of(b"something else");
        let shared = StreamShared::default();
        let s = range_stream(
            &src,
            0,
            data.len() as u64,
            Default::default(),
            Some(wrong.clone()),
            shared.clone(),
        )
        .await
        .unwrap();
        let items: Vec<_> = s.collect().await;
        let sent: usize = items
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|b| b.len())
            .sum();
        assert_eq!(sent, READ_CHUNK * 2, "the last chunk must be withheld");
        let err = items.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(
            err.contains(&wrong.to_string()) && err.contains("corrupt"),
            "{err}"
        );
        assert!(shared.failure.lock().unwrap().is_some());
        // The right expectation: every byte, no error.
        let right = Digest::of(&data);
        let shared = StreamShared::default();
        let s = range_stream(
            &src,
            0,
            data.len() as u64,
            Default::default(),
            Some(right),
            shared.clone(),
        )
        .await
        .unwrap();
        let items: Vec<_> = s.collect().await;
        assert!(items.iter().all(|r| r.is_ok()));
        assert_eq!(shared.sent.load(Ordering::Relaxed), data.len() as u64);
    }

    /// Callers spawn these futures on a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(c: RegistryClient, d: Digest, desc: Descriptor) {
        fn send<T: Send>(_: T) {}
        send(c.push_blob(
            "r",
            "p",
            &d,
            BlobSource::Bytes(Bytes::new()),
            Some("x"),
            None,
        ));
        send(c.get_manifest("r", "p", "t"));
        send(c.put_manifest("r", "p", "t", "m", Bytes::new()));
        send(c.pull_blob_bytes("r", "p", &desc));
        send(c.list_tags("r", "p"));
        send(c.head_manifest("r", "p", "t"));
    }

    #[test]
    fn range_header() {
        assert_eq!(range_end_str("0-1048575"), Some(1048576));
        assert_eq!(range_end_str("bytes=0-9"), Some(10));
        assert_eq!(range_end_str("0-0"), Some(0));
    }
}
