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
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::auth::CredentialStore;
use super::media::Descriptor;
use super::Digest;
use crate::progress::Transfer;

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
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: false,
            ca_file: None,
            max_attempts: 5,
            max_connections: 16,
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

/// A registry client shared by every task of a run (one connection pool).
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<()>,
}

impl RegistryClient {
    pub fn new(_opts: ClientOptions, _creds: CredentialStore) -> anyhow::Result<Self> {
        Ok(RegistryClient {
            inner: Arc::new(()),
        })
    }

    /// GET a manifest or index by tag or digest. Errors name the reference.
    pub async fn get_manifest(
        &self,
        _registry: &str,
        _repo: &str,
        _reference: &str,
    ) -> anyhow::Result<FetchedManifest> {
        anyhow::bail!("registry client not implemented yet")
    }

    /// HEAD a manifest: its digest, or `None` when the registry says 404.
    pub async fn head_manifest(
        &self,
        _registry: &str,
        _repo: &str,
        _reference: &str,
    ) -> anyhow::Result<Option<Digest>> {
        anyhow::bail!("registry client not implemented yet")
    }

    /// PUT a manifest (bytes as given) under a tag or its digest; returns
    /// the digest the registry computed, which must equal ours.
    pub async fn put_manifest(
        &self,
        _registry: &str,
        _repo: &str,
        _reference: &str,
        _media_type: &str,
        _bytes: Bytes,
    ) -> anyhow::Result<Digest> {
        anyhow::bail!("registry client not implemented yet")
    }

    /// HEAD a blob: its size if present in `repo`.
    pub async fn blob_exists(
        &self,
        _registry: &str,
        _repo: &str,
        _digest: &Digest,
    ) -> anyhow::Result<Option<u64>> {
        anyhow::bail!("registry client not implemented yet")
    }

    /// Push one blob: skipped if present, mounted from `mount_from` (another
    /// repository of the same registry) when given and possible, else
    /// streamed from `source` while its sha256 is checked; a mismatch aborts
    /// the upload (nothing is committed) with an error naming the digest.
    pub async fn push_blob(
        &self,
        _registry: &str,
        _repo: &str,
        _digest: &Digest,
        _source: BlobSource,
        _mount_from: Option<&str>,
        _progress: Option<&mut Transfer>,
    ) -> anyhow::Result<PushOutcome> {
        anyhow::bail!("registry client not implemented yet")
    }

    /// Stream a blob into `sink`, checking size and sha256; on a retry the
    /// sink is called again from offset 0 (`sink(offset, chunk)`).
    pub async fn pull_blob(
        &self,
        _registry: &str,
        _repo: &str,
        _desc: &Descriptor,
        _sink: &mut (dyn FnMut(u64, &[u8]) -> anyhow::Result<()> + Send),
        _progress: Option<&mut Transfer>,
    ) -> anyhow::Result<()> {
        anyhow::bail!("registry client not implemented yet")
    }

    /// Fetch a small blob (config, helm chart) into memory, verified.
    pub async fn pull_blob_bytes(
        &self,
        _registry: &str,
        _repo: &str,
        _desc: &Descriptor,
    ) -> anyhow::Result<Bytes> {
        anyhow::bail!("registry client not implemented yet")
    }

    /// List tags of a repository (`/v2/<repo>/tags/list`), for `upgrade`.
    pub async fn list_tags(&self, _registry: &str, _repo: &str) -> anyhow::Result<Vec<String>> {
        anyhow::bail!("registry client not implemented yet")
    }

    pub fn stats(&self) -> Stats {
        let _ = &self.inner;
        Stats::default()
    }
}
