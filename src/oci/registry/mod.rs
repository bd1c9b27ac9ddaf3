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
//! - with `insecure`, each host is probed (`GET /v2/` over https, then
//!   http) to learn its scheme, retried with backoff while it answers
//!   neither (a registry still starting);
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
//!
//! Layers, the way regclient splits its client:
//! - `transport`: schemes, the retried request loop (with `stall`: silent
//!   and slow peers), the streaming request uploads use; `token`:
//!   credentials and bearer tokens;
//! - `limits`: body-size limits (413) and the chunk size they leave;
//!   the streaming request used by uploads, error text;
//! - `body`: upload bodies streamed from disk and hashed on the way out;
//! - `blobs`: HEAD, push (skip / mount / upload), pull;
//! - `uploads`: upload sessions and the monolithic PUT; `chunked`: PATCH
//!   uploads with the resume state file;
//! - `manifests`, `tags`: the small documents.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;

use super::auth::{Challenge, CredentialStore, Credentials};
use super::Digest;
pub use commit_wait::{COMMIT_WAIT_ENV, DEFAULT_COMMIT_WAIT};
pub use feed::{feed, FeedSender, FeedTap};
pub use limits::{PayloadTooLarge, MIN_CHUNK_SIZE};
pub use manifests::RefsUnknown;
pub use referrers::PutManifest;
pub use stall::{Stalled, DEFAULT_STALL_TIMEOUT, STALL_MIN_BYTES, STALL_TIMEOUT_ENV};
use transport::CONNECT_TIMEOUT;

mod advice;
mod blobs;
mod body;
mod chunked;
mod commit_wait;
mod feed;
mod limits;
mod manifests;
mod referrers;
mod stall;
mod tags;
mod token;
mod transport;
mod uploads;

/// Blobs larger than this go up in resumable chunks (default).
pub const DEFAULT_CHUNK_THRESHOLD: u64 = 256 << 20;
/// Size of one PATCH of a chunked upload (default).
pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;
/// Largest blob `pull_blob_bytes` keeps in memory.
pub const MAX_BLOB_IN_MEMORY: u64 = 64 << 20;
/// Largest manifest or index we accept.
pub const MAX_MANIFEST_SIZE: u64 = 16 << 20;

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
    /// A transfer that moves fewer than [`STALL_MIN_BYTES`] in this long
    /// (no answer, or a trickle) fails its attempt, which is retried;
    /// `None`: `$BUNDLER_STALL_TIMEOUT` (seconds), else
    /// [`DEFAULT_STALL_TIMEOUT`].
    pub stall_timeout: Option<Duration>,
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
            stall_timeout: None,
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
    /// A byte range of a split offline package, read across its volumes
    /// (see [`crate::package::volumes`]).
    PackageRange {
        file: std::sync::Arc<crate::package::source::PackageFile>,
        offset: u64,
        len: u64,
    },
    /// A byte range of a file read once for several uploads (see `feed`):
    /// taken from `tap` while it is fed, else from the file.
    Fed {
        tap: Arc<FeedTap>,
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl BlobSource {
    pub fn len(&self) -> u64 {
        match self {
            BlobSource::FileRange { len, .. } | BlobSource::Fed { len, .. } => *len,
            BlobSource::Bytes(b) => b.len() as u64,
            BlobSource::PackageRange { len, .. } => *len,
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
    schemes: tokio::sync::Mutex<HashMap<String, transport::Probe>>,
    /// Last challenge per host.
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Bearer tokens per (host, sorted scopes).
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
    stats: Counters,
    /// The stall timeout in effect (options, environment or default).
    stall: Duration,
    /// Largest request body per host, once one refused a larger one (413).
    body_limits: Mutex<HashMap<String, u64>>,
    /// How long a blob whose completing answer was lost may take to
    /// appear (`commit_wait`).
    commit_wait: Duration,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
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

impl RegistryClient {
    pub fn new(opts: ClientOptions, creds: CredentialStore) -> anyhow::Result<Self> {
        let stall = opts
            .stall_timeout
            .or_else(stall::stall_timeout_from_env)
            .unwrap_or(DEFAULT_STALL_TIMEOUT);
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("bundler/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT.min(stall.max(Duration::from_secs(1))))
            // A backstop only: every transfer has its own stall watch
            // (and a commit of a large upload may legitimately take long).
            .read_timeout(stall.max(Duration::from_secs(60)) * 10)
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
                stall,
                body_limits: Mutex::new(HashMap::new()),
                commit_wait: commit_wait::commit_wait_from_env(),
            }),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    fn max_attempts(&self) -> u32 {
        self.inner.opts.max_attempts.max(1)
    }

    /// The stall timeout in effect.
    pub fn stall_timeout(&self) -> Duration {
        self.inner.stall
    }

    fn stall(&self) -> Duration {
        self.inner.stall
    }

    fn count_request(&self) {
        self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn count_retry(&self) {
        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
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
    use crate::oci::media::Descriptor;

    #[test]
    fn docker_hub_api_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
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
}
